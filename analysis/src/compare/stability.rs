//! Whether the dynamics settled after a birth window (SPEC §8, "dynamics stabilized"): linear CKA of the
//! residual stream at the boundary × key positions where the mechanism's information lives (a probe there is
//! selective at the last checkpoint), and the cosine of every selective probe's direction, from each checkpoint
//! of the settling span (the later of the window's end and the start of the last `converged_span` of training)
//! to the last checkpoint; the worst checkpoint counts. Elsewhere the residual stream may keep drifting (a
//! position nothing reads) without the mechanism changing. Read from the arrays every analyzed checkpoint
//! stores (`resid_at_keys/…`, `probe_weights/…`).

use std::collections::BTreeMap;
use std::path::Path;

use host::array::HostArray;

use serde::Serialize;

use crate::analyzer::key_column;
use crate::error::AnalysisError;
use crate::metrics::dynamics::{cosine, linear_cka};
use crate::sinks::hdf5::{read_stored_step, stored_key_positions};
use crate::stored::{StoredName, key_slices};

/// CKA and probe-direction cosine from one checkpoint (or the worst of several) to the last.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stability {
    /// The first checkpoint compared with the last.
    pub from_step: u64,
    pub to_step: u64,
    /// How many checkpoints were compared with the last (`from_step` and every one after it but the last).
    pub checkpoints: usize,
    /// Lowest linear CKA over those checkpoints and the boundaries × key positions that hold a selective probe
    /// and whose representation varies across examples at both steps (a constant one, like the `=` token's
    /// embedding, has no CKA), and where it is (`blocks.1.hook_resid_post @ prev_occ, step 2400`).
    pub min_cka: f64,
    pub min_cka_at: String,
    /// Positions compared per checkpoint.
    pub cka_compared: usize,
    /// Lowest over those checkpoints of the median cosine of the probe weights (all classes, flattened) over
    /// the probes whose final selectivity is at least the threshold; `None` when no probe is that selective.
    pub median_probe_cosine: Option<f64>,
    pub probes_compared: usize,
}

/// Compares each of `steps` (ascending, before `to_step`) with `to_step` in a run's `analysis/activations/`
/// directory and keeps the worst; `selective` names the probes (`boundary/key/target`) whose directions count
/// and whose positions (`boundary/key`) are compared.
pub fn stability(
    activations_dir: &Path,
    steps: &[u64],
    to_step: u64,
    selective: &[String],
) -> Result<Stability, AnalysisError> {
    let groups = [StoredName::RESID_GROUP, StoredName::PROBE_GROUP];
    let to = read_stored_step(activations_dir, to_step, &groups)?;
    let key_names = stored_key_positions(activations_dir, to_step)?;
    let mut each = Vec::with_capacity(steps.len());
    for &step in steps {
        let from = read_stored_step(activations_dir, step, &groups)?;
        each.push(compare_steps(
            (step, &from),
            (to_step, &to),
            &key_names,
            selective,
        ));
    }
    worst(each).ok_or_else(|| AnalysisError::Invalid {
        path: activations_dir.to_path_buf(),
        problem: format!("has no checkpoint before step {to_step} to compare with it"),
    })
}

/// The worst of several checkpoints' comparisons with the same last one: the lowest CKA (with its step) and
/// the lowest median probe cosine; `from_step` is the first checkpoint's. `None` when there are none.
fn worst(each: Vec<Stability>) -> Option<Stability> {
    let from_step = each.first()?.from_step;
    let checkpoints = each.len();
    let median_probe_cosine = each
        .iter()
        .filter_map(|s| s.median_probe_cosine)
        .min_by(f64::total_cmp);
    // total_cmp orders NaN (no comparable position at that checkpoint) after every number.
    let lowest = each
        .into_iter()
        .min_by(|a, b| a.min_cka.total_cmp(&b.min_cka))?;
    Some(Stability {
        from_step,
        checkpoints,
        min_cka_at: if lowest.min_cka.is_nan() {
            String::new()
        } else {
            format!("{}, step {}", lowest.min_cka_at, lowest.from_step)
        },
        median_probe_cosine,
        ..lowest
    })
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
        } else if let StoredName::ProbeWeights { boundary, target } = &stored
            && early.shape == late.shape
            && let (Some(early), Some(late)) = (key_slices(early), key_slices(late))
        {
            for (k, (early, late)) in early.zip(late).enumerate() {
                let key = key_names
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| format!("key {k}"));
                if selective.contains(&format!("{boundary}/{key}/{target}")) {
                    cosines.push(cosine(early, late));
                }
            }
        }
    }
    cosines.sort_by(f64::total_cmp);
    Stability {
        from_step,
        to_step,
        checkpoints: 1,
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
    fn probe_cosines_are_taken_per_key_position_of_the_stacked_weights_and_only_where_selective() {
        // Weights [key_position 2, d_model 2, class 2]: `cur` unchanged (cosine 1), `after_prev` turned by 90°.
        let boundary = "blocks.0.hook_resid_post";
        let name = StoredName::ProbeWeights {
            boundary: boundary.parse().unwrap(),
            target: "next_token".into(),
        }
        .to_string();
        let array = |data: [f32; 8]| HostArray {
            shape: vec![2, 2, 2],
            data: data.to_vec(),
        };
        let from = BTreeMap::from([(name.clone(), array([1., 2., 3., 4., 1., 0., 0., 0.]))]);
        let to = BTreeMap::from([(name, array([1., 2., 3., 4., 0., 1., 0., 0.]))]);
        let keys = ["cur".to_string(), "after_prev".to_string()];
        let selective = |keys: &[&str]| -> Vec<String> {
            keys.iter()
                .map(|k| format!("{boundary}/{k}/next_token"))
                .collect()
        };
        let one = compare_steps((10, &from), (20, &to), &keys, &selective(&["cur"]));
        assert_eq!(one.probes_compared, 1);
        assert!(
            (one.median_probe_cosine.unwrap() - 1.0).abs() < 1e-9,
            "{one:?}"
        );
        let both = compare_steps(
            (10, &from),
            (20, &to),
            &keys,
            &selective(&["cur", "after_prev"]),
        );
        assert_eq!(both.probes_compared, 2);
        // The lower of two: the 90° turn.
        assert!(both.median_probe_cosine.unwrap().abs() < 1e-9, "{both:?}");
    }

    #[test]
    fn the_settling_span_counts_its_worst_checkpoint() {
        // Three checkpoints compared with the last: CKA 0.95, 0.85 (a loss spike moved the representation),
        // none comparable (NaN); median probe cosines 0.9, 0.95, 0.7. The span's verdict is the worst of each:
        // CKA 0.85 at the second checkpoint's step, cosine 0.7 at the third's, counted from the first step.
        let compared = |step: u64, cka: f64, cosine: f64| Stability {
            from_step: step,
            to_step: 1000,
            checkpoints: 1,
            min_cka: cka,
            min_cka_at: "blocks.0.hook_resid_post @ eq".into(),
            cka_compared: if cka.is_nan() { 0 } else { 2 },
            median_probe_cosine: Some(cosine),
            probes_compared: 3,
        };
        let span = worst(vec![
            compared(700, 0.95, 0.9),
            compared(800, 0.85, 0.95),
            compared(900, f64::NAN, 0.7),
        ])
        .unwrap();
        assert_eq!(
            (span.from_step, span.to_step, span.checkpoints),
            (700, 1000, 3)
        );
        assert_eq!(span.min_cka, 0.85);
        assert_eq!(span.min_cka_at, "blocks.0.hook_resid_post @ eq, step 800");
        assert_eq!(span.median_probe_cosine, Some(0.7));
        assert!(worst(vec![]).is_none());
    }

    #[test]
    fn constant_rows_do_not_vary() {
        assert!(!varies(&[1.0, 2.0, 1.0, 2.0, 1.0, 2.0], 2));
        assert!(varies(&[1.0, 2.0, 1.0, 2.5], 2));
    }
}
