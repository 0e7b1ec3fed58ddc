/* test_auth.c - key-file parsing, hashing, constant-time verification and bearer headers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "guard/guard.h"

/* SHA-256("abc"), the FIPS 180-2 example. */
#define HASH_ABC "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

static struct auth_keys *
parse(const char *text, char *err, size_t errlen)
{
    return auth_keys_parse(text, strlen(text), "keys", err, errlen);
}

/* Builds "name hash\n" lines for keys k0..k(n-1) named c0..c(n-1). */
static char *
make_file(int n)
{
    size_t cap = (size_t)n * 100 + 1;
    char *s = calloc(1, cap), hex[65], key[32];
    size_t len = 0;

    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        auth_key_hash_hex(key, strlen(key), hex);
        len += (size_t)snprintf(s + len, cap - len, "c%d %s\n", i, hex);
    }
    return s;
}

static void
test_hash_known_vector(void **state)
{
    char hex[65];
    unsigned char raw[AUTH_HASH_LEN];

    auth_key_hash_hex("abc", 3, hex);
    assert_string_equal(hex, HASH_ABC);
    auth_key_hash("abc", 3, raw);
    assert_int_equal(raw[0], 0xba);
    assert_int_equal(raw[31], 0xad);
}

static void
test_parse_valid_file(void **state)
{
    char err[256] = "";
    char hex[65];
    auth_key_hash_hex("sk-2", 4, hex);
    char text[1024];
    snprintf(text, sizeof(text),
             "# client keys\n"
             "\n"
             "   \t\n"
             "alice " HASH_ABC "\r\n"
             "  # indented comment\n"
             "bob.ci-runner@x+1\t %s  \n"
             "alice BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AE",
             hex);
    struct auth_keys *k = parse(text, err, sizeof(err));
    assert_non_null(k);
    assert_string_equal(err, "");
    assert_int_equal(auth_keys_count(k), 3);
    assert_string_equal(auth_keys_name(k, 0), "alice");
    assert_string_equal(auth_keys_name(k, 1), "bob.ci-runner@x+1");
    assert_string_equal(auth_keys_name(k, 2), "alice");
    assert_null(auth_keys_name(k, 3));
    assert_string_equal(auth_keys_verify(k, "abc", 3), "alice");
    assert_string_equal(auth_keys_verify(k, "sk-2", 4), "bob.ci-runner@x+1");
    auth_keys_unref(k);
}

static void
test_empty_file(void **state)
{
    char err[256];
    struct auth_keys *k = parse("# nothing yet\n\n", err, sizeof(err));
    assert_non_null(k);
    assert_int_equal(auth_keys_count(k), 0);
    assert_null(auth_keys_verify(k, "abc", 3));
    auth_keys_unref(k);
    k = auth_keys_parse("", 0, "keys", err, sizeof(err));
    assert_non_null(k);
    assert_int_equal(auth_keys_count(k), 0);
    auth_keys_unref(k);
}

static void
test_verify_right_and_wrong(void **state)
{
    char *text = make_file(50);
    char err[256];
    struct auth_keys *k = parse(text, err, sizeof(err));
    assert_non_null(k);
    assert_int_equal(auth_keys_count(k), 50);
    /* First, middle and last entries all match: the loop does not stop early and the
     * branch-free select picks the right index. */
    assert_string_equal(auth_keys_verify(k, "k0", 2), "c0");
    assert_string_equal(auth_keys_verify(k, "k25", 3), "c25");
    assert_string_equal(auth_keys_verify(k, "k49", 3), "c49");
    assert_null(auth_keys_verify(k, "k50", 3));
    assert_null(auth_keys_verify(k, "k4", 1)); /* a prefix of a key */
    assert_null(auth_keys_verify(k, "k49 ", 4));
    assert_null(auth_keys_verify(k, "", 0));
    assert_null(auth_keys_verify(k, NULL, 0));
    assert_null(auth_keys_verify(NULL, "k0", 2));
    /* len is honoured: "k12" cut to 2 bytes is "k1". */
    assert_string_equal(auth_keys_verify(k, "k12", 2), "c1");
    auth_keys_unref(k);
    free(text);
}

static void
expect_error(const char *text, const char *msg)
{
    char err[256] = "";
    struct auth_keys *k = auth_keys_parse(text, strlen(text), "/etc/triage/keys", err,
                                          sizeof(err));
    if (k)
        fail_msg("accepted: %s", text);
    if (strcmp(err, msg))
        fail_msg("for %s\n got  \"%s\"\n want \"%s\"", text, err, msg);
}

static void
test_bad_lines(void **state)
{
    expect_error("# x\nalice\n", "/etc/triage/keys:2: expected a SHA-256 hash (64 hex digits) after the key name");
    expect_error("alice ba7816bf\n", "/etc/triage/keys:1: expected a SHA-256 hash (64 hex digits) after the key name");
    expect_error("alice " HASH_ABC "00\n", "/etc/triage/keys:1: expected a SHA-256 hash (64 hex digits) after the key name");
    expect_error("alice ga7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n",
                 "/etc/triage/keys:1: expected a SHA-256 hash (64 hex digits) after the key name");
    expect_error("\n\nal/ice " HASH_ABC "\n", "/etc/triage/keys:3: key name may only hold letters, digits and . _ - @ +");
    expect_error("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa " HASH_ABC "\n",
                 "/etc/triage/keys:1: key name longer than 64 characters");
    expect_error("alice " HASH_ABC " # admin\n", "/etc/triage/keys:1: unexpected text after the hash");
    expect_error("alice sk-triage-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
                 "/etc/triage/keys:1: this looks like a plain key; the file holds only hashes (use `triage key add`)");
    expect_error("alice " HASH_ABC "\n# c\nbob " HASH_ABC "\n", "/etc/triage/keys:3: duplicate key (same hash as line 1)");
    expect_error("alice " HASH_ABC "\nbob BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD\n",
                 "/etc/triage/keys:2: duplicate key (same hash as line 1)");

    char nul[] = "alice " HASH_ABC "\nb\0b " HASH_ABC "\n";
    char err[256];
    assert_null(auth_keys_parse(nul, sizeof(nul) - 1, "k", err, sizeof(err)));
    assert_string_equal(err, "k:2: NUL byte in line");
    /* A NULL err buffer is allowed. */
    assert_null(auth_keys_parse("x\n", 2, "k", NULL, 0));
}

static void
test_load_file(void **state)
{
    char path[] = "/tmp/triage-test-auth-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char *text = make_file(1000);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char err[256] = "";
    struct auth_keys *k = auth_keys_load(path, err, sizeof(err));
    assert_non_null(k);
    assert_int_equal(auth_keys_count(k), 1000);
    assert_string_equal(auth_keys_verify(k, "k999", 4), "c999");
    auth_keys_unref(k);
    unlink(path);
    free(text);

    k = auth_keys_load("/nonexistent/triage-keys", err, sizeof(err));
    assert_null(k);
    assert_string_equal(err, "/nonexistent/triage-keys: No such file or directory");
}

static void
test_refcount(void **state)
{
    char err[256];
    struct auth_keys *k = parse("alice " HASH_ABC "\n", err, sizeof(err));
    assert_ptr_equal(auth_keys_ref(k), k);
    const char *name = auth_keys_verify(k, "abc", 3);
    auth_keys_unref(k);
    /* Still held once: the borrowed name stays valid. */
    assert_string_equal(name, "alice");
    auth_keys_unref(k);
    auth_keys_unref(NULL);
    assert_null(auth_keys_ref(NULL));
    assert_int_equal(auth_keys_count(NULL), 0);
}

static void
expect_bearer(const char *value, int want, const char *want_tok)
{
    const char *tok = NULL;
    size_t n = 0;
    int r = auth_bearer_parse(value, &tok, &n);
    if (r != want)
        fail_msg("\"%s\": got %d want %d", value ? value : "(null)", r, want);
    if (want_tok && (n != strlen(want_tok) || memcmp(tok, want_tok, n)))
        fail_msg("\"%s\": token \"%.*s\"", value, (int)n, tok);
}

static void
test_bearer_parse(void **state)
{
    expect_bearer("Bearer sk-triage-abc", 0, "sk-triage-abc");
    expect_bearer("bearer xyz", 0, "xyz");
    expect_bearer("BEARER \t xyz \t", 0, "xyz");
    expect_bearer("  Bearer a+/=~._-", 0, "a+/=~._-");
    expect_bearer(NULL, -ENOENT, NULL);
    expect_bearer("", -ENOENT, NULL);
    expect_bearer(" \t ", -ENOENT, NULL);
    expect_bearer("Basic YWxhZGRpbjpvcGVuc2VzYW1l", -EINVAL, NULL);
    expect_bearer("Bearer", -EINVAL, NULL);
    expect_bearer("Bearer   ", -EINVAL, NULL);
    expect_bearer("Bearerxyz", -EINVAL, NULL);
    expect_bearer("Bear xyz", -EINVAL, NULL);
    expect_bearer("Bearer a b", -EINVAL, NULL);
    expect_bearer("Bearer a\x01", -EINVAL, NULL);
    expect_bearer("Bearer a\xc3\xa9", -EINVAL, NULL);
    expect_bearer("sk-triage-abc", -EINVAL, NULL);

    char *big = malloc(7 + 4097 + 1);
    memcpy(big, "Bearer ", 7);
    memset(big + 7, 'a', 4096);
    big[7 + 4096] = '\0';
    expect_bearer(big, 0, NULL);
    big[7 + 4096] = 'a';
    big[7 + 4097] = '\0';
    expect_bearer(big, -EINVAL, NULL);
    free(big);
}

static void
test_check(void **state)
{
    char err[256];
    struct auth_keys *k = parse("alice " HASH_ABC "\n", err, sizeof(err));
    const char *name = NULL;

    assert_int_equal(auth_check(k, "Bearer abc", &name), 0);
    assert_string_equal(name, "alice");
    assert_int_equal(auth_check(k, "Bearer abd", &name), -EACCES);
    assert_null(name);
    assert_int_equal(auth_check(k, NULL, &name), -ENOENT);
    assert_int_equal(auth_check(k, "", &name), -ENOENT);
    assert_int_equal(auth_check(k, "Token abc", &name), -EINVAL);
    assert_int_equal(auth_check(k, "Bearer abc def", &name), -EINVAL);
    auth_keys_unref(k);
}

static void
test_generate(void **state)
{
    char a[AUTH_KEY_LEN + 1], b[AUTH_KEY_LEN + 1], small[AUTH_KEY_LEN];

    assert_int_equal(auth_key_generate(small, sizeof(small)), -ENOSPC);
    assert_int_equal(auth_key_generate(a, sizeof(a)), 0);
    assert_int_equal(auth_key_generate(b, sizeof(b)), 0);
    assert_int_equal(strlen(a), AUTH_KEY_LEN);
    assert_memory_equal(a, AUTH_KEY_PREFIX, strlen(AUTH_KEY_PREFIX));
    for (size_t i = strlen(AUTH_KEY_PREFIX); i < AUTH_KEY_LEN; i++)
        assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                               a[i]));
    assert_string_not_equal(a, b);

    /* A generated key is a valid bearer token and round-trips through a key file. */
    char hex[65], text[160];
    auth_key_hash_hex(a, strlen(a), hex);
    snprintf(text, sizeof(text), "gen %s\n", hex);
    char err[256];
    struct auth_keys *k = parse(text, err, sizeof(err));
    char hdr[100];
    snprintf(hdr, sizeof(hdr), "Bearer %s", a);
    const char *name;
    assert_int_equal(auth_check(k, hdr, &name), 0);
    assert_string_equal(name, "gen");
    snprintf(hdr, sizeof(hdr), "Bearer %s", b);
    assert_int_equal(auth_check(k, hdr, &name), -EACCES);
    auth_keys_unref(k);
}

static void
test_name_valid(void **state)
{
    assert_true(auth_name_valid("ci-runner_2.prod@team+x"));
    assert_true(auth_name_valid("a"));
    assert_false(auth_name_valid(""));
    assert_false(auth_name_valid(NULL));
    assert_false(auth_name_valid("a b"));
    assert_false(auth_name_valid("a#b"));
    assert_false(auth_name_valid("é"));
    char n[66];
    memset(n, 'x', 64);
    n[64] = '\0';
    assert_true(auth_name_valid(n));
    n[64] = 'x';
    n[65] = '\0';
    assert_false(auth_name_valid(n));
}

static void
test_budgets(void **state)
{
    char err[256] = "", text[512];
    double usd = 0;
    enum auth_budget_period p = AUTH_BUDGET_NONE;

    assert_int_equal(auth_budget_parse("50/day", &usd, &p), 0);
    assert_true(usd == 50 && p == AUTH_BUDGET_DAY);
    assert_int_equal(auth_budget_parse("0.25/month", &usd, &p), 0);
    assert_true(usd == 0.25 && p == AUTH_BUDGET_MONTH);
    const char *bad[] = {"", "50", "50/week", "0/day", "-1/day", "nan/day", "inf/day", "1e13/day",
                         "/day", "5 /day", "50/day ", "+5/day"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (auth_budget_parse(bad[i], &usd, &p) != -EINVAL)
            fail_msg("accepted budget \"%s\"", bad[i]);

    /* On the key line; two keys of one name share its budget; others have none. */
    snprintf(text, sizeof(text), "a %s budget_usd=12.5/day\na %s\nb %s\n", HASH_ABC,
             "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ae",
             "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015af");
    struct auth_keys *k = parse(text, err, sizeof(err));
    assert_non_null(k);
    assert_int_equal(auth_keys_budget(k, "a", &usd), AUTH_BUDGET_DAY);
    assert_true(usd == 12.5);
    assert_int_equal(auth_keys_budget(k, "b", &usd), AUTH_BUDGET_NONE);
    assert_int_equal(auth_keys_budget(k, "zz", &usd), AUTH_BUDGET_NONE);
    auth_keys_unref(k);

    snprintf(text, sizeof(text), "a %s budget=5/day\n", HASH_ABC);
    expect_error(text, "/etc/triage/keys:1: unexpected text after the hash");
    snprintf(text, sizeof(text), "a %s budget_usd=5/week\n", HASH_ABC);
    expect_error(text, "/etc/triage/keys:1: budget_usd: expected AMOUNT/day or AMOUNT/month, "
                       "AMOUNT a number of USD > 0");
    snprintf(text, sizeof(text), "a %s budget_usd=5/day x\n", HASH_ABC);
    expect_error(text, "/etc/triage/keys:1: unexpected text after the budget");
    snprintf(text, sizeof(text), "a %s budget_usd=5/day\na %s budget_usd=6/day\n", HASH_ABC,
             "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ae");
    expect_error(text, "/etc/triage/keys:2: budget for a differs from line 1's");

    /* UTC periods: 2026-12-07 10:00:00 UTC. */
    int64_t t = 1796637600000LL;
    assert_int_equal(auth_budget_period_start(AUTH_BUDGET_DAY, t), 1796601600000LL);
    assert_int_equal(auth_budget_period_end(AUTH_BUDGET_DAY, t), 1796688000000LL);
    assert_int_equal(auth_budget_period_start(AUTH_BUDGET_MONTH, t), 1796083200000LL);
    assert_int_equal(auth_budget_period_end(AUTH_BUDGET_MONTH, t), 1798761600000LL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_known_vector),
        cmocka_unit_test(test_parse_valid_file),
        cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_verify_right_and_wrong),
        cmocka_unit_test(test_bad_lines),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_refcount),
        cmocka_unit_test(test_bearer_parse),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_name_valid),
        cmocka_unit_test(test_budgets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
