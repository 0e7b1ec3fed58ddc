/* breaker.c - the per-backend circuit breaker: closed, open and half-open with one probe.
 *
 * Failures in the closed state go into a ring of the last `threshold` failure times;
 * the circuit opens when the ring is full and its oldest entry is still inside the
 * window, i.e. `threshold` failures happened within window_ms. */
#include <pthread.h>
#include <stdlib.h>

#include "breaker.h"

struct breaker {
    pthread_mutex_t lock;
    uint32_t threshold;     /* failures that open; 0 = disabled */
    uint32_t window_ms;
    uint32_t cooldown_ms;
    uint32_t probe_timeout_ms;
    enum breaker_state state;
    uint64_t *ring;         /* threshold failure times, ms */
    uint32_t nring;         /* entries used */
    uint32_t head;          /* next slot to write */
    uint64_t opened_at;     /* ms */
    int probing;            /* half-open: the probe is out */
    uint64_t probe_at;      /* ms the probe was let through */
    uint64_t opens;
    uint64_t rejects;
};

static uint64_t
since(uint64_t now, uint64_t then)
{
    return now > then ? now - then : 0;
}

struct breaker *
breaker_create(uint32_t failures, uint32_t window_ms, uint32_t cooldown_ms,
               uint32_t probe_timeout_ms)
{
    struct breaker *b = calloc(1, sizeof(*b));

    if (!b)
        abort(); /* OOM is fatal in triage */
    if (failures > 1000)
        failures = 1000;
    pthread_mutex_init(&b->lock, NULL);
    b->threshold = failures;
    b->window_ms = window_ms;
    b->cooldown_ms = cooldown_ms;
    b->probe_timeout_ms = probe_timeout_ms ? probe_timeout_ms : cooldown_ms;
    b->state = BREAKER_CLOSED;
    if (failures) {
        b->ring = calloc(failures, sizeof(*b->ring));
        if (!b->ring)
            abort();
    }
    return b;
}

void
breaker_destroy(struct breaker *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->lock);
    free(b->ring);
    free(b);
}

/* Called with the lock held. */
static void
trip(struct breaker *b, uint64_t now)
{
    b->state = BREAKER_OPEN;
    b->opened_at = now;
    b->probing = 0;
    b->nring = 0;
    b->head = 0;
    b->opens++;
}

enum breaker_verdict
breaker_allow(struct breaker *b, uint64_t now_ms)
{
    enum breaker_verdict v = BREAKER_PASS;

    pthread_mutex_lock(&b->lock);
    switch (b->state) {
    case BREAKER_CLOSED:
        break;
    case BREAKER_OPEN:
        if (since(now_ms, b->opened_at) >= b->cooldown_ms) {
            b->state = BREAKER_HALF_OPEN;
            b->probing = 1;
            b->probe_at = now_ms;
            v = BREAKER_PROBE;
        } else {
            v = BREAKER_REJECT;
        }
        break;
    case BREAKER_HALF_OPEN:
        if (b->probing && since(now_ms, b->probe_at) >= b->probe_timeout_ms)
            trip(b, now_ms); /* the probe was lost: as good as failed */
        if (b->probing || b->state == BREAKER_OPEN) {
            v = BREAKER_REJECT;
        } else {
            b->probing = 1;
            b->probe_at = now_ms;
            v = BREAKER_PROBE;
        }
        break;
    }
    if (v == BREAKER_REJECT)
        b->rejects++;
    pthread_mutex_unlock(&b->lock);
    return v;
}

void
breaker_record(struct breaker *b, enum breaker_outcome outcome, uint64_t now_ms)
{
    pthread_mutex_lock(&b->lock);
    if (!b->threshold)
        goto out;
    switch (b->state) {
    case BREAKER_CLOSED:
        if (outcome != BREAKER_FAILURE)
            break;
        b->ring[b->head] = now_ms;
        b->head = (b->head + 1) % b->threshold;
        if (b->nring < b->threshold)
            b->nring++;
        /* When full, head is the oldest of the last `threshold` failures. */
        if (b->nring == b->threshold && since(now_ms, b->ring[b->head]) < b->window_ms)
            trip(b, now_ms);
        break;
    case BREAKER_OPEN:
        break; /* late outcomes of requests sent before opening */
    case BREAKER_HALF_OPEN:
        if (outcome == BREAKER_SUCCESS) {
            b->state = BREAKER_CLOSED;
            b->probing = 0;
            b->nring = 0;
            b->head = 0;
        } else if (outcome == BREAKER_FAILURE) {
            trip(b, now_ms);
        } else {
            b->probing = 0;
        }
        break;
    }
out:
    pthread_mutex_unlock(&b->lock);
}

/* Called with the lock held. */
static enum breaker_state
state_at(const struct breaker *b, uint64_t now)
{
    if (b->state == BREAKER_OPEN && since(now, b->opened_at) >= b->cooldown_ms)
        return BREAKER_HALF_OPEN;
    return b->state;
}

enum breaker_state
breaker_state(struct breaker *b, uint64_t now_ms)
{
    pthread_mutex_lock(&b->lock);
    enum breaker_state s = state_at(b, now_ms);
    pthread_mutex_unlock(&b->lock);
    return s;
}

void
breaker_get_stats(struct breaker *b, uint64_t now_ms, struct breaker_stats *st)
{
    pthread_mutex_lock(&b->lock);
    st->state = state_at(b, now_ms);
    st->recent_failures = 0;
    if (b->state == BREAKER_CLOSED)
        for (uint32_t i = 0; i < b->nring; i++)
            if (since(now_ms, b->ring[i]) < b->window_ms)
                st->recent_failures++;
    st->opens = b->opens;
    st->rejects = b->rejects;
    st->retry_in_ms = st->state == BREAKER_OPEN
                          ? b->cooldown_ms - since(now_ms, b->opened_at)
                          : 0;
    pthread_mutex_unlock(&b->lock);
}

const char *
breaker_state_name(enum breaker_state s)
{
    switch (s) {
    case BREAKER_CLOSED:
        return "closed";
    case BREAKER_OPEN:
        return "open";
    case BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "unknown";
}
