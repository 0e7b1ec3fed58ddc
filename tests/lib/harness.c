/* harness.c - process and HTTP helpers for the C test programs (see harness.h). */
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "harness.h"

int h_failures;

double
h_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

struct sink {
    struct h_resp *r;
    double t0;
    int is_body;
};

struct h_ctx {
    struct sink body, head;
    int own; /* the handle is ours to clean up */
};

static size_t
on_data(char *p, size_t sz, size_t n, void *arg)
{
    struct sink *s = arg;
    struct h_resp *r = s->r;
    size_t add = sz * n;
    char **buf = s->is_body ? &r->body : &r->head;
    size_t *len = s->is_body ? &r->len : &r->hlen;

    if (s->is_body && r->first_byte_ms < 0 && add > 0)
        r->first_byte_ms = h_now_ms() - s->t0;
    *buf = realloc(*buf, *len + add + 1);
    if (!*buf)
        abort();
    memcpy(*buf + *len, p, add);
    if (!s->is_body) { /* the same bytes again, each line ended by a NUL for h_header */
        r->head_values = realloc(r->head_values, *len + add + 1);
        if (!r->head_values)
            abort();
        for (size_t i = 0; i < add; i++)
            r->head_values[*len + i] = p[i] == '\r' || p[i] == '\n' ? '\0' : p[i];
        r->head_values[*len + add] = '\0';
    }
    *len += add;
    (*buf)[*len] = '\0';
    return add;
}

CURL *
h_easy(unsigned port, const struct h_req *req, struct h_resp *r, struct curl_slist **hl)
{
    CURL *h = req->on ? req->on : curl_easy_init();
    char url[512];
    struct h_ctx *ctx = calloc(1, sizeof(*ctx));
    int expect = 0;

    if (!h || !ctx)
        abort();
    if (req->on)
        curl_easy_reset(h); /* its options go; its connection stays */
    ctx->own = !req->on;
    memset(r, 0, sizeof(*r));
    r->body = calloc(1, 1);
    r->head = calloc(1, 1);
    r->first_byte_ms = -1;
    ctx->body = (struct sink){r, h_now_ms(), 1};
    ctx->head = (struct sink){r, h_now_ms(), 0};
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, req->path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PRIVATE, ctx);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &ctx->body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &ctx->head);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, req->timeout_ms ? req->timeout_ms : 15000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    *hl = NULL;
    for (const char *const *p = req->headers; p && *p; p++) {
        *hl = curl_slist_append(*hl, *p);
        expect |= !strncasecmp(*p, "Expect:", 7);
    }
    if (req->body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body);
        *hl = curl_slist_append(*hl, "Content-Type: application/json");
        if (!expect)
            *hl = curl_slist_append(*hl, "Expect:");
    }
    if (req->method)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, *hl);
    return h;
}

void
h_easy_done(CURL *h, struct h_resp *r, struct curl_slist *hl)
{
    struct h_ctx *ctx = NULL;

    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &r->connects);
    curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&ctx);
    r->total_ms = h_now_ms() - ctx->body.t0;
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hl);
    if (ctx->own)
        curl_easy_cleanup(h);
    free(ctx);
}

void
h_do(unsigned port, const struct h_req *req, struct h_resp *r)
{
    struct curl_slist *hl;
    CURL *h = h_easy(port, req, r, &hl);

    r->rc = curl_easy_perform(h);
    h_easy_done(h, r, hl);
}

void
h_get(unsigned port, const char *path, struct h_resp *r)
{
    struct h_req req = {.path = path};

    h_do(port, &req, r);
}

void
h_chat(unsigned port, const char *body, struct h_resp *r)
{
    struct h_req req = {.path = "/v1/chat/completions", .body = body};

    h_do(port, &req, r);
}

void
h_resp_free(struct h_resp *r)
{
    free(r->body);
    free(r->head);
    free(r->head_values);
    memset(r, 0, sizeof(*r));
}

const char *
h_header(const struct h_resp *r, const char *name)
{
    size_t nl = strlen(name);

    for (const char *p = r->head; p && *p && r->head_values;) {
        const char *e = strstr(p, "\r\n");
        if (!e)
            break;
        if ((size_t)(e - p) > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            return r->head_values + (v - r->head); /* the same bytes, ended where e is */
        }
        p = e + 2;
    }
    return NULL;
}

const char *
h_error_code(const struct h_resp *r)
{
    static char code[128];
    json_t *j = json_loadb(r->body, r->len, 0, NULL);
    const char *c = json_string_value(json_object_get(json_object_get(j, "error"), "code"));

    snprintf(code, sizeof(code), "%s", c ? c : "");
    json_decref(j);
    return code;
}

void
h_parse_sse(const char *body, struct h_sse *s)
{
    memset(s, 0, sizeof(*s));
    for (const char *p = body; (p = strstr(p, "data: ")) != NULL;) {
        p += 6;
        const char *e = strstr(p, "\n\n");
        if (!e)
            break;
        if (s->done)
            s->after_done++;
        if (!strncmp(p, "[DONE]", 6)) {
            s->done = 1;
            p = e;
            continue;
        }
        json_t *j = json_loadb(p, (size_t)(e - p), 0, NULL);
        const char *object = json_string_value(json_object_get(j, "object"));
        if (j && json_object_get(j, "error")) {
            s->error_events++;
        } else if (!object || strcmp(object, "chat.completion.chunk")) {
            s->bad++;
        } else {
            json_t *choices = json_object_get(j, "choices");
            json_t *c0 = json_array_get(choices, 0);
            json_t *usage = json_object_get(j, "usage");
            const char *m = json_string_value(json_object_get(j, "model"));
            const char *d =
                json_string_value(json_object_get(json_object_get(c0, "delta"), "content"));
            s->chunks++;
            snprintf(s->model, sizeof(s->model), "%s", m ? m : "");
            if (json_array_size(choices) == 0 && json_is_object(usage)) {
                s->usage_chunks++;
                s->completion_tokens =
                    (long)json_integer_value(json_object_get(usage, "completion_tokens"));
            } else if (json_is_string(json_object_get(c0, "finish_reason"))) {
                s->stop_chunks++;
            } else if (d) {
                s->content_chunks++;
            } else {
                s->bad++;
            }
            if (d)
                strncat(s->content, d, sizeof(s->content) - strlen(s->content) - 1);
        }
        json_decref(j);
        p = e;
    }
}

/* Starts argv with its stdout (and stderr when set) on a pipe; *fd gets the read end.
 * Returns the child's pid, or -1. */
static pid_t
spawn_piped(char *const argv[], int with_stderr, int *fd)
{
    int p[2];
    pid_t pid;

    if (pipe(p) < 0)
        return -1;
    pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        if (with_stderr)
            dup2(p[1], STDERR_FILENO);
        close(p[0]);
        close(p[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    *fd = p[0];
    return pid;
}

int
h_spawn_mock(char *const argv[], pid_t *pid, unsigned *port)
{
    char line[256] = {0};
    int fd;

    *pid = spawn_piped(argv, 0, &fd);
    if (*pid < 0)
        return -1;
    FILE *f = fdopen(fd, "r");
    if (!fgets(line, sizeof(line), f) || sscanf(line, "listening on %u", port) != 1) {
        fclose(f);
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
        return -1;
    }
    fclose(f);
    return 0;
}

int
h_spawn_daemon(char *const argv[], unsigned port, const char *errfile, pid_t *pid)
{
    *pid = fork();
    if (*pid < 0)
        return -1;
    if (*pid == 0) {
        if (errfile) {
            int fd = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) {
                dup2(fd, STDERR_FILENO);
                close(fd);
            }
        }
        execv(argv[0], argv);
        _exit(127);
    }
    for (int i = 0; i < 250; i++) {
        struct h_resp r;
        int st;
        if (waitpid(*pid, &st, WNOHANG) == *pid)
            return -1;
        struct h_req req = {.path = "/healthz", .timeout_ms = 1000};
        h_do(port, &req, &r);
        long status = r.status;
        h_resp_free(&r);
        if (status == 200)
            return 0;
        usleep(20000);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    return -1;
}

int
h_stop(pid_t pid, int sig)
{
    int st = 0;

    kill(pid, sig);
    waitpid(pid, &st, 0);
    return st;
}

/* The first port of the kernel's range for outgoing connections. */
static unsigned
ephemeral_low(void)
{
    unsigned low = 32768, high = 0;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");

    if (f) {
        if (fscanf(f, "%u %u", &low, &high) != 2 || low <= 12000)
            low = 32768;
        fclose(f);
    }
    return low;
}

/* Picks below the outgoing-connection range: a port the kernel hands out to client
 * sockets can be taken by any test running beside this one between the pick and the
 * server's bind() (a CI run once failed so). Below it only a listener can collide,
 * and bind() tells whether one holds the port now. */
unsigned
h_free_port(void)
{
    static unsigned seed, given[64];
    static size_t n_given;
    unsigned low = ephemeral_low();

    if (!seed)
        seed = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL);
    for (int tries = 0; tries < 200; tries++) {
        seed = seed * 1103515245u + 12345u;
        unsigned port = 10000 + (seed >> 8) % (low - 10000);
        int taken = 0;
        for (size_t i = 0; i < n_given && i < 64; i++)
            taken |= given[i] == port;
        if (taken)
            continue;

        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            return 0;
        int ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        if (ok) {
            given[n_given++ % 64] = port;
            return port;
        }
    }
    return 0;
}

int
h_run(char *const argv[], char *out, size_t outlen)
{
    int fd, st = 0;
    size_t n = 0;
    pid_t pid = spawn_piped(argv, 1, &fd);

    if (pid < 0)
        return -1;
    for (;;) {
        ssize_t k = read(fd, out + n, outlen - 1 - n);
        if (k <= 0)
            break;
        n += (size_t)k;
        if (n == outlen - 1)
            break;
    }
    out[n] = '\0';
    close(fd);
    if (waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int
h_env_setup(struct h_env *e, const char *name, int argc, char **argv)
{
    char *mock_argv[] = {NULL, "--port", "0", NULL};

    if (argc != 4) {
        fprintf(stderr, "usage: %s TRIAGED MOCKLLM MAKE_MODEL\n", argv[0]);
        return 2;
    }
    e->triaged = argv[1];
    e->mock = argv[2];
    e->make_model = argv[3];
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(e->dir, sizeof(e->dir), "/tmp/triage-%s-XXXXXX", name);
    if (!mkdtemp(e->dir)) {
        perror("mkdtemp");
        return 1;
    }
    mock_argv[0] = (char *)e->mock;
    if (h_spawn_mock(mock_argv, &e->mock_pid, &e->mock_port) < 0) {
        fprintf(stderr, "cannot start mockllm\n");
        return 1;
    }
    return 0;
}

int
h_env_finish(struct h_env *e)
{
    char cmd[300];

    h_stop(e->mock_pid, SIGTERM);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
    if (h_failures == 0 && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", e->dir);
    curl_global_cleanup();
    printf("%s: %d failed checks\n", h_failures ? "FAIL" : "PASS", h_failures);
    return h_failures ? 1 : 0;
}

unsigned
h_start_triaged(struct h_env *e, const char *name, const char *server_extra,
                const char *storage_extra, const char *tail, pid_t *pid)
{
    unsigned port = h_free_port();
    char path[512], log[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s.conf", e->dir, name);
    f = fopen(path, "w");
    if (!f) {
        perror(path);
        return 0;
    }
    fprintf(f,
            "[server]\nlisten = 127.0.0.1\nport = %u\nworkers = 1\nshutdown_timeout_ms = 2000\n%s\n"
            "[router]\nmodel = m.tmod\ntiers = fast, strong\n"
            "%s%s\n"
            "[backend fast]\nurl = http://127.0.0.1:%u/v1\n"
            "[backend strong]\nurl = http://127.0.0.1:%u/v1\n%s",
            port, server_extra ? server_extra : "", storage_extra ? "[storage]\n" : "",
            storage_extra ? storage_extra : "", e->mock_port, e->mock_port, tail ? tail : "");
    fclose(f);
    snprintf(log, sizeof(log), "%s/%s.log", e->dir, name);
    char *argv[] = {(char *)e->triaged, "--config", path, NULL};
    if (h_spawn_daemon(argv, port, log, pid) < 0) {
        fprintf(stderr, "%s: triaged did not start (see %s)\n", name, log);
        return 0;
    }
    return port;
}

long long
h_db_int(const struct h_env *e, const char *name, const char *sql)
{
    char path[512];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -1;

    snprintf(path, sizeof(path), "%s/%s.db", e->dir, name);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

long long
h_db_wait(const struct h_env *e, const char *name, const char *sql, long long want)
{
    double t0 = h_now_ms();
    long long v;

    while ((v = h_db_int(e, name, sql)) < want && h_now_ms() - t0 < 60000)
        usleep(50 * 1000);
    return v;
}

int
h_dial(unsigned port, int timeout_ms)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

int
h_read_to_close(int fd, char *out, size_t cap)
{
    char buf[4096];
    size_t len = 0;

    if (out && cap)
        out[0] = '\0';
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return 1;
        if (n < 0)
            return 0;
        if (out && cap && len + 1 < cap) {
            size_t take = (size_t)n < cap - 1 - len ? (size_t)n : cap - 1 - len;
            memcpy(out + len, buf, take);
            len += take;
            out[len] = '\0';
        }
    }
}

int
h_raw(unsigned port, const void *req, size_t n, char *out, size_t cap, int timeout_ms)
{
    static char tmp[65536];
    int fd = h_dial(port, timeout_ms);
    int status = 0;

    if (fd < 0)
        return 0;
    if (!out) {
        out = tmp;
        cap = sizeof(tmp);
    }
    if (send(fd, req, n, MSG_NOSIGNAL) >= 0)
        h_read_to_close(fd, out, cap);
    else
        out[0] = '\0';
    close(fd);
    if (sscanf(out, "HTTP/1.%*d %d", &status) != 1)
        status = 0;
    return status;
}

int
h_env_make_model(struct h_env *e, const char *seed)
{
    char path[512], out[512];
    char *argv[] = {(char *)e->make_model, path, (char *)seed, NULL};

    snprintf(path, sizeof(path), "%s/m.tmod", e->dir);
    if (h_run(argv, out, sizeof(out)) != 0) {
        fprintf(stderr, "cannot build the test model: %s\n", out);
        return -1;
    }
    return 0;
}

void
h_readyz_model(unsigned port, char *out, size_t len)
{
    struct h_resp r;
    h_get(port, "/readyz", &r);
    json_t *j = json_loadb(r.body ? r.body : "", r.len, 0, NULL);
    const char *v = json_string_value(json_object_get(j, "model"));
    snprintf(out, len, "%s", v ? v : "");
    json_decref(j);
    h_resp_free(&r);
}
