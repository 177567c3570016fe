"""What the studio tests share: real run folders from short real training, the real server as a
subprocess (``python -m artforge studio DIR --port 0``), and a real headless Chromium.

Imported by tests/conftest.py so test_studio.py and test_studio_api.py share one
session's runs and server (training them once costs ~15 s on 2 cores).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("ARTFORGE_CHROMIUM", "/usr/bin/chromium")
# tiny but real: a few seconds of training each
TINY = ["--size", "16", "--batch-size", "16", "--model.base_channels=8", "--log-every", "5", "-q"]


def train(out: Path, *args: str) -> Path:
    from artforge.cli import main

    rc = main(["-q", "train", "--out", str(out), *TINY[:-1], *args])
    assert rc == 0, f"training {out} failed"
    return out


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUNS_DIR with three real runs: gan (builtin data), nested/vae, and folder (trained on a
    folder of images that is then deleted, as when a user moves their data away)."""
    from conftest import write_tiny_images

    root = tmp_path_factory.mktemp("studio-runs")
    train(root / "gan", "--data", "builtin", "--builtin-count", "64", "--steps", "30", "--sample-every", "15")
    train(
        root / "nested" / "vae",
        "--model",
        "vae",
        "--data",
        "builtin",
        "--builtin-count",
        "64",
        "--steps",
        "20",
    )
    data = tmp_path_factory.mktemp("moved-data") / "images"
    write_tiny_images(data, n=12)
    train(root / "folder", "--data", str(data), "--steps", "10")
    shutil.rmtree(data)
    return root


def sound_run(root: Path) -> Path:
    """RUNS_DIR/sound: a tiny real VAE on 8 tones (WAV/FLAC/OGG), trained once per session."""
    run = root / "sound"
    if not (run / "model.safetensors").is_file():
        from artforge.cli import main
        from test_audio import write_tones

        data = root.parent / "studio-tones"
        write_tones(data, 8)
        audio = ["--size", "32", "--model.base_channels=8", "--latent-dim", "8", "--batch-size", "4"]
        rc = main(
            ["-q", "train", "--data", str(data), "--model", "vae", "--out", str(run), *audio, "--steps", "2",
             "--train.grid_n=4", "--data.cache=memory"]
        )  # fmt: skip
        assert rc == 0, "training the sound run failed"
    return run


def diffusion_run(root: Path) -> Path:
    """RUNS_DIR/diff: a tiny real diffusion run, trained once per session (the slow requests)."""
    run = root / "diff"
    if not (run / "model.safetensors").is_file():
        train(run, "--model", "diffusion", "--data", "builtin", "--builtin-count", "32", "--steps", "2")
    return run


def upscaler_run(root: Path) -> Path:
    """RUNS_DIR/up: a tiny real upscaler from 16x16 (the gan run's size) to 32x32, trained once
    per session: the Create page's larger output size and the Upscale buttons."""
    run = root / "up"
    if not (run / "model.safetensors").is_file():
        train(
            run, "--model", "upscaler", "--size", "32", "--model.factor=2", "--data", "builtin",
            "--builtin-count", "32", "--steps", "2", "--model.bank=8",
        )  # fmt: skip
    return run


@dataclass
class Server:
    url: str
    host: str
    port: int
    proc: subprocess.Popen[str]
    root: Path
    banner: str  # what it printed up to its address

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        """One raw HTTP request (http.client sends the path exactly as given: no '..' folding)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            hdrs = dict(headers or {})
            data = None
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()

    def get(self, path: str) -> Any:
        status, body, _ = self.request("GET", path)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        status, raw, _ = self.request("POST", path, body)
        return status, json.loads(raw)

    def peak_rss_mib(self) -> float:
        """The server process's peak resident memory (VmHWM), MiB."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024  # type: ignore[union-attr]


def start_server(root: Path, *extra: str, cache: Path | None = None) -> Server:
    """Start ``artforge studio ROOT --port 0`` and read its address from the line it prints."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if cache is not None:
        env["XDG_CACHE_HOME"] = str(cache)  # Inception features of test data stay out of ~/.cache
    proc = subprocess.Popen(
        [sys.executable, "-m", "artforge", "studio", str(root), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.time() + 60
    lines = []
    while time.time() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            break
        lines.append(line)
        m = re.search(r"on (http://([\d.]+):(\d+)/)", line)
        if m:
            return Server(m.group(1), m.group(2), int(m.group(3)), proc, root, "".join(lines))
    proc.kill()
    raise AssertionError("the studio did not start:\n" + "".join(lines))


def stop_server(server: Server) -> str:
    """Ctrl-C the server; return what it printed after starting."""
    server.proc.send_signal(signal.SIGINT)
    try:
        out, _ = server.proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        out, _ = server.proc.communicate()
    return out


@pytest.fixture(scope="session")
def server(runs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(runs_dir, cache=tmp_path_factory.mktemp("xdg-cache"))
    yield s
    # jobs started by tests run in their own sessions; stop any still going
    for job in json.loads(s.request("GET", "/api/jobs")[1]).get("jobs", []):
        if job["status"] == "running":
            os.kill(job["pid"], signal.SIGINT)
    stop_server(s)


def browser_unavailable(reason: str) -> None:
    """Fail where the browser must exist (root: setup.sh installs it; CI), else skip with why."""
    if os.geteuid() == 0 or os.environ.get("CI"):
        pytest.fail(
            f"browser tests cannot run: {reason}. scripts/setup.sh installs chromium (apt) and playwright"
        )
    pytest.skip(f"browser tests need Debian's chromium and playwright, not installable as a user: {reason}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium (the system one: Playwright's own browser downloads are not used)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_unavailable("the playwright package is not installed")
    if not Path(CHROMIUM).exists():
        browser_unavailable(f"{CHROMIUM} does not exist")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh page; any JavaScript error fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(30_000)
    yield pg
    context.close()
    assert not errors, f"JavaScript errors: {errors}"
