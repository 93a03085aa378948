//! `formation trace`: Phase A in one command, the same outputs as its parts, resumable after a kill in any stage.

use std::path::Path;

use crate::common::{
    assert_same_rows, formation, kill_when, long_ci_config, metrics, ok, one_error, read, snapshot,
};

/// The run's top-ranked birth window (the one `trace --top 1` replays).
fn top_window(run: &Path) -> serde_json::Value {
    let windows: serde_json::Value =
        serde_json::from_slice(&read(run.join("analysis/birth_windows.json"))).unwrap();
    windows["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["rank"] == 1)
        .expect("a top-ranked window")
        .clone()
}

/// The replayed window's directory (the one `trace --top 1` chose) and its intervention reports, by path.
fn replayed(run: &Path) -> (std::path::PathBuf, Vec<(std::path::PathBuf, Vec<u8>)>) {
    let top = top_window(run);
    let dir = run.join("windows").join(top["id"].as_str().unwrap());
    let reports = snapshot(&dir.join("interventions"))
        .into_iter()
        .map(|(path, bytes)| (path.strip_prefix(run).unwrap().to_owned(), bytes))
        .filter(|(path, _)| path.extension().is_some_and(|e| e == "json"))
        .collect();
    (dir, reports)
}

#[test]
fn trace_runs_phase_a_in_one_command_and_resumes_after_a_kill_in_any_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = long_ci_config(dir);
    let trace = |out: &'static str| ["trace", config.as_str(), "--out", out, "--every", "2"];

    // One command: the analyzed run, its windows, the top window replayed bit-exactly with the window
    // interventions at every dense checkpoint, and the report.
    let a = dir.join("a");
    let out = ok(formation(&trace("a"), dir));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("open a/report.html"), "{stdout}");
    assert!(a.join("report.html").exists());
    let (window, reports) = replayed(&a);
    let replay: serde_json::Value =
        serde_json::from_slice(&read(window.join("replay.json"))).unwrap();
    assert_eq!(replay["bit_exact"], true);
    let dense = metrics(&window);
    assert!(dense.len() > 20, "{} dense checkpoints", dense.len());
    // logit-lens and patching (the default [interventions] in_windows) at every dense checkpoint.
    assert_eq!(reports.len(), 2 * dense.len());

    // The same as the separate commands.
    ok(formation(
        &["train", &config, "--analyze", "--out", "parts"],
        dir,
    ));
    assert_same_rows(&metrics(&a), &metrics(&dir.join("parts")));

    // A rerun of a finished trace trains and replays nothing again.
    let checkpoints = snapshot(&a.join("checkpoints"));
    let dense_files = snapshot(&window);
    ok(formation(&trace("a"), dir));
    assert_eq!(snapshot(&a.join("checkpoints")), checkpoints);
    assert_eq!(snapshot(&window), dense_files);

    // Killed in training, in the replay, and among the window interventions: each rerun continues, and the
    // last one ends with exactly what the uninterrupted trace wrote.
    let b = dir.join("b");
    let rows = |path: &Path| {
        std::fs::read_to_string(path.join("analysis/checkpoint_metrics.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let b_window = b.join(window.strip_prefix(&a).unwrap());
    let files = |path: &Path| {
        std::fs::read_dir(path)
            .map(|d| d.count())
            .unwrap_or_default()
    };
    kill_when(&trace("b"), dir, "30 rows of training", || rows(&b) >= 30);
    assert!(rows(&b) < metrics(&a).len(), "killed in training");
    kill_when(&trace("b"), dir, "20 replayed rows", || {
        rows(&b_window) >= 20
    });
    assert!(rows(&b_window) < dense.len(), "killed in the replay");
    kill_when(
        &trace("b"),
        dir,
        "10 checkpoints with interventions",
        || files(&b_window.join("interventions")) >= 10,
    );
    assert!(
        files(&b_window.join("interventions")) < dense.len(),
        "killed among the interventions"
    );
    ok(formation(&trace("b"), dir));
    assert_same_rows(&metrics(&b), &metrics(&a));
    let strip_id = |rows: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        rows.into_iter()
            .map(|mut r| {
                r.as_object_mut().unwrap().remove("run_id");
                r
            })
            .collect()
    };
    assert_same_rows(&strip_id(metrics(&b_window)), &strip_id(dense));
    assert_eq!(replayed(&b).1, reports, "the same intervention reports");
    assert!(b.join("report.html").exists());
}

#[test]
fn trace_refuses_a_bad_config_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(crate::common::example("ci.toml"))
            .unwrap()
            .replace("p = 23", "p = 1"),
    )
    .unwrap();
    let error = one_error(formation(
        &["trace", bad.to_str().unwrap(), "--out", "run"],
        tmp.path(),
    ));
    assert!(error.contains("p"), "{error}");
    assert!(!tmp.path().join("run").exists());
}

#[test]
fn the_main_job_traces_the_induction_heads_forming_and_the_notebook_reader_reads_it() {
    // The README's main job (`formation trace examples/induction.toml`), with a sparser replay to stay quick.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = crate::common::example("induction.toml");
    ok(formation(
        &["trace", &config, "--out", "run", "--every", "25"],
        dir,
    ));
    let run = dir.join("run");
    let top = top_window(&run);
    // The top-ranked window is where a layer-1 head's induction score rises, and it was replayed bit-exactly.
    let induction = top["triggers"].as_array().unwrap().iter().any(|t| {
        let metric = t["metric"].as_str().unwrap();
        metric.starts_with("heads.L1")
            && metric.ends_with("scores.induction_score")
            && t["change"].as_f64().unwrap() > 0.2
    });
    assert!(induction, "{top}");
    let replay = run.join("windows").join(top["id"].as_str().unwrap());
    let report: serde_json::Value =
        serde_json::from_slice(&read(replay.join("replay.json"))).unwrap();
    assert_eq!(report["bit_exact"], true);
    assert!(run.join("report.html").exists());
    // The birth windows of the example's run, as `formation windows` found them (the same files).
    crate::windows::check_induction_windows(&run);
    // The notebook reader (examples/read_outputs.py) and the README's snippet, on this run.
    let repo = env!("CARGO_MANIFEST_DIR");
    if let Some(stdout) = crate::common::python(
        "reader_matches_files.py",
        &[run.to_str().unwrap(), repo],
        dir,
    ) {
        assert!(stdout.contains("README snippet ran"), "{stdout}");
    }
}
