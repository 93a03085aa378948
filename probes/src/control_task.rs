//! Control tasks (Hewitt & Liang 2019, "Designing and Interpreting Probes with Control Tasks"): for each probe
//! (key position × target), labels that are a fixed random function of each example's *input type*, never of
//! its target label. A probe that reaches high accuracy on them is memorizing types, so selectivity = probe
//! accuracy − control accuracy separates what the representation encodes from what the probe can fit.
//!
//! The type of an example at a key position is the token there when that token varies across the probe set
//! (e.g. `a` at position `a`), otherwise the whole input sequence (e.g. `(a, b)` at the constant `=` token),
//! unless the task declares each example's type itself (a data-defined task's control column). A type's label
//! is the target label of an example drawn by a generator seeded with the type, so control labels share the
//! target's label space and, in expectation, its marginal.

use host::examples::{Examples, Labeled};
use host::rng::SplitMix64;

/// Control labels for probing `target` at the key position `key` of `examples`; `declared` is each example's
/// type where the task declares it (else the type comes from the tokens, as above).
pub fn control_labels(
    examples: &Examples,
    key: &Labeled,
    target: &Labeled,
    declared: Option<&[u32]>,
    seed: u64,
) -> Vec<u32> {
    let token_at_key = |i: usize| examples.token(i, key.values[i] as usize);
    let varies = (1..examples.n).any(|i| token_at_key(i) != token_at_key(0));
    let purpose = format!("control-task/{}/{}", key.name, target.name);
    (0..examples.n)
        .map(|i| {
            let token = [token_at_key(i)];
            let input_type: &[u32] = match declared {
                Some(types) => std::slice::from_ref(&types[i]),
                None if varies => &token,
                None => &examples.tokens[i * examples.seq_len..(i + 1) * examples.seq_len],
            };
            let mut rng = SplitMix64::derived(seed, &purpose, type_hash(input_type));
            target.values[rng.below(target.values.len())]
        })
        .collect()
}

/// FNV-1a over the tokens of a type.
fn type_hash(tokens: &[u32]) -> u64 {
    tokens.iter().fold(0xcbf2_9ce4_8422_2325, |h, &t| {
        (h ^ u64::from(t)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use trainer::tasks::{ModularAddition, Split, Task};

    fn labeled<'a>(all: &'a [Labeled], name: &str) -> &'a Labeled {
        all.iter().find(|l| l.name == name).unwrap()
    }

    #[test]
    fn at_a_varying_token_the_control_label_is_a_function_of_that_token_alone() {
        let task = ModularAddition::new(7, 1.0, 0);
        let examples = task.split(Split::Train).unwrap();
        let (keys, targets) = (task.key_positions(&examples), task.probe_targets(&examples));
        let control = control_labels(
            &examples,
            labeled(&keys, "a"),
            labeled(&targets, "sum"),
            None,
            0,
        );
        // Every example with the same `a` gets the same control label, whatever its sum.
        for i in 0..examples.n {
            for j in 0..examples.n {
                if examples.token(i, 0) == examples.token(j, 0) {
                    assert_eq!(control[i], control[j]);
                }
            }
        }
        // …and the 7 types do not all get one label.
        assert!(control.iter().any(|&c| c != control[0]));
    }

    #[test]
    fn at_a_constant_token_the_type_is_the_whole_input_and_labels_are_not_a_map_of_the_target() {
        let task = ModularAddition::new(11, 1.0, 0);
        let examples = task.split(Split::Train).unwrap();
        let (keys, targets) = (task.key_positions(&examples), task.probe_targets(&examples));
        let sum = labeled(&targets, "sum");
        let control = control_labels(&examples, labeled(&keys, "eq"), sum, None, 0);
        // Examples with the same sum get different control labels (a map of label values would give one).
        let same_sum: Vec<u32> = (0..examples.n)
            .filter(|&i| sum.values[i] == 3)
            .map(|i| control[i])
            .collect();
        assert!(same_sum.iter().any(|&c| c != same_sum[0]), "{same_sum:?}");
        // Labels lie in the target's space, and the marginal is roughly the target's (uniform over 11 here:
        // 121 examples, so each label appears ~11 times; none is missing or dominant).
        let mut counts = vec![0; 11];
        for &c in &control {
            counts[c as usize] += 1;
        }
        assert!(counts.iter().all(|&k| (3..=25).contains(&k)), "{counts:?}");
        // Fixed: the same seed gives the same labels, another seed others.
        assert_eq!(
            control,
            control_labels(&examples, labeled(&keys, "eq"), sum, None, 0)
        );
        assert_ne!(
            control,
            control_labels(&examples, labeled(&keys, "eq"), sum, None, 1)
        );
    }

    #[test]
    fn a_declared_type_decides_the_control_label_whatever_the_tokens() {
        let task = ModularAddition::new(7, 1.0, 0);
        let examples = task.split(Split::Train).unwrap();
        let (keys, targets) = (task.key_positions(&examples), task.probe_targets(&examples));
        // Two declared types: the parity of b. Examples of one type share a control label although their
        // tokens at `a` differ.
        let types: Vec<u32> = (0..examples.n).map(|i| examples.token(i, 1) % 2).collect();
        let control = control_labels(
            &examples,
            labeled(&keys, "a"),
            labeled(&targets, "sum"),
            Some(&types),
            0,
        );
        for i in 0..examples.n {
            let same_type = (0..examples.n).find(|&j| types[j] == types[i]).unwrap();
            assert_eq!(control[i], control[same_type]);
        }
    }
}
