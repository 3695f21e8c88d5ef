//! Log files: opening one, putting it on descriptor 2, and reopening it (`USR1`).
//!
//! With `[log] file`, the file *is* descriptor 2 of the master, of each mold and of each
//! worker: it is opened and `dup2`'d onto 2, rather than handed to the tracing subscriber as a
//! writer. Whatever writes to stderr then lands in it, not only forkserve's own lines: Python
//! tracebacks and `wsgi.errors` (through `sys.stderr`), and `faulthandler`, which writes to the
//! descriptor number directly, even from a signal handler. A reopen replaces what descriptor 2
//! refers to for all of them at once.
//!
//! Lines are neither torn nor lost by a reopen: each line is written with one `write(2)` on an
//! `O_APPEND` descriptor, and `dup2` swaps the descriptor between two writes, never inside one,
//! so a line is wholly in the old file or wholly in the new one.
//!
//! A worker reopens from its `USR1` handler ([`reopen_from_handler`], registered by
//! [`crate::signals`]), which only makes async-signal-safe system calls, so that a worker
//! whose thread is busy in the app still moves to the new file at once. The master reopens in
//! its loop, where it can log what failed. Another log a worker writes (the access log) is
//! reopened by the same handler once registered with [`reopen_on_usr1`], if it is written in
//! whole lines on an `O_APPEND` descriptor from [`open_log_file`].

use std::ffi::{CString, c_char};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};

use nix::fcntl::OFlag;
use nix::libc;

/// Opens a log file the way every log of forkserve is opened: for appending (so that the
/// writes of many processes never overwrite each other, and a line written with one `write(2)`
/// is never torn), created if missing with mode 0644 (less the umask), close-on-exec.
pub(crate) fn open_log_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Opens `path` ([`open_log_file`]) and puts it on descriptor 2. On failure, descriptor 2 is
/// left as it was.
pub(crate) fn redirect_stderr(path: &Path) -> io::Result<()> {
    let file = open_log_file(path)?;
    onto_stderr(file.as_fd())
}

/// Puts a copy of `fd` on descriptor 2 (without close-on-exec, as stderr always is).
pub(crate) fn onto_stderr(fd: BorrowedFd<'_>) -> io::Result<()> {
    if fd.as_raw_fd() != libc::STDERR_FILENO {
        nix::unistd::dup2_stderr(fd)?;
    }
    Ok(())
}

/// A copy of descriptor 2 as the process was started with it (close-on-exec), to go back to
/// when a reload removes `[log] file`. `None` if it was closed.
pub(crate) fn save_stderr() -> Option<OwnedFd> {
    io::stderr().as_fd().try_clone_to_owned().ok()
}

/// A descriptor this process's `USR1` handler reopens, and the file it reopens there.
struct Reopened {
    /// The descriptor, or -1 for a free slot.
    fd: AtomicI32,
    /// A leaked C string, or null while there is no file.
    path: AtomicPtr<c_char>,
}

/// Room for descriptor 2 and a few more logs of a worker's (the access log): the handler
/// cannot allocate, so the table is fixed.
static REOPENED: [Reopened; 4] =
    [const { Reopened { fd: AtomicI32::new(-1), path: AtomicPtr::new(std::ptr::null_mut()) } }; 4];

/// Has this process's `USR1` handler ([`reopen_from_handler`]) reopen `path` onto `fd`, which
/// is a log file opened with [`open_log_file`] (for descriptor 2: [`redirect_stderr`]); `None`
/// stops reopening `fd`. Call it before signals are unblocked, in the process that writes to
/// `fd` (a worker or a mold; the master reopens in its loop). A descriptor other than 2 keeps
/// close-on-exec across reopens. Before closing `fd`, call this with `None`: the handler
/// would otherwise replace whatever reuses the number. Fails only when every slot is taken.
///
/// A previous path is leaked on purpose: a handler running at this moment may still be
/// reading it, and a process sets this once or twice in its life.
pub(crate) fn reopen_on_usr1(fd: RawFd, path: Option<&Path>) -> Result<(), String> {
    let new = path
        .and_then(|p| CString::new(p.as_os_str().as_bytes()).ok())
        .map_or(std::ptr::null_mut(), CString::into_raw);
    let slot = REOPENED.iter().find(|r| r.fd.load(Ordering::SeqCst) == fd).or_else(|| {
        REOPENED
            .iter()
            .find(|r| r.fd.compare_exchange(-1, fd, Ordering::SeqCst, Ordering::SeqCst).is_ok())
    });
    match slot {
        Some(slot) => {
            slot.path.store(new, Ordering::SeqCst);
            Ok(())
        }
        None => Err(format!("descriptor {fd}: no room left to reopen it on USR1")),
    }
}

/// Said on descriptor 2 (the old file) when a reopen from the handler failed.
const REOPEN_FAILED: &[u8] =
    b"forkserve: a worker cannot reopen a log file (USR1); it writes on to the old one\n";

/// Reopens every file set with [`reopen_on_usr1`] onto its descriptor; for one that cannot be
/// opened, says so on descriptor 2 and keeps the old descriptor. Called from a signal handler:
/// it only makes async-signal-safe system calls (open, dup3, close, write) and reads atomics,
/// and neither allocates nor takes a lock.
pub(crate) fn reopen_from_handler() {
    for slot in &REOPENED {
        let (fd, path) = (slot.fd.load(Ordering::SeqCst), slot.path.load(Ordering::SeqCst));
        if fd < 0 || path.is_null() {
            continue;
        }
        let flags = OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_CLOEXEC;
        // SAFETY: a non-null path is a NUL-terminated string leaked by `reopen_on_usr1`,
        // never freed.
        let path = unsafe { std::ffi::CStr::from_ptr(path) };
        // `open` with a `&CStr` passes the pointer through, without allocating; dropping the
        // new descriptor closes it.
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
        let reopened = nix::fcntl::open(path, flags, mode).is_ok_and(|new| {
            // Stderr is inherited across exec, as it always is; the others are not.
            let cloexec = if fd == libc::STDERR_FILENO { 0 } else { libc::O_CLOEXEC };
            // SAFETY: dup3 onto a descriptor this process registered as its log: it replaces
            // what the number refers to, atomically, and touches no memory.
            unsafe { libc::dup3(new.as_raw_fd(), fd, cloexec) >= 0 }
        });
        if !reopened {
            // SAFETY: write(2) of a static buffer to descriptor 2: async-signal-safe, and a
            // failure leaves nothing to undo.
            unsafe {
                libc::write(libc::STDERR_FILENO, REOPEN_FAILED.as_ptr().cast(), REOPEN_FAILED.len())
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    use super::{open_log_file, reopen_from_handler, reopen_on_usr1};

    #[test]
    fn a_registered_log_is_reopened_at_its_path_after_a_rename_and_keeps_close_on_exec() {
        let dir = tempfile::tempdir().unwrap();
        let (path, rotated) = (dir.path().join("access.log"), dir.path().join("access.log.1"));
        let mut file = open_log_file(&path).unwrap();
        file.write_all(b"before\n").unwrap();
        reopen_on_usr1(file.as_raw_fd(), Some(&path)).unwrap();
        std::fs::rename(&path, &rotated).unwrap();
        reopen_from_handler();
        file.write_all(b"after\n").unwrap();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "before\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & nix::libc::FD_CLOEXEC, 0);
        let mode = std::fs::metadata(&path).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o022, 0);
        reopen_on_usr1(file.as_raw_fd(), None).unwrap();
    }
}
