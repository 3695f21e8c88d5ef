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

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
                io::Error::new(io::Error::from(e).kind(), format!("{}: {e}", root.display()))
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
            _ => {
                let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
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
    let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
    let modified = UNIX_EPOCH + Duration::from_secs(mtime.min(LAST_HTTP_DATE));
    // Nanoseconds too: a file rewritten within the same second at the same length must not
    // keep its validator, or a resumed download could splice old and new bytes.
    let etag = format!("\"{mtime:x}.{:x}-{len:x}\"", meta.mtime_nsec());
    let last_modified = (mtime <= LAST_HTTP_DATE).then(|| httpdate::fmt_http_date(modified));

    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    insert(headers, header::ETAG, &etag);
    if let Some(date) = &last_modified {
        insert(headers, header::LAST_MODIFIED, date);
    }

    if not_modified(req, &etag, modified) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return response;
    }
    // RFC 9110 §13.1.5: a date validates If-Range only if it is strong, i.e. the file had not
    // changed for a second before the date was sent.
    let strong_date = last_modified.as_deref().filter(|_| {
        SystemTime::now().duration_since(modified).is_ok_and(|d| d >= Duration::from_secs(1))
    });
    let (offset, count) = match requested_range(req, len, &etag, strong_date) {
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
    if !head {
        *response.body_mut() = Body::file(file, offset, count);
    }
    response
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

/// The media type for a file name's extension.
fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(OsStr::to_str).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "text" | "log" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        _ => "application/octet-stream",
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
