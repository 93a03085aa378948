//! Data-defined tasks end to end: a built-in task exported to the dataset format trains to the same losses and
//! metric rows; every problem in a dataset is one sentence and creates nothing; a changed dataset under a
//! resumed run is refused.

mod common;

use std::path::Path;

use common::{assert_same_rows, example, formation, jsonl, ok, one_error, snapshot};
use trainer::tasks::dataset::npy;

/// `formation task export ci.toml --out data --name ma-data` in `dir`.
fn export_ci(dir: &Path) {
    ok(formation(
        &[
            "task",
            "export",
            &example("ci.toml"),
            "--out",
            "data",
            "--name",
            "ma-data",
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
    let tmp = tempfile::tempdir().unwrap();
    export_ci(tmp.path());
    let check = ok(formation(&["task", "check", "data"], tmp.path()));
    let summary = String::from_utf8_lossy(&check.stdout);
    assert!(summary.contains("train 265 examples"), "{summary}");
    assert!(summary.contains("key positions: a, b, eq"), "{summary}");
    ok(formation(
        &[
            "train",
            &example("ci.toml"),
            "--analyze",
            "--out",
            "builtin",
        ],
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
        "train losses"
    );
    for file in ["metrics/eval.jsonl", "analysis/checkpoint_metrics.jsonl"] {
        let (a, b) = (jsonl(&builtin.join(file)), jsonl(&data.join(file)));
        assert!(a.len() >= 4, "{file} has rows");
        assert_same_rows(&without_run_id(a), &without_run_id(b));
    }
    for step in ["000020", "000060"] {
        assert_eq!(
            common::weights_sha256(&builtin, step),
            common::weights_sha256(&data, step)
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
