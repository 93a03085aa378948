//! Direct logit attribution inputs: how the captured model reads the residual stream out at the probe set's
//! answers, and every component's attribution.

use super::*;

/// How the captured model reads the residual stream out at the probe set's answers; `None` if a hook or a
/// parameter is missing.
pub fn readout<'a>(
    hooks: &'a [(HookName, HostArray)],
    params: &'a BTreeMap<String, HostArray>,
    probe: &'a ProbeSet,
) -> Option<Readout<'a>> {
    let param = |name: &str| params.get(name).map(|p| p.data.as_slice());
    let logits = hook(hooks, HookName::Logits)?;
    let w_u = params.get(&ParamName::Unembed.to_string())?;
    let n_layers = (0..)
        .take_while(|&l| params.contains_key(&ParamName::Attn(l, AttnWeight::WO).to_string()))
        .count();
    let final_resid = hook(hooks, HookName::ResidPost(n_layers.checked_sub(1)?))?;
    Some(Readout {
        n: logits.shape[0],
        seq_len: logits.shape[1],
        d_model: w_u.shape[0],
        d_vocab_out: w_u.shape[1],
        answer_positions: &probe.answer_positions,
        answer_targets: &probe.examples.targets,
        w_u: &w_u.data,
        b_u: param(&ParamName::UnembedBias.to_string())?,
        ln_final: param(&ParamName::LnFinalWeight.to_string())
            .zip(param(&ParamName::LnFinalBias.to_string())),
        ln_eps: trainer::model::layer_norm_eps(),
        final_resid: &final_resid.data,
    })
}

/// Direct logit attribution of the message's model on the probe set; `None` if a parameter is missing.
pub(super) fn logit_attribution(
    message: &CheckpointMessage,
    probe: &ProbeSet,
) -> Option<Attribution> {
    let params = &message.params;
    let param = |name: &str| params.get(name).map(|p| p.data.as_slice());
    let readout = readout(&message.hooks, params, probe)?;
    let n_layers = (0..)
        .take_while(|&l| params.contains_key(&ParamName::Attn(l, AttnWeight::WO).to_string()))
        .count();
    let layers = (0..n_layers)
        .map(|l| {
            let w_o = params.get(&ParamName::Attn(l, AttnWeight::WO).to_string())?;
            Some(LayerWrites {
                z: &hook(&message.hooks, HookName::Z(l))?.data,
                n_heads: w_o.shape[0],
                d_head: w_o.shape[1],
                w_o: &w_o.data,
                b_o: param(&ParamName::Attn(l, AttnWeight::BO).to_string())?,
                mlp_out: hook(&message.hooks, HookName::MlpOut(l)).map(|a| a.data.as_slice()),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(direct_logit_attribution(&AttributionInput {
        readout,
        tokens: &probe.examples.tokens,
        w_e: param(&ParamName::Embed.to_string())?,
        w_pos: param(&ParamName::PosEmbed.to_string())?,
        layers,
        logits: &hook(&message.hooks, HookName::Logits)?.data,
    }))
}
