//! LayerNorm's gradient over host slices, in one pass per row (what the flex backend runs for
//! `layer_norm_backward`); the forward is flex's own fused row kernel.
//!
//! Rows are split into fixed chunks of [`ROWS`], each one task; the chunks' partial sums for `dw` and `db` are
//! added in chunk order, so results do not depend on the number of threads.

use rayon::prelude::*;

/// Rows per task.
const ROWS: usize = 64;

/// The gradient of y = x̂ ⊙ w + b with x̂ = (x − mean x) / √(var x + eps) over each row of `x` [rows, d], given
/// the gradient `dy` of y: with g = dy ⊙ w, dx = (g − mean g − x̂ · mean(g ⊙ x̂)) / √(var x + eps),
/// dw = Σ_rows dy ⊙ x̂, db = Σ_rows dy (the variance is the biased one, as TransformerLens's `LayerNorm`).
/// Returns (`dx` [rows, d], `dw` [d], `db` [d]).
pub fn backward(x: &[f32], w: &[f32], dy: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = w.len();
    let mut dx = vec![0.0f32; x.len()];
    let chunk = (ROWS * d).max(1);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .zip(dy.par_chunks(chunk))
        .map(|((dx, x), dy)| rows_backward(x, w, dy, eps, dx))
        .collect();
    let (mut dw, mut db) = (vec![0.0f32; d], vec![0.0f32; d]);
    for (part_w, part_b) in partials {
        add(&mut dw, &part_w);
        add(&mut db, &part_b);
    }
    (dx, dw, db)
}

/// [`backward`] on consecutive rows: writes `dx`, returns this chunk's (dw, db).
fn rows_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    eps: f32,
    dx: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let (mut dw, mut db) = (vec![0.0f32; d], vec![0.0f32; d]);
    let mut x_hat = vec![0.0f32; d];
    let mut g = vec![0.0f32; d];
    for ((x, dy), dx) in x
        .chunks_exact(d)
        .zip(dy.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
    {
        let mean = x.iter().sum::<f32>() / d as f32;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (x_hat, &v) in x_hat.iter_mut().zip(x) {
            *x_hat = (v - mean) * inv;
        }
        for (g, (&dy, &w)) in g.iter_mut().zip(dy.iter().zip(w)) {
            *g = dy * w;
        }
        let mean_g = g.iter().sum::<f32>() / d as f32;
        let mean_gx = g.iter().zip(&x_hat).map(|(g, x)| g * x).sum::<f32>() / d as f32;
        for (dx, (&g, &x_hat)) in dx.iter_mut().zip(g.iter().zip(&x_hat)) {
            *dx = (g - mean_g - x_hat * mean_gx) * inv;
        }
        for ((dw, db), (&dy, &x_hat)) in dw.iter_mut().zip(db.iter_mut()).zip(dy.iter().zip(&x_hat))
        {
            *dw += dy * x_hat;
            *db += dy;
        }
    }
    (dw, db)
}

/// y ← y + x.
fn add(y: &mut [f32], x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += x;
    }
}
