/* router.h - the difficulty predictor: model files, scoring, training and routing policies.
 *
 * Pure computation: no I/O beyond reading and writing model files, no HTTP, no
 * global state. A loaded model is immutable and reference-counted, so a request
 * keeps the model it started with while a reload swaps in a new one. */
#ifndef TRIAGE_ROUTER_H
#define TRIAGE_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define ROUTER_MAX_HEADS 32

struct router_model;

/* ---- model files ---------------------------------------------------------- */

/* Loads and verifies a model file (magic, version, checksum, sizes). Returns a new
 * model with one reference, or NULL with a one-line reason in err. */
struct router_model *router_model_load(const char *path, char *err, size_t errlen);

/* Takes one more reference; returns m. Thread-safe. */
struct router_model *router_model_ref(struct router_model *m);

/* Drops one reference, freeing the model with the last. NULL is fine. Thread-safe. */
void router_model_unref(struct router_model *m);

/* Returns the model's version string (content digest), owned by the model. */
const char *router_model_version(const struct router_model *m);

/* Returns the number of heads (backends the model predicts success for). */
size_t router_model_n_heads(const struct router_model *m);

/* Returns head i's name, owned by the model. */
const char *router_model_head_name(const struct router_model *m, size_t i);

/* Returns the index of the head called name, or -1. */
int router_model_head_find(const struct router_model *m, const char *name);

/* Returns the score threshold that sends about `share` (in [0,1]) of the model's
 * reference prompts to the strong side (score >= threshold). */
double router_model_threshold_for_share(const struct router_model *m, double share);

/* ---- scoring ---------------------------------------------------------------- */

struct router_scores {
    double score;                /* difficulty in [0,1]: higher needs the stronger backend more */
    size_t n_heads;
    double p[ROUTER_MAX_HEADS];  /* p[i]: predicted probability head i answers well */
};

/* Scores an OpenAI chat-completions request body (borrowed). Returns 0, or
 * -EINVAL when it has no usable messages. Thread-safe; allocates nothing per call
 * in the steady state (per-thread scratch). */
int router_score_request(const struct router_model *m, const json_t *request,
                         struct router_scores *out);

/* ---- policies --------------------------------------------------------------- */

/* One tier, cheapest first. `head` is the model head scoring it (-1: none). */
struct router_tier {
    int head;
    double bar; /* minimum predicted success to choose this tier (TIERS policy) */
};

enum router_policy_kind {
    ROUTER_POLICY_THRESHOLD, /* two tiers: score >= threshold picks tiers[1] */
    ROUTER_POLICY_TIERS,     /* first tier whose p[head] >= bar, else the last */
};

/* Picks a tier for the scores. For THRESHOLD, `threshold` is the cut; for TIERS
 * it is ignored. Returns the tier index in [0, n_tiers). */
size_t router_policy_pick(enum router_policy_kind kind, const struct router_tier *tiers,
                          size_t n_tiers, double threshold, const struct router_scores *s);

#endif
