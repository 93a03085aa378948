//! Crash safety and concurrency (issue 12), with the real binary: a kill at every named failpoint of start-up,
//! checkpoint save, row/HDF5 commit, sweep and export, then the documented recovery; two writers on one run;
//! a killed `replicate` parent; damaged rows and step files repaired by `--resume`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// `formation ARGS` in `cwd` with the failpoint `point` armed.
fn formation_failing(point: &str, args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_formation"))
        .args(args)
        .current_dir(cwd)
        .env("FORMATION_FAILPOINT", point)
        .output()
        .expect("binary runs")
}

/// The process died at its failpoint (abort), not by an ordinary error.
fn assert_aborted(output: &Output, point: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("failpoint"),
        "{point}: the failpoint was not reached: {stderr}"
    );
}

/// What a user does after a crash of `train`: resume the run if its directory exists, else start it again.
fn recover_train(config: &str, cwd: &Path, name: &str) {
    let run = cwd.join(name);
    if run.join("run.json").exists() {
        ok(formation(
            &["train", config, "--analyze", "--resume", name],
            cwd,
        ));
    } else {
        let error = one_error(formation(
            &["train", config, "--analyze", "--resume", name],
            cwd,
        ));
        assert!(error.contains("start it with --out"), "{error}");
        ok(formation(
            &["train", config, "--analyze", "--out", name],
            cwd,
        ));
    }
}

/// The run's rows, losses and evaluations equal the uninterrupted run's, and nothing half-made is left.
fn assert_same_run(straight: &Path, run: &Path, what: &str) {
    let (a, b) = (metrics(straight), metrics(run));
    assert_eq!(
        a.iter().map(|r| r["step"].as_u64()).collect::<Vec<_>>(),
        b.iter().map(|r| r["step"].as_u64()).collect::<Vec<_>>(),
        "{what}: analyzed steps"
    );
    assert_same_rows(&a, &b);
    assert_eq!(losses(straight), losses(run), "{what}: losses");
    assert_eq!(
        read(straight.join("metrics/eval.jsonl")),
        read(run.join("metrics/eval.jsonl")),
        "{what}: eval rows"
    );
    let leftovers: Vec<String> = std::fs::read_dir(run.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && (n.contains(".staging-") || n.contains(".partial-")))
        .collect();
    assert!(leftovers.is_empty(), "{what}: left {leftovers:?}");
}

/// A temporary directory holding `straight`, an uninterrupted `train ci.toml --analyze`, and the config's path.
fn straight_ci_run() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let ci = example("ci.toml");
    ok(formation(
        &["train", &ci, "--analyze", "--out", "straight"],
        tmp.path(),
    ));
    (tmp, ci)
}

#[test]
fn a_kill_at_every_failpoint_of_train_then_recovery_gives_the_uninterrupted_run() {
    let (tmp, ci) = straight_ci_run();
    let dir = tmp.path();
    // ci.toml checkpoints at 0, 1, 2, 4, 8, 20, 40, 60.
    let points = [
        "create-staging",
        "create-manifest",
        "create-pinned",
        "create-filled",
        "create-renamed",
        "checkpoint-saved@8",
        "step-file-written@0",
        "step-file-written@8",
        "row-pending@8",
        "row-written@8",
        "checkpoint-saved@60",
        "row-pending@60",
        "row-written@60",
    ];
    for point in points {
        let name = format!("r-{}", point.replace('@', "-"));
        let out = formation_failing(point, &["train", &ci, "--analyze", "--out", &name], dir);
        assert_aborted(&out, point);
        recover_train(&ci, dir, &name);
        assert_same_run(&dir.join("straight"), &dir.join(&name), point);
    }
}

#[test]
fn a_kill_while_sweep_pins_its_probe_set_or_export_writes_is_recovered_by_running_it_again() {
    let (tmp, ci) = straight_ci_run();
    let dir = tmp.path();
    for point in ["sweep-probe-set", "row-written@4", "step-file-written@20"] {
        let name = format!("plain-{}", point.replace('@', "-"));
        ok(formation(&["train", &ci, "--out", &name], dir));
        let out = formation_failing(point, &["sweep", &name], dir);
        assert_aborted(&out, point);
        ok(formation(&["sweep", &name], dir));
        assert_same_rows(&metrics(&dir.join("straight")), &metrics(&dir.join(&name)));
    }

    for point in ["export-model", "export-written"] {
        let out = formation_failing(point, &["export", "straight", "--step", "60"], dir);
        assert_aborted(&out, point);
        let export = dir.join("straight/export/step_000060");
        assert!(!export.exists(), "{point}: no half-written export");
        ok(formation(&["export", "straight", "--step", "60"], dir));
        for file in ["model.safetensors", "config.json", "sample.safetensors"] {
            assert!(
                std::fs::metadata(export.join(file)).unwrap().len() > 0,
                "{file}"
            );
        }
        std::fs::remove_dir_all(&export).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.join("straight/export"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(names.is_empty(), "{point}: staging left: {names:?}");
    }
}

/// Polls until `run`'s lock file names `pid` (the file keeps an earlier holder's name until then).
fn wait_for_lock_holder(run: &Path, pid: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let holder = std::fs::read_to_string(run.join("formation.lock")).unwrap_or_default();
        if holder.starts_with(&format!("pid {pid},")) {
            return holder.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "no lock holder appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_second_writer_on_a_run_is_refused_with_the_holders_pid_and_the_rows_stay_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = long_ci_config(dir);
    ok(formation(
        &["train", &config, "--analyze", "--out", "straight"],
        dir,
    ));
    let run = dir.join("killed");
    kill_after_rows(
        &["train", &config, "--analyze", "--out", "killed"],
        dir,
        &run,
        10,
    );
    let first = Command::new(env!("CARGO_BIN_EXE_formation"))
        .args(["train", &config, "--analyze", "--resume", "killed"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let holder = wait_for_lock_holder(&run, first.id());
    assert_eq!(
        holder,
        format!("pid {}, `formation train --resume`", first.id())
    );
    let before = std::fs::read(run.join("config.toml")).unwrap();
    for args in [
        vec!["train", &config, "--analyze", "--resume", "killed"],
        vec!["sweep", "killed"],
        vec!["export", "killed", "--step", "0"],
        vec!["intervene", "killed", "--step", "0", "--kind", "logit-lens"],
    ] {
        let error = one_error(formation(&args, dir));
        assert!(
            error.contains("is in use by another formation process")
                && error.contains(&format!("pid {}", first.id())),
            "{args:?}: {error}"
        );
    }
    // Readers work meanwhile and say that the run is in progress.
    let windows = formation(&["windows", "killed"], dir);
    let stderr = String::from_utf8_lossy(&windows.stderr);
    assert!(stderr.contains("is still being written"), "{stderr}");
    let output = first.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read(run.join("config.toml")).unwrap(), before);
    assert_same_run(&dir.join("straight"), &run, "after a refused second writer");
}

/// The pids recorded in a study's status files.
fn status_pids(study: &Path) -> Vec<i32> {
    std::fs::read_dir(study.join("status"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| {
                    let status: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
                    status["pid"].as_i64().map(|p| p as i32)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn alive(pid: i32) -> bool {
    // A zombie (dead, not yet reaped by its reaper) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn a_killed_replicate_parent_takes_its_runs_with_it_and_a_rerun_completes_them_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = long_ci_config(dir);
    let mut parent = Command::new(env!("CARGO_BIN_EXE_formation"))
        .args([
            "replicate",
            &config,
            "--seeds",
            "0..2",
            "-j",
            "2",
            "--out",
            "st",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the parent once both runs have analysis rows.
    let deadline = Instant::now() + Duration::from_secs(120);
    while ["s0", "s1"].iter().any(|name| {
        std::fs::read_to_string(
            dir.join(format!("st/runs/{name}/analysis/checkpoint_metrics.jsonl")),
        )
        .map_or(0, |t| t.lines().count())
            < 5
    }) {
        assert!(Instant::now() < deadline, "the runs did not start");
        assert!(
            parent.try_wait().unwrap().is_none(),
            "the study finished too soon"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let children = status_pids(&dir.join("st"));
    assert_eq!(children.len(), 2, "{children:?}");
    parent.kill().unwrap(); // SIGKILL
    parent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while children.iter().any(|&pid| alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "orphaned runs still alive: {children:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    ok(replicate(&config, "0..2", dir));
    // Each run equals an uninterrupted `train --analyze` of its own config.
    for name in ["s0", "s1"] {
        let straight = format!("straight-{name}");
        let own = dir.join(format!("st/configs/{name}.toml"));
        ok(formation(
            &[
                "train",
                own.to_str().unwrap(),
                "--analyze",
                "--out",
                &straight,
            ],
            dir,
        ));
        assert_same_run(
            &dir.join(&straight),
            &dir.join(format!("st/runs/{name}")),
            name,
        );
    }
}

#[test]
fn resume_recomputes_rows_whose_arrays_or_bytes_are_damaged_and_leaves_a_complete_run_alone() {
    let (tmp, ci) = straight_ci_run();
    let dir = tmp.path();
    let copy = |name: &str| {
        ok(formation(&["train", &ci, "--analyze", "--out", name], dir));
        dir.join(name)
    };
    let resume = |name: &str| {
        ok(formation(
            &["train", &ci, "--analyze", "--resume", name],
            dir,
        ))
    };

    // A step file missing, or unreadable.
    let missing = copy("missing");
    std::fs::remove_file(missing.join("analysis/activations/step_000008.h5")).unwrap();
    resume("missing");
    assert_same_run(&dir.join("straight"), &missing, "missing step file");
    assert!(missing.join("analysis/activations/step_000008.h5").exists());
    let garbled = copy("garbled");
    std::fs::write(
        garbled.join("analysis/activations/step_000020.h5"),
        b"not hdf5",
    )
    .unwrap();
    resume("garbled");
    assert_same_run(&dir.join("straight"), &garbled, "unreadable step file");

    // A byte that is not UTF-8 inside a middle row; then rows duplicated and out of order.
    let rows_path = |run: &Path| run.join("analysis/checkpoint_metrics.jsonl");
    let bad_byte = copy("bad-byte");
    let mut bytes = std::fs::read(rows_path(&bad_byte)).unwrap();
    let third_line = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(2)
        .unwrap()
        .0;
    bytes[third_line + 5] = 0xff;
    std::fs::write(rows_path(&bad_byte), &bytes).unwrap();
    resume("bad-byte");
    assert_same_run(&dir.join("straight"), &bad_byte, "non-UTF-8 row");

    let doubled = copy("doubled");
    let text = std::fs::read_to_string(rows_path(&doubled)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mixed = [&lines[..6], &lines[4..6], &lines[6..]].concat().join("\n") + "\n";
    std::fs::write(rows_path(&doubled), mixed).unwrap();
    let error = one_error(formation(&["windows", "doubled"], dir));
    assert!(error.contains("duplicated or out of order"), "{error}");
    resume("doubled");
    assert_same_run(&dir.join("straight"), &doubled, "duplicated rows");
    ok(formation(&["windows", "doubled"], dir));

    // A finished run's resume says so and changes nothing.
    let before = snapshot(&dir.join("straight"));
    let out = ok(formation(
        &["train", &ci, "--analyze", "--resume", "straight"],
        dir,
    ));
    assert!(String::from_utf8_lossy(&out.stdout).contains("already complete"));
    let after = snapshot(&dir.join("straight"));
    let changed: Vec<_> = after
        .iter()
        .filter(|file| !before.contains(file))
        .map(|(path, _)| path.clone())
        .collect();
    assert!(
        changed.is_empty() && before.len() == after.len(),
        "changed: {changed:?}"
    );
}

#[test]
fn usage_errors_and_unknown_directories_are_one_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let error = one_error(formation(&["train", "--bogus"], dir));
    assert!(
        error.contains("--bogus") && error.contains("--help"),
        "{error}"
    );
    let error = one_error(formation(&["replay", "x"], dir));
    assert!(error.contains("--window"), "{error}");
    std::fs::create_dir(dir.join("empty")).unwrap();
    for command in ["compare", "report"] {
        let error = one_error(formation(&[command, "empty"], dir));
        assert!(
            error.contains("neither a run directory (no run.json) nor a study directory"),
            "{command}: {error}"
        );
    }
}

/// A tmpfs of `size` mounted at `dir` for the test's life (needs root, as the Slurm test does).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Self(dir.to_owned()))
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_one_sentence_with_the_os_cause_and_resume_finishes_after_space_is_freed() {
    let tmp = tempfile::tempdir().unwrap();
    let ci = example("ci.toml");
    let Some(disk) = Tmpfs::mount(&tmp.path().join("disk"), "2800k") else {
        if std::env::var_os("FORMATION_SKIP_MOUNT").is_some() {
            eprintln!("skipped: cannot mount a tmpfs here (FORMATION_SKIP_MOUNT is set)");
            return;
        }
        panic!("cannot mount a tmpfs (needs root); set FORMATION_SKIP_MOUNT=1 to skip this test");
    };
    ok(formation(
        &["train", &ci, "--analyze", "--out", "straight"],
        tmp.path(),
    ));
    let dir = &disk.0;
    // The run (about 3 MB with its analysis) does not fit.
    let error = final_error(formation(&["train", &ci, "--analyze", "--out", "r"], dir));
    // Where it runs out (a checkpoint, a step file, a log row) depends on the machine; the one line always names
    // the step, the run's file and the OS cause.
    assert!(
        error.contains("No space left on device (os error 28)")
            && error.contains("r/")
            && (error.contains("step_0") || error.contains("at step ")),
        "{error}"
    );
    disk.remount("size=64m");
    ok(formation(
        &["train", &ci, "--analyze", "--resume", "r"],
        dir,
    ));
    assert_same_run(
        &tmp.path().join("straight"),
        &dir.join("r"),
        "after a full disk",
    );

    // A read-only file system: refused at once, saying so.
    disk.remount("ro");
    let error = one_error(formation(
        &["train", &ci, "--analyze", "--resume", "r"],
        dir,
    ));
    assert!(error.contains("Read-only file system"), "{error}");
    disk.remount("rw");
}
