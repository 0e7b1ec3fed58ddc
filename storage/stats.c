/* stats.c - routing statistics over a time window of the outcome log, as JSON. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "storage.h"
#include "storage-int.h"

#define STATS_BINS 20    /* score histogram bins over [0,1] */
#define STATS_BUCKETS 60 /* timeline buckets over the window */
#define STATS_RECENT 20  /* recent errors listed */

/* Row kinds as the scan numbers them, and the label sources, in "learning" order. */
enum { LEARN_CLIENT, LEARN_SHADOW, LEARN_JUDGE, LEARN_CASCADE };
static const char *const sources[3] = {"feedback", "judge", "offline"};

int
storage_window_parse(const char *window, int64_t *ms)
{
    static const struct {
        const char *name;
        int64_t ms;
    } windows[] = {
        {"15m", 15 * 60000LL},
        {"1h", 3600000LL},
        {"24h", 24 * 3600000LL},
        {"7d", 7 * 24 * 3600000LL},
    };

    for (size_t i = 0; window && i < sizeof(windows) / sizeof(windows[0]); i++)
        if (!strcmp(window, windows[i].name)) {
            *ms = windows[i].ms;
            return 0;
        }
    return -EINVAL;
}

struct vec {
    double *v;
    size_t n, cap;
};

static void
vec_push(struct vec *a, double x)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->v = realloc(a->v, a->cap * sizeof(*a->v));
        if (!a->v) {
            fputs("triage: out of memory\n", stderr);
            abort();
        }
    }
    a->v[a->n++] = x;
}

struct backend_acc {
    char *name;
    uint64_t requests, errors; /* errors: the backend's own (5xx, transport, cut streams,
                                * attempts retried or fallen back from), not clients' */
    uint64_t failed_attempts;  /* attempts on it that another attempt followed */
    uint64_t fallbacks_from;   /* requests that left it for another backend */
    int64_t tokens_in, tokens_out;
    double cost;
    struct vec latency, ttfb;
    uint64_t bucket_requests[STATS_BUCKETS];
    double bucket_cost[STATS_BUCKETS];
    uint64_t feedback_n;
    double feedback_mean;
};

struct recent {
    int64_t t, rowid;
    char *request_id, *backend, *error_kind;
    int status;
};

struct acc {
    struct backend_acc *b;
    size_t n, cap;
};

/* One client key's figures (rows with a key_id). */
struct key_acc {
    char *name;
    uint64_t requests, errors;
    int64_t tokens_in, tokens_out;
    double cost;
};

struct keys {
    struct key_acc *k;
    size_t n, cap;
};

/* Requests that fell back from one backend to another. */
struct pair {
    char *from, *to;
    uint64_t n;
};

struct pairs {
    struct pair *p;
    size_t n, cap;
};

static void *
grow(void *p, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return p;
    *cap = *cap ? *cap * 2 : 8;
    p = realloc(p, *cap * size);
    if (!p) {
        fputs("triage: out of memory\n", stderr);
        abort();
    }
    return p;
}

static struct key_acc *
key_get(struct keys *ks, const char *name)
{
    for (size_t i = 0; i < ks->n; i++)
        if (!strcmp(ks->k[i].name, name))
            return &ks->k[i];
    ks->k = grow(ks->k, &ks->cap, ks->n, sizeof(*ks->k));
    struct key_acc *k = &ks->k[ks->n++];
    memset(k, 0, sizeof(*k));
    k->name = storage__strdup(name);
    return k;
}

static void
pair_add(struct pairs *ps, const char *from, size_t flen, const char *to)
{
    for (size_t i = 0; i < ps->n; i++)
        if (strlen(ps->p[i].from) == flen && !strncmp(ps->p[i].from, from, flen) &&
            !strcmp(ps->p[i].to, to)) {
            ps->p[i].n++;
            return;
        }
    ps->p = grow(ps->p, &ps->cap, ps->n, sizeof(*ps->p));
    struct pair *p = &ps->p[ps->n++];
    p->from = malloc(flen + 1);
    if (!p->from) {
        fputs("triage: out of memory\n", stderr);
        abort();
    }
    memcpy(p->from, from, flen);
    p->from[flen] = '\0';
    p->to = storage__strdup(to);
    p->n = 1;
}

static struct backend_acc *
acc_backend(struct acc *a, const char *name)
{
    for (size_t i = 0; i < a->n; i++)
        if (!strcmp(a->b[i].name, name))
            return &a->b[i];
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 8;
        a->b = realloc(a->b, a->cap * sizeof(*a->b));
        if (!a->b) {
            fputs("triage: out of memory\n", stderr);
            abort();
        }
    }
    struct backend_acc *b = &a->b[a->n++];
    memset(b, 0, sizeof(*b));
    b->name = storage__strdup(name);
    return b;
}

/* acc_backend for a name that is not NUL-terminated. */
static struct backend_acc *
acc_backend_n(struct acc *a, const char *name, size_t len)
{
    char buf[256];
    if (len >= sizeof(buf))
        len = sizeof(buf) - 1;
    memcpy(buf, name, len);
    buf[len] = '\0';
    return acc_backend(a, buf);
}

/* Rearranges v[lo..hi] so v[k] holds the value it would have sorted, smaller ones
 * before it and larger after (quickselect, median of three): O(n), no full sort. */
static void
select_kth(double *v, size_t lo, size_t hi, size_t k)
{
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        double a = v[lo], b = v[mid], c = v[hi];
        double pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        size_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i <= j) {
                double t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return;
    }
}

/* Values the daemon never writes (a log edited or damaged by hand, a backend's absurd
 * usage) count as unknown rather than overflow a sum or make a figure JSON cannot hold:
 * no call costs more than this (USD) or lasts longer than this (ms, ~31 years). */
#define STATS_MAX_COST 1e9
#define STATS_MAX_MS 1e12

/* cost_usd of the current row: 0 when NULL or outside [0, STATS_MAX_COST]. */
static double
read_cost(struct storage__stmt *st, int col)
{
    double v = storage__column_double(st, col);

    return v >= 0 && v <= STATS_MAX_COST ? v : 0;
}

/* A token count of the current row: -1 (unknown) when negative (NULL is -1). */
static int64_t
read_tokens(struct storage__stmt *st, int col)
{
    int64_t v = storage__column_int64(st, col);

    return v >= 0 ? v : -1;
}

/* a + b for b >= 0, stopping at INT64_MAX instead of overflowing. */
static int64_t
sat_add(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* Nearest-rank percentile: the value at rank ceil(p/100 * n) of the sorted values.
 * Percentiles are taken in decreasing p, each selecting within the part below the
 * last, so three of them cost about two passes. */
static json_t *
percentile(struct vec *v, int p, size_t *limit)
{
    if (!v->n)
        return json_null();
    size_t rank = ((size_t)p * v->n + 99) / 100;
    if (rank < 1)
        rank = 1;
    select_kth(v->v, 0, *limit, rank - 1);
    *limit = rank - 1;
    return json_real(v->v[rank - 1]);
}

static json_t *
percentiles(struct vec *v)
{
    size_t limit = v->n ? v->n - 1 : 0;
    json_t *p99 = percentile(v, 99, &limit);
    json_t *p95 = percentile(v, 95, &limit);
    json_t *p50 = percentile(v, 50, &limit);
    return json_pack("{s:o, s:o, s:o, s:I}", "p50", p50, "p95", p95, "p99", p99, "n",
                     (json_int_t)v->n);
}

static void
recent_add(struct recent *r, size_t *n, int64_t t, struct storage__stmt *st)
{
    size_t at = *n;

    if (*n == STATS_RECENT) {
        /* Replace the oldest if this one is newer. */
        size_t min = 0;
        for (size_t i = 1; i < *n; i++)
            if (r[i].t < r[min].t)
                min = i;
        if (r[min].t >= t)
            return;
        at = min;
    } else {
        (*n)++;
    }
    /* Only the row id now: the scan reads the covering index, the rest is fetched
     * for the final few. */
    r[at] = (struct recent){.t = t, .rowid = storage__column_int64(st, 9)}; /* id */
}

/* Fills in the recent errors' details by row id. */
static int
recent_fetch(struct storage__db *db, struct recent *r, size_t n)
{
    struct storage__stmt *st = storage__prepare(
        db, "SELECT request_id, backend, status, error_kind FROM requests WHERE id = ?");

    if (!st)
        return -EIO;
    for (size_t i = 0; i < n; i++) {
        storage__bind_int64(st, 1, r[i].rowid);
        int rc = storage__step(st);
        if (rc < 0) {
            storage__finalize(st);
            return -EIO;
        }
        if (rc == 1) {
            r[i].request_id = storage__strdup(storage__column_text(st, 0));
            r[i].backend = storage__strdup(storage__column_text(st, 1));
            r[i].status = (int)storage__column_int64(st, 2);
            r[i].error_kind = storage__strdup(storage__column_text(st, 3));
        }
        storage__reset(st);
    }
    storage__finalize(st);
    return 0;
}

static int
cmp_recent(const void *a, const void *b)
{
    const struct recent *x = a, *y = b;
    return (x->t < y->t) - (x->t > y->t); /* newest first */
}

static json_t *
str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

json_t *
storage_stats(const char *db_path, const char *window, const struct storage_price *prices,
              size_t n_prices, int64_t now_ms, char *err, size_t errlen)
{
    int64_t window_ms;
    struct storage__db *db = NULL;
    struct storage__stmt *st = NULL;
    struct acc a = {0};
    struct recent recent[STATS_RECENT];
    size_t n_recent = 0;
    uint64_t hist[STATS_BINS] = {0}, routed = 0, total = 0, errors = 0;
    uint64_t costed = 0;
    double baseline = 0, costed_actual = 0, cost_total = 0;
    uint64_t calls[4] = {0}, labels[3] = {0}; /* [kind] / [source]: see LEARN_* */
    double calls_cost[4] = {0};
    int64_t tin_total = 0, tout_total = 0;
    uint64_t backend_errors = 0, client_errors = 0, fallbacks = 0;
    struct keys ks = {0};
    struct pairs fb = {0};
    json_t *out = NULL;
    const struct storage_price *top = NULL;
    int away = 0; /* the server went away: errno ENOTCONN for the caller */

    if (storage_window_parse(window, &window_ms) < 0) {
        storage__errf(err, errlen, "window must be one of 15m, 1h, 24h, 7d");
        errno = EINVAL;
        return NULL;
    }
    if (!now_ms)
        now_ms = storage__now_ms();
    int64_t from = now_ms - window_ms;
    int64_t bucket_ms = window_ms / STATS_BUCKETS;

    for (size_t i = 0; prices && i < n_prices; i++)
        if (!top ||
            prices[i].price_input + prices[i].price_output > top->price_input + top->price_output)
            top = &prices[i];

    db = storage__db_open(db_path, STORAGE__READ, err, errlen);
    if (!db)
        return NULL; /* errno ENOTCONN or EIO */
    if (storage__db_begin(db, STORAGE__TX_SNAPSHOT) < 0) /* one snapshot for all reads */
        goto dberr;

        /* One scan of the window (the covering index alone); everything else is computed
         * in C. NULLs come back as sentinels so each column is one API call: -1 tokens
         * (never stored), NO_VALUE for latencies and the score. */
#define NO_VALUE "-1e308"
    if (!(st = storage__prepare(db, "SELECT backend, status >= 400 OR error_kind IS NOT NULL,"
                           " coalesce(latency_ms, " NO_VALUE "), coalesce(ttfb_ms, " NO_VALUE "),"
                           " coalesce(tokens_in, -1), coalesce(tokens_out, -1), cost_usd,"
                           " coalesce(score, " NO_VALUE "), started_ms, id,"
                           " CASE kind WHEN 'shadow' THEN 1 WHEN 'judge' THEN 2 WHEN 'cascade' THEN 3 ELSE 0 END,"
                           /* the backend's own error: a 5xx (not ours: shutdown, internal),
                            * or a stream it cut; a 4xx is the client's */
                           " CASE WHEN backend IS NULL OR (status >= 400 AND status < 500)"
                           " THEN 0 WHEN status >= 500 THEN CASE WHEN coalesce(error_kind, '') NOT IN"
                           " ('shutdown', 'shutting_down', 'internal', 'internal_error')"
                           " THEN 1 ELSE 0 END"
                           " ELSE CASE WHEN error_kind IS NOT NULL AND error_kind NOT IN"
                           " ('client_aborted', 'client_gone', 'shutdown') THEN 1 ELSE 0 END END,"
                           " key_id, route_reason = 'fallback', failed_attempts,"
                           " status >= 400 AND status < 500"
                           " FROM requests WHERE started_ms >= ? AND started_ms <= ?")))
        goto dberr;
#undef NO_VALUE
    storage__bind_int64(st, 1, from);
    storage__bind_int64(st, 2, now_ms);
    int rc;
    while ((rc = storage__step(st)) == 1) {
        int kind = (int)storage__column_int64(st, 10);
        if (kind != LEARN_CLIENT) {
            /* The daemon's own calls: their spend only, so the rest matches what
             * clients sent. */
            calls[kind]++;
            calls_cost[kind] += read_cost(st, 6);
            continue;
        }
        const char *name = storage__column_text(st, 0);
        int64_t t = storage__column_int64(st, 8);
        int64_t tin = read_tokens(st, 4), tout = read_tokens(st, 5);
        double cost = read_cost(st, 6);
        int failed = (int)storage__column_int64(st, 1);

        total++;
        if (failed) {
            errors++;
            recent_add(recent, &n_recent, t, st);
        }
        client_errors += (int)storage__column_int64(st, 15) != 0;
        const char *key = storage__column_text(st, 12);
        if (key) {
            struct key_acc *k = key_get(&ks, key);
            k->requests++;
            k->errors += failed != 0;
            k->tokens_in = sat_add(k->tokens_in, tin > 0 ? tin : 0);
            k->tokens_out = sat_add(k->tokens_out, tout > 0 ? tout : 0);
            k->cost += cost;
        }
        /* Attempts it retried or fell back from: errors of those backends, even when
         * the client got an answer from another. */
        const char *fa = storage__column_text(st, 14);
        const char *first = NULL;
        size_t first_len = 0;
        while (fa && *fa) {
            size_t len = strcspn(fa, ",");
            size_t nlen = strcspn(fa, " ,");
            struct backend_acc *fb_b = acc_backend_n(&a, fa, nlen);
            fb_b->errors++;
            fb_b->failed_attempts++;
            backend_errors++;
            if (!first) {
                first = fa;
                first_len = nlen;
            }
            fa += len;
            fa += *fa == ',';
        }
        if (!name)
            continue; /* refused before a backend was chosen: not any backend's row */
        if ((int)storage__column_int64(st, 13) && first) {
            fallbacks++;
            acc_backend_n(&a, first, first_len)->fallbacks_from++;
            pair_add(&fb, first, first_len, name);
        }
        struct backend_acc *b = acc_backend(&a, name);
        b->requests++;
        if ((int)storage__column_int64(st, 11)) {
            b->errors++;
            backend_errors++;
        }
        double lat = storage__column_double(st, 2), ttfb = storage__column_double(st, 3);
        if (lat >= 0 && lat <= STATS_MAX_MS) /* else unknown (NULL), or not the daemon's */
            vec_push(&b->latency, lat);
        if (ttfb >= 0 && ttfb <= STATS_MAX_MS)
            vec_push(&b->ttfb, ttfb);
        b->cost += cost;
        cost_total += cost;
        if (tin >= 0) {
            b->tokens_in = sat_add(b->tokens_in, tin);
            tin_total = sat_add(tin_total, tin);
        }
        if (tout >= 0) {
            b->tokens_out = sat_add(b->tokens_out, tout);
            tout_total = sat_add(tout_total, tout);
        }
        if (top && tin >= 0 && tout >= 0) {
            costed++;
            costed_actual += cost;
            baseline += ((double)tin * top->price_input + (double)tout * top->price_output) / 1e6;
        }
        double sc = storage__column_double(st, 7);
        if (sc > -1e307 && isfinite(sc)) {
            /* clamped before the cast: a double out of int's range is undefined */
            int bin = sc <= 0 ? 0 : sc >= 1 ? STATS_BINS - 1 : (int)floor(sc * STATS_BINS);
            if (bin >= STATS_BINS)
                bin = STATS_BINS - 1;
            hist[bin]++;
            routed++;
        }
        int64_t k = bucket_ms ? (t - from) / bucket_ms : 0;
        if (k < 0)
            k = 0;
        if (k >= STATS_BUCKETS)
            k = STATS_BUCKETS - 1;
        b->bucket_requests[k]++;
        b->bucket_cost[k] += cost;
    }
    if (rc != 0)
        goto dberr;
    storage__finalize(st);
    st = NULL;
    if (recent_fetch(db, recent, n_recent) < 0)
        goto dberr;

    /* Feedback on the window's requests, per backend. */
    uint64_t fb_total = 0;
    double fb_sum = 0;
    if (!(st = storage__prepare(db, /* Feedback comes after its request, so created_ms >= from
                            * narrows the feedback side; CROSS JOIN keeps it outer. */
                           "SELECT r.backend, count(*), avg(f.score) FROM feedback f"
                           " CROSS JOIN requests r ON r.request_id = f.request_id"
                           " WHERE f.created_ms >= ? AND r.started_ms >= ? AND r.started_ms <= ?"
                           " AND (r.kind IS NULL OR r.kind NOT IN ('shadow', 'judge', 'cascade'))"
                           /* what storage_feedback writes; anything else is not feedback */
                           " AND f.score >= 0 AND f.score <= 1"
                           " GROUP BY r.backend")))
        goto dberr;
    storage__bind_int64(st, 1, from);
    storage__bind_int64(st, 2, from);
    storage__bind_int64(st, 3, now_ms);
    while ((rc = storage__step(st)) == 1) {
        const char *name = storage__column_text(st, 0);
        if (!name)
            continue; /* a request no backend answered has no backend's feedback */
        struct backend_acc *b = acc_backend(&a, name);
        b->feedback_n = (uint64_t)storage__column_int64(st, 1);
        b->feedback_mean = storage__column_double(st, 2);
        fb_total += b->feedback_n;
        fb_sum += b->feedback_mean * (double)b->feedback_n;
    }
    if (rc != 0)
        goto dberr;
    storage__finalize(st);
    st = NULL;

    /* Labels gathered in the window, by source; /v1/feedback counts as "feedback". */
    if (!(st = storage__prepare(db, "SELECT 'feedback', count(*) FROM feedback"
                           " WHERE created_ms >= ?1 AND created_ms <= ?2"
                           " UNION ALL SELECT source, count(*) FROM outcomes"
                           " WHERE created_ms >= ?1 AND created_ms <= ?2 GROUP BY source")))
        goto dberr;
    storage__bind_int64(st, 1, from);
    storage__bind_int64(st, 2, now_ms);
    while ((rc = storage__step(st)) == 1) {
        const char *src = storage__column_text(st, 0);
        for (int i = 0; src && i < 3; i++)
            if (!strcmp(src, sources[i]))
                labels[i] += (uint64_t)storage__column_int64(st, 1);
    }
    if (rc != 0)
        goto dberr;
    storage__finalize(st);
    st = NULL;
    storage__db_commit(db);

    /* Build the document. */
    json_t *backends = json_object();
    json_t *timeline_b = json_object();
    for (size_t i = 0; i < a.n; i++) {
        struct backend_acc *b = &a.b[i];
        json_t *req = json_array(), *cost = json_array();
        for (int k = 0; k < STATS_BUCKETS; k++) {
            json_array_append_new(req, json_integer((json_int_t)b->bucket_requests[k]));
            json_array_append_new(cost, json_real(b->bucket_cost[k]));
        }
        json_object_set_new(timeline_b, b->name,
                            json_pack("{s:o, s:o}", "requests", req, "cost_usd", cost));
        json_object_set_new(backends, b->name,
                            json_pack("{s:I, s:f, s:I, s:I, s:I, s:o, s:o, s:I, s:I, s:f, s:{s:I, s:o}}",
                                      "requests", (json_int_t)b->requests, "share",
                                      total ? (double)b->requests / (double)total : 0.0, "errors",
                                      (json_int_t)b->errors, "failed_attempts",
                                      (json_int_t)b->failed_attempts, "fallbacks_from",
                                      (json_int_t)b->fallbacks_from, "latency_ms", percentiles(&b->latency),
                                      "ttfb_ms", percentiles(&b->ttfb), "tokens_in",
                                      (json_int_t)b->tokens_in, "tokens_out",
                                      (json_int_t)b->tokens_out, "cost_usd", b->cost, "feedback",
                                      "count", (json_int_t)b->feedback_n, "mean",
                                      b->feedback_n ? json_real(b->feedback_mean) : json_null()));
    }

    json_t *keys = json_object();
    for (size_t i = 0; i < ks.n; i++)
        json_object_set_new(keys, ks.k[i].name,
                            json_pack("{s:I, s:I, s:I, s:I, s:f}", "requests",
                                      (json_int_t)ks.k[i].requests, "errors",
                                      (json_int_t)ks.k[i].errors, "tokens_in",
                                      (json_int_t)ks.k[i].tokens_in, "tokens_out",
                                      (json_int_t)ks.k[i].tokens_out, "cost_usd", ks.k[i].cost));
    json_t *pairs = json_array();
    for (size_t i = 0; i < fb.n; i++)
        json_array_append_new(pairs, json_pack("{s:s, s:s, s:I}", "from", fb.p[i].from, "to",
                                               fb.p[i].to, "requests", (json_int_t)fb.p[i].n));

    json_t *saving = json_null();
    if (top) {
        json_decref(saving);
        saving =
            json_pack("{s:s, s:f, s:f, s:f, s:o, s:I}", "baseline_backend", top->name,
                      "baseline_cost_usd", baseline, "cost_usd", costed_actual, "saving_usd",
                      baseline - costed_actual, "saving_share",
                      baseline > 0 ? json_real((baseline - costed_actual) / baseline) : json_null(),
                      "rows", (json_int_t)costed);
    }

    json_t *counts = json_array();
    for (int i = 0; i < STATS_BINS; i++)
        json_array_append_new(counts, json_integer((json_int_t)hist[i]));

    qsort(recent, n_recent, sizeof(*recent), cmp_recent);
    json_t *rec = json_array();
    for (size_t i = 0; i < n_recent; i++)
        json_array_append_new(
            rec,
            json_pack("{s:I, s:o, s:o, s:i, s:o}", "time_ms", (json_int_t)recent[i].t, "request_id",
                      str_or_null(recent[i].request_id), "backend", str_or_null(recent[i].backend),
                      "status", recent[i].status, "error_kind", str_or_null(recent[i].error_kind)));

    out = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:o, s:o,"
                    " s:{s:I, s:o},"
                    " s:{s:i, s:f, s:f, s:I, s:o},"
                    " s:{s:I, s:I, s:i, s:o},"
                    " s:o}",
                    "window", window, "window_ms", (json_int_t)window_ms, "from_ms",
                    (json_int_t)from, "to_ms", (json_int_t)now_ms, "requests", (json_int_t)total,
                    "errors", (json_int_t)errors, "tokens_in", (json_int_t)tin_total, "tokens_out",
                    (json_int_t)tout_total, "cost_usd", cost_total, "backends", backends, "saving",
                    saving, "feedback", "count", (json_int_t)fb_total, "mean",
                    fb_total ? json_real(fb_sum / (double)fb_total) : json_null(),
                    "score_histogram", "bins", STATS_BINS, "lo", 0.0, "hi", 1.0, "routed",
                    (json_int_t)routed, "counts", counts, "timeline", "start_ms", (json_int_t)from,
                    "bucket_ms", (json_int_t)bucket_ms, "buckets", STATS_BUCKETS, "backends",
                    timeline_b, "recent_errors", rec);
    if (!out ||
        json_object_set_new(out, "backend_errors", json_integer((json_int_t)backend_errors)) < 0 ||
        json_object_set_new(out, "client_errors", json_integer((json_int_t)client_errors)) < 0 ||
        json_object_set_new(out, "fallbacks",
                            json_pack("{s:I, s:o}", "requests", (json_int_t)fallbacks, "pairs",
                                      pairs)) < 0 ||
        json_object_set_new(out, "keys", keys) < 0 ||
        json_object_set_new(out, "escalations",
                            json_pack("{s:I, s:f}", "fast_calls",
                                      (json_int_t)calls[LEARN_CASCADE], "cost_usd",
                                      calls_cost[LEARN_CASCADE])) < 0 ||
        json_object_set_new(
            out, "learning",
            json_pack("{s:I, s:f, s:I, s:f, s:{s:I, s:I, s:I}}", "shadow_calls",
                      (json_int_t)calls[LEARN_SHADOW], "shadow_cost_usd", calls_cost[LEARN_SHADOW],
                      "judge_calls", (json_int_t)calls[LEARN_JUDGE], "judge_cost_usd",
                      calls_cost[LEARN_JUDGE], "labels", sources[0], (json_int_t)labels[0],
                      sources[1], (json_int_t)labels[1], sources[2], (json_int_t)labels[2])) < 0) {
        fputs("triage: out of memory\n", stderr);
        abort();
    }
    goto done;
dberr:
    storage__errf(err, errlen, "%s: %s", storage__shown(db_path), storage__db_error(db));
    away = storage__db_gone(db);
done:
    storage__finalize(st);
    storage__db_close(db);
    for (size_t i = 0; i < a.n; i++) {
        free(a.b[i].name);
        free(a.b[i].latency.v);
        free(a.b[i].ttfb.v);
    }
    free(a.b);
    for (size_t i = 0; i < ks.n; i++)
        free(ks.k[i].name);
    free(ks.k);
    for (size_t i = 0; i < fb.n; i++) {
        free(fb.p[i].from);
        free(fb.p[i].to);
    }
    free(fb.p);
    for (size_t i = 0; i < n_recent; i++) {
        free(recent[i].request_id);
        free(recent[i].backend);
        free(recent[i].error_kind);
    }
    if (!out)
        errno = away ? ENOTCONN : EIO;
    return out;
}
