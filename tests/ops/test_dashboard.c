/* test_dashboard.c - unit tests for daemon/ops/dashboard.c: the embedded files are found by
 * URL path and are byte-for-byte the files in daemon/ops/dashboard/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ops/ops.h"

/* Reads daemon/ops/dashboard/name from the source tree into a new buffer. */
static char *
read_source(const char *name, size_t *len)
{
    const char *root = getenv("TRIAGE_SOURCE_ROOT");
    char path[4096];
    assert_non_null(root);
    snprintf(path, sizeof(path), "%s/daemon/ops/dashboard/%s", root, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void
check_asset(const char *url, const char *file, const char *type)
{
    const struct dashboard_asset *a = dashboard_find(url);
    assert_non_null(a);
    assert_string_equal(a->content_type, type);
    size_t len;
    char *want = read_source(file, &len);
    assert_int_equal(a->len, len);
    assert_memory_equal(a->data, want, len);
    assert_int_equal(a->data[a->len], 0);
    /* "\"<16 hex digits>\"" */
    assert_int_equal(strlen(a->etag), 18);
    assert_int_equal(a->etag[0], '"');
    assert_int_equal(a->etag[17], '"');
    free(want);
}

static void
test_assets(void **state)
{
    check_asset("/dashboard/index.html", "index.html", "text/html; charset=utf-8");
    check_asset("/dashboard/app.js", "app.js", "text/javascript; charset=utf-8");
    check_asset("/dashboard/style.css", "style.css", "text/css; charset=utf-8");
}

static void
test_page_aliases(void **state)
{
    const struct dashboard_asset *index = dashboard_find("/dashboard/index.html");
    assert_ptr_equal(dashboard_find("/dashboard"), index);
    assert_ptr_equal(dashboard_find("/dashboard/"), index);
    /* distinct files have distinct ETags */
    assert_string_not_equal(index->etag, dashboard_find("/dashboard/app.js")->etag);
    /* the page loads its script and style from where they are served */
    assert_non_null(strstr((const char *)index->data, "src=\"/dashboard/app.js\""));
    assert_non_null(strstr((const char *)index->data, "href=\"/dashboard/style.css\""));
}

static void
test_not_found(void **state)
{
    assert_null(dashboard_find(NULL));
    assert_null(dashboard_find(""));
    assert_null(dashboard_find("/"));
    assert_null(dashboard_find("/dashboard/nope.js"));
    assert_null(dashboard_find("/dashboard/../meson.build"));
    assert_null(dashboard_find("/dashboard//app.js"));
    assert_null(dashboard_find("/dashboardx"));
    assert_null(dashboard_find("/app.js"));
    assert_null(dashboard_find("/dashboard/embed.c"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_assets),
        cmocka_unit_test(test_page_aliases),
        cmocka_unit_test(test_not_found),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
