/* headmap.h - the outcome log's backend names as head names, by [backend NAME] head of a config. */
#ifndef TRIAGE_CLI_HEADMAP_H
#define TRIAGE_CLI_HEADMAP_H

#include <jansson.h>

struct headmap;

/* Reads the [backend NAME] sections of the config at path (backend keys are not
 * resolved). Returns a new map, or NULL after reporting "triage <cmd>: ..." on stderr. */
struct headmap *headmap_load(const char *cmd, const char *path);

/* Returns the head that scores backend `name`: its configured head when name is a
 * backend of the config, else name itself (borrowed from the map or from name). A NULL
 * map maps every name to itself. */
const char *headmap_head(const struct headmap *m, const char *name);

/* Rewrites a training example (borrowed) from the outcome log in place: the keys of
 * "outcomes" (and "sources", "answer_signals") become head names. Backends sharing a head give it the
 * mean of their q and the best source (feedback, judge, offline). A backend the config
 * does not name keeps its name, with a warning on stderr the first time. NULL m: no-op. */
void headmap_apply(struct headmap *m, json_t *example);

/* Prints "triage <cmd>: CONF maps backends to heads: a -> x, ..." on stderr. */
void headmap_describe(const struct headmap *m, const char *cmd);

/* Frees m. NULL is fine. */
void headmap_destroy(struct headmap *m);

#endif
