//! Which signal means what, for the master and for a worker.
//!
//! The master's handlers only record: each signal bumps a counter and writes a byte to a
//! self-pipe that wakes the main loop, which then acts ([`SignalQueue::take`]). Counting rather
//! than flagging keeps two `TTIN`s that each reached the handler from becoming one; but the
//! kernel does not queue standard signals, and merges one sent while the same one is pending,
//! so a quick burst still counts as fewer (documented in the crate docs and the README).
//!
//! `TTIN` and `TTOU` are also the kernel's job-control signals (a background process that reads
//! or, with `stty tostop`, writes its terminal). Only those *sent* (with kill) count as "one
//! more/fewer worker"; the kernel's keep their default action, stopping the process, instead of
//! becoming a command or a busy loop of restarted writes.
//!
//! A worker inherits the master's handlers across `fork`. [`SignalQueue::forget_in_worker`]
//! removes the master's actions (so nothing a worker receives wakes the master) and closes the
//! self-pipe. Then, in a worker: `TERM` drains (via tokio, in [`crate::worker`]); `INT` and
//! `QUIT` end it at once, even if its thread is busy; `TTIN`/`TTOU` sent with kill are ignored
//! (they mean "one more/fewer worker" to the master; sent to the process group, they must not
//! stop every worker), the kernel's keep their job-control action; `USR1` reopens the log file
//! from its handler ([`crate::logging::reopen_from_handler`]), as it must even while the
//! worker's thread is busy in the app; `HUP` and `USR2` are ignored, as in nginx's workers, so
//! that a signal sent to the whole process group does what it does to the master. The registry's handler
//! stays installed, so a library app may still register its own handlers for those. A worker
//! whose master died lets go of its listening sockets and arms an alarm from its `TERM` handler
//! itself ([`bound_orphan_life`]), as its event loop may be blocked.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use signal_hook::SigId;

/// A signal the master acts on, in the order the loop handles them when several are pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MasterSignal {
    /// A child exited: reap it.
    Chld,
    /// Fast stop.
    Int,
    /// Fast stop.
    Quit,
    /// Graceful stop.
    Term,
    /// Reload.
    Hup,
    /// One more worker.
    Ttin,
    /// One fewer worker.
    Ttou,
    /// Reopen logs.
    Usr1,
    /// Binary upgrade.
    Usr2,
    /// Stop the workers (after a manual upgrade).
    Winch,
}

const HANDLED: [(Signal, MasterSignal); 10] = [
    (Signal::SIGCHLD, MasterSignal::Chld),
    (Signal::SIGINT, MasterSignal::Int),
    (Signal::SIGQUIT, MasterSignal::Quit),
    (Signal::SIGTERM, MasterSignal::Term),
    (Signal::SIGHUP, MasterSignal::Hup),
    (Signal::SIGTTIN, MasterSignal::Ttin),
    (Signal::SIGTTOU, MasterSignal::Ttou),
    (Signal::SIGUSR1, MasterSignal::Usr1),
    (Signal::SIGUSR2, MasterSignal::Usr2),
    (Signal::SIGWINCH, MasterSignal::Winch),
];

/// How many of each signal have arrived. Written by signal handlers, read by the loop.
static RECEIVED: [AtomicUsize; HANDLED.len()] = [const { AtomicUsize::new(0) }; HANDLED.len()];

/// The master's record of signals received and not yet acted on.
pub(crate) struct SignalQueue {
    /// The handler actions, removed again in a worker.
    ids: Vec<SigId>,
    /// Read end of the self-pipe the handlers write to; polled by the master's loop.
    wake: UnixStream,
    /// How many of each signal the loop has already taken.
    taken: [usize; HANDLED.len()],
}

impl SignalQueue {
    /// Installs the master's handlers.
    pub(crate) fn install() -> io::Result<SignalQueue> {
        let (wake, wake_write) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        let mut ids = Vec::with_capacity(HANDLED.len() * 2);
        let mut taken = [0; HANDLED.len()];
        for (i, (sig, _)) in HANDLED.iter().enumerate() {
            taken[i] = RECEIVED[i].load(Ordering::SeqCst);
            // The count first, then the wake-up: actions run in registration order, so the
            // loop always sees the count of the signal that woke it.
            ids.push(match sig {
                Signal::SIGTTIN | Signal::SIGTTOU => {
                    register_sent_counter(*sig as i32, Some(&RECEIVED[i]))?
                }
                _ => register_counter(*sig as i32, &RECEIVED[i])?,
            });
            ids.push(signal_hook::low_level::pipe::register(*sig as i32, wake_write.try_clone()?)?);
        }
        // A parent may have started us with signals blocked (the mask survives exec; an
        // upgrading master execs us with all blocked): the master, and through it every worker,
        // starts with none blocked, so that ours are handled and SIGABRT and the like work.
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
        Ok(SignalQueue { ids, wake, taken })
    }

    /// The descriptor that becomes readable when a signal arrives.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Takes the signals received since the last call, in handling order, each as often as it
    /// arrived (at most 16 times, to bound the work one burst can queue).
    pub(crate) fn take(&mut self) -> Vec<MasterSignal> {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        let mut out = Vec::new();
        for (i, (_, which)) in HANDLED.iter().enumerate() {
            let now = RECEIVED[i].load(Ordering::SeqCst);
            let new = now.wrapping_sub(self.taken[i]).min(16);
            self.taken[i] = now;
            out.extend(std::iter::repeat_n(*which, new));
        }
        out
    }

    /// In a freshly forked worker, whose signals are still blocked (see [`block_all`]): drops
    /// the master's handler actions and self-pipe and installs the worker's (see the module
    /// docs), except `TERM`, which the worker's runtime takes.
    pub(crate) fn forget_in_worker(self) -> io::Result<()> {
        for id in self.ids {
            signal_hook::low_level::unregister(id);
        }
        drop(self.wake);
        let always = Arc::new(AtomicBool::new(true));
        for sig in [Signal::SIGINT, Signal::SIGQUIT] {
            signal_hook::flag::register_conditional_shutdown(sig as i32, 0, Arc::clone(&always))?;
        }
        for sig in [Signal::SIGTTIN, Signal::SIGTTOU] {
            // Sent ones are for the master; a `kill -TTIN %1` reaches the whole job.
            register_sent_counter(sig as i32, None)?;
        }
        // SAFETY: `reopen_from_handler` makes only async-signal-safe system calls (open, dup2,
        // close, write) and reads an atomic: it neither allocates nor takes a lock.
        unsafe {
            signal_hook::low_level::register(
                Signal::SIGUSR1 as i32,
                crate::logging::reopen_from_handler,
            )?;
        }
        Ok(())
    }
}

/// Set once a worker has armed its alarm for outliving its master ([`bound_orphan_life`]).
static ORPHAN_ALARM: AtomicBool = AtomicBool::new(false);
/// The listening descriptors a worker serves, each -1 once the worker closes it; and a
/// descriptor of `/dev/null` to put in their place when the worker is orphaned.
static LISTENING: OnceLock<Box<[AtomicI32]>> = OnceLock::new();
static DEV_NULL: AtomicI32 = AtomicI32::new(-1);
/// Set once an orphaned worker has let go of its listening sockets.
static RELEASED: AtomicBool = AtomicBool::new(false);

/// In a worker: bounds how long it may outlive its master, and what it holds meanwhile. The
/// master's death reaches the worker as `TERM` (its parent-death signal), which drains it on
/// its event loop; but a loop blocked in a handler never gets to drain, and no master is left
/// to kill it. So the first `TERM` that finds the worker's parent is no longer `master`:
///
/// - lets go of the worker's references to the listening sockets (`listening`) at once, so
///   that a new server can bind the same addresses while the orphan finishes its requests. It
///   puts `/dev/null` in their place rather than closing them, so that the numbers stay taken
///   (tokio still holds them, and a number freed here could be reused and then closed by
///   tokio). The sockets are not shut down: other processes may share them (a new master
///   during an upgrade), and only this process's references go;
/// - arms `alarm(limit)`, whose default action ends the process whatever its thread is doing.
///   A worker that drains in time exits before it rings. (An app that handles `SIGALRM`
///   itself gives up this bound.)
pub(crate) fn bound_orphan_life(
    master: nix::unistd::Pid,
    limit: Duration,
    listening: &[RawFd],
) -> io::Result<()> {
    let secs = limit.as_secs_f64().ceil().clamp(1.0, f64::from(u32::MAX)) as u32;
    let master = master.as_raw();
    // Opened before the handler can run: it opens nothing. Kept for the worker's life.
    let null = std::fs::File::open("/dev/null");
    if let Ok(null) = &null {
        DEV_NULL.store(null.as_raw_fd(), Ordering::SeqCst);
        let _ = LISTENING.set(listening.iter().map(|&fd| AtomicI32::new(fd)).collect());
    }
    // SAFETY: the action calls getppid, dup3 and alarm, all async-signal-safe system calls,
    // and reads and swaps atomics in statics (`LISTENING` is set before the action is
    // registered, and `OnceLock::get` is then an atomic load): it neither allocates nor takes
    // a lock. dup3 only replaces descriptor numbers this worker recorded as its listeners and
    // has not closed (see `listener_closing`), so it cannot clobber a descriptor that reused
    // one of those numbers. The kernel reparents the worker before it sends the parent-death
    // signal, so getppid already tells.
    unsafe {
        signal_hook::low_level::register(Signal::SIGTERM as i32, move || {
            if nix::libc::getppid() != master && !ORPHAN_ALARM.swap(true, Ordering::SeqCst) {
                let null = DEV_NULL.load(Ordering::SeqCst);
                if let (Some(fds), true) = (LISTENING.get(), null >= 0) {
                    for fd in fds.iter() {
                        let fd = fd.swap(-1, Ordering::SeqCst);
                        if fd >= 0 {
                            nix::libc::dup3(null, fd, nix::libc::O_CLOEXEC);
                        }
                    }
                    RELEASED.store(true, Ordering::SeqCst);
                }
                nix::libc::alarm(secs);
            }
        })?;
    }
    match null {
        Ok(null) => {
            std::mem::forget(null);
            Ok(())
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("/dev/null: {e}: an orphan keeps the listening sockets until it exits"),
        )),
    }
}

/// In a worker, before it closes a listening socket (its accept loop is over): the orphan's
/// handler ([`bound_orphan_life`]) must no longer touch that number, which may be reused.
pub(crate) fn listener_closing(fd: RawFd) {
    for entry in LISTENING.get().into_iter().flatten() {
        let _ = entry.compare_exchange(fd, -1, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// Whether this worker, orphaned, has let go of its listening sockets: accepting on them now
/// fails, and is not an error to report.
pub(crate) fn listeners_released() -> bool {
    RELEASED.load(Ordering::SeqCst)
}

/// Blocks every signal and returns the mask to restore. The master forks with all signals
/// blocked: a signal meant for the master is then never handled in a child that has not yet
/// dropped the master's actions, and a `TERM` sent to a new worker waits until the worker can
/// act on it (it then restores the master's mask with [`restore`]).
pub(crate) fn block_all() -> io::Result<SigSet> {
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), Some(&mut old))?;
    Ok(old)
}

/// Restores a mask saved by [`block_all`].
pub(crate) fn restore(mask: &SigSet) -> io::Result<()> {
    Ok(sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None)?)
}

/// Registers an action that counts deliveries of `signal` sent by a process (kill, sigqueue),
/// or ignores them without a counter; one the kernel raises (terminal job control) gets the
/// default action, which stops us.
fn register_sent_counter(signal: i32, counter: Option<&'static AtomicUsize>) -> io::Result<SigId> {
    // SAFETY: the action reads the siginfo it is given, does an atomic increment of a static,
    // or emulates the default action (raise(SIGSTOP)); all async-signal-safe, no allocation or
    // lock.
    unsafe {
        signal_hook_registry::register_sigaction(signal, move |info| {
            // SI_USER (0), SI_QUEUE (-1), SI_TKILL (-6): sent by a process. SI_KERNEL (> 0): not.
            if info.si_code <= 0 {
                if let Some(counter) = counter {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            } else {
                let _ = signal_hook::low_level::emulate_default_handler(signal);
            }
        })
    }
}

/// Registers an action that counts deliveries of `signal`.
fn register_counter(signal: i32, counter: &'static AtomicUsize) -> io::Result<SigId> {
    // SAFETY: the action is an atomic increment of a static, which is async-signal-safe: it
    // neither allocates nor takes a lock.
    unsafe {
        signal_hook::low_level::register(signal, move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
    }
}

/// The actions of every standard signal at one moment, to undo what code that is not ours
/// changes: an embedded Python app that sets a handler for `TERM` while it is imported would
/// otherwise take the worker's drain away from forkserve.
#[cfg_attr(not(feature = "python"), allow(dead_code))]
pub(crate) struct Dispositions(Vec<(i32, nix::libc::sigaction)>);

#[cfg_attr(not(feature = "python"), allow(dead_code))]
impl Dispositions {
    /// The signals whose actions are kept: every one a process may catch, but those a
    /// crash reporter may rightly take (`SEGV`, `BUS`, `ILL`, `FPE`, `ABRT`: Python's
    /// `faulthandler` prints the stacks of a crashing or hung worker from them).
    const KEPT: [i32; 12] = [
        nix::libc::SIGHUP,
        nix::libc::SIGINT,
        nix::libc::SIGQUIT,
        nix::libc::SIGTERM,
        nix::libc::SIGUSR1,
        nix::libc::SIGUSR2,
        nix::libc::SIGPIPE,
        nix::libc::SIGALRM,
        nix::libc::SIGCHLD,
        nix::libc::SIGTTIN,
        nix::libc::SIGTTOU,
        nix::libc::SIGWINCH,
    ];

    /// The current actions.
    pub(crate) fn snapshot() -> Dispositions {
        let mut kept = Vec::with_capacity(Self::KEPT.len());
        for signal in Self::KEPT {
            // SAFETY: a null new action only reads the current one into `old`, which is a
            // plain C struct for which all zeroes is a valid value.
            unsafe {
                let mut old: nix::libc::sigaction = std::mem::zeroed();
                if nix::libc::sigaction(signal, std::ptr::null(), &mut old) == 0 {
                    kept.push((signal, old));
                }
            }
        }
        Dispositions(kept)
    }

    /// Puts back every action that changed since the snapshot, and warns about each, naming
    /// `during` (what ran meanwhile).
    pub(crate) fn restore_changed(&self, during: &str) {
        for (signal, old) in &self.0 {
            // SAFETY: as in `snapshot`; then `old` is an action this process had installed,
            // which is installed again unchanged.
            unsafe {
                let mut now: nix::libc::sigaction = std::mem::zeroed();
                if nix::libc::sigaction(*signal, std::ptr::null(), &mut now) != 0 {
                    continue;
                }
                if now.sa_sigaction == old.sa_sigaction {
                    continue;
                }
                nix::libc::sigaction(*signal, old, std::ptr::null_mut());
            }
            let name = Signal::try_from(*signal).map(Signal::as_str).unwrap_or("?");
            tracing::warn!(
                "a handler for {name} was set while {during}: removed, as forkserve handles \
                 that signal"
            );
        }
    }
}
