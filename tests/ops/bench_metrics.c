/* bench_metrics.c - CPU cost of metrics_record_request() per call, per thread, and of one
 * render. Usage: bench_metrics [THREADS] (default 2); `meson test --benchmark --suite ops`. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ops/ops.h"

#define N 2000000
#define MAX_THREADS 16

static struct metrics *m;
static double cpu_s[MAX_THREADS];

static double
cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *
run(void *arg)
{
    static const char *const reasons[] = {"threshold", "passthrough", "fallback"};
    long id = (long)arg;
    double t0 = cpu_now();
    for (int i = 0; i < N; i++) {
        struct metrics_request r = {
            .backend = i & 1,
            .reason = reasons[i % 3],
            .status = i % 50 ? 200 : 502,
            .latency_s = 0.5 + (i % 100) * 0.1,
            .ttfb_s = 0.1,
            .score = (i % 100) / 100.0,
            .tokens_in = 400,
            .tokens_out = 200,
            .cost_usd = 0.0004,
            .overhead_s = 0.00002,
        };
        metrics_record_request(m, &r);
    }
    cpu_s[id] = cpu_now() - t0;
    return NULL;
}

int
main(int argc, char **argv)
{
    static const char *const names[] = {"fast", "strong"};
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (threads < 1 || threads > MAX_THREADS)
        threads = 2;
    m = metrics_create(names, 2);
    pthread_t th[MAX_THREADS];
    for (long i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, run, (void *)i);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < threads; i++)
        printf("thread %d: %.1f ns CPU per metrics_record_request (%d calls)\n", i,
               cpu_s[i] / N * 1e9, N);
    size_t len;
    double t0 = cpu_now();
    char *text = metrics_render(m, &len);
    printf("metrics_render: %zu bytes in %.3f ms CPU\n", len, (cpu_now() - t0) * 1e3);
    free(text);
    metrics_destroy(m);
    return 0;
}
