/* dashboard_server.c - a tiny HTTP server for the dashboard test: the embedded page plus a
 * fixed GET /v1/stats answer from a JSON file, as the daemon would serve them.
 *
 * Usage: dashboard_server STATS.json|--unauthorized [PORT]  (PORT 0 or absent: any free
 * port). With --unauthorized, GET /v1/stats answers 401 as triaged does without a key.
 * Prints "port N" once listening, then serves until SIGTERM or SIGINT. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

#include "ops/ops.h"

static char *stats;
static size_t stats_len;
static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static enum MHD_Result
reply(struct MHD_Connection *c, unsigned status, const char *type, const void *data, size_t len,
      const char *etag)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    if (etag) { /* the dashboard's headers, as dashboard_attach() sends them */
        MHD_add_response_header(r, "ETag", etag);
        MHD_add_response_header(r, "Content-Security-Policy", DASHBOARD_CSP);
        MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    }
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
       const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    (void)cls, (void)version, (void)upload_data, (void)upload_data_size, (void)con_cls;
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return reply(c, 405, "text/plain", "method not allowed\n", 19, NULL);
    if (!strcmp(url, "/v1/stats") && !stats) {
        static const char e[] = "{\"error\":{\"message\":\"Missing API key\",\"type\":"
                                "\"invalid_request_error\",\"param\":null,\"code\":"
                                "\"missing_api_key\"}}";
        return reply(c, 401, "application/json", e, sizeof(e) - 1, NULL);
    }
    if (!strcmp(url, "/v1/stats"))
        return reply(c, 200, "application/json", stats, stats_len, NULL);
    const struct dashboard_asset *a = dashboard_find(url);
    if (!a)
        return reply(c, 404, "text/plain", "not found\n", 10, NULL);
    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
    if (inm && !strcmp(inm, a->etag))
        return reply(c, 304, a->content_type, "", 0, a->etag);
    return reply(c, 200, a->content_type, a->data, a->len, a->etag);
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s STATS.json [PORT]\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "--unauthorized")) {
        FILE *f = fopen(argv[1], "rb");
        if (!f) {
            perror(argv[1]);
            return 1;
        }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        rewind(f);
        stats = malloc((size_t)n + 1);
        if (!stats || fread(stats, 1, (size_t)n, f) != (size_t)n) {
            perror(argv[1]);
            return 1;
        }
        fclose(f);
        stats_len = (size_t)n;
    }

    unsigned port = argc > 2 ? (unsigned)atoi(argv[2]) : 0;
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
                                            (uint16_t)port, NULL, NULL, handle, NULL,
                                            MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "cannot listen on port %u\n", port);
        free(stats);
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("port %u\n", info ? info->port : port);
    fflush(stdout);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    while (!stop)
        pause();
    MHD_stop_daemon(d);
    free(stats);
    return 0;
}
