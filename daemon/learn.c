/* learn.c - labels without humans: shadow answers from the other tiers and judge grades,
 * off the client's path.
 *
 * When a routed request has been answered (the client has its whole answer), a share
 * of them ([learning] shadow_rate) becomes a lesson: the same prompt is sent, without
 * streaming, to every other tier's backend (a shadow call), and the [learning] judge
 * backend grades each answer, the served one and the shadows, one judge call per answer
 * (router_judge_request / router_judge_parse). A grade becomes an outcome label in the
 * log (storage_outcome_submit, source "judge") for the backend that wrote the answer,
 * so the log holds both sides of the same prompt, which is what the score is trained
 * from. A streamed answer went by in pieces and is not kept, so for a sampled stream
 * (sampled when it begins, its body kept) every tier is asked again, its own backend
 * included. Shadow and judge calls are rows of their own (kind "shadow" / "judge",
 * parent the client's request id), costed like any call.
 *
 * Lowest priority, by construction:
 *  - nothing here runs before the client's request has ended, and nothing runs on a
 *    worker: a worker draws the sample and hands the request's bytes over (no copy, no
 *    parse); the learning thread, with its own loop and upstream client and a lower
 *    scheduling priority (nice 10), parses them and makes every call;
 *  - at most [learning] max_concurrent calls run at once; the rest wait in a bounded
 *    queue (LEARN_QUEUE, and as many handed-over requests) and beyond it are dropped
 *    and counted;
 *  - a call never takes a backend's last free max_concurrent slots: it is dropped when
 *    the backend is at half its limit or more;
 *  - a daily budget (UTC days) caps shadow + judge spend: each call reserves a pessimistic
 *    cost before it starts and settles to its real cost when it ends, and a call whose
 *    reservation does not fit is dropped and counted.
 * A failed, timed-out or unparseable judge answer produces no label and no client error.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "daemon-int.h"
#include "log.h"
#include "storage.h"

#define LEARN_QUEUE 4096              /* calls (and offers) waiting before new ones are dropped */
#define LEARN_MAX_ANSWER (4u << 20)   /* a shadow or judge answer held whole, at most */
#define LEARN_JUDGE_MAX_TOKENS 300    /* what router_judge_request asks for */
#define LEARN_SHADOW_MIN_TOKENS 1024  /* reserved output when the answer length is unknown */

/* ---- the budget --------------------------------------------------------------------- */

static struct {
    pthread_mutex_t lock;
    int64_t day;      /* UTC day the figures are for */
    double spent;     /* USD, settled calls of that day */
    double reserved;  /* USD, calls running now */
} budget = {.lock = PTHREAD_MUTEX_INITIALIZER};

static struct {
    atomic_uint_fast64_t lessons, shadow_calls, judge_calls, labels, judge_unparseable, failed,
        dropped_queue, dropped_budget, dropped_busy, judged;
} counters; /* see struct daemon_learn_gauges */

static int64_t
utc_day(void)
{
    return (int64_t)time(NULL) / 86400;
}

/* Reserves usd against cap. Returns 0, or -1 when it does not fit today. */
static int
budget_reserve(double usd, double cap)
{
    int rc = -1;

    pthread_mutex_lock(&budget.lock);
    int64_t day = utc_day();
    if (day != budget.day) {
        budget.day = day;
        budget.spent = 0;
    }
    if (budget.spent + budget.reserved + usd <= cap) {
        budget.reserved += usd;
        rc = 0;
    }
    pthread_mutex_unlock(&budget.lock);
    return rc;
}

/* Turns a reservation into what the call really cost. */
static void
budget_settle(double reserved, double actual)
{
    pthread_mutex_lock(&budget.lock);
    budget.reserved -= reserved;
    if (budget.reserved < 1e-12) /* no calls running: no rounding residue either */
        budget.reserved = 0;
    if (utc_day() == budget.day)
        budget.spent += actual;
    pthread_mutex_unlock(&budget.lock);
}

uint64_t
daemon__learn_judged(void)
{
    return atomic_load(&counters.judged);
}

void
daemon__learn_gauges(struct daemon_learn_gauges *out)
{
#define COPY(f) out->f = atomic_load(&counters.f)
    COPY(lessons);
    COPY(shadow_calls);
    COPY(judge_calls);
    COPY(labels);
    COPY(judge_unparseable);
    COPY(failed);
    COPY(dropped_queue);
    COPY(dropped_budget);
    COPY(dropped_busy);
    COPY(judged);
#undef COPY
    pthread_mutex_lock(&budget.lock);
    out->spent_today_usd = utc_day() == budget.day ? budget.spent : 0;
    out->reserved_usd = budget.reserved;
    pthread_mutex_unlock(&budget.lock);
}

/* ---- lessons and calls --------------------------------------------------------------- */

/* One sampled client request: its prompt, shared by the calls it spawns. */
struct lesson {
    int refs;
    struct daemon_snapshot *snap; /* the config and backends the request ran with */
    char parent_id[40];
    json_t *messages;             /* the client's messages */
    json_t *request;              /* the client's body, for shadow calls */
    int64_t tokens_in;            /* of the served answer, -1 unknown */
    int64_t tokens_out;
    int graded, labelled;         /* answers sent to the judge, and grades written */
};

enum call_kind { CALL_SHADOW, CALL_JUDGE };

struct learn_call {
    struct daemon_learn *l;
    struct learn_call *next;     /* queue or running list */
    struct learn_call *prev;
    struct lesson *lesson;
    enum call_kind kind;
    int backend;                 /* the backend called */
    int graded;                  /* CALL_JUDGE: the backend whose answer is graded */
    char *body;                  /* the request body until the call starts */
    size_t body_len;
    double reserve_usd;
    struct upstream_call *call;
    long status;
    struct daemon_buf answer;
    uint64_t t_start_ns;
    int64_t started_unix_ms;
    char id[40];
};

/* A finished client request handed over by a worker: what a lesson is made of. */
struct offer {
    struct offer *next;
    struct daemon_snapshot *snap; /* a reference */
    char parent_id[40];
    struct daemon_buf body;       /* the client's request bytes (taken from the request) */
    struct daemon_buf answer;     /* the answer as the client got it; empty for a stream */
    struct daemon_buf fast;       /* an escalated cascade's fast answer (a chat completion) */
    int backend;
    int fast_backend;             /* the backend that wrote fast */
    int64_t tokens_in, tokens_out;
};

/* The learning thread: its own loop and upstream client, so that shadow and judge calls
 * never take a worker loop's time, at a lower scheduling priority than the workers. */
struct daemon_learn {
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;              /* offers are waiting, or stop */
    struct upstream *up;
    pthread_mutex_t lock;         /* offers, stop */
    struct offer *offers;
    size_t n_offers;
    int stop;
    struct learn_call *queue_head, *queue_tail;
    size_t queued;
    struct learn_call *running;
    size_t n_running;
    uint64_t rng;                 /* request ids of the calls */
};

static struct daemon_learn learner;
static atomic_int learner_started;

static void pump(struct daemon_learn *l);

static void
lesson_put(struct lesson *s)
{
    if (!s || --s->refs > 0)
        return;
    if (s->graded && s->labelled == s->graded) /* every answer of the prompt got a grade */
        atomic_fetch_add(&counters.judged, 1);
    json_decref(s->messages);
    json_decref(s->request);
    daemon__snapshot_put(s->snap);
    free(s);
}

static void
call_free(struct learn_call *c)
{
    lesson_put(c->lesson);
    free(c->body);
    daemon__buf_free(&c->answer);
    free(c);
}

static double
price(const struct conf_backend *b, double tokens_in, double tokens_out)
{
    return (tokens_in * b->price_input + tokens_out * b->price_output) / 1e6;
}

/* Queues a call (takes body). Drops it, counted, when the queue is full. */
static void
enqueue(struct daemon_learn *l, struct lesson *s, enum call_kind kind, int backend, int graded,
        char *body, size_t body_len, double reserve_usd)
{
    if (l->queued >= LEARN_QUEUE) {
        atomic_fetch_add(&counters.dropped_queue, 1);
        free(body);
        return;
    }
    struct learn_call *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    c->l = l;
    c->lesson = s;
    s->refs++;
    c->kind = kind;
    c->backend = backend;
    c->graded = graded;
    c->body = body;
    c->body_len = body_len;
    c->reserve_usd = reserve_usd;
    if (l->queue_tail)
        l->queue_tail->next = c;
    else
        l->queue_head = c;
    l->queue_tail = c;
    l->queued++;
}

/* Queues the judge's grading of backend's answer to the lesson's prompt. */
static void
enqueue_judge(struct daemon_learn *l, struct lesson *s, int graded, const char *answer,
              size_t len)
{
    const struct conf *c = s->snap->conf;
    int judge = c->judge ? conf_backend_find(c, c->judge) : -1;

    if (judge < 0)
        return;
    char *body = router_judge_request(s->messages, answer, len, c->backends[judge].model);
    if (!body)
        return;
    size_t blen = strlen(body);
    s->graded++;
    /* ~3 bytes a token is pessimistic for English text; the answer is capped by the
     * judge's max_tokens */
    double reserve = price(&c->backends[judge], (double)blen / 3 + 64, LEARN_JUDGE_MAX_TOKENS);
    enqueue(l, s, CALL_JUDGE, judge, graded, body, blen, reserve);
}

/* Queues a shadow call of the lesson's prompt to backend. */
static void
enqueue_shadow(struct daemon_learn *l, struct lesson *s, int backend)
{
    const struct conf_backend *b = &s->snap->conf->backends[backend];
    json_t *req = json_copy(s->request); /* shallow: nested values are shared, never changed */

    json_object_set_new(req, "model", json_string(b->model));
    json_object_del(req, "stream");
    json_object_del(req, "stream_options");
    if (b->overrides) {
        json_t *o = json_loads(b->overrides, 0, NULL);
        if (json_is_object(o))
            json_object_update(req, o);
        json_decref(o);
    }
    char *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!body)
        return;
    /* The reservation: the served call's input (the same prompt), and for output the
     * client's max_tokens, else four times the served answer, at least 1024 tokens. */
    size_t blen = strlen(body);
    double in = s->tokens_in > 0 ? (double)s->tokens_in : (double)blen / 3;
    json_t *mt = json_object_get(s->request, "max_completion_tokens");
    if (!json_is_integer(mt))
        mt = json_object_get(s->request, "max_tokens");
    double out = json_is_integer(mt) && json_integer_value(mt) > 0
                     ? (double)json_integer_value(mt)
                     : fmax(LEARN_SHADOW_MIN_TOKENS, 4.0 * (double)s->tokens_out);
    enqueue(l, s, CALL_SHADOW, backend, backend, body, blen, price(b, in, out));
}

/* The assistant's text of a chat completion (borrowed from doc), or NULL. */
static const char *
answer_text(json_t *doc, size_t *len)
{
    json_t *choice = json_array_get(json_object_get(doc, "choices"), 0);
    json_t *content = json_object_get(json_object_get(choice, "message"), "content");

    if (!json_is_string(content))
        return NULL;
    *len = json_string_length(content);
    return json_string_value(content);
}

/* Writes the call's own row: a shadow or judge call is logged and costed like a
 * client's. */
static void
log_call(struct learn_call *c, enum upstream_error err, int64_t tin, int64_t tout, double cost,
         const char *finish)
{
    struct storage *st = daemon__storage();
    const struct conf *conf = c->lesson->snap->conf;

    if (!st)
        return;
    struct storage_record *r = storage_record_new();
    double latency = daemon__ms_since(c->t_start_ns);
    r->request_id = strdup(c->id);
    r->kind = strdup(c->kind == CALL_SHADOW ? "shadow" : "judge");
    r->parent_id = strdup(c->lesson->parent_id);
    r->started_ms = c->started_unix_ms;
    r->finished_ms = c->started_unix_ms + (int64_t)latency;
    r->backend = strdup(conf->backends[c->backend].name);
    r->route_reason = strdup(c->kind == CALL_SHADOW ? "shadow" : "judge");
    r->score = NAN;
    r->threshold = NAN;
    r->status = (int)c->status;
    r->error_kind = err != UPSTREAM_OK ? strdup(upstream_error_name(err))
                    : c->status != 200 ? strdup("backend_status")
                                       : NULL;
    r->latency_ms = latency;
    r->ttfb_ms = NAN;
    r->tokens_in = tin;
    r->tokens_out = tout;
    r->finish_reason = finish ? strdup(finish) : NULL;
    r->cost_usd = cost;
    if (storage_submit(st, r) < 0)
        log_debug("outcome log queue full: learning row %s dropped", c->id);
}

static void
on_header(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
    (void)ctx;
    (void)name;
    (void)nlen;
    (void)value;
    (void)vlen;
}

static void
on_headers_done(void *ctx, long status)
{
    struct learn_call *c = ctx;

    c->status = status;
}

static int
on_data(void *ctx, const char *buf, size_t len)
{
    struct learn_call *c = ctx;

    if (c->answer.len + len > LEARN_MAX_ANSWER)
        return -1;
    daemon__buf_append(&c->answer, buf, len);
    return 0;
}

static void
unlink_running(struct learn_call *c)
{
    struct daemon_learn *l = c->l;

    if (c->prev)
        c->prev->next = c->next;
    else
        l->running = c->next;
    if (c->next)
        c->next->prev = c->prev;
    l->n_running--;
}

static void
on_done(void *ctx, enum upstream_error err, const char *detail)
{
    struct learn_call *c = ctx;
    struct daemon_learn *l = c->l;
    const struct conf *conf = c->lesson->snap->conf;
    const struct conf_backend *b = &conf->backends[c->backend];
    json_t *doc = NULL;
    int64_t tin = -1, tout = -1;
    const char *finish = NULL;

    c->call = NULL;
    unlink_running(c);
    if (err == UPSTREAM_OK && c->status == 200)
        doc = json_loadb(c->answer.data ? c->answer.data : "", c->answer.len, 0, NULL);
    json_t *usage = json_object_get(doc, "usage");
    if (json_is_integer(json_object_get(usage, "prompt_tokens")))
        tin = json_integer_value(json_object_get(usage, "prompt_tokens"));
    if (json_is_integer(json_object_get(usage, "completion_tokens")))
        tout = json_integer_value(json_object_get(usage, "completion_tokens"));
    json_t *choice = json_array_get(json_object_get(doc, "choices"), 0);
    finish = json_string_value(json_object_get(choice, "finish_reason"));
    /* No usage: the reservation stands in for the cost (pessimistic, never zero). */
    double cost = tin >= 0 && tout >= 0 ? price(b, (double)tin, (double)tout) : c->reserve_usd;
    if (err != UPSTREAM_OK && c->status == 0)
        cost = 0; /* nothing was answered */
    budget_settle(c->reserve_usd, cost);
    log_call(c, err, tin, tout, cost, finish);

    size_t len = 0;
    const char *text = doc ? answer_text(doc, &len) : NULL;
    if (!text) {
        atomic_fetch_add(&counters.failed, 1);
        log_debug("learning: %s call to %s for %s failed: %s (status %ld)",
                  c->kind == CALL_SHADOW ? "shadow" : "judge", b->name, c->lesson->parent_id,
                  err != UPSTREAM_OK ? (detail ? detail : upstream_error_name(err)) : "no answer",
                  c->status);
    } else if (c->kind == CALL_SHADOW) {
        enqueue_judge(l, c->lesson, c->backend, text, len);
    } else {
        double q;
        int rating;
        if (router_judge_parse(text, len, &q, &rating) < 0) {
            atomic_fetch_add(&counters.judge_unparseable, 1);
            log_debug("learning: the judge's answer for %s could not be parsed",
                      c->lesson->parent_id);
        } else {
            char detail_s[96];
            snprintf(detail_s, sizeof(detail_s), "%s rating=%d judge=%s", ROUTER_JUDGE_VERSION,
                     rating, b->name);
            struct storage *st = daemon__storage();
            if (st && storage_outcome_submit(st, c->lesson->parent_id,
                                             conf->backends[c->graded].name, "judge", q,
                                             detail_s) == 0) {
                atomic_fetch_add(&counters.labels, 1);
                c->lesson->labelled++;
            }
        }
    }
    json_decref(doc);
    call_free(c);
    pump(l);
}

/* Starts queued calls while there is room. */
static void
pump(struct daemon_learn *l)
{
    while (l->queue_head &&
           l->n_running < l->queue_head->lesson->snap->conf->learn_max_concurrent) {
        struct learn_call *c = l->queue_head;
        l->queue_head = c->next;
        if (!l->queue_head)
            l->queue_tail = NULL;
        l->queued--;
        c->next = NULL;

        const struct daemon_snapshot *snap = c->lesson->snap;
        const struct conf_backend *b = &snap->conf->backends[c->backend];
        if (b->api != CONF_API_OPENAI) { /* a chat completion cannot go to it */
            call_free(c);
            continue;
        }
        /* never the backend's last free slots: client requests come first */
        if (b->max_concurrent &&
            atomic_load(&snap->inflight[c->backend]) * 2 >= b->max_concurrent) {
            atomic_fetch_add(&counters.dropped_busy, 1);
            call_free(c);
            continue;
        }
        if (budget_reserve(c->reserve_usd, snap->conf->shadow_budget_usd_per_day) < 0) {
            atomic_fetch_add(&counters.dropped_budget, 1);
            call_free(c);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        c->started_unix_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        c->t_start_ns = daemon__now_ns();
        daemon__make_id(&l->rng, c->started_unix_ms, c->id);

        char *headers = daemon__backend_headers(b, 0, c->id);
        char *url = daemon__backend_url(b, "/chat/completions");
        struct upstream_request ur = {
            .url = url,
            .headers = headers,
            .body = c->body,
            .body_len = c->body_len,
            .connect_timeout_ms = b->connect_timeout_ms,
            .first_byte_timeout_ms = b->first_byte_timeout_ms,
            .idle_timeout_ms = b->idle_timeout_ms,
            .timeout_ms = b->timeout_ms,
            .cb = {on_header, on_headers_done, on_data, on_done},
            .ctx = c,
        };
        c->body = NULL; /* the call's now */
        c->call = upstream_start(l->up, &ur);
        daemon__backend_headers_free(headers);
        free(url);
        if (!c->call) {
            budget_settle(c->reserve_usd, 0);
            atomic_fetch_add(&counters.failed, 1);
            call_free(c);
            continue;
        }
        atomic_fetch_add(c->kind == CALL_SHADOW ? &counters.shadow_calls : &counters.judge_calls,
                         1);
        c->next = l->running;
        if (l->running)
            l->running->prev = c;
        l->running = c;
        l->n_running++;
    }
}

/* ---- the learning thread ----------------------------------------------------------- */

static void
offer_free(struct offer *o)
{
    daemon__snapshot_put(o->snap);
    daemon__buf_free(&o->body);
    daemon__buf_free(&o->answer);
    daemon__buf_free(&o->fast);
    free(o);
}

/* Turns an offer into a lesson and queues its calls. Learning thread. */
static void
teach(struct daemon_learn *l, struct offer *o)
{
    const struct conf *c = o->snap->conf;
    int streamed = o->answer.data == NULL;
    json_t *request = json_loadb(o->body.data, o->body.len, 0, NULL);
    json_t *answer_doc = streamed ? NULL : json_loadb(o->answer.data, o->answer.len, 0, NULL);
    json_t *messages = json_object_get(request, "messages");
    size_t alen = 0;
    const char *answer = answer_doc ? answer_text(answer_doc, &alen) : NULL;

    if (!json_is_array(messages) || (!streamed && !answer)) {
        json_decref(request);
        json_decref(answer_doc);
        return;
    }
    struct lesson *s = calloc(1, sizeof(*s));
    if (!s)
        abort();
    s->refs = 1;
    s->snap = o->snap; /* the lesson runs with the config the request ran with */
    o->snap = NULL;
    snprintf(s->parent_id, sizeof(s->parent_id), "%s", o->parent_id);
    s->request = request;
    s->messages = json_incref(messages);
    s->tokens_in = o->tokens_in;
    s->tokens_out = o->tokens_out;
    atomic_fetch_add(&counters.lessons, 1);

    /* The served answer is graded as the client got it. A stream's answer went by in
     * pieces and was not kept: its backend is asked again, like the other tiers, so a
     * streamed prompt costs one more call but still labels both sides. */
    if (answer)
        enqueue_judge(l, s, o->backend, answer, alen);
    /* An escalated cascade's fast answer is graded as it was held: the label then belongs
     * to the answer whose signals the log keeps (cascade.c), and its tier needs no
     * shadow call. */
    json_t *fast_doc = o->fast.data ? json_loadb(o->fast.data, o->fast.len, 0, NULL) : NULL;
    size_t flen = 0;
    const char *fast = fast_doc ? answer_text(fast_doc, &flen) : NULL;
    if (fast)
        enqueue_judge(l, s, o->fast_backend, fast, flen);
    for (size_t i = 0; i < c->n_tiers; i++) {
        int b = (int)c->tiers[i].backend;
        if ((b != o->backend || !answer) && !(fast && b == o->fast_backend))
            enqueue_shadow(l, s, b);
    }
    json_decref(fast_doc);
    json_decref(answer_doc);
    lesson_put(s);
}

static void
on_learner_wake(uv_async_t *a)
{
    struct daemon_learn *l = a->data;

    pthread_mutex_lock(&l->lock);
    struct offer *list = l->offers;
    int stop = l->stop;
    l->offers = NULL;
    l->n_offers = 0;
    pthread_mutex_unlock(&l->lock);
    /* the list is newest first: teach in arrival order */
    struct offer *rev = NULL;
    while (list) {
        struct offer *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev) {
        struct offer *next = rev->next;
        if (!stop)
            teach(l, rev);
        offer_free(rev);
        rev = next;
    }
    if (!stop) {
        pump(l);
        return;
    }
    /* stop: what runs is cancelled (no label, its reservation released) */
    while (l->running) {
        struct learn_call *c = l->running;
        l->running = c->next;
        if (c->call)
            upstream_cancel(c->call);
        budget_settle(c->reserve_usd, 0);
        call_free(c);
    }
    while (l->queue_head) {
        struct learn_call *c = l->queue_head;
        l->queue_head = c->next;
        call_free(c);
    }
    l->queue_tail = NULL;
    l->queued = l->n_running = 0;
    upstream_destroy(l->up, NULL, NULL);
    l->up = NULL;
    uv_close((uv_handle_t *)&l->wake, NULL);
}

static void
upstream_after(void *ctx)
{
    (void)ctx; /* no HTTP front end on this loop to run */
}

static void
learner_main(void *arg)
{
    struct daemon_learn *l = arg;

    /* below the workers: a client's request always gets the CPU first */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10) < 0)
        log_debug("learning thread: cannot lower its priority: %s", strerror(errno));
    uv_run(&l->loop, UV_RUN_DEFAULT);
    uv_loop_close(&l->loop);
}

int
daemon__learn_start(void)
{
    struct daemon_learn *l = &learner;

    memset(l, 0, sizeof(*l));
    if (getrandom(&l->rng, sizeof(l->rng), 0) != sizeof(l->rng) || l->rng == 0)
        l->rng = daemon__now_ns() | 1;
    pthread_mutex_init(&l->lock, NULL);
    if (uv_loop_init(&l->loop) < 0)
        return -1;
    l->up = upstream_create(&l->loop, upstream_after, l);
    if (!l->up || uv_async_init(&l->loop, &l->wake, on_learner_wake) < 0) {
        upstream_destroy(l->up, NULL, NULL);
        uv_run(&l->loop, UV_RUN_DEFAULT);
        uv_loop_close(&l->loop);
        return -1;
    }
    l->wake.data = l;
    if (uv_thread_create(&l->thread, learner_main, l) < 0) {
        uv_close((uv_handle_t *)&l->wake, NULL);
        upstream_destroy(l->up, NULL, NULL);
        uv_run(&l->loop, UV_RUN_DEFAULT);
        uv_loop_close(&l->loop);
        return -1;
    }
    atomic_store(&learner_started, 1);
    return 0;
}

void
daemon__learn_stop(void)
{
    struct daemon_learn *l = &learner;

    if (!atomic_exchange(&learner_started, 0))
        return;
    pthread_mutex_lock(&l->lock);
    l->stop = 1;
    pthread_mutex_unlock(&l->lock);
    uv_async_send(&l->wake);
    uv_thread_join(&l->thread);
    while (l->offers) { /* offered after the stop was seen */
        struct offer *next = l->offers->next;
        offer_free(l->offers);
        l->offers = next;
    }
    pthread_mutex_destroy(&l->lock);
}

/* ---- the workers' side: sampling and handing over ---------------------------------- */

/* A uniform draw in [0, 1) from the worker's own generator (xorshift64*). */
static double
draw(uint64_t *rng)
{
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    return (double)((*rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

/* Whether rq may become a lesson: learning on, a routed chat request answered whole. */
static int
eligible(const struct daemon_request *rq)
{
    const struct conf *c = rq->snap ? rq->snap->conf : NULL;

    /* only chat completions: shadow and judge calls are chat completions themselves */
    return c && c->shadow_rate > 0 && c->judge && rq->routed && rq->backend >= 0 &&
           rq->api && rq->api->id == DAEMON_API_CHAT && atomic_load(&learner_started);
}

int
daemon__learn_sample(struct daemon_request *rq)
{
    if (rq->lesson_drawn) /* a cascade asks when its fast answer is in, and again later */
        return rq->lesson;
    rq->lesson_drawn = 1;
    if (!eligible(rq) || draw(&rq->w->learn_rng) >= rq->snap->conf->shadow_rate)
        return 0;
    rq->lesson = 1;
    return 1;
}

void
daemon__learn_offer(struct daemon_request *rq)
{
    struct daemon_learn *l = &learner;

    /* Sampled when the answer began (a stream, its body kept in lesson_body) or was
     * relayed whole (kept in lesson_answer; a cascade's held answer, streamed to the
     * client, too). Only a complete, successful answer teaches. The worker only hands
     * the bytes over: parsing and every call happen on the learning thread. */
    if (!rq->lesson || !eligible(rq) || rq->status != 200 || rq->error_kind ||
        rq->client_aborted || rq->stream_failed)
        return;
    struct daemon_buf *body = rq->lesson_body.data ? &rq->lesson_body : &rq->body;
    if (!body->data || (!rq->streaming && !rq->lesson_answer.data))
        return;
    struct offer *o = calloc(1, sizeof(*o));
    if (!o)
        abort();
    o->snap = rq->snap;
    atomic_fetch_add(&o->snap->refs, 1);
    snprintf(o->parent_id, sizeof(o->parent_id), "%s", rq->id);
    o->body = *body; /* taken: the request is about to free it anyway */
    memset(body, 0, sizeof(*body));
    if (rq->lesson_answer.data) {
        o->answer = rq->lesson_answer;
        memset(&rq->lesson_answer, 0, sizeof(rq->lesson_answer));
    }
    o->fast = rq->lesson_fast;
    memset(&rq->lesson_fast, 0, sizeof(rq->lesson_fast));
    o->fast_backend = rq->cascade_fast;
    o->backend = rq->backend;
    o->tokens_in = rq->tokens_in;
    o->tokens_out = rq->tokens_out;
    pthread_mutex_lock(&l->lock);
    int full = l->n_offers >= LEARN_QUEUE || l->stop;
    if (!full) {
        o->next = l->offers;
        l->offers = o;
        l->n_offers++;
    }
    pthread_mutex_unlock(&l->lock);
    if (full) { /* dropped and counted; the buffers go as the request would have freed them */
        atomic_fetch_add(&counters.dropped_queue, 1);
        offer_free(o);
        return;
    }
    uv_async_send(&l->wake);
}
