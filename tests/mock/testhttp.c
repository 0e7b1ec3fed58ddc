/* testhttp.c - helpers for the tests in tests/mock (see testhttp.h). */
#include "testhttp.h"

#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

extern char **environ;

int failures;
unsigned port;





size_t
on_sink(char *p, size_t sz, size_t n, void *arg)
{
    struct sink *s = arg;
    size_t add = sz * n;

    *s->buf = realloc(*s->buf, *s->len + add + 1);
    memcpy(*s->buf + *s->len, p, add);
    *s->len += add;
    (*s->buf)[*s->len] = '\0';
    return add;
}

void
resp_free(struct resp *r)
{
    free(r->body);
    free(r->head);
    memset(r, 0, sizeof(*r));
}

/* One request on handle h (NULL: a fresh one). body NULL = GET. */
void
request(CURL *h, const char *path, const char *body, const char *auth, long timeout_ms,
        struct resp *r)
{
    char url[256];
    int own = h == NULL;
    struct curl_slist *hdrs = NULL;
    struct sink bs = {&r->body, &r->len}, hs = {&r->head, &r->hlen};

    memset(r, 0, sizeof(*r));
    r->body = calloc(1, 1);
    r->head = calloc(1, 1);
    if (own)
        h = curl_easy_init();
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &bs);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_sink);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &hs);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms ? timeout_ms : 10000L);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }
    if (auth)
        hdrs = curl_slist_append(hdrs, auth);
    if (body && strlen(body) > 2000)
        hdrs = curl_slist_append(hdrs, "Expect: 100-continue");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    r->rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &r->connects);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    if (own)
        curl_easy_cleanup(h);
}

/* Returns the value of header name in r (a static copy) or NULL. */
const char *
header(const struct resp *r, const char *name)
{
    static char val[512];
    size_t nl = strlen(name);

    for (const char *p = r->head; p && *p;) {
        const char *e = strstr(p, "\r\n");
        if (!e)
            break;
        if ((size_t)(e - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(val, sizeof(val), "%.*s", (int)(e - v), v);
            return val;
        }
        p = e + 2;
    }
    return NULL;
}



void
parse_sse(const char *body, struct sse *s)
{
    memset(s, 0, sizeof(*s));
    for (const char *p = body; (p = strstr(p, "data: ")) != NULL;) {
        p += 6;
        const char *e = strstr(p, "\n\n");
        if (!e)
            break;
        if (s->done)
            s->after_done++;
        if (strncmp(p, "[DONE]", 6) == 0) {
            s->done = 1;
            p = e;
            continue;
        }
        json_t *j = json_loadb(p, (size_t)(e - p), 0, NULL);
        CHECK(j != NULL);
        CHECK(strcmp(json_string_value(json_object_get(j, "object")), "chat.completion.chunk") == 0);
        snprintf(s->model, sizeof(s->model), "%s", json_string_value(json_object_get(j, "model")));
        json_t *choices = json_object_get(j, "choices");
        json_t *c0 = json_array_get(choices, 0);
        if (json_array_size(choices) == 0) {
            s->usage_chunks++;
            s->completion_tokens =
                (long)json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens"));
        } else if (json_is_string(json_object_get(c0, "finish_reason"))) {
            s->stop_chunks++;
        } else {
            const char *d = json_string_value(json_object_get(json_object_get(c0, "delta"), "content"));
            CHECK(d != NULL);
            if (d)
                strncat(s->content, d, sizeof(s->content) - strlen(s->content) - 1);
            s->content_chunks++;
        }
        json_decref(j);
        p = e;
    }
}


int
spawn_server(char *const argv[], pid_t *pid, unsigned *out_port)
{
    int out[2];
    posix_spawn_file_actions_t fa;
    char line[256] = {0};

    if (pipe(out) < 0)
        return -1;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    int r = posix_spawn(pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    if (r != 0) {
        close(out[0]);
        return -1;
    }
    FILE *f = fdopen(out[0], "r");
    if (!fgets(line, sizeof(line), f) || sscanf(line, "listening on %u", out_port) != 1) {
        fclose(f);
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
        return -1;
    }
    fclose(f); /* the server never writes to stdout again */
    return 0;
}

int
stop_server(pid_t pid)
{
    int st = 0;

    kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
    return st;
}
