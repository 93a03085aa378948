//! The local learning coefficient (LLC) by SGLD, as devinterp's estimator (Lau et al. 2023, "Quantifying
//! degeneracy in singular models via the learning coefficient", eq. 5 and Algorithm 1):
//!
//!   λ̂(w*) = nβ · (E_w[L_n(w)] − L_n(w*)),
//!
//! the expectation over the tempered, localized posterior ∝ exp(−nβ L_n(w) − γ/2 ‖w − w*‖²), sampled by
//! stochastic-gradient Langevin dynamics started at w*:
//!
//!   w ← w − ε/2 · (nβ ∇L_n(w) + γ (w − w*)) + N(0, ε).
//!
//! This module is the sampler and the estimate over any loss with a gradient (pure, host vectors); the per-chain
//! loss traces are returned so a user can judge convergence (a trace still drifting at the end means more
//! draws or a smaller ε).

use host::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// Sampler settings (devinterp names: `epsilon`, `gamma`, `nbeta`, `num_chains`, `num_draws`, `num_burnin_steps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgldConfig {
    /// Step size ε.
    pub epsilon: f64,
    /// Localization strength γ.
    pub gamma: f64,
    /// n·β, the inverse temperature times the number of samples (devinterp's default β = 1/ln n).
    pub nbeta: f64,
    pub chains: usize,
    /// Draws kept per chain, after `burn_in` discarded steps.
    pub draws: usize,
    pub burn_in: usize,
    pub seed: u64,
}

/// The estimate and what it was computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlcEstimate {
    /// λ̂ over all chains.
    pub llc: f64,
    /// λ̂ of each chain.
    pub per_chain: Vec<f64>,
    /// L_n(w*).
    pub init_loss: f64,
    /// Whether the chains settled.
    pub diagnostics: ChainDiagnostics,
    /// The loss at every kept draw, per chain.
    pub traces: Vec<Vec<f64>>,
}

/// Whether an estimate can be trusted: the sampler must have settled (its loss trace flat by the last draws) and
/// stayed finite. devinterp leaves this to the user's eye on the trace plot; these are the same checks in numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainDiagnostics {
    /// Standard deviation of λ̂ across chains.
    pub llc_std: f64,
    /// nβ · (mean loss over the last quarter of draws − mean over the third quarter), averaged over chains: how
    /// much λ̂ would still grow with more draws, in λ̂ units.
    pub drift: f64,
    /// Its standard error from the chain-to-chain spread (0 with one chain).
    pub drift_se: f64,
    /// The loss trace is still rising at the last draws: `drift` above twice its standard error and above 5 % of
    /// |λ̂| (at least 0.05). More draws or a larger ε needed.
    pub rising: bool,
    /// A loss was not finite (ε too large: the chain blew up).
    pub diverged: bool,
    /// λ̂ < 0: the chains found lower loss than the checkpoint (w* is not a local minimum, or ε is too large).
    pub negative: bool,
    /// None of the three.
    pub converged: bool,
}

impl ChainDiagnostics {
    /// What went wrong, in words (empty when converged).
    pub fn verdict(&self) -> &'static str {
        if self.diverged {
            "diverged: lower epsilon"
        } else if self.negative {
            "negative: lower epsilon, or the checkpoint is not at a minimum"
        } else if self.rising {
            "still rising: more draws or a larger epsilon"
        } else {
            ""
        }
    }
}

/// The diagnostics of per-chain loss `traces` at inverse temperature `nbeta` for the estimate `llc`.
pub fn diagnose(traces: &[Vec<f64>], per_chain: &[f64], llc: f64, nbeta: f64) -> ChainDiagnostics {
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let std = |xs: &[f64]| {
        let m = mean(xs);
        (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len().max(2) - 1) as f64).sqrt()
    };
    let drifts: Vec<f64> = traces
        .iter()
        .filter(|t| t.len() >= 4)
        .map(|t| {
            let q = t.len() / 4;
            nbeta * (mean(&t[t.len() - q..]) - mean(&t[t.len() - 2 * q..t.len() - q]))
        })
        .collect();
    let drift = mean(&drifts);
    let drift_se = if drifts.len() > 1 {
        std(&drifts) / (drifts.len() as f64).sqrt()
    } else {
        0.0
    };
    let diverged = traces.iter().flatten().any(|l| !l.is_finite()) || !llc.is_finite();
    let rising = drift > 2.0 * drift_se && drift > 0.05 * llc.abs().max(1.0);
    let negative = llc < 0.0;
    ChainDiagnostics {
        llc_std: if per_chain.len() > 1 {
            std(per_chain)
        } else {
            0.0
        },
        drift,
        drift_se,
        rising,
        diverged,
        negative,
        converged: !(rising || diverged || negative),
    }
}

/// Runs the sampler from `w_star` on `loss_and_grad` (the loss L_n and its gradient at a point).
pub fn estimate_llc(
    w_star: &[f64],
    loss_and_grad: impl FnMut(&[f64]) -> (f64, Vec<f64>),
    config: &SgldConfig,
) -> LlcEstimate {
    estimate_restricted_llc(w_star, loss_and_grad, config, &[])
}

/// The weight-restricted LLC (Wang et al. 2024, "Differentiation and specialization of attention heads via the
/// refined local learning coefficient", §2): the same sampler, moving only the coordinates `free` marks (all of
/// them when `free` is empty) while the rest stay at w*, so λ̂ measures the degeneracy of the loss in those
/// weights alone (one head's, one MLP's).
pub fn estimate_restricted_llc(
    w_star: &[f64],
    mut loss_and_grad: impl FnMut(&[f64]) -> (f64, Vec<f64>),
    config: &SgldConfig,
    free: &[bool],
) -> LlcEstimate {
    let moves = |i: usize| free.is_empty() || free[i];
    let (init_loss, _) = loss_and_grad(w_star);
    let mut traces = Vec::with_capacity(config.chains);
    for chain in 0..config.chains {
        let mut rng = SplitMix64::derived(config.seed, "sgld", chain as u64);
        let mut w = w_star.to_vec();
        let mut trace = Vec::with_capacity(config.draws);
        for step in 0..config.burn_in + config.draws {
            let (loss, grad) = loss_and_grad(&w);
            if step >= config.burn_in {
                trace.push(loss);
            }
            let noise = config.epsilon.sqrt();
            for (i, ((wi, gi), w0)) in w.iter_mut().zip(&grad).zip(w_star).enumerate() {
                if !moves(i) {
                    continue;
                }
                let drift = config.nbeta * gi + config.gamma * (*wi - w0);
                *wi += -0.5 * config.epsilon * drift + noise * rng.normal();
            }
        }
        traces.push(trace);
    }
    let per_chain: Vec<f64> = traces
        .iter()
        .map(|t| config.nbeta * (t.iter().sum::<f64>() / t.len().max(1) as f64 - init_loss))
        .collect();
    let llc = per_chain.iter().sum::<f64>() / per_chain.len().max(1) as f64;
    LlcEstimate {
        llc,
        diagnostics: diagnose(&traces, &per_chain, llc, config.nbeta),
        per_chain,
        init_loss,
        traces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SgldConfig {
        SgldConfig {
            epsilon: 1e-4,
            gamma: 1.0,
            nbeta: 1000.0,
            chains: 4,
            draws: 2000,
            burn_in: 500,
            seed: 0,
        }
    }

    #[test]
    fn a_full_rank_quadratic_in_d_parameters_has_llc_d_over_2() {
        // L(w) = 0.3 + ½ Σ h_i w_i², h = 1..4: the tempered posterior is Gaussian and nβ·E[L − L*] =
        // Σ ½ nβ h_i / (nβ h_i + γ) ≈ d/2 = 2 (γ ≪ nβ h).
        let h = [1.0, 2.0, 3.0, 4.0];
        let quadratic = |w: &[f64]| {
            let loss = 0.3 + 0.5 * w.iter().zip(&h).map(|(x, hi)| hi * x * x).sum::<f64>();
            (loss, w.iter().zip(&h).map(|(x, hi)| hi * x).collect())
        };
        let estimate = estimate_llc(&[0.0; 4], quadratic, &config());
        assert!((estimate.llc - 2.0).abs() < 0.2, "{}", estimate.llc);
        assert_eq!(estimate.traces.len(), 4);
        assert_eq!(estimate.traces[0].len(), 2000);
        assert!((estimate.init_loss - 0.3).abs() < 1e-12);
    }

    #[test]
    fn a_degenerate_direction_lowers_the_llc() {
        // Same, but the last direction is quartic (w⁴: flat to second order), contributing 1/4 instead of 1/2.
        let h = [1.0, 2.0, 3.0];
        let degenerate = |w: &[f64]| {
            let quadratic: f64 = w[..3].iter().zip(&h).map(|(x, hi)| 0.5 * hi * x * x).sum();
            let mut grad: Vec<f64> = w[..3].iter().zip(&h).map(|(x, hi)| hi * x).collect();
            grad.push(4.0 * w[3].powi(3));
            (quadratic + w[3].powi(4), grad)
        };
        let estimate = estimate_llc(&[0.0; 4], degenerate, &config());
        // Theory: 3/2 + 1/4 = 1.75 (< d/2 = 2); the localization γ shaves a little off the quartic term.
        assert!(estimate.llc < 1.9 && estimate.llc > 1.5, "{}", estimate.llc);
    }

    #[test]
    fn restricting_to_some_weights_counts_only_their_degeneracy() {
        // The quadratic of the first test restricted to w_0 and w_3 (h = 1 and 4): λ = 1/2 + 1/2 = 1.
        let h = [1.0, 2.0, 3.0, 4.0];
        let quadratic = |w: &[f64]| {
            let loss = 0.5 * w.iter().zip(&h).map(|(x, hi)| hi * x * x).sum::<f64>();
            (loss, w.iter().zip(&h).map(|(x, hi)| hi * x).collect())
        };
        let free = [true, false, false, true];
        let estimate = estimate_restricted_llc(&[0.0; 4], quadratic, &config(), &free);
        assert!((estimate.llc - 1.0).abs() < 0.15, "{}", estimate.llc);
        assert!(estimate.diagnostics.converged, "{:?}", estimate.diagnostics);
    }

    #[test]
    fn a_trace_still_rising_is_flagged_and_a_flat_one_is_not() {
        // nβ = 10. Flat traces around 1.0 (+ tiny alternating noise): λ̂ = 10 · (1.0 − 0.9) = 1, no drift.
        let flat: Vec<Vec<f64>> = (0..4)
            .map(|c| {
                (0..100)
                    .map(|i| 1.0 + 1e-4 * ((i + c) % 2) as f64)
                    .collect()
            })
            .collect();
        let d = diagnose(&flat, &[1.0; 4], 1.0, 10.0);
        assert!(!d.rising && d.converged, "{d:?}");
        // Rising linearly by 0.01 per draw: the last quarter's mean is 25 draws (0.25) above the third's, a
        // drift of 10 · 0.25 = 2.5 λ̂ units, the same in every chain (standard error 0).
        let rising: Vec<Vec<f64>> = (0..4)
            .map(|_| (0..100).map(|i| 1.0 + 0.01 * i as f64).collect())
            .collect();
        let d = diagnose(&rising, &[5.0; 4], 5.0, 10.0);
        assert!((d.drift - 2.5).abs() < 1e-9, "{d:?}");
        assert!(d.rising && !d.converged, "{d:?}");
        // A blown-up chain and a negative estimate are flagged.
        let mut blown = flat.clone();
        blown[1][50] = f64::NAN;
        assert!(diagnose(&blown, &[1.0; 4], 1.0, 10.0).diverged);
        assert!(diagnose(&flat, &[-1.0; 4], -1.0, 10.0).negative);
    }
}
