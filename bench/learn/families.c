/* families.c - the learning loop on prompt families the base model never saw, offline.
 *
 * Reads every labelled set of data/ as JSONL on stdin (families.sh feeds them). For each
 * family F of the table below:
 *  1. the base model is trained as tools/train_default.sh trains the shipped one, on the
 *     shipped sets (RouteLLM MMLU, MMLU-Pro, LLMRouter train, MATH train) less F, less
 *     F's siblings (the same questions in another set: any base prompt whose question
 *     stem is one of F's, and the sets named in the table), so F is unseen;
 *  2. F's prompts are shuffled (seeded) into a pool of up to max(N) "judged" prompts and
 *     a test part (the rest, at least 40%); the pool's labels are the true ones flipped
 *     with probability --noise per answer (the replay judge agrees with RouteLLM's labels
 *     on ~98% of answers);
 *  3. challengers are trained by router_train_log — the recipe of daemon/retrain.c and
 *     `triage train --db` — on the base set plus the first N pool prompts, for each N;
 *  4. every model's APGR on F's test part: base, each N, and the log alone (the whole
 *     pool, as with base_data none).
 * DEV families are for tuning the recipe; TEST families are reported, never tuned on.
 * The shipped model is no yardstick here: it was trained on these very test prompts.
 * Families train on --jobs threads (router_train only reads the dataset).
 *
 *   families [--split dev|test|all] [--noise P] [--seed N] [--n 50,100,200,400]
 *            [--only NAME] [--jobs J]
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "router.h"

#define MAX_N 8
#define MAX_JOBS 16

/* The data sets, as their lines' "set" names them; base: the shipped model's. */
static const struct {
    const char *name;
    int base;
} sets[] = {
    {"routellm-mmlu", 1}, {"mmlu-pro", 1}, {"llmrouter", 1}, {"math-train", 1},
    {"llmrouter-test", 0}, {"routellm-gsm8k", 0},
};
#define N_SETS (sizeof(sets) / sizeof(*sets))

/* MMLU's subjects by category (Hendrycks et al.'s grouping; unlisted subjects: other). */
static const char *const mmlu_stem[] = {
    "abstract_algebra", "astronomy", "college_biology", "college_chemistry",
    "college_computer_science", "college_mathematics", "college_physics", "computer_security",
    "conceptual_physics", "electrical_engineering", "elementary_mathematics",
    "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_mathematics", "high_school_physics", "high_school_statistics",
    "machine_learning", NULL};
static const char *const mmlu_humanities[] = {
    "formal_logic", "high_school_european_history", "high_school_us_history",
    "high_school_world_history", "international_law", "jurisprudence", "logical_fallacies",
    "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law",
    "world_religions", NULL};
static const char *const mmlu_social[] = {
    "econometrics", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
    "human_sexuality", "professional_psychology", "public_relations", "security_studies",
    "sociology", "us_foreign_policy", NULL};

/* A family: the lines of one set whose `field` is one of `values` (NULL: all of the set;
 * "*other*": MMLU subjects in no list above); drop: more sets (or "task:NAME" of
 * LLMRouter) removed from its base as siblings. */
struct family {
    const char *name;
    int test; /* 0 DEV, 1 TEST */
    const char *set, *field;
    const char *const *values;
    const char *drop[3];
};

#define V(...) ((const char *const[]){__VA_ARGS__, NULL})
/* The split was fixed before any result was looked at: each source gives DEV and TEST
 * families, and GSM8K, whose numbers this loop was first tuned on, is TEST. LLMRouter's
 * natural_qa and trivia_qa are left out: there the weak model does as well as the strong
 * one (mean 0.416 vs 0.380, 0.198 vs 0.185), so APGR, a share of a gap near 0, is noise
 * (it ran from -3.4 to 0.95 on them); its tasks of ~200 prompts are too few for N = 200. */
static const struct family families[] = {
    {"mmlu-stem", 0, "routellm-mmlu", "group", mmlu_stem, {NULL}},
    {"mmlu-social", 0, "routellm-mmlu", "group", mmlu_social, {NULL}},
    {"pro-law", 0, "mmlu-pro", "group", V("law"), {NULL}},
    {"pro-business", 0, "mmlu-pro", "group", V("business"), {NULL}},
    {"pro-chemistry", 0, "mmlu-pro", "group", V("chemistry"), {NULL}},
    {"lr-mbpp", 0, "llmrouter*", "task", V("mbpp"), {NULL}},
    {"lr-arc_challenge", 0, "llmrouter*", "task", V("arc_challenge"), {NULL}},
    {"mmlu-humanities", 1, "routellm-mmlu", "group", mmlu_humanities, {NULL}},
    {"mmlu-other", 1, "routellm-mmlu", "group", V("*other*"), {NULL}},
    {"pro-math", 1, "mmlu-pro", "group", V("math"), {NULL}},
    {"pro-psychology", 1, "mmlu-pro", "group", V("psychology"), {NULL}},
    {"lr-commonsense_qa", 1, "llmrouter*", "task", V("commonsense_qa"), {NULL}},
    {"lr-math", 1, "llmrouter*", "task", V("math"), {"math-train", NULL}},
    {"gsm8k", 1, "routellm-gsm8k", NULL, NULL, {"task:gsm8k", "task:agentverse-mgsm", NULL}},
};
#define N_FAMILIES (sizeof(families) / sizeof(*families))

struct row {
    int set;            /* index in sets[] */
    char *group, *task; /* "" when absent */
    uint64_t stem;      /* hash of the question stem, 0 when too short to tell */
    char *line;         /* the JSON text, to re-add with judge labels */
};

static struct row *rows;
static size_t n_rows;

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

/* The question before its options ("\nA."), letters and digits only, lower case: the same
 * question in RouteLLM MMLU, MMLU-Pro and LLMRouter hashes alike. 0 below 24 characters. */
static uint64_t
stem_hash(const char *p)
{
    const char *end = strstr(p, "\nA.");
    uint64_t h = 1469598103934665603ull;
    size_t n = 0;

    for (; *p && (!end || p < end); p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c >= 0x80) {
            h = (h ^ c) * 1099511628211ull;
            n++;
        }
    }
    return n >= 24 ? (h ? h : 1) : 0;
}

static int
in_list(const char *const *v, const char *s)
{
    for (; v && *v; v++)
        if (strcmp(*v, s) == 0)
            return 1;
    return 0;
}

static int
member(const struct family *f, const struct row *r)
{
    const char *set = sets[r->set].name;

    if (strcmp(f->set, "llmrouter*") == 0 ? strncmp(set, "llmrouter", 9) : strcmp(f->set, set))
        return 0;
    if (!f->field)
        return 1;
    const char *v = strcmp(f->field, "task") == 0 ? r->task : r->group;
    if (in_list(f->values, "*other*"))
        return !in_list(mmlu_stem, v) && !in_list(mmlu_humanities, v) && !in_list(mmlu_social, v);
    return in_list(f->values, v);
}

static int
dropped(const struct family *f, const struct row *r)
{
    for (size_t k = 0; k < 3 && f->drop[k]; k++) {
        const char *d = f->drop[k];
        if (strncmp(d, "task:", 5) == 0 ? strcmp(d + 5, r->task) == 0
                                        : strcmp(d, sets[r->set].name) == 0)
            return 1;
    }
    return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static char *
str_field(const json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    char *s = strdup(v ? v : "");
    if (!s)
        abort();
    return s;
}

/* APGR of m on d's examples idx[0..n); NAN when undefined. */
static double
apgr(const struct router_model *m, const struct router_dataset *d, const size_t *idx, size_t n)
{
    int w = router_dataset_head_find(d, "weak"), s = router_dataset_head_find(d, "strong");
    double *sc = malloc(n * sizeof(double)), *qw = malloc(n * sizeof(double)),
           *qs = malloc(n * sizeof(double));
    struct router_eval ev;
    size_t k = 0;

    if (!sc || !qw || !qs)
        abort();
    for (size_t i = 0; i < n; i++) {
        struct router_scores r;
        if (router_dataset_score(m, d, idx[i], &r) < 0)
            continue;
        sc[k] = r.score;
        qw[k] = router_dataset_outcome(d, idx[i], w);
        qs[k] = router_dataset_outcome(d, idx[i], s);
        k++;
    }
    double a = k && router_eval_routing(sc, qw, qs, k, &ev) == 0 ? ev.apgr : NAN;
    free(sc);
    free(qw);
    free(qs);
    return a;
}

/* Sums for a mean per column. */
struct col {
    double sum, dsum; /* APGR, and APGR minus the base model's on the same family */
    int n;
};

static void
col_add(struct col *c, double x, double base)
{
    if (!isnan(x) && !isnan(base)) {
        c->sum += x;
        c->dsum += x - base;
        c->n++;
    }
}

static void
cell(double x)
{
    if (isnan(x))
        printf(" — |");
    else
        printf(" %.3f |", x);
}

static void
usage(void)
{
    fprintf(stderr, "usage: families [--split dev|test|all] [--noise P] [--seed N] "
                    "[--n 50,100,200,400] [--only NAME] [--jobs J]\n");
    exit(2);
}

/* One family's run: its prompts' indices in the dataset and its results. */
struct job {
    const struct family *f;
    size_t *base, nb, n_dup; /* the base set without F; base prompts dropped as F's */
    size_t *test, n_test, nf;
    size_t *log, pool;       /* F's pool again, with judge labels */
    double a[MAX_N + 2];     /* APGR: base, each N, log alone */
};

static struct {
    const struct router_dataset *d;
    const struct router_train_opts *o;
    struct job *jobs;
    size_t n_jobs;
    const size_t *ns;
    size_t n_ns;
    atomic_size_t next;
} work;

/* Trains and evaluates one family's models; NAN where training failed. */
static void
run_job(struct job *j)
{
    const struct router_dataset *d = work.d;
    char err[256];

    for (size_t k = 0; k < MAX_N + 2; k++)
        j->a[k] = NAN;
    for (size_t k = 0; k <= work.n_ns + 1; k++) {
        struct router_model *m;
        if (k == 0)
            m = router_train(d, j->base, j->nb, work.o, err, sizeof(err));
        else if (k <= work.n_ns)
            m = work.ns[k - 1] > j->pool ? NULL
                                         : router_train_log(d, j->base, j->nb, j->log,
                                                            work.ns[k - 1], work.o, err,
                                                            sizeof(err));
        else
            m = router_train_log(d, NULL, 0, j->log, j->pool, work.o, err, sizeof(err));
        if (m)
            j->a[k] = apgr(m, d, j->test, j->n_test);
        router_model_unref(m);
    }
    fprintf(stderr, "families: %s done\n", j->f->name);
}

static void *
worker(void *arg)
{
    size_t i;

    (void)arg;
    while ((i = atomic_fetch_add(&work.next, 1)) < work.n_jobs)
        run_job(&work.jobs[i]);
    return NULL;
}

/* Sets up family f's job: its base, its shuffled prompts, its pool re-added to d with
 * judge labels. Returns 0 or -1. */
static int
prepare(struct job *j, const struct family *f, struct router_dataset *d, size_t max_n,
        double noise, uint64_t seed)
{
    size_t nf = 0, nb = 0, n_st = 0, n_dup = 0;
    size_t *fam = malloc(n_rows * sizeof(size_t)), *base = malloc(n_rows * sizeof(size_t));
    uint64_t *stems = malloc(n_rows * sizeof(uint64_t));

    if (!fam || !base || !stems)
        abort();
    for (size_t i = 0; i < n_rows; i++)
        if (member(f, &rows[i])) {
            fam[nf++] = i;
            if (rows[i].stem)
                stems[n_st++] = rows[i].stem;
        }
    qsort(stems, n_st, sizeof(uint64_t), cmp_u64);
    for (size_t i = 0; i < n_rows; i++) {
        const struct row *r = &rows[i];
        if (!sets[r->set].base || member(f, r) || dropped(f, r))
            continue;
        if (r->stem && bsearch(&r->stem, stems, n_st, sizeof(uint64_t), cmp_u64)) {
            n_dup++;
            continue;
        }
        base[nb++] = i;
    }
    free(stems);
    /* the pool and the test part, by a shuffle seeded with the seed and the name */
    uint64_t rng = seed;
    for (const char *p = f->name; *p; p++)
        rng = rng * 31 + (unsigned char)*p;
    for (size_t i = nf; i > 1; i--) {
        size_t k = (size_t)(rng_next(&rng) % i), t = fam[i - 1];
        fam[i - 1] = fam[k];
        fam[k] = t;
    }
    size_t pool = nf * 6 / 10 < max_n ? nf * 6 / 10 : max_n;
    size_t *log = malloc((pool + 1) * sizeof(size_t));
    if (!log)
        abort();
    /* the pool again, with judge labels: each answer's label flipped with p = noise */
    for (size_t k = 0; k < pool; k++) {
        json_t *x = json_loads(rows[fam[k]].line, 0, NULL);
        json_t *out = json_object_get(x, "outcomes");
        static const char *const heads[] = {"weak", "strong"};
        for (size_t h = 0; h < 2; h++) {
            double q = json_number_value(json_object_get(out, heads[h]));
            if (rng_unit(&rng) < noise)
                json_object_set_new(out, heads[h], json_real(1.0 - q));
        }
        log[k] = router_dataset_size(d);
        int rc = router_dataset_add(d, x);
        json_decref(x);
        if (rc < 0) {
            fprintf(stderr, "families: cannot re-add a prompt of %s\n", f->name);
            free(fam);
            free(base);
            free(log);
            return -1;
        }
    }
    *j = (struct job){.f = f, .base = base, .nb = nb, .n_dup = n_dup, .test = fam,
                      .n_test = nf - pool, .nf = nf, .log = log, .pool = pool};
    memmove(fam, fam + pool, j->n_test * sizeof(size_t)); /* the test part */
    return 0;
}

int
main(int argc, char **argv)
{
    const char *split = "all", *only = NULL;
    double noise = 0.03;
    uint64_t seed = 1;
    size_t ns[MAX_N], n_ns = 0, max_n = 0;
    int jobs = 2;

    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        if (strcmp(argv[i], "--split") == 0)
            split = argv[++i];
        else if (strcmp(argv[i], "--noise") == 0)
            noise = atof(argv[++i]);
        else if (strcmp(argv[i], "--seed") == 0)
            seed = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--only") == 0)
            only = argv[++i];
        else if (strcmp(argv[i], "--jobs") == 0)
            jobs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--n") == 0) {
            for (char *p = argv[++i]; *p;) {
                char *end;
                if (n_ns == MAX_N)
                    usage();
                ns[n_ns] = strtoul(p, &end, 10);
                if (end == p || ns[n_ns] == 0)
                    usage();
                max_n = ns[n_ns] > max_n ? ns[n_ns] : max_n;
                n_ns++;
                p = *end == ',' ? end + 1 : end;
            }
        } else
            usage();
    }
    if (strcmp(split, "dev") && strcmp(split, "test") && strcmp(split, "all"))
        usage();
    if (n_ns == 0) {
        static const size_t def[] = {50, 100, 200, 400};
        memcpy(ns, def, sizeof(def));
        n_ns = 4;
        max_n = 400;
    }
    if (!(noise >= 0 && noise <= 1) || jobs < 1 || jobs > MAX_JOBS)
        usage();

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct router_dataset *d = router_dataset_new(18);
    size_t cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, stdin)) > 0) {
        json_t *o = json_loadb(line, (size_t)len, 0, NULL);
        const char *set = json_string_value(json_object_get(o, "set"));
        int s = -1;
        for (size_t k = 0; set && k < N_SETS; k++)
            if (strcmp(sets[k].name, set) == 0)
                s = (int)k;
        size_t before = router_dataset_size(d);
        if (s < 0 || !json_object_get(o, "outcomes") || router_dataset_add(d, o) < 0 ||
            router_dataset_size(d) == before) {
            json_decref(o);
            continue;
        }
        if (n_rows == cap) {
            cap = cap ? cap * 2 : 65536;
            rows = realloc(rows, cap * sizeof(*rows));
            if (!rows)
                abort();
        }
        struct row *r = &rows[n_rows++];
        r->set = s;
        r->group = str_field(o, "group");
        r->task = str_field(o, "task");
        r->stem = stem_hash(json_string_value(json_object_get(o, "prompt")));
        r->line = strndup(line, (size_t)len);
        if (!r->line)
            abort();
        json_decref(o);
    }
    free(line);
    if (n_rows != router_dataset_size(d)) {
        fprintf(stderr, "families: dataset and rows out of step\n");
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "families: %zu labelled prompts read in %.1f s\n", n_rows,
            (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);

    struct router_train_opts o;
    router_train_opts_tuned(&o); /* as tools/train_default.sh and a retrain */
    o.weak = "weak";
    o.strong = "strong";
    struct job js[N_FAMILIES];
    size_t n_js = 0;
    for (size_t fi = 0; fi < N_FAMILIES; fi++) {
        const struct family *f = &families[fi];
        if ((strcmp(split, "dev") == 0 && f->test) || (strcmp(split, "test") == 0 && !f->test) ||
            (only && strcmp(only, f->name)))
            continue;
        if (prepare(&js[n_js], f, d, max_n, noise, seed) < 0)
            return 1;
        n_js++;
    }
    work.d = d;
    work.o = &o;
    work.jobs = js;
    work.n_jobs = n_js;
    work.ns = ns;
    work.n_ns = n_ns;
    pthread_t th[MAX_JOBS];
    for (int t = 0; t < jobs; t++)
        if (pthread_create(&th[t], NULL, worker, NULL) != 0) {
            fprintf(stderr, "families: cannot start a thread\n");
            return 1;
        }
    for (int t = 0; t < jobs; t++)
        pthread_join(th[t], NULL);

    struct col cols[2][MAX_N + 2];
    memset(cols, 0, sizeof(cols));
    int header = -1;
    for (size_t i = 0; i < n_js; i++) {
        const struct job *j = &js[i];
        if (header != j->f->test) {
            printf("\n%s families (noise %.2f, seed %llu)\n\n| family | prompts | test | "
                   "base prompts dropped as F's | base (never saw F) |",
                   j->f->test ? "TEST" : "DEV", noise, (unsigned long long)seed);
            for (size_t k = 0; k < n_ns; k++)
                printf(" +%zu judged |", ns[k]);
            printf(" log alone (pool) |\n|---|---:|---:|---:|---:|");
            for (size_t k = 0; k < n_ns + 1; k++)
                printf("---:|");
            printf("\n");
            header = j->f->test;
        }
        printf("| %s | %zu | %zu | %zu |", j->f->name, j->nf, j->n_test, j->n_dup);
        for (size_t k = 0; k < n_ns + 2; k++) {
            if (k == n_ns + 1)
                printf(" %.3f (%zu) |", j->a[k], j->pool);
            else
                cell(j->a[k]);
            col_add(&cols[j->f->test][k], j->a[k], j->a[0]);
        }
        printf("\n");
    }
    for (int t = 0; t < 2; t++) {
        if (cols[t][0].n == 0)
            continue;
        printf("| **mean %s** (%d) | | | |", t ? "TEST" : "DEV", cols[t][0].n);
        for (size_t k = 0; k < n_ns + 2; k++) {
            const struct col *c = &cols[t][k];
            if (c->n == 0)
                printf(" — |");
            else if (c->n != cols[t][0].n)
                printf(" %.3f (%d) |", c->sum / c->n, c->n);
            else
                printf(" %.3f |", c->sum / c->n);
        }
        printf("\n");
        /* the mean gain over the base model, on the same families */
        printf("| mean gain over base | | | | |");
        for (size_t k = 1; k < n_ns + 2; k++) {
            const struct col *c = &cols[t][k];
            if (c->n)
                printf(" %+.3f |", c->dsum / c->n);
            else
                printf(" — |");
        }
        printf("\n");
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("\nrandom routing: 0.500. %.0f s in all (%d jobs).\n",
           (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9, jobs);
    for (size_t i = 0; i < n_js; i++) {
        free(js[i].base);
        free(js[i].test);
        free(js[i].log);
    }
    for (size_t i = 0; i < n_rows; i++) {
        free(rows[i].group);
        free(rows[i].task);
        free(rows[i].line);
    }
    free(rows);
    router_dataset_destroy(d);
    return 0;
}
