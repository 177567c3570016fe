"""artforge: train generative models on your own images, create, explore and measure.

Public API: ``load(path).sample(n, seed=...)``, ``train(config, out)``, ``list_models()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

__all__ = ["__version__", "list_models", "load", "train"]

if TYPE_CHECKING:
    from .api import Run


def load(path: Any, **kwargs: Any) -> Run:
    from .api import load as _load

    return _load(path, **kwargs)


def train(config: Any, out: Any, **kwargs: Any) -> Run:
    from .api import train as _train

    return _train(config, out, **kwargs)


def list_models() -> list[str]:
    from .models import list_models as _list

    return _list()
