/* proxy.c - the relay under every API path: pick a backend, rewrite, relay JSON or SSE.
 *
 * A request names a backend (passed through, upstream model substituted) or a
 * routed alias (scored by the predictor, a policy picks the tier). The body is
 * rewritten only where it must be (model, overrides, stream_options) and the
 * client's Authorization is replaced by the backend's key. Non-streaming answers
 * are relayed whole with the backend's status; SSE streams are cut into events
 * and relayed as each event arrives, never buffered whole. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/evp.h>

#include "config.h"
#include "daemon-int.h"
#include "guard/guard.h"
#include "log.h"
#include "prompt_features.h"
#include "storage.h"
#include "text.h"

#define STREAM_HIGH_WATER (1u << 20) /* bytes queued for a slow client before the backend is paused */
#define STREAM_LOW_WATER (256u << 10)
/* MHD's per-stream response buffer: SSE events are a few hundred bytes (a larger one
 * takes a few calls), and with 10,000 open streams every KiB here is 10 MB */
#define STREAM_BLOCK 1024

/* Response headers never relayed from the backend: hop-by-hop, framing, or ours. */
static int
header_relayed(const char *name, size_t n)
{
    static const char *const skip[] = {
        "connection",          "keep-alive", "transfer-encoding", "content-length",
        "content-type",        "date",       "server",            "te",
        "trailer",             "upgrade",    "proxy-connection",  "proxy-authenticate",
        "content-encoding",    NULL,
    };

    for (int i = 0; skip[i]; i++)
        if (strlen(skip[i]) == n && !strncasecmp(skip[i], name, n))
            return 0;
    return !(n >= 9 && !strncasecmp(name, "x-triage-", 9));
}

static void
add_relayed_headers(struct daemon_request *rq, struct http_response *resp)
{
    const char *p = rq->up_headers.data;
    const char *end = p ? p + rq->up_headers.len : NULL; /* none relayed: no buffer */

    while (p && p < end) {
        const char *name = p;
        const char *value = name + strlen(name) + 1;
        http_response_header(resp, name, value);
        p = value + strlen(value) + 1;
    }
    daemon__add_route_headers(rq, resp);
}

/* ---- JSON without a tree ---------------------------------------------------------
 *
 * The hot paths need one or two members of a document (the request's "model", the
 * response's "usage"), so they walk its bytes instead of building a jansson tree
 * (which costs a malloc per value). The walkers check structure only as far as they
 * need it and give up (NULL, -1) on anything else. */

static const char *
js_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at a '"': returns just past the closing quote, or NULL. */
static const char *
js_string_end(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        while (p + 8 <= end && !features_json_escape_in8(p))
            p += 8; /* no quote or backslash in these 8 */
        if (p >= end)
            break;
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* p at the first byte of a value: returns just past the value, or NULL. */
static const char *
js_value_end(const char *p, const char *end)
{
    const char *s = p;

    if (p >= end)
        return NULL;
    if (*p == '"')
        return js_string_end(p, end);
    if (*p == '{' || *p == '[') {
        size_t depth = 0;
        for (; p < end; p++) {
            if (*p == '"') {
                if (!(p = js_string_end(p, end)))
                    return NULL;
                p--;
            } else if (*p == '{' || *p == '[') {
                depth++;
            } else if ((*p == '}' || *p == ']') && --depth == 0) {
                return p + 1;
            }
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
           *p != '\n' && *p != '\r')
        p++; /* a number, true, false or null */
    return p > s ? p : NULL;
}

struct js_member {
    const char *key; /* raw bytes between the quotes */
    size_t klen;
    const char *val; /* the value's first byte */
    const char *vend; /* just past the value */
};

/* Returns just past the '{' opening the object at p, or NULL. */
static const char *
js_object_open(const char *p, const char *end)
{
    p = js_ws(p, end);
    return p < end && *p == '{' ? p + 1 : NULL;
}

/* *pp: just past the '{' or the previous member. Returns 1 with m filled, 0 at the
 * closing '}' (*pp just past it), -1 if malformed. */
static int
js_next_member(const char **pp, const char *end, struct js_member *m)
{
    const char *p = js_ws(*pp, end);

    if (p < end && *p == ',')
        p = js_ws(p + 1, end);
    if (p < end && *p == '}') {
        *pp = p + 1;
        return 0;
    }
    if (p >= end || *p != '"')
        return -1;
    const char *ke = js_string_end(p, end);
    if (!ke)
        return -1;
    m->key = p + 1;
    m->klen = (size_t)(ke - 1 - m->key);
    p = js_ws(ke, end);
    if (p >= end || *p != ':')
        return -1;
    m->val = js_ws(p + 1, end);
    m->vend = js_value_end(m->val, end);
    if (!m->vend)
        return -1;
    *pp = m->vend;
    return 1;
}

static int
js_key_is(const struct js_member *m, const char *key)
{
    size_t n = strlen(key);

    return m->klen == n && !memcmp(m->key, key, n);
}

/* *pp: just past the '[' or the previous element. Returns 1 with the element's bytes
 * in [*v, *vend), 0 at the closing ']' (*pp just past it), -1 if malformed. */
static int
js_next_element(const char **pp, const char *end, const char **v, const char **vend)
{
    const char *p = js_ws(*pp, end);

    if (p < end && *p == ',')
        p = js_ws(p + 1, end);
    if (p < end && *p == ']') {
        *pp = p + 1;
        return 0;
    }
    *v = p;
    *vend = js_value_end(p, end);
    if (!*vend)
        return -1;
    *pp = *vend;
    return 1;
}

/* 1 if the number at [p, end) is one jansson cannot hold: an integer beyond 64 bits, or
 * a real beyond a double (an underflow is a 0, which it holds). */
static int
js_number_overflows(const char *p, const char *end)
{
    size_t n = (size_t)(end - p);
    char *t = strndup(p, n), *e;

    if (!t)
        abort();
    int big;
    errno = 0;
    if (strpbrk(t, ".eE")) {
        big = isinf(strtod(t, &e));
    } else {
        (void)strtoll(t, &e, 10);
        big = errno == ERANGE;
    }
    free(t);
    return big;
}

/* Finds the first number in the value at [p, end) that overflows (as above), in
 * document order as a parser meets it, and writes its path ("max_tokens",
 * "messages[0].content") from path + len. Returns 1 when found. Only for bodies
 * jansson refused with json_error_numeric_overflow: not on any fast path. */
static int
js_find_big_number(const char *p, const char *end, char *path, size_t cap, size_t len, int depth)
{
    struct js_member m;
    const char *v, *vend;
    size_t i = 0;

    p = js_ws(p, end);
    if (p >= end || depth > 256 || len >= cap)
        return 0;
    if (*p == '{') {
        for (p++; js_next_member(&p, end, &m) == 1;) {
            int n = snprintf(path + len, cap - len, "%s%.*s", len ? "." : "", (int)m.klen, m.key);
            size_t l = len + (n > 0 ? (size_t)n : 0);
            if (js_find_big_number(m.val, m.vend, path, cap, l < cap ? l : cap - 1, depth + 1))
                return 1;
        }
    } else if (*p == '[') {
        for (p++; js_next_element(&p, end, &v, &vend) == 1; i++) {
            int n = snprintf(path + len, cap - len, "[%zu]", i);
            size_t l = len + (n > 0 ? (size_t)n : 0);
            if (js_find_big_number(v, vend, path, cap, l < cap ? l : cap - 1, depth + 1))
                return 1;
        }
    } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
        const char *e = js_value_end(p, end);
        return e && js_number_overflows(p, e);
    }
    path[len] = '\0';
    return 0;
}

/* A JSON integer (what json_is_integer accepts) between p and end into *out. */
static int
js_integer(const char *p, const char *end, int64_t *out)
{
    char tmp[32], *e;
    size_t n = (size_t)(end - p);

    if (n == 0 || n >= sizeof(tmp) || memchr(p, '.', n) || memchr(p, 'e', n) || memchr(p, 'E', n))
        return -1;
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    errno = 0;
    long long v = strtoll(tmp, &e, 10);
    if (errno || *e)
        return -1;
    *out = v;
    return 0;
}

/* Appends s (n bytes of UTF-8) as a JSON string, escaped exactly as jansson's dump does. */
static void
put_json_string(struct daemon_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t run = 0;

    daemon__buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        while (i + 8 <= n && !features_json_escape_in8(s + i))
            i += 8; /* prompts are mostly plain text: skip it a word at a time */
        if (i >= n)
            break;
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        daemon__buf_append(b, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 0};
        size_t el = 2;
        switch (ch) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            el = 6;
        }
        daemon__buf_append(b, esc, el);
    }
    daemon__buf_append(b, s + run, n - run);
    daemon__buf_append(b, "\"", 1);
}

struct canon_key {
    const char *key;
    size_t len;
    json_t *value;
};

static int
canon_key_cmp(const void *a, const void *b)
{
    const struct canon_key *x = a, *y = b;
    int r = memcmp(x->key, y->key, x->len < y->len ? x->len : y->len);

    return r ? r : (x->len > y->len) - (x->len < y->len);
}

/* Appends v exactly as json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS) writes it (the
 * prompt digest's canonical form), without jansson's per-byte callbacks. */
static void
canon_dump(struct daemon_buf *b, json_t *v)
{
    char num[32];

    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        size_t n = json_object_size(v), i = 0;
        struct canon_key small[8], *keys = n <= 8 ? small : malloc(n * sizeof(*keys));
        const char *k;
        json_t *val;
        if (!keys)
            abort();
        json_object_foreach(v, k, val) {
            keys[i].key = k;
            keys[i].len = json_object_iter_key_len(json_object_key_to_iter(k));
            keys[i].value = val;
            i++;
        }
        qsort(keys, n, sizeof(*keys), canon_key_cmp);
        daemon__buf_append(b, "{", 1);
        for (i = 0; i < n; i++) {
            if (i)
                daemon__buf_append(b, ",", 1);
            put_json_string(b, keys[i].key, keys[i].len);
            daemon__buf_append(b, ":", 1);
            canon_dump(b, keys[i].value);
        }
        daemon__buf_append(b, "}", 1);
        if (keys != small)
            free(keys);
        break;
    }
    case JSON_ARRAY:
        daemon__buf_append(b, "[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i)
                daemon__buf_append(b, ",", 1);
            canon_dump(b, json_array_get(v, i));
        }
        daemon__buf_append(b, "]", 1);
        break;
    case JSON_STRING:
        put_json_string(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER: {
        int n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        daemon__buf_append(b, num, (size_t)n);
        break;
    }
    case JSON_TRUE:
        daemon__buf_append(b, "true", 4);
        break;
    case JSON_FALSE:
        daemon__buf_append(b, "false", 5);
        break;
    case JSON_NULL:
        daemon__buf_append(b, "null", 4);
        break;
    default: { /* reals: rare in messages, and jansson's format has its own rules */
        char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!t)
            abort();
        daemon__buf_append(b, t, strlen(t));
        free(t);
    }
    }
}

/* ---- usage, finish_reason ------------------------------------------------------ */

#define SCAN_USAGE 1     /* a "usage" object */
#define SCAN_NO_CHOICES 2 /* "choices" is an empty array */

/* Notes usage and the first choice's finish_reason of a chat completion (or of one
 * stream chunk), if d is one JSON object. Returns SCAN_* bits. */
static int
scan_completion(struct daemon_request *rq, const char *d, size_t n)
{
    const char *end = d + n, *p = js_object_open(d, end);
    const char *fr = NULL, *fr_end = NULL;
    int64_t tin = 0, tout = 0;
    int seen = 0, r, have_in = 0, have_out = 0;
    struct js_member m, u;

    if (!p)
        return 0;
    while ((r = js_next_member(&p, end, &m)) == 1) {
        if (js_key_is(&m, "usage") && *m.val == '{') {
            const char *q = m.val + 1;
            seen |= SCAN_USAGE;
            have_in = have_out = 0; /* a later duplicate replaces an earlier one */
            while (js_next_member(&q, m.vend, &u) == 1) {
                if (js_key_is(&u, "prompt_tokens"))
                    have_in = js_integer(u.val, u.vend, &tin) == 0;
                else if (js_key_is(&u, "completion_tokens"))
                    have_out = js_integer(u.val, u.vend, &tout) == 0;
            }
        } else if (js_key_is(&m, "usage")) {
            seen &= ~SCAN_USAGE;
            have_in = have_out = 0;
        } else if (js_key_is(&m, "choices")) {
            const char *q = *m.val == '[' ? js_ws(m.val + 1, m.vend) : NULL;
            seen &= ~SCAN_NO_CHOICES;
            fr = fr_end = NULL;
            if (q && *q == ']')
                seen |= SCAN_NO_CHOICES;
            else if (q && (q = js_object_open(q, m.vend)))
                while (js_next_member(&q, m.vend, &u) == 1)
                    if (js_key_is(&u, "finish_reason"))
                        fr = u.val, fr_end = u.vend;
        }
    }
    if (r < 0 || js_ws(p, end) != end)
        return 0; /* not one JSON object: note nothing, as a parser would */
    if (have_in)
        rq->tokens_in = tin;
    if (have_out)
        rq->tokens_out = tout;
    if (fr && *fr == '"') {
        if (!memchr(fr, '\\', (size_t)(fr_end - fr))) {
            size_t l = (size_t)(fr_end - fr) - 2;
            if (l >= sizeof(rq->finish_reason))
                l = sizeof(rq->finish_reason) - 1;
            memcpy(rq->finish_reason, fr + 1, l);
            rq->finish_reason[l] = '\0';
        } else {
            json_t *s = json_loadb(fr, (size_t)(fr_end - fr), JSON_DECODE_ANY, NULL);
            if (json_is_string(s))
                snprintf(rq->finish_reason, sizeof(rq->finish_reason), "%s", json_string_value(s));
            json_decref(s);
        }
    }
    return seen;
}

/* Copies the JSON string at [v, vend) (no escapes, NUL-free) into out; 0, or -1. */
static int
js_plain_string(const char *v, const char *vend, char *out, size_t cap)
{
    size_t l = (size_t)(vend - v);

    if (l < 2 || *v != '"' || memchr(v, '\\', l) || l - 2 >= cap || memchr(v + 1, '\0', l - 2))
        return -1;
    memcpy(out, v + 1, l - 2);
    out[l - 2] = '\0';
    return 0;
}

/* Notes usage, the stop reason and (Responses) the response id in an answer or a
 * stream event of the Responses or Anthropic Messages API, at [p, end) (an object's
 * bytes): "usage" {input_tokens, output_tokens} at the top or inside "response" or
 * "message" (Anthropic's message_start); the stop reason from "stop_reason" (also
 * inside "delta", Anthropic's message_delta) or a Responses "status" past
 * in_progress; the response's "id" at the top of a Responses answer or inside
 * "response" of its events. */
static void
scan_api(struct daemon_request *rq, const char *p, const char *end, int depth)
{
    struct js_member m, u;
    char text[128];
    int64_t v;

    if (depth > 1 || !(p = js_object_open(p, end)))
        return;
    while (js_next_member(&p, end, &m) == 1) {
        if (*m.val == '{' && (js_key_is(&m, "response") || js_key_is(&m, "message") ||
                              js_key_is(&m, "delta"))) {
            scan_api(rq, m.val, m.vend, depth + 1);
        } else if (*m.val == '{' && js_key_is(&m, "usage")) {
            const char *q = m.val + 1;
            while (js_next_member(&q, m.vend, &u) == 1) {
                if ((js_key_is(&u, "input_tokens") || js_key_is(&u, "prompt_tokens")) &&
                    js_integer(u.val, u.vend, &v) == 0)
                    rq->tokens_in = v;
                else if ((js_key_is(&u, "output_tokens") || js_key_is(&u, "completion_tokens")) &&
                         js_integer(u.val, u.vend, &v) == 0)
                    rq->tokens_out = v;
            }
        } else if ((js_key_is(&m, "stop_reason") || js_key_is(&m, "status")) &&
                   js_plain_string(m.val, m.vend, text, sizeof(text)) == 0 &&
                   strcmp(text, "in_progress") && strcmp(text, "queued")) {
            size_t l = strlen(text) < sizeof(rq->finish_reason) ? strlen(text)
                                                                : sizeof(rq->finish_reason) - 1;
            memcpy(rq->finish_reason, text, l);
            rq->finish_reason[l] = '\0';
        } else if (js_key_is(&m, "id") && rq->api->id == DAEMON_API_RESPONSES &&
                   rq->backend >= 0 && js_plain_string(m.val, m.vend, text, sizeof(text)) == 0 &&
                   !strncmp(text, "resp", 4)) {
            /* a follow-up naming it must come back to this backend */
            api_response_ids_put(text, strlen(text),
                                     rq->snap->conf->backends[rq->backend].name);
        }
    }
}

/* ---- SSE relay ------------------------------------------------------------------ */

/* Returns 1 if key occurs in d followed (after ':' and blanks) by the byte first. */
static int
has_value(const char *d, size_t n, const char *key, char first)
{
    size_t kl = strlen(key);
    const char *end = d + n;

    for (const char *p = memmem(d, n, key, kl); p; p = memmem(p + 1, (size_t)(end - p - 1), key, kl)) {
        const char *v = p + kl;
        while (v < end && (*v == ' ' || *v == ':'))
            v++;
        if (v < end && *v == first)
            return 1;
        if (end - p <= 1)
            break;
    }
    return 0;
}

/* One whole event (ending in its blank line): note usage, drop the usage-only
 * chunk when we asked for it ourselves, queue the rest for the client verbatim. */
static void
sse_event(struct daemon_request *rq, const char *ev, size_t n)
{
    int drop = 0;
    const char *p = ev, *end = ev + n;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *lend = nl ? nl : end;
        size_t l = (size_t)(lend - p);
        if (l > 0 && p[l - 1] == '\r')
            l--;
        if (l >= 5 && !memcmp(p, "data:", 5)) {
            const char *d = p + 5;
            size_t dl = l - 5;
            if (dl && *d == ' ') {
                d++;
                dl--;
            }
            if (rq->api->id == DAEMON_API_RESPONSES || rq->api->id == DAEMON_API_MESSAGES) {
                /* typed events: the ones that carry the response, usage or stop reason */
                if (dl && *d == '{' && (has_value(d, dl, "\"usage\"", '{') ||
                                        has_value(d, dl, "\"response\"", '{') ||
                                        has_value(d, dl, "\"stop_reason\"", '"')))
                    scan_api(rq, d, d + dl, 0);
                break;
            }
            /* most chunks carry neither usage nor a finish_reason: skip parsing them */
            if (dl && *d == '{' && (has_value(d, dl, "\"usage\"", '{') ||
                                    has_value(d, dl, "\"finish_reason\"", '"'))) {
                int seen = scan_completion(rq, d, dl);
                if (rq->strip_usage && seen == (SCAN_USAGE | SCAN_NO_CHOICES))
                    drop = 1;
            }
            break; /* OpenAI events carry one data line */
        }
        p = nl ? nl + 1 : end;
    }
    if (!drop)
        daemon__buf_append(&rq->out, ev, n);
}

/* Cuts buffered stream bytes into events; keeps an unfinished one for later. */
static void
sse_feed(struct daemon_request *rq, const char *buf, size_t len)
{
    struct daemon_buf *b = &rq->sse;
    size_t start = 0, ls = b->off; /* b->off: where the unscanned lines begin */

    daemon__buf_append(b, buf, len);
    for (;;) {
        char *nl = memchr(b->data + ls, '\n', b->len - ls);
        if (!nl)
            break;
        size_t lend = (size_t)(nl - b->data);
        size_t l = lend - ls;
        if (l > 0 && b->data[lend - 1] == '\r')
            l--;
        if (l == 0) {
            sse_event(rq, b->data + start, lend + 1 - start);
            start = lend + 1;
        }
        ls = lend + 1;
    }
    memmove(b->data, b->data + start, b->len - start);
    b->len -= start;
    b->off = ls - start;
}

/* Ends a stream that has begun with an error event (never a fake [DONE]); the reader
 * then cuts the connection once the client has it. kind names the error in the access
 * line and the outcome record; msg is plain text. */
static void
stream_fail(struct daemon_request *rq, const char *kind, const char *code, const char *msg)
{
    static const char head[] = "data: {\"error\":{\"message\":";
    static const char type[] = ",\"type\":\"server_error\",\"param\":null,\"code\":";
    /* the typed streams end with their API's own error event */
    static const char a_head[] = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":";
    static const char r_head[] = "event: error\ndata: {\"type\":\"error\",\"code\":";

    rq->up_done = 1;
    rq->stream_failed = 1;
    rq->cut = 1;
    rq->error_kind = kind;
    if (rq->api->id == DAEMON_API_MESSAGES) {
        const char *at = !strcmp(kind, "shutdown") ? "overloaded_error" : "api_error";
        daemon__buf_append(&rq->out, a_head, sizeof(a_head) - 1);
        put_json_string(&rq->out, at, strlen(at));
        daemon__buf_append(&rq->out, ",\"message\":", 11);
        put_json_string(&rq->out, msg, strlen(msg));
        daemon__buf_append(&rq->out, "}}\n\n", 4);
        return;
    }
    if (rq->api->id == DAEMON_API_RESPONSES) {
        daemon__buf_append(&rq->out, r_head, sizeof(r_head) - 1);
        put_json_string(&rq->out, code, strlen(code));
        daemon__buf_append(&rq->out, ",\"message\":", 11);
        put_json_string(&rq->out, msg, strlen(msg));
        daemon__buf_append(&rq->out, ",\"param\":null}\n\n", 16);
        return;
    }
    daemon__buf_append(&rq->out, head, sizeof(head) - 1);
    put_json_string(&rq->out, msg, strlen(msg));
    daemon__buf_append(&rq->out, type, sizeof(type) - 1);
    put_json_string(&rq->out, code, strlen(code));
    daemon__buf_append(&rq->out, "}}\n\n", 4);
}

/* The stream's body for the front end: what is queued, else the end, else a wait. */
static ssize_t
stream_reader(struct daemon_request *rq, char *buf, size_t max)
{
    struct daemon_buf *o = &rq->out;

    if (rq->up_paused && rq->call && o->len - o->off < STREAM_LOW_WATER) {
        rq->up_paused = 0;
        upstream_unpause(rq->call); /* may deliver data right here */
    }
    size_t avail = o->len - o->off;
    if (avail) {
        size_t n = avail < max ? avail : max;
        memcpy(buf, o->data + o->off, n);
        o->off += n;
        if (o->off == o->len) {
            o->off = o->len = 0;
        } else if (o->off > STREAM_LOW_WATER) {
            memmove(o->data, o->data + o->off, o->len - o->off);
            o->len -= o->off;
            o->off = 0;
        }
        return (ssize_t)n;
    }
    if (rq->up_done || rq->w->tearing_down)
        /* a failed one stays unterminated: the client sees it failed */
        return rq->stream_failed ? HTTP_STREAM_FAIL : HTTP_STREAM_END;
    return HTTP_STREAM_WAIT;
}

/* ---- upstream callbacks ----------------------------------------------------------- */

static void
up_header(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
    struct daemon_request *rq = ctx;

    if (nlen == 12 && !strncasecmp(name, "content-type", 12)) {
        free(rq->up_content_type);
        rq->up_content_type = strndup(value, vlen);
        if (!rq->up_content_type)
            abort();
        return;
    }
    /* kept as "name\0value\0": a NUL would split one header into two (the upstream
     * client drops such headers already; this is the line that depends on it) */
    if (!header_relayed(name, nlen) || memchr(name, '\0', nlen) || memchr(value, '\0', vlen))
        return;
    daemon__buf_append(&rq->up_headers, name, nlen);
    daemon__buf_append(&rq->up_headers, "", 1);
    daemon__buf_append(&rq->up_headers, value, vlen);
    daemon__buf_append(&rq->up_headers, "", 1);
}

static void
up_headers_done(void *ctx, long status)
{
    struct daemon_request *rq = ctx;

    rq->up_status = status;
    if (!rq->stream || status < 200 || status >= 300 || !rq->up_content_type ||
        !strstr(rq->up_content_type, "text/event-stream"))
        return; /* relayed whole when it ends */
    rq->streaming = 1;
    struct http_response *r =
        http_response_stream(rq, rq->up_content_type, STREAM_BLOCK, stream_reader);
    http_response_header(r, "Cache-Control", "no-cache");
    add_relayed_headers(rq, r);
    http_set_response(rq, (int)status, r);
    /* The stream has begun: no retry or fallback can follow, so what only they need
     * goes now. A long stream then holds ~2 KB less (10,000 of them, 20 MB). */
    json_decref(rq->up_json);
    rq->up_json = NULL;
    if (daemon__learn_sample(rq)) { /* its prompt is asked again after the stream */
        rq->lesson_body = rq->body;
        memset(&rq->body, 0, sizeof(rq->body));
    }
    daemon__buf_free(&rq->body);
    daemon__buf_free(&rq->up_headers);
}

static int
up_data(void *ctx, const char *buf, size_t len)
{
    struct daemon_request *rq = ctx;

    if (isnan(rq->ttfb_ms))
        rq->ttfb_ms = daemon__ms_since(rq->t_start_ns);
    if (!rq->streaming) {
        /* buffered whole before it is relayed: a runaway backend must not take
         * the daemon's memory with it */
        if (rq->up_body.len + len > rq->snap->conf->max_response)
            return -1;
        daemon__buf_append(&rq->up_body, buf, len);
        return 0;
    }
    if (rq->out.len - rq->out.off > STREAM_HIGH_WATER) {
        rq->up_paused = 1; /* the client reads slower than the backend writes */
        return 1;
    }
    sse_feed(rq, buf, len);
    http_wake(rq);
    return 0;
}

static void start_attempt(struct daemon_request *rq);

#define RETRY_BASE_MS 100
#define RETRY_CAP_MS 2000 /* a Retry-After longer than this is relayed, not waited out */

static uint64_t
now_ms(void)
{
    return daemon__now_ns() / 1000000u;
}

struct daemon_retry {
    uv_timer_t timer;
    struct daemon_request *rq; /* NULL once the request ended */
};

static void
retry_closed(uv_handle_t *h)
{
    free(h->data);
}

static void
on_retry(uv_timer_t *t)
{
    struct daemon_retry *r = t->data;
    struct daemon_request *rq = r->rq;

    uv_close((uv_handle_t *)t, retry_closed);
    if (!rq)
        return;
    struct daemon_worker *w = rq->w;
    rq->retry_timer = NULL;
    start_attempt(rq);
    http_run(w); /* start_attempt may have replied */
}

static void
schedule_retry(struct daemon_request *rq, uint32_t delay_ms)
{
    struct daemon_retry *r = calloc(1, sizeof(*r));

    if (!r)
        abort();
    r->rq = rq;
    uv_timer_init(&rq->w->loop, &r->timer);
    r->timer.data = r;
    rq->retry_timer = r;
    uv_timer_start(&r->timer, on_retry, delay_ms, 0);
}

/* Moves a routed request to the next fallback backend it has not tried. Returns 1
 * when there is one. */
static int
next_fallback(struct daemon_request *rq)
{
    const struct conf *c = rq->snap->conf;

    if (!rq->routed || rq->pinned)
        return 0; /* a client that names a backend (or a response it holds) gets that
                   * backend or its error */
    while (rq->fallback_pos < c->n_fallback) {
        size_t cand = c->fallback[rq->fallback_pos++];
        if ((int)cand == rq->backend || (int)cand == rq->first_backend ||
            c->backends[cand].api != rq->api->speaks)
            continue;
        rq->backend = (int)cand;
        rq->attempt = 0;
        rq->route_reason = "fallback";
        return 1;
    }
    return 0;
}

/* Looks up a relayed response header by name (case-insensitive). */
static const char *
relayed_header(struct daemon_request *rq, const char *want)
{
    const char *p = rq->up_headers.data;
    const char *end = p ? p + rq->up_headers.len : NULL; /* none relayed: no buffer */

    while (p && p < end) {
        const char *value = p + strlen(p) + 1;
        if (!strcasecmp(p, want))
            return value;
        p = value + strlen(value) + 1;
    }
    return NULL;
}

/* After a failed attempt that sent nothing to the client yet: retries the same
 * backend (with backoff, or the backend's Retry-After when short), then moves to
 * fallbacks. Returns 1 when another attempt is under way. */
static int
try_again(struct daemon_request *rq, long status)
{
    const struct conf_backend *b = &rq->snap->conf->backends[rq->backend];
    uint32_t delay = 0;

    if (rq->w->stopping)
        return 0;
    if (rq->attempt < (int)b->max_retries) {
        const char *ra = status ? relayed_header(rq, "retry-after") : NULL;
        if (ra) {
            if (backoff_retry_after(ra, time(NULL), UINT32_MAX, &delay) < 0 ||
                delay > RETRY_CAP_MS)
                return 0; /* the backend asks for a long wait: let the client decide */
        } else {
            delay = backoff_delay_ms(&rq->w->brng, (uint32_t)rq->attempt, RETRY_BASE_MS,
                                     RETRY_CAP_MS);
        }
        rq->attempt++;
    } else if (!next_fallback(rq)) {
        return 0;
    }
    rq->retries++;
    log_info("request %s: retrying on backend %s in %u ms", rq->id,
             rq->snap->conf->backends[rq->backend].name, delay);
    schedule_retry(rq, delay);
    return 1;
}

static int
status_retryable(long status)
{
    return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

static void
release_slot(struct daemon_request *rq)
{
    if (rq->slot >= 0) {
        atomic_fetch_sub(&rq->snap->inflight[rq->slot], 1);
        rq->slot = -1;
    }
}

/* ---- is an answer JSON? -------------------------------------------------------------
 *
 * A whole answer is checked against RFC 8259's grammar, its strings as UTF-8, without
 * building a tree (a jansson parse costs a malloc per value on every answer). */

#define JS_MAX_DEPTH 1024 /* deeper is refused, as jansson refuses past 2048 */

static int
js_hex4(const char *p, const char *end, unsigned *u)
{
    *u = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        *u = *u << 4 | (unsigned)d;
    }
    return 0;
}

/* *pp at a '"': advances past the closing quote. Returns 0, or -1 for a control byte,
 * a bad escape, a lone surrogate or bytes that are not UTF-8. */
static int
js_check_string(const char **pp, const char *end)
{
    const char *p = *pp + 1;
    unsigned u, lo;

    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            *pp = p + 1;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c >= 0x80) {
            size_t n = text_utf8_seq((const unsigned char *)p, (size_t)(end - p));
            if (!n)
                return -1;
            p += n;
            continue;
        }
        if (c != '\\') {
            p++;
            continue;
        }
        if (++p >= end)
            return -1;
        if (*p != 'u') {
            if (!*p || !strchr("\"\\/bfnrt", *p))
                return -1;
            p++;
            continue;
        }
        if (js_hex4(p + 1, end, &u) < 0)
            return -1;
        p += 5;
        if (u >= 0xdc00 && u <= 0xdfff)
            return -1;
        if (u >= 0xd800 && u <= 0xdbff) {
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || js_hex4(p + 2, end, &lo) < 0 ||
                lo < 0xdc00 || lo > 0xdfff)
                return -1;
            p += 6;
        }
    }
    return -1;
}

static int
js_digits(const char **pp, const char *end)
{
    const char *p = *pp;

    while (p < end && *p >= '0' && *p <= '9')
        p++;
    if (p == *pp)
        return -1;
    *pp = p;
    return 0;
}

/* Advances *pp past one JSON value (leading whitespace skipped), at most depth levels
 * deep. Returns 0, or -1 when there is none. */
static int
js_check(const char **pp, const char *end, int depth)
{
    const char *p = js_ws(*pp, end);

    if (p >= end)
        return -1;
    if (*p == '"') {
        if (js_check_string(&p, end) < 0)
            return -1;
    } else if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        if (depth == 0)
            return -1;
        p = js_ws(p + 1, end);
        if (p < end && *p == close) {
            *pp = p + 1;
            return 0;
        }
        for (;;) {
            if (close == '}') {
                if (p >= end || *p != '"' || js_check_string(&p, end) < 0)
                    return -1;
                p = js_ws(p, end);
                if (p >= end || *p++ != ':')
                    return -1;
            }
            if (js_check(&p, end, depth - 1) < 0)
                return -1;
            p = js_ws(p, end);
            if (p < end && *p == ',') {
                p = js_ws(p + 1, end);
                continue;
            }
            if (p < end && *p == close)
                break;
            return -1;
        }
        p++;
    } else if (*p == 't' || *p == 'f' || *p == 'n') {
        const char *lit = *p == 't' ? "true" : *p == 'f' ? "false" : "null";
        size_t n = strlen(lit);
        if ((size_t)(end - p) < n || memcmp(p, lit, n))
            return -1;
        p += n;
    } else {
        if (*p == '-')
            p++;
        if (p < end && *p == '0')
            p++;
        else if (p >= end || *p < '1' || *p > '9' || js_digits(&p, end) < 0)
            return -1;
        if (p < end && *p == '.' && (p++, js_digits(&p, end) < 0))
            return -1;
        if (p < end && (*p == 'e' || *p == 'E')) {
            p++;
            if (p < end && (*p == '+' || *p == '-'))
                p++;
            if (js_digits(&p, end) < 0)
                return -1;
        }
    }
    *pp = p;
    return 0;
}

/* Returns 1 when b holds one JSON object and nothing but whitespace after it, else 0. */
static int
answer_is_json(const struct daemon_buf *b)
{
    const char *p = b->data, *end;

    if (!p)
        return 0;
    end = p + b->len;
    p = js_ws(p, end);
    return p < end && *p == '{' && js_check(&p, end, JS_MAX_DEPTH) == 0 && js_ws(p, end) == end;
}

static void
up_done(void *ctx, enum upstream_error err, const char *detail)
{
    struct daemon_request *rq = ctx;
    const struct conf_backend *b = &rq->snap->conf->backends[rq->backend];

    /* Every API answers JSON: a 2xx answer held whole that is not (HTML, cut short,
     * invalid UTF-8) is the backend's failure like invalid HTTP, never a 200 whose body
     * no client can read. */
    if (!err && !rq->streaming && rq->up_status >= 200 && rq->up_status < 300 &&
        !answer_is_json(&rq->up_body))
        err = UPSTREAM_ERR_BAD_ANSWER;
    int failed = (err && err != UPSTREAM_ERR_INTERNAL) || rq->up_status >= 500;
    /* too large comes back too large: not worth a retry or a fallback */
    int retryable = err && err != UPSTREAM_ERR_INTERNAL && err != UPSTREAM_ERR_TOO_LARGE;

    rq->call = NULL;
    release_slot(rq);
    atomic_fetch_sub(&daemon__n_upstream_inflight, 1);
    if (rq->breaker_open_call) {
        breaker_record(rq->snap->breakers[rq->backend],
                       failed ? BREAKER_FAILURE : BREAKER_SUCCESS, now_ms());
        rq->breaker_open_call = 0;
    }
    if (err)
        log_warnx("request %s: backend %s: %s%s%s", rq->id, b->name,
                  rq->up_status ? upstream_error_message_midway(err) : upstream_error_message(err),
                  detail ? ": " : "", detail ? detail : "");
    if (rq->streaming) {
        rq->up_done = 1;
        if (err) {
            /* an event cut short is dropped: glued to the error event, it would hide it */
            char msg[256], code[48];
            snprintf(msg, sizeof(msg), "backend %s: %s", b->name,
                     upstream_error_message_midway(err));
            snprintf(code, sizeof(code), "backend_%s", upstream_error_name(err));
            stream_fail(rq, upstream_error_name(err), code, msg);
        } else if (rq->sse.len) {
            sse_event(rq, rq->sse.data, rq->sse.len); /* a last event without its blank line */
        }
        rq->sse.len = rq->sse.off = 0;
        http_wake(rq);
        return;
    }
    /* the cascade's fast answer is judged before anything else: a failure escalates */
    if (rq->cascade == DAEMON_CASCADE_FAST) {
        switch (daemon__cascade_fast_done(rq, err)) {
        case DAEMON_CASCADE_NEXT_ESCALATE:
            rq->up_status = 0;
            schedule_retry(rq, 0);
            return;
        case DAEMON_CASCADE_NEXT_SERVED:
            return;
        case DAEMON_CASCADE_NEXT_RELAY:
            if (!err)
                break;
            rq->up_done = 1;
            rq->error_kind = "client_gone";
            http_reply_error(rq, 502, "server_error", "backend_error", "backend %s: %s",
                                b->name, upstream_error_message(err));
            return;
        }
    }
    /* nothing has reached the client yet: a failed attempt may be retried */
    int tried = rq->backend;
    if ((retryable || (!err && status_retryable(rq->up_status))) &&
        try_again(rq, err ? 0 : rq->up_status)) {
        /* the backend's error even though the client may yet get an answer; its 429
         * is a limit, not a failure */
        if (err || rq->up_status >= 500)
            daemon__attempt_failed(rq, tried, err ? upstream_error_name(err) : "backend_status");
        return;
    }
    rq->up_done = 1;
    if (err) {
        int status = upstream_error_status(err);
        char code[48];
        snprintf(code, sizeof(code), "backend_%s", upstream_error_name(err));
        rq->error_kind = upstream_error_name(err);
        http_reply_error(rq, status, "server_error", code, "backend %s: %s", b->name,
                            rq->up_status ? upstream_error_message_midway(err)
                                          : upstream_error_message(err));
        return;
    }
    if (rq->up_status >= 200 && rq->up_status < 300) {
        if (rq->up_body.data && (rq->api->id == DAEMON_API_RESPONSES ||
                                 rq->api->id == DAEMON_API_MESSAGES))
            scan_api(rq, rq->up_body.data, rq->up_body.data + rq->up_body.len, 0);
        else if (rq->up_body.data)
            scan_completion(rq, rq->up_body.data, rq->up_body.len);
        /* the answer goes to MHD next: a sampled request keeps a copy to be judged */
        if (rq->up_body.data && daemon__learn_sample(rq))
            daemon__buf_append(&rq->lesson_answer, rq->up_body.data, rq->up_body.len);
    } else {
        rq->error_kind = "backend_status";
    }
    char *body = rq->up_body.data;
    size_t len = rq->up_body.len;
    memset(&rq->up_body, 0, sizeof(rq->up_body));
    struct http_response *r = http_response_buffer(
        body, len, rq->up_content_type ? rq->up_content_type : "application/json");
    add_relayed_headers(rq, r);
    http_set_response(rq, (int)rq->up_status, r);
}

void
daemon__proxy_release(struct daemon_request *rq)
{
    /* the worker is cutting off what is left at the shutdown deadline (worker_teardown):
     * a request still waiting on its backend is told so, in its own error kind */
    int shutdown_cut = rq->w->tearing_down && (rq->call || rq->retry_timer);

    if (rq->call) {
        upstream_cancel(rq->call);
        rq->call = NULL;
        atomic_fetch_sub(&daemon__n_upstream_inflight, 1);
    }
    release_slot(rq);
    if (rq->breaker_open_call) {
        breaker_record(rq->snap->breakers[rq->backend], BREAKER_CANCEL, now_ms());
        rq->breaker_open_call = 0;
    }
    if (rq->retry_timer) {
        rq->retry_timer->rq = NULL;
        uv_timer_stop(&rq->retry_timer->timer);
        uv_close((uv_handle_t *)&rq->retry_timer->timer, retry_closed);
        rq->retry_timer = NULL;
    }
    if (rq->rl_taken) {
        uint32_t actual = 0;
        if (rq->tokens_in >= 0 || rq->tokens_out >= 0)
            actual = (uint32_t)((rq->tokens_in > 0 ? rq->tokens_in : 0) +
                                (rq->tokens_out > 0 ? rq->tokens_out : 0));
        else if (rq->up_status)
            actual = rq->rl_estimate; /* answered, usage unknown: keep the estimate */
        ratelimit_settle(rq->snap->ratelimit, rq->key_id, now_ms(), rq->rl_estimate, actual);
        rq->rl_taken = 0;
    }
    json_decref(rq->up_json);
    rq->up_json = NULL;
    if (shutdown_cut && rq->streaming && !rq->up_done) {
        stream_fail(rq, "shutdown", "shutting_down",
                    "triaged is shutting down: the stream was cut at shutdown_timeout_ms");
    } else if (shutdown_cut && !rq->response) {
        rq->cut = 1;
        rq->error_kind = "shutdown";
        http_reply_err(rq, HTTP_ERR_SHUTTING_DOWN,
                          "triaged is shutting down: the request was cut at "
                          "shutdown_timeout_ms");
    }
    if (rq->cut)
        rq->client_aborted = 0; /* MHD calls our own end of the response an error */
}

/* ---- the request ----------------------------------------------------------------- */

static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void
sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL); /* kept for the process's life */
}

/* SHA-256, fetched once: EVP_sha256() makes OpenSSL 3 look the algorithm up on every
 * digest, which costs more than hashing a prompt. */
static const EVP_MD *
sha256(void)
{
    pthread_once(&sha256_once, sha256_fetch);
    return sha256_md ? sha256_md : EVP_sha256();
}

/* Fills what store_prompts keeps of the request (root, its messages; borrowed): the
 * hash of the messages unless none, their text with full, the request's feature
 * vector with features (one more extraction, for routed and passthrough requests
 * alike: scoring's vector stays in route()). */
static void
hash_prompt(struct daemon_request *rq, json_t *root, json_t *messages,
            enum conf_store_prompts mode)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    struct daemon_buf text = {0};

    if (mode == CONF_STORE_PROMPTS_NONE)
        return;
    text.cap = rq->body.len + 64; /* the dump is about the body's size: no regrowing */
    text.data = malloc(text.cap);
    if (!text.data)
        abort();
    /* the digest of json_dumps(messages, JSON_COMPACT | JSON_SORT_KEYS), written faster */
    canon_dump(&text, messages);
    if (EVP_Digest(text.data, text.len, md, &mdlen, sha256(), NULL) == 1) {
        rq->prompt_hash = malloc(2 * mdlen + 1);
        if (!rq->prompt_hash)
            abort();
        for (unsigned i = 0; i < mdlen; i++) {
            rq->prompt_hash[2 * i] = hex[md[i] >> 4];
            rq->prompt_hash[2 * i + 1] = hex[md[i] & 15];
        }
        rq->prompt_hash[2 * mdlen] = '\0';
    }
    if (mode == CONF_STORE_PROMPTS_FULL)
        rq->prompt_json = text.data; /* daemon_buf keeps it NUL-terminated */
    else
        daemon__buf_free(&text);
    if (mode == CONF_STORE_PROMPTS_FEATURES)
        rq->prompt_features =
            router_request_features(rq->snap->model, root, &rq->prompt_features_len);
}

/* Parses "0.35" as a threshold in [0,1]. Returns 0 or -1. */
static int
parse_unit(const char *s, double *out)
{
    char *end;
    double v;

    if (!s || !*s)
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno || *end || !(v >= 0 && v <= 1))
        return -1;
    *out = v;
    return 0;
}

/* Returns the index of alias name in c, or -1. */
static int
alias_find(const struct conf *c, const char *name)
{
    for (size_t i = 0; i < c->n_aliases; i++)
        if (!strcmp(c->aliases[i], name))
            return (int)i;
    return -1;
}

/* "triage" or "triage:0.35" for a configured alias. Returns 1 routed (*thr set
 * or NaN, *alias its index in c->aliases), 0 not an alias, -1 an alias with a bad
 * threshold suffix. */
int
daemon__parse_alias(const struct conf *c, const char *model, double *thr, int *alias)
{
    *thr = NAN;
    if ((*alias = alias_find(c, model)) >= 0)
        return 1;
    const char *colon = strrchr(model, ':');
    if (!colon)
        return 0;
    char prefix[128];
    size_t n = (size_t)(colon - model);
    if (n >= sizeof(prefix))
        return 0;
    memcpy(prefix, model, n);
    prefix[n] = '\0';
    if ((*alias = alias_find(c, prefix)) < 0)
        return 0;
    return parse_unit(colon + 1, thr) == 0 ? 1 : -1;
}

static void
list_models(const struct conf *c, char *out, size_t outlen)
{
    out[0] = '\0';
    for (size_t i = 0; i < c->n_aliases; i++)
        snprintf(out + strlen(out), outlen - strlen(out), "%s%s", out[0] ? ", " : "",
                 c->aliases[i]);
    for (size_t i = 0; i < c->n_backends; i++)
        snprintf(out + strlen(out), outlen - strlen(out), "%s%s", out[0] ? ", " : "",
                 c->backends[i].name);
}

/* The worker's share estimator for alias name, made on first use (and remade when
 * [router] share_window changed); NULL when the worker already has
 * DAEMON_SHARE_MAX_ROUTES of them. Loop thread of w only. */
static struct daemon_share_route *
share_route(struct daemon_worker *w, const char *name, size_t window)
{
    unsigned n = atomic_load_explicit(&w->n_share, memory_order_relaxed);
    struct daemon_share_route *r = NULL;

    for (unsigned i = 0; i < n && !r; i++)
        if (!strcmp(w->share[i].name, name))
            r = &w->share[i];
    if (!r) {
        if (n == DAEMON_SHARE_MAX_ROUTES || strlen(name) >= sizeof(r->name))
            return NULL;
        r = &w->share[n];
        memcpy(r->name, name, strlen(name) + 1);
        r->est = router_share_new(window);
        /* readers (daemon_gauges_get) see the name before the count that covers it */
        atomic_store_explicit(&w->n_share, n + 1, memory_order_release);
    } else if (router_share_window(r->est) != window) {
        router_share_destroy(r->est);
        r->est = router_share_new(window);
    }
    return r;
}

/* Adds one decision of sr by share (tier of n_tiers; above: the target shares past each
 * tier but the last; cuts: the score cuts in force) to its counters. One writer per
 * entry: relaxed loads and stores, no read-modify-write. */
static void
share_count(struct daemon_share_route *sr, size_t tier, size_t n_tiers, const double *above,
            const double *cuts)
{
    atomic_store_explicit(&sr->decided, atomic_load_explicit(&sr->decided, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&sr->n_tiers, n_tiers, memory_order_relaxed);
    size_t recent, recent_strong;
    router_share_recent(sr->est, &recent, &recent_strong);
    atomic_store_explicit(&sr->recent_decided, recent, memory_order_relaxed);
    for (size_t t = 0; t < n_tiers; t++) {
        double hi = t ? above[t - 1] : 1, lo = t + 1 < n_tiers ? above[t] : 0;
        double target = hi - lo > 0 ? hi - lo : 0;
        atomic_store_explicit(&sr->tier[t].routed,
                              atomic_load_explicit(&sr->tier[t].routed, memory_order_relaxed) +
                                  (t == tier),
                              memory_order_relaxed);
        atomic_store_explicit(&sr->tier[t].target_ppm,
                              atomic_load_explicit(&sr->tier[t].target_ppm, memory_order_relaxed) +
                                  (uint64_t)llround(target * 1e6),
                              memory_order_relaxed);
        atomic_store_explicit(&sr->tier[t].recent, router_share_recent_tier(sr->est, t),
                              memory_order_relaxed);
        if (t + 1 < n_tiers) {
            uint64_t bits;
            memcpy(&bits, &cuts[t], sizeof(bits));
            atomic_store_explicit(&sr->tier[t].cut_bits, bits, memory_order_relaxed);
        }
    }
}

/* Decides the backend for a routed alias (index alias in the snapshot's aliases).
 * With tier shares ([router] tiers = name:40%, ...) the route's recent scores are cut at
 * each tier's share (router_share_decide_tiers). Otherwise the cut is, first match: the
 * alias suffix (thr_override), x-triage-threshold, x-triage-strong-share, [router]
 * strong_share, [router] threshold. A share is held on the route's recent scores
 * (router_share_decide); every score of the route enters its window, however it was
 * routed. Returns 0, or -1 after replying. */
static int
route(struct daemon_request *rq, json_t *root, double thr_override, int alias)
{
    const struct daemon_snapshot *s = rq->snap;
    const struct conf *c = s->conf;
    struct router_scores sc;
    double thr = s->threshold, share = c->strong_share;
    const char *h;

    if (!isnan(thr_override)) {
        thr = thr_override;
        share = -1;
    } else if ((h = http_request_header(rq, "x-triage-threshold"))) {
        if (parse_unit(h, &thr) < 0) {
            http_reply_err(rq, HTTP_ERR_INVALID_THRESHOLD,
                              "x-triage-threshold must be a number in [0,1]");
            return -1;
        }
        share = -1;
    } else if ((h = http_request_header(rq, "x-triage-strong-share"))) {
        if (parse_unit(h, &share) < 0) {
            http_reply_err(rq, HTTP_ERR_INVALID_STRONG_SHARE,
                              "x-triage-strong-share must be a number in [0,1]");
            return -1;
        }
        /* the cut before the route has a window: the model's reference scores */
        thr = router_model_threshold_for_share(s->model, share);
    }
    const struct daemon_tierset *ts = &s->by_api[rq->api->speaks];
    if (ts->n == 0) {
        http_reply_err(rq, HTTP_ERR_API_NOT_SERVED,
                          "No tier of '%s' speaks the %s API: routing needs tiers with api = %s",
                          c->aliases[alias >= 0 ? alias : 0],
                          rq->api->speaks == CONF_API_ANTHROPIC ? "Anthropic Messages" : "OpenAI",
                          rq->api->speaks == CONF_API_ANTHROPIC ? "anthropic" : "openai");
        return -1;
    }
    if (router_score_request(s->model, root, &sc) < 0) {
        http_reply_err(rq, rq->api->id == DAEMON_API_CHAT || rq->api->id == DAEMON_API_MESSAGES
                          ? HTTP_ERR_INVALID_MESSAGES
                          : HTTP_ERR_INVALID_INPUT,
                          "The request has no text the router can score");
        return -1;
    }
    /* the cascade holds and reads chat completions; other paths route by threshold */
    if (c->policy == CONF_POLICY_CASCADE && rq->api->id == DAEMON_API_CHAT && ts->n == 2) {
        daemon__cascade_route(rq, root, &sc, (int)ts->backend[0], (int)ts->backend[1]);
        rq->score = sc.score;
        return 0;
    }
    enum router_policy_kind kind =
        c->policy == CONF_POLICY_TIERS ? ROUTER_POLICY_TIERS : ROUTER_POLICY_THRESHOLD;
    struct daemon_share_route *sr =
        (kind == ROUTER_POLICY_THRESHOLD || c->tier_shares) && alias >= 0
            ? share_route(rq->w, c->aliases[alias], c->share_window)
            : NULL;
    size_t tier;
    /* tier shares are over the whole tier list: a config whose tiers mix APIs routes
     * each API by its own tiers' policy instead */
    if (sr && c->tier_shares && ts->n == s->n_tiers) {
        double cuts[ROUTER_SHARE_MAX_TIERS];
        size_t n = s->n_tiers < ROUTER_SHARE_MAX_TIERS ? s->n_tiers : ROUTER_SHARE_MAX_TIERS;
        tier = router_share_decide_tiers(sr->est, sc.score, s->tier_above, s->tier_fallback, n,
                                         cuts);
        share_count(sr, tier, n, s->tier_above, cuts);
        rq->route_reason = "share";
    } else if (sr && share >= 0) {
        tier = (size_t)router_share_decide(sr->est, sc.score, share, thr, &thr);
        share_count(sr, tier, 2, &share, &thr);
        rq->route_reason = "share";
    } else {
        if (sr)
            router_share_add(sr->est, sc.score);
        tier = router_policy_pick(kind, ts->tiers, ts->n, thr, &sc);
        rq->route_reason = kind == ROUTER_POLICY_TIERS ? "tiers" : "threshold";
    }
    if (s->sticky) {
        /* a follow-up turn goes no lower than its conversation went (router/sticky.c) */
        struct router_convo cv;
        char salt[160];
        uint64_t now_s = daemon__now_ns() / 1000000000u;
        /* Anthropic conversations apart: their tiers are other backends */
        snprintf(salt, sizeof(salt), "%s\n%s%s", c->aliases[alias], rq->key_id ? rq->key_id : "",
                 rq->api->speaks == CONF_API_ANTHROPIC ? "\nanthropic" : "");
        if (router_sticky_digest(s->sticky, json_object_get(root, "messages"), salt, &cv) == 0) {
            int was = router_sticky_lookup(s->sticky, &cv, now_s);
            if (was > (int)tier && (size_t)was < ts->n) {
                tier = (size_t)was;
                rq->route_reason = "sticky";
            }
            router_sticky_remember(s->sticky, &cv, tier, now_s);
        }
    }
    if (tier >= ts->n)
        tier = ts->n - 1;
    rq->backend = (int)ts->backend[tier];
    rq->score = sc.score;
    rq->threshold = kind == ROUTER_POLICY_THRESHOLD ? thr : NAN;
    return 0;
}

/* Finds the bytes start_attempt splices: the top-level "model" value and the closing
 * brace. Leaves splice_ok at 0 (jansson rewrites) for a body with a key written with
 * escapes or "model" twice, whose meaning the bytes alone do not settle. */
static void
find_splice(struct daemon_request *rq)
{
    const char *d = rq->body.data, *end = d + rq->body.len;
    const char *p = js_object_open(d, end);
    struct js_member m;
    int r, n_model = 0;

    if (!p)
        return;
    while ((r = js_next_member(&p, end, &m)) == 1) {
        if (memchr(m.key, '\\', m.klen))
            return;
        if (js_key_is(&m, "model")) {
            n_model++;
            rq->model_off = (size_t)(m.val - d);
            rq->model_end = (size_t)(m.vend - d);
        } else if (js_key_is(&m, "stream_options")) {
            rq->has_stream_options = 1;
        }
    }
    if (r < 0 || n_model != 1 || d[rq->model_off] != '"')
        return;
    rq->obj_close = (size_t)(p - 1 - d);
    rq->splice_ok = 1;
}

/* The backend a request naming model b may reach on rq's path: 0, or -1 after
 * replying (the backend speaks another API). */
static int
check_backend_api(struct daemon_request *rq, int b)
{
    const struct conf_backend *be = &rq->snap->conf->backends[b];

    if (be->api == rq->api->speaks)
        return 0;
    http_reply_err(rq, HTTP_ERR_WRONG_API,
                      "backend '%s' speaks the %s API: send this request to %s", be->name,
                      be->api == CONF_API_ANTHROPIC ? "Anthropic Messages" : "OpenAI",
                      be->api == CONF_API_ANTHROPIC ? "/v1/messages" : "/v1/chat/completions, "
                      "/v1/responses, ...");
    return -1;
}

/* 1 when some backend of the snapshot speaks rq's API. */
static int
api_served(const struct daemon_request *rq)
{
    const struct conf *c = rq->snap->conf;

    for (size_t i = 0; i < c->n_backends; i++)
        if (c->backends[i].api == rq->api->speaks)
            return 1;
    return 0;
}

/* A Responses follow-up (previous_response_id) goes to the backend that answered that
 * response; a routed one whose id no backend is known to hold is refused, never sent
 * where its state is not. Returns 1 pinned (rq->backend set), 0 no follow-up or
 * passthrough, -1 after replying. */
static int
pin_previous_response(struct daemon_request *rq, json_t *root, int routed)
{
    const struct conf *c = rq->snap->conf;
    json_t *prev = json_object_get(root, "previous_response_id");
    char name[64], q[128];

    if (rq->api->id != DAEMON_API_RESPONSES || !json_is_string(prev) || !routed)
        return 0;
    const char *id = json_string_value(prev);
    int b = api_response_ids_get(id, json_string_length(prev), name, sizeof(name))
                ? conf_backend_find(c, name)
                : -1;
    if (b < 0 || c->backends[b].api != rq->api->speaks) {
        http_reply_err(rq, HTTP_ERR_PREVIOUS_RESPONSE_NOT_FOUND,
                          "previous_response_id '%s' was not answered through triage (or is "
                          "forgotten): name the backend that holds it in 'model'",
                          text_quote(q, sizeof(q), id, 64));
        return -1;
    }
    rq->backend = b;
    rq->pinned = 1;
    rq->route_reason = "previous_response";
    return 1;
}

void
daemon__api_handle(struct daemon_request *rq)
{
    const struct conf *c = rq->snap->conf;
    json_error_t jerr;
    json_t *root = NULL, *view = NULL;
    char names[512];
    double thr = NAN;

    root = features_json_load(rq->body.data, rq->body.len);
    if (!root) /* not plain JSON, or not JSON: jansson decides, and says why */
        root = json_loadb(rq->body.data ? rq->body.data : "", rq->body.len, 0, &jerr);
    if (!root && json_error_code(&jerr) == json_error_numeric_overflow) {
        /* valid JSON, with a number no backend field takes (OpenAI refuses them too):
         * named, never called invalid JSON */
        char path[128] = "";
        if (js_find_big_number(rq->body.data, rq->body.data + rq->body.len, path,
                               sizeof(path), 0, 0) && path[0])
            http_reply_err(rq, HTTP_ERR_NUMBER_OUT_OF_RANGE,
                              "'%s' is a number out of range: integers must fit in 64 "
                              "bits, other numbers in a double", path);
        else
            http_reply_err(rq, HTTP_ERR_NUMBER_OUT_OF_RANGE,
                              "The request body holds a number out of range: integers "
                              "must fit in 64 bits, other numbers in a double");
        return;
    }
    if (!root) {
        http_reply_err(rq, HTTP_ERR_INVALID_JSON,
                          "The request body is not valid JSON: %s (line %d, column %d)",
                          jerr.text, jerr.line, jerr.column);
        return;
    }
    if (!json_is_object(root)) {
        http_reply_err(rq, HTTP_ERR_INVALID_JSON, "The request body must be a JSON object");
        goto out;
    }
    const char *model = json_string_value(json_object_get(root, "model"));
    if (!model || !*model) {
        http_reply_err(rq, HTTP_ERR_MISSING_MODEL, "'model' is required (a string)");
        goto out;
    }
    rq->requested_model = strdup(model);
    if (!rq->requested_model)
        abort();
    if (!(view = rq->api->view(rq, root)))
        goto out;
    json_t *messages = json_object_get(view, "messages");
    json_t *stream = json_object_get(root, "stream");
    rq->stream = json_is_true(stream);

    int b = conf_backend_find(c, model);
    int routed = 0;
    if (b >= 0) {
        if (check_backend_api(rq, b) < 0)
            goto out;
        rq->backend = b;
        rq->route_reason = "passthrough";
    } else {
        int alias;
        int a = daemon__parse_alias(c, model, &thr, &alias);
        if (a < 0) {
            http_reply_err(rq, HTTP_ERR_INVALID_THRESHOLD,
                              "'%s': the threshold after ':' must be a number in [0,1]", model);
            goto out;
        }
        if (a == 0 && !api_served(rq)) {
            http_reply_err(rq, HTTP_ERR_API_NOT_SERVED,
                              "No backend here speaks the %s API (a backend with api = %s)",
                              rq->api->speaks == CONF_API_ANTHROPIC ? "Anthropic Messages"
                              : "OpenAI",
                              rq->api->speaks == CONF_API_ANTHROPIC ? "anthropic" : "openai");
            goto out;
        }
        if (a == 0) {
            list_models(c, names, sizeof(names));
            http_reply_err(rq, HTTP_ERR_MODEL_NOT_FOUND,
                              "The model '%s' does not exist here; use one of: %s", model, names);
            goto out;
        }
        if (!rq->api->routed) {
            http_reply_err(rq, HTTP_ERR_NOT_ROUTED,
                              "'%s' is a routed alias; %s is passed through, not routed: name "
                              "a backend in 'model'", model, rq->api->path);
            goto out;
        }
        int pin = pin_previous_response(rq, root, 1);
        if (pin < 0)
            goto out;
        if (!pin && route(rq, view, thr, alias) < 0)
            goto out;
        routed = 1;
    }

    if (log__level >= LOG_LEVEL_DEBUG && c->log_prompts) {
        char *text = json_dumps(messages, JSON_COMPACT);
        log_debug("request %s prompt: %s", rq->id, text ? text : "?");
        free(text);
    }
    if (daemon__storage())
        hash_prompt(rq, view, messages, c->store_prompts);

    if (budget_check(daemon__budget(), rq->key_id, rq->started_unix_ms, &rq->budget) < 0) {
        const struct budget_state *bs = &rq->budget;
        char ra[24];
        int64_t wait_s = (bs->reset_ms - rq->started_unix_ms + 999) / 1000;
        snprintf(ra, sizeof(ra), "%lld", (long long)(wait_s > 0 ? wait_s : 1));
        http_reply_err(rq, HTTP_ERR_BUDGET_EXCEEDED,
                          "The budget of %s is spent: $%.2f of $%.2f per %s (UTC); it resets "
                          "in %s s",
                          rq->key_id, bs->spent_usd, bs->limit_usd, bs->period, ra);
        http_response_header(rq->response, "Retry-After", ra);
        daemon__add_budget_headers(rq, rq->response);
        rq->budget.limited = 0; /* nothing to charge: it never went upstream */
        goto out;
    }
    if (rq->snap->ratelimit) {
        json_t *mt = json_object_get(root, "max_completion_tokens");
        if (!json_is_integer(mt))
            mt = json_object_get(view, "max_tokens");
        json_int_t expect = json_is_integer(mt) ? json_integer_value(mt) : 256;
        uint64_t est = rq->body.len / 4 + (uint64_t)(expect > 0 ? expect : 0);
        uint32_t retry_s = 1;
        rq->rl_estimate = est > UINT32_MAX ? UINT32_MAX : (uint32_t)est;
        if (ratelimit_take(rq->snap->ratelimit, rq->key_id, now_ms(), rq->rl_estimate,
                           &retry_s) < 0) {
            char ra[16];
            snprintf(ra, sizeof(ra), "%u", retry_s);
            http_reply_err(rq, HTTP_ERR_RATE_LIMITED,
                              "Rate limit reached for %s; retry in %u s",
                              rq->key_id ? rq->key_id : "this client", retry_s);
            http_response_header(rq->response, "Retry-After", ra);
            goto out;
        }
        rq->rl_taken = 1;
    }
    rq->routed = routed;
    rq->first_backend = rq->backend;
    rq->up_json = json_incref(root);
    find_splice(rq);
    rq->overhead_ms = daemon__ms_since(rq->t_start_ns);
    start_attempt(rq);
out:
    json_decref(view);
    json_decref(root);
}

/* Sends rq->up_json to rq->backend, rewritten for it: the upstream model name,
 * routed overrides, usage for streams; the backend's key replaces the client's. */
static void
start_attempt(struct daemon_request *rq)
{
    const struct conf *c = rq->snap->conf;
    const struct conf_backend *be;

    for (;;) {
        be = &c->backends[rq->backend];
        int full = 0;
        if (be->max_concurrent) {
            atomic_uint *n = &rq->snap->inflight[rq->backend];
            if (atomic_fetch_add(n, 1) >= be->max_concurrent) {
                atomic_fetch_sub(n, 1);
                full = 1;
            } else {
                rq->slot = rq->backend;
            }
        }
        if (!full && breaker_allow(rq->snap->breakers[rq->backend], now_ms()) != BREAKER_REJECT)
            break;
        release_slot(rq);
        int skipped = rq->backend;
        if (!next_fallback(rq)) {
            rq->error_kind = full ? "overloaded" : "circuit_open";
            if (full)
                http_reply_err(rq, HTTP_ERR_BACKEND_OVERLOADED,
                                  "backend %s is at its max_concurrent limit", be->name);
            else
                http_reply_err(rq, HTTP_ERR_BACKEND_UNAVAILABLE,
                                  "backend %s is failing; its circuit is open", be->name);
            return;
        }
        daemon__attempt_failed(rq, skipped, full ? "overloaded" : "circuit_open");
        rq->retries++;
    }
    rq->breaker_open_call = 1;
    /* a fresh attempt: forget what the last one got (its first byte too: the time to
     * first byte is that of the attempt that answers) */
    rq->up_status = 0;
    rq->ttfb_ms = NAN;
    free(rq->up_content_type);
    rq->up_content_type = NULL;
    rq->up_headers.len = 0;
    rq->up_body.len = 0;

    int want_usage = rq->stream && rq->api->stream_usage && daemon__storage();
    char *body;
    size_t body_len;
    rq->strip_usage = 0;
    if (rq->splice_ok && !(rq->routed && be->overrides) && !(want_usage && rq->has_stream_options) &&
        rq->cascade != DAEMON_CASCADE_FAST) {
        /* the common case: the client's bytes with another model name (and usage asked
         * for), not a re-serialised tree */
        static const char so[] = ",\"stream_options\":{\"include_usage\":true}";
        const char *d = rq->body.data;
        struct daemon_buf nb = {0};
        size_t ml = strlen(be->model);
        nb.cap = rq->body.len + ml + sizeof(so) + 16;
        nb.data = malloc(nb.cap);
        if (!nb.data)
            abort();
        daemon__buf_append(&nb, d, rq->model_off);
        put_json_string(&nb, be->model, ml);
        daemon__buf_append(&nb, d + rq->model_end, rq->obj_close - rq->model_end);
        if (want_usage) {
            daemon__buf_append(&nb, so, sizeof(so) - 1);
            rq->strip_usage = 1;
        }
        daemon__buf_append(&nb, d + rq->obj_close, rq->body.len - rq->obj_close);
        body = nb.data;
        body_len = nb.len;
    } else {
        json_t *req = json_copy(rq->up_json); /* shallow: nested values are shared, never changed */
        json_object_set_new(req, "model", json_string(be->model));
        if (rq->routed && be->overrides) {
            json_t *o = json_loads(be->overrides, 0, NULL);
            if (json_is_object(o))
                json_object_update(req, o);
            json_decref(o);
        }
        if (rq->cascade == DAEMON_CASCADE_FAST)
            daemon__cascade_fast_body(rq, req);
        if (want_usage) {
            json_t *so = json_object_get(req, "stream_options");
            if (!json_is_true(json_object_get(so, "include_usage"))) {
                json_t *nso = json_is_object(so) ? json_copy(so) : json_object();
                json_object_set_new(nso, "include_usage", json_true());
                json_object_set_new(req, "stream_options", nso);
                rq->strip_usage = 1;
            }
        }
        body = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        if (!body)
            abort();
        body_len = strlen(body);
    }

    /* the client's Authorization is never forwarded; the backend's key is */
    char *h = daemon__backend_headers_fwd(be, rq->stream, rq->id, daemon__forward_headers(rq));
    char *url = daemon__backend_url(be, rq->api->upstream_path);
    struct upstream_request ur = {
        .url = url,
        .headers = h,
        .body = body,
        .body_len = body_len,
        .connect_timeout_ms = be->connect_timeout_ms,
        .first_byte_timeout_ms = be->first_byte_timeout_ms,
        .idle_timeout_ms = be->idle_timeout_ms,
        .timeout_ms = be->timeout_ms,
        .cb = {up_header, up_headers_done, up_data, up_done},
        .ctx = rq,
    };
    rq->call = upstream_start(rq->w->up, &ur);
    daemon__backend_headers_free(h);
    free(url);
    if (!rq->call) {
        breaker_record(rq->snap->breakers[rq->backend], BREAKER_CANCEL, now_ms());
        rq->breaker_open_call = 0;
        release_slot(rq);
        http_reply_err(rq, HTTP_ERR_INTERNAL,
                          "cannot start the call to backend %s", be->name);
        return;
    }
    atomic_fetch_add(&daemon__n_upstream_inflight, 1);
}
