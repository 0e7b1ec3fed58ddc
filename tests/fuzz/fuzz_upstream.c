/* fuzz_upstream.c - fuzz target for the plain-HTTP upstream client's response parser.
 *
 * Each input is a backend's whole answer: a fresh upstream client (daemon/upstream/upstream.h)
 * posts a request to a listening socket of ours on loopback, we read the request, write
 * the input back and close the connection, and the loop runs until the call ends. The
 * first byte picks how: the rest in one write, or in pieces of 1-16 bytes with a loop
 * turn between them (framing split anywhere), and whether the call pauses on its first
 * data and is resumed from the loop. Checks the callback contract: headers before data,
 * none after on_headers_done, on_done once, and that every call ends. With
 * FUZZ_UPSTREAM_TRACE set it says what each input gave (for writing seeds). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <uv.h>

#include "fuzz.h"
#include "upstream/upstream.h"

static uv_loop_t loop;
static int listen_fd = -1;
static unsigned port;

struct result {
    int headers_done, header_after_done, data_before_headers, done;
    int pause_first, paused;
    size_t bytes;
};

static void
cb_header(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
    struct result *r = ctx;

    (void)name, (void)nlen, (void)value, (void)vlen;
    if (r->headers_done)
        r->header_after_done++;
}

static void
cb_headers_done(void *ctx, long status)
{
    struct result *r = ctx;

    if (status < 100 || status > 999)
        abort(); /* the parser hands on only three-digit statuses */
    r->headers_done++;
}

static int
cb_data(void *ctx, const char *buf, size_t len)
{
    struct result *r = ctx;

    (void)buf;
    if (!r->headers_done)
        r->data_before_headers++;
    if (r->pause_first) {
        r->pause_first = 0;
        r->paused = 1;
        return 1;
    }
    r->bytes += len;
    return 0;
}

static void
cb_done(void *ctx, enum upstream_error err, const char *detail)
{
    struct result *r = ctx;

    (void)err, (void)detail;
    r->done++;
}

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static struct upstream_call *call; /* the running one */

/* One loop turn (a call paused by its first data is resumed first), then up to 1 ms
 * for fd (when set) to become readable. */
static void
turn(struct result *r, int fd)
{
    if (r->paused && !r->done) {
        r->paused = 0;
        upstream_unpause(call);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
    if (fd >= 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, 1);
    }
}

static void
setup(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);

    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    uv_loop_init(&loop);
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(listen_fd, 16) < 0 || getsockname(listen_fd, (struct sockaddr *)&sa, &len) < 0) {
        perror("fuzz_upstream: listening socket");
        abort();
    }
    port = ntohs(sa.sin_port);
}

static void
on_closed(void *ctx)
{
    *(int *)ctx = 1;
}

/* Accepts the client's connection and reads its whole request (so that closing sends
 * a FIN, not a reset). Returns the socket, or -1 when the call ended first. */
static int
take_request(struct result *r)
{
    char buf[4096];
    size_t have = 0;
    double until = now_ms() + 5000;
    int fd = -1;

    while (fd < 0) {
        if (r->done)
            return -1;
        if (now_ms() > until)
            abort(); /* the client never connected */
        turn(r, listen_fd);
        fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK);
    }
    /* the request is a head and the two-byte body "{}" */
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
        if (n > 0) {
            have += (size_t)n;
            buf[have] = '\0';
            char *end = strstr(buf, "\r\n\r\n");
            if (end && (size_t)(end + 4 - buf) + 2 <= have)
                return fd;
            if (have == sizeof(buf) - 1)
                abort(); /* a request head we did not write */
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR) || r->done || now_ms() > until) {
            if (!r->done && now_ms() > until)
                abort(); /* the request never came */
            close(fd);
            return -1;
        }
        turn(r, fd);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    struct result r = {0};
    char url[96];

    if (!ready) {
        setup();
        ready = 1;
    }
    if (size < 1)
        return 0;
    unsigned mode = data[0];
    data++, size--;
    r.pause_first = mode & 4;

    struct upstream *u = upstream_create(&loop, NULL, NULL);
    if (!u)
        abort();
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/chat/completions", port);
    struct upstream_request req = {
        .url = url,
        .headers = "Content-Type: application/json\r\n",
        .body = strdup("{}"),
        .body_len = 2,
        .connect_timeout_ms = 2000,
        .first_byte_timeout_ms = 2000,
        .idle_timeout_ms = 2000,
        .timeout_ms = 5000,
        .cb = {cb_header, cb_headers_done, cb_data, cb_done},
        .ctx = &r,
    };
    call = upstream_start(u, &req);
    if (!call)
        abort();

    int fd = take_request(&r);
    if (fd >= 0) {
        size_t piece = mode & 1 ? (size_t)(mode >> 4) + 1 : size;
        for (size_t off = 0; off < size;) {
            size_t n = size - off < piece ? size - off : piece;
            ssize_t w = write(fd, data + off, n);
            if (w < 0 && errno == EAGAIN) {
                turn(&r, -1); /* the client reads; the socket drains */
                continue;
            }
            if (w <= 0)
                break; /* the client closed: what it has is its answer */
            off += (size_t)w;
            if (mode & 1)
                turn(&r, -1);
        }
        close(fd);
    }
    double until = now_ms() + 8000;
    while (!r.done) {
        if (now_ms() > until)
            abort(); /* a call that never ends */
        turn(&r, -1);
        if (!r.done && !r.paused)
            uv_run(&loop, UV_RUN_ONCE);
    }
    if (getenv("FUZZ_UPSTREAM_TRACE"))
        fprintf(stderr, "mode %02x: headers %d, %zu body bytes\n", mode, r.headers_done, r.bytes);
    if (r.done != 1 || r.header_after_done || r.data_before_headers || r.headers_done > 1)
        abort();

    int closed = 0;
    upstream_destroy(u, on_closed, &closed);
    while (!closed)
        uv_run(&loop, UV_RUN_ONCE);
    return 0;
}
