"use strict";
// A small line chart drawn on <canvas>, no library: one panel per phase (D, G, main, monitor ...)
// with that phase's logged values against step, like plots/losses.png but updated live.
const Chart = (() => {
  const COLOURS = ["#d1495b", "#00798c", "#edae49", "#66a182", "#30638e", "#8d6a9f", "#2e4057", "#c46d5e"];

  // {phase: {name: [[step, value], ...]}} from metrics.jsonl rows; keys look like "D/loss".
  function series(rows) {
    const out = {};
    for (const r of rows) {
      for (const [k, v] of Object.entries(r)) {
        const cut = k.indexOf("/");
        if (cut < 0 || typeof v !== "number" || !isFinite(v)) continue;
        const phase = k.slice(0, cut), name = k.slice(cut + 1);
        ((out[phase] ??= {})[name] ??= []).push([r.step, v]);
      }
    }
    return out;
  }

  // About `count` round tick values covering [lo, hi].
  function ticks(lo, hi, count) {
    const span = hi - lo || Math.abs(hi) || 1;
    const raw = span / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(+t.toPrecision(12));
    return out;
  }

  function fmt(v) {
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1);
    return +v.toPrecision(3) + "";
  }

  function drawPanel(canvas, title, named) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 320, h = canvas.clientHeight || 200;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const m = { l: 52, r: 10, t: 22, b: 26 };
    const pts = Object.values(named).flat();
    const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
    let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (x1 === x0) x1 = x0 + 1;
    const pad = (y1 - y0) * 0.06 || Math.abs(y0) * 0.1 || 1;
    y0 -= pad; y1 += pad;
    const X = (x) => m.l + ((x - x0) / (x1 - x0)) * (w - m.l - m.r);
    const Y = (y) => h - m.b - ((y - y0) / (y1 - y0)) * (h - m.t - m.b);
    g.font = "11px system-ui, sans-serif";
    g.strokeStyle = "#e3e3e3"; g.fillStyle = "#666"; g.lineWidth = 1;
    g.textAlign = "right"; g.textBaseline = "middle";
    for (const t of ticks(y0, y1, 5)) {
      g.beginPath(); g.moveTo(m.l, Y(t)); g.lineTo(w - m.r, Y(t)); g.stroke();
      g.fillText(fmt(t), m.l - 5, Y(t));
    }
    g.textAlign = "center"; g.textBaseline = "top";
    for (const t of ticks(x0, x1, 5)) {
      if (t < x0 || t > x1) continue;
      g.beginPath(); g.moveTo(X(t), m.t); g.lineTo(X(t), h - m.b); g.stroke();
      g.fillText(fmt(t), X(t), h - m.b + 5);
    }
    g.strokeStyle = "#999"; g.strokeRect(m.l, m.t, w - m.l - m.r, h - m.t - m.b);
    g.textAlign = "left"; g.textBaseline = "alphabetic"; g.fillStyle = "#222";
    g.font = "bold 12px system-ui, sans-serif";
    g.fillText(title, m.l, m.t - 7);
    g.font = "11px system-ui, sans-serif";
    let lx = w - m.r, k = 0;
    const names = Object.keys(named).sort();
    for (const name of names.slice().reverse()) {   // legend, right-aligned on the title line
      const colour = COLOURS[names.indexOf(name) % COLOURS.length];
      lx -= g.measureText(name).width;
      g.fillStyle = "#444"; g.fillText(name, lx, m.t - 7);
      lx -= 12; g.fillStyle = colour; g.fillRect(lx, m.t - 15, 9, 9); lx -= 10; k++;
    }
    names.forEach((name, i) => {
      const line = named[name];
      g.strokeStyle = COLOURS[i % COLOURS.length]; g.lineWidth = 1.5; g.beginPath();
      line.forEach(([x, y], j) => (j ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
      if (line.length === 1) g.arc(X(line[0][0]), Y(line[0][1]), 2.5, 0, 2 * Math.PI);
      g.stroke();
    });
  }

  // Draw every phase of `rows` into `container` (canvases are reused between updates).
  function render(container, rows) {
    const byPhase = series(rows);
    const phases = Object.keys(byPhase).sort((a, b) => (a === "monitor") - (b === "monitor") || a.localeCompare(b));
    if (!phases.length) {
      container.replaceChildren(Object.assign(document.createElement("p"), {
        className: "muted", textContent: "No losses logged yet: the first line comes after log_every steps.",
      }));
      return 0;
    }
    const keep = new Set(phases);
    for (const c of [...container.querySelectorAll("canvas")]) if (!keep.has(c.dataset.phase)) c.remove();
    container.querySelector("p")?.remove();
    const canvases = phases.map((phase) => {
      let c = container.querySelector(`canvas[data-phase="${CSS.escape(phase)}"]`);
      if (!c) {
        c = document.createElement("canvas");
        c.dataset.phase = phase;
        c.setAttribute("role", "img");
        container.appendChild(c);
      }
      return c;
    });
    // sizes are read only once every panel is in place (adding one narrows the others)
    let total = 0;
    for (const [i, phase] of phases.entries()) {
      const c = canvases[i];
      const n = Object.values(byPhase[phase]).reduce((s, l) => s + l.length, 0);
      c.dataset.points = n;
      c.setAttribute("aria-label", `${phase}: ${Object.keys(byPhase[phase]).join(", ")} over ${n} points`);
      drawPanel(c, phase, byPhase[phase]);
      total += n;
    }
    container.dataset.points = total;
    return total;
  }

  // redraw on resize, from the rows last given to each container
  const last = new Map();
  const renderKeep = (container, rows) => {
    for (const c of last.keys()) if (!c.isConnected) last.delete(c);  // replaced cards' charts
    last.set(container, rows);
    return render(container, rows);
  };
  window.addEventListener("resize", () => {
    for (const [c, rows] of last) if (c.isConnected) render(c, rows); else last.delete(c);
  });

  return { render: renderKeep, series, ticks };
})();
