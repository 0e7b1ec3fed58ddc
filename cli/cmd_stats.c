/* cmd_stats.c - `triage stats`: routing statistics from the outcome log, as a table or JSON. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "commands.h"
#include "conf.h"
#include "storage.h"

static void
stats_usage(FILE *f)
{
    fprintf(f, "usage: triage stats [--db FILE | --config FILE] [--window 15m|1h|24h|7d] [--json]\n"
               "                    [--price NAME=IN:OUT]...\n"
               "  --db FILE       the outcome log, a file or a postgresql:// URL (default: [storage]\n"
               "                  path or url of --config)\n"
               "  --config FILE   read backend prices from this config (for the saving figure;\n"
               "                  backend keys must resolve, as for the daemon)\n"
               "  --price N=I:O   backend N costs I USD per 1M input, O per 1M output tokens\n"
               "  --window W      15m, 1h, 24h (default) or 7d\n"
               "  --json          print the JSON document served at /v1/stats\n");
}

static double
num(json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

static void
fmt_ms(char *buf, size_t len, json_t *pct, const char *key)
{
    json_t *v = json_object_get(pct, key);
    if (json_is_number(v))
        snprintf(buf, len, "%.1f", json_number_value(v));
    else
        snprintf(buf, len, "-");
}

static void
fmt_time(char *buf, size_t len, int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

/* One character per timeline bucket, scaled to the busiest bucket. */
static void
sparkline(char *buf, json_t *counts, double max)
{
    static const char levels[] = " .:-=+*#%@";
    size_t i;
    json_t *v;

    json_array_foreach(counts, i, v) {
        double x = json_number_value(v);
        int l = max > 0 ? (int)(x / max * 9.0 + 0.999) : 0;
        buf[i] = levels[l > 9 ? 9 : l];
    }
    buf[json_array_size(counts)] = '\0';
}

/* USD as printed with 4 decimals: a float residue that rounds to nothing (a saving of
 * -1.4e-20 when routing changed nothing) is 0, never "$-0.0000". */
static double
money(double usd)
{
    double r = round(usd * 1e4) / 1e4;
    return r == 0 || !isfinite(r) ? 0.0 : r;
}

static void
print_table(const char *db, json_t *j)
{
    char a[32], b[32], c[32], d[32], e[32], from[32], to[32];
    const char *name;
    json_t *be;
    double total = num(j, "requests");

    fmt_time(from, sizeof(from), (int64_t)num(j, "from_ms"));
    fmt_time(to, sizeof(to), (int64_t)num(j, "to_ms"));
    printf("%s, window %s (%s .. %s UTC)\n", db, json_string_value(json_object_get(j, "window")),
           from, to);
    printf("requests %.0f, errors %.0f (%.1f%%), tokens in %.0f out %.0f, cost $%.4f\n", total,
           num(j, "errors"), total > 0 ? 100.0 * num(j, "errors") / total : 0.0,
           num(j, "tokens_in"), num(j, "tokens_out"), money(num(j, "cost_usd")));
    json_t *fb = json_object_get(j, "feedback");
    if (num(fb, "count") > 0)
        printf("feedback %.0f, mean score %.3f\n", num(fb, "count"), num(fb, "mean"));
    else
        printf("feedback none\n");
    /* whose errors: the backends' own (with attempts retried or fallen back from) and
     * the clients' (4xx) */
    json_t *fbk = json_object_get(j, "fallbacks");
    if (json_object_get(j, "backend_errors"))
        printf("backend errors %.0f, client errors %.0f, fallbacks %.0f\n", num(j, "backend_errors"),
               num(j, "client_errors"), num(fbk, "requests"));
    size_t pi;
    json_t *pv;
    json_array_foreach(json_object_get(fbk, "pairs"), pi, pv)
        printf("  fell back %s -> %s: %.0f\n", json_string_value(json_object_get(pv, "from")),
               json_string_value(json_object_get(pv, "to")), num(pv, "requests"));

    printf("\n%-12s %8s %6s %6s %8s %8s %8s %8s %8s %10s %10s %10s %9s\n", "backend", "requests",
           "share", "errors", "p50 ms", "p95 ms", "p99 ms", "ttfb p50", "ttfb p95", "tokens in",
           "tokens out", "cost $", "feedback");
    json_object_foreach(json_object_get(j, "backends"), name, be) {
        json_t *lat = json_object_get(be, "latency_ms"), *tt = json_object_get(be, "ttfb_ms");
        json_t *bf = json_object_get(be, "feedback");
        char fbs[32];
        fmt_ms(a, sizeof(a), lat, "p50");
        fmt_ms(b, sizeof(b), lat, "p95");
        fmt_ms(c, sizeof(c), lat, "p99");
        fmt_ms(d, sizeof(d), tt, "p50");
        fmt_ms(e, sizeof(e), tt, "p95");
        if (num(bf, "count") > 0)
            snprintf(fbs, sizeof(fbs), "%.3f (%.0f)", num(bf, "mean"), num(bf, "count"));
        else
            snprintf(fbs, sizeof(fbs), "-");
        printf("%-12s %8.0f %5.1f%% %6.0f %8s %8s %8s %8s %8s %10.0f %10.0f %10.4f %9s\n", name,
               num(be, "requests"), 100.0 * num(be, "share"), num(be, "errors"), a, b, c, d, e,
               num(be, "tokens_in"), num(be, "tokens_out"), money(num(be, "cost_usd")), fbs);
    }

    json_t *keys = json_object_get(j, "keys");
    if (json_object_size(keys)) {
        printf("\n%-16s %8s %6s %10s %10s %10s\n", "key", "requests", "errors", "tokens in",
               "tokens out", "cost $");
        json_object_foreach(keys, name, be)
            printf("%-16s %8.0f %6.0f %10.0f %10.0f %10.4f\n", name, num(be, "requests"),
                   num(be, "errors"), num(be, "tokens_in"), num(be, "tokens_out"),
                   money(num(be, "cost_usd")));
    }

    /* The daemon's own calls to learn (not in the figures above) and the labels. */
    json_t *ln = json_object_get(j, "learning"), *lb = json_object_get(ln, "labels");
    if (num(ln, "shadow_calls") > 0 || num(ln, "judge_calls") > 0 || num(lb, "judge") > 0 ||
        num(lb, "feedback") > 0 || num(lb, "offline") > 0)
        printf("\nlearning: %.0f shadow calls ($%.4f), %.0f judge calls ($%.4f); labels: "
               "judge %.0f, feedback %.0f, offline %.0f\n",
               num(ln, "shadow_calls"), money(num(ln, "shadow_cost_usd")), num(ln, "judge_calls"),
               money(num(ln, "judge_cost_usd")), num(lb, "judge"), num(lb, "feedback"),
               num(lb, "offline"));

    json_t *sv = json_object_get(j, "saving");
    if (json_is_object(sv)) {
        json_t *share = json_object_get(sv, "saving_share");
        printf("\nsaving against sending everything to %s: $%.4f of $%.4f",
               json_string_value(json_object_get(sv, "baseline_backend")),
               money(num(sv, "saving_usd")), money(num(sv, "baseline_cost_usd")));
        if (json_is_number(share))
            printf(" (%.1f%%)", 100.0 * json_number_value(share));
        printf(" over %.0f requests with token counts\n", num(sv, "rows"));
    } else {
        printf("\nsaving: n/a (give --price or --config so the backends' prices are known)\n");
    }

    json_t *h = json_object_get(j, "score_histogram");
    json_t *counts = json_object_get(h, "counts");
    double hmax = 0;
    size_t i;
    json_t *v;
    json_array_foreach(counts, i, v) if (json_number_value(v) > hmax) hmax = json_number_value(v);
    printf("\nscore histogram (%.0f routed requests)\n", num(h, "routed"));
    size_t bins = json_array_size(counts);
    json_array_foreach(counts, i, v) {
        int w = hmax > 0 ? (int)(json_number_value(v) / hmax * 40.0 + 0.5) : 0;
        printf("  %.2f-%.2f %-40.*s %.0f\n", (double)i / (double)bins,
               (double)(i + 1) / (double)bins, w, "########################################",
               json_number_value(v));
    }

    json_t *tl = json_object_get(j, "timeline");
    double tmax = 0;
    json_object_foreach(json_object_get(tl, "backends"), name, be) {
        json_array_foreach(json_object_get(be, "requests"), i, v) {
            if (json_number_value(v) > tmax)
                tmax = json_number_value(v);
        }
    }
    printf("\nrequests over time (%.0f buckets of %.0f s, busiest %.0f)\n", num(tl, "buckets"),
           num(tl, "bucket_ms") / 1000.0, tmax);
    json_object_foreach(json_object_get(tl, "backends"), name, be) {
        char line[128];
        json_t *rq = json_object_get(be, "requests");
        if (json_array_size(rq) < sizeof(line)) {
            sparkline(line, rq, tmax);
            printf("  %-12s |%s|\n", name, line);
        }
    }

    json_t *re = json_object_get(j, "recent_errors");
    printf("\nrecent errors%s\n", json_array_size(re) ? "" : ": none");
    json_array_foreach(re, i, v) {
        json_t *bk = json_object_get(v, "backend"), *ek = json_object_get(v, "error_kind");
        fmt_time(a, sizeof(a), (int64_t)num(v, "time_ms"));
        printf("  %s  %-36s %-12s %3.0f %s\n", a,
               json_string_value(json_object_get(v, "request_id")),
               json_is_string(bk) ? json_string_value(bk) : "-", num(v, "status"),
               json_is_string(ek) ? json_string_value(ek) : "-");
    }
}

/* The model registry over time (storage_model_timeline): each change of champion, then
 * the versions with their held-out metrics. */
static void
print_models(json_t *models)
{
    json_t *changes = json_object_get(models, "changes"), *versions = json_object_get(models, "versions");
    char t[32], apgr[32], delta[48], n[24];
    size_t i;
    json_t *v;

    printf("\nmodel versions: %zu; changes of champion%s\n", json_array_size(versions),
           json_array_size(changes) ? " (each version's latest)" : ": none");
    json_array_foreach(changes, i, v) {
        fmt_time(t, sizeof(t), (int64_t)num(v, "ms"));
        printf("  %s  %-9s -> %s\n", t, json_string_value(json_object_get(v, "kind")),
               json_string_value(json_object_get(v, "version")));
    }
    if (!json_array_size(versions))
        return;
    printf("  %-18s %-9s %-7s %-19s %8s %18s %8s %8s %9s %8s\n", "version", "status", "source",
           "created", "APGR", "vs parent", "held out", "esc AUC", "vs parent", "answers");
    json_array_foreach(versions, i, v) {
        json_t *a = json_object_get(v, "apgr"), *pa = json_object_get(v, "parent_apgr");
        fmt_time(t, sizeof(t), (int64_t)num(v, "created_ms"));
        snprintf(apgr, sizeof(apgr), json_is_number(a) ? "%.3f" : "-", json_number_value(a));
        if (json_is_number(a) && json_is_number(pa))
            snprintf(delta, sizeof(delta), "%+.3f (%.8s)", json_number_value(a) - json_number_value(pa),
                     json_string_value(json_object_get(v, "parent")));
        else
            snprintf(delta, sizeof(delta), "-");
        if (json_is_number(json_object_get(v, "holdout_n")))
            snprintf(n, sizeof(n), "%.0f", num(v, "holdout_n"));
        else
            snprintf(n, sizeof(n), "-");
        /* the escalation part (schema 11): held-out AUC, against the parent's, on how many
         * judged fast answers */
        json_t *e = json_object_get(v, "esc_auc"), *pe = json_object_get(v, "parent_esc_auc");
        char esc[16], edelta[16], en[24];
        snprintf(esc, sizeof(esc), json_is_number(e) ? "%.3f" : "-", json_number_value(e));
        snprintf(edelta, sizeof(edelta), json_is_number(e) && json_is_number(pe) ? "%+.3f" : "-",
                 json_number_value(e) - json_number_value(pe));
        snprintf(en, sizeof(en), json_is_number(json_object_get(v, "esc_holdout_n")) ? "%.0f" : "-",
                 num(v, "esc_holdout_n"));
        printf("  %-18s %-9s %-7s %-19s %8s %18s %8s %8s %9s %8s\n",
               json_string_value(json_object_get(v, "version")),
               json_string_value(json_object_get(v, "status")),
               json_string_value(json_object_get(v, "source")), t, apgr, delta, n, esc, edelta, en);
    }
}

int
cli_stats(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"db", required_argument, NULL, 'd'},     {"config", required_argument, NULL, 'c'},
        {"window", required_argument, NULL, 'w'}, {"json", no_argument, NULL, 'j'},
        {"price", required_argument, NULL, 'p'},  {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *db = NULL, *config = NULL, *window = "24h";
    int as_json = 0, ch, rc = 1;
    struct conf *cf = NULL;
    struct storage_price *prices = NULL;
    size_t n_prices = 0;
    char err[512] = "";
    int64_t ms;
    char *price_args[64];
    size_t n_price_args = 0;

    optind = 1;
    while ((ch = getopt_long(argc, argv, "d:c:w:jh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'd': db = optarg; break;
        case 'c': config = optarg; break;
        case 'w': window = optarg; break;
        case 'j': as_json = 1; break;
        case 'p':
            if (n_price_args == sizeof(price_args) / sizeof(price_args[0])) {
                cli_errorf("stats", "too many --price options");
                return 2;
            }
            price_args[n_price_args++] = optarg;
            break;
        case 'h': stats_usage(stdout); return 0;
        default: stats_usage(stderr); return 2;
        }
    }
    if (optind != argc || (!db && !config)) {
        stats_usage(stderr);
        return 2;
    }
    if (storage_window_parse(window, &ms) < 0) {
        cli_errorf("stats", "--window must be 15m, 1h, 24h or 7d, not '%s'", window);
        return 2;
    }
    prices = calloc(n_price_args + 1, sizeof(*prices));
    if (!prices)
        abort();
    for (size_t i = 0; i < n_price_args; i++) {
        char *eq = strchr(price_args[i], '='), *end;
        if (!eq || eq == price_args[i]) {
            cli_errorf("stats", "--price wants NAME=IN:OUT, not '%s'", price_args[i]);
            rc = 2;
            goto done;
        }
        *eq = '\0';
        prices[i].name = price_args[i];
        prices[i].price_input = strtod(eq + 1, &end);
        if (*end != ':' || end == eq + 1) {
            cli_errorf("stats", "--price wants NAME=IN:OUT");
            rc = 2;
            goto done;
        }
        char *o = end + 1;
        prices[i].price_output = strtod(o, &end);
        if (*end || end == o || prices[i].price_input < 0 || prices[i].price_output < 0) {
            cli_errorf("stats", "--price wants NAME=IN:OUT");
            rc = 2;
            goto done;
        }
    }
    n_prices = n_price_args;
    if (config) {
        cf = conf_load_flags(config, CONF_LOAD_SKIP_KEYS, err, sizeof(err));
        if (!cf) {
            cli_errorf("stats", "%s", err);
            goto done;
        }
        if (!db)
            db = cf->db_path;
        if (!db) {
            cli_errorf("stats", "%s has no [storage] path; give --db", config);
            goto done;
        }
        prices = realloc(prices, (n_prices + cf->n_backends + 1) * sizeof(*prices));
        if (!prices)
            abort();
        for (size_t i = 0; i < cf->n_backends && !n_price_args; i++)
            prices[n_prices++] = (struct storage_price){cf->backends[i].name,
                                                        cf->backends[i].price_input,
                                                        cf->backends[i].price_output};
    }

    json_t *j = storage_stats(db, window, prices, n_prices, 0, err, sizeof(err));
    if (!j) {
        cli_errorf("stats", "%s", err);
        goto done;
    }
    /* the registry's versions over time, as /v1/stats "models" has them (without the
     * running daemon's counters); an outcome log without one has none */
    json_t *models = storage_model_timeline(db, err, sizeof(err));
    if (models)
        json_object_set_new(j, "models", models);
    if (as_json) {
        json_dumpf(j, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
    } else {
        print_table(db, j);
        if (models)
            print_models(models);
    }
    json_decref(j);
    rc = fflush(stdout) == 0 ? 0 : 1;
done:
    free(prices);
    conf_destroy(cf);
    return rc;
}
