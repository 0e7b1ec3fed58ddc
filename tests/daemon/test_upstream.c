/* test_upstream.c - daemon/upstream.c on its own: curl multi on a uv loop against mockllm.
 *
 * usage: test_upstream MOCKLLM
 * Checks the callback order for a whole response and a stream, the first-byte
 * deadline, cancelling a running call, a refused connection, and the one mapping of
 * failure kinds to HTTP statuses. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "upstream.h"

struct result {
    long status;
    int headers_done;
    int header_after_done; /* a header callback after on_headers_done: wrong */
    int data_before_headers;
    int data_calls;
    size_t bytes;
    int done;
    enum upstream_error err;
    char content_type[64];
    char body[16384];
};

static void
cb_header(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
    struct result *r = ctx;

    if (r->headers_done)
        r->header_after_done++;
    if (nlen == 12 && !strncasecmp(name, "content-type", 12))
        snprintf(r->content_type, sizeof(r->content_type), "%.*s", (int)vlen, value);
}

static void
cb_headers_done(void *ctx, long status)
{
    struct result *r = ctx;

    r->headers_done++;
    r->status = status;
}

static int
cb_data(void *ctx, const char *buf, size_t len)
{
    struct result *r = ctx;

    if (!r->headers_done)
        r->data_before_headers++;
    r->data_calls++;
    if (r->bytes + len < sizeof(r->body)) {
        memcpy(r->body + r->bytes, buf, len);
        r->body[r->bytes + len] = '\0';
    }
    r->bytes += len;
    return 0;
}

static void
cb_done(void *ctx, enum upstream_error err, const char *detail)
{
    struct result *r = ctx;

    r->done++;
    r->err = err;
}

static unsigned mock_port;

/* Runs one call to the mock's chat endpoint (or url) until it ends. */
static void
run_call(uv_loop_t *loop, struct upstream *u, const char *url, const char *body,
         uint32_t first_byte_ms, struct result *r)
{
    char buf[256];
    struct upstream_request req = {
        .url = url,
        .headers = curl_slist_append(NULL, "Content-Type: application/json"),
        .body = strdup(body),
        .body_len = strlen(body),
        .connect_timeout_ms = 1000,
        .first_byte_timeout_ms = first_byte_ms,
        .idle_timeout_ms = 2000,
        .timeout_ms = 10000,
        .cb = {cb_header, cb_headers_done, cb_data, cb_done},
        .ctx = r,
    };

    if (!url) {
        snprintf(buf, sizeof(buf), "http://127.0.0.1:%u/v1/chat/completions", mock_port);
        req.url = buf;
    }
    memset(r, 0, sizeof(*r));
    struct upstream_call *c = upstream_start(u, &req);
    CHECK(c != NULL);
    while (c && !r->done)
        uv_run(loop, UV_RUN_ONCE);
    CHECK(upstream_active(u) == 0);
}

static void
test_whole_and_stream(uv_loop_t *loop, struct upstream *u)
{
    struct result r;

    run_call(loop, u, NULL,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 0, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_OK);
    CHECK(r.status == 200 && r.headers_done == 1);
    CHECK(r.header_after_done == 0 && r.data_before_headers == 0);
    CHECK(strstr(r.content_type, "application/json") != NULL);
    CHECK(strstr(r.body, "\"chat.completion\"") != NULL);

    run_call(loop, u, NULL,
             "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":"
             "\"hi\"}],\"mock\":{\"chunks\":5,\"chunk_delay_ms\":30}}",
             0, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_OK);
    CHECK(strstr(r.content_type, "text/event-stream") != NULL);
    CHECK(r.data_calls >= 5); /* delivered as it came, not at the end */
    CHECK(strstr(r.body, "data: [DONE]") != NULL);

    /* an error status is a whole response, not a failure */
    run_call(loop, u, NULL,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
             "\"mock\":{\"status\":503}}",
             0, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_OK && r.status == 503);
}

static void
test_failures(uv_loop_t *loop, struct upstream *u)
{
    struct result r;
    char url[128];

    double t0 = h_now_ms();
    run_call(loop, u, NULL,
             "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
             "\"mock\":{\"fail\":\"hang\"}}",
             300, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_ERR_TIMEOUT);
    CHECK(h_now_ms() - t0 < 3000);

    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/chat/completions", h_free_port());
    run_call(loop, u, url, "{}", 0, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_ERR_CONNECT);

    run_call(loop, u, NULL,
             "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":"
             "\"hi\"}],\"mock\":{\"chunks\":5,\"fail\":\"die_mid_stream\",\"die_after\":2}}",
             0, &r);
    CHECK(r.done == 1 && r.err == UPSTREAM_ERR_CLOSED);
    CHECK(r.status == 200 && r.bytes > 0);
}

static void
test_cancel(uv_loop_t *loop, struct upstream *u)
{
    struct result r = {0};
    char url[128];
    const char *body = "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\","
                       "\"content\":\"hi\"}],\"mock\":{\"chunks\":50,\"chunk_delay_ms\":50}}";
    struct upstream_request req = {
        .url = url,
        .headers = NULL,
        .body = strdup(body),
        .body_len = strlen(body),
        .connect_timeout_ms = 1000,
        .timeout_ms = 10000,
        .cb = {cb_header, cb_headers_done, cb_data, cb_done},
        .ctx = &r,
    };

    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/chat/completions", mock_port);
    struct upstream_call *c = upstream_start(u, &req);
    while (r.data_calls < 2)
        uv_run(loop, UV_RUN_ONCE);
    upstream_cancel(c);
    CHECK(upstream_active(u) == 0);
    CHECK(r.done == 0); /* no callback after a cancel */
}

static void
test_status_mapping(void)
{
    CHECK(upstream_error_status(UPSTREAM_ERR_CONNECT) == 502);
    CHECK(upstream_error_status(UPSTREAM_ERR_CLOSED) == 502);
    CHECK(upstream_error_status(UPSTREAM_ERR_PROTOCOL) == 502);
    CHECK(upstream_error_status(UPSTREAM_ERR_TLS) == 502);
    CHECK(upstream_error_status(UPSTREAM_ERR_TIMEOUT) == 504);
    CHECK(upstream_error_status(UPSTREAM_ERR_OVERLOADED) == 503);
    CHECK(upstream_error_status(UPSTREAM_ERR_INTERNAL) == 500);
    CHECK(upstream_error_status((enum upstream_error)99) == 500);
    CHECK(!strcmp(upstream_error_name(UPSTREAM_ERR_TIMEOUT), "timeout"));
    CHECK(!strcmp(upstream_error_name(UPSTREAM_ERR_CONNECT), "unreachable"));
}

static int closed;

static void
on_closed(void *ctx)
{
    closed = 1;
}

int
main(int argc, char **argv)
{
    pid_t mock;
    uv_loop_t loop;

    if (argc != 2) {
        fprintf(stderr, "usage: test_upstream MOCKLLM\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char *margv[] = {argv[1], "--port", "0", NULL};
    if (h_spawn_mock(margv, &mock, &mock_port) < 0) {
        fprintf(stderr, "cannot start %s\n", argv[1]);
        return 1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    uv_loop_init(&loop);
    struct upstream *u = upstream_create(&loop, NULL, NULL);
    CHECK(u != NULL);

    test_status_mapping();
    test_whole_and_stream(&loop, u);
    test_failures(&loop, u);
    test_cancel(&loop, u);

    upstream_destroy(u, on_closed, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(closed == 1);
    CHECK(uv_loop_close(&loop) == 0);
    curl_global_cleanup();
    h_stop(mock, SIGTERM);
    if (h_failures)
        fprintf(stderr, "%d checks failed\n", h_failures);
    return h_failures ? 1 : 0;
}
