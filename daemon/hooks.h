/* hooks.h - how other daemon modules plug into triaged's HTTP server: endpoints and request events.
 *
 * Two kinds of hook, both registered once at start (from main.c, before the
 * server runs; registration is not thread-safe and there is no unregistering):
 *
 *  - Simple endpoints (e.g. GET /metrics, GET /dashboard): a handler gets the
 *    request and fills a reply (status, content type, body). It runs on a worker
 *    loop thread, so it must not block and must be thread-safe when
 *    conf.workers > 1. The body is taken by the server and freed after sending.
 *
 *  - Request events: when a request ends (response sent or client gone) each
 *    subscriber gets a summary (backend, status, latency, ttfb, score, tokens,
 *    cost, route reason). Called on the worker thread that served the request,
 *    possibly from several workers at once: keep it short and thread-safe
 *    (atomics or a mutex). Strings are borrowed for the call only.
 *
 * Ask the daemon engineer to call your registration function from main.c. */
#ifndef TRIAGE_DAEMON_HOOKS_H
#define TRIAGE_DAEMON_HOOKS_H

#include <stddef.h>
#include <stdint.h>

/* The request as a handler sees it; everything is borrowed for the call. */
struct daemon_http_request {
    const char *method;     /* "GET", "POST", ... */
    const char *path;       /* without the query string */
    const char *request_id; /* also sent back as x-triage-request-id */
    const char *body;       /* request body (NUL-terminated) or NULL */
    size_t body_len;
    void *priv;             /* the server's; use the accessors below */
};

/* Returns the value of request header name (case-insensitive), or NULL. Borrowed. */
const char *daemon_request_header(const struct daemon_http_request *r, const char *name);

/* Returns the value of query argument name, or NULL. Borrowed. */
const char *daemon_request_arg(const struct daemon_http_request *r, const char *name);

/* Returns the client's address as text ("127.0.0.1", "::1"), or "-". Borrowed. */
const char *daemon_request_client(const struct daemon_http_request *r);

#define DAEMON_REPLY_MAX_HEADERS 4

/* What a handler fills. status defaults to 200 and content_type to
 * "application/json"; body (malloc'd) is taken by the server. */
struct daemon_http_reply {
    int status;
    const char *content_type; /* static string */
    char *body;
    size_t len;
    struct {
        const char *name;  /* static strings */
        const char *value; /* copied by the server */
    } headers[DAEMON_REPLY_MAX_HEADERS];
};

typedef void daemon_handler_fn(void *ctx, const struct daemon_http_request *req,
                               struct daemon_http_reply *reply);

enum {
    DAEMON_HANDLER_PREFIX = 1 << 0, /* path matches as a prefix ("/dashboard" serves /dashboard/x) */
    DAEMON_HANDLER_ADMIN = 1 << 1,  /* an admin request (admin key or loopback, per [auth]) */
    DAEMON_HANDLER_STATS = 1 << 2,  /* admin only when [auth] stats_need_admin */
};

/* Serves method (e.g. "GET") on path with fn(ctx, ...). Borrows the strings (use
 * literals). A HEAD request is served by a GET handler. Returns 0, or -EEXIST if
 * the path and method are taken, -ENOSPC when the table is full. */
int daemon_handler_register(const char *method, const char *path, unsigned flags,
                            daemon_handler_fn *fn, void *ctx);

/* One finished request. Unknowns: strings NULL, doubles NaN, integers -1. */
/* A backend attempt that failed before the answer and was retried or fallen back
 * from: a 5xx, a transport error (connect, timeout, ...) or a skipped backend
 * (circuit_open, overloaded). Strings borrowed for the event's duration. */
struct daemon_failed_attempt {
    const char *backend;
    const char *kind; /* "backend_status" (a 5xx), an upstream error name, "circuit_open", ... */
};

struct daemon_request_event {
    const char *request_id;
    const char *method;
    const char *path;
    const char *requested_model; /* the "model" the client sent (chat completions only) */
    const char *backend;         /* backend that answered, NULL if none was reached */
    const char *route_reason;    /* "passthrough", "threshold", "tiers", or NULL */
    const char *error_kind;      /* NULL on success; "timeout", "unreachable", "bad_request", ... */
    const char *finish_reason;
    const char *key_id;          /* client key name when auth is on */
    int status;                  /* HTTP status sent to the client (0: client left first) */
    int stream;                  /* 1 for SSE responses */
    int client_aborted;          /* 1 when the client went away before the end */
    unsigned worker;             /* index of the worker thread */
    double latency_ms;           /* request received -> response finished */
    double ttfb_ms;              /* request received -> first backend body byte */
    double score;                /* predictor score when routed */
    double threshold;            /* threshold used when routed */
    int64_t tokens_in;
    int64_t tokens_out;
    double cost_usd;             /* from the backend's prices; 0 when unknown */
    double overhead_ms;          /* triaged's own time before the backend call: parse, score, rewrite */
    int retries;                 /* attempts beyond the first (retries and fallbacks) */
    const char *first_backend;   /* the backend chosen first, when a fallback answered */
    const struct daemon_failed_attempt *failed; /* attempts retried or fallen back from, in order */
    size_t n_failed;
};

typedef void daemon_event_fn(void *ctx, const struct daemon_request_event *ev);

/* Calls fn(ctx, ev) at the end of every request. Returns 0 or -ENOSPC. */
int daemon_event_subscribe(daemon_event_fn *fn, void *ctx);

/* Live figures for gauges. Thread-safe. */
#define DAEMON_GAUGES_MAX_BACKENDS 64

/* The learning loop (daemon/learn.c), all workers since start. */
struct daemon_learn_gauges {
    uint64_t lessons;           /* client requests sampled for shadow + judge calls */
    uint64_t shadow_calls;      /* started */
    uint64_t judge_calls;       /* started */
    uint64_t labels;            /* judge grades written to the log as outcomes */
    uint64_t judge_unparseable; /* judge answers that gave no grade (no label) */
    uint64_t failed;            /* shadow or judge calls that gave no answer */
    uint64_t dropped_queue;     /* calls dropped: the worker's queue was full */
    uint64_t dropped_budget;    /* calls dropped: the day's budget would be passed */
    uint64_t dropped_busy;      /* calls dropped: the backend was at half its max_concurrent */
    uint64_t judged;            /* prompts whose every answer was graded */
    uint64_t retrains;          /* automatic retrains run (retrain.c) */
    uint64_t promotions;        /* of which promoted a new champion */
    double spent_today_usd;     /* shadow + judge spend settled this UTC day */
    double reserved_usd;        /* reserved by the calls running now */
};

/* One routed alias holding a strong share (strong_share or x-triage-strong-share) or a
 * share per tier (tiers = name:40%, ...), every worker merged. */
#define DAEMON_GAUGES_MAX_ROUTES 16
#define DAEMON_GAUGES_MAX_TIERS 16
struct daemon_share_tier_gauges {
    char backend[64];           /* the tier's backend in the current config; "" unknown */
    uint64_t requests;          /* routed by share to it since start */
    double target;              /* mean target share of the route's requests */
    double recent;              /* realised share in the workers' windows; NaN: none */
    double cut;                 /* score cut to the next tier in force (mean over the
                                 * workers' last decisions); NaN for the last tier */
};
struct daemon_share_gauges {
    char route[64];             /* the alias */
    uint64_t requests;          /* routed by share since start */
    uint64_t strong;            /* of which sent past the cheapest tier */
    double target;              /* mean target share past the cheapest tier */
    double recent;              /* realised share past it in the workers' windows; NaN: none */
    size_t n_tiers;             /* 2 for a strong share */
    struct daemon_share_tier_gauges tier[DAEMON_GAUGES_MAX_TIERS];
};

struct daemon_gauges {
    uint64_t inflight;          /* requests being served now, all workers */
    uint64_t upstream_inflight; /* backend calls running now */
    uint64_t reloads;           /* successful config/model reloads since start */
    double uptime_s;
    char model_version[80];     /* of the current snapshot's predictor model */
    double model_loaded_unix;   /* when that snapshot was loaded (Unix s) */
    double threshold;           /* the threshold policy's fixed cut; NaN with the tiers policy
                                 * or a strong share (their cuts are in share[]) */
    int64_t log_queue_depth;    /* outcome log; all -1 without [storage] path */
    int64_t log_written;
    int64_t log_dropped;
    int64_t log_failed;
    size_t n_backends;          /* of the current config, at most DAEMON_GAUGES_MAX_BACKENDS */
    int circuit[DAEMON_GAUGES_MAX_BACKENDS]; /* per backend in config order: 0 closed,
                                              * 1 half-open, 2 open */
    struct daemon_learn_gauges learn;
    double learn_budget_usd;    /* [learning] shadow_budget_usd_per_day; 0 when learning is off */
    size_t n_share_routes;      /* routes that held a share since start */
    struct daemon_share_gauges share[DAEMON_GAUGES_MAX_ROUTES];
};

/* Fills g. Returns 0, or -ENOENT before the server runs. */
int daemon_gauges_get(struct daemon_gauges *g);

#endif
