/* test_scripts.c - features/ across scripts: Unicode case folding, character bigrams of unsegmented scripts, digits and maths the same in every script. */
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

/* Bucket of a word (or character pair) token: the FNV-1a of its folded UTF-8 bytes. */
static uint32_t
word_id(const char *w)
{
    return features_bucket(BITS, FEATURES_FAM_WORD, features_hash_token(w, strlen(w)));
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

/* Extracts a and b with two scratches and asserts the vectors are the same, bit for bit. */
static void
assert_same_vector(const char *a, const char *b)
{
    struct features_scratch *s = features_scratch_new(BITS), *t = features_scratch_new(BITS);
    struct features_vec v, w;

    assert_int_equal(features_extract_text(s, a, strlen(a), &v), 0);
    assert_int_equal(features_extract_text(t, b, strlen(b), &w), 0);
    assert_int_equal(v.n, w.n);
    assert_memory_equal(v.ids, w.ids, v.n * sizeof(uint32_t));
    assert_memory_equal(v.vals, w.vals, v.n * sizeof(float));
    assert_memory_equal(v.dense, w.dense, sizeof(v.dense));
    features_scratch_destroy(s);
    features_scratch_destroy(t);
}

/* Returns the value of word w's feature in the vector of text. */
static double
word_value(const char *text, const char *w)
{
    struct features_scratch *s = features_scratch_new(BITS);
    struct features_vec v;
    double x;

    assert_int_equal(features_extract_text(s, text, strlen(text), &v), 0);
    x = value_of(&v, word_id(w));
    features_scratch_destroy(s);
    return x;
}

static void
test_fold_code_points(void **state)
{
    static const uint32_t pairs[][2] = {
        {'Q', 'q'},       {0xc0, 0xe0},     {0xde, 0xfe},     /* Latin-1 */
        {0x100, 0x101},   {0x141, 0x142},   {0x150, 0x151},   /* Ā Ł Ő */
        {0x160, 0x161},   {0x17d, 0x17e},   {0x178, 0xff},    /* Š Ž Ÿ */
        {0x130, 'i'},     {0x17f, 's'},     {0xb5, 0x3bc},    /* İ, long s, micro */
        {0x391, 0x3b1},   {0x3a9, 0x3c9},   {0x386, 0x3ac},   /* Greek: Α Ω Ά */
        {0x388, 0x3ad},   {0x38c, 0x3cc},   {0x38f, 0x3ce},   /* Έ Ό Ώ */
        {0x3aa, 0x3ca},   {0x3c2, 0x3c3},                     /* Ϊ, final sigma */
        {0x401, 0x451},   {0x410, 0x430},   {0x42f, 0x44f},   /* Cyrillic: Ё А Я */
        {0x462, 0x463},   {0x490, 0x491},   {0x4c0, 0x4cf},   /* Ѣ Ґ Ӏ */
        {0x4c1, 0x4c2},   {0x4d8, 0x4d9},   {0x531, 0x561},   /* Ӂ Ә, Armenian Ա */
        {0x1ea0, 0x1ea1},                                     /* Vietnamese Ạ */
    };
    static const uint32_t same[] = {
        0xd7, 0xdf, 0xf7, 0x131, 0x138, 0x149, 0x3c3, 0x44f, 0x4cf, 0x4e00, 0x3042, 0xac00,
    };

    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        assert_int_equal(features__fold(pairs[i][0]), pairs[i][1]);
        assert_int_equal(features__fold(pairs[i][1]), pairs[i][1]);
    }
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++)
        assert_int_equal(features__fold(same[i]), same[i]);
    /* folding is idempotent, and a folded letter is still a letter */
    for (uint32_t c = 0; c < 0x2000; c++) {
        uint32_t f = features__fold(c);
        assert_int_equal(features__fold(f), f);
        if (f != c)
            assert_true(features__is_word(f));
    }
}

static void
test_fold_words(void **state)
{
    struct features_scratch *s = features_scratch_new(BITS);
    struct features_vec v;

    /* capitals and small letters of one word give one feature, in every cased script */
    const char *lodz = "\xc5\x82\xc3\xb3\x64\xc5\xba"; /* łódź */
    assert_float_equal(word_value("\xc5\x81\xc3\x93\x44\xc5\xb9", lodz), 1.0, 1e-6);
    assert_float_equal(word_value("\xc5\x81\xc3\xb3\x64\xc5\xba", lodz), 1.0, 1e-6);
    const char *sophos = "\xcf\x83\xce\xbf\xcf\x86\xce\xbf\xcf\x83"; /* σοφοσ */
    assert_float_equal(word_value("\xce\xa3\xce\x9f\xce\xa6\xce\x9f\xce\xa3", sophos), 1.0, 1e-6);
    assert_float_equal(word_value("\xcf\x83\xce\xbf\xcf\x86\xce\xbf\xcf\x82", sophos), 1.0, 1e-6);
    assert_float_equal(word_value("\xc4\xb0stanbul", "istanbul"), 1.0, 1e-6); /* İstanbul */
    const char *t = "\xd0\x9c\xd0\x9e\xd0\xa1\xd0\x9a\xd0\x92\xd0\x90 "                 /* МОСКВА */
                    "\xd0\xbc\xd0\xbe\xd1\x81\xd0\xba\xd0\xb2\xd0\xb0";                 /* москва */
    assert_int_equal(features_extract_text(s, t, strlen(t), &v), 0);
    /* one word twice: log term frequency 1 + log 2, alone in its family */
    assert_float_equal(value_of(&v, word_id("\xd0\xbc\xd0\xbe\xd1\x81\xd0\xba\xd0\xb2\xd0\xb0")),
                       1.0, 1e-6);
    assert_float_equal(v.dense[dense_index("upper_frac")], 0.5, 1e-6);
    assert_float_equal(v.dense[dense_index("log_words_last")], log1p(2), 1e-6);
    features_scratch_destroy(s);
}

static void
test_digits_and_maths(void **state)
{
    struct features_scratch *s = features_scratch_new(BITS);
    struct features_vec v;
    static const uint32_t digits[][2] = {
        {0xff11, '1'},  {0x663, '3'},   {0x6f5, '5'},   {0x967, '1'},   {0x9ef, '9'},
        {0xe52, '2'},   {0x1040, '0'},  {0x1d7d0, '2'}, {0x1d7ff, '9'}, {0xabf9, '9'},
    };
    static const uint32_t signs[][2] = {
        {0x2212, '-'}, {0xff0b, '+'}, {0xff1d, '='}, {0x2215, '/'}, {0xff0a, '*'},
        {0xff1f, '?'}, {0x3002, '.'}, {0xff08, '('}, {0xff21, 'A'}, {0xbf, ' '},
        {0x201c, '"'}, {0x300c, '"'}, {0xd7, 0xd7},  {0x221a, 0x221a},
    };

    for (size_t i = 0; i < sizeof(digits) / sizeof(digits[0]); i++)
        assert_int_equal(features__norm(digits[i][0]), digits[i][1]);
    for (size_t i = 0; i < sizeof(signs) / sizeof(signs[0]); i++)
        assert_int_equal(features__norm(signs[i][0]), signs[i][1]);
    for (uint32_t c = 0; c < 0xa1; c++)
        assert_int_equal(features__norm(c), c);

    /* full-width digits and operators are the ASCII ones */
    assert_same_vector("\xef\xbc\x91\xef\xbc\x97\xef\xbc\x8b\xef\xbc\x92\xef\xbc\x95\xef\xbc\x9f",
                       "17+25?");
    /* Arabic-Indic and Devanagari digits too, and the minus sign */
    assert_same_vector("\xd9\xa4\xd9\xa2 \xe2\x88\x92 \xe0\xa5\xa7", "42 - 1");
    /* a number in any digits folds to its length */
    const char *t = "\xd9\xa1\xd9\xa2\xd9\xa3"; /* ١٢٣ */
    assert_int_equal(features_extract_text(s, t, strlen(t), &v), 0);
    uint32_t num3 = features_bucket(BITS, FEATURES_FAM_WORD, features__num_key(3));
    assert_float_equal(value_of(&v, num3), 1.0, 1e-6);
    assert_float_equal(v.dense[dense_index("digit_frac")], 1.0, 1e-6);
    assert_float_equal(v.dense[dense_index("log_numbers")], log1p(1), 1e-6);
    /* the Spanish opening '?' is no token: the question reads as in English */
    assert_same_vector("\xc2\xbfqu\xc3\xa9?", " qu\xc3\xa9?");
    features_scratch_destroy(s);
}

static void
test_unsegmented_bigrams(void **state)
{
    struct features_scratch *s = features_scratch_new(BITS);
    struct features_vec v;

    /* 证明素数 (prove primes): three pairs, no four-character word */
    const char *t = "\xe8\xaf\x81\xe6\x98\x8e\xe7\xb4\xa0\xe6\x95\xb0";
    assert_int_equal(features_extract_text(s, t, strlen(t), &v), 0);
    assert_float_equal(value_of(&v, word_id("\xe8\xaf\x81\xe6\x98\x8e")), 1 / sqrt(3), 1e-6);
    assert_float_equal(value_of(&v, word_id("\xe6\x98\x8e\xe7\xb4\xa0")), 1 / sqrt(3), 1e-6);
    assert_float_equal(value_of(&v, word_id("\xe7\xb4\xa0\xe6\x95\xb0")), 1 / sqrt(3), 1e-6);
    assert_true(value_of(&v, word_id(t)) < 0);
    assert_true(value_of(&v, word_id("\xe8\xaf\x81")) < 0); /* no single characters */
    /* 4 Han characters of weight 3: 12 characters of text, 2 words */
    assert_int_equal(features__unseg_weight(0x8bc1), 3);
    assert_float_equal(v.dense[dense_index("log_chars_last")], log1p(12), 1e-6);
    assert_float_equal(v.dense[dense_index("log_words_last")], log1p(2), 1e-6);
    assert_float_equal(v.dense[dense_index("symbol_frac")], 0, 1e-6);

    /* 用Go实现。: Latin letters end a run and are a word of their own; a run of one
     * character is a token; the ideographic full stop is '.' */
    t = "\xe7\x94\xa8Go\xe5\xae\x9e\xe7\x8e\xb0\xe3\x80\x82";
    assert_int_equal(features_extract_text(s, t, strlen(t), &v), 0);
    assert_true(value_of(&v, word_id("go")) > 0);
    assert_true(value_of(&v, word_id("\xe7\x94\xa8")) > 0);
    assert_true(value_of(&v, word_id("\xe5\xae\x9e\xe7\x8e\xb0")) > 0);
    assert_true(value_of(&v, word_id(".")) > 0);
    assert_float_equal(v.dense[dense_index("log_sentences")], log1p(1), 1e-6);
    /* the token order is the text's: 用, go, 实现, . */
    uint64_t k1 = features_hash_token("\xe7\x94\xa8", 3), k2 = features_hash_token("go", 2);
    uint32_t bg = features_bucket(BITS, FEATURES_FAM_BIGRAM, features__bigram_key(k1, k2));
    assert_true(value_of(&v, bg) > 0);

    /* kana and Hangul are read the same way; Thai too */
    assert_int_equal(features__unseg_weight(0x3042), 2);
    assert_int_equal(features__unseg_weight(0xac00), 3);
    assert_int_equal(features__unseg_weight(0xe01), 1);
    assert_int_equal(features__unseg_weight('a'), 0);
    assert_int_equal(features__unseg_weight(0x430), 0);
    t = "\xe3\x81\x82\xe3\x81\x84 \xea\xb0\x80"; /* あい 가 */
    assert_int_equal(features_extract_text(s, t, strlen(t), &v), 0);
    assert_true(value_of(&v, word_id("\xe3\x81\x82\xe3\x81\x84")) > 0);
    assert_true(value_of(&v, word_id("\xea\xb0\x80")) > 0);
    features_scratch_destroy(s);
}

static void
test_invalid_bytes_in_scripts(void **state)
{
    struct features_scratch *s = features_scratch_new(BITS);
    struct features_vec v;
    /* truncated Han, a surrogate, an overlong '/', a lone continuation byte, a code
     * point past U+10FFFF, between characters of unsegmented runs */
    const char bad[] = "\xe8\xaf\x81\xe8\xaf"
                       "\xe6\x98\x8e\xed\xa0\x80\xe7\xb4\xa0\xc0\xaf\xef\xbc\x91\x80"
                       "\xf4\x90\x80\x80\xe3\x81\x82";

    assert_int_equal(features_extract_text(s, bad, sizeof(bad) - 1, &v), 0);
    /* an invalid byte separates like punctuation: 证 and 明 are no pair */
    assert_true(value_of(&v, word_id("\xe8\xaf\x81\xe6\x98\x8e")) < 0);
    assert_true(value_of(&v, word_id("\xe8\xaf\x81")) > 0);
    for (size_t i = 0; i < v.n; i++)
        assert_true(isfinite(v.vals[i]) && v.vals[i] > 0 && v.ids[i] < (1u << BITS));
    for (size_t i = 0; i < FEATURES_N_DENSE; i++)
        assert_true(isfinite(v.dense[i]));
    features_scratch_destroy(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fold_code_points),
        cmocka_unit_test(test_fold_words),
        cmocka_unit_test(test_digits_and_maths),
        cmocka_unit_test(test_unsegmented_bigrams),
        cmocka_unit_test(test_invalid_bytes_in_scripts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
