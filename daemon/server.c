/* server.c - triaged's HTTP front end and lifecycle: MHD inside libuv loops, one per worker thread.
 *
 * Each worker owns a uv loop, an MHD daemon in external-epoll mode (its epoll fd
 * watched by a uv_poll, its timeout by a uv_timer) and an upstream client (curl
 * multi on the same loop). A request waiting for its backend suspends its MHD
 * connection; backend data resumes it. So no thread ever blocks on a backend, and
 * N workers share the port through SO_REUSEPORT. The main thread only handles
 * signals, reloads and the systemd watchdog. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "config.h"
#include "daemon-int.h"
#include "guard/guard.h"
#include "log.h"
#include "notify.h"
#include "server.h"
#include "storage.h"
#include "text.h"

#define MAX_HANDLERS 32
#define POOL_SLACK 4096 /* MHD connection memory beyond max_header: response headers, reads */
#define MAX_SUBSCRIBERS 8

/* ---- hooks registry (filled before the workers start, read-only after) ---- */

struct handler {
    const char *method;
    const char *path;
    unsigned flags;
    daemon_handler_fn *fn;
    void *ctx;
};

static struct handler handlers[MAX_HANDLERS];
static size_t n_handlers;

static struct {
    daemon_event_fn *fn;
    void *ctx;
} subscribers[MAX_SUBSCRIBERS];
static size_t n_subscribers;

int
daemon_handler_register(const char *method, const char *path, unsigned flags,
                        daemon_handler_fn *fn, void *ctx)
{
    for (size_t i = 0; i < n_handlers; i++)
        if (!strcmp(handlers[i].method, method) && !strcmp(handlers[i].path, path))
            return -EEXIST;
    if (n_handlers == MAX_HANDLERS)
        return -ENOSPC;
    handlers[n_handlers++] = (struct handler){method, path, flags, fn, ctx};
    return 0;
}

int
daemon_event_subscribe(daemon_event_fn *fn, void *ctx)
{
    if (n_subscribers == MAX_SUBSCRIBERS)
        return -ENOSPC;
    subscribers[n_subscribers].fn = fn;
    subscribers[n_subscribers].ctx = ctx;
    n_subscribers++;
    return 0;
}

/* ---- the server ------------------------------------------------------------ */

struct daemon_server {
    char *conf_path;
    uv_loop_t loop; /* main thread: signals, reload, watchdog */
    int loop_ready;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t watchdog;
    uv_timer_t stop_check;
    uv_timer_t retrain;    /* once a second: is an automatic retrain due (retrain.c) */
    uint64_t watchdog_usec;
    int curl_ready;
    struct daemon_worker *workers;
    unsigned n_workers;
    unsigned n_started;
    struct storage *storage;
    struct budget *budget; /* per-key budgets: with a log and a keys file */
    struct daemon_snapshot *initial; /* the snapshot at start, for daemon_server_conf */
    int exit_code;
    int stopping;
};

/* The one server (signals and hooks are process-wide anyway). */
static struct daemon_server *the_server;
static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t reload_lock = PTHREAD_MUTEX_INITIALIZER;
static struct daemon_snapshot *current_snap;
static uint64_t snap_generation;
static atomic_uint_fast64_t n_reloads;
static atomic_uint_fast64_t n_inflight;
atomic_uint_fast64_t daemon__n_upstream_inflight;
static uint64_t start_ns;
int64_t daemon__start_unix;

uint64_t
daemon__now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double
daemon__ms_since(uint64_t t0_ns)
{
    return (double)(daemon__now_ns() - t0_ns) / 1e6;
}

void
daemon__buf_append(struct daemon_buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->data = realloc(b->data, cap);
        if (!b->data)
            abort();
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0'; /* always a C string too */
}

void
daemon__buf_free(struct daemon_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* ---- snapshots -------------------------------------------------------------- */

static void
snapshot_free(struct daemon_snapshot *s)
{
    if (!s)
        return;
    for (size_t i = 0; s->breakers && i < s->conf->n_backends; i++)
        breaker_destroy(s->breakers[i]);
    free(s->breakers);
    free(s->inflight);
    ratelimit_destroy(s->ratelimit);
    auth_keys_unref(s->keys);
    auth_keys_unref(s->admin_keys);
    router_model_unref(s->model);
    conf_destroy(s->conf);
    free(s->tiers);
    free(s->tier_above);
    free(s->tier_fallback);
    router_sticky_unref(s->sticky);
    for (int a = 0; a < 2; a++) {
        free(s->by_api[a].tiers);
        free(s->by_api[a].backend);
    }
    free(s);
}

/* Loads config and model into a new snapshot (one reference), or NULL with err. */
/* One replica's share of a limit split over n replicas, rounded up; 0 stays unlimited. */
static uint32_t
share(uint32_t limit, uint32_t n)
{
    return n > 1 && limit ? (uint32_t)(((uint64_t)limit + n - 1) / n) : limit;
}

static struct daemon_snapshot *
snapshot_load(const char *path, char *err, size_t errlen)
{
    struct daemon_snapshot *s = calloc(1, sizeof(*s));
    char why[512];

    if (!s)
        abort();
    atomic_init(&s->refs, 1);
    s->conf = conf_load(path, err, errlen);
    if (!s->conf)
        goto fail;
    char champion[1024];
    const char *model_path =
        daemon__retrain_champion_path(s->conf, champion, sizeof(champion));
    s->model = router_model_load(model_path, why, sizeof(why));
    if (!s->model) {
        snprintf(err, errlen, "%s: cannot load the predictor model %s: %s", path, model_path,
                 why);
        goto fail;
    }
    s->n_tiers = s->conf->n_tiers;
    s->tiers = calloc(s->n_tiers ? s->n_tiers : 1, sizeof(*s->tiers));
    if (!s->tiers)
        abort();
    for (size_t i = 0; i < s->n_tiers; i++) {
        const struct conf_backend *b = &s->conf->backends[s->conf->tiers[i].backend];
        const char *head = b->head ? b->head : b->name;
        s->tiers[i].head = router_model_head_find(s->model, head);
        s->tiers[i].bar = s->conf->tiers[i].bar;
        if (s->tiers[i].head < 0 && s->conf->policy == CONF_POLICY_TIERS &&
            i + 1 < s->n_tiers) {
            snprintf(err, errlen, "%s: tier '%s': the model %s has no head '%s'", path, b->name,
                     model_path, head);
            goto fail;
        }
    }
    if (s->conf->tier_shares) {
        /* the share past tier b is the sum of the shares of the tiers after it */
        s->tier_above = calloc(s->n_tiers, sizeof(double));
        s->tier_fallback = calloc(s->n_tiers, sizeof(double));
        if (!s->tier_above || !s->tier_fallback)
            abort();
        double past = 0;
        for (size_t i = s->n_tiers - 1; i > 0; i--) {
            past += s->conf->tiers[i].share;
            s->tier_above[i - 1] = past > 1 ? 1 : past;
            s->tier_fallback[i - 1] = router_model_threshold_for_share(s->model, s->tier_above[i - 1]);
        }
    }
    if (s->conf->sticky) {
        /* a reload keeps the conversations remembered when the table's size and ttl stay */
        struct daemon_snapshot *old = daemon__snapshot_get();
        if (old && old->sticky && router_sticky_max(old->sticky) == (s->conf->sticky_entries & ~3u) &&
            router_sticky_ttl(old->sticky) == s->conf->sticky_ttl_s) {
            s->sticky = router_sticky_ref(old->sticky);
        } else {
            uint64_t seed;
            if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
                seed = daemon__now_ns() ^ 0x9e3779b97f4a7c15ull;
            s->sticky = router_sticky_new(s->conf->sticky_entries, s->conf->sticky_ttl_s, seed);
        }
        daemon__snapshot_put(old);
    }
    for (int a = 0; a < 2; a++) {
        struct daemon_tierset *ts = &s->by_api[a];
        ts->tiers = calloc(s->n_tiers ? s->n_tiers : 1, sizeof(*ts->tiers));
        ts->backend = calloc(s->n_tiers ? s->n_tiers : 1, sizeof(*ts->backend));
        if (!ts->tiers || !ts->backend)
            abort();
        for (size_t i = 0; i < s->n_tiers; i++) {
            size_t b = s->conf->tiers[i].backend;
            if ((int)s->conf->backends[b].api != a)
                continue;
            ts->tiers[ts->n] = s->tiers[i];
            ts->backend[ts->n++] = b;
        }
    }
    s->threshold = s->conf->threshold;
    if (s->conf->strong_share >= 0)
        s->threshold = router_model_threshold_for_share(s->model, s->conf->strong_share);
    if (s->conf->keys_file && !(s->keys = auth_keys_load(s->conf->keys_file, why, sizeof(why)))) {
        snprintf(err, errlen, "%s: client keys: %s", path, why);
        goto fail;
    }
    if (s->conf->admin_keys_file &&
        !(s->admin_keys = auth_keys_load(s->conf->admin_keys_file, why, sizeof(why)))) {
        snprintf(err, errlen, "%s: admin keys: %s", path, why);
        goto fail;
    }
    s->breakers = calloc(s->conf->n_backends, sizeof(*s->breakers));
    if (!s->breakers)
        abort();
    for (size_t i = 0; i < s->conf->n_backends; i++) {
        const struct conf_backend *b = &s->conf->backends[i];
        s->breakers[i] = breaker_create(b->breaker_failures, b->breaker_window_ms,
                                        b->breaker_cooldown_ms, b->timeout_ms);
    }
    s->inflight = calloc(s->conf->n_backends ? s->conf->n_backends : 1, sizeof(*s->inflight));
    if (!s->inflight)
        abort();
    for (size_t i = 0; i < s->conf->n_backends; i++)
        atomic_init(&s->inflight[i], 0);
    if (s->conf->rate_limit_rpm || s->conf->rate_limit_tpm)
        /* Behind a balancer each of N replicas sees about 1/N of a key's traffic:
         * each enforces its share (rounded up), so the sum is the configured limit. */
        s->ratelimit = ratelimit_create(
            share(s->conf->rate_limit_rpm, s->conf->rate_limit_replicas),
            share(s->conf->rate_limit_tpm, s->conf->rate_limit_replicas), 0);
    s->loaded_unix = (double)time(NULL);
    return s;
fail:
    snapshot_free(s);
    return NULL;
}

struct daemon_snapshot *
daemon__snapshot_get(void)
{
    struct daemon_snapshot *s;

    pthread_mutex_lock(&snap_lock);
    s = current_snap;
    if (s)
        atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&snap_lock);
    return s;
}

void
daemon__snapshot_put(struct daemon_snapshot *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1)
        snapshot_free(s);
}

/* Publishes s (takes its reference) and drops the old one. */
static void
snapshot_publish(struct daemon_snapshot *s)
{
    struct daemon_snapshot *old;

    pthread_mutex_lock(&snap_lock);
    old = current_snap;
    s->generation = ++snap_generation;
    current_snap = s;
    pthread_mutex_unlock(&snap_lock);
    log_set_level((int)s->conf->log_level);
    log_set_json(s->conf->log_format == CONF_LOG_FORMAT_JSON);
    daemon__snapshot_put(old);
}

struct storage *
daemon__storage(void)
{
    return the_server ? the_server->storage : NULL;
}

struct budget *
daemon__budget(void)
{
    return the_server ? the_server->budget : NULL;
}

/* Reloads config and model from the server's config path. Thread-safe; keeps the
 * old snapshot on failure. Returns 0 or -1 with err. */
static int
reload(char *err, size_t errlen)
{
    struct daemon_snapshot *s, *old;
    int rc = -1;

    pthread_mutex_lock(&reload_lock);
    char state[64];
    snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)(daemon__now_ns() / 1000u));
    notify_send(state); /* MONOTONIC_USEC: what Type=notify-reload expects */
    s = snapshot_load(the_server->conf_path, err, errlen);
    if (!s) {
        log_warnx("reload failed, keeping the running config: %s", err);
        goto out;
    }
    old = daemon__snapshot_get();
    if (old && (old->conf->port != s->conf->port || strcmp(old->conf->listen, s->conf->listen) ||
                old->conf->workers != s->conf->workers ||
                old->conf->busy_poll_us != s->conf->busy_poll_us))
        log_warnx("reload: listen, port, workers and busy_poll_us changes need a restart; ignored");
    if (old && ((old->conf->db_path == NULL) != (s->conf->db_path == NULL) ||
                (old->conf->db_path && strcmp(old->conf->db_path, s->conf->db_path))))
        log_warnx("reload: a [storage] path change needs a restart; ignored");
    daemon__snapshot_put(old);
    snapshot_publish(s);
    if (the_server->budget)
        budget_configure(the_server->budget, s->keys); /* budgets from the new key file */
    atomic_fetch_add(&n_reloads, 1);
    log_info("reloaded %s (generation %llu, model %s)", the_server->conf_path,
             (unsigned long long)s->generation, router_model_version(s->model));
    rc = 0;
out:
    notify_send("READY=1");
    pthread_mutex_unlock(&reload_lock);
    return rc;
}

_Static_assert(DAEMON_GAUGES_MAX_TIERS == ROUTER_SHARE_MAX_TIERS, "a gauge per share tier");

/* Merges the workers' share counters per route (proxy.c writes them); names each tier
 * after its backend in the current config. */
static void
share_gauges(struct daemon_gauges *g, const struct conf *c)
{
    uint64_t target_ppm[DAEMON_GAUGES_MAX_ROUTES][ROUTER_SHARE_MAX_TIERS] = {{0}};
    uint64_t recent[DAEMON_GAUGES_MAX_ROUTES] = {0};
    uint64_t recent_tier[DAEMON_GAUGES_MAX_ROUTES][ROUTER_SHARE_MAX_TIERS] = {{0}};
    double cut_sum[DAEMON_GAUGES_MAX_ROUTES][ROUTER_SHARE_MAX_TIERS] = {{0}};
    unsigned cut_n[DAEMON_GAUGES_MAX_ROUTES][ROUTER_SHARE_MAX_TIERS] = {{0}};

    for (unsigned wi = 0; the_server && wi < the_server->n_workers; wi++) {
        struct daemon_worker *w = &the_server->workers[wi];
        unsigned n = atomic_load_explicit(&w->n_share, memory_order_acquire);
        for (unsigned i = 0; i < n; i++) {
            struct daemon_share_route *r = &w->share[i];
            size_t j = 0;
            uint64_t decided = atomic_load_explicit(&r->decided, memory_order_relaxed);
            size_t nt = (size_t)atomic_load_explicit(&r->n_tiers, memory_order_relaxed);
            while (j < g->n_share_routes && strcmp(g->share[j].route, r->name))
                j++;
            if (j == DAEMON_GAUGES_MAX_ROUTES)
                continue;
            if (j == g->n_share_routes) {
                snprintf(g->share[j].route, sizeof(g->share[j].route), "%s", r->name);
                g->n_share_routes++;
            }
            struct daemon_share_gauges *sg = &g->share[j];
            if (nt > sg->n_tiers)
                sg->n_tiers = nt;
            sg->requests += decided;
            recent[j] += atomic_load_explicit(&r->recent_decided, memory_order_relaxed);
            for (size_t t = 0; t < nt && t < ROUTER_SHARE_MAX_TIERS; t++) {
                sg->tier[t].requests += atomic_load_explicit(&r->tier[t].routed, memory_order_relaxed);
                target_ppm[j][t] += atomic_load_explicit(&r->tier[t].target_ppm, memory_order_relaxed);
                recent_tier[j][t] += atomic_load_explicit(&r->tier[t].recent, memory_order_relaxed);
                if (t + 1 < nt) {
                    uint64_t bits = atomic_load_explicit(&r->tier[t].cut_bits, memory_order_relaxed);
                    double cut;
                    memcpy(&cut, &bits, sizeof(cut));
                    if (isfinite(cut)) {
                        cut_sum[j][t] += cut;
                        cut_n[j][t]++;
                    }
                }
            }
        }
    }
    for (size_t j = 0; j < g->n_share_routes; j++) {
        struct daemon_share_gauges *sg = &g->share[j];
        uint64_t strong_ppm = 0;
        sg->strong = sg->requests - sg->tier[0].requests;
        for (size_t t = 0; t < sg->n_tiers; t++) {
            struct daemon_share_tier_gauges *tg = &sg->tier[t];
            /* the route's tiers are the config's (every routed alias uses them) */
            if (c && t < c->n_tiers)
                snprintf(tg->backend, sizeof(tg->backend), "%s",
                         c->backends[c->tiers[t].backend].name);
            tg->target = sg->requests ? (double)target_ppm[j][t] / 1e6 / (double)sg->requests : NAN;
            tg->recent = recent[j] ? (double)recent_tier[j][t] / (double)recent[j] : NAN;
            tg->cut = t + 1 < sg->n_tiers && cut_n[j][t] ? cut_sum[j][t] / cut_n[j][t] : NAN;
            if (t > 0)
                strong_ppm += target_ppm[j][t];
        }
        sg->target = sg->requests ? (double)strong_ppm / 1e6 / (double)sg->requests : NAN;
        sg->recent = recent[j] ? 1 - (double)recent_tier[j][0] / (double)recent[j] : NAN;
    }
}

int
daemon_gauges_get(struct daemon_gauges *g)
{
    struct daemon_snapshot *s = daemon__snapshot_get();

    memset(g, 0, sizeof(*g));
    if (!s)
        return -ENOENT;
    g->inflight = atomic_load(&n_inflight);
    g->upstream_inflight = atomic_load(&daemon__n_upstream_inflight);
    g->reloads = atomic_load(&n_reloads);
    g->uptime_s = (double)(daemon__now_ns() - start_ns) / 1e9;
    snprintf(g->model_version, sizeof(g->model_version), "%s", router_model_version(s->model));
    g->model_loaded_unix = s->loaded_unix;
    /* the one cut in force: a share's cuts are per route and worker (share gauges) */
    g->threshold = s->conf->policy == CONF_POLICY_THRESHOLD && s->conf->strong_share < 0
                       ? s->threshold
                       : NAN;
    g->log_queue_depth = g->log_written = g->log_dropped = g->log_failed = -1;
    struct storage *st = daemon__storage();
    if (st) {
        struct storage_counters sc;
        storage_get_counters(st, &sc);
        g->log_queue_depth = (int64_t)sc.depth;
        g->log_written = (int64_t)sc.written;
        g->log_dropped = (int64_t)sc.dropped;
        g->log_failed = (int64_t)sc.failed;
    }
    daemon__learn_gauges(&g->learn);
    daemon__retrain_gauges(&g->learn.retrains, &g->learn.promotions);
    g->learn_budget_usd = s->conf->shadow_rate > 0 && s->conf->judge
                              ? s->conf->shadow_budget_usd_per_day
                              : 0;
    uint64_t now = daemon__now_ns() / 1000000u;
    g->n_backends = s->conf->n_backends;
    if (g->n_backends > DAEMON_GAUGES_MAX_BACKENDS)
        g->n_backends = DAEMON_GAUGES_MAX_BACKENDS;
    for (size_t i = 0; i < g->n_backends; i++) {
        enum breaker_state bs = breaker_state(s->breakers[i], now);
        g->circuit[i] = bs == BREAKER_OPEN ? 2 : bs == BREAKER_HALF_OPEN ? 1 : 0;
    }
    share_gauges(g, s->conf);
    daemon__snapshot_put(s);
    return 0;
}

void
daemon__request_reload(void)
{
    char err[512];

    /* reload() takes its own lock and may run on any thread (SIGHUP on the main loop,
     * /admin/reload on the thread pool, a promotion on the retrain thread) */
    if (the_server)
        reload(err, sizeof(err));
}

/* ---- replies ---------------------------------------------------------------- */

/* The rest of the daemon holds libmicrohttpd's responses as struct daemon_response, a
 * type never defined (daemon-int.h): these two are the only conversions. */
static struct MHD_Response *
mhd_response(struct daemon_response *r)
{
    return (struct MHD_Response *)(void *)r;
}

static struct daemon_response *
our_response(struct MHD_Response *r)
{
    return (struct daemon_response *)(void *)r;
}

static void
add_header(struct MHD_Response *r, const char *name, const char *value)
{
    if (MHD_add_response_header(r, name, value) != MHD_YES)
        log_debug("cannot add response header %s", name);
}

void
daemon__response_header(struct daemon_response *resp, const char *name, const char *value)
{
    add_header(mhd_response(resp), name, value);
}

struct daemon_response *
daemon__response_buffer(char *body, size_t len, const char *ctype)
{
    if (!body) {
        body = strdup("");
        if (!body)
            abort();
        len = 0;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(len, body, free);
    if (!r)
        abort();
    if (ctype)
        add_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    return our_response(r);
}

/* A streamed answer's reader: the request and the daemon's reader for it. */
struct stream_src {
    struct daemon_request *rq;
    daemon_stream_read_fn *read;
};

/* The client's connection ends now. MHD in turbo mode neither shuts down nor closes a
 * connection that a reader ended until something happens on its socket, so the client
 * would wait out the idle timeout for an answer that is over; the shutdown sends the
 * FIN at once (after every byte given to MHD so far: it asks for more only when it has
 * sent what it had) and wakes MHD to close the socket. */
static void
cut_client(struct daemon_request *rq)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);

    if (ci)
        shutdown(ci->connect_fd, SHUT_RDWR);
}

static ssize_t
stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream_src *src = cls;
    struct daemon_request *rq = src->rq;
    ssize_t n = src->read(rq, buf, max);

    (void)pos;
    if (n > 0)
        return n;
    if (n == DAEMON_STREAM_END)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n == DAEMON_STREAM_FAIL) {
        cut_client(rq);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    rq->suspended = 1; /* DAEMON_STREAM_WAIT: until daemon__wake */
    MHD_suspend_connection(rq->conn);
    return 0;
}

struct daemon_response *
daemon__response_stream(struct daemon_request *rq, const char *ctype, size_t block,
                        daemon_stream_read_fn *read)
{
    struct stream_src *src = malloc(sizeof(*src));

    if (!src)
        abort();
    src->rq = rq;
    src->read = read;
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, block, stream_read, src, free);
    if (!r)
        abort();
    if (ctype)
        add_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    return our_response(r);
}

const char *
daemon__request_header(const struct daemon_request *rq, const char *name)
{
    return rq->conn ? MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name) : NULL;
}

const char *
daemon__request_query(const struct daemon_request *rq, const char *name)
{
    return rq->conn ? MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name) : NULL;
}

/* daemon__request_headers_each's visitor: the daemon's callback and its context. */
struct header_visit {
    void (*fn)(void *ctx, const char *name, const char *value);
    void *ctx;
};

static enum MHD_Result
visit_header(void *cls, enum MHD_ValueKind kind, const char *name, const char *value)
{
    struct header_visit *v = cls;

    (void)kind;
    v->fn(v->ctx, name, value);
    return MHD_YES;
}

void
daemon__request_headers_each(const struct daemon_request *rq,
                             void (*fn)(void *ctx, const char *name, const char *value), void *ctx)
{
    struct header_visit v = {fn, ctx};

    if (rq->conn)
        MHD_get_connection_values(rq->conn, MHD_HEADER_KIND, visit_header, &v);
}

void
daemon__add_route_headers(struct daemon_request *rq, struct daemon_response *dresp)
{
    struct MHD_Response *resp = mhd_response(dresp);
    char num[32];

    add_header(resp, "x-triage-request-id", rq->id);
    if (rq->backend >= 0)
        add_header(resp, "x-triage-backend", rq->snap->conf->backends[rq->backend].name);
    if (rq->route_reason)
        add_header(resp, "x-triage-route", rq->route_reason);
    if (!isnan(rq->score)) {
        snprintf(num, sizeof(num), "%.4f", rq->score);
        add_header(resp, "x-triage-score", num);
    }
    if (!isnan(rq->threshold)) {
        snprintf(num, sizeof(num), "%.4f", rq->threshold);
        add_header(resp, "x-triage-threshold", num);
    }
    daemon__cascade_headers(rq, dresp);
    /* triage's own time on the request before it went upstream: body parse,
     * features, score, policy and forward setup (also triage_routing_overhead_seconds) */
    if (!isnan(rq->overhead_ms)) {
        snprintf(num, sizeof(num), "%.0f", rq->overhead_ms * 1000);
        add_header(resp, "x-triage-overhead-us", num);
    }
    daemon__add_budget_headers(rq, dresp);
}

void
daemon__add_budget_headers(struct daemon_request *rq, struct daemon_response *dresp)
{
    struct MHD_Response *resp = mhd_response(dresp);
    char num[48];
    const struct budget_state *b = &rq->budget;

    if (!b->limited)
        return;
    snprintf(num, sizeof(num), "%.6f", b->limit_usd);
    add_header(resp, "x-triage-budget-limit-usd", num);
    snprintf(num, sizeof(num), "%.6f", b->spent_usd < b->limit_usd ? b->limit_usd - b->spent_usd : 0.0);
    add_header(resp, "x-triage-budget-remaining-usd", num);
    snprintf(num, sizeof(num), "%lld", (long long)(b->reset_ms / 1000));
    add_header(resp, "x-triage-budget-reset", num); /* Unix seconds: the period's end */
}

static void gone_unwatch(struct daemon_request *rq);

void
daemon__wake(struct daemon_request *rq)
{
    gone_unwatch(rq); /* MHD watches the socket again */
    if (rq->suspended) {
        rq->suspended = 0;
        MHD_resume_connection(rq->conn);
        rq->w->need_run = 1;
    }
}

void
daemon__set_response(struct daemon_request *rq, int status, struct daemon_response *resp)
{
    if (rq->response)
        MHD_destroy_response(mhd_response(rq->response));
    rq->response = resp;
    rq->status = status;
    daemon__wake(rq);
}

void
daemon__reply(struct daemon_request *rq, int status, const char *ctype, char *body, size_t len)
{
    struct daemon_response *r = daemon__response_buffer(body, len, ctype);

    daemon__add_route_headers(rq, r);
    daemon__set_response(rq, status, r);
}

void
daemon__reply_json(struct daemon_request *rq, int status, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;

    json_decref(doc);
    if (!text) {
        /* A builder refused its input (invalid UTF-8 that should have been cleaned) or
         * memory ran out: a clear 500, never a crash. */
        log_warnx("cannot build the JSON answer of %s %s", rq->method, rq->path);
        static const char fallback[] =
            "{\"error\":{\"message\":\"internal error: the answer could not be built\","
            "\"type\":\"server_error\",\"param\":null,\"code\":\"internal_error\"}}\n";
        rq->error_kind = "internal_error";
        daemon__reply(rq, 500, "application/json", strdup(fallback), sizeof(fallback) - 1);
        return;
    }
    size_t len = strlen(text);
    /* a trailing newline makes curl-from-a-shell output readable */
    char *withnl = realloc(text, len + 2);
    if (!withnl)
        abort();
    withnl[len] = '\n';
    withnl[len + 1] = '\0';
    daemon__reply(rq, status, "application/json", withnl, len + 1);
}

/* ---- simple endpoints ---------------------------------------------------------- */

static void
ep_healthz(struct daemon_request *rq)
{
    daemon__reply_json(rq, 200, json_pack("{s:s}", "status", "ok"));
}

static void
ep_readyz(struct daemon_request *rq)
{
    const struct conf *c = rq->snap->conf;

    if (rq->w->stopping) {
        daemon__reply_json(rq, 503, json_pack("{s:s}", "status", "stopping"));
        return;
    }
    json_t *backends = json_array();
    for (size_t i = 0; i < c->n_backends; i++)
        json_array_append_new(backends, json_string(c->backends[i].name));
    /* A failing outcome log (disk full, read-only) degrades, it does not stop
     * serving: still 200, with the log's state for operators and probes. Degraded
     * lasts [storage] degraded_hold_ms past the last failure, not just until the next
     * good write, so probes see a flapping disk. Storage's clock is CLOCK_MONOTONIC too. */
    struct storage_counters sc = {0};
    if (daemon__storage())
        storage_get_counters(daemon__storage(), &sc);
    int64_t since_failure_ms = (int64_t)(daemon__now_ns() / 1000000u) - sc.last_error_ms;
    int degraded = sc.degraded || (sc.last_error_ms > 0 &&
                                   since_failure_ms < (int64_t)c->degraded_hold_ms);
    daemon__reply_json(rq, 200,
                       json_pack("{s:s,s:s,s:I,s:o,s:b,s:b,s:I}", "status",
                                 degraded ? "degraded" : "ready", "model",
                                 router_model_version(rq->snap->model), "generation",
                                 (json_int_t)rq->snap->generation, "backends", backends,
                                 "storage", daemon__storage() != NULL, "storage_degraded",
                                 degraded, "log_rows_failed", (json_int_t)sc.failed));
}

struct reload_job {
    uv_work_t work;
    struct daemon_request *rq;
    int rc;
    char err[512];
};

static void
reload_work(uv_work_t *req)
{
    struct reload_job *j = req->data;

    j->rc = reload(j->err, sizeof(j->err));
}

static void request_finish(struct daemon_request *rq);

void
daemon__request_orphan_done(struct daemon_request *rq)
{
    rq->work_pending = 0;
    request_finish(rq);
}

static void
reload_after(uv_work_t *req, int status)
{
    struct reload_job *j = req->data;
    struct daemon_request *rq = j->rq;

    rq->work_pending = 0;
    if (rq->orphaned) {
        free(j);
        request_finish(rq);
        return;
    }
    if (j->rc == 0) {
        struct daemon_snapshot *s = daemon__snapshot_get();
        daemon__reply_json(rq, 200,
                           json_pack("{s:s,s:I,s:s}", "status", "reloaded", "generation",
                                     (json_int_t)s->generation, "model",
                                     router_model_version(s->model)));
        daemon__snapshot_put(s);
    } else {
        daemon__reply_err(rq, DAEMON_ERR_RELOAD_FAILED,
                          "reload failed, the running config is kept: %s", j->err);
    }
    free(j);
    daemon__mhd_run(rq->w);
}

static int
is_loopback(struct daemon_request *rq)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

    if (!ci || !ci->client_addr)
        return 0;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return 1;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            return in6->sin6_addr.s6_addr[12] == 127;
    }
    return 0;
}

enum access { ACCESS_PUBLIC = 0, ACCESS_CLIENT, ACCESS_ADMIN, ACCESS_STATS };

/* Checks rq against the access rule; replies 401/403 and returns -1 when refused.
 * Client endpoints need a key from keys_file when there is one; admin endpoints
 * need a key from admin_keys_file, or without one come from loopback. */
static int
check_access(struct daemon_request *rq, enum access a)
{
    const struct daemon_snapshot *s = rq->snap;
    const char *authz = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_AUTHORIZATION);
    const char *name = NULL;
    const struct auth_keys *keys;

    if (a == ACCESS_STATS)
        a = s->conf->stats_need_admin ? ACCESS_ADMIN : ACCESS_CLIENT;
    if (a == ACCESS_PUBLIC)
        return 0;
    if (a == ACCESS_ADMIN && !s->admin_keys) {
        if (is_loopback(rq))
            return 0;
        daemon__reply_err(rq, DAEMON_ERR_FORBIDDEN,
                          "admin endpoints answer only on loopback (no admin_keys_file)");
        return -1;
    }
    keys = a == ACCESS_ADMIN ? s->admin_keys : s->keys;
    if (!keys)
        return 0; /* no client keys configured: open */
    const char *xkey = !authz && daemon__dialect_anthropic(rq)
                           ? MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, "x-api-key")
                           : NULL;
    char bearer[4200]; /* Anthropic's clients send their key as x-api-key: checked the same */
    if (xkey && strlen(xkey) < sizeof(bearer) - 8) {
        snprintf(bearer, sizeof(bearer), "Bearer %s", xkey);
        authz = bearer;
    }
    int rc = auth_check(keys, authz, &name);
    if (authz == bearer)
        explicit_bzero(bearer, sizeof(bearer));
    if (rc == 0) {
        rq->key_id = name;
        return 0;
    }
    if (rc == -ENOENT)
        daemon__reply_err(rq, DAEMON_ERR_MISSING_API_KEY,
                          "This endpoint needs an API key: Authorization: Bearer <key>%s",
                          daemon__dialect_anthropic(rq) ? " (or x-api-key: <key>)" : "");
    else
        daemon__reply_err(rq, DAEMON_ERR_INVALID_API_KEY,
                          "The API key is not valid%s", a == ACCESS_ADMIN ? " for admin" : "");
    daemon__response_header(rq->response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    return -1;
}

static void
ep_admin_reload(struct daemon_request *rq)
{
    struct reload_job *j = calloc(1, sizeof(*j));
    if (!j)
        abort();
    j->rq = rq;
    j->work.data = j;
    rq->work_pending = 1;
    if (uv_queue_work(&rq->w->loop, &j->work, reload_work, reload_after) < 0) {
        rq->work_pending = 0;
        free(j);
        daemon__reply_err(rq, DAEMON_ERR_INTERNAL, "cannot queue the reload");
    }
}

/* A registered handler (hooks.h). */
static void
run_handler(struct daemon_request *rq, const struct handler *h)
{
    struct daemon_http_request req = {
        .method = rq->method,
        .path = rq->path,
        .request_id = rq->id,
        .body = rq->body.data,
        .body_len = rq->body.len,
        .priv = rq,
    };
    struct daemon_http_reply reply = {.status = 200};

    h->fn(h->ctx, &req, &reply);
    struct daemon_response *r = daemon__response_buffer(
        reply.body, reply.body ? reply.len : 0,
        reply.content_type ? reply.content_type : "application/json");
    for (int i = 0; i < DAEMON_REPLY_MAX_HEADERS; i++)
        if (reply.headers[i].name && reply.headers[i].value)
            daemon__response_header(r, reply.headers[i].name, reply.headers[i].value);
    daemon__add_route_headers(rq, r);
    daemon__set_response(rq, reply.status ? reply.status : 200, r);
}

const char *
daemon_request_header(const struct daemon_http_request *r, const char *name)
{
    struct daemon_request *rq = r->priv;

    return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

const char *
daemon_request_arg(const struct daemon_http_request *r, const char *name)
{
    struct daemon_request *rq = r->priv;

    return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *
daemon_request_client(const struct daemon_http_request *r)
{
    static __thread char text[INET6_ADDRSTRLEN];
    struct daemon_request *rq = r->priv;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

    if (!ci || !ci->client_addr)
        return "-";
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, text,
                  sizeof(text));
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, text,
                  sizeof(text));
    else
        return "-";
    return text;
}

/* ---- routing table ------------------------------------------------------------ */

struct daemon_route {
    const char *method;
    const char *path;
    daemon_route_fn *fn;
    enum access access;
    int outcome; /* every request here becomes an outcome-log row, even one refused early */
};

static const struct daemon_route routes[] = {
    {"POST", "/v1/chat/completions", daemon__api_handle, ACCESS_CLIENT, 1},
    {"POST", "/v1/responses", daemon__api_handle, ACCESS_CLIENT, 1},
    {"POST", "/v1/completions", daemon__api_handle, ACCESS_CLIENT, 1},
    {"POST", "/v1/embeddings", daemon__api_handle, ACCESS_CLIENT, 1},
    {"POST", "/v1/messages", daemon__api_handle, ACCESS_CLIENT, 1},
    {"GET", "/v1/models", daemon__models, ACCESS_CLIENT, 0},
    {"GET", "/v1/models/", daemon__model_get, ACCESS_CLIENT, 0}, /* prefix: /v1/models/{id} */
    {"POST", "/v1/feedback", daemon__feedback, ACCESS_CLIENT, 0},
    {"GET", "/v1/stats", daemon__stats, ACCESS_STATS, 0},
    {"GET", "/healthz", ep_healthz, ACCESS_PUBLIC, 0},
    {"GET", "/readyz", ep_readyz, ACCESS_PUBLIC, 0},
    {"POST", "/admin/reload", ep_admin_reload, ACCESS_ADMIN, 0},
};

static enum access
handler_access(const struct handler *h)
{
    if (h->flags & DAEMON_HANDLER_ADMIN)
        return ACCESS_ADMIN;
    if (h->flags & DAEMON_HANDLER_STATS)
        return ACCESS_STATS;
    return ACCESS_PUBLIC;
}

#define N_ROUTES (sizeof(routes) / sizeof(routes[0]))

/* Finds the route or handler for rq. Returns 1 found (one of *route, *handler
 * set), 0 path known but not for this method (allow filled), -1 unknown path. */
static int
find_route(const char *method, const char *path, const struct daemon_route **route,
           const struct handler **handler, char *allow, size_t allowlen)
{
    int path_known = 0;
    const char *m = !strcmp(method, "HEAD") ? "GET" : method;

    allow[0] = '\0';
    for (size_t i = 0; i < N_ROUTES; i++) {
        size_t plen = strlen(routes[i].path);
        int prefix = routes[i].path[plen - 1] == '/';
        if (prefix ? strncmp(routes[i].path, path, plen) || !path[plen]
                   : strcmp(routes[i].path, path))
            continue;
        if (!strcmp(routes[i].method, m)) {
            *route = &routes[i];
            return 1;
        }
        path_known = 1;
        snprintf(allow + strlen(allow), allowlen - strlen(allow), "%s%s", allow[0] ? ", " : "",
                 routes[i].method);
    }
    for (size_t i = 0; i < n_handlers; i++) {
        const struct handler *h = &handlers[i];
        size_t plen = strlen(h->path);
        int match = (h->flags & DAEMON_HANDLER_PREFIX)
                        ? !strncmp(h->path, path, plen) && (path[plen] == '\0' ||
                                                             path[plen] == '/' ||
                                                             h->path[plen - 1] == '/')
                        : !strcmp(h->path, path);
        if (!match)
            continue;
        if (!strcmp(h->method, m)) {
            *handler = h;
            return 1;
        }
        path_known = 1;
        snprintf(allow + strlen(allow), allowlen - strlen(allow), "%s%s", allow[0] ? ", " : "",
                 h->method);
    }
    return path_known ? 0 : -1;
}

/* ---- requests ------------------------------------------------------------------ */

/* "req_" + 12 hex digits of the start time (ms) + 12 random ones: unique, and in time
 * order, so the outcome log's request_id index grows at its end instead of touching
 * a random page per row. */
void
daemon__make_id(uint64_t *rng, int64_t unix_ms, char *out)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t t = (uint64_t)unix_ms, r;

    /* xorshift64*: request ids need to be unique, not secret */
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    r = *rng * 2685821657736338717ull;
    memcpy(out, "req_", 4);
    for (int i = 15; i >= 4; i--, t >>= 4)
        out[i] = hex[t & 15];
    for (int i = 27; i >= 16; i--, r >>= 4)
        out[i] = hex[r & 15];
    out[28] = '\0';
}

static struct daemon_request *
request_new(struct daemon_worker *w, struct MHD_Connection *conn, const char *url,
            const char *method)
{
    struct daemon_request *rq = calloc(1, sizeof(*rq));
    struct timespec ts;

    if (!rq)
        abort();
    size_t mlen = strlen(method), ulen = strlen(url);
    rq->strings = malloc(mlen + ulen + 2);
    if (!rq->strings)
        abort();
    memcpy(rq->strings, method, mlen + 1);
    memcpy(rq->strings + mlen + 1, url, ulen + 1);
    rq->w = w;
    rq->conn = conn;
    rq->method = rq->strings;
    rq->path = rq->strings + mlen + 1;
    rq->backend = -1;
    rq->first_backend = -1;
    rq->slot = -1;
    rq->overhead_ms = NAN;
    rq->score = NAN;
    rq->escalation = NAN;
    rq->threshold = NAN;
    rq->ttfb_ms = NAN;
    rq->tokens_in = -1;
    rq->tokens_out = -1;
    rq->t_start_ns = daemon__now_ns();
    clock_gettime(CLOCK_REALTIME, &ts);
    rq->started_unix_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    rq->snap = daemon__snapshot_get();
    daemon__make_id(&w->rng, rq->started_unix_ms, rq->id);
    rq->next = w->requests;
    if (w->requests)
        w->requests->prev = rq;
    w->requests = rq;
    w->n_requests++;
    atomic_fetch_add(&n_inflight, 1);
    return rq;
}

static void
emit_event(struct daemon_request *rq, double latency_ms, double cost)
{
    const struct conf *c = rq->snap->conf;
    struct daemon_request_event ev = {
        .request_id = rq->id,
        .method = rq->method,
        .path = rq->path,
        .requested_model = rq->requested_model,
        .backend = rq->backend >= 0 ? c->backends[rq->backend].name : NULL,
        .route_reason = rq->route_reason,
        .error_kind = rq->error_kind,
        .finish_reason = rq->finish_reason[0] ? rq->finish_reason : NULL,
        .key_id = rq->key_id,
        .status = rq->status,
        .stream = rq->streaming,
        .client_aborted = rq->client_aborted,
        .worker = rq->w->idx,
        .latency_ms = latency_ms,
        .ttfb_ms = rq->ttfb_ms,
        .score = rq->score,
        .threshold = rq->threshold,
        .tokens_in = rq->tokens_in,
        .tokens_out = rq->tokens_out,
        .cost_usd = cost,
        .overhead_ms = rq->requested_model && rq->first_backend >= 0 ? rq->overhead_ms : NAN,
        .retries = rq->retries,
        .first_backend = rq->first_backend >= 0 && rq->first_backend != rq->backend
                             ? c->backends[rq->first_backend].name
                             : NULL,
        .failed = rq->failed,
        .n_failed = rq->n_failed,
    };

    for (size_t i = 0; i < n_subscribers; i++)
        subscribers[i].fn(subscribers[i].ctx, &ev);
}

static char *
xstrdup_or_null(const char *s)
{
    char *d;

    if (!s)
        return NULL;
    d = strdup(s);
    if (!d)
        abort();
    return d;
}

static void
store_record(struct daemon_request *rq, double latency_ms, double cost)
{
    struct storage *st = daemon__storage();
    const struct conf *c = rq->snap->conf;

    /* Only the API's outcomes: a request to one of its paths is a row whatever became
     * of it, refused early (400, 401, 413, 431, a body cut off) or answered, so the log
     * counts what clients sent. Other paths (404s, probes, stats) are in the access log
     * and the metrics only. */
    if (rq->budget.limited)
        budget_charge(daemon__budget(), rq->key_id, cost);
    if (!st || !(rq->requested_model || rq->outcome))
        return;
    struct storage_record *r = storage_record_new();
    r->request_id = xstrdup_or_null(rq->id);
    r->started_ms = rq->started_unix_ms;
    r->finished_ms = rq->started_unix_ms + (int64_t)latency_ms;
    r->requested_model = xstrdup_or_null(rq->requested_model);
    r->key_id = xstrdup_or_null(rq->key_id);
    r->backend = xstrdup_or_null(rq->backend >= 0 ? c->backends[rq->backend].name : NULL);
    r->route_reason = xstrdup_or_null(rq->route_reason);
    r->score = rq->score;
    r->threshold = rq->threshold;
    if (!isnan(rq->score))
        r->model_version = xstrdup_or_null(router_model_version(rq->snap->model));
    r->prompt_hash = rq->prompt_hash;
    rq->prompt_hash = NULL;
    r->prompt = rq->prompt_json;
    rq->prompt_json = NULL;
    r->features = rq->prompt_features;
    r->features_len = rq->prompt_features_len;
    rq->prompt_features = NULL;
    r->status = rq->status;
    r->error_kind = xstrdup_or_null(rq->client_aborted && !rq->error_kind ? "client_aborted"
                                                                          : rq->error_kind);
    r->latency_ms = latency_ms;
    r->ttfb_ms = rq->ttfb_ms;
    r->tokens_in = rq->tokens_in;
    r->tokens_out = rq->tokens_out;
    r->finish_reason = xstrdup_or_null(rq->finish_reason[0] ? rq->finish_reason : NULL);
    r->cost_usd = cost;
    r->stream = rq->streaming;
    r->failed_attempts = daemon__failed_attempts_text(rq);
    r->answer = rq->cascade_answer;
    r->answer_len = rq->cascade_answer_len;
    rq->cascade_answer = NULL;
    if (rq->cascade)
        r->escalation = rq->escalation;
    if (storage_submit(st, r) < 0)
        log_debug("outcome log queue full: record %s dropped", rq->id);
}

/* The end of a request: log, tell subscribers, record the outcome, free. */
static void
request_finish(struct daemon_request *rq)
{
    struct daemon_worker *w = rq->w;
    double latency = daemon__ms_since(rq->t_start_ns);
    double cost = 0;
    const struct conf *c = rq->snap ? rq->snap->conf : NULL;

    gone_unwatch(rq);
    daemon__learn_offer(rq); /* before the request's body and answer are freed */
    daemon__proxy_release(rq);
    if (c && rq->backend >= 0) {
        const struct conf_backend *b = &c->backends[rq->backend];
        if (rq->tokens_in > 0)
            cost += (double)rq->tokens_in * b->price_input / 1e6;
        if (rq->tokens_out > 0)
            cost += (double)rq->tokens_out * b->price_output / 1e6;
    }
    if (c) {
        struct log_field f[] = {
            LOG_F_STR("request_id", rq->id),
            LOG_F_STR("method", rq->method),
            LOG_F_STR("path", rq->path),
            LOG_F_INT("status", rq->status),
            LOG_F_STR("model", rq->requested_model),
            LOG_F_STR("backend", rq->backend >= 0 ? c->backends[rq->backend].name : NULL),
            LOG_F_STR("route", rq->route_reason),
            LOG_F_DBL("score", rq->score),
            LOG_F_DBL("latency_ms", latency),
            LOG_F_DBL("ttfb_ms", rq->ttfb_ms),
            rq->streaming ? LOG_F_INT("stream", 1) : LOG_F_STR("stream", NULL),
            rq->tokens_in >= 0 ? LOG_F_INT("tokens_in", rq->tokens_in) : LOG_F_STR("tokens_in", NULL),
            rq->tokens_out >= 0 ? LOG_F_INT("tokens_out", rq->tokens_out)
                                : LOG_F_STR("tokens_out", NULL),
            LOG_F_STR("error", rq->error_kind),
            LOG_F_STR("key", rq->key_id),
            rq->retries ? LOG_F_INT("retries", rq->retries) : LOG_F_STR("retries", NULL),
            LOG_F_STR("aborted", rq->client_aborted ? "client" : NULL),
        };
        log_fields(LOG_LEVEL_INFO, "request", f, (int)(sizeof(f) / sizeof(f[0])));
        emit_event(rq, latency, cost);
        store_record(rq, latency, cost);
    }
    if (rq->response)
        MHD_destroy_response(mhd_response(rq->response));
    if (rq->prev)
        rq->prev->next = rq->next;
    else
        w->requests = rq->next;
    if (rq->next)
        rq->next->prev = rq->prev;
    w->n_requests--;
    atomic_fetch_sub(&n_inflight, 1);
    daemon__buf_free(&rq->body);
    daemon__buf_free(&rq->lesson_body);
    daemon__buf_free(&rq->lesson_answer);
    daemon__buf_free(&rq->lesson_fast);
    free(rq->cascade_answer);
    daemon__buf_free(&rq->up_headers);
    daemon__buf_free(&rq->up_body);
    daemon__buf_free(&rq->sse);
    daemon__buf_free(&rq->out);
    free(rq->up_content_type);
    free(rq->requested_model);
    free(rq->fwd_headers);
    free(rq->prompt_hash);
    free(rq->prompt_json);
    free(rq->prompt_features);
    free(rq->strings);
    daemon__snapshot_put(rq->snap);
    free(rq);
}

static enum MHD_Result
queue_response(struct daemon_request *rq)
{
    enum MHD_Result ret =
        MHD_queue_response(rq->conn, (unsigned)rq->status, mhd_response(rq->response));

    MHD_destroy_response(mhd_response(rq->response));
    rq->response = NULL;
    rq->phase = PHASE_REPLIED;
    return ret;
}

/* What the request head says about its own framing and size (head_check). */
struct head_scan {
    size_t bytes;          /* name + ": " + value + CRLF, every header */
    int n_length;          /* Content-Length headers */
    const char *length;    /* the first one's value */
    int length_conflict;   /* another one with a different value */
    int length_bad;        /* a value that is not a decimal number */
    int chunked;           /* Transfer-Encoding present */
};

static enum MHD_Result
scan_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    struct head_scan *h = cls;

    (void)kind;
    h->bytes += strlen(key) + (value ? strlen(value) : 0) + 4;
    if (!value)
        return MHD_YES;
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        if (h->n_length++ == 0)
            h->length = value;
        else if (strcmp(h->length, value))
            h->length_conflict = 1;
        if (!*value || strspn(value, "0123456789") != strlen(value) || strlen(value) > 19)
            h->length_bad = 1;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        h->chunked = 1;
    }
    return MHD_YES;
}

/* Refuses a head that is over max_header or frames its body ambiguously (RFC 9112
 * 6.3: Content-Length twice with different values, or with Transfer-Encoding: a
 * request that one parser reads as two and another as one). Returns 0 or, having
 * replied, -1. MHD's own pool is max_header plus room for our answer, so heads a
 * little over the limit get this JSON 431, not MHD's. */
static int
head_check(struct daemon_request *rq, struct MHD_Connection *conn)
{
    struct head_scan h = {0};
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    size_t max = rq->snap->conf->max_header;

    MHD_get_connection_values(conn, MHD_HEADER_KIND, scan_header, &h);
    size_t size = ci ? ci->header_size : h.bytes + strlen(rq->method) + strlen(rq->path) + 12;
    if (size > max) {
        daemon__reply_err(rq, DAEMON_ERR_HEADERS_TOO_LARGE,
                          "The request head (%zu bytes) is over the limit of %zu bytes", size,
                          max);
        return -1;
    }
    if (h.chunked && h.n_length) {
        daemon__reply_err(rq, DAEMON_ERR_INVALID_FRAMING,
                          "Transfer-Encoding and Content-Length together are refused");
        return -1;
    }
    if (h.length_conflict || h.length_bad) {
        daemon__reply_err(rq, DAEMON_ERR_INVALID_FRAMING,
                          "%s Content-Length is refused",
                          h.length_conflict ? "A repeated, different" : "An invalid");
        return -1;
    }
    return 0;
}

/* Ties rq to its connection's read clock: the request began to arrive when the
 * connection opened (its first request) or when its request line came (later ones). */
static void
attach_conn(struct daemon_request *rq, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct daemon_conn *dc = ci ? ci->socket_context : NULL;

    rq->t_arrive_ns = rq->t_start_ns;
    if (!dc)
        return;
    if (!dc->kept && dc->t_ref_ns != UINT64_MAX)
        rq->t_arrive_ns = dc->t_ref_ns;
    else if (dc->t_line_ns)
        rq->t_arrive_ns = dc->t_line_ns;
    dc->rq = rq;
    rq->dconn = dc;
}

static enum MHD_Result
on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
          const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    struct daemon_worker *w = cls;
    struct daemon_request *rq = *con_cls;

    if (!rq) {
        const struct daemon_route *route = NULL;
        const struct handler *handler = NULL;
        char allow[128];

        rq = request_new(w, conn, url, method);
        *con_cls = rq;
        attach_conn(rq, conn);
        if (!rq->snap) {
            /* cannot happen once started; refuse rather than crash */
            return MHD_NO;
        }
        int found = find_route(method, url, &route, &handler, allow, sizeof(allow));
        rq->outcome = found > 0 && route && route->outcome;
        /* the path's API, known before anything is answered (a 405 on it too): errors
         * take its dialect */
        rq->api = daemon__api_find(url);
        if (head_check(rq, conn) < 0) {
            /* answered: 400 or 431 */
        } else if (w->stopping) {
            daemon__reply_err(rq, DAEMON_ERR_SHUTTING_DOWN,
                              "the server is shutting down");
        } else if (found < 0) {
            char qm[64], qp[256];
            daemon__reply_err(rq, DAEMON_ERR_NOT_FOUND,
                              "Unknown path %s %s", text_quote(qm, sizeof(qm), method, 16),
                              text_quote(qp, sizeof(qp), url, 64));
        } else if (found == 0) {
            char qm[64], qp[256];
            daemon__reply_err(rq, DAEMON_ERR_METHOD_NOT_ALLOWED,
                              "%s is not allowed on %s (allowed: %s)",
                              text_quote(qm, sizeof(qm), method, 16),
                              text_quote(qp, sizeof(qp), url, 64), allow);
            daemon__response_header(rq->response, MHD_HTTP_HEADER_ALLOW, allow);
        } else if (check_access(rq, route ? route->access : handler_access(handler)) == 0) {
            const char *cl =
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            unsigned long long declared = cl ? strtoull(cl, NULL, 10) : 0;
            if (declared > rq->snap->conf->max_body) {
                daemon__reply_err(rq, DAEMON_ERR_BODY_TOO_LARGE,
                                  "The request body (%s bytes) is over the limit of %zu bytes",
                                  cl, rq->snap->conf->max_body);
            } else if (declared > 0 && declared <= 65536) {
                /* room for the whole body (and the NUL daemon_buf keeps): one malloc,
                 * not a doubling per piece MHD hands over. Only for common sizes: a
                 * declared length is a promise, and the body may never come. */
                rq->body.cap = (size_t)declared + 1;
                rq->body.data = malloc(rq->body.cap);
                if (!rq->body.data)
                    abort();
            }
            rq->route = route;
            rq->handler_ = handler;
        }
        if (rq->response)
            return queue_response(rq);
        return MHD_YES;
    }

    if (*upload_data_size) {
        if (daemon__ms_since(rq->t_arrive_ns) > rq->snap->conf->read_timeout_ms) {
            /* a body trickling in slower than read_timeout_ms: hang up */
            rq->error_kind = "read_timeout";
            return MHD_NO;
        }
        if (!rq->too_large) {
            if (rq->body.len + *upload_data_size > rq->snap->conf->max_body) {
                rq->too_large = 1;
                daemon__buf_free(&rq->body);
            } else {
                daemon__buf_append(&rq->body, upload_data, *upload_data_size);
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }

    if (rq->phase == PHASE_BODY) {
        rq->phase = PHASE_WAIT;
        if (rq->too_large)
            daemon__reply_err(rq, DAEMON_ERR_BODY_TOO_LARGE,
                              "The request body is over the limit of %zu bytes",
                              rq->snap->conf->max_body);
        else if (rq->route)
            rq->route->fn(rq);
        else if (rq->handler_)
            run_handler(rq, rq->handler_);
    }
    if (rq->response)
        return queue_response(rq);
    if (w->tearing_down || rq->client_gone)
        return MHD_NO;
    rq->suspended = 1;
    MHD_suspend_connection(conn);
    return MHD_YES;
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct daemon_request *rq = *con_cls;

    if (!rq)
        return;
    *con_cls = NULL;
    if (rq->dconn) { /* the next request on this connection starts its own clock */
        struct daemon_conn *dc = rq->dconn;
        dc->rq = NULL;
        if (dc->t_ref_ns != UINT64_MAX)
            dc->t_ref_ns = daemon__now_ns();
        dc->t_line_ns = 0;
        dc->kept = 1;
        dc->anthropic = 0;
        rq->dconn = NULL;
    }
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        rq->client_aborted = 1;
    if (rq->phase != PHASE_REPLIED)
        rq->status = 0; /* nothing was sent */
    if (rq->work_pending) {
        /* A thread-pool job still points at rq; it is freed when the job ends. */
        rq->conn = NULL;
        rq->orphaned = 1;
        return;
    }
    request_finish(rq);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_debug("http: %s", msg);
}

/* ---- the worker loop -------------------------------------------------------------- */

static void on_mhd_timer(uv_timer_t *t);
static void on_idle(uv_idle_t *h);

void
daemon__mhd_run(struct daemon_worker *w)
{
    MHD_UNSIGNED_LONG_LONG to;
    int rounds = 0;

    if (!w->mhd)
        return;
    if (w->in_mhd) {
        w->need_run = 1; /* the outer call loops */
        return;
    }
    if (w->up)
        upstream_cork(w->up); /* the requests of this pass go upstream together */
    do {
        w->need_run = 0;
        w->in_mhd = 1;
        MHD_run(w->mhd);
        w->in_mhd = 0;
    } while (w->need_run && ++rounds < 8);
    if (w->up)
        upstream_uncork(w->up);
    if (MHD_get_timeout(w->mhd, &to) == MHD_YES)
        uv_timer_start(&w->mhd_timer, on_mhd_timer, (uint64_t)to, 0);
    else
        uv_timer_stop(&w->mhd_timer);
}

static void
on_mhd_timer(uv_timer_t *t)
{
    daemon__mhd_run(t->data);
}

static void
on_mhd_poll(uv_poll_t *p, int status, int events)
{
    struct daemon_worker *w = p->data;

    if (w->busy_poll_ns)
        w->last_io_ns = uv_hrtime();
    daemon__mhd_run(w);
}

/* After curl activity: connections woken by backend data are served once per
 * loop turn (on_check), not once per backend event: MHD_run scans its suspended
 * connections, so a burst of 1,000 chunks must cost one run, not 1,000. */
static void
on_upstream_after(void *ctx)
{
    struct daemon_worker *w = ctx;

    if (w->busy_poll_ns)
        w->last_io_ns = uv_hrtime();
    if (w->need_run && !uv_is_active((uv_handle_t *)&w->idle))
        uv_idle_start(&w->idle, on_idle);
}

static void
on_check(uv_check_t *c)
{
    struct daemon_worker *w = c->data;

    uv_idle_stop(&w->idle);
    if (w->need_run)
        daemon__mhd_run(w);
    /* Busy polling: right after I/O more is likely to follow within microseconds (the
     * backend's answer, the client's next request); polling for it without sleeping
     * saves the wake-up of a blocked thread, which costs tens of microseconds in a VM. */
    if (w->busy_poll_ns) {
        if (uv_hrtime() - w->last_io_ns < w->busy_poll_ns)
            uv_idle_start(&w->spin, on_idle);
        else
            uv_idle_stop(&w->spin);
    }
}

static void
on_prepare(uv_prepare_t *h)
{
    (void)h;
    log_flush(); /* the lines of this loop turn, before the loop may sleep */
}

static void
on_idle(uv_idle_t *h)
{
    (void)h; /* only there so the loop polls without blocking; on_check does the work */
}

/* ---- clients that leave while their request waits --------------------------------
 *
 * A suspended connection is out of MHD's epoll set, so a client that hangs up while
 * its request waits for the backend would go unnoticed until the answer came, and the
 * backend would go on generating for nobody. Requests waiting longer than
 * GONE_AFTER_MS get a watch on their socket (two epoll_ctl calls, spent only on the
 * slow ones); end of file there cancels the backend call and lets MHD close. */

#define GONE_AFTER_MS 1000

static void
on_gone_watch_closed(uv_handle_t *h)
{
    free(h);
}

static void
gone_unwatch(struct daemon_request *rq)
{
    if (!rq->gone_watch)
        return;
    uv_poll_stop(rq->gone_watch); /* out of the epoll set before MHD may close the fd */
    uv_close((uv_handle_t *)rq->gone_watch, on_gone_watch_closed);
    rq->gone_watch = NULL;
}

static void
on_gone_event(uv_poll_t *p, int status, int events)
{
    struct daemon_request *rq = p->data;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    char ch;

    (void)status;
    (void)events;
    ssize_t n = ci ? recv(ci->connect_fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT) : 0;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return; /* nothing after all */
    gone_unwatch(rq);
    if (n > 0) {
        rq->gone_checked = 1; /* a pipelined request, not a hang-up: MHD's to read later */
        return;
    }
    rq->client_gone = 1;
    rq->error_kind = "client_gone";
    daemon__proxy_release(rq); /* cancels the backend call, frees its slot */
    daemon__wake(rq);          /* on_access answers MHD_NO: MHD closes the connection */
    daemon__mhd_run(rq->w);
}

/* Starts watching rq's socket for a hang-up. */
static void
gone_watch(struct daemon_request *rq)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    uv_poll_t *p = malloc(sizeof(*p));

    if (!p)
        abort();
    if (!ci || uv_poll_init_socket(&rq->w->loop, p, ci->connect_fd) < 0) {
        free(p);
        rq->gone_checked = 1;
        return;
    }
    p->data = rq;
    rq->gone_watch = p;
    uv_poll_start(p, UV_READABLE | UV_DISCONNECT, on_gone_event);
}

/* Least time between two outcome-log warnings while its writes keep failing (ms). */
#define LOG_WARN_EVERY_MS 10000

/* Says what storage only counts: a warning with SQLite's error when writes have
 * failed since the last one (at most one per LOG_WARN_EVERY_MS), and one info line
 * when a write succeeds after a warning. Worker 0's heartbeat only: one thread owns
 * the state below. */
static void
log_watch(void)
{
    static struct storage *watched; /* a new outcome log starts from zero */
    static uint64_t reported;       /* write_errors at the last warning */
    static uint64_t warned_ms;      /* when it was written (monotonic) */
    static int failing;             /* warned, no recovery line since */
    struct storage *st = daemon__storage();
    struct storage_counters sc;
    uint64_t now_ms = daemon__now_ns() / 1000000u;

    if (st != watched) {
        watched = st;
        reported = 0;
        failing = 0;
    }
    if (!st)
        return;
    storage_get_counters(st, &sc);
    if (sc.write_errors > reported && (!reported || now_ms - warned_ms >= LOG_WARN_EVERY_MS)) {
        log_warnx("outcome log %s: write failed: %s; so far %llu failed writes (each batch is "
                  "tried %d times) and %llu rows lost",
                  storage_target_shown(storage_path(st)), sc.last_error,
                  (unsigned long long)sc.write_errors,
                  STORAGE_WRITE_ATTEMPTS, (unsigned long long)sc.failed);
        reported = sc.write_errors;
        warned_ms = now_ms;
        failing = 1;
    } else if (failing && !sc.degraded) {
        log_info("outcome log %s: writes succeed again; %llu rows lost so far",
                 storage_target_shown(storage_path(st)), (unsigned long long)sc.failed);
        failing = 0;
    }
}

static void
on_heartbeat(uv_timer_t *t)
{
    struct daemon_worker *w = t->data;

    atomic_store(&w->beat_ms, uv_now(&w->loop));
    atomic_store(&w->beat_ns, daemon__now_ns());
    for (struct daemon_request *rq = w->requests; rq; rq = rq->next)
        if (rq->suspended && !rq->response && !rq->gone_watch && !rq->gone_checked &&
            !rq->client_gone && rq->conn && daemon__ms_since(rq->t_start_ns) >= GONE_AFTER_MS)
            gone_watch(rq);
    if (w->idx == 0)
        log_watch();
}

static void
close_if_open(uv_handle_t *h)
{
    if (h->loop && !uv_is_closing(h))
        uv_close(h, NULL);
}

/* Cuts off whatever is left, stops MHD and curl, closes the loop's handles. */
static void
worker_teardown(struct daemon_worker *w)
{
    w->tearing_down = 1;
    for (struct daemon_request *rq = w->requests; rq; rq = rq->next) {
        daemon__proxy_release(rq); /* a stream still relaying gets its error event there */
        daemon__wake(rq);
    }
    /* what daemon__proxy_release queued (a stream's error event, a 503) goes out before
     * MHD stops: one run has the reply built, the next sends it */
    for (int i = 0; i < 4 && w->n_requests; i++)
        daemon__mhd_run(w);
    if (w->mhd) {
        uv_poll_stop(&w->mhd_poll);
        MHD_stop_daemon(w->mhd); /* ends every connection: on_completed frees requests */
        w->mhd = NULL;
    }
    if (w->up) {
        upstream_destroy(w->up, NULL, NULL);
        w->up = NULL;
    }
    close_if_open((uv_handle_t *)&w->mhd_poll);
    close_if_open((uv_handle_t *)&w->mhd_timer);
    close_if_open((uv_handle_t *)&w->wake);
    close_if_open((uv_handle_t *)&w->drain);
    close_if_open((uv_handle_t *)&w->heartbeat);
    close_if_open((uv_handle_t *)&w->reap);
    close_if_open((uv_handle_t *)&w->check);
    close_if_open((uv_handle_t *)&w->idle);
    close_if_open((uv_handle_t *)&w->spin);
    close_if_open((uv_handle_t *)&w->flush);
}

static void
on_drain(uv_timer_t *t)
{
    struct daemon_worker *w = t->data;

    if (w->n_requests > 0 && uv_now(&w->loop) < w->stop_deadline)
        return;
    uv_timer_stop(&w->drain);
    if (w->n_requests)
        log_warnx("worker %u: %zu requests still running at the shutdown deadline; cutting them off",
                  w->idx, w->n_requests);
    worker_teardown(w);
}

/* From the main thread: stop accepting, then drain. */
static void
on_wake(uv_async_t *a)
{
    struct daemon_worker *w = a->data;
    struct daemon_snapshot *s;

    if (w->stopping)
        return;
    w->stopping = 1;
    MHD_socket fd = MHD_quiesce_daemon(w->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    s = daemon__snapshot_get();
    w->stop_deadline = uv_now(&w->loop) + (s ? s->conf->shutdown_timeout_ms : 0);
    daemon__snapshot_put(s);
    uv_timer_start(&w->drain, on_drain, 0, 20);
}

static void
worker_main(void *arg)
{
    struct daemon_worker *w = arg;

    log_batch(1);
    on_heartbeat(&w->heartbeat);
    daemon__mhd_run(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    log_batch(0);
    router_thread_cleanup();
    atomic_store(&w->done, 1);
}

/* Binds a listening socket for c's address and port. Returns the fd or -1 with err. */
static int
bind_listener(const struct conf *c, int reuseport, int *v6, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *ai = NULL;
    char port[8];
    int fd = -1, one = 1, zero = 0;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%u", (unsigned)c->port);
    int rc = getaddrinfo(c->listen, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "listen address %s: %s", c->listen, gai_strerror(rc));
        return -1;
    }
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    *v6 = ai->ai_family == AF_INET6;
    if (*v6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0)
        goto fail;
    freeaddrinfo(ai);
    return fd;
fail:
    snprintf(err, errlen, "cannot listen on %s port %u: %s", c->listen, (unsigned)c->port,
             strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return -1;
}
/* MHD_OPTION_NOTIFY_CONNECTION: counts the worker's open client connections and
 * keeps their read clocks (struct daemon_conn). */
static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
              enum MHD_ConnectionNotificationCode code)
{
    struct daemon_worker *w = cls;
    struct daemon_conn *dc = *socket_context;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        w->n_conns++;
        dc = calloc(1, sizeof(*dc));
        if (!dc)
            abort();
        dc->conn = conn;
        dc->t_ref_ns = daemon__now_ns();
        dc->next = w->conns;
        if (w->conns)
            w->conns->prev = dc;
        w->conns = dc;
        *socket_context = dc;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (w->n_conns > 0)
            w->n_conns--;
        if (!dc)
            return;
        if (dc->rq)
            dc->rq->dconn = NULL;
        if (dc->prev)
            dc->prev->next = dc->next;
        else
            w->conns = dc->next;
        if (dc->next)
            dc->next->prev = dc->prev;
        free(dc);
        *socket_context = NULL;
    }
}

/* 1 when uri (a request line's target, borrowed) names a path whose errors take
 * Anthropic's shape. The path is read as on_access will see it: up to the query, %XX
 * decoded (libmicrohttpd's unescaping); one too long for any API path is none. */
static int
uri_anthropic(const char *uri)
{
    char path[64];
    size_t n = 0;

    for (const char *p = uri; *p && *p != '?'; p++) {
        char ch = *p;
        if (ch == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char hex[3] = {p[1], p[2], '\0'};
            ch = (char)strtol(hex, NULL, 16);
            p += 2;
        }
        if (n + 1 >= sizeof(path))
            return 0;
        path[n++] = ch;
    }
    path[n] = '\0';
    return daemon__path_anthropic(path);
}

/* MHD_OPTION_URI_LOG_CALLBACK: the request line of a new request has arrived, which
 * on a kept-alive connection is the best sign of when the request began, and names
 * the path whose dialect the answers written before on_access take. */
static void *
on_request_line(void *cls, const char *uri, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct daemon_conn *dc = ci ? ci->socket_context : NULL;

    (void)cls;
    if (dc) {
        dc->t_line_ns = daemon__now_ns();
        dc->anthropic = uri && uri_anthropic(uri);
    }
    return NULL; /* on_access still sees *con_cls == NULL on its first call */
}

/* ---- the read deadline ------------------------------------------------------------
 *
 * A request, head and body, must arrive within read_timeout_ms of its first byte.
 * MHD calls us only once the head is complete, so the clock starts from what we can
 * see: the connection opening (a new connection's first request), or its request line
 * (a kept-alive connection; before that line, MHD's idle timeout applies). A sweep
 * every read_timeout_ms / 4 (25 ms..1 s) cuts the late ones: a 408 written straight to
 * the socket (MHD has sent nothing yet), then shutdown, which MHD sees as a close. */

static void
cut_connection(struct daemon_conn *dc)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(dc->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    /* the path's dialect: the request's own once its head is in, else its request line's */
    int anthropic = dc->rq ? daemon__err_anthropic(dc->rq) : dc->anthropic;
    size_t blen = 0;
    char *body = daemon__err_body(DAEMON_ERR_READ_TIMEOUT, anthropic, &blen,
                                  "The request did not arrive within read_timeout_ms");
    char answer[1024];
    int n = snprintf(answer, sizeof(answer),
                     "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                     "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                     body ? blen : 0, body ? body : "");

    free(body);
    if (!ci)
        return;
    if (n < 0 || (size_t)n >= sizeof(answer))
        n = 0; /* cannot happen: the body is ours, ~150 bytes */
    if (n > 0 && send(ci->connect_fd, answer, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("read timeout: cannot send the 408: %s", strerror(errno));
    shutdown(ci->connect_fd, SHUT_RDWR);
    dc->t_ref_ns = UINT64_MAX; /* cut once */
}

static void
on_reap(uv_timer_t *t)
{
    struct daemon_worker *w = t->data;
    struct daemon_snapshot *s = daemon__snapshot_get();

    if (!s)
        return;
    uint64_t now = daemon__now_ns(), read_ns = (uint64_t)s->conf->read_timeout_ms * 1000000,
             idle_ns = (uint64_t)s->conf->idle_timeout_ms * 1000000;
    int cut = 0;
    daemon__snapshot_put(s);
    for (struct daemon_conn *dc = w->conns; dc; dc = dc->next) {
        uint64_t start;
        if (dc->t_ref_ns == UINT64_MAX)
            continue;
        if (dc->rq) {
            struct daemon_request *rq = dc->rq;
            /* only a body still coming in; a request waiting for its backend is not late */
            if (rq->phase != PHASE_BODY || rq->response || rq->suspended)
                continue;
            start = rq->t_arrive_ns;
            if (now > start + read_ns)
                rq->error_kind = "read_timeout";
        } else if (!dc->kept) {
            start = dc->t_ref_ns;
        } else {
            start = dc->t_line_ns ? dc->t_line_ns : dc->t_ref_ns + idle_ns;
        }
        if (now > start + read_ns) {
            log_debug("read timeout: a request did not arrive within %.0f ms; connection cut",
                      (double)read_ns / 1e6);
            cut_connection(dc);
            cut = 1;
        }
    }
    if (cut)
        daemon__mhd_run(w);
}

/* MHD_OPTION_ACCEPT_POLICY_CALLBACK: beyond max_connections a new connection is
 * closed at once, so a client sees a clean refusal rather than a hang, and the
 * server keeps accepting as soon as one closes. */
static enum MHD_Result
on_accept_policy(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    struct daemon_worker *w = cls;

    if (w->n_conns < w->max_conns)
        return MHD_YES;
    log_debug("connection refused: %u open, max_connections reached", w->n_conns);
    return MHD_NO;
}


static int
worker_init(struct daemon_worker *w, unsigned idx, const struct conf *c, char *err,
            size_t errlen)
{
    int v6 = 0;

    w->idx = idx;
    w->listen_fd = -1;
    if (uv_loop_init(&w->loop) < 0) {
        snprintf(err, errlen, "cannot create an event loop");
        return -1;
    }
    w->loop_ready = 1;
    if (getrandom(&w->rng, sizeof(w->rng), 0) != sizeof(w->rng) || w->rng == 0)
        w->rng = daemon__now_ns() ^ ((uint64_t)idx << 32) ^ 0x9e3779b97f4a7c15ull;
    backoff_seed(&w->brng, w->rng);
    uv_timer_init(&w->loop, &w->mhd_timer);
    uv_timer_init(&w->loop, &w->drain);
    uv_timer_init(&w->loop, &w->heartbeat);
    uv_async_init(&w->loop, &w->wake, on_wake);
    uv_check_init(&w->loop, &w->check);
    uv_idle_init(&w->loop, &w->idle);
    uv_idle_init(&w->loop, &w->spin);
    uv_unref((uv_handle_t *)&w->spin);
    uv_prepare_init(&w->loop, &w->flush);
    uv_prepare_start(&w->flush, on_prepare);
    uv_unref((uv_handle_t *)&w->flush);
    w->busy_poll_ns = (uint64_t)c->busy_poll_us * 1000;
    w->mhd_timer.data = w->drain.data = w->heartbeat.data = w->wake.data = w;
    w->check.data = w->idle.data = w->spin.data = w;
    uv_check_start(&w->check, on_check);
    uv_unref((uv_handle_t *)&w->check);
    uv_timer_start(&w->heartbeat, on_heartbeat, 1000, 1000);
    uv_timer_init(&w->loop, &w->reap);
    w->reap.data = w;
    uint64_t reap_ms = c->read_timeout_ms / 4;
    reap_ms = reap_ms < 25 ? 25 : reap_ms > 1000 ? 1000 : reap_ms;
    uv_timer_start(&w->reap, on_reap, reap_ms, reap_ms);

    w->listen_fd = bind_listener(c, c->workers > 1, &v6, err, errlen);
    if (w->listen_fd < 0)
        return -1;
    /* max_connections is for the whole server; each worker takes its share */
    w->max_conns = c->max_connections / (c->workers ? c->workers : 1);
    if (w->max_conns == 0)
        w->max_conns = 1;
    /* turbo: read, write and accept before asking epoll whether they would block */
    unsigned flags = MHD_USE_EPOLL | MHD_USE_TURBO | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    w->mhd = MHD_start_daemon(
        flags, 0, on_accept_policy, w, on_access, w, MHD_OPTION_LISTEN_SOCKET,
        (MHD_socket)w->listen_fd,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, w,
        /* The connection limit is ours (on_accept_policy): in external epoll mode
         * MHD stops accepting at its own limit and never resumes. MHD's is set
         * above ours (slack for connections it is still cleaning up) so it is never
         * reached; left unset it would be FD_SETSIZE - 4 = 1020. */
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, w,
        MHD_OPTION_URI_LOG_CALLBACK, on_request_line, w, MHD_OPTION_CONNECTION_LIMIT,
        w->max_conns + w->max_conns / 4 + 64, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)((c->idle_timeout_ms + 999) / 1000),
        /* The request headers plus room for ours: MHD zeroes the whole pool before
         * every request on a kept-alive connection, so it costs per request. */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(c->max_header + POOL_SLACK),
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
        MHD_OPTION_END);
    if (!w->mhd) {
        snprintf(err, errlen, "cannot start the HTTP server on %s port %u", c->listen,
                 (unsigned)c->port);
        return -1;
    }
    w->listen_fd = -1; /* MHD's now */
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(w->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di || uv_poll_init(&w->loop, &w->mhd_poll, di->epoll_fd) < 0) {
        snprintf(err, errlen, "cannot watch the HTTP server's epoll descriptor");
        return -1;
    }
    w->mhd_poll.data = w;
    uv_poll_start(&w->mhd_poll, UV_READABLE, on_mhd_poll);
    w->up = upstream_create(&w->loop, on_upstream_after, w);
    if (!w->up) {
        snprintf(err, errlen, "cannot create the upstream client");
        return -1;
    }
    w->learn_rng = w->rng ^ 0x5851f42d4c957f2dull;
    return 0;
}

/* Frees what worker_init built, whether or not the thread ran. */
static void
worker_cleanup(struct daemon_worker *w)
{
    if (!w->loop_ready)
        return;
    if (!w->done)
        worker_teardown(w);
    uv_run(&w->loop, UV_RUN_DEFAULT); /* let close callbacks run */
    if (uv_loop_close(&w->loop) < 0)
        log_warnx("worker %u: event loop still has open handles at exit", w->idx);
    if (w->listen_fd >= 0)
        close(w->listen_fd);
    for (unsigned i = 0; i < atomic_load(&w->n_share); i++) {
        router_share_destroy(w->share[i].est);
        w->share[i].est = NULL;
    }
    w->loop_ready = 0;
}

/* ---- the main thread: signals, reload, watchdog ------------------------------------ */

static void
on_retrain_tick(uv_timer_t *t)
{
    (void)t;
    daemon__retrain_tick();
}

static void
on_stopped_check(uv_timer_t *t)
{
    struct daemon_server *srv = t->data;

    for (unsigned i = 0; i < srv->n_started; i++)
        if (!atomic_load(&srv->workers[i].done))
            return;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)&srv->sig_term, NULL);
    uv_close((uv_handle_t *)&srv->sig_int, NULL);
    uv_close((uv_handle_t *)&srv->sig_hup, NULL);
    uv_close((uv_handle_t *)&srv->watchdog, NULL);
    uv_close((uv_handle_t *)&srv->stop_check, NULL);
    uv_close((uv_handle_t *)&srv->retrain, NULL);
}

static void
on_signal(uv_signal_t *h, int signum)
{
    struct daemon_server *srv = h->data;

    if (signum == SIGHUP) {
        char err[512];
        log_info("SIGHUP: reloading %s", srv->conf_path);
        reload(err, sizeof(err));
        return;
    }
    if (srv->stopping) {
        log_warnx("second %s: exiting now", strsignal(signum));
        _exit(1);
    }
    srv->stopping = 1;
    notify_send("STOPPING=1");
    log_info("%s: stopping; in-flight requests may finish", strsignal(signum));
    for (unsigned i = 0; i < srv->n_started; i++)
        uv_async_send(&srv->workers[i].wake);
    uv_timer_start(&srv->stop_check, on_stopped_check, 0, 20);
}

/* Pings the systemd watchdog while every worker loop is turning. */
static void
on_watchdog(uv_timer_t *t)
{
    struct daemon_server *srv = t->data;
    uint64_t now = daemon__now_ns();

    for (unsigned i = 0; i < srv->n_started; i++) {
        uint64_t beat = atomic_load(&srv->workers[i].beat_ns);
        if (!atomic_load(&srv->workers[i].done) && now - beat > srv->watchdog_usec * 1000u) {
            log_warnx("worker %u has not turned its loop for %.1f s; not pinging the watchdog",
                      i, (double)(now - beat) / 1e9);
            return;
        }
    }
    notify_send("WATCHDOG=1");
}

static void
raise_fd_limit(void)
{
    struct rlimit rl;

    /* each slow stream holds a client socket and a backend socket */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("cannot raise the open-files limit");
    }
}

struct daemon_server *
daemon_server_create(const char *conf_path, char *err, size_t errlen)
{
    struct daemon_server *srv;
    struct daemon_snapshot *snap;

    if (the_server) {
        snprintf(err, errlen, "one server per process");
        return NULL;
    }
    srv = calloc(1, sizeof(*srv));
    if (!srv)
        abort();
    the_server = srv;
    if (daemon__mhd_errors_install() < 0) /* only the bodies of libmicrohttpd's own errors */
        log_warnx("libmicrohttpd's own error answers stay HTML (its function was not found)");
    start_ns = daemon__now_ns();
    daemon__start_unix = (int64_t)time(NULL);
    srv->conf_path = strdup(conf_path);
    if (!srv->conf_path)
        abort();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    srv->curl_ready = 1;
    signal(SIGPIPE, SIG_IGN);

    snap = snapshot_load(conf_path, err, errlen);
    if (!snap)
        goto fail;
    atomic_fetch_add(&snap->refs, 1);
    srv->initial = snap;
    snapshot_publish(snap);
    const struct conf *c = snap->conf;
    raise_fd_limit();

    if (c->db_path) {
        struct storage_options so = {
            .queue_size = c->queue_size,
            .batch_size = c->batch_size,
            .flush_interval_ms = c->flush_interval_ms,
            .retention_days = c->retention_days,
        };
        char why[512];
        srv->storage = storage_open(c->db_path, &so, why, sizeof(why));
        if (!srv->storage) {
            snprintf(err, errlen, "outcome log: %s", why);
            goto fail;
        }
        struct storage_counters sc;
        storage_get_counters(srv->storage, &sc);
        if (sc.degraded) /* PostgreSQL away at start: rows queue, the writer retries */
            log_warnx("outcome log unreachable, starting anyway (rows queue until it is "
                      "back): %s",
                      sc.last_error);
        /* Budgets read spend from the log: a keys file without budgets costs a thread
         * that reads nothing. */
        if (c->keys_file) {
            srv->budget = budget_create(c->db_path, srv->storage, c->budget_refresh_ms);
            budget_configure(srv->budget, snap->keys);
        }
    }

    srv->n_workers = c->workers ? c->workers : 1;
    srv->workers = calloc(srv->n_workers, sizeof(*srv->workers));
    if (!srv->workers)
        abort();
    for (unsigned i = 0; i < srv->n_workers; i++)
        if (worker_init(&srv->workers[i], i, c, err, errlen) < 0)
            goto fail;

    if (uv_loop_init(&srv->loop) < 0) {
        snprintf(err, errlen, "cannot create the main event loop");
        goto fail;
    }
    srv->loop_ready = 1;
    uv_signal_init(&srv->loop, &srv->sig_term);
    uv_signal_init(&srv->loop, &srv->sig_int);
    uv_signal_init(&srv->loop, &srv->sig_hup);
    uv_timer_init(&srv->loop, &srv->watchdog);
    uv_timer_init(&srv->loop, &srv->stop_check);
    uv_timer_init(&srv->loop, &srv->retrain);
    srv->sig_term.data = srv->sig_int.data = srv->sig_hup.data = srv;
    srv->watchdog.data = srv->stop_check.data = srv;
    return srv;
fail:
    daemon_server_destroy(srv);
    return NULL;
}

int
daemon_server_check(const char *conf_path, char *err, size_t errlen)
{
    struct daemon_snapshot *s = snapshot_load(conf_path, err, errlen);

    if (!s)
        return -1;
    snapshot_free(s);
    router_thread_cleanup();
    return 0;
}

const struct conf *
daemon_server_conf(const struct daemon_server *s)
{
    return s->initial->conf;
}

int
daemon_server_run(struct daemon_server *srv)
{
    struct daemon_snapshot *s = daemon__snapshot_get();

    uv_signal_start(&srv->sig_term, on_signal, SIGTERM);
    uv_signal_start(&srv->sig_int, on_signal, SIGINT);
    uv_signal_start(&srv->sig_hup, on_signal, SIGHUP);
    for (unsigned i = 0; i < srv->n_workers; i++) {
        if (uv_thread_create(&srv->workers[i].thread, worker_main, &srv->workers[i]) < 0) {
            log_error("cannot start worker thread %u", i);
            srv->exit_code = 1;
            uv_signal_stop(&srv->sig_term);
            on_signal(&srv->sig_term, SIGTERM);
            break;
        }
        srv->n_started++;
    }
    srv->watchdog_usec = notify_watchdog_usec();
    if (srv->watchdog_usec)
        uv_timer_start(&srv->watchdog, on_watchdog, 0, srv->watchdog_usec / 2000 + 1);
    log_info("triaged %s listening on %s port %u (%u worker%s, model %s, %zu backend%s%s)",
             TRIAGE_VERSION, s->conf->listen, (unsigned)s->conf->port, srv->n_workers,
             srv->n_workers == 1 ? "" : "s", router_model_version(s->model), s->conf->n_backends,
             s->conf->n_backends == 1 ? "" : "s", srv->storage ? ", outcome log on" : "");
    daemon__snapshot_put(s);
    if (daemon__learn_start() < 0)
        log_warnx("cannot start the learning thread: no shadow or judge calls");
    notify_send("READY=1");
    uv_timer_start(&srv->retrain, on_retrain_tick, 1000, 1000);
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    for (unsigned i = 0; i < srv->n_started; i++)
        uv_thread_join(&srv->workers[i].thread);
    daemon__learn_stop();   /* after the workers: they hand it lessons */
    daemon__retrain_stop(); /* it may still be reading the log */
    budget_destroy(srv->budget); /* it flushes the log: before the log closes */
    srv->budget = NULL;
    if (srv->storage) {
        storage_close(srv->storage); /* drains the queue */
        srv->storage = NULL;
    }
    log_info("stopped");
    return srv->exit_code;
}

void
daemon_server_destroy(struct daemon_server *srv)
{
    if (!srv)
        return;
    for (unsigned i = 0; srv->workers && i < srv->n_workers; i++)
        worker_cleanup(&srv->workers[i]);
    free(srv->workers);
    if (srv->loop_ready) {
        close_if_open((uv_handle_t *)&srv->sig_term);
        close_if_open((uv_handle_t *)&srv->sig_int);
        close_if_open((uv_handle_t *)&srv->sig_hup);
        close_if_open((uv_handle_t *)&srv->watchdog);
        close_if_open((uv_handle_t *)&srv->stop_check);
        close_if_open((uv_handle_t *)&srv->retrain);
        uv_run(&srv->loop, UV_RUN_DEFAULT);
        uv_loop_close(&srv->loop);
    }
    budget_destroy(srv->budget);
    storage_close(srv->storage);
    pthread_mutex_lock(&snap_lock);
    struct daemon_snapshot *s = current_snap;
    current_snap = NULL;
    pthread_mutex_unlock(&snap_lock);
    daemon__snapshot_put(s);
    daemon__snapshot_put(srv->initial);
    router_thread_cleanup();
    if (srv->curl_ready)
        curl_global_cleanup();
    free(srv->conf_path);
    free(srv);
    the_server = NULL;
}
