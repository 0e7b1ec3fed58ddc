/* features.c - one streaming pass over a chat request's text into hashed n-grams and dense signals. */
#include "prompt_features.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "features-int.h"

/* Which part of the conversation a fragment belongs to. */
enum stream { STREAM_LAST = 0, STREAM_CONTEXT = 1 };

/* Dense feature indices. */
enum {
    D_CHARS_ALL = 0,
    D_CHARS_LAST,
    D_WORDS_LAST,
    D_NUMBERS,
    D_DIGIT_FRAC,
    D_OPERATORS,
    D_LATEX,
    D_CODE,
    D_MC_OPTIONS,
    D_TURNS,
    D_USER_TURNS,
    D_HAS_SYSTEM,
    D_SYSTEM_CHARS,
    D_MAX_TOKENS,
    D_HAS_TOOLS,
    D_TOOLS,
    D_QUESTIONS,
    D_SENTENCES,
    D_AVG_WORD,
    D_UPPER_FRAC,
    D_SYMBOL_FRAC,
    D_NEWLINES,
    D_IMAGES,
    D_LONG_WORD_FRAC,
};

static const char *const dense_names[FEATURES_N_DENSE] = {
    "log_chars_all", "log_chars_last", "log_words_last", "log_numbers",
    "digit_frac",    "log_operators",  "log_latex",      "log_code",
    "log_mc_options", "log_turns",     "log_user_turns", "has_system",
    "log_system_chars", "log_max_tokens", "has_tools",   "log_tools",
    "log_questions", "log_sentences",  "avg_word_len",   "upper_frac",
    "symbol_frac", "log_newlines",   "log_images",     "long_word_frac",
};

/* Bin width multiplier per dense feature: bin = floor(value * scale), in [0, 31]. */
static const float dense_bin_scale[FEATURES_N_DENSE] = {
    2, 2, 2, 3, 20, 3, 3, 3, 3, 3, 3, 1, 2, 2, 1, 3, 3, 3, 2, 20, 20, 3, 3, 20,
};

/* Bigram state of one stream (last user turn, or the rest). The current word and the
 * 4-gram window are feed_stream's locals. */
struct tok {
    uint64_t prev_key;   /* previous token's key, for bigrams */
    bool has_prev;
    uint32_t unseg_prev; /* the last character of an unsegmented script */
};

/* Counters behind the dense signals. */
struct counts {
    /* the last user turn's ASCII characters, one counter per byte value: one
     * increment a character instead of a test per signal; finish() sums them by
     * class into the fields below */
    uint32_t ascii[128];
    /* integers: a per-character floating-point add would chain 4-cycle latencies */
    uint64_t chars_all, chars_last, words_last, numbers, digits, operators, latex, code;
    uint64_t mc_options, questions, sentences, word_cps, letters, upper, symbols, newlines;
    uint64_t long_words;
    uint64_t unseg_units; /* unsegmented-script characters, by char_weight */
    double turns, user_turns, has_system, system_chars, max_tokens, tools, has_tools, images;
    uint32_t char_grams; /* character 4-grams emitted so far (capped) */
    /* multiple-choice line-start detector: 0 line start, 1 saw '(', 2 saw a
     * letter, 3 rest of line */
    int mc_state;
};

/* Features wait in a small queue before they are counted: computing a batch of
 * bucket ids apart from the table probes lets the probes of one batch overlap
 * (and be prefetched) instead of each stalling the character loop. */
#define PENDING_MAX 256

/* Dedup table slot: bucket id + 1 (0 = empty) and its occurrences so far. */
struct slot {
    uint32_t key;
    uint32_t cnt;
};

struct features_scratch {
    unsigned n_bits;
    uint32_t *ids;      /* distinct buckets, first-seen order */
    float *vals;        /* values */
    uint8_t *fam;       /* family of each entry (the first feature seen in its bucket) */
    uint32_t *pos;      /* slot of each entry, to clear the table afterwards */
    size_t n, cap;
    struct slot *slots; /* open addressing, at most half full */
    size_t mask;
    uint32_t pending[PENDING_MAX]; /* bucket | family << 24, not counted yet */
    size_t n_pending;
    struct tok tok[2];
    struct counts c;
};

static void *
xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (!q)
        abort(); /* out of memory aborts, project-wide */
    return q;
}

struct features_scratch *
features_scratch_new(unsigned n_bits)
{
    struct features_scratch *s;

    if (n_bits < FEATURES_MIN_BITS || n_bits > FEATURES_MAX_BITS)
        return NULL;
    s = xrealloc(NULL, sizeof(*s));
    memset(s, 0, sizeof(*s));
    s->n_bits = n_bits;
    s->cap = 1024;
    s->ids = xrealloc(NULL, s->cap * sizeof(uint32_t));
    s->vals = xrealloc(NULL, s->cap * sizeof(float));
    s->fam = xrealloc(NULL, s->cap);
    s->pos = xrealloc(NULL, s->cap * sizeof(uint32_t));
    s->mask = 2 * s->cap - 1;
    s->slots = xrealloc(NULL, (s->mask + 1) * sizeof(struct slot));
    memset(s->slots, 0, (s->mask + 1) * sizeof(struct slot));
    return s;
}

void
features_scratch_destroy(struct features_scratch *s)
{
    if (!s)
        return;
    free(s->ids);
    free(s->vals);
    free(s->fam);
    free(s->pos);
    free(s->slots);
    free(s);
}

unsigned
features_scratch_bits(const struct features_scratch *s)
{
    return s->n_bits;
}

const char *
features_dense_name(size_t i)
{
    return i < FEATURES_N_DENSE ? dense_names[i] : NULL;
}

/* ---- hashing ------------------------------------------------------------ */

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t
mix64(uint64_t x)
{
    /* splitmix64 finaliser: spreads every input bit over the output */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t
features_hash_token(const char *bytes, size_t len)
{
    uint64_t h = FNV_OFFSET;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)bytes[i];
        h *= FNV_PRIME;
    }
    return h;
}

uint32_t
features_bucket(unsigned n_bits, enum features_family fam, uint64_t key)
{
    /* one multiply (Fibonacci hashing): the top bits of the product depend on
     * every bit of the key, and the family salts keep families apart */
    uint64_t h = key ^ ((uint64_t)(fam + 1) * 0xd6e8feb86659fd93ULL);

    h ^= h >> 32;
    h *= 0x9e3779b97f4a7c15ULL;
    return (uint32_t)(h >> (64 - n_bits));
}

uint64_t
features__num_key(uint32_t n_digits)
{
    char buf[16] = "<num:";
    size_t len = 5;

    if (n_digits > 6)
        n_digits = 7; /* one key for every long number */
    buf[len++] = (char)('0' + n_digits);
    buf[len++] = '>';
    return features_hash_token(buf, len);
}

uint64_t
features__bigram_key(uint64_t a, uint64_t b)
{
    return mix64(a) * 31 + b;
}

uint64_t
features__char4_key(const uint32_t cp[4])
{
    uint64_t k = 0;

    for (int i = 0; i < 4; i++)
        k = (k << 16) | features__cp16(cp[i]);
    return k;
}

uint32_t
features__cp16(uint32_t c)
{
    /* code points above U+FFFF share 16 bits with others: rare, and harmless */
    return c < 0x10000 ? c : (c & 0xffff) ^ (c >> 16) ^ 0x8000;
}

/* ---- accumulation ---------------------------------------------------------- */

static size_t
slot_find(const struct features_scratch *s, uint32_t key)
{
    size_t h = key & s->mask; /* bucket ids are hashes already */

    while (s->slots[h].key != 0 && s->slots[h].key != key)
        h = (h + 1) & s->mask;
    return h;
}

/* Doubles the entry arrays and the table (entries and counts move over). */
static void
grow(struct features_scratch *s)
{
    struct slot *old = s->slots;

    s->cap *= 2;
    s->ids = xrealloc(s->ids, s->cap * sizeof(uint32_t));
    s->vals = xrealloc(s->vals, s->cap * sizeof(float));
    s->fam = xrealloc(s->fam, s->cap);
    s->pos = xrealloc(s->pos, s->cap * sizeof(uint32_t));
    s->mask = 2 * s->cap - 1;
    s->slots = xrealloc(NULL, (s->mask + 1) * sizeof(struct slot));
    memset(s->slots, 0, (s->mask + 1) * sizeof(struct slot));
    for (size_t i = 0; i < s->n; i++) {
        size_t h = slot_find(s, s->ids[i] + 1);
        s->slots[h] = old[s->pos[i]];
        s->pos[i] = (uint32_t)h;
    }
    free(old);
}

void
features__scratch_arrays(struct features_scratch *s, size_t n, uint32_t **ids, float **vals,
                         uint32_t **tmp)
{
    s->n = 0; /* no entries to carry over: grow() only resizes */
    while (n > s->cap)
        grow(s);
    *ids = s->ids;
    *vals = s->vals;
    *tmp = s->pos;
}

/* Counts the queued features, in order: the table and first-seen order come out
 * as if each had been counted when it was emitted. Memory stays bounded by the
 * number of distinct buckets (at most 2^n_bits), however long the text. */
static void
flush(struct features_scratch *s)
{
    const size_t n = s->n_pending;

    while (s->n + n > s->cap) /* room for all of them, so the loop below never grows */
        grow(s);
    for (size_t i = 0; i < n; i++) {
        if (i + 8 < n)
            __builtin_prefetch(&s->slots[((s->pending[i + 8] & 0xffffff) + 1) & s->mask]);
        uint32_t b = s->pending[i] & 0xffffff;
        size_t h = slot_find(s, b + 1);
        if (s->slots[h].key != 0) {
            s->slots[h].cnt++;
            continue;
        }
        s->slots[h].key = b + 1;
        s->slots[h].cnt = 1;
        s->ids[s->n] = b;
        s->fam[s->n] = (uint8_t)(s->pending[i] >> 24);
        s->pos[s->n] = (uint32_t)h;
        s->n++;
    }
    s->n_pending = 0;
}

/* Counts one occurrence of a feature (queued; flush() does the counting). */
static inline void
emit(struct features_scratch *s, enum features_family fam, uint64_t key)
{
    s->pending[s->n_pending++] = features_bucket(s->n_bits, fam, key) | (uint32_t)fam << 24;
    if (s->n_pending == PENDING_MAX)
        flush(s);
}

/* ---- UTF-8 and case folding ------------------------------------------------ */

/* Decodes one code point at p (n bytes left) into *cp; returns its length, with
 * U+FFFD and length 1 for an invalid or truncated sequence. */
static size_t
utf8_decode(const unsigned char *p, size_t n, uint32_t *cp)
{
    uint32_t c = p[0];
    size_t len;
    uint32_t min;

    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        len = 2, c &= 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, c &= 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4, c &= 0x07, min = 0x10000;
    } else {
        goto bad;
    }
    if (len > n)
        goto bad;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            goto bad;
        c = (c << 6) | (p[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        goto bad;
    *cp = c;
    return len;
bad:
    *cp = 0xfffd;
    return 1;
}

static size_t
utf8_encode(uint32_t c, unsigned char out[4])
{
    if (c < 0x80) {
        out[0] = (unsigned char)c;
        return 1;
    } else if (c < 0x800) {
        out[0] = (unsigned char)(0xc0 | (c >> 6));
        out[1] = (unsigned char)(0x80 | (c & 0x3f));
        return 2;
    } else if (c < 0x10000) {
        out[0] = (unsigned char)(0xe0 | (c >> 12));
        out[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
        out[2] = (unsigned char)(0x80 | (c & 0x3f));
        return 3;
    }
    out[0] = (unsigned char)(0xf0 | (c >> 18));
    out[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3f));
    out[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3f));
    out[3] = (unsigned char)(0x80 | (c & 0x3f));
    return 4;
}

/* Returns h extended by the UTF-8 bytes of code point f (FNV-1a). Out of line: only
 * the unsegmented path calls it, and inlined it cost the ASCII loop registers. */
static __attribute__((noinline)) uint64_t
hash_cp(uint64_t h, uint32_t f)
{
    unsigned char buf[4];
    size_t bl = utf8_encode(f, buf);

    for (size_t b = 0; b < bl; b++) {
        h ^= buf[b];
        h *= FNV_PRIME;
    }
    return h;
}

/* Zeros of the decimal digit sets that features__norm maps to ASCII '0'..'9'. */
static const uint32_t digit_zeros[] = {
    0x660,  0x6f0,  0x7c0,  0x966,  0x9e6,  0xa66,  0xae6,  0xb66,  0xbe6,  0xc66,
    0xce6,  0xd66,  0xde6,  0xe50,  0xed0,  0xf20,  0x1040, 0x1090, 0x17e0, 0x1810,
    0x1946, 0x19d0, 0x1a80, 0x1a90, 0x1b50, 0x1bb0, 0x1c40, 0x1c50, 0xa620, 0xa8d0,
    0xa900, 0xa9d0, 0xa9f0, 0xaa50, 0xabf0,
};

uint32_t
features__norm(uint32_t c)
{
    if (c < 0xa1)
        return c;
    if (c >= 0xff01 && c <= 0xff5e) /* full-width ASCII */
        return c - 0xfee0;
    if (c >= 0x1d7ce && c <= 0x1d7ff) /* mathematical bold, double-struck, ... digits */
        return '0' + (c - 0x1d7ce) % 10;
    if ((c >= 0x660 && c <= 0x1c59) || (c >= 0xa620 && c <= 0xabf9)) { /* not Han, kana */
        for (size_t i = 0; i < sizeof(digit_zeros) / sizeof(digit_zeros[0]); i++) {
            if (c >= digit_zeros[i] && c <= digit_zeros[i] + 9)
                return '0' + (c - digit_zeros[i]);
        }
    }
    switch (c) {
    case 0xa1: case 0xbf: /* inverted '!' and '?' open a Spanish sentence: the closing one counts */
        return ' ';
    case 0x2212: case 0x2013: case 0xfe63: /* minus sign, en dash, small hyphen-minus */
        return '-';
    case 0x2044: case 0x2215: /* fraction and division slashes */
        return '/';
    case 0x2217: /* asterisk operator */
        return '*';
    case 0xfe62:
        return '+';
    case 0xfe66:
        return '=';
    case 0x3002: case 0xff61: /* ideographic full stops */
        return '.';
    case 0x3001: case 0xff64: /* ideographic commas */
        return ',';
    case 0x2018: case 0x2019: case 0x201a: case 0x201b: case 0x2039: case 0x203a:
        return '\'';
    case 0xab: case 0xbb: case 0x201c: case 0x201d: case 0x201e: case 0x201f: case 0x300c:
    case 0x300d: case 0x300e: case 0x300f: case 0x300a: case 0x300b: case 0x3008: case 0x3009:
        return '"';
    case 0x30fb: /* katakana middle dot */
        return 0xb7;
    case 0x3010: case 0x3014: /* CJK brackets */
        return '[';
    case 0x3011: case 0x3015:
        return ']';
    default:
        return c;
    }
}

uint32_t
features__fold(uint32_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c + 32;
    if (c < 0xb5)
        return c;
    if (c < 0x100) {
        if (c >= 0xc0 && c <= 0xde && c != 0xd7) /* Latin-1 capitals */
            return c + 32;
        if (c == 0xb5) /* micro sign: Greek mu */
            return 0x3bc;
        return c;
    }
    if (c < 0x180) { /* Latin Extended-A: capital, small pairs */
        if (c == 0x130) /* dotted capital I */
            return 'i';
        if (c == 0x178)
            return 0xff;
        if (c == 0x17f) /* long s */
            return 's';
        if ((c < 0x138 || (c >= 0x14a && c < 0x178)) && !(c & 1))
            return c + 1;
        if (((c > 0x138 && c < 0x149) || (c > 0x178 && c < 0x17f)) && (c & 1))
            return c + 1;
        return c;
    }
    if (c < 0x370)
        return c;
    if (c < 0x400) { /* Greek */
        if (c >= 0x391 && c <= 0x3ab && c != 0x3a2) /* capitals, with dialytika */
            return c + 32;
        if (c == 0x386)
            return 0x3ac;
        if (c >= 0x388 && c <= 0x38a)
            return c + 37;
        if (c == 0x38c)
            return 0x3cc;
        if (c == 0x38e || c == 0x38f)
            return c + 63;
        if (c == 0x3c2) /* final sigma */
            return 0x3c3;
        return c;
    }
    if (c < 0x530) { /* Cyrillic and its supplement */
        if (c <= 0x40f)
            return c + 80;
        if (c <= 0x42f)
            return c + 32;
        if (c < 0x460)
            return c;
        if (c == 0x4c0)
            return 0x4cf;
        if (c >= 0x4c1 && c <= 0x4ce)
            return c & 1 ? c + 1 : c;
        if ((c <= 0x481 || c >= 0x48a) && !(c & 1))
            return c + 1;
        return c;
    }
    if (c >= 0x531 && c <= 0x556) /* Armenian */
        return c + 48;
    if (c >= 0x1e00 && c <= 0x1eff && !(c & 1) && (c <= 0x1e94 || c >= 0x1ea0)) /* Vietnamese, ... */
        return c + 1;
    return c;
}

static bool
is_upper(uint32_t c)
{
    /* the micro sign, long s and final sigma fold, but are not capitals */
    return features__fold(c) != c && c != 0xb5 && c != 0x17f && c != 0x3c2;
}

static bool
is_space(uint32_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' ||
           c == 0xa0 || (c >= 0x2000 && c <= 0x200b) || c == 0x3000;
}

unsigned
features__unseg_weight(uint32_t c)
{
    if (c < 0xe00)
        return 0;
    if ((c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) ||
        (c >= 0xf900 && c <= 0xfaff) || (c >= 0x20000 && c <= 0x3ffff) ||
        (c >= 0x3005 && c <= 0x3007)) /* Han, and the ideographic iteration mark and zero */
        return 3;
    if (c >= 0xac00 && c <= 0xd7af) /* Hangul syllables */
        return 3;
    if ((c >= 0x3040 && c <= 0x30ff && c != 0x30fb) || (c >= 0x31f0 && c <= 0x31ff) ||
        (c >= 0xff66 && c <= 0xff9f) || (c >= 0xa000 && c <= 0xa4cf)) /* kana, Yi */
        return 2;
    if ((c >= 0xe00 && c <= 0xeff) || (c >= 0x1000 && c <= 0x109f) ||
        (c >= 0x1780 && c <= 0x17ff) || (c >= 0x1100 && c <= 0x11ff) ||
        (c >= 0x3100 && c <= 0x318f)) /* Thai, Lao, Myanmar, Khmer, Hangul jamo, Bopomofo */
        return 1;
    return 0;
}

/* Word characters: ASCII letters and digits, and non-ASCII outside the
 * punctuation and symbol blocks (letters of other scripts). */
bool
features__is_word(uint32_t c)
{
    if (c < 0x80)
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (c < 0xc0 || c == 0xd7 || c == 0xf7 || c == 0xfffd)
        return c == 0xb5; /* micro sign: Greek mu */
    if (c >= 0x2000 && c <= 0x2bff) /* punctuation, arrows, math operators, symbols */
        return false;
    if (c >= 0x3000 && c <= 0x303f) /* CJK punctuation */
        return false;
    if (c >= 0xff00 && c <= 0xff0f)
        return false;
    return features__unseg_weight(c) == 0;
}

static bool
is_operator(uint32_t c)
{
    return c == '+' || c == '-' || c == '*' || c == '/' || c == '=' || c == '^' || c == '<' ||
           c == '>' || c == '%' || c == 0xd7 || c == 0xf7 || (c >= 0x2200 && c <= 0x22ff);
}

/* ---- the tokeniser ----------------------------------------------------------- */

static void
tok_reset(struct tok *t)
{
    memset(t, 0, sizeof(*t));
}

/* Emits a finished token (word or single symbol) with its bigram. */
static void
emit_token(struct features_scratch *s, enum stream st, uint64_t key)
{
    struct tok *t = &s->tok[st];

    if (st == STREAM_LAST) {
        emit(s, FEATURES_FAM_WORD, key);
        if (t->has_prev)
            emit(s, FEATURES_FAM_BIGRAM, features__bigram_key(t->prev_key, key));
        t->prev_key = key;
        t->has_prev = true;
    } else {
        emit(s, FEATURES_FAM_CONTEXT, key);
    }
}

/* Emits a finished word: key is the FNV-1a of its folded bytes, cps its length in code
 * points (> 0), num whether all of them are digits (then its key is its length). */
static void
word_end(struct features_scratch *s, enum stream st, uint64_t key, uint32_t cps, bool num)
{
    if (num) {
        key = features__num_key(cps);
        if (st == STREAM_LAST)
            s->c.numbers++;
    }
    if (st == STREAM_LAST) {
        s->c.words_last++;
        s->c.word_cps += cps;
        if (!num && cps >= 8)
            s->c.long_words++;
    }
    emit_token(s, st, key);
}

/* True if the n bytes at p start with a character of an unsegmented script: looks
 * ahead from one such character, so that the ASCII path never has to end a run. */
static bool
unseg_next(const unsigned char *p, size_t n)
{
    uint32_t cp;

    if (n == 0 || p[0] < 0x80)
        return false;
    utf8_decode(p, n, &cp);
    return features__unseg_weight(features__norm(cp)) != 0;
}

/* Multiple-choice options: a line starting with "A." "A)" "(A)" "A:" (A..J). */
static void
mc_step(struct counts *c, uint32_t f)
{
    if (f == '\n') {
        c->mc_state = 0;
        return;
    }
    switch (c->mc_state) {
    case 0:
        if (f == ' ' || f == '\t')
            return;
        if (f == '(') {
            c->mc_state = 1;
            return;
        }
        c->mc_state = (f >= 'a' && f <= 'j') ? 2 : 3;
        return;
    case 1:
        c->mc_state = (f >= 'a' && f <= 'j') ? 2 : 3;
        return;
    case 2:
        if (f == '.' || f == ')' || f == ':')
            c->mc_options++;
        c->mc_state = 3;
        return;
    default:
        return;
    }
}

/* Character classes of ASCII, for the fast path. */
enum {
    K_WORD = 1, K_DIGIT = 2, K_UPPER = 4, K_SPACE = 8, K_OP = 16, K_LATEX = 32, K_CODE = 64,
    K_SENT = 128,
    /* non-ASCII only: a script written without spaces between words (Han, kana,
     * Hangul, Thai, ...), read as character bigrams; its features__unseg_weight is
     * in the bits from K_WEIGHT_SHIFT up */
    K_UNSEG = 256,
};
#define K_WEIGHT_SHIFT 9

static const uint8_t ascii_class[128] = {
      0,   0,   0,   0,   0,   0,   0,   0,   0,   8,   8,   8,   8,   8,   0,   0,
      0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
      8, 128,   0,   0,  32,  16,   0,   0,   0,   0,  16,  16,   0,  16, 128,  16,
      3,   3,   3,   3,   3,   3,   3,   3,   3,   3,   0,  64,  16,  16,  16, 128,
      0,   5,   5,   5,   5,   5,   5,   5,   5,   5,   5,   5,   5,   5,   5,   5,
      5,   5,   5,   5,   5,   5,   5,   5,   5,   5,   5,   0,  32,   0,  16,   0,
     64,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,
      1,   1,   1,   1,   1,   1,   1,   1,   1,   1,   1,  64,   0,  64,   0,   0,
};

static unsigned
char_class(uint32_t cp)
{
    unsigned k = 0, w;

    if (cp < 0x80)
        return ascii_class[cp];
    w = features__unseg_weight(cp);
    if (w)
        return K_UNSEG | w << K_WEIGHT_SHIFT;
    if (features__is_word(cp)) {
        k |= K_WORD;
        if (is_upper(cp))
            k |= K_UPPER;
    }
    if (is_space(cp))
        k |= K_SPACE;
    if (is_operator(cp))
        k |= K_OP;
    return k;
}

/* Returns how many characters a non-ASCII character of class k counts for in the
 * length signals: a character of an unsegmented script carries about as much text
 * as its weight in Latin letters (tests/features/multilingual.jsonl: 583 Chinese
 * characters say what 2,168 English bytes do), so that a prompt is as long in
 * every script. */
static unsigned
char_weight(unsigned k)
{
    return k & K_UNSEG ? k >> K_WEIGHT_SHIFT : 1;
}

/* Counts a non-ASCII character of the last user turn (ASCII ones go to c->ascii;
 * digits, full-width forms and the maths and punctuation features__norm maps are
 * ASCII by now). */
static void
count_nonascii(struct counts *c, unsigned k)
{
    c->chars_last += char_weight(k);
    if (k & K_UNSEG) {
        c->unseg_units += k >> K_WEIGHT_SHIFT;
        return;
    }
    if (k & K_WORD) {
        c->letters++;
        if (k & K_UPPER)
            c->upper++;
    } else if (!(k & K_SPACE)) {
        c->symbols++;
    }
    if (k & K_OP)
        c->operators++;
}

/* Emits the token of character f of an unsegmented script, given whether the one
 * before was of such a script too (after) and the n bytes that follow it at p: the
 * pair it makes with the one before, or f alone if it has no neighbour of its script.
 * Out of line, like the rest of the unsegmented path: the ASCII loop keeps its
 * registers. */
static __attribute__((noinline)) void
unseg_token(struct features_scratch *s, enum stream st, bool after, uint32_t f,
            const unsigned char *p, size_t n)
{
    struct tok *t = &s->tok[st];

    if (after)
        emit_token(s, st, hash_cp(hash_cp(FNV_OFFSET, t->unseg_prev), f));
    else if (!unseg_next(p, n))
        emit_token(s, st, hash_cp(FNV_OFFSET, f));
    t->unseg_prev = f;
}

/* Feeds one fragment of text (a message's content or a content part). Inlined
 * into one copy per stream, so the per-character tests on `last` fold away. The
 * current word, the 4-gram window and the gram count are locals, kept in registers:
 * in the scratch struct, each made a store-to-load chain through every character. */
static inline __attribute__((always_inline)) void
feed_stream(struct features_scratch *s, enum stream st, const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    struct tok *t = &s->tok[st];
    struct counts *c = &s->c;
    const bool last = st == STREAM_LAST;
    unsigned prev_k = K_SPACE; /* class of the previous character */
    size_t i = 0;
    uint64_t word_key = FNV_OFFSET; /* FNV-1a of the current word's folded bytes */
    uint32_t word_cps = 0;          /* its length in code points */
    bool word_num = true;           /* all of them digits so far */
    uint64_t win = 0;               /* the last code points, 16 bits each */
    uint32_t win_n = 0, grams = c->char_grams;
    bool last_space = true;         /* runs of whitespace count as one space */

    tok_reset(t);
    c->mc_state = 0;
    while (i < len) {
        uint32_t cp, f;
        unsigned k;
        if (p[i] < 0x80) {
            cp = p[i++];
            k = ascii_class[cp];
            f = cp + ((k & K_UPPER) << 3); /* A-Z to a-z */
            if (last)
                c->ascii[cp]++;
            else
                c->chars_all++;
        } else {
            i += utf8_decode(p + i, len - i, &cp);
            cp = features__norm(cp);
            if (cp < 0x80) { /* a full-width letter, another script's digit, ... */
                k = ascii_class[cp];
                f = cp + ((k & K_UPPER) << 3);
                if (last)
                    c->ascii[cp]++;
                else
                    c->chars_all++;
            } else {
                f = features__fold(cp);
                k = char_class(cp);
                if (last)
                    count_nonascii(c, k);
                else
                    c->chars_all += char_weight(k);
            }
        }

        if (last) {
            /* a sentence ends where a space follows '.', '!' or '?' (or, in a script
             * without spaces, any character does) */
            c->sentences += (k & (K_SPACE | K_UNSEG)) && (prev_k & K_SENT);
            if (c->mc_state != 3 || (k & K_SPACE)) /* past a line's start, only '\n' matters */
                mc_step(c, f == '\r' ? '\n' : f);
        }

        if (k & K_WORD) {
            if (f < 0x80) {
                word_key ^= f;
                word_key *= FNV_PRIME;
            } else {
                unsigned char buf[4];
                size_t bl = utf8_encode(f, buf);
                for (size_t b = 0; b < bl; b++) {
                    word_key ^= buf[b];
                    word_key *= FNV_PRIME;
                }
            }
            word_cps++;
            if (!(k & K_DIGIT))
                word_num = false;
        } else {
            if (word_cps) {
                word_end(s, st, word_key, word_cps, word_num);
                word_key = FNV_OFFSET;
                word_cps = 0;
                word_num = true;
            }
            if (k & K_UNSEG) {
                /* no spaces to find words by: each pair of neighbours is a token
                 * (the FNV-1a of the two folded characters, as a two-letter word's),
                 * and a character with no neighbour of its script is one alone */
                unseg_token(s, st, prev_k & K_UNSEG, f, p + i, len - i);
            } else {
                if (!(k & K_SPACE)) {
                    unsigned char buf[4];
                    size_t bl = utf8_encode(f, buf);
                    emit_token(s, st, features_hash_token((const char *)buf, bl));
                }
            }
        }
        if (last && grams < FEATURES_MAX_CHAR_GRAMS && !((k & K_SPACE) && last_space)) {
            /* the character, or the space that stands for a run of whitespace */
            win = (win << 16) | features__cp16(k & K_SPACE ? ' ' : f);
            last_space = k & K_SPACE;
            if (win_n < 3) {
                win_n++;
            } else {
                emit(s, FEATURES_FAM_CHAR, win);
                grams++;
            }
        }
        prev_k = k;
    }
    if (word_cps)
        word_end(s, st, word_key, word_cps, word_num);
    if (last) {
        c->char_grams = grams;
        if (prev_k & K_SENT)
            c->sentences++;
    }
}

static void
feed_last(struct features_scratch *s, const char *text, size_t len)
{
    feed_stream(s, STREAM_LAST, text, len);
}

static void
feed_context(struct features_scratch *s, const char *text, size_t len)
{
    feed_stream(s, STREAM_CONTEXT, text, len);
}

static void
feed(struct features_scratch *s, enum stream st, const char *text, size_t len)
{
    if (st == STREAM_LAST)
        feed_last(s, text, len);
    else
        feed_context(s, text, len);
}

/* ---- putting it together ----------------------------------------------------- */

static void
begin(struct features_scratch *s)
{
    s->n = 0;
    s->n_pending = 0;
    memset(&s->c, 0, sizeof(s->c));
    tok_reset(&s->tok[0]);
    tok_reset(&s->tok[1]);
}

static float
lg(double x)
{
    return (float)log1p(x);
}

static float
frac(uint64_t a, uint64_t b)
{
    return b ? (float)((double)a / (double)b) : 0.0f;
}

/* Adds the last user turn's ASCII byte counts into the dense counters. */
static void
sum_ascii(struct counts *c)
{
    for (unsigned b = 0; b < 128; b++) {
        uint64_t n = c->ascii[b];
        unsigned k = ascii_class[b];
        if (n == 0)
            continue;
        c->chars_last += n;
        if ((k & (K_WORD | K_DIGIT)) == K_WORD)
            c->letters += n;
        if (k & K_UPPER)
            c->upper += n;
        if (k & K_DIGIT)
            c->digits += n;
        if (k & K_OP)
            c->operators += n;
        if (k & K_LATEX)
            c->latex += n;
        if (k & K_CODE)
            c->code += n;
    }
    c->questions += c->ascii['?'];
    c->newlines += c->ascii['\n'];
    c->chars_all += c->chars_last;
}

static void
finish(struct features_scratch *s, struct features_vec *out)
{
    struct counts *c = &s->c;
    float *d = out->dense;
    double norm[FEATURES_N_FAMILIES] = {0};

    sum_ascii(c);
    /* an unsegmented run has no words to count: about one word per five of its
     * weighted characters, four of them letters, as in English */
    c->words_last += c->unseg_units / 5;
    c->word_cps += c->unseg_units - c->unseg_units / 5;

    d[D_CHARS_ALL] = lg(c->chars_all);
    d[D_CHARS_LAST] = lg(c->chars_last);
    d[D_WORDS_LAST] = lg(c->words_last);
    d[D_NUMBERS] = lg(c->numbers);
    d[D_DIGIT_FRAC] = frac(c->digits, c->chars_last);
    d[D_OPERATORS] = lg(c->operators);
    d[D_LATEX] = lg(c->latex);
    d[D_CODE] = lg(c->code);
    d[D_MC_OPTIONS] = lg(c->mc_options);
    d[D_TURNS] = lg(c->turns);
    d[D_USER_TURNS] = lg(c->user_turns);
    d[D_HAS_SYSTEM] = (float)c->has_system;
    d[D_SYSTEM_CHARS] = lg(c->system_chars);
    d[D_MAX_TOKENS] = lg(c->max_tokens);
    d[D_HAS_TOOLS] = (float)c->has_tools;
    d[D_TOOLS] = lg(c->tools);
    d[D_QUESTIONS] = lg(c->questions);
    d[D_SENTENCES] = lg(c->sentences);
    d[D_AVG_WORD] = frac(c->word_cps, c->words_last);
    if (d[D_AVG_WORD] > 15.0f)
        d[D_AVG_WORD] = 15.0f;
    d[D_UPPER_FRAC] = frac(c->upper, c->letters);
    d[D_SYMBOL_FRAC] = frac(c->symbols, c->chars_last);
    d[D_NEWLINES] = lg(c->newlines);
    d[D_IMAGES] = lg(c->images);
    d[D_LONG_WORD_FRAC] = frac(c->long_words, c->words_last);

    for (uint32_t j = 0; j < FEATURES_N_DENSE; j++) {
        int bin = (int)floorf(d[j] * dense_bin_scale[j]);
        if (bin < 0)
            bin = 0;
        if (bin > 31)
            bin = 31;
        emit(s, FEATURES_FAM_DENSE_BIN, ((uint64_t)j << 8) | (uint64_t)bin);
    }
    flush(s);

    /* log term frequency, L2-normalised per family (most counts are 1: no log) */
    for (size_t i = 0; i < s->n; i++) {
        uint32_t k = s->slots[s->pos[i]].cnt;
        float v = k == 1 ? 1.0f : 1.0f + logf((float)k);
        s->vals[i] = v;
        norm[s->fam[i]] += (double)v * v;
    }
    float inv[FEATURES_N_FAMILIES];
    for (int f = 0; f < FEATURES_N_FAMILIES; f++)
        inv[f] = norm[f] > 0 ? (float)(1.0 / sqrt(norm[f])) : 0.0f;
    for (size_t i = 0; i < s->n; i++) {
        s->vals[i] *= inv[s->fam[i]];
        s->slots[s->pos[i]].key = 0; /* leave the table empty for the next text */
    }
    out->n = s->n;
    out->ids = s->ids;
    out->vals = s->vals;
}

static double
json_num(const json_t *v)
{
    if (json_is_integer(v))
        return (double)json_integer_value(v);
    if (json_is_real(v))
        return json_real_value(v);
    return 0.0;
}

/* Feeds a message's content: a string, or an array of content parts. */
static void
feed_content(struct features_scratch *s, enum stream st, const json_t *content, bool system)
{
    if (json_is_string(content)) {
        size_t len = json_string_length(content);
        feed(s, st, json_string_value(content), len);
        if (system)
            s->c.system_chars += (double)len;
        return;
    }
    if (!json_is_array(content))
        return;
    size_t i;
    const json_t *part;
    json_array_foreach(content, i, part) {
        const json_t *text = json_is_object(part) ? json_object_get(part, "text") : NULL;
        if (json_is_string(text)) {
            size_t len = json_string_length(text);
            feed(s, st, json_string_value(text), len);
            if (system)
                s->c.system_chars += (double)len;
        } else if (json_is_string(part)) {
            feed(s, st, json_string_value(part), json_string_length(part));
        } else if (json_is_object(part)) {
            s->c.images++; /* image, audio, file: anything that is not text */
        }
    }
}

int
features_extract(struct features_scratch *s, const json_t *request, struct features_vec *out)
{
    const json_t *messages, *prompt, *v;

    if (!json_is_object(request))
        return -EINVAL;
    begin(s);
    messages = json_object_get(request, "messages");
    prompt = json_object_get(request, "prompt");
    if (json_is_array(messages) && json_array_size(messages) > 0) {
        size_t n = json_array_size(messages), last = n;
        for (size_t i = n; i-- > 0;) {
            const json_t *role = json_object_get(json_array_get(messages, i), "role");
            if (json_is_string(role) && strcmp(json_string_value(role), "user") == 0) {
                last = i;
                break;
            }
        }
        if (last == n)
            last = n - 1; /* no user turn: the final message stands in for it */
        for (size_t i = 0; i < n; i++) {
            const json_t *m = json_array_get(messages, i);
            if (!json_is_object(m))
                continue;
            const json_t *role = json_object_get(m, "role");
            const char *r = json_is_string(role) ? json_string_value(role) : "";
            bool system = strcmp(r, "system") == 0 || strcmp(r, "developer") == 0;
            s->c.turns++;
            if (strcmp(r, "user") == 0)
                s->c.user_turns++;
            if (system)
                s->c.has_system = 1;
            feed_content(s, i == last ? STREAM_LAST : STREAM_CONTEXT,
                         json_object_get(m, "content"), system);
        }
    } else if (json_is_string(prompt)) {
        s->c.turns = 1;
        s->c.user_turns = 1;
        feed(s, STREAM_LAST, json_string_value(prompt), json_string_length(prompt));
    } else if (json_is_array(prompt) && json_array_size(prompt) > 0) {
        /* legacy completions: a batch of prompts, read as one text */
        size_t i;
        const json_t *part;
        s->c.turns = 1;
        s->c.user_turns = 1;
        json_array_foreach(prompt, i, part) {
            if (json_is_string(part))
                feed(s, STREAM_LAST, json_string_value(part), json_string_length(part));
        }
    } else {
        return -EINVAL;
    }
    v = json_object_get(request, "max_completion_tokens");
    if (!json_is_number(v))
        v = json_object_get(request, "max_tokens");
    if (json_is_number(v) && json_num(v) > 0)
        s->c.max_tokens = json_num(v);
    v = json_object_get(request, "tools");
    if (!json_is_array(v))
        v = json_object_get(request, "functions");
    if (json_is_array(v) && json_array_size(v) > 0) {
        s->c.has_tools = 1;
        s->c.tools = (double)json_array_size(v);
    }
    finish(s, out);
    return 0;
}

int
features_extract_text(struct features_scratch *s, const char *text, size_t len,
                      struct features_vec *out)
{
    if (len == 0)
        return -EINVAL;
    begin(s);
    s->c.turns = 1;
    s->c.user_turns = 1;
    feed(s, STREAM_LAST, text, len);
    finish(s, out);
    return 0;
}
