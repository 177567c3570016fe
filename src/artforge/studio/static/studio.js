"use strict";
// The studio page: a hash router over four views (gallery, a run's live view, create, train).
// Everything comes from the studio's own /api and /files; nothing is loaded from elsewhere.
// Text from runs is always set as textContent, never as HTML.

const $ = (sel, root = document) => root.querySelector(sel);

// h("div", {class: "x", onclick: fn}, child, "text", ...) -> element
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// el.replaceChildren, skipping null/false (optional parts of a view)
function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

// fetch JSON from the studio; a non-2xx answer throws its {"error"} message
async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const res = await fetch(path, opts);
  let data = null;
  try { data = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) {
    const err = new Error((data && data.error) || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

function toast(message, kind = "error") {
  const t = $("#toast");
  t.textContent = message;
  t.className = kind;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), kind === "error" ? 8000 : 3000);
}

const state = { info: null, settings: null, runs: [], timers: [], view: null };

function every(ms, fn) {
  const id = setInterval(fn, ms);
  state.timers.push(id);
  return id;
}

function clearTimers() {
  state.timers.forEach(clearInterval);
  state.timers = [];
}

const runPath = (id) => id.split("/").map(encodeURIComponent).join("/");
const runHref = (id) => "#/run/" + runPath(id);
const fmtNum = (v, p = 3) => (typeof v === "number" ? +v.toPrecision(p) + "" : "–");
const pct = (p) => (typeof p === "number" ? Math.round(p * 100) + "%" : "");

function statusBadge(run) {
  const text = run.status === "training" && run.progress != null ? `training ${pct(run.progress)}` : run.status;
  return h("span", { class: `badge ${run.status}` }, text);
}

function lossLine(last) {
  if (!last) return "";
  return Object.entries(last)
    .filter(([k, v]) => k.endsWith("/loss") && typeof v === "number")
    .map(([k, v]) => `${k} ${fmtNum(v)}`)
    .join(" · ");
}

function img(url, alt, cls = "pix") {
  return h("img", { src: url, alt, class: cls });
}

// -- router -------------------------------------------------------------------------------

function parseHash() {
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").map(decodeURIComponent);
  return { page: parts[0] || "gallery", rest: parts.slice(1), query: new URLSearchParams(query || "") };
}

async function route() {
  clearTimers();
  const { page, rest, query } = parseHash();
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === page));
  const view = $("#view");
  view.dataset.view = page;
  try {
    if (page === "run") await runView(view, rest.join("/"));
    else if (page === "create") await createView(view, rest[0] || "generate", query.get("run"));
    else if (page === "train") await trainView(view, query.get("resume"));
    else await galleryView(view);
  } catch (e) {
    fill(view, h("p", { class: "error" }, e.message));
  }
}

// -- gallery ------------------------------------------------------------------------------

async function galleryView(view) {
  const grid = h("div", { class: "cards", id: "gallery" });
  fill(view, 
    h("div", { class: "title-row" }, h("h1", {}, "Gallery"), h("span", { class: "muted", id: "run-count" })),
    grid,
  );
  const refresh = async () => {
    const { runs } = await api("/api/runs");
    state.runs = runs;
    $("#run-count").textContent = `${runs.length} run${runs.length === 1 ? "" : "s"}`;
    if (!runs.length) {
      grid.replaceChildren(h("p", { class: "muted" }, "No runs here yet. Start one on the ",
        h("a", { href: "#/train" }, "Train"), " page, or with artforge train --out RUNS_DIR/NAME."));
      return;
    }
    grid.replaceChildren(...runs.map(card));
    // the cards' loss charts are drawn once in place (a canvas takes its size from the layout)
    for (const c of grid.querySelectorAll(".mini-chart")) Chart.render(c, c.curve);
  };
  await refresh();
  every(5000, () => refresh().catch(() => {}));
}

function card(run) {
  const sample = run.latest_sample;
  const ev = run.evals[0];
  // the losses drawn at the card's own width (plots/losses.png squeezed in was unreadable)
  const curve = run.loss_curve && run.loss_curve.length ? h("div", { class: "chart mini-chart" }) : null;
  if (curve) curve.curve = run.loss_curve;
  return h("a", { class: "card", href: runHref(run.id), dataset: { run: run.id } },
    sample ? img(sample.url, `latest samples of ${run.name}`, "pix grid-img")
      : h("div", { class: "placeholder" }, "no sample grid yet"),
    h("div", { class: "card-body" },
      h("div", { class: "card-title" }, h("strong", {}, run.id), statusBadge(run)),
      h("div", { class: "muted" }, `${run.family} · ${run.size[0]}×${run.size[1]} · ${run.data ?? "?"}`),
      run.last ? h("div", { class: "small" }, `step ${run.last.step}`, sample ? ` · grid at ${sample.step}` : "") : null,
      h("div", { class: "small" }, lossLine(run.last)),
      ev ? h("div", { class: "small evals" },
        `FID ${fmtNum(ev.fid)} · precision ${fmtNum(ev.precision, 2)} · recall ${fmtNum(ev.recall, 2)} · copy rate ${fmtNum(ev.copy_rate, 2)}`) : null,
      curve,
      run.error ? h("div", { class: "error" }, run.error) : null,
    ),
  );
}

// -- a run: live training and everything in its folder -------------------------------------

async function runView(view, id) {
  let run;
  try {
    run = await api("/api/runs/" + runPath(id));
  } catch (e) {
    const jobs = e.status === 404 ? (await api("/api/jobs")).jobs : [];
    if (!jobs.some((j) => j.run === id && j.status === "running")) throw e;
    // a job just started: its folder appears once training has loaded the data
    fill(view, h("h1", {}, id), h("p", { class: "muted", id: "live-waiting" }, "Starting… the run's folder appears once the data is loaded."));
    every(1000, async () => {
      try { await api("/api/runs/" + runPath(id)); route(); } catch { /* not yet */ }
    });
    return;
  }
  const progressBar = h("progress", { max: 1, value: run.progress ?? 0, id: "live-progress" });
  const chart = h("div", { class: "chart", id: "live-chart" });
  // no src until the first grid exists: an <img> without one shows as a broken image
  const gridImg = h("img", { class: "pix big", id: "live-grid", alt: "newest sample grid", hidden: true });
  const gridWaiting = h("div", { class: "placeholder big", id: "live-grid-waiting" }, "no sample grid yet");
  const gridCaption = h("figcaption", { id: "live-grid-step" });
  const stats = h("div", { id: "live-stats", class: "stats" });
  const badge = h("span", { id: "live-status" });
  const plots = h("div", { class: "plots", id: "run-plots" });
  fill(view, 
    h("div", { class: "title-row" },
      h("h1", {}, run.id), badge,
      h("span", { class: "spacer" }),
      run.has_model ? h("a", { class: "button", href: `#/create/generate?run=${encodeURIComponent(run.id)}` }, "Generate") : null,
      run.has_model ? h("a", { class: "button", href: `#/create/interpolate?run=${encodeURIComponent(run.id)}` }, "Interpolate") : null,
      run.has_model && run.modality !== "audio" ? h("a", { class: "button", href: `#/create/novelty?run=${encodeURIComponent(run.id)}` }, "Novelty") : null,
      run.has_model && run.modality !== "audio" ? h("a", { class: "button", href: `#/create/notmade?run=${encodeURIComponent(run.id)}` }, "Not made") : null,
      run.has_model && (run.status === "stopped" || run.status === "finished")
        ? h("a", { class: "button", id: "resume-link", href: `#/train?resume=${encodeURIComponent(run.id)}` }, "Resume / extend") : null,
    ),
    h("div", { class: "muted" }, `${run.family} · ${run.size[0]}×${run.size[1]} · data ${run.data ?? "?"} · budget `
      + Object.entries(run.budget).filter(([, v]) => v != null).map(([k, v]) => `${v} ${k}`).join(", ")),
    h("div", { class: "progress-row" }, progressBar, stats),
    h("div", { class: "live" },
      h("section", {}, h("h2", {}, "Losses"), chart),
      h("section", {}, h("h2", {}, "Newest samples"), h("figure", {}, gridWaiting, gridImg, gridCaption)),
    ),
    h("h2", {}, "Plots"), plots,
    run.evals.length ? h("section", {}, h("h2", {}, "Evaluation"), evalTable(run.evals)) : null,
    run.data_report ? h("section", {}, h("h2", {}, "Data"),
      h("p", {}, `${run.data_report.n_images ?? "?"} images from ${run.data_report.root ?? "?"}; `
        + `${run.data_report.skipped ?? 0} skipped`)) : null,
    h("details", {}, h("summary", {}, "config.json"), h("pre", { class: "config" }, JSON.stringify(run.config, null, 2))),
    run.samples.length > 1 ? h("details", {}, h("summary", {}, `All ${run.samples.length} sample grids`),
      h("div", { class: "strip" }, run.samples.map((s) => h("figure", {}, img(s.url, s.name, "pix thumb"), h("figcaption", {}, s.name))))) : null,
  );

  let rows = [];
  let since = 0;
  const update = (live) => {
    rows = live.reset ? live.rows : rows.concat(live.rows);
    since = live.total_rows;
    Chart.render(chart, rows);
    badge.replaceChildren(statusBadge(live));
    progressBar.value = live.progress ?? 0;
    const l = live.last;
    stats.textContent = l
      ? `step ${l.step} · ${l.images?.toLocaleString() ?? "?"} images · epoch ${fmtNum(l.epoch)} · ${fmtNum(l.img_per_s)} img/s · ${fmtNum(l.elapsed / 60, 2)} min`
        + (live.status === "training" && live.time_left_s != null ? ` · ${fmtLeft(live.time_left_s)} left` : "")
      : "waiting for the first log line…";
    if (live.latest_sample) {
      if (gridImg.getAttribute("src") !== live.latest_sample.url) gridImg.src = live.latest_sample.url;
      gridImg.hidden = false;
      gridWaiting.hidden = true;
      gridCaption.textContent = `step ${live.latest_sample.step}`;
    } else {
      gridImg.hidden = true;
      gridWaiting.hidden = false;
      gridCaption.textContent = "no grid yet (one every sample_every steps and at the end)";
    }
    if (live.plots.length) {
      plots.replaceChildren(...live.plots.map((p) => h("figure", {}, img(p.url, p.name, "plot"), h("figcaption", {}, p.name))));
    } else {
      plots.replaceChildren(h("p", { class: "muted" }, "plots/ is written at each checkpoint and at the end"));
    }
    return live.status;
  };
  const poll = async () => {
    const live = await api(`/api/live/${runPath(id)}?since=${since}`);
    return update(live);
  };
  let status = await poll();
  // fast while training, slow otherwise (a run started from a terminal is picked up too)
  let timer = null;
  const schedule = () => {
    if (timer) clearInterval(timer);
    timer = every(status === "training" ? 1500 : 5000, async () => {
      try {
        const s = await poll();
        if ((s === "training") !== (status === "training")) { status = s; schedule(); }
      } catch (e) { /* the next poll retries */ }
    });
  };
  schedule();
}

// picture runs' measures first (docs/eval.md), then any other number (sound runs: docs/audio.md)
const EVAL_KEYS = ["fid", "kid", "precision", "recall", "diversity", "copy_rate", "n_fake", "n_real", "seed"];
const EVAL_SKIP = new Set(["file", "caveats", "inception_sha1", "sheet", "run", "data", "fake", "prompts"]);

function evalTable(evals) {
  const present = new Set(evals.flatMap((e) => Object.keys(e)));
  const others = [...present].filter((k) => !EVAL_KEYS.includes(k) && !EVAL_SKIP.has(k)
    && evals.some((e) => typeof e[k] === "number")).sort();
  const keys = [...EVAL_KEYS.filter((k) => present.has(k)), ...others];
  const caveats = [...new Set(evals.flatMap((e) => e.caveats || []))];
  return h("div", {},
    h("table", { class: "evals" },
      h("tr", {}, h("th", {}, "file"), keys.map((k) => h("th", {}, k))),
      evals.map((e) => h("tr", {}, h("td", {}, e.file), keys.map((k) => h("td", {}, fmtNum(e[k], 4)))))),
    caveats.map((c) => h("p", { class: "muted small caveat" }, `note: ${c}`)));
}

function fmtLeft(seconds) {
  const s = Math.round(seconds);
  return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`
    : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

// -- create: generate, interpolate, novelty, img2img, inpaint -----------------------------------------------

// The sample options' labels and input steps; their ranges, defaults and help come from the
// models' own declarations (GET /api/settings, in state.settings.sample).
const OPTION_LABELS = {
  truncation: { label: "truncation", step: 0.05 },
  temperature: { label: "temperature", step: 0.05 },
  steps: { label: "DDIM steps", step: 1 },
  guidance: { label: "guidance", step: 0.5 },
};

// A labelled number input for sample option k (null for an option the page does not know).
function optionField(k) {
  const r = state.settings.sample[k], l = OPTION_LABELS[k];
  if (!r || !l) return null;
  const min = r.open_lo ? r.lo + l.step : r.lo;  // an input cannot say "above lo": its first step
  return field(l.label, num(k, r.default, min, r.hi, l.step), r.help);
}

function field(label, input, help) {
  return h("label", { class: "field" }, h("span", {}, label), input, help ? h("small", { class: "muted" }, help) : null);
}

function num(name, value, min, max, step = 1) {
  return h("input", { type: "number", name, value, min, max, step, required: true });
}

function optionInputs(run) {
  return run.sample_options.map(optionField);
}

// The prompt only exists for runs trained on captions (--text-encoder); others say why not.
function promptInput(run) {
  if (run.conditioning === "text") return field("prompt", h("input", { name: "prompt", maxlength: 500 }));
  return field("prompt", h("input", { name: "prompt", disabled: true, placeholder: "not text-conditioned" }),
    `this run was trained without captions, so it takes no prompt`);
}

function readForm(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled) continue;
    if (el.type === "checkbox") out[el.name] = el.checked;
    else if (el.type === "radio") { if (el.checked) out[el.name] = el.value; }
    else if (el.type === "number") { if (el.value !== "") out[el.name] = Number(el.value); }
    else if (el.value !== "") out[el.name] = el.value;
  }
  return out;
}

async function busy(button, work) {
  const label = button.textContent;
  button.disabled = true;
  button.textContent = "Working…";
  try { return await work(); }
  catch (e) { toast(e.message); return null; }
  finally { button.disabled = false; button.textContent = label; }
}

const TAB_LABELS = { notmade: "Not made" };

async function createView(view, tab, runId) {
  const { runs } = await api("/api/runs");
  const usable = runs.filter((r) => r.has_model);
  if (!usable.length) {
    fill(view, h("h1", {}, "Create"), h("p", { class: "muted" }, "No run has saved weights yet."));
    return;
  }
  state.runs = runs;  // the upscaler runs among them give the output sizes (sizeField)
  const run = usable.find((r) => r.id === runId) || usable[0];
  const go = (t, id) => (location.hash = `#/create/${t}?run=${encodeURIComponent(id)}`);
  const select = h("select", { id: "create-run", onchange: (e) => go(tab, e.target.value) },
    usable.map((r) => h("option", { value: r.id, selected: r.id === run.id }, `${r.id} (${r.family} ${r.size[0]}×${r.size[1]})`)));
  // the novelty and not-made views compare pictures by the FID network's features: not offered for sound
  // img2img and inpaint take pictures: not offered for sound either
  // a cascade (a base and an upscaler) samples at its final size; it is not edited as one model
  const tabNames = run.modality === "audio" ? ["generate", "seeds", "interpolate"]
    : run.family === "cascade" ? ["generate", "seeds", "interpolate", "novelty", "notmade"]
    : ["generate", "seeds", "interpolate", "novelty", "notmade", "img2img", "inpaint",
      ...(["gan", "dcgan", "vae"].includes(run.family) ? ["project"] : [])];  // projection: not diffusion
  if (!tabNames.includes(tab)) tab = "generate";
  const tabs = h("div", { class: "tabs" }, tabNames.map((t) =>
    h("a", { href: `#/create/${t}?run=${encodeURIComponent(run.id)}`, class: t === tab ? "active" : "", id: `tab-${t}` }, TAB_LABELS[t] ?? t[0].toUpperCase() + t.slice(1))));
  const panel = h("div", { class: "panel" });
  fill(view, 
    h("div", { class: "title-row" }, h("h1", {}, "Create"), field("run", select)),
    tabs, panel,
  );
  if (tab === "interpolate") interpolatePanel(panel, run);
  else if (tab === "novelty") noveltyPanel(panel, run);
  else if (tab === "notmade") notMadePanel(panel, run);
  else if (tab === "img2img" || tab === "inpaint" || tab === "project") createPanel(panel, run, tab);
  else if (tab === "seeds") seedsPanel(panel, run);
  else generatePanel(panel, run);
}

// The seed browser: 24 seeds a page, a star on each (saved in RUN/favourites.json), and the
// favourites listed with a walk between the ticked ones (the interpolate endpoint).
function seedsPanel(panel, run) {
  let page = 0;
  const grid = h("div", { class: "gallery-images", id: "seed-grid" });
  const favList = h("div", { id: "fav-list" });
  const walk = h("div", { id: "fav-walk" });
  const pageNo = h("input", { type: "number", id: "seed-page", min: 0, value: 0, step: 1 });
  const form = h("form", { id: "seeds-form", class: "form" }, optionInputs(run), promptInput(run));
  const starButton = (seed, on) => h("button", {
    type: "button", class: on ? "star on" : "star", dataset: { seed }, "aria-pressed": on ? "true" : "false",
    title: on ? "unstar" : "star this seed",
    onclick: async (e) => {
      const btn = e.currentTarget;
      const want = btn.getAttribute("aria-pressed") !== "true";
      try {
        const out = await api("/api/favourites", { run: run.id, seed, star: want });
        btn.setAttribute("aria-pressed", want ? "true" : "false");
        btn.className = want ? "star on" : "star";
        btn.textContent = want ? "★" : "☆";
        showFavourites(out.favourites);
      } catch (err) { toast(err.message); }
    },
  }, on ? "★" : "☆");
  function showFavourites(items) {
    if (!items.length) { fill(favList, h("p", { class: "muted" }, "No favourites yet: star seeds above.")); return; }
    const walkButton = h("button", { type: "button", id: "fav-walk-button" }, "Interpolate ticked");
    walkButton.addEventListener("click", async () => {
      const seeds = [...favList.querySelectorAll("input:checked")].map((el) => Number(el.value));
      if (seeds.length < 2) { toast("tick at least two favourites"); return; }
      const out = await busy(walkButton, () => api("/api/interpolate", { run: run.id, seeds, frames: 16, ...readForm(form) }));
      if (out) fill(walk, h("figure", {}, img(out.gif, "walk between favourites", "pix gif"), h("figcaption", {}, `${out.frames} frames`)),
        h("a", { class: "button", href: out.gif, download: `${run.name}-favourites.gif` }, "Download GIF"));
    });
    fill(favList, h("h2", {}, "Favourites"),
      h("div", { class: "favs" }, items.map((x) => h("label", { class: "fav" },
        h("input", { type: "checkbox", value: x.seed }), ` seed ${x.seed}`))),
      walkButton);
  }
  async function load() {
    const button = $("#seed-go", panel);
    const out = await busy(button, () => api("/api/seeds", { run: run.id, page, ...readForm(form) }));
    if (!out) return;
    pageNo.value = out.page;
    fill(grid, out.seeds.map((seed, i) => h("figure", { class: "seed" },
      img(out.images[i], `seed ${seed}`, "pix gen"),
      h("figcaption", {}, starButton(seed, out.starred.includes(seed)), ` ${seed}`),
      upscaleButton(out.images[i], run))));
  }
  const nav = h("div", { class: "title-row" },
    h("button", { type: "button", id: "seed-prev", onclick: () => { if (page > 0) { page -= 1; load(); } } }, "← previous"),
    field("page", pageNo),
    h("button", { type: "button", id: "seed-go", onclick: () => { page = Math.max(0, Math.floor(Number(pageNo.value) || 0)); load(); } }, "Show"),
    h("button", { type: "button", id: "seed-next", onclick: () => { page += 1; load(); } }, "next →"));
  panel.replaceChildren(form, nav, grid, favList, walk);
  api(`/api/favourites?run=${encodeURIComponent(run.id)}`).then((out) => showFavourites(out.favourites), (e) => toast(e.message));
  load();
}

// a chosen file -> its data: URL (sent as base64 in the JSON body; the studio bounds its size)
function readFile(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(new Error(`${file.name}: could not be read`));
    r.readAsDataURL(file);
  });
}

// img2img (variations of an uploaded picture) and inpaint (fills of a box or a mask picture)
function createPanel(panel, run, kind) {
  const limits = state.info.limits;
  const results = h("div", { id: "create-results" });
  const preview = h("div", { class: "gallery-images", id: "create-preview" });
  const strength = h("input", { type: "range", name: "strength", min: 0, max: 1, step: 0.05, value: 0.5, id: "create-strength" });
  const shown = h("output", {}, "0.5");
  strength.addEventListener("input", () => (shown.textContent = strength.value));
  const diffusionOnly = run.sample_options.filter((k) => k === "steps" || k === "guidance");
  const form = h("form", { id: "create-form", class: "form" },
    field("picture", h("input", { type: "file", name: "file", accept: "image/*", required: true, id: "create-file" }),
      `fitted to the run's ${run.size[0]}×${run.size[1]} as in training; at most ${Math.round(limits.upload_bytes / 2 ** 20)} MiB`),
    kind === "img2img" ? field("strength", h("span", {}, strength, " ", shown), "0 gives the picture back, 1 ignores it") : null,
    kind === "inpaint" ? field("box", h("input", { name: "box", value: "0.25,0.25,0.75,0.75", id: "create-box" }),
      "L,T,R,B as fractions: the part to fill (ignored when a mask is chosen)") : null,
    kind === "inpaint" ? field("mask", h("input", { type: "file", name: "maskfile", accept: "image/*", id: "create-mask" }),
      "optional: white = fill, black = keep") : null,
    field("seed", num("seed", 0, 0, 2147483647)),
    kind === "project" ? field("steps", num("steps", 200, 0, 1000), "optimiser steps: more is closer and slower")
      : field("count", num("n", 4, 1, limits.create), `1 to ${limits.create}`),
    kind === "project" ? null : diffusionOnly.map(optionField),
    promptInput(run),
    h("button", { type: "submit", id: "create-button" },
      { img2img: "Make variations", inpaint: "Fill", project: "Find its latent" }[kind]),
  );
  form.elements.file.addEventListener("change", () => {
    const f = form.elements.file.files[0];
    fill(preview, f ? h("figure", {}, img(URL.createObjectURL(f), f.name, "pix gen"), h("figcaption", {}, f.name)) : null);
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = await busy(form.querySelector("button"), async () => {
      const body = readForm(form);
      delete body.file; delete body.maskfile;
      body.image = await readFile(form.elements.file.files[0]);
      if (kind === "inpaint" && form.elements.maskfile.files[0]) {
        body.mask = await readFile(form.elements.maskfile.files[0]);
        delete body.box;
      }
      if (kind === "img2img") body.strength = Number(strength.value);
      return api(`/api/${kind}`, { run: run.id, ...body });
    });
    if (!out) return;
    if (kind === "project") {
      fill(results,
        h("div", { class: "gallery-images" },
          h("figure", {}, img(out.target, "the picture", "pix gen"), h("figcaption", {}, "the picture (fitted)")),
          h("figure", {}, h("a", { href: out.reconstruction, download: "reconstruction.png" }, img(out.reconstruction, "reconstruction", "pix gen")),
            h("figcaption", { id: "project-psnr" }, `its latent's image: PSNR ${out.psnr} dB`))),
        h("a", { class: "button", href: out.latent, download: `${run.name}-latent.safetensors`, id: "project-latent" }, "Download latent"),
        h("p", { class: "muted small" }, `saved in ${out.folder} (artforge sample RUN --latents FILE decodes it)`),
      );
      return;
    }
    fill(results,
      h("div", { class: "title-row" }, h("h2", {}, `${out.images.length} images`),
        h("a", { class: "button", href: out.zip, download: `${run.name}-${kind}.zip`, id: "create-zip" }, "Download all (.zip)"),
        h("a", { class: "button", href: out.grid, download: `${run.name}-${kind}-grid.png` }, "Grid PNG")),
      h("div", { class: "gallery-images" }, out.images.map((url) => {
        const name = decodeURIComponent(url.split("/").pop());
        return h("figure", {}, h("a", { href: url, download: name }, img(url, name, "pix gen")), h("figcaption", {}, name));
      })),
      h("p", { class: "muted small" }, `saved in ${out.folder}`),
    );
  });
  panel.replaceChildren(form, preview, results);
}

// The upscaler runs (--model upscaler) whose input size is this run's size: the larger
// output sizes Create offers, and what the Upscale buttons use.
function upscalersFor(run) {
  if (run.modality === "audio") return [];
  return (state.runs || []).filter((r) => r.upscale && r.has_model
    && r.upscale.from[0] === run.size[0] && r.upscale.from[1] === run.size[1]);
}

function sizeField(run) {
  const ups = upscalersFor(run);
  if (run.modality === "audio") return null;
  return field("size", h("select", { name: "upscale", id: "gen-size" },
    h("option", { value: "" }, `${run.size[0]}×${run.size[1]} (the run's own)`),
    ups.map((u) => h("option", { value: u.id }, `${u.upscale.to[0]}×${u.upscale.to[1]} (through ${u.id})`))),
    ups.length ? "a larger size goes through an upscaler run: it adds detail, not new content"
      : `train an upscaler from ${run.size[0]}×${run.size[1]} (--model upscaler --model.factor=2) to offer larger sizes`);
}

// "Upscale ×f" under a picture at the run's size: the picture through the first fitting
// upscaler run (POST /api/upscale), the result shown beside it with a download link.
function upscaleButton(url, run) {
  const up = upscalersFor(run)[0];
  if (!up) return null;
  const button = h("button", { type: "button", class: "upscale", title: `enlarge through ${up.id}` }, `Upscale ×${up.upscale.factor}`);
  button.addEventListener("click", async () => {
    const out = await busy(button, () => api("/api/upscale", { run: up.id, image: url }));
    if (!out) return;
    const name = decodeURIComponent(out.image.split("/").pop());
    button.replaceWith(h("a", { href: out.image, download: name, class: "upscaled" },
      img(out.image, `${name} (${out.size[0]}×${out.size[1]})`, "pix big")));
  });
  return button;
}

function generatePanel(panel, run) {
  const limits = state.info.limits;
  const results = h("div", { id: "gen-results" });
  const form = h("form", { id: "gen-form", class: "form" },
    h("fieldset", { class: "modes" },
      h("label", {}, h("input", { type: "radio", name: "mode", value: "seed", checked: true }), " n images from one seed"),
      h("label", {}, h("input", { type: "radio", name: "mode", value: "seeds" }), " one image per seed")),
    field("seed", num("seed", 7, 0, 2147483647)),
    field("count", num("n", 16, 1, limits.count), `1 to ${limits.count}`),
    field("seeds", h("input", { name: "seeds", value: "0-7", disabled: true }), "e.g. 1,2,5-8 (reproducible one by one)"),
    optionInputs(run), promptInput(run), sizeField(run),
    h("button", { type: "submit", id: "gen-button" }, "Generate"),
  );
  form.addEventListener("change", () => {
    const perSeed = readForm(form).mode === "seeds";
    form.elements.seeds.disabled = !perSeed;
    form.elements.seed.disabled = perSeed;
    form.elements.n.disabled = perSeed;
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = readForm(form);
    delete body.mode;
    const out = await busy(form.querySelector("button"), () => api("/api/generate", { run: run.id, ...body }));
    if (!out) return;
    fill(results, 
      h("div", { class: "title-row" }, h("h2", {}, out.sounds ? `${out.sounds.length} sounds` : `${out.images.length} images`),
        h("a", { class: "button", href: out.zip, download: `${run.name}-${out.sounds ? "sounds" : "images"}.zip`, id: "gen-zip" }, "Download all (.zip)"),
        h("a", { class: "button", href: out.grid, download: `${run.name}-grid.png` }, "Grid PNG")),
      out.sounds ? h("div", { class: "sounds", id: "gen-sounds" }, out.sounds.map((url, i) => {
        const name = decodeURIComponent(url.split("/").pop());
        return h("figure", { class: "sound" }, img(out.images[i], `spectrogram of ${name}`, "pix gen"),
          h("audio", { controls: true, preload: "none", src: url }),
          h("figcaption", {}, h("a", { href: url, download: name, class: "wav" }, `${name} (download)`)));
      })) : h("div", { class: "gallery-images" }, out.images.map((url) => {
        const name = decodeURIComponent(url.split("/").pop());
        return h("figure", {}, h("a", { href: url, download: name }, img(url, name, "pix gen")), h("figcaption", {}, name),
          body.upscale ? null : upscaleButton(url, run));
      })),
      h("p", { class: "muted small" }, `saved in ${out.folder}`),
    );
  });
  panel.replaceChildren(form, results);
}

function interpolatePanel(panel, run) {
  const limits = state.info.limits;
  const result = h("div", { id: "interp-result" });
  const form = h("form", { id: "interp-form", class: "form" },
    field("seeds", h("input", { name: "seeds", value: "1,2,3", required: true }), "key frames, 2 to 16 seeds"),
    field("frames", num("frames", 30, 2, limits.frames), `2 to ${limits.frames}`),
    field("fps", num("fps", 12, 1, 50)),
    h("label", { class: "field check" }, h("input", { type: "checkbox", name: "loop", checked: true }), h("span", {}, "loop back to the first seed")),
    optionInputs(run), promptInput(run),
    h("button", { type: "submit" }, "Interpolate"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = await busy(form.querySelector("button"), () => api("/api/interpolate", { run: run.id, ...readForm(form) }));
    if (!out) return;
    fill(result, 
      h("figure", {}, img(out.gif, "interpolation", "pix gif"), h("figcaption", {}, `${out.frames} frames`)),
      h("a", { class: "button", href: out.gif, download: `${run.name}-walk.gif` }, "Download GIF"),
    );
  });
  panel.replaceChildren(form, result);
}

function noveltyPanel(panel, run) {
  const limits = state.info.limits;
  const result = h("div", { id: "novelty-result" });
  const form = h("form", { id: "novelty-form", class: "form" },
    field("seeds", h("input", { name: "seeds", value: "0-3", required: true }), `1 to ${limits.novelty} images, one per seed`),
    field("neighbours", num("k", 3, 1, limits.neighbours), "nearest training images shown"),
    optionInputs(run), promptInput(run),
    h("button", { type: "submit" }, "Compare with training data"),
  );
  const note = h("p", { class: "muted small" },
    "Distances are in the Inception feature space of artforge eval. The ratio divides by the copy threshold: the median " +
    "distance between a training image and its nearest other training image. Below 1 (red) the image is closer to a " +
    "training image than training images are to each other: it may be a copy. The first comparison with a data set " +
    "computes features of every training image (about 12 images/s on a CPU; cached afterwards).");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = await busy(form.querySelector("button"), () => api("/api/novelty", { run: run.id, ...readForm(form) }));
    if (!out) return;
    fill(result, 
      h("p", {}, `${out.n_train} training images from ${out.data}; copy threshold ${out.threshold}`),
      h("table", { class: "novelty" },
        h("tr", {}, h("th", {}, "generated"), h("th", {}, "nearest training images (distance, ratio)")),
        out.rows.map((r) => h("tr", { class: r.copy ? "copy" : "" },
          h("td", {}, h("figure", {}, img(r.image, `seed ${r.seed}`, "pix nov"),
            h("figcaption", {}, `seed ${r.seed} · `, h("b", { class: "ratio" }, `${r.ratio}`), r.copy ? " · copy?" : ""))),
          h("td", { class: "neighbours" }, r.neighbours.map((n) => h("figure", {}, img(n.image, n.source, "pix nov"),
            h("figcaption", { title: n.source }, `${n.distance} (${n.ratio})`))))))),
    );
  });
  panel.replaceChildren(form, note, result);
}

// the novelty view's counterpart: the training images farthest from every one of n generated images
function notMadePanel(panel, run) {
  const limits = state.info.limits;
  const result = h("div", { id: "notmade-result" });
  const form = h("form", { id: "notmade-form", class: "form" },
    field("samples", num("samples", 256, 2, limits.not_made_samples), `generated images compared (seeds from the first seed on)`),
    field("first seed", num("seed", 0, 0, 2 ** 31 - 1 - limits.not_made_samples)),
    field("rows", num("rows", 8, 1, limits.not_made_rows), "training images shown, farthest first"),
    field("neighbours", num("k", 3, 1, limits.neighbours), "nearest generated images shown beside each"),
    optionInputs(run), promptInput(run),
    h("button", { type: "submit" }, "Find what it does not make"),
  );
  const note = h("p", { class: "muted small" },
    "Distances are in the Inception feature space of artforge eval. The ratio divides by the training image's own " +
    "radius: the distance to its 3rd nearest other training image. Above 1 (red) no generated image is that close: " +
    "coverage counts it as not made. With few samples more images read as not made than with artforge eval's 5,000 " +
    "(its notmade.png is this view at n=5000).");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = await busy(form.querySelector("button"), () => api("/api/notmade", { run: run.id, ...readForm(form) }));
    if (!out) return;
    fill(result,
      h("p", {}, `${out.n_generated} generated images against ${out.n_train} training images from ${out.data}; ` +
        `coverage ${out.coverage} (share of training images with a generated one within their radius)`),
      h("table", { class: "novelty notmade" },
        h("tr", {}, h("th", {}, "training image"), h("th", {}, "nearest generated images (seed, distance)")),
        out.rows.map((r) => h("tr", { class: r.made ? "" : "missed" },
          h("td", {}, h("figure", {}, img(r.image, r.source, "pix nov"),
            h("figcaption", { title: r.source }, `${r.distance} · `, h("b", { class: "ratio" }, `${r.ratio ?? "∞"}`), r.made ? "" : " · not made"))),
          h("td", { class: "neighbours" }, r.neighbours.map((n) => h("figure", {}, img(n.image, `seed ${n.seed}`, "pix nov"),
            h("figcaption", {}, `seed ${n.seed} · ${n.distance}`))))))),
    );
  });
  panel.replaceChildren(form, note, result);
}

// -- train: start and stop runs -----------------------------------------------------------

// An input for training setting `key` of the form, bounded as declared beside its field
// (GET /api/settings, state.settings.train); `value` is the form's starting value, if any.
function settingInput(key, value, extra = {}) {
  const s = state.settings.train[key];
  if (s.type === "choice") return h("select", { name: key }, s.choices.map((c) => h("option", { value: c }, extra.labels?.[c] ?? c)));
  const step = s.type === "int" ? 1 : "any";
  return h("input", { type: "number", name: key, value, min: s.lo, max: s.hi, step, ...extra });
}

const LAID_OUT = new Set(["steps", "minutes", "batch_size", "base_channels", "lr", "captions", "text_encoder",
  "seed", "log_every", "sample_every", "builtin_count"]);

async function trainView(view, resumeRun) {
  const models = state.settings.models;
  const size = state.settings.size;
  const jobs = h("div", { id: "job-list" });
  const form = h("form", { id: "train-form", class: "form" },
    field("run name", h("input", { name: "out", required: true, pattern: "[A-Za-z0-9_][A-Za-z0-9._\\-]{0,63}", value: `run-${new Date().toISOString().slice(0, 16).replace(/[-:T]/g, "")}` }), "a new folder in the studio's folder"),
    field("data", h("input", { name: "data", value: "builtin", required: true }), "image folder or .zip inside the studio's folder (or a --data-root), or builtin[:NAME]"),
    field("model", h("select", { name: "model" }, models.map((m) => h("option", { value: m, selected: m === "gan" }, m)))),
    h("div", { class: "pair" },
      field("width", num("width", 32, size.lo, size.hi), `pixels, ${size.lo} to ${size.hi}`),
      field("height", num("height", 32, size.lo, size.hi), "need not be square (not for dcgan)")),
    field("steps", settingInput("steps", 500), "budget in steps; blank for none"),
    field("minutes", settingInput("minutes"), "wall-clock budget; the first reached stops"),
    field("batch size", settingInput("batch_size", 32, { required: true })),
    h("details", {}, h("summary", {}, "more"),
      field("base channels", settingInput("base_channels"), "model width (blank: the family's default)"),
      field("learning rate", settingInput("lr"), `blank: the family's default (above ${state.settings.train.lr.lo}, at most ${state.settings.train.lr.hi})`),
      field("captions", settingInput("captions"),
        "where captions come from: captions.jsonl, a .txt beside each image, or file names"),
      field("text encoder", settingInput("text_encoder", undefined,
        { labels: { none: "none (no prompts)", hash: "hash (built in)", minilm: "minilm (MiniLM sentences)" } }),
        "train on captions so the run takes a prompt (gan, vae, diffusion)"),
      field("seed", settingInput("seed")),
      field("log every", settingInput("log_every", 10), "steps between loss lines"),
      field("sample every", settingInput("sample_every", 100), "steps between sample grids"),
      field("built-in images", settingInput("builtin_count"), "for builtin data (default 2000)"),
      // a setting declared for the form (studio=... beside its field) and not laid out above
      Object.keys(state.settings.train).filter((k) => !LAID_OUT.has(k))
        .map((k) => field(k.replace(/_/g, " "), settingInput(k), state.settings.train[k].help))),
    h("button", { type: "submit", id: "train-button" }, "Start training"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = readForm(form);
    if (body.text_encoder === "none") delete body.text_encoder;  // the defaults stay the CLI's
    if (body.captions === "auto") delete body.captions;
    const job = await busy(form.querySelector("button"), () => api("/api/jobs", body));
    if (job) { toast(`started ${job.run}`, "ok"); await refresh(); }
  });
  const cont = await continueForm(resumeRun, () => refresh(true));
  fill(view, h("h1", {}, "Train"), h("div", { class: "train" },
    h("div", {}, form, cont), h("section", {}, h("h2", {}, "Jobs"), jobs)));
  // continue a stopped or finished run with a larger budget (train --out RUN --resume)
  let resuming = null, resumeEl = null;  // the open form is kept across the list's refreshes
  const resumable = (j, list) => ["stopped", "finished", "lost"].includes(j.status)
    && list.find((k) => k.run === j.run) === j;  // the run's newest job (the list is newest first)
  const openResume = (j) => { resuming = resuming === j.id ? null : j.id; resumeEl = null; refresh(true); };
  // a stopped run: on to the budget it was given; a finished one: twice that
  const resumeSteps = (j) => (j.spec && j.spec.steps ? j.spec.steps * (j.status === "finished" ? 2 : 1) : "");
  const resumeForm = (j) => {
    if (resumeEl) return resumeEl;
    const f = h("form", { class: "form resume-form", dataset: { job: j.id } },
      field("steps", h("input", { type: "number", name: "steps", min: 1, value: resumeSteps(j) }),
        "the new total (more than done so far); blank for none"),
      field("minutes", h("input", { type: "number", name: "minutes", min: 0, step: "any" }), "the new total wall-clock budget"),
      h("button", { type: "submit" }, "Continue training"));
    f.addEventListener("submit", async (e) => {
      e.preventDefault();
      const job = await busy(f.querySelector("button"), () => api("/api/jobs", { resume: j.run, ...readForm(f) }));
      if (job) { resuming = resumeEl = null; toast(`continuing ${job.run}`, "ok"); await refresh(true); }
    });
    resumeEl = f;
    return f;
  };
  const refresh = async (force = false) => {
    // moving the open resume form while it is typed in would take its focus away
    if (!force && resumeEl && resumeEl.contains(document.activeElement)) return;
    const { jobs: list } = await api("/api/jobs");
    if (!list.length) { jobs.replaceChildren(h("p", { class: "muted" }, "No training started from the studio yet.")); return; }
    jobs.replaceChildren(...list.map((j) => h("div", { class: `job ${j.status}`, dataset: { job: j.id, run: j.run, status: j.status } },
      h("div", { class: "title-row" }, h("strong", {}, j.run), h("span", { class: `badge ${j.status}` }, j.status),
        h("span", { class: "spacer" }),
        h("a", { class: "button", href: runHref(j.run) }, "Live view"),
        j.status === "running" || j.status === "queued" ? h("button", { class: "stop", onclick: async (e) => {
          await busy(e.target, () => api(`/api/jobs/${j.id}/stop`, {}));
          await refresh();
        } }, j.status === "queued" ? "Cancel" : "Stop") : null,
        resumable(j, list) ? h("button", { class: "resume", onclick: () => openResume(j) }, "Resume / extend") : null),
      h("div", { class: "muted small" }, j.status === "queued" ? "waiting for a free slot (one training at a time by default: --max-jobs)"
        : `started ${new Date(j.started * 1000).toLocaleTimeString()}`,
        j.returncode != null ? ` · exit ${j.returncode}` : ""),
      j.log_tail ? h("pre", { class: "log" }, j.log_tail.split("\n").slice(-8).join("\n")) : null,
      resuming === j.id ? resumeForm(j) : null)));
  };
  await refresh();
  every(2000, () => refresh().catch(() => {}));
}

// Continue any stopped or finished run (also one trained from a terminal) with a larger
// budget: the same request as a job's Resume / extend button.
async function continueForm(selected, done) {
  const { runs } = await api("/api/runs");
  const usable = runs.filter((r) => r.has_model && (r.status === "stopped" || r.status === "finished"));
  if (!usable.length) return null;
  const f = h("form", { id: "continue-form", class: "form" },
    h("h2", {}, "Continue a run"),
    field("run", h("select", { name: "resume" }, usable.map((r) => h("option", { value: r.id, selected: r.id === selected },
      `${r.id} (${r.status}, step ${r.last ? r.last.step : 0})`)))),
    field("steps", h("input", { type: "number", name: "steps", min: 1 }), "the new total, more than done so far"),
    field("minutes", h("input", { type: "number", name: "minutes", min: 0, step: "any" }), "the new total wall-clock budget"),
    h("button", { type: "submit", id: "continue-button" }, "Resume / extend"));
  f.addEventListener("submit", async (e) => {
    e.preventDefault();
    const job = await busy(f.querySelector("button"), () => api("/api/jobs", readForm(f)));
    if (job) { toast(`continuing ${job.run}`, "ok"); await done(); }
  });
  if (selected) setTimeout(() => f.scrollIntoView(), 0);
  return f;
}

// -- start --------------------------------------------------------------------------------

async function start() {
  try {
    [state.info, state.settings] = await Promise.all([api("/api/info"), api("/api/settings")]);
    $("#runs-dir").textContent = state.info.runs_dir;
  } catch (e) {
    $("#view").replaceChildren(h("p", { class: "error" }, `cannot reach the studio: ${e.message}`));
    return;
  }
  window.addEventListener("hashchange", route);
  await route();
}

start();
