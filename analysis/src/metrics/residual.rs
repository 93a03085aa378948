//! Residual-stream probes (SPEC §5B): at one layer boundary, for each key position × target, the held-out
//! accuracy of a linear probe ([`probes::ridge`], k-fold cross-validated), the accuracy of the same probe on the
//! target's control task ([`probes::control_task`], Hewitt & Liang 2019) under the same folds, their difference
//! (selectivity), and the probe fitted on every example (its weights go to HDF5 for stability tracking).

use host::examples::Labeled;
use probes::ridge::{Folds, Labels, RidgeError, RidgeProbe};
use serde::{Deserialize, Serialize};

/// What stays fixed across checkpoints: labels, control labels and folds.
pub struct ProbeTargets {
    pub key_names: Vec<String>,
    pub targets: Vec<Labeled>,
    /// `controls[key][target]`: control labels of that probe.
    pub controls: Vec<Vec<Vec<u32>>>,
    /// The fold of each example.
    pub folds: Vec<usize>,
    /// Ridge strength relative to the features' mean variance.
    pub alpha: f64,
}

/// One probe's scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeScore {
    /// Held-out accuracy on the target.
    pub accuracy: f64,
    /// Held-out accuracy on the control task.
    pub control_accuracy: f64,
    /// `accuracy − control_accuracy`.
    pub selectivity: f64,
}

/// One probe at one boundary: where, its scores and its weights (fitted on all examples).
pub struct ProbeResult {
    pub key: usize,
    pub target: usize,
    pub score: ProbeScore,
    pub probe: RidgeProbe,
}

/// Probes every key position × target of one boundary; `resid_at_keys` is [n, keys, d_model].
pub fn probe_boundary(
    resid_at_keys: &[f32],
    n_keys: usize,
    d_model: usize,
    targets: &ProbeTargets,
) -> Result<Vec<ProbeResult>, RidgeError> {
    let n = targets.folds.len();
    let mut out = vec![];
    for key in 0..n_keys {
        // [n, d_model]: the key's row of each example (whole-row copies; an element-wise gather took 12 % of
        // this function).
        let mut features = Vec::with_capacity(n * d_model);
        for i in 0..n {
            features.extend_from_slice(&resid_at_keys[(i * n_keys + key) * d_model..][..d_model]);
        }
        // Targets then their controls, all on one factorization per fold.
        let label_sets: Vec<Labels<'_>> = targets
            .targets
            .iter()
            .map(|t| Labels {
                labels: &t.values,
                n_classes: t.n_classes,
            })
            .chain(
                targets.controls[key]
                    .iter()
                    .zip(&targets.targets)
                    .map(|(control, t)| Labels {
                        labels: control,
                        n_classes: t.n_classes,
                    }),
            )
            .collect();
        let folds = Folds::new(&features, d_model, &targets.folds);
        let n_targets = targets.targets.len();
        let (accuracy, probes) =
            folds.cross_validate_and_fit(&label_sets, n_targets, targets.alpha)?;
        for (target, probe) in probes.into_iter().enumerate() {
            let (acc, control) = (accuracy[target], accuracy[n_targets + target]);
            out.push(ProbeResult {
                key,
                target,
                score: ProbeScore {
                    accuracy: acc,
                    control_accuracy: control,
                    selectivity: acc - control,
                },
                probe,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use probes::ridge::folds;

    #[test]
    fn a_key_that_holds_the_target_is_probed_perfectly_and_a_key_without_it_at_chance() {
        // 120 examples, 2 key positions, d_model 3. Key 0 holds the label one-hot (+ a constant); key 1 holds
        // noise unrelated to it. Control labels: a fixed function of the example index parity.
        let n = 120;
        let labels: Vec<u32> = (0..n as u32).map(|i| (i * 7) % 3).collect();
        let mut rng = host::rng::SplitMix64::new(5);
        let mut resid = vec![];
        for &label in &labels {
            resid.extend((0..3).map(|j| if j == label as usize { 4.0 } else { 1.0 }));
            resid.extend((0..3).map(|_| rng.normal() as f32));
        }
        let target = Labeled {
            name: "t".into(),
            n_classes: 3,
            values: labels,
        };
        let control: Vec<u32> = (0..n as u32).map(|i| i % 2 * 2).collect();
        let targets = ProbeTargets {
            key_names: vec!["k0".into(), "k1".into()],
            targets: vec![target],
            controls: vec![vec![control.clone()], vec![control]],
            folds: folds(n, 5, 0),
            alpha: 1e-3,
        };
        let results = probe_boundary(&resid, 2, 3, &targets).unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].score.accuracy, 1.0);
        // Index parity is not in the features: control at chance (~1/2 of its two used labels).
        assert!(results[0].score.control_accuracy < 0.7);
        assert!(results[0].score.selectivity > 0.3);
        assert!(results[1].score.accuracy < 0.5, "{:?}", results[1].score);
    }
}
