/* log.c - formats and writes triaged's log lines (logfmt or JSON) to stderr. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "text.h"

volatile int log__level = LOG_LEVEL_INFO;
static volatile int log_json;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

#define LINE_MAX_BYTES 4096
#define BATCH_BYTES 4096 /* PIPE_BUF: one write to a pipe never interleaves with another */

struct line {
    char buf[LINE_MAX_BYTES];
    size_t len;
};

/* The calling thread's batched lines (log_batch). */
static _Thread_local struct {
    int on;
    size_t len;
    char buf[BATCH_BYTES];
} batch;

static void
write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t rc = write(STDERR_FILENO, p, n);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return; /* nowhere to report it */
        p += rc;
        n -= (size_t)rc;
    }
}

void
log_flush(void)
{
    if (batch.len) {
        write_all(batch.buf, batch.len);
        batch.len = 0;
    }
}

void
log_batch(int on)
{
    if (!on)
        log_flush();
    batch.on = on;
}

void
log_set_level(int level)
{
    if (level < LOG_LEVEL_ERROR)
        level = LOG_LEVEL_ERROR;
    if (level > LOG_LEVEL_DEBUG)
        level = LOG_LEVEL_DEBUG;
    log__level = level;
}

void
log_set_json(int json)
{
    log_json = json;
}

static void
put(struct line *l, const char *s, size_t n)
{
    if (n > sizeof(l->buf) - 2 - l->len)
        n = sizeof(l->buf) - 2 - l->len; /* keep room for the newline */
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void
puts_(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

static void
putf(struct line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
putf(struct line *l, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        put(l, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Appends s as a JSON string, or as a logfmt value (quoted when it needs to be). */
static void
put_value(struct line *l, const char *s)
{
    int quote = log_json || *s == '\0';

    for (const char *p = s; !quote && *p; p++)
        if (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20 || *p == '\\' ||
            (unsigned char)*p >= 0x7f)
            quote = 1;
    if (!quote) {
        puts_(l, s);
        return;
    }
    put(l, "\"", 1);
    size_t n = strlen(s);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p >= 0x7f) {
            /* Paths, methods and model names are client bytes: a log line stays valid
             * UTF-8 (and JSON) whatever they hold. */
            size_t len = *p == 0x7f ? 0 : text_utf8_seq(p, n - (size_t)((const char *)p - s));
            if (len) {
                put(l, (const char *)p, len);
                p += len - 1;
            } else {
                putf(l, "\\u%04x", *p == 0x7f ? 0x7f : 0xfffd);
            }
        } else if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            put(l, esc, 2);
        } else if (*p == '\n') {
            put(l, "\\n", 2);
        } else if (*p < 0x20) {
            putf(l, "\\u%04x", *p);
        } else {
            put(l, (const char *)p, 1);
        }
    }
    put(l, "\"", 1);
}

static void
put_key(struct line *l, const char *key, int first)
{
    if (log_json) {
        puts_(l, first ? "\"" : ",\"");
        puts_(l, key);
        puts_(l, "\":");
    } else {
        if (!first)
            put(l, " ", 1);
        puts_(l, key);
        put(l, "=", 1);
    }
}

static void
begin(struct line *l, int level)
{
    /* the date and time up to the second, formatted once a second per thread */
    static _Thread_local time_t sec = -1;
    static _Thread_local char when[64];
    static _Thread_local size_t n;
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        n = (size_t)snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.",
                             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                             tm.tm_min, tm.tm_sec);
        sec = ts.tv_sec;
    }
    long ms = ts.tv_nsec / 1000000;
    when[n] = (char)('0' + ms / 100);
    when[n + 1] = (char)('0' + ms / 10 % 10);
    when[n + 2] = (char)('0' + ms % 10);
    when[n + 3] = 'Z';
    when[n + 4] = '\0';
    l->len = 0;
    if (log_json)
        put(l, "{", 1);
    put_key(l, "ts", 1);
    put_value(l, when);
    put_key(l, "level", 0);
    put_value(l, level_names[level]);
}

static void
finish(struct line *l, int level)
{
    if (log_json)
        put(l, "}", 1);
    l->buf[l->len++] = '\n';
    if (batch.on && level >= LOG_LEVEL_INFO) {
        if (batch.len + l->len > sizeof(batch.buf))
            log_flush();
        memcpy(batch.buf + batch.len, l->buf, l->len);
        batch.len += l->len;
        return;
    }
    /* Whole lines per write, so lines from several threads never interleave; a
     * warning or error goes out at once, after what this thread had batched. */
    log_flush();
    write_all(l->buf, l->len);
}

static void vemit(int level, int with_errno, int saved, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void
vemit(int level, int with_errno, int saved, const char *fmt, va_list ap)
{
    struct line l;
    char msg[1024];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (with_errno) {
        size_t n = strlen(msg);
        snprintf(msg + n, sizeof(msg) - n, ": %s", strerror(saved));
    }
    begin(&l, level);
    put_key(&l, "msg", 0);
    put_value(&l, msg);
    finish(&l, level);
}

void
log__emit(int level, int with_errno, const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    va_start(ap, fmt);
    vemit(level, with_errno, saved, fmt, ap);
    va_end(ap);
    errno = saved;
}

void
fatal(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vemit(LOG_LEVEL_ERROR, 0, 0, fmt, ap);
    va_end(ap);
    exit(1);
}

void
log_fields(int level, const char *msg, const struct log_field *f, int n)
{
    struct line l;

    if (log__level < level)
        return;
    begin(&l, level);
    put_key(&l, "msg", 0);
    put_value(&l, msg);
    for (int i = 0; i < n; i++) {
        switch (f[i].type) {
        case LOG_STR:
            if (!f[i].s)
                continue;
            put_key(&l, f[i].key, 0);
            put_value(&l, f[i].s);
            break;
        case LOG_INT:
            put_key(&l, f[i].key, 0);
            putf(&l, "%lld", (long long)f[i].i);
            break;
        case LOG_DBL:
            if (isnan(f[i].d) || isinf(f[i].d))
                continue;
            put_key(&l, f[i].key, 0);
            putf(&l, "%.3f", f[i].d);
            break;
        }
    }
    finish(&l, level);
}
