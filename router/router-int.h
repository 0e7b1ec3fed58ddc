/* router-int.h - the in-memory model layout shared by router/'s files; not a public API. */
#ifndef TRIAGE_ROUTER_INT_H
#define TRIAGE_ROUTER_INT_H

#include <stdatomic.h>
#include <stdint.h>

#include "prompt_features.h"
#include "router.h"

#define ROUTER__MAGIC "TRIAGEM\0"
#define ROUTER__FORMAT_VERSION 2u     /* written when the model has an escalation model */
#define ROUTER__FORMAT_VERSION_MIN 1u /* format 1: no escalation model (the default applies) */
#define ROUTER__HEADER_SIZE 32u
#define ROUTER__NAME_MAX 32u   /* bytes per head name in the file, NUL included */
#define ROUTER__MAX_REF 4096u  /* reference scores kept for calibration */
#define ROUTER__DENSE_CLIP 5.0f
#define ROUTER__MAX_SETS 256u
#define ROUTER__MAX_MODEL_BYTES (1ull << 30) /* dense weights in memory, at most */  /* distinct "set" values a training set tracks */

/* The escalation model's dense inputs: the answer's signals (features_answer_signals). */
#define ROUTER__ESC_N FEATURES_N_ANSWER
#define ROUTER__ESC_MIN_EXAMPLES 30 /* judged fast answers needed to learn one */

/* A learned escalation model: logistic regression predicting that the fast head's answer
 * is bad (1 - q), on the standardised answer signals and the hashed features of the
 * answer's text (features_extract_text's, in their own table). The prompt's words are
 * left out: with hundreds of labels they added noise, not signal (bench/cascade). */
struct router__escalation {
    uint32_t n_train;            /* judged fast answers it learned from */
    float mean[ROUTER__ESC_N];
    float scale[ROUTER__ESC_N];  /* 1 / standard deviation, 0 for a constant input */
    float w[ROUTER__ESC_N];
    float bias;
    float *w_sparse;             /* [2^n_bits], NULL without a learned model */
};

/* A loaded or freshly trained model. Immutable once shared. n_out = n_heads + 1:
 * outputs 0..n_heads-1 are the heads, output n_heads is the routing score. */
struct router_model {
    atomic_int refs;
    char version[17];             /* 16 hex digits of the payload's FNV-1a digest */
    uint32_t n_bits, dim, n_heads, n_out, n_ref;
    int32_t score_strong, score_weak; /* heads the score contrasts, -1 if none */
    uint32_t score_mix; /* weight in [0,1000] of the head difference (1 + p_strong - p_weak)/2
                         * in the score, the rest from the score output */
    char names[ROUTER_MAX_HEADS][ROUTER__NAME_MAX];
    float dense_mean[FEATURES_N_DENSE];
    float dense_scale[FEATURES_N_DENSE]; /* 1 / standard deviation */
    float *bias;      /* [n_out] */
    float *w_dense;   /* [FEATURES_N_DENSE][n_out] */
    float *w_sparse;  /* [2^n_bits][n_out] */
    float *h_bias;    /* [dim] hidden layer (dim may be 0) */
    float *h_dense;   /* [FEATURES_N_DENSE][dim] */
    float *h_sparse;  /* [2^n_bits][dim]: the embedding bag */
    float *h_out;     /* [dim][n_out] */
    float *ref;       /* [n_ref] reference scores, ascending */
    int has_esc;      /* esc is learned; else the signals-only default scores answers */
    struct router__escalation esc;
};

/* Allocates a zeroed model with the given shape (one reference). */
struct router_model *router__model_alloc(uint32_t n_bits, uint32_t dim, uint32_t n_heads);

/* Standardises raw dense features into z (clipped). */
void router__dense_norm(const struct router_model *m, const float *raw, float *z);

/* Computes the raw outputs (logits, n_out of them) for one feature vector;
 * hidden (dim floats, may be NULL when dim is 0) receives tanh activations. */
void router__forward(const struct router_model *m, const struct features_vec *fv,
                     const float *dz, float *hidden, float *logits);

/* Fills a router_scores from logits. */
void router__scores_from_logits(const struct router_model *m, const float *logits,
                                struct router_scores *out);

/* Computes the version digest of the serialised payload. */
void router__set_version(struct router_model *m, const unsigned char *payload, size_t len);

/* Formats an error message into err (errlen bytes; NULL or 0: nothing). */
void router__set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Returns the calling thread's feature scratch for n_bits (model.c). */
struct features_scratch *router__thread_scratch(unsigned n_bits);

/* Returns the dense part of the learned escalation model's logit (m->has_esc). */
double router__escalation_logit_dense(const struct router_model *m, const float *signals);

/* Returns the escalation logit of an answer with FEATURES_N_ANSWER signals and its text's
 * hashed words (ids, vals: n of them, in m's hash space), whose prompt scored
 * prompt_score: the learned model's (words and signals), or the default's (signals and
 * prompt_score). */
double router__escalation_logit(const struct router_model *m, const float *signals,
                                const uint32_t *ids, const float *vals, size_t n,
                                double prompt_score);

/* Returns the escalation probability of a logit: 1 for NaN (a model whose sums
 * overflowed is unsure: escalate). */
double router__escalation_p(double logit);

/* Fills m->esc from the dataset's judged answers of m's weak head among idx (NULL: all),
 * with m trained; leaves has_esc 0 when there are too few (train.c). */
struct router_dataset;
void router__escalation_fit(struct router_model *m, const struct router_dataset *d,
                            const size_t *idx, size_t n_idx);

/* Sets the version of a freshly built model from its serialised payload. */
void router__model_finish(struct router_model *m);

#endif
