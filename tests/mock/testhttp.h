/* testhttp.h - helpers for the tests in tests/mock: HTTP requests with libcurl, SSE parsing,
 * and starting a server process that prints "listening on PORT". */
#ifndef TRIAGE_TESTHTTP_H
#define TRIAGE_TESTHTTP_H

#include <stdio.h>
#include <sys/types.h>

#include <curl/curl.h>

extern int failures;   /* failed CHECKs so far */
extern unsigned port;  /* where request() sends to */

#define CHECK(cond)                                                                               \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, __func__, #cond); \
            failures++;                                                                           \
        }                                                                                         \
    } while (0)

/* One response: curl's result, the status, the body and the header block (NUL-terminated). */
struct resp {
    CURLcode rc;
    long status;
    char *body;
    size_t len;
    char *head;
    size_t hlen;
    long connects;
};

/* Appends what curl hands over to a (char *, size_t) pair. */
struct sink {
    char **buf;
    size_t *len;
};
size_t on_sink(char *p, size_t sz, size_t n, void *arg);

/* One request to 127.0.0.1:port on handle h (NULL: a fresh one); body NULL = GET;
 * auth NULL or a whole header line; timeout_ms 0 = 10 s. Fills r; free with resp_free. */
void request(CURL *h, const char *path, const char *body, const char *auth, long timeout_ms,
             struct resp *r);
void resp_free(struct resp *r);

/* Returns the value of header name in r (a static copy) or NULL. */
const char *header(const struct resp *r, const char *name);

/* An SSE chat completion stream, taken apart: the concatenated deltas, chunk counts, flags. */
struct sse {
    char content[4096];
    int content_chunks, stop_chunks, usage_chunks, done, after_done;
    long completion_tokens;
    char model[64];
};
void parse_sse(const char *body, struct sse *s);

/* Starts argv[0] with argv, reads "listening on PORT" from its stdout. Returns 0 with
 * *pid and *out_port set, or -1 (the child is reaped). */
int spawn_server(char *const argv[], pid_t *pid, unsigned *out_port);

/* Sends SIGTERM and returns the wait status. */
int stop_server(pid_t pid);

#endif
