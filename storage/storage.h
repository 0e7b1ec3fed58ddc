/* storage.h - the SQLite outcome log: one row per request, feedback, stats and training reads.
 *
 * Writes go through a bounded queue to a dedicated writer thread that commits in
 * batched transactions, so the request path never waits on the disk. Reads
 * (feedback lookups, stats, exports) open their own connection and are meant to
 * run off the event loop (a thread-pool job or the CLI).
 *
 * Loss policy (no silent loss):
 *  - Queue full (disk slower than traffic): the NEW record is dropped, counted in
 *    counters.dropped, and storage_submit returns -EAGAIN. Queued records are kept.
 *  - The database unusable (full or read-only filesystem, I/O error, locked past the
 *    busy timeout, a SQLite file deleted, replaced or not a database, PostgreSQL
 *    away): the transaction is rolled back, counters.write_errors is bumped, degraded
 *    is set, the connection is dropped and the same batch waits, reconnecting with
 *    backoff (250 ms doubling to 5 s), until it commits; meanwhile the queue fills
 *    and only a full queue drops. A deleted SQLite file is made again at its path.
 *  - Any other write error (the batch itself is refused): the same batch is retried
 *    (STORAGE_WRITE_ATTEMPTS attempts in all), then dropped and counted in
 *    counters.failed. The daemon keeps serving; degraded clears at the next
 *    successful commit, while last_error and
 *    last_error_ms keep the latest failure for whoever reports it (storage itself
 *    logs nothing: the daemon and the CLI decide what to say).
 *  - storage_close() drains the queue: every record accepted by storage_submit is
 *    committed (or counted as failed: with the database unusable it tries once more,
 *    then gives up) before it returns.
 *  - kill -9 loses only what was still queued in memory: at most flush_interval_ms of
 *    traffic (one batch in normal operation). Committed rows survive (WAL,
 *    synchronous=NORMAL; an OS crash or power loss may lose the last commits).
 *
 * Feedback is stored in its own table (no foreign key) so it can arrive while the
 * request's row is still queued; a repeat for the same (request id, source)
 * OVERWRITES the earlier one (last write wins).
 *
 * Outcomes (storage_outcome_submit) are labels q in [0,1] of one backend's answer to
 * one client request's prompt, from a source (judge, feedback, offline). They take
 * the records' path: a queue of their own (queue_size entries) to the same writer
 * thread and the same transactions, with the same loss policy, counted apart
 * (counters.outcomes_*). A repeat for the same (request id, backend, source)
 * OVERWRITES the earlier one. */
#ifndef TRIAGE_STORAGE_H
#define TRIAGE_STORAGE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

/* The schema version this build writes; older databases are migrated forward at open. */
#define STORAGE_SCHEMA_VERSION 11

/* Attempts per batch before a write error drops it (counted in counters.failed). */
#define STORAGE_WRITE_ATTEMPTS 3

/* Size of counters.last_error, terminator included; longer texts are cut. */
#define STORAGE_ERROR_MAX 160

/* Longest outcome detail kept, in bytes; a longer one is cut at a UTF-8 character. */
#define STORAGE_DETAIL_MAX 4096

/* One routed or passed-through request and what came of it, or one call the daemon
 * made on its own to learn (kind "shadow" or "judge": logged and costed like a real
 * one, left out of the client's stats). Strings are owned by the record and freed by
 * storage_record_free(); NULL means unknown. */
struct storage_record {
    char *request_id;
    char *kind;               /* NULL or "client": a client request; "shadow": the client
                               * request's prompt sent to another backend; "judge": a
                               * backend grading an answer; "cascade": the fast call of an
                               * escalated request (policy cascade). Other values count as
                               * client */
    char *parent_id;          /* shadow/judge/cascade: the request_id of the client request
                               * whose prompt they answered or graded; NULL otherwise */
    int64_t started_ms;       /* Unix time, ms */
    int64_t finished_ms;
    char *key_id;             /* client key name, never the key */
    char *requested_model;    /* what the client asked for */
    char *backend;            /* the backend that answered (after any fallback) */
    char *route_reason;       /* "passthrough", "threshold", "tiers", "fallback", ... */
    double score;             /* NaN when not routed */
    double threshold;         /* NaN when not routed */
    char *model_version;      /* predictor model that decided, NULL when not routed */
    uint64_t features_digest;
    char *prompt_hash;        /* hex digest of the messages, per store_prompts */
    char *prompt;             /* messages as JSON, only with store_prompts = full */
    void *features;           /* the request's feature vector (features_blob_encode), only
                               * with store_prompts = features; features_len bytes */
    size_t features_len;
    int status;               /* HTTP status returned to the client */
    char *error_kind;         /* NULL on success */
    double latency_ms;
    double ttfb_ms;           /* NaN when no byte came back */
    int64_t tokens_in;        /* -1 when unknown */
    int64_t tokens_out;
    char *finish_reason;
    double cost_usd;
    int stream;               /* 1 for SSE responses */
    char *failed_attempts;    /* attempts retried or fallen back from before the answer:
                               * "backend kind" pairs joined by ","; NULL: none */
    void *answer;             /* the cascade's fast answer as its escalation model reads it
                               * (features_answer_blob_encode: signals, and hashed words
                               * with store_prompts = features or full), on the row of
                               * the call that wrote it; answer_len bytes; NULL: none */
    size_t answer_len;
    double escalation;        /* that answer's escalation score (router_escalation_score);
                               * NaN: none */
};

/* Zero in any field means its default (shown in brackets). */
struct storage_options {
    uint32_t queue_size;        /* records held before new ones are dropped and counted [65536] */
    uint32_t batch_size;        /* records per transaction [512] */
    uint32_t flush_interval_ms; /* longest a queued record waits [200] */
    uint32_t retention_days;    /* 0 = keep forever */
    uint32_t retention_interval_ms; /* pause between retention passes [300000] */
    uint32_t retention_batch;   /* rows deleted per retention transaction [1000] */
};

struct storage_counters {
    uint64_t queued;   /* accepted by storage_submit */
    uint64_t written;  /* committed */
    uint64_t dropped;  /* refused because the queue was full */
    uint64_t failed;   /* lost to write errors (disk full, read-only) */
    uint64_t depth;    /* waiting now (queued and in the batch being written) */
    int degraded;      /* 1 while the last write failed */
    uint64_t write_errors; /* failed transactions, retries included */
    uint64_t retention_deleted; /* rows removed by retention */
    uint64_t outcomes_queued;   /* accepted by storage_outcome_submit */
    uint64_t outcomes_written;  /* committed (an overwrite counts as one) */
    uint64_t outcomes_dropped;  /* refused because the outcome queue was full */
    uint64_t outcomes_failed;   /* lost to write errors */
    uint64_t outcomes_depth;    /* waiting now (queued and in the batch being written) */
    int64_t last_error_ms;  /* CLOCK_MONOTONIC ms of the latest failed transaction (batch or
                             * retention); 0 = none since storage_open. Kept after a success */
    char last_error[STORAGE_ERROR_MAX]; /* SQLite's text for it and the extended result
                                         * code, e.g. "database or disk is full (sqlite
                                         * error 13)"; "" = none */
};

struct storage;

/* Opens (creating or migrating) the database and starts the writer thread.
 * Refuses a database from a newer schema version. Returns NULL with err set. A
 * PostgreSQL server that is away, or a SQLite file that is there but unusable now
 * (corrupt, locked, full disk), still opens: degraded, last_error says why, records
 * queue and the writer connects with its backoff.
 * path may be a "file:" URI (e.g. "file:x.db?mode=ro"). opt may be NULL. */
struct storage *storage_open(const char *path, const struct storage_options *opt, char *err,
                             size_t errlen);

/* Queues rec for writing; takes ownership in every case. Never blocks on the disk
 * (only on a short mutex). Returns 0, or -EAGAIN when the queue is full (the record
 * is dropped and counted), or -EINVAL for NULL arguments (rec freed). */
int storage_submit(struct storage *s, struct storage_record *rec);

/* Copies the writer's counters, last error included, into out. Thread-safe. */
void storage_get_counters(struct storage *s, struct storage_counters *out);

/* Blocks until everything submitted before the call is committed or failed, or
 * timeout_ms passes (0 = wait forever). Returns 0 or -ETIMEDOUT. Not for the event loop. */
int storage_flush(struct storage *s, uint32_t timeout_ms);

/* Writes everything queued, stops the writer and closes the database. NULL is fine. */
void storage_close(struct storage *s);

/* Returns the database path given to storage_open (borrowed, lives as long as s). */
const char *storage_path(const struct storage *s);

/* Returns target (a database path or postgresql:// URL) fit for a log line: a URL's
 * password shown as ***. Borrowed: target itself, or a per-thread buffer valid until the
 * thread's next call. */
const char *storage_target_shown(const char *target);

/* Returns 1 when target is a postgresql:// (postgres://) URL, not a SQLite file. */
int storage_target_is_pg(const char *target);

/* Why a postgresql:// target is refused by a build without libpq (meson option
 * postgresql: auto builds the engine when libpq-dev is there). */
#define STORAGE_NO_POSTGRESQL                                                               \
    "this triage was built without PostgreSQL support; rebuild with libpq-dev installed "  \
    "(meson setup -Dpostgresql=enabled) or use a SQLite file ([storage] path, --db FILE)"

/* Returns a new zeroed record with score/threshold/ttfb/escalation NaN and tokens -1.
 * Aborts on OOM. */
struct storage_record *storage_record_new(void);

/* Frees a record and its strings. NULL is fine. */
void storage_record_free(struct storage_record *rec);

/* ---- outcomes (the daemon's judge, offline graders; call from any thread) ---- */

/* Queues a label: q in [0,1] for backend's answer to the prompt of the CLIENT request
 * request_id, from source "judge", "feedback" or "offline". detail (NULL = none) is
 * free text such as the judge's version and rating, cut at STORAGE_DETAIL_MAX bytes.
 * Borrows every string (copies them). Never blocks on the disk. A repeat for the same
 * (request_id, backend, source) overwrites the earlier one when written (last write
 * wins). Returns 0; -EAGAIN when the outcome queue is full (dropped and counted in
 * counters.outcomes_dropped); -EINVAL for a NULL s, an empty or > 256-byte
 * request_id or backend, another source, or q not a number in [0,1]. Note: /v1/feedback
 * (storage_feedback) need not be copied here: readers count it as the served
 * backend's "feedback" outcome already. */
int storage_outcome_submit(struct storage *s, const char *request_id, const char *backend,
                           const char *source, double q, const char *detail);

/* ---- feedback (POST /v1/feedback; call off the event loop) ---- */

/* Stores feedback for request_id from source (NULL or "" = "client"). Give exactly
 * one of: score in [0,1] (label NULL), or label "good" (=1) / "bad" (=0) with score
 * NaN. Checks the database and the writer's pending queue for the request id.
 * A repeat for the same (request_id, source) overwrites the earlier feedback.
 * Returns 0 stored (new), 1 stored (overwrote an earlier one), -EINVAL invalid
 * input (→ 400), -ENOENT unknown request id (→ 404), -ENOTCONN the database server
 * cannot be reached (PostgreSQL away: → 503, retry), -EIO database error (→ 500);
 * err gets a message for the client. Thread-safe (one connection, serialised). */
int storage_feedback(struct storage *s, const char *request_id, double score,
                     const char *label, const char *source, char *err, size_t errlen);

/* As storage_feedback(), for a request id the log does not have yet but may get: in a
 * log shared by replicas (PostgreSQL), the request's row may still be queued on the
 * replica that served it. The feedback is stored all the same (readers join feedback to
 * its request at read time, so it counts once the row is written; if the row never
 * comes, it counts nowhere and retention removes it). Returns 0 or 1 as
 * storage_feedback() when the request is known, 2 stored before its request, and the
 * same errors but -ENOENT. The caller decides which ids may be early (the daemon: its
 * own id format, started within the last minutes). */
int storage_feedback_early(struct storage *s, const char *request_id, double score,
                           const char *label, const char *source, char *err, size_t errlen);

/* ---- stats (GET /v1/stats, `triage stats`; call off the event loop) ---- */

/* A backend's prices, for costing the "everything to the most expensive" baseline. */
struct storage_price {
    const char *name;    /* borrowed */
    double price_input;  /* USD per 1M input tokens */
    double price_output; /* USD per 1M output tokens */
};

/* Parses a stats window: "15m", "1h", "24h" or "7d" into *ms. Returns 0 or -EINVAL
 * (anything else; use it to answer 400 before calling storage_stats). */
int storage_window_parse(const char *window, int64_t *ms);

/* Computes routing stats over client requests with started_ms in [now_ms - window,
 * now_ms] (now_ms 0 = the current time); shadow and judge calls are summed apart
 * under "learning" with the labels gathered in the window. Opens its own read-only
 * connection to db_path.
 * prices (borrowed, may be NULL/0) feed the saving estimate; without them "saving" is
 * null. Returns a new reference, or NULL with err set (bad window, database error) and
 * errno EINVAL (bad window), ENOTCONN (the server cannot be reached: PostgreSQL away) or
 * EIO.
 * The JSON layout is documented in storage/README.md. */
json_t *storage_stats(const char *db_path, const char *window, const struct storage_price *prices,
                      size_t n_prices, int64_t now_ms, char *err, size_t errlen);

/* ---- training export (`triage export`, `triage train --db`) ---- */

struct storage_export_counts {
    uint64_t rows;          /* client request rows read */
    uint64_t calls;         /* shadow and judge rows read: labels come to their parent */
    uint64_t no_prompt;     /* client requests skipped: neither prompt text nor features
                             * (store_prompts none or hash) */
    uint64_t no_outcome;    /* skipped: prompt text but no label (feedback or outcome) */
    uint64_t bad_prompt;    /* skipped: labelled, but the stored prompt is not a messages array */
    uint64_t lines;         /* examples emitted (one per distinct prompt text or hash) */
    uint64_t by_features;   /* of which carry a feature vector instead of text */
    uint64_t by_feedback;   /* outcomes emitted, by the source that was chosen */
    uint64_t by_judge;
    uint64_t by_offline;
    uint64_t answers;       /* labelled cascade fast answers emitted ("answer_signals") */
};

/* Called once per training example with {"messages": [...], "outcomes": {"<backend>": q},
 * "sources": {"<backend>": "feedback"|"judge"|"offline"}} (borrowed: incref to keep),
 * and "answer_signals": {"<backend>": "<base64 of the stored answer>"} for backends whose
 * labelled answer was a cascade fast answer with its signals stored (the first such
 * answer of the prompt's requests);
 * a prompt logged with store_prompts = features has {"features": "<base64 of the
 * stored vector>", "prompt_hash": "<hex>"} instead of "messages" (router_dataset_add
 * reads either). Return nonzero to stop the export (it then returns -ECANCELED). */
typedef int storage_export_fn(json_t *example, void *arg);

/* Reads db_path and emits one example per distinct prompt text of client requests that
 * has at least one label (requests with features but no text: one per distinct prompt
 * hash, with the vector of its first such request). A label is an outcome row (storage_outcome_submit) for the
 * client request, or /v1/feedback on the client request (or on one of its shadow calls),
 * which counts as source "feedback" for the backend that answered. Per backend, q comes
 * from the first source present in the order feedback, judge, offline, and is the mean
 * of that source's labels over the prompt's requests (several feedback sources on one
 * request are averaged first). See storage/README.md for why unlabelled rows are
 * skipped. counts (may be NULL) receives the tallies. Returns 0, -ECANCELED, or -EIO
 * with err. */
int storage_export_training(const char *db_path, storage_export_fn *fn, void *arg,
                            struct storage_export_counts *counts, char *err, size_t errlen);

/* Same, writing one compact JSON object per line to out. Returns 0 or -EIO with err. */
int storage_export_jsonl(const char *db_path, FILE *out, struct storage_export_counts *counts,
                         char *err, size_t errlen);

/* ---- spend per key (budgets; call off the event loop) ---- */

/* For each of the n keys (borrowed), sums the cost_usd of its client requests started
 * at or after since_ms[i] into usd[i] (caller's). One read connection to db_path (a
 * file or a postgresql:// URL). Returns 0 or -EIO with err. */
int storage_key_spend(const char *db_path, const char *const *keys, const int64_t *since_ms,
                      size_t n, double *usd, char *err, size_t errlen);

/* ---- the model registry (`triage models`, the daemon's retraining; any thread) ----
 *
 * Every predictor model version the daemon has served or evaluated, with its metrics
 * and lineage, in table `models` of the outcome log. Exactly one row is the champion
 * (the model the daemon serves) or none is; the functions keep it so in transactions
 * and a unique index backs it. Rows name model files, they never copy them. Each call
 * opens its own read-write connection (WAL, busy timeout) and closes it, so any thread
 * may call; an older database is migrated first, as storage_open() does. */

/* One predictor model version in the registry (table `models` in the outcome log). */
struct storage_model_info {
    char version[80];        /* router_model_version() of the file */
    char path[1024];         /* where the model file is kept */
    char parent[80];         /* the champion it was trained to replace; "" for the first */
    char source[16];         /* "shipped" (the config's model, recorded at first start),
                              * "retrain" (the daemon), "manual" (triage models add) */
    int64_t created_ms;      /* Unix ms */
    int64_t promoted_ms;     /* last time it became champion; 0 = never */
    int64_t train_examples;  /* examples it was trained on; -1 unknown */
    int64_t holdout_n;       /* held-out judged prompts it was compared on; -1 unknown */
    double apgr;             /* its APGR on that held-out slice; NaN unknown */
    double parent_apgr;      /* the champion's APGR on the same slice; NaN unknown */
    int64_t esc_holdout_n;   /* held-out judged fast answers its escalation model was
                              * compared on; < 1: unknown (the next two are then too) */
    double esc_auc;          /* its escalation AUC ("the fast answer is bad") there; NaN unknown */
    double parent_esc_auc;   /* the champion's on the same answers; NaN unknown */
    char routing_from[80];   /* the version whose routing part the file carries, "" its own */
    char escalation_from[80]; /* the version whose escalation model it carries, "" its own */
    char status[16];         /* "champion" | "candidate" (evaluated, not promoted) |
                              * "retired" (was champion) */
};

/* Inserts m, or replaces the row with the same version. Opens its own connection (any
 * thread; WAL + busy timeout); creates the database if db_path does not exist. Borrows m.
 * created_ms 0 is stored as now. With status "champion" the current champion (another
 * version) becomes "retired" in the same transaction, and promoted_ms 0 is stored as now.
 * Returns 0, -EINVAL (empty or unterminated version/path, unknown status/source),
 * -EIO with err. */
int storage_model_add(const char *db_path, const struct storage_model_info *m, char *err,
                      size_t errlen);

/* Fills out (caller's) with the current champion. Returns 0, -ENOENT when there is
 * none, -EIO with err (also for a missing database file). */
int storage_model_champion(const char *db_path, struct storage_model_info *out, char *err,
                           size_t errlen);

/* Makes version the champion (promoted_ms = now, or one past the latest promotion so
 * promotions stay strictly ordered); the previous champion becomes "retired". One
 * transaction. Promoting the champion changes nothing. Returns 0, -ENOENT unknown
 * version (err says so), -EIO with err. */
int storage_model_promote(const char *db_path, const char *version, char *err, size_t errlen);

/* Makes the most recently promoted model before the current champion (the one the
 * current champion replaced: its parent if that was ever champion, else the latest
 * retired by promoted_ms) champion again (promoted_ms = now); the current one becomes
 * "retired". One transaction. Fills out (caller's, may be NULL) with the new champion.
 * Returns 0, -ENOENT when there is no champion or nothing to roll back to (err says
 * which), -EIO with err. */
int storage_model_rollback(const char *db_path, struct storage_model_info *out, char *err,
                           size_t errlen);

/* Called once per version with a row that lives until it returns (borrowed: copy what
 * you keep); return nonzero to stop. */
typedef int storage_model_fn(const struct storage_model_info *m, void *arg); /* nonzero stops */

/* Calls fn for every version, newest first (created_ms). Returns the count of rows
 * passed to fn, or -EIO with err (also for a missing database file). */
int storage_model_list(const char *db_path, storage_model_fn *fn, void *arg, char *err,
                       size_t errlen);

/* The registry over time, for /v1/stats: returns a new object {"versions": [every
 * version's row, newest first, at most 200], "changes": [{"ms", "version", "kind"}, oldest
 * first: when each version last became champion (an earlier reign of a version that
 * came back is not kept); kind "rollback" when a newer model had served before, else
 * "first" for a model without a parent, else "promotion"]}, or NULL with err (also for a
 * missing database file). Any thread. */
json_t *storage_model_timeline(const char *db_path, char *err, size_t errlen);

#endif
