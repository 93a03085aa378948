//! The residual family: at every layer boundary, the linear probes of every key position × target with their
//! control tasks (`residual.{boundary}.{key}.{target}`), and the probe weights and activations it stores.

use super::*;

impl Analyzer {
    /// Probes at every boundary of `hooks`; pushes the probe weights, biases and the residuals at the key
    /// positions onto `arrays`.
    pub(super) fn residual_family(
        &self,
        step: u64,
        hooks: &[(HookName, HostArray)],
        arrays: &mut Vec<StoredArray>,
    ) -> Result<Residual, AnalysisError> {
        let probe = &self.probe;
        let mut residual = Residual::new();
        for (name, array) in boundaries(hooks) {
            let at_keys = at_key_positions(array, &probe.key_positions);
            let (n_keys, d_model) = (at_keys.shape[1], at_keys.shape[2]);
            let results = probe_boundary(&at_keys.data, n_keys, d_model, &self.probe_targets)
                .map_err(|e| AnalysisError::Metric {
                    step,
                    message: format!("{name}: {e}"),
                })?;
            let mut by_key: BTreeMap<String, BTreeMap<String, ProbeScore>> = BTreeMap::new();
            // One array per target with the key positions stacked, as `resid_at_keys` stacks them: a
            // dataset per probe cost the store more than its bytes (120 of sparse parity's 147 datasets).
            let n_targets = self.probe_targets.targets.len();
            let mut weights: Vec<Vec<f32>> = vec![vec![]; n_targets];
            let mut biases: Vec<Vec<f32>> = vec![vec![]; n_targets];
            for result in results {
                let key = &self.probe_targets.key_names[result.key];
                let target = &self.probe_targets.targets[result.target];
                by_key
                    .entry(key.clone())
                    .or_default()
                    .insert(target.name.clone(), result.score);
                weights[result.target].extend(result.probe.weights);
                biases[result.target].extend(result.probe.bias);
            }
            for ((target, weights), bias) in
                self.probe_targets.targets.iter().zip(weights).zip(biases)
            {
                let (boundary, target_name) = (name, target.name.clone());
                arrays.push(stored(
                    StoredName::ProbeWeights {
                        boundary,
                        target: target_name.clone(),
                    },
                    "key_position,d_model,class",
                    HostArray {
                        shape: vec![n_keys, d_model, target.n_classes],
                        data: weights,
                    },
                ));
                arrays.push(stored(
                    StoredName::ProbeBias {
                        boundary,
                        target: target_name,
                    },
                    "key_position,class",
                    HostArray {
                        shape: vec![n_keys, target.n_classes],
                        data: bias,
                    },
                ));
            }
            residual.insert(name, by_key);
            arrays.push(stored(
                StoredName::ResidAtKeys(name),
                "example,key_position,d_model",
                at_keys,
            ));
        }
        Ok(residual)
    }
}
