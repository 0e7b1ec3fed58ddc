/* main.c - triaged: parse arguments, check or load the config, run the server. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "config.h"
#include "hooks.h"
#include "log.h"
#include "ops/ops.h"
#include "server.h"

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: triaged [--config FILE]\n"
            "       triaged --check-config FILE\n"
            "       triaged --version | --help\n"
            "\n"
            "Routes OpenAI chat-completions requests to the backends in FILE by predicted\n"
            "difficulty. Default config: %s/triage.conf\n"
            "\n"
            "  -c, --config FILE        run with this config\n"
            "  -t, --check-config FILE  check FILE and the model and key files it names;\n"
            "                           print OK or the first error, exit 0/1\n"
            "  -V, --version            print the version\n"
            "  -h, --help               print this help\n"
            "\n"
            "Signals: SIGTERM/SIGINT stop gracefully, SIGHUP reloads config and model.\n",
            TRIAGE_SYSCONFDIR);
}

/* httpd -n style: OK or the first error; also loads what the config names. */
static int
check_config(const char *path)
{
    char err[1024];

    if (daemon_server_check(path, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("%s: OK\n", path);
    return 0;
}

/* metrics_set_gauges callback: the values the server owns. */
static void
fill_gauges(void *ud, struct metrics_gauges *g)
{
    static _Thread_local int circuit[DAEMON_GAUGES_MAX_BACKENDS];
    struct daemon_gauges dg;

    if (daemon_gauges_get(&dg) < 0)
        return;
    g->inflight = (int64_t)dg.inflight;
    snprintf(g->model_version, sizeof(g->model_version), "%s", dg.model_version);
    g->model_loaded_time = dg.model_loaded_unix;
    g->threshold = dg.threshold;
    g->log_queue_depth = dg.log_queue_depth;
    g->log_written = dg.log_written;
    g->log_dropped = dg.log_dropped;
    g->log_failed = dg.log_failed;
    for (size_t i = 0; i < dg.n_backends; i++)
        circuit[i] = dg.circuit[i] == 2   ? METRICS_CIRCUIT_OPEN
                     : dg.circuit[i] == 1 ? METRICS_CIRCUIT_HALF_OPEN
                                          : METRICS_CIRCUIT_CLOSED;
    g->circuit = circuit;
    g->n_backends = dg.n_backends;
}

/* The other modules' endpoints and event subscribers (hooks.h). */
static struct metrics *
attach_modules(const struct conf *c)
{
    const char **names = calloc(c->n_backends ? c->n_backends : 1, sizeof(*names));
    struct metrics *m;

    if (!names)
        abort();
    for (size_t i = 0; i < c->n_backends; i++)
        names[i] = c->backends[i].name;
    m = metrics_create(names, c->n_backends);
    free(names);
    metrics_set_gauges(m, fill_gauges, NULL);
    if (metrics_attach(m) < 0 || dashboard_attach() < 0)
        fatal("cannot register the /metrics and /dashboard endpoints");
    return m;
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", required_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = TRIAGE_SYSCONFDIR "/triage.conf";
    char err[1024];
    int ch;

    while ((ch = getopt_long(argc, argv, "c:t:Vh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 't':
            return check_config(optarg);
        case 'V':
            printf("triaged %s\n", TRIAGE_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    struct daemon_server *s = daemon_server_create(path, err, sizeof(err));
    if (!s) {
        log_error("cannot start: %s", err);
        return 1;
    }
    struct metrics *m = attach_modules(daemon_server_conf(s));
    int rc = daemon_server_run(s);
    daemon_server_destroy(s);
    metrics_destroy(m);
    return rc;
}
