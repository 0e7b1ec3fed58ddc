/* cascade_bench.c - the cascade offline and prequential on GSM8K replay data: models learned
 * from judge labels of the first half of the questions, tested on the second half.
 *
 * Reads data/replay/gsm8k.jsonl (uncompressed, on stdin): each question with the reference
 * number and both models' recorded answers. A judge's label of an answer is its grade by
 * the final number (the rule `triage replay --judge` judges by), flipped with probability
 * --noise. From the first half's labels alone it trains one model with `triage train`'s
 * settings: the prompt router (heads weak/strong) and the escalation model (the weak
 * head's judged answers). Operating points are chosen on the first half alone, out of
 * fold (5 folds, judge labels): the smallest strong share (or escalation share) from which
 * on the accuracy stays at or above the target share of always-strong's (plus --margin).
 * The cascade's point becomes a score cut, escalate_at (the out-of-fold score at that
 * share), applied as is to the second half's scores, as a daemon would apply it; prompt-only
 * and random routing keep their share. On the second half it prints accuracy (by the true
 * grade) and cost for always-fast, always-strong, random, prompt-only routing and the
 * cascade. --dev prints the first half's out-of-fold figures only (what may be tuned on)
 * and leaves the second half untouched. Token counts are bytes / 4; prices in USD per 1M
 * tokens; the cascade pays the fast call on every question, escalated ones the strong
 * call too. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../../cli/grade.h"
#include "prompt_features.h"
#include "router.h"

struct item {
    char *prompt, *weak, *strong;
    int ok_weak, ok_strong;     /* true grade */
    double q_weak, q_strong;    /* judge label */
    double p_tok, w_tok, s_tok; /* tokens: prompt, weak answer, strong answer */
    float sig[FEATURES_N_ANSWER];
};

static struct {
    int dev; /* first half only: out-of-fold figures there, the second half untouched */
    int routellm_truth; /* accuracy by RouteLLM's own labels instead of the final number */
    double noise, target, margin;
    unsigned long seed;
    double fast_in, fast_out, strong_in, strong_out;
    const char *weak_name, *strong_name;
} opt = {0, 0, 0.0, 0.95, 0.0, 1, 0.6, 0.6, 10, 30, "mixtral-8x7b-instruct", "gpt-4-1106-preview"};

static uint64_t
mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double
unit(uint64_t a, uint64_t b)
{
    return (double)(mix64(mix64(a * 0x9e3779b97f4a7c15ULL + b)) >> 11) / 9007199254740992.0;
}

static double
cost_fast(const struct item *it)
{
    return (it->p_tok * opt.fast_in + it->w_tok * opt.fast_out) / 1e6;
}

static double
cost_strong(const struct item *it)
{
    return (it->p_tok * opt.strong_in + it->s_tok * opt.strong_out) / 1e6;
}

static json_t *
example(const struct item *it, int labelled)
{
    json_t *e = json_pack("{s:s}", "prompt", it->prompt);

    if (labelled) {
        json_object_set_new(e, "outcomes",
                            json_pack("{s:f,s:f}", "weak", it->q_weak, "strong", it->q_strong));
        json_object_set_new(e, "answers", json_pack("{s:s}", "weak", it->weak));
    }
    return e;
}

/* Trains on items idx (judge labels). */
static struct router_model *
train(struct item *items, const size_t *idx, size_t n)
{
    struct router_dataset *d = router_dataset_new(18);
    struct router_train_opts o;
    char err[256];

    for (size_t i = 0; i < n; i++) {
        json_t *e = example(&items[idx[i]], 1);
        if (router_dataset_add(d, e) < 0) {
            fprintf(stderr, "cascade_bench: item %zu not added\n", idx[i]);
            exit(1);
        }
        json_decref(e);
    }
    router_train_opts_tuned(&o);
    struct router_model *m = router_train(d, NULL, 0, &o, err, sizeof(err));
    if (!m) {
        fprintf(stderr, "cascade_bench: %s\n", err);
        exit(1);
    }
    router_dataset_destroy(d);
    return m;
}

/* Scores items idx with m: prompt score and escalation score. */
static void
score(const struct router_model *m, struct item *items, const size_t *idx, size_t n, double *ps,
      double *es)
{
    for (size_t i = 0; i < n; i++) {
        struct item *it = &items[idx[i]];
        struct router_scores sc;
        json_t *req = example(it, 0);
        router_score_request(m, req, &sc);
        ps[i] = sc.score;
        if (router_escalation_score(m, req, it->weak, strlen(it->weak), it->sig, &es[i]) < 0)
            es[i] = 1;
        json_decref(req);
    }
}

struct result {
    double acc, cost, strong_share; /* strong_share: strong calls per question */
};

enum policy { P_PROMPT, P_CASCADE, P_RANDOM };

/* Runs a policy on items idx sending the top `share` of them by key to strong (for
 * P_RANDOM, a seeded draw), graded by the truth (judge = 0) or the judge labels. */
static int
cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static struct result
run(enum policy p, const struct item *items, const size_t *idx, size_t n, const double *key,
    double share, int judge)
{
    struct result r = {0, 0, 0};
    double *sorted = malloc(n * sizeof(double)), cut;
    size_t k = (size_t)floor(share * (double)n + 0.5), ties_left;

    memcpy(sorted, key, n * sizeof(double));
    /* the k-th largest key is the cut; ties at the cut are taken in order */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && sorted[j] > sorted[j - 1]; j--) {
            double t = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = t;
        }
    cut = k ? sorted[k - 1] : INFINITY;
    ties_left = 0;
    for (size_t i = 0; i < k; i++)
        ties_left += sorted[i] == cut;
    free(sorted);
    for (size_t i = 0; i < n; i++) {
        const struct item *it = &items[idx[i]];
        int strong;
        if (p == P_RANDOM)
            strong = unit(opt.seed + 7, idx[i]) < share;
        else if (key[i] > cut)
            strong = 1;
        else if (key[i] == cut && ties_left > 0) {
            strong = 1;
            ties_left--;
        } else
            strong = 0;
        double ok_w = judge ? it->q_weak : it->ok_weak, ok_s = judge ? it->q_strong : it->ok_strong;
        if (p == P_CASCADE) {
            r.cost += cost_fast(it) + (strong ? cost_strong(it) : 0);
            r.acc += strong ? ok_s : ok_w;
        } else {
            r.cost += strong ? cost_strong(it) : cost_fast(it);
            r.acc += strong ? ok_s : ok_w;
        }
        r.strong_share += strong;
    }
    r.acc /= (double)n;
    r.strong_share /= (double)n;
    return r;
}

#define FOLDS 5
#define STEPS 100

/* Picks the operating point on the first half: the smallest share (in steps of 1%) from
 * which on the out-of-fold accuracy by judge labels stays at or above the target share
 * of always-strong's there (plus --margin): the first crossing of a noisy curve would be
 * an optimistic pick. */
static double
pick_share(enum policy p, const struct item *items, const size_t *idx, size_t n, const double *oof)
{
    struct result all = run(P_PROMPT, items, idx, n, oof, 1.0, 1);
    double pick = 1.0;

    for (int s = STEPS; s >= 0; s--) {
        struct result r = run(p, items, idx, n, oof, (double)s / STEPS, 1);
        if (r.acc < (opt.target + opt.margin) * all.acc)
            break;
        pick = (double)s / STEPS;
    }
    return pick;
}

/* Returns the score cut that sends the top `share` of scores[0..n) on: the escalate_at
 * a daemon would be configured with (escalated when the score is at or above it). */
static double
cut_at_share(const double *scores, size_t n, double share)
{
    double *sorted = malloc(n * sizeof(double)), cut;
    size_t k = (size_t)floor(share * (double)n + 0.5);

    memcpy(sorted, scores, n * sizeof(double));
    qsort(sorted, n, sizeof(double), cmp_desc);
    cut = k == 0 ? INFINITY : sorted[k - 1];
    free(sorted);
    return cut;
}

/* The cascade on items idx escalating the answers whose score is at or above cut,
 * graded by the truth. */
static struct result
run_cut(const struct item *items, const size_t *idx, size_t n, const double *score, double cut)
{
    struct result r = {0, 0, 0};

    for (size_t i = 0; i < n; i++) {
        const struct item *it = &items[idx[i]];
        int strong = router_cascade_escalate(score[i], cut);
        r.cost += cost_fast(it) + (strong ? cost_strong(it) : 0);
        r.acc += strong ? it->ok_strong : it->ok_weak;
        r.strong_share += strong;
    }
    r.acc /= (double)n;
    r.strong_share /= (double)n;
    return r;
}

static void
row(const char *name, struct result r, struct result strong, const char *note)
{
    printf("| %-26s | %5.1f%% | %5.1f%% | %8.4f | %5.1f%% | %5.1f%% | %s |\n", name, 100 * r.acc,
           100 * r.acc / strong.acc, r.cost, 100 * r.cost / strong.cost, 100 * r.strong_share, note);
}

static void
usage(void)
{
    fprintf(stderr, "usage: cascade_bench [--dev] [--noise P] [--seed N] [--target F] [--margin F] "
                    "[--routellm-labels] "
                    "[--prices FAST_IN,FAST_OUT,STRONG_IN,STRONG_OUT] < gsm8k.jsonl\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    struct item *items = NULL;
    size_t n = 0, cap = 0;
    char line[1 << 16];

    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--noise") == 0)
            opt.noise = atof(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--seed") == 0)
            opt.seed = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--dev") == 0)
            opt.dev = 1;
        else if (strcmp(argv[i], "--routellm-labels") == 0)
            opt.routellm_truth = 1;
        else if (i + 1 < argc && strcmp(argv[i], "--margin") == 0)
            opt.margin = atof(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--target") == 0)
            opt.target = atof(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--prices") == 0) {
            if (sscanf(argv[++i], "%lf,%lf,%lf,%lf", &opt.fast_in, &opt.fast_out, &opt.strong_in,
                       &opt.strong_out) != 4)
                usage();
        } else
            usage();
    }
    while (fgets(line, sizeof(line), stdin)) {
        json_error_t jerr;
        json_t *r = json_loads(line, 0, &jerr);
        const char *prompt, *ref, *wa, *sa;
        int cw, cs;
        if (!r || json_unpack(r, "{s:s,s:s,s:{s:s,s:s},s:{s:b,s:b}}", "prompt", &prompt,
                              "reference", &ref, "answers", opt.weak_name, &wa, opt.strong_name,
                              &sa, "correct", opt.weak_name, &cw, opt.strong_name, &cs) < 0) {
            fprintf(stderr, "cascade_bench: line %zu: not a replay record\n", n + 1);
            return 1;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 2048;
            items = realloc(items, cap * sizeof(*items));
        }
        struct item *it = &items[n];
        double refv = strtod(ref, NULL);
        it->prompt = strdup(prompt);
        it->weak = strdup(wa);
        it->strong = strdup(sa);
        int jw = grade_is_correct(wa, refv), js = grade_is_correct(sa, refv);
        it->ok_weak = opt.routellm_truth ? cw : jw;
        it->ok_strong = opt.routellm_truth ? cs : js;
        it->q_weak = unit(opt.seed, 2 * n) < opt.noise ? !jw : jw;
        it->q_strong = unit(opt.seed, 2 * n + 1) < opt.noise ? !js : js;
        it->p_tok = strlen(prompt) / 4.0;
        it->w_tok = strlen(wa) / 4.0;
        it->s_tok = strlen(sa) / 4.0;
        features_answer_signals(wa, strlen(wa), prompt, strlen(prompt), NULL, NULL, 0, it->sig);
        n++;
        json_decref(r);
    }
    if (n < 100) {
        fprintf(stderr, "cascade_bench: %zu records, need 100\n", n);
        return 1;
    }
    size_t h = n / 2, n2 = n - h;
    size_t *first = malloc(h * sizeof(size_t)), *second = malloc(n2 * sizeof(size_t));
    for (size_t i = 0; i < h; i++)
        first[i] = i;
    for (size_t i = 0; i < n2; i++)
        second[i] = h + i;

    /* out-of-fold scores on the first half, to choose operating points honestly */
    double *oof_p = malloc(h * sizeof(double)), *oof_e = malloc(h * sizeof(double));
    size_t *tr = malloc(h * sizeof(size_t)), *te = malloc(h * sizeof(size_t));
    double *tp = malloc(h * sizeof(double)), *te_e = malloc(h * sizeof(double));
    for (int f = 0; f < FOLDS; f++) {
        size_t ntr = 0, nte = 0;
        for (size_t i = 0; i < h; i++) {
            if ((int)(i % FOLDS) == f)
                te[nte++] = i;
            else
                tr[ntr++] = i;
        }
        struct router_model *m = train(items, tr, ntr);
        score(m, items, te, nte, tp, te_e);
        for (size_t i = 0; i < nte; i++) {
            oof_p[te[i]] = tp[i];
            oof_e[te[i]] = te_e[i];
        }
        router_model_unref(m);
    }
    double share_prompt = pick_share(P_PROMPT, items, first, h, oof_p);
    double share_casc = pick_share(P_CASCADE, items, first, h, oof_e);
    double share_rand = pick_share(P_RANDOM, items, first, h, oof_p);
    double escalate_at = cut_at_share(oof_e, h, share_casc);
    {
        /* the first half's own out-of-fold figures: what choices may be tuned on */
        double *qw = malloc(h * sizeof(double)), *qs = malloc(h * sizeof(double));
        struct router_eval ev_p, ev_e;
        for (size_t i = 0; i < h; i++) {
            qw[i] = items[i].q_weak;
            qs[i] = 1.0;
        }
        router_eval_routing(oof_p, qw, qs, h, &ev_p);
        router_eval_routing(oof_e, qw, qs, h, &ev_e);
        struct result all = run(P_PROMPT, items, first, h, oof_p, 1.0, 1);
        struct result r = run(P_CASCADE, items, first, h, oof_e, share_casc, 1);
        printf("First half, out of fold (%d folds, judge labels): AUC for the fast answer failing: "
               "prompt score %.3f, escalation score %.3f; cascade escalating %.0f%% (escalate_at "
               "%.3f): %.1f%% of always-strong's accuracy at %.1f%% of its cost.\n",
               FOLDS, ev_p.auc, ev_e.auc, 100 * share_casc, escalate_at, 100 * r.acc / all.acc,
               100 * r.cost / all.cost);
        free(qw);
        free(qs);
        if (opt.dev)
            return 0; /* the second half untouched */
    }

    /* the model of the whole first half, tested on the second */
    struct router_model *m = train(items, first, h);
    double *ps = malloc(n2 * sizeof(double)), *es = malloc(n2 * sizeof(double));
    score(m, items, second, n2, ps, es);

    /* the untrained default escalation: the same prompt model, its answer model dropped */
    size_t esc_n = router_model_escalation_examples(m);

    struct result strong = run(P_PROMPT, items, second, n2, ps, 1.0, 0);
    struct result fast = run(P_PROMPT, items, second, n2, ps, 0.0, 0);
    struct result prompt = run(P_PROMPT, items, second, n2, ps, share_prompt, 0);
    struct result casc = run_cut(items, second, n2, es, escalate_at);
    struct result rnd = run(P_RANDOM, items, second, n2, ps, share_rand, 0);

    printf("GSM8K replay: %zu questions; trained on the first %zu (judge labels, noise %.2f; "
           "%zu judged fast answers for the escalation model), tested on the last %zu.\n",
           n, h, opt.noise, esc_n, n2);
    printf("Prices USD/1M tokens: fast %.2f/%.2f, strong %.2f/%.2f; tokens = bytes/4. "
           "Target: %.0f%% of always-strong accuracy, operating points picked out-of-fold on "
           "the first half.\n\n",
           opt.fast_in, opt.fast_out, opt.strong_in, opt.strong_out, 100 * opt.target);
    {
        double *qw = malloc(n2 * sizeof(double)), *qs = malloc(n2 * sizeof(double));
        struct router_eval ev_p, ev_e;
        for (size_t i = 0; i < n2; i++) {
            qw[i] = items[second[i]].ok_weak;
            qs[i] = 1.0; /* the cascade's score ranks the weak answer's failure */
        }
        router_eval_routing(ps, qw, qs, n2, &ev_p);
        router_eval_routing(es, qw, qs, n2, &ev_e);
        printf("AUC for the fast answer failing, second half: prompt score %.3f, escalation "
               "score %.3f\n", ev_p.auc, ev_e.auc);
        free(qw);
        free(qs);
    }
    printf("\n");
    printf("| policy                     | accuracy | of strong | cost USD | of strong | strong "
           "calls | operating point |\n");
    printf("|---|---|---|---|---|---|---|\n");
    char note[128];
    row("always-fast", fast, strong, "");
    row("always-strong", strong, strong, "");
    snprintf(note, sizeof(note), "strong share %.0f%%", 100 * share_rand);
    row("random", rnd, strong, note);
    snprintf(note, sizeof(note), "strong share %.0f%%", 100 * share_prompt);
    row("prompt-only routing", prompt, strong, note);
    snprintf(note, sizeof(note), "escalate_at %.3f (%.0f%% on the first half)", escalate_at,
             100 * share_casc);
    row("cascade", casc, strong, note);

    /* the whole curve on the second half, for reference (not an honest operating point) */
    printf("\nSecond half, by share sent to strong (escalated for the cascade):\n");
    printf("| share | prompt-only acc | cost | cascade acc | cost | random acc | cost |\n");
    printf("|---|---|---|---|---|---|---|\n");
    for (int s = 0; s <= 100; s += 10) {
        struct result a = run(P_PROMPT, items, second, n2, ps, s / 100.0, 0);
        struct result b = run(P_CASCADE, items, second, n2, es, s / 100.0, 0);
        struct result c = run(P_RANDOM, items, second, n2, ps, s / 100.0, 0);
        printf("| %3d%% | %5.1f%% | %5.1f%% | %5.1f%% | %5.1f%% | %5.1f%% | %5.1f%% |\n", s,
               100 * a.acc, 100 * a.cost / strong.cost, 100 * b.acc, 100 * b.cost / strong.cost,
               100 * c.acc, 100 * c.cost / strong.cost);
    }
    int ok = casc.acc >= opt.target * strong.acc && casc.cost <= 0.60 * strong.cost;
    printf("\nbar (cascade >= %.0f%% of always-strong accuracy at <= 60%% of its cost): %s\n",
           100 * opt.target, ok ? "met" : "NOT met");

    router_model_unref(m);
    for (size_t i = 0; i < n; i++) {
        free(items[i].prompt);
        free(items[i].weak);
        free(items[i].strong);
    }
    free(items);
    free(first);
    free(second);
    free(oof_p);
    free(oof_e);
    free(tr);
    free(te);
    free(tp);
    free(te_e);
    free(ps);
    free(es);
    router_thread_cleanup();
    return 0;
}
