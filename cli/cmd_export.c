/* cmd_export.c - `triage export`: the outcome log's labelled prompts as training JSONL. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "commands.h"
#include "headmap.h"
#include "storage.h"

static void
export_usage(FILE *f)
{
    fprintf(
        f, "usage: triage export --db FILE|URL [--config CONF] [--out FILE.jsonl]\n"
           "  Writes one line per distinct prompt of the clients' requests, as train --data reads:\n"
           "  {\"messages\": [...], \"outcomes\": {\"<backend>\": q}, \"sources\": {\"<backend>\": S}}\n"
           "  q in [0,1] for every backend with a label: S is the first source present of\n"
           "  feedback (/v1/feedback), judge, offline, and q the mean of its labels for that\n"
           "  prompt. Needs store_prompts = full (or features: the line then carries the\n"
           "  encoded feature vector and the prompt hash instead of messages); requests without any\n"
           "  label are skipped. --config CONF writes head names ([backend NAME] head)\n"
           "  instead of backend names. Without --out, writes to stdout. --db takes the SQLite\n"
           "  file or a postgresql:// URL ([storage] url: the log replicas share).\n");
}

struct sink {
    FILE *out;
    struct headmap *heads;
};

/* storage_export_fn: one example, backend names mapped to heads, as one JSONL line. */
static int
write_example(json_t *example, void *arg)
{
    struct sink *k = arg;

    headmap_apply(k->heads, example);
    if (json_dumpf(example, k->out, JSON_COMPACT) < 0 || fputc('\n', k->out) == EOF)
        return -1;
    return 0;
}

int
cli_export(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"db", required_argument, NULL, 'd'},
        {"config", required_argument, NULL, 'c'},
        {"out", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *db = NULL, *out = NULL, *config = NULL;
    char tmp[4096], err[4608] = "";
    struct storage_export_counts c;
    FILE *f = stdout, *special = NULL; /* special: --out names a device or a pipe */
    int ch;

    optind = 1;
    while ((ch = getopt_long(argc, argv, "d:c:o:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'd':
            db = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'h':
            export_usage(stdout);
            return 0;
        default:
            export_usage(stderr);
            return 2;
        }
    }
    if (optind != argc || !db) {
        export_usage(stderr);
        return 2;
    }
    struct sink sink = {stdout, NULL};
    if (config) {
        sink.heads = headmap_load("export", config);
        if (!sink.heads)
            return 1;
    }
    struct stat out_st;
    if (out && strcmp(out, "-") && stat(out, &out_st) == 0 && !S_ISREG(out_st.st_mode)) {
        /* A device or a pipe (/dev/stdout, a FIFO) is written to directly: renaming a
         * file over it would replace it (as root: /dev/null). */
        special = fopen(out, "w");
        if (!special) {
            cli_errorf("export", "%s: %s", out, strerror(errno));
            headmap_destroy(sink.heads);
            return 1;
        }
        f = special;
        out = NULL;
    } else if (out && strcmp(out, "-")) {
        /* Write beside the target and rename, so a failed export leaves no half file. */
        if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", out) >= sizeof(tmp)) {
            cli_errorf("export", "--out path too long");
            headmap_destroy(sink.heads);
            return 2;
        }
        f = fopen(tmp, "w");
        if (!f) {
            cli_errorf("export", "%s: %s", tmp, strerror(errno));
            headmap_destroy(sink.heads);
            return 1;
        }
    } else {
        out = NULL;
    }

    sink.out = f;
    int rc = storage_export_training(db, write_example, &sink, &c, err, sizeof(err));
    headmap_destroy(sink.heads);
    if (rc == -ECANCELED) {
        snprintf(err, sizeof(err), "writing %s failed", out ? tmp : "stdout");
        rc = -EIO;
    }
    if (out) {
        if (fclose(f) != 0 && rc == 0) {
            snprintf(err, sizeof(err), "%s: %s", tmp, strerror(errno));
            rc = -EIO;
        }
        if (rc == 0 && rename(tmp, out) != 0) {
            snprintf(err, sizeof(err), "%s: %s", out, strerror(errno));
            rc = -EIO;
        }
        if (rc != 0)
            unlink(tmp);
    } else if (special) {
        if (fclose(special) != 0 && rc == 0) {
            snprintf(err, sizeof(err), "writing --out: %s", strerror(errno));
            rc = -EIO;
        }
    } else if (fflush(stdout) != 0 && rc == 0) {
        snprintf(err, sizeof(err), "writing stdout: %s", strerror(errno));
        rc = -EIO;
    }
    if (rc != 0) {
        cli_errorf("export", "%s", err);
        return 1;
    }
    fprintf(stderr,
            "triage export: %llu examples from %llu requests%s%s\n"
            "  outcomes from feedback %llu, judge %llu, offline %llu\n"
            "  skipped %llu requests without prompt text or features (store_prompts = full or features)\n"
            "  skipped %llu requests without feedback or outcome (no label)\n"
            "  skipped %llu requests whose stored prompt is not a messages array\n"
            "  %llu shadow and judge calls (not prompts of their own)\n",
            (unsigned long long)c.lines, (unsigned long long)c.rows, out ? " to " : "",
            out ? out : "", (unsigned long long)c.by_feedback, (unsigned long long)c.by_judge,
            (unsigned long long)c.by_offline, (unsigned long long)c.no_prompt,
            (unsigned long long)c.no_outcome, (unsigned long long)c.bad_prompt,
            (unsigned long long)c.calls);
    return 0;
}
