/* retrain.c - the predictor retrains itself from the outcome log and is replaced only by
 * a better one.
 *
 * Every [learning] retrain_every newly judged prompts (learn.c counts them), the main
 * thread starts one retrain on a thread of its own (never a loop, never the thread pool):
 *  1. the judged prompts of the log (storage_export_training, backend names mapped to
 *     the config's heads) are split by a hash of their text: one in five is held out, the
 *     same prompts every time, so no model is ever compared on what it trained on;
 *  2. a challenger is trained on [learning] base_data (the shipped sets) plus the rest,
 *     by router_train_log (the recipe `triage train --db` shares: how much each of the
 *     log's prompts counts beside the base data);
 *  3. champion and challenger are scored on the held-out prompts: the routing part by
 *     APGR between the cheapest and the strongest tier's heads (prompts with both sides'
 *     labels), the escalation part by the AUC of "the fast answer is bad" on the
 *     cascade's judged fast answers to the same prompts (promote.c);
 *  4. the challenger is kept under [learning] models_dir and recorded in the registry
 *     (storage_model_add: version, parent, both parts' metrics); each part wins on its own
 *     ([learning] promote_margin on at least min_holdout prompts, escalation_margin on at
 *     least min_holdout_answers answers) and the file promoted is the challenger, or its
 *     winning part joined to the champion's other part (a file and registry row of its
 *     own); a promotion reloads the snapshot, which then loads the registry's champion.
 * `triage models` lists the versions; promote / rollback switch and a reload applies.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <zlib.h>

#include "daemon-int.h"
#include "log.h"
#include "storage.h"

#define HOLDOUT_EVERY 5 /* one judged prompt in five is held out */

static struct {
    pthread_mutex_t lock;
    pthread_t thread;
    int running;        /* a retrain thread exists (joined before the next starts) */
    atomic_int done;    /* it has finished: join it */
    uint64_t judged_at_start; /* learn.c's judged count when the last retrain began */
    atomic_uint_fast64_t runs, promotions;
} rt = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* What one retrain reads and writes. */
struct retrain_job {
    struct daemon_snapshot *snap; /* the champion and the config it runs with */
    struct router_dataset *d;
    size_t *train_idx, n_train, cap_train; /* base data */
    size_t *log_idx, n_log, cap_log;       /* the log's judged prompts trained on */
    size_t *hold_idx, n_hold, cap_hold;
    size_t log_examples;
};

static void
push(size_t **v, size_t *n, size_t *cap, size_t x)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 256;
        *v = realloc(*v, *cap * sizeof(**v));
        if (!*v)
            abort();
    }
    (*v)[(*n)++] = x;
}

/* FNV-1a of what identifies the example's prompt: its messages as JSON text, or the
 * stored prompt hash of a row kept as features (store_prompts = features). It decides
 * which prompts are held out. */
static uint64_t
prompt_hash(const json_t *example)
{
    const json_t *messages = json_object_get(example, "messages");
    char *text = messages ? json_dumps(messages, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    const char *key = text ? text : json_string_value(json_object_get(example, "prompt_hash"));
    uint64_t h = 1469598103934665603ull;

    for (const char *p = key ? key : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    free(text);
    return h;
}

/* storage_export_fn: one judged prompt of the log into the dataset, its outcomes
 * renamed from backends to the heads that score them. */
static int
add_logged(json_t *example, void *arg)
{
    struct retrain_job *j = arg;
    const struct conf *c = j->snap->conf;
    json_t *outcomes = json_object_get(example, "outcomes"), *heads = json_object();
    json_t *answers = json_object_get(example, "answer_signals"), *by_head = json_object();
    const char *backend;
    json_t *q;

    json_object_foreach(outcomes, backend, q) {
        int b = conf_backend_find(c, backend);
        const char *head = b >= 0 && c->backends[b].head ? c->backends[b].head : backend;
        json_object_set(heads, head, q);
    }
    /* the cascade's judged fast answers (signals and hashed words): they teach the
     * challenger's escalation model */
    json_object_foreach(answers, backend, q) {
        int b = conf_backend_find(c, backend);
        json_object_set(by_head, b >= 0 && c->backends[b].head ? c->backends[b].head : backend, q);
    }
    /* the prompt as text, or as its stored feature vector */
    json_t *ex = json_deep_copy(example);
    json_object_set_new(ex, "outcomes", heads);
    json_object_set_new(ex, "answer_signals", by_head);
    json_object_del(ex, "sources");
    size_t before = router_dataset_size(j->d);
    if (ex && router_dataset_add(j->d, ex) == 0 && router_dataset_size(j->d) > before) {
        if (prompt_hash(example) % HOLDOUT_EVERY == 0)
            push(&j->hold_idx, &j->n_hold, &j->cap_hold, before);
        else
            push(&j->log_idx, &j->n_log, &j->cap_log, before);
        j->log_examples++;
    }
    json_decref(ex);
    return 0;
}

/* Adds a JSONL(.gz) file of labelled examples to the training side. Returns 0 or -1. */
static int
add_base(struct retrain_job *j, const char *path)
{
    gzFile f = gzopen(path, "rb");
    size_t cap = 1 << 16, len = 0;
    char *line = malloc(cap);

    if (!line)
        abort();
    if (!f) {
        free(line);
        log_warnx("retrain: cannot open base data %s", path);
        return -1;
    }
    for (;;) {
        if (!gzgets(f, line + len, (int)(cap - len))) {
            if (len == 0)
                break;
        } else {
            len += strlen(line + len);
            if (len == cap - 1 && line[len - 1] != '\n') { /* longer than the buffer */
                cap *= 2;
                line = realloc(line, cap);
                if (!line)
                    abort();
                continue;
            }
        }
        json_t *ex = json_loadb(line, len, 0, NULL);
        size_t before = router_dataset_size(j->d);
        if (ex && router_dataset_add(j->d, ex) == 0 && router_dataset_size(j->d) > before)
            push(&j->train_idx, &j->n_train, &j->cap_train, before);
        json_decref(ex);
        len = 0;
    }
    gzclose(f);
    free(line);
    return 0;
}

/* APGR of m on the held-out prompts that have both heads' labels; NaN when it cannot
 * be measured. n_out: how many prompts it was measured on. */
static double
holdout_apgr(const struct retrain_job *j, const struct router_model *m, int weak, int strong,
             size_t *n_out)
{
    double *score = calloc(j->n_hold + 1, sizeof(double)), *qw = calloc(j->n_hold + 1, sizeof(double)),
           *qs = calloc(j->n_hold + 1, sizeof(double));
    size_t n = 0;
    struct router_eval ev;
    double apgr = NAN;

    if (!score || !qw || !qs)
        abort();
    for (size_t k = 0; k < j->n_hold; k++) {
        size_t i = j->hold_idx[k];
        struct router_scores sc;
        double w = router_dataset_outcome(j->d, i, weak), s = router_dataset_outcome(j->d, i, strong);
        if (isnan(w) || isnan(s) || router_dataset_score(m, j->d, i, &sc) < 0)
            continue;
        score[n] = sc.score;
        qw[n] = w;
        qs[n] = s;
        n++;
    }
    if (n && router_eval_routing(score, qw, qs, n, &ev) == 0)
        apgr = ev.apgr;
    *n_out = n;
    free(score);
    free(qw);
    free(qs);
    return apgr;
}

/* The head scoring tier i's backend. */
static const char *
tier_head(const struct conf *c, size_t i)
{
    const struct conf_backend *b = &c->backends[c->tiers[i].backend];
    return b->head ? b->head : b->name;
}

static int64_t
unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Records the snapshot's model as champion when the registry has none yet, so every
 * later version has a parent. */
static void
record_first_champion(const struct daemon_snapshot *s)
{
    const struct conf *c = s->conf;
    struct storage_model_info cur, m = {0};
    char err[256];

    if (!c->db_path || storage_model_champion(c->db_path, &cur, err, sizeof(err)) != -ENOENT)
        return;
    snprintf(m.version, sizeof(m.version), "%s", router_model_version(s->model));
    snprintf(m.path, sizeof(m.path), "%s", c->model_path);
    snprintf(m.source, sizeof(m.source), "shipped");
    snprintf(m.status, sizeof(m.status), "champion"); /* added and promoted at once */
    m.created_ms = unix_ms();
    m.train_examples = m.holdout_n = -1;
    m.apgr = m.parent_apgr = NAN;
    m.esc_holdout_n = -1;
    m.esc_auc = m.parent_esc_auc = NAN;
    if (storage_model_add(c->db_path, &m, err, sizeof(err)) < 0)
        log_warnx("model registry: cannot record the first model: %s", err);
}

/* A registry row for model m of this retrain (source retrain, parent the champion). */
static void
model_row(struct storage_model_info *row, const struct router_model *m,
          const struct router_model *champion, const struct daemon__promotion *p,
          const struct router_escalation_eval *esc)
{
    memset(row, 0, sizeof(*row));
    snprintf(row->version, sizeof(row->version), "%s", router_model_version(m));
    snprintf(row->parent, sizeof(row->parent), "%s", router_model_version(champion));
    snprintf(row->source, sizeof(row->source), "retrain");
    snprintf(row->status, sizeof(row->status), "candidate");
    row->created_ms = unix_ms();
    row->holdout_n = (int64_t)p->n_prompts;
    row->parent_apgr = p->apgr_champ;
    row->esc_holdout_n = (int64_t)esc->n;
    row->esc_auc = esc->auc;
    row->parent_esc_auc = p->esc_champ.auc;
}

/* Saves m under models_dir as <version>.tmod into row->path and records row. Returns 0
 * or -1 (logged). */
static int
keep_model(const struct conf *c, const struct router_model *m, struct storage_model_info *row)
{
    char err[512];

    mkdir(c->models_dir, 0750); /* EEXIST is the usual answer */
    if (snprintf(row->path, sizeof(row->path), "%s/%s.tmod", c->models_dir, row->version) >=
        (int)sizeof(row->path)) {
        log_warnx("retrain: models_dir is too long a path");
        return -1;
    }
    int saved = router_model_save(m, row->path);
    if (saved < 0) {
        log_warnx("retrain: cannot save %s: %s", row->path, strerror(-saved));
        return -1;
    }
    if (storage_model_add(c->db_path, row, err, sizeof(err)) < 0) {
        log_warnx("retrain: cannot record %s: %s", row->version, err);
        return -1;
    }
    return 0;
}

/* "0.8125 vs 0.7500 on 40 judged fast answers (at escalate_at 0.5 it escalates 25.0%, 60.0%
 * of the bad ones)" or "not measured (3 held-out judged fast answers)". */
static void
fmt_escalation(char *buf, size_t len, const struct conf *c, const struct daemon__promotion *p)
{
    const struct router_escalation_eval *e = &p->esc_chal;

    if (e->n == 0 || isnan(e->auc))
        snprintf(buf, len, "not measured (%zu held-out judged fast answers)", e->n);
    else
        snprintf(buf, len,
                 "%.4f vs %.4f on %zu judged fast answers (at escalate_at %g the challenger "
                 "escalates %.1f%%, %.1f%% of the bad ones)",
                 e->auc, p->esc_champ.auc, e->n, c->escalate_at, 100 * e->escalated,
                 100 * (isnan(e->caught) ? 0 : e->caught));
}

/* Records the challenger (a candidate) and the file p promotes, if any, in the registry;
 * promotes it and asks for a reload; says what happened in one log line. */
static void
record_and_promote(struct retrain_job *j, const struct router_model *champion,
                   const struct router_model *challenger, const struct daemon__promotion *p,
                   size_t base, uint64_t t0)
{
    const struct conf *c = j->snap->conf;
    struct storage_model_info m, w;
    char err[512], esc[256], parts[320] = "";

    model_row(&m, challenger, champion, p, &p->esc_chal);
    m.train_examples = (int64_t)(base + j->n_log); /* distinct */
    m.apgr = p->apgr_chal;
    atomic_fetch_add(&rt.runs, 1); /* before the row: whoever sees it sees the count */
    if (keep_model(c, challenger, &m) < 0)
        return;
    const struct storage_model_info *won = p->promoted ? &m : NULL;
    if (p->promoted && strcmp(router_model_version(p->promoted), m.version)) {
        /* one part of each: a file of its own */
        model_row(&w, p->promoted, champion, p, &p->esc_final);
        w.train_examples = p->take_routing ? m.train_examples : -1;
        w.apgr = p->take_routing ? p->apgr_chal : p->apgr_champ;
        snprintf(w.routing_from, sizeof(w.routing_from), "%s",
                 p->take_routing ? m.version : m.parent);
        snprintf(w.escalation_from, sizeof(w.escalation_from), "%s",
                 p->take_escalation ? m.version : m.parent);
        if (keep_model(c, p->promoted, &w) < 0)
            return;
        won = &w;
        snprintf(parts, sizeof(parts), " %s (routing of %s, escalation of %s)", w.version,
                 w.routing_from, w.escalation_from);
    }
    fmt_escalation(esc, sizeof(esc), c, p);
    log_info("retrain: challenger %s trained on %zu examples (%zu from the log, each x%u, "
             "%zu base) in %.1f s; routing: held-out APGR %.4f vs champion "
             "%s %.4f on %zu prompts: %s; escalation: held-out AUC %s: %s; %s%s",
             m.version, base + j->n_log, j->n_log, router_log_weight(j->n_log, base), base,
             (double)(daemon__now_ns() - t0) / 1e9, p->apgr_chal, m.parent, p->apgr_champ,
             p->n_prompts, p->routing_why, esc, p->escalation_why, p->verdict, parts);
    if (!won)
        return;
    if (storage_model_promote(c->db_path, won->version, err, sizeof(err)) < 0) {
        log_warnx("retrain: cannot promote %s: %s", won->version, err);
        return;
    }
    atomic_fetch_add(&rt.promotions, 1);
    daemon__request_reload(); /* the snapshot loads the registry's champion */
}

static void *
retrain_main(void *arg)
{
    struct retrain_job *j = arg;
    const struct conf *c = j->snap->conf;
    const struct router_model *champion = j->snap->model;
    char err[512];
    struct storage_export_counts counts = {0};
    uint64_t t0 = daemon__now_ns();

    record_first_champion(j->snap);
    j->d = router_dataset_new(router_model_bits(champion));
    if (!j->d)
        goto out;
    for (size_t i = 0; i < c->n_base_data; i++)
        add_base(j, c->base_data[i]);
    size_t base = j->n_train;
    if (storage_export_training(c->db_path, add_logged, j, &counts, err, sizeof(err)) < 0) {
        log_warnx("retrain: cannot read the outcome log: %s", err);
        goto out;
    }
    const char *weak_name = tier_head(c, 0), *strong_name = tier_head(c, c->n_tiers - 1);
    int weak = router_dataset_head_find(j->d, weak_name),
        strong = router_dataset_head_find(j->d, strong_name);
    if (weak < 0 || strong < 0 || base + j->n_log == 0) {
        log_info("retrain: skipped: no labels for heads %s and %s yet", weak_name, strong_name);
        goto out;
    }

    struct router_train_opts o;
    router_train_opts_tuned(&o); /* as `triage train` does */
    o.weak = weak_name;
    o.strong = strong_name;
    struct router_model *challenger = router_train_log(j->d, j->train_idx, base, j->log_idx,
                                                       j->n_log, &o, err, sizeof(err));
    if (!challenger) {
        log_warnx("retrain: training failed: %s", err);
        goto out;
    }
    size_t n_champ = 0, n_chal = 0;
    /* the champion's heads are found by name inside router_dataset_score's result: both
     * models are scored on the same prompts, by their own score */
    struct daemon__promotion pr = {0};
    pr.apgr_champ = holdout_apgr(j, champion, weak, strong, &n_champ);
    pr.apgr_chal = holdout_apgr(j, challenger, weak, strong, &n_chal);
    pr.n_prompts = n_chal;
    /* the escalation part on the judged fast answers of the same held-out prompts */
    daemon__promotion_decide(c, champion, challenger, j->d, j->hold_idx, j->n_hold, weak_name, &pr);
    record_and_promote(j, champion, challenger, &pr, base, t0);
    router_model_unref(pr.promoted);
    router_model_unref(challenger);
out:
    router_dataset_destroy(j->d);
    free(j->train_idx);
    free(j->log_idx);
    free(j->hold_idx);
    daemon__snapshot_put(j->snap);
    free(j);
    atomic_store(&rt.done, 1);
    return NULL;
}

/* The champion watch: with a shared (PostgreSQL) log another replica may promote a
 * model; every CHAMPION_WATCH_S seconds a short thread reads the registry's champion
 * and reloads when it is not the model served (and its file is here). */
#define CHAMPION_WATCH_S 5

static struct {
    pthread_t thread;
    int running;
    atomic_int done;
    unsigned ticks;
    char requested[80]; /* the version a reload was asked for: asked once */
} cw;

static void *
watch_main(void *arg)
{
    struct daemon_snapshot *s = arg;
    struct storage_model_info m;
    char err[256];
    struct stat st;

    if (storage_model_champion(s->conf->db_path, &m, err, sizeof(err)) == 0 &&
        strcmp(m.version, router_model_version(s->model)) && strcmp(m.version, cw.requested) &&
        stat(m.path, &st) == 0) {
        snprintf(cw.requested, sizeof(cw.requested), "%s", m.version);
        log_info("registry: the champion is now %s (promoted by another replica or triage "
                 "models): reloading", m.version);
        daemon__request_reload();
    }
    daemon__snapshot_put(s);
    atomic_store(&cw.done, 1);
    return NULL;
}

static void
watch_tick(struct daemon_snapshot *s)
{
    if (cw.running && atomic_load(&cw.done)) {
        pthread_join(cw.thread, NULL);
        cw.running = 0;
    }
    const char *db = s->conf->db_path;
    if (cw.running || !db || strncmp(db, "postgres", 8) || ++cw.ticks % CHAMPION_WATCH_S)
        return;
    atomic_store(&cw.done, 0);
    atomic_fetch_add(&s->refs, 1); /* the thread's reference */
    if (pthread_create(&cw.thread, NULL, watch_main, s) == 0)
        cw.running = 1;
    else
        daemon__snapshot_put(s);
}

void
daemon__retrain_tick(void)
{
    struct daemon_snapshot *s = daemon__snapshot_get();

    if (!s)
        return;
    watch_tick(s);
    const struct conf *c = s->conf;
    uint64_t judged = daemon__learn_judged();
    pthread_mutex_lock(&rt.lock);
    if (rt.running && atomic_load(&rt.done)) {
        pthread_join(rt.thread, NULL);
        rt.running = 0;
    }
    int start = !rt.running && c->retrain_every && c->db_path && c->n_tiers >= 2 &&
                judged - rt.judged_at_start >= c->retrain_every;
    if (start) {
        struct retrain_job *j = calloc(1, sizeof(*j));
        if (!j)
            abort();
        j->snap = s;
        s = NULL; /* the job's reference now */
        atomic_store(&rt.done, 0);
        if (pthread_create(&rt.thread, NULL, retrain_main, j) == 0) {
            rt.running = 1;
            rt.judged_at_start = judged;
        } else {
            log_warnx("retrain: cannot start a thread");
            daemon__snapshot_put(j->snap);
            free(j);
        }
    }
    pthread_mutex_unlock(&rt.lock);
    daemon__snapshot_put(s);
}

void
daemon__retrain_stop(void)
{
    if (cw.running) { /* the main loop has stopped: no tick races this */
        pthread_join(cw.thread, NULL);
        cw.running = 0;
    }
    pthread_mutex_lock(&rt.lock);
    if (rt.running) {
        pthread_join(rt.thread, NULL); /* a retrain takes seconds; a stop waits for it */
        rt.running = 0;
    }
    pthread_mutex_unlock(&rt.lock);
}

const char *
daemon__retrain_champion_path(const struct conf *c, char *buf, size_t len)
{
    struct storage_model_info m;
    char err[256];
    struct stat st;

    if (!c->db_path || storage_model_champion(c->db_path, &m, err, sizeof(err)) < 0 ||
        stat(m.path, &st) < 0)
        return c->model_path;
    snprintf(buf, len, "%s", m.path);
    return buf;
}

void
daemon__retrain_gauges(uint64_t *runs, uint64_t *promotions)
{
    *runs = atomic_load(&rt.runs);
    *promotions = atomic_load(&rt.promotions);
}

int
daemon__retrain_running(void)
{
    pthread_mutex_lock(&rt.lock);
    int running = rt.running && !atomic_load(&rt.done);
    pthread_mutex_unlock(&rt.lock);
    return running;
}
