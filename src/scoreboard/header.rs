//! The scoreboard's header: what the master publishes about itself (pid, start, generation,
//! reloads and their results, worker exits by cause), the counters of workers already reaped,
//! and the marks that let another program check it reads a scoreboard it understands.
//!
//! The master is the header's only writer.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::counters::Counters;

/// The first word of a scoreboard: `forkserv` in ASCII. Another program (`forkserve status`)
/// checks it, and [`LAYOUT`], before it reads anything else.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"forkserv");

/// The layout's version: raised whenever a field of the header, a slot or the counters moves,
/// so that `forkserve status` of another build refuses a scoreboard it would misread.
pub(crate) const LAYOUT: u64 = 5;

/// Why a worker exited, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitCause {
    /// Told to stop: a reload, `TTOU`, a stop of the server, a rollback.
    Stopped,
    /// Replaced while it served: `max_requests`, `max_worker_memory`, `max_worker_lifetime`,
    /// or the app asked.
    Recycled,
    /// Killed for going silent past `timeout`.
    Hung,
    /// Died without being told to.
    Crashed,
    /// Could not boot: its app failed to start, it died booting, or it did not boot within
    /// `boot_timeout`.
    BootFailure,
}

impl ExitCause {
    pub(crate) const ALL: [ExitCause; 5] = [
        ExitCause::Stopped,
        ExitCause::Recycled,
        ExitCause::Hung,
        ExitCause::Crashed,
        ExitCause::BootFailure,
    ];

    /// The metrics' label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ExitCause::Stopped => "stopped",
            ExitCause::Recycled => "recycled",
            ExitCause::Hung => "hung",
            ExitCause::Crashed => "crashed",
            ExitCause::BootFailure => "boot_failure",
        }
    }
}

/// How a reload (`HUP`, or `--reload` seeing a change) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReloadResult {
    /// The new generation took over.
    Completed,
    /// The new config was refused before any worker started: the old one serves on.
    Rejected,
    /// The new generation could not boot: the old one serves on.
    RolledBack,
    /// Overtaken by a newer reload before its generation was ready: its workers are stopped,
    /// and the newer one carries on (and is counted when it ends).
    Superseded,
}

impl ReloadResult {
    pub(crate) const ALL: [ReloadResult; 4] = [
        ReloadResult::Completed,
        ReloadResult::Rejected,
        ReloadResult::RolledBack,
        ReloadResult::Superseded,
    ];

    /// The metrics' label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Completed => "completed",
            ReloadResult::Rejected => "rejected",
            ReloadResult::RolledBack => "rolled_back",
            ReloadResult::Superseded => "superseded",
        }
    }
}

#[repr(C)]
pub(crate) struct Header {
    pub(super) magic: AtomicU64,
    pub(super) layout: AtomicU64,
    /// How many slots follow the header, and how big each is: with [`LAYOUT`], what a reader
    /// checks before it maps them.
    pub(super) slots: AtomicU64,
    pub(super) slot_bytes: AtomicU64,
    pub(super) master_pid: AtomicU32,
    /// 1 while a reload is under way.
    pub(super) reloading: AtomicU32,
    /// When the master started: monotonic milliseconds (for its age) and Unix milliseconds
    /// (for `process_start_time_seconds`).
    pub(super) started_ms: AtomicU64,
    pub(super) started_unix_ms: AtomicU64,
    /// The generation serving (or, during a reload, the one being started).
    pub(super) generation: AtomicU64,
    /// One more than the highest slot ever claimed: readers look no further, and touch no
    /// page of the mapping beyond.
    pub(super) high_water: AtomicU64,
    pub(super) reloads: [AtomicU64; ReloadResult::ALL.len()],
    pub(super) exits: [AtomicU64; ExitCause::ALL.len()],
    /// A sequence lock over moving a reaped worker's counters into `retired`: odd while a move
    /// is under way, so that a reader never counts them twice, or not at all.
    pub(super) seq: AtomicU64,
    /// The counters of every worker reaped so far.
    pub(super) retired: Counters,
    /// The requests every worker reaped so far had started (their slots' `requests`): with
    /// the live slots', every request the server took, counted whether or not the metrics
    /// (which keep `retired`) are on. Moved under `seq` too.
    pub(super) retired_requests: AtomicU64,
    /// 1 while a new master serves beside this one (a manual binary upgrade not yet
    /// committed): this master's workers leave the metrics socket they share to the new
    /// master's, whose counters are the ones that go on.
    pub(super) successor_serves: AtomicU32,
}

impl Header {
    /// Stamps a fresh header: what identifies the scoreboard and the master.
    pub(super) fn stamp(&self, slots: usize, slot_bytes: usize) {
        self.slots.store(slots as u64, Ordering::Relaxed);
        self.slot_bytes.store(slot_bytes as u64, Ordering::Relaxed);
        self.master_pid.store(std::process::id(), Ordering::Relaxed);
        self.started_ms.store(super::now_ms(), Ordering::Relaxed);
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let unix_ms = unix.map_or(0, |d| d.as_millis() as u64);
        self.started_unix_ms.store(unix_ms, Ordering::Relaxed);
        self.layout.store(LAYOUT, Ordering::Relaxed);
        self.magic.store(MAGIC, Ordering::Release);
    }
}
