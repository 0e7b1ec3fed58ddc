/* answer.c - signals of a model's answer (its text's shape, finish_reason, token
 * log-probabilities) that tell whether a cheap model coped: the escalation model's inputs. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include "prompt_features.h"

static const char *const answer_names[FEATURES_N_ANSWER] = {
    "bytes",       "lines",        "numbers",     "final_marker", "hedges",
    "revisions",   "ends_number",  "ends_clean",  "repeated",     "finish_length",
    "finish_other", "no_finish",   "has_logprobs", "lp_mean",     "lp_min",
    "lp_unsure",   "final_fraction", "rounding",  "prompt_numbers_unused",
};

const char *
features_answer_name(size_t i)
{
    return i < FEATURES_N_ANSWER ? answer_names[i] : NULL;
}

/* Words that say the writer is unsure of what it wrote (matched as whole words, case
 * folded, ASCII). */
static const char *const hedge_words[] = {
    "maybe",   "perhaps", "possibly", "probably",  "might",   "approximately", "roughly",
    "assume",  "assuming", "unclear", "uncertain", "guess",   "estimate",      "cannot",
    "can't",   "unable",  "sorry",    "ambiguous", "unsure",  "seems",         "likely",
};

/* Words that say a result was bent to fit (a sign the working went astray). */
static const char *const rounding_words[] = {
    "round", "rounded", "rounding", "nearest", "whole", "fraction", "fractional", "partial",
};

/* Words that say the writer changed course mid-answer. */
static const char *const revision_words[] = {
    "wait", "actually", "mistake", "oops", "correction", "however", "instead", "recalculate",
    "re-evaluate", "incorrect", "wrong",
};

/* Phrases that mark a stated final result. */
static const char *const marker_phrases[] = {
    "####", "\\boxed{", "answer is", "answer:", "final answer", "the answer", "therefore",
    "in total", "in conclusion",
};

static int
word_in(const char *w, size_t len, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(list[i]) == len && memcmp(list[i], w, len) == 0)
            return 1;
    return 0;
}

/* Case-folded substring search (ASCII) of needle in text[0..len). */
static int
contains_fold(const char *text, size_t len, const char *needle)
{
    size_t nl = strlen(needle);

    for (size_t i = 0; i + nl <= len; i++) {
        size_t k = 0;
        while (k < nl && tolower((unsigned char)text[i + k]) == needle[k])
            k++;
        if (k == nl)
            return 1;
    }
    return 0;
}

static int
is_word_byte(unsigned char c)
{
    return isalpha(c) || c == '\'' || c == '-' || c >= 0x80;
}

/* FNV-1a of a line, for spotting repeated lines. */
static uint64_t
line_hash(const char *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

#define ANSWER_LINE_SLOTS 256 /* repeated lines are counted among the first this many */

#define ANSWER_PROMPT_NUMBERS 64 /* numbers of the prompt looked for in the answer, at most */

/* Returns the next number in p[*i..len) as its digits (commas dropped) in buf (size
 * bytes, NUL-terminated, cut to fit), advancing *i past it; 0 when there is none. */
static int
next_number(const char *p, size_t len, size_t *i, char *buf, size_t size)
{
    size_t k = *i, n = 0;

    while (k < len && !isdigit((unsigned char)p[k]))
        k++;
    if (k == len) {
        *i = k;
        return 0;
    }
    while (k < len && (isdigit((unsigned char)p[k]) ||
                       ((p[k] == '.' || p[k] == ',') && k + 1 < len && isdigit((unsigned char)p[k + 1])))) {
        if (p[k] != ',' && n + 1 < size)
            buf[n++] = p[k];
        k++;
    }
    buf[n] = '\0';
    *i = k;
    return 1;
}

/* Share of the distinct numbers of the prompt that the answer never mentions (0 when
 * the prompt has none): an answer that leaves given quantities unused often went astray. */
static float
numbers_unused(const char *prompt, size_t plen, const char *text, size_t len)
{
    char nums[ANSWER_PROMPT_NUMBERS][24], buf[24];
    unsigned char seen[ANSWER_PROMPT_NUMBERS] = {0};
    size_t n = 0, i = 0;

    while (n < ANSWER_PROMPT_NUMBERS && next_number(prompt, plen, &i, buf, sizeof(buf))) {
        int dup = 0;
        for (size_t k = 0; k < n && !dup; k++)
            dup = strcmp(nums[k], buf) == 0;
        if (!dup)
            memcpy(nums[n++], buf, sizeof(buf));
    }
    if (n == 0)
        return 0.0f;
    i = 0;
    while (next_number(text, len, &i, buf, sizeof(buf)))
        for (size_t k = 0; k < n; k++)
            if (strcmp(nums[k], buf) == 0)
                seen[k] = 1;
    size_t unused = 0;
    for (size_t k = 0; k < n; k++)
        unused += !seen[k];
    return (float)unused / (float)n;
}

void
features_answer_signals(const char *text, size_t len, const char *prompt, size_t prompt_len,
                        const char *finish_reason, const float *logprobs, size_t n_logprobs,
                        float out[FEATURES_N_ANSWER])
{
    size_t lines = 0, numbers = 0, hedges = 0, revisions = 0, rounding = 0, repeated = 0;
    size_t n_hashes = 0;
    int last_fraction = 0; /* the last number has a fractional part */
    uint64_t hashes[ANSWER_LINE_SLOTS];
    int marker = 0;

    if (!text)
        len = 0;
    for (size_t i = 0; i < sizeof(marker_phrases) / sizeof(*marker_phrases) && !marker; i++)
        marker = contains_fold(text, len, marker_phrases[i]);

    /* one pass: lines, numbers, words */
    size_t i = 0, line_start = 0;
    while (i <= len) {
        if (i == len || text[i] == '\n') {
            const char *l = text + line_start;
            size_t ll = i - line_start;
            while (ll > 0 && isspace((unsigned char)l[ll - 1]))
                ll--;
            while (ll > 0 && isspace((unsigned char)*l)) {
                l++;
                ll--;
            }
            if (ll > 0) {
                lines++;
                uint64_t h = line_hash(l, ll);
                int dup = 0;
                for (size_t k = 0; k < n_hashes && !dup; k++)
                    dup = hashes[k] == h;
                if (dup)
                    repeated++;
                else if (n_hashes < ANSWER_LINE_SLOTS)
                    hashes[n_hashes++] = h;
            }
            line_start = ++i;
            continue;
        }
        unsigned char c = (unsigned char)text[i];
        if (isdigit(c)) {
            int frac = 0, nonzero = 0;
            numbers++;
            while (i < len && (isdigit((unsigned char)text[i]) ||
                               ((text[i] == '.' || text[i] == ',') && i + 1 < len &&
                                isdigit((unsigned char)text[i + 1])))) {
                if (text[i] == '.')
                    frac = 1;
                else if (frac && text[i] != '0')
                    nonzero = 1;
                i++;
            }
            last_fraction = frac && nonzero;
            continue;
        }
        if (is_word_byte(c)) {
            char w[16];
            size_t wl = 0, start = i;
            while (i < len && is_word_byte((unsigned char)text[i])) {
                if (wl < sizeof(w))
                    w[wl] = (char)tolower((unsigned char)text[i]);
                wl++;
                i++;
            }
            (void)start;
            if (wl <= sizeof(w)) {
                hedges += word_in(w, wl, hedge_words, sizeof(hedge_words) / sizeof(*hedge_words));
                revisions +=
                    word_in(w, wl, revision_words, sizeof(revision_words) / sizeof(*revision_words));
                rounding +=
                    word_in(w, wl, rounding_words, sizeof(rounding_words) / sizeof(*rounding_words));
            }
            continue;
        }
        i++;
    }

    /* how the text ends: on a number (a stated result), on closing punctuation, or cut */
    size_t e = len;
    while (e > 0 && isspace((unsigned char)text[e - 1]))
        e--;
    size_t t = e;
    while (t > 0 && strchr(".!*)]}$`\"'", text[t - 1]))
        t--;
    int ends_number = t > 0 && isdigit((unsigned char)text[t - 1]);
    int ends_clean = e > 0 && (ends_number || strchr(".!?)]}$`\"'*", text[e - 1]) != NULL);

    int f_length = 0, f_other = 0, f_none = 1;
    if (finish_reason && *finish_reason) {
        f_none = 0;
        if (strcmp(finish_reason, "length") == 0 || strcmp(finish_reason, "max_tokens") == 0)
            f_length = 1;
        else if (strcmp(finish_reason, "stop") != 0 && strcmp(finish_reason, "end_turn") != 0 &&
                 strcmp(finish_reason, "tool_calls") != 0 &&
                 strcmp(finish_reason, "stop_sequence") != 0)
            f_other = 1;
    }

    double lp_sum = 0, lp_min = 0;
    size_t lp_n = 0, unsure = 0;
    for (size_t k = 0; logprobs && k < n_logprobs; k++) {
        double lp = logprobs[k];
        if (!isfinite(lp) || lp > 0)
            continue; /* a log-probability is <= 0; anything else is noise */
        if (lp < -20)
            lp = -20;
        lp_sum += lp;
        if (lp_n == 0 || lp < lp_min)
            lp_min = lp;
        unsure += lp < -0.69314718; /* the token had less than even odds */
        lp_n++;
    }

    out[0] = (float)log1p((double)len);
    out[1] = (float)log1p((double)lines);
    out[2] = (float)log1p((double)numbers);
    out[3] = (float)marker;
    out[4] = (float)log1p((double)hedges);
    out[5] = (float)log1p((double)revisions);
    out[6] = (float)ends_number;
    out[7] = (float)ends_clean;
    out[8] = lines ? (float)repeated / (float)lines : 0.0f;
    out[9] = (float)f_length;
    out[10] = (float)f_other;
    out[11] = (float)f_none;
    out[12] = lp_n ? 1.0f : 0.0f;
    out[13] = lp_n ? (float)(lp_sum / (double)lp_n) : 0.0f;
    out[14] = lp_n ? (float)lp_min : 0.0f;
    out[15] = lp_n ? (float)unsure / (float)lp_n : 0.0f;
    out[16] = (float)last_fraction;
    out[17] = (float)log1p((double)rounding);
    out[18] = prompt ? numbers_unused(prompt, prompt_len, text, len) : 0.0f;
}

#define ANSWER_MAX_LOGPROBS 4096 /* tokens' log-probabilities read from one answer, at most */

const char *
features_request_last_user(const json_t *request, size_t *len)
{
    const json_t *msgs = json_object_get(request, "messages"), *m, *text = NULL;
    size_t i;

    json_array_foreach(msgs, i, m) {
        const json_t *role = json_object_get(m, "role"), *c = json_object_get(m, "content");
        if (!json_is_string(role) || strcmp(json_string_value(role), "user") != 0)
            continue;
        if (json_is_string(c)) {
            text = c;
        } else if (json_is_array(c)) {
            size_t k;
            const json_t *part;
            json_array_foreach(c, k, part) {
                const json_t *t = json_object_get(part, "text");
                if (json_is_string(t))
                    text = t;
            }
        }
    }
    if (!text) {
        const json_t *p = json_object_get(request, "prompt");
        text = json_is_array(p) ? json_array_get(p, json_array_size(p) - 1) : p;
    }
    if (!json_is_string(text)) {
        *len = 0;
        return NULL;
    }
    *len = json_string_length(text);
    return json_string_value(text);
}

int
features_answer_from_response(const json_t *request, const json_t *response,
                              float out[FEATURES_N_ANSWER])
{
    const json_t *choice = json_array_get(json_object_get(response, "choices"), 0);
    const json_t *msg = json_object_get(choice, "message");
    const json_t *content = json_object_get(msg, "content");
    const json_t *finish = json_object_get(choice, "finish_reason");
    const json_t *lps = json_object_get(json_object_get(choice, "logprobs"), "content");
    float lp[ANSWER_MAX_LOGPROBS];
    size_t n_lp = 0, k, plen = 0;
    const json_t *tok;
    const char *prompt = request ? features_request_last_user(request, &plen) : NULL;

    if (!json_is_object(choice) || !json_is_object(msg))
        return -EINVAL;
    json_array_foreach(lps, k, tok) {
        const json_t *v = json_object_get(tok, "logprob");
        if (n_lp == ANSWER_MAX_LOGPROBS)
            break;
        if (json_is_number(v))
            lp[n_lp++] = (float)json_number_value(v);
    }
    features_answer_signals(json_is_string(content) ? json_string_value(content) : "",
                            json_is_string(content) ? json_string_length(content) : 0, prompt,
                            plen, json_is_string(finish) ? json_string_value(finish) : NULL, lp,
                            n_lp, out);
    return 0;
}
