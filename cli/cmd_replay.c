/* cmd_replay.c - `triage replay`: an offline OpenAI-compatible backend that answers known
 * prompts with a named model's recorded answers (data/replay/, JSONL.gz), or with --judge
 * an LLM judge that grades answers by their final number against the recorded reference. */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "config.h"
#include "cli.h"
#include "commands.h"
#include "fakeai.h"
#include "grade.h"
#include "router.h"

/* a source tree's copy first, then the installed one */
#define DEFAULT_DATA TRIAGE_SOURCE_ROOT "/data/replay/gsm8k.jsonl.gz"
#define INSTALLED_DATA TRIAGE_DATADIR "/replay/gsm8k.jsonl.gz"

struct replay_entry {
    char *key;                  /* the whitespace-normalised prompt; NULL = empty slot */
    char *text;                 /* the answer served, or (--judge) the reference */
};

struct replay {
    struct replay_entry *tab;   /* open addressing, cap a power of two */
    size_t cap, n;
    const char *answers;        /* the model whose answers are served (its name, with --judge);
                                 * borrowed */
    const char *fallback;       /* answer for unknown prompts, or NULL; borrowed */
    uint32_t ms_per_token;
    uint32_t latency_ms;
    const char *data;           /* for messages; borrowed */
    int judge;                  /* grade answers instead of serving them */
    double noise;               /* --judge: probability of a wrong or garbled verdict */
    uint64_t seed;              /* --judge: which verdicts the noise hits */
};

static char *
xstrdup(const char *s)
{
    char *d = strdup(s);

    if (!d)
        abort(); /* out of memory */
    return d;
}

/* Returns new text with every whitespace run turned into one space, trimmed. */
static char *
normalise(const char *s)
{
    char *out = malloc(strlen(s) + 1), *o = out;
    int space = 0;

    if (!out)
        abort();
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v') {
            space = o != out;
            continue;
        }
        if (space)
            *o++ = ' ';
        space = 0;
        *o++ = (char)ch;
    }
    *o = '\0';
    return out;
}

static uint64_t
hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static struct replay_entry *
slot(struct replay *r, const char *key)
{
    size_t i = (size_t)hash(key) & (r->cap - 1);

    while (r->tab[i].key && strcmp(r->tab[i].key, key) != 0)
        i = (i + 1) & (r->cap - 1);
    return &r->tab[i];
}

/* Adds key -> text (both taken over); a duplicate prompt keeps the first text. */
static void
replay_add(struct replay *r, char *key, char *text)
{
    if ((r->n + 1) * 2 > r->cap) {
        struct replay_entry *old = r->tab;
        size_t ocap = r->cap;
        r->cap = r->cap ? r->cap * 2 : 1024;
        r->tab = calloc(r->cap, sizeof(*r->tab));
        if (!r->tab)
            abort();
        for (size_t i = 0; i < ocap; i++)
            if (old[i].key)
                *slot(r, old[i].key) = old[i];
        free(old);
    }
    struct replay_entry *e = slot(r, key);
    if (e->key) {
        free(key);
        free(text);
        return;
    }
    e->key = key;
    e->text = text;
    r->n++;
}

static const char *
replay_find(struct replay *r, const char *prompt)
{
    if (r->n == 0)
        return NULL;
    char *key = normalise(prompt);
    struct replay_entry *e = slot(r, key);
    free(key);
    return e->key ? e->text : NULL;
}

static void
replay_free(struct replay *r)
{
    for (size_t i = 0; i < r->cap; i++) {
        free(r->tab[i].key);
        free(r->tab[i].text);
    }
    free(r->tab);
}

/* Reads one line of any length into *line; returns its length, or -1 at the end. */
static long
gz_line(gzFile f, char **line, size_t *cap)
{
    size_t len = 0;

    for (;;) {
        if (*cap - len < 2) {
            *cap = *cap ? *cap * 2 : 65536;
            *line = realloc(*line, *cap);
            if (!*line)
                abort();
        }
        if (!gzgets(f, *line + len, (int)(*cap - len)))
            return len ? (long)len : -1;
        len += strlen(*line + len);
        if (len && (*line)[len - 1] == '\n')
            return (long)len;
    }
}

/* Loads path's answers of r->answers, or with --judge its references. Returns 0 or -1
 * with the reason printed. */
static int
replay_load(struct replay *r, const char *path)
{
    gzFile f = gzopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    long len, lineno = 0;
    json_t *names = NULL;
    int rc = -1;

    if (!f) {
        cli_errorf("replay", "%s: %s", path, strerror(errno ? errno : ENOENT));
        return -1;
    }
    while ((len = gz_line(f, &line, &cap)) >= 0) {
        json_error_t jerr;
        lineno++;
        if (len <= 1)
            continue;
        json_t *rec = json_loadb(line, (size_t)len, 0, &jerr);
        json_t *prompt = json_object_get(rec, "prompt");
        json_t *answers = json_object_get(rec, "answers");
        if (!json_is_string(prompt) || !json_is_object(answers)) {
            cli_errorf("replay", "%s:%ld: not a {\"prompt\", \"answers\"} record%s%s", path, lineno,
                       rec ? "" : ": ", rec ? "" : jerr.text);
            json_decref(rec);
            goto fail;
        }
        json_t *a = json_object_get(answers, r->answers);
        json_t *ref = json_object_get(rec, "reference");
        if (r->judge) {
            if (json_is_string(ref)) /* a record without one is an unknown question */
                replay_add(r, normalise(json_string_value(prompt)),
                           xstrdup(json_string_value(ref)));
        } else if (json_is_string(a))
            replay_add(r, normalise(json_string_value(prompt)), xstrdup(json_string_value(a)));
        else if (!names)
            names = json_incref(answers);
        json_decref(rec);
    }
    if (r->n == 0 && r->judge) {
        cli_errorf("replay", "%s: no record has a \"reference\" to judge by", path);
        goto fail;
    }
    if (r->n == 0) {
        char list[512] = "";
        const char *k;
        json_t *v;
        json_object_foreach(names, k, v) {
            strncat(list, " ", sizeof(list) - strlen(list) - 1);
            strncat(list, k, sizeof(list) - strlen(list) - 1);
        }
        cli_errorf("replay", "%s: no answers of model %s (it has:%s)", path, r->answers,
                   names ? list : " nothing");
        goto fail;
    }
    rc = 0;
fail:
    json_decref(names);
    free(line);
    gzclose(f);
    return rc;
}

/* Returns the text of the last user message (new), or NULL. Content parts are joined. */
static char *
last_user_text(json_t *messages)
{
    size_t i, j;
    json_t *m, *part;
    const char *text = NULL;
    json_t *parts = NULL;

    json_array_foreach(messages, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");
        if (!role || strcmp(role, "user") != 0)
            continue;
        text = json_string_value(content);
        parts = json_is_array(content) ? content : NULL;
    }
    if (text)
        return xstrdup(text);
    if (!parts)
        return NULL;
    size_t total = 1;
    json_array_foreach(parts, j, part)
        total += json_string_length(json_object_get(part, "text")) + 1;
    char *out = calloc(1, total);
    if (!out)
        abort();
    json_array_foreach(parts, j, part) {
        const char *t = json_string_value(json_object_get(part, "text"));
        if (!t)
            continue;
        if (*out)
            strcat(out, " ");
        strcat(out, t);
    }
    return out;
}

static size_t
prompt_bytes(json_t *messages)
{
    size_t i, j, total = 0;
    json_t *m, *part;

    json_array_foreach(messages, i, m) {
        json_t *content = json_object_get(m, "content");
        if (json_is_string(content))
            total += json_string_length(content);
        else
            json_array_foreach(content, j, part)
                total += json_string_length(json_object_get(part, "text"));
    }
    return total;
}

/* ---- --judge ------------------------------------------------------------------------ */

/* Returns a 64-bit hash of the seed, the question and the answer (splitmix64's finish
 * over FNV-1a): the same request always draws the same verdict, on any thread. */
static uint64_t
judge_draw(uint64_t seed, const char *question, const char *answer)
{
    uint64_t h = 1469598103934665603ull ^ seed;

    for (const char *p = question; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (const char *p = answer; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

/* Writes what a judge would reply about answer to question into out (len bytes): a
 * one-line justification and "Rating: [[10]]" when the answer's final number is the
 * reference's, "[[2]]" when it is not or there is none, "[[5]]" when the question has no
 * reference. With probability r->noise the verdict is noise instead, of one of four
 * kinds (drawn with it): the rating flipped (parseable but wrong), no rating, two
 * ratings that disagree, a rating off the scale (the last three leave
 * router_judge_parse nothing). */
static void
judge_verdict(struct replay *r, const char *question, const char *answer, char *out, size_t len)
{
    const char *ref = replay_find(r, question);
    uint64_t h = judge_draw(r->seed, question, answer);
    double want = ref ? strtod(ref, NULL) : 0, got = 0;
    int has = grade_final_number(answer, &got) == 0;
    int rating = !ref ? 5 : grade_is_correct(answer, want) ? 10 : 2;

    if ((double)(h >> 11) * 0x1p-53 < r->noise) {
        switch ((h >> 3) & 3) {
        case 0:
            snprintf(out, len, "On reflection I disagree with the obvious reading.\nRating: [[%d]]",
                     rating >= 6 ? 2 : 10);
            return;
        case 1:
            snprintf(out, len, "The answer looks plausible, but I cannot settle on a rating.");
            return;
        case 2:
            snprintf(out, len, "Somewhere between [[3]] and [[8]], depending on the reading.\n"
                               "Rating: [[8]]");
            return;
        default:
            snprintf(out, len, "An exceptional answer.\nRating: [[11]]");
            return;
        }
    }
    if (!ref)
        snprintf(out, len, "There is no reference answer for this question, so the answer's "
                           "result cannot be checked.\nRating: [[5]]");
    else if (!has)
        snprintf(out, len, "The answer gives no final number; the reference answer is %.10g.\n"
                           "Rating: [[2]]", want);
    else if (rating == 10)
        snprintf(out, len, "The answer's final result, %.10g, matches the reference answer.\n"
                           "Rating: [[10]]", got);
    else
        snprintf(out, len, "The answer's final result, %.10g, does not match the reference "
                           "answer, %.10g.\nRating: [[2]]", got, want);
}

/* ---- serving ------------------------------------------------------------------------- */

static void
handle_chat(struct fakeai_req *req, struct replay *r)
{
    size_t blen;
    const char *body = fakeai_req_body(req, &blen);
    json_t *root = json_loadb(body, blen, 0, NULL);

    if (!json_is_object(root)) {
        fakeai_req_error(req, 400, "triage replay: the request body is not a JSON object");
        json_decref(root);
        return;
    }
    json_t *messages = json_object_get(root, "messages");
    const char *model = json_string_value(json_object_get(root, "model"));
    char *prompt = NULL, *graded = NULL;
    const char *answer = NULL;
    char verdict[512];
    if (r->judge) {
        if (router_judge_unpack(root, &prompt, &graded) == 0) {
            judge_verdict(r, prompt, graded, verdict, sizeof(verdict));
            answer = verdict;
        }
    } else {
        prompt = last_user_text(messages);
        answer = prompt ? replay_find(r, prompt) : NULL;
        if (!answer)
            answer = r->fallback;
    }
    size_t pb = prompt_bytes(messages);
    struct fakeai_chat c = {
        .model = model && *model ? model : r->answers,
        .latency_ms = r->latency_ms,
        .chunk_delay_ms = r->ms_per_token,
        .stream = json_is_true(json_object_get(root, "stream")),
        .include_usage =
            json_is_true(json_object_get(json_object_get(root, "stream_options"), "include_usage")),
        .prompt_tokens = pb ? (long)((pb + 3) / 4) : 1,
    };
    char msg[300];
    if (answer) {
        c.content = answer;
        /* about 4 bytes a token, like the usage counts of real models' English text */
        size_t len = strlen(answer);
        c.chunks = (unsigned)((len + 3) / 4);
        if (c.chunks == 0)
            c.chunks = 1;
    } else if (r->judge) {
        snprintf(msg, sizeof(msg), "triage replay --judge: not a judge request (the format of "
                                   "router_judge_request, docs/judge.md)");
        c.status = 400;
        c.error_message = msg;
        c.latency_ms = 0;
    } else {
        snprintf(msg, sizeof(msg),
                 "triage replay: no recorded answer of %s for this prompt (%zu known prompts in %s)",
                 r->answers, r->n, r->data);
        c.status = 400;
        c.error_message = msg;
        c.latency_ms = 0;
    }
    fakeai_req_chat(req, &c);
    free(prompt);
    free(graded);
    json_decref(root);
}

static void
handle(struct fakeai_req *req, void *arg)
{
    struct replay *r = arg;
    const char *method = fakeai_req_method(req), *path = fakeai_req_path(req);

    if (strcmp(path, "/v1/chat/completions") == 0) {
        if (strcmp(method, "POST") == 0)
            handle_chat(req, r);
        else
            fakeai_req_error(req, 405, "use POST");
    } else if (strcmp(path, "/v1/models") == 0) {
        json_t *j = json_pack("{s:s,s:[{s:s,s:s,s:i,s:s}]}", "object", "list", "data", "id",
                              r->answers, "object", "model", "created", 0, "owned_by", "triage-replay");
        char *s = json_dumps(j, JSON_COMPACT);
        fakeai_req_reply(req, 200, "application/json", NULL, s, strlen(s));
        free(s);
        json_decref(j);
    } else {
        fakeai_req_error(req, 404, "triage replay: no such path");
    }
}

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: triage replay --answers MODEL [--data FILE] [--port N] [--listen ADDR]\n"
            "                     [--ms-per-token N] [--latency-ms N] [--fallback-answer TEXT]\n"
            "                     [--threads N]\n"
            "       triage replay --judge [--judge-noise P] [--judge-seed N] [--data FILE] ...\n"
            "\n"
            "Serves an OpenAI-compatible POST /v1/chat/completions (JSON and SSE, with usage)\n"
            "that answers known prompts with MODEL's recorded answers: an offline stand-in for a\n"
            "real backend. The prompt is the last user message, whitespace-normalised.\n"
            "\n"
            "With --judge it stands in for the LLM judge instead (docs/judge.md): each request\n"
            "must be a judge request as triaged builds them (router_judge_request); the graded\n"
            "question is looked up like a prompt, and the answer's final number (after the\n"
            "last ####, else in the last \\boxed{}, else the last number: triage demo's rule)\n"
            "is compared with the record's \"reference\". The reply is a one-line\n"
            "justification and \"Rating: [[10]]\" when they match, \"Rating: [[2]]\" when\n"
            "they do not or the answer has no number, \"Rating: [[5]]\" (no reference) for an\n"
            "unknown question; a request in another format gets HTTP 400.\n"
            "\n"
            "  --data FILE            JSONL(.gz) of {\"prompt\", \"reference\",\n"
            "                         \"answers\": {MODEL: text}}\n"
            "                         (default %s)\n"
            "  --answers MODEL        whose answers to serve, e.g. mixtral-8x7b-instruct or\n"
            "                         gpt-4-1106-preview\n"
            "  --port N               default 9001; 0 picks a free port\n"
            "  --listen ADDR          default 127.0.0.1\n"
            "  --ms-per-token N       delay per output token (about 4 bytes), default 0\n"
            "  --latency-ms N         delay before the first byte, default 0\n"
            "  --fallback-answer TEXT answer unknown prompts with TEXT instead of HTTP 400\n"
            "  --threads N            event-loop threads (SO_REUSEPORT), default 1\n"
            "  --judge                grade answers as an LLM judge would (no --answers)\n"
            "  --judge-noise P        with probability P (0..1, default 0) a verdict is noise:\n"
            "                         the rating flipped, or no usable rating at all (none,\n"
            "                         two that disagree, one off the scale), a quarter each\n"
            "  --judge-seed N         which verdicts the noise hits (default 1); the same\n"
            "                         request and seed always get the same verdict\n"
            "\n"
            "Prints \"listening on PORT\" on stdout when ready; stops on SIGINT or SIGTERM.\n",
            DEFAULT_DATA);
}

static int
parse_u32(const char *s, unsigned long max, uint32_t *out)
{
    char *end;

    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int
parse_u64(const char *s, uint64_t *out)
{
    char *end;

    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-')
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static int
parse_probability(const char *s, double *out)
{
    char *end;

    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0 && v <= 1))
        return -1;
    *out = v;
    return 0;
}

int
cli_replay(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data", required_argument, NULL, 'd'},
        {"answers", required_argument, NULL, 'a'},
        {"port", required_argument, NULL, 'p'},
        {"listen", required_argument, NULL, 'l'},
        {"ms-per-token", required_argument, NULL, 'm'},
        {"latency-ms", required_argument, NULL, 'L'},
        {"fallback-answer", required_argument, NULL, 'f'},
        {"threads", required_argument, NULL, 't'},
        {"judge", no_argument, NULL, 'J'},
        {"judge-noise", required_argument, NULL, 'N'},
        {"judge-seed", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct replay r = {.data = access(DEFAULT_DATA, R_OK) == 0 ? DEFAULT_DATA : INSTALLED_DATA,
                       .seed = 1};
    uint32_t port = 9001, threads = 1;
    int noise_set = 0;
    const char *listen = "127.0.0.1";
    char err[256];
    int ch;

    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int bad = 0;
        switch (ch) {
        case 'd': r.data = optarg; break;
        case 'a': r.answers = optarg; break;
        case 'l': listen = optarg; break;
        case 'f': r.fallback = optarg; break;
        case 'p': bad = parse_u32(optarg, 65535, &port); break;
        case 'm': bad = parse_u32(optarg, 600000, &r.ms_per_token); break;
        case 'L': bad = parse_u32(optarg, 3600000, &r.latency_ms); break;
        case 't': bad = parse_u32(optarg, 256, &threads) || threads == 0; break;
        case 'J': r.judge = 1; break;
        case 'N': bad = parse_probability(optarg, &r.noise); noise_set = 1; break;
        case 'S': bad = parse_u64(optarg, &r.seed); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (bad) {
            cli_errorf("replay", "bad number: %s", optarg);
            return 2;
        }
    }
    if (optind != argc) {
        cli_errorf("replay", "unexpected argument %s", argv[optind]);
        return 2;
    }
    if (r.judge && (r.answers || r.fallback)) {
        cli_errorf("replay",
                   "--judge grades answers: --answers and --fallback-answer do not apply");
        return 2;
    }
    if (!r.judge && noise_set) {
        cli_errorf("replay", "--judge-noise needs --judge");
        return 2;
    }
    if (r.judge)
        r.answers = "replay-judge"; /* the model name it answers as */
    if (!r.answers) {
        cli_errorf("replay", "--answers MODEL is required (see --help)");
        return 2;
    }
    if (replay_load(&r, r.data) < 0) {
        replay_free(&r);
        return 1;
    }
    struct fakeai_config cfg = {
        .listen = listen, .port = (uint16_t)port, .threads = threads, .handler = handle, .arg = &r,
    };
    struct fakeai_server *s = fakeai_server_new(&cfg, err, sizeof(err));
    if (!s) {
        cli_errorf("replay", "%s", err);
        replay_free(&r);
        return 1;
    }
    if (r.judge)
        fprintf(stderr, "triage replay: judging by %zu references from %s, noise %g, on %s:%u\n",
                r.n, r.data, r.noise, listen, (unsigned)fakeai_server_port(s));
    else
        fprintf(stderr, "triage replay: %zu answers of %s from %s, %u ms/token, on %s:%u\n", r.n,
                r.answers, r.data, (unsigned)r.ms_per_token, listen,
                (unsigned)fakeai_server_port(s));
    printf("listening on %u\n", (unsigned)fakeai_server_port(s));
    fflush(stdout);
    int rc = fakeai_server_run(s);
    fakeai_server_destroy(s);
    replay_free(&r);
    return rc < 0 ? 1 : 0;
}
