//! Stage separation: which triggers belong to one change. Every trigger adds its change-rate profile over its
//! flagged stretch (0 at its ends, 1 at its peak, linear in log-step between checkpoints); the summed activity
//! over the run's checkpoints has one peak per change. Neighbouring peaks are two stages when the activity between them falls
//! below `split_depth` × the lower one (a valley, as in topographic prominence), one change otherwise. Each
//! trigger belongs to the stage whose stretch of activity holds its peak; chains of overlapping triggers no
//! longer join distinct changes.

use trainer::config::WindowsConfig;

use super::Trigger;
use super::detector::log_steps;

/// One stage: the grid indices of its activity peak, of its first and last checkpoint, of its core (the
/// checkpoints around the peak where the activity is at least `core_level` × the peak's, widened by one on each
/// side, within the stage), and its triggers.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub peak: usize,
    pub first: usize,
    pub last: usize,
    pub core: (usize, usize),
    pub triggers: Vec<Trigger>,
}

/// The activity of `trigger` at log-step `u`: its change-rate profile, linear in log-step between its
/// checkpoints and zero outside its stretch.
fn bump(trigger: &Trigger, u: f64) -> f64 {
    let points: Vec<(f64, f64)> = trigger
        .flag
        .profile
        .iter()
        .map(|&(step, level)| ((1.0 + step as f64).ln(), level))
        .collect();
    match points.iter().position(|&(at, _)| at >= u) {
        Some(0) if points[0].0 == u => points[0].1,
        Some(0) | None => 0.0,
        Some(j) => {
            let ((u0, a), (u1, b)) = (points[j - 1], points[j]);
            a + (b - a) * (u - u0) / (u1 - u0)
        }
    }
}

/// The summed activity of `triggers` at each checkpoint of `grid` (steps, increasing).
pub fn activity(grid: &[u64], triggers: &[Trigger]) -> Vec<f64> {
    log_steps(grid)
        .iter()
        .map(|&u| triggers.iter().map(|t| bump(t, u)).sum())
        .collect()
}

/// The stretches of `activity` that are one change each, as (first, peak, last) grid indices: every local
/// maximum starts as its own stage; neighbours whose valley stays at or above `split_depth` × the lower peak
/// merge (the higher peak stays), until every valley is deep enough. Zero activity always separates.
pub fn basins(activity: &[f64], split_depth: f64) -> Vec<(usize, usize, usize)> {
    let n = activity.len();
    // Local maxima; a plateau counts once, at its first point.
    let mut peaks: Vec<usize> = (0..n)
        .filter(|&i| {
            activity[i] > 0.0
                && (i == 0 || activity[i] > activity[i - 1])
                && (i + 1 == n || activity[i] >= activity[i + 1])
        })
        .collect();
    let valley = |a: usize, b: usize| {
        (a..=b)
            .min_by(|&p, &q| activity[p].total_cmp(&activity[q]))
            .unwrap_or(a)
    };
    loop {
        let shallow = (1..peaks.len()).find(|&j| {
            let (a, b) = (peaks[j - 1], peaks[j]);
            let low = activity[valley(a, b)];
            low > 0.0 && low >= split_depth * activity[a].min(activity[b])
        });
        let Some(j) = shallow else { break };
        let lower = if activity[peaks[j - 1]] < activity[peaks[j]] {
            j - 1
        } else {
            j
        };
        peaks.remove(lower);
    }
    // Each stage runs from just after the valley before its peak to the valley after it, within the stretch
    // where the activity is positive.
    let mut out = vec![];
    for (j, &peak) in peaks.iter().enumerate() {
        let mut first = if j == 0 {
            0
        } else {
            valley(peaks[j - 1], peak) + 1
        };
        let mut last = if j + 1 == peaks.len() {
            n - 1
        } else {
            valley(peak, peaks[j + 1])
        };
        while first < peak && activity[first] == 0.0 {
            first += 1;
        }
        while last > peak && activity[last] == 0.0 {
            last -= 1;
        }
        // Within one positive stretch, a zero between two peaks is the valley itself.
        if let Some(z) = (first..peak).rev().find(|&i| activity[i] == 0.0) {
            first = z + 1;
        }
        if let Some(z) = (peak..=last).find(|&i| activity[i] == 0.0) {
            last = z - 1;
        }
        out.push((first, peak, last));
    }
    out
}

/// Groups `triggers` into stages over the checkpoint steps `grid` (every step a trigger names is on it).
pub fn stages(grid: &[u64], triggers: Vec<Trigger>, config: &WindowsConfig) -> Vec<Stage> {
    let level = activity(grid, &triggers);
    let mut stages: Vec<Stage> = basins(&level, config.split_depth)
        .into_iter()
        .map(|(first, peak, last)| {
            let floor = config.core_level * level[peak];
            let below = (first..peak)
                .rev()
                .find(|&i| level[i] < floor)
                .unwrap_or(first);
            let above = (peak..=last).find(|&i| level[i] < floor).unwrap_or(last);
            Stage {
                peak,
                first,
                last,
                core: (below, above),
                triggers: vec![],
            }
        })
        .collect();
    for trigger in triggers {
        let at = grid.partition_point(|&s| s < trigger.flag.peak_step);
        // The stage holding the peak; a peak in no stage's stretch (cannot happen: its own bump is there)
        // goes to the nearest one.
        let distance = |s: &Stage| {
            if at < s.first {
                s.first - at
            } else {
                at.saturating_sub(s.last)
            }
        };
        if let Some(stage) = stages.iter_mut().min_by_key(|s| distance(s)) {
            stage.triggers.push(trigger);
        }
    }
    stages.retain(|s| !s.triggers.is_empty());
    stages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::detector::Flag;

    /// A trigger whose profile rises linearly from `start` to its peak and falls to `end`.
    fn trigger(start: u64, peak: u64, end: u64) -> Trigger {
        Trigger {
            metric: "m".into(),
            flag: Flag {
                start_step: start,
                end_step: end,
                peak_step: peak,
                rise_start_step: start,
                rise_end_step: end,
                change: 1.0,
                score: 10.0,
                slow: false,
                profile: vec![(start, 0.0), (peak, 1.0), (end, 0.0)],
            },
        }
    }

    #[test]
    fn a_profile_is_interpolated_in_log_step() {
        let t = trigger(0, 99, 9999);
        // ln 1 = 0, ln 100 ≈ 4.605, ln 10000 ≈ 9.210: halfway up at u ≈ 2.303 (step e^2.303 − 1 = 9).
        assert!((bump(&t, 0.0)).abs() < 1e-12);
        assert!((bump(&t, 100f64.ln()) - 1.0).abs() < 1e-12);
        assert!((bump(&t, 10f64.ln()) - 0.5).abs() < 1e-12);
        assert!((bump(&t, 1000f64.ln()) - 0.5).abs() < 1e-12);
        assert_eq!(bump(&t, 20000f64.ln()), 0.0);
    }

    #[test]
    fn a_deep_valley_separates_and_a_shallow_one_merges() {
        // Two peaks (3 and 2) with a valley of 0.5: 0.5 < 0.5 · 2 → two stages.
        let a = [0.0, 1.0, 3.0, 1.0, 0.5, 1.0, 2.0, 1.0, 0.0];
        assert_eq!(basins(&a, 0.5), vec![(1, 2, 4), (5, 6, 7)]);
        // A valley of 1.5 ≥ 0.5 · 2 → one stage around the higher peak.
        let b = [0.0, 1.0, 3.0, 2.0, 1.5, 1.8, 2.0, 1.0, 0.0];
        assert_eq!(basins(&b, 0.5), vec![(1, 2, 7)]);
        // Zero activity between two stretches always separates.
        let c = [1.0, 0.0, 0.0, 1.0];
        assert_eq!(basins(&c, 0.5), vec![(0, 0, 0), (3, 3, 3)]);
    }

    #[test]
    fn overlapping_triggers_of_two_changes_make_two_stages() {
        // Steps 0..=2000 every 100. Two changes, at 600 and at 1400, with triggers that overlap (one reaching from
        // 300 to 1100, one from 900 to 1700, a chain the old overlap merge joined), and two tight ones at each peak.
        let grid: Vec<u64> = (0..=20).map(|i| i * 100).collect();
        let triggers = vec![
            trigger(300, 600, 1100),
            trigger(500, 600, 700),
            trigger(900, 1400, 1700),
            trigger(1300, 1400, 1500),
        ];
        let found = stages(&grid, triggers, &WindowsConfig::default());
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(grid[found[0].peak], 600);
        assert_eq!(grid[found[1].peak], 1400);
        assert_eq!(found[0].triggers.len(), 2);
        assert_eq!(found[1].triggers.len(), 2);
    }
}
