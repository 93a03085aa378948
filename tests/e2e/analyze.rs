//! End-to-end tests of `formation train --analyze`: outputs, schema, determinism, probe-set pinning, and a real
//! SIGKILL of the real binary followed by `--resume`.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;

fn scheduled_steps(run: &Path) -> Vec<u64> {
    let manifest: serde_json::Value = serde_json::from_slice(&read(run.join("run.json"))).unwrap();
    manifest["checkpoint_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect()
}

/// Every complete line parses, and every step with a row has a readable HDF5 group.
fn check_consistent_after_kill(run: &Path) -> usize {
    let text =
        std::fs::read_to_string(run.join("analysis/checkpoint_metrics.jsonl")).unwrap_or_default();
    let complete: Vec<&str> = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .collect();
    let file = hdf5::File::open(run.join("analysis/activations.h5"))
        .expect("the index opens after a kill");
    for line in &complete {
        let row: serde_json::Value =
            serde_json::from_str(line).expect("every completed row parses");
        let group = format!("step_{:06}", row["step"].as_u64().unwrap());
        let ds = file
            .dataset(&format!("{group}/resid_at_keys/blocks.0.hook_resid_pre"))
            .expect("its arrays are readable");
        assert!(!ds.read_raw::<f32>().unwrap().is_empty());
    }
    complete.len()
}

#[test]
fn sigkill_at_several_points_then_resume_gives_exactly_the_uninterrupted_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let config = long_ci_config(tmp.path());
    ok(formation(
        &["train", &config, "--analyze", "--out", "straight"],
        tmp.path(),
    ));
    let straight = tmp.path().join("straight");

    let killed = tmp.path().join("killed");
    kill_after_rows(
        &["train", &config, "--analyze", "--out", "killed"],
        tmp.path(),
        &killed,
        5,
    );
    let first = check_consistent_after_kill(&killed);
    for rows in [first + 15, first + 35] {
        kill_after_rows(
            &["train", &config, "--analyze", "--resume", "killed"],
            tmp.path(),
            &killed,
            rows,
        );
        check_consistent_after_kill(&killed);
    }
    ok(formation(
        &["train", &config, "--analyze", "--resume", "killed"],
        tmp.path(),
    ));

    let (a, b) = (metrics(&straight), metrics(&killed));
    let steps: Vec<u64> = b.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(
        steps,
        scheduled_steps(&straight),
        "one row per scheduled checkpoint, none missing or repeated"
    );
    assert_same_rows(&a, &b);
    assert_eq!(losses(&straight), losses(&killed));
    let index = hdf5::File::open(killed.join("analysis/activations.h5")).unwrap();
    assert_eq!(index.member_names().unwrap().len(), steps.len());
}

#[test]
fn analyze_is_deterministic_and_does_not_perturb_training() {
    let tmp = tempfile::tempdir().unwrap();
    for (run, analyze) in [("a", true), ("b", true), ("plain", false)] {
        let mut args = vec!["train", "EX", "--out", run];
        let config = example("ci.toml");
        args[1] = &config;
        if analyze {
            args.push("--analyze");
        }
        ok(formation(&args, tmp.path()));
    }
    let (a, b) = (
        metrics(&tmp.path().join("a")),
        metrics(&tmp.path().join("b")),
    );
    assert_eq!(a.len(), scheduled_steps(&tmp.path().join("a")).len());
    assert_same_rows(&a, &b);
    assert_eq!(
        losses(&tmp.path().join("a")),
        losses(&tmp.path().join("plain")),
        "--analyze leaves training alone"
    );
    assert_eq!(
        weights_sha256(&tmp.path().join("a"), "000060"),
        weights_sha256(&tmp.path().join("plain"), "000060")
    );
}

/// The documented fields: (dotted pattern with `{…}` wildcards, optional).
fn documented_fields() -> Vec<(Vec<String>, bool)> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema.md"))
        .unwrap();
    let table = doc
        .split("<!-- schema-table")
        .nth(1)
        .expect("the schema table marker");
    table
        .lines()
        .skip_while(|l| !l.starts_with("| `"))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let field = cells[1].trim_matches('`');
            (
                field.split('.').map(str::to_owned).collect(),
                cells[4].contains("*optional*"),
            )
        })
        .collect()
}

fn matches(pattern: &[String], path: &[String]) -> bool {
    pattern.len() == path.len()
        && pattern.iter().zip(path).all(|(p, s)| {
            if let (Some(open), true) = (p.find('{'), p.ends_with('}')) {
                s.starts_with(&p[..open])
            } else {
                p == s
            }
        })
}

/// Leaf paths of a row; empty objects count as leaves.
#[test]
fn every_row_of_real_runs_matches_the_documented_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let induction = std::fs::read_to_string(example("induction.toml"))
        .unwrap()
        .replace("steps = 2500", "steps = 30");
    std::fs::write(tmp.path().join("induction.toml"), induction).unwrap();
    ok(formation(
        &["train", &example("ci.toml"), "--analyze", "--out", "ma"],
        tmp.path(),
    ));
    ok(formation(
        &["train", "induction.toml", "--analyze", "--out", "ind"],
        tmp.path(),
    ));
    let fields = documented_fields();
    assert!(fields.len() > 15, "the table was read");
    let mut seen_optional = BTreeMap::new();
    for run in ["ma", "ind"] {
        for row in metrics(&tmp.path().join(run)) {
            let mut paths = vec![];
            leaves(&row, vec![], &mut paths);
            for (path, value) in &paths {
                let Some((pattern, _)) = fields.iter().find(|(f, _)| matches(f, path)) else {
                    panic!("{run}: undocumented field {}", path.join("."));
                };
                let numbers = value
                    .as_array()
                    .is_some_and(|a| a.iter().all(|v| v.is_number()));
                assert!(
                    value.is_number()
                        || value.is_string()
                        || value.is_null()
                        || value.is_object()
                        || numbers,
                    "{path:?}"
                );
                seen_optional.insert(pattern.join("."), ());
            }
            for (pattern, optional) in &fields {
                if !optional {
                    assert!(
                        paths.iter().any(|(p, _)| matches(pattern, p)),
                        "{run}: missing {}",
                        pattern.join(".")
                    );
                }
            }
            assert_eq!(row["schema_version"], 2);
        }
    }
    for field in ["behavior.in_context_score", "eval.{split}.loss"] {
        assert!(
            seen_optional.contains_key(field),
            "{field} appears in some row"
        );
    }
}

#[test]
fn probe_set_file_is_pinned_and_a_changed_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(formation(
        &["probe-set", &example("ci.toml"), "--out", "probe.h5"],
        tmp.path(),
    ));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let config = std::fs::read_to_string(example("ci.toml")).unwrap()
        + "\n[analysis]\nprobe_set = \"probe.h5\"\n";
    std::fs::write(tmp.path().join("pinned.toml"), config).unwrap();
    ok(formation(
        &["train", "pinned.toml", "--analyze", "--out", "run"],
        tmp.path(),
    ));
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(tmp.path().join("run/run.json"))).unwrap();
    let hash = manifest["probe_set_sha256"].as_str().unwrap();
    assert!(
        printed.contains(hash),
        "the run pins the file's hash: {printed}"
    );

    // Another probe set in place of the run's own: resume refuses it and changes nothing.
    let other =
        std::fs::read_to_string(example("ci.toml")).unwrap() + "\n[analysis]\nprobe_seed = 9\n";
    std::fs::write(tmp.path().join("other.toml"), other).unwrap();
    ok(formation(
        &[
            "probe-set",
            "other.toml",
            "--out",
            "run/probes/probe_set.h5",
        ],
        tmp.path(),
    ));
    let before = snapshot(&tmp.path().join("run"));
    let line = one_error(formation(
        &["train", "pinned.toml", "--analyze", "--resume", "run"],
        tmp.path(),
    ));
    assert!(
        line.contains("SHA-256") && line.contains("probe_set.h5"),
        "{line}"
    );
    assert_eq!(before, snapshot(&tmp.path().join("run")));

    // A probe set made for another task is refused before anything is created.
    let induction = std::fs::read_to_string(example("induction.toml")).unwrap();
    std::fs::write(tmp.path().join("ind.toml"), induction + "\n").unwrap();
    ok(formation(
        &["probe-set", "ind.toml", "--out", "ind.h5"],
        tmp.path(),
    ));
    let wrong = std::fs::read_to_string(example("ci.toml")).unwrap()
        + "\n[analysis]\nprobe_set = \"ind.h5\"\n";
    std::fs::write(tmp.path().join("wrong.toml"), wrong).unwrap();
    let line = one_error(formation(
        &["train", "wrong.toml", "--analyze", "--out", "run2"],
        tmp.path(),
    ));
    assert!(line.contains("does not match the config"), "{line}");
    assert!(!tmp.path().join("run2").exists());
}

#[test]
fn sweep_of_a_plain_run_writes_the_rows_train_analyze_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let config = long_ci_config(tmp.path());
    ok(formation(&["train", &config, "--out", "plain"], tmp.path()));
    ok(formation(
        &["train", &config, "--analyze", "--out", "analyzed"],
        tmp.path(),
    ));
    let plain = tmp.path().join("plain");
    assert!(!plain.join("analysis").exists());
    ok(formation(&["sweep", "plain"], tmp.path()));
    assert_same_rows(&metrics(&plain), &metrics(&tmp.path().join("analyzed")));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plain.join("run.json")).unwrap()).unwrap();
    assert!(
        manifest["probe_set_sha256"].is_string(),
        "the probe set is pinned"
    );
    // A second sweep has nothing left to do and changes nothing.
    let before = std::fs::read(plain.join("analysis/checkpoint_metrics.jsonl")).unwrap();
    let out = ok(formation(&["sweep", "plain"], tmp.path()));
    assert!(String::from_utf8_lossy(&out.stdout).contains("already analyzed"));
    assert_eq!(
        std::fs::read(plain.join("analysis/checkpoint_metrics.jsonl")).unwrap(),
        before
    );
}

/// Every file of a run directory outside `windows/`, by relative path, with its bytes' hash.
fn run_files(run: &Path) -> BTreeMap<String, u64> {
    use std::hash::{Hash, Hasher};
    let mut out = BTreeMap::new();
    let mut pending = vec![run.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(run)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.starts_with("windows") {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&path).unwrap().hash(&mut h);
                out.insert(rel, h.finish());
            }
        }
    }
    out
}

#[test]
fn replay_of_a_window_is_dense_bit_exact_leaves_the_run_alone_and_survives_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let config = long_ci_config(tmp.path());
    ok(formation(
        &["train", &config, "--analyze", "--out", "a"],
        tmp.path(),
    ));
    // The window a detector would have written (the replay mechanics do not depend on which one).
    let windows = r#"{"windows": [{"id": "W0", "start_step": 120, "end_step": 260}]}"#;
    std::fs::write(tmp.path().join("a/analysis/birth_windows.json"), windows).unwrap();
    common::copy_dir(&tmp.path().join("a"), &tmp.path().join("b"));
    common::copy_dir(&tmp.path().join("a"), &tmp.path().join("c"));
    let before = run_files(&tmp.path().join("a"));

    let out = ok(formation(
        &["replay", "a", "--window", "0", "--every", "10"],
        tmp.path(),
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("bit-identical"), "{stdout}");
    let replay = tmp.path().join("a/windows/W0");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(replay.join("replay.json")).unwrap())
            .unwrap();
    assert_eq!(report["bit_exact"], true);
    assert_eq!(report["from_checkpoint"], 100);
    let verified: Vec<u64> = report["verification"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(verified, vec![150, 200, 250]);
    // Dense: a row every 10 steps from the starting checkpoint to the window's end.
    let steps: Vec<u64> = metrics(&replay)
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (10..=26).map(|k| k * 10).collect::<Vec<_>>());
    // At the original checkpoints the replayed analysis is the original's (dynamics compare with another
    // previous checkpoint, and the run id names the replay).
    let original = metrics(&tmp.path().join("a"));
    for row in metrics(&replay) {
        if let Some(o) = original.iter().find(|o| o["step"] == row["step"]) {
            assert_eq!(o["behavior"], row["behavior"]);
            assert_eq!(o["heads"], row["heads"]);
            assert_eq!(o["residual"], row["residual"]);
        }
    }
    assert_eq!(
        run_files(&tmp.path().join("a")),
        before,
        "the original run is unchanged"
    );

    // Killed part-way and started again, the replay ends with the same rows.
    let b = tmp.path().join("b");
    kill_after_rows(
        &["replay", "b", "--window", "0", "--every", "10"],
        tmp.path(),
        &b.join("windows/W0"),
        6,
    );
    ok(formation(
        &["replay", "b", "--window", "0", "--every", "10"],
        tmp.path(),
    ));
    let strip_id = |rows: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        rows.into_iter()
            .map(|mut r| {
                r.as_object_mut().unwrap().remove("run_id");
                r
            })
            .collect()
    };
    assert_same_rows(
        &strip_id(metrics(&b.join("windows/W0"))),
        &strip_id(metrics(&replay)),
    );
}

/// Runs `formation intervene run --step 60 --kind KIND` in `dir` and returns the report it wrote.
fn intervene(dir: &Path, kind: &str) -> serde_json::Value {
    ok(formation(
        &["intervene", "run", "--step", "60", "--kind", kind],
        dir,
    ));
    let name = kind.replace('-', "_");
    let path = dir.join(format!("run/interventions/step_000060/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn logit_lens_at_the_last_boundary_is_the_models_own_loss() {
    let tmp = tempfile::tempdir().unwrap();
    ok(formation(
        &["train", &example("ci.toml"), "--analyze", "--out", "run"],
        tmp.path(),
    ));
    let lens = intervene(tmp.path(), "logit-lens");
    let row = metrics(&tmp.path().join("run")).pop().unwrap();
    let last = &lens["blocks.0.hook_resid_post"];
    let (loss, want) = (
        last["loss"].as_f64().unwrap(),
        row["behavior"]["loss"].as_f64().unwrap(),
    );
    assert!(
        (loss - want).abs() < 1e-5 * want.max(1.0),
        "{loss} vs {want}"
    );
    assert_eq!(last["accuracy"], row["behavior"]["accuracy"]);
    // Every boundary is read.
    assert_eq!(lens.as_object().unwrap().len(), 3, "{lens}");

    // The LLC at the same checkpoint: starts from the checkpoint's own training loss (full batch here, the
    // eval row's train loss), keeps every chain's trace, and is reproducible.
    let first = intervene(tmp.path(), "llc");
    let estimate = &first["estimate"];
    let eval = jsonl(&tmp.path().join("run/metrics/eval.jsonl"))
        .pop()
        .unwrap();
    let init = estimate["init_loss"].as_f64().unwrap();
    assert!(
        (init - eval["train"]["loss"].as_f64().unwrap()).abs() < 1e-4,
        "{init}"
    );
    assert_eq!(estimate["traces"].as_array().unwrap().len(), 4);
    assert_eq!(estimate["traces"][0].as_array().unwrap().len(), 200);
    assert!(estimate["llc"].as_f64().unwrap().is_finite());
    // The settings as used (issue 13): nbeta is n / ln n for the full train split of ci.toml (p = 23, half of
    // the 529 pairs: n = 264 or 265), not the config's null.
    let nbeta = first["settings"]["nbeta"]
        .as_f64()
        .expect("nbeta is a number");
    assert!((47.0..48.0).contains(&nbeta), "nbeta {nbeta}");
    assert_eq!(
        intervene(tmp.path(), "llc"),
        first,
        "same seed, same estimate"
    );

    // Activation patching (the corruption changes `a`): the residual stream at position `a` carries the whole
    // logit difference into the one block, the other positions none of it.
    let patching = intervene(tmp.path(), "patching");
    let by_position = &patching["recovery"]["resid_pre_by_position"]["blocks.0.hook_resid_pre"];
    let recovery: Vec<f64> = by_position
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!((recovery[0] - 1.0).abs() < 1e-3, "{patching}");
    assert!(
        recovery[1].abs() < 1e-3 && recovery[2].abs() < 1e-3,
        "{patching}"
    );
    assert_eq!(patching["recovery"]["heads"].as_object().unwrap().len(), 4);

    // Path patching in a one-layer model: each head has a direct path to the logits (its path through the MLP
    // is the difference to activation patching; tested exactly on attention-only models in the trainer) and
    // no later heads to reach.
    let paths = intervene(tmp.path(), "path-patching");
    let direct = paths["recovery"]["to_logits"].as_object().unwrap();
    assert_eq!(direct.len(), 4, "{paths}");
    assert!(direct.values().all(|v| v.as_f64().unwrap().is_finite()));
    assert!(
        paths["recovery"]["to_heads"]
            .as_object()
            .unwrap()
            .is_empty()
    );

    // Fourier progress measures over all p² inputs: the full train loss is the evaluation's, computed apart.
    let fourier = intervene(tmp.path(), "fourier");
    let train_loss = fourier["train_loss"].as_f64().unwrap();
    let want = eval["train"]["loss"].as_f64().unwrap();
    assert!((train_loss - want).abs() < 1e-4, "{train_loss} vs {want}");
    assert_eq!(fourier["key_frequencies"].as_array().unwrap().len(), 5);
    assert_eq!(
        fourier["embedding_norm_by_frequency"]
            .as_array()
            .unwrap()
            .len(),
        11,
        "(p − 1)/2 frequencies for p = 23"
    );

    // Neuron level inside the (only) MLP block: every neuron's attribution, the top 32 ablated.
    let neurons = intervene(tmp.path(), "neurons");
    assert_eq!(neurons["L0"]["dla"].as_array().unwrap().len(), 64);
    let top = neurons["L0"]["top_neurons"].as_array().unwrap();
    assert_eq!(top.len(), 32);
    let dla = |i: usize| top[i]["dla"].as_f64().unwrap().abs();
    assert!(
        (1..32).all(|i| dla(i - 1) >= dla(i)),
        "sorted by |attribution|"
    );
    // Every report is also HDF5, the same tree.
    let h5 = hdf5::File::open(tmp.path().join("run/interventions/step_000060/neurons.h5")).unwrap();
    assert_eq!(
        h5.dataset("L0/dla")
            .unwrap()
            .read_raw::<f64>()
            .unwrap()
            .len(),
        64
    );
}

#[test]
fn fourier_progress_in_the_loop_equals_the_fourier_intervention_on_the_saved_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = std::fs::read_to_string(example("ci.toml")).unwrap()
        + "\n[analysis]\nfourier_progress = true\n";
    std::fs::write(dir.join("fp.toml"), text).unwrap();
    ok(formation(
        &["train", "fp.toml", "--analyze", "--out", "run"],
        dir,
    ));
    let rows = metrics(&dir.join("run"));
    assert_eq!(
        rows.len(),
        8,
        "a row per checkpoint (0, 1, 2, 4, 8, 20, 40, 60)"
    );
    // The same measures from the saved checkpoint, reloaded, by the post-hoc intervention.
    ok(formation(
        &["intervene", "run", "--step", "60", "--kind", "fourier"],
        dir,
    ));
    let report: serde_json::Value = serde_json::from_slice(&read(
        dir.join("run/interventions/step_000060/fourier.json"),
    ))
    .unwrap();
    let progress = &rows.last().unwrap()["behavior"]["progress"];
    for (row_key, report_key) in [
        ("restricted_loss", "restricted_loss"),
        ("excluded_loss", "excluded_loss"),
        ("grid_train_loss", "train_loss"),
        ("grid_test_loss", "test_loss"),
        ("embedding_gini", "embedding_gini"),
    ] {
        let (a, b) = (
            progress[row_key].as_f64().unwrap(),
            report[report_key].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            "{row_key}: {a} vs {b}"
        );
    }
    // A task without a Fourier grid: one sentence, nothing created.
    let text = std::fs::read_to_string(example("induction.toml"))
        .unwrap()
        .replace("[analysis]", "[analysis]\nfourier_progress = true");
    std::fs::write(dir.join("bad.toml"), text).unwrap();
    let error = one_error(formation(
        &["train", "bad.toml", "--analyze", "--out", "bad"],
        dir,
    ));
    assert!(
        error.contains("fourier_progress needs a task with a Fourier grid"),
        "{error}"
    );
    assert!(!dir.join("bad").exists());
}
