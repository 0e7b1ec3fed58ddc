/* demo_run.c - what `triage demo` and `triage demo --learn` share (see demo_run.h). */
#include "demo_run.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"
#include "config.h"

#define SOURCE_DATA TRIAGE_SOURCE_ROOT "/data/replay/gsm8k.jsonl.gz"
#define SOURCE_CONF TRIAGE_SOURCE_ROOT "/conf/triage.conf"

const char *
demo_default_data(void)
{
    return access(SOURCE_DATA, R_OK) == 0 ? SOURCE_DATA : TRIAGE_DATADIR "/replay/gsm8k.jsonl.gz";
}

const char *
demo_default_conf(void)
{
    return access(SOURCE_CONF, R_OK) == 0 ? SOURCE_CONF : TRIAGE_SYSCONFDIR "/triage.conf";
}

struct buf {
    char *p;
    size_t len, cap;
};

static size_t
on_data(char *p, size_t sz, size_t n, void *arg)
{
    struct buf *b = arg;
    size_t add = sz * n;

    if (b->len + add + 1 > b->cap) {
        b->cap = (b->len + add + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort(); /* out of memory */
    }
    memcpy(b->p + b->len, p, add);
    b->len += add;
    b->p[b->len] = '\0';
    return add;
}

struct job {
    CURL *h;
    size_t k;
    char *body;
    struct buf resp;
    char backend[64]; /* x-triage-backend */
    double score;     /* x-triage-score, or NAN */
};

/* The value of header `name:` (lower case, colon included) in line p (len bytes), trimmed,
 * into out (size bytes); 1 when p is that header. */
static int
header_value(const char *p, size_t len, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);

    if (len <= nl || strncasecmp(p, name, nl) != 0)
        return 0;
    const char *v = p + nl;
    size_t vl = len - nl;
    while (vl && (*v == ' ' || *v == '\t'))
        v++, vl--;
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
        vl--;
    snprintf(out, size, "%.*s", (int)vl, v);
    return 1;
}

static size_t
on_header(char *p, size_t sz, size_t n, void *arg)
{
    struct job *j = arg;
    size_t len = sz * n;
    char v[64], *end;

    if (!header_value(p, len, "x-triage-backend:", j->backend, sizeof(j->backend)) &&
        header_value(p, len, "x-triage-score:", v, sizeof(v))) {
        double x = strtod(v, &end);
        if (end != v)
            j->score = x;
    }
    return len;
}

static void
job_start(const struct demo_post *p, CURLM *m, struct curl_slist *hdrs, struct job *j, size_t k)
{
    char url[1024];

    j->k = k;
    j->resp.len = 0;
    j->backend[0] = '\0';
    j->score = NAN;
    free(j->body);
    j->body = p->body(p->arg, k);
    if (!j->h)
        j->h = curl_easy_init();
    snprintf(url, sizeof(url), "%s/v1/chat/completions", p->url);
    curl_easy_setopt(j->h, CURLOPT_URL, url);
    curl_easy_setopt(j->h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(j->h, CURLOPT_POSTFIELDS, j->body);
    curl_easy_setopt(j->h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(j->h, CURLOPT_WRITEDATA, &j->resp);
    curl_easy_setopt(j->h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(j->h, CURLOPT_HEADERDATA, j);
    curl_easy_setopt(j->h, CURLOPT_TIMEOUT_MS, p->timeout_ms);
    curl_easy_setopt(j->h, CURLOPT_PRIVATE, j);
    curl_multi_add_handle(m, j->h);
}

void
demo_post_all(const struct demo_post *p)
{
    CURLM *m = curl_multi_init();
    unsigned conc = p->concurrency ? p->concurrency : 1;
    struct job *jobs = calloc(conc, sizeof(*jobs));
    struct job **idle = calloc(conc, sizeof(*idle));
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    size_t n_idle = conc, next = 0, done = 0;
    struct cli_progress bar;

    if (!jobs || !idle)
        abort();
    if (p->auth)
        hdrs = curl_slist_append(hdrs, p->auth);
    for (unsigned i = 0; i < conc; i++)
        idle[i] = &jobs[i];
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conc);
    if (p->progress)
        cli_progress_start(&bar, p->progress, p->total);
    while (done < p->total && !(p->stop && *p->stop)) {
        while (n_idle && next < p->total)
            job_start(p, m, hdrs, idle[--n_idle], next++);
        int running, left;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct job *j;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
            struct demo_reply r = {.rc = msg->data.result, .backend = j->backend, .score = j->score};
            curl_easy_getinfo(j->h, CURLINFO_RESPONSE_CODE, &r.status);
            curl_easy_getinfo(j->h, CURLINFO_TOTAL_TIME, &r.secs);
            r.body = j->resp.p ? j->resp.p : "";
            r.len = j->resp.len;
            curl_multi_remove_handle(m, j->h);
            p->done(p->arg, j->k, &r);
            idle[n_idle++] = j;
            done++;
            if (p->progress)
                cli_progress_update(&bar, done);
        }
        if (done < p->total)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    if (p->progress)
        cli_progress_end(&bar);
    for (unsigned i = 0; i < conc; i++) {
        if (jobs[i].h) {
            curl_multi_remove_handle(m, jobs[i].h); /* still in flight when stopped */
            curl_easy_cleanup(jobs[i].h);
        }
        free(jobs[i].body);
        free(jobs[i].resp.p);
    }
    curl_slist_free_all(hdrs);
    free(jobs);
    free(idle);
    curl_multi_cleanup(m);
}

char *
demo_http_get(const char *url, const char *path)
{
    CURL *h = curl_easy_init();
    struct buf b = {0};
    char full[1024];
    long status = 0;

    snprintf(full, sizeof(full), "%s%s", url, path);
    curl_easy_setopt(h, CURLOPT_URL, full);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    CURLcode rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    if (rc != CURLE_OK || status != 200) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

long
demo_gz_line(gzFile f, char **line, size_t *cap)
{
    size_t len = 0;

    for (;;) {
        if (*cap - len < 2) {
            *cap = *cap ? *cap * 2 : 65536;
            *line = realloc(*line, *cap);
            if (!*line)
                abort(); /* out of memory */
        }
        if (!gzgets(f, *line + len, (int)(*cap - len)))
            return len ? (long)len : -1;
        len += strlen(*line + len);
        if (len && (*line)[len - 1] == '\n')
            return (long)len;
    }
}

void
demo_svg_text(FILE *f, double x, double y, const char *anchor, const char *extra, const char *text)
{
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" %s>%s</text>\n", x, y, anchor,
            extra ? extra : "", text);
}

char *
demo_chat_body(const char *model, const char *prompt)
{
    json_t *body = json_pack("{s:s,s:[{s:s,s:s}]}", "model", model, "messages", "role", "user",
                             "content", prompt);
    char *s = json_dumps(body, JSON_COMPACT);

    json_decref(body);
    if (!s)
        abort(); /* out of memory (the strings are valid UTF-8: they came from JSON) */
    return s;
}

int
demo_svg_close(FILE *f, const char *path)
{
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0) {
        cli_errorf("demo", "%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}
