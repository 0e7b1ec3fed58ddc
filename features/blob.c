/* blob.c - a feature vector as stored bytes (store_prompts = features) and back, refusing any malformed input. */
#include "prompt_features.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "features-int.h"

/* Layout (all little-endian), FEATURES_BLOB_HEADER bytes then three arrays:
 *   0  'T' 'F'             magic
 *   2  u8  format          FEATURES_BLOB_FORMAT
 *   3  u8  n_bits          hash space the ids live in
 *   4  u32 version         FEATURES_VERSION of the extractor
 *   8  u32 count           distinct sparse features
 *  12  u32 n_dense         FEATURES_N_DENSE
 *  16  u32 ids[count]      in the extractor's (first-seen) order, so training from a
 *                          decoded vector sums in the same order as from the text
 *      f32 vals[count]     as extracted (bit patterns, not rounded)
 *      f32 dense[n_dense]  raw dense signals */

static void
put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t
get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void
put_f32(unsigned char *p, float f)
{
    uint32_t v;

    memcpy(&v, &f, sizeof(v));
    put_u32(p, v);
}

static float
get_f32(const unsigned char *p)
{
    uint32_t v = get_u32(p);
    float f;

    memcpy(&f, &v, sizeof(f));
    return f;
}

/* The arrays' walks, shared by both layouts (inline: encoding runs per request when
 * prompts are stored as features, and these keep it the loops it was). */

/* Writes the n floats of f at p; returns the end. */
static inline unsigned char *
put_f32s(unsigned char *p, const float *f, size_t n)
{
    for (size_t i = 0; i < n; i++, p += 4)
        put_f32(p, f[i]);
    return p;
}

/* Writes both sparse arrays of v's first n features at p, the ids then their values;
 * returns the end. */
static inline unsigned char *
put_sparse(unsigned char *p, const struct features_vec *v, size_t n)
{
    for (size_t i = 0; i < n; i++, p += 4)
        put_u32(p, v->ids[i]);
    return put_f32s(p, v->vals, n);
}

/* Reads n floats at p into f; returns the end, or NULL when one is not finite. */
static inline const unsigned char *
get_f32s(const unsigned char *p, float *f, size_t n)
{
    for (size_t i = 0; i < n; i++, p += 4) {
        f[i] = get_f32(p);
        if (!isfinite(f[i]))
            return NULL;
    }
    return p;
}

static int
cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Reads both sparse arrays of n features at p into ids and vals (tmp: room for n more
 * ids), refusing what the extractor never writes: an id outside n_bits, a value that
 * is not finite, an id twice. Returns the end, or NULL. */
static inline const unsigned char *
get_sparse(const unsigned char *p, size_t n, unsigned n_bits, uint32_t *ids, float *vals,
           uint32_t *tmp)
{
    for (size_t i = 0; i < n; i++, p += 4) {
        ids[i] = get_u32(p);
        if (ids[i] >> n_bits)
            return NULL;
    }
    p = get_f32s(p, vals, n);
    if (!p)
        return NULL;
    memcpy(tmp, ids, n * sizeof(*tmp));
    qsort(tmp, n, sizeof(*tmp), cmp_u32);
    for (size_t i = 1; i < n; i++)
        if (tmp[i] == tmp[i - 1])
            return NULL;
    return p;
}

size_t
features_blob_size(size_t n)
{
    return FEATURES_BLOB_HEADER + 8 * n + 4 * (size_t)FEATURES_N_DENSE;
}

void *
features_blob_encode(const struct features_vec *fv, unsigned n_bits, size_t *len)
{
    size_t size = features_blob_size(fv->n);
    unsigned char *b = malloc(size), *p;

    if (!b)
        abort(); /* out of memory aborts, project-wide */
    b[0] = 'T';
    b[1] = 'F';
    b[2] = FEATURES_BLOB_FORMAT;
    b[3] = (unsigned char)n_bits;
    put_u32(b + 4, FEATURES_VERSION);
    put_u32(b + 8, (uint32_t)fv->n);
    put_u32(b + 12, FEATURES_N_DENSE);
    p = put_sparse(b + FEATURES_BLOB_HEADER, fv, fv->n);
    put_f32s(p, fv->dense, FEATURES_N_DENSE);
    *len = size;
    return b;
}

int
features_blob_decode(struct features_scratch *s, const void *data, size_t len,
                     struct features_vec *out)
{
    const unsigned char *b = data, *p;
    unsigned n_bits = features_scratch_bits(s);
    uint32_t *ids, *tmp;
    float *vals;
    size_t n;

    if (!b || len < FEATURES_BLOB_HEADER || b[0] != 'T' || b[1] != 'F' ||
        b[2] != FEATURES_BLOB_FORMAT)
        return -EINVAL;
    n = get_u32(b + 8);
    /* more distinct ids than buckets cannot be; the bound also keeps 8 * n from wrapping */
    if (b[3] < FEATURES_MIN_BITS || b[3] > FEATURES_MAX_BITS || n > (1u << b[3]) ||
        get_u32(b + 12) != FEATURES_N_DENSE || len != features_blob_size(n))
        return -EINVAL;
    if (get_u32(b + 4) != FEATURES_VERSION || b[3] != n_bits)
        return -EPROTO; /* well formed, another hashing: useless to this scratch */
    features__scratch_arrays(s, n, &ids, &vals, &tmp);
    p = get_sparse(b + FEATURES_BLOB_HEADER, n, n_bits, ids, vals, tmp);
    if (!p || !get_f32s(p, out->dense, FEATURES_N_DENSE))
        return -EINVAL;
    out->n = n;
    out->ids = ids;
    out->vals = vals;
    return 0;
}

/* Value of a base64 character (RFC 4648, standard alphabet), or -1. */
static int
b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes padded base64 text (len bytes) into a new buffer (free()) of *n bytes. Returns
 * 0 or -EINVAL. */
static int
b64_decode(const char *text, size_t len, unsigned char **out, size_t *n_out)
{
    unsigned char *buf;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;

    if (!text || len % 4)
        return -EINVAL;
    if (len && text[len - 1] == '=')
        len -= len >= 2 && text[len - 2] == '=' ? 2 : 1;
    buf = malloc(len / 4 * 3 + 3);
    if (!buf)
        abort();
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)text[i]);
        if (v < 0) {
            free(buf);
            return -EINVAL;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[n++] = (unsigned char)(acc >> bits);
        }
        acc &= (1u << bits) - 1;
    }
    /* leftover bits must be zero padding, or two texts would decode alike */
    if (acc) {
        free(buf);
        return -EINVAL;
    }
    *out = buf;
    *n_out = n;
    return 0;
}

int
features_blob_decode_base64(struct features_scratch *s, const char *text, size_t len,
                            struct features_vec *out)
{
    unsigned char *buf;
    size_t n;
    int rc = b64_decode(text, len, &buf, &n);

    if (rc < 0)
        return rc;
    rc = features_blob_decode(s, buf, n, out);
    free(buf);
    return rc;
}

/* ---- a fast answer as stored ------------------------------------------------------
 *
 * Layout (little-endian), FEATURES_ANSWER_BLOB_HEADER bytes then three arrays:
 *   0  'T' 'A'             magic
 *   2  u8  format          FEATURES_ANSWER_BLOB_FORMAT
 *   3  u8  n_bits          hash space of the words' ids; 0: no words kept
 *   4  u32 version         FEATURES_VERSION of the extractor (the words' hashing); 0
 *                          without words
 *   8  u32 answer_version  FEATURES_ANSWER_VERSION (the signals' meaning)
 *  12  u32 n_signals       FEATURES_N_ANSWER
 *  16  u32 count           distinct sparse features of the answer's text (0 without)
 *  20  f32 signals[n_signals]
 *      u32 ids[count]      in the extractor's order
 *      f32 vals[count] */

size_t
features_answer_blob_size(size_t n)
{
    return FEATURES_ANSWER_BLOB_HEADER + 4 * (size_t)FEATURES_N_ANSWER + 8 * n;
}

void *
features_answer_blob_encode(const float *signals, const struct features_vec *words,
                            unsigned n_bits, size_t *len)
{
    size_t n = words ? words->n : 0, size = features_answer_blob_size(n);
    unsigned char *b = malloc(size), *p;

    if (!b)
        abort(); /* out of memory aborts, project-wide */
    b[0] = 'T';
    b[1] = 'A';
    b[2] = FEATURES_ANSWER_BLOB_FORMAT;
    b[3] = words ? (unsigned char)n_bits : 0;
    put_u32(b + 4, words ? FEATURES_VERSION : 0); /* no words, no hashing to name */
    put_u32(b + 8, FEATURES_ANSWER_VERSION);
    put_u32(b + 12, FEATURES_N_ANSWER);
    put_u32(b + 16, (uint32_t)n);
    p = put_f32s(b + FEATURES_ANSWER_BLOB_HEADER, signals, FEATURES_N_ANSWER);
    if (words)
        put_sparse(p, words, n);
    *len = size;
    return b;
}

int
features_answer_blob_decode(struct features_scratch *s, const void *data, size_t len,
                            float signals[FEATURES_N_ANSWER], struct features_vec *words)
{
    const unsigned char *b = data, *p;
    unsigned n_bits = features_scratch_bits(s);
    uint32_t *ids, *tmp;
    float *vals;
    size_t n;

    if (!b || len < FEATURES_ANSWER_BLOB_HEADER || b[0] != 'T' || b[1] != 'A' ||
        b[2] != FEATURES_ANSWER_BLOB_FORMAT)
        return -EINVAL;
    n = get_u32(b + 16);
    if ((b[3] == 0 && (n != 0 || get_u32(b + 4) != 0)) ||
        (b[3] != 0 && (b[3] < FEATURES_MIN_BITS || b[3] > FEATURES_MAX_BITS || n > (1u << b[3]))))
        return -EINVAL;
    /* signals of another version mean other things: useless to a model of these */
    if (get_u32(b + 8) != FEATURES_ANSWER_VERSION || get_u32(b + 12) != FEATURES_N_ANSWER)
        return -EPROTO;
    if (len != features_answer_blob_size(n))
        return -EINVAL;
    p = get_f32s(b + FEATURES_ANSWER_BLOB_HEADER, signals, FEATURES_N_ANSWER);
    if (!p)
        return -EINVAL;
    /* words hashed otherwise would train the wrong weights: the signals alone then */
    int other_hashing = b[3] && (get_u32(b + 4) != FEATURES_VERSION || b[3] != n_bits);
    if (other_hashing)
        n = 0;
    features__scratch_arrays(s, n, &ids, &vals, &tmp);
    if (!get_sparse(p, n, n_bits, ids, vals, tmp))
        return -EINVAL;
    words->n = n;
    words->ids = ids;
    words->vals = vals;
    memset(words->dense, 0, sizeof(words->dense));
    return other_hashing;
}

int
features_answer_blob_decode_base64(struct features_scratch *s, const char *text, size_t len,
                                   float signals[FEATURES_N_ANSWER], struct features_vec *words)
{
    unsigned char *buf;
    size_t n;
    int rc = b64_decode(text, len, &buf, &n);

    if (rc < 0)
        return rc;
    rc = features_answer_blob_decode(s, buf, n, signals, words);
    free(buf);
    return rc;
}
