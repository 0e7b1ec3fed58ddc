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

#include "testhttp.h"

static json_t *
stats(void)
{
    struct resp r;

    request(NULL, "/_mock/stats", NULL, NULL, 0, &r);
    json_t *j = json_loads(r.body, 0, NULL);
    resp_free(&r);
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
    struct resp r;

    request(NULL, "/_mock/reset", "{}", NULL, 0, &r);
    CHECK(r.status == 200);
    resp_free(&r);
}

static void
test_plain(void)
{
    struct resp r;

    request(NULL, "/v1/chat/completions",
            "{\"model\":\"m-1\",\"messages\":[{\"role\":\"user\",\"content\":\"abcdefgh\"}],"
            "\"mock\":{\"content\":\"Hello \\\"big\\\"\\nworld foo\"}}",
            "Authorization: Bearer sk-test", 0, &r);
    CHECK(r.rc == CURLE_OK);
    CHECK(r.status == 200);
    CHECK(header(&r, "x-mock-model") && strcmp(header(&r, "x-mock-model"), "m-1") == 0);
    CHECK(header(&r, "x-mock-auth") && strcmp(header(&r, "x-mock-auth"), "Bearer sk-test") == 0);
    json_t *j = json_loads(r.body, 0, NULL);
    CHECK(j != NULL);
    CHECK(strcmp(json_string_value(json_object_get(j, "object")), "chat.completion") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "model")), "m-1") == 0);
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    const char *content = json_string_value(json_object_get(json_object_get(ch, "message"), "content"));
    CHECK(content && strcmp(content, "Hello \"big\"\nworld foo") == 0);
    CHECK(strcmp(json_string_value(json_object_get(ch, "finish_reason")), "stop") == 0);
    json_t *u = json_object_get(j, "usage");
    CHECK(json_integer_value(json_object_get(u, "prompt_tokens")) == 2);
    CHECK(json_integer_value(json_object_get(u, "completion_tokens")) == 4);
    CHECK(json_integer_value(json_object_get(u, "total_tokens")) == 6);
    json_decref(j);
    resp_free(&r);

    /* no Authorization: no x-mock-auth */
    request(NULL, "/v1/chat/completions", "{\"model\":\"x\",\"messages\":[]}", NULL, 0, &r);
    CHECK(r.status == 200);
    CHECK(header(&r, "x-mock-auth") == NULL);
    resp_free(&r);
}

static void
test_stream(void)
{
    struct resp r;
    struct sse s;

    request(NULL, "/v1/chat/completions",
            "{\"model\":\"m-s\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
            "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
            "\"mock\":{\"content\":\"one two three four five\",\"chunk_delay_ms\":5}}",
            NULL, 0, &r);
    CHECK(r.rc == CURLE_OK);
    CHECK(r.status == 200);
    CHECK(header(&r, "content-type") && strncmp(header(&r, "content-type"), "text/event-stream", 17) == 0);
    parse_sse(r.body, &s);
    CHECK(strcmp(s.content, "one two three four five") == 0);
    CHECK(s.content_chunks == 5);
    CHECK(s.stop_chunks == 1);
    CHECK(s.usage_chunks == 1);
    CHECK(s.completion_tokens == 5);
    CHECK(s.done == 1 && s.after_done == 0);
    CHECK(strcmp(s.model, "m-s") == 0);
    resp_free(&r);

    /* without include_usage: no usage chunk; chunks cuts the text into equal pieces */
    request(NULL, "/v1/chat/completions",
            "{\"model\":\"m\",\"stream\":true,\"messages\":[],"
            "\"mock\":{\"content\":\"abcdefgh\",\"chunks\":4}}",
            NULL, 0, &r);
    parse_sse(r.body, &s);
    CHECK(s.content_chunks == 4);
    CHECK(strcmp(s.content, "abcdefgh") == 0);
    CHECK(s.usage_chunks == 0);
    CHECK(s.done == 1);
    CHECK(strstr(r.body, "\"content\":\"cd\"") != NULL);
    resp_free(&r);

    /* stamp: every piece carries its send time on the monotonic clock */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    request(NULL, "/v1/chat/completions",
            "{\"model\":\"m\",\"stream\":true,\"messages\":[],"
            "\"mock\":{\"stamp\":true,\"chunks\":3,\"chunk_delay_ms\":2}}",
            NULL, 0, &r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    parse_sse(r.body, &s);
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
    resp_free(&r);

    /* chunks without content: that many generated words */
    request(NULL, "/v1/chat/completions",
            "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
            "\"messages\":[],\"mock\":{\"chunks\":12}}",
            NULL, 0, &r);
    parse_sse(r.body, &s);
    CHECK(s.content_chunks == 12);
    CHECK(s.completion_tokens == 12);
    resp_free(&r);
}

static void
test_errors(void)
{
    struct resp r;

    request(NULL, "/v1/chat/completions",
            "{\"model\":\"m\",\"messages\":[],\"mock\":{\"status\":429,\"retry_after\":7}}", NULL, 0,
            &r);
    CHECK(r.status == 429);
    CHECK(header(&r, "retry-after") && strcmp(header(&r, "retry-after"), "7") == 0);
    json_t *j = json_loads(r.body, 0, NULL);
    json_t *e = json_object_get(j, "error");
    CHECK(json_is_string(json_object_get(e, "message")));
    CHECK(strcmp(json_string_value(json_object_get(e, "type")), "rate_limit_error") == 0);
    json_decref(j);
    resp_free(&r);

    request(NULL, "/v1/chat/completions",
            "{\"model\":\"m\",\"stream\":true,\"messages\":[],\"mock\":{\"status\":500}}", NULL, 0, &r);
    CHECK(r.status == 500);
    CHECK(strstr(r.body, "server_error") != NULL);
    resp_free(&r);

    request(NULL, "/v1/chat/completions", "{not json", NULL, 0, &r);
    CHECK(r.status == 400);
    CHECK(strstr(r.body, "\"error\"") != NULL);
    resp_free(&r);

    request(NULL, "/nope", NULL, NULL, 0, &r);
    CHECK(r.status == 404);
    resp_free(&r);

    request(NULL, "/v1/chat/completions",
            "{\"model\":\"m\",\"messages\":[],\"mock\":{\"fail\":\"close\"}}", NULL, 0, &r);
    CHECK(r.rc == CURLE_GOT_NOTHING);
    resp_free(&r);

    struct sse s;
    request(NULL, "/v1/chat/completions",
            "{\"model\":\"m\",\"stream\":true,\"messages\":[],"
            "\"mock\":{\"content\":\"a b c d e\",\"fail\":\"die_mid_stream\",\"die_after\":2}}",
            NULL, 0, &r);
    CHECK(r.rc != CURLE_OK);
    CHECK(r.status == 200);
    parse_sse(r.body, &s);
    CHECK(s.content_chunks == 2);
    CHECK(strcmp(s.content, "a b") == 0);
    CHECK(s.done == 0);
    resp_free(&r);
}

static void
test_stats_and_cancel(void)
{
    struct resp r;

    reset();
    json_t *j = stats();
    CHECK(json_integer_value(json_object_get(j, "requests")) == 0);
    CHECK(json_is_null(json_object_get(j, "last_request")));
    json_decref(j);

    /* hang: the client gives up, which the mock counts as cancelled */
    request(NULL, "/v1/chat/completions",
            "{\"model\":\"hung\",\"messages\":[],\"mock\":{\"fail\":\"hang\"}}", NULL, 300, &r);
    CHECK(r.rc == CURLE_OPERATION_TIMEDOUT);
    resp_free(&r);
    /* a slow stream the client abandons half way */
    request(NULL, "/v1/chat/completions",
            "{\"model\":\"slow\",\"stream\":true,\"messages\":[],"
            "\"mock\":{\"chunks\":50,\"chunk_delay_ms\":100}}",
            NULL, 400, &r);
    CHECK(r.rc == CURLE_OPERATION_TIMEDOUT);
    CHECK(r.status == 200);
    resp_free(&r);
    request(NULL, "/v1/chat/completions", "{\"model\":\"last\",\"messages\":[],\"n\":1}", NULL, 0,
            &r);
    resp_free(&r);

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
    struct resp r;
    struct timespec t0, t1;

    request(h, "/v1/chat/completions", "{\"model\":\"a\",\"messages\":[]}", NULL, 0, &r);
    CHECK(r.status == 200);
    resp_free(&r);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    request(h, "/v1/chat/completions",
            "{\"model\":\"b\",\"messages\":[],\"mock\":{\"latency_ms\":200}}", NULL, 0, &r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(r.status == 200);
    CHECK(r.connects == 0); /* reused the connection */
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    CHECK(ms >= 150); /* a lower bound only: never flaky on a busy machine */
    resp_free(&r);

    /* a large body with Expect: 100-continue */
    size_t n = 200000;
    char *big = malloc(n + 100);
    int k = snprintf(big, n + 100, "{\"model\":\"big\",\"messages\":[{\"role\":\"user\",\"content\":\"");
    memset(big + k, 'x', n);
    strcpy(big + k + n, "\"}]}");
    request(h, "/v1/chat/completions", big, NULL, 0, &r);
    CHECK(r.status == 200);
    json_t *j = json_loads(r.body, 0, NULL);
    CHECK(json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")) ==
          (json_int_t)n / 4);
    json_decref(j);
    resp_free(&r);
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
    char *bodies[N];
    size_t lens[N];
    struct sink sinks[N];
    char url[128];
    const char *req = "{\"model\":\"c\",\"stream\":true,\"messages\":[],"
                      "\"mock\":{\"chunks\":5,\"chunk_delay_ms\":50}}";

    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/chat/completions", port);
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
    for (int i = 0; i < N; i++) {
        bodies[i] = calloc(1, 1);
        lens[i] = 0;
        sinks[i] = (struct sink){&bodies[i], &lens[i]};
        hs[i] = curl_easy_init();
        curl_easy_setopt(hs[i], CURLOPT_URL, url);
        curl_easy_setopt(hs[i], CURLOPT_POSTFIELDS, req);
        curl_easy_setopt(hs[i], CURLOPT_WRITEFUNCTION, on_sink);
        curl_easy_setopt(hs[i], CURLOPT_WRITEDATA, &sinks[i]);
        curl_easy_setopt(hs[i], CURLOPT_TIMEOUT_MS, 20000L);
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
        struct sse s;
        parse_sse(bodies[i], &s);
        if (s.done && s.content_chunks == 5)
            ok++;
        curl_multi_remove_handle(m, hs[i]);
        curl_easy_cleanup(hs[i]);
        free(bodies[i]);
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
    if (spawn_server(args, &pid, &port) < 0) {
        fprintf(stderr, "mockllm did not start\n");
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);

    test_plain();
    test_stream();
    test_errors();
    test_stats_and_cancel();
    test_keepalive_and_latency();
    test_concurrent();

    curl_global_cleanup();
    int st = stop_server(pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0); /* a clean shutdown, no leaks under ASan */
    if (failures)
        fprintf(stderr, "%d check(s) failed\n", failures);
    return failures ? 1 : 0;
}
