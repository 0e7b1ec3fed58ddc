/* metrics.h - Prometheus counters, gauges and histograms for GET /metrics.
 *
 * Recording is lock-free: every value lives in per-thread shards of relaxed C11
 * atomics (a thread picks its shard once), so worker threads never contend on a
 * lock or, usually, on a cache line. Rendering sums the shards; a histogram's
 * _count is derived from its buckets so a scrape is always self-consistent, even
 * while other threads record. Sums are kept in fixed point (1e-9 units) so the
 * text is exact and reproducible. Label strings that are not known up front
 * (route reasons, error kinds, status codes) are interned into small bounded
 * tables; past their capacity new values are counted under "other". */
#ifndef TRIAGE_METRICS_H
#define TRIAGE_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* The Content-Type to serve the rendered text with. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Circuit states as rendered in triage_circuit_state. */
enum metrics_circuit {
    METRICS_CIRCUIT_UNKNOWN = -1, /* not rendered */
    METRICS_CIRCUIT_CLOSED = 0,
    METRICS_CIRCUIT_HALF_OPEN = 1,
    METRICS_CIRCUIT_OPEN = 2,
};

struct metrics;

/* One finished request, as seen by the front end. Unknown numbers are NaN (or -1
 * for token counts) and are left out of their histogram or counter; the request
 * itself is always counted in triage_requests_total. */
struct metrics_request {
    int backend;        /* index into the names given to metrics_create; -1: none chosen */
    const char *reason; /* route reason, e.g. "threshold", "passthrough"; NULL: "none" */
    int status;         /* HTTP status sent to the client; 0: none (client went away) */
    double latency_s;   /* whole request, arrival to last byte */
    double ttfb_s;      /* arrival to the first byte of the response body */
    double score;       /* routing score in [0,1]; NaN when not routed */
    int64_t tokens_in;  /* usage.prompt_tokens */
    int64_t tokens_out; /* usage.completion_tokens */
    double cost_usd;
    double overhead_s;  /* triage's own time: parse + features + score + forward setup */
};

/* Values owned by other modules, sampled at render time by the callback given to
 * metrics_set_gauges. The metrics module pre-fills every field with "unknown"
 * (-1, NaN, empty string); the callback sets the ones it knows. */
struct metrics_gauges {
    int *circuit;              /* n_backends entries of enum metrics_circuit; a callback may
                                * fill them or point this at its own array (borrowed for
                                * the render) and set n_backends */
    size_t n_backends;
    int64_t inflight;          /* requests being served now */
    int64_t log_queue_depth;   /* outcome rows waiting for the writer */
    int64_t log_written;       /* rows committed since start (counter) */
    int64_t log_dropped;       /* rows refused because the queue was full (counter) */
    int64_t log_failed;        /* rows lost to write errors (counter) */
    char model_version[128];   /* loaded predictor's version; "" when none */
    double model_loaded_time;  /* Unix time (s) the model was loaded */
    double threshold;          /* routing threshold in force (THRESHOLD policy) */
    /* the learning loop (shadow + judge calls), counters since start; shown when
     * learn_budget_usd > 0 (learning configured) */
    double learn_budget_usd;   /* the daily cap */
    double learn_spent_usd;    /* settled this UTC day */
    double learn_reserved_usd; /* reserved by the calls running now */
    uint64_t learn_shadow_calls, learn_judge_calls, learn_labels, learn_judge_unparseable,
        learn_failed, learn_dropped_queue, learn_dropped_budget, learn_dropped_busy;
    uint64_t learn_judged, learn_retrains, learn_promotions;
    /* routes holding a strong share (strong_share, x-triage-strong-share) or a share
     * per tier (tiers = name:40%, ...) */
    size_t n_share_routes;
    struct {
        char route[64];
        uint64_t requests, strong; /* routed by share since start; of which past tier 0 */
        double target;             /* mean target share past tier 0 of those requests */
        double recent;             /* realised over the recent window; NaN: none */
        size_t n_tiers;            /* 2 for a strong share */
        struct {
            char backend[64];      /* the tier's backend */
            uint64_t requests;     /* routed to it by share since start */
            double target, recent; /* as above, for this tier */
            double cut;            /* score cut to the next tier in force; NaN: last */
        } tier[16];
    } share[16];
};

/* Called by metrics_render on the rendering thread; must be thread-safe with
 * respect to whoever owns the values. */
typedef void (*metrics_gauges_fn)(void *ud, struct metrics_gauges *g);

/* Returns a new metrics registry for the backends `names` (borrowed, copied; n may
 * be 0). Aborts on out-of-memory, like the rest of triage. */
struct metrics *metrics_create(const char *const *names, size_t n);

/* Frees the registry. NULL is fine. No thread may be recording any more. */
void metrics_destroy(struct metrics *m);

/* Returns the index of the backend called name, or -1. */
int metrics_backend_index(const struct metrics *m, const char *name);

/* Records one finished request (borrowed). Thread-safe, lock-free. */
void metrics_record_request(struct metrics *m, const struct metrics_request *r);

/* Counts one retry of a request against backend (before its first byte). */
void metrics_record_retry(struct metrics *m, int backend);

/* Counts one fallback from backend `from` to backend `to` (either may be -1). */
void metrics_record_fallback(struct metrics *m, int from, int to);

/* Counts one failed upstream attempt; kind is the error kind, e.g. "timeout",
 * "unreachable", "backend_status" (borrowed; NULL: "other"). */
void metrics_record_backend_error(struct metrics *m, int backend, const char *kind);

/* Counts one request by client key name (borrowed; interned, past 63 names "other")
 * with its usage tokens (<= 0: none) and cost. */
void metrics_record_key(struct metrics *m, const char *key, int64_t tokens_in, int64_t tokens_out,
                        double cost_usd);

/* Installs the callback sampling gauges owned elsewhere (NULL removes it). Call
 * before the workers start, or while no render runs. */
void metrics_set_gauges(struct metrics *m, metrics_gauges_fn fn, void *ud);

/* Renders everything in the text exposition format (version 0.0.4). Returns a
 * new NUL-terminated string (free() it) and its length in *len when len is not
 * NULL. Thread-safe; may run while other threads record. */
char *metrics_render(struct metrics *m, size_t *len);

/* Wires m into the HTTP server (hooks.h): serves GET /metrics (admin-only when
 * [auth] stats_need_admin), records every finished POST /v1/chat/completions
 * from the server's request events (not health checks or scrapes), and takes the in-flight count and model version from
 * daemon_gauges_get() at each scrape (a metrics_set_gauges() callback runs after
 * that and may add or override). Call once before the server runs; m must
 * outlive the server. Returns 0 or -errno. */
int metrics_attach(struct metrics *m);

#endif
