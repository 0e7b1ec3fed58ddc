/* cmd_models.c - `triage models`: the predictor versions in the outcome log's registry;
 * list them, record one, promote one, roll back. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "commands.h"
#include "router.h"
#include "storage.h"

static const char reload_hint[] =
    "the daemon serves the champion after a reload: kill -HUP <pid of triaged>, or\n"
    "  curl -X POST -H 'Authorization: Bearer <admin key>' http://HOST:PORT/admin/reload\n";

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: triage models [list] --db FILE [--json]\n"
            "       triage models promote VERSION --db FILE\n"
            "       triage models rollback --db FILE\n"
            "       triage models add MODEL.tmod --db FILE [--promote]\n"
            "\n"
            "The registry of predictor model versions in the outcome log FILE ([storage] path, or\n"
            "the postgresql:// URL of [storage] url, which every replica follows within 5 s):\n"
            "every model the daemon shipped with, retrained or was given, with its lineage and\n"
            "its APGR against the champion it was meant to replace and, once the cascade's\n"
            "fast answers are judged, its escalation AUC against the champion's on held-out\n"
            "answers (a promotion may combine the better part of each: \"routing of\" and\n"
            "\"escalation of\" name the versions). Exactly one is champion: the one the daemon\n"
            "serves.\n"
            "  list       newest first; * marks the champion. --json: a JSON array\n"
            "  promote    make VERSION (or a unique prefix of it) champion, after checking its\n"
            "             file loads and holds that version; the champion becomes retired\n"
            "  rollback   make the model the champion replaced champion again\n"
            "  add        record a model file made by hand (triage train) as source manual,\n"
            "             status candidate, parent the current champion; --promote makes it\n"
            "             champion. The file is not copied: keep it where it is\n"
            "promote, rollback and add --promote change the registry only; %s",
            reload_hint);
}

/* "YYYY-MM-DD HH:MM" UTC, or "-" for 0. */
static void
fmt_time(char *buf, size_t len, int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (ms <= 0 || !gmtime_r(&t, &tm)) {
        snprintf(buf, len, "-");
        return;
    }
    strftime(buf, len, "%Y-%m-%d %H:%M", &tm);
}

static void
fmt_count(char *buf, size_t len, int64_t n)
{
    if (n < 0)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%lld", (long long)n);
}

/* "0.6250 vs 0.6010 (+0.0240)", "0.6250" without the parent's, "-" without its own. */
static void
fmt_apgr(char *buf, size_t len, double apgr, double parent)
{
    if (!isfinite(apgr))
        snprintf(buf, len, "-");
    else if (!isfinite(parent))
        snprintf(buf, len, "%.4f", apgr);
    else
        snprintf(buf, len, "%.4f vs %.4f (%+.4f)", apgr, parent, apgr - parent);
}

static json_t *
json_count(int64_t n)
{
    return n < 0 ? json_null() : json_integer(n);
}

static json_t *
json_num(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

/* " (routing of V, escalation of W)" for a file combined of two models' parts, or "". */
static void
fmt_parts(char *buf, size_t len, const struct storage_model_info *m)
{
    const char *r = m->routing_from, *e = m->escalation_from;

    if (!*r && !*e)
        snprintf(buf, len, "%s", "");
    else
        snprintf(buf, len, " (routing of %s, escalation of %s)", *r ? r : "its own",
                 *e ? e : "its own");
}

/* storage_model_fn: one table line. */
static int
print_row(const struct storage_model_info *m, void *arg)
{
    char created[32], promoted[32], train[24], holdout[24], apgr[64], answers[24], esc[64];
    char parts[200];
    int *rows = arg;

    if (!(*rows)++)
        printf("  %-16s %-9s %-7s %-16s %-16s %-16s %8s %7s %-26s %7s %-26s %s\n", "version",
               "status", "source", "created (UTC)", "promoted (UTC)", "parent", "train", "holdout",
               "APGR vs parent (diff)", "answers", "escalation AUC vs parent", "path");
    fmt_time(created, sizeof(created), m->created_ms);
    fmt_time(promoted, sizeof(promoted), m->promoted_ms);
    fmt_count(train, sizeof(train), m->train_examples);
    fmt_count(holdout, sizeof(holdout), m->holdout_n);
    fmt_apgr(apgr, sizeof(apgr), m->apgr, m->parent_apgr);
    fmt_count(answers, sizeof(answers), m->esc_holdout_n > 0 ? m->esc_holdout_n : -1);
    fmt_apgr(esc, sizeof(esc), m->esc_auc, m->parent_esc_auc);
    fmt_parts(parts, sizeof(parts), m);
    printf("%c %-16s %-9s %-7s %-16s %-16s %-16s %8s %7s %-26s %7s %-26s %s%s\n",
           strcmp(m->status, "champion") ? ' ' : '*', m->version, m->status, m->source, created,
           promoted, m->parent[0] ? m->parent : "-", train, holdout, apgr, answers, esc, m->path,
           parts);
    return 0;
}

/* storage_model_fn: one object appended to the array arg. */
static int
json_row(const struct storage_model_info *m, void *arg)
{
    double d = isfinite(m->apgr) && isfinite(m->parent_apgr) ? m->apgr - m->parent_apgr : NAN;
    json_t *o = json_pack(
        "{s:s, s:s, s:b, s:s, s:s, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "version", m->version,
        "status", m->status, "champion", !strcmp(m->status, "champion"), "source", m->source,
        "path", m->path, "created_ms", (json_int_t)m->created_ms, "promoted_ms",
        m->promoted_ms > 0 ? json_integer(m->promoted_ms) : json_null(), "parent",
        m->parent[0] ? json_string(m->parent) : json_null(), "train_examples",
        json_count(m->train_examples), "holdout_n", json_count(m->holdout_n), "apgr",
        json_num(m->apgr), "parent_apgr", json_num(m->parent_apgr), "apgr_diff", json_num(d));
    if (!o)
        return -1;
    double ed = isfinite(m->esc_auc) && isfinite(m->parent_esc_auc) ? m->esc_auc - m->parent_esc_auc
                                                                    : NAN;
    json_object_set_new(o, "esc_holdout_n", json_count(m->esc_holdout_n > 0 ? m->esc_holdout_n : -1));
    json_object_set_new(o, "esc_auc", json_num(m->esc_auc));
    json_object_set_new(o, "parent_esc_auc", json_num(m->parent_esc_auc));
    json_object_set_new(o, "esc_auc_diff", json_num(ed));
    /* hex versions of this daemon's own making; anything else reads as null */
    json_object_set_new(o, "routing_from", m->routing_from[0] ? json_string(m->routing_from) : json_null());
    json_object_set_new(o, "escalation_from",
                        m->escalation_from[0] ? json_string(m->escalation_from) : json_null());
    json_array_append_new(arg, o);
    return 0;
}

/* Finds a version by its name or a unique prefix of it. */
struct find {
    const char *want;
    struct storage_model_info found;
    int exact, prefixes;
};

static int
find_row(const struct storage_model_info *m, void *arg)
{
    struct find *f = arg;

    if (!strcmp(m->version, f->want)) {
        f->found = *m;
        f->exact = 1;
        return 1;
    }
    if (!strncmp(m->version, f->want, strlen(f->want))) {
        if (!f->prefixes++)
            f->found = *m;
    }
    return 0;
}

/* Looks version up in db into out. Returns 0, or 1 after reporting an error. */
static int
lookup(const char *db, const char *version, struct storage_model_info *out)
{
    struct find f = {.want = version};
    char err[1024] = "";

    if (storage_model_list(db, find_row, &f, err, sizeof(err)) < 0) {
        cli_errorf("models", "%s", err);
        return 1;
    }
    if (!f.exact && f.prefixes != 1) {
        if (f.prefixes > 1)
            cli_errorf("models", "%s: %d versions start with \"%s\"; give more of it", db,
                       f.prefixes, version);
        else
            cli_errorf("models", "%s: no model version \"%s\" (triage models --db %s lists them)",
                       db, version, db);
        return 1;
    }
    *out = f.found;
    return 0;
}

/* Loads path and checks it holds version (NULL: any). Returns 0, or 1 after reporting
 * an error. Fills got (may be NULL; size 80) with the file's version. */
static int
check_file(const char *path, const char *version, char *got, size_t gotlen)
{
    char err[512] = "";
    struct router_model *m = router_model_load(path, err, sizeof(err));
    int rc = 0;

    if (!m) {
        cli_errorf("models", "%s: does not load: %s", path, err);
        return 1;
    }
    if (version && strcmp(router_model_version(m), version)) {
        cli_errorf("models", "%s holds model version %s, not %s: the file was replaced", path,
                   router_model_version(m), version);
        rc = 1;
    }
    if (got)
        snprintf(got, gotlen, "%s", router_model_version(m));
    router_model_unref(m);
    return rc;
}

/* The champion's version into buf ("" when there is none). Returns 0, or 1 after
 * reporting an error. */
static int
champion_version(const char *db, char *buf, size_t len)
{
    struct storage_model_info c;
    char err[1024] = "";
    int rc = storage_model_champion(db, &c, err, sizeof(err));

    buf[0] = '\0';
    if (rc == -ENOENT)
        return 0;
    if (rc < 0) {
        cli_errorf("models", "%s", err);
        return 1;
    }
    snprintf(buf, len, "%s", c.version);
    return 0;
}

static int
do_list(const char *db, int json)
{
    char err[1024] = "";
    int rows = 0, n;

    if (json) {
        json_t *a = json_array();
        n = storage_model_list(db, json_row, a, err, sizeof(err));
        if (n >= 0 && (json_dumpf(a, stdout, JSON_INDENT(2)) < 0 || fputc('\n', stdout) == EOF)) {
            snprintf(err, sizeof(err), "writing stdout failed");
            n = -EIO;
        }
        json_decref(a);
    } else {
        n = storage_model_list(db, print_row, &rows, err, sizeof(err));
        if (n == 0)
            printf("no model versions in %s: triaged records its model at start, "
                   "triage models add FILE records one\n",
                   db);
    }
    if (n < 0) {
        cli_errorf("models", "%s", err);
        return 1;
    }
    return fflush(stdout) ? 1 : 0;
}

static int
do_promote(const char *db, const char *version)
{
    struct storage_model_info m;
    char before[80], err[1024] = "";

    if (lookup(db, version, &m) || check_file(m.path, m.version, NULL, 0) ||
        champion_version(db, before, sizeof(before)))
        return 1;
    if (!strcmp(before, m.version)) {
        printf("%s is the champion already\n", m.version);
        return 0;
    }
    if (storage_model_promote(db, m.version, err, sizeof(err)) < 0) {
        cli_errorf("models", "%s", err);
        return 1;
    }
    printf("champion: %s (%s)\nwas:      %s\n%s", m.version, m.path, before[0] ? before : "none",
           reload_hint);
    return 0;
}

static int
do_rollback(const char *db)
{
    struct storage_model_info now;
    char before[80], err[1024] = "";

    if (champion_version(db, before, sizeof(before)))
        return 1;
    int rc = storage_model_rollback(db, &now, err, sizeof(err));
    if (rc < 0) {
        cli_errorf("models", "%s: %s", db, err);
        return 1;
    }
    /* The registry chose; a file that no longer loads must not become what the daemon
     * is told to serve, so put the champion back. */
    if (check_file(now.path, now.version, NULL, 0)) {
        if (storage_model_promote(db, before, err, sizeof(err)) < 0)
            cli_errorf("models", "and putting %s back failed: %s", before, err);
        else
            cli_errorf("models", "not rolled back to %s: %s is champion still", now.version,
                       before);
        return 1;
    }
    printf("champion: %s (%s)\nwas:      %s (now retired)\n%s", now.version, now.path, before,
           reload_hint);
    return 0;
}

static int
do_add(const char *db, const char *file, int promote)
{
    struct storage_model_info m;
    char version[80], parent[80], err[1024] = "", abs[PATH_MAX];

    if (check_file(file, NULL, version, sizeof(version)))
        return 1;
    /* The daemon reads the path from wherever it runs. */
    if (!realpath(file, abs)) {
        cli_errorf("models", "%s: %s", file, strerror(errno));
        return 1;
    }
    struct find f = {.want = version};
    parent[0] = '\0';
    /* A log that does not exist yet is made by storage_model_add; nothing to look up. */
    if (access(db, F_OK) == 0 && (champion_version(db, parent, sizeof(parent)) ||
                                  storage_model_list(db, find_row, &f, err, sizeof(err)) < 0)) {
        if (err[0])
            cli_errorf("models", "%s", err);
        return 1;
    }
    if (f.exact) {
        /* Replacing the row would drop its history (status, lineage, metrics). */
        printf("%s is in the registry already, %s, at %s\n", version, f.found.status, f.found.path);
        return promote ? do_promote(db, version) : 0;
    }
    memset(&m, 0, sizeof(m));
    snprintf(m.version, sizeof(m.version), "%s", version);
    if ((size_t)snprintf(m.path, sizeof(m.path), "%s", abs) >= sizeof(m.path)) {
        cli_errorf("models", "%s: path too long for the registry", abs);
        return 1;
    }
    snprintf(m.parent, sizeof(m.parent), "%s", parent);
    snprintf(m.source, sizeof(m.source), "manual");
    snprintf(m.status, sizeof(m.status), "%s", promote ? "champion" : "candidate");
    m.train_examples = -1;
    m.holdout_n = -1;
    m.apgr = NAN;
    m.parent_apgr = NAN;
    m.esc_holdout_n = -1;
    m.esc_auc = m.parent_esc_auc = NAN;
    if (storage_model_add(db, &m, err, sizeof(err)) < 0) {
        cli_errorf("models", "%s", err);
        return 1;
    }
    if (promote)
        printf("champion: %s (%s)\nwas:      %s\n%s", version, abs, parent[0] ? parent : "none",
               reload_hint);
    else
        printf("added %s (%s) as a candidate; triage models promote %s --db %s serves it\n",
               version, abs, version, db);
    return 0;
}

int
cli_models(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"db", required_argument, NULL, 'd'},
        {"json", no_argument, NULL, 'j'},
        {"promote", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const char *const actions[] = {"list", "promote", "rollback", "add"};
    const char *db = NULL, *action = NULL;
    int json = 0, promote = 0, ch;

    /* The action is the first word; getopt then sees it as its argv[0]. */
    if (argc > 1 && argv[1][0] != '-') {
        action = argv[1];
        argc--;
        argv++;
    }
    optind = 1;
    while ((ch = getopt_long(argc, argv, "d:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'd':
            db = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'p':
            promote = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    /* The action may come after the options too: triage models --db F rollback. */
    if (!action && optind < argc)
        action = argv[optind++];
    if (!action)
        action = "list";
    int known = 0;
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
        known |= !strcmp(action, actions[i]);
    if (!known) {
        cli_errorf("models", "unknown action '%s' (list, promote, rollback, add)", action);
        return 2;
    }
    int want_args = !strcmp(action, "promote") || !strcmp(action, "add");
    int nargs = argc - optind;
    const char *arg = nargs ? argv[optind] : NULL;
    if (nargs < want_args) {
        cli_errorf("models", "%s needs %s", action,
                   strcmp(action, "add") ? "a VERSION" : "a model FILE");
        return 2;
    }
    if (nargs > want_args) {
        cli_errorf("models", "unexpected argument '%s'", argv[optind + want_args]);
        return 2;
    }
    if (!db) {
        cli_errorf("models", "--db FILE is required (the outcome log, [storage] path)");
        return 2;
    }
    if ((json && strcmp(action, "list")) || (promote && strcmp(action, "add"))) {
        cli_errorf("models", "%s is for %s only", json ? "--json" : "--promote",
                   json ? "list" : "add");
        return 2;
    }
    /* Only add may start a log; elsewhere a missing file is most likely a typo. */
    if (strcmp(action, "add") && !storage_target_is_pg(db) && access(db, F_OK) < 0 &&
        errno == ENOENT) {
        cli_errorf("models", "%s: no such file (the outcome log, [storage] path)", db);
        return 1;
    }
    if (!strcmp(action, "list"))
        return do_list(db, json);
    if (!strcmp(action, "promote"))
        return do_promote(db, arg);
    if (!strcmp(action, "rollback"))
        return do_rollback(db);
    return do_add(db, arg, promote);
}
