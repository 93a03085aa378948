//! Model invariants: TransformerLens shapes and names, the residual identities, causal patterns, and that
//! the three forwards agree.

use super::*;
use crate::config::{Activation, Normalization};

fn dims(normalization: Normalization, attn_only: bool, n_layers: usize) -> ModelDims {
    ModelDims {
        n_layers,
        d_model: 16,
        n_heads: 4,
        d_head: 4,
        d_mlp: (!attn_only).then_some(32),
        d_vocab: 11,
        d_vocab_out: 10,
        n_ctx: 6,
        act_fn: Activation::Gelu,
        normalization,
        attn_only,
        init_range: 0.8,
    }
}

fn tokens(device: &Device) -> Tensor<2, Int> {
    let values: Vec<u32> = (0..3 * 6).map(|i| (i * 7 % 11) as u32).collect();
    int_tensor(&values, 3, 6, device)
}

fn host<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.clone().into_data().try_into_vec_as::<f32>().unwrap()
}

fn max_abs_diff<const D: usize>(a: &Tensor<D>, b: &Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    host(a)
        .iter()
        .zip(host(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn all_variants() -> Vec<ModelDims> {
    vec![
        dims(Normalization::None, false, 2),
        dims(Normalization::Ln, false, 2),
        dims(Normalization::None, true, 2),
        dims(Normalization::Ln, true, 1),
    ]
}

#[test]
fn capture_logits_equal_plain_logits() {
    let device = crate::test_device();
    for d in all_variants() {
        let model = Transformer::new(&d, 1, &device);
        let plain = model.forward(tokens(&device));
        let captured = model.capture(tokens(&device));
        assert_eq!(host(&plain), host(&captured.logits), "{d:?}");
    }
}

#[test]
fn answer_forward_matches_full_forward_at_answer_positions() {
    let device = crate::test_device();
    for d in all_variants() {
        let model = Transformer::new(&d, 2, &device);
        let answers = [2usize, 4, 5];
        let full = model.forward(tokens(&device));
        let queries = model.answer_queries(&answers, &device);
        let at = model.forward_answers(tokens(&device), &queries);
        let idx = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 4, 5], [3]), &device);
        assert!(max_abs_diff(&full.select(1, idx), &at) < 1e-5, "{d:?}");
    }
}

#[test]
fn residual_stream_identities_hold() {
    let device = crate::test_device();
    for d in all_variants() {
        let model = Transformer::new(&d, 3, &device);
        let c = model.capture(tokens(&device));
        assert!(
            max_abs_diff(
                &c.blocks[0].resid_pre,
                &(c.embed.clone() + c.pos_embed.clone())
            ) < 1e-6
        );
        for (l, b) in c.blocks.iter().enumerate() {
            assert!(max_abs_diff(&b.resid_mid, &(b.resid_pre.clone() + b.attn_out.clone())) < 1e-6);
            let mlp_out = b
                .mlp_out
                .clone()
                .unwrap_or_else(|| b.attn_out.clone().zeros_like());
            assert!(max_abs_diff(&b.resid_post, &(b.resid_mid.clone() + mlp_out)) < 1e-6);
            if let Some(next) = c.blocks.get(l + 1) {
                assert_eq!(host(&next.resid_pre), host(&b.resid_post));
            }
        }
    }
}

#[test]
fn patterns_are_causal_and_rows_sum_to_one() {
    let device = crate::test_device();
    let model = Transformer::new(&dims(Normalization::Ln, false, 2), 4, &device);
    let c = model.capture(tokens(&device));
    for b in &c.blocks {
        let [batch, heads, q, k] = b.pattern.dims();
        assert_eq!((heads, q, k), (4, 6, 6));
        let p = host(&b.pattern);
        for row in 0..batch * heads * q {
            let query = row % q;
            let values = &p[row * k..(row + 1) * k];
            assert!((values.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert!(
                values[query + 1..].iter().all(|&v| v == 0.0),
                "no attention to the future"
            );
        }
    }
}

#[test]
fn attn_out_is_the_sum_over_heads_of_z_times_w_o_plus_b_o() {
    let device = crate::test_device();
    let model = Transformer::new(&dims(Normalization::None, false, 1), 5, &device);
    let c = model.capture(tokens(&device));
    let b = &c.blocks[0];
    let [batch, pos, heads, d_head] = b.z.dims();
    let z = host(&b.z);
    let w_o = host(&model.blocks[0].attn.W_O.val()); // [head, d_head, d_model]
    let b_o = host(&model.blocks[0].attn.b_O.val());
    let out = host(&b.attn_out);
    let d_model = 16;
    for bp in 0..batch * pos {
        for m in 0..d_model {
            let mut sum = b_o[m];
            for h in 0..heads {
                for e in 0..d_head {
                    sum += z[(bp * heads + h) * d_head + e] * w_o[(h * d_head + e) * d_model + m];
                }
            }
            assert!((sum - out[bp * d_model + m]).abs() < 1e-5);
        }
    }
}

#[test]
fn hook_names_and_shapes_follow_transformer_lens() {
    let device = crate::test_device();
    let model = Transformer::new(&dims(Normalization::Ln, false, 2), 6, &device);
    let hooks = model.capture(tokens(&device)).to_host().unwrap();
    let find = |name: &str| {
        hooks
            .iter()
            .find(|(h, _)| h.to_string() == name)
            .map(|(_, a)| a.shape.clone())
    };
    assert_eq!(find("hook_embed"), Some(vec![3, 6, 16]));
    assert_eq!(find("blocks.1.attn.hook_pattern"), Some(vec![3, 4, 6, 6]));
    assert_eq!(find("blocks.0.attn.hook_z"), Some(vec![3, 6, 4, 4]));
    assert_eq!(find("blocks.1.mlp.hook_post"), Some(vec![3, 6, 32]));
    assert_eq!(find("logits"), Some(vec![3, 6, 10]));
    let attn_only = Transformer::new(&dims(Normalization::None, true, 1), 6, &device);
    let names: Vec<String> = attn_only
        .capture(tokens(&device))
        .hooks()
        .iter()
        .map(|(h, _)| h.to_string())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("mlp") || n.contains("resid_mid")),
        "{names:?}"
    );
}

#[test]
fn same_seed_same_weights() {
    let device = crate::test_device();
    let d = dims(Normalization::Ln, false, 1);
    let a = Transformer::new(&d, 9, &device);
    let b = Transformer::new(&d, 9, &device);
    let c = Transformer::new(&d, 10, &device);
    assert_eq!(
        host(&a.blocks[0].attn.W_Q.val()),
        host(&b.blocks[0].attn.W_Q.val())
    );
    assert_ne!(
        host(&a.blocks[0].attn.W_Q.val()),
        host(&c.blocks[0].attn.W_Q.val())
    );
}
