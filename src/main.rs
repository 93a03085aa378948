//! `formation`: train small transformers and watch mechanisms form. This binary only parses the command line,
//! picks the device and turns errors into one sentence and an exit code; the work lives in the library crates.

use formation::commands;

// burn allocates fresh buffers for every op; mimalloc reuses them instead of going back to the kernel. The
// analysis sidecar's threads use the system allocator (host::alloc).
#[global_allocator]
static ALLOCATOR: host::alloc::Routed = host::alloc::Routed;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "formation",
    version,
    about = "Train small transformers and watch mechanisms form."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a TOML config, saving checkpoints on its schedule.
    Train(commands::train::Args),
    /// Write the fixed probe set of a config to an HDF5 file.
    ProbeSet(commands::probe_set::Args),
    /// Export a checkpoint as TransformerLens safetensors + HookedTransformerConfig JSON.
    Export(commands::export::Args),
    /// Analyze every saved checkpoint of a finished run, as `train --analyze` would have.
    Sweep(commands::sweep::Args),
    /// Data-defined tasks: check a dataset directory, or export a config's task as one.
    Task {
        #[command(subcommand)]
        command: commands::task::Command,
    },
    /// Find the birth windows of an analyzed run (writes analysis/birth_windows.json).
    Windows(commands::windows::Args),
    /// Re-train a birth window densely from the checkpoint before it, analyze it, verify it bit for bit.
    Replay(commands::replay::Args),
    /// Run one targeted intervention (logit lens, …) on one saved checkpoint.
    Intervene(commands::intervene::Args),
    /// The LLC trajectory over the saved checkpoints (analysis/llc.jsonl), or --calibrate its sampler.
    Llc(commands::llc::Args),
    /// Sparse dictionaries across checkpoints (a replayed window's): latents' frequencies, continuity and
    /// birth steps (analysis/features.json).
    Features(commands::features::Args),
    /// Phase B: train one config over several seeds (locally with -j, or as a Slurm array with --slurm).
    Replicate(commands::study::ReplicateArgs),
    /// Phase C: train one config over the values of one key (locally with -j, or as a Slurm array).
    Screen(commands::study::ScreenArgs),
    /// Where every run of a study stands (after a Slurm array, or an interrupted local study).
    Collect(commands::study::CollectArgs),
    /// Compare runs or a study's runs and apply the decision rule for deep circuit work (READY / NOT READY).
    Compare(commands::compare::Args),
    /// Phase A in one command: train --analyze, windows, dense replay of the top window(s) with their
    /// interventions, report. Resumable: a rerun continues where it stopped.
    Trace(commands::trace::Args),
    /// A local live dashboard of a run (while it trains) or a study: the report's panels and one step slider.
    Serve(commands::serve::Args),
    /// Write a self-contained HTML report of a run or a study (plots, windows, decision).
    Report(commands::report::Args),
    /// One run of a study, as the study's engines start it (train --analyze or resume, then windows).
    #[command(hide = true)]
    StudyTask(commands::study::TaskArgs),
}

fn main() {
    host::alloc::hold_freed_pages();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => exit_on_usage_error(e),
    };
    let result = match cli.command {
        Command::Train(args) => commands::train::run(args),
        Command::Trace(args) => commands::trace::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::ProbeSet(args) => commands::probe_set::run(args),
        Command::Sweep(args) => commands::sweep::run(args),
        Command::Task { command } => commands::task::run(command),
        Command::Windows(args) => commands::windows::run(args),
        Command::Replay(args) => commands::replay::run(args),
        Command::Intervene(args) => commands::intervene::run(args),
        Command::Llc(args) => commands::llc::run(args),
        Command::Features(args) => commands::features::run(args),
        Command::Replicate(args) => commands::study::replicate(args),
        Command::Screen(args) => commands::study::screen(args),
        Command::Collect(args) => commands::study::collect(args),
        Command::Compare(args) => commands::compare::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::StudyTask(args) => commands::study::task(args),
    };
    if let Err(err) = result {
        eprintln!("error: {}", formation::one_sentence(&err));
        std::process::exit(1);
    }
}

/// Prints help or the version as clap does; a usage error becomes one sentence (clap's own first line, without
/// its usage block) and exit code 2.
fn exit_on_usage_error(error: clap::Error) -> ! {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => error.exit(),
        _ => {
            // clap's first paragraph is the sentence (a list of missing arguments continues it on indented
            // lines); tips and the usage block follow after a blank line.
            let text = error.to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let sentence = first.join(" ");
            let sentence = sentence.trim_start_matches("error: ").trim_end_matches('.');
            eprintln!("error: {sentence} (see `formation --help` or `formation COMMAND --help`)");
            std::process::exit(2);
        }
    }
}
