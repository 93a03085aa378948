//! Which hooks the trainer copies, and host-side selections of them (pure functions, run on the sidecar so the
//! trainer thread only copies).

use std::collections::BTreeSet;

use probes::ProbeSet;
use trainer::config::StoreItem;
use trainer::model::{HookName, HostArray};
use trainer::tasks::{Declared, Labeled, ProgressMeasure};

/// `array` [n, seq, d] at each example's key positions → [n, keys, d].
pub fn at_key_positions(array: &HostArray, keys: &[Labeled]) -> HostArray {
    let (n, seq, d) = (array.shape[0], array.shape[1], array.shape[2]);
    let mut data = Vec::with_capacity(n * keys.len() * d);
    for i in 0..n {
        for key in keys {
            let t = key.values[i] as usize;
            data.extend_from_slice(&array.data[(i * seq + t) * d..][..d]);
        }
    }
    HostArray {
        shape: vec![n, keys.len(), d],
        data,
    }
}

/// `pattern` [n, head, q, k] at each example's key query positions → [n, head, keys, k].
pub fn at_key_queries(pattern: &HostArray, keys: &[Labeled]) -> HostArray {
    let (n, heads, q, k) = (
        pattern.shape[0],
        pattern.shape[1],
        pattern.shape[2],
        pattern.shape[3],
    );
    let mut data = Vec::with_capacity(n * heads * keys.len() * k);
    for i in 0..n {
        for h in 0..heads {
            for key in keys {
                let t = key.values[i] as usize;
                data.extend_from_slice(&pattern.data[((i * heads + h) * q + t) * k..][..k]);
            }
        }
    }
    HostArray {
        shape: vec![n, heads, keys.len(), k],
        data,
    }
}

/// `array` [n, seq, d] at the same `positions` for every example → [n, positions, d].
pub fn at_positions(array: &HostArray, positions: &[usize]) -> HostArray {
    let (n, seq, d) = (array.shape[0], array.shape[1], array.shape[2]);
    let mut data = Vec::with_capacity(n * positions.len() * d);
    for i in 0..n {
        for &t in positions {
            data.extend_from_slice(&array.data[(i * seq + t) * d..][..d]);
        }
    }
    HostArray {
        shape: vec![n, positions.len(), d],
        data,
    }
}

/// Whether the trainer copies hook `name` of a model with `n_layers` blocks: every hook the metrics read
/// (logits, patterns, z, MLP post and out, the residual stream at every layer boundary), or all of them when
/// `store` asks for all hooks.
pub fn needed(store: &[StoreItem], name: HookName, n_layers: usize) -> bool {
    store.contains(&StoreItem::AllHooks)
        || matches!(
            name,
            HookName::Logits
                | HookName::Pattern(_)
                | HookName::Z(_)
                | HookName::MlpPost(_)
                | HookName::MlpOut(_)
                | HookName::ResidPre(_)
                | HookName::ResidMid(_)
        )
        || name == HookName::ResidPost(n_layers.saturating_sub(1))
}

/// The query positions the analysis reads the last block's activations and the logits at: the answer
/// positions first, in order, then every position any example has a key at, ascending, then a progress
/// measure's own answer position. `None` when that is every position, when `store` keeps every hook whole, when
/// a head detector scores the whole attention pattern, or when the task's in-context score reads the logits
/// along the whole repeated block. The capture forward runs the last block only there
/// ([`trainer::model::Transformer::capture_at`]).
pub fn tail_positions(
    probe: &ProbeSet,
    declared: &Declared,
    store: &[StoreItem],
) -> Option<Vec<usize>> {
    if store.contains(&StoreItem::AllHooks)
        || declared.repeat_keys.is_some()
        || !declared.head_detectors.is_empty()
    {
        return None;
    }
    let mut positions = probe.answer_positions.clone();
    let keys: BTreeSet<usize> = probe
        .key_positions
        .iter()
        .flat_map(|key| key.values.iter().map(|&t| t as usize))
        .chain(
            declared
                .progress_measures
                .iter()
                .filter_map(|measure| match measure {
                    ProgressMeasure::ParityFourier { answer, .. } => Some(*answer),
                    ProgressMeasure::MarkovOracles { .. } => None,
                }),
        )
        .collect();
    positions.extend(
        keys.into_iter()
            .filter(|t| !probe.answer_positions.contains(t)),
    );
    (positions.len() < probe.examples.seq_len).then_some(positions)
}

/// The layer boundaries of SPEC §5B among the copied hooks, in forward order: `hook_resid_pre` and
/// `hook_resid_mid` of every block and the last block's `hook_resid_post`.
pub fn boundaries(hooks: &[(HookName, HostArray)]) -> Vec<(HookName, &HostArray)> {
    let last_post = hooks
        .iter()
        .filter(|(h, _)| matches!(h, HookName::ResidPost(_)))
        .map(|(h, _)| *h)
        .max();
    hooks
        .iter()
        .filter(|(name, _)| {
            matches!(name, HookName::ResidPre(_) | HookName::ResidMid(_))
                || Some(*name) == last_post
        })
        .map(|(name, array)| (*name, array))
        .collect()
}

/// Axis names of a full hook array.
pub fn hook_axes(name: HookName) -> &'static str {
    match name {
        HookName::Pattern(_) => "example,head,q,k",
        HookName::Z(_) => "example,pos,head,d_head",
        HookName::MlpPost(_) => "example,pos,d_mlp",
        HookName::Logits => "example,pos,d_vocab_out",
        _ => "example,pos,d_model",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, values: Vec<u32>) -> Labeled {
        Labeled {
            name: name.into(),
            n_classes: 4,
            values,
        }
    }

    #[test]
    fn key_positions_are_gathered_per_example() {
        // n 2, seq 3, d 2: value = 100·i + 10·t + j.
        let data = (0..2).flat_map(|i| {
            (0..3).flat_map(move |t| (0..2).map(move |j| (100 * i + 10 * t + j) as f32))
        });
        let array = HostArray {
            shape: vec![2, 3, 2],
            data: data.collect(),
        };
        let got = at_key_positions(&array, &[key("x", vec![2, 0]), key("y", vec![1, 1])]);
        assert_eq!(got.shape, vec![2, 2, 2]);
        // example 0: t=2 → [20, 21], t=1 → [10, 11]; example 1: t=0 → [100, 101], t=1 → [110, 111]
        assert_eq!(got.data, vec![20., 21., 10., 11., 100., 101., 110., 111.]);
    }

    #[test]
    fn key_query_rows_are_gathered_per_example_and_head() {
        // n 1, head 2, q 2, k 2: value = 10·h + 2·q + k.
        let data = (0..2).flat_map(|h| {
            (0..2).flat_map(move |q| (0..2).map(move |k| (10 * h + 2 * q + k) as f32))
        });
        let pattern = HostArray {
            shape: vec![1, 2, 2, 2],
            data: data.collect(),
        };
        let got = at_key_queries(&pattern, &[key("x", vec![1])]);
        assert_eq!(got.shape, vec![1, 2, 1, 2]);
        assert_eq!(got.data, vec![2., 3., 12., 13.]);
    }

    #[test]
    fn boundaries_are_every_pre_and_mid_and_only_the_last_resid_post() {
        let array = HostArray {
            shape: vec![1, 2, 1],
            data: vec![0.0, 1.0],
        };
        let hooks: Vec<(HookName, HostArray)> = [
            HookName::ResidPre(0),
            HookName::ResidMid(0),
            HookName::ResidPost(0),
            HookName::ResidPre(1),
            HookName::ResidMid(1),
            HookName::ResidPost(1),
        ]
        .into_iter()
        .map(|h| (h, array.clone()))
        .collect();
        let names: Vec<String> = boundaries(&hooks)
            .into_iter()
            .map(|(name, _)| name.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "blocks.0.hook_resid_pre",
                "blocks.0.hook_resid_mid",
                "blocks.1.hook_resid_pre",
                "blocks.1.hook_resid_mid",
                "blocks.1.hook_resid_post"
            ]
        );
        assert!(!needed(&[], HookName::ResidPost(0), 2));
        assert!(needed(&[], HookName::ResidPost(1), 2));
        assert!(needed(&[StoreItem::AllHooks], HookName::Embed, 2));
    }
}
