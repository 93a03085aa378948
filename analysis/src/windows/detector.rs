//! The birth-window detector on one series (SPEC §6), pure functions over (step, value) points.
//!
//! Checkpoints are log-spaced early and linear later, so the detector works in u = ln(1 + step):
//! 1. smooth the values with a Gaussian over checkpoint indices whose width grows with the index
//!    (σ_i = max(`min_sigma`, `smooth_fraction` · i)), so the dense late checkpoints are smoothed over more of
//!    them;
//! 2. differentiate, d_i = dy/du by centred differences (one-sided at the ends);
//! 3. subtract a running median of d over ±`baseline_halfwidth` checkpoints, so a smooth trend (a slow drift)
//!    is not a jump, multiply by the local Δu (a derivative's noise grows as 1/Δu where linear checkpoints
//!    crowd together in log-step) and take the robust noise scale of what remains, σ̂ = 1.4826 · MAD;
//! 4. flag checkpoints where |d_i − baseline_i|·Δu_i > `k` · σ̂ (σ̂ at least 1 % of the series' scale) and
//!    the smoothed series moved by at least `min_change` of its scale (its range, but at least half its largest
//!    magnitude) across the flagged run; series whose scale stays below `min_scale` are not examined;
//! 5. extend each run of flagged checkpoints over its neighbours whose excess, of the same sign, is still above
//!    `k_extend` · σ̂ (hysteresis with two thresholds, as in Canny's edge detector, 1986): a rise spread over
//!    several checkpoints is then judged by its whole change, not by its steepest point alone. Each extended
//!    run, widened by one checkpoint on each side, is a window;
//! 6. outside those, flag a slow change: a run of more than `baseline_halfwidth` checkpoints whose change rate
//!    itself stays above `k_extend` · σ̂ with one sign, across which the series covers at least `slow_change` of
//!    its scale within `slow_span` of the run's log-step range (step 3's median absorbs such a steady rise).
//!
//! The essential-dynamics trigger ([`turning_points`]) uses the same smoothing on the leading principal
//! components of the output trajectory and flags where it turns by more than `turn_degrees`.

use serde::{Deserialize, Serialize};
use trainer::config::WindowsConfig;

/// One flagged stretch of one series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    /// First and last checkpoint step of the window.
    pub start_step: u64,
    pub end_step: u64,
    /// Where the derivative peaks.
    pub peak_step: u64,
    /// The checkpoints that bracket the change itself: the last before the smoothed series has covered 10 % of
    /// `change` and the first at which it has covered 90 % (for essential dynamics, the flagged stretch).
    /// A stage's window is built from these, so it is about as narrow as the change it contains.
    #[serde(default)]
    pub rise_start_step: u64,
    #[serde(default)]
    pub rise_end_step: u64,
    /// Change of the smoothed series across the window (end − start).
    pub change: f64,
    /// Peak |d − baseline|·Δu / σ̂: how many noise scales the change rate stands out.
    pub score: f64,
    /// Found by the slow-change rule (a steady rise longer than the baseline's window), not by its excess rate.
    #[serde(default)]
    pub slow: bool,
    /// How fast the series changes at each checkpoint of the stretch, relative to its peak (1 at `peak_step`,
    /// 0 at the two widened ends): the shape [`super::stages`] adds up to tell stages apart. Not written.
    #[serde(skip)]
    pub profile: Vec<(u64, f64)>,
}

/// ln(1 + step) of each checkpoint.
pub fn log_steps(steps: &[u64]) -> Vec<f64> {
    steps.iter().map(|&s| (1.0 + s as f64).ln()).collect()
}

/// Gaussian smoothing over checkpoint indices with width σ_i = max(min_sigma, fraction · i).
pub fn smooth(values: &[f64], min_sigma: f64, fraction: f64) -> Vec<f64> {
    let n = values.len();
    (0..n)
        .map(|i| {
            let sigma = (fraction * i as f64).max(min_sigma).max(1e-9);
            let reach = (3.0 * sigma).ceil() as usize;
            let (lo, hi) = (i.saturating_sub(reach), (i + reach).min(n - 1));
            let (mut sum, mut weight) = (0.0, 0.0);
            for (j, v) in values.iter().enumerate().take(hi + 1).skip(lo) {
                let w = (-((i as f64 - j as f64).powi(2)) / (2.0 * sigma * sigma)).exp();
                sum += w * v;
                weight += w;
            }
            sum / weight
        })
        .collect()
}

/// dy/du by centred differences, one-sided at the ends.
pub fn derivative(u: &[f64], y: &[f64]) -> Vec<f64> {
    let n = y.len();
    (0..n)
        .map(|i| {
            let (a, b) = (i.saturating_sub(1), (i + 1).min(n - 1));
            let du = u[b] - u[a];
            if du > 0.0 { (y[b] - y[a]) / du } else { 0.0 }
        })
        .collect()
}

/// Median of a slice (0 for an empty one).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return 0.0;
    }
    sorted.sort_by(f64::total_cmp);
    let m = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[m]
    } else {
        0.5 * (sorted[m - 1] + sorted[m])
    }
}

/// Robust noise scale: 1.4826 × the median absolute deviation (the standard deviation for Gaussian noise).
pub fn mad_scale(values: &[f64]) -> f64 {
    let center = median(values);
    let deviations: Vec<f64> = values.iter().map(|v| (v - center).abs()).collect();
    1.4826 * median(&deviations)
}

/// The maximal runs of `true` in `flags`, as (first index, one past the last).
fn runs(flags: &[bool]) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let mut i = 0;
    while i < flags.len() {
        if flags[i] {
            let first = i;
            while i < flags.len() && flags[i] {
                i += 1;
            }
            out.push((first, i));
        } else {
            i += 1;
        }
    }
    out
}

/// The windows of one series: `steps` strictly increasing, `values` finite, same length.
pub fn detect(steps: &[u64], values: &[f64], config: &WindowsConfig) -> Vec<Flag> {
    let n = values.len();
    if n < 5 {
        return vec![];
    }
    let u = log_steps(steps);
    let y = smooth(values, config.min_sigma, config.smooth_fraction);
    let d = derivative(&u, &y);
    let w = config.baseline_halfwidth;
    // The excess change rate over its local baseline, in the series' own units per checkpoint interval
    // (times Δu): noise in a derivative grows as 1/Δu where linear checkpoints crowd together in log-step,
    // and this keeps the noise scale comparable along the run.
    // The smoothing widens with the index, and the change rate of Gaussian-smoothed white noise has a standard
    // deviation ∝ σ_i^(−3/2); the factor σ_i^(3/2) makes the noise level the same all along.
    let span = |i: usize| u[(i + 1).min(n - 1)] - u[i.saturating_sub(1)];
    let width = |i: usize| (config.smooth_fraction * i as f64).max(config.min_sigma);
    let residual: Vec<f64> = (0..n)
        .map(|i| {
            let baseline = median(&d[i.saturating_sub(w)..(i + w + 1).min(n)]);
            (d[i] - baseline) * span(i) * width(i).powf(1.5)
        })
        .collect();
    // The series' scale: its range, but at least half its largest magnitude, so that a metric resting near a
    // value (accuracy at 1, CKA near 1) does not turn its small wobbles into large relative changes.
    let scale = {
        let lo = y.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (hi - lo).max(0.5 * lo.abs().max(hi.abs()))
    };
    if scale < config.min_scale {
        return vec![];
    }
    // σ̂ has a floor of 1 % of the scale: a series flat but for one step would otherwise score without bound.
    let sigma = mad_scale(&residual).max(0.01 * scale);
    let flagged: Vec<bool> = residual
        .iter()
        .map(|r| r.abs() > config.k * sigma)
        .collect();
    let mut extended = flagged.clone();
    for (first, past) in runs(&flagged) {
        // Checkpoint j continues the run from its edge checkpoint `edge`.
        let continues = |j: usize, edge: usize| {
            residual[j].signum() == residual[edge].signum()
                && residual[j].abs() > config.k_extend * sigma
        };
        (0..first)
            .rev()
            .take_while(|&j| continues(j, first))
            .for_each(|j| extended[j] = true);
        (past..n)
            .take_while(|&j| continues(j, past - 1))
            .for_each(|j| extended[j] = true);
    }
    // The flag of checkpoints a..=b (a run first..past widened by one), steepest at `peak` by `strength`.
    let flag =
        |(a, b): (usize, usize), (first, past): (usize, usize), strength: &[f64], slow: bool| {
            // Steepest in the direction of the change: a run can join a stretch of the other sign (a series
            // evaluated every 100 steps has, at step 0, a first interval spanning the whole log-spaced start,
            // where its excess over a baseline that already holds the later rise is strongly negative), which
            // is not where the change happens.
            let sign = (y[b] - y[a]).signum();
            let along = |i: usize| sign * strength[i];
            let peak = (first..past)
                .max_by(|&p, &q| along(p).total_cmp(&along(q)))
                .filter(|&p| along(p) > 0.0)
                .unwrap_or_else(|| {
                    (first..past)
                        .max_by(|&p, &q| strength[p].abs().total_cmp(&strength[q].abs()))
                        .unwrap_or(first)
                });
            let top = strength[peak].abs();
            let directed = along(peak) > 0.0;
            let level = |i: usize| {
                if directed {
                    along(i).max(0.0) / top
                } else {
                    strength[i].abs() / top
                }
            };
            let (rise_first, rise_last) = rise(&values[a..=b], &y[a..=b]);
            let profile = if slow {
                // Its steepest checkpoint alone: spread over its whole stretch, a slow change would join the
                // faster changes it spans into one wide window (docs/windows.md).
                vec![
                    (steps[peak.saturating_sub(1)], 0.0),
                    (steps[peak], 1.0),
                    (steps[(peak + 1).min(n - 1)], 0.0),
                ]
            } else {
                (a..=b)
                    .map(|i| {
                        let inside = (first..past).contains(&i);
                        (steps[i], if inside { level(i) } else { 0.0 })
                    })
                    .collect()
            };
            Flag {
                start_step: steps[a],
                end_step: steps[b],
                peak_step: steps[peak],
                rise_start_step: steps[a + rise_first],
                rise_end_step: steps[a + rise_last],
                change: y[b] - y[a],
                score: top / sigma,
                slow,
                profile,
            }
        };
    let mut flags = vec![];
    let mut covered = vec![false; n];
    for (first, past) in runs(&extended) {
        let (a, b) = (first.saturating_sub(1), past.min(n - 1));
        let change = y[b] - y[a];
        if change.abs() >= config.min_change * scale {
            flags.push(flag((a, b), (first, past), &residual, false));
            covered[a..=b].iter_mut().for_each(|c| *c = true);
        }
    }
    // Slow changes: a rise longer than the baseline's window has a steady change rate, which its running
    // median absorbs, so step 3 sees nothing. A stretch outside every flag where the rate itself (not its
    // excess) stays above `k_extend` noise scales with one sign for more than `baseline_halfwidth` checkpoints
    // is a change too if the series covers at least `slow_change` of its scale across it within `slow_span` of
    // the run's log-step range; a trend over most of the run is not a birth.
    let rate: Vec<f64> = (0..n)
        .map(|i| d[i] * span(i) * width(i).powf(1.5))
        .collect();
    let run_span = u[n - 1] - u[0];
    for sign in [1.0, -1.0] {
        let moving: Vec<bool> = (0..n)
            .map(|i| !covered[i] && sign * rate[i] > config.k_extend * sigma)
            .collect();
        // Longer than half the baseline's window, or step 3 would have seen it: the median of a window more
        // than half inside a steady rise is the rise's own rate.
        for (first, past) in runs(&moving).into_iter().filter(|(f, p)| p - f > w) {
            let (a, b) = (first.saturating_sub(1), past.min(n - 1));
            let change = y[b] - y[a];
            if sign * change < config.slow_change * scale
                || u[b] - u[a] > config.slow_span * run_span
            {
                continue;
            }
            flags.push(flag((a, b), (first, past), &rate, true));
        }
    }
    flags.sort_by_key(|f| f.start_step);
    flags
}

/// The 10–90 % rise of a stretch: the index of the last point before the series has covered 10 % of its change
/// and of the first from which it stays above 90 %, in the raw values `raw` and in their smoothed version `y`
/// (the change measured between `y`'s ends), whichever pair is narrower at each end. The smoothing spreads a
/// sharp jump over a few checkpoints on each side; the raw values show where it happened, and their noise can
/// only move these bounds outwards (a point above 10 % early, one below 90 % late), where the smoothed bound
/// holds them.
fn rise(raw: &[f64], y: &[f64]) -> (usize, usize) {
    let n = y.len();
    let change = y[n - 1] - y[0];
    let covered = |v: f64| {
        if change == 0.0 {
            1.0
        } else {
            (v - y[0]) / change
        }
    };
    let bounds = |series: &[f64]| {
        let first = (0..n).find(|&i| covered(series[i]) >= 0.1).unwrap_or(0);
        let last = (0..n)
            .rev()
            .find(|&i| covered(series[i]) < 0.9)
            .map_or(0, |i| (i + 1).min(n - 1));
        (first.saturating_sub(1), last.max(first))
    };
    let (smooth_first, smooth_last) = bounds(y);
    let (raw_first, raw_last) = bounds(raw);
    let first = smooth_first.max(raw_first);
    let last = smooth_last.min(raw_last).max(first + 1).min(n - 1);
    (first.min(last), last)
}

/// Where a trajectory `points` [checkpoint][component] turns sharply: after smoothing each component, the
/// angle at checkpoint i between the displacements from i − h to i and from i to i + h (h = 2 checkpoints,
/// so a turn spread over a few checkpoints by the smoothing still shows), flagged above
/// `config.turn_degrees` where both displacements are at least half the median one (a stalled trajectory
/// turns at random). Each run of flagged checkpoints is one flag; `change` is its largest angle in degrees.
pub fn turning_points(steps: &[u64], points: &[Vec<f64>], config: &WindowsConfig) -> Vec<Flag> {
    const H: usize = 2;
    let n = points.len();
    if n < 2 * H + 1 {
        return vec![];
    }
    let dims = points[0].len();
    let columns: Vec<Vec<f64>> = (0..dims)
        .map(|c| {
            let column: Vec<f64> = points.iter().map(|p| p[c]).collect();
            smooth(&column, config.min_sigma, config.smooth_fraction)
        })
        .collect();
    let between =
        |a: usize, b: usize| -> Vec<f64> { columns.iter().map(|c| c[b] - c[a]).collect() };
    let length = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let typical = median(
        &(0..n - H)
            .map(|i| length(&between(i, i + H)))
            .collect::<Vec<_>>(),
    );
    let angle: Vec<Option<f64>> = (0..n)
        .map(|i| {
            if i < H || i + H >= n {
                return None;
            }
            let (before, after) = (between(i - H, i), between(i, i + H));
            let (lb, la) = (length(&before), length(&after));
            if lb < 0.5 * typical || la < 0.5 * typical || lb == 0.0 || la == 0.0 {
                return None;
            }
            let cos = before.iter().zip(&after).map(|(x, y)| x * y).sum::<f64>() / (lb * la);
            Some(cos.clamp(-1.0, 1.0).acos().to_degrees())
        })
        .collect();
    let flagged: Vec<bool> = angle
        .iter()
        .map(|a| a.is_some_and(|a| a > config.turn_degrees))
        .collect();
    let mut flags = vec![];
    for (first, past) in runs(&flagged) {
        let peak = (first..past)
            .max_by(|&p, &q| angle[p].unwrap_or(0.0).total_cmp(&angle[q].unwrap_or(0.0)))
            .unwrap_or(first);
        let largest = angle[peak].unwrap_or(0.0);
        let (start_step, end_step) = (steps[first - 1], steps[past.min(n - 1)]);
        let profile = (first - 1..=past.min(n - 1))
            .map(|i| {
                let inside = (first..past).contains(&i);
                (
                    steps[i],
                    if inside {
                        angle[i].unwrap_or(0.0) / largest
                    } else {
                        0.0
                    },
                )
            })
            .collect();
        flags.push(Flag {
            start_step,
            end_step,
            peak_step: steps[peak],
            rise_start_step: start_step,
            rise_end_step: end_step,
            change: largest,
            score: largest / config.turn_degrees,
            slow: false,
            profile,
        });
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use host::rng::SplitMix64;

    /// The checkpoint schedule of the examples: 0, 1, 2, 4, …, 64, then every 100 up to `last`.
    fn schedule(last: u64) -> Vec<u64> {
        let mut steps = vec![0];
        let mut s = 1;
        while s <= 64 {
            steps.push(s);
            s *= 2;
        }
        steps.extend((1..=last / 100).map(|k| k * 100));
        steps
    }

    fn noise(n: usize, sd: f64, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix64::new(seed);
        (0..n).map(|_| sd * rng.normal()).collect()
    }

    fn sigmoid(step: u64, centre: f64, width: f64) -> f64 {
        1.0 / (1.0 + (-(step as f64 - centre) / width).exp())
    }

    fn config() -> WindowsConfig {
        WindowsConfig::default()
    }

    #[test]
    fn a_sigmoid_jump_is_found_at_its_centre() {
        let steps = schedule(4000);
        let noise = noise(steps.len(), 0.01, 1);
        let values: Vec<f64> = steps
            .iter()
            .zip(&noise)
            .map(|(&s, e)| sigmoid(s, 2000.0, 60.0) + e)
            .collect();
        let flags = detect(&steps, &values, &config());
        assert_eq!(flags.len(), 1, "{flags:?}");
        let f = &flags[0];
        assert!(f.start_step <= 2000 && 2000 <= f.end_step, "{f:?}");
        assert!((f.peak_step as i64 - 2000).abs() <= 100, "{f:?}");
        assert!(f.change > 0.5, "{f:?}");
    }

    #[test]
    fn a_rise_in_a_series_sampled_every_100_steps_is_steepest_in_the_rise() {
        // An evaluation every 100 steps, flat near 0.02 and then rising by 0.9 around step 500 (as a test accuracy
        // on the induction example): the first interval, 0–100, spans the whole log-spaced start, and its excess
        // over a baseline that already holds the rise is strongly negative. The hysteresis joins it to the rise
        // in one flag; its steepest point is in the rise, not at step 0, and step 0 adds nothing to its profile.
        let steps: Vec<u64> = (0..=25).map(|k| k * 100).collect();
        let noise = noise(steps.len(), 0.003, 4);
        let values: Vec<f64> = steps
            .iter()
            .zip(&noise)
            .map(|(&s, e)| 0.02 + 0.9 * sigmoid(s, 500.0, 80.0) + e)
            .collect();
        let flags = detect(&steps, &values, &config());
        let rise = flags
            .iter()
            .find(|f| f.change > 0.5)
            .unwrap_or_else(|| panic!("{flags:?}"));
        assert!((400..=700).contains(&rise.peak_step), "{flags:?}");
        assert!(
            rise.profile
                .iter()
                .all(|&(step, level)| step >= 300 || level == 0.0),
            "{flags:?}"
        );
    }

    #[test]
    fn a_jump_between_two_checkpoints_rises_between_them() {
        // A step from 0 to 1 between checkpoints 2000 and 2100: the smoothing spreads it over a few checkpoints
        // on each side, the raw values put its 10–90 % rise exactly between the two.
        let steps = schedule(4000);
        let noise = noise(steps.len(), 0.01, 3);
        let values: Vec<f64> = steps
            .iter()
            .zip(&noise)
            .map(|(&s, e)| f64::from(s > 2000) + e)
            .collect();
        let flags = detect(&steps, &values, &config());
        assert_eq!(flags.len(), 1, "{flags:?}");
        let f = &flags[0];
        assert!(f.end_step - f.start_step >= 300, "{f:?}");
        assert_eq!((f.rise_start_step, f.rise_end_step), (2000, 2100), "{f:?}");
        // The smoothed values alone give a wider rise.
        let y = smooth(&values, config().min_sigma, config().smooth_fraction);
        let (a, b) = (
            steps.iter().position(|&s| s == f.start_step).unwrap(),
            steps.iter().position(|&s| s == f.end_step).unwrap(),
        );
        let (first, last) = rise(&y[a..=b], &y[a..=b]);
        assert!(steps[a + last] - steps[a + first] >= 200, "{first} {last}");
    }

    #[test]
    fn pure_noise_yields_no_window() {
        let steps = schedule(4000);
        for seed in 0..20 {
            let values = noise(steps.len(), 1.0, seed);
            let flags = detect(&steps, &values, &config());
            assert!(flags.is_empty(), "seed {seed}: {flags:?}");
        }
    }

    #[test]
    fn two_separated_jumps_yield_two_windows() {
        let steps = schedule(6000);
        let noise = noise(steps.len(), 0.01, 2);
        let values: Vec<f64> = steps
            .iter()
            .zip(&noise)
            .map(|(&s, e)| sigmoid(s, 1500.0, 50.0) - 2.0 * sigmoid(s, 4500.0, 80.0) + e)
            .collect();
        let flags = detect(&steps, &values, &config());
        assert_eq!(flags.len(), 2, "{flags:?}");
        assert!(flags[0].start_step <= 1500 && 1500 <= flags[0].end_step);
        assert!(flags[1].start_step <= 4500 && 4500 <= flags[1].end_step);
        assert!(flags[0].change > 0.0 && flags[1].change < 0.0);
    }

    #[test]
    fn a_spread_out_rise_is_judged_by_its_whole_change() {
        // A sigmoid over ~15 linear checkpoints (the test accuracy of a slow grokking run): only its steepest
        // checkpoints stand out by k noise scales, and they alone move it by less than min_change; extended
        // over the neighbours that still stand out by k_extend, the window holds most of the rise.
        let steps = schedule(4000);
        let noise = noise(steps.len(), 0.005, 5);
        let values: Vec<f64> = steps
            .iter()
            .zip(&noise)
            .map(|(&s, e)| sigmoid(s, 2600.0, 380.0) + e)
            .collect();
        let strict = WindowsConfig {
            k_extend: config().k,
            slow_span: 0.01,
            ..config()
        };
        assert!(detect(&steps, &values, &strict).is_empty());
        let flags = detect(&steps, &values, &config());
        assert_eq!(flags.len(), 1, "{flags:?}");
        assert!(flags[0].start_step <= 2600 && 2600 <= flags[0].end_step);
        assert!(flags[0].change > 0.3, "{:?}", flags[0]);
    }

    #[test]
    fn a_slow_linear_drift_yields_none() {
        let steps = schedule(4000);
        let noise = noise(steps.len(), 0.01, 3);
        // Linear in the step: 0 → 1 over the run, the steepest a "slow" drift gets here.
        let values: Vec<f64> = steps
            .iter()
            .zip(&noise)
            .map(|(&s, e)| s as f64 / 4000.0 + e)
            .collect();
        let flags = detect(&steps, &values, &config());
        assert!(flags.is_empty(), "{flags:?}");
        // …and linear in log-step.
        let values: Vec<f64> = log_steps(&steps)
            .iter()
            .zip(&noise)
            .map(|(u, e)| u / 8.3 + e)
            .collect();
        let flags = detect(&steps, &values, &config());
        assert!(flags.is_empty(), "{flags:?}");
    }

    #[test]
    fn a_steady_rise_longer_than_the_baseline_window_is_one_window() {
        // The test accuracy of modular-addition-small seed 0: 0.03 → 0.95 at an even pace over 26 checkpoints
        // (steps 1000–3600), longer than the ±8-checkpoint baseline, which takes its rate for the trend.
        let steps = schedule(4000);
        let noise = noise(steps.len(), 0.005, 6);
        let ramp = |s: u64| 0.03 + 0.92 * ((s as f64 - 1000.0) / 2600.0).clamp(0.0, 1.0);
        let values: Vec<f64> = steps
            .iter()
            .zip(&noise)
            .map(|(&s, e)| ramp(s) + e)
            .collect();
        let without = WindowsConfig {
            slow_span: 0.01,
            ..config()
        };
        assert!(
            detect(&steps, &values, &without)
                .iter()
                .all(|f| f.change.abs() < 0.5),
            "{:?}",
            detect(&steps, &values, &without)
        );
        let flags = detect(&steps, &values, &config());
        let big: Vec<&Flag> = flags.iter().filter(|f| f.change > 0.5).collect();
        assert_eq!(big.len(), 1, "{flags:?}");
        assert!(
            big[0].start_step <= 1300 && big[0].end_step >= 3300,
            "{:?}",
            big[0]
        );
        assert!(
            big[0].rise_start_step >= 1000 && big[0].rise_end_step <= 3700,
            "{:?}",
            big[0]
        );
    }

    #[test]
    fn a_jump_in_the_log_spaced_early_part_is_found() {
        // Uneven steps: the jump sits between 8 and 32, where checkpoints double.
        let steps = schedule(4000);
        let noise = noise(steps.len(), 0.01, 4);
        let values: Vec<f64> = steps
            .iter()
            .zip(&noise)
            .map(|(&s, e)| sigmoid(s, 16.0, 2.0) + e)
            .collect();
        let flags = detect(&steps, &values, &config());
        assert_eq!(flags.len(), 1, "{flags:?}");
        assert!(
            flags[0].start_step <= 16 && 16 <= flags[0].end_step,
            "{:?}",
            flags[0]
        );
    }

    #[test]
    fn smoothing_keeps_constants_and_the_median_and_mad_are_robust() {
        assert_eq!(smooth(&[2.0; 7], 1.0, 0.1), vec![2.0; 7]);
        assert_eq!(median(&[3.0, 1.0, 2.0, 100.0]), 2.5);
        // 1.4826 · median(|x − 2|) over [1, 2, 3, 100] = 1.4826 · 1.
        assert!((mad_scale(&[1.0, 2.0, 3.0, 100.0]) - 1.4826).abs() < 1e-12);
    }

    #[test]
    fn a_trajectory_that_turns_back_is_flagged_where_it_turns() {
        // Out along x for 20 checkpoints, then along y: one right-angle turn at index 20.
        let steps: Vec<u64> = (0..40).map(|i| i * 100).collect();
        let points: Vec<Vec<f64>> = (0..40)
            .map(|i| {
                if i <= 20 {
                    vec![i as f64, 0.0]
                } else {
                    vec![20.0, (i - 20) as f64]
                }
            })
            .collect();
        let flags = turning_points(&steps, &points, &config());
        assert!(!flags.is_empty(), "{flags:?}");
        assert!(
            flags.iter().all(|f| (1800..=2200).contains(&f.peak_step)),
            "{flags:?}"
        );
        // A straight line never turns.
        let line: Vec<Vec<f64>> = (0..40).map(|i| vec![i as f64, 2.0 * i as f64]).collect();
        assert!(turning_points(&steps, &line, &config()).is_empty());
    }
}
