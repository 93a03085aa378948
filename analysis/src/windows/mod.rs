//! Birth windows (SPEC §6): narrow step ranges where something important changes, found from the rows of
//! `analysis/checkpoint_metrics.jsonl` by the [`detector`] on every tracked series, plus the independent
//! essential-dynamics trigger on the output trajectory. Overlapping flags are merged across metrics into
//! ranked, explainable windows written to `analysis/birth_windows.json`. The method is documented for users in
//! `docs/windows.md`.

pub mod detector;
pub mod llc;
pub mod stages;

use std::collections::BTreeMap;

use faer::Mat;
use host::layout::RunLayout;
use serde::{Deserialize, Serialize};
use trainer::config::WindowsConfig;

use crate::error::AnalysisError;
use crate::row::Row;
use detector::{Flag, detect, turning_points};
use llc::{ComplexityChange, LlcSeries, complexity_changes, llc_triggers};
use stages::{extent, stages};

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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// `W0`, `W1`, … in step order (the name `formation replay --window N` uses).
    pub id: String,
    /// 1 = the strongest window.
    #[serde(default)]
    pub rank: usize,
    pub start_step: u64,
    pub end_step: u64,
    /// The checkpoint where the triggers' activity peaks.
    #[serde(default)]
    pub peak_step: u64,
    /// Sum of the triggers' scores (the ranking key).
    #[serde(default)]
    pub score: f64,
    /// The probe-set loss fell across the window.
    #[serde(default)]
    pub loss_fell: bool,
    /// What kind of change the window holds.
    #[serde(default)]
    pub kind: StageKind,
    /// How much the window is to be trusted as a change of its own.
    #[serde(default)]
    pub confidence: Confidence,
    /// The families of series that moved (`behavior`, `eval`, `progress`, `residual`, `heads`, `mlp`,
    /// `dynamics`, `essential_dynamics`, `llc`), in the order of their earliest peak: which moved first.
    #[serde(default)]
    pub families: Vec<String>,
    /// Components whose mean-ablation Δloss grew across the window (the mechanism they carry grew), largest
    /// growth first.
    #[serde(default)]
    pub mechanism_grew: Vec<String>,
    /// Components whose weight-restricted LLC changed across the window (when `formation llc --components` ran),
    /// largest change first: where the model's complexity moved.
    #[serde(default)]
    pub complexity_changed: Vec<ComplexityChange>,
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

/// Whether the detector examines the series at dotted `path` (see [`tracked_series`]).
pub(crate) fn is_tracked(path: &str) -> bool {
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

/// The windows of a run's rows and, when `formation llc` made one, of its LLC trajectory (`llc`: step and
/// estimate, steps increasing).
pub fn find_windows(
    run_id: &str,
    rows: &[Row],
    llc: &LlcSeries,
    config: &WindowsConfig,
) -> BirthWindows {
    let mut series = tracked_series(rows);
    if !llc.whole.is_empty() {
        series.insert(
            llc::CHANGE.into(),
            llc.whole.iter().map(|p| (p.step, p.llc)).collect(),
        );
    }
    let trajectory = essential_trajectory(rows, config.components);
    let windows = windows_of(&series, trajectory.as_ref(), llc, config);
    BirthWindows {
        run_id: run_id.to_owned(),
        method: "docs/windows.md",
        config: config.clone(),
        series: series.len(),
        windows,
    }
}

/// The family of a tracked series: the first part of its dotted path, with the task's progress measures
/// (`behavior.progress.*`, hidden progress by design) apart from the rest of the behavior.
pub fn family(metric: &str) -> &str {
    if metric.starts_with("behavior.progress.") {
        return "progress";
    }
    metric.split('.').next().unwrap_or(metric)
}

/// What kind of change a window holds, read off its triggers (docs/windows.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Behavior (probe-set or split metrics) moved and the loss fell or an accuracy rose: a capability
    /// appeared.
    Behavioral,
    /// Behavior moved but the loss did not fall and no accuracy rose (a bump, a regression).
    LossRose,
    /// Only internal series moved (probes, heads, MLPs, progress measures): hidden progress, not yet in the loss.
    Hidden,
    /// Only the representation or the loss landscape moved (CKA with the previous checkpoint, the
    /// essential-dynamics trajectory, the LLC).
    #[default]
    Reorganization,
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StageKind::Behavioral => "behavioral",
            StageKind::LossRose => "loss_rose",
            StageKind::Hidden => "hidden",
            StageKind::Reorganization => "reorganization",
        })
    }
}

/// How much a window is to be trusted as a change of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// One trigger, or the essential-dynamics turn alone.
    #[default]
    Low,
    /// Two triggers, or one family, or a single trigger above twice the threshold `k`.
    Medium,
    /// At least three triggers from at least two named families agree.
    High,
}

impl std::fmt::Display for Confidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        })
    }
}

/// The windows of named `series` (dotted path → (step, value), steps increasing), of an essential-dynamics
/// `trajectory` (steps, points) and of an LLC trajectory (its own triggers, [`llc::llc_triggers`]; its series
/// `llc.estimate` may be in `series` for the tags, and is not run through the generic detector).
pub fn windows_of(
    series: &BTreeMap<String, Vec<(u64, f64)>>,
    trajectory: Option<&(Vec<u64>, Vec<Vec<f64>>)>,
    llc: &LlcSeries,
    config: &WindowsConfig,
) -> Vec<Window> {
    let mut triggers = llc_triggers(&llc.whole, config);
    for (metric, points) in series.iter().filter(|(m, _)| *m != llc::CHANGE) {
        let (steps, values): (Vec<u64>, Vec<f64>) = points.iter().copied().unzip();
        // A slow change counts for the task's accuracies (held-out accuracy climbing at an even pace is a slow
        // grokking); elsewhere (margins and losses after convergence, probes, heads, CKA) slow creeping is the
        // usual drift of training, not a birth.
        let accuracy = matches!(family(metric), "behavior" | "eval") && metric.contains("accuracy");
        for flag in detect(&steps, &values, config) {
            if flag.slow && !accuracy {
                continue;
            }
            triggers.push(Trigger {
                metric: metric.clone(),
                flag,
            });
        }
    }
    if let Some((steps, points)) = trajectory {
        for flag in turning_points(steps, points, config) {
            triggers.push(Trigger {
                metric: ESSENTIAL_DYNAMICS.into(),
                flag,
            });
        }
    }
    let mut grid: Vec<u64> = series
        .values()
        .flatten()
        .map(|&(s, _)| s)
        .chain(
            trajectory
                .into_iter()
                .flat_map(|(steps, _)| steps.iter().copied()),
        )
        .collect();
    grid.sort_unstable();
    grid.dedup();
    merge(&grid, triggers, series, llc, config)
}

/// Groups triggers into stages ([`stages`]), tags each window, ranks them by total score and names them in step
/// order.
fn merge(
    grid: &[u64],
    triggers: Vec<Trigger>,
    series: &BTreeMap<String, Vec<(u64, f64)>>,
    llc: &LlcSeries,
    config: &WindowsConfig,
) -> Vec<Window> {
    let value_at = |metric: &str, step: u64| -> Option<f64> {
        let points = series.get(metric)?;
        points
            .iter()
            .rev()
            .find(|(s, _)| *s <= step)
            .or(points.first())
            .map(|(_, v)| *v)
    };
    let mut windows: Vec<Window> = stages(grid, triggers, config)
        .into_iter()
        .enumerate()
        .map(|(i, stage)| {
            // The window is where its triggers change together: within the core of its activity, the
            // checkpoint intervals that hold their raw change.
            let peak_step = grid[stage.peak];
            let (first, last) = extent(grid, &stage, series, config.core_level);
            let (start_step, end_step) = (grid[first], grid[last]);
            let mut triggers = stage.triggers;
            triggers.sort_by(|a, b| b.flag.score.total_cmp(&a.flag.score));
            let change =
                |metric: &str| Some(value_at(metric, end_step)? - value_at(metric, start_step)?);
            let mut grew: Vec<(String, f64)> = series
                .keys()
                .filter(|m| m.ends_with(".ablation_dloss"))
                .filter_map(|m| Some((m.clone(), change(m)?)))
                .filter(|(_, c)| *c > 0.0)
                .collect();
            grew.sort_by(|a, b| b.1.total_cmp(&a.1));
            let loss_fell = change("behavior.loss").is_some_and(|c| c < 0.0);
            let families = families_in_order(&triggers);
            Window {
                id: format!("W{i}"),
                rank: 0,
                start_step,
                end_step,
                peak_step,
                score: triggers.iter().map(|t| t.flag.score).sum(),
                loss_fell,
                kind: kind(&triggers, &families, loss_fell),
                confidence: confidence(&triggers, &families, config),
                families,
                mechanism_grew: grew
                    .into_iter()
                    .map(|(m, _)| m.trim_end_matches(".ablation_dloss").to_owned())
                    .collect(),
                complexity_changed: complexity_changes(llc, start_step, end_step),
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

/// The families of `triggers`, each once, in the order of their earliest peak.
fn families_in_order(triggers: &[Trigger]) -> Vec<String> {
    let mut first: BTreeMap<&str, u64> = BTreeMap::new();
    for t in triggers {
        let at = first.entry(family(&t.metric)).or_insert(u64::MAX);
        *at = (*at).min(t.flag.peak_step);
    }
    let mut families: Vec<(&str, u64)> = first.into_iter().collect();
    families.sort_by_key(|&(name, step)| (step, name));
    families.into_iter().map(|(f, _)| f.to_owned()).collect()
}

fn kind(triggers: &[Trigger], families: &[String], loss_fell: bool) -> StageKind {
    let has = |f: &str| families.iter().any(|g| g == f);
    // An accuracy that rose counts as a capability even where the probe-set loss rose (memorization: the
    // probe set's test items get worse while the train items are learnt).
    let accuracy_rose = triggers.iter().any(|t| {
        matches!(family(&t.metric), "behavior" | "eval")
            && t.metric.contains("accuracy")
            && t.flag.change > 0.0
    });
    if has("behavior") || has("eval") {
        if loss_fell || accuracy_rose {
            StageKind::Behavioral
        } else {
            StageKind::LossRose
        }
    } else if has("residual") || has("heads") || has("mlp") || has("progress") {
        StageKind::Hidden
    } else {
        StageKind::Reorganization
    }
}

fn confidence(triggers: &[Trigger], families: &[String], config: &WindowsConfig) -> Confidence {
    let strongest = triggers
        .iter()
        .filter(|t| t.metric != ESSENTIAL_DYNAMICS)
        .map(|t| t.flag.score)
        .fold(0.0, f64::max);
    let named = families.iter().filter(|f| *f != ESSENTIAL_DYNAMICS).count();
    if triggers.len() >= 3 && named >= 2 {
        Confidence::High
    } else if (triggers.len() >= 2 && named >= 1) || strongest >= 2.0 * config.k {
        Confidence::Medium
    } else {
        Confidence::Low
    }
}

/// The windows as a readable table: one line per window, strongest triggers first.
pub fn table(found: &BirthWindows) -> String {
    let mut out = format!(
        "{} windows in {} series of run {}\n\n| window | rank | steps (peak) | kind | confidence | score | loss fell | moved first | mechanism grew | top triggers (metric: change, score) |\n|---|---|---|---|---|---|---|---|---|---|\n",
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
            "| {} | {} | {}–{} ({}) | {} | {} | {:.1} | {} | {} | {} | {}{} |\n",
            w.id,
            w.rank,
            w.start_step,
            w.end_step,
            w.peak_step,
            w.kind,
            w.confidence,
            w.score,
            if w.loss_fell { "yes" } else { "no" },
            w.families.join(" → "),
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

#[cfg(test)]
mod tests {
    use super::*;
    use host::rng::SplitMix64;

    /// The induction example's schedule: 0, 1, 2, 4, …, 64, then every 50 up to 1500.
    fn schedule() -> Vec<u64> {
        schedule_to(1500)
    }

    /// 0, 1, 2, 4, …, 64, then every 50 up to `last`.
    fn schedule_to(last: u64) -> Vec<u64> {
        let mut steps = vec![0, 1, 2, 4, 8, 16, 32, 64];
        steps.extend((2..=last / 50).map(|k| k * 50));
        steps
    }

    fn sigmoid(step: u64, centre: f64, width: f64) -> f64 {
        1.0 / (1.0 + (-(step as f64 - centre) / width).exp())
    }

    /// A sigmoid's height, centre and width in steps.
    type Jump = (f64, f64, f64);

    /// Named series, each a sum of sigmoids plus noise of 1 % of its scale.
    fn series(specs: &[(&str, &[Jump])], seed: u64) -> BTreeMap<String, Vec<(u64, f64)>> {
        series_on(&schedule(), specs, seed)
    }

    /// [`series`] at the checkpoint `steps`; an `eval.` series only every 100 steps, as evaluations are.
    fn series_on(
        steps: &[u64],
        specs: &[(&str, &[Jump])],
        seed: u64,
    ) -> BTreeMap<String, Vec<(u64, f64)>> {
        let mut rng = SplitMix64::new(seed);
        specs
            .iter()
            .map(|(name, jumps)| {
                let points = steps
                    .iter()
                    .copied()
                    .filter(|s| !name.starts_with("eval.") || s % 100 == 0)
                    .map(|s| {
                        let clean: f64 = jumps.iter().map(|&(h, c, w)| h * sigmoid(s, c, w)).sum();
                        (s, clean + 0.01 * rng.normal())
                    })
                    .collect();
                (name.to_string(), points)
            })
            .collect()
    }

    fn summary(windows: &[Window]) -> Vec<(u64, u64, u64, usize)> {
        windows
            .iter()
            .map(|w| (w.start_step, w.peak_step, w.end_step, w.triggers.len()))
            .collect()
    }

    #[test]
    fn two_nearby_transitions_give_two_windows_each_as_narrow_as_its_change() {
        // A probe becomes accurate around step 300 and the induction score and accuracy jump around 650: two
        // changes whose flagged stretches touch (a chain the old overlap merge joined into one window).
        for seed in 0..5 {
            let found = windows_of(
                &series(
                    &[
                        (
                            "behavior.accuracy",
                            &[(0.2, 300.0, 30.0), (0.7, 650.0, 40.0)],
                        ),
                        (
                            "residual.blocks.1.hook_resid_pre.cur.prev_token.accuracy",
                            &[(0.8, 300.0, 30.0)],
                        ),
                        ("heads.L1H0.scores.induction_score", &[(0.9, 650.0, 40.0)]),
                        ("behavior.in_context_score", &[(-2.0, 650.0, 40.0)]),
                        ("behavior.loss", &[(-1.0, 650.0, 40.0)]),
                    ],
                    seed,
                ),
                None,
                &LlcSeries::default(),
                &WindowsConfig::default(),
            );
            assert_eq!(found.len(), 2, "seed {seed}: {:?}", summary(&found));
            let (first, second) = (&found[0], &found[1]);
            assert!(
                first.start_step <= 300 && 300 <= first.end_step,
                "{:?}",
                summary(&found)
            );
            assert!(
                second.start_step <= 650 && 650 <= second.end_step,
                "{:?}",
                summary(&found)
            );
            assert!(first.end_step <= second.start_step, "{:?}", summary(&found));
            // The 10–90 % rise of a sigmoid of width w is 4.4 w: 130 and 175 steps, which the checkpoints every 50
            // round out to at most 200 and 250 (before the raw values narrowed them, the smoothing added a
            // checkpoint or two on each side: 300 and 350).
            assert!(
                first.end_step - first.start_step <= 200,
                "{:?}",
                summary(&found)
            );
            assert!(
                second.end_step - second.start_step <= 250,
                "{:?}",
                summary(&found)
            );
            assert_eq!(second.kind, StageKind::Behavioral);
            assert_eq!(second.confidence, Confidence::High);
            assert!(
                second
                    .triggers
                    .iter()
                    .any(|t| t.metric.starts_with("heads."))
            );
            assert!(
                first
                    .triggers
                    .iter()
                    .all(|t| !t.metric.starts_with("heads."))
            );
        }
    }

    #[test]
    fn training_on_after_two_changes_keeps_them_two_windows() {
        // The induction example's shape: a representation change around step 100 (CKA dips and recovers, probes
        // move over 50–300), a few probes and a previous-token score moving around 400, then the induction heads
        // around 575, with the test loss and accuracy evaluated every 100 steps across all of it. Trained on to
        // 3 000 steps, the quiet end lowers every series' noise scale, so more series flag and their stretches
        // lengthen: the two changes stay two windows at about the same steps.
        // (`stages`' tests show the two ways a longer run used to join them; this guards the whole detector.)
        let specs: &[(&str, &[Jump])] = &[
            (
                "dynamics.cka.blocks.1.hook_resid_post.cur",
                &[(-0.25, 100.0, 15.0), (0.2, 200.0, 20.0)],
            ),
            (
                "dynamics.cka.blocks.1.hook_resid_post.after_prev",
                &[(-0.2, 100.0, 15.0), (0.15, 200.0, 20.0)],
            ),
            (
                "dynamics.cka.blocks.1.hook_resid_pre.prev_occ",
                &[(-0.12, 100.0, 15.0)],
            ),
            (
                "residual.blocks.1.hook_resid_post.cur.prev_token.selectivity",
                &[(0.35, 120.0, 40.0)],
            ),
            (
                "residual.blocks.1.hook_resid_post.cur.cur_token.accuracy",
                &[(-0.4, 130.0, 40.0)],
            ),
            (
                "residual.blocks.1.hook_resid_post.after_prev.prev_token.accuracy",
                &[(0.1, 150.0, 30.0)],
            ),
            (
                "residual.blocks.1.hook_resid_pre.after_prev.prev_token.selectivity",
                &[(0.25, 160.0, 50.0)],
            ),
            (
                "residual.blocks.1.hook_resid_pre.cur.cur_token.accuracy",
                &[(-0.13, 170.0, 50.0)],
            ),
            (
                "residual.blocks.1.hook_resid_post.after_prev.next_token.accuracy",
                &[(-0.35, 180.0, 60.0)],
            ),
            (
                "residual.blocks.1.hook_resid_pre.after_prev.cur_token.selectivity",
                &[(0.44, 370.0, 50.0)],
            ),
            (
                "residual.blocks.1.hook_resid_pre.prev_occ.prev_token.selectivity",
                &[(0.48, 400.0, 50.0)],
            ),
            (
                "heads.L0H3.scores.previous_token_head",
                &[(0.1, 420.0, 60.0)],
            ),
            ("eval.test.loss", &[(-1.0, 60.0, 30.0), (-2.7, 575.0, 40.0)]),
            ("eval.test.accuracy", &[(0.75, 575.0, 40.0)]),
            ("behavior.accuracy", &[(0.75, 575.0, 40.0)]),
            ("behavior.loss", &[(-2.7, 575.0, 40.0)]),
            ("behavior.in_context_score", &[(-4.0, 580.0, 40.0)]),
            ("heads.L1H1.scores.induction_score", &[(0.45, 580.0, 45.0)]),
            ("heads.L1H2.scores.induction_score", &[(0.45, 580.0, 45.0)]),
            ("heads.L1H0.scores.induction_score", &[(0.4, 590.0, 45.0)]),
            ("heads.L1H1.ablation_dloss", &[(0.2, 520.0, 50.0)]),
            ("heads.L0H1.ablation_dloss", &[(0.5, 520.0, 50.0)]),
        ];
        for seed in 0..5 {
            let found: Vec<Vec<(u64, u64, u64, usize)>> = [1500, 3000]
                .iter()
                .map(|&last| {
                    let windows = windows_of(
                        &series_on(&schedule_to(last), specs, seed),
                        None,
                        &LlcSeries::default(),
                        &WindowsConfig::default(),
                    );
                    summary(&windows)
                })
                .collect();
            for windows in &found {
                assert_eq!(windows.len(), 2, "seed {seed}: {found:?}");
                let (early, late) = (windows[0], windows[1]);
                assert!(early.0 <= 150 && 150 <= early.2, "seed {seed}: {found:?}");
                assert!(late.0 <= 575 && 575 <= late.2, "seed {seed}: {found:?}");
            }
            // The same windows, give or take two checkpoints at either end: each trigger's 10–90 % rise is read
            // within its flagged stretch, which the lower noise scale lengthens, so the slow probes' rises and
            // with them the edges move a little.
            for (short, long) in found[0].iter().zip(&found[1]) {
                assert!(
                    short.0.abs_diff(long.0) <= 100 && short.2.abs_diff(long.2) <= 100,
                    "seed {seed}: {found:?}"
                );
            }
        }
    }

    #[test]
    fn one_slow_transition_gives_one_window() {
        // Four series change together over some 600 steps around 800.
        for seed in 0..5 {
            let found = windows_of(
                &series(
                    &[
                        ("behavior.accuracy", &[(0.9, 800.0, 150.0)]),
                        ("behavior.loss", &[(-2.0, 820.0, 150.0)]),
                        (
                            "residual.blocks.1.hook_resid_post.eq.sum.accuracy",
                            &[(0.8, 760.0, 150.0)],
                        ),
                        ("mlp.L0.ablation_dloss", &[(1.5, 800.0, 150.0)]),
                    ],
                    seed,
                ),
                None,
                &LlcSeries::default(),
                &WindowsConfig::default(),
            );
            assert_eq!(found.len(), 1, "seed {seed}: {:?}", summary(&found));
            let w = &found[0];
            assert!(
                w.start_step <= 800 && 800 <= w.end_step,
                "{:?}",
                summary(&found)
            );
            assert_eq!(w.kind, StageKind::Behavioral);
            assert!(w.loss_fell);
            assert_eq!(w.mechanism_grew, vec!["mlp.L0".to_string()]);
            assert!(w.confidence >= Confidence::Medium, "{:?}", w.triggers);
        }
    }

    #[test]
    fn a_slow_climb_counts_for_an_accuracy_and_not_for_other_series() {
        // The same even climb over 20 checkpoints (steps 400–1400), longer than the baseline's window: a slow
        // grokking for the test accuracy, drift for a margin or a probe.
        let mut rng = SplitMix64::new(8);
        let ramp = |scale: f64, rng: &mut SplitMix64| -> Vec<(u64, f64)> {
            schedule()
                .into_iter()
                .map(|s| {
                    let climb = ((s as f64 - 400.0) / 1000.0).clamp(0.0, 1.0);
                    (s, scale * (0.03 + 0.92 * climb + 0.005 * rng.normal()))
                })
                .collect()
        };
        let named = [
            ("eval.test.accuracy", 1.0),
            ("behavior.logit_margin", 10.0),
            ("residual.blocks.0.hook_resid_post.eq.sum.accuracy", 1.0),
        ];
        let series = named
            .iter()
            .map(|&(name, scale)| (name.to_string(), ramp(scale, &mut rng)))
            .collect();
        let found = windows_of(
            &series,
            None,
            &LlcSeries::default(),
            &WindowsConfig::default(),
        );
        let slow: Vec<&Trigger> = found
            .iter()
            .flat_map(|w| &w.triggers)
            .filter(|t| t.flag.slow)
            .collect();
        assert_eq!(slow.len(), 1, "{:?}", summary(&found));
        assert_eq!(slow[0].metric, "eval.test.accuracy");
        assert!(slow[0].flag.change > 0.5, "{:?}", slow[0]);
        let window = found
            .iter()
            .find(|w| w.triggers.iter().any(|t| t.flag.slow))
            .unwrap();
        assert!(
            window.start_step >= 400 && window.end_step <= 1400,
            "{:?}",
            summary(&found)
        );
    }

    #[test]
    fn families_are_listed_in_the_order_they_moved_and_hidden_progress_is_named() {
        let found = windows_of(
            &series(
                &[
                    (
                        "behavior.progress.relevant_attention",
                        &[(0.8, 500.0, 40.0)],
                    ),
                    (
                        "residual.blocks.0.hook_resid_post.eq.parity.accuracy",
                        &[(0.5, 560.0, 40.0)],
                    ),
                ],
                7,
            ),
            None,
            &LlcSeries::default(),
            &WindowsConfig::default(),
        );
        assert_eq!(found.len(), 1, "{:?}", summary(&found));
        assert_eq!(found[0].families, vec!["progress", "residual"]);
        assert_eq!(found[0].kind, StageKind::Hidden);
        assert_eq!(found[0].confidence, Confidence::Medium);
    }
}
