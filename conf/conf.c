/* conf.c - parses triage.conf (INI) into a validated, immutable snapshot.
 *
 * Every scalar key lives in one table (section, key, type, bounds, default), in
 * the manner of redis' config.c: parsing and defaults come from it. Backend
 * sections are "[backend NAME]" and may repeat with different names. The INI
 * reader is our own (a few dozen lines) so every error can name its line. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "config.h"
#include "conf.h"

enum conf_type {
    T_STR,   /* char * */
    T_U16,   /* uint16_t */
    T_U32,   /* uint32_t */
    T_SIZE,  /* size_t, accepts k/m/g suffixes (powers of 1024) */
    T_BOOL,  /* int: yes/no, true/false, on/off, 1/0 */
    T_DBL,   /* double */
    T_ENUM,  /* int, from a name list */
};

struct conf_key {
    const char *section; /* "server", "router", ...; "backend" for every [backend NAME] */
    const char *name;
    enum conf_type type;
    size_t offset;       /* into struct conf, or struct conf_backend for "backend" */
    double min, max;     /* bounds for numbers */
    const char *def;     /* default as text, parsed like a value from the file; NULL: none */
    const char *const *names; /* T_ENUM: names in value order, NULL-terminated */
};

static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const log_formats[] = {"logfmt", "json", NULL};
static const char *const store_prompts[] = {"none", "hash", "full", "features", NULL};
static const char *const policies[] = {"threshold", "tiers", "cascade", NULL};
static const char *const apis[] = {"openai", "anthropic", NULL};

#define C(field) offsetof(struct conf, field)
#define B(field) offsetof(struct conf_backend, field)

static const struct conf_key keys[] = {
    {"server", "listen", T_STR, C(listen), 0, 0, "127.0.0.1", NULL},
    {"server", "port", T_U16, C(port), 1, 65535, "8080", NULL},
    {"server", "workers", T_U32, C(workers), 1, 64, "1", NULL},
    {"server", "max_body", T_SIZE, C(max_body), 1024, 1024.0 * 1024 * 1024, "4m", NULL},
    {"server", "max_header", T_SIZE, C(max_header), 1024, 1024 * 1024, "16k", NULL},
    {"server", "max_response", T_SIZE, C(max_response), 1024, 1024.0 * 1024 * 1024, "64m", NULL},
    {"server", "max_connections", T_U32, C(max_connections), 1, 1000000, "16384", NULL},
    {"server", "read_timeout_ms", T_U32, C(read_timeout_ms), 100, 3600000, "30000", NULL},
    {"server", "idle_timeout_ms", T_U32, C(idle_timeout_ms), 100, 3600000, "60000", NULL},
    {"server", "busy_poll_us", T_U32, C(busy_poll_us), 0, 1000000, "0", NULL},
    {"server", "shutdown_timeout_ms", T_U32, C(shutdown_timeout_ms), 0, 3600000, "30000", NULL},
    {"server", "log_level", T_ENUM, C(log_level), 0, 0, "info", log_levels},
    {"server", "log_format", T_ENUM, C(log_format), 0, 0, "logfmt", log_formats},
    {"server", "log_prompts", T_BOOL, C(log_prompts), 0, 0, "no", NULL},

    {"auth", "keys_file", T_STR, C(keys_file), 0, 0, NULL, NULL},
    {"auth", "admin_keys_file", T_STR, C(admin_keys_file), 0, 0, NULL, NULL},
    {"auth", "open_on_loopback", T_BOOL, C(open_on_loopback), 0, 0, "yes", NULL},
    {"auth", "stats_need_admin", T_BOOL, C(stats_need_admin), 0, 0, "no", NULL},
    {"auth", "rate_limit_rpm", T_U32, C(rate_limit_rpm), 0, 10000000, "0", NULL},
    {"auth", "rate_limit_tpm", T_U32, C(rate_limit_tpm), 0, 4000000000.0, "0", NULL},
    {"auth", "rate_limit_replicas", T_U32, C(rate_limit_replicas), 1, 1000, "1", NULL},
    {"auth", "budget_refresh_ms", T_U32, C(budget_refresh_ms), 50, 600000, "1000", NULL},

    {"router", "model", T_STR, C(model_path), 0, 0, NULL, NULL},
    {"router", "policy", T_ENUM, C(policy), 0, 0, "threshold", policies},
    {"router", "threshold", T_DBL, C(threshold), 0, 1, "0.5", NULL},
    {"router", "strong_share", T_DBL, C(strong_share), -1, 1, "-1", NULL},
    {"router", "share_window", T_U32, C(share_window), 10, 1000000, "1000", NULL},
    {"router", "sticky", T_BOOL, C(sticky), 0, 0, "yes", NULL},
    {"router", "sticky_ttl_s", T_U32, C(sticky_ttl_s), 1, 604800, "3600", NULL},
    {"router", "sticky_entries", T_U32, C(sticky_entries), 4, 67108864, "65536", NULL},
    {"router", "cascade_low", T_DBL, C(cascade_low), 0, 1, "0", NULL},
    {"router", "cascade_high", T_DBL, C(cascade_high), 0, 1, "1", NULL},
    {"router", "escalate_at", T_DBL, C(escalate_at), 0, 1, "0.5", NULL},
    {"router", "cascade_logprobs", T_BOOL, C(cascade_logprobs), 0, 0, "yes", NULL},

    {"storage", "path", T_STR, C(db_path), 0, 0, NULL, NULL},
    {"storage", "url", T_STR, C(db_url), 0, 0, NULL, NULL},
    {"storage", "store_prompts", T_ENUM, C(store_prompts), 0, 0, "hash", store_prompts},
    {"storage", "retention_days", T_U32, C(retention_days), 0, 36500, "30", NULL},
    {"storage", "queue_size", T_U32, C(queue_size), 16, 16777216, "65536", NULL},
    {"storage", "batch_size", T_U32, C(batch_size), 1, 65536, "512", NULL},
    {"storage", "flush_interval_ms", T_U32, C(flush_interval_ms), 1, 60000, "200", NULL},
    {"storage", "degraded_hold_ms", T_U32, C(degraded_hold_ms), 0, 86400000, "60000", NULL},

    {"learning", "shadow_rate", T_DBL, C(shadow_rate), 0, 1, "0", NULL},
    {"learning", "judge", T_STR, C(judge), 0, 0, NULL, NULL},
    {"learning", "shadow_budget_usd_per_day", T_DBL, C(shadow_budget_usd_per_day), 0, 1e9, "5",
     NULL},
    {"learning", "max_concurrent", T_U32, C(learn_max_concurrent), 1, 10000, "4", NULL},
    {"learning", "retrain_every", T_U32, C(retrain_every), 0, 100000000, "500", NULL},
    {"learning", "models_dir", T_STR, C(models_dir), 0, 0, NULL, NULL},
    {"learning", "promote_margin", T_DBL, C(promote_margin), -1, 1, "0.01", NULL},
    {"learning", "min_holdout", T_U32, C(min_holdout), 1, 100000000, "50", NULL},
    {"learning", "escalation_margin", T_DBL, C(escalation_margin), 0, 1, "0.01", NULL},
    {"learning", "min_holdout_answers", T_U32, C(min_holdout_answers), 1, 100000000, "50", NULL},

    {"backend", "url", T_STR, B(url), 0, 0, NULL, NULL},
    {"backend", "model", T_STR, B(model), 0, 0, NULL, NULL},
    {"backend", "head", T_STR, B(head), 0, 0, NULL, NULL},
    {"backend", "api_key_env", T_STR, B(api_key_env), 0, 0, NULL, NULL},
    {"backend", "api_key_file", T_STR, B(api_key_file), 0, 0, NULL, NULL},
    {"backend", "overrides", T_STR, B(overrides), 0, 0, NULL, NULL},
    {"backend", "api_key_header", T_STR, B(api_key_header), 0, 0, NULL, NULL},
    {"backend", "api", T_ENUM, B(api), 0, 0, "openai", apis},
    {"backend", "anthropic_version", T_STR, B(anthropic_version), 0, 0, "2023-06-01", NULL},
    {"backend", "price_input", T_DBL, B(price_input), 0, 1e6, "0", NULL},
    {"backend", "price_output", T_DBL, B(price_output), 0, 1e6, "0", NULL},
    {"backend", "connect_timeout_ms", T_U32, B(connect_timeout_ms), 1, 600000, "5000", NULL},
    {"backend", "first_byte_timeout_ms", T_U32, B(first_byte_timeout_ms), 1, 3600000, "120000",
     NULL},
    {"backend", "idle_timeout_ms", T_U32, B(idle_timeout_ms), 1, 3600000, "60000", NULL},
    {"backend", "timeout_ms", T_U32, B(timeout_ms), 1, 86400000, "600000", NULL},
    {"backend", "max_concurrent", T_U32, B(max_concurrent), 0, 1000000, "0", NULL},
    {"backend", "max_retries", T_U32, B(max_retries), 0, 10, "1", NULL},
    {"backend", "breaker_failures", T_U32, B(breaker_failures), 1, 1000, "5", NULL},
    {"backend", "breaker_window_ms", T_U32, B(breaker_window_ms), 100, 3600000, "30000", NULL},
    {"backend", "breaker_cooldown_ms", T_U32, B(breaker_cooldown_ms), 100, 3600000, "10000",
     NULL},
};

#undef C
#undef B

/* Parsing state handed through inih. */
struct parse {
    struct conf *c;
    const char *path;
    char *err;
    size_t errlen;
    unsigned flags; /* CONF_LOAD_* */
    int failed;
    /* List-valued keys are kept as text until every backend is known. */
    char *aliases;
    char *tiers;
    char *fallback;
    char *base_data;
    char *forward_headers;
    int tiers_line, fallback_line, forward_line;
};

static void set_err(struct parse *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_err(struct parse *p, int line, const char *fmt, ...)
{
    va_list ap;
    size_t n;

    if (p->failed)
        return; /* the first error is the one worth reading */
    p->failed = 1;
    if (line > 0)
        n = (size_t)snprintf(p->err, p->errlen, "%s:%d: ", p->path, line);
    else
        n = (size_t)snprintf(p->err, p->errlen, "%s: ", p->path);
    if (n >= p->errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->errlen - n, fmt, ap);
    va_end(ap);
}

static char *
xstrdup(const char *s)
{
    char *d = strdup(s);

    if (!d)
        abort(); /* out of memory at start-up or reload: nothing sensible to do */
    return d;
}

static int
parse_bool(const char *v, int *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};

    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i])) {
            *out = 1;
            return 0;
        }
        if (!strcasecmp(v, no[i])) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* Parses a number with an optional k/m/g suffix into *out. */
static int
parse_number(const char *v, int allow_suffix, double *out)
{
    char *end;
    double d;

    errno = 0;
    d = strtod(v, &end);
    if (end == v || errno || !isfinite(d))
        return -1;
    if (allow_suffix && *end) {
        switch (tolower((unsigned char)*end)) {
        case 'k': d *= 1024; break;
        case 'm': d *= 1024.0 * 1024; break;
        case 'g': d *= 1024.0 * 1024 * 1024; break;
        default: return -1;
        }
        end++;
        if (*end == 'b' || *end == 'B')
            end++;
    }
    if (*end)
        return -1;
    *out = d;
    return 0;
}

/* Stores text v into the field described by k at base. Returns 0 or -1 with err set. */
static int
set_value(struct parse *p, int line, const struct conf_key *k, void *base, const char *v)
{
    void *field = (char *)base + k->offset;
    double d;

    switch (k->type) {
    case T_STR:
        free(*(char **)field);
        *(char **)field = xstrdup(v);
        return 0;
    case T_BOOL:
        if (parse_bool(v, (int *)field) < 0) {
            set_err(p, line, "%s: expected yes or no, got '%s'", k->name, v);
            return -1;
        }
        return 0;
    case T_ENUM:
        for (int i = 0; k->names[i]; i++) {
            if (!strcasecmp(v, k->names[i])) {
                *(int *)field = i;
                return 0;
            }
        }
        set_err(p, line, "%s: unknown value '%s'", k->name, v);
        return -1;
    case T_U16:
    case T_U32:
    case T_SIZE:
    case T_DBL:
        if (parse_number(v, k->type == T_SIZE, &d) < 0) {
            set_err(p, line, "%s: not a number: '%s'", k->name, v);
            return -1;
        }
        if (k->type != T_DBL && d != floor(d)) {
            set_err(p, line, "%s: expected a whole number, got '%s'", k->name, v);
            return -1;
        }
        if (d < k->min || d > k->max) {
            set_err(p, line, "%s: %s is out of range [%g, %g]", k->name, v, k->min, k->max);
            return -1;
        }
        if (k->type == T_U16)
            *(uint16_t *)field = (uint16_t)d;
        else if (k->type == T_U32)
            *(uint32_t *)field = (uint32_t)d;
        else if (k->type == T_SIZE)
            *(size_t *)field = (size_t)d;
        else
            *(double *)field = d;
        return 0;
    }
    return -1;
}

/* Applies the table's defaults for section to base. */
static void
set_defaults(struct parse *p, const char *section, void *base)
{
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (!strcmp(keys[i].section, section) && keys[i].def)
            set_value(p, 0, &keys[i], base, keys[i].def);
}

static struct conf_backend *
backend_add(struct parse *p, const char *name)
{
    struct conf *c = p->c;
    struct conf_backend *b;

    b = realloc(c->backends, (c->n_backends + 1) * sizeof(*b));
    if (!b)
        abort();
    c->backends = b;
    b = &c->backends[c->n_backends++];
    memset(b, 0, sizeof(*b));
    b->name = xstrdup(name);
    set_defaults(p, "backend", b);
    return b;
}

static int
valid_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("-_.:/", *s))
            return 0;
    return 1;
}

/* Header names triage writes itself, or that carry a key or a cookie: a backend's
 * `header` lines and [server] forward_headers may not name them. */
static const char *const reserved_headers[] = {
    "host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
    "te", "trailer", "expect", "proxy-connection", "content-type", "accept", "user-agent",
    "x-request-id", "authorization", "proxy-authorization", "x-api-key", "api-key", "cookie",
    NULL,
};

int
conf_header_name_valid(const char *name, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        /* RFC 9110 5.6.2: tchar */
        if (!isalnum(ch) && !strchr("!#$%&'*+-.^_`|~", ch))
            return 0;
    }
    return 1;
}

int
conf_header_value_valid(const char *value, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)value[i];
        /* NUL, CR or LF would split or end the header line; other controls but HTAB
         * are not field content either (RFC 9110 5.5) */
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 0;
    }
    return 1;
}

static int
header_reserved(const char *name)
{
    for (int i = 0; reserved_headers[i]; i++)
        if (!strcasecmp(name, reserved_headers[i]))
            return 1;
    return 0;
}

/* A backend's "header = Name: value" line: checked, then added to b->headers. */
static int
backend_header_add(struct parse *p, int line, struct conf_backend *b, const char *v)
{
    const char *colon = strchr(v, ':');
    size_t nlen = colon ? (size_t)(colon - v) : 0;

    if (!colon || !conf_header_name_valid(v, nlen)) {
        set_err(p, line, "header: expected 'Name: value' with a token name, got '%s'", v);
        return -1;
    }
    const char *val = colon + 1;
    while (*val == ' ' || *val == '\t')
        val++;
    if (!conf_header_value_valid(val, strlen(val))) {
        set_err(p, line, "header %.*s: the value holds a control character", (int)nlen, v);
        return -1;
    }
    char name[256];
    if (nlen >= sizeof(name) || (snprintf(name, sizeof(name), "%.*s", (int)nlen, v), header_reserved(name))) {
        set_err(p, line, "header %.*s: triage sets that header itself (the key: api_key_env, "
                "api_key_file, api_key_header)", (int)nlen, v);
        return -1;
    }
    size_t old = b->headers ? strlen(b->headers) : 0, add = nlen + 2 + strlen(val) + 2;
    char *grown = realloc(b->headers, old + add + 1);
    if (!grown)
        abort();
    snprintf(grown + old, add + 1, "%s: %s\r\n", name, val);
    b->headers = grown;
    return 0;
}

/* One key = value from the file. Returns nonzero to go on. */
static int
on_key(void *user, const char *section, const char *name, const char *value, int line)
{
    struct parse *p = user;
    const char *kind = section;
    void *base = p->c;

    if (p->failed)
        return 0;
    if (!strncmp(section, "backend ", 8)) {
        /* read_ini has checked the name and added the backend */
        kind = "backend";
        base = &p->c->backends[conf_backend_find(p->c, section + 8)];
    }

    if (!strcmp(kind, "backend") && !strcmp(name, "header"))
        return backend_header_add(p, line, base, value) == 0;
    if (!strcmp(kind, "server") && !strcmp(name, "forward_headers")) {
        free(p->forward_headers);
        p->forward_headers = xstrdup(value);
        p->forward_line = line;
        return 1;
    }
    if (!strcmp(kind, "learning") && !strcmp(name, "base_data")) {
        free(p->base_data);
        p->base_data = xstrdup(value);
        return 1;
    }
    if (!strcmp(kind, "router")) {
        char **list = NULL;
        if (!strcmp(name, "aliases"))
            list = &p->aliases;
        else if (!strcmp(name, "tiers"))
            list = &p->tiers, p->tiers_line = line;
        else if (!strcmp(name, "fallback"))
            list = &p->fallback, p->fallback_line = line;
        if (list) {
            free(*list);
            *list = xstrdup(value);
            return 1;
        }
    }

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (!strcmp(keys[i].section, kind) && !strcmp(keys[i].name, name))
            return set_value(p, line, &keys[i], base, value) == 0;
    }
    if (strcmp(kind, "server") && strcmp(kind, "auth") && strcmp(kind, "router") &&
        strcmp(kind, "storage") && strcmp(kind, "learning") && strcmp(kind, "backend"))
        set_err(p, line, "unknown section [%s]", section);
    else
        set_err(p, line, "unknown key '%s' in [%s]", name, section);
    return 0;
}

static char *
trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

/* Reads "[section]" and "key = value" lines; '#' or ';' starts a comment at the
 * start of a line or after white space. Stops at the first error. */
static void
read_ini(struct parse *p, FILE *f)
{
    char section[256] = "";
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0;

    while (!p->failed && getline(&line, &cap, f) >= 0) {
        lineno++;
        for (char *c = line; *c; c++) {
            if ((*c == '#' || *c == ';') && (c == line || isspace((unsigned char)c[-1]))) {
                *c = '\0';
                break;
            }
        }
        char *s = trim(line);
        if (!*s)
            continue;
        if (*s == '[') {
            char *close = strchr(s, ']');
            if (!close || close[1] != '\0') {
                set_err(p, lineno, "syntax error: expected [section]");
                break;
            }
            *close = '\0';
            snprintf(section, sizeof(section), "%s", trim(s + 1));
            if (!strcmp(section, "backend")) {
                set_err(p, lineno, "a backend section needs a name: [backend NAME]");
                break;
            }
            if (!strncmp(section, "backend ", 8) && !valid_name(section + 8)) {
                set_err(p, lineno, "backend name '%s' may hold only letters, digits and -_.:/",
                        section + 8);
                break;
            }
            if (!strncmp(section, "backend ", 8)) {
                if (conf_backend_find(p->c, section + 8) >= 0) {
                    set_err(p, lineno, "backend %s is defined twice", section + 8);
                    break;
                }
                backend_add(p, section + 8);
            }
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            set_err(p, lineno, "syntax error: expected key = value");
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        if (!*section) {
            set_err(p, lineno, "'%s' is outside any [section]", key);
            break;
        }
        on_key(p, section, key, value, lineno);
    }
    free(line);
}

/* Splits s on commas into trimmed, non-empty items. Returns the count; *items is new. */
static size_t
split_list(const char *s, char ***items)
{
    char *copy = xstrdup(s), *save = NULL, *tok;
    size_t n = 0;

    *items = NULL;
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        tok = trim(tok);
        if (!*tok)
            continue;
        char **grown = realloc(*items, (n + 1) * sizeof(char *));
        if (!grown)
            abort();
        *items = grown;
        (*items)[n++] = xstrdup(tok);
    }
    free(copy);
    return n;
}

static void
free_list(char **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

/* The largest config file read (bytes): the example is 15 KB. */
#define CONF_FILE_MAX (16u << 20)

/* Opens path for reading if it is a regular file of at most max bytes: a FIFO would
 * block the reload for good, /dev/zero (a config symlinked to it) would be read
 * until memory runs out. Returns the stream, or NULL with why (whylen bytes). */
static FILE *
open_regular(const char *path, size_t max, char *why, size_t whylen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);

    if (fd < 0) {
        snprintf(why, whylen, "cannot open: %s", strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "cannot read: %s", S_ISDIR(st.st_mode) ? "a directory" :
                                                    "not a regular file");
        close(fd);
        return NULL;
    }
    if ((uintmax_t)st.st_size > max) {
        snprintf(why, whylen, "cannot read: larger than %zu MB", max >> 20);
        close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, "r");
    if (!f)
        close(fd);
    return f;
}

/* Reads a whole small file (a key) into a new string with trailing newlines cut. */
static char *
read_secret(const char *path)
{
    char why[128];
    FILE *f = open_regular(path, CONF_FILE_MAX, why, sizeof(why));
    char buf[4096];
    size_t n;

    if (!f)
        return NULL;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    char *s = xstrdup(buf);
    memset(buf, 0, sizeof(buf));
    return s;
}

static int
resolve_key(struct parse *p, struct conf_backend *b)
{
    if (b->api_key_env && b->api_key_file) {
        set_err(p, 0, "backend %s: set api_key_env or api_key_file, not both", b->name);
        return -1;
    }
    if (b->api_key_env) {
        const char *v = getenv(b->api_key_env);
        if (!v || !*v) {
            set_err(p, 0, "backend %s: environment variable %s is not set", b->name,
                    b->api_key_env);
            return -1;
        }
        b->api_key = xstrdup(v);
    } else if (b->api_key_file) {
        char path[PATH_MAX];
        const char *creds = getenv("CREDENTIALS_DIRECTORY");

        /* A bare name is a systemd credential (LoadCredential=) when one is there. */
        if (creds && !strchr(b->api_key_file, '/'))
            snprintf(path, sizeof(path), "%s/%s", creds, b->api_key_file);
        else
            snprintf(path, sizeof(path), "%s", b->api_key_file);
        b->api_key = read_secret(path);
        if (!b->api_key) {
            set_err(p, 0, "backend %s: cannot read api_key_file %s: %s", b->name, path,
                    strerror(errno));
            return -1;
        }
    }
    return 0;
}

static int
check_backend(struct parse *p, struct conf_backend *b)
{
    if (!b->url) {
        set_err(p, 0, "backend %s: url is required", b->name);
        return -1;
    }
    if (strncmp(b->url, "http://", 7) && strncmp(b->url, "https://", 8)) {
        set_err(p, 0, "backend %s: url must start with http:// or https://", b->name);
        return -1;
    }
    /* trailing slashes of the path go (the API path is appended there), a query
     * (Azure's ?api-version=...) stays whole */
    char *path = b->url + (b->url[4] == 's' ? 8 : 7);
    size_t q = strcspn(path, "?#"), n = q;
    while (n > 0 && path[n - 1] == '/')
        n--;
    memmove(path + n, path + q, strlen(path + q) + 1);
    if (b->api_key_header &&
        (!conf_header_name_valid(b->api_key_header, strlen(b->api_key_header)) ||
         !strcasecmp(b->api_key_header, "host") || !strcasecmp(b->api_key_header, "content-length"))) {
        set_err(p, 0, "backend %s: api_key_header '%s' is not a header name triage can send",
                b->name, b->api_key_header);
        return -1;
    }
    if (!b->model)
        b->model = xstrdup(b->name);
    if (!b->head)
        b->head = xstrdup(b->name);
    if (b->overrides) {
        json_error_t jerr;
        json_t *o = json_loads(b->overrides, 0, &jerr);
        int ok = o && json_is_object(o);
        json_decref(o);
        if (!ok) {
            set_err(p, 0, "backend %s: overrides must be a JSON object", b->name);
            return -1;
        }
    }
    for (const char *v = b->anthropic_version; v && *v; v++) {
        if (*v <= ' ' || *v > '~') { /* it goes into a header line as it is */
            set_err(p, 0, "backend %s: anthropic_version must be printable ASCII without spaces",
                    b->name);
            return -1;
        }
    }
    return (p->flags & CONF_LOAD_SKIP_KEYS) ? 0 : resolve_key(p, b);
}

/* Resolves tiers ("name:bar, name:bar, name" or "name:40%, name:40%, name") into
 * indices and bars or shares: all shares or none; the last tier without a share takes
 * what is left, with one its share must make the sum 100%. */
static int
build_tiers(struct parse *p)
{
    struct conf *c = p->c;
    char **items;
    size_t n = split_list(p->tiers, &items), n_pct = 0;
    double sum = 0;
    int rc = -1;

    c->tiers = calloc(n ? n : 1, sizeof(*c->tiers));
    if (!c->tiers)
        abort();
    for (size_t i = 0; i < n; i++) {
        char *colon = strrchr(items[i], ':');
        size_t len = colon ? strlen(colon + 1) : 0;
        double bar = 0, share = -1;

        /* Backend names may contain ':', so only a numeric tail is a bar or a share. */
        if (colon && len > 1 && colon[len] == '%') {
            colon[len] = '\0';
            if (parse_number(colon + 1, 0, &share) < 0) {
                colon[len] = '%';
            } else {
                *colon = '\0';
                if (share < 0 || share > 100) {
                    set_err(p, p->tiers_line, "tiers: share %g%% for %s is outside [0%%, 100%%]",
                            share, items[i]);
                    goto out;
                }
                share /= 100;
                sum += share;
                n_pct++;
            }
        } else if (colon && parse_number(colon + 1, 0, &bar) == 0) {
            *colon = '\0';
            if (bar < 0 || bar > 1) {
                set_err(p, p->tiers_line, "tiers: bar %g for %s is outside [0, 1]", bar, items[i]);
                goto out;
            }
        } else {
            bar = 0;
        }
        int idx = conf_backend_find(c, items[i]);
        if (idx < 0) {
            set_err(p, p->tiers_line, "tiers: no backend called '%s'", items[i]);
            goto out;
        }
        c->tiers[c->n_tiers].backend = (size_t)idx;
        c->tiers[c->n_tiers].bar = bar;
        c->tiers[c->n_tiers].share = share;
        c->n_tiers++;
    }
    if (n_pct) {
        int last = c->n_tiers && c->tiers[c->n_tiers - 1].share >= 0;
        if (n_pct + !last != c->n_tiers || c->n_tiers < 2) {
            set_err(p, p->tiers_line, "tiers: give every tier a share (\"name:40%%\") but "
                    "perhaps the last, which takes the rest");
            goto out;
        }
        if (c->n_tiers > CONF_MAX_SHARE_TIERS) {
            set_err(p, p->tiers_line, "tiers: at most %d tiers with shares",
                    CONF_MAX_SHARE_TIERS);
            goto out;
        }
        if (last ? fabs(sum - 1) > 1e-9 : sum > 1 + 1e-9) {
            set_err(p, p->tiers_line, "tiers: the shares add up to %g%%, %s", 100 * sum,
                    last ? "not 100%" : "more than 100%");
            goto out;
        }
        if (!last)
            c->tiers[c->n_tiers - 1].share = sum < 1 ? 1 - sum : 0;
        c->tier_shares = 1;
    }
    rc = 0;
out:
    free_list(items, n);
    return rc;
}

static int
build_fallback(struct parse *p)
{
    struct conf *c = p->c;
    char **items;
    size_t n = split_list(p->fallback, &items);
    int rc = -1;

    c->fallback = calloc(n ? n : 1, sizeof(*c->fallback));
    if (!c->fallback)
        abort();
    for (size_t i = 0; i < n; i++) {
        int idx = conf_backend_find(c, items[i]);
        if (idx < 0) {
            set_err(p, p->fallback_line, "fallback: no backend called '%s'", items[i]);
            goto out;
        }
        c->fallback[c->n_fallback++] = (size_t)idx;
    }
    rc = 0;
out:
    free_list(items, n);
    return rc;
}

/* [server] forward_headers: names checked, lower-cased, keys' headers refused. */
static int
build_forward(struct parse *p)
{
    struct conf *c = p->c;

    c->n_forward_headers =
        split_list(p->forward_headers ? p->forward_headers : "OpenAI-Beta, anthropic-beta",
                   &c->forward_headers);
    for (size_t i = 0; i < c->n_forward_headers; i++) {
        char *h = c->forward_headers[i];
        if (!conf_header_name_valid(h, strlen(h))) {
            set_err(p, p->forward_line, "forward_headers: '%s' is not a header name", h);
            return -1;
        }
        for (char *q = h; *q; q++)
            *q = (char)tolower((unsigned char)*q);
        if (header_reserved(h)) {
            set_err(p, p->forward_line,
                    "forward_headers: %s is never forwarded (a client's key, or a header "
                    "triage sets itself)", h);
            return -1;
        }
    }
    return 0;
}

/* Cross-section checks once the whole file is read. */
static int
validate(struct parse *p)
{
    struct conf *c = p->c;

    if (c->n_backends == 0) {
        set_err(p, 0, "no [backend NAME] section: at least one backend is needed");
        return -1;
    }
    for (size_t i = 0; i < c->n_backends; i++)
        if (check_backend(p, &c->backends[i]) < 0)
            return -1;

    c->n_aliases = split_list(p->aliases ? p->aliases : "triage", &c->aliases);
    for (size_t i = 0; i < c->n_aliases; i++) {
        if (!valid_name(c->aliases[i])) {
            /* aliases are echoed in /v1/models, headers and logs */
            set_err(p, 0, "alias '%s': use letters, digits and - _ . : /", c->aliases[i]);
            return -1;
        }
        if (conf_backend_find(c, c->aliases[i]) >= 0) {
            set_err(p, 0, "alias '%s' is also a backend name", c->aliases[i]);
            return -1;
        }
    }

    if (c->judge && conf_backend_find(c, c->judge) < 0) {
        set_err(p, 0, "[learning] judge = %s: no such backend", c->judge);
        return -1;
    }

    if (p->tiers) {
        if (build_tiers(p) < 0)
            return -1;
    } else {
        /* Without tiers, route between the first two backends in file order. */
        c->tiers = calloc(2, sizeof(*c->tiers));
        if (!c->tiers)
            abort();
        for (size_t i = 0; i < c->n_backends && i < 2; i++) {
            c->tiers[c->n_tiers].share = -1;
            c->tiers[c->n_tiers++].backend = i;
        }
    }
    if (c->tier_shares && c->policy != CONF_POLICY_TIERS) {
        set_err(p, p->tiers_line, "tiers: shares (\"name:40%%\") need policy = tiers; "
                "with policy threshold give strong_share");
        return -1;
    }
    /* the tiers of each API route on their own (/v1/messages among api = anthropic
     * backends, the OpenAI paths among the others) */
    size_t per_api[2] = {0, 0};
    for (size_t i = 0; i < c->n_tiers; i++)
        per_api[c->backends[c->tiers[i].backend].api]++;
    for (int a = 0; a < 2; a++) {
        if (c->policy == CONF_POLICY_THRESHOLD && per_api[a] > 2) {
            set_err(p, p->tiers_line, "policy threshold routes between two tiers%s, %zu given",
                    per_api[1] ? (a ? " of api = anthropic" : " of api = openai") : "",
                    per_api[a]);
            return -1;
        }
    }
    if (c->policy == CONF_POLICY_CASCADE && c->n_tiers != 2) {
        set_err(p, p->tiers_line, "policy cascade needs two tiers (fast, strong), %zu given",
                c->n_tiers);
        return -1;
    }
    if (c->cascade_low > c->cascade_high) {
        set_err(p, 0, "[router] cascade_low (%g) is above cascade_high (%g)", c->cascade_low,
                c->cascade_high);
        return -1;
    }
    if (c->n_tiers == 0) {
        set_err(p, p->tiers_line, "tiers: at least one backend is needed");
        return -1;
    }
    if (p->fallback && build_fallback(p) < 0)
        return -1;
    if (build_forward(p) < 0)
        return -1;
    if (c->model_path == NULL) {
        set_err(p, 0, "[router] model is required (the predictor model file)");
        return -1;
    }
    return 0;
}

/* Relative paths in the file are relative to the file's folder, as users expect.
 * With uri, a SQLite "file:" URI's path is treated the same way
 * ("file:triage.db?mode=ro" becomes "file:/etc/triage/triage.db?mode=ro"). */
static void
resolve_path(const char *conf_path, char **field, int uri)
{
    const char *slash, *scheme = "", *rel = *field;
    char *joined;

    if (rel && uri && !strncmp(rel, "file:", 5)) {
        scheme = "file:";
        rel += 5;
    }
    if (!rel || rel[0] == '/' || !(slash = strrchr(conf_path, '/')))
        return;
    size_t dirlen = (size_t)(slash - conf_path);
    size_t len = strlen(scheme) + dirlen + 1 + strlen(rel) + 1;
    joined = malloc(len);
    if (!joined)
        abort();
    snprintf(joined, len, "%s%.*s/%s", scheme, (int)dirlen, conf_path, rel);
    free(*field);
    *field = joined;
}

/* [learning] base_data when the file does not set it: the labelled sets the shipped
 * model is trained from (tools/train_default.sh), in the source tree when triage runs
 * from one, else where they are installed. */
static void
default_base_data(struct conf *c)
{
    static const char *const sets[] = {"routellm_mmlu.jsonl.gz", "mmlu_pro.jsonl.gz",
                                       "llmrouter_train.jsonl.gz", "math_train.jsonl.gz"};
    const char *dir = access(TRIAGE_SOURCE_ROOT "/data/routellm_mmlu.jsonl.gz", R_OK) == 0
                          ? TRIAGE_SOURCE_ROOT "/data"
                          : TRIAGE_DATADIR "/data";
    size_t n = sizeof(sets) / sizeof(sets[0]);

    c->base_data = calloc(n, sizeof(*c->base_data));
    if (!c->base_data)
        abort();
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(dir) + 1 + strlen(sets[i]) + 1;
        c->base_data[i] = malloc(len);
        if (!c->base_data[i])
            abort();
        snprintf(c->base_data[i], len, "%s/%s", dir, sets[i]);
    }
    c->n_base_data = n;
}

struct conf *
conf_load(const char *path, char *err, size_t errlen)
{
    return conf_load_flags(path, 0, err, errlen);
}

struct conf *
conf_load_flags(const char *path, unsigned flags, char *err, size_t errlen)
{
    struct parse p = {.path = path, .err = err, .errlen = errlen, .flags = flags};
    FILE *f;

    if (errlen)
        err[0] = '\0';
    p.c = calloc(1, sizeof(*p.c));
    if (!p.c)
        abort();
    p.c->path = xstrdup(path);
    set_defaults(&p, "server", p.c);
    set_defaults(&p, "auth", p.c);
    set_defaults(&p, "router", p.c);
    set_defaults(&p, "storage", p.c);
    set_defaults(&p, "learning", p.c);

    char why[128];
    f = open_regular(path, CONF_FILE_MAX, why, sizeof(why));
    if (!f) {
        set_err(&p, 0, "%s", why);
        goto fail;
    }
    read_ini(&p, f);
    fclose(f);
    if (p.failed)
        goto fail;

    resolve_path(path, &p.c->model_path, 0);
    resolve_path(path, &p.c->db_path, 1); /* storage_open takes URIs */
    if (p.c->db_url) {
        /* A shared PostgreSQL log instead of the file: everything that reads db_path
         * (storage_open, stats, export, the registry) takes the URL as it is. */
        if (p.c->db_path) {
            set_err(&p, 0, "[storage]: set path (SQLite) or url (PostgreSQL), not both");
            goto fail;
        }
        if (strncmp(p.c->db_url, "postgresql://", 13) && strncmp(p.c->db_url, "postgres://", 11)) {
            set_err(&p, 0, "[storage] url must start with postgresql:// (or postgres://)");
            goto fail;
        }
#if !TRIAGE_HAVE_POSTGRESQL
        set_err(&p, 0,
                "[storage] url: this triage was built without PostgreSQL support; rebuild "
                "with libpq-dev installed (meson setup -Dpostgresql=enabled) or use [storage] "
                "path (SQLite)");
        goto fail;
#endif
        p.c->db_path = xstrdup(p.c->db_url);
        if (!p.c->models_dir)
            p.c->models_dir = xstrdup("models"); /* beside the config, below */
    }
    resolve_path(path, &p.c->keys_file, 0);
    resolve_path(path, &p.c->admin_keys_file, 0);
    resolve_path(path, &p.c->models_dir, 0);
    if (!p.base_data)
        default_base_data(p.c);
    else if (strcmp(p.base_data, "none") != 0) {
        p.c->n_base_data = split_list(p.base_data, &p.c->base_data);
        for (size_t i = 0; i < p.c->n_base_data; i++)
            resolve_path(path, &p.c->base_data[i], 0);
    }
    if (!p.c->models_dir && p.c->db_path) {
        /* beside the outcome log (a file: URI's path without its query) */
        const char *db = p.c->db_path, *slash;
        if (!strncmp(db, "file:", 5))
            db += 5;
        size_t dirlen = (slash = strrchr(db, '/')) ? (size_t)(slash - db) : 1;
        size_t len = dirlen + sizeof("/models");
        p.c->models_dir = malloc(len);
        if (!p.c->models_dir)
            abort();
        snprintf(p.c->models_dir, len, "%.*s/models", (int)dirlen, slash ? db : ".");
    }
    if (validate(&p) < 0)
        goto fail;

    free(p.aliases);
    free(p.tiers);
    free(p.fallback);
    free(p.base_data);
    free(p.forward_headers);
    return p.c;
fail:
    free(p.aliases);
    free(p.tiers);
    free(p.fallback);
    free(p.base_data);
    free(p.forward_headers);
    conf_destroy(p.c);
    return NULL;
}

static void
free_secret(char *s)
{
    if (!s)
        return;
    /* volatile so the wipe is not optimised away as a dead store */
    for (volatile char *v = s; *v; v++)
        *v = 0;
    free(s);
}

void
conf_destroy(struct conf *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_backends; i++) {
        struct conf_backend *b = &c->backends[i];
        free(b->name);
        free(b->url);
        free(b->model);
        free(b->head);
        free_secret(b->api_key);
        free(b->api_key_env);
        free(b->api_key_file);
        free(b->overrides);
        free(b->api_key_header);
        free_secret(b->headers); /* it may hold a secret (a token in a header) */
        free(b->anthropic_version);
    }
    free_list(c->forward_headers, c->n_forward_headers);
    free(c->backends);
    free_list(c->aliases, c->n_aliases);
    free(c->tiers);
    free(c->fallback);
    free(c->path);
    free(c->listen);
    free(c->keys_file);
    free(c->admin_keys_file);
    free(c->model_path);
    free(c->db_path);
    free(c->judge);
    free(c->models_dir);
    free(c->db_url);
    free_list(c->base_data, c->n_base_data);
    free(c);
}

int
conf_backend_find(const struct conf *c, const char *name)
{
    for (size_t i = 0; i < c->n_backends; i++)
        if (!strcmp(c->backends[i].name, name))
            return (int)i;
    return -1;
}

int
conf_is_alias(const struct conf *c, const char *name)
{
    for (size_t i = 0; i < c->n_aliases; i++)
        if (!strcmp(c->aliases[i], name))
            return 1;
    return 0;
}

int
conf_log_level_parse(const char *s)
{
    for (int i = 0; log_levels[i]; i++)
        if (!strcasecmp(s, log_levels[i]))
            return i;
    return -1;
}
