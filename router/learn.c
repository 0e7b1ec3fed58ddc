/* learn.c - the retraining recipe: how the outcome log's judged prompts join the base data. */
#include <stdlib.h>
#include <string.h>

#include "router-int.h"

/* Each judged prompt of the log counts LOG_WEIGHT times beside the base data, so a few
 * hundred of the user's prompts are not drowned by the ~39,000 of the shipped sets. */
#define LOG_WEIGHT 5

unsigned
router_log_weight(size_t n_log, size_t n_base)
{
    return n_base && n_log ? LOG_WEIGHT : 1;
}

struct router_model *
router_train_log(const struct router_dataset *d, const size_t *base, size_t n_base,
                 const size_t *log, size_t n_log, const struct router_train_opts *o, char *err,
                 size_t errlen)
{
    unsigned w = router_log_weight(n_log, n_base);
    size_t n = n_base + n_log * w, k = n_base;
    size_t *idx = malloc((n ? n : 1) * sizeof(*idx));

    if (!idx)
        abort(); /* out of memory aborts, project-wide */
    if (n_base)
        memcpy(idx, base, n_base * sizeof(*idx));
    for (size_t i = 0; i < n_log; i++)
        for (unsigned r = 0; r < w; r++)
            idx[k++] = log[i];
    struct router_model *m = router_train(d, idx, n, o, err, errlen);
    free(idx);
    return m;
}
