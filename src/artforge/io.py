"""Files written whole or not at all, and weight files read without unpickling.

Every file artforge writes goes to a hidden temporary name beside it and is renamed over the
final name (``os.replace``, atomic within a file system), so a crash or a full disk never
leaves half a file under the real name; on any failure the temporary file is removed (a full
disk gets its space back) and the error is raised. Files get the usual mode (0666 less the
umask), like any other file the user's programs write.

``replacing`` is the one primitive; ``write_bytes``, ``write_text``, ``write_json`` and
``save_safetensors`` are it applied to what the run folder holds. Renaming whole folders
(checkpoints, data sets) is done where those swaps are, not here.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import DataError


def temp_name(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this process and thread, ending in the same
    suffix (np.save, PIL and matplotlib pick the format, or add a suffix, by it)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{threading.get_ident()}{path.suffix}")


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """``with replacing(path) as tmp:`` write ``tmp``; when the block ends it is renamed to
    ``path`` (its folder is created if missing). On an error nothing is renamed, the temporary
    file is removed and the error propagates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a no-op after the rename


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``obj`` as indented JSON with a final newline."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def _umask() -> int:
    """The process umask, read without changing it where the kernel says it (os.umask sets
    it, and another thread could create a file in between)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_safetensors(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> Path:
    """Write tensors (detached, contiguous, on the CPU) as a safetensors file. The safetensors
    writer creates its file 0600; it gets the mode of every other file of a run."""
    sd = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with replacing(path) as tmp:
        save_file(sd, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o666 & ~_umask())
    return Path(path)


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a safetensors file; anything else (a pickle, a truncated file) is refused by name,
    never run."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        return load_file(str(path))  # safetensors never unpickles, whatever the file holds
    except (SafetensorError, OSError, ValueError) as e:
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] == b"\x80" or head == b"PK":  # pickle protocol 2+ / torch.save zip
            raise DataError(
                f"{path}: this is a pickle (e.g. a torch.save checkpoint), not safetensors; "
                "refusing to load it"
            ) from None
        raise DataError(f"{path}: not a valid safetensors file ({e})") from None
