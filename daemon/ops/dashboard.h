/* dashboard.h - the web dashboard's static files (daemon/ops/dashboard/), built into the binary.
 *
 * The page (GET /dashboard) draws its charts in the browser from GET /v1/stats; this
 * module only finds the embedded files. Nothing is read from disk at run time. */
#ifndef TRIAGE_DASHBOARD_H
#define TRIAGE_DASHBOARD_H

#include <stddef.h>

/* One embedded file; everything is static and lives as long as the program. */
struct dashboard_asset {
    const char *path;          /* URL path, e.g. "/dashboard/app.js" */
    const char *content_type;  /* e.g. "text/javascript; charset=utf-8" */
    const unsigned char *data; /* NUL-terminated (the NUL is not counted in len) */
    size_t len;
    const char *etag;          /* quoted content hash for ETag / If-None-Match */
};

/* Content-Security-Policy for the page: only its own files and same-origin fetches. */
#define DASHBOARD_CSP                                                                      \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "     \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/* Returns the asset served at the URL path (no query string), or NULL. "/dashboard"
 * and "/dashboard/" are the page itself (index.html). */
const struct dashboard_asset *dashboard_find(const char *path);

/* Serves GET /dashboard and /dashboard/<file> through the HTTP server (hooks.h), with
 * ETag / If-None-Match and the CSP above. The page is public: it holds no data, and
 * /v1/stats, which it reads, has its own access rule. Call once from main.c before
 * the server runs. Returns 0 or -errno. */
int dashboard_attach(void);

#endif
