/* test_backoff.c - full-jitter bounds and determinism, Retry-After and HTTP-date parsing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "guard/guard.h"

static void
test_bounds(void **state)
{
    struct backoff_rng r;

    backoff_seed(&r, 42);
    for (uint32_t attempt = 0; attempt < 70; attempt++) {
        uint64_t ceiling = attempt < 32 ? (uint64_t)100 << attempt : UINT64_MAX;
        if (ceiling > 10000)
            ceiling = 10000;
        uint32_t lo = UINT32_MAX, hi = 0;
        for (int i = 0; i < 2000; i++) {
            uint32_t d = backoff_delay_ms(&r, attempt, 100, 10000);
            assert_true(d <= ceiling);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        /* Full jitter covers the whole range: with 2000 draws both ends are reached
         * within 5% (deterministic for this seed). */
        assert_true(lo <= ceiling / 20);
        assert_true(hi >= ceiling - ceiling / 20);
    }
    /* Degenerate inputs. */
    assert_int_equal(backoff_delay_ms(&r, 5, 0, 10000), 0);
    assert_int_equal(backoff_delay_ms(&r, 5, 100, 0), 0);
    (void)backoff_delay_ms(&r, UINT32_MAX, UINT32_MAX, UINT32_MAX); /* no overflow (UBSan) */
    for (int i = 0; i < 100; i++)
        assert_true(backoff_delay_ms(&r, 31, UINT32_MAX, 5000) <= 5000);
}

static void
test_determinism(void **state)
{
    struct backoff_rng a, b, c;
    int differ = 0;

    backoff_seed(&a, 1234);
    backoff_seed(&b, 1234);
    backoff_seed(&c, 1235);
    for (uint32_t i = 0; i < 1000; i++) {
        uint32_t x = backoff_delay_ms(&a, i % 8, 250, 30000);
        uint32_t y = backoff_delay_ms(&b, i % 8, 250, 30000);
        uint32_t z = backoff_delay_ms(&c, i % 8, 250, 30000);
        assert_int_equal(x, y);
        differ += x != z;
    }
    assert_true(differ > 900);
}

static void
expect_ra(const char *v, time_t now, uint32_t cap, int want_r, uint32_t want_ms)
{
    uint32_t ms = 12345;
    int r = backoff_retry_after(v, now, cap, &ms);
    if (r != want_r)
        fail_msg("\"%s\": returned %d, want %d", v ? v : "(null)", r, want_r);
    if (r == 0 && ms != want_ms)
        fail_msg("\"%s\": %u ms, want %u", v, ms, want_ms);
}

static void
test_retry_after_seconds(void **state)
{
    expect_ra("120", 0, 600000, 0, 120000);
    expect_ra("0", 0, 600000, 0, 0);
    expect_ra(" \t5 ", 0, 600000, 0, 5000);
    expect_ra("007", 0, 600000, 0, 7000);
    expect_ra("601", 0, 600000, 0, 600000);
    expect_ra("99999999999999999999999999", 0, 600000, 0, 600000);
    expect_ra("4294967295", 0, UINT32_MAX, 0, UINT32_MAX);
    expect_ra("1.5", 0, 600000, -EINVAL, 0);
    expect_ra("-1", 0, 600000, -EINVAL, 0);
    expect_ra("+1", 0, 600000, -EINVAL, 0);
    expect_ra("5s", 0, 600000, -EINVAL, 0);
    expect_ra("5 5", 0, 600000, -EINVAL, 0);
    expect_ra("", 0, 600000, -EINVAL, 0);
    expect_ra("   ", 0, 600000, -EINVAL, 0);
    expect_ra(NULL, 0, 600000, -EINVAL, 0);
    expect_ra("soon", 0, 600000, -EINVAL, 0);
}

static void
expect_date(const char *s, int want_r, time_t want)
{
    time_t t = 0;
    int r = backoff_http_date(s, &t);
    if (r != want_r)
        fail_msg("\"%s\": returned %d, want %d", s, r, want_r);
    if (r == 0 && t != want)
        fail_msg("\"%s\": %lld, want %lld", s, (long long)t, (long long)want);
}

static void
test_http_date(void **state)
{
    /* RFC 9110's example in its three forms. */
    expect_date("Sun, 06 Nov 1994 08:49:37 GMT", 0, 784111777);
    expect_date("Sunday, 06-Nov-94 08:49:37 GMT", 0, 784111777);
    expect_date("Sun Nov  6 08:49:37 1994", 0, 784111777);
    expect_date("Sun Nov 06 08:49:37 1994", 0, 784111777);
    expect_date("Thu, 01 Jan 1970 00:00:00 GMT", 0, 0);
    expect_date("Tue, 29 Feb 2000 12:00:00 GMT", 0, 951825600);
    expect_date("Fri, 31 Dec 2100 23:59:59 GMT", 0, 4133980799);
    expect_date("Wednesday, 01-Jan-31 00:00:00 GMT", 0, 1924992000);
    expect_date("Wed, 31 Dec 1969 23:59:59 GMT", 0, -1);

    expect_date("Sun, 29 Feb 1995 08:49:37 GMT", -EINVAL, 0);
    expect_date("Sat, 29 Feb 1900 00:00:00 GMT", -EINVAL, 0);
    expect_date("Sun, 32 Nov 1994 08:49:37 GMT", -EINVAL, 0);
    expect_date("Sun, 00 Nov 1994 08:49:37 GMT", -EINVAL, 0);
    expect_date("Sun, 06 Nov 1994 24:00:00 GMT", -EINVAL, 0);
    expect_date("Sun, 06 Nov 1994 08:60:00 GMT", -EINVAL, 0);
    expect_date("Sun, 06 Nov 1994 08:49:37 UTC", -EINVAL, 0);
    expect_date("Sun, 06 nov 1994 08:49:37 GMT", -EINVAL, 0);
    expect_date("Sun, 6 Nov 1994 08:49:37 GMT", -EINVAL, 0);
    expect_date("Sun, 06 Nov 94 08:49:37 GMT", -EINVAL, 0);
    expect_date("Sun, 06 Nov 1994 08:49:37 GMTx", -EINVAL, 0);
    expect_date("Sun, 06 Nov 1994 08:49:37", -EINVAL, 0);
    expect_date("Xyz, 06 Nov 1994 08:49:37 GMT", -EINVAL, 0);
    expect_date("Sun Nov  6 08:49:37 1994 ", -EINVAL, 0);
    expect_date("Sunday, 06-Nov-1994 08:49:37 GMT", -EINVAL, 0);
    expect_date("", -EINVAL, 0);
}

static void
test_retry_after_date(void **state)
{
    const time_t t = 784111777;

    expect_ra("Sun, 06 Nov 1994 08:49:37 GMT", t - 30, 600000, 0, 30000);
    expect_ra(" Sun, 06 Nov 1994 08:49:37 GMT ", t - 1, 600000, 0, 1000);
    expect_ra("Sun, 06 Nov 1994 08:49:37 GMT", t, 600000, 0, 0);
    expect_ra("Sun, 06 Nov 1994 08:49:37 GMT", t + 3600, 600000, 0, 0);
    expect_ra("Sun, 06 Nov 1994 08:49:37 GMT", 0, 600000, 0, 600000);
    expect_ra("Sun Nov  6 08:49:37 1994", t - 2, 600000, 0, 2000);
    expect_ra("Sun, 06 Nov 1994 08:49:37 GMT and more text after it", t, 600000, -EINVAL, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_retry_after_seconds),
        cmocka_unit_test(test_http_date),
        cmocka_unit_test(test_retry_after_date),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
