#!/usr/bin/env bash
# tests/ironic/up.sh - start a real OpenStack Ironic test environment on
# 127.0.0.1 and write tests/ironic/.state/env for the Rust tests.
#
#  * installs the pinned Ironic + sushy-tools (requirements.txt +
#    constraints.txt, PyPI wheels) into a cached venv
#    (~/.cache/metal3-dataimage/ironic-venv-<hash of Python version + pins>,
#    or $IRONIC_VENV), shared by every clone; new pins build a new one;
#    and, in parallel, the old Ironic release (old/requirements.txt +
#    old/constraints.txt) into ~/.cache/metal3-dataimage/ironic-old-venv-<hash>
#    (or $IRONIC_OLD_VENV);
#  * starts python http.server for Ironic's http_root, the sushy-tools
#    Redfish emulator in fake mode, and all-in-one Ironic processes (sqlite,
#    rpc_transport=none, redfish hardware type):
#      noauth  IRONIC_URL        IRONIC_NODE_COUNT nodes (default 18)
#      basic   IRONIC_BASIC_URL  http_basic auth, IRONIC_BASIC_NODE_COUNT (2)
#      restart IRONIC_RESTART_URL  4 nodes, started/stopped by ctl.sh
#      old     IRONIC_OLD_URL    Ironic 39 pinned to release 26.0 (API max
#                                1.91), ctl.sh
#      oldrel  IRONIC_OLD_RELEASE_URL  the old release itself (Ironic 26.1,
#              IRONIC_OLD_RELEASE_VERSION), IRONIC_OLD_RELEASE_NODE_COUNT (6)
#  * enrolls the nodes and brings them to `active` (manage + adopt).
#
# Idempotent: when everything it started is still running it only rewrites
# the env file. Stop with tests/ironic/down.sh.
#
# Environment: IRONIC_NODE_COUNT (18), IRONIC_BASIC_NODE_COUNT (2),
# IRONIC_OLD_RELEASE_NODE_COUNT (6), IRONIC_OLD_VENV,
# IRONIC_UP_TIMEOUT (180 s), PYTHON (python3, >= 3.11), IRONIC_VENV,
# IRONIC_STATE_DIR, IRONIC_DEBUG (false), IRONIC_ENROLL (1; 0: create the
# fake systems but enroll no node: benches/reconcile enrolls its many nodes
# in batches itself).
set -Eeuo pipefail
# shellcheck source=tests/ironic/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODE_COUNT=${IRONIC_NODE_COUNT:-18}
BASIC_NODE_COUNT=${IRONIC_BASIC_NODE_COUNT:-2}
OLDREL_NODE_COUNT=${IRONIC_OLD_RELEASE_NODE_COUNT:-6}
TIMEOUT=${IRONIC_UP_TIMEOUT:-180}
DEBUG=${IRONIC_DEBUG:-false}
T0=$SECONDS
STARTED=0

die() {
    log "ERROR: $*"
    if ((STARTED)); then
        show_log_tail "$LOGS/http.log" "$LOGS/sushy.log"
        log "stopping what was started (logs kept in $LOGS)"
        "$IRONIC_DIR/down.sh" >/dev/null 2>&1 || true
    fi
    exit 1
}
trap 'die "failed at line $LINENO: $BASH_COMMAND"' ERR

[[ "$NODE_COUNT" =~ ^[0-9]+$ ]] || die "IRONIC_NODE_COUNT must be a number"
[[ "$BASIC_NODE_COUNT" =~ ^[0-9]+$ ]] || die "IRONIC_BASIC_NODE_COUNT must be a number"
[[ "$OLDREL_NODE_COUNT" =~ ^[0-9]+$ ]] || die "IRONIC_OLD_RELEASE_NODE_COUNT must be a number"

# ------------------------------------------------------------------ venv
ensure_venv() { # [VENV PINS_DIR]: the main venv by default
    local VENV=${1:-$VENV} pins=${2:-$IRONIC_DIR}
    local key marker="$VENV/.cache-key" t
    command -v "$PYTHON" >/dev/null 2>&1 || die "no $PYTHON on PATH (set PYTHON=...)"
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' ||
        die "Ironic 39 needs Python >= 3.11 ($PYTHON is $("$PYTHON" -V 2>&1))"
    key=$(venv_key "$pins")
    venv_ready() { [[ -f "$marker" && "$(cat "$marker")" == "$key" && -x "$VENV/bin/ironic" && -f "$VENV/ironic-template.sqlite" ]]; }
    venv_ready && return 0
    # Another clone may be building the same cached venv.
    mkdir -p "$(dirname "$VENV")"
    exec 8>"$VENV.lock"
    flock 8
    if venv_ready; then exec 8>&-; return 0; fi
    t=$SECONDS
    log "creating venv $VENV (pins changed or first run; about 30 s)"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
        # Debian without python3-venv has no ensurepip
        rm -rf "$VENV"
        "$PYTHON" -m venv --without-pip "$VENV" &&
            "$PYTHON" -m pip --python "$VENV/bin/python" install --disable-pip-version-check -q pip ||
            die "cannot create a venv: apt-get install -y python3-venv, or set PYTHON=..."
    fi
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
        -c "$pins/constraints.txt" -r "$pins/requirements.txt" ||
        die "pip install failed"
    # An empty, migrated Ironic database to copy for every instance: saves
    # running ironic-dbsync (a few seconds each) on every start.
    local tmp
    tmp=$(mktemp -d)
    printf '[database]\nconnection = sqlite:///%s/template.sqlite\n' "$tmp" >"$tmp/dbsync.conf"
    "$VENV/bin/ironic-dbsync" --config-file "$tmp/dbsync.conf" create_schema >"$tmp/dbsync.log" 2>&1 ||
        { cat "$tmp/dbsync.log" >&2; die "ironic-dbsync create_schema failed"; }
    mv "$tmp/template.sqlite" "$VENV/ironic-template.sqlite"
    rm -rf "$tmp"
    printf '%s\n' "$key" >"$marker"
    exec 8>&-
    log "venv ready in $((SECONDS - t)) s ($(du -sh "$VENV" | cut -f1))"
}

# Both venvs at once (mostly download): the old release's in a subshell.
ensure_venvs() {
    local old rc=0
    ensure_venv "$OLD_VENV" "$OLD_PINS" &
    old=$!
    ensure_venv || rc=1
    wait "$old" || die "the venv of the old Ironic release ($(pinned_release "$OLD_PINS")) failed"
    ((rc == 0)) || die "the Ironic venv failed"
}

# ------------------------------------------------------------------ config
write_instance_conf() { # INSTANCE
    local inst=$1 dir="$STATE/$1" auth="auth_strategy = noauth" pin=""
    mkdir -p "$dir/tmp" "$dir/iso-cache"
    if [[ "$inst" == basic ]]; then
        helper htpasswd "$dir/htpasswd" "$BASIC_USER" "$BASIC_PASSWORD"
        auth="auth_strategy = http_basic
http_basic_auth_user_file = $dir/htpasswd"
    fi
    # Ironic 26.0 predates GET /v1/nodes/{node}/vmedia (1.93): the pin makes
    # this instance advertise and accept at most API 1.91.
    [[ "$inst" == old ]] && pin="pin_release_version = 26.0"
    cp "$(instance_venv "$inst")/ironic-template.sqlite" "$dir/ironic.sqlite"
    cat >"$dir/ironic.conf" <<EOF
# generated by tests/ironic/up.sh - loopback-only all-in-one Ironic ($inst,
# $(pinned_release "$([[ "$inst" == oldrel ]] && echo "$OLD_PINS" || echo "$IRONIC_DIR")"))
[DEFAULT]
$auth
$pin
debug = $DEBUG
host = ironic-$inst
my_ip = $HOST
rpc_transport = none
use_stderr = false
log_file = $LOGS/ironic-$inst.log
tempdir = $dir/tmp
hash_ring_algorithm = sha256
enabled_hardware_types = redfish,fake-hardware
enabled_bios_interfaces = no-bios,fake,redfish
enabled_boot_interfaces = redfish-virtual-media,fake
enabled_console_interfaces = no-console,fake
enabled_deploy_interfaces = direct,ramdisk,fake
enabled_firmware_interfaces = no-firmware,fake,redfish
enabled_inspect_interfaces = no-inspect,fake,redfish
enabled_management_interfaces = redfish,fake,noop
enabled_network_interfaces = noop
default_network_interface = noop
enabled_power_interfaces = redfish,fake
enabled_raid_interfaces = no-raid,fake,redfish
enabled_rescue_interfaces = no-rescue,fake
enabled_storage_interfaces = noop,fake
enabled_vendor_interfaces = no-vendor,fake,redfish

[api]
host_ip = $HOST
port = $(instance_port "$inst")
public_endpoint = $(instance_url "$inst")

[conductor]
automated_clean = false
graceful_shutdown_timeout = 5

[database]
connection = sqlite:///$dir/ironic.sqlite
sqlite_synchronous = false

[deploy]
http_root = $STATE/httproot
http_url = http://$HOST:$HTTP_PORT
iso_master_path = $dir/iso-cache

[dhcp]
dhcp_provider = none

[redfish]
use_swift = false
EOF
}

write_env() {
    local tmp="$ENV_FILE.tmp"
    {
        echo "# generated by tests/ironic/up.sh; shell KEY=value lines (source with set -a)"
        echo "IRONIC_URL=$(instance_url noauth)"
        echo "IRONIC_NODES='$(helper node-uuids noauth "$NODES_noauth")'"
        echo "IRONIC_BASIC_URL=$(instance_url basic)"
        echo "IRONIC_BASIC_USER=$BASIC_USER"
        echo "IRONIC_BASIC_PASSWORD=$BASIC_PASSWORD"
        echo "IRONIC_BASIC_PASSWORD_FILE=$STATE/basic-password"
        echo "IRONIC_BASIC_NODES='$(helper node-uuids basic "$NODES_basic")'"
        echo "IRONIC_RESTART_URL=$(instance_url restart)"
        echo "IRONIC_RESTART_NODES='$(helper node-uuids restart "$NODES_restart")'"
        echo "IRONIC_OLD_URL=$(instance_url old)"
        echo "IRONIC_VERSION=$(pinned_release "$IRONIC_DIR")"
        echo "IRONIC_OLD_RELEASE_URL=$(instance_url oldrel)"
        echo "IRONIC_OLD_RELEASE_NODES='$(helper node-uuids oldrel "$NODES_oldrel")'"
        echo "IRONIC_OLD_RELEASE_VERSION=$(pinned_release "$OLD_PINS")"
        echo "SUSHY_URL=http://$HOST:$SUSHY_PORT"
        echo "IRONIC_HTTP_URL=http://$HOST:$HTTP_PORT"
        echo "IRONIC_HTTP_ROOT=$STATE/httproot"
        echo "IRONIC_CTL=$IRONIC_DIR/ctl.sh"
        echo "IRONIC_STATE_DIR=$STATE"
        echo "IRONIC_LOG_DIR=$LOGS"
    } >"$tmp"
    mv "$tmp" "$ENV_FILE"
}

all_eager_alive() {
    local inst
    service_alive http && service_alive sushy || return 1
    for inst in $EAGER_INSTANCES; do service_alive "ironic-$inst" || return 1; done
}

main() {
    ensure_venvs
    if [[ -f "$CONFIG" ]] && all_eager_alive; then
        load_config
        if [[ "$NODES_noauth" == "$NODE_COUNT" && "$NODES_basic" == "$BASIC_NODE_COUNT" &&
            "${NODES_oldrel:-}" == "$OLDREL_NODE_COUNT" ]]; then
            write_env
            log "already running; env rewritten: $ENV_FILE"
            return 0
        fi
        log "running with $NODES_noauth+$NODES_basic+${NODES_oldrel:-0} nodes, $NODE_COUNT+$BASIC_NODE_COUNT+$OLDREL_NODE_COUNT wanted: restarting"
    fi
    if ls "$PIDS"/*.pid >/dev/null 2>&1; then
        log "stale or partial environment: stopping what is left first"
        "$IRONIC_DIR/down.sh" || die "could not stop the previous environment"
    fi

    # Fresh state every start (databases, emulator, published images).
    local keep_logs=""
    [[ -d "$LOGS" ]] && keep_logs=1
    rm -rf "$STATE/httproot" "$STATE/sushy-state" "$STATE/pids" "$STATE/env" "$CONFIG"
    local inst
    for inst in $INSTANCES; do rm -rf "${STATE:?}/$inst"; done
    if [[ -n "$keep_logs" ]]; then
        rm -rf "$LOGS/prev" && mkdir -p "$LOGS/prev" && mv "$LOGS"/*.* "$LOGS/prev/" 2>/dev/null || true
    fi
    # httproot/redfish made here: Ironic's ImagePublisher.publish checks
    # os.path.exists, then os.mkdir, so two first attaches published at once
    # race, and the loser's attach fails with FileExistsError (seen in the
    # benchmark smoke's floor: 16 concurrent POST vmedia on a fresh state).
    mkdir -p "$PIDS" "$LOGS" "$STATE/httproot/redfish"

    local ports
    read -r -a ports <<<"$(helper free-ports 7)"
    BASIC_USER=metal3
    BASIC_PASSWORD=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(18))')
    (umask 077 && printf '%s' "$BASIC_PASSWORD" >"$STATE/basic-password")
    cat >"$CONFIG" <<EOF
SUSHY_PORT=${ports[0]}
HTTP_PORT=${ports[1]}
PORT_noauth=${ports[2]}
PORT_basic=${ports[3]}
PORT_restart=${ports[4]}
PORT_old=${ports[5]}
PORT_oldrel=${ports[6]}
NODES_noauth=$NODE_COUNT
NODES_basic=$BASIC_NODE_COUNT
NODES_restart=4
NODES_old=0
NODES_oldrel=$OLDREL_NODE_COUNT
BASIC_USER=$BASIC_USER
BASIC_PASSWORD=$BASIC_PASSWORD
EOF
    load_config
    for inst in $INSTANCES; do write_instance_conf "$inst"; done
    helper sushy-conf "$STATE/sushy.conf" "$STATE" "$SUSHY_PORT" \
        "noauth=$NODES_noauth" "basic=$NODES_basic" "restart=$NODES_restart" "oldrel=$NODES_oldrel"

    log "starting http_root server, sushy-emulator and ironic ($EAGER_INSTANCES) on $HOST"
    export PYTHONUNBUFFERED=1
    STARTED=1
    nohup "$VENV/bin/python" -m http.server --bind "$HOST" --directory "$STATE/httproot" "$HTTP_PORT" \
        >"$LOGS/http.log" 2>&1 </dev/null 9>&- &
    record_pid http $!
    # no --debug: it enables Flask's reloader, which forks a second process
    nohup "$VENV/bin/sushy-emulator" --config "$STATE/sushy.conf" >"$LOGS/sushy.log" 2>&1 </dev/null 9>&- &
    record_pid sushy $!
    for inst in $EAGER_INSTANCES; do start_ironic "$inst"; done

    helper wait-url "http://$HOST:$HTTP_PORT/" 30 "" "$(first_pid http)" || die "http server did not come up"
    helper wait-url "http://$HOST:$SUSHY_PORT/redfish/v1/Systems" 60 "" "$(first_pid sushy)" ||
        die "sushy-emulator did not come up"
    for inst in $EAGER_INSTANCES; do wait_ironic "$inst" "$TIMEOUT" || die "ironic-$inst did not come up"; done
    log "services up after $((SECONDS - T0)) s; enrolling nodes (manage + adopt to active)"

    local pids=() rc=0 pid
    for inst in $EAGER_INSTANCES; do
        [[ "${IRONIC_ENROLL:-1}" == 0 ]] && continue
        enroll "$inst" "$TIMEOUT" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    ((rc == 0)) || die "node enrollment failed"

    write_env
    log "ready in $((SECONDS - T0)) s: $NODES_noauth node(s) on $(instance_url noauth), $NODES_basic on $(instance_url basic) (basic auth), $NODES_oldrel on $(instance_url oldrel) (Ironic $(pinned_release "$OLD_PINS")); env: $ENV_FILE"
}

with_lock main
