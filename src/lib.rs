//! forkserve: a pre-fork, multi-process HTTP server.
//!
//! A single-threaded **master** reads the config, binds the listening sockets and forks
//! **workers**. Each worker builds its own single-threaded tokio runtime and serves HTTP/1.1
//! with hyper on the shared, inherited sockets. The master never serves traffic: it supervises
//! (replacing workers that die) and acts on signals.
//!
//! # Running your own service
//!
//! [`run`] is the entry point: it gives your program the forkserve command line and config
//! file, and calls your factory in every worker, after the fork, to build the service that worker
//! serves ([`Program`] does the same under your program's own name, with config tables of its
//! own; [`factory_async`] takes a factory that awaits, [`from_tower`] an axum or tower service). The service need not be `Send`. What a handler needs is re-exported
//! ([`bytes`], [`http`], [`http_body_util`], [`hyper`], [`tokio`]), so `forkserve` is the one
//! dependency this takes:
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use forkserve::bytes::Bytes;
//! use forkserve::http_body_util::Full;
//! use forkserve::hyper::{Request, Response, body::Incoming, service::service_fn};
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
//! The factory may be a named `fn factory(worker: &WorkerContext) -> Result<impl HttpService,
//! E>` (see [`Factory`]), an async one that awaits its setup ([`factory_async`]), and it may
//! build a tower service, such as an axum `Router` ([`from_tower`]).
//!
//! [`run`] says it is forkserve. A [`Program`] says its own name, version and description in
//! `--help` and its errors, and may declare config tables of its own (`[myapp]`), which its
//! factory reads, checked, with [`Config::table`]:
//! `forkserve::Program::new("myapp").version(…).table::<MyConfig>("myapp").run(factory)`.
//!
//! # Seeing a running server
//!
//! `forkserve status --pid PID` (or `--pid PIDFILE`, or the server's config file, whose
//! `[server] pidfile` names it) prints the master, its generation, and a row per worker: its
//! state (booting, idle, busy, draining), requests, connections, memory, and the request it is
//! busy with and for how long; `--json` for scripts. It maps the master's scoreboard read-only,
//! never signalling or asking the master anything. A [`Program`] has the command too, under its
//! own name (`myapp status`). `status` is a command only as the first argument: a config file
//! named `status` is `./status`.
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
//! | `USR1` | reopen the log file (`[log] file`, after logrotate renamed it), then have every worker and mold reopen theirs and the access log (`[log] access`) (the master sends each `USR1`; they reopen in the handler); without either file, logged and ignored |
//!
//! Signals are not queued: the kernel merges a standard signal sent while the same one is
//! still pending, so a quick burst of `TTIN`s counts as fewer (50 sent in a loop made 2), and
//! the master acts on at most 16 of one kind per wake-up. To add N workers, send one `TTIN` at
//! a time and wait for its `ttin: one more worker workers=…` log line, or set `workers` and
//! send `HUP`.
//!
//! # Layout
//!
//! Modules are listed in the order data flows through them, and imports only go down the list:
//! the app knows nothing of a connection's bytes, a connection nothing of supervision, the
//! master nothing of HTTP (`tests/layout.rs` fails on an import cycle).
//!
//! | module | owns |
//! |---|---|
//! | `program` | [`Program`]: a program's name, version and description, its own config tables, and running it |
//! | `status` | `forkserve status`: finding a running master (pid, pidfile, config), reading its scoreboard, the table and the JSON |
//! | [`cli`] | the command line: the config file, `--check-config`, `--print-config`, the `status` command; the setting flags come from `config` |
//! | [`config`] | each setting declared once (key, default, flag, help, check); the TOML schema, the app kinds' and a program's tables given to it as a [`Schema`](config::Schema), validation, `file:line:col` errors |
//! | `master` | the supervising loop and its verbs; its lifecycle phase, the pool's pure decisions, reload, binary upgrade, with a preloaded app each generation's mold (the template process its workers fork from), and the files `python.reload` watches |
//! | `listener` | binding TCP and unix sockets before any fork |
//! | `handoff` | descriptors passed across exec: socket activation, and the sockets a binary upgrade hands on |
//! | `scoreboard` | the shared memory where workers publish heartbeats and requests for the master, the metrics and `status`; another master's, mapped read-only |
//! | `ipc` | messages from workers to the master: ready, boot failure, due for recycling, an app's request to be replaced |
//! | `signals` | which signal means what, for the master and for a worker |
//! | `process` | fork, wait, kill; with the signal registrations in `signals`, the scoreboard's mapping, `handoff`, the log file's reopen from a signal handler (`logging::file`) and the embedded interpreter's start (`app::python`), the only `unsafe` |
//! | `pidfile`, `notify`, `logging` | the pidfile and its lock; systemd's readiness protocol (`sd_notify`); the log: stderr or the log file (put on descriptor 2 of every process, reopened on `USR1`), text or JSON |
//! | `worker` | everything after fork: runtime, the app's factory, heartbeat, memory watch, drain, exit code |
//! | `conn` | one connection, one way through: accept, preamble (PROXY), transport (facts set once), the protocol (HTTP/1: the gate's `[http]` limits, strict framing and timeouts, hyper, parking), the service stack every protocol shares (who the client is: the [`Client`] extension; deadline `504`, panic `500`, accounting), the open connections (cap, drain, reclaim) |
//! | `access_format`, `access_log` | the access log's formats, parsed with the config; the access log each worker installs on the request-end hooks, buffers and writes in whole lines |
//! | `metrics` | the Prometheus endpoint (`[metrics] bind`): the request-end hook that counts requests into the worker's slot, and `GET /metrics`, answered by every worker from the scoreboard |
//! | `request_end` | the one event every request ends in ([`RequestEnd`]), and the hooks that receive it: written by `conn`, registered through the app's [`WorkerContext`], read by logs and metrics |
//! | `panics` | catching the app's panics, and the message logged with its request |
//! | [`app`] | what a worker serves: the seam (service, factory, async and tower adapters), the binary's router with its app kinds (`respond`, `static_files`, and `python`: WSGI apps on the worker's embedded CPython, with the `python` feature), each with its config keys, and what a mold preloads (`preload`) |

// The `settings!` macro recurses once per setting, past the default limit of 128.
#![recursion_limit = "256"]

mod access_format;
mod access_log;
pub mod app;
pub mod cli;
pub mod config;
mod conn;
mod error;
mod handoff;
mod ipc;
mod listener;
mod logging;
mod master;
mod metrics;
mod notify;
mod panics;
mod pidfile;
mod process;
mod program;
mod request_end;
mod scoreboard;
mod signals;
mod status;
mod tls;
mod worker;

use std::process::ExitCode;

pub use crate::app::{Factory, HttpService, WorkerContext, factory_async, from_tower};
pub use crate::cli::Cli;
pub use crate::config::Config;
pub use crate::conn::service::client::Client;
pub use crate::error::{BoxError, ConfigError, Error};
pub use crate::program::Program;
pub use crate::request_end::{AnsweredBy, Ending, RequestEnd};
pub use crate::worker::EXIT_BOOT_FAILED;

// What a handler and a factory need, so that a program depends on forkserve alone, at the
// versions forkserve serves with.
pub use bytes;
pub use http;
pub use http_body_util;
pub use hyper;
pub use tokio;

use crate::config::ConfigSource;
use crate::listener::{Addr, Listeners};
use crate::pidfile::Pidfile;

/// Runs a server with the forkserve command line: parses the arguments, loads the config file,
/// handles `--check-config` and `--print-config`, and runs the master until it stops, calling
/// `factory` in each worker to build the service it serves. Errors are printed as
/// `forkserve: error: …`; the exit code is 0, 1 (runtime error), 2 (usage or config error) or 3
/// (workers could not boot). To say the program's own name in `--help` and errors, or to read
/// config tables of its own, run it as a [`Program`].
///
/// Call it from a plain `fn main`, before starting any thread or async runtime: the master
/// forks, and forking is only safe from a single-threaded process; each worker then builds its
/// own runtime. Under `#[tokio::main]` it refuses to start (exit code 2): do async setup in an
/// async factory ([`factory_async`]) instead.
pub fn run<F: Factory>(factory: F) -> ExitCode {
    Program::forkserve().run(factory)
}

/// A server ready to run: its effective config, and where a reload re-reads it from.
#[derive(Debug)]
pub struct Server {
    source: Option<ConfigSource>,
    config: Config,
}

impl Server {
    /// Loads the config the command line names, with its flags applied, as the `forkserve`
    /// binary reads it (its app kinds; no program table: see [`Program`]).
    pub fn from_cli(cli: &Cli) -> Result<Server, Error> {
        Server::from_source(cli.source(program::forkserve_schema()))
    }

    /// Loads the config `source` names; a reload reads it again from there.
    pub(crate) fn from_source(source: ConfigSource) -> Result<Server, Error> {
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
    pub fn run<F: Factory>(mut self, factory: F) -> Result<(), Error> {
        ensure_outside_a_runtime()?;
        process::ensure_single_threaded().map_err(Error::Usage)?;
        // A config built in code has not been through the file's or the flags' checks.
        self.config.server.check().map_err(Error::Usage)?;
        if self.source.is_none() {
            self.config.load_tls().map_err(|(_, message)| Error::Usage(message))?;
        }
        // Before the first fork, so that every worker of this master shares it.
        tls::tickets::init()
            .map_err(|_| Error::Usage("cannot make the session ticket secret".into()))?;
        let log = logging::init(&self.config.log)
            .map_err(|e| Error::os("opening the log file ([log] file, --log-file)", e))?;
        if let Some(tls) = self.config.tls_material() {
            tls.warn_expiring();
        }
        process::raise_fd_limit();
        // Before anything is bound: a log that cannot be written is a startup error.
        access_log::check(self.config.log.access.as_deref())?;
        // Sockets passed by systemd or an upgrading master: taken before anything opens files.
        let inherited = handoff::Inherited::from_env()?;
        // Handlers next: a signal sent while the server starts is queued, not fatal.
        let plumbing = master::Plumbing::new()?;
        let server = &self.config.server;
        let addrs = Addr::all(&self.config);
        let mut listeners = Listeners::open(&addrs, server.backlog, inherited)?;
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

/// Fails inside an async runtime (`#[tokio::main]`, even single-threaded, passes the thread
/// check): a worker forked from it would inherit the runtime's context, and building its own
/// runtime there fails, so every worker would exit while booting with nothing said of why.
fn ensure_outside_a_runtime() -> Result<(), Error> {
    match tokio::runtime::Handle::try_current() {
        Err(_) => Ok(()),
        Ok(_) => Err(Error::Usage(
            "forkserve must be started outside an async runtime, but it was called inside one \
             (is `main` under #[tokio::main]?); call it from a plain `fn main`: each worker \
             builds its own runtime, and an async factory (forkserve::factory_async) can await \
             setup in it"
                .into(),
        )),
    }
}
