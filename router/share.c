/* share.c - holds a strong-call share online: a streaming quantile of a route's recent scores.
 *
 * The window is a ring of the last W scores, each kept as its bin (1/ROUTER_SHARE_BINS
 * wide) in a Fenwick tree of bin counts, so adding a score, evicting the oldest and
 * ranking a new one are O(log bins) whatever W is. A score goes strong when fewer than
 * the target share of the window lies above it; inside its own bin a deterministic
 * low-discrepancy counter breaks the tie, so a stream of equal scores still gets the
 * target share. A small integral correction (the debt: strong calls made minus strong
 * calls promised, bounded by `horizon` requests' worth of the rarer side) holds the share
 * where ranking alone cannot: while the window still holds the traffic of before a shift, or on a monotone
 * stream where every score is the highest yet. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

#define BIN_MASK 0x3ffu       /* ring entry: the score's bin ... */
#define TIER_SHIFT 10         /* ... the tier it was routed to ... */
#define TIER_MASK 0xfu
#define FLAG_DECIDED 0x8000u  /* ... when the share routed it */

struct router_share {
    size_t window;      /* W: scores held at most */
    size_t n;           /* scores held now */
    size_t head;        /* ring slot the next score goes to */
    uint16_t *ring;     /* bin | FLAG_* */
    uint32_t tree[ROUTER_SHARE_BINS + 1]; /* Fenwick tree of bin counts, 1-based */
    double horizon;     /* decisions the debt is spread over; 0: no correction */
    /* per boundary b (between tiers b and b + 1): the sum of (above - target) over
     * decisions, where above is 1 when the request went to a tier past b; within about
     * +-2 horizon min(target, 1 - target) */
    double debt[ROUTER_SHARE_MAX_TIERS - 1];
    uint64_t k;         /* decisions made: the tie-breaker's counter */
    size_t recent_decided; /* scores in the window the share routed ... */
    size_t recent_tier[ROUTER_SHARE_MAX_TIERS]; /* ... by the tier it chose */
};

/* Bins are a power of two so the Fenwick descent in find_rank works. */
_Static_assert((ROUTER_SHARE_BINS & (ROUTER_SHARE_BINS - 1)) == 0, "bins: a power of two");
_Static_assert(ROUTER_SHARE_BINS <= BIN_MASK + 1, "bins fit beside the flags");
_Static_assert(ROUTER_SHARE_MAX_TIERS <= TIER_MASK + 1, "tiers fit beside the flags");

static unsigned
bin_of(double score)
{
    if (!(score > 0.0)) /* NaN too */
        return 0;
    if (score >= 1.0)
        return ROUTER_SHARE_BINS - 1;
    return (unsigned)(score * ROUTER_SHARE_BINS);
}

static void
tree_add(uint32_t *tree, unsigned bin, int delta)
{
    for (unsigned i = bin + 1; i <= ROUTER_SHARE_BINS; i += i & -i)
        tree[i] += (uint32_t)delta;
}

/* Scores in bins [0, bin). */
static size_t
tree_below(const uint32_t *tree, unsigned bin)
{
    size_t sum = 0;

    for (unsigned i = bin; i > 0; i -= i & -i)
        sum += tree[i];
    return sum;
}

/* The bin holding the score of rank r (0-based, ascending), r < n; *below gets the
 * scores in the bins before it. */
static unsigned
find_rank(const uint32_t *tree, size_t r, size_t *below)
{
    unsigned pos = 0;
    size_t sum = 0;

    /* tree[BINS] holds all n > r scores, so pos stays below BINS and pos + step in
     * range; branch-free, as the branch would be a coin toss per step */
    for (unsigned step = ROUTER_SHARE_BINS; step > 0; step >>= 1) {
        size_t v = tree[pos + step];
        size_t take = sum + v <= r;
        pos += (unsigned)take * step;
        sum += take * v;
    }
    *below = sum;
    return pos; /* 1-based prefix length = 0-based bin */
}

struct router_share *
router_share_new(size_t window)
{
    if (window == 0 || window > ROUTER_SHARE_MAX_WINDOW)
        return NULL;
    struct router_share *e = calloc(1, sizeof(*e));
    if (!e)
        abort();
    e->ring = calloc(window, sizeof(*e->ring));
    if (!e->ring)
        abort();
    e->window = window;
    e->horizon = (double)ROUTER_SHARE_DEFAULT_HORIZON;
    return e;
}

void
router_share_destroy(struct router_share *e)
{
    if (!e)
        return;
    free(e->ring);
    free(e);
}

size_t
router_share_window(const struct router_share *e)
{
    return e->window;
}

size_t
router_share_count(const struct router_share *e)
{
    return e->n;
}

void
router_share_set_horizon(struct router_share *e, double horizon)
{
    e->horizon = horizon > 0 ? horizon : 0;
    memset(e->debt, 0, sizeof(e->debt));
}

/* Puts an entry in the ring, evicting the oldest when full. */
static void
push(struct router_share *e, unsigned bin, unsigned flags)
{
    if (e->n == e->window) {
        uint16_t old = e->ring[e->head];
        tree_add(e->tree, old & BIN_MASK, -1);
        if (old & FLAG_DECIDED) {
            e->recent_decided--;
            e->recent_tier[(old >> TIER_SHIFT) & TIER_MASK]--;
        }
    } else {
        e->n++;
    }
    e->ring[e->head] = (uint16_t)(bin | flags);
    tree_add(e->tree, bin, 1);
    if (flags & FLAG_DECIDED) {
        e->recent_decided++;
        e->recent_tier[(flags >> TIER_SHIFT) & TIER_MASK]++;
    }
    if (++e->head == e->window)
        e->head = 0;
}

void
router_share_add(struct router_share *e, double score)
{
    push(e, bin_of(score), 0);
}

/* The debt's bound on either side, in strong calls: horizon requests' worth of the
 * smaller of the target and its complement. Both sides alike, and relative to the rarer
 * decision: a bound of horizon * (1 - share) calls let a 10% target pass 22 extra strong
 * calls (a block of prompts each scoring above the whole window) before the correction
 * saturated, and a 10% target can only repay 0.1 call per request. */
static double
bound(const struct router_share *e, double share)
{
    return e->horizon * (share < 1 - share ? share : 1 - share);
}

/* The target after the debt's correction, in [0,1]. The debt is read as a fraction x of
 * its bound, and x moves the target that fraction of the way to 0 or 1: a shift up or
 * down of the traffic saturates the correction equally fast. */
static double
effective(const struct router_share *e, double debt, double share)
{
    if (e->horizon <= 0 || share <= 0 || share >= 1)
        return share;
    if (debt > 0) {
        double x = debt / bound(e, share);
        return x >= 1 ? 0 : share * (1 - x);
    }
    double x = -debt / bound(e, share);
    return x >= 1 ? 1 : share + (1 - share) * x;
}

/* The (1 - t) quantile of the window, interpolated inside its bin; n > 0. */
static double
cut_of(const struct router_share *e, double t)
{
    if (t <= 0)
        return nextafter(1.0, 2.0);
    /* the score with t * n of the window at or above it */
    double r = (1.0 - t) * (double)e->n;
    size_t ri = r >= (double)e->n ? e->n - 1 : (size_t)r;
    size_t below;
    unsigned bin = find_rank(e->tree, ri, &below);
    size_t in_bin = tree_below(e->tree, bin + 1) - below;
    double frac = in_bin ? (r - (double)below) / (double)in_bin : 0;
    frac = frac < 0 ? 0 : frac > 1 ? 1 : frac;
    return ((double)bin + frac) / ROUTER_SHARE_BINS;
}

double
router_share_cut(const struct router_share *e, double share)
{
    if (e->n < ROUTER_SHARE_MIN_SCORES)
        return NAN;
    return cut_of(e, effective(e, e->debt[0], share));
}

/* A target share clamped to [0,1], NaN as 0. */
static double
unit(double share)
{
    return !(share > 0) ? 0 : share > 1 ? 1 : share;
}

size_t
router_share_decide_tiers(struct router_share *e, double score, const double *above,
                          const double *fallback, size_t n_tiers, double *cuts)
{
    unsigned bin = bin_of(score);
    size_t tier = 0, upto = 0, over = 0, equal = 0;
    double u = 0, prev = 1, prev_t = 1;
    int ranked = e->n >= ROUTER_SHARE_MIN_SCORES;

    if (n_tiers > ROUTER_SHARE_MAX_TIERS)
        n_tiers = ROUTER_SHARE_MAX_TIERS;
    if (ranked) {
        upto = tree_below(e->tree, bin + 1);
        over = e->n - upto;
        equal = upto - tree_below(e->tree, bin);
        /* Weyl sequence k * (golden ratio - 1) mod 1: ties spread evenly over [0,1); one
         * draw for every boundary, so a request past a higher boundary is past the lower
         * ones too */
        u = (double)((e->k * 0x9e3779b97f4a7c15ull) >> 11) * 0x1p-53;
    }
    for (size_t b = 0; b + 1 < n_tiers; b++) {
        double share = unit(above[b]), c;
        int past;
        if (share > prev) /* the shares above nest: never more above b than above b - 1 */
            share = prev;
        if (share <= 0 || share >= 1) {
            past = share >= 1;
            c = past ? 0 : nextafter(1.0, 2.0);
        } else if (!ranked) {
            past = score >= fallback[b];
            c = fallback[b];
        } else {
            double t = effective(e, e->debt[b], share);
            if (t > prev_t) /* corrected too: a higher cut never falls below a lower one */
                t = prev_t;
            prev_t = t;
            /* its rank among the window and itself, its place among its ties drawn by
             * u: a score above the whole window is past with probability t (n + 1), not
             * always, so a tiny corrected target stays tiny */
            past = (double)over + (double)(equal + 1) * u < t * (double)(e->n + 1);
            c = cuts ? cut_of(e, t) : NAN;
        }
        prev = share;
        if (cuts)
            cuts[b] = c;
        if (past && tier == b)
            tier = b + 1;
    }
    e->k++;
    prev = 1;
    for (size_t b = 0; e->horizon > 0 && b + 1 < n_tiers; b++) {
        double share = unit(above[b]);
        if (share > prev)
            share = prev;
        prev = share;
        if (share <= 0 || share >= 1)
            continue;
        /* bounded (no wind-up), but well past where the correction saturates: a bound
         * reached in steady state would forgive calls and leak share */
        double *d = &e->debt[b];
        *d += (double)(tier > b) - share;
        if (*d > 2 * bound(e, share) + 1)
            *d = 2 * bound(e, share) + 1;
        if (*d < -2 * bound(e, share) - 1)
            *d = -2 * bound(e, share) - 1;
    }
    push(e, bin, FLAG_DECIDED | (unsigned)tier << TIER_SHIFT);
    return tier;
}

int
router_share_decide(struct router_share *e, double score, double share, double fallback,
                    double *cut)
{
    double c;
    int strong = (int)router_share_decide_tiers(e, score, &share, &fallback, 2, &c);

    if (cut)
        *cut = c;
    return strong;
}

void
router_share_recent(const struct router_share *e, size_t *decided, size_t *strong)
{
    *decided = e->recent_decided;
    *strong = e->recent_decided - e->recent_tier[0];
}

size_t
router_share_recent_tier(const struct router_share *e, size_t tier)
{
    return tier < ROUTER_SHARE_MAX_TIERS ? e->recent_tier[tier] : 0;
}
