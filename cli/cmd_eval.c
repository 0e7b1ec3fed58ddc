/* cmd_eval.c - `triage eval`: routing quality (APGR, CPT, AUC) of a model or of cross-validated training. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "jsonl.h"
#include "router.h"

#define MAX_DATA 64

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: triage eval --model M --data F.jsonl --weak A --strong B [options]\n"
            "       triage eval --cv K --data F.jsonl --weak A --strong B [training options]\n"
            "       triage eval --model M --data F.jsonl --spearman FIELD\n"
            "\n"
            "Routes the top x%% of prompts by score to B and the rest to A (outcomes from the\n"
            "data) and prints, per scorer:\n"
            "  APGR      average performance gap recovered: PGR = (perf - perf_A) /\n"
            "            (perf_B - perf_A) at 0%%, 10%%, ..., 100%% strong calls, trapezoid mean\n"
            "  CPT(50%%)  smallest share of strong calls reaching PGR 0.5; CPT(80%%) likewise\n"
            "  AUC       ROC AUC of the score for \"B does better than A\"\n"
            "Score ties break by input order.\n"
            "\n"
            "  --model M         model to evaluate (its score)\n"
            "  --cv K            instead: K-fold cross-validation, training on K-1 folds and\n"
            "                    scoring the held-out one with the training options below;\n"
            "                    figures are the mean over folds\n"
            "  --data F          labelled JSONL (optionally gzip); repeatable\n"
            "  --weak A          outcome name of the weak backend\n"
            "  --strong B        outcome name of the strong backend\n"
            "  --baselines       also print random (mean of 10 seeds) and prompt length rows,\n"
            "                    and with --cv a logistic regression row (--dim 0, score\n"
            "                    learned directly: --score-mix 0)\n"
            "  --spearman FIELD  print Spearman's rho between the score and a numeric field\n"
            "  --markdown        print rows as a markdown table\n"
            "  --label TEXT      first column of the markdown rows (default: the data file)\n"
            "  --train-extra F   with --cv: more labelled JSONL added to every fold's training\n"
            "                    set, never evaluated; repeatable\n"
            "  -h, --help        this text\n"
            "training options (--cv):\n" JSONL_TRAIN_USAGE);
}

struct eval_ctx {
    const char *label;
    int markdown;
    int spearman; /* a Spearman column (with --spearman) */
    int header_done;
};

static void
print_row(struct eval_ctx *ctx, const char *scorer, const struct router_eval *e, double spearman)
{
    if (ctx->markdown) {
        if (!ctx->header_done)
            printf("| data | scorer | n | APGR | CPT(50%%) | CPT(80%%) | AUC |%s\n"
                   "|---|---|---|---|---|---|---|%s\n",
                   ctx->spearman ? " Spearman |" : "", ctx->spearman ? "---|" : "");
        printf("| %s | %s | %zu | %.4f | %.1f%% | %.1f%% | %.4f |", ctx->label, scorer, e->n,
               e->apgr, 100 * e->cpt50, 100 * e->cpt80, e->auc);
        if (ctx->spearman)
            printf(" %.4f |", spearman);
        printf("\n");
    } else {
        if (!ctx->header_done)
            printf("%-8s %7s %8s %9s %9s %8s%s\n", "scorer", "n", "APGR", "CPT(50%)", "CPT(80%)",
                   "AUC", ctx->spearman ? "  Spearman" : "");
        printf("%-8s %7zu %8.4f %8.1f%% %8.1f%% %8.4f", scorer, e->n, e->apgr, 100 * e->cpt50,
               100 * e->cpt80, e->auc);
        if (ctx->spearman)
            printf(" %9.4f", spearman);
        printf("\n");
    }
    ctx->header_done = 1;
}

/* Mean of per-fold metrics. */
static void
eval_add(struct router_eval *sum, const struct router_eval *e, double w)
{
    sum->n += e->n;
    sum->apgr += w * e->apgr;
    sum->cpt50 += w * e->cpt50;
    sum->cpt80 += w * e->cpt80;
    sum->auc += w * e->auc;
    sum->perf_weak += w * e->perf_weak;
    sum->perf_strong += w * e->perf_strong;
}

static uint64_t
rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Evaluates `score` over the examples idx[0..n) (outcomes qw, qs indexed by
 * example); returns 0 or -1 when the metrics are undefined. */
static int
eval_subset(const double *score, const double *qw, const double *qs, const size_t *idx, size_t n,
            struct router_eval *out)
{
    double *s = malloc((n + 1) * sizeof(double)), *a = malloc((n + 1) * sizeof(double)),
           *b = malloc((n + 1) * sizeof(double));
    if (!s || !a || !b)
        abort();
    for (size_t k = 0; k < n; k++) {
        s[k] = score[idx[k]];
        a[k] = qw[idx[k]];
        b[k] = qs[idx[k]];
    }
    int rc = router_eval_routing(s, a, b, n, out);
    free(s);
    free(a);
    free(b);
    return rc < 0 ? -1 : 0;
}

int
cli_eval(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'}, {"cv", required_argument, NULL, 'k'},
        {"data", required_argument, NULL, 'd'}, {"weak", required_argument, NULL, 'w'},
        {"strong", required_argument, NULL, 's'}, {"baselines", no_argument, NULL, 'b'},
        {"spearman", required_argument, NULL, 'r'}, {"markdown", no_argument, NULL, 'M'},
        {"label", required_argument, NULL, 'l'}, {"help", no_argument, NULL, 'h'},
        {"train-extra", required_argument, NULL, 'x'},
        JSONL_TRAIN_LONGOPTS, {NULL, 0, NULL, 0}};
    const char *data[MAX_DATA], *extra_data[MAX_DATA], *model_path = NULL, *weak = NULL, *strong = NULL;
    struct jsonl_extra extra = {0};
    struct eval_ctx ctx = {0};
    struct router_train_opts o;
    size_t n_data = 0, n_extra = 0;
    unsigned n_bits = 18, folds = 0;
    int c, rc, baselines = 0, ret = 1;
    double v;
    char err[256];

    router_train_opts_tuned(&o);
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model_path = optarg;
            break;
        case 'k':
            if (jsonl_parse_double("eval", "cv", optarg, 2, 100, &v) < 0)
                return 2;
            folds = (unsigned)v;
            break;
        case 'd':
            if (n_data == MAX_DATA) {
                cli_errorf("eval", "at most %d --data files", MAX_DATA);
                return 2;
            }
            data[n_data++] = optarg;
            break;
        case 'x':
            if (n_extra == MAX_DATA) {
                cli_errorf("eval", "at most %d --train-extra files", MAX_DATA);
                return 2;
            }
            extra_data[n_extra++] = optarg;
            break;
        case 'w':
            weak = optarg;
            break;
        case 's':
            strong = optarg;
            break;
        case 'b':
            baselines = 1;
            break;
        case 'r':
            extra.field = optarg;
            break;
        case 'M':
            ctx.markdown = 1;
            break;
        case 'l':
            ctx.label = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            rc = jsonl_train_opt("eval", c, optarg, &o, &n_bits);
            if (rc == 1)
                break;
            if (rc == 0)
                usage(stderr);
            return 2;
        }
    }
    if (n_data == 0 || optind != argc || (!model_path) == (folds == 0) || (n_extra && !folds) ||
        (!weak != !strong) || (!weak && !extra.field) || (folds && !weak)) {
        usage(stderr);
        return 2;
    }
    if (!ctx.label)
        ctx.label = data[0];
    ctx.spearman = extra.field != NULL;

    struct router_model *model = NULL;
    if (model_path) {
        model = router_model_load(model_path, err, sizeof(err));
        if (!model) {
            cli_errorf("eval", "%s", err);
            return 1;
        }
        n_bits = router_model_bits(model); /* the data must hash like the model */
    }
    struct router_dataset *d = router_dataset_new(n_bits);
    for (size_t i = 0; i < n_data; i++)
        if (jsonl_load_dataset("eval", d, data[i], &extra) < 0)
            goto out;
    size_t n = router_dataset_size(d);
    /* --train-extra examples come after the evaluated ones: always trained on */
    for (size_t i = 0; i < n_extra; i++)
        if (jsonl_load_dataset("eval", d, extra_data[i], NULL) < 0)
            goto out;
    size_t n_all = router_dataset_size(d);
    int hw = weak ? router_dataset_head_find(d, weak) : -1;
    int hs = strong ? router_dataset_head_find(d, strong) : -1;
    if (weak && (hw < 0 || hs < 0)) {
        cli_errorf("eval", "the data has no outcomes named '%s'", hw < 0 ? weak : strong);
        goto out;
    }

    /* the examples that have both outcomes (all of them for --spearman only) */
    double *qw = calloc(n + 1, sizeof(double)), *qs = calloc(n + 1, sizeof(double));
    double *score = calloc(n + 1, sizeof(double)), *lr = calloc(n + 1, sizeof(double));
    double *level = calloc(n + 1, sizeof(double));
    size_t *idx = calloc(n + 1, sizeof(size_t)), m = 0;
    if (!qw || !qs || !score || !lr || !level || !idx)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (weak) {
            qw[i] = router_dataset_outcome(d, i, hw);
            qs[i] = router_dataset_outcome(d, i, hs);
            if (isnan(qw[i]) || isnan(qs[i]))
                continue;
        }
        idx[m++] = i;
    }
    if (m < (folds ? folds : 2)) {
        cli_errorf("eval", "only %zu usable examples", m);
        goto out_free;
    }

    /* fold of each usable example: a seeded shuffle dealt round-robin */
    size_t *fold = calloc(n + 1, sizeof(size_t));
    if (!fold)
        abort();
    if (folds) {
        size_t *perm = calloc(m, sizeof(size_t));
        uint64_t rng = o.seed * 7919 + 17;
        if (!perm)
            abort();
        memcpy(perm, idx, m * sizeof(size_t));
        for (size_t i = m; i > 1; i--) {
            size_t j = (size_t)(rng_next(&rng) % i), t = perm[i - 1];
            perm[i - 1] = perm[j];
            perm[j] = t;
        }
        for (size_t k = 0; k < m; k++)
            fold[perm[k]] = k % folds;
        free(perm);
    }

    /* scorers: the model (or CV-trained models), logistic regression under CV */
    int rows = folds && baselines ? 2 : 1;
    for (int row = 0; row < rows; row++) {
        double *dst = row == 0 ? score : lr;
        if (model) {
            for (size_t k = 0; k < m; k++) {
                struct router_scores sc;
                router_dataset_score(model, d, idx[k], &sc);
                dst[idx[k]] = sc.score;
            }
            continue;
        }
        struct router_train_opts fo = o;
        if (row == 1) {
            /* the baseline: logistic regression on the same features, one linear
             * output per head and the score learned directly */
            fo.dim = 0;
            fo.score_mix = 0;
        }
        fo.strong = strong;
        fo.weak = weak;
        size_t *train = calloc(m + (n_all - n) + 1, sizeof(size_t));
        if (!train)
            abort();
        struct cli_progress bar;
        cli_progress_start(&bar, row ? "lr folds" : "folds", folds);
        for (unsigned f = 0; f < folds; f++) {
            size_t nt = 0;
            for (size_t k = 0; k < m; k++)
                if (fold[idx[k]] != f)
                    train[nt++] = idx[k];
            for (size_t i = n; i < n_all; i++)
                train[nt++] = i;
            struct router_model *fm = router_train(d, train, nt, &fo, err, sizeof(err));
            if (!fm) {
                cli_progress_end(&bar);
                cli_errorf("eval", "fold %u: %s", f, err);
                free(train);
                free(fold);
                goto out_free;
            }
            for (size_t k = 0; k < m; k++)
                if (fold[idx[k]] == f) {
                    struct router_scores sc;
                    router_dataset_score(fm, d, idx[k], &sc);
                    dst[idx[k]] = sc.score;
                }
            router_model_unref(fm);
            cli_progress_update(&bar, f + 1);
        }
        cli_progress_end(&bar);
        free(train);
    }

    /* Spearman's rho of the score against a numeric field */
    double rho = NAN;
    if (extra.field) {
        size_t nl = 0;
        double *x = calloc(m + 1, sizeof(double));
        if (!x)
            abort();
        for (size_t k = 0; k < m; k++)
            if (idx[k] < extra.n && !isnan(extra.values[idx[k]])) {
                x[nl] = score[idx[k]];
                level[nl++] = extra.values[idx[k]];
            }
        rho = router_eval_spearman(x, level, nl);
        if (!weak) {
            printf("spearman(score, %s) %.4f over %zu examples\n", extra.field, rho, nl);
            if (baselines) {
                nl = 0;
                for (size_t k = 0; k < m; k++)
                    if (idx[k] < extra.n && !isnan(extra.values[idx[k]]))
                        x[nl++] = router_dataset_dense(d, idx[k], 0);
                printf("spearman(length, %s) %.4f over %zu examples\n", extra.field,
                       router_eval_spearman(x, level, nl), nl);
            }
            free(x);
            free(fold);
            ret = 0;
            goto out_free;
        }
        free(x);
    }

    /* routing metrics per scorer; under CV the mean over folds */
    double *alt = calloc(n + 1, sizeof(double));
    size_t *sub = calloc(m + 1, sizeof(size_t));
    if (!alt || !sub)
        abort();
    for (int kind = 0; kind < 4; kind++) {
        const char *name = kind == 0 ? (folds ? "model-cv" : "model")
                         : kind == 1 ? "lr-cv"
                         : kind == 2 ? "length"
                                     : "random";
        if (kind > 0 && !baselines)
            break;
        if (kind == 1 && !folds)
            continue;
        int seeds = kind == 3 ? 10 : 1;
        struct router_eval sum = {0};
        int bad = 0;
        for (int seed = 0; seed < seeds; seed++) {
            const double *src = kind == 0 ? score : kind == 1 ? lr : alt;
            if (kind == 2)
                for (size_t k = 0; k < m; k++)
                    alt[idx[k]] = router_dataset_dense(d, idx[k], 0); /* log chars */
            if (kind == 3) {
                uint64_t rs = (uint64_t)seed * 1000003 + 11;
                for (size_t k = 0; k < m; k++)
                    alt[idx[k]] = (double)(rng_next(&rs) >> 11);
            }
            unsigned nf = folds ? folds : 1;
            for (unsigned f = 0; f < nf; f++) {
                size_t ns = 0;
                for (size_t k = 0; k < m; k++)
                    if (!folds || fold[idx[k]] == f)
                        sub[ns++] = idx[k];
                struct router_eval e;
                if (eval_subset(src, qw, qs, sub, ns, &e) < 0) {
                    bad = 1;
                    break;
                }
                eval_add(&sum, &e, 1.0 / (nf * seeds));
            }
        }
        if (bad) {
            cli_errorf("eval", "'%s' and '%s' perform the same on a fold: PGR is undefined", weak,
                       strong);
            free(alt);
            free(sub);
            free(fold);
            goto out_free;
        }
        sum.n = m;
        double r = NAN;
        if (extra.field && kind == 0)
            r = rho;
        print_row(&ctx, name, &sum, r);
    }
    if (!ctx.markdown) {
        struct router_eval all;
        if (eval_subset(score, qw, qs, idx, m, &all) == 0)
            printf("perf(%s) %.4f  perf(%s) %.4f\n", weak, all.perf_weak, strong, all.perf_strong);
    }
    free(alt);
    free(sub);
    free(fold);
    ret = 0;
out_free:
    free(qw);
    free(qs);
    free(score);
    free(lr);
    free(level);
    free(idx);
out:
    router_dataset_destroy(d);
    router_model_unref(model);
    free(extra.values);
    return ret;
}
