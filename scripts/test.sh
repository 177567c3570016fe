#!/usr/bin/env bash
# The README test command: set up, then run the test suite (slow/GPU tests excluded; see README).
set -euo pipefail
cd "$(dirname "$0")/.."
ARTFORGE_SETUP_TESTS=1 bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
