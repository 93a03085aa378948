//! `formation windows` on real formation runs (the birth-window issue): the detector finds grokking apart
//! from memorization on modular addition (trained here in full, about a minute in release mode) and the
//! induction-head window on induction ([`check_induction_windows`], on the run the main job's trace test makes).

use crate::common::*;
use serde_json::Value;

/// Trains the config at `config` with `--analyze` into `dir/run`, runs the detector and returns its windows.
fn windows_of(config: &str, dir: &std::path::Path) -> Vec<Value> {
    ok(formation(
        &["train", config, "--analyze", "--out", "run"],
        dir,
    ));
    let out = ok(formation(&["windows", "run"], dir));
    assert!(String::from_utf8_lossy(&out.stdout).contains("| W0 |"));
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("run/analysis/birth_windows.json")).unwrap(),
    )
    .unwrap();
    json["windows"].as_array().unwrap().clone()
}

fn triggered(window: &Value, metric: &str) -> Option<f64> {
    window["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["metric"] == metric)
        .map(|t| t["change"].as_f64().unwrap())
}

fn summary(windows: &[Value]) -> String {
    windows
        .iter()
        .map(|w| {
            let metrics: Vec<&str> = w["triggers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["metric"].as_str().unwrap())
                .collect();
            format!(
                "{} {}-{}: {metrics:?}",
                w["id"], w["start_step"], w["end_step"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Grokking apart from memorization on seeds 1 and 2 (trained side by side). Not seed 0: there, under the
/// current kernels' rounding, the test accuracy rises slowly and evenly (0.2 → 1.0 over steps 1 400–3 900,
/// 26 checkpoints), longer than the running-median baseline, which takes it for a drift; the test loss's
/// cliff (1 300–1 600) and the MLP becoming necessary (2 200–2 600) are windows there, but no window has the
/// test accuracy among its triggers (docs/windows.md, "What it misses").
#[test]
fn grokking_is_a_window_of_its_own_after_memorization() {
    std::thread::scope(|scope| {
        for seed in [1, 2] {
            scope.spawn(move || grokking_apart_from_memorization(seed));
        }
    });
}

fn grokking_apart_from_memorization(seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    let text = std::fs::read_to_string(example("modular-addition-small.toml")).unwrap();
    assert!(text.contains("\nseed = 0\n"));
    std::fs::write(
        &config,
        text.replace("\nseed = 0\n", &format!("\nseed = {seed}\n")),
    )
    .unwrap();
    let windows = windows_of(config.to_str().unwrap(), tmp.path());
    // The run memorizes and then groks within its 4 000 steps (the README's example table): some evaluation has
    // both accuracies high. Not necessarily the last: seed 2 groks by step 3 900 (test accuracy 0.99) and then
    // has a loss spike at step 4 000 (0.84 / 0.79), as float32 Adam with weight decay 1.0 does here.
    let evals = jsonl(&tmp.path().join("run/metrics/eval.jsonl"));
    let accuracies = |e: &Value| {
        (
            e["train"]["accuracy"].as_f64().unwrap(),
            e["test"]["accuracy"].as_f64().unwrap(),
        )
    };
    assert!(
        evals
            .iter()
            .map(accuracies)
            .any(|(train, test)| train >= 0.99 && test >= 0.95),
        "seed {seed}: no evaluation with train accuracy >= 0.99 and test accuracy >= 0.95: {:?}",
        evals.iter().map(accuracies).collect::<Vec<_>>()
    );
    let memorization = windows
        .iter()
        .find(|w| triggered(w, "behavior.split_accuracy.train").is_some_and(|c| c > 0.5))
        .unwrap_or_else(|| {
            panic!(
                "seed {seed}: no memorization window:\n{}",
                summary(&windows)
            )
        });
    // Grokking: after the train accuracy has saturated, the window where the test items' accuracy rises most
    // (on seed 1 it already rises 0.03 → 0.38 during memorization).
    let rows = jsonl(&tmp.path().join("run/analysis/checkpoint_metrics.jsonl"));
    let accuracy = |step: u64, split: &str| {
        rows.iter()
            .find(|r| r["step"].as_u64() == Some(step))
            .map(|r| r["behavior"]["split_accuracy"][split].as_f64().unwrap())
            .unwrap()
    };
    let grokking = windows
        .iter()
        .filter(|w| accuracy(w["start_step"].as_u64().unwrap(), "train") > 0.99)
        .filter_map(|w| Some((w, triggered(w, "behavior.split_accuracy.test")?)))
        .filter(|(_, c)| *c > 0.0)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(w, _)| w)
        .unwrap_or_else(|| panic!("seed {seed}: no grokking window:\n{}", summary(&windows)));
    assert_ne!(memorization["id"], grokking["id"], "{}", summary(&windows));
    let start = grokking["start_step"].as_u64().unwrap();
    // …and the test accuracy rises inside it. The rise as a whole is slow (thousands of steps on seeds 0–2) and
    // holds several changes (the test loss's drop, the MLP becoming necessary, the heads' ablation effects
    // collapsing), each a narrow window of its own; this one holds its steepest part.
    let end = grokking["end_step"].as_u64().unwrap();
    let rise = accuracy(end, "test") - accuracy(start, "test");
    assert!(
        rise > 0.2,
        "seed {seed}: test accuracy rises by {rise} in {start}-{end}"
    );
    assert!(memorization["end_step"].as_u64() <= Some(start));
    assert_eq!(grokking["loss_fell"], true);
}

/// The windows of the induction example's run in `run` (trained with `--analyze` and `formation windows`; the
/// main job's trace test makes it, so that CI trains the 2 500-step example once): the induction-head window, the
/// earlier one before it, and the induction window's width and replay cost.
pub fn check_induction_windows(run: &std::path::Path) {
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("analysis/birth_windows.json")).unwrap(),
    )
    .unwrap();
    let windows = json["windows"].as_array().unwrap().clone();
    let window = windows
        .iter()
        .find(|w| {
            (0..4).any(|h| {
                triggered(w, &format!("heads.L1H{h}.scores.induction_score"))
                    .is_some_and(|c| c > 0.2)
            })
        })
        .unwrap_or_else(|| panic!("no induction window:\n{}", summary(&windows)));
    assert!(
        triggered(window, "behavior.in_context_score").is_some_and(|c| c < 0.0),
        "{}",
        summary(&windows)
    );
    assert_eq!(window["loss_fell"], true);
    assert_eq!(window["kind"], "behavioral");
    // The two rises of the probe-set accuracy (0.02 → 0.15 up to step ~250, then the induction bump) are two
    // windows: an earlier one where the residual stream reorganizes, ending where the induction window starts
    // (and kept when the run goes on for 1 800 steps after the heads form, which lowers every series' noise
    // scale: docs/windows.md, stage separation).
    let start = window["start_step"].as_u64().unwrap();
    assert!(
        windows.iter().any(|w| w["end_step"].as_u64() <= Some(start)
            && w["triggers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| { t["metric"].as_str().unwrap().starts_with("residual.") })),
        "{}",
        summary(&windows)
    );
    // The induction window is about as narrow as the bump: within twice the log-step width of the strongest
    // layer-1 head's 10–90 % induction-score rise (and at most two checkpoint intervals wider than it).
    let rows = jsonl(&run.join("analysis/checkpoint_metrics.jsonl"));
    let rise = (0..4)
        .map(|h| {
            let series: Vec<(u64, f64)> = rows
                .iter()
                .map(|r| {
                    let score = &r["heads"][format!("L1H{h}")]["scores"]["induction_score"];
                    (r["step"].as_u64().unwrap(), score.as_f64().unwrap())
                })
                .collect();
            let (lo, hi) = (
                series[0].1,
                series.iter().map(|p| p.1).fold(f64::MIN, f64::max),
            );
            let at = |fraction: f64| {
                series
                    .iter()
                    .find(|p| p.1 >= lo + fraction * (hi - lo))
                    .unwrap()
                    .0
            };
            (hi - lo, at(0.1), at(0.9))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap();
    let log_width = |a: u64, b: u64| ((1 + b) as f64 / (1 + a) as f64).ln();
    let end = window["end_step"].as_u64().unwrap();
    assert!(
        log_width(start, end)
            <= 2.0 * log_width(rise.1, rise.2).max(log_width(rise.1, rise.1 + 100)),
        "window {start}-{end}, induction-score rise {}-{}",
        rise.1,
        rise.2
    );
    // Its dense replay (from the checkpoint at its start, which is one) costs under 15 % of the run's steps.
    let steps = rows.last().unwrap()["step"].as_u64().unwrap();
    assert!(
        (end - start) as f64 / (steps as f64) < 0.15,
        "window {start}-{end} of {steps} steps"
    );
    // The heads whose ablation effect grew include a layer-1 head.
    let grew: Vec<&str> = window["mechanism_grew"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(grew.iter().any(|c| c.starts_with("heads.L1")), "{grew:?}");
}
