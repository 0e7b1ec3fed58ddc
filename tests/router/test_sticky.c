/* test_sticky.c - router/sticky.c recognises a conversation's follow-up turns from their
 * earlier messages, keeps clients and routes apart, expires and evicts within its bound. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "router.h"

static json_t *
msgs(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    if (!j)
        fail_msg("bad test JSON: %s: %s", text, err.text);
    return j;
}

/* Routes one request: digest, look up, remember at max(tier, remembered). Returns the
 * remembered tier (-1: new conversation). */
static int
turn(struct router_sticky *t, const char *messages, const char *salt, size_t tier, uint64_t now)
{
    struct router_convo c;
    json_t *m = msgs(messages);
    assert_int_equal(router_sticky_digest(t, m, salt, &c), 0);
    int was = router_sticky_lookup(t, &c, now);
    router_sticky_remember(t, &c, was > (int)tier ? (size_t)was : tier, now);
    json_decref(m);
    return was;
}

#define SYS "{\"role\":\"system\",\"content\":\"You are a helpful coder.\"}"
#define U1 "{\"role\":\"user\",\"content\":\"Write an LRU cache in Go.\"}"
#define A1 "{\"role\":\"assistant\",\"content\":\"package lru ...\"}"
#define U2 "{\"role\":\"user\",\"content\":\"looks good, commit it\"}"
#define A2 "{\"role\":\"assistant\",\"content\":\"Done.\"}"
#define U3 "{\"role\":\"user\",\"content\":\"thanks\"}"

static void
test_follow_up(void **state)
{
    (void)state;
    struct router_sticky *t = router_sticky_new(1024, 60, 1);

    assert_int_equal(turn(t, "[" SYS "," U1 "]", "triage", 1, 100), -1);
    /* the follow-up with the full history finds its first turn */
    assert_int_equal(turn(t, "[" SYS "," U1 "," A1 "," U2 "]", "triage", 0, 110), 1);
    /* and the third turn the second (remembered at tier 1, not its own 0) */
    assert_int_equal(turn(t, "[" SYS "," U1 "," A1 "," U2 "," A2 "," U3 "]", "triage", 0, 120), 1);
    /* the same text as parts, re-serialised with other spacing and key order: same */
    assert_int_equal(turn(t,
                          "[ {\"content\":\"You are a helpful coder.\", \"role\":\"system\"},"
                          " {\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
                          "\"Write an LRU cache in Go.\"}]}," A1 "," U2 "]",
                          "triage", 0, 125),
                     -1); /* parts are not a string: a different message */
    assert_int_equal(turn(t, "[ {\"content\":\"You are a helpful coder.\",  \"role\":\"system\"}," U1
                             "," A1 "," U2 "]",
                          "triage", 0, 126),
                     1);
    /* another client or route: a new conversation */
    assert_int_equal(turn(t, "[" SYS "," U1 "," A1 "," U2 "]", "triage\nkey-b", 0, 130), -1);
    assert_int_equal(turn(t, "[" SYS "," U1 "," A1 "," U2 "]", "other", 0, 130), -1);
    /* a different first turn: a new conversation */
    assert_int_equal(turn(t, "[" SYS "," U2 "," A1 "," U2 "]", "triage", 0, 130), -1);
    /* a first turn alone never matches, even when seen before */
    assert_int_equal(turn(t, "[" SYS "," U1 "]", "triage", 0, 140), -1);
    router_sticky_unref(t);
}

/* Tool calls: the prefix before each assistant reply is looked up, so a turn after a tool
 * loop still finds the conversation's first request. */
static void
test_tools(void **state)
{
    (void)state;
    struct router_sticky *t = router_sticky_new(1024, 60, 2);
    const char *call = "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\","
                       "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}";
    const char *tool = "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"}";
    char buf[1024];

    assert_int_equal(turn(t, "[" U1 "]", "r", 2, 10), -1);
    snprintf(buf, sizeof(buf), "[" U1 ",%s,%s]", call, tool);
    assert_int_equal(turn(t, buf, "r", 0, 11), 2); /* the tool loop's next call */
    snprintf(buf, sizeof(buf), "[" U1 ",%s,%s," A1 "," U2 "]", call, tool);
    assert_int_equal(turn(t, buf, "r", 0, 12), 2);
    router_sticky_unref(t);
}

static void
test_expiry_and_bound(void **state)
{
    (void)state;
    struct router_sticky *t = router_sticky_new(64, 30, 3);
    char buf[256];

    assert_int_equal(router_sticky_max(t), 64);
    assert_int_equal(router_sticky_ttl(t), 30);
    turn(t, "[" U1 "]", "r", 1, 100);
    /* alive within ttl of the last use, and a use keeps it alive */
    assert_int_equal(turn(t, "[" U1 "," A1 "," U2 "]", "r", 0, 125), 1);
    assert_int_equal(turn(t, "[" U1 "," A1 "," U3 "]", "r", 0, 150), 1);
    assert_int_equal(turn(t, "[" U1 "," A1 "," U3 "]", "r", 0, 181), -1);
    /* 10,000 conversations through 64 entries: bounded, the newest still found */
    for (int i = 0; i < 10000; i++) {
        snprintf(buf, sizeof(buf), "[{\"role\":\"user\",\"content\":\"q %d\"}]", i);
        turn(t, buf, "r", 1, 200);
    }
    assert_int_equal(turn(t, "[{\"role\":\"user\",\"content\":\"q 9999\"}," A1 "," U2 "]", "r", 0, 201), 1);
    int found = 0;
    for (int i = 0; i < 9000; i++) {
        snprintf(buf, sizeof(buf), "[{\"role\":\"user\",\"content\":\"q %d\"}," A1 "," U2 "]", i);
        found += turn(t, buf, "r", 0, 201) >= 0;
    }
    assert_true(found <= 64);
    router_sticky_unref(t);
}

static void
test_edges(void **state)
{
    (void)state;
    struct router_convo c;
    struct router_sticky *t = router_sticky_new(8, 1, 4);

    assert_null(router_sticky_new(3, 1, 0));
    assert_null(router_sticky_new(64, 0, 0));
    assert_null(router_sticky_new((size_t)ROUTER_STICKY_MAX_ENTRIES + 1, 1, 0));
    json_t *empty = json_array();
    assert_int_equal(router_sticky_digest(t, empty, NULL, &c), -EINVAL);
    assert_int_equal(router_sticky_lookup(t, &c, 0), -1);
    json_decref(empty);
    /* not an array, odd messages: digested without trouble */
    json_t *odd = msgs("[1, {\"role\": 5}, {\"content\": [1, {\"text\": 2}]}, {\"role\":\"assistant\"},"
                       "{\"role\":\"user\",\"tool_calls\":7}]");
    assert_int_equal(router_sticky_digest(t, odd, NULL, &c), 0);
    assert_true(c.n_prefix <= ROUTER_STICKY_MAX_PREFIXES);
    json_decref(odd);
    /* a long conversation keeps its last 8 prefixes */
    json_t *longc = json_array();
    for (int i = 0; i < 40; i++) {
        json_array_append_new(longc, json_pack("{s:s,s:s}", "role", "user", "content", "u"));
        json_array_append_new(longc, json_pack("{s:s,s:s}", "role", "assistant", "content", "a"));
    }
    json_array_append_new(longc, json_pack("{s:s,s:s}", "role", "user", "content", "last"));
    assert_int_equal(router_sticky_digest(t, longc, "x", &c), 0);
    assert_int_equal(c.n_prefix, ROUTER_STICKY_MAX_PREFIXES);
    json_decref(longc);
    router_sticky_ref(t);
    router_sticky_unref(t);
    router_sticky_unref(t);
    router_sticky_unref(NULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_follow_up),
        cmocka_unit_test(test_tools),
        cmocka_unit_test(test_expiry_and_bound),
        cmocka_unit_test(test_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
