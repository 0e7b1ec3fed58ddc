/* test_features.c - unit tests for features/: exact ids and values, folding, dense signals, request shapes, big inputs. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "features-int.h"
#include "prompt_features.h"

#define BITS 16

/* Returns the value of bucket id in v, or -1 when absent. */
static double
value_of(const struct features_vec *v, uint32_t id)
{
    for (size_t i = 0; i < v->n; i++)
        if (v->ids[i] == id)
            return v->vals[i];
    return -1;
}

static uint32_t
word_id(enum features_family fam, const char *w)
{
    return features_bucket(BITS, fam, features_hash_token(w, strlen(w)));
}

static size_t
dense_index(const char *name)
{
    for (size_t i = 0; i < FEATURES_N_DENSE; i++)
        if (strcmp(features_dense_name(i), name) == 0)
            return i;
    fail_msg("no dense feature %s", name);
    return 0;
}

static uint32_t
char4_id(const char *g)
{
    uint32_t cp[4] = {(unsigned char)g[0], (unsigned char)g[1], (unsigned char)g[2],
                      (unsigned char)g[3]};
    return features_bucket(BITS, FEATURES_FAM_CHAR, features__char4_key(cp));
}

static void
test_exact_ids_and_values(void **state)
{
    struct features_scratch *s = features_scratch_new(BITS);
    struct features_vec v;

    assert_int_equal(features_extract_text(s, "Hello world", 11, &v), 0);
    /* 2 words, 1 bigram, 8 char 4-grams, 24 dense bins (no collisions at 2^16 here) */
    assert_int_equal(v.n, 2 + 1 + 8 + FEATURES_N_DENSE);
    /* each family is L2-normalised log term frequency: two words of count 1 */
    assert_float_equal(value_of(&v, word_id(FEATURES_FAM_WORD, "hello")), 1 / sqrt(2), 1e-6);
    assert_float_equal(value_of(&v, word_id(FEATURES_FAM_WORD, "world")), 1 / sqrt(2), 1e-6);
    uint64_t bigram = features__bigram_key(features_hash_token("hello", 5),
                                           features_hash_token("world", 5));
    assert_float_equal(value_of(&v, features_bucket(BITS, FEATURES_FAM_BIGRAM, bigram)), 1.0,
                       1e-6);
    const char *grams[] = {"hell", "ello", "llo ", "lo w", "o wo", " wor", "worl", "orld"};
    for (size_t i = 0; i < 8; i++)
        assert_float_equal(value_of(&v, char4_id(grams[i])), 1 / sqrt(8), 1e-6);
    /* first-seen order: "hell" is complete before the word "hello" ends */
    assert_int_equal(v.ids[0], char4_id("hell"));
    assert_int_equal(v.ids[2], word_id(FEATURES_FAM_WORD, "hello"));
    assert_float_equal(v.dense[dense_index("log_chars_last")], log1p(11), 1e-6);
    assert_float_equal(v.dense[dense_index("log_words_last")], log1p(2), 1e-6);
    assert_float_equal(v.dense[dense_index("upper_frac")], 0.1, 1e-6);
    features_scratch_destroy(s);
}

static void
test_repeats_use_log_tf(void **state)
{
    struct features_scratch *s = features_scratch_new(BITS);
    struct features_vec v;

    assert_int_equal(features_extract_text(s, "cat cat cat dog", 15, &v), 0);
    double a = 1 + log(3), b = 1;
    double norm = sqrt(a * a + b * b);
    assert_float_equal(value_of(&v, word_id(FEATURES_FAM_WORD, "cat")), a / norm, 1e-5);
    assert_float_equal(value_of(&v, word_id(FEATURES_FAM_WORD, "dog")), b / norm, 1e-5);
    features_scratch_destroy(s);
}

static void
test_folding_and_numbers(void **state)
{
    struct features_scratch *s = features_scratch_new(BITS);
    struct features_vec v;

    /* ASCII and Latin-1 capitals fold; numbers become their digit count */
    const char *t = "HELLO \xc3\x84rger 17";
    assert_int_equal(features_extract_text(s, t, strlen(t), &v), 0);
    assert_true(value_of(&v, word_id(FEATURES_FAM_WORD, "hello")) > 0);
    assert_true(value_of(&v, word_id(FEATURES_FAM_WORD, "\xc3\xa4rger")) > 0);
    uint32_t num2 = features_bucket(BITS, FEATURES_FAM_WORD, features__num_key(2));
    assert_true(value_of(&v, num2) > 0);
    assert_true(value_of(&v, word_id(FEATURES_FAM_WORD, "17")) < 0);
    assert_int_equal(features__fold('Q'), 'q');
    assert_int_equal(features__fold(0x391), 0x3b1); /* Greek Alpha */
    assert_int_equal(features__fold(0x416), 0x436); /* Cyrillic Zhe */
    assert_int_equal(features__fold(0xd7), 0xd7);   /* the multiplication sign stays */

    /* "42" and "17" share a feature */
    struct features_vec w;
    assert_int_equal(features_extract_text(s, "42", 2, &w), 0);
    assert_true(value_of(&w, num2) > 0);
    features_scratch_destroy(s);
}

static void
test_invalid_utf8(void **state)
{
    struct features_scratch *s = features_scratch_new(BITS);
    struct features_vec v;
    const char bad[] = "ab\xff\xfe"
                       "cd\xc3"; /* invalid bytes and a truncated sequence */

    assert_int_equal(features_extract_text(s, bad, sizeof(bad) - 1, &v), 0);
    /* invalid bytes separate words: "ab" and "cd" */
    assert_true(value_of(&v, word_id(FEATURES_FAM_WORD, "ab")) > 0);
    assert_true(value_of(&v, word_id(FEATURES_FAM_WORD, "cd")) > 0);
    features_scratch_destroy(s);
}

static void
test_dense_signals(void **state)
{
    struct features_scratch *s = features_scratch_new(BITS);
    struct features_vec v;
    const char *t = "Which is right? Solve $x^2 = 4$.\nA. 1\nB) 2\n(C) 3\nD: 4\nAnswer:";

    assert_int_equal(features_extract_text(s, t, strlen(t), &v), 0);
    assert_float_equal(v.dense[dense_index("log_mc_options")], log1p(4), 1e-6);
    assert_float_equal(v.dense[dense_index("log_questions")], log1p(1), 1e-6);
    assert_float_equal(v.dense[dense_index("log_latex")], log1p(2), 1e-6);
    assert_float_equal(v.dense[dense_index("log_operators")], log1p(2), 1e-6); /* ^ = */
    assert_float_equal(v.dense[dense_index("log_newlines")], log1p(5), 1e-6);
    assert_float_equal(v.dense[dense_index("log_turns")], log1p(1), 1e-6);
    assert_float_equal(v.dense[dense_index("has_system")], 0, 1e-6);
    features_scratch_destroy(s);
}

static void
test_messages(void **state)
{
    struct features_scratch *s = features_scratch_new(BITS);
    struct features_vec v;
    json_error_t err;
    json_t *req = json_loads(
        "{\"model\":\"triage\",\"max_tokens\":100,\"tools\":[{},{}],\"messages\":["
        "{\"role\":\"system\",\"content\":\"Be terse\"},"
        "{\"role\":\"user\",\"content\":\"first question\"},"
        "{\"role\":\"assistant\",\"content\":null},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Final ask\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}}]}]}",
        0, &err);
    assert_non_null(req);
    assert_int_equal(features_extract(s, req, &v), 0);
    /* the last user turn is the main stream; the rest goes to the context family */
    assert_true(value_of(&v, word_id(FEATURES_FAM_WORD, "final")) > 0);
    assert_true(value_of(&v, word_id(FEATURES_FAM_WORD, "first")) < 0);
    assert_true(value_of(&v, word_id(FEATURES_FAM_CONTEXT, "first")) > 0);
    assert_true(value_of(&v, word_id(FEATURES_FAM_CONTEXT, "terse")) > 0);
    assert_float_equal(v.dense[dense_index("log_turns")], log1p(4), 1e-6);
    assert_float_equal(v.dense[dense_index("log_user_turns")], log1p(2), 1e-6);
    assert_float_equal(v.dense[dense_index("has_system")], 1, 1e-6);
    assert_float_equal(v.dense[dense_index("log_system_chars")], log1p(8), 1e-6);
    assert_float_equal(v.dense[dense_index("log_max_tokens")], log1p(100), 1e-6);
    assert_float_equal(v.dense[dense_index("has_tools")], 1, 1e-6);
    assert_float_equal(v.dense[dense_index("log_tools")], log1p(2), 1e-6);
    assert_float_equal(v.dense[dense_index("log_images")], log1p(1), 1e-6);
    assert_float_equal(v.dense[dense_index("log_chars_last")], log1p(9), 1e-6);
    json_decref(req);

    /* a legacy prompt string is the user turn, same as features_extract_text */
    struct features_vec a;
    req = json_pack("{s:s}", "prompt", "Hello world");
    assert_int_equal(features_extract(s, req, &a), 0);
    size_t n = a.n;
    uint32_t *ids = malloc(n * sizeof(uint32_t));
    float *vals = malloc(n * sizeof(float)), dense[FEATURES_N_DENSE];
    memcpy(ids, a.ids, n * sizeof(uint32_t));
    memcpy(vals, a.vals, n * sizeof(float));
    memcpy(dense, a.dense, sizeof(dense));
    assert_int_equal(features_extract_text(s, "Hello world", 11, &a), 0);
    assert_int_equal(a.n, n);
    assert_memory_equal(a.ids, ids, n * sizeof(uint32_t));
    assert_memory_equal(a.vals, vals, n * sizeof(float));
    assert_memory_equal(a.dense, dense, sizeof(dense));
    free(ids);
    free(vals);
    json_decref(req);
    features_scratch_destroy(s);
}

static void
test_rejects(void **state)
{
    struct features_scratch *s = features_scratch_new(BITS);
    struct features_vec v;
    json_t *req;

    assert_null(features_scratch_new(FEATURES_MIN_BITS - 1));
    assert_null(features_scratch_new(FEATURES_MAX_BITS + 1));
    req = json_pack("{s:[]}", "messages");
    assert_int_equal(features_extract(s, req, &v), -EINVAL);
    json_decref(req);
    req = json_pack("{s:i}", "prompt", 3);
    assert_int_equal(features_extract(s, req, &v), -EINVAL);
    json_decref(req);
    req = json_pack("[s]", "x");
    assert_int_equal(features_extract(s, req, &v), -EINVAL);
    json_decref(req);
    assert_int_equal(features_extract_text(s, "", 0, &v), -EINVAL);
    req = json_pack("{s:[s,i]}", "prompt", "legacy batch", 3);
    assert_int_equal(features_extract(s, req, &v), 0);
    assert_true(value_of(&v, word_id(FEATURES_FAM_WORD, "legacy")) > 0);
    json_decref(req);
    req = json_pack("{s:[]}", "prompt");
    assert_int_equal(features_extract(s, req, &v), -EINVAL);
    json_decref(req);
    /* junk inside messages is skipped, not fatal */
    req = json_loads("{\"messages\":[1,{\"role\":7,\"content\":{}},{\"content\":\"ok\"}]}", 0, NULL);
    assert_int_equal(features_extract(s, req, &v), 0);
    assert_true(value_of(&v, word_id(FEATURES_FAM_WORD, "ok")) > 0);
    json_decref(req);
    features_scratch_destroy(s);
}

static void
test_big_prompt_is_bounded(void **state)
{
    struct features_scratch *s = features_scratch_new(12);
    struct features_vec v;
    size_t len = 1 << 20;
    char *big = malloc(len);

    /* pseudo-random words: far more distinct features than buckets */
    uint32_t x = 12345;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245 + 12345;
        big[i] = (x >> 16) % 7 == 0 ? ' ' : (char)('a' + (x >> 8) % 26);
    }
    assert_int_equal(features_extract_text(s, big, len, &v), 0);
    assert_true(v.n <= (1u << 12));
    assert_float_equal(v.dense[dense_index("log_chars_last")], log1p((double)len), 1e-3);
    double sum = 0;
    for (size_t i = 0; i < v.n; i++) {
        assert_true(isfinite(v.vals[i]) && v.vals[i] > 0);
        sum += v.vals[i];
    }
    assert_true(sum > 0);
    /* the scratch is clean afterwards: a small prompt gives the small answer */
    struct features_scratch *fresh = features_scratch_new(12);
    struct features_vec a, b;
    assert_int_equal(features_extract_text(s, "tiny prompt", 11, &a), 0);
    assert_int_equal(features_extract_text(fresh, "tiny prompt", 11, &b), 0);
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.ids, b.ids, a.n * sizeof(uint32_t));
    assert_memory_equal(a.vals, b.vals, a.n * sizeof(float));
    features_scratch_destroy(fresh);
    free(big);
    features_scratch_destroy(s);
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

/* A request's encoded features decode to the same vector, bit for bit and in order,
 * from bytes and from base64; the scratch extracts as before afterwards. */
static void
test_blob_round_trip(void **state)
{
    struct features_scratch *s = features_scratch_new(BITS), *d = features_scratch_new(BITS);
    struct features_vec a, b;
    size_t len;
    json_t *req = json_loads("{\"messages\":[{\"role\":\"system\",\"content\":\"Be terse.\"},"
                             "{\"role\":\"user\",\"content\":\"Prove 17 + 25 = 42, twice: 17 + 25."
                             " $x^2$\"}],\"max_tokens\":300,\"tools\":[{\"type\":\"function\"}]}",
                             0, NULL);

    (void)state;
    assert_non_null(req);
    assert_int_equal(features_extract(s, req, &a), 0);
    unsigned char *blob = features_blob_encode(&a, BITS, &len);
    assert_int_equal(len, features_blob_size(a.n));
    assert_int_equal(features_blob_decode(d, blob, len, &b), 0);
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.ids, b.ids, a.n * sizeof(uint32_t));
    assert_memory_equal(a.vals, b.vals, a.n * sizeof(float));
    assert_memory_equal(a.dense, b.dense, sizeof(a.dense));
    char *text = b64(blob, len);
    assert_int_equal(features_blob_decode_base64(d, text, strlen(text), &b), 0);
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.ids, b.ids, a.n * sizeof(uint32_t));
    assert_memory_equal(a.vals, b.vals, a.n * sizeof(float));
    assert_memory_equal(a.dense, b.dense, sizeof(a.dense));
    /* decoding left d fit to extract again: same answer as the first scratch */
    assert_int_equal(features_extract(d, req, &b), 0);
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.ids, b.ids, a.n * sizeof(uint32_t));
    /* an empty vector (dense signals only) is a valid blob too */
    struct features_vec e = {0};
    unsigned char *eb = features_blob_encode(&e, BITS, &len);
    assert_int_equal(features_blob_decode(d, eb, len, &b), 0);
    assert_int_equal(b.n, 0);
    free(eb);
    free(text);
    free(blob);
    json_decref(req);
    features_scratch_destroy(s);
    features_scratch_destroy(d);
}

static void
put32(unsigned char *p, uint32_t v)
{
    memcpy(p, &v, 4); /* the test machines are little-endian, as the format is */
}

/* Anything features_blob_encode did not write is refused, and a blob of another
 * version or hash space is told apart (-EPROTO). */
static void
test_blob_rejects(void **state)
{
    struct features_scratch *s = features_scratch_new(BITS);
    struct features_vec a, b;
    size_t len;
    const float nan = NAN;

    (void)state;
    assert_int_equal(features_extract_text(s, "alpha beta gamma delta", 22, &a), 0);
    unsigned char *good = features_blob_encode(&a, BITS, &len);
    unsigned char *p = malloc(len + 8);
    size_t ids = FEATURES_BLOB_HEADER, vals = ids + 4 * a.n, dense = vals + 4 * a.n;
    assert_true(a.n >= 2);

#define TRY(want, n, edit)                                                                  \
    do {                                                                                   \
        memcpy(p, good, len);                                                              \
        edit;                                                                              \
        assert_int_equal(features_blob_decode(s, p, (n), &b), (want));                     \
    } while (0)
    TRY(0, len, (void)0);
    TRY(-EINVAL, 0, (void)0);
    TRY(-EINVAL, FEATURES_BLOB_HEADER - 1, (void)0);
    TRY(-EINVAL, len - 1, (void)0);
    TRY(-EINVAL, len + 1, p[len] = 0);
    TRY(-EINVAL, len, p[0] = 'X');
    TRY(-EINVAL, len, p[2] = FEATURES_BLOB_FORMAT + 1);
    TRY(-EINVAL, len, p[3] = FEATURES_MAX_BITS + 1);
    TRY(-EINVAL, len, p[3] = FEATURES_MIN_BITS - 1);
    TRY(-EPROTO, len, p[3] = BITS - 1);
    TRY(-EPROTO, len, put32(p + 4, FEATURES_VERSION + 1));
    TRY(-EINVAL, len, put32(p + 8, (uint32_t)a.n + 1));
    TRY(-EINVAL, len, put32(p + 8, UINT32_MAX));
    TRY(-EINVAL, len, put32(p + 12, FEATURES_N_DENSE + 1));
    TRY(-EINVAL, len, put32(p + ids, 1u << BITS));
    TRY(-EINVAL, len, memcpy(p + ids + 4, p + ids, 4)); /* a repeated id */
    TRY(-EINVAL, len, memcpy(p + vals, &nan, 4));
    TRY(-EINVAL, len, memcpy(p + dense + 4, &nan, 4));
#undef TRY
    assert_int_equal(features_blob_decode(s, NULL, 0, &b), -EINVAL);

    char *text = b64(good, len);
    size_t tl = strlen(text);
    assert_int_equal(features_blob_decode_base64(s, text, tl, &b), 0);
    assert_int_equal(features_blob_decode_base64(s, text, tl - 1, &b), -EINVAL);
    text[5] = '*';
    assert_int_equal(features_blob_decode_base64(s, text, tl, &b), -EINVAL);
    assert_int_equal(features_blob_decode_base64(s, "", 0, &b), -EINVAL);
    assert_int_equal(features_blob_decode_base64(s, "VEY=", 4, &b), -EINVAL);
    assert_int_equal(features_blob_decode_base64(s, "VEZ=", 4, &b), -EINVAL); /* stray bits */
    assert_int_equal(features_blob_decode_base64(s, "====", 4, &b), -EINVAL);
    free(text);
    free(p);
    free(good);
    features_scratch_destroy(s);
}

/* A stored answer (signals and hashed words) decodes to the same numbers, from bytes and
 * base64; a model of other bits gets the signals alone (1); other signals are refused
 * (-EPROTO); anything else not written by the encoder is -EINVAL. */
static void
test_answer_blob(void **state)
{
    struct features_scratch *s = features_scratch_new(BITS), *o = features_scratch_new(BITS + 1);
    struct features_vec a, b;
    float sig[FEATURES_N_ANSWER], got[FEATURES_N_ANSWER];
    size_t len, wlen;
    const float nan = NAN;

    (void)state;
    for (size_t j = 0; j < FEATURES_N_ANSWER; j++)
        sig[j] = (float)j * 0.25f - 1.0f;
    assert_int_equal(features_extract_text(s, "The answer is 42, maybe.", 24, &a), 0);
    assert_true(a.n >= 2);
    unsigned char *blob = features_answer_blob_encode(sig, &a, BITS, &len);
    assert_int_equal(len, features_answer_blob_size(a.n));
    assert_int_equal(features_answer_blob_decode(s, blob, len, got, &b), 0);
    assert_memory_equal(sig, got, sizeof(sig));
    assert_int_equal(b.n, a.n);
    assert_memory_equal(a.ids, b.ids, a.n * sizeof(uint32_t));
    assert_memory_equal(a.vals, b.vals, a.n * sizeof(float));
    char *text = b64(blob, len);
    memset(got, 0, sizeof(got));
    assert_int_equal(features_answer_blob_decode_base64(s, text, strlen(text), got, &b), 0);
    assert_memory_equal(sig, got, sizeof(sig));
    assert_int_equal(b.n, a.n);
    /* another hash space: the signals still, no words */
    memset(got, 0, sizeof(got));
    assert_int_equal(features_answer_blob_decode(o, blob, len, got, &b), 1);
    assert_memory_equal(sig, got, sizeof(sig));
    assert_int_equal(b.n, 0);
    /* signals alone */
    unsigned char *bare = features_answer_blob_encode(sig, NULL, BITS, &wlen);
    assert_int_equal(wlen, features_answer_blob_size(0));
    assert_int_equal(features_answer_blob_decode(o, bare, wlen, got, &b), 0);
    assert_int_equal(b.n, 0);

    unsigned char *p = malloc(len + 8);
    size_t ids = FEATURES_ANSWER_BLOB_HEADER + 4 * FEATURES_N_ANSWER, vals = ids + 4 * a.n;
#define TRY(want, n, edit)                                                                  \
    do {                                                                                   \
        memcpy(p, blob, len);                                                              \
        edit;                                                                              \
        assert_int_equal(features_answer_blob_decode(s, p, (n), got, &b), (want));         \
    } while (0)
    TRY(0, len, (void)0);
    TRY(-EINVAL, 0, (void)0);
    TRY(-EINVAL, FEATURES_ANSWER_BLOB_HEADER - 1, (void)0);
    TRY(-EINVAL, len - 1, (void)0);
    TRY(-EINVAL, len + 1, p[len] = 0);
    TRY(-EINVAL, len, p[1] = 'F');
    TRY(-EINVAL, len, p[2] = FEATURES_ANSWER_BLOB_FORMAT + 1);
    TRY(-EINVAL, len, p[3] = FEATURES_MAX_BITS + 1);
    TRY(-EINVAL, len, p[3] = 0); /* words without a hash space */
    TRY(-EPROTO, len, put32(p + 8, FEATURES_ANSWER_VERSION + 1));
    TRY(-EPROTO, len, put32(p + 12, FEATURES_N_ANSWER + 1));
    TRY(1, len, put32(p + 4, FEATURES_VERSION + 1));
    TRY(-EINVAL, len, put32(p + 16, (uint32_t)a.n + 1));
    TRY(-EINVAL, len, put32(p + 16, UINT32_MAX));
    TRY(-EINVAL, len, memcpy(p + FEATURES_ANSWER_BLOB_HEADER, &nan, 4));
    TRY(-EINVAL, len, put32(p + ids, 1u << BITS));
    TRY(-EINVAL, len, memcpy(p + ids + 4, p + ids, 4));
    TRY(-EINVAL, len, memcpy(p + vals, &nan, 4));
#undef TRY
    memcpy(p, bare, wlen);
    put32(p + 4, FEATURES_VERSION); /* no words, yet a hashing named: not the encoder's */
    assert_int_equal(features_answer_blob_decode(s, p, wlen, got, &b), -EINVAL);
    assert_int_equal(features_answer_blob_decode(s, NULL, 0, got, &b), -EINVAL);
    assert_int_equal(features_answer_blob_decode_base64(s, text, strlen(text) - 1, got, &b),
                     -EINVAL);
    free(p);
    free(text);
    free(bare);
    free(blob);
    features_scratch_destroy(s);
    features_scratch_destroy(o);
}

static size_t
answer_index(const char *name)
{
    for (size_t i = 0; i < FEATURES_N_ANSWER; i++)
        if (strcmp(features_answer_name(i), name) == 0)
            return i;
    fail_msg("no answer signal %s", name);
    return 0;
}

static void
test_answer_signals(void **state)
{
    float s[FEATURES_N_ANSWER];
    const char *prompt = "Tom has 12 apples and buys 30 more. How many?";
    const char *a = "Tom has 12 apples.\nMaybe he buys 30 more, so 12 + 30 = 42.5.\n"
                    "Tom has 12 apples.\nThe answer is 42.5";

    assert_null(features_answer_name(FEATURES_N_ANSWER));
    features_answer_signals(a, strlen(a), prompt, strlen(prompt), "stop", NULL, 0, s);
    assert_float_equal(s[answer_index("bytes")], log1p(strlen(a)), 1e-5);
    assert_float_equal(s[answer_index("lines")], log1p(4), 1e-5);
    assert_float_equal(s[answer_index("numbers")], log1p(7), 1e-5);
    assert_float_equal(s[answer_index("final_marker")], 1, 0);
    assert_float_equal(s[answer_index("hedges")], log1p(1), 1e-6);
    assert_float_equal(s[answer_index("ends_number")], 1, 0);
    assert_float_equal(s[answer_index("ends_clean")], 1, 0);
    assert_float_equal(s[answer_index("repeated")], 0.25, 1e-6);
    assert_float_equal(s[answer_index("finish_length")], 0, 0);
    assert_float_equal(s[answer_index("no_finish")], 0, 0);
    assert_float_equal(s[answer_index("has_logprobs")], 0, 0);
    assert_float_equal(s[answer_index("final_fraction")], 1, 0);
    assert_float_equal(s[answer_index("prompt_numbers_unused")], 0, 0);

    /* cut at max_tokens, no prompt, token log-probabilities (bad ones skipped) */
    const float lp[] = {-0.1f, -2.0f, NAN, 0.5f, -0.3f};
    features_answer_signals("We first compute", 16, NULL, 0, "length", lp, 5, s);
    assert_float_equal(s[answer_index("finish_length")], 1, 0);
    assert_float_equal(s[answer_index("ends_clean")], 0, 0);
    assert_float_equal(s[answer_index("has_logprobs")], 1, 0);
    assert_float_equal(s[answer_index("lp_mean")], -0.8, 1e-5);
    assert_float_equal(s[answer_index("lp_min")], -2.0, 1e-6);
    assert_float_equal(s[answer_index("lp_unsure")], 1.0 / 3, 1e-6);
    assert_float_equal(s[answer_index("prompt_numbers_unused")], 0, 0);

    /* an empty answer, an odd finish, every number of the prompt unused */
    features_answer_signals(NULL, 5, prompt, strlen(prompt), "content_filter", NULL, 0, s);
    assert_float_equal(s[answer_index("bytes")], 0, 0);
    assert_float_equal(s[answer_index("finish_other")], 1, 0);
    assert_float_equal(s[answer_index("prompt_numbers_unused")], 1, 0);

    /* from a chat completion, with the request for the prompt */
    json_t *req = json_loads("{\"messages\":[{\"role\":\"user\",\"content\":\"2 and 3?\"}]}", 0, NULL);
    json_t *resp = json_loads("{\"choices\":[{\"message\":{\"content\":\"5\"},\"finish_reason\":"
                              "\"stop\",\"logprobs\":{\"content\":[{\"logprob\":-0.5}]}}]}",
                              0, NULL);
    assert_int_equal(features_answer_from_response(req, resp, s), 0);
    assert_float_equal(s[answer_index("lp_mean")], -0.5, 1e-6);
    assert_float_equal(s[answer_index("prompt_numbers_unused")], 1, 0);
    assert_float_equal(s[answer_index("ends_number")], 1, 0);
    assert_int_equal(features_answer_from_response(req, req, s), -EINVAL);
    json_decref(req);
    json_decref(resp);
}

/* The answer's arithmetic signals of text (NUL-terminated) answering prompt. */
static void
arith_of(const char *prompt, const char *text, float *s)
{
    features_answer_signals(text, strlen(text), prompt, prompt ? strlen(prompt) : 0, "stop", NULL,
                            0, s);
}

static void
test_answer_arithmetic(void **state)
{
    float s[FEATURES_N_ANSWER];
    const char *prompt = "Janet's ducks lay 16 eggs a day. She eats 3 and bakes with 4. "
                         "She sells the rest at $2 each. How much does she make?";

    (void)state;
    /* right, with a GSM8K calculator annotation: 4 results, 3 checked, none wrong */
    arith_of(prompt,
             "She has 16 - 3 = 13 eggs left, then 13 - 4 = 9.\n"
             "She makes 9 * $2 = $<<9*2=18>>18.\n#### 18",
             s);
    assert_float_equal(s[answer_index("results")], log1p(3), 1e-6);
    assert_float_equal(s[answer_index("arith_checked")], log1p(3), 1e-6);
    assert_float_equal(s[answer_index("arith_wrong")], 0, 0);
    assert_float_equal(s[answer_index("final_unresulted")], 0, 0);
    assert_float_equal(s[answer_index("prompt_numbers")], log1p(4), 1e-6);
    assert_float_equal(s[answer_index("prompt_bytes")], log1p(strlen(prompt)), 1e-5);

    /* one slip (13 - 4 = 10), and a final number no computation gave */
    arith_of(prompt, "16 - 3 = 13\n13 - 4 = 10\n10 * 2 = 20\n#### 22", s);
    assert_float_equal(s[answer_index("results")], log1p(3), 1e-6);
    assert_float_equal(s[answer_index("arith_checked")], log1p(3), 1e-6);
    assert_float_equal(s[answer_index("arith_wrong")], log1p(1), 1e-6);
    assert_float_equal(s[answer_index("final_unresulted")], 1, 0);

    /* precedence, parentheses, x and the signs, thousands, chained results, decimals as
     * shown, a negative result; a percentage is not evaluated; "==" and "<=" are no '=' */
    arith_of(NULL,
             "2 + 3 * 4 = 14; (2 + 3) x 4 = 20; 6 \xc3\x97 7 = 42; 9 \xc3\xb7 3 = 3;\n"
             "1,000 + 250 = 1,250 - 50 = 1200; 10 / 3 = 3.33; 3 - 5 = -2; 2 \\times 8 = 16\n"
             "20% * 50 = 10; 1 + 1 == 2; 3 <= 4\n#### 16",
             s);
    assert_float_equal(s[answer_index("results")], log1p(10), 1e-6);
    assert_float_equal(s[answer_index("arith_checked")], log1p(9), 1e-6);
    assert_float_equal(s[answer_index("arith_wrong")], 0, 0);
    assert_float_equal(s[answer_index("final_unresulted")], 0, 0);
    assert_float_equal(s[answer_index("prompt_numbers")], 0, 0);
    assert_float_equal(s[answer_index("prompt_bytes")], 0, 0);

    /* wrong by more than the shown rounding; a division by zero and words are not checked */
    arith_of(NULL, "10 / 3 = 3.4\n5 / 0 = 7\nfive plus 2 = 7\nso the answer is 7", s);
    assert_float_equal(s[answer_index("results")], log1p(3), 1e-6);
    assert_float_equal(s[answer_index("arith_checked")], log1p(1), 1e-6);
    assert_float_equal(s[answer_index("arith_wrong")], log1p(1), 1e-6);
    assert_float_equal(s[answer_index("final_unresulted")], 0, 0);

    /* no computation at all: nothing to check, and nothing unresulted */
    arith_of(prompt, "She makes 18 dollars.", s);
    assert_float_equal(s[answer_index("results")], 0, 0);
    assert_float_equal(s[answer_index("arith_checked")], 0, 0);
    assert_float_equal(s[answer_index("final_unresulted")], 0, 0);

    /* a run too long to evaluate, a number too long to read: counted, not checked */
    char big[4096];
    size_t n = 0;
    for (int i = 0; i < 60; i++)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "1 + ");
    n += (size_t)snprintf(big + n, sizeof(big) - n, "1 = 61\n");
    n += (size_t)snprintf(big + n, sizeof(big) - n, "1 + %s = 2", "123456789012345678901234567890123456789012345");
    arith_of(NULL, big, s);
    assert_float_equal(s[answer_index("results")], log1p(2), 1e-6);
    assert_float_equal(s[answer_index("arith_checked")], 0, 0);

    /* version 1's signals are the first ones of this version's, in the same order */
    assert_int_equal(FEATURES_N_ANSWER_V(FEATURES_ANSWER_VERSION), FEATURES_N_ANSWER);
    assert_string_equal(features_answer_name(FEATURES_N_ANSWER_V(1) - 1), "prompt_numbers_unused");
    assert_int_equal(FEATURES_N_ANSWER_V(FEATURES_ANSWER_VERSION + 1), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answer_signals),
        cmocka_unit_test(test_answer_arithmetic),
        cmocka_unit_test(test_exact_ids_and_values),
        cmocka_unit_test(test_repeats_use_log_tf),
        cmocka_unit_test(test_folding_and_numbers),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_dense_signals),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_big_prompt_is_bounded),
        cmocka_unit_test(test_blob_round_trip),
        cmocka_unit_test(test_blob_rejects),
        cmocka_unit_test(test_answer_blob),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
