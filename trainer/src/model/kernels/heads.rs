//! Multi-head attention over host slices, whole batch rows per task: scores, causal softmax and the weighted sum
//! of values in one pass, and its gradient in another (what the flex backend runs for `attention_heads`).
//!
//! Queries, keys, values and `z` use the layout the projections produce, `[batch, pos, head, d_head]`, so no
//! axis is swapped before or after; the pattern is `[batch, head, q, k]` (`hook_pattern`). The inner loops run
//! along contiguous rows, which the compiler vectorizes, with the sums of the products held in registers; each batch
//! row is computed within one task in a fixed order, so results do not depend on the number of threads.

use rayon::prelude::*;

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadDims {
    pub batch: usize,
    pub heads: usize,
    pub n_q: usize,
    pub n_k: usize,
    pub d_head: usize,
}

impl HeadDims {
    fn q_row(&self) -> usize {
        self.n_q * self.heads * self.d_head
    }
    fn k_row(&self) -> usize {
        self.n_k * self.heads * self.d_head
    }
    fn pattern_row(&self) -> usize {
        self.heads * self.n_q * self.n_k
    }
    /// Batch rows per task: enough that a task's multiply-adds (about 2¹⁶) outweigh handing it to a thread
    /// (the training forward's last block has one query per row on the modular-addition tasks).
    fn rows_per_task(&self) -> usize {
        (1usize << 16).div_ceil((self.pattern_row() * self.d_head).max(1))
    }
    /// Offset of position `pos`, head `h` in one batch row of a `[pos, head, d_head]` tensor.
    fn at(&self, pos: usize, h: usize) -> usize {
        (pos * self.heads + h) * self.d_head
    }
}

/// Attention of `q` [batch, n_q, head, d_head] over `k`, `v` [batch, n_k, head, d_head], with `hidden` [n_q, n_k]
/// true where a key is masked: pattern = softmax(q·kᵀ · scale) over the visible keys (masked keys get exactly 0;
/// a row with no visible key is all 0), z = pattern · v. Returns (`pattern` [batch, head, n_q, n_k],
/// `z` [batch, n_q, head, d_head]).
pub fn forward(
    dims: HeadDims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    hidden: &[bool],
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let mut pattern = vec![0.0f32; dims.batch * dims.pattern_row()];
    let mut z = vec![0.0f32; dims.batch * dims.q_row()];
    pattern
        .par_chunks_mut(dims.pattern_row().max(1))
        .zip(z.par_chunks_mut(dims.q_row().max(1)))
        .enumerate()
        .with_min_len(dims.rows_per_task())
        .for_each(|(b, (pattern, z))| {
            let (q, k, v) = (
                &q[b * dims.q_row()..][..dims.q_row()],
                &k[b * dims.k_row()..][..dims.k_row()],
                &v[b * dims.k_row()..][..dims.k_row()],
            );
            forward_row(dims, [q, k, v], hidden, scale, [pattern, z]);
        });
    (pattern, z)
}

/// The gradient of [`forward`]'s `z` with respect to `q`, `k` and `v`, given its `pattern` and the gradient
/// `dz` of `z` (all in [`forward`]'s layouts). With s = q·kᵀ · scale and p = softmax(s):
/// dv = pᵀ·dz, dp = dz·vᵀ, ds = p ⊙ (dp − Σ_k p ⊙ dp), dq = ds·k · scale, dk = dsᵀ·q · scale.
/// Masked keys have p = 0, so they get no gradient. Returns (`dq`, `dk`, `dv`).
pub fn backward(
    dims: HeadDims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pattern: &[f32],
    dz: &[f32],
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dq = vec![0.0f32; dims.batch * dims.q_row()];
    let mut dk = vec![0.0f32; dims.batch * dims.k_row()];
    let mut dv = vec![0.0f32; dims.batch * dims.k_row()];
    dq.par_chunks_mut(dims.q_row().max(1))
        .zip(dk.par_chunks_mut(dims.k_row().max(1)))
        .zip(dv.par_chunks_mut(dims.k_row().max(1)))
        .enumerate()
        .with_min_len(dims.rows_per_task())
        .for_each(|(b, ((dq, dk), dv))| {
            let (q, k, v, dz) = (
                &q[b * dims.q_row()..][..dims.q_row()],
                &k[b * dims.k_row()..][..dims.k_row()],
                &v[b * dims.k_row()..][..dims.k_row()],
                &dz[b * dims.q_row()..][..dims.q_row()],
            );
            let pattern = &pattern[b * dims.pattern_row()..][..dims.pattern_row()];
            backward_row(dims, [q, k, v, pattern, dz], scale, [dq, dk, dv]);
        });
    (dq, dk, dv)
}

/// [`forward`] on one batch row: `inputs` are `q` [n_q, head, d_head], `k`, `v` [n_k, head, d_head] and
/// `outputs` `pattern` [head, n_q, n_k], `z` [n_q, head, d_head].
fn forward_row(
    dims: HeadDims,
    inputs: [&[f32]; 3],
    hidden: &[bool],
    scale: f32,
    outputs: [&mut [f32]; 2],
) {
    let [q, k, v] = inputs;
    let [pattern, z] = outputs;
    let HeadDims {
        n_q, n_k, d_head, ..
    } = dims;
    let stride = dims.heads * d_head;
    // kᵀ of one head, [d_head, n_k], and one scaled query.
    let mut k_t = vec![0.0f32; d_head * n_k];
    let mut q_i = vec![0.0f32; d_head];
    for h in 0..dims.heads {
        transpose_head(dims, k, h, &mut k_t);
        for i in 0..n_q {
            let hidden = &hidden[i * n_k..][..n_k];
            let end = visible_end(hidden.iter().map(|&h| !h), n_k);
            for (scaled, &q_id) in q_i.iter_mut().zip(&q[dims.at(i, h)..][..d_head]) {
                *scaled = q_id * scale;
            }
            let row = &mut pattern[(h * n_q + i) * n_k..][..end];
            vec_mat(&q_i, &k_t, n_k, row);
            softmax_visible(row, &hidden[..end]);
            vec_mat(
                row,
                &v[dims.at(0, h)..],
                stride,
                &mut z[dims.at(i, h)..][..d_head],
            );
        }
    }
}

/// [`backward`] on one batch row: `inputs` are `q`, `k`, `v`, `pattern`, `dz` and `grads` `dq`, `dk`, `dv`, each
/// in [`forward_row`]'s layout.
fn backward_row(dims: HeadDims, inputs: [&[f32]; 5], scale: f32, grads: [&mut [f32]; 3]) {
    let HeadDims {
        n_q, n_k, d_head, ..
    } = dims;
    let stride = dims.heads * d_head;
    let [q, k, v, pattern, dz] = inputs;
    let [dq, dk, dv] = grads;
    // vᵀ of one head and the transposed gradients dkᵀ, dvᵀ [d_head, n_k].
    let mut v_t = vec![0.0f32; d_head * n_k];
    let mut dk_t = vec![0.0f32; d_head * n_k];
    let mut dv_t = vec![0.0f32; d_head * n_k];
    let mut ds = vec![0.0f32; n_k];
    for h in 0..dims.heads {
        transpose_head(dims, v, h, &mut v_t);
        dk_t.fill(0.0);
        dv_t.fill(0.0);
        for i in 0..n_q {
            let p = &pattern[(h * n_q + i) * n_k..][..n_k];
            let end = visible_end(p.iter().map(|&p| p != 0.0), n_k);
            let (p, ds) = (&p[..end], &mut ds[..end]);
            let dz_i = &dz[dims.at(i, h)..][..d_head];
            vec_mat(dz_i, &v_t, n_k, ds); // dp
            let mean: f32 = p.iter().zip(ds.iter()).map(|(p, dp)| p * dp).sum();
            for (ds, &p) in ds.iter_mut().zip(p) {
                *ds = p * (*ds - mean) * scale;
            }
            vec_mat(
                ds,
                &k[dims.at(0, h)..],
                stride,
                &mut dq[dims.at(i, h)..][..d_head],
            );
            let q_i = &q[dims.at(i, h)..][..d_head];
            for d in 0..d_head {
                axpy(dz_i[d], p, &mut dv_t[d * n_k..][..end]);
                axpy(q_i[d], ds, &mut dk_t[d * n_k..][..end]);
            }
        }
        for j in 0..n_k {
            for d in 0..d_head {
                dk[dims.at(j, h) + d] = dk_t[d * n_k + j];
                dv[dims.at(j, h) + d] = dv_t[d * n_k + j];
            }
        }
    }
}

/// Outputs computed together in registers by [`vec_mat`].
const LANES: usize = 8;

/// How many keys a row needs: through the last one that is `visible` (or has weight), rounded up to whole
/// [`LANES`] blocks (at most `n_k`). The keys past it are a query's future: they get no score and no gradient.
fn visible_end(
    mut visible: impl DoubleEndedIterator<Item = bool> + ExactSizeIterator,
    n_k: usize,
) -> usize {
    let end = visible.rposition(|v| v).map_or(0, |j| j + 1);
    end.div_ceil(LANES).saturating_mul(LANES).min(n_k)
}

/// out[c] = Σ_r a[r] · m[r·stride + c], each sum in order of r from 0. Up to [`BLOCKS`] blocks of [`LANES`]
/// outputs stay in registers while r runs, where an `a·x + y` per r would store and reload them; several blocks
/// at once keep that many independent chains of additions in flight (one block alone waits on each addition's
/// latency). The blocking does not change any sum's order, so neither its bits.
#[inline(always)]
fn vec_mat(a: &[f32], m: &[f32], stride: usize, out: &mut [f32]) {
    let mut c0 = 0;
    let mut blocks = out.chunks_exact_mut(LANES * BLOCKS);
    for chunk in &mut blocks {
        vec_mat_blocks::<BLOCKS>(a, m, stride, c0, chunk);
        c0 += LANES * BLOCKS;
    }
    let rest = blocks.into_remainder();
    let (whole, tail) = rest.split_at_mut(rest.len() / LANES * LANES);
    match whole.len() / LANES {
        0 => {}
        1 => vec_mat_blocks::<1>(a, m, stride, c0, whole),
        2 => vec_mat_blocks::<2>(a, m, stride, c0, whole),
        3 => vec_mat_blocks::<3>(a, m, stride, c0, whole),
        _ => unreachable!("fewer than BLOCKS blocks remain"),
    }
    c0 += whole.len();
    for (c, out) in tail.iter_mut().enumerate() {
        *out = a
            .iter()
            .enumerate()
            .fold(0.0, |acc, (r, &a_r)| acc + a_r * m[r * stride + c0 + c]);
    }
}

/// Blocks of [`LANES`] outputs computed together by [`vec_mat`].
const BLOCKS: usize = 4;
// vec_mat's arms for the blocks left over are written for up to BLOCKS − 1 = 3.
const _: () = assert!(BLOCKS == 4);

/// [`vec_mat`] for the `N · LANES` outputs `out` starting at column `c0`.
#[inline(always)]
fn vec_mat_blocks<const N: usize>(a: &[f32], m: &[f32], stride: usize, c0: usize, out: &mut [f32]) {
    let mut acc = [[0.0f32; LANES]; N];
    for (r, &a_r) in a.iter().enumerate() {
        let m_r = &m[r * stride + c0..][..N * LANES];
        for (acc, m) in acc.iter_mut().zip(m_r.chunks_exact(LANES)) {
            for (acc, &m) in acc.iter_mut().zip(m) {
                *acc += a_r * m;
            }
        }
    }
    for (out, acc) in out.chunks_exact_mut(LANES).zip(&acc) {
        out.copy_from_slice(acc);
    }
}

/// Head `h` of one batch row of `x` [n_k, head, d_head] as `out` [d_head, n_k].
fn transpose_head(dims: HeadDims, x: &[f32], h: usize, out: &mut [f32]) {
    for j in 0..dims.n_k {
        for (d, &value) in x[dims.at(j, h)..][..dims.d_head].iter().enumerate() {
            out[d * dims.n_k + j] = value;
        }
    }
}

/// y ← y + a·x.
#[inline(always)]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Scores → softmax over the keys not `hidden`, in place; hidden keys get 0.
fn softmax_visible(row: &mut [f32], hidden: &[bool]) {
    let max = row
        .iter()
        .zip(hidden)
        .filter(|(_, h)| !**h)
        .map(|(&s, _)| s)
        .fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for (s, &h) in row.iter_mut().zip(hidden) {
        *s = if h { 0.0 } else { (*s - max).exp() };
        sum += *s;
    }
    if sum > 0.0 {
        let inv = 1.0 / sum;
        for s in row.iter_mut() {
            *s *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every output count from 0 to 5 blocks of [`BLOCKS`] · [`LANES`] (so every path: whole groups, one to
    /// three blocks left, a tail of single outputs) gives the bits of the plain sum in order of r.
    #[test]
    fn vec_mat_is_the_in_order_sum() {
        let rows = 7;
        let stride = 5 * BLOCKS * LANES + 3;
        let a: Vec<f32> = (0..rows).map(|r| (r as f32 * 0.37).sin() * 1.3).collect();
        let m: Vec<f32> = (0..rows * stride)
            .map(|i| (i as f32 * 0.113).cos())
            .collect();
        for n in 0..=5 * BLOCKS * LANES {
            let mut out = vec![f32::NAN; n];
            vec_mat(&a, &m, stride, &mut out);
            for (c, &got) in out.iter().enumerate() {
                let mut want = 0.0f32;
                for (r, &a_r) in a.iter().enumerate() {
                    want += a_r * m[r * stride + c];
                }
                assert_eq!(got.to_bits(), want.to_bits(), "{n} outputs, output {c}");
            }
        }
    }
}
