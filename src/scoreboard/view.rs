//! The whole scoreboard as one [`Report`]: the master, every worker, and the request totals.
//! The metrics endpoint reads it from the mapping its worker inherited; `forkserve status`
//! from the master's memfd, found in `/proc/PID/fd` and mapped read-only ([`Attached`]).

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use nix::sys::mman::ProtFlags;

use super::counters::Totals;
use super::header::{ExitCause, ReloadResult};
use super::{
    LAYOUT, MAGIC, MEMFD_NAME, RequestSeen, SLOTS, Scoreboard, Slot, mapping_bytes, now_ms,
};

/// What a worker is doing, as the scoreboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkerPhase {
    /// Forked, not accepting yet.
    Booting,
    /// Accepting, no request in flight.
    Idle,
    /// At least one request in flight.
    Busy,
    /// Told to stop: finishing its connections.
    Draining,
}

impl WorkerPhase {
    pub(crate) const ALL: [WorkerPhase; 4] =
        [WorkerPhase::Booting, WorkerPhase::Idle, WorkerPhase::Busy, WorkerPhase::Draining];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WorkerPhase::Booting => "booting",
            WorkerPhase::Idle => "idle",
            WorkerPhase::Busy => "busy",
            WorkerPhase::Draining => "draining",
        }
    }
}

/// One worker, as its slot shows it.
#[derive(Debug, Clone)]
pub(crate) struct WorkerView {
    pub(crate) worker: u64,
    pub(crate) generation: u64,
    pub(crate) pid: u32,
    pub(crate) phase: WorkerPhase,
    /// Requests it has started.
    pub(crate) requests: u64,
    pub(crate) connections: u32,
    pub(crate) parked: u32,
    pub(crate) in_flight: u32,
    pub(crate) rss_kib: u64,
    /// Since it was forked.
    pub(crate) age: Duration,
    /// Its oldest request in flight.
    pub(crate) oldest: Option<RequestSeen>,
    /// The request whose handler code its thread is running right now, if any.
    pub(crate) in_handler: Option<RequestSeen>,
}

/// The whole scoreboard at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) master_pid: u32,
    /// The generation serving, or being started while `reloading`.
    pub(crate) generation: u64,
    pub(crate) reloading: bool,
    pub(crate) uptime: Duration,
    pub(crate) started_unix_ms: u64,
    /// By [`ReloadResult::ALL`].
    pub(crate) reloads: [u64; ReloadResult::ALL.len()],
    /// By [`ExitCause::ALL`].
    pub(crate) exits: [u64; ExitCause::ALL.len()],
    /// Every request counted, by the workers alive and those reaped (only while the
    /// metrics are on: their request-end hook counts them).
    pub(crate) totals: Totals,
    /// Every request the workers took, alive or reaped, in flight or over: always kept.
    pub(crate) requests: u64,
    /// Sorted by worker id.
    pub(crate) workers: Vec<WorkerView>,
}

impl Slot {
    fn view(&self, worker: u64, now: u64) -> WorkerView {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let phase = if self.draining.load(Ordering::Relaxed) == 1 {
            WorkerPhase::Draining
        } else if self.booted_ms.load(Ordering::Relaxed) == 0 {
            WorkerPhase::Booting
        } else if in_flight > 0 {
            WorkerPhase::Busy
        } else {
            WorkerPhase::Idle
        };
        let running = self.running.read(now);
        WorkerView {
            worker,
            generation: self.generation.load(Ordering::Relaxed),
            pid: self.pid.load(Ordering::Relaxed),
            phase,
            requests: self.requests.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
            in_flight,
            rss_kib: self.rss_kib.load(Ordering::Relaxed),
            age: Duration::from_millis(now.saturating_sub(self.spawned_ms.load(Ordering::Relaxed))),
            oldest: self.oldest.read(now),
            in_handler: running.filter(|_| self.in_handler.load(Ordering::Relaxed) == 1),
        }
    }
}

impl Scoreboard {
    /// Reads everything: the header, every slot in use, and the totals, consistent with each
    /// other as far as moving a reaped worker's counters goes (never counted twice or not at
    /// all). Counters still moving in live workers are read as they are.
    pub(crate) fn report(&self) -> Report {
        let h = self.header;
        let high_water = (h.high_water.load(Ordering::Relaxed) as usize).min(SLOTS);
        // A move takes the master microseconds; one that never ends (a master killed in the
        // middle of one) must not hang the reader: after this many tries, what was read last
        // is reported, at worst one reaped worker's counts off.
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let before = h.seq.load(Ordering::Acquire);
            if before % 2 == 1 && attempt < 1000 {
                std::thread::yield_now();
                continue;
            }
            let now = now_ms();
            let mut totals = Totals::default();
            h.retired.add_to(&mut totals);
            let mut requests = h.retired_requests.load(Ordering::Relaxed);
            let mut workers = Vec::new();
            for slot in &self.slots[..high_water] {
                let worker = slot.worker.load(Ordering::Acquire);
                if worker == 0 {
                    continue;
                }
                slot.counters.add_to(&mut totals);
                let view = slot.view(worker, now);
                requests = requests.wrapping_add(view.requests);
                workers.push(view);
            }
            fence(Ordering::Acquire);
            if h.seq.load(Ordering::Relaxed) != before && attempt < 1000 {
                continue;
            }
            workers.sort_by_key(|w| w.worker);
            let load = |a: &[std::sync::atomic::AtomicU64]| {
                a.iter().map(|n| n.load(Ordering::Relaxed)).collect::<Vec<_>>()
            };
            return Report {
                master_pid: h.master_pid.load(Ordering::Relaxed),
                generation: h.generation.load(Ordering::Relaxed),
                reloading: h.reloading.load(Ordering::Relaxed) == 1,
                uptime: Duration::from_millis(
                    now.saturating_sub(h.started_ms.load(Ordering::Relaxed)),
                ),
                started_unix_ms: h.started_unix_ms.load(Ordering::Relaxed),
                reloads: load(&h.reloads).try_into().expect("same length"),
                exits: load(&h.exits).try_into().expect("same length"),
                totals,
                requests,
                workers,
            };
        }
    }
}

/// A running master's scoreboard, mapped read-only by another process.
pub(crate) struct Attached(Scoreboard);

/// Why a master's scoreboard cannot be read.
#[derive(Debug)]
pub(crate) enum AttachError {
    /// No process has this pid.
    NoProcess,
    /// The process's descriptors cannot be looked at: it belongs to another user (or is
    /// protected), and this one is not allowed.
    NotPermitted {
        owner: Option<u32>,
    },
    /// The process has no scoreboard: it is not a forkserve master (a pid reused), or one
    /// too old to have one.
    NotAMaster,
    /// It has one this build cannot read (another version of forkserve).
    OtherLayout,
    Io(PathBuf, io::Error),
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachError::NoProcess => write!(f, "no such process"),
            AttachError::NotPermitted { owner } => {
                write!(f, "not permitted to read its scoreboard")?;
                if let Some(uid) = owner {
                    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*uid))
                        .ok()
                        .flatten()
                        .map_or_else(|| format!("uid {uid}"), |u| format!("user {}", u.name));
                    write!(f, ": it runs as {name}; run this as that user, or as root")?;
                }
                Ok(())
            }
            AttachError::NotAMaster => write!(f, "it is not a forkserve master"),
            AttachError::OtherLayout => write!(
                f,
                "its scoreboard is of another forkserve version: use the binary the server runs"
            ),
            AttachError::Io(path, e) => write!(f, "{}: {e}", path.display()),
        }
    }
}

impl Attached {
    /// Finds the scoreboard of the master `pid` among its open descriptors and maps it.
    pub(crate) fn open(pid: u32) -> Result<Attached, AttachError> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let owner = match std::fs::metadata(&proc) {
            Ok(meta) => meta.uid(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(AttachError::NoProcess),
            Err(e) => return Err(AttachError::Io(proc, e)),
        };
        let fds = proc.join("fd");
        let entries = match std::fs::read_dir(&fds) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(AttachError::NotPermitted { owner: Some(owner) });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(AttachError::NoProcess),
            Err(e) => return Err(AttachError::Io(fds, e)),
        };
        let wanted = format!("/memfd:{MEMFD_NAME}");
        for entry in entries.flatten() {
            let Ok(target) = std::fs::read_link(entry.path()) else { continue };
            if target.to_string_lossy().starts_with(&wanted) {
                return Attached::map(entry.path(), owner);
            }
        }
        Err(AttachError::NotAMaster)
    }

    /// Maps the scoreboard at `path` (a `/proc/PID/fd/N` of its memfd), checking first that it
    /// is one this build reads.
    fn map(path: PathBuf, owner: u32) -> Result<Attached, AttachError> {
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(AttachError::NotPermitted { owner: Some(owner) });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(AttachError::NoProcess),
            Err(e) => return Err(AttachError::Io(path, e)),
        };
        // A master seals its memfd against shrinking; one that is not sealed (any process can
        // name a memfd so) could be cut short after the size is checked, and reading past its
        // end would kill this process with SIGBUS.
        let seals = nix::fcntl::fcntl(&file, nix::fcntl::F_GET_SEALS).unwrap_or(0);
        if !nix::fcntl::SealFlag::from_bits_truncate(seals)
            .contains(nix::fcntl::SealFlag::F_SEAL_SHRINK)
        {
            return Err(AttachError::NotAMaster);
        }
        let len = file.metadata().map_err(|e| AttachError::Io(path.clone(), e))?.len();
        // Checked before mapping: reading past the end of a shorter file would be a SIGBUS,
        // not an error.
        if len != mapping_bytes() as u64 {
            return Err(AttachError::OtherLayout);
        }
        let board = Scoreboard::map(&file, ProtFlags::PROT_READ)
            .map_err(|e| AttachError::Io(path.clone(), e))?;
        let h = board.header;
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err(AttachError::NotAMaster);
        }
        if h.layout.load(Ordering::Relaxed) != LAYOUT
            || h.slots.load(Ordering::Relaxed) != SLOTS as u64
            || h.slot_bytes.load(Ordering::Relaxed) != size_of::<Slot>() as u64
        {
            return Err(AttachError::OtherLayout);
        }
        Ok(Attached(board))
    }

    pub(crate) fn report(&self) -> Report {
        self.0.report()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scoreboard::{Board, Line};

    #[test]
    fn another_process_reads_the_scoreboard_from_the_memfd() {
        let board = Scoreboard::new().unwrap();
        board.set_generation(3, true);
        board.worker_exited(ExitCause::Hung);
        board.reload_ended(ReloadResult::RolledBack);
        let index = board.claim(11, 3).unwrap();
        let worker = Board::new(board.all(), index, 64);
        worker.booted();
        let id = worker.request_started(Line::new("GET", "/slow"));
        worker.enter_handler(id);
        // This test process is the "master" (of several scoreboards, one per test: this
        // test's is the one at its descriptor).
        let path = PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), board.fd));
        let attached = Attached::map(path, 0).unwrap();
        let report = attached.report();
        assert_eq!(report.master_pid, std::process::id());
        assert_eq!((report.generation, report.reloading), (3, true));
        assert_eq!(report.exits[2], 1, "hung");
        assert_eq!(report.reloads[2], 1, "rolled back");
        let w = report.workers.iter().find(|w| w.worker == 11).unwrap();
        assert_eq!((w.pid, w.generation), (std::process::id(), 3));
        assert_eq!((w.phase, w.in_flight), (WorkerPhase::Busy, 1));
        assert_eq!(w.in_handler.as_ref().unwrap().line, "GET /slow");
        worker.request_finished(id);
        worker.leave_handler();
        let w = attached.report().workers.into_iter().find(|w| w.worker == 11).unwrap();
        assert_eq!(w.phase, WorkerPhase::Idle);
        worker.draining();
        let w = attached.report().workers.into_iter().find(|w| w.worker == 11).unwrap();
        assert_eq!(w.phase, WorkerPhase::Draining);
    }

    #[test]
    fn the_requests_taken_stay_in_the_total_when_a_worker_is_reaped() {
        let board = Scoreboard::new().unwrap();
        let (a, b) = (board.claim(1, 1).unwrap(), board.claim(2, 1).unwrap());
        let (first, second) = (Board::new(board.all(), a, 64), Board::new(board.all(), b, 64));
        for _ in 0..3 {
            let id = first.request_started(Line::new("GET", "/"));
            first.request_finished(id);
        }
        let _in_flight = second.request_started(Line::new("GET", "/slow"));
        assert_eq!(board.report().requests, 4, "in flight included");
        board.release(a);
        let report = board.report();
        assert_eq!((report.requests, report.workers.len()), (4, 1), "the reaped worker's 3 kept");
        let c = board.claim(3, 2).unwrap();
        assert_eq!(c, a);
        assert_eq!(board.report().requests, 4, "a reused slot starts at 0");
    }

    #[test]
    fn a_memfd_named_so_but_not_sealed_against_shrinking_is_not_mapped() {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        // Right name, right size, right header: only the seal is missing, so whoever made it
        // could shrink it under the mapping (SIGBUS in the reader).
        let fd = memfd_create(MEMFD_NAME, MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, mapping_bytes() as i64).unwrap();
        let fake = Scoreboard::map(&fd, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE).unwrap();
        fake.header.stamp(SLOTS, size_of::<Slot>());
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let path = PathBuf::from(format!("/proc/{}/fd/{raw}", std::process::id()));
        let result = Attached::map(path, 0);
        assert!(matches!(result, Err(AttachError::NotAMaster)), "{:?}", result.err());
    }

    #[test]
    fn a_missing_process_and_a_process_without_a_scoreboard_are_told_apart() {
        assert!(matches!(Attached::open(u32::MAX - 1), Err(AttachError::NoProcess)));
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let result = Attached::open(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(matches!(result, Err(AttachError::NotAMaster)), "{:?}", result.err());
    }
}
