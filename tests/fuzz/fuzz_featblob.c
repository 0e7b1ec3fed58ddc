/* fuzz_featblob.c - fuzz target for stored feature vectors and cascade answers: any bytes (a database file's) through features_blob_decode, features_answer_blob_decode and the base64 decoders; what decodes re-encodes to the same bytes. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "prompt_features.h"

#define BITS 12

/* Aborts unless v is what a decoder may hand out. */
static void
check(const struct features_vec *v)
{
    if (v->n > (1u << BITS))
        abort();
    for (size_t i = 0; i < v->n; i++)
        if (v->ids[i] >= (1u << BITS) || !isfinite(v->vals[i]))
            abort();
    for (size_t j = 0; j < FEATURES_N_DENSE; j++)
        if (!isfinite(v->dense[j]))
            abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct features_scratch *s;
    struct features_vec v;
    size_t len;
    int rc;

    if (!s && !(s = features_scratch_new(BITS)))
        abort();
    rc = features_blob_decode(s, data, size, &v);
    if (rc == 0) {
        check(&v);
        /* the format has one spelling per vector */
        void *again = features_blob_encode(&v, BITS, &len);
        if (len != size || memcmp(again, data, size) != 0)
            abort();
        free(again);
    } else if (rc != -EINVAL && rc != -EPROTO) {
        abort();
    }
    /* the same bytes as JSON exports carry them (base64 text) */
    rc = features_blob_decode_base64(s, (const char *)data, size, &v);
    if (rc == 0)
        check(&v);
    else if (rc != -EINVAL && rc != -EPROTO)
        abort();
    /* the same bytes as a stored cascade answer (requests.answer) */
    float sig[FEATURES_N_ANSWER];
    rc = features_answer_blob_decode(s, data, size, sig, &v);
    if (rc == 0) {
        for (size_t j = 0; j < FEATURES_N_ANSWER; j++)
            if (!isfinite(sig[j]))
                abort();
        if (v.n > (1u << BITS))
            abort();
        for (size_t i = 0; i < v.n; i++)
            if (v.ids[i] >= (1u << BITS) || !isfinite(v.vals[i]))
                abort();
        void *again = features_answer_blob_encode(sig, size > 3 && data[3] ? &v : NULL, BITS,
                                                  &len);
        if (len != size || memcmp(again, data, size) != 0)
            abort();
        free(again);
    } else if (rc != 1 && rc != -EINVAL && rc != -EPROTO) {
        abort();
    }
    rc = features_answer_blob_decode_base64(s, (const char *)data, size, sig, &v);
    if (rc != 0 && rc != 1 && rc != -EINVAL && rc != -EPROTO)
        abort();
    /* the scratch still extracts after any of it */
    if (features_extract_text(s, "still fine", 10, &v) != 0 || v.n == 0)
        abort();
    return 0;
}
