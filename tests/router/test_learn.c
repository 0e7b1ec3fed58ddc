/* test_learn.c - unit tests for router/learn.c: the retraining recipe learns a family the
 * base data teaches wrong. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "router.h"

static const char *const filler[] = {"river", "stone", "window", "garden", "letter", "market",
                                     "engine", "silver", "winter", "doctor", "island", "bridge"};

/* Adds one prompt of topic (a word every prompt of the family has) with marker "red" or
 * "blue"; hard ones the strong backend answers and the weak one does not. Returns its index. */
static size_t
add(struct router_dataset *d, const char *topic, int red, int hard, unsigned i)
{
    char buf[256];

    snprintf(buf, sizeof(buf),
             "{\"prompt\":\"%s %s question %u: the %s and the %s\",\"outcomes\":{\"weak\":%d,"
             "\"strong\":1}}",
             topic, red ? "red" : "blue", i, filler[i % 12], filler[(i / 12) % 12], hard ? 0 : 1);
    json_t *j = json_loads(buf, 0, NULL);
    assert_non_null(j);
    size_t at = router_dataset_size(d);
    assert_int_equal(router_dataset_add(d, j), 0);
    json_decref(j);
    return at;
}

static double
apgr(const struct router_model *m, const struct router_dataset *d, const size_t *idx, size_t n)
{
    double sc[512], qw[512], qs[512];
    struct router_eval ev;

    assert_true(n <= 512);
    for (size_t i = 0; i < n; i++) {
        struct router_scores s;
        assert_int_equal(router_dataset_score(m, d, idx[i], &s), 0);
        sc[i] = s.score;
        qw[i] = router_dataset_outcome(d, idx[i], router_dataset_head_find(d, "weak"));
        qs[i] = router_dataset_outcome(d, idx[i], router_dataset_head_find(d, "strong"));
    }
    assert_int_equal(router_eval_routing(sc, qw, qs, n, &ev), 0);
    return ev.apgr;
}

/* The base data (4,000 prompts of topic "alpha"): red is hard, blue easy. The user's
 * family ("omega") is the other way round, so a model of the base data alone routes it
 * worse than random; a few hundred judged omega prompts, added by the recipe, turn it. */
static void
test_learns_reversed_family(void **state)
{
    (void)state;
    struct router_dataset *d = router_dataset_new(16);
    size_t base[4000], log[300], test[400];
    struct router_train_opts o;
    char err[128];

    for (unsigned i = 0; i < 4000; i++)
        base[i] = add(d, "alpha", i % 2, i % 2, i);
    for (unsigned i = 0; i < 300; i++)
        log[i] = add(d, "omega", i % 2, !(i % 2), i);
    for (unsigned i = 0; i < 400; i++)
        test[i] = add(d, "omega", i % 2, !(i % 2), 1000 + i);
    router_train_opts_tuned(&o);

    struct router_model *m = router_train(d, base, 4000, &o, err, sizeof(err));
    assert_non_null(m);
    double before = apgr(m, d, test, 400);
    router_model_unref(m);
    assert_true(before < 0.3); /* the base teaches the family wrong */

    m = router_train_log(d, base, 4000, log, 300, &o, err, sizeof(err));
    assert_non_null(m);
    double after = apgr(m, d, test, 400);
    router_model_unref(m);
    print_message("omega family: APGR %.3f before, %.3f after 300 judged prompts\n", before,
                  after);
    assert_true(after > 0.7); /* 0.75 is a perfect ranking here, 0.5 random */

    /* 50 judged prompts: a fixed weight of 5 left the model as wrong as the base (0.250) */
    m = router_train_log(d, base, 4000, log, 50, &o, err, sizeof(err));
    assert_non_null(m);
    double few = apgr(m, d, test, 400);
    router_model_unref(m);
    print_message("omega family: APGR %.3f after 50 judged prompts\n", few);
    assert_true(few > 0.6);
    router_dataset_destroy(d);
}

/* The weight: 1 without base data or log; never below 1; each logged prompt counts no more
 * as the log grows, and the log as a whole never less than a twentieth of the base. */
static void
test_log_weight(void **state)
{
    (void)state;
    assert_int_equal(router_log_weight(100, 0), 1);
    assert_int_equal(router_log_weight(0, 1000), 1);
    for (size_t n_base = 1000; n_base <= 100000; n_base *= 10) {
        unsigned prev = ~0u;
        for (size_t n_log = 1; n_log <= 200000; n_log *= 3) {
            unsigned w = router_log_weight(n_log, n_base);
            assert_true(w >= 1);
            assert_true(w <= prev);
            assert_true((double)w * (double)n_log >= (double)n_base / 20);
            prev = w;
        }
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_learns_reversed_family),
        cmocka_unit_test(test_log_weight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
