//! The attention softmax as a burn backend extension: each backend's own fused softmax forward, and on autodiff
//! devices one backward node with the analytic gradient, where burn's generic softmax records five (max, sub,
//! exp, sum, div) and runs each one's backward. This is the one file besides `src/device.rs` that names
//! backends: an extension is implemented per backend.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;

/// Operations the model needs faster than burn composes them.
#[backend_extension(Flex, Autodiff, Cube: cfg(feature = "cuda"))]
pub trait ModelKernels: Backend {
    /// Softmax over the last axis: p_i = exp(x_i − max x) / Σ_j exp(x_j − max x).
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let last = x.shape().num_dims() - 1;
        Self::softmax(x, last)
    }
}

/// flex's softmax is one pass per row with vectorized `exp`.
impl ModelKernels for Flex {}

#[cfg(feature = "cuda")]
impl ModelKernels for burn::backend::Cube {}

impl<B: Backend + ModelKernels, C: CheckpointStrategy> ModelKernels for Autodiff<B, C> {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        /// The softmax Jacobian applied to the output gradient g: ∂L/∂x = p ⊙ (g − Σ_j g_j p_j).
        #[derive(Debug)]
        struct SoftmaxLast;

        impl<B: Backend> Backward<B, 1> for SoftmaxLast {
            /// The forward's output p.
            type State = FloatTensor<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let p = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    let last = p.shape().num_dims() - 1;
                    let dot = B::float_sum_dim(B::float_mul(grad.clone(), p.clone()), last);
                    B::float_mul(p, B::float_sub(grad, dot))
                });
            }
        }

        let node = x.node();
        let p = B::softmax_last(x.into_primitive());
        match SoftmaxLast.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(p.clone(), p),
            OpsKind::UnTracked(prep) => prep.finish(p),
        }
    }
}

/// Softmax of `x` over its last axis (the attention pattern from masked scores).
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<burn::backend::Dispatch as ModelKernels>::softmax_last(
        x.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::softmax;

    /// Rows with a masked (−∞) key, as the causal pattern has.
    fn scores(device: &Device) -> Tensor<2> {
        Tensor::from_floats(
            [[0.5, -1.0, 2.0, f32::NEG_INFINITY], [3.0, 0.0, -2.0, 1.0]],
            device,
        )
    }

    #[test]
    fn forward_is_burns_softmax() {
        let device = Device::flex();
        let ours = softmax_last(scores(&device)).into_data();
        let theirs = softmax(scores(&device), 1).into_data();
        ours.assert_approx_eq::<f32>(&theirs, burn::tensor::Tolerance::absolute(1e-6));
        // A masked key gets exactly zero.
        assert_eq!(ours.clone().try_into_vec_as::<f32>().unwrap()[3], 0.0);
    }

    #[test]
    fn gradient_is_burns_softmax_gradient() {
        // The loss Σ w ⊙ softmax(x), with weights that make every gradient entry differ.
        let device = Device::flex().autodiff();
        let weights =
            Tensor::<2>::from_floats([[1.0, -2.0, 0.5, 3.0], [0.0, 1.5, -1.0, 2.0]], &device);
        let gradient = |ours: bool| {
            let x = scores(&device).require_grad();
            let p = if ours {
                softmax_last(x.clone())
            } else {
                softmax(x.clone(), 1)
            };
            let grads = (p * weights.clone()).sum().backward();
            x.grad(&grads).unwrap().into_data()
        };
        let (ours, theirs) = (gradient(true), gradient(false));
        ours.assert_approx_eq::<f32>(&theirs, burn::tensor::Tolerance::absolute(1e-6));
        // Row 1 by hand: p = softmax([3, 0, −2, 1]), ∂/∂x_i = p_i (w_i − Σ_j w_j p_j).
        let x = [3.0f64, 0.0, -2.0, 1.0];
        let w = [0.0, 1.5, -1.0, 2.0];
        let z: f64 = x.iter().map(|v| v.exp()).sum();
        let p: Vec<f64> = x.iter().map(|v| v.exp() / z).collect();
        let mean: f64 = p.iter().zip(w).map(|(p, w)| p * w).sum();
        let ours = ours.clone().try_into_vec_as::<f32>().unwrap();
        for i in 0..4 {
            assert!((ours[4 + i] as f64 - p[i] * (w[i] - mean)).abs() < 1e-6);
        }
    }
}
