// The live dashboard of `formation serve`: the report's panels, redrawn when the run writes new rows (polled
// every second, no page reload), and one step slider that moves every per-checkpoint view together: a marker
// on every time series, the heatmaps' column, every head's attention pattern on one probe example (from that
// step's HDF5 file), the head scores and ablation effects, and the residual-probe column. Everything drawn
// keeps its values in data-* attributes so a test can check the screen against the files.
"use strict";
(function () {
  const { draw, el } = window.formationPlots;
  const errors = [];
  const state = { stamp: null, steps: [], step: null, follow: true, example: 0, run: "", runs: [] };
  const $ = (id) => document.getElementById(id);

  function fail(what) {
    errors.push(String(what));
    document.body.dataset.errors = String(errors.length);
    $("errors").textContent = errors.join("\n");
  }
  window.addEventListener("error", (e) => fail(e.message));

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
    return response.json();
  }

  const query = () => (state.run ? `&run=${encodeURIComponent(state.run)}` : "");

  // The report's sections and plots, drawn anew from the server's data.
  function drawReport(data) {
    $("title").textContent = data.title;
    $("subtitle").textContent = data.subtitle;
    const root = $("sections");
    root.textContent = "";
    for (const section of data.sections) {
      const box = document.createElement(section.folded ? "details" : "section");
      const heading = document.createElement(section.folded ? "summary" : "h2");
      heading.textContent = section.heading;
      box.appendChild(heading);
      const html = document.createElement("div");
      html.innerHTML = section.html;
      box.appendChild(html);
      const grid = document.createElement("div");
      grid.className = "grid";
      for (const plot of section.plots) {
        const fig = document.createElement("figure");
        fig.id = "plot-" + plot.id;
        const caption = document.createElement("figcaption");
        caption.textContent = plot.title;
        fig.appendChild(caption);
        grid.appendChild(fig);
      }
      box.appendChild(grid);
      root.appendChild(box);
    }
    let drawn = 0;
    for (const plot of data.plots) {
      const fig = $("plot-" + plot.id);
      try {
        draw(fig, plot);
        drawn++;
      } catch (e) {
        fail(plot.id + ": " + e);
      }
    }
    document.body.dataset.plots = String(drawn);
  }

  function setSteps(steps) {
    state.steps = steps;
    const slider = $("slider");
    slider.max = String(Math.max(0, steps.length - 1));
    if (state.follow || !steps.includes(state.step)) state.step = steps.length ? steps[steps.length - 1] : null;
    slider.value = String(Math.max(0, steps.indexOf(state.step)));
    document.body.dataset.rows = String(steps.length);
    $("steps").textContent = steps.length ? `${steps.length} checkpoints, ${steps[0]}–${steps[steps.length - 1]}` : "no checkpoint analyzed yet";
  }

  async function poll() {
    try {
      const since = state.stamp ? `since=${encodeURIComponent(state.stamp)}` : "";
      const data = await getJSON("/api/report?" + since + query());
      if (data.stamp !== state.stamp) {
        state.stamp = data.stamp;
        if (data.runs.length && !state.runs.length) chooseRuns(data.runs);
        drawReport(data);
        setSteps(data.steps);
        await showStep();
      }
    } catch (e) {
      fail(e);
    }
    setTimeout(poll, 1000);
  }

  function chooseRuns(runs) {
    state.runs = runs;
    state.run = runs[0];
    const select = $("run");
    select.hidden = false;
    for (const name of runs) {
      const option = document.createElement("option");
      option.value = option.textContent = name;
      select.appendChild(option);
    }
  }

  // Markers on every time series and around every heatmap's column at the slider's step.
  function markStep(step) {
    for (const old of document.querySelectorAll(".step-marker")) old.remove();
    for (const svg of document.querySelectorAll("svg[data-plot]")) {
      if (svg.stepX) {
        const x = svg.stepX(step);
        if (x === null) continue;
        const box = svg.viewBox.baseVal;
        el("line", { x1: x, x2: x, y1: 10, y2: box.height - 34, class: "step-marker", "data-step": step }, svg);
      } else if (svg.stepColumn) {
        const c = svg.stepColumn(step);
        if (c) el("rect", { ...c, class: "step-marker", "data-step": step }, svg);
      }
    }
  }

  async function showStep() {
    const step = state.step;
    document.body.dataset.step = step === null ? "" : String(step);
    $("step").textContent = step === null ? "–" : String(step);
    if (step === null) return;
    markStep(step);
    let view;
    try {
      view = await getJSON(`/api/step?step=${step}&example=${state.example}` + query());
    } catch (e) {
      // The newest row can be ahead of its arrays for a moment: keep the last view.
      if (String(e).includes(" 404 ")) return;
      throw e;
    }
    if (view.step !== state.step) return; // the slider moved on meanwhile
    $("example").max = String(Math.max(0, view.examples - 1));
    drawAttention(view);
    drawHeads(view);
    drawProbes(view);
    document.body.dataset.shownStep = String(view.step);
  }

  // One small heatmap per head: rows are the queries (the key positions, or every position when the step
  // file stores whole patterns), columns every key position k, the key positions' initials above their
  // columns, each cell's token in its hover text.
  function drawAttention(view) {
    const box = $("attention");
    box.textContent = "";
    const columns = {};
    for (const [name, at] of Object.entries(view.key_columns || {})) columns[at] = name;
    for (const a of view.attention) {
      const q = a.pattern.length, k = a.pattern[0].length;
      const cell = q > 8 ? 6 : 9, left = 70, top = 26;
      const w = left + k * cell + 4, h = top + q * cell + 4;
      const svg = el("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, "data-attention": `L${a.layer}H${a.head}` });
      el("text", { x: left, y: 11, class: "label" }, svg).textContent = `L${a.layer}H${a.head}`;
      for (const [at, name] of Object.entries(columns)) {
        el("text", { x: left + (+at + 0.5) * cell, y: top - 3, "text-anchor": "middle", class: "tick" }, svg)
          .textContent = name.slice(0, 1);
      }
      a.pattern.forEach((row, i) => {
        const label = (a.queries || view.key_positions)[i];
        if (q <= 8 || i % 4 === 0) {
          el("text", { x: left - 3, y: top + i * cell + cell - 1, "text-anchor": "end", class: "tick" }, svg)
            .textContent = label === undefined ? String(i) : String(label);
        }
        row.forEach((v, j) => {
          const t = Math.max(0, Math.min(1, v));
          const rect = el("rect", { x: left + j * cell, y: top + i * cell, width: cell, height: cell,
            fill: `rgb(${Math.round(255 - 220 * t)},${Math.round(255 - 160 * t)},${Math.round(255 - 60 * t)})`,
            "data-layer": a.layer, "data-head": a.head, "data-q": i, "data-k": j, "data-v": v }, svg);
          const token = view.tokens ? ` (token ${view.tokens[j]})` : "";
          el("title", {}, rect).textContent = `query ${label}, key position ${j}${token}: ${(+v.toPrecision(3))}`;
        });
      });
      box.appendChild(svg);
    }
  }

  function bars(box, items, attrs) {
    const row = 14, left = 230, width = 260;
    const hi = Math.max(1e-9, ...items.map((i) => Math.abs(i.value)));
    const svg = el("svg", { width: left + width + 60, height: items.length * row + 6 });
    items.forEach((item, i) => {
      const y = 3 + i * row, v = item.value, len = (Math.abs(v) / hi) * width;
      el("text", { x: left - 4, y: y + row - 4, "text-anchor": "end", class: "tick" }, svg).textContent = item.label;
      el("rect", { x: left, y: y + 1, width: len, height: row - 3, class: v < 0 ? "bar negative" : "bar",
        ...attrs(item), "data-v": v }, svg);
      el("text", { x: left + len + 3, y: y + row - 4, class: "tick" }, svg).textContent = (+v.toPrecision(3)).toString();
    });
    box.appendChild(svg);
  }

  function drawHeads(view) {
    const box = $("heads");
    box.textContent = "";
    const items = [];
    for (const [head, row] of Object.entries(view.heads)) {
      if (row.ablation_dloss !== undefined) items.push({ label: `${head} ablation Δloss`, head, metric: "ablation_dloss", value: row.ablation_dloss });
      for (const [score, value] of Object.entries(row.scores || {})) items.push({ label: `${head} ${score}`, head, metric: score, value });
    }
    for (const [block, row] of Object.entries(view.mlp)) {
      if (row.ablation_dloss !== undefined) items.push({ label: `MLP ${block} ablation Δloss`, head: block, metric: "ablation_dloss", value: row.ablation_dloss });
    }
    bars(box, items, (i) => ({ "data-head": i.head, "data-metric": i.metric }));
  }

  function drawProbes(view) {
    const box = $("probes");
    box.textContent = "";
    bars(box, view.probes.map((p) => ({ label: p.row, value: p.accuracy })), (i) => ({ "data-row": i.label }));
  }

  $("slider").addEventListener("input", () => {
    const i = Number($("slider").value);
    state.step = state.steps[i];
    state.follow = i === state.steps.length - 1;
    showStep().catch(fail);
  });
  $("example").addEventListener("change", () => {
    state.example = Math.max(0, Number($("example").value) || 0);
    showStep().catch(fail);
  });
  $("run").addEventListener("change", () => {
    state.run = $("run").value;
    state.stamp = null;
  });
  document.body.dataset.errors = "0";
  poll();
})();
