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

#include "conf.h"
#include "guard/guard.h"
#include "hooks.h"
#include "router.h"
#include "upstream/upstream.h"

struct storage;
struct auth_keys;
struct MHD_Daemon;     /* libmicrohttpd's: only server.c and mhd_errors.c call it */
struct MHD_Connection;
struct daemon_response; /* an answer being built, opaque (the front end's, server.c) */
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
    const struct daemon_route *route;   /* a built-in endpoint, or */
    const struct handler *handler_;     /* a registered one (hooks.h) */

    /* the response */
    struct daemon_response *response; /* ready to queue */
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

typedef void daemon_route_fn(struct daemon_request *rq);

/* The API paths whose requests go to a backend (api.c): one row each. */
enum daemon_api_id {
    DAEMON_API_CHAT = 0,     /* POST /v1/chat/completions */
    DAEMON_API_RESPONSES,    /* POST /v1/responses */
    DAEMON_API_COMPLETIONS,  /* POST /v1/completions */
    DAEMON_API_EMBEDDINGS,   /* POST /v1/embeddings */
    DAEMON_API_MESSAGES,     /* POST /v1/messages (Anthropic) */
    DAEMON_API__COUNT
};

struct daemon_api {
    enum daemon_api_id id;
    const char *path;          /* the client's path */
    const char *upstream_path; /* appended to the backend's url ("/chat/completions") */
    enum conf_api speaks;      /* the backends that serve it */
    int routed;                /* an alias is scored and routed; 0: only a backend name */
    int stream_usage;          /* a stream may get stream_options.include_usage added */
    /* Checks what the path needs of the body (root, borrowed) and returns a new
     * chat-shaped view for the router and the prompt digest: an object with
     * "messages" (or the legacy "prompt"), "max_tokens" and "tools", borrowing root's
     * values. NULL after replying 400. */
    json_t *(*view)(struct daemon_request *rq, json_t *root);
};

/* The API row of path, or NULL. */
const struct daemon_api *daemon__api_find(const char *path);
/* The relay for every API path: parse, route or pass through, forward (proxy.c). */
void daemon__api_handle(struct daemon_request *rq);

/* Responses API state (api.c): which backend answered a response id, bounded.
 * Thread-safe. Remembers backend (a name, copied) for id (len bytes). */
void daemon__response_ids_put(const char *id, size_t len, const char *backend);
/* Copies the backend that answered id into out (cap bytes). Returns 1 known, 0 not. */
int daemon__response_ids_get(const char *id, size_t len, char *out, size_t cap);

/* Runs MHD for w until no resumed connection is pending and rearms its timer.
 * Call after anything that may have woken a connection outside MHD and curl. */
void daemon__mhd_run(struct daemon_worker *w);

/* A request whose thread-pool job ended after MHD let go of it: frees it. */
void daemon__request_orphan_done(struct daemon_request *rq);

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
void daemon__add_budget_headers(struct daemon_request *rq, struct daemon_response *resp);
void daemon__request_reload(void); /* reloads config and model now; any thread */

/* Replies: take body (malloc'd); add the request id header; wake the connection. */
void daemon__reply(struct daemon_request *rq, int status, const char *ctype, char *body,
                   size_t len);
void daemon__reply_json(struct daemon_request *rq, int status, json_t *doc); /* steals doc */
/* errors.c: the client-facing errors, one table. A kind's row holds its status, OpenAI
 * type and code, and Anthropic type; the request's API picks the dialect. */
enum daemon_err {
    DAEMON_ERR_INVALID_JSON = 0,
    DAEMON_ERR_NUMBER_OUT_OF_RANGE,
    DAEMON_ERR_MISSING_MODEL,
    DAEMON_ERR_MISSING_MESSAGES,
    DAEMON_ERR_MISSING_INPUT,
    DAEMON_ERR_MISSING_PROMPT,
    DAEMON_ERR_INVALID_MESSAGES,
    DAEMON_ERR_INVALID_INPUT,
    DAEMON_ERR_INVALID_THRESHOLD,
    DAEMON_ERR_INVALID_STRONG_SHARE,
    DAEMON_ERR_INVALID_FRAMING,
    DAEMON_ERR_INVALID_FEEDBACK,
    DAEMON_ERR_INVALID_WINDOW,
    DAEMON_ERR_INVALID_REQUEST,    /* not valid HTTP (libmicrohttpd's own page) */
    DAEMON_ERR_WRONG_API,          /* the named backend speaks another API */
    DAEMON_ERR_NOT_ROUTED,         /* an alias on a path that is never routed (embeddings) */
    DAEMON_ERR_PREVIOUS_RESPONSE_NOT_FOUND,
    DAEMON_ERR_MISSING_API_KEY,
    DAEMON_ERR_INVALID_API_KEY,
    DAEMON_ERR_FORBIDDEN,
    DAEMON_ERR_MODEL_NOT_FOUND,
    DAEMON_ERR_NOT_FOUND,
    DAEMON_ERR_API_NOT_SERVED,     /* no configured backend speaks the path's API */
    DAEMON_ERR_STORAGE_DISABLED,
    DAEMON_ERR_UNKNOWN_REQUEST_ID,
    DAEMON_ERR_METHOD_NOT_ALLOWED,
    DAEMON_ERR_READ_TIMEOUT,       /* the request did not arrive within read_timeout_ms */
    DAEMON_ERR_BODY_TOO_LARGE,
    DAEMON_ERR_HEADERS_TOO_LARGE,
    DAEMON_ERR_RATE_LIMITED,
    DAEMON_ERR_BUDGET_EXCEEDED,
    DAEMON_ERR_INTERNAL,
    DAEMON_ERR_RELOAD_FAILED,
    DAEMON_ERR_STORAGE_ERROR,
    DAEMON_ERR_HTTP_FAILED,        /* libmicrohttpd could not handle the request */
    DAEMON_ERR_STORAGE_UNAVAILABLE,
    DAEMON_ERR_BACKEND_UNAVAILABLE,
    DAEMON_ERR_BACKEND_OVERLOADED,
    DAEMON_ERR_SHUTTING_DOWN,
    DAEMON_ERR_HTTP_VERSION,       /* neither HTTP/1.0 nor HTTP/1.1 */
    DAEMON_ERR__COUNT
};
/* Replies with kind's error in rq's dialect; fmt's text is cleaned to valid UTF-8. */
void daemon__reply_err(struct daemon_request *rq, enum daemon_err kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same for an error no row names (a backend failure: its status and code). */
void daemon__reply_error(struct daemon_request *rq, int status, const char *type,
                         const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
int daemon__err_status(enum daemon_err kind);
const char *daemon__err_code(enum daemon_err kind);
/* 1 when rq's errors take Anthropic's shape (its path is /v1/messages). */
int daemon__dialect_anthropic(const struct daemon_request *rq);
/* 1 when rq's errors take Anthropic's shape: its path is /v1/messages, or one under
 * /v1/messages/ that triage does not serve (a 404 an Anthropic client reads). */
int daemon__err_anthropic(const struct daemon_request *rq);
/* The same for a path (borrowed, without its query) before any request exists. */
int daemon__path_anthropic(const char *path);
/* Returns a new error body (JSON and a newline; *len bytes) for kind in a dialect
 * (anthropic: 1 for Anthropic's shape), for an answer written outside a request:
 * libmicrohttpd's own pages, the read deadline's 408. NULL when memory runs out. */
char *daemon__err_body(enum daemon_err kind, int anthropic, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Sets the response of rq (takes resp) and resumes the connection if suspended. */
void daemon__set_response(struct daemon_request *rq, int status, struct daemon_response *resp);
/* Resumes rq's connection if it is suspended. */
void daemon__wake(struct daemon_request *rq);
/* Adds the x-triage-* routing headers for rq to resp. */
void daemon__add_route_headers(struct daemon_request *rq, struct daemon_response *resp);

/* The HTTP front end (server.c) as the rest of the daemon sees it: answers, streams and
 * the request's head. No file but server.c and mhd_errors.c includes libmicrohttpd's header. */
/* Returns a new whole answer of len bytes with content type ctype (borrowed; NULL:
 * none). Takes body (malloc'd; NULL: an empty one). Out of memory aborts. */
struct daemon_response *daemon__response_buffer(char *body, size_t len, const char *ctype);
/* What a stream's reader returns when it has no bytes to give (else a count > 0). */
#define DAEMON_STREAM_WAIT ((ssize_t)0)  /* none yet: rq is suspended until daemon__wake */
#define DAEMON_STREAM_END ((ssize_t)-1)  /* the body is complete */
#define DAEMON_STREAM_FAIL ((ssize_t)-2) /* cut short: the chunked body stays unterminated
                                          * and the client's connection is shut at once */
typedef ssize_t daemon_stream_read_fn(struct daemon_request *rq, char *buf, size_t max);
/* Returns a new streamed answer (chunked) for rq with content type ctype (borrowed),
 * its body pulled from read in blocks of up to block bytes. Out of memory aborts. */
struct daemon_response *daemon__response_stream(struct daemon_request *rq, const char *ctype,
                                                size_t block, daemon_stream_read_fn *read);
/* Adds a header to resp (both strings borrowed, copied). */
void daemon__response_header(struct daemon_response *resp, const char *name, const char *value);
/* Returns the value of rq's request header name (borrowed, valid while the connection
 * is), or NULL: absent, or the connection is gone. */
const char *daemon__request_header(const struct daemon_request *rq, const char *name);
/* Returns the value of rq's query argument name (as daemon__request_header). */
const char *daemon__request_query(const struct daemon_request *rq, const char *name);
/* Calls fn for each of rq's request headers (strings borrowed for the call); nothing
 * once the connection is gone. */
void daemon__request_headers_each(const struct daemon_request *rq,
                                  void (*fn)(void *ctx, const char *name, const char *value),
                                  void *ctx);

/* proxy.c, api.c */
void daemon__models(struct daemon_request *rq);
void daemon__model_get(struct daemon_request *rq); /* GET /v1/models/{id} */
/* outcomes.c: run on the thread pool, reply from the loop */
void daemon__feedback(struct daemon_request *rq);
void daemon__stats(struct daemon_request *rq);
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
void daemon__cascade_headers(const struct daemon_request *rq, struct daemon_response *resp);
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

/* mhd_errors.c: libmicrohttpd's own error pages become JSON. Resolves the library's
 * function once (at start: it also links the file in). Returns 0 or -1. */
int daemon__mhd_errors_install(void);

/* Milliseconds between two monotonic ns stamps. */
double daemon__ms_since(uint64_t t0_ns);
uint64_t daemon__now_ns(void);

#endif
