/* mhd_errors.c - the answers libmicrohttpd writes on its own are JSON errors too, in the
 * dialect of the request line's path.
 *
 * For a request it cannot parse at all (a malformed request line or header, a head
 * beyond its memory pool, an HTTP version it does not speak, a Content-Length that is
 * not a number, bad chunked framing) libmicrohttpd answers before triage sees the
 * request, with a short HTML page, and offers no option to replace it. It builds that
 * page with its own exported MHD_create_response_from_buffer() and queues it with
 * MHD_queue_response(), both called through its PLT, so the definitions here - found
 * first by the dynamic linker, since the executable defines them - see every such page
 * go by. A body that is one of libmicrohttpd's error pages becomes the OpenAI-shaped
 * error of its row of errors.c; when that response is queued, on a connection whose
 * request line named /v1/messages (struct daemon_conn's anthropic), it is swapped for
 * the Anthropic-shaped one. Anything else is passed to the library's own functions
 * untouched. tests/daemon/test_hostile.c checks both on the wire, so a libmicrohttpd
 * that stops calling through its PLT is noticed. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <microhttpd.h>

#include "daemon-int.h"

typedef struct MHD_Response *create_fn(size_t, void *, enum MHD_ResponseMemoryMode);
typedef enum MHD_Result queue_fn(struct MHD_Connection *, unsigned int, struct MHD_Response *);

/* libmicrohttpd's page titles and the error each becomes. */
static const struct {
    const char *title;
    enum http_err kind;
    const char *message;
} pages[] = {
    {"Request too big", HTTP_ERR_HEADERS_TOO_LARGE, "The request head is too large"},
    {"Request malformed", HTTP_ERR_INVALID_REQUEST, "The request is not valid HTTP/1.1"},
    {"Requested HTTP version is not supported", HTTP_ERR_HTTP_VERSION,
     "Only HTTP/1.0 and HTTP/1.1 are served"},
    {"&quot;Host:&quot; header required", HTTP_ERR_INVALID_REQUEST,
     "An HTTP/1.1 request needs a Host header"},
    {"Request content too large", HTTP_ERR_BODY_TOO_LARGE,
     "The request's Content-Length or chunk size is too large"},
    {"Internal server error", HTTP_ERR_HTTP_FAILED, "The server could not handle the request"},
};

static create_fn *real_create; /* libmicrohttpd's own, found by http_mhd_errors_install */
static queue_fn *real_queue;

/* The page this thread made last, until the next response is queued: libmicrohttpd
 * queues the page right after making it, on the connection it is for. */
static _Thread_local struct MHD_Response *last_page;
static _Thread_local size_t last_row;

int
http_mhd_errors_install(void)
{
    void *c = dlsym(RTLD_NEXT, "MHD_create_response_from_buffer");
    void *q = dlsym(RTLD_NEXT, "MHD_queue_response");

    if (!c || !q)
        return -1;
    /* ISO C has no object-to-function cast */
    memcpy(&real_create, &c, sizeof(c));
    memcpy(&real_queue, &q, sizeof(q));
    return 0;
}

/* Returns a new JSON response for page row in a dialect, or NULL. */
static struct MHD_Response *
page_response(size_t row, int anthropic)
{
    size_t len = 0;
    char *json = http_err_body(pages[row].kind, anthropic, &len, "%s", pages[row].message);

    if (!json)
        return NULL;
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(len, json, free);
    if (!r) {
        free(json);
        return NULL;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return r;
}

struct MHD_Response *
MHD_create_response_from_buffer(size_t size, void *buffer, enum MHD_ResponseMemoryMode mode)
{
    static const char prefix[] = "<html><head><title>";
    const char *b = buffer;

    if (b && size > sizeof(prefix) && !memcmp(b, prefix, sizeof(prefix) - 1)) {
        const char *title = b + sizeof(prefix) - 1;
        for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
            size_t tl = strlen(pages[i].title);
            if ((size_t)(b + size - title) <= tl || memcmp(title, pages[i].title, tl) ||
                title[tl] != '<')
                continue;
            struct MHD_Response *r = page_response(i, 0);
            if (!r)
                break;
            if (mode == MHD_RESPMEM_MUST_FREE)
                free(buffer);
            last_page = r;
            last_row = i;
            return r;
        }
    }
    if (!real_create && http_mhd_errors_install() < 0)
        return NULL; /* what libmicrohttpd answers when it cannot build a response */
    return real_create(size, buffer, mode);
}

/* Copies one header of the page to the response replacing it (cls), but its type. */
static enum MHD_Result
copy_header(void *cls, enum MHD_ValueKind kind, const char *name, const char *value)
{
    (void)kind;
    if (strcasecmp(name, MHD_HTTP_HEADER_CONTENT_TYPE) != 0)
        MHD_add_response_header(cls, name, value);
    return MHD_YES;
}

enum MHD_Result
MHD_queue_response(struct MHD_Connection *connection, unsigned int status_code,
                   struct MHD_Response *response)
{
    struct MHD_Response *page = last_page;

    last_page = NULL;
    if (!real_queue && http_mhd_errors_install() < 0)
        return MHD_NO;
    if (!page || page != response)
        return real_queue(connection, status_code, response);
    /* one of libmicrohttpd's pages: in the dialect of the request line's path */
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    const struct daemon_conn *dc = ci ? ci->socket_context : NULL;
    int anthropic = dc && (dc->rq ? http_err_anthropic(dc->rq) : dc->anthropic);
    struct MHD_Response *r = anthropic ? page_response(last_row, 1) : NULL;
    if (!r)
        return real_queue(connection, status_code, response);
    MHD_get_response_headers(response, copy_header, r);
    /* the connection holds r now; the caller destroys the page it made */
    enum MHD_Result ret = real_queue(connection, status_code, r);
    MHD_destroy_response(r);
    return ret;
}
