/* sticky.c - remembers which tier each conversation used, so a follow-up turn never routes below it.
 *
 * A conversation is recognised by digests of its messages: every routed request is
 * remembered under the digest of all its messages, and a later request looks up the
 * digests of its own earlier prefixes, the ones a previous request of the same
 * conversation ended with (the messages before each assistant reply). The table is a
 * fixed array of 4-way sets of (digest, tier, expiry): bounded memory, an entry lives
 * ttl seconds after its last use, and a full set drops the entry closest to expiry
 * (about least recently used). Sets are guarded by striped locks: workers share it. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

#define WAYS 4
#define STRIPES 64

struct entry {
    uint64_t key;     /* 0: empty */
    uint64_t expires; /* s, on the caller's clock */
    uint32_t tier;
};

struct router_sticky {
    atomic_int refs;
    size_t n_sets;
    uint32_t ttl;     /* s */
    uint64_t seed;
    struct entry *sets; /* n_sets * WAYS */
    pthread_mutex_t locks[STRIPES];
};

struct router_sticky *
router_sticky_new(size_t max_entries, uint32_t ttl_s, uint64_t seed)
{
    if (max_entries < WAYS || max_entries > ROUTER_STICKY_MAX_ENTRIES || ttl_s == 0)
        return NULL;
    struct router_sticky *t = calloc(1, sizeof(*t));
    if (!t)
        abort();
    atomic_init(&t->refs, 1);
    t->n_sets = max_entries / WAYS;
    t->ttl = ttl_s;
    t->seed = seed;
    t->sets = calloc(t->n_sets * WAYS, sizeof(*t->sets));
    if (!t->sets)
        abort();
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_init(&t->locks[i], NULL);
    return t;
}

struct router_sticky *
router_sticky_ref(struct router_sticky *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void
router_sticky_unref(struct router_sticky *t)
{
    if (!t || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&t->locks[i]);
    free(t->sets);
    free(t);
}

size_t
router_sticky_max(const struct router_sticky *t)
{
    return t->n_sets * WAYS;
}

uint32_t
router_sticky_ttl(const struct router_sticky *t)
{
    return t->ttl;
}

/* ---- digests ---------------------------------------------------------------- */

/* FNV-1a over bytes, from h. */
static uint64_t
fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* A string field and a separator, so "ab","c" and "a","bc" differ. */
static uint64_t
fnv_str(uint64_t h, const char *s)
{
    if (s)
        h = fnv(h, s, strlen(s));
    return fnv(h, "\x1f", 1);
}

/* splitmix64's finaliser: every input bit reaches every output bit. */
static uint64_t
mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* One message: its role, name, tool_call_id and the text of its content (a string, or
 * each part's type and text), not its JSON spelling, so a client that re-serialises
 * the history still matches. */
static uint64_t
message_digest(uint64_t seed, const json_t *m)
{
    uint64_t h = seed ^ 0xcbf29ce484222325ull;
    const json_t *content = json_object_get(m, "content");

    h = fnv_str(h, json_string_value(json_object_get(m, "role")));
    h = fnv_str(h, json_string_value(json_object_get(m, "name")));
    h = fnv_str(h, json_string_value(json_object_get(m, "tool_call_id")));
    if (json_is_string(content)) {
        h = fnv(h, json_string_value(content), json_string_length(content));
    } else if (json_is_array(content)) {
        size_t i;
        const json_t *part;
        json_array_foreach(content, i, part) {
            const json_t *text = json_object_get(part, "text");
            h = fnv_str(h, json_string_value(json_object_get(part, "type")));
            if (json_is_string(text))
                h = fnv(h, json_string_value(text), json_string_length(text));
            h = fnv(h, "\x1e", 1);
        }
    }
    /* an assistant's tool calls: their ids are what the tool messages after it answer */
    const json_t *calls = json_object_get(m, "tool_calls");
    size_t i;
    const json_t *call;
    json_array_foreach(calls, i, call) h = fnv_str(h, json_string_value(json_object_get(call, "id")));
    return mix(h);
}

static int
is_role(const json_t *m, const char *role)
{
    const char *r = json_string_value(json_object_get(m, "role"));
    return r && !strcmp(r, role);
}

int
router_sticky_digest(const struct router_sticky *t, const json_t *messages, const char *salt,
                     struct router_convo *out)
{
    size_t n = json_array_size(messages);
    uint64_t h = mix(fnv_str(t->seed ^ 0x9e3779b97f4a7c15ull, salt));

    memset(out, 0, sizeof(*out));
    if (n == 0)
        return -EINVAL;
    /* prefixes a previous request of this conversation may have ended with: the
     * messages before each assistant reply (a user turn's, or a tool loop's) */
    for (size_t k = 0; k < n; k++) {
        const json_t *m = json_array_get(messages, k);
        if (k > 0 && is_role(m, "assistant") &&
            !is_role(json_array_get(messages, k - 1), "assistant")) {
            if (out->n_prefix == ROUTER_STICKY_MAX_PREFIXES)
                memmove(out->prefix, out->prefix + 1, sizeof(out->prefix[0]) * --out->n_prefix);
            out->prefix[out->n_prefix++] = h | 1; /* never 0: 0 marks an empty slot */
        }
        h = mix(h ^ message_digest(t->seed, m));
    }
    out->full = h | 1;
    return 0;
}

/* ---- the table --------------------------------------------------------------- */

static struct entry *
set_of(const struct router_sticky *t, uint64_t key, pthread_mutex_t **lock)
{
    size_t set = (size_t)((key >> 8) % t->n_sets);
    *lock = (pthread_mutex_t *)&t->locks[set % STRIPES];
    return &t->sets[set * WAYS];
}

int
router_sticky_lookup(struct router_sticky *t, const struct router_convo *c, uint64_t now_s)
{
    for (size_t i = c->n_prefix; i-- > 0;) {
        pthread_mutex_t *lock;
        struct entry *e = set_of(t, c->prefix[i], &lock);
        int tier = -1;
        pthread_mutex_lock(lock);
        for (size_t w = 0; w < WAYS; w++)
            if (e[w].key == c->prefix[i] && e[w].expires > now_s) {
                tier = (int)e[w].tier;
                e[w].expires = now_s + t->ttl; /* in use: kept longer */
                break;
            }
        pthread_mutex_unlock(lock);
        if (tier >= 0)
            return tier;
    }
    return -1;
}

void
router_sticky_remember(struct router_sticky *t, const struct router_convo *c, size_t tier,
                       uint64_t now_s)
{
    pthread_mutex_t *lock;
    struct entry *e = set_of(t, c->full, &lock);
    size_t victim = 0;

    if (!c->full)
        return;
    pthread_mutex_lock(lock);
    for (size_t w = 0; w < WAYS; w++) {
        if (e[w].key == c->full) {
            victim = w;
            break;
        }
        if (e[w].expires < e[victim].expires)
            victim = w; /* empty or expired slots have the smallest expiry */
    }
    e[victim].key = c->full;
    e[victim].tier = (uint32_t)tier;
    e[victim].expires = now_s + t->ttl;
    pthread_mutex_unlock(lock);
}
