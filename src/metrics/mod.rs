//! The Prometheus endpoint (`[metrics] bind`): `GET /metrics` in the text exposition format
//! 0.0.4, answered by the workers from the scoreboard (at `[metrics] path`).
//!
//! The master never serves: it binds the metrics socket like the app's (see
//! [`crate::listener::Role`]) and every worker inherits it and accepts on it beside the app's
//! ([`serve`]). Any worker answers for the whole server, since the scoreboard it inherited
//! holds every worker's slot, the master's header and the counters of the workers already
//! reaped ([`Scoreboard::report`]); so the endpoint answers as long as one worker accepts,
//! while workers are replaced or a reload runs (the kernel queues a scrape while none does).
//! What is rendered is [`render`]'s, with the listen queues of the worker's app sockets, read
//! here ([`listen_queue`]).
//!
//! Requests are counted only with the endpoint on: each worker then registers a request-end
//! hook ([`count_requests`]) that adds each request to its slot's counters. Scrapes are not
//! requests of the app: they never reach its routes, its hooks or the access log.

mod render;
mod serve;

use std::io;
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};

pub(crate) use serve::Endpoint;

use crate::config::MetricsConfig;
use crate::conn::accept::Acceptor;
use crate::conn::drain::Conns;
use crate::listener::Listener;
use crate::request_end::{Ending, Hooks};
use crate::scoreboard::Scoreboard;
use crate::scoreboard::counters::{Counted, Counters, method_index};

/// How many scrapes a worker answers at once; beyond, it leaves new ones in the queue for
/// the other workers. Each is a descriptor (see `master::warn_fd_headroom`).
pub(crate) const SCRAPES_AT_ONCE: usize = 4;

/// Registers the hook that counts every request of the worker into its slot's `counters`.
/// Call it only with the endpoint on: without a hook, a request builds no event at all.
pub(crate) fn count_requests(hooks: &Hooks, counters: &'static Counters) {
    hooks.add(Box::new(move |e| {
        counters.record(&Counted {
            method: Some(method_index(e.method())),
            status: e.status().map(|s| s.as_u16()),
            duration: e.duration(),
            bytes_in: e.request_body_bytes(),
            bytes_out: e.response_body_bytes(),
            cut: e.ending() == Ending::Cut,
        });
    }));
}

/// Starts a worker's endpoint on its metrics `sockets` (none: the metrics are off, and so is
/// this), reading `scoreboard` and the queues of the worker's `app` sockets; it accepts until
/// the worker drains (`conns`). `Err` if a socket cannot be used by the worker's runtime.
pub(crate) fn start(
    sockets: Vec<Listener>,
    scoreboard: Scoreboard,
    config: &MetricsConfig,
    app: &[Rc<Acceptor>],
    conns: &Conns,
) -> io::Result<Option<Rc<Endpoint>>> {
    if sockets.is_empty() {
        return Ok(None);
    }
    let listeners = app
        .iter()
        .filter_map(|a| match &**a {
            Acceptor::Tcp(l) => Some((l.local_addr().ok()?.to_string(), Rc::downgrade(a))),
            Acceptor::Unix(_) => None,
        })
        .collect();
    let source = Source { path: config.path.clone(), scoreboard, listeners };
    serve::serve(sockets, source, conns).map(Some)
}

/// What a worker's endpoint reads: the scoreboard, and its app's listening sockets; and
/// where it answers.
struct Source {
    /// `[metrics] path`.
    path: String,
    scoreboard: Scoreboard,
    /// The worker's app sockets (TCP only: see [`Source::queues`]), by address: held weakly,
    /// so that a socket the worker closed (it drains) is neither kept open nor read under a
    /// number since reused.
    listeners: Vec<(String, Weak<Acceptor>)>,
}

/// A listening socket's accept queue: connections waiting, and how many it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Queue {
    pub(crate) listener: String,
    pub(crate) depth: u32,
    pub(crate) limit: u32,
}

impl Source {
    /// The accept queues of the app's TCP sockets still open. A unix socket's is not known:
    /// the kernel tells it only through `sock_diag` netlink, not worth a scrape's while.
    fn queues(&self) -> Vec<Queue> {
        self.listeners
            .iter()
            .filter_map(|(listener, acceptor)| {
                let acceptor = acceptor.upgrade()?;
                let (depth, limit) = listen_queue(acceptor.fd().as_raw_fd())?;
                Some(Queue { listener: listener.clone(), depth, limit })
            })
            .collect()
    }
}

/// A listening TCP socket's accept queue, from `TCP_INFO`: for a socket in the listen state,
/// Linux reports the connections waiting to be accepted as `tcpi_unacked` and the queue's
/// length (the backlog, as capped by `net.core.somaxconn`) as `tcpi_sacked`. `None` if it
/// cannot be read (an orphaned worker's socket replaced by `/dev/null`).
fn listen_queue(fd: std::os::fd::RawFd) -> Option<(u32, u32)> {
    use nix::libc;
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, a zeroed `tcp_info` of that
    // size that outlives the call; any bytes it leaves are zero, a valid `tcp_info`. `fd` is
    // a descriptor the caller holds open for the call.
    let read = unsafe {
        libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, info.as_mut_ptr().cast(), &mut len)
    };
    if read != 0 {
        return None;
    }
    // SAFETY: zero-initialised, then (partly) written by the kernel: every byte is set.
    let info = unsafe { info.assume_init() };
    (info.tcpi_state == TCP_LISTEN).then_some((info.tcpi_unacked, info.tcpi_sacked))
}

/// The state of a listening TCP socket in `tcp_info` (Linux's `TCP_LISTEN`, which the libc
/// crate does not name): other sockets use `tcpi_unacked` and `tcpi_sacked` otherwise.
const TCP_LISTEN: u8 = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_sockets_queue_counts_the_connections_not_yet_accepted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = listener.as_raw_fd();
        let (depth, limit) = listen_queue(fd).unwrap();
        assert_eq!(depth, 0);
        assert!(limit > 0, "the backlog");
        let clients: Vec<_> =
            (0..3).map(|_| std::net::TcpStream::connect(listener.local_addr().unwrap())).collect();
        assert!(clients.iter().all(Result::is_ok));
        assert_eq!(listen_queue(fd).unwrap().0, 3, "three connections wait");
        drop(listener.accept().unwrap());
        assert_eq!(listen_queue(fd).unwrap().0, 2);
        let connected = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert_eq!(listen_queue(connected.as_raw_fd()), None, "not a listening socket");
    }
}
