//! Whether the dynamics settled after a birth window (SPEC §8, "dynamics stabilized"): linear CKA of the
//! residual stream at the boundary × key positions where the mechanism's information lives (a probe there is
//! selective at the last checkpoint), and the cosine of every selective probe's direction, between the first
//! checkpoint at or after the window's end and the last checkpoint. Elsewhere the residual stream may keep
//! drifting (a position nothing reads) without the mechanism changing. Read from the arrays every analyzed
//! checkpoint stores (`resid_at_keys/…`, `probe_weights/…`).

use std::collections::BTreeMap;
use std::path::Path;

use host::array::HostArray;

use serde::Serialize;

use crate::analyzer::key_column;
use crate::error::AnalysisError;
use crate::metrics::dynamics::{cosine, linear_cka};
use crate::sinks::hdf5::{read_stored_step, stored_key_positions};
use crate::stored::StoredName;

/// CKA and probe-direction cosine from one checkpoint to the last.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stability {
    pub from_step: u64,
    pub to_step: u64,
    /// Lowest linear CKA over the boundaries × key positions that hold a selective probe and whose
    /// representation varies across examples at both steps (a constant one, like the `=` token's embedding, has
    /// no CKA), and where it is (`blocks.1.hook_resid_post @ prev_occ`).
    pub min_cka: f64,
    pub min_cka_at: String,
    pub cka_compared: usize,
    /// Median cosine of the probe weights (all classes, flattened) over the probes whose final selectivity
    /// is at least the threshold; `None` when no probe is that selective.
    pub median_probe_cosine: Option<f64>,
    pub probes_compared: usize,
}

/// Compares `from_step` with `to_step` in a run's `analysis/activations/` directory; `selective` names the
/// probes (`boundary/key/target`) whose directions count and whose positions (`boundary/key`) are compared.
pub fn stability(
    activations_dir: &Path,
    from_step: u64,
    to_step: u64,
    selective: &[String],
) -> Result<Stability, AnalysisError> {
    let groups = [StoredName::RESID_GROUP, StoredName::PROBE_GROUP];
    let from = read_stored_step(activations_dir, from_step, &groups)?;
    let to = read_stored_step(activations_dir, to_step, &groups)?;
    let key_names = stored_key_positions(activations_dir, to_step)?;
    Ok(compare_steps(
        (from_step, &from),
        (to_step, &to),
        &key_names,
        selective,
    ))
}

/// [`stability`] over two steps' stored arrays (by stored name), with the key positions' names in stored
/// order.
fn compare_steps(
    (from_step, from): (u64, &BTreeMap<String, HostArray>),
    (to_step, to): (u64, &BTreeMap<String, HostArray>),
    key_names: &[String],
    selective: &[String],
) -> Stability {
    let positions: Vec<&str> = selective
        .iter()
        .filter_map(|s| s.rsplit_once('/').map(|(position, _)| position))
        .collect();
    let (mut min_cka, mut min_cka_at, mut cka_compared) = (f64::INFINITY, String::new(), 0);
    let mut cosines = vec![];
    for (name, late) in to {
        let Some(early) = from.get(name) else {
            continue;
        };
        let Ok(stored) = name.parse::<StoredName>() else {
            continue;
        };
        if let StoredName::ResidAtKeys(boundary) = &stored {
            let [_, keys, d] = late.shape[..] else {
                continue;
            };
            for k in 0..keys {
                let key = key_names
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| format!("key {k}"));
                if !positions.contains(&format!("{boundary}/{key}").as_str()) {
                    continue;
                }
                let (x, y) = (key_column(early, k), key_column(late, k));
                if !varies(&x, d) || !varies(&y, d) {
                    continue;
                }
                let score = linear_cka(&x, d, &y, d);
                cka_compared += 1;
                if score < min_cka {
                    (min_cka, min_cka_at) = (score, format!("{boundary} @ {key}"));
                }
            }
        } else if let StoredName::ProbeWeights {
            boundary,
            key,
            target,
        } = &stored
            && selective
                .iter()
                .any(|s| *s == format!("{boundary}/{key}/{target}"))
        {
            cosines.push(cosine(&early.data, &late.data));
        }
    }
    cosines.sort_by(f64::total_cmp);
    Stability {
        from_step,
        to_step,
        min_cka: if cka_compared == 0 { f64::NAN } else { min_cka },
        min_cka_at,
        cka_compared,
        median_probe_cosine: (!cosines.is_empty()).then(|| cosines[(cosines.len() - 1) / 2]),
        probes_compared: cosines.len(),
    }
}

/// Whether the rows (`[n, d]`) of a matrix are not all the same.
fn varies(x: &[f32], d: usize) -> bool {
    x.chunks(d).any(|row| row != &x[..d])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cka_is_taken_only_where_a_selective_probe_reads_the_residual_stream() {
        // One boundary, two key positions (`cur`, `after_prev`), 4 examples, d = 2. At `cur` the representation
        // is the same at both steps (CKA 1); at `after_prev` the late one is unrelated to the early one (CKA < 1).
        // Only `cur` holds a selective probe, so only it is compared.
        let boundary = "blocks.1.hook_resid_post";
        let early = [
            1.0, 0.0, 5.0, 1.0, 2.0, 1.0, 0.0, 3.0, 3.0, 0.0, 1.0, 2.0, 4.0, 1.0, 2.0, 0.0,
        ];
        let late = [
            1.0, 0.0, 1.0, 0.0, 2.0, 1.0, 0.0, 5.0, 3.0, 0.0, 3.0, 3.0, 4.0, 1.0, 0.0, 1.0,
        ];
        let array = |data: &[f32]| HostArray {
            shape: vec![4, 2, 2],
            data: data.to_vec(),
        };
        let name = StoredName::ResidAtKeys(boundary.parse().unwrap()).to_string();
        let from = BTreeMap::from([(name.clone(), array(&early))]);
        let to = BTreeMap::from([(name, array(&late))]);
        let keys = ["cur".to_string(), "after_prev".to_string()];
        let everywhere = compare_steps(
            (10, &from),
            (20, &to),
            &keys,
            &[
                format!("{boundary}/cur/next_token"),
                format!("{boundary}/after_prev/next_token"),
            ],
        );
        assert_eq!(everywhere.cka_compared, 2);
        assert!(everywhere.min_cka < 0.99, "{everywhere:?}");
        assert_eq!(everywhere.min_cka_at, format!("{boundary} @ after_prev"));
        let mechanism = compare_steps(
            (10, &from),
            (20, &to),
            &keys,
            &[format!("{boundary}/cur/next_token")],
        );
        assert_eq!(mechanism.cka_compared, 1);
        assert!((mechanism.min_cka - 1.0).abs() < 1e-6, "{mechanism:?}");
    }

    #[test]
    fn constant_rows_do_not_vary() {
        assert!(!varies(&[1.0, 2.0, 1.0, 2.0, 1.0, 2.0], 2));
        assert!(varies(&[1.0, 2.0, 1.0, 2.5], 2));
    }
}
