/* escalate.c - the cascade's escalation score: how likely a fast answer is bad, from its
 * signals and its text (a learned model in the model file), or by a default from its
 * signals and its prompt's routing score. */
#include <errno.h>
#include <math.h>

#include "router-int.h"

/* The signals-only default (docs/cascade.md, "Untrained"): hand-set weights on what says
 * an answer went wrong whatever the domain: cut at max_tokens or stopped oddly, hedging
 * and self-correcting words, repeated lines, unsure tokens when log-probabilities came;
 * a stated result and a clean ending count a little the other way; a prompt that scores
 * hard counts too. Index names: features_answer_name. */
static double
default_logit(const float *x, double prompt_score)
{
    double z = -1.5;

    z += 3.0 * x[9];   /* finish_length */
    z += 1.5 * x[10];  /* finish_other */
    z += 0.8 * x[4];   /* hedges, log1p count */
    z += 0.5 * x[5];   /* revisions, log1p count */
    z += 2.0 * x[8];   /* repeated lines, share */
    z -= 0.4 * x[3];   /* a final-result marker */
    z -= 0.4 * x[7];   /* a clean ending */
    if (x[12] > 0) {   /* log-probabilities came */
        z -= 2.0 * (x[13] + 0.2);  /* mean token log-probability, about -0.2 when sure */
        z += 3.0 * (x[15] - 0.05); /* share of tokens below even odds */
    }
    z += 2.0 * (prompt_score - 0.5); /* the prompt's routing score */
    return z;
}

double
router__escalation_logit_dense(const struct router_model *m, const float *signals)
{
    const struct router__escalation *e = &m->esc;
    double z = e->bias;

    for (size_t j = 0; j < ROUTER__ESC_N; j++)
        z += e->w[j] * (signals[j] - e->mean[j]) * e->scale[j];
    return z;
}

double
router__escalation_logit(const struct router_model *m, const float *signals, const uint32_t *ids,
                         const float *vals, size_t n, double prompt_score)
{
    if (!m->has_esc)
        return default_logit(signals, prompt_score);
    double z = router__escalation_logit_dense(m, signals);
    for (size_t i = 0; i < n; i++)
        z += m->esc.w_sparse[ids[i]] * vals[i];
    return z;
}

double
router__escalation_p(double logit)
{
    /* a model whose sums overflow (inf - inf) is unsure of this answer: escalate */
    return isnan(logit) ? 1.0 : 1.0 / (1.0 + exp(-logit));
}

int
router_escalation_score(const struct router_model *m, const json_t *request, const char *answer,
                        size_t len, const float *signals, double *out)
{
    struct features_scratch *s = router__thread_scratch(m->n_bits);
    struct features_vec fv;
    struct router_scores sc = {0};
    int rc;

    rc = features_extract(s, request, &fv);
    if (rc < 0)
        return rc;
    if (!m->has_esc) /* the default counts the prompt's routing score in */
        router_score_features(m, &fv, &sc);
    else if (len == 0 || features_extract_text(s, answer, len, &fv) < 0)
        fv.n = 0; /* the learned model reads the answer's words, not the prompt's */
    *out = router__escalation_p(router__escalation_logit(m, signals, fv.ids, fv.vals, fv.n, sc.score));
    return 0;
}

size_t
router_model_escalation_examples(const struct router_model *m)
{
    return m->has_esc ? m->esc.n_train : 0;
}

void *
router_answer_blob(const struct router_model *m, const char *answer, size_t len,
                   const float *signals, int with_words, size_t *blob_len)
{
    struct features_vec fv;
    int words = with_words && len > 0 &&
                features_extract_text(router__thread_scratch(m->n_bits), answer, len, &fv) == 0;

    return features_answer_blob_encode(signals, words ? &fv : NULL, m->n_bits, blob_len);
}
