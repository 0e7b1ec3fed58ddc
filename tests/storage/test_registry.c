/* test_registry.c - tests storage/registry.c: the model registry (add, champion, promote,
 * rollback, list), its one-champion rule, the schema 4 -> 5 upgrade and invalid input. */
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
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sqlite3.h>

#include "fixture.h"
#include "storage.h"

/* A model row: version v, file /models/<v>.tmod, the given parent, source and status,
 * created at created_ms, metrics unknown. */
static struct storage_model_info
model(const char *v, const char *parent, const char *source, const char *status, int64_t created_ms)
{
    struct storage_model_info m;

    memset(&m, 0, sizeof(m));
    snprintf(m.version, sizeof(m.version), "%s", v);
    snprintf(m.path, sizeof(m.path), "/models/%s.tmod", v);
    snprintf(m.parent, sizeof(m.parent), "%s", parent);
    snprintf(m.source, sizeof(m.source), "%s", source);
    snprintf(m.status, sizeof(m.status), "%s", status);
    m.created_ms = created_ms;
    m.train_examples = -1;
    m.holdout_n = -1;
    m.apgr = NAN;
    m.parent_apgr = NAN;
    m.esc_holdout_n = -1;
    m.esc_auc = m.parent_esc_auc = NAN;
    return m;
}

static void
add(const char *path, struct storage_model_info m)
{
    char err[256] = "";
    int rc = storage_model_add(path, &m, err, sizeof(err));
    if (rc != 0)
        fail_msg("storage_model_add %s: %d %s", m.version, rc, err);
}

/* storage_model_fn: copies the row of the version named in *arg into it. */
static int
find_bbbb(const struct storage_model_info *m, void *arg)
{
    struct storage_model_info *out = arg;
    if (!strcmp(m->version, out->version))
        *out = *m;
    return 0;
}

/* Fails unless version is the champion; returns its row. */
static struct storage_model_info
champion_is(const char *path, const char *version)
{
    struct storage_model_info m;
    char err[256] = "";
    int rc = storage_model_champion(path, &m, err, sizeof(err));
    if (rc != 0)
        fail_msg("storage_model_champion: %d %s", rc, err);
    assert_string_equal(m.version, version);
    assert_string_equal(m.status, "champion");
    return m;
}

static int64_t
count_status(const char *path, const char *status)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM models WHERE status = '%s'", status);
    return query_int(path, sql);
}

static char *
status_of(const char *path, const char *version)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    char *s = NULL;

    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT status FROM models WHERE version = ?", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_text(st, 1, version, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        s = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_non_null(s);
    return s;
}

static void
assert_status(const char *path, const char *version, const char *status)
{
    char *s = status_of(path, version);
    if (strcmp(s, status))
        fail_msg("%s is %s, expected %s", version, s, status);
    free(s);
}

/* storage_model_fn: appends the version to the list in arg ("a,b,c"). */
struct seen {
    char versions[512];
    int stop_after; /* 0 = never */
    int calls;
};

static int
collect(const struct storage_model_info *m, void *arg)
{
    struct seen *s = arg;
    size_t n = strlen(s->versions);

    snprintf(s->versions + n, sizeof(s->versions) - n, "%s%s", n ? "," : "", m->version);
    s->calls++;
    return s->stop_after && s->calls >= s->stop_after;
}

static void
test_add_replace(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct storage_model_info got;

    /* add creates the database when there is none. */
    struct storage_model_info m = model("aaaa", "", "manual", "candidate", 1000);
    m.train_examples = 1234;
    m.holdout_n = 200;
    m.apgr = 0.625;
    m.parent_apgr = 0.5;
    add(f->path, m);
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), STORAGE_SCHEMA_VERSION);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM models"), 1);
    assert_int_equal(query_int(f->path, "SELECT train_examples FROM models"), 1234);
    assert_int_equal(query_int(f->path, "SELECT holdout_n FROM models"), 200);
    assert_int_equal(query_int(f->path, "SELECT promoted_ms FROM models"), 0);

    /* The same version again replaces the row: one row, the new fields. */
    m = model("aaaa", "zzzz", "retrain", "champion", 2000);
    snprintf(m.path, sizeof(m.path), "/elsewhere/a.tmod");
    add(f->path, m);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM models"), 1);
    got = champion_is(f->path, "aaaa");
    assert_string_equal(got.path, "/elsewhere/a.tmod");
    assert_string_equal(got.parent, "zzzz");
    assert_string_equal(got.source, "retrain");
    assert_int_equal(got.created_ms, 2000);
    assert_true(got.promoted_ms > 0); /* a champion row gets promoted_ms = now */
    /* Unknowns come back as -1 and NaN. */
    assert_int_equal(got.train_examples, -1);
    assert_int_equal(got.holdout_n, -1);
    assert_true(isnan(got.apgr));
    assert_true(isnan(got.parent_apgr));
    assert_int_equal(got.esc_holdout_n, -1);
    assert_true(isnan(got.esc_auc) && isnan(got.parent_esc_auc));
    assert_string_equal(got.routing_from, "");
    assert_string_equal(got.escalation_from, "");

    /* Known metrics round-trip; created_ms 0 is stored as now. */
    m = model("bbbb", "aaaa", "retrain", "candidate", 0);
    m.train_examples = 0;
    m.holdout_n = 7;
    m.apgr = 0.75;
    m.parent_apgr = 0.25;
    m.esc_holdout_n = 31;
    m.esc_auc = 0.875;
    m.parent_esc_auc = 0.625;
    snprintf(m.routing_from, sizeof(m.routing_from), "zzzz");
    add(f->path, m);
    struct seen s = {0};
    assert_int_equal(storage_model_list(f->path, collect, &s, err, sizeof(err)), 2);
    assert_string_equal(s.versions, "bbbb,aaaa");
    assert_true(query_int(f->path, "SELECT created_ms FROM models WHERE version = 'bbbb'") >
                1600000000000);
    assert_int_equal(query_int(f->path, "SELECT train_examples FROM models WHERE version = 'bbbb'"),
                     0);
    assert_int_equal(query_int(f->path,
                               "SELECT count(*) FROM models WHERE version = 'bbbb'"
                               " AND apgr = 0.75 AND parent_apgr = 0.25 AND holdout_n = 7"),
                     1);
    /* the escalation part's metrics and a combined file's sources (schema 11) */
    assert_int_equal(query_int(f->path,
                               "SELECT count(*) FROM models WHERE version = 'bbbb' AND"
                               " esc_holdout_n = 31 AND esc_auc = 0.875 AND parent_esc_auc ="
                               " 0.625 AND routing_from = 'zzzz' AND escalation_from = ''"),
                     1);
    struct storage_model_info b = model("bbbb", "aaaa", "retrain", "candidate", 0);
    assert_int_equal(storage_model_list(f->path, find_bbbb, &b, err, sizeof(err)), 2);
    assert_int_equal(b.esc_holdout_n, 31);
    assert_true(b.esc_auc == 0.875 && b.parent_esc_auc == 0.625);
    assert_string_equal(b.routing_from, "zzzz");
    /* measured on no answers: no metric, whatever the AUCs say */
    m = model("cccc", "aaaa", "retrain", "candidate", 0);
    m.esc_holdout_n = 0;
    m.esc_auc = 0.5;
    add(f->path, m);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM models WHERE version = 'cccc' AND"
                                        " esc_holdout_n IS NULL AND esc_auc IS NULL"),
                     1);
    memset(m.escalation_from, 'x', sizeof(m.escalation_from)); /* unterminated */
    assert_int_equal(storage_model_add(f->path, &m, err, sizeof(err)), -EINVAL);
    champion_is(f->path, "aaaa");
}

static void
test_champion(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct storage_model_info m;

    /* No database: an error, not "none". */
    assert_int_equal(storage_model_champion(f->path, &m, err, sizeof(err)), -EIO);
    assert_int_equal(access(f->path, F_OK), -1); /* and not created */

    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    storage_close(s);
    err[0] = '\0';
    assert_int_equal(storage_model_champion(f->path, &m, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "no champion"));

    add(f->path, model("cand", "", "retrain", "candidate", 1000));
    assert_int_equal(storage_model_champion(f->path, &m, err, sizeof(err)), -ENOENT);

    add(f->path, model("ship", "", "shipped", "champion", 900));
    m = champion_is(f->path, "ship");
    assert_string_equal(m.source, "shipped");
    assert_string_equal(m.path, "/models/ship.tmod");
    assert_string_equal(m.parent, "");

    /* Adding another champion retires the first: still exactly one. */
    add(f->path, model("hand", "ship", "manual", "champion", 1100));
    champion_is(f->path, "hand");
    assert_status(f->path, "ship", "retired");
    assert_status(f->path, "cand", "candidate");
    assert_int_equal(count_status(f->path, "champion"), 1);

    /* The unique index backs the rule against writers that bypass the functions. */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_not_equal(
        sqlite3_exec(db, "UPDATE models SET status = 'champion' WHERE version = 'cand'", NULL, NULL,
                     NULL),
        SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(count_status(f->path, "champion"), 1);
}

static void
test_promote(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";

    add(f->path, model("v1", "", "shipped", "champion", 1000));
    add(f->path, model("v2", "v1", "retrain", "candidate", 2000));
    add(f->path, model("v3", "v1", "retrain", "candidate", 3000));
    int64_t p1 = champion_is(f->path, "v1").promoted_ms;

    assert_int_equal(storage_model_promote(f->path, "v2", err, sizeof(err)), 0);
    struct storage_model_info m = champion_is(f->path, "v2");
    assert_true(m.promoted_ms > p1);
    assert_status(f->path, "v1", "retired");
    assert_status(f->path, "v3", "candidate");
    assert_int_equal(count_status(f->path, "champion"), 1);

    /* Promoting the champion changes nothing. */
    assert_int_equal(storage_model_promote(f->path, "v2", err, sizeof(err)), 0);
    assert_int_equal(champion_is(f->path, "v2").promoted_ms, m.promoted_ms);

    /* Promotions in one millisecond still get increasing times. */
    assert_int_equal(storage_model_promote(f->path, "v3", err, sizeof(err)), 0);
    assert_true(champion_is(f->path, "v3").promoted_ms > m.promoted_ms);
    assert_status(f->path, "v2", "retired");

    /* An unknown version: -ENOENT naming it, nothing changed. */
    err[0] = '\0';
    assert_int_equal(storage_model_promote(f->path, "nope", err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "nope"));
    champion_is(f->path, "v3");
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM models"), 3);

    /* No database file: -EIO, and none is made. */
    char other[200];
    snprintf(other, sizeof(other), "%s/none.db", f->dir);
    assert_int_equal(storage_model_promote(other, "v1", err, sizeof(err)), -EIO);
    assert_int_equal(access(other, F_OK), -1);
}

static void
test_rollback_order(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct storage_model_info m;

    /* A shipped; B retrained from A and promoted; C from B and promoted. */
    add(f->path, model("A", "", "shipped", "champion", 1000));
    add(f->path, model("B", "A", "retrain", "candidate", 2000));
    assert_int_equal(storage_model_promote(f->path, "B", err, sizeof(err)), 0);
    add(f->path, model("C", "B", "retrain", "candidate", 3000));
    assert_int_equal(storage_model_promote(f->path, "C", err, sizeof(err)), 0);
    /* A candidate that never served is never rolled back to. */
    add(f->path, model("X", "C", "retrain", "candidate", 4000));

    /* Back along the lineage: C -> B -> A. */
    memset(&m, 0, sizeof(m));
    assert_int_equal(storage_model_rollback(f->path, &m, err, sizeof(err)), 0);
    assert_string_equal(m.version, "B");
    assert_string_equal(m.status, "champion");
    champion_is(f->path, "B");
    assert_status(f->path, "C", "retired");
    assert_int_equal(storage_model_rollback(f->path, &m, err, sizeof(err)), 0);
    assert_string_equal(m.version, "A");
    champion_is(f->path, "A");
    assert_status(f->path, "B", "retired");
    assert_status(f->path, "X", "candidate");
    assert_int_equal(count_status(f->path, "champion"), 1);

    /* A has no parent: the latest champion before it, B (champion again since C). */
    assert_int_equal(storage_model_rollback(f->path, NULL, err, sizeof(err)), 0);
    champion_is(f->path, "B");
    assert_status(f->path, "A", "retired");

    /* A champion whose parent never served: the latest retired by promotion time. Here
     * M (parent X, a candidate) replaced B, so the rollback goes back to B. */
    add(f->path, model("M", "X", "manual", "candidate", 5000));
    assert_int_equal(storage_model_promote(f->path, "M", err, sizeof(err)), 0);
    assert_int_equal(storage_model_rollback(f->path, &m, err, sizeof(err)), 0);
    assert_string_equal(m.version, "B");
    assert_status(f->path, "M", "retired");
    assert_status(f->path, "X", "candidate");
    assert_int_equal(count_status(f->path, "champion"), 1);
    assert_int_equal(count_status(f->path, "retired"), 3);
}

/* storage_model_timeline: every version, newest first, and the changes of champion in
 * time order, a change back to an older model after a newer one served named a rollback. */
static void
test_timeline(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";

    add(f->path, model("A", "", "shipped", "champion", 1000));
    struct storage_model_info b = model("B", "A", "retrain", "candidate", 2000);
    b.apgr = 0.66;
    b.parent_apgr = 0.6;
    b.holdout_n = 120;
    b.train_examples = 39000;
    add(f->path, b);
    assert_int_equal(storage_model_promote(f->path, "B", err, sizeof(err)), 0);
    add(f->path, model("C", "B", "retrain", "candidate", 3000));
    assert_int_equal(storage_model_promote(f->path, "C", err, sizeof(err)), 0);
    add(f->path, model("D", "C", "retrain", "candidate", 4000)); /* never served */
    assert_int_equal(storage_model_rollback(f->path, NULL, err, sizeof(err)), 0); /* C -> B */

    json_t *t = storage_model_timeline(f->path, err, sizeof(err));
    if (!t)
        fail_msg("storage_model_timeline: %s", err);
    json_t *v = json_object_get(t, "versions"), *c = json_object_get(t, "changes");
    assert_int_equal(json_array_size(v), 4);
    assert_string_equal(json_string_value(json_object_get(json_array_get(v, 0), "version")), "D");
    json_t *row_b = json_array_get(v, 2);
    assert_string_equal(json_string_value(json_object_get(row_b, "version")), "B");
    assert_string_equal(json_string_value(json_object_get(row_b, "status")), "champion");
    assert_string_equal(json_string_value(json_object_get(row_b, "parent")), "A");
    assert_true(json_real_value(json_object_get(row_b, "apgr")) == 0.66);
    assert_int_equal(json_integer_value(json_object_get(row_b, "holdout_n")), 120);
    assert_true(json_is_null(json_object_get(json_array_get(v, 0), "apgr")));
    assert_true(json_is_null(json_object_get(json_array_get(v, 0), "holdout_n")));
    assert_int_equal(json_integer_value(json_object_get(json_array_get(v, 0), "promoted_ms")), 0);

    /* A first, C promoted, then B back: D never served and makes no change */
    static const char *const want[][2] = {{"A", "first"}, {"C", "promotion"}, {"B", "rollback"}};
    assert_int_equal(json_array_size(c), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(c, i);
        assert_string_equal(json_string_value(json_object_get(e, "version")), want[i][0]);
        assert_string_equal(json_string_value(json_object_get(e, "kind")), want[i][1]);
        if (i)
            assert_true(json_integer_value(json_object_get(e, "ms")) >
                        json_integer_value(json_object_get(json_array_get(c, i - 1), "ms")));
    }
    json_decref(t);

    /* no database: an error, not a crash */
    err[0] = '\0';
    assert_null(storage_model_timeline("/nonexistent/t.db", err, sizeof(err)));
    assert_true(err[0] != '\0');
}

static void
test_rollback_nothing(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct storage_model_info m;

    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    storage_close(s);
    /* Empty registry. */
    err[0] = '\0';
    assert_int_equal(storage_model_rollback(f->path, &m, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "no champion"));

    /* One champion, candidates only besides it. */
    add(f->path, model("only", "", "shipped", "champion", 1000));
    add(f->path, model("cand", "only", "retrain", "candidate", 2000));
    err[0] = '\0';
    assert_int_equal(storage_model_rollback(f->path, &m, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "nothing to roll back to"));
    champion_is(f->path, "only");
    assert_status(f->path, "cand", "candidate");

    /* Retired models but no champion: nothing to roll back from. */
    assert_int_equal(storage_model_promote(f->path, "cand", err, sizeof(err)), 0);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE models SET status = 'retired'", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(storage_model_rollback(f->path, &m, err, sizeof(err)), -ENOENT);
    assert_int_equal(count_status(f->path, "retired"), 2);
}

static void
test_list(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct seen s = {0};

    /* No database: -EIO, none created. */
    err[0] = '\0';
    assert_int_equal(storage_model_list(f->path, collect, &s, err, sizeof(err)), -EIO);
    assert_true(err[0] != '\0');
    assert_int_equal(access(f->path, F_OK), -1);

    struct storage *st = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(st);
    storage_close(st);
    assert_int_equal(storage_model_list(f->path, collect, &s, err, sizeof(err)), 0);
    assert_string_equal(s.versions, "");

    /* Added out of order; same created_ms: the later insert first. */
    add(f->path, model("m2", "", "retrain", "candidate", 2000));
    add(f->path, model("m4", "", "retrain", "candidate", 4000));
    add(f->path, model("m1", "", "shipped", "champion", 1000));
    add(f->path, model("m3a", "", "retrain", "candidate", 3000));
    add(f->path, model("m3b", "", "retrain", "candidate", 3000));
    assert_int_equal(storage_model_list(f->path, collect, &s, err, sizeof(err)), 5);
    assert_string_equal(s.versions, "m4,m3b,m3a,m2,m1");

    /* A nonzero return stops the walk; the count is of the rows passed. */
    struct seen t = {.stop_after = 2};
    assert_int_equal(storage_model_list(f->path, collect, &t, err, sizeof(err)), 2);
    assert_string_equal(t.versions, "m4,m3b");
}

/* Schema version 4 exactly as the release before the registry created it (migrations
 * 0..3), with a row in it. */
static const char v4_sql[] =
    "CREATE TABLE requests (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL,"
    " started_ms INTEGER NOT NULL, finished_ms INTEGER, key_id TEXT, requested_model TEXT,"
    " backend TEXT, route_reason TEXT, score REAL, threshold REAL, model_version TEXT,"
    " features_digest INTEGER, prompt_hash TEXT, status INTEGER, error_kind TEXT,"
    " latency_ms REAL, ttfb_ms REAL, tokens_in INTEGER, tokens_out INTEGER,"
    " finish_reason TEXT, cost_usd REAL, stream INTEGER, prompt TEXT);"
    "CREATE TABLE feedback (request_id TEXT NOT NULL, source TEXT NOT NULL, score REAL NOT NULL,"
    " label TEXT, created_ms INTEGER NOT NULL, PRIMARY KEY (request_id, source));"
    "CREATE INDEX feedback_created ON feedback(created_ms);"
    "CREATE INDEX requests_request_id ON requests(request_id);"
    "ALTER TABLE requests ADD COLUMN kind TEXT;"
    "ALTER TABLE requests ADD COLUMN parent_id TEXT;"
    "CREATE INDEX requests_window ON requests(started_ms, backend, status, error_kind,"
    " latency_ms, ttfb_ms, tokens_in, tokens_out, cost_usd, score, kind);"
    "CREATE TABLE outcomes (request_id TEXT NOT NULL, backend TEXT NOT NULL,"
    " source TEXT NOT NULL, q REAL NOT NULL, detail TEXT, created_ms INTEGER NOT NULL,"
    " PRIMARY KEY (request_id, backend, source));"
    "CREATE INDEX outcomes_created ON outcomes(created_ms);"
    "INSERT INTO requests (request_id, started_ms, backend, status, model_version)"
    " VALUES ('old-4', 1700000000000, 'fast', 200, 'v-old');"
    "INSERT INTO outcomes VALUES ('old-4', 'fast', 'judge', 1.0, NULL, 1700000001000);"
    "PRAGMA journal_mode=WAL;"
    "PRAGMA user_version = 4;";

static void
exec_sql(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    char *msg = NULL;

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("sql: %s", msg);
    sqlite3_close(db);
}

/* A database of the previous schema upgrades in place, from the registry's own calls
 * (the CLI on an old log) as from storage_open (the daemon). */
static void
test_migrate_from_v4(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct seen s = {0};

    exec_sql(f->path, v4_sql);
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), 4);
    assert_int_equal(storage_model_list(f->path, collect, &s, err, sizeof(err)), 0);
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), STORAGE_SCHEMA_VERSION);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests WHERE request_id = 'old-4'"
                                        " AND model_version = 'v-old'"),
                     1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM outcomes"), 1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE name IN"
                                        " ('models', 'models_champion', 'models_created')"),
                     3);
    add(f->path, model("new", "", "shipped", "champion", 1000));
    champion_is(f->path, "new");
    /* Readers of the old tables still work on it. */
    FILE *devnull = fopen("/dev/null", "w");
    assert_non_null(devnull);
    assert_int_equal(storage_export_jsonl(f->path, devnull, NULL, err, sizeof(err)), 0);
    fclose(devnull);

    /* And storage_open (the daemon) migrates a v4 file just as well. */
    teardown(state);
    setup(state);
    f = *state;
    exec_sql(f->path, v4_sql);
    struct storage *st = storage_open(f->path, NULL, err, sizeof(err));
    if (!st)
        fail_msg("storage_open: %s", err);
    storage_close(st);
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), STORAGE_SCHEMA_VERSION);
    assert_int_equal(
        storage_model_champion(f->path, &(struct storage_model_info){0}, err, sizeof(err)),
        -ENOENT);

    /* A newer schema is refused, untouched. */
    teardown(state);
    setup(state);
    f = *state;
    exec_sql(f->path, "CREATE TABLE future (x); PRAGMA user_version = 99;");
    err[0] = '\0';
    assert_int_equal(storage_model_list(f->path, collect, &s, err, sizeof(err)), -EIO);
    assert_non_null(strstr(err, "newer"));
    struct storage_model_info m = model("x", "", "manual", "candidate", 1);
    assert_int_equal(storage_model_add(f->path, &m, err, sizeof(err)), -EIO);
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), 99);
}

static void
test_invalid(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct storage_model_info m;

    m = model("", "", "manual", "candidate", 1);
    assert_int_equal(storage_model_add(f->path, &m, err, sizeof(err)), -EINVAL);
    m = model("v", "", "manual", "candidate", 1);
    m.path[0] = '\0';
    assert_int_equal(storage_model_add(f->path, &m, err, sizeof(err)), -EINVAL);
    m = model("v", "", "bought", "candidate", 1);
    err[0] = '\0';
    assert_int_equal(storage_model_add(f->path, &m, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "bought"));
    m = model("v", "", "manual", "best", 1);
    assert_int_equal(storage_model_add(f->path, &m, err, sizeof(err)), -EINVAL);
    m = model("v", "", "", "candidate", 1);
    assert_int_equal(storage_model_add(f->path, &m, err, sizeof(err)), -EINVAL);
    m = model("v", "", "manual", "", 1);
    assert_int_equal(storage_model_add(f->path, &m, err, sizeof(err)), -EINVAL);
    /* Unterminated fixed-size fields. */
    m = model("v", "", "manual", "candidate", 1);
    memset(m.version, 'a', sizeof(m.version));
    assert_int_equal(storage_model_add(f->path, &m, err, sizeof(err)), -EINVAL);
    m = model("v", "", "manual", "candidate", 1);
    memset(m.parent, 'a', sizeof(m.parent));
    assert_int_equal(storage_model_add(f->path, &m, err, sizeof(err)), -EINVAL);
    m = model("v", "", "manual", "candidate", 1);
    memcpy(m.source, "manualmanualmanu", sizeof(m.source));
    assert_int_equal(storage_model_add(f->path, &m, err, sizeof(err)), -EINVAL);
    m = model("v", "", "manual", "candidate", 1);
    memcpy(m.status, "candidatecandida", sizeof(m.status));
    assert_int_equal(storage_model_add(f->path, &m, err, sizeof(err)), -EINVAL);
    assert_int_equal(storage_model_add(f->path, NULL, err, sizeof(err)), -EINVAL);
    assert_int_equal(storage_model_add(NULL, &m, err, sizeof(err)), -EINVAL);
    /* Nothing was written (not even the file). */
    assert_int_equal(access(f->path, F_OK), -1);

    assert_int_equal(storage_model_promote(f->path, "", err, sizeof(err)), -EINVAL);
    assert_int_equal(storage_model_promote(f->path, NULL, err, sizeof(err)), -EINVAL);
    assert_int_equal(storage_model_champion(f->path, NULL, err, sizeof(err)), -EINVAL);
    assert_int_equal(storage_model_list(f->path, NULL, NULL, err, sizeof(err)), -EINVAL);

    /* Not a triage database. */
    exec_sql(f->path, "CREATE TABLE other (x);");
    err[0] = '\0';
    assert_int_equal(storage_model_list(f->path, collect, &(struct seen){0}, err, sizeof(err)),
                     -EIO);
    assert_non_null(strstr(err, "not a triage database"));
}

/* Threads promoting at once (the daemon's retrainer against `triage models promote`):
 * every call succeeds in its turn and there is always exactly one champion. */
struct racer {
    const char *path;
    int id;
    int failures;
};

static void *
race(void *arg)
{
    struct racer *r = arg;
    char v[16], err[256];

    for (int i = 0; i < 25; i++) {
        snprintf(v, sizeof(v), "r%d", (r->id + i) % 4);
        if (storage_model_promote(r->path, v, err, sizeof(err)) != 0)
            r->failures++;
        if (i % 5 == 4 && storage_model_rollback(r->path, NULL, err, sizeof(err)) != 0)
            r->failures++;
    }
    return NULL;
}

static void
test_concurrent(void **state)
{
    struct fixture *f = *state;
    pthread_t t[4];
    struct racer r[4];

    add(f->path, model("r0", "", "shipped", "champion", 1000));
    add(f->path, model("r1", "r0", "retrain", "candidate", 2000));
    add(f->path, model("r2", "r1", "retrain", "candidate", 3000));
    add(f->path, model("r3", "r2", "manual", "candidate", 4000));
    for (int i = 0; i < 4; i++) {
        r[i] = (struct racer){f->path, i, 0};
        assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(r[i].failures, 0);
    }
    assert_int_equal(count_status(f->path, "champion"), 1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM models"), 4);
    /* promoted_ms strictly increasing: no two rows share one. */
    assert_int_equal(query_int(f->path, "SELECT count(DISTINCT promoted_ms) FROM models"
                                        " WHERE promoted_ms > 0"),
                     query_int(f->path, "SELECT count(*) FROM models WHERE promoted_ms > 0"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_champion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_promote, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_from_v4, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
