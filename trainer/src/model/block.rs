//! One transformer block: attention then (unless attention-only) MLP, each added to the residual stream.

use burn::prelude::*;

use super::attention::Attention;
use super::layer_norm::{self, LayerNorm};
use super::mlp::Mlp;
use crate::config::Activation;

#[derive(Module, Debug)]
pub struct Block {
    pub ln1: Option<LayerNorm>,
    pub attn: Attention,
    pub ln2: Option<LayerNorm>,
    pub mlp: Option<Mlp>,
}

/// Which query positions a block computes.
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // built once per run, never in a hot collection
pub enum Queries {
    /// Every position, under the causal mask.
    All,
    /// Only `positions` [q] (keys and values still come from every position); `mask` [q, k] hides each
    /// query's future.
    At {
        positions: Tensor<1, Int>,
        mask: Tensor<2, Bool>,
    },
    /// The first `len` positions, under the causal mask (a next-token task that answers at all but the last).
    /// The attention runs as under [`Queries::All`] and its outputs are cut after `len` before the MLP: no rows
    /// selected, and the attention's shapes stay whole (cutting its input as well, so that keys and values
    /// skip the last positions too, was 10 % slower on an AVX2 CPU: leftover key columns and the cut's
    /// gradient scattered back). The pattern is [batch, head, len, pos], keys from every position, as under
    /// [`Queries::At`].
    Prefix(usize),
}

/// `x` [batch, pos, …] at `positions` [n] of its second axis → [batch, n, …]: `x.select(1, positions)` bit for
/// bit, taken as rows of `x` [batch · pos, …]. Flex selects (and adds a selection's gradient) along the first
/// axis of a matrix row by row, along the second of three axes element by element through an index
/// decomposition: induction's selections at its answers took 3.8 % of the step's thread that way. Each row of
/// the gradient is one selected row's plus zeros, in either order, so the bits do not change.
pub fn select_positions<const D: usize>(x: Tensor<D>, positions: &Tensor<1, Int>) -> Tensor<D> {
    let dims = x.dims();
    let [batch, pos, n] = [dims[0], dims[1], positions.dims()[0]];
    let starts = Tensor::<1, Int>::arange(0..batch as i64, &x.device()).mul_scalar(pos as i64);
    let rows = starts.unsqueeze_dim::<2>(1).expand([batch, n])
        + positions.clone().unsqueeze::<2>().expand([batch, n]);
    let mut out = dims;
    out[1] = n;
    x.reshape([batch * pos, dims[2..].iter().product()])
        .select(0, rows.reshape([batch * n]))
        .reshape(out)
}

/// Every activation of one block, TransformerLens shapes; `pos` is the number of query positions computed.
#[derive(Clone)]
pub struct BlockActs {
    /// [batch, pos, d_model] (all positions, whatever the queries)
    pub resid_pre: Tensor<3>,
    pub pattern: Tensor<4>,
    pub z: Tensor<4>,
    pub attn_out: Tensor<3>,
    pub resid_mid: Tensor<3>,
    pub mlp_post: Option<Tensor<3>>,
    pub mlp_out: Option<Tensor<3>>,
    pub resid_post: Tensor<3>,
}

impl BlockActs {
    /// The activations of the first `len` query positions (`resid_pre` stays whole).
    pub fn first_queries(self, len: usize) -> Self {
        let cut = |x: Tensor<3>| x.narrow(1, 0, len);
        Self {
            resid_pre: self.resid_pre,
            pattern: self.pattern.narrow(2, 0, len),
            z: self.z.narrow(1, 0, len),
            attn_out: cut(self.attn_out),
            resid_mid: cut(self.resid_mid),
            mlp_post: self.mlp_post.map(cut),
            mlp_out: self.mlp_out.map(cut),
            resid_post: cut(self.resid_post),
        }
    }
}

impl Block {
    /// `resid_pre` [batch, pos, d_model] → this block's activations.
    pub fn forward(
        &self,
        resid_pre: Tensor<3>,
        queries: &Queries,
        act_fn: Activation,
    ) -> BlockActs {
        let [_, n_pos, _] = resid_pre.dims();
        let attn_in = layer_norm::maybe(&self.ln1, resid_pre.clone());
        let causal = || Tensor::<2, Bool>::tril_mask([n_pos, n_pos], 0, &resid_pre.device());
        let (attn, resid_q) = match queries {
            Queries::All => (
                self.attn.forward(attn_in.clone(), attn_in, causal()),
                resid_pre.clone(),
            ),
            Queries::At { positions, mask } => (
                self.attn.forward(
                    select_positions(attn_in.clone(), positions),
                    attn_in,
                    mask.clone(),
                ),
                select_positions(resid_pre.clone(), positions),
            ),
            &Queries::Prefix(len) => (
                self.attn
                    .forward(attn_in.clone(), attn_in, causal())
                    .first_queries(len),
                resid_pre.clone().narrow(1, 0, len),
            ),
        };
        let resid_mid = resid_q + attn.out.clone();
        let (mlp_post, mlp_out, resid_post) = self.mlp_part(resid_mid.clone(), act_fn);
        BlockActs {
            resid_pre,
            pattern: attn.pattern,
            z: attn.z,
            attn_out: attn.out,
            resid_mid,
            mlp_post,
            mlp_out,
            resid_post,
        }
    }

    /// The MLP half: `resid_mid` [batch, pos, d_model] → (`mlp.hook_post`, `hook_mlp_out`, `hook_resid_post`);
    /// attention-only blocks pass `resid_mid` through.
    pub fn mlp_part(
        &self,
        resid_mid: Tensor<3>,
        act_fn: Activation,
    ) -> (Option<Tensor<3>>, Option<Tensor<3>>, Tensor<3>) {
        match &self.mlp {
            Some(mlp) => {
                let (post, out) =
                    mlp.forward(layer_norm::maybe(&self.ln2, resid_mid.clone()), act_fn);
                let resid_post = resid_mid + out.clone();
                (Some(post), Some(out), resid_post)
            }
            None => (None, None, resid_mid),
        }
    }
}
