//! Listening sockets: bound by the master before any fork and shared by every worker, so they
//! outlive every generation of workers and nothing queued on them is lost across a reload.
//!
//! Sockets passed at exec (socket activation, a binary upgrade) come from [`crate::handoff`],
//! which also hands them on; this module decides which address each serves and whose unix path
//! it removes when it closes one.
//!
//! Each address has a [`Role`]: the app's (`[server] bind`) or the metrics endpoint's
//! (`[metrics] bind`). Both are bound, kept across reloads and handed over alike; a worker
//! takes each role's sockets apart ([`Sockets`]), so that the metrics socket never reaches the
//! app, even on the same address as one of the app's with port 0.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrLike,
    SockaddrStorage, UnixAddr, bind, getsockname, getsockopt, listen, setsockopt, socket, sockopt,
};

use crate::config::{Bind, Config};
use crate::error::Error;
use crate::handoff::{Inherited, Outgoing, Owner, PassedFd, passed_fd_error};

/// One listening socket.
#[derive(Debug)]
pub enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A unix domain socket, and the path the master unlinks when it closes it.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// The address as the kernel reports it (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> String {
        match self {
            Listener::Tcp(l) => {
                l.local_addr().map_or_else(|e| format!("?({e})"), |a| a.to_string())
            }
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l, _) => l.as_fd(),
        }
    }

    /// The descriptor's number.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd().as_raw_fd()
    }

    /// Closes the master's copy; for a unix socket, also removes its path so that new clients
    /// are refused at once. Workers that still hold a copy keep serving what they accepted.
    fn close(self) {
        if let Listener::Unix(_, path) = &self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What a listening socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The app's: `[server] bind`.
    App,
    /// The metrics endpoint's: `[metrics] bind`.
    Metrics,
}

/// A configured address, what it is for, and whether its generation serves TLS on it.
#[derive(Debug, Clone)]
pub(crate) struct Addr {
    pub(crate) role: Role,
    pub(crate) bind: Bind,
    /// Not part of the socket's identity (see `PartialEq`): a reload that turns TLS on or off
    /// for an address keeps its socket, and what is queued on it.
    pub(crate) tls: bool,
}

impl PartialEq for Addr {
    fn eq(&self, other: &Self) -> bool {
        self.role == other.role && self.bind == other.bind
    }
}

impl Eq for Addr {}

impl Addr {
    /// Every address `config` listens on: the app's, then the metrics endpoint's (always
    /// cleartext).
    pub(crate) fn all(config: &Config) -> Vec<Addr> {
        let tls_on = config.tls_material().is_some();
        let app = config.server.bind.iter().map(|l| Addr {
            role: Role::App,
            bind: l.bind.clone(),
            tls: l.is_tls(tls_on),
        });
        let metrics = config.metrics.bind.iter().map(|b| Addr {
            role: Role::Metrics,
            bind: b.clone(),
            tls: false,
        });
        app.chain(metrics).collect()
    }

    /// The name a binary upgrade hands the socket over with (see [`crate::handoff`]): the
    /// `bind` address, marked for the metrics. A master of an older build, which knows no
    /// such mark, matches it to no address of its own and closes it once in charge.
    fn passed_name(&self) -> String {
        match self.role {
            Role::App => self.bind.to_string(),
            Role::Metrics => format!("metrics={}", self.bind),
        }
    }

    /// The address as errors name it.
    fn described(&self) -> String {
        match self.role {
            Role::App => self.bind.to_string(),
            Role::Metrics => format!("{} ([metrics] bind)", self.bind),
        }
    }
}

/// A worker's sockets, by role.
#[derive(Debug, Default)]
pub(crate) struct Sockets {
    /// The app's, each with whether it serves TLS.
    pub(crate) app: Vec<(Listener, bool)>,
    pub(crate) metrics: Vec<Listener>,
}

/// Logs a socket that is being listened on, saying what for, and if it was passed at exec.
fn log_listening(role: Role, l: &Listener, inherited: bool) {
    let address = l.local_addr();
    match (role, inherited) {
        (Role::App, false) => tracing::info!(address = %address, "listening"),
        (Role::App, true) => tracing::info!(address = %address, inherited, "listening"),
        (Role::Metrics, false) => tracing::info!(address = %address, "listening for metrics"),
        (Role::Metrics, true) => {
            tracing::info!(address = %address, inherited, "listening for metrics");
        }
    }
}

/// The master's listening sockets, grouped by the configured address that produced them (a
/// host name can resolve to several addresses).
#[derive(Debug, Default)]
pub struct Listeners {
    groups: Vec<(Addr, Vec<Listener>)>,
    /// Addresses of sockets the service manager handed over that no `bind` names: served (as
    /// the app's) for the master's life, whatever a reload's config says.
    pinned: Vec<Addr>,
    /// Unix socket paths that are not the master's to remove (the service manager's).
    foreign_paths: Vec<PathBuf>,
    /// Unix socket paths passed by an upgrading master: not removed unless this master has
    /// taken over (if the upgrade fails, the old master serves on with them).
    upgrade_paths: Vec<PathBuf>,
    /// Passed sockets this config dropped, closed on taking over.
    retiring: Vec<Listener>,
}

impl Listener {
    /// A listening socket passed at exec.
    fn from_passed(fd: OwnedFd) -> io::Result<Listener> {
        if !getsockopt(&fd, sockopt::AcceptConn)? {
            return Err(io::Error::other("not a listening socket"));
        }
        if getsockopt(&fd, sockopt::SockType)? != SockType::Stream {
            return Err(io::Error::other("not a stream socket"));
        }
        let addr: SockaddrStorage = getsockname(fd.as_raw_fd())?;
        let listener = match addr.family() {
            Some(AddressFamily::Unix) => {
                let path = addr.as_unix_addr().and_then(|u| u.path()).map(Path::to_path_buf);
                let path = path.ok_or_else(|| io::Error::other("unnamed unix socket"))?;
                Listener::Unix(UnixListener::from(fd), path)
            }
            Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                Listener::Tcp(TcpListener::from(fd))
            }
            other => return Err(io::Error::other(format!("unsupported address family {other:?}"))),
        };
        match &listener {
            Listener::Tcp(l) => l.set_nonblocking(true)?,
            Listener::Unix(l, _) => l.set_nonblocking(true)?,
        }
        Ok(listener)
    }

    /// Whether this socket is the one `bind` asks for.
    fn serves(&self, bind: &Bind) -> bool {
        match (self, bind) {
            (Listener::Tcp(l), Bind::Tcp { host, port }) if *port != 0 => {
                let Ok(have) = l.local_addr() else { return false };
                (host.as_str(), *port).to_socket_addrs().is_ok_and(|mut a| a.any(|a| a == have))
            }
            (Listener::Unix(_, have), Bind::Unix(path)) => have == path,
            _ => false,
        }
    }

    /// The `bind` address this socket answers on.
    fn bind(&self) -> Bind {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => Bind::Tcp { host: a.ip().to_string(), port: a.port() },
                Err(_) => Bind::Tcp { host: "?".into(), port: 0 },
            },
            Listener::Unix(_, path) => Bind::Unix(path.clone()),
        }
    }
}

impl Listeners {
    /// Binds every address, or none: on error, what was bound is closed again. Addresses that
    /// a passed socket serves (socket activation, a binary upgrade) use it instead of binding.
    /// Passed sockets no address names are served too when the service manager passed them,
    /// and closed when an upgrading master did (its config no longer has them).
    pub(crate) fn open(
        addrs: &[Addr],
        backlog: u32,
        inherited: Inherited,
    ) -> Result<Listeners, Error> {
        let mut listeners = Listeners::default();
        let mut pool = Vec::new();
        for PassedFd { name, owner, fd } in inherited.sockets {
            let raw = fd.as_raw_fd();
            let listener =
                Listener::from_passed(fd).map_err(|e| passed_fd_error(format!("fd {raw}: {e}")))?;
            pool.push((name, owner, listener));
        }
        for a in addrs {
            let name = a.passed_name();
            let (matching, rest): (Vec<_>, Vec<_>) = pool.into_iter().partition(|(n, o, l)| {
                *o != Owner::ManagerPinned && (*n == name || l.serves(&a.bind))
            });
            pool = rest;
            if matching.is_empty() {
                continue;
            }
            let mut sockets = Vec::new();
            for (_, owner, l) in matching {
                log_listening(a.role, &l, true);
                listeners.note_owner(&l, owner, inherited.upgrade);
                sockets.push(l);
            }
            listeners.groups.push((a.clone(), sockets));
        }
        for (_, owner, l) in pool {
            if owner == Owner::Master {
                // The old master's, for an address this config dropped: it serves on with it
                // until this master takes over, and then it goes (see `take_over`).
                tracing::info!(address = %l.local_addr(), "a passed socket the config does not bind is closed on taking over");
                listeners.retiring.push(l);
                continue;
            }
            let a = Addr { role: Role::App, bind: l.bind(), tls: false };
            tracing::info!(address = %l.local_addr(), inherited = true, "listening (passed by the service manager, not in bind)");
            listeners.note_owner(&l, Owner::ManagerPinned, inherited.upgrade);
            listeners.pinned.push(a.clone());
            listeners.groups.push((a, vec![l]));
        }
        listeners.open_at_start(addrs, backlog).inspect_err(|_| listeners.close_all())?;
        Ok(listeners)
    }

    /// [`Listeners::open_missing`] for a master that is starting, retrying an address in use
    /// for up to [`BIND_RETRY_FOR`]: a server restarted right after its predecessor was killed
    /// races that predecessor's orphaned workers, which let go of the sockets from a signal
    /// handler (see `signals::bound_orphan_life`) a moment later. Not for a reload, which must
    /// not hold up the master's loop: it is refused at once.
    fn open_at_start(&mut self, addrs: &[Addr], backlog: u32) -> Result<(), Error> {
        let give_up = Instant::now() + BIND_RETRY_FOR;
        let mut warned = false;
        loop {
            match self.open_missing(addrs, backlog) {
                Err(Error::Bind { addr, source })
                    if source.kind() == io::ErrorKind::AddrInUse && Instant::now() < give_up =>
                {
                    if !std::mem::replace(&mut warned, true) {
                        tracing::warn!(address = %addr, "address in use, retrying for up to 1 s");
                    }
                    std::thread::sleep(BIND_RETRY_EVERY);
                }
                done => return done,
            }
        }
    }

    /// Records whose a passed socket's unix path is: the service manager's are never removed;
    /// an upgrading master's become this master's once it has taken over.
    fn note_owner(&mut self, l: &Listener, owner: Owner, upgrade: bool) {
        let Listener::Unix(_, path) = l else { return };
        match owner {
            Owner::Manager | Owner::ManagerPinned => self.foreign_paths.push(path.clone()),
            Owner::Master if upgrade => self.upgrade_paths.push(path.clone()),
            Owner::Master => {}
        }
    }

    /// After a binary upgrade, once the old master has been told to stop: the sockets it bound
    /// are this master's (their paths removed when it stops serving them), and the ones this
    /// config dropped are closed.
    pub(crate) fn take_over(&mut self) {
        self.upgrade_paths.clear();
        for l in std::mem::take(&mut self.retiring) {
            tracing::info!(address = %l.local_addr(), "closing listener no longer configured");
            self.close(l);
        }
    }

    /// Every socket with its `bind` address and owner, in order: what a binary upgrade hands
    /// the new master (see [`crate::handoff::exec_with_sockets`]).
    pub(crate) fn passed_fds(&self) -> Vec<Outgoing<'_>> {
        self.groups
            .iter()
            .flat_map(|(a, sockets)| {
                sockets.iter().map(move |l| {
                    let owner = match l {
                        _ if self.pinned.contains(a) => Owner::ManagerPinned,
                        Listener::Unix(_, path) if self.foreign_paths.contains(path) => {
                            Owner::Manager
                        }
                        _ => Owner::Master,
                    };
                    Outgoing { owner, bind: a.passed_name(), fd: l.fd() }
                })
            })
            .collect()
    }

    /// Binds the addresses of `binds` that are not open yet, all or none: on error, the ones
    /// just bound are closed again and nothing changes. Open sockets are kept as they are (same
    /// fd), so whatever waits in their queues is served by the next generation.
    pub(crate) fn open_missing(&mut self, addrs: &[Addr], backlog: u32) -> Result<(), Error> {
        let mut fresh: Vec<(Addr, Vec<Listener>)> = Vec::new();
        for a in addrs.iter().filter(|a| !self.has(a)) {
            match bind_one(&a.bind, backlog) {
                Ok(sockets) => fresh.push((a.clone(), sockets)),
                Err(source) => {
                    fresh.into_iter().flat_map(|(_, s)| s).for_each(|l| self.close(l));
                    return Err(Error::Bind { addr: a.described(), source });
                }
            }
        }
        for (a, sockets) in &fresh {
            for l in sockets {
                log_listening(a.role, l, false);
            }
        }
        self.groups.extend(fresh);
        warn_if_backlog_capped(backlog);
        Ok(())
    }

    /// Closes the master's copies of every socket not in `addrs` (workers that hold one keep
    /// serving what they accepted), and applies `backlog` to the others.
    pub(crate) fn retain_only(&mut self, addrs: &[Addr], backlog: u32) {
        let pinned = std::mem::take(&mut self.pinned);
        let (kept, closed): (Vec<_>, Vec<_>) = std::mem::take(&mut self.groups)
            .into_iter()
            .partition(|(a, _)| addrs.contains(a) || pinned.contains(a));
        self.pinned = pinned;
        for (a, sockets) in closed {
            tracing::info!(address = %a.described(), "closing listener no longer configured");
            sockets.into_iter().for_each(|l| self.close(l));
        }
        for l in kept.iter().flat_map(|(_, s)| s) {
            // listen(2) again updates the queue length of a socket already listening.
            let _ = listen(&l.fd(), backlog_of(backlog));
        }
        self.groups = kept;
    }

    fn has(&self, addr: &Addr) -> bool {
        self.groups.iter().any(|(have, _)| have == addr)
    }

    /// Closes every socket (the master's copies), removing the unix socket paths it bound.
    pub fn close_all(&mut self) {
        for (_, sockets) in std::mem::take(&mut self.groups) {
            sockets.into_iter().for_each(|l| self.close(l));
        }
    }

    /// Closes the master's copies without removing any path: after a binary upgrade, the new
    /// master serves them.
    pub(crate) fn hand_over(&mut self) {
        self.groups.clear();
    }

    fn close(&self, l: Listener) {
        match &l {
            Listener::Unix(_, path)
                if self.foreign_paths.contains(path) || self.upgrade_paths.contains(path) => {}
            _ => l.close(),
        }
    }

    /// In a forked mold (see `master::mold`): keeps the sockets of `addrs` (and the pinned
    /// ones) for the workers it forks, and closes its copies of the others (without removing any
    /// path), so that an address a reload dropped is not held open by the new generation's mold.
    pub(crate) fn keep_only_for(&mut self, addrs: &[Addr]) {
        let pinned = &self.pinned;
        self.groups.retain(|(have, _)| addrs.contains(have) || pinned.contains(have));
    }

    /// In a forked worker: takes the sockets of `addrs` (and the pinned ones), in that order,
    /// by role, and closes its copies of the others (without removing any path: they are the
    /// master's).
    pub(crate) fn into_sockets_for(self, addrs: &[Addr]) -> Sockets {
        let mut groups = self.groups;
        let mut out = Sockets::default();
        for a in addrs.iter().chain(&self.pinned) {
            if let Some(i) = groups.iter().position(|(have, _)| have == a) {
                let sockets = groups.swap_remove(i).1;
                match a.role {
                    Role::App => out.app.extend(sockets.into_iter().map(|l| (l, a.tls))),
                    Role::Metrics => out.metrics.extend(sockets),
                }
            }
        }
        drop(groups);
        out
    }
}

fn backlog_of(n: u32) -> Backlog {
    // Backlog::new refuses more than SOMAXCONN; the kernel caps at net.core.somaxconn anyway,
    // which -1 asks for.
    i32::try_from(n).ok().and_then(|n| Backlog::new(n).ok()).unwrap_or(Backlog::MAXALLOWABLE)
}

fn warn_if_backlog_capped(backlog: u32) {
    let max = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if let Some(max) = max.filter(|max| backlog > *max) {
        tracing::warn!(backlog, somaxconn = max, "backlog is capped by net.core.somaxconn");
    }
}

/// How long a starting master retries an address in use, and how often.
const BIND_RETRY_FOR: Duration = Duration::from_secs(1);
const BIND_RETRY_EVERY: Duration = Duration::from_millis(100);

fn bind_one(b: &Bind, backlog: u32) -> io::Result<Vec<Listener>> {
    match b {
        Bind::Tcp { host, port } => {
            let mut addrs: Vec<SocketAddr> = (host.as_str(), *port).to_socket_addrs()?.collect();
            addrs.dedup();
            let mut out = Vec::with_capacity(addrs.len());
            for addr in &addrs {
                match bind_tcp(*addr, backlog) {
                    Ok(l) => out.push(Listener::Tcp(l)),
                    // A name like localhost may resolve to an address family this host lacks
                    // (no IPv6 in a container): skip it when another address works.
                    Err(e) if addrs.len() > 1 && is_unavailable(&e) => {
                        tracing::warn!(address = %addr, "skipping address of {host}: {e}");
                    }
                    Err(e) => return Err(e),
                }
            }
            if out.is_empty() {
                return Err(io::Error::new(io::ErrorKind::AddrNotAvailable, "no usable address"));
            }
            Ok(out)
        }
        Bind::Unix(path) => Ok(vec![Listener::Unix(bind_unix(path, backlog)?, path.clone())]),
    }
}

fn is_unavailable(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(nix::libc::EADDRNOTAVAIL | nix::libc::EAFNOSUPPORT))
}

fn new_socket(family: AddressFamily) -> io::Result<OwnedFd> {
    // Non-blocking: workers accept through tokio. The flag is shared by every process that
    // holds the socket, which is what every one of them wants. CLOEXEC: a child that execs
    // inherits sockets only on purpose.
    Ok(socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?)
}

fn bind_tcp(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let fd = match addr {
        SocketAddr::V4(v4) => {
            let fd = new_socket(AddressFamily::Inet)?;
            setsockopt(&fd, sockopt::ReuseAddr, &true)?;
            bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?;
            fd
        }
        SocketAddr::V6(v6) => {
            let fd = new_socket(AddressFamily::Inet6)?;
            setsockopt(&fd, sockopt::ReuseAddr, &true)?;
            // [::] must not also claim the IPv4 port, so that 0.0.0.0 can be bound beside it.
            setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?;
            fd
        }
    };
    listen(&fd, backlog_of(backlog))?;
    Ok(TcpListener::from(fd))
}

fn bind_unix(path: &Path, backlog: u32) -> io::Result<UnixListener> {
    remove_stale_socket(path)?;
    let fd = new_socket(AddressFamily::Unix)?;
    bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    listen(&fd, backlog_of(backlog))?;
    Ok(UnixListener::from(fd))
}

/// A socket file left by a server that died is removed; one that a live server answers on, or
/// a path that is not a socket, is an error.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "path exists and is not a socket",
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => {
            Err(io::Error::new(io::ErrorKind::AddrInUse, "another process is listening on it"))
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(e) => Err(e),
    }
}
