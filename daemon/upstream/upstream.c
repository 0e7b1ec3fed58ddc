/* upstream.c - the upstream client's API: calls, their deadlines (one sweep), the error
 * kinds, and the choice of a transport for each call (upstream-int.h). The transports
 * are upstream_h1.c (plain http:// URLs) and upstream_curl.c (the rest). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upstream-int.h"

#define SWEEP_MS 50 /* resolution of the first-byte and idle deadlines */

/* The transports, in the order a call is offered to them: the first that takes it. */
static const struct upstream_transport *const transports[] = {
    &upstream__h1_transport,
    &upstream__curl_transport,
};
#define N_TRANSPORTS (sizeof(transports) / sizeof(transports[0]))

static const struct {
    int status;
    const char *name;
    const char *message; /* before any of the response came */
    const char *midway;  /* after its headers: the answer was cut short */
} error_table[UPSTREAM_ERR__COUNT] = {
    [UPSTREAM_OK] = {200, "ok", "ok", "ok"},
    [UPSTREAM_ERR_CONNECT] = {502, "unreachable", "the backend refused or could not be reached",
                              "the backend could not be reached"},
    [UPSTREAM_ERR_TLS] = {502, "tls", "the TLS handshake with the backend failed",
                          "the TLS connection to the backend failed mid-answer"},
    [UPSTREAM_ERR_CLOSED] = {502, "closed", "the backend closed the connection before answering",
                             "the backend closed the connection mid-answer"},
    [UPSTREAM_ERR_PROTOCOL] = {502, "bad_response", "the backend sent an invalid HTTP response",
                               "the backend's answer turned into invalid HTTP mid-answer"},
    [UPSTREAM_ERR_TIMEOUT] = {504, "timeout", "the backend did not answer in time",
                              "the backend stopped sending mid-answer (idle or total deadline)"},
    [UPSTREAM_ERR_OVERLOADED] = {503, "overloaded", "the backend is at capacity or unavailable",
                                 "the backend is at capacity or unavailable"},
    [UPSTREAM_ERR_INTERNAL] = {500, "internal", "the proxy failed to relay the request",
                               "the proxy failed to relay the answer"},
    [UPSTREAM_ERR_TOO_LARGE] = {502, "response_too_large",
                                "the backend's response is larger than max_response",
                                "the backend's response is larger than max_response"},
    [UPSTREAM_ERR_BAD_ANSWER] = {502, "bad_answer", "the backend's answer is not valid JSON",
                                 "the backend's answer is not valid JSON"},
};

int
upstream_error_status(enum upstream_error kind)
{
    if ((unsigned)kind >= UPSTREAM_ERR__COUNT)
        return 500;
    return error_table[kind].status;
}

const char *
upstream_error_name(enum upstream_error kind)
{
    if ((unsigned)kind >= UPSTREAM_ERR__COUNT)
        return "internal";
    return error_table[kind].name;
}

const char *
upstream_error_message(enum upstream_error kind)
{
    if ((unsigned)kind >= UPSTREAM_ERR__COUNT)
        return error_table[UPSTREAM_ERR_INTERNAL].message;
    return error_table[kind].message;
}

const char *
upstream_error_message_midway(enum upstream_error kind)
{
    if ((unsigned)kind >= UPSTREAM_ERR__COUNT)
        return error_table[UPSTREAM_ERR_INTERNAL].midway;
    return error_table[kind].midway;
}

/* Takes c off u's list of running calls. */
static void
unlink_call(struct upstream_call *c)
{
    struct upstream *u = c->u;

    if (c->prev)
        c->prev->next = c->next;
    else
        u->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    if (--u->n_calls == 0)
        uv_timer_stop(&u->sweep);
}

/* Unlinks c, then its transport takes it off and frees it. */
static void
call_free(struct upstream_call *c)
{
    unlink_call(c);
    free(c->body);
    c->body = NULL;
    c->tp->release(c);
}

void
upstream__call_finish(struct upstream_call *c, enum upstream_error err, const char *detail)
{
    struct upstream_callbacks cb = c->cb;
    void *ctx = c->ctx;
    char buf[UPSTREAM_DETAIL_MAX];

    snprintf(buf, sizeof(buf), "%s", detail ? detail : "");
    call_free(c);
    cb.on_done(ctx, err, buf[0] ? buf : NULL);
}

void
upstream__after_activity(struct upstream *u)
{
    if (u->after)
        u->after(u->after_ctx);
}

void
upstream__handle_closed(struct upstream *u)
{
    if (--u->open_handles == 0 && u->destroying) {
        void (*cb)(void *) = u->on_closed;
        void *ctx = u->closed_ctx;
        for (size_t i = 0; i < N_TRANSPORTS; i++)
            transports[i]->free(u);
        free(u);
        if (cb)
            cb(ctx);
    }
}

static void
on_sweep_closed(uv_handle_t *h)
{
    upstream__handle_closed(h->data);
}

static void
on_sweep(uv_timer_t *t)
{
    struct upstream *u = t->data;
    uint64_t now = uv_now(u->loop);
    struct upstream_call *c, *next;

    for (c = u->calls; c; c = next) {
        next = c->next;
        if (c->total_deadline && now >= c->total_deadline)
            upstream__call_finish(c, UPSTREAM_ERR_TIMEOUT, "the exchange did not end within timeout");
        else if (c->paused)
            continue;
        else if (c->connect_deadline && now >= c->connect_deadline)
            upstream__call_finish(c, UPSTREAM_ERR_TIMEOUT, "no connection within connect_timeout");
        else if (!c->got_headers && c->first_byte_deadline && now >= c->first_byte_deadline)
            upstream__call_finish(c, UPSTREAM_ERR_TIMEOUT,
                                  "no response headers within first_byte_timeout");
        else if (c->got_headers && c->idle_timeout_ms && now >= c->last_data + c->idle_timeout_ms)
            upstream__call_finish(c, UPSTREAM_ERR_TIMEOUT, "no data within idle_timeout");
    }
    if (u->after)
        u->after(u->after_ctx);
}

/* 1 if the n bytes at p are a token (RFC 9110, 5.6.2), as a field name must be. */
static int
is_token(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if ((ch < '0' || ch > '9') && ((ch | 0x20) < 'a' || (ch | 0x20) > 'z') &&
            (!ch || !strchr("!#$%&'*+-.^_`|~", ch)))
            return 0;
    }
    return n > 0;
}

int
upstream__header_line(const char *line, size_t len, const char **name, size_t *nlen,
                      const char **value, size_t *vlen)
{
    /* NUL, CR or LF would split the field where it is relayed: RFC 9110, 5.5 says
     * reject the message or replace them, and a backend that sends them is broken */
    if (memchr(line, '\0', len) || memchr(line, '\r', len) || memchr(line, '\n', len))
        return -1;
    const char *colon = memchr(line, ':', len);
    if (!colon || !is_token(line, (size_t)(colon - line)))
        return 1; /* folded lines, "Name :", controls in the name, ...: not a field */
    const char *v = colon + 1, *ve = line + len;
    while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
    for (const char *q = v; q < ve; q++)
        if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
            return 1; /* another control byte: invalid, and not worth relaying */
    *name = line;
    *nlen = (size_t)(colon - line);
    *value = v;
    *vlen = (size_t)(ve - v);
    return 0;
}

void
upstream__request_sent(struct upstream_call *c)
{
    if (c->first_byte_timeout_ms)
        c->first_byte_deadline = uv_now(c->u->loop) + c->first_byte_timeout_ms;
}

struct upstream *
upstream_create(uv_loop_t *loop, void (*after)(void *), void *after_ctx)
{
    struct upstream *u = calloc(1, sizeof(*u));

    if (!u)
        abort();
    u->loop = loop;
    u->after = after;
    u->after_ctx = after_ctx;
    for (size_t i = 0; i < N_TRANSPORTS; i++) {
        if (transports[i]->init(u) < 0) {
            /* the ones before own handles now: close them as upstream_destroy does */
            u->destroying = 1;
            for (size_t j = 0; j < i; j++)
                transports[j]->shutdown(u);
            if (u->open_handles == 0) {
                for (size_t j = 0; j < N_TRANSPORTS; j++)
                    transports[j]->free(u);
                free(u);
            }
            return NULL;
        }
    }
    uv_timer_init(loop, &u->sweep);
    u->sweep.data = u;
    u->open_handles++;
    return u;
}

void
upstream_destroy(struct upstream *u, void (*on_closed)(void *), void *ctx)
{
    if (!u)
        return;
    u->destroying = 1; /* before call_free: nothing goes back to a pool now */
    while (u->calls)
        call_free(u->calls);
    u->on_closed = on_closed;
    u->closed_ctx = ctx;
    for (size_t i = 0; i < N_TRANSPORTS; i++)
        transports[i]->shutdown(u);
    uv_close((uv_handle_t *)&u->sweep, on_sweep_closed);
}

void
upstream__call_init(struct upstream_call *c, const struct upstream_transport *tp,
                    struct upstream *u, struct upstream_request *r, int with_deadlines)
{
    uint64_t now = uv_now(u->loop);

    c->tp = tp;
    c->u = u;
    c->body = r->body;
    c->body_len = r->body_len;
    r->body = NULL;
    c->cb = r->cb;
    c->ctx = r->ctx;
    c->idle_timeout_ms = r->idle_timeout_ms;
    c->first_byte_timeout_ms = r->first_byte_timeout_ms; /* armed as the request goes out */
    c->last_data = now;
    if (with_deadlines) {
        c->connect_deadline = r->connect_timeout_ms ? now + r->connect_timeout_ms : 0;
        c->total_deadline = r->timeout_ms ? now + r->timeout_ms : 0;
    }
}

void
upstream__call_link(struct upstream_call *c)
{
    struct upstream *u = c->u;

    c->prev = NULL;
    c->next = u->calls;
    if (u->calls)
        u->calls->prev = c;
    u->calls = c;
    if (u->n_calls++ == 0)
        uv_timer_start(&u->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
}

char *
upstream_url_join(const char *base, const char *path)
{
    /* the path ends where the query or the fragment begins (RFC 3986 3.3); the
     * authority cannot hold '?' or '#' */
    const char *auth = strstr(base, "://");
    auth = auth ? auth + 3 : base;
    size_t cut = (size_t)(auth - base) + strcspn(auth, "?#");
    size_t plen = strlen(path), blen = strlen(base);
    char *url = malloc(blen + plen + 1);

    if (!url)
        abort();
    memcpy(url, base, cut);
    memcpy(url + cut, path, plen);
    memcpy(url + cut + plen, base + cut, blen - cut + 1);
    return url;
}

struct upstream_call *
upstream_start(struct upstream *u, struct upstream_request *r)
{
    struct upstream_call *c = NULL;

    /* the first transport that takes the URL; the last takes any, or fails */
    for (size_t i = 0; i < N_TRANSPORTS && !c && !u->destroying; i++)
        c = transports[i]->start(u, r);
    if (!c) {
        free(r->body); /* taken in every case */
        r->body = NULL;
    }
    return c;
}

void
upstream_cancel(struct upstream_call *c)
{
    if (c)
        call_free(c);
}

void
upstream_unpause(struct upstream_call *c)
{
    if (!c->paused)
        return;
    c->paused = 0;
    c->last_data = uv_now(c->u->loop);
    c->tp->unpause(c);
}

size_t
upstream_active(const struct upstream *u)
{
    return u->n_calls;
}
