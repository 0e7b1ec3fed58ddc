/* db_sqlite.c - the SQLite engine: one file (WAL), its migrations and prepared inserts. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "storage-int.h"

struct lite_db {
    struct storage__db base;
    sqlite3 *h;
    sqlite3_stmt *insert; /* the records' INSERT, prepared on first use */
    char err[STORAGE_ERROR_MAX];
    int away;      /* an error said the file is unusable now (full, locked, read-only, ...) */
    int have_id;   /* dev and ino are the opened file's */
    dev_t dev;
    ino_t ino;
};

struct lite_stmt {
    struct storage__stmt base;
    sqlite3_stmt *st;
    struct lite_db *db;
};

#define DB(d) ((struct lite_db *)(d))
#define ST(s) (((struct lite_stmt *)(s))->st)

/* ---- schema ---- */

/* migrations[i] takes a database from user_version i to i + 1. Append only: a
 * shipped migration is never edited. db_pg.c keeps the same list in its types. */
static const char *const migrations[] = {
    /* 0 -> 1: the request log */
    "CREATE TABLE requests ("
    " id INTEGER PRIMARY KEY,"
    " request_id TEXT NOT NULL,"
    " started_ms INTEGER NOT NULL,"
    " finished_ms INTEGER,"
    " key_id TEXT,"
    " requested_model TEXT,"
    " backend TEXT,"
    " route_reason TEXT,"
    " score REAL,"
    " threshold REAL,"
    " model_version TEXT,"
    " features_digest INTEGER,"
    " prompt_hash TEXT,"
    " status INTEGER,"
    " error_kind TEXT,"
    " latency_ms REAL,"
    " ttfb_ms REAL,"
    " tokens_in INTEGER,"
    " tokens_out INTEGER,"
    " finish_reason TEXT,"
    " cost_usd REAL,"
    " stream INTEGER,"
    " prompt TEXT);" /* last: scans of the other columns never touch its overflow pages */
    "CREATE INDEX requests_started ON requests(started_ms);",

    /* 1 -> 2: feedback (no foreign key: it may arrive before the row is written)
     * and lookups by request id */
    "CREATE TABLE feedback ("
    " request_id TEXT NOT NULL,"
    " source TEXT NOT NULL,"
    " score REAL NOT NULL,"
    " label TEXT,"
    " created_ms INTEGER NOT NULL,"
    " PRIMARY KEY (request_id, source));"
    "CREATE INDEX feedback_created ON feedback(created_ms);"
    "CREATE INDEX requests_request_id ON requests(request_id);",

    /* 2 -> 3: stats scan a window of the index alone instead of looking every row up
     * in the table (measured 0.96 s -> 0.05 s for 500k rows); it also serves
     * retention and time filters, so the plain time index goes. */
    "CREATE INDEX requests_window ON requests(started_ms, backend, status, error_kind,"
    " latency_ms, ttfb_ms, tokens_in, tokens_out, cost_usd, score);"
    "DROP INDEX requests_started;",

    /* 3 -> 4: learning. Shadow and judge calls are rows of their own, marked by kind
     * (NULL = a client request) and tied to the client request by parent_id. Columns
     * added with ALTER TABLE land after prompt, so the window index gains kind (stats
     * read it there) and is rebuilt: ~6 s per million rows, once. Outcomes
     * label one backend's answer to a client request's prompt, per source; no foreign
     * key, like feedback. */
    "ALTER TABLE requests ADD COLUMN kind TEXT;"
    "ALTER TABLE requests ADD COLUMN parent_id TEXT;"
    "DROP INDEX requests_window;"
    "CREATE INDEX requests_window ON requests(started_ms, backend, status, error_kind,"
    " latency_ms, ttfb_ms, tokens_in, tokens_out, cost_usd, score, kind);"
    "CREATE TABLE outcomes ("
    " request_id TEXT NOT NULL,"
    " backend TEXT NOT NULL,"
    " source TEXT NOT NULL,"
    " q REAL NOT NULL,"
    " detail TEXT,"
    " created_ms INTEGER NOT NULL,"
    " PRIMARY KEY (request_id, backend, source));"
    "CREATE INDEX outcomes_created ON outcomes(created_ms);",

    /* 4 -> 5: the model registry (registry.c): every predictor version with its metrics
     * and lineage. The partial unique index allows one champion at most. Unknown counts
     * and APGRs are NULL. */
    "CREATE TABLE models ("
    " version TEXT PRIMARY KEY,"
    " path TEXT NOT NULL,"
    " parent TEXT NOT NULL DEFAULT '',"
    " source TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " promoted_ms INTEGER NOT NULL DEFAULT 0,"
    " train_examples INTEGER,"
    " holdout_n INTEGER,"
    " apgr REAL,"
    " parent_apgr REAL,"
    " status TEXT NOT NULL);"
    "CREATE UNIQUE INDEX models_champion ON models(status) WHERE status = 'champion';"
    "CREATE INDEX models_created ON models(created_ms);",

    /* 5 -> 6: store_prompts = features keeps the request's hashed feature vector
     * (features_blob_encode) instead of its text, to retrain from without user text.
     * ALTER TABLE adds it after the other columns, out of the stats index. */
    "ALTER TABLE requests ADD COLUMN features BLOB;",

    /* 6 -> 7: honest backend errors and per-key figures. failed_attempts lists the
     * attempts a request retried or fell back from ("backend kind,backend kind"), so a
     * dead backend that a fallback hides still shows its errors; the window index is
     * rebuilt with it, key_id and route_reason so stats read them from the index alone
     * (a rebuild of ~6 s per million rows, once). */
    "ALTER TABLE requests ADD COLUMN failed_attempts TEXT;"
    "DROP INDEX requests_window;"
    "CREATE INDEX requests_window ON requests(started_ms, backend, status, error_kind,"
    " latency_ms, ttfb_ms, tokens_in, tokens_out, cost_usd, score, kind, key_id,"
    " route_reason, failed_attempts);",

    /* 7 -> 8: the cascade's fast answer, as the escalation model reads it (its signals
     * and hashed words, features_answer_blob_encode), and the escalation score it got,
     * on the row of the call that wrote it: judged or given feedback, it trains the
     * escalation model; the scores show where escalate_at cuts. Outside the index. */
    "ALTER TABLE requests ADD COLUMN answer BLOB;"
    "ALTER TABLE requests ADD COLUMN escalation REAL;",

    /* 8 -> 9: budgets. storage_key_spend() sums a key's cost since the start of its day
     * or month: without this it walked requests_window over every key's rows of the
     * period. Partial: rows without a key (auth off) are not indexed; covering, so the
     * sum reads the index alone. */
    "CREATE INDEX requests_key_spend ON requests(key_id, started_ms, kind, cost_usd)"
    " WHERE key_id IS NOT NULL;",

    /* 9 -> 10: nothing here. PostgreSQL makes request_id unique so that a batch written
     * again after a COMMIT whose answer was lost adds no rows; SQLite's commit is never
     * in doubt (the writer is in this process), so its index stays as it is. */
    "SELECT 1;",

    /* 10 -> 11: a model has two parts, judged apart when a retrain decides (retrain.c):
     * the escalation model's held-out AUC and the champion's on the same judged fast
     * answers, and which versions a file's parts come from when a promotion combined the
     * challenger's better part with the champion's ('' = its own). */
    "ALTER TABLE models ADD COLUMN esc_holdout_n INTEGER;"
    "ALTER TABLE models ADD COLUMN esc_auc REAL;"
    "ALTER TABLE models ADD COLUMN parent_esc_auc REAL;"
    "ALTER TABLE models ADD COLUMN routing_from TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE models ADD COLUMN escalation_from TEXT NOT NULL DEFAULT '';",
};
_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == STORAGE_SCHEMA_VERSION,
               "one SQLite migration per schema version");

static const char insert_sql[] =
    "INSERT INTO requests (request_id, started_ms, finished_ms, key_id, requested_model,"
    " backend, route_reason, score, threshold, model_version, features_digest, prompt_hash,"
    " status, error_kind, latency_ms, ttfb_ms, tokens_in, tokens_out, finish_reason, cost_usd,"
    " stream, prompt, kind, parent_id, features, failed_attempts, answer, escalation)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

/* Whether a result code says the file cannot be written now rather than that the
 * statement is wrong: the same batch may succeed once the disk has room, the lock is
 * released, the file system is writable again or the file is back. */
static int
unavailable(int code)
{
    switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_READONLY:
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
    case SQLITE_NOTADB:
        return 1;
    default:
        return 0;
    }
}

/* Keeps db's latest error: SQLite's text and the extended result code. */
static void
note_error(struct lite_db *d)
{
    int code = sqlite3_extended_errcode(d->h);

    snprintf(d->err, sizeof(d->err), "%s (sqlite error %d)", sqlite3_errmsg(d->h), code);
    if (unavailable(code))
        d->away = 1;
}

static int
lite_exec(struct storage__db *db, const char *sql)
{
    char *msg = NULL;

    if (sqlite3_exec(DB(db)->h, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int code = sqlite3_extended_errcode(DB(db)->h);
        if (msg)
            snprintf(DB(db)->err, sizeof(DB(db)->err), "%s (sqlite error %d)", msg, code);
        else
            note_error(DB(db));
        if (unavailable(code))
            DB(db)->away = 1;
        sqlite3_free(msg);
        return -EIO;
    }
    return 0;
}

static int
user_version(sqlite3 *h, int *version)
{
    sqlite3_stmt *st = NULL;
    int rc = -EIO;

    if (sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        *version = sqlite3_column_int(st, 0);
        rc = 0;
    }
    sqlite3_finalize(st);
    return rc;
}

static int
check_version(const char *path, int version, char *err, size_t errlen)
{
    if (version > STORAGE_SCHEMA_VERSION) {
        storage__errf(err, errlen,
                      "%s: schema version %d is newer than this triage understands (%d); "
                      "use a newer triage or another database file",
                      path, version, STORAGE_SCHEMA_VERSION);
        return -EPROTO;
    }
    return 0;
}

/* Applies every migration above the database's version, each in its own transaction. */
static int
migrate(struct lite_db *d, const char *path, char *err, size_t errlen)
{
    char sql[64];
    int version;

    if (user_version(d->h, &version) < 0) {
        storage__errf(err, errlen, "%s: reading the schema version: %s", path,
                      sqlite3_errmsg(d->h));
        return -EIO;
    }
    if (check_version(path, version, err, errlen) < 0)
        return -EPROTO;
    while (version < STORAGE_SCHEMA_VERSION) {
        if (lite_exec(&d->base, "BEGIN IMMEDIATE") < 0) {
            storage__errf(err, errlen, "%s: %s", path, d->err);
            return -EIO;
        }
        /* Re-read inside the lock: another process may have migrated meanwhile. */
        if (user_version(d->h, &version) < 0 || check_version(path, version, err, errlen) < 0) {
            sqlite3_exec(d->h, "ROLLBACK", NULL, NULL, NULL);
            return -EIO;
        }
        if (version >= STORAGE_SCHEMA_VERSION) {
            sqlite3_exec(d->h, "ROLLBACK", NULL, NULL, NULL);
            break;
        }
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version + 1);
        if (lite_exec(&d->base, migrations[version]) < 0 || lite_exec(&d->base, sql) < 0 ||
            lite_exec(&d->base, "COMMIT") < 0) {
            sqlite3_exec(d->h, "ROLLBACK", NULL, NULL, NULL);
            storage__errf(err, errlen, "%s: migrating schema %d -> %d: %s", path, version,
                          version + 1, d->err);
            return -EIO;
        }
        version++;
    }
    return 0;
}

static void lite_close(struct storage__db *db);

static struct storage__db *
lite_open(const char *path, enum storage__mode mode, char *err, size_t errlen)
{
    struct lite_db *d = storage__calloc(1, sizeof(*d));
    int version = 0, away;
    /* NOMUTEX: a connection lives on one thread at a time; the per-call mutex cost
     * ~15% of a stats scan. */
    int flags = SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX;

    d->base.e = &storage__sqlite;
    if (mode == STORAGE__READ)
        flags |= SQLITE_OPEN_READONLY;
    else
        flags |= SQLITE_OPEN_READWRITE | (mode == STORAGE__CREATE ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(path, &d->h, flags, NULL) != SQLITE_OK) {
        storage__errf(err, errlen, "%s: %s", path, d->h ? sqlite3_errmsg(d->h) : "cannot open");
        goto fail;
    }
    sqlite3_busy_timeout(d->h, STORAGE__BUSY_TIMEOUT_MS);
    if (user_version(d->h, &version) < 0) {
        storage__errf(err, errlen, "%s: reading the schema version: %s", path,
                      sqlite3_errmsg(d->h));
        goto fail;
    }
    if (check_version(path, version, err, errlen) < 0)
        goto fail;
    if (mode == STORAGE__READ) {
        /* Scans read pages through the map instead of copying them with read(). */
        sqlite3_exec(d->h, "PRAGMA mmap_size=268435456", NULL, NULL, NULL);
        if (version == 0) {
            storage__errf(err, errlen, "%s: not a triage database (no schema)", path);
            goto fail;
        }
        if (version < STORAGE_SCHEMA_VERSION) {
            storage__errf(err, errlen,
                          "%s: schema version %d is older than %d; start triaged on it once "
                          "(it migrates at start)",
                          path, version, STORAGE_SCHEMA_VERSION);
            goto fail;
        }
        return &d->base;
    }
    if (version == 0 && mode == STORAGE__WRITE) {
        storage__errf(err, errlen, "%s: not a triage database (no schema)", path);
        goto fail;
    }
    if (sqlite3_db_readonly(d->h, "main")) {
        /* A read-only file opens read-only: writes then fail and are counted. */
        if (version < STORAGE_SCHEMA_VERSION) {
            storage__errf(err, errlen, "%s: read-only and schema version %d needs migrating",
                          path, version);
            goto fail;
        }
    } else {
        if (lite_exec(&d->base, "PRAGMA journal_mode=WAL") < 0) {
            storage__errf(err, errlen, "%s: enabling WAL: %s", path, d->err);
            goto fail;
        }
        if (migrate(d, path, err, errlen) < 0)
            goto fail;
    }
    sqlite3_exec(d->h, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    /* Which file this is, to notice when it is deleted or replaced (lite_gone). */
    const char *file = sqlite3_db_filename(d->h, "main");
    struct stat sb;
    if (file && *file && stat(file, &sb) == 0) {
        d->have_id = 1;
        d->dev = sb.st_dev;
        d->ino = sb.st_ino;
    }
    return &d->base;
fail:
    /* A file that is there but cannot be used now (locked, not a database, unreadable)
     * is away for the caller (ENOTCONN: the daemon answers 503 and retries later). */
    away = d->h && unavailable(sqlite3_extended_errcode(d->h));
    lite_close(&d->base);
    errno = away ? ENOTCONN : EIO;
    return NULL;
}

static void
lite_close(struct storage__db *db)
{
    sqlite3_finalize(DB(db)->insert);
    sqlite3_close(DB(db)->h);
    free(db);
}

static int
lite_begin(struct storage__db *db, enum storage__tx kind)
{
    /* IMMEDIATE takes the write lock now, so the transaction cannot fail later on a
     * lock upgrade; a snapshot is any read transaction. */
    return lite_exec(db, kind == STORAGE__TX_SNAPSHOT ? "BEGIN" : "BEGIN IMMEDIATE");
}

static const char *
lite_error(struct storage__db *db)
{
    return DB(db)->err;
}

/* Gone: an error said the file is unusable now, or the path no longer names the file
 * this connection has open (deleted, or replaced by a move): writing on would put rows in
 * a file nobody can find. The caller drops the connection and opens the path again. */
static int
lite_gone(struct storage__db *db)
{
    struct lite_db *d = DB(db);
    struct stat sb;

    if (d->away)
        return 1;
    if (!d->have_id)
        return 0;
    const char *file = sqlite3_db_filename(d->h, "main");
    if (stat(file, &sb) < 0 || sb.st_dev != d->dev || sb.st_ino != d->ino) {
        snprintf(d->err, sizeof(d->err), "%s was deleted or replaced", file);
        return 1;
    }
    return 0;
}

static int64_t
lite_changes(struct storage__db *db)
{
    return sqlite3_changes(DB(db)->h);
}

static struct storage__stmt *
lite_prepare(struct storage__db *db, const char *sql)
{
    sqlite3_stmt *st = NULL;

    if (sqlite3_prepare_v2(DB(db)->h, sql, -1, &st, NULL) != SQLITE_OK) {
        note_error(DB(db));
        sqlite3_finalize(st);
        return NULL;
    }
    struct lite_stmt *s = storage__calloc(1, sizeof(*s));
    s->base.e = &storage__sqlite;
    s->st = st;
    s->db = DB(db);
    return &s->base;
}

static int
lite_param_count(struct storage__stmt *st)
{
    return sqlite3_bind_parameter_count(ST(st));
}

static void
lite_bind_null(struct storage__stmt *st, int i)
{
    sqlite3_bind_null(ST(st), i);
}

static void
lite_bind_text(struct storage__stmt *st, int i, const char *s)
{
    sqlite3_bind_text(ST(st), i, s, -1, SQLITE_STATIC);
}

static void
lite_bind_int64(struct storage__stmt *st, int i, int64_t v)
{
    sqlite3_bind_int64(ST(st), i, v);
}

static void
lite_bind_double(struct storage__stmt *st, int i, double v)
{
    sqlite3_bind_double(ST(st), i, v);
}

static void
lite_bind_blob(struct storage__stmt *st, int i, const void *p, size_t len)
{
    if (len <= INT_MAX)
        sqlite3_bind_blob(ST(st), i, p, (int)len, SQLITE_STATIC);
    else
        sqlite3_bind_null(ST(st), i);
}

static int
lite_step(struct storage__stmt *st)
{
    int rc = sqlite3_step(ST(st));

    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    note_error(((struct lite_stmt *)st)->db); /* for storage__db_error */
    return -EIO;
}

static int
lite_column_null(struct storage__stmt *st, int i)
{
    return sqlite3_column_type(ST(st), i) == SQLITE_NULL;
}

static int64_t
lite_column_int64(struct storage__stmt *st, int i)
{
    return sqlite3_column_int64(ST(st), i);
}

static double
lite_column_double(struct storage__stmt *st, int i)
{
    return sqlite3_column_double(ST(st), i);
}

static const char *
lite_column_text(struct storage__stmt *st, int i)
{
    return (const char *)sqlite3_column_text(ST(st), i);
}

static const void *
lite_column_blob(struct storage__stmt *st, int i, size_t *len)
{
    const void *p = sqlite3_column_blob(ST(st), i);
    *len = (size_t)sqlite3_column_bytes(ST(st), i);
    return p;
}

static void
lite_reset(struct storage__stmt *st)
{
    sqlite3_reset(ST(st));
    sqlite3_clear_bindings(ST(st));
}

static void
lite_finalize(struct storage__stmt *st)
{
    sqlite3_finalize(ST(st));
    free(st);
}

static void
bind_real(sqlite3_stmt *st, int i, double v)
{
    if (isfinite(v))
        sqlite3_bind_double(st, i, v);
    else
        sqlite3_bind_null(st, i);
}

static void
bind_count(sqlite3_stmt *st, int i, int64_t v)
{
    if (v >= 0)
        sqlite3_bind_int64(st, i, v);
    else
        sqlite3_bind_null(st, i);
}

static void
bind_str(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* One prepared INSERT per record: SQLite runs them in-process, ~1 µs each. */
static int
lite_insert_records(struct storage__db *db, struct storage_record *const *recs, uint32_t n)
{
    struct lite_db *d = DB(db);

    if (!d->insert &&
        sqlite3_prepare_v3(d->h, insert_sql, -1, SQLITE_PREPARE_PERSISTENT, &d->insert, NULL) !=
            SQLITE_OK) {
        note_error(d);
        return -EIO;
    }
    sqlite3_stmt *st = d->insert;
    for (uint32_t k = 0; k < n; k++) {
        const struct storage_record *r = recs[k];
        bind_str(st, 1, r->request_id ? r->request_id : "");
        sqlite3_bind_int64(st, 2, r->started_ms);
        sqlite3_bind_int64(st, 3, r->finished_ms);
        bind_str(st, 4, r->key_id);
        bind_str(st, 5, r->requested_model);
        bind_str(st, 6, r->backend);
        bind_str(st, 7, r->route_reason);
        bind_real(st, 8, r->score);
        bind_real(st, 9, r->threshold);
        bind_str(st, 10, r->model_version);
        sqlite3_bind_int64(st, 11, (int64_t)r->features_digest); /* the bit pattern */
        bind_str(st, 12, r->prompt_hash);
        sqlite3_bind_int(st, 13, r->status);
        bind_str(st, 14, r->error_kind);
        bind_real(st, 15, r->latency_ms);
        bind_real(st, 16, r->ttfb_ms);
        bind_count(st, 17, r->tokens_in);
        bind_count(st, 18, r->tokens_out);
        bind_str(st, 19, r->finish_reason);
        bind_real(st, 20, r->cost_usd);
        sqlite3_bind_int(st, 21, r->stream);
        bind_str(st, 22, r->prompt);
        bind_str(st, 23, r->kind);
        bind_str(st, 24, r->parent_id);
        if (r->features && r->features_len <= INT_MAX)
            sqlite3_bind_blob(st, 25, r->features, (int)r->features_len, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 25);
        bind_str(st, 26, r->failed_attempts);
        if (r->answer && r->answer_len <= INT_MAX)
            sqlite3_bind_blob(st, 27, r->answer, (int)r->answer_len, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 27);
        bind_real(st, 28, r->escalation);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
            note_error(d);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (rc != SQLITE_DONE)
            return -EIO;
    }
    return 0;
}

static int
lite_delete_before(struct storage__db *db, const char *table, int64_t cutoff_ms, uint32_t limit)
{
    char sql[256];
    sqlite3_stmt *st = NULL;
    int n = -EIO;

    snprintf(sql, sizeof(sql),
             "DELETE FROM %s WHERE rowid IN (SELECT rowid FROM %s WHERE %s < ? LIMIT ?)", table,
             table, strcmp(table, "requests") ? "created_ms" : "started_ms");
    if (sqlite3_prepare_v2(DB(db)->h, sql, -1, &st, NULL) != SQLITE_OK) {
        note_error(DB(db));
        goto fail;
    }
    sqlite3_bind_int64(st, 1, cutoff_ms);
    sqlite3_bind_int64(st, 2, limit);
    if (sqlite3_step(st) != SQLITE_DONE) {
        note_error(DB(db));
        goto fail;
    }
    n = sqlite3_changes(DB(db)->h);
fail:
    sqlite3_finalize(st);
    return n;
}

const struct storage__engine storage__sqlite = {
    .name = "sqlite",
    .open = lite_open,
    .close = lite_close,
    .exec = lite_exec,
    .begin = lite_begin,
    .error = lite_error,
    .gone = lite_gone,
    .changes = lite_changes,
    .prepare = lite_prepare,
    .param_count = lite_param_count,
    .bind_null = lite_bind_null,
    .bind_text = lite_bind_text,
    .bind_int64 = lite_bind_int64,
    .bind_double = lite_bind_double,
    .bind_blob = lite_bind_blob,
    .step = lite_step,
    .column_null = lite_column_null,
    .column_int64 = lite_column_int64,
    .column_double = lite_column_double,
    .column_text = lite_column_text,
    .column_blob = lite_column_blob,
    .reset = lite_reset,
    .finalize = lite_finalize,
    .insert_records = lite_insert_records,
    .delete_before = lite_delete_before,
};
