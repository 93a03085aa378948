//! Data-defined tasks end to end: a built-in task exported to the dataset format trains to the same losses and
//! metric rows; every problem in a dataset is one sentence and creates nothing; a changed dataset under a
//! resumed run is refused.

use crate::common;

use std::path::Path;

use crate::common::{assert_same_rows, example, formation, jsonl, ok, one_error, snapshot};
use trainer::tasks::dataset::npy;

/// `formation task export ci.toml --out data --name ma-data` in `dir`.
fn export_ci(dir: &Path) {
    export(dir, &example("ci.toml"));
}

/// `formation task export CONFIG --out data --name ma-data` in `dir`.
fn export(dir: &Path, config: &str) {
    ok(formation(
        &[
            "task", "export", config, "--out", "data", "--name", "ma-data",
        ],
        dir,
    ));
}

/// A row without the fields that name the run (`run_id`).
fn without_run_id(rows: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    rows.into_iter()
        .map(|mut row| {
            row.as_object_mut().unwrap().remove("run_id");
            row
        })
        .collect()
}

#[test]
fn built_in_modular_addition_exported_as_data_trains_to_the_same_losses_and_rows() {
    // Full-batch (ci.toml) and minibatches drawn from the shuffled split (batch 64, 4 epochs in 60 steps).
    let ci = std::fs::read_to_string(example("ci.toml")).unwrap();
    for (what, text) in [
        ("full batch", ci.clone()),
        (
            "minibatch",
            ci.replacen("[train]\n", "[train]\nbatch_size = 64\n", 1),
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(text.contains("batch_size = 64"), what == "minibatch");
        std::fs::write(tmp.path().join("builtin.toml"), text).unwrap();
        export(tmp.path(), "builtin.toml");
        let check = ok(formation(&["task", "check", "data"], tmp.path()));
        let summary = String::from_utf8_lossy(&check.stdout);
        assert!(summary.contains("train 265 examples"), "{summary}");
        assert!(summary.contains("key positions: a, b, eq"), "{summary}");
        ok(formation(
            &["train", "builtin.toml", "--analyze", "--out", "builtin"],
            tmp.path(),
        ));
        ok(formation(
            &[
                "train",
                "data/config.toml",
                "--analyze",
                "--out",
                "data-run",
            ],
            tmp.path(),
        ));
        let (builtin, data) = (tmp.path().join("builtin"), tmp.path().join("data-run"));
        assert_eq!(
            common::read(builtin.join("metrics/train.jsonl")),
            common::read(data.join("metrics/train.jsonl")),
            "{what}: train losses"
        );
        for file in ["metrics/eval.jsonl", "analysis/checkpoint_metrics.jsonl"] {
            let (a, b) = (jsonl(&builtin.join(file)), jsonl(&data.join(file)));
            assert!(a.len() >= 4, "{what}: {file} has rows");
            assert_same_rows(&without_run_id(a), &without_run_id(b));
        }
        for step in ["000020", "000060"] {
            assert_eq!(
                common::weights_sha256(&builtin, step),
                common::weights_sha256(&data, step),
                "{what}"
            );
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&common::read(data.join("run.json"))).unwrap();
        assert_eq!(manifest["dataset_sha256"].as_str().unwrap().len(), 64);
        assert!(
            manifest["run_id"].as_str().unwrap().starts_with("ma-data-"),
            "{manifest}"
        );
    }
}

/// Rewrites an `.npy` array of the dataset with `edit` applied to its shape and values.
fn edit_npy(path: &Path, edit: impl FnOnce(&mut Vec<usize>, &mut Vec<u32>)) {
    let (mut array, _) = npy::read(path).unwrap();
    edit(&mut array.shape, &mut array.values);
    npy::write(path, &array.shape, &array.values).unwrap();
}

fn edit_manifest(dir: &Path, from: &str, to: &str) {
    let path = dir.join("data/task.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from} in {text}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn every_problem_in_a_dataset_is_one_sentence_naming_file_index_and_field_and_creates_nothing() {
    type Break = fn(&Path);
    let cases: [(&str, Break, &[&str]); 12] = [
        (
            "token outside the vocabulary",
            |d| edit_npy(&d.join("data/train/tokens.npy"), |_, v| v[3 * 3 + 1] = 99),
            &[
                "train/tokens.npy",
                "token 99 at example 3, position 1",
                "vocab",
            ],
        ),
        (
            "sequences of another length",
            |d| {
                edit_npy(&d.join("data/test/tokens.npy"), |shape, values| {
                    *values = values.chunks(3).flat_map(|c| [c[0], c[1]]).collect();
                    shape[1] = 2;
                })
            },
            &["test/tokens.npy", "sequences of 2 tokens", "seq_len = 3"],
        ),
        (
            "a fixed key position out of range",
            |d| edit_manifest(d, "eq = 2", "eq = 3"),
            &[
                "task.toml",
                "`keys.eq`",
                "is 3, outside a sequence of 3 tokens",
            ],
        ),
        (
            "a key column out of range",
            |d| {
                edit_manifest(d, "eq = 2", "eq = \"eq_pos\"");
                for split in ["train", "test"] {
                    let n = npy::read(&d.join(format!("data/{split}/sum.npy")))
                        .unwrap()
                        .0
                        .shape[0];
                    let mut values = vec![2; n];
                    if split == "test" {
                        values[5] = 7;
                    }
                    let path = d.join(format!("data/{split}/eq_pos.npy"));
                    npy::write(&path, &[n], &values).unwrap();
                }
            },
            &["test/eq_pos.npy", "position 7", "example 5", "key `eq`"],
        ),
        (
            "a label outside its classes",
            |d| edit_npy(&d.join("data/train/sum.npy"), |_, v| v[10] = 40),
            &[
                "train/sum.npy",
                "label 40, outside its 23 classes at example 10",
                "target `sum`",
            ],
        ),
        (
            "a missing column",
            |d| std::fs::remove_file(d.join("data/train/b.npy")).unwrap(),
            &["train/b.npy", "is missing", "target `b`"],
        ),
        (
            "a column of another length",
            |d| {
                edit_npy(&d.join("data/test/a.npy"), |s, v| {
                    v.pop();
                    s[0] -= 1;
                })
            },
            &["test/a.npy", "[263]", "[264]"],
        ),
        (
            "an empty split",
            |d| {
                for file in ["tokens", "answers", "a", "b", "sum"] {
                    edit_npy(&d.join(format!("data/test/{file}.npy")), |s, v| {
                        v.clear();
                        s[0] = 0;
                    });
                }
            },
            &["test/tokens.npy", "has no examples"],
        ),
        (
            "an answer position without an answer",
            |d| std::fs::remove_file(d.join("data/train/answers.npy")).unwrap(),
            &[
                "train/answers.npy",
                "is missing",
                "answer position 2 is the last token",
            ],
        ),
        (
            "an answer outside vocab_out",
            |d| edit_npy(&d.join("data/train/answers.npy"), |_, v| v[4] = 23),
            &["train/answers.npy", "answer 23 at example 4", "vocab_out"],
        ),
        (
            "an unknown manifest field",
            |d| edit_manifest(d, "seq_len = 3", "seq_len = 3\nseqlen = 3"),
            &["task.toml", "seqlen"],
        ),
        (
            "a corruption of no key position",
            |d| edit_manifest(d, "key = \"a\"", "key = \"c\""),
            &["task.toml", "`corruption.key`", "`c`"],
        ),
    ];
    let base = tempfile::tempdir().unwrap();
    export_ci(base.path());
    for (what, corrupt, expected) in cases {
        let tmp = tempfile::tempdir().unwrap();
        common::copy_dir(&base.path().join("data"), &tmp.path().join("data"));
        corrupt(tmp.path());
        let before = snapshot(tmp.path());
        for args in [
            &["train", "data/config.toml", "--out", "run"][..],
            &["task", "check", "data"],
            &["probe-set", "data/config.toml", "--out", "probes.h5"],
        ] {
            let line = one_error(formation(args, tmp.path()));
            for part in expected {
                assert!(line.contains(part), "{what}: `{part}` not in {line}");
            }
            assert_eq!(
                before,
                snapshot(tmp.path()),
                "{what}: {args:?} changed files"
            );
        }
    }
}

#[test]
fn resuming_a_run_whose_dataset_changed_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    export_ci(tmp.path());
    ok(formation(
        &["train", "data/config.toml", "--out", "run"],
        tmp.path(),
    ));
    let before = snapshot(&tmp.path().join("run"));
    edit_npy(&tmp.path().join("data/train/tokens.npy"), |_, v| {
        v.swap(0, 3)
    });
    let line = one_error(formation(
        &["train", "data/config.toml", "--resume", "run"],
        tmp.path(),
    ));
    assert!(line.contains("dataset"), "{line}");
    assert_eq!(before, snapshot(&tmp.path().join("run")));
}

/// The exported ci task with a per-example key column (`eq` from `eq_pos.npy`) and a declared control type for
/// `sum` (`sum_type.npy`: the example's `a`), so that both column kinds travel through every command.
fn data_task_with_columns(dir: &Path) {
    export_ci(dir);
    edit_manifest(dir, "eq = 2", "eq = \"eq_pos\"");
    let names: Vec<String> = (0..23).map(|i| format!("\"n{i}\"")).collect();
    let names = format!("token_names = [{}, \"=\"]", names.join(", "));
    edit_manifest(dir, "seq_len = 3", &format!("seq_len = 3\n{names}"));
    edit_manifest(
        dir,
        "[targets.sum]\nclasses = 23",
        "[targets.sum]\nclasses = 23\ncontrol = \"sum_type\"",
    );
    for split in ["train", "test"] {
        let (a, _) = npy::read(&dir.join(format!("data/{split}/a.npy"))).unwrap();
        let n = a.shape[0];
        let write = |name: &str, values: &[u32]| {
            let path = dir.join(format!("data/{split}/{name}.npy"));
            npy::write(&path, &[n], values).unwrap()
        };
        write("eq_pos", &vec![2; n]);
        write("sum_type", &a.values);
    }
}

/// Trains the exported task in minibatches of 64 (four epochs of the 265 train examples in 60 steps).
fn minibatches(dir: &Path) {
    let config = std::fs::read_to_string(dir.join("data/config.toml")).unwrap();
    let config = config.replacen("[train]\n", "[train]\nbatch_size = 64\n", 1);
    assert!(config.contains("batch_size = 64"), "{config}");
    std::fs::write(dir.join("data/config.toml"), config).unwrap();
}

#[test]
fn a_data_defined_run_resumed_from_a_middle_checkpoint_is_the_straight_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    data_task_with_columns(dir);
    minibatches(dir);
    for out in ["straight", "resumed"] {
        ok(formation(
            &["train", "data/config.toml", "--analyze", "--out", out],
            dir,
        ));
    }
    // As if killed right after the step-20 checkpoint (in the middle of the second epoch).
    for step in ["000040", "000060"] {
        std::fs::remove_dir_all(dir.join(format!("resumed/checkpoints/step_{step}"))).unwrap();
    }
    ok(formation(
        &["train", "data/config.toml", "--resume", "resumed"],
        dir,
    ));
    let (straight, resumed) = (dir.join("straight"), dir.join("resumed"));
    assert_eq!(common::losses(&straight), common::losses(&resumed));
    for step in ["000040", "000060"] {
        assert_eq!(
            common::weights_sha256(&straight, step),
            common::weights_sha256(&resumed, step),
            "step {step}"
        );
    }
    let rows = |run: &Path| jsonl(&run.join("analysis/checkpoint_metrics.jsonl"));
    assert_same_rows(&rows(&straight), &rows(&resumed));
}

#[test]
fn every_command_runs_on_a_data_defined_task() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    data_task_with_columns(dir);
    // Minibatches, so that the replay below re-draws them from the shuffled split.
    minibatches(dir);
    let run =
        |args: &[&str]| String::from_utf8_lossy(&ok(formation(args, dir)).stdout).into_owned();
    run(&["probe-set", "data/config.toml", "--out", "probes.h5"]);
    run(&["train", "data/config.toml", "--out", "run"]);
    run(&["sweep", "run"]);
    let rows = jsonl(&dir.join("run/analysis/checkpoint_metrics.jsonl"));
    assert_eq!(rows.len(), 8, "a row per checkpoint");
    let last = rows.last().unwrap();
    assert!(
        last["heads"]["L0H0"]["attn"]["eq_to_a"].is_number(),
        "{last}"
    );
    let selectivity = &last["residual"]["blocks.0.hook_resid_post"]["eq"]["sum"]["selectivity"];
    assert!(selectivity.is_number(), "{last}");

    run(&["windows", "run"]);
    let windows = r#"{"windows": [{"id": "W0", "start_step": 20, "end_step": 40}]}"#;
    std::fs::write(dir.join("run/analysis/birth_windows.json"), windows).unwrap();
    let replay = run(&["replay", "run", "--window", "0", "--every", "5"]);
    assert!(replay.contains("bit-identical"), "{replay}");

    for kind in ["logit-lens", "patching", "path-patching", "neurons", "llc"] {
        run(&["intervene", "run", "--step", "60", "--kind", kind]);
        let file = format!(
            "run/interventions/step_000060/{}.json",
            kind.replace('-', "_")
        );
        assert!(dir.join(&file).exists(), "{file}");
    }
    let line = one_error(formation(
        &["intervene", "run", "--step", "60", "--kind", "fourier"],
        dir,
    ));
    assert!(
        line.contains("Fourier") || line.contains("fourier"),
        "{line}"
    );
    run(&["export", "run", "--step", "60", "--out", "exported"]);
    assert!(dir.join("exported/model.safetensors").exists());
    run(&["report", "run"]);
    let report = std::fs::read_to_string(dir.join("run/report.html")).unwrap();
    assert!(
        report.contains("attention between key positions"),
        "the report plots eq → a"
    );
    assert!(
        report.contains("<code>=</code>") && report.contains("→ n"),
        "probe examples under the task's token names"
    );

    // A screen over two variants of the dataset (a factor may be a dataset path), then compare and report.
    common::copy_dir(&dir.join("data"), &dir.join("variants/data-b"));
    edit_npy(&dir.join("variants/data-b/train/tokens.npy"), |_, v| {
        v.swap(0, 3)
    });
    run(&[
        "screen",
        "data/config.toml",
        "--factor",
        "task.path=data,variants/data-b",
        "--seeds",
        "0",
        "-j",
        "2",
        "--out",
        "st",
    ]);
    let hashes: Vec<String> = ["task.path=data-s0", "task.path=data-b-s0"]
        .iter()
        .map(|name| {
            let manifest: serde_json::Value =
                serde_json::from_slice(&common::read(dir.join(format!("st/runs/{name}/run.json"))))
                    .unwrap();
            manifest["dataset_sha256"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_ne!(hashes[0], hashes[1], "each run pins its own dataset");
    run(&["compare", "st"]);
    run(&["report", "st"]);
    assert!(dir.join("st/report.html").exists());

    // Without a declared corruption, patching says so and writes nothing.
    edit_manifest(dir, "[corruption]\nkey = \"a\"\n", "");
    run(&["train", "data/config.toml", "--analyze", "--out", "plain"]);
    let before = snapshot(&dir.join("plain"));
    let line = one_error(formation(
        &["intervene", "plain", "--step", "60", "--kind", "patching"],
        dir,
    ));
    assert!(line.contains("declares no corruption"), "{line}");
    assert_eq!(before, snapshot(&dir.join("plain")));
    // …and a replay's window analyses (patching is in the default list) skip it with a note and run the rest.
    std::fs::write(dir.join("plain/analysis/birth_windows.json"), windows).unwrap();
    let out = ok(formation(
        &["replay", "plain", "--window", "0", "--every", "10"],
        dir,
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("skip Patching: the task declares no corruption"),
        "{stderr}"
    );
    let lens = dir.join("plain/windows/W0/interventions/step_000030");
    assert!(lens.join("logit_lens.json").exists());
    assert!(!lens.join("patching.json").exists());
}

#[test]
fn a_data_defined_task_declares_its_head_detectors() {
    // The built-in induction task, its first 256 training sequences exported: the manifest lists the three
    // TransformerLens detectors it uses, and every head of the data-defined run is scored against them.
    let tmp = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(example("induction.toml"))
        .unwrap()
        .replace("steps = 2500", "steps = 8");
    std::fs::write(tmp.path().join("induction.toml"), config).unwrap();
    ok(formation(
        &[
            "task",
            "export",
            "induction.toml",
            "--out",
            "data",
            "--train-examples",
            "256",
        ],
        tmp.path(),
    ));
    let manifest = std::fs::read_to_string(tmp.path().join("data/task.toml")).unwrap();
    assert!(
        manifest.contains(
            r#"head_detectors = ["previous_token_head", "duplicate_token_head", "induction_head"]"#
        ),
        "{manifest}"
    );
    ok(formation(
        &["train", "data/config.toml", "--analyze", "--out", "run"],
        tmp.path(),
    ));
    let rows = jsonl(&tmp.path().join("run/analysis/checkpoint_metrics.jsonl"));
    let scores = rows.last().unwrap()["heads"]["L1H0"]["scores"].clone();
    for name in [
        "previous_token_head",
        "duplicate_token_head",
        "induction_head",
    ] {
        let score = scores[name].as_f64().unwrap_or(f64::NAN);
        assert!((0.0..=1.0).contains(&score), "{name}: {scores}");
    }
    assert!(
        scores.get("induction_score").is_none(),
        "Olsson's score needs the built-in repeat layout"
    );

    let line = {
        edit_manifest(tmp.path(), "\"induction_head\"", "\"copy_head\"");
        one_error(formation(&["task", "check", "data"], tmp.path()))
    };
    assert!(line.contains("copy_head"), "{line}");
}
