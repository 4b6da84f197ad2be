#!/usr/bin/env bash
# The one command that runs every test of metal3-dataimage on a fresh machine:
# formatting, lints, a real Ironic + Redfish emulator on loopback, every cargo
# test (unit, integration, doc) and a benchmark smoke run. `.ci/run` runs this.
#
# Needs only what the machine ships (cargo, python3, kubectl); everything else
# (the Ironic venv) is installed by the project's own scripts and cached, and
# a few Debian tools (promtool, ISO readers) by apt-get when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s (%ss)\n' "$*" "$SECONDS"; }

ironic_log=$(mktemp -t metal3-dataimage-ironic-up.XXXXXX)
bench_log=$(mktemp -t metal3-dataimage-bench-ironic-up.XXXXXX)
# The reconciler benchmark's smoke run (benches/reconcile) needs 20 nodes of
# its own: a second environment in its own state directory.
export BENCH_IRONIC_STATE=${BENCH_IRONIC_STATE:-$(mktemp -d -t metal3-dataimage-bench-ironic.XXXXXX)}
cleanup() {
    status=$?
    if [ -n "${ironic_pid:-}" ]; then wait "$ironic_pid" 2>/dev/null || true; fi
    if [ -n "${bench_pid:-}" ]; then wait "$bench_pid" 2>/dev/null || true; fi
    bash tests/ironic/down.sh || true
    IRONIC_STATE_DIR=$BENCH_IRONIC_STATE bash tests/ironic/down.sh >/dev/null 2>&1 || true
    exit "$status"
}
trap cleanup EXIT

# Installing and starting Ironic is mostly download and Python start-up: run it
# beside the Rust build instead of after it. The benchmark's environment
# starts when the first is up (they share the cached venvs), and its 20 nodes
# are enrolled in batches (benches/reconcile/enroll.py), also in the
# background.
step "starting Ironic + sushy-tools in the background (logs: $ironic_log, $bench_log)"
bash tests/ironic/up.sh >"$ironic_log" 2>&1 &
ironic_pid=$!
(
    wait_for_first() { while kill -0 "$ironic_pid" 2>/dev/null; do sleep 2; done; }
    wait_for_first
    export IRONIC_STATE_DIR=$BENCH_IRONIC_STATE IRONIC_NODE_COUNT=20 \
        IRONIC_BASIC_NODE_COUNT=0 IRONIC_OLD_RELEASE_NODE_COUNT=0 IRONIC_ENROLL=0
    bash tests/ironic/up.sh
    # shellcheck disable=SC1091
    . "$BENCH_IRONIC_STATE/env"
    "${PYTHON:-python3}" benches/reconcile/enroll.py "$IRONIC_URL" "$SUSHY_URL" 20 10 600
) >"$bench_log" 2>&1 &
bench_pid=$!

# Debian tools some tests run, installed when missing:
# - promtool (package prometheus): tests/it/manifests.rs checks and tests the
#   monitoring component's alerts;
# - isoinfo/isovfy (genisoimage), xorriso, 7z (p7zip-full): tests/it/config_iso.rs
#   reads the configuration ISOs back with independent readers.
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v isoinfo >/dev/null 2>&1 || missing+=(genisoimage)
command -v xorriso >/dev/null 2>&1 || missing+=(xorriso)
command -v 7z >/dev/null 2>&1 || missing+=(p7zip-full)
if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]} (Debian packages)"
    sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "building tests"
cargo test --all-targets --no-run

step "waiting for Ironic"
if ! wait "$ironic_pid"; then
    ironic_pid=
    echo "tests/ironic/up.sh failed:" >&2
    tail -n 80 "$ironic_log" >&2
    exit 1
fi
ironic_pid=
tail -n 5 "$ironic_log"
set -a
# shellcheck disable=SC1091
. tests/ironic/.state/env
set +a

step "waiting for the benchmark's Ironic"
if ! wait "$bench_pid"; then
    bench_pid=
    echo "the benchmark's Ironic environment failed:" >&2
    tail -n 80 "$bench_log" >&2
    exit 1
fi
bench_pid=
tail -n 3 "$bench_log"

# --all-targets includes the benchmarks, whose test mode is their smoke run
# (`scripts/bench.sh --smoke`, `scripts/bench-reconcile.sh --smoke`): they
# judge correctness, never timing.
step "cargo test (unit, integration, benchmark smoke run)"
cargo test --all-targets

step "cargo test --doc"
cargo test --doc

step "all tests passed"
