#!/usr/bin/env bash
# The README demo: set up, train a GAN for 3 minutes on the built-in shapes, write a sample grid.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/artforge train --data builtin --model gan --size 32 --minutes 3 --out demo/shapes-gan --overwrite
.venv/bin/artforge sample demo/shapes-gan -n 64 --seed 7 --out demo/grid.png
echo "demo done: open demo/grid.png (and demo/shapes-gan/plots/losses.png)"
