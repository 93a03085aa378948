//! What `formation serve` shows of one checkpoint when its step slider stops there: every head's attention
//! pattern on one probe example (read from the checkpoint's HDF5 step file), and the row's head scores,
//! ablation effects and residual-probe column.

use serde_json::{Value, json};

use host::hook::HookName;
use host::layout::RunLayout;
use probes::ProbeSet;

use crate::error::AnalysisError;
use crate::report::plots::short_boundary;
use crate::row::Row;
use crate::sinks::hdf5::{
    read_stored_array, read_stored_step, stored_key_positions, stored_step_readable,
};
use crate::sinks::jsonl::read_rows;

/// Why a step view cannot be shown: the reason is the HTTP answer's body.
#[derive(Debug, thiserror::Error)]
pub enum StepViewError {
    /// No analyzed checkpoint (or no readable step file) at that step: a 404.
    #[error("{0}")]
    NotFound(String),
    /// A probe example index out of range: a 400.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
}

/// The view of checkpoint `step` of `run` with the attention patterns of probe example `example`.
///
/// `attention` holds, per layer and head, `queries` (their labels) and `pattern` (one row per query over every
/// key position `k`): every query position from the whole hook when the step file stores it
/// (`analysis.store = ["all_hooks"]`: `blocks.{l}.attn.hook_pattern[example, head, :, :]`), else the key
/// positions as queries (`patterns/blocks.{l}.attn.hook_pattern[example, head, :, :]`, always stored).
/// `tokens` are the example's tokens and `key_columns` the position of each key position in it.
pub fn step_view(run: &RunLayout, step: u64, example: usize) -> Result<Value, StepViewError> {
    let rows = read_rows(&run.metrics())?;
    let Some(row) = rows.iter().find(|r| r.step == step) else {
        let steps: Vec<u64> = rows.iter().map(|r| r.step).collect();
        return Err(StepViewError::NotFound(format!(
            "step {step} is not an analyzed checkpoint of {} (analyzed: {})",
            run.root.display(),
            span(&steps)
        )));
    };
    let dir = run.activations_dir();
    if !stored_step_readable(&dir, step) {
        return Err(StepViewError::NotFound(format!(
            "the arrays of step {step} are not on disk yet in {}",
            dir.display()
        )));
    }
    let key_positions = stored_key_positions(&dir, step)?;
    let arrays = read_stored_step(&dir, step, &["patterns"])?;
    let mut attention = vec![];
    for (name, at_keys) in &arrays {
        let Some(layer) = pattern_layer(name) else {
            continue;
        };
        let full = read_stored_array(&dir, step, &HookName::Pattern(layer).to_string())?;
        let labels: Vec<String> = match &full {
            Some(array) => (0..array.shape[2]).map(|q| q.to_string()).collect(),
            None => key_positions.clone(),
        };
        let array = full.as_ref().unwrap_or(at_keys);
        // [example, head, query, k]
        let [n, heads, queries, keys] = array.shape[..] else {
            continue;
        };
        if example >= n {
            return Err(StepViewError::BadRequest(format!(
                "example {example} is out of range: the probe set's patterns hold {n} examples (0..{})",
                n - 1
            )));
        }
        for head in 0..heads {
            let at = |q: usize| ((example * heads + head) * queries + q) * keys;
            let pattern: Vec<&[f32]> = (0..queries)
                .map(|q| &array.data[at(q)..at(q) + keys])
                .collect();
            attention.push(json!({
                "layer": layer,
                "head": head,
                "queries": labels,
                "pattern": pattern,
            }));
        }
    }
    let examples = arrays
        .values()
        .next()
        .map(|a| a.shape[0])
        .unwrap_or_default();
    // The example's tokens and where its key positions are, when the probe set is there to say.
    let (tokens, key_columns) = match ProbeSet::load(&run.probe_set()) {
        Ok(probe) if example < probe.examples.n => {
            let e = &probe.examples;
            let tokens = e.tokens[example * e.seq_len..(example + 1) * e.seq_len].to_vec();
            let columns: serde_json::Map<String, Value> = probe
                .key_positions
                .iter()
                .map(|k| (k.name.clone(), json!(k.values[example])))
                .collect();
            (json!(tokens), Value::Object(columns))
        }
        _ => (Value::Null, Value::Null),
    };
    Ok(json!({
        "step": step,
        "example": example,
        "examples": examples,
        "key_positions": key_positions,
        "tokens": tokens,
        "key_columns": key_columns,
        "attention": attention,
        "heads": row.heads,
        "mlp": row.mlp,
        "probes": probe_column(row),
    }))
}

/// The layer of a stored `patterns/blocks.{l}.attn.hook_pattern` array.
fn pattern_layer(name: &str) -> Option<usize> {
    match name.strip_prefix("patterns/")?.parse::<HookName>().ok()? {
        HookName::Pattern(layer) => Some(layer),
        _ => None,
    }
}

/// The residual-probe heatmap's column at this row: every boundary · key · target with its accuracy and
/// selectivity, labelled as the heatmap labels its rows.
fn probe_column(row: &Row) -> Vec<Value> {
    let mut out = vec![];
    for (boundary, keys) in &row.residual {
        for (key, targets) in keys {
            for (target, score) in targets {
                out.push(json!({
                    "row": format!("{} · {key} · {target}", short_boundary(&boundary.to_string())),
                    "accuracy": score.accuracy,
                    "selectivity": score.selectivity,
                }));
            }
        }
    }
    out
}

/// `1, 2, 4, …, 1500 (38 checkpoints)`, or `none yet`.
fn span(steps: &[u64]) -> String {
    match steps {
        [] => "none yet".into(),
        [only] => only.to_string(),
        [first, .., last] => format!("{first}..{last}, {} checkpoints", steps.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_arrays_name_their_layer() {
        assert_eq!(
            pattern_layer("patterns/blocks.1.attn.hook_pattern"),
            Some(1)
        );
        assert_eq!(pattern_layer("patterns/blocks.0.hook_resid_pre"), None);
        assert_eq!(pattern_layer("params/blocks.1.attn.hook_pattern"), None);
    }

    #[test]
    fn spans_name_the_first_and_last_step() {
        assert_eq!(span(&[]), "none yet");
        assert_eq!(span(&[5]), "5");
        assert_eq!(span(&[0, 1, 2, 4]), "0..4, 4 checkpoints");
    }
}
