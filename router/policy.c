/* policy.c - routing policies: a threshold on the score, or the cheapest tier that clears its bar. */
#include "router.h"

size_t
router_policy_pick(enum router_policy_kind kind, const struct router_tier *tiers,
                   size_t n_tiers, double threshold, const struct router_scores *s)
{
    if (n_tiers <= 1)
        return 0;
    switch (kind) {
    case ROUTER_POLICY_THRESHOLD:
        /* two tiers; a NaN score compares false and stays on the cheap side */
        return s->score >= threshold ? 1 : 0;
    case ROUTER_POLICY_TIERS:
        for (size_t i = 0; i + 1 < n_tiers; i++) {
            int h = tiers[i].head;
            if (h >= 0 && (size_t)h < s->n_heads && s->p[h] >= tiers[i].bar)
                return i;
        }
        return n_tiers - 1;
    }
    return n_tiers - 1;
}

enum router_cascade_step
router_cascade_pick(double score, double low, double high)
{
    if (score < low)
        return ROUTER_CASCADE_FAST;
    if (score >= high)
        return ROUTER_CASCADE_STRONG;
    return ROUTER_CASCADE_TRY;
}

int
router_cascade_escalate(double escalation, double at)
{
    return !(escalation < at);
}
