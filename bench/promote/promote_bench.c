/* promote_bench.c - what a retrain's promotion sees of the escalation part, on the GSM8K
 * replay data: the champion and challengers measured on the held-out judged fast answers
 * exactly as daemon/promote.c measures them (router_eval_escalation).
 *
 * Reads data/replay/gsm8k.jsonl (uncompressed, on stdin). Every question is a judged
 * cascade row of the log: Mixtral's answer is the fast answer, graded by its final number
 * (the rule `triage replay --judge` judges by; --noise P flips a share P of the grades),
 * GPT-4's the strong one. The daemon's split: one prompt in five held out by the FNV-1a
 * hash of its messages as compact JSON with sorted keys (retrain.c's prompt_hash). On the
 * rest, as a retrain with base_data = none: a challenger (the log's labels), and a
 * challenger whose fast-answer labels were flipped. Measured on the held-out answers:
 * the shipped model (models/default.tmod, the signals-only default escalation), both
 * challengers, and each challenger's escalation joined to the shipped routing
 * (router_model_combine: what a promotion of the escalation part alone serves), at
 * --escalate-at (0.5). Prints the held-out APGR of each routing part too. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../../cli/grade.h"
#include "router.h"

static uint64_t
mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* retrain.c's prompt_hash of a messages array */
static uint64_t
prompt_hash(const json_t *messages)
{
    char *text = json_dumps(messages, JSON_COMPACT | JSON_SORT_KEYS);
    uint64_t h = 1469598103934665603ull;

    for (const char *p = text ? text : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    free(text);
    return h;
}

static double
apgr(const struct router_model *m, const struct router_dataset *d, const size_t *idx, size_t n)
{
    double *s = malloc(n * sizeof(double)), *qw = malloc(n * sizeof(double)),
           *qs = malloc(n * sizeof(double));
    int w = router_dataset_head_find(d, "weak"), st = router_dataset_head_find(d, "strong");
    struct router_eval ev;
    double a = NAN;

    for (size_t i = 0; i < n; i++) {
        struct router_scores sc;
        router_dataset_score(m, d, idx[i], &sc);
        s[i] = sc.score;
        qw[i] = router_dataset_outcome(d, idx[i], w);
        qs[i] = router_dataset_outcome(d, idx[i], st);
    }
    if (router_eval_routing(s, qw, qs, n, &ev) == 0)
        a = ev.apgr;
    free(s);
    free(qw);
    free(qs);
    return a;
}

static void
row(const char *name, const struct router_model *m, const struct router_dataset *d,
    const size_t *hold, size_t n_hold, double at, const struct router_escalation_eval *champ)
{
    struct router_escalation_eval e;

    router_eval_escalation(m, d, hold, n_hold, "weak", at, &e);
    printf("| %-44s | %.4f | %+.4f | %5.1f%% | %5.1f%% | %.4f | %zu |\n", name, e.auc,
           champ ? e.auc - champ->auc : 0.0, 100 * e.escalated, 100 * e.caught,
           apgr(m, d, hold, n_hold), router_model_escalation_examples(m));
}

static struct router_model *
train(const struct router_dataset *d, const size_t *idx, size_t n)
{
    struct router_train_opts o;
    char err[256];

    router_train_opts_tuned(&o); /* as retrain.c */
    o.weak = "weak";
    o.strong = "strong";
    struct router_model *m = router_train(d, idx, n, &o, err, sizeof(err));
    if (!m) {
        fprintf(stderr, "promote_bench: %s\n", err);
        exit(1);
    }
    return m;
}

int
main(int argc, char **argv)
{
    const char *model = "models/default.tmod";
    double noise = 0, at = 0.5;
    unsigned long seed = 1;
    char err[256];
    static char line[1 << 20];

    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--model"))
            model = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--noise"))
            noise = atof(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--seed"))
            seed = strtoul(argv[++i], NULL, 10);
        else if (i + 1 < argc && !strcmp(argv[i], "--escalate-at"))
            at = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: promote_bench [--model M] [--noise P] [--seed N] "
                            "[--escalate-at E] < gsm8k.jsonl\n");
            return 2;
        }
    }
    struct router_model *champ = router_model_load(model, err, sizeof(err));
    if (!champ) {
        fprintf(stderr, "promote_bench: %s\n", err);
        return 1;
    }
    unsigned bits = router_model_bits(champ);
    struct router_dataset *d = router_dataset_new(bits), *flip = router_dataset_new(bits);
    size_t *hold = NULL, *tr = NULL, n_hold = 0, n_tr = 0, n = 0;
    while (fgets(line, sizeof(line), stdin)) {
        json_t *r = json_loads(line, 0, NULL);
        const char *prompt, *ref, *wa, *sa;
        if (!r || json_unpack(r, "{s:s,s:s,s:{s:s,s:s}}", "prompt", &prompt, "reference", &ref,
                              "answers", "mixtral-8x7b-instruct", &wa, "gpt-4-1106-preview",
                              &sa) < 0) {
            fprintf(stderr, "promote_bench: line %zu: not a replay record\n", n + 1);
            return 1;
        }
        double refv = strtod(ref, NULL);
        int qw = grade_is_correct(wa, refv), qs = grade_is_correct(sa, refv);
        if ((double)(mix64(seed * 0x9e3779b97f4a7c15ULL + 2 * n) >> 11) / 9007199254740992.0 < noise)
            qw = !qw;
        json_t *ex = json_pack("{s:[{s:s,s:s}],s:{s:i,s:i},s:{s:s}}", "messages", "role", "user",
                               "content", prompt, "outcomes", "weak", qw, "strong", qs, "answers",
                               "weak", wa);
        int held = prompt_hash(json_object_get(ex, "messages")) % 5 == 0;
        size_t at_d = router_dataset_size(d);
        if (router_dataset_add(d, ex) == 0 && router_dataset_size(d) > at_d) {
            if (!held) /* the held-out prompts keep their true labels in both sets */
                json_object_set_new(json_object_get(ex, "outcomes"), "weak", json_integer(!qw));
            router_dataset_add(flip, ex);
            size_t **v = held ? &hold : &tr, *k = held ? &n_hold : &n_tr;
            *v = realloc(*v, (*k + 1) * sizeof(size_t));
            (*v)[(*k)++] = at_d;
        }
        json_decref(ex);
        json_decref(r);
        n++;
    }
    struct router_model *chal = train(d, tr, n_tr), *bad = train(flip, tr, n_tr);
    struct router_model *c_chal = router_model_combine(champ, chal, err, sizeof(err)),
                        *c_bad = router_model_combine(champ, bad, err, sizeof(err));
    struct router_escalation_eval e0;
    router_eval_escalation(champ, d, hold, n_hold, "weak", at, &e0);

    printf("GSM8K replay: %zu questions, %zu held out (retrain.c's hash), %zu trained on; "
           "fast answers judged by their final number (noise %.2f): %.1f%% of the held-out "
           "ones bad. Escalation AUC for \"the fast answer is bad\" on the %zu held-out judged "
           "fast answers; escalated and caught at escalate_at %g.\n\n",
           n, n_hold, n_tr, noise, 100 * e0.bad, e0.n, at);
    printf("| model | esc. AUC | vs champion | escalated | bad caught | routing APGR | esc. "
           "trained on |\n|---|---|---|---|---|---|---|\n");
    row("champion: shipped model (default escalation)", champ, d, hold, n_hold, at, NULL);
    row("challenger (judge labels)", chal, d, hold, n_hold, at, &e0);
    row("challenger, fast-answer labels flipped", bad, d, hold, n_hold, at, &e0);
    row("shipped routing + challenger's escalation", c_chal, d, hold, n_hold, at, &e0);
    row("shipped routing + flipped escalation", c_bad, d, hold, n_hold, at, &e0);

    router_model_unref(c_chal);
    router_model_unref(c_bad);
    router_model_unref(chal);
    router_model_unref(bad);
    router_model_unref(champ);
    router_dataset_destroy(d);
    router_dataset_destroy(flip);
    free(hold);
    free(tr);
    router_thread_cleanup();
    return 0;
}
