//! End-to-end tests of Phases B and C on the CI config: `formation replicate`, `screen`, `collect` (issue 7).

use std::path::Path;

use crate::common::*;

/// `formation replicate ci.toml --seeds 0..3 -j 2 --out st` in `dir`.
fn replicate_three(dir: &Path) -> std::process::Output {
    replicate(&example("ci.toml"), "0..3", dir)
}

fn rows(run: &Path) -> Vec<serde_json::Value> {
    jsonl(&run.join("analysis/checkpoint_metrics.jsonl"))
}

#[test]
fn replicate_runs_every_seed_reports_a_failure_and_continues_on_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ci = example("ci.toml");
    // Plan only (the Slurm script), then make seed 1's run directory impossible to create.
    ok(formation(
        &[
            "replicate",
            &ci,
            "--seeds",
            "0..3",
            "--out",
            "st",
            "--slurm",
        ],
        dir,
    ));
    assert!(!dir.join("st/runs/s0").exists(), "--slurm runs nothing");
    std::fs::write(dir.join("st/runs/s1"), "in the way").unwrap();

    let out = replicate_three(dir);
    let error = final_error(out);
    assert!(error.contains("1 of 3 runs failed (s1)"), "{error}");
    for name in ["s0", "s2"] {
        let status: serde_json::Value =
            serde_json::from_slice(&read(dir.join(format!("st/status/{name}.json")))).unwrap();
        assert_eq!(status["state"], "done", "{name}");
        assert!(
            dir.join(format!("st/runs/{name}/analysis/birth_windows.json"))
                .exists()
        );
    }
    let status: serde_json::Value =
        serde_json::from_slice(&read(dir.join("st/status/s1.json"))).unwrap();
    assert_eq!(status["state"], "failed");
    assert!(status["error"].as_str().unwrap().contains("st/runs/s1"));
    let error = one_error(formation(&["collect", "st"], dir));
    assert!(error.contains("1 of 3 runs are not done (s1)"), "{error}");

    // A study run is the same run as `train --analyze` of that seed.
    ok(formation(
        &["train", &ci, "--analyze", "--out", "solo"],
        dir,
    ));
    assert_same_rows(&rows(&dir.join("st/runs/s0")), &rows(&dir.join("solo")));
    let seeds: Vec<u64> = ["s0", "s2"]
        .iter()
        .map(|n| {
            let manifest: serde_json::Value =
                serde_json::from_slice(&read(dir.join(format!("st/runs/{n}/run.json")))).unwrap();
            manifest["seed"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(seeds, [0, 2]);

    // Re-running after the cause is gone runs only s1 and leaves the finished runs alone.
    std::fs::remove_file(dir.join("st/runs/s1")).unwrap();
    let before = snapshot(&dir.join("st/runs/s0"));
    let out = ok(replicate_three(dir));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 runs finished, 0 failed, 2 were already done"),
        "{stdout}"
    );
    assert_eq!(snapshot(&dir.join("st/runs/s0")), before);
    let collected = ok(formation(&["collect", "st"], dir));
    assert!(String::from_utf8_lossy(&collected.stdout).contains("all 3 runs done"));

    // The same directory with another plan is refused and changes nothing.
    let before = snapshot(&dir.join("st"));
    let error = one_error(formation(
        &["replicate", &ci, "--seeds", "0..4", "--out", "st"],
        dir,
    ));
    assert!(error.contains("different study"), "{error}");
    assert_eq!(snapshot(&dir.join("st")), before);
}

#[test]
fn a_screen_varies_one_key_and_bad_values_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ci = example("ci.toml");
    let error = one_error(formation(
        &[
            "screen",
            &ci,
            "--factor",
            "model.d_model=32,30",
            "--out",
            "bad",
        ],
        dir,
    ));
    assert!(error.contains("model.d_model = 30"), "{error}");
    assert!(!dir.join("bad").exists());
    let error = one_error(formation(
        &[
            "screen",
            &ci,
            "--factor",
            "optim.learning_rate=1",
            "--out",
            "bad",
        ],
        dir,
    ));
    assert!(error.contains("learning_rate"), "{error}");
    assert!(!dir.join("bad").exists());

    ok(formation(
        &[
            "screen",
            &ci,
            "--factor",
            "optim.weight_decay=0,1",
            "--seeds",
            "0,1",
            "-j",
            "2",
            "--out",
            "wd",
        ],
        dir,
    ));
    let study: serde_json::Value =
        serde_json::from_slice(&read(dir.join("wd/study.json"))).unwrap();
    assert_eq!(study["factor"]["key"], "optim.weight_decay");
    assert_eq!(study["runs"].as_array().unwrap().len(), 4);
    for (value, seed) in [("0", 0), ("0", 1), ("1", 0), ("1", 1)] {
        let run = dir.join(format!("wd/runs/optim.weight_decay={value}-s{seed}"));
        let config = String::from_utf8(read(run.join("config.toml"))).unwrap();
        assert!(
            config.contains(&format!("weight_decay = {value}.0")),
            "{config}"
        );
        assert!(config.contains(&format!("seed = {seed}")), "{config}");
        assert_eq!(rows(&run).len(), 8, "every checkpoint analyzed");
    }
    // Different weight decay, different training.
    let last = |v: &str| {
        rows(&dir.join(format!("wd/runs/optim.weight_decay={v}-s0")))
            .pop()
            .unwrap()
    };
    assert_ne!(last("0")["train_loss"], last("1")["train_loss"]);
}
