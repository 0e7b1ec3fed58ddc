/* export.c - turns logged prompts and their feedback into training examples (JSONL). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sqlite3.h>

#include "storage.h"
#include "storage-int.h"

/* The feedback-labelled outcomes of one prompt, per backend. */
struct outcome {
    char *backend;
    double sum;
    uint64_t n;
};

struct group {
    char *prompt;
    struct outcome *o;
    size_t n, cap;
};

static void
group_reset(struct group *g)
{
    free(g->prompt);
    g->prompt = NULL;
    for (size_t i = 0; i < g->n; i++)
        free(g->o[i].backend);
    g->n = 0;
}

static void
group_add(struct group *g, const char *backend, double score)
{
    for (size_t i = 0; i < g->n; i++)
        if (!strcmp(g->o[i].backend, backend)) {
            g->o[i].sum += score;
            g->o[i].n++;
            return;
        }
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 4;
        g->o = realloc(g->o, g->cap * sizeof(*g->o));
        if (!g->o) {
            fputs("triage: out of memory\n", stderr);
            abort();
        }
    }
    g->o[g->n++] = (struct outcome){storage__strdup(backend), score, 1};
}

static uint64_t
group_rows(const struct group *g)
{
    uint64_t n = 0;

    for (size_t i = 0; i < g->n; i++)
        n += g->o[i].n;
    return n;
}

/* Emits the finished group. Returns 0, 1 when the prompt is not a messages array,
 * or -ECANCELED when fn asked to stop. */
static int
group_emit(struct group *g, storage_export_fn *fn, void *arg)
{
    json_error_t jerr;
    json_t *doc = json_loads(g->prompt, 0, &jerr);
    json_t *messages = doc;
    int rc = 0;

    /* The daemon stores the messages array; accept a whole request body too. */
    if (json_is_object(doc))
        messages = json_object_get(doc, "messages");
    if (!json_is_array(messages) || !json_array_size(messages)) {
        json_decref(doc);
        return 1;
    }
    json_t *outcomes = json_object();
    for (size_t i = 0; i < g->n; i++)
        json_object_set_new(outcomes, g->o[i].backend, json_real(g->o[i].sum / (double)g->o[i].n));
    json_t *ex = json_pack("{s:O, s:o}", "messages", messages, "outcomes", outcomes);
    if (fn(ex, arg) != 0)
        rc = -ECANCELED;
    json_decref(ex);
    json_decref(doc);
    return rc;
}

int
storage_export_training(const char *db_path, storage_export_fn *fn, void *arg,
                        struct storage_export_counts *counts, char *err, size_t errlen)
{
    struct storage_export_counts c = {0};
    struct group g = {0};
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = -EIO;

    db = storage__open_read(db_path, err, errlen);
    if (!db)
        goto done;
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        goto dberr;
    if (sqlite3_prepare_v2(db,
                           "SELECT count(*), count(prompt), (SELECT count(*) FROM requests r"
                           " WHERE r.prompt IS NOT NULL AND NOT EXISTS (SELECT 1 FROM feedback f"
                           " WHERE f.request_id = r.request_id)) FROM requests",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW)
        goto dberr;
    c.rows = (uint64_t)sqlite3_column_int64(st, 0);
    c.no_prompt = c.rows - (uint64_t)sqlite3_column_int64(st, 1);
    c.no_outcome = (uint64_t)sqlite3_column_int64(st, 2);
    sqlite3_finalize(st);
    st = NULL;

    /* One row per request with prompt text and feedback: its backend and the mean of
     * its feedback over sources. Sorted by prompt so identical prompts (retries, the
     * same question sent to several backends) become one example with several
     * outcomes. */
    if (sqlite3_prepare_v2(db,
                           "SELECT r.prompt, r.backend, f.q FROM requests r"
                           " JOIN (SELECT request_id, avg(score) AS q FROM feedback"
                           " GROUP BY request_id) f ON f.request_id = r.request_id"
                           " WHERE r.prompt IS NOT NULL ORDER BY r.prompt",
                           -1, &st, NULL) != SQLITE_OK)
        goto dberr;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *prompt = (const char *)sqlite3_column_text(st, 0);
        const char *backend = (const char *)sqlite3_column_text(st, 1);

        if (g.prompt && strcmp(g.prompt, prompt)) {
            if (g.n) {
                int e = group_emit(&g, fn, arg);
                if (e == -ECANCELED) {
                    rc = e;
                    goto done;
                }
                if (e == 1)
                    c.bad_prompt += group_rows(&g);
                else
                    c.lines++;
            }
            group_reset(&g);
        }
        if (!g.prompt)
            g.prompt = storage__strdup(prompt);
        if (sqlite3_column_type(st, 2) == SQLITE_NULL || !backend)
            c.no_outcome++;
        else
            group_add(&g, backend, sqlite3_column_double(st, 2));
    }
    if (step != SQLITE_DONE)
        goto dberr;
    if (g.prompt && g.n) {
        int e = group_emit(&g, fn, arg);
        if (e == -ECANCELED) {
            rc = e;
            goto done;
        }
        if (e == 1)
            c.bad_prompt += group_rows(&g);
        else
            c.lines++;
    }
    rc = 0;
    goto done;
dberr:
    storage__errf(err, errlen, "%s: %s", db_path, sqlite3_errmsg(db));
done:
    sqlite3_finalize(st);
    sqlite3_close(db);
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
