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
//! its loop, where it can log what failed.

use std::ffi::{CString, c_char};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};

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

/// The file this process's `USR1` handler reopens: a leaked C string, or null for none. Set
/// before signals are unblocked in a worker or a mold; the handler only reads it.
static REOPEN_PATH: AtomicPtr<c_char> = AtomicPtr::new(std::ptr::null_mut());

/// Sets the file [`reopen_from_handler`] reopens. The previous string is leaked on purpose: a
/// handler running at this moment may still be reading it, and a process sets this once or
/// twice in its life.
pub(crate) fn set_reopen_path(path: Option<&Path>) {
    let new = path
        .and_then(|p| CString::new(p.as_os_str().as_bytes()).ok())
        .map_or(std::ptr::null_mut(), CString::into_raw);
    REOPEN_PATH.store(new, Ordering::SeqCst);
}

/// Said on descriptor 2 (the old file) when a reopen from the handler failed.
const REOPEN_FAILED: &[u8] =
    b"forkserve: a worker cannot reopen the log file (USR1); it writes on to the old one\n";

/// Reopens the file set by [`set_reopen_path`] onto descriptor 2; on failure says so on the
/// old descriptor and keeps it. Called from a signal handler: it only makes async-signal-safe
/// system calls (open, dup2, close, write) and reads an atomic, and neither allocates nor takes
/// a lock.
pub(crate) fn reopen_from_handler() {
    let path = REOPEN_PATH.load(Ordering::SeqCst);
    if path.is_null() {
        return;
    }
    let flags = OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_CLOEXEC;
    // SAFETY: a non-null `REOPEN_PATH` is a NUL-terminated string leaked by
    // `set_reopen_path`, never freed.
    let path = unsafe { std::ffi::CStr::from_ptr(path) };
    // `open` with a `&CStr` passes the pointer through, without allocating; dropping the
    // descriptor closes it.
    let mode = nix::sys::stat::Mode::from_bits_truncate(0o644);
    match nix::fcntl::open(path, flags, mode) {
        Ok(fd) => {
            let _ = nix::unistd::dup2_stderr(&fd);
        }
        Err(_) => {
            // SAFETY: write(2) of a static buffer to descriptor 2: async-signal-safe, and a
            // failure leaves nothing to undo.
            unsafe {
                libc::write(libc::STDERR_FILENO, REOPEN_FAILED.as_ptr().cast(), REOPEN_FAILED.len())
            };
        }
    }
}
