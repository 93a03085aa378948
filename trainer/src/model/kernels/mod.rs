//! Multi-head attention as a burn backend extension: the scores, the causal softmax and the weighted sum of
//! values in one operation, and on autodiff devices one backward node for all three, where burn composes
//! about a dozen operations (matrix products, scaling, mask, softmax's five) and records each one's backward.
//! On the flex CPU backend both run as loops over host slices ([`heads`]), one task per batch row; other
//! backends compose burn's own operations. This is the one file besides `src/device.rs` that names backends:
//! an extension is implemented per backend.

mod heads;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{BoolTensor, FloatTensor};
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Flex, Scalar, TensorMetadata, backend_extension,
};
use burn::prelude::*;
use heads::HeadDims;

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

/// A contiguous f32 tensor's elements.
fn f32s(x: &FlexTensor) -> &[f32] {
    x.as_slice::<f32>()
        .expect("the model's activations are contiguous f32 tensors")
}

fn flex_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
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
                let dz = grads.consume::<B>(&ops.node);
                let (q, k, v, pattern, scale) = ops.state;
                let (dq, dk, dv) = B::attention_heads_backward(q, k, v, pattern, dz, scale);
                for (parent, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
                    if let Some(node) = parent {
                        grads.register::<B>(node.id, grad);
                    }
                }
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
        // Each batch row is one task summed in a fixed order, so the pool's size cannot change a bit.
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
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
                [pattern, z, q.grad(&grads).unwrap()]
                    .map(|t| t.into_data().try_into_vec_as::<f32>().unwrap())
            })
        };
        assert_eq!(run(1), run(3));
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
