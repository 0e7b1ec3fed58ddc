/* log.h - triaged's logging: leveled lines to stderr, logfmt or JSON, one access line per request.
 *
 * Every line is one line (journald-friendly). The level macros test the active
 * level before evaluating their arguments, so a disabled log_debug() costs one
 * load and compare. Thread-safe: each line is formatted into a local buffer and
 * written whole, alone or in a batch of whole lines (log_batch) of at most PIPE_BUF
 * bytes, so lines of different threads never interleave. Never pass secrets or prompt text here unless the
 * config allows it (conf.log_prompts, and only at debug). */
#ifndef TRIAGE_LOG_H
#define TRIAGE_LOG_H

#include <stdint.h>

enum log_level {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG,
};

/* The active level; read by the macros below. Set it with log_set_level(). */
extern volatile int log__level;

/* Sets the active level (an enum log_level value). Thread-safe. */
void log_set_level(int level);

/* 1: JSON lines; 0: logfmt (default). */
void log_set_json(int json);

/* Batching, for event-loop threads: with on, the calling thread's lines are kept
 * (whole lines, in order) and written together by log_flush(), or as soon as the
 * buffer is full or a line is at warn level or worse. A loop flushes before each
 * poll, so a line waits at most for the rest of its loop turn, and a busy worker
 * writes its access lines with one write(2) per turn instead of one per request. */
void log_batch(int on);

/* Writes the calling thread's batched lines. */
void log_flush(void);

/* Emits one line at level; with_errno appends ": strerror(errno)" (errno as of entry). */
void log__emit(int level, int with_errno, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logs at error level and exits the process with status 1. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define log__at(lvl, err, ...)                                                                     \
    do {                                                                                           \
        if (log__level >= (lvl))                                                                   \
            log__emit((lvl), (err), __VA_ARGS__);                                                  \
    } while (0)

#define log_error(...) log__at(LOG_LEVEL_ERROR, 0, __VA_ARGS__)
#define log_warn(...) log__at(LOG_LEVEL_WARN, 1, __VA_ARGS__) /* appends strerror(errno) */
#define log_warnx(...) log__at(LOG_LEVEL_WARN, 0, __VA_ARGS__)
#define log_info(...) log__at(LOG_LEVEL_INFO, 0, __VA_ARGS__)
#define log_debug(...) log__at(LOG_LEVEL_DEBUG, 0, __VA_ARGS__)

/* One field of a structured line. Exactly one of s (string, NULL = omitted),
 * i (LOG_INT) or d (LOG_DBL; NaN = omitted) is used, per type. */
enum log_field_type { LOG_STR, LOG_INT, LOG_DBL };
struct log_field {
    const char *key;
    enum log_field_type type;
    const char *s;
    int64_t i;
    double d;
};

#define LOG_F_STR(k, v) ((struct log_field){.key = (k), .type = LOG_STR, .s = (v)})
#define LOG_F_INT(k, v) ((struct log_field){.key = (k), .type = LOG_INT, .i = (int64_t)(v)})
#define LOG_F_DBL(k, v) ((struct log_field){.key = (k), .type = LOG_DBL, .d = (v)})

/* Emits one structured line at level with msg and the fields (borrowed), quoted
 * as the format needs. Skipped below the active level. */
void log_fields(int level, const char *msg, const struct log_field *f, int n);

#endif
