//! LayerNorm's gradient over host slices, in one pass per row (what the flex backend runs for
//! `layer_norm_backward`); the forward is flex's own fused row kernel.
//!
//! Rows are split into fixed chunks of [`ROWS`], each one task; the chunks' partial sums for `dw` and `db` are
//! added in chunk order, so results do not depend on the number of threads.

use super::chunks::par_zeroed_chunks;
use super::isa::{Isa, compiled_for_isa};
#[cfg(target_arch = "x86_64")]
use super::transpose::transpose_8x8;

/// Rows per task.
const ROWS: usize = 64;

/// The gradient of y = x̂ ⊙ w + b with x̂ = (x − mean x) / √(var x + eps) over each row of `x` [rows, d], given
/// the gradient `dy` of y: with g = dy ⊙ w, dx = (g − mean g − x̂ · mean(g ⊙ x̂)) / √(var x + eps),
/// dw = Σ_rows dy ⊙ x̂, db = Σ_rows dy (the variance is the biased one, as TransformerLens's `LayerNorm`).
/// Returns (`dx` [rows, d], `dw` [d], `db` [d]).
pub fn backward(x: &[f32], w: &[f32], dy: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (isa, d) = (Isa::detect(), w.len());
    let chunk = (ROWS * d).max(1);
    let ([dx], partials) = par_zeroed_chunks([x.len()], [chunk], 1, |c, [dx]| {
        let rows = c * chunk..c * chunk + dx.len();
        rows_backward_on(isa, &x[rows.clone()], w, &dy[rows], eps, dx, isa.has_avx())
    });
    let (mut dw, mut db) = (vec![0.0f32; d], vec![0.0f32; d]);
    for (part_w, part_b) in partials {
        add(&mut dw, &part_w);
        add(&mut db, &part_b);
    }
    (dx, dw, db)
}

compiled_for_isa! {
    /// [`rows_backward`] compiled for `isa`.
    fn rows_backward_on(
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        eps: f32,
        dx: &mut [f32],
        avx: bool,
    ) -> (Vec<f32>, Vec<f32>) => rows_backward
}

/// Rows computed side by side in [`rows_backward`], one per SIMD lane.
const LANE_ROWS: usize = 16;

/// [`backward`] on consecutive rows: writes `dx`, returns this chunk's (dw, db).
///
/// A row's statistics are sums along it, each waiting on the one before; so [`LANE_ROWS`] rows are transposed
/// into lanes and summed side by side, each lane doing exactly the operations of one row in order (the sums
/// start from −0.0 like `Iterator::sum`; rows past the last are zeros and are dropped). `dw` and `db` add the
/// rows in order. With `avx` (the CPU has it), whole blocks of rows are transposed in registers.
#[inline(always)]
fn rows_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    eps: f32,
    dx: &mut [f32],
    avx: bool,
) -> (Vec<f32>, Vec<f32>) {
    const L: usize = LANE_ROWS;
    let d = w.len();
    let (mut dw, mut db) = (vec![0.0f32; d], vec![0.0f32; d]);
    // x and g = dy ⊙ w as [d, L]: element j of the block's row l at [j][l].
    let mut x_t = vec![[0.0f32; L]; d];
    let mut g_t = vec![[0.0f32; L]; d];
    for ((x, dy), dx) in x
        .chunks(L * d)
        .zip(dy.chunks(L * d))
        .zip(dx.chunks_mut(L * d))
    {
        let n = x.len() / d;
        // In registers where the CPU and the block's shape allow, else row by row.
        if !(avx && transposed_in_registers([x, dy], w, [&mut x_t, &mut g_t])) {
            transpose_rows([x, dy], w, [&mut x_t, &mut g_t]);
        }
        if n < L {
            for (x_t, g_t) in x_t.iter_mut().zip(&mut g_t) {
                x_t[n..].fill(0.0);
                g_t[n..].fill(0.0);
            }
        }
        let per_row = |sums: [f32; L]| sums.map(|s| s / d as f32);
        let mean = per_row(lane_sum(d, |j| x_t[j]));
        let var = per_row(lane_sum(d, |j| {
            std::array::from_fn(|l| (x_t[j][l] - mean[l]) * (x_t[j][l] - mean[l]))
        }));
        let inv = var.map(|var| 1.0 / (var + eps).sqrt());
        let mean_g = per_row(lane_sum(d, |j| g_t[j]));
        let mean_gx = per_row(lane_sum(d, |j| {
            std::array::from_fn(|l| g_t[j][l] * ((x_t[j][l] - mean[l]) * inv[l]))
        }));
        // Back in rows, each element's x̂ and g recomputed by the same operations (so the same bits), along
        // contiguous rows.
        for (l, ((dx, dy), x)) in dx
            .chunks_exact_mut(d)
            .zip(dy.chunks_exact(d))
            .zip(x.chunks_exact(d))
            .enumerate()
        {
            let (mean, inv, mean_g, mean_gx) = (mean[l], inv[l], mean_g[l], mean_gx[l]);
            for ((((dx, &dy), &x), &w), (dw, db)) in dx
                .iter_mut()
                .zip(dy)
                .zip(x)
                .zip(w)
                .zip(dw.iter_mut().zip(db.iter_mut()))
            {
                let x_hat = (x - mean) * inv;
                *dx = (dy * w - mean_g - x_hat * mean_gx) * inv;
                *dw += dy * x_hat;
                *db += dy;
            }
        }
    }
    (dw, db)
}

/// `x_t[j][l] = x[l · d + j]` and `g_t[j][l] = dy[l · d + j] · w[j]` for the block's rows `l`, row by row
/// (contiguous reads; the compiler makes the stores a scatter where it can).
#[inline(always)]
fn transpose_rows([x, dy]: [&[f32]; 2], w: &[f32], [x_t, g_t]: [&mut [[f32; LANE_ROWS]]; 2]) {
    let d = w.len();
    for (l, (x, dy)) in x.chunks_exact(d).zip(dy.chunks_exact(d)).enumerate() {
        for ((((x_t, g_t), &x), &dy), &w) in
            x_t.iter_mut().zip(g_t.iter_mut()).zip(x).zip(dy).zip(w)
        {
            (x_t[l], g_t[l]) = (x, dy * w);
        }
    }
}

/// [`transpose_rows`] for a whole block of [`LANE_ROWS`] rows whose length is a multiple of 8, by 8 × 8
/// transposes in AVX registers (the same values, and g the same products); false (nothing done) for other
/// shapes or off x86-64. The scatter the compiler makes of [`transpose_rows`] was ~60 % of the kernel's time
/// on an AMD Zen 4. Only called where the CPU has AVX.
#[inline(always)]
fn transposed_in_registers(
    [x, dy]: [&[f32]; 2],
    w: &[f32],
    [x_t, g_t]: [&mut [[f32; LANE_ROWS]]; 2],
) -> bool {
    let d = w.len();
    #[cfg(target_arch = "x86_64")]
    if d.is_multiple_of(8)
        && x.len() == LANE_ROWS * d
        && dy.len() == x.len()
        && x_t.len() == d
        && g_t.len() == d
    {
        for l0 in (0..LANE_ROWS).step_by(8) {
            for j0 in (0..d).step_by(8) {
                // SAFETY: the caller only asks where the CPU has AVX; the shapes were checked above, so
                // every read (rows l0..l0 + 8, columns j0..j0 + 8) and write is in bounds.
                unsafe {
                    transpose_8x8(
                        &x[l0 * d + j0..],
                        d,
                        None,
                        &mut x_t[j0..j0 + 8].as_flattened_mut()[l0..],
                        LANE_ROWS,
                    );
                    transpose_8x8(
                        &dy[l0 * d + j0..],
                        d,
                        Some(&w[j0..j0 + 8]),
                        &mut g_t[j0..j0 + 8].as_flattened_mut()[l0..],
                        LANE_ROWS,
                    );
                }
            }
        }
        return true;
    }
    let _ = (x, dy, w, x_t, g_t, d);
    false
}

/// Σ_{j < d} terms(j) per lane, in order of j from −0.0 (`Iterator::sum`'s order, a lane per row).
#[inline(always)]
fn lane_sum(d: usize, terms: impl Fn(usize) -> [f32; LANE_ROWS]) -> [f32; LANE_ROWS] {
    let mut acc = [-0.0f32; LANE_ROWS];
    for j in 0..d {
        for (acc, term) in acc.iter_mut().zip(terms(j)) {
            *acc += term;
        }
    }
    acc
}

/// y ← y + x.
fn add(y: &mut [f32], x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`rows_backward`] one row at a time, as it was written first: the reference for its bits.
    fn by_row(x: &[f32], w: &[f32], dy: &[f32], eps: f32, dx: &mut [f32]) -> (Vec<f32>, Vec<f32>) {
        let d = w.len();
        let (mut dw, mut db) = (vec![0.0f32; d], vec![0.0f32; d]);
        for ((x, dy), dx) in x
            .chunks_exact(d)
            .zip(dy.chunks_exact(d))
            .zip(dx.chunks_exact_mut(d))
        {
            let mean = x.iter().sum::<f32>() / d as f32;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let inv = 1.0 / (var + eps).sqrt();
            let x_hat: Vec<f32> = x.iter().map(|&v| (v - mean) * inv).collect();
            let g: Vec<f32> = dy.iter().zip(w).map(|(&dy, &w)| dy * w).collect();
            let mean_g = g.iter().sum::<f32>() / d as f32;
            let mean_gx = g.iter().zip(&x_hat).map(|(g, x)| g * x).sum::<f32>() / d as f32;
            for (dx, (&g, &x_hat)) in dx.iter_mut().zip(g.iter().zip(&x_hat)) {
                *dx = (g - mean_g - x_hat * mean_gx) * inv;
            }
            for (j, &dy) in dy.iter().enumerate() {
                dw[j] += dy * x_hat[j];
                db[j] += dy;
            }
        }
        (dw, db)
    }

    /// Every instruction set, with and without the transposes in AVX registers, gives the one-row-at-a-time
    /// bits, for row counts around the lane block and row lengths that are whole blocks of 8 and not, with a
    /// row of −0.0 and a constant row among them.
    #[test]
    fn lanes_give_the_bits_of_one_row_at_a_time() {
        for d in [1, 5, 8, 32, 33, 64] {
            for rows in [1, 15, 16, 17, 40] {
                let mut x: Vec<f32> = (0..rows * d)
                    .map(|i| (i as f32 * 0.37).sin() * 3.0 + 0.5)
                    .collect();
                x[..d].fill(-0.0);
                if rows > 2 {
                    x[2 * d..3 * d].fill(1.25);
                }
                let dy: Vec<f32> = (0..rows * d).map(|i| (i as f32 * 0.11).cos()).collect();
                let w: Vec<f32> = (0..d).map(|j| 1.0 + j as f32 * 0.1).collect();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let mut want_dx = vec![0.0; rows * d];
                let (want_dw, want_db) = by_row(&x, &w, &dy, 1e-5, &mut want_dx);
                let paths = Isa::all_available().into_iter().flat_map(|isa| {
                    [(isa, false), (isa, true)]
                        .into_iter()
                        .filter(move |&(isa, avx)| !avx || isa.has_avx())
                });
                for (isa, avx) in paths {
                    let mut dx = vec![f32::NAN; rows * d];
                    let (dw, db) = rows_backward_on(isa, &x, &w, &dy, 1e-5, &mut dx, avx);
                    let case = format!("{isa:?} (AVX transposes: {avx}), {rows} rows of {d}");
                    assert_eq!(bits(&dx), bits(&want_dx), "dx, {case}");
                    assert_eq!(bits(&dw), bits(&want_dw), "dw, {case}");
                    assert_eq!(bits(&db), bits(&want_db), "db, {case}");
                }
            }
        }
    }
}
