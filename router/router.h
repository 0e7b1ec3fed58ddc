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

/* Returns the model's hash space: features are hashed into 2^bits buckets. */
unsigned router_model_bits(const struct router_model *m);

/* Returns the number of heads (backends the model predicts success for). */
size_t router_model_n_heads(const struct router_model *m);

/* Returns head i's name, owned by the model. */
const char *router_model_head_name(const struct router_model *m, size_t i);

/* Returns the index of the head called name, or -1. */
int router_model_head_find(const struct router_model *m, const char *name);

/* Returns the score threshold that sends about `share` (in [0,1]) of the model's
 * reference prompts to the strong side (score >= threshold): the (1 - share)
 * percentile of the reference scores, interpolated as numpy does. share <= 0
 * returns a value above 1 (no strong calls), share >= 1 returns 0. */
double router_model_threshold_for_share(const struct router_model *m, double share);

/* Same as router_model_load from a buffer of len bytes (borrowed). */
struct router_model *router_model_load_buffer(const void *data, size_t len, char *err,
                                              size_t errlen);

/* Writes m to path (through a temporary file renamed into place). Returns 0 or
 * -errno. */
int router_model_save(const struct router_model *m, const char *path);

/* Returns the CRC-32 (IEEE) of len bytes, as used in model files. */
uint32_t router_crc32(const void *data, size_t len);

/* Returns f rounded to the nearest half-precision value (how sparse weights are
 * stored in model files). */
float router_half_round(float f);

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

/* Scores a bare prompt (len bytes, borrowed) as the single user turn of a chat.
 * Returns 0, or -EINVAL when len is 0. Thread-safe like router_score_request. */
int router_score_text(const struct router_model *m, const char *text, size_t len,
                      struct router_scores *out);

/* Extracts request's features (borrowed) as router_score_request does for m and
 * returns them encoded (features_blob_encode: m's n_bits, FEATURES_VERSION) in a new
 * buffer (free()) of *len bytes, or NULL when the request has no text. Thread-safe
 * like router_score_request; costs one more extraction. */
void *router_request_features(const struct router_model *m, const json_t *request, size_t *len);

/* Frees the calling thread's scoring scratch now (it is also freed when the
 * thread exits). Scoring again afterwards is fine. */
void router_thread_cleanup(void);

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

/* Picks a tier for the scores. For THRESHOLD, `threshold` is the cut: tier 1 when
 * score >= threshold, else tier 0 (only tiers 0 and 1 are ever chosen). For TIERS
 * it is ignored: the first tier i < n_tiers-1 whose head is valid and whose
 * p[head] >= bar, else the last tier (a tier with head -1 only as the last).
 * n_tiers 0 or 1 returns 0. Returns the tier index in [0, n_tiers). */
size_t router_policy_pick(enum router_policy_kind kind, const struct router_tier *tiers,
                          size_t n_tiers, double threshold, const struct router_scores *s);

/* The cascade's steps for a prompt scored `score`: the fast tier alone below `low`, the
 * strong tier alone at or above `high`, in between the fast tier first, its answer
 * re-sent to the strong one when its escalation score is at or above the cut
 * (router_cascade_escalate). */
enum router_cascade_step {
    ROUTER_CASCADE_FAST,   /* clearly easy */
    ROUTER_CASCADE_TRY,    /* the band: fast first, maybe escalated */
    ROUTER_CASCADE_STRONG, /* clearly hard */
};

/* Returns the step for score (NAN counts as the band) and the band [low, high). */
enum router_cascade_step router_cascade_pick(double score, double low, double high);

/* Returns 1 when an answer with escalation score `escalation` is re-sent to the strong
 * tier (escalation >= at; NAN escalates), else 0. */
int router_cascade_escalate(double escalation, double at);

/* ---- holding a strong share online ------------------------------------------- */

/* A route's recent scores, for cutting at a target share of them (share.c). One per
 * route and thread: not thread-safe. Memory: 2 bytes per score held plus 4 KB. The
 * same window cuts two tiers (a strong share) or up to ROUTER_SHARE_MAX_TIERS (a share
 * per tier, cheapest first: the lowest scores go to tier 0). */
struct router_share;

#define ROUTER_SHARE_MAX_TIERS 16

#define ROUTER_SHARE_BINS 1024           /* score resolution of the window: 1/1024 */
#define ROUTER_SHARE_MIN_SCORES 50       /* below this many scores, the fallback cut decides */
#define ROUTER_SHARE_MAX_WINDOW 1000000
#define ROUTER_SHARE_DEFAULT_HORIZON 25  /* requests' worth of share debt corrected at most */

/* Returns a new, empty estimator keeping the last `window` scores (1 to
 * ROUTER_SHARE_MAX_WINDOW), or NULL when window is out of range. Aborts on
 * out-of-memory. */
struct router_share *router_share_new(size_t window);

/* Frees e. NULL is fine. */
void router_share_destroy(struct router_share *e);

/* Returns the window size e was made with / the scores it holds now (<= window). */
size_t router_share_window(const struct router_share *e);
size_t router_share_count(const struct router_share *e);

/* Sets the share debt's bound (strong calls made minus promised), in requests' worth of
 * the rarer decision: horizon * min(share, 1 - share) calls too many or too few move the
 * target all the way to 0 or 1. The smaller,
 * the faster the share returns to the target after a change of traffic and the less the
 * rank alone decides; 0 turns the correction off (the bare window quantile). Resets the
 * debt. */
void router_share_set_horizon(struct router_share *e, double horizon);

/* Adds a score that was routed otherwise (a fixed threshold) to the window. */
void router_share_add(struct router_share *e, double score);

/* Decides one request of the route: returns 1 (strong) or 0 (weak) for score and the
 * target share (in [0,1]; 0 never strong, 1 always), then adds score to the window.
 * With fewer than ROUTER_SHARE_MIN_SCORES scores held, strong is score >= fallback
 * (e.g. router_model_threshold_for_share). Otherwise strong when less than the target
 * share (corrected by the debt) of the window lies above score; scores in the same
 * bin are ties, broken by a per-decision counter, so equal scores get the target share
 * too. *cut (when not NULL) gets the score cut in force, to bin resolution. */
int router_share_decide(struct router_share *e, double score, double share, double fallback,
                        double *cut);

/* Decides one request among n_tiers tiers (2 to ROUTER_SHARE_MAX_TIERS, cheapest
 * first) and adds score to the window. above[b] (n_tiers - 1 entries, borrowed) is the
 * target share of requests sent past tier b, i.e. to tiers b+1 and up; it must not grow
 * with b (a larger value is taken as the one before). Each boundary is cut as
 * router_share_decide cuts its one, with its own debt and fallback[b], and one tie draw
 * for all, so the boundaries nest. cuts (n_tiers - 1 entries, or NULL) gets each
 * boundary's cut in force. Returns the tier, in [0, n_tiers). */
size_t router_share_decide_tiers(struct router_share *e, double score, const double *above,
                                 const double *fallback, size_t n_tiers, double *cuts);

/* Returns the cut router_share_decide would use for share now, or NAN with fewer than
 * ROUTER_SHARE_MIN_SCORES scores. */
double router_share_cut(const struct router_share *e, double share);

/* Gets the decisions among the scores in the window now, and how many went strong
 * (past tier 0). */
void router_share_recent(const struct router_share *e, size_t *decided, size_t *strong);

/* Returns how many of the decisions among the scores in the window went to tier. */
size_t router_share_recent_tier(const struct router_share *e, size_t tier);

/* ---- sticky conversations ------------------------------------------------------ */

/* Which tier each recent conversation was routed to (sticky.c), so that a follow-up
 * turn is not routed below it. Shared by threads (striped locks inside), reference-
 * counted. Memory: 24 bytes per entry. Time is the caller's, in seconds. */
struct router_sticky;

#define ROUTER_STICKY_MAX_ENTRIES (1u << 26)
#define ROUTER_STICKY_MAX_PREFIXES 8 /* earlier turns of a request looked up at most */

/* A request's conversation digests (router_sticky_digest). */
struct router_convo {
    uint64_t full;        /* all its messages: what a later turn looks up */
    size_t n_prefix;
    uint64_t prefix[ROUTER_STICKY_MAX_PREFIXES]; /* the messages before each assistant
                                                  * reply, oldest first (the last 8) */
};

/* Returns a new table (one reference) of max_entries (4 to ROUTER_STICKY_MAX_ENTRIES,
 * rounded down to a multiple of 4) whose entries live ttl_s seconds after their last
 * use, digests keyed by seed; NULL when out of range. Aborts on out-of-memory. */
struct router_sticky *router_sticky_new(size_t max_entries, uint32_t ttl_s, uint64_t seed);

/* Takes one more reference; returns t. Drops one, freeing t with the last (NULL is
 * fine). Thread-safe. */
struct router_sticky *router_sticky_ref(struct router_sticky *t);
void router_sticky_unref(struct router_sticky *t);

/* Returns the entries t holds at most / their time to live (s). */
size_t router_sticky_max(const struct router_sticky *t);
uint32_t router_sticky_ttl(const struct router_sticky *t);

/* Digests an OpenAI "messages" array (borrowed) under salt (borrowed, may be NULL: e.g.
 * the route and the client's key, so conversations of different clients never meet):
 * each message by its role, name, tool_call_id, content text and tool call ids, not
 * its JSON spelling. Returns 0, or -EINVAL for an empty array (out zeroed). */
int router_sticky_digest(const struct router_sticky *t, const json_t *messages, const char *salt,
                         struct router_convo *out);

/* Returns the tier remembered for the longest of c's prefixes still alive at now_s (and
 * keeps it alive another ttl), or -1 when none is: a new conversation. Thread-safe. */
int router_sticky_lookup(struct router_sticky *t, const struct router_convo *c, uint64_t now_s);

/* Remembers that the request of c went to tier at now_s, replacing the set's entry
 * nearest to expiry when full. Thread-safe. */
void router_sticky_remember(struct router_sticky *t, const struct router_convo *c, size_t tier,
                            uint64_t now_s);

/* ---- training ----------------------------------------------------------------- */

/* A training set: extracted features and outcomes of labelled prompts. */
struct router_dataset;

/* Returns a new, empty training set hashing into 2^n_bits buckets, or NULL when
 * n_bits is out of range. */
struct router_dataset *router_dataset_new(unsigned n_bits);

/* Frees d. NULL is fine. */
void router_dataset_destroy(struct router_dataset *d);

/* Adds one example (borrowed): a training line {"prompt": "..." | "messages": [...] |
 * "features": "<base64>", "outcomes": {"<head>": q in [0,1], ...}, "set": "..."};
 * "features" (what store_prompts = features logs, see router_request_features) is a
 * stored feature vector used instead of any text; "set" (optional) names the data set
 * it comes from (see set_bias); "answers" {"<head>": "text" | {"text", "finish_reason",
 * "logprobs": [numbers]}} and "answer_signals" {"<head>": [FEATURES_N_ANSWER numbers]}
 * are heads' answers, kept (as signals) for those with an outcome: the fast (weak) head's
 * teach the escalation model (router_train); signals of an older answer signals version
 * (FEATURES_N_ANSWER_V numbers) are skipped, the rest of the line kept; other fields are
 * ignored, and a missing "outcomes" adds
 * an unlabelled example (for scoring). Heads are created in order of first appearance.
 * Returns 0, -EINVAL (no text, bad outcome, malformed features), -EPROTO (features of
 * another FEATURES_VERSION or n_bits than d's: refused and counted, see
 * router_dataset_refused), or -E2BIG (more than ROUTER_MAX_HEADS heads); on error d is
 * unchanged. */
int router_dataset_add(struct router_dataset *d, const json_t *example);

/* Returns how many examples router_dataset_add refused with -EPROTO. */
size_t router_dataset_refused(const struct router_dataset *d);

/* Returns the number of examples. */
size_t router_dataset_size(const struct router_dataset *d);

/* Returns the number of heads seen so far / head i's name (owned by d) / the index
 * of the head called name or -1. */
size_t router_dataset_n_heads(const struct router_dataset *d);
const char *router_dataset_head_name(const struct router_dataset *d, size_t i);
int router_dataset_head_find(const struct router_dataset *d, const char *name);

/* Returns example i's outcome for head (index in d), or NAN when it has none. */
double router_dataset_outcome(const struct router_dataset *d, size_t i, int head);

/* Scores example i with m (which must use the same n_bits). Returns 0 or -EINVAL.
 * Head indices in out follow m, not d. */
int router_dataset_score(const struct router_model *m, const struct router_dataset *d, size_t i,
                         struct router_scores *out);

/* What the score output learns. */
enum router_score_kind {
    ROUTER_SCORE_ADVANTAGE,   /* (1 + q_strong - q_weak) / 2: the strong head's expected gain */
    ROUTER_SCORE_WEAK_FAILS,  /* 1 - q_weak */
};

struct router_train_opts {
    uint64_t seed;       /* same data + same seed = same model, bit for bit */
    unsigned dim;        /* hidden units of the embedding bag (0: logistic regression) */
    unsigned epochs;
    double lr;           /* AdaGrad step of the linear weights */
    double lr_hidden;    /* AdaGrad step of the hidden layer */
    double l2;           /* L2 penalty per update */
    double head_weight;  /* loss weight of the per-backend heads vs the score (0: 1) */
    enum router_score_kind score;
    double score_mix;    /* in [0,1]: weight of (1 + p_strong - p_weak)/2 in the score,
                          * the rest is the learned score output */
    unsigned bags;       /* > 1: average that many linear models trained on different
                          * shuffles (seed, seed + 1000003, ...); needs dim 0 */
    int set_bias;        /* learn a per-"set" offset while training (dropped from the
                          * model): the weights then learn differences within each set */
    const char *strong;  /* head names the score contrasts (borrowed); when either is */
    const char *weak;    /* missing the score is 1 - mean success over known heads */
    void (*progress)(void *arg, unsigned long done, unsigned long total);
    void *progress_arg;
};

/* Fills o with the defaults: fast-learning settings for small training sets
 * (16 hidden units, step 0.1, learned score). */
void router_train_opts_default(struct router_train_opts *o);

/* Fills o with the settings tuned by cross-validation for sets of thousands of
 * prompts (what `triage train` uses): linear, step 0.01, score mixing in the head
 * difference. */
void router_train_opts_tuned(struct router_train_opts *o);

/* Trains a model on d's examples idx[0..n_idx) (idx NULL: all), and its escalation
 * model from their judged answers by the weak head when there are at least 30, some good
 * and some bad. Returns a new model with one reference, or NULL with a reason in err. */
struct router_model *router_train(const struct router_dataset *d, const size_t *idx, size_t n_idx,
                                  const struct router_train_opts *o, char *err, size_t errlen);

/* ---- retraining from the outcome log ------------------------------------------------- */

/* How many times each of n_log judged prompts of the outcome log counts beside n_base
 * labelled base examples when a challenger is trained (router_train_log): 1 without base
 * examples. */
unsigned router_log_weight(size_t n_log, size_t n_base);

/* Trains a challenger the one way daemon/retrain.c and `triage train --db` do: d's base
 * examples base[0..n_base) (the shipped sets, borrowed) once each and the log's judged
 * prompts log[0..n_log) (borrowed) router_log_weight(n_log, n_base) times each, with o.
 * Returns a new model with one reference, or NULL with a reason in err. */
struct router_model *router_train_log(const struct router_dataset *d, const size_t *base,
                                      size_t n_base, const size_t *log, size_t n_log,
                                      const struct router_train_opts *o, char *err, size_t errlen);

/* Scores an already extracted feature vector. Returns 0. */
struct features_vec;
int router_score_features(const struct router_model *m, const struct features_vec *fv,
                          struct router_scores *out);

/* ---- evaluation ----------------------------------------------------------------- */

/* Routing quality of a score on a labelled set (RouteLLM's metrics). */
struct router_eval {
    size_t n;
    double perf_weak, perf_strong; /* mean outcome when everything goes to one side */
    double pgr[11];  /* PGR with the top 0%, 10%, ..., 100% by score sent to strong */
    double apgr;     /* trapezoid mean of pgr[] */
    double cpt50;    /* smallest share of strong calls (any k/n) reaching PGR 0.5 */
    double cpt80;    /* ... reaching PGR 0.8 */
    double auc;      /* ROC AUC of score for "strong does better than weak" */
};

/* Evaluates score[i] (higher = send to strong) against outcomes q_weak[i] and
 * q_strong[i] (all borrowed, n entries). Prompts are ranked by score descending,
 * ties by index. Returns 0, -EINVAL for n = 0, -EDOM when both sides perform the
 * same (PGR undefined; perf_* are still set). */
int router_eval_routing(const double *score, const double *q_weak, const double *q_strong, size_t n,
                        struct router_eval *out);

/* Returns the ROC AUC of score (higher = more likely positive) for soft labels y[i] in
 * [0,1] (all borrowed, n entries): each item counts as a positive of weight y and a
 * negative of weight 1 - y, ties count half, no item is paired with itself. NAN when
 * there is no positive-negative pair (all labels alike). */
double router_eval_auc(const double *score, const double *y, size_t n);

/* Returns Spearman's rank correlation of x and y (ties get average ranks), or NAN
 * for fewer than two points or a constant input. */
double router_eval_spearman(const double *x, const double *y, size_t n);

/* Returns the q-th percentile (q in [0,100]) of x, interpolated as numpy does. */
double router_eval_percentile(const double *x, size_t n, double q);

/* Returns raw dense feature j of example i (see features_dense_name), NAN when out
 * of range. */
double router_dataset_dense(const struct router_dataset *d, size_t i, size_t j);

/* ---- escalation (the cascade) ------------------------------------------------------ */

/* Scores a fast tier's answer to request (an OpenAI request body, borrowed): *out gets
 * the probability in [0,1] that the answer is bad and the request should be re-sent to
 * the strong tier, from the answer's text (len bytes, borrowed, any bytes) and its
 * FEATURES_N_ANSWER signals (features_answer_signals; borrowed). A model trained on
 * judged fast answers carries a learned escalation model (the signals and the answer's
 * hashed words); one without (format 1 files, too few labels) scores by the
 * signals-only default of docs/cascade.md, with the prompt's routing score. Returns 0, or
 * -EINVAL when request has no text. Thread-safe like router_score_request. */
int router_escalation_score(const struct router_model *m, const json_t *request, const char *answer,
                            size_t len, const float *signals, double *out);

/* Returns a fast answer as the outcome log keeps it (features_answer_blob_encode, a new
 * buffer of *blob_len bytes, free()): its FEATURES_N_ANSWER signals (borrowed) and, with
 * with_words, its text's (len bytes, borrowed) hashed features in m's hash space, what
 * a learned escalation model reads. Aborts on out of memory. */
void *router_answer_blob(const struct router_model *m, const char *answer, size_t len,
                         const float *signals, int with_words, size_t *blob_len);

/* Returns how many judged fast answers m's escalation model learned from, 0 when m
 * scores answers by the default. */
size_t router_model_escalation_examples(const struct router_model *m);

/* How well a model's escalation scores tell a fast tier's bad answers from its good ones
 * (router_eval_escalation). */
struct router_escalation_eval {
    size_t n;         /* judged answers of the fast head scored */
    double bad;       /* share of them judged bad (q < 0.5) */
    double auc;       /* ROC AUC of the escalation score for "the answer is bad" (q < 0.5);
                       * NAN without both good and bad answers */
    double escalated; /* share of them the cut `at` escalates */
    double caught;    /* share of the bad ones among those; NAN when none is bad */
};

/* Scores the judged answers of head `weak` (a name in d, borrowed) among d's examples
 * idx[0..n_idx) (NULL: all; repeats count once) with m's escalation model (learned, or
 * the default with m's routing score of the prompt), as router_escalation_score does,
 * and measures them (out, caller's) at the cut `at`. A head d does not know leaves n 0.
 * Returns 0, or -EINVAL when m's hash space is not d's. */
int router_eval_escalation(const struct router_model *m, const struct router_dataset *d,
                           const size_t *idx, size_t n_idx, const char *weak, double at,
                           struct router_escalation_eval *out);

/* Returns a new model (one reference) of routing's heads, weights and reference scores
 * and escalation's escalation model (a learned one, or none: the default, which reads
 * the new model's routing score); its version is its own content digest. Both borrowed.
 * NULL with err when their hash spaces differ. */
struct router_model *router_model_combine(const struct router_model *routing,
                                          const struct router_model *escalation, char *err,
                                          size_t errlen);

/* Returns how many judged answers (router_dataset_add's "answers" and "answer_signals",
 * for heads the example has an outcome for) d holds. */
size_t router_dataset_answers(const struct router_dataset *d);

/* ---- judging ------------------------------------------------------------------- */

/* An LLM judge grades one answer at a time on a 1-10 scale; the grade becomes a
 * training label q = (rating - 1) / 9 (docs/judge.md: the prompt, the parse rules, the
 * limits). */

/* The judge prompt's version, recorded with each label; bumped whenever the prompt text
 * or the way a conversation is rendered into it changes. */
#define ROUTER_JUDGE_VERSION "judge-v1"

/* Returns a new (free()) JSON text: the body of a non-streaming chat completion request
 * to judge_model (borrowed) that asks it to grade answer (answer_len bytes, borrowed,
 * any bytes) as the reply to messages (an OpenAI "messages" array, borrowed): the
 * rubric as system prompt, then one user message with the conversation (roles, string
 * content, content parts' text) and the answer, each cleaned to valid UTF-8 and cut to
 * about 16 KB. Returns NULL when messages holds no text, or judge_model is NULL. */
char *router_judge_request(const json_t *messages, const char *answer, size_t answer_len,
                           const char *judge_model);

/* Parses a judge's reply: the assistant message's content (len bytes, borrowed, any
 * bytes). Returns 0 with *rating in 1..10 and *q = (rating - 1) / 9, or -1 when it
 * holds no rating, an ambiguous one or one off the scale; q and rating are then left
 * alone. The rating is the last "[[N]]", or on the reply's last line "Rating: N" or
 * "N/10"; every rating found must agree. */
int router_judge_parse(const char *content, size_t len, double *q, int *rating);

/* Recovers from request (a router_judge_request body, parsed; borrowed) the graded
 * conversation's last user turn and the answer, as the judge was shown them. Returns 0
 * with *question and *answer new (free()), or -EINVAL when request is not one, or
 * its conversation has no user turn. */
int router_judge_unpack(const json_t *request, char **question, char **answer);

#endif
