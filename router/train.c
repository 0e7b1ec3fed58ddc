/* train.c - training sets of extracted features and the deterministic trainer (AdaGrad SGD). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router-int.h"

struct example {
    size_t off;                    /* first feature in the dataset's arrays */
    uint32_t n;                    /* number of sparse features */
    float dense[FEATURES_N_DENSE]; /* raw dense signals */
    float q[ROUTER_MAX_HEADS];     /* outcome per head, NAN when missing */
    int set;                       /* index of its "set", -1 without one */
};

/* A judged answer's signals: example ex's answer by head. */
struct answer_row {
    size_t ex;
    uint32_t head;
    float sig[FEATURES_N_ANSWER];
    size_t off;  /* first of its text's features in aids/avals */
    uint32_t n;  /* its text's sparse features (0 without text) */
};

struct router_dataset {
    unsigned n_bits;
    struct features_scratch *scratch;
    uint32_t *ids;
    float *vals;
    size_t nf, capf;
    struct example *ex;
    size_t n, cap;
    uint32_t n_heads;
    char names[ROUTER_MAX_HEADS][ROUTER__NAME_MAX];
    uint32_t n_sets;
    char sets[ROUTER__MAX_SETS][ROUTER__NAME_MAX];
    size_t refused; /* "features" of another FEATURES_VERSION or n_bits */
    struct answer_row *ans;
    size_t n_ans, cap_ans;
    uint32_t *aids;  /* answers' sparse features, as ids and vals for prompts */
    float *avals;
    size_t naf, capaf;
};

/* Returns the index of the example's "set" (added when new), or -1. */
static int
set_index(struct router_dataset *d, const json_t *example)
{
    const json_t *v = json_object_get(example, "set");

    if (!json_is_string(v))
        return -1;
    const char *name = json_string_value(v);
    for (uint32_t i = 0; i < d->n_sets; i++)
        if (strncmp(d->sets[i], name, ROUTER__NAME_MAX - 1) == 0)
            return (int)i;
    if (d->n_sets == ROUTER__MAX_SETS)
        return -1;
    snprintf(d->sets[d->n_sets], ROUTER__NAME_MAX, "%s", name);
    return (int)d->n_sets++;
}

static void *
xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (!q)
        abort(); /* out of memory aborts, project-wide */
    return q;
}

struct router_dataset *
router_dataset_new(unsigned n_bits)
{
    struct router_dataset *d;
    struct features_scratch *s = features_scratch_new(n_bits);

    if (!s)
        return NULL;
    d = xrealloc(NULL, sizeof(*d));
    memset(d, 0, sizeof(*d));
    d->n_bits = n_bits;
    d->scratch = s;
    return d;
}

void
router_dataset_destroy(struct router_dataset *d)
{
    if (!d)
        return;
    features_scratch_destroy(d->scratch);
    free(d->ids);
    free(d->vals);
    free(d->ex);
    free(d->ans);
    free(d->aids);
    free(d->avals);
    free(d);
}

size_t
router_dataset_size(const struct router_dataset *d)
{
    return d->n;
}

size_t
router_dataset_n_heads(const struct router_dataset *d)
{
    return d->n_heads;
}

const char *
router_dataset_head_name(const struct router_dataset *d, size_t i)
{
    return i < d->n_heads ? d->names[i] : NULL;
}

int
router_dataset_head_find(const struct router_dataset *d, const char *name)
{
    for (uint32_t i = 0; i < d->n_heads; i++)
        if (strcmp(d->names[i], name) == 0)
            return (int)i;
    return -1;
}

size_t
router_dataset_refused(const struct router_dataset *d)
{
    return d->refused;
}

double
router_dataset_outcome(const struct router_dataset *d, size_t i, int head)
{
    if (i >= d->n || head < 0 || (uint32_t)head >= d->n_heads)
        return NAN;
    return d->ex[i].q[head];
}

#define MAX_ANSWER_LOGPROBS 4096

/* Reads one answer of an example into sig and *text and *len (NULL, 0 without text): a
 * string (the text), an object {"text", "finish_reason", "logprobs": [numbers]}, or (from
 * "answer_signals") an array of FEATURES_N_ANSWER numbers or the base64 of a stored answer
 * (features_answer_blob_encode: the outcome log's), whose hashed words then go to *words
 * (pointing into d's scratch, n 0 without) instead of a text. Returns 0, 1 for an array of
 * an older answer signals version (FEATURES_N_ANSWER_V) or a stored answer of other
 * signals (nothing read, the answer teaches nothing, its example stays), or -EINVAL. */
static int
answer_read(struct router_dataset *d, const json_t *example, const json_t *v, int signals,
            float sig[FEATURES_N_ANSWER], const char **text, size_t *len,
            struct features_vec *words)
{
    size_t plen;
    const char *prompt = features_request_last_user(example, &plen);

    *text = NULL;
    *len = 0;
    words->n = 0;
    if (signals && json_is_string(v)) {
        /* words hashed for another model are dropped (1): the signals still teach */
        int rc = features_answer_blob_decode_base64(d->scratch, json_string_value(v),
                                                    json_string_length(v), sig, words);
        return rc == -EPROTO ? 1 : rc < 0 ? rc : 0;
    }
    if (signals) {
        if (!json_is_array(v))
            return -EINVAL;
        if (json_array_size(v) != FEATURES_N_ANSWER) {
            for (unsigned ver = 1; ver < FEATURES_ANSWER_VERSION; ver++)
                if (json_array_size(v) == FEATURES_N_ANSWER_V(ver))
                    return 1;
            return -EINVAL;
        }
        for (size_t k = 0; k < FEATURES_N_ANSWER; k++) {
            const json_t *x = json_array_get(v, k);
            if (!json_is_number(x) || !isfinite(json_number_value(x)))
                return -EINVAL;
            sig[k] = (float)json_number_value(x);
        }
        return 0;
    }
    if (json_is_string(v)) {
        *text = json_string_value(v);
        *len = json_string_length(v);
        features_answer_signals(*text, *len, prompt, plen, NULL, NULL, 0, sig);
        return 0;
    }
    const json_t *t = json_object_get(v, "text"), *fin = json_object_get(v, "finish_reason");
    const json_t *lps = json_object_get(v, "logprobs"), *x;
    static _Thread_local float lp[MAX_ANSWER_LOGPROBS];
    size_t n_lp = 0, k;

    if (!json_is_object(v) || !json_is_string(t) || (fin && !json_is_string(fin) && !json_is_null(fin)) ||
        (lps && !json_is_array(lps)))
        return -EINVAL;
    json_array_foreach(lps, k, x) {
        if (!json_is_number(x))
            return -EINVAL;
        if (n_lp < MAX_ANSWER_LOGPROBS)
            lp[n_lp++] = (float)json_number_value(x);
    }
    *text = json_string_value(t);
    *len = json_string_length(t);
    features_answer_signals(*text, *len, prompt, plen,
                            json_is_string(fin) ? json_string_value(fin) : NULL, lp, n_lp, sig);
    return 0;
}

/* Adds example ex's answers ("answers", "answer_signals") by heads it has an outcome for.
 * Checked first (check = 1: nothing added) so a bad line changes nothing; a stored answer
 * of other signals is skipped, not an error. */
static int
answers_add(struct router_dataset *d, const json_t *example, size_t ex, int check)
{
    static const char *const keys[2] = {"answers", "answer_signals"};

    for (int kind = 0; kind < 2; kind++) {
        const json_t *obj = json_object_get(example, keys[kind]), *v;
        const char *name;
        if (!obj)
            continue;
        if (!json_is_object(obj))
            return -EINVAL;
        json_object_foreach((json_t *)obj, name, v) {
            float sig[FEATURES_N_ANSWER];
            const char *text;
            size_t len;
            struct features_vec fv;
            int rc = answer_read(d, example, v, kind, sig, &text, &len, &fv);
            if (rc < 0)
                return -EINVAL;
            if (check || rc > 0)
                continue;
            int h = router_dataset_head_find(d, name);
            if (h < 0 || isnan(d->ex[ex].q[h]))
                continue; /* an answer nobody graded teaches nothing */
            if (d->n_ans == d->cap_ans) {
                d->cap_ans = d->cap_ans ? d->cap_ans * 2 : 256;
                d->ans = xrealloc(d->ans, d->cap_ans * sizeof(*d->ans));
            }
            struct answer_row *r = &d->ans[d->n_ans++];
            r->ex = ex;
            r->head = (uint32_t)h;
            memcpy(r->sig, sig, sizeof(sig));
            r->off = d->naf;
            r->n = 0;
            if (len > 0 && features_extract_text(d->scratch, text, len, &fv) < 0)
                fv.n = 0;
            if (fv.n > 0) {
                if (d->naf + fv.n > d->capaf) {
                    while (d->naf + fv.n > d->capaf)
                        d->capaf = d->capaf ? d->capaf * 2 : 65536;
                    d->aids = xrealloc(d->aids, d->capaf * sizeof(uint32_t));
                    d->avals = xrealloc(d->avals, d->capaf * sizeof(float));
                }
                for (size_t k = 0; k < fv.n; k++)
                    d->aids[d->naf + k] = fv.ids[k];
                memcpy(d->avals + d->naf, fv.vals, fv.n * sizeof(float));
                d->naf += fv.n;
                r->n = (uint32_t)fv.n;
            }
        }
    }
    return 0;
}

int
router_dataset_add(struct router_dataset *d, const json_t *example)
{
    struct features_vec fv;
    const json_t *outcomes = json_object_get(example, "outcomes"), *v;
    const char *name;
    float q[ROUTER_MAX_HEADS];
    int idx[ROUTER_MAX_HEADS];
    size_t nq = 0;
    int rc;

    if (outcomes && !json_is_object(outcomes))
        return -EINVAL;
    /* check every outcome before adding a head, so a bad line changes nothing */
    json_object_foreach((json_t *)outcomes, name, v) {
        if (!json_is_number(v))
            return -EINVAL;
        double x = json_number_value(v);
        if (!(x >= 0.0 && x <= 1.0))
            return -EINVAL;
        size_t len = strlen(name);
        if (len == 0 || len >= ROUTER__NAME_MAX)
            return -EINVAL;
        int h = router_dataset_head_find(d, name);
        if (h < 0) {
            uint32_t extra = 0;
            for (size_t k = 0; k < nq; k++)
                extra += idx[k] < 0;
            if (d->n_heads + extra >= ROUTER_MAX_HEADS)
                return -E2BIG;
        }
        if (nq == ROUTER_MAX_HEADS)
            return -E2BIG;
        idx[nq] = h;
        q[nq++] = (float)x;
    }
    if (answers_add(d, example, 0, 1) < 0)
        return -EINVAL;
    /* a stored feature vector (store_prompts = features) stands in for the text */
    const json_t *blob = json_object_get(example, "features");
    if (blob) {
        if (!json_is_string(blob))
            return -EINVAL;
        rc = features_blob_decode_base64(d->scratch, json_string_value(blob),
                                         json_string_length(blob), &fv);
        if (rc == -EPROTO)
            d->refused++;
    } else {
        rc = features_extract(d->scratch, example, &fv);
    }
    if (rc < 0)
        return rc;
    nq = 0;
    json_object_foreach((json_t *)outcomes, name, v) {
        if (idx[nq] < 0) {
            idx[nq] = router_dataset_head_find(d, name);
            if (idx[nq] < 0) {
                idx[nq] = (int)d->n_heads;
                snprintf(d->names[d->n_heads++], ROUTER__NAME_MAX, "%s", name);
            }
        }
        nq++;
    }
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 256;
        d->ex = xrealloc(d->ex, d->cap * sizeof(*d->ex));
    }
    if (d->nf + fv.n > d->capf) {
        while (d->nf + fv.n > d->capf)
            d->capf = d->capf ? d->capf * 2 : 65536;
        d->ids = xrealloc(d->ids, d->capf * sizeof(uint32_t));
        d->vals = xrealloc(d->vals, d->capf * sizeof(float));
    }
    struct example *e = &d->ex[d->n++];
    e->set = set_index(d, example);
    e->off = d->nf;
    e->n = (uint32_t)fv.n;
    memcpy(d->ids + d->nf, fv.ids, fv.n * sizeof(uint32_t));
    memcpy(d->vals + d->nf, fv.vals, fv.n * sizeof(float));
    d->nf += fv.n;
    memcpy(e->dense, fv.dense, sizeof(e->dense));
    for (size_t h = 0; h < ROUTER_MAX_HEADS; h++)
        e->q[h] = NAN;
    for (size_t k = 0; k < nq; k++)
        e->q[idx[k]] = q[k];
    (void)answers_add(d, example, d->n - 1, 0);
    return 0;
}

size_t
router_dataset_answers(const struct router_dataset *d)
{
    return d->n_ans;
}

double
router_dataset_dense(const struct router_dataset *d, size_t i, size_t j)
{
    if (i >= d->n || j >= FEATURES_N_DENSE)
        return NAN;
    return d->ex[i].dense[j];
}

static void
example_vec(const struct router_dataset *d, size_t i, struct features_vec *fv)
{
    const struct example *e = &d->ex[i];

    fv->n = e->n;
    fv->ids = d->ids + e->off;
    fv->vals = d->vals + e->off;
    memcpy(fv->dense, e->dense, sizeof(fv->dense));
}

int
router_dataset_score(const struct router_model *m, const struct router_dataset *d, size_t i,
                     struct router_scores *out)
{
    struct features_vec fv;

    if (i >= d->n || m->n_bits != d->n_bits)
        return -EINVAL;
    example_vec(d, i, &fv);
    return router_score_features(m, &fv, out);
}

int
router_eval_escalation(const struct router_model *m, const struct router_dataset *d,
                       const size_t *idx, size_t n_idx, const char *weak, double at,
                       struct router_escalation_eval *out)
{
    int h = router_dataset_head_find(d, weak);

    memset(out, 0, sizeof(*out));
    out->auc = out->escalated = out->caught = out->bad = NAN;
    if (m->n_bits != d->n_bits)
        return -EINVAL;
    if (h < 0)
        return 0;
    unsigned char *member = xrealloc(NULL, d->n);
    memset(member, idx ? 0 : 1, d->n);
    for (size_t i = 0; idx && i < n_idx; i++)
        if (idx[i] < d->n)
            member[idx[i]] = 1;
    double *p = xrealloc(NULL, (d->n_ans + 1) * sizeof(double)),
           *y = xrealloc(NULL, (d->n_ans + 1) * sizeof(double));
    double bad = 0, up = 0, bad_up = 0;
    size_t n = 0;
    for (size_t r = 0; r < d->n_ans; r++) {
        const struct answer_row *a = &d->ans[r];
        struct router_scores sc = {0};
        if (a->head != (uint32_t)h || !member[a->ex])
            continue;
        if (!m->has_esc) { /* the default counts the prompt's routing score in */
            struct features_vec fv;
            example_vec(d, a->ex, &fv);
            router_score_features(m, &fv, &sc);
        }
        p[n] = router__escalation_p(router__escalation_logit(m, a->sig, d->aids + a->off,
                                                             d->avals + a->off, a->n, sc.score));
        y[n] = d->ex[a->ex].q[h] < 0.5; /* judged bad */
        bad += y[n];
        if (router_cascade_escalate(p[n], at)) {
            up++;
            bad_up += y[n];
        }
        n++;
    }
    out->n = n;
    if (n) {
        out->bad = bad / (double)n;
        out->escalated = up / (double)n;
        out->caught = bad > 0 ? bad_up / bad : NAN;
        out->auc = router_eval_auc(p, y, n);
    }
    free(p);
    free(y);
    free(member);
    return 0;
}

/* ---- training ------------------------------------------------------------------ */

void
router_train_opts_default(struct router_train_opts *o)
{
    memset(o, 0, sizeof(*o));
    /* quick learners for small sets; router_train_opts_tuned has the settings
     * tuned by cross-validation on tens of thousands of prompts */
    o->seed = 1;
    o->dim = 16;
    o->epochs = 6;
    o->lr = 0.1;
    o->lr_hidden = 0.05;
    o->l2 = 1e-6;
    o->score = ROUTER_SCORE_ADVANTAGE;
    o->strong = "strong";
    o->weak = "weak";
}

void
router_train_opts_tuned(struct router_train_opts *o)
{
    /* 5-fold CV on RouteLLM MMLU and GSM8K (bench/quality.sh): a linear model with
     * small steps, scored by the head difference, beat the embedding bag there */
    router_train_opts_default(o);
    o->dim = 0;
    o->lr = 0.01;
    o->lr_hidden = 0.003;
    o->score_mix = 0.75;
}

static uint64_t
rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double
rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* AdaGrad step on one parameter. */
static inline void
step(float *w, float *acc, float g, float lr)
{
    *acc += g * g;
    *w -= lr * g / sqrtf(*acc + 1e-8f);
}

/* Target of the score output for example e, or NAN when it has none. */
static float
score_target(const struct router_model *m, const struct router_train_opts *o,
             const struct example *e)
{
    int s = m->score_strong, w = m->score_weak;

    switch (o->score) {
    case ROUTER_SCORE_ADVANTAGE:
        if (s >= 0 && w >= 0) {
            if (isnan(e->q[s]) || isnan(e->q[w]))
                return NAN;
            return 0.5f * (1.0f + e->q[s] - e->q[w]);
        }
        break;
    case ROUTER_SCORE_WEAK_FAILS:
        if (w >= 0)
            return isnan(e->q[w]) ? NAN : 1.0f - e->q[w];
        break;
    }
    /* no pair: difficulty = 1 - mean success over the heads we know */
    double sum = 0;
    int n = 0;
    for (uint32_t h = 0; h < m->n_heads; h++)
        if (!isnan(e->q[h])) {
            sum += e->q[h];
            n++;
        }
    return n ? (float)(1.0 - sum / n) : NAN;
}

static int
cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* One training run with the given seed: returns the model before rounding and
 * reference scores (router_train finishes it). */
static struct router_model *
fit(const struct router_dataset *d, const size_t *idx, size_t n_idx,
    const struct router_train_opts *o, uint64_t seed, char *err, size_t errlen)
{
    struct router_model *m;
    size_t n = idx ? n_idx : d->n;
    uint64_t rng = seed * 0x2545f4914f6cdd1dULL + 1;

    if (n == 0 || d->n_heads == 0) {
        router__set_err(err, errlen, "no training examples with outcomes");
        return NULL;
    }
    if (o->dim > 256) {
        router__set_err(err, errlen, "hidden size above 256");
        return NULL;
    }
    m = router__model_alloc(d->n_bits, o->dim, d->n_heads);
    memcpy(m->names, d->names, sizeof(m->names));
    m->score_strong = o->strong ? router_dataset_head_find(d, o->strong) : -1;
    m->score_weak = o->weak ? router_dataset_head_find(d, o->weak) : -1;
    if (m->score_strong >= 0 && m->score_weak >= 0 && o->score_mix > 0)
        m->score_mix = (uint32_t)(o->score_mix * 1000 + 0.5);

    size_t *order = xrealloc(NULL, n * sizeof(size_t));
    for (size_t i = 0; i < n; i++)
        order[i] = idx ? idx[i] : i;

    /* dense standardisation from the training examples */
    for (size_t j = 0; j < FEATURES_N_DENSE; j++) {
        double s = 0, s2 = 0;
        for (size_t i = 0; i < n; i++) {
            double v = d->ex[order[i]].dense[j];
            s += v;
            s2 += v * v;
        }
        double mean = s / n, var = s2 / n - mean * mean;
        m->dense_mean[j] = (float)mean;
        m->dense_scale[j] = var > 1e-12 ? (float)(1.0 / sqrt(var)) : 0.0f;
    }

    /* output biases start at the log-odds of the mean targets */
    uint32_t no = m->n_out, dim = m->dim;
    for (uint32_t out = 0; out < no; out++) {
        double s = 0;
        size_t c = 0;
        for (size_t i = 0; i < n; i++) {
            const struct example *e = &d->ex[order[i]];
            float t = out < m->n_heads ? e->q[out] : score_target(m, o, e);
            if (!isnan(t)) {
                s += t;
                c++;
            }
        }
        double p = c ? s / c : 0.5;
        p = p < 0.01 ? 0.01 : p > 0.99 ? 0.99 : p;
        m->bias[out] = (float)log(p / (1 - p));
    }
    for (size_t k = 0; k < (size_t)dim * no; k++)
        m->h_out[k] = (float)((rng_unit(&rng) - 0.5) * 0.2);

    size_t nb = (size_t)1 << d->n_bits;
    float *a_bias = xrealloc(NULL, no * sizeof(float));
    float *a_wd = xrealloc(NULL, (size_t)FEATURES_N_DENSE * no * sizeof(float));
    float *a_ws = xrealloc(NULL, nb * no * sizeof(float));
    float *a_hb = xrealloc(NULL, (dim + 1) * sizeof(float));
    float *a_hd = xrealloc(NULL, ((size_t)FEATURES_N_DENSE * dim + 1) * sizeof(float));
    float *a_hs = xrealloc(NULL, (nb * dim + 1) * sizeof(float));
    float *a_ho = xrealloc(NULL, ((size_t)dim * no + 1) * sizeof(float));
    memset(a_bias, 0, no * sizeof(float));
    memset(a_wd, 0, (size_t)FEATURES_N_DENSE * no * sizeof(float));
    memset(a_ws, 0, nb * no * sizeof(float));
    memset(a_hb, 0, (dim + 1) * sizeof(float));
    memset(a_hd, 0, ((size_t)FEATURES_N_DENSE * dim + 1) * sizeof(float));
    memset(a_hs, 0, (nb * dim + 1) * sizeof(float));
    memset(a_ho, 0, ((size_t)dim * no + 1) * sizeof(float));

    /* Per-set output offsets, used only while training: they soak up how hard
     * each data set is on the whole, so the shared weights learn what makes a
     * prompt harder than its neighbours. Not saved: unseen prompts get none. */
    size_t n_sets = o->set_bias ? d->n_sets : 0;
    float *set_b = xrealloc(NULL, (n_sets * no + 1) * sizeof(float));
    float *a_set = xrealloc(NULL, (n_sets * no + 1) * sizeof(float));
    memset(set_b, 0, (n_sets * no + 1) * sizeof(float));
    memset(a_set, 0, (n_sets * no + 1) * sizeof(float));

    float lr = (float)o->lr, lrh = (float)o->lr_hidden, l2 = (float)o->l2;
    float hw = (float)(o->head_weight > 0 ? o->head_weight : 1.0);
    unsigned long total = (unsigned long)o->epochs * n, done = 0;
    for (unsigned ep = 0; ep < o->epochs; ep++) {
        /* Fisher-Yates with the seeded generator: same seed, same model */
        for (size_t i = n; i > 1; i--) {
            size_t j = (size_t)(rng_next(&rng) % i);
            size_t t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
        for (size_t ii = 0; ii < n; ii++) {
            const struct example *e = &d->ex[order[ii]];
            struct features_vec fv;
            float dz[FEATURES_N_DENSE], hidden[256], logits[ROUTER_MAX_HEADS + 1];
            float g[ROUTER_MAX_HEADS + 1], da[256];
            int any = 0;

            example_vec(d, order[ii], &fv);
            router__dense_norm(m, fv.dense, dz);
            router__forward(m, &fv, dz, hidden, logits);
            float *sb = n_sets && e->set >= 0 ? set_b + (size_t)e->set * no : NULL;
            if (sb)
                for (uint32_t out = 0; out < no; out++)
                    logits[out] += sb[out];
            for (uint32_t out = 0; out < no; out++) {
                float t = out < m->n_heads ? e->q[out] : score_target(m, o, e);
                if (isnan(t)) {
                    g[out] = 0;
                    continue;
                }
                float p = 1.0f / (1.0f + expf(-logits[out]));
                g[out] = (p - t) * (out < m->n_heads ? hw : 1.0f);
                any = 1;
            }
            if (any) {
                for (uint32_t k = 0; k < dim; k++) {
                    float dh = 0;
                    for (uint32_t out = 0; out < no; out++)
                        dh += g[out] * m->h_out[k * no + out];
                    da[k] = dh * (1.0f - hidden[k] * hidden[k]);
                    for (uint32_t out = 0; out < no; out++)
                        if (g[out] != 0.0f)
                            step(&m->h_out[k * no + out], &a_ho[k * no + out],
                                 g[out] * hidden[k] + l2 * m->h_out[k * no + out], lrh);
                    step(&m->h_bias[k], &a_hb[k], da[k], lrh);
                }
                for (uint32_t out = 0; out < no; out++)
                    if (g[out] != 0.0f)
                        step(&m->bias[out], &a_bias[out], g[out], lr);
                if (sb)
                    for (uint32_t out = 0; out < no; out++)
                        if (g[out] != 0.0f)
                            step(&sb[out], &a_set[(size_t)e->set * no + out], g[out], lr);
                for (size_t j = 0; j < FEATURES_N_DENSE; j++) {
                    if (dz[j] == 0.0f)
                        continue;
                    for (uint32_t out = 0; out < no; out++)
                        if (g[out] != 0.0f) {
                            float *w = &m->w_dense[j * no + out];
                            step(w, &a_wd[j * no + out], g[out] * dz[j] + l2 * *w, lr);
                        }
                    for (uint32_t k = 0; k < dim; k++) {
                        float *w = &m->h_dense[j * dim + k];
                        step(w, &a_hd[j * dim + k], da[k] * dz[j] + l2 * *w, lrh);
                    }
                }
                for (size_t i = 0; i < fv.n; i++) {
                    size_t r = fv.ids[i];
                    float v = fv.vals[i];
                    for (uint32_t out = 0; out < no; out++)
                        if (g[out] != 0.0f) {
                            float *w = &m->w_sparse[r * no + out];
                            step(w, &a_ws[r * no + out], g[out] * v + l2 * *w, lr);
                        }
                    for (uint32_t k = 0; k < dim; k++) {
                        float *w = &m->h_sparse[r * dim + k];
                        step(w, &a_hs[r * dim + k], da[k] * v + l2 * *w, lrh);
                    }
                }
            }
            done++;
            if (o->progress && (done & 1023) == 0)
                o->progress(o->progress_arg, done, total);
        }
    }
    if (o->progress)
        o->progress(o->progress_arg, total, total);
    free(set_b);
    free(a_set);
    free(a_bias);
    free(a_wd);
    free(a_ws);
    free(a_hb);
    free(a_hd);
    free(a_hs);
    free(a_ho);
    free(order);
    return m;
}

/* Adds w times b's weights to a's (same shape). */
static void
add_weights(struct router_model *a, const struct router_model *b, float w)
{
    size_t nb = (size_t)1 << a->n_bits, no = a->n_out, dim = a->dim;

    for (size_t k = 0; k < no; k++)
        a->bias[k] += w * b->bias[k];
    for (size_t k = 0; k < FEATURES_N_DENSE * no; k++)
        a->w_dense[k] += w * b->w_dense[k];
    for (size_t k = 0; k < nb * no; k++)
        a->w_sparse[k] += w * b->w_sparse[k];
    for (size_t k = 0; k < dim; k++)
        a->h_bias[k] += w * b->h_bias[k];
    for (size_t k = 0; k < FEATURES_N_DENSE * dim; k++)
        a->h_dense[k] += w * b->h_dense[k];
    for (size_t k = 0; k < nb * dim; k++)
        a->h_sparse[k] += w * b->h_sparse[k];
    for (size_t k = 0; k < dim * no; k++)
        a->h_out[k] += w * b->h_out[k];
}

/* Multiplies a's linear weights by w (bagging is for linear models only). */
static void
scale_weights(struct router_model *a, float w)
{
    size_t nb = (size_t)1 << a->n_bits, no = a->n_out;

    for (size_t k = 0; k < no; k++)
        a->bias[k] *= w;
    for (size_t k = 0; k < FEATURES_N_DENSE * no; k++)
        a->w_dense[k] *= w;
    for (size_t k = 0; k < nb * no; k++)
        a->w_sparse[k] *= w;
}

struct router_model *
router_train(const struct router_dataset *d, const size_t *idx, size_t n_idx,
             const struct router_train_opts *o, char *err, size_t errlen)
{
    unsigned bags = o->bags > 1 ? o->bags : 1;
    size_t n = idx ? n_idx : d->n;

    if (bags > 1 && o->dim > 0) {
        /* hidden units of separate runs do not line up: only linear models average */
        router__set_err(err, errlen, "bags > 1 needs a linear model (dim 0)");
        return NULL;
    }
    struct router_model *m = fit(d, idx, n_idx, o, o->seed, err, errlen);
    if (!m)
        return NULL;
    /* bagging over shuffles: the mean of linear models trained on different
     * example orders, which evens out SGD's order noise */
    for (unsigned b = 1; b < bags; b++) {
        struct router_model *x = fit(d, idx, n_idx, o, o->seed + 1000003ull * b, err, errlen);
        add_weights(m, x, 1.0f);
        router_model_unref(x);
    }
    if (bags > 1)
        scale_weights(m, 1.0f / (float)bags);
    size_t nb = (size_t)1 << m->n_bits, no = m->n_out, dim = m->dim;

    /* sparse weights are stored as half floats: round now, so the model in
     * memory scores exactly like the one loaded back from its file */
    for (size_t k = 0; k < nb * no; k++)
        m->w_sparse[k] = router_half_round(m->w_sparse[k]);
    for (size_t k = 0; k < nb * dim; k++)
        m->h_sparse[k] = router_half_round(m->h_sparse[k]);

    /* reference score distribution, for thresholds from a target share */
    float *scores = xrealloc(NULL, n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        struct router_scores sc;
        struct features_vec fv;
        example_vec(d, idx ? idx[i] : i, &fv);
        router_score_features(m, &fv, &sc);
        scores[i] = (float)sc.score;
    }
    qsort(scores, n, sizeof(float), cmp_float);
    m->n_ref = n < ROUTER__MAX_REF ? (uint32_t)n : ROUTER__MAX_REF;
    m->ref = xrealloc(NULL, m->n_ref * sizeof(float));
    for (uint32_t i = 0; i < m->n_ref; i++) {
        size_t k = m->n_ref == 1 ? 0 : (size_t)((double)i * (n - 1) / (m->n_ref - 1) + 0.5);
        m->ref[i] = scores[k];
    }
    free(scores);
    router__escalation_fit(m, d, idx, n_idx);
    router__model_finish(m);
    return m;
}

/* ---- the escalation model --------------------------------------------------------- */

#define ESC_EPOCHS 10
#define ESC_LR 0.05f   /* AdaGrad step of the dense weights and the bias */
#define ESC_L2 1e-5f   /* per update */
#define ESC_FOLDS 5
#define ESC_CV_MIN 100   /* judged answers needed to choose the sparse step by cross-validation */
#define ESC_CV_MAX 20000 /* answers it is chosen on, at most (the first ones): 20 fits */

/* Steps of the answer words' weights, as shares of ESC_LR, among which cross-validation
 * chooses (0: the signals alone). With hundreds of labels the words mostly add noise to
 * good signals (bench/cascade: out-of-fold AUC 0.787 without them, 0.774 at the full
 * step, 0.790 at 0.3); with more labels or another domain they may carry more. */
static const float esc_sparse_steps[] = {0.0f, 0.1f, 0.3f, 1.0f};
#define ESC_SPARSE_DEFAULT 0.3f /* with fewer than ESC_CV_MIN answers */

/* The logit of e for answer row a of d. */
static double
esc_logit(const struct router__escalation *e, const struct router_dataset *d,
          const struct answer_row *a)
{
    double z = e->bias;

    for (size_t j = 0; j < ROUTER__ESC_N; j++)
        z += e->w[j] * (a->sig[j] - e->mean[j]) * e->scale[j];
    for (size_t k = 0; k < a->n; k++)
        z += e->w_sparse[d->aids[a->off + k]] * d->avals[a->off + k];
    return z;
}

/* Fits e's weights (mean and scale already set, w_sparse allocated, nb floats) on answer
 * rows rows[0..n) of d by AdaGrad SGD on the log loss, in a seeded order (same data, same
 * model); the answer words' step is `sparse` times the signals' (0: not learned). a_ws is
 * scratch of nb floats. Reorders rows. */
static void
esc_sgd(struct router__escalation *e, const struct router_dataset *d, size_t *rows, size_t n,
        float sparse, float *a_ws, size_t nb)
{
    float a_w[ROUTER__ESC_N] = {0}, a_b = 0;
    uint64_t rng = 0x5eed;
    double tm = 0;

    for (size_t i = 0; i < n; i++)
        tm += 1.0 - d->ex[d->ans[rows[i]].ex].q[d->ans[rows[i]].head];
    tm = n ? tm / (double)n : 0.5;
    tm = tm < 0.01 ? 0.01 : tm > 0.99 ? 0.99 : tm;
    e->bias = (float)log(tm / (1.0 - tm));
    memset(e->w, 0, sizeof(e->w));
    memset(e->w_sparse, 0, nb * sizeof(float));
    memset(a_ws, 0, nb * sizeof(float));
    for (unsigned ep = 0; ep < ESC_EPOCHS; ep++) {
        for (size_t i = n; i > 1; i--) {
            size_t j = (size_t)(rng_next(&rng) % i), t = rows[i - 1];
            rows[i - 1] = rows[j];
            rows[j] = t;
        }
        for (size_t i = 0; i < n; i++) {
            const struct answer_row *a = &d->ans[rows[i]];
            const struct example *ex = &d->ex[a->ex];
            float g = (float)(1.0 / (1.0 + exp(-esc_logit(e, d, a))) - (1.0 - ex->q[a->head]));
            step(&e->bias, &a_b, g, ESC_LR);
            for (size_t j = 0; j < ROUTER__ESC_N; j++) {
                float z = (a->sig[j] - e->mean[j]) * e->scale[j];
                if (z != 0.0f)
                    step(&e->w[j], &a_w[j], g * z + ESC_L2 * e->w[j], ESC_LR);
            }
            for (size_t k = 0; k < a->n && sparse > 0; k++) {
                float *w = &e->w_sparse[d->aids[a->off + k]];
                step(w, &a_ws[d->aids[a->off + k]], g * d->avals[a->off + k] + ESC_L2 * *w,
                     ESC_LR * sparse);
            }
        }
    }
}

/* Returns the step share of esc_sparse_steps with the least out-of-fold log loss on rows
 * rows[0..n) (ESC_FOLDS folds by position; ties to the smaller step). */
static float
esc_choose_sparse(struct router__escalation *e, const struct router_dataset *d, const size_t *rows,
                  size_t n, float *a_ws, size_t nb)
{
    size_t *tr = xrealloc(NULL, n * sizeof(size_t));
    float best = ESC_SPARSE_DEFAULT;
    double best_loss = INFINITY;

    for (size_t c = 0; c < sizeof(esc_sparse_steps) / sizeof(*esc_sparse_steps); c++) {
        double loss = 0;
        for (size_t f = 0; f < ESC_FOLDS; f++) {
            size_t ntr = 0;
            for (size_t i = 0; i < n; i++)
                if (i % ESC_FOLDS != f)
                    tr[ntr++] = rows[i];
            esc_sgd(e, d, tr, ntr, esc_sparse_steps[c], a_ws, nb);
            for (size_t i = f; i < n; i += ESC_FOLDS) {
                const struct answer_row *a = &d->ans[rows[i]];
                double p = 1.0 / (1.0 + exp(-esc_logit(e, d, a)));
                double t = 1.0 - d->ex[a->ex].q[a->head];
                p = p < 1e-6 ? 1e-6 : p > 1 - 1e-6 ? 1 - 1e-6 : p;
                loss -= t * log(p) + (1 - t) * log(1 - p);
            }
        }
        if (loss < best_loss - 1e-9) {
            best_loss = loss;
            best = esc_sparse_steps[c];
        }
    }
    free(tr);
    return best;
}

void
router__escalation_fit(struct router_model *m, const struct router_dataset *d, const size_t *idx,
                       size_t n_idx)
{
    const size_t N = ROUTER__ESC_N, nb = (size_t)1 << d->n_bits;
    unsigned char *member = NULL;
    size_t *rows = NULL, n = 0;
    struct router__escalation *e = &m->esc;
    float *a_ws = NULL;

    m->has_esc = 0;
    if (m->score_weak < 0 || d->n_ans == 0 || m->n_bits != d->n_bits)
        return;
    if (idx) {
        member = xrealloc(NULL, d->n);
        memset(member, 0, d->n);
        for (size_t i = 0; i < n_idx; i++)
            if (idx[i] < d->n)
                member[idx[i]] = 1;
    }
    rows = xrealloc(NULL, d->n_ans * sizeof(size_t));
    double tm = 0;
    for (size_t r = 0; r < d->n_ans; r++) {
        const struct answer_row *a = &d->ans[r];
        if (a->head != (uint32_t)m->score_weak || (member && !member[a->ex]))
            continue;
        rows[n++] = r;
        tm += 1.0 - d->ex[a->ex].q[a->head];
    }
    tm = n ? tm / (double)n : 0;
    if (n < ROUTER__ESC_MIN_EXAMPLES || tm <= 0.0 || tm >= 1.0)
        goto done; /* too few, or nothing to tell apart: the default stays */

    for (size_t j = 0; j < N; j++) {
        double s = 0, s2 = 0;
        for (size_t i = 0; i < n; i++) {
            double v = d->ans[rows[i]].sig[j];
            s += v;
            s2 += v * v;
        }
        double mean = s / (double)n, var = s2 / (double)n - mean * mean;
        e->mean[j] = (float)mean;
        e->scale[j] = var > 1e-12 ? (float)(1.0 / sqrt(var)) : 0.0f;
    }
    free(e->w_sparse);
    e->w_sparse = xrealloc(NULL, nb * sizeof(float));
    a_ws = xrealloc(NULL, nb * sizeof(float));
    float sparse = n < ESC_CV_MIN ? ESC_SPARSE_DEFAULT
                                  : esc_choose_sparse(e, d, rows, n < ESC_CV_MAX ? n : ESC_CV_MAX,
                                                      a_ws, nb);
    esc_sgd(e, d, rows, n, sparse, a_ws, nb);
    /* stored as half floats: round now, so the model in memory scores as loaded back */
    for (size_t r = 0; r < nb; r++)
        e->w_sparse[r] = router_half_round(e->w_sparse[r]);
    e->n_train = (uint32_t)n;
    m->has_esc = 1;
done:
    if (!m->has_esc) {
        free(e->w_sparse);
        e->w_sparse = NULL;
    }
    free(a_ws);
    free(member);
    free(rows);
}
