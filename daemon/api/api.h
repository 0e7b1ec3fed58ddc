/* api.h - daemon/api/'s boundary: the API paths and their thin handlers.
 *
 * The paths triaged serves, added to the front end's route table at start (routes.c);
 * one row per path that reaches a backend (api.c: the request's view for the router,
 * the Responses ids; the relay itself is proxy.c's), and the handlers of the paths
 * triage answers itself: models (models.c), feedback and stats (outcomes.c), health,
 * readiness and reload (admin.c). Functions carry the api_ prefix; the rows' types
 * (struct daemon_api, DAEMON_API_*) keep the core's names for now. */
#ifndef TRIAGE_DAEMON_API_H
#define TRIAGE_DAEMON_API_H

#include <stddef.h>

#include <jansson.h>

#include "conf.h"

struct daemon_request; /* the daemon's request (daemon-int.h) */

/* The API paths whose requests go to a backend (api.c): one row each. */
enum daemon_api_id {
    DAEMON_API_CHAT = 0,     /* POST /v1/chat/completions */
    DAEMON_API_RESPONSES,    /* POST /v1/responses */
    DAEMON_API_COMPLETIONS,  /* POST /v1/completions */
    DAEMON_API_EMBEDDINGS,   /* POST /v1/embeddings */
    DAEMON_API_MESSAGES,     /* POST /v1/messages (Anthropic) */
    DAEMON_API__COUNT
};

struct daemon_api {
    enum daemon_api_id id;
    const char *path;          /* the client's path */
    const char *upstream_path; /* appended to the backend's url ("/chat/completions") */
    enum conf_api speaks;      /* the backends that serve it */
    int routed;                /* an alias is scored and routed; 0: only a backend name */
    int stream_usage;          /* a stream may get stream_options.include_usage added */
    /* Checks what the path needs of the body (root, borrowed) and returns a new
     * chat-shaped view for the router and the prompt digest: an object with
     * "messages" (or the legacy "prompt"), "max_tokens" and "tools", borrowing root's
     * values. NULL after replying 400. */
    json_t *(*view)(struct daemon_request *rq, json_t *root);
};

/* The API row of path, or NULL. */
const struct daemon_api *api_find(const char *path);

/* Responses API state (api.c): which backend answered a response id, bounded.
 * Thread-safe. Remembers backend (a name, copied) for id (len bytes). */
void api_response_ids_put(const char *id, size_t len, const char *backend);
/* Copies the backend that answered id into out (cap bytes). Returns 1 known, 0 not. */
int api_response_ids_get(const char *id, size_t len, char *out, size_t cap);

/* outcomes.c: run on the thread pool, reply from the loop */
void api_feedback(struct daemon_request *rq);
void api_stats(struct daemon_request *rq);
/* models.c: GET /v1/models (the aliases and the backends), GET /v1/models/{id}. */
void api_models(struct daemon_request *rq);
void api_model_get(struct daemon_request *rq);

/* admin.c: GET /healthz, GET /readyz, POST /admin/reload (on the thread pool). */
void api_healthz(struct daemon_request *rq);
void api_readyz(struct daemon_request *rq);
void api_admin_reload(struct daemon_request *rq);

/* routes.c: adds every path triaged serves itself to the route table (http.h), once
 * per process. At start, before the workers. Returns 0 or a negative errno. */
int api_routes_add(void);
#endif
