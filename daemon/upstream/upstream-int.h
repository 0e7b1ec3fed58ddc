/* upstream-int.h - the generic upstream client (upstream.c) and its transports: curl
 * (upstream_curl.c, any URL) and the plain HTTP/1.1 client (upstream_h1.c, http:// URLs).
 * Not a public API.
 *
 * Each transport's call embeds struct upstream_call as its first member and fills its
 * table of functions (struct upstream_transport); the generic code - the API, the
 * deadlines, the list of running calls - knows a transport only through that table,
 * and a transport's state hangs off struct upstream as an object of its own. */
#ifndef TRIAGE_UPSTREAM_INT_H
#define TRIAGE_UPSTREAM_INT_H

#include "upstream.h"

#define UPSTREAM_DETAIL_MAX 256 /* bytes of a failure's detail text */

struct upstream_transport;

/* The common part of one backend exchange; the first member of a transport's call. */
struct upstream_call {
    const struct upstream_transport *tp; /* the transport carrying it */
    struct upstream *u;
    char *body;
    size_t body_len;
    struct upstream_callbacks cb;
    void *ctx;
    uint64_t connect_deadline;    /* loop ms, 0 = none (curl keeps its own) */
    uint64_t first_byte_deadline; /* loop ms, 0 until the request is written */
    uint32_t first_byte_timeout_ms;
    uint64_t total_deadline;      /* loop ms, 0 = none (curl keeps its own) */
    uint64_t last_data;           /* loop ms */
    uint32_t idle_timeout_ms;
    int got_headers;
    int paused;
    int ever_paused;
    enum upstream_error forced;   /* set when we abort the transfer ourselves */
    char detail[UPSTREAM_DETAIL_MAX]; /* the failure's text, when a transport keeps one */
    struct upstream_call *prev, *next; /* u->calls: every call the sweep watches */
};

/* What a transport does. Per client: init (its state on u; 0 or -1), start (a new call
 * for r, linked, when the transport takes r->url; else NULL with r untouched; the last
 * transport takes any URL, and its NULL is a failure), shutdown (cancel
 * and close everything, from upstream_destroy; no callbacks), free (its state, once
 * the client's last handle has closed; NULL is fine). Per call: release (take c off
 * the transport and free it; no callback), unpause (resume a paused c). */
struct upstream_transport {
    const char *name;
    int (*init)(struct upstream *u);
    struct upstream_call *(*start)(struct upstream *u, struct upstream_request *r);
    void (*shutdown)(struct upstream *u);
    void (*free)(struct upstream *u);
    void (*release)(struct upstream_call *c);
    void (*unpause)(struct upstream_call *c);
};

/* The transports, in the order upstream_start offers them a call. */
extern const struct upstream_transport upstream__h1_transport;   /* upstream_h1.c */
extern const struct upstream_transport upstream__curl_transport; /* upstream_curl.c */

struct upstream_h1;
struct upstream_curl;

struct upstream {
    uv_loop_t *loop;
    uv_timer_t sweep; /* our deadlines */
    struct upstream_call *calls;
    size_t n_calls;
    void (*after)(void *);
    void *after_ctx;
    int open_handles; /* uv handles not yet closed (every transport's) */
    int destroying;
    void (*on_closed)(void *);
    void *closed_ctx;
    struct upstream_h1 *h1;     /* the plain-HTTP transport's state */
    struct upstream_curl *curl; /* the curl transport's state */
};

/* Fills c's common part for a call of tp from r (takes r->body) and arms its deadlines:
 * connect and total only when with_deadlines (curl keeps its own). */
void upstream__call_init(struct upstream_call *c, const struct upstream_transport *tp,
                         struct upstream *u, struct upstream_request *r, int with_deadlines);

/* Puts c on u's list of running calls (the sweep runs while the list is not empty). */
void upstream__call_link(struct upstream_call *c);

/* Ends c with err: takes it off its transport, frees it, then reports (the callback
 * may start or cancel other calls). From the loop, outside transport callbacks. */
void upstream__call_finish(struct upstream_call *c, enum upstream_error err, const char *detail);

/* Parses one response header line (len bytes, without its line end) into a name and
 * a trimmed value (both point into line). Returns 0 for a field to use, 1 for a line to
 * skip (no colon, a name that is not a token, a control byte other than HTAB in the
 * value), -1 when the line holds NUL, CR or LF: the response is refused. */
int upstream__header_line(const char *line, size_t len, const char **name, size_t *nlen,
                          const char **value, size_t *vlen);

/* The request of c starts going out: its first-byte deadline starts now (the connect
 * and any wait before are not counted). */
void upstream__request_sent(struct upstream_call *c);

/* Runs after a batch of transport activity: u->after (e.g. the server's flush). */
void upstream__after_activity(struct upstream *u);

/* One of u's uv handles finished closing (frees u when it was the last one while
 * upstream_destroy runs). */
void upstream__handle_closed(struct upstream *u);

#endif
