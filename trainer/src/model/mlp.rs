//! The MLP block with TransformerLens parameters (`W_in` [d_model, d_mlp], `W_out` [d_mlp, d_model]).
#![allow(non_snake_case)]

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::{gelu, relu};

use super::init;
use super::kernels::affine;
use crate::config::Activation;
use host::rng::SplitMix64;

#[derive(Module, Debug)]
pub struct Mlp {
    pub W_in: Param<Tensor<2>>,
    pub b_in: Param<Tensor<1>>,
    pub W_out: Param<Tensor<2>>,
    pub b_out: Param<Tensor<1>>,
}

impl Mlp {
    pub fn new(
        rng: &mut SplitMix64,
        d_model: usize,
        d_mlp: usize,
        std: f64,
        device: &Device,
    ) -> Self {
        Self {
            W_in: init::normal(rng, [d_model, d_mlp], std, device),
            b_in: init::constant([d_mlp], 0.0, device),
            W_out: init::normal(rng, [d_mlp, d_model], std, device),
            b_out: init::constant([d_model], 0.0, device),
        }
    }

    /// `x` [batch, pos, d_model] → (`mlp.hook_post` [batch, pos, d_mlp], `hook_mlp_out` [batch, pos, d_model]).
    pub fn forward(&self, x: Tensor<3>, act_fn: Activation) -> (Tensor<3>, Tensor<3>) {
        let [batch, pos, d_model] = x.dims();
        let d_mlp = self.b_in.dims()[0];
        let pre = affine(
            x.reshape([batch * pos, d_model]),
            self.W_in.val(),
            self.b_in.val(),
        );
        let post = match act_fn {
            Activation::Relu => relu(pre),
            Activation::Gelu => gelu(pre),
        };
        let out = affine(post.clone(), self.W_out.val(), self.b_out.val());
        (
            post.reshape([batch, pos, d_mlp]),
            out.reshape([batch, pos, d_model]),
        )
    }
}
