#!/usr/bin/env bash
# tests/config_iso/venv.sh - print the path of a Python with pycdlib, the
# independent ISO 9660 reader that tests/it/config_iso.rs runs read_iso.py with.
#
# The venv is cached in ~/.cache/metal3-dataimage/pycdlib-venv-<key> (key:
# Python version + the pin below), shared by every clone; PYTHON picks the
# interpreter (python3). Idempotent; concurrent callers wait on a lock.
set -Eeuo pipefail
PYTHON=${PYTHON:-python3}
PIN="pycdlib==1.22.0"
key=$({ "$PYTHON" -V 2>&1; echo "$PIN"; } | sha256sum | cut -c1-16)
VENV=${XDG_CACHE_HOME:-$HOME/.cache}/metal3-dataimage/pycdlib-venv-$key
ready() { [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import pycdlib' 2>/dev/null; }
if ! ready; then
    mkdir -p "$(dirname "$VENV")"
    exec 8>"$VENV.lock"
    flock 8
    if ! ready; then
        rm -rf "$VENV"
        if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
            rm -rf "$VENV"
            "$PYTHON" -m venv --without-pip "$VENV"
            "$PYTHON" -m pip --python "$VENV/bin/python" install --disable-pip-version-check -q pip
        fi
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$PIN" >&2
    fi
    exec 8>&-
fi
echo "$VENV/bin/python"
