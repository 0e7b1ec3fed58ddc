/* share_sim.c - streams prompt families through the scorer and router/share.c offline and
 * prints how well a target strong share holds, per window size; and the estimator's cost.
 *
 * usage: share_sim MODEL GSM8K MMLU MMLU_PRO LLMROUTER   (JSONL(.gz) with "prompt" or
 *        "messages"; the file order is the stream order)
 *
 * Tables (markdown):
 *  - one family at a time: the realised share of requests 301..end, per target (10, 30,
 *    70%), next to the fixed cut from the model's reference scores (today's behaviour);
 *  - a stream switching family every 500 requests (gsm8k, mmlu, mmlu-pro, llmrouter, over
 *    and over, each continuing where it stopped): the worst block of 500, the worst first
 *    100 requests after a switch (the reaction), and the jitter (standard deviation of the
 *    share over blocks of 100);
 *  - each with the debt correction on (the daemon's default) and off (the bare quantile);
 *  - tiers 40/40/20 (router_share_decide_tiers, the daemon's default window and horizon):
 *    each tier's realised share of requests 301..end per family, and per block of 500 on
 *    the switching stream;
 *  - ns per router_share_decide (update + query) per window size. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <zlib.h>

#include "router.h"

#define N_FAM 4
#define BLOCK 500
#define N_BLOCKS 24

static const char *const fam_names[N_FAM] = {"GSM8K test", "RouteLLM MMLU", "MMLU-Pro",
                                             "LLMRouter test"};
static const double targets[] = {0.1, 0.3, 0.7};
static const size_t windows[] = {250, 500, 1000, 2000};

struct family {
    double *score;
    size_t n;
};

static void
load(const struct router_model *m, const char *path, struct family *f)
{
    gzFile gz = gzopen(path, "rb");
    static char line[1 << 20];
    size_t cap = 0;

    if (!gz) {
        fprintf(stderr, "%s: cannot open\n", path);
        exit(1);
    }
    f->n = 0;
    f->score = NULL;
    while (gzgets(gz, line, sizeof(line))) {
        json_error_t err;
        json_t *j = json_loads(line, 0, &err);
        struct router_scores sc;
        int rc = -1;
        if (!j)
            continue;
        json_t *msgs = json_object_get(j, "messages");
        const char *p = json_string_value(json_object_get(j, "prompt"));
        if (msgs) {
            json_t *req = json_pack("{s:O}", "messages", msgs);
            rc = router_score_request(m, req, &sc);
            json_decref(req);
        } else if (p) {
            rc = router_score_text(m, p, strlen(p), &sc);
        }
        json_decref(j);
        if (rc < 0)
            continue;
        if (f->n == cap) {
            cap = cap ? cap * 2 : 1024;
            f->score = realloc(f->score, cap * sizeof(*f->score));
            if (!f->score)
                abort();
        }
        f->score[f->n++] = sc.score;
    }
    gzclose(gz);
}

/* One family at a time: the share of requests [300, n) (all when n <= 300). */
static double
one_family(const struct family *f, size_t w, double horizon, double t, double fallback)
{
    struct router_share *e = router_share_new(w);
    size_t strong = 0, counted = 0, from = f->n > 300 ? 300 : 0;

    router_share_set_horizon(e, horizon);
    for (size_t i = 0; i < f->n; i++) {
        int s = router_share_decide(e, f->score[i], t, fallback, NULL);
        if (i >= from) {
            strong += (size_t)s;
            counted++;
        }
    }
    router_share_destroy(e);
    return (double)strong / (double)counted;
}

struct mixed {
    double worst_block;  /* largest |share - t| over blocks of 500 */
    double worst_react;  /* ... over the first 100 after each switch */
    double jitter;       /* sd of the share over blocks of 100 */
    double total;
};

static void
mixed_stream(const struct family *fam, size_t w, double horizon, double t,
             double fallback, struct mixed *out)
{
    struct router_share *e = router_share_new(w);
    size_t pos[N_FAM] = {0}, strong_total = 0;
    double sum = 0, sum2 = 0;
    size_t n100 = 0;

    router_share_set_horizon(e, horizon);
    memset(out, 0, sizeof(*out));
    for (size_t b = 0; b < N_BLOCKS; b++) {
        const struct family *f = &fam[b % N_FAM];
        size_t strong = 0, strong100 = 0;
        for (size_t i = 0; i < BLOCK; i++) {
            double sc = f->score[pos[b % N_FAM]++ % f->n];
            int s = router_share_decide(e, sc, t, fallback, NULL);
            strong += (size_t)s;
            strong100 += (size_t)s;
            if (i % 100 == 99) {
                double sh = (double)strong100 / 100.0;
                if (i == 99 && b > 0 && fabs(sh - t) > out->worst_react)
                    out->worst_react = fabs(sh - t);
                sum += sh;
                sum2 += sh * sh;
                n100++;
                strong100 = 0;
            }
        }
        double sh = (double)strong / BLOCK;
        if (fabs(sh - t) > out->worst_block)
            out->worst_block = fabs(sh - t);
        strong_total += strong;
    }
    double mean = sum / (double)n100;
    out->jitter = sqrt(sum2 / (double)n100 - mean * mean);
    out->total = (double)strong_total / (double)(BLOCK * N_BLOCKS);
    router_share_destroy(e);
}

/* Tiers 40/40/20 (above tier 0: 60%, above tier 1: 20%), one family at a time and on the
 * switching stream, with the daemon's defaults (window 1000, horizon 25). */
static void
tiers(const struct router_model *m, const struct family *fam)
{
    static const double share[3] = {0.4, 0.4, 0.2};
    const double above[2] = {0.6, 0.2};
    double fallback[2];

    for (int b = 0; b < 2; b++)
        fallback[b] = router_model_threshold_for_share(m, above[b]);
    printf("\n## Tiers 40/40/20 (window 1000, horizon 25)\n\n");
    printf("### One family at a time: each tier's share of requests 301..end "
           "(bar: each +-5)\n\n");
    printf("| family | tier 0 (40%%) | tier 1 (40%%) | tier 2 (20%%) | bars |\n"
           "|---|---:|---:|---:|---:|\n");
    for (int fi = 0; fi < N_FAM; fi++) {
        struct router_share *e = router_share_new(1000);
        size_t got[3] = {0}, counted = 0, from = fam[fi].n > 300 ? 300 : 0;
        for (size_t i = 0; i < fam[fi].n; i++) {
            size_t t = router_share_decide_tiers(e, fam[fi].score[i], above, fallback, 3, NULL);
            if (i >= from) {
                got[t]++;
                counted++;
            }
        }
        int ok = 1;
        printf("| %s |", fam_names[fi]);
        for (int t = 0; t < 3; t++) {
            double sh = (double)got[t] / (double)counted;
            ok &= fabs(sh - share[t]) <= 0.05;
            printf(" %.1f%% |", 100 * sh);
        }
        printf(" %s |\n", ok ? "met" : "MISSED");
        router_share_destroy(e);
    }
    printf("\n### Family switching every %d requests (%d blocks): the worst block of %d per "
           "tier (bar: each +-10)\n\n", BLOCK, N_BLOCKS, BLOCK);
    struct router_share *e = router_share_new(1000);
    size_t pos[N_FAM] = {0};
    double worst[3] = {0};
    for (size_t b = 0; b < N_BLOCKS; b++) {
        const struct family *f = &fam[b % N_FAM];
        size_t got[3] = {0};
        for (size_t i = 0; i < BLOCK; i++)
            got[router_share_decide_tiers(e, f->score[pos[b % N_FAM]++ % f->n], above, fallback,
                                          3, NULL)]++;
        for (int t = 0; t < 3; t++)
            if (fabs((double)got[t] / BLOCK - share[t]) > worst[t])
                worst[t] = fabs((double)got[t] / BLOCK - share[t]);
    }
    router_share_destroy(e);
    printf("| tier 0 (40%%) | tier 1 (40%%) | tier 2 (20%%) |\n|---:|---:|---:|\n");
    printf("| +-%.1f%s | +-%.1f%s | +-%.1f%s |\n", 100 * worst[0], worst[0] > 0.1 ? " (!)" : "",
           100 * worst[1], worst[1] > 0.1 ? " (!)" : "", 100 * worst[2],
           worst[2] > 0.1 ? " (!)" : "");
}

static double
now_ns(void)
{
    struct timespec ts;
    /* CPU time: the figures stay meaningful on a shared, loaded machine */
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void
speed(const struct family *fam)
{
    enum { N = 4000000 };
    printf("\n### Cost: router_share_decide (rank, update, cut), one thread, CPU time\n\n");
    printf("| window | ns per decision | memory |\n|---:|---:|---:|\n");
    for (size_t wi = 0; wi < sizeof(windows) / sizeof(windows[0]); wi++) {
        struct router_share *e = router_share_new(windows[wi]);
        double cut, t0 = now_ns();
        long strong = 0;
        for (size_t i = 0; i < N; i++) {
            const struct family *f = &fam[(i / BLOCK) % N_FAM];
            strong += router_share_decide(e, f->score[i % f->n], 0.3, 0.6, &cut);
        }
        double ns = (now_ns() - t0) / N;
        printf("| %zu | %.1f | %.1f KB |\n", windows[wi], ns,
               (2.0 * (double)windows[wi] + 4.0 * (ROUTER_SHARE_BINS + 1)) / 1024);
        if (strong < 0)
            puts("?");
        router_share_destroy(e);
    }
}

int
main(int argc, char **argv)
{
    char err[256];
    struct family fam[N_FAM];

    if (argc != 2 + N_FAM) {
        fprintf(stderr, "usage: share_sim MODEL GSM8K MMLU MMLU_PRO LLMROUTER\n");
        return 2;
    }
    struct router_model *m = router_model_load(argv[1], err, sizeof(err));
    if (!m) {
        fprintf(stderr, "%s: %s\n", argv[1], err);
        return 1;
    }
    for (int i = 0; i < N_FAM; i++)
        load(m, argv[2 + i], &fam[i]);

    printf("model %s; prompts:", router_model_version(m));
    for (int i = 0; i < N_FAM; i++)
        printf(" %s %zu%s", fam_names[i], fam[i].n, i + 1 < N_FAM ? "," : "\n");

    for (int corr = 1; corr >= 0; corr--) {
        double horizon = corr ? ROUTER_SHARE_DEFAULT_HORIZON : 0;
        printf("\n## %s\n", corr ? "With the debt correction (horizon 25, the default)"
                                  : "Bare window quantile (no debt correction)");
        printf("\n### One family at a time: strong share of requests 301..end "
               "(bar: target +-3)\n\n");
        printf("| family | target | reference cut |");
        for (size_t wi = 0; wi < sizeof(windows) / sizeof(windows[0]); wi++)
            printf(" W=%zu |", windows[wi]);
        printf("\n|---|---:|---:|");
        for (size_t wi = 0; wi < sizeof(windows) / sizeof(windows[0]); wi++)
            printf("---:|");
        printf("\n");
        for (int fi = 0; fi < N_FAM; fi++)
            for (size_t ti = 0; ti < 3; ti++) {
                double t = targets[ti], cut = router_model_threshold_for_share(m, t);
                size_t strong = 0;
                for (size_t i = 300; i < fam[fi].n; i++)
                    strong += fam[fi].score[i] >= cut;
                printf("| %s | %.0f%% | %.1f%% |", fam_names[fi], 100 * t,
                       100.0 * (double)strong / (double)(fam[fi].n - 300));
                for (size_t wi = 0; wi < sizeof(windows) / sizeof(windows[0]); wi++) {
                    double got = one_family(&fam[fi], windows[wi], horizon, t, cut);
                    printf(" %.1f%%%s |", 100 * got, fabs(got - t) > 0.03 ? " (!)" : "");
                }
                printf("\n");
            }
        printf("\n### Family switching every %d requests (%d blocks): worst block of %d, "
               "worst first 100 after a switch, jitter (sd over blocks of 100) "
               "(bar: every block +-10)\n\n", BLOCK, N_BLOCKS, BLOCK);
        printf("| window | target | worst block | worst first 100 | jitter | overall |\n");
        printf("|---:|---:|---:|---:|---:|---:|\n");
        for (size_t wi = 0; wi < sizeof(windows) / sizeof(windows[0]); wi++)
            for (size_t ti = 0; ti < 3; ti++) {
                struct mixed mx;
                double t = targets[ti];
                mixed_stream(fam, windows[wi], horizon, t, router_model_threshold_for_share(m, t),
                             &mx);
                printf("| %zu | %.0f%% | +-%.1f%s | +-%.1f | %.1f | %.1f%% |\n", windows[wi],
                       100 * t, 100 * mx.worst_block, mx.worst_block > 0.10 ? " (!)" : "",
                       100 * mx.worst_react, 100 * mx.jitter, 100 * mx.total);
            }
    }
    tiers(m, fam);
    speed(fam);
    for (int i = 0; i < N_FAM; i++)
        free(fam[i].score);
    router_model_unref(m);
    router_thread_cleanup();
    return 0;
}
