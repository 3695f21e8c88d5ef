//! The master's decisions, without forking: each test builds a pool as the master would see it
//! and checks what [`Pool::decide`] and [`Backoff`] say to do.

use super::*;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// "Now" for a test: an hour ahead, so that the times a test sets in the past stay valid
/// instants even on a machine up for less than a minute (the decisions only compare them).
fn later_now() -> Instant {
    Instant::now() + 3600 * SEC
}

/// A worker as the master records it; `ready` is how long before `at` it became ready.
fn worker(id: u64, generation: u64, ready: Option<Duration>, at: Instant) -> Worker {
    Worker {
        id,
        pid: Pid::from_raw(1000 + id as i32),
        generation,
        slot: id as usize,
        spawned: at - 60 * SEC,
        grace: 30 * SEC,
        state: match ready {
            Some(ago) => WorkerState::Ready { at: at - ago, boot_mib: 10, due: None },
            None => WorkerState::Booting { error: None },
        },
    }
}

fn ready(id: u64, generation: u64, at: Instant) -> Worker {
    worker(id, generation, Some(10 * SEC), at)
}

fn booting(id: u64, generation: u64, at: Instant) -> Worker {
    worker(id, generation, None, at)
}

fn exiting(mut w: Worker, why: Why) -> Worker {
    w.state = WorkerState::Exiting { deadline: later_now() + SEC, why };
    w
}

/// A ready worker, due for recycling (only a ready worker can be: one still booting that is
/// found due is retired at once, see `Master::recycle`).
fn due(mut w: Worker) -> Worker {
    let WorkerState::Ready { due, .. } = &mut w.state else { panic!("{w:?} is not ready") };
    *due = Some(Recycle::Requests { served: 1000 });
    w
}

/// A pool at `at`, with no pause before forking.
fn pool(workers: Vec<Worker>, at: Instant) -> Pool {
    Pool { workers, backoff: Backoff::new(at - SEC) }
}

fn wanted(number: u64, target: usize) -> Wanted {
    Wanted { number, target }
}

fn spawn(generation: u64, count: usize) -> Decision {
    Decision::Spawn { generation, count }
}

fn retire(worker: u64, why: Why) -> Decision {
    Decision::Retire { worker, why }
}

#[test]
fn a_reload_brings_the_new_generation_up_beside_the_old_and_retires_the_old_only_once_ready() {
    let now = later_now();
    let reload = [wanted(2, 2), wanted(1, 2)];
    // (workers, what the master is to do)
    let cases: Vec<(Vec<Worker>, Vec<Decision>)> = vec![
        // HUP: the new generation is forked beside the serving one, which is left alone.
        (vec![ready(1, 1, now), ready(2, 1, now)], vec![spawn(2, 2)]),
        // Half of it ready: nothing changes.
        (vec![ready(1, 1, now), ready(2, 1, now), ready(3, 2, now), booting(4, 2, now)], vec![]),
        // The old generation lost a worker meanwhile: it is replaced, to keep it at strength.
        (vec![ready(2, 1, now), ready(3, 2, now), booting(4, 2, now)], vec![spawn(1, 1)]),
        // Every new worker ready: the reload completes.
        (
            vec![ready(1, 1, now), ready(2, 1, now), ready(3, 2, now), ready(4, 2, now)],
            vec![Decision::CompleteReload],
        ),
    ];
    for (i, (workers, expected)) in cases.into_iter().enumerate() {
        assert_eq!(pool(workers, now).decide(&reload, true, now), expected, "case {i}");
    }
    let done =
        pool(vec![ready(1, 1, now), ready(2, 1, now), ready(3, 2, now), ready(4, 2, now)], now);
    assert_eq!(
        done.complete_reload(2),
        vec![retire(1, Why::Replaced { by: 2 }), retire(2, Why::Replaced { by: 2 })],
    );
    // Once complete, generation 1 is no longer wanted: nothing brings it back.
    let after = pool(
        vec![
            exiting(ready(1, 1, now), Why::Replaced { by: 2 }),
            ready(3, 2, now),
            ready(4, 2, now),
        ],
        now,
    );
    assert_eq!(after.decide(&[wanted(2, 2)], false, now), vec![]);
}

#[test]
fn a_rolled_back_generation_is_retired_and_the_previous_one_serves_on() {
    let now = later_now();
    // Generation 2 could not boot: one of its workers died booting, one still boots.
    let failed = pool(vec![ready(1, 1, now), ready(2, 1, now), booting(4, 2, now)], now);
    assert_eq!(failed.retire_generation(2, &Why::RolledBack), vec![retire(4, Why::RolledBack)]);
    // Generation 1 is the only one wanted again: at strength, nothing to fork, nothing to
    // complete; and had it lost a worker during the reload, it gets it back.
    let rolled_back = pool(
        vec![ready(1, 1, now), ready(2, 1, now), exiting(booting(4, 2, now), Why::RolledBack)],
        now,
    );
    assert_eq!(rolled_back.decide(&[wanted(1, 2)], false, now), vec![]);
    let short = pool(vec![ready(1, 1, now), exiting(booting(4, 2, now), Why::RolledBack)], now);
    assert_eq!(short.decide(&[wanted(1, 2)], false, now), vec![spawn(1, 1)]);
}

#[test]
fn a_worker_due_for_recycling_is_replaced_successor_first() {
    let now = later_now();
    let recycled = Why::Recycled(Recycle::Requests { served: 1000 });
    let cases: Vec<(Vec<Worker>, Vec<Decision>)> = vec![
        // Due: it no longer counts, so its successor is forked; it serves on.
        (vec![due(ready(1, 1, now)), ready(2, 1, now)], vec![spawn(1, 1)]),
        // The successor boots: the due worker still serves.
        (vec![due(ready(1, 1, now)), ready(2, 1, now), booting(3, 1, now)], vec![]),
        // The successor is ready: the due worker goes.
        (
            vec![due(ready(1, 1, now)), ready(2, 1, now), ready(3, 1, now)],
            vec![retire(1, recycled.clone())],
        ),
        // Two due, one successor ready: one goes, the other waits for its own successor.
        (
            vec![
                due(ready(1, 1, now)),
                due(ready(2, 1, now)),
                ready(3, 1, now),
                booting(4, 1, now),
            ],
            vec![retire(1, recycled)],
        ),
    ];
    for (i, (workers, expected)) in cases.into_iter().enumerate() {
        assert_eq!(pool(workers, now).decide(&[wanted(1, 2)], false, now), expected, "case {i}");
    }
}

#[test]
fn recycling_soon_after_boot_is_paused_whoever_found_it() {
    let soon = 300 * MS;
    let memory = Recycle::Memory { rss_mib: 20, limit: 16 };
    // (reason, time since ready, MiB once booted, verdict)
    let cases = [
        (memory.clone(), soon, 3, Some(TooSoon::SoonAfterBoot)),
        (memory.clone(), soon, 17, Some(TooSoon::LimitTooLow)),
        (memory, STABLE_AFTER, 17, None),
        (Recycle::Lifetime { age: soon }, soon, 0, Some(TooSoon::LimitTooLow)),
        (Recycle::Requests { served: 1 }, soon, 0, None),
    ];
    for (reason, up, boot_mib, verdict) in cases {
        assert_eq!(too_soon(&reason, up, boot_mib), verdict, "{reason} after {up:?}");
    }
    // The pause it makes holds the successor back, while the due worker serves on.
    let now = later_now();
    let mut paused = pool(vec![due(ready(1, 1, now))], now);
    let pause = paused.backoff.failed(now);
    assert_eq!(paused.decide(&[wanted(1, 1)], false, now), vec![]);
    assert_eq!(paused.next_fork(&[wanted(1, 1)], now), Some(now + pause), "the loop's wake-up");
    assert_eq!(paused.decide(&[wanted(1, 1)], false, now + pause), vec![spawn(1, 1)]);
}

#[test]
fn ttin_and_ttou_stay_between_one_and_max_workers() {
    // (target, after TTIN, after TTOU)
    let cases = [
        (1, Some(2), None),
        (2, Some(3), Some(1)),
        (MAX_WORKERS - 1, Some(MAX_WORKERS), Some(MAX_WORKERS - 2)),
        (MAX_WORKERS, None, Some(MAX_WORKERS - 1)),
    ];
    for (target, more, fewer) in cases {
        assert_eq!(one_more(target), more, "ttin at {target}");
        assert_eq!(one_fewer(target), fewer, "ttou at {target}");
    }
}

#[test]
fn a_surplus_goes_booting_workers_newest_first_then_the_oldest_ready() {
    let now = later_now();
    let cases: Vec<(Vec<Worker>, usize, Vec<u64>)> = vec![
        (vec![ready(1, 1, now), ready(2, 1, now), ready(3, 1, now)], 2, vec![1]),
        (vec![ready(1, 1, now), booting(2, 1, now), booting(3, 1, now)], 2, vec![3]),
        (vec![ready(1, 1, now), booting(2, 1, now), booting(3, 1, now)], 1, vec![3, 2]),
        (vec![ready(4, 1, now), ready(2, 1, now), booting(3, 1, now)], 1, vec![3, 2]),
        // A worker already exiting or due for recycling is not counted twice.
        (vec![exiting(ready(1, 1, now), Why::Surplus), ready(2, 1, now)], 1, vec![]),
    ];
    for (workers, target, retired) in cases {
        let expected: Vec<Decision> = retired.iter().map(|&id| retire(id, Why::Surplus)).collect();
        assert_eq!(pool(workers, now).decide(&[wanted(1, target)], false, now), expected);
    }
}

#[test]
fn the_crash_pause_doubles_from_100_ms_to_30_s() {
    let start = later_now();
    let mut backoff = Backoff::new(start);
    let mut at = start;
    let mut pauses = Vec::new();
    for _ in 0..11 {
        let pause = backoff.failed(at);
        pauses.push(pause.as_millis());
        assert_eq!(backoff.next_spawn(), at + pause);
        // The next failure comes after this pause is over: a new incident.
        at += pause;
    }
    assert_eq!(
        pauses,
        [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000],
        "doubling, capped at BACKOFF_MAX"
    );
}

#[test]
fn failures_within_one_pause_double_it_once() {
    let now = later_now();
    let mut backoff = Backoff::new(now);
    assert_eq!(backoff.failed(now), BACKOFF_MIN);
    // Two more workers die together with the first: one incident.
    assert_eq!(backoff.failed(now + 10 * MS), BACKOFF_MIN);
    assert_eq!(backoff.failed(now + 50 * MS), BACKOFF_MIN);
    assert_eq!(backoff.failed(now + 100 * MS), 2 * BACKOFF_MIN, "the next one is a new incident");
}

#[test]
fn while_paused_workers_are_forked_one_at_a_time_after_each_pause() {
    let now = later_now();
    let mut paused = pool(vec![], now);
    let pause = paused.backoff.failed(now);
    let want = [wanted(1, 3)];
    assert_eq!(paused.decide(&want, false, now), vec![]);
    assert_eq!(paused.next_fork(&want, now), Some(now + pause), "the loop wakes then");
    let later = now + pause;
    assert_eq!(paused.next_fork(&want, later), Some(later), "and forks at once");
    assert_eq!(paused.decide(&want, false, later), vec![spawn(1, 1)], "one, not three");
    // The loop tells the back-off it forked (`Backoff::spawned`): the next one waits a pause.
    paused.backoff.spawned(later);
    assert_eq!(paused.decide(&want, false, later), vec![]);
    assert_eq!(paused.next_fork(&want, later), Some(later + pause));
    // During a reload, one fork per pause for both generations together.
    let both = [wanted(2, 1), wanted(1, 1)];
    let at = later + pause;
    assert_eq!(paused.decide(&both, true, at), vec![spawn(2, 1)]);
    paused.backoff.spawned(at);
    assert_eq!(paused.next_fork(&both, at), Some(at + pause));
    // Without a pause, every missing worker at once; at strength, the loop need not wake.
    let unpaused = pool(vec![], now);
    assert_eq!(unpaused.decide(&want, false, now), vec![spawn(1, 3)]);
    assert_eq!(unpaused.next_fork(&want, now), Some(now));
    let full = pool(vec![ready(1, 1, now), ready(2, 1, now), booting(3, 1, now)], now);
    assert_eq!(full.next_fork(&want, now), None);
}

#[test]
fn the_pause_ends_once_a_worker_started_after_the_failure_stays_up() {
    let failed_at = later_now();
    let mut backoff = Backoff::new(failed_at);
    backoff.failed(failed_at);
    let booted = failed_at + SEC;
    let w = |now: Instant| worker(1, 1, Some(now - booted), now);
    // Up for less than STABLE_AFTER: still paused.
    let early = booted + STABLE_AFTER - MS;
    assert!(!backoff.forgive(&[w(early)], early));
    // A worker ready before the failure proves nothing.
    let old = worker(2, 1, Some(STABLE_AFTER + 2 * SEC), early);
    assert!(!backoff.forgive(&[old], early));
    let stable = booted + STABLE_AFTER;
    assert!(backoff.forgive(&[w(stable)], stable));
    assert_eq!(backoff.next_spawn(), stable);
    assert_eq!(backoff.failed(stable), BACKOFF_MIN, "and the next pause starts over");
}

#[test]
fn a_worker_lost_soon_after_boot_pauses_forking_one_that_stayed_up_does_not() {
    let now = later_now();
    let hung = Why::Hung { silent: 30 * SEC, timeout: 30 * SEC };
    // (how long it had been ready when killed as hung, whether its replacement waits)
    let cases = [(SEC, true), (STABLE_AFTER - MS, true), (STABLE_AFTER, false), (60 * SEC, false)];
    for (up, waits) in cases {
        let mut p = pool(vec![exiting(worker(1, 1, Some(up), now), hung.clone())], now);
        let paused = p.lost(up, now).is_some();
        assert_eq!(paused, waits, "killed {up:?} after booting");
        let decided = p.decide(&[wanted(1, 1)], false, now);
        let expected = if waits { vec![] } else { vec![spawn(1, 1)] };
        assert_eq!(decided, expected, "killed {up:?} after booting");
        let wake = if waits { now + BACKOFF_MIN } else { now };
        assert_eq!(p.next_fork(&[wanted(1, 1)], now), Some(wake), "killed {up:?} after booting");
    }
}

#[test]
fn a_reload_forks_at_once_and_the_log_still_says_when_workers_stay_up_again() {
    let failed_at = later_now();
    let mut backoff = Backoff::new(failed_at);
    backoff.failed(failed_at);
    let reload = failed_at + 10 * MS;
    backoff.retry_now(reload);
    assert_eq!(backoff.next_spawn(), reload, "no pause after a reload");
    // A worker of the new config that stays up ends the incident, which is logged.
    let booted = reload + SEC;
    let stable = booted + STABLE_AFTER;
    assert!(backoff.forgive(&[worker(1, 2, Some(stable - booted), stable)], stable));
    // A failure after the reload starts a new pause from the minimum.
    let mut again = Backoff::new(failed_at);
    again.failed(failed_at);
    again.failed(failed_at + BACKOFF_MIN);
    again.retry_now(reload);
    assert_eq!(again.failed(reload + MS), BACKOFF_MIN);
}
