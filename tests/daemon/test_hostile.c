/* test_hostile.c - one request, any bytes, from a client with no key: the daemon
 * answers with an OpenAI-shaped error (Anthropic-shaped on /v1/messages) and goes on
 * serving. Raw sockets, because the
 * bytes that killed it (issue 13) are ones a well-behaved client library never sends.
 *
 * usage: test_hostile TRIAGED MOCKLLM MAKE_MODEL */
#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"

static struct h_env env;

static void
stop(pid_t pid)
{
    int status = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* The process is still running and answers /healthz. */
static int
alive(pid_t pid, unsigned port)
{
    struct h_resp r;

    if (waitpid(pid, NULL, WNOHANG) != 0)
        return 0;
    h_get(port, "/healthz", &r);
    int ok = r.status == 200;
    h_resp_free(&r);
    return ok;
}

/* The body of a raw answer: after the blank line. */
static const char *
body_of(const char *answer)
{
    const char *p = strstr(answer, "\r\n\r\n");
    return p ? p + 4 : "";
}

/* Reads one whole answer from fd into out (cap bytes, NUL-terminated): its head and the
 * Content-Length bytes of its body, over as many receives as it takes, for 5 s at most.
 * Returns its status; 0 when it did not come whole, or more came than that one answer. */
static int
read_answer(int fd, char *out, size_t cap)
{
    size_t len = 0, want = 0;
    double t0 = h_now_ms();
    int status = 0;

    out[0] = '\0';
    while (len + 1 < cap && h_now_ms() - t0 < 5000) {
        ssize_t r = recv(fd, out + len, cap - 1 - len, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return 0;
        if (r > 0)
            out[len += (size_t)r] = '\0';
        const char *end = strstr(out, "\r\n\r\n");
        const char *cl = strstr(out, "\r\nContent-Length:");
        if (end && cl && cl < end) {
            want = (size_t)(end + 4 - out) + strtoul(cl + 17, NULL, 10);
            if (len >= want)
                break;
        }
    }
    if (len != want || sscanf(out, "HTTP/1.%*d %d", &status) != 1)
        return 0;
    return status;
}

/* The raw answer is status with a JSON error whose code is code (NULL: any code). */
static int
json_error_is(const char *answer, int status, const char *code)
{
    int st = 0;
    json_error_t e;

    if (sscanf(answer, "HTTP/1.%*d %d", &st) != 1 || st != status) {
        fprintf(stderr, "  wanted %d, got: %.200s\n", status, answer);
        return 0;
    }
    json_t *j = json_loads(body_of(answer), 0, &e); /* jansson checks UTF-8 too */
    const char *c = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    int ok = c && (!code || !strcmp(c, code)) &&
             json_is_string(json_object_get(json_object_get(j, "error"), "message"));
    if (!ok)
        fprintf(stderr, "  not the JSON error %s: %.300s\n", code ? code : "", body_of(answer));
    json_decref(j);
    return ok;
}

/* The raw answer is status with an Anthropic-shaped error of type type. */
static int
anthropic_error_is(const char *answer, int status, const char *type)
{
    int st = 0;
    json_error_t e;

    if (sscanf(answer, "HTTP/1.%*d %d", &st) != 1 || st != status) {
        fprintf(stderr, "  wanted %d, got: %.200s\n", status, answer);
        return 0;
    }
    json_t *j = json_loads(body_of(answer), JSON_DISABLE_EOF_CHECK, &e); /* answers may follow */
    json_t *err = json_object_get(j, "error");
    const char *t = json_string_value(json_object_get(err, "type"));
    int ok = json_is_string(json_object_get(j, "type")) &&
             !strcmp(json_string_value(json_object_get(j, "type")), "error") && t &&
             !strcmp(t, type) && json_is_string(json_object_get(err, "message")) &&
             !json_object_get(err, "code") && strstr(answer, "Content-Type: application/json");
    if (!ok)
        fprintf(stderr, "  not the Anthropic error %s: %.300s\n", type, body_of(answer));
    json_decref(j);
    return ok;
}

static char *
repeat(const char *prefix, const char *unit, int n, const char *suffix)
{
    size_t lp = strlen(prefix), lu = strlen(unit), ls = strlen(suffix);
    char *s = malloc(lp + lu * (size_t)n + ls + 1), *p = s;

    if (!s)
        abort();
    memcpy(p, prefix, lp);
    p += lp;
    for (int i = 0; i < n; i++, p += lu)
        memcpy(p, unit, lu);
    memcpy(p, suffix, ls + 1);
    return s;
}

static char *
post(const char *path, const char *body)
{
    size_t len = strlen(body) + strlen(path) + 200;
    char *s = malloc(len);

    snprintf(s, len,
             "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
             path, strlen(body), body);
    return s;
}

/* Each input that aborted the daemon (issue 13) now gets its error, and the daemon
 * lives: bytes that are not UTF-8, or cut mid-character, in paths, methods, model
 * names and the JSON parser's own message. */
static void
test_bad_bytes(void)
{
    pid_t pid;
    unsigned port = h_start_triaged(&env, "bytes", NULL, NULL, NULL, &pid);
    static char answer[65536];
    struct {
        char *req;
        int status;
        const char *code;
    } cases[] = {
        {strdup("GET /%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 404, "not_found"},
        {strdup("\xff /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 405,
         "method_not_allowed"},
        {strdup("GET /v1/models/%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 404,
         "model_not_found"},
        {repeat("GET /", "\xc3\xa9", 700, " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
         404, "not_found"},
        {repeat("GET /", "%C3%A9", 700, " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
         404, "not_found"},
        {post("/v1/chat/completions",
              "{\"model\":\"triage\",\"messages\":[{\"role\":\"user\",\"content\":\"C:\\\xc3\xa9t\xc3\xa9\"}]}"),
         400, "invalid_json"},
        {NULL, 404, "model_not_found"},
        {NULL, 400, NULL},
        {post("/v1/chat/completions", "{\"model\":\"fast\",\"messages\":[{\"role\":\"user\","
                                      "\"content\":\"\xff\xfe\"}]}"),
         400, "invalid_json"},
        /* under a prefix another module serves: its own 404 is JSON too */
        {strdup("GET /dashboard/%ff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 404,
         "not_found"},
    };
    char *m1 = repeat("{\"model\":\"a", "\xc3\xa9", 600,
                      "\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    char *m2 = repeat("{\"model\":\"triage:", "\xc3\xa9", 600,
                      "\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    cases[6].req = post("/v1/chat/completions", m1);
    cases[7].req = post("/v1/chat/completions", m2);
    free(m1);
    free(m2);

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        h_raw(port, cases[i].req, strlen(cases[i].req), answer, sizeof(answer), 5000);
        if (!json_error_is(answer, cases[i].status, cases[i].code))
            fprintf(stderr, "  case %zu: %.60s\n", i, cases[i].req);
        CHECK(json_error_is(answer, cases[i].status, cases[i].code));
        CHECK(alive(pid, port));
        free(cases[i].req);
    }
    stop(pid);
}

/* The other API paths (issue 16) with bytes that are not UTF-8, odd shapes and deep
 * nesting: each gets a JSON error (Anthropic's shape on /v1/messages) and the daemon
 * lives. */
static void
test_bad_bytes_apis(void)
{
    pid_t pid;
    unsigned port = h_start_triaged(&env, "apis", NULL, NULL, NULL, &pid);
    static char answer[65536];
    static const struct {
        const char *path, *body;
        int status;
    } cases[] = {
        {"/v1/responses", "{\"model\":\"triage\",\"input\":\"\xff\xfe\"}", 400},
        {"/v1/responses", "{\"model\":\"tri\xc3\",\"input\":\"hi\"}", 400},
        {"/v1/responses", "{\"model\":\"triage\",\"input\":[{\"role\":7}]}", 400},
        {"/v1/responses", "{\"model\":\"triage\",\"input\":[[[[[[[[[[]]]]]]]]]]}", 400},
        {"/v1/responses", "{\"model\":\"triage\",\"input\":\"x\",\"previous_response_id\":"
                          "\"\xc3\xa9\xc3\"}", 400},
        {"/v1/responses", "{\"model\":\"triage\",\"input\":\"x\",\"previous_response_id\":"
                          "\"resp_\\u00e9\"}", 400},
        {"/v1/completions", "{\"model\":\"triage\",\"prompt\":[1,[2,[3]],{\"a\":null}]}", 0},
        {"/v1/completions", "{\"model\":\"triage\",\"prompt\":true}", 400},
        {"/v1/embeddings", "{\"model\":\"\xff\",\"input\":\"x\"}", 400},
        {"/v1/embeddings", "{\"model\":\"fast\",\"input\":null}", 400},
        {"/v1/messages", "{\"model\":\"triage\",\"messages\":[{\"role\":\"user\","
                         "\"content\":\"\xff\"}]}", 400},
        {"/v1/messages", "{\"model\":\"triage\",\"system\":7,\"messages\":[{\"role\":"
                         "\"user\",\"content\":\"x\"}]}", 400},
        {"/v1/messages", "[]", 400},
    };

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *req = post(cases[i].path, cases[i].body);
        int st = h_raw(port, req, strlen(req), answer, sizeof(answer), 5000);
        json_t *j = json_loads(body_of(answer), 0, NULL); /* valid JSON, valid UTF-8 */
        json_t *err = json_object_get(j, "error");
        int anthropic = !strcmp(cases[i].path, "/v1/messages");
        int ok = (cases[i].status ? st == cases[i].status : st >= 200) && json_is_object(j) &&
                 (st < 400 || (json_is_string(json_object_get(err, "message")) &&
                               anthropic == json_is_string(json_object_get(j, "type"))));
        if (!ok)
            fprintf(stderr, "  case %zu: %d %.300s\n", i, st, answer);
        CHECK(ok);
        CHECK(alive(pid, port));
        json_decref(j);
        free(req);
    }
    stop(pid);
}

/* RFC 9112 6.3: a body framed two ways is refused, before any backend is called. */
static void
test_smuggling(void)
{
    pid_t pid;
    unsigned port = h_start_triaged(&env, "smuggle", NULL, NULL, NULL, &pid);
    static char answer[65536];
    const char *body = "{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    char req[1024];

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    snprintf(req, sizeof(req),
             "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(body), strlen(body) - 10, body);
    h_raw(port, req, strlen(req), answer, sizeof(answer), 5000);
    CHECK(json_error_is(answer, 400, "invalid_framing"));
    snprintf(req, sizeof(req),
             "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n"
             "Transfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
             strlen(body), strlen(body), body);
    h_raw(port, req, strlen(req), answer, sizeof(answer), 5000);
    CHECK(json_error_is(answer, 400, "invalid_framing"));
    snprintf(req, sizeof(req),
             "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n%s",
             body);
    h_raw(port, req, strlen(req), answer, sizeof(answer), 5000);
    CHECK(strncmp(answer, "HTTP/1.1 400", 12) == 0);
    /* the same length twice is one length */
    snprintf(req, sizeof(req),
             "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
             strlen(body), strlen(body), body);
    CHECK(h_raw(port, req, strlen(req), answer, sizeof(answer), 5000) == 200);
    CHECK(alive(pid, port));
    stop(pid);
}

/* max_header is the limit, exactly: a head just under it is served whole (its answer
 * has room), one just over gets a JSON 431 and no backend call. */
static void
test_header_limit_exact(void)
{
    pid_t pid;
    unsigned port = h_start_triaged(&env, "head", "max_header = 4k",
                                    "path = head.db\nflush_interval_ms = 10\n", NULL, &pid);
    static char answer[65536], req[16384];
    const char *body = "{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    for (int over = 0; over < 2; over++) {
        /* the head without the filler, then a filler to land at 4096 - 8 or 4096 + 8 */
        int base = snprintf(req, sizeof(req),
                            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                            "Content-Length: %zu\r\nConnection: close\r\nX-Filler: \r\n\r\n",
                            strlen(body));
        int fill = 4096 - base + (over ? 8 : -8);
        int n = snprintf(req, sizeof(req),
                         "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                         "Content-Length: %zu\r\nConnection: close\r\nX-Filler: %0*d\r\n\r\n%s",
                         strlen(body), fill, 0, body);
        h_raw(port, req, (size_t)n, answer, sizeof(answer), 5000);
        if (over)
            CHECK(json_error_is(answer, 431, "headers_too_large"));
        else
            CHECK(strncmp(answer, "HTTP/1.1 200", 12) == 0 &&
                  strstr(body_of(answer), "\"choices\""));
    }
    /* refused before routing, still a row: the log counts what clients sent */
    const char *bad = "{\"model\":\"fast\",\"messages\":[";
    char *req_bad = post("/v1/chat/completions", bad);
    h_raw(port, req_bad, strlen(req_bad), answer, sizeof(answer), 5000);
    free(req_bad);
    CHECK(json_error_is(answer, 400, "invalid_json"));
    CHECK(alive(pid, port));
    stop(pid); /* drains the log */

    char db[400];
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    int rows = 0;
    snprintf(db, sizeof(db), "%s/head.db", env.dir);
    CHECK(sqlite3_open(db, &h) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(h, "SELECT status, coalesce(error_kind, '') FROM requests ORDER BY id",
                             -1, &st, NULL) == SQLITE_OK);
    const int want_status[] = {200, 431, 400};
    const char *const want_kind[] = {"", "headers_too_large", "invalid_json"};
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        if (rows < 3) {
            CHECK(sqlite3_column_int(st, 0) == want_status[rows]);
            CHECK(!strcmp((const char *)sqlite3_column_text(st, 1), want_kind[rows]));
        }
        rows++;
    }
    CHECK(rows == 3);
    sqlite3_finalize(st);
    sqlite3_close(h);
}

/* Requests libmicrohttpd refuses before triage sees them get JSON errors as well: an
 * HTTP version it does not speak, a header line without a colon, a head beyond its
 * memory pool (max_header + 4 KiB). */
static void
test_library_errors(void)
{
    pid_t pid;
    unsigned port = h_start_triaged(&env, "library", "max_header = 4k", NULL, NULL, &pid);
    static char answer[65536];
    const char v2[] = "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n";
    const char colon[] = "GET /healthz HTTP/1.1\r\nHost x\r\n\r\n";

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    h_raw(port, v2, sizeof(v2) - 1, answer, sizeof(answer), 5000);
    CHECK(json_error_is(answer, 505, "http_version_not_supported"));
    h_raw(port, colon, sizeof(colon) - 1, answer, sizeof(answer), 5000);
    CHECK(json_error_is(answer, 400, "invalid_request"));
    char *big = repeat("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: ", "a", 20000, "\r\n\r\n");
    h_raw(port, big, strlen(big), answer, sizeof(answer), 5000);
    free(big);
    CHECK(json_error_is(answer, 431, "headers_too_large"));
    CHECK(strstr(answer, "Content-Type: application/json") != NULL);
    CHECK(alive(pid, port));
    stop(pid);
}

/* libmicrohttpd's own pages take the dialect of the request line's path: Anthropic's
 * on /v1/messages and under it (query and %XX as on_access reads them; the 404 of a
 * path under it too), OpenAI's elsewhere and when the library refuses the request line
 * before reading its path (an HTTP version it does not speak), also on a connection
 * whose last request was /v1/messages. */
static void
test_library_errors_dialect(void)
{
    pid_t pid;
    unsigned port = h_start_triaged(&env, "library-dialect", "max_header = 4k", NULL, NULL, &pid);
    static char answer[65536];
    const char colon[] = "POST /v1/messages HTTP/1.1\r\nHost x\r\n\r\n";
    const char colon_q[] = "POST /v1/%6dessages?beta=true HTTP/1.1\r\nHost x\r\n\r\n";
    const char colon_chat[] = "POST /v1/chat/completions HTTP/1.1\r\nHost x\r\n\r\n";
    const char v2[] = "POST /v1/messages HTTP/2.0\r\nHost: x\r\n\r\n";
    const char chunk[] = "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n{}\r\n0\r\n\r\n";
    const char kept[] = "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        "Content-Length: 2\r\n\r\n[]"
                        "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n";

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    h_raw(port, colon, sizeof(colon) - 1, answer, sizeof(answer), 5000);
    CHECK(anthropic_error_is(answer, 400, "invalid_request_error"));
    h_raw(port, colon_q, sizeof(colon_q) - 1, answer, sizeof(answer), 5000);
    CHECK(anthropic_error_is(answer, 400, "invalid_request_error"));
    h_raw(port, colon_chat, sizeof(colon_chat) - 1, answer, sizeof(answer), 5000);
    CHECK(json_error_is(answer, 400, "invalid_request"));
    h_raw(port, v2, sizeof(v2) - 1, answer, sizeof(answer), 5000);
    CHECK(json_error_is(answer, 505, "http_version_not_supported")); /* refused unread */
    h_raw(port, chunk, sizeof(chunk) - 1, answer, sizeof(answer), 5000);
    CHECK(anthropic_error_is(answer, 413, "request_too_large"));
    char *big = repeat("POST /v1/messages HTTP/1.1\r\nHost: x\r\nX-Filler: ", "a", 20000,
                       "\r\n\r\n");
    h_raw(port, big, strlen(big), answer, sizeof(answer), 5000);
    free(big);
    CHECK(anthropic_error_is(answer, 431, "invalid_request_error"));
    /* a path under /v1/messages that triage does not serve: Anthropic's 404 (its SDKs ask
     * for /v1/messages/count_tokens); elsewhere, and on a longer name, OpenAI's */
    static const struct {
        const char *req;
        int anthropic;
    } unknown[] = {
        {"POST /v1/messages/count_tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 1},
        {"GET /v1/messages/batches?limit=1 HTTP/1.1\r\nHost: x\r\n\r\n", 1},
        {"GET /v1/messages/batches HTTP/1.1\r\nHost x\r\n\r\n", 1}, /* the library's 400 */
        {"POST /v1/messagesx HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 0},
        {"POST /v1/chat/completions/x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 0},
    };
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        int library = strstr(unknown[i].req, "Host x") != NULL;
        h_raw(port, unknown[i].req, strlen(unknown[i].req), answer, sizeof(answer), 5000);
        if (unknown[i].anthropic)
            CHECK(anthropic_error_is(answer, library ? 400 : 404,
                                     library ? "invalid_request_error" : "not_found_error"));
        else
            CHECK(json_error_is(answer, 404, "not_found"));
    }
    /* the first answer (400 on /v1/messages, Anthropic's), then the refused request
     * line's: its path is never read, so its page is OpenAI's, not the last request's */
    h_raw(port, kept, sizeof(kept) - 1, answer, sizeof(answer), 5000);
    const char *second = strstr(answer + 1, "HTTP/1.1 ");
    CHECK(anthropic_error_is(answer, 400, "invalid_request_error"));
    CHECK(second && json_error_is(second, 505, "http_version_not_supported"));
    CHECK(alive(pid, port));
    stop(pid);
}

/* A head trickling in, one byte every 100 ms, is cut at read_timeout_ms with a 408,
 * on a new connection and on a kept-alive one; once a request line has named
 * /v1/messages the 408 is Anthropic-shaped, for a head and for a body still coming in.
 * What a kept-alive connection gets is exact: the whole 200 of its first request, then
 * the 408 and nothing before it. */
static void
test_slow_head(void)
{
    pid_t pid;
    unsigned port = h_start_triaged(&env, "slowhead", "read_timeout_ms = 500", NULL, NULL, &pid);
    static const char *const heads[] = {
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        /* sent whole, then nothing more: a head begun, and a body begun */
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\n",
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 200\r\n\r\n{",
    };
    static char got[8192];

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++)
        for (int kept = 0; kept < 2; kept++) {
            const char *head = heads[h];
            size_t hl = strlen(head), i = 0;
            int fd = h_dial(port, h ? 3000 : 100); /* a byte per receive's wait (100 ms) */
            CHECK(fd >= 0);
            if (kept) {
                const char first[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
                char buf[1024];
                CHECK(send(fd, first, sizeof(first) - 1, MSG_NOSIGNAL) > 0);
                /* all of it, however it is cut into segments and however long a loaded
                 * machine takes (a single receive could leave its tail to be read below,
                 * in front of the 408) */
                CHECK(read_answer(fd, buf, sizeof(buf)) == 200);
            }
            /* the daemon's clock starts at the connection's opening, on a kept-alive one
             * at the end of the request line (what came before it is idle time) */
            double t0 = h_now_ms(), t_clock = kept ? 0 : t0;
            int closed = 0;
            size_t len = 0;
            got[0] = '\0';
            if (h > 0) {
                /* no byte of ours is left unread when the socket is cut, which would make
                 * the close a reset that can drop the 408 on its way */
                CHECK(send(fd, head, hl, MSG_NOSIGNAL) > 0);
                i = hl;
                if (kept)
                    t_clock = h_now_ms();
            }
            /* once the answer has begun, no more bytes: they would meet a cut socket */
            for (; i < hl && !closed && len == 0 && h_now_ms() - t0 < 8000; i++) {
                if (send(fd, head + i, 1, MSG_NOSIGNAL) < 0)
                    break;
                if (t_clock == 0 && head[i] == '\n')
                    t_clock = h_now_ms();
                ssize_t r = recv(fd, got + len, sizeof(got) - 1 - len, 0); /* waits 100 ms */
                if (r == 0 || (r < 0 && errno == ECONNRESET))
                    closed = 1;
                else if (r > 0)
                    got[len += (size_t)r] = '\0';
            }
            if (!closed)
                closed = h_read_to_close(fd, got + len, sizeof(got) - len) == 1;
            double took = h_now_ms() - t_clock;
            fprintf(stderr, "slow %s (%s, %s connection): cut %.0f ms after %s (%.0f ms in all)\n",
                    h == 2 ? "body" : "head", h ? "/v1/messages" : "/healthz",
                    kept ? "kept-alive" : "new", took, kept ? "its request line" : "the opening",
                    h_now_ms() - t0);
            CHECK(closed && t_clock > 0 && took < 4000);
            if (h == 0)
                CHECK(json_error_is(got, 408, "read_timeout"));
            else
                CHECK(anthropic_error_is(got, 408, "invalid_request_error"));
            close(fd);
        }
    CHECK(alive(pid, port));
    stop(pid);
}

/* A client that hangs up while its /v1/feedback job waits in the thread pool (held
 * there by a lock on the log) leaves a request whose method and path must still be
 * its own when the job ends and the access line is written (ASan: use-after-free). */
static void
test_hangup_during_job(void)
{
    pid_t pid;
    char storage[700], db[400], logpath[400];
    snprintf(db, sizeof(db), "%s/job.db", env.dir);
    snprintf(storage, sizeof(storage), "path = %s\nflush_interval_ms = 10\n", db);
    unsigned port = h_start_triaged(&env, "job", NULL, storage, NULL, &pid);
    struct h_resp r;

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    h_chat(port, "{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &r);
    CHECK(r.status == 200);
    char id[64];
    snprintf(id, sizeof(id), "%s", h_header(&r, "x-triage-request-id") ? h_header(&r, "x-triage-request-id") : "");
    h_resp_free(&r);
    usleep(200 * 1000); /* the row is written (flush every 10 ms) */

    sqlite3 *blocker = NULL;
    CHECK(sqlite3_open(db, &blocker) == SQLITE_OK);
    CHECK(sqlite3_exec(blocker, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
    char body[200], *req;
    snprintf(body, sizeof(body), "{\"request_id\":\"%s\",\"score\":1}", id);
    req = post("/v1/feedback", body);
    int fd = h_dial(port, 100);
    CHECK(fd >= 0 && send(fd, req, strlen(req), MSG_NOSIGNAL) > 0);
    free(req);
    usleep(1500 * 1000); /* past the 1 s after which a waiting client's socket is watched */
    close(fd);            /* hang up: MHD lets go of the connection */
    usleep(300 * 1000);
    sqlite3_exec(blocker, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(blocker);
    usleep(300 * 1000); /* the job ends, the orphaned request is logged and freed */
    CHECK(alive(pid, port));
    stop(pid);

    snprintf(logpath, sizeof(logpath), "%s/job.log", env.dir);
    FILE *f = fopen(logpath, "r");
    char line[4096];
    int found = 0;
    while (f && fgets(line, sizeof(line), f))
        if (strstr(line, "path=/v1/feedback") && strstr(line, "method=POST"))
            found = 1;
    if (f)
        fclose(f);
    CHECK(found); /* the access line names the request's own method and path */
}

int
main(int argc, char **argv)
{
    int rc = h_env_setup(&env, "hostile", argc, argv);

    if (rc)
        return rc;
    if (h_env_make_model(&env, NULL) < 0)
        return 1;
    test_bad_bytes();
    test_bad_bytes_apis();
    test_smuggling();
    test_header_limit_exact();
    test_library_errors();
    test_library_errors_dialect();
    test_slow_head();
    test_hangup_during_job();
    return h_env_finish(&env);
}
