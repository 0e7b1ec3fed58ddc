/* routes.c - the paths triaged serves itself, one row each: method, path, who may call
 * it, and its handler; added to the front end's route table (http.h) at start. */
#include <errno.h>

#include "daemon-int.h"

static const struct {
    const char *method;
    const char *path;
    enum http_access access;
    unsigned flags;
    http_route_fn *fn;
} api_routes[] = {
    /* the API paths that reach a backend: the relay (proxy.c) over their rows (api.c) */
    {"POST", "/v1/chat/completions", HTTP_ACCESS_CLIENT, HTTP_ROUTE_OUTCOME, daemon__api_handle},
    {"POST", "/v1/responses", HTTP_ACCESS_CLIENT, HTTP_ROUTE_OUTCOME, daemon__api_handle},
    {"POST", "/v1/completions", HTTP_ACCESS_CLIENT, HTTP_ROUTE_OUTCOME, daemon__api_handle},
    {"POST", "/v1/embeddings", HTTP_ACCESS_CLIENT, HTTP_ROUTE_OUTCOME, daemon__api_handle},
    {"POST", "/v1/messages", HTTP_ACCESS_CLIENT, HTTP_ROUTE_OUTCOME, daemon__api_handle},
    {"GET", "/v1/models", HTTP_ACCESS_CLIENT, 0, api_models},
    {"GET", "/v1/models/", HTTP_ACCESS_CLIENT, HTTP_ROUTE_UNDER, api_model_get},
    /* the outcome log (outcomes.c) */
    {"POST", "/v1/feedback", HTTP_ACCESS_CLIENT, 0, api_feedback},
    {"GET", "/v1/stats", HTTP_ACCESS_STATS, 0, api_stats},
    /* triage itself (admin.c) */
    {"GET", "/healthz", HTTP_ACCESS_PUBLIC, 0, api_healthz},
    {"GET", "/readyz", HTTP_ACCESS_PUBLIC, 0, api_readyz},
    {"POST", "/admin/reload", HTTP_ACCESS_ADMIN, 0, api_admin_reload},
};

int
api_routes_add(void)
{
    static int added; /* a second server in one process (tests) finds them there */

    if (added)
        return 0;
    for (size_t i = 0; i < sizeof(api_routes) / sizeof(api_routes[0]); i++) {
        int rc = http_route_add(api_routes[i].method, api_routes[i].path,
                                   api_routes[i].access, api_routes[i].flags, api_routes[i].fn);
        if (rc < 0)
            return rc;
    }
    added = 1;
    return 0;
}
