/* inproc.h - a real triaged server in the fuzz target's own process, for the targets
 * that fuzz it over loopback (fuzz_http: the client's bytes; fuzz_relay: the backend's):
 * its folder, its thread, a graceful stop at exit, and the checks every input ends with.
 * One server per process. */
#ifndef TRIAGE_FUZZ_INPROC_H
#define TRIAGE_FUZZ_INPROC_H

#include <stddef.h>

/* Ignores SIGPIPE, removes the folders that crashed runs of target name ("http") left,
 * and makes a fresh /tmp/fuzz-NAME-PID-XXXXXX. Returns its path (static; inproc_stop
 * removes it). Call it first, on the thread that will stop the server. */
const char *inproc_begin(const char *name);

/* Creates the server from the config file at conf; aborts saying why when it cannot.
 * What the target attaches to it (/metrics) goes between this and inproc_run. */
void inproc_create(const char *conf);

/* Runs the server on a thread of its own, then waits until GET /healthz on port
 * answers 200 (5 s at most, else aborts). */
void inproc_run(unsigned port);

/* For the target's exit handler: SIGTERM to the server (it drains and returns), then
 * joins and destroys it and removes the folder. Returns 0, or -1 (nothing done) on any
 * other thread than inproc_begin's: exit() from a server thread cannot join it. */
int inproc_stop(void);

/* Sends the len bytes of req on a new connection to the server and reads until it
 * closes (cap_ms at most). Returns the answer's status (0: none came); aborts when the
 * answer does not start with "HTTP/1.". */
int inproc_exchange(const char *req, size_t len, double cap_ms);

/* After an input: waits until no request and no backend call is in flight (cap_ms at
 * most), then for a 200 to GET /healthz on a new connection (2 s at most). Aborts
 * saying which failed, or when daemon_server_run() has returned. */
void inproc_settle(int cap_ms);

/* Prints "fuzz_NAME: why" and aborts. */
void inproc_die(const char *why);

#endif
