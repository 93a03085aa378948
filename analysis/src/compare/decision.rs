//! The decision rule for starting deep circuit work (the user's plan; SPEC §8): READY only when every
//! criterion holds for a group of runs of one config (its seeds). Each criterion reports its measured value
//! and its threshold, so a NOT READY says what to fix. Defaults and their reasoning: docs/compare.md.

use serde::Serialize;
use trainer::config::DecisionConfig;

use super::RunSummary;
use super::summary::{agreement, birth_step_spread};

/// One criterion, measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Criterion {
    pub name: &'static str,
    pub passed: bool,
    /// What was measured (worst run first where runs differ).
    pub measured: String,
    pub threshold: String,
}

/// The rule's verdict on one group of runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub ready: bool,
    pub criteria: Vec<Criterion>,
}

/// Applies the rule to the runs of one config (one per seed).
pub fn decide(runs: &[&RunSummary], config: &DecisionConfig) -> Decision {
    let criteria = vec![
        converged(runs, config),
        replicated(runs, config),
        localized(runs, config),
        stabilized(runs, config),
    ];
    Decision {
        ready: criteria.iter().all(|c| c.passed),
        criteria,
    }
}

/// Behavior converged: in every run, over the last `converged_span` of training, the accuracy stayed at or
/// above `min_accuracy` of what the task allows (its attainable accuracy where it has irreducible error, else 1)
/// and moved by at most `max_accuracy_change`.
fn converged(runs: &[&RunSummary], c: &DecisionConfig) -> Criterion {
    let finals: Vec<_> = runs
        .iter()
        .filter_map(|r| r.final_behavior.as_ref())
        .collect();
    // The run furthest below its own threshold, as (its lowest accuracy, its threshold).
    let worst = finals
        .iter()
        .map(|f| (f.span_min, c.min_accuracy * f.attainable.unwrap_or(1.0)))
        .min_by(|a, b| (a.0 - a.1).total_cmp(&(b.0 - b.1)));
    let moved = finals
        .iter()
        .map(|f| f.span_max - f.span_min)
        .fold(0.0, f64::max);
    let attainable = finals.iter().find_map(|f| f.attainable);
    Criterion {
        name: "behavior converged",
        passed: !runs.is_empty()
            && finals.len() == runs.len()
            && worst.is_some_and(|(lowest, threshold)| lowest >= threshold)
            && moved <= c.max_accuracy_change,
        measured: match worst {
            None => "no behavior recorded".into(),
            Some((lowest, _)) => format!(
                "lowest {} accuracy over the last {:.0}% of steps {lowest:.4}, largest change {moved:.4}",
                finals[0].source,
                c.converged_span * 100.0
            ),
        },
        threshold: match (attainable, worst) {
            (Some(a), Some((_, threshold))) => format!(
                "≥ {} × the task's attainable accuracy {a:.4} = {threshold:.4}, and change ≤ {}",
                c.min_accuracy, c.max_accuracy_change
            ),
            _ => format!(
                "≥ {} and change ≤ {}",
                c.min_accuracy, c.max_accuracy_change
            ),
        },
    }
}

/// A birth window found in every seed, at least `min_seeds` seeds, birth steps within `birth_step_factor`
/// of their median.
fn replicated(runs: &[&RunSummary], c: &DecisionConfig) -> Criterion {
    let steps: Vec<u64> = runs.iter().filter_map(|r| r.birth_step).collect();
    let spread = birth_step_spread(&steps);
    let passed = runs.len() >= c.min_seeds
        && steps.len() == runs.len()
        && spread.is_some_and(|(_, factor)| factor <= c.birth_step_factor);
    Criterion {
        name: "birth window replicated",
        passed,
        measured: match spread {
            Some((median, factor)) => format!(
                "{} of {} seeds have a birth window; birth steps {:?}, median {median}, within a factor {factor:.2} of it",
                steps.len(),
                runs.len(),
                steps
            ),
            None => format!("no birth window in {} seeds", runs.len()),
        },
        threshold: format!(
            "≥ {} seeds, every one with a window, factor ≤ {}",
            c.min_seeds, c.birth_step_factor
        ),
    }
}

/// The mechanism localized: in every run, at most `max_components` components carry `ablation_share` of
/// the ablation effect at the last checkpoint.
fn localized(runs: &[&RunSummary], c: &DecisionConfig) -> Criterion {
    let most = runs.iter().map(|r| r.localized.len()).max().unwrap_or(0);
    let sets: Vec<Vec<String>> = runs.iter().map(|r| r.localized.clone()).collect();
    Criterion {
        name: "mechanism localized",
        passed: !runs.is_empty()
            && runs.iter().all(|r| !r.localized.is_empty())
            && most <= c.max_components,
        measured: format!(
            "at most {most} components carry {:.0}% of the ablation effect (agreement across seeds {:.2})",
            c.ablation_share * 100.0,
            agreement(&sets)
        ),
        threshold: format!("≤ {} components", c.max_components),
    }
}

/// Dynamics stabilized after the birth window: in every run, from every checkpoint of the settling span (the
/// later of the window's end and the start of the last `converged_span` of training) to the last, CKA and the
/// selective probes' direction cosine at or above their thresholds.
fn stabilized(runs: &[&RunSummary], c: &DecisionConfig) -> Criterion {
    let threshold = format!(
        "CKA ≥ {}, probe cosine ≥ {} (probes with selectivity ≥ {})",
        c.min_cka_to_final, c.min_probe_cosine, c.min_probe_selectivity
    );
    let measured: Vec<_> = runs.iter().filter_map(|r| r.stability.as_ref()).collect();
    if measured.len() < runs.len() || runs.is_empty() {
        let why: Vec<String> = runs
            .iter()
            .filter(|r| r.stability.is_none())
            .map(|r| format!("{}: {}", r.name, r.stability_note))
            .collect();
        return Criterion {
            name: "dynamics stabilized",
            passed: false,
            measured: if why.is_empty() {
                "no runs".into()
            } else {
                why.join("; ")
            },
            threshold,
        };
    }
    // The lowest CKA of any run, and where (a run with no comparable position has a NaN and is skipped).
    let (min_cka, min_cka_at) = runs
        .iter()
        .filter_map(|r| r.stability.as_ref().map(|s| (r, s)))
        .filter(|(_, s)| !s.min_cka.is_nan())
        .min_by(|a, b| a.1.min_cka.total_cmp(&b.1.min_cka))
        .map(|(r, s)| (s.min_cka, format!(" ({}, {})", r.name, s.min_cka_at)))
        .unwrap_or((f64::INFINITY, String::new()));
    let cosines: Vec<Option<f64>> = measured.iter().map(|s| s.median_probe_cosine).collect();
    let min_cosine = cosines
        .iter()
        .flatten()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let all_have_probes = cosines.iter().all(Option::is_some);
    Criterion {
        name: "dynamics stabilized",
        passed: min_cka >= c.min_cka_to_final
            && all_have_probes
            && min_cosine >= c.min_probe_cosine,
        measured: format!(
            "over the settling span (after the window and in the last {:.0}% of steps) to the last checkpoint: lowest CKA {min_cka:.4}{min_cka_at}, lowest median probe cosine {}",
            c.converged_span * 100.0,
            if all_have_probes {
                format!("{min_cosine:.4}")
            } else {
                "— (a run has no selective probe)".into()
            }
        ),
        threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::stability::Stability;
    use crate::compare::summary::FinalBehavior;

    fn run(name: &str, birth: Option<u64>, localized: usize, cka: f64) -> RunSummary {
        RunSummary {
            name: name.into(),
            birth_step: birth,
            final_behavior: Some(FinalBehavior {
                source: "eval.test",
                attainable: None,
                accuracy: 1.0,
                loss: 0.01,
                span_from: 800,
                span_min: 0.99,
                span_max: 1.0,
            }),
            localized: (0..localized).map(|i| format!("heads.L0H{i}")).collect(),
            stability: Some(Stability {
                from_step: 500,
                to_step: 1000,
                checkpoints: 3,
                min_cka: cka,
                min_cka_at: "b".into(),
                cka_compared: 3,
                median_probe_cosine: Some(0.95),
                probes_compared: 2,
            }),
            ..RunSummary::default()
        }
    }

    #[test]
    fn three_agreeing_seeds_are_ready() {
        let runs = [
            run("s0", Some(1000), 2, 0.95),
            run("s1", Some(1200), 2, 0.97),
            run("s2", Some(900), 1, 0.99),
        ];
        let refs: Vec<&RunSummary> = runs.iter().collect();
        let d = decide(&refs, &DecisionConfig::default());
        assert!(d.ready, "{d:#?}");
        // Birth steps 900, 1000, 1200: median 1000, the largest factor 1.2.
        assert!(
            d.criteria[1].measured.contains("factor 1.20"),
            "{}",
            d.criteria[1].measured
        );
    }

    #[test]
    fn each_criterion_fails_on_its_own() {
        let c = DecisionConfig::default();
        let check = |runs: Vec<RunSummary>, failing: &str| {
            let refs: Vec<&RunSummary> = runs.iter().collect();
            let d = decide(&refs, &c);
            assert!(!d.ready);
            let failed: Vec<&str> = d
                .criteria
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name)
                .collect();
            assert_eq!(failed, vec![failing], "{d:#?}");
        };
        let good = || {
            vec![
                run("a", Some(100), 2, 0.95),
                run("b", Some(110), 2, 0.95),
                run("c", Some(120), 2, 0.95),
            ]
        };
        // Two seeds are too few.
        let mut runs = good();
        runs.pop();
        check(runs, "birth window replicated");
        // A birth step a factor 2 away from the median (100 vs 200, 210).
        let mut runs = good();
        runs[1].birth_step = Some(200);
        runs[2].birth_step = Some(210);
        check(runs, "birth window replicated");
        // A seed without a window.
        let mut runs = good();
        runs[0].birth_step = None;
        check(runs, "birth window replicated");
        // Four components needed in one seed.
        let mut runs = good();
        runs[2].localized = (0..4).map(|i| format!("heads.L1H{i}")).collect();
        check(runs, "mechanism localized");
        // Still reorganizing after the window; the criterion says which run and where.
        let mut runs = good();
        runs[0].stability.as_mut().unwrap().min_cka = 0.5;
        let refs: Vec<&RunSummary> = runs.iter().collect();
        let stabilized = &decide(&refs, &c).criteria[3];
        assert!(
            stabilized.measured.contains("lowest CKA 0.5000 (a, b)"),
            "{stabilized:?}"
        );
        check(runs, "dynamics stabilized");
        // Test accuracy still moving at the end.
        let mut runs = good();
        runs[1].final_behavior.as_mut().unwrap().span_min = 0.9;
        check(runs, "behavior converged");
    }

    #[test]
    fn convergence_is_judged_against_what_the_task_allows() {
        // A task whose best predictor reaches 0.6: a run steady at 0.55 has 0.55 ≥ 0.9 × 0.6 = 0.54.
        let mut runs = vec![
            run("a", Some(100), 2, 0.95),
            run("b", Some(110), 2, 0.95),
            run("c", Some(120), 2, 0.95),
        ];
        for r in &mut runs {
            let f = r.final_behavior.as_mut().unwrap();
            (f.attainable, f.span_min, f.span_max) = (Some(0.6), 0.55, 0.56);
        }
        let refs: Vec<&RunSummary> = runs.iter().collect();
        let converged = &decide(&refs, &DecisionConfig::default()).criteria[0];
        assert!(converged.passed, "{converged:?}");
        assert!(converged.threshold.contains("= 0.5400"), "{converged:?}");
        // 0.53 is below it; without the declared 0.6 even 0.55 is far below 0.9.
        runs[2].final_behavior.as_mut().unwrap().span_min = 0.53;
        let refs: Vec<&RunSummary> = runs.iter().collect();
        assert!(!decide(&refs, &DecisionConfig::default()).criteria[0].passed);
        for r in &mut runs {
            r.final_behavior.as_mut().unwrap().attainable = None;
            r.final_behavior.as_mut().unwrap().span_min = 0.55;
        }
        let refs: Vec<&RunSummary> = runs.iter().collect();
        assert!(!decide(&refs, &DecisionConfig::default()).criteria[0].passed);
    }
}
