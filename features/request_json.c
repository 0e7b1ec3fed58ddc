/* request_json.c - a fast JSON parser for request bodies, building the jansson tree json_loadb would.
 *
 * Used by the daemon for every request and by the scoring benchmark, so the figure
 * measured is the path taken. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "prompt_features.h"

/* A growable byte buffer, always NUL-terminated. Out of memory aborts. */
struct jbuf {
    char *data;
    size_t len;
    size_t cap;
};

static void
jbuf_append(struct jbuf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->data = realloc(b->data, cap);
        if (!b->data)
            abort();
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static const char *
ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/*
 * jansson's loader reads a byte at a time through callbacks and copies each string
 * twice, and requests are mostly long strings. This parser builds the same tree for
 * the JSON it accepts; anything else (an error, deep nesting, a number out of range,
 * "\u0000", a key with escapes) it leaves to json_loadb, which stays the authority
 * on what is valid and on the error message. */

#define JP_MAX_DEPTH 64

struct jp {
    const char *p, *end;
    int depth;
    struct jbuf tmp; /* unescaped strings */
};

static json_t *jp_value(struct jp *j);

/* 1 if s[0..n) is UTF-8 as jansson accepts it (no overlongs, surrogates, > U+10FFFF). */
static int
jp_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k;
        uint32_t v;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            k = 1, v = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            k = 2, v = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3, v = c & 0x07;
        else
            return 0;
        if (n - i <= k)
            return 0; /* cut short */
        for (size_t m = 1; m <= k; m++) {
            if ((s[i + m] & 0xc0) != 0x80)
                return 0;
            v = (v << 6) | (s[i + m] & 0x3f);
        }
        if ((k == 2 && (v < 0x800 || (v >= 0xd800 && v <= 0xdfff))) ||
            (k == 3 && (v < 0x10000 || v > 0x10ffff)))
            return 0;
        i += k + 1;
    }
    return 1;
}

static int
jp_hex4(const char *p, uint32_t *out)
{
    uint32_t v = 0;

    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* j->p at '"': the string's bytes in *s, *n (in the input, or unescaped in j->tmp).
 * Returns 0, or -1 for jansson to judge. */
static int
jp_string(struct jp *j, const char **s, size_t *n)
{
    const char *p = j->p + 1, *start = p;
    int high = 0;

    for (;;) {
        while (p + 8 <= j->end && !features_json_escape_in8(p)) {
            uint64_t x;
            memcpy(&x, p, 8);
            high |= (x & 0x8080808080808080ull) != 0;
            p += 8;
        }
        if (p >= j->end)
            return -1;
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\' || c < 0x20)
            break;
        high |= c >= 0x80;
        p++;
    }
    if (*p == '"') {
        if (high && !jp_utf8((const unsigned char *)start, (size_t)(p - start)))
            return -1;
        *s = start;
        *n = (size_t)(p - start);
        j->p = p + 1;
        return 0;
    }
    if (*p != '\\')
        return -1; /* a control character */
    /* escapes: unescape into tmp */
    struct jbuf *t = &j->tmp;
    t->len = 0;
    p = start;
    while (p < j->end && *p != '"') {
        const char *q = p;
        while (q < j->end && *q != '"' && *q != '\\') {
            if ((unsigned char)*q < 0x20)
                return -1;
            q++;
        }
        if (q > p) {
            if (!jp_utf8((const unsigned char *)p, (size_t)(q - p)))
                return -1;
            jbuf_append(t, p, (size_t)(q - p));
        }
        p = q;
        if (p >= j->end || *p == '"')
            break;
        if (j->end - p < 2)
            return -1;
        char e = p[1], out;
        p += 2;
        switch (e) {
        case '"': out = '"'; break;
        case '\\': out = '\\'; break;
        case '/': out = '/'; break;
        case 'b': out = '\b'; break;
        case 'f': out = '\f'; break;
        case 'n': out = '\n'; break;
        case 'r': out = '\r'; break;
        case 't': out = '\t'; break;
        case 'u': {
            uint32_t v, lo;
            char u8[4];
            size_t l;
            if (j->end - p < 4 || jp_hex4(p, &v) < 0)
                return -1;
            p += 4;
            if (v == 0 || (v >= 0xdc00 && v <= 0xdfff))
                return -1;
            if (v >= 0xd800 && v <= 0xdbff) {
                if (j->end - p < 6 || p[0] != '\\' || p[1] != 'u' || jp_hex4(p + 2, &lo) < 0 ||
                    lo < 0xdc00 || lo > 0xdfff)
                    return -1;
                p += 6;
                v = 0x10000 + ((v - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (v < 0x80) {
                u8[0] = (char)v, l = 1;
            } else if (v < 0x800) {
                u8[0] = (char)(0xc0 | (v >> 6)), u8[1] = (char)(0x80 | (v & 0x3f)), l = 2;
            } else if (v < 0x10000) {
                u8[0] = (char)(0xe0 | (v >> 12)), u8[1] = (char)(0x80 | ((v >> 6) & 0x3f));
                u8[2] = (char)(0x80 | (v & 0x3f)), l = 3;
            } else {
                u8[0] = (char)(0xf0 | (v >> 18)), u8[1] = (char)(0x80 | ((v >> 12) & 0x3f));
                u8[2] = (char)(0x80 | ((v >> 6) & 0x3f)), u8[3] = (char)(0x80 | (v & 0x3f));
                l = 4;
            }
            jbuf_append(t, u8, l);
            continue;
        }
        default:
            return -1;
        }
        jbuf_append(t, &out, 1);
    }
    if (p >= j->end)
        return -1;
    jbuf_append(t, "", 0); /* an empty result still has data */
    *s = t->data;
    *n = t->len;
    j->p = p + 1;
    return 0;
}

static json_t *
jp_number(struct jp *j)
{
    const char *p = j->p, *s = p;
    int real = 0;
    char tmp[64], *e;

    if (p < j->end && *p == '-')
        p++;
    if (p < j->end && *p == '0')
        p++;
    else if (p < j->end && *p >= '1' && *p <= '9')
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
    else
        return NULL;
    if (p < j->end && *p == '.') {
        real = 1;
        if (++p >= j->end || *p < '0' || *p > '9')
            return NULL;
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < j->end && (*p == 'e' || *p == 'E')) {
        real = 1;
        p++;
        if (p < j->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= j->end || *p < '0' || *p > '9')
            return NULL;
        while (p < j->end && *p >= '0' && *p <= '9')
            p++;
    }
    size_t n = (size_t)(p - s);
    if (n >= sizeof(tmp))
        return NULL;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    errno = 0;
    j->p = p;
    if (!real) {
        long long v = strtoll(tmp, &e, 10);
        return errno || *e ? NULL : json_integer(v);
    }
    double d = strtod(tmp, &e);
    if (*e || (errno == ERANGE && isinf(d)))
        return NULL;
    return json_real(d);
}

static int
jp_literal(struct jp *j, const char *lit, size_t n)
{
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n))
        return -1;
    j->p += n;
    return 0;
}

static json_t *
jp_value(struct jp *j)
{
    json_t *v = NULL;
    const char *s;
    size_t n;

    j->p = ws(j->p, j->end);
    if (j->p >= j->end)
        return NULL;
    switch (*j->p) {
    case '{':
        if (++j->depth > JP_MAX_DEPTH)
            return NULL;
        v = json_object();
        j->p = ws(j->p + 1, j->end);
        if (j->p < j->end && *j->p == '}') {
            j->p++;
            j->depth--;
            break;
        }
        for (;;) {
            j->tmp.len = 0;
            if (j->p >= j->end || *j->p != '"' || jp_string(j, &s, &n) < 0 || j->tmp.len)
                goto fail; /* keys with escapes go to jansson */
            const char *key = s;
            size_t klen = n;
            j->p = ws(j->p, j->end);
            if (j->p >= j->end || *j->p != ':')
                goto fail;
            j->p++;
            json_t *m = jp_value(j);
            if (!m || json_object_setn_new_nocheck(v, key, klen, m) < 0)
                goto fail;
            j->p = ws(j->p, j->end);
            if (j->p < j->end && *j->p == ',') {
                j->p = ws(j->p + 1, j->end);
                continue;
            }
            if (j->p < j->end && *j->p == '}') {
                j->p++;
                break;
            }
            goto fail;
        }
        j->depth--;
        break;
    case '[':
        if (++j->depth > JP_MAX_DEPTH)
            return NULL;
        v = json_array();
        j->p = ws(j->p + 1, j->end);
        if (j->p < j->end && *j->p == ']') {
            j->p++;
            j->depth--;
            break;
        }
        for (;;) {
            json_t *m = jp_value(j);
            if (!m || json_array_append_new(v, m) < 0)
                goto fail;
            j->p = ws(j->p, j->end);
            if (j->p < j->end && *j->p == ',') {
                j->p++;
                continue;
            }
            if (j->p < j->end && *j->p == ']') {
                j->p++;
                break;
            }
            goto fail;
        }
        j->depth--;
        break;
    case '"':
        j->tmp.len = 0;
        if (jp_string(j, &s, &n) < 0)
            return NULL;
        v = json_stringn_nocheck(s, n);
        break;
    case 't':
        return jp_literal(j, "true", 4) < 0 ? NULL : json_true();
    case 'f':
        return jp_literal(j, "false", 5) < 0 ? NULL : json_false();
    case 'n':
        return jp_literal(j, "null", 4) < 0 ? NULL : json_null();
    default:
        return jp_number(j);
    }
    return v;
fail:
    json_decref(v);
    return NULL;
}

json_t *
features_json_load(const char *buf, size_t len)
{
    struct jp j;
    json_t *v;

    if (!buf) /* before any arithmetic on it: NULL + 0 is undefined */
        return NULL;
    j = (struct jp){.p = buf, .end = buf + len};
    j.p = ws(j.p, j.end);
    if (j.p >= j.end || (*j.p != '{' && *j.p != '['))
        return NULL; /* jansson decodes only objects and arrays at the top */
    v = jp_value(&j);
    if (v && ws(j.p, j.end) != j.end) {
        json_decref(v);
        v = NULL;
    }
    free(j.tmp.data);
    return v;
}
