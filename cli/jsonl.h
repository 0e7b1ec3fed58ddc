/* jsonl.h - line readers for JSONL files (plain or gzip, or stdin) and loading them as training sets. */
#ifndef TRIAGE_CLI_JSONL_H
#define TRIAGE_CLI_JSONL_H

#include <stddef.h>

#include "router.h"

struct jsonl_reader;

/* Opens path ("-" for stdin), gzip or plain (detected). Returns a new reader or
 * NULL with errno set. */
struct jsonl_reader *jsonl_open(const char *path);

/* Reads the next line (without its newline) into *line, valid until the next
 * call. Returns 1 for a line, 0 at the end, -EIO on a read error. */
int jsonl_next(struct jsonl_reader *r, const char **line, size_t *len);

/* Returns the 1-based number of the last line read. */
unsigned long jsonl_line_no(const struct jsonl_reader *r);

/* Returns the fraction of the compressed input consumed, in [0,1] (0 for stdin). */
double jsonl_progress(const struct jsonl_reader *r);

/* Closes r. NULL is fine. */
void jsonl_close(struct jsonl_reader *r);

/* Per-example extra numbers collected while loading (one entry per example). */
struct jsonl_extra {
    const char *field; /* numeric field to collect (borrowed), or NULL */
    double *values;    /* [n], NAN where the line lacks it; free() it */
    size_t n, cap;
};

/* Adds every line of path to d, reporting errors as "triage <cmd>: path:line: ...".
 * Blank lines are skipped. Shows a progress bar labelled with the file name when
 * stderr is a terminal. Returns 0, or -1 after reporting an error. */
int jsonl_load_dataset(const char *cmd, struct router_dataset *d, const char *path,
                       struct jsonl_extra *extra);

/* Training options shared by `train` and `eval --cv`: their long options, and
 * their usage text. */
#define JSONL_TRAIN_LONGOPTS                                                                      \
    {"seed", required_argument, NULL, 1000}, {"bits", required_argument, NULL, 1001},              \
        {"dim", required_argument, NULL, 1002}, {"epochs", required_argument, NULL, 1003},         \
        {"lr", required_argument, NULL, 1004}, {"lr-hidden", required_argument, NULL, 1005},       \
        {"l2", required_argument, NULL, 1006}, {"head-weight", required_argument, NULL, 1007},     \
        {"score", required_argument, NULL, 1008}, {"score-mix", required_argument, NULL, 1009},       \
        {"set-bias", no_argument, NULL, 1010}, {"bags", required_argument, NULL, 1011}

#define JSONL_TRAIN_USAGE                                                                         \
    "  --seed N          random seed (default 1); same data and seed, same model\n"               \
    "  --bits N          hash buckets 2^N (default 18)\n"                                         \
    "  --dim N           hidden units of the embedding bag, 0 = linear model (default 0)\n" \
    "  --epochs N        passes over the data (default 6)\n"                                      \
    "  --lr X            AdaGrad step of the linear weights (default 0.01)\n"                      \
    "  --lr-hidden X     AdaGrad step of the hidden layer (default 0.003)\n"                       \
    "  --l2 X            L2 penalty per update (default 1e-6)\n"                                  \
    "  --head-weight X   loss weight of per-backend heads vs the score (default 1)\n"             \
    "  --score KIND      what the score learns: advantage = (1 + q_strong - q_weak)/2\n"          \
    "                    (default), weak-fails = 1 - q_weak\n"                                    \
    "  --score-mix X     weight in [0,1] of the head difference (1 + p_strong - p_weak)/2\n"      \
    "                    in the score (default 0.75; 0: the learned score alone)\n"                    \
    "  --set-bias        learn a per-\"set\" offset while training, left out of the model:\n"  \
    "                    the weights learn what makes a prompt harder than others of its set\n" \
    "  --bags N          average N linear models trained on different shuffles (dim 0)\n"

/* Handles one of JSONL_TRAIN_LONGOPTS (opt is getopt's value). Returns 1 when
 * handled, 0 when opt is not a training option, -1 after reporting a bad value. */
int jsonl_train_opt(const char *cmd, int opt, const char *arg, struct router_train_opts *o,
                    unsigned *n_bits);

/* Parses a number into *out; returns 0, or -1 after reporting a bad value. */
int jsonl_parse_double(const char *cmd, const char *name, const char *arg, double lo, double hi,
                       double *out);

#endif
