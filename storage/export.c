/* export.c - turns logged prompts and their labels into training examples (JSONL). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "storage.h"
#include "storage-int.h"

/* Label sources in precedence order: the first one a backend has wins. */
enum { SRC_FEEDBACK, SRC_JUDGE, SRC_OFFLINE, SRC_N };
static const char *const source_names[SRC_N] = {"feedback", "judge", "offline"};

/* A client request row (r or c) is one whose kind is neither shadow, judge nor cascade (an
 * escalated request's fast call). */
#define CLIENT_R "(r.kind IS NULL OR r.kind NOT IN ('shadow', 'judge', 'cascade'))"
#define CLIENT_C "(c.kind IS NULL OR c.kind NOT IN ('shadow', 'judge', 'cascade'))"

/* A client request c with something to train on, and what groups it: its text, else
 * (store_prompts = features) its prompt hash, or its own id when it has none. */
#define HAS_PROMPT "(c.prompt IS NOT NULL OR c.features IS NOT NULL)"
#define KIND_KEY \
    "CASE WHEN c.prompt IS NULL THEN 1 ELSE 0 END," \
    " coalesce(c.prompt, c.prompt_hash, 'request ' || c.id)"

/* The labels of one prompt for one backend, per source. */
struct outcome {
    char *backend;
    double sum[SRC_N];
    uint64_t n[SRC_N];
    unsigned char *answer; /* the first labelled cascade fast answer by it (requests.answer) */
    size_t answer_len;
};

/* One distinct prompt text (or, for requests logged with features instead of text, one
 * prompt hash): its labels per backend and the client requests behind them. */
struct group {
    char *prompt;      /* the text, or the prompt hash when features is set */
    unsigned char *features; /* the first request's feature vector; NULL for text */
    size_t features_len;
    struct outcome *o;
    size_t n, cap;
    int64_t last_id;   /* the request whose labels came last (rows arrive sorted by it) */
    uint64_t requests; /* labelled client requests with this prompt */
};

static void
group_reset(struct group *g)
{
    free(g->prompt);
    g->prompt = NULL;
    free(g->features);
    g->features = NULL;
    for (size_t i = 0; i < g->n; i++) {
        free(g->o[i].backend);
        free(g->o[i].answer);
    }
    g->n = 0;
    g->last_id = 0;
    g->requests = 0;
}

/* Counts a label of backend's answer; answer (borrowed, NULL: none) is the stored
 * answer it graded, kept when the backend has none yet. */
static void
group_add(struct group *g, const char *backend, int src, double q, const void *answer,
          size_t answer_len)
{
    struct outcome *o = NULL;

    for (size_t i = 0; i < g->n && !o; i++)
        if (!strcmp(g->o[i].backend, backend))
            o = &g->o[i];
    if (!o) {
        if (g->n == g->cap) {
            g->cap = g->cap ? g->cap * 2 : 4;
            g->o = realloc(g->o, g->cap * sizeof(*g->o));
            if (!g->o) {
                fputs("triage: out of memory\n", stderr);
                abort();
            }
        }
        o = &g->o[g->n++];
        memset(o, 0, sizeof(*o));
        o->backend = storage__strdup(backend);
    }
    o->sum[src] += q;
    o->n[src]++;
    if (answer && answer_len && !o->answer) {
        o->answer = malloc(answer_len);
        if (!o->answer) {
            fputs("triage: out of memory\n", stderr);
            abort();
        }
        memcpy(o->answer, answer, answer_len);
        o->answer_len = answer_len;
    }
}

/* Returns len bytes (borrowed) as new padded base64 text (RFC 4648). Aborts on OOM. */
static json_t *
base64(const unsigned char *p, size_t len)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = 4 * ((len + 2) / 3);
    char *out = malloc(n + 1), *o = out;

    if (!out) {
        fputs("triage: out of memory\n", stderr);
        abort();
    }
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        *o++ = abc[v >> 18];
        *o++ = abc[(v >> 12) & 63];
        *o++ = i + 1 < len ? abc[(v >> 6) & 63] : '=';
        *o++ = i + 2 < len ? abc[v & 63] : '=';
    }
    *o = '\0';
    json_t *s = json_stringn(out, n);
    free(out);
    return s;
}

/* Emits the finished group, counting its outcomes by source in c. Returns 0, 1 when
 * the prompt is not a messages array (nothing counted), or -ECANCELED when fn asked
 * to stop. */
static int
group_emit(struct group *g, storage_export_fn *fn, void *arg, struct storage_export_counts *c)
{
    json_error_t jerr;
    json_t *doc = NULL, *messages = NULL;
    int rc = 0;

    if (g->features) {
        /* checked by whoever decodes it (router_dataset_add): storage keeps bytes */
        if (!g->features_len)
            return 1;
    } else {
        doc = json_loads(g->prompt, 0, &jerr);
        messages = doc;
        /* The daemon stores the messages array; accept a whole request body too. */
        if (json_is_object(doc))
            messages = json_object_get(doc, "messages");
        if (!json_is_array(messages) || !json_array_size(messages)) {
            json_decref(doc);
            return 1;
        }
    }
    json_t *outcomes = json_object(), *sources = json_object(), *answers = json_object();
    for (size_t i = 0; i < g->n; i++) {
        const struct outcome *o = &g->o[i];
        int src = 0;
        while (!o->n[src]) /* every outcome has at least one label */
            src++;
        json_object_set_new(outcomes, o->backend, json_real(o->sum[src] / (double)o->n[src]));
        json_object_set_new(sources, o->backend, json_string(source_names[src]));
        if (o->answer) {
            json_object_set_new(answers, o->backend, base64(o->answer, o->answer_len));
            c->answers++;
        }
        if (src == SRC_FEEDBACK)
            c->by_feedback++;
        else if (src == SRC_JUDGE)
            c->by_judge++;
        else
            c->by_offline++;
    }
    json_t *ex;
    if (g->features) {
        ex = json_pack("{s:o, s:s, s:o, s:o}", "features", base64(g->features, g->features_len),
                       "prompt_hash", g->prompt, "outcomes", outcomes, "sources", sources);
        c->by_features++;
    } else {
        ex = json_pack("{s:O, s:o, s:o}", "messages", messages, "outcomes", outcomes, "sources",
                       sources);
    }
    if (json_object_size(answers))
        json_object_set(ex, "answer_signals", answers);
    json_decref(answers);
    if (fn(ex, arg) != 0)
        rc = -ECANCELED;
    json_decref(ex);
    json_decref(doc);
    return rc;
}

/* Emits g if it has labels and counts the result. Returns 0 or -ECANCELED. */
static int
group_finish(struct group *g, storage_export_fn *fn, void *arg, struct storage_export_counts *c)
{
    if (!g->prompt || !g->n)
        return 0;
    int e = group_emit(g, fn, arg, c);
    if (e == -ECANCELED)
        return e;
    if (e == 1)
        c->bad_prompt += g->requests;
    else
        c->lines++;
    return 0;
}

int
storage_export_training(const char *db_path, storage_export_fn *fn, void *arg,
                        struct storage_export_counts *counts, char *err, size_t errlen)
{
    struct storage_export_counts c = {0};
    struct group g = {0};
    struct storage__db *db = NULL;
    struct storage__stmt *st = NULL;
    uint64_t with_prompt, labelled = 0;
    int rc = -EIO;

    db = storage__db_open(db_path, STORAGE__READ, err, errlen);
    if (!db)
        goto done;
    if (storage__db_begin(db, STORAGE__TX_SNAPSHOT) < 0) /* one snapshot */
        goto dberr;
    if (!(st = storage__prepare(db,
                           "SELECT coalesce(sum(CASE WHEN " CLIENT_R " THEN 1 ELSE 0 END), 0),"
                           " coalesce(sum(CASE WHEN " CLIENT_R " AND (prompt IS NOT NULL OR"
                           " features IS NOT NULL) THEN 1 ELSE 0 END), 0), count(*)"
                           " FROM requests r")) ||
        storage__step(st) != 1)
        goto dberr;
    c.rows = (uint64_t)storage__column_int64(st, 0);
    with_prompt = (uint64_t)storage__column_int64(st, 1);
    c.no_prompt = c.rows - with_prompt;
    c.calls = (uint64_t)storage__column_int64(st, 2) - c.rows;
    storage__finalize(st);
    st = NULL;

    /* Every label of a client request with prompt text or features, as (kind, key,
     * request, backend, source, q, features), sorted by kind (0 text, 1 features) and key
     * (the text, or the prompt hash: features of the same messages hash alike) so
     * identical prompts (retries, the same question sent to several backends) become
     * one example, then by request to count them.
     * Feedback labels the backend of the row it was posted on: the client request's,
     * or a shadow or cascade fast call's (whose prompt is its parent's); a row's feedback
     * sources are averaged into one label. Judge rows are not answers and carry none.
     * CROSS JOIN keeps the label tables outside: the requests are looked up by id, not
     * scanned. The last column is the cascade fast answer the label graded (schema 8):
     * the row's own for feedback; for an outcome, the client row's when its backend
     * answered, else its escalated fast call's ("<id>.fast", cascade.c), by the index. */
    if (!(st = storage__prepare(
            db,
            "SELECT " KIND_KEY ", c.id, r.backend, 0, avg(f.score), c.features, r.answer"
            " FROM feedback f"
            " CROSS JOIN requests r ON r.request_id = f.request_id"
            " CROSS JOIN requests c ON c.request_id ="
            " (CASE WHEN r.kind IN ('shadow', 'cascade') THEN r.parent_id ELSE r.request_id END)"
            " WHERE r.backend IS NOT NULL AND (r.kind IS NULL OR r.kind <> 'judge')"
            " AND " HAS_PROMPT " AND " CLIENT_C " GROUP BY r.id, c.id"
            " UNION ALL"
            " SELECT " KIND_KEY ", c.id, o.backend,"
            " CASE o.source WHEN 'feedback' THEN 0 WHEN 'judge' THEN 1 ELSE 2 END, o.q,"
            " c.features, CASE WHEN c.backend = o.backend THEN c.answer ELSE"
            " (SELECT a.answer FROM requests a WHERE a.request_id = c.request_id || '.fast'"
            " AND a.backend = o.backend) END"
            " FROM outcomes o CROSS JOIN requests c ON c.request_id = o.request_id"
            " WHERE " HAS_PROMPT " AND " CLIENT_C " ORDER BY 1, 2, 3")))
        goto dberr;
    int step;
    while ((step = storage__step(st)) == 1) {
        int feat = (int)storage__column_int64(st, 0);
        const char *prompt = storage__column_text(st, 1);
        int64_t id = storage__column_int64(st, 2);
        const char *backend = storage__column_text(st, 3);
        int src = (int)storage__column_int64(st, 4);

        if (g.prompt && (strcmp(g.prompt, prompt) || feat != !!g.features)) {
            if (group_finish(&g, fn, arg, &c) < 0) {
                rc = -ECANCELED;
                goto done;
            }
            group_reset(&g);
        }
        if (!g.prompt) {
            g.prompt = storage__strdup(prompt);
            if (feat) {
                /* a NULL blob reads as 0 bytes: group_emit skips the group then */
                const void *b = storage__column_blob(st, 6, &g.features_len);
                g.features = malloc(g.features_len ? g.features_len : 1);
                if (!g.features) {
                    fputs("triage: out of memory\n", stderr);
                    abort();
                }
                if (g.features_len)
                    memcpy(g.features, b, g.features_len);
            }
        }
        if (id != g.last_id) {
            g.last_id = id;
            g.requests++;
            labelled++;
        }
        size_t alen = 0;
        const void *answer = storage__column_blob(st, 7, &alen);
        group_add(&g, backend, src, storage__column_double(st, 5), answer, alen);
    }
    if (step != 0)
        goto dberr;
    if (group_finish(&g, fn, arg, &c) < 0) {
        rc = -ECANCELED;
        goto done;
    }
    c.no_outcome = with_prompt - labelled;
    rc = 0;
    goto done;
dberr:
    storage__errf(err, errlen, "%s: %s", storage__shown(db_path), storage__db_error(db));
done:
    storage__finalize(st);
    storage__db_close(db);
    group_reset(&g);
    free(g.o);
    if (counts)
        *counts = c;
    return rc;
}

static int
write_line(json_t *example, void *arg)
{
    FILE *out = arg;

    if (json_dumpf(example, out, JSON_COMPACT) < 0 || fputc('\n', out) == EOF)
        return -1;
    return 0;
}

int
storage_export_jsonl(const char *db_path, FILE *out, struct storage_export_counts *counts,
                     char *err, size_t errlen)
{
    int rc = storage_export_training(db_path, write_line, out, counts, err, errlen);

    if (rc == -ECANCELED) {
        storage__errf(err, errlen, "writing the export failed");
        return -EIO;
    }
    return rc;
}
