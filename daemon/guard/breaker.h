/* breaker.h - a circuit breaker per backend: stop sending to a backend that keeps failing.
 *
 *   closed    --(failures within window_ms reach the threshold)-->  open
 *   open      --(cooldown_ms passed; the next breaker_allow())--->  half_open, one probe
 *   half_open --(probe succeeds)--> closed     --(probe fails)--> open (cooldown again)
 *
 * While half-open exactly one request (the probe) is let through until its outcome is
 * recorded; a probe whose outcome never arrives (probe_timeout_ms) counts as failed.
 * Time is passed in by the caller (monotonic ms), so tests inject it.
 *
 * One struct breaker per backend, shared by all worker threads: every call takes its
 * internal mutex (held for a few comparisons). */
#ifndef TRIAGE_BREAKER_H
#define TRIAGE_BREAKER_H

#include <stdint.h>

enum breaker_state {
    BREAKER_CLOSED = 0,
    BREAKER_OPEN,
    BREAKER_HALF_OPEN,
};

/* What breaker_allow() decided. */
enum breaker_verdict {
    BREAKER_REJECT = 0, /* do not send; try a fallback backend or answer 503 */
    BREAKER_PASS,       /* send normally */
    BREAKER_PROBE,      /* send: this request is the half-open probe */
};

/* How a request that breaker_allow() let through ended. */
enum breaker_outcome {
    BREAKER_SUCCESS = 0, /* the backend answered (any status it is not to blame for) */
    BREAKER_FAILURE,     /* connect error, timeout, 5xx: the backend is to blame */
    BREAKER_CANCEL,      /* no verdict (the client went away): frees the probe slot */
};

/* Counters and state for /readyz, stats and metrics. */
struct breaker_stats {
    enum breaker_state state;
    uint32_t recent_failures; /* failures within the window (closed state) */
    uint64_t opens;           /* times the circuit opened */
    uint64_t rejects;         /* requests refused while open or half-open */
    uint64_t retry_in_ms;     /* open: ms until a probe may go; else 0 */
};

struct breaker;

/* Creates a closed breaker that opens after `failures` failures (1..1000) within
 * window_ms and probes after cooldown_ms; a probe outstanding longer than
 * probe_timeout_ms (0 = cooldown_ms; pass the backend's total timeout) counts as
 * failed. failures == 0 disables the breaker (always closed). Returns a new breaker. */
struct breaker *breaker_create(uint32_t failures, uint32_t window_ms, uint32_t cooldown_ms,
                               uint32_t probe_timeout_ms);

/* Frees the breaker; NULL is fine. */
void breaker_destroy(struct breaker *b);

/* May a request go to this backend at now_ms? Moves open to half-open when the
 * cooldown has passed. Every PASS or PROBE must be followed by one breaker_record(). */
enum breaker_verdict breaker_allow(struct breaker *b, uint64_t now_ms);

/* Records the outcome of a request that was let through. Outcomes of requests sent
 * before the circuit opened are ignored while it is open; in half-open any success
 * closes and any failure reopens it. BREAKER_CANCEL only frees the probe slot. */
void breaker_record(struct breaker *b, enum breaker_outcome outcome, uint64_t now_ms);

/* The state at now_ms (reports half_open once the cooldown has passed, without
 * changing anything). */
enum breaker_state breaker_state(struct breaker *b, uint64_t now_ms);

/* Fills *st with the state and counters at now_ms. */
void breaker_get_stats(struct breaker *b, uint64_t now_ms, struct breaker_stats *st);

/* "closed", "open" or "half_open": static strings for logs, JSON and metric labels. */
const char *breaker_state_name(enum breaker_state s);

#endif
