#!/usr/bin/env bash
# tests/ironic/ctl.sh - control the environment started by tests/ironic/up.sh
# from tests.
#
#   ctl.sh start-api INSTANCE     start Ironic INSTANCE (restart|old|oldrel|noauth|basic)
#                                 if it is not running; waits until it serves
#                                 requests and its nodes are active
#   ctl.sh stop-api INSTANCE      stop Ironic INSTANCE (API and conductor: it
#                                 is one process); its database is kept
#   ctl.sh status                 which services are running
#   ctl.sh lock-node INSTANCE NODE [HOLDER]   set the node's reservation, as
#                                 another conductor's running operation does
#                                 (exclusive calls then get HTTP 409)
#   ctl.sh unlock-node INSTANCE NODE
#   ctl.sh set-fault INSTANCE NODE FAULT      e.g. "power failure" (with
#                                 maintenance on, vmedia calls get HTTP 503)
#   ctl.sh clear-fault INSTANCE NODE
#
# Stopping noauth or basic affects every test using them: tests that stop
# Ironic use the `restart` instance (IRONIC_RESTART_URL, IRONIC_RESTART_NODES).
set -Eeuo pipefail
# shellcheck source=tests/ironic/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TIMEOUT=${IRONIC_UP_TIMEOUT:-180}

usage() { sed -n '2,20p' "$0" >&2; exit 2; }

check_instance() {
    [[ " $INSTANCES " == *" ${1:-} "* ]] || { log "ERROR: unknown instance '${1:-}' (one of: $INSTANCES)"; exit 2; }
}

main() {
    local cmd=${1:-} inst=${2:-}
    load_config || exit 1
    case "$cmd" in
    start-api)
        check_instance "$inst"
        if service_alive "ironic-$inst"; then
            log "ironic-$inst already running"
        else
            log "starting ironic-$inst on $(instance_url "$inst")"
            start_ironic "$inst"
        fi
        wait_ironic "$inst" "$TIMEOUT"
        enroll "$inst" "$TIMEOUT"
        log "ironic-$inst ready"
        ;;
    stop-api)
        check_instance "$inst"
        stop_service "ironic-$inst" "${IRONIC_STOP_TIMEOUT:-10}"
        ;;
    status)
        local svc
        for svc in http sushy $(printf 'ironic-%s ' $INSTANCES); do
            if service_alive "$svc"; then echo "$svc running (pid $(first_pid "$svc"))"; else echo "$svc stopped"; fi
        done
        ;;
    lock-node)
        check_instance "$inst"; [[ -n "${3:-}" ]] || usage
        helper lock-node "$STATE/$inst/ironic.sqlite" "$3" "${4:-other-conductor}"
        ;;
    unlock-node)
        check_instance "$inst"; [[ -n "${3:-}" ]] || usage
        helper unlock-node "$STATE/$inst/ironic.sqlite" "$3"
        ;;
    set-fault)
        check_instance "$inst"; [[ -n "${3:-}" && -n "${4:-}" ]] || usage
        helper set-fault "$STATE/$inst/ironic.sqlite" "$3" "$4"
        ;;
    clear-fault)
        check_instance "$inst"; [[ -n "${3:-}" ]] || usage
        helper clear-fault "$STATE/$inst/ironic.sqlite" "$3"
        ;;
    *) usage ;;
    esac
}

case "${1:-}" in
# database edits need no lock; start/stop are serialised
lock-node | unlock-node | set-fault | clear-fault | status) main "$@" ;;
*) with_lock main "$@" ;;
esac
