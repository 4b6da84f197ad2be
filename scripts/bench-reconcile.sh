#!/usr/bin/env bash
# The reconciler's fleet benchmark in one command: starts a real Ironic with
# N fake Redfish nodes (tests/ironic/, its own state directory), a stand-in
# Kubernetes API server holding N BareMetalHosts, and measures the real
# `metal3-dataimage reconcile` against a bare Ironic client (the floor) in
# the same run (see docs/bench.md).
#
#   scripts/bench-reconcile.sh                          N=100, release build
#   scripts/bench-reconcile.sh --hosts 100,1000 --faults all --output run.md
#   scripts/bench-reconcile.sh --ironic-state DIR --keep-ironic   reuse/keep Ironic
#   scripts/bench-reconcile.sh --smoke                  N=20, debug build (what CI runs)
#   scripts/bench-reconcile.sh --help                   every option
#
# Loopback only. Needs Linux (/proc), Python >= 3.11 for Ironic (the venv is
# built on first use by tests/ironic/up.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--smoke" ]]; then
    shift
    exec cargo test --bench reconcile -- --smoke "$@"
fi
exec cargo bench --bench reconcile -- "$@"
