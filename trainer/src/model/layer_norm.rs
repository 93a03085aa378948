//! LayerNorm as TransformerLens `LayerNorm` (`w`, `b`, eps 1e-5): centre, divide by the root mean square, scale.

use burn::module::Param;
use burn::prelude::*;

use super::{init, kernels};

pub const EPS: f64 = 1e-5;

#[derive(Module, Debug)]
pub struct LayerNorm {
    pub w: Param<Tensor<1>>,
    pub b: Param<Tensor<1>>,
}

impl LayerNorm {
    pub fn new(d_model: usize, device: &Device) -> Self {
        Self {
            w: init::constant([d_model], 1.0, device),
            b: init::constant([d_model], 0.0, device),
        }
    }

    /// [batch, pos, d_model] → same shape.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        kernels::layer_norm(x, self.w.val(), self.b.val(), EPS)
    }
}

/// Applies an optional LayerNorm (identity when the model has none).
pub fn maybe(ln: &Option<LayerNorm>, x: Tensor<3>) -> Tensor<3> {
    match ln {
        Some(ln) => ln.forward(x),
        None => x,
    }
}
