/* ops.h - the ops room's boundary: what an operator watches.
 *
 * The one header code outside daemon/ops/ includes: metrics.h (Prometheus counters,
 * gauges and histograms for GET /metrics) and dashboard.h (the web dashboard's files,
 * built into the binary). Both plug into the server through hooks.h only: main.c
 * registers their handlers and subscribes to request events before the server runs. */
#ifndef TRIAGE_OPS_H
#define TRIAGE_OPS_H

#include "dashboard.h"
#include "metrics.h"

#endif
