/* outcomes.c - POST /v1/feedback and GET /v1/stats: outcome-log queries run on libuv's thread pool.
 *
 * SQLite reads and the feedback write may touch the disk, so they never run on a
 * worker loop: each request queues a job (uv_queue_work) and replies from the
 * after-work callback, back on its loop. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon-int.h"
#include "log.h"
#include "storage.h"

struct outcome_job {
    uv_work_t work;
    struct daemon_request *rq;
    /* feedback */
    char *request_id;
    char *label;
    char *source;
    double score;
    int rc;
    /* stats */
    char window[16];
    struct storage_price *prices;
    size_t n_prices;
    json_t *result;
    char err[512];
    char serving[80];      /* the model version the snapshot routes with */
};

static void
job_free(struct outcome_job *j)
{
    free(j->request_id);
    free(j->label);
    free(j->source);
    free(j->prices);
    json_decref(j->result);
    free(j);
}

/* Returns 1 and frees j when rq was abandoned by MHD while the job ran. */
static int
job_orphaned(struct outcome_job *j)
{
    struct daemon_request *rq = j->rq;

    if (!rq->orphaned) {
        rq->work_pending = 0;
        return 0;
    }
    job_free(j);
    daemon__request_orphan_done(rq);
    return 1;
}

static int
queue_job(struct daemon_request *rq, struct outcome_job *j, uv_work_cb work, uv_after_work_cb after)
{
    j->rq = rq;
    j->work.data = j;
    rq->work_pending = 1;
    if (uv_queue_work(&rq->w->loop, &j->work, work, after) < 0) {
        rq->work_pending = 0;
        job_free(j);
        http_reply_err(rq, HTTP_ERR_INTERNAL, "cannot queue the query");
        return -1;
    }
    return 0;
}

static int
need_storage(struct daemon_request *rq)
{
    if (daemon__storage())
        return 0;
    http_reply_err(rq, HTTP_ERR_STORAGE_DISABLED,
                      "This server keeps no outcome log ([storage] path is not set)");
    return -1;
}

static char *
dup_or_null(const char *s)
{
    char *d;

    if (!s)
        return NULL;
    if (!(d = strdup(s)))
        abort();
    return d;
}

/* ---- feedback ---- */

/* How long after its request feedback may arrive before the request's row: a row waits
 * in its replica's queue for flush_interval_ms normally, longer while the database is
 * away (but then feedback cannot be stored either). */
#define FEEDBACK_EARLY_MS 600000

/* 1 when feedback on id may come before its row: the log is shared by replicas
 * (PostgreSQL), so another replica may still hold the row in its queue, and id is one of
 * ours (daemon__make_id: "req_", 12 hex digits of its start in Unix ms, 12 random) that
 * started within FEEDBACK_EARLY_MS (a minute of clock skew allowed the other way). */
static int
feedback_may_be_early(const char *id)
{
    static const char hex[] = "0123456789abcdef";
    struct timespec ts;
    int64_t started = 0;

    if (!storage_target_is_pg(storage_path(daemon__storage())) || strlen(id) != 28 ||
        strncmp(id, "req_", 4))
        return 0;
    for (int i = 4; i < 28; i++) {
        const char *digit = strchr(hex, id[i]);
        if (!id[i] || !digit)
            return 0;
        if (i < 16)
            started = started * 16 + (digit - hex);
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    return started > now - FEEDBACK_EARLY_MS && started < now + 60000;
}

static void
feedback_work(uv_work_t *w)
{
    struct outcome_job *j = w->data;

    if (feedback_may_be_early(j->request_id))
        j->rc = storage_feedback_early(daemon__storage(), j->request_id, j->score, j->label,
                                       j->source, j->err, sizeof(j->err));
    else
        j->rc = storage_feedback(daemon__storage(), j->request_id, j->score, j->label,
                                 j->source, j->err, sizeof(j->err));
}

static void
feedback_after(uv_work_t *w, int status)
{
    struct outcome_job *j = w->data;
    struct daemon_request *rq = j->rq;

    if (job_orphaned(j))
        return;
    if (j->rc == 2) /* stored before its request's row reached the shared log */
        http_reply_json(rq, 202,
                           json_pack("{s:s,s:s,s:b,s:s}", "status", "pending", "request_id",
                                     j->request_id, "replaced", 0, "message",
                                     "stored; the request is not in the shared log yet (its "
                                     "row may still be queued on the replica that served "
                                     "it): the feedback counts once the row is written"));
    else if (j->rc >= 0)
        http_reply_json(rq, 200,
                           json_pack("{s:s,s:s,s:b}", "status", "stored", "request_id",
                                     j->request_id, "replaced", j->rc == 1));
    else if (j->rc == -EINVAL)
        http_reply_err(rq, HTTP_ERR_INVALID_FEEDBACK, "%s", j->err);
    else if (j->rc == -ENOENT)
        http_reply_err(rq, HTTP_ERR_UNKNOWN_REQUEST_ID, "%s",
                          j->err[0] ? j->err : "no such request id");
    else if (j->rc == -ENOTCONN)
        http_reply_err(rq, HTTP_ERR_STORAGE_UNAVAILABLE,
                          "the outcome log is unreachable; retry later: %s", j->err);
    else
        http_reply_err(rq, HTTP_ERR_STORAGE_ERROR, "%s",
                          j->err[0] ? j->err : "the outcome log failed");
    job_free(j);
    http_run(rq->w);
}

void
api_feedback(struct daemon_request *rq)
{
    json_error_t jerr;
    json_t *root;

    if (need_storage(rq) < 0)
        return;
    root = json_loadb(rq->body.data ? rq->body.data : "", rq->body.len, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        http_reply_err(rq, HTTP_ERR_INVALID_JSON,
                          "The body must be a JSON object: {\"request_id\", \"score\" | "
                          "\"label\", \"source\"}");
        return;
    }
    const char *id = json_string_value(json_object_get(root, "request_id"));
    json_t *score = json_object_get(root, "score");
    const char *label = json_string_value(json_object_get(root, "label"));
    if (!id || !*id || (!json_is_number(score) && !label) || (json_is_number(score) && label)) {
        json_decref(root);
        http_reply_err(rq, HTTP_ERR_INVALID_FEEDBACK,
                          "Give \"request_id\" and exactly one of \"score\" (0..1) or "
                          "\"label\" (\"good\" | \"bad\")");
        return;
    }
    struct outcome_job *j = calloc(1, sizeof(*j));
    if (!j)
        abort();
    j->request_id = dup_or_null(id);
    j->label = dup_or_null(label);
    j->source = dup_or_null(json_string_value(json_object_get(root, "source")));
    j->score = json_is_number(score) ? json_number_value(score) : NAN;
    json_decref(root);
    queue_job(rq, j, feedback_work, feedback_after);
}

/* ---- stats ---- */

/* Adds section "models" to a stats reply: the version served, the automatic retrains,
 * and the registry's versions and changes of champion over time (storage_model_timeline).
 * A registry that cannot be read leaves its lists empty and says why in "error". */
static void
add_models(json_t *stats, const char *db_path, const char *serving)
{
    uint64_t runs, promotions;
    char err[256];
    json_t *timeline = storage_model_timeline(db_path, err, sizeof(err));

    daemon__retrain_gauges(&runs, &promotions);
    json_t *m = json_pack("{s:s, s:I, s:I, s:b}", "serving", serving, "retrains", (json_int_t)runs,
                          "promotions", (json_int_t)promotions, "retraining",
                          daemon__retrain_running());
    if (!m)
        abort(); /* out of memory */
    if (timeline) {
        json_object_update(m, timeline);
        json_decref(timeline);
    } else {
        json_object_set_new(m, "versions", json_array());
        json_object_set_new(m, "changes", json_array());
        json_object_set_new(m, "error", json_string(err));
    }
    if (json_object_set_new(stats, "models", m) < 0)
        abort();
}

static void
stats_work(uv_work_t *w)
{
    struct outcome_job *j = w->data;

    j->result = storage_stats(storage_path(daemon__storage()), j->window, j->prices, j->n_prices,
                              0, j->err, sizeof(j->err));
    j->rc = j->result ? 0 : -errno;
    if (j->result)
        add_models(j->result, storage_path(daemon__storage()), j->serving);
}

/* The routes holding a share, live (not from the log): per tier its backend, the target
 * share, the share realised in the workers' recent windows and since start, and the
 * score cut to the next tier in force. Returns a new array. */
static json_t *
share_routes_json(void)
{
    struct daemon_gauges *g = malloc(sizeof(*g)); /* ~30 KB: not on a loop's stack */
    json_t *out = json_array();

    if (!out || !g)
        abort();
    if (daemon_gauges_get(g) < 0) {
        free(g);
        return out;
    }
    for (size_t i = 0; i < g->n_share_routes; i++) {
        const struct daemon_share_gauges *sg = &g->share[i];
        json_t *tiers = json_array();
        for (size_t t = 0; t < sg->n_tiers; t++) {
            const struct daemon_share_tier_gauges *tg = &sg->tier[t];
            json_t *o = json_pack("{s:s,s:I}", "backend", tg->backend, "requests",
                                  (json_int_t)tg->requests);
            json_object_set_new(o, "target", isfinite(tg->target) ? json_real(tg->target)
                                                                   : json_null());
            json_object_set_new(o, "recent", isfinite(tg->recent) ? json_real(tg->recent)
                                                                   : json_null());
            json_object_set_new(o, "total", sg->requests ? json_real((double)tg->requests /
                                                                     (double)sg->requests)
                                                         : json_null());
            json_object_set_new(o, "cut", isfinite(tg->cut) ? json_real(tg->cut) : json_null());
            json_array_append_new(tiers, o);
        }
        json_array_append_new(out, json_pack("{s:s,s:I,s:o}", "route", sg->route, "requests",
                                             (json_int_t)sg->requests, "tiers", tiers));
    }
    free(g);
    return out;
}

static void
stats_after(uv_work_t *w, int status)
{
    struct outcome_job *j = w->data;
    struct daemon_request *rq = j->rq;

    if (job_orphaned(j))
        return;
    if (j->result) {
        json_object_set_new(j->result, "share_routes", share_routes_json());
        /* the cascade's counters since start (cascade.c), beside the log's window */
        uint64_t tried, escalated;
        double cost, saved;
        daemon__cascade_gauges(&tried, &escalated, &cost, &saved);
        json_t *cj = json_pack("{s:s, s:I, s:I, s:o, s:f, s:f}", "since", "start", "judged",
                               (json_int_t)tried, "escalated", (json_int_t)escalated,
                               "escalation_rate",
                               tried ? json_real((double)escalated / (double)tried) : json_null(),
                               "escalation_cost_usd", cost, "saved_usd", saved);
        if (!cj || json_object_set_new(j->result, "cascade", cj) < 0)
            abort(); /* out of memory aborts, project-wide */
        http_reply_json(rq, 200, j->result);
        j->result = NULL;
    } else if (j->rc == -ENOTCONN) {
        http_reply_err(rq, HTTP_ERR_STORAGE_UNAVAILABLE,
                          "the outcome log is unreachable; retry later: %s", j->err);
    } else {
        http_reply_err(rq, HTTP_ERR_STORAGE_ERROR, "%s", j->err);
    }
    job_free(j);
    http_run(rq->w);
}

void
api_stats(struct daemon_request *rq)
{
    const struct conf *c = rq->snap->conf;
    const char *window = http_request_query(rq, "window");
    int64_t ms;

    if (need_storage(rq) < 0)
        return;
    if (!window)
        window = "24h";
    if (strlen(window) >= sizeof(((struct outcome_job *)0)->window) ||
        storage_window_parse(window, &ms) < 0) {
        http_reply_err(rq, HTTP_ERR_INVALID_WINDOW,
                          "window must be one of 15m, 1h, 24h, 7d");
        return;
    }
    struct outcome_job *j = calloc(1, sizeof(*j));
    if (!j)
        abort();
    snprintf(j->window, sizeof(j->window), "%s", window);
    snprintf(j->serving, sizeof(j->serving), "%s", rq->snap->model ? router_model_version(rq->snap->model) : "");
    j->n_prices = c->n_backends;
    j->prices = calloc(c->n_backends ? c->n_backends : 1, sizeof(*j->prices));
    if (!j->prices)
        abort();
    /* names are borrowed from the snapshot, which rq holds until the job ends */
    for (size_t i = 0; i < c->n_backends; i++)
        j->prices[i] = (struct storage_price){c->backends[i].name, c->backends[i].price_input,
                                              c->backends[i].price_output};
    queue_job(rq, j, stats_work, stats_after);
}
