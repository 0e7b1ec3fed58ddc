/* routes.c - the paths triaged serves itself, one row each: method, path, who may call
 * it, and its handler; added to the front end's route table (http.h) at start. */
#include <errno.h>

#include "daemon-int.h"

static const struct {
    const char *method;
    const char *path;
    enum daemon_access access;
    unsigned flags;
    daemon_route_fn *fn;
} api_routes[] = {
    /* the API paths that reach a backend: the relay (proxy.c) over their rows (api.c) */
    {"POST", "/v1/chat/completions", DAEMON_ACCESS_CLIENT, DAEMON_ROUTE_OUTCOME, daemon__api_handle},
    {"POST", "/v1/responses", DAEMON_ACCESS_CLIENT, DAEMON_ROUTE_OUTCOME, daemon__api_handle},
    {"POST", "/v1/completions", DAEMON_ACCESS_CLIENT, DAEMON_ROUTE_OUTCOME, daemon__api_handle},
    {"POST", "/v1/embeddings", DAEMON_ACCESS_CLIENT, DAEMON_ROUTE_OUTCOME, daemon__api_handle},
    {"POST", "/v1/messages", DAEMON_ACCESS_CLIENT, DAEMON_ROUTE_OUTCOME, daemon__api_handle},
    {"GET", "/v1/models", DAEMON_ACCESS_CLIENT, 0, daemon__models},
    {"GET", "/v1/models/", DAEMON_ACCESS_CLIENT, DAEMON_ROUTE_UNDER, daemon__model_get},
    /* the outcome log (outcomes.c) */
    {"POST", "/v1/feedback", DAEMON_ACCESS_CLIENT, 0, daemon__feedback},
    {"GET", "/v1/stats", DAEMON_ACCESS_STATS, 0, daemon__stats},
    /* triage itself (admin.c) */
    {"GET", "/healthz", DAEMON_ACCESS_PUBLIC, 0, daemon__healthz},
    {"GET", "/readyz", DAEMON_ACCESS_PUBLIC, 0, daemon__readyz},
    {"POST", "/admin/reload", DAEMON_ACCESS_ADMIN, 0, daemon__admin_reload},
};

int
daemon__api_routes(void)
{
    static int added; /* a second server in one process (tests) finds them there */

    if (added)
        return 0;
    for (size_t i = 0; i < sizeof(api_routes) / sizeof(api_routes[0]); i++) {
        int rc = daemon__route_add(api_routes[i].method, api_routes[i].path,
                                   api_routes[i].access, api_routes[i].flags, api_routes[i].fn);
        if (rc < 0)
            return rc;
    }
    added = 1;
    return 0;
}
