//! Triggers from the LLC trajectory (`analysis/llc.jsonl`, `formation llc`). Hoogland et al. 2024 ("Loss
//! landscape degeneracy and stagewise development in transformers", §3) read developmental stages off the
//! estimated LLC over training: it rises (or falls) during a stage transition and plateaus between them, and they
//! take its critical points as stage boundaries. The trajectory is sparse (a few dozen estimates at most) but
//! each estimate carries its own noise, the standard error across chains, so its changes are judged against
//! that instead of against a noise scale estimated from the series (which the rises themselves would inflate):
//!
//! - an interval between two estimates **moves** when their difference exceeds [`MOVING`] standard errors (of the
//!   difference); a **change** (`llc.estimate`) is a run of moving intervals of one sign whose end points differ
//!   by more than `k` standard errors and by at least `min_change` × the trajectory's range;
//! - a **plateau** is a run of at least two intervals that do not move; where a plateau meets a change, and where
//!   a rise meets a fall, is a **critical point** (`llc.critical_point`): a stage boundary, which adds no
//!   activity of its own (it does not make a window) and joins the nearest window.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trainer::config::WindowsConfig;

use super::Trigger;
use super::detector::{Flag, log_steps};

/// One LLC estimate: its checkpoint, value and standard error (standard deviation across chains / √chains).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LlcPoint {
    pub step: u64,
    pub llc: f64,
    pub se: f64,
}

/// Standard errors an interval's difference must exceed to count as moving: a change spread over several
/// intervals moves by a few standard errors in each (the run as a whole must then clear `k`).
pub const MOVING: f64 = 2.0;

/// A run's LLC trajectory as the detector takes it: the whole model's estimates and, when `formation llc
/// --components` made them, each component's weight-restricted estimates (`L1H2`, `L0`), all in step order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlcSeries {
    pub whole: Vec<LlcPoint>,
    pub components: BTreeMap<String, Vec<LlcPoint>>,
}

/// How much a component's weight-restricted LLC changed across a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComplexityChange {
    pub component: String,
    /// Its estimate at the first checkpoint at or after the window's end minus at the last at or before its
    /// start.
    pub change: f64,
}

/// The components whose weight-restricted LLC changed across `start..=end` by more than [`MOVING`] standard
/// errors of the difference, largest change first (the estimates bracketing the window: the last at or before
/// its start, the first at or after its end).
pub fn complexity_changes(series: &LlcSeries, start: u64, end: u64) -> Vec<ComplexityChange> {
    let mut out: Vec<ComplexityChange> = series
        .components
        .iter()
        .filter_map(|(component, points)| {
            let before = points
                .iter()
                .rev()
                .find(|p| p.step <= start)
                .or(points.first())?;
            let after = points.iter().find(|p| p.step >= end).or(points.last())?;
            let change = after.llc - before.llc;
            (after.step > before.step && change.abs() > MOVING * before.se.hypot(after.se)).then(
                || ComplexityChange {
                    component: component.clone(),
                    change,
                },
            )
        })
        .collect();
    out.sort_by(|a, b| b.change.abs().total_cmp(&a.change.abs()));
    out
}

/// The metric names of the two kinds of LLC trigger.
pub const CHANGE: &str = "llc.estimate";
pub const CRITICAL_POINT: &str = "llc.critical_point";

/// The triggers of a trajectory (`points` in step order).
pub fn llc_triggers(points: &[LlcPoint], config: &WindowsConfig) -> Vec<Trigger> {
    let n = points.len();
    if n < 3 {
        return vec![];
    }
    let lo = points.iter().map(|p| p.llc).fold(f64::INFINITY, f64::min);
    let hi = points
        .iter()
        .map(|p| p.llc)
        .fold(f64::NEG_INFINITY, f64::max);
    let scale = (hi - lo).max(0.5 * lo.abs().max(hi.abs()));
    if scale < config.min_scale {
        return vec![];
    }
    let steps: Vec<u64> = points.iter().map(|p| p.step).collect();
    let u = log_steps(&steps);
    // Interval i runs from point i to point i + 1.
    let delta: Vec<f64> = (0..n - 1)
        .map(|i| points[i + 1].llc - points[i].llc)
        .collect();
    // The standard error of the difference between estimates a and b.
    let se = |a: usize, b: usize| points[a].se.hypot(points[b].se).max(1e-3 * scale);
    let z: Vec<f64> = (0..n - 1).map(|i| delta[i] / se(i, i + 1)).collect();
    let rate: Vec<f64> = (0..n - 1)
        .map(|i| (delta[i] / (u[i + 1] - u[i]).max(1e-12)).abs())
        .collect();
    // Each interval: +1 / −1 a significant rise / fall, 0 flat.
    let kind: Vec<i8> = z
        .iter()
        .map(|&z| {
            if z.abs() > MOVING {
                z.signum() as i8
            } else {
                0
            }
        })
        .collect();
    let mut runs: Vec<(usize, usize, i8)> = vec![]; // (first interval, one past the last, kind)
    let mut i = 0;
    while i < n - 1 {
        let start = i;
        while i < n - 1 && kind[i] == kind[start] {
            i += 1;
        }
        runs.push((start, i, kind[start]));
    }
    let least = config.min_change * scale;
    let mut triggers = vec![];
    // The changes.
    let total = |a: usize, b: usize| delta[a..b].iter().sum::<f64>();
    let counts = |&(a, b, k): &(usize, usize, i8)| {
        k != 0 && total(a, b).abs() >= least && total(a, b).abs() > config.k * se(a, b)
    };
    for run in runs.iter().filter(|r| counts(r)) {
        let (a, b, _) = *run;
        let steepest = (a..b)
            .max_by(|&p, &q| rate[p].total_cmp(&rate[q]))
            .unwrap_or(a);
        let change = total(a, b);
        // Cumulative share of the change at each point of the run, for its 10–90 % rise.
        let covered = |j: usize| total(a, j) / change;
        let rise_first = (a..=b)
            .find(|&j| covered(j) >= 0.1)
            .unwrap_or(a)
            .saturating_sub(1)
            .max(a);
        let rise_last = (a..=b).find(|&j| covered(j) >= 0.9).unwrap_or(b);
        let profile = (a..=b)
            .map(|j| {
                let inner = j > a && j < b;
                let level = if inner {
                    rate[j - 1].max(rate[j]) / rate[steepest]
                } else {
                    0.0
                };
                (steps[j], level)
            })
            .collect();
        triggers.push(Trigger {
            metric: CHANGE.into(),
            flag: Flag {
                start_step: steps[a],
                end_step: steps[b],
                peak_step: steps[steepest + 1],
                rise_start_step: steps[rise_first],
                rise_end_step: steps[rise_last],
                change,
                score: change.abs() / se(a, b),
                slow: false,
                profile,
            },
        });
    }
    // The critical points: a plateau (two or more flat intervals) next to a change, or a change next to one of
    // the other sign.
    let plateau = |&(a, b, k): &(usize, usize, i8)| k == 0 && b - a >= 2;
    for pair in runs.windows(2) {
        let (left, right) = (&pair[0], &pair[1]);
        let boundary = right.0; // the point between the two runs
        let adjacent_change = if plateau(left) && counts(right) {
            Some(right)
        } else if counts(left) && plateau(right) {
            Some(left)
        } else if counts(left) && counts(right) && left.2 != right.2 {
            // At an extremum between two changes, the smaller of the two is the move it reports.
            Some(
                if total(left.0, left.1).abs() < total(right.0, right.1).abs() {
                    left
                } else {
                    right
                },
            )
        } else {
            None
        };
        let Some(&(a, b, _)) = adjacent_change else {
            continue;
        };
        let moved = total(a, b);
        let (before, after) = (boundary - 1, (boundary + 1).min(n - 1));
        triggers.push(Trigger {
            metric: CRITICAL_POINT.into(),
            flag: Flag {
                start_step: steps[before],
                end_step: steps[after],
                peak_step: steps[boundary],
                rise_start_step: steps[before],
                rise_end_step: steps[after],
                change: moved,
                score: config.k * moved.abs() / least,
                slow: false,
                // A boundary, not a change: it adds no activity of its own and joins the nearest stage.
                profile: vec![],
            },
        });
    }
    triggers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(values: &[(u64, f64)], se: f64) -> Vec<LlcPoint> {
        values
            .iter()
            .map(|&(step, llc)| LlcPoint { step, llc, se })
            .collect()
    }

    #[test]
    fn a_rise_between_plateaus_is_one_change_with_a_critical_point_at_each_end() {
        // Plateau near 5 up to step 100, rise to 80 by 700 (steepest 550 → 700), plateau after 850. Standard
        // error 0.3 per estimate: a difference of 0.3·√2 ≈ 0.42, so an interval moves above 0.85.
        let trajectory = points(
            &[
                (0, 5.0),
                (32, 5.2),
                (100, 5.1),
                (250, 18.0),
                (400, 25.0),
                (550, 40.0),
                (700, 75.0),
                (850, 80.0),
                (1000, 80.5),
                (1150, 80.2),
                (1300, 80.9),
            ],
            0.3,
        );
        let triggers = llc_triggers(&trajectory, &WindowsConfig::default());
        let changes: Vec<&Flag> = triggers
            .iter()
            .filter(|t| t.metric == CHANGE)
            .map(|t| &t.flag)
            .collect();
        assert_eq!(changes.len(), 1, "{triggers:?}");
        let c = changes[0];
        assert_eq!((c.start_step, c.end_step, c.peak_step), (100, 850, 700));
        assert!((c.change - 74.9).abs() < 1e-9);
        // 10 % of 74.9 is first covered at 250 (12.9), 90 % (67.4) at 700: the rise runs 100–700.
        assert_eq!((c.rise_start_step, c.rise_end_step), (100, 700));
        let critical: Vec<u64> = triggers
            .iter()
            .filter(|t| t.metric == CRITICAL_POINT)
            .map(|t| t.flag.peak_step)
            .collect();
        assert_eq!(critical, [100, 850]);
    }

    #[test]
    fn a_peak_is_a_critical_point_and_noise_within_the_error_is_nothing() {
        let peak = points(
            &[
                (0, 1.0),
                (10, 20.0),
                (20, 40.0),
                (30, 60.0),
                (40, 40.0),
                (50, 20.0),
            ],
            0.5,
        );
        let triggers = llc_triggers(&peak, &WindowsConfig::default());
        assert_eq!(triggers.iter().filter(|t| t.metric == CHANGE).count(), 2);
        let critical: Vec<u64> = triggers
            .iter()
            .filter(|t| t.metric == CRITICAL_POINT)
            .map(|t| t.flag.peak_step)
            .collect();
        assert_eq!(critical, [30]);
        // Wiggles of ±1 with a standard error of 1 per estimate: nothing stands out.
        let flat = points(
            &[
                (0, 10.0),
                (10, 11.0),
                (20, 10.0),
                (30, 11.0),
                (40, 10.0),
                (50, 11.0),
            ],
            1.0,
        );
        assert!(llc_triggers(&flat, &WindowsConfig::default()).is_empty());
    }

    #[test]
    fn a_change_spread_over_intervals_counts_by_its_end_points() {
        // 1.4 → 2.4 → 3.1 with standard errors 0.13–0.2: each interval moves by 2.7–4.2 standard errors (below
        // k = 6), the two together by 1.7 / 0.2 ≈ 8 (the Markov-chain example's bigram stage).
        let trajectory = vec![
            LlcPoint {
                step: 32,
                llc: 1.45,
                se: 0.14,
            },
            LlcPoint {
                step: 100,
                llc: 1.43,
                se: 0.13,
            },
            LlcPoint {
                step: 250,
                llc: 2.44,
                se: 0.20,
            },
            LlcPoint {
                step: 400,
                llc: 3.09,
                se: 0.16,
            },
            LlcPoint {
                step: 550,
                llc: 3.18,
                se: 0.17,
            },
            LlcPoint {
                step: 700,
                llc: 3.18,
                se: 0.15,
            },
        ];
        let triggers = llc_triggers(&trajectory, &WindowsConfig::default());
        let change: Vec<(u64, u64)> = triggers
            .iter()
            .filter(|t| t.metric == CHANGE)
            .map(|t| (t.flag.start_step, t.flag.end_step))
            .collect();
        assert_eq!(change, [(100, 400)], "{triggers:?}");
        let critical: Vec<u64> = triggers
            .iter()
            .filter(|t| t.metric == CRITICAL_POINT)
            .map(|t| t.flag.peak_step)
            .collect();
        // One flat interval before step 100 is not a plateau: the only critical point is where the rise ends.
        assert_eq!(critical, [400]);
    }

    #[test]
    fn a_window_names_the_components_whose_restricted_llc_changed_across_it() {
        let at = |values: &[(u64, f64)]| points(values, 0.5);
        let series = LlcSeries {
            whole: vec![],
            components: BTreeMap::from([
                // Grows by 10 across 400–750 (estimates at 400 and 850 bracket it): named.
                ("L1H1".to_string(), at(&[(0, 2.0), (400, 3.0), (850, 13.0)])),
                // Moves by 1 < 2 · 0.71: not named.
                ("L0H0".to_string(), at(&[(0, 2.0), (400, 3.0), (850, 4.0)])),
                // Falls by 5: named after L1H1.
                ("L0".to_string(), at(&[(0, 9.0), (400, 9.0), (850, 4.0)])),
            ]),
        };
        let changes = complexity_changes(&series, 400, 750);
        let named: Vec<(&str, f64)> = changes
            .iter()
            .map(|c| (c.component.as_str(), c.change))
            .collect();
        assert_eq!(named, [("L1H1", 10.0), ("L0", -5.0)]);
    }
}
