//! The MLP family: every block's output norm, active-neuron fraction, ablation effect and direct logit
//! attribution (`mlp.L{l}`).

use super::*;

impl Analyzer {
    /// MLP metrics of every block, keyed `L{layer}`.
    pub(super) fn mlp_row(
        &self,
        message: &CheckpointMessage,
        attribution: &Attribution,
    ) -> BTreeMap<String, MlpRow> {
        let probe = &self.probe;
        let at_keys = |array: &HostArray, f: RowMetric| {
            let (seq, d) = (array.shape[1], array.shape[2]);
            mean_at_keys(probe, |i, t| f(&array.data[(i * seq + t) * d..][..d]))
        };
        let mut out = BTreeMap::new();
        for (name, array) in &message.hooks {
            let (layer, f): (usize, RowMetric) = match name {
                HookName::MlpOut(l) => (*l, norm),
                HookName::MlpPost(l) => (*l, active_fraction),
                _ => continue,
            };
            let entry = out
                .entry(Component::mlp(layer).to_string())
                .or_insert_with(|| MlpRow {
                    ablation_dloss: message
                        .ablation
                        .as_ref()
                        .and_then(|a| a.mlp.get(layer).copied()),
                    dla: attribution.mlp.get(layer).copied(),
                    ..MlpRow::default()
                });
            let values = Some(at_keys(array, f));
            match name {
                HookName::MlpOut(_) => entry.output_norm = values,
                _ => entry.active_fraction = values,
            }
        }
        out
    }
}
