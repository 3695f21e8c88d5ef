//! Files served from a directory: `GET` and `HEAD`, `Content-Type` by extension, `index.html`
//! for directories, conditional requests and single byte ranges, and no way out of the root.
//!
//! Containment: the request path is percent-decoded, split into segments, and any `..` segment
//! refuses the request before the file system is touched; `.` and empty segments are dropped, so
//! no segment can be absolute. The joined path is then canonicalized (resolving symlinks) and
//! must still lie inside the canonical root, which stops symlinks that lead out. The file is
//! opened non-blocking and must be a regular file, so a FIFO cannot hang the worker.

use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use super::{Body, plain};

/// A `static` route's directory.
#[derive(Debug, Clone)]
pub(crate) struct StaticDir {
    /// Canonical (absolute, no symlinks); checked to be a directory when the config was loaded.
    root: PathBuf,
}

impl StaticDir {
    pub(crate) fn new(root: PathBuf) -> StaticDir {
        StaticDir { root }
    }

    /// Answers a request whose path starts with the route's `prefix`.
    pub(crate) fn serve<B>(&self, req: &Request<B>, prefix: &str) -> Response<Body> {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                return response;
            }
        };
        let path = req.uri().path();
        let Some(relative) = relative_path(&path[prefix.len()..]) else {
            return plain(StatusCode::NOT_FOUND, "Not Found\n");
        };
        let joined = self.root.join(relative);
        let mut file_path = match self.resolve(&joined) {
            Ok(p) => p,
            Err(e) => return io_error_response(&e, &joined),
        };
        if file_path.is_dir() {
            if !path.ends_with('/') {
                return redirect_to_directory(req);
            }
            let index = file_path.join("index.html");
            file_path = match self.resolve(&index) {
                Ok(p) => p,
                Err(e) => return io_error_response(&e, &index),
            };
        }
        let (file, meta) = match open_regular(&file_path) {
            Ok(opened) => opened,
            Err(e) => return io_error_response(&e, &file_path),
        };
        send_file(req.headers(), head, &file_path, file, &meta)
    }

    /// Canonicalizes `path` and checks that it is inside the root; a path that leads out is
    /// reported as not found.
    fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        let resolved = path.canonicalize()?;
        if resolved.starts_with(&self.root) {
            Ok(resolved)
        } else {
            tracing::debug!(path = %path.display(), "refused a path that leads out of the static root");
            Err(io::ErrorKind::NotFound.into())
        }
    }
}

/// The request path below the route's prefix as a relative path, or `None` if it is not
/// acceptable: bad percent-encoding, a NUL byte, or a `..` segment.
fn relative_path(raw: &str) -> Option<PathBuf> {
    let decoded = percent_decode(raw.as_bytes())?;
    if decoded.contains(&0) {
        return None;
    }
    let mut path = PathBuf::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => continue,
            b".." => return None,
            _ => path.push(OsStr::from_bytes(segment)),
        }
    }
    Some(path)
}

fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hex = input.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

fn open_regular(path: &Path) -> io::Result<(File, Metadata)> {
    // O_NONBLOCK: opening a FIFO that a symlink swap put here must not block the worker.
    let file = OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    Ok((file, meta))
}

fn io_error_response(e: &io::Error, path: &Path) -> Response<Body> {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename => {
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
fn redirect_to_directory<B>(req: &Request<B>) -> Response<Body> {
    let location = match req.uri().query() {
        Some(q) => format!("{}/?{q}", req.uri().path()),
        None => format!("{}/", req.uri().path()),
    };
    let mut response = plain(StatusCode::MOVED_PERMANENTLY, "Moved Permanently\n");
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn send_file(
    req: &HeaderMap,
    head: bool,
    path: &Path,
    file: File,
    meta: &Metadata,
) -> Response<Body> {
    let len = meta.len();
    let modified = UNIX_EPOCH + Duration::from_secs(meta.mtime().max(0) as u64);
    let etag = format!("\"{:x}-{:x}\"", meta.mtime(), len);
    let last_modified = httpdate::fmt_http_date(modified);

    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    insert(headers, header::ETAG, &etag);
    insert(headers, header::LAST_MODIFIED, &last_modified);

    if not_modified(req, &etag, modified) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return response;
    }
    let (offset, count) = match requested_range(req, len, &etag, &last_modified) {
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
fn requested_range(req: &HeaderMap, len: u64, etag: &str, last_modified: &str) -> Range {
    let Some(spec) = req.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Range::Whole;
    };
    if let Some(if_range) = req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        if if_range != etag && if_range != last_modified {
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

    #[test]
    fn relative_paths_cannot_climb() {
        assert_eq!(relative_path("a/b.txt"), Some(PathBuf::from("a/b.txt")));
        assert_eq!(relative_path("/a//./b"), Some(PathBuf::from("a/b")));
        assert_eq!(relative_path("%2fetc%2Fpasswd"), Some(PathBuf::from("etc/passwd")));
        for bad in
            ["..", "a/../../x", "%2e%2e/x", "%2E%2E%2Fx", "a/..%2f..%2fx", "x%00", "%zz", "%2"]
        {
            assert_eq!(relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges() {
        let mut h = HeaderMap::new();
        let part = |h: &HeaderMap| match requested_range(h, 100, "\"e\"", "d") {
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
