//! A worker's side of its scoreboard slot: heartbeats, its requests in flight (the oldest and
//! the one whose handler runs), its open connections, and a look at its peers' to share new
//! connections between them.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;

use super::memory::{MemoryWatch, parse_statm, resident_kib};
use super::{Line, MEMORY_CHECK_MS, Slot, now_ms, now_ms_coarse};

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
    /// long request or a background task); a reading at a higher [`MemoryLevel`](super::MemoryLevel) than before
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

    /// The worker was told to stop: it drains its connections.
    pub(crate) fn draining(&self) {
        self.slot.draining.store(1, Ordering::Relaxed);
    }

    /// A connection was parked (idle; its protocol's buffers let go).
    pub(crate) fn connection_parked(&self) {
        self.slot.parked.fetch_add(1, Ordering::Relaxed);
    }

    /// A parked connection woke (a request came) or closed.
    pub(crate) fn connection_unparked(&self) {
        self.slot.parked.fetch_sub(1, Ordering::Relaxed);
    }

    /// The slot's request counters, for the metrics' request-end hook.
    pub(crate) fn counters(&self) -> &'static super::counters::Counters {
        &self.slot.counters
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
    #[inline]
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
