"""The dependency rule holds: `lint-imports` checks the layers contract in pyproject.toml
(each layer imports only the layers below it; docs/architecture.md), so CI fails when an
import breaks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the package under ``root`` (its src/ first on the path)."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports is missing: scripts/setup.sh installs import-linter (the dev extra)")
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([exe, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_dependencies_point_down_one_list():
    p = lint_imports(ROOT)
    assert p.returncode == 0 and "1 kept, 0 broken" in p.stdout, p.stdout + p.stderr


def test_the_contract_catches_an_upward_import(tmp_path):
    """A copy of the package whose training loop imports evaluation code is refused."""
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    trainer = tmp_path / "src" / "artforge" / "training" / "trainer.py"
    upward = "\n\ndef _monitor():\n    from ..evaluate import make_monitor_hook\n"
    trainer.write_text(trainer.read_text() + upward)
    p = lint_imports(tmp_path)
    assert p.returncode != 0 and "artforge.training.trainer -> artforge.evaluate" in p.stdout, p.stdout
