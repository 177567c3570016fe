"""The studio page in a real headless Chromium against the real server and real runs.

The gallery shows every run, generating shows the new images, the interpolation GIF, the
novelty view and its counterpart the not-made view appear, and a training run started from
the page is watched live (its chart gains points, its newest grid appears), survives a
reload of the page, and is stopped.
"""

from __future__ import annotations

import json
import shutil

import pytest

# every image matching a selector is decoded (an image that failed to load has naturalWidth 0)
ALL_LOADED = "sel => [...document.querySelectorAll(sel)].every(i => i.complete && i.naturalWidth > 0)"


def loaded(page, selector: str) -> int:
    """How many images matching ``selector`` the browser has actually decoded."""
    return page.eval_on_selector_all(
        selector, "els => els.filter(e => e.complete && e.naturalWidth > 0).length"
    )


def test_gallery_shows_every_run(page, server, runs_dir):
    page.goto(server.url)
    page.wait_for_selector("#gallery .card")
    ids = page.eval_on_selector_all("#gallery .card", "els => els.map(e => e.dataset.run)")
    assert {"folder", "gan", "nested/vae"} <= set(ids)
    gan = page.locator('#gallery .card[data-run="gan"]')
    assert "gan · 16×16 · builtin" in gan.inner_text() and "finished" in gan.inner_text()
    page.wait_for_function(ALL_LOADED, arg="#gallery .card img")
    assert loaded(page, '#gallery .card[data-run="gan"] img') == 1  # the grid
    # the losses drawn at the card's width, one readable panel per phase (not a squeezed PNG)
    panels = page.eval_on_selector_all(
        '#gallery .card[data-run="gan"] .mini-chart canvas',
        "els => els.map(c => [c.dataset.phase, c.clientWidth, c.clientHeight, c.width / devicePixelRatio])",
    )
    assert [p[0] for p in panels] == ["D", "G"], panels
    assert all(w >= 200 and h >= 100 and drawn == w for _, w, h, drawn in panels), panels
    # the run's page: its chart drawn from metrics.jsonl, config, plots
    gan.click()
    page.wait_for_selector("#live-chart canvas")
    assert page.get_attribute("#live-chart", "data-points") == str(6 * 5)  # 6 rows x (3 D + 2 G)
    assert page.inner_text("#live-grid-step") == "step 30"
    assert page.eval_on_selector("#live-chart canvas", "c => c.width > 0 && c.height > 0")


def test_generate_shows_new_images(page, server):
    page.goto(server.url + "#/create/generate?run=gan")
    page.wait_for_selector("#gen-form")
    page.fill("#gen-form input[name=n]", "6")
    page.fill("#gen-form input[name=truncation]", "0.7")
    page.click("#gen-button")
    page.wait_for_function("() => document.querySelectorAll('#gen-results img.gen').length === 6")
    page.wait_for_function(ALL_LOADED, arg="#gen-results img.gen")
    assert (
        page.eval_on_selector_all("#gen-results img.gen", "els => els.map(e => e.naturalWidth)") == [16] * 6
    )
    assert page.get_attribute("#gen-zip", "href").endswith("/images.zip")
    # per-seed mode, and a refusal shown as a message rather than a broken page
    page.check("#gen-form input[value=seeds]")
    page.fill("#gen-form input[name=seeds]", "0-999999")
    page.click("#gen-button")
    page.wait_for_selector("#toast:not([hidden])")
    assert "at most 64 seeds" in page.inner_text("#toast")


def test_interpolation_gif_appears(page, server):
    page.goto(server.url + "#/create/interpolate?run=nested/vae")
    page.wait_for_selector("#interp-form")
    page.fill("#interp-form input[name=frames]", "8")
    page.click("#interp-form button[type=submit]")
    page.wait_for_selector("#interp-result img.gif")
    page.wait_for_function("() => document.querySelector('#interp-result img.gif').naturalWidth === 16")
    assert "8 frames" in page.inner_text("#interp-result")


def test_novelty_view(page, server, network):
    page.goto(server.url + "#/create/novelty?run=gan")
    page.wait_for_selector("#novelty-form")
    page.fill("#novelty-form input[name=seeds]", "0-2")
    page.click("#novelty-form button[type=submit]")
    page.wait_for_selector("#novelty-result table.novelty", timeout=120_000)
    assert page.locator("#novelty-result table.novelty tr").count() == 1 + 3
    page.wait_for_function(ALL_LOADED, arg="#novelty-result img")
    assert loaded(page, "#novelty-result img") == 3 * (1 + 3)
    assert "copy threshold" in page.inner_text("#novelty-result")


def test_not_made_view(page, server, network):
    """The novelty view's counterpart: the training images farthest from 24 generated ones,
    farthest first, each beside its 2 nearest generated images, with the run's coverage."""
    page.goto(server.url + "#/create/notmade?run=gan")
    page.wait_for_selector("#notmade-form")
    page.fill("#notmade-form input[name=samples]", "24")
    page.fill("#notmade-form input[name=rows]", "4")
    page.fill("#notmade-form input[name=k]", "2")
    page.click("#notmade-form button[type=submit]")
    page.wait_for_selector("#notmade-result table.notmade", timeout=120_000)
    assert page.locator("#notmade-result table.notmade tr").count() == 1 + 4
    page.wait_for_function(ALL_LOADED, arg="#notmade-result img")
    assert loaded(page, "#notmade-result img") == 4 * (1 + 2)
    assert "24 generated images against 64 training images" in page.inner_text("#notmade-result")
    # the same request answered as JSON: farthest first, coverage a share, not made past the radius
    status, out = server.post("/api/notmade", {"run": "gan", "samples": 24, "rows": 4, "k": 2})
    assert status == 200, out
    distances = [r["distance"] for r in out["rows"]]
    assert distances == sorted(distances, reverse=True) and len(distances) == 4
    assert 0 <= out["coverage"] <= 1
    assert all(r["made"] == (r["ratio"] is not None and r["ratio"] <= 1) for r in out["rows"])
    assert all(r["neighbours"][0]["distance"] == pytest.approx(r["distance"], abs=0.01) for r in out["rows"])
    assert page.locator("#notmade-result tr.missed").count() == sum(not r["made"] for r in out["rows"])


def test_img2img_and_inpaint_tabs_upload_a_picture(page, server, tmp_path):
    """A picture chosen on the page comes back as variations (img2img) and as fills that keep
    everything outside the box (inpaint); a file that is no picture gets a message naming it."""
    import io

    import numpy as np
    from PIL import Image

    _, out = server.post("/api/generate", {"run": "gan", "seeds": [3]})
    picture = tmp_path / "mine.png"
    picture.write_bytes(server.request("GET", out["images"][0])[1])
    page.goto(server.url + "#/create/img2img?run=gan")
    page.wait_for_selector("#create-form")
    assert page.locator("#tab-img2img").count() == 1 and page.locator("#tab-inpaint").count() == 1
    page.set_input_files("#create-file", str(picture))
    page.fill("#create-form input[name=n]", "3")
    page.fill("#create-strength", "0.4")
    page.click("#create-button")
    page.wait_for_function("() => document.querySelectorAll('#create-results img.gen').length === 3")
    page.wait_for_function(ALL_LOADED, arg="#create-results img.gen")
    names = page.eval_on_selector_all("#create-results figcaption", "els => els.map(e => e.textContent)")
    assert names == [f"img2img-s0.40-seed0-{k:04d}.png" for k in range(3)]
    assert page.get_attribute("#create-zip", "href").endswith("/images.zip")

    page.goto(server.url + "#/create/inpaint?run=gan")
    page.wait_for_selector("#create-box")
    page.set_input_files("#create-file", str(picture))
    page.fill("#create-form input[name=n]", "1")
    page.click("#create-button")
    one = " && document.querySelectorAll(sel).length === 1"
    page.wait_for_function(ALL_LOADED + one, arg="#create-results img.gen")
    url = page.get_attribute("#create-results img.gen", "src")
    got = np.asarray(Image.open(io.BytesIO(server.request("GET", url)[1])).convert("RGB"))
    want = np.asarray(Image.open(picture).convert("RGB"))
    np.testing.assert_array_equal(got[:4], want[:4])  # above the default box (top 0.25) is kept
    # project (GAN here; not offered for diffusion): the picture and its latent's image
    page.goto(server.url + "#/create/project?run=gan")
    page.wait_for_selector("#create-form input[name=steps]")
    page.set_input_files("#create-file", str(picture))
    page.fill("#create-form input[name=steps]", "10")
    page.click("#create-button")
    page.wait_for_selector("#project-psnr")
    assert "PSNR" in page.inner_text("#project-psnr")
    assert page.get_attribute("#project-latent", "href").endswith("/latent.safetensors")
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not a picture")
    page.set_input_files("#create-file", str(bad))
    page.click("#create-button")
    page.wait_for_selector("#toast:not([hidden])")
    assert "the uploaded image" in page.inner_text("#toast")


def test_seed_browser_stars_seeds_and_walks_between_favourites(page, server, runs_dir):
    """Pages of 24 seeds; a star saves the seed in RUN/favourites.json and it stays starred on
    a reload; two ticked favourites give an interpolation GIF."""
    fav = runs_dir / "gan" / "favourites.json"
    fav.unlink(missing_ok=True)
    try:
        page.goto(server.url + "#/create/seeds?run=gan")
        page.wait_for_function("() => document.querySelectorAll('#seed-grid img.gen').length === 24")
        page.click("#seed-next")
        page.wait_for_selector('#seed-grid button.star[data-seed="24"]')
        page.wait_for_function(ALL_LOADED, arg="#seed-grid img.gen")
        assert loaded(page, "#seed-grid img.gen") == 24
        page.click('#seed-grid button.star[data-seed="30"]')
        page.wait_for_selector('#fav-list input[value="30"]')
        page.click('#seed-grid button.star[data-seed="25"]')
        page.wait_for_selector('#fav-list input[value="25"]')
        assert [x["seed"] for x in json.loads(fav.read_text())["favourites"]] == [30, 25]
        page.reload()
        page.wait_for_selector("#seed-grid img.gen")
        page.fill("#seed-page", "1")
        page.click("#seed-go")
        page.wait_for_selector('#seed-grid button.star.on[data-seed="30"]')
        assert page.locator("#seed-grid button.star.on").count() == 2
        page.check('#fav-list input[value="30"]')
        page.check('#fav-list input[value="25"]')
        page.click("#fav-walk-button")
        page.wait_for_function("() => document.querySelector('#fav-walk img.gif')?.naturalWidth === 16")
        assert "16 frames" in page.inner_text("#fav-walk")
        page.click('#seed-grid button.star[data-seed="30"]')  # unstar
        page.wait_for_function("() => !document.querySelector('#fav-list input[value=\"30\"]')")
        assert [x["seed"] for x in json.loads(fav.read_text())["favourites"]] == [25]
    finally:
        fav.unlink(missing_ok=True)


def test_novelty_view_explains_missing_data(page, server):
    page.goto(server.url + "#/create/novelty?run=folder")
    page.click("#novelty-form button[type=submit]")
    page.wait_for_selector("#toast:not([hidden])")
    assert "not there any more" in page.inner_text("#toast")


def test_forms_take_their_fields_and_bounds_from_the_served_settings(page, server):
    """Every training setting /api/settings serves has an input on the Train page, bounded by
    the served numbers, and the generate form's options carry the models' ranges."""
    served = server.get("/api/settings")
    page.goto(server.url + "#/train")
    page.wait_for_selector("#train-form")
    fields = page.eval_on_selector_all(
        "#train-form [name]",
        "els => Object.fromEntries(els.map(e => [e.name, [e.tagName, e.min, e.max, "
        "[...(e.options || [])].map(o => o.value)]]))",
    )
    for key, s in served["train"].items():
        tag, lo, hi, options = fields[key]
        if s["type"] == "choice":
            assert tag == "SELECT" and options == s["choices"], key
        else:
            assert tag == "INPUT" and (float(lo), float(hi)) == (s["lo"], s["hi"]), key
    assert fields["width"][1:3] == [str(served["size"]["lo"]), str(served["size"]["hi"])]
    page.goto(server.url + "#/create/generate?run=gan")
    page.wait_for_selector("#gen-form input[name=truncation]")
    t = served["sample"]["truncation"]
    assert page.get_attribute("#gen-form input[name=truncation]", "max") == f"{t['hi']:g}"
    assert page.input_value("#gen-form input[name=truncation]") == f"{t['default']:g}"


def test_live_training_started_from_the_page(page, server, runs_dir):
    page.goto(server.url + "#/train")
    page.wait_for_selector("#train-form")
    form = "#train-form "
    page.fill(form + "input[name=out]", "browser-run")
    page.fill(form + "input[name=width]", "24")
    page.fill(form + "input[name=height]", "16")
    page.fill(form + "input[name=steps]", "100000")
    page.fill(form + "input[name=batch_size]", "16")
    page.click(form + "details summary")
    page.fill(form + "input[name=base_channels]", "8")
    page.fill(form + "input[name=log_every]", "2")
    page.fill(form + "input[name=sample_every]", "10")
    page.fill(form + "input[name=builtin_count]", "32")
    page.click("#train-button")
    job = page.locator('#job-list .job[data-run="browser-run"]')
    job.wait_for()
    assert job.get_attribute("data-status") == "running"

    page.reload()  # the page forgets nothing: the job comes back from the server
    job.wait_for()
    assert job.get_attribute("data-status") == "running"

    job.locator("a", has_text="Live view").click()
    page.wait_for_function(
        "() => +(document.querySelector('#live-chart')?.dataset.points || 0) > 0", timeout=90_000
    )
    first = int(page.get_attribute("#live-chart", "data-points"))
    page.wait_for_function(
        f"() => +document.querySelector('#live-chart').dataset.points > {first}", timeout=60_000
    )
    page.wait_for_function("() => document.querySelector('#live-grid').naturalWidth > 0", timeout=60_000)
    assert "training" in page.inner_text("#live-status")
    assert page.inner_text("#live-stats").startswith("step ")
    page.wait_for_function("() => document.querySelector('#live-stats').innerText.endsWith(' left')")
    before = page.inner_text("#live-stats")
    page.wait_for_function(  # updating without a reload
        "before => document.querySelector('#live-stats').innerText !== before", arg=before, timeout=60_000
    )

    page.goto(server.url + "#/train")
    job.wait_for()
    job.locator("button.stop").click()
    page.wait_for_selector('#job-list .job[data-run="browser-run"][data-status="stopped"]', timeout=60_000)
    assert (runs_dir / "browser-run" / "state" / "trainer.pt").is_file()
    assert json.loads((runs_dir / "browser-run" / "config.json").read_text())["data"]["width"] == 24

    # the log wraps inside its box, even on a narrow window
    page.set_viewport_size({"width": 420, "height": 800})
    log = '#job-list .job[data-run="browser-run"] pre.log'
    assert page.eval_on_selector(log, "p => getComputedStyle(p).whiteSpace") == "pre-wrap"
    assert page.eval_on_selector(log, "p => p.scrollWidth <= p.clientWidth + 1")
    page.set_viewport_size({"width": 1280, "height": 900})

    # resume / extend: the stopped run continues to a larger step budget and finishes
    step = max(json.loads(line)["step"] for line in (runs_dir / "browser-run" / "metrics.jsonl").open())
    job.locator("button.resume").click()
    resume = "#job-list .resume-form "
    page.fill(resume + "input[name=steps]", str(step + 4))
    page.click(resume + "button[type=submit]")
    page.wait_for_selector('#job-list .job[data-run="browser-run"][data-status="finished"]', timeout=90_000)
    rows = [json.loads(line) for line in (runs_dir / "browser-run" / "metrics.jsonl").open()]
    assert max(r["step"] for r in rows) == step + 4
    assert page.locator('#job-list .job[data-run="browser-run"]').count() == 2  # the stop and the resume
    assert page.locator('#job-list .job[data-run="browser-run"] button.resume').count() == 1  # newest only


def test_newest_samples_placeholder_before_the_first_grid(page, server, runs_dir):
    """A run without a grid yet shows a placeholder where the grid goes, not a broken image."""
    run = runs_dir / "no-grid-yet"
    shutil.copytree(runs_dir / "gan", run, symlinks=True)
    grids = sorted((run / "samples").glob("step-*.png"))
    for g in grids:
        g.unlink()
    try:
        page.goto(server.url + "#/run/no-grid-yet")
        page.wait_for_selector("#live-grid-waiting")
        page.wait_for_function(
            "() => document.querySelector('#live-grid-step').innerText.startsWith('no grid')"
        )
        assert page.is_visible("#live-grid-waiting") and not page.is_visible("#live-grid")
        assert page.get_attribute("#live-grid", "src") is None
        shutil.copy(runs_dir / "gan" / "samples" / grids[-1].name, run / "samples" / grids[-1].name)
        page.wait_for_function("() => document.querySelector('#live-grid').naturalWidth > 0", timeout=20_000)
        assert not page.is_visible("#live-grid-waiting")
    finally:
        shutil.rmtree(run)


@pytest.mark.parametrize("view", ["#/gallery", "#/train", "#/create/generate", "#/run/nope"])
def test_every_view_renders_without_errors(page, server, view):
    page.goto(server.url + view)
    page.wait_for_function("() => !document.querySelector('#view').innerText.includes('Loading')")
    if view == "#/run/nope":
        assert "no run 'nope'" in page.inner_text("#view")


def test_sound_run_plays_and_downloads_wav_files(page, server, runs_dir):
    """Generating from a sound run gives an audio player and a WAV download per sound; the
    novelty view (pictures only) is not offered; the run's eval.json is shown."""
    import json

    from studio_support import sound_run

    run = sound_run(runs_dir)
    (run / "eval.json").write_text(json.dumps({"classifier_accuracy_held_out": 0.75, "sc_roundtrip": 0.125}))
    page.goto(server.url + "#/create/generate?run=sound")
    page.wait_for_selector("#gen-form")
    assert page.locator("#tab-novelty").count() == 0 and page.locator("#tab-interpolate").count() == 1
    page.fill("#gen-form input[name=n]", "3")
    page.click("#gen-button")
    page.wait_for_function("() => document.querySelectorAll('#gen-sounds audio').length === 3")
    hrefs = page.eval_on_selector_all("#gen-sounds a.wav", "els => els.map(e => e.getAttribute('href'))")
    assert [h.rsplit("/", 1)[1] for h in hrefs] == [f"seed7-{k:04d}.wav" for k in range(3)]
    assert page.eval_on_selector_all("#gen-sounds a.wav", "els => els.every(e => e.hasAttribute('download'))")
    duration = page.evaluate(
        """async () => {
          const a = document.querySelector('#gen-sounds audio');
          a.preload = 'metadata';
          const ready = new Promise((ok, bad) => { a.onloadedmetadata = ok; a.onerror = bad; });
          a.load();
          await ready;
          return a.duration;
        }"""
    )
    assert abs(duration - 32 * 256 / 16000) < 0.01  # the chromium decoded the WAV: 0.512 s
    assert page.inner_text("#gen-results h2") == "3 sounds"
    # the run's page: no Novelty button, and the sound eval.json in a table
    page.goto(server.url + "#/run/sound")
    page.wait_for_selector("table.evals")
    assert "sc_roundtrip" in page.inner_text("table.evals") and "0.125" in page.inner_text("table.evals")
    assert page.locator("a.button", has_text="Novelty").count() == 0
    assert page.locator("a.button", has_text="Generate").count() == 1


def test_any_stopped_or_finished_run_can_be_continued_from_its_page(page, server, runs_dir):
    """A run with no studio job (trained from a terminal): its page links to the Train page's
    Continue form, which resumes it to a larger budget."""
    run = runs_dir / "continue-me"
    shutil.copytree(runs_dir / "gan", run, symlinks=True)  # finished at step 30, from the CLI
    try:
        page.goto(server.url + "#/run/continue-me")
        page.click("#resume-link")
        page.wait_for_selector("#continue-form")
        assert page.eval_on_selector("#continue-form select[name=resume]", "s => s.value") == "continue-me"
        page.fill("#continue-form input[name=steps]", "20")  # fewer than done: refused, said why
        page.click("#continue-button")
        page.wait_for_selector("#toast:not([hidden])")
        assert "is at step 30; give more steps" in page.inner_text("#toast")
        page.fill("#continue-form input[name=steps]", "34")
        page.click("#continue-button")
        page.wait_for_selector(
            '#job-list .job[data-run="continue-me"][data-status="finished"]', timeout=90_000
        )
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()]
        assert max(steps) == 34 and 30 in steps
    finally:
        shutil.rmtree(run)


def test_create_offers_an_upscalers_size_and_upscales_any_picture(page, server, runs_dir):
    """An upscaler run in the studio's folder whose input size is the run's adds its output size
    to Create's size choice: the images come back at that size, the same pixels as
    artforge.load(RUN, upscale=UP).sample; a picture at the run's size (a generated one, one of
    the seed browser's) gets an Upscale button that enlarges it through the upscaler."""
    import numpy as np
    from PIL import Image

    import artforge
    from studio_support import upscaler_run

    upscaler_run(runs_dir)
    page.goto(server.url + "#/create/generate?run=gan")
    page.wait_for_selector("#gen-size")
    options = page.eval_on_selector_all("#gen-size option", "els => els.map(e => [e.value, e.textContent])")
    assert options[0] == ["", "16×16 (the run's own)"]
    assert ["up", "32×32 (through up)"] in options
    page.select_option("#gen-size", "up")
    page.fill("#gen-form input[name=n]", "4")
    page.fill("#gen-form input[name=seed]", "7")
    truncation = float(page.input_value("#gen-form input[name=truncation]"))
    page.click("#gen-button")
    page.wait_for_function("() => document.querySelectorAll('#gen-results img.gen').length === 4")
    page.wait_for_function(ALL_LOADED, arg="#gen-results img.gen")
    widths = page.eval_on_selector_all("#gen-results img.gen", "els => els.map(e => e.naturalWidth)")
    assert widths == [32] * 4
    assert page.locator("#gen-results button.upscale").count() == 0  # already enlarged
    first = page.get_attribute("#gen-results img.gen", "src").removeprefix("/files/").partition("?")[0]
    got = np.array(Image.open(runs_dir / first).convert("RGB"))
    want = artforge.load(runs_dir / "gan", device="cpu", upscale=runs_dir / "up")
    want = want.sample(4, seed=7, truncation=truncation)[0]
    assert np.array_equal(got, (want * 255).round().byte().permute(1, 2, 0).numpy())
    # at the run's own size every picture can be upscaled on its own
    page.select_option("#gen-size", "")
    page.click("#gen-button")
    page.wait_for_function("() => document.querySelectorAll('#gen-results button.upscale').length === 4")
    page.click("#gen-results button.upscale >> nth=0")
    page.wait_for_function("() => document.querySelector('#gen-results a.upscaled img')?.naturalWidth === 32")
    href = page.get_attribute("#gen-results a.upscaled", "href").removeprefix("/files/")
    assert href.startswith("up/generated/studio/") and (runs_dir / href).is_file()
    # the seed browser's pictures (what favourites are starred from) too
    page.goto(server.url + "#/create/seeds?run=gan")
    page.wait_for_function("() => document.querySelectorAll('#seed-grid button.upscale').length === 24")
    page.click("#seed-grid button.upscale >> nth=3")
    page.wait_for_function("() => document.querySelector('#seed-grid a.upscaled img')?.naturalWidth === 32")
    # an upscaler of another input size is refused by name, not drawn through
    status, out = server.post("/api/generate", {"run": "up", "upscale": "up", "n": 1})
    assert status == 409 and "enlarges 16x16 pictures, and this run makes 32x32" in out["error"]
