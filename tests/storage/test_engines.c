/* test_engines.c - the PostgreSQL engine against the SQLite one: the same writes through
 * the public API must read back the same (stats, export, registry), and the writer
 * must keep its queue while PostgreSQL is away.
 * usage: test_engines SQLITE_FILE POSTGRESQL_URL STOP_CMD START_CMD */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "storage.h"

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                  \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static char *
xstrdup(const char *s)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        abort();
    return d;
}

/* The workload: every column kind, NULLs, odd text (tabs, newlines, backslashes,
 * non-ASCII), shadow and judge rows, feature blobs. Deterministic. */
static struct storage_record *
make(int i, int64_t t0)
{
    static const char *const backends[] = {"fast", "strong", NULL};
    struct storage_record *r = storage_record_new();
    char id[32], prompt[160];

    snprintf(id, sizeof(id), "req-%d", i);
    r->request_id = xstrdup(id);
    r->started_ms = t0 + i * 37;
    r->finished_ms = r->started_ms + 100 + i % 50;
    r->key_id = xstrdup(i % 3 ? "team-a" : "team\tb\\c");
    r->requested_model = xstrdup("auto");
    r->backend = xstrdup(backends[i % 3]);
    r->route_reason = xstrdup(i % 9 == 2 ? "fallback" : "threshold");
    if (i % 9 == 2)
        r->failed_attempts = xstrdup("strong upstream_5xx,fast\ttimeout");
    if (i % 4) {
        r->score = (i % 97) / 97.0;
        r->threshold = 0.5;
    }
    r->model_version = xstrdup("m1");
    r->features_digest = 0xfedcba9876543210ULL + (uint64_t)i;
    r->prompt_hash = xstrdup(i % 5 ? "h1" : "h2");
    r->status = i % 11 ? 200 : 502;
    if (i % 11 == 0)
        r->error_kind = xstrdup("upstream_5xx");
    r->latency_ms = 10 + i % 89;
    if (i % 6)
        r->ttfb_ms = 1 + i % 13;
    if (i % 7) {
        r->tokens_in = 100 + i;
        r->tokens_out = 10 + i % 31;
    }
    r->finish_reason = xstrdup("stop");
    r->cost_usd = (i % 3 == 1 ? 0.01 : 0.0005) * (1 + i % 5);
    r->stream = i % 2;
    if (i % 10 == 1) {
        snprintf(prompt, sizeof(prompt),
                 "[{\"role\":\"user\",\"content\":\"q%d\\ttab\\nline \\\\ caf\\u00e9 \xc3\xa9\"}]",
                 i % 400);
        r->prompt = xstrdup(prompt);
    }
    if (i % 10 == 3) {
        static const unsigned char blob[] = {'T', 'F', 1, 0, 0, '\t', '\n', '\\', 0xff, 0x00};
        r->features = malloc(sizeof(blob));
        memcpy(r->features, blob, sizeof(blob));
        r->features_len = sizeof(blob);
    }
    if (i % 13 == 5) {
        r->kind = xstrdup(i % 2 ? "shadow" : "judge");
        snprintf(id, sizeof(id), "req-%d", i - 4);
        r->parent_id = xstrdup(id);
    }
    return r;
}

#define N 3000

static int
write_all(const char *target, int64_t t0)
{
    char err[512], id[32];
    struct storage_options o = {.batch_size = 128};
    struct storage *s = storage_open(target, &o, err, sizeof(err));

    CHECK(s, "open %s: %s", target, err);
    if (!s)
        return -1;
    for (int i = 0; i < N; i++)
        CHECK(storage_submit(s, make(i, t0)) == 0, "submit %d", i);
    for (int i = 1; i < N; i += 10) {
        snprintf(id, sizeof(id), "req-%d", i);
        CHECK(storage_outcome_submit(s, id, "strong", "judge", (i % 7) / 7.0, "v1") == 0, "oc");
        CHECK(storage_outcome_submit(s, id, "fast", "offline", (i % 5) / 5.0, NULL) == 0, "oc");
    }
    CHECK(storage_flush(s, 30000) == 0, "flush %s", target);
    for (int i = 1; i < N; i += 20) {
        snprintf(id, sizeof(id), "req-%d", i);
        CHECK(storage_feedback(s, id, (i % 3) / 3.0, NULL, NULL, err, sizeof(err)) == 0,
              "feedback %s: %s", id, err);
        CHECK(storage_feedback(s, id, NAN, "good", NULL, err, sizeof(err)) == 1, "overwrite");
    }
    CHECK(storage_feedback(s, "nope", NAN, "bad", NULL, err, sizeof(err)) == -ENOENT, "404");
    struct storage_counters c;
    storage_get_counters(s, &c);
    CHECK(c.written == N && c.failed == 0 && c.dropped == 0, "%s: written %llu failed %llu",
          target, (unsigned long long)c.written, (unsigned long long)c.failed);
    storage_close(s);
    return 0;
}

/* 1 when a and b are equal, numbers within 1e-9 relative (sums in another order). */
static int
same(json_t *a, json_t *b, const char *where)
{
    if (json_is_number(a) && json_is_number(b)) {
        double x = json_number_value(a), y = json_number_value(b);
        if (fabs(x - y) <= 1e-9 * fmax(1.0, fmax(fabs(x), fabs(y))))
            return 1;
        fprintf(stderr, "  %s: %.17g vs %.17g\n", where, x, y);
        return 0;
    }
    if (json_typeof(a) != json_typeof(b)) {
        fprintf(stderr, "  %s: types differ\n", where);
        return 0;
    }
    if (json_is_object(a)) {
        const char *k;
        json_t *v;
        if (json_object_size(a) != json_object_size(b)) {
            fprintf(stderr, "  %s: sizes differ\n", where);
            return 0;
        }
        json_object_foreach(a, k, v) {
            char w[256];
            snprintf(w, sizeof(w), "%s.%s", where, k);
            json_t *o = json_object_get(b, k);
            if (!o || !same(v, o, w)) {
                if (!o)
                    fprintf(stderr, "  %s: missing\n", w);
                return 0;
            }
        }
        return 1;
    }
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++) {
            char w[256];
            snprintf(w, sizeof(w), "%s[%zu]", where, i);
            if (!same(json_array_get(a, i), json_array_get(b, i), w))
                return 0;
        }
        return 1;
    }
    if (!json_equal(a, b)) {
        fprintf(stderr, "  %s: differ\n", where);
        return 0;
    }
    return 1;
}

static int
collect(json_t *ex, void *arg)
{
    json_array_append(arg, ex);
    return 0;
}

static int
list_row(const struct storage_model_info *m, void *arg)
{
    json_array_append_new(arg, json_pack("{s:s, s:s, s:s, s:I}", "version", m->version, "status",
                                         m->status, "parent", m->parent, "train",
                                         (json_int_t)m->train_examples));
    return 0;
}

static json_t *
registry_run(const char *target)
{
    char err[512];
    json_t *out = json_array();
    struct storage_model_info m = {0};

    snprintf(m.path, sizeof(m.path), "/models/a.tmod");
    snprintf(m.version, sizeof(m.version), "a");
    snprintf(m.source, sizeof(m.source), "shipped");
    snprintf(m.status, sizeof(m.status), "champion");
    m.train_examples = -1;
    m.holdout_n = -1;
    m.apgr = NAN;
    m.parent_apgr = NAN;
    m.esc_holdout_n = -1;
    m.esc_auc = m.parent_esc_auc = NAN;
    m.created_ms = 1000;
    CHECK(storage_model_add(target, &m, err, sizeof(err)) == 0, "add a: %s", err);
    snprintf(m.version, sizeof(m.version), "b");
    snprintf(m.parent, sizeof(m.parent), "a");
    snprintf(m.source, sizeof(m.source), "retrain");
    snprintf(m.status, sizeof(m.status), "candidate");
    m.train_examples = 42;
    m.apgr = 0.7;
    m.esc_holdout_n = 12;
    m.esc_auc = 0.8125;
    m.parent_esc_auc = 0.625;
    snprintf(m.escalation_from, sizeof(m.escalation_from), "a");
    m.created_ms = 2000;
    CHECK(storage_model_add(target, &m, err, sizeof(err)) == 0, "add b: %s", err);
    CHECK(storage_model_promote(target, "b", err, sizeof(err)) == 0, "promote: %s", err);
    CHECK(storage_model_promote(target, "zzz", err, sizeof(err)) == -ENOENT, "promote unknown");
    struct storage_model_info c;
    CHECK(storage_model_champion(target, &c, err, sizeof(err)) == 0 && !strcmp(c.version, "b"),
          "champion b");
    CHECK(c.train_examples == 42 && fabs(c.apgr - 0.7) < 1e-12 && isnan(c.parent_apgr),
          "b's metrics");
    CHECK(c.esc_holdout_n == 12 && c.esc_auc == 0.8125 && c.parent_esc_auc == 0.625 &&
              !strcmp(c.escalation_from, "a") && !c.routing_from[0],
          "b's escalation metrics (schema 11)");
    CHECK(storage_model_rollback(target, &c, err, sizeof(err)) == 0 && !strcmp(c.version, "a"),
          "rollback: %s", err);
    CHECK(storage_model_list(target, list_row, out, err, sizeof(err)) == 2, "list: %s", err);
    return out;
}

int
main(int argc, char **argv)
{
    char err[512];

    if (argc != 5) {
        fprintf(stderr, "usage: test_engines SQLITE_FILE POSTGRESQL_URL STOP_CMD START_CMD\n");
        return 2;
    }
    const char *lite = argv[1], *pg = argv[2];
    int64_t t0 = (int64_t)time(NULL) * 1000 - 3600000; /* within the last 24 h */
    /* the stats end: ahead of every feedback this run writes, however slow the machine */
    int64_t now = t0 + 3600000 + 600000;

    if (write_all(lite, t0) < 0 || write_all(pg, t0) < 0)
        return 1;

    /* Stats: equal, window by window. */
    struct storage_price prices[] = {{"fast", 0.5, 1.5}, {"strong", 5, 15}};
    const char *windows[] = {"15m", "1h", "24h"};
    for (size_t w = 0; w < 3; w++) {
        json_t *a = storage_stats(lite, windows[w], prices, 2, now, err, sizeof(err));
        CHECK(a, "sqlite stats: %s", err);
        json_t *b = storage_stats(pg, windows[w], prices, 2, now, err, sizeof(err));
        CHECK(b, "pg stats: %s", err);
        if (a && b)
            CHECK(same(a, b, windows[w]), "stats %s differ", windows[w]);
        if (w == 2 && b)
            CHECK(json_integer_value(json_object_get(b, "requests")) > 0, "rows in 24h");
        json_decref(a);
        json_decref(b);
    }

    /* Export: the same examples in the same order, the same counts. */
    json_t *ea = json_array(), *eb = json_array();
    struct storage_export_counts ca, cb;
    CHECK(storage_export_training(lite, collect, ea, &ca, err, sizeof(err)) == 0, "export: %s",
          err);
    CHECK(storage_export_training(pg, collect, eb, &cb, err, sizeof(err)) == 0, "pg export: %s",
          err);
    CHECK(json_array_size(ea) > 10, "examples: %zu", json_array_size(ea));
    CHECK(same(ea, eb, "export"), "exports differ");
    CHECK(!memcmp(&ca, &cb, sizeof(ca)), "export counts differ (lines %llu vs %llu)",
          (unsigned long long)ca.lines, (unsigned long long)cb.lines);
    json_decref(ea);
    json_decref(eb);

    /* Registry. */
    json_t *ra = registry_run(lite), *rb = registry_run(pg);
    CHECK(same(ra, rb, "registry"), "registries differ");
    json_decref(ra);
    json_decref(rb);

    /* PostgreSQL away: rows wait in the queue (nothing failed, nothing dropped) and are
     * written once it is back. */
    struct storage_options o = {.batch_size = 64, .flush_interval_ms = 50, .queue_size = 4096};
    struct storage *s = storage_open(pg, &o, err, sizeof(err));
    CHECK(s, "reopen: %s", err);
    if (!s)
        return 1;
    for (int i = 0; i < 100; i++)
        storage_submit(s, make(N + i, now));
    CHECK(storage_flush(s, 30000) == 0, "flush before the outage");
    CHECK(system(argv[3]) == 0, "stop command");
    for (int i = 100; i < 300; i++)
        storage_submit(s, make(N + i, now));
    CHECK(storage_flush(s, 1500) == -ETIMEDOUT, "flush while away must time out");
    struct storage_counters c;
    storage_get_counters(s, &c);
    CHECK(c.failed == 0 && c.dropped == 0 && c.depth == 200 && c.degraded && c.write_errors > 0,
          "away: failed %llu dropped %llu depth %llu degraded %d errors %llu (%s)",
          (unsigned long long)c.failed, (unsigned long long)c.dropped,
          (unsigned long long)c.depth, c.degraded, (unsigned long long)c.write_errors,
          c.last_error);
    CHECK(system(argv[4]) == 0, "start command");
    CHECK(storage_flush(s, 30000) == 0, "flush after the outage");
    storage_get_counters(s, &c);
    CHECK(c.written == 300 && c.failed == 0 && !c.degraded, "back: written %llu failed %llu",
          (unsigned long long)c.written, (unsigned long long)c.failed);
    storage_close(s);
    json_t *st = storage_stats(pg, "15m", NULL, 0, now + (N + 300) * 37, err, sizeof(err));
    CHECK(st && json_integer_value(json_object_get(st, "requests")) +
                        json_integer_value(json_object_get(json_object_get(st, "learning"),
                                                           "shadow_calls")) +
                        json_integer_value(json_object_get(json_object_get(st, "learning"),
                                                           "judge_calls")) >=
                    300,
          "rows after the outage: %s", st ? "" : err);
    json_decref(st);

    /* A batch written again (what the writer does after a COMMIT whose answer was lost:
     * it cannot tell whether it committed) adds no row: request ids are unique and the
     * insert skips those already there (schema 10). */
    int64_t until = now + (N + 2000) * 37; /* past the new rows below */
    st = storage_stats(pg, "24h", NULL, 0, until, err, sizeof(err));
    json_int_t before = st ? json_integer_value(json_object_get(st, "requests")) : -1;
    json_decref(st);
    s = storage_open(pg, &o, err, sizeof(err));
    CHECK(s, "reopen: %s", err);
    if (!s)
        return 1;
    for (int i = 0; i < 300; i++) /* the outage's rows again, and 10 new ones */
        storage_submit(s, make(N + i, now));
    for (int i = 0; i < 10; i++) /* shadow and judge rows count apart: keep these client rows */
        storage_submit(s, make(N + 1000 + i * 13, now));
    CHECK(storage_flush(s, 30000) == 0, "flush the repeat");
    storage_get_counters(s, &c);
    CHECK(c.failed == 0 && !c.degraded, "repeat: failed %llu (%s)", (unsigned long long)c.failed,
          c.last_error);
    storage_close(s);
    st = storage_stats(pg, "24h", NULL, 0, until, err, sizeof(err));
    json_int_t after = st ? json_integer_value(json_object_get(st, "requests")) : -1;
    json_decref(st);
    CHECK(before > 0 && after == before + 10,
          "a batch written twice: %lld client rows before, %lld after (want %lld)",
          (long long)before, (long long)after, (long long)before + 10);

    /* A URL's password never shows in an error. */
    CHECK(!storage_stats("postgresql://u:sekrit@127.0.0.1:1/x", "1h", NULL, 0, 0, err,
                         sizeof(err)) &&
              !strstr(err, "sekrit"),
          "password in: %s", err);
    if (failures)
        fprintf(stderr, "%d failure(s)\n", failures);
    else
        printf("ok: stats, export and registry equal on both engines; 200 rows kept through "
               "an outage\n");
    return failures ? 1 : 0;
}
