/* registry.c - the predictor model registry: every model version, its metrics, its lineage
 * and which one is champion (table `models`). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include "storage.h"
#include "storage-int.h"

static const char *const statuses[] = {"champion", "candidate", "retired"};
static const char *const sources[] = {"shipped", "retrain", "manual"};

/* The columns every read takes, in the order row_read expects. */
#define MODEL_COLUMNS                                                                              \
    "version, path, parent, source, created_ms, promoted_ms, train_examples, holdout_n, apgr,"     \
    " parent_apgr, status, esc_holdout_n, esc_auc, parent_esc_auc, routing_from, escalation_from"

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

/* Opens a read-write connection to path (creating the database when create),
 * migrating an older schema first. Returns NULL with err set. */
static struct storage__db *
open_rw(const char *path, int create, char *err, size_t errlen)
{
    return storage__db_open(path, create ? STORAGE__CREATE : STORAGE__WRITE, err, errlen);
}

static int
db_error(struct storage__db *db, const char *path, const char *what, char *err, size_t errlen)
{
    storage__errf(err, errlen, "%s: %s: %s", storage__shown(path), what, storage__db_error(db));
    return -EIO;
}

static int
exec(struct storage__db *db, const char *path, const char *sql, char *err, size_t errlen)
{
    if (storage__db_exec(db, sql) < 0)
        return db_error(db, path, sql, err, errlen);
    return 0;
}

/* Starts the write transaction every registry change runs in. */
static int
begin(struct storage__db *db, const char *path, char *err, size_t errlen)
{
    if (storage__db_begin(db, STORAGE__TX_WRITE) < 0)
        return db_error(db, path, "BEGIN", err, errlen);
    return 0;
}

/* Prepares sql, or returns NULL with err set. */
static struct storage__stmt *
prepare(struct storage__db *db, const char *path, const char *sql, char *err, size_t errlen)
{
    struct storage__stmt *st = storage__prepare(db, sql);

    if (!st)
        db_error(db, path, "preparing a registry query", err, errlen);
    return st;
}

static void
copy_text(char *dst, size_t size, struct storage__stmt *st, int col)
{
    const char *t = storage__column_text(st, col);
    snprintf(dst, size, "%s", t ? t : "");
}

static int64_t
column_count(struct storage__stmt *st, int col)
{
    return storage__column_null(st, col) ? -1 : storage__column_int64(st, col);
}

static double
column_real(struct storage__stmt *st, int col)
{
    return storage__column_null(st, col) ? NAN : storage__column_double(st, col);
}

/* Fills m from a row of MODEL_COLUMNS. */
static void
row_read(struct storage__stmt *st, struct storage_model_info *m)
{
    memset(m, 0, sizeof(*m));
    copy_text(m->version, sizeof(m->version), st, 0);
    copy_text(m->path, sizeof(m->path), st, 1);
    copy_text(m->parent, sizeof(m->parent), st, 2);
    copy_text(m->source, sizeof(m->source), st, 3);
    m->created_ms = storage__column_int64(st, 4);
    m->promoted_ms = storage__column_int64(st, 5);
    m->train_examples = column_count(st, 6);
    m->holdout_n = column_count(st, 7);
    m->apgr = column_real(st, 8);
    m->parent_apgr = column_real(st, 9);
    copy_text(m->status, sizeof(m->status), st, 10);
    m->esc_holdout_n = column_count(st, 11);
    m->esc_auc = m->esc_holdout_n > 0 ? column_real(st, 12) : NAN;
    m->parent_esc_auc = m->esc_holdout_n > 0 ? column_real(st, 13) : NAN;
    copy_text(m->routing_from, sizeof(m->routing_from), st, 14);
    copy_text(m->escalation_from, sizeof(m->escalation_from), st, 15);
}

/* Reads the row selected by sql (one text parameter, NULL = none) into out (may be
 * NULL). Returns 0, -ENOENT when there is no row, -EIO with err. */
static int
select_one(struct storage__db *db, const char *path, const char *sql, const char *param,
           struct storage_model_info *out, char *err, size_t errlen)
{
    struct storage__stmt *st = prepare(db, path, sql, err, errlen);
    int rc;

    if (!st)
        return -EIO;
    if (param)
        storage__bind_text(st, 1, param);
    switch (storage__step(st)) {
    case 1:
        if (out)
            row_read(st, out);
        rc = 0;
        break;
    case 0:
        rc = -ENOENT;
        break;
    default:
        rc = db_error(db, path, "reading the registry", err, errlen);
    }
    storage__finalize(st);
    return rc;
}

/* Runs sql with up to two text parameters and one integer (bound in that order, NULL
 * text skipped), expecting no rows. Returns 0 or -EIO with err. */
static int
run(struct storage__db *db, const char *path, const char *sql, const char *a, const char *b, int64_t n,
    char *err, size_t errlen)
{
    struct storage__stmt *st = prepare(db, path, sql, err, errlen);
    int i = 1, rc = 0;

    if (!st)
        return -EIO;
    if (a)
        storage__bind_text(st, i++, a);
    if (b)
        storage__bind_text(st, i++, b);
    if (storage__param_count(st) >= i)
        storage__bind_int64(st, i, n);
    if (storage__step(st) != 0)
        rc = db_error(db, path, "writing the registry", err, errlen);
    storage__finalize(st);
    return rc;
}

/* The promoted_ms for a promotion now: the clock, or one past the latest promotion, so
 * that promotions are strictly ordered even within one millisecond. Inside the caller's
 * transaction. */
static int
next_promotion_ms(struct storage__db *db, const char *path, int64_t *ms, char *err, size_t errlen)
{
    struct storage__stmt *st = prepare(db, path, "SELECT max(promoted_ms) FROM models", err, errlen);

    if (!st)
        return -EIO;
    if (storage__step(st) != 1) {
        storage__finalize(st);
        return db_error(db, path, "reading the registry", err, errlen);
    }
    int64_t last = storage__column_int64(st, 0), now = storage__now_ms();
    storage__finalize(st);
    *ms = now > last ? now : last + 1;
    return 0;
}

/* Retires the champion (if any, other than version) and makes version champion with
 * promoted_ms = at. Inside the caller's transaction. Returns 0 or -EIO with err. */
static int
crown(struct storage__db *db, const char *path, const char *version, int64_t at, char *err, size_t errlen)
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
        strnlen(m->parent, sizeof(m->parent)) == sizeof(m->parent) ||
        strnlen(m->routing_from, sizeof(m->routing_from)) == sizeof(m->routing_from) ||
        strnlen(m->escalation_from, sizeof(m->escalation_from)) == sizeof(m->escalation_from)) {
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

    struct storage__db *db = open_rw(db_path, 1, err, errlen);
    struct storage__stmt *st = NULL;
    int champion = !strcmp(m->status, "champion"), tx = 0, rc = -EIO;
    int64_t promoted = m->promoted_ms;

    if (!db)
        return -EIO;
    if (begin(db, db_path, err, errlen) < 0)
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
                 "INSERT INTO models (" MODEL_COLUMNS ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                 " ON CONFLICT (version) DO UPDATE SET path = excluded.path,"
                 " parent = excluded.parent, source = excluded.source,"
                 " created_ms = excluded.created_ms, promoted_ms = excluded.promoted_ms,"
                 " train_examples = excluded.train_examples, holdout_n = excluded.holdout_n,"
                 " apgr = excluded.apgr, parent_apgr = excluded.parent_apgr,"
                 " status = excluded.status, esc_holdout_n = excluded.esc_holdout_n,"
                 " esc_auc = excluded.esc_auc, parent_esc_auc = excluded.parent_esc_auc,"
                 " routing_from = excluded.routing_from,"
                 " escalation_from = excluded.escalation_from",
                 err, errlen);
    if (!st)
        goto fail;
    storage__bind_text(st, 1, m->version);
    storage__bind_text(st, 2, m->path);
    storage__bind_text(st, 3, m->parent);
    storage__bind_text(st, 4, m->source);
    storage__bind_int64(st, 5, m->created_ms ? m->created_ms : storage__now_ms());
    storage__bind_int64(st, 6, promoted);
    storage__bind_count(st, 7, m->train_examples);
    storage__bind_count(st, 8, m->holdout_n);
    storage__bind_real(st, 9, m->apgr);
    storage__bind_real(st, 10, m->parent_apgr);
    storage__bind_text(st, 11, m->status);
    /* an escalation metric on no answers is no metric: all three unknown together */
    int esc = m->esc_holdout_n > 0;
    storage__bind_count(st, 12, esc ? m->esc_holdout_n : -1);
    storage__bind_real(st, 13, esc ? m->esc_auc : NAN);
    storage__bind_real(st, 14, esc ? m->parent_esc_auc : NAN);
    storage__bind_text(st, 15, m->routing_from);
    storage__bind_text(st, 16, m->escalation_from);
    if (storage__step(st) != 0) {
        db_error(db, db_path, "storing the model", err, errlen);
        goto fail;
    }
    if (exec(db, db_path, "COMMIT", err, errlen) < 0)
        goto fail;
    tx = 0;
    rc = 0;
fail:
    storage__finalize(st);
    if (tx)
        storage__db_rollback(db);
    storage__db_close(db);
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
    struct storage__db *db = open_rw(db_path, 0, err, errlen);
    if (!db)
        return -EIO;
    int rc =
        select_one(db, db_path, "SELECT " MODEL_COLUMNS " FROM models WHERE status = 'champion'",
                   NULL, out, err, errlen);
    if (rc == -ENOENT)
        storage__errf(err, errlen, "%s: no champion model in the registry", db_path);
    storage__db_close(db);
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
    struct storage__db *db = open_rw(db_path, 0, err, errlen);
    if (!db)
        return -EIO;
    if (begin(db, db_path, err, errlen) < 0)
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
        storage__db_rollback(db);
    storage__db_close(db);
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
    struct storage__db *db = open_rw(db_path, 0, err, errlen);
    if (!db)
        return -EIO;
    if (begin(db, db_path, err, errlen) < 0)
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
        storage__db_rollback(db);
    storage__db_close(db);
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
    struct storage__db *db = open_rw(db_path, 0, err, errlen);
    if (!db)
        return -EIO;
    struct storage__stmt *st = prepare(
        db, db_path, "SELECT " MODEL_COLUMNS " FROM models ORDER BY created_ms DESC, rowid DESC",
        err, errlen);
    if (!st) {
        n = -EIO;
        goto fail;
    }
    while ((step = storage__step(st)) == 1) {
        row_read(st, &m);
        n++;
        if (fn(&m, arg) != 0)
            break;
    }
    if (step < 0)
        n = db_error(db, db_path, "reading the registry", err, errlen);
fail:
    storage__finalize(st);
    storage__db_close(db);
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

/* A registry text as JSON: null for bytes that are not UTF-8 (a hand-edited log). */
static json_t *
text_or_null(const char *s)
{
    json_t *j = json_string(s);
    return j ? j : json_null();
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
        if (!row ||
            json_object_set_new(row, "esc_holdout_n",
                                m->esc_holdout_n > 0 ? json_integer(m->esc_holdout_n)
                                                     : json_null()) < 0 ||
            json_object_set_new(row, "esc_auc", real_or_null(m->esc_auc)) < 0 ||
            json_object_set_new(row, "parent_esc_auc", real_or_null(m->parent_esc_auc)) < 0 ||
            json_object_set_new(row, "routing_from", text_or_null(m->routing_from)) < 0 ||
            json_object_set_new(row, "escalation_from", text_or_null(m->escalation_from)) < 0 ||
            json_array_append_new(versions, row) < 0)
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
