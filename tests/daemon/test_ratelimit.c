/* test_ratelimit.c - token-bucket refill math at its boundaries, debt, isolation, eviction. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "guard/guard.h"

static void
test_rpm_boundary(void **state)
{
    struct ratelimit *rl = ratelimit_create(60, 0, 0);
    uint32_t ra = 0;

    /* A full bucket: one minute's worth may burst at once. */
    for (int i = 0; i < 60; i++)
        assert_int_equal(ratelimit_take(rl, "a", 0, 0, &ra), 0);
    assert_int_equal(ratelimit_take(rl, "a", 0, 0, &ra), -EAGAIN);
    assert_int_equal(ra, 1);
    /* 60/min refills one request every 1000 ms exactly. */
    assert_int_equal(ratelimit_take(rl, "a", 999, 0, &ra), -EAGAIN);
    assert_int_equal(ra, 1);
    assert_int_equal(ratelimit_take(rl, "a", 1000, 0, &ra), 0);
    assert_int_equal(ratelimit_take(rl, "a", 1000, 0, &ra), -EAGAIN);
    /* Refill never exceeds the bucket: after an hour, again exactly 60. */
    for (int i = 0; i < 60; i++)
        assert_int_equal(ratelimit_take(rl, "a", 3600000, 0, NULL), 0);
    assert_int_equal(ratelimit_take(rl, "a", 3600000, 0, NULL), -EAGAIN);
    ratelimit_destroy(rl);
}

static void
test_rpm_one(void **state)
{
    struct ratelimit *rl = ratelimit_create(1, 0, 0);
    uint32_t ra = 0;

    assert_int_equal(ratelimit_take(rl, "a", 5000, 0, &ra), 0);
    assert_int_equal(ratelimit_take(rl, "a", 5000, 0, &ra), -EAGAIN);
    assert_int_equal(ra, 60);
    assert_int_equal(ratelimit_take(rl, "a", 5001, 0, &ra), -EAGAIN);
    assert_int_equal(ra, 60); /* 59999 ms rounds up to 60 s */
    assert_int_equal(ratelimit_take(rl, "a", 5000 + 59000, 0, &ra), -EAGAIN);
    assert_int_equal(ra, 1);
    assert_int_equal(ratelimit_take(rl, "a", 5000 + 59999, 0, &ra), -EAGAIN);
    assert_int_equal(ra, 1);
    assert_int_equal(ratelimit_take(rl, "a", 5000 + 60000, 0, &ra), 0);
    ratelimit_destroy(rl);
}

static void
test_tpm(void **state)
{
    struct ratelimit *rl = ratelimit_create(0, 1000, 0);
    uint32_t ra = 0, req, tok;

    assert_int_equal(ratelimit_take(rl, "a", 0, 600, &ra), 0);
    assert_int_equal(ratelimit_take(rl, "a", 0, 400, &ra), 0);
    assert_int_equal(ratelimit_take(rl, "a", 0, 1, &ra), -EAGAIN);
    assert_int_equal(ra, 1); /* one token takes 60 ms at 1000/min */
    assert_int_equal(ratelimit_take(rl, "a", 59, 1, &ra), -EAGAIN);
    assert_int_equal(ratelimit_take(rl, "a", 60, 1, &ra), 0);
    /* 500 tokens need 30 s. */
    assert_int_equal(ratelimit_take(rl, "a", 60, 500, &ra), -EAGAIN);
    assert_int_equal(ra, 30);
    ratelimit_remaining(rl, "a", 60, &req, &tok);
    assert_int_equal(req, UINT32_MAX);
    assert_int_equal(tok, 0);
    ratelimit_remaining(rl, "a", 60 + 30000, &req, &tok);
    assert_int_equal(tok, 500);
    ratelimit_destroy(rl);
}

static void
test_estimate_above_tpm(void **state)
{
    struct ratelimit *rl = ratelimit_create(0, 1000, 0);
    uint32_t ra = 0;

    /* Bigger than a minute's budget: admitted on a full bucket, not refused forever. */
    assert_int_equal(ratelimit_take(rl, "a", 0, 5000, &ra), 0);
    assert_int_equal(ratelimit_take(rl, "a", 1000, 5000, &ra), -EAGAIN);
    assert_int_equal(ra, 59);
    assert_int_equal(ratelimit_take(rl, "a", 60000, 5000, &ra), 0);
    ratelimit_destroy(rl);
}

static void
test_settle_debt_and_refund(void **state)
{
    struct ratelimit *rl = ratelimit_create(0, 1000, 0);
    uint32_t ra = 0, tok;

    assert_int_equal(ratelimit_take(rl, "a", 0, 1000, &ra), 0);
    /* The response used 3000 tokens: 2000 in debt. */
    ratelimit_settle(rl, "a", 0, 1000, 3000);
    ratelimit_remaining(rl, "a", 0, NULL, &tok);
    assert_int_equal(tok, 0);
    assert_int_equal(ratelimit_take(rl, "a", 0, 1, &ra), -EAGAIN);
    /* (2000 + 1) tokens at 1000/min = 120060 ms -> 121 s. */
    assert_int_equal(ra, 121);
    assert_int_equal(ratelimit_take(rl, "a", 120059, 1, &ra), -EAGAIN);
    assert_int_equal(ratelimit_take(rl, "a", 120060, 1, &ra), 0);

    /* A refund never overfills. */
    struct ratelimit *r2 = ratelimit_create(0, 1000, 0);
    assert_int_equal(ratelimit_take(r2, "b", 0, 800, &ra), 0);
    ratelimit_settle(r2, "b", 0, 800, 100);
    ratelimit_remaining(r2, "b", 0, NULL, &tok);
    assert_int_equal(tok, 900);
    ratelimit_settle(r2, "b", 0, 800, 0);
    ratelimit_remaining(r2, "b", 0, NULL, &tok);
    assert_int_equal(tok, 1000);
    ratelimit_destroy(r2);
    ratelimit_destroy(rl);
}

static void
test_both_limits_atomic(void **state)
{
    struct ratelimit *rl = ratelimit_create(10, 100, 0);
    uint32_t ra = 0, req, tok;

    assert_int_equal(ratelimit_take(rl, "a", 0, 100, &ra), 0);
    /* Tokens exhausted: refused, and the request bucket is not charged either. */
    assert_int_equal(ratelimit_take(rl, "a", 0, 50, &ra), -EAGAIN);
    assert_int_equal(ra, 30);
    ratelimit_remaining(rl, "a", 0, &req, &tok);
    assert_int_equal(req, 9);
    assert_int_equal(tok, 0);
    /* Requests exhausted while tokens remain: retry after the request refill (6 s). */
    for (int i = 0; i < 9; i++)
        assert_int_equal(ratelimit_take(rl, "a", 60000, 0, &ra), 0);
    ratelimit_remaining(rl, "a", 60000, &req, &tok);
    assert_int_equal(req, 1);
    assert_int_equal(ratelimit_take(rl, "a", 60000, 0, &ra), 0);
    assert_int_equal(ratelimit_take(rl, "a", 60000, 0, &ra), -EAGAIN);
    assert_int_equal(ra, 6);
    ratelimit_destroy(rl);
}

static void
test_isolation_and_anonymous(void **state)
{
    struct ratelimit *rl = ratelimit_create(2, 0, 0);

    assert_int_equal(ratelimit_take(rl, "a", 0, 0, NULL), 0);
    assert_int_equal(ratelimit_take(rl, "a", 0, 0, NULL), 0);
    assert_int_equal(ratelimit_take(rl, "a", 0, 0, NULL), -EAGAIN);
    assert_int_equal(ratelimit_take(rl, "b", 0, 0, NULL), 0);
    assert_int_equal(ratelimit_take(rl, NULL, 0, 0, NULL), 0);
    assert_int_equal(ratelimit_take(rl, NULL, 0, 0, NULL), 0);
    assert_int_equal(ratelimit_take(rl, NULL, 0, 0, NULL), -EAGAIN);
    assert_int_equal(ratelimit_take(rl, "b", 0, 0, NULL), 0);
    assert_int_equal(ratelimit_tracked(rl), 2);
    ratelimit_destroy(rl);
}

static void
test_unlimited(void **state)
{
    struct ratelimit *rl = ratelimit_create(0, 0, 0);
    uint32_t req, tok;

    for (int i = 0; i < 10000; i++)
        assert_int_equal(ratelimit_take(rl, "a", 0, 4000000000u, NULL), 0);
    ratelimit_settle(rl, "a", 0, 0, 4000000000u);
    ratelimit_remaining(rl, "a", 0, &req, &tok);
    assert_int_equal(req, UINT32_MAX);
    assert_int_equal(tok, UINT32_MAX);
    ratelimit_destroy(rl);
}

static void
test_bounded_keys(void **state)
{
    struct ratelimit *rl = ratelimit_create(1, 0, 2);
    uint32_t ra;

    assert_int_equal(ratelimit_take(rl, "a", 0, 0, NULL), 0);
    assert_int_equal(ratelimit_take(rl, "b", 0, 0, NULL), 0);
    /* Table full of busy names: c and d share the overflow bucket. */
    assert_int_equal(ratelimit_take(rl, "c", 0, 0, NULL), 0);
    assert_int_equal(ratelimit_take(rl, "d", 0, 0, &ra), -EAGAIN);
    assert_int_equal(ratelimit_tracked(rl), 2);
    /* A minute later a and b are full again (idle): one is forgotten to make room. */
    assert_int_equal(ratelimit_take(rl, "d", 60000, 0, NULL), 0);
    assert_int_equal(ratelimit_tracked(rl), 2);
    assert_int_equal(ratelimit_take(rl, "d", 60000, 0, NULL), -EAGAIN);
    /* The forgotten name starts with a full bucket, exactly as if it had been kept. */
    assert_int_equal(ratelimit_take(rl, "a", 60000, 0, NULL), 0);
    /* b was forgotten for a; with d and a busy, b lands in the refilled overflow
     * bucket, which it now shares with c. */
    assert_int_equal(ratelimit_take(rl, "b", 60000, 0, NULL), 0);
    assert_int_equal(ratelimit_take(rl, "c", 60000, 0, NULL), -EAGAIN);
    ratelimit_destroy(rl);

    /* Many names through a small table: memory stays bounded, nothing crashes. */
    rl = ratelimit_create(5, 100, 16);
    char name[32];
    for (uint64_t t = 0; t < 20000; t++) {
        snprintf(name, sizeof(name), "n%llu", (unsigned long long)(t % 97));
        (void)ratelimit_take(rl, name, t * 100, 7, NULL);
        ratelimit_settle(rl, name, t * 100, 7, 9);
        assert_true(ratelimit_tracked(rl) <= 16);
    }
    ratelimit_destroy(rl);
}

static void
test_clock_steps_back(void **state)
{
    struct ratelimit *rl = ratelimit_create(1, 0, 0);

    assert_int_equal(ratelimit_take(rl, "a", 100000, 0, NULL), 0);
    /* An earlier time refills nothing (and does not underflow into a huge refill). */
    assert_int_equal(ratelimit_take(rl, "a", 0, 0, NULL), -EAGAIN);
    assert_int_equal(ratelimit_take(rl, "a", 160000, 0, NULL), 0);
    ratelimit_destroy(rl);
}

static void
test_large_rates(void **state)
{
    struct ratelimit *rl = ratelimit_create(10000000, 4000000000u, 0);
    uint32_t ra, req, tok;

    assert_int_equal(ratelimit_take(rl, "a", UINT64_MAX / 2, 4000000000u, &ra), 0);
    assert_int_equal(ratelimit_take(rl, "a", UINT64_MAX / 2, 1, &ra), -EAGAIN);
    assert_int_equal(ra, 1);
    ratelimit_settle(rl, "a", UINT64_MAX / 2, 0, 4000000000u);
    ratelimit_settle(rl, "a", UINT64_MAX / 2, 0, 4000000000u);
    assert_int_equal(ratelimit_take(rl, "a", UINT64_MAX / 2, 1, &ra), -EAGAIN);
    assert_int_equal(ra, 121); /* 120000 ms plus one token's 0.015 us, rounded up */
    ratelimit_remaining(rl, "a", UINT64_MAX, &req, &tok);
    assert_int_equal(req, 10000000);
    assert_int_equal(tok, 4000000000u);
    ratelimit_destroy(rl);
}

/* Several threads share one limiter (as the daemon's workers do): with the clock held
 * still, exactly the bucket's contents are admitted, no more and no fewer. */
struct race {
    struct ratelimit *rl;
    int admitted;
};

static void *
race_thread(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < 5000; i++)
        if (ratelimit_take(r->rl, i % 2 ? "a" : "b", 1000, 3, NULL) == 0)
            r->admitted++;
    return NULL;
}

static void
test_threads(void **state)
{
    struct ratelimit *rl = ratelimit_create(1000, 0, 0);
    struct race races[4];
    pthread_t th[4];

    for (int i = 0; i < 4; i++) {
        races[i] = (struct race){rl, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race_thread, &races[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += races[i].admitted;
    }
    assert_int_equal(total, 2000); /* 1000 for "a" and 1000 for "b" */
    ratelimit_destroy(rl);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rpm_boundary),
        cmocka_unit_test(test_rpm_one),
        cmocka_unit_test(test_tpm),
        cmocka_unit_test(test_estimate_above_tpm),
        cmocka_unit_test(test_settle_debt_and_refund),
        cmocka_unit_test(test_both_limits_atomic),
        cmocka_unit_test(test_isolation_and_anonymous),
        cmocka_unit_test(test_unlimited),
        cmocka_unit_test(test_bounded_keys),
        cmocka_unit_test(test_clock_steps_back),
        cmocka_unit_test(test_large_rates),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
