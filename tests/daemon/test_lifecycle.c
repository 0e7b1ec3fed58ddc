/* test_lifecycle.c - reload and shutdown under load: no request may fail, no log row may be lost.
 *
 * usage: test_lifecycle TRIAGED MOCKLLM MAKE_MODEL
 * Starts mockllm and triaged (with the outcome log) on free loopback ports, then:
 *  - reload: client threads send routed requests without pause while the model file
 *    is replaced and SIGHUP / POST /admin/reload are sent, including a bad config and
 *    a corrupt model in between; every request must succeed, the bad files must be
 *    refused with the old snapshot kept, and the good ones must take effect;
 *  - drain: streams in flight when SIGTERM arrives must all finish intact, the daemon
 *    must exit 0, and every request it answered must have its row in the database. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "harness.h"

static struct h_env env;

#define USER_MSG(text) "\"messages\":[{\"role\":\"user\",\"content\":\"" text "\"}]"

/* Writes a small model whose heads match the config's backends to path through a
 * rename, as an operator's deploy would. seed changes its version. */
static int
write_model(const char *path, unsigned seed)
{
    char tmp[512], seed_s[16], out[512];

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    snprintf(seed_s, sizeof(seed_s), "%u", seed);
    char *argv[] = {(char *)env.make_model, tmp, seed_s, NULL};
    if (h_run(argv, out, sizeof(out)) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "cannot build the test model: %s\n", out);
        return -1;
    }
    return 0;
}

static void
write_file(const char *name, const char *text)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", env.dir, name);
    f = fopen(path, "w");
    if (!f)
        abort();
    fputs(text, f);
    fclose(f);
}

static void
write_conf(unsigned port, const char *server_extra)
{
    char text[2048];

    snprintf(text, sizeof(text),
             "[server]\nlisten = 127.0.0.1\nport = %u\nworkers = 2\nshutdown_timeout_ms = 10000\n"
             /* busy polling on: reloads and the SIGTERM drain run with it */
             "busy_poll_us = 200\nlog_level = warn\n%s\n"
             "[router]\nmodel = m.tmod\ntiers = fast, strong\n"
             "[storage]\npath = out.db\nflush_interval_ms = 20\n"
             "[backend fast]\nurl = http://127.0.0.1:%u/v1\nbreaker_failures = 1000\n"
             "[backend strong]\nurl = http://127.0.0.1:%u/v1\nbreaker_failures = 1000\n",
             port, server_extra ? server_extra : "", env.mock_port, env.mock_port);
    write_file("triage.conf", text);
}

/* Returns the model version /readyz reports (static copy), or "". */
static const char *
ready_model(unsigned port)
{
    static char version[128];
    struct h_resp r;

    version[0] = '\0';
    h_get(port, "/readyz", &r);
    json_t *j = r.status == 200 ? json_loadb(r.body, r.len, 0, NULL) : NULL;
    const char *v = json_string_value(json_object_get(j, "model"));
    if (v)
        snprintf(version, sizeof(version), "%s", v);
    json_decref(j);
    h_resp_free(&r);
    return version;
}

/* ---- reload under load ------------------------------------------------------------- */

struct load {
    unsigned port;
    atomic_int stop;
    atomic_int ok;
    atomic_int failed;
    int stream; /* this thread's requests stream */
};

static void *
load_thread(void *arg)
{
    struct load *l = arg;
    const char *json_body = "{\"model\":\"triage\"," USER_MSG("what is 3 plus 5") ","
                            "\"mock\":{\"latency_ms\":5}}";
    const char *sse_body = "{\"model\":\"triage\",\"stream\":true,"
                           USER_MSG("prove the spectral bound 7 for this operator") ","
                           "\"mock\":{\"chunks\":4,\"chunk_delay_ms\":10}}";

    while (!atomic_load(&l->stop)) {
        struct h_resp r;
        struct h_sse s;
        int good;

        h_chat(l->port, l->stream ? sse_body : json_body, &r);
        good = r.rc == CURLE_OK && r.status == 200 && h_header(&r, "x-triage-score");
        if (good && l->stream) {
            h_parse_sse(r.body, &s);
            good = s.done && s.chunks >= 4 && !s.error_events && !s.bad;
        }
        if (good)
            atomic_fetch_add(&l->ok, 1);
        else {
            fprintf(stderr, "request failed during reload: curl %d, status %ld: %.200s\n",
                    (int)r.rc, r.status, r.body ? r.body : "");
            atomic_fetch_add(&l->failed, 1);
        }
        h_resp_free(&r);
    }
    return NULL;
}

static int
admin_reload(unsigned port, char *msg, size_t msglen)
{
    struct h_resp r;
    struct h_req req = {.method = "POST", .path = "/admin/reload", .body = ""};

    h_do(port, &req, &r);
    int status = (int)r.status;
    snprintf(msg, msglen, "%s", r.body ? r.body : "");
    h_resp_free(&r);
    return status;
}

static void
test_reload_under_load(void)
{
    unsigned port = h_free_port();
    char path[512], msg[1024];
    pid_t pid;
    pthread_t threads[4];
    struct load l = {.port = port};
    struct load ls = {.port = port, .stream = 1};

    snprintf(path, sizeof(path), "%s/m.tmod", env.dir);
    CHECK(write_model(path, 1) == 0);
    write_conf(port, NULL);
    snprintf(path, sizeof(path), "%s/triage.conf", env.dir);
    char log[512];
    snprintf(log, sizeof(log), "%s/reload.log", env.dir);
    char *argv[] = {(char *)env.triaged, "--config", path, NULL};
    if (h_spawn_daemon(argv, port, log, &pid) < 0) {
        CHECK(!"triaged started");
        return;
    }
    char v1[128];
    snprintf(v1, sizeof(v1), "%s", ready_model(port));
    CHECK(v1[0] != '\0');

    for (int i = 0; i < 3; i++)
        pthread_create(&threads[i], NULL, load_thread, &l);
    pthread_create(&threads[3], NULL, load_thread, &ls);

    /* A new model by SIGHUP: it must take effect. */
    usleep(300 * 1000);
    snprintf(path, sizeof(path), "%s/m.tmod", env.dir);
    CHECK(write_model(path, 2) == 0);
    kill(pid, SIGHUP);
    char v2[128] = "";
    for (int i = 0; i < 50 && (!v2[0] || !strcmp(v2, v1)); i++) {
        usleep(100 * 1000);
        snprintf(v2, sizeof(v2), "%s", ready_model(port));
    }
    CHECK(v2[0] && strcmp(v2, v1) != 0);

    /* A broken config: refused, the running snapshot stays. */
    write_file("triage.conf", "[server]\nport = 0\n");
    kill(pid, SIGHUP);
    usleep(300 * 1000);
    CHECK(!strcmp(ready_model(port), v2));
    CHECK(admin_reload(port, msg, sizeof(msg)) == 500);
    CHECK(strstr(msg, "port") != NULL);

    /* A corrupt model: refused by /admin/reload with the reason; the old one stays. */
    write_conf(port, NULL);
    write_file("m.tmod", "this is not a model file");
    CHECK(admin_reload(port, msg, sizeof(msg)) == 500);
    CHECK(strstr(msg, "m.tmod") != NULL);
    CHECK(!strcmp(ready_model(port), v2));

    /* And a good one again through the admin endpoint. */
    CHECK(write_model(path, 3) == 0);
    CHECK(admin_reload(port, msg, sizeof(msg)) == 200);
    CHECK(strcmp(ready_model(port), v2) != 0);
    for (int i = 0; i < 5; i++) {
        usleep(100 * 1000);
        kill(pid, SIGHUP);
    }
    usleep(300 * 1000);

    atomic_store(&l.stop, 1);
    atomic_store(&ls.stop, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
    fprintf(stderr, "reload under load: %d requests and %d streams succeeded, %d failed\n",
            atomic_load(&l.ok), atomic_load(&ls.ok),
            atomic_load(&l.failed) + atomic_load(&ls.failed));
    CHECK(atomic_load(&l.failed) == 0 && atomic_load(&ls.failed) == 0);
    CHECK(atomic_load(&l.ok) > 20 && atomic_load(&ls.ok) > 5);

    int status = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* ---- SIGTERM drain ----------------------------------------------------------------- */

#define N_STREAMS 24

static int
count_rows(const char *db_path, char ids[][64], int n)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int found = 0;

    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT status FROM requests WHERE request_id = ?", -1, &st,
                           NULL) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", db_path, db ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_close(db);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        sqlite3_bind_text(st, 1, ids[i], -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) == 200)
            found++;
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return found;
}

static void
test_sigterm_drain(void)
{
    unsigned port = h_free_port();
    char path[512], log[512];
    pid_t pid;
    struct h_resp r[N_STREAMS];
    struct curl_slist *hl[N_STREAMS];
    CURL *e[N_STREAMS];
    static char ids[N_STREAMS][64];
    struct h_req req = {
        .path = "/v1/chat/completions",
        .body = "{\"model\":\"triage\",\"stream\":true," USER_MSG("what is 3 plus 5") ","
                "\"mock\":{\"chunks\":8,\"chunk_delay_ms\":100}}",
        .timeout_ms = 20000,
    };

    snprintf(path, sizeof(path), "%s/m.tmod", env.dir);
    CHECK(write_model(path, 4) == 0);
    write_conf(port, NULL);
    snprintf(path, sizeof(path), "%s/triage.conf", env.dir);
    snprintf(log, sizeof(log), "%s/drain.log", env.dir);
    char *argv[] = {(char *)env.triaged, "--config", path, NULL};
    if (h_spawn_daemon(argv, port, log, &pid) < 0) {
        CHECK(!"triaged started");
        return;
    }

    CURLM *multi = curl_multi_init();
    for (int i = 0; i < N_STREAMS; i++) {
        e[i] = h_easy(port, &req, &r[i], &hl[i]);
        curl_multi_add_handle(multi, e[i]);
    }
    /* Let every stream start, then ask the daemon to stop while they run (~0.8 s). */
    double t0 = h_now_ms();
    int running = N_STREAMS, signalled = 0;
    while (running > 0 && h_now_ms() - t0 < 30000) {
        curl_multi_perform(multi, &running);
        curl_multi_poll(multi, NULL, 0, 20, NULL);
        if (!signalled && h_now_ms() - t0 > 300) {
            kill(pid, SIGTERM);
            signalled = 1;
        }
    }
    int intact = 0;
    for (int i = 0; i < N_STREAMS; i++) {
        struct h_sse s;
        const char *id = h_header(&r[i], "x-triage-request-id");

        snprintf(ids[i], sizeof(ids[i]), "%s", id ? id : "");
        curl_multi_remove_handle(multi, e[i]);
        h_easy_done(e[i], &r[i], hl[i]);
        h_parse_sse(r[i].body ? r[i].body : "", &s);
        if (r[i].status == 200 && s.done && s.chunks >= 8 && !s.error_events)
            intact++;
        else
            fprintf(stderr, "stream %d: curl %d, status %ld, %d chunks, done %d, %d errors: %.300s\n",
                    i, (int)r[i].rc, r[i].status, s.chunks, s.done, s.error_events,
                    r[i].body ? r[i].body : "");
        h_resp_free(&r[i]);
    }
    curl_multi_cleanup(multi);
    fprintf(stderr, "SIGTERM drain: %d of %d streams in flight finished intact\n", intact,
            N_STREAMS);
    CHECK(intact == N_STREAMS);

    int status = h_stop(pid, 0); /* already signalled: just wait */
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* New connections after the stop are refused. */
    struct h_resp after;
    h_get(port, "/healthz", &after);
    CHECK(after.rc != CURLE_OK);
    h_resp_free(&after);

    snprintf(path, sizeof(path), "%s/out.db", env.dir);
    int rows = count_rows(path, ids, N_STREAMS);
    fprintf(stderr, "SIGTERM drain: %d of %d rows in the outcome log\n", rows, N_STREAMS);
    CHECK(rows == N_STREAMS);
}

int
main(int argc, char **argv)
{
    int rc = h_env_setup(&env, "lifecycle", argc, argv);

    if (rc)
        return rc;
    test_reload_under_load();
    test_sigterm_drain();
    return h_env_finish(&env);
}
