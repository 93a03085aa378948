//! Linear probes: a ridge classifier on one-hot labels, fitted in closed form with a Cholesky solve (faer), and
//! its k-fold cross-validated accuracy.
//!
//! The classifier is scikit-learn's `RidgeClassifier` with an unpenalized intercept: on the centred design X
//! (rows = examples), W = (XᵀX + λI)⁻¹ XᵀY for the one-hot label matrix Y, intercept = the class frequencies,
//! prediction = argmax of x·W + b. (`RidgeClassifier` regresses on ±1 targets; on centred X that only doubles W,
//! so the predictions are the same.) λ is relative to the features' scale, λ = alpha · tr(XᵀX)/d, because the
//! residual stream grows by orders of magnitude during training and one absolute λ would mean a different
//! probe at every checkpoint.
//!
//! Several label vectors over the same examples (every target and its control task) share one factorization.

use faer::linalg::solvers::Llt;
use faer::prelude::Solve;
use faer::{Mat, MatRef, Side};
use host::rng::SplitMix64;

/// Smallest λ, so that a constant feature matrix (XᵀX = 0) still factorizes; its probe predicts the majority
/// class.
const MIN_LAMBDA: f64 = 1e-9;

/// One label vector to fit: `labels[i]` in `0..n_classes` for every example.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    pub labels: &'a [u32],
    pub n_classes: usize,
}

/// A fitted ridge classifier: scores = x · `weights` + `bias`, prediction = the first argmax.
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeProbe {
    /// [d, n_classes], row-major (the layout of `W_U`).
    pub weights: Vec<f32>,
    /// [n_classes]
    pub bias: Vec<f32>,
}

impl RidgeProbe {
    /// Predicted class of one feature row `x` [d].
    pub fn predict(&self, x: &[f32]) -> u32 {
        let n_classes = self.bias.len();
        let mut scores: Vec<f64> = self.bias.iter().map(|&b| f64::from(b)).collect();
        for (&v, w_row) in x.iter().zip(self.weights.chunks(n_classes)) {
            for (s, &w) in scores.iter_mut().zip(w_row) {
                *s += f64::from(v) * f64::from(w);
            }
        }
        argmax(scores) as u32
    }
}

/// The factorization failed (only possible for non-finite features).
#[derive(Debug, thiserror::Error)]
#[error(
    "ridge probe: the regularized Gram matrix is not positive definite (non-finite activations?)"
)]
pub struct RidgeError;

/// Fits one ridge classifier per label vector on the examples `rows` of `features` [n, d] (row-major).
pub fn fit(
    features: &[f32],
    d: usize,
    rows: &[usize],
    label_sets: &[Labels<'_>],
    alpha: f64,
) -> Result<Vec<RidgeProbe>, RidgeError> {
    let part = Part::new(features, d, rows.to_vec());
    let sums = part.class_sums(features, d, label_sets);
    Factored::new(&[(&part, &sums)], alpha).map(|fit| fit.probes(label_sets))
}

/// Sum of the examples `rows` of `features` [n, d], in f64.
fn sum(features: &[f32], d: usize, rows: &[usize]) -> Vec<f64> {
    let mut sum = vec![0.0f64; d];
    for &i in rows {
        for (s, &v) in sum.iter_mut().zip(&features[i * d..(i + 1) * d]) {
            *s += f64::from(v);
        }
    }
    sum
}

/// `sum` / `count` (0 rows: the zero vector).
fn divided(sum: &[f64], count: usize) -> Vec<f64> {
    let m = count.max(1) as f64;
    sum.iter().map(|s| s / m).collect()
}

/// Mean of the examples `rows` of `features` [n, d].
#[cfg(test)]
fn mean(features: &[f32], d: usize, rows: &[usize]) -> Vec<f64> {
    divided(&sum(features, d, rows), rows.len())
}

/// Some of the examples (all of them, or one cross-validation fold): their sum, mean and centred Gram matrix
/// Σ (x − μ)(x − μ)ᵀ.
struct Part {
    rows: Vec<usize>,
    sum: Vec<f64>,
    mean: Vec<f64>,
    gram: Mat<f64>,
}

impl Part {
    fn new(features: &[f32], d: usize, rows: Vec<usize>) -> Self {
        let sum = sum(features, d, &rows);
        let mean = divided(&sum, rows.len());
        let centred = Mat::<f64>::from_fn(rows.len(), d, |r, j| {
            f64::from(features[rows[r] * d + j]) - mean[j]
        });
        let gram = centred.transpose() * &centred;
        Self {
            rows,
            sum,
            mean,
            gram,
        }
    }
}

/// The centred Gram matrix of the union of `parts` about its mean `mean`, from the parts' own:
/// Σ_p [G_p + n_p (μ_p − μ)(μ_p − μ)ᵀ] (the parallel-axis theorem; the pairwise update of the scatter matrix
/// in Chan, Golub & LeVeque, "Updating formulae and a pairwise algorithm for computing sample variances",
/// 1979). No large uncentred sums cancel, and k-fold cross-validation forms each example's outer product once
/// instead of once per fold that trains on it.
fn union_gram<'p>(parts: impl Iterator<Item = &'p Part>, mean: &[f64]) -> Mat<f64> {
    let d = mean.len();
    let mut gram = Mat::<f64>::zeros(d, d);
    for part in parts {
        let n = part.rows.len() as f64;
        let shift: Vec<f64> = part.mean.iter().zip(mean).map(|(a, b)| a - b).collect();
        for j in 0..d {
            let scaled = n * shift[j];
            let into = gram.col_as_slice_mut(j);
            for ((g, &p), &s) in into.iter_mut().zip(part.gram.col_as_slice(j)).zip(&shift) {
                *g += p + scaled * s;
            }
        }
    }
    gram
}

/// One part's rows summed by class, centred about the part's own mean: for each label set and class c,
/// Σ (x − μ_p) over the part's rows of class c, and how many rows that is.
struct ClassSums {
    /// [Σ classes, d]: row `offset + c` for class c of the label set at `offset`.
    sums: Vec<f64>,
    /// [Σ classes]
    counts: Vec<usize>,
}

impl Part {
    /// The part's [`ClassSums`] for `label_sets`: one pass over its rows.
    fn class_sums(&self, features: &[f32], d: usize, label_sets: &[Labels<'_>]) -> ClassSums {
        let total: usize = label_sets.iter().map(|l| l.n_classes).sum();
        let mut sums = vec![0.0f64; total * d];
        let mut counts = vec![0usize; total];
        let mut centred = vec![0.0f64; d];
        for &i in &self.rows {
            for ((c, &x), mu) in centred
                .iter_mut()
                .zip(&features[i * d..][..d])
                .zip(&self.mean)
            {
                *c = f64::from(x) - mu;
            }
            let mut offset = 0;
            for set in label_sets {
                let class = offset + set.labels[i] as usize;
                for (sum, c) in sums[class * d..][..d].iter_mut().zip(&centred) {
                    *sum += c;
                }
                counts[class] += 1;
                offset += set.n_classes;
            }
        }
        ClassSums { sums, counts }
    }
}

/// XᵀY for the centred union of `parts` about its mean `mean` and one-hot Y, from the parts' [`ClassSums`]:
/// column c is Σ_p [S_{p,c} + n_{p,c} (μ_p − μ)], the parallel-axis shift of [`union_gram`] applied to a sum.
/// Returns it [d, Σ classes] column-major, and each class's share of the union's rows.
fn union_rhs(parts: &[(&Part, &ClassSums)], mean: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let d = mean.len();
    let total = parts.first().map_or(0, |(_, sums)| sums.counts.len());
    let mut rhs = vec![0.0f64; d * total];
    let mut counts = vec![0usize; total];
    for (part, sums) in parts {
        let shift: Vec<f64> = part.mean.iter().zip(mean).map(|(a, b)| a - b).collect();
        for (class, count) in sums.counts.iter().enumerate() {
            let n = *count as f64;
            let column = rhs[class * d..][..d].iter_mut();
            for ((r, &s), &shift) in column.zip(&sums.sums[class * d..][..d]).zip(&shift) {
                *r += s + n * shift;
            }
            counts[class] += count;
        }
    }
    let m = parts
        .iter()
        .map(|(p, _)| p.rows.len())
        .sum::<usize>()
        .max(1) as f64;
    let frequency = counts.iter().map(|&c| c as f64 / m).collect();
    (rhs, frequency)
}

/// The normal equations of one fit, factorized: the Cholesky factor of XᵀX + λI for the centred design X, the
/// right-hand sides XᵀY of every label set side by side, the rows' mean and each class's frequency.
struct Factored {
    llt: Llt<f64>,
    mean: Vec<f64>,
    /// [d, Σ classes], column-major: column `offset + c` is the sum of the centred rows of class c.
    rhs: Vec<f64>,
    /// [Σ classes]: the intercepts before centring is folded in.
    frequency: Vec<f64>,
}

impl Factored {
    /// The fit on the union of `parts` (each with its [`ClassSums`] for the label sets to fit).
    fn new(parts: &[(&Part, &ClassSums)], alpha: f64) -> Result<Self, RidgeError> {
        let d = parts.first().map_or(0, |(p, _)| p.mean.len());
        let n: usize = parts.iter().map(|(p, _)| p.rows.len()).sum();
        let mut total = vec![0.0f64; d];
        for (part, _) in parts {
            for (t, s) in total.iter_mut().zip(&part.sum) {
                *t += s;
            }
        }
        let mean = divided(&total, n);
        let mut gram = union_gram(parts.iter().map(|(p, _)| *p), &mean);
        let trace: f64 = (0..d).map(|j| gram[(j, j)]).sum();
        let lambda = (alpha * trace / d as f64).max(MIN_LAMBDA);
        for j in 0..d {
            gram[(j, j)] += lambda;
        }
        let llt = gram.llt(Side::Lower).map_err(|_| RidgeError)?;
        let (rhs, frequency) = union_rhs(parts, &mean);
        Ok(Self {
            llt,
            mean,
            rhs,
            frequency,
        })
    }

    /// Drops the right-hand sides past the first `classes` columns (label sets whose probes are not needed).
    fn keep_classes(&mut self, classes: usize) {
        self.rhs.truncate(self.mean.len() * classes);
        self.frequency.truncate(classes);
    }

    fn rhs(&self) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.rhs, self.mean.len(), self.frequency.len())
    }

    /// The fitted probes, one per label set.
    fn probes(&self, label_sets: &[Labels<'_>]) -> Vec<RidgeProbe> {
        let d = self.mean.len();
        let solved = self.llt.solve(self.rhs());
        let mut probes = Vec::with_capacity(label_sets.len());
        let mut offset = 0;
        for set in label_sets {
            let k = set.n_classes;
            let weights: Vec<f32> = (0..d)
                .flat_map(|j| (0..k).map(move |c| (j, c)))
                .map(|(j, c)| solved[(j, offset + c)] as f32)
                .collect();
            // Fold the centring into the intercept: (x − μ)·W + ȳ = x·W + (ȳ − μ·W).
            let bias = (0..k)
                .map(|c| {
                    let shift: f64 = (0..d).map(|j| self.mean[j] * solved[(j, offset + c)]).sum();
                    (self.frequency[offset + c] - shift) as f32
                })
                .collect();
            probes.push(RidgeProbe { weights, bias });
            offset += k;
        }
        probes
    }

    /// The scores (x − μ)·W + ȳ of every label set's probe on the examples `rows`, [Σ classes, rows] (column r:
    /// example r's scores, contiguous), computed as (XᵀY)ᵀ (XᵀX + λI)⁻¹ (x − μ)ᵀ: the solve runs on the held-out
    /// rows, not on every class's column, which is the cheaper side whenever a fold holds out fewer examples
    /// than there are classes in all label sets.
    fn scores(&self, features: &[f32], rows: &[usize]) -> Mat<f64> {
        let d = self.mean.len();
        let held_out = Mat::<f64>::from_fn(d, rows.len(), |j, r| {
            f64::from(features[rows[r] * d + j]) - self.mean[j]
        });
        let solved = self.llt.solve(&held_out);
        let mut scores = self.rhs().transpose() * solved;
        for r in 0..rows.len() {
            for (s, f) in scores.col_as_slice_mut(r).iter_mut().zip(&self.frequency) {
                *s += f;
            }
        }
        scores
    }
}

/// The fold (in `0..k`) of each of `n` examples: a seeded permutation dealt round-robin, so folds differ in
/// size by at most one and depend only on `n`, `k` and `seed`.
pub fn folds(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::derived(seed, "probe-folds", 0).shuffle(&mut order);
    let mut fold = vec![0; n];
    for (rank, &i) in order.iter().enumerate() {
        fold[i] = rank % k;
    }
    fold
}

/// Held-out accuracy of each label vector under k-fold cross-validation: each fold is predicted by the probe
/// fitted on the other folds; the accuracy pools every example's held-out prediction.
pub fn cross_validated_accuracy(
    features: &[f32],
    d: usize,
    label_sets: &[Labels<'_>],
    fold_of: &[usize],
    alpha: f64,
) -> Result<Vec<f64>, RidgeError> {
    Folds::new(features, d, fold_of).cross_validated_accuracy(label_sets, alpha)
}

/// One probe problem split into cross-validation folds, each fold's Gram matrix formed once: the held-out
/// accuracies and the probe on every example then cost one pass over the examples' outer products, not k + 1.
pub struct Folds<'a> {
    features: &'a [f32],
    d: usize,
    parts: Vec<Part>,
}

impl<'a> Folds<'a> {
    /// `features` [n, d] (row-major), `fold_of` [n] as [`folds`] deals them.
    pub fn new(features: &'a [f32], d: usize, fold_of: &[usize]) -> Self {
        let k = fold_of.iter().max().map_or(0, |&f| f + 1);
        let parts = (0..k)
            .map(|fold| {
                let rows = (0..fold_of.len()).filter(|&i| fold_of[i] == fold).collect();
                Part::new(features, d, rows)
            })
            .collect();
        Self { features, d, parts }
    }

    /// Every fold's [`ClassSums`] for `label_sets`.
    fn class_sums(&self, label_sets: &[Labels<'_>]) -> Vec<ClassSums> {
        self.parts
            .iter()
            .map(|part| part.class_sums(self.features, self.d, label_sets))
            .collect()
    }

    /// The fit on the examples of every fold but `held_out` (every fold: `None`), given the folds' `sums`.
    fn factored(
        &self,
        held_out: Option<usize>,
        sums: &[ClassSums],
        alpha: f64,
    ) -> Result<Factored, RidgeError> {
        let parts: Vec<(&Part, &ClassSums)> = self
            .parts
            .iter()
            .zip(sums)
            .enumerate()
            .filter(|&(f, _)| Some(f) != held_out)
            .map(|(_, part)| part)
            .collect();
        Factored::new(&parts, alpha)
    }

    /// Every label set's held-out accuracy (as [`cross_validated_accuracy`]) and the probes of the first
    /// `fitted` label sets fitted on every example: the folds' class sums taken once for both.
    pub fn cross_validate_and_fit(
        &self,
        label_sets: &[Labels<'_>],
        fitted: usize,
        alpha: f64,
    ) -> Result<(Vec<f64>, Vec<RidgeProbe>), RidgeError> {
        let sums = self.class_sums(label_sets);
        let accuracy = self.held_out_accuracy(label_sets, &sums, alpha)?;
        let mut all = self.factored(None, &sums, alpha)?;
        all.keep_classes(label_sets[..fitted].iter().map(|l| l.n_classes).sum());
        Ok((accuracy, all.probes(&label_sets[..fitted])))
    }

    /// See [`cross_validated_accuracy`].
    pub fn cross_validated_accuracy(
        &self,
        label_sets: &[Labels<'_>],
        alpha: f64,
    ) -> Result<Vec<f64>, RidgeError> {
        self.held_out_accuracy(label_sets, &self.class_sums(label_sets), alpha)
    }

    /// [`cross_validated_accuracy`], given the folds' class sums for `label_sets`.
    fn held_out_accuracy(
        &self,
        label_sets: &[Labels<'_>],
        sums: &[ClassSums],
        alpha: f64,
    ) -> Result<Vec<f64>, RidgeError> {
        let n: usize = self.parts.iter().map(|p| p.rows.len()).sum();
        let mut correct = vec![0usize; label_sets.len()];
        for (fold, part) in self.parts.iter().enumerate() {
            let test = &part.rows;
            let scores = self
                .factored(Some(fold), sums, alpha)?
                .scores(self.features, test);
            for (r, &i) in test.iter().enumerate() {
                let mut rest = scores.col_as_slice(r);
                for (set, hits) in label_sets.iter().zip(&mut correct) {
                    let (own, next) = rest.split_at(set.n_classes);
                    *hits += usize::from(argmax(own.iter().copied()) as u32 == set.labels[i]);
                    rest = next;
                }
            }
        }
        Ok(correct
            .into_iter()
            .map(|hits| hits as f64 / n.max(1) as f64)
            .collect())
    }
}

/// Index of the first largest value.
fn argmax(values: impl IntoIterator<Item = f64>) -> usize {
    let (mut best, mut top) = (0, f64::NEG_INFINITY);
    for (i, v) in values.into_iter().enumerate() {
        if i == 0 || v > top {
            (best, top) = (i, v);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed);
        (0..n * d).map(|_| rng.normal() as f32).collect()
    }

    #[test]
    fn hand_sized_problem_gives_the_closed_form_weights() {
        // One feature, x = [-1, 1], labels [0, 1], alpha chosen so λ = 1: centred x is itself, XᵀX = 2,
        // tr/d = 2 → alpha 0.5. W = (2 + 1)⁻¹ · Xᵀ·onehot = [[-1, 1]] / 3; bias = frequencies = [0.5, 0.5].
        let x = [-1.0f32, 1.0];
        let labels = [0u32, 1];
        let probe = &fit(
            &x,
            1,
            &[0, 1],
            &[Labels {
                labels: &labels,
                n_classes: 2,
            }],
            0.5,
        )
        .unwrap()[0];
        for (got, want) in probe.weights.iter().zip([-1.0 / 3.0, 1.0 / 3.0]) {
            assert!((got - want).abs() < 1e-6, "{:?}", probe.weights);
        }
        assert_eq!(probe.bias, vec![0.5, 0.5]);
        assert_eq!((probe.predict(&[-1.0]), probe.predict(&[1.0])), (0, 1));
    }

    #[test]
    fn linearly_separable_classes_are_probed_perfectly() {
        // Four classes, each a well-separated cluster around its own axis in 8 dimensions.
        let (n, d) = (200, 8);
        let noise = gaussian(n, d, 1);
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 4).collect();
        let features: Vec<f32> = (0..n * d)
            .map(|idx| {
                let (i, j) = (idx / d, idx % d);
                0.1 * noise[idx] + if j == labels[i] as usize { 5.0 } else { 0.0 }
            })
            .collect();
        let set = Labels {
            labels: &labels,
            n_classes: 4,
        };
        let accuracy =
            cross_validated_accuracy(&features, d, &[set], &folds(n, 5, 0), 1e-3).unwrap();
        assert_eq!(accuracy, vec![1.0]);
    }

    /// The Gram matrix assembled from the folds' equals the one formed from all the rows directly, also when
    /// the features sit far from the origin (a residual stream's mean can dwarf its spread).
    #[test]
    fn the_gram_matrix_from_the_folds_is_the_direct_one() {
        let (n, d) = (203, 5);
        let noise = gaussian(n, d, 9);
        let features: Vec<f32> = noise
            .iter()
            .enumerate()
            .map(|(idx, &v)| v + 1000.0 * (idx % d) as f32)
            .collect();
        let folds = Folds::new(&features, d, &folds(n, 5, 3));
        let every: Vec<&Part> = folds.parts.iter().collect();
        let all: Vec<usize> = (0..n).collect();
        let direct = Part::new(&features, d, all.clone());
        let assembled = union_gram(every.iter().copied(), &mean(&features, d, &all));
        for i in 0..d {
            for j in 0..d {
                let (a, b) = (assembled[(i, j)], direct.gram[(i, j)]);
                assert!(
                    (a - b).abs() <= 1e-9 * direct.gram[(i, i)].max(direct.gram[(j, j)]),
                    "({i}, {j}): {a} vs {b}"
                );
            }
        }
        // Held out: the same for the examples of every fold but one.
        let train: Vec<usize> = (0..n)
            .filter(|&i| !folds.parts[2].rows.contains(&i))
            .collect();
        let rest: Vec<&Part> = every
            .iter()
            .enumerate()
            .filter(|&(f, _)| f != 2)
            .map(|(_, p)| *p)
            .collect();
        let direct = Part::new(&features, d, train.clone());
        let assembled = union_gram(rest.iter().copied(), &mean(&features, d, &train));
        for i in 0..d {
            let (a, b) = (assembled[(i, i)], direct.gram[(i, i)]);
            assert!((a - b).abs() <= 1e-9 * b, "({i}, {i}): {a} vs {b}");
        }
    }

    #[test]
    fn the_class_sums_from_the_folds_are_the_direct_ones() {
        // Features far from 0 (a large mean the centring must not lose), two label vectors; the union of every
        // fold but one against the centred sums taken directly over its rows.
        let (n, d) = (203, 4);
        let features: Vec<f32> = gaussian(n, d, 5)
            .iter()
            .enumerate()
            .map(|(idx, &v)| v + 500.0 * (idx % d) as f32)
            .collect();
        let three: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
        let two: Vec<u32> = (0..n as u32).map(|i| (i / 7) % 2).collect();
        let sets = [
            Labels {
                labels: &three,
                n_classes: 3,
            },
            Labels {
                labels: &two,
                n_classes: 2,
            },
        ];
        let folds = Folds::new(&features, d, &folds(n, 5, 3));
        let sums = folds.class_sums(&sets);
        let rest: Vec<(&Part, &ClassSums)> = folds
            .parts
            .iter()
            .zip(&sums)
            .enumerate()
            .filter(|&(f, _)| f != 1)
            .map(|(_, part)| part)
            .collect();
        let train: Vec<usize> = (0..n)
            .filter(|&i| !folds.parts[1].rows.contains(&i))
            .collect();
        let mu = mean(&features, d, &train);
        let (rhs, frequency) = union_rhs(&rest, &mu);
        let mut offset = 0;
        for set in &sets {
            for c in 0..set.n_classes {
                let rows: Vec<usize> = train
                    .iter()
                    .copied()
                    .filter(|&i| set.labels[i] == c as u32)
                    .collect();
                for j in 0..d {
                    let direct: f64 = rows
                        .iter()
                        .map(|&i| f64::from(features[i * d + j]) - mu[j])
                        .sum();
                    let assembled = rhs[(offset + c) * d + j];
                    assert!((assembled - direct).abs() < 1e-9, "{assembled} vs {direct}");
                }
                assert_eq!(
                    frequency[offset + c],
                    rows.len() as f64 / train.len() as f64
                );
            }
            offset += set.n_classes;
        }
    }

    #[test]
    fn cross_validated_accuracy_is_each_held_out_example_predicted_one_at_a_time() {
        // Noisy classes (accuracy well inside (0, 1)), two label vectors of different widths: the batched
        // scores must give the predictions `RidgeProbe::predict` gives example by example.
        let (n, d) = (300, 6);
        let noise = gaussian(n, d, 5);
        let a: Vec<u32> = (0..n as u32).map(|i| (i * 5) % 7).collect();
        let b: Vec<u32> = (0..n as u32).map(|i| (i / 3) % 2).collect();
        let features: Vec<f32> = (0..n * d)
            .map(|idx| {
                let (i, j) = (idx / d, idx % d);
                noise[idx] + if j == a[i] as usize % d { 0.8 } else { 0.0 }
            })
            .collect();
        let sets = [
            Labels {
                labels: &a,
                n_classes: 7,
            },
            Labels {
                labels: &b,
                n_classes: 2,
            },
        ];
        let fold_of = folds(n, 4, 1);
        let batched = cross_validated_accuracy(&features, d, &sets, &fold_of, 0.05).unwrap();
        let mut hits = [0usize; 2];
        for fold in 0..4 {
            let train: Vec<usize> = (0..n).filter(|&i| fold_of[i] != fold).collect();
            let probes = fit(&features, d, &train, &sets, 0.05).unwrap();
            for i in (0..n).filter(|&i| fold_of[i] == fold) {
                for (s, (probe, set)) in probes.iter().zip(&sets).enumerate() {
                    hits[s] +=
                        usize::from(probe.predict(&features[i * d..(i + 1) * d]) == set.labels[i]);
                }
            }
        }
        let one_at_a_time = hits.map(|h| h as f64 / n as f64);
        assert_eq!(batched, one_at_a_time.to_vec());
        assert!(batched[0] > 0.3 && batched[0] < 0.95, "{batched:?}");
    }

    #[test]
    fn random_labels_are_probed_at_chance() {
        // Labels independent of the features: held-out accuracy near 1/4 (binomial sd at n 2000 is ~0.01).
        let (n, d) = (2000, 16);
        let features = gaussian(n, d, 2);
        let mut rng = SplitMix64::new(3);
        let labels: Vec<u32> = (0..n).map(|_| rng.below(4) as u32).collect();
        let set = Labels {
            labels: &labels,
            n_classes: 4,
        };
        let accuracy =
            cross_validated_accuracy(&features, d, &[set], &folds(n, 5, 0), 1e-2).unwrap()[0];
        assert!((accuracy - 0.25).abs() < 0.04, "{accuracy}");
    }

    #[test]
    fn constant_features_predict_the_majority_class() {
        let features = vec![3.0f32; 10 * 2];
        let labels = [1u32, 1, 1, 1, 1, 1, 1, 0, 0, 2];
        let set = Labels {
            labels: &labels,
            n_classes: 3,
        };
        let probe = &fit(&features, 2, &(0..10).collect::<Vec<_>>(), &[set], 1e-2).unwrap()[0];
        assert_eq!(probe.predict(&[3.0, 3.0]), 1);
    }

    #[test]
    fn folds_are_deterministic_balanced_and_seeded() {
        let a = folds(103, 5, 7);
        assert_eq!(a, folds(103, 5, 7));
        assert_ne!(a, folds(103, 5, 8));
        let mut sizes = [0; 5];
        for &f in &a {
            sizes[f] += 1;
        }
        // 103 = 5·20 + 3: three folds of 21, two of 20.
        sizes.sort();
        assert_eq!(sizes, [20, 20, 21, 21, 21]);
    }

    #[test]
    fn several_label_vectors_share_one_fit_and_match_separate_fits() {
        let (n, d) = (60, 5);
        let features = gaussian(n, d, 4);
        let a: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
        let b: Vec<u32> = (0..n as u32).map(|i| (i / 7) % 2).collect();
        let rows: Vec<usize> = (0..n).collect();
        let sets = [
            Labels {
                labels: &a,
                n_classes: 3,
            },
            Labels {
                labels: &b,
                n_classes: 2,
            },
        ];
        let together = fit(&features, d, &rows, &sets, 0.1).unwrap();
        let alone = fit(&features, d, &rows, &sets[1..], 0.1).unwrap();
        let close = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-5);
        assert!(close(&together[1].weights, &alone[0].weights));
        assert!(close(&together[1].bias, &alone[0].bias));
    }

    #[test]
    fn one_pass_gives_the_held_out_accuracies_and_the_probes_of_the_first_label_sets() {
        let (n, d) = (90, 4);
        let features = gaussian(n, d, 6);
        let a: Vec<u32> = (0..n).map(|i| u32::from(features[i * d] > 0.0)).collect();
        let b: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
        let sets = [
            Labels {
                labels: &a,
                n_classes: 2,
            },
            Labels {
                labels: &b,
                n_classes: 3,
            },
        ];
        let folds = Folds::new(&features, d, &folds(n, 5, 1));
        let (accuracy, probes) = folds.cross_validate_and_fit(&sets, 1, 0.1).unwrap();
        assert_eq!(
            accuracy,
            folds.cross_validated_accuracy(&sets, 0.1).unwrap()
        );
        // Only the first label set's probe, the one fitted on all rows directly (the folds' sums agree with
        // the direct ones to rounding).
        let rows: Vec<usize> = (0..n).collect();
        let direct = fit(&features, d, &rows, &sets[..1], 0.1).unwrap();
        assert_eq!(probes.len(), 1);
        let close = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-5);
        assert!(close(&probes[0].weights, &direct[0].weights));
        assert!(close(&probes[0].bias, &direct[0].bias));
    }
}
