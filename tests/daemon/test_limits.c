/* test_limits.c - every server limit holds and the daemon goes on serving: slow bodies,
 * idle keep-alive connections, too many connections (refused at once),
 * oversized headers, a full disk.
 *
 * usage: test_limits TRIAGED MOCKLLM MAKE_MODEL
 * Each case starts its own triaged on a free loopback port with a generated config
 * (one worker, so the connection limit is exact) in front of one mockllm. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"

static struct h_env env;

static unsigned
start(const char *name, const char *server_extra, const char *storage_extra, pid_t *pid)
{
    return h_start_triaged(&env, name, server_extra, storage_extra, NULL, pid);
}

static void
stop(pid_t pid)
{
    int status = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A body trickling in slower than read_timeout_ms is cut off. */
static void
test_read_timeout(void)
{
    pid_t pid;
    unsigned port = start("slow-body", "read_timeout_ms = 500", NULL, &pid);
    const char head[] = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                        "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{";

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    int fd = h_dial(port, 200);
    CHECK(fd >= 0);
    CHECK(send(fd, head, sizeof(head) - 1, MSG_NOSIGNAL) > 0);
    double t0 = h_now_ms();
    int cut = 0;
    /* one byte every 100 ms would take 20 s to finish the body */
    while (!cut && h_now_ms() - t0 < 5000) {
        if (send(fd, " ", 1, MSG_NOSIGNAL) < 0) {
            cut = 1;
            break;
        }
        cut = h_read_to_close(fd, NULL, 0) == 1;
        usleep(100 * 1000);
    }
    double took = h_now_ms() - t0;
    fprintf(stderr, "read timeout: a trickling body was cut after %.0f ms\n", took);
    CHECK(cut && took >= 400 && took < 3000);
    close(fd);

    struct h_resp r;
    h_get(port, "/healthz", &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
    stop(pid);
}

/* A keep-alive connection idle longer than idle_timeout_ms is closed. */
static void
test_idle_timeout(void)
{
    pid_t pid;
    unsigned port = start("idle", "idle_timeout_ms = 1000", NULL, &pid);
    const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    int fd = h_dial(port, 300);
    CHECK(fd >= 0);
    CHECK(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) > 0);
    CHECK(h_read_to_close(fd, NULL, 0) == 0); /* answered, then kept alive */
    double t0 = h_now_ms();
    int closed = 0;
    while (!closed && h_now_ms() - t0 < 5000)
        closed = h_read_to_close(fd, NULL, 0);
    double took = h_now_ms() - t0;
    fprintf(stderr, "idle timeout: an idle keep-alive connection was closed after %.0f ms\n",
            took);
    CHECK(closed && took < 3500);
    close(fd);
    stop(pid);
}

/* Beyond max_connections a new connection is closed at once; the held ones stay,
 * and as soon as one closes, new connections are served again. */
static void
test_max_connections(void)
{
    pid_t pid;
    unsigned port = start("conns", "max_connections = 4", NULL, &pid);
    int held[4];

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    usleep(100 * 1000); /* the start-up health check's connection has gone */
    for (int i = 0; i < 4; i++) {
        held[i] = h_dial(port, 300);
        CHECK(held[i] >= 0);
    }
    usleep(100 * 1000);
    for (int round = 0; round < 3; round++) {
        int extra = h_dial(port, 1000);
        CHECK(extra >= 0 && h_read_to_close(extra, NULL, 0) == 1);
        if (extra >= 0)
            close(extra);
    }
    for (int i = 0; i < 4; i++)
        CHECK(h_read_to_close(held[i], NULL, 0) == 0); /* the first four stay */
    close(held[0]);
    usleep(200 * 1000);

    struct h_resp r;
    h_get(port, "/healthz", &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
    for (int i = 1; i < 4; i++)
        close(held[i]);
    stop(pid);
}

/* More connections than select()'s FD_SETSIZE (MHD's default limit, 1020) are held
 * with the default max_connections, and the daemon still serves. Skipped when this
 * process cannot open that many files. */
static void
test_many_connections(void)
{
    enum { N = 1200 };
    static int held[N];
    struct rlimit rl;
    pid_t pid;

    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < N + 200) {
        fprintf(stderr, "many connections: skipped (open files limit %llu)\n",
                (unsigned long long)rl.rlim_cur);
        return;
    }
    unsigned port = start("many", NULL, NULL, &pid);
    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    int opened = 0;
    for (int i = 0; i < N; i++)
        if ((held[i] = h_dial(port, 200)) >= 0)
            opened++;
    usleep(300 * 1000);
    struct h_resp r;
    h_get(port, "/healthz", &r);
    fprintf(stderr, "many connections: %d held, then /healthz answered %ld\n", opened, r.status);
    CHECK(opened == N && r.status == 200);
    h_resp_free(&r);
    for (int i = 0; i < N; i++)
        if (held[i] >= 0)
            close(held[i]);
    stop(pid);
}

/* Headers beyond max_header get 431 from the HTTP layer; the daemon goes on. */
static void
test_header_limit(void)
{
    pid_t pid;
    unsigned port = start("headers", "max_header = 4k", NULL, &pid);
    static char big[24 * 1024], small[1200];
    struct h_resp r;

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    snprintf(small, sizeof(small), "X-Filler: %01000d", 0);
    snprintf(big, sizeof(big), "X-Filler: %020000d", 0);
    const char *const ok_headers[] = {small, NULL};
    const char *const big_headers[] = {big, NULL};
    struct h_req ok = {.path = "/healthz", .headers = ok_headers};
    struct h_req too_big = {.path = "/healthz", .headers = big_headers};

    h_do(port, &ok, &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
    h_do(port, &too_big, &r);
    CHECK(r.status == 431);
    h_resp_free(&r);
    h_get(port, "/healthz", &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
    stop(pid);
}

/* The outcome log on a full filesystem: requests keep succeeding, /readyz says
 * degraded and counts the lost rows. Needs a tmpfs mount (root); skipped without. */
static void
test_disk_full(void)
{
    char mnt[512], storage[700];
    pid_t pid;

    snprintf(mnt, sizeof(mnt), "%s/small", env.dir);
    mkdir(mnt, 0700);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=256k") < 0) {
        fprintf(stderr, "disk full: skipped (cannot mount a tmpfs: %s)\n", strerror(errno));
        return;
    }
    snprintf(storage, sizeof(storage),
             "path = %s/log.db\nstore_prompts = full\nflush_interval_ms = 10\nbatch_size = 8\n",
             mnt);
    unsigned port = start("full", NULL, storage, &pid);
    if (!port) {
        CHECK(!"triaged started");
        umount(mnt);
        return;
    }
    /* 8 KB of prompt per row: a 256 KB filesystem is full after a few dozen */
    static char body[10000];
    int n = snprintf(body, sizeof(body), "{\"model\":\"triage\",\"messages\":[{\"role\":\"user\","
                                         "\"content\":\"");
    for (int i = 0; i < 8000; i++)
        body[n++] = (char)('a' + i % 26);
    snprintf(body + n, sizeof(body) - (size_t)n, "\"}]}");
    int ok = 0;
    for (int i = 0; i < 120; i++) {
        struct h_resp r;
        h_chat(port, body, &r);
        ok += r.status == 200;
        h_resp_free(&r);
    }
    CHECK(ok == 120);

    int degraded = 0;
    json_int_t failed = 0;
    for (int i = 0; i < 50 && !degraded; i++) {
        struct h_resp r;
        usleep(100 * 1000);
        h_get(port, "/readyz", &r);
        json_t *j = json_loadb(r.body, r.len, 0, NULL);
        CHECK(r.status == 200);
        degraded = json_is_true(json_object_get(j, "storage_degraded")) &&
                   !strcmp(json_string_value(json_object_get(j, "status")), "degraded");
        failed = json_integer_value(json_object_get(j, "log_rows_failed"));
        json_decref(j);
        h_resp_free(&r);
    }
    fprintf(stderr, "disk full: 120 of 120 requests served; /readyz degraded=%d, %lld rows lost\n",
            degraded, (long long)failed);
    CHECK(degraded);

    struct h_resp r;
    h_chat(port, "{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
    stop(pid);
    umount(mnt);
}

int
main(int argc, char **argv)
{
    int rc = h_env_setup(&env, "limits", argc, argv);

    if (rc)
        return rc;
    if (h_env_make_model(&env, NULL) < 0)
        return 1;
    test_read_timeout();
    test_idle_timeout();
    test_max_connections();
    test_many_connections();
    test_header_limit();
    test_disk_full();
    return h_env_finish(&env);
}
