/* db_pg.c - the PostgreSQL engine: a libpq connection, the schema in PostgreSQL's
 * types, COPY for the writer's batches. Shared by every replica pointed at one URL. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "storage-int.h"

/* The advisory lock key serialising migrations and registry changes across replicas
 * (the bytes "triage" read as an integer). */
#define PG_LOCK "SELECT pg_advisory_xact_lock(127978584516965)"

/* The most parameters one statement takes (the writer's COPY takes none). */
#define PG_MAX_PARAMS 32

struct pg_db {
    struct storage__db base;
    PGconn *c;
    int staged;      /* triage_batch exists (the writer's connection) */
    int gone;        /* the latest failure was the connection */
    int64_t changes; /* rows changed by the latest command */
    char err[STORAGE_ERROR_MAX];
};

struct pg_stmt {
    struct storage__stmt base;
    struct pg_db *db;
    char *sql;   /* with $n placeholders */
    int nparams; /* highest $n */
    const char *vals[PG_MAX_PARAMS];
    int lens[PG_MAX_PARAMS];
    int fmts[PG_MAX_PARAMS];
    char num[PG_MAX_PARAMS][32]; /* numbers bound, as text */
    int running;                 /* sent; rows come one by one (single-row mode) */
    PGresult *row;               /* the current row */
    unsigned char *blob;         /* the latest column_blob, unescaped */
};

#define DB(d) ((struct pg_db *)(d))
#define ST(s) ((struct pg_stmt *)(s))

/* ---- schema ---- */

/* The same migrations as db_sqlite.c's, version for version, in PostgreSQL's types:
 * bigint for SQLite's INTEGER, double precision for REAL, bytea for BLOB, bigserial
 * for the row id. models gains a bigserial "rowid" (SQLite's implicit one) so the
 * registry's ORDER BY reads the same. Append only, like SQLite's. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE requests ("
    " id BIGSERIAL PRIMARY KEY,"
    " request_id TEXT NOT NULL,"
    " started_ms BIGINT NOT NULL,"
    " finished_ms BIGINT,"
    " key_id TEXT,"
    " requested_model TEXT,"
    " backend TEXT,"
    " route_reason TEXT,"
    " score DOUBLE PRECISION,"
    " threshold DOUBLE PRECISION,"
    " model_version TEXT,"
    " features_digest BIGINT,"
    " prompt_hash TEXT,"
    " status INTEGER,"
    " error_kind TEXT,"
    " latency_ms DOUBLE PRECISION,"
    " ttfb_ms DOUBLE PRECISION,"
    " tokens_in BIGINT,"
    " tokens_out BIGINT,"
    " finish_reason TEXT,"
    " cost_usd DOUBLE PRECISION,"
    " stream INTEGER,"
    " prompt TEXT);"
    "CREATE INDEX requests_started ON requests(started_ms);",

    /* 1 -> 2 */
    "CREATE TABLE feedback ("
    " request_id TEXT NOT NULL,"
    " source TEXT NOT NULL,"
    " score DOUBLE PRECISION NOT NULL,"
    " label TEXT,"
    " created_ms BIGINT NOT NULL,"
    " PRIMARY KEY (request_id, source));"
    "CREATE INDEX feedback_created ON feedback(created_ms);"
    "CREATE INDEX requests_request_id ON requests(request_id);",

    /* 2 -> 3 */
    "CREATE INDEX requests_window ON requests(started_ms, backend, status, error_kind,"
    " latency_ms, ttfb_ms, tokens_in, tokens_out, cost_usd, score);"
    "DROP INDEX requests_started;",

    /* 3 -> 4 */
    "ALTER TABLE requests ADD COLUMN kind TEXT;"
    "ALTER TABLE requests ADD COLUMN parent_id TEXT;"
    "DROP INDEX requests_window;"
    "CREATE INDEX requests_window ON requests(started_ms, backend, status, error_kind,"
    " latency_ms, ttfb_ms, tokens_in, tokens_out, cost_usd, score, kind);"
    "CREATE TABLE outcomes ("
    " request_id TEXT NOT NULL,"
    " backend TEXT NOT NULL,"
    " source TEXT NOT NULL,"
    " q DOUBLE PRECISION NOT NULL,"
    " detail TEXT,"
    " created_ms BIGINT NOT NULL,"
    " PRIMARY KEY (request_id, backend, source));"
    "CREATE INDEX outcomes_created ON outcomes(created_ms);",

    /* 4 -> 5 */
    "CREATE TABLE models ("
    " version TEXT PRIMARY KEY,"
    " path TEXT NOT NULL,"
    " parent TEXT NOT NULL DEFAULT '',"
    " source TEXT NOT NULL,"
    " created_ms BIGINT NOT NULL,"
    " promoted_ms BIGINT NOT NULL DEFAULT 0,"
    " train_examples BIGINT,"
    " holdout_n BIGINT,"
    " apgr DOUBLE PRECISION,"
    " parent_apgr DOUBLE PRECISION,"
    " status TEXT NOT NULL,"
    " rowid BIGSERIAL);"
    "CREATE UNIQUE INDEX models_champion ON models(status) WHERE status = 'champion';"
    "CREATE INDEX models_created ON models(created_ms);",

    /* 5 -> 6 */
    "ALTER TABLE requests ADD COLUMN features BYTEA;",

    /* 6 -> 7 */
    "ALTER TABLE requests ADD COLUMN failed_attempts TEXT;"
    "DROP INDEX requests_window;"
    "CREATE INDEX requests_window ON requests(started_ms, backend, status, error_kind,"
    " latency_ms, ttfb_ms, tokens_in, tokens_out, cost_usd, score, kind, key_id,"
    " route_reason, failed_attempts);",

    /* 7 -> 8 */
    "ALTER TABLE requests ADD COLUMN answer BYTEA;"
    "ALTER TABLE requests ADD COLUMN escalation DOUBLE PRECISION;",

    /* 8 -> 9 */
    "CREATE INDEX requests_key_spend ON requests(key_id, started_ms, kind, cost_usd)"
    " WHERE key_id IS NOT NULL;",

    /* 9 -> 10: one row per request id, so a batch written again after a COMMIT whose
     * answer was lost (the writer cannot tell it from one that failed) adds nothing:
     * the writer inserts ... ON CONFLICT (request_id) DO NOTHING. Copies such a retry
     * made before this version are removed first, the earliest kept. */
    "DELETE FROM requests a USING requests b WHERE a.request_id = b.request_id AND a.id > b.id;"
    "CREATE UNIQUE INDEX requests_request_id_unique ON requests(request_id);"
    "DROP INDEX requests_request_id;",

    /* 10 -> 11 */
    "ALTER TABLE models ADD COLUMN esc_holdout_n BIGINT;"
    "ALTER TABLE models ADD COLUMN esc_auc DOUBLE PRECISION;"
    "ALTER TABLE models ADD COLUMN parent_esc_auc DOUBLE PRECISION;"
    "ALTER TABLE models ADD COLUMN routing_from TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE models ADD COLUMN escalation_from TEXT NOT NULL DEFAULT '';",
};
_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == STORAGE_SCHEMA_VERSION,
               "one PostgreSQL migration per schema version");

/* The writer's batch: COPY into a per-connection temporary table, then one INSERT ...
 * SELECT that skips the ids already there. A batch retried after a COMMIT whose answer
 * was lost (committed or not: the writer cannot tell) thus adds each row once. */
#define RECORD_COLUMNS                                                                           \
    "request_id, started_ms, finished_ms, key_id, requested_model, backend, route_reason,"     \
    " score, threshold, model_version, features_digest, prompt_hash, status, error_kind,"      \
    " latency_ms, ttfb_ms, tokens_in, tokens_out, finish_reason, cost_usd, stream, prompt,"    \
    " kind, parent_id, features, failed_attempts, answer, escalation"
static const char staging_sql[] =
    "CREATE TEMP TABLE IF NOT EXISTS triage_batch ON COMMIT DELETE ROWS AS SELECT "
    RECORD_COLUMNS " FROM requests WITH NO DATA";
static const char copy_sql[] = "COPY triage_batch (" RECORD_COLUMNS ") FROM STDIN";
static const char insert_sql[] = "INSERT INTO requests (" RECORD_COLUMNS ") SELECT "
    RECORD_COLUMNS " FROM triage_batch ON CONFLICT (request_id) DO NOTHING";

/* Keeps the error of res (NULL: the connection's) and whether the connection is gone:
 * closed, or a server-side error of class 08 (connection), 57P (shutdown) or 53300
 * (too many connections). */
static void
note_error(struct pg_db *d, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

    if (!msg)
        msg = PQerrorMessage(d->c);
    int n = snprintf(d->err, sizeof(d->err), "%s (postgresql %s)", msg, state ? state : "-");
    /* libpq's own messages end in a newline */
    for (char *p = strchr(d->err, '\n'); p && n > 0; p = strchr(p, '\n'))
        *p = ' ';
    d->gone = PQstatus(d->c) != CONNECTION_OK ||
              (state && (!strncmp(state, "08", 2) || !strncmp(state, "57P", 3) ||
                         !strcmp(state, "53300")));
}

/* Reads and frees every result left of the current command. */
static void
drain(struct pg_db *d)
{
    PGresult *r;

    while ((r = PQgetResult(d->c)))
        PQclear(r);
}

/* Runs sql without parameters; accepts a command or rows. Returns 0 or -EIO. */
static int
pg_exec(struct storage__db *db, const char *sql)
{
    struct pg_db *d = DB(db);
    PGresult *r = PQexec(d->c, sql);
    int st = PQresultStatus(r), rc = 0;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        note_error(d, r);
        rc = -EIO;
    }
    PQclear(r);
    return rc;
}

/* Reads the schema version into *version (0: no schema yet). Returns 0 or -EIO. */
static int
schema_version(struct pg_db *d, int *version)
{
    PGresult *r = PQexec(d->c, "SELECT version FROM triage_schema");
    int rc = 0;

    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        *version = PQntuples(r) ? atoi(PQgetvalue(r, 0, 0)) : 0;
    else if (PQresultErrorField(r, PG_DIAG_SQLSTATE) &&
             !strcmp(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42P01"))
        *version = 0; /* undefined_table: a database triage never used */
    else {
        note_error(d, r);
        rc = -EIO;
    }
    PQclear(r);
    return rc;
}

/* Applies every migration above the database's version, each in its own transaction
 * under the advisory lock, so replicas starting together migrate once. */
static int
migrate(struct pg_db *d, const char *shown, char *err, size_t errlen)
{
    for (;;) {
        int version = 0;
        char sql[96];

        if (pg_exec(&d->base, "BEGIN") < 0 || pg_exec(&d->base, PG_LOCK) < 0 ||
            pg_exec(&d->base, "CREATE TABLE IF NOT EXISTS triage_schema (version INTEGER NOT NULL)") <
                0 ||
            schema_version(d, &version) < 0)
            goto fail;
        if (version > STORAGE_SCHEMA_VERSION) {
            pg_exec(&d->base, "ROLLBACK");
            storage__errf(err, errlen,
                          "%s: schema version %d is newer than this triage understands (%d); "
                          "use a newer triage or another database",
                          shown, version, STORAGE_SCHEMA_VERSION);
            return -EPROTO;
        }
        if (version == STORAGE_SCHEMA_VERSION)
            return pg_exec(&d->base, "COMMIT") < 0 ? -EIO : 0;
        snprintf(sql, sizeof(sql), "DELETE FROM triage_schema; INSERT INTO triage_schema VALUES (%d)",
                 version + 1);
        if (pg_exec(&d->base, migrations[version]) < 0 || pg_exec(&d->base, sql) < 0 ||
            pg_exec(&d->base, "COMMIT") < 0) {
            char keep[STORAGE_ERROR_MAX];
            snprintf(keep, sizeof(keep), "%s", d->err);
            pg_exec(&d->base, "ROLLBACK");
            storage__errf(err, errlen, "%s: migrating schema %d -> %d: %s", shown, version,
                          version + 1, keep);
            return -EIO;
        }
    }
fail:
    storage__errf(err, errlen, "%s: %s", shown, d->err);
    pg_exec(&d->base, "ROLLBACK");
    return -EIO;
}

static void
quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* NOTICEs ("already exists, skipping") are not ours to print */
}

static void pg_close(struct storage__db *db);
static int pg_gone(struct storage__db *db);

static struct storage__db *
pg_open(const char *url, enum storage__mode mode, char *err, size_t errlen)
{
    /* Defaults first: what the URL says wins (later keywords override earlier ones). */
    const char *keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *vals[] = {"5", "triage", url, NULL};
    struct pg_db *d = storage__calloc(1, sizeof(*d));
    const char *shown = storage__shown(url);
    int version = 0;

    d->base.e = &storage__pg;
    d->c = PQconnectdbParams(keys, vals, 1);
    if (!d->c || PQstatus(d->c) != CONNECTION_OK) {
        note_error(d, NULL);
        storage__errf(err, errlen, "%s: %s", shown, d->c ? d->err : "out of memory");
        /* Away (worth a retry) only when no server answers or it is starting or
         * stopping; one that accepts connections refused ours (a wrong user, password
         * or database), or the URL is malformed: waiting fixes neither. */
        PGPing ping = PQpingParams(keys, vals, 1);
        if (ping == PQPING_OK || ping == PQPING_NO_ATTEMPT) {
            pg_close(&d->base);
            errno = EIO;
            return NULL;
        }
        goto fail;
    }
    PQsetNoticeProcessor(d->c, quiet, NULL);
    if (mode == STORAGE__READ || mode == STORAGE__WRITE) {
        if (schema_version(d, &version) < 0) {
            storage__errf(err, errlen, "%s: reading the schema version: %s", shown, d->err);
            goto fail;
        }
        if (version == 0) {
            storage__errf(err, errlen, "%s: not a triage database (no schema)", shown);
            goto fail;
        }
        if (version > STORAGE_SCHEMA_VERSION) {
            storage__errf(err, errlen,
                          "%s: schema version %d is newer than this triage understands (%d)",
                          shown, version, STORAGE_SCHEMA_VERSION);
            goto fail;
        }
        if (mode == STORAGE__READ && version < STORAGE_SCHEMA_VERSION) {
            storage__errf(err, errlen,
                          "%s: schema version %d is older than %d; start triaged on it once "
                          "(it migrates at start)",
                          shown, version, STORAGE_SCHEMA_VERSION);
            goto fail;
        }
    }
    if (mode != STORAGE__READ && version < STORAGE_SCHEMA_VERSION &&
        migrate(d, shown, err, errlen) < 0)
        goto fail;
    return &d->base;
fail:;
    int away = pg_gone(&d->base);
    pg_close(&d->base);
    errno = away ? ENOTCONN : EIO;
    return NULL;
}

static void
pg_close(struct storage__db *db)
{
    PQfinish(DB(db)->c);
    free(db);
}

static int
pg_begin(struct storage__db *db, enum storage__tx kind)
{
    switch (kind) {
    case STORAGE__TX_SNAPSHOT:
        return pg_exec(db, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    case STORAGE__TX_WRITE:
        /* Registry changes read, then write: one at a time across replicas. */
        if (pg_exec(db, "BEGIN") < 0)
            return -EIO;
        if (pg_exec(db, PG_LOCK) < 0) {
            pg_exec(db, "ROLLBACK");
            return -EIO;
        }
        return 0;
    case STORAGE__TX_BATCH:
        /* The batch's staging table, once per connection and outside the transaction
         * (a rollback would drop it again). */
        if (!DB(db)->staged && pg_exec(db, staging_sql) < 0)
            return -EIO;
        DB(db)->staged = 1;
        break;
    }
    return pg_exec(db, "BEGIN");
}

static const char *
pg_error(struct storage__db *db)
{
    return DB(db)->err;
}

static int
pg_gone(struct storage__db *db)
{
    return !DB(db)->c || DB(db)->gone || PQstatus(DB(db)->c) != CONNECTION_OK;
}

static int64_t
pg_changes(struct storage__db *db)
{
    return DB(db)->changes;
}

/* Rewrites SQLite's placeholders as PostgreSQL's: "?" counts up, "?N" is "$N"; and
 * "CROSS JOIN ... ON" (SQLite's join-order hint) as a plain JOIN, which PostgreSQL
 * orders itself. String literals are copied as they are. Returns new text; sets
 * *nparams to the highest parameter number. */
static char *
translate(const char *sql, int *nparams)
{
    size_t n = strlen(sql);
    char *out = storage__calloc(1, n * 2 + 1), *o = out;
    int next = 0, max = 0, quoted = 0;

    for (const char *p = sql; *p;) {
        if (*p == '\'')
            quoted = !quoted;
        if (!quoted && *p == '?') {
            int k;
            p++;
            if (*p >= '0' && *p <= '9') {
                k = (int)strtol(p, (char **)&p, 10);
            } else {
                k = ++next;
            }
            if (k > max)
                max = k;
            o += sprintf(o, "$%d", k);
            continue;
        }
        if (!quoted && !strncmp(p, "CROSS JOIN", 10)) {
            p += 6; /* keep "JOIN" */
            continue;
        }
        *o++ = *p++;
    }
    *o = '\0';
    *nparams = max;
    return out;
}

static struct storage__stmt *
pg_prepare(struct storage__db *db, const char *sql)
{
    struct pg_stmt *s = storage__calloc(1, sizeof(*s));

    s->base.e = &storage__pg;
    s->db = DB(db);
    s->sql = translate(sql, &s->nparams);
    if (s->nparams > PG_MAX_PARAMS) {
        snprintf(DB(db)->err, sizeof(DB(db)->err), "too many parameters (%d)", s->nparams);
        free(s->sql);
        free(s);
        return NULL;
    }
    return &s->base;
}

static int
pg_param_count(struct storage__stmt *st)
{
    return ST(st)->nparams;
}

static void
bind_at(struct pg_stmt *s, int i, const char *v, int len, int fmt)
{
    if (i < 1 || i > s->nparams)
        return;
    s->vals[i - 1] = v;
    s->lens[i - 1] = len;
    s->fmts[i - 1] = fmt;
}

static void
pg_bind_null(struct storage__stmt *st, int i)
{
    bind_at(ST(st), i, NULL, 0, 0);
}

static void
pg_bind_text(struct storage__stmt *st, int i, const char *v)
{
    bind_at(ST(st), i, v, 0, 0);
}

static void
pg_bind_int64(struct storage__stmt *st, int i, int64_t v)
{
    if (i < 1 || i > ST(st)->nparams)
        return;
    snprintf(ST(st)->num[i - 1], sizeof(ST(st)->num[0]), "%lld", (long long)v);
    bind_at(ST(st), i, ST(st)->num[i - 1], 0, 0);
}

static void
pg_bind_double(struct storage__stmt *st, int i, double v)
{
    if (i < 1 || i > ST(st)->nparams)
        return;
    snprintf(ST(st)->num[i - 1], sizeof(ST(st)->num[0]), "%.17g", v);
    bind_at(ST(st), i, ST(st)->num[i - 1], 0, 0);
}

static void
pg_bind_blob(struct storage__stmt *st, int i, const void *p, size_t len)
{
    /* binary format: bytea as it is */
    if (len > 0x7fffffff)
        pg_bind_null(st, i);
    else
        bind_at(ST(st), i, p ? p : "", (int)len, 1);
}

/* Ends the statement's command: frees the row and reads what is left. */
static void
finish(struct pg_stmt *s)
{
    PQclear(s->row);
    s->row = NULL;
    free(s->blob);
    s->blob = NULL;
    if (s->running) {
        drain(s->db);
        s->running = 0;
    }
}

static int
pg_step(struct storage__stmt *st)
{
    struct pg_stmt *s = ST(st);
    struct pg_db *d = s->db;

    PQclear(s->row);
    s->row = NULL;
    free(s->blob);
    s->blob = NULL;
    if (!s->running) {
        /* Rows one at a time: a week's stats scan is never held in memory at once. */
        if (!PQsendQueryParams(d->c, s->sql, s->nparams, NULL, s->vals, s->lens, s->fmts, 0) ||
            !PQsetSingleRowMode(d->c)) {
            note_error(d, NULL);
            drain(d);
            return -EIO;
        }
        s->running = 1;
    } else if (s->running == 2) {
        return 0; /* done already */
    }
    PGresult *r = PQgetResult(d->c);
    switch (PQresultStatus(r)) {
    case PGRES_SINGLE_TUPLE:
        s->row = r;
        return 1;
    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
        d->changes = atoll(PQcmdTuples(r));
        PQclear(r);
        drain(d);
        s->running = 2;
        return 0;
    default:
        note_error(d, r);
        PQclear(r);
        drain(d);
        s->running = 2;
        return -EIO;
    }
}

static int
pg_column_null(struct storage__stmt *st, int i)
{
    return !ST(st)->row || PQgetisnull(ST(st)->row, 0, i);
}

static int64_t
pg_column_int64(struct storage__stmt *st, int i)
{
    if (pg_column_null(st, i))
        return 0;
    const char *v = PQgetvalue(ST(st)->row, 0, i);
    if (*v == 't' || *v == 'f') /* a boolean */
        return *v == 't';
    return strtoll(v, NULL, 10);
}

static double
pg_column_double(struct storage__stmt *st, int i)
{
    return pg_column_null(st, i) ? 0.0 : strtod(PQgetvalue(ST(st)->row, 0, i), NULL);
}

static const char *
pg_column_text(struct storage__stmt *st, int i)
{
    return pg_column_null(st, i) ? NULL : PQgetvalue(ST(st)->row, 0, i);
}

static const void *
pg_column_blob(struct storage__stmt *st, int i, size_t *len)
{
    struct pg_stmt *s = ST(st);

    *len = 0;
    if (pg_column_null(st, i))
        return NULL;
    free(s->blob);
    s->blob = PQunescapeBytea((const unsigned char *)PQgetvalue(s->row, 0, i), len);
    return s->blob;
}

static void
pg_reset(struct storage__stmt *st)
{
    struct pg_stmt *s = ST(st);

    finish(s);
    memset(s->vals, 0, sizeof(s->vals));
    memset(s->lens, 0, sizeof(s->lens));
    memset(s->fmts, 0, sizeof(s->fmts));
}

static void
pg_finalize(struct storage__stmt *st)
{
    finish(ST(st));
    free(ST(st)->sql);
    free(st);
}

/* ---- the writer's COPY ---- */

struct buf {
    char *p;
    size_t n, cap;
};

static void
buf_grow(struct buf *b, size_t more)
{
    if (b->n + more <= b->cap)
        return;
    while (b->n + more > b->cap)
        b->cap = b->cap ? b->cap * 2 : 65536;
    b->p = realloc(b->p, b->cap);
    if (!b->p) {
        fputs("triage: out of memory\n", stderr);
        abort();
    }
}

static void
buf_add(struct buf *b, const char *s, size_t n)
{
    buf_grow(b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when it is not one. */
static size_t
utf8_len(const unsigned char *s)
{
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF)
        return (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        if ((s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] > 0x9F))
            return 0; /* overlong, surrogate */
        return 3;
    }
    if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        if ((s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if ((s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] > 0x8F))
            return 0;
        return 4;
    }
    return 0;
}

/* A text field in COPY's text format: NULL as \N, the separators escaped, and bytes
 * that are not UTF-8 as U+FFFD (PostgreSQL would refuse the whole batch for one). */
static void
copy_text(struct buf *b, const char *s)
{
    if (!s) {
        buf_add(b, "\\N", 2);
        return;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = utf8_len(p);
        buf_grow(b, 4);
        if (!n) {
            buf_add(b, "\xEF\xBF\xBD", 3);
            p++;
            continue;
        }
        switch (*p) {
        case '\\':
            buf_add(b, "\\\\", 2);
            break;
        case '\n':
            buf_add(b, "\\n", 2);
            break;
        case '\r':
            buf_add(b, "\\r", 2);
            break;
        case '\t':
            buf_add(b, "\\t", 2);
            break;
        default:
            buf_add(b, (const char *)p, n);
        }
        p += n;
    }
}

static void
copy_int(struct buf *b, int64_t v)
{
    char t[32];
    buf_add(b, t, (size_t)snprintf(t, sizeof(t), "%lld", (long long)v));
}

static void
copy_count(struct buf *b, int64_t v)
{
    if (v < 0)
        buf_add(b, "\\N", 2);
    else
        copy_int(b, v);
}

static void
copy_real(struct buf *b, double v)
{
    char t[40];

    if (!isfinite(v))
        buf_add(b, "\\N", 2);
    else
        buf_add(b, t, (size_t)snprintf(t, sizeof(t), "%.17g", v));
}

static void
copy_bytea(struct buf *b, const unsigned char *p, size_t len)
{
    static const char hex[] = "0123456789abcdef";

    if (!p) {
        buf_add(b, "\\N", 2);
        return;
    }
    buf_grow(b, 3 + 2 * len);
    buf_add(b, "\\\\x", 3); /* bytea's hex form, its backslash escaped for COPY */
    for (size_t i = 0; i < len; i++) {
        b->p[b->n++] = hex[p[i] >> 4];
        b->p[b->n++] = hex[p[i] & 15];
    }
}

/* One COPY for the whole batch (no per-row parsing of an INSERT) into triage_batch, then
 * one INSERT ... SELECT ... ON CONFLICT DO NOTHING into requests (see staging_sql). */
static int
pg_insert_records(struct storage__db *db, struct storage_record *const *recs, uint32_t n)
{
    struct pg_db *d = DB(db);
    struct buf b = {0};
    int rc = -EIO;

    for (uint32_t k = 0; k < n; k++) {
        const struct storage_record *r = recs[k];
        copy_text(&b, r->request_id ? r->request_id : "");
        buf_add(&b, "\t", 1);
        copy_int(&b, r->started_ms);
        buf_add(&b, "\t", 1);
        copy_int(&b, r->finished_ms);
        buf_add(&b, "\t", 1);
        copy_text(&b, r->key_id);
        buf_add(&b, "\t", 1);
        copy_text(&b, r->requested_model);
        buf_add(&b, "\t", 1);
        copy_text(&b, r->backend);
        buf_add(&b, "\t", 1);
        copy_text(&b, r->route_reason);
        buf_add(&b, "\t", 1);
        copy_real(&b, r->score);
        buf_add(&b, "\t", 1);
        copy_real(&b, r->threshold);
        buf_add(&b, "\t", 1);
        copy_text(&b, r->model_version);
        buf_add(&b, "\t", 1);
        copy_int(&b, (int64_t)r->features_digest); /* the bit pattern */
        buf_add(&b, "\t", 1);
        copy_text(&b, r->prompt_hash);
        buf_add(&b, "\t", 1);
        copy_int(&b, r->status);
        buf_add(&b, "\t", 1);
        copy_text(&b, r->error_kind);
        buf_add(&b, "\t", 1);
        copy_real(&b, r->latency_ms);
        buf_add(&b, "\t", 1);
        copy_real(&b, r->ttfb_ms);
        buf_add(&b, "\t", 1);
        copy_count(&b, r->tokens_in);
        buf_add(&b, "\t", 1);
        copy_count(&b, r->tokens_out);
        buf_add(&b, "\t", 1);
        copy_text(&b, r->finish_reason);
        buf_add(&b, "\t", 1);
        copy_real(&b, r->cost_usd);
        buf_add(&b, "\t", 1);
        copy_int(&b, r->stream);
        buf_add(&b, "\t", 1);
        copy_text(&b, r->prompt);
        buf_add(&b, "\t", 1);
        copy_text(&b, r->kind);
        buf_add(&b, "\t", 1);
        copy_text(&b, r->parent_id);
        buf_add(&b, "\t", 1);
        copy_bytea(&b, r->features, r->features_len);
        buf_add(&b, "\t", 1);
        copy_text(&b, r->failed_attempts);
        buf_add(&b, "\t", 1);
        copy_bytea(&b, r->answer, r->answer_len);
        buf_add(&b, "\t", 1);
        copy_real(&b, r->escalation);
        buf_add(&b, "\n", 1);
    }

    PGresult *res = PQexec(d->c, copy_sql);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        note_error(d, res);
        PQclear(res);
        drain(d);
        goto done;
    }
    PQclear(res);
    if (PQputCopyData(d->c, b.p, (int)b.n) != 1 || PQputCopyEnd(d->c, NULL) != 1) {
        note_error(d, NULL);
        drain(d);
        goto done;
    }
    res = PQgetResult(d->c);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        note_error(d, res);
    else
        rc = 0;
    PQclear(res);
    drain(d);
    if (rc == 0)
        rc = pg_exec(db, insert_sql);
done:
    free(b.p);
    return rc;
}

static int
pg_delete_before(struct storage__db *db, const char *table, int64_t cutoff_ms, uint32_t limit)
{
    char sql[256], cut[32], lim[16];
    const char *vals[2] = {cut, lim};
    int n = -EIO;

    /* ctid: PostgreSQL's physical row address, for the tables without an id column */
    int requests = !strcmp(table, "requests");
    snprintf(sql, sizeof(sql),
             "DELETE FROM %s WHERE %s IN (SELECT %s FROM %s WHERE %s < $1 LIMIT $2)", table,
             requests ? "id" : "ctid", requests ? "id" : "ctid", table,
             requests ? "started_ms" : "created_ms");
    snprintf(cut, sizeof(cut), "%lld", (long long)cutoff_ms);
    snprintf(lim, sizeof(lim), "%u", limit);
    PGresult *r = PQexecParams(DB(db)->c, sql, 2, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_COMMAND_OK)
        n = atoi(PQcmdTuples(r));
    else
        note_error(DB(db), r);
    PQclear(r);
    return n;
}

const struct storage__engine storage__pg = {
    .name = "postgresql",
    .open = pg_open,
    .close = pg_close,
    .exec = pg_exec,
    .begin = pg_begin,
    .error = pg_error,
    .gone = pg_gone,
    .changes = pg_changes,
    .prepare = pg_prepare,
    .param_count = pg_param_count,
    .bind_null = pg_bind_null,
    .bind_text = pg_bind_text,
    .bind_int64 = pg_bind_int64,
    .bind_double = pg_bind_double,
    .bind_blob = pg_bind_blob,
    .step = pg_step,
    .column_null = pg_column_null,
    .column_int64 = pg_column_int64,
    .column_double = pg_column_double,
    .column_text = pg_column_text,
    .column_blob = pg_column_blob,
    .reset = pg_reset,
    .finalize = pg_finalize,
    .insert_records = pg_insert_records,
    .delete_before = pg_delete_before,
};
