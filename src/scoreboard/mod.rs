//! The scoreboard: one slot of shared memory per worker, which the worker writes as it runs and
//! the master reads to supervise it (and, later, to report metrics and status).
//!
//! The master maps it (anonymous, `MAP_SHARED`) before the first fork, so that every worker
//! inherits the same pages. A slot is made of atomics only: a worker updates its own slot without
//! locks or system calls, and the master reads any slot at any time, even one whose worker is
//! stopped or stuck. The variable-length fields (a request's method and path) are published with
//! a sequence lock, so the master never sees half of one line and half of another.
//!
//! What a worker keeps there: its pid, id and generation, when it was spawned and booted, its
//! last heartbeat (from a timer task on its event loop, so a blocked loop stops beating), its
//! resident memory, the requests it has served, its open connections and in-flight requests,
//! the oldest in-flight request, and the request whose handler code is running right now.
//! Workers also read their peers' open connections, to share new connections between them
//! ([`Board::busier_than_peers`]), and watch their own memory against `max_worker_memory` as
//! requests start and at each heartbeat ([`Board::watch_memory`]).
//!
//! The same pages also hold what the metrics and `forkserve status` report: a header the
//! master writes ([`header`]: its pid and start, the generation, reloads, worker exits by
//! cause, and the counters of workers already reaped), and each slot's request counters
//! ([`counters`]). The mapping is a memfd named `forkserve-scoreboard`, so that
//! `forkserve status`, another process, can find it in `/proc/PID/fd` of the master and map it
//! read-only ([`view`]): it reads the server as it is, while a reload is under way too,
//! without asking the master anything.
//!
//! This module owns the mapping, the slots and what the master reads of them; [`board`] is a
//! worker's side of its slot, [`memory`] the watch on `max_worker_memory`, [`view`] the
//! whole scoreboard as a report.
//!
//! Times are milliseconds of `CLOCK_MONOTONIC`, which is the same clock in every process.
use std::fmt;
use std::io;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::Duration;

use nix::sys::mman::{MapFlags, ProtFlags, mmap};
use nix::time::{ClockId, clock_gettime};

mod board;
pub(crate) mod counters;
mod header;
mod memory;
pub(crate) mod view;

pub(crate) use board::Board;
use counters::Counters;
pub(crate) use header::{ExitCause, ReloadResult};
use header::{Header, LAYOUT, MAGIC};
pub(crate) use memory::MemoryLevel;
pub(crate) use view::{Attached, Report, WorkerPhase, WorkerView};

/// The memfd's name, as `/proc/PID/fd` shows it (`/memfd:forkserve-scoreboard (deleted)`).
pub(crate) const MEMFD_NAME: &str = "forkserve-scoreboard";

/// How many slots the scoreboard has: the most workers that can be alive at once, counting
/// those of an old generation still draining and successors booting. Two full generations (a
/// reload) always fit: `workers` is at most half of it.
pub(crate) const SLOTS: usize = 2 * crate::config::MAX_WORKERS;

/// How often at most a worker with a `max_worker_memory` reads its resident memory, in
/// milliseconds of the coarse clock (which moves a tick at a time, 1 to 10 ms). Reading it
/// costs one `pread` of `/proc/self/statm` (about 1 µs), so at most 0.03% of a busy worker's
/// time; between readings a starting request pays one comparison.
pub(crate) const MEMORY_CHECK_MS: u64 = 4;

/// How many bytes of a request line (`METHOD /path`) are kept; longer paths are truncated.
const LINE_WORDS: usize = 15;
const LINE_BYTES: usize = LINE_WORDS * 8;

/// Milliseconds of the monotonic clock, comparable across processes.
pub(crate) fn now_ms() -> u64 {
    now_us() / 1000
}

/// Milliseconds of the monotonic clock as of the last tick (a few ms behind at most): the
/// cheaper reading, for what is stamped on every request.
pub(crate) fn now_ms_coarse() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE) {
        Ok(ts) => (ts.tv_sec() as u64) * 1000 + (ts.tv_nsec() as u64) / 1_000_000,
        Err(_) => now_ms(),
    }
}

/// Microseconds of the monotonic clock.
pub(crate) fn now_us() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always available");
    (ts.tv_sec() as u64) * 1_000_000 + (ts.tv_nsec() as u64) / 1000
}

/// One worker's slot. Zeroed memory is a free slot.
#[repr(C)]
pub(crate) struct Slot {
    /// The worker's id; 0 when the slot is free. Written by the master only.
    worker: AtomicU64,
    generation: AtomicU64,
    pid: AtomicU32,
    connections: AtomicU32,
    in_flight: AtomicU32,
    /// 1 while the worker's thread is inside the app's handler code.
    in_handler: AtomicU32,
    spawned_ms: AtomicU64,
    /// 0 until the worker is ready.
    booted_ms: AtomicU64,
    heartbeat_ms: AtomicU64,
    requests: AtomicU64,
    rss_kib: AtomicU64,
    /// The oldest request in flight.
    oldest: RequestRecord,
    /// The request whose handler ran last (running now if `in_handler` is 1).
    running: RequestRecord,
    /// Connections parked (idle, their protocol's buffers let go), among `connections`.
    parked: AtomicU32,
    /// 1 once the worker was told to stop and drains its connections.
    draining: AtomicU32,
    /// The requests it served, for the metrics (see [`counters`]).
    pub(crate) counters: Counters,
}

/// A request line published under a sequence lock: odd `seq` while it is being written.
#[repr(C)]
struct RequestRecord {
    seq: AtomicU64,
    /// The worker-local request number; 0 for none.
    id: AtomicU64,
    started_ms: AtomicU64,
    len: AtomicU64,
    line: [AtomicU64; LINE_WORDS],
}

impl RequestRecord {
    /// Publishes a request (only the slot's worker writes, so there is one writer).
    fn write(&self, id: u64, started_ms: u64, line: &Line) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.id.store(id, Ordering::Relaxed);
        self.started_ms.store(started_ms, Ordering::Relaxed);
        self.len.store(line.len as u64, Ordering::Relaxed);
        // Only the words that hold the line: the reader reads `len` bytes.
        for (word, chunk) in self.line.iter().zip(line.bytes[..line.len].chunks(8)) {
            let mut bytes = [0u8; 8];
            bytes[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    fn clear(&self) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.id.store(0, Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// Reads a consistent copy, or `None` if there is no request (or the writer kept changing
    /// it, which a worker worth reporting on does not).
    fn read(&self, now: u64) -> Option<RequestSeen> {
        for _ in 0..64 {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let id = self.id.load(Ordering::Relaxed);
            let started = self.started_ms.load(Ordering::Relaxed);
            let len = (self.len.load(Ordering::Relaxed) as usize).min(LINE_BYTES);
            let mut bytes = [0u8; LINE_BYTES];
            for (word, chunk) in self.line.iter().zip(bytes.chunks_mut(8)) {
                chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
            }
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) != before {
                continue;
            }
            if id == 0 {
                return None;
            }
            return Some(RequestSeen {
                id,
                line: String::from_utf8_lossy(&bytes[..len]).into_owned(),
                age: Duration::from_millis(now.saturating_sub(started)),
            });
        }
        None
    }
}

/// `METHOD /path`, cut to what a slot holds.
#[derive(Clone, Copy)]
pub(crate) struct Line {
    bytes: [u8; LINE_BYTES],
    len: usize,
}

impl Line {
    pub(crate) fn new(method: &str, path: &str) -> Line {
        let mut line = Line { bytes: [0; LINE_BYTES], len: 0 };
        for part in [method.as_bytes(), b" ", path.as_bytes()] {
            let n = part.len().min(LINE_BYTES - line.len);
            line.bytes[line.len..line.len + n].copy_from_slice(&part[..n]);
            line.len += n;
        }
        line
    }
}

/// The shared mapping: the header, then [`SLOTS`] slots. It is never unmapped: the master
/// and every worker use it until they exit.
pub(crate) struct Scoreboard {
    header: &'static Header,
    slots: &'static [Slot],
    /// The memfd, kept open for the master's life (and closed on exec): what
    /// `forkserve status` finds in `/proc/PID/fd`. The mapping itself does not need it.
    #[cfg_attr(not(test), allow(dead_code))]
    fd: std::os::fd::RawFd,
}

/// The header's size, rounded up so that the slots start on a cache line.
const HEADER_BYTES: usize = size_of::<Header>().div_ceil(64) * 64;

/// The mapping's size in bytes.
const fn mapping_bytes() -> usize {
    HEADER_BYTES + SLOTS * size_of::<Slot>()
}

impl Scoreboard {
    /// Maps a zeroed scoreboard, shared with every process forked after this, and stamps its
    /// header with this process as the master.
    pub(crate) fn new() -> io::Result<Scoreboard> {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let fd = memfd_create(MEMFD_NAME, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
        nix::unistd::ftruncate(&fd, mapping_bytes() as i64)?;
        // Its size is fixed: a process that could write the memfd (only this user's) cannot
        // shrink it under the mappings, which would kill every process that reads it.
        let seals = nix::fcntl::SealFlag::F_SEAL_SHRINK
            | nix::fcntl::SealFlag::F_SEAL_GROW
            | nix::fcntl::SealFlag::F_SEAL_SEAL;
        nix::fcntl::fcntl(&fd, nix::fcntl::F_ADD_SEALS(seals))?;
        let mut board = Scoreboard::map(&fd, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE)?;
        board.fd = std::os::fd::IntoRawFd::into_raw_fd(fd);
        board.header.stamp(SLOTS, size_of::<Slot>());
        Ok(board)
    }

    /// Maps a scoreboard's memfd, all of it.
    fn map(fd: &impl std::os::fd::AsFd, prot: ProtFlags) -> io::Result<Scoreboard> {
        let bytes = NonZeroUsize::new(mapping_bytes()).expect("the mapping is not empty");
        // SAFETY: a fresh shared mapping of a memfd aliases no Rust object, so creating it
        // cannot break any reference.
        let ptr = unsafe { mmap(None, bytes, prot, MapFlags::MAP_SHARED, fd, 0) }?;
        // SAFETY: the mapping is page-aligned and `mapping_bytes()` long, which the memfd's
        // size (fixed by its seals, or checked by the reader) covers; the kernel zero-filled
        // it. `Header` and `Slot` are atomics only, for which zero is a valid value, and
        // atomics may be shared between processes (and loaded from read-only memory). It is
        // never unmapped, so `'static` holds; all access goes through the atomics, never
        // through `&mut`. The slots start at `HEADER_BYTES`, a multiple of their alignment.
        let (header, slots) = unsafe {
            let base = ptr.as_ptr().cast::<u8>();
            let header = &*base.cast::<Header>();
            let slots = std::slice::from_raw_parts(base.add(HEADER_BYTES).cast::<Slot>(), SLOTS);
            (header, slots)
        };
        Ok(Scoreboard { header, slots, fd: -1 })
    }

    /// Another handle on the same mapping, for a worker: what the metrics read (see
    /// [`Scoreboard::report`]). It does not own the memfd, which stays the master's.
    pub(crate) fn shared(&self) -> Scoreboard {
        Scoreboard { header: self.header, slots: self.slots, fd: -1 }
    }

    /// Takes a free slot for a worker about to be forked; `None` if all are taken.
    pub(crate) fn claim(&self, worker: u64, generation: u64) -> Option<usize> {
        let index = self.slots.iter().position(|s| s.worker.load(Ordering::Relaxed) == 0)?;
        let slot = &self.slots[index];
        slot.reset();
        self.header.high_water.fetch_max(index as u64 + 1, Ordering::Relaxed);
        slot.generation.store(generation, Ordering::Relaxed);
        slot.spawned_ms.store(now_ms(), Ordering::Relaxed);
        slot.worker.store(worker, Ordering::Release);
        Some(index)
    }

    /// Records the pid of the worker in a slot (the master does, right after the fork).
    pub(crate) fn set_pid(&self, index: usize, pid: u32) {
        self.slots[index].pid.store(pid, Ordering::Relaxed);
    }

    /// Frees the slot of a worker that has been reaped (or was never started), keeping its
    /// request counters in the totals.
    pub(crate) fn release(&self, index: usize) {
        let slot = &self.slots[index];
        let header = self.header;
        let seq = header.seq.load(Ordering::Relaxed);
        header.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        header.retired.absorb(&slot.counters);
        // The master is the header's only writer: no locked instruction needed.
        let requests = header.retired_requests.load(Ordering::Relaxed);
        let served = slot.requests.load(Ordering::Relaxed);
        header.retired_requests.store(requests.wrapping_add(served), Ordering::Relaxed);
        slot.reset();
        slot.worker.store(0, Ordering::Release);
        header.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// A slot, as its worker or a reader sees it. (Workers reach theirs through
    /// [`Board`], readers through [`Scoreboard::report`]: only the tests look at one directly.)
    #[cfg(test)]
    pub(crate) fn slot(&self, index: usize) -> &'static Slot {
        &self.slots[index]
    }

    /// Publishes the generation the master serves (or is starting), and whether a reload is
    /// under way.
    pub(crate) fn set_generation(&self, generation: u64, reloading: bool) {
        self.header.generation.store(generation, Ordering::Relaxed);
        self.header.reloading.store(u32::from(reloading), Ordering::Relaxed);
    }

    /// Whether a new master serves beside this one (see `Header::successor_serves`).
    pub(crate) fn set_successor_serves(&self, serves: bool) {
        self.header.successor_serves.store(u32::from(serves), Ordering::Relaxed);
    }

    /// Whether a new master serves beside this one: read by the workers' metrics endpoint.
    pub(crate) fn successor_serves(&self) -> bool {
        self.header.successor_serves.load(Ordering::Relaxed) != 0
    }

    /// Counts a reload that ended.
    pub(crate) fn reload_ended(&self, result: ReloadResult) {
        let i = ReloadResult::ALL.iter().position(|r| *r == result).expect("listed");
        self.header.reloads[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a worker's exit.
    pub(crate) fn worker_exited(&self, cause: ExitCause) {
        let i = ExitCause::ALL.iter().position(|c| *c == cause).expect("listed");
        self.header.exits[i].fetch_add(1, Ordering::Relaxed);
    }

    /// What the worker in a slot last published.
    pub(crate) fn read(&self, index: usize) -> Snapshot {
        let s = &self.slots[index];
        let now = now_ms();
        Snapshot {
            requests: s.requests.load(Ordering::Relaxed),
            connections: s.connections.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Relaxed),
            in_handler: s.in_handler.load(Ordering::Relaxed) == 1,
            rss_kib: s.rss_kib.load(Ordering::Relaxed),
            oldest: s.oldest.read(now),
            running: s.running.read(now),
        }
    }

    /// Time since the worker in a slot last beat; `None` before its first beat.
    pub(crate) fn since_heartbeat(&self, index: usize) -> Option<Duration> {
        let heartbeat = self.slots[index].heartbeat_ms.load(Ordering::Acquire);
        (heartbeat != 0).then(|| Duration::from_millis(now_ms().saturating_sub(heartbeat)))
    }

    /// The resident memory the worker in a slot last reported, in KiB.
    pub(crate) fn rss_kib(&self, index: usize) -> u64 {
        self.slots[index].rss_kib.load(Ordering::Relaxed)
    }

    /// Every slot.
    pub(crate) fn all(&self) -> &'static [Slot] {
        self.slots
    }
}

impl Slot {
    fn reset(&self) {
        for field in [
            &self.generation,
            &self.spawned_ms,
            &self.booted_ms,
            &self.heartbeat_ms,
            &self.requests,
            &self.rss_kib,
        ] {
            field.store(0, Ordering::Relaxed);
        }
        for field in [
            &self.pid,
            &self.connections,
            &self.in_flight,
            &self.in_handler,
            &self.parked,
            &self.draining,
        ] {
            field.store(0, Ordering::Relaxed);
        }
        self.counters.clear();
        // The worker is gone or not started: no writer. A worker that died while writing
        // left its sequence odd; start even again.
        for record in [&self.oldest, &self.running] {
            record.id.store(0, Ordering::Relaxed);
            record.seq.store(0, Ordering::Release);
        }
    }
}

/// A copy of one slot, as the master sees it.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) requests: u64,
    pub(crate) connections: u32,
    pub(crate) in_flight: u32,
    pub(crate) in_handler: bool,
    pub(crate) rss_kib: u64,
    pub(crate) oldest: Option<RequestSeen>,
    pub(crate) running: Option<RequestSeen>,
}

/// A request as the scoreboard shows it.
#[derive(Debug, Clone)]
pub(crate) struct RequestSeen {
    /// The worker-local request number: the same request in two records has the same one.
    pub(crate) id: u64,
    pub(crate) line: String,
    pub(crate) age: Duration,
}

impl fmt::Display for RequestSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (started {:.1} s ago)", self.line, self.age.as_secs_f64())
    }
}

impl Snapshot {
    /// What the worker was doing, for a log line: the request its thread is stuck in, if any,
    /// and its oldest request in flight.
    pub(crate) fn activity(&self) -> String {
        let mut out = format!(
            "{} request(s) in flight, {} connection(s) open, {} served, {} MiB resident",
            self.in_flight,
            self.connections,
            self.requests,
            self.rss_kib / 1024
        );
        let running = self.running.as_ref().filter(|_| self.in_handler);
        if let Some(r) = running {
            out.push_str(&format!("; blocked in the handler of {r}"));
        }
        match &self.oldest {
            Some(o) if running.is_some_and(|r| r.id == o.id) => {}
            Some(o) => out.push_str(&format!("; oldest in flight: {o}")),
            None => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_shows_the_oldest_and_the_running_request() {
        let board = Scoreboard::new().unwrap();
        let index = board.claim(7, 1).unwrap();
        let worker = Board::new(board.all(), index, 64);
        worker.booted();
        let first = worker.request_started(Line::new("GET", "/slow"));
        let second = worker.request_started(Line::new("POST", &"/x".repeat(200)));
        worker.enter_handler(second);
        assert!(board.since_heartbeat(index).unwrap() < Duration::from_secs(1));
        assert!(board.rss_kib(index) > 0);
        let seen = board.read(index);
        assert_eq!((seen.requests, seen.in_flight), (2, 2));
        assert_eq!(seen.oldest.as_ref().unwrap().line, "GET /slow");
        let running = seen.running.as_ref().unwrap();
        assert_eq!(running.line.len(), LINE_BYTES, "long lines are cut");
        assert!(running.line.starts_with("POST /x/x"));
        let activity = seen.activity();
        assert!(activity.contains("blocked in the handler of POST /x"), "{activity}");
        assert!(activity.contains("oldest in flight: GET /slow"), "{activity}");

        worker.leave_handler();
        worker.request_finished(first);
        let seen = board.read(index);
        assert!(!seen.activity().contains("blocked"));
        assert_eq!(seen.oldest.unwrap().line, running.line, "the next oldest takes its place");
        worker.request_finished(second);
        assert!(board.read(index).oldest.is_none());

        board.release(index);
        assert_eq!(board.claim(8, 2), Some(index), "a released slot is reused");
        assert_eq!(board.read(index).requests, 0, "and starts empty");
    }
}
