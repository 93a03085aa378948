//! `formation llc`: the LLC trajectory over a run's saved checkpoints within its budget, with chain diagnostics
//! (resumable, deterministic), the weight-restricted LLC per component, the ε / nβ calibration grid, and the
//! trajectory as a trigger source for `formation windows` (the birth-window issue, part 2); and the same
//! trajectory estimated in the training loop (`[llc] in_loop`).

use crate::common::*;
use serde_json::Value;

/// The CI config with a small sampler: 2 chains of up to 20 draws, at most twice the run's 60 steps in all.
fn config(dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(example("ci.toml")).unwrap()
        + "\n[llc]\nchains = 2\ndraws = 20\ntrajectory_budget = 2.0\n";
    let path = dir.join("llc.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn the_trajectory_stays_within_its_budget_resumes_and_feeds_the_windows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(formation(
        &["train", &config(dir), "--analyze", "--out", "run"],
        dir,
    ));
    let out = ok(formation(&["llc", "run"], dir));
    let text = String::from_utf8_lossy(&out.stdout);
    // Checkpoints 0, 1, 2, 4, 8, 20, 40, 60; 120 SGLD steps for 2 chains of 20 draws: every 4th (0, 8) and the
    // last.
    assert!(
        text.contains("LLC at 3 of 8 checkpoints (every 4)"),
        "{text}"
    );
    let path = dir.join("run/analysis/llc.jsonl");
    let rows = jsonl(&path);
    let steps: Vec<u64> = rows.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 8, 60]);
    for row in &rows {
        assert!(row["llc"].as_f64().unwrap().is_finite(), "{row}");
        assert!(row["settings"]["nbeta"].as_f64().unwrap() > 0.0, "{row}");
        let traces = row["traces"].as_array().unwrap();
        assert_eq!(traces.len(), 2);
        assert_eq!(traces[0].as_array().unwrap().len(), 20);
        for key in [
            "llc_std",
            "drift",
            "rising",
            "diverged",
            "negative",
            "converged",
        ] {
            assert!(row["diagnostics"].get(key).is_some(), "{key} in {row}");
        }
    }
    // A rerun after losing the last row estimates it again, to the same bits.
    let bytes = std::fs::read(&path).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let kept: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, kept).unwrap();
    let out = ok(formation(&["llc", "run"], dir));
    assert!(String::from_utf8_lossy(&out.stdout).contains("continuing after step 8"));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    // The report draws the trajectory.
    ok(formation(&["report", "run"], dir));
    let page = std::fs::read_to_string(dir.join("run/report.html")).unwrap();
    assert!(page.contains("LLC trajectory (formation llc)"));
    // The windows read the trajectory as one more series.
    ok(formation(&["windows", "run"], dir));
    let with_llc: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("run/analysis/birth_windows.json")).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(&path).unwrap();
    ok(formation(&["windows", "run"], dir));
    let without: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("run/analysis/birth_windows.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        with_llc["series"].as_u64().unwrap(),
        without["series"].as_u64().unwrap() + 1
    );
}

#[test]
fn the_in_loop_trajectory_equals_the_post_hoc_one_and_survives_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = config(dir);
    let text = std::fs::read_to_string(&config).unwrap() + "in_loop = 2.0\n";
    std::fs::write(&config, text).unwrap();
    // The in-loop budget equals the post-hoc one, so the plan is the same: checkpoints 0, 8 and 60.
    let out = ok(formation(
        &["train", &config, "--analyze", "--out", "run"],
        dir,
    ));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("LLC in the loop at 3 of the checkpoints"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let path = dir.join("run/analysis/llc.jsonl");
    let in_loop = std::fs::read(&path).unwrap();
    let steps: Vec<u64> = jsonl(&path)
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [0, 8, 60]);
    // The live weights are the saved ones: the post-hoc trajectory over the reloaded checkpoints is the same
    // bits.
    std::fs::remove_file(&path).unwrap();
    ok(formation(&["llc", "run"], dir));
    assert_eq!(std::fs::read(&path).unwrap(), in_loop);
    // Killed after its first estimate, resumed: the same file as the uninterrupted run's.
    let killed = dir.join("killed/analysis/llc.jsonl");
    kill_when(
        &["train", &config, "--analyze", "--out", "killed"],
        dir,
        "the first in-loop LLC row",
        || std::fs::read_to_string(&killed).is_ok_and(|t| t.lines().count() >= 1),
    );
    ok(formation(
        &["train", &config, "--analyze", "--resume", "killed"],
        dir,
    ));
    assert_eq!(std::fs::read(&killed).unwrap(), in_loop);
    // A bad budget is one sentence.
    let bad = std::fs::read_to_string(&config)
        .unwrap()
        .replace("in_loop = 2.0", "in_loop = -1.0");
    std::fs::write(dir.join("bad.toml"), bad).unwrap();
    let error = one_error(formation(
        &["train", "bad.toml", "--analyze", "--out", "bad"],
        dir,
    ));
    assert!(error.contains("llc.in_loop must be positive"), "{error}");
    assert!(!dir.join("bad").exists());
}

#[test]
fn components_get_their_own_restricted_llc_and_calibration_recommends_a_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(formation(&["train", &config(dir), "--out", "run"], dir));
    ok(formation(
        &["llc", "run", "--every", "7", "--components"],
        dir,
    ));
    let rows = jsonl(&dir.join("run/analysis/llc.jsonl"));
    assert_eq!(rows.len(), 2, "checkpoints 0 and 60");
    let components = rows[1]["components"].as_object().unwrap();
    let names: Vec<&str> = components.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["L0", "L0H0", "L0H1", "L0H2", "L0H3"]);
    // Each restricted LLC moves fewer weights than the whole model's.
    let whole = rows[1]["llc"].as_f64().unwrap();
    for (name, c) in components {
        let llc = c["llc"].as_f64().unwrap();
        assert!(llc.is_finite() && llc < whole, "{name}: {llc} vs {whole}");
    }

    // Bad input: one sentence, nothing written.
    let before = snapshot(&dir.join("run"));
    let error = one_error(formation(
        &["llc", "run", "--calibrate", "--step", "999"],
        dir,
    ));
    assert!(error.contains("no checkpoint for step 999"), "{error}");
    let error = one_error(formation(&["llc", "run", "--every", "0"], dir));
    assert!(error.contains("--every"), "{error}");
    assert_eq!(snapshot(&dir.join("run")), before);

    let out = ok(formation(
        &["llc", "run", "--calibrate", "--step", "60"],
        dir,
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("| epsilon | nbeta | LLC |"), "{text}");
    let calibration: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("run/analysis/llc_calibration.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(calibration["step"], 60);
    assert_eq!(calibration["points"].as_array().unwrap().len(), 15);
    assert!(calibration.get("recommended").is_some());
}
