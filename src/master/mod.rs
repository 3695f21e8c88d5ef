//! The master: it forks workers, supervises them and acts on signals, and never serves a request.
//!
//! It is a plain single-threaded loop, with no async runtime and no threads, so that forking is
//! always safe. Each turn it sleeps in poll(2) on the signal self-pipe and the workers' message
//! socket until something happens or the nearest deadline passes, then acts: read what workers
//! said, act on signals, reap the dead, and bring the workers to what is wanted. Its verbs:
//! [`Master::spawn_worker`], [`Master::reap_workers`], [`Master::manage_workers`],
//! [`Master::retire_worker`], [`Master::murder_hung`], [`Master::recycle_workers`],
//! [`Master::murder_overdue`], [`Master::reload`], [`Master::finish_reload`],
//! [`Master::roll_back`], [`Master::upgrade_binary`], [`Master::stop`]; with a preloaded app,
//! [`Master::manage_molds`], [`Master::fork_from_mold`], [`Master::reap_mold`].
//!
//! | module | owns |
//! |---|---|
//! | this one | the loop, signals, stopping |
//! | [`phase`] | the lifecycle as values: announced or not; steady, reloading, stopping and how |
//! | [`pool`] | each worker's life; the pure decision of what to fork and retire, and when |
//! | [`workers`] | carrying the decisions out: fork, become a worker, retire, announce |
//! | [`health`] | reaping and explaining exits, boot failures, hung workers, recycling |
//! | [`reload`] | generations: `HUP`, completing a reload, rolling back |
//! | [`upgrade`] | the binary upgrade (`USR2`), as the old master and as the new one |
//! | [`mold`] | with a preloaded app, each generation's template process, which loads it and forks the workers |
//!
//! What it knows of each worker beyond its pid comes from the [`Scoreboard`]: heartbeats (a
//! worker silent for `timeout` is logged with the request it is stuck in, then killed), served
//! requests and memory (for recycling). A worker due for recycling is replaced successor first:
//! it serves on until its successor is ready. Workers that die while booting make the master
//! pause before forking again, doubling the pause up to 30 s until workers stay up; during the
//! first start, one boot failure stops the server with exit code 3.

mod code_watch;
mod health;
mod mold;
mod phase;
mod pool;
mod reload;
mod upgrade;
mod workers;

use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tracing::{error, info, warn};

use self::code_watch::CodeWatch;
use self::health::BootFailures;
use self::mold::Mold;
use self::phase::{Generation, Phase, StopKind};
use self::pool::{Pool, Why, WorkerState, one_fewer, one_more};
use self::upgrade::{Ending, Handover, Program, Succession, Upgrading};
use crate::app::Factory;
use crate::config::ConfigSource;
use crate::config::{Config, MAX_WORKERS};
use crate::error::Error;
use crate::ipc::{Inbox, Message};
use crate::listener::Listeners;
use crate::logging::LogHandle;
use crate::notify::Notifier;
use crate::pidfile::Pidfile;
use crate::process;
use crate::scoreboard::Scoreboard;
use crate::signals::{MasterSignal, SignalQueue};

pub(crate) use self::phase::Shutdown;
// Where the worker has always found it; it lives with the processes, below both.
pub(crate) use crate::process::KILL_MARGIN;

/// How long a worker told to exit at once may take before it is killed.
const FAST_STOP_GRACE: Duration = Duration::from_secs(1);
/// A wake-up this much later than asked for means the master itself was stopped or starved of
/// CPU.
const LATE_WAKE: Duration = Duration::from_millis(500);

/// Everything the master owns.
pub(crate) struct Master<'f, F> {
    /// Where a reload re-reads the config from; `None` for a config given in code.
    source: Option<ConfigSource>,
    /// The newest generation: the one being started by a reload, or the one serving.
    current: Generation,
    /// The number the next generation gets: generations are never renumbered or reused.
    next_generation: u64,
    listeners: Listeners,
    /// `None` only in a forked worker, which has taken it.
    signals: Option<SignalQueue>,
    /// `None` only in a forked worker, which has taken it.
    inbox: Option<Inbox>,
    /// The workers and the pause before forking.
    pool: Pool,
    next_id: u64,
    phase: Phase,
    /// Workers failing to boot one after another for the same cause, outside a first start
    /// or a reload: logged in full once, then summed up (see [`Master::boot_failed`]).
    boot_failures: Option<BootFailures>,
    /// When the loop asked to be woken at the latest, and when it last resumed after being
    /// stopped (SIGSTOP, a paused container): workers are given `timeout` from then to beat
    /// again, as their silence was the master's own.
    wake_by: Instant,
    resumed: Instant,
    /// When the loop's current turn began (see [`Master::notice_pause`]).
    turn_started: Instant,
    scoreboard: Scoreboard,
    notifier: Option<Notifier>,
    /// This master's own binary upgrade (`USR2`), as the old master. Idle once it stops: the
    /// stop ends it, and a hand-over is then recorded as the stop's kind.
    upgrading: Upgrading,
    /// Whether this master is in charge, or replaces one that may still serve.
    succession: Succession,
    program: Option<Program>,
    /// The master this one replaces, for as long as it lives (it may drain after this one took
    /// charge): once it is gone, its `PIDFILE.oldbin` is removed if it left it behind (killed).
    old_master: Option<Pid>,
    /// Why the master is stopping on its own, reported as its exit status.
    failure: Option<Error>,
    log: LogHandle,
    pidfile: Option<Pidfile>,
    factory: &'f F,
    pid: Pid,
    /// The files `python.reload` watches, for the current generation.
    code_watch: Option<CodeWatch>,
    /// The molds of the generations that preload their app (see [`mold`]).
    molds: Vec<Mold>,
    /// Whether the master is a child subreaper, as it becomes before its first mold.
    adopting: bool,
}

/// What the master needs from [`crate::Server::run`]: made before anything is bound, so that a
/// signal arriving while the server starts is queued, not fatal.
pub(crate) struct Plumbing {
    pub(crate) signals: SignalQueue,
    pub(crate) inbox: Inbox,
    pub(crate) scoreboard: Scoreboard,
    /// The service manager's notification socket, if any.
    notifier: Option<Notifier>,
    /// The old master's channel, if this master was started by a binary upgrade.
    handover: Option<Handover>,
    /// The program to start on `USR2`.
    program: Option<Program>,
}

impl Plumbing {
    pub(crate) fn new() -> Result<Plumbing, Error> {
        Ok(Plumbing {
            signals: SignalQueue::install()
                .map_err(|e| Error::os("installing signal handlers", e))?,
            inbox: Inbox::new().map_err(|e| Error::os("creating the worker socket", e))?,
            scoreboard: Scoreboard::new().map_err(|e| Error::os("mapping the scoreboard", e))?,
            notifier: Notifier::from_env(),
            handover: Handover::from_env(),
            program: Program::current(),
        })
    }
}

impl<'f, F: Factory> Master<'f, F> {
    pub(crate) fn new(
        plumbing: Plumbing,
        source: Option<ConfigSource>,
        config: Config,
        listeners: Listeners,
        log: LogHandle,
        pidfile: Option<Pidfile>,
        factory: &'f F,
    ) -> Self {
        let now = Instant::now();
        Master {
            source,
            current: Generation {
                number: 1,
                target: config.server.workers.resolve(),
                config: std::sync::Arc::new(config),
            },
            next_generation: 2,
            listeners,
            signals: Some(plumbing.signals),
            inbox: Some(plumbing.inbox),
            pool: Pool::new(now),
            next_id: 1,
            phase: Phase::new(),
            boot_failures: None,
            wake_by: now,
            resumed: now,
            turn_started: now,
            scoreboard: plumbing.scoreboard,
            notifier: plumbing.notifier,
            old_master: plumbing.handover.as_ref().map(|h| h.old_master),
            succession: plumbing.handover.map_or(Succession::InCharge, Succession::TakingOver),
            program: plumbing.program,
            upgrading: Upgrading::Idle,
            failure: None,
            log,
            pidfile,
            factory,
            pid: nix::unistd::getpid(),
            code_watch: None,
            molds: Vec::new(),
            adopting: false,
        }
    }

    /// Runs until the server has stopped.
    pub(crate) fn run(mut self) -> Result<(), Error> {
        info!(pid = self.pid.as_raw(), workers = self.current.target, "master started");
        warn_fd_headroom(&self.current.config);
        self.publish_generation();
        self.turn_started = Instant::now();
        // The first look at the app's files comes before any worker imports them: an edit
        // saved while they boot is then a change like any later one.
        self.watch_code();
        loop {
            // Before any fork of this turn: what a worker inherits is the current window's.
            crate::tls::tickets::advance();
            self.recycle_workers();
            self.manage_molds();
            self.manage_workers();
            self.murder_hung();
            self.murder_overdue();
            if self.phase.is_stopping() && self.pool.workers.is_empty() && self.molds.is_empty() {
                break;
            }
            self.sleep();
            self.notice_pause(self.wake_by);
            self.handle_signals();
            // Reads the workers' messages first, then collects the dead.
            self.reap_workers();
            self.check_upgrade();
            self.check_predecessor();
            self.watch_code();
        }
        self.close_listeners();
        if let Some(pidfile) = self.pidfile.take() {
            pidfile.remove();
        }
        info!("master exiting");
        self.failure.map_or(Ok(()), Err)
    }

    /// Waits for a signal, a worker's message, or the nearest deadline.
    fn sleep(&mut self) {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(1);
        for w in &self.pool.workers {
            match &w.state {
                WorkerState::Exiting { deadline, .. } => wake = wake.min(*deadline),
                WorkerState::Killed { .. } => {}
                WorkerState::Booting { .. } | WorkerState::Ready { .. } => {
                    if let Some(at) = self.next_check(w, now) {
                        wake = wake.min(at);
                    }
                }
            }
        }
        // A generation waiting for its mold forks once the mold says it is ready.
        let forkable: Vec<_> =
            self.wanted().into_iter().filter(|g| self.can_fork(g.number)).collect();
        if let Some(fork) = self.pool.next_fork(&forkable, now) {
            wake = wake.min(fork);
        }
        if let Some(watch) = &self.code_watch {
            wake = wake.min(watch.next());
        }
        if let Some(at) = self.next_mold_check() {
            wake = wake.min(at.max(now));
        }
        let booting = self.upgrading.booting();
        if let Some((_, deadline)) = booting {
            wake = wake.min(deadline.max(now));
        }
        self.wake_by = wake;
        let timeout = wake.saturating_duration_since(now);
        // Round up, so that the loop does not wake just before a deadline and spin.
        let millis = timeout.as_micros().div_ceil(1000);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        let (Some(signals), Some(inbox)) = (&self.signals, &self.inbox) else { return };
        let mut fds = vec![
            PollFd::new(signals.fd(), PollFlags::POLLIN),
            PollFd::new(inbox.fd(), PollFlags::POLLIN),
        ];
        fds.extend(booting.map(|(s, _)| PollFd::new(s.fd(), PollFlags::POLLIN)));
        fds.extend(self.mold_lines().into_iter().map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
        // EINTR is the usual way a signal ends the wait; the loop looks at the signals anyway.
        let _ = poll(&mut fds, timeout);
    }

    /// Notices that the master was not running (stopped with its process group, a paused
    /// container, a starved machine): the workers did not beat meanwhile either, most likely.
    /// Looked at as the loop wakes, against the time it asked to be woken by, and again before
    /// any worker is judged by its heartbeats ([`Master::murder_hung`]), against the time the
    /// turn began: a stop in the middle of a turn would otherwise be found only at the next
    /// wake, after the hung check had taken the workers' silence during it for theirs.
    pub(super) fn notice_pause(&mut self, since: Instant) {
        let now = Instant::now();
        let late = now.saturating_duration_since(since);
        self.turn_started = now;
        if late >= LATE_WAKE {
            warn!(
                "the master did not run for {:.1} s more than it slept (stopped or starved): \
                 workers get a full timeout to send a heartbeat again",
                late.as_secs_f64()
            );
            self.resumed = now;
        }
    }

    /// Acts on what workers said.
    fn read_messages(&mut self) {
        let Some(inbox) = &self.inbox else { return };
        for message in inbox.receive() {
            match message {
                Message::Ready { worker } => self.worker_ready(worker),
                Message::BootFailed { worker, reason } => {
                    let state = self.pool.get_mut(worker).map(|w| &mut w.state);
                    if let Some(WorkerState::Booting { error }) = state {
                        *error = Some(reason);
                    }
                }
                Message::Recycle { worker, requests } => {
                    self.recycle(worker, pool::Recycle::Requests { served: requests });
                }
                Message::OverMemory { worker, rss_kib } => {
                    let generation = self.pool.get(worker).map(|w| w.generation);
                    let config = generation.and_then(|g| self.generation(g));
                    let limit = config.map_or(0, |g| g.config.server.max_worker_memory);
                    let reason = pool::Recycle::Memory { rss_mib: rss_kib / 1024, limit };
                    self.recycle(worker, reason);
                }
                Message::Retire { worker, reason } => {
                    self.recycle(worker, pool::Recycle::App { reason });
                }
            }
        }
        self.read_molds();
        self.finish_reload();
    }

    fn handle_signals(&mut self) {
        let Some(signals) = &mut self.signals else { return };
        for signal in signals.take() {
            match signal {
                // Reaping happens on every turn; the signal only woke the loop.
                MasterSignal::Chld => {}
                MasterSignal::Int | MasterSignal::Quit => self.stop(Shutdown::Fast),
                MasterSignal::Term => self.stop(Shutdown::Graceful),
                _ if self.phase.is_stopping() => info!(?signal, "ignoring signal: shutting down"),
                MasterSignal::Hup => self.reload(),
                MasterSignal::Ttin => match one_more(self.current.target) {
                    Some(target) => {
                        self.current.target = target;
                        info!(workers = target, "ttin: one more worker");
                    }
                    None => warn!(
                        workers = self.current.target,
                        "ttin ignored: {MAX_WORKERS} workers is the most a reload has room for"
                    ),
                },
                MasterSignal::Ttou => match one_fewer(self.current.target) {
                    Some(target) => {
                        self.current.target = target;
                        info!(workers = target, "ttou: one fewer worker");
                    }
                    None => info!("ttou ignored: one worker is the minimum"),
                },
                MasterSignal::Usr1 => self.reopen_logs(),
                MasterSignal::Usr2 => self.upgrade_binary(),
                MasterSignal::Winch => self.stop_workers(),
            }
        }
    }

    /// `USR1`: reopens the log file at its path (logrotate renamed it), then has every worker
    /// and mold reopen theirs. A file that cannot be opened is logged, and the old one kept.
    fn reopen_logs(&mut self) {
        let access = self.current.config.log.access.as_deref();
        let access = access.filter(|a| !crate::config::is_stdout(a));
        match (self.log.file(), self.log.reopen()) {
            (None, _) if access.is_none() => {
                info!("usr1: logs go to stderr, there is no file to reopen")
            }
            (None, _) => {}
            (Some(file), Ok(())) => info!(file = %file.display(), "usr1: log file reopened"),
            (Some(_), Err(e)) => {
                error!("usr1: cannot reopen the log file, writing on to the old one: {e}")
            }
        }
        if let Some(access) = access {
            info!(file = %access.display(), "usr1: the workers reopen the access log");
        }
        let molds = self.molds.iter().map(|m| m.pid);
        for pid in self.pool.workers.iter().map(|w| w.pid).chain(molds) {
            process::send(pid, Signal::SIGUSR1);
        }
    }

    /// With `python.reload`, reloads when a watched file changed (see [`CodeWatch`]).
    fn watch_code(&mut self) {
        if !self.current.config.python.reload || self.phase.is_stopping() {
            self.code_watch = None;
            return;
        }
        let generation = self.current.number;
        if self.code_watch.as_ref().is_none_or(|w| w.generation != generation) {
            let config = self.source.as_ref().and_then(ConfigSource::path);
            let mut watch = CodeWatch::new(generation, config, &self.current.config.python);
            // What the new generation imported is the files as they were when the reload
            // began, not as they are now: an edit saved while it booted is still a change.
            if let Some(before) = self.code_watch.take() {
                watch.since(before);
            }
            self.code_watch = Some(watch);
        }
        let changed = self.code_watch.as_mut().and_then(|w| w.changed(Instant::now()));
        if let Some(file) = changed {
            info!(file = %file.display(), "a watched file changed: reloading (python.reload)");
            self.reload();
        }
    }

    /// Stops the server: closes the listeners (or leaves them to a new master that serves) and
    /// tells every worker to exit.
    fn stop(&mut self, how: Shutdown) {
        self.stop_as(self.phase.stop_for(how, self.upgrading.successor_serves()));
    }

    /// [`Master::stop`], of a kind: a hand-over leaves the sockets to a new master.
    fn stop_as(&mut self, kind: StopKind) {
        let how = kind.workers();
        if !self.phase.stop_changes(how) {
            return;
        }
        info!(mode = %how.as_str(), "shutting down");
        self.phase.stop(kind);
        self.close_listeners();
        let ending = self.upgrading.end();
        if let Some(n) = self.notifier() {
            match (&ending, kind) {
                // A manual upgrade committed: the service is the new master's from now.
                (Ending::Committed { new_master }, _) => {
                    n.send(&format!("MAINPID={}\nREADY=1", new_master.as_raw()));
                }
                (_, StopKind::HandOver(_)) => {}
                _ => n.stopping(),
            }
        }
        if let Ending::Abandoned(successor) = ending {
            self.stop_successor(successor, "this master is stopping");
        }
        match how {
            Shutdown::Graceful => {
                let ids: Vec<u64> = self.pool.workers.iter().map(|w| w.id).collect();
                for id in ids {
                    self.retire_worker(id, Why::Stop(how));
                }
            }
            Shutdown::Fast => {
                let deadline = deadline(FAST_STOP_GRACE);
                for w in &mut self.pool.workers {
                    if let WorkerState::Killed { .. } = w.state {
                        continue;
                    }
                    if matches!(w.state, WorkerState::Exiting { .. })
                        && w.why().is_some_and(Why::is_kill)
                    {
                        // Being aborted (hung, or not ready in time): an INT, delivered before
                        // the pending ABRT, would end it before it says where it was stuck.
                        // SIGKILL follows at its own, shorter deadline.
                        continue;
                    }
                    process::send(w.pid, Signal::SIGINT);
                    let why = match w.why() {
                        // A hung worker keeps its reason; it gets the shorter deadline.
                        Some(why) if why.is_kill() => why.clone(),
                        _ => Why::Stop(how),
                    };
                    w.state = WorkerState::Exiting { deadline, why };
                }
            }
        }
    }

    /// Closes the listening sockets, or, on a hand-over, only this master's copies.
    fn close_listeners(&mut self) {
        if let Some(StopKind::HandOver(_)) = self.phase.stopping() {
            self.listeners.hand_over();
        } else {
            self.listeners.close_all();
        }
    }

    /// Tells the service manager that every worker is ready, if this master speaks for the
    /// service: once its first generation was ready, and no older master may still serve.
    fn notify_ready(&self) {
        if let Some(n) = self.notifier() {
            n.ready(self.current.target);
        }
    }

    /// The notifier, if this master speaks for the service.
    fn notifier(&self) -> Option<&Notifier> {
        let speaks = self.phase.announced() && matches!(self.succession, Succession::InCharge);
        self.notifier.as_ref().filter(|_| speaks)
    }
}

/// Warns when `worker_connections` is more than the open-files limit (already raised to its
/// hard limit, see [`process::raise_fd_limit`]) lets a worker hold: past that, accepts fail
/// with "Too many open files" however few requests are in progress.
fn warn_fd_headroom(config: &Config) {
    let Some(limit) = process::open_files_limit() else { return };
    let statics = config.route_descriptors();
    // The metrics endpoint's socket, and the scrapes a worker serves at once.
    let metrics = config.metrics.bind.as_ref().map_or(0, |_| 1 + crate::metrics::SCRAPES_AT_ONCE);
    let listeners = config.server.bind.len() + metrics;
    let allowed = process::connections_allowed(limit, listeners, statics);
    let wanted = u64::from(config.server.worker_connections);
    if wanted > allowed {
        warn!(
            worker_connections = wanted,
            open_files_limit = limit,
            "worker_connections is more than the open-files limit allows: about {allowed} \
             connections per worker (each is a descriptor, and a worker keeps {} for itself); \
             beyond that, accepts fail with \"Too many open files\". Raise the hard limit \
             (ulimit -Hn, LimitNOFILE=) or lower worker_connections",
            limit - allowed.min(limit)
        );
    }
}

/// `now + after`, saturating far in the future instead of overflowing.
fn deadline(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after).unwrap_or(now + Duration::from_secs(86_400 * 365))
}
