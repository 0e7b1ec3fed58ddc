/* fuzz_features.c - fuzz target for the features path: a request body through the fast parser (checked against jansson's) and features_extract, and the raw bytes as a prompt. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "fuzz.h"
#include "prompt_features.h"

#define BITS 12

/* Aborts unless v holds what features.h promises. */
static void
check(const struct features_vec *v)
{
    if (v->n > (1u << BITS))
        abort();
    for (size_t i = 0; i < v->n; i++)
        if (v->ids[i] >= (1u << BITS) || !isfinite(v->vals[i]) || !(v->vals[i] > 0.0f) ||
            v->vals[i] > 1.0f + 1e-5f)
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
    json_error_t err;

    if (!s && !(s = features_scratch_new(BITS)))
        abort();
    /* The daemon's parser must build exactly jansson's tree, or decline. */
    json_t *fast = features_json_load((const char *)data, size);
    json_t *slow = json_loadb((const char *)data, size, 0, &err);
    if (fast && (!slow || !json_equal(fast, slow)))
        abort();
    json_decref(fast);
    json_decref(slow);

    json_t *req = json_loadb((const char *)data, size, JSON_ALLOW_NUL, &err);
    if (req) {
        if (features_extract(s, req, &v) == 0)
            check(&v);
        json_decref(req);
    }
    if (features_extract_text(s, (const char *)data, size, &v) == 0)
        check(&v);
    return 0;
}
