/* http.h - daemon/http/'s boundary: the HTTP front end as the rest of the daemon sees it.
 *
 * Answers (whole or streamed), the request's head, and every client-facing error from
 * one table (errors.c) in the request's dialect; the worker's side: its HTTP server,
 * started, quiesced and stopped (http.c). Only daemon/http/ includes libmicrohttpd's
 * header; its types never appear here. */
#ifndef TRIAGE_DAEMON_HTTP_H
#define TRIAGE_DAEMON_HTTP_H

#include <stddef.h>

#include <sys/types.h>

#include <jansson.h>

struct conf;
struct daemon_request;  /* the daemon's request (daemon-int.h) */
struct daemon_worker;   /* a worker thread (daemon-int.h) */
struct http_response; /* an answer being built, opaque: a libmicrohttpd response */

/* Replies: take body (malloc'd); add the request id header; wake the connection. */
void http_reply(struct daemon_request *rq, int status, const char *ctype, char *body,
                   size_t len);
void http_reply_json(struct daemon_request *rq, int status, json_t *doc); /* steals doc */
/* errors.c: the client-facing errors, one table. A kind's row holds its status, OpenAI
 * type and code, and Anthropic type; the request's API picks the dialect. */
enum http_err {
    HTTP_ERR_INVALID_JSON = 0,
    HTTP_ERR_NUMBER_OUT_OF_RANGE,
    HTTP_ERR_MISSING_MODEL,
    HTTP_ERR_MISSING_MESSAGES,
    HTTP_ERR_MISSING_INPUT,
    HTTP_ERR_MISSING_PROMPT,
    HTTP_ERR_INVALID_MESSAGES,
    HTTP_ERR_INVALID_INPUT,
    HTTP_ERR_INVALID_THRESHOLD,
    HTTP_ERR_INVALID_STRONG_SHARE,
    HTTP_ERR_INVALID_FRAMING,
    HTTP_ERR_INVALID_FEEDBACK,
    HTTP_ERR_INVALID_WINDOW,
    HTTP_ERR_INVALID_REQUEST,    /* not valid HTTP (libmicrohttpd's own page) */
    HTTP_ERR_WRONG_API,          /* the named backend speaks another API */
    HTTP_ERR_NOT_ROUTED,         /* an alias on a path that is never routed (embeddings) */
    HTTP_ERR_PREVIOUS_RESPONSE_NOT_FOUND,
    HTTP_ERR_MISSING_API_KEY,
    HTTP_ERR_INVALID_API_KEY,
    HTTP_ERR_FORBIDDEN,
    HTTP_ERR_MODEL_NOT_FOUND,
    HTTP_ERR_NOT_FOUND,
    HTTP_ERR_API_NOT_SERVED,     /* no configured backend speaks the path's API */
    HTTP_ERR_STORAGE_DISABLED,
    HTTP_ERR_UNKNOWN_REQUEST_ID,
    HTTP_ERR_METHOD_NOT_ALLOWED,
    HTTP_ERR_READ_TIMEOUT,       /* the request did not arrive within read_timeout_ms */
    HTTP_ERR_BODY_TOO_LARGE,
    HTTP_ERR_HEADERS_TOO_LARGE,
    HTTP_ERR_RATE_LIMITED,
    HTTP_ERR_BUDGET_EXCEEDED,
    HTTP_ERR_INTERNAL,
    HTTP_ERR_RELOAD_FAILED,
    HTTP_ERR_STORAGE_ERROR,
    HTTP_ERR_HTTP_FAILED,        /* libmicrohttpd could not handle the request */
    HTTP_ERR_STORAGE_UNAVAILABLE,
    HTTP_ERR_BACKEND_UNAVAILABLE,
    HTTP_ERR_BACKEND_OVERLOADED,
    HTTP_ERR_SHUTTING_DOWN,
    HTTP_ERR_HTTP_VERSION,       /* neither HTTP/1.0 nor HTTP/1.1 */
    HTTP_ERR__COUNT
};
/* Replies with kind's error in rq's dialect; fmt's text is cleaned to valid UTF-8. */
void http_reply_err(struct daemon_request *rq, enum http_err kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same for an error no row names (a backend failure: its status and code). */
void http_reply_error(struct daemon_request *rq, int status, const char *type,
                         const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
int http_err_status(enum http_err kind);
const char *http_err_code(enum http_err kind);
/* 1 when rq's errors take Anthropic's shape (its path is /v1/messages). */
int http_dialect_anthropic(const struct daemon_request *rq);
/* 1 when rq's errors take Anthropic's shape: its path is /v1/messages, or one under
 * /v1/messages/ that triage does not serve (a 404 an Anthropic client reads). */
int http_err_anthropic(const struct daemon_request *rq);
/* The same for a path (borrowed, without its query) before any request exists. */
int http_path_anthropic(const char *path);
/* Returns a new error body (JSON and a newline; *len bytes) for kind in a dialect
 * (anthropic: 1 for Anthropic's shape), for an answer written outside a request:
 * libmicrohttpd's own pages, the read deadline's 408. NULL when memory runs out. */
char *http_err_body(enum http_err kind, int anthropic, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Sets the response of rq (takes resp) and resumes the connection if suspended. */
void http_set_response(struct daemon_request *rq, int status, struct http_response *resp);
/* Resumes rq's connection if it is suspended. */
void http_wake(struct daemon_request *rq);

/* The HTTP front end (http.c) as the rest of the daemon sees it: answers, streams and
 * the request's head. */
/* Returns a new whole answer of len bytes with content type ctype (borrowed; NULL:
 * none). Takes body (malloc'd; NULL: an empty one). Out of memory aborts. */
struct http_response *http_response_buffer(char *body, size_t len, const char *ctype);
/* What a stream's reader returns when it has no bytes to give (else a count > 0). */
#define HTTP_STREAM_WAIT ((ssize_t)0)  /* none yet: rq is suspended until http_wake */
#define HTTP_STREAM_END ((ssize_t)-1)  /* the body is complete */
#define HTTP_STREAM_FAIL ((ssize_t)-2) /* cut short: the chunked body stays unterminated
                                          * and the client's connection is shut at once */
typedef ssize_t http_stream_read_fn(struct daemon_request *rq, char *buf, size_t max);
/* Returns a new streamed answer (chunked) for rq with content type ctype (borrowed),
 * its body pulled from read in blocks of up to block bytes. Out of memory aborts. */
struct http_response *http_response_stream(struct daemon_request *rq, const char *ctype,
                                                size_t block, http_stream_read_fn *read);
/* Adds a header to resp (both strings borrowed, copied). */
void http_response_header(struct http_response *resp, const char *name, const char *value);
/* Returns the value of rq's request header name (borrowed, valid while the connection
 * is), or NULL: absent, or the connection is gone. */
const char *http_request_header(const struct daemon_request *rq, const char *name);
/* Returns the value of rq's query argument name (as http_request_header). */
const char *http_request_query(const struct daemon_request *rq, const char *name);
/* Calls fn for each of rq's request headers (strings borrowed for the call); nothing
 * once the connection is gone. */
void http_request_headers_each(const struct daemon_request *rq,
                                  void (*fn)(void *ctx, const char *name, const char *value),
                                  void *ctx);

/* mhd_errors.c: libmicrohttpd's own error pages become JSON. Resolves the library's
 * function once (at start: it also links the file in). Returns 0 or -1. */
int http_mhd_errors_install(void);
/* The route table (http.c): every path triaged serves, the API's (api/routes.c) and
 * what other modules register through hooks.h, matched in the order they were added.
 * Filled before the workers start, read-only after. */
typedef void http_route_fn(struct daemon_request *rq);
/* Who may call a route: checked before its handler runs (401, 403 otherwise). */
enum http_access {
    HTTP_ACCESS_PUBLIC = 0,
    HTTP_ACCESS_CLIENT, /* a key from keys_file when there is one */
    HTTP_ACCESS_ADMIN,  /* a key from admin_keys_file, or without one a loopback client */
    HTTP_ACCESS_STATS,  /* admin when stats_need_admin, else client */
};
enum {
    HTTP_ROUTE_UNDER = 1 << 0,   /* path ends in '/': the paths strictly under it */
    HTTP_ROUTE_OUTCOME = 1 << 1, /* each request is an outcome-log row, even one refused
                                    * before its handler ran */
};
/* Serves method on path with fn once the body is in, for callers access allows
 * (flags: DAEMON_ROUTE_*). Borrows the strings (use literals). A HEAD request takes
 * a GET route. Returns 0, -EEXIST when method and path are taken, -ENOSPC when the
 * table is full. */
int http_route_add(const char *method, const char *path, enum http_access access,
                      unsigned flags, http_route_fn *fn);

/* The worker's side of the front end (http.c). */
/* Starts w's HTTP server on w->listen_fd (taken) for c (v6: the socket is IPv6) and
 * its read-deadline sweep. Returns 0, or -1 with err. */
int http_worker_start(struct daemon_worker *w, const struct conf *c, int v6, char *err,
                       size_t errlen);
/* Stops accepting: the listening socket is closed, open connections go on. */
void http_worker_quiesce(struct daemon_worker *w);
/* Stops w's HTTP server: every connection ends, every request is finished. */
void http_worker_stop(struct daemon_worker *w);
/* Runs MHD for w until no resumed connection is pending and rearms its timer.
 * Call after anything that may have woken a connection outside MHD and curl. */
void http_run(struct daemon_worker *w);
/* Frees resp (an answer never queued); NULL is fine. */
void http_response_free(struct http_response *resp);
/* Watches the sockets of w's requests that have waited GONE_AFTER_MS for a hang-up. */
void http_gone_watch_waiting(struct daemon_worker *w);
/* Stops watching rq's socket (none: nothing). */
void http_gone_unwatch(struct daemon_request *rq);

#endif
