/* features-int.h - helpers shared inside features/ and with its tests; not a public API. */
#ifndef TRIAGE_FEATURES_INT_H
#define TRIAGE_FEATURES_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "prompt_features.h"

/* Key of a number token of n_digits digits (7 and more share one key). */
uint64_t features__num_key(uint32_t n_digits);

/* Key of the bigram (a, b) of token keys. */
uint64_t features__bigram_key(uint64_t a, uint64_t b);

/* Key of a character 4-gram of folded code points: their 16-bit forms packed. */
uint64_t features__char4_key(const uint32_t cp[4]);

/* Returns the 16 bits of a code point used in character n-gram keys. */
uint32_t features__cp16(uint32_t c);

/* Returns the code point every script's spelling of c maps to before folding: ASCII
 * for full-width forms, for the decimal digits of every script (Arabic-Indic,
 * Devanagari, Thai, ..., mathematical digits), for the maths signs with an ASCII twin
 * (minus sign, division slash, ...) and for CJK and typographic punctuation (ideographic
 * full stop and comma, quotation marks and brackets); a space for the Spanish inverted
 * '?' and '!'; c itself otherwise. */
uint32_t features__norm(uint32_t c);

/* Case-folds one code point (simple case folding of ASCII, Latin-1, Latin Extended-A
 * and Additional, Greek, Cyrillic and Armenian capitals). */
uint32_t features__fold(uint32_t c);

/* Returns 0 for a code point of a script that separates its words with spaces; for one
 * written without (Han, kana, Hangul, Thai, Lao, Khmer, Myanmar, Yi, Bopomofo), how
 * many Latin letters of text a character stands for in the length signals (1-3). */
unsigned features__unseg_weight(uint32_t c);

/* True for code points that belong to words. */
bool features__is_word(uint32_t c);

/* Makes s's entry arrays hold n entries and lends them: ids and vals (what a decoded
 * vector points into, valid until s is used again) and tmp (n u32 of free room). The
 * scratch's own entries are dropped; its table must be empty (it is between uses). */
void features__scratch_arrays(struct features_scratch *s, size_t n, uint32_t **ids, float **vals,
                              uint32_t **tmp);

#endif
