//! One writer per run or study directory. A writer holds an exclusive advisory lock (`flock`) on the
//! directory's `formation.lock` for as long as it writes; the OS releases it when the process ends, however it
//! ends, so a killed writer never leaves a stale lock. The file also names the holder (pid and command), so a
//! refused writer can say who has the directory.
//!
//! New directories are made with [`create_staged`]: everything a directory must hold from its first moment is
//! written into a locked staging sibling, which is then renamed into place. A kill at any point leaves either
//! no directory or a complete one, never a half-made one that neither a fresh start nor a resume accepts.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{FlockOperation, flock};

/// Name of the lock file inside a locked directory.
pub const LOCK_FILE: &str = "formation.lock";

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds the lock.
    #[error(
        "{} is in use by another formation process ({holder}); wait for it to finish or stop it, then run this again",
        dir.display()
    )]
    Held { dir: PathBuf, holder: String },
    /// The lock file could not be created or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The exclusive write lock of one directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    /// Keeps the `flock` alive: it belongs to this open file description.
    _file: File,
}

impl DirLock {
    /// Takes the write lock of `dir` (which must exist) for `command` (e.g. `formation train`), refusing at once
    /// when another process holds it.
    pub fn acquire(dir: &Path, command: &str) -> Result<Self, LockError> {
        Self::acquire_file(&dir.join(LOCK_FILE), dir, command)
    }

    /// Takes the lock file `path` on behalf of `guarded` (the directory or run it stands for, named in errors).
    pub fn acquire_file(path: &Path, guarded: &Path, command: &str) -> Result<Self, LockError> {
        let path = path.to_owned();
        let dir = guarded;
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // Not truncated on open: the holder's name must survive a refused contender.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // A reader asking who holds the lock takes a shared lock for an instant (see `holder`); a few quick
        // retries keep that instant from refusing a writer.
        let mut tries = 0;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::WOULDBLOCK && tries < 5 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    return Err(LockError::Held {
                        dir: dir.to_owned(),
                        holder: read_holder(&mut file),
                    });
                }
                Err(e) => return Err(io(e.into())),
            }
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "pid {}, `{command}`", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Self {
            dir: dir.to_owned(),
            _file: file,
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Who holds the write lock of `dir` (`pid 123, \`formation train\``), if a live process does. Readers use it to
/// say that what they read is still being written.
pub fn holder(dir: &Path) -> Option<String> {
    let mut file = File::open(dir.join(LOCK_FILE)).ok()?;
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => None,
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Some(read_holder(&mut file)),
        Err(_) => None,
    }
}

fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.read_to_string(&mut text);
    match text.trim() {
        "" => "pid unknown".to_owned(),
        holder => holder.to_owned(),
    }
}

/// Why a staged directory could not be created.
#[derive(Debug, thiserror::Error)]
pub enum StageError<E> {
    /// `root` already exists and is not empty.
    #[error("{} already exists and is not empty", root.display())]
    Exists { root: PathBuf },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Filling the staging directory failed (it was removed again).
    #[error(transparent)]
    Fill(E),
}

/// Creates the directory `root` whole: `fill` writes its initial contents into a locked staging sibling
/// (`.NAME.staging-PID`), which is then renamed to `root`. Returns the lock, which now guards `root`.
///
/// `root` may exist as an empty directory (it is replaced); anything else there is refused. Staging
/// directories that killed processes left beside `root` are removed first (their locks are free).
pub fn create_staged<E>(
    root: &Path,
    command: &str,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<DirLock, StageError<E>> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StageError::Io { path, source }
    };
    let exists_non_empty =
        |root: &Path| fs::read_dir(root).is_ok_and(|mut entries| entries.next().is_some());
    if exists_non_empty(root) {
        return Err(StageError::Exists {
            root: root.to_owned(),
        });
    }
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let parent = match root.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io(&parent))?;
    remove_dead_staging(&parent, &name);
    let staging = parent.join(format!(".{name}.staging-{}", std::process::id()));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    fs::create_dir(&staging).map_err(io(&staging))?;
    let mut lock = DirLock::acquire(&staging, command)?;
    crate::failpoint::hit("create-staging");
    if let Err(e) = fill(&staging) {
        drop(lock);
        let _ = fs::remove_dir_all(&staging);
        return Err(StageError::Fill(e));
    }
    crate::failpoint::hit("create-filled");
    sync_dir(&staging).map_err(io(&staging))?;
    if let Err(source) = fs::rename(&staging, root) {
        drop(lock);
        let _ = fs::remove_dir_all(&staging);
        // Another process created `root` first (rename cannot replace a non-empty directory).
        return Err(match source.kind() {
            ErrorKind::DirectoryNotEmpty | ErrorKind::AlreadyExists => StageError::Exists {
                root: root.to_owned(),
            },
            _ => StageError::Io {
                path: root.to_owned(),
                source,
            },
        });
    }
    sync_dir(&parent).map_err(io(&parent))?;
    lock.dir = root.to_owned();
    crate::failpoint::hit("create-renamed");
    Ok(lock)
}

/// Removes the staging directories for `name` in `parent` whose writers are gone.
fn remove_dead_staging(parent: &Path, name: &str) {
    let prefix = format!(".{name}.staging-");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_staging = entry.file_name().to_string_lossy().starts_with(&prefix);
        // Taking its lock proves that no live process is filling it.
        if is_staging && let Ok(lock) = DirLock::acquire(&path, "cleanup") {
            drop(lock);
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// fsync of a directory, so that a rename in it survives a power cut.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holders_pid_and_a_dropped_lock_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), "formation train").unwrap();
        let err = DirLock::acquire(dir.path(), "formation sweep").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!("pid {}, `formation train`", std::process::id())),
            "{message}"
        );
        assert_eq!(
            holder(dir.path()),
            Some(format!("pid {}, `formation train`", std::process::id()))
        );
        drop(first);
        assert_eq!(holder(dir.path()), None);
        DirLock::acquire(dir.path(), "formation sweep").unwrap();
    }

    #[test]
    fn a_staged_directory_appears_whole_and_keeps_its_lock() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("run");
        let lock = create_staged::<std::io::Error>(&root, "formation train", |dir| {
            assert!(!root.exists(), "nothing at root while filling");
            fs::write(dir.join("run.json"), b"{}")
        })
        .unwrap();
        assert!(root.join("run.json").exists());
        assert_eq!(lock.dir(), root);
        assert!(holder(&root).is_some(), "the lock moved with the directory");
        let names: Vec<_> = fs::read_dir(parent.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no staging directory left");
    }

    #[test]
    fn a_non_empty_root_is_refused_and_a_failed_fill_leaves_nothing() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("run");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("notes.txt"), b"mine").unwrap();
        let err = create_staged::<std::io::Error>(&root, "t", |_| Ok(())).unwrap_err();
        assert!(matches!(err, StageError::Exists { .. }));
        assert_eq!(fs::read(root.join("notes.txt")).unwrap(), b"mine");

        let other = parent.path().join("other");
        let err = create_staged(&other, "t", |_| Err::<(), _>("disk full")).unwrap_err();
        assert!(matches!(err, StageError::Fill("disk full")));
        assert!(!other.exists());
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 1);
    }

    #[test]
    fn staging_left_by_a_dead_process_is_removed_by_the_next_create() {
        let parent = tempfile::tempdir().unwrap();
        let dead = parent.path().join(".run.staging-999999");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("run.json"), b"half").unwrap();
        create_staged::<std::io::Error>(&parent.path().join("run"), "t", |_| Ok(())).unwrap();
        assert!(!dead.exists());
    }
}
