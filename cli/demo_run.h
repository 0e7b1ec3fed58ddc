/* demo_run.h - what `triage demo` and `triage demo --learn` share: sending many chat
 * completions to a triaged at once and reading its answers and headers, GETting a page,
 * reading GSM8K's records line by line, and SVG text. */
#ifndef TRIAGE_CLI_DEMO_RUN_H
#define TRIAGE_CLI_DEMO_RUN_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#include <curl/curl.h>
#include <zlib.h>

/* The GSM8K replay data and the example config: a source tree's copy first, then the
 * installed one (both static strings). */
const char *demo_default_data(void);
const char *demo_default_conf(void);

/* One answer to a request of demo_post_all, borrowed for the done callback only. */
struct demo_reply {
    CURLcode rc;         /* CURLE_OK when an HTTP answer came */
    long status;         /* its HTTP status, 0 without one */
    const char *body;    /* its body, NUL-terminated (len bytes) */
    size_t len;
    const char *backend; /* x-triage-backend, "" when absent */
    double score;        /* x-triage-score, NAN when absent */
    double secs;         /* from sending to the last byte */
};

/* A batch of chat completions POSTed to url + "/v1/chat/completions". */
struct demo_post {
    const char *url;          /* triaged's base URL (borrowed) */
    const char *auth;         /* a whole "Authorization: ..." header, or NULL */
    size_t total;             /* requests 0..total-1 */
    unsigned concurrency;     /* in flight at once, at least 1 */
    long timeout_ms;          /* per request */
    const char *progress;     /* a progress bar's label, or NULL for none */
    volatile sig_atomic_t *stop; /* when set, requests in flight are dropped (NULL: never) */
    /* Returns request k's body as a new string (free()). */
    char *(*body)(void *arg, size_t k);
    /* Receives request k's answer. */
    void (*done)(void *arg, size_t k, const struct demo_reply *r);
    void *arg;
};

/* Sends p's requests, at most p->concurrency at a time, calling p->done for each as it
 * ends (in the calling thread), until all have ended or *p->stop is set. */
void demo_post_all(const struct demo_post *p);

/* GETs url + path; returns the body of a 200 answer as a new string (free()), or NULL. */
char *demo_http_get(const char *url, const char *path);

/* Reads one line of any length from f into *line (grown with realloc, *cap bytes; the
 * caller frees it). Returns its length, or -1 at the end. */
long demo_gz_line(gzFile f, char **line, size_t *cap);

/* Returns a chat completion request body sending prompt to model (both borrowed) as a new
 * string (free()). */
char *demo_chat_body(const char *model, const char *prompt);

/* Ends an SVG written to f (path, for the error): "</svg>" and fclose. Returns 0, or -1
 * with the error said. */
int demo_svg_close(FILE *f, const char *path);

/* Writes an SVG <text> at (x, y) with text-anchor anchor and extra attributes (or NULL). */
void demo_svg_text(FILE *f, double x, double y, const char *anchor, const char *extra,
                   const char *text);

#endif
