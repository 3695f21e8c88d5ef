//! The master's lifecycle as values: the [`Phase`] it is in, and the rules that depend on it
//! alone.
//!
//! A phase is two things, each recorded once: whether the server has *announced* that it
//! serves (every worker of its first generation has been ready; never taken back), and what
//! the master is doing ([`Activity`]): keeping its workers at strength, reloading (a new
//! generation booting beside the serving one, see [`super::reload`]), or stopping, of a named
//! [`StopKind`]. So *starting* is "steady, not announced yet" and *serving* is "steady,
//! announced"; a `HUP` during the first start is a reload that has announced nothing, and a
//! worker of the first generation that cannot boot then still stops the server. A stop is
//! final: the master exits once its workers are gone.
//!
//! The binary upgrade's progress is a value of its own ([`super::upgrade::Upgrading`]): a
//! master may reload while a manually upgraded successor serves beside it. A stop ends it:
//! [`StopKind::HandOver`] is then the one record that a successor serves.
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
pub(super) struct Phase {
    /// Whether every worker of the first generation has been ready and the server said so;
    /// until then, a worker that cannot boot stops the server (exit code 3), and the master
    /// does not speak for the service.
    announced: bool,
    activity: Activity,
}

/// What the master is doing.
#[derive(Debug)]
pub(super) enum Activity {
    /// Keeping the current generation at strength: starting, then serving.
    Steady,
    /// A new generation is booting beside the one that serves.
    Reloading(Reload),
    /// The master is stopping; it exits once its workers are gone.
    Stopping(StopKind),
}

/// A reload under way: the new generation (the master's current one) is booting, `previous`
/// still serves.
#[derive(Debug)]
pub(super) struct Reload {
    pub(super) started: Instant,
    /// The generation that served when the reload began: kept at strength until the new one is
    /// ready, and restored if it cannot boot.
    pub(super) previous: Generation,
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

impl Phase {
    /// The first start, before anything is announced.
    pub(super) fn new() -> Phase {
        Phase { announced: false, activity: Activity::Steady }
    }

    /// Whether the server has said it serves: every worker of its first generation was ready.
    pub(super) fn announced(&self) -> bool {
        self.announced
    }

    /// The first start is over, whatever the master is doing meanwhile (a reload begun during
    /// it goes on).
    pub(super) fn announce(&mut self) {
        self.announced = true;
    }

    pub(super) fn stopping(&self) -> Option<StopKind> {
        match self.activity {
            Activity::Stopping(kind) => Some(kind),
            _ => None,
        }
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.stopping().is_some()
    }

    pub(super) fn reload(&self) -> Option<&Reload> {
        match &self.activity {
            Activity::Reloading(r) => Some(r),
            _ => None,
        }
    }

    pub(super) fn reload_mut(&mut self) -> Option<&mut Reload> {
        match &mut self.activity {
            Activity::Reloading(r) => Some(r),
            _ => None,
        }
    }

    /// A reload begins (the master is steady: a reload under way is overtaken in place, see
    /// [`Phase::reload_mut`]; a stopping master reloads nothing).
    pub(super) fn begin_reload(&mut self, reload: Reload) {
        debug_assert!(matches!(self.activity, Activity::Steady), "{self:?}");
        self.activity = Activity::Reloading(reload);
    }

    /// Ends a reload under way, if any (completed, rolled back, or dropped by `WINCH`), and
    /// returns it.
    pub(super) fn end_reload(&mut self) -> Option<Reload> {
        match std::mem::replace(&mut self.activity, Activity::Steady) {
            Activity::Reloading(r) => Some(r),
            other => {
                self.activity = other;
                None
            }
        }
    }

    /// Whether `generation` is the new one of a reload under way, `current` being the newest.
    pub(super) fn is_reloading_to(&self, generation: u64, current: u64) -> bool {
        self.reload().is_some() && generation == current
    }

    /// The stop that `how` asks for: a hand-over if a successor serves, or if the stop under
    /// way is one (a successor that serves keeps the sockets however the workers stop).
    pub(super) fn stop_for(&self, how: Shutdown, successor_serves: bool) -> StopKind {
        let handing_over = matches!(self.stopping(), Some(StopKind::HandOver(_)));
        StopKind::new(how, handing_over || successor_serves)
    }

    /// Whether a stop asked for by `how` changes anything: a fast stop overrides a graceful
    /// one, nothing overrides a fast one.
    pub(super) fn stop_changes(&self, how: Shutdown) -> bool {
        match self.stopping() {
            None => true,
            Some(kind) => kind.workers() == Shutdown::Graceful && how == Shutdown::Fast,
        }
    }

    /// The master stops, of this kind. Whether it had announced is kept: a stop during the
    /// first start does not tell the service manager it is stopping (it never said it started).
    pub(super) fn stop(&mut self, kind: StopKind) {
        self.activity = Activity::Stopping(kind);
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

    fn phase(announced: bool, activity: Activity) -> Phase {
        Phase { announced, activity }
    }

    fn reloading() -> Activity {
        let previous = Generation { number: 1, config: Arc::new(Config::default()), target: 2 };
        Activity::Reloading(Reload { started: Instant::now(), previous })
    }

    #[test]
    fn a_boot_failure_means_what_the_phase_and_the_generation_say() {
        let stopping = Activity::Stopping(StopKind::Graceful);
        // (announced, activity, generation of the failed worker, current generation, verdict)
        let cases = [
            (false, Activity::Steady, 1, 1, BootFailure::StopServer),
            (true, Activity::Steady, 1, 1, BootFailure::Pause),
            (true, reloading(), 2, 2, BootFailure::RollBack),
            (true, reloading(), 1, 2, BootFailure::Pause),
            // A HUP during the first start: the new generation is rolled back, a worker of the
            // first one that cannot boot still stops the server.
            (false, reloading(), 2, 2, BootFailure::RollBack),
            (false, reloading(), 1, 2, BootFailure::StopServer),
            (true, stopping, 1, 1, BootFailure::Ignore),
            (false, Activity::Stopping(StopKind::Fast), 1, 1, BootFailure::Ignore),
        ];
        for (announced, activity, generation, current, verdict) in cases {
            let phase = phase(announced, activity);
            assert_eq!(phase.boot_failure(generation, current), verdict, "{phase:?} {generation}");
        }
        // What the master then reports as its exit status.
        assert_eq!(crate::error::Error::Boot("worker 1".into()).exit_code(), 3);
    }

    #[test]
    fn the_first_start_ends_once_and_a_reload_begun_during_it_goes_on() {
        let mut phase = Phase::new();
        phase.begin_reload(match reloading() {
            Activity::Reloading(r) => r,
            _ => unreachable!(),
        });
        assert!(!phase.announced());
        phase.announce();
        assert!(phase.announced() && phase.reload().is_some(), "still reloading");
        // Rolled back or completed, it stays announced: the service was told it serves.
        assert!(phase.end_reload().is_some());
        assert!(phase.end_reload().is_none(), "one reload ends once");
        assert!(phase.announced() && !phase.is_stopping());
        phase.stop(StopKind::Fast);
        assert!(phase.announced());
        assert!(phase.end_reload().is_none() && phase.is_stopping(), "a stop is not a reload");
    }

    #[test]
    fn a_fast_stop_overrides_a_graceful_one_and_nothing_overrides_a_fast_one() {
        let stopping = |kind| phase(true, Activity::Stopping(kind));
        let cases = [
            (phase(true, Activity::Steady), Shutdown::Graceful, true),
            (phase(false, reloading()), Shutdown::Fast, true),
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
    }

    #[test]
    fn a_stop_hands_over_while_a_successor_serves_and_a_hand_over_stays_one() {
        let steady = phase(true, Activity::Steady);
        let handing_over = phase(true, Activity::Stopping(StopKind::HandOver(Shutdown::Graceful)));
        let graceful = phase(true, Activity::Stopping(StopKind::Graceful));
        // (phase, how, whether a successor serves, the stop)
        let cases = [
            (&steady, Shutdown::Graceful, false, StopKind::Graceful),
            (&steady, Shutdown::Fast, false, StopKind::Fast),
            (&steady, Shutdown::Graceful, true, StopKind::HandOver(Shutdown::Graceful)),
            (&steady, Shutdown::Fast, true, StopKind::HandOver(Shutdown::Fast)),
            // INT after the hand-over began: the successor keeps the sockets.
            (&handing_over, Shutdown::Fast, false, StopKind::HandOver(Shutdown::Fast)),
            (&graceful, Shutdown::Fast, false, StopKind::Fast),
        ];
        for (phase, how, serves, kind) in cases {
            assert_eq!(phase.stop_for(how, serves), kind, "{phase:?} then {how:?}, {serves}");
        }
    }
}
