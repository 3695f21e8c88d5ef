//! The master: it forks workers, supervises them and acts on signals, and never serves a request.
//!
//! It is a plain single-threaded loop, with no async runtime and no threads, so that forking is
//! always safe. Each turn it sleeps in poll(2) on the signal self-pipe and the workers' message
//! socket until something happens or the nearest deadline passes, then acts: read what workers
//! said, act on signals, reap the dead, and bring the workers to what is wanted. Its verbs:
//! [`Master::spawn_worker`], [`Master::reap_workers`], [`Master::manage_workers`],
//! [`Master::retire_worker`], [`Master::murder_overdue`], [`Master::reload`], [`Master::stop`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
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
pub enum Shutdown {
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

/// A reload under way: the new generation is booting, the old one still serves.
#[derive(Debug)]
struct Reload {
    started: Instant,
}

/// Everything the master owns.
pub(crate) struct Master<'f, F> {
    /// Where a reload re-reads the config from; `None` for a config given in code.
    source: Option<ConfigSource>,
    config: Arc<Config>,
    listeners: Listeners,
    /// `None` only in a forked worker, which has taken it.
    signals: Option<SignalQueue>,
    /// `None` only in a forked worker, which has taken it.
    inbox: Option<Inbox>,
    workers: Vec<Worker>,
    /// How many workers of the current generation are wanted.
    target: usize,
    generation: u64,
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

impl<'f, F, S, E> Master<'f, F>
where
    F: Fn(&WorkerContext) -> Result<S, E>,
    S: HttpService,
    E: Into<BoxError>,
{
    pub(crate) fn new(
        source: Option<ConfigSource>,
        config: Config,
        listeners: Listeners,
        log: LogHandle,
        pidfile: Option<Pidfile>,
        factory: &'f F,
    ) -> Result<Self, Error> {
        Ok(Master {
            source,
            target: config.server.workers.resolve(),
            config: Arc::new(config),
            listeners,
            signals: Some(
                SignalQueue::install().map_err(|e| Error::os("installing signal handlers", e))?,
            ),
            inbox: Some(Inbox::new().map_err(|e| Error::os("creating the worker socket", e))?),
            workers: Vec::new(),
            generation: 1,
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
        })
    }

    /// Runs until the server has stopped.
    pub(crate) fn run(mut self) -> Result<(), Error> {
        info!(pid = self.pid.as_raw(), workers = self.target, "master started");
        loop {
            self.manage_workers();
            self.murder_overdue();
            if self.stopping.is_some() && self.workers.is_empty() {
                break;
            }
            self.sleep();
            self.read_messages();
            self.handle_signals();
            self.reap_workers();
        }
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
        if self.stopping.is_none() && self.current_workers() < self.target {
            wake = wake.min(self.next_spawn);
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
            if !self.announced && self.ready_workers() >= self.target {
                self.announced = true;
                info!(workers = self.target, "all workers ready");
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
                    self.target += 1;
                    info!(workers = self.target, "ttin: one more worker");
                }
                MasterSignal::Ttou if self.target > 1 => {
                    self.target -= 1;
                    info!(workers = self.target, "ttou: one fewer worker");
                }
                MasterSignal::Ttou => info!("ttou ignored: one worker is the minimum"),
                MasterSignal::Usr1 => info!("usr1: logs go to stderr, there is no file to reopen"),
                MasterSignal::Usr2 => warn!("usr2 ignored: binary upgrade is not supported yet"),
            }
        }
    }

    /// Collects exited workers and explains each exit in one line.
    fn reap_workers(&mut self) {
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
            if exit == Exit::Code(EXIT_BOOT_FAILED) && !self.ever_ready {
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
            let next = if generation == self.generation { "; replacing it" } else { "" };
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

    /// Brings the number of workers of the current generation to the target.
    fn manage_workers(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let current = self.current_workers();
        if current < self.target {
            if Instant::now() < self.next_spawn {
                return;
            }
            // After failures, one at a time, each after the pause.
            let wanted = if self.backoff.is_zero() { self.target - current } else { 1 };
            for _ in 0..wanted {
                self.spawn_worker();
            }
            if !self.backoff.is_zero() {
                self.next_spawn = Instant::now() + self.backoff;
            }
        } else if current > self.target {
            let oldest: Vec<u64> = self
                .workers
                .iter()
                .filter(|w| w.generation == self.generation && w.state == WorkerState::Active)
                .take(current - self.target)
                .map(|w| w.id)
                .collect();
            for id in oldest {
                self.retire_worker(id);
            }
        }
        self.finish_reload();
    }

    /// Forks a worker of the current generation.
    fn spawn_worker(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        match process::fork() {
            Ok(Forked::Parent(pid)) => {
                debug!(
                    pid = pid.as_raw(),
                    worker = id,
                    generation = self.generation,
                    "worker spawned"
                );
                self.workers.push(Worker {
                    id,
                    pid,
                    generation: self.generation,
                    spawned: Instant::now(),
                    ready: false,
                    state: WorkerState::Active,
                });
            }
            Ok(Forked::Child) => self.become_worker(id),
            Err(e) => {
                error!("cannot fork a worker: {e}");
                self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                self.next_spawn = Instant::now() + self.backoff;
            }
        }
    }

    /// In the child of a fork: hands the worker what it needs and drops what is the master's
    /// alone (signal handlers and self-pipe, the message socket's reading end).
    fn become_worker(&mut self, id: u64) -> ! {
        if let Some(signals) = self.signals.take() {
            if let Err(e) = signals.forget_in_worker() {
                error!("cannot reset signal handlers in a new worker: {e}");
                std::process::exit(1);
            }
        }
        let Some(inbox) = self.inbox.take() else { std::process::exit(1) };
        worker::run(Setup {
            ctx: WorkerContext::new(id, self.generation, Arc::clone(&self.config)),
            listeners: std::mem::take(&mut self.listeners).into_sockets(),
            master: self.pid,
            outbox: inbox.into_outbox(),
            factory: self.factory,
        })
    }

    /// Tells a worker to finish its requests and exit.
    fn retire_worker(&mut self, id: u64) {
        let grace = self.config.server.graceful_timeout.0 + KILL_MARGIN;
        let Some(w) = self.workers.iter_mut().find(|w| w.id == id) else { return };
        if w.state != WorkerState::Active {
            return;
        }
        debug!(pid = w.pid.as_raw(), worker = w.id, "stopping worker gracefully");
        process::send(w.pid, Signal::SIGTERM);
        w.state = WorkerState::Exiting { deadline: Instant::now() + grace, killed: false };
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
                        "worker did not exit in time, killing it"
                    );
                    process::send(w.pid, Signal::SIGKILL);
                    w.state = WorkerState::Exiting { deadline, killed: true };
                }
            }
        }
    }

    /// Re-reads the config; if it is valid, starts a new generation of workers, and the old
    /// one is stopped once every new worker is ready ([`Master::finish_reload`]). If not, logs
    /// why and changes nothing.
    fn reload(&mut self) {
        let started = Instant::now();
        match self.source.as_ref().and_then(ConfigSource::path) {
            Some(path) => info!(config = %path.display(), "reloading"),
            None => info!("reloading"),
        }
        let config = match &self.source {
            Some(source) => source.load(),
            None => Ok((*self.config).clone()),
        };
        let config = match config {
            Ok(config) => config,
            Err(e) => return error!("reload rejected: {e}"),
        };
        let new_pidfile = match (&config.server.pidfile, &self.pidfile) {
            (Some(path), Some(old)) if path == old.path() => None,
            (Some(path), _) => match Pidfile::create(path) {
                Ok(p) => Some(p),
                Err(e) => return error!("reload rejected: {e}"),
            },
            (None, _) => None,
        };
        if let Err(e) = self.listeners.reconcile(&config.server.bind, config.server.backlog) {
            if let Some(p) = new_pidfile {
                p.remove();
            }
            return error!("reload rejected: {e}");
        }
        if new_pidfile.is_some() || config.server.pidfile.is_none() {
            if let Some(old) = std::mem::replace(&mut self.pidfile, new_pidfile) {
                old.remove();
            }
        }
        self.log.set_level(config.log.level);
        self.target = config.server.workers.resolve();
        self.config = Arc::new(config);
        self.generation += 1;
        // A new config may fix what made workers crash: try it at once.
        self.backoff = Duration::ZERO;
        self.next_spawn = Instant::now();
        self.reload = Some(Reload { started });
        info!(generation = self.generation, workers = self.target, "starting new generation");
    }

    /// Once every worker of the new generation is ready, stops the older ones.
    fn finish_reload(&mut self) {
        let Some(reload) = &self.reload else { return };
        if self.ready_workers() < self.target {
            return;
        }
        let started = reload.started;
        self.reload = None;
        let old: Vec<u64> = self
            .workers
            .iter()
            .filter(|w| w.generation < self.generation && w.state == WorkerState::Active)
            .map(|w| w.id)
            .collect();
        for &id in &old {
            self.retire_worker(id);
        }
        info!(
            generation = self.generation,
            stopping = old.len(),
            duration_ms = started.elapsed().as_millis() as u64,
            "reload complete"
        );
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
                let deadline = Instant::now() + FAST_STOP_GRACE;
                for w in &mut self.workers {
                    process::send(w.pid, Signal::SIGINT);
                    w.state = WorkerState::Exiting { deadline, killed: false };
                }
            }
        }
    }

    /// Active workers of the current generation.
    fn current_workers(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.generation == self.generation && w.state == WorkerState::Active)
            .count()
    }

    /// Ready, active workers of the current generation.
    fn ready_workers(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| {
                w.generation == self.generation && w.state == WorkerState::Active && w.ready
            })
            .count()
    }
}
