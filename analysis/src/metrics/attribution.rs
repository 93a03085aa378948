//! Direct logit attribution (SPEC §5C, §5D), as TransformerLens `cache.stack_head_results(apply_ln=True)` /
//! `cache.decompose_resid(apply_ln=True)` followed by `cache.logit_attrs(...)` against the logit difference
//! "correct token minus the mean over the vocabulary": each component's write x at an answer position is
//! centred over d_model, divided by the final LayerNorm's scale *of the clean run* (frozen), multiplied by the
//! LayerNorm weight and dotted with W_U[:, c] − mean_v W_U[:, v]. Without LayerNorm it is
//! x · (W_U[:, c] − mean_v W_U[:, v]).
//!
//! The components (token and position embeddings, every head's z_h·W_O[h], every layer's b_O, every MLP
//! output) plus `unembed_bias` (the LayerNorm bias and b_U along the same direction) sum exactly to
//! logit[c] − mean_v logit[v]; `logit_diff` is that value measured on the logits, so the sum is checkable.

use faer::Mat;

/// What turns a write into the residual stream into logits at the answers: the unembedding, the final
/// LayerNorm with its frozen scale, and the correct answers. Shapes in the comments, all row-major.
pub struct Readout<'a> {
    pub n: usize,
    pub seq_len: usize,
    pub d_model: usize,
    pub d_vocab_out: usize,
    pub answer_positions: &'a [usize],
    /// Correct token at each answer, [n, answers].
    pub answer_targets: &'a [u32],
    /// `unembed.W_U` [d_model, d_vocab_out], `unembed.b_U` [d_vocab_out].
    pub w_u: &'a [f32],
    pub b_u: &'a [f32],
    /// `ln_final.w` and `ln_final.b` [d_model], if the model has LayerNorm.
    pub ln_final: Option<(&'a [f32], &'a [f32])>,
    /// The LayerNorm ε of the model.
    pub ln_eps: f64,
    /// The last `hook_resid_post` [n, seq, d_model] (for the frozen LayerNorm scale).
    pub final_resid: &'a [f32],
}

/// One answer of one example: where it is and the direction u with (write · u) = the write's attribution.
pub struct Direction {
    pub example: usize,
    pub position: usize,
    pub target: usize,
    pub u: Vec<f64>,
    /// The LayerNorm bias and b_U along the same direction.
    pub bias: f64,
}

/// The attribution direction of every example × answer (see the module doc): (W_U[:, c] − mean_v W_U[:, v]),
/// with LayerNorm scaled by w / σ (σ of the clean run) and re-centred (centring the write first is the same as
/// centring u).
pub fn directions(readout: &Readout<'_>) -> Vec<Direction> {
    let (d, vocab, seq) = (readout.d_model, readout.d_vocab_out, readout.seq_len);
    let n_answers = readout.answer_positions.len();
    let w_u_mean: Vec<f64> = readout
        .w_u
        .chunks(vocab)
        .map(|row| row.iter().map(|&v| f64::from(v)).sum::<f64>() / vocab as f64)
        .collect();
    let b_u_mean = readout.b_u.iter().map(|&v| f64::from(v)).sum::<f64>() / vocab as f64;
    let mut out = Vec::with_capacity(readout.n * n_answers);
    for i in 0..readout.n {
        for (a, &t) in readout.answer_positions.iter().enumerate() {
            let c = readout.answer_targets[i * n_answers + a] as usize;
            let row = (i * seq + t) * d;
            let mut u: Vec<f64> = (0..d)
                .map(|j| f64::from(readout.w_u[j * vocab + c]) - w_u_mean[j])
                .collect();
            let mut bias = f64::from(readout.b_u[c]) - b_u_mean;
            if let Some((ln_w, ln_b)) = readout.ln_final {
                let (_, scale) =
                    layer_norm_stats(&readout.final_resid[row..row + d], readout.ln_eps);
                bias += dot(ln_b, &u);
                for (uj, &w) in u.iter_mut().zip(ln_w) {
                    *uj *= f64::from(w) / scale;
                }
                let mean_u = u.iter().sum::<f64>() / d as f64;
                u.iter_mut().for_each(|uj| *uj -= mean_u);
            }
            out.push(Direction {
                example: i,
                position: t,
                target: c,
                u,
                bias,
            });
        }
    }
    out
}

/// Mean direct logit attribution of each MLP neuron of one block: post[n]·(W_out[n] · u), averaged over the
/// examples and answers; `post` [n, seq, d_mlp] (`mlp.hook_post`), `w_out` [d_mlp, d_model].
pub fn neuron_attribution(readout: &Readout<'_>, post: &[f32], w_out: &[f32]) -> Vec<f64> {
    let d = readout.d_model;
    let d_mlp = w_out.len() / d;
    let dirs = directions(readout);
    let weight = 1.0 / dirs.len().max(1) as f64;
    let w_out_u = along_directions(w_out, d, &dirs);
    let mut out = vec![0.0; d_mlp];
    for (i, dir) in dirs.iter().enumerate() {
        let at = (dir.example * readout.seq_len + dir.position) * d_mlp;
        for (k, o) in out.iter_mut().enumerate() {
            *o += weight * f64::from(post[at + k]) * w_out_u[(k, i)];
        }
    }
    out
}

/// Every row of `w` [rows, d] (row-major) dotted with every direction's u, as one matrix product:
/// [rows, directions].
fn along_directions(w: &[f32], d: usize, dirs: &[Direction]) -> Mat<f64> {
    let w = Mat::<f64>::from_fn(w.len() / d.max(1), d, |r, j| f64::from(w[r * d + j]));
    w * Mat::<f64>::from_fn(d, dirs.len(), |j, k| dirs[k].u[j])
}

/// Σ_j x_j · u_j in f64, as four partial sums over j mod 4 (each in order of j) added at the end: four
/// independent chains of additions where one would wait on each addition (the attribution's loop over every
/// example × answer was bound by that). It differs from the in-order sum in the last bits only.
fn dot(x: &[f32], u: &[f64]) -> f64 {
    let mut partial = [0.0f64; 4];
    let (mut x4, mut u4) = (x.chunks_exact(4), u.chunks_exact(4));
    for (x4, u4) in (&mut x4).zip(&mut u4) {
        for ((sum, &x), u) in partial.iter_mut().zip(x4).zip(u4) {
            *sum += f64::from(x) * u;
        }
    }
    let rest: f64 = x4
        .remainder()
        .iter()
        .zip(u4.remainder())
        .map(|(&x, u)| f64::from(x) * u)
        .sum();
    (partial[0] + partial[1]) + (partial[2] + partial[3]) + rest
}

/// Host arrays of one checkpoint that attribution reads; shapes in the comments, all row-major.
pub struct AttributionInput<'a> {
    pub readout: Readout<'a>,
    /// [n, seq]
    pub tokens: &'a [u32],
    /// `embed.W_E` [d_vocab, d_model], `pos_embed.W_pos` [n_ctx, d_model].
    pub w_e: &'a [f32],
    pub w_pos: &'a [f32],
    /// Per layer: `hook_z` [n, seq, head, d_head], `W_O` [head, d_head, d_model], `b_O` [d_model] and, for
    /// models with MLPs, `hook_mlp_out` [n, seq, d_model].
    pub layers: Vec<LayerWrites<'a>>,
    /// `logits` [n, seq, d_vocab_out].
    pub logits: &'a [f32],
}

/// One layer's writes to the residual stream.
pub struct LayerWrites<'a> {
    pub z: &'a [f32],
    pub n_heads: usize,
    pub d_head: usize,
    pub w_o: &'a [f32],
    pub b_o: &'a [f32],
    pub mlp_out: Option<&'a [f32]>,
}

/// Mean direct logit attribution over the probe examples and answer positions, in logits.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribution {
    pub embed: f64,
    pub pos_embed: f64,
    /// `[layer][head]`
    pub heads: Vec<Vec<f64>>,
    /// `[layer]`, the attention output bias b_O.
    pub attn_bias: Vec<f64>,
    /// `[layer]`; empty for attention-only models.
    pub mlp: Vec<f64>,
    /// LayerNorm bias and b_U along the logit-difference direction.
    pub unembed_bias: f64,
    /// The measured mean of logit[c] − mean_v logit[v]; the components above sum to it.
    pub logit_diff: f64,
}

/// Direct logit attribution of every component (see the module doc).
pub fn direct_logit_attribution(input: &AttributionInput<'_>) -> Attribution {
    let readout = &input.readout;
    let (d, vocab, seq) = (readout.d_model, readout.d_vocab_out, readout.seq_len);
    let mut out = Attribution {
        embed: 0.0,
        pos_embed: 0.0,
        heads: input.layers.iter().map(|l| vec![0.0; l.n_heads]).collect(),
        attn_bias: vec![0.0; input.layers.len()],
        mlp: vec![0.0; input.layers.iter().filter(|l| l.mlp_out.is_some()).count()],
        unembed_bias: 0.0,
        logit_diff: 0.0,
    };
    let dirs = directions(readout);
    let weight = 1.0 / dirs.len().max(1) as f64;
    // Every head's W_O[h] · u for every direction, per layer: [head · d_head, directions].
    let w_o_u: Vec<Mat<f64>> = input
        .layers
        .iter()
        .map(|layer| along_directions(layer.w_o, d, &dirs))
        .collect();
    for (
        k,
        Direction {
            example: i,
            position: t,
            target: c,
            u,
            bias,
        },
    ) in dirs.iter().enumerate()
    {
        let (i, t, c) = (*i, *t, *c);
        let row = (i * seq + t) * d;
        let token = input.tokens[i * seq + t] as usize;
        out.embed += weight * dot(&input.w_e[token * d..(token + 1) * d], u);
        out.pos_embed += weight * dot(&input.w_pos[t * d..(t + 1) * d], u);
        out.unembed_bias += weight * bias;
        let mut mlp = 0;
        for (l, layer) in input.layers.iter().enumerate() {
            let dh = layer.d_head;
            for h in 0..layer.n_heads {
                let z = &layer.z[((i * seq + t) * layer.n_heads + h) * dh..][..dh];
                let write = dot(z, &w_o_u[l].col_as_slice(k)[h * dh..][..dh]);
                out.heads[l][h] += weight * write;
            }
            out.attn_bias[l] += weight * dot(layer.b_o, u);
            if let Some(mlp_out) = layer.mlp_out {
                out.mlp[mlp] += weight * dot(&mlp_out[row..row + d], u);
                mlp += 1;
            }
        }
        let logits = &input.logits[(i * seq + t) * vocab..][..vocab];
        let mean_logit = logits.iter().map(|&v| f64::from(v)).sum::<f64>() / vocab as f64;
        out.logit_diff += weight * (f64::from(logits[c]) - mean_logit);
    }
    out
}

/// Mean and scale √(var + eps) of one residual row, as TransformerLens `LayerNorm` computes them over d_model
/// (biased variance).
pub fn layer_norm_stats(row: &[f32], eps: f64) -> (f64, f64) {
    let d = row.len().max(1) as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / d;
    let var = row
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / d;
    (mean, (var + eps).sqrt())
}

impl Attribution {
    /// Sum of every component's attribution (equals `logit_diff` up to float rounding).
    pub fn total(&self) -> f64 {
        self.embed
            + self.pos_embed
            + self.heads.iter().flatten().sum::<f64>()
            + self.attn_bias.iter().sum::<f64>()
            + self.mlp.iter().sum::<f64>()
            + self.unembed_bias
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::prelude::*;
    use host::names::{AttnWeight, ParamName};
    use trainer::config::{Activation, Normalization};
    use trainer::model::{HookName, HostArray, ModelDims, Transformer, int_tensor};

    /// The four partial sums and the remainder add up to the dot product: 1·1 + 2·0.5 + … worked by hand.
    #[test]
    fn dot_adds_every_product_once() {
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let u = [1.0, 0.5, -1.0, 0.25, 2.0, -0.5];
        // 1 + 1 − 3 + 1 + 10 − 3 = 7
        assert_eq!(dot(&x, &u), 7.0);
        assert_eq!(dot(&x[..3], &u[..3]), -1.0);
        assert_eq!(dot(&[], &[]), 0.0);
    }

    /// Every component's attribution, from a real capture of a random 2-layer model, sums to the measured
    /// logit[c] − mean logit: the decomposition is complete, with and without LayerNorm.
    #[test]
    fn components_sum_to_the_correct_logit_minus_the_mean_logit() {
        let device = Device::flex();
        for normalization in [Normalization::None, Normalization::Ln] {
            let dims = ModelDims {
                n_layers: 2,
                d_model: 16,
                n_heads: 4,
                d_head: 4,
                d_mlp: Some(32),
                d_vocab: 11,
                d_vocab_out: 10,
                n_ctx: 6,
                act_fn: Activation::Relu,
                normalization,
                attn_only: false,
                init_range: 1.5,
            };
            let model = Transformer::new(&dims, 4, &device);
            let (n, seq) = (5, 6);
            let tokens: Vec<u32> = (0..n * seq).map(|i| (i * 7 % 11) as u32).collect();
            let hooks = model
                .capture(int_tensor(&tokens, n, seq, &device))
                .to_host()
                .unwrap();
            let hook = |name: HookName| &hooks.iter().find(|(h, _)| *h == name).unwrap().1;
            let params: std::collections::BTreeMap<String, HostArray> =
                trainer::export::named_parameters(&model)
                    .into_iter()
                    .map(|(k, (shape, data))| (k, HostArray { shape, data }))
                    .collect();
            let p = |name: &str| params[name].data.as_slice();
            let answers = [2usize, 5];
            let targets: Vec<u32> = (0..n * 2).map(|i| (i * 3 % 10) as u32).collect();
            let layers = (0..2)
                .map(|l| LayerWrites {
                    z: &hook(HookName::Z(l)).data,
                    n_heads: 4,
                    d_head: 4,
                    w_o: &params[&ParamName::Attn(l, AttnWeight::WO).to_string()].data,
                    b_o: &params[&ParamName::Attn(l, AttnWeight::BO).to_string()].data,
                    mlp_out: Some(&hook(HookName::MlpOut(l)).data),
                })
                .collect();
            let ln = (normalization == Normalization::Ln).then(|| {
                (
                    p(&ParamName::LnFinalWeight.to_string()),
                    p(&ParamName::LnFinalBias.to_string()),
                )
            });
            let readout = Readout {
                n,
                seq_len: seq,
                d_model: 16,
                d_vocab_out: 10,
                answer_positions: &answers,
                answer_targets: &targets,
                w_u: p(&ParamName::Unembed.to_string()),
                b_u: p(&ParamName::UnembedBias.to_string()),
                ln_final: ln,
                ln_eps: trainer::model::layer_norm_eps(),
                final_resid: &hook(HookName::ResidPost(1)).data,
            };
            let input = AttributionInput {
                readout,
                tokens: &tokens,
                w_e: p(&ParamName::Embed.to_string()),
                w_pos: p(&ParamName::PosEmbed.to_string()),
                layers,
                logits: &hook(HookName::Logits).data,
            };
            let attribution = direct_logit_attribution(&input);
            // Neurons: block 1's neurons plus its bias b_out add up to the block's attribution.
            let neurons = neuron_attribution(
                &input.readout,
                &hook(HookName::MlpPost(1)).data,
                p("blocks.1.mlp.W_out"),
            );
            let dirs = directions(&input.readout);
            let b_out = p("blocks.1.mlp.b_out");
            let bias: f64 = dirs.iter().map(|d| dot(b_out, &d.u)).sum::<f64>() / dirs.len() as f64;
            let sum: f64 = neurons.iter().sum::<f64>() + bias;
            assert_eq!(neurons.len(), 32);
            assert!(
                (sum - attribution.mlp[1]).abs() < 1e-4,
                "{sum} vs {}",
                attribution.mlp[1]
            );
            assert!(
                attribution.logit_diff.abs() > 1e-3,
                "a non-trivial logit difference"
            );
            assert!(
                (attribution.total() - attribution.logit_diff).abs() < 1e-4,
                "{normalization:?}: {} vs {}",
                attribution.total(),
                attribution.logit_diff
            );
            assert!(attribution.heads.iter().flatten().any(|&h| h.abs() > 1e-4));
        }
    }
}
