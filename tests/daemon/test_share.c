/* test_share.c - through the real triaged: strong_share holds the share of strong calls on
 * the route's live scores (config and x-triage-strong-share), tier shares hold each tier's,
 * /metrics and /v1/stats report target and realised share, and a fixed threshold routes
 * exactly as before.
 *
 * usage: test_share TRIAGED MOCKLLM MAKE_MODEL
 * Each case starts its own triaged (one worker) with a generated config in front of one
 * mockllm; the tiny test model scores the made-up prompts below over a few values only,
 * so ties are the rule and the tie-breaker is what holds the share. */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <jansson.h>

#include "harness.h"

static struct h_env env;

static const char *const words[] = {
    "what", "is", "plus", "prove", "that", "the", "series", "of", "eigenvalues",
    "converges", "uniformly", "hello", "sum", "integral", "list", "sort", "capital",
    "France", "matrix", "lemma",
};

/* A chat body for prompt number i (same i, same prompt), for model. */
static void
prompt_body(char *out, size_t len, const char *model, unsigned i)
{
    uint64_t s = i * 6364136223846793005ull + 1442695040888963407ull;
    char text[256] = "";
    unsigned n = 3 + (unsigned)(s >> 60);

    for (unsigned k = 0; k < n; k++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s%s %u ", k ? " " : "",
                 words[(s >> 33) % (sizeof(words) / sizeof(words[0]))], (unsigned)(s >> 54));
    }
    snprintf(out, len, "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
             model, text);
}

struct tally {
    int n, strong, mid, bad;
    double min_score, max_score;
};

/* Sends n prompts (from prompt number first) with the given headers; counts strong picks
 * from x-triage-backend and checks each reply's x-triage-route is route. */
static void
send_prompts(unsigned port, const char *model, const char *const *headers, unsigned first,
             int n, const char *route, struct tally *t)
{
    char body[512];

    memset(t, 0, sizeof(*t));
    t->min_score = 2;
    t->max_score = -1;
    for (int i = 0; i < n; i++) {
        struct h_resp r;
        struct h_req req = {.path = "/v1/chat/completions", .body = body, .headers = headers};
        prompt_body(body, sizeof(body), model, first + (unsigned)i);
        h_do(port, &req, &r);
        const char *b = h_header(&r, "x-triage-backend");
        if (r.status != 200 || !b) {
            t->bad++;
            h_resp_free(&r);
            continue;
        }
        t->n++;
        t->strong += !strcmp(b, "strong");
        t->mid += !strcmp(b, "mid");
        const char *rt = h_header(&r, "x-triage-route");
        if (!rt || strcmp(rt, route))
            t->bad++;
        const char *sc = h_header(&r, "x-triage-score");
        double score = sc ? atof(sc) : NAN;
        if (score < t->min_score)
            t->min_score = score;
        if (score > t->max_score)
            t->max_score = score;
        h_resp_free(&r);
    }
}

static void
stop(pid_t pid)
{
    int status = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Returns the value of the sample line starting with prefix in /metrics, or NaN. */
static double
metric(unsigned port, const char *prefix)
{
    struct h_resp r;
    double v = NAN;

    h_get(port, "/metrics", &r);
    const char *p = r.body ? strstr(r.body, prefix) : NULL;
    if (p)
        v = atof(p + strlen(prefix));
    h_resp_free(&r);
    return v;
}

/* strong_share = 0.3 in the config: 400 requests, the realised share within 5 points. */
static void
test_config_share(void)
{
    pid_t pid;
    struct tally t;
    unsigned port = h_start_triaged(&env, "share-conf", NULL, NULL,
                                    "[router]\nstrong_share = 0.3\nshare_window = 200\n", &pid);

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    send_prompts(port, "triage", NULL, 0, 400, "share", &t);
    double got = (double)t.strong / t.n;
    fprintf(stderr, "config share 0.30: %d of %d strong (%.3f), scores %.4f..%.4f\n", t.strong,
            t.n, got, t.min_score, t.max_score);
    CHECK(t.bad == 0 && t.n == 400);
    CHECK(fabs(got - 0.3) <= 0.05);

    double target = metric(port, "triage_route_strong_share{route=\"triage\",kind=\"target\"} ");
    double recent = metric(port, "triage_route_strong_share{route=\"triage\",kind=\"recent\"} ");
    double total = metric(port, "triage_route_strong_share{route=\"triage\",kind=\"total\"} ");
    double reqs = metric(port, "triage_route_share_requests_total{route=\"triage\"} ");
    fprintf(stderr, "metrics: target %.3f recent %.3f total %.3f requests %.0f\n", target, recent,
            total, reqs);
    CHECK(fabs(target - 0.3) < 1e-6);
    CHECK(fabs(recent - 0.3) <= 0.05);
    CHECK(fabs(total - got) < 1e-3);
    CHECK(reqs == 400);

    /* a per-request share uses the same window with its own target */
    const char *const h70[] = {"x-triage-strong-share: 0.7", NULL};
    send_prompts(port, "triage", h70, 400, 200, "share", &t);
    got = (double)t.strong / t.n;
    fprintf(stderr, "x-triage-strong-share 0.70: %d of %d strong (%.3f)\n", t.strong, t.n, got);
    CHECK(t.bad == 0 && fabs(got - 0.7) <= 0.07);

    /* fixed thresholds win over the share, as before: the suffix, then the header */
    send_prompts(port, "triage:0", NULL, 600, 20, "threshold", &t);
    CHECK(t.bad == 0 && t.strong == 20);
    send_prompts(port, "triage:1", NULL, 620, 20, "threshold", &t);
    CHECK(t.bad == 0 && t.strong == 0);
    const char *const h0[] = {"x-triage-threshold: 0", "x-triage-strong-share: 0.1", NULL};
    send_prompts(port, "triage", h0, 640, 20, "threshold", &t);
    CHECK(t.bad == 0 && t.strong == 20);
    stop(pid);
}

/* policy = tiers with tiers = fast:40%, mid:40%, strong: each tier's share held within 6
 * points over 500 requests; /metrics and /v1/stats report target, realised and cut. */
static void
test_tier_shares(void)
{
    pid_t pid;
    struct tally t;
    char tail[512];

    snprintf(tail, sizeof(tail),
             "[router]\npolicy = tiers\ntiers = fast:40%%, mid:40%%, strong\nshare_window = 200\n"
             "[backend mid]\nurl = http://127.0.0.1:%u/v1\nhead = strong\n", env.mock_port);
    unsigned port = h_start_triaged(&env, "share-tiers", NULL, "path = tiers.db\n", tail, &pid);
    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    send_prompts(port, "triage", NULL, 0, 500, "share", &t);
    double got[3] = {(double)(t.n - t.mid - t.strong) / t.n, (double)t.mid / t.n,
                     (double)t.strong / t.n};
    fprintf(stderr, "tiers 40/40/20: %.3f %.3f %.3f of %d, scores %.4f..%.4f\n", got[0], got[1],
            got[2], t.n, t.min_score, t.max_score);
    CHECK(t.bad == 0 && t.n == 500);
    CHECK(fabs(got[0] - 0.4) <= 0.06 && fabs(got[1] - 0.4) <= 0.06 && fabs(got[2] - 0.2) <= 0.06);

    static const char *const names[3] = {"fast", "mid", "strong"};
    static const double targets[3] = {0.4, 0.4, 0.2};
    for (int i = 0; i < 3; i++) {
        char key[160];
        snprintf(key, sizeof(key),
                 "triage_route_tier_share{route=\"triage\",tier=\"%s\",kind=\"target\"} ",
                 names[i]);
        CHECK(fabs(metric(port, key) - targets[i]) < 1e-6);
        snprintf(key, sizeof(key),
                 "triage_route_tier_share{route=\"triage\",tier=\"%s\",kind=\"total\"} ",
                 names[i]);
        CHECK(fabs(metric(port, key) - got[i]) < 1e-3);
    }
    double cut0 = metric(port, "triage_route_cut{route=\"triage\",tier=\"fast\"} ");
    double cut1 = metric(port, "triage_route_cut{route=\"triage\",tier=\"mid\"} ");
    fprintf(stderr, "cuts %.4f %.4f\n", cut0, cut1);
    CHECK(cut0 >= 0 && cut0 <= cut1 && cut1 <= 1.001);
    /* no fixed threshold is in force: the stale gauge is gone */
    CHECK(isnan(metric(port, "triage_routing_threshold ")));

    struct h_resp r;
    h_get(port, "/v1/stats?window=1h", &r);
    json_t *j = r.body ? json_loads(r.body, 0, NULL) : NULL;
    json_t *route = json_array_get(json_object_get(j, "share_routes"), 0);
    json_t *tiers = json_object_get(route, "tiers");
    CHECK(r.status == 200 && json_is_array(tiers) && json_array_size(tiers) == 3);
    const char *rn = json_string_value(json_object_get(route, "route"));
    CHECK(rn && !strcmp(rn, "triage"));
    CHECK(json_integer_value(json_object_get(route, "requests")) == 500);
    for (size_t i = 0; i < json_array_size(tiers) && i < 3; i++) {
        json_t *ti = json_array_get(tiers, i);
        const char *b = json_string_value(json_object_get(ti, "backend"));
        CHECK(b && !strcmp(b, names[i]));
        CHECK(fabs(json_number_value(json_object_get(ti, "target")) - targets[i]) < 1e-6);
        CHECK(fabs(json_number_value(json_object_get(ti, "total")) - got[i]) < 1e-3);
        CHECK(fabs(json_number_value(json_object_get(ti, "recent")) - targets[i]) <= 0.08);
        CHECK(i == 2 ? json_is_null(json_object_get(ti, "cut"))
                     : json_is_number(json_object_get(ti, "cut")));
    }
    json_decref(j);
    h_resp_free(&r);
    stop(pid);
}

/* No strong_share: the configured threshold decides, score >= threshold is strong. */
static void
test_fixed_threshold(void)
{
    pid_t pid;
    char body[512];
    unsigned port = h_start_triaged(&env, "share-fixed", NULL, NULL,
                                    "[router]\nthreshold = 0.55\n", &pid);
    int n = 0, agree = 0;

    if (!port) {
        CHECK(!"triaged started");
        return;
    }
    for (unsigned i = 0; i < 100; i++) {
        struct h_resp r;
        prompt_body(body, sizeof(body), "triage", i);
        h_chat(port, body, &r);
        const char *v = h_header(&r, "x-triage-backend");
        int strong = v && !strcmp(v, "strong");
        v = h_header(&r, "x-triage-score");
        double s = v ? atof(v) : NAN;
        v = h_header(&r, "x-triage-threshold");
        int thr_ok = v && !strcmp(v, "0.5500");
        v = h_header(&r, "x-triage-route");
        int route_ok = v && !strcmp(v, "threshold");
        if (r.status == 200) {
            n++;
            /* the score header is rounded to 4 places: compare away from the cut */
            agree += thr_ok && route_ok && (fabs(s - 0.55) < 1e-4 || strong == (s >= 0.55));
        }
        h_resp_free(&r);
    }
    CHECK(n == 100 && agree == 100);
    /* the route's window saw the scores, but nothing was routed by share */
    CHECK(metric(port, "triage_route_share_requests_total{route=\"triage\"} ") == 0);
    stop(pid);
}

int
main(int argc, char **argv)
{
    int rc = h_env_setup(&env, "share", argc, argv);

    if (rc)
        return rc;
    if (h_env_make_model(&env, NULL) < 0)
        return 1;
    test_config_share();
    test_tier_shares();
    test_fixed_threshold();
    return h_env_finish(&env);
}
