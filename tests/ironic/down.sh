#!/usr/bin/env bash
# tests/ironic/down.sh - stop exactly the processes tests/ironic/up.sh (and
# ctl.sh) started: the PIDs recorded in .state/pids, checked against their
# /proc start time; SIGTERM, then SIGKILL after IRONIC_STOP_TIMEOUT (10 s).
# Idempotent: exits 0 when nothing is running. State and logs are kept.
set -Euo pipefail
# shellcheck source=tests/ironic/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
STOP_TIMEOUT=${IRONIC_STOP_TIMEOUT:-10}

main() {
    local rc=0 svc inst pids=() pid
    if ! ls "$PIDS"/*.pid >/dev/null 2>&1; then
        log "nothing recorded in $PIDS; nothing to stop"
        return 0
    fi
    # Ironic first (in parallel), so it stops using the emulator and http_root.
    for inst in $INSTANCES; do
        stop_service "ironic-$inst" "$STOP_TIMEOUT" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    for svc in sushy http; do stop_service "$svc" "$STOP_TIMEOUT" || rc=1; done
    rm -f "$ENV_FILE"
    ((rc == 0)) && log "stopped (logs kept in $LOGS)"
    return "$rc"
}

with_lock main
