/* upstream_h1.c - the upstream client's plain-HTTP transport: HTTP/1.1 over libuv TCP handles.
 *
 * Backends are nearly always reached over plain http:// on a local network, and
 * for that case curl's generality was the largest single cost of a proxied request
 * (a third of triaged's CPU: its state machine, timers and socket callbacks around
 * a few hundred bytes of HTTP). This transport does only what a backend exchange
 * needs: one POST, a response framed by Content-Length, chunked encoding or the
 * connection's end, and kept-alive connections reused per origin. https:// and
 * anything unusual in a URL (user info) still go to curl (upstream_curl.c).
 *
 * Each read lands in one buffer per client (its rbuf) and is parsed at once, so an
 * open stream holds no buffer of its own; only bytes a paused call has not taken
 * yet are copied aside (the pause contract of upstream.h: they come again). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "upstream-int.h"

#define READ_BUF (64 * 1024)
#define MAX_HEAD (64 * 1024)          /* a response header block larger than this is refused */
#define MAX_IDLE 512                  /* kept-alive connections per client */
#define RESOLVE_TTL_MS (60 * 1000)    /* how long a host name's address is reused */

/* One backend address: its kept-alive connections and its last resolved address. */
struct h1_origin {
    char *authority; /* host[:port] as the URL writes it: the key and the Host header */
    char *host;      /* without brackets, for getaddrinfo */
    char port[8];
    struct sockaddr_storage addr;
    uint64_t resolved_at; /* loop ms; 0 = never */
    struct h1_conn *idle; /* most recently used first */
    struct h1_origin *next;
};

enum conn_state { C_RESOLVING, C_CONNECTING, C_ACTIVE, C_IDLE, C_CLOSING };

/* Where the response parser is. */
enum parse_state {
    P_HEAD,       /* status line and headers, gathered in k->head */
    P_LENGTH,     /* body of k->remaining bytes */
    P_CHUNK_SIZE, /* hex digits of a chunk size */
    P_CHUNK_EXT,  /* ";ext" after a size, to the end of the line */
    P_CHUNK_DATA, /* k->remaining bytes of a chunk */
    P_CHUNK_END,  /* the CRLF after a chunk */
    P_TRAILER,    /* trailer lines after the last chunk, to an empty one */
    P_CLOSE,      /* body until the connection ends */
};

struct h1_conn {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    uv_getaddrinfo_t resolve;
    struct upstream *u;
    struct h1_origin *origin;
    struct upstream_call *call; /* NULL when idle or closing */
    struct h1_conn *prev, *next; /* in origin->idle */
    enum conn_state state;
    int resolving;  /* a getaddrinfo is out: the handle closes when it returns */
    int reused;     /* served a call before: the backend may have closed it meanwhile */
    int got_bytes;  /* any byte of the current response */
    int keep_alive; /* the response allows another request on the connection */
    int writing;    /* a uv_write of the request is out: its buffers must stay */
    int corked;     /* on u's cork list: its request goes out at upstream_uncork */
    struct h1_conn *cork_prev, *cork_next;

    enum parse_state ps;
    uint64_t remaining;
    int digits;        /* hex digits of the chunk size so far */
    size_t line_len;   /* bytes of the current trailer line */
    int chunked, has_length, http10, conn_close, conn_keep;
    long status;
    char *head;        /* a header block split across reads, gathered */
    size_t head_len, head_cap;
    char *saved;       /* input a paused call has not taken */
    size_t saved_len, saved_cap;
};

/* The transport's state on one client (struct upstream's h1). */
struct upstream_h1 {
    struct h1_origin *origins;     /* scheme-less host:port of every backend seen */
    size_t n_idle;                 /* kept-alive connections waiting for a call */
    uv_idle_t resume;              /* feeds unpaused calls their saved bytes */
    struct upstream_call *resume_head;
    char *rbuf;                    /* every read lands here, and is consumed at once */
    int corked;                    /* requests wait on the cork list (upstream_cork) */
    struct h1_conn *cork_head, *cork_tail;
    unsigned n_cork;               /* requests on it */
};

/* One call: the common part first (upstream-int.h), then this transport's. */
struct h1_call {
    struct upstream_call super;
    struct h1_conn *conn;         /* the connection carrying it, NULL while none */
    struct h1_origin *origin;
    char *head;                   /* the request line and headers, kept for a retry */
    size_t head_len;
    int retried;                  /* already re-sent once on a fresh connection */
    int resuming;                 /* on resume_head, to be fed its saved bytes */
    struct upstream_call *resume_next;
};

/* c's own part: every call this file sees is one of its own. */
static struct h1_call *
h1c(struct upstream_call *c)
{
    return (struct h1_call *)c;
}

enum feed_result { FEED_MORE, FEED_DONE, FEED_PAUSED, FEED_ERROR, FEED_REFUSED };

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void conn_open(struct upstream_call *c);
static void resume_push(struct upstream_call *c);

static void *
xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (!q)
        abort(); /* out of memory aborts, project-wide */
    return q;
}

/* ---- connections ---------------------------------------------------------------- */

static void
on_conn_closed(uv_handle_t *h)
{
    struct h1_conn *k = h->data;
    struct upstream *u = k->u;

    free(k->head);
    free(k->saved);
    free(k);
    upstream__handle_closed(u);
}

static void
idle_unlink(struct h1_conn *k)
{
    if (k->prev)
        k->prev->next = k->next;
    else
        k->origin->idle = k->next;
    if (k->next)
        k->next->prev = k->prev;
    k->prev = k->next = NULL;
    k->u->h1->n_idle--;
}

static void
cork_unlink(struct h1_conn *k)
{
    struct upstream *u = k->u;

    if (k->cork_prev)
        k->cork_prev->cork_next = k->cork_next;
    else
        u->h1->cork_head = k->cork_next;
    if (k->cork_next)
        k->cork_next->cork_prev = k->cork_prev;
    else
        u->h1->cork_tail = k->cork_prev;
    k->cork_prev = k->cork_next = NULL;
    k->corked = 0;
    u->h1->n_cork--;
}

/* Closes k (whatever it was doing) and takes it off its call. */
static void
conn_close(struct h1_conn *k)
{
    if (k->state == C_CLOSING)
        return;
    if (k->state == C_IDLE)
        idle_unlink(k);
    if (k->corked)
        cork_unlink(k);
    if (k->call) {
        h1c(k->call)->conn = NULL;
        k->call = NULL;
    }
    k->state = C_CLOSING;
    if (k->resolving) {
        uv_cancel((uv_req_t *)&k->resolve); /* on_resolved closes the handle */
        return;
    }
    uv_close((uv_handle_t *)&k->tcp, on_conn_closed);
}

static void
parser_reset(struct h1_conn *k)
{
    k->ps = P_HEAD;
    k->remaining = 0;
    k->digits = 0;
    k->line_len = 0;
    k->chunked = k->has_length = k->http10 = k->conn_close = k->conn_keep = 0;
    k->status = 0;
    k->head_len = 0;
    k->saved_len = 0;
    k->got_bytes = 0;
}

/* Ends c's exchange with an error reported from the loop later, never from inside
 * upstream_start (the caller has not seen the call yet). */
static void
defer_error(struct upstream_call *c, enum upstream_error err, const char *detail)
{
    c->forced = err;
    snprintf(c->detail, sizeof(c->detail), "%s", detail);
    resume_push(c);
}

/* Closes k and ends its call with err, the detail saying "<what> <host:port>: <why>".
 * deferred: from a path that may run inside upstream_start (see defer_error). */
static void
conn_fail(struct h1_conn *k, enum upstream_error err, int deferred, const char *what,
          const char *why)
{
    struct upstream_call *c = k->call;
    char detail[192];

    snprintf(detail, sizeof(detail), "%s %s: %s", what, k->origin->authority, why);
    conn_close(k);
    if (deferred)
        defer_error(c, err, detail);
    else
        upstream__call_finish(c, err, detail);
}

/* ---- the request ---------------------------------------------------------------- */

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct h1_conn *k = h->data;

    (void)suggested;
    *buf = uv_buf_init(k->u->h1->rbuf, READ_BUF);
}

/* The backend ended the connection (or it failed) while c was on it. A reused
 * connection that ends before any response byte was most likely closed by the
 * backend while idle: the request goes again, once, on a new one. */
static void
conn_lost(struct h1_conn *k, int err)
{
    struct upstream_call *c = k->call;

    if (k->state == C_ACTIVE && k->ps == P_CLOSE && err == UV_EOF) {
        conn_close(k); /* the body ends with the connection: done */
        upstream__call_finish(c, UPSTREAM_OK, NULL);
        return;
    }
    if (k->reused && !k->got_bytes && !h1c(c)->retried) {
        h1c(c)->retried = 1;
        conn_close(k);
        conn_open(c);
        return;
    }
    conn_fail(k, UPSTREAM_ERR_CLOSED, 0, k->got_bytes ? "connection to" : "nothing received from",
              err == UV_EOF ? "closed by the backend" : uv_strerror(err));
}

static void
on_write(uv_write_t *req, int status)
{
    struct h1_conn *k = req->data;

    k->writing = 0;
    if (status == 0 || status == UV_ECANCELED || k->state != C_ACTIVE || !k->call)
        return;
    conn_lost(k, status);
    upstream__after_activity(k->u);
}

/* Sends c's request on k: what the socket takes now, the rest from the loop. The
 * request head and body live in the call until it ends. Returns 0, or a libuv error
 * (nothing was sent). */
static int
send_request(struct h1_conn *k)
{
    struct upstream_call *c = k->call;
    uv_buf_t b[2] = {uv_buf_init(h1c(c)->head, (unsigned)h1c(c)->head_len),
                     uv_buf_init(c->body ? c->body : "", (unsigned)c->body_len)};
    unsigned nb = c->body_len ? 2 : 1;
    size_t total = h1c(c)->head_len + (nb == 2 ? c->body_len : 0);
    int n = uv_try_write((uv_stream_t *)&k->tcp, b, nb);

    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    if (n < 0)
        return n;
    if ((size_t)n == total)
        return 0;
    /* the rest when the socket can take it */
    size_t skip = (size_t)n;
    unsigned first = 0;
    if (skip >= b[0].len) {
        skip -= b[0].len;
        first = 1;
    }
    b[first].base += skip;
    b[first].len -= skip;
    k->write.data = k;
    int rc = uv_write(&k->write, (uv_stream_t *)&k->tcp, b + first, nb - first, on_write);
    k->writing = rc == 0;
    return rc;
}

/* Sends the request of the call on k; a failed send counts as a lost connection
 * (retried once when k was reused). */
static void
conn_send(struct h1_conn *k)
{
    struct upstream_call *c = k->call;

    upstream__request_sent(c);
    int rc = send_request(k);

    if (rc < 0) {
        if (k->reused && !h1c(c)->retried) {
            h1c(c)->retried = 1;
            conn_close(k);
            conn_open(c);
            return;
        }
        conn_fail(k, UPSTREAM_ERR_CLOSED, 1, "sending to", uv_strerror(rc));
    }
}

/* Sends every held request, in order. */
static void
cork_flush(struct upstream *u)
{
    struct h1_conn *k;

    while ((k = u->h1->cork_head) != NULL) {
        cork_unlink(k);
        conn_send(k);
    }
}

/* Puts c on connection k and sends its request, or while u is corked queues it (and
 * sends the queue when it is full). */
static void
conn_attach(struct h1_conn *k, struct upstream_call *c)
{
    struct upstream *u = k->u;

    k->call = c;
    h1c(c)->conn = k;
    c->connect_deadline = 0;
    parser_reset(k);
    k->state = C_ACTIVE;
    if (!u->h1->corked) {
        conn_send(k);
        return;
    }
    k->corked = 1;
    k->cork_prev = u->h1->cork_tail;
    if (u->h1->cork_tail)
        u->h1->cork_tail->cork_next = k;
    else
        u->h1->cork_head = k;
    u->h1->cork_tail = k;
    if (++u->h1->n_cork == UPSTREAM_CORK_MAX)
        cork_flush(u);
}

static void
on_connect(uv_connect_t *req, int status)
{
    struct h1_conn *k = req->data;
    struct upstream_call *c = k->call;

    if (k->state != C_CONNECTING || !c)
        return; /* closed meanwhile */
    if (status < 0) {
        k->origin->resolved_at = 0; /* the name may point elsewhere now */
        conn_fail(k, UPSTREAM_ERR_CONNECT, 0, "connect to", uv_strerror(status));
        upstream__after_activity(k->u);
        return;
    }
    uv_tcp_nodelay(&k->tcp, 1);
    uv_tcp_keepalive(&k->tcp, 1, 60);
    uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
    conn_attach(k, c);
    upstream__after_activity(k->u);
}

static void
connect_to(struct h1_conn *k, const struct sockaddr *addr)
{
    k->state = C_CONNECTING;
    k->connect.data = k;
    int rc = uv_tcp_connect(&k->connect, &k->tcp, addr, on_connect);
    if (rc < 0)
        conn_fail(k, UPSTREAM_ERR_CONNECT, 1, "connect to", uv_strerror(rc));
}

static void
on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct h1_conn *k = req->data;

    k->resolving = 0;
    if (k->state == C_CLOSING) {
        uv_freeaddrinfo(res);
        uv_close((uv_handle_t *)&k->tcp, on_conn_closed);
        return;
    }
    if (status < 0 || !res) {
        uv_freeaddrinfo(res);
        conn_fail(k, UPSTREAM_ERR_CONNECT, 0, "cannot resolve", uv_strerror(status));
        upstream__after_activity(k->u);
        return;
    }
    memcpy(&k->origin->addr, res->ai_addr, res->ai_addrlen);
    k->origin->resolved_at = uv_now(k->u->loop) | 1;
    uv_freeaddrinfo(res);
    connect_to(k, (const struct sockaddr *)&k->origin->addr);
}

/* Opens a new connection for c: the origin's address when it is fresh, else a
 * lookup first (libuv's thread pool: the loop never waits on DNS). */
static void
conn_open(struct upstream_call *c)
{
    struct upstream *u = c->u;
    struct h1_origin *o = h1c(c)->origin;
    struct h1_conn *k = calloc(1, sizeof(*k));

    if (!k)
        abort();
    k->u = u;
    k->origin = o;
    k->call = c;
    h1c(c)->conn = k;
    uv_tcp_init(u->loop, &k->tcp);
    k->tcp.data = k;
    u->open_handles++;
    if (o->resolved_at && uv_now(u->loop) - o->resolved_at < RESOLVE_TTL_MS) {
        connect_to(k, (const struct sockaddr *)&o->addr);
        return;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    k->state = C_RESOLVING;
    k->resolve.data = k;
    k->resolving = 1;
    int rc = uv_getaddrinfo(u->loop, &k->resolve, on_resolved, o->host, o->port, &hints);
    if (rc < 0) {
        k->resolving = 0;
        conn_fail(k, UPSTREAM_ERR_CONNECT, 1, "cannot resolve", uv_strerror(rc));
    }
}

/* ---- the response --------------------------------------------------------------- */

/* Case-insensitive: does the comma-separated list v (n bytes) contain token? */
static int
has_token(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token), i = 0;

    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < n && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tl && strncasecmp(v + start, token, tl) == 0)
            return 1;
    }
    return 0;
}

/* The last token of a comma-separated list is token (Transfer-Encoding: chunked). */
static int
last_token_is(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token);

    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return n >= tl && strncasecmp(v + n - tl, token, tl) == 0 &&
           (n == tl || v[n - tl - 1] == ',' || v[n - tl - 1] == ' ');
}

/* Where the header block in buf (len bytes, searched from index from) ends: the index
 * after its empty line ("\n\r\n" or "\n\n"), or 0 when it has not ended yet. */
static size_t
head_end(const char *buf, size_t len, size_t from)
{
    for (size_t i = from; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (i + 1 < len && buf[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

/* Parses a header block (len bytes at head, ending in an empty line). Returns 0 for
 * a final response (headers reported to the call), 1 for an interim 1xx one (to be
 * skipped), -1 when it is not HTTP/1.x. */
static int
parse_head(struct h1_conn *k, const char *head, size_t len, const char **why)
{
    struct upstream_call *c = k->call;
    const char *p = head, *end = head + len;
    const char *eol = memchr(p, '\n', (size_t)(end - p));

    if (!eol || eol - p < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') ||
        p[8] != ' ' || !isdigit((unsigned char)p[9]) || !isdigit((unsigned char)p[10]) ||
        !isdigit((unsigned char)p[11]) || (eol - p > 12 && p[12] != ' ' && p[12] != '\r')) {
        *why = "not an HTTP/1.x status line";
        return -1;
    }
    k->http10 = p[7] == '0';
    k->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (k->status < 100 || k->status > 599) { /* HTTP has no others; a client may choke */
        *why = "an invalid status code";
        return -1;
    }
    int interim = k->status < 200;
    if (k->status == 101) {
        *why = "an unexpected protocol switch (101)";
        return -1;
    }
    for (p = eol + 1; p < end; p = eol + 1) {
        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            break;
        const char *le = eol;
        if (le > p && le[-1] == '\r')
            le--;
        if (le == p)
            break; /* the empty line */
        const char *name, *v;
        size_t nlen, vlen;
        int r = upstream__header_line(p, (size_t)(le - p), &name, &nlen, &v, &vlen);
        if (r < 0) {
            *why = "NUL or CR inside a header line";
            return -1;
        }
        if (r > 0 || interim)
            continue; /* folded, "Name :", controls, ...: not a field we read or relay */
        if (nlen == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
            uint64_t n = 0;
            if (vlen == 0 || vlen > 18) {
                *why = "an invalid Content-Length";
                return -1;
            }
            for (size_t i = 0; i < vlen; i++) {
                if (!isdigit((unsigned char)v[i])) {
                    *why = "an invalid Content-Length";
                    return -1;
                }
                n = n * 10 + (uint64_t)(v[i] - '0');
            }
            if (k->has_length && n != k->remaining) {
                *why = "conflicting Content-Length headers";
                return -1;
            }
            k->has_length = 1;
            k->remaining = n;
        } else if (nlen == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) {
            k->chunked = last_token_is(v, vlen, "chunked") ? 1 : -1; /* -1: to the end */
        } else if (nlen == 10 && strncasecmp(p, "Connection", 10) == 0) {
            k->conn_close |= has_token(v, vlen, "close");
            k->conn_keep |= has_token(v, vlen, "keep-alive");
        }
        if (c->cb.on_header)
            c->cb.on_header(c->ctx, name, nlen, v, vlen);
    }
    return interim;
}

/* Hands body bytes to the call. Returns 0 when taken, 1 when it paused, -1 when it
 * refused them. */
static int
deliver(struct h1_conn *k, const char *p, size_t n)
{
    struct upstream_call *c = k->call;

    c->last_data = uv_now(k->u->loop);
    int taken = c->cb.on_data(c->ctx, p, n);
    if (taken > 0) {
        c->paused = 1;
        c->ever_paused = 1;
    }
    return taken < 0 ? -1 : taken;
}

/* Keeps input the paused call has not taken (n bytes at p) for upstream_unpause. */
static void
save_rest(struct h1_conn *k, const char *p, size_t n)
{
    if (n > k->saved_cap) {
        k->saved_cap = n;
        k->saved = xrealloc(k->saved, n);
    }
    memmove(k->saved, p, n);
    k->saved_len = n;
}

/* Hands the call what is at *p of the k->remaining bytes a length or a chunk size
 * promised. Returns deliver's answer; when the call paused, the input from *p is
 * saved. */
static int
take_counted(struct h1_conn *k, const char **p, const char *end)
{
    size_t take = (size_t)(end - *p);

    if (take > k->remaining)
        take = (size_t)k->remaining;
    int r = deliver(k, *p, take);
    if (r > 0)
        save_rest(k, *p, (size_t)(end - *p));
    if (r != 0)
        return r;
    k->remaining -= take;
    *p += take;
    return 0;
}

/* A take_counted or deliver answer as the parser's result (FEED_MORE: go on). */
static enum feed_result
taken_result(int r)
{
    return r > 0 ? FEED_PAUSED : r < 0 ? FEED_REFUSED : FEED_MORE;
}

/* After the header block: where the body ends (RFC 9112, 6.3). */
static void
body_framing(struct h1_conn *k)
{
    k->keep_alive = k->http10 ? k->conn_keep && !k->conn_close : !k->conn_close;
    if (k->chunked == 1 && k->has_length)
        k->keep_alive = 0; /* both framings: chunked wins, and the connection is not
                            * trusted with another request (RFC 9112, 6.3) */
    if (k->status == 204 || k->status == 304) {
        k->remaining = 0;
        k->ps = P_LENGTH;
    } else if (k->chunked == 1) {
        k->ps = P_CHUNK_SIZE;
        k->digits = 0;
        k->remaining = 0;
    } else if (k->chunked == 0 && k->has_length) {
        k->ps = P_LENGTH;
    } else {
        k->ps = P_CLOSE;
        k->keep_alive = 0;
    }
}

/* Runs the parser over n bytes at p. On FEED_DONE *rest is the count of bytes after
 * the response; on FEED_ERROR *why says what was wrong. */
static enum feed_result
feed(struct h1_conn *k, const char *p, size_t n, size_t *rest, const char **why)
{
    const char *end = p + n;
    int r;

    while (p < end || (k->ps == P_LENGTH && k->remaining == 0 && k->call->got_headers)) {
        switch (k->ps) {
        case P_HEAD: {
            size_t e;
            if (k->head_len == 0 && (e = head_end(p, (size_t)(end - p), 0)) != 0) {
                /* the usual case: the whole block in this read, parsed where it lies */
                r = parse_head(k, p, e, why);
                p += e;
            } else {
                /* a block split across reads: gathered in k->head */
                size_t from = k->head_len > 3 ? k->head_len - 3 : 0;
                size_t take = (size_t)(end - p);
                if (k->head_len + take > MAX_HEAD)
                    take = MAX_HEAD - k->head_len;
                if (k->head_len + take > k->head_cap) {
                    k->head_cap = k->head_len + take < 1024 ? 1024 : k->head_len + take;
                    k->head = xrealloc(k->head, k->head_cap);
                }
                memcpy(k->head + k->head_len, p, take);
                k->head_len += take;
                e = head_end(k->head, k->head_len, from);
                if (!e) {
                    if (k->head_len == MAX_HEAD) {
                        *why = "a response header block over 64 KB";
                        return FEED_ERROR;
                    }
                    p += take;
                    break;
                }
                /* bytes past the block go back to the input */
                p += take - (k->head_len - e);
                r = parse_head(k, k->head, e, why);
                free(k->head); /* a stream holds no header buffer */
                k->head = NULL;
                k->head_cap = 0;
            }
            if (r < 0)
                return FEED_ERROR;
            k->head_len = 0;
            if (r == 1) { /* interim: the real response follows */
                k->has_length = k->chunked = k->conn_close = k->conn_keep = 0;
                break;
            }
            struct upstream_call *c = k->call;
            c->got_headers = 1;
            c->last_data = uv_now(k->u->loop);
            if (!k->writing) {
                /* answered: the request cannot be sent again, so its copy goes */
                free(h1c(c)->head);
                free(c->body);
                h1c(c)->head = c->body = NULL;
                h1c(c)->head_len = c->body_len = 0;
            }
            body_framing(k);
            c->cb.on_headers_done(c->ctx, k->status);
            break;
        }
        case P_LENGTH:
            if (k->remaining == 0) {
                *rest = (size_t)(end - p);
                return FEED_DONE;
            }
            if ((r = take_counted(k, &p, end)) != 0)
                return taken_result(r);
            break;
        case P_CLOSE:
            if ((r = deliver(k, p, (size_t)(end - p))) > 0)
                save_rest(k, p, (size_t)(end - p));
            if (r != 0)
                return taken_result(r);
            p = end;
            break;
        case P_CHUNK_SIZE: {
            char ch = *p++;
            int v = isdigit((unsigned char)ch) ? ch - '0'
                    : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10
                    : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10 : -1;
            if (v >= 0) {
                if (++k->digits > 15) {
                    *why = "a chunk size out of range";
                    return FEED_ERROR;
                }
                k->remaining = k->remaining * 16 + (uint64_t)v;
            } else if (ch == ';' || ch == ' ' || ch == '\t') {
                k->ps = P_CHUNK_EXT;
            } else if (ch == '\r') {
                /* the LF follows */
            } else if (ch == '\n' && k->digits) {
                k->ps = k->remaining ? P_CHUNK_DATA : P_TRAILER;
                k->line_len = 0;
            } else {
                *why = "an invalid chunk size";
                return FEED_ERROR;
            }
            if (k->ps == P_CHUNK_EXT && !k->digits) {
                *why = "an invalid chunk size";
                return FEED_ERROR;
            }
            break;
        }
        case P_CHUNK_EXT: {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl) {
                p = end;
                break;
            }
            p = nl + 1;
            k->ps = k->remaining ? P_CHUNK_DATA : P_TRAILER;
            k->line_len = 0;
            break;
        }
        case P_CHUNK_DATA:
            if ((r = take_counted(k, &p, end)) != 0)
                return taken_result(r);
            if (k->remaining == 0)
                k->ps = P_CHUNK_END;
            break;
        case P_CHUNK_END: {
            char ch = *p++;
            if (ch == '\n') {
                k->ps = P_CHUNK_SIZE;
                k->digits = 0;
            } else if (ch != '\r') {
                *why = "a chunk longer than its size";
                return FEED_ERROR;
            }
            break;
        }
        case P_TRAILER: {
            char ch = *p++;
            if (ch == '\n') {
                if (k->line_len == 0) {
                    *rest = (size_t)(end - p);
                    return FEED_DONE;
                }
                k->line_len = 0;
            } else if (ch != '\r') {
                if (++k->line_len > MAX_HEAD) {
                    *why = "a trailer line over 64 KB";
                    return FEED_ERROR;
                }
            }
            break;
        }
        }
    }
    return FEED_MORE;
}

/* Back to the pool after a whole response, or closed when over the cap. */
static void
conn_release(struct h1_conn *k)
{
    struct upstream *u = k->u;
    struct h1_origin *o = k->origin;

    h1c(k->call)->conn = NULL;
    k->call = NULL;
    if (u->destroying || u->h1->n_idle >= MAX_IDLE) {
        conn_close(k);
        return;
    }
    k->state = C_IDLE;
    k->reused = 1;
    k->prev = NULL;
    k->next = o->idle;
    if (o->idle)
        o->idle->prev = k;
    o->idle = k;
    u->h1->n_idle++;
    uv_unref((uv_handle_t *)&k->tcp); /* an idle connection keeps no loop alive */
}

/* Parses n bytes that arrived for k's call and acts on the outcome. Returns the
 * outcome: after FEED_DONE and FEED_ERROR the call is gone. */
static enum feed_result
take_input(struct h1_conn *k, const char *p, size_t n)
{
    struct upstream_call *c = k->call;
    size_t rest = 0;
    const char *why = "";
    enum feed_result r = feed(k, p, n, &rest, &why);

    switch (r) {
    case FEED_MORE:
        break;
    case FEED_PAUSED:
        uv_read_stop((uv_stream_t *)&k->tcp);
        break;
    case FEED_DONE:
        if (k->keep_alive && rest == 0)
            conn_release(k);
        else
            conn_close(k); /* bytes past the response: the connection is out of step */
        upstream__call_finish(c, UPSTREAM_OK, NULL);
        break;
    case FEED_ERROR:
        conn_fail(k, UPSTREAM_ERR_PROTOCOL, 0, "the response from", why);
        break;
    case FEED_REFUSED:
        conn_fail(k, UPSTREAM_ERR_TOO_LARGE, 0, "the response from", "more than the caller holds");
        break;
    }
    return r;
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct h1_conn *k = s->data;
    struct upstream *u = k->u;

    if (nread == 0)
        return;
    if (k->state != C_ACTIVE || !k->call) {
        conn_close(k); /* an idle connection that the backend closed, or that talks out of turn */
        return;
    }
    if (nread < 0)
        conn_lost(k, (int)nread);
    else {
        k->got_bytes = 1;
        take_input(k, buf->base, (size_t)nread);
    }
    upstream__after_activity(u);
}

/* ---- resuming paused calls, and errors found inside upstream_start ------------------ */

static void
on_resume(uv_idle_t *h)
{
    struct upstream *u = h->data;
    struct upstream_call *c;

    /* one at a time off the list: a callback may cancel a call that is still on it */
    while ((c = u->h1->resume_head) != NULL) {
        u->h1->resume_head = h1c(c)->resume_next;
        h1c(c)->resuming = 0;
        h1c(c)->resume_next = NULL;
        if (c->forced) {
            upstream__call_finish(c, c->forced, c->detail);
            continue;
        }
        struct h1_conn *k = h1c(c)->conn;
        if (!k || c->paused)
            continue;
        /* the saved bytes go through the read buffer: parsing may save again */
        size_t n = k->saved_len;
        memcpy(u->h1->rbuf, k->saved, n);
        k->saved_len = 0;
        if (take_input(k, u->h1->rbuf, n) == FEED_MORE)
            uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read);
    }
    uv_idle_stop(h);
    upstream__after_activity(u);
}

static void
resume_push(struct upstream_call *c)
{
    struct upstream *u = c->u;

    if (!h1c(c)->resuming) {
        h1c(c)->resuming = 1;
        h1c(c)->resume_next = u->h1->resume_head;
        u->h1->resume_head = c;
    }
    uv_idle_start(&u->h1->resume, on_resume);
}

/* ---- the transport's entry points --------------------------------------------------- */

/* Splits a plain http:// URL. Returns 0, or 1 when it is not one this transport takes. */
static int
split_url(const char *url, const char **auth, size_t *auth_len, const char **path)
{
    if (strncasecmp(url, "http://", 7) != 0)
        return 1;
    const char *a = url + 7, *e = a;
    while (*e && *e != '/' && *e != '?' && *e != '#')
        e++;
    if (e == a || memchr(a, '@', (size_t)(e - a)) || *e == '#')
        return 1;
    *auth = a;
    *auth_len = (size_t)(e - a);
    *path = e;
    return 0;
}

/* Returns the origin for authority (made on first use), or NULL when its port or
 * host are malformed. */
static struct h1_origin *
origin_get(struct upstream *u, const char *auth, size_t len)
{
    struct h1_origin *o;

    for (o = u->h1->origins; o; o = o->next)
        if (strlen(o->authority) == len && memcmp(o->authority, auth, len) == 0)
            return o;
    const char *host = auth, *host_end, *colon;
    if (*auth == '[') {
        const char *rb = memchr(auth, ']', len);
        if (!rb)
            return NULL;
        host = auth + 1;
        host_end = rb;
        colon = rb + 1 < auth + len ? rb + 1 : NULL;
        if (colon && *colon != ':')
            return NULL;
    } else {
        colon = memchr(auth, ':', len);
        host_end = colon ? colon : auth + len;
    }
    unsigned long port = 80;
    if (colon) {
        char *pe;
        size_t plen = (size_t)(auth + len - colon - 1);
        char buf[8];
        if (plen == 0 || plen > 5)
            return NULL;
        memcpy(buf, colon + 1, plen);
        buf[plen] = 0;
        port = strtoul(buf, &pe, 10);
        if (*pe || port == 0 || port > 65535)
            return NULL;
    }
    if (host_end == host)
        return NULL;
    o = calloc(1, sizeof(*o));
    if (!o)
        abort();
    o->authority = strndup(auth, len);
    o->host = strndup(host, (size_t)(host_end - host));
    if (!o->authority || !o->host)
        abort();
    snprintf(o->port, sizeof(o->port), "%lu", port);
    o->next = u->h1->origins;
    u->h1->origins = o;
    return o;
}

/* The request head: request line, Host, the caller's header lines, Content-Length. */
static void
build_head(struct upstream_call *c, const char *path, const char *headers)
{
    size_t hlen = headers ? strlen(headers) : 0;
    size_t cap = 256 + strlen(path) + strlen(h1c(c)->origin->authority) + hlen, len = 0;
    char *out = malloc(cap);

    if (!out)
        abort();
    len += (size_t)snprintf(out + len, cap - len, "POST %s%s HTTP/1.1\r\nHost: %s\r\n",
                            *path == '/' ? "" : "/", path, h1c(c)->origin->authority);
    memcpy(out + len, headers, hlen);
    len += hlen;
    len += (size_t)snprintf(out + len, cap - len, "Content-Length: %zu\r\n\r\n", c->body_len);
    h1c(c)->head = out;
    h1c(c)->head_len = len;
}

/* Takes r when its URL is a plain http:// one this transport serves: a new call, linked. */
static struct upstream_call *
h1_start(struct upstream *u, struct upstream_request *r)
{
    const char *auth, *path;
    size_t auth_len;

    if (split_url(r->url, &auth, &auth_len, &path) != 0)
        return NULL;
    struct h1_origin *o = origin_get(u, auth, auth_len);
    if (!o)
        return NULL; /* curl says what is wrong with it */
    struct h1_call *hc = calloc(1, sizeof(*hc));
    if (!hc)
        abort();
    struct upstream_call *c = &hc->super;
    upstream__call_init(c, &upstream__h1_transport, u, r, 1);
    upstream__call_link(c);
    hc->origin = o;
    build_head(c, path, r->headers);
    struct h1_conn *k = o->idle;
    if (k) {
        idle_unlink(k);
        uv_ref((uv_handle_t *)&k->tcp);
        conn_attach(k, c);
    } else {
        conn_open(c);
    }
    return c;
}

void
upstream_cork(struct upstream *u)
{
    u->h1->corked = 1;
}

void
upstream_uncork(struct upstream *u)
{
    u->h1->corked = 0;
    cork_flush(u);
}

/* Takes c off its connection (closed: a half-read response cannot be reused) and the
 * resume list, and frees it. */
static void
h1_release(struct upstream_call *c)
{
    struct upstream *u = c->u;

    if (h1c(c)->resuming) {
        struct upstream_call **pp = &u->h1->resume_head;
        while (*pp && *pp != c)
            pp = &h1c(*pp)->resume_next;
        if (*pp)
            *pp = h1c(c)->resume_next;
        h1c(c)->resuming = 0;
    }
    if (h1c(c)->conn)
        conn_close(h1c(c)->conn); /* mid-exchange: the connection cannot carry another */
    free(h1c(c)->head);
    free(h1c(c));
}

/* Resumes a paused call: its saved bytes are fed from the loop. */
static void
h1_unpause(struct upstream_call *c)
{
    if (h1c(c)->conn)
        resume_push(c);
}

static int
h1_init(struct upstream *u)
{
    struct upstream_h1 *t = calloc(1, sizeof(*t));

    if (!t)
        abort();
    t->rbuf = malloc(READ_BUF);
    if (!t->rbuf)
        abort();
    u->h1 = t;
    uv_idle_init(u->loop, &t->resume);
    t->resume.data = u;
    u->open_handles++;
    return 0;
}

static void
on_resume_closed(uv_handle_t *h)
{
    upstream__handle_closed(h->data);
}

/* Closes every idle connection and frees the origins (from upstream_destroy). */
static void
h1_shutdown(struct upstream *u)
{
    struct upstream_h1 *t = u->h1;

    while (t->origins) {
        struct h1_origin *o = t->origins;
        while (o->idle)
            conn_close(o->idle);
        t->origins = o->next;
        free(o->authority);
        free(o->host);
        free(o);
    }
    t->resume_head = NULL;
    uv_idle_stop(&t->resume);
    uv_close((uv_handle_t *)&t->resume, on_resume_closed);
}

static void
h1_free(struct upstream *u)
{
    if (u->h1)
        free(u->h1->rbuf);
    free(u->h1);
    u->h1 = NULL;
}

const struct upstream_transport upstream__h1_transport = {
    .name = "h1",
    .init = h1_init,
    .start = h1_start,
    .shutdown = h1_shutdown,
    .free = h1_free,
    .release = h1_release,
    .unpause = h1_unpause,
};
