//! The pidfile: written when the master starts, removed when it exits.

use std::io;
use std::path::{Path, PathBuf};

use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::error::Error;

/// A pidfile this master wrote.
#[derive(Debug)]
pub(crate) struct Pidfile {
    path: PathBuf,
}

impl Pidfile {
    /// Writes this process's pid to `path`, atomically. Refuses when the file names another
    /// live process: two masters must not share a pidfile.
    pub(crate) fn create(path: &Path) -> Result<Pidfile, Error> {
        let err = |message: String| Error::Pidfile { path: path.to_path_buf(), message };
        let me = std::process::id();
        if let Some(pid) = read_pid(path) {
            if pid != me && kill(Pid::from_raw(pid as i32), None).is_ok() {
                return Err(err(format!("names process {pid}, which is running")));
            }
        }
        let tmp = path.with_extension(format!("{me}.tmp"));
        std::fs::write(&tmp, format!("{me}\n"))
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                err(e.to_string())
            })?;
        Ok(Pidfile { path: path.to_path_buf() })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if it still holds this process's pid.
    pub(crate) fn remove(self) {
        if read_pid(&self.path) == Some(std::process::id()) {
            if let Err(e) = std::fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), "cannot remove pidfile: {e}");
                }
            }
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
