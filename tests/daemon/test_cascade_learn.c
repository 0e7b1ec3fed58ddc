/* test_cascade_learn.c - the cascade's own judged rows train its escalation model, end to
 * end: triaged in policy cascade with a judge stores each fast answer's signals (and
 * hashed words) on the row of the call that wrote it, the judge grades exactly that
 * answer (served, or held and escalated: no shadow call to the fast tier), `triage train
 * --db` learns an escalation model from those rows, and a triaged loading the new model
 * scores answers by it (not by the default).
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
 * model file `model` and, when judge_port is set, the learning loop grading every answer. */
static unsigned
start(const char *name, const char *model, unsigned judge_port, pid_t *pid)
{
    unsigned port = h_free_port();
    char path[512], log[512], learning[256] = "";
    FILE *f;

    if (judge_port)
        snprintf(learning, sizeof(learning),
                 "[backend judge]\nurl = http://127.0.0.1:%u/v1\nmax_retries = 0\n"
                 "[learning]\nshadow_rate = 1\njudge = judge\n",
                 judge_port);
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
    unsigned port = start("log", "m.tmod", judge_port, &pid);
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
    port = start("default", "m.tmod", 0, &pid);
    if (port) {
        mid_default = escalation_of(port, 2000, 2, NULL);
        h_stop(pid, SIGTERM);
    }
    port = start("learned", "learned.tmod", 0, &pid);
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
    return h_env_finish(&env);
}
