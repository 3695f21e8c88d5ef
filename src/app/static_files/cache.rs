//! The contents cache of small files.
//!
//! Small files (up to `CACHE_MAX_FILE`, 1 MiB) are kept in memory, one cache
//! per process (so per worker), at most `CACHE_BUDGET` (16 MiB, counting a fixed overhead per
//! entry) and `CACHE_MAX_ENTRIES` files; the least recently used go first. A cached file is
//! sent from one shared `Bytes`: no read, no buffer, and nothing held per connection but a
//! reference. It never changes what is served, nor how a file is found: every request still
//! opens the file beneath the root (see `super::beneath`) and `fstat`s the opened file, and an entry is used
//! only if that file's device, inode, size, mtime and ctime (to the nanosecond) are those it
//! was read with; otherwise the entry is dropped and the file read again. A write, a
//! truncation, a `chmod` or a rename over the file changes one of these. Same-timestamp races
//! are ruled out the way git rules out "racily clean" files: a file is cached only if its ctime
//! (which, unlike mtime, cannot be set) is at least `CACHE_SETTLED` (2 s) older than the clock
//! when the read begins, and its metadata is unchanged after the read. Any later change then
//! stamps times that differ, even where timestamps are kept in whole seconds (or FAT's two).
//! What this cannot see, like any validator made from file times (ETag, Last-Modified): writes
//! that skip the timestamp update (`O_NOCMTIME`; stores through a shared `mmap` into a page
//! that is already dirty), and a clock stepped back by more than the margin (or, on a network
//! file system, a server clock that far behind ours). Files not cached (larger, recently
//! changed, `HEAD` and `304` answers) are streamed from the open file.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::conditional::Validators;

/// The largest file the contents cache takes.
pub(super) const CACHE_MAX_FILE: u64 = 1024 * 1024;
/// The most memory the contents cache holds, counting `CACHE_ENTRY_OVERHEAD` per file.
const CACHE_BUDGET: usize = 16 * 1024 * 1024;
/// The most files the contents cache holds.
const CACHE_MAX_ENTRIES: usize = 4096;
/// What an entry costs beyond the file's bytes: the map slot, the validators.
const CACHE_ENTRY_OVERHEAD: usize = 256;
/// How much older than the clock a file's ctime must be for its contents to be cached.
const CACHE_SETTLED: Duration = Duration::from_secs(2);

/// What identifies one version of a file's contents: the inode, and its size and times to the
/// nanosecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub(super) fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file's ctime is at least `CACHE_SETTLED` before `now`.
    fn settled(&self, now: SystemTime) -> bool {
        let Ok(now) = now.duration_since(UNIX_EPOCH) else { return false };
        let (Ok(secs), Ok(nanos)) = (u64::try_from(self.ctime.0), u32::try_from(self.ctime.1))
        else {
            return false;
        };
        // A ctime before 1970 (which nothing sets) is not cached.
        Duration::new(secs, nanos.min(999_999_999)) + CACHE_SETTLED <= now
    }
}

/// The contents of small files, validated on every use: see the module's documentation.
pub(super) struct Cache {
    entries: HashMap<(u64, u64), Entry>,
    /// The bytes held, with `CACHE_ENTRY_OVERHEAD` per entry.
    held: usize,
    /// Counts uses, to tell the least recently used entries.
    clock: u64,
}

struct Entry {
    stamp: Stamp,
    validators: Validators,
    contents: Bytes,
    used: u64,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| Mutex::new(Cache::new()));

/// The cache, emptied if a panic left it poisoned: its accounting may be off then.
pub(super) fn lock_cache() -> MutexGuard<'static, Cache> {
    CACHE.lock().unwrap_or_else(|poisoned| {
        let mut cache = poisoned.into_inner();
        cache.entries.clear();
        cache.held = 0;
        CACHE.clear_poison();
        cache
    })
}

impl Cache {
    fn new() -> Cache {
        Cache { entries: HashMap::new(), held: 0, clock: 0 }
    }

    /// The validators and contents of the file `stamp` describes, if cached. An entry for the
    /// same inode that no longer matches is dropped.
    pub(super) fn get(&mut self, stamp: &Stamp) -> Option<(Validators, Bytes)> {
        let key = (stamp.dev, stamp.ino);
        let entry = self.entries.get_mut(&key)?;
        if entry.stamp != *stamp {
            self.remove(key);
            return None;
        }
        self.clock += 1;
        entry.used = self.clock;
        Some((entry.validators.clone(), entry.contents.clone()))
    }

    fn remove(&mut self, key: (u64, u64)) {
        if let Some(old) = self.entries.remove(&key) {
            self.held -= old.contents.len() + CACHE_ENTRY_OVERHEAD;
        }
    }

    fn insert(&mut self, stamp: Stamp, validators: Validators, contents: Bytes) {
        let key = (stamp.dev, stamp.ino);
        self.remove(key);
        let cost = contents.len() + CACHE_ENTRY_OVERHEAD;
        if self.held + cost > CACHE_BUDGET || self.entries.len() >= CACHE_MAX_ENTRIES {
            // Down to three quarters at once, so that a full cache is not sorted per insert.
            self.evict((CACHE_BUDGET * 3 / 4).saturating_sub(cost), CACHE_MAX_ENTRIES * 3 / 4);
        }
        self.clock += 1;
        self.held += cost;
        self.entries.insert(key, Entry { stamp, validators, contents, used: self.clock });
    }

    /// Drops the least recently used entries until at most `bytes` and `count` remain.
    fn evict(&mut self, bytes: usize, count: usize) {
        let mut by_use: Vec<(u64, (u64, u64))> =
            self.entries.iter().map(|(key, e)| (e.used, *key)).collect();
        by_use.sort_unstable();
        for (_, key) in by_use {
            if self.held <= bytes && self.entries.len() <= count {
                break;
            }
            self.remove(key);
        }
    }
}

/// Reads the whole of a small file and caches it, if it has settled (see the module's
/// documentation): the contents then, or `None` to stream the file instead.
pub(super) fn read_to_cache(file: &File, stamp: Stamp, validators: &Validators) -> Option<Bytes> {
    if !stamp.settled(SystemTime::now()) {
        return None;
    }
    let mut contents = vec![0; usize::try_from(stamp.size).ok()?];
    file.read_exact_at(&mut contents, 0).ok()?;
    // Changed while it was read: not kept, and streamed instead, as any file that changes.
    if file.metadata().ok().map(|m| Stamp::of(&m)) != Some(stamp) {
        return None;
    }
    let contents = Bytes::from(contents);
    lock_cache().insert(stamp, validators.clone(), contents.clone());
    Some(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries are used only for the very version they were read from, and the cache keeps
    /// within its budget by dropping the least recently used.
    #[test]
    fn the_cache_validates_and_stays_within_bounds() {
        let dir = std::env::temp_dir().join(format!("forkserve-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), "x").unwrap();
        let meta = std::fs::metadata(dir.join("f")).unwrap();
        let stamp = Stamp::of(&meta);
        let validators = Validators::of(&meta);
        std::fs::remove_dir_all(&dir).unwrap();
        let mut cache = Cache::new();
        let one_mib = Bytes::from(vec![7; CACHE_MAX_FILE as usize]);
        let nth = |n: u64| Stamp { ino: n, size: CACHE_MAX_FILE, ..stamp };

        cache.insert(stamp, validators.clone(), Bytes::from_static(b"x"));
        assert_eq!(cache.get(&stamp).unwrap().1, "x");
        for changed in [
            Stamp { size: 2, ..stamp },
            Stamp { mtime: (stamp.mtime.0, stamp.mtime.1 + 1), ..stamp },
            Stamp { ctime: (stamp.ctime.0 + 1, stamp.ctime.1), ..stamp },
        ] {
            cache.insert(stamp, validators.clone(), Bytes::from_static(b"x"));
            assert!(cache.get(&changed).is_none(), "{changed:?}");
            assert!(cache.entries.is_empty(), "a stale entry is dropped when met");
            assert_eq!(cache.held, 0);
        }

        for n in 0..40 {
            cache.insert(nth(n), validators.clone(), one_mib.clone());
            // The first file stays in use.
            assert!(cache.get(&nth(0)).is_some(), "after {n}");
            assert!(cache.held <= CACHE_BUDGET, "{} held after {n}", cache.held);
        }
        assert!(cache.get(&nth(39)).is_some(), "the latest stays");
        assert!(cache.get(&nth(1)).is_none(), "the least recently used went");
        let total: usize =
            cache.entries.values().map(|e| e.contents.len() + CACHE_ENTRY_OVERHEAD).sum();
        assert_eq!(cache.held, total);

        let mut cache = Cache::new();
        for n in 0..(CACHE_MAX_ENTRIES as u64 + 10) {
            cache.insert(Stamp { ino: n, ..stamp }, validators.clone(), Bytes::from_static(b"x"));
            assert!(cache.entries.len() <= CACHE_MAX_ENTRIES);
        }
    }

    #[test]
    fn only_settled_files_are_cached() {
        let now = SystemTime::now();
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let at =
            |t: SystemTime| Stamp { dev: 1, ino: 1, size: 1, mtime: (0, 0), ctime: (secs(t), 0) };
        assert!(at(now - Duration::from_secs(3)).settled(now));
        assert!(!at(now - Duration::from_secs(1)).settled(now));
        assert!(!at(now).settled(now));
        assert!(!at(now + Duration::from_secs(60)).settled(now), "a ctime ahead of the clock");
        assert!(!Stamp { ctime: (-5, 0), ..at(now) }.settled(now));
    }
}
