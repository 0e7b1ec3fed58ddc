/* registry.c - the predictor model registry: every model version, its metrics, its lineage
 * and which one is champion (table `models`). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "storage.h"
#include "storage-int.h"

static const char *const statuses[] = {"champion", "candidate", "retired"};
static const char *const sources[] = {"shipped", "retrain", "manual"};

/* The columns every read takes, in the order row_read expects. */
#define MODEL_COLUMNS                                                                              \
    "version, path, parent, source, created_ms, promoted_ms, train_examples, holdout_n, apgr,"     \
    " parent_apgr, status"

/* Returns 1 when the field s (size bytes, maybe unterminated) is one of set's n names. */
static int
one_of(const char *s, size_t size, const char *const *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(set[i]) < size && !strncmp(s, set[i], size))
            return 1;
    return 0;
}

/* Returns 1 when the fixed-size field s holds a terminated, non-empty string. */
static int
field_ok(const char *s, size_t size)
{
    size_t n = strnlen(s, size);
    return n > 0 && n < size;
}

/* Opens a read-write connection to path (creating the file when create), migrating an
 * older schema through storage_open() first. Returns NULL with err set. */
static sqlite3 *
open_rw(const char *path, int create, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX;
    int version = 0;

    for (int attempt = 0; attempt < 2; attempt++) {
        if (sqlite3_open_v2(path, &db, flags | (create ? SQLITE_OPEN_CREATE : 0), NULL) !=
            SQLITE_OK) {
            storage__errf(err, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : "cannot open");
            goto fail;
        }
        sqlite3_busy_timeout(db, STORAGE__BUSY_TIMEOUT_MS);
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK ||
            sqlite3_step(st) != SQLITE_ROW) {
            storage__errf(err, errlen, "%s: reading the schema version: %s", path,
                          sqlite3_errmsg(db));
            sqlite3_finalize(st);
            goto fail;
        }
        version = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        if (version == STORAGE_SCHEMA_VERSION)
            break;
        if (version > STORAGE_SCHEMA_VERSION) {
            storage__errf(err, errlen,
                          "%s: schema version %d is newer than this triage understands (%d)", path,
                          version, STORAGE_SCHEMA_VERSION);
            goto fail;
        }
        if (version == 0 && !create) {
            storage__errf(err, errlen, "%s: not a triage database (no schema)", path);
            goto fail;
        }
        if (attempt == 1) {
            storage__errf(err, errlen, "%s: schema version %d after migrating", path, version);
            goto fail;
        }
        /* Older (or new): storage_open() owns the migrations; run it once, then reopen. */
        sqlite3_close(db);
        db = NULL;
        struct storage *s = storage_open(path, NULL, err, errlen);
        if (!s)
            return NULL;
        storage_close(s);
    }
    /* A database made by storage_open() is in WAL already; this keeps a copy in WAL too. */
    sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    return db;
fail:
    sqlite3_close(db);
    return NULL;
}

static int
db_error(sqlite3 *db, const char *path, const char *what, char *err, size_t errlen)
{
    storage__errf(err, errlen, "%s: %s: %s", path, what, sqlite3_errmsg(db));
    return -EIO;
}

static int
exec(sqlite3 *db, const char *path, const char *sql, char *err, size_t errlen)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_error(db, path, sql, err, errlen);
    return 0;
}

/* Prepares sql, or returns NULL with err set. */
static sqlite3_stmt *
prepare(sqlite3 *db, const char *path, const char *sql, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        db_error(db, path, "preparing a registry query", err, errlen);
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

static void
copy_text(char *dst, size_t size, sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(dst, size, "%s", t ? (const char *)t : "");
}

static int64_t
column_count(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, col);
}

static double
column_real(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL ? NAN : sqlite3_column_double(st, col);
}

/* Fills m from a row of MODEL_COLUMNS. */
static void
row_read(sqlite3_stmt *st, struct storage_model_info *m)
{
    memset(m, 0, sizeof(*m));
    copy_text(m->version, sizeof(m->version), st, 0);
    copy_text(m->path, sizeof(m->path), st, 1);
    copy_text(m->parent, sizeof(m->parent), st, 2);
    copy_text(m->source, sizeof(m->source), st, 3);
    m->created_ms = sqlite3_column_int64(st, 4);
    m->promoted_ms = sqlite3_column_int64(st, 5);
    m->train_examples = column_count(st, 6);
    m->holdout_n = column_count(st, 7);
    m->apgr = column_real(st, 8);
    m->parent_apgr = column_real(st, 9);
    copy_text(m->status, sizeof(m->status), st, 10);
}

/* Reads the row selected by sql (one text parameter, NULL = none) into out (may be
 * NULL). Returns 0, -ENOENT when there is no row, -EIO with err. */
static int
select_one(sqlite3 *db, const char *path, const char *sql, const char *param,
           struct storage_model_info *out, char *err, size_t errlen)
{
    sqlite3_stmt *st = prepare(db, path, sql, err, errlen);
    int rc;

    if (!st)
        return -EIO;
    if (param)
        sqlite3_bind_text(st, 1, param, -1, SQLITE_STATIC);
    switch (sqlite3_step(st)) {
    case SQLITE_ROW:
        if (out)
            row_read(st, out);
        rc = 0;
        break;
    case SQLITE_DONE:
        rc = -ENOENT;
        break;
    default:
        rc = db_error(db, path, "reading the registry", err, errlen);
    }
    sqlite3_finalize(st);
    return rc;
}

/* Runs sql with up to two text parameters and one integer (bound in that order, NULL
 * text skipped), expecting no rows. Returns 0 or -EIO with err. */
static int
run(sqlite3 *db, const char *path, const char *sql, const char *a, const char *b, int64_t n,
    char *err, size_t errlen)
{
    sqlite3_stmt *st = prepare(db, path, sql, err, errlen);
    int i = 1, rc = 0;

    if (!st)
        return -EIO;
    if (a)
        sqlite3_bind_text(st, i++, a, -1, SQLITE_STATIC);
    if (b)
        sqlite3_bind_text(st, i++, b, -1, SQLITE_STATIC);
    if (sqlite3_bind_parameter_count(st) >= i)
        sqlite3_bind_int64(st, i, n);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = db_error(db, path, "writing the registry", err, errlen);
    sqlite3_finalize(st);
    return rc;
}

/* The promoted_ms for a promotion now: the clock, or one past the latest promotion, so
 * that promotions are strictly ordered even within one millisecond. Inside the caller's
 * transaction. */
static int
next_promotion_ms(sqlite3 *db, const char *path, int64_t *ms, char *err, size_t errlen)
{
    sqlite3_stmt *st = prepare(db, path, "SELECT max(promoted_ms) FROM models", err, errlen);

    if (!st)
        return -EIO;
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        return db_error(db, path, "reading the registry", err, errlen);
    }
    int64_t last = sqlite3_column_int64(st, 0), now = storage__now_ms();
    sqlite3_finalize(st);
    *ms = now > last ? now : last + 1;
    return 0;
}

/* Retires the champion (if any, other than version) and makes version champion with
 * promoted_ms = at. Inside the caller's transaction. Returns 0 or -EIO with err. */
static int
crown(sqlite3 *db, const char *path, const char *version, int64_t at, char *err, size_t errlen)
{
    if (run(db, path,
            "UPDATE models SET status = 'retired' WHERE status = 'champion' AND version <> ?",
            version, NULL, 0, err, errlen) < 0)
        return -EIO;
    return run(db, path,
               "UPDATE models SET status = 'champion', promoted_ms = ?2 WHERE version = ?1",
               version, NULL, at, err, errlen);
}

int
storage_model_add(const char *db_path, const struct storage_model_info *m, char *err, size_t errlen)
{
    if (!db_path || !m || !field_ok(m->version, sizeof(m->version)) ||
        !field_ok(m->path, sizeof(m->path)) ||
        strnlen(m->parent, sizeof(m->parent)) == sizeof(m->parent)) {
        storage__errf(err, errlen, "a model needs a version and a path (terminated strings)");
        return -EINVAL;
    }
    if (!one_of(m->source, sizeof(m->source), sources, sizeof(sources) / sizeof(sources[0]))) {
        storage__errf(err, errlen, "unknown model source \"%.*s\" (shipped, retrain or manual)",
                      (int)sizeof(m->source), m->source);
        return -EINVAL;
    }
    if (!one_of(m->status, sizeof(m->status), statuses, sizeof(statuses) / sizeof(statuses[0]))) {
        storage__errf(err, errlen, "unknown model status \"%.*s\" (champion, candidate or retired)",
                      (int)sizeof(m->status), m->status);
        return -EINVAL;
    }

    sqlite3 *db = open_rw(db_path, 1, err, errlen);
    sqlite3_stmt *st = NULL;
    int champion = !strcmp(m->status, "champion"), tx = 0, rc = -EIO;
    int64_t promoted = m->promoted_ms;

    if (!db)
        return -EIO;
    if (exec(db, db_path, "BEGIN IMMEDIATE", err, errlen) < 0)
        goto fail;
    tx = 1;
    if (champion) {
        if (!promoted && next_promotion_ms(db, db_path, &promoted, err, errlen) < 0)
            goto fail;
        if (run(db, db_path,
                "UPDATE models SET status = 'retired' WHERE status = 'champion' AND version <> ?",
                m->version, NULL, 0, err, errlen) < 0)
            goto fail;
    }
    /* An upsert, not INSERT OR REPLACE: REPLACE would settle a clash on the champion
     * index by deleting the other champion's row. */
    st = prepare(db, db_path,
                 "INSERT INTO models (" MODEL_COLUMNS ") VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                 " ON CONFLICT (version) DO UPDATE SET path = excluded.path,"
                 " parent = excluded.parent, source = excluded.source,"
                 " created_ms = excluded.created_ms, promoted_ms = excluded.promoted_ms,"
                 " train_examples = excluded.train_examples, holdout_n = excluded.holdout_n,"
                 " apgr = excluded.apgr, parent_apgr = excluded.parent_apgr,"
                 " status = excluded.status",
                 err, errlen);
    if (!st)
        goto fail;
    sqlite3_bind_text(st, 1, m->version, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, m->path, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, m->parent, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, m->source, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, m->created_ms ? m->created_ms : storage__now_ms());
    sqlite3_bind_int64(st, 6, promoted);
    if (m->train_examples >= 0)
        sqlite3_bind_int64(st, 7, m->train_examples);
    if (m->holdout_n >= 0)
        sqlite3_bind_int64(st, 8, m->holdout_n);
    if (isfinite(m->apgr))
        sqlite3_bind_double(st, 9, m->apgr);
    if (isfinite(m->parent_apgr))
        sqlite3_bind_double(st, 10, m->parent_apgr);
    sqlite3_bind_text(st, 11, m->status, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
        db_error(db, db_path, "storing the model", err, errlen);
        goto fail;
    }
    if (exec(db, db_path, "COMMIT", err, errlen) < 0)
        goto fail;
    tx = 0;
    rc = 0;
fail:
    sqlite3_finalize(st);
    if (tx)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

int
storage_model_champion(const char *db_path, struct storage_model_info *out, char *err,
                       size_t errlen)
{
    if (!db_path || !out) {
        storage__errf(err, errlen, "no database or no place for the champion");
        return -EINVAL;
    }
    sqlite3 *db = open_rw(db_path, 0, err, errlen);
    if (!db)
        return -EIO;
    int rc =
        select_one(db, db_path, "SELECT " MODEL_COLUMNS " FROM models WHERE status = 'champion'",
                   NULL, out, err, errlen);
    if (rc == -ENOENT)
        storage__errf(err, errlen, "%s: no champion model in the registry", db_path);
    sqlite3_close(db);
    return rc;
}

int
storage_model_promote(const char *db_path, const char *version, char *err, size_t errlen)
{
    struct storage_model_info m;
    int64_t at;
    int tx = 0, rc = -EIO;

    if (!db_path || !version || !*version) {
        storage__errf(err, errlen, "promote needs a model version");
        return -EINVAL;
    }
    sqlite3 *db = open_rw(db_path, 0, err, errlen);
    if (!db)
        return -EIO;
    if (exec(db, db_path, "BEGIN IMMEDIATE", err, errlen) < 0)
        goto fail;
    tx = 1;
    rc = select_one(db, db_path, "SELECT " MODEL_COLUMNS " FROM models WHERE version = ?", version,
                    &m, err, errlen);
    if (rc == -ENOENT)
        storage__errf(err, errlen, "no model version \"%s\" in the registry", version);
    if (rc < 0)
        goto fail;
    rc = -EIO;
    if (strcmp(m.status, "champion") && (next_promotion_ms(db, db_path, &at, err, errlen) < 0 ||
                                         crown(db, db_path, version, at, err, errlen) < 0))
        goto fail;
    if (exec(db, db_path, "COMMIT", err, errlen) < 0)
        goto fail;
    tx = 0;
    rc = 0;
fail:
    if (tx)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

int
storage_model_rollback(const char *db_path, struct storage_model_info *out, char *err,
                       size_t errlen)
{
    struct storage_model_info cur, prev;
    int64_t at;
    int tx = 0, rc = -EIO;

    if (!db_path) {
        storage__errf(err, errlen, "rollback needs a database");
        return -EINVAL;
    }
    sqlite3 *db = open_rw(db_path, 0, err, errlen);
    if (!db)
        return -EIO;
    if (exec(db, db_path, "BEGIN IMMEDIATE", err, errlen) < 0)
        goto fail;
    tx = 1;
    rc = select_one(db, db_path, "SELECT " MODEL_COLUMNS " FROM models WHERE status = 'champion'",
                    NULL, &cur, err, errlen);
    if (rc == -ENOENT)
        storage__errf(err, errlen, "no champion model to roll back from");
    if (rc < 0)
        goto fail;
    /* The model the champion replaced: its parent when that served once... */
    rc = -ENOENT;
    if (cur.parent[0] && strcmp(cur.parent, cur.version))
        rc = select_one(db, db_path,
                        "SELECT " MODEL_COLUMNS " FROM models WHERE version = ?"
                        " AND (status = 'retired' OR promoted_ms > 0)",
                        cur.parent, &prev, err, errlen);
    /* ...else the one champion before it. */
    if (rc == -ENOENT)
        rc = select_one(db, db_path,
                        "SELECT " MODEL_COLUMNS " FROM models WHERE status = 'retired'"
                        " AND version <> ? ORDER BY promoted_ms DESC, rowid DESC LIMIT 1",
                        cur.version, &prev, err, errlen);
    if (rc == -ENOENT)
        storage__errf(err, errlen, "nothing to roll back to: no model was champion before %s",
                      cur.version);
    if (rc < 0)
        goto fail;
    rc = -EIO;
    if (next_promotion_ms(db, db_path, &at, err, errlen) < 0 ||
        crown(db, db_path, prev.version, at, err, errlen) < 0 ||
        select_one(db, db_path, "SELECT " MODEL_COLUMNS " FROM models WHERE version = ?",
                   prev.version, &prev, err, errlen) < 0 ||
        exec(db, db_path, "COMMIT", err, errlen) < 0)
        goto fail;
    tx = 0;
    rc = 0;
    if (out)
        *out = prev;
fail:
    if (tx)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

int
storage_model_list(const char *db_path, storage_model_fn *fn, void *arg, char *err, size_t errlen)
{
    struct storage_model_info m;
    int n = 0, step;

    if (!db_path || !fn) {
        storage__errf(err, errlen, "list needs a database and a callback");
        return -EINVAL;
    }
    sqlite3 *db = open_rw(db_path, 0, err, errlen);
    if (!db)
        return -EIO;
    sqlite3_stmt *st = prepare(
        db, db_path, "SELECT " MODEL_COLUMNS " FROM models ORDER BY created_ms DESC, rowid DESC",
        err, errlen);
    if (!st) {
        n = -EIO;
        goto fail;
    }
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        row_read(st, &m);
        n++;
        if (fn(&m, arg) != 0)
            break;
    }
    if (step != SQLITE_ROW && step != SQLITE_DONE)
        n = db_error(db, db_path, "reading the registry", err, errlen);
fail:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* ---- versions over time (/v1/stats "models") --------------------------------------- */

#define TIMELINE_MAX 200 /* versions listed at most, newest first */

static void
oom(void)
{
    fputs("triage: out of memory\n", stderr);
    abort();
}

struct timeline {
    struct storage_model_info *v;
    size_t n;
};

static int
timeline_add(const struct storage_model_info *m, void *arg)
{
    struct timeline *t = arg;

    t->v[t->n++] = *m;
    return t->n == TIMELINE_MAX;
}

static json_t *
real_or_null(double x)
{
    return isnan(x) ? json_null() : json_real(x);
}

/* Orders changes by time, oldest first. */
static int
cmp_promoted(const void *a, const void *b)
{
    const struct storage_model_info *x = *(const struct storage_model_info *const *)a,
                                    *y = *(const struct storage_model_info *const *)b;
    return x->promoted_ms < y->promoted_ms ? -1 : x->promoted_ms > y->promoted_ms;
}

json_t *
storage_model_timeline(const char *db_path, char *err, size_t errlen)
{
    struct timeline t = {calloc(TIMELINE_MAX, sizeof(*t.v)), 0};
    const struct storage_model_info **changed = calloc(TIMELINE_MAX, sizeof(*changed));
    json_t *versions = json_array(), *changes = json_array(), *out = NULL;
    size_t n_changed = 0;

    if (!t.v || !changed || !versions || !changes)
        oom();
    if (storage_model_list(db_path, timeline_add, &t, err, errlen) < 0)
        goto done;
    for (size_t i = 0; i < t.n; i++) {
        const struct storage_model_info *m = &t.v[i];
        json_t *row = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:o, s:o, s:o, s:o}", "version",
                                m->version, "status", m->status, "source", m->source, "parent",
                                m->parent, "created_ms", (json_int_t)m->created_ms, "promoted_ms",
                                (json_int_t)m->promoted_ms, "train_examples",
                                m->train_examples < 0 ? json_null() : json_integer(m->train_examples),
                                "holdout_n",
                                m->holdout_n < 0 ? json_null() : json_integer(m->holdout_n), "apgr",
                                real_or_null(m->apgr), "parent_apgr", real_or_null(m->parent_apgr));
        if (!row || json_array_append_new(versions, row) < 0)
            oom();
        if (m->promoted_ms > 0)
            changed[n_changed++] = m;
    }
    /* The registry keeps each version's latest promotion: a change back to a version
     * after a newer one had served is a rollback (or a manual promote of an old one); a
     * model without a parent (the shipped one) became champion "first". */
    qsort(changed, n_changed, sizeof(*changed), cmp_promoted);
    for (size_t i = 0; i < n_changed; i++) {
        int back = 0;
        for (size_t k = 0; k < i && !back; k++)
            back = changed[k]->created_ms > changed[i]->created_ms;
        json_t *row = json_pack("{s:I, s:s, s:s}", "ms", (json_int_t)changed[i]->promoted_ms,
                                "version", changed[i]->version, "kind",
                                back                         ? "rollback"
                                : changed[i]->parent[0] == '\0' ? "first"
                                                                 : "promotion");
        if (!row || json_array_append_new(changes, row) < 0)
            oom();
    }
    out = json_pack("{s:O, s:O}", "versions", versions, "changes", changes);
    if (!out)
        oom();
done:
    json_decref(versions);
    json_decref(changes);
    free(changed);
    free(t.v);
    return out;
}
