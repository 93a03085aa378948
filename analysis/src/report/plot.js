// Draws the plots of a formation report as inline SVG from the JSON in #formation-data (no network, no
// library). Every drawn series keeps its data values in data-* attributes (data-name, data-x, data-y; heatmap
// cells data-row, data-step, data-v) so a test can check what is on screen against the run's JSONL.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 560, H = 250, M = { l: 58, r: 12, t: 10, b: 34 };
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#7b4173", "#3182bd", "#e6550d"];

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function scale(lo, hi, a, b, log) {
    const f = log ? Math.log10 : (v) => v;
    const l = f(lo), h = f(hi);
    return (v) => a + (h === l ? 0.5 : (f(v) - l) / (h - l)) * (b - a);
  }

  function ticks(lo, hi, log) {
    if (log) {
      const out = [];
      for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
        const v = Math.pow(10, e);
        if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
      }
      return out.length >= 2 ? out : [lo, hi];
    }
    const step = Math.pow(10, Math.floor(Math.log10((hi - lo) || 1)));
    const n = (hi - lo) / step, unit = n > 5 ? step * 2 : n > 2 ? step : step / 2;
    const out = [];
    for (let v = Math.ceil(lo / unit) * unit; v <= hi + 1e-12; v += unit) out.push(+v.toPrecision(6));
    return out;
  }

  // Ticks of a log step axis drawn at step + 1: step 0, then steps 1, 10, 100, … inside [lo, hi].
  function stepTicks(lo, hi) {
    const out = lo <= 1 ? [1] : [];
    for (let v = 1; v + 1 <= hi; v *= 10) if (v + 1 >= lo) out.push(v + 1);
    return out;
  }

  function fmt(v) {
    const a = Math.abs(v);
    return a !== 0 && (a >= 1e4 || a < 1e-2) ? v.toExponential(0) : String(+v.toPrecision(3));
  }

  function axes(svg, xs, ys, xt, yt, xlabel, stepAxis) {
    el("line", { x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b, stroke: "#444" }, svg);
    el("line", { x1: M.l, x2: M.l, y1: M.t, y2: H - M.b, stroke: "#444" }, svg);
    for (const t of xt) {
      const x = xs(t);
      el("line", { x1: x, x2: x, y1: H - M.b, y2: H - M.b + 4, stroke: "#444" }, svg);
      el("text", { x: x, y: H - M.b + 15, "text-anchor": "middle", class: "tick" }, svg).textContent =
        fmt(stepAxis ? t - 1 : t);
    }
    for (const t of yt) {
      const y = ys(t);
      el("line", { x1: M.l, x2: W - M.r, y1: y, y2: y, stroke: "#eee" }, svg);
      el("text", { x: M.l - 5, y: y + 4, "text-anchor": "end", class: "tick" }, svg).textContent = fmt(t);
    }
    el("text", { x: (M.l + W - M.r) / 2, y: H - 4, "text-anchor": "middle", class: "label" }, svg).textContent =
      xlabel;
  }

  function shade(svg, plot, xs) {
    for (const s of plot.shade || []) {
      const a = xs(Math.max(s.start, plot.xmin)), b = xs(Math.min(s.end, plot.xmax));
      const r = el("rect", { x: a, y: M.t, width: Math.max(b - a, 2), height: H - M.t - M.b, class: "window",
        "data-window": s.label }, svg);
      el("title", {}, r).textContent = s.label + " (" + s.start_step + "–" + s.end_step + "): " + s.note;
      el("text", { x: a + 2, y: M.t + 10, class: "wlabel" }, svg).textContent = s.label;
    }
  }

  function lines(fig, plot) {
    const pts = plot.series.flatMap((s) => s.x.map((x, i) => [x, s.y[i]]).filter((p) => p[1] !== null &&
      (!plot.log_y || p[1] > 0)));
    if (pts.length === 0) { fig.appendChild(document.createTextNode("no data")); return; }
    const xv = pts.map((p) => p[0] + (plot.log_x ? 1 : 0)), yv = pts.map((p) => p[1]);
    plot.xmin = Math.min(...xv); plot.xmax = Math.max(...xv);
    let ylo = Math.min(...yv), yhi = Math.max(...yv);
    if (ylo === yhi) { ylo -= 0.5; yhi += 0.5; }
    const svg = el("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, "data-plot": plot.id });
    fig.appendChild(svg);
    const xs = scale(plot.xmin, plot.xmax, M.l, W - M.r, plot.log_x);
    const ys = scale(ylo, yhi, H - M.b, M.t, plot.log_y);
    // Where a step falls on this plot (the dashboard's step marker), or null outside its range.
    const off = plot.log_x ? 1 : 0;
    svg.stepX = (step) => step + off >= plot.xmin && step + off <= plot.xmax ? xs(step + off) : null;
    axes(svg, xs, ys, plot.log_x ? stepTicks(plot.xmin, plot.xmax) : ticks(plot.xmin, plot.xmax, false),
      ticks(ylo, yhi, plot.log_y), plot.x_label, plot.log_x);
    shade(svg, plot, xs);
    const legend = document.createElement("div");
    legend.className = "legend";
    plot.series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const keep = s.x.map((x, j) => [x, s.y[j]]).filter((p) => p[1] !== null && (!plot.log_y || p[1] > 0));
      const d = keep.map((p, j) => (j ? "L" : "M") + xs(p[0] + (plot.log_x ? 1 : 0)).toFixed(1) + "," +
        ys(p[1]).toFixed(1)).join("");
      el("path", { d: d || "M0,0", fill: "none", stroke: color, "stroke-width": 1.6, "data-name": s.name,
        "data-x": JSON.stringify(keep.map((p) => p[0])), "data-y": JSON.stringify(keep.map((p) => p[1])) }, svg);
      if (keep.length === 1) el("circle", { cx: xs(keep[0][0] + (plot.log_x ? 1 : 0)), cy: ys(keep[0][1]),
        r: 3, fill: color }, svg);
      const item = document.createElement("span");
      item.innerHTML = `<i style="background:${color}"></i>`;
      item.appendChild(document.createTextNode(s.name));
      legend.appendChild(item);
    });
    for (const m of plot.marks || []) {
      const x = xs(m.x + (plot.log_x ? 1 : 0));
      el("line", { x1: x, x2: x, y1: M.t, y2: H - M.b, class: "mark", "data-mark": m.label }, svg);
    }
    fig.appendChild(legend);
  }

  function heatmap(fig, plot) {
    const rows = plot.rows.length, cols = plot.steps.length;
    if (rows === 0 || cols === 0) { fig.appendChild(document.createTextNode("no data")); return; }
    const cell = Math.max(4, Math.min(14, Math.floor(300 / rows)));
    const left = 190, h = rows * cell + M.t + M.b, w = W + 80;
    const svg = el("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, "data-plot": plot.id });
    fig.appendChild(svg);
    // Columns are checkpoints in order (log-spaced steps get equal width); ticks name their steps.
    const cw = (W - left - M.r) / cols;
    // The column of a step (the dashboard's step marker), or null when it is not a column.
    svg.stepColumn = (step) => {
      const c = plot.steps.indexOf(step);
      return c < 0 ? null : { x: left + c * cw, y: M.t, width: cw, height: rows * cell };
    };
    const lo = plot.lo, hi = plot.hi;
    const color = (v) => {
      const t = Math.max(0, Math.min(1, (v - lo) / ((hi - lo) || 1)));
      return `rgb(${Math.round(255 - 220 * t)},${Math.round(255 - 160 * t)},${Math.round(255 - 60 * t)})`;
    };
    plot.z.forEach((row, r) => {
      el("text", { x: left - 4, y: M.t + r * cell + cell - 2, "text-anchor": "end", class: "tick" }, svg)
        .textContent = plot.rows[r];
      row.forEach((v, c) => {
        if (v === null) return;
        const rect = el("rect", { x: left + c * cw, y: M.t + r * cell, width: cw + 0.3, height: cell,
          fill: color(v), "data-row": plot.rows[r], "data-step": plot.steps[c], "data-v": v }, svg);
        el("title", {}, rect).textContent = `${plot.rows[r]} @ ${plot.steps[c]}: ${fmt(v)}`;
      });
    });
    const every = Math.max(1, Math.ceil(cols / 8));
    plot.steps.forEach((s, c) => {
      if (c % every) return;
      el("text", { x: left + (c + 0.5) * cw, y: M.t + rows * cell + 14, "text-anchor": "middle", class: "tick" },
        svg).textContent = fmt(s);
    });
    el("text", { x: (left + W) / 2, y: h - 4, "text-anchor": "middle", class: "label" }, svg).textContent =
      "checkpoint step";
    for (const s of plot.shade || []) {
      const inside = plot.steps.map((st, c) => [st, c]).filter(([st]) => st >= s.start && st <= s.end);
      if (!inside.length) continue;
      const a = inside[0][1], b = inside[inside.length - 1][1];
      const r = el("rect", { x: left + a * cw, y: M.t, width: (b - a + 1) * cw, height: rows * cell,
        class: "window-outline", "data-window": s.label }, svg);
      el("title", {}, r).textContent = s.label + ": " + s.note;
    }
    // Marked cells (a latent's birth step): a dot in the cell.
    for (const m of plot.marks || []) {
      const r = plot.rows.indexOf(m.row), c = plot.steps.indexOf(m.step);
      if (r < 0 || c < 0) continue;
      const dot = el("circle", { cx: left + (c + 0.5) * cw, cy: M.t + (r + 0.5) * cell, r: Math.max(2, cell / 3),
        class: "birth", "data-row": m.row, "data-step": m.step }, svg);
      el("title", {}, dot).textContent = `${m.row} born at ${m.step}`;
    }
    for (let i = 0; i <= 4; i++) {
      const v = lo + (hi - lo) * i / 4;
      el("rect", { x: W + 10, y: M.t + i * 14, width: 12, height: 12, fill: color(v) }, svg);
      el("text", { x: W + 26, y: M.t + i * 14 + 10, class: "tick" }, svg).textContent = fmt(v);
    }
  }

  function scatter(fig, plot) {
    const ys = plot.points.map((p) => p.y).filter((y) => y !== null);
    if (!ys.length) { fig.appendChild(document.createTextNode("no data")); return; }
    let lo = Math.min(...ys), hi = Math.max(...ys);
    if (lo === hi) { lo = plot.log_y ? lo / 2 : lo - 1; hi = plot.log_y ? hi * 2 : hi + 1; }
    const svg = el("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, "data-plot": plot.id });
    fig.appendChild(svg);
    const n = plot.categories.length;
    const xs = (i) => M.l + (i + 0.5) * (W - M.l - M.r) / n;
    const yscale = scale(lo, hi, H - M.b, M.t, plot.log_y);
    axes(svg, (v) => v, yscale, [], ticks(lo, hi, plot.log_y), plot.x_label, false);
    plot.categories.forEach((c, i) => {
      el("text", { x: xs(i), y: H - M.b + 15, "text-anchor": "middle", class: "tick" }, svg).textContent = c;
    });
    for (const p of plot.points) {
      if (p.y === null) continue;
      const dot = el("circle", { cx: xs(p.category) + (p.jitter || 0), cy: yscale(p.y), r: p.median ? 6 : 4,
        class: p.median ? "median" : "point", "data-name": p.label, "data-y": p.y }, svg);
      el("title", {}, dot).textContent = `${p.label}: ${fmt(p.y)}`;
    }
  }

  function draw(fig, plot) {
    ({ lines, heatmap, scatter })[plot.type](fig, plot);
  }
  // The dashboard of `formation serve` draws the same plots with these.
  window.formationPlots = { draw, el, NS };

  const errors = [];
  window.addEventListener("error", (e) => errors.push(String(e.message)));
  function render() {
    const source = document.getElementById("formation-data");
    if (!source) return;
    const data = JSON.parse(source.textContent);
    let drawn = 0;
    for (const plot of data.plots) {
      const fig = document.getElementById("plot-" + plot.id);
      if (!fig) { errors.push("no place for plot " + plot.id); continue; }
      try {
        draw(fig, plot);
        drawn++;
      } catch (e) {
        errors.push(plot.id + ": " + e);
        console.error(plot.id, e);
      }
    }
    document.body.dataset.plots = String(drawn);
    document.body.dataset.errors = String(errors.length);
    if (errors.length) document.getElementById("errors").textContent = errors.join("\n");
  }
  document.addEventListener("DOMContentLoaded", render);
})();
