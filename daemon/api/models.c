/* models.c - GET /v1/models and GET /v1/models/{id}: the aliases and the backends in
 * OpenAI's list format, or one entry. */
#include <string.h>

#include "daemon-int.h"

static json_t *
model_entry(const char *id)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", id, "object", "model", "created",
                     (json_int_t)daemon__start_unix, "owned_by", "triage");
}

void
api_model_get(struct daemon_request *rq)
{
    const struct conf *c = rq->snap->conf;
    const char *id = rq->path + strlen("/v1/models/");
    double thr;
    int alias;

    if (conf_backend_find(c, id) >= 0 || daemon__parse_alias(c, id, &thr, &alias) == 1) {
        http_reply_json(rq, 200, model_entry(id));
        return;
    }
    http_reply_err(rq, HTTP_ERR_MODEL_NOT_FOUND,
                      "The model '%s' does not exist here", id);
}

void
api_models(struct daemon_request *rq)
{
    const struct conf *c = rq->snap->conf;
    json_t *data = json_array();

    for (size_t i = 0; i < c->n_aliases; i++)
        json_array_append_new(data, model_entry(c->aliases[i]));
    for (size_t i = 0; i < c->n_backends; i++)
        json_array_append_new(data, model_entry(c->backends[i].name));
    http_reply_json(rq, 200, json_pack("{s:s,s:o}", "object", "list", "data", data));
}
