/* server.c - triaged's lifecycle: snapshots, workers, requests' ends, signals, reload.
 *
 * Each worker owns a uv loop, an HTTP server (daemon/http/: MHD in external-epoll mode
 * on the same loop) and an upstream client. A request waiting for its backend
 * suspends its connection; backend data resumes it. So no thread ever blocks on a
 * backend, and N workers share the port through SO_REUSEPORT. The main thread only
 * handles signals, reloads and the systemd watchdog. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "daemon-int.h"
#include "guard/guard.h"
#include "log.h"
#include "notify.h"
#include "server.h"
#include "storage.h"
#include "text.h"

#define MAX_SUBSCRIBERS 8

static struct {
    daemon_event_fn *fn;
    void *ctx;
} subscribers[MAX_SUBSCRIBERS];
static size_t n_subscribers;

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
    int stopping; /* 1 after a stop signal, 2 after the second (cut off now) */
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
int
daemon__reload(char *err, size_t errlen)
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
        daemon__reload(err, sizeof(err));
}

void
daemon__add_route_headers(struct daemon_request *rq, struct http_response *dresp)
{
    char num[32];

    http_response_header(dresp, "x-triage-request-id", rq->id);
    if (rq->backend >= 0)
        http_response_header(dresp, "x-triage-backend",
                                rq->snap->conf->backends[rq->backend].name);
    if (rq->route_reason)
        http_response_header(dresp, "x-triage-route", rq->route_reason);
    if (!isnan(rq->score)) {
        snprintf(num, sizeof(num), "%.4f", rq->score);
        http_response_header(dresp, "x-triage-score", num);
    }
    if (!isnan(rq->threshold)) {
        snprintf(num, sizeof(num), "%.4f", rq->threshold);
        http_response_header(dresp, "x-triage-threshold", num);
    }
    daemon__cascade_headers(rq, dresp);
    /* triage's own time on the request before it went upstream: body parse,
     * features, score, policy and forward setup (also triage_routing_overhead_seconds) */
    if (!isnan(rq->overhead_ms)) {
        snprintf(num, sizeof(num), "%.0f", rq->overhead_ms * 1000);
        http_response_header(dresp, "x-triage-overhead-us", num);
    }
    daemon__add_budget_headers(rq, dresp);
}

void
daemon__add_budget_headers(struct daemon_request *rq, struct http_response *dresp)
{
    char num[48];
    const struct budget_state *b = &rq->budget;

    if (!b->limited)
        return;
    snprintf(num, sizeof(num), "%.6f", b->limit_usd);
    http_response_header(dresp, "x-triage-budget-limit-usd", num);
    snprintf(num, sizeof(num), "%.6f", b->spent_usd < b->limit_usd ? b->limit_usd - b->spent_usd : 0.0);
    http_response_header(dresp, "x-triage-budget-remaining-usd", num);
    snprintf(num, sizeof(num), "%lld", (long long)(b->reset_ms / 1000));
    /* Unix seconds: the period's end */
    http_response_header(dresp, "x-triage-budget-reset", num);
}

void
daemon__request_orphan_done(struct daemon_request *rq)
{
    rq->work_pending = 0;
    daemon__request_finish(rq);
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

struct daemon_request *
daemon__request_new(struct daemon_worker *w, struct MHD_Connection *conn, const char *url,
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
void
daemon__request_finish(struct daemon_request *rq)
{
    struct daemon_worker *w = rq->w;
    double latency = daemon__ms_since(rq->t_start_ns);
    double cost = 0;
    const struct conf *c = rq->snap ? rq->snap->conf : NULL;

    http_gone_unwatch(rq);
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
    http_response_free(rq->response);
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

/* ---- the worker loop -------------------------------------------------------------- */

static void on_idle(uv_idle_t *h);

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
        http_run(w);
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
        log_warnx("outcome log %s: write failed: %s; so far %llu failed writes, %llu rows "
                  "waiting to be written, %llu lost",
                  storage_target_shown(storage_path(st)), sc.last_error,
                  (unsigned long long)sc.write_errors, (unsigned long long)sc.depth,
                  (unsigned long long)(sc.failed + sc.dropped));
        reported = sc.write_errors;
        warned_ms = now_ms;
        failing = 1;
    } else if (failing && !sc.degraded) {
        log_info("outcome log %s: writes succeed again; %llu rows lost so far",
                 storage_target_shown(storage_path(st)),
                 (unsigned long long)(sc.failed + sc.dropped));
        failing = 0;
    }
}

static void
on_heartbeat(uv_timer_t *t)
{
    struct daemon_worker *w = t->data;

    atomic_store(&w->beat_ms, uv_now(&w->loop));
    atomic_store(&w->beat_ns, daemon__now_ns());
    http_gone_watch_waiting(w);
    if (w->idx == 0)
        log_watch();
    /* libmicrohttpd takes its listening socket out of epoll when accept() fails for want
     * of descriptors (EMFILE) and puts it back only in a later MHD_run: once every
     * connection has gone no event calls one, and the worker would never accept again. */
    http_run(w);
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
        http_wake(rq);
    }
    /* what daemon__proxy_release queued (a stream's error event, a 503) goes out before
     * MHD stops: one run has the reply built, the next sends it */
    for (int i = 0; i < 4 && w->n_requests; i++)
        http_run(w);
    http_worker_stop(w); /* ends every connection: each request is finished */
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

    if (w->n_requests > 0 && uv_now(&w->loop) < w->stop_deadline && !atomic_load(&w->cut_now))
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
    http_worker_quiesce(w);
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
    http_run(w);
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

    w->listen_fd = bind_listener(c, c->workers > 1, &v6, err, errlen);
    if (w->listen_fd < 0)
        return -1;
    /* max_connections is for the whole server; each worker takes its share */
    w->max_conns = c->max_connections / (c->workers ? c->workers : 1);
    if (w->max_conns == 0)
        w->max_conns = 1;
    if (http_worker_start(w, c, v6, err, errlen) < 0)
        return -1;
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
        daemon__reload(err, sizeof(err));
        return;
    }
    if (srv->stopping > 1) {
        log_warnx("third %s: exiting now; rows still queued are lost", strsignal(signum));
        _exit(1);
    }
    if (srv->stopping) {
        /* Impatient, not careless: what still runs is cut off now, as at the deadline
         * (recorded with error kind shutdown), and the outcome log is drained. */
        srv->stopping = 2;
        log_warnx("second %s: cutting off the requests still running now; their rows and "
                  "the queued ones are written before exiting (a third %s exits at once)",
                  strsignal(signum), strsignal(signum));
        for (unsigned i = 0; i < srv->n_started; i++)
            atomic_store(&srv->workers[i].cut_now, 1);
        return;
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
    if (http_mhd_errors_install() < 0) /* only the bodies of libmicrohttpd's own errors */
        log_warnx("libmicrohttpd's own error answers stay HTML (its function was not found)");
    start_ns = daemon__now_ns();
    daemon__start_unix = (int64_t)time(NULL);
    srv->conf_path = strdup(conf_path);
    if (!srv->conf_path)
        abort();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    srv->curl_ready = 1;
    signal(SIGPIPE, SIG_IGN);
    int rc = api_routes_add(); /* the paths triaged serves itself (api/routes.c) */
    if (rc < 0) {
        snprintf(err, errlen, "cannot add the API's routes: %s", strerror(-rc));
        goto fail;
    }

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
        if (sc.degraded) /* PostgreSQL away, the file corrupt or locked: rows queue */
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
