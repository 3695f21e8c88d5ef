//! Listening sockets: bound by the master before any fork and shared by every worker, so they
//! outlive every generation of workers and nothing queued on them is lost across a reload.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, UnixAddr, bind, listen,
    setsockopt, socket, sockopt,
};

use crate::config::Bind;
use crate::error::Error;

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

    /// Closes the master's copy; for a unix socket, also removes its path so that new clients
    /// are refused at once. Workers that still hold a copy keep serving what they accepted.
    fn close(self) {
        if let Listener::Unix(_, path) = &self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The master's listening sockets, grouped by the configured address that produced them (a
/// host name can resolve to several addresses).
#[derive(Debug, Default)]
pub struct Listeners {
    groups: Vec<(Bind, Vec<Listener>)>,
}

impl Listeners {
    /// Binds every address, or none: on error, what was bound is closed again.
    pub fn open(binds: &[Bind], backlog: u32) -> Result<Listeners, Error> {
        let mut listeners = Listeners::default();
        listeners.open_missing(binds, backlog)?;
        Ok(listeners)
    }

    /// Binds the addresses of `binds` that are not open yet, all or none: on error, the ones
    /// just bound are closed again and nothing changes. Open sockets are kept as they are (same
    /// fd), so whatever waits in their queues is served by the next generation.
    pub fn open_missing(&mut self, binds: &[Bind], backlog: u32) -> Result<(), Error> {
        let mut fresh: Vec<(Bind, Vec<Listener>)> = Vec::new();
        for b in binds.iter().filter(|b| !self.has(b)) {
            match bind_one(b, backlog) {
                Ok(sockets) => fresh.push((b.clone(), sockets)),
                Err(source) => {
                    fresh.into_iter().flat_map(|(_, s)| s).for_each(Listener::close);
                    return Err(Error::Bind { addr: b.to_string(), source });
                }
            }
        }
        for (_, sockets) in &fresh {
            for l in sockets {
                tracing::info!(address = %l.local_addr(), "listening");
            }
        }
        self.groups.extend(fresh);
        warn_if_backlog_capped(backlog);
        Ok(())
    }

    /// Closes the master's copies of every socket not in `binds` (workers that hold one keep
    /// serving what they accepted), and applies `backlog` to the others.
    pub fn retain_only(&mut self, binds: &[Bind], backlog: u32) {
        let (kept, closed): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.groups).into_iter().partition(|(b, _)| binds.contains(b));
        for (b, sockets) in closed {
            tracing::info!(address = %b, "closing listener no longer configured");
            sockets.into_iter().for_each(Listener::close);
        }
        for l in kept.iter().flat_map(|(_, s)| s) {
            // listen(2) again updates the queue length of a socket already listening.
            let _ = listen(&l.fd(), backlog_of(backlog));
        }
        self.groups = kept;
    }

    fn has(&self, bind: &Bind) -> bool {
        self.groups.iter().any(|(have, _)| have == bind)
    }

    /// Closes every socket (the master's copies), removing unix socket paths.
    pub fn close_all(&mut self) {
        for (_, sockets) in self.groups.drain(..) {
            sockets.into_iter().for_each(Listener::close);
        }
    }

    /// In a forked worker: takes the sockets of `binds`, in that order, and closes its copies
    /// of the others (without removing any path: they are the master's).
    pub(crate) fn into_sockets_for(self, binds: &[Bind]) -> Vec<Listener> {
        let mut groups = self.groups;
        let mut out = Vec::new();
        for b in binds {
            if let Some(i) = groups.iter().position(|(have, _)| have == b) {
                out.extend(groups.swap_remove(i).1);
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
