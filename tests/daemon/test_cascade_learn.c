/* test_cascade_learn.c - the cascade's own judged rows train its escalation model, end to
 * end: triaged in policy cascade with a judge stores each fast answer's signals (and
 * hashed words) on the row of the call that wrote it, the judge grades exactly that
 * answer (served, or held and escalated: no shadow call to the fast tier), `triage train
 * --db` learns an escalation model from those rows, and a triaged loading the new model
 * scores answers by it (not by the default). Then the daemon's own retrains judge the
 * challenger's escalation model apart from its routing (daemon/promote.c): a better one
 * is promoted with the routing unchanged, one learned from flipped labels is not (the
 * champion's survives in the promoted file), too few held-out answers keep the champion's.
 *
 * usage: test_cascade_learn TRIAGED MOCKLLM MAKE_MODEL TRIAGE
 * fast and strong are the shared mockllm (each request scripts the fast model's answer
 * with "mock": {"by_model": ...}); the judge is a second mockllm grading 9, or 2 when the
 * answer says "not sure" (--rule). Waits poll with generous bounds. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"

#define N_PROMPTS 40

static struct h_env env;
static const char *triage_cli;

/* Starts triaged (policy cascade, every prompt in the band, store_prompts = full) with
 * model file `model` and, when judge_port is set, the learning loop grading every answer
 * (learning_extra: more [learning] lines, may be NULL). */
static unsigned
start(const char *name, const char *model, unsigned judge_port, const char *learning_extra,
      pid_t *pid)
{
    unsigned port = h_free_port();
    char path[512], log[512], learning[1024] = "";
    FILE *f;

    if (judge_port)
        snprintf(learning, sizeof(learning),
                 "[backend judge]\nurl = http://127.0.0.1:%u/v1\nmax_retries = 0\n"
                 "[learning]\nshadow_rate = 1\njudge = judge\n%s\n",
                 judge_port, learning_extra ? learning_extra : "");
    snprintf(path, sizeof(path), "%s/%s.conf", env.dir, name);
    f = fopen(path, "w");
    if (!f)
        return 0;
    fprintf(f,
            "[server]\nlisten = 127.0.0.1\nport = %u\nworkers = 1\nshutdown_timeout_ms = 2000\n"
            "[router]\nmodel = %s\ntiers = fast, strong\npolicy = cascade\ncascade_low = 0\n"
            "cascade_high = 1\nescalate_at = 0.5\n"
            "[storage]\npath = %s/%s.db\nflush_interval_ms = 10\nstore_prompts = full\n"
            "[backend fast]\nurl = http://127.0.0.1:%u/v1\nmodel = fast-model\nmax_retries = 0\n"
            "price_input = 1\nprice_output = 1\n"
            "[backend strong]\nurl = http://127.0.0.1:%u/v1\nmodel = strong-model\n"
            "price_input = 10\nprice_output = 30\n%s",
            port, model, env.dir, name, env.mock_port, env.mock_port, learning);
    fclose(f);
    snprintf(log, sizeof(log), "%s/%s.log", env.dir, name);
    char *argv[] = {(char *)env.triaged, "--config", path, NULL};
    if (h_spawn_daemon(argv, port, log, pid) < 0) {
        fprintf(stderr, "%s: triaged did not start (see %s)\n", name, log);
        return 0;
    }
    return port;
}

/* A chat request for prompt number i whose fast answer is sure (0: a stated result, tokens
 * at log-probability -0.05), unsure (1: hedged, self-correcting, tokens at -2.5), or
 * neither (2: a bare number at -0.7, what no rule of thumb is sure about). */
static void
body_for(int i, int unsure, char *buf, size_t len)
{
    if (unsure == 2)
        snprintf(buf, len,
                 "{\"model\":\"triage\",\"messages\":[{\"role\":\"user\",\"content\":\"What is "
                 "%d + 17?\"}],\"mock\":{\"by_model\":{\"fast-model\":{\"content\":\"%d\","
                 "\"logprob\":-0.7}}}}",
                 i, i + 17);
    else if (unsure)
        snprintf(buf, len,
                 "{\"model\":\"triage\",\"messages\":[{\"role\":\"user\",\"content\":\"What is "
                 "%d + 17?\"}],\"mock\":{\"by_model\":{\"fast-model\":{\"content\":\"Maybe %d, "
                 "I am not sure. Wait, actually perhaps it is %d\",\"logprob\":-2.5}}}}",
                 i, i + 16, i + 18);
    else
        snprintf(buf, len,
                 "{\"model\":\"triage\",\"messages\":[{\"role\":\"user\",\"content\":\"What is "
                 "%d + 17?\"}],\"mock\":{\"by_model\":{\"fast-model\":{\"content\":\"%d + 17 = "
                 "%d. The answer is %d.\",\"logprob\":-0.05}}}}",
                 i, i, i + 17, i + 17);
}

/* The escalation score header of prompt i's answer through triaged at port; -1 if none. */
static double
escalation_of(unsigned port, int i, int unsure, int *escalated)
{
    char body[512];
    struct h_resp r;
    double e = -1;

    body_for(i, unsure, body, sizeof(body));
    h_chat(port, body, &r);
    const char *h = h_header(&r, "x-triage-escalation-score");
    const char *x = h_header(&r, "x-triage-escalated");
    if (r.status == 200 && h)
        e = strtod(h, NULL);
    if (escalated)
        *escalated = x && !strcmp(x, "1");
    h_resp_free(&r);
    return e;
}

static void
test_learn_from_log(void)
{
    pid_t judge_pid, pid;
    unsigned judge_port = 0;
    char *jargv[] = {(char *)env.mock, "--port", "0", "--content", "Correct.\nRating: [[9]]",
                     "--rule", "not sure=Wrong.\nRating: [[2]]", NULL};

    if (h_spawn_mock(jargv, &judge_pid, &judge_port) < 0) {
        h_failures++;
        return;
    }
    unsigned port = start("log", "m.tmod", judge_port, NULL, &pid);
    if (!port) {
        h_failures++;
        h_stop(judge_pid, SIGTERM);
        return;
    }
    int n_escalated = 0;
    double sure_default = -1, unsure_default = -1;
    for (int i = 0; i < N_PROMPTS; i++) {
        int esc = 0;
        double e = escalation_of(port, i, i % 2, &esc);
        CHECKF(e >= 0, "prompt %d: no escalation score", i);
        n_escalated += esc;
        if (i == 0)
            sure_default = e;
        if (i == 1)
            unsure_default = e;
    }
    /* the default escalates the unsure answers and serves the sure ones: both paths */
    CHECKF(n_escalated == N_PROMPTS / 2, "%d of %d escalated by the default", n_escalated,
           N_PROMPTS);

    /* every fast answer judged: one label per prompt for the fast backend */
    long long labels =
        h_db_wait(&env, "log", "SELECT count(*) FROM outcomes WHERE backend = 'fast'", N_PROMPTS);
    CHECKF(labels == N_PROMPTS, "fast labels %lld", labels);
    h_stop(pid, SIGTERM);
    h_stop(judge_pid, SIGTERM);

    /* the signals sit on the row of the call that wrote the answer: the client's row when
     * served, the fast call's (kind cascade, "<id>.fast") when escalated */
    CHECKF(h_db_int(&env, "log",
                    "SELECT count(*) FROM requests WHERE kind IS NULL AND backend = 'fast'"
                    " AND answer IS NOT NULL") == N_PROMPTS / 2,
           "served rows with an answer: %lld",
           h_db_int(&env, "log",
                    "SELECT count(*) FROM requests WHERE kind IS NULL AND answer IS NOT NULL"));
    CHECKF(h_db_int(&env, "log",
                    "SELECT count(*) FROM requests WHERE kind = 'cascade' AND answer IS NOT"
                    " NULL AND request_id = parent_id || '.fast'") == N_PROMPTS / 2,
           "escalated fast rows with an answer: %lld",
           h_db_int(&env, "log", "SELECT count(*) FROM requests WHERE kind = 'cascade'"));
    CHECKF(h_db_int(&env, "log",
                    "SELECT count(*) FROM requests WHERE answer IS NOT NULL AND"
                    " length(answer) > 200") == N_PROMPTS,
           "answers without their hashed words");
    /* the held fast answer was judged as it was: no shadow call to the fast tier */
    CHECKF(h_db_int(&env, "log",
                    "SELECT count(*) FROM requests WHERE kind = 'shadow' AND backend = 'fast'") ==
               0,
           "shadow calls to the fast tier: %lld",
           h_db_int(&env, "log",
                    "SELECT count(*) FROM requests WHERE kind = 'shadow' AND backend = 'fast'"));
    /* the unsure answers were graded 2, the sure ones 9 */
    CHECKF(h_db_int(&env, "log",
                    "SELECT count(*) FROM outcomes o JOIN requests r ON r.request_id ="
                    " o.request_id || '.fast' WHERE o.backend = 'fast' AND o.q < 0.2") ==
               N_PROMPTS / 2,
           "the escalated answers' labels are not the held answers' grades");

    /* triage train --db learns the escalation model from them */
    char db[512], out[512], text[8192];
    snprintf(db, sizeof(db), "%s/log.db", env.dir);
    snprintf(out, sizeof(out), "%s/learned.tmod", env.dir);
    char *targv[] = {(char *)triage_cli, "train", "--db", db, "--out", out, "--strong",
                     "strong", "--weak", "fast", "--bits", "10", NULL};
    int rc = h_run(targv, text, sizeof(text));
    CHECKF(rc == 0, "triage train exited %d: %s", rc, text);
    char want[128];
    snprintf(want, sizeof(want), "%d labelled cascade fast answers", N_PROMPTS);
    CHECKF(strstr(text, want) != NULL, "train did not read the answers: %s", text);
    snprintf(want, sizeof(want), "escalation model (cascade) learned from %d judged answers",
             N_PROMPTS);
    CHECKF(strstr(text, want) != NULL, "no escalation model learned: %s", text);

    /* a triaged serving the new model scores answers by it: not the default's scores,
     * and it tells sure from unsure on prompts it never saw */
    double mid_default = -1;
    port = start("default", "m.tmod", 0, NULL, &pid);
    if (port) {
        mid_default = escalation_of(port, 2000, 2, NULL);
        h_stop(pid, SIGTERM);
    }
    port = start("learned", "learned.tmod", 0, NULL, &pid);
    if (!port) {
        h_failures++;
        return;
    }
    double sure = escalation_of(port, 1000, 0, NULL), unsure = escalation_of(port, 1001, 1, NULL);
    double mid = escalation_of(port, 2000, 2, NULL);
    CHECKF(sure >= 0 && unsure >= 0 && sure < 0.5 && unsure > 0.5, "learned: sure %.4f unsure %.4f",
           sure, unsure);
    CHECKF(mid >= 0 && mid_default >= 0 && mid != mid_default,
           "the learned model scores like the default (%.4f / %.4f)", mid, mid_default);
    fprintf(stderr, "escalation score, default model: sure %.4f unsure %.4f neither %.4f; "
                    "learned: sure %.4f unsure %.4f neither %.4f\n",
            sure_default, unsure_default, mid_default, sure, unsure, mid);
    h_stop(pid, SIGTERM);
}

/* ---- promotion: the routing and the escalation part judged apart (daemon/promote.c) ---- */

#define N_RETRAIN 60 /* judged prompts per retrain: about 12 held out */
#define PROMOTE_WAIT_MS 60000 /* for a retrain and its reload, at most */

/* What one probe sees through triaged at port: the routing score and the escalation
 * scores of a fast answer of each kind (body_for's), as the headers print them. */
struct probe {
    char score[32], esc[2][32];
};

static void
probe(unsigned port, int base, const int kinds[2], struct probe *p)
{
    memset(p, 0, sizeof(*p));
    for (int k = 0; k < 2; k++) {
        char body[512];
        struct h_resp r;
        body_for(base + k, kinds[k], body, sizeof(body));
        h_chat(port, body, &r);
        const char *e = h_header(&r, "x-triage-escalation-score");
        snprintf(p->esc[k], sizeof(p->esc[k]), "%s", e ? e : "");
        const char *sc = h_header(&r, "x-triage-score");
        if (k == 0)
            snprintf(p->score, sizeof(p->score), "%s", sc ? sc : "");
        CHECKF(r.status == 200 && p->esc[k][0] && sc, "probe %d: status %ld", base + k, r.status);
        h_resp_free(&r);
    }
}

/* Writes N labelled examples of the fast tier's answers to path, labelled against the
 * judge: sure answers (kind 0) bad, unsure ones (kind 1) good. Returns 0 or -1. */
static int
write_flipped(const char *path, int n)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    for (int i = 0; i < n; i++) {
        int sure = i % 2 == 0, x = 5000 + i;
        char text[256];
        if (sure)
            snprintf(text, sizeof(text), "%d + 17 = %d. The answer is %d.", x, x + 17, x + 17);
        else
            snprintf(text, sizeof(text), "Maybe %d, I am not sure. Wait, actually perhaps it is %d",
                     x + 16, x + 18);
        json_t *lps = json_array();
        for (int t = 0; t < 12; t++)
            json_array_append_new(lps, json_real(sure ? -0.05 : -2.5));
        char content[64];
        snprintf(content, sizeof(content), "What is %d + 17?", x);
        json_t *line = json_pack("{s:[{s:s,s:s}],s:{s:i,s:i},s:{s:{s:s,s:s,s:o}}}", "messages",
                                 "role", "user", "content", content, "outcomes", "fast", !sure,
                                 "strong", 1, "answers", "fast", "text", text, "finish_reason",
                                 "stop", "logprobs", lps);
        char *dump = json_dumps(line, JSON_COMPACT);
        fprintf(f, "%s\n", dump);
        free(dump);
        json_decref(line);
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* One retrain of case name: triaged serves `champion` (a file in env.dir) in cascade mode
 * with a judge grading by rule (substring=reply), learning_extra in [learning]; two probes
 * (kinds[]), then N_RETRAIN prompts alternating kinds[0] and kinds[1], whose judged fast
 * answers trigger the retrain; the probes again once the daemon serves a new model.
 * Fills before/after and the versions served; returns 0, or -1 when nothing was
 * promoted within the wait. */
static int
retrain_case(const char *name, const char *champion, const char *rule, const char *learning_extra,
             const int kinds[2], struct probe *before, struct probe *after, char *v_before,
             char *v_after, size_t vlen)
{
    pid_t judge_pid, pid;
    unsigned judge_port = 0;
    char learning[1024];
    char *jargv[] = {(char *)env.mock, "--port", "0", "--content", "Correct.\nRating: [[9]]",
                     "--rule", (char *)rule, NULL};
    int rc = -1;

    if (h_spawn_mock(jargv, &judge_pid, &judge_port) < 0) {
        h_failures++;
        return -1;
    }
    snprintf(learning, sizeof(learning), "retrain_every = %d\n%s", N_RETRAIN, learning_extra);
    unsigned port = start(name, champion, judge_port, learning, &pid);
    if (!port) {
        h_failures++;
        h_stop(judge_pid, SIGTERM);
        return -1;
    }
    h_readyz_model(port, v_before, vlen);
    probe(port, 9000, kinds, before);
    for (int i = 0; i < N_RETRAIN - 2; i++) {
        char body[512];
        struct h_resp r;
        body_for(100 + i, kinds[i % 2], body, sizeof(body));
        h_chat(port, body, &r);
        CHECKF(r.status == 200, "%s: prompt %d: %ld", name, i, r.status);
        h_resp_free(&r);
    }
    double t0 = h_now_ms();
    do {
        usleep(100 * 1000);
        h_readyz_model(port, v_after, vlen);
    } while (!strcmp(v_before, v_after) && h_now_ms() - t0 < PROMOTE_WAIT_MS);
    if (strcmp(v_before, v_after)) {
        probe(port, 9000, kinds, after);
        rc = 0;
    }
    h_stop(pid, SIGTERM);
    h_stop(judge_pid, SIGTERM);
    return rc;
}

/* The retrain's log line, from the daemon's log of case name, in out ("" when none). */
static void
retrain_line(const char *name, char *out, size_t len)
{
    char path[512], line[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s.log", env.dir, name);
    out[0] = '\0';
    f = fopen(path, "r");
    while (f && fgets(line, sizeof(line), f))
        if (strstr(line, "retrain: challenger"))
            snprintf(out, len, "%s", line);
    if (f)
        fclose(f);
}

/* A challenger whose escalation model learned from flipped labels (base_data graded
 * against the judge) is promoted for its routing (promote_margin -1) but not for its
 * escalation: the promoted file scores every fast answer exactly as the champion did. */
static void
test_flipped_kept(void)
{
    const int kinds[2] = {0, 1};
    struct probe b, a;
    char vb[96], va[96], flipped[512], extra[1024], line[4096], sql[512];

    snprintf(flipped, sizeof(flipped), "%s/flipped.jsonl", env.dir);
    CHECKF(write_flipped(flipped, 400) == 0, "cannot write %s", flipped);
    snprintf(extra, sizeof(extra),
             "base_data = %s\npromote_margin = -1\nmin_holdout_answers = 5\n", flipped);
    if (retrain_case("flipped", "learned.tmod", "not sure=Wrong.\nRating: [[2]]", extra, kinds, &b,
                     &a, vb, va, sizeof(vb)) < 0) {
        CHECKF(0, "flipped: nothing promoted");
        return;
    }
    retrain_line("flipped", line, sizeof(line));
    fprintf(stderr, "flipped: %s -> %s; escalation sure %s -> %s, unsure %s -> %s\n%s", vb, va,
            b.esc[0], a.esc[0], b.esc[1], a.esc[1], line);
    /* the champion's escalation model survives: the same scores, sure below unsure */
    CHECKF(!strcmp(b.esc[0], a.esc[0]) && !strcmp(b.esc[1], a.esc[1]),
           "escalation changed: sure %s -> %s, unsure %s -> %s", b.esc[0], a.esc[0], b.esc[1],
           a.esc[1]);
    CHECKF(strtod(a.esc[0], NULL) < 0.5 && strtod(a.esc[1], NULL) > 0.5, "sure %s unsure %s",
           a.esc[0], a.esc[1]);
    CHECKF(strstr(line, "escalation: held-out AUC") &&
               strstr(line, "the champion's kept (not better by escalation_margin)") &&
               strstr(line, "promoted"),
           "log line: %s", line);
    /* the registry: the challenger measured worse, the file served combines its routing
     * with the champion's escalation */
    CHECKF(h_db_int(&env, "flipped", "SELECT count(*) FROM models WHERE status = 'candidate' AND"
                                     " esc_holdout_n >= 5 AND esc_auc < parent_esc_auc") == 1,
           "no challenger measured worse on escalation");
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM models WHERE status = 'champion' AND version = '%s' AND"
             " escalation_from = '%s' AND routing_from = (SELECT version FROM models WHERE"
             " status = 'candidate') AND esc_auc = parent_esc_auc",
             va, vb);
    CHECKF(h_db_int(&env, "flipped", sql) == 1, "the champion row is not the combination");
}

/* A challenger whose escalation model is better (the champion has only the default, which
 * trusts confident answers the judge finds wrong) and whose routing is not (too few
 * held-out prompts for it): the promoted file keeps the champion's routing scores and
 * takes the challenger's escalation. */
static void
test_better_escalation(void)
{
    const int kinds[2] = {0, 2}; /* confident "The answer is" (judged wrong), a bare number */
    struct probe b, a;
    char vb[96], va[96], line[4096], sql[512];

    if (retrain_case("better", "m.tmod", "The answer is=Wrong.\nRating: [[2]]",
                     "min_holdout = 1000\nmin_holdout_answers = 5\nbase_data = none\n", kinds, &b,
                     &a, vb, va, sizeof(vb)) < 0) {
        CHECKF(0, "better: nothing promoted");
        return;
    }
    retrain_line("better", line, sizeof(line));
    fprintf(stderr, "better: %s -> %s; score %s -> %s; escalation confident %s -> %s, bare %s "
                    "-> %s\n%s",
            vb, va, b.score, a.score, b.esc[0], a.esc[0], b.esc[1], a.esc[1], line);
    CHECKF(!strcmp(b.score, a.score), "routing changed: %s -> %s", b.score, a.score);
    /* the default ranked the confident wrong answer below the bare right one; the
     * learned model the other way round */
    CHECKF(strtod(b.esc[0], NULL) < strtod(b.esc[1], NULL), "default: %s %s", b.esc[0], b.esc[1]);
    CHECKF(strtod(a.esc[0], NULL) > strtod(a.esc[1], NULL), "learned: %s %s", a.esc[0], a.esc[1]);
    CHECKF(strstr(line, "kept (too few held-out prompts)") &&
               strstr(line, "escalation: held-out AUC") && strstr(line, ": taken; promoted"),
           "log line: %s", line);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM models WHERE status = 'champion' AND version = '%s' AND"
             " routing_from = '%s' AND escalation_from = (SELECT version FROM models WHERE"
             " status = 'candidate') AND esc_auc > parent_esc_auc",
             va, vb);
    CHECKF(h_db_int(&env, "better", sql) == 1, "the champion row is not the combination");
}

/* With fewer held-out judged fast answers than min_holdout_answers the champion's
 * escalation model is kept, whatever the challenger learned, and the log says so. */
static void
test_too_few_answers(void)
{
    const int kinds[2] = {0, 1};
    struct probe b, a;
    char vb[96], va[96], line[4096];

    if (retrain_case("few", "learned.tmod", "not sure=Wrong.\nRating: [[2]]",
                     "promote_margin = -1\nmin_holdout_answers = 1000\nbase_data = none\n", kinds,
                     &b, &a, vb, va, sizeof(vb)) < 0) {
        CHECKF(0, "few: nothing promoted");
        return;
    }
    retrain_line("few", line, sizeof(line));
    fprintf(stderr, "few: %s -> %s\n%s", vb, va, line);
    CHECKF(!strcmp(b.esc[0], a.esc[0]) && !strcmp(b.esc[1], a.esc[1]),
           "escalation changed: sure %s -> %s, unsure %s -> %s", b.esc[0], a.esc[0], b.esc[1],
           a.esc[1]);
    CHECKF(strstr(line, "the champion's kept (too few held-out judged fast answers: ") &&
               strstr(line, " < min_holdout_answers 1000)"),
           "log line: %s", line);
    /* the challenger did learn one: it is the champion's that was kept */
    CHECKF(h_db_int(&env, "few", "SELECT count(*) FROM models WHERE status = 'candidate' AND"
                                 " esc_holdout_n > 0") == 1,
           "the challenger's escalation was not measured");
}

int
main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s TRIAGED MOCKLLM MAKE_MODEL TRIAGE\n", argv[0]);
        return 2;
    }
    triage_cli = argv[4];
    int rc = h_env_setup(&env, "cascade-learn", 4, argv);
    if (rc)
        return rc;
    if (h_env_make_model(&env, NULL) < 0)
        return 1;
    test_learn_from_log();
    test_better_escalation();
    test_flipped_kept(); /* champion: learned.tmod, made by test_learn_from_log */
    test_too_few_answers();
    return h_env_finish(&env);
}
