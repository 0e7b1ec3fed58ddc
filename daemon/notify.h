/* notify.h - systemd readiness and watchdog notifications, speaking sd_notify's datagram protocol.
 *
 * Self-contained (no libsystemd): a no-op when $NOTIFY_SOCKET is not set, so the
 * same binary runs under systemd, in a container or from a shell. */
#ifndef TRIAGE_DAEMON_NOTIFY_H
#define TRIAGE_DAEMON_NOTIFY_H

#include <stdint.h>

/* Sends state ("READY=1", "RELOADING=1", "STOPPING=1", "WATCHDOG=1") to the
 * service manager. Returns 1 sent, 0 not under systemd, -errno on failure. */
int notify_send(const char *state);

/* Returns the watchdog interval in microseconds from $WATCHDOG_USEC when it is
 * meant for this process ($WATCHDOG_PID unset or ours), else 0. */
uint64_t notify_watchdog_usec(void);

#endif
