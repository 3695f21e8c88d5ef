//! Binary upgrade (`USR2`): the master starts a new master from its binary's original path,
//! passing it the listening sockets, and hands over once the new one is serving.
//!
//! The old master renames its pidfile to `PIDFILE.oldbin`, forks, and in the child places the
//! sockets at descriptors 3, 4, … (the systemd convention: `LISTEN_FDS`, `LISTEN_PID`; each
//! socket's `bind` address in [`BINDS_VAR`]) plus one end of a socket pair, named by
//! [`FD_VAR`], then execs the binary with the original arguments. The new master binds nothing
//! it was passed, boots its workers, and once all are ready writes `ready` on the pair: the old
//! master then stops its workers gracefully and exits, leaving the sockets (and their paths)
//! to the new one. If the new master exits, or is not ready within `boot_timeout`, the old
//! master stops it, restores its pidfile and serves on. The old master's pid is passed too
//! ([`OLD_MASTER_VAR`]): if it is killed before the new one has started, the new one's parent
//! is already another process, and the new one must still know whom it replaces.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use nix::unistd::Pid;

use crate::listener::Listeners;
use crate::process::{self, FIRST_PASSED_FD, Forked};

/// The environment variable naming the descriptor on which a new master says it is ready.
pub(crate) const FD_VAR: &str = "FORKSERVE_UPGRADE_FD";
/// The environment variable holding the old master's pid: the new master's parent, until the
/// old master dies, which may be before the new one has looked (killed right after `USR2`).
pub(crate) const OLD_MASTER_VAR: &str = "FORKSERVE_OLD_MASTER";
/// The environment variable describing each passed socket, one per line: `OWNER:BIND`, where
/// the owner (`own`, `manager`, `pinned`) says whose its unix path is and whether it is served
/// though no `bind` names it.
pub(crate) const BINDS_VAR: &str = "FORKSERVE_LISTEN_BINDS";

/// What the master needs to start its successor: the program as it was started.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    /// The binary's path, resolved at start: a new binary installed there is what runs.
    pub(crate) exe: PathBuf,
    pub(crate) args: Vec<OsString>,
}

impl Program {
    /// This process's program, as it was started.
    pub(crate) fn current() -> Option<Program> {
        Some(Program {
            exe: std::env::current_exe().ok()?,
            args: std::env::args_os().skip(1).collect(),
        })
    }
}

/// An upgrade under way, in the old master.
pub(crate) struct Upgrade {
    /// The new master.
    pub(crate) pid: Pid,
    channel: UnixStream,
    /// When the new master must be ready by.
    pub(crate) deadline: Instant,
    /// The new master has said it serves (a manual upgrade keeps both masters serving).
    pub(crate) ready: bool,
}

/// What the new master said.
pub(crate) enum Heard {
    Nothing,
    /// Every worker of the new master is ready.
    Ready,
    /// The new master closed its end: it has exited (or is about to).
    Gone,
}

impl Upgrade {
    /// Starts the new master. Returns in the old master only; the child execs or exits.
    pub(crate) fn start(
        program: &Program,
        listeners: &Listeners,
        deadline: Instant,
    ) -> io::Result<Upgrade> {
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let named = listeners.passed_fds();
        let old_master = std::process::id();
        match process::fork()? {
            Forked::Parent(pid) => Ok(Upgrade { pid, channel: ours, deadline, ready: false }),
            Forked::Child(_) => {
                let mut fds: Vec<BorrowedFd<'_>> = named.iter().map(|(_, fd)| *fd).collect();
                fds.push(theirs.as_fd());
                // exec resets the master's handlers to their defaults and keeps the signal
                // mask, which the fork set to block everything: a signal sent to the new master
                // before it installs its handlers waits for them instead of killing it.
                let error = match process::pass_fds(&fds) {
                    Ok(()) => {
                        let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
                        // systemd's names may not contain ':', which addresses do.
                        let fd_names: Vec<String> =
                            names.iter().map(|n| n.replace(':', "_")).collect();
                        let fd_names = fd_names.join(":");
                        Command::new(&program.exe)
                            .args(&program.args)
                            .env("LISTEN_FDS", named.len().to_string())
                            .env("LISTEN_PID", std::process::id().to_string())
                            .env("LISTEN_FDNAMES", fd_names)
                            .env(BINDS_VAR, names.join("\n"))
                            .env(FD_VAR, (FIRST_PASSED_FD + named.len() as i32).to_string())
                            .env(OLD_MASTER_VAR, old_master.to_string())
                            .exec()
                    }
                    Err(e) => e,
                };
                eprintln!("forkserve: error: cannot start {}: {error}", program.exe.display());
                std::process::exit(127)
            }
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.channel.as_fd()
    }

    /// Reads what the new master said, without blocking.
    pub(crate) fn hear(&mut self) -> Heard {
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
pub(crate) struct Handover {
    channel: UnixStream,
    /// The old master's pid ([`OLD_MASTER_VAR`], or the parent's for an old master that does
    /// not set it).
    pub(crate) old_master: Pid,
}

impl Handover {
    /// The channel [`FD_VAR`] names, if this process was started by an upgrade.
    pub(crate) fn from_env() -> Option<Handover> {
        let raw: i32 = std::env::var(FD_VAR).ok()?.parse().ok()?;
        let old_master = std::env::var(OLD_MASTER_VAR).ok().and_then(|p| p.parse().ok());
        let old_master = old_master.map_or_else(nix::unistd::getppid, Pid::from_raw);
        match process::take_passed_fd(raw) {
            Ok(fd) => Some(Handover { channel: UnixStream::from(fd), old_master }),
            Err(e) => {
                tracing::warn!("{FD_VAR}={raw}: {e}");
                None
            }
        }
    }

    /// Tells the old master that this one is serving.
    pub(crate) fn ready(mut self) {
        if let Err(e) = self.channel.write_all(b"ready") {
            tracing::warn!("cannot tell the old master this one is ready: {e}");
        }
    }
}
