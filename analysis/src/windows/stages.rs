//! Stage separation: which triggers belong to one change. Every trigger is one unit of evidence that something
//! changed, spread over the checkpoints of its 10–90 % rise in proportion to its change-rate profile there (0 at
//! its flagged stretch's ends, 1 at its peak, linear in log-step between checkpoints); the summed activity over
//! the run's checkpoints, a density of changes, has one peak per change. Neighbouring peaks are two stages when
//! the activity between them falls below `split_depth` × the lower one (a valley, as in topographic prominence),
//! one change otherwise. Each trigger belongs to the stage that holds most of its unit (where it rises); chains
//! of overlapping triggers no longer join distinct changes. A stage's window ([`extent`]) is the part of its core
//! where its triggers' raw values move.

use std::collections::BTreeMap;

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

/// One trigger's unit of evidence at each checkpoint of `grid` (steps, increasing; `u` their log-steps): its
/// profile at the checkpoints of its 10–90 % rise (its whole stretch if the rise holds none of it), scaled to sum
/// to 1; all zero for a trigger without a profile (an LLC critical point).
fn unit(grid: &[u64], u: &[f64], trigger: &Trigger) -> Vec<f64> {
    let flag = &trigger.flag;
    let profile: Vec<f64> = u.iter().map(|&x| bump(trigger, x)).collect();
    let rise: Vec<f64> = grid
        .iter()
        .zip(&profile)
        .map(|(step, &b)| {
            let inside = (flag.rise_start_step..=flag.rise_end_step).contains(step);
            if inside { b } else { 0.0 }
        })
        .collect();
    let mut own = if rise.iter().sum::<f64>() > 0.0 {
        rise
    } else {
        profile
    };
    let mass: f64 = own.iter().sum();
    if mass > 0.0 {
        own.iter_mut().for_each(|o| *o /= mass);
    }
    own
}

/// The summed activity at each checkpoint of the triggers whose [`unit`]s are `units`. A slow change or a
/// sparsely sampled series (evaluations every 100 steps against log-spaced checkpoints) spreads its one unit thin
/// instead of filling the valley between two changes at full height, and a trigger's hysteresis tails, which
/// lengthen as a longer quiet run lowers the noise scale, do not add to it.
fn activity(units: &[Vec<f64>], checkpoints: usize) -> Vec<f64> {
    let mut level = vec![0.0; checkpoints];
    for own in units {
        level.iter_mut().zip(own).for_each(|(l, o)| *l += o);
    }
    level
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
    let u = log_steps(grid);
    let units: Vec<Vec<f64>> = triggers.iter().map(|t| unit(grid, &u, t)).collect();
    let level = activity(&units, grid.len());
    let mut stages: Vec<Stage> = basins(&level, config.split_depth)
        .into_iter()
        .map(|(first, peak, last)| {
            let floor = config.core_level * level[peak];
            // Where the stage's own stretch is above the level up to its edge, the core takes one more checkpoint
            // if that one is quiet (zero activity, in no stage): the change began after it. A lone turn of the
            // output trajectory at one checkpoint is then the two intervals around it, not a single step.
            let quiet = |i: usize| level.get(i).is_some_and(|&l| l == 0.0);
            let below = (first..peak).rev().find(|&i| level[i] < floor).unwrap_or(
                if first > 0 && quiet(first - 1) {
                    first - 1
                } else {
                    first
                },
            );
            let above = (peak..=last)
                .find(|&i| level[i] < floor)
                .unwrap_or(if quiet(last + 1) { last + 1 } else { last });
            Stage {
                peak,
                first,
                last,
                core: (below, above),
                triggers: vec![],
            }
        })
        .collect();
    for (trigger, own) in triggers.into_iter().zip(units) {
        // The stage that holds most of the trigger's unit of evidence, where it rises; the steepest point can lie
        // outside its rise (a series evaluated every 100 steps is steepest at step 0 by its one-sided first
        // difference, while its accuracy rises at 200–700). A trigger without activity (an LLC critical point)
        // goes to the stage nearest its peak.
        let share = |s: &Stage| own[s.first..=s.last].iter().sum::<f64>();
        let at = grid.partition_point(|&s| s < trigger.flag.peak_step);
        let distance = |s: &Stage| {
            if at < s.first {
                s.first - at
            } else {
                at.saturating_sub(s.last)
            }
        };
        let holder = if own.iter().any(|&o| o > 0.0) {
            stages.iter_mut().max_by(|a, b| {
                share(a)
                    .total_cmp(&share(b))
                    .then(distance(b).cmp(&distance(a)))
            })
        } else {
            stages.iter_mut().min_by_key(|s| distance(s))
        };
        if let Some(stage) = holder {
            stage.triggers.push(trigger);
        }
    }
    stages.retain(|s| !s.triggers.is_empty());
    stages
}

/// A stage's window as grid indices (first, last). The activity is a smoothed change rate, so a jump between two
/// checkpoints lights up one or two more on each side; the raw values show between which checkpoints it happened.
/// Within the stage's core, each trigger counts its raw change in each checkpoint interval of its 10–90 % rise
/// (in the direction of its change, relative to its largest move between two of its points: 1; a move between
/// points that span k checkpoint intervals puts 1/k of it in each), and the window runs from the first
/// to the last interval whose summed count is at least `core_level` × the busiest one's, widened to hold the
/// activity's peak. A trigger without a series of its own (essential dynamics, the LLC) counts its
/// profile's mean over each interval. The window never reaches outside the core.
pub fn extent(
    grid: &[u64],
    stage: &Stage,
    series: &BTreeMap<String, Vec<(u64, f64)>>,
    core_level: f64,
) -> (usize, usize) {
    let (lo, hi) = stage.core;
    if hi <= lo {
        return (lo, hi);
    }
    let u = log_steps(grid);
    let mut level = vec![0.0; hi - lo];
    for trigger in &stage.triggers {
        let flag = &trigger.flag;
        let mut own = vec![0.0; hi - lo];
        // What one counts as 1: the trigger's largest move between two of its points (inside the core).
        let mut top = 0.0f64;
        match series.get(&trigger.metric) {
            Some(points) => {
                let sign = flag.change.signum();
                for pair in points.windows(2) {
                    let ((s0, v0), (s1, v1)) = (pair[0], pair[1]);
                    if s0 < flag.rise_start_step || s1 > flag.rise_end_step {
                        continue;
                    }
                    // The change between two of the series' points, shared by the grid intervals between them: a
                    // series evaluated every 100 steps moves once across the eight log-spaced intervals below
                    // step 100, and each of them holds an eighth of that move.
                    let spanned: Vec<usize> = (lo..hi)
                        .filter(|&k| grid[k] >= s0 && grid[k + 1] <= s1)
                        .collect();
                    let moved = (sign * (v1 - v0)).max(0.0);
                    if !spanned.is_empty() {
                        top = top.max(moved);
                    }
                    let gain = moved / spanned.len().max(1) as f64;
                    spanned.iter().for_each(|&k| own[k - lo] += gain);
                }
            }
            None => {
                for k in lo..hi {
                    own[k - lo] = 0.5 * (bump(trigger, u[k]) + bump(trigger, u[k + 1]));
                }
                top = own.iter().copied().fold(0.0, f64::max);
            }
        }
        if top > 0.0 {
            level.iter_mut().zip(&own).for_each(|(l, o)| *l += o / top);
        }
    }
    let busiest = (0..level.len())
        .max_by(|&p, &q| level[p].total_cmp(&level[q]))
        .unwrap_or(0);
    if level[busiest] <= 0.0 {
        return (lo, hi);
    }
    let floor = core_level * level[busiest];
    // The stage is one change (its valleys are shallow), so only its tails are trimmed: a dip inside stays.
    let first = (0..level.len())
        .find(|&k| level[k] >= floor)
        .unwrap_or(busiest);
    let last = (0..level.len())
        .rfind(|&k| level[k] >= floor)
        .unwrap_or(busiest);
    (
        (lo + first).min(stage.peak),
        (lo + last + 1).max(stage.peak),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::detector::Flag;

    /// [`trigger`] on the series `metric`.
    fn named(metric: &str, start: u64, peak: u64, end: u64) -> Trigger {
        Trigger {
            metric: metric.into(),
            ..trigger(start, peak, end)
        }
    }

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
    fn a_window_is_the_intervals_that_hold_the_raw_change() {
        // Steps 0..=1000 every 100, a stage whose core is all of it. Three series jump between 400 and 500 (their
        // flagged stretches and rises wider, as smoothing makes them), one more creeps up over 700–800 alone, and an
        // essential-dynamics turn at 500 has no series of its own.
        let grid: Vec<u64> = (0..=10).map(|i| i * 100).collect();
        let step_at = |at: u64, height: f64| -> Vec<(u64, f64)> {
            grid.iter()
                .map(|&s| (s, if s >= at { height } else { 0.0 }))
                .collect()
        };
        let mut series = BTreeMap::new();
        let mut triggers = vec![];
        for (name, height) in [("a", 1.0), ("b", -2.0), ("c", 0.5)] {
            series.insert(name.to_string(), step_at(500, height));
            let mut t = trigger(200, 400, 700);
            t.metric = name.into();
            t.flag.change = height;
            triggers.push(t);
        }
        series.insert("late".to_string(), step_at(800, 1.0));
        triggers.push(named("late", 600, 800, 900));
        triggers.push(named(crate::windows::ESSENTIAL_DYNAMICS, 400, 500, 600));
        let stage = Stage {
            peak: 4,
            first: 0,
            last: 10,
            core: (1, 9),
            triggers,
        };
        assert_eq!(extent(&grid, &stage, &series, 0.3), (4, 5));
        // The window never leaves the core and always holds the activity's peak: in a core of 500–900 only the
        // late series moves (700–800), and the peak at 600 widens the window to it.
        let narrow = Stage {
            core: (5, 9),
            peak: 6,
            triggers: stage.triggers[..4].to_vec(),
            ..stage
        };
        assert_eq!(extent(&grid, &narrow, &series, 0.3), (6, 8));
        // Two busy intervals of one stage (its valley was shallow in the smoothed activity) keep the quiet one
        // between them: only the tails are trimmed.
        let mut two = stage.triggers[..3].to_vec();
        for name in ["d", "e", "f"] {
            series.insert(name.to_string(), step_at(700, 1.0));
            let mut t = trigger(300, 600, 900);
            t.metric = name.into();
            two.push(t);
        }
        let both = Stage {
            core: (1, 9),
            peak: 5,
            triggers: two,
            ..narrow
        };
        assert_eq!(extent(&grid, &both, &series, 0.3), (4, 7));
    }

    #[test]
    fn a_sparsely_sampled_move_shares_its_weight_among_the_intervals_it_spans() {
        // Three series jump between checkpoints 8 and 16; two evaluations, taken at 0 and 100 only, move once
        // across the eight log-spaced intervals below 100. Each interval holds an eighth of that move, so the
        // window is 8–16; counted whole in every interval they span (as before), they stretched it to 0–100.
        let grid: Vec<u64> = vec![0, 1, 2, 4, 8, 16, 32, 64, 100, 150, 200];
        let mut series = BTreeMap::new();
        let mut triggers = vec![];
        for name in ["a", "b", "c"] {
            let jump = grid.iter().map(|&s| (s, if s >= 16 { 1.0 } else { 0.0 }));
            series.insert(name.to_string(), jump.collect());
            triggers.push(named(name, 4, 16, 32));
        }
        for name in ["eval.a", "eval.b"] {
            series.insert(name.to_string(), vec![(0, 0.0), (100, 1.0), (200, 1.0)]);
            let mut t = named(name, 0, 100, 200);
            (t.flag.rise_start_step, t.flag.rise_end_step) = (0, 100);
            triggers.push(t);
        }
        let stage = Stage {
            peak: 5,
            first: 0,
            last: 10,
            core: (0, 10),
            triggers,
        };
        assert_eq!(extent(&grid, &stage, &series, 0.3), (4, 5));
    }

    #[test]
    fn a_lone_turn_at_one_checkpoint_is_the_two_intervals_around_it() {
        // An essential-dynamics turn at step 500 alone: its activity is positive at that checkpoint only; the
        // core takes the quiet checkpoint on each side, and so does the window.
        let grid: Vec<u64> = (0..=10).map(|i| i * 100).collect();
        let mut turn = trigger(400, 500, 600);
        turn.metric = crate::windows::ESSENTIAL_DYNAMICS.into();
        let found = stages(&grid, vec![turn], &WindowsConfig::default());
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].first, found[0].peak, found[0].last), (5, 5, 5));
        assert_eq!(found[0].core, (4, 6));
        assert_eq!(extent(&grid, &found[0], &BTreeMap::new(), 0.3), (4, 6));
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

    /// Two quick changes, at 100 and at 500 (two triggers each), and three copies of a trigger with the
    /// change-rate `profile` and the 10–90 % rise `rise`, over the induction example's checkpoints up to 1 000
    /// (0, 1, 2, 4, …, 64, then every 50): the stages' peaks and trigger counts.
    fn two_changes_and(profile: &[(u64, f64)], rise: (u64, u64)) -> Vec<(u64, usize)> {
        let mut grid = vec![0, 1, 2, 4, 8, 16, 32, 64];
        grid.extend((2..=20).map(|k| k * 50));
        let mut triggers = vec![
            trigger(64, 100, 150),
            trigger(64, 100, 150),
            trigger(450, 500, 550),
            trigger(450, 500, 550),
        ];
        for _ in 0..3 {
            let mut t = trigger(profile[0].0, rise.0, profile[profile.len() - 1].0);
            t.flag.profile = profile.to_vec();
            (t.flag.rise_start_step, t.flag.rise_end_step) = rise;
            t.flag.peak_step = profile
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(rise.0, |p| p.0);
            triggers.push(t);
        }
        stages(&grid, triggers, &WindowsConfig::default())
            .iter()
            .map(|s| (grid[s.peak], s.triggers.len()))
            .collect()
    }

    #[test]
    fn a_change_spread_over_many_checkpoints_does_not_join_two_changes() {
        // Three evaluations every 100 steps whose change runs across both changes (from step 0, over the
        // log-spaced checkpoints, to 600). At full height their profiles filled the valley (3 × 0.8 against
        // peaks of 2 + 2.4) and the two changes were one; as one unit each, spread over the 20 checkpoints they
        // span, they barely raise it.
        let sparse = [
            (0, 0.9),
            (100, 0.9),
            (200, 0.8),
            (300, 0.8),
            (400, 0.9),
            (500, 1.0),
            (600, 0.0),
        ];
        let found = two_changes_and(&sparse, (0, 600));
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].0, found[1].0), (100, 500));
    }

    #[test]
    fn a_change_counts_where_it_rises_not_along_its_tails() {
        // Three triggers that rise over 100–150 with tails flagged to 600 (a longer quiet run lowers the noise
        // scale, and the hysteresis then follows a trigger further): only their rise counts, so the tails do not
        // join the two changes, and the three belong to the first.
        let tailed = [
            (64, 0.0),
            (100, 1.0),
            (150, 0.9),
            (300, 0.8),
            (450, 0.7),
            (600, 0.0),
        ];
        assert_eq!(
            two_changes_and(&tailed, (100, 150)),
            vec![(100, 5), (500, 2)]
        );
    }

    #[test]
    fn a_trigger_belongs_where_it_rises_even_if_steepest_elsewhere() {
        // Three evaluations steepest at step 0 (their one-sided first difference over 0–100) whose rise is
        // 450–550: they belong to the change at 500, not to the one nearest their steepest point.
        let early_peak = [
            (0, 1.0),
            (100, 0.3),
            (450, 0.5),
            (500, 0.9),
            (550, 0.5),
            (600, 0.0),
        ];
        assert_eq!(
            two_changes_and(&early_peak, (450, 550)),
            vec![(100, 2), (500, 5)]
        );
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
