/* mhd_errors.c - the answers libmicrohttpd writes on its own are OpenAI-shaped JSON too.
 *
 * For a request it cannot parse at all (a malformed request line or header, a head
 * beyond its memory pool, an HTTP version it does not speak, a Content-Length that is
 * not a number, bad chunked framing) libmicrohttpd answers before triage sees the
 * request, with a short HTML page, and offers no option to replace it. It builds that
 * page with its own exported MHD_create_response_from_buffer(), called through its PLT,
 * so this definition - found first by the dynamic linker, since the executable defines
 * it - sees every such page go by: a body that is one of libmicrohttpd's error pages
 * becomes the JSON error body every other answer has; anything else is passed to the
 * library's own function untouched. tests/daemon/test_hostile.c checks the result on
 * the wire, so a libmicrohttpd that stops calling through its PLT is noticed. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "daemon-int.h"

typedef struct MHD_Response *create_fn(size_t, void *, enum MHD_ResponseMemoryMode);

/* libmicrohttpd's page titles and the error each becomes. */
static const struct {
    const char *title;
    const char *code;
    const char *message;
} pages[] = {
    {"Request too big", "headers_too_large", "The request head is too large"},
    {"Request malformed", "invalid_request", "The request is not valid HTTP/1.1"},
    {"Requested HTTP version is not supported", "http_version_not_supported",
     "Only HTTP/1.0 and HTTP/1.1 are served"},
    {"&quot;Host:&quot; header required", "invalid_request",
     "An HTTP/1.1 request needs a Host header"},
    {"Request content too large", "body_too_large",
     "The request's Content-Length or chunk size is too large"},
    {"Internal server error", "internal_error", "The server could not handle the request"},
};

static create_fn *real_create; /* libmicrohttpd's own, found by daemon__mhd_errors_install */

int
daemon__mhd_errors_install(void)
{
    void *p = dlsym(RTLD_NEXT, "MHD_create_response_from_buffer");

    if (!p)
        return -1;
    memcpy(&real_create, &p, sizeof(p)); /* ISO C has no object-to-function cast */
    return 0;
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
            char *json = malloc(256);
            if (!json)
                break;
            int n = snprintf(json, 256,
                             "{\"error\":{\"message\":\"%s\",\"type\":\"invalid_request_error\","
                             "\"param\":null,\"code\":\"%s\"}}\n",
                             pages[i].message, pages[i].code);
            struct MHD_Response *r =
                MHD_create_response_from_buffer_with_free_callback((size_t)n, json, free);
            if (!r) {
                free(json);
                break;
            }
            MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
            if (mode == MHD_RESPMEM_MUST_FREE)
                free(buffer);
            return r;
        }
    }
    if (!real_create && daemon__mhd_errors_install() < 0)
        return NULL; /* what libmicrohttpd answers when it cannot build a response */
    return real_create(size, buffer, mode);
}
