/* ratelimit.c - per-client token buckets (requests and tokens per minute) in a bounded table.
 *
 * Bucket levels are kept in integer units of 1/60000 of a request (or token), so one
 * millisecond refills exactly `rate` units and the refill math has no rounding: a
 * bucket of rate r holds at most r * 60000 units, one request costs 60000. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ratelimit.h"

#define MS_PER_MIN 60000
#define ELAPSED_MAX (1ull << 30)  /* ms; any longer gap refills everything anyway */
#define DEBT_MINUTES 1440         /* a bucket's debt is capped at a day's allowance */
#define DEFAULT_KEYS 4096
#define NO_ENTRY UINT32_MAX

struct rl_entry {
    char *name;      /* owned; NULL for the anonymous and overflow entries */
    uint32_t next;   /* next entry in the hash chain or the free list, or NO_ENTRY */
    int64_t req;     /* request bucket level, units */
    int64_t tok;     /* token bucket level, units */
    uint64_t last;   /* ms of the last refill */
};

struct ratelimit {
    pthread_mutex_t lock;
    uint32_t rpm, tpm;
    uint32_t nheads;        /* power of two */
    uint32_t *heads;        /* hash chains, NO_ENTRY-terminated */
    struct rl_entry *pool;  /* max_keys entries */
    uint32_t max_keys;
    uint32_t free_head;
    size_t used;
    struct rl_entry anon;     /* the client without a key */
    struct rl_entry overflow; /* names that found no room */
};

static void *
xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        abort(); /* OOM is fatal in triage */
    return p;
}

static uint32_t
hash_name(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int64_t
cap_units(uint32_t rate)
{
    return (int64_t)rate * MS_PER_MIN;
}

static void
entry_fill(const struct ratelimit *rl, struct rl_entry *e, uint64_t now)
{
    e->req = cap_units(rl->rpm);
    e->tok = cap_units(rl->tpm);
    e->last = now;
}

static void
refill(const struct ratelimit *rl, struct rl_entry *e, uint64_t now)
{
    if (now <= e->last)
        return; /* a clock that steps back refills nothing rather than everything */
    uint64_t el = now - e->last;
    if (el > ELAPSED_MAX)
        el = ELAPSED_MAX;
    e->last = now;
    int64_t c;
    if (rl->rpm) {
        c = cap_units(rl->rpm);
        e->req += (int64_t)el * rl->rpm;
        if (e->req > c)
            e->req = c;
    }
    if (rl->tpm) {
        c = cap_units(rl->tpm);
        e->tok += (int64_t)el * rl->tpm;
        if (e->tok > c)
            e->tok = c;
    }
}

static int
entry_full(const struct ratelimit *rl, const struct rl_entry *e)
{
    return (!rl->rpm || e->req >= cap_units(rl->rpm)) && (!rl->tpm || e->tok >= cap_units(rl->tpm));
}

struct ratelimit *
ratelimit_create(uint32_t rpm, uint32_t tpm, size_t max_keys)
{
    struct ratelimit *rl = xcalloc(1, sizeof(*rl));

    if (max_keys == 0)
        max_keys = DEFAULT_KEYS;
    if (max_keys > (1u << 24))
        max_keys = 1u << 24;
    pthread_mutex_init(&rl->lock, NULL);
    rl->rpm = rpm;
    rl->tpm = tpm;
    rl->max_keys = (uint32_t)max_keys;
    rl->nheads = 1;
    while (rl->nheads < rl->max_keys)
        rl->nheads <<= 1;
    rl->heads = xcalloc(rl->nheads, sizeof(*rl->heads));
    for (uint32_t i = 0; i < rl->nheads; i++)
        rl->heads[i] = NO_ENTRY;
    rl->pool = xcalloc(rl->max_keys, sizeof(*rl->pool));
    for (uint32_t i = 0; i < rl->max_keys; i++)
        rl->pool[i].next = i + 1 < rl->max_keys ? i + 1 : NO_ENTRY;
    rl->free_head = 0;
    entry_fill(rl, &rl->anon, 0);
    entry_fill(rl, &rl->overflow, 0);
    return rl;
}

void
ratelimit_destroy(struct ratelimit *rl)
{
    if (!rl)
        return;
    if (rl->pool)
        for (uint32_t i = 0; i < rl->max_keys; i++)
            free(rl->pool[i].name);
    free(rl->pool);
    free(rl->heads);
    pthread_mutex_destroy(&rl->lock);
    free(rl);
}

/* Forgets one entry whose buckets are full at now: a full bucket is exactly what a
 * fresh entry would be, so nothing is lost. Returns 1 if one was freed. */
static int
evict_idle(struct ratelimit *rl, uint64_t now)
{
    for (uint32_t h = 0; h < rl->nheads; h++) {
        uint32_t *link = &rl->heads[h];
        while (*link != NO_ENTRY) {
            struct rl_entry *e = &rl->pool[*link];
            refill(rl, e, now);
            if (entry_full(rl, e)) {
                uint32_t idx = *link;
                *link = e->next;
                free(e->name);
                e->name = NULL;
                e->next = rl->free_head;
                rl->free_head = idx;
                rl->used--;
                return 1;
            }
            link = &e->next;
        }
    }
    return 0;
}

/* Finds or adds the entry for name; called with the lock held. */
static struct rl_entry *
lookup(struct ratelimit *rl, const char *name, uint64_t now)
{
    if (!name)
        return &rl->anon;
    uint32_t h = hash_name(name) & (rl->nheads - 1);
    for (uint32_t i = rl->heads[h]; i != NO_ENTRY; i = rl->pool[i].next)
        if (!strcmp(rl->pool[i].name, name))
            return &rl->pool[i];
    if (rl->free_head == NO_ENTRY && !evict_idle(rl, now))
        return &rl->overflow;
    uint32_t idx = rl->free_head;
    struct rl_entry *e = &rl->pool[idx];
    rl->free_head = e->next;
    e->name = strdup(name);
    if (!e->name)
        abort();
    e->next = rl->heads[h];
    rl->heads[h] = idx;
    rl->used++;
    entry_fill(rl, e, now);
    return e;
}

/* Whole seconds until level reaches need at rate units per ms; at least 1. */
static uint32_t
wait_s(int64_t level, int64_t need, uint32_t rate)
{
    uint64_t deficit = (uint64_t)(need - level);
    uint64_t ms = (deficit + rate - 1) / rate;
    uint64_t s = (ms + 999) / 1000;
    if (s < 1)
        s = 1;
    return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

int
ratelimit_take(struct ratelimit *rl, const char *key_name, uint64_t now_ms, uint32_t tokens,
               uint32_t *retry_after_s)
{
    uint32_t wait = 0;

    pthread_mutex_lock(&rl->lock);
    struct rl_entry *e = lookup(rl, key_name, now_ms);
    refill(rl, e, now_ms);
    int64_t need_r = MS_PER_MIN;
    int64_t need_t = (int64_t)(tokens < rl->tpm ? tokens : rl->tpm) * MS_PER_MIN;
    if (rl->rpm && e->req < need_r)
        wait = wait_s(e->req, need_r, rl->rpm);
    if (rl->tpm && e->tok < need_t) {
        uint32_t w = wait_s(e->tok, need_t, rl->tpm);
        if (w > wait)
            wait = w;
    }
    if (!wait) {
        if (rl->rpm)
            e->req -= need_r;
        if (rl->tpm)
            e->tok -= need_t;
    }
    pthread_mutex_unlock(&rl->lock);
    if (wait && retry_after_s)
        *retry_after_s = wait;
    return wait ? -EAGAIN : 0;
}

void
ratelimit_settle(struct ratelimit *rl, const char *key_name, uint64_t now_ms, uint32_t estimated,
                 uint32_t actual)
{
    if (!rl->tpm || estimated == actual)
        return;
    int64_t c = cap_units(rl->tpm);
    /* The estimate was clamped to tpm when taken; refund no more than was deducted. */
    int64_t est = estimated < rl->tpm ? estimated : rl->tpm;
    int64_t delta = ((int64_t)actual - est) * MS_PER_MIN;

    pthread_mutex_lock(&rl->lock);
    struct rl_entry *e = lookup(rl, key_name, now_ms);
    refill(rl, e, now_ms);
    e->tok -= delta;
    if (e->tok > c)
        e->tok = c;
    if (e->tok < -c * DEBT_MINUTES)
        e->tok = -c * DEBT_MINUTES;
    pthread_mutex_unlock(&rl->lock);
}

void
ratelimit_remaining(struct ratelimit *rl, const char *key_name, uint64_t now_ms,
                    uint32_t *requests, uint32_t *tokens)
{
    pthread_mutex_lock(&rl->lock);
    struct rl_entry *e = lookup(rl, key_name, now_ms);
    refill(rl, e, now_ms);
    if (requests)
        *requests = !rl->rpm ? UINT32_MAX : e->req <= 0 ? 0 : (uint32_t)(e->req / MS_PER_MIN);
    if (tokens)
        *tokens = !rl->tpm ? UINT32_MAX : e->tok <= 0 ? 0 : (uint32_t)(e->tok / MS_PER_MIN);
    pthread_mutex_unlock(&rl->lock);
}

size_t
ratelimit_tracked(struct ratelimit *rl)
{
    pthread_mutex_lock(&rl->lock);
    size_t n = rl->used;
    pthread_mutex_unlock(&rl->lock);
    return n;
}
