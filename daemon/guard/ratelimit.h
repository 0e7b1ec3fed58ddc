/* ratelimit.h - per-client token buckets for requests per minute and tokens per minute.
 *
 * Each client key name gets two buckets: one holding up to rpm requests, one up to tpm
 * tokens, each refilled continuously at its per-minute rate (so a client may burst a
 * whole minute's allowance, then proceeds at the steady rate). Requests without a key
 * (open mode) share one anonymous bucket pair. Time is passed in by the caller
 * (monotonic milliseconds), which keeps the module pure and testable.
 *
 * Token counts are known only after the response, so a request takes an estimate up
 * front and ratelimit_settle() charges the difference later; a bucket may go into debt,
 * which delays that client's next requests.
 *
 * One struct ratelimit is shared by all worker threads: every call takes its internal
 * mutex (held for a hash lookup and a few additions). Memory is bounded by max_keys. */
#ifndef TRIAGE_RATELIMIT_H
#define TRIAGE_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

struct ratelimit;

/* Creates a limiter with rpm requests and tpm tokens per minute per client; 0 leaves
 * that dimension unlimited. At most max_keys names are tracked at once (0 = 4096):
 * beyond that, a name whose buckets are full (idle) is forgotten to make room, and if
 * none is, new names share one overflow bucket pair. Returns a new limiter. */
struct ratelimit *ratelimit_create(uint32_t rpm, uint32_t tpm, size_t max_keys);

/* Frees the limiter; NULL is fine. */
void ratelimit_destroy(struct ratelimit *rl);

/* Admits one request from key_name (borrowed; NULL = the anonymous client) at now_ms
 * with an estimate of tokens (prompt + expected completion). Returns 0 and deducts one
 * request and the estimate; or returns -EAGAIN, deducts nothing, and sets
 * *retry_after_s (if not NULL) to the whole seconds after which the same request would
 * be admitted (at least 1). An estimate above tpm is treated as tpm, so a big request
 * waits for a full bucket instead of being refused forever. */
int ratelimit_take(struct ratelimit *rl, const char *key_name, uint64_t now_ms,
                   uint32_t tokens, uint32_t *retry_after_s);

/* After the response: charges actual - estimated tokens to key_name's token bucket
 * (refunds if negative; a refund never fills the bucket beyond tpm). Pass the same
 * estimate that ratelimit_take() admitted, and actual = 0 to refund a request that
 * never reached a backend. */
void ratelimit_settle(struct ratelimit *rl, const char *key_name, uint64_t now_ms,
                      uint32_t estimated, uint32_t actual);

/* Remaining allowance for key_name at now_ms, for X-RateLimit-* headers: requests and
 * tokens that could be taken now (0 when in debt; UINT32_MAX when unlimited). */
void ratelimit_remaining(struct ratelimit *rl, const char *key_name, uint64_t now_ms,
                         uint32_t *requests, uint32_t *tokens);

/* Number of names currently tracked (not counting the anonymous and overflow buckets). */
size_t ratelimit_tracked(struct ratelimit *rl);

#endif
