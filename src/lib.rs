//! forkserve: a pre-fork, multi-process HTTP server.
//!
//! A single-threaded **master** reads the config, binds the listening sockets and forks
//! **workers**. Each worker builds its own single-threaded tokio runtime and serves HTTP/1.1
//! with hyper on the shared, inherited sockets. The master never serves traffic: it supervises
//! (replacing workers that die) and acts on signals.
//!
//! # Running your own service
//!
//! [`run`] is the one entry point: it gives your program the forkserve command line and config
//! file, and calls your factory in every worker, after the fork, to build the service that worker
//! serves. The service need not be `Send`.
//!
//! ```no_run
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper::{Request, Response, body::Incoming, service::service_fn};
//!
//! fn main() -> std::process::ExitCode {
//!     forkserve::run(|_worker: &forkserve::WorkerContext| {
//!         Ok::<_, Infallible>(service_fn(|_req: Request<Incoming>| async {
//!             Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello\n"))))
//!         }))
//!     })
//! }
//! ```
//!
//! # Signals of the master
//!
//! | signal | action |
//! |---|---|
//! | `HUP` | re-read and validate the config; if valid, start a new generation of workers and stop the old one once the new one is ready; if not, log why and keep serving |
//! | `TERM` | graceful stop: close the listeners, let in-flight requests finish (up to `graceful_timeout`), exit 0 |
//! | `INT`, `QUIT` | fast stop: workers exit at once, the master exits 0 |
//! | `TTIN`, `TTOU` | one more, one fewer worker (never below one) |
//! | `CHLD` | reap; every exit is logged with its cause; a worker that died unexpectedly is replaced |
//! | `USR2` | binary upgrade: start a new master from the binary with the listening sockets; hand over once it serves |
//! | `WINCH` | after a manual upgrade: stop this master's workers |
//!
//! Signals are not queued: the kernel merges a standard signal sent while the same one is
//! still pending, so a quick burst of `TTIN`s counts as fewer (50 sent in a loop made 2), and
//! the master acts on at most 16 of one kind per wake-up. To add N workers, send one `TTIN` at
//! a time and wait for its `ttin: one more worker workers=…` log line, or set `workers` and
//! send `HUP`.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | the flags, and how they override the config file |
//! | [`config`] | the TOML schema, defaults, validation, `file:line:col` errors |
//! | `listener` | binding TCP and unix sockets before any fork |
//! | `master` | the supervising loop and its verbs |
//! | `signals` | which signal means what, for the master and for a worker |
//! | `worker` | everything after fork: runtime, heartbeat, memory watch, drain, exit code |
//! | `client` | who the client is: forwarded headers from trusted proxies, the [`Client`] extension |
//! | `conn` | one connection, one way through: accept, preamble (PROXY), transport, HTTP/1 (the gate: `[http]` limits, strict framing, timeouts; hyper; parking), the service stack (client, deadline `504`, panic `500`, accounting), the open connections (cap, drain, reclaim), and the one [`RequestEnd`] event per request |
//! | `scoreboard` | the shared memory where workers publish heartbeats and requests for the master |
//! | `ipc` | messages from workers to the master: ready, boot failure, due for recycling |
//! | `upgrade` | binary upgrade: starting a new master with the sockets, and handing over |
//! | `notify` | systemd's readiness protocol (`sd_notify`) |
//! | `process` | fork, wait, kill; with the signal registrations in `signals` and the scoreboard's mapping, the only `unsafe` |
//! | [`app`] | what the binary serves from the config file |

pub mod app;
pub mod cli;
mod client;
pub mod config;
mod conn;
mod error;
mod ipc;
mod listener;
mod logging;
mod master;
mod notify;
mod panics;
mod pidfile;
mod process;
mod scoreboard;
mod signals;
mod upgrade;
mod worker;

use std::process::ExitCode;

pub use crate::app::{Factory, HttpService, WorkerContext};
pub use crate::cli::Cli;
pub use crate::client::Client;
pub use crate::config::Config;
pub use crate::conn::{AnsweredBy, Ending, RequestEnd};
pub use crate::error::{BoxError, ConfigError, Error};
pub use crate::worker::EXIT_BOOT_FAILED;

use crate::cli::ConfigSource;
use crate::listener::Listeners;
use crate::pidfile::Pidfile;

/// Runs a server with the forkserve command line: parses the arguments, loads the config file,
/// handles `--check-config` and `--print-config`, and runs the master until it stops, calling
/// `factory` in each worker to build the service it serves. Errors are printed as
/// `forkserve: error: …`; the exit code is 0, 1 (runtime error), 2 (usage or config error) or 3
/// (workers could not boot).
///
/// Call it from `main` before starting any thread or async runtime: the master forks, and
/// forking is only safe from a single-threaded process.
pub fn run<F: Factory>(factory: F) -> ExitCode {
    let result = Cli::from_env().and_then(|cli| {
        let server = Server::from_cli(&cli)?;
        if cli.print_config {
            print!("{}", server.config().to_toml());
        }
        if cli.check_config || cli.print_config {
            return Ok(());
        }
        server.run(factory)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("forkserve: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// A server ready to run: its effective config, and where a reload re-reads it from.
#[derive(Debug)]
pub struct Server {
    source: Option<ConfigSource>,
    config: Config,
}

impl Server {
    /// Loads the config the command line names, with its flags applied.
    pub fn from_cli(cli: &Cli) -> Result<Server, Error> {
        let source = cli.source();
        let config = source.load()?;
        Ok(Server { source: Some(source), config })
    }

    /// A server with a config built in code. A reload (`HUP`) keeps this config and replaces
    /// the workers.
    pub fn from_config(config: Config) -> Server {
        Server { source: None, config }
    }

    /// The effective config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Binds the listeners, writes the pidfile, forks the workers and supervises them until
    /// the server is stopped by a signal.
    pub fn run<F: Factory>(self, factory: F) -> Result<(), Error> {
        process::ensure_single_threaded().map_err(Error::Usage)?;
        // A config built in code has not been through the file's or the flags' checks.
        self.config.server.check().map_err(Error::Usage)?;
        let log = logging::init(self.config.log.level);
        process::raise_fd_limit();
        // Sockets passed by systemd or an upgrading master: taken before anything opens files.
        let inherited = listener::Inherited::from_env()?;
        // Handlers next: a signal sent while the server starts is queued, not fatal.
        let plumbing = master::Plumbing::new()?;
        let server = &self.config.server;
        let mut listeners = Listeners::open(&server.bind, server.backlog, inherited)?;
        let pidfile = match server.pidfile.as_deref().map(Pidfile::create).transpose() {
            Ok(pidfile) => pidfile,
            Err(e) => {
                listeners.close_all();
                return Err(e);
            }
        };
        master::Master::new(plumbing, self.source, self.config, listeners, log, pidfile, &factory)
            .run()
    }
}
