//! The pidfile: written when the master starts, removed when it exits, and locked in between.
//!
//! An exclusive `flock` on the file, held for the master's life, is what says "a forkserve is
//! running": it cannot be mistaken the way a pid can (a stale pid reused by another process, or
//! one this user may not signal), and two masters starting at once cannot both win. Workers
//! inherit the locked descriptor, so the lock lasts until the last process of the server exits.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::Error;

/// A pidfile this master wrote and holds locked.
#[derive(Debug)]
pub(crate) struct Pidfile {
    path: PathBuf,
    file: Flock<File>,
}

impl Pidfile {
    /// Locks `path` (creating it) and writes this process's pid in it. Refuses if another
    /// server holds the lock.
    pub(crate) fn create(path: &Path) -> Result<Pidfile, Error> {
        let err = |message: String| Error::Pidfile { path: path.to_path_buf(), message };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((_, Errno::EWOULDBLOCK)) => {
                let holder = std::fs::read_to_string(path).unwrap_or_default();
                return Err(err(format!(
                    "is locked by a running forkserve (master pid {})",
                    holder.trim()
                )));
            }
            Err((_, e)) => return Err(err(format!("cannot lock: {e}"))),
        };
        file.set_len(0)
            .and_then(|()| writeln!(&mut *file, "{}", std::process::id()))
            .map_err(|e| err(e.to_string()))?;
        Ok(Pidfile { path: path.to_path_buf(), file })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file to `PATH.oldbin` (`aside`), as a binary upgrade starts, or back, if the
    /// upgrade failed. The lock stays with the file.
    pub(crate) fn rename_oldbin(&mut self, aside: bool) -> io::Result<()> {
        let oldbin = |p: &Path| {
            let mut name = p.as_os_str().to_owned();
            name.push(".oldbin");
            PathBuf::from(name)
        };
        let to = if aside {
            oldbin(&self.path)
        } else {
            let Some(original) = self.path.to_str().and_then(|p| p.strip_suffix(".oldbin")) else {
                return Ok(());
            };
            PathBuf::from(original)
        };
        std::fs::rename(&self.path, &to)?;
        self.path = to;
        Ok(())
    }

    /// Removes the file, if the path still names the file this master locked, and unlocks it.
    pub(crate) fn remove(self) {
        let ours = match (std::fs::metadata(&self.path), self.file.metadata()) {
            (Ok(at_path), Ok(held)) => at_path.dev() == held.dev() && at_path.ino() == held.ino(),
            _ => false,
        };
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), "cannot remove pidfile: {e}");
                }
            }
        }
    }
}
