/* test_cascade.c - policy cascade end to end: the band's edges, a fast answer served or
 * escalated (one answer, headers saying which), a fast tier that errors or times out
 * (escalated, no client error), a streaming client's held answer, a client that hangs up
 * while the answer is held (no strong call), the counters in /v1/stats.
 *
 * usage: test_cascade TRIAGED MOCKLLM MAKE_MODEL
 * strong is the shared mockllm; fast is a second mockllm answering one fixed text. Each
 * case starts its own triaged; waits poll with generous bounds. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"

static struct h_env env;
static unsigned fast_port;
static int failures;

#define CCHECK(cond, ...)                                                                        \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                 \
            fprintf(stderr, __VA_ARGS__);                                                        \
            fputc('\n', stderr);                                                                 \
            failures++;                                                                          \
        }                                                                                        \
    } while (0)

/* Starts triaged with policy cascade: fast at fast_url, strong at the shared mock;
 * router_extra and fast_extra are lines of [router] and [backend fast]. */
static unsigned
start(const char *name, const char *fast_url, const char *router_extra, const char *fast_extra,
      pid_t *pid)
{
    unsigned port = h_free_port();
    char path[512], log[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s.conf", env.dir, name);
    f = fopen(path, "w");
    if (!f)
        return 0;
    fprintf(f,
            "[server]\nlisten = 127.0.0.1\nport = %u\nworkers = 1\nshutdown_timeout_ms = 2000\n"
            "[router]\nmodel = m.tmod\ntiers = fast, strong\npolicy = cascade\n%s\n"
            "[storage]\npath = %s/%s.db\nflush_interval_ms = 10\n"
            "[backend fast]\nurl = %s\nmax_retries = 0\nprice_input = 1\nprice_output = 1\n%s\n"
            "[backend strong]\nurl = http://127.0.0.1:%u/v1\nprice_input = 10\nprice_output = 30\n",
            port, router_extra ? router_extra : "", env.dir, name, fast_url,
            fast_extra ? fast_extra : "", env.mock_port);
    fclose(f);
    snprintf(log, sizeof(log), "%s/%s.log", env.dir, name);
    char *argv[] = {(char *)env.triaged, "--config", path, NULL};
    if (h_spawn_daemon(argv, port, log, pid) < 0) {
        fprintf(stderr, "%s: triaged did not start (see %s)\n", name, log);
        return 0;
    }
    return port;
}

static long
mock_requests(unsigned port)
{
    struct h_resp r;
    long n = -1;

    h_get(port, "/_mock/stats", &r);
    json_t *j = json_loads(r.body ? r.body : "", 0, NULL);
    if (json_is_integer(json_object_get(j, "requests")))
        n = (long)json_integer_value(json_object_get(j, "requests"));
    json_decref(j);
    h_resp_free(&r);
    return n;
}

static void
mock_reset(unsigned port)
{
    struct h_req q = {.method = "POST", .path = "/_mock/reset", .body = ""};
    struct h_resp r;
    h_do(port, &q, &r);
    h_resp_free(&r);
}

static const char *body_plain =
    "{\"model\":\"triage\",\"messages\":[{\"role\":\"user\",\"content\":\"What is 40 + 2?\"}]}";
static const char *body_stream = "{\"model\":\"triage\",\"stream\":true,\"messages\":[{\"role\":"
                                 "\"user\",\"content\":\"What is 40 + 2?\"}]}";

static const char *
content_of(const struct h_resp *r, char *buf, size_t len)
{
    json_t *j = json_loads(r->body ? r->body : "", 0, NULL);
    const json_t *c = json_object_get(
        json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"), "content");
    snprintf(buf, len, "%s", json_is_string(c) ? json_string_value(c) : "");
    json_decref(j);
    return buf;
}

/* In the band, a sure answer is served: one answer, the fast one, no strong call. */
static void
test_served(void)
{
    pid_t pid;
    struct h_resp r;
    char buf[256];
    char fast_url[64];
    snprintf(fast_url, sizeof(fast_url), "http://127.0.0.1:%u/v1", fast_port);
    unsigned port = start("served", fast_url, "escalate_at = 0.99", NULL, &pid);
    if (!port) {
        failures++;
        return;
    }
    mock_reset(env.mock_port);
    mock_reset(fast_port);
    h_chat(port, body_plain, &r);
    CCHECK(r.status == 200, "served: status %ld", r.status);
    CCHECK(h_header(&r, "x-triage-route") && !strcmp(h_header(&r, "x-triage-route"), "cascade"),
          "served: route %s", h_header(&r, "x-triage-route"));
    CCHECK(h_header(&r, "x-triage-escalated") && !strcmp(h_header(&r, "x-triage-escalated"), "0"),
          "served: escalated %s", h_header(&r, "x-triage-escalated"));
    CCHECK(h_header(&r, "x-triage-escalation-score") != NULL, "served: no escalation score");
    CCHECK(h_header(&r, "x-triage-backend") && !strcmp(h_header(&r, "x-triage-backend"), "fast"),
          "served: backend %s", h_header(&r, "x-triage-backend"));
    CCHECK(!strcmp(content_of(&r, buf, sizeof(buf)), "The answer is 42."), "served: content '%s'",
          buf);
    CCHECK(!strstr(r.body ? r.body : "", "logprobs"), "served: logprobs not asked for, yet sent");
    h_resp_free(&r);
    CCHECK(mock_requests(fast_port) == 1 && mock_requests(env.mock_port) == 0,
          "served: fast %ld, strong %ld calls", mock_requests(fast_port),
          mock_requests(env.mock_port));

    /* a streaming client gets the held answer as a stream */
    h_chat(port, body_stream, &r);
    struct h_sse s;
    h_parse_sse(r.body ? r.body : "", &s);
    CCHECK(r.status == 200 && s.done && !s.bad && !strcmp(s.content, "The answer is 42."),
          "served stream: status %ld done %d bad %d content '%s'", r.status, s.done, s.bad,
          s.content);
    CCHECK(h_header(&r, "content-type") && strstr(h_header(&r, "content-type"), "event-stream"),
          "served stream: content type %s", h_header(&r, "content-type"));
    CCHECK(h_header(&r, "x-triage-escalated") && !strcmp(h_header(&r, "x-triage-escalated"), "0"),
          "served stream: escalated %s", h_header(&r, "x-triage-escalated"));
    h_resp_free(&r);

    /* /v1/stats counts the judged answers since start */
    h_get(port, "/v1/stats", &r);
    json_t *j = json_loads(r.body ? r.body : "", 0, NULL);
    json_t *c = json_object_get(j, "cascade");
    CCHECK(json_integer_value(json_object_get(c, "judged")) == 2 &&
              json_integer_value(json_object_get(c, "escalated")) == 0 &&
              json_real_value(json_object_get(c, "saved_usd")) > 0,
          "served: /v1/stats cascade %s", r.body ? r.body : "");
    json_decref(j);
    h_resp_free(&r);
    h_stop(pid, SIGTERM);
}

/* At the band's edges: escalate_at 0 escalates every answer; cascade_high 0 sends every
 * prompt to the strong tier alone, cascade_low 1 to the fast one alone. */
static void
test_edges(void)
{
    pid_t pid;
    struct h_resp r;
    char fast_url[64];
    snprintf(fast_url, sizeof(fast_url), "http://127.0.0.1:%u/v1", fast_port);

    unsigned port = start("escalated", fast_url, "escalate_at = 0", NULL, &pid);
    if (port) {
        mock_reset(env.mock_port);
        mock_reset(fast_port);
        h_chat(port, body_stream, &r);
        struct h_sse s;
        h_parse_sse(r.body ? r.body : "", &s);
        CCHECK(r.status == 200 && s.done && strcmp(s.content, "The answer is 42.") != 0 &&
                  s.content[0],
              "escalated: status %ld content '%s'", r.status, s.content);
        CCHECK(h_header(&r, "x-triage-escalated") &&
                  !strcmp(h_header(&r, "x-triage-escalated"), "1"),
              "escalated: escalated %s", h_header(&r, "x-triage-escalated"));
        CCHECK(h_header(&r, "x-triage-backend") &&
                  !strcmp(h_header(&r, "x-triage-backend"), "strong"),
              "escalated: backend %s", h_header(&r, "x-triage-backend"));
        h_resp_free(&r);
        CCHECK(mock_requests(fast_port) == 1 && mock_requests(env.mock_port) == 1,
              "escalated: fast %ld, strong %ld calls", mock_requests(fast_port),
              mock_requests(env.mock_port));
        h_stop(pid, SIGTERM);
    } else {
        failures++;
    }

    port = start("hard", fast_url, "cascade_high = 0", NULL, &pid);
    if (port) {
        mock_reset(fast_port);
        h_chat(port, body_plain, &r);
        CCHECK(r.status == 200 && h_header(&r, "x-triage-route") &&
                  !strcmp(h_header(&r, "x-triage-route"), "cascade_hard") &&
                  !h_header(&r, "x-triage-escalated"),
              "hard: status %ld route %s", r.status, h_header(&r, "x-triage-route"));
        CCHECK(mock_requests(fast_port) == 0, "hard: the fast tier was called");
        h_resp_free(&r);
        h_stop(pid, SIGTERM);
    } else {
        failures++;
    }

    port = start("easy", fast_url, "cascade_low = 1\ncascade_high = 1", NULL, &pid);
    if (port) {
        h_chat(port, body_plain, &r);
        CCHECK(r.status == 200 && h_header(&r, "x-triage-route") &&
                  !strcmp(h_header(&r, "x-triage-route"), "cascade_easy") &&
                  h_header(&r, "x-triage-backend") &&
                  !strcmp(h_header(&r, "x-triage-backend"), "fast"),
              "easy: status %ld route %s", r.status, h_header(&r, "x-triage-route"));
        h_resp_free(&r);
        h_stop(pid, SIGTERM);
    } else {
        failures++;
    }
}

/* A fast tier that is down, or too slow, escalates: the client gets the strong answer. */
static void
test_fast_fails(void)
{
    pid_t pid;
    struct h_resp r;
    char url[64];

    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1", h_free_port()); /* nobody there */
    unsigned port = start("fastdown", url, NULL, NULL, &pid);
    if (port) {
        h_chat(port, body_plain, &r);
        CCHECK(r.status == 200 && h_header(&r, "x-triage-escalated") &&
                  !strcmp(h_header(&r, "x-triage-escalated"), "1"),
              "fast down: status %ld escalated %s", r.status, h_header(&r, "x-triage-escalated"));
        h_resp_free(&r);
        h_stop(pid, SIGTERM);
    } else {
        failures++;
    }

    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1", fast_port);
    port = start("fastslow", url, NULL, "first_byte_timeout_ms = 300", &pid);
    if (port) {
        const char *slow = "{\"model\":\"triage\",\"mock\":{\"latency_ms\":3000},\"messages\":"
                           "[{\"role\":\"user\",\"content\":\"What is 40 + 2?\"}]}";
        /* the strong tier (the same mock script) would be slow too: it has its own
         * bound, the default, and answers after 3 s */
        h_chat(port, slow, &r);
        CCHECK(r.status == 200 && h_header(&r, "x-triage-escalated") &&
                  !strcmp(h_header(&r, "x-triage-escalated"), "1"),
              "fast timeout: status %ld escalated %s", r.status,
              h_header(&r, "x-triage-escalated"));
        h_resp_free(&r);
        h_stop(pid, SIGTERM);
    } else {
        failures++;
    }
}

/* A client that hangs up while its fast answer is held: no strong call for nobody, and
 * the daemon carries on. */
static void
test_hangup(void)
{
    pid_t pid;
    struct h_resp r;
    char url[64];

    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1", fast_port);
    unsigned port = start("hangup", url, "escalate_at = 0", NULL, &pid);
    if (!port) {
        failures++;
        return;
    }
    mock_reset(env.mock_port);
    const char *slow = "{\"model\":\"triage\",\"stream\":true,\"mock\":{\"latency_ms\":2500},"
                       "\"messages\":[{\"role\":\"user\",\"content\":\"What is 40 + 2?\"}]}";
    struct h_req q = {.method = "POST", .path = "/v1/chat/completions", .body = slow,
                      .timeout_ms = 400};
    h_do(port, &q, &r);
    CCHECK(r.status == 0 || r.rc != 0, "hangup: the client got an answer (%ld)", r.status);
    h_resp_free(&r);
    usleep(4000 * 1000); /* the fast answer arrives (2.5 s) and would be escalated */
    CCHECK(mock_requests(env.mock_port) == 0, "hangup: strong called %ld times for nobody",
          mock_requests(env.mock_port));
    h_get(port, "/healthz", &r);
    CCHECK(r.status == 200, "hangup: daemon unhealthy after (%ld)", r.status);
    h_resp_free(&r);
    CCHECK(h_stop(pid, SIGTERM) == 0, "hangup: triaged did not exit cleanly");
}

int
main(int argc, char **argv)
{
    int rc = h_env_setup(&env, "cascade", argc, argv);
    if (rc)
        return rc;
    if (h_env_make_model(&env, NULL) < 0)
        return 1;
    pid_t fast_pid;
    char *margv[] = {(char *)env.mock, "--port", "0", "--content", "The answer is 42.", NULL};
    if (h_spawn_mock(margv, &fast_pid, &fast_port) < 0)
        return 1;
    test_served();
    test_edges();
    test_fast_fails();
    test_hangup();
    h_stop(fast_pid, SIGTERM);
    fprintf(stderr, "%s: %d failed checks\n", failures ? "FAIL" : "PASS", failures);
    rc = h_env_finish(&env);
    return failures ? 1 : rc;
}
