/* test_breaker.c - circuit breaker transitions with injected time. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "guard/guard.h"

/* Records n failures at time t (each let through first). */
static void
fail_n(struct breaker *b, int n, uint64_t t)
{
    for (int i = 0; i < n; i++) {
        assert_int_equal(breaker_allow(b, t), BREAKER_PASS);
        breaker_record(b, BREAKER_FAILURE, t);
    }
}

static void
test_opens_after_threshold(void **state)
{
    struct breaker *b = breaker_create(5, 30000, 10000, 0);
    struct breaker_stats st;

    assert_int_equal(breaker_state(b, 0), BREAKER_CLOSED);
    fail_n(b, 4, 1000);
    breaker_get_stats(b, 1000, &st);
    assert_int_equal(st.recent_failures, 4);
    assert_int_equal(breaker_state(b, 1000), BREAKER_CLOSED);
    /* Successes do not hide failures within the window. */
    assert_int_equal(breaker_allow(b, 1000), BREAKER_PASS);
    breaker_record(b, BREAKER_SUCCESS, 1000);
    fail_n(b, 1, 2000);
    assert_int_equal(breaker_state(b, 2000), BREAKER_OPEN);
    assert_int_equal(breaker_allow(b, 2000), BREAKER_REJECT);
    assert_int_equal(breaker_allow(b, 11999), BREAKER_REJECT);
    breaker_get_stats(b, 5000, &st);
    assert_int_equal(st.state, BREAKER_OPEN);
    assert_int_equal(st.opens, 1);
    assert_int_equal(st.rejects, 2);
    assert_int_equal(st.retry_in_ms, 7000);
    assert_int_equal(st.recent_failures, 0);
    breaker_destroy(b);
}

static void
test_window_boundary(void **state)
{
    struct breaker *b = breaker_create(3, 30000, 10000, 0);

    /* Three failures spanning exactly the window: the oldest has aged out. */
    fail_n(b, 1, 0);
    fail_n(b, 1, 15000);
    fail_n(b, 1, 30000);
    assert_int_equal(breaker_state(b, 30000), BREAKER_CLOSED);
    /* The last three now span 15000..30001: within 30000 ms, so it opens. */
    fail_n(b, 1, 30001);
    assert_int_equal(breaker_state(b, 30001), BREAKER_OPEN);
    breaker_destroy(b);

    /* Failures spread thinly never open it. */
    b = breaker_create(5, 30000, 10000, 0);
    for (uint64_t t = 0; t < 1000000; t += 7500)
        fail_n(b, 1, t);
    assert_int_equal(breaker_state(b, 1000000), BREAKER_CLOSED);
    breaker_destroy(b);
}

static void
test_half_open_single_probe_success(void **state)
{
    struct breaker *b = breaker_create(2, 1000, 5000, 60000);

    fail_n(b, 2, 100);
    assert_int_equal(breaker_allow(b, 5099), BREAKER_REJECT);
    assert_int_equal(breaker_state(b, 5099), BREAKER_OPEN);
    /* Cooldown over: reported half-open before anyone asks. */
    assert_int_equal(breaker_state(b, 5100), BREAKER_HALF_OPEN);
    assert_int_equal(breaker_allow(b, 5100), BREAKER_PROBE);
    /* Exactly one probe. */
    assert_int_equal(breaker_allow(b, 5100), BREAKER_REJECT);
    assert_int_equal(breaker_allow(b, 9000), BREAKER_REJECT);
    assert_int_equal(breaker_state(b, 9000), BREAKER_HALF_OPEN);
    breaker_record(b, BREAKER_SUCCESS, 9500);
    assert_int_equal(breaker_state(b, 9500), BREAKER_CLOSED);
    assert_int_equal(breaker_allow(b, 9500), BREAKER_PASS);
    breaker_record(b, BREAKER_SUCCESS, 9500);
    /* Old failures were forgotten: it takes the full count again. */
    fail_n(b, 1, 9600);
    assert_int_equal(breaker_state(b, 9600), BREAKER_CLOSED);
    fail_n(b, 1, 9700);
    assert_int_equal(breaker_state(b, 9700), BREAKER_OPEN);
    breaker_destroy(b);
}

static void
test_half_open_probe_failure(void **state)
{
    struct breaker *b = breaker_create(1, 1000, 5000, 0);
    struct breaker_stats st;

    fail_n(b, 1, 0);
    assert_int_equal(breaker_allow(b, 5000), BREAKER_PROBE);
    breaker_record(b, BREAKER_FAILURE, 6000);
    /* Open again, with a fresh cooldown from the failed probe. */
    assert_int_equal(breaker_state(b, 6000), BREAKER_OPEN);
    assert_int_equal(breaker_allow(b, 10999), BREAKER_REJECT);
    assert_int_equal(breaker_allow(b, 11000), BREAKER_PROBE);
    breaker_get_stats(b, 11000, &st);
    assert_int_equal(st.opens, 2);
    assert_int_equal(st.state, BREAKER_HALF_OPEN);
    assert_int_equal(st.retry_in_ms, 0);
    breaker_destroy(b);
}

static void
test_cancel_and_lost_probe(void **state)
{
    struct breaker *b = breaker_create(1, 1000, 5000, 20000);

    fail_n(b, 1, 0);
    assert_int_equal(breaker_allow(b, 5000), BREAKER_PROBE);
    /* The client went away: no verdict, the next request probes instead. */
    breaker_record(b, BREAKER_CANCEL, 5500);
    assert_int_equal(breaker_state(b, 5500), BREAKER_HALF_OPEN);
    assert_int_equal(breaker_allow(b, 6000), BREAKER_PROBE);
    assert_int_equal(breaker_allow(b, 25999), BREAKER_REJECT);
    /* The probe never reported back within probe_timeout_ms: treated as failed. */
    assert_int_equal(breaker_allow(b, 26000), BREAKER_REJECT);
    assert_int_equal(breaker_state(b, 26000), BREAKER_OPEN);
    assert_int_equal(breaker_allow(b, 31000), BREAKER_PROBE);
    breaker_destroy(b);
}

static void
test_late_outcomes_while_open(void **state)
{
    struct breaker *b = breaker_create(2, 1000, 5000, 0);

    /* Three requests in flight; two fail and open the circuit. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(breaker_allow(b, 0), BREAKER_PASS);
    breaker_record(b, BREAKER_FAILURE, 10);
    breaker_record(b, BREAKER_FAILURE, 20);
    assert_int_equal(breaker_state(b, 20), BREAKER_OPEN);
    /* The third succeeds late: it does not close an open circuit. */
    breaker_record(b, BREAKER_SUCCESS, 30);
    assert_int_equal(breaker_state(b, 30), BREAKER_OPEN);
    breaker_record(b, BREAKER_FAILURE, 40);
    /* Nor does a late failure restart the cooldown. */
    assert_int_equal(breaker_allow(b, 5020), BREAKER_PROBE);
    breaker_destroy(b);
}

static void
test_disabled(void **state)
{
    struct breaker *b = breaker_create(0, 1000, 1000, 0);

    fail_n(b, 100, 0);
    assert_int_equal(breaker_state(b, 0), BREAKER_CLOSED);
    breaker_destroy(b);
    breaker_destroy(NULL);
}

static void
test_state_names(void **state)
{
    assert_string_equal(breaker_state_name(BREAKER_CLOSED), "closed");
    assert_string_equal(breaker_state_name(BREAKER_OPEN), "open");
    assert_string_equal(breaker_state_name(BREAKER_HALF_OPEN), "half_open");
}

/* Many threads ask a half-open breaker at once: exactly one gets the probe. */
struct race {
    struct breaker *b;
    int probes, passes;
};

static void *
race_thread(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < 2000; i++) {
        enum breaker_verdict v = breaker_allow(r->b, 10000);
        r->probes += v == BREAKER_PROBE;
        r->passes += v == BREAKER_PASS;
    }
    return NULL;
}

static void
test_threads_one_probe(void **state)
{
    struct breaker *b = breaker_create(1, 1000, 5000, 60000);
    struct race races[4];
    pthread_t th[4];

    fail_n(b, 1, 0);
    for (int i = 0; i < 4; i++) {
        races[i] = (struct race){b, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race_thread, &races[i]), 0);
    }
    int probes = 0, passes = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        probes += races[i].probes;
        passes += races[i].passes;
    }
    assert_int_equal(probes, 1);
    assert_int_equal(passes, 0);
    struct breaker_stats st;
    breaker_get_stats(b, 10000, &st);
    assert_int_equal(st.rejects, 4 * 2000 - 1);
    breaker_destroy(b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_after_threshold),
        cmocka_unit_test(test_window_boundary),
        cmocka_unit_test(test_half_open_single_probe_success),
        cmocka_unit_test(test_half_open_probe_failure),
        cmocka_unit_test(test_cancel_and_lost_probe),
        cmocka_unit_test(test_late_outcomes_while_open),
        cmocka_unit_test(test_disabled),
        cmocka_unit_test(test_state_names),
        cmocka_unit_test(test_threads_one_probe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
