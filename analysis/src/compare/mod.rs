//! `formation compare` (SPEC §8): each run [`summary`]-ized (final behavior, birth window and step, the
//! components that carry the mechanism, [`stability`] after the window), runs of one config compared across
//! seeds (spread of birth steps, agreement of the localized components), groups compared across a factor's
//! values, and the [`decision`] rule applied to each group.

pub mod decision;
pub mod stability;
pub mod summary;

use host::layout::RunLayout;
use serde::Serialize;
use trainer::config::DecisionConfig;
use trainer::run_dir::RunFiles;

use crate::error::AnalysisError;
use crate::sinks::jsonl::read_rows;
use crate::windows::read_windows;
use decision::{Decision, decide};
use stability::Stability;
use summary::{
    FinalBehavior, ablation_shares, agreement, birth_step, birth_step_spread, birth_window,
    final_behavior, localized, probe_selectivity,
};

/// One window, briefly.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowBrief {
    pub id: String,
    pub rank: usize,
    pub start_step: u64,
    pub end_step: u64,
    pub birth_step: u64,
    pub loss_fell: bool,
    pub mechanism_grew: Vec<String>,
    /// The three strongest triggers' metrics.
    pub top_triggers: Vec<String>,
}

/// One run, summarized.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSummary {
    pub name: String,
    pub run_dir: String,
    pub run_id: String,
    pub seed: u64,
    /// The screened factor's value.
    pub value: Option<String>,
    pub steps: u64,
    pub final_behavior: Option<FinalBehavior>,
    pub windows: Vec<WindowBrief>,
    pub birth_window: Option<String>,
    pub birth_step: Option<u64>,
    /// Ablation share of every head and MLP block at the last checkpoint, largest first.
    pub ablation_shares: Vec<(String, f64)>,
    /// The fewest components carrying `decision.ablation_share` of the effect.
    pub localized: Vec<String>,
    pub stability: Option<Stability>,
    /// Why stability was not measured, when it was not.
    pub stability_note: String,
}

/// Summarizes an analyzed run whose windows were found.
pub fn summarize(
    run: &RunLayout,
    name: &str,
    value: Option<String>,
    config: &DecisionConfig,
) -> Result<RunSummary, AnalysisError> {
    let manifest = run.read_manifest()?;
    let rows = read_rows(&run.metrics())?;
    let windows = read_windows(run)?;
    let last = rows.last().ok_or_else(|| AnalysisError::Invalid {
        path: run.metrics(),
        problem: "has no rows".into(),
    })?;
    let shares = ablation_shares(last);
    let birth = birth_window(&windows);
    let behavior = final_behavior(&rows, config.converged_span).map(|b| FinalBehavior {
        attainable: manifest.attainable_accuracy,
        ..b
    });
    // The settling span: from the later of the birth window's end and the start of the span the behavior's
    // convergence is judged over, to the last checkpoint (docs/compare.md).
    let (stability, stability_note) = match birth {
        None => (None, "no birth window".to_owned()),
        Some(w) => {
            let from = w.end_step.max(behavior.as_ref().map_or(0, |b| b.span_from));
            let steps: Vec<u64> = rows
                .iter()
                .map(|r| r.step)
                .filter(|&s| s >= from && s < last.step)
                .collect();
            if steps.is_empty() {
                (
                    None,
                    format!(
                        "the birth window ends at the last checkpoint ({}): nothing after it to judge",
                        last.step
                    ),
                )
            } else {
                let selective: Vec<String> = probe_selectivity(last)
                    .into_iter()
                    .filter(|(_, s)| *s >= config.min_probe_selectivity)
                    .map(|(probe, _)| probe)
                    .collect();
                let s =
                    stability::stability(&run.activations_dir(), &steps, last.step, &selective)?;
                (Some(s), String::new())
            }
        }
    };
    Ok(RunSummary {
        name: name.to_owned(),
        run_dir: run.root.display().to_string(),
        run_id: manifest.run_id,
        seed: manifest.seed,
        value,
        steps: manifest.steps,
        final_behavior: behavior,
        windows: windows
            .iter()
            .map(|w| WindowBrief {
                id: w.id.clone(),
                rank: w.rank,
                start_step: w.start_step,
                end_step: w.end_step,
                birth_step: birth_step(w),
                loss_fell: w.loss_fell,
                mechanism_grew: w.mechanism_grew.clone(),
                top_triggers: w
                    .triggers
                    .iter()
                    .take(3)
                    .map(|t| t.metric.clone())
                    .collect(),
            })
            .collect(),
        birth_window: birth.map(|w| w.id.clone()),
        birth_step: birth.map(birth_step),
        localized: localized(&shares, config.ablation_share),
        ablation_shares: shares,
        stability,
        stability_note,
    })
}

/// The runs of one config (one factor value), compared across seeds, with the rule's decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// The factor's value (None: not a screen).
    pub value: Option<String>,
    pub runs: Vec<String>,
    pub birth_steps: Vec<Option<u64>>,
    pub median_birth_step: Option<f64>,
    /// Largest factor between a birth step and the median.
    pub birth_step_spread: Option<f64>,
    /// Mean pairwise Jaccard similarity of the localized components.
    pub component_agreement: f64,
    pub mean_final_accuracy: Option<f64>,
    pub decision: Decision,
}

impl Group {
    /// `optim.lr = 1e-3` in a screen, `these runs` otherwise.
    pub fn label(&self, factor: Option<&String>) -> String {
        match (factor, &self.value) {
            (Some(key), Some(v)) => format!("{key} = {v}"),
            _ => "these runs".to_owned(),
        }
    }
}

impl RunSummary {
    /// `W1 (1200–3800)`, or `-` without a birth window.
    pub fn birth_window_text(&self) -> String {
        self.birth_window
            .as_ref()
            .and_then(|id| self.windows.iter().find(|w| &w.id == id))
            .map(|w| format!("{} ({}–{})", w.id, w.start_step, w.end_step))
            .unwrap_or("-".into())
    }
}

/// What `formation compare` prints and writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The screened key (None: seeds only).
    pub factor: Option<String>,
    pub thresholds: DecisionConfig,
    pub runs: Vec<RunSummary>,
    pub groups: Vec<Group>,
}

/// Groups runs by factor value (in first-seen order) and compares each group.
pub fn compare(
    factor: Option<String>,
    runs: Vec<RunSummary>,
    config: &DecisionConfig,
) -> Comparison {
    let mut values: Vec<Option<String>> = vec![];
    for run in &runs {
        if !values.contains(&run.value) {
            values.push(run.value.clone());
        }
    }
    let groups = values
        .into_iter()
        .map(|value| {
            let members: Vec<&RunSummary> = runs.iter().filter(|r| r.value == value).collect();
            let steps: Vec<u64> = members.iter().filter_map(|r| r.birth_step).collect();
            let spread = birth_step_spread(&steps);
            let finals: Vec<f64> = members
                .iter()
                .filter_map(|r| r.final_behavior.as_ref().map(|f| f.accuracy))
                .collect();
            let sets: Vec<Vec<String>> = members.iter().map(|r| r.localized.clone()).collect();
            Group {
                value,
                runs: members.iter().map(|r| r.name.clone()).collect(),
                birth_steps: members.iter().map(|r| r.birth_step).collect(),
                median_birth_step: spread.map(|s| s.0),
                birth_step_spread: spread.map(|s| s.1),
                component_agreement: agreement(&sets),
                mean_final_accuracy: (!finals.is_empty())
                    .then(|| finals.iter().sum::<f64>() / finals.len() as f64),
                decision: decide(&members, config),
            }
        })
        .collect();
    Comparison {
        factor,
        thresholds: config.clone(),
        runs,
        groups,
    }
}

/// The comparison as text: a table of runs, then per group the cross-seed summary and the decision.
pub fn table(c: &Comparison) -> String {
    let mut out = String::new();
    let opt = |x: Option<u64>| x.map(|s| s.to_string()).unwrap_or("-".into());
    out.push_str(&format!(
        "{:<28} {:>5} {:>9} {:>9} {:>8} {:>11}  {:<28} {}\n",
        "run",
        "seed",
        "final acc",
        "loss",
        "windows",
        "birth step",
        "birth window (steps)",
        "localized (share)"
    ));
    for r in &c.runs {
        let (acc, loss) = r
            .final_behavior
            .as_ref()
            .map(|f| (format!("{:.4}", f.accuracy), format!("{:.4}", f.loss)))
            .unwrap_or(("-".into(), "-".into()));
        let window = r.birth_window_text();
        let share: f64 = r
            .ablation_shares
            .iter()
            .filter(|(n, _)| r.localized.contains(n))
            .map(|s| s.1)
            .sum();
        out.push_str(&format!(
            "{:<28} {:>5} {:>9} {:>9} {:>8} {:>11}  {:<28} {} ({:.2})\n",
            r.name,
            r.seed,
            acc,
            loss,
            r.windows.len(),
            opt(r.birth_step),
            window,
            r.localized.join(", "),
            share
        ));
    }
    if let Some(key) = &c.factor {
        out.push_str(&format!(
            "\nbirth step vs {key}:\n{:<16} {:>6} {:>12} {:>8} {:>10} {:>10}  decision\n",
            "value", "runs", "median birth", "spread", "agreement", "final acc"
        ));
        for g in &c.groups {
            out.push_str(&format!(
                "{:<16} {:>6} {:>12} {:>8} {:>10.2} {:>10}  {}\n",
                g.value.as_deref().unwrap_or("-"),
                g.runs.len(),
                g.median_birth_step
                    .map(|m| format!("{m:.0}"))
                    .unwrap_or("-".into()),
                g.birth_step_spread
                    .map(|s| format!("{s:.2}"))
                    .unwrap_or("-".into()),
                g.component_agreement,
                g.mean_final_accuracy
                    .map(|a| format!("{a:.4}"))
                    .unwrap_or("-".into()),
                if g.decision.ready {
                    "READY"
                } else {
                    "NOT READY"
                }
            ));
        }
    }
    for g in &c.groups {
        let label = g.label(c.factor.as_ref());
        out.push_str(&format!(
            "\n{label}: {} — deep circuit work {}\n",
            if g.decision.ready {
                "READY"
            } else {
                "NOT READY"
            },
            if g.decision.ready {
                "can start"
            } else {
                "should wait"
            }
        ));
        for crit in &g.decision.criteria {
            out.push_str(&format!(
                "  [{}] {}: {} (threshold {})\n",
                if crit.passed { "pass" } else { "FAIL" },
                crit.name,
                crit.measured,
                crit.threshold
            ));
        }
    }
    out
}
