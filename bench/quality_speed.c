/* quality_speed.c - the predictor's speed: model load time, and median time to parse + featurise + score 1 KB and 16 KB request bodies.
 *
 * The parse is the daemon's: features_json_load, with json_loadb only for bodies it
 * declines; json_loadb's own time is printed alongside for comparison. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "prompt_features.h"
#include "router.h"

static double
now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static const char *words[] = {
    "the", "integral", "of", "a", "function", "over", "interval", "prove", "that", "every",
    "group", "order", "is", "Janet", "sells", "eggs", "market", "for", "$2", "each", "how",
    "many", "dollars", "does", "she", "make", "17", "x^2", "+", "3x", "=", "0", "Which", "of",
    "following", "statements", "true?", "A.", "B.", "C.", "D.", "Answer:", "\\frac{1}{2}",
    "photosynthesis", "enzyme", "court", "ruled", "contract", "velocity", "electron", "in",
    "and", "with", "Explain", "why", "code", "def", "return", "{", "}", "list", "sorted",
};

/* The same kind of text in other scripts (German, Russian, Greek, Chinese, Japanese,
 * full-width digits): the feature pass's non-ASCII path. */
static const char *words_intl[] = {
    "das", "Integral", "über", "Größe", "beweise", "dass", "jede", "Gruppe", "Ordnung",
    "докажите", "что", "интеграл", "функции", "Ελλάδα", "συνάρτηση", "证明", "素数有无穷多个。",
    "函数的积分", "是多少？", "素数が無限に存在することを証明せよ。", "１７", "x^2", "+",
    "=", "A.", "B.", "C.", "D.", "élève", "ÉCOLE", "Łódź", "числа", "ＡＢＣ",
};

/* Builds a chat request whose body is about `size` bytes, of English words (intl 0)
 * or of words_intl. */
static char *
make_body(size_t size, unsigned seed, int intl)
{
    const char **list = intl ? words_intl : words;
    size_t n_list = intl ? sizeof(words_intl) / sizeof(words_intl[0])
                         : sizeof(words) / sizeof(words[0]);
    size_t cap = size + 256, n = 0;
    char *text = malloc(cap);
    unsigned x = seed;

    while (n + 32 < size - 120) {
        x = x * 1103515245 + 12345;
        const char *w = list[(x >> 16) % n_list];
        n += (size_t)snprintf(text + n, cap - n, "%s%s", w, (x >> 8) % 13 == 0 ? ".\n" : " ");
    }
    json_t *req = json_pack("{s:s,s:[{s:s,s:s},{s:s,s:s}],s:i}", "model", "triage", "messages",
                            "role", "system", "content", "You are a helpful assistant.", "role",
                            "user", "content", text, "max_tokens", 512);
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    free(text);
    return body;
}

/* Parses body as triaged does. */
static json_t *
parse_fast(const char *body, size_t len)
{
    json_t *req = features_json_load(body, len);
    return req ? req : json_loadb(body, len, 0, NULL);
}

static json_t *
parse_jansson(const char *body, size_t len)
{
    return json_loadb(body, len, 0, NULL);
}

/* Median microseconds per parse + score of body over iters runs (m NULL: parse
 * only). */
static double
time_body(const struct router_model *m, json_t *(*parse)(const char *, size_t),
          const char *body, int iters, double *p99)
{
    double *t = malloc(iters * sizeof(double));
    size_t len = strlen(body);
    volatile double sink = 0;

    for (int i = -iters / 10; i < iters; i++) { /* the first tenth warms up */
        double t0 = now_us();
        json_t *req = parse(body, len);
        struct router_scores s = {0};
        if (!req || (m && router_score_request(m, req, &s) != 0)) {
            fprintf(stderr, "scoring failed\n");
            exit(1);
        }
        sink += s.score;
        json_decref(req);
        if (i >= 0)
            t[i] = now_us() - t0;
    }
    qsort(t, iters, sizeof(double), cmp_double);
    double med = t[iters / 2];
    *p99 = t[(int)(iters * 0.99)];
    free(t);
    (void)sink;
    return med;
}

int
main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "models/default.tmod";
    char err[256];
    double loads[7];
    struct stat st;
    struct router_model *m = NULL;

    for (int i = 0; i < 7; i++) {
        double t0 = now_us();
        struct router_model *l = router_model_load(path, err, sizeof(err));
        loads[i] = (now_us() - t0) / 1000;
        if (!l) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        router_model_unref(m);
        m = l;
    }
    qsort(loads, 7, sizeof(double), cmp_double);
    stat(path, &st);
    printf("model %s: %.2f MB, version %s, %u-bit hash\n", path, st.st_size / 1048576.0,
           router_model_version(m), router_model_bits(m));
    printf("load: median %.1f ms\n", loads[3]);
    size_t sizes[] = {1024, 4096, 16384, 1 << 20, 1024, 16384};
    int iters[] = {20000, 5000, 2000, 20, 20000, 2000};
    for (size_t k = 0; k < 6; k++) {
        int intl = k >= 4;
        char *body = make_body(sizes[k], 7 + (unsigned)k, intl);
        double p99, pp99, med = time_body(m, parse_fast, body, iters[k], &p99);
        double parse = time_body(NULL, parse_fast, body, iters[k], &pp99);
        double jmed = time_body(m, parse_jansson, body, iters[k], &pp99);
        double jparse = time_body(NULL, parse_jansson, body, iters[k], &pp99);
        printf("score %7zu-byte %s body (parse + features + model): median %8.1f us, p99 %8.1f us"
               " (parse alone %.1f us; with json_loadb: %.1f us, parse %.1f us)\n",
               strlen(body), intl ? "multi-script" : "English", med, p99, parse, jmed, jparse);
        free(body);
    }
    router_model_unref(m);
    router_thread_cleanup();
    return 0;
}
