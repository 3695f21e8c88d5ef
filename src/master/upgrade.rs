//! Binary upgrade (`USR2`), both sides: the old master starts a new master from its binary's
//! original path, passing it the listening sockets ([`crate::handoff`]), and hands over once
//! the new one is serving; the new master boots its workers and then tells the old one.
//!
//! The old master renames its pidfile to `PIDFILE.oldbin`, forks, and in the child execs the
//! binary with the original arguments, the sockets and one end of a socket pair. The new master
//! binds nothing it was passed, boots its workers, and once all are ready writes `ready` on the
//! pair: the old master then stops its workers gracefully and exits, leaving the sockets (and
//! their paths) to the new one ([`StopKind::HandOver`](super::phase::StopKind)). If the new
//! master exits, or is not ready within twice `boot_timeout`, the old master stops it, restores
//! its pidfile and serves on. With `upgrade = "manual"` both serve until the operator commits
//! (`WINCH`, then `QUIT` to the old one) or gives up (`QUIT` to the new one).
//!
//! Progress is one value on each side: [`Upgrading`] in the old master, [`Succession`] in the
//! new one. Each moves only through its own methods, pure and unit-tested (`tests`), which say
//! what the master is to do; the master does it (signals, logs, `sd_notify`). A stop of the old
//! master ends its upgrade ([`Upgrading::end`]): a new master that serves is left the sockets,
//! one still booting is stopped.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tracing::{debug, error, info, warn};

use super::phase::{Shutdown, StopKind};
use super::pool::Why;
use super::{Master, deadline};
use crate::app::Factory;
use crate::config::{ServerConfig, UpgradeMode};
use crate::handoff;
use crate::listener::Listeners;
use crate::process::{self, Forked};

/// What the master needs to start its successor: the program as it was started.
#[derive(Debug, Clone)]
pub(super) struct Program {
    /// The binary's path, resolved at start: a new binary installed there is what runs.
    pub(super) exe: PathBuf,
    pub(super) args: Vec<OsString>,
}

impl Program {
    /// This process's program, as it was started.
    pub(super) fn current() -> Option<Program> {
        Some(Program {
            exe: std::env::current_exe().ok()?,
            args: std::env::args_os().skip(1).collect(),
        })
    }
}

/// The new master of an upgrade, as the old master sees it.
#[derive(Debug)]
pub(super) struct Successor {
    pub(super) pid: Pid,
    channel: UnixStream,
}

/// The old master's binary upgrade, from `USR2` on. A stop ends it ([`Upgrading::end`]):
/// from then on [`StopKind::HandOver`] is the one record that a successor serves.
#[derive(Debug)]
pub(super) enum Upgrading {
    /// None under way.
    Idle,
    /// The new master is booting; it is given up if not ready by `deadline`.
    Booting { successor: Successor, deadline: Instant },
    /// A manual upgrade: the new master serves beside this one, which keeps its workers.
    BothServe(Successor),
    /// A manual upgrade after `WINCH`: the new master serves, this one keeps no workers.
    WorkersStopped(Successor),
}

/// What the new master's being ready means to the old one, by [`UpgradeMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Served {
    /// Manual: both serve until the operator says.
    BothServe,
    /// Automatic: the upgrade is complete, and this master hands over to `new_master`.
    HandOver { new_master: Pid },
}

/// How a stop of the old master ends its upgrade.
#[derive(Debug)]
pub(super) enum Ending {
    /// None was under way.
    Nothing,
    /// A manual upgrade is committed: the new master serves on without this one.
    Committed { new_master: Pid },
    /// The new master was still booting: it is stopped.
    Abandoned(Successor),
}

impl Upgrading {
    /// `USR2` started a new master, which is to be ready by `deadline`.
    pub(super) fn start(&mut self, successor: Successor, deadline: Instant) {
        debug_assert!(matches!(self, Upgrading::Idle), "one upgrade at a time");
        *self = Upgrading::Booting { successor, deadline };
    }

    /// The new master, while it boots, and when it must be ready by.
    pub(super) fn booting(&self) -> Option<(&Successor, Instant)> {
        match self {
            Upgrading::Booting { successor, deadline } => Some((successor, *deadline)),
            _ => None,
        }
    }

    /// The new master's pid, if there is one.
    pub(super) fn pid(&self) -> Option<Pid> {
        match self {
            Upgrading::Idle => None,
            Upgrading::Booting { successor: s, .. }
            | Upgrading::BothServe(s)
            | Upgrading::WorkersStopped(s) => Some(s.pid),
        }
    }

    /// Whether a new master serves (a manual upgrade not yet committed): the sockets are
    /// shared with it, and are left to it when this master stops.
    pub(super) fn successor_serves(&self) -> bool {
        matches!(self, Upgrading::BothServe(_) | Upgrading::WorkersStopped(_))
    }

    /// Whether this master's workers were stopped by `WINCH`: none is wanted.
    pub(super) fn workers_stopped(&self) -> bool {
        matches!(self, Upgrading::WorkersStopped(_))
    }

    /// The booting new master said it serves. `None` if none was booting.
    pub(super) fn successor_ready(&mut self, mode: UpgradeMode) -> Option<Served> {
        let Upgrading::Booting { .. } = self else { return None };
        let Upgrading::Booting { successor, .. } = std::mem::replace(self, Upgrading::Idle) else {
            unreachable!("matched above")
        };
        Some(match mode {
            UpgradeMode::Manual => {
                *self = Upgrading::BothServe(successor);
                Served::BothServe
            }
            // Done: what is left of it is the stop that follows, a hand-over.
            UpgradeMode::Auto => Served::HandOver { new_master: successor.pid },
        })
    }

    /// `WINCH`: whether this master's workers stop now, which they do once a manual upgrade
    /// has a new master serving (again, if they were stopped and a reload brought them back).
    pub(super) fn stop_workers(&mut self) -> bool {
        match std::mem::replace(self, Upgrading::Idle) {
            Upgrading::BothServe(s) | Upgrading::WorkersStopped(s) => {
                *self = Upgrading::WorkersStopped(s);
                true
            }
            other => {
                *self = other;
                false
            }
        }
    }

    /// A reload after `WINCH` brings this master's workers back (as in nginx).
    pub(super) fn workers_return(&mut self) {
        *self = match std::mem::replace(self, Upgrading::Idle) {
            Upgrading::WorkersStopped(s) => Upgrading::BothServe(s),
            other => other,
        };
    }

    /// The upgrade is given up (the new master exited, or was not ready in time): the new
    /// master to stop, if there was one.
    pub(super) fn give_up(&mut self) -> Option<Successor> {
        match std::mem::replace(self, Upgrading::Idle) {
            Upgrading::Idle => None,
            Upgrading::Booting { successor: s, .. }
            | Upgrading::BothServe(s)
            | Upgrading::WorkersStopped(s) => Some(s),
        }
    }

    /// This master stops: a new master that serves is left in charge (the stop is a
    /// hand-over, see [`super::phase::Phase::stop_for`]), one still booting is stopped.
    pub(super) fn end(&mut self) -> Ending {
        match std::mem::replace(self, Upgrading::Idle) {
            Upgrading::Idle => Ending::Nothing,
            Upgrading::Booting { successor, .. } => Ending::Abandoned(successor),
            Upgrading::BothServe(s) | Upgrading::WorkersStopped(s) => {
                Ending::Committed { new_master: s.pid }
            }
        }
    }
}

/// Which way the pidfile moves: aside to `PIDFILE.oldbin` as an upgrade starts, back if it
/// fails.
enum Oldbin {
    Aside,
    Back,
}

/// What the new master said.
enum Heard {
    Nothing,
    /// Every worker of the new master is ready.
    Ready,
    /// The new master closed its end: it has exited (or is about to).
    Gone,
}

impl Successor {
    /// Starts the new master. Returns in the old master only; the child execs or exits.
    fn start(program: &Program, listeners: &Listeners) -> io::Result<Successor> {
        let (mut ours, theirs) = UnixStream::pair()?;
        // The session ticket keys, first on the line: in the socket's buffer before the new
        // master runs, so that it reads them without waiting (see `Handover::from_env`).
        if let Some(keys) = crate::tls::tickets::handover() {
            if let Err(e) = ours.write_all(&keys) {
                warn!("upgrade: cannot hand over the session ticket keys: {e}");
            }
        }
        ours.set_nonblocking(true)?;
        let sockets = listeners.passed_fds();
        let old_master = std::process::id();
        match process::fork()? {
            Forked::Parent(pid) => Ok(Successor { pid, channel: ours }),
            Forked::Child(_) => {
                let error = handoff::exec_with_sockets(
                    &program.exe,
                    &program.args,
                    &sockets,
                    theirs.as_fd(),
                    old_master,
                );
                // Logged, not printed as `forkserve: error: …`: this is the master's log, and a
                // program run through `forkserve::Program` has a name of its own.
                tracing::error!(exe = %program.exe.display(), "binary upgrade: cannot start the new master: {error}");
                std::process::exit(127)
            }
        }
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.channel.as_fd()
    }

    /// Reads what the new master said, without blocking.
    fn hear(&mut self) -> Heard {
        let mut buf = [0u8; 16];
        match self.channel.read(&mut buf) {
            Ok(0) => Heard::Gone,
            Ok(n) if buf[..n].starts_with(b"ready") => Heard::Ready,
            Ok(_) => Heard::Nothing,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Heard::Nothing,
            Err(_) => Heard::Gone,
        }
    }
}

/// In a new master started by an upgrade: the channel to the old master, and who it is.
#[derive(Debug)]
pub(super) struct Handover {
    channel: UnixStream,
    pub(super) old_master: Pid,
}

impl Handover {
    /// The channel to the old master, if this process was started by an upgrade. Takes the
    /// old master's session ticket keys from it, if it wrote them: called before any fork.
    pub(super) fn from_env() -> Option<Handover> {
        let (channel, old_master) = handoff::upgrade_channel()?;
        take_ticket_keys(&channel);
        Some(Handover { channel, old_master })
    }

    /// Tells the old master that this one is serving.
    pub(super) fn ready(mut self) {
        if let Err(e) = self.channel.write_all(b"ready") {
            warn!("cannot tell the old master this one is ready: {e}");
        }
    }
}

/// Reads what the old master wrote before it started this one, without waiting: its ticket
/// keys, which this master's workers then share (a ticket the old master's workers issued
/// resumes on the new ones). Nothing there (an old master of an earlier version), or anything
/// else: this master keeps the chain it made, and clients do one full handshake.
fn take_ticket_keys(channel: &UnixStream) {
    let mut buf = zeroize::Zeroizing::new([0u8; crate::tls::tickets::HANDOVER_MAX + 1]);
    let read = channel.set_nonblocking(true).and_then(|()| {
        let n = (&*channel).read(&mut buf[..])?;
        channel.set_nonblocking(false)?;
        Ok(n)
    });
    match read {
        Ok(n) if crate::tls::tickets::adopt(&buf[..n]) => {
            info!("upgrade: session ticket keys taken over from the old master");
        }
        Ok(0) => {}
        Ok(_) => warn!("upgrade: the old master's ticket keys are of another version: not taken"),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            let _ = channel.set_nonblocking(false);
        }
        Err(e) => warn!("upgrade: cannot read the old master's ticket keys: {e}"),
    }
}

/// Whether this master is in charge, or replaces one that may still serve. Until it is in
/// charge, it does not speak for the service (`sd_notify`) and removes no unix socket path it
/// was passed. Who the old master is, and whether it still lives, is `Master::old_master`.
#[derive(Debug)]
pub(super) enum Succession {
    /// Not started by an upgrade, or in charge since.
    InCharge,
    /// Started by a binary upgrade, booting: the old master serves, and is told once this
    /// one does.
    TakingOver(Handover),
    /// Serving beside the old master, which stops when the operator says (manual upgrade).
    BesideOld,
}

/// What a new master does once its first generation serves, by how it was started.
#[derive(Debug)]
pub(super) enum FirstServing {
    /// It was not started by an upgrade (or has taken over already): it only says it serves.
    Alone,
    /// Its old master is gone (killed, crashed before the hand-over): there is no one to hand
    /// over from, in either mode; it takes charge.
    OldGone(Pid),
    /// It tells its old master, which stops (automatic: this one takes charge) or serves on
    /// beside it until the operator says (manual: [`Succession::BesideOld`]).
    TellOld(Handover, UpgradeMode),
}

impl Succession {
    /// The first generation serves; `old_alive` says whether the old master still runs.
    pub(super) fn serving(
        &mut self,
        old_alive: impl FnOnce(Pid) -> bool,
        mode: UpgradeMode,
    ) -> FirstServing {
        match std::mem::replace(self, Succession::InCharge) {
            Succession::TakingOver(handover) if !old_alive(handover.old_master) => {
                FirstServing::OldGone(handover.old_master)
            }
            Succession::TakingOver(handover) => {
                if mode == UpgradeMode::Manual {
                    *self = Succession::BesideOld;
                }
                FirstServing::TellOld(handover, mode)
            }
            other => {
                *self = other;
                FirstServing::Alone
            }
        }
    }

    /// The old master is gone: whether this master takes charge now (it served beside it).
    pub(super) fn old_gone(&mut self) -> bool {
        let beside = matches!(self, Succession::BesideOld);
        if beside {
            *self = Succession::InCharge;
        }
        beside
    }
}

impl<F: Factory> Master<'_, F> {
    /// Starts a new master from this program's binary (`USR2`); it takes over once it serves.
    pub(super) fn upgrade_binary(&mut self) {
        if self.upgrading.pid().is_some() {
            return warn!("usr2 ignored: an upgrade is already under way");
        }
        if matches!(self.succession, Succession::TakingOver(_)) {
            return warn!("usr2 ignored: this master is itself still taking over from another");
        }
        let Some(program) = self.program.clone() else {
            return error!("upgrade failed: the path of this program's binary is unknown");
        };
        let boot = ServerConfig::limit(self.current.config.server.boot_timeout);
        // The new master also loads its config and binds what is new before its workers boot.
        let deadline = deadline(boot.map_or(Duration::from_secs(86_400 * 365), |b| b * 2));
        self.move_pidfile_aside(Oldbin::Aside);
        match Successor::start(&program, &self.listeners) {
            Ok(successor) => {
                info!(
                    pid = successor.pid.as_raw(),
                    binary = %program.exe.display(),
                    "upgrade: started a new master"
                );
                self.upgrading.start(successor, deadline);
            }
            Err(e) => {
                error!("upgrade failed: cannot start a new master: {e}");
                self.move_pidfile_aside(Oldbin::Back);
            }
        }
    }

    /// Acts on what the new master of an upgrade said, or on its not being ready in time.
    pub(super) fn check_upgrade(&mut self) {
        // After a manual upgrade, the new master's exit is seen when it is reaped.
        let Upgrading::Booting { successor, deadline } = &mut self.upgrading else { return };
        let deadline = *deadline;
        match successor.hear() {
            Heard::Ready => {
                match self.upgrading.successor_ready(self.current.config.server.upgrade) {
                    Some(Served::BothServe) => {
                        // Scrapes go to the new master's workers only: with both answering,
                        // every counter would swing between the two masters' counts, which
                        // Prometheus reads as a reset at each swing.
                        self.scoreboard.set_successor_serves(true);
                        let old = self.pid.as_raw();
                        let new = self.upgrading.pid().map_or(0, Pid::as_raw);
                        info!(
                            new_master = new,
                            "upgrade: the new master serves beside this one; to commit, kill -WINCH \
                         {old} (stops this master's workers), then kill -QUIT {old}; to give up, \
                         kill -QUIT {new}"
                        );
                    }
                    Some(Served::HandOver { new_master }) => {
                        info!(
                            new_master = new_master.as_raw(),
                            "upgrade complete: the new master serves; stopping this one"
                        );
                        self.stop_as(StopKind::HandOver(Shutdown::Graceful));
                    }
                    None => {}
                }
            }
            Heard::Gone => self.upgrade_failed("the new master closed its channel (it exited)"),
            Heard::Nothing if Instant::now() >= deadline => {
                self.upgrade_failed("the new master was not ready in time (twice boot_timeout)");
            }
            Heard::Nothing => {}
        }
    }

    /// Gives up an upgrade: stops the new master if it still runs, and serves on, speaking for
    /// the service again. (A stop ends an upgrade its own way, see [`Upgrading::end`].)
    pub(super) fn upgrade_failed(&mut self, why: &str) {
        let Some(successor) = self.upgrading.give_up() else { return };
        // This master serves again, with its workers, and speaks for the service.
        self.scoreboard.set_successor_serves(false);
        self.notify_ready();
        self.stop_successor(successor, why);
    }

    /// Stops the new master of a failed upgrade, and takes the pidfile back.
    pub(super) fn stop_successor(&mut self, successor: Successor, why: &str) {
        // Fast stop: it and its workers exit at once; it is reaped as any child.
        process::send(successor.pid, Signal::SIGQUIT);
        error!(new_master = successor.pid.as_raw(), "upgrade failed, this master serves on: {why}");
        self.move_pidfile_aside(Oldbin::Back);
    }

    /// Moves the pidfile aside to `PIDFILE.oldbin` for an upgrade, or back.
    fn move_pidfile_aside(&mut self, way: Oldbin) {
        let Some(pidfile) = &mut self.pidfile else { return };
        let moved = match way {
            Oldbin::Aside => pidfile.move_aside(),
            Oldbin::Back => pidfile.move_back(),
        };
        if let Err(e) = moved {
            error!(path = %pidfile.path().display(), "cannot rename the pidfile: {e}");
        }
    }

    /// `WINCH`: stops this master's workers, once a manual upgrade has a new master serving.
    /// Otherwise ignored: terminals send it to their foreground job on every resize.
    pub(super) fn stop_workers(&mut self) {
        if !self.upgrading.stop_workers() {
            return debug!("winch ignored: it stops the workers only after a manual upgrade");
        }
        info!("winch: stopping this master's workers; the new master serves");
        self.phase.end_reload();
        let ids: Vec<u64> =
            self.pool.workers.iter().filter(|w| w.is_active()).map(|w| w.id).collect();
        for id in ids {
            self.retire_worker(id, Why::Winch);
        }
    }

    /// Takes charge after a binary upgrade: the old master is stopping (or gone), and the
    /// sockets it bound are this master's.
    pub(super) fn take_charge(&mut self) {
        self.succession = Succession::InCharge;
        self.listeners.take_over();
    }

    /// Notices that the master this one replaces is gone (after a manual upgrade, the operator
    /// stopped it): this one is in charge. Whenever it goes, removes the `PIDFILE.oldbin` it
    /// left if it was killed.
    pub(super) fn check_predecessor(&mut self) {
        let Some(old) = self.old_master.filter(|&old| nix::unistd::getppid() != old) else {
            return;
        };
        self.old_master = None;
        self.remove_stale_oldbin(old);
        if self.succession.old_gone() {
            info!(old_master = old.as_raw(), "the old master is gone: this master is in charge");
            self.take_charge();
            self.notify_ready();
        }
    }

    /// Removes `PIDFILE.oldbin` once the old master is gone, if no master holds it: one that
    /// exits removes its own; one that was killed leaves it, naming a dead process.
    fn remove_stale_oldbin(&self, old: Pid) {
        let Some(pidfile) = &self.pidfile else { return };
        let oldbin = crate::pidfile::oldbin(pidfile.path());
        match crate::pidfile::remove_stale(&oldbin) {
            Ok(true) => info!(
                old_master = old.as_raw(),
                path = %oldbin.display(),
                "removed the pidfile the old master left behind"
            ),
            Ok(false) => {}
            Err(e) => {
                warn!(path = %oldbin.display(), "cannot remove the old master's pidfile: {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests;
