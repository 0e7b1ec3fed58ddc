/* cmd_train.c - `triage train`: learn a model from labelled JSONL files. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "commands.h"
#include "headmap.h"
#include "jsonl.h"
#include "router.h"
#include "storage.h"

#define MAX_DATA 64

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: triage train {--data F.jsonl[.gz] | --db LOG.db} [...] [--config CONF]\n"
            "                    --out MODEL [options]\n"
            "\n"
            "Each input line: {\"prompt\": \"...\" | \"messages\": [...], \"outcomes\": {\"<head>\": q}}\n"
            "with q in [0,1] = how well the backend that head scores answered; one head per\n"
            "outcome name. The score learns how much a prompt needs --strong over --weak.\n"
            "Optional \"answers\": {\"<head>\": \"text\" | {\"text\", \"finish_reason\", \"logprobs\"}}\n"
            "(or \"answer_signals\", as the log keeps them): --weak's judged answers teach the\n"
            "cascade's escalation model (docs/cascade.md), stored in the model file.\n"
            "\n"
            "  --data F          training file (JSONL, optionally gzip); repeatable\n"
            "  --db F            triaged's outcome log (a file or a postgresql:// URL): client\n"
            "                    requests with stored prompt text\n"
            "                    (store_prompts = full) or feature vectors (features; give the\n"
            "                    serving model's --bits) and their labels per backend (judge,\n"
            "                    feedback, offline; as `triage export` writes them);\n"
            "                    repeatable, mixes with --data: beside --data, each logged\n"
            "                    prompt counts as often as a daemon retrain counts it\n"
            "  --config CONF     the daemon's config: the log's backend names become the heads\n"
            "                    that score them ([backend NAME] head, default NAME), and\n"
            "                    --strong/--weak may name backends. Without it, backend names\n"
            "                    are head names. --data files are read as they are\n"
            "  --out M           model file to write\n"
            "  --strong NAME     head (or, with --config, backend) of the strong side (default strong)\n"
            "  --weak NAME       head (or, with --config, backend) of the weak side (default weak)\n" JSONL_TRAIN_USAGE
            "  -h, --help        this text\n");
}

struct logged {
    struct router_dataset *d;
    struct headmap *heads; /* NULL: backend names are head names */
};

/* storage_export_fn: one labelled prompt from the outcome log into the training set. */
static int
add_logged(json_t *example, void *arg)
{
    struct logged *l = arg;

    headmap_apply(l->heads, example);
    /* an example the trainer cannot use (e.g. empty messages) is skipped, not fatal */
    (void)router_dataset_add(l->d, example);
    return 0;
}

/* Adds the labelled prompts of the outcome log at path to d, backend names mapped
 * through heads (may be NULL). Returns 0 or -1 (reported). */
static int
load_db(struct router_dataset *d, struct headmap *heads, const char *path)
{
    struct storage_export_counts n = {0};
    struct logged l = {d, heads};
    char err[512];
    size_t before = router_dataset_size(d);

    if (storage_export_training(path, add_logged, &l, &n, err, sizeof(err)) < 0) {
        cli_errorf("train", "%s", err);
        return -1;
    }
    fprintf(stderr,
            "triage train: %s: %llu requests, %zu labelled prompts (outcomes from feedback "
            "%llu, judge %llu, offline %llu; %llu labelled cascade fast answers); skipped "
            "%llu without prompt text, %llu without a label\n",
            path, (unsigned long long)n.rows, router_dataset_size(d) - before,
            (unsigned long long)n.by_feedback, (unsigned long long)n.by_judge,
            (unsigned long long)n.by_offline, (unsigned long long)n.answers,
            (unsigned long long)n.no_prompt, (unsigned long long)n.no_outcome);
    if (n.no_prompt > 0)
        fprintf(stderr, "triage train: %s: %llu requests have no prompt text: retraining from "
                        "the log needs [storage] store_prompts = full or features\n",
                path, (unsigned long long)n.no_prompt);
    return 0;
}

static void
on_progress(void *arg, unsigned long done, unsigned long total)
{
    struct cli_progress *bar = arg;

    bar->total = total ? total : 1;
    cli_progress_update(bar, done);
}

int
cli_train(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"data", required_argument, NULL, 'd'}, {"db", required_argument, NULL, 'D'},
        {"config", required_argument, NULL, 'c'}, {"out", required_argument, NULL, 'o'},
        {"strong", required_argument, NULL, 's'}, {"weak", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'}, JSONL_TRAIN_LONGOPTS, {NULL, 0, NULL, 0}};
    const char *data[MAX_DATA], *dbs[MAX_DATA], *out = NULL, *config = NULL;
    size_t n_data = 0, n_dbs = 0;
    struct router_train_opts o;
    unsigned n_bits = 18;
    int c, rc;
    char err[256];

    router_train_opts_tuned(&o);
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd':
            if (n_data == MAX_DATA) {
                cli_errorf("train", "at most %d --data files", MAX_DATA);
                return 2;
            }
            data[n_data++] = optarg;
            break;
        case 'D':
            if (n_dbs == MAX_DATA) {
                cli_errorf("train", "at most %d --db files", MAX_DATA);
                return 2;
            }
            dbs[n_dbs++] = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 's':
            o.strong = optarg;
            break;
        case 'w':
            o.weak = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            rc = jsonl_train_opt("train", c, optarg, &o, &n_bits);
            if (rc == 1)
                break;
            if (rc == 0)
                usage(stderr);
            return 2;
        }
    }
    if ((n_data == 0 && n_dbs == 0) || !out || optind != argc) {
        usage(stderr);
        return 2;
    }
    /* The model is written beside --out and renamed over it: over a device, a pipe or a
     * directory (as root: /dev/null) that would replace it with a regular file. */
    struct stat out_st;
    if (stat(out, &out_st) == 0 && !S_ISREG(out_st.st_mode)) {
        cli_errorf("train", "--out %s: not a regular file (the model is written beside it and "
                   "renamed over it)", out);
        return 1;
    }

    struct headmap *heads = NULL;
    if (config) {
        heads = headmap_load("train", config);
        if (!heads)
            return 1;
        headmap_describe(heads, "train");
        /* the score's sides may be given as backends, like the log's names */
        o.strong = headmap_head(heads, o.strong);
        o.weak = headmap_head(heads, o.weak);
    }

    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct router_dataset *d = router_dataset_new(n_bits);
    for (size_t i = 0; i < n_data; i++)
        if (jsonl_load_dataset("train", d, data[i], NULL) < 0)
            goto fail;
    size_t n_base = router_dataset_size(d); /* --data: the base; --db: the log */
    for (size_t i = 0; i < n_dbs; i++)
        if (load_db(d, heads, dbs[i]) < 0)
            goto fail;
    if (router_dataset_size(d) == 0) {
        cli_errorf("train", "no labelled examples to learn from");
        goto fail;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);

    struct cli_progress bar;
    cli_progress_start(&bar, "training", 1);
    o.progress = on_progress;
    o.progress_arg = &bar;
    /* with a log, the daemon's retraining recipe: each logged prompt counts
     * router_log_weight times beside the --data examples */
    size_t n = router_dataset_size(d), *idx = malloc(n * sizeof(*idx));
    if (!idx)
        abort();
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    struct router_model *m = n_dbs ? router_train_log(d, idx, n_base, idx + n_base, n - n_base,
                                                      &o, err, sizeof(err))
                                   : router_train(d, NULL, 0, &o, err, sizeof(err));
    free(idx);
    cli_progress_end(&bar);
    if (!m) {
        cli_errorf("train", "%s", err);
        goto fail;
    }
    rc = router_model_save(m, out);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    if (rc < 0) {
        cli_errorf("train", "%s: %s", out, strerror(-rc));
    } else {
        struct stat st;
        long size = stat(out, &st) == 0 ? (long)st.st_size : -1;
        fprintf(stderr,
                "triage train: %zu examples, %zu heads, loaded in %.1fs, trained in %.1fs; "
                "wrote %s (%ld bytes, version %s)\n",
                router_dataset_size(d), router_model_n_heads(m),
                (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
                (double)(t2.tv_sec - t1.tv_sec) + (t2.tv_nsec - t1.tv_nsec) / 1e9, out, size,
                router_model_version(m));
        if (router_model_escalation_examples(m) > 0)
            fprintf(stderr, "triage train: escalation model (cascade) learned from %zu judged "
                            "answers of '%s'\n",
                    router_model_escalation_examples(m), o.weak);
        else
            fprintf(stderr, "triage train: %zu judged answers, too few of '%s' (30, some good, "
                            "some bad) to learn an escalation model: the cascade scores answers "
                            "by the signals-only default (docs/cascade.md)\n",
                    router_dataset_answers(d), o.weak);
        if (router_model_head_find(m, o.strong) < 0 || router_model_head_find(m, o.weak) < 0)
            fprintf(stderr, "triage train: no outcomes named '%s' and '%s': the score is 1 - "
                            "mean predicted success\n", o.strong, o.weak);
    }
    router_model_unref(m);
    router_dataset_destroy(d);
    headmap_destroy(heads);
    return rc < 0 ? 1 : 0;
fail:
    router_dataset_destroy(d);
    headmap_destroy(heads);
    return 1;
}
