/* cmd_score.c - `triage score`: score JSONL prompts from stdin with a model. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "commands.h"
#include "jsonl.h"
#include "router.h"

static void
usage(FILE *f)
{
    fprintf(f, "usage: triage score --model M < prompts.jsonl\n"
               "\n"
               "Reads one request per line ({\"prompt\": ...} or {\"messages\": [...]}, as for\n"
               "train; outcomes are ignored) and writes one line per input line, in order:\n"
               "  {\"score\": s, \"p\": {\"<head>\": p, ...}}\n"
               "s in [0,1]: higher needs the stronger backend more; p: predicted success per head.\n"
               "A line that cannot be scored gives {\"error\": \"...\"} and exit status 1.\n"
               "\n"
               "  --model M    model file\n"
               "  -h, --help   this text\n");
}

int
cli_score(int argc, char **argv)
{
    static const struct option longopts[] = {{"model", required_argument, NULL, 'm'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *model = NULL, *line;
    size_t len;
    char err[256];
    int c, rc, bad = 0;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!model || optind != argc) {
        usage(stderr);
        return 2;
    }
    struct router_model *m = router_model_load(model, err, sizeof(err));
    if (!m) {
        cli_errorf("score", "%s", err);
        return 1;
    }
    struct jsonl_reader *r = jsonl_open("-");
    if (!r) {
        cli_errorf("score", "stdin: %s", strerror(errno));
        router_model_unref(m);
        return 1;
    }
    while ((rc = jsonl_next(r, &line, &len)) > 0) {
        struct router_scores s;
        json_error_t jerr;
        json_t *j = json_loadb(line, len, 0, &jerr);
        if (!j) {
            printf("{\"error\": \"line %lu: invalid JSON\"}\n", jsonl_line_no(r));
            bad = 1;
            continue;
        }
        if (router_score_request(m, j, &s) < 0) {
            printf("{\"error\": \"line %lu: no prompt or messages\"}\n", jsonl_line_no(r));
            bad = 1;
            json_decref(j);
            continue;
        }
        json_decref(j);
        printf("{\"score\": %.6f, \"p\": {", s.score);
        for (size_t i = 0; i < s.n_heads; i++) {
            json_t *name = json_string(router_model_head_name(m, i));
            char *quoted = json_dumps(name, JSON_ENCODE_ANY);
            printf("%s%s: %.6f", i ? ", " : "", quoted, s.p[i]);
            free(quoted);
            json_decref(name);
        }
        printf("}}\n");
    }
    if (rc < 0) {
        cli_errorf("score", "stdin: read error");
        bad = 1;
    }
    if (fflush(stdout) != 0)
        bad = 1;
    jsonl_close(r);
    router_model_unref(m);
    router_thread_cleanup();
    return bad ? 1 : 0;
}
