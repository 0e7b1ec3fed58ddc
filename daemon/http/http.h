/* http.h - daemon/http/'s boundary: the HTTP front end as the rest of the daemon sees it.
 *
 * Answers (whole or streamed), the request's head, and every client-facing error from
 * one table (errors.c) in the request's dialect; the worker's side: its HTTP server,
 * started, quiesced and stopped (http.c). Only daemon/http/ includes libmicrohttpd's
 * header; its types never appear here. The functions keep the core's daemon__ prefix
 * for now. */
#ifndef TRIAGE_DAEMON_HTTP_H
#define TRIAGE_DAEMON_HTTP_H

#include <stddef.h>

#include <sys/types.h>

#include <jansson.h>

struct conf;
struct daemon_request;  /* the daemon's request (daemon-int.h) */
struct daemon_worker;   /* a worker thread (daemon-int.h) */
struct daemon_response; /* an answer being built, opaque: a libmicrohttpd response */

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

/* The HTTP front end (http.c) as the rest of the daemon sees it: answers, streams and
 * the request's head. */
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

/* mhd_errors.c: libmicrohttpd's own error pages become JSON. Resolves the library's
 * function once (at start: it also links the file in). Returns 0 or -1. */
int daemon__mhd_errors_install(void);
/* The route table (http.c): every path triaged serves, the API's (api/routes.c) and
 * what other modules register through hooks.h, matched in the order they were added.
 * Filled before the workers start, read-only after. */
typedef void daemon_route_fn(struct daemon_request *rq);
/* Who may call a route: checked before its handler runs (401, 403 otherwise). */
enum daemon_access {
    DAEMON_ACCESS_PUBLIC = 0,
    DAEMON_ACCESS_CLIENT, /* a key from keys_file when there is one */
    DAEMON_ACCESS_ADMIN,  /* a key from admin_keys_file, or without one a loopback client */
    DAEMON_ACCESS_STATS,  /* admin when stats_need_admin, else client */
};
enum {
    DAEMON_ROUTE_UNDER = 1 << 0,   /* path ends in '/': the paths strictly under it */
    DAEMON_ROUTE_OUTCOME = 1 << 1, /* each request is an outcome-log row, even one refused
                                    * before its handler ran */
};
/* Serves method on path with fn once the body is in, for callers access allows
 * (flags: DAEMON_ROUTE_*). Borrows the strings (use literals). A HEAD request takes
 * a GET route. Returns 0, -EEXIST when method and path are taken, -ENOSPC when the
 * table is full. */
int daemon__route_add(const char *method, const char *path, enum daemon_access access,
                      unsigned flags, daemon_route_fn *fn);

/* The worker's side of the front end (http.c). */
/* Starts w's HTTP server on w->listen_fd (taken) for c (v6: the socket is IPv6) and
 * its read-deadline sweep. Returns 0, or -1 with err. */
int daemon__http_start(struct daemon_worker *w, const struct conf *c, int v6, char *err,
                       size_t errlen);
/* Stops accepting: the listening socket is closed, open connections go on. */
void daemon__http_quiesce(struct daemon_worker *w);
/* Stops w's HTTP server: every connection ends, every request is finished. */
void daemon__http_stop(struct daemon_worker *w);
/* Runs MHD for w until no resumed connection is pending and rearms its timer.
 * Call after anything that may have woken a connection outside MHD and curl. */
void daemon__mhd_run(struct daemon_worker *w);
/* Frees resp (an answer never queued); NULL is fine. */
void daemon__response_free(struct daemon_response *resp);
/* Watches the sockets of w's requests that have waited GONE_AFTER_MS for a hang-up. */
void daemon__gone_watch_waiting(struct daemon_worker *w);
/* Stops watching rq's socket (none: nothing). */
void daemon__gone_unwatch(struct daemon_request *rq);

#endif
