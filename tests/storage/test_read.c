/* test_read.c - tests feedback, stats, export and retention (storage/{storage,stats,export}.c). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sqlite3.h>

#include "fixture.h"
#include "storage.h"

#define NOW INT64_C(1700000000000)

static double
query_real(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    double v = NAN;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static struct storage_record *
rec(const char *id, const char *backend, int64_t t, double latency, double ttfb, int64_t tin,
    int64_t tout, double cost, double score)
{
    struct storage_record *r = storage_record_new();
    r->request_id = strdup(id);
    r->backend = backend ? strdup(backend) : NULL;
    r->started_ms = t;
    r->finished_ms = t + (int64_t)latency;
    r->status = 200;
    r->latency_ms = latency;
    r->ttfb_ms = ttfb;
    r->tokens_in = tin;
    r->tokens_out = tout;
    r->cost_usd = cost;
    r->score = score;
    r->finish_reason = strdup("stop");
    return r;
}

/* ---- feedback ---- */

static void
test_feedback(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct storage_options opt = {.flush_interval_ms = 10};

    struct storage *s = storage_open(f->path, &opt, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(storage_submit(s, rec("r1", "fast", NOW, 10, 5, 1, 1, 0, 0.2)), 0);
    assert_int_equal(storage_flush(s, 0), 0);

    assert_int_equal(storage_feedback(s, "nope", 0.5, NULL, NULL, err, sizeof(err)), -ENOENT);
    assert_int_equal(storage_feedback(s, "r1", 1.5, NULL, NULL, err, sizeof(err)), -EINVAL);
    assert_int_equal(storage_feedback(s, "r1", -0.1, NULL, NULL, err, sizeof(err)), -EINVAL);
    assert_int_equal(storage_feedback(s, "r1", NAN, NULL, NULL, err, sizeof(err)), -EINVAL);
    assert_int_equal(storage_feedback(s, "r1", NAN, "meh", NULL, err, sizeof(err)), -EINVAL);
    assert_int_equal(storage_feedback(s, "r1", 1.0, "good", NULL, err, sizeof(err)), -EINVAL);
    assert_int_equal(storage_feedback(s, "", 0.5, NULL, NULL, err, sizeof(err)), -EINVAL);
    assert_int_equal(storage_feedback(s, NULL, 0.5, NULL, NULL, err, sizeof(err)), -EINVAL);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM feedback"), 0);

    /* New, then a repeat from the same source overwrites (returns 1), another source adds. */
    assert_int_equal(storage_feedback(s, "r1", 0.25, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "r1", NAN, "bad", "client", err, sizeof(err)), 1);
    assert_int_equal(storage_feedback(s, "r1", NAN, "good", "grader", err, sizeof(err)), 0);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM feedback WHERE request_id='r1'"), 2);
    assert_true(query_real(f->path, "SELECT score FROM feedback WHERE source='client'") == 0.0);
    assert_int_equal(
        query_int(f->path, "SELECT count(*) FROM feedback WHERE source='client' AND label='bad'"),
        1);
    assert_true(query_real(f->path, "SELECT score FROM feedback WHERE source='grader'") == 1.0);

    storage_close(s);
}

/* Feedback right after the response: the row is still queued (long flush interval). */
static void
test_feedback_pending(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct storage_options opt = {.flush_interval_ms = 60000, .batch_size = 1000};

    struct storage *s = storage_open(f->path, &opt, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(storage_submit(s, rec("queued-1", "fast", NOW, 10, 5, 1, 1, 0, 0.2)), 0);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests"), 0);
    assert_int_equal(storage_feedback(s, "queued-1", 0.75, NULL, "grader", err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "queued-2", 0.75, NULL, "grader", err, sizeof(err)),
                     -ENOENT);
    storage_close(s);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests r JOIN feedback f"
                                        " USING (request_id) WHERE f.score = 0.75"),
                     1);
}

/* Feedback posted right after each submit, while the writer is moving records from
 * the queue to a batch to the database: never reported unknown. */
static void
test_feedback_race(void **state)
{
    struct fixture *f = *state;
    char err[256] = "", id[32];
    struct storage_options opt = {.flush_interval_ms = 1, .batch_size = 4};

    struct storage *s = storage_open(f->path, &opt, err, sizeof(err));
    assert_non_null(s);
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "race-%d", i);
        assert_int_equal(storage_submit(s, rec(id, "fast", NOW, 1, 1, 1, 1, 0, 0.5)), 0);
        int rc = storage_feedback(s, id, 0.5, NULL, NULL, err, sizeof(err));
        if (rc != 0)
            fail_msg("feedback %s: %d %s", id, rc, err);
    }
    storage_close(s);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests r JOIN feedback f"
                                        " USING (request_id)"),
                     1000);
}

struct unblock {
    sqlite3 *db;
};

static void *
unblock_later(void *arg)
{
    struct unblock *u = arg;
    usleep(300000);
    sqlite3_exec(u->db, "ROLLBACK", NULL, NULL, NULL);
    return NULL;
}

/* Deterministic middle state: the writer has taken the record into its batch but
 * cannot commit (another connection holds the write lock). Feedback must still
 * find it. */
static void
test_feedback_in_batch(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct storage_options opt = {.flush_interval_ms = 1, .batch_size = 1};
    struct unblock u = {0};
    pthread_t th;

    struct storage *s = storage_open(f->path, &opt, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(sqlite3_open(f->path, &u.db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(u.db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(storage_submit(s, rec("inflight", "fast", NOW, 1, 1, 1, 1, 0, 0.5)), 0);
    usleep(100000); /* the writer wakes at batch_size 1, takes it, waits on the lock */
    struct storage_counters c;
    storage_get_counters(s, &c);
    assert_int_equal(c.depth, 1);
    assert_int_equal(c.written, 0);
    assert_int_equal(pthread_create(&th, NULL, unblock_later, &u), 0);
    int rc = storage_feedback(s, "inflight", 1.0, NULL, NULL, err, sizeof(err));
    pthread_join(th, NULL);
    sqlite3_close(u.db);
    if (rc != 0)
        fail_msg("feedback for a record in the writer's batch: %d %s", rc, err);
    storage_close(s);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM feedback WHERE"
                                        " request_id='inflight'"),
                     1);
}

/* ---- stats ---- */

/* A known log over the hour before NOW (see the comments for the expected figures). */
static void
write_synthetic_log(const char *path)
{
    char err[256] = "";
    char id[32];
    struct storage *s = storage_open(path, NULL, err, sizeof(err));
    assert_non_null(s);

    /* fast: 5 successes at NOW-30min (bucket 30), latency 10..50, ttfb 5..9,
     * 100 in / 200 out tokens, cost 0.00035 each; scores 0.1 0.12 0.31 0.31 0.49. */
    const double fast_scores[] = {0.1, 0.12, 0.31, 0.31, 0.49};
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof(id), "f%d", i);
        assert_int_equal(storage_submit(s, rec(id, "fast", NOW - 1800000 + i * 1000, 10.0 * (i + 1),
                                               5.0 + i, 100, 200, 0.00035, fast_scores[i])),
                         0);
    }
    /* fast: one error (502, no tokens, no byte back, latency 60, not routed). */
    struct storage_record *e = rec("f-err", "fast", NOW - 1800000 + 9000, 60, NAN, -1, -1, 0, NAN);
    e->status = 502;
    e->error_kind = strdup("upstream_5xx");
    free(e->finish_reason);
    e->finish_reason = NULL;
    assert_int_equal(storage_submit(s, e), 0);
    /* strong: 4 at NOW-5min (bucket 55), latency 100..400, ttfb 50..80, 1000 in / 500 out,
     * cost 0.025 each; scores 0.7 0.9 0.96 1.0. */
    const double strong_scores[] = {0.7, 0.9, 0.96, 1.0};
    for (int i = 0; i < 4; i++) {
        snprintf(id, sizeof(id), "s%d", i);
        assert_int_equal(
            storage_submit(s, rec(id, "strong", NOW - 300000 + i * 1000, 100.0 * (i + 1),
                                  50.0 + 10 * i, 1000, 500, 0.025, strong_scores[i])),
            0);
    }
    /* Outside the window: before it and after NOW. */
    assert_int_equal(storage_submit(s, rec("old", "fast", NOW - 7200000, 1, 1, 1, 1, 1.0, 0.5)), 0);
    assert_int_equal(storage_submit(s, rec("future", "strong", NOW + 1, 1, 1, 1, 1, 1.0, 0.5)), 0);
    assert_int_equal(storage_flush(s, 0), 0);

    /* Feedback: strong mean (1 + 0.5 + 0) / 3 = 0.5, fast 0; overall 0.375 over 4. */
    assert_int_equal(storage_feedback(s, "s0", NAN, "good", NULL, err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "s1", 0.5, NULL, "grader", err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "s1", 0.0, NULL, "client", err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "f0", NAN, "bad", NULL, err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "old", NAN, "good", NULL, err, sizeof(err)), 0);
    storage_close(s);
}

static double
num(json_t *root, const char *p1, const char *p2, const char *p3)
{
    json_t *j = json_object_get(root, p1);
    if (p2)
        j = json_object_get(j, p2);
    if (p3)
        j = json_object_get(j, p3);
    if (!json_is_number(j))
        fail_msg("%s.%s.%s is not a number", p1, p2 ? p2 : "", p3 ? p3 : "");
    return json_number_value(j);
}

#define assert_near(a, b) assert_true(fabs((a) - (b)) < 1e-9)

/* A backend's errors are its own (5xx, cut streams, attempts fallen back from); a 4xx
 * or a row without a backend is nobody's; fallbacks and per-key figures. */
static void
test_stats_backend_errors(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct storage_options opt = {.flush_interval_ms = 10};
    struct storage *s = storage_open(f->path, &opt, err, sizeof(err));
    assert_non_null(s);

    struct storage_record *r = rec("fb", "fast", NOW - 1000, 10, 5, 10, 20, 0.5, 0.9);
    r->failed_attempts = strdup("strong backend_status,strong connect");
    r->route_reason = strdup("fallback");
    r->key_id = strdup("team-a");
    assert_int_equal(storage_submit(s, r), 0);
    r = rec("unauth", NULL, NOW - 2000, NAN, NAN, -1, -1, 0, NAN);
    r->status = 401;
    r->error_kind = strdup("invalid_api_key");
    assert_int_equal(storage_submit(s, r), 0);
    r = rec("limited", "fast", NOW - 3000, 1, NAN, -1, -1, 0, NAN);
    r->status = 429;
    r->error_kind = strdup("rate_limit_exceeded");
    r->key_id = strdup("team-b");
    assert_int_equal(storage_submit(s, r), 0);
    r = rec("cut", "fast", NOW - 4000, 10, 5, 10, 3, 0.25, NAN);
    r->error_kind = strdup("closed"); /* a stream the backend cut after its 200 */
    r->key_id = strdup("team-a");
    assert_int_equal(storage_submit(s, r), 0);
    r = rec("stopping", "fast", NOW - 5000, 10, NAN, -1, -1, 0, NAN);
    r->status = 503;
    r->error_kind = strdup("shutdown");
    assert_int_equal(storage_submit(s, r), 0);
    assert_int_equal(storage_flush(s, 0), 0);
    storage_close(s);

    json_t *j = storage_stats(f->path, "1h", NULL, 0, NOW, err, sizeof(err));
    if (!j)
        fail_msg("stats: %s", err);
    assert_near(num(j, "requests", NULL, NULL), 5);
    assert_near(num(j, "errors", NULL, NULL), 4);
    assert_near(num(j, "client_errors", NULL, NULL), 2);
    assert_near(num(j, "backend_errors", NULL, NULL), 3);
    json_t *b = json_object_get(j, "backends");
    assert_null(json_object_get(b, "(none)"));
    assert_int_equal(json_object_size(b), 2);
    assert_near(num(b, "fast", "requests", NULL), 4);
    assert_near(num(b, "fast", "errors", NULL), 1);
    assert_near(num(b, "fast", "failed_attempts", NULL), 0);
    assert_near(num(b, "strong", "requests", NULL), 0);
    assert_near(num(b, "strong", "errors", NULL), 2);
    assert_near(num(b, "strong", "failed_attempts", NULL), 2);
    assert_near(num(b, "strong", "fallbacks_from", NULL), 1);
    assert_near(num(j, "fallbacks", "requests", NULL), 1);
    json_t *pair = json_array_get(json_object_get(json_object_get(j, "fallbacks"), "pairs"), 0);
    assert_string_equal(json_string_value(json_object_get(pair, "from")), "strong");
    assert_string_equal(json_string_value(json_object_get(pair, "to")), "fast");
    json_t *k = json_object_get(j, "keys");
    assert_int_equal(json_object_size(k), 2);
    assert_near(num(k, "team-a", "requests", NULL), 2);
    assert_near(num(k, "team-a", "errors", NULL), 1);
    assert_near(num(k, "team-a", "tokens_in", NULL), 20);
    assert_near(num(k, "team-a", "tokens_out", NULL), 23);
    assert_near(num(k, "team-a", "cost_usd", NULL), 0.75);
    assert_near(num(k, "team-b", "requests", NULL), 1);
    assert_near(num(k, "team-b", "errors", NULL), 1);
    json_decref(j);
}

static void
test_stats_figures(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    const struct storage_price prices[] = {
        {"fast", 0.5, 1.5},
        {"strong", 10.0, 30.0},
    };

    write_synthetic_log(f->path);
    json_t *j = storage_stats(f->path, "1h", prices, 2, NOW, err, sizeof(err));
    if (!j)
        fail_msg("stats: %s", err);

    assert_near(num(j, "requests", NULL, NULL), 10);
    assert_near(num(j, "errors", NULL, NULL), 1);
    assert_near(num(j, "tokens_in", NULL, NULL), 5 * 100 + 4 * 1000);
    assert_near(num(j, "tokens_out", NULL, NULL), 5 * 200 + 4 * 500);
    assert_near(num(j, "cost_usd", NULL, NULL), 5 * 0.00035 + 4 * 0.025);

    json_t *b = json_object_get(j, "backends");
    assert_int_equal(json_object_size(b), 2);
    assert_near(num(b, "fast", "requests", NULL), 6);
    assert_near(num(b, "fast", "share", NULL), 0.6);
    assert_near(num(b, "fast", "errors", NULL), 1);
    /* Nearest rank over 10 20 30 40 50 60. */
    assert_near(num(b, "fast", "latency_ms", "p50"), 30);
    assert_near(num(b, "fast", "latency_ms", "p95"), 60);
    assert_near(num(b, "fast", "latency_ms", "p99"), 60);
    /* Over 5 6 7 8 9 (the error had no first byte). */
    assert_near(num(b, "fast", "ttfb_ms", "n"), 5);
    assert_near(num(b, "fast", "ttfb_ms", "p50"), 7);
    assert_near(num(b, "fast", "ttfb_ms", "p95"), 9);
    assert_near(num(b, "fast", "tokens_in", NULL), 500);
    assert_near(num(b, "fast", "tokens_out", NULL), 1000);
    assert_near(num(b, "fast", "cost_usd", NULL), 0.00175);
    assert_near(num(b, "fast", "feedback", "count"), 1);
    assert_near(num(b, "fast", "feedback", "mean"), 0.0);

    assert_near(num(b, "strong", "requests", NULL), 4);
    assert_near(num(b, "strong", "share", NULL), 0.4);
    assert_near(num(b, "strong", "errors", NULL), 0);
    assert_near(num(b, "strong", "latency_ms", "p50"), 200);
    assert_near(num(b, "strong", "latency_ms", "p95"), 400);
    assert_near(num(b, "strong", "latency_ms", "p99"), 400);
    assert_near(num(b, "strong", "ttfb_ms", "p50"), 60);
    assert_near(num(b, "strong", "cost_usd", NULL), 0.1);
    assert_near(num(b, "strong", "feedback", "count"), 3);
    assert_near(num(b, "strong", "feedback", "mean"), 0.5);

    assert_near(num(j, "feedback", "count", NULL), 4);
    assert_near(num(j, "feedback", "mean", NULL), 0.375);

    /* Baseline: the 9 rows with tokens at strong's prices: 5 * 0.007 + 4 * 0.025 = 0.135;
     * actual 0.10175; saving 0.03325 = 24.6296...%. */
    json_t *sv = json_object_get(j, "saving");
    assert_string_equal(json_string_value(json_object_get(sv, "baseline_backend")), "strong");
    assert_near(num(sv, "rows", NULL, NULL), 9);
    assert_near(num(sv, "baseline_cost_usd", NULL, NULL), 0.135);
    assert_near(num(sv, "cost_usd", NULL, NULL), 0.10175);
    assert_near(num(sv, "saving_usd", NULL, NULL), 0.03325);
    assert_near(num(sv, "saving_share", NULL, NULL), 0.03325 / 0.135);

    /* Histogram: bins 2,2,6,6,9 (fast) and 14,18,19,19 (strong; 1.0 lands in the last). */
    json_t *h = json_object_get(json_object_get(j, "score_histogram"), "counts");
    assert_int_equal(json_array_size(h), 20);
    const int want[20] = {[2] = 2, [6] = 2, [9] = 1, [14] = 1, [18] = 1, [19] = 2};
    for (int i = 0; i < 20; i++)
        assert_int_equal(json_integer_value(json_array_get(h, (size_t)i)), want[i]);
    assert_near(num(j, "score_histogram", "routed", NULL), 9);

    /* Timeline: 60 one-minute buckets from NOW-1h. */
    json_t *tl = json_object_get(j, "timeline");
    assert_near(num(tl, "bucket_ms", NULL, NULL), 60000);
    assert_near(num(tl, "start_ms", NULL, NULL), (double)(NOW - 3600000));
    json_t *tf =
        json_object_get(json_object_get(json_object_get(tl, "backends"), "fast"), "requests");
    json_t *ts =
        json_object_get(json_object_get(json_object_get(tl, "backends"), "strong"), "cost_usd");
    assert_int_equal(json_array_size(tf), 60);
    for (size_t i = 0; i < 60; i++) {
        assert_int_equal(json_integer_value(json_array_get(tf, i)), i == 30 ? 6 : 0);
        assert_near(json_real_value(json_array_get(ts, i)), i == 55 ? 0.1 : 0.0);
    }

    json_t *re = json_object_get(j, "recent_errors");
    assert_int_equal(json_array_size(re), 1);
    json_t *r0 = json_array_get(re, 0);
    assert_string_equal(json_string_value(json_object_get(r0, "request_id")), "f-err");
    assert_string_equal(json_string_value(json_object_get(r0, "backend")), "fast");
    assert_string_equal(json_string_value(json_object_get(r0, "error_kind")), "upstream_5xx");
    assert_int_equal(json_integer_value(json_object_get(r0, "status")), 502);
    assert_int_equal(json_integer_value(json_object_get(r0, "time_ms")), NOW - 1800000 + 9000);
    json_decref(j);

    /* Without prices the saving is null; the 24h window also sees "old". */
    j = storage_stats(f->path, "24h", NULL, 0, NOW, err, sizeof(err));
    assert_non_null(j);
    assert_true(json_is_null(json_object_get(j, "saving")));
    assert_near(num(j, "requests", NULL, NULL), 11);
    json_decref(j);
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Percentiles of random latencies (with many ties) match a full sort's nearest rank. */
static void
test_stats_percentiles_random(void **state)
{
    struct fixture *f = *state;
    char err[256] = "", id[32];
    enum { N = 997 };
    double lat[N];
    uint64_t x = 88172645463325252ULL;

    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    for (int i = 0; i < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        lat[i] = (double)(x % 300); /* ties galore */
        snprintf(id, sizeof(id), "p%d", i);
        assert_int_equal(
            storage_submit(s, rec(id, "fast", NOW - 1000 - i, lat[i], NAN, 1, 1, 0, NAN)), 0);
    }
    storage_close(s);
    qsort(lat, N, sizeof(lat[0]), cmp_double);
    json_t *j = storage_stats(f->path, "15m", NULL, 0, NOW, err, sizeof(err));
    assert_non_null(j);
    json_t *l =
        json_object_get(json_object_get(json_object_get(j, "backends"), "fast"), "latency_ms");
    const int ps[] = {50, 95, 99};
    const char *names[] = {"p50", "p95", "p99"};
    for (int i = 0; i < 3; i++) {
        size_t rank = ((size_t)ps[i] * N + 99) / 100; /* ceil(p * N / 100) */
        assert_near(json_real_value(json_object_get(l, names[i])), lat[rank - 1]);
    }
    assert_true(json_is_null(json_object_get(
        json_object_get(json_object_get(json_object_get(j, "backends"), "fast"), "ttfb_ms"),
        "p50")));
    json_decref(j);
}

static void
test_stats_rejects(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    int64_t ms = 0;

    assert_int_equal(storage_window_parse("15m", &ms), 0);
    assert_int_equal(ms, 900000);
    assert_int_equal(storage_window_parse("7d", &ms), 0);
    assert_int_equal(ms, 7 * 86400000LL);
    assert_int_equal(storage_window_parse("2h", &ms), -EINVAL);
    assert_int_equal(storage_window_parse(NULL, &ms), -EINVAL);
    assert_null(storage_stats(f->path, "30m", NULL, 0, NOW, err, sizeof(err)));
    assert_non_null(strstr(err, "window"));
    /* A missing database is an error, not an empty result (and is not created). */
    assert_null(storage_stats(f->path, "1h", NULL, 0, NOW, err, sizeof(err)));
    assert_int_equal(access(f->path, F_OK), -1);
}

/* ---- export ---- */

static const char P1[] = "[{\"role\":\"user\",\"content\":\"2+2?\"}]";
static const char P2[] = "[{\"role\":\"user\",\"content\":\"unlabelled\"}]";
static const char P3[] = "{\"model\":\"triage\",\"messages\":[{\"role\":\"user\",\"content\":"
                         "\"prove it\"}]}";

static struct storage_record *
prompt_rec(const char *id, const char *backend, const char *prompt)
{
    struct storage_record *r = rec(id, backend, NOW, 10, 5, 1, 1, 0, 0.5);
    r->prompt = prompt ? strdup(prompt) : NULL;
    r->prompt_hash = strdup("h");
    return r;
}

static int
collect(json_t *ex, void *arg)
{
    json_array_append(arg, ex);
    return 0;
}

static void
test_export(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct storage_export_counts c;

    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(storage_submit(s, prompt_rec("r1", "fast", P1)), 0);
    assert_int_equal(storage_submit(s, prompt_rec("r2", "strong", P1)), 0);
    assert_int_equal(storage_submit(s, prompt_rec("r3", "fast", P2)), 0);
    assert_int_equal(storage_submit(s, prompt_rec("r4", "fast", NULL)), 0);
    assert_int_equal(storage_submit(s, prompt_rec("r5", "strong", P3)), 0);
    assert_int_equal(storage_submit(s, prompt_rec("r6", "fast", "not json")), 0);
    assert_int_equal(storage_submit(s, prompt_rec("r7", "fast", P1)), 0);
    assert_int_equal(storage_flush(s, 0), 0);
    assert_int_equal(storage_feedback(s, "r1", NAN, "good", NULL, err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "r7", 0.5, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "r2", 0.5, NULL, "client", err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "r2", 0.0, NULL, "grader", err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "r4", 1.0, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "r5", NAN, "bad", NULL, err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "r6", 1.0, NULL, NULL, err, sizeof(err)), 0);
    storage_close(s);

    json_t *lines = json_array();
    assert_int_equal(storage_export_training(f->path, collect, lines, &c, err, sizeof(err)), 0);
    assert_int_equal(c.rows, 7);
    assert_int_equal(c.no_prompt, 1);
    assert_int_equal(c.no_outcome, 1);
    assert_int_equal(c.bad_prompt, 1);
    assert_int_equal(c.lines, 2);
    assert_int_equal(c.calls, 0);
    assert_int_equal(c.by_feedback, 3);
    assert_int_equal(c.by_judge + c.by_offline, 0);
    assert_int_equal(json_array_size(lines), 2);

    /* P1: fast = mean(1, 0.5) over r1 and r7, strong = mean(0.5, 0) from r2's two sources. */
    json_t *want1 = json_pack("{s:[{s:s, s:s}], s:{s:f, s:f}, s:{s:s, s:s}}", "messages", "role",
                              "user", "content", "2+2?", "outcomes", "fast", 0.75, "strong", 0.25,
                              "sources", "fast", "feedback", "strong", "feedback");
    /* P3 was a whole request body: only its messages are exported. */
    json_t *want3 =
        json_pack("{s:[{s:s, s:s}], s:{s:f}, s:{s:s}}", "messages", "role", "user", "content",
                  "prove it", "outcomes", "strong", 0.0, "sources", "strong", "feedback");
    int seen1 = 0, seen3 = 0;
    for (size_t i = 0; i < 2; i++) {
        json_t *l = json_array_get(lines, i);
        seen1 += json_equal(l, want1);
        seen3 += json_equal(l, want3);
    }
    assert_int_equal(seen1, 1);
    assert_int_equal(seen3, 1);
    json_decref(want1);
    json_decref(want3);
    json_decref(lines);

    /* The JSONL writer: two lines, each a compact object that parses back. */
    char out[200];
    snprintf(out, sizeof(out), "%s.jsonl", f->path);
    FILE *fp = fopen(out, "w");
    assert_non_null(fp);
    assert_int_equal(storage_export_jsonl(f->path, fp, &c, err, sizeof(err)), 0);
    fclose(fp);
    fp = fopen(out, "r");
    assert_non_null(fp);
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), fp)) {
        json_error_t je;
        json_t *l = json_loads(line, 0, &je);
        assert_non_null(l);
        assert_true(json_is_array(json_object_get(l, "messages")));
        assert_true(json_is_object(json_object_get(l, "outcomes")));
        assert_int_equal(line[strlen(line) - 1], '\n');
        assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1);
        json_decref(l);
        n++;
    }
    fclose(fp);
    assert_int_equal(n, 2);
}


/* A record logged with store_prompts = features: no text, the hash and the vector. */
static struct storage_record *
feat_rec(const char *id, const char *backend, const char *hash, const char *bytes)
{
    struct storage_record *r = prompt_rec(id, backend, NULL);
    free(r->prompt_hash);
    r->prompt_hash = strdup(hash);
    r->features_len = strlen(bytes);
    r->features = malloc(r->features_len);
    memcpy(r->features, bytes, r->features_len);
    return r;
}

/* Rows with features instead of text export as {"features": base64, "prompt_hash"}, one
 * example per prompt hash (the vector of its first request) as text rows are one per
 * text; text rows beside them are untouched. Storage keeps the bytes as they came. */
static void
test_export_features(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct storage_export_counts c;

    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(storage_submit(s, feat_rec("f1", "fast", "hA", "abcd")), 0);
    assert_int_equal(storage_submit(s, feat_rec("f2", "fast", "hA", "other")), 0);
    assert_int_equal(storage_submit(s, feat_rec("f3", "strong", "hB", "xy")), 0);
    assert_int_equal(storage_submit(s, feat_rec("f4", "fast", "hC", "unlabelled")), 0);
    assert_int_equal(storage_submit(s, prompt_rec("t1", "fast", P1)), 0);
    assert_int_equal(storage_submit(s, prompt_rec("t2", "fast", NULL)), 0);
    assert_int_equal(storage_flush(s, 0), 0);
    assert_int_equal(storage_feedback(s, "f1", 1.0, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "f2", 0.0, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(storage_outcome_submit(s, "f1", "strong", "judge", 0.9, NULL), 0);
    assert_int_equal(storage_outcome_submit(s, "f3", "strong", "judge", 0.2, NULL), 0);
    assert_int_equal(storage_feedback(s, "t1", 1.0, NULL, NULL, err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "t2", 1.0, NULL, NULL, err, sizeof(err)), 0);
    storage_close(s);

    json_t *lines = json_array();
    assert_int_equal(storage_export_training(f->path, collect, lines, &c, err, sizeof(err)), 0);
    assert_int_equal(c.rows, 6);
    assert_int_equal(c.no_prompt, 1);
    assert_int_equal(c.no_outcome, 1);
    assert_int_equal(c.lines, 3);
    assert_int_equal(c.by_features, 2);
    assert_int_equal(json_array_size(lines), 3);
    /* text first, then the hashes in order */
    json_t *t = json_array_get(lines, 0), *a = json_array_get(lines, 1),
           *b = json_array_get(lines, 2);
    assert_true(json_is_array(json_object_get(t, "messages")));
    assert_null(json_object_get(t, "features"));
    json_t *want_a = json_pack("{s:s, s:s, s:{s:f, s:f}, s:{s:s, s:s}}", "features", "YWJjZA==",
                               "prompt_hash", "hA", "outcomes", "fast", 0.5, "strong", 0.9,
                               "sources", "fast", "feedback", "strong", "judge");
    json_t *want_b = json_pack("{s:s, s:s, s:{s:f}, s:{s:s}}", "features", "eHk=", "prompt_hash",
                               "hB", "outcomes", "strong", 0.2, "sources", "strong", "judge");
    assert_true(json_equal(a, want_a));
    assert_true(json_equal(b, want_b));
    json_decref(want_a);
    json_decref(want_b);
    json_decref(lines);
}

static struct storage_record *
call_rec(const char *id, const char *kind, const char *parent, const char *backend,
         const char *prompt)
{
    struct storage_record *r = prompt_rec(id, backend, prompt);
    r->kind = strdup(kind);
    r->parent_id = strdup(parent);
    return r;
}

/* Returns the example in lines whose first message's content is text, or NULL. */
static json_t *
find_example(json_t *lines, const char *text)
{
    for (size_t i = 0; i < json_array_size(lines); i++) {
        json_t *l = json_array_get(lines, i);
        json_t *m = json_array_get(json_object_get(l, "messages"), 0);
        if (!strcmp(json_string_value(json_object_get(m, "content")), text))
            return l;
    }
    return NULL;
}

#define PROMPT(text) "[{\"role\":\"user\",\"content\":\"" text "\"}]"

/* Labels from the judge, offline graders and feedback, on client requests, shadow calls
 * and judge calls: one example per prompt with every backend that has a label,
 * feedback before judge before offline. */
static void
test_export_outcomes(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct storage_export_counts c;

    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    /* A: served by fast, shadowed to strong, both graded by the judge; the client's
     * feedback (and an explicit feedback outcome) beat the judge for fast. A judge call
     * with feedback on it, and a shadow call that stored the prompt too, add nothing. */
    assert_int_equal(storage_submit(s, prompt_rec("c1", "fast", PROMPT("A"))), 0);
    assert_int_equal(storage_submit(s, call_rec("s1", "shadow", "c1", "strong", PROMPT("A"))), 0);
    assert_int_equal(storage_submit(s, call_rec("j1", "judge", "c1", "strong", PROMPT("judge A"))),
                     0);
    assert_int_equal(storage_submit(s, call_rec("j2", "judge", "c1", "strong", NULL)), 0);
    /* B: only the judge's grade of fast: a one-backend example. */
    assert_int_equal(storage_submit(s, prompt_rec("c2", "fast", PROMPT("B"))), 0);
    /* C: twice, on strong: judge 0.8 and 0.6 (mean 0.7) beat offline. */
    assert_int_equal(storage_submit(s, prompt_rec("c3", "strong", PROMPT("C"))), 0);
    assert_int_equal(storage_submit(s, prompt_rec("c4", "strong", PROMPT("C"))), 0);
    /* D: feedback posted on the shadow call labels strong on the client's prompt. */
    assert_int_equal(storage_submit(s, prompt_rec("c5", "fast", PROMPT("D"))), 0);
    assert_int_equal(storage_submit(s, call_rec("s5", "shadow", "c5", "strong", NULL)), 0);
    /* E: offline only. */
    assert_int_equal(storage_submit(s, prompt_rec("c8", "fast", PROMPT("E"))), 0);
    /* No label; no prompt text. */
    assert_int_equal(storage_submit(s, prompt_rec("c6", "fast", PROMPT("F"))), 0);
    assert_int_equal(storage_submit(s, prompt_rec("c7", "fast", NULL)), 0);
    assert_int_equal(storage_flush(s, 0), 0);

    assert_int_equal(storage_outcome_submit(s, "c1", "fast", "judge", 0.2, "j"), 0);
    assert_int_equal(storage_outcome_submit(s, "c1", "strong", "judge", 0.9, "j"), 0);
    assert_int_equal(storage_outcome_submit(s, "c1", "fast", "feedback", 0.5, NULL), 0);
    assert_int_equal(storage_feedback(s, "c1", NAN, "good", NULL, err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "j1", NAN, "bad", NULL, err, sizeof(err)), 0);
    assert_int_equal(storage_outcome_submit(s, "c2", "fast", "judge", 0.3, NULL), 0);
    assert_int_equal(storage_outcome_submit(s, "c3", "strong", "offline", 0.4, NULL), 0);
    assert_int_equal(storage_outcome_submit(s, "c3", "strong", "judge", 0.8, NULL), 0);
    assert_int_equal(storage_outcome_submit(s, "c4", "strong", "judge", 0.6, NULL), 0);
    assert_int_equal(storage_feedback(s, "s5", 0.0, NULL, "grader", err, sizeof(err)), 0);
    assert_int_equal(storage_outcome_submit(s, "c8", "fast", "offline", 0.25, NULL), 0);
    assert_int_equal(storage_outcome_submit(s, "c7", "fast", "judge", 1.0, NULL), 0);
    assert_int_equal(storage_outcome_submit(s, "ghost", "fast", "judge", 1.0, NULL), 0);
    /* Labels of a shadow or judge call's own id name no client prompt. */
    assert_int_equal(storage_outcome_submit(s, "s1", "strong", "judge", 0.0, NULL), 0);
    storage_close(s);

    json_t *lines = json_array();
    assert_int_equal(storage_export_training(f->path, collect, lines, &c, err, sizeof(err)), 0);
    assert_int_equal(c.rows, 8);
    assert_int_equal(c.calls, 4);
    assert_int_equal(c.no_prompt, 1);
    assert_int_equal(c.no_outcome, 1);
    assert_int_equal(c.bad_prompt, 0);
    assert_int_equal(c.lines, 5);
    assert_int_equal(c.by_feedback, 2); /* A fast, D strong */
    assert_int_equal(c.by_judge, 3);    /* A strong, B fast, C strong */
    assert_int_equal(c.by_offline, 1);  /* E fast */
    assert_int_equal(json_array_size(lines), 5);

    struct {
        const char *text, *json;
    } want[] = {
        {"A", "{\"outcomes\": {\"fast\": 0.75, \"strong\": 0.9},"
              " \"sources\": {\"fast\": \"feedback\", \"strong\": \"judge\"}}"},
        {"B", "{\"outcomes\": {\"fast\": 0.3}, \"sources\": {\"fast\": \"judge\"}}"},
        {"C", "{\"outcomes\": {\"strong\": 0.7}, \"sources\": {\"strong\": \"judge\"}}"},
        {"D", "{\"outcomes\": {\"strong\": 0.0}, \"sources\": {\"strong\": \"feedback\"}}"},
        {"E", "{\"outcomes\": {\"fast\": 0.25}, \"sources\": {\"fast\": \"offline\"}}"},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        json_t *l = find_example(lines, want[i].text);
        if (!l)
            fail_msg("no example for prompt %s", want[i].text);
        json_t *w = json_loads(want[i].json, 0, NULL);
        assert_non_null(w);
        json_t *o = json_object_get(l, "outcomes"), *wo = json_object_get(w, "outcomes");
        assert_int_equal(json_object_size(o), json_object_size(wo));
        for (void *it = json_object_iter(wo); it; it = json_object_iter_next(wo, it)) {
            const char *k = json_object_iter_key(it);
            json_t *v = json_object_iter_value(it), *got = json_object_get(o, k);
            if (!json_is_number(got) || fabs(json_number_value(got) - json_number_value(v)) > 1e-12)
                fail_msg("prompt %s, %s: got %g, want %g", want[i].text, k, json_number_value(got),
                         json_number_value(v));
        }
        assert_true(json_equal(json_object_get(l, "sources"), json_object_get(w, "sources")));
        json_decref(w);
    }
    assert_null(find_example(lines, "judge A"));
    assert_null(find_example(lines, "F"));
    json_decref(lines);
}

/* Shadow and judge calls stay out of the client's figures; their spend and the labels
 * gathered are reported under "learning". */
static void
test_stats_learning(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    /* Real time: labels are counted by when they were made. */
    int64_t now = (int64_t)time(NULL) * 1000;

    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    /* Clients: 3 on fast (latency 10, 20, 30), 1 on strong (latency 100). */
    assert_int_equal(storage_submit(s, rec("c1", "fast", now - 60000, 10, 5, 10, 10, 0.001, 0.2)),
                     0);
    assert_int_equal(storage_submit(s, rec("c2", "fast", now - 50000, 20, 5, 10, 10, 0.001, 0.3)),
                     0);
    assert_int_equal(storage_submit(s, rec("c3", "fast", now - 40000, 30, 5, 10, 10, 0.001, 0.4)),
                     0);
    assert_int_equal(
        storage_submit(s, rec("c4", "strong", now - 30000, 100, 50, 10, 10, 0.01, 0.9)), 0);
    /* Learning: 2 shadow calls to strong (one failed, slow), 3 judge calls on strong. */
    struct storage_record *r = rec("s1", "strong", now - 59000, 5000, 50, 10, 10, 0.02, NAN);
    r->kind = strdup("shadow");
    r->parent_id = strdup("c1");
    assert_int_equal(storage_submit(s, r), 0);
    r = rec("s2", "strong", now - 49000, 9000, NAN, -1, -1, 0.0, NAN);
    r->kind = strdup("shadow");
    r->parent_id = strdup("c2");
    r->status = 504;
    r->error_kind = strdup("upstream_timeout");
    assert_int_equal(storage_submit(s, r), 0);
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "j%d", i);
        r = rec(id, "strong", now - 45000 + i, 700, 50, 100, 5, 0.005, NAN);
        r->kind = strdup("judge");
        r->parent_id = strdup("c1");
        assert_int_equal(storage_submit(s, r), 0);
    }
    /* "client" is a client request, like NULL. */
    r = rec("c5", "fast", now - 20000, 40, 5, 10, 10, 0.001, 0.1);
    r->kind = strdup("client");
    assert_int_equal(storage_submit(s, r), 0);
    assert_int_equal(storage_flush(s, 0), 0);
    /* Labels: 3 judge, 1 offline, 2 feedback (one /v1/feedback, one outcome). Feedback
     * on a shadow call is a label but not the client's feedback. */
    assert_int_equal(storage_outcome_submit(s, "c1", "fast", "judge", 0.5, NULL), 0);
    assert_int_equal(storage_outcome_submit(s, "c1", "strong", "judge", 0.5, NULL), 0);
    assert_int_equal(storage_outcome_submit(s, "c2", "fast", "judge", 0.5, NULL), 0);
    assert_int_equal(storage_outcome_submit(s, "c3", "fast", "offline", 0.5, NULL), 0);
    assert_int_equal(storage_outcome_submit(s, "c4", "strong", "feedback", 0.5, NULL), 0);
    assert_int_equal(storage_feedback(s, "c2", NAN, "good", NULL, err, sizeof(err)), 0);
    assert_int_equal(storage_feedback(s, "s1", NAN, "bad", NULL, err, sizeof(err)), 0);
    storage_close(s);

    /* now_ms 0: the window ends at the current time, after every label was made. */
    json_t *j = storage_stats(f->path, "15m", NULL, 0, 0, err, sizeof(err));
    if (!j)
        fail_msg("stats: %s", err);
    assert_near(num(j, "requests", NULL, NULL), 5);
    assert_near(num(j, "errors", NULL, NULL), 0);
    assert_near(num(j, "cost_usd", NULL, NULL), 0.004 + 0.01);
    assert_near(num(j, "tokens_in", NULL, NULL), 50);
    json_t *b = json_object_get(j, "backends");
    assert_near(num(b, "fast", "requests", NULL), 4);
    assert_near(num(b, "fast", "share", NULL), 0.8);
    assert_near(num(b, "strong", "requests", NULL), 1);
    assert_near(num(b, "strong", "share", NULL), 0.2);
    assert_near(num(b, "strong", "errors", NULL), 0);
    assert_near(num(b, "strong", "latency_ms", "p99"), 100);
    assert_near(num(b, "strong", "latency_ms", "n"), 1);
    assert_near(num(b, "strong", "cost_usd", NULL), 0.01);
    assert_near(num(b, "strong", "feedback", "count"), 0);
    assert_near(num(b, "fast", "feedback", "count"), 1);
    assert_near(num(j, "feedback", "count", NULL), 1);
    assert_near(num(j, "score_histogram", "routed", NULL), 5);
    assert_int_equal(json_array_size(json_object_get(j, "recent_errors")), 0);
    json_t *tl = json_object_get(json_object_get(j, "timeline"), "backends");
    double tl_strong = 0;
    json_t *v;
    size_t i;
    json_array_foreach(json_object_get(json_object_get(tl, "strong"), "requests"), i, v)
        tl_strong += json_number_value(v);
    assert_near(tl_strong, 1);

    json_t *l = json_object_get(j, "learning");
    assert_near(num(l, "shadow_calls", NULL, NULL), 2);
    assert_near(num(l, "shadow_cost_usd", NULL, NULL), 0.02);
    assert_near(num(l, "judge_calls", NULL, NULL), 3);
    assert_near(num(l, "judge_cost_usd", NULL, NULL), 0.015);
    assert_near(num(l, "labels", "judge", NULL), 3);
    assert_near(num(l, "labels", "feedback", NULL), 3);
    assert_near(num(l, "labels", "offline", NULL), 1);
    assert_true(json_is_integer(json_object_get(json_object_get(l, "labels"), "judge")));
    json_decref(j);

    /* A window that ends before the labels were made counts none of them. */
    j = storage_stats(f->path, "15m", NULL, 0, now - 10000, err, sizeof(err));
    assert_non_null(j);
    assert_near(num(j, "learning", "labels", "judge"), 0);
    assert_near(num(j, "learning", "shadow_calls", NULL), 2);
    json_decref(j);
}

/* ---- retention ---- */

static void
test_retention(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    char id[32];
    int64_t now = (int64_t)time(NULL) * 1000;

    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    for (int i = 0; i < 30; i++) {
        snprintf(id, sizeof(id), "old-%d", i);
        assert_int_equal(
            storage_submit(s, rec(id, "fast", now - 3 * 86400000LL + i, 1, 1, 1, 1, 0, 0.5)), 0);
    }
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof(id), "new-%d", i);
        assert_int_equal(storage_submit(s, rec(id, "fast", now - 3600000 + i, 1, 1, 1, 1, 0, 0.5)),
                         0);
    }
    /* Just inside 1 day: kept. */
    assert_int_equal(
        storage_submit(s, rec("edge", "fast", now - 86400000LL + 600000, 1, 1, 1, 1, 0, 0.5)), 0);
    storage_close(s);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests"), 41);
    /* Outcomes go by when they were made: 3 old ones, 1 recent. */
    sqlite3 *db = NULL;
    char sql[512];
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    snprintf(sql, sizeof(sql),
             "INSERT INTO outcomes VALUES ('old-1', 'fast', 'judge', 1, NULL, %lld),"
             " ('old-2', 'fast', 'judge', 1, NULL, %lld), ('old-3', 'fast', 'offline', 1, NULL,"
             " %lld), ('new-1', 'fast', 'judge', 1, NULL, %lld)",
             (long long)(now - 3 * 86400000LL), (long long)(now - 3 * 86400000LL),
             (long long)(now - 2 * 86400000LL), (long long)(now - 3600000));
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    /* Batches of 7 rows, a pass every 20 ms. */
    struct storage_options opt = {
        .retention_days = 1, .retention_interval_ms = 20, .retention_batch = 7};
    s = storage_open(f->path, &opt, err, sizeof(err));
    assert_non_null(s);
    struct storage_counters c = {0};
    for (int i = 0; i < 1000; i++) { /* generous: up to 10 s */
        storage_get_counters(s, &c);
        if (c.retention_deleted >= 30)
            break;
        usleep(10000);
    }
    storage_close(s);
    assert_int_equal(c.retention_deleted, 30);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests WHERE request_id LIKE"
                                        " 'old-%'"),
                     0);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests WHERE request_id LIKE"
                                        " 'new-%'"),
                     10);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests WHERE request_id='edge'"),
                     1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM outcomes"), 1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM outcomes WHERE request_id='new-1'"),
                     1);
}

/* What a log line may show of a database target: never a URL's password. */
static void
test_target_shown(void **state)
{
    (void)state;
    assert_string_equal(storage_target_shown("/var/lib/triage/triage.db"),
                        "/var/lib/triage/triage.db");
    assert_string_equal(storage_target_shown("postgresql://triage:s3cret@db:5432/triage"),
                        "postgresql://triage:***@db:5432/triage");
    assert_string_equal(storage_target_shown("postgres://triage@db/triage"),
                        "postgres://triage@db/triage");
    assert_string_equal(storage_target_shown("postgresql://u:p@ss@h/d"), "postgresql://u:***@h/d");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_feedback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_feedback_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_feedback_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_feedback_in_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_figures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_backend_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_percentiles_random, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_rejects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_export, setup, teardown),
        cmocka_unit_test_setup_teardown(test_export_outcomes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_export_features, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_learning, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test(test_target_shown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
