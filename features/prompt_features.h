/* prompt_features.h - prompt text and feature vectors from an OpenAI chat request body (named so to not shadow glibc <features.h>).
 *
 * Pure computation, no I/O. The request is walked once: every text fragment is
 * decoded as UTF-8 (invalid bytes become separators), normalised so that every script
 * writes digits and maths alike (full-width forms, Arabic-Indic, Devanagari, Thai, ...
 * digits, the minus sign, CJK punctuation: ASCII), case-folded (Latin, Greek, Cyrillic,
 * Armenian), tokenised and hashed on the fly, so time is linear in the prompt and
 * memory is bounded by the hash space (2^n_bits buckets), not by the prompt.
 *
 * Sparse features (hashed into [0, 2^n_bits)):
 *   - word unigrams and bigrams of the last user turn (numbers folded to their
 *     digit count, so "17" and "42" share a feature); scripts written without spaces
 *     (Han, kana, Hangul, Thai, ...) have no words to split: each pair of neighbouring
 *     characters is a token (a character alone is one), and their characters count
 *     for 1-3 Latin letters in the length signals, so a prompt is as long in every script,
 *   - character 4-grams of the last user turn (whitespace collapsed), the first
 *     FEATURES_MAX_CHAR_GRAMS of them: past a few KB they add time, not signal,
 *   - word unigrams of the rest of the conversation (system, earlier turns),
 *   - the dense signals below, binned.
 * Each family's values are log term frequencies, L2-normalised per family.
 * Dense features: FEATURES_N_DENSE raw signals (lengths, digits, operators, LaTeX
 * and code markers, multiple-choice options, turns, max_tokens, tools, ...). */
#ifndef TRIAGE_FEATURES_H
#define TRIAGE_FEATURES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

/* Bump whenever the mapping from text to features changes: model files and stored
 * feature blobs record it, and are refused against a different one. 4: Unicode digits,
 * maths and punctuation normalised, Latin Extended-A and more folded, unsegmented
 * scripts as character pairs, nonascii_frac replaced by symbol_frac. */
#define FEATURES_VERSION 4

#define FEATURES_N_DENSE 24
#define FEATURES_MAX_CHAR_GRAMS 4096
#define FEATURES_MIN_BITS 10
#define FEATURES_MAX_BITS 24

/* Sparse feature families (also the hash namespace of each feature). */
enum features_family {
    FEATURES_FAM_WORD = 0,  /* last user turn, word unigram */
    FEATURES_FAM_BIGRAM,    /* last user turn, word bigram */
    FEATURES_FAM_CHAR,      /* last user turn, character 4-gram */
    FEATURES_FAM_CONTEXT,   /* other turns, word unigram */
    FEATURES_FAM_DENSE_BIN, /* binned dense signal */
    FEATURES_N_FAMILIES
};

/* Working memory for one extraction at a time (one per thread). */
struct features_scratch;

/* Returns new scratch for a hash space of 2^n_bits buckets (n_bits in
 * [FEATURES_MIN_BITS, FEATURES_MAX_BITS]), or NULL if n_bits is out of range. */
struct features_scratch *features_scratch_new(unsigned n_bits);

/* Frees scratch. NULL is fine. */
void features_scratch_destroy(struct features_scratch *s);

/* Returns the n_bits the scratch was made for. */
unsigned features_scratch_bits(const struct features_scratch *s);

/* One extracted feature vector. ids/vals point into the scratch and stay valid
 * until its next extraction. */
struct features_vec {
    size_t n;                       /* distinct sparse features */
    const uint32_t *ids;            /* bucket ids, in first-seen order */
    const float *vals;              /* value of each id */
    float dense[FEATURES_N_DENSE];  /* raw dense signals (see features_dense_name) */
};

/* Extracts features from a chat request (borrowed): "messages" (string content or
 * arrays of content parts), or a legacy "prompt" (a string, or an array of strings)
 * taken as one user turn;
 * plus max_tokens / max_completion_tokens and tools. Returns 0, or -EINVAL when
 * the request has no text at all. */
int features_extract(struct features_scratch *s, const json_t *request, struct features_vec *out);

/* Same as features_extract for a bare prompt (len bytes, borrowed) taken as the
 * single user turn of a conversation. Returns 0, or -EINVAL when len is 0. */
int features_extract_text(struct features_scratch *s, const char *text, size_t len,
                          struct features_vec *out);

/* Returns dense feature i's name (static), or NULL when i is out of range. */
const char *features_dense_name(size_t i);

/* Returns the bucket id of a feature given its family and its 64-bit key (exposed
 * for tests: a word's key is features_hash_token over its folded UTF-8 bytes). */
uint32_t features_bucket(unsigned n_bits, enum features_family fam, uint64_t key);

/* Returns the 64-bit hash of a folded token's bytes (FNV-1a). */
uint64_t features_hash_token(const char *bytes, size_t len);

/* ---- stored feature vectors (store_prompts = features) ------------------------ */

/* A vector as bytes: enough to train on with the same hashing, without the text. The
 * layout (little-endian: magic, format, n_bits, FEATURES_VERSION, counts, then ids,
 * values and dense signals bit for bit, ids in the extractor's order) is in blob.c. */
#define FEATURES_BLOB_FORMAT 1
#define FEATURES_BLOB_HEADER 16

/* Returns the encoded size of a vector of n sparse features. */
size_t features_blob_size(size_t n);

/* Encodes fv (borrowed), extracted with a scratch of n_bits, into a new buffer
 * (free()) of *len bytes. Aborts on out of memory. */
void *features_blob_encode(const struct features_vec *fv, unsigned n_bits, size_t *len);

/* Decodes len bytes at data (borrowed, any bytes) into out, which then points into s
 * like an extraction does. Returns 0; -EPROTO for a well-formed blob of another
 * FEATURES_VERSION or n_bits than s's (it would train the wrong weights); -EINVAL for
 * anything else it was not written by features_blob_encode: bad magic, format or
 * length, an id out of range or repeated, a value that is not finite. */
int features_blob_decode(struct features_scratch *s, const void *data, size_t len,
                         struct features_vec *out);

/* Same as features_blob_decode for the blob as padded base64 text (len bytes,
 * borrowed; RFC 4648 standard alphabet, no whitespace), how JSON exports carry it. */
int features_blob_decode_base64(struct features_scratch *s, const char *text, size_t len,
                                struct features_vec *out);

/* ---- request JSON ------------------------------------------------------------- */

/* Parses a request body into a new jansson tree, exactly the one json_loadb would
 * build, several times faster on the long strings requests are made of. Returns
 * NULL when it declines: invalid JSON, or anything unusual (deep nesting, numbers out
 * of range, "\u0000", escaped keys); call json_loadb then, which stays the authority
 * on validity and on the error message. Borrows buf. */
json_t *features_json_load(const char *buf, size_t len);

/* 1 if one of the 8 bytes at p must be escaped in a JSON string (< 0x20, '"', '\\'):
 * lets JSON scanners skip plain text a word at a time. Reads exactly 8 bytes. */
static inline int
features_json_escape_in8(const char *p)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t x, q, bs;

    memcpy(&x, p, 8);
    q = x ^ (ones * '"');
    bs = x ^ (ones * '\\');
    return (((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((bs - ones) & ~bs)) & high ? 1 : 0;
}

/* ---- answer signals (the cascade's escalation model reads them) ---------------- */

/* Signals of one answer (see features_answer_name): log sizes (bytes, non-empty lines,
 * numbers), a final-result marker ("####", "\\boxed{", "answer is", ...), counts of
 * hedging and self-correcting words, how the text ends (on a number, cleanly), the
 * share of repeated lines, finish_reason (cut at length, other than a normal stop,
 * absent), and when token log-probabilities are given: their mean, minimum and the
 * share of tokens below even odds; whether the last number has a fractional part, words
 * of rounding ("rounded", "nearest", "whole"), and the share of the prompt's numbers the
 * answer never mentions. Version 2 appends the answer's arithmetic: how many results
 * ("... = c"), how many computations "a op b = c" were checked and how many of those are
 * wrong, whether the final number is none of the results, and the prompt's count of
 * distinct numbers and its size. Signals are only ever appended, so version N's are the
 * first FEATURES_N_ANSWER_V(N) of a later one's. Bump FEATURES_ANSWER_VERSION when the
 * mapping changes: escalation models record it. */
#define FEATURES_N_ANSWER 25
#define FEATURES_ANSWER_VERSION 2

/* Returns how many answer signals version v had (0 for an unknown version). */
#define FEATURES_N_ANSWER_V(v) ((v) == 1 ? 19u : (v) == 2 ? 25u : 0u)

/* Fills out with the signals of text (len bytes, borrowed, any bytes; NULL = empty), the
 * prompt it answers (its last user turn, prompt_len bytes, borrowed; NULL = unknown), its
 * finish_reason (borrowed; NULL = unknown) and n_logprobs token log-probabilities
 * (borrowed; NULL or 0 = none; values above 0 or not finite are skipped). */
void features_answer_signals(const char *text, size_t len, const char *prompt, size_t prompt_len,
                             const char *finish_reason, const float *logprobs, size_t n_logprobs,
                             float out[FEATURES_N_ANSWER]);

/* Same from an OpenAI chat completion (borrowed) answering request (borrowed; NULL =
 * unknown prompt): choices[0]'s message.content, finish_reason and
 * logprobs.content[].logprob (the first 4096). Returns 0, or -EINVAL when it has no
 * choices[0].message. */
int features_answer_from_response(const json_t *request, const json_t *response,
                                  float out[FEATURES_N_ANSWER]);

/* Returns the text of request's (borrowed) last user turn (its last text part), or of a
 * legacy "prompt" (the last string), borrowed from request, with *len its bytes; NULL
 * (*len 0) when it has none. */
const char *features_request_last_user(const json_t *request, size_t *len);

/* Returns answer signal i's name (static), or NULL when i is out of range. */
const char *features_answer_name(size_t i);

/* A fast answer as the outcome log keeps it (requests.answer): its signals and, when the
 * operator lets the log keep what the text hashes to, its text's sparse features
 * (features_extract_text), enough for the escalation model to learn from without the
 * text. Layout in blob.c. */
#define FEATURES_ANSWER_BLOB_FORMAT 1
#define FEATURES_ANSWER_BLOB_HEADER 20

/* Returns the encoded size of an answer with n sparse features. */
size_t features_answer_blob_size(size_t n);

/* Encodes signals (FEATURES_N_ANSWER, borrowed) and words (borrowed; NULL: the signals
 * alone), extracted with a scratch of n_bits, into a new buffer (free()) of *len bytes.
 * Aborts on out of memory. */
void *features_answer_blob_encode(const float *signals, const struct features_vec *words,
                                  unsigned n_bits, size_t *len);

/* Decodes len bytes at data (borrowed, any bytes) into signals and *words (pointing into
 * s like an extraction; n 0 when the blob kept no words). Returns 0; 1 when its words were
 * hashed with another FEATURES_VERSION or n_bits than s's (the signals are decoded, words
 * n is 0); -EPROTO for a well-formed blob of another FEATURES_ANSWER_VERSION; -EINVAL for
 * anything features_answer_blob_encode did not write. */
int features_answer_blob_decode(struct features_scratch *s, const void *data, size_t len,
                                float signals[FEATURES_N_ANSWER], struct features_vec *words);

/* Same for the blob as padded base64 text (len bytes, borrowed), how exports carry it. */
int features_answer_blob_decode_base64(struct features_scratch *s, const char *text, size_t len,
                                       float signals[FEATURES_N_ANSWER],
                                       struct features_vec *words);

#endif
