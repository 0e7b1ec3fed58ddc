/* auth.c - bearer-key authentication against key files of SHA-256 hashes.
 *
 * Keys are stored only as hashes, so a leaked key file does not leak keys. A presented
 * key is hashed once, then its hash is compared with every entry using CRYPTO_memcmp
 * and a branch-free select, so neither the position of a match nor the number of
 * matching leading bytes shows in the timing. */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "auth.h"

#define AUTH_FILE_MAX (64u << 20) /* bytes; a full 100000-key file is ~13 MB */
#define AUTH_TOKEN_MAX 4096       /* longest bearer token accepted */

struct auth_entry {
    unsigned char hash[AUTH_HASH_LEN];
    char name[AUTH_NAME_MAX + 1];
    unsigned line; /* for duplicate-key messages */
    enum auth_budget_period period; /* AUTH_BUDGET_NONE: no budget field */
    double budget_usd;
};

struct auth_keys {
    atomic_uint refs;
    size_t n;
    struct auth_entry *e; /* n entries, file order */
};

/* Out of memory is fatal everywhere in triage: abort rather than limp on. */
static void *
xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        abort();
    return p;
}

static void *
xrealloc(void *p, size_t size)
{
    p = realloc(p, size ? size : 1);
    if (!p)
        abort();
    return p;
}

static void __attribute__((format(printf, 3, 4)))
seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int
name_char_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-' || c == '@' || c == '+';
}

int
auth_name_valid(const char *name)
{
    size_t n = 0;

    if (!name)
        return 0;
    for (; name[n]; n++)
        if (n >= AUTH_NAME_MAX || !name_char_ok((unsigned char)name[n]))
            return 0;
    return n > 0;
}

static int
hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int
is_blank(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static int
cmp_entry_hash(const void *a, const void *b)
{
    const struct auth_entry *x = a, *y = b;
    int c = memcmp(x->hash, y->hash, AUTH_HASH_LEN);
    if (c)
        return c;
    return (x->line > y->line) - (x->line < y->line);
}

/* Parses one line [p, end) into e. Returns NULL or a static error message. */
static const char *
parse_line(const unsigned char *p, const unsigned char *end, struct auth_entry *e)
{
    const unsigned char *name = p;

    e->period = AUTH_BUDGET_NONE; /* the entry is unzeroed array space */
    e->budget_usd = 0;
    while (p < end && !is_blank(*p))
        p++;
    size_t nlen = (size_t)(p - name);
    if (nlen > AUTH_NAME_MAX)
        return "key name longer than 64 characters";
    for (size_t i = 0; i < nlen; i++)
        if (!name_char_ok(name[i]))
            return "key name may only hold letters, digits and . _ - @ +";
    memcpy(e->name, name, nlen);
    e->name[nlen] = '\0';

    while (p < end && is_blank(*p))
        p++;
    const unsigned char *hex = p;
    while (p < end && !is_blank(*p))
        p++;
    size_t hlen = (size_t)(p - hex);
    if (hlen == 0)
        return "expected a SHA-256 hash (64 hex digits) after the key name";
    if (hlen >= sizeof(AUTH_KEY_PREFIX) - 1 &&
        !memcmp(hex, AUTH_KEY_PREFIX, sizeof(AUTH_KEY_PREFIX) - 1))
        return "this looks like a plain key; the file holds only hashes (use `triage key add`)";
    if (hlen != 2 * AUTH_HASH_LEN)
        return "expected a SHA-256 hash (64 hex digits) after the key name";
    for (size_t i = 0; i < AUTH_HASH_LEN; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return "expected a SHA-256 hash (64 hex digits) after the key name";
        e->hash[i] = (unsigned char)(hi << 4 | lo);
    }

    while (p < end && is_blank(*p))
        p++;
    if (p < end) {
        /* optional: budget_usd=AMOUNT/day|month */
        static const char field[] = "budget_usd=";
        char text[48];
        const unsigned char *b = p;
        while (p < end && !is_blank(*p))
            p++;
        size_t blen = (size_t)(p - b);
        if (blen <= sizeof(field) - 1 || memcmp(b, field, sizeof(field) - 1))
            return "unexpected text after the hash";
        blen -= sizeof(field) - 1;
        if (blen >= sizeof(text))
            return "budget_usd: expected AMOUNT/day or AMOUNT/month";
        memcpy(text, b + sizeof(field) - 1, blen);
        text[blen] = '\0';
        if (auth_budget_parse(text, &e->budget_usd, &e->period) < 0)
            return "budget_usd: expected AMOUNT/day or AMOUNT/month, AMOUNT a number of USD > 0";
        while (p < end && is_blank(*p))
            p++;
        if (p < end)
            return "unexpected text after the budget";
    }
    return NULL;
}

int
auth_budget_parse(const char *text, double *usd, enum auth_budget_period *period)
{
    char *end;

    if (!text || !*text || *text == '-' || *text == '+' || *text == ' ')
        return -EINVAL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || !(v > 0) || v > 1e12 || *end != '/')
        return -EINVAL;
    if (!strcmp(end, "/day"))
        *period = AUTH_BUDGET_DAY;
    else if (!strcmp(end, "/month"))
        *period = AUTH_BUDGET_MONTH;
    else
        return -EINVAL;
    *usd = v;
    return 0;
}

int64_t
auth_budget_period_start(enum auth_budget_period p, int64_t now_ms)
{
    if (p != AUTH_BUDGET_MONTH)
        return now_ms - now_ms % 86400000;
    time_t t = (time_t)(now_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    return (int64_t)timegm(&tm) * 1000;
}

int64_t
auth_budget_period_end(enum auth_budget_period p, int64_t now_ms)
{
    if (p != AUTH_BUDGET_MONTH)
        return now_ms - now_ms % 86400000 + 86400000;
    time_t t = (time_t)(now_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    tm.tm_mon++; /* timegm carries December + 1 into January */
    return (int64_t)timegm(&tm) * 1000;
}

enum auth_budget_period
auth_keys_budget(const struct auth_keys *k, const char *name, double *usd)
{
    for (size_t i = 0; k && name && i < k->n; i++)
        if (k->e[i].period != AUTH_BUDGET_NONE && !strcmp(k->e[i].name, name)) {
            *usd = k->e[i].budget_usd;
            return k->e[i].period;
        }
    return AUTH_BUDGET_NONE;
}

struct auth_keys *
auth_keys_parse(const char *text, size_t len, const char *path, char *err, size_t errlen)
{
    const unsigned char *p = (const unsigned char *)text, *end = p + len;
    struct auth_keys *k = xcalloc(1, sizeof(*k));
    size_t cap = 0;
    unsigned line = 0;
    struct auth_entry *sorted = NULL;

    atomic_init(&k->refs, 1);
    if (!path)
        path = "keys";
    while (p < end) {
        const unsigned char *eol = memchr(p, '\n', (size_t)(end - p));
        const unsigned char *next = eol ? eol + 1 : end;
        if (!eol)
            eol = end;
        line++;
        size_t llen = (size_t)(eol - p);
        if (llen && p[llen - 1] == '\r')
            llen--;
        eol = p + llen;
        if (llen && memchr(p, '\0', llen)) {
            seterr(err, errlen, "%s:%u: NUL byte in line", path, line);
            goto fail;
        }
        while (p < eol && is_blank(*p))
            p++;
        if (p == eol || *p == '#') {
            p = next;
            continue;
        }
        if (k->n == AUTH_KEYS_MAX) {
            seterr(err, errlen, "%s:%u: too many keys (at most %d)", path, line, AUTH_KEYS_MAX);
            goto fail;
        }
        if (k->n == cap) {
            cap = cap ? 2 * cap : 16;
            k->e = xrealloc(k->e, cap * sizeof(*k->e));
        }
        struct auth_entry *e = &k->e[k->n];
        const char *msg = parse_line(p, eol, e);
        if (msg) {
            seterr(err, errlen, "%s:%u: %s", path, line, msg);
            goto fail;
        }
        e->line = line;
        k->n++;
        p = next;
    }

    /* A name's keys share one budget: two different ones would be ambiguous. */
    for (size_t i = 0; i < k->n; i++) {
        if (k->e[i].period == AUTH_BUDGET_NONE)
            continue;
        for (size_t j = 0; j < i; j++)
            if (k->e[j].period != AUTH_BUDGET_NONE && !strcmp(k->e[i].name, k->e[j].name) &&
                (k->e[j].period != k->e[i].period || k->e[j].budget_usd != k->e[i].budget_usd)) {
                seterr(err, errlen, "%s:%u: budget for %s differs from line %u's", path,
                       k->e[i].line, k->e[i].name, k->e[j].line);
                goto fail;
            }
    }

    /* One hash on two lines would make the name a key maps to ambiguous. */
    if (k->n > 1) {
        sorted = xcalloc(k->n, sizeof(*sorted));
        memcpy(sorted, k->e, k->n * sizeof(*sorted));
        qsort(sorted, k->n, sizeof(*sorted), cmp_entry_hash);
        for (size_t i = 1; i < k->n; i++)
            if (!memcmp(sorted[i - 1].hash, sorted[i].hash, AUTH_HASH_LEN)) {
                seterr(err, errlen, "%s:%u: duplicate key (same hash as line %u)", path,
                       sorted[i].line, sorted[i - 1].line);
                goto fail;
            }
        free(sorted);
        sorted = NULL;
    }
    return k;

fail:
    free(sorted);
    auth_keys_unref(k);
    return NULL;
}

struct auth_keys *
auth_keys_load(const char *path, char *err, size_t errlen)
{
    FILE *f = NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    struct auth_keys *k = NULL;

    f = fopen(path, "re");
    if (!f) {
        seterr(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    for (;;) {
        if (len == cap) {
            if (cap >= AUTH_FILE_MAX) {
                seterr(err, errlen, "%s: file larger than %u MB", path, AUTH_FILE_MAX >> 20);
                goto fail;
            }
            cap = cap ? 2 * cap : 4096;
            buf = xrealloc(buf, cap);
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) {
                seterr(err, errlen, "%s: read error", path);
                goto fail;
            }
            break;
        }
    }
    k = auth_keys_parse(buf, len, path, err, errlen);

fail:
    if (f)
        fclose(f);
    free(buf);
    return k;
}

struct auth_keys *
auth_keys_ref(struct auth_keys *k)
{
    if (k)
        atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
    return k;
}

void
auth_keys_unref(struct auth_keys *k)
{
    if (!k)
        return;
    if (atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(k->e);
    free(k);
}

size_t
auth_keys_count(const struct auth_keys *k)
{
    return k ? k->n : 0;
}

const char *
auth_keys_name(const struct auth_keys *k, size_t i)
{
    return k && i < k->n ? k->e[i].name : NULL;
}

void
auth_key_hash(const char *key, size_t len, unsigned char out[AUTH_HASH_LEN])
{
    unsigned int outlen = 0;

    /* Fails only when OpenSSL cannot allocate: treat like any other OOM. */
    if (!EVP_Digest(key, len, out, &outlen, EVP_sha256(), NULL) || outlen != AUTH_HASH_LEN)
        abort();
}

void
auth_key_hash_hex(const char *key, size_t len, char hex[2 * AUTH_HASH_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char h[AUTH_HASH_LEN];

    auth_key_hash(key, len, h);
    for (size_t i = 0; i < AUTH_HASH_LEN; i++) {
        hex[2 * i] = digits[h[i] >> 4];
        hex[2 * i + 1] = digits[h[i] & 15];
    }
    hex[2 * AUTH_HASH_LEN] = '\0';
    OPENSSL_cleanse(h, sizeof(h));
}

const char *
auth_keys_verify(const struct auth_keys *k, const char *key, size_t len)
{
    unsigned char h[AUTH_HASH_LEN];
    size_t found = 0, idx = 0;

    if (!k || !key)
        return NULL;
    auth_key_hash(key, len, h);
    for (size_t i = 0; i < k->n; i++) {
        /* eq is 0 or 1; mask is all ones on a match. No branch depends on the data. */
        size_t eq = (size_t)(CRYPTO_memcmp(h, k->e[i].hash, AUTH_HASH_LEN) == 0);
        size_t mask = (size_t)0 - eq;
        idx = (idx & ~mask) | (i & mask);
        found |= eq;
    }
    OPENSSL_cleanse(h, sizeof(h));
    return found ? k->e[idx].name : NULL;
}

int
auth_bearer_parse(const char *value, const char **tok, size_t *toklen)
{
    static const char scheme[] = "bearer";
    const unsigned char *p = (const unsigned char *)value;

    if (!p)
        return -ENOENT;
    while (is_blank(*p))
        p++;
    if (!*p)
        return -ENOENT;
    for (size_t i = 0; i < sizeof(scheme) - 1; i++, p++)
        if (!*p || (*p | 0x20) != (unsigned char)scheme[i])
            return -EINVAL;
    if (!is_blank(*p))
        return -EINVAL;
    while (is_blank(*p))
        p++;
    const unsigned char *t = p;
    while (*p > 0x20 && *p < 0x7f)
        p++;
    size_t n = (size_t)(p - t);
    while (is_blank(*p))
        p++;
    if (*p || n == 0 || n > AUTH_TOKEN_MAX)
        return -EINVAL;
    *tok = (const char *)t;
    *toklen = n;
    return 0;
}

int
auth_check(const struct auth_keys *k, const char *authorization, const char **name)
{
    const char *tok;
    size_t n;
    int r = auth_bearer_parse(authorization, &tok, &n);

    if (r < 0)
        return r;
    *name = auth_keys_verify(k, tok, n);
    return *name ? 0 : -EACCES;
}

int
auth_key_generate(char *buf, size_t buflen)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char rnd[33]; /* 32 random bytes + one zero pad byte for the last group */
    size_t got = 0;
    const size_t plen = sizeof(AUTH_KEY_PREFIX) - 1;

    if (!buf || buflen < AUTH_KEY_LEN + 1)
        return -ENOSPC;
    while (got < 32) {
        ssize_t r = getrandom(rnd + got, 32 - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            OPENSSL_cleanse(rnd, sizeof(rnd));
            return -e;
        }
        got += (size_t)r;
    }
    rnd[32] = 0;
    memcpy(buf, AUTH_KEY_PREFIX, plen);
    char *o = buf + plen;
    /* 32 bytes = 10 groups of 3 (40 chars) + 2 bytes (3 chars), no padding. */
    for (size_t i = 0; i < 33; i += 3) {
        uint32_t v = (uint32_t)rnd[i] << 16 | (uint32_t)rnd[i + 1] << 8 | rnd[i + 2];
        *o++ = b64[v >> 18 & 63];
        *o++ = b64[v >> 12 & 63];
        *o++ = b64[v >> 6 & 63];
        if (i + 3 < 33)
            *o++ = b64[v & 63];
    }
    *o = '\0';
    OPENSSL_cleanse(rnd, sizeof(rnd));
    return 0;
}
