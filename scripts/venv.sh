#!/usr/bin/env bash
# Creates (once) the Python virtualenv the end-to-end tests use, under target/venv, from e2e/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/venv
stamp="$venv/.requirements"
if [[ -x "$venv/bin/python" ]] && cmp -s e2e/requirements.txt "$stamp"; then
  exit 0
fi
mkdir -p target
if ! python3 -m venv "$venv" 2>/dev/null; then
  # Debian's python3 ships venv separately.
  if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  else
    echo "python3 -m venv failed: install python3-venv" >&2
    exit 1
  fi
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r e2e/requirements.txt
cp e2e/requirements.txt "$stamp"
