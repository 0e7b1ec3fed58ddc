/* cascade.c - policy cascade: a band of prompts is answered by the fast tier first; its
 * answer, held whole, is scored by the escalation model and either served or re-sent to
 * the strong tier (docs/cascade.md). proxy.c calls in at four places: routing, the fast
 * call's body, the fast call's end, and the response headers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon-int.h"
#include "log.h"
#include "prompt_features.h"
#include "storage.h"

void
daemon__cascade_route(struct daemon_request *rq, const json_t *root,
                      const struct router_scores *sc, int fast, int strong)
{
    const struct conf *c = rq->snap->conf;

    rq->cascade_fast = fast;
    rq->cascade_strong = strong;
    switch (router_cascade_pick(sc->score, c->cascade_low, c->cascade_high)) {
    case ROUTER_CASCADE_FAST:
        rq->backend = fast;
        rq->route_reason = "cascade_easy";
        break;
    case ROUTER_CASCADE_STRONG:
        rq->backend = strong;
        rq->route_reason = "cascade_hard";
        break;
    case ROUTER_CASCADE_TRY:
        rq->backend = fast;
        rq->route_reason = "cascade";
        rq->cascade = DAEMON_CASCADE_FAST;
        /* the answer is held whole until judged: the fast call is never a stream */
        rq->cascade_stream = rq->stream;
        rq->stream = 0;
        rq->cascade_logprobs = json_is_true(json_object_get(root, "logprobs"));
        rq->fast_started_ms = rq->started_unix_ms;
        rq->fast_t0_ns = daemon__now_ns();
        break;
    }
}

void
daemon__cascade_fast_body(const struct daemon_request *rq, json_t *req)
{
    json_object_set_new(req, "stream", json_false());
    json_object_del(req, "stream_options");
    if (rq->snap->conf->cascade_logprobs && !rq->cascade_logprobs)
        json_object_set_new(req, "logprobs", json_true());
}

/* Logs the fast call of an escalated request as a row of its own (kind "cascade", the
 * client request its parent, id "<parent>.fast": storage/export.c finds it so): what
 * escalation cost, and the answer's signals (answer, taken; NULL: none) that its judge
 * label or feedback trains the escalation model with. */
static void
log_fast_call(struct daemon_request *rq, int64_t tin, int64_t tout, const char *finish,
              const char *error_kind, void *answer, size_t answer_len)
{
    struct storage *st = daemon__storage();
    const struct conf_backend *b = &rq->snap->conf->backends[rq->backend];
    char id[48];

    if (!st) {
        free(answer);
        return;
    }
    struct storage_record *r = storage_record_new();
    double latency = daemon__ms_since(rq->fast_t0_ns);
    snprintf(id, sizeof(id), "%s.fast", rq->id);
    r->request_id = strdup(id);
    r->kind = strdup("cascade");
    r->parent_id = strdup(rq->id);
    r->started_ms = rq->fast_started_ms;
    r->finished_ms = rq->fast_started_ms + (int64_t)latency;
    r->backend = strdup(b->name);
    r->route_reason = strdup("cascade");
    r->score = rq->score;
    r->threshold = NAN;
    r->status = (int)rq->up_status;
    r->error_kind = error_kind ? strdup(error_kind) : NULL;
    r->latency_ms = latency;
    r->ttfb_ms = rq->ttfb_ms;
    r->tokens_in = tin;
    r->tokens_out = tout;
    r->finish_reason = finish ? strdup(finish) : NULL;
    r->cost_usd = (tin > 0 ? (double)tin * b->price_input : 0) / 1e6 +
                  (tout > 0 ? (double)tout * b->price_output : 0) / 1e6;
    r->answer = answer;
    r->answer_len = answer_len;
    r->escalation = rq->escalation;
    if (!r->request_id || !r->kind || !r->parent_id || !r->backend || !r->route_reason)
        abort(); /* out of memory aborts, project-wide */
    if (storage_submit(st, r) < 0)
        log_debug("outcome log queue full: cascade row %s dropped", id);
}

/* Appends one SSE event "data: <doc>\n\n" (doc borrowed). */
static void
sse_put(struct daemon_buf *out, const json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT);

    if (!text)
        abort();
    daemon__buf_append(out, "data: ", 6);
    daemon__buf_append(out, text, strlen(text));
    daemon__buf_append(out, "\n\n", 2);
    free(text);
}

/* Returns a completion (borrowed) as the SSE stream a streaming backend would have sent:
 * a chunk per choice with the role and the whole content (and its logprobs when kept),
 * a chunk with its finish_reason, the usage chunk when the client asked for it, [DONE]. */
static void
completion_to_sse(const json_t *doc, int with_usage, struct daemon_buf *out)
{
    const json_t *choices = json_object_get(doc, "choices"), *ch;
    const json_t *id = json_object_get(doc, "id"), *model = json_object_get(doc, "model");
    const json_t *created = json_object_get(doc, "created");
    size_t i;

    json_array_foreach(choices, i, ch) {
        const json_t *msg = json_object_get(ch, "message");
        json_t *delta = json_is_object(msg) ? json_deep_copy(msg) : json_object();
        json_t *c1 = json_object(), *c2 = json_object(), *arr1 = json_array(), *arr2 = json_array();
        /* a backend may leave out index or finish_reason: the position, null */
        json_t *index = json_object_get(ch, "index");
        index = json_is_integer(index) ? json_incref(index) : json_integer((json_int_t)i);
        json_t *e1 = json_pack("{s:O,s:o}", "index", index, "delta", delta);
        json_t *e2 = json_pack("{s:o,s:o,s:O?}", "index", index, "delta", json_object(),
                               "finish_reason", json_object_get(ch, "finish_reason"));
        if (!c1 || !c2 || !arr1 || !arr2 || !e1 || !e2)
            abort();
        if (json_object_get(ch, "logprobs"))
            json_object_set(e1, "logprobs", json_object_get(ch, "logprobs"));
        json_array_append_new(arr1, e1);
        json_array_append_new(arr2, e2);
        json_t *heads[2] = {c1, c2};
        for (int k = 0; k < 2; k++) {
            if (id)
                json_object_set(heads[k], "id", (json_t *)id);
            json_object_set_new(heads[k], "object", json_string("chat.completion.chunk"));
            if (created)
                json_object_set(heads[k], "created", (json_t *)created);
            if (model)
                json_object_set(heads[k], "model", (json_t *)model);
        }
        json_object_set_new(c1, "choices", arr1);
        json_object_set_new(c2, "choices", arr2);
        sse_put(out, c1);
        sse_put(out, c2);
        json_decref(c1);
        json_decref(c2);
    }
    if (with_usage && json_object_get(doc, "usage")) {
        json_t *u = json_pack("{s:s,s:[],s:O}", "object", "chat.completion.chunk", "choices",
                              "usage", json_object_get(doc, "usage"));
        if (!u)
            abort();
        if (id)
            json_object_set(u, "id", (json_t *)id);
        if (model)
            json_object_set(u, "model", (json_t *)model);
        sse_put(out, u);
        json_decref(u);
    }
    daemon__buf_append(out, "data: [DONE]\n\n", 14);
}

enum daemon_cascade_next
daemon__cascade_fast_done(struct daemon_request *rq, enum upstream_error err)
{
    const struct conf *c = rq->snap->conf;
    const char *fail = NULL;
    json_t *doc = NULL;
    int64_t tin = -1, tout = -1;
    char finish[32] = "";
    void *blob = NULL;
    size_t blob_len = 0;

    if (err)
        fail = upstream_error_name(err);
    else if (rq->up_status < 200 || rq->up_status >= 300)
        fail = "backend_status";
    else if (!(doc = json_loadb(rq->up_body.data ? rq->up_body.data : "", rq->up_body.len, 0,
                                NULL)))
        fail = "bad_answer";

    rq->escalation = NAN;
    if (doc) {
        const json_t *u = json_object_get(doc, "usage");
        const json_t *fr =
            json_object_get(json_array_get(json_object_get(doc, "choices"), 0), "finish_reason");
        if (json_is_integer(json_object_get(u, "prompt_tokens")))
            tin = json_integer_value(json_object_get(u, "prompt_tokens"));
        if (json_is_integer(json_object_get(u, "completion_tokens")))
            tout = json_integer_value(json_object_get(u, "completion_tokens"));
        if (json_is_string(fr))
            snprintf(finish, sizeof(finish), "%s", json_string_value(fr));
        float sig[FEATURES_N_ANSWER];
        const json_t *content = json_object_get(
            json_object_get(json_array_get(json_object_get(doc, "choices"), 0), "message"),
            "content");
        const char *text = json_is_string(content) ? json_string_value(content) : "";
        size_t text_len = json_is_string(content) ? json_string_length(content) : 0;
        double e;
        if (features_answer_from_response(rq->up_json, doc, sig) < 0 ||
            router_escalation_score(rq->snap->model, rq->up_json, text, text_len, sig, &e) < 0) {
            fail = "bad_answer"; /* no message to judge: the strong tier answers */
        } else {
            rq->escalation = e;
            /* kept on the row of the call that wrote it: judged later, it teaches the
             * escalation model. Its hashed words only where the log may keep what the
             * prompt hashes to (store_prompts = features or full) */
            if (daemon__storage())
                blob = router_answer_blob(rq->snap->model, text, text_len, sig,
                                          c->store_prompts == CONF_STORE_PROMPTS_FULL ||
                                              c->store_prompts == CONF_STORE_PROMPTS_FEATURES,
                                          &blob_len);
        }
    }

    if (rq->client_gone) {
        /* nobody to answer: no strong call for a client that hung up while we held; the
         * client's row is the fast call's */
        rq->cascade_answer = blob;
        rq->cascade_answer_len = blob_len;
        json_decref(doc);
        rq->cascade = DAEMON_CASCADE_SERVED;
        rq->stream = rq->cascade_stream;
        return DAEMON_CASCADE_NEXT_RELAY;
    }
    if (fail || router_cascade_escalate(rq->escalation, c->escalate_at)) {
        if (fail)
            log_info("request %s: cascade: the fast answer from %s failed (%s): escalating",
                     rq->id, c->backends[rq->backend].name, fail);
        /* a sampled lesson grades this answer as it was held (learn.c) */
        if (!fail && daemon__learn_sample(rq))
            daemon__buf_append(&rq->lesson_fast, rq->up_body.data, rq->up_body.len);
        log_fast_call(rq, tin, tout, finish[0] ? finish : NULL, fail, blob, blob_len);
        json_decref(doc);
        daemon__cascade_count(rq, 1, tin, tout);
        rq->cascade = DAEMON_CASCADE_ESCALATED;
        rq->stream = rq->cascade_stream;
        rq->backend = rq->cascade_strong;
        rq->first_backend = rq->backend;
        rq->attempt = 0;
        rq->fallback_pos = 0;
        return DAEMON_CASCADE_NEXT_ESCALATE;
    }

    /* served: the fast answer as the client asked for it, log-probabilities only if it
     * asked for them too */
    rq->cascade = DAEMON_CASCADE_SERVED;
    rq->stream = rq->cascade_stream;
    rq->cascade_answer = blob;
    rq->cascade_answer_len = blob_len;
    daemon__cascade_count(rq, 0, tin, tout);
    int changed = 0;
    if (!rq->cascade_logprobs) {
        const json_t *ch;
        size_t i;
        json_array_foreach(json_object_get(doc, "choices"), i, ch)
            changed |= json_object_del((json_t *)ch, "logprobs") == 0;
    }
    if (!rq->cascade_stream) {
        if (changed) {
            char *text = json_dumps(doc, JSON_COMPACT);
            if (!text)
                abort();
            daemon__buf_free(&rq->up_body);
            daemon__buf_append(&rq->up_body, text, strlen(text));
            free(text);
        }
        json_decref(doc);
        return DAEMON_CASCADE_NEXT_RELAY;
    }
    rq->tokens_in = tin;
    rq->tokens_out = tout;
    snprintf(rq->finish_reason, sizeof(rq->finish_reason), "%s", finish);
    struct daemon_buf sse = {0};
    const json_t *so = json_object_get(rq->up_json, "stream_options");
    completion_to_sse(doc, json_is_true(json_object_get(so, "include_usage")), &sse);
    json_decref(doc);
    /* the held answer goes out whole, as a stream: a sampled lesson grades it as is */
    if (daemon__learn_sample(rq))
        daemon__buf_append(&rq->lesson_answer, rq->up_body.data, rq->up_body.len);
    struct http_response *r = http_response_buffer(sse.data, sse.len, "text/event-stream");
    http_response_header(r, "Cache-Control", "no-cache");
    daemon__add_route_headers(rq, r);
    daemon__buf_free(&rq->up_body);
    rq->up_done = 1;
    rq->streaming = 1; /* logged as a stream: the client got one */
    http_set_response(rq, 200, r);
    return DAEMON_CASCADE_NEXT_SERVED;
}

void
daemon__cascade_headers(const struct daemon_request *rq, struct http_response *resp)
{
    char num[32];

    if (rq->cascade == DAEMON_CASCADE_NONE || rq->cascade == DAEMON_CASCADE_FAST)
        return;
    http_response_header(resp, "x-triage-escalated",
                            rq->cascade == DAEMON_CASCADE_ESCALATED ? "1" : "0");
    if (!isnan(rq->escalation)) {
        snprintf(num, sizeof(num), "%.4f", rq->escalation);
        http_response_header(resp, "x-triage-escalation-score", num);
    }
}

/* ---- counters since start (every worker's), for /v1/stats --------------------------- */

static atomic_uint_fast64_t n_tried, n_escalated;
static atomic_int_fast64_t fast_spent_nusd, saved_nusd; /* 1e-9 USD: integer atomics */

void
daemon__cascade_count(const struct daemon_request *rq, int escalated, int64_t tin, int64_t tout)
{
    const struct conf *c = rq->snap->conf;
    const struct conf_backend *f = &c->backends[rq->cascade_fast];
    const struct conf_backend *s = &c->backends[rq->cascade_strong];
    double in = tin > 0 ? (double)tin : 0, out = tout > 0 ? (double)tout : 0;
    double fast = (in * f->price_input + out * f->price_output) / 1e6;

    atomic_fetch_add(&n_tried, 1);
    if (escalated) {
        atomic_fetch_add(&n_escalated, 1);
        atomic_fetch_add(&fast_spent_nusd, llround(fast * 1e9)); /* paid, nobody got it */
    } else {
        /* the strong call it spared, priced at the fast answer's tokens */
        atomic_fetch_add(&saved_nusd,
                         llround(((in * s->price_input + out * s->price_output) / 1e6 - fast) * 1e9));
    }
}

void
daemon__cascade_gauges(uint64_t *tried, uint64_t *escalated, double *escalation_cost_usd,
                       double *saved)
{
    *tried = atomic_load(&n_tried);
    *escalated = atomic_load(&n_escalated);
    *escalation_cost_usd = (double)atomic_load(&fast_spent_nusd) / 1e9;
    *saved = (double)atomic_load(&saved_nusd) / 1e9;
}
