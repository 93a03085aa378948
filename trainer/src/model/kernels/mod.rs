//! The model's composite operations as a burn backend extension, each one node on autodiff devices where burn
//! composes several and records each one's backward: multi-head attention (the scores, the causal softmax and
//! the weighted sum of values; burn: about a dozen operations), TransformerLens's LayerNorm (burn: nine) and
//! the projections x·W + b (burn: two). On the flex CPU backend attention runs both ways as loops over host
//! slices ([`heads`]), one task per batch row; LayerNorm runs flex's fused forward and our one-pass gradient
//! ([`layer_norm`]); a projection and its gradients are the gemm calls flex's matmul makes, written into
//! buffers of our own ([`matmul_2d`]). Other backends compose burn's own operations. This is the one file
//! besides [`crate::device`] that names backends: an extension is implemented per backend.

mod chunks;
mod cross_entropy;
mod exp;
mod heads;
mod isa;
mod layer_norm;
mod transpose;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{BoolTensor, FloatTensor, IndexingUpdateOp, IntTensor};
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Flex, Scalar, TensorMetadata, backend_extension,
};
use burn::prelude::*;
use heads::HeadDims;
use isa::{Isa, compiled_for_isa};
use rayon::prelude::*;

/// Operations the model needs faster than burn composes them.
#[backend_extension(Flex, Autodiff, Cube: cfg(feature = "cuda"))]
pub trait ModelKernels: Backend {
    /// Attention of `q` [batch, q, head, d_head] over `k`, `v` [batch, k, head, d_head]; `hidden` [q, k] is
    /// true where a key is masked. pattern = softmax(q·kᵀ · scale) over the visible keys, z = pattern · v.
    /// Returns (`pattern` [batch, head, q, k], `z` [batch, q, head, d_head]).
    fn attention_heads(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        hidden: BoolTensor<Self>,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [batch, n_q, heads, _] = dims4(&q);
        let n_k = k.shape()[1];
        let (q, k, v) = (by_head::<Self>(q), by_head::<Self>(k), by_head::<Self>(v));
        let scores = Self::float_mul_scalar(
            Self::float_matmul(q, Self::float_swap_dims(k, 2, 3)),
            Scalar::Float(scale),
        );
        let hidden = Self::bool_expand(
            Self::bool_reshape(hidden, Shape::new([1, 1, n_q, n_k])),
            Shape::new([batch, heads, n_q, n_k]),
        );
        let scores = Self::float_mask_fill(scores, hidden, Scalar::Float(f64::NEG_INFINITY));
        let pattern = Self::softmax(scores, 3);
        let z = by_head::<Self>(Self::float_matmul(pattern.clone(), v));
        (pattern, z)
    }

    /// The gradient of [`Self::attention_heads`]'s `z` with respect to `q`, `k`, `v`, given its `pattern` p
    /// and the gradient `dz` of `z`: dv = pᵀ·dz, dp = dz·vᵀ, ds = p ⊙ (dp − Σ_k p ⊙ dp), dq = ds·k · scale,
    /// dk = dsᵀ·q · scale. Returns (`dq`, `dk`, `dv`) in the layouts of `q`, `k`, `v`.
    fn attention_heads_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pattern: FloatTensor<Self>,
        dz: FloatTensor<Self>,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (q, k, v, dz) = (
            by_head::<Self>(q),
            by_head::<Self>(k),
            by_head::<Self>(v),
            by_head::<Self>(dz),
        );
        let dv = Self::float_matmul(Self::float_swap_dims(pattern.clone(), 2, 3), dz.clone());
        let dp = Self::float_matmul(dz, Self::float_swap_dims(v, 2, 3));
        let mean = Self::float_sum_dim(Self::float_mul(dp.clone(), pattern.clone()), 3);
        let ds = Self::float_mul_scalar(
            Self::float_mul(pattern, Self::float_sub(dp, mean)),
            Scalar::Float(scale),
        );
        let dq = Self::float_matmul(ds.clone(), k);
        let dk = Self::float_matmul(Self::float_swap_dims(ds, 2, 3), q);
        (
            by_head::<Self>(dq),
            by_head::<Self>(dk),
            by_head::<Self>(dv),
        )
    }

    /// `x` [rows, d_in] · `w` [d_in, d_out] + `b` [d_out] → [rows, d_out]: every projection of the model
    /// (burn: a matrix product and a broadcast add, two nodes).
    fn affine(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let d_out = b.shape()[0];
        Self::float_add(
            Self::float_matmul(x, w),
            Self::float_reshape(b, Shape::new([1, d_out])),
        )
    }

    /// The gradient of [`Self::affine`] given the gradient `dy` of its output: dx = dy·wᵀ, dw = xᵀ·dy and
    /// db = Σ dy over the rows. Returns (`dx`, `dw`, `db`).
    fn affine_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        (
            Self::float_matmul(dy.clone(), Self::float_swap_dims(w, 0, 1)),
            Self::float_matmul(Self::float_swap_dims(x, 0, 1), dy.clone()),
            sum_rows::<Self>(dy),
        )
    }

    /// Mean cross-entropy of `logits` [rows, vocab] against the classes `targets` [rows]:
    /// −mean log softmax(row)[target] (burn: a log-softmax of six operations, a gather and a mean). Returns
    /// the mean [1] and the softmax [rows, vocab], which the gradient reads.
    fn cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let rows = targets.shape()[0];
        let log_probs = Self::log_softmax(logits, 1);
        let targets = Self::int_reshape(targets, Shape::new([rows, 1]));
        let picked = Self::float_gather(1, log_probs.clone(), targets);
        (
            Self::float_neg(Self::float_mean(picked)),
            Self::float_exp(log_probs),
        )
    }

    /// The gradient of [`Self::cross_entropy`]'s mean given its gradient `d_loss` [1], from the softmax `probs`
    /// it returned: d_loss / rows · (softmax − one-hot of the target).
    fn cross_entropy_backward(
        probs: FloatTensor<Self>,
        targets: IntTensor<Self>,
        d_loss: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let rows = targets.shape()[0];
        let targets = Self::int_reshape(targets, Shape::new([rows, 1]));
        let picked = Self::float_gather(1, probs.clone(), targets.clone());
        let minus_one = Self::float_add_scalar(
            Self::float_mul_scalar(picked, Scalar::Float(0.0)),
            Scalar::Float(-1.0),
        );
        let diff = Self::float_scatter(1, probs, targets, minus_one, IndexingUpdateOp::Add);
        Self::float_div_scalar(
            Self::float_mul(diff, Self::float_reshape(d_loss, Shape::new([1, 1]))),
            Scalar::Float(rows as f64),
        )
    }

    /// `x` [a, b, c] → [b, a, c]; its gradient is the same swap of the output's. On flex both are stored in
    /// their own order: burn's `swap_dims` is a view, and a parameter's gradient through it arrived as one (the
    /// projections' `W_Q`, `W_K`, `W_V` [head, d_model, d_head] are read as [d_model, head · d_head]), so AdamW
    /// read those gradients element by element through an index iterator (2.5 % of induction's step thread).
    fn swap_first_axes(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_swap_dims(x, 0, 1)
    }

    /// TransformerLens's `LayerNorm` over the last axis of `x`: (x − mean) / √(var + eps) ⊙ `w` + `b`, with the
    /// biased variance (flex: its fused row kernel).
    fn layer_norm_affine(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm(x, w, Some(b), eps)
    }

    /// The gradient of [`Self::layer_norm_affine`] given the gradient `dy` of its output: with
    /// x̂ = (x − mean) / √(var + eps) and g = dy ⊙ w, dx = (g − mean g − x̂ · mean(g ⊙ x̂)) / √(var + eps),
    /// dw = Σ dy ⊙ x̂ and db = Σ dy over every axis but the last. Returns (`dx`, `dw`, `db`).
    fn layer_norm_affine_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let shape = x.shape();
        let last = shape.num_dims() - 1;
        let d = shape[last];
        let rows = shape.num_elements() / d.max(1);
        let mean = Self::float_mean_dim(x.clone(), last);
        let centred = Self::float_sub(x, mean);
        let var = Self::float_mean_dim(Self::float_mul(centred.clone(), centred.clone()), last);
        let inv = Self::float_recip(Self::float_sqrt(Self::float_add_scalar(
            var,
            Scalar::Float(eps),
        )));
        let x_hat = Self::float_mul(centred, inv.clone());
        let mut row_shape = vec![1; last];
        row_shape.push(d);
        let g = Self::float_mul(dy.clone(), Self::float_reshape(w, Shape::from(row_shape)));
        let mean_g = Self::float_mean_dim(g.clone(), last);
        let mean_gx = Self::float_mean_dim(Self::float_mul(g.clone(), x_hat.clone()), last);
        let dx = Self::float_mul(
            Self::float_sub(
                Self::float_sub(g, mean_g),
                Self::float_mul(x_hat.clone(), mean_gx),
            ),
            inv,
        );
        let over_rows = |t: FloatTensor<Self>| {
            let t = Self::float_reshape(t, Shape::new([rows, d]));
            Self::float_reshape(Self::float_sum_dim(t, 0), Shape::new([d]))
        };
        let dw = over_rows(Self::float_mul(dy.clone(), x_hat));
        (dx, dw, over_rows(dy))
    }
}

/// Σ over the rows of `dy` [rows, d]: the gradient of a bias added to every row, as burn's broadcast add gives it.
fn sum_rows<B: Backend>(dy: FloatTensor<B>) -> FloatTensor<B> {
    let d = dy.shape()[1];
    B::float_reshape(B::float_sum_dim(dy, 0), Shape::new([d]))
}

/// [batch, pos, head, d_head] ↔ [batch, head, pos, d_head].
fn by_head<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::float_swap_dims(x, 1, 2)
}

fn dims4(x: &impl TensorMetadata) -> [usize; 4] {
    let shape = x.shape();
    [shape[0], shape[1], shape[2], shape[3]]
}

/// flex runs both directions as loops over host slices ([`heads`]).
impl ModelKernels for Flex {
    fn attention_heads(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        hidden: FlexTensor,
        scale: f64,
    ) -> (FlexTensor, FlexTensor) {
        let dims = head_dims(&q, &k);
        let hidden = hidden.to_contiguous();
        let (start, end) = hidden
            .layout()
            .contiguous_offsets()
            .expect("a contiguous tensor has contiguous offsets");
        let hidden: Vec<bool> = hidden.storage::<u8>()[start..end]
            .iter()
            .map(|&b| b != 0)
            .collect();
        let (q, k, v) = (q.to_contiguous(), k.to_contiguous(), v.to_contiguous());
        let (pattern, z) =
            heads::forward(dims, f32s(&q), f32s(&k), f32s(&v), &hidden, scale as f32);
        (
            flex_tensor(pattern, [dims.batch, dims.heads, dims.n_q, dims.n_k]),
            flex_tensor(z, dims4(&q)),
        )
    }

    fn attention_heads_backward(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        pattern: FlexTensor,
        dz: FlexTensor,
        scale: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let dims = head_dims(&q, &k);
        let [q, k, v, pattern, dz] = [q, k, v, pattern, dz].map(|x| x.to_contiguous());
        let (dq, dk, dv) = heads::backward(
            dims,
            f32s(&q),
            f32s(&k),
            f32s(&v),
            f32s(&pattern),
            f32s(&dz),
            scale as f32,
        );
        (
            flex_tensor(dq, dims4(&q)),
            flex_tensor(dk, dims4(&k)),
            flex_tensor(dv, dims4(&v)),
        )
    }

    fn affine(x: FlexTensor, w: FlexTensor, b: FlexTensor) -> FlexTensor {
        let d_out = b.shape()[0];
        let b = b.to_contiguous();
        let (y, _) = matmul_2d([&x, &w], [false, false], Fused::Bias(f32s(&b)));
        flex_tensor(y, [x.shape()[0], d_out])
    }

    fn cross_entropy(logits: FlexTensor, targets: FlexTensor) -> (FlexTensor, FlexTensor) {
        let logits = logits.to_contiguous();
        let [rows, vocab] = [logits.shape()[0], logits.shape()[1]];
        let (loss, probs) = cross_entropy::forward(f32s(&logits), &classes(targets), vocab);
        (
            flex_tensor(vec![loss], [1]),
            flex_tensor(probs, [rows, vocab]),
        )
    }

    fn cross_entropy_backward(
        probs: FlexTensor,
        targets: FlexTensor,
        d_loss: FlexTensor,
    ) -> FlexTensor {
        let [rows, vocab] = [probs.shape()[0], probs.shape()[1]];
        let d_loss = f32s(&d_loss.to_contiguous())[0];
        let grad = cross_entropy::backward(f32s(&probs), &classes(targets), vocab, d_loss);
        flex_tensor(grad, [rows, vocab])
    }

    fn swap_first_axes(x: FlexTensor) -> FlexTensor {
        <Flex as burn::backend::ops::FloatTensorOps<Flex>>::float_swap_dims(x, 0, 1).to_contiguous()
    }

    fn affine_backward(
        x: FlexTensor,
        w: FlexTensor,
        dy: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let [rows, d_out] = [dy.shape()[0], dy.shape()[1]];
        let d_in = w.shape()[0];
        let (dx, db) = matmul_2d([&dy, &w], [false, true], Fused::SumOfRows);
        let (dw, _) = matmul_2d([&x, &dy], [true, false], Fused::Nothing);
        (
            flex_tensor(dx, [rows, d_in]),
            flex_tensor(dw, [d_in, d_out]),
            flex_tensor(db, [d_out]),
        )
    }

    fn layer_norm_affine_backward(
        x: FlexTensor,
        w: FlexTensor,
        dy: FlexTensor,
        eps: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let [x, w, dy] = [x, w, dy].map(|t| t.to_contiguous());
        let (dx, dw, db) = layer_norm::backward(f32s(&x), f32s(&w), f32s(&dy), eps as f32);
        let d = dw.len();
        (
            FlexTensor::from_data(TensorData::new(dx, x.shape())),
            flex_tensor(dw, [d]),
            flex_tensor(db, [d]),
        )
    }
}

fn head_dims(q: &FlexTensor, k: &FlexTensor) -> HeadDims {
    let [batch, n_q, heads, d_head] = dims4(q);
    HeadDims {
        batch,
        heads,
        n_q,
        n_k: k.shape()[1],
        d_head,
    }
}

/// The class indices of an integer tensor.
fn classes(targets: FlexTensor) -> Vec<usize> {
    targets
        .into_data()
        .iter::<i64>()
        .map(|t| usize::try_from(t).expect("a class index is not negative"))
        .collect()
}

/// A contiguous f32 tensor's elements.
fn f32s(x: &FlexTensor) -> &[f32] {
    x.as_slice::<f32>()
        .expect("the model's activations are contiguous f32 tensors")
}

/// `f` run in a rayon pool of `threads` threads (the kernels' tests that the bits do not depend on it).
#[cfg(test)]
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a rayon pool for the test");
    pool.install(f)
}

fn flex_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// What each of [`matmul_2d`]'s tasks does besides its gemm call.
#[derive(Clone, Copy)]
enum Fused<'a> {
    Nothing,
    /// Adds this bias [n] to every row of the product that the task wrote, while the rows are still in that
    /// core's cache.
    Bias(&'a [f32]),
    /// Sums the rows of the left operand `a` (read as stored, [m, k]): a projection's bias gradient Σ dy, from
    /// the `dy` its input gradient dy·wᵀ reads anyway. Each task sums its share of the k columns over every
    /// row, in row order from +0.0, as flex's `sum_dim(0)` does (so the same bits).
    SumOfRows,
}

/// `a · b` of two 2-D tensors, each read as stored or `transposed` (a view, as burn's matmul backward passes
/// it), by the `gemm` call flex's own matmul makes for them (so the same bits), into a buffer of our own: flex
/// zeroes a byte buffer for every product and then copies it into an aligned one, two passes over an output
/// the product overwrites anyway. Returns the product [m, n] and, under [`Fused::SumOfRows`], the sums [k].
///
/// What is [`Fused`] runs in the tasks that run gemm (products with something fused are always split into
/// blocks of rows, below), not afterwards on the calling thread alone: a bias added there was ~3 % of Markov
/// chains' step (the product plus bias at its projection's size, 3 072 × 32 × 32, 96 → 50 µs), and flex's
/// serial `sum_dim` for the bias gradient ~2 % of the thread that runs the step.
fn matmul_2d(
    [a, b]: [&FlexTensor; 2],
    transposed: [bool; 2],
    fused: Fused,
) -> (Vec<f32>, Vec<f32>) {
    let [a, b] = [a, b].map(|t| t.to_contiguous());
    // (rows, columns, row stride, column stride) of each operand as read.
    let view = |t: &FlexTensor, transposed: bool| {
        let [rows, cols] = [t.shape()[0], t.shape()[1]];
        if transposed {
            (cols, rows, 1, cols as isize)
        } else {
            (rows, cols, cols as isize, 1)
        }
    };
    let (m, k, a_rs, a_cs) = view(&a, transposed[0]);
    let (k_b, n, b_rs, b_cs) = view(&b, transposed[1]);
    assert_eq!(k, k_b, "matmul_2d: inner dimensions differ");
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let (a, b) = (f32s(&a), f32s(&b));
    // gemm splits a product over the threads only where a block of the shared axis (at most 512 long unless
    // the axis is shorter) is worth it (`gemm::get_threading_threshold` multiply-adds), and then by blocks of outputs, each
    // summed as on one thread; a product over a long shared axis with few outputs (a weight gradient
    // xᵀ·dy, [d_in, d_out] over every position) stays on one thread, so it runs here as blocks of rows, one
    // gemm call each. Either way every output is the same sum in the same order: the bits do not depend on the
    // split. (Flex's own matmul asks for threads only from 192³ up, which left the projections of the small
    // models on one core.) A product with something fused is split into blocks of rows whenever it is worth
    // threads.
    let (threads, threshold) = (
        rayon::current_num_threads(),
        gemm::get_threading_threshold(),
    );
    let fuses = !matches!(fused, Fused::Nothing);
    let split = m * n * k >= threshold && (fuses || m * n * k.min(512) < threshold);
    let rows_per_part = if split {
        m.div_ceil(threads).next_multiple_of(16)
    } else {
        m
    };
    let parts = m.div_ceil(rows_per_part.max(1)).max(1);
    // Under `Fused::SumOfRows`, task p sums columns p · cols_per_part.. of `a` (padded with empty shares so
    // that every task has one).
    let mut sums = match fused {
        Fused::SumOfRows => {
            assert!(
                !transposed[0],
                "matmul_2d: sums of the rows of a transposed view"
            );
            vec![0.0f32; k]
        }
        _ => Vec::new(),
    };
    let cols_per_part = k.div_ceil(parts).max(1);
    let mut shares: Vec<(usize, &mut [f32])> = sums
        .chunks_mut(cols_per_part)
        .enumerate()
        .map(|(p, share)| (p * cols_per_part, share))
        .collect();
    shares.resize_with(parts, || (0, &mut []));
    let parallelism = if rows_per_part < m {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    };
    let isa = Isa::detect();
    out.spare_capacity_mut()[..m * n]
        .par_chunks_mut((rows_per_part * n).max(1))
        .zip(shares)
        .enumerate()
        .for_each(|(part, (out, (c0, sums)))| {
            let (r0, rows) = (part * rows_per_part, out.len() / n.max(1));
            // SAFETY: `out` has room for these `rows` × n outputs (row-major: column stride 1, row stride
            // n), which gemm writes without reading (`read_dst` false); `a` holds m × k elements and `b`
            // k × n at the strides given, and rows r0.. of `a` start r0 · a_rs elements in.
            unsafe {
                gemm::gemm(
                    rows,
                    n,
                    k,
                    out.as_mut_ptr().cast::<f32>(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr().offset(r0 as isize * a_rs),
                    a_cs,
                    a_rs,
                    b.as_ptr(),
                    b_cs,
                    b_rs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
            match fused {
                Fused::Nothing => {}
                Fused::Bias(bias) => {
                    // SAFETY: gemm has just written every element of `out`.
                    let out = unsafe { &mut *(std::ptr::from_mut(out) as *mut [f32]) };
                    add_to_rows_on(isa, out, bias);
                }
                Fused::SumOfRows => add_rows_on(isa, a, k, c0, sums),
            }
        });
    if m * n == 0 && !sums.is_empty() {
        add_rows_serially(a, k, 0, &mut sums); // no tasks ran
    }
    // SAFETY: the parts cover every one of the m × n outputs, and each gemm call wrote all of its own.
    unsafe { out.set_len(m * n) };
    (out, sums)
}

compiled_for_isa! {
    /// [`add_to_rows_serially`] compiled for `isa`.
    fn add_to_rows_on(y: &mut [f32], b: &[f32]) => add_to_rows_serially
}

/// Adds `b` to every row of `y` [rows, b.len()].
#[inline(always)]
fn add_to_rows_serially(y: &mut [f32], b: &[f32]) {
    for row in y.chunks_exact_mut(b.len().max(1)) {
        for (y, &b) in row.iter_mut().zip(b) {
            *y += b;
        }
    }
}

compiled_for_isa! {
    /// [`add_rows_serially`] compiled for `isa`.
    fn add_rows_on(a: &[f32], k: usize, c0: usize, sums: &mut [f32]) => add_rows_serially
}

/// Adds columns `c0..c0 + sums.len()` of every row of `a` [rows, k] to `sums`, row by row: each block of 16
/// columns kept in a register over all the rows, then the columns left over.
#[inline(always)]
fn add_rows_serially(a: &[f32], k: usize, c0: usize, sums: &mut [f32]) {
    const W: usize = 16;
    if sums.is_empty() {
        return;
    }
    let (sums_len, full) = (sums.len(), sums.len() / W * W);
    let (blocks, rest) = sums.split_at_mut(full);
    for (b, block) in blocks.chunks_exact_mut(W).enumerate() {
        let c = c0 + b * W;
        let mut acc: [f32; W] = (&*block).try_into().expect("a block of W columns");
        for row in a.chunks_exact(k) {
            let x: &[f32; W] = row[c..c + W].try_into().expect("a block of W columns");
            for (acc, &x) in acc.iter_mut().zip(x) {
                *acc += x;
            }
        }
        block.copy_from_slice(&acc);
    }
    let columns = c0 + full..c0 + sums_len;
    for row in a.chunks_exact(k) {
        for (sum, &x) in rest.iter_mut().zip(&row[columns.clone()]) {
            *sum += x;
        }
    }
}

#[cfg(feature = "cuda")]
impl ModelKernels for burn::backend::Cube {}

impl<B: Backend + ModelKernels, C: CheckpointStrategy> ModelKernels for Autodiff<B, C> {
    fn attention_heads(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        hidden: BoolTensor<Self>,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        /// One node for `z`; the pattern leaves the graph (no loss is taken through it).
        #[derive(Debug)]
        struct AttentionHeads;

        impl<B: Backend + ModelKernels> Backward<B, 3> for AttentionHeads {
            /// The forward's inputs, its pattern and the scale.
            type State = (
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                f64,
            );

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                backward_step::<B, _, 3>(ops, grads, |(q, k, v, pattern, scale), dz| {
                    let (dq, dk, dv) = B::attention_heads_backward(q, k, v, pattern, dz, scale);
                    [dq, dk, dv]
                });
            }
        }

        let nodes = [q.node(), k.node(), v.node()];
        let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
        let (pattern, z) = B::attention_heads(q.clone(), k.clone(), v.clone(), hidden, scale);
        let z = match AttentionHeads
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((q, k, v, pattern.clone(), scale), z),
            OpsKind::UnTracked(prep) => prep.finish(z),
        };
        (Self::from_inner(pattern), z)
    }

    fn affine(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        /// One node for the product and the bias, where burn records two.
        #[derive(Debug)]
        struct Affine;

        impl<B: Backend + ModelKernels> Backward<B, 3> for Affine {
            /// The input and the weights.
            type State = (FloatTensor<B>, FloatTensor<B>);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                backward_step::<B, _, 3>(ops, grads, |(x, w), dy| {
                    let (dx, dw, db) = B::affine_backward(x, w, dy);
                    [dx, dw, db]
                });
            }
        }

        let nodes = [x.node(), w.node(), b.node()];
        let (x, w, b) = (x.into_primitive(), w.into_primitive(), b.into_primitive());
        let y = B::affine(x.clone(), w.clone(), b);
        match Affine.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, w), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        /// One node for the loss, where burn records nine; the softmax leaves the graph.
        #[derive(Debug)]
        struct CrossEntropy;

        impl<B: Backend + ModelKernels> Backward<B, 1> for CrossEntropy {
            /// The softmax and the targets.
            type State = (FloatTensor<B>, IntTensor<B>);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                backward_step::<B, _, 1>(ops, grads, |(probs, targets), d_loss| {
                    [B::cross_entropy_backward(probs, targets, d_loss)]
                });
            }
        }

        let nodes = [logits.node()];
        let (loss, probs) = B::cross_entropy(logits.into_primitive(), targets.clone());
        let loss = match CrossEntropy.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((probs.clone(), targets), loss),
            OpsKind::UnTracked(prep) => prep.finish(loss),
        };
        (loss, Self::from_inner(probs))
    }

    fn swap_first_axes(x: FloatTensor<Self>) -> FloatTensor<Self> {
        /// The swap, whose gradient is the swap of the output's.
        #[derive(Debug)]
        struct SwapFirstAxes;

        impl<B: Backend + ModelKernels> Backward<B, 1> for SwapFirstAxes {
            type State = ();

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                backward_step::<B, _, 1>(ops, grads, |(), dy| [B::swap_first_axes(dy)]);
            }
        }

        let nodes = [x.node()];
        let y = B::swap_first_axes(x.into_primitive());
        match SwapFirstAxes.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    fn layer_norm_affine(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        /// One node for the whole LayerNorm, where burn records nine (mean, sub, square, mean, add, sqrt,
        /// div, mul, add).
        #[derive(Debug)]
        struct LayerNormAffine;

        impl<B: Backend + ModelKernels> Backward<B, 3> for LayerNormAffine {
            /// The input, the scale and eps.
            type State = (FloatTensor<B>, FloatTensor<B>, f64);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                backward_step::<B, _, 3>(ops, grads, |(x, w, eps), dy| {
                    let (dx, dw, db) = B::layer_norm_affine_backward(x, w, dy, eps);
                    [dx, dw, db]
                });
            }
        }

        let nodes = [x.node(), w.node(), b.node()];
        let (x, w, b) = (x.into_primitive(), w.into_primitive(), b.into_primitive());
        let y = B::layer_norm_affine(x.clone(), w.clone(), b, eps);
        match LayerNormAffine
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x, w, eps), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// The backward step of one of the nodes above: the `gradients` of its inputs from its saved state and the
/// gradient of its output, each handed to the parent that takes one.
fn backward_step<B: Backend, S, const N: usize>(
    ops: Ops<S, N>,
    grads: &mut Gradients,
    gradients: impl FnOnce(S, FloatTensor<B>) -> [FloatTensor<B>; N],
) {
    let d_output = grads.consume::<B>(&ops.node);
    for (parent, grad) in ops.parents.into_iter().zip(gradients(ops.state, d_output)) {
        if let Some(node) = parent {
            grads.register::<B>(node.id, grad);
        }
    }
}

/// Multi-head attention (see [`ModelKernels::attention_heads`]): `q` [batch, q, head, d_head], `k`, `v`
/// [batch, k, head, d_head], `hidden` [q, k] → (`pattern` [batch, head, q, k], `z` [batch, q, head, d_head]).
pub fn attention_heads(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    hidden: Tensor<2, Bool>,
    scale: f64,
) -> (Tensor<4>, Tensor<4>) {
    let (pattern, z) = <burn::backend::Dispatch as ModelKernels>::attention_heads(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        hidden.into_dispatch(),
        scale,
    );
    (Tensor::from_dispatch(pattern), Tensor::from_dispatch(z))
}

/// `x` [rows, d_in] · `w` [d_in, d_out] + `b` [d_out] → [rows, d_out] (see [`ModelKernels::affine`]).
pub fn affine(x: Tensor<2>, w: Tensor<2>, b: Tensor<1>) -> Tensor<2> {
    Tensor::from_dispatch(<burn::backend::Dispatch as ModelKernels>::affine(
        x.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// Mean cross-entropy of `logits` [rows, vocab] against the classes `targets` [rows] → [1] (see
/// [`ModelKernels::cross_entropy`]).
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let (loss, _) = <burn::backend::Dispatch as ModelKernels>::cross_entropy(
        logits.into_dispatch(),
        targets.into_dispatch(),
    );
    Tensor::from_dispatch(loss)
}

/// `x` [a, b, c] → [b, a, c] (see [`ModelKernels::swap_first_axes`]).
pub fn swap_first_axes(x: Tensor<3>) -> Tensor<3> {
    Tensor::from_dispatch(<burn::backend::Dispatch as ModelKernels>::swap_first_axes(
        x.into_dispatch(),
    ))
}

/// TransformerLens's `LayerNorm` (see [`ModelKernels::layer_norm_affine`]): `x` [batch, pos, d_model], `w`, `b`
/// [d_model] → [batch, pos, d_model].
pub fn layer_norm(x: Tensor<3>, w: Tensor<1>, b: Tensor<1>, eps: f64) -> Tensor<3> {
    Tensor::from_dispatch(
        <burn::backend::Dispatch as ModelKernels>::layer_norm_affine(
            x.into_dispatch(),
            w.into_dispatch(),
            b.into_dispatch(),
            eps,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;
    use burn::tensor::activation::softmax;

    /// burn's own composition, in TransformerLens's order: scores, mask, softmax, pattern · v.
    fn composed(
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        hidden: Tensor<2, Bool>,
    ) -> (Tensor<4>, Tensor<4>) {
        let [batch, n_q, heads, d_head] = q.dims();
        let n_k = k.dims()[1];
        let (q, k, v) = (q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2));
        let scores = q.matmul(k.swap_dims(2, 3)) / (d_head as f64).sqrt();
        let hidden = hidden.unsqueeze::<4>().expand([batch, heads, n_q, n_k]);
        let pattern = softmax(scores.mask_fill(hidden, f32::NEG_INFINITY), 3);
        let z = pattern.clone().matmul(v).swap_dims(1, 2);
        (pattern, z)
    }

    /// Distinct values in [−1.5, 1.5) from a fixed sequence.
    fn values(shape: [usize; 4], salt: u64, device: &Device) -> Tensor<4> {
        let mut rng = host::rng::SplitMix64::new(salt);
        let n = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| (rng.uniform() * 3.0 - 1.5) as f32).collect();
        Tensor::from_data(TensorData::new(data, shape), device)
    }

    /// Every query under the causal mask, or queries at positions 1 and 3 of four keys (as the training
    /// forward's answer rows).
    fn cases(device: &Device) -> Vec<(usize, Tensor<2, Bool>)> {
        let answers = [false, false, true, true, false, false, false, false];
        vec![
            (4, Tensor::<2, Bool>::tril_mask([4, 4], 0, device)),
            (
                2,
                Tensor::from_data(TensorData::new(answers.to_vec(), [2, 4]), device),
            ),
        ]
    }

    #[test]
    fn one_head_by_hand() {
        // q = [1, 2], k = [0, 1], v = [3, 5], d_head 1 (scale 1), causal. Row 0 sees key 0 only: p = [1, 0],
        // z = 3. Row 1: scores [0, 2], p = [1, e²] / (1 + e²) = [0.1192, 0.8808], z = 3·0.1192 + 5·0.8808.
        let device = Device::flex();
        let t = |v: [f32; 2]| {
            Tensor::<4>::from_data(TensorData::new(v.to_vec(), [1, 2, 1, 1]), &device)
        };
        let hidden = Tensor::<2, Bool>::tril_mask([2, 2], 0, &device);
        let (pattern, z) =
            attention_heads(t([1.0, 2.0]), t([0.0, 1.0]), t([3.0, 5.0]), hidden, 1.0);
        let p1 = 1.0 / (1.0 + 2f32.exp());
        let pattern = pattern.into_data().try_into_vec_as::<f32>().unwrap();
        assert_eq!(pattern[..2], [1.0, 0.0]);
        assert!((pattern[2] - p1).abs() < 1e-6 && (pattern[3] - (1.0 - p1)).abs() < 1e-6);
        let z = z.into_data().try_into_vec_as::<f32>().unwrap();
        assert!((z[0] - 3.0).abs() < 1e-6 && (z[1] - (3.0 * p1 + 5.0 * (1.0 - p1))).abs() < 1e-5);
    }

    #[test]
    fn forward_is_burns_composition() {
        let device = Device::flex();
        for (n_q, hidden) in cases(&device) {
            let q = values([3, n_q, 2, 5], 1, &device);
            let (k, v) = (
                values([3, 4, 2, 5], 2, &device),
                values([3, 4, 2, 5], 3, &device),
            );
            let scale = 1.0 / 5f64.sqrt();
            let (pattern, z) =
                attention_heads(q.clone(), k.clone(), v.clone(), hidden.clone(), scale);
            let (want_pattern, want_z) = composed(q, k, v, hidden.clone());
            let tolerance = Tolerance::absolute(1e-6);
            pattern
                .clone()
                .into_data()
                .assert_approx_eq::<f32>(&want_pattern.into_data(), tolerance);
            z.into_data()
                .assert_approx_eq::<f32>(&want_z.into_data(), tolerance);
            // A masked key gets exactly zero.
            let hidden = hidden.unsqueeze::<4>().expand([3, 2, n_q, 4]);
            let masked: f32 = pattern
                .mask_fill(hidden.bool_not(), 0.0)
                .abs()
                .max()
                .into_scalar();
            assert_eq!(masked, 0.0);
        }
    }

    #[test]
    fn same_bits_on_one_thread_and_on_three() {
        // Each task's rows are fixed and summed in a fixed order, so the pool's size cannot change a bit.
        let run = |threads: usize| {
            on_threads(threads, || {
                let device = Device::flex().autodiff();
                let q = values([7, 4, 2, 5], 1, &device).require_grad();
                let (k, v) = (
                    values([7, 4, 2, 5], 2, &device),
                    values([7, 4, 2, 5], 3, &device),
                );
                let hidden = Tensor::<2, Bool>::tril_mask([4, 4], 0, &device);
                let (pattern, z) = attention_heads(q.clone(), k, v, hidden, 0.5);
                let grads = (z.clone() * values([7, 4, 2, 5], 4, &device))
                    .sum()
                    .backward();
                // LayerNorm over 150 rows: three chunks of partial sums for dw.
                let x = values([3, 50, 8, 1], 5, &device)
                    .reshape([3, 50, 8])
                    .require_grad();
                let w = values([1, 1, 1, 8], 6, &device).reshape([8]).require_grad();
                let b = Tensor::<1>::zeros([8], &device);
                let y = layer_norm(x.clone(), w.clone(), b, 1e-5);
                let ln_grads = (y * values([3, 50, 8, 1], 7, &device).reshape([3, 50, 8]))
                    .sum()
                    .backward();
                let dw = w.grad(&ln_grads).unwrap().reshape([1, 1, 1, 8]);
                let dx = x.grad(&ln_grads).unwrap().reshape([3, 50, 8, 1]);
                [pattern, z, q.grad(&grads).unwrap(), dx, dw]
                    .map(|t| t.into_data().try_into_vec_as::<f32>().unwrap())
            })
        };
        assert_eq!(run(1), run(3));
    }

    /// TransformerLens's LayerNorm as burn composes it (the model's code before the fused op).
    fn layer_norm_composed(x: Tensor<3>, w: Tensor<1>, b: Tensor<1>) -> Tensor<3> {
        let centred = x.clone() - x.mean_dim(2);
        let scale = (centred.clone().square().mean_dim(2) + 1e-5).sqrt();
        centred / scale * w.unsqueeze() + b.unsqueeze()
    }

    #[test]
    fn layer_norm_row_by_hand() {
        // x = [1, 2, 3, 6]: mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5; w = 2, b = 1:
        // y = 2 (x − 3) / √(3.5 + 1e-5) + 1.
        let device = Device::flex();
        let x = Tensor::<3>::from_floats([[[1.0, 2.0, 3.0, 6.0]]], &device);
        let (w, b) = (
            Tensor::<1>::full([4], 2.0, &device),
            Tensor::<1>::ones([4], &device),
        );
        let y = layer_norm(x, w, b, 1e-5)
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        let sd = (3.5f64 + 1e-5).sqrt();
        for (y, x) in y.iter().zip([1.0, 2.0, 3.0, 6.0]) {
            assert!((*y as f64 - (2.0 * (x - 3.0) / sd + 1.0)).abs() < 1e-5);
        }
    }

    /// The projection and its three gradients have the bits of burn's matmul + broadcast add: on a small
    /// product, on one that gemm splits over the threads where flex's matmul does not (so the split changes no
    /// bit), on one whose weight gradient we split by rows, on one both split, and on one whose shared axis is
    /// longer than gemm's block of it (each block of rows, with its bias, still summed as gemm sums it whole).
    #[test]
    fn affine_and_its_gradient_are_burns_bit_for_bit() {
        let device = Device::flex().autodiff();
        let shapes = [
            [6, 5, 3],
            [1000, 40, 40],
            [3072, 32, 32],
            [600, 130, 100],
            [1100, 530, 24],
            [5000, 200, 1],
        ];
        for [rows, d_in, d_out] in shapes {
            let matrix = |r, c, salt| values([1, 1, r, c], salt, &device).reshape([r, c]);
            let weights = matrix(rows, d_out, 4);
            let run = |ours: bool| {
                let x = matrix(rows, d_in, 1).require_grad();
                let w = matrix(d_in, d_out, 2).require_grad();
                let b = matrix(1, d_out, 3).reshape([d_out]).require_grad();
                let y = if ours {
                    affine(x.clone(), w.clone(), b.clone())
                } else {
                    x.clone().matmul(w.clone()) + b.clone().unsqueeze()
                };
                let grads = (y.clone() * weights.clone()).sum().backward();
                [
                    y.into_data(),
                    x.grad(&grads).unwrap().into_data(),
                    w.grad(&grads).unwrap().into_data(),
                    b.grad(&grads).unwrap().into_data(),
                ]
                .map(|data| {
                    data.try_to_vec::<f32>()
                        .unwrap()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>()
                })
            };
            assert_eq!(run(true), run(false), "{rows}×{d_in}·{d_in}×{d_out}");
        }
    }

    #[test]
    fn layer_norm_and_its_gradient_are_burns() {
        let device = Device::flex().autodiff();
        let shape = [3, 5, 8];
        let flat = |salt| values([1, 1, 1, 8], salt, &device).reshape([8]);
        let weights = values([3, 5, 8, 1], 9, &device).reshape(shape);
        let run = |ours: bool| {
            let x = values([3, 5, 8, 1], 6, &device)
                .reshape(shape)
                .require_grad();
            let (w, b) = (flat(7).require_grad(), flat(8).require_grad());
            let y = if ours {
                layer_norm(x.clone(), w.clone(), b.clone(), 1e-5)
            } else {
                layer_norm_composed(x.clone(), w.clone(), b.clone())
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            [
                y.into_data(),
                x.grad(&grads).unwrap().into_data(),
                w.grad(&grads).unwrap().into_data(),
                b.grad(&grads).unwrap().into_data(),
            ]
        };
        for (ours, theirs) in run(true).iter().zip(run(false)) {
            ours.assert_approx_eq::<f32>(&theirs, Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn cross_entropy_and_its_gradient_are_burns() {
        // burn's composition (log-softmax, gather, mean), as the model took the loss before; a loss scaled by
        // 3 so that the incoming gradient is not 1.
        let device = Device::flex().autodiff();
        for [rows, vocab] in [[7, 3], [300, 113], [2, 1]] {
            let targets: Vec<i64> = (0..rows).map(|r| ((r * 5) % vocab) as i64).collect();
            let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [rows]), &device);
            let run = |ours: bool| {
                let logits = values([1, 1, rows, vocab], 5, &device)
                    .reshape([rows, vocab])
                    .mul_scalar(4.0)
                    .require_grad();
                let loss = if ours {
                    cross_entropy(logits.clone(), targets.clone())
                } else {
                    burn::tensor::activation::log_softmax(logits.clone(), 1)
                        .gather(1, targets.clone().unsqueeze_dim(1))
                        .mean()
                        .neg()
                };
                let grads = loss.clone().mul_scalar(3.0).sum().backward();
                [loss.into_data(), logits.grad(&grads).unwrap().into_data()]
            };
            for (ours, theirs) in run(true).iter().zip(run(false)) {
                ours.assert_approx_eq::<f32>(&theirs, Tolerance::absolute(1e-6));
            }
        }
    }

    #[test]
    fn gradient_is_burns_gradient() {
        // The loss Σ w ⊙ z, with weights that make every gradient entry differ.
        let device = Device::flex().autodiff();
        for (n_q, hidden) in cases(&device) {
            let weights = values([3, n_q, 2, 5], 4, &device);
            let gradients = |ours: bool| {
                let q = values([3, n_q, 2, 5], 1, &device).require_grad();
                let k = values([3, 4, 2, 5], 2, &device).require_grad();
                let v = values([3, 4, 2, 5], 3, &device).require_grad();
                let (_, z) = if ours {
                    attention_heads(
                        q.clone(),
                        k.clone(),
                        v.clone(),
                        hidden.clone(),
                        1.0 / 5f64.sqrt(),
                    )
                } else {
                    composed(q.clone(), k.clone(), v.clone(), hidden.clone())
                };
                let grads = (z * weights.clone()).sum().backward();
                [q, k, v].map(|x| x.grad(&grads).unwrap().into_data())
            };
            for (ours, theirs) in gradients(true).iter().zip(gradients(false)) {
                ours.assert_approx_eq::<f32>(&theirs, Tolerance::absolute(1e-5));
            }
        }
    }
}
