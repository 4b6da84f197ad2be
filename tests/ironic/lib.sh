# shellcheck shell=bash
# Shared by up.sh, down.sh and ctl.sh (sourced, not executed).
#
# Layout (all git-ignored):
#   $VENV  (~/.cache/metal3-dataimage/ironic-venv-<key>, or $IRONIC_VENV)
#                                         cached venv + template sqlite DB
#                                         (requirements.txt, constraints.txt)
#   $OLD_VENV (~/.cache/metal3-dataimage/ironic-old-venv-<key>, or
#          $IRONIC_OLD_VENV)              the same for the old release
#                                         (old/requirements.txt, old/constraints.txt)
#   $STATE        (tests/ironic/.state)  config, env, pids/, log/, httproot/,
#                                         one directory per Ironic instance
# Services: http (Ironic's http_root), sushy (Redfish emulator, fake driver),
# and one all-in-one Ironic per instance: noauth, basic (http_basic),
# restart (for stop/start tests), old (Ironic 39 pinned to release 26.0 =
# API 1.91, for the "too old" refusal), oldrel (the old release itself,
# from $OLD_VENV: Ironic 26.1, whose GET vmedia takes an exclusive lock).

IRONIC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${IRONIC_STATE_DIR:-$IRONIC_DIR/.state}
PYTHON=${PYTHON:-python3}
# The venv is keyed on the Python version and the pins, and kept in the
# user's cache so every clone (and CI on the same machine) reuses it; a
# change of either file builds a new one.
venv_key() { # [PINS_DIR]
    local dir=${1:-$IRONIC_DIR}
    { "$PYTHON" -V 2>&1; cat "$dir/requirements.txt" "$dir/constraints.txt"; } |
        sha256sum | cut -c1-16
}
OLD_PINS=$IRONIC_DIR/old
if [[ -n "${IRONIC_VENV:-}" ]]; then
    VENV=$IRONIC_VENV
elif [[ -n "${XDG_CACHE_HOME:-}${HOME:-}" ]]; then
    VENV=${XDG_CACHE_HOME:-$HOME/.cache}/metal3-dataimage/ironic-venv-$(venv_key)
else
    VENV=$IRONIC_DIR/.venv
fi
if [[ -n "${IRONIC_OLD_VENV:-}" ]]; then
    OLD_VENV=$IRONIC_OLD_VENV
elif [[ -n "${XDG_CACHE_HOME:-}${HOME:-}" ]]; then
    OLD_VENV=${XDG_CACHE_HOME:-$HOME/.cache}/metal3-dataimage/ironic-old-venv-$(venv_key "$OLD_PINS")
else
    OLD_VENV=$IRONIC_DIR/.venv/old-release
fi
# The Ironic release a venv's pins install (ironic==X in requirements.txt).
pinned_release() { sed -n 's/^ironic==\([0-9.]*\).*/\1/p' "$1/requirements.txt"; }
HOST=127.0.0.1 # loopback only, deliberately not configurable
PIDS="$STATE/pids"
LOGS="$STATE/log"
CONFIG="$STATE/config"
ENV_FILE="$STATE/env"
LOCK_FILE="$STATE/.lock"
INSTANCES="noauth basic restart old oldrel"
EAGER_INSTANCES="noauth basic oldrel" # started by up.sh; the others by ctl.sh
# instance_venv INSTANCE: the venv whose Ironic the instance runs.
instance_venv() { if [[ "$1" == oldrel ]]; then printf '%s' "$OLD_VENV"; else printf '%s' "$VENV"; fi; }

log() { printf '[ironic %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# A pid file holds "PID STARTTIME" lines (first line: the service's main
# process). STARTTIME (field 22 of /proc/PID/stat) guards against
# signalling a recycled PID.
starttime() {
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    [[ "$1" != Z && "$1" != X ]] || return 1
    printf '%s\n' "${20}"
}
alive() { local st; st=$(starttime "$1") || return 1; [[ "$st" == "$2" ]]; }
record_pid() { # record_pid SERVICE PID...
    local name=$1 pid st
    shift
    for pid in "$@"; do
        st=$(starttime "$pid") || continue
        printf '%s %s\n' "$pid" "$st" >>"$PIDS/$name.pid"
    done
}
service_alive() {
    local f="$PIDS/$1.pid" pid st
    [[ -s "$f" ]] || return 1
    read -r pid st <"$f" || return 1
    alive "$pid" "$st"
}
first_pid() { local pid _; read -r pid _ <"$PIDS/$1.pid"; printf '%s' "$pid"; }

# stop_service SERVICE [TIMEOUT]: SIGTERM the recorded main process, wait,
# then SIGTERM/SIGKILL whatever recorded process is left. Only PIDs from
# the pid file whose start time still matches are signalled.
stop_service() {
    local name=$1 timeout=${2:-10} f="$PIDS/$1.pid" pid st entries=() e deadline sig any
    [[ -f "$f" ]] || return 0
    while read -r pid st; do
        [[ -n "${pid:-}" && -n "${st:-}" ]] && entries+=("$pid $st")
    done <"$f"
    if ((${#entries[@]})); then
        read -r pid st <<<"${entries[0]}"
        if alive "$pid" "$st"; then
            log "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
        fi
        deadline=$((SECONDS + timeout))
        for sig in WAIT TERM KILL; do
            while :; do
                any=0
                for e in "${entries[@]}"; do
                    read -r pid st <<<"$e"
                    if alive "$pid" "$st"; then any=1; fi
                done
                ((any)) || break
                [[ "$sig" == WAIT ]] && ((SECONDS < deadline)) || break
                sleep 0.2
            done
            ((any)) || break
            [[ "$sig" == WAIT ]] && continue
            for e in "${entries[@]}"; do
                read -r pid st <<<"$e"
                if alive "$pid" "$st"; then
                    log "SIG$sig $name pid $pid (still running)"
                    kill "-$sig" "$pid" 2>/dev/null || true
                fi
            done
            sleep 1
        done
        for e in "${entries[@]}"; do
            read -r pid st <<<"$e"
            if alive "$pid" "$st"; then
                log "WARNING: $name pid $pid is still alive"
                return 1
            fi
        done
    fi
    rm -f "$f"
}

helper() { "$VENV/bin/python" "$IRONIC_DIR/helper.py" "$@"; }

show_log_tail() {
    local f
    for f in "$@"; do
        if [[ -s "$f" ]]; then
            log "---- last lines of $f ----"
            tail -n 30 "$f" >&2 || true
        fi
    done
}

load_config() {
    [[ -f "$CONFIG" ]] || { log "ERROR: $CONFIG missing: run tests/ironic/up.sh first"; return 1; }
    # shellcheck disable=SC1090
    source "$CONFIG"
}

instance_port() { local v="PORT_$1"; printf '%s' "${!v}"; }
instance_nodes() { local v="NODES_$1"; printf '%s' "${!v}"; }
instance_url() { printf 'http://%s:%s' "$HOST" "$(instance_port "$1")"; }
instance_auth() { # prints user:password for the basic instance, nothing otherwise
    [[ "$1" == basic ]] && printf '%s:%s' "$BASIC_USER" "$BASIC_PASSWORD"
    return 0
}

# start_ironic INSTANCE: starts it (if not running) and records its PIDs.
# Does not wait; see wait_ironic.
start_ironic() {
    local inst=$1 dir="$STATE/$1"
    if service_alive "ironic-$inst"; then return 0; fi
    stop_service "ironic-$inst" 5 || true
    if [[ -n "$(helper port-in-use "$(instance_port "$inst")" && echo used)" ]]; then
        log "ERROR: port $(instance_port "$inst") for ironic-$inst is in use by a process this script did not start"
        return 1
    fi
    nohup "$(instance_venv "$inst")/bin/ironic" --config-file "$dir/ironic.conf" \
        >>"$LOGS/ironic-$inst.stdout" 2>&1 </dev/null 9>&- &
    record_pid "ironic-$inst" $!
}

# wait_ironic INSTANCE TIMEOUT: until the conductor has registered the
# redfish driver, then records the forked worker PID(s) too.
wait_ironic() {
    local inst=$1 timeout=$2 pid
    pid=$(first_pid "ironic-$inst")
    if ! IRONIC_BASIC_AUTH=$(instance_auth "$inst") \
        helper wait-url "$(instance_url "$inst")/v1/drivers" "$timeout" '"redfish"' "$pid"; then
        log "ERROR: ironic-$inst did not come up"
        show_log_tail "$LOGS/ironic-$inst.stdout" "$LOGS/ironic-$inst.log"
        return 1
    fi
    # shellcheck disable=SC2046
    record_pid "ironic-$inst" $(helper children "$pid")
}

# enroll INSTANCE TIMEOUT: brings the instance's nodes to active.
enroll() {
    local inst=$1 timeout=$2 n
    n=$(instance_nodes "$inst")
    ((n > 0)) || return 0
    if ! IRONIC_BASIC_AUTH=$(instance_auth "$inst") helper enroll \
        "$(instance_url "$inst")" "http://$HOST:$SUSHY_PORT" "$inst" "$n" "$timeout" >/dev/null; then
        log "ERROR: enrolling/adopting the nodes of ironic-$inst failed"
        show_log_tail "$LOGS/ironic-$inst.log" "$LOGS/sushy.log"
        return 1
    fi
}

# with_lock CMD...: serialises concurrent up/ctl invocations (tests call
# ctl.sh in parallel).
# Services must be started with 9>&- so they do not inherit (and hold) it.
with_lock() {
    if [[ "${IRONIC_LOCK_HELD:-}" != 1 ]]; then
        mkdir -p "$STATE"
        exec 9>"$LOCK_FILE"
        flock 9
        export IRONIC_LOCK_HELD=1
    fi
    "$@"
}
