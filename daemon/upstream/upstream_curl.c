/* upstream_curl.c - the upstream client's curl transport: calls on a curl multi handle
 * driven by the client's libuv loop (socket API: uv_poll per socket, one uv_timer), for
 * the URLs the plain-HTTP transport does not take (https://, and any it refuses). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "upstream-int.h"

#define MAX_CACHED_CONNECTIONS 512
#define EASY_POOL 64 /* finished curl handles kept for the next calls */

/* a call's detail is curl's CURLOPT_ERRORBUFFER */
_Static_assert(UPSTREAM_DETAIL_MAX >= CURL_ERROR_SIZE, "detail holds curl's error text");

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

/* The transport's state on one client. */
struct upstream_curl {
    CURLM *multi;
    uv_timer_t timer; /* curl's timeout */
    struct upstream_sock *socks;
    struct upstream_sock **by_fd; /* every sock in socks, by fd */
    size_t n_by_fd;
    CURL *easy_pool[EASY_POOL];
    unsigned n_easy;
};

/* One call: the common part first (upstream-int.h), then curl's. */
struct curl_call {
    struct upstream_call super;
    CURL *easy;
    struct curl_slist *headers; /* the request's header lines */
    int reusable; /* ended normally, never paused: its easy handle may serve another call */
};

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

static void
check_done(struct upstream *u)
{
    CURLMsg *msg;
    int pending;

    while ((msg = curl_multi_info_read(u->curl->multi, &pending))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode rc = msg->data.result;
        struct curl_call *cc = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&cc);
        struct upstream_call *c = &cc->super;
        enum upstream_error err = c->forced ? c->forced : error_from_curl(rc);
        if (rc == CURLE_OK && !c->got_headers)
            err = UPSTREAM_ERR_PROTOCOL;
        cc->reusable = err == UPSTREAM_OK && !c->ever_paused;
        upstream__call_finish(c, err, rc != CURLE_OK ? (c->detail[0] ? c->detail : curl_easy_strerror(rc))
                                           : NULL);
    }
}

/* After curl ran: its finished calls, then the client's after. */
static void
activity(struct upstream *u)
{
    check_done(u);
    upstream__after_activity(u);
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
    curl_multi_socket_action(u->curl->multi, s->fd, flags, &running);
    activity(u);
}

static void
on_curl_timer(uv_timer_t *t)
{
    struct upstream *u = t->data;
    int running;

    curl_multi_socket_action(u->curl->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    activity(u);
}

static struct upstream_sock *
sock_by_fd(struct upstream *u, curl_socket_t fd)
{
    return fd >= 0 && (size_t)fd < u->curl->n_by_fd ? u->curl->by_fd[fd] : NULL;
}

/* Unlinks s and closes its watcher (freed in on_handle_closed). */
static void
sock_close(struct upstream *u, struct upstream_sock *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        u->curl->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if ((size_t)s->fd < u->curl->n_by_fd && u->curl->by_fd[s->fd] == s)
        u->curl->by_fd[s->fd] = NULL;
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
            curl_multi_assign(u->curl->multi, fd, NULL);
        }
        return 0;
    }
    if (!s && (s = sock_by_fd(u, fd)) != NULL) {
        curl_multi_assign(u->curl->multi, fd, s);
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
        s->next = u->curl->socks;
        if (u->curl->socks)
            u->curl->socks->prev = s;
        u->curl->socks = s;
        if ((size_t)fd >= u->curl->n_by_fd) {
            size_t n = ((size_t)fd + 64) & ~(size_t)63;
            struct upstream_sock **t = realloc(u->curl->by_fd, n * sizeof(*t));
            if (!t)
                abort();
            memset(t + u->curl->n_by_fd, 0, (n - u->curl->n_by_fd) * sizeof(*t));
            u->curl->by_fd = t;
            u->curl->n_by_fd = n;
        }
        u->curl->by_fd[fd] = s;
        curl_multi_assign(u->curl->multi, fd, s);
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
        uv_timer_stop(&u->curl->timer);
    else
        uv_timer_start(&u->curl->timer, on_curl_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static int
is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

static size_t
header_cb(char *buf, size_t size, size_t n, void *userp)
{
    struct curl_call *cc = userp;
    struct upstream_call *c = &cc->super;
    size_t len = size * n;
    size_t end = len;

    while (end > 0 && is_space(buf[end - 1]))
        end--;
    if (end == 0) {
        long status = 0;
        curl_easy_getinfo(cc->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status > 599 && !c->got_headers) {
            c->forced = UPSTREAM_ERR_PROTOCOL; /* HTTP has no such status */
            return 0;
        }
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
    struct curl_call *cc = userp;
    struct upstream_call *c = &cc->super;
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
    struct curl_call *cc = userp;

    (void)primary_ip, (void)local_ip, (void)primary_port, (void)local_port;
    upstream__request_sent(&cc->super);
    return CURL_PREREQFUNC_OK;
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

static int
tp_init(struct upstream *u)
{
    struct upstream_curl *t = calloc(1, sizeof(*t));

    if (!t)
        abort();
    t->multi = curl_multi_init();
    if (!t->multi) {
        free(t);
        return -1;
    }
    u->curl = t;
    uv_timer_init(u->loop, &t->timer);
    t->timer.data = u;
    u->open_handles++;
    curl_multi_setopt(t->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
    curl_multi_setopt(t->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(t->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    curl_multi_setopt(t->multi, CURLMOPT_TIMERDATA, u);
    curl_multi_setopt(t->multi, CURLMOPT_MAXCONNECTS, (long)MAX_CACHED_CONNECTIONS);
    return 0;
}

static struct upstream_call *
tp_start(struct upstream *u, struct upstream_request *r)
{
    struct upstream_curl *t = u->curl;
    struct curl_call *cc = calloc(1, sizeof(*cc));

    if (!cc)
        abort();
    /* curl keeps the connect and total deadlines itself */
    upstream__call_init(&cc->super, &upstream__curl_transport, u, r, 0);
    cc->easy = t->n_easy ? t->easy_pool[--t->n_easy] : curl_easy_init();
    if (!cc->easy)
        goto fail;

    cc->headers = header_list(r->headers);

    CURL *e = cc->easy;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, cc);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, cc->super.body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)cc->super.body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, cc->headers);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, cc);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, cc);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, prereq_cb);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, cc);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, cc->super.detail);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, curl_close_cb);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, u);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)r->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
    if (curl_multi_add_handle(t->multi, e) != CURLM_OK)
        goto fail;
    upstream__call_link(&cc->super);
    return &cc->super;
fail:
    if (cc->easy)
        curl_easy_cleanup(cc->easy);
    curl_slist_free_all(cc->headers);
    free(cc->super.body);
    free(cc);
    return NULL;
}

/* Takes c off the multi handle and frees it; a handle that ran to its end is reset and
 * reused (curl_easy_init costs more). */
static void
tp_release(struct upstream_call *c)
{
    struct curl_call *cc = (struct curl_call *)c;
    struct upstream_curl *t = c->u->curl;

    curl_multi_remove_handle(t->multi, cc->easy);
    if (cc->reusable && !c->u->destroying && t->n_easy < EASY_POOL) {
        curl_easy_reset(cc->easy);
        t->easy_pool[t->n_easy++] = cc->easy;
    } else {
        curl_easy_cleanup(cc->easy);
    }
    curl_slist_free_all(cc->headers);
    free(cc);
}

static void
tp_unpause(struct upstream_call *c)
{
    curl_easy_pause(((struct curl_call *)c)->easy, CURLPAUSE_CONT);
}

static void
tp_shutdown(struct upstream *u)
{
    struct upstream_curl *t = u->curl;

    while (t->n_easy)
        curl_easy_cleanup(t->easy_pool[--t->n_easy]);
    /* Cleanup may still call curl_socket_cb to drop cached connections' sockets. */
    curl_multi_cleanup(t->multi);
    t->multi = NULL;
    while (t->socks)
        sock_close(u, t->socks);
    free(t->by_fd);
    t->by_fd = NULL;
    t->n_by_fd = 0;
    uv_close((uv_handle_t *)&t->timer, on_handle_closed);
}

static void
tp_free(struct upstream *u)
{
    free(u->curl);
    u->curl = NULL;
}

const struct upstream_transport upstream__curl_transport = {
    .name = "curl",
    .init = tp_init,
    .start = tp_start,
    .shutdown = tp_shutdown,
    .free = tp_free,
    .release = tp_release,
    .unpause = tp_unpause,
};
