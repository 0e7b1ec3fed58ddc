/* backoff.h - retry delays: full-jitter exponential backoff and Retry-After parsing.
 *
 * Pure functions. The random state is owned by the caller (one per worker thread;
 * a struct backoff_rng must not be shared between threads without a lock) and is
 * deterministic for a given seed, so tests can replay exact delays. */
#ifndef TRIAGE_BACKOFF_H
#define TRIAGE_BACKOFF_H

#include <stdint.h>
#include <time.h>

/* A small PRNG (splitmix64). Not for secrets. */
struct backoff_rng {
    uint64_t s;
};

/* Seeds r; the same seed gives the same sequence of delays. */
void backoff_seed(struct backoff_rng *r, uint64_t seed);

/* Full jitter ("Exponential Backoff and Jitter", AWS): a delay drawn uniformly from
 * [0, min(cap_ms, base_ms * 2^attempt)] for attempt 0, 1, 2, ... Returns ms. */
uint32_t backoff_delay_ms(struct backoff_rng *r, uint32_t attempt, uint32_t base_ms,
                          uint32_t cap_ms);

/* Parses a Retry-After header value (RFC 9110 10.2.3): delta-seconds ("120") or an
 * HTTP-date (IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT", and the obsolete RFC 850
 * and asctime forms), with optional surrounding blanks. now is the current Unix time.
 * Returns 0 and the delay in *delay_ms, capped at cap_ms (a date in the past gives 0),
 * or -EINVAL if value is NULL or not one of those forms. */
int backoff_retry_after(const char *value, time_t now, uint32_t cap_ms, uint32_t *delay_ms);

/* Parses an HTTP-date (the three forms above, no surrounding blanks) into Unix time.
 * Returns 0 and *t, or -EINVAL. */
int backoff_http_date(const char *s, time_t *t);

#endif
