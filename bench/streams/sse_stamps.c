/* sse_stamps.c - opens many SSE chat-completion streams against a URL and measures, per
 * chunk, the time from the mock's send stamp (mockllm "stamp") to its receipt here.
 *
 *   sse_stamps --url http://127.0.0.1:PORT/v1/chat/completions [--concurrency N]
 *              [--requests M] [--chunks K] [--delay-ms D] [--latency-ms L] [--model NAME]
 *              [--ramp N] [--timeout-s T] [--rss-pid PID] [--label TEXT]
 *
 * Each stream is one POST on its own connection asking for K stamped pieces D ms apart.
 * A stream is intact when the status is 200, all K stamped pieces and one "data: [DONE]"
 * arrived and the chunked body ended properly. Receipt time is taken once per read
 * callback (CLOCK_MONOTONIC, the same clock as the mock's stamps: loopback only).
 * Prints one summary; exits 0 when every stream was intact, 1 otherwise. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>

#include <uv.h>

#define STAMP_MARK " mockts:"
#define STAMP_DIGITS 19

struct opts {
    const char *url, *model, *label;
    char host[256], path[512];
    int port;
    unsigned concurrency, requests, chunks, delay_ms, latency_ms, ramp, timeout_s;
    int rss_pid;
};

enum body_mode { BODY_CHUNKED, BODY_LENGTH, BODY_CLOSE };
enum chunk_state { CS_SIZE, CS_DATA, CS_DATA_CR, CS_TRAILER };

struct conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    struct bench *b;
    int in_body, status, done, eof_ok, counted_open;
    enum body_mode mode;
    enum chunk_state cs;
    uint64_t left;          /* chunk or content-length bytes left */
    char *hdr;              /* response head until "\r\n\r\n" */
    size_t hdr_len, hdr_cap;
    char *line;             /* current SSE line */
    size_t line_len, line_cap;
    unsigned pieces, dones; /* stamped pieces and [DONE] events seen */
    int64_t t_start;
};

struct samples {
    int64_t *v;
    size_t n, cap;
};

struct bench {
    struct opts o;
    uv_loop_t *loop;
    uv_timer_t ramp_timer, rss_timer, stop_timer;
    struct sockaddr_storage addr;
    char *request;
    size_t request_len;
    unsigned started, finished, active, open_streams, peak_open;
    unsigned intact, bad_status, short_streams, conn_errors, extra_events;
    unsigned status_count[600]; /* streams ended with each HTTP status */
    struct samples first, all, ttfb;
    long rss_peak_kb, hwm_kb, rss_at_peak_kb, rss_start_kb;
    int64_t t0, t_end;
    int stopping;
};

static int64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *
xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

static void
samples_add(struct samples *s, int64_t v)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = v;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Prints "name n=.. median .. p90 .. p99 .. max .. us" for s (sorted in place). */
static void
samples_print(const char *name, struct samples *s)
{
    if (s->n == 0) {
        printf("%-12s n=0\n", name);
        return;
    }
    qsort(s->v, s->n, sizeof(*s->v), cmp_i64);
    double med = s->v[s->n / 2] / 1e3, p90 = s->v[(size_t)((double)(s->n - 1) * 0.90)] / 1e3,
           p99 = s->v[(size_t)((double)(s->n - 1) * 0.99)] / 1e3, mx = s->v[s->n - 1] / 1e3,
           mn = s->v[0] / 1e3;
    printf("%-12s n=%zu  min %.1f  median %.1f  p90 %.1f  p99 %.1f  max %.1f us\n", name, s->n, mn,
           med, p90, p99, mx);
}

static long
proc_status_kb(int pid, const char *field)
{
    char path[64], line[256];
    size_t fl = strlen(field);
    long v = -1;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
            v = strtol(line + fl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static void start_more(struct bench *b);

static void
on_closed(uv_handle_t *h)
{
    struct conn *c = h->data;

    free(c->hdr);
    free(c->line);
    free(c);
}

/* Ends a stream once: counts it intact or not, closes it, starts the next one. */
static void
conn_end(struct conn *c, int complete)
{
    struct bench *b = c->b;

    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (c->counted_open)
        b->open_streams--;
    if (complete && c->status == 200 && c->pieces == b->o.chunks && c->dones == 1)
        b->intact++;
    else if (c->status != 0 && c->status != 200)
        b->bad_status++;
    if (c->status > 0 && c->status < 600)
        b->status_count[c->status]++;
    else if (c->status == 200)
        b->short_streams++;
    else
        b->conn_errors++;
    b->finished++;
    b->active--;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
    if (!b->stopping)
        start_more(b);
    if (b->finished == b->o.requests && !b->stopping) {
        b->t_end = now_ns();
        b->stopping = 1;
        uv_timer_stop(&b->ramp_timer);
        uv_timer_stop(&b->rss_timer);
        uv_timer_stop(&b->stop_timer);
    }
}

/* One complete SSE line (without the '\n'). */
static void
sse_line(struct conn *c, const char *l, size_t n, int64_t t)
{
    if (n < 5 || memcmp(l, "data:", 5) != 0)
        return;
    const char *m = memmem(l, n, STAMP_MARK, sizeof(STAMP_MARK) - 1);
    if (m) {
        m += sizeof(STAMP_MARK) - 1;
        if ((size_t)(l + n - m) < STAMP_DIGITS)
            return;
        int64_t ts = 0;
        for (int i = 0; i < STAMP_DIGITS; i++) {
            if (m[i] < '0' || m[i] > '9')
                return;
            ts = ts * 10 + (m[i] - '0');
        }
        if (c->pieces == 0) {
            samples_add(&c->b->first, t - ts);
            samples_add(&c->b->ttfb, t - c->t_start);
        }
        samples_add(&c->b->all, t - ts);
        c->pieces++;
        return;
    }
    if (memmem(l, n, "[DONE]", 6)) {
        if (c->dones)
            c->b->extra_events++;
        c->dones++;
    }
}

static void
sse_feed(struct conn *c, const char *p, size_t n, int64_t t)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (c->line_len == 0 && nl) {
            sse_line(c, p, take, t); /* the whole line is in this read: no copy */
        } else {
            if (c->line_len + take > c->line_cap) {
                c->line_cap = (c->line_len + take) * 2 + 256;
                c->line = xrealloc(c->line, c->line_cap);
            }
            memcpy(c->line + c->line_len, p, take);
            c->line_len += take;
            if (nl) {
                sse_line(c, c->line, c->line_len, t);
                c->line_len = 0;
            }
        }
        if (!nl)
            return;
        p += take + 1;
        n -= take + 1;
    }
}

/* Parses the response head; returns 0, or -1 when it is not a usable HTTP response. */
static int
parse_head(struct conn *c)
{
    char *h = c->hdr, *end = h + c->hdr_len;

    if (c->hdr_len < 12 || strncmp(h, "HTTP/1.", 7) != 0)
        return -1;
    c->status = atoi(h + 9);
    c->mode = BODY_CLOSE;
    for (char *l = memchr(h, '\n', c->hdr_len); l && l < end; l = memchr(l, '\n', (size_t)(end - l))) {
        l++;
        if (strncasecmp(l, "transfer-encoding:", 18) == 0) {
            char *e = memchr(l, '\n', (size_t)(end - l));
            if (e && memmem(l, (size_t)(e - l), "chunked", 7))
                c->mode = BODY_CHUNKED;
        } else if (strncasecmp(l, "content-length:", 15) == 0 && c->mode != BODY_CHUNKED) {
            c->mode = BODY_LENGTH;
            c->left = strtoull(l + 15, NULL, 10);
        }
    }
    c->cs = CS_SIZE;
    c->left = c->mode == BODY_CHUNKED ? 0 : c->left;
    return 0;
}

/* Feeds body bytes; returns 1 when the body is complete. */
static int
body_feed(struct conn *c, const char *p, size_t n, int64_t t)
{
    if (c->mode == BODY_CLOSE) {
        sse_feed(c, p, n, t);
        return 0;
    }
    if (c->mode == BODY_LENGTH) {
        size_t k = n < c->left ? n : (size_t)c->left;
        sse_feed(c, p, k, t);
        c->left -= k;
        return c->left == 0;
    }
    while (n > 0) {
        switch (c->cs) {
        case CS_SIZE: /* hex digits, maybe extensions, then CRLF; line kept in hdr */
        case CS_TRAILER: {
            const char *nl = memchr(p, '\n', n);
            size_t take = nl ? (size_t)(nl - p) + 1 : n;
            if (c->hdr_len + take + 1 > c->hdr_cap) {
                c->hdr_cap = c->hdr_len + take + 64;
                c->hdr = xrealloc(c->hdr, c->hdr_cap);
            }
            memcpy(c->hdr + c->hdr_len, p, take);
            c->hdr_len += take;
            c->hdr[c->hdr_len] = '\0';
            p += take;
            n -= take;
            if (!nl)
                return 0;
            if (c->cs == CS_TRAILER) {
                int empty = c->hdr_len <= 2;
                c->hdr_len = 0;
                if (empty)
                    return 1;
                continue;
            }
            c->left = strtoull(c->hdr, NULL, 16);
            c->hdr_len = 0;
            c->cs = c->left ? CS_DATA : CS_TRAILER;
            break;
        }
        case CS_DATA: {
            size_t k = n < c->left ? n : (size_t)c->left;
            sse_feed(c, p, k, t);
            p += k;
            n -= k;
            c->left -= k;
            if (c->left == 0) {
                c->cs = CS_DATA_CR;
                c->left = 2;
            }
            break;
        }
        case CS_DATA_CR: {
            size_t k = n < c->left ? n : (size_t)c->left;
            p += k;
            n -= k;
            c->left -= k;
            if (c->left == 0)
                c->cs = CS_SIZE;
            break;
        }
        }
    }
    return 0;
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char slab[65536]; /* one loop, one read at a time */

    (void)h;
    (void)suggested;
    *buf = uv_buf_init(slab, sizeof(slab));
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    int64_t t = now_ns();

    if (nread < 0) {
        conn_end(c, c->in_body && c->mode == BODY_CLOSE);
        return;
    }
    const char *p = buf->base;
    size_t n = (size_t)nread;
    if (!c->in_body) {
        if (c->hdr_len + n + 1 > c->hdr_cap) {
            c->hdr_cap = (c->hdr_len + n) * 2 + 1;
            c->hdr = xrealloc(c->hdr, c->hdr_cap);
        }
        memcpy(c->hdr + c->hdr_len, p, n);
        c->hdr_len += n;
        c->hdr[c->hdr_len] = '\0';
        char *e = strstr(c->hdr, "\r\n\r\n");
        if (!e)
            return;
        size_t head = (size_t)(e + 4 - c->hdr);
        size_t rest = c->hdr_len - head;
        if (parse_head(c) < 0) {
            conn_end(c, 0);
            return;
        }
        c->in_body = 1;
        c->counted_open = 1;
        if (++c->b->open_streams > c->b->peak_open)
            c->b->peak_open = c->b->open_streams;
        /* the body bytes that came with the head: move them out of hdr first */
        char *tmp = xrealloc(NULL, rest);
        memcpy(tmp, c->hdr + head, rest);
        c->hdr_len = 0;
        int fin = body_feed(c, tmp, rest, t);
        free(tmp);
        if (fin)
            conn_end(c, 1);
        return;
    }
    if (body_feed(c, p, n, t))
        conn_end(c, 1);
}

static void
on_written(uv_write_t *w, int status)
{
    struct conn *c = w->data;

    if (status < 0)
        conn_end(c, 0);
}

static void
on_connect(uv_connect_t *r, int status)
{
    struct conn *c = r->data;

    if (status < 0) {
        if (c->b->conn_errors < 5)
            fprintf(stderr, "sse_stamps: connect: %s\n", uv_strerror(status));
        conn_end(c, 0);
        return;
    }
    uv_buf_t buf = uv_buf_init(c->b->request, (unsigned)c->b->request_len);
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &buf, 1, on_written) < 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
        conn_end(c, 0);
}

static void
start_one(struct bench *b)
{
    struct conn *c = xrealloc(NULL, sizeof(*c));

    memset(c, 0, sizeof(*c));
    c->b = b;
    c->t_start = now_ns();
    b->started++;
    b->active++;
    uv_tcp_init(b->loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    int r = uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&b->addr, on_connect);
    if (r < 0) {
        if (b->conn_errors < 5)
            fprintf(stderr, "sse_stamps: connect: %s\n", uv_strerror(r));
        conn_end(c, 0);
    }
}

/* Tops the open streams up to the concurrency, at most ramp per millisecond tick. */
static void
start_more(struct bench *b)
{
    unsigned budget = b->o.ramp;

    while (budget-- > 0 && b->active < b->o.concurrency && b->started < b->o.requests &&
           !b->stopping)
        start_one(b);
}

static void
on_ramp(uv_timer_t *t)
{
    start_more(t->data);
}

static void
on_rss(uv_timer_t *t)
{
    struct bench *b = t->data;
    long rss = proc_status_kb(b->o.rss_pid, "VmRSS");
    long hwm = proc_status_kb(b->o.rss_pid, "VmHWM");

    if (rss > b->rss_peak_kb)
        b->rss_peak_kb = rss;
    if (hwm > b->hwm_kb)
        b->hwm_kb = hwm;
    if (b->open_streams >= b->peak_open && rss > 0)
        b->rss_at_peak_kb = rss;
}

static void
on_stop(uv_timer_t *t)
{
    struct bench *b = t->data;

    fprintf(stderr, "sse_stamps: timeout after %u s with %u streams unfinished\n", b->o.timeout_s,
            b->o.requests - b->finished);
    b->t_end = now_ns();
    b->stopping = 1;
    uv_timer_stop(&b->ramp_timer);
    uv_timer_stop(&b->rss_timer);
    uv_stop(b->loop);
}

static int
parse_url(struct opts *o)
{
    const char *u = o->url, *p;

    if (strncmp(u, "http://", 7) != 0)
        return -1;
    u += 7;
    p = u + strcspn(u, ":/");
    if ((size_t)(p - u) >= sizeof(o->host) || p == u)
        return -1;
    memcpy(o->host, u, (size_t)(p - u));
    o->host[p - u] = '\0';
    o->port = 80;
    if (*p == ':') {
        o->port = atoi(p + 1);
        p += strcspn(p, "/");
    }
    snprintf(o->path, sizeof(o->path), "%s", *p ? p : "/");
    return o->port > 0 && o->port < 65536 ? 0 : -1;
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: sse_stamps --url http://HOST:PORT/v1/chat/completions [--concurrency N]\n"
               "       [--requests M] [--chunks K] [--delay-ms D] [--latency-ms L] [--model NAME]\n"
               "       [--ramp N] [--timeout-s T] [--rss-pid PID] [--label TEXT]\n"
               "Opens N concurrent SSE streams (M in all, default N) asking mockllm for K stamped\n"
               "pieces D ms apart, and prints the stamp-to-receipt delay of the first and of all\n"
               "pieces, the streams intact, and the peak RSS of PID. --ramp: new connections\n"
               "per millisecond (default 20).\n");
}

int
main(int argc, char **argv)
{
    static struct bench bench;
    struct bench *b = &bench;
    struct opts *o = &b->o;

    *o = (struct opts){.model = "triage", .label = "streams", .concurrency = 100, .chunks = 10,
                       .ramp = 20, .timeout_s = 120};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        unsigned long n = strtoul(v, NULL, 10);
        if (strcmp(a, "--url") == 0)
            o->url = v;
        else if (strcmp(a, "--model") == 0)
            o->model = v;
        else if (strcmp(a, "--label") == 0)
            o->label = v;
        else if (strcmp(a, "--concurrency") == 0)
            o->concurrency = (unsigned)n;
        else if (strcmp(a, "--requests") == 0)
            o->requests = (unsigned)n;
        else if (strcmp(a, "--chunks") == 0)
            o->chunks = (unsigned)n;
        else if (strcmp(a, "--delay-ms") == 0)
            o->delay_ms = (unsigned)n;
        else if (strcmp(a, "--latency-ms") == 0)
            o->latency_ms = (unsigned)n;
        else if (strcmp(a, "--ramp") == 0)
            o->ramp = (unsigned)n;
        else if (strcmp(a, "--timeout-s") == 0)
            o->timeout_s = (unsigned)n;
        else if (strcmp(a, "--rss-pid") == 0)
            o->rss_pid = (int)n;
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!o->url || parse_url(o) < 0 || o->concurrency == 0 || o->chunks == 0 || o->ramp == 0) {
        usage(stderr);
        return 2;
    }
    if (o->requests == 0)
        o->requests = o->concurrency;

    /* every stream is a socket here: raise the soft limit to the hard one */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < o->concurrency + 64)
            fprintf(stderr, "sse_stamps: warning: fd limit %llu < concurrency %u + 64\n",
                    (unsigned long long)rl.rlim_cur, o->concurrency);
    }
    if (uv_ip4_addr(o->host, o->port, (struct sockaddr_in *)&b->addr) < 0 &&
        uv_ip6_addr(o->host, o->port, (struct sockaddr_in6 *)&b->addr) < 0) {
        fprintf(stderr, "sse_stamps: host must be a numeric address: %s\n", o->host);
        return 2;
    }

    char body[1024];
    int bl = snprintf(body, sizeof(body),
                      "{\"model\":\"%s\",\"stream\":true,\"max_tokens\":256,\"messages\":["
                      "{\"role\":\"system\",\"content\":\"You are a careful assistant.\"},"
                      "{\"role\":\"user\",\"content\":\"A train leaves at 9:40 and travels 180 km "
                      "at 72 km/h, waits 25 minutes, then covers 96 km at 64 km/h. When does it "
                      "arrive, and what is its average speed including the stop? Show the steps."
                      "\"}],\"mock\":{\"stamp\":true,\"chunks\":%u,\"chunk_delay_ms\":%u,"
                      "\"latency_ms\":%u}}",
                      o->model, o->chunks, o->delay_ms, o->latency_ms);
    size_t cap = (size_t)bl + 512;
    b->request = xrealloc(NULL, cap);
    b->request_len = (size_t)snprintf(b->request, cap,
                                      "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: "
                                      "application/json\r\nAuthorization: Bearer sk-bench\r\n"
                                      "Accept: text/event-stream\r\nContent-Length: %d\r\n"
                                      "Connection: close\r\n\r\n%s",
                                      o->path, o->host, o->port, bl, body);

    b->loop = uv_default_loop();
    uv_timer_init(b->loop, &b->ramp_timer);
    uv_timer_init(b->loop, &b->rss_timer);
    uv_timer_init(b->loop, &b->stop_timer);
    b->ramp_timer.data = b->rss_timer.data = b->stop_timer.data = b;
    if (o->rss_pid > 0) {
        b->rss_start_kb = proc_status_kb(o->rss_pid, "VmRSS");
        uv_timer_start(&b->rss_timer, on_rss, 0, 100);
    }
    b->t0 = now_ns();
    uv_timer_start(&b->ramp_timer, on_ramp, 0, 1);
    uv_timer_start(&b->stop_timer, on_stop, (uint64_t)o->timeout_s * 1000, 0);
    uv_run(b->loop, UV_RUN_DEFAULT);
    if (!b->t_end)
        b->t_end = now_ns();
    if (o->rss_pid > 0)
        on_rss(&b->rss_timer);

    unsigned unfinished = o->requests - b->finished;
    printf("[%s] %s\n", o->label, o->url);
    printf("streams      %u requested, concurrency %u, %u pieces %u ms apart: %u intact, "
           "%u short, %u bad status, %u connection errors, %u unfinished; peak open %u; "
           "%.2f s\n",
           o->requests, o->concurrency, o->chunks, o->delay_ms, b->intact, b->short_streams,
           b->bad_status, b->conn_errors, unfinished, b->peak_open, (double)(b->t_end - b->t0) / 1e9);
    if (b->bad_status) {
        printf("statuses    ");
        for (int i = 100; i < 600; i++)
            if (b->status_count[i])
                printf(" %d: %u", i, b->status_count[i]);
        printf("\n");
    }
    samples_print("first chunk", &b->first);
    samples_print("all chunks", &b->all);
    samples_print("ttfb", &b->ttfb);
    if (o->rss_pid > 0)
        printf("rss pid %d   start %.1f MB, peak sampled %.1f MB (at peak open %.1f MB), "
               "VmHWM %.1f MB\n",
               o->rss_pid, b->rss_start_kb / 1024.0, b->rss_peak_kb / 1024.0,
               b->rss_at_peak_kb / 1024.0, b->hwm_kb / 1024.0);
    fflush(stdout);

    /* connections still open after a timeout are left to exit() */
    free(b->first.v);
    free(b->all.v);
    free(b->ttfb.v);
    free(b->request);
    return b->intact == o->requests ? 0 : 1;
}
