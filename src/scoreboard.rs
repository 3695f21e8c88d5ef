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
//! Times are milliseconds of `CLOCK_MONOTONIC`, which is the same clock in every process.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::Duration;

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
use nix::time::{ClockId, clock_gettime};
use tokio::sync::Notify;

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

/// The shared mapping. It is never unmapped: the master and every worker use it until they
/// exit.
pub(crate) struct Scoreboard {
    slots: &'static [Slot],
}

impl Scoreboard {
    /// Maps a zeroed scoreboard, shared with every process forked after this.
    pub(crate) fn new() -> io::Result<Scoreboard> {
        let bytes = NonZeroUsize::new(SLOTS * size_of::<Slot>()).expect("slots are not empty");
        // SAFETY: a fresh anonymous mapping aliases no Rust object, so creating it cannot break
        // any reference.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        // SAFETY: the mapping is page-aligned, `SLOTS * size_of::<Slot>()` bytes long and
        // zero-filled by the kernel; a `Slot` is atomics only, for which zero is a valid value,
        // and atomics may be shared between processes. It is never unmapped, so `'static`
        // holds; all access goes through the atomics, never through `&mut`.
        let slots = unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<Slot>(), SLOTS) };
        Ok(Scoreboard { slots })
    }

    /// Takes a free slot for a worker about to be forked; `None` if all are taken.
    pub(crate) fn claim(&self, worker: u64, generation: u64) -> Option<usize> {
        let index = self.slots.iter().position(|s| s.worker.load(Ordering::Relaxed) == 0)?;
        let slot = &self.slots[index];
        slot.reset();
        slot.generation.store(generation, Ordering::Relaxed);
        slot.spawned_ms.store(now_ms(), Ordering::Relaxed);
        slot.worker.store(worker, Ordering::Release);
        Some(index)
    }

    /// Records the pid of the worker in a slot (the master does, right after the fork).
    pub(crate) fn set_pid(&self, index: usize, pid: u32) {
        self.slots[index].pid.store(pid, Ordering::Relaxed);
    }

    /// Frees the slot of a worker that has been reaped (or was never started).
    pub(crate) fn release(&self, index: usize) {
        let slot = &self.slots[index];
        slot.reset();
        slot.worker.store(0, Ordering::Release);
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

    /// The slot a worker writes to, in the worker.
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
        for field in [&self.pid, &self.connections, &self.in_flight, &self.in_handler] {
            field.store(0, Ordering::Relaxed);
        }
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
    id: u64,
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

/// A worker's side of its slot, with the bookkeeping of its requests in flight. One per worker,
/// used from its single thread.
pub(crate) struct Board {
    slot: &'static Slot,
    /// Every slot, for the worker's peers (see [`Board::busier_than_peers`]).
    all: &'static [Slot],
    /// The slots of the other ready workers of this generation, as last looked up, and when.
    peers: RefCell<Vec<&'static Slot>>,
    peers_ms: Cell<u64>,
    next_id: Cell<u64>,
    /// Requests in flight by number, so the oldest is the first.
    in_flight: RefCell<BTreeMap<u64, (u64, Line)>>,
    /// The watch on `max_worker_memory` (see [`Board::watch_memory`]).
    pub(crate) memory: MemoryWatch,
}

/// A worker's own watch on its resident memory, so that a fast-growing app is caught within
/// milliseconds rather than at the next heartbeat (up to a second, in which an app allocating
/// as fast as it can grows by hundreds of MiB).
pub(crate) struct MemoryWatch {
    /// `max_worker_memory`, in KiB; 0 while nothing is watched.
    limit_kib: Cell<u64>,
    /// The coarse-clock time from which the next request that starts reads the resident
    /// memory; `u64::MAX` while nothing is watched, so that the test on every request is one
    /// comparison.
    next_ms: Cell<u64>,
    /// `/proc/self/statm`, kept open: each reading is one `pread`.
    statm: OnceCell<File>,
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
    fn new() -> Self {
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
    fn record(&self, rss_kib: u64) {
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

impl Board {
    /// A worker's board. Peers are looked for among the first `peer_slots` slots (the master
    /// fills the lowest free slot first): scanning all of them would bring every page of the
    /// mapping into the worker's memory.
    pub(crate) fn new(all: &'static [Slot], index: usize, peer_slots: usize) -> Board {
        let slot = &all[index];
        let all = &all[..peer_slots.clamp(index + 1, all.len())];
        slot.pid.store(std::process::id(), Ordering::Relaxed);
        Board {
            slot,
            all,
            peers: RefCell::new(Vec::new()),
            peers_ms: Cell::new(0),
            next_id: Cell::new(1),
            in_flight: RefCell::new(BTreeMap::new()),
            memory: MemoryWatch::new(),
        }
    }

    /// Starts watching `max_worker_memory` (`limit_mib`; 0 for none), once the worker has
    /// booted: each request that starts [`MEMORY_CHECK_MS`] or more after the last reading
    /// reads the resident memory, and so does every heartbeat (for memory that grows inside a
    /// long request or a background task); a reading at a higher [`MemoryLevel`] than before
    /// wakes [`MemoryWatch::changed`]. A worker that is over the limit already is not watched:
    /// its successor would be too, and the master deals with a limit that low.
    pub(crate) fn watch_memory(&self, limit_mib: u64) -> Result<(), String> {
        if limit_mib == 0 {
            return Ok(());
        }
        let statm = File::open("/proc/self/statm").map_err(|e| format!("/proc/self/statm: {e}"))?;
        let _ = self.memory.statm.set(statm);
        let rss = self.resident_kib().unwrap_or(0);
        let limit_kib = limit_mib.saturating_mul(1024);
        if rss > limit_kib {
            return Err(format!("{} MiB resident after booting", rss / 1024));
        }
        self.memory.limit_kib.set(limit_kib);
        self.memory.next_ms.set(now_ms_coarse());
        Ok(())
    }

    /// Reads the resident memory, publishes it, and compares it with the limit.
    #[cold]
    fn check_memory(&self, now: u64) {
        self.memory.next_ms.set(now + MEMORY_CHECK_MS);
        if let Some(rss) = self.resident_kib() {
            self.slot.rss_kib.store(rss, Ordering::Relaxed);
            self.memory.record(rss);
        }
    }

    /// This process's resident memory in KiB, from the kept `/proc/self/statm` if open.
    fn resident_kib(&self) -> Option<u64> {
        match self.memory.statm.get() {
            Some(statm) => {
                let mut buf = [0u8; 128];
                let n = statm.read_at(&mut buf, 0).ok()?;
                parse_statm(std::str::from_utf8(&buf[..n]).ok()?)
            }
            None => resident_kib(),
        }
    }

    /// Whether this worker holds more than one connection more than the least busy of the
    /// other ready workers of its generation: it then leaves new connections to them for a
    /// moment. The workers share one listening socket, and without this the first one woken
    /// for a burst of connections takes them all. The peers are looked up at most every
    /// 100 ms (a scan of the scoreboard); their counts are read each time.
    pub(crate) fn busier_than_peers(&self) -> bool {
        let now = now_ms_coarse();
        if now.saturating_sub(self.peers_ms.get()) >= 100 {
            self.peers_ms.set(now);
            let generation = self.slot.generation.load(Ordering::Relaxed);
            let mut peers = self.peers.borrow_mut();
            peers.clear();
            peers.extend(self.all.iter().filter(|s| {
                !std::ptr::eq(*s, self.slot)
                    && s.worker.load(Ordering::Acquire) != 0
                    && s.generation.load(Ordering::Relaxed) == generation
                    && s.booted_ms.load(Ordering::Relaxed) != 0
            }));
        }
        let least = self.peers.borrow().iter().map(|s| s.connections.load(Ordering::Relaxed)).min();
        least.is_some_and(|least| self.slot.connections.load(Ordering::Relaxed) > least + 1)
    }

    /// The worker is accepting: it has booted.
    pub(crate) fn booted(&self) {
        self.beat();
        self.slot.booted_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Proves the worker's event loop is running; also records its resident memory, and
    /// compares it with `max_worker_memory` if that is watched.
    pub(crate) fn beat(&self) {
        if let Some(rss) = self.resident_kib() {
            self.slot.rss_kib.store(rss, Ordering::Relaxed);
            self.memory.record(rss);
        }
        self.slot.heartbeat_ms.store(now_ms(), Ordering::Release);
    }

    /// How many requests this worker has started, including the one starting now.
    pub(crate) fn served(&self) -> u64 {
        self.slot.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn connection_opened(&self) {
        self.slot.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.slot.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Records a request that is starting; returns its number.
    pub(crate) fn request_started(&self, line: Line) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let started = now_ms_coarse();
        if started >= self.memory.next_ms.get() {
            self.check_memory(started);
        }
        self.slot.requests.fetch_add(1, Ordering::Relaxed);
        self.slot.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut in_flight = self.in_flight.borrow_mut();
        if in_flight.is_empty() {
            self.slot.oldest.write(id, started, &line);
        }
        in_flight.insert(id, (started, line));
        id
    }

    /// Records that a request's handler code is about to run.
    pub(crate) fn enter_handler(&self, id: u64) {
        if self.slot.running.id.load(Ordering::Relaxed) != id {
            if let Some((started, line)) = self.in_flight.borrow().get(&id) {
                self.slot.running.write(id, *started, line);
            }
        }
        self.slot.in_handler.store(1, Ordering::Relaxed);
    }

    /// Records that the handler code has returned control to the event loop.
    pub(crate) fn leave_handler(&self) {
        self.slot.in_handler.store(0, Ordering::Relaxed);
    }

    /// Records that a request is over: its response was sent, or it was abandoned.
    pub(crate) fn request_finished(&self, id: u64) {
        let mut in_flight = self.in_flight.borrow_mut();
        let was_oldest = in_flight.first_key_value().is_some_and(|(first, _)| *first == id);
        if in_flight.remove(&id).is_none() {
            return;
        }
        self.slot.in_flight.fetch_sub(1, Ordering::Relaxed);
        if was_oldest {
            match in_flight.first_key_value() {
                Some((next, (started, line))) => self.slot.oldest.write(*next, *started, line),
                None => self.slot.oldest.clear(),
            }
        }
    }
}

/// This process's resident memory in KiB, from `/proc/self/statm`.
fn resident_kib() -> Option<u64> {
    parse_statm(&std::fs::read_to_string("/proc/self/statm").ok()?)
}

/// The resident memory in KiB that a `/proc/PID/statm` line gives.
fn parse_statm(statm: &str) -> Option<u64> {
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
