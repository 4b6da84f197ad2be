#!/usr/bin/env bash
# The admission benchmark in one command: builds release, starts the real
# `metal3-dataimage serve` and a bare axum + rustls baseline, drives both with
# the same HTTPS load and prints the comparison table (see docs/bench.md).
#
#   scripts/bench.sh                   full run (~3 minutes after the build)
#   scripts/bench.sh --output FILE     also write the report to FILE
#   scripts/bench.sh --smoke           short functional check (debug build, seconds)
#   scripts/bench.sh --help            every option
#
# Loopback only. Needs Linux (/proc) and, for CPU pinning, taskset.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--smoke" ]]; then
    shift
    # Debug artifacts (what `cargo test` already built); no release build in CI.
    exec cargo test --bench admission -- --smoke "$@"
fi
exec cargo bench --bench admission -- "$@"
