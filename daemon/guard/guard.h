/* guard.h - the guard room's boundary: what decides whether a request may go on.
 *
 * The one header code outside daemon/guard/ includes. Each module keeps its own header
 * here, with its contracts: auth.h (client and admin keys), ratelimit.h (per-key
 * request and token limits), breaker.h (a circuit per backend), backoff.h (retry
 * delays, Retry-After), budget.h (per-key USD budgets from the outcome log).
 * The guard modules do no HTTP: the server asks them and answers the client itself. */
#ifndef TRIAGE_GUARD_H
#define TRIAGE_GUARD_H

#include "auth.h"
#include "backoff.h"
#include "breaker.h"
#include "budget.h"
#include "ratelimit.h"

#endif
