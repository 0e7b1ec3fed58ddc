/* promote.c - which parts of a retrain's challenger replace the champion's: the routing
 * model and the escalation model are judged apart, each on its own held-out set, and the
 * promoted file combines the better of each.
 *
 * A model file carries two models (router/router.h): the routing model (prompt ->
 * difficulty heads) and the escalation model (a cascade fast answer's signals -> "the
 * answer is bad"). A challenger may be better at one and worse at the other, so:
 *  - routing: held-out APGR (retrain.c measures it) better by [learning] promote_margin on
 *    at least min_holdout prompts (promote_margin -1: always taken);
 *  - escalation: held-out AUC of the escalation score for "the fast answer is bad" (labels
 *    1 - q of the judged fast answers of the same held-out prompts) better by
 *    escalation_margin on at least min_holdout_answers answers; with fewer, the champion's
 *    is kept. AUC, not a figure at escalate_at: the operator sets the cut from the score's
 *    quantiles (README, "The cascade"), so what a model is worth to the cascade is how
 *    well it ranks bad answers above good ones, whatever its calibration;
 *  - the file promoted is the challenger when both parts win, else the winning part joined
 *    to the champion's other part (router_model_combine, a version of its own, recorded
 *    with routing_from / escalation_from); nothing when neither wins;
 *  - and never a file whose escalation AUC is below the champion's by more than
 *    escalation_margin on enough answers: that can happen only when the champion has no
 *    learned escalation model, as the default's escalation reads the routing score. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "daemon-int.h"
#include "log.h"
#include "storage.h"

/* The routing part: 1 when the challenger's is taken; why in *why. */
static int
routing_verdict(const struct conf *c, const struct daemon__promotion *p, const char **why)
{
    if (c->promote_margin <= -1) { /* trusts the log blindly */
        *why = "taken (promote_margin -1)";
        return 1;
    }
    if (p->n_prompts < c->min_holdout) {
        *why = "kept (too few held-out prompts)";
        return 0;
    }
    if (!isnan(p->apgr_chal) &&
        (isnan(p->apgr_champ) || p->apgr_chal >= p->apgr_champ + c->promote_margin)) {
        *why = "taken";
        return 1;
    }
    *why = "kept (not better by the margin)";
    return 0;
}

/* The escalation part: 1 when the challenger's is taken; why in *why. */
static int
escalation_verdict(const struct conf *c, const struct router_model *challenger,
                   struct daemon__promotion *p, const char **why)
{
    if (p->esc_chal.n < c->min_holdout_answers) {
        snprintf(p->why_buf, sizeof(p->why_buf),
                 "the champion's kept (too few held-out judged fast answers: %zu < "
                 "min_holdout_answers %u)",
                 p->esc_chal.n, (unsigned)c->min_holdout_answers);
        *why = p->why_buf;
        return 0;
    }
    if (router_model_escalation_examples(challenger) == 0) {
        *why = "the champion's kept (the challenger learned none)";
        return 0;
    }
    if (isnan(p->esc_chal.auc) || isnan(p->esc_champ.auc)) {
        *why = "the champion's kept (the held-out answers are all judged alike)";
        return 0;
    }
    if (p->esc_chal.auc >= p->esc_champ.auc + c->escalation_margin) {
        *why = "taken";
        return 1;
    }
    *why = "the champion's kept (not better by escalation_margin)";
    return 0;
}

void
daemon__promotion_decide(const struct conf *c, const struct router_model *champion,
                         const struct router_model *challenger, const struct router_dataset *d,
                         const size_t *hold, size_t n_hold, const char *weak,
                         struct daemon__promotion *p)
{
    char err[256];

    p->promoted = NULL;
    p->verdict = "kept";
    /* a model whose hash space is not the set's measures nothing (n 0): kept */
    if (router_eval_escalation(champion, d, hold, n_hold, weak, c->escalate_at, &p->esc_champ) < 0)
        p->esc_champ.n = 0;
    if (router_eval_escalation(challenger, d, hold, n_hold, weak, c->escalate_at, &p->esc_chal) < 0)
        p->esc_chal.n = 0;
    p->esc_final = p->esc_champ;
    p->take_routing = routing_verdict(c, p, &p->routing_why);
    p->take_escalation = escalation_verdict(c, challenger, p, &p->escalation_why);
    if (!p->take_routing && !p->take_escalation)
        return;

    const struct router_model *r = p->take_routing ? challenger : champion,
                              *e = p->take_escalation ? challenger : champion;
    struct router_model *m = r == e ? router_model_ref((struct router_model *)r)
                                    : router_model_combine(r, e, err, sizeof(err));
    if (!m) {
        log_warnx("retrain: cannot combine the models: %s", err);
        p->verdict = "kept (the parts do not combine)";
        return;
    }
    if (!strcmp(router_model_version(m), router_model_version(champion))) {
        router_model_unref(m);
        p->verdict = "kept (the champion's own parts)";
        return;
    }
    if (m == challenger || !strcmp(router_model_version(m), router_model_version(challenger)))
        p->esc_final = p->esc_chal;
    else if (router_eval_escalation(m, d, hold, n_hold, weak, c->escalate_at, &p->esc_final) < 0)
        p->esc_final.n = 0;
    if (p->esc_final.n >= c->min_holdout_answers && !isnan(p->esc_final.auc) &&
        !isnan(p->esc_champ.auc) &&
        p->esc_final.auc < p->esc_champ.auc - c->escalation_margin) {
        router_model_unref(m);
        p->verdict = "kept (its escalation would be worse than the champion's)";
        return;
    }
    p->promoted = m;
    p->verdict = "promoted";
}
