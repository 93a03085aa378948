//! The `formation` command line as a library: one module per subcommand ([`commands`]), the progress display,
//! and the error and lock helpers the subcommands share (the device choice is `trainer::device`). The
//! `formation` binary (`src/main.rs`) parses the command line and calls into it; the `formation-bench` binary
//! (`bench/main.rs`) measures it.

pub mod commands;
pub mod progress;
mod study_runner;

/// Prints one line to standard output, as `println!` does, except that a line nobody can read any more is
/// dropped instead of panicking: with `formation windows RUN | head`, `head` closes the pipe after ten lines and
/// the command still finishes its work and writes its files. Everything formation prints on standard output is
/// a summary of what it did or wrote, so nothing is lost with it.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say_line(format_args!($($arg)*))
    };
}

/// The body of [`say!`]: writes `line` and a newline to standard output, ignoring a failed write (a closed pipe,
/// or a full disk under a redirection).
pub fn say_line(line: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// The write lock of `dir` for `command`, or `None` with a note on stderr when another process is writing it
/// (a reader then works on what is there so far).
pub fn lock_or_note(
    dir: &std::path::Path,
    command: &str,
) -> anyhow::Result<Option<host::lock::DirLock>> {
    match host::lock::DirLock::acquire(dir, command) {
        Ok(lock) => Ok(Some(lock)),
        Err(host::lock::LockError::Held { holder, .. }) => {
            note_in_progress(dir, &holder);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Says on stderr that `dir` is still being written by `holder`, if it is.
pub fn note_if_in_progress(dir: &std::path::Path) {
    if let Some(holder) = host::lock::holder(dir) {
        note_in_progress(dir, &holder);
    }
}

fn note_in_progress(dir: &std::path::Path, holder: &str) {
    eprintln!(
        "note: {} is still being written ({holder}); this reads it as far as it goes",
        dir.display()
    );
}

/// The error and its causes as one line, most general first.
pub fn one_sentence(err: &anyhow::Error) -> String {
    trainer::error::error_chain(err.as_ref())
}
