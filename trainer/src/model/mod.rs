//! The decoder-only transformer of SPEC §4 with TransformerLens parameter names and shapes. Module paths
//! (`embed.W_E`, `blocks.0.attn.W_Q`, …) are TransformerLens state-dict keys, so exports need no renaming.
//!
//! Three forwards share one block implementation: [`Transformer::forward`] (logits at every position),
//! [`Transformer::forward_answers`] (training: the last block and the unembedding only at the answer
//! positions) and [`Transformer::capture`] (every hook point, for analysis).
#![allow(non_snake_case)]

mod ablation;
mod attention;
mod block;
mod capture;
mod init;
mod kernels;
mod layer_norm;
mod mlp;
mod patching;

pub use ablation::AblationLosses;
pub use attention::Attention;
pub use block::{Block, BlockActs, Queries};
pub use capture::{Capture, HookTensor, to_host};
pub use host::array::HostArray;
pub use host::hook::HookName;
pub use layer_norm::LayerNorm;

/// The LayerNorm epsilon (TransformerLens `eps`).
pub fn layer_norm_eps() -> f64 {
    layer_norm::EPS
}
pub use mlp::Mlp;
pub use patching::{Channel, PatchingEffects};

use burn::module::Param;
use burn::prelude::*;

use crate::config::{Activation, Config, Normalization};
use crate::tasks::Task;
use host::rng::SplitMix64;

/// The model's shape, resolved from the config and the task.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelDims {
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub d_head: usize,
    pub d_mlp: Option<usize>,
    pub d_vocab: usize,
    pub d_vocab_out: usize,
    pub n_ctx: usize,
    pub act_fn: Activation,
    pub normalization: Normalization,
    pub attn_only: bool,
    pub init_range: f64,
}

impl ModelDims {
    pub fn new(config: &Config, task: &dyn Task) -> Self {
        let m = &config.model;
        Self {
            n_layers: m.n_layers,
            d_model: m.d_model,
            n_heads: m.n_heads,
            d_head: config.d_head(),
            d_mlp: if m.attn_only { None } else { m.d_mlp },
            d_vocab: task.d_vocab(),
            d_vocab_out: task.d_vocab_out(),
            n_ctx: task.seq_len(),
            act_fn: m.act_fn,
            normalization: m.normalization,
            attn_only: m.attn_only,
            init_range: m.init_range,
        }
    }
}

#[derive(Module, Debug)]
pub struct Embed {
    /// [d_vocab, d_model]
    pub W_E: Param<Tensor<2>>,
}

#[derive(Module, Debug)]
pub struct PosEmbed {
    /// [n_ctx, d_model]
    pub W_pos: Param<Tensor<2>>,
}

#[derive(Module, Debug)]
pub struct Unembed {
    /// [d_model, d_vocab_out]
    pub W_U: Param<Tensor<2>>,
    pub b_U: Param<Tensor<1>>,
}

#[derive(Module, Debug)]
pub struct Transformer {
    pub embed: Embed,
    pub pos_embed: PosEmbed,
    pub blocks: Vec<Block>,
    pub ln_final: Option<LayerNorm>,
    pub unembed: Unembed,
    #[module(skip)]
    pub dims: ModelDims,
}

impl Transformer {
    /// A freshly initialized model: weights Normal(0, (init_range/√d_model)²), biases 0, LayerNorm weights 1
    /// (TransformerLens' default initialization), drawn from `seed` only.
    pub fn new(dims: &ModelDims, seed: u64, device: &Device) -> Self {
        let rng = &mut SplitMix64::derived(seed, "init", 0);
        let std = dims.init_range / (dims.d_model as f64).sqrt();
        let d = dims.d_model;
        let ln = || (dims.normalization == Normalization::Ln).then(|| LayerNorm::new(d, device));
        let embed = Embed {
            W_E: init::normal(rng, [dims.d_vocab, d], std, device),
        };
        let pos_embed = PosEmbed {
            W_pos: init::normal(rng, [dims.n_ctx, d], std, device),
        };
        let blocks = (0..dims.n_layers)
            .map(|_| Block {
                ln1: ln(),
                attn: Attention::new(rng, d, dims.n_heads, dims.d_head, std, device),
                ln2: if dims.attn_only { None } else { ln() },
                mlp: dims.d_mlp.map(|d_mlp| Mlp::new(rng, d, d_mlp, std, device)),
            })
            .collect();
        let unembed = Unembed {
            W_U: init::normal(rng, [d, dims.d_vocab_out], std, device),
            b_U: init::constant([dims.d_vocab_out], 0.0, device),
        };
        Self {
            embed,
            pos_embed,
            blocks,
            ln_final: ln(),
            unembed,
            dims: dims.clone(),
        }
    }

    /// `tokens` [batch, pos] → (`hook_embed`, `hook_pos_embed`), both [batch, pos, d_model].
    fn embed(&self, tokens: Tensor<2, Int>) -> (Tensor<3>, Tensor<3>) {
        let [batch, pos] = tokens.dims();
        let d = self.dims.d_model;
        let embed = self
            .embed
            .W_E
            .val()
            .select(0, tokens.reshape([batch * pos]))
            .reshape([batch, pos, d]);
        let pos_embed = self
            .pos_embed
            .W_pos
            .val()
            .slice(s![0..pos, ..])
            .unsqueeze::<3>()
            .expand([batch, pos, d]);
        (embed, pos_embed)
    }

    /// Final LayerNorm (if any) and unembedding: [batch, pos, d_model] → [batch, pos, d_vocab_out].
    fn unembed(&self, resid: Tensor<3>) -> Tensor<3> {
        let [batch, pos, d] = resid.dims();
        let x = layer_norm::maybe(&self.ln_final, resid).reshape([batch * pos, d]);
        let logits = kernels::affine(x, self.unembed.W_U.val(), self.unembed.b_U.val());
        logits.reshape([batch, pos, self.dims.d_vocab_out])
    }

    /// Logits at every position: `tokens` [batch, pos] → [batch, pos, d_vocab_out].
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let (embed, pos_embed) = self.embed(tokens);
        let mut resid = embed + pos_embed;
        for block in &self.blocks {
            resid = block
                .forward(resid, &Queries::All, self.dims.act_fn)
                .resid_post;
        }
        self.unembed(resid)
    }

    /// Logits only at `answers` (training): `tokens` [batch, pos] → [batch, answers, d_vocab_out]. Nothing
    /// after the last block's keys and values depends on other positions, so the last block's queries, MLP
    /// and the unembedding run only there. Equal to `forward` at those positions up to float rounding.
    pub fn forward_answers(&self, tokens: Tensor<2, Int>, answers: &Queries) -> Tensor<3> {
        self.answer_acts(tokens, answers).1
    }

    /// The last block's activations at `answers` (its `resid_pre` at every position) and the logits there,
    /// as [`Self::forward_answers`] computes them: what an analysis of the answer positions alone reads.
    pub fn answer_acts(&self, tokens: Tensor<2, Int>, answers: &Queries) -> (BlockActs, Tensor<3>) {
        let (embed, pos_embed) = self.embed(tokens);
        let mut resid = embed + pos_embed;
        let (last, earlier) = self
            .blocks
            .split_last()
            .expect("a model has at least one block");
        for block in earlier {
            resid = block
                .forward(resid, &Queries::All, self.dims.act_fn)
                .resid_post;
        }
        if let (&Queries::Prefix(len), None) = (answers, &last.mlp) {
            // An attention-only block under `Prefix` computes every position anyway (see `Queries::Prefix`),
            // so cutting its residual saves nothing and costs a copy each way (the cut's gradient is zeros and
            // a copy): the cut moves past the block, to the narrower of the residual and the logits (Markov
            // chains: 3 logits against 32 dimensions, 3.6 → 3.4 ms per step).
            let acts = last.forward(resid, &Queries::All, self.dims.act_fn);
            let logits = if self.dims.d_vocab_out <= self.dims.d_model {
                self.unembed(acts.resid_post.clone()).narrow(1, 0, len)
            } else {
                self.unembed(acts.resid_post.clone().narrow(1, 0, len))
            };
            return (acts.first_queries(len), logits);
        }
        let acts = last.forward(resid, answers, self.dims.act_fn);
        let logits = self.unembed(acts.resid_post.clone());
        (acts, logits)
    }

    /// Logits at `answers` from the full forward (every position of every block, as a plain PyTorch script
    /// computes them): what [`Self::forward_answers`] equals up to float rounding, for comparing like with like.
    pub fn forward_full_at(&self, tokens: Tensor<2, Int>, answers: &Queries) -> Tensor<3> {
        ablation::at(self.forward(tokens), answers)
    }

    /// Every hook point of SPEC §4 under its TransformerLens name (see [`Capture`]).
    pub fn capture(&self, tokens: Tensor<2, Int>) -> Capture {
        self.capture_at(tokens, None)
    }

    /// As [`Self::capture`], with the last block only at the query positions `tail` (distinct, any order), if
    /// given: its queries, MLP half and the unembedding run there alone (keys and values still come from every
    /// position), so its `attn.hook_pattern` is [batch, head, tail, pos], and its `attn.hook_z`,
    /// `hook_attn_out`, `hook_resid_mid`, `mlp.hook_post`, `hook_mlp_out`, `hook_resid_post` and the logits are
    /// [batch, tail, …], rows in `tail`'s order ([`Capture::tail`]); every earlier hook is whole. An analysis
    /// that reads the last block only at a few positions (the answers and key positions of a long sequence)
    /// skips the rest of its work, as training's [`Self::forward_answers`] does.
    pub fn capture_at(&self, tokens: Tensor<2, Int>, tail: Option<&[usize]>) -> Capture {
        let device = tokens.device();
        let n = self.blocks.len();
        let tail = tail.filter(|positions| n > 0 && !positions.is_empty());
        let last = tail.map(|positions| self.answer_queries(positions, &device));
        let (embed, pos_embed) = self.embed(tokens);
        let mut resid = embed.clone() + pos_embed.clone();
        let mut blocks = Vec::with_capacity(n);
        for (l, block) in self.blocks.iter().enumerate() {
            let queries = last
                .as_ref()
                .filter(|_| l + 1 == n)
                .unwrap_or(&Queries::All);
            let acts = block.forward(resid, queries, self.dims.act_fn);
            resid = acts.resid_post.clone();
            blocks.push(acts);
        }
        Capture {
            embed,
            pos_embed,
            logits: self.unembed(resid),
            blocks,
            attn_only: self.dims.attn_only,
            tail: tail.map(<[usize]>::to_vec),
        }
    }

    /// The [`Queries`] for a fixed set of answer positions in sequences of length `n_ctx`. Every position in
    /// order (next-token tasks) is [`Queries::All`], and the first few in order [`Queries::Prefix`]: the same
    /// rows, cut off instead of selected.
    pub fn answer_queries(&self, answers: &[usize], device: &Device) -> Queries {
        let n_ctx = self.dims.n_ctx;
        if answers.iter().copied().eq(0..n_ctx) {
            return Queries::All;
        }
        if !answers.is_empty() && answers.iter().copied().eq(0..answers.len()) {
            return Queries::Prefix(answers.len());
        }
        let positions: Vec<i64> = answers.iter().map(|&p| p as i64).collect();
        let hidden: Vec<bool> = answers
            .iter()
            .flat_map(|&q| (0..n_ctx).map(move |k| k > q))
            .collect();
        Queries::At {
            positions: Tensor::from_data(TensorData::new(positions, [answers.len()]), device),
            mask: Tensor::from_data(TensorData::new(hidden, [answers.len(), n_ctx]), device),
        }
    }
}

/// Mean cross-entropy of `logits` [batch, answers, vocab] against `targets` [batch, answers].
pub fn cross_entropy(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<1> {
    let [batch, answers, vocab] = logits.dims();
    kernels::cross_entropy(
        logits.reshape([batch * answers, vocab]),
        targets.reshape([batch * answers]),
    )
}

/// Token ids as a device tensor [n, len].
pub fn int_tensor(values: &[u32], n: usize, len: usize, device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = values.iter().map(|&v| i64::from(v)).collect();
    Tensor::from_data(TensorData::new(data, [n, len]), device)
}

#[cfg(test)]
mod tests;
