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
            for result in results {
                let key = &self.probe_targets.key_names[result.key];
                let target = &self.probe_targets.targets[result.target];
                by_key
                    .entry(key.clone())
                    .or_default()
                    .insert(target.name.clone(), result.score);
                arrays.push(stored(
                    StoredName::ProbeWeights {
                        boundary: name,
                        key: key.clone(),
                        target: target.name.clone(),
                    },
                    "d_model,class",
                    HostArray {
                        shape: vec![d_model, target.n_classes],
                        data: result.probe.weights,
                    },
                ));
                arrays.push(stored(
                    StoredName::ProbeBias {
                        boundary: name,
                        key: key.clone(),
                        target: target.name.clone(),
                    },
                    "class",
                    HostArray {
                        shape: vec![target.n_classes],
                        data: result.probe.bias,
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
