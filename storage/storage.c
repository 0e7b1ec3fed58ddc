/* storage.c - opens and migrates the outcome log and runs the batched writer thread. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "config.h"
#include "storage.h"
#include "storage-int.h"

/* Out of memory aborts, here as everywhere in triage. */
void *
storage__calloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fputs("triage: out of memory\n", stderr);
        abort();
    }
    return p;
}

char *
storage__strdup(const char *s)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d) {
        fputs("triage: out of memory\n", stderr);
        abort();
    }
    return d;
}

void
storage__errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int64_t
storage__now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the engine boundary ---- */

/* Longest wait between reconnect attempts while the database is away. */
#define STORAGE__RECONNECT_MAX_MS 5000

int
storage__is_pg(const char *target)
{
    return target && (!strncmp(target, "postgresql://", 13) || !strncmp(target, "postgres://", 11));
}

const char *
storage__shown(const char *target)
{
    static _Thread_local char buf[512];

    if (!storage__is_pg(target))
        return target;
    /* scheme://user:password@host... -> scheme://user:***@host... */
    const char *auth = strstr(target, "://") + 3, *at = NULL;
    for (const char *p = auth; *p && *p != '/' && *p != '?'; p++) /* the authority's last @ */
        if (*p == '@')
            at = p;
    const char *colon = strchr(auth, ':');
    if (!at || !colon || colon > at)
        return target;
    snprintf(buf, sizeof(buf), "%.*s:***%s", (int)(colon - target), target, at);
    return buf;
}

const char *
storage_target_shown(const char *target)
{
    return storage__shown(target);
}

int
storage_target_is_pg(const char *target)
{
    return storage__is_pg(target);
}

struct storage__db *
storage__db_open(const char *target, enum storage__mode mode, char *err, size_t errlen)
{
    if (!target || !*target) {
        storage__errf(err, errlen, "storage: no database path or URL");
        return NULL;
    }
    if (!storage__is_pg(target))
        return storage__sqlite.open(target, mode, err, errlen); /* sets errno */
#if TRIAGE_HAVE_POSTGRESQL
    return storage__pg.open(target, mode, err, errlen); /* sets errno */
#else
    storage__errf(err, errlen, "%s: %s", storage__shown(target), STORAGE_NO_POSTGRESQL);
    errno = EIO;
    return NULL;
#endif
}

void
storage__db_rollback(struct storage__db *db)
{
    /* Engines note an error only when a call fails: the failure that made us roll
     * back stays the one reported, unless the ROLLBACK itself fails. */
    db->e->exec(db, "ROLLBACK");
}

void
storage__bind_real(struct storage__stmt *st, int i, double v)
{
    if (isfinite(v))
        st->e->bind_double(st, i, v);
    else
        st->e->bind_null(st, i);
}

void
storage__bind_count(struct storage__stmt *st, int i, int64_t v)
{
    if (v >= 0)
        st->e->bind_int64(st, i, v);
    else
        st->e->bind_null(st, i);
}

/* ---- the writer ---- */

#define outcome storage__outcome

struct storage {
    char *path;
    struct storage_options opt;
    struct storage__db *db; /* the writer thread's connection; NULL while away */
    struct storage__stmt *insert_outcome;
    int64_t reconnect_ms;   /* CLOCK_MONOTONIC ms of the next attempt while away */
    uint32_t reconnect_wait; /* ms, doubling up to STORAGE__RECONNECT_MAX_MS */

    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t wake;  /* to the writer: work, flush or stop */
    pthread_cond_t done;  /* from the writer: a batch finished */
    struct storage_record **ring;
    uint32_t head, count;
    struct storage_record **batch; /* being written; still visible to storage_feedback */
    uint32_t batch_n;
    int stop;
    int gave_up;  /* stopping with the database away: what is left is counted failed */
    int flushers; /* threads waiting in storage_flush */
    struct storage_counters c;
    /* after the records' fields, which storage_submit touches, to keep their layout */
    struct outcome **oring; /* outcomes, a ring of queue_size like the records' */
    uint32_t ohead, ocount;
    struct outcome **obatch; /* being written, up to batch_size */
    uint32_t obatch_n;

    pthread_mutex_t fb_lock; /* serialises storage_feedback on fb_db */
    struct storage__db *fb_db;
};

/* Last write wins: a judge may grade again, a grader may correct itself. */
static const char insert_outcome_sql[] =
    "INSERT INTO outcomes (request_id, backend, source, q, detail, created_ms)"
    " VALUES (?,?,?,?,?,?) ON CONFLICT (request_id, backend, source) DO UPDATE"
    " SET q = excluded.q, detail = excluded.detail, created_ms = excluded.created_ms";

/* Inserts or overwrites o. Returns 0 or -EIO. */
static int
insert_outcome(struct storage *s, const struct outcome *o)
{
    struct storage__stmt *st = s->insert_outcome;

    if (!st && !(st = s->insert_outcome = storage__prepare(s->db, insert_outcome_sql)))
        return -EIO;
    storage__bind_text(st, 1, o->request_id);
    storage__bind_text(st, 2, o->backend);
    storage__bind_text(st, 3, o->source);
    storage__bind_double(st, 4, o->q);
    storage__bind_text(st, 5, o->detail);
    storage__bind_int64(st, 6, o->created_ms);
    int rc = storage__step(st);
    storage__reset(st);
    return rc < 0 ? -EIO : 0;
}

/* Drops the writer's connection (it went away); the next batch reconnects. */
static void
disconnect(struct storage *s)
{
    storage__finalize(s->insert_outcome);
    s->insert_outcome = NULL;
    storage__db_close(s->db);
    s->db = NULL;
}

/* The next reconnect waits one more backoff step (250 ms doubling to
 * STORAGE__RECONNECT_MAX_MS); a commit resets it. */
static void
back_off(struct storage *s)
{
    s->reconnect_wait = s->reconnect_wait ? s->reconnect_wait * 2 : 250;
    if (s->reconnect_wait > STORAGE__RECONNECT_MAX_MS)
        s->reconnect_wait = STORAGE__RECONNECT_MAX_MS;
    s->reconnect_ms = mono_ms() + s->reconnect_wait;
}

/* Connects the writer when it is away, at most once per backoff step. Returns 0
 * connected, -EIO with why. */
static int
connect_writer(struct storage *s, char *why)
{
    char e[512];

    if (s->db)
        return 0;
    if (mono_ms() < s->reconnect_ms) {
        snprintf(why, STORAGE_ERROR_MAX, "%s", s->c.last_error);
        return -EIO;
    }
    /* CREATE: a PostgreSQL database may have been away at storage_open(), so its schema
     * is made by the first connection that reaches it (under the advisory lock:
     * replicas migrate once); a SQLite file deleted under the daemon is made again. */
    s->db = storage__db_open(s->path, STORAGE__CREATE, e, sizeof(e));
    if (s->db)
        return 0;
    back_off(s);
    snprintf(why, STORAGE_ERROR_MAX, "%.*s", STORAGE_ERROR_MAX - 1, e);
    return -EIO;
}

/* Writes the records b[0..n) and the outcomes o[0..no) in one transaction. Returns
 * 0, -EIO (rolled back) with the error in why (STORAGE_ERROR_MAX bytes), or -ENOTCONN
 * when the database is away (the batch is worth keeping: nothing was wrong with it). */
static int
write_batch(struct storage *s, struct storage_record **b, uint32_t n, struct outcome **o,
            uint32_t no, char *why)
{
    /* A SQLite file deleted or replaced since the last batch: its rows go to the file
     * now at the path, not to the one only this connection still sees. */
    if (s->db && storage__db_gone(s->db))
        disconnect(s);
    if (connect_writer(s, why) < 0)
        return -ENOTCONN;
    if (storage__db_begin(s->db, STORAGE__TX_BATCH) < 0)
        goto fail;
    if (n && s->db->e->insert_records(s->db, b, n) < 0)
        goto fail;
    for (uint32_t i = 0; i < no; i++)
        if (insert_outcome(s, o[i]) < 0)
            goto fail;
    if (storage__db_commit(s->db) < 0)
        goto fail;
    s->reconnect_wait = 0;
    return 0;
fail:
    snprintf(why, STORAGE_ERROR_MAX, "%s", storage__db_error(s->db));
    storage__db_rollback(s->db);
    if (storage__db_gone(s->db)) {
        /* Full, locked, read-only, gone: nothing is wrong with the batch; it waits for
         * the database with the reconnect's backoff. */
        disconnect(s);
        back_off(s);
        return -ENOTCONN;
    }
    return -EIO;
}

/* Counts a failed transaction and keeps its error. Called with s->lock held. */
static void
note_failure(struct storage *s, const char *why)
{
    s->c.write_errors++;
    s->c.degraded = 1;
    s->c.last_error_ms = mono_ms();
    snprintf(s->c.last_error, sizeof(s->c.last_error), "%s", why);
}

/* Waits on cond until the monotonic deadline (ms). Called with s->lock held. */
static void
wait_until(struct storage *s, pthread_cond_t *cond, int64_t deadline_ms)
{
    struct timespec ts = {.tv_sec = deadline_ms / 1000, .tv_nsec = deadline_ms % 1000 * 1000000};

    pthread_cond_timedwait(cond, &s->lock, &ts);
}

/* One retention transaction: up to retention_batch old requests (and as many old
 * feedback and outcome rows).
 * Returns the number of rows deleted, or -EIO with the error in why
 * (STORAGE_ERROR_MAX bytes). Runs on the writer thread. */
static int
retention_step(struct storage *s, char *why)
{
    static const char *const tables[] = {"requests", "feedback", "outcomes"};
    int64_t cutoff = storage__now_ms() - (int64_t)s->opt.retention_days * 86400000;
    int n = 0;

    if (connect_writer(s, why) < 0)
        return -EIO;
    if (storage__db_begin(s->db, STORAGE__TX_BATCH) < 0)
        goto fail;
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        int d = s->db->e->delete_before(s->db, tables[i], cutoff, s->opt.retention_batch);
        if (d < 0)
            goto fail;
        if (d > n)
            n = d; /* keep going while any table has a full batch */
    }
    if (storage__db_commit(s->db) < 0)
        goto fail;
    return n;
fail:
    snprintf(why, STORAGE_ERROR_MAX, "%s", storage__db_error(s->db));
    storage__db_rollback(s->db);
    if (storage__db_gone(s->db))
        disconnect(s);
    return -EIO;
}

static void *
writer_main(void *arg)
{
    struct storage *s = arg;
    char why[STORAGE_ERROR_MAX]; /* the failed transaction's error, until note_failure */
    int64_t next_retention = mono_ms();
    int64_t next_flush = mono_ms() + s->opt.flush_interval_ms;
    uint32_t cap = s->opt.queue_size, batch = s->opt.batch_size;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        int64_t now = mono_ms();
        int retention_due = s->opt.retention_days && now >= next_retention;
        int pending = s->count || s->ocount;

        if (s->count < batch && s->ocount < batch && !s->stop && !(s->flushers && pending) &&
            !retention_due && now < next_flush) {
            int64_t deadline = next_flush;
            if (s->opt.retention_days && next_retention < deadline)
                deadline = next_retention;
            wait_until(s, &s->wake, deadline);
            continue;
        }
        if (!pending && s->stop)
            break;

        if (pending) {
            /* Up to a batch of each kind, in one transaction. */
            uint32_t n = s->count < batch ? s->count : batch;
            uint32_t no = s->ocount < batch ? s->ocount : batch;
            for (uint32_t i = 0; i < n; i++) {
                s->batch[i] = s->ring[s->head];
                s->ring[s->head] = NULL;
                s->head = (s->head + 1) % cap;
            }
            for (uint32_t i = 0; i < no; i++) {
                s->obatch[i] = s->oring[s->ohead];
                s->oring[s->ohead] = NULL;
                s->ohead = (s->ohead + 1) % cap;
            }
            s->count -= n;
            s->ocount -= no;
            s->batch_n = n;
            s->obatch_n = no;

            int ok = 0, attempt = 0;
            for (;;) {
                pthread_mutex_unlock(&s->lock);
                int rc = s->gave_up ? -ENOTCONN : write_batch(s, s->batch, n, s->obatch, no, why);
                pthread_mutex_lock(&s->lock);
                if (rc == 0) {
                    ok = 1;
                    break;
                }
                if (s->gave_up)
                    break;
                note_failure(s, why);
                if (rc == -ENOTCONN) {
                    /* The database is away: nothing is wrong with the batch, so it
                     * waits (and the queue behind it fills; only a full queue drops)
                     * until a reconnect succeeds. A stop tries once more at once. */
                    if (s->stop) {
                        if (attempt++) {
                            s->gave_up = 1; /* the rest fail at once: stop does not wait */
                            break;
                        }
                        s->reconnect_ms = 0;
                        continue;
                    }
                    while (!s->stop && mono_ms() < s->reconnect_ms)
                        wait_until(s, &s->wake, s->reconnect_ms);
                    continue;
                }
                if (++attempt >= STORAGE_WRITE_ATTEMPTS)
                    break;
                /* Back off 250 ms, 500 ms, ... unless we are stopping. */
                int64_t until = mono_ms() + (250 << (attempt - 1));
                while (!s->stop && mono_ms() < until)
                    wait_until(s, &s->wake, until);
            }
            if (ok) {
                s->c.written += n;
                s->c.outcomes_written += no;
                s->c.degraded = 0;
            } else {
                s->c.failed += n;
                s->c.outcomes_failed += no;
            }
            /* Free outside the lock would be nicer, but the batch must stay visible
             * to storage_feedback until the commit is done, which it now is. */
            struct storage_record **b = s->batch;
            s->batch_n = 0;
            s->obatch_n = 0;
            pthread_mutex_unlock(&s->lock);
            for (uint32_t i = 0; i < n; i++) {
                storage_record_free(b[i]);
                b[i] = NULL;
            }
            for (uint32_t i = 0; i < no; i++) {
                free(s->obatch[i]);
                s->obatch[i] = NULL;
            }
            pthread_mutex_lock(&s->lock);
            pthread_cond_broadcast(&s->done);
        }
        next_flush = mono_ms() + s->opt.flush_interval_ms;

        if (retention_due && !s->stop) {
            pthread_mutex_unlock(&s->lock);
            int n = retention_step(s, why);
            pthread_mutex_lock(&s->lock);
            if (n > 0)
                s->c.retention_deleted += (uint64_t)n;
            if (n < 0)
                note_failure(s, why);
            /* A full batch means more old rows: continue after the next write. */
            next_retention =
                mono_ms() +
                (n == (int)s->opt.retention_batch ? 0 : (int64_t)s->opt.retention_interval_ms);
        }
    }
    pthread_cond_broadcast(&s->done);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- public ---- */

struct storage *
storage_open(const char *path, const struct storage_options *opt, char *err, size_t errlen)
{
    struct storage *s = storage__calloc(1, sizeof(*s));
    pthread_condattr_t ca;

    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->fb_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wake, &ca);
    pthread_cond_init(&s->done, &ca);
    pthread_condattr_destroy(&ca);

    if (!path || !*path) {
        storage__errf(err, errlen, "storage: no database path");
        goto fail;
    }
    s->path = storage__strdup(path);
    if (opt)
        s->opt = *opt;
    if (!s->opt.queue_size)
        s->opt.queue_size = 65536;
    if (!s->opt.batch_size)
        s->opt.batch_size = 512;
    if (s->opt.batch_size > s->opt.queue_size)
        s->opt.batch_size = s->opt.queue_size;
    if (!s->opt.flush_interval_ms)
        s->opt.flush_interval_ms = 200;
    if (!s->opt.retention_interval_ms)
        s->opt.retention_interval_ms = 300000;
    if (!s->opt.retention_batch)
        s->opt.retention_batch = 1000;
    s->ring = storage__calloc(s->opt.queue_size, sizeof(*s->ring));
    s->batch = storage__calloc(s->opt.batch_size, sizeof(*s->batch));
    s->oring = storage__calloc(s->opt.queue_size, sizeof(*s->oring));
    s->obatch = storage__calloc(s->opt.batch_size, sizeof(*s->obatch));

    s->db = storage__db_open(path, STORAGE__CREATE, err, errlen);
    struct stat sb;
    if (!s->db && errno == ENOTCONN && (storage__is_pg(path) || stat(path, &sb) == 0)) {
        /* PostgreSQL is away, or the SQLite file is there but unusable now (locked,
         * corrupt, not a database, on a full or read-only disk): start anyway (routing
         * needs no database). Records queue and the writer connects with its backoff,
         * as after a lost connection. A path that cannot be made (no such directory)
         * is a mistake to say at once. */
        s->c.degraded = 1;
        s->c.last_error_ms = mono_ms();
        snprintf(s->c.last_error, sizeof(s->c.last_error), "%s", err ? err : "unreachable");
        s->reconnect_wait = 250;
        s->reconnect_ms = mono_ms() + s->reconnect_wait;
    } else if (!s->db) {
        goto fail;
    }
    if (pthread_create(&s->thread, NULL, writer_main, s) != 0) {
        storage__errf(err, errlen, "storage: cannot start the writer thread");
        goto fail;
    }
    s->thread_started = 1;
    return s;
fail:
    storage_close(s);
    return NULL;
}

int
storage_submit(struct storage *s, struct storage_record *rec)
{
    if (!s || !rec) {
        storage_record_free(rec);
        return -EINVAL;
    }
    pthread_mutex_lock(&s->lock);
    if (s->count >= s->opt.queue_size || s->stop) {
        /* Drop newest: queued records are older and just as valuable; counted. */
        s->c.dropped++;
        pthread_mutex_unlock(&s->lock);
        storage_record_free(rec);
        return -EAGAIN;
    }
    s->ring[(s->head + s->count) % s->opt.queue_size] = rec;
    s->count++;
    s->c.queued++;
    if (s->count == s->opt.batch_size)
        pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

void
storage_get_counters(struct storage *s, struct storage_counters *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->c;
    out->depth = s->count + s->batch_n;
    out->outcomes_depth = s->ocount + s->obatch_n;
    pthread_mutex_unlock(&s->lock);
}

int
storage_flush(struct storage *s, uint32_t timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    int rc = 0;

    pthread_mutex_lock(&s->lock);
    uint64_t target = s->c.queued, otarget = s->c.outcomes_queued;
    s->flushers++;
    pthread_cond_signal(&s->wake);
    while ((s->c.written + s->c.failed < target ||
            s->c.outcomes_written + s->c.outcomes_failed < otarget) &&
           s->thread_started) {
        if (timeout_ms && mono_ms() >= deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        if (timeout_ms)
            wait_until(s, &s->done, deadline);
        else
            pthread_cond_wait(&s->done, &s->lock);
    }
    s->flushers--;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void
storage_close(struct storage *s)
{
    if (!s)
        return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->lock);
        s->stop = 1;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->thread, NULL);
    }
    /* Only reached with records left if the thread never started. */
    for (uint32_t i = 0; s->ring && i < s->count; i++)
        storage_record_free(s->ring[(s->head + i) % s->opt.queue_size]);
    for (uint32_t i = 0; s->oring && i < s->ocount; i++)
        free(s->oring[(s->ohead + i) % s->opt.queue_size]);
    disconnect(s);
    storage__db_close(s->fb_db);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->fb_lock);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->done);
    free(s->ring);
    free(s->batch);
    free(s->oring);
    free(s->obatch);
    free(s->path);
    free(s);
}

const char *
storage_path(const struct storage *s)
{
    return s->path;
}

struct storage_record *
storage_record_new(void)
{
    struct storage_record *r = storage__calloc(1, sizeof(*r));

    r->score = NAN;
    r->threshold = NAN;
    r->latency_ms = NAN;
    r->ttfb_ms = NAN;
    r->escalation = NAN;
    r->tokens_in = -1;
    r->tokens_out = -1;
    return r;
}

void
storage_record_free(struct storage_record *rec)
{
    if (!rec)
        return;
    free(rec->request_id);
    free(rec->kind);
    free(rec->parent_id);
    free(rec->key_id);
    free(rec->requested_model);
    free(rec->backend);
    free(rec->route_reason);
    free(rec->model_version);
    free(rec->prompt_hash);
    free(rec->prompt);
    free(rec->features);
    free(rec->error_kind);
    free(rec->finish_reason);
    free(rec->failed_attempts);
    free(rec->answer);
    free(rec);
}

/* ---- outcomes ---- */

/* Returns the length of s cut to at most max bytes without splitting a UTF-8 sequence. */
static size_t
utf8_cut(const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n <= max)
        return n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) /* s[n] continues a character */
        n--;
    return n;
}

int
storage_outcome_submit(struct storage *s, const char *request_id, const char *backend,
                       const char *source, double q, const char *detail)
{
    size_t lid, lbe, lsrc, ldet = 0;

    if (!s || !request_id || !backend || !source || !(q >= 0.0 && q <= 1.0))
        return -EINVAL;
    lid = strlen(request_id);
    lbe = strlen(backend);
    if (!lid || lid > 256 || !lbe || lbe > 256)
        return -EINVAL;
    if (strcmp(source, "judge") && strcmp(source, "feedback") && strcmp(source, "offline"))
        return -EINVAL;
    lsrc = strlen(source);
    if (detail)
        ldet = utf8_cut(detail, STORAGE_DETAIL_MAX);

    /* One allocation: the struct, then the four strings. */
    struct outcome *o = storage__calloc(1, sizeof(*o) + lid + lbe + lsrc + ldet + 4);
    char *p = (char *)(o + 1);
    o->request_id = memcpy(p, request_id, lid);
    p += lid + 1;
    o->backend = memcpy(p, backend, lbe);
    p += lbe + 1;
    o->source = memcpy(p, source, lsrc);
    p += lsrc + 1;
    o->detail = detail ? memcpy(p, detail, ldet) : NULL;
    o->q = q;
    o->created_ms = storage__now_ms();

    pthread_mutex_lock(&s->lock);
    if (s->ocount >= s->opt.queue_size || s->stop) {
        s->c.outcomes_dropped++; /* drop newest, as for records */
        pthread_mutex_unlock(&s->lock);
        free(o);
        return -EAGAIN;
    }
    s->oring[(s->ohead + s->ocount) % s->opt.queue_size] = o;
    s->ocount++;
    s->c.outcomes_queued++;
    if (s->ocount == s->opt.batch_size)
        pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

/* ---- feedback ---- */

/* Returns 1 if a record with this id is queued or being written. */
static int
pending_has(struct storage *s, const char *request_id)
{
    int found = 0;

    pthread_mutex_lock(&s->lock);
    for (uint32_t i = 0; i < s->count && !found; i++) {
        const struct storage_record *r = s->ring[(s->head + i) % s->opt.queue_size];
        found = r->request_id && !strcmp(r->request_id, request_id);
    }
    for (uint32_t i = 0; i < s->batch_n && !found; i++)
        found = s->batch[i]->request_id && !strcmp(s->batch[i]->request_id, request_id);
    pthread_mutex_unlock(&s->lock);
    return found;
}

int
storage__exists(struct storage__db *db, const char *sql, const char *a, const char *b)
{
    struct storage__stmt *st = storage__prepare(db, sql);

    if (!st)
        return -EIO;
    storage__bind_text(st, 1, a);
    if (b)
        storage__bind_text(st, 2, b);
    int rc = storage__step(st);
    storage__finalize(st);
    return rc;
}

/* storage_feedback() and storage_feedback_early(): early says an unknown id is stored
 * (returning 2) rather than refused. */
static int
feedback(struct storage *s, const char *request_id, double score, const char *label,
         const char *source, int early, char *err, size_t errlen)
{
    struct storage__stmt *st = NULL;
    int rc = -EIO;

    if (!s || !request_id || !*request_id || strlen(request_id) > 256) {
        storage__errf(err, errlen, "request_id must be a non-empty string (at most 256 bytes)");
        return -EINVAL;
    }
    if (!source || !*source)
        source = "client";
    if (strlen(source) > 64) {
        storage__errf(err, errlen, "source must be at most 64 bytes");
        return -EINVAL;
    }
    if (label) {
        if (!isnan(score)) {
            storage__errf(err, errlen, "give either a score or a label, not both");
            return -EINVAL;
        }
        if (!strcmp(label, "good"))
            score = 1.0;
        else if (!strcmp(label, "bad"))
            score = 0.0;
        else {
            storage__errf(err, errlen, "label must be \"good\" or \"bad\"");
            return -EINVAL;
        }
    } else if (!(score >= 0.0 && score <= 1.0)) {
        storage__errf(err, errlen, "score must be a number in [0,1] (or give a label)");
        return -EINVAL;
    }

    /* Pending first, then the database: a record leaves the queue only after its
     * commit, so one of the two checks sees it (see writer_main). */
    int known = pending_has(s, request_id);

    pthread_mutex_lock(&s->fb_lock);
    if (s->fb_db && storage__db_gone(s->fb_db)) { /* the file was deleted or replaced */
        storage__db_close(s->fb_db);
        s->fb_db = NULL;
    }
    if (!s->fb_db) {
        char e[512];
        s->fb_db = storage__db_open(s->path, STORAGE__CREATE, e, sizeof(e));
        if (!s->fb_db) {
            if (errno == ENOTCONN)
                rc = -ENOTCONN;
            storage__errf(err, errlen, "feedback: %s", e);
            goto fail;
        }
    }
    if (!known) {
        int r = storage__exists(s->fb_db, "SELECT 1 FROM requests WHERE request_id = ? LIMIT 1",
                                request_id, NULL);
        if (r < 0)
            goto dberr;
        if (r == 0 && !early) {
            storage__errf(err, errlen, "unknown request id");
            rc = -ENOENT;
            goto fail;
        }
        known = r;
    }
    int existed = storage__exists(
        s->fb_db, "SELECT 1 FROM feedback WHERE request_id = ? AND source = ?", request_id, source);
    if (existed < 0)
        goto dberr;
    st = storage__prepare(s->fb_db,
                          "INSERT INTO feedback (request_id, source, score, label, created_ms)"
                          " VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_id, source) DO UPDATE"
                          " SET score = excluded.score, label = excluded.label,"
                          " created_ms = excluded.created_ms");
    if (!st)
        goto dberr;
    storage__bind_text(st, 1, request_id);
    storage__bind_text(st, 2, source);
    storage__bind_double(st, 3, score);
    storage__bind_text(st, 4, label);
    storage__bind_int64(st, 5, storage__now_ms());
    if (storage__step(st) < 0)
        goto dberr;
    rc = !known ? 2 : existed ? 1 : 0;
    goto fail;
dberr:
    storage__errf(err, errlen, "feedback: %s", storage__db_error(s->fb_db));
    if (storage__db_gone(s->fb_db)) {
        rc = -ENOTCONN;
        storage__finalize(st);
        st = NULL;
        storage__db_close(s->fb_db); /* reconnect on the next call */
        s->fb_db = NULL;
    }
fail:
    storage__finalize(st);
    pthread_mutex_unlock(&s->fb_lock);
    return rc;
}

int
storage_feedback(struct storage *s, const char *request_id, double score, const char *label,
                 const char *source, char *err, size_t errlen)
{
    return feedback(s, request_id, score, label, source, 0, err, errlen);
}

int
storage_feedback_early(struct storage *s, const char *request_id, double score,
                       const char *label, const char *source, char *err, size_t errlen)
{
    return feedback(s, request_id, score, label, source, 1, err, errlen);
}
