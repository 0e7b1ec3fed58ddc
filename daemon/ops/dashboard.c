/* dashboard.c - looks up the dashboard files that dashboard-embed compiled into the binary. */
#include <stdlib.h>
#include <string.h>

#include "dashboard.h"
#include "hooks.h"

/* Defined in the generated dashboard-assets.c (daemon/ops/dashboard/embed.c). */
extern const struct dashboard_asset dashboard__assets[];
extern const size_t dashboard__n_assets;

const struct dashboard_asset *
dashboard_find(const char *path)
{
    if (!path)
        return NULL;
    if (!strcmp(path, "/dashboard") || !strcmp(path, "/dashboard/"))
        path = "/dashboard/index.html";
    for (size_t i = 0; i < dashboard__n_assets; i++)
        if (!strcmp(dashboard__assets[i].path, path))
            return &dashboard__assets[i];
    return NULL;
}

static void
on_dashboard(void *ctx, const struct daemon_http_request *req, struct daemon_http_reply *reply)
{
    (void)ctx;
    const struct dashboard_asset *a = dashboard_find(req->path);
    if (!a) {
        /* the error every other unknown path gets (the path is not echoed) */
        static const char nf[] = "{\"error\":{\"message\":\"No such dashboard file\","
                                 "\"type\":\"invalid_request_error\",\"param\":null,"
                                 "\"code\":\"not_found\"}}\n";
        reply->status = 404;
        reply->content_type = "application/json";
        reply->body = malloc(sizeof(nf));
        if (!reply->body)
            abort();
        memcpy(reply->body, nf, sizeof(nf));
        reply->len = sizeof(nf) - 1;
        return;
    }
    reply->headers[0].name = "ETag";
    reply->headers[0].value = a->etag;
    reply->headers[1].name = "Cache-Control";
    reply->headers[1].value = "no-cache";
    reply->headers[2].name = "Content-Security-Policy";
    reply->headers[2].value = DASHBOARD_CSP;
    reply->headers[3].name = "X-Content-Type-Options";
    reply->headers[3].value = "nosniff";
    reply->content_type = a->content_type;
    const char *inm = daemon_request_header(req, "If-None-Match");
    if (inm && !strcmp(inm, a->etag)) {
        reply->status = 304;
        reply->body = NULL;
        reply->len = 0;
        return;
    }
    reply->status = 200;
    reply->body = malloc(a->len + 1);
    if (!reply->body)
        abort();
    memcpy(reply->body, a->data, a->len + 1);
    reply->len = a->len;
}

int
dashboard_attach(void)
{
    return daemon_handler_register("GET", "/dashboard", DAEMON_HANDLER_PREFIX, on_dashboard, NULL);
}
