/* errors.c - every error triaged itself answers a client with: one table, two dialects.
 *
 * A caller names a kind (enum http_err); the row gives the HTTP status, the OpenAI
 * error type and code, and the Anthropic error type. The request's API path picks the
 * dialect: {"error":{"message","type","param","code"}} everywhere, and on
 * /v1/messages Anthropic's {"type":"error","error":{"type","message"}}. The message is
 * made valid UTF-8 here, the one place every error passes. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon-int.h"
#include "log.h"
#include "text.h"

static const struct {
    int status;
    const char *type;  /* OpenAI's error type */
    const char *code;  /* OpenAI's error code (also the access line's error kind) */
    const char *atype; /* Anthropic's error type */
} table[HTTP_ERR__COUNT] = {
#define IRE "invalid_request_error"
#define SE "server_error"
#define ROW(kind, status, type, code, atype) [HTTP_ERR_##kind] = {status, type, code, atype}
    ROW(INVALID_JSON, 400, IRE, "invalid_json", IRE),
    ROW(NUMBER_OUT_OF_RANGE, 400, IRE, "number_out_of_range", IRE),
    ROW(MISSING_MODEL, 400, IRE, "missing_model", IRE),
    ROW(MISSING_MESSAGES, 400, IRE, "missing_messages", IRE),
    ROW(MISSING_INPUT, 400, IRE, "missing_input", IRE),
    ROW(MISSING_PROMPT, 400, IRE, "missing_prompt", IRE),
    ROW(INVALID_MESSAGES, 400, IRE, "invalid_messages", IRE),
    ROW(INVALID_INPUT, 400, IRE, "invalid_input", IRE),
    ROW(INVALID_THRESHOLD, 400, IRE, "invalid_threshold", IRE),
    ROW(INVALID_STRONG_SHARE, 400, IRE, "invalid_strong_share", IRE),
    ROW(INVALID_FRAMING, 400, IRE, "invalid_framing", IRE),
    ROW(INVALID_FEEDBACK, 400, IRE, "invalid_feedback", IRE),
    ROW(INVALID_WINDOW, 400, IRE, "invalid_window", IRE),
    ROW(INVALID_REQUEST, 400, IRE, "invalid_request", IRE),
    ROW(WRONG_API, 400, IRE, "wrong_api", IRE),
    ROW(NOT_ROUTED, 400, IRE, "not_routed", IRE),
    ROW(PREVIOUS_RESPONSE_NOT_FOUND, 400, IRE, "previous_response_not_found", IRE),
    ROW(MISSING_API_KEY, 401, IRE, "missing_api_key", "authentication_error"),
    ROW(INVALID_API_KEY, 401, IRE, "invalid_api_key", "authentication_error"),
    ROW(FORBIDDEN, 403, "permission_error", "forbidden", "permission_error"),
    ROW(MODEL_NOT_FOUND, 404, IRE, "model_not_found", "not_found_error"),
    ROW(NOT_FOUND, 404, IRE, "not_found", "not_found_error"),
    ROW(API_NOT_SERVED, 404, IRE, "api_not_served", "not_found_error"),
    ROW(STORAGE_DISABLED, 404, IRE, "storage_disabled", "not_found_error"),
    ROW(UNKNOWN_REQUEST_ID, 404, IRE, "unknown_request_id", "not_found_error"),
    ROW(METHOD_NOT_ALLOWED, 405, IRE, "method_not_allowed", IRE),
    ROW(READ_TIMEOUT, 408, IRE, "read_timeout", IRE),
    ROW(BODY_TOO_LARGE, 413, IRE, "body_too_large", "request_too_large"),
    ROW(HEADERS_TOO_LARGE, 431, IRE, "headers_too_large", IRE),
    ROW(RATE_LIMITED, 429, "rate_limit_error", "rate_limit_exceeded", "rate_limit_error"),
    ROW(BUDGET_EXCEEDED, 429, "insufficient_quota", "budget_exceeded", "rate_limit_error"),
    ROW(INTERNAL, 500, SE, "internal", "api_error"),
    ROW(RELOAD_FAILED, 500, SE, "reload_failed", "api_error"),
    ROW(STORAGE_ERROR, 500, SE, "storage_error", "api_error"),
    ROW(HTTP_FAILED, 500, SE, "internal_error", "api_error"),
    ROW(STORAGE_UNAVAILABLE, 503, SE, "storage_unavailable", "overloaded_error"),
    ROW(BACKEND_UNAVAILABLE, 503, SE, "backend_unavailable", "overloaded_error"),
    ROW(BACKEND_OVERLOADED, 503, SE, "backend_overloaded", "overloaded_error"),
    ROW(SHUTTING_DOWN, 503, SE, "shutting_down", "overloaded_error"),
    ROW(HTTP_VERSION, 505, IRE, "http_version_not_supported", IRE),
#undef ROW
#undef SE
#undef IRE
};

int
http_err_status(enum http_err kind)
{
    return table[kind].status;
}

const char *
http_err_code(enum http_err kind)
{
    return table[kind].code;
}

/* Anthropic's error type for a status no row names (a backend failure). */
static const char *
anthropic_type(int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

int
http_dialect_anthropic(const struct daemon_request *rq)
{
    return rq->api && rq->api->speaks == CONF_API_ANTHROPIC;
}

/* Returns a new error document in a dialect, or NULL when memory runs out. The message
 * may quote client bytes (a path, a model name, the JSON parser's own text), and
 * vsnprintf may have cut it mid-character: jansson takes only valid UTF-8, so it is
 * cleaned here. */
static json_t *
err_doc(int anthropic, const char *type, const char *code, const char *atype, const char *fmt,
        va_list ap)
{
    char raw[1024], msg[1024];
    int n = vsnprintf(raw, sizeof(raw), fmt, ap);

    if (n < 0)
        n = 0;
    text_utf8_clean(msg, sizeof(msg), raw, (size_t)n < sizeof(raw) ? (size_t)n : sizeof(raw) - 1);
    return anthropic ? json_pack("{s:s,s:{s:s,s:s}}", "type", "error", "error", "type", atype,
                                 "message", msg)
                     : json_pack("{s:{s:s,s:s,s:n,s:s}}", "error", "message", msg, "type", type,
                                 "param", "code", code);
}

static void
reply_v(struct daemon_request *rq, int status, const char *type, const char *code,
        const char *atype, const char *fmt, va_list ap)
{
    json_t *doc = err_doc(http_err_anthropic(rq), type, code, atype, fmt, ap);

    if (!rq->error_kind)
        rq->error_kind = code;
    if (!doc) { /* only out of memory can get here now */
        static const char fallback[] =
            "{\"error\":{\"message\":\"internal error\",\"type\":\"server_error\","
            "\"param\":null,\"code\":\"internal_error\"}}\n";
        char *body = strdup(fallback);
        http_reply(rq, status, "application/json", body, body ? sizeof(fallback) - 1 : 0);
        return;
    }
    http_reply_json(rq, status, doc);
}

char *
http_err_body(enum http_err kind, int anthropic, size_t *len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    json_t *doc = err_doc(anthropic, table[kind].type, table[kind].code, table[kind].atype, fmt, ap);
    va_end(ap);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    char *withnl = realloc(text, n + 2); /* the newline every JSON answer ends with */
    if (!withnl) {
        free(text);
        return NULL;
    }
    withnl[n] = '\n';
    withnl[n + 1] = '\0';
    *len = n + 1;
    return withnl;
}

/* 1 when path is under /v1/messages/ (count_tokens, batches, ...): Anthropic's paths,
 * whose errors an Anthropic client parses in its own shape although triage serves none. */
static int
under_messages(const char *path)
{
    static const char prefix[] = "/v1/messages/";

    return !strncmp(path, prefix, sizeof(prefix) - 1);
}

int
http_path_anthropic(const char *path)
{
    const struct daemon_api *api = api_find(path);

    return api ? api->speaks == CONF_API_ANTHROPIC : under_messages(path);
}

int
http_err_anthropic(const struct daemon_request *rq)
{
    return rq->api ? http_dialect_anthropic(rq) : rq->path && under_messages(rq->path);
}

void
http_reply_err(struct daemon_request *rq, enum http_err kind, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    reply_v(rq, table[kind].status, table[kind].type, table[kind].code, table[kind].atype, fmt, ap);
    va_end(ap);
}

void
http_reply_error(struct daemon_request *rq, int status, const char *type, const char *code,
                    const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    reply_v(rq, status, type, code, anthropic_type(status), fmt, ap);
    va_end(ap);
}
