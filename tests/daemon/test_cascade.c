/* test_cascade.c - policy cascade end to end: the band's edges, a fast answer served or
 * escalated (one answer, headers saying which), a fast tier that errors or times out
 * (escalated, no client error), a streaming client's held answer, a client that hangs up
 * while the answer is held (no strong call), the counters in /v1/stats.
 *
 * The exact edges: cascade_low, cascade_high and escalate_at set to the very score a
 * prompt and its answer got (read from the log, bit for bit). Log-probabilities: asked of
 * the fast tier, used in the signals, stripped from the client's answer or kept, byte
 * for byte, in JSON and SSE.
 *
 * usage: test_cascade TRIAGED MOCKLLM MAKE_MODEL
 * strong is the shared mockllm; fast is a second mockllm answering one fixed text (with
 * --heads: what triaged sent it). Each case starts its own triaged; waits poll with
 * generous bounds. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "harness.h"
#include "prompt_features.h"

static struct h_env env;
static unsigned fast_port;

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
        h_failures++;
        return;
    }
    mock_reset(env.mock_port);
    mock_reset(fast_port);
    h_chat(port, body_plain, &r);
    CHECKF(r.status == 200, "served: status %ld", r.status);
    CHECKF(h_header(&r, "x-triage-route") && !strcmp(h_header(&r, "x-triage-route"), "cascade"),
           "served: route %s", h_header(&r, "x-triage-route"));
    CHECKF(h_header(&r, "x-triage-escalated") && !strcmp(h_header(&r, "x-triage-escalated"), "0"),
           "served: escalated %s", h_header(&r, "x-triage-escalated"));
    CHECKF(h_header(&r, "x-triage-escalation-score") != NULL, "served: no escalation score");
    CHECKF(h_header(&r, "x-triage-backend") && !strcmp(h_header(&r, "x-triage-backend"), "fast"),
           "served: backend %s", h_header(&r, "x-triage-backend"));
    CHECKF(!strcmp(content_of(&r, buf, sizeof(buf)), "The answer is 42."), "served: content '%s'",
           buf);
    CHECKF(!strstr(r.body ? r.body : "", "logprobs"), "served: logprobs not asked for, yet sent");
    h_resp_free(&r);
    CHECKF(mock_requests(fast_port) == 1 && mock_requests(env.mock_port) == 0,
           "served: fast %ld, strong %ld calls", mock_requests(fast_port),
           mock_requests(env.mock_port));

    /* a streaming client gets the held answer as a stream */
    h_chat(port, body_stream, &r);
    struct h_sse s;
    h_parse_sse(r.body ? r.body : "", &s);
    CHECKF(r.status == 200 && s.done && !s.bad && !strcmp(s.content, "The answer is 42."),
           "served stream: status %ld done %d bad %d content '%s'", r.status, s.done, s.bad,
           s.content);
    CHECKF(h_header(&r, "content-type") && strstr(h_header(&r, "content-type"), "event-stream"),
           "served stream: content type %s", h_header(&r, "content-type"));
    CHECKF(h_header(&r, "x-triage-escalated") && !strcmp(h_header(&r, "x-triage-escalated"), "0"),
           "served stream: escalated %s", h_header(&r, "x-triage-escalated"));
    h_resp_free(&r);

    /* /v1/stats counts the judged answers since start */
    h_get(port, "/v1/stats", &r);
    json_t *j = json_loads(r.body ? r.body : "", 0, NULL);
    json_t *c = json_object_get(j, "cascade");
    CHECKF(json_integer_value(json_object_get(c, "judged")) == 2 &&
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
        CHECKF(r.status == 200 && s.done && strcmp(s.content, "The answer is 42.") != 0 &&
                   s.content[0],
               "escalated: status %ld content '%s'", r.status, s.content);
        CHECKF(h_header(&r, "x-triage-escalated") &&
                   !strcmp(h_header(&r, "x-triage-escalated"), "1"),
               "escalated: escalated %s", h_header(&r, "x-triage-escalated"));
        CHECKF(h_header(&r, "x-triage-backend") &&
                   !strcmp(h_header(&r, "x-triage-backend"), "strong"),
               "escalated: backend %s", h_header(&r, "x-triage-backend"));
        h_resp_free(&r);
        CHECKF(mock_requests(fast_port) == 1 && mock_requests(env.mock_port) == 1,
               "escalated: fast %ld, strong %ld calls", mock_requests(fast_port),
               mock_requests(env.mock_port));
        h_stop(pid, SIGTERM);
    } else {
        h_failures++;
    }

    port = start("hard", fast_url, "cascade_high = 0", NULL, &pid);
    if (port) {
        mock_reset(fast_port);
        h_chat(port, body_plain, &r);
        CHECKF(r.status == 200 && h_header(&r, "x-triage-route") &&
                   !strcmp(h_header(&r, "x-triage-route"), "cascade_hard") &&
                   !h_header(&r, "x-triage-escalated"),
               "hard: status %ld route %s", r.status, h_header(&r, "x-triage-route"));
        CHECKF(mock_requests(fast_port) == 0, "hard: the fast tier was called");
        h_resp_free(&r);
        h_stop(pid, SIGTERM);
    } else {
        h_failures++;
    }

    port = start("easy", fast_url, "cascade_low = 1\ncascade_high = 1", NULL, &pid);
    if (port) {
        h_chat(port, body_plain, &r);
        CHECKF(r.status == 200 && h_header(&r, "x-triage-route") &&
                   !strcmp(h_header(&r, "x-triage-route"), "cascade_easy") &&
                   h_header(&r, "x-triage-backend") &&
                   !strcmp(h_header(&r, "x-triage-backend"), "fast"),
               "easy: status %ld route %s", r.status, h_header(&r, "x-triage-route"));
        h_resp_free(&r);
        h_stop(pid, SIGTERM);
    } else {
        h_failures++;
    }
}

static double query_double(const char *name, const char *sql);
static double wait_double(const char *name, const char *sql);

/* A fast tier that is down, too slow, or answers an error escalates without retries: the
 * client gets the strong answer and no error; the failed fast call is a row of its own
 * (kind cascade) with its error, the client's row a plain success on the strong tier. */
static void
test_fast_fails(void)
{
    pid_t pid;
    struct h_resp r;
    char down[64], up[64], buf[256];

    snprintf(down, sizeof(down), "http://127.0.0.1:%u/v1", h_free_port()); /* nobody there */
    snprintf(up, sizeof(up), "http://127.0.0.1:%u/v1", fast_port);
    struct {
        const char *name, *url, *fast_extra, *body, *error;
    } cases[] = {
        {"fastdown", down, NULL, body_plain, "unreachable"},
        /* only the fast model is slow (by_model: each backend gets its own model name) */
        {"fastslow", up, "first_byte_timeout_ms = 300",
         "{\"model\":\"triage\",\"mock\":{\"by_model\":{\"fast\":{\"latency_ms\":3000}}},"
         "\"messages\":[{\"role\":\"user\",\"content\":\"What is 40 + 2?\"}]}",
         "timeout"},
        {"fast500", up, NULL,
         "{\"model\":\"triage\",\"mock\":{\"by_model\":{\"fast\":{\"status\":500}}},"
         "\"messages\":[{\"role\":\"user\",\"content\":\"What is 40 + 2?\"}]}",
         "backend_status"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned port = start(cases[i].name, cases[i].url, NULL, cases[i].fast_extra, &pid);
        if (!port) {
            h_failures++;
            continue;
        }
        mock_reset(fast_port);
        mock_reset(env.mock_port);
        h_chat(port, cases[i].body, &r);
        const char *esc = h_header(&r, "x-triage-escalated");
        CHECKF(r.status == 200 && esc && !strcmp(esc, "1"), "%s: status %ld escalated %s",
               cases[i].name, r.status, esc);
        const char *be = h_header(&r, "x-triage-backend");
        CHECKF(be && !strcmp(be, "strong"), "%s: backend %s", cases[i].name, be);
        content_of(&r, buf, sizeof(buf));
        CHECKF(buf[0] && strcmp(buf, "The answer is 42.") != 0, "%s: content '%s'", cases[i].name,
               buf);
        h_resp_free(&r);
        /* no retry of the fast call: the strong tier is the fallback */
        CHECKF(mock_requests(fast_port) == (cases[i].url == down ? 0 : 1) &&
                   mock_requests(env.mock_port) == 1,
               "%s: fast %ld strong %ld calls", cases[i].name, mock_requests(fast_port),
               mock_requests(env.mock_port));
        h_stop(pid, SIGTERM);
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM requests f JOIN requests c ON f.parent_id = c.request_id"
                 " WHERE f.kind = 'cascade' AND f.request_id = c.request_id || '.fast' AND"
                 " f.backend = 'fast' AND f.error_kind = '%s' AND c.kind IS NULL AND"
                 " c.backend = 'strong' AND c.status = 200 AND c.error_kind IS NULL",
                 cases[i].error);
        CHECKF(query_double(cases[i].name, sql) == 1,
               "%s: no failed fast row with %s beside a "
               "successful client row",
               cases[i].name, cases[i].error);
    }
}


/* A client that hangs up while its fast answer is held: the fast call is cancelled, no
 * strong call for nobody, the request's row is logged, and the daemon carries on. */
static void
test_hangup(void)
{
    pid_t pid;
    struct h_resp r;
    char url[64];

    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1", fast_port);
    unsigned port = start("hangup", url, "escalate_at = 0", NULL, &pid);
    if (!port) {
        h_failures++;
        return;
    }
    mock_reset(env.mock_port);
    mock_reset(fast_port);
    const char *slow = "{\"model\":\"triage\",\"stream\":true,\"mock\":{\"latency_ms\":2500},"
                       "\"messages\":[{\"role\":\"user\",\"content\":\"What is 40 + 2?\"}]}";
    struct h_req q = {.method = "POST", .path = "/v1/chat/completions", .body = slow,
                      .timeout_ms = 400};
    h_do(port, &q, &r);
    CHECKF(r.status == 0 || r.rc != 0, "hangup: the client got an answer (%ld)", r.status);
    h_resp_free(&r);
    usleep(4000 * 1000); /* the fast answer arrives (2.5 s) and would be escalated */
    CHECKF(mock_requests(env.mock_port) == 0, "hangup: strong called %ld times for nobody",
           mock_requests(env.mock_port));
    /* the held call was dropped, not waited for */
    h_get(fast_port, "/_mock/stats", &r);
    json_t *st = json_loads(r.body ? r.body : "", 0, NULL);
    CHECKF(json_integer_value(json_object_get(st, "cancelled")) == 1 &&
               json_integer_value(json_object_get(st, "requests")) == 1,
           "hangup: the fast call was not cancelled: %s", r.body ? r.body : "");
    json_decref(st);
    h_resp_free(&r);
    /* one row, the client's: in the band, on the fast tier, its hang-up said */
    double rows = wait_double("hangup", "SELECT count(*) FROM requests WHERE kind IS NULL AND"
                                        " route_reason = 'cascade' AND backend = 'fast' AND"
                                        " error_kind = 'client_gone'");
    CHECKF(rows == 1, "hangup: %g rows for the hung-up request (all rows: %g)", rows,
           query_double("hangup", "SELECT count(*) FROM requests"));
    CHECKF(query_double("hangup", "SELECT count(*) FROM requests WHERE backend = 'strong'") == 0,
           "hangup: a strong row");
    h_get(port, "/healthz", &r);
    CHECKF(r.status == 200, "hangup: daemon unhealthy after (%ld)", r.status);
    h_resp_free(&r);
    CHECKF(h_stop(pid, SIGTERM) == 0, "hangup: triaged did not exit cleanly");
}

/* The value of sql's first column over case name's log (a double; NAN on error or NULL). */
static double
query_double(const char *name, const char *sql)
{
    char path[512];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    double v = NAN;

    snprintf(path, sizeof(path), "%s/%s.db", env.dir, name);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        v = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* Polls sql over case name's log until it gives a number above 0, within 10 s. */
static double
wait_double(const char *name, const char *sql)
{
    double v, t0 = h_now_ms();

    while (!((v = query_double(name, sql)) > 0) && h_now_ms() - t0 < 10000)
        usleep(50 * 1000);
    return v;
}

/* The exact edges. A prompt's routing score s and its answer's escalation score e are
 * read from the log bit for bit; then cascade_low = s puts the prompt in the band (the
 * band includes its low edge), cascade_high = s sends it to the strong tier alone (the
 * band excludes its high edge), escalate_at = e escalates the answer (at the cut is
 * unsure) and escalate_at just above e serves it. */
static void
test_exact_edges(void)
{
    pid_t pid;
    struct h_resp r;
    char fast_url[64], extra[160];
    snprintf(fast_url, sizeof(fast_url), "http://127.0.0.1:%u/v1", fast_port);

    unsigned port = start("probe", fast_url, "escalate_at = 1", NULL, &pid);
    if (!port) {
        h_failures++;
        return;
    }
    h_chat(port, body_plain, &r);
    CHECKF(r.status == 200, "probe: status %ld", r.status);
    h_resp_free(&r);
    h_stop(pid, SIGTERM);
    double sc = query_double("probe", "SELECT score FROM requests WHERE kind IS NULL");
    double e = query_double("probe", "SELECT escalation FROM requests WHERE kind IS NULL");
    CHECKF(sc > 0 && sc < 1 && e > 0 && e < 1, "probe: score %.17g escalation %.17g", sc, e);
    if (!(sc > 0 && sc < 1 && e > 0 && e < 1))
        return;

    struct {
        const char *name;
        const char *key; /* set to at */
        double at;
        const char *more; /* another [router] line */
        const char *route, *escalated;
    } cases[] = {
        {"at_low", "cascade_low", sc, "escalate_at = 1", "cascade", "0"},
        {"at_high", "cascade_high", sc, "", "cascade_hard", NULL},
        {"below_high", "cascade_high", nextafter(sc, 1), "escalate_at = 1", "cascade", "0"},
        {"at_escalate", "escalate_at", e, "", "cascade", "1"},
        {"above_escalate", "escalate_at", nextafter(e, 1), "", "cascade", "0"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(extra, sizeof(extra), "%s = %.17g\n%s", cases[i].key, cases[i].at,
                 cases[i].more);
        port = start(cases[i].name, fast_url, extra, NULL, &pid);
        if (!port) {
            h_failures++;
            continue;
        }
        h_chat(port, body_plain, &r);
        char route[32] = "", esc[8] = "";
        if (h_header(&r, "x-triage-route"))
            snprintf(route, sizeof(route), "%s", h_header(&r, "x-triage-route"));
        if (h_header(&r, "x-triage-escalated"))
            snprintf(esc, sizeof(esc), "%s", h_header(&r, "x-triage-escalated"));
        CHECKF(r.status == 200 && !strcmp(route, cases[i].route),
               "%s: status %ld route %s, want %s", cases[i].name, r.status, route, cases[i].route);
        CHECKF(!strcmp(esc, cases[i].escalated ? cases[i].escalated : ""),
               "%s: escalated %s, want %s", cases[i].name, esc, cases[i].escalated);
        h_resp_free(&r);
        h_stop(pid, SIGTERM);
        /* the same prompt, the same answer: the same scores, to the bit */
        double sc2 = query_double(cases[i].name, "SELECT score FROM requests WHERE kind IS NULL");
        CHECKF(sc2 == sc, "%s: score %.17g, the probe's %.17g", cases[i].name, sc2, sc);
        if (cases[i].escalated) {
            double e2 =
                query_double(cases[i].name, "SELECT escalation FROM requests WHERE kind IS NULL");
            CHECKF(e2 == e, "%s: escalation %.17g, the probe's %.17g", cases[i].name, e2, e);
        }
    }
}

/* The fast mock's last request body (new JSON; NULL when it has none). */
static json_t *
fast_last_body(void)
{
    struct h_resp r;

    h_get(fast_port, "/_mock/last_head", &r);
    json_t *head = json_loads(r.body ? r.body : "", 0, NULL);
    h_resp_free(&r);
    const char *b = json_string_value(json_object_get(head, "body"));
    json_t *body = b ? json_loads(b, 0, NULL) : NULL;
    json_decref(head);
    return body;
}

/* Appends to out (cap bytes) the logprobs object the fast mock writes for "The answer is
 * 42." with top alternatives each (its documented format). */
static void
expected_logprobs(char *out, size_t cap, unsigned top)
{
    static const char *const toks[] = {"The", " answer", " is", " 42."};
    size_t n = strlen(out);

    n += (size_t)snprintf(out + n, cap - n, "{\"content\":[");
    for (size_t t = 0; t < 4; t++) {
        n += (size_t)snprintf(out + n, cap - n, "%s{\"token\":\"%s\",\"logprob\":-0.1,\"bytes\":[",
                              t ? "," : "", toks[t]);
        for (size_t k = 0; toks[t][k]; k++)
            n += (size_t)snprintf(out + n, cap - n, "%s%u", k ? "," : "",
                                  (unsigned)(unsigned char)toks[t][k]);
        n += (size_t)snprintf(out + n, cap - n, "],\"top_logprobs\":[");
        for (unsigned k = 0; k < top; k++) {
            if (k == 0)
                n += (size_t)snprintf(out + n, cap - n, "{\"token\":\"%s\"", toks[t]);
            else
                n += (size_t)snprintf(out + n, cap - n, ",{\"token\":\"<alt %u>\"", k);
            n += (size_t)snprintf(out + n, cap - n, ",\"logprob\":%.6g,\"bytes\":null}",
                                  -0.1 - (double)k);
        }
        n += (size_t)snprintf(out + n, cap - n, "]}");
    }
    snprintf(out + n, cap - n, "],\"refusal\":null}");
}

/* id and created of a completion (or of the first event of an SSE body). */
static void
id_created(const char *body, char *id, size_t idlen, long long *created)
{
    const char *p = strncmp(body, "data: ", 6) == 0 ? body + 6 : body;
    const char *end = strstr(p, "\n\n");
    json_t *j = json_loadb(p, end ? (size_t)(end - p) : strlen(p), 0, NULL);

    snprintf(id, idlen, "%s", json_is_string(json_object_get(j, "id"))
                                  ? json_string_value(json_object_get(j, "id")) : "");
    *created = json_integer_value(json_object_get(j, "created"));
    json_decref(j);
}

/* Log-probabilities in the band: the fast tier is asked for them (the client was not),
 * the answer's signals use them (the stored answer says so), and the client gets them
 * only when it asked: byte for byte, the fast mock's completion without its "logprobs"
 * (re-serialised) or untouched, and the same as SSE. */
static void
test_logprobs(void)
{
    pid_t pid;
    struct h_resp r;
    char fast_url[64], id[64], want[8192];
    long long created;
    const char *msg = "\"message\":{\"role\":\"assistant\",\"content\":\"The answer is 42.\"}";
    const char *usage = "\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":4,\"total_tokens\":8}";

    snprintf(fast_url, sizeof(fast_url), "http://127.0.0.1:%u/v1", fast_port);
    unsigned port = start("logprobs", fast_url, "escalate_at = 1", NULL, &pid);
    if (!port) {
        h_failures++;
        return;
    }

    /* JSON, not asked */
    h_chat(port, body_plain, &r);
    json_t *sent = fast_last_body();
    CHECKF(json_is_true(json_object_get(sent, "logprobs")) &&
               json_is_false(json_object_get(sent, "stream")) &&
               !json_object_get(sent, "stream_options") && !json_object_get(sent, "top_logprobs"),
           "the fast call did not ask for logprobs: %s", r.body ? r.body : "");
    json_decref(sent);
    id_created(r.body ? r.body : "", id, sizeof(id), &created);
    snprintf(want, sizeof(want),
             "{\"id\":\"%s\",\"object\":\"chat.completion\",\"created\":%lld,\"model\":\"fast\","
             "\"system_fingerprint\":null,\"choices\":[{\"index\":0,%s,\"finish_reason\":\"stop\"}],"
             "%s}",
             id, created, msg, usage);
    CHECKF(r.status == 200 && r.body && !strcmp(r.body, want),
           "JSON, not asked:\n got  %s\n want %s", r.body ? r.body : "", want);
    h_resp_free(&r);

    /* JSON, asked (with two alternatives): the fast mock's bytes, untouched */
    h_chat(port,
           "{\"model\":\"triage\",\"logprobs\":true,\"top_logprobs\":2,\"messages\":[{\"role\":"
           "\"user\",\"content\":\"What is 40 + 2?\"}]}",
           &r);
    id_created(r.body ? r.body : "", id, sizeof(id), &created);
    snprintf(want, sizeof(want),
             "{\"id\":\"%s\",\"object\":\"chat.completion\",\"created\":%lld,\"model\":\"fast\","
             "\"system_fingerprint\":null,\"choices\":[{\"index\":0,%s,\"logprobs\":",
             id, created, msg);
    expected_logprobs(want, sizeof(want), 2);
    snprintf(want + strlen(want), sizeof(want) - strlen(want), ",\"finish_reason\":\"stop\"}],%s}",
             usage);
    CHECKF(r.status == 200 && r.body && !strcmp(r.body, want), "JSON, asked:\n got  %s\n want %s",
           r.body ? r.body : "", want);
    h_resp_free(&r);

    /* SSE, not asked */
    h_chat(port, body_stream, &r);
    id_created(r.body ? r.body : "", id, sizeof(id), &created);
    char head[256];
    snprintf(head, sizeof(head),
             "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%lld,"
             "\"model\":\"fast\",\"choices\":[{\"index\":0,",
             id, created);
    snprintf(want, sizeof(want),
             "%s\"delta\":{\"role\":\"assistant\",\"content\":\"The answer is 42.\"}}]}\n\n"
             "%s\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
             head, head);
    CHECKF(r.status == 200 && r.body && !strcmp(r.body, want),
           "SSE, not asked:\n got  %s\n want %s", r.body ? r.body : "", want);
    h_resp_free(&r);

    /* SSE, asked: the whole answer's log-probabilities with its content (the completion
     * re-serialised as chunks: jansson writes a real as %.17g, the same double) */
    h_chat(port,
           "{\"model\":\"triage\",\"stream\":true,\"logprobs\":true,\"messages\":[{\"role\":"
           "\"user\",\"content\":\"What is 40 + 2?\"}]}",
           &r);
    id_created(r.body ? r.body : "", id, sizeof(id), &created);
    snprintf(head, sizeof(head),
             "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%lld,"
             "\"model\":\"fast\",\"choices\":[{\"index\":0,",
             id, created);
    snprintf(want, sizeof(want),
             "%s\"delta\":{\"role\":\"assistant\",\"content\":\"The answer is 42.\"},\"logprobs\":",
             head);
    expected_logprobs(want, sizeof(want), 0);
    for (char *p; (p = strstr(want, "\"logprob\":-0.1,")) != NULL;) {
        char rest[8192];
        snprintf(rest, sizeof(rest), "%s", p + strlen("\"logprob\":-0.1,"));
        snprintf(p, sizeof(want) - (size_t)(p - want), "\"logprob\":%.17g,%s", -0.1, rest);
    }
    snprintf(want + strlen(want), sizeof(want) - strlen(want),
             "}]}\n\n%s\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n", head);
    CHECKF(r.status == 200 && r.body && !strcmp(r.body, want), "SSE, asked:\n got  %s\n want %s",
           r.body ? r.body : "", want);
    h_resp_free(&r);
    h_stop(pid, SIGTERM);

    /* the signals used them: the stored answer of the first request says log-probabilities
     * came, their mean the mock's -0.1 */
    char path[512];
    snprintf(path, sizeof(path), "%s/logprobs.db", env.dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    float sig[FEATURES_N_ANSWER];
    struct features_vec words;
    struct features_scratch *scratch = features_scratch_new(FEATURES_MIN_BITS);
    int decoded = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "SELECT answer FROM requests WHERE kind IS NULL ORDER BY id LIMIT 1",
                           -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        decoded = features_answer_blob_decode(scratch, sqlite3_column_blob(st, 0),
                                              (size_t)sqlite3_column_bytes(st, 0), sig, &words);
    sqlite3_finalize(st);
    sqlite3_close(db);
    size_t has = FEATURES_N_ANSWER, mean = FEATURES_N_ANSWER;
    for (size_t j = 0; j < FEATURES_N_ANSWER; j++) {
        if (!strcmp(features_answer_name(j), "has_logprobs"))
            has = j;
        if (!strcmp(features_answer_name(j), "lp_mean"))
            mean = j;
    }
    CHECKF(decoded >= 0 && has < FEATURES_N_ANSWER && mean < FEATURES_N_ANSWER && sig[has] == 1 &&
               fabsf(sig[mean] + 0.1f) < 1e-4f,
           "the stored signals: decoded %d has_logprobs %g lp_mean %g", decoded,
           decoded >= 0 && has < FEATURES_N_ANSWER ? sig[has] : -1.0,
           decoded >= 0 && mean < FEATURES_N_ANSWER ? sig[mean] : -1.0);
    features_scratch_destroy(scratch);
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
    char *margv[] = {(char *)env.mock, "--port", "0", "--content", "The answer is 42.", "--heads",
                     NULL};
    if (h_spawn_mock(margv, &fast_pid, &fast_port) < 0)
        return 1;
    test_served();
    test_edges();
    test_fast_fails();
    test_hangup();
    test_exact_edges();
    test_logprobs();
    h_stop(fast_pid, SIGTERM);
    return h_env_finish(&env);
}
