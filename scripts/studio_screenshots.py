"""Screenshots of every studio page for docs/studio.md, taken by a real headless Chromium.

    .venv/bin/python scripts/studio_screenshots.py RUNS_DIR --run NAME [--out docs/images]

RUNS_DIR should hold a few trained runs; NAME is the one shown on the create pages. The script
starts ``artforge studio RUNS_DIR`` on a free port, starts a short training run named
``live-demo`` from the Train page (left in RUNS_DIR, stopped at the end), and writes
studio-gallery.png, studio-live.png, studio-generate.png, studio-interpolate.png,
studio-novelty.png and studio-train.png. Uses Debian's chromium (/usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright


def start(root: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "artforge", "studio", str(root), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in proc.stdout:  # type: ignore[union-attr]
        m = re.search(r"(http://[\d.]+:\d+/)", line)
        if m:
            return proc, m.group(1)
    raise SystemExit("the studio did not start")


def shot(page: Page, out: Path, name: str) -> None:
    path = out / f"studio-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"wrote {path}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs_dir")
    p.add_argument("--run", required=True, help="the run shown on the create pages")
    p.add_argument("--out", default="docs/images")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    proc, url = start(Path(args.runs_dir))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(600_000)  # novelty: features of every training image, once
            run = f"?run={args.run}"

            page.goto(url + "#/create/generate" + run)
            page.fill("#gen-form input[name=n]", "24")
            page.click("#gen-button")
            page.wait_for_function("() => document.querySelectorAll('#gen-results img.gen').length === 24")
            page.wait_for_timeout(500)
            shot(page, out, "generate")

            page.goto(url + "#/create/interpolate" + run)
            page.fill("#interp-form input[name=seeds]", "1,2,3,4")
            page.fill("#interp-form input[name=frames]", "48")
            page.click("#interp-form button[type=submit]")
            page.wait_for_selector("#interp-result img.gif")
            page.wait_for_timeout(800)
            shot(page, out, "interpolate")

            page.goto(url + "#/create/novelty" + run)
            page.fill("#novelty-form input[name=seeds]", "0-3")
            page.click("#novelty-form button[type=submit]")
            page.wait_for_selector("#novelty-result table.novelty")
            page.wait_for_timeout(500)
            shot(page, out, "novelty")

            page.goto(url + "#/train")
            page.fill("#train-form input[name=out]", "live-demo")
            page.fill("#train-form input[name=steps]", "800")
            page.fill("#train-form input[name=batch_size]", "16")
            page.click("#train-form details summary")
            page.fill("#train-form input[name=log_every]", "5")
            page.fill("#train-form input[name=sample_every]", "40")
            page.fill("#train-form input[name=builtin_count]", "200")
            page.click("#train-button")
            page.wait_for_selector('#job-list .job[data-run="live-demo"]')

            page.goto(url + "#/run/live-demo")
            page.wait_for_function("() => +(document.querySelector('#live-chart')?.dataset.points || 0) > 60")
            page.wait_for_function("() => document.querySelector('#live-grid').naturalWidth > 0")
            page.wait_for_timeout(1000)
            shot(page, out, "live")

            page.goto(url + "#/gallery")
            page.wait_for_selector("#gallery .card")
            page.wait_for_timeout(1500)
            shot(page, out, "gallery")

            page.goto(url + "#/train")
            page.wait_for_selector('#job-list .job[data-run="live-demo"]')
            page.wait_for_timeout(500)
            shot(page, out, "train")
            page.click('#job-list .job[data-run="live-demo"] button.stop')
            page.wait_for_selector('#job-list .job[data-run="live-demo"][data-status="stopped"]')
            browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
