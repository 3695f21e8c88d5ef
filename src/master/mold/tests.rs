//! The molds' pure decision: which to start and which to stop.

use std::time::Instant;

use nix::unistd::Pid;

use super::*;

fn mold(generation: u64, pid: i32, state: MoldState) -> Mold {
    Mold { generation, pid: Pid::from_raw(pid), line: None, started: Instant::now(), state }
}

#[test]
fn each_preloading_generation_has_one_mold_and_the_others_none() {
    let loading = || MoldState::Loading { error: None };
    let exiting = || MoldState::Exiting { deadline: Instant::now() };
    let start = |generation| MoldDecision::Start { generation };
    let stop = |pid| MoldDecision::Stop { pid: Pid::from_raw(pid) };
    // (molds, generations that preload, may fork, decisions)
    let cases = [
        // The first start: one mold, for generation 1.
        (vec![], vec![1], true, vec![start(1)]),
        // Loading or ready, it is the generation's.
        (vec![mold(1, 10, loading())], vec![1], true, vec![]),
        (vec![mold(1, 10, MoldState::Ready)], vec![1], true, vec![]),
        // A reload: generation 2 gets its own, generation 1 keeps its own meanwhile.
        (vec![mold(1, 10, MoldState::Ready)], vec![2, 1], true, vec![start(2)]),
        // The reload completed (or rolled back): the mold of the generation gone goes.
        (
            vec![mold(1, 10, MoldState::Ready), mold(2, 20, MoldState::Ready)],
            vec![2],
            true,
            vec![stop(10)],
        ),
        // A mold told to exit, or killed, is not the generation's any more: a new one starts.
        (vec![mold(1, 10, exiting())], vec![1], true, vec![start(1)]),
        (vec![mold(1, 10, MoldState::Killed)], vec![1], true, vec![start(1)]),
        // Not during the pause after failures; stopping goes on.
        (vec![mold(1, 10, MoldState::Ready)], vec![2], false, vec![stop(10)]),
        // Stopping (nothing wanted), or preload turned off by a reload: every mold goes once.
        (vec![mold(1, 10, MoldState::Ready), mold(2, 20, exiting())], vec![], true, vec![stop(10)]),
    ];
    for (molds, preloading, may_fork, expected) in cases {
        assert_eq!(decide(&molds, &preloading, may_fork), expected, "{molds:?} {preloading:?}");
    }
}
