/* model.c - the predictor model: its file format (save, verified load), reference counting and scoring. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router-int.h"

/*
 * File format, version 1 (all integers and floats little-endian):
 *
 *   header (32 bytes): magic "TRIAGEM\0", u32 format version, u32 features
 *   version, u64 payload length, u32 CRC-32 of the payload, u32 zero.
 *   payload:
 *     u32 n_bits, dim, n_heads, n_dense, n_ref; i32 score_strong, score_weak;
 *     u32 score_mix (weight of the head difference in the score, per mille)
 *     n_heads names of ROUTER__NAME_MAX bytes, NUL-padded
 *     f32 dense_mean[n_dense], dense_scale[n_dense]
 *     f32 bias[n_out], w_dense[n_dense][n_out], h_bias[dim], h_dense[n_dense][dim],
 *         h_out[dim][n_out]
 *     u32 rows (non-zero buckets), then a bitmap of 2^n_bits bits (bucket b is
 *         bit b%8 of byte b/8), then per set bit in bucket order n_out + dim
 *         f16 (w_sparse row, then h_sparse row)
 *     f32 ref[n_ref] (ascending)
 *   format 2 only (a model with a learned escalation model, escalate.c), then:
 *     u32 n_esc (ROUTER__ESC_N), FEATURES_ANSWER_VERSION, n_train;
 *     f32 mean[n_esc], scale[n_esc], w[n_esc], bias
 *       (a section of an older answer signals version has that version's n_esc,
 *       FEATURES_N_ANSWER_V; it loads, the signals added since weighted 0)
 *     u32 rows, a bitmap of 2^n_bits bits, then per set bit one f16 (w_sparse)
 *   A model without one is written as format 1, which loads with the signals-only
 *   default escalation.
 *
 * Sparse rows dominate the size; storing only non-zero ones as half floats keeps
 * a 2^18-bucket model to a few MB.
 */

static void *
xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (!p)
        abort(); /* out of memory aborts, project-wide */
    return p;
}

struct router_model *
router__model_alloc(uint32_t n_bits, uint32_t dim, uint32_t n_heads)
{
    struct router_model *m = xcalloc(1, sizeof(*m));
    size_t nb = (size_t)1 << n_bits;

    atomic_init(&m->refs, 1);
    m->n_bits = n_bits;
    m->dim = dim;
    m->n_heads = n_heads;
    m->n_out = n_heads + 1;
    m->score_strong = m->score_weak = -1;
    for (size_t j = 0; j < FEATURES_N_DENSE; j++)
        m->dense_scale[j] = 1.0f;
    m->bias = xcalloc(m->n_out, sizeof(float));
    m->w_dense = xcalloc((size_t)FEATURES_N_DENSE * m->n_out, sizeof(float));
    m->w_sparse = xcalloc(nb * m->n_out, sizeof(float));
    m->h_bias = xcalloc(dim, sizeof(float));
    m->h_dense = xcalloc((size_t)FEATURES_N_DENSE * dim, sizeof(float));
    m->h_sparse = xcalloc(nb * dim, sizeof(float));
    m->h_out = xcalloc((size_t)dim * m->n_out, sizeof(float));
    return m;
}

static void
model_free(struct router_model *m)
{
    if (!m)
        return;
    free(m->bias);
    free(m->w_dense);
    free(m->w_sparse);
    free(m->h_bias);
    free(m->h_dense);
    free(m->h_sparse);
    free(m->h_out);
    free(m->ref);
    free(m->esc.w_sparse);
    free(m);
}

struct router_model *
router_model_ref(struct router_model *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void
router_model_unref(struct router_model *m)
{
    if (!m)
        return;
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        model_free(m);
}

const char *
router_model_version(const struct router_model *m)
{
    return m->version;
}

unsigned
router_model_bits(const struct router_model *m)
{
    return m->n_bits;
}

size_t
router_model_n_heads(const struct router_model *m)
{
    return m->n_heads;
}

const char *
router_model_head_name(const struct router_model *m, size_t i)
{
    return i < m->n_heads ? m->names[i] : NULL;
}

int
router_model_head_find(const struct router_model *m, const char *name)
{
    for (uint32_t i = 0; i < m->n_heads; i++)
        if (strcmp(m->names[i], name) == 0)
            return (int)i;
    return -1;
}

double
router_model_threshold_for_share(const struct router_model *m, double share)
{
    if (!(share > 0.0) || m->n_ref == 0)
        return nextafter(1.0, 2.0); /* nothing scores above 1: no strong calls */
    if (share >= 1.0)
        return 0.0;
    /* numpy's percentile(scores, 100 * (1 - share)), linear interpolation */
    double pos = (1.0 - share) * (double)(m->n_ref - 1);
    size_t lo = (size_t)floor(pos);
    size_t hi = lo + 1 < m->n_ref ? lo + 1 : lo;
    double frac = pos - (double)lo;
    return m->ref[lo] + (m->ref[hi] - m->ref[lo]) * frac;
}

struct router_model *
router_model_combine(const struct router_model *routing, const struct router_model *escalation,
                     char *err, size_t errlen)
{
    const struct router_model *r = routing;
    size_t nb = (size_t)1 << r->n_bits;

    if (routing->n_bits != escalation->n_bits) {
        router__set_err(err, errlen,
                        "cannot combine models of different hash spaces (%u and %u bits)",
                        routing->n_bits, escalation->n_bits);
        return NULL;
    }
    struct router_model *m = router__model_alloc(r->n_bits, r->dim, r->n_heads);
    m->score_strong = r->score_strong;
    m->score_weak = r->score_weak;
    m->score_mix = r->score_mix;
    memcpy(m->names, r->names, sizeof(m->names));
    memcpy(m->dense_mean, r->dense_mean, sizeof(m->dense_mean));
    memcpy(m->dense_scale, r->dense_scale, sizeof(m->dense_scale));
    memcpy(m->bias, r->bias, r->n_out * sizeof(float));
    memcpy(m->w_dense, r->w_dense, (size_t)FEATURES_N_DENSE * r->n_out * sizeof(float));
    memcpy(m->w_sparse, r->w_sparse, nb * r->n_out * sizeof(float));
    memcpy(m->h_bias, r->h_bias, r->dim * sizeof(float));
    memcpy(m->h_dense, r->h_dense, (size_t)FEATURES_N_DENSE * r->dim * sizeof(float));
    memcpy(m->h_sparse, r->h_sparse, nb * r->dim * sizeof(float));
    memcpy(m->h_out, r->h_out, (size_t)r->dim * r->n_out * sizeof(float));
    m->n_ref = r->n_ref;
    m->ref = xcalloc(r->n_ref, sizeof(float));
    memcpy(m->ref, r->ref, r->n_ref * sizeof(float));
    if (escalation->has_esc) {
        m->esc = escalation->esc;
        m->esc.w_sparse = xcalloc(nb, sizeof(float));
        memcpy(m->esc.w_sparse, escalation->esc.w_sparse, nb * sizeof(float));
        m->has_esc = 1;
    }
    router__model_finish(m);
    return m;
}

/* ---- scoring ------------------------------------------------------------------ */

void
router__dense_norm(const struct router_model *m, const float *raw, float *z)
{
    for (size_t j = 0; j < FEATURES_N_DENSE; j++) {
        float v = (raw[j] - m->dense_mean[j]) * m->dense_scale[j];
        if (v > ROUTER__DENSE_CLIP)
            v = ROUTER__DENSE_CLIP;
        if (v < -ROUTER__DENSE_CLIP)
            v = -ROUTER__DENSE_CLIP;
        z[j] = v;
    }
}

void
router__forward(const struct router_model *m, const struct features_vec *fv, const float *dz,
                float *hidden, float *logits)
{
    uint32_t no = m->n_out, dim = m->dim;
    float a[256];

    for (uint32_t o = 0; o < no; o++)
        logits[o] = m->bias[o];
    for (uint32_t k = 0; k < dim; k++)
        a[k] = m->h_bias[k];
    for (size_t j = 0; j < FEATURES_N_DENSE; j++) {
        const float *w = m->w_dense + j * no;
        for (uint32_t o = 0; o < no; o++)
            logits[o] += dz[j] * w[o];
        const float *e = m->h_dense + j * dim;
        for (uint32_t k = 0; k < dim; k++)
            a[k] += dz[j] * e[k];
    }
    for (size_t i = 0; i < fv->n; i++) {
        float v = fv->vals[i];
        const float *w = m->w_sparse + (size_t)fv->ids[i] * no;
        for (uint32_t o = 0; o < no; o++)
            logits[o] += v * w[o];
        const float *e = m->h_sparse + (size_t)fv->ids[i] * dim;
        for (uint32_t k = 0; k < dim; k++)
            a[k] += v * e[k];
    }
    for (uint32_t k = 0; k < dim; k++) {
        float h = tanhf(a[k]);
        if (hidden)
            hidden[k] = h;
        const float *w = m->h_out + (size_t)k * no;
        for (uint32_t o = 0; o < no; o++)
            logits[o] += h * w[o];
    }
}

static double
sigmoid(double z)
{
    return 1.0 / (1.0 + exp(-z));
}

void
router__scores_from_logits(const struct router_model *m, const float *logits,
                           struct router_scores *out)
{
    out->n_heads = m->n_heads;
    for (uint32_t i = 0; i < m->n_heads; i++)
        out->p[i] = sigmoid(logits[i]);
    out->score = sigmoid(logits[m->n_heads]);
    if (m->score_mix > 0) {
        double diff = 0.5 * (1.0 + out->p[m->score_strong] - out->p[m->score_weak]);
        double w = m->score_mix / 1000.0;
        out->score = w * diff + (1.0 - w) * out->score;
    }
}

/* Per-thread feature scratch, freed when the thread exits. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void
scratch_free(void *p)
{
    features_scratch_destroy(p);
}

static void
scratch_key_make(void)
{
    if (pthread_key_create(&scratch_key, scratch_free) != 0)
        abort();
}

struct features_scratch *
router__thread_scratch(unsigned n_bits)
{
    struct features_scratch *s;

    pthread_once(&scratch_once, scratch_key_make);
    s = pthread_getspecific(scratch_key);
    if (s && features_scratch_bits(s) == n_bits)
        return s;
    features_scratch_destroy(s);
    s = features_scratch_new(n_bits);
    if (!s || pthread_setspecific(scratch_key, s) != 0)
        abort();
    return s;
}

void
router_thread_cleanup(void)
{
    pthread_once(&scratch_once, scratch_key_make);
    features_scratch_destroy(pthread_getspecific(scratch_key));
    pthread_setspecific(scratch_key, NULL);
}

int
router_score_features(const struct router_model *m, const struct features_vec *fv,
                      struct router_scores *out)
{
    float dz[FEATURES_N_DENSE], logits[ROUTER_MAX_HEADS + 1];

    router__dense_norm(m, fv->dense, dz);
    router__forward(m, fv, dz, NULL, logits);
    router__scores_from_logits(m, logits, out);
    return 0;
}

int
router_score_request(const struct router_model *m, const json_t *request,
                     struct router_scores *out)
{
    struct features_vec fv;
    int rc;

    rc = features_extract(router__thread_scratch(m->n_bits), request, &fv);
    if (rc < 0)
        return rc;
    return router_score_features(m, &fv, out);
}

void *
router_request_features(const struct router_model *m, const json_t *request, size_t *len)
{
    struct features_vec fv;

    if (features_extract(router__thread_scratch(m->n_bits), request, &fv) < 0)
        return NULL;
    return features_blob_encode(&fv, m->n_bits, len);
}

int
router_score_text(const struct router_model *m, const char *text, size_t len,
                  struct router_scores *out)
{
    struct features_vec fv;
    int rc;

    rc = features_extract_text(router__thread_scratch(m->n_bits), text, len, &fv);
    if (rc < 0)
        return rc;
    return router_score_features(m, &fv, out);
}

/* ---- checksums and half floats ------------------------------------------------ */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t
router_crc32(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint32_t c = 0xffffffffu;

    pthread_once(&crc_once, crc_init);
    for (size_t i = 0; i < len; i++)
        c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

void
router__set_version(struct router_model *m, const unsigned char *payload, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= payload[i];
        h *= 0x100000001b3ULL;
    }
    snprintf(m->version, sizeof(m->version), "%016llx", (unsigned long long)h);
}

static uint32_t
f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float
u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t
half_from_float(float f)
{
    uint32_t x = f2u(f);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffff;

    if (((x >> 23) & 0xff) == 0xff) /* inf, nan */
        return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    if (exp >= 31)
        return (uint16_t)(sign | 0x7bff); /* saturate at the largest finite half */
    if (exp <= 0) {
        if (exp < -10)
            return (uint16_t)sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++; /* may carry into the exponent, which is the right rounding */
    if ((h & 0x7fff) >= 0x7c00)
        h = sign | 0x7bff;
    return (uint16_t)h;
}

static float
half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;

    if (exp == 0) {
        float v = (float)mant * (1.0f / 16777216.0f); /* 2^-24 */
        return sign ? -v : v;
    }
    if (exp == 31)
        return u2f(sign | 0x7f800000 | (mant << 13));
    return u2f(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

float
router_half_round(float f)
{
    return half_to_float(half_from_float(f));
}

/* ---- writing ------------------------------------------------------------------ */

struct wbuf {
    unsigned char *p;
    size_t len, cap;
};

static void
wb_put(struct wbuf *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q)
            abort();
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void
wb_u32(struct wbuf *b, uint32_t v)
{
    unsigned char c[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    wb_put(b, c, 4);
}

static void
wb_f32s(struct wbuf *b, const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        wb_u32(b, f2u(v[i]));
}

static void
wb_f16(struct wbuf *b, float f)
{
    uint16_t h = half_from_float(f);
    unsigned char c[2] = {(unsigned char)h, (unsigned char)(h >> 8)};
    wb_put(b, c, 2);
}

static int
row_nonzero(const struct router_model *m, size_t r)
{
    for (uint32_t o = 0; o < m->n_out; o++)
        if (half_from_float(m->w_sparse[r * m->n_out + o]) & 0x7fff)
            return 1;
    for (uint32_t k = 0; k < m->dim; k++)
        if (half_from_float(m->h_sparse[r * m->dim + k]) & 0x7fff)
            return 1;
    return 0;
}

/* Serialises the payload of m into b. */
static void
payload_write(const struct router_model *m, struct wbuf *b)
{
    size_t nb = (size_t)1 << m->n_bits, rows = 0;
    unsigned char *bitmap = xcalloc(nb / 8, 1);

    wb_u32(b, m->n_bits);
    wb_u32(b, m->dim);
    wb_u32(b, m->n_heads);
    wb_u32(b, FEATURES_N_DENSE);
    wb_u32(b, m->n_ref);
    wb_u32(b, (uint32_t)m->score_strong);
    wb_u32(b, (uint32_t)m->score_weak);
    wb_u32(b, m->score_mix);
    for (uint32_t i = 0; i < m->n_heads; i++)
        wb_put(b, m->names[i], ROUTER__NAME_MAX);
    wb_f32s(b, m->dense_mean, FEATURES_N_DENSE);
    wb_f32s(b, m->dense_scale, FEATURES_N_DENSE);
    wb_f32s(b, m->bias, m->n_out);
    wb_f32s(b, m->w_dense, (size_t)FEATURES_N_DENSE * m->n_out);
    wb_f32s(b, m->h_bias, m->dim);
    wb_f32s(b, m->h_dense, (size_t)FEATURES_N_DENSE * m->dim);
    wb_f32s(b, m->h_out, (size_t)m->dim * m->n_out);
    for (size_t r = 0; r < nb; r++)
        if (row_nonzero(m, r)) {
            bitmap[r / 8] |= (unsigned char)(1u << (r % 8));
            rows++;
        }
    wb_u32(b, (uint32_t)rows);
    wb_put(b, bitmap, nb / 8);
    for (size_t r = 0; r < nb; r++) {
        if (!(bitmap[r / 8] & (1u << (r % 8))))
            continue;
        for (uint32_t o = 0; o < m->n_out; o++)
            wb_f16(b, m->w_sparse[r * m->n_out + o]);
        for (uint32_t k = 0; k < m->dim; k++)
            wb_f16(b, m->h_sparse[r * m->dim + k]);
    }
    wb_f32s(b, m->ref, m->n_ref);
    if (m->has_esc) {
        wb_u32(b, ROUTER__ESC_N);
        wb_u32(b, FEATURES_ANSWER_VERSION);
        wb_u32(b, m->esc.n_train);
        wb_f32s(b, m->esc.mean, ROUTER__ESC_N);
        wb_f32s(b, m->esc.scale, ROUTER__ESC_N);
        wb_f32s(b, m->esc.w, ROUTER__ESC_N);
        wb_f32s(b, &m->esc.bias, 1);
        memset(bitmap, 0, nb / 8);
        rows = 0;
        for (size_t r = 0; r < nb; r++)
            if (half_from_float(m->esc.w_sparse[r]) & 0x7fff) {
                bitmap[r / 8] |= (unsigned char)(1u << (r % 8));
                rows++;
            }
        wb_u32(b, (uint32_t)rows);
        wb_put(b, bitmap, nb / 8);
        for (size_t r = 0; r < nb; r++)
            if (bitmap[r / 8] & (1u << (r % 8)))
                wb_f16(b, m->esc.w_sparse[r]);
    }
    free(bitmap);
}

/* Bytes of the escalation section of format 2 before its sparse rows, with n inputs. */
#define ESC_BYTES(n) (4u * 3 + 4u * (3 * (n) + 1) + 4u)

void
router__model_finish(struct router_model *m)
{
    struct wbuf pl = {0};

    payload_write(m, &pl);
    router__set_version(m, pl.p, pl.len);
    free(pl.p);
}

int
router_model_save(const struct router_model *m, const char *path)
{
    struct wbuf pl = {0}, hd = {0};
    char tmp[4096];
    FILE *f = NULL;
    int rc = 0;

    payload_write(m, &pl);
    wb_put(&hd, ROUTER__MAGIC, 8);
    wb_u32(&hd, m->has_esc ? ROUTER__FORMAT_VERSION : 1u);
    wb_u32(&hd, FEATURES_VERSION);
    wb_u32(&hd, (uint32_t)pl.len);
    wb_u32(&hd, (uint32_t)((uint64_t)pl.len >> 32));
    wb_u32(&hd, router_crc32(pl.p, pl.len));
    wb_u32(&hd, 0);

    /* write a temporary file and rename it, so a reader never sees half a model */
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
        rc = -ENAMETOOLONG;
        goto fail;
    }
    f = fopen(tmp, "wb");
    if (!f) {
        rc = -errno;
        goto fail;
    }
    if (fwrite(hd.p, 1, hd.len, f) != hd.len || fwrite(pl.p, 1, pl.len, f) != pl.len) {
        rc = -EIO;
        goto fail;
    }
    if (fclose(f) != 0) {
        f = NULL;
        rc = -EIO;
        goto fail;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        rc = -errno;
        goto fail;
    }
    free(pl.p);
    free(hd.p);
    return 0;
fail:
    if (f)
        fclose(f);
    remove(tmp);
    free(pl.p);
    free(hd.p);
    return rc;
}

/* ---- reading ------------------------------------------------------------------ */

struct rbuf {
    const unsigned char *p;
    size_t len, off;
    int bad;
};

static const unsigned char *
rb_take(struct rbuf *b, size_t n)
{
    if (b->bad || n > b->len - b->off) {
        b->bad = 1;
        return NULL;
    }
    const unsigned char *q = b->p + b->off;
    b->off += n;
    return q;
}

static uint32_t
get_u32(const unsigned char *c)
{
    return (uint32_t)c[0] | (uint32_t)c[1] << 8 | (uint32_t)c[2] << 16 | (uint32_t)c[3] << 24;
}

static uint32_t
rb_u32(struct rbuf *b)
{
    const unsigned char *c = rb_take(b, 4);
    return c ? get_u32(c) : 0;
}

static void
rb_f32s(struct rbuf *b, float *v, size_t n)
{
    const unsigned char *c = rb_take(b, n * 4);

    if (!c)
        return;
    for (size_t i = 0; i < n; i++)
        v[i] = u2f(get_u32(c + 4 * i));
}

static int
all_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

void
router__set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Parses and validates a payload; returns a new model or NULL with err set. */
static struct router_model *
payload_read(const unsigned char *data, size_t len, uint32_t format, char *err, size_t errlen)
{
    /* at least: the escalation section of the oldest answer signals (its inputs are read
     * from the section; b.off == len at the end checks the rest) */
    uint64_t esc_bytes = format >= 2 ? ESC_BYTES(FEATURES_N_ANSWER_V(1)) : 0;
    struct rbuf b = {data, len, 0, 0};
    struct router_model *m = NULL;
    uint32_t n_bits, dim, n_heads, n_dense, n_ref, rows;
    int32_t strong, weak;
    uint32_t mix;

    n_bits = rb_u32(&b);
    dim = rb_u32(&b);
    n_heads = rb_u32(&b);
    n_dense = rb_u32(&b);
    n_ref = rb_u32(&b);
    strong = (int32_t)rb_u32(&b);
    weak = (int32_t)rb_u32(&b);
    mix = rb_u32(&b);
    if (b.bad || n_bits < FEATURES_MIN_BITS || n_bits > FEATURES_MAX_BITS || dim > 256 ||
        n_heads < 1 || n_heads > ROUTER_MAX_HEADS || n_dense != FEATURES_N_DENSE ||
        n_ref > ROUTER__MAX_REF || strong < -1 || strong >= (int32_t)n_heads || weak < -1 ||
        weak >= (int32_t)n_heads || mix > 1000 || (mix > 0 && (strong < 0 || weak < 0))) {
        router__set_err(err, errlen, "bad model shape");
        return NULL;
    }
    /* check the declared shape against the bytes and a memory budget before
     * allocating anything: a lying header must not cost gigabytes */
    uint64_t nb = (uint64_t)1 << n_bits, no = n_heads + 1ull;
    if ((no + dim) * nb * sizeof(float) > ROUTER__MAX_MODEL_BYTES) {
        router__set_err(err, errlen, "model too large (%u-bit hash, %u hidden units)", n_bits, dim);
        return NULL;
    }
    uint64_t rows_off = 32 + (uint64_t)n_heads * ROUTER__NAME_MAX +
                        4 * (2ull * FEATURES_N_DENSE + no + FEATURES_N_DENSE * no + dim +
                             (uint64_t)FEATURES_N_DENSE * dim + dim * no);
    if (rows_off + 4 + nb / 8 + 4ull * n_ref + esc_bytes > len) {
        router__set_err(err, errlen, "truncated model");
        return NULL;
    }
    uint32_t declared_rows = get_u32(data + rows_off);
    if (declared_rows > nb ||
        (esc_bytes == 0 &&
         rows_off + 4 + nb / 8 + (uint64_t)declared_rows * (no + dim) * 2 + 4ull * n_ref != len) ||
        (esc_bytes > 0 && rows_off + 4 + nb / 8 + (uint64_t)declared_rows * (no + dim) * 2 +
                                  4ull * n_ref + esc_bytes + nb / 8 > len)) {
        router__set_err(err, errlen, "model size does not match its shape");
        return NULL;
    }
    m = router__model_alloc(n_bits, dim, n_heads);
    m->score_strong = strong;
    m->score_weak = weak;
    m->score_mix = mix;
    for (uint32_t i = 0; i < n_heads; i++) {
        const unsigned char *name = rb_take(&b, ROUTER__NAME_MAX);
        if (!name || name[ROUTER__NAME_MAX - 1] != '\0' || name[0] == '\0') {
            router__set_err(err, errlen, "bad head name");
            goto fail;
        }
        memcpy(m->names[i], name, ROUTER__NAME_MAX);
    }
    rb_f32s(&b, m->dense_mean, FEATURES_N_DENSE);
    rb_f32s(&b, m->dense_scale, FEATURES_N_DENSE);
    rb_f32s(&b, m->bias, m->n_out);
    rb_f32s(&b, m->w_dense, (size_t)FEATURES_N_DENSE * m->n_out);
    rb_f32s(&b, m->h_bias, dim);
    rb_f32s(&b, m->h_dense, (size_t)FEATURES_N_DENSE * dim);
    rb_f32s(&b, m->h_out, (size_t)dim * m->n_out);
    rows = rb_u32(&b);
    size_t per = m->n_out + dim;
    const unsigned char *bitmap = rb_take(&b, nb / 8);
    if (b.bad || rows > nb) {
        router__set_err(err, errlen, "truncated model");
        goto fail;
    }
    const unsigned char *rowdata = rb_take(&b, (size_t)rows * per * 2);
    if (!rowdata) {
        router__set_err(err, errlen, "truncated model");
        goto fail;
    }
    size_t seen = 0;
    for (size_t r = 0; r < nb; r++) {
        if (!(bitmap[r / 8] & (1u << (r % 8))))
            continue;
        if (seen == rows) {
            router__set_err(err, errlen, "bad sparse row count");
            goto fail;
        }
        const unsigned char *q = rowdata + seen * per * 2;
        for (uint32_t o = 0; o < m->n_out; o++, q += 2)
            m->w_sparse[r * m->n_out + o] = half_to_float((uint16_t)(q[0] | q[1] << 8));
        for (uint32_t k = 0; k < dim; k++, q += 2)
            m->h_sparse[r * dim + k] = half_to_float((uint16_t)(q[0] | q[1] << 8));
        seen++;
    }
    if (seen != rows) {
        router__set_err(err, errlen, "bad sparse row count");
        goto fail;
    }
    m->n_ref = n_ref;
    m->ref = xcalloc(n_ref, sizeof(float));
    rb_f32s(&b, m->ref, n_ref);
    if (esc_bytes) {
        uint32_t n_esc = rb_u32(&b), aversion = rb_u32(&b);
        m->esc.n_train = rb_u32(&b);
        /* an escalation model made for older answer signals reads theirs; the signals
         * added since get weight 0 (they are appended), so it scores as it did */
        if (!b.bad && (aversion > FEATURES_ANSWER_VERSION || FEATURES_N_ANSWER_V(aversion) == 0)) {
            router__set_err(err, errlen,
                            "escalation model made for answer signals version %u, this build "
                            "has %u",
                            aversion, FEATURES_ANSWER_VERSION);
            goto fail;
        }
        if (!b.bad && n_esc != FEATURES_N_ANSWER_V(aversion)) {
            router__set_err(err, errlen,
                            "escalation model has %u inputs, answer signals version %u have %u",
                            n_esc, aversion, FEATURES_N_ANSWER_V(aversion));
            goto fail;
        }
        if (b.bad)
            n_esc = 0;
        rb_f32s(&b, m->esc.mean, n_esc);
        rb_f32s(&b, m->esc.scale, n_esc);
        rb_f32s(&b, m->esc.w, n_esc);
        rb_f32s(&b, &m->esc.bias, 1);
        uint32_t esc_rows = rb_u32(&b);
        const unsigned char *esc_bitmap = rb_take(&b, nb / 8);
        const unsigned char *esc_data =
            esc_rows <= nb ? rb_take(&b, (size_t)esc_rows * 2) : NULL;
        if (b.bad || !esc_data) {
            router__set_err(err, errlen, "truncated escalation model");
            goto fail;
        }
        m->esc.w_sparse = xcalloc(nb, sizeof(float));
        size_t esc_seen = 0;
        for (size_t r = 0; r < nb; r++) {
            if (!(esc_bitmap[r / 8] & (1u << (r % 8))))
                continue;
            if (esc_seen == esc_rows) {
                router__set_err(err, errlen, "bad escalation row count");
                goto fail;
            }
            const unsigned char *q = esc_data + 2 * esc_seen++;
            m->esc.w_sparse[r] = half_to_float((uint16_t)(q[0] | q[1] << 8));
            if (!isfinite(m->esc.w_sparse[r])) {
                router__set_err(err, errlen, "non-finite escalation weights");
                goto fail;
            }
        }
        if (esc_seen != esc_rows) {
            router__set_err(err, errlen, "bad escalation row count");
            goto fail;
        }
        if (!all_finite(m->esc.mean, ROUTER__ESC_N) || !all_finite(m->esc.scale, ROUTER__ESC_N) ||
            !all_finite(m->esc.w, ROUTER__ESC_N) || !all_finite(&m->esc.bias, 1)) {
            router__set_err(err, errlen, "non-finite escalation weights");
            goto fail;
        }
        m->has_esc = 1;
    }
    if (b.bad || b.off != len) {
        router__set_err(err, errlen, b.bad ? "truncated model" : "trailing bytes in model");
        goto fail;
    }
    if (!all_finite(m->dense_mean, FEATURES_N_DENSE) ||
        !all_finite(m->dense_scale, FEATURES_N_DENSE) || !all_finite(m->bias, m->n_out) ||
        !all_finite(m->w_dense, (size_t)FEATURES_N_DENSE * m->n_out) ||
        !all_finite(m->h_bias, dim) || !all_finite(m->h_dense, (size_t)FEATURES_N_DENSE * dim) ||
        !all_finite(m->h_out, (size_t)dim * m->n_out) || !all_finite(m->ref, n_ref)) {
        router__set_err(err, errlen, "non-finite weights");
        goto fail;
    }
    for (uint32_t i = 1; i < n_ref; i++)
        if (m->ref[i] < m->ref[i - 1]) {
            router__set_err(err, errlen, "reference scores not sorted");
            goto fail;
        }
    router__set_version(m, data, len);
    return m;
fail:
    router_model_unref(m);
    return NULL;
}

struct router_model *
router_model_load_buffer(const void *data, size_t len, char *err, size_t errlen)
{
    const unsigned char *p = data;

    if (len < ROUTER__HEADER_SIZE) {
        router__set_err(err, errlen, "not a triage model (too short)");
        return NULL;
    }
    if (memcmp(p, ROUTER__MAGIC, 8) != 0) {
        router__set_err(err, errlen, "not a triage model (bad magic)");
        return NULL;
    }
    uint32_t version = get_u32(p + 8), fversion = get_u32(p + 12);
    uint64_t plen = get_u32(p + 16) | (uint64_t)get_u32(p + 20) << 32;
    if (version < ROUTER__FORMAT_VERSION_MIN || version > ROUTER__FORMAT_VERSION) {
        router__set_err(err, errlen, "model format version %u, this build reads %u to %u",
                        version, ROUTER__FORMAT_VERSION_MIN, ROUTER__FORMAT_VERSION);
        return NULL;
    }
    if (fversion != FEATURES_VERSION) {
        router__set_err(err, errlen, "model made for features version %u, this build has %u", fversion,
                FEATURES_VERSION);
        return NULL;
    }
    if (plen != len - ROUTER__HEADER_SIZE) {
        router__set_err(err, errlen, "model size mismatch (truncated or padded file)");
        return NULL;
    }
    if (router_crc32(p + ROUTER__HEADER_SIZE, (size_t)plen) != get_u32(p + 24)) {
        router__set_err(err, errlen, "model checksum mismatch (corrupt file)");
        return NULL;
    }
    return payload_read(p + ROUTER__HEADER_SIZE, (size_t)plen, version, err, errlen);
}

struct router_model *
router_model_load(const char *path, char *err, size_t errlen)
{
    struct router_model *m = NULL;
    unsigned char *data = NULL;
    FILE *f;
    long size;

    f = fopen(path, "rb");
    if (!f) {
        router__set_err(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        router__set_err(err, errlen, "%s: cannot determine size", path);
        goto fail;
    }
    if ((unsigned long)size > (1ul << 30)) {
        router__set_err(err, errlen, "%s: too large for a model", path);
        goto fail;
    }
    data = xcalloc((size_t)size, 1);
    if (fread(data, 1, (size_t)size, f) != (size_t)size) {
        router__set_err(err, errlen, "%s: read error", path);
        goto fail;
    }
    m = router_model_load_buffer(data, (size_t)size, err, errlen);
fail:
    free(data);
    fclose(f);
    return m;
}
