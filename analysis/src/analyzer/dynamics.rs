//! The dynamics family: everything compared with the previous checkpoint (CKA, probe-direction cosines,
//! attention drift, relative parameter updates, headline deltas), and what is kept for the next comparison.

use super::*;

impl Analyzer {
    /// Everything compared with the previous checkpoint, plus this checkpoint's own parameter norms and output
    /// projection; and the CKA self-products of this checkpoint's residuals, for the next comparison.
    pub(super) fn dynamics(
        &self,
        message: &CheckpointMessage,
        arrays: &[StoredArray],
        headline: &BTreeMap<String, f64>,
        projection: Vec<f64>,
    ) -> (Dynamics, BTreeMap<(StoredName, usize), f64>) {
        let mut out = Dynamics {
            param_norm: message
                .params
                .iter()
                .map(|(name, p)| (name.clone(), frobenius_norm(&p.data)))
                .collect(),
            output_projection: projection,
            ..Dynamics::default()
        };
        let mut cka_self = BTreeMap::new();
        let Some(previous) = &self.previous else {
            return (out, cka_self);
        };
        let before = |name: &StoredName| previous.arrays.get(name);
        let mut relative = BTreeMap::new();
        let mut cka: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        let mut probe_cosine: BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>> =
            BTreeMap::new();
        let mut js_drift = BTreeMap::new();
        for array in arrays {
            let Some(old) = before(&array.name) else {
                continue;
            };
            match &array.name {
                StoredName::Param(name) => {
                    if let Some(r) = relative_update(&array.array.data, &old.data) {
                        relative.insert(name.clone(), r);
                    }
                }
                StoredName::ResidAtKeys(boundary) => {
                    let [_, _, d] = array.array.shape[..] else {
                        continue;
                    };
                    for (k, key) in self.probe_targets.key_names.iter().enumerate() {
                        let known = previous.cka_self.get(&(array.name.clone(), k)).copied();
                        let (score, own) = linear_cka_reusing(
                            &key_column(&array.array, k),
                            d,
                            &key_column(old, k),
                            d,
                            known,
                        );
                        cka_self.insert((array.name.clone(), k), own);
                        cka.entry(boundary.to_string())
                            .or_default()
                            .insert(key.clone(), score);
                    }
                }
                StoredName::ProbeWeights { boundary, target } => {
                    let (Some(now), Some(before)) = (key_slices(&array.array), key_slices(old))
                    else {
                        continue;
                    };
                    if old.shape != array.array.shape {
                        continue;
                    }
                    let by_key = probe_cosine.entry(boundary.to_string()).or_default();
                    for ((key, now), old) in
                        self.probe_targets.key_names.iter().zip(now).zip(before)
                    {
                        by_key
                            .entry(key.clone())
                            .or_default()
                            .insert(target.clone(), cosine(now, old));
                    }
                }
                StoredName::Pattern(HookName::Pattern(layer)) => {
                    let layer = *layer;
                    let [n, heads, keys, k] = array.array.shape[..] else {
                        continue;
                    };
                    for h in 0..heads {
                        let mut total = 0.0;
                        for i in 0..n {
                            for q in 0..keys {
                                let at = ((i * heads + h) * keys + q) * k;
                                total += js_divergence(
                                    &array.array.data[at..at + k],
                                    &old.data[at..at + k],
                                );
                            }
                        }
                        js_drift.insert(
                            Component::head(layer, h).to_string(),
                            total / (n * keys).max(1) as f64,
                        );
                    }
                }
                _ => {}
            }
        }
        out.delta = Some(
            headline
                .iter()
                .filter_map(|(name, now)| Some((name.clone(), now - previous.headline.get(name)?)))
                .collect(),
        );
        out.previous_step = Some(previous.step);
        out.relative_update = Some(relative);
        out.cka = Some(cka);
        out.probe_cosine = Some(probe_cosine);
        out.pattern_js = Some(js_drift);
        (out, cka_self)
    }
}

/// The `[example, d]` slice at key position `k` of a `resid_at_keys` array `[example, key_position, d]`.
pub fn key_column(resid: &HostArray, k: usize) -> Vec<f32> {
    let [n, keys, d] = resid.shape[..] else {
        return vec![];
    };
    (0..n)
        .flat_map(|i| &resid.data[(i * keys + k) * d..][..d])
        .copied()
        .collect()
}

/// The headline metrics whose change the dynamics report: every numeric leaf of behavior, residual, heads and
/// mlp whose name is one of the scalar results (not the per-key-position breakdowns).
pub(super) fn headline(row: &Row) -> BTreeMap<String, f64> {
    const LEAVES: [&str; 10] = [
        "loss",
        "accuracy",
        "logit_margin",
        "in_context_score",
        "selectivity",
        "ablation_dloss",
        "dla",
        "induction_score",
        "previous_token_head",
        "duplicate_token_head",
    ];
    const FAMILIES: [&str; 4] = ["behavior", "residual", "heads", "mlp"];
    row.series()
        .into_iter()
        .filter(|(path, _)| FAMILIES.contains(&path.split('.').next().unwrap_or_default()))
        .filter(|(path, _)| LEAVES.contains(&path.rsplit('.').next().unwrap_or_default()))
        .collect()
}
