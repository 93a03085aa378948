//! How much of a dictionary's decoder directions lies inside a known subspace of the residual stream: the
//! Fourier key-frequency subspace of modular addition (Nanda et al. 2023, "Progress measures for grokking via
//! mechanistic interpretability": the grokked model represents its inputs and output by cos/sin of a few key
//! frequencies). Pure functions over host arrays.

use std::f64::consts::TAU;

/// For each frequency k in `freqs`, the residual directions Σ_x cos(2πkx/p)·M[x] and Σ_x sin(2πkx/p)·M[x] of
/// `class_means` M [p, d] (the mean residual vector of each of the p values x a position encodes).
pub fn fourier_directions(class_means: &[f64], p: usize, freqs: &[usize]) -> Vec<Vec<f64>> {
    let d = class_means.len() / p;
    let mut out = vec![];
    for &k in freqs {
        for trig in [f64::cos, f64::sin] {
            let mut v = vec![0.0; d];
            for (x, row) in class_means.chunks_exact(d).enumerate() {
                let w = trig(TAU * (k * x) as f64 / p as f64);
                v.iter_mut().zip(row).for_each(|(a, m)| *a += w * m);
            }
            out.push(v);
        }
    }
    out
}

/// An orthonormal basis of the span of `vectors` (Gram–Schmidt; a vector whose remainder is below 1e-9 of its
/// norm adds nothing).
pub fn orthonormal_basis(vectors: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut basis: Vec<Vec<f64>> = vec![];
    for v in vectors {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let mut r = v.clone();
        for b in &basis {
            let dot: f64 = r.iter().zip(b).map(|(x, y)| x * y).sum();
            r.iter_mut().zip(b).for_each(|(x, y)| *x -= dot * y);
        }
        let rest = r.iter().map(|x| x * x).sum::<f64>().sqrt();
        if rest > 1e-9 * norm && rest > 0.0 {
            basis.push(r.into_iter().map(|x| x / rest).collect());
        }
    }
    basis
}

/// ‖P u‖² / ‖u‖²: the fraction of `direction`'s squared norm inside the span of the orthonormal `basis` (a
/// random unit vector in d dimensions has dim/d in expectation).
pub fn fraction_inside(direction: &[f32], basis: &[Vec<f64>]) -> f64 {
    let norm2: f64 = direction.iter().map(|x| f64::from(*x).powi(2)).sum();
    if norm2 == 0.0 {
        return 0.0;
    }
    let inside: f64 = basis
        .iter()
        .map(|b| {
            b.iter()
                .zip(direction)
                .map(|(x, y)| x * f64::from(*y))
                .sum::<f64>()
                .powi(2)
        })
        .sum();
    inside / norm2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourier_directions_of_a_pure_frequency() {
        // p = 5, d = 2: M[x] = (cos(2πx/5), 0). Frequency 1: the cos direction is Σ cos² = 5/2 along e0, the
        // sin direction Σ cos·sin = 0.
        let p = 5;
        let means: Vec<f64> = (0..p)
            .flat_map(|x| [(TAU * x as f64 / 5.0).cos(), 0.0])
            .collect();
        let dirs = fourier_directions(&means, p, &[1]);
        assert!((dirs[0][0] - 2.5).abs() < 1e-12 && dirs[0][1].abs() < 1e-12);
        assert!(dirs[1][0].abs() < 1e-12 && dirs[1][1].abs() < 1e-12);
    }

    #[test]
    fn fractions_inside_a_plane() {
        // The span of (2, 0, 0), (1, 1, 0) and (3, 3, 0) is the e0-e1 plane (the third adds nothing).
        let basis = orthonormal_basis(&[
            vec![2.0, 0.0, 0.0],
            vec![1.0, 1.0, 0.0],
            vec![3.0, 3.0, 0.0],
        ]);
        assert_eq!(basis.len(), 2);
        // (1, 1, 1): 2 of its 3 squared units lie in the plane; (0, 0, 5): none; (3, 4, 0): all.
        assert!((fraction_inside(&[1.0, 1.0, 1.0], &basis) - 2.0 / 3.0).abs() < 1e-12);
        assert!(fraction_inside(&[0.0, 0.0, 5.0], &basis).abs() < 1e-12);
        assert!((fraction_inside(&[3.0, 4.0, 0.0], &basis) - 1.0).abs() < 1e-6);
    }
}
