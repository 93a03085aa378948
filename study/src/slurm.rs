//! The Slurm array script of a study: one array task per unfinished run, each running
//! `formation study-task STUDY_DIR NAME` (train with analysis, resuming where a run stopped, then the windows).

use std::path::Path;

use host::layout::StudyLayout;
use trainer::config::SlurmConfig;

/// The `sbatch` script that runs `names` of `study` as one array job. `exe` is the `formation` binary the
/// tasks run (an absolute path on a filesystem the nodes share, like the study directory).
pub fn array_script(
    study: &StudyLayout,
    names: &[String],
    exe: &Path,
    resources: &SlurmConfig,
) -> String {
    let root = study.root.display();
    let job = study
        .root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or("study".into());
    let throttle = resources
        .max_parallel
        .map(|k| format!("%{k}"))
        .unwrap_or_default();
    let mut lines = vec![
        "#!/bin/bash".to_owned(),
        format!(
            "# formation study {root}: {} runs as one Slurm array.",
            names.len()
        ),
        format!("# Submit: sbatch {}", study.sbatch().display()),
        format!("# Then:   formation collect {root}   (and formation compare {root})"),
        format!("#SBATCH --job-name=formation-{job}"),
        format!(
            "#SBATCH --array=0-{}{throttle}",
            names.len().saturating_sub(1)
        ),
        format!("#SBATCH --cpus-per-task={}", resources.cpus_per_task),
        format!("#SBATCH --mem={}", resources.mem),
        format!("#SBATCH --time={}", resources.time),
        format!("#SBATCH --output={root}/logs/slurm-%A_%a.out"),
        format!("#SBATCH --chdir={root}"),
    ];
    if let Some(partition) = &resources.partition {
        lines.push(format!("#SBATCH --partition={partition}"));
    }
    lines.extend(resources.extra.iter().map(|e| format!("#SBATCH {e}")));
    lines.extend([
        "set -euo pipefail".to_owned(),
        format!(
            "RUNS=({})",
            names
                .iter()
                .map(|n| shell_quote(n))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        "NAME=${RUNS[$SLURM_ARRAY_TASK_ID]}".to_owned(),
        format!(
            "exec {} study-task {} \"$NAME\" >>{}/logs/\"$NAME\".log 2>&1",
            shell_quote(&exe.display().to_string()),
            shell_quote(&root.to_string()),
            shell_quote(&root.to_string()),
        ),
    ]);
    lines.join("\n") + "\n"
}

/// `text` in single quotes for bash.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_names_every_run_and_the_resources() {
        let study = StudyLayout::new("/data/studies/lr screen");
        let resources = SlurmConfig {
            partition: Some("gpu".into()),
            max_parallel: Some(2),
            extra: vec!["--account=interp".into()],
            ..SlurmConfig::default()
        };
        let names = vec!["optim.lr=1e-3-s0".to_owned(), "optim.lr=3e-3-s0".to_owned()];
        let script = array_script(&study, &names, Path::new("/opt/formation"), &resources);
        for line in [
            "#SBATCH --array=0-1%2",
            "#SBATCH --cpus-per-task=2",
            "#SBATCH --mem=4G",
            "#SBATCH --time=01:00:00",
            "#SBATCH --partition=gpu",
            "#SBATCH --account=interp",
            "RUNS=('optim.lr=1e-3-s0' 'optim.lr=3e-3-s0')",
            "exec '/opt/formation' study-task '/data/studies/lr screen' \"$NAME\" >>'/data/studies/lr screen'/logs/\"$NAME\".log 2>&1",
        ] {
            assert!(
                script.lines().any(|l| l == line),
                "missing {line}:\n{script}"
            );
        }
        assert!(script.starts_with("#!/bin/bash\n"));
    }

    #[test]
    fn quotes_survive_the_shell() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
