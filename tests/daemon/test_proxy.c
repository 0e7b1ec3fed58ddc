/* test_proxy.c - integration tests: the real triaged in front of mockllm, driven by a libcurl client.
 *
 * usage: test_proxy TRIAGED MOCKLLM
 * Builds a small predictor model in a temporary folder, starts mockllm and triaged
 * on free loopback ports with a generated config, and checks relaying, routing,
 * errors, concurrency, the outcome log, reload and shutdown. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <sqlite3.h>

#include "guard/guard.h"
#include "daemon-int.h"
#include "harness.h"
#include "prompt_features.h"
#include "router.h"

static char *triaged_bin;
static char *mock_bin;
static char dir[256];
static unsigned mock_port;
static pid_t mock_pid;
static unsigned port; /* the main daemon */
static pid_t daemon_pid;

#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"what is two plus two\"}]"

/* ---- setup ------------------------------------------------------------------------- */

static int
write_model(const char *path)
{
    struct router_dataset *d = router_dataset_new(12);
    struct router_train_opts o;
    char err[256];
    int rc = -1;

    for (int i = 0; i < 40; i++) {
        char easy[128], hard[160];
        snprintf(easy, sizeof(easy), "what is %d plus %d", i, i + 1);
        snprintf(hard, sizeof(hard), "prove that the integral of the eigenvalue series %d converges",
                 i);
        json_t *e = json_pack("{s:s,s:{s:f,s:f}}", "prompt", easy, "outcomes", "fast", 1.0,
                              "strong", 1.0);
        json_t *h = json_pack("{s:s,s:{s:f,s:f}}", "prompt", hard, "outcomes", "fast", 0.0,
                              "strong", 1.0);
        router_dataset_add(d, e);
        router_dataset_add(d, h);
        json_decref(e);
        json_decref(h);
    }
    router_train_opts_default(&o);
    o.epochs = 2;
    o.strong = "strong";
    o.weak = "fast";
    struct router_model *m = router_train(d, NULL, 0, &o, err, sizeof(err));
    if (m && router_model_save(m, path) == 0)
        rc = 0;
    else
        fprintf(stderr, "cannot build the test model: %s\n", m ? "save failed" : err);
    router_model_unref(m);
    router_dataset_destroy(d);
    router_thread_cleanup();
    return rc;
}

/* Writes dir/name with the test backends; extra goes into [server]. */
static void
write_conf(const char *name, unsigned p, const char *server_extra, const char *aliases,
           int with_db)
{
    char path[512];
    unsigned dead = h_free_port();
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    if (!f)
        abort();
    fprintf(f,
            "[server]\nlisten = 127.0.0.1\nport = %u\nmax_body = 8k\nmax_response = 16k\n"
            "shutdown_timeout_ms = 5000\n"
            "%s\n"
            "[router]\nmodel = m.tmod\naliases = %s\ntiers = fast, strong\n"
            "fallback = strong, fast\n"
            "%s\n"
            "[backend fast]\nurl = http://127.0.0.1:%u/v1/\nmodel = mixtral-test\n"
            "api_key_env = TRIAGE_TEST_FAST_KEY\nprice_input = 1\nprice_output = 2\n"
            "breaker_failures = 1000\n"
            "[backend strong]\nurl = http://127.0.0.1:%u/v1\nmodel = gpt4-test\n"
            "overrides = {\"reasoning_effort\": \"high\"}\nbreaker_failures = 1000\n"
            "[backend dead]\nurl = http://127.0.0.1:%u/v1\nconnect_timeout_ms = 1000\n"
            "[backend slow]\nurl = http://127.0.0.1:%u/v1\nconnect_timeout_ms = 200\n"
            "first_byte_timeout_ms = 300\nidle_timeout_ms = 400\nbreaker_failures = 1000\n"
            "[backend flaky]\nurl = http://127.0.0.1:%u/v1\nmax_retries = 0\n"
            "breaker_failures = 2\nbreaker_cooldown_ms = 60000\n"
            "[backend solo]\nurl = http://127.0.0.1:%u/v1\nmax_concurrent = 1\n",
            p, server_extra ? server_extra : "", aliases,
            with_db ? "[storage]\npath = out.db\nstore_prompts = hash\nflush_interval_ms = 10\n"
                    : "",
            mock_port, mock_port, dead, mock_port, mock_port, mock_port);
    fclose(f);
}

static int
start_daemon(const char *conf_name, unsigned p, const char *log_name, pid_t *pid)
{
    char conf[512], log[512];

    snprintf(conf, sizeof(conf), "%s/%s", dir, conf_name);
    snprintf(log, sizeof(log), "%s/%s", dir, log_name);
    char *argv[] = {triaged_bin, "--config", conf, NULL};
    return h_spawn_daemon(argv, p, log, pid);
}

static json_t *
mock_last_request(void)
{
    struct h_resp r;

    h_get(mock_port, "/_mock/stats", &r);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    h_resp_free(&r);
    json_t *last = json_incref(json_object_get(j, "last_request"));
    json_decref(j);
    return last;
}

static long
mock_stat(const char *key)
{
    struct h_resp r;

    h_get(mock_port, "/_mock/stats", &r);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    long v = (long)json_integer_value(json_object_get(j, key));
    json_decref(j);
    h_resp_free(&r);
    return v;
}

/* Copies the access line of request id from dir/log_name into out (waiting up to 5 s
 * for it to be written). Returns 1 when found. */
static int
log_line_for(const char *log_name, const char *id, char *out, size_t cap)
{
    char path[512], line[4096], want[160];

    snprintf(path, sizeof(path), "%s/%s", dir, log_name);
    snprintf(want, sizeof(want), " request_id=%s ", id);
    for (int t = 0; t < 100; t++) {
        FILE *f = fopen(path, "r");
        int found = 0;
        while (f && !found && fgets(line, sizeof(line), f))
            found = strstr(line, " msg=request ") && strstr(line, want);
        if (f)
            fclose(f);
        if (found) {
            snprintf(out, cap, "%s", line);
            return 1;
        }
        usleep(50000);
    }
    out[0] = '\0';
    return 0;
}

/* The number after "key=" in a logfmt line, NAN when absent. */
static double
log_num(const char *line, const char *key)
{
    char k[64];
    const char *p;

    snprintf(k, sizeof(k), " %s=", key);
    p = strstr(line, k);
    return p ? strtod(p + strlen(k), NULL) : NAN;
}

/* The text of column col of the outcome row of request id in dir/db_name (waiting up to
 * 5 s for the writer), into out. Returns 1 when the row was found. */
static int
outcome_text(const char *db_name, const char *id, const char *col, char *out, size_t cap)
{
    char path[512], sql[256];
    sqlite3 *db = NULL;
    int found = 0;

    snprintf(path, sizeof(path), "%s/%s", dir, db_name);
    snprintf(sql, sizeof(sql), "SELECT %s FROM requests WHERE request_id = ?", col);
    out[0] = '\0';
    for (int t = 0; t < 100 && !found; t++) {
        sqlite3_stmt *st = NULL;
        usleep(50000);
        if (!db && sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
            sqlite3_close(db);
            db = NULL;
            continue;
        }
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
            continue;
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            const unsigned char *v = sqlite3_column_text(st, 0);
            snprintf(out, cap, "%s", v ? (const char *)v : "");
            found = 1;
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return found;
}

/* ---- a raw backend: answers every request with the bytes it is given, then closes ----- */

static struct {
    pthread_mutex_t mu;
    const char *response;
    size_t len;
    int fd;
    unsigned port;
} raw = {.mu = PTHREAD_MUTEX_INITIALIZER, .fd = -1};

static void *
raw_run(void *arg)
{
    (void)arg;
    for (;;) {
        char buf[16384];
        size_t n = 0;
        int fd = accept(raw.fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        /* the request: a head, then Content-Length bytes */
        char *end = NULL;
        while (!end && n + 1 < sizeof(buf)) {
            ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);
            if (r <= 0)
                break;
            n += (size_t)r;
            buf[n] = '\0';
            end = strstr(buf, "\r\n\r\n");
        }
        const char *cl = end ? strcasestr(buf, "\r\ncontent-length:") : NULL;
        size_t want = cl ? strtoul(cl + 17, NULL, 10) : 0, have = end ? n - (size_t)(end + 4 - buf) : 0;
        while (end && have < want) {
            ssize_t r = read(fd, buf, sizeof(buf));
            if (r <= 0)
                break;
            have += (size_t)r;
        }
        pthread_mutex_lock(&raw.mu);
        const char *resp = raw.response;
        size_t len = raw.len;
        pthread_mutex_unlock(&raw.mu);
        for (size_t off = 0; resp && off < len;) {
            ssize_t w = write(fd, resp + off, len - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        close(fd);
    }
}

/* Sets what the raw backend answers (len bytes, NULs included), starting it once. */
static void
raw_answer(const char *response, size_t len)
{
    pthread_mutex_lock(&raw.mu);
    raw.response = response;
    raw.len = len;
    pthread_mutex_unlock(&raw.mu);
    if (raw.fd >= 0)
        return;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    pthread_t t;
    raw.fd = socket(AF_INET, SOCK_STREAM, 0);
    if (raw.fd < 0 || bind(raw.fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(raw.fd, 16) < 0 || getsockname(raw.fd, (struct sockaddr *)&sa, &sl) < 0)
        abort();
    raw.port = ntohs(sa.sin_port);
    pthread_create(&t, NULL, raw_run, NULL);
    pthread_detach(t);
}

/* Starts a daemon whose one backend, "raw", is the raw backend (no retries). Returns its
 * port, 0 on failure. */
static unsigned
start_raw_daemon(const char *name, pid_t *pid)
{
    char path[512], log[64];
    unsigned p = h_free_port();

    raw_answer(NULL, 0);
    snprintf(path, sizeof(path), "%s/%s.conf", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    fprintf(f,
            "[server]\nlisten = 127.0.0.1\nport = %u\nshutdown_timeout_ms = 2000\n"
            "[router]\nmodel = m.tmod\ntiers = fast, strong\n"
            "[backend raw]\nurl = http://127.0.0.1:%u/v1\nmax_retries = 0\n"
            "[backend fast]\nurl = http://127.0.0.1:%u/v1\n"
            "[backend strong]\nurl = http://127.0.0.1:%u/v1\n",
            p, raw.port, mock_port, mock_port);
    fclose(f);
    snprintf(path, sizeof(path), "%s.conf", name);
    snprintf(log, sizeof(log), "%s.log", name);
    if (start_daemon(path, p, log, pid) < 0) {
        fprintf(stderr, "%s: triaged did not start\n", name);
        return 0;
    }
    return p;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void
test_passthrough(void)
{
    const char *hdrs[] = {"Authorization: Bearer client-key", NULL};
    struct h_req req = {.path = "/v1/chat/completions",
                        .body = "{\"model\":\"fast\"," MSGS ",\"user\":\"u1\"}",
                        .headers = hdrs};
    struct h_resp r;

    h_do(port, &req, &r);
    CHECK(r.status == 200);
    CHECK(h_header(&r, "x-mock-model") && !strcmp(h_header(&r, "x-mock-model"), "mixtral-test"));
    /* the backend's key replaces the client's */
    CHECK(h_header(&r, "x-mock-auth") &&
          !strcmp(h_header(&r, "x-mock-auth"), "Bearer fast-secret"));
    CHECK(h_header(&r, "x-triage-backend") && !strcmp(h_header(&r, "x-triage-backend"), "fast"));
    CHECK(h_header(&r, "x-triage-request-id") &&
          strlen(h_header(&r, "x-triage-request-id")) > 8);
    CHECK(h_header(&r, "x-triage-score") == NULL);
    CHECK(h_header(&r, "content-type") && strstr(h_header(&r, "content-type"), "application/json"));
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    CHECK(j && !strcmp(json_string_value(json_object_get(j, "object")), "chat.completion"));
    CHECK(j && !strcmp(json_string_value(json_object_get(j, "model")), "mixtral-test"));
    CHECK(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")) >
          0);
    json_decref(j);
    h_resp_free(&r);

    /* unknown fields pass through untouched; nothing is merged into pass-through */
    json_t *last = mock_last_request();
    CHECK(!strcmp(json_string_value(json_object_get(last, "user")), "u1"));
    CHECK(json_object_get(last, "reasoning_effort") == NULL);
    json_decref(last);

    /* a backend without a key gets no Authorization at all */
    struct h_req req2 = {.path = "/v1/chat/completions",
                         .body = "{\"model\":\"strong\"," MSGS "}",
                         .headers = hdrs};
    h_do(port, &req2, &r);
    CHECK(r.status == 200);
    CHECK(h_header(&r, "x-mock-auth") == NULL);
    CHECK(h_header(&r, "x-mock-model") && !strcmp(h_header(&r, "x-mock-model"), "gpt4-test"));
    h_resp_free(&r);
}

/* A whole answer over max_response (16k here) is refused with a 502, once: no retry and
 * no fallback; the same answer streamed is relayed as it comes. */
static void
test_max_response(void)
{
    static const char big[] = "{\"model\":\"fast\"," MSGS ",\"mock\":{\"chunks\":4000}}";
    static const char big_stream[] =
        "{\"model\":\"fast\",\"stream\":true," MSGS ",\"mock\":{\"chunks\":4000}}";
    struct h_resp r;

    long before = mock_stat("requests");
    h_chat(port, big, &r);
    CHECK(r.status == 502);
    CHECK(!strcmp(h_error_code(&r), "backend_response_too_large"));
    CHECK(mock_stat("requests") == before + 1);
    h_resp_free(&r);

    h_chat(port, big_stream, &r);
    CHECK(r.status == 200);
    CHECK(r.len > 16 * 1024);
    struct h_sse s;
    h_parse_sse(r.body, &s);
    CHECK(s.done == 1 && s.error_events == 0);
    h_resp_free(&r);

    h_chat(port, "{\"model\":\"fast\"," MSGS "}", &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
}

/* The forwarded body is the client's with the model replaced, however it is written:
 * spliced when the bytes allow, re-serialised when they do not. */
static void
test_body_rewrite(void)
{
    static const struct {
        const char *body;
        int stream_options; /* 1: the backend must see include_usage true */
    } cases[] = {
        /* blanks everywhere, model last, escapes in values */
        {" \n{ " MSGS " ,\"user\" : \"a \\\"q\\\" \\u00e9\" , \"model\" :\t\"fast\" } \n", 0},
        /* a model written with escapes */
        {"{\"model\":\"f\\u0061st\"," MSGS ",\"n\":[1,2.5,{\"a\":null}]}", 0},
        /* a key written with escapes, "model" twice: the parser's reading wins */
        {"{\"model\":\"nope\",\"m\\u006fdel\":\"fast\"," MSGS ",\"user\":\"a\"}", 0},
        /* streams get include_usage added, or set inside the client's stream_options */
        {"{\"model\":\"fast\",\"stream\":true," MSGS ",\"user\":\"a\"}", 1},
        {"{\"model\":\"fast\",\"stream\":true,\"stream_options\":{\"include_usage\":false,"
         "\"x\":1}," MSGS ",\"user\":\"a\"}", 1},
    };
    struct h_resp r;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *sent = json_loads(cases[i].body, 0, NULL);
        CHECK(sent != NULL);
        h_chat(port, cases[i].body, &r);
        CHECK(r.status == 200);
        h_resp_free(&r);
        json_t *last = mock_last_request();
        CHECK(json_is_object(last));
        CHECK(!strcmp(json_string_value(json_object_get(last, "model")), "mixtral-test"));
        /* every other member arrives as the client sent it */
        const char *k;
        json_t *v;
        json_object_foreach(sent, k, v) {
            if (!strcmp(k, "model") || !strcmp(k, "stream_options"))
                continue;
            CHECK(json_equal(v, json_object_get(last, k)));
        }
        json_t *so = json_object_get(last, "stream_options");
        if (cases[i].stream_options)
            CHECK(json_is_true(json_object_get(so, "include_usage")));
        else
            CHECK(so == NULL);
        if (json_object_get(sent, "stream_options"))
            CHECK(json_integer_value(json_object_get(so, "x")) == 1);
        CHECK(json_object_size(last) == json_object_size(sent) + (cases[i].stream_options &&
                                                                  !json_object_get(sent, "stream_options")));
        json_decref(last);
        json_decref(sent);
    }
}

/* features_json_load either declines or builds exactly what json_loadb builds; checked
 * on tricky documents, every truncation of them and every one-byte change. */
static int
parser_agrees(const char *buf, size_t len)
{
    json_t *fast = features_json_load(buf, len);
    json_t *slow = json_loadb(buf, len, 0, NULL);
    int ok = !fast || (slow && json_equal(fast, slow));

    if (!ok)
        fprintf(stderr, "parser disagrees on: %.*s\n", (int)len, buf);
    json_decref(fast);
    json_decref(slow);
    return ok;
}

static void
test_request_parser(void)
{
    static const char *const docs[] = {
        "{\"model\":\"triage\",\"stream\":false,\"temperature\":0.2,\"max_tokens\":512,"
        "\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\","
        "\"content\":\"what is 2+2? caf\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80\"}]}",
        " {\"a\" : [ 1 , -0 , 0.5 , -1.5e3 , 1E-2 , 2e+2 , true , false , null , { } , [ ] ] } ",
        "{\"s\":\"q\\\"b\\\\s\\/f\\bb\\ff\\nn\\rr\\tt\\u00e9\\u4e2d\\ud83d\\ude00\\u001f\"}",
        "{\"dup\":1,\"dup\":\"two\",\"x\":{\"dup\":[],\"dup\":{}}}",
        "[\"\", \"\\u0041\", 9223372036854775807, -9223372036854775808, 1.7976931348623157e308]",
        "{\"big\":9223372036854775808,\"inf\":1e400,\"tiny\":1e-400}",
        "{\"nul\":\"a\\u0000b\",\"lone\":\"\\ud800\",\"low\":\"\\udc00x\",\"k\\u0065y\":1}",
        "[\"\xc0\xaf\"]", "[\"\xed\xa0\x80\"]", "[\"\xf4\x90\x80\x80\"]", "[\"\xe4\xb8\"]",
        "[\"\xe0\x9f\xbf\"]", "[\"\xf0\x8f\xbf\xbf\"]", "[\"a\xf4\x8f\xbf\xbf" "b\"]",
        "{\"lead\":01,\"dot\":1.,\"exp\":1e,\"neg\":-,\"plus\":+1}",
        "{\"ctl\":\"a\tb\",\"trail\":[1,],\"obj\":{\"a\":1,}}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]"
        "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        "\"top\"", "42", "{} x", "{\"a\":1}}", "",
    };
    static const char subst[] = "\"\\{}[],:0e.-u \x01\x80\xff";
    int agree = 1;

    /* the common request shapes take the fast path */
    for (size_t i = 0; i < 5; i++) {
        json_t *v = features_json_load(docs[i], strlen(docs[i]));
        CHECK(v != NULL);
        json_decref(v);
    }
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        size_t n = strlen(docs[i]);
        char *b = malloc(n + 1);
        if (!b)
            abort();
        for (size_t l = 0; l <= n; l++)
            agree &= parser_agrees(docs[i], l);
        for (size_t at = 0; at < n; at++) {
            for (size_t k = 0; k < sizeof(subst) - 1; k++) {
                memcpy(b, docs[i], n);
                b[at] = subst[k];
                agree &= parser_agrees(b, n);
            }
        }
        free(b);
    }
    CHECK(agree);
}

/* Counts TCP connections to or from port in TIME_WAIT: each closed connection
 * leaves one behind for a minute, so reuse shows as no new ones. */
static int
count_time_wait(unsigned p)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    char line[512];
    int n = 0;

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        unsigned lport, rport, st;
        if (sscanf(line, " %*d: %*x:%x %*x:%x %x", &lport, &rport, &st) == 3 && st == 0x06 &&
            (lport == p || rport == p))
            n++;
    }
    fclose(f);
    return n;
}

/* Sequential requests reuse one kept-alive backend connection. */
static void
test_keepalive_reuse(void)
{
    struct h_resp r;

    h_chat(port, "{\"model\":\"fast\"," MSGS "}", &r);
    h_resp_free(&r);
    int before = count_time_wait(mock_port);
    for (int i = 0; i < 20; i++) {
        h_chat(port, "{\"model\":\"fast\"," MSGS "}", &r);
        CHECK(r.status == 200);
        h_resp_free(&r);
    }
    int after = count_time_wait(mock_port);
    CHECK(before >= 0 && after - before <= 2);
    if (after - before > 2)
        fprintf(stderr, "TIME_WAIT to the backend before %d after %d\n", before, after);
}

static void
test_stream(void)
{
    struct h_resp r;
    struct h_sse s;

    h_chat(port, "{\"model\":\"fast\",\"stream\":true," MSGS ",\"mock\":{\"chunks\":6}}", &r);
    CHECK(r.status == 200);
    CHECK(r.rc == CURLE_OK);
    CHECK(h_header(&r, "content-type") &&
          strstr(h_header(&r, "content-type"), "text/event-stream"));
    CHECK(h_header(&r, "x-triage-backend") && !strcmp(h_header(&r, "x-triage-backend"), "fast"));
    h_parse_sse(r.body, &s);
    CHECK(s.done == 1 && s.after_done == 0 && s.bad == 0);
    CHECK(s.chunks >= 6);
    CHECK(!strcmp(s.model, "mixtral-test"));
    /* the outcome log asked for usage upstream; the client did not, so it sees none */
    CHECK(s.usage_chunks == 0);
    CHECK(strlen(s.content) > 0);
    h_resp_free(&r);
    json_t *last = mock_last_request();
    CHECK(json_is_true(json_object_get(json_object_get(last, "stream_options"), "include_usage")));
    json_decref(last);

    /* a client that asks for usage gets it */
    h_chat(port,
           "{\"model\":\"fast\",\"stream\":true,\"stream_options\":{\"include_usage\":true}," MSGS
           "}",
           &r);
    h_parse_sse(r.body, &s);
    CHECK(r.status == 200 && s.done == 1);
    CHECK(s.usage_chunks == 1);
    h_resp_free(&r);
}

static void
test_stream_incremental(void)
{
    struct h_resp r;
    struct h_sse s;

    h_chat(port,
           "{\"model\":\"fast\",\"stream\":true," MSGS
           ",\"mock\":{\"chunks\":4,\"chunk_delay_ms\":500}}",
           &r);
    h_parse_sse(r.body, &s);
    CHECK(r.status == 200 && s.done == 1);
    CHECK(r.total_ms >= 1400);
    /* the first chunk reached us long before the backend finished */
    CHECK(r.first_byte_ms >= 0 && r.first_byte_ms + 900 < r.total_ms);
    if (r.first_byte_ms < 0 || r.first_byte_ms + 900 >= r.total_ms)
        fprintf(stderr, "first byte %.0f ms, total %.0f ms\n", r.first_byte_ms, r.total_ms);
    h_resp_free(&r);
}

static void
test_concurrent_streams(void)
{
    enum { N = 200 };
    CURLM *m = curl_multi_init();
    CURL *easy[N];
    struct h_resp *r = calloc(N, sizeof(*r));
    struct curl_slist *hl[N];
    struct h_req req = {
        .path = "/v1/chat/completions",
        .body = "{\"model\":\"fast\",\"stream\":true," MSGS
                ",\"mock\":{\"chunks\":8,\"chunk_delay_ms\":150}}",
        .timeout_ms = 60000,
    };
    int running = 0;

    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
    for (int i = 0; i < N; i++) {
        easy[i] = h_easy(port, &req, &r[i], &hl[i]);
        curl_multi_add_handle(m, easy[i]);
    }
    double t0 = h_now_ms();
    do {
        curl_multi_perform(m, &running);
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    } while (running);
    double took = h_now_ms() - t0;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)))
        for (int i = 0; i < N; i++)
            if (msg->easy_handle == easy[i])
                r[i].rc = msg->data.result;
    int ok = 0;
    char first[8192] = "";
    for (int i = 0; i < N; i++) {
        struct h_sse s;
        long status = 0;
        curl_easy_getinfo(easy[i], CURLINFO_RESPONSE_CODE, &status);
        h_parse_sse(r[i].body, &s);
        if (i == 0)
            snprintf(first, sizeof(first), "%s", s.content);
        if (r[i].rc == CURLE_OK && status == 200 && s.done && !s.bad && s.after_done == 0 &&
            s.chunks >= 8 && !strcmp(s.content, first))
            ok++;
        curl_multi_remove_handle(m, easy[i]);
        curl_slist_free_all(hl[i]);
        struct h_resp tmp = r[i];
        void *ctx;
        curl_easy_getinfo(easy[i], CURLINFO_PRIVATE, (char **)&ctx);
        free(ctx);
        curl_easy_cleanup(easy[i]);
        h_resp_free(&tmp);
    }
    CHECK(ok == N);
    if (ok != N)
        fprintf(stderr, "%d of %d streams intact\n", ok, N);
    /* 8 chunks x 150 ms each: all 200 ran at once, not one after another */
    CHECK(took < 20000);
    fprintf(stderr, "# %d concurrent streams: %.0f ms\n", N, took);
    free(r);
    curl_multi_cleanup(m);
}

static void
test_die_mid_stream(void)
{
    struct h_resp r;
    struct h_sse s;

    h_chat(port,
           "{\"model\":\"fast\",\"stream\":true," MSGS
           ",\"mock\":{\"chunks\":6,\"fail\":\"die_mid_stream\",\"die_after\":2}}",
           &r);
    h_parse_sse(r.body, &s);
    CHECK(r.status == 200);
    CHECK(s.done == 0);            /* never a fake [DONE] */
    CHECK(s.chunks >= 1 && s.chunks <= 3);
    CHECK(s.error_events == 1);    /* the client is told why */
    CHECK(strstr(r.body, "closed the connection mid-answer") != NULL);
    CHECK(strstr(r.body, "before answering") == NULL);
    /* and the chunked body ends abnormally, the connection closed at once: the client
     * does not sit out the idle timeout (its own 15 s timeout would say so) */
    CHECK(r.rc == CURLE_PARTIAL_FILE);
    if (r.rc != CURLE_PARTIAL_FILE)
        fprintf(stderr, "die_mid_stream: curl says %d (%s)\n", r.rc, curl_easy_strerror(r.rc));
    /* the access line names the backend's failure, not a client abort */
    char line[4096], id[128] = "";
    if (h_header(&r, "x-triage-request-id"))
        snprintf(id, sizeof(id), "%s", h_header(&r, "x-triage-request-id"));
    CHECK(log_line_for("main.log", id, line, sizeof(line)));
    CHECK(strstr(line, " error=closed") != NULL && strstr(line, " aborted=") == NULL);
    h_resp_free(&r);

    /* still serving */
    h_get(port, "/healthz", &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
    h_chat(port, "{\"model\":\"fast\"," MSGS "}", &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
}

/* A backend whose stream ends inside an event: the half event is dropped (glued to the
 * error event it would hide it), the error event arrives whole, the connection ends. */
static void
test_stream_cut_mid_event(void)
{
    static const char cut[] =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
        "71\r\ndata: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n\r\n"
        "17\r\ndata: {\"id\":\"c2\",\"objec\r\n";
    pid_t pid;
    struct h_resp r;
    struct h_sse s;
    unsigned p = start_raw_daemon("raw-cut", &pid);

    if (!p) {
        CHECK(!"raw daemon started");
        return;
    }
    raw_answer(cut, sizeof(cut) - 1);
    struct h_req req = {.path = "/v1/chat/completions",
                        .body = "{\"model\":\"raw\",\"stream\":true," MSGS "}"};
    h_do(p, &req, &r);
    h_parse_sse(r.body, &s);
    CHECK(r.status == 200 && s.chunks == 1 && s.bad == 0 && s.done == 0);
    CHECK(s.error_events == 1);
    CHECK(r.rc == CURLE_PARTIAL_FILE);
    if (s.error_events != 1 || s.bad)
        fprintf(stderr, "stream_cut_mid_event: got %s\n", r.body);
    h_resp_free(&r);
    int st = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* A NUL inside a backend's header value would split it where triaged keeps relayed
 * headers ("name\0value\0"): a backend could forge x-triage-* or Set-Cookie. Such an
 * answer is refused (502 backend_bad_response), as is one with a bare CR; a header with
 * another control byte is dropped and the rest relayed. */
static void
test_backend_header_bytes(void)
{
    static const char nul[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              "X-A: a\0x-triage-backend\0evil\0set-cookie\0s=1\r\n"
                              "Content-Length: 2\r\n\r\n{}";
    static const char cr[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "X-A: a\rset-cookie: s=1\r\nContent-Length: 2\r\n\r\n{}";
    static const char ctl[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                              "X-Ctl: a\x01z\r\nX-Fine: ok\r\nContent-Length: 2\r\n\r\n{}";
    struct h_req req = {.path = "/v1/chat/completions", .body = "{\"model\":\"raw\"," MSGS "}"};
    struct h_resp r;
    pid_t pid;
    unsigned p = start_raw_daemon("raw-headers", &pid);

    if (!p) {
        CHECK(!"raw daemon started");
        return;
    }
    raw_answer(nul, sizeof(nul) - 1);
    h_do(p, &req, &r);
    CHECK(r.status == 502 && !strcmp(h_error_code(&r), "backend_bad_response"));
    CHECK(h_header(&r, "set-cookie") == NULL);
    CHECK(h_header(&r, "x-triage-backend") && !strcmp(h_header(&r, "x-triage-backend"), "raw"));
    h_resp_free(&r);

    raw_answer(cr, sizeof(cr) - 1);
    h_do(p, &req, &r);
    CHECK(r.status == 502 && !strcmp(h_error_code(&r), "backend_bad_response"));
    CHECK(h_header(&r, "set-cookie") == NULL);
    h_resp_free(&r);

    raw_answer(ctl, sizeof(ctl) - 1);
    h_do(p, &req, &r);
    CHECK(r.status == 200 && h_header(&r, "x-ctl") == NULL);
    CHECK(h_header(&r, "x-fine") && !strcmp(h_header(&r, "x-fine"), "ok"));
    h_resp_free(&r);
    int st = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void
expect_error(const char *method, const char *path, const char *body, long status,
             const char *code)
{
    struct h_req req = {.method = method, .path = path, .body = body};
    struct h_resp r;

    h_do(port, &req, &r);
    CHECK(r.status == status);
    CHECK(!strcmp(h_error_code(&r), code));
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    json_t *e = json_object_get(j, "error");
    CHECK(json_is_string(json_object_get(e, "message")));
    CHECK(json_is_string(json_object_get(e, "type")));
    json_decref(j);
    CHECK(h_header(&r, "x-triage-request-id") != NULL);
    if (r.status != status || strcmp(h_error_code(&r), code))
        fprintf(stderr, "  %s %s -> %ld %s (wanted %ld %s)\n", method ? method : "GET", path,
                r.status, r.body, status, code);
    h_resp_free(&r);
}

/* Like expect_error, and the message holds text. */
static void
expect_error_text(const char *body, long status, const char *code, const char *text)
{
    struct h_resp r;

    expect_error(NULL, "/v1/chat/completions", body, status, code);
    h_chat(port, body, &r);
    CHECK(strstr(r.body, text) != NULL && strstr(r.body, "not valid JSON") == NULL);
    if (!strstr(r.body, text))
        fprintf(stderr, "  wanted %s in %s\n", text, r.body);
    h_resp_free(&r);
}

static void
test_bad_input(void)
{
    char big[10000];

    expect_error(NULL, "/v1/chat/completions", "{not json", 400, "invalid_json");
    expect_error(NULL, "/v1/chat/completions", "[1,2]", 400, "invalid_json");
    expect_error(NULL, "/v1/chat/completions", "{\"model\":\"fast\"}", 400, "missing_messages");
    expect_error(NULL, "/v1/chat/completions", "{\"model\":\"fast\",\"messages\":[]}", 400,
                 "missing_messages");
    expect_error(NULL, "/v1/chat/completions", "{\"messages\":[{\"role\":\"user\"}]}", 400,
                 "missing_model");
    expect_error(NULL, "/v1/chat/completions", "{\"model\":\"gpt-5\"," MSGS "}", 404,
                 "model_not_found");
    expect_error(NULL, "/v1/chat/completions", "{\"model\":\"triage:7\"," MSGS "}", 400,
                 "invalid_threshold");
    snprintf(big, sizeof(big), "{\"model\":\"fast\",\"messages\":[{\"role\":\"user\",\"content\":\"");
    size_t n = strlen(big);
    memset(big + n, 'a', sizeof(big) - n - 10);
    snprintf(big + sizeof(big) - 10, 10, "\"}]}");
    expect_error(NULL, "/v1/chat/completions", big, 413, "body_too_large");
    expect_error("GET", "/v1/chat/completions", NULL, 405, "method_not_allowed");
    expect_error("PUT", "/v1/models", NULL, 405, "method_not_allowed");
    expect_error(NULL, "/v2/nothing", NULL, 404, "not_found");
    /* every message an object with a string role; content a string, null or parts */
    static const char *const bad_messages[] = {
        "[1,2]", "[{\"role\":\"user\",\"content\":\"hi\"},\"hi\"]", "[{\"content\":\"hi\"}]",
        "[{\"role\":7,\"content\":\"hi\"}]", "[{\"role\":\"user\",\"content\":5}]",
        "[{\"role\":\"user\",\"content\":{\"text\":\"hi\"}}]",
        "[{\"role\":\"user\",\"content\":[\"hi\"]}]", "[null]",
    };
    for (size_t i = 0; i < sizeof(bad_messages) / sizeof(bad_messages[0]); i++) {
        char body[256];
        snprintf(body, sizeof(body), "{\"model\":\"fast\",\"messages\":%s}", bad_messages[i]);
        expect_error(NULL, "/v1/chat/completions", body, 400, "invalid_messages");
    }
    /* numbers beyond what a parser holds: valid JSON, so named, never called invalid */
    expect_error_text("{\"model\":\"fast\",\"max_tokens\":123456789012345678901234567890," MSGS "}",
                      400, "number_out_of_range", "'max_tokens'");
    expect_error_text("{\"model\":\"fast\"," MSGS ",\"max_tokens\":1e400}", 400,
                      "number_out_of_range", "'max_tokens'");
    expect_error_text("{\"model\":\"fast\"," MSGS ",\"tools\":[{\"p\":{\"max\":-1e999}}]}", 400,
                      "number_out_of_range", "'tools[0].p.max'");

    /* backend failures: one mapping, named codes */
    expect_error(NULL, "/v1/chat/completions", "{\"model\":\"dead\"," MSGS "}", 502,
                 "backend_unreachable");
    expect_error(NULL, "/v1/chat/completions",
                 "{\"model\":\"fast\"," MSGS ",\"mock\":{\"fail\":\"close\"}}", 502,
                 "backend_closed");
    double t0 = h_now_ms();
    expect_error(NULL, "/v1/chat/completions",
                 "{\"model\":\"slow\"," MSGS ",\"mock\":{\"fail\":\"hang\"}}", 504,
                 "backend_timeout");
    CHECK(h_now_ms() - t0 < 5000);

    /* backend error statuses are relayed as they are */
    struct h_resp r;
    h_chat(port, "{\"model\":\"fast\"," MSGS ",\"mock\":{\"status\":429,\"retry_after\":7}}", &r);
    CHECK(r.status == 429);
    CHECK(h_header(&r, "retry-after") && !strcmp(h_header(&r, "retry-after"), "7"));
    CHECK(h_header(&r, "x-triage-backend") && !strcmp(h_header(&r, "x-triage-backend"), "fast"));
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    CHECK(json_is_object(json_object_get(j, "error")));
    json_decref(j);
    h_resp_free(&r);
    h_chat(port, "{\"model\":\"fast\",\"stream\":true," MSGS ",\"mock\":{\"status\":500}}", &r);
    CHECK(r.status == 500);
    h_resp_free(&r);

    /* and after all that, still serving */
    h_chat(port, "{\"model\":\"fast\"," MSGS "}", &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
}

/* What OpenAI takes is not refused: tool and assistant messages (null content with
 * tool_calls, no content), parts; a large number a double holds goes to the backend
 * as the client wrote it. */
static void
test_valid_shapes(void)
{
    static const char body[] =
        "{\"model\":\"fast\",\"max_tokens\":1e30,\"seed\":-9223372036854775808,\"messages\":["
        "{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"what is 2+2\"}]},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"add\",\"arguments\":\"{}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"4\"},"
        "{\"role\":\"assistant\",\"tool_calls\":[]},{\"role\":\"user\",\"content\":[]}]}";
    struct h_resp r;

    h_chat(port, body, &r);
    CHECK(r.status == 200);
    if (r.status != 200)
        fprintf(stderr, "valid_shapes: %ld %s\n", r.status, r.body);
    h_resp_free(&r);
    json_t *last = mock_last_request();
    CHECK(json_real_value(json_object_get(last, "max_tokens")) == 1e30);
    CHECK(json_integer_value(json_object_get(last, "seed")) == INT64_MIN);
    CHECK(json_array_size(json_object_get(last, "messages")) == 6);
    json_decref(last);
}

/* Time to first byte is that of the attempt that answered: here strong fails at once
 * (twice, then the fallback), and fast answers after 800 ms; the access line and the
 * outcome row must not take the failed attempts' first byte. */
static void
test_ttfb_answering_attempt(void)
{
    struct h_resp r;
    char id[128] = "", line[4096], ttfb[64];

    h_chat(port,
           "{\"model\":\"triage:0\"," MSGS ",\"mock\":{\"status\":503,\"by_model\":"
           "{\"mixtral-test\":{\"status\":0,\"latency_ms\":800}}}}",
           &r);
    CHECK(r.status == 200);
    CHECK(h_header(&r, "x-triage-route") && !strcmp(h_header(&r, "x-triage-route"), "fallback"));
    CHECK(h_header(&r, "x-triage-backend") && !strcmp(h_header(&r, "x-triage-backend"), "fast"));
    if (h_header(&r, "x-triage-request-id"))
        snprintf(id, sizeof(id), "%s", h_header(&r, "x-triage-request-id"));
    h_resp_free(&r);
    CHECK(log_line_for("main.log", id, line, sizeof(line)));
    CHECK(log_num(line, "retries") >= 1);
    CHECK(log_num(line, "ttfb_ms") >= 800);
    CHECK(outcome_text("out.db", id, "ttfb_ms", ttfb, sizeof(ttfb)));
    CHECK(strtod(ttfb, NULL) >= 800);
    if (!(log_num(line, "ttfb_ms") >= 800) || !(strtod(ttfb, NULL) >= 800))
        fprintf(stderr, "ttfb: access line %s, outcome row %s\n", line, ttfb);
}

static double
header_num(const struct h_resp *r, const char *name)
{
    const char *v = h_header(r, name);

    return v ? strtod(v, NULL) : NAN;
}

static void
test_routing(void)
{
    struct h_resp r;

    h_chat(port, "{\"model\":\"triage\"," MSGS "}", &r);
    CHECK(r.status == 200);
    const char *b = h_header(&r, "x-triage-backend");
    CHECK(b && (!strcmp(b, "fast") || !strcmp(b, "strong")));
    double score = header_num(&r, "x-triage-score");
    CHECK(score >= 0 && score <= 1);
    CHECK(header_num(&r, "x-triage-threshold") >= 0);
    /* triage's own time, in microseconds: more than nothing, far less than the call */
    double overhead_us = header_num(&r, "x-triage-overhead-us");
    CHECK(overhead_us >= 1 && overhead_us < r.total_ms * 1000);
    h_resp_free(&r);

    /* threshold 0 sends everything to the strong tier, with its overrides merged */
    h_chat(port, "{\"model\":\"triage:0\"," MSGS "}", &r);
    CHECK(r.status == 200);
    CHECK(h_header(&r, "x-triage-backend") && !strcmp(h_header(&r, "x-triage-backend"), "strong"));
    CHECK(header_num(&r, "x-triage-threshold") == 0);
    CHECK(h_header(&r, "x-mock-model") && !strcmp(h_header(&r, "x-mock-model"), "gpt4-test"));
    h_resp_free(&r);
    json_t *last = mock_last_request();
    CHECK(!strcmp(json_string_value(json_object_get(last, "reasoning_effort")), "high"));
    CHECK(!strcmp(json_string_value(json_object_get(last, "model")), "gpt4-test"));
    json_decref(last);

    /* the header override */
    const char *hdrs[] = {"x-triage-threshold: 0", NULL};
    struct h_req req = {.path = "/v1/chat/completions",
                        .body = "{\"model\":\"triage\"," MSGS "}",
                        .headers = hdrs};
    h_do(port, &req, &r);
    CHECK(h_header(&r, "x-triage-backend") && !strcmp(h_header(&r, "x-triage-backend"), "strong"));
    h_resp_free(&r);
    const char *bad[] = {"x-triage-threshold: lots", NULL};
    req.headers = bad;
    h_do(port, &req, &r);
    CHECK(r.status == 400);
    h_resp_free(&r);

    /* routed streams carry the headers too */
    h_chat(port, "{\"model\":\"triage:1\",\"stream\":true," MSGS "}", &r);
    CHECK(r.status == 200);
    CHECK(h_header(&r, "x-triage-score") != NULL);
    CHECK(h_header(&r, "x-triage-backend") != NULL);
    h_resp_free(&r);
}

static void
test_models_health(void)
{
    struct h_resp r;

    h_get(port, "/v1/models", &r);
    CHECK(r.status == 200);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    CHECK(!strcmp(json_string_value(json_object_get(j, "object")), "list"));
    json_t *data = json_object_get(j, "data");
    int seen_triage = 0, seen_fast = 0, seen_strong = 0;
    for (size_t i = 0; i < json_array_size(data); i++) {
        json_t *e = json_array_get(data, i);
        const char *id = json_string_value(json_object_get(e, "id"));
        CHECK(!strcmp(json_string_value(json_object_get(e, "object")), "model"));
        seen_triage += id && !strcmp(id, "triage");
        seen_fast += id && !strcmp(id, "fast");
        seen_strong += id && !strcmp(id, "strong");
    }
    CHECK(seen_triage == 1 && seen_fast == 1 && seen_strong == 1);
    CHECK(json_array_size(data) == 7); /* triage + 6 backends */
    json_decref(j);
    h_resp_free(&r);

    h_get(port, "/v1/models/triage", &r);
    CHECK(r.status == 200 && strstr(r.body, "\"id\":\"triage\""));
    h_resp_free(&r);
    h_get(port, "/v1/models/strong", &r);
    CHECK(r.status == 200 && strstr(r.body, "\"object\":\"model\""));
    h_resp_free(&r);
    h_get(port, "/v1/models/gpt-9", &r);
    CHECK(r.status == 404 && !strcmp(h_error_code(&r), "model_not_found"));
    h_resp_free(&r);

    h_get(port, "/healthz", &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
    h_get(port, "/readyz", &r);
    CHECK(r.status == 200);
    j = json_loadb(r.body, r.len, 0, NULL);
    CHECK(!strcmp(json_string_value(json_object_get(j, "status")), "ready"));
    CHECK(json_array_size(json_object_get(j, "backends")) == 6);
    json_decref(j);
    h_resp_free(&r);
}

/* Retries, fallbacks and the circuit breaker. */
static void
test_retry_fallback_breaker(void)
{
    struct h_resp r;
    long before;

    /* a retryable status is retried once (max_retries = 1), then relayed */
    before = mock_stat("requests");
    h_chat(port, "{\"model\":\"fast\"," MSGS ",\"mock\":{\"status\":503}}", &r);
    CHECK(r.status == 503);
    CHECK(mock_stat("requests") == before + 2); /* two attempts (/_mock/ calls are not counted) */
    h_resp_free(&r);

    /* a routed request falls back: strong twice, then fast twice */
    before = mock_stat("requests");
    h_chat(port, "{\"model\":\"triage:0\"," MSGS ",\"mock\":{\"status\":502}}", &r);
    CHECK(r.status == 502);
    CHECK(h_header(&r, "x-triage-backend") && !strcmp(h_header(&r, "x-triage-backend"), "fast"));
    CHECK(h_header(&r, "x-triage-route") && !strcmp(h_header(&r, "x-triage-route"), "fallback"));
    CHECK(mock_stat("requests") == before + 4);
    h_resp_free(&r);

    /* two failures open flaky's circuit; then it is not even tried */
    for (int i = 0; i < 2; i++) {
        h_chat(port, "{\"model\":\"flaky\"," MSGS ",\"mock\":{\"status\":500}}", &r);
        CHECK(r.status == 500);
        h_resp_free(&r);
    }
    before = mock_stat("requests");
    h_chat(port, "{\"model\":\"flaky\"," MSGS "}", &r);
    CHECK(r.status == 503);
    CHECK(!strcmp(h_error_code(&r), "backend_unavailable"));
    CHECK(mock_stat("requests") == before);
    h_resp_free(&r);
}

/* max_concurrent: a second call while the first runs is refused locally. */
static void
test_max_concurrent(void)
{
    struct h_resp slow, r;
    struct curl_slist *hl;
    struct h_req req = {.path = "/v1/chat/completions",
                        .body = "{\"model\":\"solo\"," MSGS ",\"mock\":{\"latency_ms\":1500}}"};
    CURLM *m = curl_multi_init();
    CURL *e = h_easy(port, &req, &slow, &hl);
    int running = 1;

    curl_multi_add_handle(m, e);
    double t0 = h_now_ms();
    long active = 0;
    while (running && active < 1 && h_now_ms() - t0 < 5000) { /* until it reaches the backend */
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 20, NULL);
        active = mock_stat("active");
    }
    CHECK(active == 1);
    h_chat(port, "{\"model\":\"solo\"," MSGS "}", &r);
    CHECK(r.status == 503);
    CHECK(!strcmp(h_error_code(&r), "backend_overloaded"));
    h_resp_free(&r);
    while (running) {
        curl_multi_perform(m, &running);
        if (running)
            curl_multi_poll(m, NULL, 0, 50, NULL);
    }
    long st = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &st);
    CHECK(st == 200);
    curl_multi_remove_handle(m, e);
    void *ctx;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&ctx);
    free(ctx);
    curl_easy_cleanup(e);
    curl_slist_free_all(hl);
    curl_multi_cleanup(m);
    h_resp_free(&slow);
    /* the slot is free again */
    h_chat(port, "{\"model\":\"solo\"," MSGS "}", &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
}

static void
test_client_abort(void)
{
    struct h_resp r;
    struct h_req req = {
        .path = "/v1/chat/completions",
        .body = "{\"model\":\"fast\",\"stream\":true," MSGS
                ",\"mock\":{\"chunks\":40,\"chunk_delay_ms\":100}}",
        .timeout_ms = 500,
    };
    long before = mock_stat("cancelled");

    h_do(port, &req, &r);
    CHECK(r.rc == CURLE_OPERATION_TIMEDOUT);
    h_resp_free(&r);
    /* the daemon notices at the next chunk and hangs up on the backend */
    long after = before;
    for (int i = 0; i < 50 && after == before; i++) {
        usleep(50000);
        after = mock_stat("cancelled");
    }
    CHECK(after == before + 1);
}

/* A client that gives up on a whole (non-streamed) answer while the backend is still
 * working: triaged notices the hang-up and cancels the backend call, long before the
 * backend would have answered (it takes 5 s here). */
static void
test_client_gone_waiting(void)
{
    struct h_resp r;
    struct h_req req = {
        .path = "/v1/chat/completions",
        .body = "{\"model\":\"fast\"," MSGS ",\"mock\":{\"latency_ms\":5000}}",
        .timeout_ms = 1300,
    };
    long before = mock_stat("cancelled");
    double t0 = h_now_ms();

    h_do(port, &req, &r);
    CHECK(r.rc == CURLE_OPERATION_TIMEDOUT);
    h_resp_free(&r);
    long after = before;
    while (after == before && h_now_ms() - t0 < 4000) {
        usleep(50000);
        after = mock_stat("cancelled");
    }
    CHECK(after == before + 1);
    CHECK(h_now_ms() - t0 < 4000);
}

static void
test_check_config(void)
{
    char out[4096], path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/main.conf", dir);
    char *good[] = {triaged_bin, "--check-config", path, NULL};
    CHECK(h_run(good, out, sizeof(out)) == 0);
    CHECK(strstr(out, "OK") != NULL);

    snprintf(path, sizeof(path), "%s/bad.conf", dir);
    f = fopen(path, "w");
    fprintf(f, "[server]\nlisten = 127.0.0.1\nport = lots\n");
    fclose(f);
    char *bad[] = {triaged_bin, "--check-config", path, NULL};
    CHECK(h_run(bad, out, sizeof(out)) == 1);
    char want[600];
    snprintf(want, sizeof(want), "%s:3:", path);
    CHECK(strstr(out, want) != NULL);

    char *ver[] = {triaged_bin, "--version", NULL};
    CHECK(h_run(ver, out, sizeof(out)) == 0 && strstr(out, "triaged ") == out);
    char *help[] = {triaged_bin, "--help", NULL};
    CHECK(h_run(help, out, sizeof(out)) == 0 && strstr(out, "--check-config"));
    char *junk[] = {triaged_bin, "--frobnicate", NULL};
    CHECK(h_run(junk, out, sizeof(out)) == 2);

    /* a config whose model cannot load refuses to start, saying why */
    snprintf(path, sizeof(path), "%s/nomodel.conf", dir);
    f = fopen(path, "w");
    fprintf(f, "[server]\nport = %u\n[router]\nmodel = missing.tmod\n[backend a]\nurl = "
               "http://127.0.0.1:1/v1\n[backend b]\nurl = http://127.0.0.1:1/v1\n",
            h_free_port());
    fclose(f);
    char *nomodel[] = {triaged_bin, "--config", path, NULL};
    CHECK(h_run(nomodel, out, sizeof(out)) == 1);
    CHECK(strstr(out, "missing.tmod") != NULL);
    char *checkmodel[] = {triaged_bin, "--check-config", path, NULL};
    CHECK(h_run(checkmodel, out, sizeof(out)) == 1);
    CHECK(strstr(out, "missing.tmod") != NULL);
}

static void
test_outcome_log(void)
{
    char path[512];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    struct h_resp r;
    char id[128] = "";

    h_chat(port, "{\"model\":\"fast\",\"stream\":true," MSGS ",\"mock\":{\"chunks\":5}}", &r);
    CHECK(r.status == 200);
    if (h_header(&r, "x-triage-request-id"))
        snprintf(id, sizeof(id), "%s", h_header(&r, "x-triage-request-id"));
    h_resp_free(&r);
    /* the writer flushes every 10 ms; give it time */
    snprintf(path, sizeof(path), "%s/out.db", dir);
    int found = 0;
    for (int i = 0; i < 100 && !found; i++) {
        usleep(50000);
        if (!db && sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
            continue;
        if (sqlite3_prepare_v2(db,
                               "SELECT backend, status, tokens_out, stream, cost_usd, "
                               "prompt_hash, route_reason FROM requests WHERE request_id = ?",
                               -1, &st, NULL) != SQLITE_OK)
            continue;
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            found = 1;
            CHECK(!strcmp((const char *)sqlite3_column_text(st, 0), "fast"));
            CHECK(sqlite3_column_int(st, 1) == 200);
            CHECK(sqlite3_column_int(st, 2) > 0); /* usage came from the stripped chunk */
            CHECK(sqlite3_column_int(st, 3) == 1);
            CHECK(sqlite3_column_double(st, 4) > 0);
            CHECK(sqlite3_column_text(st, 5) && strlen((const char *)sqlite3_column_text(st, 5)) == 64);
            CHECK(!strcmp((const char *)sqlite3_column_text(st, 6), "passthrough"));
        }
        sqlite3_finalize(st);
        st = NULL;
    }
    CHECK(found);
    sqlite3_close(db);
}

/* The hex SHA-256 of json_dumps(messages, JSON_COMPACT | JSON_SORT_KEYS) of body. */
static void
digest_messages(const char *body, char out[65])
{
    json_t *root = json_loads(body, 0, NULL);
    char *text = json_dumps(json_object_get(root, "messages"), JSON_COMPACT | JSON_SORT_KEYS);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    out[0] = '\0';
    if (text && EVP_Digest(text, strlen(text), md, &n, EVP_sha256(), NULL) == 1)
        for (unsigned i = 0; i < n && i < 32; i++)
            snprintf(out + 2 * i, 3, "%02x", md[i]);
    free(text);
    json_decref(root);
}

/* The stored prompt digest is that of the canonical dump (sorted keys, compact), so
 * the same conversation however it is written gets the same digest. */
static void
test_prompt_digest(void)
{
    static const char *const bodies[] = {
        "{\"model\":\"fast\",\"messages\":[{\"role\":\"system\",\"content\":\"be \\\"brief\\\"\\n\\t"
        "\\u0001\\u001f \\u00e9\\u4e2d / \\\\\"},{\"content\":[{\"type\":\"text\",\"text\":\"hi\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\",\"detail\":\"low\"}}],"
        "\"role\":\"user\",\"name\":\"n\",\"zz\":[1,-2,0.5,1e300,true,false,null,{}],"
        "\"b\":\"\",\"a\":{\"ab\":1,\"a\":2,\"aa\":3,\"b\":4,\"c\":5,\"d\":6,\"e\":7,"
        "\"f\":8,\"g\":9,\"h\":10}}]}",
        "{\"model\":\"fast\"," MSGS "}",
    };
    char path[512];

    snprintf(path, sizeof(path), "%s/out.db", dir);
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct h_resp r;
        char id[128] = "", want[65];
        sqlite3 *db = NULL;
        int found = 0;

        digest_messages(bodies[i], want);
        CHECK(strlen(want) == 64);
        h_chat(port, bodies[i], &r);
        CHECK(r.status == 200);
        if (h_header(&r, "x-triage-request-id"))
            snprintf(id, sizeof(id), "%s", h_header(&r, "x-triage-request-id"));
        h_resp_free(&r);
        for (int t = 0; t < 100 && !found; t++) {
            sqlite3_stmt *st = NULL;
            usleep(50000);
            if (!db && sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
                continue;
            if (sqlite3_prepare_v2(db, "SELECT prompt_hash FROM requests WHERE request_id = ?",
                                   -1, &st, NULL) != SQLITE_OK)
                continue;
            sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW) {
                found = 1;
                const char *got = (const char *)sqlite3_column_text(st, 0);
                CHECK(got && !strcmp(got, want));
            }
            sqlite3_finalize(st);
        }
        CHECK(found);
        sqlite3_close(db);
    }
}

static void
test_reload(void)
{
    struct h_resp r;
    char path[512];

    write_conf("main.conf", port, NULL, "triage, auto", 1);
    kill(daemon_pid, SIGHUP);
    int seen = 0;
    for (int i = 0; i < 50 && !seen; i++) {
        usleep(50000);
        h_get(port, "/v1/models", &r);
        seen = strstr(r.body, "\"auto\"") != NULL;
        h_resp_free(&r);
    }
    CHECK(seen);
    h_chat(port, "{\"model\":\"auto:0\"," MSGS "}", &r);
    CHECK(r.status == 200);
    h_resp_free(&r);

    /* a broken config is refused and the running one kept */
    snprintf(path, sizeof(path), "%s/main.conf", dir);
    FILE *f = fopen(path, "a");
    fprintf(f, "[backend broken]\n");
    fclose(f);
    struct h_req req = {.path = "/admin/reload", .body = "{}"};
    h_do(port, &req, &r);
    CHECK(r.status == 500);
    CHECK(!strcmp(h_error_code(&r), "reload_failed"));
    h_resp_free(&r);
    h_get(port, "/v1/models", &r);
    CHECK(strstr(r.body, "\"auto\"") != NULL);
    h_resp_free(&r);
    write_conf("main.conf", port, NULL, "triage", 1);
    h_do(port, &req, &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
    h_get(port, "/v1/models", &r);
    CHECK(strstr(r.body, "\"auto\"") == NULL);
    h_resp_free(&r);
}

/* Feedback and stats go through the outcome log on the thread pool. */
static void
test_feedback_stats(void)
{
    struct h_resp r;
    char body[256], id[128] = "";

    h_chat(port, "{\"model\":\"fast\"," MSGS "}", &r);
    if (h_header(&r, "x-triage-request-id"))
        snprintf(id, sizeof(id), "%s", h_header(&r, "x-triage-request-id"));
    h_resp_free(&r);
    snprintf(body, sizeof(body), "{\"request_id\":\"%s\",\"score\":0.75,\"source\":\"grader\"}",
             id);
    struct h_req req = {.path = "/v1/feedback", .body = body};
    h_do(port, &req, &r);
    CHECK(r.status == 200);
    CHECK(strstr(r.body, "stored") != NULL);
    h_resp_free(&r);
    req.body = "{\"request_id\":\"req_nosuchthing\",\"label\":\"good\"}";
    h_do(port, &req, &r);
    CHECK(r.status == 404);
    h_resp_free(&r);
    req.body = "{\"request_id\":\"x\"}";
    h_do(port, &req, &r);
    CHECK(r.status == 400);
    h_resp_free(&r);

    h_get(port, "/v1/stats?window=1h", &r);
    CHECK(r.status == 200);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    CHECK(json_is_object(j));
    json_decref(j);
    h_resp_free(&r);
    h_get(port, "/v1/stats?window=forever", &r);
    CHECK(r.status == 400);
    h_resp_free(&r);
}

/* The ops endpoints are served through hooks.h. */
static void
test_metrics_dashboard(void)
{
    struct h_resp r;

    h_get(port, "/metrics", &r);
    CHECK(r.status == 200);
    CHECK(strstr(r.body, "triage_requests_total") != NULL);
    CHECK(h_header(&r, "content-type") && strstr(h_header(&r, "content-type"), "text/plain"));
    h_resp_free(&r);
    h_get(port, "/dashboard", &r);
    CHECK(r.status == 200);
    CHECK(h_header(&r, "content-type") && strstr(h_header(&r, "content-type"), "text/html"));
    h_resp_free(&r);
    struct h_req req = {.method = "POST", .path = "/metrics", .body = "{}"};
    h_do(port, &req, &r);
    CHECK(r.status == 405);
    h_resp_free(&r);
}

/* Client keys, admin keys and per-key rate limits, on a daemon of their own. */
static void
test_auth_ratelimit(void)
{
    unsigned p3 = h_free_port();
    pid_t pid;
    struct h_resp r;
    char path[512], hex[2 * AUTH_HASH_LEN + 1];
    FILE *f;

    snprintf(path, sizeof(path), "%s/keys", dir);
    f = fopen(path, "w");
    auth_key_hash_hex("sk-triage-client", 16, hex);
    fprintf(f, "# test keys\nci %s\n", hex);
    fclose(f);
    snprintf(path, sizeof(path), "%s/admin-keys", dir);
    f = fopen(path, "w");
    auth_key_hash_hex("sk-triage-admin", 15, hex);
    fprintf(f, "ops %s\n", hex);
    fclose(f);
    write_conf("auth.conf", p3, "log_format = json", "triage", 0);
    snprintf(path, sizeof(path), "%s/auth.conf", dir);
    f = fopen(path, "a");
    fprintf(f, "[auth]\nkeys_file = keys\nadmin_keys_file = admin-keys\nrate_limit_rpm = 3\n");
    fclose(f);
    if (start_daemon("auth.conf", p3, "auth.log", &pid) < 0) {
        CHECK(!"auth daemon started");
        return;
    }
    const char *good[] = {"Authorization: Bearer sk-triage-client", NULL};
    const char *wrong[] = {"Authorization: Bearer sk-triage-nope", NULL};
    const char *admin[] = {"Authorization: Bearer sk-triage-admin", NULL};
    struct h_req req = {.path = "/v1/models"};

    h_do(p3, &req, &r);
    CHECK(r.status == 401 && !strcmp(h_error_code(&r), "missing_api_key"));
    h_resp_free(&r);
    req.headers = wrong;
    h_do(p3, &req, &r);
    CHECK(r.status == 401 && !strcmp(h_error_code(&r), "invalid_api_key"));
    h_resp_free(&r);
    req.headers = good;
    h_do(p3, &req, &r);
    CHECK(r.status == 200);
    h_resp_free(&r);
    h_get(p3, "/healthz", &r); /* public */
    CHECK(r.status == 200);
    h_resp_free(&r);

    struct h_req rel = {.path = "/admin/reload", .body = "{}", .headers = good};
    h_do(p3, &rel, &r);
    CHECK(r.status == 401);
    h_resp_free(&r);
    rel.headers = admin;
    h_do(p3, &rel, &r);
    CHECK(r.status == 200);
    h_resp_free(&r);

    /* 3 requests a minute: the fourth chat request is refused with Retry-After */
    struct h_req chat = {.path = "/v1/chat/completions",
                         .body = "{\"model\":\"fast\"," MSGS "}",
                         .headers = good};
    long statuses[4];
    for (int i = 0; i < 4; i++) {
        h_do(p3, &chat, &r);
        statuses[i] = r.status;
        if (i == 3) {
            CHECK(!strcmp(h_error_code(&r), "rate_limit_exceeded"));
            CHECK(h_header(&r, "retry-after") && atoi(h_header(&r, "retry-after")) >= 1);
        }
        h_resp_free(&r);
    }
    CHECK(statuses[0] == 200 && statuses[1] == 200 && statuses[2] == 200);
    CHECK(statuses[3] == 429);
    int st = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    /* log_format = json: every line is a JSON object; request lines name the key, never it */
    snprintf(path, sizeof(path), "%s/auth.log", dir);
    f = fopen(path, "r");
    char line[4096];
    int lines = 0, requests = 0;
    while (f && fgets(line, sizeof(line), f)) {
        json_t *j = json_loads(line, 0, NULL);
        lines++;
        CHECK(j != NULL);
        CHECK(strstr(line, "sk-triage-") == NULL);
        if (j && !strcmp(json_string_value(json_object_get(j, "msg")), "request")) {
            requests++;
            CHECK(json_is_string(json_object_get(j, "request_id")));
            CHECK(json_is_integer(json_object_get(j, "status")));
            CHECK(json_is_number(json_object_get(j, "latency_ms")));
            if (!strcmp(json_string_value(json_object_get(j, "path")), "/v1/chat/completions") &&
                json_integer_value(json_object_get(j, "status")) == 200)
                CHECK(!strcmp(json_string_value(json_object_get(j, "key")), "ci"));
        }
        json_decref(j);
    }
    if (f)
        fclose(f);
    CHECK(lines > 0 && requests >= 10);
}

/* The main daemon's log: one logfmt line per request, no keys, no prompt text. */
static void
test_log_lines(void)
{
    char path[512], line[4096];
    int requests = 0;

    snprintf(path, sizeof(path), "%s/main.log", dir);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    while (f && fgets(line, sizeof(line), f)) {
        CHECK(strstr(line, "fast-secret") == NULL);
        CHECK(strstr(line, "client-key") == NULL);
        CHECK(strstr(line, "two plus two") == NULL);
        CHECK(strchr(line, '\n') == line + strlen(line) - 1);
        if (strstr(line, " msg=request ")) {
            requests++;
            CHECK(strstr(line, " request_id=req_") != NULL);
            CHECK(strstr(line, " status=") != NULL);
            CHECK(strstr(line, " latency_ms=") != NULL);
            if (strstr(line, "path=/v1/chat/completions status=200 model=fast"))
                CHECK(strstr(line, " backend=fast") != NULL);
        }
    }
    if (f)
        fclose(f);
    CHECK(requests >= 1);
}

/* SIGTERM while a stream runs: the stream finishes, then the daemon exits 0. Two
 * workers, so SO_REUSEPORT listening is exercised too. */
static void
test_graceful_shutdown(void)
{
    unsigned p2 = h_free_port();
    pid_t pid;
    struct h_resp r;
    struct curl_slist *hl;
    struct h_req req = {
        .path = "/v1/chat/completions",
        .body = "{\"model\":\"fast\",\"stream\":true," MSGS
                ",\"mock\":{\"chunks\":8,\"chunk_delay_ms\":150}}",
    };
    int running = 1, sent = 0;

    write_conf("two.conf", p2, "workers = 2", "triage", 0);
    if (start_daemon("two.conf", p2, "two.log", &pid) < 0) {
        CHECK(!"second daemon started");
        return;
    }
    for (int i = 0; i < 6; i++) { /* both workers answer */
        h_get(p2, "/healthz", &r);
        CHECK(r.status == 200);
        h_resp_free(&r);
    }
    CURLM *m = curl_multi_init();
    CURL *e = h_easy(p2, &req, &r, &hl);
    curl_multi_add_handle(m, e);
    while (running) {
        curl_multi_perform(m, &running);
        if (!sent && r.first_byte_ms >= 0) {
            kill(pid, SIGTERM);
            sent = 1;
        }
        if (running)
            curl_multi_poll(m, NULL, 0, 50, NULL);
    }
    CURLMsg *msg = curl_multi_info_read(m, &running);
    CHECK(msg && msg->data.result == CURLE_OK);
    struct h_sse s;
    h_parse_sse(r.body, &s);
    CHECK(sent && s.done == 1 && s.chunks >= 8);
    curl_multi_remove_handle(m, e);
    void *ctx;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&ctx);
    free(ctx);
    curl_easy_cleanup(e);
    curl_slist_free_all(hl);
    curl_multi_cleanup(m);
    h_resp_free(&r);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* At shutdown_timeout_ms, what still runs is cut off: a stream gets an SSE error event
 * and its connection ends, a request still waiting for its backend gets a 503; both
 * are logged and recorded with the error kind "shutdown", not as client aborts. */
static void
test_shutdown_cut(void)
{
    unsigned p2 = h_free_port();
    pid_t pid;
    struct h_resp rs, rw;
    struct curl_slist *hs, *hw;
    struct h_req sreq = {
        .path = "/v1/chat/completions",
        .body = "{\"model\":\"fast\",\"stream\":true," MSGS
                ",\"mock\":{\"chunks\":100,\"chunk_delay_ms\":100}}",
        .timeout_ms = 30000,
    };
    struct h_req wreq = {
        .path = "/v1/chat/completions",
        .body = "{\"model\":\"fast\"," MSGS ",\"mock\":{\"latency_ms\":10000}}",
        .timeout_ms = 30000,
    };
    char path[512];
    int running = 1, sent = 0;

    write_conf("cut.conf", p2, "shutdown_timeout_ms = 300", "triage", 0);
    snprintf(path, sizeof(path), "%s/cut.conf", dir);
    FILE *f = fopen(path, "a");
    fprintf(f, "[storage]\npath = cut.db\nflush_interval_ms = 10\n");
    fclose(f);
    if (start_daemon("cut.conf", p2, "cut.log", &pid) < 0) {
        CHECK(!"cut daemon started");
        return;
    }
    long active = mock_stat("active");
    CURLM *m = curl_multi_init();
    CURL *es = h_easy(p2, &sreq, &rs, &hs), *ew = h_easy(p2, &wreq, &rw, &hw);
    curl_multi_add_handle(m, es);
    curl_multi_add_handle(m, ew);
    double t0 = h_now_ms();
    while (running) {
        curl_multi_perform(m, &running);
        /* both at the backend, the stream under way: stop */
        if (!sent && rs.first_byte_ms >= 0 && mock_stat("active") >= active + 2) {
            kill(pid, SIGTERM);
            sent = 1;
        }
        if (!sent && h_now_ms() - t0 > 10000)
            break;
        if (running)
            curl_multi_poll(m, NULL, 0, 50, NULL);
    }
    CHECK(sent);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m, &left)))
        if (msg->msg == CURLMSG_DONE)
            (msg->easy_handle == es ? &rs : &rw)->rc = msg->data.result;
    curl_multi_remove_handle(m, es);
    curl_multi_remove_handle(m, ew);
    h_easy_done(es, &rs, hs);
    h_easy_done(ew, &rw, hw);
    curl_multi_cleanup(m);

    struct h_sse s;
    h_parse_sse(rs.body, &s);
    CHECK(rs.status == 200 && s.chunks >= 1 && s.done == 0);
    CHECK(s.error_events == 1 && strstr(rs.body, "\"shutting_down\"") != NULL);
    CHECK(rs.rc == CURLE_PARTIAL_FILE);
    CHECK(rw.status == 503 && !strcmp(h_error_code(&rw), "shutting_down"));
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    const struct h_resp *both[] = {&rs, &rw};
    for (int i = 0; i < 2; i++) {
        char id[128] = "", line[4096], kind[64];
        const char *h = h_header(both[i], "x-triage-request-id");
        snprintf(id, sizeof(id), "%s", h ? h : "");
        CHECK(log_line_for("cut.log", id, line, sizeof(line)));
        CHECK(strstr(line, " error=shutdown") != NULL && strstr(line, " aborted=") == NULL);
        CHECK(outcome_text("cut.db", id, "error_kind", kind, sizeof(kind)));
        CHECK(!strcmp(kind, "shutdown"));
        if (strcmp(kind, "shutdown") || !strstr(line, " error=shutdown"))
            fprintf(stderr, "shutdown_cut: line %s, outcome %s\n", line, kind);
    }
    h_resp_free(&rs);
    h_resp_free(&rw);
}

int
main(int argc, char **argv)
{
    char path[512];

    if (argc != 3) {
        fprintf(stderr, "usage: test_proxy TRIAGED MOCKLLM\n");
        return 2;
    }
    triaged_bin = argv[1];
    mock_bin = argv[2];
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(dir, sizeof(dir), "/tmp/triaged-test-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/m.tmod", dir);
    if (write_model(path) < 0)
        return 1;
    char *margv[] = {mock_bin, "--port", "0", NULL};
    if (h_spawn_mock(margv, &mock_pid, &mock_port) < 0) {
        fprintf(stderr, "cannot start %s\n", mock_bin);
        return 1;
    }
    setenv("TRIAGE_TEST_FAST_KEY", "fast-secret", 1);
    port = h_free_port();
    write_conf("main.conf", port, NULL, "triage", 1);
    if (start_daemon("main.conf", port, "main.log", &daemon_pid) < 0) {
        fprintf(stderr, "cannot start triaged; see %s/main.log\n", dir);
        h_stop(mock_pid, SIGTERM);
        return 1;
    }

    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"passthrough", test_passthrough},
        {"keepalive_reuse", test_keepalive_reuse},
        {"stream", test_stream},
        {"stream_incremental", test_stream_incremental},
        {"concurrent_streams", test_concurrent_streams},
        {"die_mid_stream", test_die_mid_stream},
        {"stream_cut_mid_event", test_stream_cut_mid_event},
        {"backend_header_bytes", test_backend_header_bytes},
        {"bad_input", test_bad_input},
        {"valid_shapes", test_valid_shapes},
        {"body_rewrite", test_body_rewrite},
        {"max_response", test_max_response},
        {"request_parser", test_request_parser},
        {"routing", test_routing},
        {"models_health", test_models_health},
        {"retry_fallback_breaker", test_retry_fallback_breaker},
        {"ttfb_answering_attempt", test_ttfb_answering_attempt},
        {"max_concurrent", test_max_concurrent},
        {"client_abort", test_client_abort},
        {"client_gone_waiting", test_client_gone_waiting},
        {"check_config", test_check_config},
        {"outcome_log", test_outcome_log},
        {"prompt_digest", test_prompt_digest},
        {"feedback_stats", test_feedback_stats},
        {"metrics_dashboard", test_metrics_dashboard},
        {"auth_ratelimit", test_auth_ratelimit},
        {"reload", test_reload},
        {"log_lines", test_log_lines},
        {"graceful_shutdown", test_graceful_shutdown},
        {"shutdown_cut", test_shutdown_cut},
    };
    const char *only = getenv("TEST_ONLY");
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        if (only && !strstr(only, tests[i].name))
            continue;
        int before = h_failures;
        double t0 = h_now_ms();
        tests[i].fn();
        fprintf(stderr, "%s %s (%.0f ms)\n", h_failures == before ? "ok  " : "FAIL",
                tests[i].name, h_now_ms() - t0);
    }

    int st = h_stop(daemon_pid, SIGTERM);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    h_stop(mock_pid, SIGTERM);
    if (h_failures) {
        fprintf(stderr, "%d checks failed; daemon log in %s/main.log\n", h_failures, dir);
    } else {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", dir);
    }
    curl_global_cleanup();
    return h_failures ? 1 : 0;
}
