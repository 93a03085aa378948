//! Whole-file writes: a file is written to a temporary sibling named for this process, synced and renamed, so
//! a reader or a kill never sees half of it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A file that could not be read or written, with the operating system's cause.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FileError {
    pub fn write(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
        move |source| FileError::Write {
            path: path.to_owned(),
            source,
        }
    }
    pub fn read(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
        move |source| FileError::Read {
            path: path.to_owned(),
            source,
        }
    }
}

/// Writes a file whole: to a temporary sibling (named for this process), fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let io = |source| FileError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::File::create(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}
