/* conf.h - the daemon's configuration: an INI file parsed into an immutable snapshot. */
#ifndef TRIAGE_CONF_H
#define TRIAGE_CONF_H

#include <stddef.h>
#include <stdint.h>

enum conf_log_level {
    CONF_LOG_ERROR = 0,
    CONF_LOG_WARN,
    CONF_LOG_INFO,
    CONF_LOG_DEBUG,
};

enum conf_log_format {
    CONF_LOG_FORMAT_LOGFMT = 0,
    CONF_LOG_FORMAT_JSON,
};

enum conf_store_prompts {
    CONF_STORE_PROMPTS_NONE = 0, /* neither text nor hash */
    CONF_STORE_PROMPTS_HASH,     /* a hash of the messages only (default) */
    CONF_STORE_PROMPTS_FULL,     /* the messages as JSON: needed to retrain from the log */
    CONF_STORE_PROMPTS_FEATURES, /* the hash and the request's feature vector, no text:
                                  * enough to retrain with the same hashing */
};

/* The API a backend speaks (its [backend] api): which client paths may reach it. */
enum conf_api {
    CONF_API_OPENAI = 0, /* /chat/completions, /responses, /completions, /embeddings; Bearer key */
    CONF_API_ANTHROPIC,  /* /messages; x-api-key and anthropic-version headers */
};

enum conf_policy {
    CONF_POLICY_THRESHOLD = 0, /* two tiers: score >= threshold goes to the last tier */
    CONF_POLICY_TIERS,         /* N tiers: the cheapest whose predicted success clears its bar */
    CONF_POLICY_CASCADE,       /* two tiers: a band of scores is answered by the first tier,
                                * re-sent to the last when the answer looks unsure */
};

/* One upstream OpenAI-compatible backend ([backend NAME] section). */
struct conf_backend {
    char *name;            /* the section name: what clients put in "model" to pass through */
    char *url;             /* base URL up to and including /v1, no trailing slash */
    char *model;           /* upstream model name substituted into the request */
    char *head;            /* predictor head scoring this backend (default: name) */
    char *api_key;         /* resolved secret or NULL; never logged, never copied out */
    char *api_key_env;     /* where the key came from, for messages (name only) */
    char *api_key_file;    /* likewise; a relative name is looked up in $CREDENTIALS_DIRECTORY */
    char *overrides;       /* JSON object merged into routed requests, or NULL */
    char *api_key_header;  /* header the key goes in, value bare (e.g. Azure's "api-key");
                            * NULL: "Authorization: Bearer <key>" */
    char *headers;         /* extra "Name: value\r\n" lines sent to it ("header = Name: value",
                            * repeatable; names are tokens, values hold no control byte
                            * but HTAB), or NULL */
    enum conf_api api;     /* the API it speaks (default openai) */
    char *anthropic_version; /* api = anthropic: the anthropic-version header it is sent */
    double price_input;    /* USD per 1M input tokens */
    double price_output;   /* USD per 1M output tokens */
    uint32_t connect_timeout_ms;
    uint32_t first_byte_timeout_ms; /* from sending the request to the response headers */
    uint32_t idle_timeout_ms;       /* longest silence between stream chunks */
    uint32_t timeout_ms;            /* the whole exchange */
    uint32_t max_concurrent;        /* in-flight requests to this backend; 0 = unlimited */
    uint32_t max_retries;           /* retries before the first byte reached the client */
    uint32_t breaker_failures;      /* failures within breaker_window_ms that open the circuit */
    uint32_t breaker_window_ms;
    uint32_t breaker_cooldown_ms;   /* open this long before a half-open probe */
};

/* One routing tier ([router] tiers = name:bar, ... or name:40%, ...), cheapest first. */
struct conf_tier {
    size_t backend; /* index into conf.backends */
    double bar;     /* minimum predicted success for this tier; the last tier has none */
    double share;   /* target share of routed requests, in [0,1]; -1: none (bars) */
};

#define CONF_MAX_SHARE_TIERS 16 /* tiers with shares (router_share's ROUTER_SHARE_MAX_TIERS) */

struct conf {
    char *path; /* the file this snapshot was read from */

    /* [server] */
    char *listen;              /* address to bind, e.g. 127.0.0.1 or :: */
    uint16_t port;
    uint32_t workers;          /* event-loop threads, each with its own listener */
    size_t max_body;           /* bytes */
    size_t max_header;         /* bytes */
    size_t max_response;       /* largest backend answer buffered whole (streams are relayed) */
    uint32_t max_connections;
    uint32_t read_timeout_ms;  /* a request must arrive whole within this */
    uint32_t idle_timeout_ms;  /* keep-alive connections idle longer are closed */
    uint32_t shutdown_timeout_ms; /* SIGTERM: in-flight requests get this long to finish */
    uint32_t busy_poll_us;     /* after I/O, poll without sleeping this long (0 = off) */
    enum conf_log_level log_level;
    enum conf_log_format log_format;
    int log_prompts;           /* 1: prompt text may appear in debug logs */
    char **forward_headers;    /* client headers passed on to backends (besides traceparent
                                * and tracestate), lower case; never a key's header */
    size_t n_forward_headers;

    /* [auth] */
    char *keys_file;           /* client key hashes; NULL = no client auth */
    char *admin_keys_file;     /* admin key hashes; NULL = admin endpoints loopback-only */
    int open_on_loopback;      /* 1: no key needed when bound to loopback only */
    int stats_need_admin;      /* 1: /v1/stats and /metrics need an admin key */
    uint32_t rate_limit_rpm;   /* requests per minute per client key; 0 = unlimited */
    uint32_t rate_limit_tpm;   /* tokens per minute per client key; 0 = unlimited */
    uint32_t rate_limit_replicas; /* replicas sharing the limits: each enforces 1/N [1] */
    uint32_t budget_refresh_ms;   /* how often key budgets re-read spend from the log [1000] */

    /* [router] */
    char *model_path;          /* predictor model file */
    char **aliases;            /* model names that route, e.g. "triage" */
    size_t n_aliases;
    enum conf_policy policy;
    double threshold;          /* CONF_POLICY_THRESHOLD: score cut, in [0,1] */
    double strong_share;       /* if >= 0, hold this share of strong calls instead */
    uint32_t share_window;     /* recent scores per route and worker the share is cut on */
    int sticky;                /* 1: a conversation's follow-up never routes below its tier */
    uint32_t sticky_ttl_s;     /* a conversation is remembered this long after its last turn */
    uint32_t sticky_entries;   /* conversation turns remembered at most (24 bytes each) */
    double cascade_low;        /* CONF_POLICY_CASCADE: scores below go to the fast tier alone */
    double cascade_high;       /* ... at or above, to the strong tier alone; between, the cascade */
    double escalate_at;        /* ... an escalation score at or above re-sends to strong */
    int cascade_logprobs;      /* ... ask the fast tier for token log-probabilities */
    struct conf_tier *tiers;   /* cheapest first; with THRESHOLD exactly two */
    size_t n_tiers;
    int tier_shares;           /* 1: the tiers have shares, held online like strong_share */
    size_t *fallback;          /* backend indices tried in order when the chosen one fails */
    size_t n_fallback;

    /* [storage] */
    char *db_path;             /* SQLite file, or the PostgreSQL URL of [storage] url;
                                * NULL = no outcome log */
    char *db_url;              /* [storage] url as written (postgresql://...); NULL = none */
    enum conf_store_prompts store_prompts;
    uint32_t retention_days;   /* 0 = keep forever */
    uint32_t queue_size;       /* records waiting for the writer before new ones are dropped */
    uint32_t batch_size;       /* records per transaction */
    uint32_t flush_interval_ms;
    uint32_t degraded_hold_ms; /* /readyz stays degraded this long after a failed write */

    /* [learning]: labels without humans (daemon/learn.c) */
    double shadow_rate;        /* share of routed requests also answered by the other tiers */
    char *judge;               /* backend that grades answers; NULL = no judging */
    double shadow_budget_usd_per_day; /* cap on shadow + judge spend per UTC day */
    uint32_t learn_max_concurrent;    /* shadow + judge calls in flight (learning thread) */
    uint32_t retrain_every;    /* judged prompts between automatic retrains; 0 = never */
    char **base_data;          /* labelled JSONL(.gz) files a retrain adds to the log's
                                * [the shipped sets; "none" = none] */
    size_t n_base_data;
    char *models_dir;          /* where retrained models are kept [beside the log: models/] */
    double promote_margin;     /* a challenger's held-out APGR must beat the champion's by this */
    uint32_t min_holdout;      /* held-out judged prompts needed before any promotion */
    double escalation_margin;  /* a challenger's held-out escalation AUC must beat the
                                * champion's by this for its escalation model to be taken */
    uint32_t min_holdout_answers; /* held-out judged fast answers needed to judge escalation */

    /* [backend NAME] sections, in file order */
    struct conf_backend *backends;
    size_t n_backends;
};

/* Parses the file at path into a new snapshot, resolves backend keys from the
 * environment or files, and validates cross references (tiers, fallback, aliases).
 * Returns NULL on failure with a "file:line: message" (or "file: message") in err. */
struct conf *conf_load(const char *path, char *err, size_t errlen);

enum {
    CONF_LOAD_SKIP_KEYS = 1 << 0, /* leave api_key NULL: for tools that never call a backend */
};

/* conf_load with flags (CONF_LOAD_*). */
struct conf *conf_load_flags(const char *path, unsigned flags, char *err, size_t errlen);

/* Frees a snapshot; NULL is fine. Wipes the resolved keys before freeing them. */
void conf_destroy(struct conf *c);

/* Returns the index of the backend called name, or -1. Borrows both. */
int conf_backend_find(const struct conf *c, const char *name);

/* Returns 1 if name is one of the routed aliases, 0 otherwise. */
int conf_is_alias(const struct conf *c, const char *name);

/* Returns the level for "error", "warn", "info" or "debug", or -1. */
int conf_log_level_parse(const char *s);

/* Returns 1 when name[0..len) is an HTTP field name (a token, RFC 9110 5.6.2), else 0. */
int conf_header_name_valid(const char *name, size_t len);

/* Returns 1 when value[0..len) may be sent as a field value: no control byte but HTAB
 * (no NUL, CR or LF to split the line), else 0. */
int conf_header_value_valid(const char *value, size_t len);

#endif
