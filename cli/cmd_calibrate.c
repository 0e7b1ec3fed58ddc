/* cmd_calibrate.c - `triage calibrate`: the score threshold that sends a target share of prompts to the strong backend. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "commands.h"
#include "jsonl.h"
#include "router.h"

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: triage calibrate --model M [--data F.jsonl] --strong-share X\n"
            "\n"
            "Prints the score threshold t such that about a share X (in [0,1]) of the prompts\n"
            "score >= t and go to the strong backend: the (1 - X) percentile of the scores of\n"
            "F's prompts (as RouteLLM's calibrate_threshold), or without --data, of the\n"
            "reference scores stored in the model. Use it as `threshold` in triage.conf.\n"
            "\n"
            "  --model M          model file\n"
            "  --data F           prompts (JSONL, optionally gzip; outcomes ignored); repeatable\n"
            "  --strong-share X   target share of strong calls, in [0,1]\n"
            "  -h, --help         this text\n");
}

int
cli_calibrate(int argc, char **argv)
{
    static const struct option longopts[] = {{"model", required_argument, NULL, 'm'},
                                             {"data", required_argument, NULL, 'd'},
                                             {"strong-share", required_argument, NULL, 's'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *model = NULL, *data[64];
    size_t n_data = 0;
    double share = -1;
    char err[256];
    int c, ret = 1;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 'd':
            if (n_data == 64) {
                cli_errorf("calibrate", "at most 64 --data files");
                return 2;
            }
            data[n_data++] = optarg;
            break;
        case 's':
            if (jsonl_parse_double("calibrate", "strong-share", optarg, 0, 1, &share) < 0)
                return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!model || share < 0 || optind != argc) {
        usage(stderr);
        return 2;
    }
    struct router_model *m = router_model_load(model, err, sizeof(err));
    if (!m) {
        cli_errorf("calibrate", "%s", err);
        return 1;
    }
    if (n_data == 0) {
        printf("%.6f\n", router_model_threshold_for_share(m, share));
        router_model_unref(m);
        return 0;
    }
    struct router_dataset *d = router_dataset_new(router_model_bits(m));
    double *scores = NULL;
    for (size_t i = 0; i < n_data; i++)
        if (jsonl_load_dataset("calibrate", d, data[i], NULL) < 0)
            goto out;
    size_t n = router_dataset_size(d);
    if (n == 0) {
        cli_errorf("calibrate", "no prompts in the data");
        goto out;
    }
    scores = calloc(n, sizeof(double));
    if (!scores)
        abort();
    for (size_t i = 0; i < n; i++) {
        struct router_scores s;
        router_dataset_score(m, d, i, &s);
        scores[i] = s.score;
    }
    printf("%.6f\n", router_eval_percentile(scores, n, 100.0 * (1.0 - share)));
    ret = 0;
out:
    free(scores);
    router_dataset_destroy(d);
    router_model_unref(m);
    return ret;
}
