/* test_mockllm.c - self-tests of mockllm: starts it and checks each scripted behaviour over
 * real HTTP with libcurl. Usage: test_mockllm PATH-TO-MOCKLLM */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "harness.h"

static unsigned port; /* mockllm's */

static json_t *
stats(void)
{
    struct h_resp r;

    h_get(port, "/_mock/stats", &r);
    json_t *j = json_loads(r.body, 0, NULL);
    h_resp_free(&r);
    return j;
}

static long
stat_of(const char *key)
{
    json_t *j = stats();
    long v = (long)json_integer_value(json_object_get(j, key));
    json_decref(j);
    return v;
}

static void
reset(void)
{
    struct h_resp r;

    h_do(port, &(struct h_req){.path = "/_mock/reset", .body = "{}"}, &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
}

static void
test_plain(void)
{
    struct h_resp r;

    h_do(port,
         &(struct h_req){
             .path = "/v1/chat/completions",
             .body =
                 "{\"model\":\"m-1\",\"messages\":[{\"role\":\"user\",\"content\":\"abcdefgh\"}],"
                 "\"mock\":{\"content\":\"Hello \\\"big\\\"\\nworld foo\"}}",
             .headers = (const char *const[]){"Authorization: Bearer sk-test", NULL}},
         &r);
    CHECK(r.rc == CURLE_OK);
    CHECK(r.status == 200);
    CHECK(h_header(&r, "x-mock-model") && strcmp(h_header(&r, "x-mock-model"), "m-1") == 0);
    CHECK(h_header(&r, "x-mock-auth") &&
          strcmp(h_header(&r, "x-mock-auth"), "Bearer sk-test") == 0);
    json_t *j = json_loads(r.body, 0, NULL);
    CHECK(j != NULL);
    CHECK(strcmp(json_string_value(json_object_get(j, "object")), "chat.completion") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "model")), "m-1") == 0);
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    const char *content =
        json_string_value(json_object_get(json_object_get(ch, "message"), "content"));
    CHECK(content && strcmp(content, "Hello \"big\"\nworld foo") == 0);
    CHECK(strcmp(json_string_value(json_object_get(ch, "finish_reason")), "stop") == 0);
    json_t *u = json_object_get(j, "usage");
    CHECK(json_integer_value(json_object_get(u, "prompt_tokens")) == 2);
    CHECK(json_integer_value(json_object_get(u, "completion_tokens")) == 4);
    CHECK(json_integer_value(json_object_get(u, "total_tokens")) == 6);
    json_decref(j);
    h_resp_free(&r);

    /* no Authorization: no x-mock-auth */
    h_chat(port, "{\"model\":\"x\",\"messages\":[]}", &r);
    CHECK(r.status == 200);
    CHECK(h_header(&r, "x-mock-auth") == NULL);
    h_resp_free(&r);
}

/* "logprobs": true gets OpenAI's choices[].logprobs.content[] (token, logprob, bytes,
 * top_logprobs), one entry per piece, in JSON and in each SSE chunk; without it, null. */
static void
test_logprobs(void)
{
    struct h_resp r;

    h_chat(port,
           "{\"model\":\"m\",\"logprobs\":true,\"top_logprobs\":2,\"messages\":[{\"role\":"
           "\"user\",\"content\":\"hi\"}],\"mock\":{\"content\":\"Hi there\",\"logprob\":-1.5}}",
           &r);
    CHECK(r.status == 200);
    json_t *j = json_loads(r.body ? r.body : "", 0, NULL);
    json_t *lp = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "logprobs");
    json_t *content = json_object_get(lp, "content");
    CHECK(json_array_size(content) == 2);
    json_t *t0 = json_array_get(content, 0), *t1 = json_array_get(content, 1);
    CHECK(json_is_string(json_object_get(t0, "token")) &&
          !strcmp(json_string_value(json_object_get(t0, "token")), "Hi"));
    CHECK(json_is_string(json_object_get(t1, "token")) &&
          !strcmp(json_string_value(json_object_get(t1, "token")), " there"));
    CHECK(json_real_value(json_object_get(t0, "logprob")) == -1.5);
    CHECK(json_array_size(json_object_get(t0, "bytes")) == 2 &&
          json_integer_value(json_array_get(json_object_get(t0, "bytes"), 0)) == 'H');
    json_t *top = json_object_get(t1, "top_logprobs");
    CHECK(json_array_size(top) == 2 &&
          !strcmp(json_string_value(json_object_get(json_array_get(top, 0), "token")), " there") &&
          json_real_value(json_object_get(json_array_get(top, 1), "logprob")) == -2.5);
    CHECK(json_object_get(lp, "refusal") && json_is_null(json_object_get(lp, "refusal")));
    json_decref(j);
    h_resp_free(&r);

    /* not asked: null, as OpenAI answers */
    h_chat(port, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &r);
    j = json_loads(r.body ? r.body : "", 0, NULL);
    lp = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "logprobs");
    CHECK(lp && json_is_null(lp));
    json_decref(j);
    h_resp_free(&r);

    /* streamed: each content chunk carries its own token's entry */
    h_chat(port,
           "{\"model\":\"m\",\"stream\":true,\"logprobs\":true,\"messages\":[{\"role\":"
           "\"user\",\"content\":\"hi\"}],\"mock\":{\"content\":\"Hi there\"}}",
           &r);
    CHECK(r.status == 200 && r.body);
    int entries = 0;
    for (const char *p = r.body; p && (p = strstr(p, "data: {")) != NULL; p++) {
        const char *end = strstr(p, "\n\n");
        json_t *ev = end ? json_loadb(p + 6, (size_t)(end - p - 6), 0, NULL) : NULL;
        json_t *ch = json_array_get(json_object_get(ev, "choices"), 0);
        json_t *c = json_object_get(json_object_get(ch, "logprobs"), "content");
        if (json_is_string(json_object_get(json_object_get(ch, "delta"), "content"))) {
            CHECK(json_array_size(c) == 1 &&
                  json_real_value(json_object_get(json_array_get(c, 0), "logprob")) == -0.1);
            entries++;
        }
        json_decref(ev);
    }
    CHECK(entries == 2);
    h_resp_free(&r);
}

static void
test_stream(void)
{
    struct h_resp r;
    struct h_sse s;

    h_chat(port,
           "{\"model\":\"m-s\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
           "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
           "\"mock\":{\"content\":\"one two three four five\",\"chunk_delay_ms\":5}}",
           &r);
    CHECK(r.rc == CURLE_OK);
    CHECK(r.status == 200);
    CHECK(h_header(&r, "content-type") &&
          strncmp(h_header(&r, "content-type"), "text/event-stream", 17) == 0);
    h_parse_sse(r.body, &s);
    CHECK(strcmp(s.content, "one two three four five") == 0);
    CHECK(s.content_chunks == 5);
    CHECK(s.stop_chunks == 1);
    CHECK(s.usage_chunks == 1);
    CHECK(s.completion_tokens == 5);
    CHECK(s.done == 1 && s.after_done == 0);
    CHECK(strcmp(s.model, "m-s") == 0);
    h_resp_free(&r);

    /* without include_usage: no usage chunk; chunks cuts the text into equal pieces */
    h_chat(port,
           "{\"model\":\"m\",\"stream\":true,\"messages\":[],"
           "\"mock\":{\"content\":\"abcdefgh\",\"chunks\":4}}",
           &r);
    h_parse_sse(r.body, &s);
    CHECK(s.content_chunks == 4);
    CHECK(strcmp(s.content, "abcdefgh") == 0);
    CHECK(s.usage_chunks == 0);
    CHECK(s.done == 1);
    CHECK(strstr(r.body, "\"content\":\"cd\"") != NULL);
    h_resp_free(&r);

    /* stamp: every piece carries its send time on the monotonic clock */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    h_chat(port,
           "{\"model\":\"m\",\"stream\":true,\"messages\":[],"
           "\"mock\":{\"stamp\":true,\"chunks\":3,\"chunk_delay_ms\":2}}",
           &r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    h_parse_sse(r.body, &s);
    CHECK(s.content_chunks == 3);
    long long first = 0, prev = 0;
    int stamps = 0;
    for (const char *p = s.content; (p = strstr(p, " mockts:")) != NULL; p += 8) {
        long long v = strtoll(p + 8, NULL, 10);
        CHECK(strspn(p + 8, "0123456789") >= 19);
        CHECK(v >= prev);
        if (!stamps)
            first = v;
        prev = v;
        stamps++;
    }
    CHECK(stamps == 3);
    CHECK(first >= (long long)t0.tv_sec * 1000000000LL + t0.tv_nsec);
    CHECK(prev <= (long long)t1.tv_sec * 1000000000LL + t1.tv_nsec);
    h_resp_free(&r);

    /* chunks without content: that many generated words */
    h_chat(port,
           "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
           "\"messages\":[],\"mock\":{\"chunks\":12}}",
           &r);
    h_parse_sse(r.body, &s);
    CHECK(s.content_chunks == 12);
    CHECK(s.completion_tokens == 12);
    h_resp_free(&r);
}

static void
test_errors(void)
{
    struct h_resp r;

    h_chat(port, "{\"model\":\"m\",\"messages\":[],\"mock\":{\"status\":429,\"retry_after\":7}}",
           &r);
    CHECK(r.status == 429);
    CHECK(h_header(&r, "retry-after") && strcmp(h_header(&r, "retry-after"), "7") == 0);
    json_t *j = json_loads(r.body, 0, NULL);
    json_t *e = json_object_get(j, "error");
    CHECK(json_is_string(json_object_get(e, "message")));
    CHECK(strcmp(json_string_value(json_object_get(e, "type")), "rate_limit_error") == 0);
    json_decref(j);
    h_resp_free(&r);

    h_chat(port, "{\"model\":\"m\",\"stream\":true,\"messages\":[],\"mock\":{\"status\":500}}", &r);
    CHECK(r.status == 500);
    CHECK(strstr(r.body, "server_error") != NULL);
    h_resp_free(&r);

    h_chat(port, "{not json", &r);
    CHECK(r.status == 400);
    CHECK(strstr(r.body, "\"error\"") != NULL);
    h_resp_free(&r);

    h_get(port, "/nope", &r);
    CHECK(r.status == 404);
    h_resp_free(&r);

    h_chat(port, "{\"model\":\"m\",\"messages\":[],\"mock\":{\"fail\":\"close\"}}", &r);
    CHECK(r.rc == CURLE_GOT_NOTHING);
    h_resp_free(&r);

    struct h_sse s;
    h_chat(port,
           "{\"model\":\"m\",\"stream\":true,\"messages\":[],"
           "\"mock\":{\"content\":\"a b c d e\",\"fail\":\"die_mid_stream\",\"die_after\":2}}",
           &r);
    CHECK(r.rc != CURLE_OK);
    CHECK(r.status == 200);
    h_parse_sse(r.body, &s);
    CHECK(s.content_chunks == 2);
    CHECK(strcmp(s.content, "a b") == 0);
    CHECK(s.done == 0);
    h_resp_free(&r);
}

static void
test_stats_and_cancel(void)
{
    struct h_resp r;

    reset();
    json_t *j = stats();
    CHECK(json_integer_value(json_object_get(j, "requests")) == 0);
    CHECK(json_is_null(json_object_get(j, "last_request")));
    json_decref(j);

    /* hang: the client gives up, which the mock counts as cancelled */
    h_do(
        port,
        &(struct h_req){.path = "/v1/chat/completions",
                        .body = "{\"model\":\"hung\",\"messages\":[],\"mock\":{\"fail\":\"hang\"}}",
                        .timeout_ms = 300},
        &r);
    CHECK(r.rc == CURLE_OPERATION_TIMEDOUT);
    h_resp_free(&r);
    /* a slow stream the client abandons half way */
    h_do(port,
         &(struct h_req){.path = "/v1/chat/completions",
                         .body = "{\"model\":\"slow\",\"stream\":true,\"messages\":[],"
                                 "\"mock\":{\"chunks\":50,\"chunk_delay_ms\":100}}",
                         .timeout_ms = 400},
         &r);
    CHECK(r.rc == CURLE_OPERATION_TIMEDOUT);
    CHECK(r.status == 200);
    h_resp_free(&r);
    h_chat(port, "{\"model\":\"last\",\"messages\":[],\"n\":1}", &r);
    h_resp_free(&r);

    long cancelled = 0;
    for (int i = 0; i < 100 && cancelled < 2; i++) {
        usleep(20000);
        cancelled = stat_of("cancelled");
    }
    j = stats();
    CHECK(cancelled == 2);
    CHECK(json_integer_value(json_object_get(j, "requests")) == 3);
    CHECK(json_integer_value(json_object_get(j, "completed")) == 1);
    CHECK(json_integer_value(json_object_get(j, "active")) == 0);
    json_t *last = json_object_get(j, "last_request");
    CHECK(json_is_object(last));
    CHECK(strcmp(json_string_value(json_object_get(last, "model")), "last") == 0);
    CHECK(json_integer_value(json_object_get(last, "n")) == 1);
    json_decref(j);
    reset();
    CHECK(stat_of("requests") == 0);
}

static void
test_keepalive_and_latency(void)
{
    CURL *h = curl_easy_init();
    struct h_resp r;
    struct timespec t0, t1;

    h_do(port,
         &(struct h_req){
             .path = "/v1/chat/completions", .body = "{\"model\":\"a\",\"messages\":[]}", .on = h},
         &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    h_do(port,
         &(struct h_req){.path = "/v1/chat/completions",
                         .body = "{\"model\":\"b\",\"messages\":[],\"mock\":{\"latency_ms\":200}}",
                         .on = h},
         &r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(r.status == 200);
    CHECK(r.connects == 0); /* reused the connection */
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    CHECK(ms >= 150); /* a lower bound only: never flaky on a busy machine */
    h_resp_free(&r);

    /* a large body with Expect: 100-continue */
    size_t n = 200000;
    char *big = malloc(n + 100);
    int k = snprintf(big, n + 100,
                     "{\"model\":\"big\",\"messages\":[{\"role\":\"user\",\"content\":\"");
    memset(big + k, 'x', n);
    strcpy(big + k + n, "\"}]}");
    const char *expect[] = {"Expect: 100-continue", NULL};
    h_do(port,
         &(struct h_req){.path = "/v1/chat/completions", .body = big, .headers = expect, .on = h},
         &r);
    CHECK(r.status == 200);
    json_t *j = json_loads(r.body, 0, NULL);
    CHECK(json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")) ==
          (json_int_t)n / 4);
    json_decref(j);
    h_resp_free(&r);
    free(big);
    curl_easy_cleanup(h);
}

/* Many concurrent slow streams on one loop all finish. */
static void
test_concurrent(void)
{
    enum { N = 200 };
    CURLM *m = curl_multi_init();
    CURL *hs[N];
    struct curl_slist *hl[N];
    static struct h_resp rs[N];
    struct h_req req = {.path = "/v1/chat/completions",
                        .body = "{\"model\":\"c\",\"stream\":true,\"messages\":[],"
                                "\"mock\":{\"chunks\":5,\"chunk_delay_ms\":50}}",
                        .timeout_ms = 20000};

    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
    for (int i = 0; i < N; i++) {
        hs[i] = h_easy(port, &req, &rs[i], &hl[i]);
        curl_multi_add_handle(m, hs[i]);
    }
    int running = 1;
    while (running) {
        curl_multi_perform(m, &running);
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        struct h_sse s;
        curl_multi_remove_handle(m, hs[i]);
        h_easy_done(hs[i], &rs[i], hl[i]);
        h_parse_sse(rs[i].body, &s);
        if (s.done && s.content_chunks == 5)
            ok++;
        h_resp_free(&rs[i]);
    }
    CHECK(ok == N);
    curl_multi_cleanup(m);
}

int
main(int argc, char **argv)
{
    pid_t pid;

    if (argc < 2) {
        fprintf(stderr, "usage: test_mockllm PATH-TO-MOCKLLM\n");
        return 2;
    }
    char *args[] = {argv[1], "--port", "0", NULL};
    if (h_spawn_mock(args, &pid, &port) < 0) {
        fprintf(stderr, "mockllm did not start\n");
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);

    test_plain();
    test_logprobs();
    test_stream();
    test_errors();
    test_stats_and_cancel();
    test_keepalive_and_latency();
    test_concurrent();

    curl_global_cleanup();
    int st = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0); /* a clean shutdown, no leaks under ASan */
    if (h_failures)
        fprintf(stderr, "%d check(s) failed\n", h_failures);
    return h_failures ? 1 : 0;
}
