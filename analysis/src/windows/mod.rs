//! Birth windows (SPEC §6): narrow step ranges where something important changes, found from the rows of
//! `analysis/checkpoint_metrics.jsonl` by the [`detector`] on every tracked series, plus the independent
//! essential-dynamics trigger on the output trajectory. Overlapping flags are merged across metrics into
//! ranked, explainable windows written to `analysis/birth_windows.json`. The method is documented for users in
//! `docs/windows.md`.

pub mod detector;

use std::collections::BTreeMap;

use faer::Mat;
use host::layout::RunLayout;
use serde::{Deserialize, Serialize};
use trainer::config::WindowsConfig;

use crate::error::AnalysisError;
use crate::row::Row;
use detector::{Flag, detect, turning_points};

/// The name of the essential-dynamics trigger.
pub const ESSENTIAL_DYNAMICS: &str = "essential_dynamics";

/// One metric's reason for a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// Dotted path of the metric in the row (or `essential_dynamics`).
    pub metric: String,
    #[serde(flatten)]
    pub flag: Flag,
}

/// A birth window: a merged step range with every trigger that fell in it. Only `id`, `start_step` and
/// `end_step` are required when reading one, so a window written by hand (a range a researcher wants
/// replayed) is accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// `W0`, `W1`, … in step order (the name `formation replay --window N` uses).
    pub id: String,
    /// 1 = the strongest window.
    #[serde(default)]
    pub rank: usize,
    pub start_step: u64,
    pub end_step: u64,
    /// Sum of the triggers' scores (the ranking key).
    #[serde(default)]
    pub score: f64,
    /// The probe-set loss fell across the window.
    #[serde(default)]
    pub loss_fell: bool,
    /// Components whose mean-ablation Δloss grew across the window (the mechanism they carry grew), largest
    /// growth first.
    #[serde(default)]
    pub mechanism_grew: Vec<String>,
    #[serde(default)]
    pub triggers: Vec<Trigger>,
}

/// What `formation windows` writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BirthWindows {
    pub run_id: String,
    pub method: &'static str,
    pub config: WindowsConfig,
    /// Number of series examined.
    pub series: usize,
    pub windows: Vec<Window>,
}

/// The series the detector examines, by dotted path: behavior and full-split evaluation, every residual probe's
/// accuracy and selectivity, every head score and ablation effect, MLP ablation effects, and the CKA of each
/// boundary with the previous checkpoint (a drop is a reorganization).
pub fn tracked_series(rows: &[Row]) -> BTreeMap<String, Vec<(u64, f64)>> {
    let mut series: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    for row in rows {
        for (path, x) in row.series() {
            if is_tracked(&path) {
                series.entry(path).or_default().push((row.step, x));
            }
        }
    }
    series
}

fn is_tracked(path: &str) -> bool {
    let leaf = path.rsplit('.').next().unwrap_or_default();
    let top = path.split('.').next().unwrap_or_default();
    match top {
        "behavior" | "eval" => !path.contains("per_position"),
        "residual" => matches!(leaf, "accuracy" | "selectivity"),
        "heads" => path.contains(".scores.") || leaf == "ablation_dloss",
        "mlp" => leaf == "ablation_dloss",
        "dynamics" => path.starts_with("dynamics.cka."),
        _ => false,
    }
}

/// The leading principal components of the rows' output projections, one point per row.
pub fn essential_trajectory(rows: &[Row], components: usize) -> Option<(Vec<u64>, Vec<Vec<f64>>)> {
    let points: Vec<(u64, Vec<f64>)> = rows
        .iter()
        .filter_map(|r| {
            let p = &r.dynamics.output_projection;
            (!p.is_empty()).then(|| (r.step, p.clone()))
        })
        .collect();
    let (n, dims) = (points.len(), points.first()?.1.len());
    if n < 3 || dims == 0 || points.iter().any(|(_, p)| p.len() != dims) {
        return None;
    }
    let mean: Vec<f64> = (0..dims)
        .map(|c| points.iter().map(|(_, p)| p[c]).sum::<f64>() / n as f64)
        .collect();
    let centred = Mat::<f64>::from_fn(n, dims, |i, c| points[i].1[c] - mean[c]);
    let svd = centred.thin_svd().ok()?;
    let (u, s) = (svd.U(), svd.S().column_vector());
    let k = components.min(dims).min(n);
    let trajectory = (0..n)
        .map(|i| (0..k).map(|c| u[(i, c)] * s[c]).collect())
        .collect();
    Some((points.iter().map(|(s, _)| *s).collect(), trajectory))
}

/// Every window of a run, merged across metrics and ranked.
/// The windows of `run` as `formation windows` wrote them (`analysis/birth_windows.json`); one error naming
/// the file when it is missing or is not a windows file.
pub fn read_windows(run: &RunLayout) -> Result<Vec<Window>, AnalysisError> {
    #[derive(Deserialize)]
    struct WindowsFile {
        windows: Vec<Window>,
    }
    let path = run.birth_windows();
    let text = std::fs::read_to_string(&path).map_err(|source| AnalysisError::Unreadable {
        path: path.clone(),
        hint: format!("run `formation windows {}` first", run.root.display()),
        source,
    })?;
    serde_json::from_str::<WindowsFile>(&text)
        .map(|file| file.windows)
        .map_err(|source| AnalysisError::Json {
            path: path.clone(),
            what: "is not a windows file".into(),
            source,
        })
}

pub fn find_windows(run_id: &str, rows: &[Row], config: &WindowsConfig) -> BirthWindows {
    let series = tracked_series(rows);
    let mut triggers = vec![];
    for (metric, points) in &series {
        let (steps, values): (Vec<u64>, Vec<f64>) = points.iter().copied().unzip();
        for flag in detect(&steps, &values, config) {
            triggers.push(Trigger {
                metric: metric.clone(),
                flag,
            });
        }
    }
    if let Some((steps, trajectory)) = essential_trajectory(rows, config.components) {
        for flag in turning_points(&steps, &trajectory, config) {
            triggers.push(Trigger {
                metric: ESSENTIAL_DYNAMICS.into(),
                flag,
            });
        }
    }
    let windows = merge(triggers, &series);
    BirthWindows {
        run_id: run_id.to_owned(),
        method: "docs/windows.md",
        config: config.clone(),
        series: series.len(),
        windows,
    }
}

/// Merges triggers whose step ranges overlap into windows, tags them, ranks them by total score and names them
/// in step order.
fn merge(mut triggers: Vec<Trigger>, series: &BTreeMap<String, Vec<(u64, f64)>>) -> Vec<Window> {
    triggers.sort_by_key(|t| (t.flag.start_step, t.flag.end_step));
    let mut groups: Vec<Vec<Trigger>> = vec![];
    for trigger in triggers {
        match groups.last_mut() {
            Some(group)
                if trigger.flag.start_step
                    <= group.iter().map(|t| t.flag.end_step).max().unwrap_or(0) =>
            {
                group.push(trigger)
            }
            _ => groups.push(vec![trigger]),
        }
    }
    let value_at = |metric: &str, step: u64| -> Option<f64> {
        let points = series.get(metric)?;
        points
            .iter()
            .rev()
            .find(|(s, _)| *s <= step)
            .or(points.first())
            .map(|(_, v)| *v)
    };
    let mut windows: Vec<Window> = groups
        .into_iter()
        .enumerate()
        .map(|(i, mut triggers)| {
            triggers.sort_by(|a, b| b.flag.score.total_cmp(&a.flag.score));
            let start_step = triggers
                .iter()
                .map(|t| t.flag.start_step)
                .min()
                .unwrap_or(0);
            let end_step = triggers.iter().map(|t| t.flag.end_step).max().unwrap_or(0);
            let change =
                |metric: &str| Some(value_at(metric, end_step)? - value_at(metric, start_step)?);
            let mut grew: Vec<(String, f64)> = series
                .keys()
                .filter(|m| m.ends_with(".ablation_dloss"))
                .filter_map(|m| Some((m.clone(), change(m)?)))
                .filter(|(_, c)| *c > 0.0)
                .collect();
            grew.sort_by(|a, b| b.1.total_cmp(&a.1));
            Window {
                id: format!("W{i}"),
                rank: 0,
                start_step,
                end_step,
                score: triggers.iter().map(|t| t.flag.score).sum(),
                loss_fell: change("behavior.loss").is_some_and(|c| c < 0.0),
                mechanism_grew: grew
                    .into_iter()
                    .map(|(m, _)| m.trim_end_matches(".ablation_dloss").to_owned())
                    .collect(),
                triggers,
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..windows.len()).collect();
    order.sort_by(|&a, &b| windows[b].score.total_cmp(&windows[a].score));
    for (rank, i) in order.into_iter().enumerate() {
        windows[i].rank = rank + 1;
    }
    windows
}

/// The windows as a readable table: one line per window, strongest triggers first.
pub fn table(found: &BirthWindows) -> String {
    let mut out = format!(
        "{} windows in {} series of run {}\n\n| window | rank | steps | score | loss fell | mechanism grew | top triggers (metric: change, score) |\n|---|---|---|---|---|---|---|\n",
        found.windows.len(),
        found.series,
        found.run_id
    );
    for w in &found.windows {
        let top: Vec<String> = w
            .triggers
            .iter()
            .take(4)
            .map(|t| format!("{}: {:+.3}, {:.1}", t.metric, t.flag.change, t.flag.score))
            .collect();
        let more = w.triggers.len().saturating_sub(4);
        out.push_str(&format!(
            "| {} | {} | {}–{} | {:.1} | {} | {} | {}{} |\n",
            w.id,
            w.rank,
            w.start_step,
            w.end_step,
            w.score,
            if w.loss_fell { "yes" } else { "no" },
            w.mechanism_grew
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            top.join("; "),
            if more > 0 {
                format!("; … {more} more")
            } else {
                String::new()
            }
        ));
    }
    out
}
