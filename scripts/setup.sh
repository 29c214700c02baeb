#!/usr/bin/env bash
# Idempotent setup: creates .venv, installs the CPU build of torch first (otherwise pip pulls a
# multi-GB CUDA build), then grounded itself. A second run with an unchanged pyproject.toml only
# checks a stamp and returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"                       # "test" for the test dependencies
venv=.venv
stamp="$venv/.grounded-installed${extras:+-$extras}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "import ingest, service" 2>/dev/null; then
  exit 0
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "grounded needs Python >= 3.11" >&2; exit 1; }
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "installing torch (CPU build)…" >&2
  "${pip[@]}" install "torch==2.13.0"
fi
echo "installing grounded${extras:+[$extras]}…" >&2
"${pip[@]}" install -e ".${extras:+[$extras]}"
echo "$want" > "$stamp"
