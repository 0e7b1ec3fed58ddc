/* admin.c - the endpoints triage answers about itself: /healthz, /readyz (the snapshot
 * and the outcome log's state) and POST /admin/reload (on the thread pool). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon-int.h"
#include "storage.h"
#include "text.h"

void
api_healthz(struct daemon_request *rq)
{
    http_reply_json(rq, 200, json_pack("{s:s}", "status", "ok"));
}

void
api_readyz(struct daemon_request *rq)
{
    const struct conf *c = rq->snap->conf;

    if (rq->w->stopping) {
        http_reply_json(rq, 503, json_pack("{s:s}", "status", "stopping"));
        return;
    }
    json_t *backends = json_array();
    for (size_t i = 0; i < c->n_backends; i++)
        json_array_append_new(backends, json_string(c->backends[i].name));
    /* A failing outcome log (disk full, read-only) degrades, it does not stop
     * serving: still 200, with the log's state for operators and probes. Degraded
     * lasts [storage] degraded_hold_ms past the last failure, not just until the next
     * good write, so probes see a flapping disk. Storage's clock is CLOCK_MONOTONIC too. */
    struct storage_counters sc = {0};
    if (daemon__storage())
        storage_get_counters(daemon__storage(), &sc);
    int64_t since_failure_ms = (int64_t)(daemon__now_ns() / 1000000u) - sc.last_error_ms;
    int degraded = sc.degraded || (sc.last_error_ms > 0 &&
                                   since_failure_ms < (int64_t)c->degraded_hold_ms);
    json_t *body = json_pack("{s:s,s:s,s:I,s:o,s:b,s:b,s:I,s:I,s:I}", "status",
                             degraded ? "degraded" : "ready", "model",
                             router_model_version(rq->snap->model), "generation",
                             (json_int_t)rq->snap->generation, "backends", backends, "storage",
                             daemon__storage() != NULL, "storage_degraded", degraded,
                             "log_rows_failed", (json_int_t)sc.failed, "log_rows_dropped",
                             (json_int_t)sc.dropped, "log_rows_waiting", (json_int_t)sc.depth);
    if (degraded) { /* why: the engine's text, with the file's path (a path may be any bytes) */
        char why[3 * STORAGE_ERROR_MAX];
        text_utf8_clean(why, sizeof(why), sc.last_error, strlen(sc.last_error));
        json_object_set_new(body, "storage_error", json_string(why));
    }
    http_reply_json(rq, 200, body);
}

struct reload_job {
    uv_work_t work;
    struct daemon_request *rq;
    int rc;
    char err[512];
};

static void
reload_work(uv_work_t *req)
{
    struct reload_job *j = req->data;

    j->rc = daemon__reload(j->err, sizeof(j->err));
}

static void
reload_after(uv_work_t *req, int status)
{
    struct reload_job *j = req->data;
    struct daemon_request *rq = j->rq;

    if (rq->orphaned) {
        free(j);
        daemon__request_orphan_done(rq);
        return;
    }
    rq->work_pending = 0;
    if (j->rc == 0) {
        struct daemon_snapshot *s = daemon__snapshot_get();
        http_reply_json(rq, 200,
                           json_pack("{s:s,s:I,s:s}", "status", "reloaded", "generation",
                                     (json_int_t)s->generation, "model",
                                     router_model_version(s->model)));
        daemon__snapshot_put(s);
    } else {
        http_reply_err(rq, HTTP_ERR_RELOAD_FAILED,
                          "reload failed, the running config is kept: %s", j->err);
    }
    free(j);
    http_run(rq->w);
}

void
api_admin_reload(struct daemon_request *rq)
{
    struct reload_job *j = calloc(1, sizeof(*j));
    if (!j)
        abort();
    j->rq = rq;
    j->work.data = j;
    rq->work_pending = 1;
    if (uv_queue_work(&rq->w->loop, &j->work, reload_work, reload_after) < 0) {
        rq->work_pending = 0;
        free(j);
        http_reply_err(rq, HTTP_ERR_INTERNAL, "cannot queue the reload");
    }
}
