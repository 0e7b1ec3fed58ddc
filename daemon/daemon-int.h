/* daemon-int.h - triaged's internals shared by its own files: snapshots, workers, requests.
 *
 * Not for other modules: they use hooks.h. Functions here carry the daemon__ prefix. */
#ifndef TRIAGE_DAEMON_INT_H
#define TRIAGE_DAEMON_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/types.h>

#include <jansson.h>
#include <uv.h>

#include "api/api.h"
#include "conf.h"
#include "guard/guard.h"
#include "hooks.h"
#include "http/http.h"
#include "router.h"
#include "upstream/upstream.h"

struct storage;
struct auth_keys;
struct MHD_Daemon;     /* libmicrohttpd's: only http/ calls it */
struct MHD_Connection;
struct breaker;
struct ratelimit;

/* The configuration and model a request runs with. Immutable once published;
 * reference-counted so a reload never pulls it from under a request. */
struct daemon_snapshot {
    atomic_int refs;
    struct conf *conf;
    struct router_model *model;
    struct router_tier *tiers; /* conf->tiers mapped to model heads */
    size_t n_tiers;
    struct daemon_tierset {    /* the tiers whose backend speaks an API, in tier order */
        struct router_tier *tiers;
        size_t *backend;       /* each one's index in conf->backends */
        size_t n;
    } by_api[2];               /* by enum conf_api */
    double threshold;          /* conf threshold, or derived from strong_share */
    double *tier_above;        /* tier shares: the share past tier b, n_tiers - 1 of them */
    double *tier_fallback;     /* ... and the reference cut for it (NULL without shares) */
    struct router_sticky *sticky; /* conversations' tiers; NULL with sticky = no */
    uint64_t generation;
    double loaded_unix;        /* when it was loaded (s) */
    struct auth_keys *keys;       /* client keys; NULL = no client auth */
    struct auth_keys *admin_keys; /* NULL = admin endpoints on loopback only */
    struct breaker **breakers;    /* one per backend (reset by a reload) */
    struct ratelimit *ratelimit;  /* NULL when unlimited (reset by a reload) */
    atomic_uint *inflight;        /* backend calls per backend, for max_concurrent */
};

/* Growable byte buffer. */
struct daemon_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t off; /* read position, for queues */
};

void daemon__buf_append(struct daemon_buf *b, const void *p, size_t n);
void daemon__buf_free(struct daemon_buf *b);

#define DAEMON_SHARE_MAX_ROUTES 16

/* One routed alias's share estimator on one worker (proxy.c, route()): a strong share
 * (two tiers) or a share per tier. Only that worker touches est and writes the
 * counters; daemon_gauges_get reads the counters from any thread. An entry, once
 * published through n_share, is never removed. */
struct daemon_share_route {
    char name[64];                         /* the alias, e.g. "triage" */
    struct router_share *est;              /* the window of its last scores */
    atomic_uint_fast64_t decided;          /* requests routed by share since start */
    atomic_uint_fast64_t n_tiers;          /* tiers of the last decision (2: strong share) */
    atomic_uint_fast64_t recent_decided;   /* routed by share, among the window's scores */
    struct {
        atomic_uint_fast64_t routed;       /* routed by share to this tier since start */
        atomic_uint_fast64_t target_ppm;   /* sum of the decisions' target shares for it */
        atomic_uint_fast64_t recent;       /* routed to it, among the window's scores */
        atomic_uint_fast64_t cut_bits;     /* the double: the last decision's score cut
                                            * between this tier and the next */
    } tier[ROUTER_SHARE_MAX_TIERS];
};

struct daemon_worker {
    unsigned idx;
    uv_loop_t loop;
    uv_thread_t thread;
    struct MHD_Daemon *mhd;
    uv_poll_t mhd_poll;
    uv_timer_t mhd_timer;
    uv_check_t check;      /* after each poll phase: one MHD_run for all woken connections */
    uv_idle_t idle;        /* keeps the poll phase from blocking while a run is pending */
    uv_idle_t spin;        /* busy polling: active for busy_poll_ns after the last I/O */
    uv_prepare_t flush;    /* before each poll: writes the turn's batched log lines */
    uint64_t busy_poll_ns; /* 0 = the loop sleeps as soon as it has nothing to do */
    uint64_t last_io_ns;   /* uv_hrtime() of the last client or backend I/O */
    uv_async_t wake;       /* stop requests from the main thread */
    uv_timer_t drain;      /* shutdown deadline checks */
    struct upstream *up;
    uint64_t learn_rng;    /* which requests become lessons (learn.c) */
    struct daemon_request *requests; /* every live request */
    size_t n_requests;
    int need_run;          /* a connection was resumed: MHD_run before sleeping */
    int in_mhd;            /* inside MHD_run */
    int stopping;          /* draining: no new requests */
    int tearing_down;      /* closing every connection now */
    uint64_t stop_deadline;  /* loop ms */
    uint64_t rng;
    struct backoff_rng brng; /* retry delays */
    uv_timer_t heartbeat;  /* proves to the watchdog that the loop turns */
    atomic_uint_fast64_t beat_ms;
    atomic_uint_fast64_t beat_ns;
    atomic_int done;       /* the thread's loop has ended */
    atomic_int cut_now;    /* a second stop signal: the drain's deadline is now */
    int listen_fd;         /* bound before MHD takes it; -1 once MHD owns it */
    int loop_ready;
    unsigned n_conns;      /* open client connections (MHD's notify callback) */
    struct daemon_conn *conns; /* the same connections, for the read deadline sweep */
    uv_timer_t reap;       /* the sweep: requests that do not arrive in read_timeout_ms */
    unsigned max_conns;    /* this worker's share of [server] max_connections */
    struct daemon_share_route share[DAEMON_SHARE_MAX_ROUTES]; /* by alias, first use first */
    atomic_uint n_share;   /* entries of share published (release after filling one) */
};

enum daemon_phase {
    PHASE_BODY = 0,  /* receiving the request body */
    PHASE_WAIT,      /* waiting for the backend */
    PHASE_REPLIED,   /* a response is queued */
};

/* One client connection (MHD's socket context): when its current request began to
 * arrive, so that a request trickling in, head or body, is cut at read_timeout_ms. */
struct daemon_conn {
    struct MHD_Connection *conn;
    struct daemon_conn *prev, *next;
    struct daemon_request *rq; /* the request whose head has arrived, or NULL */
    uint64_t t_ref_ns;  /* connected, or the previous request ended (monotonic) */
    uint64_t t_line_ns; /* the request line of the next request arrived, or 0 */
    int kept;           /* a request was served: the connection is kept alive */
    int anthropic;      /* the current request line's path takes Anthropic's errors
                         * (for answers written before a request exists: the 408,
                         * libmicrohttpd's own pages) */
};

/* One HTTP request (MHD's per-request context). Freed when MHD says it ended. */
struct daemon_request {
    struct daemon_worker *w;
    struct MHD_Connection *conn;
    struct daemon_snapshot *snap;
    struct daemon_request *prev, *next;
    char id[40];
    const char *method;      /* owned copies (in strings), not MHD's: a request may */
    const char *path;        /* outlive its connection (a thread-pool job, an orphan) */
    char *strings;           /* method and path, one allocation */
    uint64_t t_start_ns;     /* monotonic: the head had arrived */
    uint64_t t_arrive_ns;    /* monotonic: the request began to arrive (read deadline) */
    struct daemon_conn *dconn; /* its connection's state; NULL once MHD let go */
    int64_t started_unix_ms;
    enum daemon_phase phase;

    struct daemon_buf body;
    int too_large;
    int outcome;             /* a path whose requests are outcome-log rows */
    const struct http_route *route;   /* its row of the route table (http.c) */

    /* the response */
    struct http_response *response; /* ready to queue */
    int status;
    int suspended;
    int streaming;           /* an SSE response is being relayed */
    int stream_failed;
    int cut;                 /* we ended the response early (a failed stream, shutdown):
                              * MHD's "terminated with error" is then no client abort */
    int client_aborted;
    uv_poll_t *gone_watch;   /* a long wait's watch on the client's socket (see on_heartbeat) */
    int gone_checked;        /* the client sent more bytes: not watched again */
    int client_gone;         /* the client hung up while we waited: MHD closes on resume */
    const char *error_kind;

    /* the API paths that reach a backend */
    const struct daemon_api *api; /* the path's row (also the error dialect), or NULL */
    int pinned;              /* the backend is fixed (a previous_response_id): no fallback */
    const char *key_id;      /* client key name (borrowed from snap->keys) */
    struct budget_state budget; /* the key's budget as admitted (limited 0: none) */
    uint32_t rl_estimate;    /* tokens taken from the rate limit up front */
    int rl_taken;
    char *requested_model;
    char *fwd_headers;       /* client headers passed on (backend.c), or NULL */
    int fwd_done;            /* fwd_headers was built */
#define DAEMON_MAX_FAILED 16
    struct daemon_failed_attempt failed[DAEMON_MAX_FAILED]; /* retried or fallen back from */
    unsigned n_failed;       /* entries in failed (later ones beyond the array are dropped) */
    int backend;             /* index in snap->conf->backends, -1 */
    const char *route_reason;
    double score;
    double threshold;
    int stream;              /* the client asked for SSE */
    int strip_usage;         /* we added include_usage: hide the usage-only chunk */
    struct upstream_call *call;
    json_t *up_json;         /* the parsed request, kept for retries and fallbacks */
    int splice_ok;           /* the body can be rewritten by splicing bytes (below) */
    int has_stream_options;  /* the body has a top-level "stream_options" */
    size_t model_off, model_end; /* the top-level "model" value's bytes in body */
    size_t obj_close;        /* offset of the top-level object's closing '}' */
    int first_backend;       /* the backend chosen first */
    int attempt;             /* attempts on the current backend so far */
    int retries;             /* attempts beyond the first, all backends */
    size_t fallback_pos;     /* next entry of conf->fallback to try */
    int routed;
    int breaker_open_call;   /* breaker_allow let this call through: record its outcome */
    int slot;                /* backend whose max_concurrent slot this call holds, or -1 */
    struct daemon_retry *retry_timer; /* a retry waiting for its backoff */
    double overhead_ms;
    int up_done;
    int up_paused;
    long up_status;
    char *up_content_type;
    struct daemon_buf up_headers; /* "name\0value\0" pairs to relay */
    struct daemon_buf up_body;    /* buffered (non-stream) response */
    struct daemon_buf sse;        /* stream bytes not yet cut into events */
    struct daemon_buf out;        /* stream bytes waiting for the client */
    double ttfb_ms;
    int64_t tokens_in;
    int64_t tokens_out;
    char finish_reason[32];
    char *prompt_hash;
    char *prompt_json;
    void *prompt_features;      /* store_prompts = features: features_blob_encode's bytes */
    size_t prompt_features_len;

    /* the cascade (cascade.c) */
    int cascade;             /* DAEMON_CASCADE_*: where the request is in the cascade */
    int cascade_stream;      /* the client asked for SSE (rq->stream is 0 while held) */
    int cascade_logprobs;    /* the client asked for logprobs itself: kept in the answer */
    int cascade_fast, cascade_strong; /* the two tiers' backends (indices in conf) */
    double escalation;       /* the fast answer's escalation score; NAN when none */
    int64_t fast_started_ms; /* unix ms: the fast call's start */
    uint64_t fast_t0_ns;     /* monotonic: the same */
    void *cascade_answer;    /* the served fast answer as the log keeps it (router_answer_blob),
                              * for the client's row; cascade_answer_len bytes */
    size_t cascade_answer_len;

    /* the learning loop (learn.c) */
    int lesson;              /* sampled: shadow and judge calls follow its end */
    int lesson_drawn;        /* the sample was drawn (once per request) */
    struct daemon_buf lesson_fast; /* an escalated cascade's fast answer, judged as is */
    struct daemon_buf lesson_body; /* a sampled stream's body, kept past the stream's start */
    struct daemon_buf lesson_answer; /* a sampled whole answer, as the client got it */

    /* deferred work (reload, feedback, stats) */
    int work_pending; /* a thread-pool job points at this request */
    int orphaned;     /* MHD is done with it; free when the job ends */
};

/* A request whose thread-pool job ended after MHD let go of it: frees it. */
void daemon__request_orphan_done(struct daemon_request *rq);
/* Returns a new request for the head of method and url (both borrowed, copied) on
 * conn, on worker w, holding a reference to the current snapshot. */
struct daemon_request *daemon__request_new(struct daemon_worker *w, struct MHD_Connection *conn,
                                           const char *url, const char *method);
/* The end of a request: its log line, events and outcome record; frees rq. */
void daemon__request_finish(struct daemon_request *rq);

/* Backend calls running, all workers (for gauges). */
extern atomic_uint_fast64_t daemon__n_upstream_inflight;
/* Unix time the server started (the "created" of /v1/models entries). */
extern int64_t daemon__start_unix;

/* Global server state that workers read; defined in server.c. */
struct daemon_snapshot *daemon__snapshot_get(void);     /* returns a new reference */
void daemon__snapshot_put(struct daemon_snapshot *s);   /* drops one; NULL is fine */
struct storage *daemon__storage(void);                  /* NULL without [storage] path */
struct budget *daemon__budget(void);   /* NULL without a log and a keys file */
/* Adds the x-triage-budget-* headers of rq's key (none without a budget). */
void daemon__add_budget_headers(struct daemon_request *rq, struct http_response *resp);
/* Adds the x-triage-* routing headers for rq to resp (and the budget's). */
void daemon__add_route_headers(struct daemon_request *rq, struct http_response *resp);
void daemon__request_reload(void); /* reloads config and model now; any thread */
/* Reloads config, model and keys as a new snapshot. Thread-safe. Returns 0, or -1 with
 * the reason in err (the running snapshot is kept). */
int daemon__reload(char *err, size_t errlen);

/* proxy.c */
/* The relay for every API path: parse, route or pass through, forward. */
void daemon__api_handle(struct daemon_request *rq);
/* "triage" or "triage:0.35" for an alias of c (model borrowed). Returns 1 routed (*thr
 * set or NaN, *alias its index in c->aliases), 0 not an alias, -1 an alias with a bad
 * threshold suffix. */
int daemon__parse_alias(const struct conf *c, const char *model, double *thr, int *alias);
/* Called when the request ends, before it is freed: cancels the backend call. */
void daemon__proxy_release(struct daemon_request *rq);

/* backend.c */
/* Returns new "Name: value\r\n" lines for a call to backend b: content type, Accept
 * (SSE when stream), our user agent, X-Request-Id request_id, the backend's key (never
 * the client's: "Authorization: Bearer", or bare in its api_key_header), its `header`
 * lines, then forward (borrowed, may be NULL: daemon__forward_headers). Free with
 * daemon__backend_headers_free, which wipes the key. */
char *daemon__backend_headers_fwd(const struct conf_backend *b, int stream,
                                  const char *request_id, const char *forward);
/* The same without client headers (the daemon's own calls). */
char *daemon__backend_headers(const struct conf_backend *b, int stream, const char *request_id);
void daemon__backend_headers_free(char *headers);
/* Returns the client headers rq passes on ("Name: value\r\n" lines: traceparent,
 * tracestate, [server] forward_headers; values with a control byte dropped), or NULL.
 * Copied from MHD on the first call; owned by rq (freed with it). */
const char *daemon__forward_headers(struct daemon_request *rq);
/* Notes that rq's attempt on backend failed (kind: a static string) and another
 * attempt follows: the backend's error in /metrics and the outcome log. */
void daemon__attempt_failed(struct daemon_request *rq, int backend, const char *kind);
/* Returns rq's failed attempts as new text for the outcome log ("backend kind" pairs
 * joined by ","), or NULL when there were none. */
char *daemon__failed_attempts_text(const struct daemon_request *rq);
/* Returns a new URL for path ("/chat/completions") on backend b, before its query. */
char *daemon__backend_url(const struct conf_backend *b, const char *path);

/* cascade.c: policy cascade (docs/cascade.md). */
enum daemon_cascade {
    DAEMON_CASCADE_NONE = 0,
    DAEMON_CASCADE_FAST,      /* in the band: the fast answer is awaited, to be held */
    DAEMON_CASCADE_SERVED,    /* the fast answer was served */
    DAEMON_CASCADE_ESCALATED, /* the fast answer was judged unsure (or failed): strong call */
};
enum daemon_cascade_next {
    DAEMON_CASCADE_NEXT_RELAY,    /* relay rq->up_body whole as usual */
    DAEMON_CASCADE_NEXT_SERVED,   /* the response is set (a held answer as SSE) */
    DAEMON_CASCADE_NEXT_ESCALATE, /* rq now points at the strong tier: start an attempt */
};
/* Routing under policy cascade, with the prompt's scores (borrowed) and request (root,
 * borrowed): sets rq->backend and route_reason; in the band, rq->cascade and holds the
 * answer (rq->stream 0 until it is judged). */
void daemon__cascade_route(struct daemon_request *rq, const json_t *root,
                           const struct router_scores *sc, int fast, int strong);
/* Rewrites the fast call's body (req, a copy the caller owns): no stream, logprobs asked. */
void daemon__cascade_fast_body(const struct daemon_request *rq, json_t *req);
/* The fast call ended (err, rq->up_status, rq->up_body): judges the answer. Escalating
 * logs the fast call as its own row. */
enum daemon_cascade_next daemon__cascade_fast_done(struct daemon_request *rq,
                                                   enum upstream_error err);
/* Adds x-triage-escalated and x-triage-escalation-score for a cascaded rq. */
void daemon__cascade_headers(const struct daemon_request *rq, struct http_response *resp);
/* Counts a judged fast answer (escalated or served, its tokens) for /v1/stats. */
void daemon__cascade_count(const struct daemon_request *rq, int escalated, int64_t tin,
                           int64_t tout);
/* Since start, every worker: fast answers judged, escalated, what the escalated fast
 * calls cost and what the served ones saved against the strong tier's prices. */
void daemon__cascade_gauges(uint64_t *tried, uint64_t *escalated, double *escalation_cost_usd,
                            double *saved_usd);

/* Writes a new request id ("req_" + 24 hex digits, time-ordered) for unix_ms into out
 * (at least 29 bytes), advancing the caller's generator rng (one per thread). */
void daemon__make_id(uint64_t *rng, int64_t unix_ms, char *out);

/* learn.c: shadow and judge calls off the client's path (see the file's comment). */
/* Starts the learning thread (its own loop and upstream client, lower priority than
 * the workers). Returns 0 or -1. */
int daemon__learn_start(void);
/* Stops it: calls still running are cancelled (no label). After the workers have
 * stopped. Nothing if it never started. */
void daemon__learn_stop(void);
/* When a stream begins, or a whole answer is relayed: draws whether rq becomes a lesson
 * (sets rq->lesson). 1 when it does: the caller keeps a stream's body in
 * rq->lesson_body, a whole answer in rq->lesson_answer. */
int daemon__learn_sample(struct daemon_request *rq);
/* At the end of a request (before its state is freed): maybe make it a lesson. */
void daemon__learn_offer(struct daemon_request *rq);
/* Fills the learning loop's gauges (every worker's). Thread-safe. */
void daemon__learn_gauges(struct daemon_learn_gauges *out);
/* Prompts whose every answer has been graded, since start. Thread-safe. */
uint64_t daemon__learn_judged(void);

/* promote.c: which parts of a retrain's challenger replace the champion's (see the file's
 * comment). */
struct daemon__promotion {
    double apgr_chal, apgr_champ; /* in: held-out APGR of each (NaN unknown) */
    size_t n_prompts;             /* in: held-out prompts they were measured on */
    struct router_escalation_eval esc_chal, esc_champ; /* held-out judged fast answers */
    struct router_escalation_eval esc_final;           /* ... of the file promoted (or the
                                                         * champion's when none) */
    int take_routing, take_escalation; /* the challenger's part wins */
    const char *routing_why, *escalation_why, *verdict; /* for the log line (static, or
                                                         * escalation_why in why_buf) */
    char why_buf[128];
    struct router_model *promoted; /* new reference: the challenger, or its winning part
                                    * joined to the champion's other; NULL: nothing wins */
};
/* Measures the escalation part of both models on the judged fast answers of head `weak`
 * among d's held-out examples hold[0..n_hold) and decides both parts (p's "in" fields
 * set by the caller); all borrowed. Pure but for a log line on a failed combination. */
void daemon__promotion_decide(const struct conf *c, const struct router_model *champion,
                              const struct router_model *challenger,
                              const struct router_dataset *d, const size_t *hold, size_t n_hold,
                              const char *weak, struct daemon__promotion *p);

/* retrain.c: automatic retraining and the model registry (see the file's comment). */
/* Main thread, once a second: starts a retrain when retrain_every more prompts have
 * been judged and none runs; joins a finished one. */
void daemon__retrain_tick(void);
/* Waits for a running retrain to end (at shutdown). */
void daemon__retrain_stop(void);
/* The model file a snapshot of c loads: the registry's champion when the outcome log
 * has one whose file exists, else [router] model. Returns buf or c's own string. */
const char *daemon__retrain_champion_path(const struct conf *c, char *buf, size_t len);
/* Retrains run and promotions made since start. */
void daemon__retrain_gauges(uint64_t *runs, uint64_t *promotions);
/* Returns 1 while an automatic retrain is training or evaluating. Thread-safe. */
int daemon__retrain_running(void);

/* Milliseconds between two monotonic ns stamps. */
double daemon__ms_since(uint64_t t0_ns);
uint64_t daemon__now_ns(void);

#endif
