#!/usr/bin/env bash
# Creates a venv with Python 3.10 and installs a locked dependency set (and this project).
#
#   VENV=.venv       LOCK=requirements.lock                      (default: the project's venv)
#   VENV=.venv-tools LOCK=requirements-tools.lock PROJECT=0      (the k8s linters, `make tools`)
#
# Idempotent: a stamp in the venv records the hash of the lock (and of pyproject.toml when the
# project is installed); when it matches, nothing is reinstalled. Delete the venv (or change the
# lock) to force a reinstall.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
LOCK="${LOCK:-requirements.lock}"
PROJECT="${PROJECT:-1}"
STAMP="$VENV/.tfx-edge-installed"
inputs=("$LOCK")
[ "$PROJECT" = 1 ] && inputs+=(pyproject.toml)
want="$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  echo "bootstrap: $VENV is up to date with $LOCK (nothing to install)"
  exit 0
fi

py="$(bash scripts/find_python310.sh)"
echo "bootstrap: using $py ($("$py" --version 2>&1)) for $VENV"
start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  "$py" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24"
# The lock is the whole resolved set: every fresh install gets exactly these versions.
"$VENV/bin/python" -m pip install --quiet -r "$LOCK"
if [ "$PROJECT" = 1 ]; then
  # The editable install builds with the venv's own setuptools (no download at build time).
  "$VENV/bin/python" -m pip install --quiet wheel==0.48.0 setuptools==84.2.1
  "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
fi
"$VENV/bin/python" -m pip check
echo "$want" > "$STAMP"
echo "bootstrap: installed $VENV in $(( $(date +%s) - start ))s"
