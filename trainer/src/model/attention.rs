//! Multi-head causal self-attention with TransformerLens parameters (`W_Q` [head, d_model, d_head], …).
#![allow(non_snake_case)]

use burn::module::Param;
use burn::prelude::*;

use super::init;
use super::kernels::{affine, attention_heads, swap_first_axes};
use host::rng::SplitMix64;

#[derive(Module, Debug)]
pub struct Attention {
    /// [head, d_model, d_head]
    pub W_Q: Param<Tensor<3>>,
    pub W_K: Param<Tensor<3>>,
    pub W_V: Param<Tensor<3>>,
    /// [head, d_head, d_model]
    pub W_O: Param<Tensor<3>>,
    /// [head, d_head]
    pub b_Q: Param<Tensor<2>>,
    pub b_K: Param<Tensor<2>>,
    pub b_V: Param<Tensor<2>>,
    /// [d_model]
    pub b_O: Param<Tensor<1>>,
}

/// What one attention layer computes, with TransformerLens shapes.
pub struct AttentionActs {
    /// `hook_pattern` [batch, head, q, k]
    pub pattern: Tensor<4>,
    /// `hook_z` [batch, q, head, d_head]
    pub z: Tensor<4>,
    /// `hook_attn_out` [batch, q, d_model]
    pub out: Tensor<3>,
}

impl AttentionActs {
    /// The activations of the first `len` query positions.
    pub fn first_queries(self, len: usize) -> Self {
        Self {
            pattern: self.pattern.narrow(2, 0, len),
            z: self.z.narrow(1, 0, len),
            out: self.out.narrow(1, 0, len),
        }
    }
}

impl Attention {
    pub fn new(
        rng: &mut SplitMix64,
        d_model: usize,
        n_heads: usize,
        d_head: usize,
        std: f64,
        device: &Device,
    ) -> Self {
        Self {
            W_Q: init::normal(rng, [n_heads, d_model, d_head], std, device),
            W_K: init::normal(rng, [n_heads, d_model, d_head], std, device),
            W_V: init::normal(rng, [n_heads, d_model, d_head], std, device),
            W_O: init::normal(rng, [n_heads, d_head, d_model], std, device),
            b_Q: init::constant([n_heads, d_head], 0.0, device),
            b_K: init::constant([n_heads, d_head], 0.0, device),
            b_V: init::constant([n_heads, d_head], 0.0, device),
            b_O: init::constant([d_model], 0.0, device),
        }
    }

    /// Queries from `x_q` [batch, q, d_model] attend over `x_kv` [batch, k, d_model]; `mask` [q, k] is true
    /// where a key must be hidden (the future of that query).
    pub fn forward(&self, x_q: Tensor<3>, x_kv: Tensor<3>, mask: Tensor<2, Bool>) -> AttentionActs {
        self.forward_qkv(x_q, x_kv.clone(), x_kv, mask)
    }

    /// As [`Attention::forward`], with the keys and the values read from separate inputs `x_k`, `x_v`
    /// [batch, k, d_model] (path patching feeds one of them a different residual stream).
    pub fn forward_qkv(
        &self,
        x_q: Tensor<3>,
        x_k: Tensor<3>,
        x_v: Tensor<3>,
        mask: Tensor<2, Bool>,
    ) -> AttentionActs {
        let [batch, n_q, d_model] = x_q.dims();
        let [n_heads, _, d_head] = self.W_Q.dims();
        let q = project(x_q, &self.W_Q, &self.b_Q); // [batch, q, head, d_head]
        let k = project(x_k, &self.W_K, &self.b_K); // [batch, k, head, d_head]
        let v = project(x_v, &self.W_V, &self.b_V); // [batch, k, head, d_head]
        // pattern [batch, head, q, k], z [batch, q, head, d_head]
        let (pattern, z) = attention_heads(q, k, v, mask, 1.0 / (d_head as f64).sqrt());
        let w_o = self.W_O.val().reshape([n_heads * d_head, d_model]);
        let out = affine(
            z.clone().reshape([batch * n_q, n_heads * d_head]),
            w_o,
            self.b_O.val(),
        );
        AttentionActs {
            pattern,
            z,
            out: out.reshape([batch, n_q, d_model]),
        }
    }
}

/// `x` [batch, pos, d_model] · `w` [head, d_model, d_head] + `b` [head, d_head] → [batch, pos, head, d_head],
/// as one matrix product over all heads.
fn project(x: Tensor<3>, w: &Param<Tensor<3>>, b: &Param<Tensor<2>>) -> Tensor<4> {
    let [batch, pos, d_model] = x.dims();
    let [n_heads, _, d_head] = w.dims();
    let w = swap_first_axes(w.val()).reshape([d_model, n_heads * d_head]);
    let y = affine(
        x.reshape([batch * pos, d_model]),
        w,
        b.val().reshape([n_heads * d_head]),
    );
    y.reshape([batch, pos, n_heads, d_head])
}
