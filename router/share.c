/* share.c - holds a strong-call share online: a streaming quantile of a route's recent scores.
 *
 * The window is a ring of the last W scores, each kept as its bin (1/ROUTER_SHARE_BINS
 * wide) in a Fenwick tree of bin counts, so adding a score, evicting the oldest and
 * ranking a new one are O(log bins) whatever W is. A score goes strong when fewer than
 * the target share of the window lies above it; inside its own bin a deterministic
 * low-discrepancy counter breaks the tie, so a stream of equal scores still gets the
 * target share. A small integral correction (the debt: strong calls made minus strong
 * calls promised, spread over `horizon` decisions) holds the share where ranking alone
 * cannot: while the window still holds the traffic of before a shift, or on a monotone
 * stream where every score is the highest yet. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "router.h"

#define FLAG_DECIDED 0x4000u /* the score was routed by share ... */
#define FLAG_STRONG 0x8000u  /* ... to the strong side */
#define BIN_MASK 0x3fffu

struct router_share {
    size_t window;      /* W: scores held at most */
    size_t n;           /* scores held now */
    size_t head;        /* ring slot the next score goes to */
    uint16_t *ring;     /* bin | FLAG_* */
    uint32_t tree[ROUTER_SHARE_BINS + 1]; /* Fenwick tree of bin counts, 1-based */
    double horizon;     /* decisions the debt is spread over; 0: no correction */
    double debt;        /* sum of (strong - target) over decisions, within about
                         * [-2 horizon target, 2 horizon (1 - target)] */
    uint64_t k;         /* decisions made: the tie-breaker's counter */
    size_t recent_decided, recent_strong; /* flags of the scores in the window */
};

/* Bins are a power of two so the Fenwick descent in find_rank works. */
_Static_assert((ROUTER_SHARE_BINS & (ROUTER_SHARE_BINS - 1)) == 0, "bins: a power of two");
_Static_assert(ROUTER_SHARE_BINS <= BIN_MASK + 1, "bins fit beside the flags");

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
    e->debt = 0;
}

/* Puts an entry in the ring, evicting the oldest when full. */
static void
push(struct router_share *e, unsigned bin, unsigned flags)
{
    if (e->n == e->window) {
        uint16_t old = e->ring[e->head];
        tree_add(e->tree, old & BIN_MASK, -1);
        e->recent_decided -= (old & FLAG_DECIDED) != 0;
        e->recent_strong -= (old & FLAG_STRONG) != 0;
    } else {
        e->n++;
    }
    e->ring[e->head] = (uint16_t)(bin | flags);
    tree_add(e->tree, bin, 1);
    e->recent_decided += (flags & FLAG_DECIDED) != 0;
    e->recent_strong += (flags & FLAG_STRONG) != 0;
    if (++e->head == e->window)
        e->head = 0;
}

void
router_share_add(struct router_share *e, double score)
{
    push(e, bin_of(score), 0);
}

/* The target after the debt's correction, in [0,1]. The debt is read as a fraction x of
 * its bound (horizon requests all on the wrong side: horizon * (1 - share) strong calls
 * too many, horizon * share too few), and x moves the target that fraction of the way to
 * 0 or 1: a shift up or down of the traffic saturates the correction equally fast. */
static double
effective(const struct router_share *e, double share)
{
    if (e->horizon <= 0 || share <= 0 || share >= 1)
        return share;
    if (e->debt > 0) {
        double x = e->debt / (e->horizon * (1 - share));
        return x >= 1 ? 0 : share * (1 - x);
    }
    double x = -e->debt / (e->horizon * share);
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
    return cut_of(e, effective(e, share));
}

int
router_share_decide(struct router_share *e, double score, double share, double fallback,
                    double *cut)
{
    unsigned bin = bin_of(score);
    int strong;
    double c;

    if (!(share >= 0)) /* NaN */
        share = 0;
    if (share > 1)
        share = 1;
    if (share <= 0 || share >= 1) {
        strong = share >= 1;
        c = strong ? 0 : nextafter(1.0, 2.0);
    } else if (e->n < ROUTER_SHARE_MIN_SCORES) {
        strong = score >= fallback;
        c = fallback;
    } else {
        double t = effective(e, share);
        size_t upto = tree_below(e->tree, bin + 1);
        size_t above = e->n - upto;
        size_t equal = upto - tree_below(e->tree, bin);
        /* Weyl sequence k * (golden ratio - 1) mod 1: ties spread evenly over [0,1) */
        double u = (double)((e->k * 0x9e3779b97f4a7c15ull) >> 11) * 0x1p-53;
        /* its rank among the window and itself, its place among its ties drawn by u:
         * a score above the whole window is strong with probability t (n + 1), not
         * always, so a tiny corrected target stays tiny */
        strong = (double)above + (double)(equal + 1) * u < t * (double)(e->n + 1);
        c = cut ? cut_of(e, t) : NAN;
    }
    e->k++;
    if (e->horizon > 0) {
        /* bounded (no wind-up), but well past where the correction saturates: a bound
         * reached in steady state would forgive calls and leak share */
        e->debt += (double)strong - share;
        if (e->debt > 2 * e->horizon * (1 - share) + 1)
            e->debt = 2 * e->horizon * (1 - share) + 1;
        if (e->debt < -2 * e->horizon * share - 1)
            e->debt = -2 * e->horizon * share - 1;
    }
    push(e, bin, FLAG_DECIDED | (strong ? FLAG_STRONG : 0));
    if (cut)
        *cut = c;
    return strong;
}

void
router_share_recent(const struct router_share *e, size_t *decided, size_t *strong)
{
    *decided = e->recent_decided;
    *strong = e->recent_strong;
}
