/* make_model.c - writes a tiny predictor model (heads fast and strong) to argv[1], for tests
 * that run the real triaged (demo, clients, lifecycle) and check the wire protocol, not
 * routing quality. An optional seed (argv[2]) gives another model version, for reloads. */
#include <stdio.h>
#include <stdlib.h>

#include <jansson.h>

#include "router.h"

int
main(int argc, char **argv)
{
    struct router_train_opts o;
    char err[256];
    int rc = 1;

    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: make_model OUT.tmod [SEED]\n");
        return 2;
    }
    struct router_dataset *d = router_dataset_new(10);
    for (int i = 0; i < 20; i++) {
        char easy[64], hard[128];
        snprintf(easy, sizeof(easy), "what is %d plus %d", i, i + 2);
        snprintf(hard, sizeof(hard), "prove that the series %d of eigenvalues converges uniformly", i);
        json_t *e = json_pack("{s:s,s:{s:f,s:f}}", "prompt", easy, "outcomes", "fast", 1.0, "strong", 1.0);
        json_t *h = json_pack("{s:s,s:{s:f,s:f}}", "prompt", hard, "outcomes", "fast", 0.0, "strong", 1.0);
        router_dataset_add(d, e);
        router_dataset_add(d, h);
        json_decref(e);
        json_decref(h);
    }
    router_train_opts_default(&o);
    o.epochs = 2;
    o.strong = "strong";
    o.weak = "fast";
    if (argc == 3)
        o.seed = strtoull(argv[2], NULL, 10);
    struct router_model *m = router_train(d, NULL, 0, &o, err, sizeof(err));
    if (m && router_model_save(m, argv[1]) == 0)
        rc = 0;
    else
        fprintf(stderr, "make_model: %s\n", m ? "cannot save" : err);
    router_model_unref(m);
    router_dataset_destroy(d);
    router_thread_cleanup();
    return rc;
}
