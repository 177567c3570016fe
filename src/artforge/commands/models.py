"""artforge models: list the model families."""

from __future__ import annotations

import argparse
from typing import Any

NAMES = ("models",)


def add_arguments(sub: Any) -> None:
    sub.add_parser("models", help="list the model families")


def run(args: argparse.Namespace) -> int:
    from ..models import list_models

    print("\n".join(list_models()))
    return 0
