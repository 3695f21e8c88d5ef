//! The master's lifecycle as values: the [`Phase`] it is in (starting, serving, reloading,
//! stopping, and how), and the rules that depend on it alone.
//!
//! A master starts its first generation ([`Phase::Starting`]) and, once every worker of it has
//! been ready, says so and serves ([`Phase::Serving`]). `HUP` starts a new generation beside
//! the serving one ([`Phase::Reloading`], see [`super::reload`]); it ends in serving either
//! way. A stop ([`Phase::Stopping`]) is final: the master exits once its workers are gone.
//! The binary upgrade's progress is a value of its own ([`super::upgrade::Upgrading`]): a
//! master may reload while a manually upgraded successor serves beside it.
//!
//! A [`Generation`] is the config a set of workers was started with, and how many it wants.

use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;

/// A generation's config and size.
#[derive(Debug, Clone)]
pub(super) struct Generation {
    pub(super) number: u64,
    pub(super) config: Arc<Config>,
    /// How many workers are wanted.
    pub(super) target: usize,
}

/// Where the master is in its life.
#[derive(Debug)]
pub(super) enum Phase {
    /// The first generation is booting: nothing has been announced yet, and a worker that
    /// cannot boot stops the server (exit code 3).
    Starting,
    /// Every worker of the first generation has been ready: the server said it serves.
    Serving,
    /// A new generation is booting beside the one that serves.
    Reloading(Reload),
    /// The master is stopping; it exits once its workers are gone.
    Stopping(Stop),
}

/// Whether the server had said it serves when a reload or a stop began: the phase a reload
/// returns to if it is rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Since {
    /// During the first start: the first generation was not ready yet.
    Start,
    /// After it.
    Serving,
}

/// A reload under way: the new generation is booting, `previous` still serves.
#[derive(Debug)]
pub(super) struct Reload {
    pub(super) started: Instant,
    /// The generation that served when the reload began: kept at strength until the new one is
    /// ready, and restored if it cannot boot.
    pub(super) previous: Generation,
    /// Whether the first start was over; a `HUP` during it is a reload too.
    pub(super) since: Since,
}

/// How the workers are told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shutdown {
    /// `TERM`: stop accepting, let in-flight requests finish (up to `graceful_timeout`).
    Graceful,
    /// `INT`, `QUIT`: workers exit at once.
    Fast,
}

impl Shutdown {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Shutdown::Graceful => "graceful",
            Shutdown::Fast => "fast",
        }
    }
}

/// A named way of stopping (pingora's `GracefulTerminate`, `FastShutdown`, `GracefulUpgrade`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopKind {
    /// `TERM`: the sockets are closed (unix paths removed); workers finish what they serve.
    Graceful,
    /// `INT`, `QUIT`: the sockets are closed; workers exit at once.
    Fast,
    /// A new master serves (a binary upgrade): the sockets are left to it, and the workers stop
    /// gracefully, or at once after a manual upgrade committed with `QUIT`.
    HandOver(Shutdown),
}

impl StopKind {
    /// How the workers stop.
    pub(super) fn workers(self) -> Shutdown {
        match self {
            StopKind::Graceful => Shutdown::Graceful,
            StopKind::Fast => Shutdown::Fast,
            StopKind::HandOver(how) => how,
        }
    }

    /// The stop asked for by `how`, for a master that has a successor serving or not.
    pub(super) fn new(how: Shutdown, successor_serves: bool) -> StopKind {
        match (how, successor_serves) {
            (how, true) => StopKind::HandOver(how),
            (Shutdown::Graceful, false) => StopKind::Graceful,
            (Shutdown::Fast, false) => StopKind::Fast,
        }
    }
}

/// A stop under way.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stop {
    pub(super) kind: StopKind,
    pub(super) since: Since,
}

/// What a worker that could not boot means, by phase and by the generation it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BootFailure {
    /// The master is stopping anyway.
    Ignore,
    /// A worker of the new generation of a reload: the reload is given up.
    RollBack,
    /// A worker of the first start: the server stops with exit code 3.
    StopServer,
    /// Otherwise: the next fork waits a little longer (see `pool::Backoff`).
    Pause,
}

impl Since {
    /// The phase a reload that ends (completed, rolled back, or dropped by `WINCH`) returns to.
    pub(super) fn phase(self) -> Phase {
        match self {
            Since::Start => Phase::Starting,
            Since::Serving => Phase::Serving,
        }
    }
}

impl Phase {
    /// Ends a reload under way, if any, without completing it or rolling it back.
    pub(super) fn end_reload(&mut self) {
        if let Phase::Reloading(r) = self {
            *self = r.since.phase();
        }
    }

    /// Whether the server has said it serves: every worker of its first generation was ready.
    pub(super) fn announced(&self) -> bool {
        match self {
            Phase::Starting => false,
            Phase::Serving => true,
            Phase::Reloading(r) => r.since == Since::Serving,
            Phase::Stopping(s) => s.since == Since::Serving,
        }
    }

    /// The first start, or the start a reload began from, is over.
    pub(super) fn announce(&mut self) {
        match self {
            Phase::Starting => *self = Phase::Serving,
            Phase::Reloading(r) => r.since = Since::Serving,
            Phase::Serving | Phase::Stopping(_) => {}
        }
    }

    /// The phase a reload or a stop begun now remembers.
    pub(super) fn since(&self) -> Since {
        if self.announced() { Since::Serving } else { Since::Start }
    }

    pub(super) fn stopping(&self) -> Option<Stop> {
        match self {
            Phase::Stopping(stop) => Some(*stop),
            _ => None,
        }
    }

    pub(super) fn is_stopping(&self) -> bool {
        matches!(self, Phase::Stopping(_))
    }

    pub(super) fn reload(&self) -> Option<&Reload> {
        match self {
            Phase::Reloading(r) => Some(r),
            _ => None,
        }
    }

    /// Whether `generation` is the new one of a reload under way.
    pub(super) fn is_reloading_to(&self, generation: u64, current: u64) -> bool {
        matches!(self, Phase::Reloading(_)) && generation == current
    }

    /// Whether a stop asked for by `how` changes anything: a fast stop overrides a graceful
    /// one, nothing overrides a fast one.
    pub(super) fn stop_changes(&self, how: Shutdown) -> bool {
        match self.stopping() {
            None => true,
            Some(stop) => stop.kind.workers() == Shutdown::Graceful && how == Shutdown::Fast,
        }
    }

    /// What a boot failure of a worker of `generation` means, `current` being the newest.
    pub(super) fn boot_failure(&self, generation: u64, current: u64) -> BootFailure {
        if self.is_stopping() {
            BootFailure::Ignore
        } else if self.is_reloading_to(generation, current) {
            BootFailure::RollBack
        } else if !self.announced() {
            BootFailure::StopServer
        } else {
            BootFailure::Pause
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reloading(since: Since) -> Phase {
        let previous = Generation { number: 1, config: Arc::new(Config::default()), target: 2 };
        Phase::Reloading(Reload { started: Instant::now(), previous, since })
    }

    #[test]
    fn a_boot_failure_means_what_the_phase_and_the_generation_say() {
        let stop = Stop { kind: StopKind::Graceful, since: Since::Serving };
        // (phase, generation of the failed worker, current generation, verdict)
        let cases = [
            (Phase::Starting, 1, 1, BootFailure::StopServer),
            (Phase::Serving, 1, 1, BootFailure::Pause),
            (reloading(Since::Serving), 2, 2, BootFailure::RollBack),
            (reloading(Since::Serving), 1, 2, BootFailure::Pause),
            // A HUP during the first start: the new generation is rolled back, a worker of the
            // first one that cannot boot still stops the server.
            (reloading(Since::Start), 2, 2, BootFailure::RollBack),
            (reloading(Since::Start), 1, 2, BootFailure::StopServer),
            (Phase::Stopping(stop), 1, 1, BootFailure::Ignore),
        ];
        for (phase, generation, current, verdict) in cases {
            assert_eq!(phase.boot_failure(generation, current), verdict, "{phase:?} {generation}");
        }
        // What the master then reports as its exit status.
        assert_eq!(crate::error::Error::Boot("worker 1".into()).exit_code(), 3);
    }

    #[test]
    fn the_first_start_ends_once_even_inside_a_reload() {
        let mut phase = Phase::Starting;
        assert!(!phase.announced());
        phase.announce();
        assert!(matches!(phase, Phase::Serving));
        let mut phase = reloading(Since::Start);
        assert!(!phase.announced());
        phase.announce();
        assert!(phase.announced() && phase.reload().is_some(), "still reloading");
    }

    #[test]
    fn a_fast_stop_overrides_a_graceful_one_and_nothing_overrides_a_fast_one() {
        let stopping = |kind| Phase::Stopping(Stop { kind, since: Since::Serving });
        let cases = [
            (Phase::Serving, Shutdown::Graceful, true),
            (Phase::Serving, Shutdown::Fast, true),
            (stopping(StopKind::Graceful), Shutdown::Graceful, false),
            (stopping(StopKind::Graceful), Shutdown::Fast, true),
            (stopping(StopKind::Fast), Shutdown::Graceful, false),
            (stopping(StopKind::Fast), Shutdown::Fast, false),
            (stopping(StopKind::HandOver(Shutdown::Graceful)), Shutdown::Fast, true),
            (stopping(StopKind::HandOver(Shutdown::Fast)), Shutdown::Graceful, false),
        ];
        for (phase, how, changes) in cases {
            assert_eq!(phase.stop_changes(how), changes, "{phase:?} then {how:?}");
        }
        assert_eq!(StopKind::new(Shutdown::Fast, true), StopKind::HandOver(Shutdown::Fast));
        assert_eq!(StopKind::new(Shutdown::Graceful, false), StopKind::Graceful);
    }
}
