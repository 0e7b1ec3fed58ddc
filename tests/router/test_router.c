/* test_router.c - unit tests for router/: training, model files (round trip, corruption), policies, calibration, metrics, threads. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "router-int.h"
#include "router.h"

static const char *requests[] = {
    "{\"messages\":[{\"role\":\"user\",\"content\":\"What colour is the sky?\"}]}",
    "{\"messages\":[{\"role\":\"system\",\"content\":\"You are a mathematician.\"},"
    "{\"role\":\"user\",\"content\":\"Prove that $\\\\int_0^1 x^2 dx = 1/3$ and derive the series.\"}]}",
    "{\"prompt\":\"Find all primes p such that p^2 + 2 is prime. A. 3 B. 5 C. 7 D. none\"}",
    "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}],"
    "\"max_tokens\":5}",
};

/* A small synthetic training set: prompts about proofs need the strong head. */
static struct router_dataset *
make_dataset(unsigned bits)
{
    struct router_dataset *d = router_dataset_new(bits);
    char buf[512];

    assert_non_null(d);
    for (int i = 0; i < 600; i++) {
        int hard = i % 3 == 0;
        snprintf(buf, sizeof(buf),
                 "{\"prompt\":\"%s number %d about %s\",\"outcomes\":{\"weak\":%d,\"strong\":%d},"
                 "\"set\":\"synthetic\"}",
                 hard ? "Prove the theorem that" : "What is", i,
                 hard ? "integrals $\\\\int x^2 dx$" : "cats and dogs", hard ? (i % 2) : 1,
                 hard ? 1 : (i % 5 != 0));
        json_t *j = json_loads(buf, 0, NULL);
        assert_non_null(j);
        assert_int_equal(router_dataset_add(d, j), 0);
        json_decref(j);
    }
    return d;
}

static struct router_model *
make_model(unsigned bits, unsigned dim, uint64_t seed)
{
    struct router_dataset *d = make_dataset(bits);
    struct router_train_opts o;
    char err[128];

    router_train_opts_default(&o);
    o.dim = dim;
    o.seed = seed;
    o.epochs = 3;
    struct router_model *m = router_train(d, NULL, 0, &o, err, sizeof(err));
    assert_non_null(m);
    router_dataset_destroy(d);
    return m;
}

static void
tmp_path(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "/tmp/triage-router-test-%ld-%s.tmod", (long)getpid(), tag);
}

static unsigned char *
read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)n + 1);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

static void
write_all(const char *path, const void *p, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, len, f), len);
    fclose(f);
}

static void
test_learns_and_round_trips(void **state)
{
    char path[256], err[128];
    struct router_model *m = make_model(14, 8, 1);

    tmp_path(path, sizeof(path), "rt");
    assert_int_equal(router_model_n_heads(m), 2);
    assert_string_equal(router_model_head_name(m, 0), "weak");
    assert_string_equal(router_model_head_name(m, 1), "strong");
    assert_int_equal(router_model_head_find(m, "strong"), 1);
    assert_int_equal(router_model_head_find(m, "nope"), -1);
    assert_null(router_model_head_name(m, 2));
    assert_int_equal(router_model_bits(m), 14);

    /* it learned the synthetic rule: proofs score higher than cats */
    struct router_scores easy, hard;
    assert_int_equal(router_score_text(m, "What is number 7 about cats and dogs", 36, &easy), 0);
    const char *h = "Prove the theorem that number 7 about integrals $\\int x^2 dx$";
    assert_int_equal(router_score_text(m, h, strlen(h), &hard), 0);
    assert_true(hard.score > easy.score);
    assert_true(easy.p[0] > hard.p[0]);

    assert_int_equal(router_model_save(m, path), 0);
    struct router_model *l = router_model_load(path, err, sizeof(err));
    assert_non_null(l);
    assert_string_equal(router_model_version(l), router_model_version(m));
    assert_int_equal(strlen(router_model_version(l)), 16);
    for (size_t i = 0; i < sizeof(requests) / sizeof(requests[0]); i++) {
        json_t *req = json_loads(requests[i], 0, NULL);
        struct router_scores a, b;
        assert_non_null(req);
        assert_int_equal(router_score_request(m, req, &a), 0);
        assert_int_equal(router_score_request(l, req, &b), 0);
        assert_int_equal(a.n_heads, 2);
        assert_true(a.score >= 0 && a.score <= 1);
        assert_true(a.score == b.score); /* identical, not merely close */
        assert_true(a.p[0] == b.p[0] && a.p[1] == b.p[1]);
        json_decref(req);
    }
    for (int i = 0; i <= 10; i++)
        assert_true(router_model_threshold_for_share(m, i / 10.0) ==
                    router_model_threshold_for_share(l, i / 10.0));
    json_t *empty = json_pack("{s:[]}", "messages");
    struct router_scores x;
    assert_int_equal(router_score_request(l, empty, &x), -EINVAL);
    json_decref(empty);

    /* references */
    assert_ptr_equal(router_model_ref(l), l);
    router_model_unref(l);
    router_model_unref(l);
    router_model_unref(NULL);
    router_model_unref(m);
    unlink(path);
}

static void
test_deterministic(void **state)
{
    char p1[256], p2[256];
    size_t n1, n2;

    tmp_path(p1, sizeof(p1), "d1");
    tmp_path(p2, sizeof(p2), "d2");
    struct router_model *a = make_model(12, 4, 7), *b = make_model(12, 4, 7),
                        *c = make_model(12, 4, 8);
    assert_int_equal(router_model_save(a, p1), 0);
    assert_int_equal(router_model_save(b, p2), 0);
    unsigned char *x = read_all(p1, &n1), *y = read_all(p2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(x, y, n1);
    assert_string_equal(router_model_version(a), router_model_version(b));
    assert_string_not_equal(router_model_version(a), router_model_version(c));
    free(x);
    free(y);
    router_model_unref(a);
    router_model_unref(b);
    router_model_unref(c);
    unlink(p1);
    unlink(p2);
}

/* Loads a modified copy of a good file; returns the error text ("" if it loaded). */
static void
expect_reject(const unsigned char *good, size_t len, void (*mutate)(unsigned char *, size_t *),
              const char *want)
{
    char path[256], err[256] = "";
    unsigned char *p = malloc(len + 16);
    size_t n = len;

    memcpy(p, good, len);
    mutate(p, &n);
    tmp_path(path, sizeof(path), "bad");
    write_all(path, p, n);
    struct router_model *m = router_model_load(path, err, sizeof(err));
    assert_null(m);
    if (!strstr(err, want))
        fail_msg("error '%s' does not mention '%s'", err, want);
    /* the buffer loader agrees */
    err[0] = '\0';
    assert_null(router_model_load_buffer(p, n, err, sizeof(err)));
    assert_true(strlen(err) > 0);
    free(p);
    unlink(path);
}

static void flip_payload(unsigned char *p, size_t *n) { p[*n / 2] ^= 0x40; }
static void truncate_half(unsigned char *p, size_t *n) { *n /= 2; }
static void truncate_header(unsigned char *p, size_t *n) { *n = 10; }
static void drop_last(unsigned char *p, size_t *n) { (*n)--; }
static void add_byte(unsigned char *p, size_t *n) { p[(*n)++] = 0; }
static void bad_magic(unsigned char *p, size_t *n) { p[0] = 'X'; }
static void other_version(unsigned char *p, size_t *n) { p[8] = 3; }
static void other_features(unsigned char *p, size_t *n) { p[12] = 99; }
static void bad_crc(unsigned char *p, size_t *n) { p[24] ^= 1; }

static void
test_rejects_bad_files(void **state)
{
    char path[256], err[256];
    size_t len;
    struct router_model *m = make_model(12, 4, 1);

    tmp_path(path, sizeof(path), "good");
    assert_int_equal(router_model_save(m, path), 0);
    unsigned char *good = read_all(path, &len);
    expect_reject(good, len, flip_payload, "checksum");
    expect_reject(good, len, truncate_half, "size");
    expect_reject(good, len, truncate_header, "too short");
    expect_reject(good, len, drop_last, "size");
    expect_reject(good, len, add_byte, "size");
    expect_reject(good, len, bad_magic, "magic");
    expect_reject(good, len, other_version, "version");
    expect_reject(good, len, other_features, "features version");
    expect_reject(good, len, bad_crc, "checksum");

    /* a consistent header around a payload that lies about its shape */
    unsigned char *p = malloc(len);
    memcpy(p, good, len);
    p[ROUTER__HEADER_SIZE] = 40; /* n_bits */
    uint32_t crc = router_crc32(p + ROUTER__HEADER_SIZE, len - ROUTER__HEADER_SIZE);
    for (int i = 0; i < 4; i++)
        p[24 + i] = (unsigned char)(crc >> (8 * i));
    assert_null(router_model_load_buffer(p, len, err, sizeof(err)));
    assert_non_null(strstr(err, "shape"));
    free(p);

    assert_null(router_model_load("/nonexistent/model.tmod", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/model.tmod"));
    assert_null(router_model_load_buffer("", 0, err, sizeof(err)));
    free(good);
    router_model_unref(m);
    unlink(path);
}

static void
test_policy_threshold(void **state)
{
    struct router_tier tiers[2] = {{0, 0}, {1, 0}};
    struct router_scores s = {.score = 0.5, .n_heads = 2, .p = {0.9, 0.95}};

    assert_int_equal(router_policy_pick(ROUTER_POLICY_THRESHOLD, tiers, 2, 0.5, &s), 1);
    assert_int_equal(router_policy_pick(ROUTER_POLICY_THRESHOLD, tiers, 2, nextafter(0.5, 1), &s),
                     0);
    assert_int_equal(router_policy_pick(ROUTER_POLICY_THRESHOLD, tiers, 2, 0.0, &s), 1);
    assert_int_equal(router_policy_pick(ROUTER_POLICY_THRESHOLD, tiers, 2, 1.0001, &s), 0);
    s.score = NAN;
    assert_int_equal(router_policy_pick(ROUTER_POLICY_THRESHOLD, tiers, 2, 0.5, &s), 0);
    s.score = 1.0;
    assert_int_equal(router_policy_pick(ROUTER_POLICY_THRESHOLD, tiers, 1, 0.5, &s), 0);
    assert_int_equal(router_policy_pick(ROUTER_POLICY_THRESHOLD, tiers, 0, 0.5, &s), 0);
}

static void
test_policy_tiers(void **state)
{
    struct router_tier tiers[3] = {{0, 0.8}, {1, 0.9}, {2, 0.0}};
    struct router_scores s = {.score = 0.5, .n_heads = 3, .p = {0.8, 0.95, 0.99}};

    /* p exactly at the bar clears it */
    assert_int_equal(router_policy_pick(ROUTER_POLICY_TIERS, tiers, 3, 0, &s), 0);
    s.p[0] = nextafter(0.8, 0);
    assert_int_equal(router_policy_pick(ROUTER_POLICY_TIERS, tiers, 3, 0, &s), 1);
    s.p[1] = 0.89;
    assert_int_equal(router_policy_pick(ROUTER_POLICY_TIERS, tiers, 3, 0, &s), 2);
    /* nothing clears: the last tier, whatever its own p */
    s.p[2] = 0.0;
    assert_int_equal(router_policy_pick(ROUTER_POLICY_TIERS, tiers, 3, 0, &s), 2);
    /* a tier without a head, or with a head the model lacks, is skipped */
    s.p[0] = 1.0;
    tiers[0].head = -1;
    assert_int_equal(router_policy_pick(ROUTER_POLICY_TIERS, tiers, 3, 0, &s), 2);
    tiers[0].head = 5;
    assert_int_equal(router_policy_pick(ROUTER_POLICY_TIERS, tiers, 3, 0, &s), 2);
    assert_int_equal(router_policy_pick(ROUTER_POLICY_TIERS, tiers, 1, 0, &s), 0);
}

static void
test_threshold_for_share(void **state)
{
    char path[256], err[128];
    struct router_model *m = router__model_alloc(10, 0, 2);

    /* reference scores 0.00, 0.01, ..., 1.00: the share above t is 1 - t */
    snprintf(m->names[0], sizeof(m->names[0]), "weak");
    snprintf(m->names[1], sizeof(m->names[1]), "strong");
    m->n_ref = 101;
    m->ref = calloc(101, sizeof(float));
    for (int i = 0; i <= 100; i++)
        m->ref[i] = (float)(i / 100.0);
    router__model_finish(m);
    assert_float_equal(router_model_threshold_for_share(m, 0.3), 0.70, 1e-6);
    assert_float_equal(router_model_threshold_for_share(m, 0.25), 0.75, 1e-6);
    assert_float_equal(router_model_threshold_for_share(m, 0.005), 0.995, 1e-6);
    assert_true(router_model_threshold_for_share(m, 0.0) > 1.0);
    assert_true(router_model_threshold_for_share(m, -1.0) > 1.0);
    assert_float_equal(router_model_threshold_for_share(m, 1.0), 0.0, 1e-12);
    /* monotone: a larger share never raises the threshold */
    for (int i = 1; i <= 100; i++)
        assert_true(router_model_threshold_for_share(m, i / 100.0) <=
                    router_model_threshold_for_share(m, (i - 1) / 100.0));

    /* the reference distribution survives the file */
    tmp_path(path, sizeof(path), "ref");
    assert_int_equal(router_model_save(m, path), 0);
    struct router_model *l = router_model_load(path, err, sizeof(err));
    assert_non_null(l);
    assert_float_equal(router_model_threshold_for_share(l, 0.3), 0.70, 1e-6);
    router_model_unref(l);
    router_model_unref(m);
    unlink(path);

    /* calibration over a data set, numpy's percentile: known answers */
    double x[5] = {0.5, 0.1, 0.9, 0.3, 0.7};
    assert_float_equal(router_eval_percentile(x, 5, 50), 0.5, 1e-12);
    assert_float_equal(router_eval_percentile(x, 5, 75), 0.7, 1e-12);
    assert_float_equal(router_eval_percentile(x, 5, 62.5), 0.6, 1e-12);
    assert_float_equal(router_eval_percentile(x, 5, 100), 0.9, 1e-12);
    assert_float_equal(router_eval_percentile(x, 5, 0), 0.1, 1e-12);
}

static void
test_metrics(void **state)
{
    /* 10 prompts; strong wins exactly on the two with the top scores */
    double score[10], qw[10], qs[10];
    struct router_eval e;

    for (int i = 0; i < 10; i++) {
        score[i] = 1.0 - i / 10.0;
        qw[i] = i < 2 ? 0 : 1;
        qs[i] = 1;
    }
    assert_int_equal(router_eval_routing(score, qw, qs, 10, &e), 0);
    assert_float_equal(e.perf_weak, 0.8, 1e-12);
    assert_float_equal(e.perf_strong, 1.0, 1e-12);
    assert_float_equal(e.pgr[1], 0.5, 1e-12);
    assert_float_equal(e.pgr[2], 1.0, 1e-12);
    assert_float_equal(e.apgr, 0.9, 1e-12); /* (0.25 + 0.75 + 8) / 10 */
    assert_float_equal(e.cpt50, 0.1, 1e-12);
    assert_float_equal(e.cpt80, 0.2, 1e-12);
    assert_float_equal(e.auc, 1.0, 1e-12);

    /* reversed scores: the winners come last */
    for (int i = 0; i < 10; i++)
        score[i] = i;
    assert_int_equal(router_eval_routing(score, qw, qs, 10, &e), 0);
    assert_float_equal(e.auc, 0.0, 1e-12);
    assert_float_equal(e.pgr[8], 0.0, 1e-12);
    assert_float_equal(e.pgr[9], 0.5, 1e-12);
    assert_float_equal(e.cpt80, 1.0, 1e-12);
    assert_float_equal(e.apgr, 0.1, 1e-12); /* (0.25 + 0.75) / 10 */

    /* all tied: ties break by index, so the first two go first */
    for (int i = 0; i < 10; i++)
        score[i] = 0.5;
    assert_int_equal(router_eval_routing(score, qw, qs, 10, &e), 0);
    assert_float_equal(e.apgr, 0.9, 1e-12);
    assert_float_equal(e.auc, 0.5, 1e-12);

    /* no gap: PGR undefined */
    assert_int_equal(router_eval_routing(score, qs, qs, 10, &e), -EDOM);
    assert_int_equal(router_eval_routing(score, qs, qs, 0, &e), -EINVAL);

    double a[5] = {1, 2, 3, 4, 5}, b[5] = {10, 20, 30, 40, 50}, c[5] = {5, 4, 3, 2, 1};
    double t[5] = {1, 1, 2, 2, 3};
    assert_float_equal(router_eval_spearman(a, b, 5), 1.0, 1e-12);
    assert_float_equal(router_eval_spearman(a, c, 5), -1.0, 1e-12);
    assert_true(router_eval_spearman(a, t, 5) > 0.9);
    assert_true(isnan(router_eval_spearman(a, t, 1)));
    double k[5] = {2, 2, 2, 2, 2};
    assert_true(isnan(router_eval_spearman(a, k, 5)));
}

static void
test_dataset(void **state)
{
    struct router_dataset *d = router_dataset_new(12);
    json_t *j;

    j = json_loads("{\"prompt\":\"x\",\"outcomes\":{\"a\":0.5,\"b\":1}}", 0, NULL);
    assert_int_equal(router_dataset_add(d, j), 0);
    json_decref(j);
    j = json_loads("{\"messages\":[{\"role\":\"user\",\"content\":\"y\"}],\"outcomes\":{\"c\":0}}", 0,
                   NULL);
    assert_int_equal(router_dataset_add(d, j), 0);
    json_decref(j);
    /* rejected lines change nothing */
    const char *bad[] = {"{\"prompt\":\"x\",\"outcomes\":{\"a\":1.5}}",
                         "{\"prompt\":\"x\",\"outcomes\":{\"d\":\"yes\"}}",
                         "{\"outcomes\":{\"a\":1}}", "{\"prompt\":\"x\",\"outcomes\":[1]}"};
    for (size_t i = 0; i < 4; i++) {
        j = json_loads(bad[i], 0, NULL);
        assert_int_equal(router_dataset_add(d, j), -EINVAL);
        json_decref(j);
    }
    assert_int_equal(router_dataset_size(d), 2);
    assert_int_equal(router_dataset_n_heads(d), 3);
    assert_string_equal(router_dataset_head_name(d, 2), "c");
    assert_float_equal(router_dataset_outcome(d, 0, 0), 0.5, 1e-6);
    assert_true(isnan(router_dataset_outcome(d, 1, 0)));
    assert_float_equal(router_dataset_outcome(d, 1, 2), 0.0, 1e-6);
    assert_float_equal(router_dataset_dense(d, 0, 0), log1p(1), 1e-6);
    router_dataset_destroy(d);
}

struct thread_arg {
    const struct router_model *m;
    double want[4];
    int ok;
};

static void *
score_thread(void *p)
{
    struct thread_arg *a = p;
    json_t *req[4];

    for (int i = 0; i < 4; i++)
        req[i] = json_loads(requests[i], 0, NULL);
    a->ok = 1;
    for (int round = 0; round < 200; round++)
        for (int i = 0; i < 4; i++) {
            struct router_scores s;
            if (router_score_request(a->m, req[i], &s) != 0 || s.score != a->want[i])
                a->ok = 0;
        }
    for (int i = 0; i < 4; i++)
        json_decref(req[i]);
    return NULL;
}

static void
test_threads(void **state)
{
    struct router_model *m = make_model(14, 8, 3);
    struct thread_arg args[4];
    pthread_t th[4];

    for (int i = 0; i < 4; i++) {
        json_t *req = json_loads(requests[i], 0, NULL);
        struct router_scores s;
        assert_int_equal(router_score_request(m, req, &s), 0);
        for (int t = 0; t < 4; t++)
            args[t].want[i] = s.score;
        json_decref(req);
    }
    for (int t = 0; t < 4; t++) {
        args[t].m = router_model_ref(m);
        assert_int_equal(pthread_create(&th[t], NULL, score_thread, &args[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        assert_true(args[t].ok);
        router_model_unref((struct router_model *)args[t].m);
    }
    router_model_unref(m);
    router_thread_cleanup();
}

/* Standard padded base64 of len bytes into a new string. */
static char *
b64(const unsigned char *p, size_t len)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(4 * ((len + 2) / 3) + 1), *o = out;

    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < len ? p[i + 2] : 0);
        *o++ = abc[v >> 18];
        *o++ = abc[(v >> 12) & 63];
        *o++ = i + 1 < len ? abc[(v >> 6) & 63] : '=';
        *o++ = i + 2 < len ? abc[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* store_prompts = features is enough to retrain: a model trained on the stored vectors
 * (router_request_features of each request, as the daemon logs them) is the very model
 * trained on the same prompts' text, same seed and order, byte for byte. */
static void
test_train_from_features(void **state)
{
    struct router_dataset *text = router_dataset_new(12), *feat = router_dataset_new(12);
    struct router_model *shipped = make_model(12, 0, 1);
    char buf[512], err[128], p1[256], p2[256];
    size_t len, n1, n2;

    (void)state;
    for (int i = 0; i < 300; i++) {
        int hard = i % 3 == 0;
        snprintf(buf, sizeof(buf),
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"%s number %d about %s\"}],"
                 "\"max_tokens\":%d,\"outcomes\":{\"weak\":%d,\"strong\":%d}}",
                 hard ? "Prove the theorem that" : "What is", i,
                 hard ? "integrals $\\\\int x^2 dx$" : "cats and dogs", 50 + i,
                 hard ? (i % 2) : 1, hard ? 1 : (i % 5 != 0));
        json_t *j = json_loads(buf, 0, NULL);
        assert_non_null(j);
        assert_int_equal(router_dataset_add(text, j), 0);
        unsigned char *blob = router_request_features(shipped, j, &len);
        assert_non_null(blob);
        char *enc = b64(blob, len);
        json_t *fj = json_pack("{s:s, s:s, s:O}", "features", enc, "prompt_hash", "h", "outcomes",
                               json_object_get(j, "outcomes"));
        assert_int_equal(router_dataset_add(feat, fj), 0);
        json_decref(fj);
        free(enc);
        free(blob);
        json_decref(j);
    }
    assert_int_equal(router_dataset_size(feat), router_dataset_size(text));
    for (size_t j = 0; j < FEATURES_N_DENSE; j++)
        assert_true(router_dataset_dense(feat, 7, j) == router_dataset_dense(text, 7, j));

    struct router_train_opts o;
    router_train_opts_tuned(&o);
    o.seed = 42;
    o.epochs = 3;
    struct router_model *a = router_train(text, NULL, 0, &o, err, sizeof(err));
    struct router_model *b = router_train(feat, NULL, 0, &o, err, sizeof(err));
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(router_model_version(a), router_model_version(b));
    tmp_path(p1, sizeof(p1), "ft");
    tmp_path(p2, sizeof(p2), "tx");
    assert_int_equal(router_model_save(a, p1), 0);
    assert_int_equal(router_model_save(b, p2), 0);
    unsigned char *x = read_all(p1, &n1), *y = read_all(p2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(x, y, n1);

    /* another hash space is refused and counted; a malformed blob is refused */
    struct router_dataset *wide = router_dataset_new(14);
    json_t *j = json_loads("{\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}", 0, NULL);
    unsigned char *blob = router_request_features(shipped, j, &len);
    char *enc = b64(blob, len);
    json_t *fj = json_pack("{s:s}", "features", enc);
    assert_int_equal(router_dataset_add(wide, fj), -EPROTO);
    assert_int_equal(router_dataset_refused(wide), 1);
    assert_int_equal(router_dataset_size(wide), 0);
    json_object_set_new(fj, "features", json_string("bm9wZQ=="));
    assert_int_equal(router_dataset_add(feat, fj), -EINVAL);
    json_object_set_new(fj, "features", json_integer(3));
    assert_int_equal(router_dataset_add(feat, fj), -EINVAL);
    assert_int_equal(router_dataset_refused(feat), 0);
    json_t *empty = json_object();
    assert_null(router_request_features(shipped, empty, &len)); /* no text */
    json_decref(empty);

    json_decref(fj);
    free(enc);
    free(blob);
    json_decref(j);
    router_dataset_destroy(wide);
    free(x);
    free(y);
    unlink(p1);
    unlink(p2);
    router_model_unref(a);
    router_model_unref(b);
    router_model_unref(shipped);
    router_dataset_destroy(text);
    router_dataset_destroy(feat);
}

/* ---- the escalation model ------------------------------------------------------- */

/* Signals of an answer to prompt (both NUL-terminated) with finish_reason. */
static void
signals_of(const char *prompt, const char *answer, const char *finish, float *sig)
{
    features_answer_signals(answer, strlen(answer), prompt, strlen(prompt), finish, NULL, 0, sig);
}

static double
escalation(const struct router_model *m, const char *prompt, const char *answer, const char *finish)
{
    float sig[FEATURES_N_ANSWER];
    json_t *req = json_pack("{s:s}", "prompt", prompt);
    double e = -1;

    signals_of(prompt, answer, finish, sig);
    assert_int_equal(router_escalation_score(m, req, answer, strlen(answer), sig, &e), 0);
    assert_true(e >= 0 && e <= 1);
    json_decref(req);
    return e;
}

static const char *good_answer = "12 + 30 = 42 apples.\n#### 42";
static const char *bad_answer = "Maybe 12 apples, but perhaps I am not sure; I cannot tell, roughly";

static void
test_escalation_learned(void **state)
{
    struct router_dataset *d = router_dataset_new(12);
    struct router_train_opts o;
    char buf[1024], err[128], path[256];

    /* the weak head's answers: hedged ones were judged bad, plain ones good */
    for (int i = 0; i < 200; i++) {
        int bad = i % 3 == 0;
        snprintf(buf, sizeof(buf),
                 "{\"prompt\":\"Tom has 12 apples and buys 30 more, question %d\","
                 "\"outcomes\":{\"weak\":%d,\"strong\":1},\"answers\":{\"weak\":\"%s\"}}",
                 i, !bad, bad ? bad_answer : "12 + 30 = 42 apples.\\n#### 42");
        json_t *j = json_loads(buf, 0, NULL);
        assert_non_null(j);
        assert_int_equal(router_dataset_add(d, j), 0);
        json_decref(j);
    }
    assert_int_equal(router_dataset_answers(d), 200);
    /* a malformed answer rejects the line and changes nothing */
    json_t *j = json_loads("{\"prompt\":\"x\",\"outcomes\":{\"weak\":1},\"answers\":{\"weak\":7}}",
                           0, NULL);
    assert_int_equal(router_dataset_add(d, j), -EINVAL);
    json_decref(j);
    j = json_loads("{\"prompt\":\"x\",\"outcomes\":{\"weak\":1},\"answer_signals\":{\"weak\":[1]}}",
                   0, NULL);
    assert_int_equal(router_dataset_add(d, j), -EINVAL);
    json_decref(j);
    assert_int_equal(router_dataset_size(d), 200);
    /* signals of an older answer signals version: the line stays, its answer teaches nothing */
    json_t *sigs = json_array();
    for (size_t k = 0; k < FEATURES_N_ANSWER_V(1); k++)
        json_array_append_new(sigs, json_real(0.5));
    j = json_pack("{s:s,s:{s:i},s:{s:o}}", "prompt", "x", "outcomes", "weak", 1, "answer_signals",
                  "weak", sigs);
    assert_int_equal(router_dataset_add(d, j), 0);
    json_decref(j);
    assert_int_equal(router_dataset_size(d), 201);
    assert_int_equal(router_dataset_answers(d), 200);

    router_train_opts_default(&o);
    o.epochs = 2;
    struct router_model *m = router_train(d, NULL, 0, &o, err, sizeof(err));
    assert_non_null(m);
    assert_int_equal(router_model_escalation_examples(m), 200);
    double e_bad = escalation(m, "Tom has 12 apples and buys 30 more", bad_answer, "stop");
    double e_good = escalation(m, "Tom has 12 apples and buys 30 more", good_answer, "stop");
    assert_true(e_bad > 0.5 && e_good < 0.5);

    /* it travels in the model file (format 2) and scores the same loaded back */
    tmp_path(path, sizeof(path), "esc");
    assert_int_equal(router_model_save(m, path), 0);
    size_t len;
    unsigned char *file = read_all(path, &len);
    assert_int_equal(file[8], 2);
    struct router_model *l = router_model_load(path, err, sizeof(err));
    assert_non_null(l);
    assert_string_equal(router_model_version(l), router_model_version(m));
    assert_int_equal(router_model_escalation_examples(l), 200);
    assert_true(fabs(escalation(l, "Tom has 12 apples and buys 30 more", bad_answer, "stop") -
                     e_bad) < 1e-9);

    /* an escalation model of other answer signals is refused, not misread */
    size_t rows = 0, nb = (size_t)1 << 12;
    for (size_t r = 0; r < nb; r++)
        rows += m->esc.w_sparse[r] != 0.0f;
    size_t off = len - 2 * rows - nb / 8 - 4 - 4 * (3 * FEATURES_N_ANSWER + 1) - 8;
    assert_int_equal(file[off], FEATURES_ANSWER_VERSION);
    file[off] = FEATURES_ANSWER_VERSION + 1;
    uint32_t crc = router_crc32(file + ROUTER__HEADER_SIZE, len - ROUTER__HEADER_SIZE);
    for (int i = 0; i < 4; i++)
        file[24 + i] = (unsigned char)(crc >> (8 * i));
    assert_null(router_model_load_buffer(file, len, err, sizeof(err)));
    assert_non_null(strstr(err, "answer signals version"));
    file[off] = FEATURES_ANSWER_VERSION;

    /* a section of answer signals version 1 (19 inputs) loads and scores as the same model
     * with the signals added since weighted 0 */
    const size_t n1 = FEATURES_N_ANSWER_V(1), n = FEATURES_N_ANSWER;
    size_t head = off - 4, tail = off + 8 + 4 * (3 * n + 1);
    unsigned char *old = malloc(len);
    size_t olen = 0;
    memcpy(old, file, head);
    olen = head;
    uint32_t hdr[3] = {(uint32_t)n1, 1, 200};
    memcpy(old + olen, hdr, sizeof(hdr));
    olen += sizeof(hdr);
    for (int part = 0; part < 3; part++) {
        memcpy(old + olen, file + off + 8 + 4 * n * (size_t)part, 4 * n1);
        olen += 4 * n1;
    }
    memcpy(old + olen, file + off + 8 + 4 * 3 * n, 4); /* bias */
    olen += 4;
    memcpy(old + olen, file + tail, len - tail);
    olen += len - tail;
    uint32_t plen = (uint32_t)(olen - ROUTER__HEADER_SIZE);
    memcpy(old + 16, &plen, 4); /* the model files are little-endian, like this test's hosts */
    crc = router_crc32(old + ROUTER__HEADER_SIZE, olen - ROUTER__HEADER_SIZE);
    for (int i = 0; i < 4; i++)
        old[24 + i] = (unsigned char)(crc >> (8 * i));
    struct router_model *o1 = router_model_load_buffer(old, olen, err, sizeof(err));
    assert_non_null(o1);
    assert_int_equal(router_model_escalation_examples(o1), 200);
    for (size_t k = n1; k < n; k++)
        m->esc.w[k] = 0;
    const char *arith = "12 + 30 = 41 apples.\n#### 41";
    assert_true(fabs(escalation(o1, "Tom has 12 apples and buys 30 more", arith, "stop") -
                     escalation(m, "Tom has 12 apples and buys 30 more", arith, "stop")) < 1e-6);
    /* ... but not with another count of inputs than its version has */
    uint32_t bad_n = (uint32_t)n;
    memcpy(old + head, &bad_n, 4);
    crc = router_crc32(old + ROUTER__HEADER_SIZE, olen - ROUTER__HEADER_SIZE);
    for (int i = 0; i < 4; i++)
        old[24 + i] = (unsigned char)(crc >> (8 * i));
    assert_null(router_model_load_buffer(old, olen, err, sizeof(err)));
    assert_non_null(strstr(err, "inputs"));
    router_model_unref(o1);
    free(old);
    router_model_unref(l);
    free(file);
    unlink(path);
    router_model_unref(m);
    router_dataset_destroy(d);
}

/* The answer words' step is chosen by cross-validation: when only a word tells good
 * answers from bad (the signals are the same), it is kept and learned. */
static void
test_escalation_words(void **state)
{
    struct router_dataset *d = router_dataset_new(12);
    struct router_train_opts o;
    char buf[512], err[128];

    (void)state;
    for (int i = 0; i < 200; i++) {
        int bad = i % 3 == 0;
        snprintf(buf, sizeof(buf),
                 "{\"prompt\":\"Tom has 12 fruit and buys 30 more, question %d\","
                 "\"outcomes\":{\"weak\":%d,\"strong\":1},\"answers\":{\"weak\":"
                 "\"He has 42 %s.\"}}",
                 i, !bad, bad ? "pears" : "apples");
        json_t *j = json_loads(buf, 0, NULL);
        assert_int_equal(router_dataset_add(d, j), 0);
        json_decref(j);
    }
    router_train_opts_default(&o);
    o.epochs = 2;
    struct router_model *m = router_train(d, NULL, 0, &o, err, sizeof(err));
    assert_non_null(m);
    double e_bad = escalation(m, "Tom has 12 fruit and buys 30 more", "He has 42 pears.", "stop");
    double e_good = escalation(m, "Tom has 12 fruit and buys 30 more", "He has 42 apples.", "stop");
    assert_true(e_bad > 0.6 && e_good < 0.2);
    router_model_unref(m);
    router_dataset_destroy(d);
}

static void
test_escalation_default(void **state)
{
    char path[256], err[128];
    struct router_model *m = make_model(12, 0, 1);
    size_t len;

    /* no judged answers: no learned model, format 1, the signals-only default */
    assert_int_equal(router_model_escalation_examples(m), 0);
    tmp_path(path, sizeof(path), "noesc");
    assert_int_equal(router_model_save(m, path), 0);
    unsigned char *file = read_all(path, &len);
    assert_int_equal(file[8], 1);
    struct router_model *l = router_model_load(path, err, sizeof(err));
    assert_non_null(l);
    const char *q = "What is 12 + 30?";
    double cut = escalation(l, q, "12 + 30 = 42, and that is the answer", "length");
    double fine = escalation(l, q, "12 + 30 = 42.", "stop");
    double hedged = escalation(l, q, "Maybe 42, but perhaps I am not sure; possibly 41.", "stop");
    assert_true(cut > fine);
    assert_true(hedged > fine);
    /* no prompt text: an error, not a score */
    json_t *req = json_pack("{s:[]}", "messages");
    float sig[FEATURES_N_ANSWER];
    double e = -1;
    signals_of("", "x", "stop", sig);
    assert_int_equal(router_escalation_score(l, req, "x", 1, sig, &e), -EINVAL);
    json_decref(req);
    router_model_unref(l);
    free(file);
    unlink(path);
    router_model_unref(m);
}

/* A dataset of the weak head's judged answers to one kind of question: hedged ones bad,
 * plain ones good (or the other way round with flip: labels a judge got wrong). */
static struct router_dataset *
answers_dataset(int n, int flip)
{
    struct router_dataset *d = router_dataset_new(12);
    char buf[1024];

    for (int i = 0; i < n; i++) {
        int bad = i % 3 == 0;
        snprintf(buf, sizeof(buf),
                 "{\"prompt\":\"Tom has 12 apples and buys 30 more, question %d\","
                 "\"outcomes\":{\"weak\":%d,\"strong\":1},\"answers\":{\"weak\":\"%s\"}}",
                 i, bad == flip, bad ? bad_answer : "12 + 30 = 42 apples.\\n#### 42");
        json_t *j = json_loads(buf, 0, NULL);
        assert_int_equal(router_dataset_add(d, j), 0);
        json_decref(j);
    }
    return d;
}

static void
test_eval_auc(void **state)
{
    (void)state;
    const double s[4] = {0.9, 0.8, 0.3, 0.1}, y[4] = {1, 0, 1, 0};
    /* positives above negatives in 3 of the 4 pairs */
    assert_true(fabs(router_eval_auc(s, y, 4) - 0.75) < 1e-12);
    const double tie[4] = {0.5, 0.5, 0.5, 0.5};
    assert_true(fabs(router_eval_auc(tie, y, 4) - 0.5) < 1e-12);
    /* soft labels: an item of label 0.25 is a quarter positive and three quarters negative */
    const double s2[2] = {0.9, 0.1}, y2[2] = {0.25, 1};
    /* pairs: 0 as positive over 1 as negative (0.25 * 0 = 0, above) and 1 as positive over
     * 0 as negative (1 * 0.75, below): 0 / 0.75 */
    assert_true(fabs(router_eval_auc(s2, y2, 2) - 0.0) < 1e-12);
    const double ones[4] = {1, 1, 1, 1}, half[1] = {0.5};
    assert_true(isnan(router_eval_auc(s, ones, 4)));
    assert_true(isnan(router_eval_auc(s, half, 1))); /* an item never pairs with itself */
    assert_true(isnan(router_eval_auc(s, y, 0)));
}

/* Held-out escalation quality tells a model trained on the judge's labels from one trained
 * on flipped labels, and combining models keeps each part's scores exactly. */
static void
test_escalation_eval_combine(void **state)
{
    struct router_train_opts o;
    char err[128], path[256];

    (void)state;
    struct router_dataset *good = answers_dataset(200, 0), *flipped = answers_dataset(200, 1);
    router_train_opts_default(&o);
    o.epochs = 2;
    struct router_model *g = router_train(good, NULL, 0, &o, err, sizeof(err));
    struct router_model *f = router_train(flipped, NULL, 0, &o, err, sizeof(err));
    struct router_model *def = make_model(12, 0, 1), *small = make_model(10, 0, 1);
    assert_non_null(g);
    assert_non_null(f);
    assert_int_equal(router_model_escalation_examples(f), 200);

    /* measured on the judge's labels (the odd ones only: idx repeats count once) */
    size_t idx[200], n_idx = 0;
    for (size_t i = 1; i < 200; i += 2) {
        idx[n_idx++] = i;
        idx[n_idx++] = i;
    }
    struct router_escalation_eval eg, ef, ed;
    assert_int_equal(router_eval_escalation(g, good, idx, n_idx, "weak", 0.5, &eg), 0);
    assert_int_equal(router_eval_escalation(f, good, idx, n_idx, "weak", 0.5, &ef), 0);
    assert_int_equal(router_eval_escalation(def, good, idx, n_idx, "weak", 0.5, &ed), 0);
    assert_int_equal(eg.n, 100);
    assert_int_equal(ef.n, 100);
    assert_int_equal(ed.n, 100);
    assert_true(fabs(eg.bad - 33.0 / 100) < 1e-9); /* odd i below 200 with i % 3 == 0 */
    assert_true(eg.auc > 0.99 && ef.auc < 0.01);
    assert_true(eg.caught > 0.99 && fabs(eg.escalated - eg.bad) < 1e-9);
    assert_true(ef.caught < 0.01);
    /* the default (signals and the prompt's score) sees the hedging too */
    assert_true(ed.auc > 0.5);
    /* another head, or no such head: nothing measured; another hash space: refused */
    assert_int_equal(router_eval_escalation(g, good, NULL, 0, "strong", 0.5, &eg), 0);
    assert_int_equal(eg.n, 0);
    assert_true(isnan(eg.auc));
    assert_int_equal(router_eval_escalation(g, good, NULL, 0, "nobody", 0.5, &eg), 0);
    assert_int_equal(eg.n, 0);
    assert_int_equal(router_eval_escalation(small, good, NULL, 0, "weak", 0.5, &eg), -EINVAL);

    /* the routing of one model with the escalation of another: each part scores as its
     * source did, in memory and loaded back from a file */
    struct router_model *c = router_model_combine(def, g, err, sizeof(err));
    assert_non_null(c);
    assert_string_not_equal(router_model_version(c), router_model_version(def));
    assert_string_not_equal(router_model_version(c), router_model_version(g));
    struct router_scores a, b;
    const char *q = "Prove the theorem that number 7 about integrals";
    assert_int_equal(router_score_text(def, q, strlen(q), &a), 0);
    assert_int_equal(router_score_text(c, q, strlen(q), &b), 0);
    assert_true(a.score == b.score && a.p[0] == b.p[0]);
    assert_true(router_model_threshold_for_share(c, 0.3) == router_model_threshold_for_share(def, 0.3));
    const char *p = "Tom has 12 apples and buys 30 more";
    assert_true(escalation(c, p, bad_answer, "stop") == escalation(g, p, bad_answer, "stop"));
    assert_true(escalation(c, p, good_answer, "stop") == escalation(g, p, good_answer, "stop"));
    assert_int_equal(router_model_escalation_examples(c), 200);
    tmp_path(path, sizeof(path), "combined");
    assert_int_equal(router_model_save(c, path), 0);
    struct router_model *l = router_model_load(path, err, sizeof(err));
    assert_non_null(l);
    assert_string_equal(router_model_version(l), router_model_version(c));
    assert_true(escalation(l, p, bad_answer, "stop") == escalation(g, p, bad_answer, "stop"));
    unlink(path);
    /* a model without a learned one: the default, reading the new routing score */
    struct router_model *c2 = router_model_combine(g, def, err, sizeof(err));
    assert_non_null(c2);
    assert_int_equal(router_model_escalation_examples(c2), 0);
    assert_int_equal(router_score_text(g, q, strlen(q), &a), 0);
    assert_int_equal(router_score_text(c2, q, strlen(q), &b), 0);
    assert_true(a.score == b.score);
    /* models of different hash spaces do not combine */
    assert_null(router_model_combine(small, g, err, sizeof(err)));
    assert_non_null(strstr(err, "hash spaces"));

    router_model_unref(l);
    router_model_unref(c);
    router_model_unref(c2);
    router_model_unref(g);
    router_model_unref(f);
    router_model_unref(def);
    router_model_unref(small);
    router_dataset_destroy(good);
    router_dataset_destroy(flipped);
}

static void
test_cascade_band(void **state)
{
    /* [low, high) is the band; below easy, at or above hard */
    assert_int_equal(router_cascade_pick(0.39999, 0.4, 0.7), ROUTER_CASCADE_FAST);
    assert_int_equal(router_cascade_pick(0.4, 0.4, 0.7), ROUTER_CASCADE_TRY);
    assert_int_equal(router_cascade_pick(0.69999, 0.4, 0.7), ROUTER_CASCADE_TRY);
    assert_int_equal(router_cascade_pick(0.7, 0.4, 0.7), ROUTER_CASCADE_STRONG);
    assert_int_equal(router_cascade_pick(0.5, 0.5, 0.5), ROUTER_CASCADE_STRONG); /* no band */
    assert_int_equal(router_cascade_pick(NAN, 0.4, 0.7), ROUTER_CASCADE_TRY);
    /* escalated at or above the cut; an unknown score escalates */
    assert_int_equal(router_cascade_escalate(0.5, 0.5), 1);
    assert_int_equal(router_cascade_escalate(0.49999, 0.5), 0);
    assert_int_equal(router_cascade_escalate(NAN, 0.5), 1);
    assert_int_equal(router_cascade_escalate(0.0, 0.0), 1);
    assert_int_equal(router_cascade_escalate(0.999, 1.0), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_learns_and_round_trips),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_rejects_bad_files),
        cmocka_unit_test(test_policy_threshold),
        cmocka_unit_test(test_policy_tiers),
        cmocka_unit_test(test_threshold_for_share),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_dataset),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_train_from_features),
        cmocka_unit_test(test_escalation_learned),
        cmocka_unit_test(test_escalation_words),
        cmocka_unit_test(test_escalation_default),
        cmocka_unit_test(test_eval_auc),
        cmocka_unit_test(test_escalation_eval_combine),
        cmocka_unit_test(test_cascade_band),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    router_thread_cleanup();
    return rc;
}
