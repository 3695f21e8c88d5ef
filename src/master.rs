//! The master: it forks workers, supervises them and acts on signals, and never serves a request.
//!
//! It is a plain single-threaded loop, with no async runtime and no threads, so that forking is
//! always safe. Each turn it sleeps in poll(2) on the signal self-pipe and the workers' message
//! socket until something happens or the nearest deadline passes, then acts: read what workers
//! said, act on signals, reap the dead, and bring the workers to what is wanted. Its verbs:
//! [`Master::spawn_worker`], [`Master::reap_workers`], [`Master::manage_workers`],
//! [`Master::retire_worker`], [`Master::murder_overdue`], [`Master::reload`],
//! [`Master::finish_reload`], [`Master::roll_back`], [`Master::stop`].
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

use crate::cli::ConfigSource;
use crate::config::Config;
use crate::error::{BoxError, Error};
use crate::ipc::{Inbox, Message};
use crate::listener::Listeners;
use crate::logging::LogHandle;
use crate::pidfile::Pidfile;
use crate::process::{self, Exit, Forked};
use crate::service::HttpService;
use crate::signals::{MasterSignal, SignalQueue};
use crate::worker::{self, EXIT_BOOT_FAILED, Setup, WorkerContext};

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
const KILL_MARGIN: Duration = Duration::from_secs(1);
/// The first pause before re-forking after a worker died while booting, and the cap it doubles to.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The master's record of one worker.
#[derive(Debug)]
struct Worker {
    id: u64,
    pid: Pid,
    generation: u64,
    spawned: Instant,
    /// The `graceful_timeout` of the config this worker runs: the one it drains by.
    grace: Duration,
    /// The worker has said it is accepting.
    ready: bool,
    state: WorkerState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    /// Serving (or booting to serve).
    Active,
    /// Told to exit; killed if still alive at `deadline`.
    Exiting { deadline: Instant, killed: bool },
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
    /// The pause before the next spawn, grown by workers that die while booting.
    backoff: Duration,
    next_spawn: Instant,
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
}

impl Plumbing {
    pub(crate) fn new() -> Result<Plumbing, Error> {
        Ok(Plumbing {
            signals: SignalQueue::install()
                .map_err(|e| Error::os("installing signal handlers", e))?,
            inbox: Inbox::new().map_err(|e| Error::os("creating the worker socket", e))?,
        })
    }
}

impl<'f, F, S, E> Master<'f, F>
where
    F: Fn(&WorkerContext) -> Result<S, E>,
    S: HttpService,
    E: Into<BoxError>,
{
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
        loop {
            self.manage_workers();
            self.murder_overdue();
            if self.stopping.is_some() && self.workers.is_empty() {
                break;
            }
            self.sleep();
            self.handle_signals();
            // Reads the workers' messages first, then collects the dead.
            self.reap_workers();
        }
        self.listeners.close_all();
        if let Some(pidfile) = self.pidfile.take() {
            pidfile.remove();
        }
        info!("master exiting");
        self.failure.map_or(Ok(()), Err)
    }

    /// Waits for a signal, a worker's message, or the nearest deadline.
    fn sleep(&self) {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(1);
        for w in &self.workers {
            if let WorkerState::Exiting { deadline, killed: false } = w.state {
                wake = wake.min(deadline);
            }
        }
        if self.spawns_pending() {
            wake = wake.min(self.next_spawn.max(now));
        }
        let timeout = wake.saturating_duration_since(now);
        // Round up, so that the loop does not wake just before a deadline and spin.
        let millis = timeout.as_micros().div_ceil(1000);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        let (Some(signals), Some(inbox)) = (&self.signals, &self.inbox) else { return };
        let mut fds = [
            PollFd::new(signals.fd(), PollFlags::POLLIN),
            PollFd::new(inbox.fd(), PollFlags::POLLIN),
        ];
        // EINTR is the usual way a signal ends the wait; the loop looks at the signals anyway.
        let _ = poll(&mut fds, timeout);
    }

    /// Acts on what workers said.
    fn read_messages(&mut self) {
        let Some(inbox) = &self.inbox else { return };
        for message in inbox.receive() {
            let Message::Ready { worker } = message;
            let Some(w) = self.workers.iter_mut().find(|w| w.id == worker) else { continue };
            w.ready = true;
            info!(
                pid = w.pid.as_raw(),
                worker = w.id,
                generation = w.generation,
                boot_ms = w.spawned.elapsed().as_millis() as u64,
                "worker booted"
            );
            self.backoff = Duration::ZERO;
            self.ever_ready = true;
            if !self.announced && self.ready_workers(self.current.number) >= self.current.target {
                self.announced = true;
                info!(workers = self.current.target, "all workers ready");
            }
        }
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
                _ if self.stopping.is_some() => info!(?signal, "ignoring signal: shutting down"),
                MasterSignal::Hup => self.reload(),
                MasterSignal::Ttin => {
                    self.current.target += 1;
                    info!(workers = self.current.target, "ttin: one more worker");
                }
                MasterSignal::Ttou if self.current.target > 1 => {
                    self.current.target -= 1;
                    info!(workers = self.current.target, "ttou: one fewer worker");
                }
                MasterSignal::Ttou => info!("ttou ignored: one worker is the minimum"),
                MasterSignal::Usr1 => info!("usr1: logs go to stderr, there is no file to reopen"),
                MasterSignal::Usr2 => warn!("usr2 ignored: binary upgrade is not supported yet"),
            }
        }
    }

    /// Collects exited workers and explains each exit in one line.
    fn reap_workers(&mut self) {
        // A worker that said it was ready and then died has its message waiting: read it
        // first, so that it is not taken for one that died while booting.
        self.read_messages();
        while let Some((pid, exit)) = process::reap_one() {
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                debug!(pid = pid.as_raw(), "reaped a process that was not a worker: {exit}");
                continue;
            };
            let w = self.workers.remove(i);
            let (pid, worker, generation) = (pid.as_raw(), w.id, w.generation);
            match w.state {
                WorkerState::Exiting { killed: true, .. } => {
                    warn!(
                        pid,
                        worker,
                        generation,
                        "worker exited: {exit}, by the master, as it did not stop in time"
                    );
                    continue;
                }
                WorkerState::Exiting { killed: false, .. } => {
                    info!(pid, worker, generation, "worker exited: {exit}");
                    continue;
                }
                WorkerState::Active => {}
            }
            let boot_failed = exit == Exit::Code(EXIT_BOOT_FAILED) && !w.ready;
            if boot_failed && generation == self.current.number && self.reload.is_some() {
                error!(pid, worker, generation, "worker exited: {exit}, its app failed to start");
                self.roll_back(&format!(
                    "worker {worker} of generation {generation} could not start its app"
                ));
                continue;
            }
            if boot_failed && !self.ever_ready {
                error!(pid, worker, generation, "worker exited: {exit}, its app failed to start");
                self.failure = Some(Error::Boot(format!(
                    "worker {worker} (pid {pid}) exited with code {EXIT_BOOT_FAILED}: the app \
                     could not start (the reason is logged above)"
                )));
                self.stop(Shutdown::Fast);
                continue;
            }
            let hint = match exit {
                Exit::Signal(Signal::SIGKILL) => ", possibly by the OOM killer",
                _ => "",
            };
            let replaced = self.wanted(generation).is_some();
            let next = if replaced { "; replacing it" } else { "" };
            error!(pid, worker, generation, "worker died unexpectedly: {exit}{hint}{next}");
            if !w.ready {
                // It died while booting: pause before trying again, doubling each time.
                self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                self.next_spawn = Instant::now() + self.backoff;
                warn!(
                    delay_ms = self.backoff.as_millis() as u64,
                    "worker died while booting, pausing before the next fork"
                );
            }
        }
    }

    /// Brings each generation that should be serving to its size: the current one, and, while
    /// a reload is under way, the previous one, whose dead workers are replaced until the new
    /// generation takes over.
    fn manage_workers(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let mut generations = vec![self.current.clone()];
        generations.extend(self.reload.as_ref().map(|r| r.previous.clone()));
        for generation in generations {
            let active = self.active_workers(generation.number);
            if active < generation.target {
                if Instant::now() < self.next_spawn {
                    continue;
                }
                // After failures, one at a time, each after the pause.
                let wanted = if self.backoff.is_zero() { generation.target - active } else { 1 };
                for _ in 0..wanted {
                    self.spawn_worker(&generation);
                }
                if !self.backoff.is_zero() {
                    self.next_spawn = Instant::now() + self.backoff;
                }
            } else if active > generation.target {
                let oldest: Vec<u64> = self
                    .workers
                    .iter()
                    .filter(|w| w.generation == generation.number && w.state == WorkerState::Active)
                    .take(active - generation.target)
                    .map(|w| w.id)
                    .collect();
                for id in oldest {
                    self.retire_worker(id);
                }
            }
        }
        self.finish_reload();
    }

    /// Forks a worker of `generation`.
    fn spawn_worker(&mut self, generation: &Generation) {
        let id = self.next_id;
        self.next_id += 1;
        match process::fork() {
            Ok(Forked::Parent(pid)) => {
                debug!(
                    pid = pid.as_raw(),
                    worker = id,
                    generation = generation.number,
                    "worker spawned"
                );
                self.workers.push(Worker {
                    id,
                    pid,
                    generation: generation.number,
                    spawned: Instant::now(),
                    grace: generation.config.server.graceful_timeout.0,
                    ready: false,
                    state: WorkerState::Active,
                });
            }
            Ok(Forked::Child(mask)) => self.become_worker(id, generation, mask),
            Err(e) => {
                error!("cannot fork a worker: {e}");
                self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                self.next_spawn = Instant::now() + self.backoff;
            }
        }
    }

    /// In the child of a fork: hands the worker what it needs (the sockets of its generation's
    /// addresses) and drops what is the master's alone (signal handlers and self-pipe, the
    /// message socket's reading end, the sockets of other addresses).
    fn become_worker(&mut self, id: u64, generation: &Generation, mask: SigSet) -> ! {
        if let Some(signals) = self.signals.take() {
            if let Err(e) = signals.forget_in_worker() {
                error!("cannot reset signal handlers in a new worker: {e}");
                std::process::exit(1);
            }
        }
        let Some(inbox) = self.inbox.take() else { std::process::exit(1) };
        let listeners = std::mem::take(&mut self.listeners);
        worker::run(Setup {
            ctx: WorkerContext::new(id, generation.number, Arc::clone(&generation.config)),
            listeners: listeners.into_sockets_for(&generation.config.server.bind),
            master: self.pid,
            signal_mask: mask,
            outbox: inbox.into_outbox(),
            factory: self.factory,
        })
    }

    /// Tells a worker to finish its requests and exit, within its own `graceful_timeout`.
    fn retire_worker(&mut self, id: u64) {
        let Some(w) = self.workers.iter_mut().find(|w| w.id == id) else { return };
        if w.state != WorkerState::Active {
            return;
        }
        debug!(pid = w.pid.as_raw(), worker = w.id, "stopping worker gracefully");
        process::send(w.pid, Signal::SIGTERM);
        w.state = WorkerState::Exiting { deadline: deadline(w.grace + KILL_MARGIN), killed: false };
    }

    /// Kills workers that were told to exit and have not by their deadline.
    fn murder_overdue(&mut self) {
        let now = Instant::now();
        for w in &mut self.workers {
            if let WorkerState::Exiting { deadline, killed: false } = w.state {
                if now >= deadline {
                    warn!(
                        pid = w.pid.as_raw(),
                        worker = w.id,
                        "worker did not exit in time, killing it with SIGKILL"
                    );
                    process::send(w.pid, Signal::SIGKILL);
                    w.state = WorkerState::Exiting { deadline, killed: true };
                }
            }
        }
    }

    /// Re-reads the config and, if it is valid and its new addresses can be bound, starts a
    /// new generation with it ([`Master::finish_reload`] stops the old one once the new one is
    /// ready). If not, logs why and changes nothing.
    fn reload(&mut self) {
        let started = Instant::now();
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
            Err(e) => return error!("reload rejected: {e}"),
        };
        // New addresses are bound now; the ones dropped stay open until the reload completes,
        // for the old generation's replacements and in case it has to take over again.
        if let Err(e) = self.listeners.open_missing(&config.server.bind, config.server.backlog) {
            return error!("reload rejected: {e}");
        }
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
            self.retire_generation(superseded.number);
        } else {
            self.reload = Some(Reload { started, previous: superseded });
        }
        self.log.set_level(self.current.config.log.level);
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
            .filter(|w| w.generation != self.current.number && w.state == WorkerState::Active)
            .map(|w| w.id)
            .collect();
        for &id in &old {
            self.retire_worker(id);
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
    }

    /// The new generation cannot boot: stops it, and the previous generation serves on with
    /// its config.
    fn roll_back(&mut self, why: &str) {
        let Some(reload) = self.reload.take() else { return };
        let failed = std::mem::replace(&mut self.current, reload.previous);
        self.retire_generation(failed.number);
        let server = &self.current.config.server;
        self.listeners.retain_only(&server.bind, server.backlog);
        self.log.set_level(self.current.config.log.level);
        error!(
            generation = failed.number,
            serving = self.current.number,
            "reload failed, rolled back: {why}"
        );
    }

    /// Applies a changed `pidfile` setting: the new file is written before the old one goes.
    fn move_pidfile(&mut self) {
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

    fn retire_generation(&mut self, number: u64) {
        let ids: Vec<u64> = self
            .workers
            .iter()
            .filter(|w| w.generation == number && w.state == WorkerState::Active)
            .map(|w| w.id)
            .collect();
        for id in ids {
            self.retire_worker(id);
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
        self.listeners.close_all();
        match how {
            Shutdown::Graceful => {
                let ids: Vec<u64> = self.workers.iter().map(|w| w.id).collect();
                for id in ids {
                    self.retire_worker(id);
                }
            }
            Shutdown::Fast => {
                let deadline = deadline(FAST_STOP_GRACE);
                for w in &mut self.workers {
                    process::send(w.pid, Signal::SIGINT);
                    w.state = WorkerState::Exiting { deadline, killed: false };
                }
            }
        }
    }

    /// Whether some generation that should be serving is short of workers.
    fn spawns_pending(&self) -> bool {
        self.stopping.is_none()
            && std::iter::once(&self.current)
                .chain(self.reload.as_ref().map(|r| &r.previous))
                .any(|g| self.active_workers(g.number) < g.target)
    }

    /// The generation with this number, if its workers are to be kept at strength.
    fn wanted(&self, number: u64) -> Option<&Generation> {
        std::iter::once(&self.current)
            .chain(self.reload.as_ref().map(|r| &r.previous))
            .find(|g| g.number == number)
    }

    /// Active workers of a generation.
    fn active_workers(&self, generation: u64) -> usize {
        self.workers
            .iter()
            .filter(|w| w.generation == generation && w.state == WorkerState::Active)
            .count()
    }

    /// Ready, active workers of a generation.
    fn ready_workers(&self, generation: u64) -> usize {
        self.workers
            .iter()
            .filter(|w| w.generation == generation && w.state == WorkerState::Active && w.ready)
            .count()
    }
}

/// `now + after`, saturating far in the future instead of overflowing.
fn deadline(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after).unwrap_or(now + Duration::from_secs(86_400 * 365))
}
