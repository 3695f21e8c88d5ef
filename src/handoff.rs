//! Descriptors passed across exec: the listening sockets a process is handed when it starts
//! (systemd socket activation, or a binary upgrade) and the ones a master hands the new master it
//! starts on `USR2`, with the environment that describes them.
//!
//! The convention is systemd's: the sockets sit at descriptors 3, 4, … ([`FIRST_PASSED_FD`]),
//! `LISTEN_FDS` says how many, `LISTEN_PID` for which process, `LISTEN_FDNAMES` names them. An
//! upgrading master adds [`BINDS_VAR`] (each socket's `bind` address and who owns its unix
//! path), [`UPGRADE_FD_VAR`] (one more descriptor: the channel on which the new master says it
//! is ready) and [`OLD_MASTER_VAR`] (whom the new master replaces). What the sockets then are
//! to the new master is [`crate::listener`]'s business; what the channel carries is the
//! master's (`master::upgrade`).
//!
//! Taking a passed descriptor is one of the few places forkserve uses `unsafe`.

use std::ffi::OsString;
use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::unistd::Pid;

use crate::error::Error;

/// The environment variable naming the descriptor on which a new master says it is ready.
pub(crate) const UPGRADE_FD_VAR: &str = "FORKSERVE_UPGRADE_FD";
/// The environment variable holding the old master's pid: the new master's parent, until the
/// old master dies, which may be before the new one has looked (killed right after `USR2`).
pub(crate) const OLD_MASTER_VAR: &str = "FORKSERVE_OLD_MASTER";
/// The environment variable describing each passed socket, one per line: `OWNER:BIND`, where
/// the owner (`own`, `manager`, `pinned`, see [`Owner`]) says whose its unix path is and whether
/// it is served though no `bind` names it; `BIND` is `metrics=ADDR` for the metrics endpoint's
/// socket (see `listener::Addr`).
pub(crate) const BINDS_VAR: &str = "FORKSERVE_LISTEN_BINDS";
/// systemd's socket-activation variables: how many sockets, for which process, their names.
const LISTEN_FDS: &str = "LISTEN_FDS";
const LISTEN_PID: &str = "LISTEN_PID";
const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";

/// The first descriptor of those a process is handed at exec (`SD_LISTEN_FDS_START`).
pub(crate) const FIRST_PASSED_FD: RawFd = 3;

/// Who a passed socket belongs to, which decides whether its unix path may be removed and
/// whether it is served when no `bind` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Bound by a forkserve master: the path is removed by the master that stops serving it
    /// last.
    Master,
    /// The service manager's, and named by a `bind`: its path is never removed.
    Manager,
    /// The service manager's, and named by no `bind`: served for the master's life.
    ManagerPinned,
}

impl Owner {
    fn as_str(self) -> &'static str {
        match self {
            Owner::Master => "own",
            Owner::Manager => "manager",
            Owner::ManagerPinned => "pinned",
        }
    }

    fn parse(s: &str) -> Owner {
        match s {
            "manager" => Owner::Manager,
            "pinned" => Owner::ManagerPinned,
            _ => Owner::Master,
        }
    }
}

/// One descriptor this process was handed at exec: the `bind` address an upgrading master
/// served it for (empty from the service manager), and who owns it.
#[derive(Debug)]
pub(crate) struct PassedFd {
    pub(crate) name: String,
    pub(crate) owner: Owner,
    pub(crate) fd: OwnedFd,
}

/// The sockets this process was handed when it was executed: by systemd socket activation
/// (`LISTEN_FDS`, for this process by `LISTEN_PID`), or by the master it upgrades, which says
/// for each its `bind` address and owner. [`crate::listener::Listeners::open`] makes listeners
/// of them.
#[derive(Debug, Default)]
pub(crate) struct Inherited {
    pub(crate) sockets: Vec<PassedFd>,
    /// Handed over by an upgrading master rather than the service manager.
    pub(crate) upgrade: bool,
}

/// The error for a passed descriptor that cannot be used.
pub(crate) fn passed_fd_error(message: String) -> Error {
    Error::Bind { addr: LISTEN_FDS.into(), source: io::Error::other(message) }
}

impl Inherited {
    /// Takes the descriptors the environment says were passed to this process.
    pub(crate) fn from_env() -> Result<Inherited, Error> {
        let upgrade = std::env::var_os(UPGRADE_FD_VAR).is_some();
        let Some(count) = std::env::var_os(LISTEN_FDS) else { return Ok(Inherited::default()) };
        let pid = std::env::var(LISTEN_PID).ok().and_then(|p| p.parse::<u32>().ok());
        if pid != Some(std::process::id()) {
            // Meant for another process (a parent that did not clear them).
            return Ok(Inherited::default());
        }
        let count: i32 = count
            .to_str()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| passed_fd_error(format!("not a number: {count:?}")))?;
        // An upgrading master describes each socket as `OWNER:BIND`, one per line. Sockets
        // from the service manager are matched by address (their names, LISTEN_FDNAMES, are
        // the unit's and only informative).
        let described: Vec<(String, Owner)> = match std::env::var(BINDS_VAR) {
            Ok(lines) if upgrade => lines
                .split('\n')
                .map(|line| {
                    let (owner, bind) = line.split_once(':').unwrap_or(("own", line));
                    (bind.to_string(), Owner::parse(owner))
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut described = described.into_iter();
        let mut sockets = Vec::new();
        for i in 0..count {
            let fd =
                take_passed_fd(FIRST_PASSED_FD + i).map_err(|e| passed_fd_error(e.to_string()))?;
            let (name, owner) = described.next().unwrap_or((String::new(), Owner::Manager));
            sockets.push(PassedFd { name, owner, fd });
        }
        Ok(Inherited { sockets, upgrade })
    }
}

/// A listening socket to hand to a new master: its `bind` address and owner, as
/// [`Inherited::from_env`] reads them back.
pub(crate) struct Outgoing<'a> {
    pub(crate) owner: Owner,
    pub(crate) bind: String,
    pub(crate) fd: BorrowedFd<'a>,
}

/// In the child of a fork: execs `exe` with `args`, handing it `sockets` and then `channel`
/// at descriptors 3, 4, …, described in its environment. Returns only if that fails.
///
/// exec resets the master's handlers to their defaults and keeps the signal mask, which the
/// fork set to block everything: a signal sent to the new master before it installs its
/// handlers waits for them instead of killing it.
pub(crate) fn exec_with_sockets(
    exe: &Path,
    args: &[OsString],
    sockets: &[Outgoing<'_>],
    channel: BorrowedFd<'_>,
    old_master: u32,
) -> io::Error {
    let mut fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|s| s.fd).collect();
    fds.push(channel);
    if let Err(e) = pass_fds(&fds) {
        return e;
    }
    let names: Vec<String> =
        sockets.iter().map(|s| format!("{}:{}", s.owner.as_str(), s.bind)).collect();
    // systemd's names may not contain ':', which addresses do.
    let fd_names: Vec<String> = names.iter().map(|n| n.replace(':', "_")).collect();
    Command::new(exe)
        .args(args)
        .env(LISTEN_FDS, sockets.len().to_string())
        .env(LISTEN_PID, std::process::id().to_string())
        .env(LISTEN_FDNAMES, fd_names.join(":"))
        .env(BINDS_VAR, names.join("\n"))
        .env(UPGRADE_FD_VAR, (FIRST_PASSED_FD + sockets.len() as RawFd).to_string())
        .env(OLD_MASTER_VAR, old_master.to_string())
        .exec()
}

/// In a new master started by an upgrade: the channel [`UPGRADE_FD_VAR`] names, and the old
/// master's pid ([`OLD_MASTER_VAR`], or the parent's for an old master that does not set it).
pub(crate) fn upgrade_channel() -> Option<(UnixStream, Pid)> {
    let raw: RawFd = std::env::var(UPGRADE_FD_VAR).ok()?.parse().ok()?;
    let old_master = std::env::var(OLD_MASTER_VAR).ok().and_then(|p| p.parse().ok());
    let old_master = old_master.map_or_else(nix::unistd::getppid, Pid::from_raw);
    match take_passed_fd(raw) {
        Ok(fd) => Some((UnixStream::from(fd), old_master)),
        Err(e) => {
            tracing::warn!("{UPGRADE_FD_VAR}={raw}: {e}");
            None
        }
    }
}

/// In the child of a fork, before exec: puts `fds` at descriptors 3, 4, … in order, open across
/// exec; every other descriptor forkserve opens is close-on-exec.
fn pass_fds(fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    // Copies above the target range first, so that placing one never overwrites another.
    let above = FIRST_PASSED_FD + fds.len() as RawFd;
    let mut copies = Vec::with_capacity(fds.len());
    for fd in fds {
        let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(above))?;
        // SAFETY: fcntl just returned this new descriptor, which nothing else owns.
        copies.push(unsafe { OwnedFd::from_raw_fd(raw) });
    }
    for (i, copy) in copies.iter().enumerate() {
        let target = FIRST_PASSED_FD + i as RawFd;
        // SAFETY: the target is a plain number: whatever it named (a close-on-exec descriptor
        // of the master's, about to be replaced by exec anyway) is closed by dup2 and not used
        // again by this child, which only execs next. The result stays open (into_raw_fd), and
        // dup2 leaves it without close-on-exec, as passing it requires.
        let placed = unsafe { nix::unistd::dup2_raw(copy, target) }?;
        let _ = placed.into_raw_fd();
    }
    Ok(())
}

/// Takes ownership of a descriptor this process was handed at exec (named by `LISTEN_FDS` or
/// by the master that started it), making it close-on-exec. Fails if it is not open.
fn take_passed_fd(raw: RawFd) -> io::Result<OwnedFd> {
    if raw < FIRST_PASSED_FD {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("fd {raw} is stdio")));
    }
    if std::fs::symlink_metadata(format!("/proc/self/fd/{raw}")).is_err() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("fd {raw} is not open")));
    }
    // SAFETY: the descriptor is open (checked above) and was handed to this process for it to
    // own; each caller takes each number once, at start, before anything else opens files.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_read_back_as_they_were_written() {
        for owner in [Owner::Master, Owner::Manager, Owner::ManagerPinned] {
            assert_eq!(Owner::parse(owner.as_str()), owner);
        }
        assert_eq!(Owner::parse("from an older master"), Owner::Master);
    }

    #[test]
    fn stdio_and_closed_descriptors_are_not_taken() {
        assert_eq!(take_passed_fd(2).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(take_passed_fd(1_000_000).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
