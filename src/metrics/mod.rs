//! The Prometheus endpoint (`[metrics] bind`): `GET /metrics` in the text exposition format
//! 0.0.4, answered by the workers from the scoreboard (at `[metrics] path`).
//!
//! The master never serves: it binds the metrics socket like the app's (see
//! [`crate::listener::Role`]) and every worker inherits it and accepts on it beside the app's
//! ([`serve`]). Any worker answers for the whole server, since the scoreboard it inherited
//! holds every worker's slot, the master's header and the counters of the workers already
//! reaped ([`Scoreboard::report`]); so the endpoint answers as long as one worker accepts,
//! while workers are replaced or a reload runs (the kernel queues a scrape while none does).
//! What is rendered is [`render`]'s, with the listen queues of the worker's app sockets
//! ([`queue`]).
//!
//! Requests are counted only with the endpoint on: each worker then registers a request-end
//! hook ([`count_requests`]) that adds each request to its slot's counters. Scrapes are not
//! requests of the app: they never reach its routes, its hooks or the access log.

mod queue;
mod render;
mod serve;

use std::io;
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
        .filter_map(|a| {
            let name = match &**a {
                Acceptor::Tcp(l) => l.local_addr().ok()?.to_string(),
                Acceptor::Unix(l) => {
                    format!("unix:{}", l.local_addr().ok()?.as_pathname()?.display())
                }
            };
            Some((name, Rc::downgrade(a)))
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
    /// The worker's app sockets, by address: held weakly, so that a socket the worker closed
    /// (it drains) is neither kept open nor read under a number since reused.
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
    /// The accept queues of the app's sockets still open (see [`queue`]).
    fn queues(&self) -> Vec<Queue> {
        self.listeners
            .iter()
            .filter_map(|(listener, acceptor)| {
                let acceptor = acceptor.upgrade()?;
                let (depth, limit) = match &*acceptor {
                    Acceptor::Tcp(_) => queue::tcp(acceptor.fd())?,
                    Acceptor::Unix(_) => queue::unix(acceptor.fd())?,
                };
                Some(Queue { listener: listener.clone(), depth, limit })
            })
            .collect()
    }
}
