/* metrics.c - lock-free Prometheus metrics: sharded atomic cells, text rendering. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "hooks.h"
#include "metrics.h"

#define SHARDS 8      /* threads beyond this share shards (still atomic, just contended) */
#define N_REASONS 16  /* distinct route reasons; slot 0 is "other" */
#define N_KINDS 16    /* distinct backend error kinds; slot 0 is "other" */
#define N_CODES 24    /* distinct HTTP statuses; slot 0 is "other" */
#define N_KEYS 64     /* distinct client key names; slot 0 is "other" */
#define CELL_ALIGN 64 /* a cache line: shards never share one */
#define FIXED 1e9     /* sums are kept in 1e-9 units (ns, nano-USD) */

/* Bucket bounds are written as strings so the rendered `le` is exactly this text. */
static const char *const lat_bounds[] = {"0.05", "0.1", "0.25", "0.5", "1",  "2.5", "5",
                                         "10",   "20",  "30",   "60",  "120", "300"};
static const char *const ttfb_bounds[] = {"0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
                                          "1",    "2.5",   "5",    "10",  "30"};
static const char *const score_bounds[] = {"0.1", "0.2", "0.3", "0.4", "0.5",
                                           "0.6", "0.7", "0.8", "0.9", "1"};
static const char *const ovh_bounds[] = {"0.000005", "0.00001", "0.000025", "0.00005",
                                         "0.0001",   "0.00025", "0.0005",   "0.001",
                                         "0.0025",   "0.005",   "0.01",     "0.025"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define N_LAT COUNT(lat_bounds)
#define N_TTFB COUNT(ttfb_bounds)
#define N_SCORE COUNT(score_bounds)
#define N_OVH COUNT(ovh_bounds)

/* An append-only set of label strings; slot 0 holds "other". */
struct intern {
    _Atomic(char *) v[N_KEYS]; /* the largest table's size; cap says how many are used */
    size_t cap;
};

struct metrics {
    char **names; /* n backend names; index n renders as "none" */
    size_t n;
    size_t nb;    /* n + 1 */

    struct intern reasons;
    struct intern kinds;
    struct intern keys;
    _Atomic int codes[N_CODES]; /* status + 1; 0 = empty slot; slot 0 = "other" */

    double lat_le[N_LAT], ttfb_le[N_TTFB], score_le[N_SCORE], ovh_le[N_OVH];

    /* Cell offsets inside one shard. */
    size_t o_req, o_lat, o_lat_sum, o_ttfb, o_ttfb_sum, o_score, o_score_sum, o_ovh,
        o_ovh_sum, o_tok_in, o_tok_out, o_cost, o_retry, o_fallback, o_error, o_key_req,
        o_key_tok_in, o_key_tok_out, o_key_cost;
    size_t stride; /* cells per shard, rounded up to a cache line */
    _Atomic uint64_t *cells;

    metrics_gauges_fn gauges_fn;
    void *gauges_ud;
    int attached; /* metrics_attach ran: the server's own gauges come first */
};

static atomic_uint next_shard;
static _Thread_local unsigned tl_shard; /* shard index + 1; 0: not chosen yet */

static void *
xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

static char *
xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

static _Atomic uint64_t *
shard_cells(struct metrics *m)
{
    if (!tl_shard)
        tl_shard = atomic_fetch_add_explicit(&next_shard, 1, memory_order_relaxed) % SHARDS + 1;
    return m->cells + (size_t)(tl_shard - 1) * m->stride;
}

static void
add(_Atomic uint64_t *c, size_t off, uint64_t v)
{
    atomic_fetch_add_explicit(&c[off], v, memory_order_relaxed);
}

/* Sums one cell over all shards. */
static uint64_t
total(const struct metrics *m, size_t off)
{
    uint64_t s = 0;
    for (size_t i = 0; i < SHARDS; i++)
        s += atomic_load_explicit(&m->cells[i * m->stride + off], memory_order_relaxed);
    return s;
}

static uint64_t
to_fixed(double v)
{
    return (uint64_t)llround(v * FIXED);
}

static size_t
bucket_of(const double *le, size_t n, double v)
{
    size_t i = 0;
    while (i < n && v > le[i])
        i++;
    return i; /* n: only the +Inf bucket */
}

static void
intern_init(struct intern *t, size_t cap)
{
    t->cap = cap;
    for (size_t i = 0; i < COUNT(t->v); i++)
        atomic_init(&t->v[i], NULL);
    atomic_store(&t->v[0], xstrdup("other"));
}

/* Returns the slot of s, adding it if there is room, else 0 ("other"). Slots fill
 * in order, so two threads adding the same string meet at the same slot. */
static size_t
intern_get(struct intern *t, const char *s)
{
    for (size_t i = 0; i < t->cap; i++) {
        char *p = atomic_load_explicit(&t->v[i], memory_order_acquire);
        if (!p) {
            char *dup = xstrdup(s);
            if (atomic_compare_exchange_strong_explicit(&t->v[i], &p, dup, memory_order_acq_rel,
                                                        memory_order_acquire))
                return i;
            free(dup); /* another thread took the slot; p is its string */
        }
        if (!strcmp(p, s))
            return i;
    }
    return 0;
}

static void
intern_free(struct intern *t)
{
    for (size_t i = 0; i < COUNT(t->v); i++)
        free(atomic_load(&t->v[i]));
}

static size_t
code_slot(struct metrics *m, int status)
{
    if (status < 0 || status > 999)
        return 0;
    for (size_t i = 1; i < N_CODES; i++) {
        int c = atomic_load_explicit(&m->codes[i], memory_order_relaxed);
        if (!c && atomic_compare_exchange_strong_explicit(&m->codes[i], &c, status + 1,
                                                          memory_order_relaxed,
                                                          memory_order_relaxed))
            return i;
        if (c == status + 1)
            return i;
    }
    return 0;
}

static size_t
backend_slot(const struct metrics *m, int b)
{
    return b >= 0 && (size_t)b < m->n ? (size_t)b : m->n;
}

struct metrics *
metrics_create(const char *const *names, size_t n)
{
    struct metrics *m = xmalloc(sizeof(*m));
    memset(m, 0, sizeof(*m));
    m->n = n;
    m->nb = n + 1;
    m->names = xmalloc(n * sizeof(char *));
    for (size_t i = 0; i < n; i++)
        m->names[i] = xstrdup(names[i]);
    intern_init(&m->reasons, N_REASONS);
    intern_init(&m->kinds, N_KINDS);
    intern_init(&m->keys, N_KEYS);
    for (size_t i = 0; i < N_CODES; i++)
        atomic_init(&m->codes[i], 0);

    for (size_t i = 0; i < N_LAT; i++)
        m->lat_le[i] = strtod(lat_bounds[i], NULL);
    for (size_t i = 0; i < N_TTFB; i++)
        m->ttfb_le[i] = strtod(ttfb_bounds[i], NULL);
    for (size_t i = 0; i < N_SCORE; i++)
        m->score_le[i] = strtod(score_bounds[i], NULL);
    for (size_t i = 0; i < N_OVH; i++)
        m->ovh_le[i] = strtod(ovh_bounds[i], NULL);

    size_t nb = m->nb, o = 0;
    m->o_req = o, o += nb * N_REASONS * N_CODES;
    m->o_lat = o, o += nb * (N_LAT + 1);
    m->o_lat_sum = o, o += nb;
    m->o_ttfb = o, o += nb * (N_TTFB + 1);
    m->o_ttfb_sum = o, o += nb;
    m->o_score = o, o += N_SCORE + 1;
    m->o_score_sum = o, o += 1;
    m->o_ovh = o, o += N_OVH + 1;
    m->o_ovh_sum = o, o += 1;
    m->o_tok_in = o, o += nb;
    m->o_tok_out = o, o += nb;
    m->o_cost = o, o += nb;
    m->o_retry = o, o += nb;
    m->o_fallback = o, o += nb * nb;
    m->o_error = o, o += nb * N_KINDS;
    m->o_key_req = o, o += N_KEYS;
    m->o_key_tok_in = o, o += N_KEYS;
    m->o_key_tok_out = o, o += N_KEYS;
    m->o_key_cost = o, o += N_KEYS;
    size_t per_line = CELL_ALIGN / sizeof(uint64_t);
    m->stride = (o + per_line - 1) / per_line * per_line;

    size_t bytes = SHARDS * m->stride * sizeof(uint64_t);
    m->cells = aligned_alloc(CELL_ALIGN, bytes);
    if (!m->cells)
        abort();
    for (size_t i = 0; i < SHARDS * m->stride; i++)
        atomic_init(&m->cells[i], 0);
    return m;
}

void
metrics_destroy(struct metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        free(m->names[i]);
    free(m->names);
    intern_free(&m->reasons);
    intern_free(&m->kinds);
    intern_free(&m->keys);
    free(m->cells);
    free(m);
}

int
metrics_backend_index(const struct metrics *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->names[i], name))
            return (int)i;
    return -1;
}

void
metrics_record_request(struct metrics *m, const struct metrics_request *r)
{
    _Atomic uint64_t *c = shard_cells(m);
    size_t b = backend_slot(m, r->backend);
    size_t reason = intern_get(&m->reasons, r->reason ? r->reason : "none");
    size_t code = code_slot(m, r->status);

    add(c, m->o_req + (b * N_REASONS + reason) * N_CODES + code, 1);
    if (isfinite(r->latency_s) && r->latency_s >= 0) {
        add(c, m->o_lat + b * (N_LAT + 1) + bucket_of(m->lat_le, N_LAT, r->latency_s), 1);
        add(c, m->o_lat_sum + b, to_fixed(r->latency_s));
    }
    if (isfinite(r->ttfb_s) && r->ttfb_s >= 0) {
        add(c, m->o_ttfb + b * (N_TTFB + 1) + bucket_of(m->ttfb_le, N_TTFB, r->ttfb_s), 1);
        add(c, m->o_ttfb_sum + b, to_fixed(r->ttfb_s));
    }
    if (isfinite(r->score)) {
        double s = r->score < 0 ? 0 : r->score > 1 ? 1 : r->score;
        add(c, m->o_score + bucket_of(m->score_le, N_SCORE, s), 1);
        add(c, m->o_score_sum, to_fixed(s));
    }
    if (isfinite(r->overhead_s) && r->overhead_s >= 0) {
        add(c, m->o_ovh + bucket_of(m->ovh_le, N_OVH, r->overhead_s), 1);
        add(c, m->o_ovh_sum, to_fixed(r->overhead_s));
    }
    if (r->tokens_in > 0)
        add(c, m->o_tok_in + b, (uint64_t)r->tokens_in);
    if (r->tokens_out > 0)
        add(c, m->o_tok_out + b, (uint64_t)r->tokens_out);
    if (isfinite(r->cost_usd) && r->cost_usd > 0)
        add(c, m->o_cost + b, to_fixed(r->cost_usd));
}

void
metrics_record_retry(struct metrics *m, int backend)
{
    add(shard_cells(m), m->o_retry + backend_slot(m, backend), 1);
}

void
metrics_record_fallback(struct metrics *m, int from, int to)
{
    add(shard_cells(m), m->o_fallback + backend_slot(m, from) * m->nb + backend_slot(m, to), 1);
}

void
metrics_record_backend_error(struct metrics *m, int backend, const char *kind)
{
    size_t k = intern_get(&m->kinds, kind ? kind : "other");
    add(shard_cells(m), m->o_error + backend_slot(m, backend) * N_KINDS + k, 1);
}

void
metrics_record_key(struct metrics *m, const char *key, int64_t tokens_in, int64_t tokens_out,
                   double cost_usd)
{
    _Atomic uint64_t *c = shard_cells(m);
    size_t k = intern_get(&m->keys, key);

    add(c, m->o_key_req + k, 1);
    if (tokens_in > 0)
        add(c, m->o_key_tok_in + k, (uint64_t)tokens_in);
    if (tokens_out > 0)
        add(c, m->o_key_tok_out + k, (uint64_t)tokens_out);
    if (isfinite(cost_usd) && cost_usd > 0)
        add(c, m->o_key_cost + k, to_fixed(cost_usd));
}

void
metrics_set_gauges(struct metrics *m, metrics_gauges_fn fn, void *ud)
{
    m->gauges_fn = fn;
    m->gauges_ud = ud;
}

static void server_gauges(struct metrics_gauges *g);

/* ---- rendering ------------------------------------------------------------ */

struct buf {
    char *p;
    size_t len, cap;
};

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
put(struct buf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        /* the first call sees no buffer yet: size it (NULL + 0 is undefined) */
        int k = vsnprintf(b->p ? b->p + b->len : NULL, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (k < 0)
            abort();
        if ((size_t)k < b->cap - b->len) {
            b->len += (size_t)k;
            return;
        }
        b->cap = b->cap * 2 + (size_t)k;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
}

/* Appends s as a label value: backslash, double quote and newline escaped. */
static void
put_label(struct buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            put(b, "\\\\");
        else if (*s == '"')
            put(b, "\\\"");
        else if (*s == '\n')
            put(b, "\\n");
        else
            put(b, "%c", *s);
    }
}

/* Appends a fixed-point value (1e-9 units) as an exact decimal. */
static void
put_fixed(struct buf *b, uint64_t v)
{
    uint64_t ip = v / (uint64_t)FIXED, fp = v % (uint64_t)FIXED;
    if (!fp) {
        put(b, "%" PRIu64, ip);
        return;
    }
    char frac[16];
    snprintf(frac, sizeof(frac), "%09" PRIu64, fp);
    size_t n = strlen(frac);
    while (n > 0 && frac[n - 1] == '0')
        frac[--n] = '\0';
    put(b, "%" PRIu64 ".%s", ip, frac);
}

static void
put_family(struct buf *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static const char *
backend_name(const struct metrics *m, size_t b)
{
    return b < m->n ? m->names[b] : "none";
}

/* Renders one histogram child. `label` is the preamble inside the braces (may be
 * empty); _count is the sum of the buckets so +Inf always equals it. */
static void
put_hist(struct buf *b, const struct metrics *m, const char *name, const char *label,
         const char *const *bounds, size_t nbounds, size_t o_buckets, size_t o_sum)
{
    uint64_t cum = 0;
    const char *sep = *label ? "," : "";
    for (size_t i = 0; i <= nbounds; i++) {
        cum += total(m, o_buckets + i);
        put(b, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", name, label, sep,
            i < nbounds ? bounds[i] : "+Inf", cum);
    }
    put(b, "%s_sum%s%s%s ", name, *label ? "{" : "", label, *label ? "}" : "");
    put_fixed(b, total(m, o_sum));
    put(b, "\n%s_count%s%s%s %" PRIu64 "\n", name, *label ? "{" : "", label, *label ? "}" : "",
        cum);
}

static uint64_t
hist_count(const struct metrics *m, size_t o_buckets, size_t nbounds)
{
    uint64_t s = 0;
    for (size_t i = 0; i <= nbounds; i++)
        s += total(m, o_buckets + i);
    return s;
}

/* Renders a per-backend histogram; the "none" child only when it has data. */
static void
put_backend_hist(struct buf *b, const struct metrics *m, const char *name, const char *help,
                 const char *const *bounds, size_t nbounds, size_t o_buckets, size_t o_sum)
{
    put_family(b, name, "histogram", help);
    for (size_t i = 0; i < m->nb; i++) {
        size_t ob = o_buckets + i * (nbounds + 1);
        if (i == m->n && !hist_count(m, ob, nbounds))
            continue;
        struct buf lb = {0};
        put(&lb, "backend=\"");
        put_label(&lb, backend_name(m, i));
        put(&lb, "\"");
        put_hist(b, m, name, lb.p, bounds, nbounds, ob, o_sum + i);
        free(lb.p);
    }
}

/* Renders a counter with one value per backend; "none" only when non-zero. */
static void
put_backend_counter(struct buf *b, const struct metrics *m, const char *name, size_t off,
                    int fixed, const char *extra)
{
    for (size_t i = 0; i < m->nb; i++) {
        uint64_t v = total(m, off + i);
        if (i == m->n && !v)
            continue;
        put(b, "%s{backend=\"", name);
        put_label(b, backend_name(m, i));
        put(b, "\"%s} ", extra ? extra : "");
        if (fixed)
            put_fixed(b, v);
        else
            put(b, "%" PRIu64, v);
        put(b, "\n");
    }
}

static void
put_double(struct buf *b, double v)
{
    put(b, "%.15g", v);
}

/* A family of one sample without labels: its HELP and TYPE, then "name v". */
static void
put_one(struct buf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    put_family(b, name, type, help);
    put(b, "%s %" PRIu64 "\n", name, v);
}

static void
put_one_double(struct buf *b, const char *name, const char *type, const char *help, double v)
{
    put_family(b, name, type, help);
    put(b, "%s ", name);
    put_double(b, v);
    put(b, "\n");
}

/* The three kinds of a share of a route (of one of its tiers when tier is set): the
 * target, recent and since start; a kind that is not finite is left out. */
static void
put_share_kinds(struct buf *b, const char *name, const char *route, const char *tier,
                const double v[3])
{
    static const char *const kinds[] = {"target", "recent", "total"};

    for (size_t k = 0; k < 3; k++) {
        if (!isfinite(v[k]))
            continue;
        put(b, "%s{route=\"", name);
        put_label(b, route);
        if (tier) {
            put(b, "\",tier=\"");
            put_label(b, tier);
        }
        put(b, "\",kind=\"%s\"} ", kinds[k]);
        put_double(b, v[k]);
        put(b, "\n");
    }
}

char *
metrics_render(struct metrics *m, size_t *len)
{
    struct buf b = {0};
    b.cap = 16384;
    b.p = xmalloc(b.cap);
    b.p[0] = '\0';

    put_family(&b, "triage_build_info", "gauge", "Build information; the value is always 1.");
    put(&b, "triage_build_info{version=\"%s\"} 1\n", TRIAGE_VERSION);

    /* Requests by backend, reason, status: only the combinations seen. */
    put_family(&b, "triage_requests_total", "counter",
               "Requests answered, by backend, route reason and HTTP status.");
    for (size_t i = 0; i < m->nb; i++)
        for (size_t r = 0; r < N_REASONS; r++) {
            const char *rs = atomic_load_explicit(&m->reasons.v[r], memory_order_acquire);
            if (!rs)
                break;
            for (size_t k = 0; k < N_CODES; k++) {
                uint64_t v = total(m, m->o_req + (i * N_REASONS + r) * N_CODES + k);
                if (!v)
                    continue;
                int code = atomic_load_explicit(&m->codes[k], memory_order_relaxed) - 1;
                put(&b, "triage_requests_total{backend=\"");
                put_label(&b, backend_name(m, i));
                put(&b, "\",reason=\"");
                put_label(&b, rs);
                if (k == 0)
                    put(&b, "\",status=\"other\"} %" PRIu64 "\n", v);
                else
                    put(&b, "\",status=\"%d\"} %" PRIu64 "\n", code, v);
            }
        }

    put_backend_hist(&b, m, "triage_request_duration_seconds",
                     "Time from request arrival to the last byte sent, by backend.", lat_bounds,
                     N_LAT, m->o_lat, m->o_lat_sum);
    put_backend_hist(&b, m, "triage_time_to_first_byte_seconds",
                     "Time from request arrival to the first response byte, by backend.",
                     ttfb_bounds, N_TTFB, m->o_ttfb, m->o_ttfb_sum);

    put_family(&b, "triage_routing_score", "histogram",
               "Difficulty score of routed requests (0 easy, 1 hard).");
    put_hist(&b, m, "triage_routing_score", "", score_bounds, N_SCORE, m->o_score,
             m->o_score_sum);
    put_family(&b, "triage_routing_overhead_seconds", "histogram",
               "Time triage itself spent per request: parse, features, score, forward setup.");
    put_hist(&b, m, "triage_routing_overhead_seconds", "", ovh_bounds, N_OVH, m->o_ovh,
             m->o_ovh_sum);

    put_family(&b, "triage_tokens_total", "counter",
               "Tokens reported in upstream usage, by backend and direction.");
    put_backend_counter(&b, m, "triage_tokens_total", m->o_tok_in, 0,
                        ",direction=\"input\"");
    put_backend_counter(&b, m, "triage_tokens_total", m->o_tok_out, 0,
                        ",direction=\"output\"");
    put_family(&b, "triage_cost_usd_total", "counter",
               "Estimated spend in US dollars from token usage and backend prices.");
    put_backend_counter(&b, m, "triage_cost_usd_total", m->o_cost, 1, NULL);

    put_family(&b, "triage_backend_errors_total", "counter",
               "Failed upstream attempts, by backend and error kind.");
    for (size_t i = 0; i < m->nb; i++)
        for (size_t k = 0; k < N_KINDS; k++) {
            const char *ks = atomic_load_explicit(&m->kinds.v[k], memory_order_acquire);
            if (!ks)
                break;
            uint64_t v = total(m, m->o_error + i * N_KINDS + k);
            if (!v)
                continue;
            put(&b, "triage_backend_errors_total{backend=\"");
            put_label(&b, backend_name(m, i));
            put(&b, "\",kind=\"");
            put_label(&b, ks);
            put(&b, "\"} %" PRIu64 "\n", v);
        }
    put_family(&b, "triage_retries_total", "counter",
               "Upstream attempts retried before the first byte, by backend.");
    put_backend_counter(&b, m, "triage_retries_total", m->o_retry, 0, NULL);
    put_family(&b, "triage_fallbacks_total", "counter",
               "Requests moved from a failing backend to the next one.");
    for (size_t i = 0; i < m->nb; i++)
        for (size_t j = 0; j < m->nb; j++) {
            uint64_t v = total(m, m->o_fallback + i * m->nb + j);
            if (!v)
                continue;
            put(&b, "triage_fallbacks_total{from=\"");
            put_label(&b, backend_name(m, i));
            put(&b, "\",to=\"");
            put_label(&b, backend_name(m, j));
            put(&b, "\"} %" PRIu64 "\n", v);
        }

    /* Per client key (when [auth] keys_file names them): requests, tokens, spend. */
    put_family(&b, "triage_key_requests_total", "counter",
               "Requests by client key name (keys_file; past 63 names: other).");
    for (size_t i = 0; i < N_KEYS; i++) {
        const char *name = atomic_load_explicit(&m->keys.v[i], memory_order_acquire);
        uint64_t v = total(m, m->o_key_req + i);
        if (!name || !v)
            continue;
        put(&b, "triage_key_requests_total{key=\"");
        put_label(&b, name);
        put(&b, "\"} %" PRIu64 "\n", v);
    }
    put_family(&b, "triage_key_tokens_total", "counter",
               "Tokens reported in upstream usage, by client key name and direction.");
    for (size_t i = 0; i < N_KEYS; i++) {
        const char *name = atomic_load_explicit(&m->keys.v[i], memory_order_acquire);
        if (!name || !total(m, m->o_key_req + i))
            continue;
        for (int d = 0; d < 2; d++) {
            put(&b, "triage_key_tokens_total{key=\"");
            put_label(&b, name);
            put(&b, "\",direction=\"%s\"} %" PRIu64 "\n", d ? "output" : "input",
                total(m, (d ? m->o_key_tok_out : m->o_key_tok_in) + i));
        }
    }
    put_family(&b, "triage_key_cost_usd_total", "counter",
               "Estimated spend in US dollars by client key name.");
    for (size_t i = 0; i < N_KEYS; i++) {
        const char *name = atomic_load_explicit(&m->keys.v[i], memory_order_acquire);
        if (!name || !total(m, m->o_key_req + i))
            continue;
        put(&b, "triage_key_cost_usd_total{key=\"");
        put_label(&b, name);
        put(&b, "\"} ");
        put_fixed(&b, total(m, m->o_key_cost + i));
        put(&b, "\n");
    }

    /* Gauges owned by other modules. */
    struct metrics_gauges g;
    memset(&g, 0, sizeof(g));
    int *circuit = xmalloc(m->n * sizeof(int)); /* ours, even if a callback repoints g.circuit */
    for (size_t i = 0; i < m->n; i++)
        circuit[i] = METRICS_CIRCUIT_UNKNOWN;
    g.circuit = circuit;
    g.n_backends = m->n;
    g.inflight = g.log_queue_depth = g.log_written = g.log_dropped = g.log_failed = -1;
    g.model_loaded_time = g.threshold = NAN;
    if (m->attached)
        server_gauges(&g);
    if (m->gauges_fn)
        m->gauges_fn(m->gauges_ud, &g);
    g.model_version[sizeof(g.model_version) - 1] = '\0';

    /* Backends beyond the ones named at create time (added by a reload) are not shown. */
    size_t nc = g.circuit ? (g.n_backends < m->n ? g.n_backends : m->n) : 0;
    int any = 0;
    for (size_t i = 0; i < nc; i++)
        any |= g.circuit[i] != METRICS_CIRCUIT_UNKNOWN;
    if (any) {
        put_family(&b, "triage_circuit_state", "gauge",
                   "Circuit breaker state per backend: 0 closed, 1 half-open, 2 open.");
        for (size_t i = 0; i < nc; i++) {
            if (g.circuit[i] == METRICS_CIRCUIT_UNKNOWN)
                continue;
            put(&b, "triage_circuit_state{backend=\"");
            put_label(&b, m->names[i]);
            put(&b, "\"} %d\n", g.circuit[i]);
        }
    }
    free(circuit);

    /* -1: unknown, left out */
    if (g.inflight >= 0)
        put_one(&b, "triage_inflight_requests", "gauge", "Requests being served now.",
                (uint64_t)g.inflight);
    if (g.log_queue_depth >= 0)
        put_one(&b, "triage_log_queue_depth", "gauge",
                "Outcome rows waiting for the database writer.", (uint64_t)g.log_queue_depth);
    if (g.log_written >= 0)
        put_one(&b, "triage_log_written_rows_total", "counter",
                "Outcome rows committed to the database.", (uint64_t)g.log_written);
    if (g.log_dropped >= 0)
        put_one(&b, "triage_log_dropped_rows_total", "counter",
                "Outcome rows dropped because the writer queue was full.", (uint64_t)g.log_dropped);
    if (g.log_failed >= 0)
        put_one(&b, "triage_log_failed_rows_total", "counter",
                "Outcome rows lost to database write errors.", (uint64_t)g.log_failed);
    if (g.learn_budget_usd > 0) {
        put_family(&b, "triage_learning_calls_total", "counter",
                   "Shadow and judge calls started (labels without humans).");
        put(&b, "triage_learning_calls_total{kind=\"shadow\"} %" PRIu64 "\n",
            g.learn_shadow_calls);
        put(&b, "triage_learning_calls_total{kind=\"judge\"} %" PRIu64 "\n", g.learn_judge_calls);
        put_one(&b, "triage_learning_labels_total", "counter",
                "Judge grades written to the outcome log.", g.learn_labels);
        put_one(&b, "triage_learning_unparseable_total", "counter",
                "Judge answers that gave no grade (no label).", g.learn_judge_unparseable);
        put_one(&b, "triage_learning_failed_total", "counter",
                "Shadow or judge calls that gave no answer.", g.learn_failed);
        put_family(&b, "triage_learning_dropped_total", "counter",
                   "Shadow or judge calls not made: queue full, budget spent, backend busy.");
        put(&b, "triage_learning_dropped_total{reason=\"queue\"} %" PRIu64 "\n",
            g.learn_dropped_queue);
        put(&b, "triage_learning_dropped_total{reason=\"budget\"} %" PRIu64 "\n",
            g.learn_dropped_budget);
        put(&b, "triage_learning_dropped_total{reason=\"busy\"} %" PRIu64 "\n",
            g.learn_dropped_busy);
        put_one(&b, "triage_learning_judged_prompts_total", "counter",
                "Prompts whose every answer was graded by the judge.", g.learn_judged);
        put_one(&b, "triage_learning_retrains_total", "counter",
                "Automatic retrains run (a challenger trained and evaluated).", g.learn_retrains);
        put_one(&b, "triage_learning_promotions_total", "counter",
                "Retrained models that replaced the champion.", g.learn_promotions);
        put_one_double(&b, "triage_learning_spend_usd", "gauge",
                       "Shadow + judge spend settled this UTC day.", g.learn_spent_usd);
        put_one_double(&b, "triage_learning_reserved_usd", "gauge",
                       "Spend reserved by the shadow and judge calls running now.",
                       g.learn_reserved_usd);
        put_one_double(&b, "triage_learning_budget_usd", "gauge",
                       "The daily cap on shadow + judge spend.", g.learn_budget_usd);
    }
    if (g.model_version[0]) {
        put_family(&b, "triage_model_info", "gauge",
                   "The loaded predictor model; the value is always 1.");
        put(&b, "triage_model_info{version=\"");
        put_label(&b, g.model_version);
        put(&b, "\"} 1\n");
    }
    if (isfinite(g.model_loaded_time))
        put_one_double(&b, "triage_model_loaded_timestamp_seconds", "gauge",
                       "Unix time the predictor model was loaded.", g.model_loaded_time);
    if (isfinite(g.threshold))
        put_one_double(&b, "triage_routing_threshold", "gauge",
                       "Fixed score at or above which the threshold policy picks the strong "
                       "backend (absent when a share sets the cut: see triage_route_cut).",
                       g.threshold);
    if (g.n_share_routes) {
        put_family(&b, "triage_route_strong_share", "gauge",
                   "Strong share of the requests routed by share: the target (mean of the "
                   "requested shares), recent (the workers' windows) and since start.");
        for (size_t i = 0; i < g.n_share_routes; i++) {
            double v[] = {g.share[i].target, g.share[i].recent,
                          g.share[i].requests
                              ? (double)g.share[i].strong / (double)g.share[i].requests
                              : NAN};
            put_share_kinds(&b, "triage_route_strong_share", g.share[i].route, NULL, v);
        }
        put_family(&b, "triage_route_tier_share", "gauge",
                   "Share of the requests routed by share that went to each tier (backend): "
                   "the target, recent (the workers' windows) and since start.");
        for (size_t i = 0; i < g.n_share_routes; i++)
            for (size_t t = 0; t < g.share[i].n_tiers; t++) {
                double v[] = {g.share[i].tier[t].target, g.share[i].tier[t].recent,
                              g.share[i].requests ? (double)g.share[i].tier[t].requests /
                                                        (double)g.share[i].requests
                                                  : NAN};
                put_share_kinds(&b, "triage_route_tier_share", g.share[i].route,
                                g.share[i].tier[t].backend, v);
            }
        put_family(&b, "triage_route_cut", "gauge",
                   "Score at or above which a request routed by share goes past the tier: the "
                   "live cut on the route's recent scores (mean over the workers).");
        for (size_t i = 0; i < g.n_share_routes; i++)
            for (size_t t = 0; t + 1 < g.share[i].n_tiers; t++) {
                if (!isfinite(g.share[i].tier[t].cut))
                    continue;
                put(&b, "triage_route_cut{route=\"");
                put_label(&b, g.share[i].route);
                put(&b, "\",tier=\"");
                put_label(&b, g.share[i].tier[t].backend);
                put(&b, "\"} ");
                put_double(&b, g.share[i].tier[t].cut);
                put(&b, "\n");
            }
        put_family(&b, "triage_route_share_requests_total", "counter",
                   "Requests routed by share (strong_share or x-triage-strong-share).");
        for (size_t i = 0; i < g.n_share_routes; i++) {
            put(&b, "triage_route_share_requests_total{route=\"");
            put_label(&b, g.share[i].route);
            put(&b, "\"} %" PRIu64 "\n", g.share[i].requests);
        }
        put_family(&b, "triage_route_share_strong_total", "counter",
                   "Requests routed by share that went to the strong tier.");
        for (size_t i = 0; i < g.n_share_routes; i++) {
            put(&b, "triage_route_share_strong_total{route=\"");
            put_label(&b, g.share[i].route);
            put(&b, "\"} %" PRIu64 "\n", g.share[i].strong);
        }
    }

    if (len)
        *len = b.len;
    return b.p;
}

/* ---- wiring into the HTTP server ----------------------------------------- */

static void
on_request_event(void *ctx, const struct daemon_request_event *ev)
{
    struct metrics *m = ctx;
    /* Only model traffic: health checks, scrapes and the dashboard would drown it. */
    if (ev->path && strcmp(ev->path, "/v1/chat/completions"))
        return;
    int b = ev->backend ? metrics_backend_index(m, ev->backend) : -1;
    int first = ev->first_backend ? metrics_backend_index(m, ev->first_backend) : b;
    int fell_back = ev->first_backend && ev->backend && strcmp(ev->first_backend, ev->backend);
    struct metrics_request r = {
        .backend = b,
        .reason = ev->route_reason,
        .status = ev->status,
        .latency_s = ev->latency_ms / 1000.0, /* NaN stays NaN */
        .ttfb_s = ev->ttfb_ms / 1000.0,
        .score = ev->score,
        .tokens_in = ev->tokens_in,
        .tokens_out = ev->tokens_out,
        .cost_usd = ev->cost_usd,
        .overhead_s = ev->overhead_ms / 1000.0,
    };
    metrics_record_request(m, &r);

    /* The event sums retries and fallbacks; the retries happened on the backend
     * chosen first, before any fallback. */
    if (fell_back)
        metrics_record_fallback(m, first, b);
    for (int i = ev->retries - fell_back; i > 0; i--)
        metrics_record_retry(m, first);
    /* Attempts retried or fallen back from are their backend's errors, even when the
     * request was answered in the end: a dead backend must not look healthy. */
    for (size_t i = 0; i < ev->n_failed; i++) {
        int fb = metrics_backend_index(m, ev->failed[i].backend);
        if (fb >= 0) /* a backend a reload added has no row: not a "none" one either */
            metrics_record_backend_error(m, fb, ev->failed[i].kind);
    }
    /* A request that reached a backend and still failed is that backend's error: a
     * 5xx or a stream it cut. A 4xx (the client's request, key or rate limit, even
     * after a backend was chosen) is not, nor is our own shutdown. */
    if (ev->error_kind && b >= 0 && !ev->client_aborted && (ev->status < 400 || ev->status >= 500) &&
        strcmp(ev->error_kind, "shutdown") && strcmp(ev->error_kind, "client_gone"))
        metrics_record_backend_error(m, b, ev->error_kind);
    if (ev->key_id)
        metrics_record_key(m, ev->key_id, ev->tokens_in, ev->tokens_out, ev->cost_usd);
}

static void
on_metrics(void *ctx, const struct daemon_http_request *req, struct daemon_http_reply *reply)
{
    (void)req;
    reply->status = 200;
    reply->content_type = METRICS_CONTENT_TYPE;
    reply->body = metrics_render(ctx, &reply->len);
}

static void
server_gauges(struct metrics_gauges *g)
{
    struct daemon_gauges dg;
    if (daemon_gauges_get(&dg) < 0)
        return;
    g->inflight = (int64_t)dg.inflight;
    snprintf(g->model_version, sizeof(g->model_version), "%s", dg.model_version);
    g->learn_budget_usd = dg.learn_budget_usd;
    g->learn_spent_usd = dg.learn.spent_today_usd;
    g->learn_reserved_usd = dg.learn.reserved_usd;
    g->learn_shadow_calls = dg.learn.shadow_calls;
    g->learn_judge_calls = dg.learn.judge_calls;
    g->learn_labels = dg.learn.labels;
    g->learn_judge_unparseable = dg.learn.judge_unparseable;
    g->learn_failed = dg.learn.failed;
    g->learn_dropped_queue = dg.learn.dropped_queue;
    g->learn_dropped_budget = dg.learn.dropped_budget;
    g->learn_dropped_busy = dg.learn.dropped_busy;
    g->learn_judged = dg.learn.judged;
    g->learn_retrains = dg.learn.retrains;
    g->learn_promotions = dg.learn.promotions;
    size_t n = dg.n_share_routes;
    if (n > sizeof(g->share) / sizeof(g->share[0]))
        n = sizeof(g->share) / sizeof(g->share[0]);
    for (size_t i = 0; i < n; i++) {
        snprintf(g->share[i].route, sizeof(g->share[i].route), "%s", dg.share[i].route);
        g->share[i].requests = dg.share[i].requests;
        g->share[i].strong = dg.share[i].strong;
        g->share[i].target = dg.share[i].target;
        g->share[i].recent = dg.share[i].recent;
        size_t nt = dg.share[i].n_tiers;
        if (nt > sizeof(g->share[i].tier) / sizeof(g->share[i].tier[0]))
            nt = sizeof(g->share[i].tier) / sizeof(g->share[i].tier[0]);
        for (size_t t = 0; t < nt; t++) {
            const struct daemon_share_tier_gauges *dt = &dg.share[i].tier[t];
            snprintf(g->share[i].tier[t].backend, sizeof(g->share[i].tier[t].backend), "%s",
                     dt->backend);
            g->share[i].tier[t].requests = dt->requests;
            g->share[i].tier[t].target = dt->target;
            g->share[i].tier[t].recent = dt->recent;
            g->share[i].tier[t].cut = dt->cut;
        }
        g->share[i].n_tiers = nt;
    }
    g->n_share_routes = n;
}

int
metrics_attach(struct metrics *m)
{
    int rc = daemon_handler_register("GET", "/metrics", DAEMON_HANDLER_STATS, on_metrics, m);
    if (rc < 0)
        return rc;
    m->attached = 1;
    return daemon_event_subscribe(on_request_event, m);
}
