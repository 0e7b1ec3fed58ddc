/* test_metrics.c - unit tests for daemon/ops/metrics.c: exact exposition text, bucket math,
 * label handling, gauges, concurrent recording, and `promtool check metrics`.
 *
 * Run with the argument "promtool" it only pipes a rendered registry through
 * promtool and exits 77 (skip) when promtool is not installed. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "ops/ops.h"

/* A request with every optional field unknown. */
static struct metrics_request
req(int backend, const char *reason, int status)
{
    struct metrics_request r = {
        .backend = backend,
        .reason = reason,
        .status = status,
        .latency_s = NAN,
        .ttfb_s = NAN,
        .score = NAN,
        .tokens_in = -1,
        .tokens_out = -1,
        .cost_usd = NAN,
        .overhead_s = NAN,
    };
    return r;
}

/* Returns 1 if text holds line as a whole line. */
static int
has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return 1;
    return 0;
}

static void
assert_line(const char *text, const char *line)
{
    if (!has_line(text, line)) {
        fprintf(stderr, "missing line: %s\n--- rendered:\n%s", line, text);
        fail();
    }
}

static const char *const two[] = {"fast", "strong"};

static void
test_exact_output(void **state)
{
    static const char *const one[] = {"fast"};
    struct metrics *m = metrics_create(one, 1);
    struct metrics_request r = req(0, "threshold", 200);
    r.latency_s = 0.75;
    r.ttfb_s = 0.2;
    r.score = 0.35;
    r.tokens_in = 120;
    r.tokens_out = 30;
    r.cost_usd = 0.000123;
    r.overhead_s = 0.00003;
    metrics_record_request(m, &r);
    metrics_record_retry(m, 0);
    metrics_record_backend_error(m, 0, "timeout");
    metrics_record_key(m, "team-a", 120, 30, 0.000123);

    static const char *const expect_lines[] = {
        "# HELP triage_build_info Build information; the value is always 1.",
        "# TYPE triage_build_info gauge",
        "triage_build_info{version=\"" TRIAGE_VERSION "\"} 1",
        "# HELP triage_requests_total Requests answered, by backend, route reason and "
        "HTTP status.",
        "# TYPE triage_requests_total counter",
        "triage_requests_total{backend=\"fast\",reason=\"threshold\",status=\"200\"} 1",
        "# HELP triage_request_duration_seconds Time from request arrival to the last "
        "byte sent, by backend.",
        "# TYPE triage_request_duration_seconds histogram",
        "triage_request_duration_seconds_bucket{backend=\"fast\",le=\"0.05\"} 0",
        "triage_request_duration_seconds_bucket{backend=\"fast\",le=\"0.1\"} 0",
        "triage_request_duration_seconds_bucket{backend=\"fast\",le=\"0.25\"} 0",
        "triage_request_duration_seconds_bucket{backend=\"fast\",le=\"0.5\"} 0",
        "triage_request_duration_seconds_bucket{backend=\"fast\",le=\"1\"} 1",
        "triage_request_duration_seconds_bucket{backend=\"fast\",le=\"2.5\"} 1",
        "triage_request_duration_seconds_bucket{backend=\"fast\",le=\"5\"} 1",
        "triage_request_duration_seconds_bucket{backend=\"fast\",le=\"10\"} 1",
        "triage_request_duration_seconds_bucket{backend=\"fast\",le=\"20\"} 1",
        "triage_request_duration_seconds_bucket{backend=\"fast\",le=\"30\"} 1",
        "triage_request_duration_seconds_bucket{backend=\"fast\",le=\"60\"} 1",
        "triage_request_duration_seconds_bucket{backend=\"fast\",le=\"120\"} 1",
        "triage_request_duration_seconds_bucket{backend=\"fast\",le=\"300\"} 1",
        "triage_request_duration_seconds_bucket{backend=\"fast\",le=\"+Inf\"} 1",
        "triage_request_duration_seconds_sum{backend=\"fast\"} 0.75",
        "triage_request_duration_seconds_count{backend=\"fast\"} 1",
        "# HELP triage_time_to_first_byte_seconds Time from request arrival to the first "
        "response byte, by backend.",
        "# TYPE triage_time_to_first_byte_seconds histogram",
        "triage_time_to_first_byte_seconds_bucket{backend=\"fast\",le=\"0.01\"} 0",
        "triage_time_to_first_byte_seconds_bucket{backend=\"fast\",le=\"0.025\"} 0",
        "triage_time_to_first_byte_seconds_bucket{backend=\"fast\",le=\"0.05\"} 0",
        "triage_time_to_first_byte_seconds_bucket{backend=\"fast\",le=\"0.1\"} 0",
        "triage_time_to_first_byte_seconds_bucket{backend=\"fast\",le=\"0.25\"} 1",
        "triage_time_to_first_byte_seconds_bucket{backend=\"fast\",le=\"0.5\"} 1",
        "triage_time_to_first_byte_seconds_bucket{backend=\"fast\",le=\"1\"} 1",
        "triage_time_to_first_byte_seconds_bucket{backend=\"fast\",le=\"2.5\"} 1",
        "triage_time_to_first_byte_seconds_bucket{backend=\"fast\",le=\"5\"} 1",
        "triage_time_to_first_byte_seconds_bucket{backend=\"fast\",le=\"10\"} 1",
        "triage_time_to_first_byte_seconds_bucket{backend=\"fast\",le=\"30\"} 1",
        "triage_time_to_first_byte_seconds_bucket{backend=\"fast\",le=\"+Inf\"} 1",
        "triage_time_to_first_byte_seconds_sum{backend=\"fast\"} 0.2",
        "triage_time_to_first_byte_seconds_count{backend=\"fast\"} 1",
        "# HELP triage_routing_score Difficulty score of routed requests (0 easy, 1 hard).",
        "# TYPE triage_routing_score histogram",
        "triage_routing_score_bucket{le=\"0.1\"} 0",
        "triage_routing_score_bucket{le=\"0.2\"} 0",
        "triage_routing_score_bucket{le=\"0.3\"} 0",
        "triage_routing_score_bucket{le=\"0.4\"} 1",
        "triage_routing_score_bucket{le=\"0.5\"} 1",
        "triage_routing_score_bucket{le=\"0.6\"} 1",
        "triage_routing_score_bucket{le=\"0.7\"} 1",
        "triage_routing_score_bucket{le=\"0.8\"} 1",
        "triage_routing_score_bucket{le=\"0.9\"} 1",
        "triage_routing_score_bucket{le=\"1\"} 1",
        "triage_routing_score_bucket{le=\"+Inf\"} 1",
        "triage_routing_score_sum 0.35",
        "triage_routing_score_count 1",
        "# HELP triage_routing_overhead_seconds Time triage itself spent per request: "
        "parse, features, score, forward setup.",
        "# TYPE triage_routing_overhead_seconds histogram",
        "triage_routing_overhead_seconds_bucket{le=\"0.000005\"} 0",
        "triage_routing_overhead_seconds_bucket{le=\"0.00001\"} 0",
        "triage_routing_overhead_seconds_bucket{le=\"0.000025\"} 0",
        "triage_routing_overhead_seconds_bucket{le=\"0.00005\"} 1",
        "triage_routing_overhead_seconds_bucket{le=\"0.0001\"} 1",
        "triage_routing_overhead_seconds_bucket{le=\"0.00025\"} 1",
        "triage_routing_overhead_seconds_bucket{le=\"0.0005\"} 1",
        "triage_routing_overhead_seconds_bucket{le=\"0.001\"} 1",
        "triage_routing_overhead_seconds_bucket{le=\"0.0025\"} 1",
        "triage_routing_overhead_seconds_bucket{le=\"0.005\"} 1",
        "triage_routing_overhead_seconds_bucket{le=\"0.01\"} 1",
        "triage_routing_overhead_seconds_bucket{le=\"0.025\"} 1",
        "triage_routing_overhead_seconds_bucket{le=\"+Inf\"} 1",
        "triage_routing_overhead_seconds_sum 0.00003",
        "triage_routing_overhead_seconds_count 1",
        "# HELP triage_tokens_total Tokens reported in upstream usage, by backend and direction.",
        "# TYPE triage_tokens_total counter",
        "triage_tokens_total{backend=\"fast\",direction=\"input\"} 120",
        "triage_tokens_total{backend=\"fast\",direction=\"output\"} 30",
        "# HELP triage_cost_usd_total Estimated spend in US dollars from token usage and "
        "backend prices.",
        "# TYPE triage_cost_usd_total counter",
        "triage_cost_usd_total{backend=\"fast\"} 0.000123",
        "# HELP triage_backend_errors_total Failed upstream attempts, by backend and error kind.",
        "# TYPE triage_backend_errors_total counter",
        "triage_backend_errors_total{backend=\"fast\",kind=\"timeout\"} 1",
        "# HELP triage_retries_total Upstream attempts retried before the first byte, by backend.",
        "# TYPE triage_retries_total counter",
        "triage_retries_total{backend=\"fast\"} 1",
        "# HELP triage_fallbacks_total Requests moved from a failing backend to the next one.",
        "# TYPE triage_fallbacks_total counter",
        "# HELP triage_key_requests_total Requests by client key name (keys_file; past 63 "
        "names: other).",
        "# TYPE triage_key_requests_total counter",
        "triage_key_requests_total{key=\"team-a\"} 1",
        "# HELP triage_key_tokens_total Tokens reported in upstream usage, by client key name "
        "and direction.",
        "# TYPE triage_key_tokens_total counter",
        "triage_key_tokens_total{key=\"team-a\",direction=\"input\"} 120",
        "triage_key_tokens_total{key=\"team-a\",direction=\"output\"} 30",
        "# HELP triage_key_cost_usd_total Estimated spend in US dollars by client key name.",
        "# TYPE triage_key_cost_usd_total counter",
        "triage_key_cost_usd_total{key=\"team-a\"} 0.000123",
    };
    char expect[8192] = "";
    for (size_t i = 0; i < sizeof(expect_lines) / sizeof(expect_lines[0]); i++) {
        strcat(expect, expect_lines[i]);
        strcat(expect, "\n");
    }
    size_t len = 0;
    char *text = metrics_render(m, &len);
    assert_string_equal(text, expect);
    assert_int_equal(len, strlen(expect));
    free(text);
    metrics_destroy(m);
}

/* A value on a bound falls in that bucket (le is inclusive); above the last bound only
 * +Inf counts it; buckets are cumulative and +Inf equals _count. */
static void
test_bucket_math(void **state)
{
    struct metrics *m = metrics_create(two, 2);
    const double lat[] = {0.05, 0.0500001, 1, 300, 300.5, 0};
    for (size_t i = 0; i < sizeof(lat) / sizeof(lat[0]); i++) {
        struct metrics_request r = req(1, "threshold", 200);
        r.latency_s = lat[i];
        metrics_record_request(m, &r);
    }
    char *t = metrics_render(m, NULL);
    const char *p = "triage_request_duration_seconds_bucket{backend=\"strong\",";
    char line[256];
    struct {
        const char *le;
        int n;
    } want[] = {{"0.05", 2}, {"0.1", 3}, {"0.5", 3}, {"1", 4}, {"120", 4}, {"300", 5}, {"+Inf", 6}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        snprintf(line, sizeof(line), "%sle=\"%s\"} %d", p, want[i].le, want[i].n);
        assert_line(t, line);
    }
    assert_line(t, "triage_request_duration_seconds_count{backend=\"strong\"} 6");
    /* 0.05 + 0.0500001 + 1 + 300 + 300.5 + 0, summed exactly in 1e-9 units */
    assert_line(t, "triage_request_duration_seconds_sum{backend=\"strong\"} 601.6000001");
    /* the other backend is rendered with zero buckets */
    assert_line(t, "triage_request_duration_seconds_bucket{backend=\"fast\",le=\"+Inf\"} 0");
    assert_line(t, "triage_request_duration_seconds_sum{backend=\"fast\"} 0");
    /* no "none" child without data */
    assert_null(strstr(t, "duration_seconds_count{backend=\"none\"}"));
    free(t);

    /* scores are clamped into [0,1]; exact bounds are inclusive */
    const double sc[] = {-0.5, 0.1, 0.3, 1, 7};
    for (size_t i = 0; i < 5; i++) {
        struct metrics_request r = req(0, "threshold", 200);
        r.score = sc[i];
        metrics_record_request(m, &r);
    }
    t = metrics_render(m, NULL);
    assert_line(t, "triage_routing_score_bucket{le=\"0.1\"} 2");
    assert_line(t, "triage_routing_score_bucket{le=\"0.2\"} 2");
    assert_line(t, "triage_routing_score_bucket{le=\"0.3\"} 3");
    assert_line(t, "triage_routing_score_bucket{le=\"0.9\"} 3");
    assert_line(t, "triage_routing_score_bucket{le=\"1\"} 5");
    assert_line(t, "triage_routing_score_bucket{le=\"+Inf\"} 5");
    assert_line(t, "triage_routing_score_sum 2.4");
    assert_line(t, "triage_routing_score_count 5");
    free(t);
    metrics_destroy(m);
}

/* Unknown values are left out; backend -1 is "none"; label values are escaped. */
static void
test_labels_and_unknowns(void **state)
{
    static const char *const odd[] = {"we\"ird\\na\nme"};
    struct metrics *m = metrics_create(odd, 1);
    metrics_record_request(m, &(struct metrics_request){.backend = -1,
                                                        .reason = NULL,
                                                        .status = 401,
                                                        .latency_s = 0.001,
                                                        .ttfb_s = NAN,
                                                        .score = NAN,
                                                        .tokens_in = -1,
                                                        .tokens_out = -1,
                                                        .cost_usd = NAN,
                                                        .overhead_s = NAN});
    struct metrics_request r = req(0, "pass\"through", 0);
    metrics_record_request(m, &r);
    metrics_record_request(m, &r);
    metrics_record_fallback(m, 0, -1);
    metrics_record_retry(m, 5); /* out of range: "none" */
    metrics_record_backend_error(m, 0, NULL);
    assert_int_equal(metrics_backend_index(m, "we\"ird\\na\nme"), 0);
    assert_int_equal(metrics_backend_index(m, "fast"), -1);

    char *t = metrics_render(m, NULL);
    assert_line(t, "triage_requests_total{backend=\"none\",reason=\"none\",status=\"401\"} 1");
    assert_line(t, "triage_requests_total{backend=\"we\\\"ird\\\\na\\nme\","
                   "reason=\"pass\\\"through\",status=\"0\"} 2");
    assert_line(t, "triage_request_duration_seconds_count{backend=\"none\"} 1");
    assert_line(t, "triage_request_duration_seconds_bucket{backend=\"none\",le=\"0.05\"} 1");
    assert_line(t, "triage_request_duration_seconds_count{backend=\"we\\\"ird\\\\na\\nme\"} 0");
    assert_line(t, "triage_routing_score_count 0");
    assert_line(t, "triage_routing_overhead_seconds_count 0");
    assert_line(t, "triage_tokens_total{backend=\"we\\\"ird\\\\na\\nme\",direction=\"input\"} 0");
    assert_null(strstr(t, "triage_tokens_total{backend=\"none\""));
    assert_line(t, "triage_fallbacks_total{from=\"we\\\"ird\\\\na\\nme\",to=\"none\"} 1");
    assert_line(t, "triage_retries_total{backend=\"none\"} 1");
    assert_line(t, "triage_backend_errors_total{backend=\"we\\\"ird\\\\na\\nme\",kind=\"other\"} 1");
    /* no gauges callback: no gauge families */
    assert_null(strstr(t, "triage_circuit_state"));
    assert_null(strstr(t, "triage_log_queue_depth"));
    assert_null(strstr(t, "triage_model_info"));
    free(t);
    metrics_destroy(m);
}

/* Past the intern tables' capacity, new reasons, kinds and statuses count as "other". */
static void
test_overflow_to_other(void **state)
{
    struct metrics *m = metrics_create(two, 2);
    char name[32];
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof(name), "reason%d", i);
        metrics_record_request(m, &(struct metrics_request){.backend = 0,
                                                            .reason = name,
                                                            .status = 200 + i,
                                                            .latency_s = NAN,
                                                            .ttfb_s = NAN,
                                                            .score = NAN,
                                                            .cost_usd = NAN,
                                                            .overhead_s = NAN});
        snprintf(name, sizeof(name), "kind%d", i);
        metrics_record_backend_error(m, 1, name);
    }
    metrics_record_request(m, &(struct metrics_request){.backend = 0,
                                                        .reason = "x",
                                                        .status = 12345,
                                                        .latency_s = NAN,
                                                        .ttfb_s = NAN,
                                                        .score = NAN,
                                                        .cost_usd = NAN,
                                                        .overhead_s = NAN});
    char *t = metrics_render(m, NULL);
    /* slots 1..15 hold reason0..reason14; reason15.. are "other" */
    assert_line(t, "triage_requests_total{backend=\"fast\",reason=\"reason14\",status=\"214\"} 1");
    assert_null(strstr(t, "reason=\"reason15\""));
    assert_line(t, "triage_backend_errors_total{backend=\"strong\",kind=\"kind14\"} 1");
    assert_line(t, "triage_backend_errors_total{backend=\"strong\",kind=\"other\"} 25");
    assert_null(strstr(t, "kind=\"kind15\""));
    /* reasons 15..39 with statuses 215..239: statuses 215..222 got slots, the rest "other" */
    assert_line(t, "triage_requests_total{backend=\"fast\",reason=\"other\",status=\"222\"} 1");
    /* ... plus "x" (no reason slot left either) with an out-of-range status */
    assert_line(t, "triage_requests_total{backend=\"fast\",reason=\"other\",status=\"other\"} 18");
    assert_null(strstr(t, "reason=\"x\""));
    free(t);
    metrics_destroy(m);
}

static void
fill_gauges(void *ud, struct metrics_gauges *g)
{
    int *calls = ud;
    (*calls)++;
    assert_int_equal(g->n_backends, 2);
    assert_int_equal(g->circuit[0], METRICS_CIRCUIT_UNKNOWN);
    assert_int_equal(g->log_queue_depth, -1);
    assert_true(isnan(g->threshold));
    g->circuit[0] = METRICS_CIRCUIT_CLOSED;
    g->circuit[1] = METRICS_CIRCUIT_OPEN;
    g->inflight = 3;
    g->log_queue_depth = 17;
    g->log_written = 1000;
    g->log_dropped = 4;
    g->log_failed = 0;
    snprintf(g->model_version, sizeof(g->model_version), "%s", "a1b2c3\"d");
    g->model_loaded_time = 1764000000.5;
    g->threshold = 0.62;
}

static void
test_gauges(void **state)
{
    struct metrics *m = metrics_create(two, 2);
    int calls = 0;
    metrics_set_gauges(m, fill_gauges, &calls);
    char *t = metrics_render(m, NULL);
    assert_int_equal(calls, 1);
    assert_line(t, "# TYPE triage_circuit_state gauge");
    assert_line(t, "triage_circuit_state{backend=\"fast\"} 0");
    assert_line(t, "triage_circuit_state{backend=\"strong\"} 2");
    assert_line(t, "triage_inflight_requests 3");
    assert_line(t, "triage_log_queue_depth 17");
    assert_line(t, "# TYPE triage_log_written_rows_total counter");
    assert_line(t, "triage_log_written_rows_total 1000");
    assert_line(t, "triage_log_dropped_rows_total 4");
    assert_line(t, "triage_log_failed_rows_total 0");
    assert_line(t, "triage_model_info{version=\"a1b2c3\\\"d\"} 1");
    assert_line(t, "triage_model_loaded_timestamp_seconds 1764000000.5");
    assert_line(t, "triage_routing_threshold 0.62");
    free(t);
    metrics_destroy(m);
}

/* A callback may point circuit at its own array (as daemon/main.c does); the render
 * must read it, bounded by the backends it knows, and must not free it. */
static void
own_array_gauges(void *ud, struct metrics_gauges *g)
{
    static int mine[3] = {METRICS_CIRCUIT_HALF_OPEN, METRICS_CIRCUIT_CLOSED, METRICS_CIRCUIT_OPEN};
    (void)ud;
    g->circuit = mine;
    g->n_backends = 3; /* one more than the registry knows: ignored */
}

static void
test_gauges_own_array(void **state)
{
    struct metrics *m = metrics_create(two, 2);
    metrics_set_gauges(m, own_array_gauges, NULL);
    for (int k = 0; k < 2; k++) {
        char *t = metrics_render(m, NULL);
        assert_line(t, "triage_circuit_state{backend=\"fast\"} 1");
        assert_line(t, "triage_circuit_state{backend=\"strong\"} 0");
        assert_null(strstr(t, "} 2\ntriage_inflight"));
        assert_null(strstr(t, "triage_inflight_requests")); /* left unknown */
        free(t);
    }
    metrics_destroy(m);
}

struct worker {
    struct metrics *m;
    int id;
};

enum { THREADS = 6, PER_THREAD = 20000 };

static void *
record_many(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        struct metrics_request r = req(i % 2, i % 3 ? "threshold" : "passthrough", 200);
        r.latency_s = 0.5;
        r.tokens_in = 10;
        r.tokens_out = 1;
        r.cost_usd = 0.000001;
        r.score = 0.5;
        r.overhead_s = 0.00002;
        metrics_record_request(w->m, &r);
        if (i % 100 == 0)
            metrics_record_backend_error(w->m, w->id % 2, w->id % 2 ? "timeout" : "connect");
    }
    return NULL;
}

/* Six threads record concurrently while the main thread renders; the totals are exact
 * and every render is internally consistent. */
static void
test_concurrent(void **state)
{
    struct metrics *m = metrics_create(two, 2);
    pthread_t th[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){m, i};
        assert_int_equal(pthread_create(&th[i], NULL, record_many, &w[i]), 0);
    }
    for (int k = 0; k < 20; k++) {
        char *t = metrics_render(m, NULL);
        assert_non_null(strstr(t, "# TYPE triage_requests_total counter\n"));
        free(t);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);

    char *t = metrics_render(m, NULL);
    char line[160];
    /* per thread: i%2==0 -> fast; threshold when i%3 != 0 */
    int fast_thr = 0, fast_pass = 0;
    for (int i = 0; i < PER_THREAD; i += 2)
        if (i % 3)
            fast_thr++;
        else
            fast_pass++;
    snprintf(line, sizeof(line),
             "triage_requests_total{backend=\"fast\",reason=\"threshold\",status=\"200\"} %d",
             fast_thr * THREADS);
    assert_line(t, line);
    snprintf(line, sizeof(line),
             "triage_requests_total{backend=\"fast\",reason=\"passthrough\",status=\"200\"} %d",
             fast_pass * THREADS);
    assert_line(t, line);
    snprintf(line, sizeof(line), "triage_routing_score_count %d", THREADS * PER_THREAD);
    assert_line(t, line);
    snprintf(line, sizeof(line), "triage_routing_score_sum %d", THREADS * PER_THREAD / 2);
    assert_line(t, line);
    snprintf(line, sizeof(line), "triage_tokens_total{backend=\"strong\",direction=\"input\"} %d",
             THREADS * PER_THREAD / 2 * 10);
    assert_line(t, line);
    /* 60000 requests * 1e-6 USD, summed exactly */
    assert_line(t, "triage_cost_usd_total{backend=\"strong\"} 0.06");
    snprintf(line, sizeof(line), "triage_backend_errors_total{backend=\"strong\",kind=\"timeout\"} %d",
             THREADS / 2 * PER_THREAD / 100);
    assert_line(t, line);
    free(t);
    metrics_destroy(m);
}

/* A registry with every family populated, for promtool. */
static struct metrics *
populated(int *calls)
{
    struct metrics *m = metrics_create(two, 2);
    for (int i = 0; i < 50; i++) {
        struct metrics_request r = req(i % 2, i % 5 ? "threshold" : "passthrough",
                                       i % 7 ? 200 : 502);
        r.latency_s = 0.1 * i;
        r.ttfb_s = 0.01 * i;
        r.score = i / 50.0;
        r.tokens_in = 100 + i;
        r.tokens_out = 10 + i;
        r.cost_usd = 0.0001 * i;
        r.overhead_s = 0.000001 * i;
        metrics_record_request(m, &r);
    }
    metrics_record_request(m, &(struct metrics_request){.backend = -1,
                                                        .reason = NULL,
                                                        .status = 400,
                                                        .latency_s = 0.0001,
                                                        .ttfb_s = NAN,
                                                        .score = NAN,
                                                        .cost_usd = NAN,
                                                        .overhead_s = NAN});
    metrics_record_retry(m, 1);
    metrics_record_fallback(m, 1, 0);
    metrics_record_backend_error(m, 1, "timeout");
    metrics_set_gauges(m, fill_gauges, calls);
    return m;
}

/* Pipes a populated registry through `promtool check metrics`; 77 when absent. */
static int
run_promtool(void)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0) {
        printf("promtool not found: skipping (Debian package 'prometheus')\n");
        return 77;
    }
    int calls = 0;
    struct metrics *m = populated(&calls);
    size_t len;
    char *t = metrics_render(m, &len);
    metrics_destroy(m);

    char path[] = "/tmp/triage-metrics-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, t, len) != (ssize_t)len) {
        perror("temp file");
        free(t);
        return 1;
    }
    close(fd);
    free(t);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    char out[4096];
    size_t n = p ? fread(out, 1, sizeof(out) - 1, p) : 0;
    out[n] = '\0';
    int st = p ? pclose(p) : -1;
    unlink(path);
    int ok = st == 0 && n == 0; /* promtool prints nothing when the text is clean */
    printf("promtool check metrics: exit %d, %s\n%s", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
           ok ? "no problems found" : "PROBLEMS:", out);
    return ok ? 0 : 1;
}

int
main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "promtool"))
        return run_promtool();
    if (argc > 1 && !strcmp(argv[1], "dump")) { /* for eyeballing */
        int calls = 0;
        struct metrics *m = populated(&calls);
        char *t = metrics_render(m, NULL);
        fputs(t, stdout);
        free(t);
        metrics_destroy(m);
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_output),   cmocka_unit_test(test_bucket_math),
        cmocka_unit_test(test_labels_and_unknowns), cmocka_unit_test(test_overflow_to_other),
        cmocka_unit_test(test_gauges),         cmocka_unit_test(test_gauges_own_array),
        cmocka_unit_test(test_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
