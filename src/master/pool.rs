//! The master's workers as records, and what to do with them: [`Pool::decide`] is a pure
//! function of the pool's state (each worker's generation, readiness, whether it is due for
//! recycling or exiting; the generations wanted and their sizes; the crash back-off; the time)
//! that says which workers to fork and which to retire, and why. The master's loop only carries
//! the decisions out (fork, signal, log; see `master::workers`).
//!
//! The rules: a generation is kept at its size, counting only workers that are active and not
//! due for recycling; a worker due for recycling is replaced successor first and stopped once
//! the successor is ready; a surplus (`TTOU`) goes booting workers first, newest first, then
//! the oldest ready ones; a reload completes once every worker of the new generation is ready.
//! After workers die while booting or soon after, forking waits a pause that doubles from
//! [`BACKOFF_MIN`] to [`BACKOFF_MAX`] ([`Backoff`]), one worker at a time, until a worker stays
//! up for [`STABLE_AFTER`].

use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::phase::Shutdown;
use crate::config::{MAX_WORKERS, ServerConfig};

/// The first pause before re-forking after a worker died while booting, and the cap it doubles to.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A worker that has been ready this long has "stayed up": its death is not a crash loop, and
/// once one has, the pause before forking is reset.
pub(super) const STABLE_AFTER: Duration = Duration::from_secs(5);

/// The master's record of one worker.
#[derive(Debug)]
pub(super) struct Worker {
    pub(super) id: u64,
    pub(super) pid: Pid,
    pub(super) generation: u64,
    /// Its slot on the scoreboard.
    pub(super) slot: usize,
    pub(super) spawned: Instant,
    /// The `graceful_timeout` of the config this worker runs: the one it drains by.
    pub(super) grace: Duration,
    pub(super) state: WorkerState,
}

/// Where a worker is in its life: booting, then ready, then exiting (told to, or killed).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum WorkerState {
    /// Forked, not accepting yet. `error` is why its app could not start, as the worker said.
    Booting { error: Option<String> },
    /// Accepting since `at`, using `boot_mib` of resident memory then. `due` says why it is to
    /// be replaced, if it is: it serves until its successor is ready.
    Ready { at: Instant, boot_mib: u64, due: Option<Recycle> },
    /// Told to exit for `why` (`SIGTERM`, `SIGINT`, or `SIGABRT` if hung); killed if still
    /// alive at `deadline`.
    Exiting { deadline: Instant, why: Why },
    /// Sent `SIGKILL` for `why`: only its exit is awaited.
    Killed { why: Why },
}

impl Worker {
    /// Booting or ready: not told to exit.
    pub(super) fn is_active(&self) -> bool {
        matches!(self.state, WorkerState::Booting { .. } | WorkerState::Ready { .. })
    }

    /// Active and not due for recycling: a worker that counts toward its generation's size.
    pub(super) fn is_fresh(&self) -> bool {
        matches!(self.state, WorkerState::Booting { .. } | WorkerState::Ready { due: None, .. })
    }

    /// When it became ready, if it is ready (and not exiting).
    pub(super) fn ready_at(&self) -> Option<Instant> {
        match self.state {
            WorkerState::Ready { at, .. } => Some(at),
            _ => None,
        }
    }

    /// Why it is to be replaced, if it is ready and due.
    pub(super) fn due(&self) -> Option<&Recycle> {
        match &self.state {
            WorkerState::Ready { due, .. } => due.as_ref(),
            _ => None,
        }
    }

    /// How long it has been ready at `now`; zero if it is not.
    pub(super) fn up(&self, now: Instant) -> Duration {
        self.ready_at().map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// Why the master ended it, once it did.
    pub(super) fn why(&self) -> Option<&Why> {
        match &self.state {
            WorkerState::Exiting { why, .. } | WorkerState::Killed { why } => Some(why),
            WorkerState::Booting { .. } | WorkerState::Ready { .. } => None,
        }
    }
}

/// Why a worker is being replaced while it still serves.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Recycle {
    Requests {
        served: u64,
    },
    Memory {
        rss_mib: u64,
        limit: u64,
    },
    Lifetime {
        age: Duration,
    },
    /// The app asked for it (see `ipc::Message::Retire`).
    App {
        reason: String,
    },
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
            Recycle::App { reason } => write!(f, "{reason}"),
        }
    }
}

/// Why the master ended a worker: the second half of the line that logs its exit.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Why {
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
    pub(super) fn is_kill(&self) -> bool {
        matches!(self, Why::Hung { .. } | Why::BootTimeout(_))
    }
}

/// A generation whose workers are kept at strength: its number and how many it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wanted {
    pub(super) number: u64,
    pub(super) target: usize,
}

/// What the master's loop is to do.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Decision {
    /// Fork `count` workers of `generation`.
    Spawn { generation: u64, count: usize },
    /// Tell a worker to finish its requests and exit.
    Retire { worker: u64, why: Why },
    /// Every worker of the new generation of a reload is ready: the reload completes (the
    /// older generations are retired, see [`Pool::complete_reload`]).
    CompleteReload,
}

/// The pause before forking after workers die while booting or soon after: twice as long as
/// the last time, from [`BACKOFF_MIN`] up to [`BACKOFF_MAX`], until a worker stays up.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    /// Zero while workers stay up.
    pause: Duration,
    /// No fork before then.
    next_spawn: Instant,
    /// When a worker last died without staying up.
    last_failure: Option<Instant>,
}

impl Backoff {
    pub(super) fn new(now: Instant) -> Backoff {
        Backoff { pause: Duration::ZERO, next_spawn: now, last_failure: None }
    }

    /// A worker died (or was killed, or could not be forked) without staying up: the next
    /// fork waits, twice as long as the last time. Failures within one pause are one incident:
    /// workers that die together double it once. Returns the pause.
    pub(super) fn failed(&mut self, now: Instant) -> Duration {
        if self.last_failure.is_none_or(|t| now.duration_since(t) >= self.pause) {
            self.pause = (self.pause * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
            self.last_failure = Some(now);
        }
        self.next_spawn = self.next_spawn.max(now + self.pause);
        self.pause
    }

    /// Clears the pause once a worker started since the last failure has stayed up for
    /// [`STABLE_AFTER`]. Returns whether it did.
    pub(super) fn forgive(&mut self, workers: &[Worker], now: Instant) -> bool {
        let Some(failed) = self.last_failure else { return false };
        let stable = workers.iter().any(|w| {
            w.ready_at().is_some_and(|t| t > failed && now.duration_since(t) >= STABLE_AFTER)
        });
        if stable {
            self.reset(now);
        }
        stable
    }

    /// A reload: fork at once, as the new config may fix what made workers crash. The failure
    /// stays on record: the next one starts a new pause from [`BACKOFF_MIN`], and the log still
    /// says when workers stay up again (see [`Backoff::forgive`]).
    pub(super) fn retry_now(&mut self, now: Instant) {
        self.pause = Duration::ZERO;
        self.next_spawn = now;
    }

    /// No pause: workers stay up again.
    fn reset(&mut self, now: Instant) {
        self.pause = Duration::ZERO;
        self.last_failure = None;
        self.next_spawn = now;
    }

    /// Forks were just made: after failures, the next one waits a full pause.
    pub(super) fn spawned(&mut self, now: Instant) {
        if !self.pause.is_zero() {
            self.next_spawn = now + self.pause;
        }
    }

    /// When forking may go on.
    pub(super) fn next_spawn(&self) -> Instant {
        self.next_spawn
    }
}

/// The workers and the crash back-off.
#[derive(Debug)]
pub(super) struct Pool {
    pub(super) workers: Vec<Worker>,
    pub(super) backoff: Backoff,
}

impl Pool {
    pub(super) fn new(now: Instant) -> Pool {
        Pool { workers: Vec::new(), backoff: Backoff::new(now) }
    }

    pub(super) fn get(&self, id: u64) -> Option<&Worker> {
        self.workers.iter().find(|w| w.id == id)
    }

    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|w| w.id == id)
    }

    /// Active workers of a generation that are not due for recycling: those that count toward
    /// its size.
    pub(super) fn fresh_workers(&self, generation: u64) -> usize {
        self.workers.iter().filter(|w| w.generation == generation && w.is_fresh()).count()
    }

    /// Ready, active workers of a generation.
    pub(super) fn ready_workers(&self, generation: u64) -> usize {
        self.workers.iter().filter(|w| w.generation == generation && w.ready_at().is_some()).count()
    }

    /// Whether some generation of `wanted` is short of workers.
    pub(super) fn short(&self, wanted: &[Wanted]) -> bool {
        wanted.iter().any(|g| self.fresh_workers(g.number) < g.target)
    }

    /// When the pool is next to fork, if some generation of `wanted` is short of workers: at
    /// once (`now`), or once the crash pause is over. The master's loop sleeps no longer; until
    /// then, [`Pool::decide`] leaves a short generation as it is.
    pub(super) fn next_fork(&self, wanted: &[Wanted], now: Instant) -> Option<Instant> {
        self.short(wanted).then(|| self.backoff.next_spawn.max(now))
    }

    /// Whether every worker the newest generation wants is ready.
    pub(super) fn all_ready(&self, current: Wanted) -> bool {
        self.ready_workers(current.number) >= current.target
    }

    /// What brings each generation of `wanted` to its size at `now`: the newest first, then,
    /// while a reload is under way (`reloading`), the previous one, whose dead workers are
    /// replaced until the new generation takes over. A worker due for recycling counts as gone:
    /// its successor is started, and it is retired once the successor is ready. Ends with
    /// [`Decision::CompleteReload`] once the reload's new generation is ready.
    pub(super) fn decide(&self, wanted: &[Wanted], reloading: bool, now: Instant) -> Vec<Decision> {
        let mut out = Vec::new();
        // The workers this turn retires, as the rules after the first see the pool.
        let mut retired: Vec<u64> = Vec::new();
        let mut next_spawn = self.backoff.next_spawn;
        for generation in wanted {
            let serving = |w: &&Worker| w.generation == generation.number && w.is_active();
            let fresh = self.fresh_workers(generation.number);
            if fresh < generation.target {
                if now < next_spawn {
                    // Nothing else changes in this generation until forking goes on (the
                    // loop wakes for it, see `Pool::next_fork`).
                    continue;
                }
                // After failures, one at a time, each after the pause.
                let paused = !self.backoff.pause.is_zero();
                let count = if paused { 1 } else { generation.target - fresh };
                out.push(Decision::Spawn { generation: generation.number, count });
                if paused {
                    next_spawn = now + self.backoff.pause;
                }
            } else if fresh > generation.target {
                // Workers still booting go first (newest first), then the oldest ready ones:
                // the ready workers never drop below the target.
                let mut candidates: Vec<&Worker> =
                    self.workers.iter().filter(serving).filter(|w| w.is_fresh()).collect();
                candidates.sort_by_key(|w| match w.ready_at() {
                    None => (0, u64::MAX - w.id),
                    Some(_) => (1, w.id),
                });
                for w in candidates.iter().take(fresh - generation.target) {
                    retired.push(w.id);
                    out.push(Decision::Retire { worker: w.id, why: Why::Surplus });
                }
            }
            // Workers due for recycling whose successors are ready go, keeping the ready
            // workers of the generation at its size: each ready worker beyond the target lets
            // one due worker go.
            let staying = |w: &&Worker| !retired.contains(&w.id);
            let ready = self
                .workers
                .iter()
                .filter(serving)
                .filter(staying)
                .filter(|w| w.ready_at().is_some())
                .count();
            let spare = ready.saturating_sub(generation.target);
            let going: Vec<(u64, Recycle)> = (self.workers.iter().filter(serving).filter(staying))
                .filter_map(|w| Some((w.id, w.due()?.clone())))
                .take(spare)
                .collect();
            for (id, reason) in going {
                retired.push(id);
                out.push(Decision::Retire { worker: id, why: Why::Recycled(reason) });
            }
        }
        if let Some(&current) = wanted.first().filter(|_| reloading) {
            if self.all_ready(current) {
                out.push(Decision::CompleteReload);
            }
        }
        out
    }

    /// The active workers of a generation, to retire for `why`.
    pub(super) fn retire_generation(&self, number: u64, why: &Why) -> Vec<Decision> {
        self.workers
            .iter()
            .filter(|w| w.generation == number && w.is_active())
            .map(|w| Decision::Retire { worker: w.id, why: why.clone() })
            .collect()
    }

    /// A reload completes: every active worker of an older generation than `current` goes.
    pub(super) fn complete_reload(&self, current: u64) -> Vec<Decision> {
        self.workers
            .iter()
            .filter(|w| w.generation != current && w.is_active())
            .map(|w| Decision::Retire { worker: w.id, why: Why::Replaced { by: current } })
            .collect()
    }

    /// A worker that was ready `up` died or was killed as hung: soon after booting, that is a
    /// crash loop as much as a worker that cannot boot, and forking pauses. Returns the pause,
    /// if any.
    pub(super) fn lost(&mut self, up: Duration, now: Instant) -> Option<Duration> {
        (up < STABLE_AFTER).then(|| self.backoff.failed(now))
    }
}

/// Why recycling a worker this soon after it became ready would make a fork loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TooSoon {
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
pub(super) fn too_soon(reason: &Recycle, up: Duration, boot_mib: u64) -> Option<TooSoon> {
    if up >= STABLE_AFTER {
        return None;
    }
    match reason {
        Recycle::Requests { .. } => None,
        Recycle::Memory { limit, .. } if boot_mib > *limit => Some(TooSoon::LimitTooLow),
        Recycle::Memory { .. } => Some(TooSoon::SoonAfterBoot),
        Recycle::Lifetime { .. } => Some(TooSoon::LimitTooLow),
        Recycle::App { .. } => Some(TooSoon::SoonAfterBoot),
    }
}

/// The number of requests after which a worker asks to be recycled: `max_requests` plus a
/// random share of `max_requests_jitter`, so that workers started together do not all go
/// together.
pub(super) fn recycle_after(server: &ServerConfig, worker: u64) -> Option<u64> {
    use std::hash::{BuildHasher, Hasher};
    if server.max_requests == 0 {
        return None;
    }
    let mut random = std::hash::RandomState::new().build_hasher();
    random.write_u64(worker);
    let jitter = random.finish() % server.max_requests_jitter.saturating_add(1);
    Some(server.max_requests.saturating_add(jitter))
}

/// The worker count after a `TTIN`: one more, unless that would be more than
/// [`MAX_WORKERS`], for which a reload has no room.
pub(super) fn one_more(target: usize) -> Option<usize> {
    (target < MAX_WORKERS).then_some(target + 1)
}

/// The worker count after a `TTOU`: one fewer, never below one.
pub(super) fn one_fewer(target: usize) -> Option<usize> {
    (target > 1).then(|| target - 1)
}

#[cfg(test)]
mod tests;
