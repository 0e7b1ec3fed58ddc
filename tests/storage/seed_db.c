/* seed_db.c - writes a small known outcome log for the CLI tests (test_cli.sh). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage.h"

static struct storage_record *
rec(const char *id, const char *backend, int64_t t, const char *prompt, int status)
{
    struct storage_record *r = storage_record_new();
    r->request_id = strdup(id);
    r->backend = strdup(backend);
    r->started_ms = t;
    r->finished_ms = t + 100;
    r->status = status;
    r->latency_ms = 100;
    r->ttfb_ms = 10;
    r->tokens_in = 1000;
    r->tokens_out = 1000;
    r->cost_usd = !strcmp(backend, "strong") ? 0.04 : 0.002;
    r->score = !strcmp(backend, "strong") ? 0.9 : 0.1;
    r->prompt = prompt ? strdup(prompt) : NULL;
    if (status >= 400)
        r->error_kind = strdup("upstream_timeout");
    return r;
}

int
main(int argc, char **argv)
{
    char err[256];
    int64_t now = (int64_t)time(NULL) * 1000 - 60000;

    if (argc != 2) {
        fprintf(stderr, "usage: seed_db FILE\n");
        return 2;
    }
    struct storage *s = storage_open(argv[1], NULL, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "seed_db: %s\n", err);
        return 1;
    }
    /* 3 fast (one with a prompt and good feedback, one hash-only), 1 strong with a
     * prompt and bad feedback, 1 strong timeout. */
    storage_submit(s, rec("a", "fast", now, "[{\"role\":\"user\",\"content\":\"hi\"}]", 200));
    storage_submit(s, rec("b", "fast", now, NULL, 200));
    storage_submit(s, rec("c", "fast", now, "[{\"role\":\"user\",\"content\":\"no label\"}]", 200));
    storage_submit(s, rec("d", "strong", now, "[{\"role\":\"user\",\"content\":\"hard\"}]", 200));
    storage_submit(s, rec("e", "strong", now, NULL, 504));
    storage_flush(s, 0);
    int rc = storage_feedback(s, "a", NAN, "good", NULL, err, sizeof(err)) |
             storage_feedback(s, "d", NAN, "bad", NULL, err, sizeof(err));
    storage_close(s);
    return rc ? 1 : 0;
}
