/* test_api.c - through the real triaged: the API paths of daemon/api/api.c (Responses,
 * completions, embeddings, Anthropic Messages) against mockllm backends that check
 * what they receive: routing, passthrough, what reaches the backend, typed SSE events
 * relayed as they come, a Responses follow-up kept on the backend holding its state,
 * errors in the path's dialect, and the outcome rows.
 *
 * usage: test_api TRIAGED MOCKLLM MAKE_MODEL
 * One triaged (one worker) in front of three mockllms: "fast" and "claude-fast" on the
 * first, "strong" on a second and "claude-strong" on a third. A mock names its port in
 * the Responses ids it makes and refuses a previous_response_id it did not make. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "harness.h"

static struct h_env env;
static unsigned port, strong_port, claude_port;
static pid_t strong_pid, claude_pid;

/* POSTs body to path with headers (NULL-terminated, may be NULL). */
static void
post(const char *path, const char *body, const char *const *headers, struct h_resp *r)
{
    struct h_req q = {.path = path, .body = body, .headers = headers};

    h_do(port, &q, r);
}

/* A JSON string's value, "" for anything else. */
static const char *
str(const json_t *j)
{
    return json_is_string(j) ? json_string_value(j) : "";
}

static json_t *
body_json(const struct h_resp *r)
{
    return json_loadb(r->body ? r->body : "", r->len, 0, NULL);
}

/* The last request mockllm on mport received, as JSON (new), and its request count. */
static json_t *
mock_last(unsigned mport, long *requests)
{
    struct h_resp r;

    h_get(mport, "/_mock/stats", &r);
    json_t *j = body_json(&r);
    h_resp_free(&r);
    if (requests)
        *requests = (long)json_integer_value(json_object_get(j, "requests"));
    json_t *last = json_incref(json_object_get(j, "last_request"));
    json_decref(j);
    return last;
}

/* Column col of request id's outcome row, waiting up to 5 s for the writer. */
static int
outcome(const char *id, const char *col, char *out, size_t cap)
{
    char path[512], sql[256];
    int found = 0;

    snprintf(path, sizeof(path), "%s/out.db", env.dir);
    snprintf(sql, sizeof(sql), "SELECT %s FROM requests WHERE request_id = ?", col);
    out[0] = '\0';
    for (int t = 0; t < 100 && !found; t++) {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        usleep(50000);
        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
            sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
            if (sqlite3_step(st) == SQLITE_ROW) {
                const unsigned char *v = sqlite3_column_text(st, 0);
                snprintf(out, cap, "%s", v ? (const char *)v : "");
                found = 1;
            }
        }
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    return found;
}

/* Checks the outcome row of r's request: backend, route, tokens and finish reason. */
static void
check_row(const struct h_resp *r, const char *backend, const char *route, const char *tokens_in,
          const char *tokens_out, const char *finish)
{
    char id[64], v[128];

    snprintf(id, sizeof(id), "%s", h_header(r, "x-triage-request-id") ? h_header(r, "x-triage-request-id") : "");
    CHECK(outcome(id, "backend", v, sizeof(v)) && !strcmp(v, backend));
    CHECK(outcome(id, "route_reason", v, sizeof(v)) && !strcmp(v, route));
    if (tokens_in)
        CHECK(outcome(id, "tokens_in", v, sizeof(v)) && !strcmp(v, tokens_in));
    if (tokens_out)
        CHECK(outcome(id, "tokens_out", v, sizeof(v)) && !strcmp(v, tokens_out));
    if (finish)
        CHECK(outcome(id, "finish_reason", v, sizeof(v)) && !strcmp(v, finish));
    CHECK(outcome(id, "status", v, sizeof(v)) && atoi(v) == (int)r->status);
}

/* The "event: " names of an SSE body, space-separated, into out. */
static void
event_names(const char *body, char *out, size_t cap)
{
    out[0] = '\0';
    for (const char *p = body; p && (p = strstr(p, "event: ")); p += 7) {
        if (p != body && p[-1] != '\n')
            continue;
        size_t n = strcspn(p + 7, "\r\n");
        snprintf(out + strlen(out), cap - strlen(out), "%s%.*s", out[0] ? " " : "", (int)n, p + 7);
    }
}

/* error.type of an Anthropic error body (static copy), or "" when r is not one. */
static const char *
anthropic_error(const struct h_resp *r)
{
    static char t[64];
    json_t *j = body_json(r);
    const char *s = json_string_value(json_object_get(json_object_get(j, "error"), "type"));

    t[0] = '\0';
    if (s && json_is_string(json_object_get(j, "type")) &&
        !strcmp(json_string_value(json_object_get(j, "type")), "error") &&
        json_is_string(json_object_get(json_object_get(j, "error"), "message")))
        snprintf(t, sizeof(t), "%s", s);
    json_decref(j);
    return t;
}

static const char *const easy[] = {"x-triage-threshold: 1", NULL};   /* routes fast */
static const char *const hard[] = {"x-triage-threshold: 0", NULL};   /* routes strong */

static void
test_responses_json(void)
{
    struct h_resp r;

    post("/v1/responses",
         "{\"model\":\"triage\",\"instructions\":\"Answer briefly.\",\"input\":[{\"role\":"
         "\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"what is 2 plus 2\"}]}],"
         "\"max_output_tokens\":50,\"store\":true,\"mock\":{\"content\":\"four\"}}",
         easy, &r);
    CHECK(r.status == 200);
    CHECK(h_header(&r, "x-triage-backend") && !strcmp(h_header(&r, "x-triage-backend"), "fast"));
    CHECK(h_header(&r, "x-triage-score") != NULL);
    CHECK(h_header(&r, "x-mock-path") && !strcmp(h_header(&r, "x-mock-path"), "/v1/responses"));
    json_t *j = body_json(&r);
    CHECK(!strcmp(str(json_object_get(j, "object")), "response"));
    json_decref(j);
    json_t *got = mock_last(env.mock_port, NULL);
    CHECK(!strcmp(str(json_object_get(got, "model")), "mock-fast"));
    CHECK(json_integer_value(json_object_get(got, "max_output_tokens")) == 50);
    CHECK(json_is_true(json_object_get(got, "store")));
    CHECK(!strcmp(str(json_object_get(got, "instructions")), "Answer briefly."));
    json_decref(got);
    check_row(&r, "fast", "threshold", "8", "1", "completed");
    h_resp_free(&r);

    /* a string input, and no text at all: refused when routed, passed through otherwise */
    post("/v1/responses", "{\"model\":\"triage\",\"input\":\"hello there\"}", NULL, &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
    post("/v1/responses", "{\"model\":\"triage\",\"input\":[]}", NULL, &r);
    CHECK(r.status == 400 && !strcmp(h_error_code(&r), "invalid_input"));
    h_resp_free(&r);
    post("/v1/responses", "{\"model\":\"triage\",\"input\":42}", NULL, &r);
    CHECK(r.status == 400 && !strcmp(h_error_code(&r), "invalid_input"));
    h_resp_free(&r);
    post("/v1/responses", "{\"model\":\"triage\",\"input\":[7]}", NULL, &r);
    CHECK(r.status == 400 && !strcmp(h_error_code(&r), "invalid_input"));
    h_resp_free(&r);
}

static void
test_responses_stream(void)
{
    struct h_resp r;
    char names[1024];

    post("/v1/responses",
         "{\"model\":\"triage\",\"input\":\"prove the series converges\",\"stream\":true,"
         "\"mock\":{\"content\":\"one two three\",\"chunk_delay_ms\":5}}",
         hard, &r);
    CHECK(r.status == 200);
    CHECK(h_header(&r, "x-triage-backend") && !strcmp(h_header(&r, "x-triage-backend"), "strong"));
    CHECK(h_header(&r, "content-type") && strstr(h_header(&r, "content-type"), "text/event-stream"));
    event_names(r.body, names, sizeof(names));
    CHECK(!strcmp(names, "response.created response.in_progress response.output_item.added "
                         "response.content_part.added response.output_text.delta "
                         "response.output_text.delta response.output_text.delta "
                         "response.output_text.done response.completed"));
    /* relayed as the backend wrote them: no usage added or removed, no [DONE] made up */
    CHECK(!strstr(r.body, "[DONE]") && !strstr(r.body, "stream_options"));
    json_t *got = mock_last(strong_port, NULL);
    CHECK(!json_object_get(got, "stream_options"));
    json_decref(got);
    check_row(&r, "strong", "threshold", NULL, "3", "completed");
    h_resp_free(&r);
}

/* The id of a Responses answer (JSON or the created event of a stream), into out. */
static void
response_id(const struct h_resp *r, char *out, size_t cap)
{
    const char *p = r->body ? strstr(r->body, "\"id\":\"resp_") : NULL;

    out[0] = '\0';
    if (p)
        snprintf(out, cap, "%.*s", (int)strcspn(p + 6, "\""), p + 6);
}

static void
test_responses_follow_up(void)
{
    struct h_resp r;
    char id[96], body[512];
    long before, after;

    /* answered by strong (streamed): its follow-ups go to strong even when the router
     * would pick fast */
    post("/v1/responses", "{\"model\":\"triage\",\"input\":\"hello\",\"stream\":true}", hard, &r);
    CHECK(r.status == 200);
    response_id(&r, id, sizeof(id));
    CHECK(id[0] != '\0');
    h_resp_free(&r);
    for (int i = 0; i < 3; i++) {
        snprintf(body, sizeof(body),
                 "{\"model\":\"triage\",\"input\":\"and then?\",\"previous_response_id\":\"%s\"%s}",
                 id, i == 2 ? ",\"stream\":true" : "");
        post("/v1/responses", body, easy, &r);
        CHECK(r.status == 200);
        CHECK(h_header(&r, "x-triage-backend") && !strcmp(h_header(&r, "x-triage-backend"), "strong"));
        CHECK(h_header(&r, "x-triage-route") &&
              !strcmp(h_header(&r, "x-triage-route"), "previous_response"));
        if (i == 0)
            check_row(&r, "strong", "previous_response", NULL, NULL, "completed");
        char next[96];
        response_id(&r, next, sizeof(next));
        CHECK(next[0] != '\0');
        snprintf(id, sizeof(id), "%s", next); /* a chain: each answer holds the next state */
        h_resp_free(&r);
    }

    /* an id no backend is known to hold: refused, sent nowhere */
    json_decref(mock_last(env.mock_port, &before));
    post("/v1/responses",
         "{\"model\":\"triage\",\"input\":\"x\",\"previous_response_id\":\"resp_elsewhere\"}", NULL,
         &r);
    CHECK(r.status == 400 && !strcmp(h_error_code(&r), "previous_response_not_found"));
    h_resp_free(&r);
    json_decref(mock_last(env.mock_port, &after));
    CHECK(after == before);

    /* a client naming a backend gets that backend, and its answer */
    snprintf(body, sizeof(body),
             "{\"model\":\"fast\",\"input\":\"x\",\"previous_response_id\":\"%s\"}", id);
    post("/v1/responses", body, NULL, &r);
    CHECK(r.status == 404); /* the mock that does not hold it says so */
    CHECK(h_header(&r, "x-triage-route") && !strcmp(h_header(&r, "x-triage-route"), "passthrough"));
    h_resp_free(&r);
}

static void
test_completions(void)
{
    struct h_resp r;

    post("/v1/completions",
         "{\"model\":\"triage\",\"prompt\":\"Say this is a test\",\"max_tokens\":7,"
         "\"mock\":{\"content\":\"This is a test\"}}",
         easy, &r);
    CHECK(r.status == 200);
    json_t *j = body_json(&r);
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    CHECK(!strcmp(str(json_object_get(c0, "text")), "This is a test"));
    json_decref(j);
    json_t *got = mock_last(env.mock_port, NULL);
    CHECK(!strcmp(str(json_object_get(got, "model")), "mock-fast"));
    CHECK(!strcmp(str(json_object_get(got, "prompt")), "Say this is a test"));
    json_decref(got);
    check_row(&r, "fast", "threshold", "5", "4", "stop");
    h_resp_free(&r);

    /* a stream: the usage triage asks for (the log is on) is hidden from the client */
    post("/v1/completions",
         "{\"model\":\"strong\",\"prompt\":[\"a\",\"b\"],\"stream\":true,\"mock\":{\"content\":"
         "\"x y\"}}",
         NULL, &r);
    CHECK(r.status == 200 && strstr(r.body, "\"text_completion\"") && strstr(r.body, "[DONE]"));
    CHECK(!strstr(r.body, "\"usage\""));
    got = mock_last(strong_port, NULL);
    CHECK(json_is_true(json_object_get(json_object_get(got, "stream_options"), "include_usage")));
    json_decref(got);
    check_row(&r, "strong", "passthrough", NULL, "2", "stop");
    h_resp_free(&r);

    post("/v1/completions", "{\"model\":\"triage\"}", NULL, &r);
    CHECK(r.status == 400 && !strcmp(h_error_code(&r), "missing_prompt"));
    h_resp_free(&r);
    post("/v1/completions", "{\"model\":\"triage\",\"prompt\":{}}", NULL, &r);
    CHECK(r.status == 400 && !strcmp(h_error_code(&r), "invalid_input"));
    h_resp_free(&r);
}

static void
test_embeddings(void)
{
    struct h_resp r;

    post("/v1/embeddings", "{\"model\":\"fast\",\"input\":[\"hello\",\"world\"],\"dimensions\":4}",
         NULL, &r);
    CHECK(r.status == 200);
    json_t *j = body_json(&r);
    CHECK(json_array_size(json_object_get(j, "data")) == 2);
    CHECK(json_array_size(json_object_get(json_array_get(json_object_get(j, "data"), 1),
                                          "embedding")) == 4);
    json_decref(j);
    CHECK(h_header(&r, "x-triage-score") == NULL); /* not scored */
    json_t *got = mock_last(env.mock_port, NULL);
    CHECK(!strcmp(str(json_object_get(got, "model")), "mock-fast"));
    CHECK(json_integer_value(json_object_get(got, "dimensions")) == 4);
    json_decref(got);
    check_row(&r, "fast", "passthrough", "4", NULL, NULL);
    h_resp_free(&r);

    post("/v1/embeddings", "{\"model\":\"triage\",\"input\":\"x\"}", NULL, &r);
    CHECK(r.status == 400 && !strcmp(h_error_code(&r), "not_routed"));
    h_resp_free(&r);
    post("/v1/embeddings", "{\"model\":\"fast\"}", NULL, &r);
    CHECK(r.status == 400 && !strcmp(h_error_code(&r), "missing_input"));
    h_resp_free(&r);
    post("/v1/embeddings", "{\"model\":\"claude-fast\",\"input\":\"x\"}", NULL, &r);
    CHECK(r.status == 400 && !strcmp(h_error_code(&r), "wrong_api"));
    h_resp_free(&r);
}

static void
test_messages(void)
{
    struct h_resp r;
    char names[1024];
    const char *sdk[] = {"x-api-key: sk-client-never-forwarded", "anthropic-version: 2023-06-01",
                         "x-triage-threshold: 1", NULL};

    post("/v1/messages",
         "{\"model\":\"triage\",\"max_tokens\":64,\"system\":[{\"type\":\"text\",\"text\":"
         "\"Be terse.\"}],\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
         "\"text\":\"what is 2 plus 2\"}]}],\"mock\":{\"content\":\"4\"}}",
         sdk, &r);
    CHECK(r.status == 200);
    CHECK(h_header(&r, "x-triage-backend") &&
          !strcmp(h_header(&r, "x-triage-backend"), "claude-fast"));
    CHECK(h_header(&r, "x-mock-path") && !strcmp(h_header(&r, "x-mock-path"), "/v1/messages"));
    /* the backend's own key, as x-api-key, and the version it speaks; never the client's */
    CHECK(h_header(&r, "x-mock-api-key") &&
          !strcmp(h_header(&r, "x-mock-api-key"), "sk-ant-backend"));
    CHECK(h_header(&r, "x-mock-anthropic-version") &&
          !strcmp(h_header(&r, "x-mock-anthropic-version"), "2023-06-01"));
    CHECK(!h_header(&r, "x-mock-auth"));
    json_t *j = body_json(&r);
    CHECK(!strcmp(str(json_object_get(j, "type")), "message"));
    json_decref(j);
    json_t *got = mock_last(env.mock_port, NULL);
    CHECK(!strcmp(str(json_object_get(got, "model")), "claude-haiku-mock"));
    CHECK(json_is_array(json_object_get(got, "system")));
    json_decref(got);
    check_row(&r, "claude-fast", "threshold", "4", "1", "end_turn");
    h_resp_free(&r);

    /* streamed, with a tool: Anthropic's events relayed one by one */
    post("/v1/messages",
         "{\"model\":\"triage\",\"max_tokens\":64,\"stream\":true,\"tools\":[{\"name\":"
         "\"get_weather\",\"input_schema\":{\"type\":\"object\"}}],\"messages\":[{\"role\":"
         "\"user\",\"content\":\"weather in Paris?\"}],\"mock\":{\"content\":\"Let me look.\","
         "\"tool\":{\"name\":\"get_weather\",\"input\":{\"city\":\"Paris\"}}}}",
         hard, &r);
    CHECK(r.status == 200);
    CHECK(h_header(&r, "x-triage-backend") &&
          !strcmp(h_header(&r, "x-triage-backend"), "claude-strong"));
    event_names(r.body, names, sizeof(names));
    CHECK(!strcmp(names, "message_start content_block_start content_block_delta "
                         "content_block_delta content_block_delta content_block_stop "
                         "content_block_start content_block_delta content_block_stop "
                         "message_delta message_stop"));
    check_row(&r, "claude-strong", "threshold", NULL, "3", "tool_use");
    h_resp_free(&r);

    /* errors in Anthropic's shape on /v1/messages, OpenAI's elsewhere */
    post("/v1/messages", "{\"model\":\"triage\",", NULL, &r);
    CHECK(r.status == 400 && !strcmp(anthropic_error(&r), "invalid_request_error"));
    h_resp_free(&r);
    post("/v1/messages", "{\"model\":\"triage\",\"max_tokens\":5}", NULL, &r);
    CHECK(r.status == 400 && !strcmp(anthropic_error(&r), "invalid_request_error"));
    h_resp_free(&r);
    post("/v1/messages", "{\"model\":\"nope\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
                         "\"content\":\"x\"}]}", NULL, &r);
    CHECK(r.status == 404 && !strcmp(anthropic_error(&r), "not_found_error"));
    h_resp_free(&r);
    post("/v1/messages", "{\"model\":\"fast\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
                         "\"content\":\"x\"}]}", NULL, &r);
    CHECK(r.status == 400 && !strcmp(anthropic_error(&r), "invalid_request_error"));
    h_resp_free(&r);
    /* the backend's own error (the mock wants max_tokens) relayed as it is */
    post("/v1/messages", "{\"model\":\"claude-fast\",\"messages\":[{\"role\":\"user\","
                         "\"content\":\"x\"}]}", NULL, &r);
    CHECK(r.status == 400 && !strcmp(anthropic_error(&r), "invalid_request_error"));
    CHECK(r.body && strstr(r.body, "max_tokens: Field required"));
    h_resp_free(&r);
    post("/v1/chat/completions", "{\"model\":\"claude-fast\",\"messages\":[{\"role\":\"user\","
                                 "\"content\":\"x\"}]}", NULL, &r);
    CHECK(r.status == 400 && !strcmp(h_error_code(&r), "wrong_api"));
    h_resp_free(&r);
    /* a 405 on the path is Anthropic-shaped too */
    h_get(port, "/v1/messages", &r);
    CHECK(r.status == 405 && !strcmp(anthropic_error(&r), "invalid_request_error"));
    h_resp_free(&r);
}

/* A stream that dies after it began ends with the path's own error event. */
static void
test_stream_failures(void)
{
    struct h_resp r;

    post("/v1/messages",
         "{\"model\":\"claude-fast\",\"max_tokens\":64,\"stream\":true,\"messages\":[{\"role\":"
         "\"user\",\"content\":\"x\"}],\"mock\":{\"chunks\":5,\"fail\":\"die_mid_stream\","
         "\"die_after\":2}}",
         NULL, &r);
    CHECK(r.status == 200);
    CHECK(r.body && strstr(r.body, "event: error\ndata: {\"type\":\"error\",\"error\":"
                                   "{\"type\":\"api_error\",\"message\":"));
    CHECK(r.body && !strstr(r.body, "message_stop"));
    h_resp_free(&r);
    post("/v1/responses",
         "{\"model\":\"fast\",\"input\":\"x\",\"stream\":true,\"mock\":{\"chunks\":5,"
         "\"fail\":\"die_mid_stream\",\"die_after\":2}}",
         NULL, &r);
    CHECK(r.status == 200);
    CHECK(r.body && strstr(r.body, "event: error\ndata: {\"type\":\"error\",\"code\":"
                                   "\"backend_closed\""));
    CHECK(r.body && !strstr(r.body, "response.completed"));
    h_resp_free(&r);
}

/* Without an api = anthropic backend, /v1/messages says so. */
static void
test_not_served(void)
{
    pid_t pid;
    unsigned p = h_start_triaged(&env, "openai-only", NULL, NULL, NULL, &pid);
    struct h_resp r;
    struct h_req q = {.path = "/v1/messages",
                      .body = "{\"model\":\"claude\",\"max_tokens\":5,\"messages\":[{\"role\":"
                              "\"user\",\"content\":\"x\"}]}"};

    CHECK(p != 0);
    if (!p)
        return;
    h_do(p, &q, &r);
    CHECK(r.status == 404 && !strcmp(anthropic_error(&r), "not_found_error"));
    CHECK(r.body && strstr(r.body, "api = anthropic"));
    h_resp_free(&r);
    q.body = "{\"model\":\"triage\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\","
             "\"content\":\"x\"}]}";
    h_do(p, &q, &r);
    CHECK(r.status == 404 && !strcmp(anthropic_error(&r), "not_found_error"));
    h_resp_free(&r);
    int st = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int
main(int argc, char **argv)
{
    int rc = h_env_setup(&env, "api", argc, argv);
    char path[512], log[512];
    pid_t pid;

    if (rc)
        return rc;
    if (h_env_make_model(&env, NULL) < 0)
        return h_env_finish(&env) | 1;
    char *margv[] = {(char *)env.mock, "--port", "0", NULL};
    if (h_spawn_mock(margv, &strong_pid, &strong_port) < 0 ||
        h_spawn_mock(margv, &claude_pid, &claude_port) < 0) {
        fprintf(stderr, "cannot start the other mocks\n");
        return 1;
    }
    setenv("TRIAGE_TEST_ANTHROPIC_KEY", "sk-ant-backend", 1);
    port = h_free_port();
    snprintf(path, sizeof(path), "%s/api.conf", env.dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return 1;
    fprintf(f,
            "[server]\nlisten = 127.0.0.1\nport = %u\nworkers = 1\nshutdown_timeout_ms = 2000\n"
            "[router]\nmodel = m.tmod\naliases = triage\n"
            "tiers = fast, strong, claude-fast, claude-strong\n"
            "[storage]\npath = out.db\nflush_interval_ms = 10\n"
            "[backend fast]\nurl = http://127.0.0.1:%u/v1\nmodel = mock-fast\nmax_retries = 0\n"
            "[backend strong]\nurl = http://127.0.0.1:%u/v1\nmodel = mock-strong\n"
            "max_retries = 0\n"
            "[backend claude-fast]\nurl = http://127.0.0.1:%u/v1\nmodel = claude-haiku-mock\n"
            "api = anthropic\napi_key_env = TRIAGE_TEST_ANTHROPIC_KEY\nmax_retries = 0\n"
            "[backend claude-strong]\nurl = http://127.0.0.1:%u/v1\nmodel = claude-opus-mock\n"
            "api = anthropic\napi_key_env = TRIAGE_TEST_ANTHROPIC_KEY\nmax_retries = 0\n",
            port, env.mock_port, strong_port, env.mock_port, claude_port);
    fclose(f);
    snprintf(log, sizeof(log), "%s/api.log", env.dir);
    char *dargv[] = {(char *)env.triaged, "--config", path, NULL};
    if (h_spawn_daemon(dargv, port, log, &pid) < 0) {
        fprintf(stderr, "triaged did not start (see %s)\n", log);
        return 1;
    }

    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"responses_json", test_responses_json},
        {"responses_stream", test_responses_stream},
        {"responses_follow_up", test_responses_follow_up},
        {"completions", test_completions},
        {"embeddings", test_embeddings},
        {"messages", test_messages},
        {"stream_failures", test_stream_failures},
        {"not_served", test_not_served},
    };
    const char *only = getenv("TEST_ONLY");
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        if (only && !strstr(only, tests[i].name))
            continue;
        int before = h_failures;
        tests[i].fn();
        fprintf(stderr, "%s %s\n", h_failures == before ? "ok  " : "FAIL", tests[i].name);
    }
    int st = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    h_stop(strong_pid, SIGTERM);
    h_stop(claude_pid, SIGTERM);
    return h_env_finish(&env);
}
