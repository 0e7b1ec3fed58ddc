/* main.c - the `triage` command-line tool: dispatches to one subcommand. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "commands.h"

static const struct cli_command commands[] = {
#define CLI_ENTRY(name, fn, summary) {name, summary, fn},
    CLI_COMMANDS(CLI_ENTRY)
#undef CLI_ENTRY
};

static void
usage(FILE *f)
{
    fprintf(f, "usage: triage <command> [options]   (triage <command> --help for more)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int
cli_version(int argc, char **argv)
{
    printf("triage %s\n", TRIAGE_VERSION);
    return 0;
}

void
cli_errorf(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "triage %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void
cli_progress_start(struct cli_progress *p, const char *label, unsigned long total)
{
    p->label = label;
    p->total = total ? total : 1;
    p->done = 0;
    p->enabled = isatty(STDERR_FILENO);
    p->last_permille = -1;
    cli_progress_update(p, 0);
}

void
cli_progress_update(struct cli_progress *p, unsigned long done)
{
    enum { WIDTH = 40 };
    char bar[WIDTH + 1];

    p->done = done;
    if (!p->enabled)
        return;
    int permille = (int)(done * 1000 / p->total);
    if (permille > 1000)
        permille = 1000;
    if (permille == p->last_permille)
        return;
    p->last_permille = permille;
    int fill = permille * WIDTH / 1000;
    memset(bar, '#', (size_t)fill);
    memset(bar + fill, '.', (size_t)(WIDTH - fill));
    bar[WIDTH] = '\0';
    fprintf(stderr, "\r%-12s [%s] %5.1f%% (%lu/%lu)", p->label, bar, permille / 10.0, done,
            p->total);
    fflush(stderr);
}

void
cli_progress_end(struct cli_progress *p)
{
    if (!p->enabled)
        return;
    cli_progress_update(p, p->total);
    fputc('\n', stderr);
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version"))
        return cli_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "triage: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
