/* fuzz_escalation.c - fuzz target for the cascade's verdict on a fast answer as the daemon
 * reaches it: the client's request and the backend's answer, both JSON, through
 * features_answer_from_response and router_escalation_score (the shipped model). The
 * 'answer' target fuzzes the signals alone.
 *
 * The input splits at its first NUL: before it the client's request (a JSON value; when
 * it does not parse, the bytes as one user turn), after it the backend's answer (a chat
 * completion as JSON; no NUL: the whole input is the answer too). The answer's bytes
 * also go to features_answer_signals as text, with the request's bytes as the prompt.
 * Every signal and score must be finite, the score in [0, 1]. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config.h"
#include "fuzz.h"
#include "prompt_features.h"
#include "router.h"

static void
check_signals(const float *sig)
{
    for (size_t i = 0; i < FEATURES_N_ANSWER; i++)
        if (!isfinite(sig[i])) {
            fprintf(stderr, "fuzz_escalation: signal %s is %f\n", features_answer_name(i), sig[i]);
            abort();
        }
}

static const struct router_model *
model(void)
{
    static struct router_model *m;
    char path[4096], err[256];

    if (!m) {
        const char *src = getenv("TRIAGE_SOURCE_ROOT");
        snprintf(path, sizeof(path), "%s/models/default.tmod",
                 src && *src ? src : TRIAGE_SOURCE_ROOT);
        if (!(m = router_model_load(path, err, sizeof(err)))) {
            fprintf(stderr, "fuzz_escalation: %s\n", err);
            abort();
        }
    }
    return m;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data;
    const char *nul = memchr(d, '\0', size);
    size_t rlen = nul ? (size_t)(nul - d) : size;
    const char *ans = nul ? nul + 1 : d;
    size_t alen = nul ? size - rlen - 1 : size;
    float sig[FEATURES_N_ANSWER];
    double e;

    json_t *req = json_loadb(d, rlen, JSON_DECODE_ANY, NULL);
    if (!json_is_object(req)) {
        json_decref(req);
        json_t *text = json_stringn(d, rlen); /* NULL unless valid UTF-8 */
        req = json_pack("{s:[{s:s,s:o*}]}", "messages", "role", "user", "content", text);
    }
    json_t *resp = json_loadb(ans, alen, JSON_DECODE_ANY, NULL);

    /* as the cascade does: the answer's signals, then its score */
    if (features_answer_from_response(req, resp, sig) == 0) {
        check_signals(sig);
        const json_t *content = json_object_get(
            json_object_get(json_array_get(json_object_get(resp, "choices"), 0), "message"),
            "content");
        const char *text = json_is_string(content) ? json_string_value(content) : "";
        size_t tlen = json_is_string(content) ? json_string_length(content) : 0;
        if (router_escalation_score(model(), req, text, tlen, sig, &e) == 0 &&
            !(e >= 0.0 && e <= 1.0)) {
            fprintf(stderr, "fuzz_escalation: escalation score %f\n", e);
            abort();
        }
    }

    /* the raw bytes as an answer's text, the request's as its prompt, any finish */
    float lps[64];
    size_t n_lp = 0;
    for (size_t i = 0; i + 4 <= alen && n_lp < 64; i += 4)
        memcpy(&lps[n_lp++], ans + i, 4); /* any floats: NaN, inf, positive */
    features_answer_signals(ans, alen, d, rlen, nul ? d : NULL, lps, n_lp, sig);
    check_signals(sig);
    if (router_escalation_score(model(), req, ans, alen, sig, &e) == 0 && !(e >= 0.0 && e <= 1.0)) {
        fprintf(stderr, "fuzz_escalation: escalation score %f on raw text\n", e);
        abort();
    }
    json_decref(req);
    json_decref(resp);
    return 0;
}
