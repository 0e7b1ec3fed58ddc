/* fakeai.c - a small libuv HTTP/1.1 server that fakes OpenAI chat completions (see fakeai.h).
 *
 * One connection is one struct fakeai_req: requests on a keep-alive connection are served
 * one after another (no pipelining), so the connection doubles as the request. Each
 * connection owns one timer for the answer's delays; nothing ever blocks a loop. Out of
 * memory aborts, as everywhere in triage. */
#include "fakeai.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

enum {
    MAX_HEADERS = 64,
    MAX_HEADER_BYTES = 64 * 1024,
    READ_CHUNK = 64 * 1024,
};

struct fakeai_loop {
    struct fakeai_server *srv;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t wake;             /* fakeai_server_stop() -> close everything */
    uv_signal_t sigint, sigterm; /* loop 0 only */
    uv_thread_t thread;
    int has_loop, has_listener, has_wake, has_signals, thread_started;
    struct fakeai_req *conns;    /* open connections, for shutdown */
    char rbuf[READ_CHUNK];       /* every read lands here first, then is copied */
};

struct fakeai_server {
    char *listen;
    uint16_t port;
    unsigned n_loops;
    size_t max_body;
    fakeai_handler_fn *handler;
    void *arg;
    struct fakeai_loop *loops;
    atomic_int stopping;

    atomic_long requests, active, completed, cancelled, aborted, ids;
    pthread_mutex_t last_mu;
    char *last;                  /* last counted request body, or NULL */
    size_t last_len;
};

struct chat;

struct hdr {
    size_t name, value; /* offsets into buf: it may move while the body arrives */
};

/* How a connection ends, for the counters. */
enum end_kind { END_IDLE, END_CANCELLED, END_ABORTED };

struct fakeai_req {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct fakeai_loop *lp;
    struct fakeai_req *prev, *next; /* in lp->conns */
    int handles;                    /* open uv handles; freed when 0 */
    int closing;

    char *buf;                      /* bytes received and not yet consumed */
    size_t len, cap;

    /* the request being parsed or served */
    int parsed;                     /* headers parsed in place (buf is NUL-split) */
    size_t head_len;                /* bytes of request line + headers */
    size_t body_len;
    char saved;                     /* byte after the body, replaced by the NUL */
    size_t method, path;            /* offsets into buf */
    size_t query;                   /* offset of the query (after '?'), 0: none */
    struct hdr hdrs[MAX_HEADERS];
    unsigned n_hdrs;
    int keep_alive;
    int sent_continue;
    int busy;                       /* handed to the handler, not answered yet */
    int counted;                    /* in the stats */

    int pending_writes;
    int close_after;                /* close once the writes are flushed */
    struct chat *chat;
};

struct chat {
    struct fakeai_chat c;           /* strings point into the copies below */
    char *model, *content, *extra, *errmsg, *tool_name, *tool_input, *prev_id;
    unsigned seq;                   /* FAKEAI_RESPONSES: the next event's sequence_number */
    uint32_t *offs;                 /* piece i is content[offs[i], offs[i+1]) */
    unsigned n;
    unsigned next;                  /* next piece to stream */
    long id;
    long created;
};

/* ---- small growable buffers ---------------------------------------------------------- */

static void *
xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort(); /* out of memory: see the file comment */
    return p;
}

static void
buf_reserve(char **buf, size_t *len, size_t *cap, size_t more)
{
    if (*len + more + 1 <= *cap)
        return;
    size_t ncap = *cap ? *cap : 256;
    while (ncap < *len + more + 1)
        ncap *= 2;
    *buf = xrealloc(*buf, ncap);
    *cap = ncap;
}

static void
buf_add(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    buf_reserve(buf, len, cap, n);
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
}

/* Appends a string literal. */
#define ADD_LIT(b, len, cap, lit) buf_add(b, len, cap, lit, sizeof(lit) - 1)

static void buf_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
buf_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    buf_reserve(buf, len, cap, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(*buf + *len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *len += (size_t)n;
}

void
fakeai_json_str(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    buf_reserve(buf, len, cap, n + 2);
    (*buf)[(*len)++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[7];
        size_t el = 0;
        switch (ch) {
        case '"': esc[0] = '\\'; esc[1] = '"'; el = 2; break;
        case '\\': esc[0] = '\\'; esc[1] = '\\'; el = 2; break;
        case '\n': esc[0] = '\\'; esc[1] = 'n'; el = 2; break;
        case '\r': esc[0] = '\\'; esc[1] = 'r'; el = 2; break;
        case '\t': esc[0] = '\\'; esc[1] = 't'; el = 2; break;
        default:
            if (ch < 0x20) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[ch >> 4];
                esc[5] = hex[ch & 15];
                el = 6;
            }
        }
        if (el) {
            buf_reserve(buf, len, cap, el + 1);
            memcpy(*buf + *len, esc, el);
            *len += el;
        } else {
            buf_reserve(buf, len, cap, 2);
            (*buf)[(*len)++] = (char)ch;
        }
    }
    (*buf)[(*len)++] = '"';
    (*buf)[*len] = '\0';
}

/* ---- splitting the answer into pieces ("tokens") ------------------------------------- */

static int
is_space(unsigned char ch)
{
    return ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r' || ch == '\f' || ch == '\v';
}

/* Fills offs (if not NULL, room for len+1 entries) with piece starts plus the end offset;
 * returns the number of pieces. By words: each piece is a word with the whitespace in
 * front of it. In n pieces: cuts at about equal byte offsets, never inside a UTF-8
 * sequence. */
static unsigned
split_pieces(const char *text, size_t len, unsigned chunks, uint32_t *offs)
{
    unsigned n = 0;

    if (len == 0)
        return 0;
    if (chunks == 0) {
        for (size_t i = 0; i < len; i++) {
            if (i == 0 || (is_space((unsigned char)text[i - 1]) == 0 &&
                           is_space((unsigned char)text[i]))) {
                /* a piece starts at 0 and where whitespace follows a non-space, unless
                 * nothing but whitespace remains */
                size_t j = i;
                while (j < len && is_space((unsigned char)text[j]))
                    j++;
                if (i != 0 && j == len)
                    break;
                if (offs)
                    offs[n] = (uint32_t)i;
                n++;
            }
        }
    } else {
        size_t prev = 0;
        for (unsigned k = 0; k < chunks; k++) {
            size_t at = (size_t)((unsigned long long)len * k / chunks);
            while (at < len && ((unsigned char)text[at] & 0xC0) == 0x80)
                at++;
            if (at >= len || (k > 0 && at <= prev))
                continue;
            if (offs)
                offs[n] = (uint32_t)at;
            n++;
            prev = at;
        }
    }
    if (offs)
        offs[n] = (uint32_t)len;
    return n;
}

unsigned
fakeai_count_pieces(const char *text, unsigned chunks)
{
    return split_pieces(text, strlen(text), chunks, NULL);
}

/* ---- connections --------------------------------------------------------------------- */

static void conn_parse(struct fakeai_req *c);

static void
conn_free(struct fakeai_req *c)
{
    if (c->chat) {
        free(c->chat->model);
        free(c->chat->content);
        free(c->chat->extra);
        free(c->chat->errmsg);
        free(c->chat->tool_name);
        free(c->chat->tool_input);
        free(c->chat->prev_id);
        free(c->chat->offs);
        free(c->chat);
    }
    free(c->buf);
    free(c);
}

static void
on_handle_closed(uv_handle_t *h)
{
    struct fakeai_req *c = h->data;

    if (--c->handles == 0)
        conn_free(c);
}

/* The request in progress is no longer active: it moves to the counter `ended`
 * (completed, cancelled or aborted) when it was counted at all. */
static void
end_busy(struct fakeai_req *c, atomic_long *ended)
{
    struct fakeai_server *s = c->lp->srv;

    if (c->busy && c->counted) {
        atomic_fetch_sub(&s->active, 1);
        atomic_fetch_add(ended, 1);
    }
    c->busy = 0;
}

/* The request in progress ends without an answer (how), or an idle connection closes. */
static void
conn_close(struct fakeai_req *c, enum end_kind how)
{
    struct fakeai_server *s = c->lp->srv;

    if (c->closing)
        return;
    c->closing = 1;
    end_busy(c, how == END_ABORTED ? &s->aborted : &s->cancelled);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->lp->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

struct wreq {
    uv_write_t w;
    struct fakeai_req *c;
    size_t len;
    char data[];
};

static void
on_written(uv_write_t *w, int status)
{
    struct wreq *wr = (struct wreq *)w;
    struct fakeai_req *c = wr->c;

    free(wr);
    c->pending_writes--;
    if (status < 0) {
        conn_close(c, END_CANCELLED); /* the client went away (or ECANCELED on close) */
        return;
    }
    if (c->pending_writes == 0 && c->close_after && !c->busy)
        conn_close(c, END_IDLE);
}

/* Sends bufs in order: straight to the socket if it takes them, else queued (copied). */
static void
conn_writev(struct fakeai_req *c, uv_buf_t *bufs, unsigned n)
{
    size_t total = 0, skip = 0;

    if (c->closing)
        return;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (c->pending_writes == 0) {
        int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (r >= 0)
            skip = (size_t)r;
        else if (r != UV_EAGAIN && r != UV_ENOSYS) {
            conn_close(c, END_CANCELLED);
            return;
        }
        if (skip == total)
            return;
    }
    struct wreq *wr = xrealloc(NULL, sizeof(*wr) + total - skip);
    size_t off = 0, pos = 0;
    for (unsigned i = 0; i < n; i++) {
        const char *p = bufs[i].base;
        size_t l = bufs[i].len;
        if (pos + l <= skip) {
            pos += l;
            continue;
        }
        if (pos < skip) {
            p += skip - pos;
            l -= skip - pos;
        }
        pos += bufs[i].len;
        memcpy(wr->data + off, p, l);
        off += l;
    }
    wr->c = c;
    wr->len = off;
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)off);
    if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
        free(wr);
        conn_close(c, END_CANCELLED);
        return;
    }
    c->pending_writes++;
}

static void
conn_write(struct fakeai_req *c, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

    conn_writev(c, &b, 1);
}

/* Drops the connection on purpose (a scripted failure) once what was sent is flushed. */
static void
conn_abort(struct fakeai_req *c)
{
    if (c->closing || !c->busy)
        return;
    end_busy(c, &c->lp->srv->aborted);
    c->close_after = 1;
    if (c->pending_writes == 0)
        conn_close(c, END_IDLE);
}

static void
on_parse_timer(uv_timer_t *t)
{
    conn_parse(t->data);
}

/* The answer to the current request is fully queued: count it and get ready for the
 * next request on this connection. */
static void
conn_finish(struct fakeai_req *c)
{
    if (c->closing || !c->busy)
        return;
    end_busy(c, &c->lp->srv->completed);
    if (c->chat) {
        free(c->chat->model);
        free(c->chat->content);
        free(c->chat->extra);
        free(c->chat->errmsg);
        free(c->chat->tool_name);
        free(c->chat->tool_input);
        free(c->chat->prev_id);
        free(c->chat->offs);
        free(c->chat);
        c->chat = NULL;
    }
    size_t used = c->head_len + c->body_len;
    if (used < c->len)
        c->buf[used] = c->saved;
    c->len -= used;
    memmove(c->buf, c->buf + used, c->len);
    c->parsed = 0;
    c->sent_continue = 0;
    if (!c->keep_alive) {
        c->close_after = 1;
        if (c->pending_writes == 0)
            conn_close(c, END_IDLE);
        return;
    }
    if (c->len == 0) {
        /* idle connections hold no buffer: 10,000 of them must stay small */
        free(c->buf);
        c->buf = NULL;
        c->cap = 0;
    } else {
        uv_timer_start(&c->timer, on_parse_timer, 0, 0); /* not from inside the handler */
    }
}

static const char *
status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

void
fakeai_req_reply(struct fakeai_req *r, int status, const char *content_type,
                 const char *extra_headers, const char *body, size_t len)
{
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s", status,
                     status_text(status), content_type, len, r->keep_alive ? "" : "Connection: close\r\n");
    uv_buf_t bufs[4] = {
        uv_buf_init(head, (unsigned)n),
        uv_buf_init((char *)(extra_headers ? extra_headers : ""),
                    (unsigned)(extra_headers ? strlen(extra_headers) : 0)),
        uv_buf_init("\r\n", 2),
        uv_buf_init((char *)body, (unsigned)len),
    };
    conn_writev(r, bufs, 4);
    conn_finish(r);
}

static const char *
error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static void
reply_error(struct fakeai_req *r, int status, const char *message, const char *extra)
{
    char *b = NULL;
    size_t len = 0, cap = 0;

    ADD_LIT(&b, &len, &cap, "{\"error\":{\"message\":");
    fakeai_json_str(&b, &len, &cap, message, strlen(message));
    buf_printf(&b, &len, &cap, ",\"type\":\"%s\",\"param\":null,\"code\":%s}}", error_type(status),
               status == 429 ? "\"rate_limit_exceeded\"" : "null");
    fakeai_req_reply(r, status, "application/json", extra, b, len);
    free(b);
}

void
fakeai_req_error(struct fakeai_req *r, int status, const char *message)
{
    reply_error(r, status, message, NULL);
}

static const char *
anthropic_error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

static void
reply_error_anthropic(struct fakeai_req *r, int status, const char *message, const char *extra)
{
    char *b = NULL;
    size_t len = 0, cap = 0;

    buf_printf(&b, &len, &cap, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":",
               anthropic_error_type(status));
    fakeai_json_str(&b, &len, &cap, message, strlen(message));
    ADD_LIT(&b, &len, &cap, "}}");
    fakeai_req_reply(r, status, "application/json", extra, b, len);
    free(b);
}

void
fakeai_req_error_anthropic(struct fakeai_req *r, int status, const char *message)
{
    reply_error_anthropic(r, status, message, NULL);
}

/* ---- chat completions ---------------------------------------------------------------- */

static void chat_step(struct fakeai_req *c);

static void
on_chat_timer(uv_timer_t *t)
{
    chat_step(t->data);
}

/* Phases kept in chat->next: waiting for the latency, the non-stream body, else the next piece. */
#define PH_LATENCY 0xFFFFFFFEu
#define PH_BODY 0xFFFFFFFDu

static void
append_usage(char **b, size_t *len, size_t *cap, const struct chat *ch)
{
    buf_printf(b, len, cap, "\"usage\":{\"prompt_tokens\":%ld,\"completion_tokens\":%u,"
               "\"total_tokens\":%ld}", ch->c.prompt_tokens, ch->n,
               ch->c.prompt_tokens + (long)ch->n);
}

/* Appends the "logprobs" value of pieces [i0, i1): null unless asked, else OpenAI's
 * {"content": [{"token", "logprob", "bytes", "top_logprobs"}], "refusal": null}. */
static void
append_logprobs(char **b, size_t *len, size_t *cap, const struct chat *ch, unsigned i0,
                unsigned i1)
{
    if (!ch->c.logprobs) {
        ADD_LIT(b, len, cap, "null");
        return;
    }
    ADD_LIT(b, len, cap, "{\"content\":[");
    for (unsigned i = i0; i < i1; i++) {
        const char *tok = ch->c.content + ch->offs[i];
        size_t tlen = ch->offs[i + 1] - ch->offs[i];
        if (i > i0)
            ADD_LIT(b, len, cap, ",");
        ADD_LIT(b, len, cap, "{\"token\":");
        fakeai_json_str(b, len, cap, tok, tlen);
        buf_printf(b, len, cap, ",\"logprob\":%.6g,\"bytes\":[", ch->c.logprob);
        for (size_t k = 0; k < tlen; k++)
            buf_printf(b, len, cap, "%s%u", k ? "," : "", (unsigned)(unsigned char)tok[k]);
        ADD_LIT(b, len, cap, "],\"top_logprobs\":[");
        for (unsigned k = 0; k < ch->c.top_logprobs; k++) {
            if (k == 0) {
                ADD_LIT(b, len, cap, "{\"token\":");
                fakeai_json_str(b, len, cap, tok, tlen);
            } else {
                buf_printf(b, len, cap, ",{\"token\":\"<alt %u>\"", k);
            }
            /* the alternatives each a nat less likely than the one before */
            buf_printf(b, len, cap, ",\"logprob\":%.6g,\"bytes\":null}", ch->c.logprob - k);
        }
        ADD_LIT(b, len, cap, "]}");
    }
    ADD_LIT(b, len, cap, "],\"refusal\":null}");
}

static void
chunk_head(char **b, size_t *len, size_t *cap, const struct chat *ch)
{
    ADD_LIT(b, len, cap, "data: {\"id\":\"chatcmpl-mock-");
    buf_printf(b, len, cap, "%ld\",\"object\":\"chat.completion.chunk\",\"created\":%ld,\"model\":",
               ch->id, ch->created);
    fakeai_json_str(b, len, cap, ch->c.model, strlen(ch->c.model));
    ADD_LIT(b, len, cap, ",\"system_fingerprint\":null,");
}

/* Sends one SSE event as one HTTP chunk. */
static void
send_event(struct fakeai_req *c, const char *ev, size_t len)
{
    char size[24];
    int n = snprintf(size, sizeof(size), "%zx\r\n", len);
    uv_buf_t bufs[3] = {
        uv_buf_init(size, (unsigned)n),
        uv_buf_init((char *)ev, (unsigned)len),
        uv_buf_init("\r\n", 2),
    };
    conn_writev(c, bufs, 3);
}

/* The id of a Responses answer: the port names the mock that holds its state. */
static void
response_id(char **b, size_t *len, size_t *cap, struct fakeai_req *c)
{
    buf_printf(b, len, cap, "\"resp_mock%u_%ld\"", (unsigned)c->lp->srv->port, c->chat->id);
}

/* The whole Responses answer object (also the payload of its created and completed
 * events: status "in_progress" without output). */
static void
response_object(char **b, size_t *len, size_t *cap, struct fakeai_req *c, int done)
{
    struct chat *ch = c->chat;

    ADD_LIT(b, len, cap, "{\"id\":");
    response_id(b, len, cap, c);
    buf_printf(b, len, cap, ",\"object\":\"response\",\"created_at\":%ld,\"status\":\"%s\","
               "\"model\":", ch->created, done ? "completed" : "in_progress");
    fakeai_json_str(b, len, cap, ch->c.model, strlen(ch->c.model));
    ADD_LIT(b, len, cap, ",\"previous_response_id\":");
    if (ch->c.previous_response_id)
        fakeai_json_str(b, len, cap, ch->c.previous_response_id, strlen(ch->c.previous_response_id));
    else
        ADD_LIT(b, len, cap, "null");
    ADD_LIT(b, len, cap, ",\"output\":[");
    if (done) {
        buf_printf(b, len, cap, "{\"type\":\"message\",\"id\":\"msg_mock_%ld\",\"status\":"
                   "\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\","
                   "\"annotations\":[],\"text\":", ch->id);
        fakeai_json_str(b, len, cap, ch->c.content, strlen(ch->c.content));
        ADD_LIT(b, len, cap, "}]}");
    }
    ADD_LIT(b, len, cap, "],\"usage\":");
    if (done)
        buf_printf(b, len, cap, "{\"input_tokens\":%ld,\"output_tokens\":%u,\"total_tokens\":%ld,"
                   "\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens_details\":"
                   "{\"reasoning_tokens\":0}}", ch->c.prompt_tokens, ch->n,
                   ch->c.prompt_tokens + (long)ch->n);
    else
        ADD_LIT(b, len, cap, "null");
    ADD_LIT(b, len, cap, "}");
}

/* A typed Responses event: "event: type" and its data, with the next sequence_number;
 * rest is the members after them (or ""). */
static void
response_event(char **b, size_t *len, size_t *cap, struct chat *ch, const char *type,
               const char *rest)
{
    buf_printf(b, len, cap, "event: %s\ndata: {\"type\":\"%s\",\"sequence_number\":%u%s%s",
               type, type, ch->seq++, *rest ? "," : "", rest);
}

/* The Anthropic message object (the answer, or message_start's payload when !done). */
static void
message_object(char **b, size_t *len, size_t *cap, struct chat *ch, int done)
{
    buf_printf(b, len, cap, "{\"id\":\"msg_mock_%ld\",\"type\":\"message\",\"role\":\"assistant\","
               "\"model\":", ch->id);
    fakeai_json_str(b, len, cap, ch->c.model, strlen(ch->c.model));
    ADD_LIT(b, len, cap, ",\"content\":[");
    if (done) {
        ADD_LIT(b, len, cap, "{\"type\":\"text\",\"text\":");
        fakeai_json_str(b, len, cap, ch->c.content, strlen(ch->c.content));
        ADD_LIT(b, len, cap, "}");
        if (ch->c.tool_name) {
            buf_printf(b, len, cap, ",{\"type\":\"tool_use\",\"id\":\"toolu_mock_%ld\",\"name\":",
                       ch->id);
            fakeai_json_str(b, len, cap, ch->c.tool_name, strlen(ch->c.tool_name));
            buf_printf(b, len, cap, ",\"input\":%s}", ch->c.tool_input);
        }
    }
    buf_printf(b, len, cap, "],\"stop_reason\":%s,\"stop_sequence\":null,\"usage\":"
               "{\"input_tokens\":%ld,\"output_tokens\":%u}}",
               !done ? "null" : ch->c.tool_name ? "\"tool_use\"" : "\"end_turn\"",
               ch->c.prompt_tokens, done ? ch->n : 1u);
}

/* The events a typed stream opens with, sent with the response head. */
static void
send_stream_start(struct fakeai_req *c)
{
    struct chat *ch = c->chat;
    char *b = NULL, *o = NULL;
    size_t len = 0, cap = 0, olen = 0, ocap = 0;

    if (ch->c.format == FAKEAI_RESPONSES) {
        ADD_LIT(&o, &olen, &ocap, "\"response\":");
        response_object(&o, &olen, &ocap, c, 0);
        response_event(&b, &len, &cap, ch, "response.created", o);
        ADD_LIT(&b, &len, &cap, "}\n\n");
        response_event(&b, &len, &cap, ch, "response.in_progress", o);
        ADD_LIT(&b, &len, &cap, "}\n\n");
        response_event(&b, &len, &cap, ch, "response.output_item.added", "");
        buf_printf(&b, &len, &cap, ",\"output_index\":0,\"item\":{\"type\":\"message\",\"id\":"
                   "\"msg_mock_%ld\",\"status\":\"in_progress\",\"role\":\"assistant\","
                   "\"content\":[]}}\n\n", ch->id);
        response_event(&b, &len, &cap, ch, "response.content_part.added", "");
        buf_printf(&b, &len, &cap, ",\"item_id\":\"msg_mock_%ld\",\"output_index\":0,"
                   "\"content_index\":0,\"part\":{\"type\":\"output_text\",\"annotations\":[],"
                   "\"text\":\"\"}}\n\n", ch->id);
    } else if (ch->c.format == FAKEAI_MESSAGES) {
        ADD_LIT(&b, &len, &cap, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":");
        message_object(&b, &len, &cap, ch, 0);
        ADD_LIT(&b, &len, &cap, "}\n\nevent: content_block_start\ndata: {\"type\":"
                "\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
                "\"text\":\"\"}}\n\n");
    }
    if (len)
        send_event(c, b, len);
    free(b);
    free(o);
}

/* One piece of content in the answer's own API. */
static void
piece_text(char **b, size_t *len, size_t *cap, struct chat *ch, unsigned i)
{
    fakeai_json_str(b, len, cap, ch->c.content + ch->offs[i], ch->offs[i + 1] - ch->offs[i]);
}

static void
send_piece(struct fakeai_req *c, unsigned i)
{
    struct chat *ch = c->chat;
    char *b = NULL;
    size_t len = 0, cap = 0;

    if (ch->c.format == FAKEAI_COMPLETIONS) {
        buf_printf(&b, &len, &cap, "data: {\"id\":\"cmpl-mock-%ld\",\"object\":\"text_completion\","
                   "\"created\":%ld,\"model\":", ch->id, ch->created);
        fakeai_json_str(&b, &len, &cap, ch->c.model, strlen(ch->c.model));
        ADD_LIT(&b, &len, &cap, ",\"choices\":[{\"text\":");
        piece_text(&b, &len, &cap, ch, i);
        ADD_LIT(&b, &len, &cap, ",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n");
        send_event(c, b, len);
        free(b);
        return;
    }
    if (ch->c.format == FAKEAI_RESPONSES) {
        response_event(&b, &len, &cap, ch, "response.output_text.delta", "");
        buf_printf(&b, &len, &cap, ",\"item_id\":\"msg_mock_%ld\",\"output_index\":0,"
                   "\"content_index\":0,\"logprobs\":[],\"delta\":", ch->id);
        piece_text(&b, &len, &cap, ch, i);
        ADD_LIT(&b, &len, &cap, "}\n\n");
        send_event(c, b, len);
        free(b);
        return;
    }
    if (ch->c.format == FAKEAI_MESSAGES) {
        ADD_LIT(&b, &len, &cap, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":");
        piece_text(&b, &len, &cap, ch, i);
        ADD_LIT(&b, &len, &cap, "}}\n\n");
        send_event(c, b, len);
        free(b);
        return;
    }
    chunk_head(&b, &len, &cap, ch);
    buf_printf(&b, &len, &cap, "\"choices\":[{\"index\":0,\"delta\":{%s\"content\":",
               i == 0 ? "\"role\":\"assistant\"," : "");
    if (ch->c.stamp) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        buf_printf(&b, &len, &cap, "\" mockts:%019lld\"",
                   (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    } else {
        fakeai_json_str(&b, &len, &cap, ch->c.content + ch->offs[i], ch->offs[i + 1] - ch->offs[i]);
    }
    ADD_LIT(&b, &len, &cap, "},\"logprobs\":");
    append_logprobs(&b, &len, &cap, ch, i, i + 1);
    ADD_LIT(&b, &len, &cap, ",\"finish_reason\":null}]}\n\n");
    send_event(c, b, len);
    free(b);
}

/* The events a typed stream ends with. */
static void
typed_stream_end(char **b, size_t *len, size_t *cap, struct fakeai_req *c)
{
    struct chat *ch = c->chat;
    char *o = NULL;
    size_t olen = 0, ocap = 0;

    if (ch->c.format == FAKEAI_RESPONSES) {
        response_event(b, len, cap, ch, "response.output_text.done", "");
        buf_printf(b, len, cap, ",\"item_id\":\"msg_mock_%ld\",\"output_index\":0,"
                   "\"content_index\":0,\"logprobs\":[],\"text\":", ch->id);
        fakeai_json_str(b, len, cap, ch->c.content, strlen(ch->c.content));
        ADD_LIT(b, len, cap, "}\n\n");
        ADD_LIT(&o, &olen, &ocap, "\"response\":");
        response_object(&o, &olen, &ocap, c, 1);
        response_event(b, len, cap, ch, "response.completed", o);
        ADD_LIT(b, len, cap, "}\n\n");
        free(o);
        return;
    }
    ADD_LIT(b, len, cap, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\","
            "\"index\":0}\n\n");
    if (ch->c.tool_name) {
        buf_printf(b, len, cap, "event: content_block_start\ndata: {\"type\":\"content_block_start\","
                   "\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_mock_%ld\","
                   "\"name\":", ch->id);
        fakeai_json_str(b, len, cap, ch->c.tool_name, strlen(ch->c.tool_name));
        ADD_LIT(b, len, cap, ",\"input\":{}}}\n\nevent: content_block_delta\ndata: {\"type\":"
                "\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
                "\"partial_json\":");
        fakeai_json_str(b, len, cap, ch->c.tool_input, strlen(ch->c.tool_input));
        ADD_LIT(b, len, cap, "}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\","
                "\"index\":1}\n\n");
    }
    buf_printf(b, len, cap, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
               "{\"stop_reason\":\"%s\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":%u}}"
               "\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
               ch->c.tool_name ? "tool_use" : "end_turn", ch->n);
}

static void
send_stream_end(struct fakeai_req *c)
{
    struct chat *ch = c->chat;
    char *b = NULL;
    size_t len = 0, cap = 0;

    if (ch->c.format == FAKEAI_RESPONSES || ch->c.format == FAKEAI_MESSAGES) {
        typed_stream_end(&b, &len, &cap, c);
        send_event(c, b, len);
        conn_write(c, "0\r\n\r\n", 5);
        free(b);
        return;
    }
    if (ch->c.format == FAKEAI_COMPLETIONS) {
        buf_printf(&b, &len, &cap, "data: {\"id\":\"cmpl-mock-%ld\",\"object\":\"text_completion\","
                   "\"created\":%ld,\"model\":", ch->id, ch->created);
        fakeai_json_str(&b, &len, &cap, ch->c.model, strlen(ch->c.model));
        ADD_LIT(&b, &len, &cap, ",\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,"
                "\"finish_reason\":\"stop\"}]}\n\n");
        if (ch->c.include_usage) {
            buf_printf(&b, &len, &cap, "data: {\"id\":\"cmpl-mock-%ld\",\"object\":"
                       "\"text_completion\",\"created\":%ld,\"model\":", ch->id, ch->created);
            fakeai_json_str(&b, &len, &cap, ch->c.model, strlen(ch->c.model));
            ADD_LIT(&b, &len, &cap, ",\"choices\":[],");
            append_usage(&b, &len, &cap, ch);
            ADD_LIT(&b, &len, &cap, "}\n\n");
        }
        ADD_LIT(&b, &len, &cap, "data: [DONE]\n\n");
        send_event(c, b, len);
        conn_write(c, "0\r\n\r\n", 5);
        free(b);
        return;
    }
    chunk_head(&b, &len, &cap, ch);
    buf_printf(&b, &len, &cap, "\"choices\":[{\"index\":0,\"delta\":{%s},\"logprobs\":null,"
               "\"finish_reason\":\"stop\"}]}\n\n", ch->n == 0 ? "\"role\":\"assistant\",\"content\":\"\"" : "");
    if (ch->c.include_usage) {
        chunk_head(&b, &len, &cap, ch);
        ADD_LIT(&b, &len, &cap, "\"choices\":[],");
        append_usage(&b, &len, &cap, ch);
        ADD_LIT(&b, &len, &cap, "}\n\n");
    }
    ADD_LIT(&b, &len, &cap, "data: [DONE]\n\n");
    send_event(c, b, len);
    conn_write(c, "0\r\n\r\n", 5);
    free(b);
}

static void
send_full(struct fakeai_req *c)
{
    struct chat *ch = c->chat;
    char *b = NULL;
    size_t len = 0, cap = 0;

    if (ch->c.format != FAKEAI_CHAT) {
        if (ch->c.format == FAKEAI_RESPONSES) {
            response_object(&b, &len, &cap, c, 1);
        } else if (ch->c.format == FAKEAI_MESSAGES) {
            message_object(&b, &len, &cap, ch, 1);
        } else {
            buf_printf(&b, &len, &cap, "{\"id\":\"cmpl-mock-%ld\",\"object\":\"text_completion\","
                       "\"created\":%ld,\"model\":", ch->id, ch->created);
            fakeai_json_str(&b, &len, &cap, ch->c.model, strlen(ch->c.model));
            ADD_LIT(&b, &len, &cap, ",\"choices\":[{\"text\":");
            fakeai_json_str(&b, &len, &cap, ch->c.content, strlen(ch->c.content));
            ADD_LIT(&b, &len, &cap, ",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}],");
            append_usage(&b, &len, &cap, ch);
            ADD_LIT(&b, &len, &cap, "}");
        }
        fakeai_req_reply(c, 200, "application/json", ch->c.extra_headers, b, len);
        free(b);
        return;
    }

    buf_printf(&b, &len, &cap, "{\"id\":\"chatcmpl-mock-%ld\",\"object\":\"chat.completion\","
               "\"created\":%ld,\"model\":", ch->id, ch->created);
    fakeai_json_str(&b, &len, &cap, ch->c.model, strlen(ch->c.model));
    ADD_LIT(&b, &len, &cap, ",\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"message\":"
            "{\"role\":\"assistant\",\"content\":");
    fakeai_json_str(&b, &len, &cap, ch->c.content, strlen(ch->c.content));
    ADD_LIT(&b, &len, &cap, "},\"logprobs\":");
    append_logprobs(&b, &len, &cap, ch, 0, ch->n);
    ADD_LIT(&b, &len, &cap, ",\"finish_reason\":\"stop\"}],");
    append_usage(&b, &len, &cap, ch);
    ADD_LIT(&b, &len, &cap, "}");
    fakeai_req_reply(c, 200, "application/json", ch->c.extra_headers, b, len);
    free(b);
}

static void
chat_step(struct fakeai_req *c)
{
    struct chat *ch = c->chat;

    for (;;) {
        if (ch->next == PH_LATENCY) {
            if (ch->c.fail == FAKEAI_FAIL_CLOSE) {
                conn_abort(c);
                return;
            }
            if (ch->c.status != 0 && ch->c.status != 200) {
                char *extra = NULL;
                size_t elen = 0, ecap = 0;
                buf_printf(&extra, &elen, &ecap, "%s",
                           ch->c.extra_headers ? ch->c.extra_headers : "");
                if (ch->c.retry_after > 0)
                    buf_printf(&extra, &elen, &ecap, "Retry-After: %ld\r\n", ch->c.retry_after);
                char msg[128];
                if (!ch->c.error_message)
                    snprintf(msg, sizeof(msg), "mock error: HTTP %d", ch->c.status);
                if (ch->c.format == FAKEAI_MESSAGES)
                    reply_error_anthropic(c, ch->c.status,
                                          ch->c.error_message ? ch->c.error_message : msg, extra);
                else
                    reply_error(c, ch->c.status, ch->c.error_message ? ch->c.error_message : msg,
                                extra);
                free(extra);
                return;
            }
            if (!ch->c.stream) {
                ch->next = PH_BODY;
                uint64_t wait = (uint64_t)ch->c.chunk_delay_ms * ch->n;
                if (wait) {
                    uv_timer_start(&c->timer, on_chat_timer, wait, 0);
                    return;
                }
                continue;
            }
            char head[256];
            int n = snprintf(head, sizeof(head),
                             "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n%s",
                             c->keep_alive ? "" : "Connection: close\r\n");
            uv_buf_t bufs[3] = {
                uv_buf_init(head, (unsigned)n),
                uv_buf_init((char *)(ch->c.extra_headers ? ch->c.extra_headers : ""),
                            (unsigned)(ch->c.extra_headers ? strlen(ch->c.extra_headers) : 0)),
                uv_buf_init("\r\n", 2),
            };
            conn_writev(c, bufs, 3);
            send_stream_start(c);
            ch->next = 0;
            if (ch->c.chunk_delay_ms && ch->n > 0) {
                uv_timer_start(&c->timer, on_chat_timer, ch->c.chunk_delay_ms, 0);
                return;
            }
            continue;
        }
        if (ch->next == PH_BODY) {
            send_full(c);
            return;
        }
        /* streaming: ch->next is the next piece */
        if (c->closing)
            return;
        if (ch->c.fail == FAKEAI_FAIL_DIE_MID_STREAM && ch->next >= ch->c.die_after) {
            conn_abort(c);
            return;
        }
        if (ch->next >= ch->n) {
            send_stream_end(c);
            conn_finish(c);
            return;
        }
        send_piece(c, ch->next++);
        if (ch->c.chunk_delay_ms && ch->next < ch->n) {
            uv_timer_start(&c->timer, on_chat_timer, ch->c.chunk_delay_ms, 0);
            return;
        }
    }
}

static char *
dup_or_null(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    return memcpy(xrealloc(NULL, n), s, n);
}

void
fakeai_req_chat(struct fakeai_req *r, const struct fakeai_chat *cfg)
{
    struct chat *ch = xrealloc(NULL, sizeof(*ch));
    const char *content = cfg->content ? cfg->content : "";
    size_t clen = strlen(content);

    memset(ch, 0, sizeof(*ch));
    ch->c = *cfg;
    ch->model = dup_or_null(cfg->model ? cfg->model : "");
    ch->content = dup_or_null(content);
    ch->extra = dup_or_null(cfg->extra_headers);
    ch->errmsg = dup_or_null(cfg->error_message);
    ch->tool_name = dup_or_null(cfg->tool_name);
    ch->tool_input = dup_or_null(cfg->tool_name ? (cfg->tool_input ? cfg->tool_input : "{}") : NULL);
    ch->prev_id = dup_or_null(cfg->previous_response_id);
    ch->c.tool_name = ch->tool_name;
    ch->c.tool_input = ch->tool_input;
    ch->c.previous_response_id = ch->prev_id;
    ch->c.model = ch->model;
    ch->c.content = ch->content;
    ch->c.extra_headers = ch->extra;
    ch->c.error_message = ch->errmsg;
    ch->offs = xrealloc(NULL, (clen + 2) * sizeof(uint32_t));
    ch->n = split_pieces(ch->content, clen, cfg->chunks, ch->offs);
    ch->next = PH_LATENCY;
    ch->id = atomic_fetch_add(&r->lp->srv->ids, 1) + 1;
    ch->created = (long)time(NULL);
    r->chat = ch;
    if (cfg->fail == FAKEAI_FAIL_HANG)
        return; /* until the client gives up: counted as cancelled then */
    if (cfg->latency_ms)
        uv_timer_start(&r->timer, on_chat_timer, cfg->latency_ms, 0);
    else
        chat_step(r);
}

/* ---- request parsing ----------------------------------------------------------------- */

static void
remember_body(struct fakeai_server *s, const char *body, size_t len)
{
    char *copy = xrealloc(NULL, len + 1);

    memcpy(copy, body, len);
    copy[len] = '\0';
    pthread_mutex_lock(&s->last_mu);
    char *old = s->last;
    s->last = copy;
    s->last_len = len;
    pthread_mutex_unlock(&s->last_mu);
    free(old);
}

/* Answers a request that could not be parsed and closes the connection after it. */
static void
conn_refuse(struct fakeai_req *c, int status, const char *message)
{
    c->keep_alive = 0;
    c->busy = 1;
    c->counted = 0;
    c->head_len = c->len; /* conn_finish consumes everything */
    c->body_len = 0;
    reply_error(c, status, message, NULL);
}

static char *
trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    return s;
}

/* Parses the request line and headers in place. Returns 0, or an HTTP status. */
static int
parse_head(struct fakeai_req *c, char *end)
{
    char *line = c->buf, *nl;
    int http10 = 0;

    *end = '\0'; /* the first \r of the final \r\n\r\n */
    nl = strstr(line, "\r\n");
    if (nl)
        *nl = '\0';
    char *sp1 = strchr(line, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2)
        return 400;
    *sp1 = '\0';
    *sp2 = '\0';
    c->method = 0;
    char *path = sp1 + 1;
    char *q = strchr(path, '?');
    if (q)
        *q = '\0';
    c->path = (size_t)(path - c->buf);
    c->query = q ? (size_t)(q + 1 - c->buf) : 0;
    if (strncmp(sp2 + 1, "HTTP/1.", 7) != 0)
        return 400;
    http10 = sp2[8] == '0';
    c->keep_alive = !http10;
    c->n_hdrs = 0;
    c->body_len = 0;
    int chunked = 0;
    while (nl) {
        line = nl + 2;
        nl = strstr(line, "\r\n");
        if (nl)
            *nl = '\0';
        char *colon = strchr(line, ':');
        if (!colon)
            return 400;
        *colon = '\0';
        char *name = trim(line), *value = trim(colon + 1);
        if (c->n_hdrs == MAX_HEADERS)
            return 431;
        c->hdrs[c->n_hdrs].name = (size_t)(name - c->buf);
        c->hdrs[c->n_hdrs].value = (size_t)(value - c->buf);
        c->n_hdrs++;
        if (strcasecmp(name, "content-length") == 0) {
            char *e;
            unsigned long long v = strtoull(value, &e, 10);
            if (e == value || *e)
                return 400;
            if (v > c->lp->srv->max_body)
                return 413;
            c->body_len = (size_t)v;
        } else if (strcasecmp(name, "connection") == 0) {
            if (strcasecmp(value, "close") == 0)
                c->keep_alive = 0;
            else if (strcasecmp(value, "keep-alive") == 0)
                c->keep_alive = 1;
        } else if (strcasecmp(name, "transfer-encoding") == 0) {
            chunked = 1;
        }
    }
    if (chunked)
        return 411;
    return 0;
}

static void
conn_parse(struct fakeai_req *c)
{
    struct fakeai_server *s = c->lp->srv;

    if (c->busy || c->closing || c->close_after)
        return;
    if (!c->parsed) {
        char *end = c->len >= 4 ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (!end) {
            if (c->len > MAX_HEADER_BYTES)
                conn_refuse(c, 431, "request headers too large");
            return;
        }
        c->head_len = (size_t)(end - c->buf) + 4;
        int st = parse_head(c, end);
        if (st) {
            conn_refuse(c, st, st == 411 ? "chunked request bodies are not supported"
                               : st == 413 ? "request body too large"
                               : "malformed request");
            return;
        }
        c->parsed = 1;
    }
    if (c->len < c->head_len + c->body_len) {
        if (!c->sent_continue && fakeai_req_header(c, "expect")) {
            c->sent_continue = 1;
            conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        }
        return;
    }
    /* NUL-terminate the body, keeping the byte that may follow it */
    size_t end = c->head_len + c->body_len;
    buf_reserve(&c->buf, &c->len, &c->cap, 0);
    c->saved = c->buf[end];
    c->buf[end] = '\0';
    c->busy = 1;
    c->counted = strncmp(c->buf + c->path, "/_mock/", 7) != 0;
    if (c->counted) {
        atomic_fetch_add(&s->requests, 1);
        atomic_fetch_add(&s->active, 1);
        remember_body(s, c->buf + c->head_len, c->body_len);
    }
    s->handler(c, s->arg);
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct fakeai_req *c = h->data;

    *buf = uv_buf_init(c->lp->rbuf, sizeof(c->lp->rbuf));
}

static void
on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct fakeai_req *c = st->data;

    if (nread < 0) {
        conn_close(c, END_CANCELLED);
        return;
    }
    if (nread == 0)
        return;
    if (c->busy && c->len > MAX_HEADER_BYTES + c->lp->srv->max_body) {
        conn_close(c, END_CANCELLED); /* a client flooding us while we answer */
        return;
    }
    buf_add(&c->buf, &c->len, &c->cap, buf->base, (size_t)nread);
    conn_parse(c);
}

static void
on_connection(uv_stream_t *server, int status)
{
    struct fakeai_loop *lp = server->data;

    if (status < 0)
        return;
    struct fakeai_req *c = xrealloc(NULL, sizeof(*c));
    memset(c, 0, sizeof(*c));
    c->lp = lp;
    uv_tcp_init(&lp->loop, &c->tcp);
    uv_timer_init(&lp->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    c->next = lp->conns;
    if (lp->conns)
        lp->conns->prev = c;
    lp->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c, END_IDLE);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- request accessors --------------------------------------------------------------- */

const char *
fakeai_req_method(const struct fakeai_req *r)
{
    return r->buf + r->method;
}

const char *
fakeai_req_path(const struct fakeai_req *r)
{
    return r->buf + r->path;
}

const char *
fakeai_req_query(const struct fakeai_req *r)
{
    return r->query ? r->buf + r->query : "";
}

unsigned
fakeai_req_n_headers(const struct fakeai_req *r)
{
    return r->n_hdrs;
}

const char *
fakeai_req_header_at(const struct fakeai_req *r, unsigned i, const char **name)
{
    *name = r->buf + r->hdrs[i].name;
    return r->buf + r->hdrs[i].value;
}

const char *
fakeai_req_body(const struct fakeai_req *r, size_t *len)
{
    if (len)
        *len = r->body_len;
    return r->buf + r->head_len;
}

const char *
fakeai_req_header(const struct fakeai_req *r, const char *name)
{
    for (unsigned i = 0; i < r->n_hdrs; i++)
        if (strcasecmp(r->buf + r->hdrs[i].name, name) == 0)
            return r->buf + r->hdrs[i].value;
    return NULL;
}

struct fakeai_server *
fakeai_req_server(const struct fakeai_req *r)
{
    return r->lp->srv;
}

/* ---- the server ---------------------------------------------------------------------- */

static void
on_wake(uv_async_t *a)
{
    struct fakeai_loop *lp = a->data;

    if (!atomic_load(&lp->srv->stopping))
        return;
    while (lp->conns)
        conn_close(lp->conns, END_CANCELLED);
    if (lp->has_listener)
        uv_close((uv_handle_t *)&lp->listener, NULL);
    uv_close((uv_handle_t *)&lp->wake, NULL);
    if (lp->has_signals) {
        uv_close((uv_handle_t *)&lp->sigint, NULL);
        uv_close((uv_handle_t *)&lp->sigterm, NULL);
    }
}

static void
on_signal(uv_signal_t *sig, int signum)
{
    fakeai_server_stop(sig->data);
}

static void
loop_thread(void *arg)
{
    struct fakeai_loop *lp = arg;

    uv_run(&lp->loop, UV_RUN_DEFAULT);
}

void
fakeai_server_stop(struct fakeai_server *s)
{
    atomic_store(&s->stopping, 1);
    for (unsigned i = 0; i < s->n_loops; i++)
        if (s->loops[i].has_wake)
            uv_async_send(&s->loops[i].wake);
}

/* Opens a listening socket on addr; with reuseport, others may bind the same port. */
static int
open_listener(struct fakeai_loop *lp, const struct sockaddr *addr, int reuseport)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;

    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (bind(fd, addr, addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                  : sizeof(struct sockaddr_in)) < 0)
        goto fail;
    uv_tcp_init(&lp->loop, &lp->listener);
    lp->has_listener = 1;
    lp->listener.data = lp;
    int r = uv_tcp_open(&lp->listener, fd);
    if (r < 0) {
        close(fd);
        return r;
    }
    return uv_listen((uv_stream_t *)&lp->listener, 4096, on_connection);
fail:;
    int e = -errno;
    close(fd);
    return e;
}

struct fakeai_server *
fakeai_server_new(const struct fakeai_config *cfg, char *err, size_t errlen)
{
    struct fakeai_server *s = xrealloc(NULL, sizeof(*s));
    struct sockaddr_storage ss;
    const char *host = cfg->listen ? cfg->listen : "127.0.0.1";
    int r;

    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->last_mu, NULL);
    s->listen = dup_or_null(host);
    s->n_loops = cfg->threads ? cfg->threads : 1;
    s->max_body = cfg->max_body ? cfg->max_body : 16 * 1024 * 1024;
    s->handler = cfg->handler;
    s->arg = cfg->arg;
    s->loops = xrealloc(NULL, s->n_loops * sizeof(*s->loops));
    memset(s->loops, 0, s->n_loops * sizeof(*s->loops));

    if (uv_ip4_addr(host, cfg->port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, cfg->port, (struct sockaddr_in6 *)&ss) != 0) {
        snprintf(err, errlen, "bad listen address %s", host);
        goto fail;
    }
    for (unsigned i = 0; i < s->n_loops; i++) {
        struct fakeai_loop *lp = &s->loops[i];
        lp->srv = s;
        if ((r = uv_loop_init(&lp->loop)) < 0) {
            snprintf(err, errlen, "uv_loop_init: %s", uv_strerror(r));
            goto fail;
        }
        lp->has_loop = 1;
        uv_async_init(&lp->loop, &lp->wake, on_wake);
        lp->wake.data = lp;
        lp->has_wake = 1;
        if ((r = open_listener(lp, (struct sockaddr *)&ss, s->n_loops > 1)) < 0) {
            snprintf(err, errlen, "listen on %s port %u: %s", host,
                     (unsigned)ntohs(((struct sockaddr_in *)&ss)->sin_port), uv_strerror(r));
            goto fail;
        }
        if (i == 0) {
            struct sockaddr_storage bound;
            int blen = sizeof(bound);
            uv_tcp_getsockname(&lp->listener, (struct sockaddr *)&bound, &blen);
            s->port = ntohs(((struct sockaddr_in *)&bound)->sin_port); /* same offset in v6 */
            ((struct sockaddr_in *)&ss)->sin_port = htons(s->port);
        }
    }
    return s;
fail:
    fakeai_server_destroy(s);
    return NULL;
}

uint16_t
fakeai_server_port(const struct fakeai_server *s)
{
    return s->port;
}

int
fakeai_server_run(struct fakeai_server *s)
{
    struct fakeai_loop *lp0 = &s->loops[0];
    int r = 0;

    signal(SIGPIPE, SIG_IGN);
    uv_signal_init(&lp0->loop, &lp0->sigint);
    uv_signal_init(&lp0->loop, &lp0->sigterm);
    lp0->sigint.data = s;
    lp0->sigterm.data = s;
    uv_signal_start(&lp0->sigint, on_signal, SIGINT);
    uv_signal_start(&lp0->sigterm, on_signal, SIGTERM);
    lp0->has_signals = 1;
    for (unsigned i = 1; i < s->n_loops; i++) {
        if ((r = uv_thread_create(&s->loops[i].thread, loop_thread, &s->loops[i])) < 0) {
            fakeai_server_stop(s);
            break;
        }
        s->loops[i].thread_started = 1;
    }
    if (atomic_load(&s->stopping))
        uv_async_send(&lp0->wake);
    uv_run(&lp0->loop, UV_RUN_DEFAULT);
    for (unsigned i = 1; i < s->n_loops; i++) {
        if (s->loops[i].thread_started)
            uv_thread_join(&s->loops[i].thread);
        s->loops[i].thread_started = 0;
    }
    /* every handle is closed now (on_wake) */
    for (unsigned i = 0; i < s->n_loops; i++) {
        s->loops[i].has_listener = 0;
        s->loops[i].has_wake = 0;
        s->loops[i].has_signals = 0;
    }
    return r;
}

void
fakeai_server_destroy(struct fakeai_server *s)
{
    if (!s)
        return;
    for (unsigned i = 0; s->loops && i < s->n_loops; i++) {
        struct fakeai_loop *lp = &s->loops[i];
        if (!lp->has_loop)
            continue;
        if (lp->has_listener)
            uv_close((uv_handle_t *)&lp->listener, NULL);
        if (lp->has_wake)
            uv_close((uv_handle_t *)&lp->wake, NULL);
        if (lp->has_signals) {
            uv_close((uv_handle_t *)&lp->sigint, NULL);
            uv_close((uv_handle_t *)&lp->sigterm, NULL);
        }
        uv_run(&lp->loop, UV_RUN_DEFAULT);
        uv_loop_close(&lp->loop);
    }
    free(s->loops);
    free(s->listen);
    free(s->last);
    pthread_mutex_destroy(&s->last_mu);
    free(s);
}

json_t *
fakeai_server_stats(struct fakeai_server *s)
{
    json_t *last = NULL;

    pthread_mutex_lock(&s->last_mu);
    if (s->last)
        last = json_loadb(s->last, s->last_len, JSON_DECODE_ANY, NULL);
    pthread_mutex_unlock(&s->last_mu);
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:o}", "requests", (json_int_t)atomic_load(&s->requests),
                     "active", (json_int_t)atomic_load(&s->active), "completed",
                     (json_int_t)atomic_load(&s->completed), "cancelled",
                     (json_int_t)atomic_load(&s->cancelled), "aborted",
                     (json_int_t)atomic_load(&s->aborted), "last_request",
                     last ? last : json_null());
}

void
fakeai_server_reset(struct fakeai_server *s)
{
    atomic_store(&s->requests, 0);
    atomic_store(&s->completed, 0);
    atomic_store(&s->cancelled, 0);
    atomic_store(&s->aborted, 0);
    pthread_mutex_lock(&s->last_mu);
    free(s->last);
    s->last = NULL;
    s->last_len = 0;
    pthread_mutex_unlock(&s->last_mu);
}
