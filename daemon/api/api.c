/* api.c - the API paths that reach a backend, one thin adapter each over proxy.c's relay.
 *
 * A row says where a path goes upstream, which backends speak it and whether an alias
 * routes on it; its view function checks what the path needs of the body and gives
 * the router a chat-shaped view of the prompt (borrowing the body's values, nothing
 * copied): Responses' instructions and input items, Anthropic's system and content
 * blocks. Nothing is translated between formats: the body goes upstream as the client
 * wrote it, with only the model name replaced. Also here: which backend answered which
 * Responses id, so a follow-up (previous_response_id) goes where its state is. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon-int.h"

/* Checks the shape every backend needs of 'messages', as OpenAI and Anthropic do and
 * no stricter: each element an object with a string "role"; "content", when there, a
 * string, null or an array of parts (objects). Returns 0, or -1 after replying 400. */
static int
check_messages(struct daemon_request *rq, json_t *messages)
{
    size_t i, j;
    json_t *m, *part;

    json_array_foreach(messages, i, m) {
        if (!json_is_object(m) || !json_is_string(json_object_get(m, "role"))) {
            http_reply_err(rq, HTTP_ERR_INVALID_MESSAGES,
                              "'messages[%zu]' must be an object with a string 'role'", i);
            return -1;
        }
        json_t *content = json_object_get(m, "content");
        if (!content || json_is_string(content) || json_is_null(content))
            continue;
        if (!json_is_array(content)) {
            http_reply_err(rq, HTTP_ERR_INVALID_MESSAGES,
                              "'messages[%zu].content' must be a string, null or an array "
                              "of content parts", i);
            return -1;
        }
        json_array_foreach(content, j, part) {
            if (!json_is_object(part)) {
                http_reply_err(rq, HTTP_ERR_INVALID_MESSAGES,
                                  "'messages[%zu].content[%zu]' must be a content part "
                                  "(an object)", i, j);
                return -1;
            }
        }
    }
    return 0;
}

/* A message {"role": role, "content": content (borrowed)}. */
static json_t *
message(const char *role, json_t *content)
{
    json_t *m = json_object();

    json_object_set_new(m, "role", json_string(role));
    json_object_set(m, "content", content);
    return m;
}

/* The view's max_tokens and tools, from the body's own names for them. */
static void
view_limits(json_t *view, json_t *root, const char *max_tokens_key)
{
    json_t *v = json_object_get(root, max_tokens_key);

    if (v)
        json_object_set(view, "max_tokens", v);
    if ((v = json_object_get(root, "tools")))
        json_object_set(view, "tools", v);
}

/* POST /v1/chat/completions: the body is the view. */
static json_t *
view_chat(struct daemon_request *rq, json_t *root)
{
    json_t *messages = json_object_get(root, "messages");

    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        http_reply_err(rq, HTTP_ERR_MISSING_MESSAGES, "'messages' must be a non-empty array");
        return NULL;
    }
    if (check_messages(rq, messages) < 0)
        return NULL;
    return json_incref(root);
}

/* POST /v1/responses: "instructions" as the system turn; "input" a string (one user
 * turn) or items: messages (role + content string or parts: input_text, output_text
 * and the like carry "text") and tool outputs (read as tool turns); other items
 * (function calls, reasoning) carry no prompt text. Without input (a stored prompt),
 * the view has no text: passed through fine, a routed request is refused by route. */
static json_t *
view_responses(struct daemon_request *rq, json_t *root)
{
    json_t *input = json_object_get(root, "input");
    json_t *instructions = json_object_get(root, "instructions");
    json_t *view = json_object(), *messages = json_array(), *item;
    size_t i;

    if (input && !json_is_string(input) && !json_is_array(input)) {
        http_reply_err(rq, HTTP_ERR_INVALID_INPUT,
                          "'input' must be a string or an array of items");
        goto fail;
    }
    if (instructions && !json_is_string(instructions) && !json_is_null(instructions)) {
        http_reply_err(rq, HTTP_ERR_INVALID_INPUT, "'instructions' must be a string");
        goto fail;
    }
    if (json_is_string(instructions))
        json_array_append_new(messages, message("system", instructions));
    if (json_is_string(input))
        json_array_append_new(messages, message("user", input));
    json_array_foreach(input, i, item) {
        if (!json_is_object(item)) {
            http_reply_err(rq, HTTP_ERR_INVALID_INPUT,
                              "'input[%zu]' must be an item (an object)", i);
            goto fail;
        }
        json_t *role = json_object_get(item, "role"), *content = json_object_get(item, "content");
        json_t *output = json_object_get(item, "output");
        if (role && (!json_is_string(role) ||
                     (content && !json_is_string(content) && !json_is_array(content)))) {
            http_reply_err(rq, HTTP_ERR_INVALID_INPUT,
                              "'input[%zu]': a message needs a string 'role' and a 'content' "
                              "string or array of parts", i);
            goto fail;
        }
        if (role)
            json_array_append_new(messages, message(json_string_value(role), content));
        else if (json_is_string(output))
            json_array_append_new(messages, message("tool", output));
    }
    json_object_set_new(view, "messages", messages);
    view_limits(view, root, "max_output_tokens");
    return view;
fail:
    json_decref(messages);
    json_decref(view);
    return NULL;
}

/* A view of one user turn whose content is text (a string, or an array of strings or
 * token arrays, which carry no text), as the outcome log's prompts are written. */
static json_t *
view_one_turn(json_t *text)
{
    json_t *view = json_object(), *messages = json_array();

    json_array_append_new(messages, message("user", text));
    json_object_set_new(view, "messages", messages);
    return view;
}

/* POST /v1/completions: "prompt" (a string, strings, or token arrays) as one user turn. */
static json_t *
view_completions(struct daemon_request *rq, json_t *root)
{
    json_t *prompt = json_object_get(root, "prompt");

    if (!prompt) {
        http_reply_err(rq, HTTP_ERR_MISSING_PROMPT, "'prompt' is required");
        return NULL;
    }
    if (!json_is_string(prompt) && !json_is_array(prompt)) {
        http_reply_err(rq, HTTP_ERR_INVALID_INPUT,
                          "'prompt' must be a string, an array of strings or token arrays");
        return NULL;
    }
    json_t *view = view_one_turn(prompt);
    view_limits(view, root, "max_tokens");
    return view;
}

/* POST /v1/embeddings: never scored; the view only gives the outcome log its input. */
static json_t *
view_embeddings(struct daemon_request *rq, json_t *root)
{
    json_t *input = json_object_get(root, "input");

    if (!input) {
        http_reply_err(rq, HTTP_ERR_MISSING_INPUT, "'input' is required");
        return NULL;
    }
    if (!json_is_string(input) && !json_is_array(input)) {
        http_reply_err(rq, HTTP_ERR_INVALID_INPUT,
                          "'input' must be a string, an array of strings or token arrays");
        return NULL;
    }
    return view_one_turn(input);
}

/* POST /v1/messages (Anthropic): "system" (a string or text blocks) as the system turn,
 * then the messages; content blocks of type text carry "text" (tool results, images
 * count as parts without text). */
static json_t *
view_messages(struct daemon_request *rq, json_t *root)
{
    json_t *messages = json_object_get(root, "messages");
    json_t *system = json_object_get(root, "system");

    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        http_reply_err(rq, HTTP_ERR_MISSING_MESSAGES, "'messages' must be a non-empty array");
        return NULL;
    }
    if (check_messages(rq, messages) < 0)
        return NULL;
    if (system && !json_is_string(system) && !json_is_array(system)) {
        http_reply_err(rq, HTTP_ERR_INVALID_MESSAGES,
                          "'system' must be a string or an array of text blocks");
        return NULL;
    }
    json_t *view = json_object(), *all = json_array();
    if (system)
        json_array_append_new(all, message("system", system));
    json_array_extend(all, messages);
    json_object_set_new(view, "messages", all);
    view_limits(view, root, "max_tokens");
    return view;
}

static const struct daemon_api apis[DAEMON_API__COUNT] = {
    [DAEMON_API_CHAT] = {DAEMON_API_CHAT, "/v1/chat/completions", "/chat/completions",
                         CONF_API_OPENAI, 1, 1, view_chat},
    [DAEMON_API_RESPONSES] = {DAEMON_API_RESPONSES, "/v1/responses", "/responses",
                              CONF_API_OPENAI, 1, 0, view_responses},
    [DAEMON_API_COMPLETIONS] = {DAEMON_API_COMPLETIONS, "/v1/completions", "/completions",
                                CONF_API_OPENAI, 1, 1, view_completions},
    [DAEMON_API_EMBEDDINGS] = {DAEMON_API_EMBEDDINGS, "/v1/embeddings", "/embeddings",
                               CONF_API_OPENAI, 0, 0, view_embeddings},
    [DAEMON_API_MESSAGES] = {DAEMON_API_MESSAGES, "/v1/messages", "/messages",
                             CONF_API_ANTHROPIC, 1, 0, view_messages},
};

const struct daemon_api *
api_find(const char *path)
{
    for (size_t i = 0; i < DAEMON_API__COUNT; i++)
        if (!strcmp(apis[i].path, path))
            return &apis[i];
    return NULL;
}

/* ---- which backend holds a response's state --------------------------------------
 *
 * A set-associative table: RESPONSE_SETS sets of RESPONSE_WAYS entries, an id's set
 * chosen by its hash; a new id replaces its set's oldest entry. Memory is fixed
 * (~5.5 MB, allocated on first use); an id is forgotten once RESPONSE_WAYS newer ids
 * have landed in its set, which is after ~RESPONSE_SETS * RESPONSE_WAYS others on
 * average. Entries hold two independent 64-bit hashes of the id, not the id. */
#define RESPONSE_SETS 8192
#define RESPONSE_WAYS 8

struct response_entry {
    uint64_t h1, h2;  /* 0, 0: empty */
    uint64_t seq;     /* when it was put: the oldest of a set goes first */
    char backend[64];
};

static struct response_entry *response_table;
static uint64_t response_seq;
static pthread_mutex_t response_mu = PTHREAD_MUTEX_INITIALIZER;

static void
response_hash(const char *id, size_t len, uint64_t *h1, uint64_t *h2)
{
    uint64_t a = 1469598103934665603ull, b = 0x9e3779b97f4a7c15ull;

    for (size_t i = 0; i < len; i++) {
        a = (a ^ (unsigned char)id[i]) * 1099511628211ull;
        b = (b ^ (unsigned char)id[i]) * 0xff51afd7ed558ccdull;
        b ^= b >> 29;
    }
    *h1 = a | 1; /* never the empty entry */
    *h2 = b;
}

void
api_response_ids_put(const char *id, size_t len, const char *backend)
{
    uint64_t h1, h2;

    if (!len || strlen(backend) >= sizeof(response_table->backend))
        return;
    response_hash(id, len, &h1, &h2);
    pthread_mutex_lock(&response_mu);
    if (!response_table) {
        response_table = calloc((size_t)RESPONSE_SETS * RESPONSE_WAYS, sizeof(*response_table));
        if (!response_table)
            abort();
    }
    struct response_entry *set = &response_table[(h2 % RESPONSE_SETS) * RESPONSE_WAYS], *e = set;
    for (int i = 0; i < RESPONSE_WAYS; i++) {
        if (set[i].h1 == h1 && set[i].h2 == h2) {
            e = &set[i];
            break;
        }
        if (set[i].seq < e->seq)
            e = &set[i];
    }
    e->h1 = h1;
    e->h2 = h2;
    e->seq = ++response_seq;
    memcpy(e->backend, backend, strlen(backend) + 1);
    pthread_mutex_unlock(&response_mu);
}

int
api_response_ids_get(const char *id, size_t len, char *out, size_t cap)
{
    uint64_t h1, h2;
    int found = 0;

    response_hash(id, len, &h1, &h2);
    pthread_mutex_lock(&response_mu);
    if (response_table) {
        struct response_entry *set = &response_table[(h2 % RESPONSE_SETS) * RESPONSE_WAYS];
        for (int i = 0; i < RESPONSE_WAYS && !found; i++) {
            if (set[i].h1 == h1 && set[i].h2 == h2 && strlen(set[i].backend) < cap) {
                memcpy(out, set[i].backend, strlen(set[i].backend) + 1);
                found = 1;
            }
        }
    }
    pthread_mutex_unlock(&response_mu);
    return found;
}
