#!/usr/bin/env bash
# Makes the virtualenv the Python tests serve their apps from: target/test-venv, with
# tests/python/requirements.txt installed. Reused as it is while requirements.txt (and the
# interpreter that made it) are unchanged, so running it before every `cargo test` costs nothing;
# rebuilt from scratch otherwise, so a half-finished install never passes for a good one.
# PYTHON chooses the interpreter; by default the one forkserve's `python` feature is built
# against (PYO3_PYTHON, else python3 on the PATH), whose minor version the venv must share.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/test-venv"
requirements="$root/tests/python/requirements.txt"
python="${PYTHON:-${PYO3_PYTHON:-python3}}"

# What the venv was made from: the requirements and the interpreter's exact build.
want="$(
  {
    sha256sum <"$requirements"
    "$python" -c 'import sys; print(sys.version, sys.base_prefix)'
  } | sha256sum | cut -d' ' -f1
)"
stamp="$venv/.forkserve-requirements"

if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

echo "tests/python/setup.sh: making $venv (python: $("$python" -c 'import sys; print(sys.executable, sys.version.split()[0])'))"
rm -rf "$venv"
mkdir -p "$root/target"
"$python" -m venv "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$venv/bin/python" -m pip install --quiet --requirement "$requirements" </dev/null
# Written last: only a complete install is ever reused.
echo "$want" >"$stamp"
echo "tests/python/setup.sh: ready"
