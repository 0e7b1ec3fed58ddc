/* fuzz_http.c - fuzz target for triaged's HTTP front end as a whole: raw request bytes
 * over loopback TCP into a real server running in this process.
 *
 * Set-up (first input): mockllm (tests/mock) as a child process, a config in a fresh
 * /tmp/fuzz-http-PID-XXXXXX with the outcome log on, a dead backend, an api = anthropic
 * backend (/v1/messages), the shipped model
 * models/default.tmod behind the alias "triage", and short timeouts; then
 * daemon_server_create(), /metrics and /dashboard attached as main.c does, and
 * daemon_server_run() on its own thread. At exit the server gets SIGTERM, is joined and
 * destroyed, the mock is stopped and the folder removed (after a crash, by the next
 * run; the mock dies with this process).
 *
 * Each input is a script for one fresh connection:
 *
 *   byte 0   control
 *     bits 0-2  split: 0 = all bytes in one write; 1-6 = writes of 1, 2, 7, 32, 256 or
 *               2048 bytes, with a pause of 1 ms (answers read meanwhile) after each
 *               of the first 64; 7 = a piece ends at each "\xf5\xf5" marker (markers
 *               are not sent), with a pause of 20 ms after each of the first 16
 *               markers (markers in a row: a longer pause)
 *     bits 3-4  end: 0 = shutdown(SHUT_WR), then read answers until the server closes,
 *               25 ms pass without a byte after the first, or 400 ms; 1 = keep the write
 *               side open and read until the server closes, 25 ms pass without a byte
 *               (counted from the last write too), or 400 ms; 2 = hang up at once,
 *               reading nothing; 3 = read for up to 20 ms, then hang up
 *     bits 5-6  cut: send all of the bytes, or only the first 3/4, 1/2 or 1/4 of them
 *               (a hang-up in the middle of a head or body)
 *     bit 7     hang up with a reset (SO_LINGER 0) instead of a FIN
 *   byte 1-  the raw bytes: one or more HTTP requests, pipelined or not
 *
 * Findings besides crashes and sanitizer reports (each an abort() with a line saying
 * why): an answer that does not start with "HTTP/1."; a request or backend call still
 * in flight 7 s after its client left; /healthz not answered with 200 within 2 s on a
 * new connection after the input; daemon_server_run() returning. The mock is
 * restarted when a forwarded body kills it (it is not what is under test).
 * FUZZ_HTTP_TRACE=1 prints what each input gave; FUZZ_HTTP_MOCKLLM names the mock
 * (default: TRIAGE_BUILD_ROOT/tests/mock/mockllm, else ../mock/mockllm next to this
 * program). */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"
#include "harness.h"
#include "hooks.h"
#include "inproc.h"
#include "ops/ops.h"

#define MARK "\xf5\xf5"
#define MAX_PAUSES 64        /* fixed-size pieces paused after */
#define PIECE_PAUSE_MS 1     /* after a fixed-size piece */
#define MARK_PAUSE_MS 20     /* after a marker-delimited piece */
#define MAX_MARK_PAUSES 16   /* marker-delimited pieces paused after */
#define READ_CAP_MS 400      /* reading one input's answers */
#define READ_IDLE_MS 25      /* silence that ends the reading */
#define PEEK_MS 20           /* end 3: reading before the hang-up */
#define WRITE_CAP_MS 2000    /* the server stopped reading: give up writing */
#define INFLIGHT_CAP_MS 7000 /* longer than any backend timeout in the config below */
#define CONNECT_CAP_MS 2000

static const size_t piece_sizes[] = {1, 2, 7, 32, 256, 2048};

static struct metrics *metrics;
static unsigned port, mock_port;
static pid_t mock_pid = -1;
static const char *dir;
static char mock_path[PATH_MAX + 32];
static int trace;

/* ---- the mock backend ---------------------------------------------------------- */

static void
find_mock(void)
{
    const char *env = getenv("FUZZ_HTTP_MOCKLLM"), *root = getenv("TRIAGE_BUILD_ROOT");
    char self[PATH_MAX];
    ssize_t n;

    if (env && *env) {
        snprintf(mock_path, sizeof(mock_path), "%s", env);
        return;
    }
    if (root && *root) {
        snprintf(mock_path, sizeof(mock_path), "%s/tests/mock/mockllm", root);
        if (access(mock_path, X_OK) == 0)
            return;
    }
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = '\0';
        snprintf(mock_path, sizeof(mock_path), "%s/../mock/mockllm", self);
    }
}

/* Starts mockllm on mock_port; waits for its "listening on" line. */
static void
start_mock(void)
{
    char port_arg[16], line[128] = {0};
    char *argv[] = {mock_path, "--port", port_arg, NULL};
    int p[2];

    snprintf(port_arg, sizeof(port_arg), "%u", mock_port);
    if (access(mock_path, X_OK) < 0) {
        fprintf(stderr, "fuzz_http: no mockllm at %s (ninja tests/mock/mockllm, or set "
                        "FUZZ_HTTP_MOCKLLM)\n", mock_path);
        abort();
    }
    if (pipe(p) < 0)
        inproc_die("pipe");
    mock_pid = fork();
    if (mock_pid < 0)
        inproc_die("fork");
    if (mock_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a crashed fuzzer leaves no mock behind */
        dup2(p[1], STDOUT_FILENO);
        close(p[0]);
        close(p[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    FILE *f = fdopen(p[0], "r");
    if (!f || !fgets(line, sizeof(line), f) || strncmp(line, "listening on", 12) != 0)
        inproc_die("mockllm did not start");
    fclose(f);
}

static void
stop_mock(void)
{
    if (mock_pid <= 0)
        return;
    kill(mock_pid, SIGTERM);
    waitpid(mock_pid, NULL, 0);
    mock_pid = -1;
}

/* A forwarded body may ask the mock for more than it can give ("chunks": 4e9); it
 * is a test tool, so a dead one is started again rather than reported. */
static void
keep_mock_alive(void)
{
    int st;

    if (waitpid(mock_pid, &st, WNOHANG) != mock_pid)
        return;
    fprintf(stderr, "fuzz_http: mockllm ended (status %d); starting it again\n", st);
    mock_pid = -1;
    start_mock();
}

/* ---- the server ----------------------------------------------------------------- */

static void
write_conf(const char *path, unsigned dead_port)
{
    const char *src = getenv("TRIAGE_SOURCE_ROOT");
    FILE *f = fopen(path, "w");

    if (!f)
        inproc_die("cannot write the config");
    /* Short timeouts keep every request's life well under INFLIGHT_CAP_MS; "slow"
     * outlives GONE_AFTER_MS (daemon/http/http.c) so the hang-up watch can be reached. */
    fprintf(f,
            "[server]\nlisten = 127.0.0.1\nport = %u\nworkers = 1\nmax_body = 16k\n"
            "max_header = 4k\nmax_response = 16k\nmax_connections = 64\n"
            "read_timeout_ms = 250\nidle_timeout_ms = 300\nshutdown_timeout_ms = 1000\n"
            "log_level = error\n"
            "[auth]\nopen_on_loopback = yes\n"
            "[router]\nmodel = %s/models/default.tmod\naliases = triage\n"
            "policy = threshold\nstrong_share = 0.3\ntiers = fast, strong, claude\n"
            "fallback = strong, fast\n"
            "[storage]\npath = %s/out.db\nstore_prompts = full\nqueue_size = 1024\n"
            "flush_interval_ms = 20\n"
            "[backend fast]\nurl = http://127.0.0.1:%u/v1\nmodel = mock-fast\nhead = weak\n"
            "price_input = 0.6\nprice_output = 0.6\nconnect_timeout_ms = 200\n"
            "first_byte_timeout_ms = 400\nidle_timeout_ms = 300\ntimeout_ms = 800\n"
            "max_retries = 1\nbreaker_failures = 1000\n"
            "[backend strong]\nurl = http://127.0.0.1:%u/v1/\nmodel = mock-strong\n"
            "head = strong\nprice_input = 10\nprice_output = 30\nconnect_timeout_ms = 200\n"
            "first_byte_timeout_ms = 400\nidle_timeout_ms = 300\ntimeout_ms = 800\n"
            "max_retries = 0\nbreaker_failures = 1000\n"
            "overrides = {\"reasoning_effort\": \"high\"}\n"
            "[backend flaky]\nurl = http://127.0.0.1:%u/v1\nhead = weak\nmax_concurrent = 1\n"
            "first_byte_timeout_ms = 300\ntimeout_ms = 600\nmax_retries = 0\n"
            "breaker_failures = 2\nbreaker_window_ms = 1000\nbreaker_cooldown_ms = 200\n"
            "[backend dead]\nurl = http://127.0.0.1:%u/v1\nhead = weak\n"
            "connect_timeout_ms = 100\nmax_retries = 1\nbreaker_failures = 1000\n"
            "[backend slow]\nurl = http://127.0.0.1:%u/v1\nhead = strong\n"
            "first_byte_timeout_ms = 1500\nidle_timeout_ms = 500\ntimeout_ms = 2000\n"
            "max_retries = 0\nbreaker_failures = 1000\n"
            "[backend claude]\nurl = http://127.0.0.1:%u/v1\nmodel = mock-claude\nhead = weak\n"
            "api = anthropic\nconnect_timeout_ms = 200\nfirst_byte_timeout_ms = 400\n"
            "idle_timeout_ms = 300\ntimeout_ms = 800\nmax_retries = 0\n"
            "breaker_failures = 1000\n",
            port, src && *src ? src : TRIAGE_SOURCE_ROOT, dir, mock_port, mock_port, mock_port,
            dead_port, mock_port, mock_port);
    if (fclose(f) != 0)
        inproc_die("cannot write the config");
}

/* metrics_set_gauges callback, as main.c's: the breaker states. */
static void
fill_gauges(void *ud, struct metrics_gauges *g)
{
    static _Thread_local int circuit[DAEMON_GAUGES_MAX_BACKENDS];
    struct daemon_gauges dg;

    (void)ud;
    if (daemon_gauges_get(&dg) < 0)
        return;
    for (size_t i = 0; i < dg.n_backends; i++)
        circuit[i] = dg.circuit[i] == 2   ? METRICS_CIRCUIT_OPEN
                     : dg.circuit[i] == 1 ? METRICS_CIRCUIT_HALF_OPEN
                                          : METRICS_CIRCUIT_CLOSED;
    g->circuit = circuit;
    g->n_backends = dg.n_backends;
}

/* atexit: a graceful stop, so that nothing is left running under the exit handlers. */
static void
teardown(void)
{
    if (inproc_stop() == 0) { /* else exit() from a server thread: only the mock goes */
        metrics_destroy(metrics);
        metrics = NULL;
    }
    stop_mock();
}

static void
setup(void)
{
    char conf[PATH_MAX];
    const char *names[] = {"fast", "strong", "flaky", "dead", "slow"};

    trace = getenv("FUZZ_HTTP_TRACE") != NULL;
    dir = inproc_begin("http");
    find_mock();
    mock_port = h_free_port();
    port = h_free_port();
    unsigned dead_port = h_free_port(); /* nothing listens there */
    if (!mock_port || !port || !dead_port)
        inproc_die("no free port");
    start_mock();

    snprintf(conf, sizeof(conf), "%s/triage.conf", dir);
    write_conf(conf, dead_port);
    inproc_create(conf);
    metrics = metrics_create(names, sizeof(names) / sizeof(names[0]));
    metrics_set_gauges(metrics, fill_gauges, NULL);
    if (metrics_attach(metrics) < 0 || dashboard_attach() < 0)
        inproc_die("cannot attach /metrics and /dashboard");
    inproc_run(port);
    atexit(teardown); /* after curl/OpenSSL registered theirs: runs before them */
}

/* ---- one connection ---------------------------------------------------------------- */

struct conn {
    int fd;
    int eof;          /* the server closed (or reset) */
    size_t got;       /* answer bytes read */
    char head[16];    /* the first of them */
    int status;       /* of the first answer, 0 before its status line */
};

static int
conn_open(struct conn *c)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;

    memset(c, 0, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        inproc_die("socket");
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* pieces stay apart */
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        return 0;
    if (errno != EINPROGRESS)
        return -1;
    struct pollfd p = {.fd = c->fd, .events = POLLOUT};
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (poll(&p, 1, CONNECT_CAP_MS) != 1 ||
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0 || soerr)
        return -1;
    return 0;
}

static void
conn_close(struct conn *c, int reset)
{
    if (reset) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    close(c->fd);
    c->fd = -1;
}

/* Reads what is there without waiting. Returns 0, or -1 once the server closed. */
static int
conn_drain(struct conn *c)
{
    static char buf[65536];

    while (!c->eof) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            c->eof = 1;
            break;
        }
        for (ssize_t i = 0; i < n && c->got + (size_t)i < sizeof(c->head); i++)
            c->head[c->got + (size_t)i] = buf[i];
        c->got += (size_t)n;
        if (!c->status && c->got >= 12)
            for (int i = 9; i < 12 && c->head[i] >= '0' && c->head[i] <= '9'; i++)
                c->status = c->status * 10 + (c->head[i] - '0');
        /* Whatever MHD and triaged answer, it is an HTTP/1.x status line first. */
        size_t have = c->got < 7 ? c->got : 7;
        if (memcmp(c->head, "HTTP/1.", have) != 0) {
            fprintf(stderr, "fuzz_http: the answer starts with \"%.*s\"\n", (int)have, c->head);
            abort();
        }
    }
    return -1;
}

/* Waits up to ms for an answer byte or the close, reading what comes. Returns 0, or
 * -1 once the server closed. */
static int
conn_wait(struct conn *c, double ms)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};

    if (c->eof)
        return -1;
    if (ms > 0 && poll(&p, 1, (int)(ms + 0.999)) < 0 && errno != EINTR)
        return -1;
    return conn_drain(c);
}

/* Reads until the server closes, cap_ms pass, or idle_ms pass without a byte (counted
 * from the start when idle_from_start, else only once a byte came). */
static void
conn_read(struct conn *c, double cap_ms, double idle_ms, int idle_from_start)
{
    double start = h_now_ms(), last = start;

    while (!c->eof) {
        double now = h_now_ms(), left = start + cap_ms - now;
        if (idle_from_start || c->got) {
            double idle_left = last + idle_ms - now;
            left = idle_left < left ? idle_left : left;
        }
        if (left <= 0)
            break;
        size_t before = c->got;
        conn_wait(c, left);
        if (c->got != before)
            last = h_now_ms();
    }
}

/* Writes n bytes, reading answers while the socket is full. Returns 0, or -1 when
 * the server closed or stopped reading. */
static int
conn_send(struct conn *c, const uint8_t *p, size_t n, double until)
{
    while (n > 0) {
        ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
            return -1;
        struct pollfd pf = {.fd = c->fd, .events = POLLIN | POLLOUT};
        double left = until - h_now_ms();
        if (left <= 0 || poll(&pf, 1, (int)left + 1) < 0)
            return -1;
        if ((pf.revents & (POLLIN | POLLHUP | POLLERR)) && conn_drain(c) < 0)
            return -1;
    }
    return 0;
}

/* ---- the script ------------------------------------------------------------------- */

struct script {
    unsigned split, end, cut, reset;
    uint8_t *bytes; /* to send, markers removed (owned) */
    size_t len;
    size_t *ends;   /* split 7: where each piece ends (owned) */
    size_t n_ends;
};

static void
script_parse(struct script *s, const uint8_t *data, size_t size)
{
    static const unsigned keep_quarters[] = {4, 3, 2, 1};

    memset(s, 0, sizeof(*s));
    s->split = data[0] & 7;
    s->end = (data[0] >> 3) & 3;
    s->cut = (data[0] >> 5) & 3;
    s->reset = data[0] >> 7;
    data++, size--;
    s->bytes = malloc(size ? size : 1);
    if (!s->bytes)
        abort();
    if (s->split == 7) {
        s->ends = malloc((size / 2 + 1) * sizeof(*s->ends));
        if (!s->ends)
            abort();
        for (size_t i = 0; i < size;) {
            if (i + 1 < size && data[i] == MARK[0] && data[i + 1] == (uint8_t)MARK[1]) {
                s->ends[s->n_ends++] = s->len;
                i += 2;
                continue;
            }
            s->bytes[s->len++] = data[i++];
        }
    } else {
        memcpy(s->bytes, data, size);
        s->len = size;
    }
    s->len = s->len * keep_quarters[s->cut] / 4;
}

static void
script_free(struct script *s)
{
    free(s->bytes);
    free(s->ends);
}

/* Returns where piece idx, which starts at off, ends (beyond s->len: there is no such
 * piece); *pause_ms is the pause after it. */
static size_t
piece_end(const struct script *s, size_t off, size_t idx, double *pause_ms)
{
    *pause_ms = 0;
    if (s->split == 7) {
        /* one piece per marker, empty ones too: markers in a row make a longer pause */
        if (idx > s->n_ends)
            return s->len + 1;
        *pause_ms = idx < MAX_MARK_PAUSES ? MARK_PAUSE_MS : 0;
        return idx < s->n_ends && s->ends[idx] < s->len ? s->ends[idx] : s->len;
    }
    if (off >= s->len)
        return s->len + 1;
    if (s->split > 0) {
        *pause_ms = idx < MAX_PAUSES ? PIECE_PAUSE_MS : 0;
        if (s->len - off > piece_sizes[s->split - 1])
            return off + piece_sizes[s->split - 1];
    }
    return s->len;
}

static void
run_script(const struct script *s)
{
    struct conn c;
    double until = h_now_ms() + WRITE_CAP_MS, pause;
    size_t off = 0, end;

    if (conn_open(&c) < 0)
        inproc_die("the server does not accept connections");
    for (size_t idx = 0; (end = piece_end(s, off, idx, &pause)) <= s->len; idx++) {
        if (conn_send(&c, s->bytes + off, end - off, until) < 0)
            break; /* the server closed or stopped reading: read what it said */
        off = end;
        if (pause > 0 && (off < s->len || idx < s->n_ends)) {
            double stop = h_now_ms() + pause;
            while (!c.eof && h_now_ms() < stop)
                conn_wait(&c, stop - h_now_ms());
        }
    }

    switch (s->end) {
    case 0:
        /* MHD sometimes notices this end of file only at its idle sweep: silence
         * after an answer ends the reading too */
        shutdown(c.fd, SHUT_WR);
        conn_read(&c, READ_CAP_MS, READ_IDLE_MS, 0);
        break;
    case 1:
        conn_read(&c, READ_CAP_MS, READ_IDLE_MS, 1);
        break;
    case 2:
        break;
    case 3:
        conn_read(&c, PEEK_MS, PEEK_MS, 1);
        break;
    }
    if (trace)
        fprintf(stderr, "fuzz_http: split %u end %u cut %u reset %u: sent %zu of %zu, "
                        "read %zu (first status %d)%s\n",
                s->split, s->end, s->cut, s->reset, off, s->len, c.got, c.status,
                c.eof ? ", server closed" : "");
    conn_close(&c, s->reset);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    struct script s;

    if (!ready) {
        setup();
        ready = 1;
    }
    if (size < 1)
        return 0;
    script_parse(&s, data, size);
    run_script(&s);
    script_free(&s);
    inproc_settle(INFLIGHT_CAP_MS);
    keep_mock_alive();
    return 0;
}
