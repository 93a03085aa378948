//! The heads family: every head's attention metrics and task scores, output norm, ablation effect, direct
//! logit attribution and K-composition (`heads.L{l}H{h}`), and the patterns at the key queries it stores.

use super::*;

impl Analyzer {
    /// Head metrics of every layer, keyed `L{layer}H{head}`; also stores the patterns at the key queries.
    pub(super) fn heads_row(
        &self,
        message: &CheckpointMessage,
        attribution: &Attribution,
        arrays: &mut Vec<StoredArray>,
    ) -> BTreeMap<String, HeadRow> {
        let probe = &self.probe;
        let keys: Vec<(&str, &[u32])> = probe
            .key_positions
            .iter()
            .map(|k| (k.name.as_str(), k.values.as_slice()))
            .collect();
        let composition = k_composition_row(&message.params);
        let mut out = BTreeMap::new();
        for (name, pattern) in &message.hooks {
            let HookName::Pattern(layer) = *name else {
                continue;
            };
            arrays.push(stored(
                StoredName::Pattern(*name),
                "example,head,key_position,k",
                at_key_queries(pattern, &probe.key_positions),
            ));
            let metrics = head_metrics(&HeadInput {
                pattern: &pattern.data,
                n_heads: pattern.shape[1],
                seq_len: pattern.shape[2],
                tokens: &probe.examples.tokens,
                keys: &keys,
                detections: &self.head_detections,
                induction_repeat: self.induction_repeat.as_deref(),
            });
            let z = hook(&message.hooks, HookName::Z(layer));
            let w_o = message
                .params
                .get(&ParamName::Attn(layer, AttnWeight::WO).to_string());
            for (h, m) in metrics.into_iter().enumerate() {
                let id = Component::head(layer, h).to_string();
                let row = HeadRow {
                    ablation_dloss: message.ablation.as_ref().map(|a| a.heads[layer][h]),
                    attn: m.attn,
                    dla: attribution.heads[layer][h],
                    entropy: m.entropy,
                    k_composition: composition.get(&id).cloned(),
                    output_norm: z
                        .zip(w_o)
                        .map(|(z, w_o)| mean_head_output_norms(z, w_o, h, probe)),
                    scores: m.scores,
                };
                out.insert(id, row);
            }
        }
        out
    }
}

/// K-composition scores keyed by the later head (`L1H0`), then the earlier head (`L0H2`).
pub(super) fn k_composition_row(
    params: &BTreeMap<String, HostArray>,
) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut ov = vec![];
    let mut qk_t = vec![];
    for layer in 0.. {
        let get = |p: AttnWeight| params.get(&ParamName::Attn(layer, p).to_string());
        let (Some(w_q), Some(w_k), Some(w_v), Some(w_o)) = (
            get(AttnWeight::WQ),
            get(AttnWeight::WK),
            get(AttnWeight::WV),
            get(AttnWeight::WO),
        ) else {
            break;
        };
        let [heads, d_model, d_head] = w_q.shape[..] else {
            break;
        };
        let block = d_model * d_head;
        // Head h's circuit a[h] · b[h]ᵀ (b given transposed or not), for every head of the layer.
        let per_head = |a: &HostArray, b: &HostArray, transpose_b: bool| -> Vec<_> {
            (0..heads)
                .map(|h| {
                    let (a, b) = (&a.data[h * block..][..block], &b.data[h * block..][..block]);
                    circuit(a, b, d_model, d_head, transpose_b)
                })
                .collect()
        };
        ov.push(per_head(w_v, w_o, false));
        qk_t.push(per_head(w_k, w_q, true));
    }
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (l1, h1, l2, h2, score) in k_composition(&ov, &qk_t) {
        out.entry(Component::head(l2, h2).to_string())
            .or_default()
            .insert(Component::head(l1, h1).to_string(), score);
    }
    out
}

/// Mean ‖z_h W_O[h]‖ of head `h` at each key position; `z` is [n, pos, head, d_head], `w_o` [head, d_head, d_model].
pub(super) fn mean_head_output_norms(
    z: &HostArray,
    w_o: &HostArray,
    h: usize,
    probe: &ProbeSet,
) -> BTreeMap<String, f64> {
    let (seq, heads, d_head) = (z.shape[1], z.shape[2], z.shape[3]);
    let w = &w_o.data[h * d_head * w_o.shape[2]..][..d_head * w_o.shape[2]];
    probe
        .key_positions
        .iter()
        .map(|key| {
            let mut at_key = Vec::with_capacity(key.values.len() * d_head);
            for (i, &t) in key.values.iter().enumerate() {
                at_key.extend_from_slice(
                    &z.data[((i * seq + t as usize) * heads + h) * d_head..][..d_head],
                );
            }
            let norms = head_output_norms(&at_key, d_head, w);
            let mean = norms.iter().sum::<f64>() / norms.len().max(1) as f64;
            (key.name.clone(), mean)
        })
        .collect()
}
