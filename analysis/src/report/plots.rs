//! The plots of a report, as data: which series of the rows go into which plot. Pure functions over a run's
//! typed rows and windows (and the intervention reports' JSON); `plot.js` draws them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::row::Row;
use crate::trajectory::LlcRow;
use crate::windows::Window;

/// One line of a line plot: y at each x (a checkpoint step); `None` where the row lacks the metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub name: String,
    pub x: Vec<u64>,
    pub y: Vec<Option<f64>>,
}

/// A birth window shaded on a time axis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shade {
    pub label: String,
    pub start_step: u64,
    pub end_step: u64,
    /// Start and end on the plot's x axis (step + 1 on a log axis).
    pub start: f64,
    pub end: f64,
    /// The window's triggers, for the hover text.
    pub note: String,
}

/// A vertical marker (a run's birth step on a seed overlay).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mark {
    pub label: String,
    pub x: u64,
}

/// A marked cell of a heatmap (a latent's birth step on the feature raster).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellMark {
    pub row: String,
    pub step: u64,
}

/// A point of a categorical scatter plot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub label: String,
    /// Index into the plot's categories.
    pub category: usize,
    pub y: Option<f64>,
    /// Horizontal offset in pixels (so seeds of one value do not overlap).
    pub jitter: f64,
    pub median: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Plot {
    Lines {
        id: String,
        title: String,
        x_label: String,
        log_x: bool,
        log_y: bool,
        series: Vec<Series>,
        shade: Vec<Shade>,
        marks: Vec<Mark>,
    },
    Heatmap {
        id: String,
        title: String,
        steps: Vec<u64>,
        rows: Vec<String>,
        /// `z[row][column]`.
        z: Vec<Vec<Option<f64>>>,
        lo: f64,
        hi: f64,
        shade: Vec<Shade>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        marks: Vec<CellMark>,
    },
    Scatter {
        id: String,
        title: String,
        x_label: String,
        categories: Vec<String>,
        points: Vec<Point>,
        log_y: bool,
    },
}

impl Plot {
    pub fn id(&self) -> &str {
        match self {
            Plot::Lines { id, .. } | Plot::Heatmap { id, .. } | Plot::Scatter { id, .. } => id,
        }
    }
    pub fn title(&self) -> &str {
        match self {
            Plot::Lines { title, .. }
            | Plot::Heatmap { title, .. }
            | Plot::Scatter { title, .. } => title,
        }
    }
}

/// Picks one metric from a row (`None` where the row lacks it).
type Pick<'a> = Box<dyn Fn(&Row) -> Option<f64> + 'a>;

/// The keys of a map in the rows, sorted (the union over all rows; `map` returns `None` where a row lacks it).
fn keys<'r, K: Ord + Clone + 'r, V: 'r>(
    rows: &'r [Row],
    map: impl Fn(&'r Row) -> Option<&'r BTreeMap<K, V>>,
) -> Vec<K> {
    let keys: BTreeSet<&K> = rows
        .iter()
        .filter_map(map)
        .flat_map(BTreeMap::keys)
        .collect();
    keys.into_iter().cloned().collect()
}

fn steps(rows: &[Row]) -> Vec<u64> {
    rows.iter().map(|r| r.step).collect()
}

/// One metric over the rows (non-finite values are gaps), or none when no row has it.
pub fn series(rows: &[Row], name: &str, pick: impl Fn(&Row) -> Option<f64>) -> Option<Series> {
    let y: Vec<Option<f64>> = rows
        .iter()
        .map(|r| pick(r).filter(|v| v.is_finite()))
        .collect();
    y.iter().any(Option::is_some).then(|| Series {
        name: name.to_owned(),
        x: steps(rows),
        y,
    })
}

/// The windows as shades on a step axis (`log_x`: the axis is step + 1 on a log scale).
pub fn shades(windows: &[Window], log_x: bool) -> Vec<Shade> {
    let off = if log_x { 1.0 } else { 0.0 };
    windows
        .iter()
        .map(|w| Shade {
            label: w.id.clone(),
            start_step: w.start_step,
            end_step: w.end_step,
            start: w.start_step as f64 + off,
            end: w.end_step as f64 + off,
            note: w
                .triggers
                .iter()
                .take(6)
                .map(|t| t.metric.clone())
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect()
}

/// The LLC trajectory of `formation llc`: λ̂ with ± one standard deviation across chains, the estimates whose
/// chains had not converged on a series of their own, and the weight-restricted LLC of each component when
/// there is one (none without a trajectory).
pub fn llc_plots(prefix: &str, llc: &[LlcRow], windows: &[Window]) -> Vec<Plot> {
    if llc.is_empty() {
        return vec![];
    }
    let x: Vec<u64> = llc.iter().map(|r| r.step).collect();
    let line = |name: &str, y: &dyn Fn(&LlcRow) -> Option<f64>| Series {
        name: name.to_owned(),
        x: x.clone(),
        y: llc.iter().map(y).collect(),
    };
    let trajectory = vec![
        line("LLC", &|r| Some(r.estimate.llc)),
        line("LLC + std", &|r| {
            Some(r.estimate.llc + r.estimate.diagnostics.llc_std)
        }),
        line("LLC − std", &|r| {
            Some(r.estimate.llc - r.estimate.diagnostics.llc_std)
        }),
        line("not converged", &|r| {
            (!r.estimate.diagnostics.converged).then_some(r.estimate.llc)
        }),
    ];
    let mut plots = vec![lines(
        format!("{prefix}-llc"),
        "LLC trajectory (formation llc)",
        false,
        trajectory,
        windows,
    )];
    let components: BTreeSet<&String> = llc.iter().flat_map(|r| r.components.keys()).collect();
    if !components.is_empty() {
        let per_component = components
            .into_iter()
            .map(|c| line(c, &|r| r.components.get(c).map(|e| e.llc)))
            .collect();
        plots.push(lines(
            format!("{prefix}-llc-components"),
            "Weight-restricted LLC per component",
            false,
            per_component,
            windows,
        ));
    }
    plots
}

fn lines(id: String, title: &str, log_y: bool, series: Vec<Series>, windows: &[Window]) -> Plot {
    Plot::Lines {
        id,
        title: title.to_owned(),
        x_label: "step (log)".into(),
        log_x: true,
        log_y,
        series,
        shade: shades(windows, true),
        marks: vec![],
    }
}

/// A heatmap of `rows` (label, metric) over the checkpoints; the colour range is [lo, hi] or the data's.
fn heatmap(
    id: String,
    title: &str,
    data: &[Row],
    rows: Vec<(String, Pick<'_>)>,
    range: (Option<f64>, Option<f64>),
    windows: &[Window],
) -> Plot {
    let z: Vec<Vec<Option<f64>>> = rows
        .iter()
        .map(|(_, pick)| {
            data.iter()
                .map(|r| pick(r).filter(|v| v.is_finite()))
                .collect()
        })
        .collect();
    let values = z.iter().flatten().flatten().copied();
    let (min, max) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    Plot::Heatmap {
        id,
        title: title.to_owned(),
        steps: steps(data),
        rows: rows.into_iter().map(|(label, _)| label).collect(),
        z,
        lo: range.0.unwrap_or(if min.is_finite() { min } else { 0.0 }),
        hi: range.1.unwrap_or(if max.is_finite() { max } else { 1.0 }),
        shade: shades(windows, false),
        marks: vec![],
    }
}

/// Most latents the feature raster shows (the most frequent ones).
const RASTER_LATENTS: usize = 64;

/// The raster of a `features.json` (`formation features`, or a replay's window features): the firing frequency
/// of every latent alive at some checkpoint (at most the [`RASTER_LATENTS`] most frequent), over the
/// checkpoints, ordered by birth (alive from the start first, then by birth step, then the rest), each birth
/// step marked. `None` when no latent is alive.
pub fn features_raster(id: String, summary: &Value, windows: &[Window]) -> Option<Plot> {
    let steps: Vec<u64> = serde_json::from_value(summary["steps"].clone()).ok()?;
    let alive = summary["alive_above"].as_f64()?;
    let mut latents: Vec<(String, Vec<f64>, Option<u64>, bool)> = summary["latents"]
        .as_array()?
        .iter()
        .filter_map(|latent| {
            let frequency: Vec<f64> = serde_json::from_value(latent["frequency"].clone()).ok()?;
            let before = latent["born"] == "before";
            (frequency.iter().any(|&f| f >= alive)).then(|| {
                (
                    format!("latent {}", latent["latent"]),
                    frequency,
                    latent["birth_step"].as_u64(),
                    before,
                )
            })
        })
        .collect();
    if latents.is_empty() {
        return None;
    }
    let peak = |f: &[f64]| f.iter().copied().fold(0.0, f64::max);
    latents.sort_by(|a, b| peak(&b.1).total_cmp(&peak(&a.1)));
    latents.truncate(RASTER_LATENTS);
    // Alive from the start, then born in the range by birth step, then never steadily alive.
    latents.sort_by_key(|(_, _, birth, before)| (!before, birth.is_none(), *birth));
    let hi = latents.iter().map(|l| peak(&l.1)).fold(0.0, f64::max);
    Some(Plot::Heatmap {
        id,
        title: "Features: latent firing frequency (births marked)".into(),
        steps,
        rows: latents.iter().map(|l| l.0.clone()).collect(),
        z: latents
            .iter()
            .map(|l| l.1.iter().map(|&f| Some(f)).collect())
            .collect(),
        lo: 0.0,
        hi,
        shade: shades(windows, false),
        marks: latents
            .iter()
            .filter_map(|(row, _, birth, _)| {
                birth.map(|step| CellMark {
                    row: row.clone(),
                    step,
                })
            })
            .collect(),
    })
}

/// A full split's loss or accuracy in a row (`None` where the row did not evaluate it).
pub fn split_score(row: &Row, split: &str, accuracy: bool) -> Option<f64> {
    let score = row.eval.as_ref()?.get(split)?;
    Some(if accuracy { score.accuracy } else { score.loss })
}

/// A residual boundary as a short label (`blocks.1.hook_resid_pre` → `1 resid_pre`).
pub(crate) fn short_boundary(boundary: &str) -> String {
    boundary
        .trim_start_matches("blocks.")
        .replace(".hook_", " ")
}

/// Every plot of one analyzed run: behavior, probes, heads, MLPs, dynamics; windows shaded on each.
/// `prefix` keeps plot ids unique when a page shows several runs.
pub fn run_plots(prefix: &str, rows: &[Row], windows: &[Window]) -> Vec<Plot> {
    let id = |name: &str| format!("{prefix}-{name}");
    let mut plots = vec![];
    let loss: Vec<Series> = [
        series(rows, "train batch loss", |r| r.train_loss.map(f64::from)),
        series(rows, "probe-set loss", |r| Some(r.behavior.loss)),
        series(rows, "train split loss", |r| split_score(r, "train", false)),
        series(rows, "test split loss", |r| split_score(r, "test", false)),
    ]
    .into_iter()
    .flatten()
    .collect();
    plots.push(lines(id("loss"), "Loss", true, loss, windows));
    let mut accuracy: Vec<Series> = [
        series(rows, "probe-set accuracy", |r| Some(r.behavior.accuracy)),
        series(rows, "train split accuracy", |r| {
            split_score(r, "train", true)
        }),
        series(rows, "test split accuracy", |r| {
            split_score(r, "test", true)
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    for split in keys(rows, |r| Some(&r.behavior.split_accuracy)) {
        accuracy.extend(series(rows, &format!("probe items from {split}"), |r| {
            r.behavior.split_accuracy.get(&split).copied()
        }));
    }
    plots.push(lines(id("accuracy"), "Accuracy", false, accuracy, windows));
    // The task's progress measures (`behavior.progress.*`): losses and divergences on a log axis, the rest
    // (Fourier gaps, attention, Gini) on a linear one.
    let (mut losses, mut others) = (vec![], vec![]);
    for name in keys(rows, |r| Some(&r.behavior.progress)) {
        let is_loss = name.ends_with("_loss") || name.starts_with("kl_");
        let line = series(rows, &name, |r| r.behavior.progress.get(&name).copied());
        if is_loss { &mut losses } else { &mut others }.extend(line);
    }
    if !losses.is_empty() {
        plots.push(lines(
            id("progress-loss"),
            "Task progress measures (losses)",
            true,
            losses,
            windows,
        ));
    }
    if !others.is_empty() {
        plots.push(lines(
            id("progress"),
            "Task progress measures",
            false,
            others,
            windows,
        ));
    }

    let mut probes = vec![];
    for boundary in keys(rows, |r| Some(&r.residual)) {
        for key in keys(rows, |r| r.residual.get(&boundary)) {
            for target in keys(rows, |r| r.residual.get(&boundary)?.get(&key)) {
                probes.push((boundary, key.clone(), target));
            }
        }
    }
    for (accuracy, title, lo) in [
        (
            true,
            "Residual probes: held-out accuracy (boundary · key position · target)",
            Some(0.0),
        ),
        (
            false,
            "Residual probes: selectivity (accuracy − control accuracy)",
            None,
        ),
    ] {
        let rows_spec = probes
            .iter()
            .map(|(b, k, t)| {
                let pick: Pick<'_> = Box::new(move |r: &Row| {
                    let score = r.residual.get(b)?.get(k)?.get(t)?;
                    Some(if accuracy {
                        score.accuracy
                    } else {
                        score.selectivity
                    })
                });
                (
                    format!("{} · {k} · {t}", short_boundary(&b.to_string())),
                    pick,
                )
            })
            .collect();
        let measure = if accuracy { "accuracy" } else { "selectivity" };
        plots.push(heatmap(
            id(&format!("probe-{measure}")),
            title,
            rows,
            rows_spec,
            (lo, Some(1.0)),
            windows,
        ));
    }

    let heads = keys(rows, |r| Some(&r.heads));
    let mut score_rows: Vec<(String, Pick<'_>)> = vec![];
    for head in &heads {
        for score in keys(rows, |r| Some(&r.heads.get(head)?.scores)) {
            score_rows.push((
                format!("{head} {score}"),
                Box::new(move |r: &Row| r.heads.get(head)?.scores.get(&score).copied()),
            ));
        }
    }
    // Attention between the task's key positions (a task's own "head scores": eq → a, sep → min, …), every
    // head and ordered pair of distinct positions that some checkpoint attends with at least ATTN_SHOWN.
    const ATTN_SHOWN: f64 = 0.2;
    let mut attn_rows: Vec<(String, Pick<'_>)> = vec![];
    for head in &heads {
        for pair in keys(rows, |r| Some(&r.heads.get(head)?.attn)) {
            let label = format!("{head} {pair}");
            let itself = pair.split_once("_to_").is_some_and(|(from, to)| from == to);
            let pick = move |r: &Row| r.heads.get(head)?.attn.get(&pair).copied();
            if !itself
                && rows
                    .iter()
                    .any(|r| pick(r).is_some_and(|v| v >= ATTN_SHOWN))
            {
                attn_rows.push((label, Box::new(pick)));
            }
        }
    }
    if !attn_rows.is_empty() {
        plots.push(heatmap(
            id("head-attention"),
            "Heads: attention between key positions",
            rows,
            attn_rows,
            (Some(0.0), Some(1.0)),
            windows,
        ));
    }
    if !score_rows.is_empty() {
        plots.push(heatmap(
            id("head-scores"),
            "Head scores",
            rows,
            score_rows,
            (Some(0.0), Some(1.0)),
            windows,
        ));
    }
    let ablation = heads
        .iter()
        .map(|h| {
            let pick: Pick<'_> = Box::new(move |r: &Row| r.heads.get(h)?.ablation_dloss);
            (h.clone(), pick)
        })
        .collect();
    plots.push(heatmap(
        id("head-ablation"),
        "Heads: mean-ablation Δloss",
        rows,
        ablation,
        (Some(0.0), None),
        windows,
    ));
    let dla = heads
        .iter()
        .map(|h| {
            let pick: Pick<'_> = Box::new(move |r: &Row| Some(r.heads.get(h)?.dla));
            (h.clone(), pick)
        })
        .collect();
    plots.push(heatmap(
        id("head-dla"),
        "Heads: direct logit attribution",
        rows,
        dla,
        (None, None),
        windows,
    ));

    let mut mlp = vec![];
    for block in keys(rows, |r| Some(&r.mlp)) {
        mlp.extend(series(rows, &format!("{block} ablation Δloss"), |r| {
            r.mlp.get(&block)?.ablation_dloss
        }));
        mlp.extend(series(rows, &format!("{block} DLA"), |r| {
            r.mlp.get(&block)?.dla
        }));
        for key in keys(rows, |r| r.mlp.get(&block)?.active_fraction.as_ref()) {
            mlp.extend(series(
                rows,
                &format!("{block} active fraction at {key}"),
                |r| {
                    r.mlp
                        .get(&block)?
                        .active_fraction
                        .as_ref()?
                        .get(&key)
                        .copied()
                },
            ));
        }
    }
    if !mlp.is_empty() {
        plots.push(lines(id("mlp"), "MLP blocks", false, mlp, windows));
    }

    let mut cka = vec![];
    for boundary in keys(rows, |r| r.dynamics.cka.as_ref()) {
        for key in keys(rows, |r| r.dynamics.cka.as_ref()?.get(&boundary)) {
            cka.extend(series(
                rows,
                &format!("{} · {key}", short_boundary(&boundary)),
                |r| r.dynamics.cka.as_ref()?.get(&boundary)?.get(&key).copied(),
            ));
        }
    }
    plots.push(lines(
        id("cka"),
        "Linear CKA to the previous checkpoint",
        false,
        cka,
        windows,
    ));
    let drift = heads
        .iter()
        .map(|h| {
            let pick: Pick<'_> =
                Box::new(move |r: &Row| r.dynamics.pattern_js.as_ref()?.get(h).copied());
            (h.clone(), pick)
        })
        .collect();
    plots.push(heatmap(
        id("drift"),
        "Attention-pattern JS drift from the previous checkpoint",
        rows,
        drift,
        (Some(0.0), None),
        windows,
    ));
    let update: Vec<Series> = keys(rows, |r| r.dynamics.relative_update.as_ref())
        .iter()
        .filter(|p| p.contains(".W_"))
        .filter_map(|p| {
            series(rows, p, |r| {
                r.dynamics.relative_update.as_ref()?.get(p).copied()
            })
        })
        .collect();
    plots.push(lines(
        id("update"),
        "Relative update ‖W_t − W_t−1‖ / ‖W_t−1‖",
        true,
        update,
        windows,
    ));
    plots
}

/// Plots of a replayed window's intervention reports: for each kind, one plot per top-level group of its
/// scalar results (e.g. `patching.recovery`), over the window's dense checkpoints. `reports` holds
/// (step, kind, report JSON).
pub fn window_plots(prefix: &str, window: &Window, reports: &[(u64, String, Value)]) -> Vec<Plot> {
    let kinds: BTreeSet<&String> = reports.iter().map(|(_, k, _)| k).collect();
    let mut plots = vec![];
    for kind in kinds {
        let of_kind: Vec<&(u64, String, Value)> =
            reports.iter().filter(|(_, k, _)| k == kind).collect();
        // Group the scalar leaves by their first key; a scalar at the top is its own group.
        let mut groups: Vec<(String, Vec<Series>)> = vec![];
        let mut names = BTreeSet::new();
        for (_, _, report) in &of_kind {
            names.extend(scalar_leaves(report, vec![]));
        }
        for path in names {
            let group = if path.len() == 1 {
                "scalars".to_owned()
            } else {
                path[0].clone()
            };
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            let y: Vec<Option<f64>> = of_kind.iter().map(|(_, _, r)| leaf(r, &refs)).collect();
            let s = Series {
                name: path.join("."),
                x: of_kind.iter().map(|(s, _, _)| *s).collect(),
                y,
            };
            match groups.iter_mut().find(|(g, _)| *g == group) {
                Some((_, list)) => list.push(s),
                None => groups.push((group, vec![s])),
            }
        }
        for (group, series) in groups {
            let positive = series
                .iter()
                .flat_map(|s| s.y.iter().flatten())
                .all(|&v| v > 0.0);
            let (lo, hi) = series
                .iter()
                .flat_map(|s| s.y.iter().flatten())
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            plots.push(Plot::Lines {
                id: format!("{prefix}-{kind}-{group}"),
                title: format!("{} {kind}: {group}", window.id),
                x_label: "step".into(),
                log_x: false,
                log_y: positive && hi / lo > 100.0,
                series,
                shade: vec![],
                marks: vec![],
            });
        }
    }
    plots
}

/// The finite number at a path of an intervention report (keys may contain dots, as hook names do).
fn leaf(report: &Value, path: &[&str]) -> Option<f64> {
    path.iter()
        .try_fold(report, |v, key| v.get(*key))
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite())
}

/// Paths of the finite numeric leaves reached through objects only (arrays are left out).
fn scalar_leaves(value: &Value, prefix: Vec<String>) -> Vec<Vec<String>> {
    match value {
        Value::Object(map) => map
            .iter()
            .flat_map(|(k, v)| {
                let mut p = prefix.clone();
                p.push(k.clone());
                scalar_leaves(v, p)
            })
            .collect(),
        Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) && !prefix.is_empty() => {
            vec![prefix]
        }
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows() -> Vec<Row> {
        let mut first = crate::row::tests::minimal_row_json();
        first["behavior"]["loss"] = json!(4.0);
        first["residual"] = json!({"blocks.0.hook_resid_post": {"eq": {"sum":
            {"accuracy": 0.1, "control_accuracy": 0.1, "selectivity": 0.0}}}});
        first["heads"] = json!({"L0H0": {"ablation_dloss": 0.0, "dla": 0.1, "entropy": {},
            "attn": {"eq_to_a": 0.1, "eq_to_eq": 0.9, "b_to_a": 0.05},
            "scores": {"induction_score": 0.2}}});
        let mut second = crate::row::tests::minimal_row_json();
        second["step"] = json!(10);
        second["train_loss"] = json!(3.5);
        second["behavior"]["loss"] = json!(3.0);
        second["behavior"]["accuracy"] = json!(0.5);
        second["eval"] = json!({"test": {"loss": 3.2, "accuracy": 0.4}});
        second["residual"] = json!({"blocks.0.hook_resid_post": {"eq": {"sum":
            {"accuracy": 0.6, "control_accuracy": 0.2, "selectivity": 0.4}}}});
        second["heads"] = json!({"L0H0": {"ablation_dloss": 0.7,
            "attn": {"eq_to_a": 0.6, "eq_to_eq": 0.4, "b_to_a": 0.1}, "dla": 0.3, "entropy": {},
            "scores": {"induction_score": 0.9}}});
        second["dynamics"] = json!({"cka": {"blocks.0.hook_resid_post": {"eq": 0.8}}});
        [first, second]
            .into_iter()
            .map(|r| serde_json::from_value(r).unwrap())
            .collect()
    }

    #[test]
    fn series_follow_the_rows_with_gaps_where_a_row_lacks_the_metric() {
        let rows = rows();
        let test_loss = |r: &Row| Some(r.eval.as_ref()?.get("test")?.loss);
        let s = series(&rows, "test", test_loss).unwrap();
        assert_eq!(s.x, vec![0, 10]);
        assert_eq!(s.y, vec![None, Some(3.2)]);
        assert!(series(&rows, "none", |r| Some(r.eval.as_ref()?.get("ood")?.loss)).is_none());
        assert!(
            series(&rows, "nan", |_| Some(f64::NAN)).is_none(),
            "a non-finite value is a gap"
        );
    }

    #[test]
    fn run_plots_hold_the_rows_values_and_shade_the_windows() {
        let rows = rows();
        let window: Window = serde_json::from_value(json!({
            "id": "W0", "rank": 1, "start_step": 0, "end_step": 10, "score": 1.0, "loss_fell": true,
            "mechanism_grew": [], "triggers": [{"metric": "behavior.loss", "start_step": 0, "end_step": 10,
            "peak_step": 5, "change": -1.0, "score": 9.0}]})).unwrap();
        let plots = run_plots("r", &rows, std::slice::from_ref(&window));
        let loss = plots.iter().find(|p| p.id() == "r-loss").unwrap();
        let Plot::Lines { series, shade, .. } = loss else {
            panic!()
        };
        let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["train batch loss", "probe-set loss", "test split loss"]
        );
        assert_eq!(series[1].y, vec![Some(4.0), Some(3.0)]);
        // On the log axis the window [0, 10] is drawn at [1, 11].
        assert_eq!((shade[0].start, shade[0].end), (1.0, 11.0));
        assert_eq!(shade[0].note, "behavior.loss");
        let probes = plots.iter().find(|p| p.id() == "r-probe-accuracy").unwrap();
        let Plot::Heatmap {
            rows: labels,
            z,
            lo,
            hi,
            ..
        } = probes
        else {
            panic!()
        };
        assert_eq!(labels, &["0 resid_post · eq · sum"]);
        assert_eq!(z, &vec![vec![Some(0.1), Some(0.6)]]);
        assert_eq!((*lo, *hi), (0.0, 1.0));
        let ablation = plots.iter().find(|p| p.id() == "r-head-ablation").unwrap();
        let Plot::Heatmap { hi, .. } = ablation else {
            panic!()
        };
        assert_eq!(*hi, 0.7, "the colour range tops out at the data's maximum");
        let attention = plots.iter().find(|p| p.id() == "r-head-attention").unwrap();
        let Plot::Heatmap {
            rows: labels, z, ..
        } = attention
        else {
            panic!()
        };
        assert_eq!(
            labels,
            &["L0H0 eq_to_a"],
            "a position's attention to itself and pairs never above 0.2 are left out"
        );
        assert_eq!(z, &vec![vec![Some(0.1), Some(0.6)]]);
    }

    #[test]
    fn window_plots_group_scalar_results_by_their_first_key() {
        let window: Window = serde_json::from_value(json!({
            "id": "W1", "rank": 1, "start_step": 0, "end_step": 10, "score": 1.0, "loss_fell": true,
            "mechanism_grew": [], "triggers": []}))
        .unwrap();
        let reports = vec![
            (
                0,
                "patching".to_owned(),
                json!({"logit_diff_clean": 2.0, "recovery": {"heads": {"L0H0": 0.1}, "mlp": {"L0": 0.5}}, "positions": [1.0, 0.0]}),
            ),
            (
                5,
                "patching".to_owned(),
                json!({"logit_diff_clean": 3.0, "recovery": {"heads": {"L0H0": 0.2}, "mlp": {"L0": 0.9}}, "positions": [1.0, 0.0]}),
            ),
        ];
        let plots = window_plots("w", &window, &reports);
        let ids: Vec<&str> = plots.iter().map(Plot::id).collect();
        assert_eq!(ids, ["w-patching-scalars", "w-patching-recovery"]);
        let Plot::Lines { series, .. } = &plots[1] else {
            panic!()
        };
        assert_eq!(series[0].name, "recovery.heads.L0H0");
        assert_eq!(series[0].x, vec![0, 5]);
        assert_eq!(series[1].y, vec![Some(0.5), Some(0.9)]);
    }

    #[test]
    fn the_feature_raster_orders_latents_by_birth_and_marks_each_birth() {
        // Latent 0 alive throughout, 1 born at 20, 2 never above 0.002 (left out), 3 born at 10.
        let summary = serde_json::json!({
            "steps": [0, 10, 20],
            "alive_above": 0.002,
            "latents": [
                { "latent": 0, "born": "before", "birth_step": null, "frequency": [0.1, 0.1, 0.2] },
                { "latent": 1, "born": "in_range", "birth_step": 20, "frequency": [0.0, 0.001, 0.3] },
                { "latent": 2, "born": "never", "birth_step": null, "frequency": [0.0, 0.001, 0.0] },
                { "latent": 3, "born": "in_range", "birth_step": 10, "frequency": [0.0, 0.05, 0.05] },
            ],
        });
        let Some(Plot::Heatmap {
            rows, z, marks, hi, ..
        }) = features_raster("f".into(), &summary, &[])
        else {
            panic!("a heatmap");
        };
        assert_eq!(rows, vec!["latent 0", "latent 3", "latent 1"]);
        assert_eq!(z[2], vec![Some(0.0), Some(0.001), Some(0.3)]);
        assert_eq!(hi, 0.3);
        let marked: Vec<(&str, u64)> = marks.iter().map(|m| (m.row.as_str(), m.step)).collect();
        assert_eq!(marked, vec![("latent 3", 10), ("latent 1", 20)]);
    }
}
