/* main.c - triaged: parse arguments, check or load the config, run the server. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "conf.h"
#include "log.h"
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
            "  -t, --check-config FILE  check FILE, print OK or the first error, exit 0/1\n"
            "  -V, --version            print the version\n"
            "  -h, --help               print this help\n"
            "\n"
            "Signals: SIGTERM/SIGINT stop gracefully, SIGHUP reloads config and model.\n",
            TRIAGE_SYSCONFDIR);
}

static int
check_config(const char *path)
{
    char err[1024];
    struct conf *c = conf_load(path, err, sizeof(err));

    if (!c) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    conf_destroy(c);
    printf("%s: OK\n", path);
    return 0;
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
    int rc = daemon_server_run(s);
    daemon_server_destroy(s);
    return rc;
}
