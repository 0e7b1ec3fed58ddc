/* toy_model.c - writes a tiny predictor model (heads "weak" and "strong") trained on a
 * handful of easy and hard prompts, so the live ops test can start the real triaged.
 * Usage: toy_model OUT.tmod */
#include <stdio.h>

#include <jansson.h>

#include "router.h"

int
main(int argc, char **argv)
{
    static const char *const easy[] = {"hi", "what is 2+2", "say hello", "name a color",
                                       "thanks"};
    static const char *const hard[] = {
        "prove that there are infinitely many primes of the form 4k+3",
        "integrate x^2 sin x dx from 0 to pi and explain each step",
        "design a consensus protocol that tolerates byzantine faults",
        "derive the navier stokes equations from conservation laws",
        "rewrite this recursive query with window functions and prove equivalence",
    };
    char err[256];

    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT.tmod\n", argv[0]);
        return 2;
    }
    struct router_dataset *d = router_dataset_new(16);
    for (int r = 0; r < 20; r++)
        for (size_t i = 0; i < 5; i++) {
            json_t *e = json_pack("{s:s, s:{s:f, s:f}}", "prompt", easy[i], "outcomes", "weak",
                                  1.0, "strong", 1.0);
            router_dataset_add(d, e);
            json_decref(e);
            e = json_pack("{s:s, s:{s:f, s:f}}", "prompt", hard[i], "outcomes", "weak", 0.0,
                          "strong", 1.0);
            router_dataset_add(d, e);
            json_decref(e);
        }
    struct router_train_opts o;
    router_train_opts_default(&o);
    o.strong = "strong";
    o.weak = "weak";
    struct router_model *m = router_train(d, NULL, 0, &o, err, sizeof(err));
    router_dataset_destroy(d);
    if (!m) {
        fprintf(stderr, "train: %s\n", err);
        return 1;
    }
    int rc = router_model_save(m, argv[1]);
    router_model_unref(m);
    if (rc < 0) {
        fprintf(stderr, "%s: cannot write the model\n", argv[1]);
        return 1;
    }
    return 0;
}
