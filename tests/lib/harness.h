/* harness.h - what the C test programs share: HTTP with libcurl, SSE taken apart, mockllm
 * and triaged started and stopped, free ports. */
#ifndef TRIAGE_TESTS_LIB_HARNESS_H
#define TRIAGE_TESTS_LIB_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

#include <curl/curl.h>

extern int h_failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, __func__, #cond); \
            h_failures++;                                                                          \
        }                                                                                          \
    } while (0)

/* CHECK with a message: printf-style arguments say what was seen. */
#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            h_failures++;                                                                          \
        }                                                                                          \
    } while (0)

/* A finished exchange. Body and header block are NUL-terminated. */
struct h_resp {
    CURLcode rc;
    long status;
    char *body;
    size_t len;
    char *head;
    size_t hlen;
    char *head_values;    /* head with every CR and LF made a NUL: h_header's answers */
    double first_byte_ms; /* from the start to the first body byte, -1 when none */
    double total_ms;
    long connects; /* new connections the exchange made (0: a kept-alive one was reused) */
};

/* A request: method NULL = GET, or POST when body is set (sent without waiting for a
 * 100 Continue unless headers ask for one). headers: NULL-terminated array of
 * "Name: value" lines, or NULL. */
struct h_req {
    const char *method;
    const char *path;
    const char *body;
    const char *const *headers;
    long timeout_ms; /* 0 = 15 s */
    CURL *on;        /* a handle to run on, which keeps its connection; NULL: a new one */
};

/* Prepares an easy handle for req against 127.0.0.1:port, filling r as it runs. */
CURL *h_easy(unsigned port, const struct h_req *req, struct h_resp *r, struct curl_slist **hl);

/* After an h_easy transfer (detached from any multi handle): fills r's status, time and
 * connection count, frees its context, hl and the handle (unless it was req->on). */
void h_easy_done(CURL *h, struct h_resp *r, struct curl_slist *hl);

/* Runs req to the end. */
void h_do(unsigned port, const struct h_req *req, struct h_resp *r);

/* Shorthands: GET path; POST body to /v1/chat/completions. */
void h_get(unsigned port, const char *path, struct h_resp *r);
void h_chat(unsigned port, const char *body, struct h_resp *r);

void h_resp_free(struct h_resp *r);

/* Returns the value of r's first header called name (case-insensitive), or NULL. It
 * points into r (borrowed): valid until h_resp_free(r), so values of several headers
 * can be held at once (once the exchange is done; while it runs, until more arrive). */
const char *h_header(const struct h_resp *r, const char *name);

/* Returns error.code of an OpenAI error body (static copy) or "". */
const char *h_error_code(const struct h_resp *r);

/* An SSE completion stream taken apart. */
struct h_sse {
    char content[8192];     /* the deltas' content, concatenated */
    int chunks;             /* chat.completion.chunk events, which are one of: */
    int content_chunks;     /*   a delta with content */
    int stop_chunks;        /*   a choice with a finish_reason */
    int usage_chunks;       /*   no choices and a usage object */
    long completion_tokens; /* from the usage chunk */
    int error_events;       /* {"error": ...} events */
    int done;               /* saw data: [DONE] */
    int after_done;         /* events after [DONE] */
    int bad;                /* events that are not JSON, or JSON but none of the above */
    char model[64];
};
void h_parse_sse(const char *body, struct h_sse *s);

/* Starts argv with stdout piped; waits for "listening on PORT". Returns 0 or -1. */
int h_spawn_mock(char *const argv[], pid_t *pid, unsigned *port);

/* Starts argv; waits until GET /healthz on port answers 200 (5 s). stderr goes
 * to errfile when set. Returns 0 or -1 (the child is reaped). */
int h_spawn_daemon(char *const argv[], unsigned port, const char *errfile, pid_t *pid);

/* Sends sig and waits; returns the wait status. */
int h_stop(pid_t pid, int sig);

/* Returns a TCP port on 127.0.0.1 that was free a moment ago, below the range the
 * kernel gives client sockets (so no test's outgoing connection can take it). */
unsigned h_free_port(void);

/* Monotonic milliseconds. */
double h_now_ms(void);

/* Runs a command line, returns its exit status (-1 on failure), output in out. */
int h_run(char *const argv[], char *out, size_t outlen);

/* What an integration test program shares: its binaries, a temporary folder and a
 * running mockllm. */
struct h_env {
    const char *triaged, *mock, *make_model; /* from argv */
    char dir[256];
    unsigned mock_port;
    pid_t mock_pid;
};

/* For "PROG TRIAGED MOCKLLM MAKE_MODEL": fills e, makes /tmp/triage-NAME-XXXXXX and
 * starts mockllm on a free port. Returns 0, or the exit status to return (usage: 2,
 * set-up failure: 1) after saying why. */
int h_env_setup(struct h_env *e, const char *name, int argc, char **argv);

/* Builds the test predictor model m.tmod in e->dir with e's make_model (seed may be
 * NULL). Returns 0, or -1 after saying why. */
int h_env_make_model(struct h_env *e, const char *seed);

/* Starts triaged for e with a generated config NAME.conf in e->dir: one worker on a
 * free loopback port, backends fast and strong at e's mockllm, the model m.tmod (made
 * by the caller in e->dir), server_extra lines in [server] and, when storage_extra is
 * set, a [storage] section with those lines; tail (may be NULL) is appended after the
 * backends (more sections). stderr goes to NAME.log in e->dir. Returns the port, 0 on
 * failure (after saying why). */
unsigned h_start_triaged(struct h_env *e, const char *name, const char *server_extra,
                         const char *storage_extra, const char *tail, pid_t *pid);

/* The first column of sql's first row over NAME.db in e->dir (the log of the triaged
 * started as NAME) as an integer; -1 when the database, the query or the row fails. */
long long h_db_int(const struct h_env *e, const char *name, const char *sql);

/* Polls h_db_int until it gives at least want, for 60 s at most; returns the last value. */
long long h_db_wait(const struct h_env *e, const char *name, const char *sql, long long want);

/* A raw TCP connection to 127.0.0.1:port whose receives time out after timeout_ms;
 * -1 on failure. */
int h_dial(unsigned port, int timeout_ms);

/* Reads fd until the server closes it (EOF or reset): 1, or 0 when a receive timed
 * out with the connection still open. What was read goes to out (cap bytes kept,
 * NUL-terminated; out may be NULL). */
int h_read_to_close(int fd, char *out, size_t cap);

/* Sends the n bytes of req on a new connection, then reads what comes back until the
 * server closes the connection or timeout_ms of silence. Returns the HTTP status of
 * the first answer (0 when none came); the bytes read go to out (cap, NUL-terminated,
 * may be NULL). */
int h_raw(unsigned port, const void *req, size_t n, char *out, size_t cap, int timeout_ms);

/* The model version triaged at port reports on /readyz, in out ("" when none). */
void h_readyz_model(unsigned port, char *out, size_t len);

/* Stops the mock, removes the folder unless a check failed (kept for reading), prints
 * PASS or FAIL and returns the exit status. */
int h_env_finish(struct h_env *e);

#endif
