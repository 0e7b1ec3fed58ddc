/* budget.c - per-key USD budgets: spend from the outcome log, cached and topped up
 * with this replica's own requests; admission without I/O. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "budget.h"
#include "log.h"
#include "storage.h"

struct entry {
    char name[AUTH_NAME_MAX + 1];
    enum auth_budget_period period;
    double limit_usd;
    int64_t base_from_ms; /* the period start the logged spend was read for; 0 = never */
    double base_usd;      /* logged spend at the last read */
    double local_usd;     /* this replica's requests since that read began */
};

struct budget {
    char *db_path;
    struct storage *st;
    uint32_t refresh_ms;
    pthread_mutex_t lock; /* guards the entries and stop */
    pthread_cond_t wake;
    struct entry *e;
    size_t n;
    int stop;
    pthread_t thread;
    int warned; /* a failed read was logged; quiet until one succeeds */
};

static int64_t
unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One read of every budgeted key's spend. Called without the lock. */
static void
refresh(struct budget *b)
{
    char err[256];
    int64_t now = unix_ms();

    pthread_mutex_lock(&b->lock);
    size_t n = b->n;
    if (!n) {
        pthread_mutex_unlock(&b->lock);
        return;
    }
    const char **names = calloc(n, sizeof(*names));
    int64_t *from = calloc(n, sizeof(*from));
    double *usd = calloc(n, sizeof(*usd)), *sub = calloc(n, sizeof(*sub));
    char (*copy)[AUTH_NAME_MAX + 1] = calloc(n, sizeof(*copy));
    if (!names || !from || !usd || !sub || !copy)
        abort();
    for (size_t i = 0; i < n; i++) {
        memcpy(copy[i], b->e[i].name, sizeof(copy[i]));
        names[i] = copy[i];
        from[i] = auth_budget_period_start(b->e[i].period, now);
        sub[i] = b->e[i].local_usd; /* what the read will include once flushed */
    }
    pthread_mutex_unlock(&b->lock);

    /* Our own finished requests first, so the read sees them. */
    int ok = !b->st || storage_flush(b->st, b->refresh_ms > 1000 ? b->refresh_ms : 1000) == 0;
    if (ok && storage_key_spend(b->db_path, names, from, n, usd, err, sizeof(err)) < 0) {
        ok = 0;
        if (!b->warned)
            log_warnx("budgets: reading spend: %s (keeping the last figures)", err);
        b->warned = 1;
    }
    if (ok) {
        b->warned = 0;
        pthread_mutex_lock(&b->lock);
        /* The set may have changed meanwhile: match by name. */
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < b->n; j++)
                if (!strcmp(b->e[j].name, names[i])) {
                    b->e[j].base_usd = usd[i];
                    b->e[j].base_from_ms = from[i];
                    /* Requests charged after the read began may be in it too: counted
                     * twice until the next read, which errs on the safe side. */
                    b->e[j].local_usd -= sub[i];
                    if (b->e[j].local_usd < 0)
                        b->e[j].local_usd = 0;
                }
        pthread_mutex_unlock(&b->lock);
    }
    free(names);
    free(from);
    free(usd);
    free(sub);
    free(copy);
}

static void *
refresher(void *arg)
{
    struct budget *b = arg;

    pthread_mutex_lock(&b->lock);
    while (!b->stop) {
        pthread_mutex_unlock(&b->lock);
        refresh(b);
        pthread_mutex_lock(&b->lock);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = (int64_t)ts.tv_nsec + (int64_t)b->refresh_ms * 1000000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        if (!b->stop)
            pthread_cond_timedwait(&b->wake, &b->lock, &ts);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

struct budget *
budget_create(const char *db_path, struct storage *st, uint32_t refresh_ms)
{
    struct budget *b = calloc(1, sizeof(*b));
    pthread_condattr_t ca;

    if (!b || !(b->db_path = strdup(db_path)))
        abort();
    b->st = st;
    b->refresh_ms = refresh_ms ? refresh_ms : 1000;
    pthread_mutex_init(&b->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&b->thread, NULL, refresher, b) != 0)
        abort();
    return b;
}

void
budget_destroy(struct budget *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->lock);
    b->stop = 1;
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->thread, NULL);
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->wake);
    free(b->e);
    free(b->db_path);
    free(b);
}

void
budget_configure(struct budget *b, const struct auth_keys *k)
{
    size_t n = auth_keys_count(k), m = 0;
    struct entry *e = calloc(n ? n : 1, sizeof(*e));

    if (!e)
        abort();
    for (size_t i = 0; i < n; i++) {
        const char *name = auth_keys_name(k, i);
        double usd;
        enum auth_budget_period p = auth_keys_budget(k, name, &usd);
        int seen = 0;
        for (size_t j = 0; j < m && !seen; j++)
            seen = !strcmp(e[j].name, name);
        if (p == AUTH_BUDGET_NONE || seen)
            continue;
        snprintf(e[m].name, sizeof(e[m].name), "%s", name);
        e[m].period = p;
        e[m].limit_usd = usd;
        m++;
    }
    pthread_mutex_lock(&b->lock);
    for (size_t j = 0; j < m; j++)
        for (size_t i = 0; i < b->n; i++)
            if (!strcmp(b->e[i].name, e[j].name) && b->e[i].period == e[j].period) {
                e[j].base_usd = b->e[i].base_usd; /* a reload keeps what is known */
                e[j].base_from_ms = b->e[i].base_from_ms;
                e[j].local_usd = b->e[i].local_usd;
            }
    free(b->e);
    b->e = e;
    b->n = m;
    pthread_mutex_unlock(&b->lock);
    refresh(b);
}

int
budget_check(struct budget *b, const char *name, int64_t now_ms, struct budget_state *st)
{
    int rc = 0;

    st->limited = 0;
    if (!b || !name)
        return 0;
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < b->n; i++) {
        struct entry *e = &b->e[i];
        if (strcmp(e->name, name))
            continue;
        int64_t from = auth_budget_period_start(e->period, now_ms);
        /* A read from an earlier period counts nothing: the new period starts at 0
         * (with what this replica charged since). */
        double spent = (e->base_from_ms == from ? e->base_usd : 0) + e->local_usd;
        st->limited = 1;
        st->limit_usd = e->limit_usd;
        st->spent_usd = spent;
        st->reset_ms = auth_budget_period_end(e->period, now_ms);
        st->period = e->period == AUTH_BUDGET_MONTH ? "month" : "day";
        if (spent >= e->limit_usd)
            rc = -EDQUOT;
        break;
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}

void
budget_charge(struct budget *b, const char *name, double usd)
{
    if (!b || !name || !(usd > 0) || !isfinite(usd))
        return;
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < b->n; i++)
        if (!strcmp(b->e[i].name, name)) {
            b->e[i].local_usd += usd;
            break;
        }
    pthread_mutex_unlock(&b->lock);
}
