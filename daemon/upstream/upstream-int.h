/* upstream-int.h - what the upstream client's two transports share: curl (upstream.c, any
 * URL) and the plain HTTP/1.1 client (upstream_h1.c, http:// URLs). Not a public API. */
#ifndef TRIAGE_UPSTREAM_INT_H
#define TRIAGE_UPSTREAM_INT_H

#include "upstream.h"

#define UPSTREAM_EASY_POOL 64 /* finished curl handles kept for the next calls */

struct upstream_sock;
struct h1_conn;
struct h1_origin;

struct upstream_call {
    struct upstream *u;
    CURL *easy; /* the curl transport's handle; NULL for a plain-HTTP call */
    struct curl_slist *headers; /* the curl transport's request headers */
    char *body;
    size_t body_len;
    struct upstream_callbacks cb;
    void *ctx;
    uint64_t connect_deadline;    /* loop ms, 0 = none (plain HTTP: curl keeps its own) */
    uint64_t first_byte_deadline; /* loop ms, 0 until the request is written */
    uint32_t first_byte_timeout_ms;
    uint64_t total_deadline;      /* loop ms, 0 = none (plain HTTP only) */
    uint64_t last_data;           /* loop ms */
    uint32_t idle_timeout_ms;
    int got_headers;
    int paused;
    int reusable; /* ended normally, never paused: its easy handle may serve another call */
    int ever_paused;
    enum upstream_error forced; /* set when we abort the transfer ourselves */
    char errbuf[CURL_ERROR_SIZE];
    struct upstream_call *prev, *next;

    /* the plain-HTTP transport */
    struct h1_conn *h1;           /* the connection carrying it, NULL while none */
    struct h1_origin *origin;
    char *head;                   /* the request line and headers, kept for a retry */
    size_t head_len;
    int retried;                  /* already re-sent once on a fresh connection */
    int resuming;                 /* on u->resume, to be fed its saved bytes */
    struct upstream_call *resume_next;
};

struct upstream {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer; /* curl's timeout */
    uv_timer_t sweep; /* our deadlines */
    struct upstream_call *calls;
    size_t n_calls;
    struct upstream_sock *socks;
    struct upstream_sock **by_fd; /* every sock in socks, by fd */
    size_t n_by_fd;
    CURL *easy_pool[UPSTREAM_EASY_POOL];
    unsigned n_easy;
    void (*after)(void *);
    void *after_ctx;
    int open_handles; /* uv handles not yet closed */
    int destroying;
    void (*on_closed)(void *);
    void *closed_ctx;

    /* the plain-HTTP transport */
    struct h1_origin *origins;     /* scheme-less host:port of every backend seen */
    size_t n_idle;                 /* kept-alive connections waiting for a call */
    uv_idle_t resume;              /* feeds unpaused calls their saved bytes */
    struct upstream_call *resume_head;
    char *rbuf;                    /* every read lands here, and is consumed at once */
    int corked;                    /* requests wait on the cork list (upstream_cork) */
    struct h1_conn *cork_head, *cork_tail;
    unsigned n_cork;               /* requests on it */
};

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

/* Runs after a batch of transport activity: finished curl calls, then u->after. */
void upstream__after_activity(struct upstream *u);

/* One of u's uv handles finished closing (frees u when it was the last one while
 * upstream_destroy runs). */
void upstream__handle_closed(struct upstream *u);

/* ---- the plain HTTP/1.1 transport (upstream_h1.c) ---- */

/* Sets up u's part (called by upstream_create). */
void upstream__h1_init(struct upstream *u);

/* Starts c (already on u->calls) for url when it is a plain http:// URL this
 * transport takes. Returns 0 when started, 1 when curl should take the URL. */
int upstream__h1_start(struct upstream_call *c, const char *url, const char *headers);

/* Takes c off its connection (closed: a half-read response cannot be reused). */
void upstream__h1_detach(struct upstream_call *c);

/* Resumes a paused plain-HTTP call (its saved bytes are fed from the loop). */
void upstream__h1_unpause(struct upstream_call *c);

/* Closes every idle connection and frees the origins (from upstream_destroy). */
void upstream__h1_destroy(struct upstream *u);

#endif
