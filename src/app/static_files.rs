//! Files served from a directory: `GET` and `HEAD`, `Content-Type` by extension, `index.html`
//! for directories, conditional requests and single byte ranges, and no way out of the root.
//!
//! Containment: the router has already refused `..` segments and normalized the path, and
//! hidden segments (`.git`, `.env`; all but `.well-known`) are refused here. Files are then
//! opened *beneath an open handle of the root directory* with `openat2(RESOLVE_BENEATH)`, so the
//! kernel refuses any resolution that leaves the root, symlinks included, however the tree
//! changes while the request runs. Where `openat2` is missing (Linux before 5.6, or a seccomp
//! profile that blocks it), or refuses an absolute symlink (which may point back inside the
//! root), the file is opened and its real location, read back from `/proc/self/fd`, must lie
//! inside the root: the check is made on the object opened, not on a name that could be swapped
//! in between. Files are opened non-blocking and must be regular, so a FIFO cannot hang the
//! worker.
//!
//! Contents cache: small files (up to `CACHE_MAX_FILE`, 1 MiB) are kept in memory, one cache
//! per process (so per worker), at most `CACHE_BUDGET` (16 MiB, counting a fixed overhead per
//! entry) and `CACHE_MAX_ENTRIES` files; the least recently used go first. A cached file is
//! sent from one shared `Bytes`: no read, no buffer, and nothing held per connection but a
//! reference. It never changes what is served, nor how a file is found: every request still
//! opens the file beneath the root as above and `fstat`s the opened file, and an entry is used
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
//! changed, `HEAD` and `304` answers) are streamed from the open file, as before.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::sys::stat::Mode;

use super::{Body, plain};

/// Set once `openat2` has been found missing; the fallback is used from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// A `static` route's directory.
#[derive(Debug, Clone)]
pub(crate) struct StaticDir {
    /// Canonical (absolute, no symlinks), as resolved when the config was loaded.
    root: PathBuf,
    /// The root, opened once per worker; every file is resolved beneath it.
    root_fd: Arc<OwnedFd>,
}

impl StaticDir {
    pub(crate) fn open(root: PathBuf) -> io::Result<StaticDir> {
        let fd = open(&root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| {
                let kind = io::Error::from(e).kind();
                io::Error::new(kind, format!("static directory {}: {e}", root.display()))
            })?;
        Ok(StaticDir { root, root_fd: Arc::new(fd) })
    }

    /// Answers a request whose normalized `path` starts with the route's prefix, which is
    /// `prefix_len` bytes long.
    pub(crate) fn serve<B>(
        &self,
        req: &Request<B>,
        path: &[u8],
        prefix_len: usize,
    ) -> Response<Body> {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            // What the route allows, whether or not the file exists: the same methods that
            // `OPTIONS *` names for a server of files (RFC 9110 §9.3.7).
            Method::OPTIONS => {
                let mut response = Response::new(Body::from(Bytes::new()));
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOW));
                return response;
            }
            _ => {
                let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOW));
                return response;
            }
        };
        let rest = path[prefix_len..].strip_prefix(b"/").unwrap_or(&path[prefix_len..]);
        if rest.split(|&b| b == b'/').any(|s| s.starts_with(b".") && s != b".well-known") {
            return plain(StatusCode::NOT_FOUND, "Not Found\n");
        }
        let mut relative =
            PathBuf::from(if rest.is_empty() { OsStr::new(".") } else { OsStr::from_bytes(rest) });
        let mut opened = self.open_regular_or_dir(&relative);
        if let Ok((_, meta)) = &opened {
            if meta.is_dir() {
                if !path.ends_with(b"/") {
                    return redirect_to_directory(req, path);
                }
                relative.push("index.html");
                opened = self.open_regular_or_dir(&relative);
            }
        }
        match opened {
            Ok((file, meta)) if meta.is_file() => {
                send_file(req.headers(), head, &relative, file, &meta)
            }
            Ok(_) => plain(StatusCode::NOT_FOUND, "Not Found\n"),
            Err(e) => io_error_response(&e, &relative),
        }
    }

    /// Opens `relative` beneath the root; anything but a regular file or a directory is not
    /// found.
    fn open_regular_or_dir(&self, relative: &Path) -> io::Result<(File, Metadata)> {
        let file = File::from(open_beneath(&self.root_fd, &self.root, relative)?);
        let meta = file.metadata()?;
        if meta.is_file() || meta.is_dir() {
            Ok((file, meta))
        } else {
            Err(io::ErrorKind::NotFound.into())
        }
    }
}

/// Opens `relative` for reading beneath the directory `root_fd` (which is `root`), following
/// symlinks only as long as they stay inside it. A path that leads out is not found.
fn open_beneath(root_fd: &OwnedFd, root: &Path, relative: &Path) -> io::Result<OwnedFd> {
    // O_NONBLOCK: opening a FIFO must not block the worker. O_NOCTTY: a terminal device in the
    // tree must not become the worker's controlling terminal.
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match openat2(root_fd, relative, how) {
            Ok(fd) => return Ok(fd),
            // The kernel refused a resolution that leaves the root. That includes an absolute
            // symlink that points back inside it, which the check below accepts.
            Err(Errno::EXDEV) => {}
            Err(Errno::ENOSYS | Errno::EPERM) => {
                tracing::warn!("openat2 is not available; static files are checked via /proc");
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e.into()),
        }
    }
    open_then_check(root_fd, root, relative, flags)
}

/// The fallback: open, then check where the opened file really is.
fn open_then_check(
    root_fd: &OwnedFd,
    root: &Path,
    relative: &Path,
    flags: OFlag,
) -> io::Result<OwnedFd> {
    let fd = openat(root_fd, relative, flags, Mode::empty())?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if real.starts_with(root) { Ok(fd) } else { Err(escaped(relative)) }
}

fn escaped(relative: &Path) -> io::Error {
    tracing::debug!(path = %relative.display(), "refused a path that leads out of the static root");
    io::ErrorKind::NotFound.into()
}

fn io_error_response(e: &io::Error, path: &Path) -> Response<Body> {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename => {
            plain(StatusCode::NOT_FOUND, "Not Found\n")
        }
        // A symlink loop is the tree's fault, not the server's: nothing to log for each client.
        _ if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            plain(StatusCode::NOT_FOUND, "Not Found\n")
        }
        io::ErrorKind::PermissionDenied => plain(StatusCode::FORBIDDEN, "Forbidden\n"),
        _ => {
            tracing::error!(path = %path.display(), "cannot serve file: {e}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
        }
    }
}

/// `/dir` names a directory: send the client to `/dir/` so relative links in its index work.
/// The location is the normalized path, percent-encoded again: it has one leading `/`, so it
/// can never read as `//host`, a redirect to another site.
fn redirect_to_directory<B>(req: &Request<B>, path: &[u8]) -> Response<Body> {
    let mut location = String::with_capacity(path.len() + 16);
    for &b in path {
        if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b) {
            location.push(b as char);
        } else {
            location.push_str(&format!("%{b:02X}"));
        }
    }
    location.push('/');
    if let Some(q) = req.uri().query() {
        location.push('?');
        location.push_str(q);
    }
    let mut response = plain(StatusCode::MOVED_PERMANENTLY, "Moved Permanently\n");
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The methods a static route answers.
pub(crate) const ALLOW: &str = "GET, HEAD, OPTIONS";

/// The latest time an HTTP date can express (9999-12-31T23:59:59Z); `httpdate` panics beyond.
const LAST_HTTP_DATE: u64 = 253_402_300_799;

fn send_file(
    req: &HeaderMap,
    head: bool,
    path: &Path,
    file: File,
    meta: &Metadata,
) -> Response<Body> {
    let len = meta.len();
    let stamp = Stamp::of(meta);
    // The validators and contents cached for exactly this file, if any.
    let cached = (len <= CACHE_MAX_FILE).then(|| lock_cache().get(&stamp)).flatten();
    let (validators, mut contents) = match cached {
        Some((validators, contents)) => (validators, Some(contents)),
        None => (Validators::of(meta), None),
    };
    let etag = validators.etag.to_str().unwrap_or_default();
    let modified = validators.modified;

    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type(path));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::ETAG, validators.etag.clone());
    if let Some(date) = &validators.last_modified {
        headers.insert(header::LAST_MODIFIED, date.clone());
    }

    if not_modified(req, etag, modified) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return response;
    }
    // RFC 9110 §13.1.5: a date validates If-Range only if it is strong, i.e. the file had not
    // changed for a second before the date was sent.
    let strong_date =
        validators.last_modified.as_ref().and_then(|d| d.to_str().ok()).filter(|_| {
            SystemTime::now().duration_since(modified).is_ok_and(|d| d >= Duration::from_secs(1))
        });
    let (offset, count) = match requested_range(req, len, etag, strong_date) {
        Range::Whole => (0, len),
        Range::Part(start, end) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            insert(
                response.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes {start}-{end}/{len}"),
            );
            (start, end - start + 1)
        }
        Range::Unsatisfiable => {
            let mut refused = plain(StatusCode::RANGE_NOT_SATISFIABLE, "Range Not Satisfiable\n");
            insert(refused.headers_mut(), header::CONTENT_RANGE, &format!("bytes */{len}"));
            return refused;
        }
    };
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if head {
        return response;
    }
    if contents.is_none() && len <= CACHE_MAX_FILE {
        contents = read_to_cache(&file, stamp, &validators);
    }
    *response.body_mut() = match contents {
        // In range, as the range is within `len`, the cached contents' length.
        Some(all) => Body::from(all.slice(offset as usize..(offset + count) as usize)),
        None => Body::file(file, offset, count),
    };
    response
}

/// The response headers that identify a version of a file.
#[derive(Clone)]
struct Validators {
    etag: HeaderValue,
    last_modified: Option<HeaderValue>,
    /// The mtime, clamped to what an HTTP date can express.
    modified: SystemTime,
}

impl Validators {
    fn of(meta: &Metadata) -> Validators {
        let len = meta.len();
        let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
        let modified = UNIX_EPOCH + Duration::from_secs(mtime.min(LAST_HTTP_DATE));
        // Nanoseconds too: a file rewritten within the same second at the same length must not
        // keep its validator, or a resumed download could splice old and new bytes.
        let etag = format!("\"{mtime:x}.{:x}-{len:x}\"", meta.mtime_nsec());
        let last_modified = (mtime <= LAST_HTTP_DATE)
            .then(|| HeaderValue::from_str(&httpdate::fmt_http_date(modified)).ok())
            .flatten();
        Validators {
            etag: HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\"")),
            last_modified,
            modified,
        }
    }
}

/// The largest file the contents cache takes.
const CACHE_MAX_FILE: u64 = 1024 * 1024;
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
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
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
struct Cache {
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
fn lock_cache() -> MutexGuard<'static, Cache> {
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
    fn get(&mut self, stamp: &Stamp) -> Option<(Validators, Bytes)> {
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
fn read_to_cache(file: &File, stamp: Stamp, validators: &Validators) -> Option<Bytes> {
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

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// RFC 9110 §13.1.2 and §13.1.3: `If-None-Match` wins over `If-Modified-Since`.
fn not_modified(req: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let bare = etag.trim_start_matches("W/");
        return inm
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == bare);
    }
    req.get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|since| modified <= since)
}

enum Range {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// RFC 9110 §14.2: one `bytes` range is served; several, or a malformed header, are ignored
/// (the whole file is sent, which the RFC allows), as is a range whose `If-Range` no longer
/// matches the file.
fn requested_range(req: &HeaderMap, len: u64, etag: &str, last_modified: Option<&str>) -> Range {
    let Some(spec) = req.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Range::Whole;
    };
    if let Some(if_range) = req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        if if_range != etag && Some(if_range) != last_modified {
            return Range::Whole;
        }
    }
    let Some(spec) = spec.trim().strip_prefix("bytes=") else { return Range::Whole };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Range::Whole };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (first, last) {
        (f, l) if digits(f) && (l.is_empty() || digits(l)) => {
            let (Ok(start), end) = (f.parse::<u64>(), l.parse::<u64>().ok()) else {
                return Range::Whole;
            };
            if end.is_some_and(|end| end < start) {
                return Range::Whole;
            }
            if start >= len {
                return Range::Unsatisfiable;
            }
            Range::Part(start, end.map_or(len - 1, |e| e.min(len - 1)))
        }
        ("", l) if digits(l) => match l.parse::<u64>() {
            Ok(0) => Range::Unsatisfiable,
            Ok(_) if len == 0 => Range::Unsatisfiable,
            Ok(n) => Range::Part(len.saturating_sub(n), len - 1),
            Err(_) => Range::Whole,
        },
        _ => Range::Whole,
    }
}

/// The media type for a file name's extension, matched without regard to case.
fn content_type(path: &Path) -> HeaderValue {
    // Lowercased on the stack: no extension this knows is longer than 5 bytes.
    let mut lower = [0u8; 8];
    let ext = path.extension().map_or(&b""[..], OsStr::as_bytes);
    let ext = match lower.get_mut(..ext.len()) {
        Some(lower) => {
            lower.copy_from_slice(ext);
            lower.make_ascii_lowercase();
            &*lower
        }
        None => b"",
    };
    // A `const` each, so that the values are checked when compiling, not per request.
    macro_rules! ty {
        ($t:literal) => {{
            const T: HeaderValue = HeaderValue::from_static($t);
            T
        }};
    }
    match ext {
        b"html" | b"htm" => ty!("text/html; charset=utf-8"),
        b"css" => ty!("text/css; charset=utf-8"),
        b"js" | b"mjs" => ty!("text/javascript; charset=utf-8"),
        b"json" | b"map" => ty!("application/json"),
        b"txt" | b"text" | b"log" => ty!("text/plain; charset=utf-8"),
        b"md" => ty!("text/markdown; charset=utf-8"),
        b"csv" => ty!("text/csv; charset=utf-8"),
        b"xml" => ty!("application/xml"),
        b"svg" => ty!("image/svg+xml"),
        b"png" => ty!("image/png"),
        b"jpg" | b"jpeg" => ty!("image/jpeg"),
        b"gif" => ty!("image/gif"),
        b"webp" => ty!("image/webp"),
        b"avif" => ty!("image/avif"),
        b"ico" => ty!("image/x-icon"),
        b"woff" => ty!("font/woff"),
        b"woff2" => ty!("font/woff2"),
        b"ttf" => ty!("font/ttf"),
        b"otf" => ty!("font/otf"),
        b"wasm" => ty!("application/wasm"),
        b"pdf" => ty!("application/pdf"),
        b"zip" => ty!("application/zip"),
        b"gz" => ty!("application/gzip"),
        b"tar" => ty!("application/x-tar"),
        b"mp4" => ty!("video/mp4"),
        b"webm" => ty!("video/webm"),
        b"mp3" => ty!("audio/mpeg"),
        b"ogg" => ty!("audio/ogg"),
        b"wav" => ty!("audio/wav"),
        _ => ty!("application/octet-stream"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symlink that leads out is refused by both ways of opening, and one inside works.
    #[test]
    fn opening_stays_beneath_the_root() {
        let dir = std::env::temp_dir().join(format!("forkserve-static-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(dir.join("secret"), "s").unwrap();
        std::fs::write(root.join("sub/ok"), "ok").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("sub/up")).unwrap();
        std::os::unix::fs::symlink("sub/ok", root.join("in")).unwrap();
        let root = root.canonicalize().unwrap();
        let fd = StaticDir::open(root.clone()).unwrap().root_fd;
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        for escape in ["out", "sub/up", "/etc/passwd"] {
            let err = open_beneath(&fd, &root, Path::new(escape)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "openat2: {escape}");
            if escape != "/etc/passwd" {
                let err = open_then_check(&fd, &root, Path::new(escape), flags).unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::NotFound, "fallback: {escape}");
            }
        }
        assert!(open_beneath(&fd, &root, Path::new("in")).is_ok());
        assert!(open_then_check(&fd, &root, Path::new("in"), flags).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

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

    #[test]
    fn content_types_ignore_case() {
        for (name, ty) in [
            ("a.HTML", "text/html; charset=utf-8"),
            ("a.css", "text/css; charset=utf-8"),
            ("a.Woff2", "font/woff2"),
            ("a.tar.gz", "application/gzip"),
            ("noext", "application/octet-stream"),
            ("a.verylongextension", "application/octet-stream"),
            ("a.", "application/octet-stream"),
        ] {
            assert_eq!(content_type(Path::new(name)), ty, "{name}");
        }
    }

    #[test]
    fn ranges() {
        let mut h = HeaderMap::new();
        let part = |h: &HeaderMap| match requested_range(h, 100, "\"e\"", Some("d")) {
            Range::Whole => "whole".to_string(),
            Range::Part(a, b) => format!("{a}-{b}"),
            Range::Unsatisfiable => "416".to_string(),
        };
        for (spec, want) in [
            ("bytes=0-9", "0-9"),
            ("bytes=90-", "90-99"),
            ("bytes=-10", "90-99"),
            ("bytes=-500", "0-99"),
            ("bytes=50-500", "50-99"),
            ("bytes=100-", "416"),
            ("bytes=-0", "416"),
            ("bytes=5-1", "whole"),
            ("bytes=0-1,5-6", "whole"),
            ("items=0-1", "whole"),
            ("bytes=a-b", "whole"),
        ] {
            h.insert(header::RANGE, HeaderValue::from_static(spec));
            assert_eq!(part(&h), want, "{spec}");
        }
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-9"));
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"other\""));
        assert_eq!(part(&h), "whole");
    }
}
