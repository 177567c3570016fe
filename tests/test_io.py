"""io.py: every file is written whole or not at all, with the usual file mode."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from artforge.io import load_safetensors, replacing, save_safetensors, write_bytes, write_json
from test_reliability import fill, small_disk  # noqa: F401 - a real size-limited tmpfs


def leftovers(folder):
    return [p.name for p in folder.iterdir() if ".tmp" in p.name]


def test_writes_round_trip_with_the_mode_of_any_other_file(tmp_path):
    old = os.umask(0o027)
    try:
        j = write_json({"a": [1, 2]}, tmp_path / "sub" / "x.json")  # the folder is made
        w = save_safetensors({"w": torch.arange(6.0).view(2, 3).t()}, tmp_path / "w.safetensors")
        plain = tmp_path / "plain"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert json.loads(j.read_text()) == {"a": [1, 2]} and j.read_text().endswith("\n")
    assert torch.equal(load_safetensors(w)["w"], torch.arange(6.0).view(2, 3).t())
    # the safetensors writer alone would make its file 0600
    assert {p.stat().st_mode & 0o777 for p in (j, w, plain)} == {0o640}
    assert not leftovers(tmp_path) and not leftovers(tmp_path / "sub")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = write_bytes(tmp_path / "f.bin", b"old")
    with pytest.raises(RuntimeError), replacing(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted mid-write")
    assert path.read_bytes() == b"old" and not leftovers(tmp_path)


def test_a_full_disk_keeps_the_old_file_and_gives_the_space_back(small_disk):  # noqa: F811
    path = write_bytes(small_disk / "f.bin", b"old")
    filler = fill(small_disk, leave=1 << 20)
    with pytest.raises(OSError) as e:
        write_bytes(path, b"\1" * (4 << 20))
    assert e.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old" and leftovers(small_disk) == []
    filler.unlink()


def test_a_pickle_is_refused_by_name(tmp_path):
    p = tmp_path / "ckpt.safetensors"
    torch.save({"w": torch.zeros(2)}, p)
    with pytest.raises(ValueError, match="this is a pickle"):
        load_safetensors(p)
