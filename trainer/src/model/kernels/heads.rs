//! Multi-head attention over host slices, whole batch rows per task: scores, causal softmax and the weighted sum
//! of values in one pass, and its gradient in another (what the flex backend runs for `attention_heads`).
//!
//! Queries, keys, values and `z` use the layout the projections produce, `[batch, pos, head, d_head]`, so no
//! axis is swapped before or after; the pattern is `[batch, head, q, k]` (`hook_pattern`). Every product of
//! matrices is [`mat_mul`]: tiles of outputs summed in registers along contiguous rows, which the compiler
//! vectorizes (for AVX2 or AVX-512 where the CPU has it, [`Isa`]); each batch row is computed within one task in
//! a fixed order, so results do not depend on the number of threads or on the instruction set.

use super::chunks::par_zeroed_chunks;
use super::exp::{Exp, exp_in_place};
use super::isa::{Isa, compiled_for_isa};

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
    forward_on(Isa::detect(), dims, [q, k, v], hidden, scale)
}

/// [`forward`] with the row loops compiled for `isa`.
fn forward_on(
    isa: Isa,
    dims: HeadDims,
    [q, k, v]: [&[f32]; 3],
    hidden: &[bool],
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let rows = [dims.pattern_row(), dims.q_row()];
    let (exp, per_task, avx) = (Exp::for_isa(isa), dims.rows_per_task(), isa.has_avx());
    let ([pattern, z], _) = par_zeroed_chunks(
        rows.map(|row| dims.batch * row),
        rows.map(|row| row * per_task),
        1,
        |t, [pattern, z]| {
            let batch_rows = t * per_task..((t + 1) * per_task).min(dims.batch);
            let of = |x, row| batch_rows_of(x, &batch_rows, row);
            let (q, k, v) = (
                of(q, dims.q_row()),
                of(k, dims.k_row()),
                of(v, dims.k_row()),
            );
            forward_rows_on(isa, dims, [q, k, v], hidden, scale, exp, [pattern, z], avx);
        },
    );
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
    backward_on(Isa::detect(), dims, [q, k, v, pattern, dz], scale)
}

/// [`backward`] with the row loops compiled for `isa`.
fn backward_on(
    isa: Isa,
    dims: HeadDims,
    [q, k, v, pattern, dz]: [&[f32]; 5],
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = [dims.q_row(), dims.k_row(), dims.k_row()];
    let (per_task, avx) = (dims.rows_per_task(), isa.has_avx());
    let ([dq, dk, dv], _) = par_zeroed_chunks(
        rows.map(|row| dims.batch * row),
        rows.map(|row| row * per_task),
        1,
        |t, [dq, dk, dv]| {
            let batch_rows = t * per_task..((t + 1) * per_task).min(dims.batch);
            let of = |x, row| batch_rows_of(x, &batch_rows, row);
            let (q, k, v, dz) = (
                of(q, dims.q_row()),
                of(k, dims.k_row()),
                of(v, dims.k_row()),
                of(dz, dims.q_row()),
            );
            let pattern = of(pattern, dims.pattern_row());
            backward_rows_on(isa, dims, [q, k, v, pattern, dz], scale, [dq, dk, dv], avx);
        },
    );
    (dq, dk, dv)
}

/// The batch rows `rows` of `x`, whose batch rows are `row` floats long.
fn batch_rows_of<'a>(x: &'a [f32], rows: &std::ops::Range<usize>, row: usize) -> &'a [f32] {
    &x[rows.start * row..rows.end * row]
}

compiled_for_isa! {
    /// [`forward_rows`] compiled for `isa`.
    #[allow(clippy::too_many_arguments)] // forward_rows' seven, and the instruction set
    fn forward_rows_on(
        dims: HeadDims,
        inputs: [&[f32]; 3],
        hidden: &[bool],
        scale: f32,
        exp: Exp,
        outputs: [&mut [f32]; 2],
        avx: bool,
    ) => forward_rows
}

compiled_for_isa! {
    /// [`backward_rows`] compiled for `isa`.
    fn backward_rows_on(
        dims: HeadDims,
        inputs: [&[f32]; 5],
        scale: f32,
        grads: [&mut [f32]; 3],
        avx: bool,
    ) => backward_rows
}

/// [`forward_row`] on consecutive batch rows (a task's), with one set of scratch buffers for all of them.
/// With `avx` (the CPU has it), kᵀ is transposed in registers.
#[inline(always)]
fn forward_rows(
    dims: HeadDims,
    [q, k, v]: [&[f32]; 3],
    hidden: &[bool],
    scale: f32,
    exp: Exp,
    [pattern, z]: [&mut [f32]; 2],
    avx: bool,
) {
    let mut scratch = ForwardScratch {
        ends: hidden
            .chunks_exact(dims.n_k.max(1))
            .map(|hidden| visible_end(hidden, |h: bool| !h))
            .collect(),
        // A block of slack after kᵀ, so `mat_mul` reads a row's last keys in place.
        k_t: vec![0.0f32; dims.d_head * dims.n_k + LANES],
        q_h: vec![0.0f32; dims.n_q * dims.d_head],
        avx,
    };
    let rows = z.len().checked_div(dims.q_row()).unwrap_or(0);
    let (q_row, k_row, p_row) = (dims.q_row(), dims.k_row(), dims.pattern_row());
    for b in 0..rows {
        forward_row(
            dims,
            [
                &q[b * q_row..][..q_row],
                &k[b * k_row..][..k_row],
                &v[b * k_row..][..k_row],
            ],
            hidden,
            scale,
            exp,
            [
                &mut pattern[b * p_row..][..p_row],
                &mut z[b * q_row..][..q_row],
            ],
            &mut scratch,
        );
    }
}

/// What [`forward_row`] computes into and reuses from one batch row to the next: each query's
/// [`visible_end`], kᵀ of one head [d_head, n_k] and its queries, scaled [n_q, d_head]; and whether the CPU
/// has AVX, for [`transpose_head`].
struct ForwardScratch {
    ends: Vec<usize>,
    k_t: Vec<f32>,
    q_h: Vec<f32>,
    avx: bool,
}

/// [`forward`] on one batch row: `inputs` are `q` [n_q, head, d_head], `k`, `v` [n_k, head, d_head] and
/// `outputs` `pattern` [head, n_q, n_k], `z` [n_q, head, d_head]. [`ROWS`] queries at a time: their scores over
/// the keys the last of them sees, each one's softmax over its own, then their `z`.
#[inline(always)]
fn forward_row(
    dims: HeadDims,
    inputs: [&[f32]; 3],
    hidden: &[bool],
    scale: f32,
    exp: Exp,
    outputs: [&mut [f32]; 2],
    scratch: &mut ForwardScratch,
) {
    let [q, k, v] = inputs;
    let [pattern, z] = outputs;
    let HeadDims {
        n_q, n_k, d_head, ..
    } = dims;
    let stride = dims.heads * d_head;
    let ForwardScratch {
        ends,
        k_t,
        q_h,
        avx,
    } = scratch;
    for h in 0..dims.heads {
        transpose_head(dims, k, h, n_k, k_t, *avx);
        for (i, q_h) in q_h.chunks_exact_mut(d_head.max(1)).enumerate() {
            for (scaled, &q_id) in q_h.iter_mut().zip(&q[dims.at(i, h)..][..d_head]) {
                *scaled = q_id * scale;
            }
        }
        let pattern = &mut pattern[h * n_q * n_k..][..n_q * n_k];
        for (i0, rows, end) in query_groups(ends) {
            let scores = &mut pattern[i0 * n_k..];
            mat_mul(
                Mat::new(&q_h[i0 * d_head..], d_head),
                Mat::new(k_t, n_k),
                d_head,
                MatMut::new(scores, n_k),
                [rows, end],
            );
            for (i, row) in scores.chunks_exact_mut(n_k).take(rows).enumerate() {
                let (own, past) = row[..end].split_at_mut(ends[i0 + i]);
                exp_visible(own, &hidden[(i0 + i) * n_k..][..own.len()], exp);
                past.fill(0.0);
            }
            normalize_rows(&mut scores[..rows * n_k], n_k, end);
            mat_mul(
                Mat::new(&pattern[i0 * n_k..], n_k),
                Mat::new(&v[dims.at(0, h)..], stride),
                end,
                MatMut::new(&mut z[dims.at(i0, h)..], stride),
                [rows, d_head],
            );
        }
    }
}

/// [`backward_row`] on consecutive batch rows (a task's), with one set of scratch buffers for all of them.
/// With `avx` (the CPU has it), vᵀ is transposed in registers.
#[inline(always)]
fn backward_rows(
    dims: HeadDims,
    [q, k, v, pattern, dz]: [&[f32]; 5],
    scale: f32,
    [dq, dk, dv]: [&mut [f32]; 3],
    avx: bool,
) {
    let mut scratch = BackwardScratch {
        // A block of slack after vᵀ, as after [`forward_row`]'s kᵀ.
        v_t: vec![0.0f32; dims.d_head * dims.n_k + LANES],
        ds: vec![0.0f32; dims.n_q * dims.n_k],
        ends: vec![0usize; dims.n_q],
        avx,
    };
    let rows = dq.len().checked_div(dims.q_row()).unwrap_or(0);
    let (q_row, k_row, p_row) = (dims.q_row(), dims.k_row(), dims.pattern_row());
    for b in 0..rows {
        let (q, dz) = (&q[b * q_row..][..q_row], &dz[b * q_row..][..q_row]);
        let (k, v) = (&k[b * k_row..][..k_row], &v[b * k_row..][..k_row]);
        let pattern = &pattern[b * p_row..][..p_row];
        backward_row(
            dims,
            [q, k, v, pattern, dz],
            scale,
            [
                &mut dq[b * q_row..][..q_row],
                &mut dk[b * k_row..][..k_row],
                &mut dv[b * k_row..][..k_row],
            ],
            &mut scratch,
        );
    }
}

/// What [`backward_row`] computes into, reused from one batch row to the next: vᵀ of one head [d_head, n_k],
/// dS [n_q, n_k] and each query's [`visible_end`] by its weights; and whether the CPU has AVX, for
/// [`transpose_head`].
struct BackwardScratch {
    v_t: Vec<f32>,
    ds: Vec<f32>,
    ends: Vec<usize>,
    avx: bool,
}

/// [`backward`] on one batch row: `inputs` are `q`, `k`, `v`, `pattern`, `dz` and `grads` `dq`, `dk`, `dv`, each
/// in [`forward_row`]'s layout.
///
/// Per head, [`ROWS`] queries at a time, dP, then dS (zero past the keys each query sees) and dq; then
/// dv = Pᵀ·dz and dk = dSᵀ·q over all the queries. Every sum runs in order from the first term, as a
/// per-query `a·x + y` would add it; the zeros added past a query's keys change no bit.
#[inline(always)]
fn backward_row(
    dims: HeadDims,
    inputs: [&[f32]; 5],
    scale: f32,
    grads: [&mut [f32]; 3],
    scratch: &mut BackwardScratch,
) {
    let HeadDims {
        n_q, n_k, d_head, ..
    } = dims;
    let stride = dims.heads * d_head;
    let [q, k, v, pattern, dz] = inputs;
    let [dq, dk, dv] = grads;
    let BackwardScratch { v_t, ds, ends, avx } = scratch;
    for h in 0..dims.heads {
        transpose_head(dims, v, h, n_k, v_t, *avx);
        let p_h = &pattern[h * n_q * n_k..][..n_q * n_k];
        for (end, p) in ends.iter_mut().zip(p_h.chunks_exact(n_k.max(1))) {
            *end = visible_end(p, |p: f32| p != 0.0);
        }
        for (i0, rows, end) in query_groups(ends) {
            let ds = &mut ds[i0 * n_k..];
            mat_mul(
                Mat::new(&dz[dims.at(i0, h)..], stride),
                Mat::new(v_t, n_k),
                d_head,
                MatMut::new(ds, n_k),
                [rows, end],
            ); // dP
            for (i, ds) in ds.chunks_exact_mut(n_k).take(rows).enumerate() {
                let (ds, past) = ds.split_at_mut(ends[i0 + i]);
                past.fill(0.0);
                let p = &p_h[(i0 + i) * n_k..][..ds.len()];
                let mean: f32 = p.iter().zip(ds.iter()).map(|(p, dp)| p * dp).sum();
                for (ds, &p) in ds.iter_mut().zip(p) {
                    *ds = p * (*ds - mean) * scale;
                }
            }
            mat_mul(
                Mat::new(ds, n_k),
                Mat::new(&k[dims.at(0, h)..], stride),
                end,
                MatMut::new(&mut dq[dims.at(i0, h)..], stride),
                [rows, d_head],
            );
        }
        // dv = Pᵀ·dz and dk = dSᵀ·q, [`ROWS`] keys at a time from the first query that sees one of them:
        // the queries before it have p = dS = 0 on these keys, and a sum from 0 that skips such terms has the
        // bits of one that adds them.
        for j0 in (0..n_k).step_by(ROWS) {
            let Some(first) = ends.iter().position(|&end| end > j0) else {
                break;
            };
            let shape = [ROWS.min(n_k - j0), d_head];
            let (q, dz) = (&q[dims.at(first, h)..], &dz[dims.at(first, h)..]);
            let (dk, dv) = (&mut dk[dims.at(j0, h)..], &mut dv[dims.at(j0, h)..]);
            let at = first * n_k + j0;
            mat_mul(
                Mat::transposed(&p_h[at..], n_k),
                Mat::new(dz, stride),
                n_q - first,
                MatMut::new(dv, stride),
                shape,
            );
            mat_mul(
                Mat::transposed(&ds[at..], n_k),
                Mat::new(q, stride),
                n_q - first,
                MatMut::new(dk, stride),
                shape,
            );
        }
    }
}

/// Outputs computed together in registers by [`mat_mul`]: [`ROWS`] rows of up to [`BLOCKS`] blocks of
/// [`LANES`].
const LANES: usize = 8;
const BLOCKS: usize = 2;
const ROWS: usize = 4;

/// How many keys a row needs: through the last one that is `visible` (or has weight), rounded up to whole
/// [`LANES`] blocks (at most the row's length). The keys past it are a query's future: they get no score and
/// no gradient. Whole blocks are tested at once, from the last.
#[inline(always)]
fn visible_end<T: Copy>(row: &[T], visible: impl Fn(T) -> bool) -> usize {
    row.chunks(LANES)
        .rposition(|block| block.iter().fold(false, |any, &x| any | visible(x)))
        .map_or(0, |b| ((b + 1) * LANES).min(row.len()))
}

/// The queries [`ROWS`] at a time, given each one's [`visible_end`]: (first query, how many, the keys the
/// group needs).
fn query_groups(ends: &[usize]) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    ends.chunks(ROWS).enumerate().map(|(g, group)| {
        (
            g * ROWS,
            group.len(),
            group.iter().copied().max().unwrap_or(0),
        )
    })
}

/// A matrix in a slice: element (i, c) at `data[i · stride + c · step]` (`step` 1: row-major; `stride` 1: the
/// transpose of a row-major matrix, read in place).
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    stride: usize,
    step: usize,
}

impl<'a> Mat<'a> {
    fn new(data: &'a [f32], stride: usize) -> Self {
        Self {
            data,
            stride,
            step: 1,
        }
    }

    /// The transpose of the row-major matrix `data` with rows `stride` apart.
    fn transposed(data: &'a [f32], stride: usize) -> Self {
        Self {
            data,
            stride: 1,
            step: stride,
        }
    }
}

/// [`Mat`] to write.
struct MatMut<'a> {
    data: &'a mut [f32],
    stride: usize,
}

impl<'a> MatMut<'a> {
    fn new(data: &'a mut [f32], stride: usize) -> Self {
        Self { data, stride }
    }
}

/// out[i][c] = Σ_{r < inner} a[i][r] · m[r][c] for the `[rows, cols]` outputs, each sum in order of r from 0
/// (the bits of the plain loop); `m`'s rows are contiguous (`step` 1), `a` may be any [`Mat`].
/// [`ROWS`] × [`BLOCKS`] · [`LANES`] outputs stay in registers while r runs, each `m[r]` block loaded once for
/// the [`ROWS`] rows: that many independent chains of additions, where one row at a time would wait on each
/// addition's latency. Columns past the last whole block are a tile too: read from `m` itself where its
/// data reaches a whole block past them (the lanes past `cols` are computed and dropped; each lane's sum is its
/// own, so the kept ones have the same bits), else from a zero-padded copy of theirs.
#[inline(always)]
fn mat_mul(a: Mat, m: Mat, inner: usize, mut out: MatMut, [rows, cols]: [usize; 2]) {
    debug_assert_eq!(m.step, 1, "mat_mul reads m's rows as contiguous blocks");
    let whole = cols / LANES * LANES;
    let copy: Vec<f32>;
    let tail =
        if whole == cols || inner == 0 || (inner - 1) * m.stride + whole + LANES <= m.data.len() {
            (m, whole)
        } else {
            let mut padded = vec![0.0f32; inner * LANES];
            for (r, padded) in padded.chunks_exact_mut(LANES).enumerate() {
                for (padded, &m) in padded
                    .iter_mut()
                    .zip(&m.data[r * m.stride + whole..][..cols - whole])
                {
                    *padded = m;
                }
            }
            copy = padded;
            (Mat::new(&copy, LANES), 0)
        };
    let mut i0 = 0;
    while i0 + ROWS <= rows {
        row_block::<ROWS>(a, (m, tail), inner, &mut out, i0, cols);
        i0 += ROWS;
    }
    match rows - i0 {
        0 => {}
        1 => row_block::<1>(a, (m, tail), inner, &mut out, i0, cols),
        2 => row_block::<2>(a, (m, tail), inner, &mut out, i0, cols),
        3 => row_block::<3>(a, (m, tail), inner, &mut out, i0, cols),
        _ => unreachable!("fewer than ROWS rows remain"),
    }
}

// mat_mul's arms for the rows left over are written for up to ROWS − 1 = 3.
const _: () = assert!(ROWS == 4);

/// [`mat_mul`] for the `R` rows from `i0`; `tail` is where the columns past the last whole block are read (a
/// matrix and its column).
#[inline(always)]
fn row_block<const R: usize>(
    a: Mat,
    (m, tail): (Mat, (Mat, usize)),
    inner: usize,
    out: &mut MatMut,
    i0: usize,
    cols: usize,
) {
    let a = Mat {
        data: &a.data[i0 * a.stride..],
        ..a
    };
    let mut c0 = 0;
    while c0 + BLOCKS * LANES <= cols {
        tile::<R, BLOCKS>(a, (m, c0), inner, out, [i0, c0], BLOCKS * LANES);
        c0 += BLOCKS * LANES;
    }
    if c0 + LANES <= cols {
        tile::<R, 1>(a, (m, c0), inner, out, [i0, c0], LANES);
        c0 += LANES;
    }
    if c0 < cols {
        tile::<R, 1>(a, tail, inner, out, [i0, c0], cols - c0);
    }
}

/// `R` rows × `N` blocks of [`LANES`] outputs from row `i0`, column `c0`, of which the first `width` are
/// written; `a`'s first `R` rows are the tile's, `m` is read from its column `m_c0`.
#[inline(always)]
fn tile<const R: usize, const N: usize>(
    a: Mat,
    (m, m_c0): (Mat, usize),
    inner: usize,
    out: &mut MatMut,
    [i0, c0]: [usize; 2],
    width: usize,
) {
    let mut acc = [[[0.0f32; LANES]; N]; R];
    if inner > 0 {
        // Every read below is in bounds: the furthest ones are checked here, once, instead of at every
        // element in the loop (where the checks made the tile wait).
        assert!((R - 1) * a.stride + (inner - 1) * a.step < a.data.len());
        assert!((inner - 1) * m.stride + m_c0 + N * LANES <= m.data.len());
        let a_rows: [&[f32]; R] = std::array::from_fn(|i| &a.data[i * a.stride..]);
        for r in 0..inner {
            // SAFETY: r < inner: within the bound asserted above.
            let m_r = unsafe {
                &*m.data
                    .as_ptr()
                    .add(r * m.stride + m_c0)
                    .cast::<[[f32; LANES]; N]>()
            };
            for (acc, a_row) in acc.iter_mut().zip(&a_rows) {
                // SAFETY: r < inner and the row is one of the first R: within the bound asserted above.
                let a_r = unsafe { *a_row.get_unchecked(r * a.step) };
                for (acc, m) in acc.iter_mut().zip(m_r) {
                    for (acc, &m) in acc.iter_mut().zip(m) {
                        *acc += a_r * m;
                    }
                }
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        let out = &mut out.data[(i0 + i) * out.stride + c0..][..width];
        for (out, acc) in out.iter_mut().zip(acc.as_flattened()) {
            *out = *acc;
        }
    }
}

/// Head `h` of one batch row of `x` [n, head, d_head] as `out` [d_head, n]. With `avx` (the CPU has it), the
/// whole 8 × 8 blocks are transposed in registers and only the rest element by element (a strided copy with
/// a bounds check per element: ~16 % of the forward's samples on a Zen 3 with AVX2).
#[inline(always)]
fn transpose_head(dims: HeadDims, x: &[f32], h: usize, n: usize, out: &mut [f32], avx: bool) {
    let (stride, d_head) = (dims.heads * dims.d_head, dims.d_head);
    let x = &x[dims.at(0, h)..];
    let (whole_n, whole_d) = if avx && cfg!(target_arch = "x86_64") {
        (n / 8 * 8, d_head / 8 * 8)
    } else {
        (0, 0)
    };
    #[cfg(target_arch = "x86_64")]
    for j0 in (0..whole_n).step_by(8) {
        for d0 in (0..whole_d).step_by(8) {
            // SAFETY: `avx` says the CPU has AVX. Rows j0..j0 + 8 < n of x from column d0 + 8 ≤ d_head: the
            // last read, (j0 + 7) · stride + d0 + 7, is within head h of key n − 1; the writes, rows d0..d0 + 8
            // of `out` from column j0 + 8 ≤ n, within its d_head rows of n.
            unsafe {
                super::transpose::transpose_8x8(
                    &x[j0 * stride + d0..],
                    stride,
                    None,
                    &mut out[d0 * n + j0..],
                    n,
                )
            };
        }
    }
    for (d, out) in out.chunks_exact_mut(n).take(d_head).enumerate() {
        let from = if d < whole_d { whole_n } else { 0 };
        if from < n {
            for (out, &value) in out[from..]
                .iter_mut()
                .zip(x[from * stride + d..].iter().step_by(stride))
            {
                *out = value;
            }
        }
    }
}

/// Scores → e^(score − max) over the keys not `hidden` (the max over those keys), in place; hidden keys get 0.
/// [`normalize_rows`] then divides by the sums: together, the softmax over the visible keys.
#[inline(always)]
fn exp_visible(row: &mut [f32], hidden: &[bool], exp: Exp) {
    // The max does not depend on the order it is taken in (NaNs are skipped either way, and the sign of a zero
    // max changes no e^(s − max)), so LANES running maxima.
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for (s, h) in row.chunks(LANES).zip(hidden.chunks(LANES)) {
        for ((m, &s), &h) in lanes.iter_mut().zip(s).zip(h) {
            *m = m.max(if h { f32::NEG_INFINITY } else { s });
        }
    }
    let max = lanes.into_iter().fold(f32::NEG_INFINITY, f32::max);
    // Hidden keys go in as 0 (any finite value would do) and come out as 0.
    for (s, &h) in row.iter_mut().zip(hidden) {
        *s = if h { 0.0 } else { *s - max };
    }
    exp_in_place(row, exp);
    for (s, &h) in row.iter_mut().zip(hidden) {
        if h {
            *s = 0.0;
        }
    }
}

/// Each row of `rows` [_, n_k] divided by its sum over its first `end` keys (left as it is where that sum is 0).
/// Each sum runs in key order; the rows' sums run side by side, [`ROWS`] independent chains of additions.
#[inline(always)]
fn normalize_rows(rows: &mut [f32], n_k: usize, end: usize) {
    let mut groups = rows.chunks_exact_mut(n_k * ROWS);
    for group in &mut groups {
        normalize_group::<ROWS>(group, n_k, end);
    }
    for row in groups.into_remainder().chunks_exact_mut(n_k) {
        normalize_group::<1>(row, n_k, end);
    }
}

/// [`normalize_rows`] on `R` rows.
#[inline(always)]
fn normalize_group<const R: usize>(rows: &mut [f32], n_k: usize, end: usize) {
    let mut sums = [0.0f32; R];
    {
        let rows: [&[f32]; R] = std::array::from_fn(|r| &rows[r * n_k..][..end]);
        for j in 0..end {
            for (sum, row) in sums.iter_mut().zip(&rows) {
                *sum += row[j];
            }
        }
    }
    for (row, sum) in rows.chunks_exact_mut(n_k).zip(sums) {
        if sum > 0.0 {
            let inv = 1.0 / sum;
            for s in &mut row[..end] {
                *s *= inv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `q`, `k`, `v` and `dz` for `dims`: smooth values of both signs, different in each.
    fn inputs(dims: HeadDims) -> [Vec<f32>; 4] {
        [0.31, 0.17, 0.23, 0.41].map(|seed: f32| {
            (0..dims.batch * dims.q_row())
                .map(|i| (i as f32 * seed).sin() * 2.0)
                .collect()
        })
    }

    /// Every instruction set this CPU has gives the baseline's bits, forward and backward, on a causal mask
    /// with row lengths that are whole blocks and not, and head sizes with and without whole 8 × 8 blocks for
    /// the transposes in AVX registers (which the baseline does not use).
    #[test]
    fn same_bits_on_every_instruction_set() {
        for (n, d_head) in [(13, 5), (19, 16), (32, 8), (8, 24), (17, 16)] {
            let dims = HeadDims {
                batch: 3,
                heads: 2,
                n_q: n,
                n_k: n,
                d_head,
            };
            let [q, k, v, dz] = inputs(dims);
            let hidden: Vec<bool> = (0..n * n).map(|ij| ij % n > ij / n).collect();
            let run = |isa| {
                let (pattern, z) = forward_on(isa, dims, [&q, &k, &v], &hidden, 0.4);
                let (dq, dk, dv) = backward_on(isa, dims, [&q, &k, &v, &pattern, &dz], 0.4);
                [pattern, z, dq, dk, dv].map(|x| x.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
            };
            let baseline = run(Isa::Baseline);
            assert!(
                baseline[0].iter().any(|&p| p != 0),
                "the pattern is not all zero"
            );
            for isa in Isa::all_available() {
                assert_eq!(run(isa), baseline, "{isa:?}, {n} keys, d_head {d_head}");
            }
        }
    }

    /// dv and dk have the bits of their definitions summed over every query in order (the kernel starts each
    /// key's sums at the first query that sees it), on a mask where some queries see no key and some fewer
    /// keys than a query before them.
    #[test]
    fn key_gradients_are_the_in_order_sums_over_every_query() {
        let dims = HeadDims {
            batch: 2,
            heads: 2,
            n_q: 19,
            n_k: 19,
            d_head: 5,
        };
        let n = 19;
        let [q, k, v, dz] = inputs(dims);
        let sees = |i: usize, j: usize| match i {
            0 | 1 => false,
            11 => j < 3,
            _ => j <= i,
        };
        let hidden: Vec<bool> = (0..n * n).map(|ij| !sees(ij / n, ij % n)).collect();
        let scale = 0.4;
        let (pattern, _) = forward(dims, &q, &k, &v, &hidden, scale);
        let (_, dk, dv) = backward(dims, &q, &k, &v, &pattern, &dz, scale);
        let at = |b: usize, pos: usize, h: usize| b * dims.q_row() + dims.at(pos, h);
        for (b, h) in (0..dims.batch).flat_map(|b| (0..dims.heads).map(move |h| (b, h))) {
            let p = |i: usize, j: usize| pattern[((b * dims.heads + h) * n + i) * n + j];
            let ds: Vec<f32> = (0..n * n)
                .map(|ij| {
                    let (i, j) = (ij / n, ij % n);
                    let dp = |j: usize| {
                        let mut sum = 0.0f32;
                        for d in 0..dims.d_head {
                            sum += dz[at(b, i, h) + d] * v[at(b, j, h) + d];
                        }
                        sum
                    };
                    let mut mean = 0.0f32;
                    for j in 0..n {
                        mean += p(i, j) * dp(j);
                    }
                    p(i, j) * (dp(j) - mean) * scale
                })
                .collect();
            for (j, d) in (0..n).flat_map(|j| (0..dims.d_head).map(move |d| (j, d))) {
                let (mut want_dv, mut want_dk) = (0.0f32, 0.0f32);
                for i in 0..n {
                    want_dv += p(i, j) * dz[at(b, i, h) + d];
                    want_dk += ds[i * n + j] * q[at(b, i, h) + d];
                }
                let got = [dv[at(b, j, h) + d], dk[at(b, j, h) + d]];
                assert_eq!(
                    got.map(f32::to_bits),
                    [want_dv, want_dk].map(f32::to_bits),
                    "key {j}"
                );
            }
        }
    }

    /// Every output shape up to 9 rows by 5 groups of [`BLOCKS`] · [`LANES`] columns (so every path: whole
    /// tiles, rows left over, a single block, a tail block read in place or from a padded copy) gives the
    /// bits of the plain sum in order of r, with strides wider than the rows.
    #[test]
    fn mat_mul_is_the_in_order_sum() {
        let inner = 7;
        let (a_stride, m_stride, out_stride) =
            (inner + 2, 5 * BLOCKS * LANES + 3, 5 * BLOCKS * LANES + 1);
        let a: Vec<f32> = (0..9 * a_stride)
            .map(|i| (i as f32 * 0.37).sin() * 1.3)
            .collect();
        let m: Vec<f32> = (0..inner * m_stride)
            .map(|i| (i as f32 * 0.113).cos())
            .collect();
        for rows in 0..=9 {
            for (cols, in_place) in (0..=5 * BLOCKS * LANES).flat_map(|c| [(c, false), (c, true)]) {
                // `m` ending at its last element read (the tail copied), or with the rows' slack after it.
                let m_end = if in_place {
                    m.len()
                } else {
                    (inner - 1) * m_stride + cols
                };
                let mut out = vec![f32::NAN; rows * out_stride];
                mat_mul(
                    Mat::new(&a, a_stride),
                    Mat::new(&m[..m_end], m_stride),
                    inner,
                    MatMut::new(&mut out, out_stride),
                    [rows, cols],
                );
                for i in 0..rows {
                    for c in 0..out_stride {
                        let got = out[i * out_stride + c];
                        if c >= cols {
                            assert!(got.is_nan(), "{rows}×{cols}: ({i}, {c}) written");
                            continue;
                        }
                        let mut want = 0.0f32;
                        for r in 0..inner {
                            want += a[i * a_stride + r] * m[r * m_stride + c];
                        }
                        assert_eq!(got.to_bits(), want.to_bits(), "{rows}×{cols}: ({i}, {c})");
                    }
                }
            }
        }
    }
}
