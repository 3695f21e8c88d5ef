//! The workers' health as the master watches it: reaping the dead and explaining each exit in
//! one line, workers that cannot boot (and the streak of identical boot failures), workers
//! that hang or do not boot in time, and workers due for recycling.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tracing::{debug, error, info, warn};

use super::phase::{BootFailure, Shutdown};
use super::pool::{Recycle, TooSoon, Why, Worker, WorkerState, too_soon};
use super::{Master, deadline};
use crate::app::Factory;
use crate::config::ServerConfig;
use crate::error::Error;
use crate::process::{self, Exit};
use crate::scoreboard::ExitCause;
use crate::worker::EXIT_BOOT_FAILED;

/// How long a hung worker has between `SIGABRT` and `SIGKILL`.
pub(super) const ABORT_GRACE: Duration = Duration::from_secs(1);
/// How often a streak of identical boot failures is summed up in the log.
const STILL_FAILING_EVERY: Duration = Duration::from_secs(60);

/// Why a reaped worker exited, as the metrics count it: from what the master knew of it, and
/// how it exited.
pub(super) fn exit_cause(state: &WorkerState, exit: Exit) -> ExitCause {
    match state {
        WorkerState::Booting { .. } => ExitCause::BootFailure,
        WorkerState::Ready { .. } => ExitCause::Crashed,
        WorkerState::Exiting { why, .. } | WorkerState::Killed { why } => match why {
            Why::Hung { .. } => ExitCause::Hung,
            Why::BootTimeout(_) => ExitCause::BootFailure,
            Why::Recycled(_) => ExitCause::Recycled,
            // A fast stop's SIGINT ends a worker however it ends.
            Why::Stop(Shutdown::Fast) => ExitCause::Stopped,
            // Told to drain, but it ended otherwise: an error exit, or a signal the master
            // did not send.
            _ if matches!(state, WorkerState::Exiting { .. }) && exit != Exit::Code(0) => {
                ExitCause::Crashed
            }
            _ => ExitCause::Stopped,
        },
    }
}

/// Boot failures in a row with the same cause: a static root deleted while the server runs, a
/// database down. Every new worker fails the same way, once per pause; the log says it once,
/// then once every [`STILL_FAILING_EVERY`] with the count, then when workers boot again.
#[derive(Debug)]
pub(super) struct BootFailures {
    pub(super) cause: String,
    pub(super) count: u64,
    pub(super) since: Instant,
    /// When the streak was last logged.
    logged: Instant,
}

/// What could not boot: a worker, or the mold its generation's workers are forked from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Booting {
    Worker(u64),
    Mold,
}

impl<F: Factory> Master<'_, F> {
    /// Collects exited workers (and molds) and explains each exit in one line.
    pub(super) fn reap_workers(&mut self) {
        // Collect the dead first, then read what workers said: every message a dead worker
        // sent is waiting by now, so one that said it was ready and then died is not taken
        // for one that died while booting.
        let dead: Vec<_> = std::iter::from_fn(process::reap_one).collect();
        self.read_messages();
        for (pid, exit) in dead {
            let Some(i) = self.pool.workers.iter().position(|w| w.pid == pid) else {
                if self.reap_mold(pid, exit) {
                    continue;
                }
                if self.upgrading.pid() == Some(pid) {
                    self.upgrade_failed(&format!("the new master exited: {exit}"));
                } else {
                    debug!(pid = pid.as_raw(), "reaped a process that was not a worker: {exit}");
                }
                continue;
            };
            let w = self.pool.workers.remove(i);
            self.scoreboard.release(w.slot);
            self.scoreboard.worker_exited(exit_cause(&w.state, exit));
            self.explain_exit(w, exit);
        }
    }

    /// Logs why a reaped worker exited, and acts on an exit the master did not ask for.
    fn explain_exit(&mut self, w: Worker, exit: Exit) {
        let (pid, worker, generation) = (w.pid.as_raw(), w.id, w.generation);
        match &w.state {
            WorkerState::Exiting { why, .. } | WorkerState::Killed { why } if why.is_kill() => {
                error!(
                    pid,
                    worker, generation, "worker exited: {exit}, killed by the master: {why}"
                );
            }
            WorkerState::Killed { why } => warn!(
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
            WorkerState::Booting { error } => {
                let cause = match (error, exit) {
                    (Some(reason), _) => reason.clone(),
                    (None, Exit::Code(EXIT_BOOT_FAILED)) => "its app failed to start".into(),
                    (None, _) => format!("{exit} while booting{}", oom_hint(exit)),
                };
                if self.repeats_boot_failure(generation, &cause) {
                    debug!(pid, worker, generation, "worker exited: {exit}, boot failure: {cause}");
                } else {
                    error!(pid, worker, generation, "worker exited: {exit}, boot failure: {cause}");
                }
                self.boot_failed(pid, Booting::Worker(worker), generation, &cause);
            }
            WorkerState::Ready { .. }
                if self.phase.is_reloading_to(generation, self.current.number) =>
            {
                // A new generation that crashes before it has taken over is not trusted.
                error!(pid, worker, generation, "worker died unexpectedly: {exit}");
                self.roll_back(&format!(
                    "worker {worker} of generation {generation} died before the reload \
                     completed: {exit}"
                ));
            }
            WorkerState::Ready { .. } => {
                let replaced = self.generation(generation).is_some();
                let next = if replaced { "; replacing it" } else { "" };
                let hint = oom_hint(exit);
                error!(pid, worker, generation, "worker died unexpectedly: {exit}{hint}{next}");
                self.pause_after_loss(w.up(Instant::now()), "worker died");
            }
        }
    }

    /// A worker (or a mold) could not boot: during the first start, that stops the server;
    /// during a reload, the new generation is given up; otherwise the next fork waits a little
    /// longer.
    pub(super) fn boot_failed(&mut self, pid: i32, who: Booting, generation: u64, cause: &str) {
        match self.phase.boot_failure(generation, self.current.number) {
            BootFailure::Ignore => return,
            BootFailure::RollBack => {
                return self.roll_back(&match who {
                    Booting::Worker(worker) => format!(
                        "worker {worker} of generation {generation} could not start its app: \
                         {cause}"
                    ),
                    Booting::Mold => format!(
                        "the mold of generation {generation} could not load the app: {cause}"
                    ),
                });
            }
            BootFailure::StopServer => {
                self.failure = Some(Error::Boot(match who {
                    Booting::Worker(worker) => format!("worker {worker} (pid {pid}): {cause}"),
                    Booting::Mold => {
                        format!("the mold of generation {generation} (pid {pid}): {cause}")
                    }
                }));
                return self.stop(Shutdown::Fast);
            }
            BootFailure::Pause => {}
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
        let delay_ms = self.pool.backoff.failed(now).as_millis() as u64;
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
        self.phase.announced()
            && !self.phase.is_reloading_to(generation, self.current.number)
            && self.boot_failures.as_ref().is_some_and(|s| s.cause == cause)
    }

    /// Marks a worker as due for recycling: its successor is started, at once unless
    /// recycling it this soon after it booted looks like a fork loop (see [`too_soon`]): then
    /// the successor waits the crash pause, while the worker serves on. Every recycling goes
    /// through here, whoever found it due: the worker itself (`max_requests`, and
    /// `max_worker_memory` within milliseconds) or the master (memory at a heartbeat,
    /// `max_worker_lifetime`).
    pub(super) fn recycle(&mut self, id: u64, reason: Recycle) {
        let Some(w) = self.pool.get(id) else { return };
        if !w.is_fresh() {
            return;
        }
        let up = w.up(Instant::now());
        let boot_mib = match w.state {
            WorkerState::Ready { boot_mib, .. } => boot_mib,
            _ => 0,
        };
        let (pid, generation) = (w.pid.as_raw(), w.generation);
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
        match self.pool.get_mut(id).map(|w| &mut w.state) {
            Some(WorkerState::Ready { due, .. }) => *due = Some(reason),
            // Not ready, it serves nothing: it goes at once, and its successor is forked as for
            // any worker gone.
            Some(WorkerState::Booting { .. }) => self.retire_worker(id, Why::Recycled(reason)),
            _ => {}
        }
    }

    /// Finds the workers over `max_worker_memory` or `max_worker_lifetime`. Each worker also
    /// says itself when it reaches `max_requests`, and when it finds itself over
    /// `max_worker_memory` as a request starts or at its heartbeat, which is sooner than the
    /// master reads it.
    pub(super) fn recycle_workers(&mut self) {
        if self.phase.is_stopping() {
            return;
        }
        let mut due = Vec::new();
        let ready = |w: &&Worker| matches!(w.state, WorkerState::Ready { due: None, .. });
        for w in self.pool.workers.iter().filter(ready) {
            let Some(server) = self.generation(w.generation).map(|g| &g.config.server) else {
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
    pub(super) fn murder_hung(&mut self) {
        if self.phase.is_stopping() {
            return;
        }
        self.notice_pause(self.turn_started);
        let mut hung = Vec::new();
        for w in self.pool.workers.iter().filter(|w| w.is_active()) {
            let Some(server) = self.generation(w.generation).map(|g| &g.config.server) else {
                continue;
            };
            match w.state {
                WorkerState::Ready { .. } => {
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
                WorkerState::Booting { .. } => {
                    let Some(limit) = ServerConfig::limit(server.boot_timeout) else { continue };
                    if w.spawned.elapsed() >= limit {
                        hung.push((w.id, Why::BootTimeout(limit), String::new()));
                    }
                }
                WorkerState::Exiting { .. } | WorkerState::Killed { .. } => {}
            }
        }
        for (id, why, activity) in hung {
            if self.phase.is_stopping() {
                // A boot failure stopped the server; the stop deals with the rest.
                break;
            }
            // An earlier one may have rolled back a reload, retiring this one's generation.
            let generation = self.pool.get(id).map(|w| w.generation);
            if generation.is_none_or(|g| self.generation(g).is_none()) {
                continue;
            }
            let Some(w) = self.pool.get_mut(id).filter(|w| w.is_active()) else { continue };
            let (pid, worker, generation) = (w.pid.as_raw(), w.id, w.generation);
            let up = w.up(Instant::now());
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
                    w.state = WorkerState::Exiting { deadline: deadline(ABORT_GRACE), why };
                    // Workers that hang soon after booting are a crash loop as much as workers
                    // that die: their replacements wait, as theirs do (see reap_workers).
                    self.pause_after_loss(up, "worker killed as hung");
                }
                _ => {
                    // SIGABRT first, as for a hung worker: an app stuck while it loads says
                    // where (Python's faulthandler prints every thread's stack; elsewhere, a
                    // core dump where the system keeps them), then SIGKILL.
                    error!(pid, worker, generation, "worker {why}, killing it with SIGABRT");
                    process::send(w.pid, Signal::SIGABRT);
                    w.state =
                        WorkerState::Exiting { deadline: deadline(ABORT_GRACE), why: why.clone() };
                    self.boot_failed(pid, Booting::Worker(worker), generation, &why.to_string());
                }
            }
        }
    }

    /// The next time a serving or booting worker needs looking at: its boot deadline, when its
    /// heartbeat would be overdue, or when it reaches `max_worker_lifetime`.
    pub(super) fn next_check(&self, w: &Worker, now: Instant) -> Option<Instant> {
        let server = &self.generation(w.generation)?.config.server;
        let mut at: Option<Instant> = None;
        let mut consider = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        match &w.state {
            WorkerState::Booting { .. } => {
                if let Some(limit) = ServerConfig::limit(server.boot_timeout) {
                    consider(w.spawned + limit);
                }
            }
            WorkerState::Exiting { .. } | WorkerState::Killed { .. } => {}
            WorkerState::Ready { due, .. } => {
                if let Some(timeout) = ServerConfig::limit(server.timeout) {
                    let silent = self.scoreboard.since_heartbeat(w.slot).unwrap_or_default();
                    consider((now + timeout.saturating_sub(silent)).max(self.resumed + timeout));
                }
                if let Some(max) = ServerConfig::limit(server.max_worker_lifetime) {
                    if due.is_none() {
                        consider(w.spawned + max);
                    }
                }
            }
        }
        at
    }
}

/// What the log adds to a `SIGKILL` the master did not send.
fn oom_hint(exit: Exit) -> &'static str {
    match exit {
        Exit::Signal(Signal::SIGKILL) => ", not sent by the master: possibly the OOM killer",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_exit_is_counted_under_one_cause() {
        let at = Instant::now();
        let exiting = |why| WorkerState::Exiting { deadline: at, why };
        let ok = Exit::Code(0);
        let segv = Exit::Signal(Signal::SIGSEGV);
        let kill = Exit::Signal(Signal::SIGKILL);
        let served = Recycle::Requests { served: 10 };
        let hung = Why::Hung { silent: Duration::from_secs(31), timeout: Duration::from_secs(30) };
        let cases = [
            (WorkerState::Booting { error: None }, Exit::Code(3), ExitCause::BootFailure),
            (WorkerState::Ready { at, boot_mib: 1, due: None }, segv, ExitCause::Crashed),
            (exiting(Why::Recycled(served.clone())), ok, ExitCause::Recycled),
            (WorkerState::Killed { why: Why::Recycled(served) }, kill, ExitCause::Recycled),
            (exiting(hung.clone()), Exit::Signal(Signal::SIGABRT), ExitCause::Hung),
            (WorkerState::Killed { why: hung }, kill, ExitCause::Hung),
            (exiting(Why::BootTimeout(Duration::from_secs(30))), kill, ExitCause::BootFailure),
            (exiting(Why::Replaced { by: 2 }), ok, ExitCause::Stopped),
            (exiting(Why::Replaced { by: 2 }), segv, ExitCause::Crashed),
            (WorkerState::Killed { why: Why::Replaced { by: 2 } }, kill, ExitCause::Stopped),
            (exiting(Why::Stop(Shutdown::Fast)), Exit::Signal(Signal::SIGINT), ExitCause::Stopped),
            (exiting(Why::Stop(Shutdown::Graceful)), ok, ExitCause::Stopped),
            (exiting(Why::Surplus), ok, ExitCause::Stopped),
        ];
        for (state, exit, cause) in cases {
            assert_eq!(exit_cause(&state, exit), cause, "{state:?}, {exit}");
        }
    }
}
