/* fuzz_relay.c - fuzz target for what triaged does with a backend's answer: a real server
 * in this process relays a client's request to a backend of ours that answers with the
 * input's bytes, so the proxy's reading of answers (usage, stop reason, response ids,
 * SSE events of each API), the cascade's hold of the fast answer (its signals, the
 * escalation score, the SSE it makes of it) and the learning loop's shadow and judge
 * calls all get arbitrary bytes.
 *
 * Set-up (first input): a config in a fresh /tmp/fuzz-relay-PID-XXXXXX with policy =
 * cascade over fast and strong, an api = anthropic backend, the learning loop on
 * (shadow_rate 1, judge strong), the outcome log on, the shipped model behind "triage",
 * short timeouts; the backend is a thread here on a loopback port.
 *
 *   byte 0   bits 0-3  the client's request: one of REQUESTS (path, model, stream)
 *            bit  4    the answer in pieces of 7 bytes with a 1 ms pause between them
 *   byte 1-  the backend's answer: raw bytes, its status line and headers included;
 *            every call the backend gets (a retry, a fallback, the escalation, a shadow
 *            or judge call) is answered with them, then the connection is closed
 *
 * Findings besides crashes and sanitizer reports (each an abort() with a line saying
 * why): an answer to the client that does not start with "HTTP/1."; a request or backend
 * call still in flight 5 s after the client's request ended; /healthz not answered with
 * 200 within 2 s afterwards; daemon_server_run() returning. FUZZ_RELAY_TRACE=1 prints each
 * input's request and the status the client got. */
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"
#include "inproc.h"

#define CLIENT_CAP_MS 3000   /* longer than any backend deadline below, escalation included */
#define INFLIGHT_CAP_MS 5000 /* shadow and judge calls finish well within */

static const char *const REQUESTS[] = {
    "/v1/chat/completions\0{\"model\":\"triage\",\"messages\":[{\"role\":\"user\",\"content\":"
    "\"Tom has 3 apples and buys 12 more. How many?\"}]}",
    "/v1/chat/completions\0{\"model\":\"triage\",\"stream\":true,\"stream_options\":"
    "{\"include_usage\":true},\"logprobs\":true,\"messages\":[{\"role\":\"user\",\"content\":"
    "\"What is 2+2?\"}]}",
    "/v1/chat/completions\0{\"model\":\"fast\",\"stream\":true,\"messages\":[{\"role\":\"user\","
    "\"content\":\"hi\"}]}",
    "/v1/chat/completions\0{\"model\":\"strong\",\"messages\":[{\"role\":\"user\",\"content\":"
    "\"hi\"}]}",
    "/v1/responses\0{\"model\":\"triage\",\"input\":\"What is 2+2?\"}",
    "/v1/responses\0{\"model\":\"fast\",\"stream\":true,\"input\":[{\"role\":\"user\","
    "\"content\":\"hi\"}]}",
    "/v1/completions\0{\"model\":\"triage\",\"prompt\":\"2+2=\"}",
    "/v1/completions\0{\"model\":\"fast\",\"stream\":true,\"prompt\":[\"a\",\"b\"]}",
    "/v1/embeddings\0{\"model\":\"fast\",\"input\":[\"a\",\"b\"]}",
    "/v1/messages\0{\"model\":\"claude\",\"max_tokens\":10,\"messages\":[{\"role\":\"user\","
    "\"content\":\"hi\"}]}",
    "/v1/messages\0{\"model\":\"claude\",\"stream\":true,\"max_tokens\":10,\"system\":\"be "
    "brief\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}]}",
};
#define N_REQUESTS (sizeof(REQUESTS) / sizeof(REQUESTS[0]))

static pthread_t backend_thread;
static atomic_int backend_stop;
static unsigned port;
static int backend_fd = -1;
static const char *dir;
static int trace;

/* the backend's script: the current input's answer, swapped under the lock */
static pthread_mutex_t script_mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *script;
static size_t script_len;
static int script_pieces;

static int
listen_loopback(unsigned *out_port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    if (fd < 0)
        inproc_die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        inproc_die("cannot listen on loopback");
    *out_port = ntohs(sa.sin_port);
    return fd;
}

static void
set_timeout(int fd, int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Reads one request (head, then a Content-Length body) from fd. Returns 0 or -1. */
static int
read_request(int fd)
{
    char buf[65536];
    size_t got = 0;
    char *end = NULL;

    while (!end) {
        if (got == sizeof(buf) - 1)
            return -1;
        ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
        if (n <= 0)
            return -1;
        got += (size_t)n;
        buf[got] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    size_t body = 0;
    for (char *p = buf; p < end; p++)
        if ((p == buf || p[-1] == '\n') && !strncasecmp(p, "content-length:", 15))
            body = strtoul(p + 15, NULL, 10);
    size_t have = got - (size_t)(end + 4 - buf);
    while (have < body) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            return -1;
        have += (size_t)n;
    }
    return 0;
}

/* The backend: every connection gets one request read and the script written back, then
 * a close. One at a time: the daemon's calls wait in the listen queue meanwhile. */
static void *
run_backend(void *arg)
{
    (void)arg;
    while (!atomic_load(&backend_stop)) {
        int fd = accept4(backend_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue; /* the accept timeout: look at backend_stop again */
        set_timeout(fd, 1000);
        if (read_request(fd) == 0) {
            pthread_mutex_lock(&script_mu);
            size_t len = script_len;
            uint8_t *copy = malloc(len ? len : 1);
            int pieces = script_pieces;
            if (!copy)
                abort();
            memcpy(copy, script, len);
            pthread_mutex_unlock(&script_mu);
            for (size_t off = 0; off < len;) {
                size_t n = pieces && len - off > 7 ? 7 : len - off;
                ssize_t k = send(fd, copy + off, n, MSG_NOSIGNAL);
                if (k <= 0)
                    break;
                off += (size_t)k;
                if (pieces)
                    usleep(1000);
            }
            free(copy);
            shutdown(fd, SHUT_WR);
            char sink[4096];
            while (recv(fd, sink, sizeof(sink), 0) > 0)
                ; /* until the daemon closes its end (or the timeout) */
        }
        close(fd);
    }
    return NULL;
}

static void
write_conf(const char *path, unsigned backend_port)
{
    const char *src = getenv("TRIAGE_SOURCE_ROOT");
    FILE *f = fopen(path, "w");
    char b[512];

    if (!f)
        inproc_die("cannot write the config");
    snprintf(b, sizeof(b),
             "url = http://127.0.0.1:%u/v1\nconnect_timeout_ms = 200\n"
             "first_byte_timeout_ms = 400\nidle_timeout_ms = 300\ntimeout_ms = 700\n"
             "max_retries = 0\nbreaker_failures = 1000\n",
             backend_port);
    fprintf(f,
            "[server]\nlisten = 127.0.0.1\nport = %u\nworkers = 1\nmax_body = 16k\n"
            "max_response = 1m\nread_timeout_ms = 500\nidle_timeout_ms = 500\n"
            "shutdown_timeout_ms = 1000\nlog_level = error\n"
            "[auth]\nopen_on_loopback = yes\n"
            "[router]\nmodel = %s/models/default.tmod\naliases = triage\npolicy = cascade\n"
            "tiers = fast, strong\ncascade_low = 0\ncascade_high = 1\nfallback = strong\n"
            "[storage]\npath = %s/out.db\nstore_prompts = full\nqueue_size = 1024\n"
            "flush_interval_ms = 50\n"
            "[learning]\nshadow_rate = 1\njudge = strong\nmax_concurrent = 2\n"
            "retrain_every = 0\n"
            "[backend fast]\nhead = weak\nprice_input = 1\nprice_output = 1\n%s"
            "[backend strong]\nhead = strong\nprice_input = 10\nprice_output = 30\n%s"
            "[backend claude]\napi = anthropic\nhead = weak\n%s",
            port, src && *src ? src : TRIAGE_SOURCE_ROOT, dir, b, b, b);
    if (fclose(f) != 0)
        inproc_die("cannot write the config");
}

/* atexit: a graceful stop, so that nothing is left running under the exit handlers. */
static void
teardown(void)
{
    if (inproc_stop() < 0)
        return;
    atomic_store(&backend_stop, 1);
    pthread_join(backend_thread, NULL);
    close(backend_fd);
    free(script);
    script = NULL;
}

static void
setup(void)
{
    char conf[PATH_MAX];
    unsigned backend_port;

    trace = getenv("FUZZ_RELAY_TRACE") != NULL;
    dir = inproc_begin("relay");
    backend_fd = listen_loopback(&backend_port);
    set_timeout(backend_fd, 100);
    int probe = listen_loopback(&port); /* a free port for the daemon */
    close(probe);
    if (pthread_create(&backend_thread, NULL, run_backend, NULL) != 0)
        inproc_die("cannot start the backend thread");
    snprintf(conf, sizeof(conf), "%s/triage.conf", dir);
    write_conf(conf, backend_port);
    inproc_create(conf);
    inproc_run(port);
    atexit(teardown);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    char req[1024];

    if (!ready) {
        setup();
        ready = 1;
    }
    if (size < 1)
        return 0;
    const char *path = REQUESTS[(data[0] & 15) % N_REQUESTS];
    const char *body = path + strlen(path) + 1;
    int n = snprintf(req, sizeof(req),
                     "POST %s HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n"
                     "anthropic-version: 2023-06-01\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     path, strlen(body), body);
    pthread_mutex_lock(&script_mu);
    free(script);
    script_len = size - 1;
    script = malloc(script_len ? script_len : 1);
    if (!script)
        abort();
    memcpy(script, data + 1, script_len);
    script_pieces = (data[0] >> 4) & 1;
    pthread_mutex_unlock(&script_mu);

    int status = inproc_exchange(req, (size_t)n, CLIENT_CAP_MS);
    if (trace)
        fprintf(stderr, "fuzz_relay: %s %.40s: %d\n", path, body, status);
    inproc_settle(INFLIGHT_CAP_MS);
    return 0;
}
