/* test_writer.c - tests storage/storage.c: schema, migrations, the batched writer, loss counting.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sqlite3.h>

#include "fixture.h"
#include "storage.h"

static struct storage_record *
make_record(const char *id, int64_t started_ms)
{
    struct storage_record *r = storage_record_new();
    r->request_id = strdup(id);
    r->started_ms = started_ms;
    r->finished_ms = started_ms + 100;
    r->backend = strdup("fast");
    r->status = 200;
    r->latency_ms = 100;
    r->tokens_in = 10;
    r->tokens_out = 20;
    r->cost_usd = 0.001;
    return r;
}

/* CLOCK_MONOTONIC in ms, the clock of counters.last_error_ms. */
static int64_t
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
exec_sql(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("sql: %s", msg);
    sqlite3_close(db);
}

static void
test_create_schema(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";

    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    storage_close(s);
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), STORAGE_SCHEMA_VERSION);
    char *mode = NULL;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    mode = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_string_equal(mode, "wal");
    free(mode);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE name IN"
                                        " ('requests','feedback','requests_window',"
                                        "'requests_request_id','outcomes','outcomes_created',"
                                        "'models','models_champion','models_created')"),
                     9);
    /* Reopening a current database is a no-op. */
    s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    storage_close(s);
}

/* Schema version 1 exactly as the first release created it. */
static const char v1_sql[] =
    "CREATE TABLE requests (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL,"
    " started_ms INTEGER NOT NULL, finished_ms INTEGER, key_id TEXT, requested_model TEXT,"
    " backend TEXT, route_reason TEXT, score REAL, threshold REAL, model_version TEXT,"
    " features_digest INTEGER, prompt_hash TEXT, status INTEGER, error_kind TEXT,"
    " latency_ms REAL, ttfb_ms REAL, tokens_in INTEGER, tokens_out INTEGER,"
    " finish_reason TEXT, cost_usd REAL, stream INTEGER, prompt TEXT);"
    "CREATE INDEX requests_started ON requests(started_ms);"
    "INSERT INTO requests (request_id, started_ms, backend, status) VALUES"
    " ('old-1', 1000, 'fast', 200);"
    "PRAGMA user_version = 1;";

static void
test_migrate_from_v1(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";

    exec_sql(f->path, v1_sql);
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), 1);
    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    /* The old row survived and feedback (a v2 table) works against it. */
    assert_int_equal(storage_feedback(s, "old-1", 0.5, NULL, NULL, err, sizeof(err)), 0);
    storage_close(s);
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), STORAGE_SCHEMA_VERSION);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests WHERE request_id='old-1'"),
                     1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM feedback"), 1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE name IN"
                                        " ('requests_request_id', 'requests_window')"),
                     2);
    assert_int_equal(
        query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE name='requests_started'"), 0);
}

/* storage_export_fn: keeps every example in the array arg. */
static int
collect(json_t *ex, void *arg)
{
    json_array_append(arg, ex);
    return 0;
}

/* Schema version 3 exactly as the release before learning created it (migrations
 * 0..2), with a labelled row in it. */
static const char v3_sql[] =
    "CREATE TABLE requests (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL,"
    " started_ms INTEGER NOT NULL, finished_ms INTEGER, key_id TEXT, requested_model TEXT,"
    " backend TEXT, route_reason TEXT, score REAL, threshold REAL, model_version TEXT,"
    " features_digest INTEGER, prompt_hash TEXT, status INTEGER, error_kind TEXT,"
    " latency_ms REAL, ttfb_ms REAL, tokens_in INTEGER, tokens_out INTEGER,"
    " finish_reason TEXT, cost_usd REAL, stream INTEGER, prompt TEXT);"
    "CREATE INDEX requests_started ON requests(started_ms);"
    "CREATE TABLE feedback (request_id TEXT NOT NULL, source TEXT NOT NULL, score REAL NOT NULL,"
    " label TEXT, created_ms INTEGER NOT NULL, PRIMARY KEY (request_id, source));"
    "CREATE INDEX feedback_created ON feedback(created_ms);"
    "CREATE INDEX requests_request_id ON requests(request_id);"
    "CREATE INDEX requests_window ON requests(started_ms, backend, status, error_kind,"
    " latency_ms, ttfb_ms, tokens_in, tokens_out, cost_usd, score);"
    "DROP INDEX requests_started;"
    "INSERT INTO requests (request_id, started_ms, backend, status, latency_ms, cost_usd, prompt)"
    " VALUES ('old-3', 1700000000000, 'fast', 200, 12, 0.5,"
    " '[{\"role\":\"user\",\"content\":\"hi\"}]');"
    "INSERT INTO feedback VALUES ('old-3', 'client', 1.0, 'good', 1700000001000);"
    "PRAGMA user_version = 3;";

/* A database of the previous schema upgrades in place: rows, feedback and the stats
 * index survive, the new columns read NULL (client requests), outcomes work. */
static void
test_migrate_from_v3(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";

    exec_sql(f->path, v3_sql);
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), 3);
    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    if (!s)
        fail_msg("storage_open: %s", err);
    assert_int_equal(storage_outcome_submit(s, "old-3", "strong", "judge", 0.25, NULL), 0);
    struct storage_record *r = make_record("shadow-3", 1700000000500);
    r->kind = strdup("shadow");
    r->parent_id = strdup("old-3");
    assert_int_equal(storage_submit(s, r), 0);
    storage_close(s);

    assert_int_equal(query_int(f->path, "PRAGMA user_version"), STORAGE_SCHEMA_VERSION);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests WHERE request_id='old-3'"
                                        " AND kind IS NULL AND parent_id IS NULL AND backend='fast'"
                                        " AND latency_ms=12 AND prompt IS NOT NULL"),
                     1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests WHERE"
                                        " request_id='shadow-3' AND kind='shadow'"
                                        " AND parent_id='old-3'"),
                     1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM feedback WHERE request_id='old-3'"),
                     1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM outcomes WHERE request_id='old-3'"
                                        " AND backend='strong' AND source='judge' AND q=0.25"),
                     1);
    /* The stats index was rebuilt with kind, the old index list is otherwise intact. */
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM pragma_index_info('requests_window')"
                                        " WHERE name='kind'"),
                     1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM sqlite_master WHERE type='index'"
                                        " AND name IN ('requests_request_id', 'requests_window',"
                                        " 'feedback_created', 'outcomes_created')"),
                     4);
    /* Readers accept it, and the old feedback and the new outcome both label the prompt. */
    struct storage_export_counts c;
    json_t *lines = json_array();
    assert_int_equal(storage_export_training(f->path, collect, lines, &c, err, sizeof(err)), 0);
    json_t *want = json_pack("{s:[{s:s, s:s}], s:{s:f, s:f}, s:{s:s, s:s}}", "messages", "role",
                             "user", "content", "hi", "outcomes", "fast", 1.0, "strong", 0.25,
                             "sources", "fast", "feedback", "strong", "judge");
    assert_int_equal(json_array_size(lines), 1);
    assert_true(json_equal(json_array_get(lines, 0), want));
    json_decref(want);
    json_decref(lines);
    assert_int_equal(c.rows, 1);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.lines, 1);
    assert_int_equal(c.by_feedback, 1);
    assert_int_equal(c.by_judge, 1);
    /* Reopening the migrated database is a no-op. */
    s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    storage_close(s);
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), STORAGE_SCHEMA_VERSION);
}

static void
test_refuse_newer(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";

    exec_sql(f->path, "CREATE TABLE future (x); PRAGMA user_version = 99;");
    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_null(s);
    assert_non_null(strstr(err, "newer"));
    assert_non_null(strstr(err, "99"));
    /* And nothing was changed. */
    assert_int_equal(query_int(f->path, "PRAGMA user_version"), 99);
}

static void
test_fields_roundtrip(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";

    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    struct storage_record *r = make_record("rt-1", 1700000000000);
    r->key_id = strdup("team-a");
    r->requested_model = strdup("triage");
    r->route_reason = strdup("threshold");
    r->score = 0.75;
    r->threshold = 0.5;
    r->model_version = strdup("m-3");
    r->features_digest = UINT64_C(0xfedcba9876543210);
    r->prompt_hash = strdup("abc123");
    r->error_kind = strdup("upstream_timeout");
    r->status = 504;
    r->ttfb_ms = 12.5;
    r->finish_reason = strdup("stop");
    r->stream = 1;
    r->kind = strdup("judge");
    r->parent_id = strdup("rt-0");
    assert_int_equal(storage_submit(s, r), 0);
    assert_int_equal(storage_flush(s, 0), 0);
    storage_close(s);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests WHERE request_id='rt-1'"
                                        " AND key_id='team-a' AND requested_model='triage'"
                                        " AND route_reason='threshold' AND score=0.75"
                                        " AND threshold=0.5 AND model_version='m-3'"
                                        " AND prompt_hash='abc123' AND prompt IS NULL"
                                        " AND status=504 AND error_kind='upstream_timeout'"
                                        " AND ttfb_ms=12.5 AND tokens_in=10 AND tokens_out=20"
                                        " AND finish_reason='stop' AND stream=1"
                                        " AND cost_usd=0.001 AND finished_ms=1700000000100"
                                        " AND kind='judge' AND parent_id='rt-0'"),
                     1);
    assert_int_equal((uint64_t)query_int(f->path, "SELECT features_digest FROM requests"),
                     UINT64_C(0xfedcba9876543210));
    /* NaN and -1 are stored as NULL. */
    s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    r = storage_record_new();
    r->request_id = strdup("rt-2");
    assert_int_equal(storage_submit(s, r), 0);
    storage_close(s);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests WHERE request_id='rt-2'"
                                        " AND score IS NULL AND threshold IS NULL"
                                        " AND ttfb_ms IS NULL AND tokens_in IS NULL"
                                        " AND tokens_out IS NULL AND backend IS NULL"
                                        " AND kind IS NULL AND parent_id IS NULL"),
                     1);
}

struct producer {
    struct storage *s;
    int id;
    int n;
    int refused;
};

static void *
produce(void *arg)
{
    struct producer *p = arg;
    char id[64];

    for (int i = 0; i < p->n; i++) {
        snprintf(id, sizeof(id), "t%d-%d", p->id, i);
        if (storage_submit(p->s, make_record(id, 1700000000000 + i)) != 0)
            p->refused++;
    }
    return NULL;
}

static void
test_concurrent_writes(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct storage_options opt = {
        .queue_size = 1 << 16, .batch_size = 256, .flush_interval_ms = 20};
    enum { THREADS = 4, PER = 5000 };
    pthread_t th[THREADS];
    struct producer p[THREADS];

    struct storage *s = storage_open(f->path, &opt, err, sizeof(err));
    assert_non_null(s);
    for (int i = 0; i < THREADS; i++) {
        p[i] = (struct producer){.s = s, .id = i, .n = PER};
        assert_int_equal(pthread_create(&th[i], NULL, produce, &p[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(p[i].refused, 0);
    }
    assert_int_equal(storage_flush(s, 0), 0);
    struct storage_counters c;
    storage_get_counters(s, &c);
    assert_int_equal(c.queued, THREADS * PER);
    assert_int_equal(c.written, THREADS * PER);
    assert_int_equal(c.dropped, 0);
    assert_int_equal(c.failed, 0);
    assert_int_equal(c.depth, 0);
    assert_int_equal(c.degraded, 0);
    /* Rows are visible to another connection while the writer is open. */
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests"), THREADS * PER);
    storage_close(s);
    assert_int_equal(query_int(f->path, "SELECT count(DISTINCT request_id) FROM requests"),
                     THREADS * PER);
}

static void
test_close_drains(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    /* A long flush interval: without the drain nothing would be written yet. */
    struct storage_options opt = {
        .queue_size = 10000, .batch_size = 10000, .flush_interval_ms = 60000};
    char id[32];

    struct storage *s = storage_open(f->path, &opt, err, sizeof(err));
    assert_non_null(s);
    for (int i = 0; i < 3000; i++) {
        snprintf(id, sizeof(id), "d-%d", i);
        assert_int_equal(storage_submit(s, make_record(id, 1700000000000)), 0);
    }
    storage_close(s);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests"), 3000);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests WHERE request_id='d-2999'"),
                     1);
}

/* The loss policy when the disk is slower than traffic, asserted on what it
 * guarantees whatever the scheduler does. Another connection holds the write lock,
 * so the writer can take a batch but not commit it (or, after its retries, count it
 * failed and take the next): a submission that finds room is accepted, one that finds
 * the queue full is refused and counted, and no accepted record is lost for a newer
 * one. No assertion depends on how far the writer got. */
static void
test_queue_full_drops_newest(void **state)
{
    enum { QUEUE = 100, REFUSALS = 5, MAX_SUBMITS = 100000 };
    struct fixture *f = *state;
    char err[256] = "";
    struct storage_options opt = {
        .queue_size = QUEUE, .batch_size = 10, .flush_interval_ms = 60000};
    char id[32];
    sqlite3 *blocker = NULL;
    uint64_t accepted = 0, refused = 0;
    char *was_refused = calloc(MAX_SUBMITS, 1);
    int submits = 0;

    assert_non_null(was_refused);
    struct storage *s = storage_open(f->path, &opt, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(sqlite3_open(f->path, &blocker), SQLITE_OK);
    assert_int_equal(sqlite3_exec(blocker, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    /* Submit until the queue has refused a few. The writer frees at most one batch per
     * lock wait (seconds), so this ends after about QUEUE submissions. */
    while (refused < REFUSALS && submits < MAX_SUBMITS) {
        struct storage_counters before;
        storage_get_counters(s, &before);
        snprintf(id, sizeof(id), "q-%d", submits);
        int rc = storage_submit(s, make_record(id, 1700000000000));
        assert_true(rc == 0 || rc == -EAGAIN);
        /* Besides us only the writer changes the depth, and it only lowers it: a queue
         * with room before the call must accept. */
        if (before.depth < QUEUE)
            assert_int_equal(rc, 0);
        if (submits < QUEUE) /* an empty queue of QUEUE takes the first QUEUE */
            assert_int_equal(rc, 0);
        if (rc == 0) {
            accepted++;
        } else {
            refused++;
            was_refused[submits] = 1;
        }
        submits++;
    }
    assert_int_equal(refused, REFUSALS);

    struct storage_counters c;
    storage_get_counters(s, &c);
    assert_int_equal(c.queued, accepted);
    assert_int_equal(c.dropped, refused);
    sqlite3_exec(blocker, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(blocker);
    assert_int_equal(storage_flush(s, 0), 0);
    storage_get_counters(s, &c);
    /* Every accepted record is committed or, if the writer gave up on the lock before
     * the blocker let go, counted failed: none is unaccounted for. */
    assert_int_equal(c.written + c.failed, accepted);
    storage_close(s);

    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests"), c.written);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT request_id FROM requests", -1, &st, NULL),
                     SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        int n = atoi((const char *)sqlite3_column_text(st, 0) + 2);
        assert_true(n >= 0 && n < submits);
        assert_false(was_refused[n]); /* a refused record never reaches the log */
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(was_refused);
}

/* A read-only log: the rows are not at fault, so they wait in the queue (the writer
 * retrying with its backoff) instead of being counted lost; a stop gives up on them. */
static void
test_read_only_uri_counts_failures(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    char uri[200];
    struct storage_options opt = {.flush_interval_ms = 10};

    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(storage_submit(s, make_record("before", 1700000000000)), 0);
    storage_close(s);

    snprintf(uri, sizeof(uri), "file:%s?mode=ro", f->path);
    s = storage_open(uri, &opt, err, sizeof(err));
    assert_non_null(s);
    struct storage_counters c;
    storage_get_counters(s, &c);
    assert_int_equal(c.last_error_ms, 0); /* nothing has failed yet */
    assert_string_equal(c.last_error, "");
    int64_t t0 = mono_ms();
    for (int i = 0; i < 5; i++)
        assert_int_equal(storage_submit(s, make_record("ro", 1700000000000)), 0);
    assert_int_equal(storage_flush(s, 1000), -ETIMEDOUT);
    int64_t t1 = mono_ms();
    storage_get_counters(s, &c);
    assert_int_equal(c.failed, 0);
    assert_int_equal(c.depth, 5);
    assert_int_equal(c.written, 0);
    assert_int_equal(c.degraded, 1);
    assert_true(c.write_errors >= 1);
    /* SQLite's own words and code (SQLITE_READONLY = 8), on the monotonic clock. */
    assert_non_null(strstr(c.last_error, "attempt to write a readonly database"));
    assert_non_null(strstr(c.last_error, "(sqlite error 8)"));
    assert_true(c.last_error_ms >= t0 && c.last_error_ms <= t1);
    storage_close(s);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests"), 1);
}

static void
test_read_only_file_counts_failures(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";

    if (geteuid() == 0)
        skip(); /* root writes through file modes; the URI and disk-full tests cover it */
    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    storage_close(s);
    assert_int_equal(chmod(f->path, 0444), 0);
    s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(storage_submit(s, make_record("ro", 1700000000000)), 0);
    assert_int_equal(storage_flush(s, 1000), -ETIMEDOUT);
    struct storage_counters c;
    storage_get_counters(s, &c);
    assert_int_equal(c.failed, 0);
    assert_int_equal(c.depth, 1);
    assert_int_equal(c.degraded, 1);
    storage_close(s);
    chmod(f->path, 0644);
}

/* Disk full, simulated with RLIMIT_FSIZE in a child (works as root too): writes fail,
 * are counted, the rows wait in the queue, and every one is written when space comes
 * back. */
static void
test_disk_full_counts_and_recovers(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";

    struct storage *s0 = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s0);
    storage_close(s0);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct storage_options opt = {.flush_interval_ms = 10};
        struct rlimit rl;
        char id[32];

        signal(SIGXFSZ, SIG_IGN);
        struct storage *s = storage_open(f->path, &opt, err, sizeof(err));
        if (!s)
            _exit(10);
        getrlimit(RLIMIT_FSIZE, &rl);
        struct rlimit tiny = {.rlim_cur = 4096, .rlim_max = rl.rlim_max};
        setrlimit(RLIMIT_FSIZE, &tiny);
        for (int i = 0; i < 200; i++) {
            struct storage_record *r = make_record("full", 1700000000000);
            r->prompt = calloc(1, 2000);
            memset(r->prompt, 'x', 1999);
            storage_submit(s, r);
        }
        if (storage_flush(s, 1500) != -ETIMEDOUT)
            _exit(15);
        struct storage_counters c;
        storage_get_counters(s, &c);
        if (c.failed != 0 || !c.degraded || c.depth + c.written != 200 || c.depth == 0)
            _exit(11);
        /* The file size limit makes write(2) fail with EFBIG: SQLite reports an I/O
         * error (or a full disk after a short write, depending on its version). */
        char failed_with[STORAGE_ERROR_MAX];
        int64_t failed_at = c.last_error_ms;
        snprintf(failed_with, sizeof(failed_with), "%s", c.last_error);
        if ((!strstr(failed_with, "disk I/O error") &&
             !strstr(failed_with, "database or disk is full")) ||
            failed_at <= 0 || failed_at > mono_ms())
            _exit(13);
        setrlimit(RLIMIT_FSIZE, &rl);
        for (int i = 0; i < 10; i++) {
            snprintf(id, sizeof(id), "after-%d", i);
            storage_submit(s, make_record(id, 1700000000000));
        }
        storage_flush(s, 0);
        storage_get_counters(s, &c);
        if (c.degraded || c.written != 210 || c.failed != 0)
            _exit(12);
        /* Recovered, but the last failure is still there to report. */
        if (strcmp(c.last_error, failed_with) || c.last_error_ms != failed_at)
            _exit(14);
        storage_close(s);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests WHERE request_id LIKE"
                                        " 'after-%'"),
                     10);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests WHERE request_id ="
                                        " 'full'"),
                     200);
}

/* kill -9 mid-traffic: every row committed before the kill is there and the
 * database is intact. */
static void
test_kill9_keeps_committed(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    int pfd[2];

    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct storage_options opt = {.flush_interval_ms = 5, .batch_size = 64};
        char id[32];
        close(pfd[0]);
        struct storage *s = storage_open(f->path, &opt, err, sizeof(err));
        if (!s)
            _exit(10);
        for (int i = 0; i < 1000; i++) {
            snprintf(id, sizeof(id), "k-%d", i);
            storage_submit(s, make_record(id, 1700000000000));
        }
        storage_flush(s, 0);
        if (write(pfd[1], "x", 1) != 1)
            _exit(11);
        for (long i = 1000;; i++) { /* keep the writer busy until killed */
            snprintf(id, sizeof(id), "k-%ld", i);
            if (storage_submit(s, make_record(id, 1700000000000)) != 0)
                usleep(100);
        }
    }
    close(pfd[1]);
    char c;
    assert_int_equal(read(pfd[0], &c, 1), 1);
    close(pfd[0]);
    usleep(50000);
    kill(pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));

    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    storage_close(s);
    assert_true(query_int(f->path, "SELECT count(*) FROM requests") >= 1000);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests WHERE"
                                        " CAST(substr(request_id, 3) AS INTEGER) < 1000"),
                     1000);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* ---- outcomes ---- */

static void
test_outcome_submit(void **state)
{
    struct fixture *f = *state;
    char err[256] = "", longid[300];
    struct storage_options opt = {.flush_interval_ms = 60000}; /* only flushes write */

    struct storage *s = storage_open(f->path, &opt, err, sizeof(err));
    assert_non_null(s);
    memset(longid, 'x', 257);
    longid[257] = '\0';
    /* Invalid: nothing queued, nothing counted. */
    assert_int_equal(storage_outcome_submit(NULL, "r", "fast", "judge", 0.5, NULL), -EINVAL);
    assert_int_equal(storage_outcome_submit(s, NULL, "fast", "judge", 0.5, NULL), -EINVAL);
    assert_int_equal(storage_outcome_submit(s, "", "fast", "judge", 0.5, NULL), -EINVAL);
    assert_int_equal(storage_outcome_submit(s, longid, "fast", "judge", 0.5, NULL), -EINVAL);
    assert_int_equal(storage_outcome_submit(s, "r", NULL, "judge", 0.5, NULL), -EINVAL);
    assert_int_equal(storage_outcome_submit(s, "r", "", "judge", 0.5, NULL), -EINVAL);
    assert_int_equal(storage_outcome_submit(s, "r", longid, "judge", 0.5, NULL), -EINVAL);
    assert_int_equal(storage_outcome_submit(s, "r", "fast", NULL, 0.5, NULL), -EINVAL);
    assert_int_equal(storage_outcome_submit(s, "r", "fast", "client", 0.5, NULL), -EINVAL);
    assert_int_equal(storage_outcome_submit(s, "r", "fast", "Judge", 0.5, NULL), -EINVAL);
    assert_int_equal(storage_outcome_submit(s, "r", "fast", "judge", NAN, NULL), -EINVAL);
    assert_int_equal(storage_outcome_submit(s, "r", "fast", "judge", INFINITY, NULL), -EINVAL);
    assert_int_equal(storage_outcome_submit(s, "r", "fast", "judge", -0.01, NULL), -EINVAL);
    assert_int_equal(storage_outcome_submit(s, "r", "fast", "judge", 1.01, NULL), -EINVAL);
    struct storage_counters c;
    storage_get_counters(s, &c);
    assert_int_equal(c.outcomes_queued, 0);
    assert_int_equal(c.outcomes_dropped, 0);

    /* Valid, the bounds included; no request row is needed (it may still be queued).
     * The detail is copied: the caller's buffer is gone before the write. */
    char *detail = strdup("j-1 rating=9");
    assert_int_equal(storage_outcome_submit(s, "r1", "fast", "judge", 0.0, detail), 0);
    free(detail);
    assert_int_equal(storage_outcome_submit(s, "r1", "strong", "judge", 1.0, NULL), 0);
    assert_int_equal(storage_outcome_submit(s, "r1", "fast", "offline", 0.5, NULL), 0);
    assert_int_equal(storage_outcome_submit(s, "r1", "fast", "feedback", 0.25, NULL), 0);
    /* A repeat of (r1, fast, judge) in the same batch: the later one wins. */
    assert_int_equal(storage_outcome_submit(s, "r1", "fast", "judge", 0.75, "j-1 rating=7"), 0);
    storage_get_counters(s, &c);
    assert_int_equal(c.outcomes_queued, 5);
    assert_int_equal(c.outcomes_depth, 5);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM outcomes"), 0);
    assert_int_equal(storage_flush(s, 0), 0);
    storage_get_counters(s, &c);
    assert_int_equal(c.outcomes_written, 5);
    assert_int_equal(c.outcomes_depth, 0);
    assert_int_equal(c.outcomes_failed, 0);
    assert_int_equal(c.queued, 0); /* the records' counters are apart */
    assert_int_equal(c.written, 0);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM outcomes"), 4);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM outcomes WHERE request_id='r1'"
                                        " AND backend='fast' AND source='judge' AND q=0.75"
                                        " AND detail='j-1 rating=7'"),
                     1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM outcomes WHERE backend='strong'"
                                        " AND q=1.0 AND detail IS NULL"),
                     1);
    /* A repeat in a later batch overwrites too, and its time is the latest. */
    int64_t first = query_int(f->path, "SELECT created_ms FROM outcomes WHERE backend='strong'");
    usleep(2000);
    assert_int_equal(storage_outcome_submit(s, "r1", "strong", "judge", 0.5, "again"), 0);
    assert_int_equal(storage_flush(s, 0), 0);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM outcomes"), 4);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM outcomes WHERE backend='strong'"
                                        " AND q=0.5 AND detail='again'"),
                     1);
    assert_true(query_int(f->path, "SELECT created_ms FROM outcomes WHERE backend='strong'") >
                first);

    /* A long detail is cut to STORAGE_DETAIL_MAX bytes, not inside a UTF-8 character:
     * "ab" then 3-byte characters (4096 = 2 + 3 * 1364 + 2) put the cut 2 bytes short. */
    assert_int_equal(STORAGE_DETAIL_MAX, 4096);
    size_t n = STORAGE_DETAIL_MAX + 100;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memcpy(big, "ab", 2);
    for (size_t i = 2; i + 3 <= n; i += 3)
        memcpy(big + i, "\xe2\x82\xac", 3); /* the euro sign */
    big[2 + (n - 2) / 3 * 3] = '\0';
    assert_int_equal(storage_outcome_submit(s, "r2", "fast", "judge", 0.5, big), 0);
    free(big);
    storage_close(s); /* drains */
    int64_t len = query_int(f->path, "SELECT length(CAST(detail AS BLOB)) FROM outcomes"
                                     " WHERE request_id='r2'");
    assert_int_equal(len, 4094);
    assert_int_equal(query_int(f->path, "SELECT length(detail) FROM outcomes"
                                        " WHERE request_id='r2'"),
                     2 + 1364); /* characters: valid UTF-8 to the end */
}

/* storage_close writes queued outcomes like queued records, in the same transactions. */
static void
test_outcome_close_drains(void **state)
{
    struct fixture *f = *state;
    char err[256] = "", id[32];
    struct storage_options opt = {
        .queue_size = 5000, .batch_size = 5000, .flush_interval_ms = 60000};

    struct storage *s = storage_open(f->path, &opt, err, sizeof(err));
    assert_non_null(s);
    for (int i = 0; i < 1200; i++) {
        snprintf(id, sizeof(id), "o-%d", i);
        assert_int_equal(storage_outcome_submit(s, id, "fast", "judge", 0.5, NULL), 0);
        if (i % 2 == 0)
            assert_int_equal(storage_submit(s, make_record(id, 1700000000000)), 0);
    }
    storage_close(s);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM outcomes"), 1200);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests"), 600);
}

/* The outcome queue's loss policy is the records': a full queue refuses the newest and
 * counts it, accepted ones are all written or counted failed; the records' queue is
 * not affected. Asserted on guarantees, not on how far the writer got (see
 * test_queue_full_drops_newest). */
static void
test_outcome_queue_full(void **state)
{
    enum { QUEUE = 50, REFUSALS = 3, MAX_SUBMITS = 100000 };
    struct fixture *f = *state;
    char err[256] = "", id[32];
    struct storage_options opt = {
        .queue_size = QUEUE, .batch_size = 10, .flush_interval_ms = 60000};
    sqlite3 *blocker = NULL;
    uint64_t accepted = 0, refused = 0;
    int submits = 0;

    struct storage *s = storage_open(f->path, &opt, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(sqlite3_open(f->path, &blocker), SQLITE_OK);
    assert_int_equal(sqlite3_exec(blocker, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    while (refused < REFUSALS && submits < MAX_SUBMITS) {
        struct storage_counters before;
        storage_get_counters(s, &before);
        snprintf(id, sizeof(id), "q-%d", submits);
        int rc = storage_outcome_submit(s, id, "fast", "judge", 1.0, NULL);
        assert_true(rc == 0 || rc == -EAGAIN);
        if (before.outcomes_depth < QUEUE || submits < QUEUE)
            assert_int_equal(rc, 0);
        if (rc == 0)
            accepted++;
        else
            refused++;
        submits++;
    }
    assert_int_equal(refused, REFUSALS);
    /* A full outcome queue leaves room for records. */
    assert_int_equal(storage_submit(s, make_record("rec", 1700000000000)), 0);
    struct storage_counters c;
    storage_get_counters(s, &c);
    assert_int_equal(c.outcomes_queued, accepted);
    assert_int_equal(c.outcomes_dropped, refused);
    assert_int_equal(c.dropped, 0);
    sqlite3_exec(blocker, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(blocker);
    assert_int_equal(storage_flush(s, 0), 0);
    storage_get_counters(s, &c);
    assert_int_equal(c.outcomes_written + c.outcomes_failed, accepted);
    assert_int_equal(c.written + c.failed, 1);
    storage_close(s);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM outcomes"), c.outcomes_written);
}

/* Schema version 5 (migrations 0..4 as released), with a prompt-bearing row. */
static const char v5_sql[] =
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
    "CREATE TABLE models (version TEXT PRIMARY KEY, path TEXT NOT NULL,"
    " parent TEXT NOT NULL DEFAULT '', source TEXT NOT NULL, created_ms INTEGER NOT NULL,"
    " promoted_ms INTEGER NOT NULL DEFAULT 0, train_examples INTEGER, holdout_n INTEGER,"
    " apgr REAL, parent_apgr REAL, status TEXT NOT NULL);"
    "CREATE UNIQUE INDEX models_champion ON models(status) WHERE status = 'champion';"
    "CREATE INDEX models_created ON models(created_ms);"
    "INSERT INTO requests (request_id, started_ms, backend, status, prompt_hash, prompt)"
    " VALUES ('old-5', 1700000000000, 'fast', 200, 'h5', '[{\"role\":\"user\",\"content\":\"x\"}]');"
    "PRAGMA user_version = 5;";

/* A version 5 log gains the features column in place: old rows read NULL there, and a
 * record with a feature vector is written byte for byte next to them. */
static void
test_migrate_from_v5(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    const unsigned char blob[] = {'T', 'F', 1, 12, 0, 0xff, 0, 7};

    exec_sql(f->path, v5_sql);
    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    if (!s)
        fail_msg("storage_open: %s", err);
    struct storage_record *r = make_record("new-6", 1700000000500);
    r->prompt_hash = strdup("h6");
    r->features = malloc(sizeof(blob));
    memcpy(r->features, blob, sizeof(blob));
    r->features_len = sizeof(blob);
    assert_int_equal(storage_submit(s, r), 0);
    storage_close(s);

    assert_int_equal(query_int(f->path, "PRAGMA user_version"), STORAGE_SCHEMA_VERSION);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests WHERE request_id='old-5'"
                                        " AND features IS NULL AND prompt IS NOT NULL"),
                     1);
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM requests WHERE request_id='new-6'"
                                        " AND prompt IS NULL AND prompt_hash='h6'"
                                        " AND features = x'5446010c00ff0007'"),
                     1);
    /* the stats index did not change */
    assert_int_equal(query_int(f->path, "SELECT count(*) FROM pragma_index_info('requests_window')"
                                        " WHERE name = 'features'"),
                     0);
}


/* Budgets: a key's spend since a time, client rows only, read through requests_key_spend
 * (schema 9) rather than a walk of the window index over every key's rows. */
static void
test_key_spend_index(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    struct storage *s = storage_open(f->path, NULL, err, sizeof(err));
    assert_non_null(s);
    const char *keys[] = {"alice", "alice", "alice", "bob", "alice"};
    const char *kinds[] = {NULL, "shadow", NULL, NULL, "judge"};
    const int64_t t[] = {1000, 2000, 3000, 3000, 4000};
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof(id), "k%d", i);
        struct storage_record *r = make_record(id, t[i]);
        r->key_id = strdup(keys[i]);
        r->kind = kinds[i] ? strdup(kinds[i]) : NULL;
        r->cost_usd = 0.25 * (i + 1);
        assert_int_equal(storage_submit(s, r), 0);
    }
    struct storage_record *nokey = make_record("nokey", 3000);
    assert_int_equal(storage_submit(s, nokey), 0);
    assert_int_equal(storage_flush(s, 10000), 0);

    const char *names[] = {"alice", "alice", "bob", "carol"};
    const int64_t since[] = {0, 2500, 0, 0};
    double usd[4] = {-1, -1, -1, -1};
    assert_int_equal(storage_key_spend(f->path, names, since, 4, usd, err, sizeof(err)), 0);
    assert_true(fabs(usd[0] - (0.25 + 0.75)) < 1e-12); /* not the shadow nor the judge row */
    assert_true(fabs(usd[1] - 0.75) < 1e-12);
    assert_true(fabs(usd[2] - 1.0) < 1e-12);
    assert_true(usd[3] == 0.0);

    /* The plan: the partial covering index, no table access. */
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "EXPLAIN QUERY PLAN SELECT coalesce(sum(cost_usd), 0)"
                                        " FROM requests WHERE key_id = ? AND started_ms >= ?"
                                        " AND (kind IS NULL OR kind NOT IN ('shadow', 'judge'))",
                                        -1, &st, NULL),
                     SQLITE_OK);
    int found = 0;
    while (sqlite3_step(st) == SQLITE_ROW)
        found |= strstr((const char *)sqlite3_column_text(st, 3),
                        "COVERING INDEX requests_key_spend") != NULL;
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_true(found);
    storage_close(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_from_v1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_from_v3, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_from_v5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_newer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fields_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_drains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_full_drops_newest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_uri_counts_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_file_counts_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disk_full_counts_and_recovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_keeps_committed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outcome_submit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outcome_close_drains, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outcome_queue_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_spend_index, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
