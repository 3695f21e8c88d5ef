//! The master: it forks workers, supervises them and acts on signals, and never serves a request.
//!
//! It is a plain single-threaded loop, with no async runtime and no threads, so that forking is
//! always safe. Each turn it sleeps in poll(2) on the signal self-pipe and the workers' message
//! socket until something happens or the nearest deadline passes, then acts: read what workers
//! said, act on signals, reap the dead, and bring the workers to what is wanted. Its verbs:
//! [`Master::spawn_worker`], [`Master::reap_workers`], [`Master::manage_workers`],
//! [`Master::retire_worker`], [`Master::murder_hung`], [`Master::recycle_workers`],
//! [`Master::murder_overdue`], [`Master::reload`], [`Master::finish_reload`],
//! [`Master::roll_back`], [`Master::stop`].
//!
//! What it knows of each worker beyond its pid comes from the [`Scoreboard`]: heartbeats (a
//! worker silent for `timeout` is logged with the request it is stuck in, then killed), served
//! requests and memory (for recycling). A worker due for recycling is replaced successor first:
//! it serves on until its successor is ready. Workers that die while booting make the master
//! pause before forking again, doubling the pause up to 30 s until workers stay up; during the
//! first start, one boot failure stops the server with exit code 3.
//!
//! Workers belong to a *generation*: the config they were started with. A reload starts a new
//! generation beside the serving one; the serving one is stopped only once every new worker is
//! ready, is kept at strength meanwhile, and serves on alone if the new one cannot boot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;
use tracing::{debug, error, info, warn};

use crate::app::{Factory, WorkerContext};
use crate::cli::ConfigSource;
use crate::config::{Action, Config, MAX_WORKERS, ServerConfig, UpgradeMode};
use crate::error::Error;
use crate::ipc::{Inbox, Message};
use crate::listener::Listeners;
use crate::logging::LogHandle;
use crate::notify::Notifier;
use crate::pidfile::Pidfile;
use crate::process::{self, Exit, Forked};
use crate::scoreboard::{SLOTS, Scoreboard};
use crate::signals::{MasterSignal, SignalQueue};
use crate::upgrade::{Handover, Heard, Program, Upgrade};
use crate::worker::{self, EXIT_BOOT_FAILED, Setup};

/// How the server stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shutdown {
    /// `TERM`: stop accepting, let in-flight requests finish (up to `graceful_timeout`).
    Graceful,
    /// `INT`, `QUIT`: workers exit at once.
    Fast,
}

impl Shutdown {
    fn as_str(self) -> &'static str {
        match self {
            Shutdown::Graceful => "graceful",
            Shutdown::Fast => "fast",
        }
    }
}

/// How long a worker told to exit at once may take before it is killed.
const FAST_STOP_GRACE: Duration = Duration::from_secs(1);
/// How long after its own `graceful_timeout` a draining worker is killed: the worker closes
/// what remains itself at `graceful_timeout`; this kill is for a worker whose thread is stuck.
pub(crate) const KILL_MARGIN: Duration = Duration::from_secs(1);
/// The first pause before re-forking after a worker died while booting, and the cap it doubles to.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A worker that has been ready this long has "stayed up": its death is not a crash loop, and
/// once one has, the pause before forking is reset.
const STABLE_AFTER: Duration = Duration::from_secs(5);
/// How long a hung worker has between `SIGABRT` and `SIGKILL`.
const ABORT_GRACE: Duration = Duration::from_secs(1);
/// A wake-up this much later than asked for means the master itself was stopped or starved of
/// CPU.
const LATE_WAKE: Duration = Duration::from_millis(500);

/// The master's record of one worker.
#[derive(Debug)]
struct Worker {
    id: u64,
    pid: Pid,
    generation: u64,
    /// Its slot on the scoreboard.
    slot: usize,
    spawned: Instant,
    /// The `graceful_timeout` of the config this worker runs: the one it drains by.
    grace: Duration,
    /// When the worker said it was accepting.
    ready_at: Option<Instant>,
    /// Why the worker is to be replaced; it serves until its successor is ready.
    due: Option<Recycle>,
    /// Why its app could not start, as the worker said.
    boot_error: Option<String>,
    /// Its resident memory when it became ready, in MiB.
    boot_mib: u64,
    state: WorkerState,
}

#[derive(Debug, Clone, PartialEq)]
enum WorkerState {
    /// Serving (or booting to serve).
    Active,
    /// Told to exit (or killed) for this reason; killed if still alive at `deadline`.
    Exiting { deadline: Instant, killed: bool, why: Why },
}

/// Why a worker is being replaced while it still serves.
#[derive(Debug, Clone, PartialEq)]
enum Recycle {
    Requests { served: u64 },
    Memory { rss_mib: u64, limit: u64 },
    Lifetime { age: Duration },
}

impl std::fmt::Display for Recycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recycle::Requests { served } => write!(f, "served {served} requests (max_requests)"),
            Recycle::Memory { rss_mib, limit } => {
                write!(f, "{rss_mib} MiB resident, over max_worker_memory ({limit} MiB)")
            }
            Recycle::Lifetime { age } => {
                write!(f, "ran {:.1} s (max_worker_lifetime)", age.as_secs_f64())
            }
        }
    }
}

/// Why the master ended a worker: the second half of the line that logs its exit.
#[derive(Debug, Clone, PartialEq)]
enum Why {
    Stop(Shutdown),
    /// A newer generation took over.
    Replaced {
        by: u64,
    },
    /// A newer reload started before this worker's generation was ready.
    Superseded,
    /// Its generation could not boot; the one before serves on.
    RolledBack,
    Recycled(Recycle),
    /// One fewer worker was wanted (`TTOU`).
    Surplus,
    /// No heartbeat for this long.
    Hung {
        silent: Duration,
        timeout: Duration,
    },
    /// Not ready within `boot_timeout`.
    BootTimeout(Duration),
    /// `WINCH` after a manual upgrade.
    Winch,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Stop(how) => write!(f, "stopped: the server is shutting down ({})", how.as_str()),
            Why::Replaced { by } => write!(f, "stopped: generation {by} took over"),
            Why::Superseded => write!(f, "stopped: a newer reload superseded its generation"),
            Why::RolledBack => write!(f, "stopped: its generation was rolled back"),
            Why::Recycled(r) => write!(f, "recycled: {r}"),
            Why::Surplus => write!(f, "stopped: one fewer worker wanted (TTOU)"),
            Why::Winch => write!(f, "stopped: WINCH after a manual upgrade"),
            Why::Hung { silent, timeout } => write!(
                f,
                "hung, no heartbeat for {:.1} s (timeout {} s)",
                silent.as_secs_f64(),
                timeout.as_secs_f64()
            ),
            Why::BootTimeout(limit) => {
                write!(f, "not ready within boot_timeout ({} s)", limit.as_secs_f64())
            }
        }
    }
}

impl Why {
    /// The master killed the worker itself, for being hung or not booting.
    fn is_kill(&self) -> bool {
        matches!(self, Why::Hung { .. } | Why::BootTimeout(_))
    }
}

/// How often a streak of identical boot failures is summed up in the log.
const STILL_FAILING_EVERY: Duration = Duration::from_secs(60);

/// Boot failures in a row with the same cause: a static root deleted while the server runs, a
/// database down. Every new worker fails the same way, once per pause; the log says it once,
/// then once every [`STILL_FAILING_EVERY`] with the count, then when workers boot again.
#[derive(Debug)]
struct BootFailures {
    cause: String,
    count: u64,
    since: Instant,
    /// When the streak was last logged.
    logged: Instant,
}

/// A generation's config and size.
#[derive(Debug, Clone)]
struct Generation {
    number: u64,
    config: Arc<Config>,
    /// How many workers are wanted.
    target: usize,
}

/// A reload under way: the new generation is booting, `previous` still serves.
#[derive(Debug)]
struct Reload {
    started: Instant,
    /// The generation that served when the reload began: kept at strength until the new one is
    /// ready, and restored if it cannot boot.
    previous: Generation,
}

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
    workers: Vec<Worker>,
    next_id: u64,
    reload: Option<Reload>,
    stopping: Option<Shutdown>,
    /// Some worker has become ready since the master started.
    ever_ready: bool,
    /// The first generation has been reported fully ready.
    announced: bool,
    /// The pause before the next spawn, grown by workers that die while booting or soon after.
    backoff: Duration,
    next_spawn: Instant,
    /// When a worker last died without staying up.
    last_failure: Option<Instant>,
    /// Workers failing to boot one after another for the same cause, outside a first start
    /// or a reload: logged in full once, then summed up (see [`Master::boot_failed`]).
    boot_failures: Option<BootFailures>,
    /// When the loop asked to be woken at the latest, and when it last resumed after being
    /// stopped (SIGSTOP, a paused container): workers are given `timeout` from then to beat
    /// again, as their silence was the master's own.
    wake_by: Instant,
    resumed: Instant,
    scoreboard: Scoreboard,
    notifier: Option<Notifier>,
    handover: Option<Handover>,
    program: Option<Program>,
    /// A binary upgrade under way: the new master is booting.
    upgrade: Option<Upgrade>,
    /// A new master serves: this one stops (or, after a manual upgrade, may be stopped),
    /// leaving it the sockets.
    handed_over: bool,
    /// `WINCH` after a manual upgrade: this master keeps no workers.
    workers_stopped: bool,
    /// The master this one was started by a binary upgrade to replace, while it may still
    /// serve: until it is gone, this master does not speak for the service (`sd_notify`) and
    /// removes no unix socket path it was passed.
    predecessor: Option<Pid>,
    /// The same master, for as long as it lives (it may drain after this one took charge):
    /// once it is gone, its `PIDFILE.oldbin` is removed if it left it behind (killed).
    old_master: Option<Pid>,
    /// Why the master is stopping on its own, reported as its exit status.
    failure: Option<Error>,
    log: LogHandle,
    pidfile: Option<Pidfile>,
    factory: &'f F,
    pid: Pid,
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
        Master {
            source,
            current: Generation {
                number: 1,
                target: config.server.workers.resolve(),
                config: Arc::new(config),
            },
            next_generation: 2,
            listeners,
            signals: Some(plumbing.signals),
            inbox: Some(plumbing.inbox),
            workers: Vec::new(),
            next_id: 1,
            reload: None,
            stopping: None,
            ever_ready: false,
            announced: false,
            backoff: Duration::ZERO,
            next_spawn: Instant::now(),
            last_failure: None,
            boot_failures: None,
            wake_by: Instant::now(),
            resumed: Instant::now(),
            scoreboard: plumbing.scoreboard,
            notifier: plumbing.notifier,
            predecessor: plumbing.handover.as_ref().map(|h| h.old_master),
            old_master: plumbing.handover.as_ref().map(|h| h.old_master),
            handover: plumbing.handover,
            program: plumbing.program,
            upgrade: None,
            handed_over: false,
            workers_stopped: false,
            failure: None,
            log,
            pidfile,
            factory,
            pid: nix::unistd::getpid(),
        }
    }

    /// Runs until the server has stopped.
    pub(crate) fn run(mut self) -> Result<(), Error> {
        info!(pid = self.pid.as_raw(), workers = self.current.target, "master started");
        warn_fd_headroom(&self.current.config);
        loop {
            self.recycle_workers();
            self.manage_workers();
            self.murder_hung();
            self.murder_overdue();
            if self.stopping.is_some() && self.workers.is_empty() {
                break;
            }
            self.sleep();
            self.notice_pause();
            self.handle_signals();
            // Reads the workers' messages first, then collects the dead.
            self.reap_workers();
            self.check_upgrade();
            self.check_predecessor();
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
        for w in &self.workers {
            match &w.state {
                WorkerState::Exiting { deadline, killed: false, .. } => wake = wake.min(*deadline),
                WorkerState::Exiting { .. } => {}
                WorkerState::Active => {
                    if let Some(at) = self.next_check(w, now) {
                        wake = wake.min(at);
                    }
                }
            }
        }
        if self.spawns_pending() {
            wake = wake.min(self.next_spawn.max(now));
        }
        if let Some(upgrade) = self.upgrade.as_ref().filter(|u| !u.ready) {
            wake = wake.min(upgrade.deadline.max(now));
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
        let listening = self.upgrade.as_ref().filter(|u| !u.ready);
        fds.extend(listening.map(|u| PollFd::new(u.fd(), PollFlags::POLLIN)));
        // EINTR is the usual way a signal ends the wait; the loop looks at the signals anyway.
        let _ = poll(&mut fds, timeout);
    }

    /// Notices that the master was not running (stopped with its process group, a paused
    /// container, a starved machine): the workers did not beat meanwhile either, most likely.
    fn notice_pause(&mut self) {
        let now = Instant::now();
        let late = now.saturating_duration_since(self.wake_by);
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
                    if let Some(w) = self.workers.iter_mut().find(|w| w.id == worker) {
                        w.boot_error = Some(reason);
                    }
                }
                Message::Recycle { worker, requests } => {
                    self.recycle(worker, Recycle::Requests { served: requests });
                }
                Message::OverMemory { worker, rss_kib } => {
                    let generation = self.workers.iter().find(|w| w.id == worker);
                    let config = generation.and_then(|w| self.wanted(w.generation));
                    let limit = config.map_or(0, |g| g.config.server.max_worker_memory);
                    self.recycle(worker, Recycle::Memory { rss_mib: rss_kib / 1024, limit });
                }
            }
        }
        self.finish_reload();
    }

    fn worker_ready(&mut self, worker: u64) {
        let Some(w) = self.workers.iter_mut().find(|w| w.id == worker) else { return };
        w.ready_at = Some(Instant::now());
        w.boot_mib = self.scoreboard.rss_kib(w.slot) / 1024;
        info!(
            pid = w.pid.as_raw(),
            worker = w.id,
            generation = w.generation,
            boot_ms = w.spawned.elapsed().as_millis() as u64,
            "worker booted"
        );
        self.ever_ready = true;
        if let Some(streak) = self.boot_failures.take() {
            info!(
                failures = streak.count,
                "workers boot again, after {} failed boot(s) in {:.1} s: {}",
                streak.count,
                streak.since.elapsed().as_secs_f64(),
                streak.cause
            );
        }
        if !self.announced && self.ready_workers(self.current.number) >= self.current.target {
            self.announced = true;
            info!(workers = self.current.target, "all workers ready");
            if let Some(handover) = self.handover.take() {
                let manual = self.current.config.server.upgrade == UpgradeMode::Manual;
                let old = self.predecessor.map_or(0, Pid::as_raw);
                if self.predecessor.is_some_and(|p| nix::unistd::getppid() != p) {
                    // Killed, or crashed: there is no one to hand over from, in either mode.
                    warn!(
                        old_master = old,
                        "upgrade: this master serves; the old master is gone (it exited before \
                         the hand-over): this master is in charge"
                    );
                    self.take_charge();
                } else {
                    if !manual {
                        // The service manager must follow the main pid before the old one exits.
                        self.take_charge();
                    }
                    info!(
                        old_master = old,
                        "upgrade: this master serves; telling the old one{}",
                        if manual {
                            " (it stops when told to: manual upgrade)"
                        } else {
                            " to stop"
                        }
                    );
                    handover.ready();
                }
            }
            self.notify_ready();
        }
    }

    fn handle_signals(&mut self) {
        let Some(signals) = &mut self.signals else { return };
        for signal in signals.take() {
            match signal {
                // Reaping happens on every turn; the signal only woke the loop.
                MasterSignal::Chld => {}
                MasterSignal::Int | MasterSignal::Quit => self.stop(Shutdown::Fast),
                MasterSignal::Term => self.stop(Shutdown::Graceful),
                _ if self.stopping.is_some() => info!(?signal, "ignoring signal: shutting down"),
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
                MasterSignal::Ttou if self.current.target > 1 => {
                    self.current.target -= 1;
                    info!(workers = self.current.target, "ttou: one fewer worker");
                }
                MasterSignal::Ttou => info!("ttou ignored: one worker is the minimum"),
                MasterSignal::Usr1 => info!("usr1: logs go to stderr, there is no file to reopen"),
                MasterSignal::Usr2 => self.upgrade_binary(),
                MasterSignal::Winch => self.stop_workers(),
            }
        }
    }

    /// Collects exited workers and explains each exit in one line.
    fn reap_workers(&mut self) {
        // Collect the dead first, then read what workers said: every message a dead worker
        // sent is waiting by now, so one that said it was ready and then died is not taken
        // for one that died while booting.
        let dead: Vec<_> = std::iter::from_fn(process::reap_one).collect();
        self.read_messages();
        for (pid, exit) in dead {
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                if self.upgrade.as_ref().is_some_and(|u| u.pid == pid) {
                    self.upgrade_failed(&format!("the new master exited: {exit}"));
                } else {
                    debug!(pid = pid.as_raw(), "reaped a process that was not a worker: {exit}");
                }
                continue;
            };
            let w = self.workers.remove(i);
            self.scoreboard.release(w.slot);
            let (pid, worker, generation) = (pid.as_raw(), w.id, w.generation);
            match &w.state {
                WorkerState::Exiting { why, .. } if why.is_kill() => {
                    error!(
                        pid,
                        worker, generation, "worker exited: {exit}, killed by the master: {why}"
                    );
                }
                WorkerState::Exiting { killed: true, why, .. } => warn!(
                    pid,
                    worker,
                    generation,
                    "worker exited: {exit}, by the master, as it did not stop in time ({why})"
                ),
                WorkerState::Exiting { why, .. } if exit == Exit::Code(0) => {
                    info!(pid, worker, generation, "worker exited: {exit}, {why}");
                }
                WorkerState::Exiting { why, .. } => {
                    warn!(pid, worker, generation, "worker exited: {exit} while being {why}");
                }
                WorkerState::Active if w.ready_at.is_none() => {
                    let cause = match (&w.boot_error, exit) {
                        (Some(reason), _) => reason.clone(),
                        (None, Exit::Code(EXIT_BOOT_FAILED)) => "its app failed to start".into(),
                        (None, _) => format!("{exit} while booting{}", oom_hint(exit)),
                    };
                    if self.repeats_boot_failure(generation, &cause) {
                        debug!(
                            pid,
                            worker, generation, "worker exited: {exit}, boot failure: {cause}"
                        );
                    } else {
                        error!(
                            pid,
                            worker, generation, "worker exited: {exit}, boot failure: {cause}"
                        );
                    }
                    self.boot_failed(pid, worker, generation, &cause);
                }
                WorkerState::Active
                    if generation == self.current.number && self.reload.is_some() =>
                {
                    // A new generation that crashes before it has taken over is not trusted.
                    error!(pid, worker, generation, "worker died unexpectedly: {exit}");
                    self.roll_back(&format!(
                        "worker {worker} of generation {generation} died before the reload \
                         completed: {exit}"
                    ));
                }
                WorkerState::Active => {
                    let replaced = self.wanted(generation).is_some();
                    let next = if replaced { "; replacing it" } else { "" };
                    let hint = oom_hint(exit);
                    error!(pid, worker, generation, "worker died unexpectedly: {exit}{hint}{next}");
                    let up = w.ready_at.map_or(Duration::ZERO, |t| t.elapsed());
                    if up < STABLE_AFTER {
                        self.pause_forking(&format!(
                            "worker died {:.1} s after booting",
                            up.as_secs_f64()
                        ));
                    }
                }
            }
        }
    }

    /// A worker could not boot: during the first start, that stops the server; during a reload,
    /// the new generation is given up; otherwise the next fork waits a little longer.
    fn boot_failed(&mut self, pid: i32, worker: u64, generation: u64, cause: &str) {
        if self.stopping.is_some() {
            return;
        }
        if generation == self.current.number && self.reload.is_some() {
            return self.roll_back(&format!(
                "worker {worker} of generation {generation} could not start its app: {cause}"
            ));
        }
        if !self.announced {
            self.failure = Some(Error::Boot(format!("worker {worker} (pid {pid}): {cause}")));
            return self.stop(Shutdown::Fast);
        }
        let now = Instant::now();
        let Some(streak) = self.boot_failures.as_mut().filter(|s| s.cause == cause) else {
            self.boot_failures =
                Some(BootFailures { cause: cause.into(), count: 1, since: now, logged: now });
            return self.pause_forking("worker failed to boot");
        };
        streak.count += 1;
        let summary = now.duration_since(streak.logged) >= STILL_FAILING_EVERY;
        if summary {
            streak.logged = now;
        }
        let (count, since) = (streak.count, streak.since);
        let delay_ms = self.delay_next_fork().as_millis() as u64;
        if summary {
            error!(
                failures = count,
                delay_ms,
                "workers still fail to boot: {count} times in {:.0} s, each time: {cause}",
                now.duration_since(since).as_secs_f64()
            );
        } else {
            debug!(
                failures = count,
                delay_ms, "worker failed to boot again: pausing before the next fork"
            );
        }
    }

    /// Whether a boot failure of a worker of `generation` is one more of a streak already
    /// logged (see [`BootFailures`]), to be logged at debug level only.
    fn repeats_boot_failure(&self, generation: u64, cause: &str) -> bool {
        let reloading = generation == self.current.number && self.reload.is_some();
        self.announced
            && !reloading
            && self.boot_failures.as_ref().is_some_and(|s| s.cause == cause)
    }

    /// Makes the next fork wait, twice as long as the last time, up to [`BACKOFF_MAX`]. Failures
    /// within one pause are one incident: workers that die together double it once.
    fn pause_forking(&mut self, why: &str) {
        let delay = self.delay_next_fork();
        warn!(delay_ms = delay.as_millis() as u64, "{why}: pausing before the next fork");
    }

    /// [`Master::pause_forking`] without its log line; returns the pause.
    fn delay_next_fork(&mut self) -> Duration {
        let now = Instant::now();
        if self.last_failure.is_none_or(|t| now.duration_since(t) >= self.backoff) {
            self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
            self.last_failure = Some(now);
        }
        self.next_spawn = self.next_spawn.max(now + self.backoff);
        self.backoff
    }

    /// Brings each generation that should be serving to its size: the current one, and, while
    /// a reload is under way, the previous one, whose dead workers are replaced until the new
    /// generation takes over. A worker due for recycling counts as gone: its successor is
    /// started, and it is stopped once the successor is ready.
    fn manage_workers(&mut self) {
        if self.stopping.is_some() || self.workers_stopped {
            return;
        }
        self.forgive_failures();
        let mut generations = vec![self.current.clone()];
        generations.extend(self.reload.as_ref().map(|r| r.previous.clone()));
        for generation in generations {
            let fresh = self.fresh_workers(generation.number);
            if fresh < generation.target {
                if Instant::now() < self.next_spawn {
                    continue;
                }
                // After failures, one at a time, each after the pause.
                let wanted = if self.backoff.is_zero() { generation.target - fresh } else { 1 };
                for _ in 0..wanted {
                    self.spawn_worker(&generation);
                }
                if !self.backoff.is_zero() {
                    self.next_spawn = Instant::now() + self.backoff;
                }
            } else if fresh > generation.target {
                // Workers still booting go first (newest first), then the oldest ready ones:
                // the ready workers never drop below the target.
                let mut candidates: Vec<&Worker> = self
                    .workers
                    .iter()
                    .filter(|w| w.generation == generation.number && w.is_fresh())
                    .collect();
                candidates.sort_by_key(|w| match w.ready_at {
                    None => (0, u64::MAX - w.id),
                    Some(_) => (1, w.id),
                });
                let surplus: Vec<u64> =
                    candidates.iter().take(fresh - generation.target).map(|w| w.id).collect();
                for id in surplus {
                    self.retire_worker(id, Why::Surplus);
                }
            }
            self.retire_replaced(&generation);
        }
        self.finish_reload();
    }

    /// Stops the workers due for recycling whose successors are ready, keeping the ready
    /// workers of the generation at its size.
    fn retire_replaced(&mut self, generation: &Generation) {
        let serving = |w: &&Worker| w.generation == generation.number && w.is_active();
        let ready = self.workers.iter().filter(serving).filter(|w| w.ready_at.is_some()).count();
        // Each ready worker beyond the target lets one due worker go; one not ready yet goes
        // at once, as it serves nothing.
        let mut spare = ready.saturating_sub(generation.target);
        let mut going = Vec::new();
        for w in self.workers.iter().filter(serving) {
            let Some(reason) = &w.due else { continue };
            if w.ready_at.is_none() {
                going.push((w.id, reason.clone()));
            } else if spare > 0 {
                spare -= 1;
                going.push((w.id, reason.clone()));
            }
        }
        for (id, reason) in going {
            self.retire_worker(id, Why::Recycled(reason));
        }
    }

    /// Marks a worker as due for recycling: its successor is started, at once unless
    /// recycling it this soon after it booted looks like a fork loop (see [`too_soon`]): then
    /// the successor waits the crash pause, while the worker serves on. Every recycling goes
    /// through here, whoever found it due: the worker itself (`max_requests`, and
    /// `max_worker_memory` within milliseconds) or the master (memory at a heartbeat,
    /// `max_worker_lifetime`).
    fn recycle(&mut self, id: u64, reason: Recycle) {
        let Some(w) = self.workers.iter().find(|w| w.id == id) else { return };
        if !w.is_fresh() {
            return;
        }
        let up = w.ready_at.map_or(Duration::ZERO, |t| t.elapsed());
        let (pid, generation, boot_mib) = (w.pid.as_raw(), w.generation, w.boot_mib);
        match too_soon(&reason, up, boot_mib) {
            Some(TooSoon::LimitTooLow) => {
                error!(
                    worker = id,
                    boot_mib, "{reason} within seconds of booting: the limit is too low"
                );
                self.pause_forking("recycling right after boot");
            }
            Some(TooSoon::SoonAfterBoot) => self.pause_forking(&format!(
                "recycling worker {id} {:.1} s after it booted ({reason})",
                up.as_secs_f64()
            )),
            None => {}
        }
        info!(
            pid,
            worker = id,
            generation,
            "recycling worker: {reason}; starting its successor first"
        );
        if let Some(w) = self.workers.iter_mut().find(|w| w.id == id) {
            w.due = Some(reason);
        }
    }

    /// Finds the workers over `max_worker_memory` or `max_worker_lifetime`. Each worker also
    /// says itself when it reaches `max_requests`, and when it finds itself over
    /// `max_worker_memory` as a request starts or at its heartbeat, which is sooner than the
    /// master reads it.
    fn recycle_workers(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let mut due = Vec::new();
        for w in self.workers.iter().filter(|w| w.is_fresh() && w.ready_at.is_some()) {
            let Some(server) = self.wanted(w.generation).map(|g| &g.config.server) else {
                continue;
            };
            let age = w.spawned.elapsed();
            if ServerConfig::limit(server.max_worker_lifetime).is_some_and(|max| age >= max) {
                due.push((w.id, Recycle::Lifetime { age }));
                continue;
            }
            let limit = server.max_worker_memory;
            let rss_mib = self.scoreboard.rss_kib(w.slot) / 1024;
            if limit > 0 && rss_mib > limit {
                due.push((w.id, Recycle::Memory { rss_mib, limit }));
            }
        }
        for (id, reason) in due {
            self.recycle(id, reason);
        }
    }

    /// Kills the workers whose event loop stopped beating for `timeout` (`SIGABRT`, then
    /// `SIGKILL` if that is not enough), and the ones not ready within `boot_timeout`. Each is
    /// logged with what the scoreboard shows it was doing.
    fn murder_hung(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let mut hung = Vec::new();
        for w in self.workers.iter().filter(|w| w.is_active()) {
            let Some(server) = self.wanted(w.generation).map(|g| &g.config.server) else {
                continue;
            };
            match w.ready_at {
                Some(_) => {
                    let Some(timeout) = ServerConfig::limit(server.timeout) else { continue };
                    let silent = self.scoreboard.since_heartbeat(w.slot);
                    // Silence while the master was stopped is not counted.
                    let silent = silent.map(|s| s.min(self.resumed.elapsed()));
                    match silent {
                        Some(silent) if silent >= timeout => {
                            let activity = self.scoreboard.read(w.slot).activity();
                            hung.push((w.id, Why::Hung { silent, timeout }, activity));
                        }
                        _ => {}
                    }
                }
                None => {
                    let Some(limit) = ServerConfig::limit(server.boot_timeout) else { continue };
                    if w.spawned.elapsed() >= limit {
                        hung.push((w.id, Why::BootTimeout(limit), String::new()));
                    }
                }
            }
        }
        for (id, why, activity) in hung {
            if self.stopping.is_some() {
                // A boot failure stopped the server; the stop deals with the rest.
                break;
            }
            // An earlier one may have rolled back a reload, retiring this one's generation.
            let generation = self.workers.iter().find(|w| w.id == id).map(|w| w.generation);
            if generation.is_none_or(|g| self.wanted(g).is_none()) {
                continue;
            }
            let Some(w) = self.workers.iter_mut().find(|w| w.id == id && w.is_active()) else {
                continue;
            };
            let (pid, worker, generation) = (w.pid.as_raw(), w.id, w.generation);
            let up = w.ready_at.map_or(Duration::ZERO, |t| t.elapsed());
            match &why {
                Why::Hung { silent, .. } => {
                    let stopped = if process::is_stopped(w.pid) {
                        "; the process is stopped (SIGSTOP or job control)"
                    } else {
                        ""
                    };
                    error!(
                        pid,
                        worker,
                        generation,
                        "worker timed out: no heartbeat for {:.1} s; {activity}{stopped}; killing \
                         it with SIGABRT",
                        silent.as_secs_f64()
                    );
                    process::send(w.pid, Signal::SIGABRT);
                    w.state = WorkerState::Exiting {
                        deadline: deadline(ABORT_GRACE),
                        killed: false,
                        why,
                    };
                    // Workers that hang soon after booting are a crash loop as much as workers
                    // that die: their replacements wait, as theirs do (see reap_workers).
                    if up < STABLE_AFTER {
                        self.pause_forking(&format!(
                            "worker killed as hung {:.1} s after booting",
                            up.as_secs_f64()
                        ));
                    }
                }
                _ => {
                    error!(pid, worker, generation, "worker {why}, killing it with SIGKILL");
                    process::send(w.pid, Signal::SIGKILL);
                    w.state = WorkerState::Exiting {
                        deadline: deadline(ABORT_GRACE),
                        killed: true,
                        why: why.clone(),
                    };
                    self.boot_failed(pid, worker, generation, &why.to_string());
                }
            }
        }
    }

    /// Clears the pause before forking once a worker started since the last failure has stayed
    /// up for [`STABLE_AFTER`].
    fn forgive_failures(&mut self) {
        let Some(failed) = self.last_failure else { return };
        let stable = self.workers.iter().any(|w| {
            w.is_active() && w.ready_at.is_some_and(|t| t > failed && t.elapsed() >= STABLE_AFTER)
        });
        if stable {
            info!("workers stay up again: no more pause before forking");
            self.backoff = Duration::ZERO;
            self.last_failure = None;
            self.next_spawn = Instant::now();
        }
    }

    /// The next time a serving or booting worker needs looking at: its boot deadline, when its
    /// heartbeat would be overdue, or when it reaches `max_worker_lifetime`.
    fn next_check(&self, w: &Worker, now: Instant) -> Option<Instant> {
        let server = &self.wanted(w.generation)?.config.server;
        let mut at: Option<Instant> = None;
        let mut consider = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        match w.ready_at {
            None => {
                if let Some(limit) = ServerConfig::limit(server.boot_timeout) {
                    consider(w.spawned + limit);
                }
            }
            Some(_) => {
                if let Some(timeout) = ServerConfig::limit(server.timeout) {
                    let silent = self.scoreboard.since_heartbeat(w.slot).unwrap_or_default();
                    consider((now + timeout.saturating_sub(silent)).max(self.resumed + timeout));
                }
                if let Some(max) = ServerConfig::limit(server.max_worker_lifetime) {
                    if w.due.is_none() {
                        consider(w.spawned + max);
                    }
                }
            }
        }
        at
    }

    /// Forks a worker of `generation`.
    fn spawn_worker(&mut self, generation: &Generation) {
        let id = self.next_id;
        let Some(slot) = self.scoreboard.claim(id, generation.number) else {
            error!("cannot start a worker: all {SLOTS} scoreboard slots are taken");
            return self.pause_forking("no scoreboard slot");
        };
        self.next_id += 1;
        match process::fork() {
            Ok(Forked::Parent(pid)) => {
                debug!(
                    pid = pid.as_raw(),
                    worker = id,
                    generation = generation.number,
                    "worker spawned"
                );
                self.scoreboard.set_pid(slot, pid.as_raw() as u32);
                self.workers.push(Worker {
                    id,
                    pid,
                    generation: generation.number,
                    slot,
                    spawned: Instant::now(),
                    grace: generation.config.server.graceful_timeout.0,
                    ready_at: None,
                    due: None,
                    boot_error: None,
                    boot_mib: 0,
                    state: WorkerState::Active,
                });
            }
            Ok(Forked::Child(mask)) => self.become_worker(id, slot, generation, mask),
            Err(e) => {
                error!("cannot fork a worker: {e}");
                self.scoreboard.release(slot);
                self.pause_forking("fork failed");
            }
        }
    }

    /// In the child of a fork: hands the worker what it needs (the sockets of its generation's
    /// addresses) and drops what is the master's alone (signal handlers and self-pipe, the
    /// message socket's reading end, the sockets of other addresses).
    fn become_worker(&mut self, id: u64, slot: usize, generation: &Generation, mask: SigSet) -> ! {
        if let Some(signals) = self.signals.take() {
            if let Err(e) = signals.forget_in_worker() {
                error!("cannot reset signal handlers in a new worker: {e}");
                std::process::exit(1);
            }
        }
        let Some(inbox) = self.inbox.take() else { std::process::exit(1) };
        // The old master's channel is this master's to close, not its workers'.
        drop(self.handover.take());
        // The pidfile's lock must not outlive the master in a worker (see `pidfile`).
        if let Some(pidfile) = self.pidfile.take() {
            pidfile.close_in_worker();
        }
        let listeners = std::mem::take(&mut self.listeners);
        worker::run(Setup {
            ctx: WorkerContext::new(id, generation.number, Arc::clone(&generation.config)),
            listeners: listeners.into_sockets_for(&generation.config.server.bind),
            master: self.pid,
            signal_mask: mask,
            outbox: inbox.into_outbox(),
            factory: self.factory,
            slots: self.scoreboard.all(),
            slot,
            recycle_after: recycle_after(&generation.config.server, id),
        })
    }

    /// Tells a worker to finish its requests and exit, within its own `graceful_timeout`.
    fn retire_worker(&mut self, id: u64, why: Why) {
        let Some(w) = self.workers.iter_mut().find(|w| w.id == id) else { return };
        if !w.is_active() {
            return;
        }
        debug!(pid = w.pid.as_raw(), worker = w.id, "stopping worker gracefully: {why}");
        process::send(w.pid, Signal::SIGTERM);
        let deadline = deadline(w.grace + KILL_MARGIN);
        w.state = WorkerState::Exiting { deadline, killed: false, why };
    }

    /// Kills workers that were told to exit and have not by their deadline.
    fn murder_overdue(&mut self) {
        let now = Instant::now();
        for w in &mut self.workers {
            if let WorkerState::Exiting { deadline, killed: killed @ false, .. } = &mut w.state {
                if now >= *deadline {
                    warn!(
                        pid = w.pid.as_raw(),
                        worker = w.id,
                        "worker did not exit in time, killing it with SIGKILL"
                    );
                    process::send(w.pid, Signal::SIGKILL);
                    *killed = true;
                }
            }
        }
    }

    /// Re-reads the config and, if it is valid and its new addresses can be bound, starts a
    /// new generation with it ([`Master::finish_reload`] stops the old one once the new one is
    /// ready). If not, logs why and changes nothing.
    fn reload(&mut self) {
        let started = Instant::now();
        if self.upgrade.as_ref().is_some_and(|u| !u.ready) {
            return warn!("hup ignored: a binary upgrade is under way");
        }
        if let Some(n) = self.notifier() {
            n.reloading();
        }
        match self.source.as_ref().and_then(ConfigSource::path) {
            Some(path) => info!(config = %path.display(), "reloading"),
            None => info!("reloading"),
        }
        let config = match &self.source {
            Some(source) => source.load(),
            None => Ok((*self.current.config).clone()),
        };
        let config = match config {
            Ok(config) => config,
            Err(e) => {
                let duration_ms = started.elapsed().as_millis() as u64;
                error!(duration_ms, "reload rejected: {e}");
                return self.notify_ready();
            }
        };
        // New addresses are bound now; the ones dropped stay open until the reload completes,
        // for the old generation's replacements and in case it has to take over again.
        if let Err(e) = self.listeners.open_missing(&config.server.bind, config.server.backlog) {
            error!(duration_ms = started.elapsed().as_millis() as u64, "reload rejected: {e}");
            return self.notify_ready();
        }
        warn_fd_headroom(&config);
        let new = Generation {
            number: self.next_generation,
            target: config.server.workers.resolve(),
            config: Arc::new(config),
        };
        self.next_generation += 1;
        let superseded = std::mem::replace(&mut self.current, new);
        if let Some(reload) = &mut self.reload {
            // A reload under way is overtaken: its workers are not needed, and the generation
            // to fall back to is still the one that served before it.
            reload.started = started;
            self.retire_generation(superseded.number, Why::Superseded);
        } else {
            let mut previous = superseded;
            if self.workers_stopped {
                // After WINCH the previous generation has no workers to keep.
                previous.target = 0;
            }
            self.reload = Some(Reload { started, previous });
        }
        self.log.set_level(self.current.config.log.level);
        // After WINCH, a reload brings workers back (as in nginx).
        self.workers_stopped = false;
        // A new config may fix what made workers crash: try it at once.
        self.backoff = Duration::ZERO;
        self.next_spawn = Instant::now();
        info!(
            generation = self.current.number,
            workers = self.current.target,
            "starting new generation"
        );
    }

    /// Once every worker of the new generation is ready, stops the older ones, and closes the
    /// addresses the new config dropped.
    fn finish_reload(&mut self) {
        let Some(reload) = &self.reload else { return };
        if self.ready_workers(self.current.number) < self.current.target {
            return;
        }
        let started = reload.started;
        self.reload = None;
        let old: Vec<u64> = self
            .workers
            .iter()
            .filter(|w| w.generation != self.current.number && w.is_active())
            .map(|w| w.id)
            .collect();
        for &id in &old {
            self.retire_worker(id, Why::Replaced { by: self.current.number });
        }
        let server = &self.current.config.server;
        self.listeners.retain_only(&server.bind, server.backlog);
        self.move_pidfile();
        info!(
            generation = self.current.number,
            stopping = old.len(),
            duration_ms = started.elapsed().as_millis() as u64,
            "reload complete"
        );
        self.notify_ready();
    }

    /// The new generation cannot boot: stops it, and the previous generation serves on with
    /// its config.
    fn roll_back(&mut self, why: &str) {
        let Some(reload) = self.reload.take() else { return };
        let failed = std::mem::replace(&mut self.current, reload.previous);
        self.retire_generation(failed.number, Why::RolledBack);
        let server = &self.current.config.server;
        self.listeners.retain_only(&server.bind, server.backlog);
        self.log.set_level(self.current.config.log.level);
        error!(
            generation = failed.number,
            serving = self.current.number,
            duration_ms = reload.started.elapsed().as_millis() as u64,
            "reload failed, rolled back: {why}"
        );
        self.notify_ready();
    }

    /// `WINCH`: stops this master's workers, once a manual upgrade has a new master serving.
    /// Otherwise ignored: terminals send it to their foreground job on every resize.
    fn stop_workers(&mut self) {
        if !(self.handed_over && self.upgrade.is_some()) {
            return debug!("winch ignored: it stops the workers only after a manual upgrade");
        }
        info!("winch: stopping this master's workers; the new master serves");
        self.workers_stopped = true;
        self.reload = None;
        let ids: Vec<u64> = self.workers.iter().filter(|w| w.is_active()).map(|w| w.id).collect();
        for id in ids {
            self.retire_worker(id, Why::Winch);
        }
    }

    /// Starts a new master from this program's binary (`USR2`); it takes over once it serves.
    fn upgrade_binary(&mut self) {
        if self.upgrade.is_some() {
            return warn!("usr2 ignored: an upgrade is already under way");
        }
        if self.handover.is_some() {
            return warn!("usr2 ignored: this master is itself still taking over from another");
        }
        let Some(program) = self.program.clone() else {
            return error!("upgrade failed: the path of this program's binary is unknown");
        };
        let boot = ServerConfig::limit(self.current.config.server.boot_timeout);
        // The new master also loads its config and binds what is new before its workers boot.
        let deadline = deadline(boot.map_or(Duration::from_secs(86_400 * 365), |b| b * 2));
        self.rename_pidfile(true);
        match Upgrade::start(&program, &self.listeners, deadline) {
            Ok(upgrade) => {
                info!(
                    pid = upgrade.pid.as_raw(),
                    binary = %program.exe.display(),
                    "upgrade: started a new master"
                );
                self.upgrade = Some(upgrade);
            }
            Err(e) => {
                error!("upgrade failed: cannot start a new master: {e}");
                self.rename_pidfile(false);
            }
        }
    }

    /// Acts on what the new master of an upgrade said, or on its not being ready in time.
    fn check_upgrade(&mut self) {
        let Some(upgrade) = &mut self.upgrade else { return };
        match upgrade.hear() {
            Heard::Ready if self.current.config.server.upgrade == UpgradeMode::Manual => {
                let (old, new) = (self.pid.as_raw(), upgrade.pid.as_raw());
                upgrade.ready = true;
                self.handed_over = true;
                info!(
                    new_master = new,
                    "upgrade: the new master serves beside this one; to commit, kill -WINCH {old} \
                     (stops this master's workers), then kill -QUIT {old}; to give up, kill \
                     -QUIT {new}"
                );
            }
            Heard::Ready => {
                info!(
                    new_master = upgrade.pid.as_raw(),
                    "upgrade complete: the new master serves; stopping this one"
                );
                self.upgrade = None;
                self.handed_over = true;
                self.stop(Shutdown::Graceful);
            }
            // After a manual upgrade, the new master's exit is seen when it is reaped.
            Heard::Gone if upgrade.ready => {}
            Heard::Gone => self.upgrade_failed("the new master closed its channel (it exited)"),
            Heard::Nothing if upgrade.ready => {}
            Heard::Nothing if Instant::now() >= upgrade.deadline => {
                self.upgrade_failed("the new master was not ready in time (twice boot_timeout)");
            }
            Heard::Nothing => {}
        }
    }

    /// Gives up an upgrade: stops the new master if it still runs, and serves on.
    fn upgrade_failed(&mut self, why: &str) {
        let Some(upgrade) = self.upgrade.take() else { return };
        if upgrade.ready && self.stopping.is_some() {
            // A manual upgrade committed: the new master serves on without this one.
            return;
        }
        // This master serves again, with its workers, and speaks for the service.
        self.handed_over = false;
        self.workers_stopped = false;
        if self.stopping.is_none() {
            self.notify_ready();
        }
        // Fast stop: it and its workers exit at once; it is reaped as any child.
        process::send(upgrade.pid, Signal::SIGQUIT);
        error!(new_master = upgrade.pid.as_raw(), "upgrade failed, this master serves on: {why}");
        self.rename_pidfile(false);
    }

    /// Moves the pidfile aside to `PIDFILE.oldbin` for an upgrade, or back.
    fn rename_pidfile(&mut self, aside: bool) {
        let Some(pidfile) = &mut self.pidfile else { return };
        if let Err(e) = pidfile.rename_oldbin(aside) {
            error!(path = %pidfile.path().display(), "cannot rename the pidfile: {e}");
        }
    }

    /// Closes the listening sockets, or, once a new master serves them, only this master's
    /// copies.
    fn close_listeners(&mut self) {
        if self.handed_over {
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
        self.notifier.as_ref().filter(|_| self.announced && self.predecessor.is_none())
    }

    /// Takes charge after a binary upgrade: the old master is stopping (or gone).
    fn take_charge(&mut self) {
        if self.predecessor.take().is_some() {
            self.listeners.take_over();
        }
    }

    /// Notices that the master this one replaces is gone (after a manual upgrade, the operator
    /// stopped it): this one is in charge. Whenever it goes, removes the `PIDFILE.oldbin` it
    /// left if it was killed.
    fn check_predecessor(&mut self) {
        if let Some(old) = self.old_master.filter(|&old| nix::unistd::getppid() != old) {
            self.old_master = None;
            self.remove_stale_oldbin(old);
        }
        let Some(old) = self.predecessor else { return };
        if self.handover.is_none() && nix::unistd::getppid() != old {
            info!(old_master = old.as_raw(), "the old master is gone: this master is in charge");
            self.take_charge();
            self.notify_ready();
        }
    }

    /// Removes `PIDFILE.oldbin` once the old master is gone, if no master holds it: one that
    /// exits removes its own; one that was killed leaves it, naming a dead process.
    fn remove_stale_oldbin(&self, old: Pid) {
        let Some(pidfile) = &self.pidfile else { return };
        let oldbin = crate::pidfile::oldbin(pidfile.path());
        match crate::pidfile::remove_stale(&oldbin) {
            Ok(true) => info!(
                old_master = old.as_raw(),
                path = %oldbin.display(),
                "removed the pidfile the old master left behind"
            ),
            Ok(false) => {}
            Err(e) => {
                warn!(path = %oldbin.display(), "cannot remove the old master's pidfile: {e}")
            }
        }
    }

    /// Applies a changed `pidfile` setting: the new file is written before the old one goes.
    fn move_pidfile(&mut self) {
        if self.upgrade.is_some() {
            // The pidfile is PIDFILE.oldbin while a new master holds PIDFILE.
            return;
        }
        let wanted = self.current.config.server.pidfile.as_deref();
        if wanted == self.pidfile.as_ref().map(Pidfile::path) {
            return;
        }
        let new = match wanted.map(Pidfile::create).transpose() {
            Ok(new) => new,
            Err(e) => return error!("keeping the old pidfile: {e}"),
        };
        if let Some(old) = std::mem::replace(&mut self.pidfile, new) {
            old.remove();
        }
    }

    fn retire_generation(&mut self, number: u64, why: Why) {
        let ids: Vec<u64> = self
            .workers
            .iter()
            .filter(|w| w.generation == number && w.is_active())
            .map(|w| w.id)
            .collect();
        for id in ids {
            self.retire_worker(id, why.clone());
        }
    }

    /// Stops the server: closes the listeners and tells every worker to exit.
    fn stop(&mut self, how: Shutdown) {
        if self.stopping == Some(Shutdown::Fast) || self.stopping == Some(how) {
            return;
        }
        info!(mode = %how.as_str(), "shutting down");
        self.stopping = Some(how);
        self.reload = None;
        self.close_listeners();
        match (&self.upgrade, self.notifier()) {
            // A manual upgrade committed: the service is the new master's from now.
            (Some(u), Some(n)) if u.ready => n.send(&format!("MAINPID={}\nREADY=1", u.pid)),
            (_, Some(n)) if !self.handed_over => n.stopping(),
            _ => {}
        }
        if self.upgrade.is_some() {
            self.upgrade_failed("this master is stopping");
        }
        match how {
            Shutdown::Graceful => {
                let ids: Vec<u64> = self.workers.iter().map(|w| w.id).collect();
                for id in ids {
                    self.retire_worker(id, Why::Stop(how));
                }
            }
            Shutdown::Fast => {
                let deadline = deadline(FAST_STOP_GRACE);
                for w in &mut self.workers {
                    if let WorkerState::Exiting { killed: true, .. } = w.state {
                        continue;
                    }
                    process::send(w.pid, Signal::SIGINT);
                    let why = match &w.state {
                        // A hung worker keeps its reason; it gets the shorter deadline.
                        WorkerState::Exiting { why, .. } if why.is_kill() => why.clone(),
                        _ => Why::Stop(how),
                    };
                    w.state = WorkerState::Exiting { deadline, killed: false, why };
                }
            }
        }
    }

    /// Whether some generation that should be serving is short of workers.
    fn spawns_pending(&self) -> bool {
        self.stopping.is_none()
            && !self.workers_stopped
            && std::iter::once(&self.current)
                .chain(self.reload.as_ref().map(|r| &r.previous))
                .any(|g| self.fresh_workers(g.number) < g.target)
    }

    /// The generation with this number, if its workers are to be kept at strength.
    fn wanted(&self, number: u64) -> Option<&Generation> {
        std::iter::once(&self.current)
            .chain(self.reload.as_ref().map(|r| &r.previous))
            .find(|g| g.number == number)
    }

    /// Active workers of a generation that are not due for recycling: those that count
    /// toward its size.
    fn fresh_workers(&self, generation: u64) -> usize {
        self.workers.iter().filter(|w| w.generation == generation && w.is_fresh()).count()
    }

    /// Ready, active workers of a generation.
    fn ready_workers(&self, generation: u64) -> usize {
        self.workers
            .iter()
            .filter(|w| w.generation == generation && w.is_active() && w.ready_at.is_some())
            .count()
    }
}

impl Worker {
    fn is_active(&self) -> bool {
        self.state == WorkerState::Active
    }

    /// Active and not due for recycling.
    fn is_fresh(&self) -> bool {
        self.is_active() && self.due.is_none()
    }
}

/// Why recycling a worker this soon after it became ready would make a fork loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TooSoon {
    /// Its successor will be due at once too: a `max_worker_memory` below what a new worker
    /// uses once booted, or a `max_worker_lifetime` of seconds.
    LimitTooLow,
    /// Over `max_worker_memory` within seconds of booting: its successor may well be too (a
    /// client whose every request takes a worker over the limit).
    SoonAfterBoot,
}

/// Whether recycling a worker `up` after it became ready, for `reason`, is a sign of a fork
/// loop, and which; `boot_mib` is what it used once booted. A pure decision, so that the
/// worker's own report and the master's check apply one rule. `max_requests` is not: each
/// recycling takes that many requests, whose pace is the clients'.
fn too_soon(reason: &Recycle, up: Duration, boot_mib: u64) -> Option<TooSoon> {
    if up >= STABLE_AFTER {
        return None;
    }
    match reason {
        Recycle::Requests { .. } => None,
        Recycle::Memory { limit, .. } if boot_mib > *limit => Some(TooSoon::LimitTooLow),
        Recycle::Memory { .. } => Some(TooSoon::SoonAfterBoot),
        Recycle::Lifetime { .. } => Some(TooSoon::LimitTooLow),
    }
}

/// The number of requests after which a worker asks to be recycled: `max_requests` plus a
/// random share of `max_requests_jitter`, so that workers started together do not all go
/// together.
fn recycle_after(server: &ServerConfig, worker: u64) -> Option<u64> {
    use std::hash::{BuildHasher, Hasher};
    if server.max_requests == 0 {
        return None;
    }
    let mut random = std::hash::RandomState::new().build_hasher();
    random.write_u64(worker);
    let jitter = random.finish() % server.max_requests_jitter.saturating_add(1);
    Some(server.max_requests.saturating_add(jitter))
}

/// Warns when `worker_connections` is more than the open-files limit (already raised to its
/// hard limit, see [`process::raise_fd_limit`]) lets a worker hold: past that, accepts fail
/// with "Too many open files" however few requests are in progress.
fn warn_fd_headroom(config: &Config) {
    let Some(limit) = process::open_files_limit() else { return };
    let statics = config.routes.iter().filter(|r| matches!(r.action, Action::Static(_))).count();
    let allowed = process::connections_allowed(limit, config.server.bind.len(), statics);
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

/// The worker count after a `TTIN`: one more, unless that would be more than
/// [`MAX_WORKERS`], for which a reload has no room.
fn one_more(target: usize) -> Option<usize> {
    (target < MAX_WORKERS).then_some(target + 1)
}

/// What the log adds to a `SIGKILL` the master did not send.
fn oom_hint(exit: Exit) -> &'static str {
    match exit {
        Exit::Signal(Signal::SIGKILL) => ", not sent by the master: possibly the OOM killer",
        _ => "",
    }
}

/// `now + after`, saturating far in the future instead of overflowing.
fn deadline(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after).unwrap_or(now + Duration::from_secs(86_400 * 365))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycling_soon_after_boot_is_paused_whoever_found_it() {
        let memory = Recycle::Memory { rss_mib: 20, limit: 16 };
        let soon = Duration::from_millis(300);
        assert_eq!(too_soon(&memory, soon, 3), Some(TooSoon::SoonAfterBoot));
        assert_eq!(too_soon(&memory, soon, 17), Some(TooSoon::LimitTooLow));
        assert_eq!(too_soon(&memory, STABLE_AFTER, 17), None, "it stayed up");
        let lifetime = Recycle::Lifetime { age: soon };
        assert_eq!(too_soon(&lifetime, soon, 0), Some(TooSoon::LimitTooLow));
        assert_eq!(too_soon(&Recycle::Requests { served: 1 }, soon, 0), None);
    }

    #[test]
    fn ttin_adds_a_worker_up_to_max_workers_only() {
        assert_eq!(one_more(1), Some(2));
        assert_eq!(one_more(MAX_WORKERS - 1), Some(MAX_WORKERS));
        assert_eq!(one_more(MAX_WORKERS), None, "a reload would not fit");
    }
}
