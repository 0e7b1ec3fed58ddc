/* test_log.c - unit tests for daemon/log.c: levels, lazy arguments, logfmt and JSON quoting,
 * batching. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "log.h"

static int saved_stderr = -1;
static int pipefd[2];

/* Redirects stderr into a pipe until capture_end(). */
static void
capture_begin(void)
{
    assert_int_equal(pipe(pipefd), 0);
    saved_stderr = dup(STDERR_FILENO);
    dup2(pipefd[1], STDERR_FILENO);
    close(pipefd[1]);
}

/* Restores stderr and returns what was written (static buffer). */
static const char *
capture_end(void)
{
    static char buf[8192];
    ssize_t n, total = 0;

    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    while ((n = read(pipefd[0], buf + total, sizeof(buf) - 1 - (size_t)total)) > 0)
        total += n;
    close(pipefd[0]);
    buf[total] = '\0';
    return buf;
}

static int evaluated;

static int
side_effect(void)
{
    evaluated++;
    return 42;
}

static void
test_levels_lazy(void **state)
{
    (void)state;
    log_set_json(0);
    log_set_level(LOG_LEVEL_INFO);
    evaluated = 0;
    capture_begin();
    log_debug("hidden %d", side_effect());
    log_info("shown %d", side_effect());
    const char *out = capture_end();
    assert_int_equal(evaluated, 1); /* the debug line's arguments were never evaluated */
    assert_null(strstr(out, "hidden"));
    assert_non_null(strstr(out, "level=info msg=\"shown 42\""));

    log_set_level(LOG_LEVEL_ERROR);
    capture_begin();
    log_warnx("quiet");
    log_error("loud");
    out = capture_end();
    assert_null(strstr(out, "quiet"));
    assert_non_null(strstr(out, "msg=loud"));
    log_set_level(LOG_LEVEL_INFO);
}

static void
test_warn_appends_strerror(void **state)
{
    (void)state;
    log_set_json(0);
    capture_begin();
    errno = ENOENT;
    log_warn("open %s", "x.conf");
    const char *out = capture_end();
    assert_non_null(strstr(out, "open x.conf: No such file or directory"));
    assert_int_equal(errno, ENOENT); /* preserved for the caller */
}

static void
test_logfmt_fields(void **state)
{
    (void)state;
    log_set_json(0);
    struct log_field f[] = {
        LOG_F_STR("id", "req_1"),   LOG_F_STR("quoted", "a b\"c"), LOG_F_STR("skipped", NULL),
        LOG_F_INT("status", 200),   LOG_F_DBL("ms", 1.5),          LOG_F_DBL("nan", NAN),
        LOG_F_STR("empty", ""),
    };
    capture_begin();
    log_fields(LOG_LEVEL_INFO, "request", f, 7);
    const char *out = capture_end();
    assert_non_null(strstr(out, " msg=request id=req_1 quoted=\"a b\\\"c\" status=200 ms=1.500 "
                                "empty=\"\"\n"));
    assert_null(strstr(out, "skipped"));
    assert_null(strstr(out, "nan"));
    assert_int_equal(strchr(out, '\n') - out + 1, (long)strlen(out)); /* one line */
}

static void
test_json_lines(void **state)
{
    (void)state;
    log_set_json(1);
    struct log_field f[] = {LOG_F_STR("path", "/v1/x\n\"y\""), LOG_F_INT("status", 404)};
    capture_begin();
    log_fields(LOG_LEVEL_WARN, "request", f, 2);
    const char *out = capture_end();
    log_set_json(0);
    json_error_t err;
    json_t *j = json_loads(out, JSON_DISABLE_EOF_CHECK, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "request");
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/v1/x\n\"y\"");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 404);
    assert_non_null(json_object_get(j, "ts"));
    json_decref(j);
}

/* Batched lines wait for log_flush(); a warning goes out at once, after them; a
 * full batch goes out by itself; nothing is reordered or lost. */
static void
test_batching(void **state)
{
    char buf[8192];

    (void)state;
    log_set_json(0);
    log_set_level(LOG_LEVEL_INFO);
    capture_begin();
    fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    log_batch(1);
    log_info("first");
    log_info("second");
    assert_true(read(pipefd[0], buf, sizeof(buf)) < 0 && errno == EAGAIN); /* held */
    log_warnx("third");
    ssize_t n = read(pipefd[0], buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    char *a = strstr(buf, "msg=first"), *b = strstr(buf, "msg=second"), *c = strstr(buf, "msg=third");
    assert_true(a && b && c && a < b && b < c);
    log_info("fourth");
    assert_true(read(pipefd[0], buf, sizeof(buf)) < 0 && errno == EAGAIN);
    log_flush();
    n = read(pipefd[0], buf, sizeof(buf) - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "msg=fourth"));
    /* more than a batch holds: written as it fills, whole lines */
    for (int i = 0; i < 40; i++)
        log_info("line %03d %0200d", i, 0);
    n = read(pipefd[0], buf, sizeof(buf) - 1);
    assert_true(n > 0 && buf[n - 1] == '\n');
    log_batch(0); /* writes the rest */
    fcntl(pipefd[0], F_SETFL, 0);
    const char *out = capture_end();
    assert_non_null(strstr(out, "msg=\"line 039 "));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels_lazy),
        cmocka_unit_test(test_warn_appends_strerror),
        cmocka_unit_test(test_logfmt_fields),
        cmocka_unit_test(test_json_lines),
        cmocka_unit_test(test_batching),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
