//! `formation replicate --slurm` against a real Slurm: a single-node cluster started by the test
//! (`tests/slurm/cluster.sh`, Debian's slurm-wlm and munge), a CI-sized array submitted with `sbatch` and
//! collected with `formation collect` (issue 7).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// The cluster's daemons; stopped when dropped (also when the test fails).
struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir)
            .status()
            .expect("bash runs");
        let cluster = Cluster {
            dir: dir.to_owned(),
        };
        assert!(
            status.success(),
            "the single-node Slurm cluster did not start"
        );
        cluster
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", self.dir.join("slurm.conf"));
        command
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slurm/cluster.sh")
}

/// Slurm is part of the test set-up (`scripts/setup.sh --test`); without it this test fails and says why,
/// unless FORMATION_SKIP_SLURM=1 asks to skip it.
fn slurm_available() -> bool {
    let have = ["slurmctld", "slurmd", "sbatch", "munged"].iter().all(|p| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if have && root {
        return true;
    }
    if std::env::var("FORMATION_SKIP_SLURM").as_deref() == Ok("1") {
        eprintln!("skipping the Slurm test: FORMATION_SKIP_SLURM=1");
        return false;
    }
    panic!(
        "the Slurm test needs slurm-wlm and munge (run scripts/setup.sh --test) and root (slurmd); \
         set FORMATION_SKIP_SLURM=1 to skip it"
    );
}

#[test]
fn a_replicate_array_runs_on_slurm_and_is_collected() {
    if !slurm_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cluster = Cluster::start(&dir.join("cluster"));
    let ci = example("ci.toml");
    let out = ok(formation(
        &[
            "replicate",
            &ci,
            "--seeds",
            "0..2",
            "--slurm",
            "--out",
            "study",
            "--mem",
            "1G",
        ],
        dir,
    ));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sbatch"));
    let submitted = cluster
        .command("sbatch")
        .arg("--parsable")
        .arg(dir.join("study/slurm/array.sbatch"))
        .output()
        .unwrap();
    assert!(
        submitted.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let job = String::from_utf8_lossy(&submitted.stdout).trim().to_owned();
    let clock = Instant::now();
    loop {
        let queue = cluster
            .command("squeue")
            .args(["-h", "-j", &job])
            .output()
            .unwrap();
        if queue.status.success() && queue.stdout.iter().all(u8::is_ascii_whitespace) {
            break;
        }
        assert!(
            clock.elapsed() < Duration::from_secs(120),
            "array job {job} still queued after 120 s: {}",
            String::from_utf8_lossy(&queue.stdout)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let collected = formation(&["collect", "study"], dir);
    let logs: String = ["s0", "s1"]
        .iter()
        .map(|n| {
            String::from_utf8(
                std::fs::read(dir.join(format!("study/logs/{n}.log"))).unwrap_or_default(),
            )
            .unwrap()
        })
        .collect();
    let collected = if collected.status.success() {
        collected
    } else {
        panic!(
            "collect after the array: {}{}\nlogs: {logs}",
            String::from_utf8_lossy(&collected.stdout),
            String::from_utf8_lossy(&collected.stderr)
        )
    };
    assert!(String::from_utf8_lossy(&collected.stdout).contains("all 2 runs done"));
    // Each array task trained its own seed with analysis and found its windows, on the Slurm node.
    for (name, seed) in [("s0", 0), ("s1", 1)] {
        let run = dir.join("study/runs").join(name);
        let manifest: serde_json::Value =
            serde_json::from_slice(&read(run.join("run.json"))).unwrap();
        assert_eq!(manifest["seed"], seed);
        assert_eq!(
            jsonl(&run.join("analysis/checkpoint_metrics.jsonl")).len(),
            8
        );
        assert!(run.join("analysis/birth_windows.json").exists());
    }
    ok(formation(
        &["train", &ci, "--analyze", "--out", "solo"],
        dir,
    ));
    assert_same_rows(
        &jsonl(&dir.join("study/runs/s0/analysis/checkpoint_metrics.jsonl")),
        &jsonl(&dir.join("solo/analysis/checkpoint_metrics.jsonl")),
    );
}
