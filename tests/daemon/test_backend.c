/* test_backend.c - through the real triaged: what a backend receives (its URL with the
 * query kept, its key in Authorization or api_key_header, its `header` lines, W3C trace
 * context and [server] forward_headers from the client, never the client's key), and
 * the config errors for headers that may not be set or forwarded.
 *
 * usage: test_backend TRIAGED MOCKLLM MAKE_MODEL
 * mockllm runs with --heads: GET /_mock/last_head says what the last chat call carried. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "guard/guard.h"
#include "harness.h"
#include "upstream/upstream.h"

static struct h_env env;

/* The head of the last chat call the mock got (new reference), or NULL. */
static json_t *
last_head(void)
{
    struct h_resp r;
    h_get(env.mock_port, "/_mock/last_head", &r);
    json_t *j = r.status == 200 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
    h_resp_free(&r);
    return j;
}

static const char *
head_header(json_t *head, const char *name)
{
    return json_string_value(json_object_get(json_object_get(head, "headers"), name));
}

static void
test_url_join(void)
{
    static const struct {
        const char *base, *want;
    } cases[] = {
        {"http://h/v1", "http://h/v1/chat/completions"},
        {"https://x.openai.azure.com/openai/deployments/x?api-version=2024-06-01",
         "https://x.openai.azure.com/openai/deployments/x/chat/completions?api-version=2024-06-01"},
        {"http://h:8/a?b=c/d#f", "http://h:8/a/chat/completions?b=c/d#f"},
        {"http://h#frag", "http://h/chat/completions#frag"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *u = upstream_url_join(cases[i].base, "/chat/completions");
        if (strcmp(u, cases[i].want))
            fprintf(stderr, "url_join(%s) = %s, want %s\n", cases[i].base, u, cases[i].want);
        CHECK(!strcmp(u, cases[i].want));
        free(u);
    }
}

/* An Azure-shaped backend: the deployment's path and api-version query kept, the key in
 * api-key, extra header lines sent; the client's Authorization and x-api-key never. */
static void
test_azure_headers(void)
{
    char tail[1024];
    pid_t pid;

    setenv("TRIAGE_TEST_AZURE_KEY", "azure-secret-1", 1);
    snprintf(tail, sizeof(tail),
             "[backend azure]\n"
             "url = http://127.0.0.1:%u/openai/deployments/gpt4o/?api-version=2024-06-01\n"
             "api_key_env = TRIAGE_TEST_AZURE_KEY\napi_key_header = api-key\n"
             "header = X-Extra-One: first value\nheader = HTTP-Referer: https://example.test/\n"
             "[backend plain]\nurl = http://127.0.0.1:%u/v1\n",
             env.mock_port, env.mock_port);
    unsigned port = h_start_triaged(&env, "azure", "forward_headers = OpenAI-Beta, X-Custom-Thing",
                                    NULL, tail, &pid);
    CHECK(port);
    if (!port)
        return;

    static const char *const hdrs[] = {
        "Authorization: Bearer client-secret-xyz",
        "x-api-key: client-secret-abc",
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate: congo=t61rcWkgMzE",
        "OpenAI-Beta: assistants=v2",
        "X-Custom-Thing: kept",
        "X-Not-Listed: dropped",
        NULL,
    };
    struct h_resp r;
    struct h_req req = {.path = "/v1/chat/completions",
                        .body = "{\"model\":\"azure\",\"messages\":[{\"role\":\"user\","
                                "\"content\":\"hi\"}]}",
                        .headers = hdrs};
    h_do(port, &req, &r);
    CHECK(r.status == 200);
    h_resp_free(&r);

    json_t *h = last_head();
    CHECK(h);
    const char *path = json_string_value(json_object_get(h, "path"));
    const char *query = json_string_value(json_object_get(h, "query"));
    CHECK(path && !strcmp(path, "/openai/deployments/gpt4o/chat/completions"));
    CHECK(query && !strcmp(query, "api-version=2024-06-01"));
    const char *v = head_header(h, "api-key");
    CHECK(v && !strcmp(v, "azure-secret-1"));
    CHECK(!head_header(h, "authorization"));
    CHECK(!head_header(h, "x-api-key"));
    v = head_header(h, "x-extra-one");
    CHECK(v && !strcmp(v, "first value"));
    v = head_header(h, "http-referer");
    CHECK(v && !strcmp(v, "https://example.test/"));
    v = head_header(h, "traceparent");
    CHECK(v && !strcmp(v, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    v = head_header(h, "tracestate");
    CHECK(v && !strcmp(v, "congo=t61rcWkgMzE"));
    v = head_header(h, "openai-beta");
    CHECK(v && !strcmp(v, "assistants=v2"));
    v = head_header(h, "x-custom-thing");
    CHECK(v && !strcmp(v, "kept"));
    CHECK(!head_header(h, "x-not-listed"));
    json_decref(h);

    /* a backend without a key: nothing in Authorization, the client's key not either */
    req.body = "{\"model\":\"plain\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    h_do(port, &req, &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
    h = last_head();
    path = json_string_value(json_object_get(h, "path"));
    CHECK(path && !strcmp(path, "/v1/chat/completions"));
    CHECK(!head_header(h, "authorization"));
    CHECK(!head_header(h, "x-api-key"));
    CHECK(!head_header(h, "api-key"));
    CHECK(!head_header(h, "x-extra-one")); /* another backend's lines stay its own */
    CHECK(head_header(h, "traceparent"));
    json_decref(h);

    /* a forwarded value with a control byte is dropped, not sent on */
    static const char raw[] = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                              "Content-Type: application/json\r\n"
                              "OpenAI-Beta: a\x01" "b\r\nX-Custom-Thing: ok\r\n"
                              "Content-Length: 59\r\nConnection: close\r\n\r\n"
                              "{\"model\":\"plain\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}";
    char out[4096];
    int st = h_raw(port, raw, sizeof(raw) - 1, out, sizeof(out), 5000);
    if (st == 200) { /* MHD let the byte through: triage must not pass it on */
        h = last_head();
        CHECK(!head_header(h, "openai-beta"));
        v = head_header(h, "x-custom-thing");
        CHECK(v && !strcmp(v, "ok"));
        json_decref(h);
    } else {
        CHECK(st == 400); /* or the request was refused before any backend saw it */
    }

    /* the default forward list: OpenAI-Beta and anthropic-beta */
    h_stop(pid, SIGTERM);
    port = h_start_triaged(&env, "defaults", NULL, NULL, NULL, &pid);
    CHECK(port);
    if (!port)
        return;
    static const char *const hdrs2[] = {"OpenAI-Beta: responses=v1", "anthropic-beta: tools-2024",
                                        "X-Custom-Thing: no", "Authorization: Bearer sk-client",
                                        NULL};
    req.headers = hdrs2;
    req.body = "{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    h_do(port, &req, &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
    h = last_head();
    v = head_header(h, "openai-beta");
    CHECK(v && !strcmp(v, "responses=v1"));
    v = head_header(h, "anthropic-beta");
    CHECK(v && !strcmp(v, "tools-2024"));
    CHECK(!head_header(h, "x-custom-thing"));
    CHECK(!head_header(h, "authorization"));
    json_decref(h);
    h_stop(pid, SIGTERM);
}

/* --check-config on a file whose [server] and backend lines are given: 0 or 1, and the
 * message must hold want. */
static void
check_config(const char *name, const char *server, const char *backend, int want_rc,
             const char *want)
{
    char path[512], out[2048];
    snprintf(path, sizeof(path), "%s/%s.conf", env.dir, name);
    FILE *f = fopen(path, "w");
    CHECK(f);
    if (!f)
        return;
    fprintf(f, "[server]\n%s\n[router]\nmodel = m.tmod\n[backend a]\nurl = http://127.0.0.1:1/v1\n%s\n",
            server, backend);
    fclose(f);
    char *argv[] = {(char *)env.triaged, "--check-config", path, NULL};
    int rc = h_run(argv, out, sizeof(out));
    if (rc != want_rc || !strstr(out, want))
        fprintf(stderr, "%s: rc %d, output: %s\n", name, rc, out);
    CHECK(rc == want_rc);
    CHECK(strstr(out, want) != NULL);
}

static void
test_config_errors(void)
{
    check_config("ok", "forward_headers = OpenAI-Beta", "header = X-Title: my app", 0, "OK");
    check_config("fwd-auth", "forward_headers = OpenAI-Beta, Authorization", "", 1,
                 "forward_headers: authorization is never forwarded");
    check_config("fwd-xkey", "forward_headers = x-api-key", "", 1, "never forwarded");
    check_config("fwd-name", "forward_headers = bad name", "", 1, "not a header name");
    check_config("hdr-key", "", "header = api-key: sk-123", 1, "api_key_header");
    check_config("hdr-auth", "", "header = Authorization: Bearer x", 1, "sets that header");
    check_config("hdr-name", "", "header = Bad Name: x", 1, "token name");
    check_config("hdr-colon", "", "header = novalue", 1, "expected 'Name: value'");
    check_config("hdr-ctl", "", "header = X-A: a\x01z", 1, "control character");
    check_config("keyhdr", "", "api_key_header = bad header", 1, "api_key_header");
}

/* GET path on port with headers; the body parsed when wanted (new reference). */
static char *
get_text(unsigned port, const char *path, const char *const *headers)
{
    struct h_resp r;
    struct h_req req = {.path = path, .headers = headers};
    h_do(port, &req, &r);
    char *t = r.status == 200 && r.body ? strdup(r.body) : NULL;
    h_resp_free(&r);
    return t;
}

static long
chat_status(unsigned port, const char *key, const char *body)
{
    char auth[128];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    const char *const hdrs[] = {auth, NULL};
    struct h_resp r;
    struct h_req req = {.path = "/v1/chat/completions", .body = body, .headers = hdrs};
    h_do(port, &req, &r);
    long st = r.status;
    h_resp_free(&r);
    return st;
}

static json_int_t
jint(json_t *j, const char *a, const char *b, const char *c)
{
    json_t *v = json_object_get(j, a);
    if (b)
        v = json_object_get(v, b);
    if (c)
        v = json_object_get(v, c);
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

/* A backend answering 503 that the router falls back from is that backend's error in
 * /metrics and /v1/stats although the client got its answer; the client's own 401,
 * 404 and 429 are nobody's backend error; requests, tokens and spend per key. */
static void
test_honest_errors(void)
{
    char path[512], hex[2 * AUTH_HASH_LEN + 1];
    snprintf(path, sizeof(path), "%s/keys", env.dir);
    FILE *f = fopen(path, "w");
    CHECK(f);
    if (!f)
        return;
    auth_key_hash_hex("sk-team-a", 9, hex);
    fprintf(f, "team-a %s\n", hex);
    auth_key_hash_hex("sk-team-b", 9, hex);
    fprintf(f, "team-b %s\n", hex);
    fclose(f);
    pid_t pid;
    unsigned port = h_start_triaged(&env, "honest",
                                    "[router]\nfallback = strong\n"
                                    "[auth]\nkeys_file = keys\nopen_on_loopback = no\n"
                                    "rate_limit_rpm = 3\n",
                                    "path = out.db\nflush_interval_ms = 10\n",
                                    "price_input = 1000\nprice_output = 2000\n", &pid);
    CHECK(port);
    if (!port)
        return;

    /* routed to fast (threshold 1), which answers 503 twice (an attempt and its retry):
     * strong answers */
    CHECK(chat_status(port, "sk-team-a",
                      "{\"model\":\"triage:1\",\"messages\":[{\"role\":\"user\",\"content\":"
                      "\"what is two plus two\"}],\"mock\":{\"by_model\":{\"fast\":"
                      "{\"status\":503}}}}") == 200);
    const char *ok = "{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    CHECK(chat_status(port, "sk-team-a", ok) == 200);
    CHECK(chat_status(port, "sk-team-a",
                      "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}") ==
          404);
    CHECK(chat_status(port, "sk-wrong", ok) == 401);
    for (int i = 0; i < 3; i++)
        CHECK(chat_status(port, "sk-team-b", ok) == 200);
    CHECK(chat_status(port, "sk-team-b", ok) == 429); /* rate_limit_rpm = 3 */

    const char *const auth[] = {"Authorization: Bearer sk-team-a", NULL};
    char *m = get_text(port, "/metrics", auth);
    CHECK(m);
    if (m) {
        CHECK(strstr(m, "triage_backend_errors_total{backend=\"fast\",kind=\"backend_status\"} 2\n"));
        CHECK(!strstr(m, "triage_backend_errors_total{backend=\"strong\""));
        CHECK(!strstr(m, "triage_backend_errors_total{backend=\"none\""));
        CHECK(!strstr(m, "kind=\"rate_limit_exceeded\""));
        CHECK(strstr(m, "triage_fallbacks_total{from=\"fast\",to=\"strong\"} 1\n"));
        CHECK(strstr(m, "triage_key_requests_total{key=\"team-a\"} 3\n"));
        CHECK(strstr(m, "triage_key_requests_total{key=\"team-b\"} 4\n"));
        CHECK(strstr(m, "triage_key_tokens_total{key=\"team-a\",direction=\"output\"}"));
        CHECK(strstr(m, "triage_key_cost_usd_total{key=\"team-b\"}"));
        CHECK(!strstr(m, "triage_key_cost_usd_total{key=\"team-a\"} 0\n")); /* strong is priced */
        free(m);
    }

    /* /v1/stats, once the outcome log has the rows */
    json_t *st = NULL;
    for (int i = 0; i < 100; i++) {
        char *t = get_text(port, "/v1/stats?window=15m", auth);
        json_decref(st);
        st = t ? json_loads(t, 0, NULL) : NULL;
        free(t);
        if (jint(st, "requests", NULL, NULL) >= 8)
            break;
        usleep(50000);
    }
    CHECK(jint(st, "requests", NULL, NULL) == 8);
    CHECK(jint(st, "backend_errors", NULL, NULL) == 2);
    CHECK(jint(st, "client_errors", NULL, NULL) == 3);
    CHECK(jint(st, "backends", "fast", "errors") == 2);
    CHECK(jint(st, "backends", "fast", "failed_attempts") == 2);
    CHECK(jint(st, "backends", "fast", "fallbacks_from") == 1);
    CHECK(jint(st, "backends", "strong", "errors") == 0);
    CHECK(jint(st, "backends", "strong", "requests") == 1);
    CHECK(!json_object_get(json_object_get(st, "backends"), "(none)"));
    CHECK(jint(st, "fallbacks", "requests", NULL) == 1);
    json_t *pair = json_array_get(json_object_get(json_object_get(st, "fallbacks"), "pairs"), 0);
    CHECK(pair && !strcmp(json_string_value(json_object_get(pair, "from")), "fast") &&
          !strcmp(json_string_value(json_object_get(pair, "to")), "strong") &&
          json_integer_value(json_object_get(pair, "requests")) == 1);
    CHECK(jint(st, "keys", "team-a", "requests") == 3);
    CHECK(jint(st, "keys", "team-b", "requests") == 4);
    CHECK(jint(st, "keys", "team-b", "errors") == 1);
    CHECK(jint(st, "keys", "team-a", "tokens_out") > 0);
    json_t *cost = json_object_get(json_object_get(json_object_get(st, "keys"), "team-a"), "cost_usd");
    CHECK(json_is_number(cost) && json_number_value(cost) > 0);
    json_decref(st);
    h_stop(pid, SIGTERM);
}

int
main(int argc, char **argv)
{
    int rc = h_env_setup(&env, "backend", argc, argv);

    if (rc)
        return rc;
    /* the env's mock again, with --heads */
    h_stop(env.mock_pid, SIGTERM);
    char *mock_argv[] = {(char *)env.mock, "--port", "0", "--heads", NULL};
    if (h_spawn_mock(mock_argv, &env.mock_pid, &env.mock_port) < 0) {
        fprintf(stderr, "cannot start mockllm --heads\n");
        return 1;
    }
    if (h_env_make_model(&env, NULL) < 0)
        return 1;
    test_url_join();
    test_azure_headers();
    test_config_errors();
    test_honest_errors();
    return h_env_finish(&env);
}
