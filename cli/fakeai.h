/* fakeai.h - a small libuv HTTP/1.1 server that fakes OpenAI chat completions, shared by
 * the test backend `mockllm` and `triage replay`. */
#ifndef TRIAGE_FAKEAI_H
#define TRIAGE_FAKEAI_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct fakeai_server;
struct fakeai_req;

/* Called once per complete request on the thread of the connection's loop. The handler
 * must answer exactly once, now or later from the same thread, with fakeai_req_reply()
 * or fakeai_req_chat(). req stays valid until then (or until the client goes away, which
 * the server handles itself). */
typedef void fakeai_handler_fn(struct fakeai_req *req, void *arg);

struct fakeai_config {
    const char *listen;         /* address to bind, e.g. "127.0.0.1" or "::"; borrowed */
    uint16_t port;              /* 0 = any free port */
    unsigned threads;           /* event-loop threads, each with its own SO_REUSEPORT socket */
    size_t max_body;            /* bytes; larger requests get 413 */
    fakeai_handler_fn *handler;
    void *arg;                  /* passed to handler */
};

/* Binds the listening sockets. Returns a new server or NULL with a message in err. */
struct fakeai_server *fakeai_server_new(const struct fakeai_config *cfg, char *err, size_t errlen);

/* Returns the bound port (useful with port 0). */
uint16_t fakeai_server_port(const struct fakeai_server *s);

/* Serves until SIGINT or SIGTERM (or fakeai_server_stop()), on the calling thread plus
 * threads-1 more. Returns 0, or a negative errno if a thread could not be started. */
int fakeai_server_run(struct fakeai_server *s);

/* Asks a running server to return from fakeai_server_run(); any thread may call it. */
void fakeai_server_stop(struct fakeai_server *s);

/* Frees a server that is not running; NULL is fine. */
void fakeai_server_destroy(struct fakeai_server *s);

/* Returns new {"requests","active","completed","cancelled","aborted","last_request"}.
 * Requests to paths under /_mock/ are not counted. Thread-safe. */
json_t *fakeai_server_stats(struct fakeai_server *s);

/* Zeros the counters (except active) and forgets the last request. Thread-safe. */
void fakeai_server_reset(struct fakeai_server *s);

/* Request accessors; all borrow from the request and live as long as it. */
const char *fakeai_req_method(const struct fakeai_req *r);
const char *fakeai_req_path(const struct fakeai_req *r); /* without the query string */
const char *fakeai_req_query(const struct fakeai_req *r); /* after '?', or "" */
unsigned fakeai_req_n_headers(const struct fakeai_req *r);
/* Header i (< fakeai_req_n_headers): its value, and its name in *name (borrowed). */
const char *fakeai_req_header_at(const struct fakeai_req *r, unsigned i, const char **name);
const char *fakeai_req_body(const struct fakeai_req *r, size_t *len); /* NUL-terminated */
/* Returns the value of the first header called name (case-insensitive) or NULL. */
const char *fakeai_req_header(const struct fakeai_req *r, const char *name);
struct fakeai_server *fakeai_req_server(const struct fakeai_req *r);

/* Answers now with status, content type and body (all copied). extra_headers is NULL or
 * complete header lines, each ending in "\r\n". */
void fakeai_req_reply(struct fakeai_req *r, int status, const char *content_type,
                      const char *extra_headers, const char *body, size_t len);

/* Answers with an OpenAI error body {"error":{"message":..,"type":..,"code":..}}. */
void fakeai_req_error(struct fakeai_req *r, int status, const char *message);

/* Answers with an Anthropic error body {"type":"error","error":{"type":..,"message":..}}. */
void fakeai_req_error_anthropic(struct fakeai_req *r, int status, const char *message);

enum fakeai_fail {
    FAKEAI_FAIL_NONE = 0,
    FAKEAI_FAIL_CLOSE,          /* after latency_ms, drop the connection with no response */
    FAKEAI_FAIL_HANG,           /* never answer */
    FAKEAI_FAIL_DIE_MID_STREAM, /* stream die_after content chunks, then drop the connection */
};

/* The API an answer is written in (same content, pieces and delays). */
enum fakeai_format {
    FAKEAI_CHAT = 0,      /* chat.completion / chat.completion.chunk */
    FAKEAI_COMPLETIONS,   /* text_completion (legacy /v1/completions) */
    FAKEAI_RESPONSES,     /* a Responses API response, typed SSE events when streamed */
    FAKEAI_MESSAGES,      /* an Anthropic message, its typed SSE events when streamed */
};

/* One chat completion answer, and how to deliver it. */
struct fakeai_chat {
    enum fakeai_format format;
    const char *tool_name;      /* FAKEAI_MESSAGES: also a tool_use block calling it, its
                                 * input tool_input (a JSON object's text); else NULL */
    const char *tool_input;
    const char *previous_response_id; /* FAKEAI_RESPONSES: echoed; NULL = null */
    const char *model;          /* echoed in "model"; borrowed (copied) */
    const char *content;        /* the answer text; borrowed (copied) */
    unsigned chunks;            /* content is cut into this many pieces (tokens); 0 = by words */
    uint32_t latency_ms;        /* before the response headers */
    uint32_t chunk_delay_ms;    /* before each content piece (non-stream: added up) */
    int stream;                 /* 1: SSE chat.completion.chunk events */
    int include_usage;          /* stream: a usage chunk with empty choices before [DONE] */
    long prompt_tokens;
    int status;                 /* 0 or 200: success; otherwise an OpenAI error with it */
    const char *error_message;  /* NULL: a generic message for status */
    long retry_after;           /* > 0: a Retry-After header (seconds) */
    enum fakeai_fail fail;
    unsigned die_after;         /* FAKEAI_FAIL_DIE_MID_STREAM: content chunks sent first */
    const char *extra_headers;  /* NULL or header lines ending in "\r\n"; copied */
    int stamp;                  /* stream: each piece's text becomes " mockts:" and the send
                                 * time (CLOCK_MONOTONIC ns, 19 digits), for latency benches */
    int logprobs;               /* FAKEAI_CHAT: choices[].logprobs.content[], one entry per
                                 * piece (token, logprob, bytes, top_logprobs), as OpenAI does
                                 * for "logprobs": true; else "logprobs": null */
    unsigned top_logprobs;      /* alternatives per token (0-20): the token, then "<alt N>" */
    double logprob;             /* every token's log-probability (<= 0) */
};

/* Answers with a chat completion, after the delays in c; copies everything it needs. */
void fakeai_req_chat(struct fakeai_req *r, const struct fakeai_chat *c);

/* Counts the UTF-8 safe pieces fakeai_req_chat would cut text into for chunks. */
unsigned fakeai_count_pieces(const char *text, unsigned chunks);

/* Appends s as a JSON string literal (quotes included) to the growing buffer *buf. */
void fakeai_json_str(char **buf, size_t *len, size_t *cap, const char *s, size_t n);

#endif
