//! Processes: fork, wait, kill, parent-death signal, thread counting, the open-files limit and
//! giving freed memory back. Together with the signal registrations in [`crate::signals`], the
//! scoreboard's mapping and taking descriptors passed at exec ([`crate::handoff`]), this is
//! where forkserve uses `unsafe`.

use std::fmt;
use std::io;
use std::time::Duration;

use nix::sys::signal::{self, SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

/// How long after its own `graceful_timeout` a draining worker is killed: the worker closes
/// what remains itself at `graceful_timeout`; this kill is for a worker whose thread is stuck.
/// The master kills it then; an orphaned worker ends itself by then too.
pub(crate) const KILL_MARGIN: Duration = Duration::from_secs(1);

/// Which side of a fork we are on.
pub(crate) enum Forked {
    /// The new process, with every signal blocked; the mask to restore once it can handle them.
    Child(SigSet),
    /// The master, with the new process's pid.
    Parent(Pid),
}

/// Forks the master. The child starts with every signal blocked (see
/// [`crate::signals::block_all`]); the parent's mask is restored.
///
/// The caller must be single-threaded; the master checks that once at start
/// ([`ensure_single_threaded`]) and never starts a thread, and this function re-checks in debug
/// builds.
pub(crate) fn fork() -> io::Result<Forked> {
    debug_assert_eq!(thread_count().unwrap_or(1), 1, "fork from a multi-threaded process");
    fork_blocked(Threads::None)
}

/// Forks a mold (the template process that loaded a generation's app, see `master::mold`), or
/// the middle process of its double fork, as [`fork`] does. The mold starts no thread of its
/// own, but an app may have started some while it was loaded: the mold warns about it once,
/// and forks anyway, as Gunicorn's preload does.
pub(crate) fn fork_mold() -> io::Result<Forked> {
    fork_blocked(Threads::OfTheApp)
}

/// Which threads a process may have when it forks.
enum Threads {
    /// Only the caller's.
    None,
    /// Those an app started while it was loaded, beside the caller.
    OfTheApp,
}

fn fork_blocked(threads: Threads) -> io::Result<Forked> {
    let mask = crate::signals::block_all()?;
    let forked = match threads {
        // SAFETY: the process has exactly one thread (see `fork`), so no other thread can hold
        // a lock (allocator, stdio, tracing) that the child would inherit in a locked state. The
        // child runs worker code only and ends with `process::exit`, never returning into the
        // master's loop.
        Threads::None => unsafe { nix::unistd::fork() },
        // SAFETY: forkserve's own code runs on the calling thread only (the mold starts none),
        // glibc's fork resets the allocator's locks in the child, and the caller follows the
        // app runtime's own fork protocol around this call (CPython's PyOS_BeforeFork and
        // AfterFork, which reinitialize the interpreter's locks and threads). What is left, a
        // lock that a thread the app started holds in its own code, is the app's, as under any
        // preloading server; the mold logs a warning when the app started threads.
        Threads::OfTheApp => unsafe { nix::unistd::fork() },
    };
    if !matches!(forked, Ok(ForkResult::Child)) {
        crate::signals::restore(&mask)?;
    }
    match forked.map_err(io::Error::from)? {
        ForkResult::Child => Ok(Forked::Child(mask)),
        ForkResult::Parent { child } => Ok(Forked::Parent(child)),
    }
}

/// Makes this process a child subreaper: its orphaned descendants (the workers a mold forks
/// twice, see `master::mold`) are reparented to it rather than to init, so that it reaps them
/// and learns how each ended. Not inherited by forked children; kept across exec.
pub(crate) fn become_subreaper() -> io::Result<()> {
    Ok(nix::sys::prctl::set_child_subreaper(true)?)
}

/// Ends this process at once with `code`, running nothing of its own: no exit handlers, no
/// flushing, no destructors. For a process forked only to fork again (a mold's middle process),
/// whose copies of the parent's buffers and handlers are not its to run.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process; it touches no memory of this process and runs no code.
    unsafe { nix::libc::_exit(code) }
}

/// How many threads this process has, from `/proc/self/task`.
pub(crate) fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Fails unless this process has a single thread, the condition for forking safely.
pub(crate) fn ensure_single_threaded() -> Result<(), String> {
    match thread_count() {
        Ok(1) | Err(_) => Ok(()),
        Ok(n) => Err(format!(
            "the master must start single-threaded but this process has {n} threads; call \
             forkserve before starting threads or an async runtime (workers build their own)"
        )),
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called exit with this code.
    Code(i32),
    /// A signal killed it.
    Signal(Signal),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit code {code}"),
            Exit::Signal(sig) => write!(f, "killed by signal {} ({})", *sig as i32, sig.as_str()),
        }
    }
}

/// Collects one exited child without blocking; `None` when none is waiting.
pub(crate) fn reap_one() -> Option<(Pid, Exit)> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => return Some((pid, Exit::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _core)) => return Some((pid, Exit::Signal(sig))),
            // Stopped/continued children are still alive; keep looking for exited ones.
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Sends `sig` to `pid`. A process that is already gone is not an error: it is being reaped.
pub(crate) fn send(pid: Pid, sig: Signal) {
    if let Err(e) = signal::kill(pid, sig) {
        if e != nix::errno::Errno::ESRCH {
            tracing::warn!(pid = pid.as_raw(), signal = %sig.as_str(), "cannot signal worker: {e}");
        }
    }
}

/// Asks the kernel to send `sig` to this process when its parent dies, then checks that the
/// parent is still `parent` (it could have died before the request). Returns false if it is not.
pub(crate) fn die_with_parent(parent: Pid, sig: Signal) -> io::Result<bool> {
    nix::sys::prctl::set_pdeathsig(sig)?;
    Ok(nix::unistd::getppid() == parent)
}

/// Whether a process is stopped (state `T`: `SIGSTOP`, job control) or traced (`t`).
pub(crate) fn is_stopped(pid: Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name, which is in parentheses and may contain anything.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some("T" | "t"))
}

/// Raises this process's soft limit on open files to its hard limit, as nginx's
/// `worker_rlimit_nofile` and Go's runtime do: every connection is a descriptor, and the
/// common soft default (1024) is below `worker_connections`. Workers inherit it.
pub(crate) fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-files limit"),
            Err(e) => tracing::warn!("cannot raise the open-files limit from {soft}: {e}"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open-files limit: {e}"),
    }
}

/// This process's soft limit on open files (which workers inherit); `None` if unlimited or
/// unknown.
pub(crate) fn open_files_limit() -> Option<u64> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE).ok().map(|(soft, _)| soft).filter(|&s| s != RLIM_INFINITY)
}

/// Descriptors a worker holds besides its connections and listeners: stdio, the runtime's
/// epoll and wakers, its signal pipe, the master's message socket, `/proc/self/statm`, and a
/// margin for files being served and what an app opens.
pub(crate) const WORKER_OWN_FDS: u64 = 32;

/// How many connections a worker can hold open under an open-files limit of `limit`, given the
/// descriptors it keeps for `listeners` listening sockets and `static_roots` static
/// directories (see [`WORKER_OWN_FDS`]).
pub(crate) fn connections_allowed(limit: u64, listeners: usize, static_roots: usize) -> u64 {
    limit.saturating_sub(WORKER_OWN_FDS + listeners as u64 + static_roots as u64)
}

/// Gives the memory that the allocator holds free back to the system, where the C library
/// can: a burst of connections leaves their buffers freed but still resident when they go
/// idle, and glibc returns only the top of its heap by itself.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists; it takes the
    // allocator's locks like any allocation and touches no memory that Rust code owns.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_allowed_leaves_room_for_the_workers_own_descriptors() {
        assert_eq!(connections_allowed(256, 1, 0), 256 - WORKER_OWN_FDS - 1);
        assert_eq!(connections_allowed(1_048_576, 2, 3), 1_048_576 - WORKER_OWN_FDS - 5);
        assert_eq!(connections_allowed(16, 1, 0), 0, "never below zero");
    }
}
