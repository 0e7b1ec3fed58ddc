/* test_replay.c - tests of `triage replay`: prompt lookup, JSON and SSE answers with usage,
 * unknown prompts, the fallback answer, per-token delay, the shipped GSM8K data, and
 * `--judge` grading judge requests (router_judge_request) by the GSM8K references.
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
#include "router.h"

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
static char fixture_noref[256]; /* plain JSONL, no record with a "reference" */

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
    snprintf(fixture_noref, sizeof(fixture_noref), "%s/noref.jsonl", dir);
    FILE *p = fopen(fixture_noref, "w");
    if (p) {
        fputs("{\"prompt\": \"Name a colour.\", \"answers\": {\"strong\": \"Blue.\"}}\n", p);
        fclose(p);
    }
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

/* Finds the shipped record whose prompt starts with prefix; returns it (new) or NULL. */
static json_t *
gsm8k_record(const char *data, const char *prefix)
{
    gzFile f = gzopen(data, "rb");
    char line[65536];
    json_t *found = NULL;

    while (f && !found && gzgets(f, line, sizeof(line))) {
        json_t *j = json_loads(line, 0, NULL);
        const char *p = json_string_value(json_object_get(j, "prompt"));
        if (p && strncmp(p, prefix, strlen(prefix)) == 0)
            found = json_incref(j);
        json_decref(j);
    }
    if (f)
        gzclose(f);
    return found;
}

/* Sends a judge request grading answer as the reply to messages (JSON text); returns
 * the HTTP status, and in *q and *rating the verdict's label (router_judge_parse's
 * result in *parsed). */
static int
judge(const char *messages, const char *answer, int *parsed, double *q, int *rating)
{
    json_t *m = json_loads(messages, 0, NULL);
    char *body = router_judge_request(m, answer, strlen(answer), "judge-model");
    struct h_resp r;

    json_decref(m);
    CHECK(body != NULL);
    if (!body)
        return -1;
    h_chat(port, body, &r);
    free(body);
    json_t *j = json_loads(r.body, 0, NULL);
    const char *c = content_of(j);
    *parsed = c ? router_judge_parse(c, strlen(c), q, rating) : -2;
    json_decref(j);
    int status = (int)r.status;
    h_resp_free(&r);
    return status;
}

/* Wraps text as the messages of one user turn (new JSON text). */
static char *
user_turn(const char *text)
{
    json_t *m = json_pack("[{s:s, s:s}]", "role", "user", "content", text);
    char *s = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    return s;
}

/* --judge on the shipped data: a GSM8K question GPT-4 got right (8) and Mixtral wrong (10). */
static void
test_judge(const char *root)
{
    char data[512];
    snprintf(data, sizeof(data), "%s/data/replay/gsm8k.jsonl.gz", root);
    json_t *rec = gsm8k_record(data, "A candle melts by 2 centimeters every hour");
    CHECK(rec != NULL);
    if (!rec)
        return;
    const char *prompt = json_string_value(json_object_get(rec, "prompt"));
    json_t *answers = json_object_get(rec, "answers");
    const char *right = json_string_value(json_object_get(answers, "gpt-4-1106-preview"));
    const char *wrong = json_string_value(json_object_get(answers, "mixtral-8x7b-instruct"));
    CHECK(right && wrong && strcmp(json_string_value(json_object_get(rec, "reference")), "8") == 0);
    char *args[] = {(char *)triage, "replay", "--judge", "--data", data, "--port", "0", NULL};
    pid_t pid;
    int st, parsed, rating;
    double q;

    CHECK(h_spawn_mock(args, &pid, &port) == 0);
    char *question = user_turn(prompt);
    st = judge(question, right, &parsed, &q, &rating);
    CHECK(st == 200 && parsed == 0 && rating == 10 && q == 1.0);
    st = judge(question, wrong, &parsed, &q, &rating);
    CHECK(st == 200 && parsed == 0 && rating == 2 && q == 1.0 / 9.0);
    st = judge(question, "I could not work it out.", &parsed, &q, &rating);
    CHECK(st == 200 && parsed == 0 && rating == 2);

    /* the question found in a longer conversation, as content parts, spaced differently */
    json_t *m = json_pack("[{s:s, s:s}, {s:s, s:s}, {s:s, s:s}, {s:s, s:[{s:s, s:s}]}]", "role",
                          "system", "content", "Solve it.", "role", "user", "content", "Hello",
                          "role", "assistant", "content", "Hi!", "role", "user", "content",
                          "type", "text", "text", prompt);
    char *conv = json_dumps(m, JSON_COMPACT);
    st = judge(conv, right, &parsed, &q, &rating);
    CHECK(st == 200 && parsed == 0 && q == 1.0);
    free(conv);
    json_decref(m);

    /* an unknown question: no reference, the documented middle rating */
    char *unknown = user_turn("What is the airspeed of an unladen swallow?");
    st = judge(unknown, "#### 11", &parsed, &q, &rating);
    CHECK(st == 200 && parsed == 0 && rating == 5 && q == 4.0 / 9.0);
    free(unknown);

    /* not a judge request */
    json_t *j = chat("m", "[{\"role\": \"user\", \"content\": \"What is 2 + 2?\"}]", &st);
    CHECK(st == 400);
    json_decref(j);
    st = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    /* --judge-noise 1: every verdict is noise, flipped or with no usable rating */
    char *noisy[] = {(char *)triage, "replay", "--judge", "--judge-noise", "1", "--judge-seed",
                     "7", "--data", data, "--port", "0", NULL};
    CHECK(h_spawn_mock(noisy, &pid, &port) == 0);
    int unparseable = 0, flipped = 0;
    for (int i = 0; i < 24; i++) {
        char ans[64];
        snprintf(ans, sizeof(ans), "Attempt %d.\n#### 8", i);
        st = judge(question, ans, &parsed, &q, &rating);
        CHECK(st == 200);
        if (parsed < 0)
            unparseable++;
        else if (rating == 2)
            flipped++;
        else
            CHECK(!"a noisy verdict is flipped or unparseable");
        /* the same request draws the same verdict */
        int parsed2, rating2 = 0;
        double q2;
        judge(question, ans, &parsed2, &q2, &rating2);
        CHECK(parsed2 == parsed && (parsed < 0 || rating2 == rating));
    }
    CHECK(unparseable > 0 && flipped > 0);
    st = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    char *both[] = {(char *)triage, "replay", "--judge", "--answers", "m", "--data", data, NULL};
    char *noise_only[] = {(char *)triage, "replay", "--judge-noise", "0.5", "--answers", "m", NULL};
    char *noise_bad[] = {(char *)triage, "replay", "--judge", "--judge-noise", "1.5", NULL};
    char *no_refs[] = {(char *)triage, "replay", "--judge", "--data", fixture_noref, "--port", "0",
                       NULL};
    CHECK(run_status(both) == 2);
    CHECK(run_status(noise_only) == 2);
    CHECK(run_status(noise_bad) == 2);
    CHECK(run_status(no_refs) == 1);
    free(question);
    json_decref(rec);
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
    test_judge(root);

    curl_global_cleanup();
    unlink(fixture);
    unlink(fixture_noref);
    rmdir(dir);
    if (h_failures)
        fprintf(stderr, "%d check(s) failed\n", h_failures);
    return h_failures ? 1 : 0;
}
