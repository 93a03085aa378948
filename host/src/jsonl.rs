//! JSON-lines files (one row per line, each with a `step`): an append-only writer that writes each row whole and
//! flushes it, and the reading rules a resumed writer and the readers share.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::files::{FileError, write_atomic};

/// The complete rows of a JSON-lines file with their `step`, in file order. A torn, non-UTF-8 or non-JSON
/// line is left out (its step counts as not written), and so is a row whose step is not above the last kept
/// one: what a resumed writer keeps is unique and in step order whatever happened to the file.
pub fn committed_rows(bytes: &[u8]) -> Vec<StepLine<'_>> {
    committed(bytes).rows
}

/// A row's step and its line.
pub type StepLine<'a> = (u64, &'a [u8]);

/// What [`committed_rows`] keeps of a JSON-lines file, and where it first left a line out.
pub struct Committed<'a> {
    pub rows: Vec<StepLine<'a>>,
    /// `Some(after)`, with `after` the step of the last kept row before the first line left out (`None`: before
    /// any). A writer resumes at the first step after it, so that the rewritten file is clean. `None` when
    /// every line is a committed row.
    pub first_damage: Option<Option<u64>>,
}

/// The committed rows of `bytes` and where the first line was left out, in one pass.
pub fn committed(bytes: &[u8]) -> Committed<'_> {
    let mut rows: Vec<StepLine<'_>> = vec![];
    let mut damage = None;
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let step = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("step")?.as_u64());
        match step {
            Some(step) if rows.last().is_none_or(|&(last, _)| step > last) => {
                rows.push((step, line))
            }
            _ => {
                if damage.is_none() {
                    damage = Some(rows.last().map(|&(last, _)| last));
                }
            }
        }
    }
    Committed {
        rows,
        first_damage: damage,
    }
}

/// An append-only JSON-lines file: each row is written whole with one `write` and flushed.
pub struct JsonlWriter {
    path: PathBuf,
    file: fs::File,
}

impl JsonlWriter {
    /// Opens `path` for appending, first dropping every row whose `step` is `from_step` or later (rows a resumed
    /// run will write again), a torn last line, and any line [`committed_rows`] leaves out.
    pub fn open_from(path: &Path, from_step: u64) -> Result<Self, FileError> {
        let io = |source| FileError::Write {
            path: path.to_owned(),
            source,
        };
        match fs::read(path) {
            Ok(bytes) => {
                let mut kept = Vec::with_capacity(bytes.len());
                for (_, line) in committed_rows(&bytes)
                    .into_iter()
                    .filter(|&(step, _)| step < from_step)
                {
                    kept.extend_from_slice(line);
                    kept.push(b'\n');
                }
                if kept != bytes {
                    write_atomic(path, &kept)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Appends one row.
    pub fn write<T: Serialize>(&mut self, row: &T) -> Result<(), FileError> {
        let mut line = serde_json::to_vec(row).expect("row serializes");
        line.push(b'\n');
        let io = |source| FileError::Write {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&line).map_err(io)?;
        self.file.flush().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_rows_skip_damaged_lines_duplicates_and_steps_out_of_order() {
        let bytes = b"{\"step\":0}\n{\"step\":1\xff}\n{\"step\":2}\n{\"step\":2}\n{\"step\":1}\n{\"step\":4}\n{\"st";
        let steps: Vec<u64> = committed_rows(bytes).iter().map(|r| r.0).collect();
        assert_eq!(steps, [0, 2, 4]);
        assert_eq!(
            committed(bytes).first_damage,
            Some(Some(0)),
            "the damaged row after step 0"
        );
        assert_eq!(
            committed(b"{\"step\":0}\n{\"step\":1}\n").first_damage,
            None
        );
        assert_eq!(
            committed(b"{\"step\":3}\n{\"step\":3}\n").first_damage,
            Some(Some(3))
        );
        assert_eq!(committed(b"x\n{\"step\":3}\n").first_damage, Some(None));
    }

    #[test]
    fn a_reopened_log_keeps_the_committed_rows_before_the_resume_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        fs::write(
            &path,
            b"{\"step\":0}\n\xfe\xff\n{\"step\":2}\n{\"step\":2}\n{\"step\":4}\n",
        )
        .unwrap();
        let mut log = JsonlWriter::open_from(&path, 4).unwrap();
        log.write(&serde_json::json!({"step": 4})).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"step\":0}\n{\"step\":2}\n{\"step\":4}\n"
        );
    }
}
