/* auth.h - bearer-key authentication: key files of SHA-256 hashes, checked in constant time.
 *
 * Key file format (client keys_file and admin_keys_file alike), one entry per line:
 *
 *     # comment                  ('#' at the start of a line, after optional blanks)
 *     <name> <sha256-hex>        e.g.  ci-runner 9f86d081884c7d659a2feaa0c55ad015...
 *     <name> <sha256-hex> budget_usd=50/day      (or =AMOUNT/month: a USD budget)
 *
 * A budget (optional) caps what the name's requests may cost per UTC day or month
 * (daemon/guard/budget.c enforces it from the outcome log); every line of one name that
 * carries a budget must carry the same one.
 * <name> is 1-64 characters of [A-Za-z0-9._@+-]; it names the client in logs and
 * rate limits and may repeat (several keys for one client while rotating keys).
 * <sha256-hex> is the 64-hex-digit SHA-256 of the whole key as the client sends it
 * ("sk-triage-..."); the key itself is never stored. Blank lines are ignored. Errors
 * name the line: "keys:3: expected 64 hex digits after the name".
 *
 * A struct auth_keys is immutable after loading and reference-counted (atomically),
 * so the daemon can keep one in its config snapshot and swap it on reload while
 * requests on any thread still hold the old one. All functions are thread-safe. */
#ifndef TRIAGE_AUTH_H
#define TRIAGE_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define AUTH_HASH_LEN 32           /* bytes of SHA-256 */
#define AUTH_NAME_MAX 64           /* longest key name, without the NUL */
#define AUTH_KEY_PREFIX "sk-triage-"
#define AUTH_KEY_LEN 53            /* "sk-triage-" + 43 base64url chars (32 random bytes) */
#define AUTH_KEYS_MAX 100000       /* entries per file; more is an error */

struct auth_keys;

enum auth_budget_period { AUTH_BUDGET_NONE, AUTH_BUDGET_DAY, AUTH_BUDGET_MONTH };

/* Parses a budget "AMOUNT/day" or "AMOUNT/month" (AMOUNT a decimal number of USD > 0).
 * Returns 0, or -EINVAL leaving the outputs untouched. */
int auth_budget_parse(const char *text, double *usd, enum auth_budget_period *period);

/* Returns the Unix ms at which the UTC day or month holding now_ms starts. */
int64_t auth_budget_period_start(enum auth_budget_period p, int64_t now_ms);

/* Returns the Unix ms at which the UTC day or month holding now_ms ends. */
int64_t auth_budget_period_end(enum auth_budget_period p, int64_t now_ms);

/* The budget of name (borrowed) in k: returns its period and sets *usd, or returns
 * AUTH_BUDGET_NONE when none of its lines has one. */
enum auth_budget_period auth_keys_budget(const struct auth_keys *k, const char *name,
                                         double *usd);

/* Reads and parses the key file at path. Returns a new set (refcount 1) or NULL with
 * "path:line: message" (or "path: message") in err. An empty file is a valid empty set. */
struct auth_keys *auth_keys_load(const char *path, char *err, size_t errlen);

/* Parses key-file text (len bytes, need not be NUL-terminated); path (borrowed) is used
 * only in error messages. Returns a new set (refcount 1) or NULL with the error in err. */
struct auth_keys *auth_keys_parse(const char *text, size_t len, const char *path, char *err,
                                  size_t errlen);

/* Takes another reference; returns k. NULL is fine. */
struct auth_keys *auth_keys_ref(struct auth_keys *k);

/* Drops a reference, freeing the set with the last one. NULL is fine. */
void auth_keys_unref(struct auth_keys *k);

/* Number of entries (lines with a key) in the set; 0 for NULL. */
size_t auth_keys_count(const struct auth_keys *k);

/* Name of entry i (< count), in file order; borrowed from k. */
const char *auth_keys_name(const struct auth_keys *k, size_t i);

/* Hashes the presented key (len bytes, borrowed) and compares the hash with every
 * entry in constant time (no early exit; the time depends only on the number of
 * entries). Returns the matching entry's name, borrowed from k (valid while the caller
 * holds a reference), or NULL if none matches or k is NULL. */
const char *auth_keys_verify(const struct auth_keys *k, const char *key, size_t len);

/* Splits an Authorization header value "Bearer <token>" (scheme case-insensitive,
 * blanks around the token allowed). On success returns 0 and sets *tok and *toklen
 * to the token inside value (borrowed, not copied). Returns -ENOENT if value is NULL or blank,
 * -EINVAL if it is not a well-formed bearer credential (other scheme, no token,
 * embedded blanks or control characters, token longer than 4096 bytes). */
int auth_bearer_parse(const char *value, const char **tok, size_t *toklen);

/* The whole check for one request: parses the Authorization header value (may be
 * NULL) and verifies the token against k. Returns 0 and the entry's name in *name
 * (borrowed from k), -ENOENT for a missing header, -EINVAL for a malformed one,
 * -EACCES for a key that matches no entry. */
int auth_check(const struct auth_keys *k, const char *authorization, const char **name);

/* Writes the SHA-256 of key (len bytes) into out. */
void auth_key_hash(const char *key, size_t len, unsigned char out[AUTH_HASH_LEN]);

/* Writes the lowercase hex SHA-256 of key into hex (65 bytes with the NUL). */
void auth_key_hash_hex(const char *key, size_t len, char hex[2 * AUTH_HASH_LEN + 1]);

/* Generates a fresh key from getrandom(): AUTH_KEY_PREFIX + base64url of 32 random
 * bytes, NUL-terminated, into buf (at least AUTH_KEY_LEN + 1 bytes). Returns 0,
 * -ENOSPC if buf is too small, or -errno from getrandom. The caller wipes buf. */
int auth_key_generate(char *buf, size_t buflen);

/* Returns 1 if name is a valid key name (see the file format above), else 0. */
int auth_name_valid(const char *name);

#endif
