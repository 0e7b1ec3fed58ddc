/* seed_learning.c - writes an outcome log with shadow calls and judge labels for test_train_db.sh.
 *
 * usage: seed_learning FILE
 * 40 client requests served by backend "fast", each shadowed to "strong" and both
 * answers graded by a judge (logged as judge calls, labelled through
 * storage_outcome_submit): "fast" fails the hard prompts (q 0), "strong" answers
 * everything (q 1). 10 more client requests have only fast's grade (no shadow). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage.h"

/* Prompts are "<a> N <b> M" from these pairs. */
static const char *const easy[][2] = {
    {"what is", "plus"}, {"say hello to friend", "and"}, {"name the colour of item", "and"}};
static const char *const hard[][2] = {
    {"derive the asymptotic eigenvalue spacing of operator", "and prove convergence of"},
    {"prove that the integral of kernel", "is bounded by the spectral norm of"},
    {"show the homology group of complex", "is isomorphic to that of"}};

static struct storage_record *
rec(const char *id, const char *kind, const char *parent, const char *backend, int64_t t,
    const char *prompt)
{
    struct storage_record *r = storage_record_new();
    r->request_id = strdup(id);
    r->kind = kind ? strdup(kind) : NULL;
    r->parent_id = parent ? strdup(parent) : NULL;
    r->backend = strdup(backend);
    r->started_ms = t;
    r->finished_ms = t + 100;
    r->status = 200;
    r->latency_ms = 100;
    r->tokens_in = 20;
    r->tokens_out = 20;
    r->cost_usd = !strcmp(backend, "strong") ? 0.001 : 0.0001;
    r->prompt = prompt ? strdup(prompt) : NULL;
    return r;
}

int
main(int argc, char **argv)
{
    char err[256], id[64], sid[64], jid[64], text[256], prompt[512];
    int64_t t = (int64_t)time(NULL) * 1000 - 600000;
    int bad = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: seed_learning FILE\n");
        return 2;
    }
    struct storage *s = storage_open(argv[1], NULL, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "seed_learning: %s\n", err);
        return 1;
    }
    for (int i = 0; i < 50; i++) {
        int is_hard = i % 2;
        const char *const *words = (is_hard ? hard : easy)[i % 3];
        snprintf(text, sizeof(text), "%s %d %s %d", words[0], i, words[1], i * 7 % 13);
        snprintf(prompt, sizeof(prompt), "[{\"role\":\"user\",\"content\":\"%s\"}]", text);
        snprintf(id, sizeof(id), "c-%d", i);
        bad |= storage_submit(s, rec(id, NULL, NULL, "fast", t + i * 1000, prompt));
        bad |= storage_outcome_submit(s, id, "fast", "judge", is_hard ? 0.0 : 1.0, "rating");
        snprintf(jid, sizeof(jid), "j-fast-%d", i);
        bad |= storage_submit(s, rec(jid, "judge", id, "strong", t + i * 1000 + 200, NULL));
        if (i >= 40)
            continue; /* only fast's grade for these */
        snprintf(sid, sizeof(sid), "s-%d", i);
        bad |= storage_submit(s, rec(sid, "shadow", id, "strong", t + i * 1000 + 100, NULL));
        snprintf(jid, sizeof(jid), "j-strong-%d", i);
        bad |= storage_submit(s, rec(jid, "judge", id, "strong", t + i * 1000 + 300, NULL));
        bad |= storage_outcome_submit(s, id, "strong", "judge", 1.0, "rating");
    }
    storage_close(s);
    if (bad)
        fprintf(stderr, "seed_learning: a submit was refused\n");
    return bad ? 1 : 0;
}
