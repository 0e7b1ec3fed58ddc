/* fuzz_model.c - fuzz target for model files: router_model_load_buffer on arbitrary bytes, then scoring with what loads.
 *
 * Most random inputs fail the checksum, so when the first byte is odd the input
 * after it becomes the payload of a file with a correct header (format 2, with an
 * escalation section, when its bit 1 is set too): that reaches the payload parser's
 * bounds checks. A model that loads scores a request and a fast answer, and a copy made by
 * router_model_combine scores them alike. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "prompt_features.h"
#include "router.h"

static void
put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    unsigned char *buf = NULL;
    const void *file = data;
    size_t len = size;

    if (size > 0 && (data[0] & 1)) {
        len = 32 + size - 1;
        buf = malloc(len);
        if (!buf)
            abort();
        memcpy(buf, "TRIAGEM", 8);
        put_u32(buf + 8, data[0] & 2 ? 2 : 1);
        put_u32(buf + 12, FEATURES_VERSION);
        put_u32(buf + 16, (uint32_t)(size - 1));
        put_u32(buf + 20, 0);
        put_u32(buf + 24, router_crc32(data + 1, size - 1));
        put_u32(buf + 28, 0);
        memcpy(buf + 32, data + 1, size - 1);
        file = buf;
    }
    err[0] = '\0';
    struct router_model *m = router_model_load_buffer(file, len, err, sizeof(err));
    if (!m && !err[0])
        abort(); /* a rejection always says why */
    if (m) {
        struct router_scores s;
        json_t *req = json_pack("{s:[{s:s,s:s}],s:i}", "messages", "role", "user", "content",
                                "Prove that 2 + 2 = 4. A. yes B. no", "max_tokens", 64);
        if (router_score_request(m, req, &s) != 0 || s.n_heads != router_model_n_heads(m))
            abort();
        for (size_t i = 0; i < router_model_n_heads(m); i++)
            if (router_model_head_find(m, router_model_head_name(m, i)) < 0)
                abort();
        static const char answer[] = "3 + 4 = 8, maybe.\n#### 8";
        float sig[FEATURES_N_ANSWER];
        double e = -1;
        features_answer_signals(answer, sizeof(answer) - 1, "Prove that 2 + 2 = 4.", 21, "stop",
                                NULL, 0, sig);
        if (router_escalation_score(m, req, answer, sizeof(answer) - 1, sig, &e) != 0 ||
            !(e >= 0 && e <= 1))
            abort();
        /* what a retrain's promotion does: one model's routing with another's escalation
         * (here its own) scores exactly as its parts */
        struct router_model *c = router_model_combine(m, m, err, sizeof(err));
        struct router_scores cs;
        double ce = -1;
        /* bit for bit: the same sums in the same order (a NaN score too) */
        if (!c || router_score_request(c, req, &cs) != 0 ||
            memcmp(&cs.score, &s.score, sizeof(double)) != 0 ||
            memcmp(cs.p, s.p, s.n_heads * sizeof(double)) != 0 ||
            router_escalation_score(c, req, answer, sizeof(answer) - 1, sig, &ce) != 0 || ce != e)
            abort();
        router_model_unref(c);
        json_decref(req);
        double t = router_model_threshold_for_share(m, 0.5);
        (void)t;
        router_model_unref(m);
        router_thread_cleanup();
    }
    free(buf);
    return 0;
}
