/* test_replay.c - tests of `triage replay`: prompt lookup, JSON and SSE answers with usage,
 * unknown prompts, the fallback answer, per-token delay, and the shipped GSM8K data.
 * Usage: test_replay PATH-TO-TRIAGE (TRIAGE_SOURCE_ROOT locates data/replay). */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <zlib.h>

#include "harness.h"

static unsigned port; /* the replay server's */

extern char **environ;

/* the fixture's answer to "Name a colour." as UTF-8 */
#define COLOUR                                                                                     \
    "Blue, \"sky\" blue \xe2\x80\x94 \xc3\xbc"                                                     \
    "n\xc3\xaf"                                                                                    \
    "c\xc3\xb6"                                                                                    \
    "d\xc3\xa9."

static const char *triage;
static char fixture[256];

static const char *const fixture_lines[] = {
    "{\"prompt\": \"What is  two\\nplus two?\", \"reference\": \"4\", \"answers\": "
    "{\"fast\": \"It is 4.\", \"strong\": \"Two plus two is 4.\\n#### 4\"}}",
    "{\"prompt\": \"Name a colour.\", \"answers\": {\"strong\": \"Blue, \\\"sky\\\" blue \\u2014 "
    "\\u00fcn\\u00efc\\u00f6d\\u00e9.\"}}",
    "",
    "{\"prompt\": \"What is two plus two?\", \"answers\": {\"fast\": \"a later duplicate\"}}",
};

static void
write_fixture(const char *dir)
{
    snprintf(fixture, sizeof(fixture), "%s/fixture.jsonl.gz", dir);
    gzFile f = gzopen(fixture, "wb");
    for (size_t i = 0; i < sizeof(fixture_lines) / sizeof(fixture_lines[0]); i++) {
        gzputs(f, fixture_lines[i]);
        gzputs(f, "\n");
    }
    gzclose(f);
}

/* Runs triage with args (stdout and stderr to /dev/null) and returns its exit status. */
static int
run_status(char *const argv[])
{
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int st = -1;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) == 0)
        waitpid(pid, &st, 0);
    posix_spawn_file_actions_destroy(&fa);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* POSTs a chat request with the given messages JSON; returns the parsed answer (new). */
static json_t *
chat(const char *model, const char *messages, int *status)
{
    char body[2048];
    struct h_resp r;

    snprintf(body, sizeof(body), "{%s%s%s\"messages\": %s}", model ? "\"model\": \"" : "",
             model ? model : "", model ? "\", " : "", messages);
    h_chat(port, body, &r);
    *status = (int)r.status;
    json_t *j = json_loads(r.body, 0, NULL);
    h_resp_free(&r);
    return j;
}

static const char *
content_of(json_t *j)
{
    return json_string_value(json_object_get(
        json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message"), "content"));
}

static void
test_lookup(void)
{
    int st;
    json_t *j;

    j = chat("req-model", "[{\"role\": \"user\", \"content\": \"  What is two \\t plus two?\\n\"}]",
             &st);
    CHECK(st == 200);
    CHECK(content_of(j) && strcmp(content_of(j), "Two plus two is 4.\n#### 4") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "model")), "req-model") == 0);
    json_t *u = json_object_get(j, "usage");
    CHECK(json_integer_value(json_object_get(u, "completion_tokens")) == (25 + 3) / 4);
    CHECK(json_integer_value(json_object_get(u, "prompt_tokens")) >= 5);
    json_decref(j);

    /* the last user message counts, not the first, nor the assistant's */
    j = chat(NULL,
             "[{\"role\": \"system\", \"content\": \"Name a colour.\"},"
             "{\"role\": \"user\", \"content\": \"Name a colour.\"},"
             "{\"role\": \"assistant\", \"content\": \"Red.\"},"
             "{\"role\": \"user\", \"content\": \"What is two plus two?\"}]",
             &st);
    CHECK(st == 200);
    CHECK(content_of(j) && strncmp(content_of(j), "Two plus two", 12) == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "model")), "strong") == 0);
    json_decref(j);

    /* content parts are joined; UTF-8 and quotes survive */
    j = chat("m",
             "[{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Name a\"},"
             "{\"type\": \"text\", \"text\": \"colour.\"}]}]",
             &st);
    CHECK(st == 200);
    CHECK(content_of(j) && strcmp(content_of(j), COLOUR) == 0);
    json_decref(j);

    j = chat("m", "[{\"role\": \"user\", \"content\": \"What is three plus three?\"}]", &st);
    CHECK(st == 400);
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    CHECK(msg && strstr(msg, "no recorded answer") != NULL);
    json_decref(j);

    struct h_resp r;
    h_get(port, "/v1/models", &r);
    CHECK(r.status == 200);
    CHECK(strstr(r.body, "\"id\":\"strong\"") != NULL);
    h_resp_free(&r);
}

static void
test_stream(void)
{
    struct h_resp r;
    struct h_sse s;

    h_chat(port,
           "{\"model\": \"x\", \"stream\": true, \"stream_options\": {\"include_usage\": true},"
           "\"messages\": [{\"role\": \"user\", \"content\": \"Name a colour.\"}]}",
           &r);
    CHECK(r.status == 200);
    h_parse_sse(r.body, &s);
    CHECK(strcmp(s.content, COLOUR) == 0);
    size_t len = strlen(s.content);
    CHECK(s.content_chunks == (int)((len + 3) / 4));
    CHECK(s.completion_tokens == (long)s.content_chunks);
    CHECK(s.stop_chunks == 1 && s.usage_chunks == 1 && s.done == 1);
    h_resp_free(&r);
}

static void
test_fallback(void)
{
    char *args[] = {(char *)triage,      "replay",         "--data", fixture,
                    "--answers",         "fast",           "--port", "0",
                    "--fallback-answer", "I do not know.", NULL};
    pid_t pid;
    int st;

    CHECK(h_spawn_mock(args, &pid, &port) == 0);
    json_t *j = chat("m", "[{\"role\": \"user\", \"content\": \"Name a colour.\"}]", &st);
    CHECK(st == 200);
    CHECK(content_of(j) && strcmp(content_of(j), "I do not know.") == 0);
    json_decref(j);
    j = chat("m", "[{\"role\": \"user\", \"content\": \"What is two plus two?\"}]", &st);
    CHECK(content_of(j) && strcmp(content_of(j), "It is 4.") == 0); /* first record wins */
    json_decref(j);
    st = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void
test_usage_errors(void)
{
    char *help[] = {(char *)triage, "replay", "--help", NULL};
    char *none[] = {(char *)triage, "replay", "--data", fixture, NULL};
    char *unknown[] = {(char *)triage, "replay", "--data", fixture, "--answers",
                       "nope",         "--port", "0",      NULL};
    char *missing[] = {(char *)triage, "replay", "--data", "/nonexistent/x.jsonl.gz",
                       "--answers",    "fast",   NULL};
    char *badnum[] = {(char *)triage, "replay", "--answers", "fast", "--port", "70000", NULL};

    CHECK(run_status(help) == 0);
    CHECK(run_status(none) == 2);
    CHECK(run_status(unknown) == 1);
    CHECK(run_status(missing) == 1);
    CHECK(run_status(badnum) == 2);
}

/* The shipped data: a known GSM8K prompt answered by Mixtral, at a per-token pace. */
static void
test_gsm8k(const char *root)
{
    char data[512];
    snprintf(data, sizeof(data), "%s/data/replay/gsm8k.jsonl.gz", root);
    char *args[] = {
        (char *)triage, "replay", "--data",         data, "--answers", "mixtral-8x7b-instruct",
        "--port",       "0",      "--ms-per-token", "3",  NULL};
    pid_t pid;
    int st;
    struct timespec t0, t1;

    CHECK(h_spawn_mock(args, &pid, &port) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    json_t *j =
        chat("mixtral-8x7b-instruct",
             "[{\"role\": \"user\", \"content\": \"Janet\xe2\x80\x99s ducks lay 16 eggs per day. "
             "She eats three for breakfast every morning and bakes muffins for her friends "
             "every day with four. She sells the remainder at the farmers' market daily for $2 "
             "per fresh duck egg. How much in dollars does she make every day at the farmers' "
             "market?\"}]",
             &st);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(st == 200);
    const char *c = content_of(j);
    CHECK(c && strlen(c) > 6 && strcmp(c + strlen(c) - 5, "## 18") == 0);
    long tokens =
        (long)json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens"));
    CHECK(tokens > 20);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    CHECK(ms >= 0.8 * 3 * (double)tokens); /* a lower bound only */
    json_decref(j);
    st = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int
main(int argc, char **argv)
{
    char dir[] = "/tmp/test_replay.XXXXXX";
    const char *root = getenv("TRIAGE_SOURCE_ROOT");
    pid_t pid;

    if (argc < 2 || !root) {
        fprintf(stderr, "usage: TRIAGE_SOURCE_ROOT=... test_replay PATH-TO-TRIAGE\n");
        return 2;
    }
    triage = argv[1];
    if (!mkdtemp(dir))
        return 1;
    write_fixture(dir);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    char *args[] = {(char *)triage, "replay", "--data", fixture, "--answers",
                    "strong",       "--port", "0",      NULL};
    if (h_spawn_mock(args, &pid, &port) == 0) {
        test_lookup();
        test_stream();
        int st = h_stop(pid, SIGTERM);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    } else {
        CHECK(!"triage replay started");
    }
    test_fallback();
    test_usage_errors();
    test_gsm8k(root);

    curl_global_cleanup();
    unlink(fixture);
    rmdir(dir);
    if (h_failures)
        fprintf(stderr, "%d check(s) failed\n", h_failures);
    return h_failures ? 1 : 0;
}
