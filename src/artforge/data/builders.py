"""What the data-set builders (``artforge data emoji``, ``artforge data notes``) share: they
write into a hidden temporary folder and swap it into place, and they only ever replace an
empty folder or an earlier set of their own kind, never someone's other files."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def check_target(out: Path, marker: str, what: str) -> None:
    """Refuse ``out`` unless it is absent, empty, or an earlier set (it holds ``marker``)."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise FileExistsError(f"{out} is not empty and holds no {what}; choose an empty or new folder")


def swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out``, replacing an earlier set only at the last moment."""
    old = None
    if out.exists():
        old = out.parent / f".old-{out.name}-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def building(out: Path) -> Iterator[Path]:
    """``with building(out) as tmp:`` write the set into the hidden folder ``tmp``; when the
    block ends it replaces ``out`` (swap_into_place). On any error, Ctrl-C included, ``tmp`` is
    removed and ``out`` is left as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
