//! Finite-group composition (Chughtai, Chan & Nanda 2023, "A toy model of universality"): tokens `a b =`, answer
//! the product a∘b at `=`, for a group given by its multiplication table. The table is generated from the
//! group's permutation representation (cyclic C_n, dihedral D_n of order 2n, symmetric S_n, alternating A_n),
//! never typed in. The train split is a seeded fraction of all |G|² pairs, the test split the rest; like
//! modular addition (which is C_p), the model memorizes first and generalizes later (grokking).

use super::{
    DataCursor, Examples, FiniteSplits, FourierGrid, Labeled, Split, Task, pair_examples,
    pair_split,
};
use std::collections::HashMap;

/// The largest group the task accepts: its |G|² pairs are the whole dataset.
pub const MAX_ORDER: usize = 1024;

/// A group family and its degree, as written in a config: `C113`, `D10`, `S5`, `A5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum GroupKind {
    /// Rotations of n points: order n (element k = rotation by k, so C_p is modular addition).
    Cyclic(usize),
    /// Symmetries of the regular n-gon: order 2n (rotations 0..n, then reflections).
    Dihedral(usize),
    /// Every permutation of n points: order n! (lexicographic order, identity first).
    Symmetric(usize),
    /// The even permutations of n points: order n!/2.
    Alternating(usize),
}

impl TryFrom<String> for GroupKind {
    type Error = String;
    fn try_from(spec: String) -> Result<Self, String> {
        GroupKind::parse(&spec).ok_or_else(|| {
            format!("group must be C<n> (n >= 2), D<n> (n >= 3), S<n> (n >= 2) or A<n> (n >= 3), got {spec:?}")
        })
    }
}

impl From<GroupKind> for String {
    fn from(kind: GroupKind) -> String {
        kind.to_string()
    }
}

impl std::fmt::Display for GroupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupKind::Cyclic(n) => write!(f, "C{n}"),
            GroupKind::Dihedral(n) => write!(f, "D{n}"),
            GroupKind::Symmetric(n) => write!(f, "S{n}"),
            GroupKind::Alternating(n) => write!(f, "A{n}"),
        }
    }
}

impl GroupKind {
    /// Parses `C<n>`, `D<n>`, `S<n>` or `A<n>`; `None` for anything else.
    pub fn parse(spec: &str) -> Option<GroupKind> {
        let (family, degree) = spec.split_at_checked(1)?;
        let n: usize = degree.parse().ok()?;
        match family {
            "C" if n >= 2 => Some(GroupKind::Cyclic(n)),
            "D" if n >= 3 => Some(GroupKind::Dihedral(n)),
            "S" if n >= 2 => Some(GroupKind::Symmetric(n)),
            "A" if n >= 3 => Some(GroupKind::Alternating(n)),
            _ => None,
        }
    }

    /// Number of elements (saturating, so a huge S_n compares as too large instead of overflowing).
    pub fn order(self) -> usize {
        let factorial = |n: usize| (1..=n).fold(1usize, |f, k| f.saturating_mul(k));
        match self {
            GroupKind::Cyclic(n) => n,
            GroupKind::Dihedral(n) => 2 * n,
            GroupKind::Symmetric(n) => factorial(n),
            GroupKind::Alternating(n) => factorial(n) / 2,
        }
    }
}

/// A finite group as its multiplication table: `table[a * order + b]` = a∘b, where (a∘b)(i) = a(b(i)) on
/// the permutations that represent the elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub kind: GroupKind,
    pub order: usize,
    pub table: Vec<u32>,
}

impl Group {
    pub fn new(kind: GroupKind) -> Group {
        let elements = permutations(kind);
        let index: HashMap<&[usize], u32> = elements
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_slice(), i as u32))
            .collect();
        let table = elements
            .iter()
            .flat_map(|a| {
                elements.iter().map(|b| {
                    let ab: Vec<usize> = b.iter().map(|&i| a[i]).collect();
                    index[ab.as_slice()]
                })
            })
            .collect();
        Group {
            kind,
            order: elements.len(),
            table,
        }
    }

    pub fn compose(&self, a: u32, b: u32) -> u32 {
        self.table[a as usize * self.order + b as usize]
    }
}

/// The permutations (images of 0..n) representing the elements of `kind`, in the element order above.
fn permutations(kind: GroupKind) -> Vec<Vec<usize>> {
    match kind {
        GroupKind::Cyclic(n) => (0..n)
            .map(|k| (0..n).map(|j| (j + k) % n).collect())
            .collect(),
        GroupKind::Dihedral(n) => {
            let rotations = (0..n).map(|k| (0..n).map(|j| (j + k) % n).collect());
            let reflections = (0..n).map(|k| (0..n).map(|j| (k + n - j) % n).collect());
            rotations.chain(reflections).collect()
        }
        GroupKind::Symmetric(n) => lexicographic_permutations(n),
        GroupKind::Alternating(n) => lexicographic_permutations(n)
            .into_iter()
            .filter(|p| inversions(p).is_multiple_of(2))
            .collect(),
    }
}

/// Every permutation of 0..n in lexicographic order (Knuth's Algorithm L).
fn lexicographic_permutations(n: usize) -> Vec<Vec<usize>> {
    let mut current: Vec<usize> = (0..n).collect();
    let mut all = vec![current.clone()];
    loop {
        let Some(j) = (0..n.saturating_sub(1))
            .rev()
            .find(|&j| current[j] < current[j + 1])
        else {
            return all;
        };
        let l = (j + 1..n).rev().find(|&l| current[j] < current[l]);
        current.swap(j, l.expect("current[j + 1] > current[j]"));
        current[j + 1..].reverse();
        all.push(current.clone());
    }
}

fn inversions(p: &[usize]) -> usize {
    (0..p.len())
        .flat_map(|i| (i + 1..p.len()).map(move |j| (i, j)))
        .filter(|&(i, j)| p[i] > p[j])
        .count()
}

pub struct GroupComposition {
    group: Group,
    splits: FiniteSplits,
}

impl GroupComposition {
    pub fn new(kind: GroupKind, train_fraction: f64, seed: u64) -> Self {
        let group = Group::new(kind);
        let (train, test) =
            pair_split(group.order, train_fraction, seed, "group-composition-split");
        let examples =
            |pairs: &[usize]| pair_examples(group.order, pairs, |a, b| group.compose(a, b));
        Self {
            splits: FiniteSplits {
                seed,
                train: examples(&train),
                test: examples(&test),
            },
            group,
        }
    }

    pub fn group(&self) -> &Group {
        &self.group
    }
}

impl Task for GroupComposition {
    fn name(&self) -> &str {
        "group-composition"
    }
    fn d_vocab(&self) -> usize {
        self.group.order + 1 // the elements and `=`
    }
    fn d_vocab_out(&self) -> usize {
        self.group.order
    }
    fn seq_len(&self) -> usize {
        3
    }
    fn answer_positions(&self) -> &[usize] {
        &[2]
    }
    fn split(&self, split: Split) -> Option<Examples> {
        self.splits.split(split)
    }
    fn train_batch(&self, step: u64, batch_size: Option<usize>) -> Examples {
        self.splits.train_batch(step, batch_size)
    }
    fn data_cursor(&self, step: u64, batch_size: Option<usize>) -> DataCursor {
        self.splits.data_cursor(step, batch_size)
    }
    fn fourier_grid(&self) -> Option<FourierGrid> {
        // Only a cyclic group's elements are the residues the Fourier basis of Nanda et al. is built on.
        match self.group.kind {
            GroupKind::Cyclic(p) => Some(FourierGrid::of_pairs(p, &self.splits.train)),
            _ => None,
        }
    }
    fn corrupted_key(&self) -> Option<&str> {
        Some("a")
    }
    fn key_positions(&self, examples: &Examples) -> Vec<Labeled> {
        super::pair_key_positions(examples)
    }
    fn probe_targets(&self, examples: &Examples) -> Vec<Labeled> {
        super::pair_targets(examples, self.group.order, "ab")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_a_group() {
        for kind in [
            GroupKind::Cyclic(7),
            GroupKind::Dihedral(5),
            GroupKind::Symmetric(4),
            GroupKind::Alternating(4),
        ] {
            let g = Group::new(kind);
            assert_eq!(g.order, kind.order(), "{kind:?}");
            let n = g.order as u32;
            // Element 0 is the identity; every row and column is a permutation (Latin square);
            // composition is associative.
            for a in 0..n {
                assert_eq!(g.compose(0, a), a);
                assert_eq!(g.compose(a, 0), a);
                let mut row: Vec<u32> = (0..n).map(|b| g.compose(a, b)).collect();
                row.sort_unstable();
                assert_eq!(row, (0..n).collect::<Vec<_>>());
                for b in 0..n {
                    for c in (0..n).step_by(3) {
                        assert_eq!(g.compose(g.compose(a, b), c), g.compose(a, g.compose(b, c)));
                    }
                }
            }
        }
    }

    #[test]
    fn s5_has_120_elements_and_does_not_commute() {
        let g = Group::new(GroupKind::parse("S5").unwrap());
        assert_eq!(g.order, 120);
        let n = g.order as u32;
        let commuting = (0..n)
            .flat_map(|a| (0..n).map(move |b| (a, b)))
            .filter(|&(a, b)| g.compose(a, b) == g.compose(b, a))
            .count();
        // Σ over a of |centralizer(a)| = |G| · (number of conjugacy classes) = 120 · 7.
        assert_eq!(commuting, 120 * 7);
        assert_eq!(Group::new(GroupKind::Alternating(5)).order, 60);
    }

    #[test]
    fn the_cyclic_group_is_addition_mod_n_and_dihedral_reflections_are_involutions() {
        let c = Group::new(GroupKind::Cyclic(5));
        assert_eq!(c.compose(3, 4), 2);
        let d = Group::new(GroupKind::Dihedral(4));
        for s in 4..8 {
            assert_eq!(d.compose(s, s), 0, "reflection {s} squared");
        }
        assert_ne!(d.compose(1, 4), d.compose(4, 1), "D4 is not abelian");
    }

    #[test]
    fn specs_parse_or_are_refused() {
        assert_eq!(GroupKind::parse("C113"), Some(GroupKind::Cyclic(113)));
        assert_eq!(GroupKind::parse("D10").map(GroupKind::order), Some(20));
        for bad in ["", "S", "X5", "S-1", "D2", "C1", "s5"] {
            assert_eq!(GroupKind::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_split_covers_every_pair_once_with_the_product_as_answer() {
        let task = GroupComposition::new(GroupKind::Symmetric(3), 0.5, 2);
        let (train, test) = (
            task.split(Split::Train).unwrap(),
            task.split(Split::Test).unwrap(),
        );
        assert_eq!(train.n + test.n, 36);
        assert_eq!(train.n, 18);
        for e in [&train, &test] {
            for i in 0..e.n {
                assert_eq!(
                    e.targets[i],
                    task.group().compose(e.token(i, 0), e.token(i, 1))
                );
                assert_eq!(e.token(i, 2), 6);
            }
        }
    }
}
