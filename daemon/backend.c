/* backend.c - what a backend call carries besides the body: its URL and header lines
 * (the backend's key and extra headers, the client headers [server] forward_headers
 * lets through, W3C trace context), never the client's key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "daemon-int.h"

char *
daemon__backend_url(const struct conf_backend *b, const char *path)
{
    return upstream_url_join(b->url, path);
}

/* Whether the client's header name is one to pass on. */
static int
forwarded(const struct conf *c, const char *name)
{
    if (!strcasecmp(name, "traceparent") || !strcasecmp(name, "tracestate"))
        return 1;
    for (size_t i = 0; i < c->n_forward_headers; i++)
        if (!strcasecmp(name, c->forward_headers[i]))
            return 1;
    return 0;
}

struct fwd_scan {
    const struct conf *c;
    struct daemon_buf out;
};

static void
fwd_one(void *cls, const char *name, const char *value)
{
    struct fwd_scan *s = cls;

    if (!name || !value || !forwarded(s->c, name))
        return;
    size_t nlen = strlen(name), vlen = strlen(value);
    /* MHD refuses CR and LF in a header; a bare control byte is dropped here, never
     * sent on, and a line curl would cut (over 1 KiB) is not sent either */
    if (!conf_header_name_valid(name, nlen) || !conf_header_value_valid(value, vlen) ||
        nlen + vlen + 4 > 1000)
        return;
    daemon__buf_append(&s->out, name, nlen);
    daemon__buf_append(&s->out, ": ", 2);
    daemon__buf_append(&s->out, value, vlen);
    daemon__buf_append(&s->out, "\r\n", 2);
}

const char *
daemon__forward_headers(struct daemon_request *rq)
{
    if (rq->fwd_done || !rq->conn)
        return rq->fwd_headers;
    rq->fwd_done = 1;
    struct fwd_scan s = {.c = rq->snap->conf};
    http_request_headers_each(rq, fwd_one, &s);
    if (s.out.len) {
        daemon__buf_append(&s.out, "", 1);
        rq->fwd_headers = s.out.data;
    }
    return rq->fwd_headers;
}

char *
daemon__backend_headers_fwd(const struct conf_backend *b, int stream, const char *request_id,
                            const char *forward)
{
    struct daemon_buf h = {0};
    char line[256];
    /* sized once: a buffer that held the key is never left behind by a realloc */
    int anthropic = b->api == CONF_API_ANTHROPIC;
    /* Anthropic's API takes the key bare in x-api-key, and the version it speaks */
    const char *key_header = b->api_key_header ? b->api_key_header
                             : anthropic       ? "x-api-key"
                                               : NULL;
    h.cap = sizeof(line) + (b->api_key ? strlen(b->api_key) : 0) +
            (key_header ? strlen(key_header) : 0) + 16 +
            (anthropic && b->anthropic_version ? strlen(b->anthropic_version) + 24 : 0) +
            (b->headers ? strlen(b->headers) : 0) + (forward ? strlen(forward) : 0) + 1;
    h.data = malloc(h.cap);
    if (!h.data)
        abort();
    int n = snprintf(line, sizeof(line),
                     "Content-Type: application/json\r\nAccept: %s\r\n"
                     "User-Agent: triaged/" TRIAGE_VERSION "\r\nX-Request-Id: %s\r\n",
                     stream ? "text/event-stream" : "application/json", request_id);

    daemon__buf_append(&h, line, (size_t)n);
    if (anthropic && b->anthropic_version) {
        daemon__buf_append(&h, "anthropic-version: ", 19);
        daemon__buf_append(&h, b->anthropic_version, strlen(b->anthropic_version));
        daemon__buf_append(&h, "\r\n", 2);
    }
    if (b->api_key) {
        /* "Authorization: Bearer <key>", or the key bare in api_key_header (Azure) or
         * x-api-key (Anthropic) */
        const char *name = key_header ? key_header : "Authorization";
        daemon__buf_append(&h, name, strlen(name));
        daemon__buf_append(&h, key_header ? ": " : ": Bearer ", key_header ? 2 : 9);
        daemon__buf_append(&h, b->api_key, strlen(b->api_key));
        daemon__buf_append(&h, "\r\n", 2);
    }
    if (b->headers)
        daemon__buf_append(&h, b->headers, strlen(b->headers));
    if (forward)
        daemon__buf_append(&h, forward, strlen(forward));
    daemon__buf_append(&h, "", 1);
    return h.data;
}

char *
daemon__backend_headers(const struct conf_backend *b, int stream, const char *request_id)
{
    return daemon__backend_headers_fwd(b, stream, request_id, NULL);
}

void
daemon__backend_headers_free(char *headers)
{
    if (!headers)
        return;
    explicit_bzero(headers, strlen(headers)); /* it held the backend's key */
    free(headers);
}

void
daemon__attempt_failed(struct daemon_request *rq, int backend, const char *kind)
{
    if (backend < 0 || rq->n_failed >= DAEMON_MAX_FAILED)
        return;
    rq->failed[rq->n_failed].backend = rq->snap->conf->backends[backend].name;
    rq->failed[rq->n_failed].kind = kind;
    rq->n_failed++;
}

char *
daemon__failed_attempts_text(const struct daemon_request *rq)
{
    struct daemon_buf b = {0};

    /* backend names hold no space or comma (conf.c), kinds are identifiers */
    for (unsigned i = 0; i < rq->n_failed; i++) {
        if (i)
            daemon__buf_append(&b, ",", 1);
        daemon__buf_append(&b, rq->failed[i].backend, strlen(rq->failed[i].backend));
        daemon__buf_append(&b, " ", 1);
        daemon__buf_append(&b, rq->failed[i].kind, strlen(rq->failed[i].kind));
    }
    if (b.len)
        daemon__buf_append(&b, "", 1);
    return b.data;
}
