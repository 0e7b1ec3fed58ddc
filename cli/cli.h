/* cli.h - the `triage` command-line tool's subcommands, one function each. */
#ifndef TRIAGE_CLI_H
#define TRIAGE_CLI_H

/* Each subcommand gets argv with argv[0] = its own name and returns the process
 * exit status: 0 on success, 1 on a failure it reported, 2 on a usage error. */
typedef int cli_command_fn(int argc, char **argv);

struct cli_command {
    const char *name;
    const char *summary; /* one line for `triage --help` */
    cli_command_fn *run;
};

/* Prints "triage <cmd>: " and the formatted message to stderr. */
void cli_errorf(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A progress bar on stderr, drawn only when stderr is a terminal. */
struct cli_progress {
    const char *label;
    unsigned long total;
    unsigned long done;
    int enabled;
    int last_permille;
};

/* Starts a bar for total steps labelled label (borrowed). */
void cli_progress_start(struct cli_progress *p, const char *label, unsigned long total);

/* Advances the bar to done steps, redrawing at most every 0.1%. */
void cli_progress_update(struct cli_progress *p, unsigned long done);

/* Finishes the bar and moves to a new line. */
void cli_progress_end(struct cli_progress *p);

/* `triage demo --learn` (demo_learn.c): cmd_demo.c hands it the whole argv. */
int cli_demo_learn(int argc, char **argv);

#endif
