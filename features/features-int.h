/* features-int.h - helpers shared inside features/ and with its tests; not a public API. */
#ifndef TRIAGE_FEATURES_INT_H
#define TRIAGE_FEATURES_INT_H

#include <stdbool.h>
#include <stdint.h>

/* Key of a number token of n_digits digits (7 and more share one key). */
uint64_t features__num_key(uint32_t n_digits);

/* Key of the bigram (a, b) of token keys. */
uint64_t features__bigram_key(uint64_t a, uint64_t b);

/* Key of a character 4-gram of folded code points: their 16-bit forms packed. */
uint64_t features__char4_key(const uint32_t cp[4]);

/* Returns the 16 bits of a code point used in character n-gram keys. */
uint32_t features__cp16(uint32_t c);

/* Case-folds one code point (ASCII, Latin-1, Greek, Cyrillic capitals). */
uint32_t features__fold(uint32_t c);

/* True for code points that belong to words. */
bool features__is_word(uint32_t c);

#endif
