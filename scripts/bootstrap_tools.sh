#!/usr/bin/env bash
# Creates .venv-tools with the locked linters/validators (checkov, hadolint, kubernetes-validate)
# that the k8s tests run. Idempotent like bootstrap.sh: a stamp records the lock's hash.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${TOOLS_VENV:-.venv-tools}"
STAMP="$VENV/.tfx-edge-tools-installed"
want="$(sha256sum requirements-tools.lock | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/checkov" ]; then
  echo "bootstrap-tools: $VENV is up to date with requirements-tools.lock (nothing to install)"
  exit 0
fi
py="$(bash scripts/find_python310.sh)"
[ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24"
"$VENV/bin/python" -m pip install --quiet -r requirements-tools.lock
echo "$want" > "$STAMP"
echo "bootstrap-tools: installed $VENV"
