/* jsonl.c - buffered gzip/plain line reading and JSONL training-set loading for the CLI. */
#include "jsonl.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "cli.h"

struct jsonl_reader {
    gzFile gz;
    char buf[1 << 16];
    size_t pos, end;
    int eof;
    char *line;
    size_t cap;
    unsigned long line_no;
    double size; /* bytes on disk, 0 when unknown */
};

struct jsonl_reader *
jsonl_open(const char *path)
{
    struct jsonl_reader *r = calloc(1, sizeof(*r));
    struct stat st;
    int fd;

    if (!r)
        abort();
    if (strcmp(path, "-") == 0) {
        fd = dup(STDIN_FILENO);
    } else {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0 && fstat(fd, &st) == 0)
            r->size = (double)st.st_size;
    }
    if (fd < 0)
        goto fail;
    r->gz = gzdopen(fd, "rb"); /* reads plain files transparently too */
    if (!r->gz) {
        close(fd);
        errno = ENOMEM;
        goto fail;
    }
    gzbuffer(r->gz, 1 << 17);
    return r;
fail:
    free(r);
    return NULL;
}

int
jsonl_next(struct jsonl_reader *r, const char **line, size_t *len)
{
    size_t n = 0;

    for (;;) {
        if (r->pos == r->end) {
            if (r->eof)
                break;
            int got = gzread(r->gz, r->buf, sizeof(r->buf));
            if (got < 0)
                return -EIO;
            if (got == 0) {
                r->eof = 1;
                break;
            }
            r->pos = 0;
            r->end = (size_t)got;
        }
        char *nl = memchr(r->buf + r->pos, '\n', r->end - r->pos);
        size_t take = nl ? (size_t)(nl - (r->buf + r->pos)) : r->end - r->pos;
        if (n + take + 1 > r->cap) {
            size_t cap = r->cap ? r->cap : 4096;
            while (cap < n + take + 1)
                cap *= 2;
            r->line = realloc(r->line, cap);
            if (!r->line)
                abort();
            r->cap = cap;
        }
        memcpy(r->line + n, r->buf + r->pos, take);
        n += take;
        r->pos += take;
        if (nl) {
            r->pos++;
            goto done;
        }
    }
    if (n == 0)
        return 0;
done:
    if (n > 0 && r->line[n - 1] == '\r')
        n--;
    r->line[n] = '\0';
    r->line_no++;
    *line = r->line;
    *len = n;
    return 1;
}

unsigned long
jsonl_line_no(const struct jsonl_reader *r)
{
    return r->line_no;
}

double
jsonl_progress(const struct jsonl_reader *r)
{
    if (r->size <= 0)
        return 0;
    double f = (double)gzoffset(r->gz) / r->size;
    return f > 1 ? 1 : f;
}

void
jsonl_close(struct jsonl_reader *r)
{
    if (!r)
        return;
    gzclose(r->gz);
    free(r->line);
    free(r);
}

static void
extra_push(struct jsonl_extra *e, double v)
{
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 1024;
        e->values = realloc(e->values, e->cap * sizeof(double));
        if (!e->values)
            abort();
    }
    e->values[e->n++] = v;
}

int
jsonl_load_dataset(const char *cmd, struct router_dataset *d, const char *path,
                   struct jsonl_extra *extra)
{
    struct jsonl_reader *r = jsonl_open(path);
    struct cli_progress bar;
    const char *line;
    size_t len;
    int rc, ret = -1;

    if (!r) {
        cli_errorf(cmd, "%s: %s", path, strerror(errno));
        return -1;
    }
    cli_progress_start(&bar, "loading", 1000);
    while ((rc = jsonl_next(r, &line, &len)) > 0) {
        json_error_t jerr;
        if (strspn(line, " \t") == len)
            continue;
        json_t *j = json_loadb(line, len, 0, &jerr);
        if (!j) {
            cli_errorf(cmd, "%s:%lu: %s", path, jsonl_line_no(r), jerr.text);
            goto out;
        }
        rc = router_dataset_add(d, j);
        if (rc < 0) {
            cli_errorf(cmd, "%s:%lu: %s", path, jsonl_line_no(r),
                       rc == -E2BIG ? "too many outcome names"
                                    : "needs \"prompt\" or \"messages\", and outcomes in [0,1]");
            json_decref(j);
            goto out;
        }
        if (extra && extra->field) {
            const json_t *v = json_object_get(j, extra->field);
            extra_push(extra, json_is_number(v) ? json_number_value(v) : NAN);
        }
        json_decref(j);
        if ((jsonl_line_no(r) & 255) == 0)
            cli_progress_update(&bar, (unsigned long)(jsonl_progress(r) * 1000));
    }
    if (rc < 0) {
        cli_errorf(cmd, "%s: read error (corrupt gzip?)", path);
        goto out;
    }
    ret = 0;
out:
    cli_progress_update(&bar, 1000);
    cli_progress_end(&bar);
    jsonl_close(r);
    return ret;
}

int
jsonl_parse_double(const char *cmd, const char *name, const char *arg, double lo, double hi,
                   double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(arg, &end);
    if (errno || end == arg || *end || !(v >= lo && v <= hi)) {
        cli_errorf(cmd, "--%s: expected a number in [%g, %g], got '%s'", name, lo, hi, arg);
        return -1;
    }
    *out = v;
    return 0;
}

int
jsonl_train_opt(const char *cmd, int opt, const char *arg, struct router_train_opts *o,
                unsigned *n_bits)
{
    double v;

    switch (opt) {
    case 1000:
        if (jsonl_parse_double(cmd, "seed", arg, 0, 9007199254740992.0, &v) < 0)
            return -1;
        o->seed = (uint64_t)v;
        return 1;
    case 1001:
        if (jsonl_parse_double(cmd, "bits", arg, 10, 24, &v) < 0)
            return -1;
        *n_bits = (unsigned)v;
        return 1;
    case 1002:
        if (jsonl_parse_double(cmd, "dim", arg, 0, 256, &v) < 0)
            return -1;
        o->dim = (unsigned)v;
        return 1;
    case 1003:
        if (jsonl_parse_double(cmd, "epochs", arg, 1, 1000, &v) < 0)
            return -1;
        o->epochs = (unsigned)v;
        return 1;
    case 1004:
        return jsonl_parse_double(cmd, "lr", arg, 0, 100, &o->lr) < 0 ? -1 : 1;
    case 1005:
        return jsonl_parse_double(cmd, "lr-hidden", arg, 0, 100, &o->lr_hidden) < 0 ? -1 : 1;
    case 1006:
        return jsonl_parse_double(cmd, "l2", arg, 0, 1, &o->l2) < 0 ? -1 : 1;
    case 1007:
        return jsonl_parse_double(cmd, "head-weight", arg, 0, 100, &o->head_weight) < 0 ? -1 : 1;
    case 1011:
        if (jsonl_parse_double(cmd, "bags", arg, 1, 64, &v) < 0)
            return -1;
        o->bags = (unsigned)v;
        return 1;
    case 1010:
        o->set_bias = 1;
        return 1;
    case 1009:
        return jsonl_parse_double(cmd, "score-mix", arg, 0, 1, &o->score_mix) < 0 ? -1 : 1;
    case 1008:
        if (strcmp(arg, "advantage") == 0)
            o->score = ROUTER_SCORE_ADVANTAGE;
        else if (strcmp(arg, "weak-fails") == 0)
            o->score = ROUTER_SCORE_WEAK_FAILS;
        else {
            cli_errorf(cmd, "--score: expected advantage or weak-fails, got '%s'", arg);
            return -1;
        }
        return 1;
    }
    return 0;
}
