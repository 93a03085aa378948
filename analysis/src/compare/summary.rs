//! One run, summarized for comparison: final behavior, its birth window and birth step, the components that
//! carry the mechanism (ablation shares), and how stable the dynamics are after the window. Pure functions
//! over a run's rows and windows; [`super::stability`] reads the arrays the last criterion needs.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::row::Row;
use crate::windows::Window;

/// Behavior at the end of training, from the test split's evaluations where the run has them, else from the
/// probe set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinalBehavior {
    /// `eval.test` or `behavior` (probe set).
    pub source: &'static str,
    pub accuracy: f64,
    pub loss: f64,
    /// The task's attainable accuracy where it has irreducible error (`run.json`; the Bayes-optimal
    /// predictor's test accuracy), what convergence is judged against; absent, 1.
    pub attainable: Option<f64>,
    /// First step of the span convergence is judged over (the last `span` of training).
    pub span_from: u64,
    /// Lowest and highest accuracy over that span.
    pub span_min: f64,
    pub span_max: f64,
}

/// Final accuracy and loss, and the accuracy's range over the last `span` (a fraction) of the steps.
pub fn final_behavior(rows: &[Row], span: f64) -> Option<FinalBehavior> {
    let last = rows.last()?;
    let test = |r: &Row| r.eval.as_ref()?.get("test").copied();
    let has_test = rows.iter().any(|r| test(r).is_some());
    let score = |r: &Row| -> Option<(f64, f64)> {
        if has_test {
            test(r).map(|s| (s.accuracy, s.loss))
        } else {
            Some((r.behavior.accuracy, r.behavior.loss))
        }
    };
    let span_from = last.step - (last.step as f64 * span).round() as u64;
    let in_span: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.step >= span_from)
        .filter_map(score)
        .collect();
    let (accuracy, loss) = *in_span.last()?;
    Some(FinalBehavior {
        source: if has_test { "eval.test" } else { "behavior" },
        attainable: None,
        accuracy,
        loss,
        span_from,
        span_min: in_span.iter().map(|s| s.0).fold(f64::INFINITY, f64::min),
        span_max: in_span
            .iter()
            .map(|s| s.0)
            .fold(f64::NEG_INFINITY, f64::max),
    })
}

/// The window the mechanism is born in: the highest-ranked window across which the loss fell while an
/// ablation-localized component grew; a run without one falls back to its highest-ranked window.
pub fn birth_window(windows: &[Window]) -> Option<&Window> {
    let by_rank = |w: &&Window| w.rank;
    windows
        .iter()
        .filter(|w| w.loss_fell && !w.mechanism_grew.is_empty())
        .min_by_key(by_rank)
        .or_else(|| windows.iter().min_by_key(by_rank))
}

/// A window's birth step: the median of its triggers' peak steps (where the metrics changed fastest), so one
/// early or late trigger does not move it.
pub fn birth_step(window: &Window) -> u64 {
    let mut peaks: Vec<u64> = window.triggers.iter().map(|t| t.flag.peak_step).collect();
    if peaks.is_empty() {
        return (window.start_step + window.end_step) / 2;
    }
    peaks.sort_unstable();
    peaks[(peaks.len() - 1) / 2]
}

/// Each head's and MLP block's share of the summed mean-ablation Δloss at one checkpoint (`heads.L1H2`,
/// `mlp.L0`), largest first. A negative Δloss (ablating helps) counts as 0. Mean-ablation effects do not add
/// up exactly; the share ranks the components, it does not decompose the loss.
pub fn ablation_shares(row: &Row) -> Vec<(String, f64)> {
    let mut effects: Vec<(String, f64)> = row
        .heads
        .iter()
        .filter_map(|(name, head)| Some((format!("heads.{name}"), head.ablation_dloss?)))
        .chain(
            row.mlp
                .iter()
                .filter_map(|(name, mlp)| Some((format!("mlp.{name}"), mlp.ablation_dloss?))),
        )
        .map(|(name, e)| (name, e.max(0.0)))
        .collect();
    let total: f64 = effects.iter().map(|e| e.1).sum();
    for e in &mut effects {
        e.1 = if total > 0.0 { e.1 / total } else { 0.0 };
    }
    effects.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    effects
}

/// The fewest components (largest share first) whose shares add up to at least `share`; none when no
/// component has an effect.
pub fn localized(shares: &[(String, f64)], share: f64) -> Vec<String> {
    let mut sum = 0.0;
    let mut out = vec![];
    for (name, s) in shares {
        if sum >= share - 1e-12 || *s <= 0.0 {
            break;
        }
        sum += s;
        out.push(name.clone());
    }
    out
}

/// Mean pairwise Jaccard similarity |A ∩ B| / |A ∪ B| of component sets (1 when all runs localize the same
/// components; 1 for fewer than two runs).
pub fn agreement(sets: &[Vec<String>]) -> f64 {
    let mut total = 0.0;
    let mut pairs = 0;
    for (i, a) in sets.iter().enumerate() {
        for b in &sets[i + 1..] {
            let union: std::collections::BTreeSet<&String> = a.iter().chain(b).collect();
            let inter = a.iter().filter(|x| b.contains(x)).count();
            total += if union.is_empty() {
                1.0
            } else {
                inter as f64 / union.len() as f64
            };
            pairs += 1;
        }
    }
    if pairs == 0 {
        1.0
    } else {
        total / pairs as f64
    }
}

/// The largest factor by which any birth step differs from the median of them (1 when they agree; ∞ when a
/// step is 0 and the median is not). With an even count the median is the mean of the middle two.
pub fn birth_step_spread(steps: &[u64]) -> Option<(f64, f64)> {
    if steps.is_empty() {
        return None;
    }
    let mut sorted: Vec<f64> = steps.iter().map(|&s| s as f64).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    let factor = sorted
        .iter()
        .map(|&s| {
            if s == median {
                1.0
            } else if s == 0.0 || median == 0.0 {
                f64::INFINITY
            } else {
                (s / median).max(median / s)
            }
        })
        .fold(1.0, f64::max);
    Some((median, factor))
}

/// Selectivity of every residual probe in a row, keyed `boundary/key/target` (the HDF5 path of its weights).
pub fn probe_selectivity(row: &Row) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (boundary, keys) in &row.residual {
        for (key, targets) in keys {
            for (target, scores) in targets {
                out.insert(format!("{boundary}/{key}/{target}"), scores.selectivity);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::Trigger;
    use crate::windows::detector::Flag;

    fn window(rank: usize, loss_fell: bool, grew: &[&str], peaks: &[u64]) -> Window {
        Window {
            id: format!("W{rank}"),
            rank,
            start_step: 0,
            end_step: 100,
            score: 1.0,
            loss_fell,
            mechanism_grew: grew.iter().map(|s| s.to_string()).collect(),
            triggers: peaks
                .iter()
                .map(|&p| Trigger {
                    metric: "m".into(),
                    flag: Flag {
                        start_step: 0,
                        end_step: 100,
                        peak_step: p,
                        change: 1.0,
                        score: 1.0,
                        ..Flag::default()
                    },
                })
                .collect(),
            ..Window::default()
        }
    }

    #[test]
    fn the_birth_window_is_the_best_ranked_one_where_loss_fell_and_a_component_grew() {
        let ws = vec![
            window(1, false, &["mlp.L0"], &[10]),
            window(3, true, &["heads.L0H1"], &[500]),
            window(2, true, &["mlp.L0"], &[300]),
        ];
        assert_eq!(birth_window(&ws).unwrap().rank, 2);
        // None qualifies: the top-ranked one.
        let ws = vec![window(2, true, &[], &[1]), window(1, false, &["x"], &[2])];
        assert_eq!(birth_window(&ws).unwrap().rank, 1);
        assert!(birth_window(&[]).is_none());
    }

    #[test]
    fn the_birth_step_is_the_median_trigger_peak() {
        // Peaks 100, 300, 9000 → median 300 (the late outlier does not move it).
        assert_eq!(birth_step(&window(1, true, &[], &[9000, 100, 300])), 300);
        // Even count: the lower middle one.
        assert_eq!(birth_step(&window(1, true, &[], &[40, 10, 30, 20])), 20);
    }

    #[test]
    fn shares_rank_components_and_localize_the_fewest_that_cover() {
        let mut row: Row = serde_json::from_value(crate::row::tests::minimal_row_json()).unwrap();
        row.heads = [
            ("L0H0", 1.0),
            ("L0H1", 3.0),
            ("L0H2", -0.5), // ablating it helps: counts as 0
        ]
        .into_iter()
        .map(|(n, d)| {
            let head = serde_json::json!({"ablation_dloss": d, "attn": {}, "dla": 0.0,
                                          "entropy": {}, "scores": {}});
            (n.to_string(), serde_json::from_value(head).unwrap())
        })
        .collect();
        row.mlp = [(
            "L0".to_string(),
            crate::row::MlpRow {
                ablation_dloss: Some(6.0),
                ..Default::default()
            },
        )]
        .into();
        let shares = ablation_shares(&row);
        // Total 10: mlp 0.6, L0H1 0.3, L0H0 0.1, L0H2 0.
        assert_eq!(
            shares,
            vec![
                ("mlp.L0".to_string(), 0.6),
                ("heads.L0H1".to_string(), 0.3),
                ("heads.L0H0".to_string(), 0.1),
                ("heads.L0H2".to_string(), 0.0)
            ]
        );
        assert_eq!(localized(&shares, 0.8), vec!["mlp.L0", "heads.L0H1"]);
        assert_eq!(localized(&shares, 0.6), vec!["mlp.L0"]);
        assert_eq!(localized(&shares, 1.0).len(), 3);
        // No effect anywhere (an untrained model): nothing is localized.
        let none = vec![("mlp.L0".to_string(), 0.0), ("heads.L0H0".to_string(), 0.0)];
        assert!(localized(&none, 0.8).is_empty());
    }

    #[test]
    fn agreement_is_mean_pairwise_jaccard() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // {a,b} vs {a,b}: 1; {a,b} vs {a,c}: 1/3; {a,b} vs {a,c} again: 1/3 → mean (1 + 1/3 + 1/3)/3 = 5/9.
        let sets = [s(&["a", "b"]), s(&["a", "b"]), s(&["a", "c"])];
        assert!((agreement(&sets) - 5.0 / 9.0).abs() < 1e-12);
        assert_eq!(agreement(&sets[..1]), 1.0);
    }

    #[test]
    fn spread_is_the_largest_factor_from_the_median() {
        // Median 200; 100 is a factor 2 below it, 300 a factor 1.5 above.
        assert_eq!(birth_step_spread(&[300, 100, 200]), Some((200.0, 2.0)));
        // Even count: median (200 + 400) / 2 = 300; 100 is a factor 3 away.
        assert_eq!(birth_step_spread(&[100, 200, 400, 500]), Some((300.0, 3.0)));
        assert_eq!(birth_step_spread(&[7]), Some((7.0, 1.0)));
        assert_eq!(birth_step_spread(&[0, 10, 20]).unwrap().1, f64::INFINITY);
    }
}
