//! A worker's watch on its own resident memory against `max_worker_memory`: the levels (within,
//! over the limit, over the ceiling) and reading `/proc/self/statm`.

use std::cell::{Cell, OnceCell};
use std::fs::File;

use tokio::sync::Notify;

/// A worker's own watch on its resident memory, so that a fast-growing app is caught within
/// milliseconds rather than at the next heartbeat (up to a second, in which an app allocating
/// as fast as it can grows by hundreds of MiB).
pub(crate) struct MemoryWatch {
    /// `max_worker_memory`, in KiB; 0 while nothing is watched.
    pub(super) limit_kib: Cell<u64>,
    /// The coarse-clock time from which the next request that starts reads the resident
    /// memory; `u64::MAX` while nothing is watched, so that the test on every request is one
    /// comparison.
    pub(super) next_ms: Cell<u64>,
    /// `/proc/self/statm`, kept open: each reading is one `pread`.
    pub(super) statm: OnceCell<File>,
    /// The highest level reached, and the resident memory (KiB) that reached it.
    level: Cell<MemoryLevel>,
    rss_kib: Cell<u64>,
    /// Wakes the worker's task that acts on a new level (see `worker::watch_memory`).
    pub(crate) changed: Notify,
}

/// Where a worker's resident memory stands against `max_worker_memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum MemoryLevel {
    /// At or below the limit.
    Within,
    /// Over the limit: the worker is replaced, successor first, and serves on until then.
    OverLimit,
    /// Over [`CEILING_FACTOR`] times the limit: the worker stops taking new work while its
    /// successor boots, so that its memory is bounded even if the successor is slow to boot
    /// or cannot boot at all.
    OverCeiling,
}

/// The hard ceiling, as a multiple of `max_worker_memory`. Twice the limit: a worker that took
/// its whole life so far to grow to the limit would need as long again to reach it, far longer
/// than a successor's boot, so only a worker growing much faster than it ever did (a runaway
/// request) loses its capacity; and the worst case stays easy to plan for, two limits per
/// worker. (Limit + 50% would be the tighter bound, but would stop more workers that merely
/// grow during a slow boot.)
pub(crate) const CEILING_FACTOR: u64 = 2;

/// The level of `rss_kib` against a limit of `limit_kib` (a pure decision, unit-tested).
pub(crate) fn memory_level(rss_kib: u64, limit_kib: u64) -> MemoryLevel {
    if rss_kib > limit_kib.saturating_mul(CEILING_FACTOR) {
        MemoryLevel::OverCeiling
    } else if rss_kib > limit_kib {
        MemoryLevel::OverLimit
    } else {
        MemoryLevel::Within
    }
}

impl MemoryWatch {
    pub(super) fn new() -> Self {
        MemoryWatch {
            limit_kib: Cell::new(0),
            next_ms: Cell::new(u64::MAX),
            statm: OnceCell::new(),
            level: Cell::new(MemoryLevel::Within),
            rss_kib: Cell::new(0),
            changed: Notify::new(),
        }
    }

    /// The highest level reached so far.
    pub(crate) fn level(&self) -> MemoryLevel {
        self.level.get()
    }

    /// The resident memory that reached [`MemoryWatch::level`], in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        self.rss_kib.get()
    }

    /// The limit, in MiB.
    pub(crate) fn limit_mib(&self) -> u64 {
        self.limit_kib.get() / 1024
    }

    /// Compares a reading with the limit; wakes [`MemoryWatch::changed`] when it reaches a
    /// higher level, and ends the watch once over the ceiling, as nothing more is to be done.
    pub(super) fn record(&self, rss_kib: u64) {
        let limit = self.limit_kib.get();
        if limit == 0 {
            return;
        }
        let level = memory_level(rss_kib, limit);
        if level <= self.level.get() {
            return;
        }
        self.level.set(level);
        self.rss_kib.set(rss_kib);
        if level == MemoryLevel::OverCeiling {
            self.next_ms.set(u64::MAX);
        }
        self.changed.notify_one();
    }
}

/// This process's resident memory in KiB, from `/proc/self/statm`.
pub(super) fn resident_kib() -> Option<u64> {
    parse_statm(&std::fs::read_to_string("/proc/self/statm").ok()?)
}

/// The resident memory in KiB that a `/proc/PID/statm` line gives.
pub(super) fn parse_statm(statm: &str) -> Option<u64> {
    thread_local! {
        static PAGE_KIB: u64 = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4, |bytes| bytes as u64 / 1024);
    }
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_KIB.with(|k| *k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::{Board, Line, MEMORY_CHECK_MS, Scoreboard};
    use std::time::Duration;

    #[test]
    fn memory_is_within_over_the_limit_or_over_twice_the_limit() {
        assert_eq!(memory_level(100, 100), MemoryLevel::Within);
        assert_eq!(memory_level(101, 100), MemoryLevel::OverLimit);
        assert_eq!(memory_level(200, 100), MemoryLevel::OverLimit);
        assert_eq!(memory_level(201, 100), MemoryLevel::OverCeiling);
        assert_eq!(memory_level(u64::MAX, u64::MAX), MemoryLevel::Within, "no overflow");
    }

    #[test]
    fn the_memory_watch_reports_the_limit_then_the_ceiling_from_requests_and_heartbeats() {
        let board = Scoreboard::new().unwrap();
        let index = board.claim(9, 1).unwrap();
        let worker = Board::new(board.all(), index, 64);
        worker.booted();
        assert!(worker.watch_memory(1).is_err(), "over the limit already: not watched");
        let rss_mib = board.rss_kib(index) / 1024;
        // Room for what the other tests of this process allocate meanwhile.
        let limit = rss_mib + 32;
        worker.watch_memory(limit).unwrap();
        worker.request_started(Line::new("GET", "/"));
        assert_eq!(worker.memory.level(), MemoryLevel::Within);
        let over = std::hint::black_box(vec![1u8; 48 << 20]);
        // The next reading is due MEMORY_CHECK_MS after the last, on the coarse clock.
        std::thread::sleep(Duration::from_millis(MEMORY_CHECK_MS + 10));
        worker.request_started(Line::new("GET", "/"));
        assert_eq!(worker.memory.level(), MemoryLevel::OverLimit);
        let rss = worker.memory.rss_kib();
        assert!(rss / 1024 > limit, "{rss} KiB");
        assert_eq!(board.rss_kib(index), rss, "and the master sees it at once");
        assert_ne!(worker.memory.next_ms.get(), u64::MAX, "still watched, for the ceiling");

        // Past twice the limit, found by a heartbeat (no request needed).
        let more = (2 * limit + 16).saturating_sub(rss / 1024) as usize;
        let ceiling = std::hint::black_box(vec![1u8; more << 20]);
        worker.beat();
        assert_eq!(worker.memory.level(), MemoryLevel::OverCeiling);
        assert!(worker.memory.rss_kib() / 1024 > 2 * limit);
        assert_eq!(worker.memory.next_ms.get(), u64::MAX, "the watch has ended");
        drop((over, ceiling));
    }
}
