/* test_conf.c - unit tests for conf/conf.c: defaults, values, cross references and errors. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf.h"

/* Writes text to a fresh temporary file and returns its path (static buffer). */
static const char *
write_conf(const char *text)
{
    static char path[64];
    int fd;

    snprintf(path, sizeof(path), "/tmp/triage-conf-XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

/* Loads text; returns the snapshot or NULL with the error in err. */
static struct conf *
load(const char *text, char *err, size_t errlen)
{
    const char *path = write_conf(text);
    struct conf *c = conf_load(path, err, errlen);

    unlink(path);
    return c;
}

#define MINIMAL                                                                                   \
    "[router]\nmodel = /m.tmod\n"                                                                 \
    "[backend fast]\nurl = http://127.0.0.1:1/v1/\n"                                              \
    "[backend strong]\nurl = https://api.example.com/v1\nmodel = big\n"

/* api = anthropic, its version header, and the tiers of each API counted apart. */
static void
test_backend_api(void **state)
{
    char err[256];
    struct conf *c = load(MINIMAL "[backend claude]\nurl = https://api.anthropic.com/v1\n"
                                  "api = anthropic\n"
                                  "[backend opus]\nurl = https://api.anthropic.com/v1\n"
                                  "api = Anthropic\nanthropic_version = 2024-01-01\n"
                                  "[router]\ntiers = fast, strong, claude, opus\n",
                          err, sizeof(err));

    (void)state;
    assert_non_null(c);
    assert_int_equal(c->backends[0].api, CONF_API_OPENAI);
    assert_int_equal(c->backends[2].api, CONF_API_ANTHROPIC);
    assert_string_equal(c->backends[2].anthropic_version, "2023-06-01");
    assert_string_equal(c->backends[3].anthropic_version, "2024-01-01");
    conf_destroy(c);

    assert_null(load(MINIMAL "[backend x]\nurl = http://h/v1\napi = gemini\n", err, sizeof(err)));
    assert_non_null(strstr(err, "api: unknown value 'gemini'"));
    assert_null(load(MINIMAL "[backend x]\nurl = http://h/v1\napi = anthropic\n"
                             "anthropic_version = a b\n", err, sizeof(err)));
    assert_non_null(strstr(err, "anthropic_version"));
    assert_null(load(MINIMAL "[backend x]\nurl = http://h/v1\n[router]\ntiers = fast, strong, x\n",
                     err, sizeof(err)));
    assert_non_null(strstr(err, "two tiers, 3 given"));
}

static void
test_defaults(void **state)
{
    char err[256];
    struct conf *c = load(MINIMAL, err, sizeof(err));

    assert_non_null(c);
    assert_string_equal(c->listen, "127.0.0.1");
    assert_int_equal(c->port, 8080);
    assert_int_equal(c->max_body, 4 * 1024 * 1024);
    assert_int_equal(c->busy_poll_us, 0);
    assert_int_equal(c->max_response, 64 * 1024 * 1024);
    assert_int_equal(c->log_level, CONF_LOG_INFO);
    assert_int_equal(c->store_prompts, CONF_STORE_PROMPTS_HASH);
    assert_int_equal(c->policy, CONF_POLICY_THRESHOLD);
    assert_true(c->threshold == 0.5);
    assert_true(c->shadow_rate == 0); /* learning is off unless asked for */
    assert_null(c->judge);
    assert_true(c->shadow_budget_usd_per_day == 5);
    assert_int_equal(c->learn_max_concurrent, 4);
    assert_int_equal(c->retrain_every, 500);
    assert_true(c->promote_margin == 0.01);
    assert_int_equal(c->min_holdout, 50);
    assert_true(c->escalation_margin == 0.01);
    assert_int_equal(c->min_holdout_answers, 50);
    /* a retrain learns from the shipped sets too unless told otherwise */
    assert_int_equal(c->n_base_data, 4);
    assert_non_null(strstr(c->base_data[0], "/data/routellm_mmlu.jsonl.gz"));
    assert_non_null(strstr(c->base_data[3], "/data/math_train.jsonl.gz"));
    assert_true(c->strong_share < 0);
    assert_null(c->db_path);
    assert_int_equal(c->n_aliases, 1);
    assert_string_equal(c->aliases[0], "triage");
    assert_true(conf_is_alias(c, "triage"));
    assert_false(conf_is_alias(c, "fast"));

    assert_int_equal(c->n_backends, 2);
    /* trailing slashes are cut; model and head default to the section name */
    assert_string_equal(c->backends[0].url, "http://127.0.0.1:1/v1");
    assert_string_equal(c->backends[0].model, "fast");
    assert_string_equal(c->backends[0].head, "fast");
    assert_string_equal(c->backends[1].model, "big");
    assert_null(c->backends[0].api_key);
    assert_int_equal(c->backends[0].connect_timeout_ms, 5000);
    assert_int_equal(c->backends[0].breaker_failures, 5);

    /* without tiers, the first two backends in file order */
    assert_int_equal(c->n_tiers, 2);
    assert_int_equal(c->tiers[0].backend, 0);
    assert_int_equal(c->tiers[1].backend, 1);
    assert_int_equal(conf_backend_find(c, "strong"), 1);
    assert_int_equal(conf_backend_find(c, "nope"), -1);
    conf_destroy(c);
}

static void
test_values_and_lists(void **state)
{
    char err[256];
    struct conf *c = load("# comment\n"
                          "[server]\n"
                          "port = 9000   ; trailing comment\n"
                          "busy_poll_us = 150\n"
                          "max_body = 64k\n"
                          "log_level = DEBUG\n"
                          "log_format = json\n"
                          "log_prompts = yes\n"
                          "[router]\n"
                          "model = models/x.tmod\n"
                          "aliases = triage, auto\n"
                          "policy = tiers\n"
                          "tiers = a:0.8, b:0.6, c\n"
                          "fallback = c, a\n"
                          "[storage]\n"
                          "path = state/t.db\n"
                          "store_prompts = full\n"
                          "[backend a]\nurl = http://x/v1\nprice_input = 0.25\n"
                          "overrides = {\"reasoning_effort\": \"low\"}\n"
                          "[backend b]\nurl = http://x/v1\n"
                          "[backend c]\nurl = http://y/v1\nprice_output = 30\n",
                          err, sizeof(err));

    assert_non_null(c);
    assert_int_equal(c->port, 9000);
    assert_int_equal(c->busy_poll_us, 150);
    assert_int_equal(c->max_body, 64 * 1024);
    assert_int_equal(c->log_level, CONF_LOG_DEBUG);
    assert_int_equal(c->log_format, CONF_LOG_FORMAT_JSON);
    assert_int_equal(c->log_prompts, 1);
    assert_int_equal(c->n_aliases, 2);
    assert_true(conf_is_alias(c, "auto"));
    assert_int_equal(c->policy, CONF_POLICY_TIERS);
    assert_int_equal(c->n_tiers, 3);
    assert_true(c->tiers[0].bar == 0.8);
    assert_true(c->tiers[1].bar == 0.6);
    assert_int_equal(c->tiers[2].backend, 2);
    assert_int_equal(c->n_fallback, 2);
    assert_int_equal(c->fallback[0], 2);
    assert_int_equal(c->fallback[1], 0);
    assert_int_equal(c->store_prompts, CONF_STORE_PROMPTS_FULL);
    assert_true(c->backends[0].price_input == 0.25);
    assert_true(c->backends[2].price_output == 30);
    assert_string_equal(c->backends[0].overrides, "{\"reasoning_effort\": \"low\"}");
    /* relative paths are resolved against the config file's folder */
    assert_string_equal(c->model_path, "/tmp/models/x.tmod");
    assert_string_equal(c->db_path, "/tmp/state/t.db");
    conf_destroy(c);

    /* base_data: a list resolved like any path, or none at all */
    c = load(MINIMAL "[learning]\nbase_data = a.jsonl, /abs/b.jsonl.gz\n", err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(c->n_base_data, 2);
    assert_string_equal(c->base_data[0], "/tmp/a.jsonl");
    assert_string_equal(c->base_data[1], "/abs/b.jsonl.gz");
    conf_destroy(c);
    c = load(MINIMAL "[learning]\nbase_data = none\n", err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(c->n_base_data, 0);
    conf_destroy(c);
}

static void
test_keys_from_env_and_file(void **state)
{
    char err[256];
    char keyfile[64], text[512];

    snprintf(keyfile, sizeof(keyfile), "%s", write_conf("sk-from-file\n"));

    setenv("TRIAGE_TEST_KEY", "sk-from-env", 1);
    snprintf(text, sizeof(text),
             "[router]\nmodel = /m\n"
             "[backend a]\nurl = http://x\napi_key_env = TRIAGE_TEST_KEY\n"
             "[backend b]\nurl = http://x\napi_key_file = %s\n",
             keyfile);
    struct conf *c = load(text, err, sizeof(err));
    assert_non_null(c);
    assert_string_equal(c->backends[0].api_key, "sk-from-env");
    assert_string_equal(c->backends[1].api_key, "sk-from-file");
    conf_destroy(c);

    /* a bare file name is a systemd credential */
    const char *slash = strrchr(keyfile, '/');
    setenv("CREDENTIALS_DIRECTORY", "/tmp", 1);
    snprintf(text, sizeof(text), "[router]\nmodel = /m\n[backend b]\nurl = http://x\n"
                                 "api_key_file = %s\n", slash + 1);
    c = load(text, err, sizeof(err));
    assert_non_null(c);
    assert_string_equal(c->backends[0].api_key, "sk-from-file");
    conf_destroy(c);
    unsetenv("CREDENTIALS_DIRECTORY");
    unlink(keyfile);

    unsetenv("TRIAGE_TEST_KEY");
    c = load("[router]\nmodel = /m\n[backend a]\nurl = http://x\napi_key_env = TRIAGE_TEST_KEY\n",
             err, sizeof(err));
    assert_null(c);
    assert_non_null(strstr(err, "TRIAGE_TEST_KEY is not set"));
    /* the error names the variable, never a key value */
    assert_null(strstr(err, "sk-"));

    /* tools that never call a backend can read the file without its secrets */
    const char *path = write_conf("[router]\nmodel = /m\n[backend a]\nurl = http://x\n"
                                  "api_key_env = TRIAGE_TEST_KEY\n");
    c = conf_load_flags(path, CONF_LOAD_SKIP_KEYS, err, sizeof(err));
    unlink(path);
    assert_non_null(c);
    assert_null(c->backends[0].api_key);
    conf_destroy(c);
}

/* Each bad file must fail with an error that names the line (where there is one). */
static void
test_errors(void **state)
{
    static const struct {
        const char *text;
        const char *expect; /* substring of the error */
    } cases[] = {
        {"[server]\nport = 0\n", ":2: port: 0 is out of range"},
        {"[server]\nbusy_poll_us = 2000000\n", ":2: busy_poll_us: 2000000 is out of range"},
        {"[server]\nport = 80x\n", ":2: port: not a number"},
        {"[server]\nworkers = 1.5\n", ":2: workers: expected a whole number"},
        {"[server]\nlog_level = loud\n", ":2: log_level: unknown value 'loud'"},
        {"[server]\nlog_prompts = maybe\n", ":2: log_prompts: expected yes or no"},
        {"[server]\nbogus = 1\n", ":2: unknown key 'bogus' in [server]"},
        {"[nosuch]\nx = 1\n", ":2: unknown section [nosuch]"},
        {"port = 1\n", ":1: 'port' is outside any [section]"},
        {"[server\n", ":1: syntax error: expected [section]"},
        {"[server]\njust words\n", ":2: syntax error: expected key = value"},
        {"[backend]\nurl = http://x\n", ":1: a backend section needs a name"},
        {"[backend a b]\nurl = http://x\n", "backend name 'a b'"},
        {"[router]\nmodel = /m\n", "no [backend NAME] section"},
        {"[router]\nmodel = /m\n[backend a]\nurl = http://x\n[backend a]\n",
         ":5: backend a is defined twice"},
        {"[router]\nmodel = /m\n[backend a]\n", "backend a: url is required"},
        {"[router]\nmodel = /m\n[backend a]\nmodel = x\n", "backend a: url is required"},
        {"[router]\nmodel = /m\n[backend a]\nurl = ftp://x\n", "must start with http://"},
        {"[router]\nmodel = /m\n[backend a]\nurl = http://x\noverrides = [1]\n",
         "overrides must be a JSON object"},
        {"[router]\nmodel = /m\ntiers = a, zz\n[backend a]\nurl = http://x\n",
         ":3: tiers: no backend called 'zz'"},
        {"[router]\nmodel = /m\npolicy = tiers\ntiers = a:1.5\n[backend a]\nurl = http://x\n",
         ":4: tiers: bar 1.5 for a is outside [0, 1]"},
        {"[router]\nmodel = /m\ntiers = a, a, a\n[backend a]\nurl = http://x\n",
         "policy threshold routes between two tiers, 3 given"},
        {"[router]\nmodel = /m\nfallback = q\n[backend a]\nurl = http://x\n",
         ":3: fallback: no backend called 'q'"},
        {"[router]\nmodel = /m\naliases = a\n[backend a]\nurl = http://x\n",
         "alias 'a' is also a backend name"},
        {"[backend a]\nurl = http://x\n", "[router] model is required"},
        {"[router]\nmodel = /m\naliases = tri\xc3\n[backend a]\nurl = http://x\n",
         "alias 'tri"},
        {"[router]\nmodel = /m\n[backend a]\nurl = http://x\n[learning]\njudge = zz\n",
         "[learning] judge = zz: no such backend"},
        {"[router]\nmodel = /m\n[backend a]\nurl = http://x\n[learning]\nshadow_rate = 2\n",
         ":6: shadow_rate: 2 is out of range"},
    };
    char err[256];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conf *c = load(cases[i].text, err, sizeof(err));
        if (c || !strstr(err, cases[i].expect))
            fail_msg("case %zu: expected error containing \"%s\", got \"%s\"", i,
                     cases[i].expect, c ? "(loaded)" : err);
        assert_non_null(strstr(err, "/tmp/triage-conf-"));
    }
}

/* tiers = name:40%, ...: shares held online; the last tier may take the rest. */
static void
test_tier_shares(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "[router]\nmodel = /m\npolicy = tiers\ntiers = a:40%, b:40%, c\n",
        "[router]\nmodel = /m\npolicy = tiers\ntiers = a:40%, b:40%, c:20%\n",
    };
    char err[256], text[512];

    for (size_t i = 0; i < 2; i++) {
        snprintf(text, sizeof(text), "%s[backend a]\nurl = http://x\n[backend b]\nurl = http://x\n"
                 "[backend c]\nurl = http://x\n", texts[i]);
        struct conf *c = load(text, err, sizeof(err));
        assert_non_null(c);
        assert_int_equal(c->tier_shares, 1);
        assert_int_equal(c->n_tiers, 3);
        assert_true(fabs(c->tiers[0].share - 0.4) < 1e-12);
        assert_true(fabs(c->tiers[1].share - 0.4) < 1e-12);
        assert_true(fabs(c->tiers[2].share - 0.2) < 1e-12);
        assert_int_equal(c->tiers[2].backend, 2);
        conf_destroy(c);
    }
    /* bars: no shares */
    struct conf *c = load("[router]\nmodel = /m\npolicy = tiers\ntiers = a:0.8, b\n"
                          "[backend a]\nurl = http://x\n[backend b]\nurl = http://x\n",
                          err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(c->tier_shares, 0);
    assert_true(c->tiers[0].share < 0 && c->tiers[1].share < 0);
    conf_destroy(c);

    static const struct {
        const char *tiers, *expect;
    } bad[] = {
        {"a:40%, b:0.5, c", "give every tier a share"},
        {"a:40%, b, c", "give every tier a share"},
        {"a:70%, b:40%, c", "add up to 110%, more than 100%"},
        {"a:40%, b:40%, c:30%", "add up to 110%, not 100%"},
        {"a:140%, b", "share 140% for a is outside"},
        {"a:-1%, b", "share -1% for a is outside"},
        {"a:x%, b", "no backend called 'a:x%'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "[router]\nmodel = /m\npolicy = tiers\ntiers = %s\n"
                 "[backend a]\nurl = http://x\n[backend b]\nurl = http://x\n"
                 "[backend c]\nurl = http://x\n", bad[i].tiers);
        c = load(text, err, sizeof(err));
        if (c || !strstr(err, bad[i].expect))
            fail_msg("tiers = %s: expected \"%s\", got \"%s\"", bad[i].tiers, bad[i].expect,
                     c ? "(loaded)" : err);
    }
    c = load("[router]\nmodel = /m\ntiers = a:70%, b\n[backend a]\nurl = http://x\n"
             "[backend b]\nurl = http://x\n", err, sizeof(err));
    assert_null(c);
    assert_non_null(strstr(err, "need policy = tiers"));
}

static void
test_missing_file(void **state)
{
    char err[256];

    assert_null(conf_load("/nonexistent/triage.conf", err, sizeof(err)));
    assert_string_equal(err, "/nonexistent/triage.conf: cannot open: No such file or directory");
}

static void
test_shipped_example(void **state)
{
    char err[512], path[1024];
    const char *root = getenv("TRIAGE_SOURCE_ROOT");

    snprintf(path, sizeof(path), "%s/conf/triage.conf", root ? root : ".");
    struct conf *c = conf_load(path, err, sizeof(err));
    if (!c)
        fail_msg("%s", err);
    assert_int_equal(c->n_backends, 2);
    assert_int_equal(c->n_tiers, 2);
    assert_string_equal(c->backends[c->tiers[0].backend].name, "fast");
    assert_string_equal(c->backends[c->tiers[1].backend].name, "strong");
    conf_destroy(c);
}

static void
test_log_level_parse(void **state)
{
    assert_int_equal(conf_log_level_parse("warn"), CONF_LOG_WARN);
    assert_int_equal(conf_log_level_parse("Info"), CONF_LOG_INFO);
    assert_int_equal(conf_log_level_parse("trace"), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_values_and_lists),
        cmocka_unit_test(test_keys_from_env_and_file),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_tier_shares),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_backend_api),
        cmocka_unit_test(test_shipped_example),
        cmocka_unit_test(test_log_level_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
