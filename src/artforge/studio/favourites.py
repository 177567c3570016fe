"""Starred seeds of a run, kept in RUN/favourites.json (the seed browser's favourites).

Why a file in the run folder: favourites belong to the run (its seeds mean nothing for another
run's weights), travel with it when it is copied, and are readable without the studio. The
file is rewritten atomically (a temporary file, then os.replace), so a crash mid-write leaves
the old list; a file that is not a favourites list is never overwritten (409, nothing lost).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import Conflict
from ..io import write_json

FILE = "favourites.json"
MAX_FAVOURITES = 1000  # seeds starred in one run


def read(run_path: Path) -> list[dict[str, Any]]:
    """The run's favourites [{"seed", "added"}...] in the order starred; [] without the file."""
    path = run_path / FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise Conflict(f"{path.name} in {run_path.name}: not readable JSON ({e}); fix or remove it") from None
    items = data.get("favourites") if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(
        isinstance(x, dict) and isinstance(x.get("seed"), int) and not isinstance(x.get("seed"), bool)
        for x in items
    ):
        raise Conflict(f"{path.name} in {run_path.name}: not a favourites list; fix or remove it")
    return items


def star(run_path: Path, seed: int, starred: bool) -> list[dict[str, Any]]:
    """Add (``starred``) or remove ``seed``; the new list, written atomically."""
    items = read(run_path)
    have = [x for x in items if x["seed"] == seed]
    if starred and not have:
        if len(items) >= MAX_FAVOURITES:
            raise Conflict(f"{run_path.name} already has {MAX_FAVOURITES} favourites; unstar some first")
        added = datetime.now(UTC).isoformat(timespec="seconds")
        items = [*items, {"seed": seed, "added": added}]
    elif not starred:
        items = [x for x in items if x["seed"] != seed]
    else:
        return items  # already starred: nothing to write
    write(run_path, items)
    return items


def write(run_path: Path, items: list[dict[str, Any]]) -> None:
    write_json({"favourites": items}, run_path / FILE)
