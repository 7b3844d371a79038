#!/usr/bin/env bash
# Prints the path of a working Python 3.10 interpreter, or explains how to get one and exits 1.
#
# Looks, in order, at: $PYTHON (if set), `python3.10` on PATH, the interpreters pyenv manages
# ($(pyenv root)/versions/3.10.*, or ~/.pyenv when pyenv itself is not on PATH), and
# `uv python find 3.10`. Each candidate is run once, because a pyenv shim can exist on PATH and
# still fail when 3.10 is not the selected version.
set -u

is_py310() {
  [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1
}

candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
command -v python3.10 >/dev/null 2>&1 && candidates+=("$(command -v python3.10)")

pyenv_root="${PYENV_ROOT:-}"
if [ -z "$pyenv_root" ] && command -v pyenv >/dev/null 2>&1; then
  pyenv_root="$(pyenv root 2>/dev/null)"
fi
[ -z "$pyenv_root" ] && pyenv_root="$HOME/.pyenv"
if [ -d "$pyenv_root/versions" ]; then
  # Newest patch release first.
  while IFS= read -r dir; do
    candidates+=("$dir/bin/python")
  done < <(ls -d "$pyenv_root"/versions/3.10.* 2>/dev/null | sort -V -r)
fi

if command -v uv >/dev/null 2>&1; then
  uv_py="$(uv python find 3.10 2>/dev/null)" && candidates+=("$uv_py")
fi

for c in "${candidates[@]}"; do
  if is_py310 "$c"; then
    echo "$c"
    exit 0
  fi
done

cat >&2 <<'MSG'
error: no Python 3.10 interpreter found (tfx 1.16 supports Python 3.10 only).
Looked at: $PYTHON, `python3.10` on PATH, $(pyenv root)/versions/3.10.*, `uv python find 3.10`.
Get one with any of:
  pyenv install 3.10          # then re-run; pyenv's versions are found without activating them
  uv python install 3.10
  apt-get install python3.10 python3.10-venv   # where your distribution ships it
or point PYTHON at an interpreter:  make demo PYTHON=/path/to/python3.10
MSG
exit 1
