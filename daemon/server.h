/* server.h - triaged's server: loads the config and model, runs the worker loops, handles signals.
 *
 * main.c builds one with daemon_server_create(), runs it with daemon_server_run()
 * (which returns after SIGTERM/SIGINT and a graceful drain), then destroys it. */
#ifndef TRIAGE_DAEMON_SERVER_H
#define TRIAGE_DAEMON_SERVER_H

#include <stddef.h>

struct conf;

struct daemon_server;

/* Loads the config at conf_path (borrowed) and its model, opens the outcome log,
 * binds the listening sockets and builds the workers. Returns NULL with a one-line
 * reason in err. One server per process. */
struct daemon_server *daemon_server_create(const char *conf_path, char *err, size_t errlen);

/* Checks that the config at conf_path loads and that everything it names loads
 * too (model, key files): what the server would refuse to start without. Returns
 * 0, or -1 with "file:line: message" or a one-line reason in err. */
int daemon_server_check(const char *conf_path, char *err, size_t errlen);

/* Returns the config the server was created with (borrowed, lives as long as s),
 * for wiring other modules at start; reloads do not change it. */
const struct conf *daemon_server_conf(const struct daemon_server *s);

/* Serves until SIGTERM or SIGINT, then stops accepting, lets in-flight requests
 * finish (up to shutdown_timeout_ms) and closes the outcome log. SIGHUP reloads.
 * Returns the process exit status (0 after a clean stop). */
int daemon_server_run(struct daemon_server *s);

/* Frees the server. NULL and half-built servers are fine. */
void daemon_server_destroy(struct daemon_server *s);

#endif
