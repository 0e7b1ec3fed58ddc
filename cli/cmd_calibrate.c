/* cmd_calibrate.c - `triage calibrate`: the score threshold that sends a target share of prompts to the strong backend, or the cuts between tiers with a share each. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "jsonl.h"
#include "router.h"

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: triage calibrate --model M [--data F.jsonl] --strong-share X\n"
            "       triage calibrate --model M [--data F.jsonl] --tiers P1,P2[,...]\n"
            "\n"
            "Prints the score threshold t such that about a share X (in [0,1]) of the prompts\n"
            "score >= t and go to the strong backend: the (1 - X) percentile of the scores of\n"
            "F's prompts (as RouteLLM's calibrate_threshold), or without --data, of the\n"
            "reference scores stored in the model. Use it as `threshold` in triage.conf.\n"
            "\n"
            "With --tiers, the shares in percent of the tiers cheapest first (as in\n"
            "`tiers = mini:40%%, think-low:40%%, think-high`: --tiers 40,40; the last tier takes\n"
            "the rest), prints one line per cut between two tiers, cheapest first: the\n"
            "score at or above which a prompt goes past that tier. The daemon starts from\n"
            "these cuts (on the reference scores) and then holds the shares on live traffic.\n"
            "\n"
            "  --model M          model file\n"
            "  --data F           prompts (JSONL, optionally gzip; outcomes ignored); repeatable\n"
            "  --strong-share X   target share of strong calls, in [0,1]\n"
            "  --tiers P1,P2,...  target share per tier in percent (a trailing %% is fine)\n"
            "  -h, --help         this text\n");
}

/* Parses "40,40" or "40%,40%,20%" (percent per tier, cheapest first; without the last
 * tier's, it takes the rest) into above[b], the share past tier b. Returns 0 or -1 after
 * saying why. */
static int
parse_tiers(const char *arg, double *above, size_t *n_above)
{
    double pct[64], sum = 0;
    size_t n = 0;
    const char *p = arg;

    while (*p) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || !isfinite(v) || v < 0 || v > 100 || n == 64) {
            cli_errorf("calibrate", "--tiers %s: give percent per tier, e.g. 40,40", arg);
            return -1;
        }
        if (*end == '%')
            end++;
        if (*end && *end != ',') {
            cli_errorf("calibrate", "--tiers %s: give percent per tier, e.g. 40,40", arg);
            return -1;
        }
        pct[n++] = v;
        sum += v;
        p = *end ? end + 1 : end;
    }
    if (n == 0 || sum > 100 + 1e-9) {
        cli_errorf("calibrate", "--tiers %s: the shares add up to %g%%, more than 100%%", arg, sum);
        return -1;
    }
    /* the last tier given takes the rest when the shares fall short of 100% */
    if (fabs(sum - 100) > 1e-9)
        pct[n++] = 100 - sum;
    if (n < 2) {
        cli_errorf("calibrate", "--tiers %s: at least two tiers", arg);
        return -1;
    }
    double past = 0;
    for (size_t b = n - 1; b > 0; b--) {
        past += pct[b] / 100;
        above[b - 1] = past > 1 ? 1 : past;
    }
    *n_above = n - 1;
    return 0;
}

int
cli_calibrate(int argc, char **argv)
{
    static const struct option longopts[] = {{"model", required_argument, NULL, 'm'},
                                             {"data", required_argument, NULL, 'd'},
                                             {"strong-share", required_argument, NULL, 's'},
                                             {"tiers", required_argument, NULL, 't'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *model = NULL, *data[64];
    size_t n_data = 0;
    double share = -1, above[64];
    size_t n_above = 0;
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
        case 't':
            if (parse_tiers(optarg, above, &n_above) < 0)
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
    if (!model || (share < 0) == (n_above == 0) || optind != argc) {
        usage(stderr);
        return 2;
    }
    struct router_model *m = router_model_load(model, err, sizeof(err));
    if (!m) {
        cli_errorf("calibrate", "%s", err);
        return 1;
    }
    if (n_data == 0) {
        for (size_t b = 0; b < n_above; b++)
            printf("%.6f\n", router_model_threshold_for_share(m, above[b]));
        if (n_above == 0)
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
    for (size_t b = 0; b < n_above; b++)
        printf("%.6f\n", router_eval_percentile(scores, n, 100.0 * (1.0 - above[b])));
    if (n_above == 0)
        printf("%.6f\n", router_eval_percentile(scores, n, 100.0 * (1.0 - share)));
    ret = 0;
out:
    free(scores);
    router_dataset_destroy(d);
    router_model_unref(m);
    return ret;
}
