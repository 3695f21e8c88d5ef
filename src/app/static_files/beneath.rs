//! Opening a file beneath a static route's root, and never outside it.
//!
//! Files are opened *beneath an open handle of the root directory* with
//! `openat2(RESOLVE_BENEATH)`, so the kernel refuses any resolution that leaves the root, symlinks included, however the tree
//! changes while the request runs. Where `openat2` is missing (Linux before 5.6, or a seccomp
//! profile that blocks it), or refuses an absolute symlink (which may point back inside the
//! root), the file is opened and its real location, read back from `/proc/self/fd`, must lie
//! inside the root: the check is made on the object opened, not on a name that could be swapped
//! in between. Files are opened non-blocking and must be regular, so a FIFO cannot hang the
//! worker.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::Mode;

/// Set once `openat2` has been found missing; the fallback is used from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `relative` for reading beneath the directory `root_fd` (which is `root`), following
/// symlinks only as long as they stay inside it. A path that leads out is not found.
pub(super) fn open_beneath(root_fd: &OwnedFd, root: &Path, relative: &Path) -> io::Result<OwnedFd> {
    // O_NONBLOCK: opening a FIFO must not block the worker. O_NOCTTY: a terminal device in the
    // tree must not become the worker's controlling terminal.
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match openat2(root_fd, relative, how) {
            Ok(fd) => return Ok(fd),
            // The kernel refused a resolution that leaves the root. That includes an absolute
            // symlink that points back inside it, which the check below accepts.
            Err(Errno::EXDEV) => {}
            Err(Errno::ENOSYS | Errno::EPERM) => {
                tracing::warn!("openat2 is not available; static files are checked via /proc");
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e.into()),
        }
    }
    open_then_check(root_fd, root, relative, flags)
}

/// The fallback: open, then check where the opened file really is.
fn open_then_check(
    root_fd: &OwnedFd,
    root: &Path,
    relative: &Path,
    flags: OFlag,
) -> io::Result<OwnedFd> {
    let fd = openat(root_fd, relative, flags, Mode::empty())?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if real.starts_with(root) { Ok(fd) } else { Err(escaped(relative)) }
}

fn escaped(relative: &Path) -> io::Error {
    tracing::debug!(path = %relative.display(), "refused a path that leads out of the static root");
    io::ErrorKind::NotFound.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::static_files::StaticDir;

    /// A symlink that leads out is refused by both ways of opening, and one inside works.
    #[test]
    fn opening_stays_beneath_the_root() {
        let dir = std::env::temp_dir().join(format!("forkserve-static-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(dir.join("secret"), "s").unwrap();
        std::fs::write(root.join("sub/ok"), "ok").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("sub/up")).unwrap();
        std::os::unix::fs::symlink("sub/ok", root.join("in")).unwrap();
        let root = root.canonicalize().unwrap();
        let fd = StaticDir::open(root.clone()).unwrap().root_fd;
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        for escape in ["out", "sub/up", "/etc/passwd"] {
            let err = open_beneath(&fd, &root, Path::new(escape)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "openat2: {escape}");
            if escape != "/etc/passwd" {
                let err = open_then_check(&fd, &root, Path::new(escape), flags).unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::NotFound, "fallback: {escape}");
            }
        }
        assert!(open_beneath(&fd, &root, Path::new("in")).is_ok());
        assert!(open_then_check(&fd, &root, Path::new("in"), flags).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
