/* dashboard.c - looks up the dashboard files that dashboard-embed compiled into the binary. */
#include <string.h>

#include "dashboard.h"

/* Defined in the generated dashboard-assets.c (daemon/dashboard/embed.c). */
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
