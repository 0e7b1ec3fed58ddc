/* test_sticky.c - through the real triaged: a conversation's follow-up turn never routes
 * below the tier its earlier turns used (x-triage-route: sticky), a new conversation is
 * routed on its own score, and sticky = no turns it off.
 *
 * usage: test_sticky TRIAGED MOCKLLM MAKE_MODEL
 * "triage:0" routes with threshold 0 (strong), "triage:1" with threshold 1 (fast): the
 * first turn is made strong, the follow-ups would go fast on their own. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"

static struct h_env env;

#define U1 "{\"role\":\"user\",\"content\":\"Write an LRU cache in Go with generics and tests.\"}"
#define A1 "{\"role\":\"assistant\",\"content\":\"package lru\\n\\ntype Cache[K comparable, V any] struct{}\"}"
#define U2 "{\"role\":\"user\",\"content\":\"looks good, commit it\"}"
#define A2 "{\"role\":\"assistant\",\"content\":\"Committed.\"}"
#define U3 "{\"role\":\"user\",\"content\":\"thanks!\"}"
#define N1 "{\"role\":\"user\",\"content\":\"hello there\"}"

/* Sends messages to model; returns 1 when the backend and route are the expected ones. */
static int
ask(unsigned port, const char *model, const char *messages, const char *backend,
    const char *route)
{
    char body[2048];
    struct h_resp r;
    int ok;

    snprintf(body, sizeof(body), "{\"model\":\"%s\",\"messages\":%s}", model, messages);
    h_chat(port, body, &r);
    char b[64] = "", rt[64] = "";
    const char *v = h_header(&r, "x-triage-backend");
    if (v)
        snprintf(b, sizeof(b), "%s", v);
    v = h_header(&r, "x-triage-route");
    if (v)
        snprintf(rt, sizeof(rt), "%s", v);
    ok = r.status == 200 && !strcmp(b, backend) && !strcmp(rt, route);
    if (!ok)
        fprintf(stderr, "%s %s: status %ld backend '%s' route '%s', want %s %s\n", model, messages,
                r.status, b, rt, backend, route);
    h_resp_free(&r);
    return ok;
}

static void
stop(pid_t pid)
{
    int status = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void
test_sticky_on(void)
{
    pid_t pid;
    unsigned port = h_start_triaged(&env, "sticky-on", NULL, NULL, NULL, &pid);

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    /* a hard first turn goes strong; the follow-up with the full history stays there */
    CHECK(ask(port, "triage:0", "[" U1 "]", "strong", "threshold"));
    CHECK(ask(port, "triage:1", "[" U1 "," A1 "," U2 "]", "strong", "sticky"));
    CHECK(ask(port, "triage:1", "[" U1 "," A1 "," U2 "," A2 "," U3 "]", "strong", "sticky"));
    /* a request at or above its conversation's tier says why it got there as usual */
    CHECK(ask(port, "triage:0", "[" U1 "," A1 "," U2 "]", "strong", "threshold"));
    /* a new conversation is routed on its score, and so is its follow-up */
    CHECK(ask(port, "triage:1", "[" N1 "]", "fast", "threshold"));
    CHECK(ask(port, "triage:1", "[" N1 "," A1 "," U2 "]", "fast", "threshold"));
    /* the same history on another route (a backend name passes through) is not routed */
    CHECK(ask(port, "fast", "[" U1 "," A1 "," U2 "]", "fast", "passthrough"));
    stop(pid);
}

static void
test_sticky_off(void)
{
    pid_t pid;
    unsigned port = h_start_triaged(&env, "sticky-off", NULL, NULL, "[router]\nsticky = no\n", &pid);

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    CHECK(ask(port, "triage:0", "[" U1 "]", "strong", "threshold"));
    CHECK(ask(port, "triage:1", "[" U1 "," A1 "," U2 "]", "fast", "threshold"));
    stop(pid);
}

int
main(int argc, char **argv)
{
    int rc = h_env_setup(&env, "sticky", argc, argv);

    if (rc)
        return rc;
    if (h_env_make_model(&env, NULL) < 0)
        return 1;
    test_sticky_on();
    test_sticky_off();
    return h_env_finish(&env);
}
