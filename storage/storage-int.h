/* storage-int.h - helpers shared by the storage module's files, private to it.
 *
 * The engine boundary: every file above it (storage.c's writer, stats.c, export.c,
 * registry.c) talks to a struct storage__db through the functions below and writes
 * its SQL once, in SQLite's dialect kept to what PostgreSQL also reads (coalesce, CASE,
 * ON CONFLICT ... DO UPDATE, partial indexes). An engine (db_sqlite.c, db_pg.c) fills
 * a struct storage__engine; storage__db_open() picks it from the target: a
 * "postgresql://" or "postgres://" URL is PostgreSQL, anything else a SQLite file or
 * "file:" URI. What differs past the SQL text (the schema's types, batch inserts,
 * retention by row, locking, placeholders) stays inside the engine. */
#ifndef TRIAGE_STORAGE_INT_H
#define TRIAGE_STORAGE_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "storage.h"

/* Milliseconds a connection waits for a lock before giving up. */
#define STORAGE__BUSY_TIMEOUT_MS 5000

/* Formats into err (if non-NULL). */
void storage__errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Returns Unix time in ms (CLOCK_REALTIME). */
int64_t storage__now_ms(void);

/* Returns a copy of s (NULL stays NULL). Aborts on OOM. */
char *storage__strdup(const char *s);

/* Returns zeroed memory. Aborts on OOM (the one policy: triage aborts on OOM). */
void *storage__calloc(size_t n, size_t size);

/* ---- the engine boundary ---- */

struct storage__db;   /* one connection (owned by one thread at a time) */
struct storage__stmt; /* a prepared statement and its current row */

/* storage__db_open() modes. */
enum storage__mode {
    STORAGE__READ,   /* the schema must be current (neither older nor newer) */
    STORAGE__WRITE,  /* migrates an older schema forward; the database must exist */
    STORAGE__CREATE, /* as WRITE, creating the database (file) when it does not exist */
};

/* storage__db_begin() kinds. */
enum storage__tx {
    STORAGE__TX_SNAPSHOT, /* reads that see one consistent snapshot */
    STORAGE__TX_WRITE,    /* a write transaction serialised against other writers' */
    STORAGE__TX_BATCH,    /* the writer thread's batch: atomic, needs no serialising */
};

/* A queued label (storage_outcome_submit): one allocation, strings after the struct. */
struct storage__outcome {
    const char *request_id, *backend, *source, *detail; /* detail may be NULL */
    double q;
    int64_t created_ms;
};

/* What an engine provides. Statements: bind indexes start at 1, columns at 0. */
struct storage__engine {
    const char *name; /* "sqlite", "postgresql" */
    struct storage__db *(*open)(const char *target, enum storage__mode mode, char *err,
                                size_t errlen);
    void (*close)(struct storage__db *db);
    int (*exec)(struct storage__db *db, const char *sql);
    int (*begin)(struct storage__db *db, enum storage__tx kind);
    const char *(*error)(struct storage__db *db);
    int (*gone)(struct storage__db *db);
    int64_t (*changes)(struct storage__db *db);
    struct storage__stmt *(*prepare)(struct storage__db *db, const char *sql);
    int (*param_count)(struct storage__stmt *st);
    void (*bind_null)(struct storage__stmt *st, int i);
    void (*bind_text)(struct storage__stmt *st, int i, const char *s);
    void (*bind_int64)(struct storage__stmt *st, int i, int64_t v);
    void (*bind_double)(struct storage__stmt *st, int i, double v);
    void (*bind_blob)(struct storage__stmt *st, int i, const void *p, size_t len);
    int (*step)(struct storage__stmt *st);
    int (*column_null)(struct storage__stmt *st, int i);
    int64_t (*column_int64)(struct storage__stmt *st, int i);
    double (*column_double)(struct storage__stmt *st, int i);
    const char *(*column_text)(struct storage__stmt *st, int i);
    const void *(*column_blob)(struct storage__stmt *st, int i, size_t *len);
    void (*reset)(struct storage__stmt *st);
    void (*finalize)(struct storage__stmt *st);
    /* Inserts the records in the caller's open transaction (prepared inserts, COPY). */
    int (*insert_records)(struct storage__db *db, struct storage_record *const *r, uint32_t n);
    /* Deletes up to limit rows of table (requests, feedback, outcomes) older than
     * cutoff_ms (started_ms or created_ms) in the caller's transaction; returns the
     * count or -EIO. */
    int (*delete_before)(struct storage__db *db, const char *table, int64_t cutoff_ms,
                         uint32_t limit);
};

/* Every engine starts its connection with this. */
struct storage__db {
    const struct storage__engine *e;
};

extern const struct storage__engine storage__sqlite;
extern const struct storage__engine storage__pg; /* only with TRIAGE_HAVE_POSTGRESQL */

/* Returns 1 when target names a PostgreSQL database (a postgresql:// or postgres:// URL). */
int storage__is_pg(const char *target);

/* Returns target fit for a message: a URL's password replaced by "***" (borrowed:
 * target itself, or a per-thread buffer valid until the next call). */
const char *storage__shown(const char *target);

/* Opens target with the engine its form names (see above). Returns NULL with err set
 * ("target: why"; a URL's password never appears in it) and errno ENOTCONN when the
 * server could not be reached (PostgreSQL away: worth a retry), else EIO. */
struct storage__db *storage__db_open(const char *target, enum storage__mode mode, char *err,
                                     size_t errlen);

/* Closes db and finalises nothing else: finalise its statements first. NULL is fine. */
static inline void
storage__db_close(struct storage__db *db)
{
    if (db)
        db->e->close(db);
}

/* Runs sql (one or more statements, no parameters, no rows). Returns 0 or -EIO. */
static inline int
storage__db_exec(struct storage__db *db, const char *sql)
{
    return db->e->exec(db, sql);
}

/* Starts a transaction of that kind. Returns 0 or -EIO. */
static inline int
storage__db_begin(struct storage__db *db, enum storage__tx kind)
{
    return db->e->begin(db, kind);
}

static inline int
storage__db_commit(struct storage__db *db)
{
    return db->e->exec(db, "COMMIT");
}

/* Rolls back; the latest error text is kept. */
void storage__db_rollback(struct storage__db *db);

/* The latest error's text, with the engine's code (borrowed, until the next call). */
static inline const char *
storage__db_error(struct storage__db *db)
{
    return db->e->error(db);
}

/* Returns 1 when the latest failure was the connection, not the statement: the
 * server went away (PostgreSQL), so the data is worth keeping for a retry. */
static inline int
storage__db_gone(struct storage__db *db)
{
    return db->e->gone(db);
}

/* Rows changed by the latest INSERT/UPDATE/DELETE step. */
static inline int64_t
storage__db_changes(struct storage__db *db)
{
    return db->e->changes(db);
}

/* Prepares sql. Returns NULL on error (storage__db_error says why). */
static inline struct storage__stmt *
storage__prepare(struct storage__db *db, const char *sql)
{
    return db->e->prepare(db, sql);
}

/* Every statement starts with the engine that made it. */
struct storage__stmt {
    const struct storage__engine *e;
};

static inline int
storage__param_count(struct storage__stmt *st)
{
    return st->e->param_count(st);
}

/* Binds borrow their data until the next step or reset. NULL text binds NULL;
 * storage__bind_real binds NULL for NaN and infinities, storage__bind_count for < 0. */
static inline void
storage__bind_null(struct storage__stmt *st, int i)
{
    st->e->bind_null(st, i);
}

static inline void
storage__bind_text(struct storage__stmt *st, int i, const char *s)
{
    if (s)
        st->e->bind_text(st, i, s);
    else
        st->e->bind_null(st, i);
}

static inline void
storage__bind_int64(struct storage__stmt *st, int i, int64_t v)
{
    st->e->bind_int64(st, i, v);
}

static inline void
storage__bind_double(struct storage__stmt *st, int i, double v)
{
    st->e->bind_double(st, i, v);
}

void storage__bind_real(struct storage__stmt *st, int i, double v);
void storage__bind_count(struct storage__stmt *st, int i, int64_t v);

static inline void
storage__bind_blob(struct storage__stmt *st, int i, const void *p, size_t len)
{
    st->e->bind_blob(st, i, p, len);
}

/* Runs the statement or moves to its next row. Returns 1 (a row), 0 (done), -EIO. */
static inline int
storage__step(struct storage__stmt *st)
{
    return st->e->step(st);
}

/* Columns of the current row. NULL reads as 0, 0.0, NULL text, no blob (as SQLite's
 * API does); a boolean reads as 0 or 1. Text and blobs are borrowed until the next
 * step, reset or finalize. */
static inline int
storage__column_null(struct storage__stmt *st, int i)
{
    return st->e->column_null(st, i);
}

static inline int64_t
storage__column_int64(struct storage__stmt *st, int i)
{
    return st->e->column_int64(st, i);
}

static inline double
storage__column_double(struct storage__stmt *st, int i)
{
    return st->e->column_double(st, i);
}

static inline const char *
storage__column_text(struct storage__stmt *st, int i)
{
    return st->e->column_text(st, i);
}

static inline const void *
storage__column_blob(struct storage__stmt *st, int i, size_t *len)
{
    return st->e->column_blob(st, i, len);
}

/* Makes the statement ready to run again and clears its bindings. */
static inline void
storage__reset(struct storage__stmt *st)
{
    st->e->reset(st);
}

/* Frees the statement. NULL is fine. */
static inline void
storage__finalize(struct storage__stmt *st)
{
    if (st)
        st->e->finalize(st);
}

/* Runs a one-row query with up to two text parameters (NULL = not bound); returns 1
 * (a row), 0 (none), -EIO. */
int storage__exists(struct storage__db *db, const char *sql, const char *a, const char *b);

#endif
