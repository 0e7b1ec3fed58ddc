/* cmd_key.c - `triage key`: create, list, hash and remove client/admin bearer keys in a key file.
 *
 * The key file holds only "<name> <sha256-hex>" lines (format in daemon/guard/auth.h); a new
 * key is printed once and never stored. The file is always parsed first, so a broken
 * file is reported instead of being appended to. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "../daemon/guard/auth.h"
#include "commands.h"
#include "conf.h"
#include "storage.h"

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: triage key add --file FILE NAME [--budget-usd AMOUNT/day|AMOUNT/month]\n"
            "                                            new random key for NAME: appends its\n"
            "                                            hash to FILE (created 0600) and prints\n"
            "                                            the key once on stdout; with a USD\n"
            "                                            budget for NAME per UTC day or month\n"
            "       triage key list --file FILE [--db DB | --config CONF]\n"
            "                                            the key names in FILE, one per key,\n"
            "                                            with their budgets; with the outcome\n"
            "                                            log (a file or postgresql:// URL) what\n"
            "                                            each spent this period (budget's, or\n"
            "                                            today)\n"
            "       triage key hash NAME < KEY           the FILE line for an existing key read\n"
            "                                            from stdin (first line)\n"
            "       triage key remove --file FILE NAME   drop every key of NAME from FILE\n"
            "\n"
            "FILE is the [auth] keys_file or admin_keys_file of triage.conf: lines\n"
            "\"<name> <sha256-hex of the key>\", # comments and blank lines. Names are 1-64 of\n"
            "[A-Za-z0-9._@+-]; one name may hold several keys (rotation). Send a key as\n"
            "\"Authorization: Bearer <key>\". The daemon rereads FILE on SIGHUP. A budget is\n"
            "enforced by triaged from the outcome log (429 budget_exceeded once spent).\n");
}

/* Parses [--file F | --file=F | -f F] [NAME] after the action. Returns 0, or 2 after
 * printing a usage error; 1 if --help was asked for (usage printed). */
struct key_opts {
    const char *budget; /* --budget-usd */
    const char *db;     /* --db */
    const char *config; /* --config */
};

static int
parse_args(int argc, char **argv, const char **file, const char **name, struct key_opts *o)
{
    *file = NULL;
    *name = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char **opt = !strcmp(a, "--budget-usd") ? &o->budget
                           : !strcmp(a, "--db")       ? &o->db
                           : !strcmp(a, "--config")   ? &o->config
                                                      : NULL;
        if (opt) {
            if (++i == argc) {
                cli_errorf("key", "%s needs a value", a);
                return 2;
            }
            *opt = argv[i];
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--file") || !strcmp(a, "-f")) {
            if (++i == argc) {
                cli_errorf("key", "%s needs a file name", a);
                return 2;
            }
            *file = argv[i];
        } else if (!strncmp(a, "--file=", 7)) {
            *file = a + 7;
        } else if (a[0] == '-' && a[1]) {
            cli_errorf("key", "unknown option %s", a);
            return 2;
        } else if (!*name) {
            *name = a;
        } else {
            cli_errorf("key", "unexpected argument %s", a);
            return 2;
        }
    }
    return 0;
}

/* Loads file; a missing file is an empty set when missing_ok. Returns NULL after
 * reporting an error. */
static struct auth_keys *
load(const char *file, int missing_ok)
{
    char err[512];

    if (missing_ok && access(file, F_OK) < 0 && errno == ENOENT)
        return auth_keys_parse("", 0, file, err, sizeof(err));
    struct auth_keys *k = auth_keys_load(file, err, sizeof(err));
    if (!k)
        cli_errorf("key", "%s", err);
    return k;
}

static size_t
count_name(const struct auth_keys *k, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < auth_keys_count(k); i++)
        n += !strcmp(auth_keys_name(k, i), name);
    return n;
}

/* Writes all of buf to fd. Returns 0 or -errno. */
static int
write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

static void
warn_mode(const char *file, int fd)
{
    struct stat st;
    if (!fstat(fd, &st) && (st.st_mode & 007))
        fprintf(stderr, "triage key: warning: %s is accessible by others (mode %04o); "
                        "chmod 600 it\n", file, (unsigned)(st.st_mode & 07777));
}

static int
key_add(const char *file, const char *name, const char *budget)
{
    char key[AUTH_KEY_LEN + 1], hex[2 * AUTH_HASH_LEN + 1], line[AUTH_NAME_MAX + 140];
    char extra[80] = "";
    struct auth_keys *k = NULL;
    int fd = -1, r, status = 1;
    double usd = 0, had_usd = 0;
    enum auth_budget_period period = AUTH_BUDGET_NONE;

    if (!auth_name_valid(name)) {
        cli_errorf("key", "invalid name '%s': 1-64 of letters, digits and . _ - @ +", name);
        return 2;
    }
    if (budget && auth_budget_parse(budget, &usd, &period) < 0) {
        cli_errorf("key", "--budget-usd wants AMOUNT/day or AMOUNT/month (AMOUNT in USD > 0), "
                          "not '%s'", budget);
        return 2;
    }
    k = load(file, 1);
    if (!k)
        return 1;
    size_t have = count_name(k, name);
    enum auth_budget_period had = auth_keys_budget(k, name, &had_usd);
    if (budget && had != AUTH_BUDGET_NONE && (had != period || had_usd != usd)) {
        cli_errorf("key", "%s already has a budget of %g/%s on its other keys: remove them first "
                          "or give the same budget", name, had_usd,
                   had == AUTH_BUDGET_MONTH ? "month" : "day");
        goto fail;
    }
    if (budget)
        snprintf(extra, sizeof(extra), " budget_usd=%.17g/%s", usd,
                 period == AUTH_BUDGET_MONTH ? "month" : "day");

    fd = open(file, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        cli_errorf("key", "%s: %s", file, strerror(errno));
        goto fail;
    }
    warn_mode(file, fd);
    /* Start on a fresh line if someone left the last one unterminated. */
    off_t end = lseek(fd, 0, SEEK_END);
    char last = '\n';
    if (end > 0 && pread(fd, &last, 1, end - 1) != 1)
        last = '\n';

    r = auth_key_generate(key, sizeof(key));
    if (r < 0) {
        cli_errorf("key", "getrandom: %s", strerror(-r));
        goto fail;
    }
    auth_key_hash_hex(key, strlen(key), hex);
    int n = snprintf(line, sizeof(line), "%s%s %s%s\n", last == '\n' ? "" : "\n", name, hex,
                     extra);
    if ((r = write_all(fd, line, (size_t)n)) < 0 || (r = fsync(fd) < 0 ? -errno : 0) < 0) {
        cli_errorf("key", "%s: %s", file, strerror(-r));
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        cli_errorf("key", "%s: %s", file, strerror(errno));
        goto fail;
    }
    fd = -1;
    printf("%s\n", key);
    fflush(stdout);
    fprintf(stderr, "triage key: added a key for %s to %s. It is shown only this once: store it "
                    "now.%s\n", name, file,
            have ? " The name's older keys stay valid until removed." : "");
    status = 0;

fail:
    OPENSSL_cleanse(key, sizeof(key));
    if (fd >= 0)
        close(fd);
    auth_keys_unref(k);
    return status;
}

/* One line per key: its name; its budget when it has one; with a log, what its name
 * spent in the budget's period (or today, UTC). */
static int
key_list(const char *file, const struct key_opts *o)
{
    struct auth_keys *k = load(file, 0);
    struct conf *cf = NULL;
    const char *db = o->db;
    char err[512];
    int status = 1;
    size_t n = auth_keys_count(k);
    const char **names = NULL;
    int64_t *since = NULL;
    double *spent = NULL;
    struct timespec ts;

    if (!k)
        return 1;
    if (!db && o->config) {
        cf = conf_load_flags(o->config, CONF_LOAD_SKIP_KEYS, err, sizeof(err));
        if (!cf) {
            cli_errorf("key", "%s", err);
            goto fail;
        }
        db = cf->db_path;
        if (!db) {
            cli_errorf("key", "%s has no [storage] path or url; give --db", o->config);
            goto fail;
        }
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    names = calloc(n ? n : 1, sizeof(*names));
    since = calloc(n ? n : 1, sizeof(*since));
    spent = calloc(n ? n : 1, sizeof(*spent));
    if (!names || !since || !spent)
        abort();
    for (size_t i = 0; i < n; i++) {
        double usd;
        names[i] = auth_keys_name(k, i);
        since[i] = auth_budget_period_start(auth_keys_budget(k, names[i], &usd), now);
    }
    if (db && storage_key_spend(db, names, since, n, spent, err, sizeof(err)) < 0) {
        cli_errorf("key", "%s", err);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        double usd = 0;
        enum auth_budget_period p = auth_keys_budget(k, names[i], &usd);
        const char *per = p == AUTH_BUDGET_MONTH ? "month" : "day";
        printf("%s", names[i]);
        if (p != AUTH_BUDGET_NONE)
            printf("  budget $%.6g/%s", usd, per);
        if (db && p != AUTH_BUDGET_NONE)
            printf("  spent $%.6g this %s, $%.6g left", spent[i], per,
                   spent[i] < usd ? usd - spent[i] : 0.0);
        else if (db)
            printf("  spent $%.6g today", spent[i]);
        putchar('\n');
    }
    status = 0;
fail:
    free(names);
    free(since);
    free(spent);
    conf_destroy(cf);
    auth_keys_unref(k);
    return status;
}

static int
key_hash(const char *name)
{
    char buf[4200], hex[2 * AUTH_HASH_LEN + 1];
    const char *tok;
    size_t n;
    int status = 1;

    if (!auth_name_valid(name)) {
        cli_errorf("key", "invalid name '%s': 1-64 of letters, digits and . _ - @ +", name);
        return 2;
    }
    if (!fgets(buf, sizeof(buf), stdin)) {
        cli_errorf("key", "no key on stdin");
        goto out;
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    /* The daemon sees the key as a bearer token: it must be one. */
    char hdr[sizeof(buf) + 8];
    snprintf(hdr, sizeof(hdr), "Bearer %s", buf);
    if (auth_bearer_parse(hdr, &tok, &n) < 0) {
        cli_errorf("key", "the key must be 1-4096 visible ASCII characters without blanks");
        OPENSSL_cleanse(hdr, sizeof(hdr));
        goto out;
    }
    auth_key_hash_hex(tok, n, hex);
    OPENSSL_cleanse(hdr, sizeof(hdr));
    printf("%s %s\n", name, hex);
    status = 0;
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    return status;
}

/* Rewrites file without the lines of name, through a temporary file and rename(). */
static int
key_remove(const char *file, const char *name)
{
    struct auth_keys *k = load(file, 0);
    char *tmp = NULL, line[8192];
    FILE *in = NULL, *out = NULL;
    int fd = -1, status = 1;
    size_t removed = 0;
    struct stat st;

    if (!k)
        return 1;
    if (!count_name(k, name)) {
        cli_errorf("key", "%s: no key named %s", file, name);
        goto fail;
    }
    in = fopen(file, "re");
    if (!in || fstat(fileno(in), &st) < 0 || asprintf(&tmp, "%s.tmp.%ld", file, (long)getpid()) < 0) {
        cli_errorf("key", "%s: %s", file, strerror(errno));
        tmp = NULL;
        goto fail;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || !(out = fdopen(fd, "w"))) {
        cli_errorf("key", "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    /* Keep the owner and mode, so a file root edits for the daemon's user stays readable. */
    if (fchown(fd, st.st_uid, st.st_gid) < 0 && errno != EPERM)
        fprintf(stderr, "triage key: warning: cannot keep the owner of %s: %s\n", file,
                strerror(errno));
    (void)fchmod(fd, st.st_mode & 07777);
    fd = -1;
    /* Key lines are short (the file parsed); only long comments span several reads, and
     * only the start of a line can be a key line. */
    size_t nlen = strlen(name);
    int at_start = 1;
    while (fgets(line, sizeof(line), in)) {
        size_t len = strlen(line);
        int starts = at_start;
        at_start = len > 0 && line[len - 1] == '\n';
        const char *p = line + strspn(line, " \t");
        if (starts && !strncmp(p, name, nlen) && (p[nlen] == ' ' || p[nlen] == '\t')) {
            removed++;
            continue;
        }
        fputs(line, out);
    }
    if (ferror(in) || fflush(out) || fsync(fileno(out)) < 0) {
        cli_errorf("key", "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (fclose(out)) {
        out = NULL;
        cli_errorf("key", "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    out = NULL;
    if (rename(tmp, file) < 0) {
        cli_errorf("key", "rename %s: %s", file, strerror(errno));
        goto fail;
    }
    free(tmp);
    tmp = NULL;
    fprintf(stderr, "triage key: removed %zu key%s of %s from %s\n", removed,
            removed == 1 ? "" : "s", name, file);
    status = 0;

fail:
    if (out)
        fclose(out);
    if (fd >= 0)
        close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    if (in)
        fclose(in);
    auth_keys_unref(k);
    return status;
}

int
cli_key(int argc, char **argv)
{
    const char *file, *name;
    struct key_opts o = {0};

    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *action = argv[1];
    int r = parse_args(argc, argv, &file, &name, &o);
    if (r)
        return r == 1 ? 0 : r;
    int wants_file = strcmp(action, "hash") != 0;
    int wants_name = strcmp(action, "list") != 0;
    if (strcmp(action, "add") && strcmp(action, "list") && strcmp(action, "hash") &&
        strcmp(action, "remove")) {
        cli_errorf("key", "unknown action '%s' (add, list, hash, remove)", action);
        return 2;
    }
    if (wants_file && !file) {
        cli_errorf("key", "%s needs --file FILE", action);
        return 2;
    }
    if (!wants_file && file) {
        cli_errorf("key", "hash takes no --file");
        return 2;
    }
    if (wants_name != (name != NULL)) {
        cli_errorf("key", wants_name ? "%s needs a NAME" : "%s takes no NAME", action);
        return 2;
    }
    if (o.budget && strcmp(action, "add")) {
        cli_errorf("key", "--budget-usd goes with add");
        return 2;
    }
    if ((o.db || o.config) && strcmp(action, "list")) {
        cli_errorf("key", "--db and --config go with list");
        return 2;
    }
    if (!strcmp(action, "add"))
        return key_add(file, name, o.budget);
    if (!strcmp(action, "list"))
        return key_list(file, &o);
    if (!strcmp(action, "hash"))
        return key_hash(name);
    return key_remove(file, name);
}
