/* upstream.c - the upstream client's API, deadlines, and its curl transport: calls on a curl
 * multi handle driven by a libuv loop. Plain http:// URLs go to upstream_h1.c instead. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "upstream-int.h"

#define SWEEP_MS 50 /* resolution of the first-byte and idle deadlines */
#define MAX_CACHED_CONNECTIONS 512

/* A socket curl uses, watched by a uv_poll. libuv's uv_poll_start and uv_poll_stop
 * each cost epoll_ctl calls, so the watcher changes only when the events do, and it
 * is kept (parked) while its connection idles in curl's cache: a reused connection
 * costs no syscall here. Freed when curl closes the socket
 * (CURLOPT_CLOSESOCKETFUNCTION). */
struct upstream_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    int events; /* UV_* the poll watches now; 0 = stopped */
    int parked; /* curl said CURL_POLL_REMOVE: stop at the next event */
    struct upstream *u;
    struct upstream_sock *prev, *next;
};

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

/* curl's result codes folded into our few kinds. */
static enum upstream_error
error_from_curl(CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return UPSTREAM_OK;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return UPSTREAM_ERR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return UPSTREAM_ERR_TIMEOUT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
        return UPSTREAM_ERR_TLS;
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR: /* connected, then the peer hung up (curl retried reused ones) */
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
        return UPSTREAM_ERR_CLOSED;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_WRITE_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
        return UPSTREAM_ERR_INTERNAL;
    default:
        return UPSTREAM_ERR_PROTOCOL;
    }
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

/* Unlinks and frees a call that is off the transports. */
static void
call_free(struct upstream_call *c)
{
    struct upstream *u = c->u;

    unlink_call(c);
    /* a handle that ran to its end is reset and reused: curl_easy_init costs more */
    if (!c->easy) {
        upstream__h1_detach(c);
    } else if (c->reusable && !u->destroying && u->n_easy < UPSTREAM_EASY_POOL) {
        curl_easy_reset(c->easy);
        u->easy_pool[u->n_easy++] = c->easy;
    } else {
        curl_easy_cleanup(c->easy);
    }
    curl_slist_free_all(c->headers);
    free(c->body);
    free(c->head);
    free(c);
}

void
upstream__call_finish(struct upstream_call *c, enum upstream_error err, const char *detail)
{
    struct upstream_callbacks cb = c->cb;
    void *ctx = c->ctx;
    char buf[CURL_ERROR_SIZE];

    snprintf(buf, sizeof(buf), "%s", detail ? detail : "");
    if (c->easy)
        curl_multi_remove_handle(c->u->multi, c->easy);
    call_free(c);
    cb.on_done(ctx, err, buf[0] ? buf : NULL);
}

static void
check_done(struct upstream *u)
{
    CURLMsg *msg;
    int pending;

    while ((msg = curl_multi_info_read(u->multi, &pending))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        struct upstream_call *c = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&c);
        enum upstream_error err = c->forced ? c->forced : error_from_curl(rc);
        if (rc == CURLE_OK && !c->got_headers)
            err = UPSTREAM_ERR_PROTOCOL;
        c->reusable = err == UPSTREAM_OK && !c->ever_paused;
        upstream__call_finish(c, err, rc != CURLE_OK ? (c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc))
                                           : NULL);
    }
}

void
upstream__after_activity(struct upstream *u)
{
    check_done(u);
    if (u->after)
        u->after(u->after_ctx);
}

void
upstream__handle_closed(struct upstream *u)
{
    if (--u->open_handles == 0 && u->destroying) {
        void (*cb)(void *) = u->on_closed;
        void *ctx = u->closed_ctx;
        free(u->rbuf);
        free(u);
        if (cb)
            cb(ctx);
    }
}

static void
on_handle_closed(uv_handle_t *h)
{
    struct upstream *u;

    if (h->type == UV_POLL) {
        struct upstream_sock *s = h->data;
        u = s->u;
        free(s);
    } else {
        u = h->data;
    }
    upstream__handle_closed(u);
}

static void
on_poll(uv_poll_t *p, int status, int events)
{
    struct upstream_sock *s = p->data;
    struct upstream *u = s->u;
    int flags = 0;
    int running;

    if (s->parked) {
        /* an idle connection closed by the backend, most likely: curl finds out when
         * it next checks the connection; until then do not spin on it */
        uv_poll_stop(&s->poll);
        s->events = 0;
        return;
    }
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(u->multi, s->fd, flags, &running);
    upstream__after_activity(u);
}

static void
on_curl_timer(uv_timer_t *t)
{
    struct upstream *u = t->data;
    int running;

    curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    upstream__after_activity(u);
}

static struct upstream_sock *
sock_by_fd(struct upstream *u, curl_socket_t fd)
{
    return fd >= 0 && (size_t)fd < u->n_by_fd ? u->by_fd[fd] : NULL;
}

/* Unlinks s and closes its watcher (freed in on_handle_closed). */
static void
sock_close(struct upstream *u, struct upstream_sock *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        u->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if ((size_t)s->fd < u->n_by_fd && u->by_fd[s->fd] == s)
        u->by_fd[s->fd] = NULL;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
}

/* CURLMOPT_SOCKETFUNCTION: watch s as curl asks. */
static int
curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct upstream *u = userp;
    struct upstream_sock *s = socketp;

    if (what == CURL_POLL_REMOVE) {
        /* the connection idles in curl's cache (or is about to close): stop
         * watching, keep the watcher for its reuse */
        if (s) {
            s->parked = 1;
            uv_unref((uv_handle_t *)&s->poll); /* an idle connection keeps no loop alive */
            curl_multi_assign(u->multi, fd, NULL);
        }
        return 0;
    }
    if (!s && (s = sock_by_fd(u, fd)) != NULL) {
        curl_multi_assign(u->multi, fd, s);
    } else if (!s) {
        if (fd < 0)
            return -1;
        s = calloc(1, sizeof(*s));
        if (!s)
            abort();
        s->fd = fd;
        s->u = u;
        if (uv_poll_init_socket(u->loop, &s->poll, fd) < 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        u->open_handles++;
        s->next = u->socks;
        if (u->socks)
            u->socks->prev = s;
        u->socks = s;
        if ((size_t)fd >= u->n_by_fd) {
            size_t n = ((size_t)fd + 64) & ~(size_t)63;
            struct upstream_sock **t = realloc(u->by_fd, n * sizeof(*t));
            if (!t)
                abort();
            memset(t + u->n_by_fd, 0, (n - u->n_by_fd) * sizeof(*t));
            u->by_fd = t;
            u->n_by_fd = n;
        }
        u->by_fd[fd] = s;
        curl_multi_assign(u->multi, fd, s);
    }
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    if (s->parked) {
        s->parked = 0;
        uv_ref((uv_handle_t *)&s->poll);
    }
    if (events != s->events) {
        s->events = events;
        if (events)
            uv_poll_start(&s->poll, events, on_poll);
        else
            uv_poll_stop(&s->poll);
    }
    return 0;
}

/* CURLOPT_CLOSESOCKETFUNCTION: the watcher goes before the fd (libuv needs that
 * order), and the fd number may come back as another socket. */
static int
curl_close_cb(void *userp, curl_socket_t fd)
{
    struct upstream *u = userp;
    struct upstream_sock *s = sock_by_fd(u, fd);

    if (s)
        sock_close(u, s);
    return close(fd);
}

/* CURLMOPT_TIMERFUNCTION: one timer; curl_multi_socket_action runs from its callback. */
static int
curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct upstream *u = userp;

    if (timeout_ms < 0)
        uv_timer_stop(&u->timer);
    else
        uv_timer_start(&u->timer, on_curl_timer, (uint64_t)timeout_ms, 0);
    return 0;
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

static int
is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
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

static size_t
header_cb(char *buf, size_t size, size_t n, void *userp)
{
    struct upstream_call *c = userp;
    size_t len = size * n;
    size_t end = len;

    while (end > 0 && is_space(buf[end - 1]))
        end--;
    if (end == 0) {
        long status = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && !c->got_headers) {
            c->got_headers = 1;
            c->last_data = uv_now(c->u->loop);
            c->cb.on_headers_done(c->ctx, status);
        }
        return len;
    }
    if (end >= 5 && !memcmp(buf, "HTTP/", 5))
        return len; /* a status line: the status comes from CURLINFO_RESPONSE_CODE */
    if (c->got_headers)
        return len; /* trailers are not relayed */
    /* the line without its line end: a bare CR before it stays, and is refused */
    size_t ll = len;
    if (ll > 0 && buf[ll - 1] == '\n')
        ll--;
    if (ll > 0 && buf[ll - 1] == '\r')
        ll--;
    const char *name, *value;
    size_t nlen, vlen;
    int r = upstream__header_line(buf, ll, &name, &nlen, &value, &vlen);
    if (r < 0) {
        c->forced = UPSTREAM_ERR_PROTOCOL;
        return 0; /* curl ends the transfer */
    }
    if (r == 0 && c->cb.on_header)
        c->cb.on_header(c->ctx, name, nlen, value, vlen);
    return len;
}

static size_t
write_cb(char *buf, size_t size, size_t n, void *userp)
{
    struct upstream_call *c = userp;
    size_t len = size * n;

    c->last_data = uv_now(c->u->loop);
    if (!c->got_headers) {
        /* Body without a header block (should not happen over HTTP/1.x). */
        c->forced = UPSTREAM_ERR_PROTOCOL;
        return CURL_WRITEFUNC_ERROR;
    }
    int taken = c->cb.on_data(c->ctx, buf, len);
    if (taken < 0) {
        c->forced = UPSTREAM_ERR_TOO_LARGE;
        return CURL_WRITEFUNC_ERROR;
    }
    if (taken > 0) {
        c->paused = 1;
        c->ever_paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    return len;
}

/* CURLOPT_PREREQFUNCTION: connected (TLS included), the request goes out now. */
static int
prereq_cb(void *userp, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    (void)primary_ip, (void)local_ip, (void)primary_port, (void)local_port;
    upstream__request_sent(userp);
    return CURL_PREREQFUNC_OK;
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
    u->multi = curl_multi_init();
    if (!u->multi) {
        free(u);
        return NULL;
    }
    uv_timer_init(loop, &u->timer);
    uv_timer_init(loop, &u->sweep);
    u->timer.data = u;
    u->sweep.data = u;
    u->open_handles = 2;
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, (long)MAX_CACHED_CONNECTIONS);
    upstream__h1_init(u);
    return u;
}

void
upstream_destroy(struct upstream *u, void (*on_closed)(void *), void *ctx)
{
    if (!u)
        return;
    u->destroying = 1; /* before call_free: nothing goes back to the pool now */
    while (u->calls) {
        if (u->calls->easy)
            curl_multi_remove_handle(u->multi, u->calls->easy);
        call_free(u->calls);
    }
    upstream__h1_destroy(u);
    while (u->n_easy)
        curl_easy_cleanup(u->easy_pool[--u->n_easy]);
    u->on_closed = on_closed;
    u->closed_ctx = ctx;
    /* Cleanup may still call curl_socket_cb to drop cached connections' sockets. */
    curl_multi_cleanup(u->multi);
    u->multi = NULL;
    while (u->socks)
        sock_close(u, u->socks);
    free(u->by_fd);
    u->by_fd = NULL;
    u->n_by_fd = 0;
    uv_close((uv_handle_t *)&u->timer, on_handle_closed);
    uv_close((uv_handle_t *)&u->sweep, on_handle_closed);
}

/* Puts c on u's list of running calls (the sweep runs while the list is not empty). */
static void
link_call(struct upstream_call *c)
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

/* curl's list of the request's header lines, plus "Expect:" (an empty value: curl
 * then sends no Expect: 100-continue and waits for no interim answer). */
static struct curl_slist *
header_list(const char *block)
{
    struct curl_slist *h = curl_slist_append(NULL, "Expect:");
    char line[1024];

    while (block && *block) {
        size_t n = strcspn(block, "\r\n");
        if (n > 0 && n < sizeof(line)) {
            memcpy(line, block, n);
            line[n] = '\0';
            h = curl_slist_append(h, line);
        }
        block += n;
        block += strspn(block, "\r\n");
    }
    explicit_bzero(line, sizeof(line)); /* it may have held the backend's key */
    return h;
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
    struct upstream_call *c = calloc(1, sizeof(*c));

    if (!c)
        abort();
    c->u = u;
    c->body = r->body;
    c->body_len = r->body_len;
    c->cb = r->cb;
    c->ctx = r->ctx;
    c->idle_timeout_ms = r->idle_timeout_ms;
    r->body = NULL;

    uint64_t now = uv_now(u->loop);
    c->first_byte_timeout_ms = r->first_byte_timeout_ms; /* armed as the request goes out */
    c->last_data = now;
    if (!u->destroying) {
        c->connect_deadline = r->connect_timeout_ms ? now + r->connect_timeout_ms : 0;
        c->total_deadline = r->timeout_ms ? now + r->timeout_ms : 0;
        link_call(c);
        if (upstream__h1_start(c, r->url, r->headers) == 0)
            return c;
        unlink_call(c); /* curl's: it keeps the connect and total deadlines itself */
        c->connect_deadline = c->total_deadline = 0;
    }
    c->easy = u->n_easy ? u->easy_pool[--u->n_easy] : curl_easy_init();
    if (!c->easy)
        goto fail;

    c->headers = header_list(r->headers);

    CURL *e = c->easy;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, prereq_cb);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, curl_close_cb);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, u);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)r->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
    if (curl_multi_add_handle(u->multi, e) != CURLM_OK)
        goto fail;
    link_call(c);
    return c;
fail:
    if (c->easy)
        curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->headers);
    free(c->body);
    free(c);
    return NULL;
}

void
upstream_cancel(struct upstream_call *c)
{
    if (!c)
        return;
    if (c->easy)
        curl_multi_remove_handle(c->u->multi, c->easy);
    call_free(c);
}

void
upstream_unpause(struct upstream_call *c)
{
    if (!c->paused)
        return;
    c->paused = 0;
    c->last_data = uv_now(c->u->loop);
    if (c->easy)
        curl_easy_pause(c->easy, CURLPAUSE_CONT);
    else
        upstream__h1_unpause(c);
}

size_t
upstream_active(const struct upstream *u)
{
    return u->n_calls;
}
