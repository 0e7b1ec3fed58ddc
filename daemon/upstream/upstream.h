/* upstream.h - the upstream HTTP client, one per worker, driven by its libuv loop.
 *
 * No thread ever waits on a backend: http:// calls go over libuv TCP handles, the
 * rest through curl's socket API (which tells us which sockets to watch and when to
 * wake); calls report back through the callbacks below, always from the loop thread
 * and never from inside another transport call, so a callback may start or cancel
 * other calls. Connections to a backend are kept alive and reused across calls. */
#ifndef TRIAGE_UPSTREAM_H
#define TRIAGE_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <uv.h>

/* Why a backend call failed. upstream_error_status() is the one place these
 * become HTTP statuses. */
enum upstream_error {
    UPSTREAM_OK = 0,
    UPSTREAM_ERR_CONNECT,    /* refused, unreachable, DNS: 502 */
    UPSTREAM_ERR_TLS,        /* handshake or certificate: 502 */
    UPSTREAM_ERR_CLOSED,     /* connection dropped before the response ended: 502 */
    UPSTREAM_ERR_PROTOCOL,   /* not a valid HTTP response: 502 */
    UPSTREAM_ERR_TIMEOUT,    /* connect, first byte, idle or total deadline passed: 504 */
    UPSTREAM_ERR_OVERLOADED, /* refused locally: the backend is at max_concurrent or open: 503 */
    UPSTREAM_ERR_INTERNAL,   /* our side failed (out of resources, aborted write): 500 */
    UPSTREAM_ERR_TOO_LARGE,  /* the caller refused the data (on_data returned -1): 502 */
    UPSTREAM_ERR_BAD_ANSWER, /* valid HTTP, but a 2xx answer the caller cannot read (not JSON): 502 */
    UPSTREAM_ERR__COUNT
};

/* Returns the HTTP status a client gets for kind (the one mapping). */
int upstream_error_status(enum upstream_error kind);

/* Returns a stable short name for kind ("connect", "timeout", ...), for logs and
 * the error body's "code" ("backend_" prefix added there). */
const char *upstream_error_name(enum upstream_error kind);

/* Returns a one-line human message for kind. */
const char *upstream_error_message(enum upstream_error kind);

/* Returns a one-line human message for kind once the response had begun (its headers
 * came): "closed the connection mid-answer", not "before answering". */
const char *upstream_error_message_midway(enum upstream_error kind);

struct upstream;      /* one per worker loop */
struct upstream_call; /* one backend exchange */

struct upstream_callbacks {
    /* One response header (name and value trimmed, not NUL-terminated). The name is a
     * token and the value holds no control byte but HTAB: a response with NUL, CR or LF
     * inside a header line ends with UPSTREAM_ERR_PROTOCOL, and a header with another
     * control byte, or a name that is not a token, is dropped (RFC 9110, 5.5). */
    void (*on_header)(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen);
    /* The header block is complete; status is the HTTP status. */
    void (*on_headers_done)(void *ctx, long status);
    /* Body bytes (borrowed). Return 0 when consumed, 1 to pause the call (the same
     * bytes come again after upstream_unpause()), or -1 to refuse them: the call ends
     * with UPSTREAM_ERR_TOO_LARGE (a response over what the caller will hold). */
    int (*on_data)(void *ctx, const char *buf, size_t len);
    /* The exchange ended: err is UPSTREAM_OK after a whole response (any status).
     * The call is freed when this returns; do not touch it afterwards. */
    void (*on_done)(void *ctx, enum upstream_error err, const char *detail);
};

struct upstream_request {
    const char *url;             /* borrowed, copied by curl */
    const char *headers;         /* borrowed, copied: "Name: value\r\n" lines, or NULL */
    char *body;                  /* taken: freed with the call */
    size_t body_len;
    uint32_t connect_timeout_ms;
    uint32_t first_byte_timeout_ms; /* request being written -> response headers (the
                                     * connection and a cork's wait are not counted) */
    uint32_t idle_timeout_ms;       /* longest gap between body bytes */
    uint32_t timeout_ms;            /* the whole exchange */
    struct upstream_callbacks cb;
    void *ctx;
};

/* Creates the client on loop (borrowed; the loop must outlive it). after(ctx) is
 * called once after each batch of curl activity, from the loop (e.g. to flush
 * HTTP connections woken by data). Returns NULL on failure. */
struct upstream *upstream_create(uv_loop_t *loop, void (*after)(void *), void *after_ctx);

/* Cancels every call still running (no callbacks), and closes the client. The
 * loop must run afterwards for its handles to close; on_closed(ctx) (optional)
 * fires when they have and the client is freed. NULL is fine. */
void upstream_destroy(struct upstream *u, void (*on_closed)(void *), void *ctx);

/* Starts a call. Takes r->body in every case. Returns the call, or
 * NULL if curl refused it (nothing is called back then). */
struct upstream_call *upstream_start(struct upstream *u, struct upstream_request *r);

/* Corks u: requests that would go out at once on a kept-alive plain-HTTP connection
 * wait until upstream_uncork, which sends them back to back. A server loop corks
 * around one pass over its clients, so a backend is woken once for the requests
 * parsed in that pass instead of once per request (new connections, curl's calls
 * and retries are not held). At most UPSTREAM_CORK_MAX wait: the one that fills the
 * cork sends them all, which bounds how long the first waits for the others to be
 * parsed and scored (a few hundred µs) while one wake-up still serves many. */
#define UPSTREAM_CORK_MAX 32
void upstream_cork(struct upstream *u);
void upstream_uncork(struct upstream *u);

/* Stops a running call and frees it; no callback fires. Not from inside its own
 * on_data/on_header callbacks (return an error/pause there instead). */
void upstream_cancel(struct upstream_call *c);

/* Resumes a call paused by on_data returning 1. Not from inside its callbacks. */
void upstream_unpause(struct upstream_call *c);

/* Returns a new URL: base with path appended to its path, before any query or
 * fragment ("https://h/deployments/x?api-version=1" + "/chat/completions" ->
 * "https://h/deployments/x/chat/completions?api-version=1"). Borrows both. */
char *upstream_url_join(const char *base, const char *path);

/* Returns the number of calls running on u. */
size_t upstream_active(const struct upstream *u);

#endif
