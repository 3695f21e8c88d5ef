//! The upgrade's progress, without forking: each test drives [`Upgrading`] (the old master's
//! side) or [`Succession`] (the new master's) through the events the master reacts to, and
//! checks where it ends and what the master is told to do.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::*;
use crate::master::phase::{Phase, Shutdown, StopKind};

const NEW: i32 = 4242;
const OLD: i32 = 4141;

fn successor() -> Successor {
    let (channel, _) = UnixStream::pair().expect("a socket pair");
    Successor { pid: Pid::from_raw(NEW), channel }
}

fn handover() -> Handover {
    let (channel, _) = UnixStream::pair().expect("a socket pair");
    Handover { channel, old_master: Pid::from_raw(OLD) }
}

/// The stage an upgrade is at, to compare.
#[derive(Debug, PartialEq, Eq)]
enum Stage {
    Idle,
    Booting,
    BothServe,
    WorkersStopped,
}

fn stage(upgrading: &Upgrading) -> Stage {
    match upgrading {
        Upgrading::Idle => Stage::Idle,
        Upgrading::Booting { .. } => Stage::Booting,
        Upgrading::BothServe(_) => Stage::BothServe,
        Upgrading::WorkersStopped(_) => Stage::WorkersStopped,
    }
}

/// An upgrade brought to `to` the way the master brings it there: USR2, the new master
/// serving (manual), WINCH.
fn at(to: Stage) -> Upgrading {
    let mut upgrading = Upgrading::Idle;
    if to == Stage::Idle {
        return upgrading;
    }
    upgrading.start(successor(), Instant::now() + Duration::from_secs(60));
    if to == Stage::Booting {
        return upgrading;
    }
    assert_eq!(upgrading.successor_ready(UpgradeMode::Manual), Some(Served::BothServe));
    if to == Stage::BothServe {
        return upgrading;
    }
    assert!(upgrading.stop_workers());
    assert_eq!(stage(&upgrading), to);
    upgrading
}

#[test]
fn usr2_boots_a_new_master_that_must_be_ready_by_its_deadline() {
    let mut upgrading = Upgrading::Idle;
    assert_eq!(upgrading.pid(), None);
    let deadline = Instant::now() + Duration::from_secs(60);
    upgrading.start(successor(), deadline);
    assert_eq!(stage(&upgrading), Stage::Booting);
    assert_eq!(upgrading.pid(), Some(Pid::from_raw(NEW)), "a second USR2 is ignored");
    assert_eq!(upgrading.booting().map(|(s, d)| (s.pid, d)), Some((Pid::from_raw(NEW), deadline)));
    // Booting, it neither serves nor has stopped this master's workers.
    assert!(!upgrading.successor_serves() && !upgrading.workers_stopped());
}

#[test]
fn an_automatic_upgrade_hands_over_once_the_new_master_serves() {
    let mut upgrading = at(Stage::Booting);
    let served = upgrading.successor_ready(UpgradeMode::Auto);
    assert_eq!(served, Some(Served::HandOver { new_master: Pid::from_raw(NEW) }));
    // The upgrade is over; the stop that follows is the one record of the hand-over.
    assert_eq!(stage(&upgrading), Stage::Idle);
    let mut phase = Phase::new();
    phase.announce();
    phase.stop(StopKind::HandOver(Shutdown::Graceful));
    assert!(matches!(upgrading.end(), Ending::Nothing));
    // An INT meanwhile stops the workers at once, and the sockets are still the new master's.
    assert_eq!(phase.stop_for(Shutdown::Fast, false), StopKind::HandOver(Shutdown::Fast));
}

#[test]
fn a_manual_upgrade_is_committed_by_winch_then_quit_to_the_old_master() {
    let mut upgrading = at(Stage::Booting);
    assert_eq!(upgrading.successor_ready(UpgradeMode::Manual), Some(Served::BothServe));
    assert_eq!(stage(&upgrading), Stage::BothServe);
    assert!(upgrading.successor_serves() && !upgrading.workers_stopped());
    // WINCH: this master's workers stop; the new master serves.
    assert!(upgrading.stop_workers());
    assert_eq!(stage(&upgrading), Stage::WorkersStopped);
    assert!(upgrading.successor_serves() && upgrading.workers_stopped());
    // QUIT: a fast stop that leaves the sockets to the new master, which is now in charge.
    let phase = Phase::new();
    let kind = phase.stop_for(Shutdown::Fast, upgrading.successor_serves());
    assert_eq!(kind, StopKind::HandOver(Shutdown::Fast));
    let ending = upgrading.end();
    assert!(
        matches!(ending, Ending::Committed { new_master } if new_master == Pid::from_raw(NEW)),
        "{ending:?}"
    );
    assert_eq!(stage(&upgrading), Stage::Idle);
}

#[test]
fn hup_after_winch_brings_the_workers_back_and_winch_stops_them_again() {
    let mut upgrading = at(Stage::WorkersStopped);
    upgrading.workers_return();
    assert_eq!(stage(&upgrading), Stage::BothServe);
    assert!(upgrading.stop_workers());
    assert_eq!(stage(&upgrading), Stage::WorkersStopped);
    // A HUP at any other stage leaves the upgrade as it is.
    for from in [Stage::Idle, Stage::Booting, Stage::BothServe] {
        let mut upgrading = at(from);
        let before = stage(&upgrading);
        upgrading.workers_return();
        assert_eq!(stage(&upgrading), before);
    }
}

#[test]
fn winch_is_ignored_until_a_manual_upgrade_has_a_new_master_serving() {
    // (stage, whether WINCH stops the workers, the stage after)
    let cases = [
        (Stage::Idle, false, Stage::Idle),
        (Stage::Booting, false, Stage::Booting),
        (Stage::BothServe, true, Stage::WorkersStopped),
        (Stage::WorkersStopped, true, Stage::WorkersStopped),
    ];
    for (from, stops, after) in cases {
        let mut upgrading = at(from);
        assert_eq!(upgrading.stop_workers(), stops, "{upgrading:?}");
        assert_eq!(stage(&upgrading), after);
    }
    // The new master's readiness means nothing outside its boot.
    for from in [Stage::Idle, Stage::BothServe, Stage::WorkersStopped] {
        let mut upgrading = at(from);
        let before = stage(&upgrading);
        assert_eq!(upgrading.successor_ready(UpgradeMode::Auto), None);
        assert_eq!(stage(&upgrading), before);
    }
}

#[test]
fn a_failed_upgrade_at_any_stage_stops_the_new_master_and_this_one_serves_on() {
    for from in [Stage::Booting, Stage::BothServe, Stage::WorkersStopped] {
        let mut upgrading = at(from);
        let given_up = upgrading.give_up().map(|s| s.pid);
        assert_eq!(given_up, Some(Pid::from_raw(NEW)));
        assert_eq!(stage(&upgrading), Stage::Idle);
        // Idle again: workers are wanted, USR2 is heard, a stop hands over nothing.
        assert!(!upgrading.workers_stopped() && upgrading.pid().is_none());
        assert!(!upgrading.successor_serves());
    }
    assert!(Upgrading::Idle.give_up().is_none(), "nothing to stop");
}

#[test]
fn a_stop_commits_a_serving_new_master_and_abandons_a_booting_one() {
    // (stage, how the stop ends the upgrade, what the stop is after TERM)
    let graceful_handover = StopKind::HandOver(Shutdown::Graceful);
    let cases = [
        (Stage::Idle, "nothing", StopKind::Graceful),
        (Stage::Booting, "abandoned", StopKind::Graceful),
        (Stage::BothServe, "committed", graceful_handover),
        (Stage::WorkersStopped, "committed", graceful_handover),
    ];
    for (from, ends, kind) in cases {
        let mut upgrading = at(from);
        assert_eq!(Phase::new().stop_for(Shutdown::Graceful, upgrading.successor_serves()), kind);
        let ending = match upgrading.end() {
            Ending::Nothing => "nothing",
            Ending::Abandoned(s) if s.pid == Pid::from_raw(NEW) => "abandoned",
            Ending::Committed { new_master } if new_master == Pid::from_raw(NEW) => "committed",
            other => panic!("{other:?}"),
        };
        assert_eq!(ending, ends);
        assert_eq!(stage(&upgrading), Stage::Idle, "a stop ends the upgrade");
    }
}

#[test]
fn a_new_master_tells_the_old_one_or_takes_charge_if_it_is_gone() {
    // (old master alive, mode, what to do, succession after)
    let cases = [
        (true, UpgradeMode::Auto, "tell", "in charge"),
        (true, UpgradeMode::Manual, "tell", "beside old"),
        (false, UpgradeMode::Auto, "old gone", "in charge"),
        (false, UpgradeMode::Manual, "old gone", "in charge"),
    ];
    let name = |s: &Succession| match s {
        Succession::InCharge => "in charge",
        Succession::TakingOver(_) => "taking over",
        Succession::BesideOld => "beside old",
    };
    for (alive, mode, does, after) in cases {
        let mut succession = Succession::TakingOver(handover());
        let mut asked = None;
        let first = succession.serving(
            |old| {
                asked = Some(old);
                alive
            },
            mode,
        );
        assert_eq!(asked, Some(Pid::from_raw(OLD)), "it checks on its own old master");
        let did = match first {
            FirstServing::TellOld(h, m) if h.old_master == Pid::from_raw(OLD) && m == mode => {
                "tell"
            }
            FirstServing::OldGone(old) if old == Pid::from_raw(OLD) => "old gone",
            other => panic!("{other:?}"),
        };
        assert_eq!((did, name(&succession)), (does, after), "alive {alive}, {mode:?}");
    }
    // A master not started by an upgrade only says it serves.
    let mut alone = Succession::InCharge;
    assert!(matches!(
        alone.serving(|_| panic!("no old master"), UpgradeMode::Auto),
        FirstServing::Alone
    ));
    // Beside the old master until it goes; then in charge, once.
    let mut beside = Succession::BesideOld;
    assert!(beside.old_gone());
    assert_eq!(name(&beside), "in charge");
    assert!(!beside.old_gone(), "already in charge");
    assert!(!Succession::TakingOver(handover()).old_gone(), "it takes charge as it serves");
}
