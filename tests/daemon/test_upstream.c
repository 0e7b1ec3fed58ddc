/* test_upstream.c - the upstream client on its own, on a uv loop: against mockllm, and
 * against a scripted server for the plain-HTTP transport's framing and connection reuse.
 *
 * usage: test_upstream MOCKLLM
 * Against mockllm, once through each transport (plain HTTP, and curl, which takes a URL
 * with user info), checks the callback order for a whole response and a stream, the first-byte
 * deadline, cancelling a running call, a refused connection, and the one mapping of
 * failure kinds to HTTP statuses; then, with responses written byte by byte where it
 * matters: chunked bodies with extensions and trailers, interim 1xx responses, bodies
 * ended by the connection, kept-alive reuse, a kept-alive connection the server
 * dropped, requests held while corked, malformed and oversized responses, short bodies,
 * and pausing. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "upstream/upstream.h"

struct result {
    int pause_next; /* cb_data pauses (takes nothing) once when set */
    int refuse;     /* cb_data refuses the data */
    int pauses;
    long status;
    int headers_done;
    int headers;           /* header callbacks */
    int header_after_done; /* a header callback after on_headers_done: wrong */
    int data_before_headers;
    int data_calls;
    size_t bytes;
    int done;
    enum upstream_error err;
    char content_type[64];
    char names[256]; /* the header names reported, each followed by ';' */
    char body[16384];
};

static void
cb_header(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
    struct result *r = ctx;

    if (r->headers_done)
        r->header_after_done++;
    r->headers++;
    size_t used = strlen(r->names);
    snprintf(r->names + used, sizeof(r->names) - used, "%.*s;", (int)nlen, name);
    if (nlen == 12 && !strncasecmp(name, "content-type", 12))
        snprintf(r->content_type, sizeof(r->content_type), "%.*s", (int)vlen, value);
}

static void
cb_headers_done(void *ctx, long status)
{
    struct result *r = ctx;

    r->headers_done++;
    r->status = status;
}

static int
cb_data(void *ctx, const char *buf, size_t len)
{
    struct result *r = ctx;

    if (!r->headers_done)
        r->data_before_headers++;
    if (r->refuse)
        return -1;
    if (r->pause_next) {
        r->pause_next = 0;
        r->pauses++;
        return 1;
    }
    r->data_calls++;
    if (r->bytes + len < sizeof(r->body)) {
        memcpy(r->body + r->bytes, buf, len);
        r->body[r->bytes + len] = '\0';
    }
    r->bytes += len;
    return 0;
}

static void
cb_done(void *ctx, enum upstream_error err, const char *detail)
{
    struct result *r = ctx;

    r->done++;
    r->err = err;
}

static unsigned mock_port;

/* "" or "x@": a URL with user info goes to the curl transport instead of the plain-HTTP
 * one, so the tests against mockllm run once through each. */
static const char *via = "";

/* Starts a call posting body to url (NULL: the mock's chat endpoint), reporting to r
 * (reset here). */
static struct upstream_call *
start_call(struct upstream *u, const char *url, const char *body, uint32_t first_byte_ms,
           struct result *r)
{
    char buf[256];
    struct upstream_request req = {
        .url = url,
        .headers = "Content-Type: application/json\r\n",
        .body = strdup(body),
        .body_len = strlen(body),
        .connect_timeout_ms = 1000,
        .first_byte_timeout_ms = first_byte_ms,
        .idle_timeout_ms = 2000,
        .timeout_ms = 10000,
        .cb = {cb_header, cb_headers_done, cb_data, cb_done},
        .ctx = r,
    };

    if (!url) {
        snprintf(buf, sizeof(buf), "http://%s127.0.0.1:%u/v1/chat/completions", via, mock_port);
        req.url = buf;
    }
    memset(r, 0, sizeof(*r));
    return upstream_start(u, &req);
}

/* Runs one call to the mock's chat endpoint (or url) until it ends. */
static void
run_call(uv_loop_t *loop, struct upstream *u, const char *url, const char *body,
         uint32_t first_byte_ms, struct result *r)
{
    struct upstream_call *c = start_call(u, url, body, first_byte_ms, r);

    CHECK(c != NULL);
    while (c && !r->done)
        uv_run(loop, UV_RUN_ONCE);
    CHECK(upstream_active(u) == 0);
}

static void
test_whole_and_stream(uv_loop_t *loop, struct upstream *u)
{
    struct result r;

    run_call(loop, u, NULL,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 0, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_OK);
    CHECK(r.status == 200 && r.headers_done == 1);
    CHECK(r.header_after_done == 0 && r.data_before_headers == 0);
    CHECK(strstr(r.content_type, "application/json") != NULL);
    CHECK(strstr(r.body, "\"chat.completion\"") != NULL);

    run_call(loop, u, NULL,
             "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":"
             "\"hi\"}],\"mock\":{\"chunks\":5,\"chunk_delay_ms\":30}}",
             0, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_OK);
    CHECK(strstr(r.content_type, "text/event-stream") != NULL);
    CHECK(r.data_calls >= 5); /* delivered as it came, not at the end */
    CHECK(strstr(r.body, "data: [DONE]") != NULL);

    /* an error status is a whole response, not a failure */
    run_call(loop, u, NULL,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
             "\"mock\":{\"status\":503}}",
             0, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_OK && r.status == 503);
}

static void
test_failures(uv_loop_t *loop, struct upstream *u)
{
    struct result r;
    char url[128];

    double t0 = h_now_ms();
    run_call(loop, u, NULL,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
             "\"mock\":{\"fail\":\"hang\"}}",
             300, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_ERR_TIMEOUT);
    CHECK(h_now_ms() - t0 < 3000);

    snprintf(url, sizeof(url), "http://%s127.0.0.1:%u/v1/chat/completions", via, h_free_port());
    run_call(loop, u, url, "{}", 0, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_ERR_CONNECT);

    run_call(loop, u, NULL,
             "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":"
             "\"hi\"}],\"mock\":{\"chunks\":5,\"fail\":\"die_mid_stream\",\"die_after\":2}}",
             0, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_ERR_CLOSED);
    CHECK(r.status == 200 && r.bytes > 0);
}

/* A name that cannot resolve (RFC 2606 .invalid): unreachable, or a timeout where the
 * machine's resolver does not answer within connect_timeout; either way no crash when
 * the call ends while the lookup is still out. */
static void
test_unresolvable(uv_loop_t *loop, struct upstream *u)
{
    struct result r;

    run_call(loop, u, "http://triage-test.invalid:8080/v1/chat/completions", "{}", 0, &r);
    CHECK(r.done == 1 && (r.err == UPSTREAM_ERR_CONNECT || r.err == UPSTREAM_ERR_TIMEOUT));
}

/* Data the callback refuses ends the call with UPSTREAM_ERR_TOO_LARGE (a 502). */
static void
test_refuse(uv_loop_t *loop, struct upstream *u)
{
    struct result r;
    struct upstream_call *c = start_call(
        u, NULL, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 0, &r);

    r.refuse = 1;
    CHECK(c != NULL);
    while (c && !r.done)
        uv_run(loop, UV_RUN_ONCE);
    CHECK(r.done == 1 && r.err == UPSTREAM_ERR_TOO_LARGE && r.status == 200);
    CHECK(upstream_error_status(UPSTREAM_ERR_TOO_LARGE) == 502);
    CHECK(upstream_active(u) == 0);
}

static void
test_cancel(uv_loop_t *loop, struct upstream *u)
{
    struct result r;
    struct upstream_call *c =
        start_call(u, NULL,
                   "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\","
                   "\"content\":\"hi\"}],\"mock\":{\"chunks\":50,\"chunk_delay_ms\":50}}",
                   0, &r);

    CHECK(c != NULL);
    while (c && r.data_calls < 2)
        uv_run(loop, UV_RUN_ONCE);
    upstream_cancel(c);
    CHECK(upstream_active(u) == 0);
    CHECK(r.done == 0); /* no callback after a cancel */
}

/* ---- a scripted HTTP server for the plain-HTTP transport ----------------------------- */

/* What the server answers to the next requests: response bytes, written one byte at a
 * time when trickle is set; then the connection stays open (keep) or is closed. */
static struct {
    pthread_mutex_t mu;
    const char *response;
    size_t response_len; /* 0: strlen(response) */
    int trickle;
    int keep;
    int accepts;  /* connections accepted so far */
    int requests; /* requests read so far (counted before each answer) */
    char last_head[2048];
    char last_body[1024];
    int fd;
    unsigned port;
} srv = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Reads one request (head and Content-Length body) from fd. Returns 0, or -1 at EOF. */
static int
srv_read_request(int fd, char *head, size_t hcap, char *body, size_t bcap)
{
    size_t n = 0;
    char *end = NULL;

    while (!end) {
        if (n + 1 >= hcap)
            return -1;
        ssize_t r = read(fd, head + n, hcap - 1 - n);
        if (r <= 0)
            return -1;
        n += (size_t)r;
        head[n] = 0;
        end = strstr(head, "\r\n\r\n");
    }
    size_t hlen = (size_t)(end + 4 - head), have = n - hlen;
    const char *cl = strcasestr(head, "\r\ncontent-length:");
    size_t want = cl ? strtoul(cl + 17, NULL, 10) : 0;
    if (want >= bcap)
        return -1;
    memcpy(body, head + hlen, have);
    while (have < want) {
        ssize_t r = read(fd, body + have, want - have);
        if (r <= 0)
            return -1;
        have += (size_t)r;
    }
    body[want] = 0;
    head[hlen] = 0;
    return 0;
}

static void *
srv_run(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(srv.fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        pthread_mutex_lock(&srv.mu);
        srv.accepts++;
        pthread_mutex_unlock(&srv.mu);
        char head[2048], body[1024];
        while (srv_read_request(fd, head, sizeof(head), body, sizeof(body)) == 0) {
            pthread_mutex_lock(&srv.mu);
            /* counted before the answer is written, so a client that has its answer
             * always sees the count: counting after the write raced with the test */
            srv.requests++;
            const char *resp = srv.response;
            size_t len = srv.response_len ? srv.response_len : strlen(resp);
            int trickle = srv.trickle, keep = srv.keep;
            snprintf(srv.last_head, sizeof(srv.last_head), "%s", head);
            snprintf(srv.last_body, sizeof(srv.last_body), "%s", body);
            pthread_mutex_unlock(&srv.mu);
            for (size_t off = 0; off < len;) {
                ssize_t w = write(fd, resp + off, trickle ? 1 : len - off);
                if (w <= 0)
                    break;
                off += (size_t)w;
                if (trickle)
                    usleep(200);
            }
            if (!keep)
                break;
        }
        close(fd);
    }
}

static void
srv_start(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    pthread_t t;

    srv.fd = socket(AF_INET, SOCK_STREAM, 0);
    if (srv.fd < 0 || bind(srv.fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(srv.fd, 16) < 0 || getsockname(srv.fd, (struct sockaddr *)&sa, &len) < 0) {
        perror("scripted server");
        exit(1);
    }
    srv.port = ntohs(sa.sin_port);
    pthread_create(&t, NULL, srv_run, NULL);
    pthread_detach(t);
}

/* Sets the server's script, then runs one call to it. */
static void
scripted(uv_loop_t *loop, struct upstream *u, const char *response, int trickle, int keep,
         struct result *r)
{
    char url[128];

    pthread_mutex_lock(&srv.mu);
    srv.response = response;
    srv.response_len = 0;
    srv.trickle = trickle;
    srv.keep = keep;
    pthread_mutex_unlock(&srv.mu);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/chat/completions", srv.port);
    run_call(loop, u, url, "{\"model\":\"m\"}", 0, r);
}

/* One call to the scripted server answering len bytes (NULs included) and closing,
 * through curl when curl is set (a URL with user info takes it), else plain HTTP. */
static void
scripted_bytes(uv_loop_t *loop, struct upstream *u, int curl, const char *response, size_t len,
               struct result *r)
{
    char url[128];

    pthread_mutex_lock(&srv.mu);
    srv.response = response;
    srv.response_len = len;
    srv.trickle = srv.keep = 0;
    pthread_mutex_unlock(&srv.mu);
    snprintf(url, sizeof(url), "http://%s127.0.0.1:%u/v1/chat/completions", curl ? "x@" : "",
             srv.port);
    run_call(loop, u, url, "{\"model\":\"m\"}", 0, r);
}

/* Reads one of the server's counters (srv.accepts, srv.requests). */
static int
srv_count(const int *counter)
{
    pthread_mutex_lock(&srv.mu);
    int n = *counter;
    pthread_mutex_unlock(&srv.mu);
    return n;
}

static void
test_framing(uv_loop_t *loop, struct upstream *u)
{
    struct result r;
    char url[128];

    /* the header lines reach the server through curl too (a URL with user info takes
     * it; the server serves one connection at a time, so this one is not kept) */
    pthread_mutex_lock(&srv.mu);
    srv.response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    srv.trickle = srv.keep = 0;
    pthread_mutex_unlock(&srv.mu);
    snprintf(url, sizeof(url), "http://x@127.0.0.1:%u/v1/chat/completions", srv.port);
    run_call(loop, u, url, "{\"model\":\"c\"}", 0, &r);
    CHECK(r.err == UPSTREAM_OK && !strcmp(r.body, "ok"));
    CHECK(strstr(srv.last_head, "\r\nContent-Type: application/json\r\n") != NULL);
    CHECK(!strcmp(srv.last_body, "{\"model\":\"c\"}"));

    /* the request itself: line, Host, our headers, the length, the body */
    scripted(loop, u, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, 1, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_OK && r.status == 200 && !strcmp(r.body, "ok"));
    char host[64];
    snprintf(host, sizeof(host), "\r\nHost: 127.0.0.1:%u\r\n", srv.port);
    CHECK(!strncmp(srv.last_head, "POST /v1/chat/completions HTTP/1.1\r\n", 36));
    CHECK(strstr(srv.last_head, host) != NULL);
    CHECK(strstr(srv.last_head, "\r\nContent-Type: application/json\r\n") != NULL);
    CHECK(strstr(srv.last_head, "\r\nContent-Length: 13\r\n") != NULL);
    CHECK(!strcmp(srv.last_body, "{\"model\":\"m\"}"));

    /* kept alive: the next call goes on the same connection */
    int before = srv_count(&srv.accepts);
    scripted(loop, u, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes", 0, 1, &r);
    CHECK(r.err == UPSTREAM_OK && !strcmp(r.body, "yes"));
    CHECK(srv_count(&srv.accepts) == before);

    /* chunked, one byte per read: sizes in either case, an extension, a trailer */
    scripted(loop, u,
             "HTTP/1.1 200 OK\r\nX-Test: a b \r\nTransfer-Encoding: chunked\r\n\r\n"
             "5\r\nhello\r\nA;ext=1\r\n, world!!!\r\n0\r\nX-Trailer: t\r\n\r\n",
             1, 1, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_OK && r.status == 200);
    CHECK(!strcmp(r.body, "hello, world!!!"));
    CHECK(r.header_after_done == 0 && r.data_before_headers == 0);

    /* an interim 100 Continue is skipped */
    scripted(loop, u,
             "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
             "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\ndone",
             1, 1, &r);
    CHECK(r.err == UPSTREAM_OK && r.status == 201 && r.headers_done == 1);
    CHECK(!strcmp(r.body, "done") && !strcmp(r.content_type, "text/plain"));

    /* no length: the body ends with the connection, which is not reused */
    before = srv_count(&srv.accepts);
    scripted(loop, u, "HTTP/1.0 200 OK\r\n\r\nuntil the end", 0, 0, &r);
    CHECK(r.err == UPSTREAM_OK && !strcmp(r.body, "until the end"));
    scripted(loop, u, "HTTP/1.1 204 No Content\r\n\r\n", 0, 1, &r);
    CHECK(r.err == UPSTREAM_OK && r.status == 204 && r.bytes == 0);
    CHECK(srv_count(&srv.accepts) == before + 1);

    /* kept alive by the headers, then dropped by the server: the next call is sent
     * again on a new connection, or finds the old one closed first */
    before = srv_count(&srv.accepts);
    scripted(loop, u, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", 0, 0, &r);
    CHECK(r.err == UPSTREAM_OK);
    scripted(loop, u, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb", 0, 1, &r);
    CHECK(r.err == UPSTREAM_OK && !strcmp(r.body, "b"));
    CHECK(srv_count(&srv.accepts) == before + 1);

    /* field names that are not tokens are neither read nor handed on */
    scripted(loop, u,
             "HTTP/1.1 200 OK\r\nX-Good: 1\r\nBad Name: 2\r\nX-Ctl\x01: 3\r\n: 4\r\n"
             "Content-Length: 2\r\n\r\nok",
             0, 1, &r);
    CHECK(r.err == UPSTREAM_OK && r.headers == 2 && !strcmp(r.body, "ok"));

    /* both framings: chunked wins, and the connection is not trusted again */
    before = srv_count(&srv.accepts);
    scripted(loop, u,
             "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
             "2\r\nok\r\n0\r\n\r\n",
             0, 1, &r);
    CHECK(r.err == UPSTREAM_OK && !strcmp(r.body, "ok"));
    scripted(loop, u, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz", 0, 1, &r);
    CHECK(r.err == UPSTREAM_OK && !strcmp(r.body, "z"));
    CHECK(srv_count(&srv.accepts) == before + 1);
}

/* Turns the loop for about ms milliseconds. */
static void
spin(uv_loop_t *loop, int ms)
{
    for (int i = 0; i < ms; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
}

/* While corked, a request bound for a kept-alive connection is held back: the server
 * sees nothing until the uncork; a call cancelled meanwhile is never sent. */
static void
test_cork(uv_loop_t *loop, struct upstream *u)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    char url[128];
    struct result r, r2;

    scripted(loop, u, ok, 0, 1, &r); /* leaves a kept-alive connection */
    CHECK(r.err == UPSTREAM_OK);
    int accepts = srv_count(&srv.accepts), answered = srv_count(&srv.requests);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/chat/completions", srv.port);

    upstream_cork(u);
    struct upstream_call *c = start_call(u, url, "{\"model\":\"corked\"}", 0, &r);
    CHECK(c != NULL);
    spin(loop, 50);
    CHECK(r.done == 0 && srv_count(&srv.requests) == answered);
    upstream_uncork(u);
    while (!r.done)
        uv_run(loop, UV_RUN_ONCE);
    CHECK(r.err == UPSTREAM_OK && !strcmp(r.body, "ok"));
    CHECK(!strcmp(srv.last_body, "{\"model\":\"corked\"}"));
    CHECK(srv_count(&srv.requests) == answered + 1 && srv_count(&srv.accepts) == accepts);

    /* cancelled while held: the connection goes (it was promised a request), nothing is
     * sent, and the next call works */
    upstream_cork(u);
    c = start_call(u, url, "{\"model\":\"never\"}", 0, &r2);
    CHECK(c != NULL);
    upstream_cancel(c);
    upstream_uncork(u);
    spin(loop, 50);
    CHECK(r2.done == 0 && srv_count(&srv.requests) == answered + 1);
    run_call(loop, u, url, "{\"model\":\"after\"}", 0, &r);
    CHECK(r.err == UPSTREAM_OK && !strcmp(srv.last_body, "{\"model\":\"after\"}"));
    CHECK(srv_count(&srv.requests) == answered + 2 && srv_count(&srv.accepts) == accepts + 1);
}

/* More requests than the cork holds: a full cork goes out at once, the rest at the
 * uncork (against mockllm, on kept-alive connections opened first). */
static void
test_cork_full(uv_loop_t *loop, struct upstream *u)
{
    enum { N = UPSTREAM_CORK_MAX + 8 };
    static struct result r[N];
    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    int done;

    via = ""; /* the plain-HTTP transport: curl's calls are never held */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1)
            upstream_cork(u);
        for (int i = 0; i < N; i++)
            CHECK(start_call(u, NULL, body, 0, &r[i]) != NULL);
        if (pass == 1) {
            double until = h_now_ms() + 5000;
            do {
                uv_run(loop, UV_RUN_NOWAIT);
                done = 0;
                for (int i = 0; i < N; i++)
                    done += r[i].done;
            } while (done < UPSTREAM_CORK_MAX && h_now_ms() < until);
            spin(loop, 50);
            done = 0;
            for (int i = 0; i < N; i++)
                done += r[i].done;
            CHECK(done == UPSTREAM_CORK_MAX); /* the first 32 went when the 32nd came */
            upstream_uncork(u);
        }
        do {
            uv_run(loop, UV_RUN_ONCE);
            done = 0;
            for (int i = 0; i < N; i++)
                done += r[i].done;
        } while (done < N);
        for (int i = 0; i < N; i++)
            CHECK(r[i].err == UPSTREAM_OK && r[i].status == 200);
    }
}

static void
test_bad_responses(uv_loop_t *loop, struct upstream *u)
{
    struct result r;
    static char huge[70 * 1024];

    scripted(loop, u, "SPDY/9 200 OK\r\n\r\n", 0, 0, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_ERR_PROTOCOL && r.headers_done == 0);

    /* a status HTTP does not have is not relayed (a client may choke on it), by either
     * transport (a URL with user info goes through curl) */
    scripted(loop, u, "HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n", 0, 0, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_ERR_PROTOCOL && r.headers_done == 0);
    char url[128];
    pthread_mutex_lock(&srv.mu);
    srv.response = "HTTP/1.1 999 Odd\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    srv.trickle = srv.keep = 0;
    pthread_mutex_unlock(&srv.mu);
    snprintf(url, sizeof(url), "http://x@127.0.0.1:%u/v1/chat/completions", srv.port);
    run_call(loop, u, url, "{\"model\":\"c\"}", 0, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_ERR_PROTOCOL && r.headers_done == 0);

    scripted(loop, u, "HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n", 0, 0, &r);
    CHECK(r.err == UPSTREAM_ERR_PROTOCOL);

    scripted(loop, u, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, 0, &r);
    CHECK(r.err == UPSTREAM_ERR_PROTOCOL && r.status == 200);

    /* a header block over 64 KB */
    int n = snprintf(huge, sizeof(huge), "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(huge + n, 'x', sizeof(huge) - (size_t)n - 8);
    memcpy(huge + sizeof(huge) - 8, "\r\n\r\n", 5);
    scripted(loop, u, huge, 0, 0, &r);
    CHECK(r.err == UPSTREAM_ERR_PROTOCOL);

    /* the connection ends before the body does */
    scripted(loop, u, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 0, 0, &r);
    CHECK(r.err == UPSTREAM_ERR_CLOSED && r.status == 200 && !strcmp(r.body, "short"));

    /* nothing at all */
    scripted(loop, u, "", 0, 0, &r);
    CHECK(r.err == UPSTREAM_ERR_CLOSED && r.headers_done == 0);
}

/* Header bytes a relay must not pass on, through both transports: NUL, CR or LF inside
 * a header line would split one header into two where it is relayed (a backend could
 * forge x-triage-* or Set-Cookie), so the response is refused (a 502 bad_response); a
 * header with another control byte, or a name that is not a token, is dropped. */
static void
test_header_bytes(uv_loop_t *loop, struct upstream *u)
{
    static const char nul[] = "HTTP/1.1 200 OK\r\nX-A: a\0x-triage-backend: evil\r\n"
                              "Content-Length: 2\r\nConnection: close\r\n\r\nok";
    static const char nul_name[] = "HTTP/1.1 200 OK\r\nX-\0A: a\r\n"
                                   "Content-Length: 2\r\nConnection: close\r\n\r\nok";
    static const char cr[] = "HTTP/1.1 200 OK\r\nX-A: a\rSet-Cookie: evil\r\n"
                             "Content-Length: 2\r\nConnection: close\r\n\r\nok";
    static const char ctl[] = "HTTP/1.1 200 OK\r\nX-Good: 1\tand\xc3\xa9\r\nX-Ctl: a\x01z\r\n"
                              "X-Del: \x7f\r\nBad Name: 2\r\nX-Bad\x02: 3\r\n"
                              "Content-Length: 2\r\nConnection: close\r\n\r\nok";
    struct result r;

    for (int curl = 0; curl < 2; curl++) {
        int before = h_failures;
        scripted_bytes(loop, u, curl, nul, sizeof(nul) - 1, &r);
        CHECK(r.done == 1 && r.err == UPSTREAM_ERR_PROTOCOL && r.headers_done == 0);
        CHECK(strstr(r.names, "x-triage") == NULL);
        scripted_bytes(loop, u, curl, nul_name, sizeof(nul_name) - 1, &r);
        CHECK(r.done == 1 && r.err == UPSTREAM_ERR_PROTOCOL && r.headers_done == 0);
        scripted_bytes(loop, u, curl, cr, sizeof(cr) - 1, &r);
        CHECK(r.done == 1 && r.err == UPSTREAM_ERR_PROTOCOL && r.headers_done == 0);
        CHECK(strstr(r.names, "Set-Cookie") == NULL);
        scripted_bytes(loop, u, curl, ctl, sizeof(ctl) - 1, &r);
        CHECK(r.done == 1 && r.err == UPSTREAM_OK && !strcmp(r.body, "ok"));
        CHECK(!strcmp(r.names, "X-Good;Content-Length;Connection;"));
        if (h_failures != before)
            fprintf(stderr, "header_bytes via %s: err %d, headers %s\n", curl ? "curl" : "h1",
                    (int)r.err, r.names);
    }
}

/* The first-byte deadline runs from the request being written, not from the call's
 * start: a request that waits before it goes out (here held by the cork, as one held by
 * a slow connect) is not timed out for the wait. The hold is longer than the first-byte
 * and connect timeouts together. */
static void
test_first_byte_from_send(uv_loop_t *loop, struct upstream *u)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    char url[128];
    struct result r;

    scripted(loop, u, ok, 0, 1, &r); /* leaves a kept-alive connection for the cork */
    CHECK(r.err == UPSTREAM_OK);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/chat/completions", srv.port);
    upstream_cork(u);
    struct upstream_call *c = start_call(u, url, "{\"model\":\"held\"}", 1000, &r);
    CHECK(c != NULL);
    spin(loop, 2300); /* connect_timeout (1000) + first_byte_timeout (1000) and more */
    CHECK(r.done == 0);
    upstream_uncork(u);
    while (!r.done)
        uv_run(loop, UV_RUN_ONCE);
    CHECK(r.err == UPSTREAM_OK && !strcmp(r.body, "ok"));
    CHECK(!strcmp(srv.last_body, "{\"model\":\"held\"}"));
}

/* A call that pauses on its first data gets the same bytes again after unpausing. */
static void
test_pause(uv_loop_t *loop, struct upstream *u)
{
    struct result r;
    char url[128];

    pthread_mutex_lock(&srv.mu);
    srv.response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
    srv.trickle = 0;
    srv.keep = 1;
    pthread_mutex_unlock(&srv.mu);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/chat/completions", srv.port);
    struct upstream_call *c = start_call(u, url, "{}", 0, &r);
    r.pause_next = 1; /* nothing arrives before the loop runs */
    CHECK(c != NULL);
    int unpaused = 0;
    while (c && !r.done) {
        uv_run(loop, UV_RUN_ONCE);
        if (r.pauses && !unpaused) {
            unpaused = 1;
            CHECK(r.bytes == 0);
            upstream_unpause(c);
        }
    }
    CHECK(r.pauses == 1 && r.err == UPSTREAM_OK && !strcmp(r.body, "abcdef"));
}

static void
test_status_mapping(void)
{
    CHECK(upstream_error_status(UPSTREAM_ERR_CONNECT) == 502);
    CHECK(upstream_error_status(UPSTREAM_ERR_CLOSED) == 502);
    CHECK(upstream_error_status(UPSTREAM_ERR_PROTOCOL) == 502);
    CHECK(upstream_error_status(UPSTREAM_ERR_TLS) == 502);
    CHECK(upstream_error_status(UPSTREAM_ERR_TIMEOUT) == 504);
    CHECK(upstream_error_status(UPSTREAM_ERR_OVERLOADED) == 503);
    CHECK(upstream_error_status(UPSTREAM_ERR_INTERNAL) == 500);
    CHECK(upstream_error_status((enum upstream_error)99) == 500);
    CHECK(!strcmp(upstream_error_name(UPSTREAM_ERR_TIMEOUT), "timeout"));
    CHECK(!strcmp(upstream_error_name(UPSTREAM_ERR_CONNECT), "unreachable"));
    /* once the answer had begun, a dropped connection is not "before answering" */
    CHECK(strstr(upstream_error_message(UPSTREAM_ERR_CLOSED), "before answering") != NULL);
    CHECK(strstr(upstream_error_message_midway(UPSTREAM_ERR_CLOSED), "mid-answer") != NULL);
    for (int k = 0; k <= UPSTREAM_ERR__COUNT; k++)
        CHECK(upstream_error_message_midway((enum upstream_error)k) != NULL);
}

static int closed;

static void
on_closed(void *ctx)
{
    closed = 1;
}

int
main(int argc, char **argv)
{
    pid_t mock;
    uv_loop_t loop;

    if (argc != 2) {
        fprintf(stderr, "usage: test_upstream MOCKLLM\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char *margv[] = {argv[1], "--port", "0", NULL};
    if (h_spawn_mock(margv, &mock, &mock_port) < 0) {
        fprintf(stderr, "cannot start %s\n", argv[1]);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    uv_loop_init(&loop);
    struct upstream *u = upstream_create(&loop, NULL, NULL);
    CHECK(u != NULL);

    test_status_mapping();
    for (int curl = 0; curl < 2; curl++) {
        via = curl ? "x@" : "";
        test_whole_and_stream(&loop, u);
        test_failures(&loop, u);
        test_cancel(&loop, u);
        test_refuse(&loop, u);
    }
    test_unresolvable(&loop, u);
    test_cork_full(&loop, u);
    srv_start();
    test_framing(&loop, u);
    test_cork(&loop, u);
    test_bad_responses(&loop, u);
    test_header_bytes(&loop, u);
    test_first_byte_from_send(&loop, u);
    test_pause(&loop, u);

    upstream_destroy(u, on_closed, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(closed == 1);
    CHECK(uv_loop_close(&loop) == 0);
    curl_global_cleanup();
    h_stop(mock, SIGTERM);
    if (h_failures)
        fprintf(stderr, "%d checks failed\n", h_failures);
    return h_failures ? 1 : 0;
}
