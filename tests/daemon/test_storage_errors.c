/* test_storage_errors.c - the outcome log failing under the real daemon: a warning with the
 * error, and /readyz degraded until [storage] degraded_hold_ms after the last failure.
 *
 * usage: test_storage_errors TRIAGED MOCKLLM MAKE_MODEL
 * Starts mockllm and triaged on free loopback ports, then:
 *  - read-only: the log is opened through a "file:...?mode=ro" URI (read-only for root
 *    too, unlike file modes): requests still succeed, stderr gets a warning with SQLite's
 *    error text (at most one per 10 s), /readyz says degraded with the error and counts
 *    the rows waiting for a writable log (none is lost while the daemon runs);
 *  - recovery: a second connection holds the write lock, so the writer fails with
 *    "database is locked" once its busy timeout passes; after the lock goes a new row is
 *    committed, an info line says writes succeed again, and /readyz stays degraded
 *    (hold 10 min) until a reload shortens the hold to 1 s.
 * Every wait polls with a generous bound; nothing asserts how fast the daemon is. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "harness.h"

static struct h_env env;

/* Upper bound of every wait (ms): far beyond what an idle machine needs. */
#define WAIT_MS 30000

#define CHAT_BODY                                                                                  \
    "{\"model\":\"triage\",\"messages\":[{\"role\":\"user\",\"content\":\"what is 3 plus 5\"}]}"

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

/* Writes NAME.conf: two workers (only one may warn), info level, the [storage] lines. */
static void
write_conf(const char *name, unsigned port, const char *storage)
{
    char text[2048], file[128];

    snprintf(text, sizeof(text),
             "[server]\nlisten = 127.0.0.1\nport = %u\nworkers = 2\nlog_level = info\n"
             "[router]\nmodel = m.tmod\ntiers = fast, strong\n"
             "[storage]\n%s\n"
             "[backend fast]\nurl = http://127.0.0.1:%u/v1\n"
             "[backend strong]\nurl = http://127.0.0.1:%u/v1\n",
             port, storage, env.mock_port, env.mock_port);
    snprintf(file, sizeof(file), "%s.conf", name);
    write_file(file, text);
}

/* Starts triaged on NAME.conf with stderr in NAME.log. Returns 0 or -1. */
static int
start(const char *name, unsigned port, pid_t *pid)
{
    char conf[512], log[512];

    snprintf(conf, sizeof(conf), "%s/%s.conf", env.dir, name);
    snprintf(log, sizeof(log), "%s/%s.log", env.dir, name);
    char *argv[] = {(char *)env.triaged, "--config", conf, NULL};
    return h_spawn_daemon(argv, port, log, pid);
}

/* Sends one routed request; copies its request id to id (64 bytes). Returns the status. */
static long
chat(unsigned port, char *id)
{
    struct h_resp r;

    h_chat(port, CHAT_BODY, &r);
    const char *h = h_header(&r, "x-triage-request-id");
    snprintf(id, 64, "%s", h ? h : "");
    long status = r.status;
    if (status != 200)
        fprintf(stderr, "chat: curl %d, status %ld: %.200s\n", (int)r.rc, r.status,
                r.body ? r.body : "");
    h_resp_free(&r);
    return status;
}

/* GET /readyz: its HTTP status, "status" (static copy), "storage_degraded",
 * "log_rows_failed", "log_rows_waiting" and "storage_error". */
struct ready {
    long http;
    char status[32];
    int storage_degraded;
    long long rows_failed;
    long long rows_waiting;
    char error[256];
};

static struct ready
readyz(unsigned port)
{
    struct ready out = {0};
    struct h_resp r;

    h_get(port, "/readyz", &r);
    out.http = r.status;
    json_t *j = r.body ? json_loadb(r.body, r.len, 0, NULL) : NULL;
    const char *s = json_string_value(json_object_get(j, "status"));
    snprintf(out.status, sizeof(out.status), "%s", s ? s : "");
    out.storage_degraded = json_is_true(json_object_get(j, "storage_degraded"));
    out.rows_failed = json_integer_value(json_object_get(j, "log_rows_failed"));
    out.rows_waiting = json_integer_value(json_object_get(j, "log_rows_waiting"));
    const char *why = json_string_value(json_object_get(j, "storage_error"));
    snprintf(out.error, sizeof(out.error), "%s", why ? why : "");
    json_decref(j);
    h_resp_free(&r);
    return out;
}

/* Lines of NAME.log holding both a and b (b may be NULL); the first goes to first
 * (4096 bytes) when set. */
static int
count_lines(const char *name, const char *a, const char *b, char *first)
{
    char path[512], line[4096];
    int n = 0;

    snprintf(path, sizeof(path), "%s/%s.log", env.dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, a) && (!b || strstr(line, b)) && n++ == 0 && first)
            snprintf(first, sizeof(line), "%s", line);
    fclose(f);
    return n;
}

/* Polls NAME.log until a line holds a and b and shows it; returns 1, or 0 after WAIT_MS. */
static int
wait_line(const char *name, const char *a, const char *b)
{
    char line[4096];
    double t0 = h_now_ms();

    while (h_now_ms() - t0 < WAIT_MS) {
        if (count_lines(name, a, b, line) > 0) {
            fprintf(stderr, "%s.log: %s", name, line);
            return 1;
        }
        usleep(50 * 1000);
    }
    fprintf(stderr, "%s.log: no line with \"%s\" and \"%s\" after %d ms\n", name, a,
            b ? b : "", WAIT_MS);
    return 0;
}

/* 1 once the database at NAME has the row of request id, 0 after WAIT_MS. */
static int
wait_row(const char *name, const char *id)
{
    char path[512];
    double t0 = h_now_ms();
    int found = 0;

    snprintf(path, sizeof(path), "%s/%s", env.dir, name);
    while (!found && h_now_ms() - t0 < WAIT_MS) {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
            sqlite3_prepare_v2(db, "SELECT 1 FROM requests WHERE request_id = ?", -1, &st,
                               NULL) == SQLITE_OK) {
            sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
            found = sqlite3_step(st) == SQLITE_ROW;
        }
        sqlite3_finalize(st);
        sqlite3_close(db);
        if (!found)
            usleep(50 * 1000);
    }
    if (!found)
        fprintf(stderr, "%s: no row for %s after %d ms\n", name, id, WAIT_MS);
    return found;
}

static int
admin_reload(unsigned port)
{
    struct h_resp r;
    struct h_req req = {.method = "POST", .path = "/admin/reload", .body = ""};

    h_do(port, &req, &r);
    int status = (int)r.status;
    if (status != 200)
        fprintf(stderr, "reload: %ld: %s\n", r.status, r.body ? r.body : "");
    h_resp_free(&r);
    return status;
}

/* ---- a read-only outcome log ------------------------------------------------------- */

static void
test_read_only(void)
{
    unsigned port = h_free_port();
    char id[64];
    pid_t pid;

    /* A database with the current schema, made by the daemon itself. */
    write_conf("ro-init", port, "path = ro.db\nflush_interval_ms = 20\n");
    if (start("ro-init", port, &pid) < 0) {
        CHECK(!"triaged started on ro.db");
        return;
    }
    CHECK(chat(port, id) == 200);
    int status = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(wait_row("ro.db", id));

    /* No retention pass: the request rows are what fails. */
    write_conf("ro", port,
               "path = file:ro.db?mode=ro\nretention_days = 0\nflush_interval_ms = 20\n");
    double t0 = h_now_ms();
    if (start("ro", port, &pid) < 0) {
        CHECK(!"triaged started on a read-only URI");
        return;
    }
    struct ready r = readyz(port);
    CHECK(r.http == 200 && !strcmp(r.status, "ready")); /* nothing has failed yet */

    /* Failures for a few heartbeats: requests succeed, the log warns. */
    int ok = 0, sent = 0;
    for (double t1 = h_now_ms(); h_now_ms() - t1 < 3000; sent++) {
        ok += chat(port, id) == 200;
        usleep(200 * 1000);
    }
    CHECK(ok == sent);
    CHECK(wait_line("ro", "attempt to write a readonly database", "rows waiting"));

    r = readyz(port);
    CHECK(r.http == 200);
    CHECK(!strcmp(r.status, "degraded"));
    CHECK(r.storage_degraded);
    CHECK(strstr(r.error, "readonly") != NULL); /* why, for the operator */
    /* Nothing is wrong with the rows: they wait in the queue for a writable log (only a
     * full queue drops), none is lost while the daemon runs. */
    for (double t1 = h_now_ms(); r.rows_waiting < sent && h_now_ms() - t1 < WAIT_MS;) {
        usleep(100 * 1000);
        r = readyz(port);
    }
    CHECK(r.rows_waiting == sent);
    CHECK(r.rows_failed == 0);
    CHECK(!strcmp(r.status, "degraded"));

    /* Rate-limited: never more than one warning per 10 s (counted over a window that
     * holds the daemon's whole life), however many writes failed. */
    int warnings = count_lines("ro", "outcome log", "write failed", NULL);
    double elapsed = h_now_ms() - t0;
    fprintf(stderr, "read-only: %d requests served, %lld rows waiting, %d warnings in %.1f s\n",
            ok, r.rows_waiting, warnings, elapsed / 1000);
    CHECK(warnings >= 1 && warnings <= 1 + (int)(elapsed / 10000));

    status = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* ---- failures, then recovery: the hold ----------------------------------------------- */

static void
test_hold_after_recovery(void)
{
    unsigned port = h_free_port();
    char id[64], path[512];
    pid_t pid;
    const char *storage_long = "path = held.db\nretention_days = 0\nflush_interval_ms = 20\n"
                               "degraded_hold_ms = 600000\n";

    write_conf("held", port, storage_long);
    if (start("held", port, &pid) < 0) {
        CHECK(!"triaged started on held.db");
        return;
    }
    CHECK(chat(port, id) == 200);
    CHECK(wait_row("held.db", id));
    CHECK(!strcmp(readyz(port).status, "ready"));

    /* Another connection takes the write lock: the writer's BEGIN fails after its busy
     * timeout (5 s) with "database is locked". */
    sqlite3 *blocker = NULL;
    snprintf(path, sizeof(path), "%s/held.db", env.dir);
    CHECK(sqlite3_open(path, &blocker) == SQLITE_OK);
    sqlite3_busy_timeout(blocker, WAIT_MS);
    CHECK(sqlite3_exec(blocker, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
    CHECK(chat(port, id) == 200);
    CHECK(wait_line("held", "write failed", "database is locked"));
    CHECK(!strcmp(readyz(port).status, "degraded"));
    sqlite3_exec(blocker, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(blocker);

    /* A later write succeeds, yet /readyz stays degraded for the hold. */
    CHECK(chat(port, id) == 200);
    CHECK(wait_row("held.db", id));
    struct ready r = readyz(port);
    CHECK(r.http == 200);
    CHECK(!strcmp(r.status, "degraded"));
    CHECK(r.storage_degraded);
    CHECK(wait_line("held", "writes succeed again", NULL));

    /* A reload shortens the hold: the failure is older than 1 s, so ready again. */
    write_conf("held", port,
               "path = held.db\nretention_days = 0\nflush_interval_ms = 20\n"
               "degraded_hold_ms = 1000\n");
    CHECK(admin_reload(port) == 200);
    r = readyz(port);
    for (double t0 = h_now_ms(); strcmp(r.status, "ready") && h_now_ms() - t0 < WAIT_MS;) {
        usleep(100 * 1000);
        r = readyz(port);
    }
    CHECK(!strcmp(r.status, "ready"));
    CHECK(!r.storage_degraded);

    int status = h_stop(pid, SIGTERM);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int
main(int argc, char **argv)
{
    int rc = h_env_setup(&env, "storage-errors", argc, argv);
    char path[512], seed[] = "1", out[512];

    if (rc)
        return rc;
    snprintf(path, sizeof(path), "%s/m.tmod", env.dir);
    char *mm[] = {(char *)env.make_model, path, seed, NULL};
    if (h_run(mm, out, sizeof(out)) != 0) {
        fprintf(stderr, "cannot build the test model: %s\n", out);
        CHECK(!"test model built");
        return h_env_finish(&env);
    }
    test_read_only();
    test_hold_after_recovery();
    return h_env_finish(&env);
}
