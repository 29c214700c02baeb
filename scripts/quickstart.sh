#!/usr/bin/env bash
# The main job on the embedded default: set up, ingest the project's own docs, serve the API.
# Re-running skips unchanged documents and starts in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export GROUNDED_DATA_DIR="${GROUNDED_DATA_DIR:-data}"
.venv/bin/grounded ingest README.md docs --collection docs --prune
exec .venv/bin/grounded serve --collection docs
