/* fuzz_answer.c - fuzz target for the answer signals the cascade's escalation model reads:
 * features_answer_signals on any bytes, and features_answer_from_response on the input as
 * a chat completion.
 *
 * The input splits at its first NUL: before it the prompt, after it the answer (no NUL:
 * the whole input is both). Each is copied to a buffer of exactly its size, so a read past
 * the end is a sanitizer report; the prompt's bytes serve as a finish_reason too. Up to 16 floats taken from the input's first bytes (NaN,
 * infinities and positive values included) stand for token log-probabilities. Every
 * signal must be finite and within what features_answer_name's signals can be. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fuzz.h"
#include "prompt_features.h"

/* Aborts unless s holds what the signals promise: finite, flags 0 or 1, shares in [0, 1],
 * logged counts >= 0, log-probabilities in [-20, 0]. */
static void
check(const float *s)
{
    static const char *const flags[] = {
        "final_marker", "ends_number", "ends_clean", "finish_length", "finish_other",
        "no_finish", "has_logprobs", "final_fraction", "final_unresulted"};
    static const char *const shares[] = {"repeated", "lp_unsure", "prompt_numbers_unused"};

    for (size_t i = 0; i < FEATURES_N_ANSWER; i++) {
        const char *name = features_answer_name(i);
        if (!name || !isfinite(s[i]))
            abort();
        int kind = 0; /* 0: a logged count, 1: a flag, 2: a share, 3: a log-probability */
        for (size_t k = 0; k < sizeof(flags) / sizeof(*flags); k++)
            kind = strcmp(name, flags[k]) == 0 ? 1 : kind;
        for (size_t k = 0; k < sizeof(shares) / sizeof(*shares); k++)
            kind = strcmp(name, shares[k]) == 0 ? 2 : kind;
        if (strcmp(name, "lp_mean") == 0 || strcmp(name, "lp_min") == 0)
            kind = 3;
        if ((kind == 0 && s[i] < 0) || (kind == 1 && s[i] != 0 && s[i] != 1) ||
            (kind == 2 && (s[i] < 0 || s[i] > 1)) || (kind == 3 && (s[i] < -20 || s[i] > 0)))
            abort();
    }
}

/* A copy of n bytes of p in a buffer of exactly n bytes (NULL for none). */
static char *
exact(const char *p, size_t n)
{
    char *c = n ? malloc(n) : NULL;
    if (n && !c)
        abort();
    if (n)
        memcpy(c, p, n);
    return c;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    float sig[FEATURES_N_ANSWER], lp[16];
    size_t n_lp = size / sizeof(float) < 16 ? size / sizeof(float) : 16;

    memcpy(lp, data, n_lp * sizeof(float));
    const char *nul = size ? memchr(s, '\0', size) : NULL;
    size_t plen = nul ? (size_t)(nul - s) : size;
    const char *ans = nul ? nul + 1 : s;
    size_t alen = nul ? size - plen - 1 : size;
    char *prompt = exact(s, plen), *answer = exact(ans, alen);

    features_answer_signals(answer, alen, prompt, plen, NULL, NULL, 0, sig);
    check(sig);
    features_answer_signals(answer, alen, prompt, plen, "length", lp, n_lp, sig);
    check(sig);
    char *finish = malloc(plen + 1); /* the prompt's bytes as a finish_reason (a C string) */
    if (!finish)
        abort();
    memcpy(finish, s, plen);
    finish[plen] = '\0';
    features_answer_signals(answer, alen, NULL, 0, finish, lp, n_lp, sig);
    check(sig);
    free(finish);
    free(prompt);
    free(answer);

    /* the input as a chat completion, answering a request whose prompt is the input too */
    json_t *resp = json_loadb(s, size, JSON_ALLOW_NUL, NULL);
    if (resp) {
        json_t *req = json_pack("{s:[{s:s,s:s%}]}", "messages", "role", "user", "content", s,
                                size);
        if (features_answer_from_response(req, resp, sig) == 0)
            check(sig);
        json_decref(req);
        json_decref(resp);
    }
    return 0;
}
