/* storage.h - the SQLite outcome log: one row per request, feedback, stats and training reads.
 *
 * Writes go through a bounded queue to a dedicated writer thread that commits in
 * batched transactions, so the request path never waits on the disk. Reads
 * (feedback lookups, stats, exports) open their own connection and are meant to
 * run off the event loop (a thread-pool job or the CLI). */
#ifndef TRIAGE_STORAGE_H
#define TRIAGE_STORAGE_H

#include <stddef.h>
#include <stdint.h>

/* One routed or passed-through request and what came of it. Strings are owned by
 * the record and freed by storage_record_free(); NULL means unknown. */
struct storage_record {
    char *request_id;
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
    int status;               /* HTTP status returned to the client */
    char *error_kind;         /* NULL on success */
    double latency_ms;
    double ttfb_ms;           /* NaN when no byte came back */
    int64_t tokens_in;        /* -1 when unknown */
    int64_t tokens_out;
    char *finish_reason;
    double cost_usd;
    int stream;               /* 1 for SSE responses */
};

struct storage_options {
    uint32_t queue_size;        /* records held before new ones are dropped and counted */
    uint32_t batch_size;        /* records per transaction */
    uint32_t flush_interval_ms; /* longest a queued record waits */
    uint32_t retention_days;    /* 0 = keep forever */
};

struct storage_counters {
    uint64_t queued;   /* accepted by storage_submit */
    uint64_t written;  /* committed */
    uint64_t dropped;  /* refused because the queue was full */
    uint64_t failed;   /* lost to write errors (disk full, read-only) */
    uint64_t depth;    /* waiting now */
    int degraded;      /* 1 while the last write failed */
};

struct storage;

/* Opens (creating or migrating) the database and starts the writer thread.
 * Refuses a database from a newer schema version. Returns NULL with err set. */
struct storage *storage_open(const char *path, const struct storage_options *opt, char *err,
                             size_t errlen);

/* Queues rec for writing; takes ownership in every case. Never blocks. Returns 0,
 * or -EAGAIN when the queue is full (the record is dropped and counted). */
int storage_submit(struct storage *s, struct storage_record *rec);

/* Copies the writer's counters into out. Thread-safe. */
void storage_get_counters(struct storage *s, struct storage_counters *out);

/* Writes everything queued, stops the writer and closes the database. NULL is fine. */
void storage_close(struct storage *s);

/* Frees a record and its strings. NULL is fine. */
void storage_record_free(struct storage_record *rec);

#endif
