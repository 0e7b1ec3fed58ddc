/* test_stats_shape.c - the dashboard's fixture (tests/ops/fixtures/stats.json) has the shape
 * storage_stats() really produces: every field the fixture has, the live answer has too,
 * with the same JSON type. Catches drift between the page and the storage code. Also
 * pins the "learning" object (newer than the fixture) and that the daemon's own shadow
 * and judge calls change none of the client figures the page shows. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "storage.h"

#define NOW INT64_C(1764057600000)

static char *
xstrdup(const char *s)
{
    char *p = strdup(s);
    assert_non_null(p);
    return p;
}

/* One finished request i minutes before NOW on backend b. */
static struct storage_record *
rec(int i, const char *b, int status)
{
    char id[32];
    struct storage_record *r = storage_record_new();
    snprintf(id, sizeof(id), "req-%d", i);
    r->request_id = xstrdup(id);
    r->started_ms = NOW - (int64_t)(i % 50) * 60000 - 1000;
    r->finished_ms = r->started_ms + 900;
    r->requested_model = xstrdup("triage");
    r->backend = xstrdup(b);
    r->route_reason = xstrdup("threshold");
    r->score = (i % 10) / 10.0;
    r->threshold = 0.5;
    r->status = status;
    r->latency_ms = 100.0 + i;
    r->ttfb_ms = 20.0 + i;
    r->tokens_in = 100;
    r->tokens_out = 50;
    r->cost_usd = 0.001;
    if (status >= 400) {
        r->error_kind = xstrdup("timeout");
        r->ttfb_ms = NAN;
    }
    return r;
}

/* Walks want (the fixture) and checks that got has each key with the same type. A
 * null in got stands for any number (e.g. a mean with no samples). */
static int
same_shape(const json_t *want, const json_t *got, const char *path)
{
    int bad = 0;
    char sub[512];
    if (json_is_number(want) && (json_is_number(got) || json_is_null(got)))
        return 0;
    if (json_typeof(want) != json_typeof(got)) {
        fprintf(stderr, "%s: fixture has type %d, storage_stats has type %d\n", path,
                (int)json_typeof(want), got ? (int)json_typeof(got) : -1);
        return 1;
    }
    if (json_is_object(want)) {
        const char *k;
        json_t *v;
        /* Backend names are data, not fields: compare every live backend with the
         * fixture's first one. */
        int by_name = !strcmp(path, ".backends") || !strcmp(path, ".timeline.backends") ||
                      !strcmp(path, ".keys");
        json_t *proto = NULL;
        if (by_name) {
            void *it = json_object_iter((json_t *)want);
            proto = it ? json_object_iter_value(it) : NULL;
            json_object_foreach((json_t *)got, k, v) {
                snprintf(sub, sizeof(sub), "%s.%s", path, k);
                if (proto)
                    bad |= same_shape(proto, v, sub);
            }
            return bad;
        }
        json_object_foreach((json_t *)want, k, v) {
            snprintf(sub, sizeof(sub), "%s.%s", path, k);
            json_t *g = json_object_get(got, k);
            if (!g) {
                fprintf(stderr, "%s: in the fixture, missing from storage_stats\n", sub);
                bad = 1;
                continue;
            }
            bad |= same_shape(v, g, sub);
        }
        json_object_foreach((json_t *)got, k, v) {
            if (!json_object_get(want, k))
                printf("note: %s.%s is new in storage_stats (the page ignores it)\n", path, k);
        }
    } else if (json_is_array(want) && json_array_size(want) && json_array_size(got)) {
        snprintf(sub, sizeof(sub), "%s[0]", path);
        bad |= same_shape(json_array_get(want, 0), json_array_get(got, 0), sub);
    }
    return bad;
}

/* The fixture's "models" lists have the shape storage_model_timeline gives a registry
 * with the shipped model and a promoted retrain; the daemon's counters are there too. */
static int
models_shape(const char *dir, json_t *fixture_models)
{
    char path[128], err[256] = "";
    struct storage_model_info m = {.version = "shipped1", .path = "/m/a.tmod", .source = "shipped",
                                   .status = "champion", .train_examples = -1, .holdout_n = -1,
                                   .apgr = NAN, .parent_apgr = NAN};

    snprintf(path, sizeof(path), "%s/t.db", dir);
    assert_int_equal(storage_model_add(path, &m, err, sizeof(err)), 0);
    m = (struct storage_model_info){.version = "retrain1", .path = "/m/b.tmod", .parent = "shipped1",
                                    .source = "retrain", .status = "candidate", .created_ms = NOW,
                                    .train_examples = 39000, .holdout_n = 120, .apgr = 0.6,
                                    .parent_apgr = 0.55};
    assert_int_equal(storage_model_add(path, &m, err, sizeof(err)), 0);
    assert_int_equal(storage_model_promote(path, "retrain1", err, sizeof(err)), 0);
    json_t *live = storage_model_timeline(path, err, sizeof(err));
    if (!live)
        fail_msg("storage_model_timeline: %s", err);
    int bad = 0;
    static const char *const daemon_keys[] = {"serving", "retrains", "promotions", "retraining"};
    for (size_t i = 0; i < 4; i++)
        if (!json_object_get(fixture_models, daemon_keys[i]))
            bad = 1, fprintf(stderr, ".models.%s: missing from the fixture\n", daemon_keys[i]);
    json_t *lists = json_pack("{s:O, s:O}", "versions", json_object_get(fixture_models, "versions"),
                              "changes", json_object_get(fixture_models, "changes"));
    bad |= same_shape(lists, live, ".models");
    json_decref(lists);
    json_decref(live);
    return bad;
}

static void
test_fixture_matches_storage(void **state)
{
    char dir[] = "/tmp/triage-ops-stats-XXXXXX", path[128], err[256] = "";
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/t.db", dir);

    struct storage *s = storage_open(path, NULL, err, sizeof(err));
    if (!s)
        fail_msg("storage_open: %s", err);
    for (int i = 0; i < 40; i++) {
        struct storage_record *r = rec(i, i % 3 ? "fast" : "strong", i % 13 ? 200 : 504);
        r->key_id = xstrdup(i % 2 ? "team-a" : "team-b");
        if (i % 3 && i % 7 == 0) { /* strong failed, fast answered */
            r->failed_attempts = xstrdup("strong backend_status");
            free(r->route_reason);
            r->route_reason = xstrdup("fallback");
        }
        assert_int_equal(storage_submit(s, r), 0);
    }
    assert_int_equal(storage_flush(s, 0), 0);
    assert_true(storage_feedback(s, "req-1", 1.0, NULL, NULL, err, sizeof(err)) >= 0);
    storage_close(s);

    const struct storage_price prices[] = {{"fast", 0.6, 0.6}, {"strong", 10, 30}};
    json_t *before = storage_stats(path, "1h", prices, 2, NOW, err, sizeof(err));
    if (!before)
        fail_msg("storage_stats: %s", err);

    /* The daemon learns: a shadow call (one failing) and a judge call per request, and
     * labels. Everything but "learning" stays as it was. */
    s = storage_open(path, NULL, err, sizeof(err));
    assert_non_null(s);
    for (int i = 100; i < 110; i++) {
        struct storage_record *r = rec(i, "strong", i % 2 ? 200 : 504);
        r->kind = xstrdup(i % 4 < 2 ? "shadow" : "judge");
        r->parent_id = xstrdup("req-1");
        assert_int_equal(storage_submit(s, r), 0);
    }
    assert_int_equal(storage_outcome_submit(s, "req-1", "fast", "judge", 0.5, NULL), 0);
    storage_close(s);
    json_t *live = storage_stats(path, "1h", prices, 2, NOW, err, sizeof(err));
    if (!live)
        fail_msg("storage_stats: %s", err);
    json_t *learning = json_incref(json_object_get(live, "learning"));
    json_t *want_learning = json_pack("{s:i, s:f, s:i, s:f, s:{s:i, s:i, s:i}}", "shadow_calls", 0,
                                      "shadow_cost_usd", 0.0, "judge_calls", 0, "judge_cost_usd",
                                      0.0, "labels", "judge", 0, "feedback", 0, "offline", 0);
    assert_int_equal(same_shape(want_learning, learning, ".learning"), 0);
    assert_int_equal(json_object_size(learning), 5);
    assert_int_equal(json_integer_value(json_object_get(learning, "shadow_calls")), 6);
    assert_int_equal(json_integer_value(json_object_get(learning, "judge_calls")), 4);
    json_decref(want_learning);
    json_object_del(live, "learning");
    json_object_del(before, "learning");
    assert_true(json_equal(live, before));
    json_object_set_new(live, "learning", learning);
    json_decref(before);

    const char *root = getenv("TRIAGE_SOURCE_ROOT");
    assert_non_null(root);
    snprintf(path, sizeof(path), "%s/tests/ops/fixtures/stats.json", root);
    json_error_t jerr;
    json_t *fixture = json_load_file(path, 0, &jerr);
    if (!fixture)
        fail_msg("%s:%d: %s", path, jerr.line, jerr.text);

    /* share_routes is the daemon's (outcomes.c adds it, live from the workers), not the
     * log's: tests/daemon/test_share.c pins its shape */
    assert_non_null(json_object_get(fixture, "share_routes"));
    json_object_del(fixture, "share_routes");
    /* "models" is the daemon's (daemon/api/outcomes.c): its lists are the registry's
     * storage_model_timeline, its counters the daemon's own */
    json_t *fixture_models = json_incref(json_object_get(fixture, "models"));
    assert_non_null(fixture_models);
    json_object_del(fixture, "models");
    int bad = same_shape(fixture, live, "");
    bad |= models_shape(dir, fixture_models);
    json_decref(fixture_models);
    json_decref(fixture);
    json_decref(live);

    const char *sfx[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/t.db%s", dir, sfx[i]);
        unlink(path);
    }
    rmdir(dir);
    assert_int_equal(bad, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_matches_storage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
