/* test_share.c - router/share.c holds a target strong share on synthetic score streams:
 * stationary, shifted, adversarial; and stays in range on hostile input. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "router.h"

/* A deterministic uniform in [0,1). */
static double
uni(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) * 0x1p-53;
}

typedef double gen_fn(uint64_t *rng, size_t i);

static double
gen_uniform(uint64_t *rng, size_t i)
{
    (void)i;
    return uni(rng);
}

/* Beta(1,4)-like: most mass near 0, a thin tail to 1. */
static double
gen_skewed(uint64_t *rng, size_t i)
{
    (void)i;
    return 1.0 - pow(uni(rng), 0.25);
}

/* Like the shipped model: a narrow band around 0.6. */
static double
gen_narrow(uint64_t *rng, size_t i)
{
    (void)i;
    return 0.55 + 0.1 * (uni(rng) + uni(rng)) / 2;
}

static double
gen_equal(uint64_t *rng, size_t i)
{
    (void)rng;
    (void)i;
    return 0.5;
}

static double
gen_alternating(uint64_t *rng, size_t i)
{
    (void)rng;
    return (double)(i & 1);
}

static double
gen_increasing(uint64_t *rng, size_t i)
{
    (void)rng;
    return (double)i / 20000.0;
}

static double
gen_decreasing(uint64_t *rng, size_t i)
{
    (void)rng;
    return 1.0 - (double)i / 20000.0;
}

/* Streams n scores from gen through a window of w at target t; returns the strong share
 * of decisions [from, to). */
static double
stream(gen_fn *gen, size_t w, double t, size_t n, size_t from, size_t to)
{
    struct router_share *e = router_share_new(w);
    uint64_t rng = 42;
    size_t strong = 0;

    assert_non_null(e);
    for (size_t i = 0; i < n; i++) {
        double cut;
        int s = router_share_decide(e, gen(&rng, i), t, 0.5, &cut);
        assert_true(s == 0 || s == 1);
        assert_true(cut >= 0 && cut <= nextafter(1.0, 2.0));
        if (i >= from && i < to)
            strong += (size_t)s;
    }
    router_share_destroy(e);
    return (double)strong / (double)(to - from);
}

static void
check(const char *what, gen_fn *gen, double t, double tol)
{
    double got = stream(gen, 1000, t, 20000, 1000, 20000);
    printf("%-12s target %.2f: realised %.4f\n", what, t, got);
    assert_true(fabs(got - t) <= tol);
    /* and every block of 1000 after the first window */
    for (size_t b = 1000; b < 20000; b += 1000) {
        double blk = stream(gen, 1000, t, b + 1000, b, b + 1000);
        if (fabs(blk - t) > 3 * tol)
            printf("%s target %.2f block %zu: %.4f\n", what, t, b, blk);
        assert_true(fabs(blk - t) <= 3 * tol);
    }
}

static void
test_stationary(void **state)
{
    (void)state;
    static const double targets[] = {0.1, 0.3, 0.7};
    for (size_t i = 0; i < 3; i++) {
        check("uniform", gen_uniform, targets[i], 0.01);
        check("skewed", gen_skewed, targets[i], 0.01);
        check("narrow", gen_narrow, targets[i], 0.01);
    }
}

/* The mean jumps (down, then up): the share is back at the target within one window and
 * the window right after the shift is not far off. */
static void
test_shift(void **state)
{
    (void)state;
    const size_t w = 1000;
    const double t = 0.3;

    for (int dir = 0; dir < 2; dir++) {
        struct router_share *e = router_share_new(w);
        uint64_t rng = 7;
        size_t first = 0, second = 0;
        for (size_t i = 0; i < 6000; i++) {
            int hi = (i < 3000) == (dir == 0);
            double sc = (hi ? 0.6 : 0.2) + 0.2 * uni(&rng);
            int s = router_share_decide(e, sc, t, 0.5, NULL);
            if (i >= 3000 && i < 3000 + w)
                first += (size_t)s;
            else if (i >= 3000 + w && i < 3000 + 2 * w)
                second += (size_t)s;
        }
        printf("shift %s: first window %.4f, second %.4f\n", dir ? "up" : "down",
               (double)first / (double)w, (double)second / (double)w);
        assert_true(fabs((double)first / (double)w - t) <= 0.05);
        assert_true(fabs((double)second / (double)w - t) <= 0.02);
        router_share_destroy(e);
    }
}

static void
test_adversarial(void **state)
{
    (void)state;
    static const double targets[] = {0.1, 0.3, 0.7};
    for (size_t i = 0; i < 3; i++) {
        /* all equal: the tie-breaker, not 0% or 100% */
        check("equal", gen_equal, targets[i], 0.01);
        check("alternating", gen_alternating, targets[i], 0.01);
        /* every score the highest (lowest) yet: only the debt holds the share */
        check("increasing", gen_increasing, targets[i], 0.02);
        check("decreasing", gen_decreasing, targets[i], 0.02);
    }
}

/* A block of 50 prompts each scoring above the whole window (LLMRouter test's MBPP block
 * after its QA prompts), then traffic harder than the window: over those 200 requests
 * the share stays within 3 points of the target. The correction's bound is relative to
 * the rarer decision: a bound of 25 requests' worth of weak calls let about 20 extra
 * strong calls through at 10% (15.5% over those 200), never repaid. */
static void
test_block_above(void **state)
{
    (void)state;
    static const double targets[] = {0.1, 0.3, 0.7};
    for (size_t ti = 0; ti < 3; ti++) {
        struct router_share *e = router_share_new(1000);
        uint64_t rng = 5;
        size_t strong = 0;
        for (size_t i = 0; i < 2200; i++) {
            int block = i >= 2000 && i < 2050;
            /* and the traffic after the block stays harder than the window's */
            double sc = block ? 0.9 + 0.1 * uni(&rng)
                              : i > 2000 ? 0.45 + 0.5 * uni(&rng) : 0.5 * uni(&rng);
            int s = router_share_decide(e, sc, targets[ti], 0.5, NULL);
            if (i >= 2000)
                strong += (size_t)s;
        }
        printf("block above the window, target %.2f: %.3f of the 200 after it\n", targets[ti],
               strong / 200.0);
        assert_true(fabs(strong / 200.0 - targets[ti]) <= 0.03);
        router_share_destroy(e);
    }
}

/* Below ROUTER_SHARE_MIN_SCORES the fallback cut decides. */
static void
test_warmup(void **state)
{
    (void)state;
    struct router_share *e = router_share_new(1000);

    assert_true(isnan(router_share_cut(e, 0.3)));
    for (size_t i = 0; i < ROUTER_SHARE_MIN_SCORES; i++) {
        double cut;
        assert_int_equal(router_share_decide(e, i % 2 ? 0.96 : 0.9, 0.3, 0.95, &cut),
                         (int)(i % 2));
        assert_true(cut == 0.95);
    }
    assert_false(isnan(router_share_cut(e, 0.3)));
    router_share_destroy(e);
}

/* Hostile scores and targets stay in range; shares 0 and 1 are absolute. */
static void
test_range(void **state)
{
    (void)state;
    static const double scores[] = {NAN, -1, 0, 1, 2, INFINITY, -INFINITY, 0.999999, 1e-300};
    struct router_share *e = router_share_new(10);
    size_t decided, strong;

    assert_null(router_share_new(0));
    assert_null(router_share_new(ROUTER_SHARE_MAX_WINDOW + 1));
    for (size_t i = 0; i < 1000; i++) {
        double cut, sc = scores[i % 9];
        assert_int_equal(router_share_decide(e, sc, 0, 0.5, &cut), 0);
        assert_true(cut > 1);
        assert_int_equal(router_share_decide(e, sc, 1, 0.5, &cut), 1);
        assert_true(cut == 0);
        assert_int_equal(router_share_decide(e, sc, NAN, 0.5, NULL), 0);
        router_share_add(e, sc);
        int s = router_share_decide(e, sc, 0.3, 0.5, &cut);
        assert_true(s == 0 || s == 1);
        assert_true(cut >= 0 && cut <= nextafter(1.0, 2.0));
    }
    assert_int_equal(router_share_count(e), 10);
    assert_int_equal(router_share_window(e), 10);
    router_share_recent(e, &decided, &strong);
    assert_true(decided <= 10 && strong <= decided);
    for (size_t i = 0; i < 10; i++)
        router_share_add(e, 0.5);
    router_share_recent(e, &decided, &strong);
    assert_int_equal(decided, 0);
    assert_int_equal(strong, 0);
    router_share_destroy(e);
    router_share_destroy(NULL);
}

/* The cut is the window's quantile: on 0, 1/1000, ..., 999/1000 the 30% cut is 0.7. */
static void
test_cut(void **state)
{
    (void)state;
    struct router_share *e = router_share_new(1000);

    router_share_set_horizon(e, 0);
    for (size_t i = 0; i < 1000; i++)
        router_share_add(e, (double)i / 1000.0);
    assert_true(fabs(router_share_cut(e, 0.3) - 0.7) < 2.0 / ROUTER_SHARE_BINS);
    assert_true(fabs(router_share_cut(e, 0.9) - 0.1) < 2.0 / ROUTER_SHARE_BINS);
    assert_true(router_share_cut(e, 0) > 1);
    router_share_destroy(e);
}

/* ---- tiers: 40/40/20 (above tier 0: 60%, above tier 1: 20%) ---- */

static const double tier_share[3] = {0.4, 0.4, 0.2};
static const double tier_above[2] = {0.6, 0.2};
static const double tier_fallback[2] = {0.4, 0.8};

/* Streams n scores from gen through tiers 40/40/20 (window 1000); got[t] gets each tier's
 * share of decisions [from, n). Checks the boundaries nest (the tier is the count of
 * boundaries passed, so a cut above is never below the cut under it). */
static void
stream_tiers(gen_fn *gen, size_t n, size_t from, double got[3])
{
    struct router_share *e = router_share_new(1000);
    uint64_t rng = 42;
    size_t count[3] = {0};

    assert_non_null(e);
    for (size_t i = 0; i < n; i++) {
        double cuts[2];
        size_t t = router_share_decide_tiers(e, gen(&rng, i), tier_above, tier_fallback, 3, cuts);
        assert_true(t < 3);
        assert_true(cuts[0] <= cuts[1]);
        if (i >= from)
            count[t]++;
    }
    for (size_t t = 0; t < 3; t++) {
        got[t] = (double)count[t] / (double)(n - from);
        assert_int_equal(router_share_recent_tier(e, t) <= 1000, 1);
    }
    router_share_destroy(e);
}

static void
check_tiers(const char *what, gen_fn *gen, double tol)
{
    double got[3];

    stream_tiers(gen, 20000, 1000, got);
    printf("%-12s tiers: %.4f %.4f %.4f\n", what, got[0], got[1], got[2]);
    for (size_t t = 0; t < 3; t++)
        assert_true(fabs(got[t] - tier_share[t]) <= tol);
}

static void
test_tiers_stationary(void **state)
{
    (void)state;
    check_tiers("uniform", gen_uniform, 0.01);
    check_tiers("skewed", gen_skewed, 0.01);
    check_tiers("narrow", gen_narrow, 0.01);
}

static void
test_tiers_adversarial(void **state)
{
    (void)state;
    /* all equal: one tie draw splits them 40/40/20, not all in one tier */
    check_tiers("equal", gen_equal, 0.01);
    check_tiers("alternating", gen_alternating, 0.01);
    check_tiers("increasing", gen_increasing, 0.02);
    check_tiers("decreasing", gen_decreasing, 0.02);
}

/* The traffic gets harder, then easier: each tier's share of the window after the shift
 * is back near its target. */
static void
test_tiers_shift(void **state)
{
    (void)state;
    for (int dir = 0; dir < 2; dir++) {
        struct router_share *e = router_share_new(1000);
        uint64_t rng = 9;
        size_t first[3] = {0}, second[3] = {0};
        for (size_t i = 0; i < 6000; i++) {
            int hi = (i < 3000) == (dir == 0);
            double sc = (hi ? 0.6 : 0.2) + 0.2 * uni(&rng);
            size_t t = router_share_decide_tiers(e, sc, tier_above, tier_fallback, 3, NULL);
            if (i >= 3000 && i < 4000)
                first[t]++;
            else if (i >= 4000 && i < 5000)
                second[t]++;
        }
        for (size_t t = 0; t < 3; t++) {
            printf("tiers shift %s: tier %zu first window %.3f, second %.3f\n",
                   dir ? "up" : "down", t, first[t] / 1000.0, second[t] / 1000.0);
            assert_true(fabs(first[t] / 1000.0 - tier_share[t]) <= 0.05);
            assert_true(fabs(second[t] / 1000.0 - tier_share[t]) <= 0.02);
        }
        router_share_destroy(e);
    }
}

/* Two tiers through router_share_decide_tiers decide as router_share_decide; shares that
 * grow past a boundary are clamped; out-of-range shares are absolute. */
static void
test_tiers_edges(void **state)
{
    (void)state;
    struct router_share *a = router_share_new(500), *b = router_share_new(500);
    uint64_t rng = 3;

    for (size_t i = 0; i < 3000; i++) {
        double sc = uni(&rng), fb = 0.7, ca, cb;
        int sa = router_share_decide(a, sc, 0.3, fb, &ca);
        size_t sb = router_share_decide_tiers(b, sc, (const double[]){0.3}, &fb, 2, &cb);
        assert_int_equal((size_t)sa, sb);
        assert_true(ca == cb);
    }
    /* above tier 1 more than above tier 0: taken as equal, so tier 1 is never chosen */
    size_t count[3] = {0};
    for (size_t i = 0; i < 3000; i++)
        count[router_share_decide_tiers(b, uni(&rng), (const double[]){0.3, 0.5},
                                        (const double[]){0.7, 0.5}, 3, NULL)]++;
    assert_int_equal(count[1], 0);
    assert_true(fabs(count[2] / 3000.0 - 0.3) <= 0.03);
    /* 0 and 1 (and NaN as 0) are absolute */
    for (size_t i = 0; i < 100; i++) {
        assert_int_equal(router_share_decide_tiers(b, uni(&rng), (const double[]){1, 0},
                                                   (const double[]){0.5, 0.5}, 3, NULL),
                         1);
        assert_int_equal(router_share_decide_tiers(b, uni(&rng), (const double[]){NAN, 1},
                                                   (const double[]){0.5, 0.5}, 3, NULL),
                         0);
    }
    /* more tiers than ROUTER_SHARE_MAX_TIERS are cut to it */
    double above[ROUTER_SHARE_MAX_TIERS + 4], fb[ROUTER_SHARE_MAX_TIERS + 4];
    for (size_t i = 0; i < ROUTER_SHARE_MAX_TIERS + 4; i++)
        above[i] = 1, fb[i] = 0;
    assert_int_equal(router_share_decide_tiers(b, 0.5, above, fb, ROUTER_SHARE_MAX_TIERS + 5,
                                               NULL),
                     ROUTER_SHARE_MAX_TIERS - 1);
    router_share_destroy(a);
    router_share_destroy(b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stationary), cmocka_unit_test(test_shift),
        cmocka_unit_test(test_adversarial), cmocka_unit_test(test_block_above),
        cmocka_unit_test(test_warmup),
        cmocka_unit_test(test_range), cmocka_unit_test(test_cut),
        cmocka_unit_test(test_tiers_stationary), cmocka_unit_test(test_tiers_adversarial),
        cmocka_unit_test(test_tiers_shift), cmocka_unit_test(test_tiers_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
