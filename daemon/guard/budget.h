/* budget.h - per-key USD budgets per UTC day or month, enforced from the outcome log.
 *
 * A key's spend is the sum of cost_usd of its client requests in the current period,
 * read from the outcome log (shared by every replica when the log is PostgreSQL) by
 * a refresher thread every refresh_ms, plus what this replica's own requests cost
 * since that read began (charged at the end of each request). Before each read the
 * refresher flushes this replica's writer, so its own rows are in the sum; another
 * replica's rows show up within its flush_interval_ms + refresh_ms. Admission is a
 * mutex and a lookup: no I/O on the request path. */
#ifndef TRIAGE_BUDGET_H
#define TRIAGE_BUDGET_H

#include <stdint.h>

#include "auth.h"

struct storage;
struct budget;

/* What budget_check() tells about a key with a budget, for the response headers. */
struct budget_state {
    int limited;          /* 1 when the key has a budget (the rest is set) */
    double limit_usd;
    double spent_usd;     /* this period, as known now */
    int64_t reset_ms;     /* Unix ms when the period ends (UTC) */
    const char *period;   /* "day" or "month" (static) */
};

/* Creates the budget keeper reading spend from db_path (borrowed, copied; a file or a
 * postgresql:// URL) and flushing st (borrowed, may be NULL) before each read, every
 * refresh_ms. Starts its thread. Returns a new keeper. */
struct budget *budget_create(const char *db_path, struct storage *st, uint32_t refresh_ms);

/* Stops the thread and frees the keeper. NULL is fine. */
void budget_destroy(struct budget *b);

/* Takes the budgets of k's names (borrowed; NULL = none), keeping the spend known
 * for names that stay, and reads spend for them at once (blocks for one read). */
void budget_configure(struct budget *b, const struct auth_keys *k);

/* Returns 0 when name (borrowed; NULL = no key) may spend (no budget, or some left) or
 * -EDQUOT when its budget for the period is spent; fills st in both cases. */
int budget_check(struct budget *b, const char *name, int64_t now_ms, struct budget_state *st);

/* Adds usd to name's spend (the end of one of its requests). */
void budget_charge(struct budget *b, const char *name, double usd);

#endif
