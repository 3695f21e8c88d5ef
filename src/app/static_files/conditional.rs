//! What identifies a version of a file to clients (its validators: `ETag`, `Last-Modified`),
//! and what a request asks of them: conditional requests (RFC 9110 §13) and a single byte range
//! (§14).

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, header};

/// The latest time an HTTP date can express (9999-12-31T23:59:59Z); `httpdate` panics beyond.
const LAST_HTTP_DATE: u64 = 253_402_300_799;

/// The response headers that identify a version of a file.
#[derive(Clone)]
pub(super) struct Validators {
    pub(super) etag: HeaderValue,
    pub(super) last_modified: Option<HeaderValue>,
    /// The mtime, clamped to what an HTTP date can express.
    pub(super) modified: SystemTime,
}

impl Validators {
    pub(super) fn of(meta: &Metadata) -> Validators {
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

/// RFC 9110 §13.1.2 and §13.1.3: `If-None-Match` wins over `If-Modified-Since`.
pub(super) fn not_modified(req: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
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

pub(super) enum Range {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// RFC 9110 §14.2: one `bytes` range is served; several, or a malformed header, are ignored
/// (the whole file is sent, which the RFC allows), as is a range whose `If-Range` no longer
/// matches the file.
pub(super) fn requested_range(
    req: &HeaderMap,
    len: u64,
    etag: &str,
    last_modified: Option<&str>,
) -> Range {
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

#[cfg(test)]
mod tests {
    use super::*;

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
