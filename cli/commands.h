/* commands.h - the table of `triage` subcommands. Add a line here and a cmd_*.c file. */
#ifndef TRIAGE_CLI_COMMANDS_H
#define TRIAGE_CLI_COMMANDS_H

#include "cli.h"

/* X(name, function, summary): one line per subcommand, in --help order. */
#define CLI_COMMANDS(X)                                                                           \
    X("version", cli_version, "print the version and exit")                                      \
    X("train", cli_train, "train a model from labelled JSONL")                                   \
    X("score", cli_score, "score JSONL prompts from stdin")                                      \
    X("eval", cli_eval, "routing quality of a model: APGR, CPT, AUC")                            \
    X("calibrate", cli_calibrate, "threshold for a target share of strong calls")                \
    X("replay", cli_replay, "serve recorded model answers as an offline OpenAI backend")       \
    X("demo", cli_demo, "GSM8K through triaged: cost and accuracy; --learn: learning curve")     \
    X("stats", cli_stats, "routing statistics from the outcome log")                             \
    X("export", cli_export, "the outcome log's labelled prompts as training JSONL")              \
    X("key", cli_key, "add, list, hash and remove client/admin API keys")                        \
    X("models", cli_models, "model versions: list, promote, roll back, add (the registry)")

#define CLI_DECLARE(name, fn, summary) cli_command_fn fn;
CLI_COMMANDS(CLI_DECLARE)
#undef CLI_DECLARE

#endif
