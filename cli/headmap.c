/* headmap.c - the outcome log's backend names as head names, by [backend NAME] head of a config. */
#include "headmap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "conf.h"

struct headmap {
    char *path;   /* the config, for messages */
    char **names; /* [n] backend names */
    char **heads; /* [n] their heads */
    size_t n;
    char **warned; /* [n_warned] log names not in the config, reported once */
    size_t n_warned;
    const char *cmd;
};

/* Out of memory aborts, as everywhere in triage. */
static void *
xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) {
        fputs("triage: out of memory\n", stderr);
        abort();
    }
    return p;
}

static char *
xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xrealloc(NULL, n), s, n);
}

struct headmap *
headmap_load(const char *cmd, const char *path)
{
    char err[512];
    struct conf *c = conf_load_flags(path, CONF_LOAD_SKIP_KEYS, err, sizeof(err));

    if (!c) {
        cli_errorf(cmd, "%s", err);
        return NULL;
    }
    struct headmap *m = xrealloc(NULL, sizeof(*m));
    memset(m, 0, sizeof(*m));
    m->cmd = cmd;
    m->path = xstrdup(path);
    m->n = c->n_backends;
    m->names = xrealloc(NULL, m->n * sizeof(char *));
    m->heads = xrealloc(NULL, m->n * sizeof(char *));
    for (size_t i = 0; i < m->n; i++) {
        const struct conf_backend *b = &c->backends[i];
        m->names[i] = xstrdup(b->name);
        m->heads[i] = xstrdup(b->head ? b->head : b->name);
    }
    conf_destroy(c);
    return m;
}

/* Returns the index of backend name in m, or -1. */
static long
find(const struct headmap *m, const char *name)
{
    for (size_t i = 0; m && i < m->n; i++)
        if (!strcmp(m->names[i], name))
            return (long)i;
    return -1;
}

const char *
headmap_head(const struct headmap *m, const char *name)
{
    long i = find(m, name);
    return i < 0 ? name : m->heads[i];
}

/* Warns once that the log's backend name is not in the config. */
static void
warn_unknown(struct headmap *m, const char *name)
{
    for (size_t i = 0; i < m->n_warned; i++)
        if (!strcmp(m->warned[i], name))
            return;
    m->warned = xrealloc(m->warned, (m->n_warned + 1) * sizeof(char *));
    m->warned[m->n_warned++] = xstrdup(name);
    fprintf(stderr,
            "triage %s: backend '%s' in the log is not in %s: its outcomes train a head "
            "named '%s'\n",
            m->cmd, name, m->path, name);
}

/* Lower is better: the export's precedence of label sources. */
static int
source_rank(const char *s)
{
    return !s ? 3 : !strcmp(s, "feedback") ? 0 : !strcmp(s, "judge") ? 1 : 2;
}

void
headmap_apply(struct headmap *m, json_t *example)
{
    json_t *outcomes = json_object_get(example, "outcomes");
    json_t *sources = json_object_get(example, "sources");
    const char *name;
    json_t *v;

    if (!m || !json_is_object(outcomes))
        return;
    /* Per head: the sum and count of q, and the best source. */
    json_t *sum = json_object(), *cnt = json_object(), *src = json_object();
    json_object_foreach(outcomes, name, v) {
        if (find(m, name) < 0)
            warn_unknown(m, name);
        const char *head = headmap_head(m, name);
        double q = json_number_value(v);
        json_t *s = json_object_get(sum, head);
        json_object_set_new(sum, head, json_real((s ? json_real_value(s) : 0.0) + q));
        json_t *n = json_object_get(cnt, head);
        json_object_set_new(cnt, head, json_integer((n ? json_integer_value(n) : 0) + 1));
        const char *from = json_string_value(json_object_get(sources, name));
        const char *best = json_string_value(json_object_get(src, head));
        if (from && source_rank(from) < source_rank(best))
            json_object_set_new(src, head, json_string(from));
    }
    json_t *mapped = json_object();
    json_object_foreach(sum, name, v) {
        json_int_t n = json_integer_value(json_object_get(cnt, name));
        /* one backend keeps its q exactly; several give the mean */
        json_object_set_new(mapped, name, json_real(json_real_value(v) / (double)n));
    }
    json_object_set_new(example, "outcomes", mapped);
    if (sources)
        json_object_set(example, "sources", src);
    /* a cascade fast answer teaches its head's escalation model: the first one per head */
    json_t *answers = json_object_get(example, "answer_signals");
    if (json_is_object(answers)) {
        json_t *by_head = json_object();
        json_object_foreach(answers, name, v)
            if (!json_object_get(by_head, headmap_head(m, name)))
                json_object_set(by_head, headmap_head(m, name), v);
        json_object_set_new(example, "answer_signals", by_head);
    }
    json_decref(sum);
    json_decref(cnt);
    json_decref(src);
}

void
headmap_describe(const struct headmap *m, const char *cmd)
{
    fprintf(stderr, "triage %s: %s maps backends to heads:", cmd, m->path);
    for (size_t i = 0; i < m->n; i++)
        fprintf(stderr, "%s %s -> %s", i ? "," : "", m->names[i], m->heads[i]);
    fputc('\n', stderr);
}

void
headmap_destroy(struct headmap *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++) {
        free(m->names[i]);
        free(m->heads[i]);
    }
    for (size_t i = 0; i < m->n_warned; i++)
        free(m->warned[i]);
    free(m->names);
    free(m->heads);
    free(m->warned);
    free(m->path);
    free(m);
}
