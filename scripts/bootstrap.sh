#!/usr/bin/env bash
# Creates .venv with Python 3.10 and installs the locked dependency set plus this project.
#
# Idempotent: a stamp file records the hash of requirements.lock and pyproject.toml; when it
# matches, nothing is reinstalled. Delete .venv (or change the lock) to force a reinstall.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
STAMP="$VENV/.tfx-edge-installed"
want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  echo "bootstrap: $VENV is up to date with requirements.lock (nothing to install)"
  exit 0
fi

py="$(bash scripts/find_python310.sh)"
echo "bootstrap: using $py ($("$py" --version 2>&1))"
start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  "$py" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24" wheel "setuptools>=69"
# The lock is the whole resolved set: every fresh install gets exactly these versions.
"$VENV/bin/python" -m pip install --quiet -r requirements.lock
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
"$VENV/bin/python" -m pip check
echo "$want" > "$STAMP"
echo "bootstrap: installed in $(( $(date +%s) - start ))s"
