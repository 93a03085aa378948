//! The LLC trajectory (Hoogland et al. 2024, "Loss landscape degeneracy and stagewise development in
//! transformers"): one local-learning-coefficient estimate per saved checkpoint, written by `formation llc` to
//! `analysis/llc.jsonl` with its chain diagnostics; the plan that keeps its cost within a budget; the ε / nβ
//! calibration grid devinterp users run by hand; and the reading the birth-window detector takes it from.

use std::collections::BTreeMap;
use std::path::Path;

use host::jsonl::committed_rows;
use serde::{Deserialize, Serialize};
use trainer::config::LlcConfig;

use crate::interventions::llc::{LlcEstimate, SgldConfig};
use crate::windows::llc::{LlcPoint, LlcSeries};

/// One row of `analysis/llc.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlcRow {
    pub step: u64,
    /// The sampler's settings as used (`nbeta` resolved).
    pub settings: SgldConfig,
    #[serde(flatten)]
    pub estimate: LlcEstimate,
    /// The weight-restricted LLC of each head and MLP (`L1H2`, `L0`), when asked for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, ComponentLlc>,
}

/// The trajectory as the window detector takes it: each estimate's standard error is the chains' spread /
/// √chains. The whole model's diverged and negative estimates are left out; a component's estimates are all
/// kept (leaving out an unsettled one would let the estimates bracketing a window lie far outside it).
pub fn llc_series(rows: &[LlcRow]) -> LlcSeries {
    let mut series = LlcSeries::default();
    for row in rows {
        let d = &row.estimate.diagnostics;
        let root = (row.settings.chains.max(1) as f64).sqrt();
        if !(d.diverged || d.negative) {
            series.whole.push(LlcPoint {
                step: row.step,
                llc: row.estimate.llc,
                se: d.llc_std / root,
            });
        }
        for (component, c) in &row.components {
            series
                .components
                .entry(component.clone())
                .or_default()
                .push(LlcPoint {
                    step: row.step,
                    llc: c.llc,
                    se: c.llc_std / root,
                });
        }
    }
    series
}

/// A component's weight-restricted LLC at one checkpoint (its traces are not kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentLlc {
    pub llc: f64,
    pub llc_std: f64,
    pub converged: bool,
}

impl ComponentLlc {
    pub fn of(estimate: &LlcEstimate) -> Self {
        Self {
            llc: estimate.llc,
            llc_std: estimate.diagnostics.llc_std,
            converged: estimate.diagnostics.converged,
        }
    }
}

/// Which checkpoints the trajectory estimates at, and with how many draws per chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrajectoryPlan {
    pub steps: Vec<u64>,
    pub draws: usize,
    /// Every how many saved checkpoints one is estimated.
    pub every: usize,
    /// The SGLD steps it takes, against the run's training steps.
    pub sgld_steps: u64,
}

/// Fewest draws per chain the trajectory uses before thinning checkpoints instead: with fewer, the convergence
/// check (last quarter against the third) compares means of under a dozen draws.
pub const MIN_DRAWS: usize = 50;

/// The checkpoints at every `every`-th of `checkpoints` (the first and the last always).
fn thin(checkpoints: &[u64], every: usize) -> Vec<u64> {
    let mut steps: Vec<u64> = checkpoints.iter().copied().step_by(every.max(1)).collect();
    if let Some(&last) = checkpoints.last()
        && steps.last() != Some(&last)
    {
        steps.push(last);
    }
    steps
}

/// The plan for `checkpoints` of a run of `train_steps` steps, `estimates` estimates per checkpoint (the whole
/// model's and one per component): at most `llc.trajectory_budget` × `train_steps` SGLD steps in all (each is a
/// forward and backward pass on one batch). The draws per chain shrink first (down to [`MIN_DRAWS`]), then
/// checkpoints are thinned. `every` fixes the thinning and keeps the configured draws (the budget is then only
/// reported).
pub fn plan(
    checkpoints: &[u64],
    train_steps: u64,
    llc: &LlcConfig,
    every: Option<usize>,
    estimates: usize,
) -> TrajectoryPlan {
    let cost = |n: usize, draws: usize| (n * estimates * llc.chains * (llc.burn_in + draws)) as u64;
    let budget = (llc.trajectory_budget * train_steps as f64) as u64 / estimates.max(1) as u64;
    let (every, draws) = match every {
        Some(every) => (every.max(1), llc.draws),
        None => {
            let mut every = 1;
            loop {
                let n = thin(checkpoints, every).len();
                let affordable = (budget / (n * llc.chains).max(1) as u64) as usize;
                let draws = affordable.saturating_sub(llc.burn_in).min(llc.draws);
                if draws >= MIN_DRAWS.min(llc.draws) || n <= 2 {
                    break (every, draws.max(MIN_DRAWS.min(llc.draws)));
                }
                every += 1;
            }
        }
    };
    let steps = thin(checkpoints, every);
    TrajectoryPlan {
        sgld_steps: cost(steps.len(), draws),
        steps,
        draws,
        every,
    }
}

/// The rows of `analysis/llc.jsonl` (none when there is no file); damaged lines are left out as everywhere.
pub fn read_llc(path: &Path) -> std::io::Result<Vec<LlcRow>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    Ok(committed_rows(&bytes)
        .into_iter()
        .filter_map(|(_, line)| serde_json::from_slice(line).ok())
        .collect())
}

/// Why a trajectory's rows `done` cannot be continued with the sampler `now` (`None` when they can): one
/// trajectory has one ε, nβ, γ and chain count.
pub fn sampler_mismatch(done: &[LlcRow], now: &LlcConfig) -> Option<String> {
    let was = &done.last()?.settings;
    let differs = was.epsilon != now.epsilon
        || now.nbeta.is_some_and(|b| b != was.nbeta)
        || was.gamma != now.gamma
        || was.chains != now.chains;
    differs.then(|| {
        format!(
            "was made with other sampler settings (epsilon {:e}, nbeta {}, gamma {}, {} chains); move it away to start a new trajectory, or continue with those",
            was.epsilon, was.nbeta, was.gamma, was.chains
        )
    })
}

/// One setting of the calibration grid and what it gave.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationPoint {
    pub epsilon: f64,
    pub nbeta: f64,
    pub llc: f64,
    pub llc_std: f64,
    pub drift: f64,
    pub converged: bool,
    pub diverged: bool,
    pub negative: bool,
}

/// Step sizes the calibration tries (devinterp's guide sweeps ε over decades around 1e-4).
pub const EPSILONS: [f64; 5] = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3];
/// Multiples of the default nβ (n / ln n) it tries.
pub const NBETA_FACTORS: [f64; 3] = [0.3, 1.0, 3.0];

/// The recommended setting of a calibration grid: at the default nβ (`nbeta`), the largest ε whose chains
/// converged and whose λ̂ agrees within 25 % with the next smaller converged ε (a larger ε mixes faster; an ε
/// where λ̂ still depends on ε is too large). Falls back to the smallest converged ε; `None` when nothing
/// converged (more draws are needed).
pub fn recommend(points: &[CalibrationPoint], nbeta: f64) -> Option<&CalibrationPoint> {
    let mut at_default: Vec<&CalibrationPoint> = points
        .iter()
        .filter(|p| (p.nbeta - nbeta).abs() <= 1e-9 * nbeta.abs().max(1.0) && p.converged)
        .collect();
    at_default.sort_by(|a, b| a.epsilon.total_cmp(&b.epsilon));
    let stable = at_default.windows(2).rev().find(|pair| {
        let (smaller, larger) = (pair[0], pair[1]);
        (larger.llc - smaller.llc).abs() <= 0.25 * smaller.llc.abs().max(1e-9)
    });
    stable.map(|pair| pair[1]).or(at_default.first().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llc(chains: usize, draws: usize, budget: f64) -> LlcConfig {
        LlcConfig {
            chains,
            draws,
            burn_in: 0,
            trajectory_budget: budget,
            ..LlcConfig::default()
        }
    }

    #[test]
    fn the_plan_shrinks_draws_then_thins_checkpoints_within_the_budget() {
        let checkpoints: Vec<u64> = (0..=40).map(|i| i * 100).collect(); // 41 checkpoints, 4 000 steps
        // Budget 4 000 SGLD steps, 4 chains: 41 · 4 · 200 = 32 800 is too many; 4 000 / 164 = 24 draws < 50,
        // so thin: every 2 → 21 checkpoints → 47 draws; every 3 → 14 (+ the last: 15) → 66 draws.
        let p = plan(&checkpoints, 4000, &llc(4, 200, 1.0), None, 1);
        assert_eq!(p.every, 3);
        assert_eq!(p.steps.len(), 15);
        assert_eq!(*p.steps.last().unwrap(), 4000);
        assert_eq!(p.draws, 66);
        assert!(p.sgld_steps <= 4000, "{p:?}");
        // A generous budget keeps every checkpoint and every draw.
        let p = plan(&checkpoints, 4000, &llc(4, 200, 10.0), None, 1);
        assert_eq!((p.every, p.draws, p.steps.len()), (1, 200, 41));
        // A fixed thinning keeps the configured draws.
        let p = plan(&checkpoints, 4000, &llc(4, 200, 1.0), Some(10), 1);
        assert_eq!((p.draws, p.steps), (200, vec![0, 1000, 2000, 3000, 4000]));
        // Ten estimates per checkpoint (the whole model and nine components) share the same budget: the generous
        // one now affords 40 000 / 10 / 164 = 24 draws at every checkpoint, too few, so every 2nd (21): 47, every
        // 3rd (15): 66.
        let p = plan(&checkpoints, 4000, &llc(4, 200, 10.0), None, 10);
        assert_eq!((p.every, p.draws), (3, 66));
        assert!(p.sgld_steps <= 40_000, "{p:?}");
    }

    fn point(epsilon: f64, llc: f64, converged: bool) -> CalibrationPoint {
        CalibrationPoint {
            epsilon,
            nbeta: 10.0,
            llc,
            llc_std: 0.0,
            drift: 0.0,
            converged,
            diverged: false,
            negative: false,
        }
    }

    #[test]
    fn the_largest_stable_converged_step_size_is_recommended() {
        // 1e-5 has not settled; 3e-5, 1e-4 and 3e-4 agree within 25 %; 1e-3 converged but disagrees (2×).
        let grid = vec![
            point(1e-5, 3.0, false),
            point(3e-5, 9.0, true),
            point(1e-4, 10.0, true),
            point(3e-4, 11.0, true),
            point(1e-3, 22.0, true),
        ];
        assert_eq!(recommend(&grid, 10.0).unwrap().epsilon, 3e-4);
        // Nothing agrees: the smallest converged.
        let grid = vec![point(1e-4, 1.0, true), point(1e-3, 5.0, true)];
        assert_eq!(recommend(&grid, 10.0).unwrap().epsilon, 1e-4);
        assert!(recommend(&[point(1e-4, 1.0, false)], 10.0).is_none());
    }
}
