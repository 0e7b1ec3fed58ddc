/* inproc.c - the in-process server shared by fuzz_http and fuzz_relay (see inproc.h). */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "harness.h"
#include "hooks.h"
#include "inproc.h"
#include "server.h"

#define START_CAP_MS 5000  /* from daemon_server_run() to the first /healthz 200 */
#define HEALTH_CAP_MS 2000 /* one GET /healthz */

static const char *target;
static struct daemon_server *srv;
static pthread_t srv_thread, setup_thread;
static atomic_int srv_returned;
static unsigned port;
static char dir[64];

void
inproc_die(const char *why)
{
    fprintf(stderr, "fuzz_%s: %s\n", target, why);
    abort();
}

static void
remove_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    char file[PATH_MAX];

    if (!d)
        return;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            snprintf(file, sizeof(file), "%s/%s", path, de->d_name);
            unlink(file);
        }
    closedir(d);
    rmdir(path);
}

/* Removes what runs that crashed left (no exit handler ran then): the folders
 * /tmp/fuzz-TARGET-PID-* of processes that are gone. */
static void
sweep_stale(void)
{
    DIR *d = opendir("/tmp");
    struct dirent *de;
    char prefix[64], path[PATH_MAX];
    size_t pl = (size_t)snprintf(prefix, sizeof(prefix), "fuzz-%s-", target);

    if (!d)
        return;
    while ((de = readdir(d))) {
        long pid;
        int n = 0;
        if (strncmp(de->d_name, prefix, pl) != 0 ||
            sscanf(de->d_name + pl, "%ld-%n", &pid, &n) != 1 || n == 0 || pid <= 0 ||
            kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        snprintf(path, sizeof(path), "/tmp/%s", de->d_name);
        remove_dir(path);
    }
    closedir(d);
}

const char *
inproc_begin(const char *name)
{
    target = name;
    signal(SIGPIPE, SIG_IGN);
    setup_thread = pthread_self();
    sweep_stale();
    snprintf(dir, sizeof(dir), "/tmp/fuzz-%s-%ld-XXXXXX", name, (long)getpid());
    if (!mkdtemp(dir))
        inproc_die("mkdtemp");
    return dir;
}

void
inproc_create(const char *conf)
{
    char err[1024];

    srv = daemon_server_create(conf, err, sizeof(err));
    if (!srv) {
        fprintf(stderr, "fuzz_%s: daemon_server_create: %s\n", target, err);
        abort();
    }
}

static void *
run_server(void *arg)
{
    (void)arg;
    daemon_server_run(srv);
    atomic_store(&srv_returned, 1);
    return NULL;
}

static int
health_ok(void)
{
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n";

    return inproc_exchange(req, sizeof(req) - 1, HEALTH_CAP_MS) == 200;
}

void
inproc_run(unsigned server_port)
{
    port = server_port;
    if (pthread_create(&srv_thread, NULL, run_server, NULL) != 0)
        inproc_die("cannot start the server thread");
    double until = h_now_ms() + START_CAP_MS;
    while (!health_ok()) {
        if (h_now_ms() > until)
            inproc_die("the server never answered /healthz");
        usleep(10000);
    }
}

int
inproc_stop(void)
{
    if (!pthread_equal(pthread_self(), setup_thread))
        return -1;
    if (!atomic_load(&srv_returned))
        kill(getpid(), SIGTERM); /* the server's uv_signal handler: drain and return */
    pthread_join(srv_thread, NULL);
    daemon_server_destroy(srv);
    srv = NULL;
    remove_dir(dir);
    return 0;
}

int
inproc_exchange(const char *req, size_t len, double cap_ms)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 0, .tv_usec = 100 * 1000}; /* a look at the clock */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char head[16] = "", buf[65536];
    size_t got = 0;
    double until = h_now_ms() + cap_ms;

    if (fd < 0)
        inproc_die("socket");
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        send(fd, req, len, MSG_NOSIGNAL) != (ssize_t)len) {
        close(fd);
        return 0;
    }
    while (h_now_ms() < until) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            continue;
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n && got + (size_t)i < sizeof(head) - 1; i++)
            head[got + (size_t)i] = buf[i];
        got += (size_t)n;
    }
    close(fd);
    /* whatever MHD and triaged answer, it is an HTTP/1.x status line first */
    if (got && memcmp(head, "HTTP/1.", got < 7 ? got : 7) != 0) {
        fprintf(stderr, "fuzz_%s: the answer starts with \"%.15s\"\n", target, head);
        abort();
    }
    return got >= 12 ? atoi(head + 9) : 0;
}

void
inproc_settle(int cap_ms)
{
    struct daemon_gauges g;
    double until = h_now_ms() + cap_ms;

    for (;;) {
        if (atomic_load(&srv_returned))
            inproc_die("daemon_server_run returned");
        if (daemon_gauges_get(&g) < 0)
            inproc_die("daemon_gauges_get: no snapshot");
        if (g.inflight == 0 && g.upstream_inflight == 0)
            break;
        if (h_now_ms() > until) {
            fprintf(stderr,
                    "fuzz_%s: %llu requests and %llu backend calls still in flight "
                    "%d ms after the input\n",
                    target, (unsigned long long)g.inflight, (unsigned long long)g.upstream_inflight,
                    cap_ms);
            abort();
        }
        usleep(500);
    }
    if (!health_ok())
        inproc_die("the server no longer answers GET /healthz with 200");
}
