/* mockllm.c - a fast scriptable OpenAI- and Anthropic-compatible backend for triaged's tests
 * and benchmarks: chat completions, Responses, completions, embeddings and Anthropic
 * Messages (tests/mock/README.md says what each answers and checks).
 *
 * mockllm --port 0 [--listen ADDR] [--latency-ms N] [--chunks N] [--chunk-delay-ms N]
 *         [--content TEXT] [--rule SUBSTR=TEXT]... [--threads N] [--stamp]
 * prints "listening on <port>" once ready. --rule: a request whose body holds SUBSTR is
 * answered TEXT (the first such rule; e.g. a judge grading by what the answer says).
 * A chat request with "logprobs": true gets choices[].logprobs.content[] (one entry per
 * piece; "top_logprobs": N alternatives each). A request may override the defaults with a
 * top-level "mock" object: latency_ms, chunks, chunk_delay_ms, content, status,
 * retry_after, fail ("close" | "hang" | "die_mid_stream"), die_after, stamp, logprob
 * (every token's log-probability, default -0.1); and
 * by_model, {"<model>": {...}}: members that replace those above when the request's
 * "model" is <model> (a proxy sends each backend its own model name, so one request
 * can fail on one backend and succeed on its fallback).
 *
 * stamp (for bench/streams): every content piece is " mockts:" and 19 digits, the mock's
 * CLOCK_MONOTONIC time in ns taken just before the piece is written to the socket.
 *
 * --heads: GET /_mock/last_head answers the last chat request's path, query, headers and body
 * ({"path", "query", "headers": {lower-case name: value}}), for tests of what a proxy
 * sends; any path ending in /chat/completions is a chat path (an Azure deployment's). */
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <uv.h>

#include "fakeai.h"

/* The last chat request's head, for GET /_mock/last_head: what a proxy sent. */
static pthread_mutex_t head_mu = PTHREAD_MUTEX_INITIALIZER;
static json_t *last_head;

static void
keep_head(struct fakeai_req *req)
{
    json_t *h = json_object();
    for (unsigned i = 0; i < fakeai_req_n_headers(req); i++) {
        const char *name, *value = fakeai_req_header_at(req, i, &name);
        char lower[128];
        size_t n = strlen(name) < sizeof(lower) - 1 ? strlen(name) : sizeof(lower) - 1;
        for (size_t k = 0; k < n; k++)
            lower[k] = (char)tolower((unsigned char)name[k]);
        lower[n] = '\0';
        /* a repeated header shows as its values joined by ", " */
        const char *had = json_string_value(json_object_get(h, lower));
        if (had) {
            char *both = malloc(strlen(had) + strlen(value) + 3);
            if (!both)
                abort();
            sprintf(both, "%s, %s", had, value);
            json_object_set_new(h, lower, json_string(both));
            free(both);
        } else {
            json_object_set_new(h, lower, json_string(value));
        }
    }
    size_t blen;
    const char *body = fakeai_req_body(req, &blen);
    json_t *jb = body ? json_stringn(body, blen) : NULL; /* NULL: not UTF-8 */
    json_t *head = json_pack("{s:s,s:s,s:o,s:o}", "path", fakeai_req_path(req), "query",
                             fakeai_req_query(req), "headers", h, "body",
                             jb ? jb : json_null());
    pthread_mutex_lock(&head_mu);
    json_decref(last_head);
    last_head = head;
    pthread_mutex_unlock(&head_mu);
}

#define MOCK_MAX_RULES 8

struct mock_defaults {
    uint32_t latency_ms;
    unsigned chunks;       /* 0 = content by words */
    uint32_t chunk_delay_ms;
    const char *content;   /* NULL = generated from chunks */
    int stamp;             /* 1: stamped pieces (see the top of the file) */
    int heads;             /* 1: keep each chat request's head for /_mock/last_head */
    const char *rule_in[MOCK_MAX_RULES];  /* --rule SUBSTR=TEXT: a request whose body holds */
    const char *rule_out[MOCK_MAX_RULES]; /* SUBSTR is answered TEXT (the first rule wins) */
    size_t rule_in_len[MOCK_MAX_RULES];
    unsigned n_rules;
};

/* ---- send-time stamps ------------------------------------------------------------------
 * fakeai.c builds each SSE event when its timer fires and hands it to uv_try_write (or
 * uv_write when the socket is full). This executable defines both, so fakeai.c's calls land
 * here first: a placeholder piece in the outgoing bytes gets the clock, then libuv's own
 * function (found with RTLD_NEXT) sends them. Nothing is scanned until a stamp is asked. */
#define STAMP_MARK " mockts:"
#define STAMP_DIGITS 19
static atomic_int stamping;
static int (*real_try_write)(uv_stream_t *, const uv_buf_t[], unsigned int);
static int (*real_write)(uv_write_t *, uv_stream_t *, const uv_buf_t[], unsigned int,
                         uv_write_cb);

static void
stamp_init(void)
{
    void *p = dlsym(RTLD_NEXT, "uv_try_write"), *q = dlsym(RTLD_NEXT, "uv_write");

    if (!p || !q)
        abort();
    memcpy(&real_try_write, &p, sizeof(p)); /* ISO C has no object-to-function cast */
    memcpy(&real_write, &q, sizeof(q));
}

/* Returns new content of n placeholder pieces, each STAMP_MARK and STAMP_DIGITS '#'. */
static char *
stamp_content(unsigned n)
{
    size_t ml = strlen(STAMP_MARK), pl = ml + STAMP_DIGITS;
    char *s = malloc((size_t)n * pl + 1);

    if (!s)
        abort();
    for (unsigned i = 0; i < n; i++) {
        memcpy(s + (size_t)i * pl, STAMP_MARK, ml);
        memset(s + (size_t)i * pl + ml, '#', STAMP_DIGITS);
    }
    s[(size_t)n * pl] = '\0';
    return s;
}

static void
stamp_bufs(const uv_buf_t bufs[], unsigned int n)
{
    static const char hole[] = STAMP_MARK "#";
    struct timespec ts;
    char digits[STAMP_DIGITS + 1];
    int have = 0;

    for (unsigned int i = 0; i < n; i++) {
        char *p = bufs[i].base, *end = p + bufs[i].len;
        while ((p = memmem(p, (size_t)(end - p), hole, sizeof(hole) - 1)) != NULL) {
            p += sizeof(hole) - 2;
            if ((size_t)(end - p) < STAMP_DIGITS)
                break;
            if (!have) {
                clock_gettime(CLOCK_MONOTONIC, &ts);
                snprintf(digits, sizeof(digits), "%019lld",
                         (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
                have = 1;
            }
            memcpy(p, digits, STAMP_DIGITS); /* fakeai's own heap copy of the event */
            p += STAMP_DIGITS;
        }
    }
}

int
uv_try_write(uv_stream_t *handle, const uv_buf_t bufs[], unsigned int nbufs)
{
    if (atomic_load_explicit(&stamping, memory_order_relaxed))
        stamp_bufs(bufs, nbufs);
    return real_try_write(handle, bufs, nbufs);
}

int
uv_write(uv_write_t *req, uv_stream_t *handle, const uv_buf_t bufs[], unsigned int nbufs,
         uv_write_cb cb)
{
    if (atomic_load_explicit(&stamping, memory_order_relaxed))
        stamp_bufs(bufs, nbufs);
    return real_write(req, handle, bufs, nbufs, cb);
}

static const char *const words[] = {
    " The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", " again",
};

/* Returns new text of n word pieces, for "chunks" without "content". */
static char *
generated_content(unsigned n)
{
    size_t cap = 16 + (size_t)n * 8, len = 0;
    char *s = malloc(cap);

    if (!s)
        abort();
    s[0] = '\0';
    for (unsigned i = 0; i < n; i++) {
        const char *w = words[i % (sizeof(words) / sizeof(words[0]))];
        if (i == 0)
            w++; /* no space in front of the first word */
        size_t l = strlen(w);
        memcpy(s + len, w, l + 1);
        len += l;
    }
    return s;
}

/* Adds up the bytes of message text: string contents and "text" parts. */
static size_t
prompt_bytes(json_t *messages)
{
    size_t i, j, total = 0;
    json_t *m, *part;

    json_array_foreach(messages, i, m) {
        json_t *content = json_object_get(m, "content");
        if (json_is_string(content)) {
            total += json_string_length(content);
        } else if (json_is_array(content)) {
            json_array_foreach(content, j, part) {
                json_t *t = json_object_get(part, "text");
                if (json_is_string(t))
                    total += json_string_length(t);
            }
        }
    }
    return total;
}

static long
get_int(json_t *obj, const char *key, long dflt)
{
    json_t *v = json_object_get(obj, key);

    if (json_is_integer(v))
        return (long)json_integer_value(v);
    if (json_is_real(v))
        return (long)json_real_value(v);
    return dflt;
}

static void
reply_json(struct fakeai_req *req, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);

    fakeai_req_reply(req, status, "application/json", NULL, s, strlen(s));
    free(s);
    json_decref(j);
}

/* Bytes of prompt text in a request of any of the APIs: messages (and Anthropic's
 * system), a Responses input and instructions, a completions prompt. */
static size_t
request_prompt_bytes(json_t *root)
{
    json_t *v;
    size_t i, total = prompt_bytes(json_object_get(root, "messages"));

    if (json_is_string(v = json_object_get(root, "system")) ||
        json_is_string(v = json_object_get(root, "instructions")))
        total += json_string_length(v);
    v = json_object_get(root, "input");
    if (json_is_string(v))
        total += json_string_length(v);
    else if (json_is_array(v))
        total += prompt_bytes(v);
    v = json_object_get(root, "prompt");
    if (json_is_string(v))
        total += json_string_length(v);
    json_t *p;
    json_array_foreach(v, i, p) {
        if (json_is_string(p))
            total += json_string_length(p);
    }
    return total;
}

/* What an API's backend must be sent, checked as the real one would: NULL when fine,
 * else the error message (static or in buf) with *status. */
static const char *
check_request(struct fakeai_req *req, enum fakeai_format format, json_t *root, char *buf,
              size_t cap, int *status)
{
    *status = 400;
    if (format == FAKEAI_MESSAGES) {
        if (fakeai_req_header(req, "authorization")) {
            *status = 401;
            return "mockllm: an Anthropic backend takes its key as x-api-key, not Authorization";
        }
        if (!fakeai_req_header(req, "anthropic-version"))
            return "anthropic-version: header is required";
        if (!json_is_integer(json_object_get(root, "max_tokens")))
            return "max_tokens: Field required";
        json_t *m = json_object_get(root, "messages");
        if (!json_is_array(m) || json_array_size(m) == 0)
            return "messages: Field required";
        return NULL;
    }
    if (fakeai_req_header(req, "x-api-key") || fakeai_req_header(req, "anthropic-version"))
        return "mockllm: an OpenAI backend got Anthropic headers";
    if (format == FAKEAI_RESPONSES) {
        json_t *prev = json_object_get(root, "previous_response_id");
        char mine[48];
        snprintf(mine, sizeof(mine), "resp_mock%u_", (unsigned)fakeai_server_port(fakeai_req_server(req)));
        if (json_is_string(prev) && strncmp(json_string_value(prev), mine, strlen(mine))) {
            /* the state of a response lives where it was made */
            snprintf(buf, cap, "Previous response with id '%.64s' not found.",
                     json_string_value(prev));
            *status = 404;
            return buf;
        }
        if (!json_object_get(root, "input"))
            return "Missing required parameter: 'input'.";
    }
    if (format == FAKEAI_COMPLETIONS && !json_object_get(root, "prompt"))
        return "Missing required parameter: 'prompt'.";
    return NULL;
}

/* The content of the first --rule whose text is in the body, or NULL. */
static const char *
rule_content(const struct mock_defaults *d, const char *body, size_t blen)
{
    for (unsigned i = 0; i < d->n_rules; i++)
        if (memmem(body, blen, d->rule_in[i], d->rule_in_len[i]))
            return d->rule_out[i];
    return NULL;
}

static void
handle_chat(struct fakeai_req *req, const struct mock_defaults *d, enum fakeai_format format)
{
    size_t blen;
    const char *body = fakeai_req_body(req, &blen);
    json_error_t jerr;
    json_t *root = json_loadb(body, blen, 0, &jerr);
    char *gen = NULL, *extra = NULL;

    if (!json_is_object(root)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "mockllm: request body is not a JSON object: %s", jerr.text);
        fakeai_req_error(req, 400, msg);
        json_decref(root);
        return;
    }
    json_t *mock = json_object_get(root, "mock");
    json_t *model = json_object_get(root, "model");
    const char *mname = json_string_value(model);
    json_t *own = json_object_get(json_object_get(mock, "by_model"), mname ? mname : "");
    if (json_is_object(own)) {
        mock = json_copy(mock); /* owned by root from here, freed with it */
        json_object_update(mock, own);
        json_object_set_new(root, "mock", mock);
    }
    json_t *so = json_object_get(root, "stream_options");
    const char *auth = fakeai_req_header(req, "authorization");
    char why[160];
    int wstatus;
    const char *bad = check_request(req, format, root, why, sizeof(why), &wstatus);
    if (bad) {
        if (format == FAKEAI_MESSAGES)
            fakeai_req_error_anthropic(req, wstatus, bad);
        else
            fakeai_req_error(req, wstatus, bad);
        json_decref(root);
        return;
    }
    json_t *tool = json_object_get(mock, "tool");
    char *tool_input = json_is_object(json_object_get(tool, "input"))
                           ? json_dumps(json_object_get(tool, "input"), JSON_COMPACT)
                           : NULL;
    json_t *prev = json_object_get(root, "previous_response_id");
    struct fakeai_chat c = {
        .format = format,
        .tool_name = json_string_value(json_object_get(tool, "name")),
        .tool_input = tool_input,
        .previous_response_id = json_string_value(prev),
        .model = json_is_string(model) ? json_string_value(model) : "",
        .latency_ms = (uint32_t)get_int(mock, "latency_ms", d->latency_ms),
        .chunks = (unsigned)get_int(mock, "chunks", d->chunks),
        .chunk_delay_ms = (uint32_t)get_int(mock, "chunk_delay_ms", d->chunk_delay_ms),
        .stream = json_is_true(json_object_get(root, "stream")),
        .include_usage = json_is_true(json_object_get(so, "include_usage")),
        .status = (int)get_int(mock, "status", 0),
        .retry_after = get_int(mock, "retry_after", 0),
        .die_after = (unsigned)get_int(mock, "die_after", 0),
        .stamp = json_is_true(json_object_get(mock, "stamp")),
        .logprobs = format == FAKEAI_CHAT && json_is_true(json_object_get(root, "logprobs")),
        .logprob = -0.1,
    };
    json_t *top = json_object_get(root, "top_logprobs");
    if (json_is_integer(top) && json_integer_value(top) > 0)
        c.top_logprobs = json_integer_value(top) > 20 ? 20u : (unsigned)json_integer_value(top);
    json_t *lp = json_object_get(mock, "logprob");
    if (json_is_number(lp) && json_number_value(lp) <= 0)
        c.logprob = json_number_value(lp);
    size_t pb = request_prompt_bytes(root);
    c.prompt_tokens = pb ? (long)((pb + 3) / 4) : 1;

    json_t *content = json_object_get(mock, "content");
    json_t *stamp = json_object_get(mock, "stamp");
    if (json_is_boolean(stamp) ? json_is_true(stamp) : d->stamp) {
        atomic_store(&stamping, 1);
        c.content = gen = stamp_content(c.chunks ? c.chunks : 8);
        c.chunks = 0; /* one piece per placeholder: each starts with the mark's space */
    } else if (json_is_string(content))
        c.content = json_string_value(content);
    else if ((c.content = rule_content(d, body, blen)))
        ;
    else if (d->content)
        c.content = d->content;
    else {
        /* n generated words, cut at the words */
        c.content = gen = generated_content(c.chunks ? c.chunks : 8);
        c.chunks = 0;
    }

    const char *fail = json_string_value(json_object_get(mock, "fail"));
    if (fail && strcmp(fail, "close") == 0)
        c.fail = FAKEAI_FAIL_CLOSE;
    else if (fail && strcmp(fail, "hang") == 0)
        c.fail = FAKEAI_FAIL_HANG;
    else if (fail && strcmp(fail, "die_mid_stream") == 0)
        c.fail = FAKEAI_FAIL_DIE_MID_STREAM;

    const char *xkey = fakeai_req_header(req, "x-api-key");
    const char *aver = fakeai_req_header(req, "anthropic-version");
    size_t elen = strlen(c.model) + (auth ? strlen(auth) : 0) + (xkey ? strlen(xkey) : 0) +
                  (aver ? strlen(aver) : 0) + strlen(fakeai_req_path(req)) + 160;
    extra = malloc(elen);
    if (!extra)
        abort();
    /* what the backend got, for the tests to check through the proxy */
    snprintf(extra, elen, "x-mock-model: %s\r\n%s%s%s%s%s%s%s%s%sx-mock-path: %s\r\n", c.model,
             auth ? "x-mock-auth: " : "", auth ? auth : "", auth ? "\r\n" : "",
             xkey ? "x-mock-api-key: " : "", xkey ? xkey : "", xkey ? "\r\n" : "",
             aver ? "x-mock-anthropic-version: " : "", aver ? aver : "", aver ? "\r\n" : "",
             fakeai_req_path(req));
    /* a model name must not smuggle line breaks into the response headers */
    for (char *p = extra + 14, *e = p + strlen(c.model); p < e; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    c.extra_headers = extra;

    fakeai_req_chat(req, &c);
    free(tool_input);
    free(extra);
    free(gen);
    json_decref(root);
}

/* Returns n bytes as new standard base64 text (NUL-terminated). */
static char *
base64(const unsigned char *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1), *q = out;

    if (!out)
        abort();
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *q++ = tab[v >> 18 & 63];
        *q++ = tab[v >> 12 & 63];
        *q++ = i + 1 < n ? tab[v >> 6 & 63] : '=';
        *q++ = i + 2 < n ? tab[v & 63] : '=';
    }
    *q = '\0';
    return out;
}

/* POST /v1/embeddings: a vector per input (dimensions, default 8), the same for the
 * same text, as floats or (encoding_format "base64", the openai SDK's default) the
 * base64 of little-endian float32s. */
static void
handle_embeddings(struct fakeai_req *req)
{
    size_t blen;
    const char *body = fakeai_req_body(req, &blen);
    json_t *root = json_loadb(body, blen, 0, NULL);
    json_t *input = json_object_get(root, "input"), *one, *data = json_array();
    const char *model = json_string_value(json_object_get(root, "model"));
    const char *fmt = json_string_value(json_object_get(root, "encoding_format"));
    long dims = get_int(root, "dimensions", 8);
    size_t i, tokens = 0;

    if (!model || !(json_is_string(input) || json_is_array(input)) || dims < 1 || dims > 4096 ||
        (fmt && strcmp(fmt, "float") && strcmp(fmt, "base64"))) {
        fakeai_req_error(req, 400, "mockllm: embeddings need model, input (string or array), "
                                   "dimensions 1..4096, encoding_format float or base64");
        json_decref(data);
        json_decref(root);
        return;
    }
    if (json_is_string(input)) {
        json_t *arr = json_array();
        json_array_append(arr, input);
        input = arr;
    } else {
        json_incref(input);
    }
    json_array_foreach(input, i, one) {
        const char *t = json_is_string(one) ? json_string_value(one) : "";
        size_t tl = strlen(t);
        uint64_t h = 1469598103934665603ull;
        for (size_t k = 0; k < tl; k++)
            h = (h ^ (unsigned char)t[k]) * 1099511628211ull;
        tokens += tl / 4 + 1;
        float *vec = malloc((size_t)dims * sizeof(float));
        if (!vec)
            abort();
        for (long k = 0; k < dims; k++) {
            h ^= h >> 33;
            h *= 0xff51afd7ed558ccdull;
            vec[k] = (float)((double)(h >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
        }
        json_t *emb;
        if (fmt && !strcmp(fmt, "base64")) {
            char *b = base64((const unsigned char *)vec, (size_t)dims * sizeof(float));
            emb = json_string(b);
            free(b);
        } else {
            emb = json_array();
            for (long k = 0; k < dims; k++)
                json_array_append_new(emb, json_real(vec[k]));
        }
        free(vec);
        json_array_append_new(data, json_pack("{s:s,s:I,s:o}", "object", "embedding", "index",
                                              (json_int_t)i, "embedding", emb));
    }
    json_decref(input);
    json_t *out = json_pack("{s:s,s:o,s:s,s:{s:I,s:I}}", "object", "list", "data", data, "model",
                            model, "usage", "prompt_tokens", (json_int_t)tokens, "total_tokens",
                            (json_int_t)tokens);
    char *s = json_dumps(out, JSON_COMPACT);
    fakeai_req_reply(req, 200, "application/json", "x-mock-path: /v1/embeddings\r\n", s,
                     strlen(s));
    free(s);
    json_decref(out);
    json_decref(root);
}

static void
handle(struct fakeai_req *req, void *arg)
{
    const struct mock_defaults *d = arg;
    const char *method = fakeai_req_method(req), *path = fakeai_req_path(req);

    static const struct {
        const char *path; /* matched at the end of the path: an Azure deployment's prefix */
        enum fakeai_format format;
    } apis[] = {
        {"/chat/completions", FAKEAI_CHAT},
        {"/completions", FAKEAI_COMPLETIONS},
        {"/responses", FAKEAI_RESPONSES},
        {"/messages", FAKEAI_MESSAGES},
    };
    size_t plen = strlen(path);

    for (size_t i = 0; i < sizeof(apis) / sizeof(apis[0]); i++) {
        size_t l = strlen(apis[i].path);
        if (plen < l || strcmp(path + plen - l, apis[i].path) ||
            (apis[i].format == FAKEAI_COMPLETIONS && plen >= 17 &&
             !strcmp(path + plen - 17, "/chat/completions")))
            continue;
        if (d->heads)
            keep_head(req);
        if (strcmp(method, "POST") != 0)
            fakeai_req_error(req, 405, "use POST");
        else
            handle_chat(req, d, apis[i].format);
        return;
    }
    if (strcmp(path, "/_mock/last_head") == 0) {
        pthread_mutex_lock(&head_mu);
        json_t *h = last_head ? json_incref(last_head) : json_object();
        pthread_mutex_unlock(&head_mu);
        reply_json(req, 200, h);
    } else if (strcmp(path, "/v1/embeddings") == 0) {
        if (strcmp(method, "POST") != 0)
            fakeai_req_error(req, 405, "use POST");
        else
            handle_embeddings(req);
    } else if (strcmp(path, "/_mock/stats") == 0) {
        reply_json(req, 200, fakeai_server_stats(fakeai_req_server(req)));
    } else if (strcmp(path, "/_mock/reset") == 0 && strcmp(method, "POST") == 0) {
        fakeai_server_reset(fakeai_req_server(req));
        reply_json(req, 200, json_pack("{s:b}", "ok", 1));
    } else {
        fakeai_req_error(req, 404, "mockllm: no such path");
    }
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: mockllm [--port N] [--listen ADDR] [--latency-ms N] [--chunks N]\n"
               "               [--chunk-delay-ms N] [--content TEXT] [--rule SUBSTR=TEXT]...\n"
               "               [--threads N] [--stamp] [--heads]\n"
               "A scriptable OpenAI-compatible backend: prints \"listening on PORT\" when ready.\n");
}

static int
parse_num(const char *s, unsigned long max, unsigned long *out)
{
    char *end;

    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

int
main(int argc, char **argv)
{
    struct mock_defaults d = {0};
    struct fakeai_config cfg = {.listen = "127.0.0.1", .threads = 1, .handler = handle, .arg = &d};
    char err[256];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        unsigned long v = 0;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--stamp") == 0) {
            d.stamp = 1;
            continue;
        }
        if (strcmp(a, "--heads") == 0) {
            d.heads = 1;
            continue;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        const char *val = argv[++i];
        if (strcmp(a, "--listen") == 0) {
            cfg.listen = val;
            continue;
        }
        if (strcmp(a, "--content") == 0) {
            d.content = val;
            continue;
        }
        if (strcmp(a, "--rule") == 0) {
            const char *eq = strchr(val, '=');
            if (!eq || eq == val || d.n_rules == MOCK_MAX_RULES) {
                fprintf(stderr, "mockllm: --rule SUBSTR=TEXT (at most %d): %s\n", MOCK_MAX_RULES,
                        val);
                return 2;
            }
            d.rule_in[d.n_rules] = val;
            d.rule_in_len[d.n_rules] = (size_t)(eq - val);
            d.rule_out[d.n_rules++] = eq + 1;
            continue;
        }
        if (parse_num(val, 0xFFFFFFFFul, &v) < 0) {
            fprintf(stderr, "mockllm: bad number for %s: %s\n", a, val);
            return 2;
        }
        if (strcmp(a, "--port") == 0 && v <= 65535)
            cfg.port = (uint16_t)v;
        else if (strcmp(a, "--latency-ms") == 0)
            d.latency_ms = (uint32_t)v;
        else if (strcmp(a, "--chunks") == 0)
            d.chunks = (unsigned)v;
        else if (strcmp(a, "--chunk-delay-ms") == 0)
            d.chunk_delay_ms = (uint32_t)v;
        else if (strcmp(a, "--threads") == 0 && v >= 1 && v <= 256)
            cfg.threads = (unsigned)v;
        else {
            usage(stderr);
            return 2;
        }
    }

    stamp_init();
    struct fakeai_server *s = fakeai_server_new(&cfg, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "mockllm: %s\n", err);
        return 1;
    }
    printf("listening on %u\n", (unsigned)fakeai_server_port(s));
    fflush(stdout);
    int r = fakeai_server_run(s);
    fakeai_server_destroy(s);
    json_decref(last_head);
    return r < 0 ? 1 : 0;
}
