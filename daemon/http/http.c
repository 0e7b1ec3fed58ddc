/* http.c - the HTTP front end: libmicrohttpd inside each worker's libuv loop.
 *
 * Each worker's MHD daemon runs in external-epoll mode: its epoll fd is watched by a
 * uv_poll, its timeout by a uv_timer. Here are the answers (whole or streamed) as the
 * rest of the daemon builds them, the request's head, the route table and access
 * rules, the request's arrival (head checks, body, read deadline, connection limit)
 * and its hand-over to the handler; a request waiting for its backend suspends its
 * connection, and backend data resumes it. The request's lifecycle (new, finish) is
 * the core's (server.c). */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "daemon-int.h"
#include "guard/guard.h"
#include "log.h"
#include "text.h"

#define MAX_ROUTES 48 /* the API paths and what other modules register (hooks.h) */
#define POOL_SLACK 4096 /* MHD connection memory beyond max_header: response headers, reads */

/* ---- the route table (filled before the workers start, read-only after) ---- */

enum route_match {
    MATCH_EXACT = 0,
    MATCH_UNDER,  /* path ends in '/': a path strictly under it (/v1/models/{id}) */
    MATCH_PREFIX, /* hooks.h's DAEMON_HANDLER_PREFIX: path, path/..., or under a path/ */
};

struct http_route {
    const char *method;
    const char *path;
    size_t path_len;
    enum route_match match;
    enum http_access access;
    int outcome;             /* every request here becomes an outcome-log row */
    http_route_fn *fn;     /* the daemon's own handler, or */
    daemon_handler_fn *hook; /* one registered through hooks.h, with its ctx */
    void *ctx;
};

static struct http_route routes[MAX_ROUTES];
static size_t n_routes;

static int
route_add(struct http_route r)
{
    for (size_t i = 0; i < n_routes; i++)
        if (!strcmp(routes[i].method, r.method) && !strcmp(routes[i].path, r.path))
            return -EEXIST;
    if (n_routes == MAX_ROUTES)
        return -ENOSPC;
    r.path_len = strlen(r.path);
    routes[n_routes++] = r;
    return 0;
}

int
http_route_add(const char *method, const char *path, enum http_access access,
                  unsigned flags, http_route_fn *fn)
{
    size_t plen = strlen(path);

    return route_add((struct http_route){
        .method = method,
        .path = path,
        .match = (flags & HTTP_ROUTE_UNDER) && plen && path[plen - 1] == '/' ? MATCH_UNDER
                                                                              : MATCH_EXACT,
        .access = access,
        .outcome = (flags & HTTP_ROUTE_OUTCOME) != 0,
        .fn = fn,
    });
}

int
daemon_handler_register(const char *method, const char *path, unsigned flags,
                        daemon_handler_fn *fn, void *ctx)
{
    return route_add((struct http_route){
        .method = method,
        .path = path,
        .match = flags & DAEMON_HANDLER_PREFIX ? MATCH_PREFIX : MATCH_EXACT,
        .access = flags & DAEMON_HANDLER_ADMIN   ? HTTP_ACCESS_ADMIN
                  : flags & DAEMON_HANDLER_STATS ? HTTP_ACCESS_STATS
                                                 : HTTP_ACCESS_PUBLIC,
        .hook = fn,
        .ctx = ctx,
    });
}

static int
route_matches(const struct http_route *r, const char *path)
{
    size_t plen = r->path_len;

    switch (r->match) {
    case MATCH_EXACT:
        return !strcmp(r->path, path);
    case MATCH_UNDER:
        return !strncmp(r->path, path, plen) && path[plen];
    case MATCH_PREFIX:
        return !strncmp(r->path, path, plen) &&
               (path[plen] == '\0' || path[plen] == '/' || r->path[plen - 1] == '/');
    }
    return 0;
}

/* Finds the route for method and path, in the order the routes were added. Returns 1
 * found (*route set), 0 path known but not for this method (allow filled with the
 * methods it takes), -1 unknown path. A HEAD request takes a GET route. */
static int
find_route(const char *method, const char *path, const struct http_route **route,
           char *allow, size_t allowlen)
{
    int path_known = 0;
    const char *m = !strcmp(method, "HEAD") ? "GET" : method;

    allow[0] = '\0';
    for (size_t i = 0; i < n_routes; i++) {
        if (!route_matches(&routes[i], path))
            continue;
        if (!strcmp(routes[i].method, m)) {
            *route = &routes[i];
            return 1;
        }
        path_known = 1;
        snprintf(allow + strlen(allow), allowlen - strlen(allow), "%s%s", allow[0] ? ", " : "",
                 routes[i].method);
    }
    return path_known ? 0 : -1;
}

/* ---- replies ---------------------------------------------------------------- */

/* The rest of the daemon holds libmicrohttpd's responses as struct http_response, a
 * type never defined (daemon-int.h): these two are the only conversions. */
static struct MHD_Response *
mhd_response(struct http_response *r)
{
    return (struct MHD_Response *)(void *)r;
}

static struct http_response *
our_response(struct MHD_Response *r)
{
    return (struct http_response *)(void *)r;
}

static void
add_header(struct MHD_Response *r, const char *name, const char *value)
{
    if (MHD_add_response_header(r, name, value) != MHD_YES)
        log_debug("cannot add response header %s", name);
}

void
http_response_header(struct http_response *resp, const char *name, const char *value)
{
    add_header(mhd_response(resp), name, value);
}

struct http_response *
http_response_buffer(char *body, size_t len, const char *ctype)
{
    if (!body) {
        body = strdup("");
        if (!body)
            abort();
        len = 0;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer_with_free_callback(len, body, free);
    if (!r)
        abort();
    if (ctype)
        add_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    return our_response(r);
}

/* A streamed answer's reader: the request and the daemon's reader for it. */
struct stream_src {
    struct daemon_request *rq;
    http_stream_read_fn *read;
};

/* The client's connection ends now. MHD in turbo mode neither shuts down nor closes a
 * connection that a reader ended until something happens on its socket, so the client
 * would wait out the idle timeout for an answer that is over; the shutdown sends the
 * FIN at once (after every byte given to MHD so far: it asks for more only when it has
 * sent what it had) and wakes MHD to close the socket. */
static void
cut_client(struct daemon_request *rq)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);

    if (ci)
        shutdown(ci->connect_fd, SHUT_RDWR);
}

static ssize_t
stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream_src *src = cls;
    struct daemon_request *rq = src->rq;
    ssize_t n = src->read(rq, buf, max);

    (void)pos;
    if (n > 0)
        return n;
    if (n == HTTP_STREAM_END)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n == HTTP_STREAM_FAIL) {
        cut_client(rq);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    rq->suspended = 1; /* HTTP_STREAM_WAIT: until http_wake */
    MHD_suspend_connection(rq->conn);
    return 0;
}

struct http_response *
http_response_stream(struct daemon_request *rq, const char *ctype, size_t block,
                        http_stream_read_fn *read)
{
    struct stream_src *src = malloc(sizeof(*src));

    if (!src)
        abort();
    src->rq = rq;
    src->read = read;
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, block, stream_read, src, free);
    if (!r)
        abort();
    if (ctype)
        add_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    return our_response(r);
}

const char *
http_request_header(const struct daemon_request *rq, const char *name)
{
    return rq->conn ? MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name) : NULL;
}

const char *
http_request_query(const struct daemon_request *rq, const char *name)
{
    return rq->conn ? MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name) : NULL;
}

/* http_request_headers_each's visitor: the daemon's callback and its context. */
struct header_visit {
    void (*fn)(void *ctx, const char *name, const char *value);
    void *ctx;
};

static enum MHD_Result
visit_header(void *cls, enum MHD_ValueKind kind, const char *name, const char *value)
{
    struct header_visit *v = cls;

    (void)kind;
    v->fn(v->ctx, name, value);
    return MHD_YES;
}

void
http_request_headers_each(const struct daemon_request *rq,
                             void (*fn)(void *ctx, const char *name, const char *value), void *ctx)
{
    struct header_visit v = {fn, ctx};

    if (rq->conn)
        MHD_get_connection_values(rq->conn, MHD_HEADER_KIND, visit_header, &v);
}

void
http_wake(struct daemon_request *rq)
{
    http_gone_unwatch(rq); /* MHD watches the socket again */
    if (rq->suspended) {
        rq->suspended = 0;
        MHD_resume_connection(rq->conn);
        rq->w->need_run = 1;
    }
}

void
http_set_response(struct daemon_request *rq, int status, struct http_response *resp)
{
    if (rq->response)
        MHD_destroy_response(mhd_response(rq->response));
    rq->response = resp;
    rq->status = status;
    http_wake(rq);
}

void
http_reply(struct daemon_request *rq, int status, const char *ctype, char *body, size_t len)
{
    struct http_response *r = http_response_buffer(body, len, ctype);

    daemon__add_route_headers(rq, r);
    http_set_response(rq, status, r);
}

void
http_reply_json(struct daemon_request *rq, int status, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;

    json_decref(doc);
    if (!text) {
        /* A builder refused its input (invalid UTF-8 that should have been cleaned) or
         * memory ran out: a clear 500, never a crash. */
        log_warnx("cannot build the JSON answer of %s %s", rq->method, rq->path);
        static const char fallback[] =
            "{\"error\":{\"message\":\"internal error: the answer could not be built\","
            "\"type\":\"server_error\",\"param\":null,\"code\":\"internal_error\"}}\n";
        rq->error_kind = "internal_error";
        http_reply(rq, 500, "application/json", strdup(fallback), sizeof(fallback) - 1);
        return;
    }
    size_t len = strlen(text);
    /* a trailing newline makes curl-from-a-shell output readable */
    char *withnl = realloc(text, len + 2);
    if (!withnl)
        abort();
    withnl[len] = '\n';
    withnl[len + 1] = '\0';
    http_reply(rq, status, "application/json", withnl, len + 1);
}

static int
is_loopback(struct daemon_request *rq)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

    if (!ci || !ci->client_addr)
        return 0;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
            return 1;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            return in6->sin6_addr.s6_addr[12] == 127;
    }
    return 0;
}

/* Checks rq against the access rule; replies 401/403 and returns -1 when refused.
 * Client endpoints need a key from keys_file when there is one; admin endpoints
 * need a key from admin_keys_file, or without one come from loopback. */
static int
check_access(struct daemon_request *rq, enum http_access a)
{
    const struct daemon_snapshot *s = rq->snap;
    const char *authz = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_AUTHORIZATION);
    const char *name = NULL;
    const struct auth_keys *keys;

    if (a == HTTP_ACCESS_STATS)
        a = s->conf->stats_need_admin ? HTTP_ACCESS_ADMIN : HTTP_ACCESS_CLIENT;
    if (a == HTTP_ACCESS_PUBLIC)
        return 0;
    if (a == HTTP_ACCESS_ADMIN && !s->admin_keys) {
        if (is_loopback(rq))
            return 0;
        http_reply_err(rq, HTTP_ERR_FORBIDDEN,
                          "admin endpoints answer only on loopback (no admin_keys_file)");
        return -1;
    }
    keys = a == HTTP_ACCESS_ADMIN ? s->admin_keys : s->keys;
    if (!keys)
        return 0; /* no client keys configured: open */
    const char *xkey = !authz && http_dialect_anthropic(rq)
                           ? MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, "x-api-key")
                           : NULL;
    char bearer[4200]; /* Anthropic's clients send their key as x-api-key: checked the same */
    if (xkey && strlen(xkey) < sizeof(bearer) - 8) {
        snprintf(bearer, sizeof(bearer), "Bearer %s", xkey);
        authz = bearer;
    }
    int rc = auth_check(keys, authz, &name);
    if (authz == bearer)
        explicit_bzero(bearer, sizeof(bearer));
    if (rc == 0) {
        rq->key_id = name;
        return 0;
    }
    if (rc == -ENOENT)
        http_reply_err(rq, HTTP_ERR_MISSING_API_KEY,
                          "This endpoint needs an API key: Authorization: Bearer <key>%s",
                          http_dialect_anthropic(rq) ? " (or x-api-key: <key>)" : "");
    else
        http_reply_err(rq, HTTP_ERR_INVALID_API_KEY,
                          "The API key is not valid%s",
                          a == HTTP_ACCESS_ADMIN ? " for admin" : "");
    http_response_header(rq->response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    return -1;
}

/* A registered handler (hooks.h). */
static void
run_hook(struct daemon_request *rq, const struct http_route *h)
{
    struct daemon_http_request req = {
        .method = rq->method,
        .path = rq->path,
        .request_id = rq->id,
        .body = rq->body.data,
        .body_len = rq->body.len,
        .priv = rq,
    };
    struct daemon_http_reply reply = {.status = 200};

    h->hook(h->ctx, &req, &reply);
    struct http_response *r = http_response_buffer(
        reply.body, reply.body ? reply.len : 0,
        reply.content_type ? reply.content_type : "application/json");
    for (int i = 0; i < DAEMON_REPLY_MAX_HEADERS; i++)
        if (reply.headers[i].name && reply.headers[i].value)
            http_response_header(r, reply.headers[i].name, reply.headers[i].value);
    daemon__add_route_headers(rq, r);
    http_set_response(rq, reply.status ? reply.status : 200, r);
}

const char *
daemon_request_header(const struct daemon_http_request *r, const char *name)
{
    struct daemon_request *rq = r->priv;

    return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

const char *
daemon_request_arg(const struct daemon_http_request *r, const char *name)
{
    struct daemon_request *rq = r->priv;

    return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *
daemon_request_client(const struct daemon_http_request *r)
{
    static __thread char text[INET6_ADDRSTRLEN];
    struct daemon_request *rq = r->priv;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

    if (!ci || !ci->client_addr)
        return "-";
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, text,
                  sizeof(text));
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, text,
                  sizeof(text));
    else
        return "-";
    return text;
}

static enum MHD_Result
queue_response(struct daemon_request *rq)
{
    enum MHD_Result ret =
        MHD_queue_response(rq->conn, (unsigned)rq->status, mhd_response(rq->response));

    MHD_destroy_response(mhd_response(rq->response));
    rq->response = NULL;
    rq->phase = PHASE_REPLIED;
    return ret;
}

/* What the request head says about its own framing and size (head_check). */
struct head_scan {
    size_t bytes;          /* name + ": " + value + CRLF, every header */
    int n_length;          /* Content-Length headers */
    const char *length;    /* the first one's value */
    int length_conflict;   /* another one with a different value */
    int length_bad;        /* a value that is not a decimal number */
    int chunked;           /* Transfer-Encoding present */
};

static enum MHD_Result
scan_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    struct head_scan *h = cls;

    (void)kind;
    h->bytes += strlen(key) + (value ? strlen(value) : 0) + 4;
    if (!value)
        return MHD_YES;
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        if (h->n_length++ == 0)
            h->length = value;
        else if (strcmp(h->length, value))
            h->length_conflict = 1;
        if (!*value || strspn(value, "0123456789") != strlen(value) || strlen(value) > 19)
            h->length_bad = 1;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        h->chunked = 1;
    }
    return MHD_YES;
}

/* Refuses a head that is over max_header or frames its body ambiguously (RFC 9112
 * 6.3: Content-Length twice with different values, or with Transfer-Encoding: a
 * request that one parser reads as two and another as one). Returns 0 or, having
 * replied, -1. MHD's own pool is max_header plus room for our answer, so heads a
 * little over the limit get this JSON 431, not MHD's. */
static int
head_check(struct daemon_request *rq, struct MHD_Connection *conn)
{
    struct head_scan h = {0};
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    size_t max = rq->snap->conf->max_header;

    MHD_get_connection_values(conn, MHD_HEADER_KIND, scan_header, &h);
    size_t size = ci ? ci->header_size : h.bytes + strlen(rq->method) + strlen(rq->path) + 12;
    if (size > max) {
        http_reply_err(rq, HTTP_ERR_HEADERS_TOO_LARGE,
                          "The request head (%zu bytes) is over the limit of %zu bytes", size,
                          max);
        return -1;
    }
    if (h.chunked && h.n_length) {
        http_reply_err(rq, HTTP_ERR_INVALID_FRAMING,
                          "Transfer-Encoding and Content-Length together are refused");
        return -1;
    }
    if (h.length_conflict || h.length_bad) {
        http_reply_err(rq, HTTP_ERR_INVALID_FRAMING,
                          "%s Content-Length is refused",
                          h.length_conflict ? "A repeated, different" : "An invalid");
        return -1;
    }
    return 0;
}

/* Ties rq to its connection's read clock: the request began to arrive when the
 * connection opened (its first request) or when its request line came (later ones). */
static void
attach_conn(struct daemon_request *rq, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct daemon_conn *dc = ci ? ci->socket_context : NULL;

    rq->t_arrive_ns = rq->t_start_ns;
    if (!dc)
        return;
    if (!dc->kept && dc->t_ref_ns != UINT64_MAX)
        rq->t_arrive_ns = dc->t_ref_ns;
    else if (dc->t_line_ns)
        rq->t_arrive_ns = dc->t_line_ns;
    dc->rq = rq;
    rq->dconn = dc;
}

static enum MHD_Result
on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
          const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    struct daemon_worker *w = cls;
    struct daemon_request *rq = *con_cls;

    if (!rq) {
        const struct http_route *route = NULL;
        char allow[128];

        rq = daemon__request_new(w, conn, url, method);
        *con_cls = rq;
        attach_conn(rq, conn);
        if (!rq->snap) {
            /* cannot happen once started; refuse rather than crash */
            return MHD_NO;
        }
        int found = find_route(method, url, &route, allow, sizeof(allow));
        rq->outcome = found > 0 && route->outcome;
        /* the path's API, known before anything is answered (a 405 on it too): errors
         * take its dialect */
        rq->api = api_find(url);
        if (head_check(rq, conn) < 0) {
            /* answered: 400 or 431 */
        } else if (w->stopping) {
            http_reply_err(rq, HTTP_ERR_SHUTTING_DOWN,
                              "the server is shutting down");
        } else if (found < 0) {
            char qm[64], qp[256];
            http_reply_err(rq, HTTP_ERR_NOT_FOUND,
                              "Unknown path %s %s", text_quote(qm, sizeof(qm), method, 16),
                              text_quote(qp, sizeof(qp), url, 64));
        } else if (found == 0) {
            char qm[64], qp[256];
            http_reply_err(rq, HTTP_ERR_METHOD_NOT_ALLOWED,
                              "%s is not allowed on %s (allowed: %s)",
                              text_quote(qm, sizeof(qm), method, 16),
                              text_quote(qp, sizeof(qp), url, 64), allow);
            http_response_header(rq->response, MHD_HTTP_HEADER_ALLOW, allow);
        } else if (check_access(rq, route->access) == 0) {
            const char *cl =
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
            unsigned long long declared = cl ? strtoull(cl, NULL, 10) : 0;
            if (declared > rq->snap->conf->max_body) {
                http_reply_err(rq, HTTP_ERR_BODY_TOO_LARGE,
                                  "The request body (%s bytes) is over the limit of %zu bytes",
                                  cl, rq->snap->conf->max_body);
            } else if (declared > 0 && declared <= 65536) {
                /* room for the whole body (and the NUL daemon_buf keeps): one malloc,
                 * not a doubling per piece MHD hands over. Only for common sizes: a
                 * declared length is a promise, and the body may never come. */
                rq->body.cap = (size_t)declared + 1;
                rq->body.data = malloc(rq->body.cap);
                if (!rq->body.data)
                    abort();
            }
            rq->route = route;
        }
        if (rq->response)
            return queue_response(rq);
        return MHD_YES;
    }

    if (*upload_data_size) {
        if (daemon__ms_since(rq->t_arrive_ns) > rq->snap->conf->read_timeout_ms) {
            /* a body trickling in slower than read_timeout_ms: hang up */
            rq->error_kind = "read_timeout";
            return MHD_NO;
        }
        if (!rq->too_large) {
            if (rq->body.len + *upload_data_size > rq->snap->conf->max_body) {
                rq->too_large = 1;
                daemon__buf_free(&rq->body);
            } else {
                daemon__buf_append(&rq->body, upload_data, *upload_data_size);
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }

    if (rq->phase == PHASE_BODY) {
        rq->phase = PHASE_WAIT;
        if (rq->too_large)
            http_reply_err(rq, HTTP_ERR_BODY_TOO_LARGE,
                              "The request body is over the limit of %zu bytes",
                              rq->snap->conf->max_body);
        else if (rq->route && rq->route->hook)
            run_hook(rq, rq->route);
        else if (rq->route)
            rq->route->fn(rq);
    }
    if (rq->response)
        return queue_response(rq);
    if (w->tearing_down || rq->client_gone)
        return MHD_NO;
    rq->suspended = 1;
    MHD_suspend_connection(conn);
    return MHD_YES;
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct daemon_request *rq = *con_cls;

    if (!rq)
        return;
    *con_cls = NULL;
    if (rq->dconn) { /* the next request on this connection starts its own clock */
        struct daemon_conn *dc = rq->dconn;
        dc->rq = NULL;
        if (dc->t_ref_ns != UINT64_MAX)
            dc->t_ref_ns = daemon__now_ns();
        dc->t_line_ns = 0;
        dc->kept = 1;
        dc->anthropic = 0;
        rq->dconn = NULL;
    }
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        rq->client_aborted = 1;
    if (rq->phase != PHASE_REPLIED)
        rq->status = 0; /* nothing was sent */
    if (rq->work_pending) {
        /* A thread-pool job still points at rq; it is freed when the job ends. */
        rq->conn = NULL;
        rq->orphaned = 1;
        return;
    }
    daemon__request_finish(rq);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_debug("http: %s", msg);
}

static void on_mhd_timer(uv_timer_t *t);

void
http_run(struct daemon_worker *w)
{
    MHD_UNSIGNED_LONG_LONG to;
    int rounds = 0;

    if (!w->mhd)
        return;
    if (w->in_mhd) {
        w->need_run = 1; /* the outer call loops */
        return;
    }
    if (w->up)
        upstream_cork(w->up); /* the requests of this pass go upstream together */
    do {
        w->need_run = 0;
        w->in_mhd = 1;
        MHD_run(w->mhd);
        w->in_mhd = 0;
    } while (w->need_run && ++rounds < 8);
    if (w->up)
        upstream_uncork(w->up);
    if (MHD_get_timeout(w->mhd, &to) == MHD_YES)
        uv_timer_start(&w->mhd_timer, on_mhd_timer, (uint64_t)to, 0);
    else
        uv_timer_stop(&w->mhd_timer);
}

static void
on_mhd_timer(uv_timer_t *t)
{
    http_run(t->data);
}

static void
on_mhd_poll(uv_poll_t *p, int status, int events)
{
    struct daemon_worker *w = p->data;

    if (w->busy_poll_ns)
        w->last_io_ns = uv_hrtime();
    http_run(w);
}

/* ---- clients that leave while their request waits --------------------------------
 *
 * A suspended connection is out of MHD's epoll set, so a client that hangs up while
 * its request waits for the backend would go unnoticed until the answer came, and the
 * backend would go on generating for nobody. Requests waiting longer than
 * GONE_AFTER_MS get a watch on their socket (two epoll_ctl calls, spent only on the
 * slow ones); end of file there cancels the backend call and lets MHD close. */

#define GONE_AFTER_MS 1000

static void
on_gone_watch_closed(uv_handle_t *h)
{
    free(h);
}

void
http_gone_unwatch(struct daemon_request *rq)
{
    if (!rq->gone_watch)
        return;
    uv_poll_stop(rq->gone_watch); /* out of the epoll set before MHD may close the fd */
    uv_close((uv_handle_t *)rq->gone_watch, on_gone_watch_closed);
    rq->gone_watch = NULL;
}

static void
on_gone_event(uv_poll_t *p, int status, int events)
{
    struct daemon_request *rq = p->data;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    char ch;

    (void)status;
    (void)events;
    ssize_t n = ci ? recv(ci->connect_fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT) : 0;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return; /* nothing after all */
    http_gone_unwatch(rq);
    if (n > 0) {
        rq->gone_checked = 1; /* a pipelined request, not a hang-up: MHD's to read later */
        return;
    }
    rq->client_gone = 1;
    rq->error_kind = "client_gone";
    daemon__proxy_release(rq); /* cancels the backend call, frees its slot */
    http_wake(rq);          /* on_access answers MHD_NO: MHD closes the connection */
    http_run(rq->w);
}

/* Starts watching rq's socket for a hang-up. */
static void
gone_watch(struct daemon_request *rq)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    uv_poll_t *p = malloc(sizeof(*p));

    if (!p)
        abort();
    if (!ci || uv_poll_init_socket(&rq->w->loop, p, ci->connect_fd) < 0) {
        free(p);
        rq->gone_checked = 1;
        return;
    }
    p->data = rq;
    rq->gone_watch = p;
    uv_poll_start(p, UV_READABLE | UV_DISCONNECT, on_gone_event);
}

void
http_gone_watch_waiting(struct daemon_worker *w)
{
    for (struct daemon_request *rq = w->requests; rq; rq = rq->next)
        if (rq->suspended && !rq->response && !rq->gone_watch && !rq->gone_checked &&
            !rq->client_gone && rq->conn && daemon__ms_since(rq->t_start_ns) >= GONE_AFTER_MS)
            gone_watch(rq);
}

/* MHD_OPTION_NOTIFY_CONNECTION: counts the worker's open client connections and
 * keeps their read clocks (struct daemon_conn). */
static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
              enum MHD_ConnectionNotificationCode code)
{
    struct daemon_worker *w = cls;
    struct daemon_conn *dc = *socket_context;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        w->n_conns++;
        dc = calloc(1, sizeof(*dc));
        if (!dc)
            abort();
        dc->conn = conn;
        dc->t_ref_ns = daemon__now_ns();
        dc->next = w->conns;
        if (w->conns)
            w->conns->prev = dc;
        w->conns = dc;
        *socket_context = dc;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (w->n_conns > 0)
            w->n_conns--;
        if (!dc)
            return;
        if (dc->rq)
            dc->rq->dconn = NULL;
        if (dc->prev)
            dc->prev->next = dc->next;
        else
            w->conns = dc->next;
        if (dc->next)
            dc->next->prev = dc->prev;
        free(dc);
        *socket_context = NULL;
    }
}

/* 1 when uri (a request line's target, borrowed) names a path whose errors take
 * Anthropic's shape. The path is read as on_access will see it: up to the query, %XX
 * decoded (libmicrohttpd's unescaping); one too long for any API path is none. */
static int
uri_anthropic(const char *uri)
{
    char path[64];
    size_t n = 0;

    for (const char *p = uri; *p && *p != '?'; p++) {
        char ch = *p;
        if (ch == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char hex[3] = {p[1], p[2], '\0'};
            ch = (char)strtol(hex, NULL, 16);
            p += 2;
        }
        if (n + 1 >= sizeof(path))
            return 0;
        path[n++] = ch;
    }
    path[n] = '\0';
    return http_path_anthropic(path);
}

/* MHD_OPTION_URI_LOG_CALLBACK: the request line of a new request has arrived, which
 * on a kept-alive connection is the best sign of when the request began, and names
 * the path whose dialect the answers written before on_access take. */
static void *
on_request_line(void *cls, const char *uri, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct daemon_conn *dc = ci ? ci->socket_context : NULL;

    (void)cls;
    if (dc) {
        dc->t_line_ns = daemon__now_ns();
        dc->anthropic = uri && uri_anthropic(uri);
    }
    return NULL; /* on_access still sees *con_cls == NULL on its first call */
}

/* ---- the read deadline ------------------------------------------------------------
 *
 * A request, head and body, must arrive within read_timeout_ms of its first byte.
 * MHD calls us only once the head is complete, so the clock starts from what we can
 * see: the connection opening (a new connection's first request), or its request line
 * (a kept-alive connection; before that line, MHD's idle timeout applies). A sweep
 * every read_timeout_ms / 4 (25 ms..1 s) cuts the late ones: a 408 written straight to
 * the socket (MHD has sent nothing yet), then shutdown, which MHD sees as a close. */

static void
cut_connection(struct daemon_conn *dc)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(dc->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    /* the path's dialect: the request's own once its head is in, else its request line's */
    int anthropic = dc->rq ? http_err_anthropic(dc->rq) : dc->anthropic;
    size_t blen = 0;
    char *body = http_err_body(HTTP_ERR_READ_TIMEOUT, anthropic, &blen,
                                  "The request did not arrive within read_timeout_ms");
    char answer[1024];
    int n = snprintf(answer, sizeof(answer),
                     "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                     "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                     body ? blen : 0, body ? body : "");

    free(body);
    if (!ci)
        return;
    if (n < 0 || (size_t)n >= sizeof(answer))
        n = 0; /* cannot happen: the body is ours, ~150 bytes */
    if (n > 0 && send(ci->connect_fd, answer, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("read timeout: cannot send the 408: %s", strerror(errno));
    shutdown(ci->connect_fd, SHUT_RDWR);
    dc->t_ref_ns = UINT64_MAX; /* cut once */
}

static void
on_reap(uv_timer_t *t)
{
    struct daemon_worker *w = t->data;
    struct daemon_snapshot *s = daemon__snapshot_get();

    if (!s)
        return;
    uint64_t now = daemon__now_ns(), read_ns = (uint64_t)s->conf->read_timeout_ms * 1000000,
             idle_ns = (uint64_t)s->conf->idle_timeout_ms * 1000000;
    int cut = 0;
    daemon__snapshot_put(s);
    for (struct daemon_conn *dc = w->conns; dc; dc = dc->next) {
        uint64_t start;
        if (dc->t_ref_ns == UINT64_MAX)
            continue;
        if (dc->rq) {
            struct daemon_request *rq = dc->rq;
            /* only a body still coming in; a request waiting for its backend is not late */
            if (rq->phase != PHASE_BODY || rq->response || rq->suspended)
                continue;
            start = rq->t_arrive_ns;
            if (now > start + read_ns)
                rq->error_kind = "read_timeout";
        } else if (!dc->kept) {
            start = dc->t_ref_ns;
        } else {
            start = dc->t_line_ns ? dc->t_line_ns : dc->t_ref_ns + idle_ns;
        }
        if (now > start + read_ns) {
            log_debug("read timeout: a request did not arrive within %.0f ms; connection cut",
                      (double)read_ns / 1e6);
            cut_connection(dc);
            cut = 1;
        }
    }
    if (cut)
        http_run(w);
}

/* MHD_OPTION_ACCEPT_POLICY_CALLBACK: beyond max_connections a new connection is
 * closed at once, so a client sees a clean refusal rather than a hang, and the
 * server keeps accepting as soon as one closes. */
static enum MHD_Result
on_accept_policy(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    struct daemon_worker *w = cls;

    if (w->n_conns < w->max_conns)
        return MHD_YES;
    log_debug("connection refused: %u open, max_connections reached", w->n_conns);
    return MHD_NO;
}

/* ---- the worker's side ------------------------------------------------------------ */

int
http_worker_start(struct daemon_worker *w, const struct conf *c, int v6, char *err,
                   size_t errlen)
{
    uint64_t reap_ms = c->read_timeout_ms / 4;

    reap_ms = reap_ms < 25 ? 25 : reap_ms > 1000 ? 1000 : reap_ms;
    uv_timer_start(&w->reap, on_reap, reap_ms, reap_ms);
    /* turbo: read, write and accept before asking epoll whether they would block */
    unsigned flags = MHD_USE_EPOLL | MHD_USE_TURBO | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    w->mhd = MHD_start_daemon(
        flags, 0, on_accept_policy, w, on_access, w, MHD_OPTION_LISTEN_SOCKET,
        (MHD_socket)w->listen_fd,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, w,
        /* The connection limit is ours (on_accept_policy): in external epoll mode
         * MHD stops accepting at its own limit and never resumes. MHD's is set
         * above ours (slack for connections it is still cleaning up) so it is never
         * reached; left unset it would be FD_SETSIZE - 4 = 1020. */
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, w,
        MHD_OPTION_URI_LOG_CALLBACK, on_request_line, w, MHD_OPTION_CONNECTION_LIMIT,
        w->max_conns + w->max_conns / 4 + 64, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)((c->idle_timeout_ms + 999) / 1000),
        /* The request headers plus room for ours: MHD zeroes the whole pool before
         * every request on a kept-alive connection, so it costs per request. */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(c->max_header + POOL_SLACK),
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
        MHD_OPTION_END);
    if (!w->mhd) {
        snprintf(err, errlen, "cannot start the HTTP server on %s port %u", c->listen,
                 (unsigned)c->port);
        return -1;
    }
    w->listen_fd = -1; /* MHD's now */
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(w->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di || uv_poll_init(&w->loop, &w->mhd_poll, di->epoll_fd) < 0) {
        snprintf(err, errlen, "cannot watch the HTTP server's epoll descriptor");
        return -1;
    }
    w->mhd_poll.data = w;
    uv_poll_start(&w->mhd_poll, UV_READABLE, on_mhd_poll);
    return 0;
}

void
http_worker_quiesce(struct daemon_worker *w)
{
    MHD_socket fd = MHD_quiesce_daemon(w->mhd);

    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

void
http_worker_stop(struct daemon_worker *w)
{
    if (!w->mhd)
        return;
    uv_poll_stop(&w->mhd_poll);
    MHD_stop_daemon(w->mhd); /* ends every connection: on_completed frees requests */
    w->mhd = NULL;
}

void
http_response_free(struct http_response *resp)
{
    if (resp)
        MHD_destroy_response(mhd_response(resp));
}
