/* answer.c - signals of a model's answer (its text's shape, finish_reason, token
 * log-probabilities) that tell whether a cheap model coped: the escalation model's inputs. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prompt_features.h"

static const char *const answer_names[FEATURES_N_ANSWER] = {
    "bytes",       "lines",        "numbers",     "final_marker", "hedges",
    "revisions",   "ends_number",  "ends_clean",  "repeated",     "finish_length",
    "finish_other", "no_finish",   "has_logprobs", "lp_mean",     "lp_min",
    "lp_unsure",   "final_fraction", "rounding",  "prompt_numbers_unused",
    /* version 2 */
    "results",     "arith_checked", "arith_wrong", "final_unresulted", "prompt_numbers",
    "prompt_bytes",
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

/* Returns 1 when c is one of set's bytes (never for NUL). */
static int
in_set(char c, const char *set)
{
    return c != '\0' && strchr(set, c) != NULL;
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
 * the prompt has none): an answer that leaves given quantities unused often went astray.
 * *distinct gets how many distinct numbers the prompt has (the first 64). */
static float
numbers_unused(const char *prompt, size_t plen, const char *text, size_t len, size_t *distinct)
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
    *distinct = n;
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

/* ---- the answer's arithmetic: "a op b = c" computations, checked ---------------------
 * A computation is a run of numbers, + - * / (also x between numbers, the multiplication
 * and division signs, \times, \cdot, \div) and parentheses right before an '=', and the
 * number right after it (the result). Spaces and '$' are skipped; anything else (a word, a
 * newline, "<<") ends a run. A run holding a percentage is not evaluated. */

#define ARITH_RUN 48    /* tokens of the run before an '=', at most (longer: not evaluated) */
#define ARITH_DIGITS 40 /* bytes of one number read, at most (longer: not evaluated) */

enum { A_NUM, A_OP, A_LP, A_RP };

struct arith_tok {
    unsigned char kind;
    char op;  /* A_OP: '+', '-', '*', '/' */
    double v; /* A_NUM */
};

struct arith_parse {
    const struct arith_tok *t;
    size_t n, i;
    int ops; /* binary operators consumed */
};

static int arith_expr(struct arith_parse *p, double *v, int depth);

static int
arith_primary(struct arith_parse *p, double *v, int depth)
{
    if (p->i == p->n || depth > ARITH_RUN)
        return -1;
    const struct arith_tok *t = &p->t[p->i];
    if (t->kind == A_OP && (t->op == '-' || t->op == '+')) {
        p->i++;
        if (arith_primary(p, v, depth + 1) < 0)
            return -1;
        if (t->op == '-')
            *v = -*v;
        return 0;
    }
    if (t->kind == A_NUM) {
        p->i++;
        *v = t->v;
        return 0;
    }
    if (t->kind == A_LP) {
        p->i++;
        if (arith_expr(p, v, depth + 1) < 0 || p->i == p->n || p->t[p->i].kind != A_RP)
            return -1;
        p->i++;
        return 0;
    }
    return -1;
}

static int
arith_term(struct arith_parse *p, double *v, int depth)
{
    if (arith_primary(p, v, depth) < 0)
        return -1;
    while (p->i < p->n && p->t[p->i].kind == A_OP && (p->t[p->i].op == '*' || p->t[p->i].op == '/')) {
        char op = p->t[p->i++].op;
        double r;
        if (arith_primary(p, &r, depth) < 0)
            return -1;
        if (op == '/' && r == 0)
            return -1;
        *v = op == '*' ? *v * r : *v / r;
        p->ops++;
    }
    return 0;
}

static int
arith_expr(struct arith_parse *p, double *v, int depth)
{
    if (arith_term(p, v, depth) < 0)
        return -1;
    while (p->i < p->n && p->t[p->i].kind == A_OP && (p->t[p->i].op == '+' || p->t[p->i].op == '-')) {
        char op = p->t[p->i++].op;
        double r;
        if (arith_term(p, &r, depth) < 0)
            return -1;
        *v = op == '+' ? *v + r : *v - r;
        p->ops++;
    }
    return 0;
}

/* Evaluates the longest suffix of t[0..n) that is a whole expression with at least one
 * operator ("Step 1) 3 + 4" is "3 + 4"). Returns 0 with *v finite, or -1. */
static int
arith_eval(const struct arith_tok *t, size_t n, double *v)
{
    for (size_t start = 0; start < n; start++) {
        struct arith_parse p = {t + start, n - start, 0, 0};
        if (arith_expr(&p, v, 0) == 0 && p.i == p.n && p.ops > 0 && isfinite(*v))
            return 0;
    }
    return -1;
}

/* Reads the number at p[i] (a digit): digits, thousands groups ",ddd", a fraction ".d...".
 * Sets *v (NAN when it has more than ARITH_DIGITS bytes) and *decimals; returns its end. */
static size_t
arith_number(const char *p, size_t len, size_t i, double *v, int *decimals)
{
    char buf[ARITH_DIGITS + 1];
    size_t n = 0;
    int too_long = 0;

    *decimals = 0;
    for (;;) {
        if (i < len && isdigit((unsigned char)p[i])) {
            if (n < ARITH_DIGITS)
                buf[n++] = p[i];
            else
                too_long = 1;
            i++;
        } else if (i + 3 < len && p[i] == ',' && isdigit((unsigned char)p[i + 1]) &&
                   isdigit((unsigned char)p[i + 2]) && isdigit((unsigned char)p[i + 3]) &&
                   (i + 4 == len || !isdigit((unsigned char)p[i + 4]))) {
            i++; /* a thousands comma */
        } else if (i + 1 < len && p[i] == '.' && isdigit((unsigned char)p[i + 1])) {
            if (n < ARITH_DIGITS)
                buf[n++] = '.';
            else
                too_long = 1;
            i++;
            while (i < len && isdigit((unsigned char)p[i])) {
                if (n < ARITH_DIGITS)
                    buf[n++] = p[i];
                else
                    too_long = 1;
                (*decimals)++;
                i++;
            }
            break;
        } else {
            break;
        }
    }
    buf[n] = '\0';
    *v = too_long ? NAN : strtod(buf, NULL);
    return i;
}

/* The final answer's number: after the last "####", else in the last "\boxed{", else
 * the text's last number (its magnitude). Returns 1 with *v set, else 0. */
static int
final_number(const char *t, size_t len, double *v)
{
    static const char *const marks[] = {"####", "\\boxed{"};
    int dec;

    for (size_t m = 0; m < 2; m++) {
        size_t ml = strlen(marks[m]), at = len;
        for (size_t i = 0; i + ml <= len; i++)
            if (memcmp(t + i, marks[m], ml) == 0)
                at = i + ml;
        if (at == len)
            continue;
        while (at < len && !isdigit((unsigned char)t[at]) && t[at] != '\n')
            at++;
        if (at < len && isdigit((unsigned char)t[at])) {
            arith_number(t, len, at, v, &dec);
            return isfinite(*v);
        }
    }
    int found = 0;
    for (size_t i = 0; i < len;) {
        if (!isdigit((unsigned char)t[i])) {
            i++;
            continue;
        }
        i = arith_number(t, len, i, v, &dec);
        found = isfinite(*v);
    }
    return found;
}

/* Returns 1 when the stated result c (shown with `decimals` fraction digits) is e rounded
 * as shown. */
static int
arith_agrees(double e, double c, int decimals)
{
    return fabs(e - c) <= 0.5 * pow(10.0, -(decimals > 15 ? 15 : decimals)) + 1e-9 * fabs(e);
}

struct arith_counts {
    size_t results; /* numbers right after an '=' */
    size_t checked; /* of those, after an evaluated computation */
    size_t wrong;   /* of those, not the computation's value */
    int final_resulted; /* the final number is one of the results */
};

/* The byte p[i] as an operator ('+', '-', '*', '/'), with *skip its bytes; 0 when it is
 * none. after_operand: the run's last token is a number or ')' (for x). */
static char
arith_op(const char *p, size_t len, size_t i, int after_operand, size_t *skip)
{
    unsigned char c = (unsigned char)p[i];

    *skip = 1;
    if (c == '+' || c == '-' || c == '*' || c == '/')
        return (char)c;
    if ((c == 'x' || c == 'X') && after_operand && (i == 0 || !isalpha((unsigned char)p[i - 1]))) {
        size_t k = i + 1;
        if (k < len && isalpha((unsigned char)p[k]))
            return 0;
        while (k < len && p[k] == ' ')
            k++;
        return k < len && (isdigit((unsigned char)p[k]) || p[k] == '(' || p[k] == '$') ? '*' : 0;
    }
    if (c == 0xc3 && i + 1 < len && ((unsigned char)p[i + 1] == 0x97 || (unsigned char)p[i + 1] == 0xb7)) {
        *skip = 2; /* U+00D7 multiplication sign, U+00F7 division sign */
        return (unsigned char)p[i + 1] == 0x97 ? '*' : '/';
    }
    if (c == 0xe2 && i + 2 < len && (unsigned char)p[i + 1] == 0x88 && (unsigned char)p[i + 2] == 0x92) {
        *skip = 3; /* U+2212 minus sign */
        return '-';
    }
    if (c == '\\') {
        static const struct { const char *s; char op; } tex[] = {
            {"\\times", '*'}, {"\\cdot", '*'}, {"\\div", '/'}};
        for (size_t k = 0; k < sizeof(tex) / sizeof(*tex); k++) {
            size_t tl = strlen(tex[k].s);
            if (i + tl <= len && memcmp(p + i, tex[k].s, tl) == 0 &&
                (i + tl == len || !isalpha((unsigned char)p[i + tl]))) {
                *skip = tl;
                return tex[k].op;
            }
        }
    }
    return 0;
}

/* Counts the results and checks the computations of t[0..len). */
static void
arith_scan(const char *t, size_t len, int have_final, double final, struct arith_counts *c)
{
    struct arith_tok run[ARITH_RUN];
    size_t n = 0;
    int spoilt = 0;      /* the run holds a percentage or overflowed */
    int after_eq = 0;    /* the last token was '=': a number now is a result */
    int pending = 0;     /* the computation before that '=' evaluated to pending_v */
    double pending_v = 0;

    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < len;) {
        unsigned char ch = (unsigned char)t[i];
        size_t skip;
        char op;

        if (ch == ' ' || ch == '\t' || ch == '$') {
            i++;
            continue;
        }
        if (isdigit(ch) || (after_eq && ch == '-' && i + 1 < len && isdigit((unsigned char)t[i + 1]))) {
            int neg = ch == '-', dec;
            double v;
            i = arith_number(t, len, i + (size_t)neg, &v, &dec);
            int pct = i < len && t[i] == '%';
            i += (size_t)pct;
            if (neg)
                v = -v;
            if (after_eq && isfinite(v)) {
                c->results++;
                if (have_final && fabs(fabs(v) - final) <= 1e-9 * final)
                    c->final_resulted = 1;
                if (pending && !pct) {
                    c->checked++;
                    c->wrong += !arith_agrees(pending_v, v, dec);
                }
            }
            after_eq = pending = 0;
            if (n == ARITH_RUN || !isfinite(v) || pct)
                spoilt = 1;
            else
                run[n++] = (struct arith_tok){A_NUM, 0, v};
            continue;
        }
        if (ch == '=' && !(i + 1 < len && (t[i + 1] == '=' || t[i + 1] == '>')) &&
            !(i > 0 && (t[i - 1] == '<' || t[i - 1] == '>' || t[i - 1] == '!' || t[i - 1] == '='))) {
            pending = !spoilt && arith_eval(run, n, &pending_v) == 0;
            n = 0;
            spoilt = 0;
            after_eq = 1;
            i++;
            continue;
        }
        after_eq = 0;
        op = arith_op(t, len, i, n > 0 && (run[n - 1].kind == A_NUM || run[n - 1].kind == A_RP), &skip);
        if (op || ch == '(' || ch == ')') {
            if (n == ARITH_RUN)
                spoilt = 1;
            else
                run[n++] = (struct arith_tok){op ? A_OP : ch == '(' ? A_LP : A_RP, op, 0};
            i += skip;
            continue;
        }
        /* anything else ends the run */
        n = 0;
        spoilt = 0;
        pending = 0;
        i++;
    }
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

    if (!text) {
        text = ""; /* no pointer arithmetic on NULL below */
        len = 0;
    }
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
    while (t > 0 && in_set(text[t - 1], ".!*)]}$`\"'"))
        t--;
    int ends_number = t > 0 && isdigit((unsigned char)text[t - 1]);
    int ends_clean = e > 0 && (ends_number || in_set(text[e - 1], ".!?)]}$`\"'*"));

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
    size_t distinct = 0;
    out[18] = prompt ? numbers_unused(prompt, prompt_len, text, len, &distinct) : 0.0f;

    double final = 0;
    int have_final = final_number(text, len, &final);
    struct arith_counts ac;
    arith_scan(text, len, have_final, final, &ac);
    out[19] = (float)log1p((double)ac.results);
    out[20] = (float)log1p((double)ac.checked);
    out[21] = (float)log1p((double)ac.wrong);
    out[22] = ac.results > 0 && have_final && !ac.final_resulted ? 1.0f : 0.0f;
    out[23] = (float)log1p((double)distinct);
    out[24] = prompt ? (float)log1p((double)prompt_len) : 0.0f;
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
