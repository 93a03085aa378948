//! Targeted interventions (SPEC §6, second half): the expensive analyses that run on one checkpoint of a
//! birth window on demand (`formation intervene`), never at every checkpoint. So far: the [`logit_lens`] per
//! layer boundary. Each kind turns one checkpoint's capture into a JSON report.

pub mod llc;
pub mod llc_model;
pub mod logit_lens;

use std::collections::BTreeMap;

use probes::ProbeSet;
use serde_json::{Value, json};
use trainer::model::{HookName, HostArray};

use crate::selection::{at_positions, boundaries};
use logit_lens::{Unembedding, logit_lens};

/// The logit lens at every layer boundary, keyed by hook name, from a capture's host hooks and the
/// parameters; `None` if the unembedding is missing.
pub fn logit_lens_report(
    hooks: &[(HookName, HostArray)],
    params: &BTreeMap<String, HostArray>,
    probe: &ProbeSet,
) -> Option<Value> {
    let param = |name: &str| params.get(name).map(|p| p.data.as_slice());
    let unembed = Unembedding {
        w_u: param("unembed.W_U")?,
        b_u: param("unembed.b_U")?,
        ln_final: param("ln_final.w").zip(param("ln_final.b")),
        eps: trainer::model::layer_norm_eps(),
    };
    let targets = &probe.examples.targets;
    let mut out = BTreeMap::new();
    for (name, array) in boundaries(hooks) {
        let at_answers = at_positions(array, &probe.answer_positions);
        out.insert(
            name.to_string(),
            json!(logit_lens(&at_answers.data, targets, &unembed)),
        );
    }
    Some(json!(out))
}
