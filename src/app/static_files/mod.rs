//! Files served from a directory: `GET` and `HEAD`, `Content-Type` by extension
//! ([`content_type`]), `index.html` for directories, conditional requests and single byte ranges
//! ([`conditional`]), and no way out of the root ([`beneath`]). Small files are served from
//! memory ([`cache`]); the others are streamed from the open file.
//!
//! The router has already refused `..` segments and normalized the path; hidden segments
//! (`.git`, `.env`; all but `.well-known`) are refused here.

mod beneath;
mod cache;
mod conditional;
mod content_type;
mod root;

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use self::beneath::open_beneath;
use self::cache::{CACHE_MAX_FILE, Stamp, lock_cache, read_to_cache};
use self::conditional::{Range, Validators, not_modified, requested_range};
use self::content_type::content_type;
use super::kind::{AppKind, Matched, Methods, Reply};
use super::{Body, plain};

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

impl AppKind for StaticDir {
    fn methods(&self) -> Methods {
        Methods::READ
    }

    fn call(&self, req: Request<Incoming>, at: Matched) -> Reply {
        self.serve(&req, at.path(&req), at.prefix_len).into()
    }
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

/// The methods a static route answers: `Methods::READ`.
const ALLOW: &str = "GET, HEAD, OPTIONS";

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

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}
