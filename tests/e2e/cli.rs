//! End-to-end tests of the real `formation` binary on the CI-sized configs, each in a fresh temp directory.

use crate::common::*;

#[test]
fn same_config_and_seed_give_bit_identical_losses_and_weights() {
    let tmp = tempfile::tempdir().unwrap();
    for run in ["a", "b"] {
        ok(formation(
            &["train", &example("ci.toml"), "--out", run],
            tmp.path(),
        ));
    }
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    assert!(losses(&a).len() >= 12);
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(weights_sha256(&a, "000060"), weights_sha256(&b, "000060"));
}

#[test]
fn resume_from_a_middle_checkpoint_reproduces_the_straight_run_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    ok(formation(
        &["train", &example("ci.toml"), "--out", "straight"],
        tmp.path(),
    ));
    ok(formation(
        &["train", &example("ci.toml"), "--out", "resumed"],
        tmp.path(),
    ));
    // Make "resumed" look like a run killed right after its step-20 checkpoint: later checkpoints gone,
    // logs holding rows past it.
    let resumed = tmp.path().join("resumed");
    for step in ["000040", "000060"] {
        std::fs::remove_dir_all(resumed.join("checkpoints").join(format!("step_{step}"))).unwrap();
    }
    ok(formation(
        &["train", &example("ci.toml"), "--resume", "resumed"],
        tmp.path(),
    ));
    let straight = tmp.path().join("straight");
    assert_eq!(
        losses(&straight),
        losses(&resumed),
        "no duplicate, missing or different loss rows"
    );
    for step in ["000040", "000060"] {
        assert_eq!(
            weights_sha256(&straight, step),
            weights_sha256(&resumed, step),
            "step {step}"
        );
    }
    assert_eq!(
        jsonl(&straight.join("metrics/eval.jsonl")),
        jsonl(&resumed.join("metrics/eval.jsonl"))
    );
}

/// A reader that stops early (`formation windows RUN | head`) closes the pipe: the command neither panics nor
/// stops short of its files. The pipe's reading end is closed before the command starts, so every line it
/// prints meets the closed pipe.
#[test]
fn a_closed_output_pipe_is_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let closed = |args: &[&str]| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_formation"))
            .args(args)
            .current_dir(tmp.path())
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(
            output.status.success() && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    };
    closed(&["train", &example("ci.toml"), "--analyze", "--out", "run"]);
    assert!(!losses(&tmp.path().join("run")).is_empty());
    closed(&["windows", "run"]);
    let windows = tmp.path().join("run/analysis/birth_windows.json");
    let written = std::fs::read(&windows).unwrap();
    std::fs::remove_file(&windows).unwrap();
    let out = ok(formation(&["windows", "run"], tmp.path()));
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote"));
    assert_eq!(std::fs::read(&windows).unwrap(), written);
}

#[test]
fn invalid_configs_fail_with_one_clear_error_and_create_nothing() {
    let ci = std::fs::read_to_string(example("ci.toml")).unwrap();
    let cases = [
        (
            "unknown key",
            ci.replace("[model]", "[model]\nwidth = 7"),
            "width",
        ),
        (
            "heads",
            ci.replace("n_heads = 4", "n_heads = 3"),
            "divisible by n_heads",
        ),
        ("p < 2", ci.replace("p = 23", "p = 1"), "task.p"),
        (
            "empty split",
            ci.replace("train_fraction = 0.5", "train_fraction = 0.0001"),
            "empty",
        ),
        (
            "unknown task",
            ci.replace("modular-addition", "sorting"),
            "sorting",
        ),
        (
            "bad toml",
            ci.replace("[model]", "[model"),
            "invalid config",
        ),
    ];
    for (what, text, expected) in cases {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("bad.toml"), text).unwrap();
        let line = one_error(formation(
            &["train", "bad.toml", "--out", "run"],
            tmp.path(),
        ));
        assert!(line.contains(expected), "{what}: {line}");
        assert!(
            !tmp.path().join("run").exists(),
            "{what}: run directory created"
        );
        assert!(!tmp.path().join("runs").exists(), "{what}: runs/ created");
    }
}

#[test]
fn a_missing_config_file_is_one_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let line = one_error(formation(
        &["train", "missing.toml", "--out", "run"],
        tmp.path(),
    ));
    assert_eq!(
        line,
        "error: cannot read config missing.toml: No such file or directory (os error 2)"
    );
    assert!(!tmp.path().join("run").exists());
}

#[test]
fn resuming_under_a_changed_config_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    ok(formation(
        &["train", &example("ci.toml"), "--out", "run"],
        tmp.path(),
    ));
    let before = snapshot(&tmp.path().join("run"));
    let changed = std::fs::read_to_string(example("ci.toml"))
        .unwrap()
        .replace("lr = 3e-3", "lr = 1e-3");
    std::fs::write(tmp.path().join("changed.toml"), changed).unwrap();
    let line = one_error(formation(
        &["train", "changed.toml", "--resume", "run"],
        tmp.path(),
    ));
    assert!(line.contains("different config"), "{line}");
    assert_eq!(before, snapshot(&tmp.path().join("run")));
}

#[test]
fn starting_over_an_existing_run_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    ok(formation(
        &["train", &example("ci.toml"), "--out", "run"],
        tmp.path(),
    ));
    let before = snapshot(&tmp.path().join("run"));
    let line = one_error(formation(
        &["train", &example("ci.toml"), "--out", "run"],
        tmp.path(),
    ));
    assert!(line.contains("already holds a run"), "{line}");
    assert_eq!(before, snapshot(&tmp.path().join("run")));
}

#[test]
fn truncated_or_corrupt_checkpoints_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    ok(formation(
        &["train", &example("ci.toml"), "--out", "run"],
        tmp.path(),
    ));
    let model = tmp.path().join("run/checkpoints/step_000060/model.bpk");
    let bytes = read(model.clone());
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let line = one_error(formation(
        &["train", &example("ci.toml"), "--resume", "run"],
        tmp.path(),
    ));
    assert!(
        line.contains("corrupt") && line.contains("step_000060"),
        "{line}"
    );
    let line = one_error(formation(&["export", "run", "--step", "60"], tmp.path()));
    assert!(line.contains("corrupt"), "{line}");

    let state = tmp.path().join("run/checkpoints/step_000040/state.json");
    std::fs::write(&state, "{ not json").unwrap();
    let line = one_error(formation(&["export", "run", "--step", "40"], tmp.path()));
    assert!(
        line.contains("corrupt") && line.contains("state.json"),
        "{line}"
    );

    let line = one_error(formation(&["export", "run", "--step", "41"], tmp.path()));
    assert!(line.contains("no checkpoint for step 41"), "{line}");
}

#[test]
fn export_writes_transformer_lens_safetensors_and_config() {
    let tmp = tempfile::tempdir().unwrap();
    ok(formation(
        &["train", &example("ci.toml"), "--out", "run"],
        tmp.path(),
    ));
    ok(formation(
        &["export", "run", "--step", "60", "--out", "tl"],
        tmp.path(),
    ));
    let config: serde_json::Value =
        serde_json::from_slice(&read(tmp.path().join("tl/config.json"))).unwrap();
    assert_eq!(config["d_model"], 32);
    assert_eq!(config["d_vocab"], 24);
    assert_eq!(config["d_vocab_out"], 23);
    assert_eq!(config["n_ctx"], 3);
    assert_eq!(config["act_fn"], "relu");
    let st = read(tmp.path().join("tl/model.safetensors"));
    let header_len = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&st[8..8 + header_len]).unwrap();
    assert_eq!(
        header["blocks.0.attn.W_Q"]["shape"],
        serde_json::json!([4, 32, 8])
    );
    assert_eq!(
        header["blocks.0.mlp.W_in"]["shape"],
        serde_json::json!([32, 64])
    );
    assert_eq!(header["unembed.W_U"]["shape"], serde_json::json!([32, 23]));
}
