//! Carrying out the pool's decisions ([`super::pool::Pool::decide`]): forking a worker (and,
//! in the child, becoming it), telling one to stop, killing one that does not, and the
//! announcement once every worker of the first generation is ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use tracing::{debug, error, info, warn};

use super::phase::Generation;
use super::pool::{Decision, Wanted, Why, Worker, WorkerState, recycle_after};
use super::upgrade::{FirstServing, Succession};
use super::{KILL_MARGIN, Master, deadline};
use crate::app::{Factory, WorkerContext};
use crate::config::UpgradeMode;
use crate::listener::Addr;
use crate::process::{self, Forked};
use crate::scoreboard::SLOTS;
use crate::worker::{self, Setup};

impl<F: Factory> Master<'_, F> {
    /// The generations whose workers are kept at strength, newest first: the current one, and,
    /// while a reload is under way, the previous one, whose dead workers are replaced until
    /// the new generation takes over. None while stopping, or after `WINCH`.
    pub(super) fn wanted(&self) -> Vec<Wanted> {
        if self.phase.is_stopping() || self.upgrading.workers_stopped() {
            return Vec::new();
        }
        let current = Wanted { number: self.current.number, target: self.current.target };
        let previous = self.phase.reload().map(|r| &r.previous);
        let previous = previous.map(|g| Wanted { number: g.number, target: g.target });
        std::iter::once(current).chain(previous).collect()
    }

    /// The generation with this number, if its workers are to be kept at strength.
    pub(super) fn generation(&self, number: u64) -> Option<&Generation> {
        std::iter::once(&self.current)
            .chain(self.phase.reload().map(|r| &r.previous))
            .find(|g| g.number == number)
    }

    /// Brings each generation that should be serving to its size (see
    /// [`super::pool::Pool::decide`]), and completes a reload whose new generation is ready.
    pub(super) fn manage_workers(&mut self) {
        let wanted = self.wanted();
        if wanted.is_empty() {
            return;
        }
        let now = Instant::now();
        if self.pool.backoff.forgive(&self.pool.workers, now) {
            info!("workers stay up again: no more pause before forking");
        }
        let reloading = self.phase.reload().is_some();
        // A generation whose forks a failed fork held back this turn: as when the pause was
        // known before deciding, nothing else changes in it (its workers due for recycling
        // wait for their successors) until forking goes on.
        let mut held_back = None;
        for decision in self.pool.decide(&wanted, reloading, now) {
            if let Decision::Retire { worker, .. } = &decision {
                let generation = self.pool.get(*worker).map(|w| w.generation);
                if generation.is_some() && generation == held_back {
                    continue;
                }
            }
            if let Err(generation) = self.execute(decision) {
                held_back = Some(generation);
            }
        }
    }

    /// Carries out one decision of the pool. `Err(generation)` if it was to fork workers of
    /// that generation and a fork that failed just now makes them wait the pause.
    pub(super) fn execute(&mut self, decision: Decision) -> Result<(), u64> {
        match decision {
            Decision::Spawn { generation, count } => {
                if Instant::now() < self.pool.backoff.next_spawn() {
                    return Err(generation);
                }
                let Some(generation) = self.generation(generation).cloned() else { return Ok(()) };
                if !self.can_fork(generation.number) {
                    // Its mold is loading (or being replaced): forking goes on once it is ready.
                    return Err(generation.number);
                }
                for _ in 0..count {
                    self.spawn_worker(&generation);
                }
                self.pool.backoff.spawned(Instant::now());
            }
            Decision::Retire { worker, why } => self.retire_worker(worker, why),
            Decision::CompleteReload => self.finish_reload(),
        }
        Ok(())
    }

    /// A worker said it is accepting. Once every worker of the first generation is, the server
    /// says it serves (and, started by a binary upgrade, tells the old master).
    pub(super) fn worker_ready(&mut self, worker: u64) {
        let Some(w) = self.pool.get_mut(worker) else { return };
        let (at, boot_mib) = (Instant::now(), self.scoreboard.rss_kib(w.slot) / 1024);
        match &mut w.state {
            WorkerState::Booting { .. } => w.state = WorkerState::Ready { at, boot_mib, due: None },
            WorkerState::Ready { at: ready_at, boot_mib: mib, .. } => {
                (*ready_at, *mib) = (at, boot_mib)
            }
            // Told to exit before it said it was ready: it stays told.
            WorkerState::Exiting { .. } | WorkerState::Killed { .. } => {}
        }
        info!(
            pid = w.pid.as_raw(),
            worker = w.id,
            generation = w.generation,
            boot_ms = w.spawned.elapsed().as_millis() as u64,
            "worker booted"
        );
        if let Some(streak) = self.boot_failures.take() {
            info!(
                failures = streak.count,
                "workers boot again, after {} failed boot(s) in {:.1} s: {}",
                streak.count,
                streak.since.elapsed().as_secs_f64(),
                streak.cause
            );
        }
        let current = Wanted { number: self.current.number, target: self.current.target };
        // A stopping master has no active worker, so none of its generation can be all ready;
        // it has nothing to announce anyway.
        if self.phase.announced() || self.phase.is_stopping() || !self.pool.all_ready(current) {
            return;
        }
        self.phase.announce();
        info!(workers = self.current.target, "all workers ready");
        let old_alive = |old| nix::unistd::getppid() == old;
        let mode = self.current.config.server.upgrade;
        match self.succession.serving(old_alive, mode) {
            FirstServing::Alone => {}
            FirstServing::OldGone(old) => {
                warn!(
                    old_master = old.as_raw(),
                    "upgrade: this master serves; the old master is gone (it exited before the \
                     hand-over): this master is in charge"
                );
                self.take_charge();
            }
            FirstServing::TellOld(handover, mode) => {
                let manual = mode == UpgradeMode::Manual;
                if !manual {
                    // The service manager must follow the main pid before the old one exits.
                    self.take_charge();
                }
                info!(
                    old_master = handover.old_master.as_raw(),
                    "upgrade: this master serves; telling the old one{}",
                    if manual { " (it stops when told to: manual upgrade)" } else { " to stop" }
                );
                handover.ready();
            }
        }
        self.notify_ready();
    }

    /// Forks a worker of `generation`.
    pub(super) fn spawn_worker(&mut self, generation: &Generation) {
        let id = self.next_id;
        let Some(slot) = self.scoreboard.claim(id, generation.number) else {
            error!("cannot start a worker: all {SLOTS} scoreboard slots are taken");
            return self.pause_forking("no scoreboard slot");
        };
        self.next_id += 1;
        // Before the fork: the child may be running (and booting) before the fork returns
        // here, and its boot time is counted from when it was asked for.
        let spawned = Instant::now();
        let forked = match Self::preloads(generation) {
            true => self.fork_from_mold(generation.number, id, slot).map(Forked::Parent),
            false => process::fork().map_err(|e| e.to_string()),
        };
        match forked {
            Ok(Forked::Parent(pid)) => {
                debug!(
                    pid = pid.as_raw(),
                    worker = id,
                    generation = generation.number,
                    "worker spawned"
                );
                self.scoreboard.set_pid(slot, pid.as_raw() as u32);
                self.pool.workers.push(Worker {
                    id,
                    pid,
                    generation: generation.number,
                    slot,
                    spawned,
                    grace: generation.config.server.graceful_timeout.0,
                    state: WorkerState::Booting { error: None },
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

    /// In the child of a fork (the master's, or its generation's mold's): hands the worker
    /// what it needs (the sockets of its generation's addresses) and drops what is the master's
    /// alone (signal handlers and self-pipe, the message socket's reading end, the lines to the
    /// molds, the sockets of other addresses).
    pub(super) fn become_worker(
        &mut self,
        id: u64,
        slot: usize,
        generation: &Generation,
        mask: SigSet,
    ) -> ! {
        if let Some(signals) = self.signals.take() {
            if let Err(e) = signals.forget_in_worker() {
                error!("cannot reset signal handlers in a new worker: {e}");
                std::process::exit(1);
            }
        }
        let Some(inbox) = self.inbox.take() else { std::process::exit(1) };
        self.molds.clear();
        // The old master's channel is this master's to close, not its workers'.
        drop(std::mem::replace(&mut self.succession, Succession::InCharge));
        // The pidfile's lock must not outlive the master in a worker (see `pidfile`).
        if let Some(pidfile) = self.pidfile.take() {
            pidfile.close_in_worker();
        }
        let listeners = std::mem::take(&mut self.listeners);
        let sockets = listeners.into_sockets_for(&Addr::all(&generation.config));
        worker::run(Setup {
            ctx: WorkerContext::new(id, generation.number, Arc::clone(&generation.config)),
            listeners: sockets.app,
            metrics: sockets.metrics,
            master: self.pid,
            signal_mask: mask,
            outbox: inbox.into_outbox(),
            factory: self.factory,
            scoreboard: self.scoreboard.shared(),
            slot,
            recycle_after: recycle_after(&generation.config.server, id),
        })
    }

    /// Tells a worker to finish its requests and exit, within its own `graceful_timeout`.
    pub(super) fn retire_worker(&mut self, id: u64, why: Why) {
        let Some(w) = self.pool.get_mut(id) else { return };
        if !w.is_active() {
            return;
        }
        debug!(pid = w.pid.as_raw(), worker = w.id, "stopping worker gracefully: {why}");
        process::send(w.pid, Signal::SIGTERM);
        let deadline = deadline(w.grace + KILL_MARGIN);
        w.state = WorkerState::Exiting { deadline, why };
    }

    /// Kills workers that were told to exit and have not by their deadline.
    pub(super) fn murder_overdue(&mut self) {
        let now = Instant::now();
        for w in &mut self.pool.workers {
            let WorkerState::Exiting { deadline, why } = &mut w.state else { continue };
            if now >= *deadline {
                warn!(
                    pid = w.pid.as_raw(),
                    worker = w.id,
                    "worker did not exit in time, killing it with SIGKILL"
                );
                process::send(w.pid, Signal::SIGKILL);
                w.state = WorkerState::Killed { why: why.clone() };
            }
        }
    }

    /// Makes the next fork wait, twice as long as the last time (see
    /// [`super::pool::Backoff::failed`]), and says why.
    pub(super) fn pause_forking(&mut self, why: &str) {
        let delay = self.pool.backoff.failed(Instant::now());
        warn!(delay_ms = delay.as_millis() as u64, "{why}: pausing before the next fork");
    }

    /// [`Master::pause_forking`] for a worker lost (dead, or killed as hung) `up` after it
    /// booted, if that is soon enough to look like a crash loop.
    pub(super) fn pause_after_loss(&mut self, up: Duration, what: &str) {
        if let Some(delay) = self.pool.lost(up, Instant::now()) {
            warn!(
                delay_ms = delay.as_millis() as u64,
                "{what} {:.1} s after booting: pausing before the next fork",
                up.as_secs_f64()
            );
        }
    }
}
