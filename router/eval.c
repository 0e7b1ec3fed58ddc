/* eval.c - routing quality metrics: PGR curve, APGR, CPT, AUC and Spearman's rho. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

struct ranked {
    double key;
    size_t i;
};

/* Descending key, then ascending index: ties break the same way every run. */
static int
cmp_desc(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;

    if (x->key > y->key)
        return -1;
    if (x->key < y->key)
        return 1;
    return (x->i > y->i) - (x->i < y->i);
}

static struct ranked *
rank_desc(const double *key, size_t n)
{
    struct ranked *r = calloc(n ? n : 1, sizeof(*r));

    if (!r)
        abort();
    for (size_t i = 0; i < n; i++) {
        r[i].key = isnan(key[i]) ? -INFINITY : key[i];
        r[i].i = i;
    }
    qsort(r, n, sizeof(*r), cmp_desc);
    return r;
}

int
router_eval_routing(const double *score, const double *q_weak, const double *q_strong, size_t n,
                    struct router_eval *out)
{
    double sw = 0, ss = 0;

    memset(out, 0, sizeof(*out));
    out->n = n;
    if (n == 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        sw += q_weak[i];
        ss += q_strong[i];
    }
    out->perf_weak = sw / n;
    out->perf_strong = ss / n;
    if (!(fabs(ss - sw) > 1e-12))
        return -EDOM;

    struct ranked *r = rank_desc(score, n);
    /* gain[k]: total extra correctness from sending the top k to strong */
    double *gain = calloc(n + 1, sizeof(double));
    if (!gain)
        abort();
    for (size_t k = 0; k < n; k++)
        gain[k + 1] = gain[k] + q_strong[r[k].i] - q_weak[r[k].i];
    double span = ss - sw;
    for (int p = 0; p <= 10; p++) {
        size_t k = (size_t)floor(p / 10.0 * (double)n + 0.5);
        out->pgr[p] = gain[k] / span;
    }
    double area = 0;
    for (int p = 0; p < 10; p++)
        area += 0.5 * (out->pgr[p] + out->pgr[p + 1]);
    out->apgr = area / 10.0;
    out->cpt50 = out->cpt80 = NAN;
    for (size_t k = 0; k <= n; k++) {
        double pgr = gain[k] / span;
        if (isnan(out->cpt50) && pgr >= 0.5 - 1e-12)
            out->cpt50 = (double)k / n;
        if (isnan(out->cpt80) && pgr >= 0.8 - 1e-12)
            out->cpt80 = (double)k / n;
    }

    /* AUC of the score for "strong does better than weak" against the rest,
     * with ties counted half (Mann-Whitney on descending ranks) */
    double pos = 0, neg = 0, above = 0;
    size_t k = 0;
    while (k < n) {
        size_t j = k;
        double tp = 0, tn = 0;
        while (j < n && r[j].key == r[k].key) {
            if (q_strong[r[j].i] > q_weak[r[j].i])
                tp++;
            else
                tn++;
            j++;
        }
        /* negatives in this tie group rank below the positives seen so far */
        above += tn * pos + 0.5 * tn * tp;
        pos += tp;
        neg += tn;
        k = j;
    }
    out->auc = (pos > 0 && neg > 0) ? above / (pos * neg) : NAN;
    free(gain);
    free(r);
    return 0;
}

double
router_eval_auc(const double *score, const double *y, size_t n)
{
    struct ranked *r = rank_desc(score, n);
    double pos = 0, neg = 0, above = 0, self = 0;

    /* Mann-Whitney on descending ranks, each item a positive of weight y and a negative
     * of weight 1 - y; an item's pairing with itself (a tie) is taken out of both sums */
    for (size_t k = 0; k < n;) {
        size_t j = k;
        double tp = 0, tn = 0, ts = 0;
        for (; j < n && r[j].key == r[k].key; j++) {
            double v = y[r[j].i];
            tp += v;
            tn += 1.0 - v;
            ts += v * (1.0 - v);
        }
        above += tn * pos + 0.5 * (tn * tp - ts);
        pos += tp;
        neg += tn;
        self += ts;
        k = j;
    }
    free(r);
    double pairs = pos * neg - self;
    return pairs > 1e-12 ? above / pairs : NAN;
}

/* Average ranks (1-based, ties share their mean rank). */
static double *
avg_ranks(const double *x, size_t n)
{
    struct ranked *r = rank_desc(x, n);
    double *rk = calloc(n ? n : 1, sizeof(double));

    if (!rk)
        abort();
    for (size_t k = 0; k < n;) {
        size_t j = k;
        while (j < n && r[j].key == r[k].key)
            j++;
        double mean = 0.5 * ((double)k + 1 + (double)j);
        for (size_t t = k; t < j; t++)
            rk[r[t].i] = mean;
        k = j;
    }
    free(r);
    return rk;
}

double
router_eval_spearman(const double *x, const double *y, size_t n)
{
    if (n < 2)
        return NAN;
    double *rx = avg_ranks(x, n), *ry = avg_ranks(y, n);
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (size_t i = 0; i < n; i++) {
        mx += rx[i];
        my += ry[i];
    }
    mx /= n;
    my /= n;
    for (size_t i = 0; i < n; i++) {
        sxy += (rx[i] - mx) * (ry[i] - my);
        sxx += (rx[i] - mx) * (rx[i] - mx);
        syy += (ry[i] - my) * (ry[i] - my);
    }
    free(rx);
    free(ry);
    return (sxx > 0 && syy > 0) ? sxy / sqrt(sxx * syy) : NAN;
}

double
router_eval_percentile(const double *x, size_t n, double q)
{
    if (n == 0)
        return NAN;
    struct ranked *r = rank_desc(x, n);
    /* r is descending; numpy's percentile works on the ascending order */
    double pos = q / 100.0 * (double)(n - 1);
    if (pos < 0)
        pos = 0;
    if (pos > (double)(n - 1))
        pos = (double)(n - 1);
    size_t lo = (size_t)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
    double a = r[n - 1 - lo].key, b = r[n - 1 - hi].key;
    free(r);
    return a + (b - a) * (pos - (double)lo);
}
