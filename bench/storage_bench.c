/* storage_bench.c - measures the rows/s the storage writer sustains and the cost of a stats call.
 *
 * usage: storage_bench [-n RECORDS] [-t THREADS] [-d DB] [-k] [-p PROMPT_BYTES] [-w 24h] [-r]
 * Submits RECORDS realistic records from THREADS threads (in time order over the last
 * 24 h; -r: random times, the worst case for the time index),
 * times until the writer has committed them all (storage_close drains), then times
 * storage_stats over the window. -k keeps the database file. DB may be a postgresql://
 * URL (an empty database: the bench does not clear it). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "storage.h"

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct producer {
    struct storage *s;
    int id, n, prompt_bytes, random_times;
    int64_t now_ms;
    long refused;
    double submit_s; /* wall time spent inside storage_submit */
};

static uint64_t
rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void *
produce(void *arg)
{
    struct producer *p = arg;
    uint64_t x = 0x9e3779b97f4a7c15ULL * (uint64_t)(p->id + 1);
    char buf[128];

    for (int i = 0; i < p->n; i++) {
        struct storage_record *r = storage_record_new();
        int strong = rnd(&x) % 10 < 3;
        snprintf(buf, sizeof(buf), "req-%d-%08d-%016llx", p->id, i, (unsigned long long)rnd(&x));
        r->request_id = strdup(buf);
        /* Arrivals in time order over the last 24 h, finishing out of order by up
         * to a few seconds, like a real log (-r: uniformly random instead). */
        if (p->random_times)
            r->started_ms = p->now_ms - (int64_t)(rnd(&x) % 86400000);
        else
            r->started_ms = p->now_ms - 86400000 + (int64_t)((double)i / p->n * 86399000.0) -
                            (int64_t)(rnd(&x) % 5000);
        r->finished_ms = r->started_ms + 300 + (int64_t)(rnd(&x) % 5000);
        r->key_id = strdup("team-a");
        r->requested_model = strdup("triage");
        r->backend = strdup(strong ? "strong" : "fast");
        r->route_reason = strdup("threshold");
        r->score = (double)(rnd(&x) % 1000) / 1000.0;
        r->threshold = 0.7;
        r->model_version = strdup("default-1");
        r->features_digest = rnd(&x);
        snprintf(buf, sizeof(buf), "%016llx%016llx%016llx%016llx", (unsigned long long)rnd(&x),
                 (unsigned long long)rnd(&x), (unsigned long long)rnd(&x),
                 (unsigned long long)rnd(&x));
        r->prompt_hash = strdup(buf);
        if (p->prompt_bytes > 0) {
            r->prompt = malloc((size_t)p->prompt_bytes + 1);
            memset(r->prompt, 'p', (size_t)p->prompt_bytes);
            r->prompt[p->prompt_bytes] = '\0';
        }
        r->status = rnd(&x) % 100 == 0 ? 502 : 200;
        if (r->status != 200)
            r->error_kind = strdup("upstream_5xx");
        r->latency_ms = (double)(r->finished_ms - r->started_ms);
        r->ttfb_ms = 50 + (double)(rnd(&x) % 500);
        r->tokens_in = 50 + (int64_t)(rnd(&x) % 2000);
        r->tokens_out = 10 + (int64_t)(rnd(&x) % 1000);
        r->finish_reason = strdup("stop");
        r->cost_usd = strong ? ((double)r->tokens_in * 10 + (double)r->tokens_out * 30) / 1e6
                             : ((double)r->tokens_in * 0.5 + (double)r->tokens_out * 1.5) / 1e6;
        double t0 = now_s();
        if (storage_submit(p->s, r) != 0)
            p->refused++;
        p->submit_s += now_s() - t0;
    }
    return NULL;
}

int
main(int argc, char **argv)
{
    int n = 500000, threads = 2, keep = 0, prompt_bytes = 0, random_times = 0, ch;
    const char *db = "/tmp/triage-storage-bench.db", *window = "24h";
    char err[512] = "", p[600];

    while ((ch = getopt(argc, argv, "n:t:d:kp:w:r")) != -1) {
        switch (ch) {
        case 'n':
            n = atoi(optarg);
            break;
        case 't':
            threads = atoi(optarg);
            break;
        case 'd':
            db = optarg;
            break;
        case 'k':
            keep = 1;
            break;
        case 'p':
            prompt_bytes = atoi(optarg);
            break;
        case 'w':
            window = optarg;
            break;
        case 'r':
            random_times = 1;
            break;
        default:
            fprintf(
                stderr,
                "usage: storage_bench [-n N] [-t THREADS] [-d DB] [-k] [-p BYTES] [-w W] [-r]\n");
            return 2;
        }
    }
    if (threads < 1 || threads > 64 || n < threads) {
        fprintf(stderr, "storage_bench: bad -n/-t\n");
        return 2;
    }
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s%s", db, sfx[i]);
        unlink(p);
    }

    /* A queue as large as the run: measures the writer's throughput, not drops. */
    struct storage_options opt = {
        .queue_size = (uint32_t)n, .batch_size = 512, .flush_interval_ms = 200};
    struct storage *s = storage_open(db, &opt, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "storage_bench: %s\n", err);
        return 1;
    }
    pthread_t th[64];
    struct producer pr[64];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;

    double t0 = now_s();
    for (int i = 0; i < threads; i++) {
        pr[i] = (struct producer){.s = s,
                                  .id = i,
                                  .n = n / threads,
                                  .now_ms = now_ms,
                                  .prompt_bytes = prompt_bytes,
                                  .random_times = random_times};
        pthread_create(&th[i], NULL, produce, &pr[i]);
    }
    long refused = 0;
    double submit_s = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        refused += pr[i].refused;
        submit_s += pr[i].submit_s;
    }
    double t_submitted = now_s();
    struct storage_counters c;
    storage_get_counters(s, &c);
    uint64_t written_at_submit_end = c.written;
    storage_flush(s, 0);
    double t_drained = now_s();
    storage_get_counters(s, &c);
    storage_close(s);

    long total = (long)(n / threads) * threads;
    printf("records        %ld from %d threads (prompt %d bytes)\n", total, threads, prompt_bytes);
    printf("submit         %.3f s for all threads; mean %.2f us per storage_submit call\n",
           t_submitted - t0, submit_s / (double)total * 1e6);
    printf("written        %llu (at end of submit: %llu), dropped %llu, failed %llu\n",
           (unsigned long long)c.written, (unsigned long long)written_at_submit_end,
           (unsigned long long)c.dropped, (unsigned long long)c.failed);
    printf("drain          %.3f s from first submit to last commit\n", t_drained - t0);
    printf("writer         %.0f rows/s sustained\n", (double)c.written / (t_drained - t0));
    (void)refused;

    const struct storage_price prices[] = {{"fast", 0.5, 1.5}, {"strong", 10, 30}};
    for (int i = 0; i < 3; i++) {
        double s0 = now_s();
        json_t *j = storage_stats(db, window, prices, 2, 0, err, sizeof(err));
        double s1 = now_s();
        if (!j) {
            fprintf(stderr, "storage_bench: stats: %s\n", err);
            return 1;
        }
        printf("stats %-4s     %.3f s over %lld rows (run %d)\n", window, s1 - s0,
               (long long)json_integer_value(json_object_get(j, "requests")), i + 1);
        json_decref(j);
    }
    if (!keep)
        for (int i = 0; i < 3; i++) {
            snprintf(p, sizeof(p), "%s%s", db, sfx[i]);
            unlink(p);
        }
    else
        printf("kept           %s\n", db);
    return 0;
}
