//! The pidfile: written when the master starts, removed when it exits, and locked in between.
//!
//! An exclusive `flock` on the file, held for the master's life, is what says "a forkserve is
//! running": it cannot be mistaken the way a pid can (a stale pid reused by another process, or
//! one this user may not signal), and two masters starting at once cannot both win.
//!
//! The lock is the master's alone. A `flock` belongs to the open file description, which a fork
//! shares: a worker that kept its copy of the descriptor would hold the lock after the master
//! died, and refuse a restart for as long as it ran. So each worker closes its copy at once
//! ([`Pidfile::close_in_worker`]). Closing is what releases nothing: a `flock` goes only when
//! every descriptor of the description is closed, or with an explicit `LOCK_UN`, which would
//! release it for the master too. (An `fcntl` lock would be the other way round: owned by the
//! process, not inherited, and released by closing *any* of the owner's descriptors of the file.)

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::Error;

/// How long a master starting tries for the pidfile's lock: `forkserve status` takes a shared
/// lock for a moment to tell a stale pidfile from a live one, and a start that met it would
/// otherwise fail as if a server were running. A running server holds the lock for good, so
/// waiting this long only delays that refusal.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(100);

/// Takes the exclusive lock on `file`, trying again for [`LOCK_PATIENCE`] while it is held.
fn lock_exclusive(file: File) -> Result<Flock<File>, (File, Errno)> {
    let until = std::time::Instant::now() + LOCK_PATIENCE;
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Err((back, Errno::EWOULDBLOCK)) if std::time::Instant::now() < until => {
                file = back;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            result => return result,
        }
    }
}

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
        let mut file = match lock_exclusive(file) {
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

    /// In a freshly forked worker: closes the worker's copy of the locked descriptor, so that
    /// only the master holds the lock, without unlocking it (see the module docs).
    pub(crate) fn close_in_worker(self) {
        let raw = self.file.as_raw_fd();
        // `Flock`'s destructor unlocks, which would unlock the master's file: forget it, and
        // close the number alone. Nothing else in this process uses the descriptor.
        std::mem::forget(self);
        let _ = nix::unistd::close(raw);
    }

    /// Renames the file to `PATH.oldbin`, as a binary upgrade starts. The lock stays with the
    /// file.
    pub(crate) fn move_aside(&mut self) -> io::Result<()> {
        self.rename_to(oldbin(&self.path))
    }

    /// Renames `PATH.oldbin` back to `PATH`, as a binary upgrade failed.
    pub(crate) fn move_back(&mut self) -> io::Result<()> {
        let Some(original) = self.path.to_str().and_then(|p| p.strip_suffix(".oldbin")) else {
            return Ok(());
        };
        self.rename_to(PathBuf::from(original))
    }

    fn rename_to(&mut self, to: PathBuf) -> io::Result<()> {
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

/// `PATH.oldbin`: where an old master's pidfile is during a binary upgrade.
pub(crate) fn oldbin(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".oldbin");
    PathBuf::from(name)
}

/// Removes the pidfile at `path` if no master holds it locked: one left by a master that was
/// killed. Returns whether it removed one. A file that is locked, or gone, is left as it is.
pub(crate) fn remove_stale(path: &Path) -> io::Result<bool> {
    match OpenOptions::new().read(true).open(path) {
        Ok(file) => remove_if_stale(path, file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The second half of [`remove_stale`], given the file opened from `path`: locks it, and
/// removes the path only if it still names that file. Between the open and the lock, the path
/// may have been replaced by another master's pidfile (renamed there, locked): that one is
/// not to be removed.
fn remove_if_stale(path: &Path, file: File) -> io::Result<bool> {
    let locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(false),
        Err((_, e)) => return Err(e.into()),
    };
    let held = locked.metadata()?;
    match std::fs::metadata(path) {
        // Removed while locked, so that no master can take it in between; unlocked on drop.
        Ok(at_path) if at_path.dev() == held.dev() && at_path.ino() == held.ino() => {
            std::fs::remove_file(path).map(|()| true)
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_waits_out_a_moment_s_shared_lock_but_not_a_held_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("forkserve.pid");
        std::fs::write(&path, "999999\n").unwrap();
        // As `forkserve status` probes a stale pidfile: a shared lock, released at once.
        let probe = Flock::lock(File::open(&path).unwrap(), FlockArg::LockSharedNonblock).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(probe);
        });
        let pidfile = Pidfile::create(&path).expect("the probe's lock is waited out");
        release.join().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", std::process::id()));
        // A lock that stays (a running server's) still refuses the start.
        let started = std::time::Instant::now();
        let second = Pidfile::create(&path).unwrap_err().to_string();
        assert!(second.contains("is locked by a running forkserve"), "{second}");
        assert!(started.elapsed() >= LOCK_PATIENCE);
        drop(pidfile);
    }

    #[test]
    fn a_stale_pidfile_is_removed_but_not_one_that_replaced_it_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs.pid.oldbin");
        std::fs::write(&path, "1\n").unwrap();
        assert!(remove_stale(&path).unwrap(), "stale: removed");
        assert!(!path.exists());
        assert!(!remove_stale(&path).unwrap(), "gone: nothing to do");

        // Locked by a running master: kept.
        let live = Pidfile::create(&path).unwrap();
        assert!(!remove_stale(&path).unwrap());
        assert!(path.exists());
        drop(live);

        // The stale file is opened; then, before it is locked, another master's pidfile is
        // renamed over the path (as an upgrade does). That one stays.
        std::fs::write(&path, "1\n").unwrap();
        let opened = OpenOptions::new().read(true).open(&path).unwrap();
        let other = dir.path().join("fs.pid");
        let mut newer = Pidfile::create(&other).unwrap();
        newer.move_aside().unwrap();
        assert_eq!(newer.path(), path);
        // The stale file is unlocked (its master is gone), so the lock succeeds.
        assert!(!remove_if_stale(&path, opened).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), std::process::id().to_string());
    }
}
