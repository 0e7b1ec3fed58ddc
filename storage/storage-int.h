/* storage-int.h - helpers shared by the storage module's files, private to it. */
#ifndef TRIAGE_STORAGE_INT_H
#define TRIAGE_STORAGE_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

/* Milliseconds a read connection waits for a lock before giving up. */
#define STORAGE__BUSY_TIMEOUT_MS 5000

/* Formats into err (if non-NULL). */
void storage__errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Returns Unix time in ms (CLOCK_REALTIME). */
int64_t storage__now_ms(void);

/* Opens a read-only connection to path with a busy timeout, checking the schema
 * version. Returns NULL with err set. */
sqlite3 *storage__open_read(const char *path, char *err, size_t errlen);

/* Returns a copy of s (NULL stays NULL). Aborts on OOM. */
char *storage__strdup(const char *s);

#endif
