/* demo_learn.c - `triage demo --learn`: the learning loop on GSM8K, offline. Starts a
 * replay judge and a triaged of its own (fresh outcome log and model registry, the
 * shipped model, [learning] on) in front of the configured fast and strong backends
 * (./run.sh's replays), sends half of GSM8K through it step by step while the daemon
 * labels (shadow calls + judge) and retrains, and after each step scores the champion
 * of the registry on the other half, which never flows: the learning curve of judged
 * prompts -> APGR and cost at equal quality, against the shipped model and random
 * routing, as a table and an SVG; and the cascade's curve: the champion's escalation model
 * scoring the fast tier's recorded answers of the unseen half, and what the cascade then
 * costs at the same quality. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <zlib.h>

#include "config.h"
#include "cli.h"
#include "conf.h"
#include "demo_run.h"
#include "grade.h"
#include "prompt_features.h"
#include "router.h"
#include "storage.h"

#define CPT_SHARE 0.8 /* cost is compared where routing recovers 80% of the quality gap */

struct item {
    char *prompt;
    double q[2];   /* did the fast / strong tier's model answer it right (1 or 0) */
    char *fast;    /* the fast tier's model's recorded answer, NULL without one */
};

/* One point of the curve: the champion after some judged prompts. */
struct point {
    unsigned long sent, judged;
    char version[80];
    double apgr, cpt80;         /* on the unseen half */
    double esc80;               /* the cascade's escalated share for 80% of the gain, NAN
                                 * without the fast tier's answers */
    char note[160];             /* what the retrain of this step decided */
};

struct learn {
    struct conf *conf;
    int tier[2];                /* backend index of the fast and the strong tier */
    struct item *items;
    size_t n_items, n_flow;     /* items [0, n_flow) flow, in whole steps */
    size_t test_from;           /* items [test_from, n_items) are the unseen half */
    char dir[PATH_MAX];         /* the demo's state: config, log, models, daemon log */
    char db[PATH_MAX + 16];
    char url[64];               /* the demo's triaged */
    pid_t judge_pid, triaged_pid;
    /* served answers, for the mean cost of a call to each tier */
    double cost_sum[2];
    unsigned long calls[2], errors;
    struct point *points;
    size_t n_points;
    double shipped_apgr, shipped_cpt80, shipped_esc80;
    unsigned long promotions;
    unsigned step, concurrency, min_holdout;
    size_t send_from;           /* send_items: the first item being sent */
};

static volatile sig_atomic_t interrupted; /* Ctrl-C or SIGTERM: stop what runs, clean up */

/* ---- data ---------------------------------------------------------------------------- */

/* 1 or 0: whether model answered rec right, by its recorded "correct" flag, else by
 * grading its recorded answer; -1 when the record has neither. */
static int
correct_of(json_t *rec, const char *model, double reference)
{
    json_t *c = json_object_get(json_object_get(rec, "correct"), model);
    const char *answer = json_string_value(json_object_get(json_object_get(rec, "answers"), model));

    if (json_is_boolean(c))
        return json_is_true(c);
    if (answer)
        return grade_is_correct(answer, reference);
    return -1;
}

/* Loads prompts with both tiers' correctness, shuffled by seed. Returns 0 or -1. */
static int
load_items(struct learn *L, const char *path, size_t limit, uint64_t seed)
{
    gzFile f = gzopen(path, "rb");
    const char *models[2] = {L->conf->backends[L->tier[0]].model,
                             L->conf->backends[L->tier[1]].model};
    size_t cap = 0, line_cap = 0;
    char *buf = NULL;
    unsigned long lineno = 0;

    if (!f) {
        cli_errorf("demo", "%s: %s", path, strerror(errno ? errno : ENOENT));
        return -1;
    }
    while (demo_gz_line(f, &buf, &line_cap) >= 0) {
        lineno++;
        json_t *j = json_loads(buf, 0, NULL);
        const char *prompt = json_string_value(json_object_get(j, "prompt"));
        const char *ref = json_string_value(json_object_get(j, "reference"));
        if (!j) {
            if (strspn(buf, " \r\n") == strlen(buf))
                continue;
            cli_errorf("demo", "%s:%lu: not JSON", path, lineno);
            goto fail;
        }
        int q0 = ref ? correct_of(j, models[0], strtod(ref, NULL)) : -1;
        int q1 = ref ? correct_of(j, models[1], strtod(ref, NULL)) : -1;
        if (!prompt || q0 < 0 || q1 < 0) {
            cli_errorf("demo",
                       "%s:%lu: --learn needs each record's prompt, reference and the answers (or "
                       "\"correct\") of models %s and %s (the tiers' models in the config)",
                       path, lineno, models[0], models[1]);
            json_decref(j);
            goto fail;
        }
        if (L->n_items == cap) {
            cap = cap ? cap * 2 : 1024;
            L->items = realloc(L->items, cap * sizeof(*L->items));
            if (!L->items)
                abort(); /* out of memory */
        }
        struct item *it = &L->items[L->n_items++];
        it->prompt = strdup(prompt);
        if (!it->prompt)
            abort();
        it->q[0] = q0;
        it->q[1] = q1;
        const char *fast = json_string_value(json_object_get(json_object_get(j, "answers"), models[0]));
        it->fast = fast ? strdup(fast) : NULL;
        if (fast && !it->fast)
            abort();
        json_decref(j);
    }
    gzclose(f);
    free(buf);
    /* a seeded Fisher-Yates shuffle (splitmix64), then the first limit */
    for (size_t i = L->n_items; i > 1; i--) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        size_t k = (size_t)((z ^ (z >> 31)) % i);
        struct item t = L->items[i - 1];
        L->items[i - 1] = L->items[k];
        L->items[k] = t;
    }
    while (limit && L->n_items > limit) {
        free(L->items[--L->n_items].prompt);
        free(L->items[L->n_items].fast);
    }
    if (L->n_items < 20) {
        cli_errorf("demo", "%s: %zu prompts; --learn needs at least 20", path, L->n_items);
        return -1;
    }
    L->test_from = L->n_items / 2;
    return 0;
fail:
    gzclose(f);
    free(buf);
    return -1;
}

/* ---- the judge and the daemon -------------------------------------------------------- */

/* Starts argv[0] with argv, stdout and stderr to files in the demo's folder. Returns the
 * pid or -1. */
static pid_t
spawn(const char *const *argv, const char *out, const char *err)
{
    pid_t pid = fork();

    if (pid < 0) {
        cli_errorf("demo", "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        FILE *o = freopen(out, "w", stdout), *e = freopen(err, "w", stderr);
        (void)o;
        (void)e;
        setpgid(0, 0); /* the terminal's Ctrl-C reaches the demo, which stops these */
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

static void
stop(pid_t *pid)
{
    if (*pid <= 0)
        return;
    kill(*pid, SIGTERM);
    for (int i = 0; i < 300 && waitpid(*pid, NULL, WNOHANG) == 0; i++)
        usleep(20000);
    if (waitpid(*pid, NULL, WNOHANG) == 0) {
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
    }
    *pid = 0;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits up to 10 s for "listening on PORT" in path; returns the port or 0. */
static unsigned
wait_port(const char *path, pid_t pid)
{
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(path, "r");
        unsigned port = 0;
        if (f) {
            char line[256];
            while (fgets(line, sizeof(line), f))
                if (sscanf(line, "listening on %u", &port) == 1)
                    break;
            fclose(f);
        }
        if (port)
            return port;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return 0;
        sleep_ms(50);
    }
    return 0;
}

static unsigned
free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    unsigned port = 0;

    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* The triage binary's folder, for its replay and a triaged beside it. */
static int
self_dir(char *out, size_t len)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

    if (n <= 0)
        return -1;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    snprintf(out, len, "%s", exe);
    return 0;
}

/* triaged beside triage (installed), or in the build tree's daemon/. */
static int
find_triaged(char *out, size_t len)
{
    char dir[PATH_MAX];

    if (self_dir(dir, sizeof(dir)) < 0)
        return -1;
    if (snprintf(out, len, "%s/triaged", dir) < (int)len && access(out, X_OK) == 0)
        return 0;
    if (snprintf(out, len, "%s/../daemon/triaged", dir) < (int)len && access(out, X_OK) == 0)
        return 0;
    return -1;
}

static void
put_backend(FILE *f, const struct conf_backend *b, const char *name, const char *url)
{
    fprintf(f, "[backend %s]\nurl = %s\nmodel = %s\n", name, url ? url : b->url, b->model);
    if (b->head)
        fprintf(f, "head = %s\n", b->head);
    fprintf(f, "price_input = %.17g\nprice_output = %.17g\n", b->price_input, b->price_output);
}

/* Writes the demo's triaged config. Returns 0 or -1. */
static int
write_config(struct learn *L, const char *path, unsigned port, unsigned judge_port,
             double shadow_rate, const char *base_data)
{
    const struct conf *c = L->conf;
    const struct conf_backend *fast = &c->backends[L->tier[0]], *strong = &c->backends[L->tier[1]];
    FILE *f = fopen(path, "w");
    char judge_url[64];

    if (!f) {
        cli_errorf("demo", "%s: %s", path, strerror(errno));
        return -1;
    }
    snprintf(judge_url, sizeof(judge_url), "http://127.0.0.1:%u/v1", judge_port);
    fprintf(f, "# triage demo --learn: written for one run\n"
               "[server]\nlisten = 127.0.0.1\nport = %u\nworkers = 1\nlog_level = info\n"
               "[router]\nmodel = %s\naliases = triage\ntiers = %s, %s\n",
            port, c->model_path, fast->name, strong->name);
    if (c->strong_share >= 0)
        fprintf(f, "strong_share = %.17g\n", c->strong_share);
    else
        fprintf(f, "threshold = %.17g\n", c->threshold);
    fprintf(f, "[storage]\npath = %s\nstore_prompts = full\nflush_interval_ms = 50\n", L->db);
    fprintf(f, "[learning]\nshadow_rate = %.17g\njudge = demo-judge\n"
               "shadow_budget_usd_per_day = 10000\nmax_concurrent = 16\nretrain_every = %u\n"
               "min_holdout = %u\n",
            shadow_rate, L->step, L->min_holdout);
    if (base_data)
        fprintf(f, "base_data = %s\n", base_data);
    put_backend(f, fast, fast->name, NULL);
    put_backend(f, strong, strong->name, NULL);
    /* a strong model grades, at the strong tier's prices */
    fprintf(f, "[backend demo-judge]\nurl = %s\nmodel = replay-judge\n"
               "price_input = %.17g\nprice_output = %.17g\n",
            judge_url, strong->price_input, strong->price_output);
    if (fclose(f) != 0) {
        cli_errorf("demo", "%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- HTTP ---------------------------------------------------------------------------- */

/* The value of metric name (no labels) in a Prometheus text page, or NAN. */
static double
metric(const char *page, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = page; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, name, n) && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return NAN;
}

static double
judged_now(const struct learn *L)
{
    char *page = demo_http_get(L->url, "/metrics");
    double v = metric(page, "triage_learning_judged_prompts_total");

    free(page);
    return v;
}

static char *
request_body(void *arg, size_t k)
{
    const struct learn *L = arg;

    return demo_chat_body("triage", L->items[L->send_from + k].prompt);
}

static void
request_done(void *arg, size_t k, const struct demo_reply *r)
{
    struct learn *L = arg;
    json_t *resp = r->rc == CURLE_OK && r->status == 200 ? json_loadb(r->body, r->len, 0, NULL)
                                                         : NULL;
    int b = conf_backend_find(L->conf, r->backend);
    json_t *u = json_object_get(resp, "usage");

    (void)k;
    if (!resp || b < 0) {
        L->errors++;
    } else {
        for (int t = 0; t < 2; t++) {
            if (b != L->tier[t])
                continue;
            const struct conf_backend *be = &L->conf->backends[b];
            double in = (double)json_integer_value(json_object_get(u, "prompt_tokens"));
            double out = (double)json_integer_value(json_object_get(u, "completion_tokens"));
            L->cost_sum[t] += (in * be->price_input + out * be->price_output) / 1e6;
            L->calls[t]++;
        }
    }
    json_decref(resp);
}

/* Sends items [from, to) through the demo's triaged as a client would (model "triage"). */
static void
send_items(struct learn *L, size_t from, size_t to)
{
    struct demo_post p = {
        .url = L->url,
        .total = to - from,
        .concurrency = L->concurrency,
        .timeout_ms = 600000L,
        .stop = &interrupted,
        .body = request_body,
        .done = request_done,
        .arg = L,
    };

    L->send_from = from;
    demo_post_all(&p);
}

/* ---- waiting for the loop ------------------------------------------------------------ */

/* Waits until the daemon has judged `want` prompts, or nothing moved for 30 s. Returns
 * the judged count. */
static unsigned long
wait_judged(struct learn *L, unsigned long want)
{
    double last = -1, now = 0;
    int still = 0;

    while ((now = judged_now(L)) < (double)want && still < 300 && !interrupted) {
        still = now == last ? still + 1 : 0;
        last = now;
        sleep_ms(100);
    }
    return isnan(now) ? 0 : (unsigned long)now;
}

/* /v1/stats "models" (a new reference), or NULL. */
static json_t *
stats_models(const struct learn *L)
{
    char *page = demo_http_get(L->url, "/v1/stats?window=24h");
    json_t *j = page ? json_loads(page, 0, NULL) : NULL;
    json_t *m = json_incref(json_object_get(j, "models"));

    free(page);
    json_decref(j);
    return m;
}

/* Waits for the retrains that `judged` prompts start (one per step) to finish: the
 * daemon's retrain tick runs once a second, so a retrain is under way within about a
 * second of being due. */
static void
wait_retrains(struct learn *L, unsigned long judged)
{
    json_int_t due = (json_int_t)(judged / L->step);
    int idle = 0;

    for (int i = 0; i < 6000 && !interrupted; i++) { /* 10 min at most */
        json_t *m = stats_models(L);
        json_int_t runs = json_integer_value(json_object_get(m, "retrains"));
        int busy = json_is_true(json_object_get(m, "retraining"));
        json_decref(m);
        if (!m || (runs >= due && !busy))
            return;
        idle = busy ? 0 : idle + 1;
        if (idle > 30) /* 3 s due and none running: it was skipped (the log says why) */
            return;
        sleep_ms(100);
    }
}

/* ---- evaluation ---------------------------------------------------------------------- */

/* APGR and CPT(80%) of model on the unseen half. Returns 0 or -1. */
static int
evaluate(const struct learn *L, const struct router_model *m, double *apgr, double *cpt80)
{
    size_t n = L->n_items - L->test_from;
    double *score = malloc(n * sizeof(double)), *qw = malloc(n * sizeof(double)),
           *qs = malloc(n * sizeof(double));
    struct router_eval ev;
    int rc = -1;

    if (!score || !qw || !qs)
        abort();
    for (size_t i = 0; i < n; i++) {
        const struct item *it = &L->items[L->test_from + i];
        struct router_scores sc;
        score[i] = router_score_text(m, it->prompt, strlen(it->prompt), &sc) == 0 ? sc.score : 0;
        qw[i] = it->q[0];
        qs[i] = it->q[1];
    }
    if (router_eval_routing(score, qw, qs, n, &ev) == 0) {
        *apgr = ev.apgr;
        *cpt80 = ev.cpt80;
        rc = 0;
    }
    free(score);
    free(qw);
    free(qs);
    return rc;
}

static int
cmp_score_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The cascade on the unseen half with m's escalation model: the smallest share of fast
 * answers escalated (by escalation score, highest first) whose accuracy recovers
 * CPT_SHARE of the gap between the fast and the strong tier. Returns it, or NAN when the
 * fast tier's recorded answers are missing. */
static double
evaluate_cascade(const struct learn *L, const struct router_model *m)
{
    size_t n = L->n_items - L->test_from;
    double *key = malloc(2 * n * sizeof(double)), qw = 0, qs = 0, esc = NAN;

    if (!key)
        abort();
    for (size_t i = 0; i < n; i++) {
        const struct item *it = &L->items[L->test_from + i];
        float sig[FEATURES_N_ANSWER];
        double e;
        if (!it->fast)
            goto out;
        json_t *req = json_pack("{s:[{s:s,s:s}]}", "messages", "role", "user", "content", it->prompt);
        features_answer_signals(it->fast, strlen(it->fast), it->prompt, strlen(it->prompt), NULL,
                                NULL, 0, sig);
        if (router_escalation_score(m, req, it->fast, strlen(it->fast), sig, &e) < 0)
            e = 1; /* unscorable: escalated, as triaged does */
        json_decref(req);
        key[2 * i] = e;
        key[2 * i + 1] = it->q[1] - it->q[0]; /* what escalating it gains */
        qw += it->q[0];
        qs += it->q[1];
    }
    qsort(key, n, 2 * sizeof(double), cmp_score_desc);
    double want = qw + CPT_SHARE * (qs - qw), acc = qw;
    size_t k = 0;
    while (acc < want - 1e-9 && k < n)
        acc += key[2 * k++ + 1];
    esc = (double)k / (double)n;
out:
    free(key);
    return esc;
}

/* The newest retrained version of the registry. */
struct newest {
    struct storage_model_info m;
    int found;
};

static int
find_newest(const struct storage_model_info *m, void *arg)
{
    struct newest *n = arg;

    if (strcmp(m->source, "retrain") != 0)
        return 0;
    n->m = *m;
    n->found = 1;
    return 1;
}

/* Adds the curve's point after `sent` prompts: the registry's champion on the unseen
 * half, and what the step's retrain decided. Returns 0 or -1. */
static int
add_point(struct learn *L, unsigned long sent, unsigned long judged, int64_t step_start_ms)
{
    struct storage_model_info champ;
    struct newest nw = {.found = 0};
    char err[512];
    struct point *p;

    L->points = realloc(L->points, (L->n_points + 1) * sizeof(*L->points));
    if (!L->points)
        abort();
    p = &L->points[L->n_points];
    memset(p, 0, sizeof(*p));
    p->sent = sent;
    p->judged = judged;
    const char *path = L->conf->model_path;
    if (storage_model_champion(L->db, &champ, err, sizeof(err)) == 0)
        path = champ.path;
    struct router_model *m = router_model_load(path, err, sizeof(err));
    if (!m) {
        cli_errorf("demo", "%s", err);
        return -1;
    }
    snprintf(p->version, sizeof(p->version), "%s", router_model_version(m));
    if (evaluate(L, m, &p->apgr, &p->cpt80) < 0)
        p->apgr = p->cpt80 = NAN;
    p->esc80 = evaluate_cascade(L, m);
    router_model_unref(m);
    if (step_start_ms && storage_model_list(L->db, find_newest, &nw, err, sizeof(err)) >= 0 &&
        nw.found && nw.m.created_ms >= step_start_ms) {
        int promoted = strcmp(nw.m.status, "candidate") != 0;
        if (promoted)
            L->promotions++;
        snprintf(p->note, sizeof(p->note), "%s: held-out APGR %.3f vs %.3f on %lld prompts%s",
                 promoted ? "promoted" : "kept", nw.m.apgr, nw.m.parent_apgr,
                 (long long)nw.m.holdout_n,
                 promoted ? ""
                 : nw.m.holdout_n < (int64_t)L->min_holdout ? " (too few held out)"
                                                             : " (not better by the margin)");
    } else if (step_start_ms) {
        snprintf(p->note, sizeof(p->note), "no retrain (see the daemon log)");
    } else {
        snprintf(p->note, sizeof(p->note), "the shipped model");
    }
    L->n_points++;
    return 0;
}

/* ---- output -------------------------------------------------------------------------- */

/* Mean cost of a call to tier t in USD (the answers the demo got), or NAN. */
static double
call_cost(const struct learn *L, int t)
{
    return L->calls[t] ? L->cost_sum[t] / (double)L->calls[t] : NAN;
}

/* USD per 1,000 prompts when a share s of them go to strong. */
static double
usd_per_1k(const struct learn *L, double s)
{
    return 1000 * (s * call_cost(L, 1) + (1 - s) * call_cost(L, 0));
}

/* USD per 1,000 prompts of the cascade escalating a share e: every prompt pays the fast
 * call, the escalated ones the strong call too. */
static double
cascade_usd_per_1k(const struct learn *L, double e)
{
    return 1000 * (call_cost(L, 0) + e * call_cost(L, 1));
}

static void
print_row(const struct learn *L, const struct point *p)
{
    printf("| %lu | %lu | %.16s | %.3f | %.1f%% | %.3g | %.1f%% | %.3g | %s |\n", p->sent,
           p->judged, p->version, p->apgr, 100 * p->cpt80, usd_per_1k(L, p->cpt80),
           100 * p->esc80, cascade_usd_per_1k(L, p->esc80), p->note);
}

/* A value as the panel shows it: APGR to 3 decimals, dollars to 3 digits. */
static void
fmt_value(char *out, size_t len, double v, int dollars)
{
    if (dollars)
        snprintf(out, len, "%.3g", v);
    else
        snprintf(out, len, "%.3f", v);
}

/* One panel: the curve of value(point) over judged prompts, with the shipped model's
 * and random routing's levels, and a marker at each promotion. */
static void
svg_panel(FILE *f, const struct learn *L, double top, double height, const char *title,
          double (*value)(const struct learn *, const struct point *), double shipped,
          double random, int dollars)
{
    const double W = 760, Lm = 70, Rm = 190, B = 36;
    double xmax = 1, ymin = fmin(shipped, random), ymax = fmax(shipped, random);

    for (size_t i = 0; i < L->n_points; i++) {
        double v = value(L, &L->points[i]);
        xmax = fmax(xmax, (double)L->points[i].judged);
        if (!isnan(v))
            ymin = fmin(ymin, v), ymax = fmax(ymax, v);
    }
    double pad = fmax((ymax - ymin) * 0.12, 1e-3);
    ymin -= pad;
    ymax += pad;
    double y0 = top + 24, y1 = top + height - B;
#define X(v) (Lm + (v) / xmax * (W - Lm - Rm))
#define Y(v) (y1 - ((v) - ymin) / (ymax - ymin) * (y1 - y0))
    char lab[96];
    demo_svg_text(f, Lm, top + 14, "start", "font-size=\"14\"", title);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
               "stroke=\"#333\"/>\n", Lm, y0, W - Lm - Rm, y1 - y0);
    for (int k = 0; k <= 4; k++) {
        double v = ymin + (ymax - ymin) * k / 4;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n",
                Lm, Y(v), W - Rm, Y(v));
        fmt_value(lab, sizeof(lab), v, dollars);
        demo_svg_text(f, Lm - 6, Y(v) + 4, "end", NULL, lab);
    }
    for (int k = 0; k <= 5; k++) {
        double v = xmax * k / 5;
        snprintf(lab, sizeof(lab), "%.0f", v);
        demo_svg_text(f, X(v), y1 + 16, "middle", NULL, lab);
    }
    demo_svg_text(f, (Lm + W - Rm) / 2, y1 + 32, "middle", NULL, "judged prompts (shadow + judge labels)");
    /* promotions: where the model changed */
    for (size_t i = 0; i < L->n_points; i++)
        if (!strncmp(L->points[i].note, "promoted", 8))
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#f4a261\" "
                       "stroke-dasharray=\"3 3\"/>\n",
                    X((double)L->points[i].judged), y0, X((double)L->points[i].judged), y1);
    const struct {
        double v;
        const char *name, *color, *dash;
    } levels[] = {{shipped, "shipped model", "#457b9d", "6 4"}, {random, "random routing", "#999", "2 4"}};
    for (size_t k = 0; k < 2; k++) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                   "stroke-width=\"1.5\" stroke-dasharray=\"%s\"/>\n",
                Lm, Y(levels[k].v), W - Rm, Y(levels[k].v), levels[k].color, levels[k].dash);
        snprintf(lab, sizeof(lab), "%s (", levels[k].name);
        fmt_value(lab + strlen(lab), sizeof(lab) - strlen(lab), levels[k].v, dollars);
        strncat(lab, ")", sizeof(lab) - strlen(lab) - 1);
        demo_svg_text(f, W - Rm + 8, Y(levels[k].v) + 4 + (k && fabs(Y(levels[0].v) - Y(levels[1].v)) < 14
                                                           ? (Y(levels[1].v) > Y(levels[0].v) ? 8 : -8)
                                                           : 0),
                 "start", NULL, lab);
    }
    fprintf(f, "<polyline fill=\"none\" stroke=\"#2a9d8f\" stroke-width=\"2.5\" points=\"");
    for (size_t i = 0; i < L->n_points; i++)
        if (!isnan(value(L, &L->points[i])))
            fprintf(f, "%.1f,%.1f ", X((double)L->points[i].judged), Y(value(L, &L->points[i])));
    fprintf(f, "\"/>\n");
    for (size_t i = 0; i < L->n_points; i++)
        if (!isnan(value(L, &L->points[i])))
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"#2a9d8f\"/>\n",
                    X((double)L->points[i].judged), Y(value(L, &L->points[i])));
    const struct point *last = &L->points[L->n_points - 1];
    if (!isnan(value(L, last))) {
        snprintf(lab, sizeof(lab), "learning triage (");
        fmt_value(lab + strlen(lab), sizeof(lab) - strlen(lab), value(L, last), dollars);
        strncat(lab, ")", sizeof(lab) - strlen(lab) - 1);
        demo_svg_text(f, W - Rm + 8, Y(value(L, last)) + 4, "start", "fill=\"#2a9d8f\"", lab);
    }
#undef X
#undef Y
}

static double
point_apgr(const struct learn *L, const struct point *p)
{
    (void)L;
    return p->apgr;
}

static double
point_cost(const struct learn *L, const struct point *p)
{
    return usd_per_1k(L, p->cpt80);
}

static double
point_cascade_cost(const struct learn *L, const struct point *p)
{
    return cascade_usd_per_1k(L, p->esc80);
}

static int
write_svg(const struct learn *L, const char *path)
{
    FILE *f = fopen(path, "w");
    char title[160];

    if (!f) {
        cli_errorf("demo", "%s: %s", path, strerror(errno));
        return -1;
    }
    int cascade = !isnan(L->shipped_esc80) && !isnan(usd_per_1k(L, 0.5));
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"%d\" "
               "viewBox=\"0 0 760 %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            cascade ? 910 : 620, cascade ? 910 : 620);
    snprintf(title, sizeof(title),
             "triage demo --learn: the router learns GSM8K from judge labels (%zu unseen prompts)",
             L->n_items - L->test_from);
    demo_svg_text(f, 380, 24, "middle", "font-size=\"15\"", title);
    svg_panel(f, L, 40, 290, "APGR on the prompts not yet seen (higher is better)", point_apgr,
              L->shipped_apgr, 0.5, 0);
    if (!isnan(usd_per_1k(L, 0.5)))
        svg_panel(f, L, 330, 290,
                  "USD per 1,000 prompts at 80% of strong's quality gain (lower is better)",
                  point_cost, usd_per_1k(L, L->shipped_cpt80), usd_per_1k(L, CPT_SHARE), 1);
    if (cascade)
        svg_panel(f, L, 620, 290,
                  "The cascade: USD per 1,000 prompts at 80% of strong's quality gain",
                  point_cascade_cost, cascade_usd_per_1k(L, L->shipped_esc80),
                  usd_per_1k(L, CPT_SHARE), 1);
    return demo_svg_close(f, path);
}

/* ---- main ---------------------------------------------------------------------------- */

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: triage demo --learn [--config FILE] [--data FILE] [--limit N] [--step N]\n"
            "                   [--shadow-rate P] [--min-holdout N] [--base-data LIST]\n"
            "                   [--concurrency N] [--seed N] [--svg FILE] [--triaged PATH]\n"
            "                   [--keep]\n"
            "\n"
            "The learning loop on GSM8K, offline. Starts `triage replay --judge` and a triaged\n"
            "of its own (a fresh outcome log and model registry, the config's model, [learning]\n"
            "on) in front of the config's fast and strong backends (./run.sh's replays), then\n"
            "sends the first half of the prompts through it in whole steps of --step, as a\n"
            "client would (model \"triage\"). The daemon shadows each prompt to the other\n"
            "tier, the judge grades both answers, and every --step judged prompts the daemon\n"
            "retrains and promotes the challenger only when it beats the champion on\n"
            "held-out judged prompts. After each step the\n"
            "champion is scored on the other half, which never flows: the learning curve of\n"
            "APGR and of the cost at 80%% of strong's quality gain (USD per 1,000 prompts, from\n"
            "the answers' usage and the config's prices), against the shipped model and random\n"
            "routing. Prints a markdown table and writes the curve as SVG.\n"
            "\n"
            "  --config FILE        tiers, backends, prices, model (default %s)\n"
            "  --data FILE          prompts, references and both tiers' recorded answers\n"
            "                       (default %s)\n"
            "  --limit N            use N prompts in all, half flowing (default all)\n"
            "  --step N             prompts per step = the daemon's retrain_every (default 100)\n"
            "  --shadow-rate P      [learning] shadow_rate (default 1)\n"
            "  --min-holdout N      [learning] min_holdout (default 20)\n"
            "  --base-data LIST     [learning] base_data (default: the daemon's, the shipped\n"
            "                       sets; none = the log alone)\n"
            "  --concurrency N      requests in flight (default 8)\n"
            "  --seed N             which prompts flow (a seeded shuffle; default 1)\n"
            "  --svg FILE           where to write the curve (default triage-learn.svg)\n"
            "  --triaged PATH       the daemon to start (default: beside triage)\n"
            "  --keep               keep the demo's folder (config, log, models, daemon log)\n"
            "\n"
            "Offline: ./run.sh in one terminal, then: triage demo --learn\n",
            demo_default_conf(), demo_default_data());
}

static int
parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;

    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        cli_errorf("demo", "bad number %s (expected %g..%g)", s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* Removes the demo's folder: its files and the models the daemon wrote. */
static void
remove_dir(const char *dir)
{
    static const char *const sub[] = {"/models", ""};
    char path[PATH_MAX * 2];

    for (size_t i = 0; i < 2; i++) {
        char d[PATH_MAX + 16];
        snprintf(d, sizeof(d), "%s%s", dir, sub[i]);
        DIR *h = opendir(d);
        struct dirent *e;
        while (h && (e = readdir(h)) != NULL) {
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(path, sizeof(path), "%s/%s", d, e->d_name);
                unlink(path);
            }
        }
        if (h)
            closedir(h);
        rmdir(d);
    }
}

static void
on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

int
cli_demo_learn(int argc, char **argv)
{
    static const struct option opts[] = {
        {"learn", no_argument, NULL, 'L'},
        {"config", required_argument, NULL, 'c'},
        {"data", required_argument, NULL, 'd'},
        {"limit", required_argument, NULL, 'n'},
        {"step", required_argument, NULL, 'e'},
        {"shadow-rate", required_argument, NULL, 'r'},
        {"min-holdout", required_argument, NULL, 'm'},
        {"base-data", required_argument, NULL, 'b'},
        {"concurrency", required_argument, NULL, 'j'},
        {"seed", required_argument, NULL, 'S'},
        {"svg", required_argument, NULL, 's'},
        {"triaged", required_argument, NULL, 't'},
        {"keep", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct learn L = {.step = 100, .concurrency = 8, .min_holdout = 20};
    const char *conf_path = demo_default_conf(), *data = demo_default_data();
    const char *svg = "triage-learn.svg", *base_data = NULL, *triaged = NULL;
    double limit = 0, shadow_rate = 1, v, seed = 1;
    int keep = 0, ch, rc = 1;
    char err[512], triaged_buf[PATH_MAX], self[PATH_MAX], path[PATH_MAX + 64];

    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'L': break;
        case 'c': conf_path = optarg; break;
        case 'd': data = optarg; break;
        case 'b': base_data = optarg; break;
        case 's': svg = optarg; break;
        case 't': triaged = optarg; break;
        case 'k': keep = 1; break;
        case 'n':
            if (parse_num(optarg, 20, 1e9, &limit) < 0)
                return 2;
            break;
        case 'e':
            if (parse_num(optarg, 5, 1e6, &v) < 0)
                return 2;
            L.step = (unsigned)v;
            break;
        case 'r':
            if (parse_num(optarg, 0.01, 1, &shadow_rate) < 0)
                return 2;
            break;
        case 'm':
            if (parse_num(optarg, 1, 1e6, &v) < 0)
                return 2;
            L.min_holdout = (unsigned)v;
            break;
        case 'j':
            if (parse_num(optarg, 1, 512, &v) < 0)
                return 2;
            L.concurrency = (unsigned)v;
            break;
        case 'S':
            if (parse_num(optarg, 0, 1e18, &seed) < 0)
                return 2;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        cli_errorf("demo", "unexpected argument %s", argv[optind]);
        return 2;
    }
    if (!triaged) {
        if (find_triaged(triaged_buf, sizeof(triaged_buf)) < 0) {
            cli_errorf("demo", "no triaged beside triage: give --triaged PATH");
            return 1;
        }
        triaged = triaged_buf;
    }
    if (self_dir(self, sizeof(self)) < 0) {
        cli_errorf("demo", "cannot find the triage binary (/proc/self/exe)");
        return 1;
    }
    strncat(self, "/triage", sizeof(self) - strlen(self) - 1);
    L.conf = conf_load_flags(conf_path, CONF_LOAD_SKIP_KEYS, err, sizeof(err));
    if (!L.conf) {
        cli_errorf("demo", "%s", err);
        return 1;
    }
    if (L.conf->n_tiers < 2) {
        cli_errorf("demo", "%s: needs two tiers", conf_path);
        goto out_conf;
    }
    L.tier[0] = (int)L.conf->tiers[0].backend;
    L.tier[1] = (int)L.conf->tiers[L.conf->n_tiers - 1].backend;
    if (load_items(&L, data, (size_t)limit, (uint64_t)seed) < 0)
        goto out_conf;
    /* whole steps of the first half: each ends in a retrain */
    L.n_flow = L.test_from / L.step * L.step;
    if (L.n_flow == 0) {
        cli_errorf("demo", "--step %u is more than half of the %zu prompts", L.step, L.n_items);
        rc = 2;
        goto out_conf;
    }
    snprintf(L.dir, sizeof(L.dir), "/tmp/triage-learn-XXXXXX");
    if (!mkdtemp(L.dir)) {
        cli_errorf("demo", "mkdtemp: %s", strerror(errno));
        goto out_conf;
    }
    snprintf(L.db, sizeof(L.db), "%s/learn.db", L.dir);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    /* the judge: grades each answer by its final number against the reference */
    char out[PATH_MAX + 16], errf[PATH_MAX + 16];
    snprintf(out, sizeof(out), "%s/judge.out", L.dir);
    snprintf(errf, sizeof(errf), "%s/judge.err", L.dir);
    const char *judge_argv[] = {self, "replay", "--judge", "--data", data, "--port", "0", NULL};
    L.judge_pid = spawn(judge_argv, out, errf);
    unsigned judge_port = L.judge_pid > 0 ? wait_port(out, L.judge_pid) : 0;
    if (!judge_port) {
        cli_errorf("demo", "the replay judge did not start (%s)", errf);
        goto out;
    }
    unsigned port = free_port();
    snprintf(L.url, sizeof(L.url), "http://127.0.0.1:%u", port);
    snprintf(path, sizeof(path), "%s/triage.conf", L.dir);
    if (!port || write_config(&L, path, port, judge_port, shadow_rate, base_data) < 0)
        goto out;
    snprintf(errf, sizeof(errf), "%s/triaged.log", L.dir);
    const char *triaged_argv[] = {triaged, "--config", path, NULL};
    L.triaged_pid = spawn(triaged_argv, "/dev/null", errf);
    char *up = NULL;
    for (int i = 0; i < 200 && L.triaged_pid > 0 && !(up = demo_http_get(L.url, "/healthz")); i++) {
        if (waitpid(L.triaged_pid, NULL, WNOHANG) == L.triaged_pid) {
            L.triaged_pid = 0;
            break;
        }
        sleep_ms(50);
    }
    if (!up) {
        cli_errorf("demo", "triaged did not start: see %s (kept)", errf);
        keep = 1;
        goto out;
    }
    free(up);
    fprintf(stderr,
            "triage demo --learn: %zu GSM8K prompts flow through a triaged of its own (%s), "
            "%u at a time, with shadow_rate = %g and a replay judge; the other %zu are the "
            "unseen half the curve is measured on. State: %s%s\n",
            L.n_flow, L.url, L.step, shadow_rate, L.n_items - L.test_from, L.dir,
            keep ? "" : " (removed at the end)");

    if (add_point(&L, 0, 0, 0) < 0)
        goto out;
    L.shipped_apgr = L.points[0].apgr;
    L.shipped_cpt80 = L.points[0].cpt80;
    L.shipped_esc80 = L.points[0].esc80;
    for (size_t sent = 0; sent < L.n_flow && !interrupted;) {
        size_t to = sent + L.step < L.n_flow ? sent + L.step : L.n_flow;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t start_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        unsigned long errors = L.errors;
        send_items(&L, sent, to);
        if (L.errors - errors == to - sent) {
            cli_errorf("demo", "every request of this step failed: are %s's backends running "
                               "(./run.sh)? The daemon's log: %s (kept)", conf_path, errf);
            keep = 1;
            goto out;
        }
        sent = to;
        unsigned long judged = wait_judged(&L, sent);
        wait_retrains(&L, judged);
        if (add_point(&L, sent, judged, start_ms) < 0)
            goto out;
        fprintf(stderr, "  %zu sent, %lu judged: APGR %.3f on the unseen half (%s)\n", sent,
                judged, L.points[L.n_points - 1].apgr, L.points[L.n_points - 1].note);
    }
    if (interrupted) {
        cli_errorf("demo", "interrupted");
        goto out;
    }

    /* what the loop cost and what the daemon reports */
    char *page = demo_http_get(L.url, "/v1/stats?window=24h");
    json_t *stats = page ? json_loads(page, 0, NULL) : NULL;
    free(page);
    json_t *ln = json_object_get(stats, "learning"), *models = json_object_get(stats, "models");

    printf("| prompts sent | judged | champion | APGR, unseen half | strong calls for 80%% of the "
           "gain | USD per 1k prompts there | cascade: escalated for 80%% of the gain | USD per 1k "
           "prompts there | retrain of the step |\n");
    printf("|---:|---:|---|---:|---:|---:|---:|---:|---|\n");
    for (size_t i = 0; i < L.n_points; i++)
        print_row(&L, &L.points[i]);
    const struct point *last = &L.points[L.n_points - 1];
    printf("\nOn the %zu prompts not yet seen: the shipped model's APGR %.3f, random routing 0.500; "
           "after %lu judged prompts the champion's %.3f (%+.3f).\n",
           L.n_items - L.test_from, L.shipped_apgr, last->judged, last->apgr,
           last->apgr - L.shipped_apgr);
    printf("Cost at 80%% of strong's quality gain (USD per 1,000 prompts): random %.3g, shipped "
           "%.3g, learned %.3g; always strong %.3g.\n",
           usd_per_1k(&L, CPT_SHARE), usd_per_1k(&L, L.shipped_cpt80), usd_per_1k(&L, last->cpt80),
           usd_per_1k(&L, 1));
    if (!isnan(last->esc80))
        printf("The cascade there (the champion's escalation model on the fast tier's answers, "
               "every prompt paying the fast call): shipped %.3g, learned %.3g USD per 1,000 "
               "prompts (%.0f%% escalated).\n",
               cascade_usd_per_1k(&L, L.shipped_esc80), cascade_usd_per_1k(&L, last->esc80),
               100 * last->esc80);
    if (L.promotions)
        printf("Promotions: %lu of %zu retrains.\n", L.promotions, L.n_points - 1);
    else
        printf("No promotion: %s.\n", L.n_points > 1 ? L.points[L.n_points - 1].note : "no step ran");
    if (ln)
        printf("Labels: %lld from the judge; learning spend %.4g USD (%lld shadow calls %.4g USD, "
               "%lld judge calls %.4g USD) for %zu client prompts.\n",
               (long long)json_integer_value(json_object_get(json_object_get(ln, "labels"), "judge")),
               json_number_value(json_object_get(ln, "shadow_cost_usd")) +
                   json_number_value(json_object_get(ln, "judge_cost_usd")),
               (long long)json_integer_value(json_object_get(ln, "shadow_calls")),
               json_number_value(json_object_get(ln, "shadow_cost_usd")),
               (long long)json_integer_value(json_object_get(ln, "judge_calls")),
               json_number_value(json_object_get(ln, "judge_cost_usd")), L.n_flow);
    if (models)
        printf("Model versions (/v1/stats): %zu, %zu changes of champion, serving %.16s.\n",
               json_array_size(json_object_get(models, "versions")),
               json_array_size(json_object_get(models, "changes")),
               json_string_value(json_object_get(models, "serving")));
    json_decref(stats);
    if (write_svg(&L, svg) < 0)
        goto out;
    printf("\nLearning curve: %s\n", svg);
    rc = 0;
out:
    stop(&L.triaged_pid);
    stop(&L.judge_pid);
    curl_global_cleanup();
    if (keep)
        fprintf(stderr, "triage demo --learn: kept %s\n", L.dir);
    else
        remove_dir(L.dir);
out_conf:
    for (size_t i = 0; i < L.n_items; i++) {
        free(L.items[i].prompt);
        free(L.items[i].fast);
    }
    free(L.items);
    free(L.points);
    conf_destroy(L.conf);
    router_thread_cleanup();
    return rc;
}
