//! `formation report`: one self-contained HTML file (inline CSS, JavaScript and data; nothing fetched when it
//! opens) with the plots a researcher looks at first. [`plots`] decides what goes into each plot from the
//! run's own files; `plot.js` draws them as SVG; this module loads a run or a study and lays out the page.

pub mod live;
pub mod plots;

use std::path::Path;

use host::layout::RunLayout;
use serde_json::Value;
use trainer::run_dir::RunFiles;

use crate::compare::Comparison;
use crate::error::AnalysisError;
use crate::row::Row;
use crate::sinks::jsonl::read_rows;
use crate::trajectory::{LlcRow, read_llc};
use crate::windows::{Window, read_windows};
use plots::llc_plots;
use plots::{
    Mark, Plot, Point, Series, features_raster, run_plots, series, split_score, window_plots,
};

/// One analyzed run's files, as the report needs them.
pub struct RunData {
    pub name: String,
    pub run_id: String,
    /// The rows of `analysis/checkpoint_metrics.jsonl`.
    pub rows: Vec<Row>,
    pub windows: Vec<Window>,
    pub replays: Vec<Replay>,
    /// The LLC trajectory (`analysis/llc.jsonl`), when `formation llc` made one.
    pub llc: Vec<LlcRow>,
    /// The first few probe examples as the task names their tokens (empty when the probe set is not there).
    pub examples: Vec<ShownExample>,
    /// `analysis/features.json`, when `formation features` made one.
    pub features: Option<Value>,
}

/// A probe example as the report shows it: its tokens by name, the key positions that fall on each, and the
/// answer expected at each answer position.
#[derive(Debug, Clone, PartialEq)]
pub struct ShownExample {
    pub tokens: Vec<String>,
    /// Per position, the names of the key positions there.
    pub keys: Vec<Vec<String>>,
    /// Per position, the answer expected from its logits (answer positions only).
    pub answers: Vec<Option<String>>,
}

/// How many probe examples the report shows.
const SHOWN_EXAMPLES: usize = 3;

/// The first probe examples of a run, with a data-defined task's `token_names` (token ids otherwise).
fn shown_examples(run: &RunLayout) -> Vec<ShownExample> {
    let Ok(probe) = probes::ProbeSet::load(&run.probe_set()) else {
        return vec![];
    };
    let names: Option<Vec<String>> = run.read_config().ok().and_then(|config| {
        let trainer::config::TaskConfig::Sequences { path } = &*config.task else {
            return None;
        };
        let text = std::fs::read_to_string(path.join(trainer::tasks::dataset::MANIFEST)).ok()?;
        toml::from_str::<trainer::tasks::dataset::Manifest>(&text)
            .ok()?
            .token_names
    });
    let name = |id: u32| {
        names
            .as_ref()
            .and_then(|n| n.get(id as usize).cloned())
            .unwrap_or_else(|| id.to_string())
    };
    let e = &probe.examples;
    (0..e.n.min(SHOWN_EXAMPLES))
        .map(|i| {
            let mut keys = vec![vec![]; e.seq_len];
            for key in &probe.key_positions {
                if let Some(at) = keys.get_mut(key.values[i] as usize) {
                    at.push(key.name.clone());
                }
            }
            let mut answers = vec![None; e.seq_len];
            for (j, &pos) in probe.answer_positions.iter().enumerate() {
                answers[pos] = Some(name(e.targets[i * e.n_answers + j]));
            }
            ShownExample {
                tokens: (0..e.seq_len).map(|t| name(e.token(i, t))).collect(),
                keys,
                answers,
            }
        })
        .collect()
}

/// The examples as a table: one row of tokens per example (key positions named above their token, the
/// expected answer below each answer position).
fn examples_table(examples: &[ShownExample]) -> String {
    if examples.is_empty() {
        return String::new();
    }
    let mut html = String::from(
        "<p>Probe examples (key positions above their token, the expected next token below each answer position):</p><table class=\"examples\">",
    );
    for example in examples {
        let cells = |f: &dyn Fn(usize) -> String| -> String {
            (0..example.tokens.len())
                .map(|t| format!("<td>{}</td>", f(t)))
                .collect()
        };
        html.push_str(&format!(
            "<tr class=\"keys\">{}</tr><tr>{}</tr><tr class=\"answers\">{}</tr>",
            cells(&|t| escape(&example.keys[t].join(" "))),
            cells(&|t| format!("<code>{}</code>", escape(&example.tokens[t]))),
            cells(&|t| example.answers[t]
                .as_deref()
                .map_or_else(String::new, |a| format!("→ {}", escape(a)))),
        ));
    }
    html.push_str("</table>");
    html
}

/// A replayed window (`windows/WN/`): its verification and intervention reports.
pub struct Replay {
    pub window: Window,
    pub bit_exact: Option<bool>,
    /// (step, kind, report) of every `interventions/step_S/KIND.json`, by step.
    pub reports: Vec<(u64, String, Value)>,
    /// The window's features across its dense checkpoints (`analysis/features.json`), when made.
    pub features: Option<Value>,
}

/// Reads what the report shows of a run (windows and replays are optional).
pub fn load_run(run: &RunLayout, name: &str) -> Result<RunData, AnalysisError> {
    let manifest = run.read_manifest()?;
    let rows = read_rows(&run.metrics())?;
    // Windows are optional in a report, but a windows file that is there must read.
    let windows: Vec<Window> = if run.birth_windows().exists() {
        read_windows(run)?
    } else {
        vec![]
    };
    let mut replays = vec![];
    for window in &windows {
        let replay = run.window(&window.id);
        if !replay.root.is_dir() {
            continue;
        }
        let bit_exact = read_json(&replay.replay_report()).and_then(|r| r["bit_exact"].as_bool());
        replays.push(Replay {
            window: window.clone(),
            bit_exact,
            reports: intervention_reports(&replay.interventions_dir()),
            features: read_json(&replay.features()),
        });
    }
    Ok(RunData {
        name: name.to_owned(),
        run_id: manifest.run_id,
        rows,
        windows,
        replays,
        llc: read_llc(&run.llc()).map_err(|source| AnalysisError::Unreadable {
            path: run.llc(),
            hint: "remove it, or run `formation llc` again".into(),
            source,
        })?,
        examples: shown_examples(run),
        features: read_json(&run.features()),
    })
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Every `step_S/KIND.json` under an interventions directory, by step then kind.
fn intervention_reports(dir: &Path) -> Vec<(u64, String, Value)> {
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(step) = name
            .strip_prefix("step_")
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let Ok(files) = std::fs::read_dir(entry.path()) else {
            continue;
        };
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "json")
                && let (Some(kind), Some(report)) = (path.file_stem(), read_json(&path))
            {
                out.push((step, kind.to_string_lossy().into_owned(), report));
            }
        }
    }
    out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    out
}

/// A titled part of the page: HTML (already escaped) and plots.
pub struct Section {
    pub heading: String,
    pub html: String,
    pub plots: Vec<Plot>,
    /// Shown folded (the per-run detail of a study).
    pub folded: bool,
}

/// The sections of one run: its plots, its windows with their triggers, and its replayed windows.
pub fn run_sections(run: &RunData, prefix: &str, folded: bool) -> Vec<Section> {
    let mut html = format!(
        "<p>run <code>{}</code>: {} analyzed checkpoints. Birth windows are shaded on every time axis (hover for their triggers).</p>",
        escape(&run.run_id),
        run.rows.len()
    );
    html.push_str(&windows_table(&run.windows));
    html.push_str(&examples_table(&run.examples));
    let mut sections = vec![Section {
        heading: format!("Run {}", run.name),
        html,
        plots: [
            run_plots(prefix, &run.rows, &run.windows),
            llc_plots(prefix, &run.llc, &run.windows),
            features_plot(prefix, run.features.as_ref(), &run.windows),
        ]
        .concat(),
        folded,
    }];
    for replay in &run.replays {
        let verified = match replay.bit_exact {
            Some(true) => "bit-exact at the original checkpoints",
            Some(false) => "NOT bit-exact (see replay.json)",
            None => "verification not recorded",
        };
        let steps: BTreeSetU64 = replay.reports.iter().map(|r| r.0).collect();
        sections.push(Section {
            heading: format!("Run {}: window {} replayed", run.name, replay.window.id),
            html: format!(
                "<p>steps {}–{}, {} dense checkpoints with interventions; replay {verified}.</p>",
                replay.window.start_step,
                replay.window.end_step,
                steps.len()
            ),
            plots: [
                window_plots(
                    &format!("{prefix}-{}", replay.window.id),
                    &replay.window,
                    &replay.reports,
                ),
                features_plot(
                    &format!("{prefix}-{}", replay.window.id),
                    replay.features.as_ref(),
                    std::slice::from_ref(&replay.window),
                ),
            ]
            .concat(),
            folded,
        });
    }
    sections
}

type BTreeSetU64 = std::collections::BTreeSet<u64>;

/// The feature raster of a `features.json`, when there is one with a live latent.
fn features_plot(prefix: &str, features: Option<&Value>, windows: &[Window]) -> Vec<Plot> {
    features
        .and_then(|f| features_raster(format!("{prefix}-features"), f, windows))
        .into_iter()
        .collect()
}

fn windows_table(windows: &[Window]) -> String {
    if windows.is_empty() {
        return "<p>No birth windows (run <code>formation windows</code>).</p>".into();
    }
    let mut html = String::from(
        "<table><tr><th>window</th><th>rank</th><th>steps (peak)</th><th>kind</th><th>confidence</th><th>moved first</th><th>score</th><th>loss fell</th><th>mechanism grew</th><th>complexity changed (LLC)</th><th>strongest triggers</th></tr>",
    );
    for w in windows {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}–{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&w.id),
            w.rank,
            w.start_step,
            w.end_step,
            w.peak_step,
            w.kind,
            w.confidence,
            escape(&w.families.join(" → ")),
            w.score,
            if w.loss_fell { "yes" } else { "no" },
            escape(&w.mechanism_grew.join(", ")),
            escape(
                &w.complexity_changed
                    .iter()
                    .map(|c| format!("{} {:+.1}", c.component, c.change))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            escape(
                &w.triggers
                    .iter()
                    .take(4)
                    .map(|t| format!("{} (peak {}, score {:.1})", t.metric, t.flag.peak_step, t.flag.score))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        ));
    }
    html + "</table>"
}

/// The accuracy a seed overlay shows: the test split's where the run evaluates it, else the probe set's.
fn headline_accuracy(rows: &[Row]) -> (&'static str, fn(&Row) -> Option<f64>) {
    if rows.iter().any(|r| split_score(r, "test", true).is_some()) {
        ("test accuracy", |r| split_score(r, "test", true))
    } else {
        ("probe-set accuracy", |r| Some(r.behavior.accuracy))
    }
}

/// The study's sections: the comparison and decision, seed overlays with birth steps marked, factor plots,
/// then every run folded.
pub fn study_sections(comparison: &Comparison, runs: &[RunData]) -> Vec<Section> {
    let mut sections = vec![];
    let mut html = decision_tables(comparison);
    html.push_str("<p>The full comparison is in <code>compare.json</code> (<code>formation compare</code>).</p>");
    let mut plots = vec![];
    let (label, accuracy) =
        headline_accuracy(runs.first().map(|r| r.rows.as_slice()).unwrap_or(&[]));
    let test_loss: fn(&Row) -> Option<f64> = |r| split_score(r, "test", false);
    for (what, pick, log_y) in [(label, accuracy, false), ("test loss", test_loss, true)] {
        let overlay: Vec<Series> = runs
            .iter()
            .filter_map(|r| series(&r.rows, &r.name, pick))
            .collect();
        let marks = comparison
            .runs
            .iter()
            .filter_map(|r| {
                Some(Mark {
                    label: format!("{} birth", r.name),
                    x: r.birth_step?,
                })
            })
            .collect();
        plots.push(Plot::Lines {
            id: format!("seeds-{}", what.replace(' ', "-")),
            title: format!("{what} by run (vertical lines: birth steps)"),
            x_label: "step (log)".into(),
            log_x: true,
            log_y,
            series: overlay,
            shade: vec![],
            marks,
        });
    }
    if let Some(key) = &comparison.factor {
        let categories: Vec<String> = comparison
            .groups
            .iter()
            .filter_map(|g| g.value.clone())
            .collect();
        let category = |v: &Option<String>| categories.iter().position(|c| Some(c) == v.as_ref());
        for (id, title, log_y, value) in [
            (
                "factor-birth",
                format!("birth step vs {key} (large dot: median)"),
                true,
                0,
            ),
            (
                "factor-accuracy",
                format!("final accuracy vs {key}"),
                false,
                1,
            ),
        ] {
            let mut points: Vec<Point> = vec![];
            for (i, r) in comparison.runs.iter().enumerate() {
                let Some(c) = category(&r.value) else {
                    continue;
                };
                let y = if value == 0 {
                    r.birth_step.map(|s| s as f64)
                } else {
                    r.final_behavior.as_ref().map(|f| f.accuracy)
                };
                points.push(Point {
                    label: r.name.clone(),
                    category: c,
                    y,
                    jitter: ((i % 5) as f64 - 2.0) * 5.0,
                    median: false,
                });
            }
            if value == 0 {
                for g in &comparison.groups {
                    if let (Some(c), Some(m)) = (category(&g.value), g.median_birth_step) {
                        points.push(Point {
                            label: format!("median {}", g.value.as_deref().unwrap_or("")),
                            category: c,
                            y: Some(m),
                            jitter: 0.0,
                            median: true,
                        });
                    }
                }
            }
            plots.push(Plot::Scatter {
                id: id.into(),
                title,
                x_label: key.clone(),
                categories: categories.clone(),
                points,
                log_y: log_y && value == 0,
            });
        }
    }
    sections.push(Section {
        heading: "Comparison and decision".into(),
        html,
        plots,
        folded: false,
    });
    for (i, run) in runs.iter().enumerate() {
        sections.extend(run_sections(run, &format!("r{i}"), true));
    }
    sections
}

fn decision_tables(c: &Comparison) -> String {
    let mut html = String::from(
        "<table><tr><th>run</th><th>seed</th><th>value</th><th>final accuracy</th><th>birth window</th><th>birth step</th><th>localized components</th></tr>",
    );
    for r in &c.runs {
        let window = r.birth_window_text();
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.name),
            r.seed,
            escape(r.value.as_deref().unwrap_or("-")),
            r.final_behavior.as_ref().map(|f| format!("{:.4}", f.accuracy)).unwrap_or("-".into()),
            escape(&window),
            r.birth_step.map(|s| s.to_string()).unwrap_or("-".into()),
            escape(&r.localized.join(", "))
        ));
    }
    html.push_str("</table>");
    for g in &c.groups {
        let label = g.label(c.factor.as_ref());
        html.push_str(&format!(
            "<h3 class=\"{}\">{}: {}</h3><table><tr><th>criterion</th><th></th><th>measured</th><th>threshold</th></tr>",
            if g.decision.ready { "ready" } else { "notready" },
            escape(&label),
            if g.decision.ready { "READY for deep circuit work" } else { "NOT READY for deep circuit work" }
        ));
        for crit in &g.decision.criteria {
            html.push_str(&format!(
                "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(crit.name),
                if crit.passed { "pass" } else { "fail" },
                if crit.passed { "pass" } else { "FAIL" },
                escape(&crit.measured),
                escape(&crit.threshold)
            ));
        }
        html.push_str("</table>");
    }
    html
}

/// `text` safe inside HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The whole page: sections with a placeholder per plot, the plots' data as JSON, the drawing script.
/// Every plot of the sections, in page order.
fn all_plots(sections: &[Section]) -> Vec<&Plot> {
    sections.iter().flat_map(|s| &s.plots).collect()
}

/// The page's content as data, for `formation serve`'s dashboard to draw with the report's own plot code:
/// title, subtitle, sections (heading, HTML, folded, the ids of their plots) and the plots.
pub fn report_data(title: &str, subtitle: &str, sections: &[Section]) -> Value {
    let plots = all_plots(sections);
    let outline: Vec<Value> = sections
        .iter()
        .map(|s| {
            serde_json::json!({
                "heading": s.heading,
                "html": s.html,
                "folded": s.folded,
                "plots": s.plots.iter().map(|p| serde_json::json!({ "id": p.id(), "title": p.title() })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "title": title, "subtitle": subtitle, "sections": outline, "plots": plots })
}

/// The page of `formation serve`: the report's styles and plot code plus the dashboard's, with no data; the
/// page fetches the report's data and each step's view from the server and keeps them current.
pub fn dashboard_page() -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>formation serve</title>\n<style>{css}{dashboard_css}</style></head>\n<body data-plots=\"0\" data-errors=\"-1\" data-rows=\"0\"><header><h1 id=\"title\">formation</h1><p id=\"subtitle\"></p></header>\n<pre id=\"errors\"></pre>\n<div id=\"controls\"><label>step <b id=\"step\">–</b> <input type=\"range\" id=\"slider\" min=\"0\" max=\"0\" value=\"0\"></label> <span id=\"steps\"></span> <label>probe example <input type=\"number\" id=\"example\" min=\"0\" value=\"0\"></label> <select id=\"run\" hidden></select></div>\n<section><h2>At this step</h2><div class=\"grid\"><figure><figcaption>Attention of every head on the probe example (rows: key positions as queries; columns: every position)</figcaption><div id=\"attention\"></div></figure><figure><figcaption>Head scores and ablation effects</figcaption><div id=\"heads\"></div></figure><figure><figcaption>Residual probes: held-out accuracy</figcaption><div id=\"probes\"></div></figure></div></section>\n<div id=\"sections\"></div>\n<script>{plot_js}</script>\n<script>{dashboard_js}</script>\n</body></html>\n",
        css = include_str!("report.css"),
        dashboard_css = DASHBOARD_CSS,
        plot_js = include_str!("plot.js"),
        dashboard_js = include_str!("dashboard.js"),
    )
}

/// What the dashboard adds to the report's styles: the sticky controls, the step marker, the bars.
const DASHBOARD_CSS: &str = "#controls{position:sticky;top:0;background:#fff;padding:6px 0;border-bottom:1px solid #ddd;z-index:1}#slider{width:420px;vertical-align:middle}#attention svg{margin:2px}.step-marker{stroke:#d62728;stroke-width:1.5;fill:none}.bar{fill:#1f77b4}.bar.negative{fill:#d62728}";

pub fn render(title: &str, subtitle: &str, sections: &[Section]) -> String {
    let mut body = String::new();
    for s in sections {
        let figures: String = s
            .plots
            .iter()
            .map(|p| {
                format!(
                    "<figure id=\"plot-{}\"><figcaption>{}</figcaption></figure>",
                    escape(p.id()),
                    escape(p.title())
                )
            })
            .collect();
        let inner = format!("{}<div class=\"grid\">{figures}</div>", s.html);
        if s.folded {
            body.push_str(&format!(
                "<details><summary>{}</summary>{inner}</details>",
                escape(&s.heading)
            ));
        } else {
            body.push_str(&format!(
                "<section><h2>{}</h2>{inner}</section>",
                escape(&s.heading)
            ));
        }
    }
    // `</` cannot appear inside a script element; JSON allows `<\/` for it.
    let data = serde_json::to_string(&serde_json::json!({ "plots": all_plots(sections) }))
        .expect("plots serialize")
        .replace("</", "<\\/");
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>{css}</style></head>\n<body data-plots=\"0\" data-errors=\"-1\"><header><h1>{title}</h1><p>{subtitle}</p></header>\n<pre id=\"errors\"></pre>\n{body}\n<script type=\"application/json\" id=\"formation-data\">{data}</script>\n<script>{js}</script>\n</body></html>\n",
        title = escape(title),
        subtitle = escape(subtitle),
        css = include_str!("report.css"),
        js = include_str!("plot.js"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_show_token_names_keys_above_and_answers_below() {
        let example = ShownExample {
            tokens: vec!["3".into(), "1".into(), "<SEP>".into()],
            keys: vec![vec![], vec!["min".into()], vec!["sep".into()]],
            answers: vec![None, None, Some("1".into())],
        };
        let html = examples_table(&[example]);
        assert!(html.contains("<td>min</td><td>sep</td></tr>"), "{html}");
        assert!(
            html.contains("<code>&lt;SEP&gt;</code>"),
            "names are escaped: {html}"
        );
        assert!(html.contains("<td></td><td></td><td>→ 1</td>"), "{html}");
        assert_eq!(examples_table(&[]), "");
    }

    #[test]
    fn the_page_embeds_its_data_safely_and_fetches_nothing() {
        let plot = Plot::Lines {
            id: "x".into(),
            title: "a </script> title".into(),
            x_label: "step".into(),
            log_x: false,
            log_y: false,
            series: vec![Series {
                name: "</script><b>".into(),
                x: vec![0],
                y: vec![Some(1.0)],
            }],
            shade: vec![],
            marks: vec![],
        };
        let page = render(
            "t",
            "s",
            &[Section {
                heading: "h".into(),
                html: String::new(),
                plots: vec![plot],
                folded: false,
            }],
        );
        // One closing tag per script element, none from the data.
        assert_eq!(page.matches("</script>").count(), 2);
        assert!(page.contains("<figcaption>a &lt;/script&gt; title</figcaption>"));
        for remote in ["http://", "https://", "src=", "href="] {
            let outside_js = page.replace("http://www.w3.org/2000/svg", "");
            assert!(!outside_js.contains(remote), "the page refers to {remote}");
        }
    }
}
