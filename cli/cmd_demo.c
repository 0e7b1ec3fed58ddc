/* cmd_demo.c - `triage demo`: sends the GSM8K test prompts through a running triaged as
 * always-fast, always-strong and routed at a few thresholds, grades every answer, and
 * prints accuracy, cost and strong-call share, plus the cost-quality curve as SVG; and the
 * cascade: the always-fast run's answers scored by the model file's escalation model, the
 * escalated ones answered as the always-strong run answered them. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <zlib.h>

#include "config.h"
#include "cli.h"
#include "commands.h"
#include "conf.h"
#include "demo_run.h"
#include "grade.h"
#include "prompt_features.h"
#include "router.h"

#define MAX_RUNS 16

struct item {
    char *prompt;
    double reference;
    /* what the two fixed runs got, for the cascade: [0] always-fast, [1] always-strong */
    int answered[2], ok[2];
    double cost[2], secs[2];     /* USD; s */
    double escalation;           /* the fast answer's escalation score, NAN without one */
};

struct run {
    char label[64];              /* for the table */
    char model[96];              /* sent as "model" */
    double threshold;            /* routed runs; NAN for the fixed ones; escalate_at for the cascade */
    int cascade;                 /* replayed from the fixed runs' answers, no requests of its own */
    int fixed_backend;           /* index for the fixed runs, -1 for routed */
    unsigned long n, correct, errors, strong;
    unsigned long unknown;       /* answers whose backend (hence cost) is unknown */
    double cost;                 /* USD */
    double latency;              /* s, summed */
};

struct demo {
    struct conf *conf;
    struct item *items;
    size_t n_items;
    struct run runs[MAX_RUNS];
    size_t n_runs;
    int strong;                  /* backend index of the strong (last) tier */
    size_t score_run;            /* the run whose x-triage-score is kept in scores, or SIZE_MAX */
    struct router_model *model;  /* the config's model file, for the cascade; NULL without one */
    double *scores;              /* [n_items] */
    const char *url;
    char auth[512];
    long timeout_ms;
    size_t first_run;            /* run_all: the runs from this one on are being sent */
};

/* ---- data ---------------------------------------------------------------------------- */

static int
load_items(struct demo *d, const char *path, size_t limit)
{
    gzFile f = gzopen(path, "rb"); /* plain files are read as they are */
    char *line = NULL;
    size_t cap = 0, items_cap = 0;
    unsigned long lineno = 0;
    long len;
    int rc = -1;

    if (!f) {
        cli_errorf("demo", "%s: %s", path, strerror(errno ? errno : ENOENT));
        return -1;
    }
    while ((!limit || d->n_items < limit) && (len = demo_gz_line(f, &line, &cap)) >= 0) {
        lineno++;
        if (len <= 1)
            continue;
        json_t *j = json_loadb(line, (size_t)len, 0, NULL);
        const char *prompt = json_string_value(json_object_get(j, "prompt"));
        const char *ref = json_string_value(json_object_get(j, "reference"));
        if (!prompt || !ref) {
            cli_errorf("demo", "%s:%lu: needs \"prompt\" and \"reference\"", path, lineno);
            json_decref(j);
            goto fail;
        }
        if (d->n_items == items_cap) {
            items_cap = items_cap ? items_cap * 2 : 1024;
            d->items = realloc(d->items, items_cap * sizeof(*d->items));
            if (!d->items)
                abort();
        }
        d->items[d->n_items].prompt = strdup(prompt);
        if (!d->items[d->n_items].prompt)
            abort();
        d->items[d->n_items].reference = strtod(ref, NULL);
        memset(d->items[d->n_items].answered, 0, sizeof(d->items[d->n_items].answered));
        d->items[d->n_items].escalation = NAN;
        d->n_items++;
        json_decref(j);
    }
    if (d->n_items == 0) {
        cli_errorf("demo", "%s: no prompts", path);
        goto fail;
    }
    rc = 0;
fail:
    free(line);
    gzclose(f);
    return rc;
}

/* ---- requests ------------------------------------------------------------------------ */

/* Which backend answered run's request: the daemon's header, else the fixed run's, else
 * by upstream model. */
static int
answering_backend(const struct demo *d, size_t run, const char *backend, json_t *resp)
{
    int b = backend[0] ? conf_backend_find(d->conf, backend) : -1;

    if (b >= 0)
        return b;
    if (d->runs[run].fixed_backend >= 0)
        return d->runs[run].fixed_backend;
    const char *model = json_string_value(json_object_get(resp, "model"));
    for (size_t i = 0; model && i < d->conf->n_backends; i++)
        if (d->conf->backends[i].model && strcmp(d->conf->backends[i].model, model) == 0)
            return (int)i;
    return -1;
}

/* Keeps what fixed run j->run (0 fast, 1 strong) got for its item, and for the fast run
 * the answer's escalation score, as triaged's cascade would score it. */
static void
remember(struct demo *d, size_t run, size_t item, const json_t *resp, const char *content, int ok,
         int b, double secs)
{
    struct item *it = &d->items[item];
    int k = (int)run;

    it->answered[k] = 1;
    it->ok[k] = ok;
    it->secs[k] = secs;
    it->cost[k] = 0;
    if (b >= 0) {
        const json_t *u = json_object_get(resp, "usage");
        double in = (double)json_integer_value(json_object_get(u, "prompt_tokens"));
        double out = (double)json_integer_value(json_object_get(u, "completion_tokens"));
        it->cost[k] = (in * d->conf->backends[b].price_input + out * d->conf->backends[b].price_output) / 1e6;
    }
    if (k == 0 && d->model) {
        float sig[FEATURES_N_ANSWER];
        json_t *req = json_pack("{s:[{s:s,s:s}]}", "messages", "role", "user", "content", it->prompt);
        double e;
        if (features_answer_from_response(req, resp, sig) == 0 &&
            router_escalation_score(d->model, req, content, strlen(content), sig, &e) == 0)
            it->escalation = e;
        json_decref(req);
    }
}

static char *
request_body(void *arg, size_t k)
{
    const struct demo *d = arg;

    return demo_chat_body(d->runs[d->first_run + k / d->n_items].model,
                          d->items[k % d->n_items].prompt);
}

static void
request_done(void *arg, size_t k, const struct demo_reply *rp)
{
    struct demo *d = arg;
    size_t run = d->first_run + k / d->n_items, item = k % d->n_items;
    struct run *r = &d->runs[run];

    r->n++;
    r->latency += rp->secs;
    if (run == d->score_run)
        d->scores[item] = rp->score;
    json_t *resp = rp->rc == CURLE_OK && rp->status == 200 ? json_loadb(rp->body, rp->len, 0, NULL)
                                                           : NULL;
    const char *content = json_string_value(json_object_get(
        json_object_get(json_array_get(json_object_get(resp, "choices"), 0), "message"), "content"));
    if (!content) {
        r->errors++;
        json_decref(resp);
        return;
    }
    int ok = grade_is_correct(content, d->items[item].reference);
    if (ok)
        r->correct++;
    int b = answering_backend(d, run, rp->backend, resp);
    if (b == d->strong)
        r->strong++;
    if (b < 0)
        r->unknown++;
    if (b >= 0) {
        json_t *u = json_object_get(resp, "usage");
        double in = (double)json_integer_value(json_object_get(u, "prompt_tokens"));
        double out = (double)json_integer_value(json_object_get(u, "completion_tokens"));
        r->cost += (in * d->conf->backends[b].price_input + out * d->conf->backends[b].price_output) / 1e6;
    }
    if (run < 2)
        remember(d, run, item, resp, content, ok, b, rp->secs);
    json_decref(resp);
}

/* Sends every prompt once for each run from first on, concurrency at a time. */
static void
run_all(struct demo *d, size_t first, const char *label, unsigned concurrency)
{
    struct demo_post p = {
        .url = d->url,
        .auth = d->auth[0] ? d->auth : NULL,
        .total = d->n_items * (d->n_runs - first),
        .concurrency = concurrency,
        .timeout_ms = d->timeout_ms,
        .progress = label,
        .body = request_body,
        .done = request_done,
        .arg = d,
    };

    d->first_run = first;
    demo_post_all(&p);
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* Adds routed runs at the thresholds that would have sent about 10, 25, 50, 75 and 90% of
 * the prompts to strong, by the scores the configured run reported. Returns how many. */
static size_t
add_auto_runs(struct demo *d)
{
    static const double shares[] = {0.10, 0.25, 0.50, 0.75, 0.90};
    double *sorted = malloc(d->n_items * sizeof(double));
    size_t n = 0, added = 0;
    double prev = NAN;

    if (!sorted)
        abort();
    for (size_t i = 0; i < d->n_items; i++)
        if (!isnan(d->scores[i]))
            sorted[n++] = d->scores[i];
    qsort(sorted, n, sizeof(double), cmp_double);
    for (size_t k = 0; n && k < sizeof(shares) / sizeof(shares[0]) && d->n_runs < MAX_RUNS; k++) {
        /* score >= t goes to strong: t is the smallest score of the top share */
        size_t top = (size_t)ceil(shares[k] * (double)n);
        double t = sorted[n - (top ? top : 1)];
        if (t == prev)
            continue;
        prev = t;
        /* the header rounds scores to 4 decimals: half a unit lower keeps that prompt strong */
        t = fmax(0, t - 0.00005);
        struct run *r = &d->runs[d->n_runs++];
        snprintf(r->model, sizeof(r->model), "%s:%.5f", d->conf->aliases[0], t);
        snprintf(r->label, sizeof(r->label), "triage (%s:%.5f)", d->conf->aliases[0], t);
        r->threshold = t;
        r->fixed_backend = -1;
        added++;
    }
    free(sorted);
    return added;
}

/* Adds the cascade's run at escalate_at: every prompt pays the fast run's answer; those
 * whose escalation score is at or above it (or whose fast answer failed) are answered as
 * the strong run answered them, paying both calls and waiting for both. Returns 0, or -1
 * when the runs cannot tell (no model file). */
static int
add_cascade_run(struct demo *d, double escalate_at)
{
    if (!d->model || d->n_runs == MAX_RUNS)
        return -1;
    struct run *r = &d->runs[d->n_runs++];
    memset(r, 0, sizeof(*r));
    snprintf(r->label, sizeof(r->label), "cascade (escalate_at %g)", escalate_at);
    r->threshold = escalate_at;
    r->fixed_backend = -1;
    r->cascade = 1;
    for (size_t i = 0; i < d->n_items; i++) {
        const struct item *it = &d->items[i];
        int up = !it->answered[0] || router_cascade_escalate(it->escalation, escalate_at);
        r->n++;
        r->cost += it->answered[0] ? it->cost[0] : 0;
        r->latency += it->secs[0];
        if (!up) {
            r->correct += (unsigned long)it->ok[0];
            continue;
        }
        r->strong++;
        r->latency += it->secs[1];
        if (!it->answered[1]) {
            r->errors++;
            continue;
        }
        r->cost += it->cost[1];
        r->correct += (unsigned long)it->ok[1];
    }
    return 0;
}

/* ---- output -------------------------------------------------------------------------- */

static double
accuracy(const struct run *r)
{
    return r->n ? (double)r->correct / (double)r->n : 0;
}

static void
print_table(const struct demo *d)
{
    const struct run *fast = &d->runs[0], *strong = &d->runs[1];

    printf("| policy | accuracy | random routing, same share | cost (USD) | USD per 1k prompts "
           "| strong calls | mean latency | errors |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < d->n_runs; i++) {
        const struct run *r = &d->runs[i];
        double share = r->n ? (double)r->strong / (double)r->n : 0;
        /* what sending the same share to strong at random would score: the bar to beat */
        double rnd = accuracy(fast) + share * (accuracy(strong) - accuracy(fast));
        printf("| %s | %.1f%% | %.1f%% | %.4g | %.4g | %.1f%% | %.2f s | %lu |\n", r->label,
               100 * accuracy(r), 100 * rnd, r->cost, r->n ? r->cost * 1000 / (double)r->n : 0,
               100 * share, r->n ? r->latency / (double)r->n : 0, r->errors);
    }
    printf("\n%zu prompts per policy, graded by the final number of each answer.\n", d->n_items);
    for (size_t i = 0; i < d->n_runs; i++)
        if (d->runs[i].unknown)
            printf("Note: %lu answers of %s came without an x-triage-backend header naming a "
                   "configured backend; their cost is not counted.\n", d->runs[i].unknown,
                   d->runs[i].label);
    double gap = accuracy(strong) - accuracy(fast);
    for (size_t i = 2; i < d->n_runs; i++) {
        const struct run *r = &d->runs[i];
        printf("- %s: %.0f%% of always-strong's accuracy", r->label,
               accuracy(strong) > 0 ? 100 * accuracy(r) / accuracy(strong) : 0);
        if (gap > 0)
            printf(" (%.0f%% of the gap between fast and strong recovered)",
                   100 * (accuracy(r) - accuracy(fast)) / gap);
        printf(" at %.0f%% of its cost.\n", strong->cost > 0 ? 100 * r->cost / strong->cost : 0);
    }
}

struct box {
    double x0, y0, x1, y1;
};

static int
boxes_overlap(const struct box *a, const struct box *b)
{
    return a->x0 < b->x1 && b->x0 < a->x1 && a->y0 < b->y1 && b->y0 < a->y1;
}

/* Returns 1, 2 or 5 times a power of ten, at least x. */
static double
nice_step(double x)
{
    double p = pow(10, floor(log10(x)));

    return x <= p ? p : x <= 2 * p ? 2 * p : x <= 5 * p ? 5 * p : 10 * p;
}

/* Writes accuracy against cost per 1k prompts: the two fixed policies and the routed curve. */
static int
write_svg(const struct demo *d, const char *path)
{
    const double W = 720, H = 460, L = 70, R = 30, T = 50, B = 60;
    double xmax = 0, ymin = 1, ymax = 0;
    FILE *f = fopen(path, "w");

    if (!f) {
        cli_errorf("demo", "%s: %s", path, strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < d->n_runs; i++) {
        const struct run *r = &d->runs[i];
        double c = r->n ? r->cost * 1000 / (double)r->n : 0;
        xmax = fmax(xmax, c);
        ymin = fmin(ymin, accuracy(r));
        ymax = fmax(ymax, accuracy(r));
    }
    xmax = nice_step(xmax > 0 ? xmax * 1.1 / 5 : 0.2) * 5;
    double ystep = ymax - ymin <= 0.25 ? 0.05 : 0.1;
    ymin = fmax(0, floor((ymin - 0.02) / ystep) * ystep);
    ymax = fmin(1, ceil((ymax + 0.02) / ystep) * ystep);
    if (ymax <= ymin)
        ymax = ymin + ystep;
#define PX(c) (L + (c) / xmax * (W - L - R))
#define PY(a) (H - B - ((a) - ymin) / (ymax - ymin) * (H - T - B))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
            W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    char title[160];
    snprintf(title, sizeof(title), "triage demo: accuracy vs cost on %zu GSM8K prompts", d->n_items);
    demo_svg_text(f, W / 2, 28, "middle", "font-size=\"16\"", title);
    /* axes, grid and ticks */
    for (int i = 0; i <= 5; i++) {
        double c = xmax * i / 5;
        char lab[32];
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", PX(c), PY(ymin),
                PX(c), PY(ymax));
        snprintf(lab, sizeof(lab), "%.3g", c);
        demo_svg_text(f, PX(c), H - B + 18, "middle", NULL, lab);
    }
    for (double a = ymin; a <= ymax + 1e-9; a += ystep) {
        char lab[32];
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", PX(0), PY(a),
                PX(xmax), PY(a));
        snprintf(lab, sizeof(lab), "%.0f%%", a * 100);
        demo_svg_text(f, L - 8, PY(a) + 4, "end", NULL, lab);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n",
            L, T, W - L - R, H - T - B);
    demo_svg_text(f, (L + W - R) / 2, H - 18, "middle", NULL, "cost, USD per 1,000 prompts");
    fprintf(f, "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">accuracy</text>\n",
            (T + H - B) / 2);
    /* random routing: the straight line between the two fixed policies */
    {
        const struct run *f0 = &d->runs[0], *f1 = &d->runs[1];
        double x0 = PX(f0->n ? f0->cost * 1000 / (double)f0->n : 0), y0 = PY(accuracy(f0));
        double x1 = PX(f1->n ? f1->cost * 1000 / (double)f1->n : 0), y1 = PY(accuracy(f1));
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" "
                   "stroke-dasharray=\"6 4\"/>\n", x0, y0, x1, y1);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" "
                   "stroke-dasharray=\"6 4\"/>\n", L + 12, T + 16, L + 42, T + 16);
        demo_svg_text(f, L + 48, T + 20, "start", NULL, "random routing");
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#2a9d8f\" "
                   "stroke-width=\"2\"/>\n", L + 12, T + 34, L + 42, T + 34);
        demo_svg_text(f, L + 48, T + 38, "start", NULL, "triage at thresholds t");
    }
    /* the routed curve, in order of cost, from always-fast to always-strong; the cascade's
     * points a curve of their own from always-fast */
    size_t order[MAX_RUNS], n = 0, corder[MAX_RUNS], cn = 0;
    corder[cn++] = 0;
    for (size_t i = 0; i < d->n_runs; i++) {
        if (d->runs[i].cascade)
            corder[cn++] = i;
        else
            order[n++] = i;
    }
    if (cn > 1) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"#f4a261\" stroke-width=\"2\" points=\"");
        for (size_t i = 0; i < cn; i++) {
            const struct run *r = &d->runs[corder[i]];
            fprintf(f, "%.1f,%.1f ", PX(r->n ? r->cost * 1000 / (double)r->n : 0), PY(accuracy(r)));
        }
        fprintf(f, "\"/>\n");
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#f4a261\" "
                   "stroke-width=\"2\"/>\n", L + 12, T + 52, L + 42, T + 52);
        demo_svg_text(f, L + 48, T + 56, "start", NULL, "cascade at escalate_at e");
    }
    for (size_t i = 1; i < n; i++)
        for (size_t k = i; k > 0 && d->runs[order[k]].cost < d->runs[order[k - 1]].cost; k--) {
            size_t t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
        }
    fprintf(f, "<polyline fill=\"none\" stroke=\"#2a9d8f\" stroke-width=\"2\" points=\"");
    for (size_t i = 0; i < n; i++) {
        const struct run *r = &d->runs[order[i]];
        fprintf(f, "%.1f,%.1f ", PX(r->n ? r->cost * 1000 / (double)r->n : 0), PY(accuracy(r)));
    }
    fprintf(f, "\"/>\n");
    /* the points, the two fixed policies on top */
    for (size_t i = d->n_runs; i-- > 0;) {
        const struct run *r = &d->runs[i];
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"%s\"/>\n",
                PX(r->n ? r->cost * 1000 / (double)r->n : 0), PY(accuracy(r)),
                i == 0 ? "#457b9d" : i == 1 ? "#e63946" : r->cascade ? "#f4a261" : "#2a9d8f");
    }
    /* labels go where they overlap no other label, point or the legend */
    struct box used[3 * MAX_RUNS + 1];
    size_t n_used = 0;
    used[n_used++] = (struct box){L, T, L + 200, T + 62};
    for (size_t i = 0; i < d->n_runs; i++) {
        const struct run *r = &d->runs[i];
        double x = PX(r->n ? r->cost * 1000 / (double)r->n : 0), y = PY(accuracy(r));
        used[n_used++] = (struct box){x - 6, y - 6, x + 6, y + 6};
    }
    for (size_t i = 0; i < d->n_runs; i++) {
        const struct run *r = &d->runs[i];
        double x = PX(r->n ? r->cost * 1000 / (double)r->n : 0), y = PY(accuracy(r));
        char lab[96];
        if (i < 2)
            snprintf(lab, sizeof(lab), "%s", r->label);
        else if (r->cascade)
            snprintf(lab, sizeof(lab), "e=%.3g (%.0f%% escalated)", r->threshold,
                     r->n ? 100.0 * (double)r->strong / (double)r->n : 0);
        else if (isnan(r->threshold))
            snprintf(lab, sizeof(lab), "configured (%.0f%% strong)",
                     r->n ? 100.0 * (double)r->strong / (double)r->n : 0);
        else
            snprintf(lab, sizeof(lab), "t=%.4g (%.0f%% strong)", r->threshold,
                     r->n ? 100.0 * (double)r->strong / (double)r->n : 0);
        /* candidates: below-right first (the curve rises to the right), then around */
        static const struct { double dx, dy; int end; } cand[] = {
            {10, 16, 0}, {10, -8, 0}, {-10, -8, 1}, {-10, 16, 1}, {10, 30, 0}, {-10, 30, 1},
            {10, -22, 0}, {-10, -22, 1}, {10, 44, 0}, {-10, 44, 1}, {10, -36, 0}, {-10, -36, 1},
        };
        double w = 6.6 * (double)strlen(lab);
        struct box pick = {0, 0, 0, 0};
        int found = 0, end = 0;
        for (size_t k = 0; k < sizeof(cand) / sizeof(cand[0]) && !found; k++) {
            double bx = x + cand[k].dx - (cand[k].end ? w : 0), by = y + cand[k].dy;
            struct box b = {bx, by - 11, bx + w, by + 3};
            if (b.x0 < L || b.x1 > W - R || b.y0 < T || b.y1 > H - B)
                continue;
            int clear = 1;
            for (size_t u = 0; u < n_used && clear; u++)
                clear = !boxes_overlap(&b, &used[u]);
            if (clear || pick.x1 == 0) { /* else the first that fits */
                pick = b;
                end = cand[k].end;
                found = clear;
            }
        }
        if (pick.x1 == 0) /* nothing fits inside the plot: left of the point */
            pick = (struct box){x - 10 - w, y - 19, x - 10, y - 5}, end = 1;
        used[n_used++] = pick;
        demo_svg_text(f, end ? pick.x1 : pick.x0, pick.y1 - 3, end ? "end" : "start", NULL, lab);
    }
#undef PX
#undef PY
    return demo_svg_close(f, path);
}

/* ---- main ---------------------------------------------------------------------------- */

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: triage demo [--url URL] [--config FILE] [--data FILE] [--limit N]\n"
            "                   [--thresholds T,T,...] [--concurrency N] [--svg FILE]\n"
            "                   [--api-key KEY] [--timeout-ms N]\n"
            "\n"
            "Sends the GSM8K test prompts through a running triaged, once per policy: always\n"
            "the fast backend, always the strong one, and routed (\"<alias>:<t>\") at each\n"
            "threshold; grades each answer by its final number against the reference and\n"
            "prints a markdown table of accuracy, cost (usage tokens x the config's prices)\n"
            "and strong-call share, and writes the cost-quality curve as SVG. The cascade's\n"
            "rows need no requests of their own: the always-fast run's answers are scored by\n"
            "the config's model file's escalation model, as triaged's policy = cascade scores\n"
            "them, and those at or above escalate_at (the config's, then cuts escalating\n"
            "about 25, 50 and 75%%) take the always-strong run's answer, paying both calls.\n"
            "\n"
            "  --url URL            triaged's base URL (default http://127.0.0.1:8080)\n"
            "  --config FILE        for tiers, prices, alias (default %s)\n"
            "  --data FILE          prompts with references (default %s)\n"
            "  --limit N            only the first N prompts\n"
            "  --thresholds LIST    routed thresholds, or auto (default): first route as\n"
            "                       configured, then at the thresholds that send about\n"
            "                       10, 25, 50, 75 and 90%% of the prompts to strong by the\n"
            "                       scores triaged reported (x-triage-score)\n"
            "  --concurrency N      requests in flight (default 64)\n"
            "  --svg FILE           where to write the curve (default triage-demo.svg)\n"
            "  --api-key KEY        client key, if triaged needs one (or $TRIAGE_API_KEY)\n"
            "  --timeout-ms N       per request (default 600000)\n"
            "  --learn              the learning loop instead: a triaged of its own labels\n"
            "                       and retrains as GSM8K flows (triage demo --learn --help)\n"
            "\n"
            "Offline, with the example config:\n"
            "  triage replay --answers mixtral-8x7b-instruct --port 9001 --ms-per-token 2 &\n"
            "  triage replay --answers gpt-4-1106-preview --port 9002 --ms-per-token 10 &\n"
            "  triaged -c conf/triage.conf &\n"
            "  triage demo --limit 300\n",
            demo_default_conf(), demo_default_data());
}

static int
parse_ulong(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    char *end;

    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v < lo || v > hi) {
        cli_errorf("demo", "bad number %s (expected %lu..%lu)", s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static void
demo_free(struct demo *d)
{
    for (size_t i = 0; i < d->n_items; i++)
        free(d->items[i].prompt);
    free(d->items);
    free(d->scores);
    if (d->model)
        router_model_unref(d->model);
    router_thread_cleanup();
    conf_destroy(d->conf);
}

static int
add_fixed(struct demo *d, size_t tier, const char *what)
{
    struct run *r = &d->runs[d->n_runs++];
    int b = (int)d->conf->tiers[tier].backend;

    snprintf(r->label, sizeof(r->label), "always %s (%s)", what, d->conf->backends[b].name);
    snprintf(r->model, sizeof(r->model), "%s", d->conf->backends[b].name);
    r->threshold = NAN;
    r->fixed_backend = b;
    return b;
}

int
cli_demo(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},
        {"config", required_argument, NULL, 'c'},
        {"data", required_argument, NULL, 'd'},
        {"limit", required_argument, NULL, 'n'},
        {"thresholds", required_argument, NULL, 't'},
        {"concurrency", required_argument, NULL, 'j'},
        {"svg", required_argument, NULL, 's'},
        {"api-key", required_argument, NULL, 'k'},
        {"timeout-ms", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct demo d = {.url = "http://127.0.0.1:8080", .timeout_ms = 600000, .score_run = SIZE_MAX};
    const char *conf_path = demo_default_conf(), *data = demo_default_data();
    const char *svg = "triage-demo.svg";
    const char *thresholds = "auto", *key = getenv("TRIAGE_API_KEY");
    unsigned long limit = 0, conc = 64, timeout = 600000;
    char err[512];
    int ch, rc = 1;

    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--learn"))
            return cli_demo_learn(argc, argv);
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'u': d.url = optarg; break;
        case 'c': conf_path = optarg; break;
        case 'd': data = optarg; break;
        case 't': thresholds = optarg; break;
        case 's': svg = optarg; break;
        case 'k': key = optarg; break;
        case 'n':
            if (parse_ulong(optarg, 1, 1000000000ul, &limit) < 0)
                return 2;
            break;
        case 'j':
            if (parse_ulong(optarg, 1, 4096, &conc) < 0)
                return 2;
            break;
        case 'T':
            if (parse_ulong(optarg, 1, 100000000ul, &timeout) < 0)
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
    d.timeout_ms = (long)timeout;
    if (key && *key)
        snprintf(d.auth, sizeof(d.auth), "Authorization: Bearer %s", key);
    d.conf = conf_load_flags(conf_path, CONF_LOAD_SKIP_KEYS, err, sizeof(err));
    if (!d.conf) {
        cli_errorf("demo", "%s", err);
        return 1;
    }
    if (d.conf->n_tiers < 2 || d.conf->n_aliases < 1) {
        cli_errorf("demo", "%s: needs two tiers and a routed alias", conf_path);
        goto out;
    }
    d.model = d.conf->model_path ? router_model_load(d.conf->model_path, err, sizeof(err)) : NULL;
    if (!d.model && !d.conf->model_path)
        snprintf(err, sizeof(err), "the config names no model file");
    if (!d.model)
        fprintf(stderr, "triage demo: no cascade rows: %s\n", err);
    add_fixed(&d, 0, "fast");
    d.strong = add_fixed(&d, d.conf->n_tiers - 1, "strong");
    int automatic = strcmp(thresholds, "auto") == 0;
    if (automatic) {
        /* routed as configured; its scores place the thresholds of the runs after it */
        struct run *r = &d.runs[d.n_runs];
        d.score_run = d.n_runs++;
        snprintf(r->model, sizeof(r->model), "%s", d.conf->aliases[0]);
        snprintf(r->label, sizeof(r->label), "triage (%s, as configured)", d.conf->aliases[0]);
        r->threshold = NAN;
        r->fixed_backend = -1;
    }
    for (const char *p = automatic ? "" : thresholds; *p && d.n_runs < MAX_RUNS;) {
        char *end;
        double t = strtod(p, &end);
        if (end == p || t < 0 || t > 1 || (*end && *end != ',')) {
            cli_errorf("demo", "bad --thresholds %s (numbers in [0,1], comma-separated)", thresholds);
            rc = 2;
            goto out;
        }
        struct run *r = &d.runs[d.n_runs++];
        snprintf(r->model, sizeof(r->model), "%s:%g", d.conf->aliases[0], t);
        snprintf(r->label, sizeof(r->label), "triage (%s:%g)", d.conf->aliases[0], t);
        r->threshold = t;
        r->fixed_backend = -1;
        p = *end ? end + 1 : end;
    }
    if (load_items(&d, data, (size_t)limit) < 0)
        goto out;
    d.scores = malloc(d.n_items * sizeof(double));
    if (!d.scores)
        abort();
    for (size_t i = 0; i < d.n_items; i++)
        d.scores[i] = NAN;
    fprintf(stderr, "triage demo: %zu prompts x %zu policies%s through %s\n", d.n_items, d.n_runs,
            automatic ? " (+5 at thresholds from the scores)" : "", d.url);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    run_all(&d, 0, automatic ? "pass 1/2" : "demo", (unsigned)conc);
    if (automatic) {
        size_t first = d.n_runs;
        if (add_auto_runs(&d) == 0)
            fprintf(stderr, "triage demo: no x-triage-score in the answers: no threshold runs\n");
        else
            run_all(&d, first, "pass 2/2", (unsigned)conc);
    }
    curl_global_cleanup();
    if (d.model) {
        /* the configured escalate_at, then the cuts that escalate about 25, 50 and 75% of
         * the answers by their scores */
        static const double shares[] = {0.25, 0.50, 0.75};
        double *sorted = malloc(d.n_items * sizeof(double));
        size_t n = 0;
        if (!sorted)
            abort();
        for (size_t i = 0; i < d.n_items; i++)
            if (!isnan(d.items[i].escalation))
                sorted[n++] = d.items[i].escalation;
        qsort(sorted, n, sizeof(double), cmp_double);
        add_cascade_run(&d, d.conf->escalate_at);
        for (size_t k = 0; n && k < sizeof(shares) / sizeof(*shares); k++) {
            size_t top = (size_t)ceil(shares[k] * (double)n);
            double at = sorted[n - (top ? top : 1)];
            if (fabs(at - d.conf->escalate_at) > 1e-9)
                add_cascade_run(&d, at);
        }
        free(sorted);
    }
    print_table(&d);
    if (write_svg(&d, svg) < 0)
        goto out;
    printf("\nCost-quality curve: %s\n", svg);
    unsigned long errors = 0;
    for (size_t i = 0; i < d.n_runs; i++)
        errors += d.runs[i].errors;
    if (errors == d.n_items * d.n_runs) {
        cli_errorf("demo", "every request failed: is triaged running at %s?", d.url);
        goto out;
    }
    rc = 0;
out:
    demo_free(&d);
    return rc;
}
