//! systemd's readiness protocol (`sd_notify`): when `NOTIFY_SOCKET` is set, the master tells
//! the service manager when it is ready (every worker of the first generation is), reloading
//! (`RELOADING=1` with `MONOTONIC_USEC`, then `READY=1` once the reload is over, whatever its
//! outcome), stopping, which process is the main one after a binary upgrade (`MAINPID=`), and a
//! `STATUS=` line with the number of workers.
//!
//! Messages are datagrams to the socket's path (or abstract name, written `@name`). A failed
//! send is logged once at debug level: the server works the same without a service manager.

use std::os::unix::net::{SocketAddr, UnixDatagram};

use tracing::debug;

/// A connection to the service manager's notification socket.
pub(crate) struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` names, if any.
    pub(crate) fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let name = name.to_str()?;
        let addr = if let Some(abstract_name) = name.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes()).ok()?
        } else {
            SocketAddr::from_pathname(name).ok()?
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, addr })
    }

    /// Sends one message: newline-separated `KEY=value` assignments.
    pub(crate) fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            debug!("cannot notify the service manager: {e}");
        }
    }

    /// All workers are ready: at start, after a reload, after an upgrade (which also says this
    /// process is now the main one).
    pub(crate) fn ready(&self, workers: usize) {
        let pid = std::process::id();
        self.send(&format!("READY=1\nMAINPID={pid}\nSTATUS=serving, {workers} workers"));
    }

    /// A reload has begun.
    pub(crate) fn reloading(&self) {
        let usec = crate::scoreboard::now_us();
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading"));
    }

    /// The server is stopping.
    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }
}
