#!/usr/bin/env bash
# The README test command: set up, lint, then run the test suite (slow/GPU tests excluded; see
# README). A lint or format finding fails the run before any test starts.
set -euo pipefail
cd "$(dirname "$0")/.."
ARTFORGE_SETUP_TESTS=1 bash scripts/setup.sh
.venv/bin/ruff check .
# the Python files; the code blocks in the Markdown pages keep their hand-aligned comments
.venv/bin/ruff format --check --exclude "*.md" .
.venv/bin/python -m pytest -q "$@"
