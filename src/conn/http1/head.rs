//! The request-head scanner: pure code, bytes in and a decision out, no IO. [`HeadScan`] finds
//! where a head ends, a line at a time, refusing lines and heads over the `[http]` limits
//! (414, 431) and any line not ended by CRLF (400) as soon as it can; [`check_head`] then
//! checks the complete head against RFC 9110 and RFC 9112 and says how its body is framed.

use std::mem::MaybeUninit;

use http::StatusCode;

/// The largest head, whatever the limits say (0 means no limit per line, not no limit at all;
/// and 100 fields of 8190 bytes would be 800 KB): 431 beyond. hyper refuses a head that does
/// not fit in its read buffer ([`super::HYPER_BUFFER`]) with a bare 431 of its own; the gate's
/// cap, with the empty lines it lets before a head, stays below that, so that the client always
/// gets the gate's answer.
pub(super) const HEAD_LIMIT: usize = 384 * 1024;

/// The limits a head's lines are held to.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeadLimits {
    /// Longest request line, in bytes; `usize::MAX` for no limit.
    pub(super) line: usize,
    /// Longest field line, in bytes; `usize::MAX` for no limit.
    pub(super) field_size: usize,
    /// Most fields.
    pub(super) fields: usize,
}

/// Where the scanner is in a head: where its current line starts, and how many lines it has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct HeadScan {
    line: usize,
    lines: usize,
}

/// What the scanner decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeadStep {
    /// The head goes on past what was read.
    More,
    /// The head ends here, with this many fields.
    Complete { fields: usize },
    /// The head is refused with this status.
    Refuse(StatusCode),
}

impl HeadScan {
    /// Scans `head` (the head's bytes so far, from its first) from `from`, where the last scan
    /// stopped. Returns where this one stopped (just after the head's end, if it ended) and
    /// what it found.
    pub(super) fn scan(
        &mut self,
        head: &[u8],
        mut from: usize,
        limits: &HeadLimits,
    ) -> (usize, HeadStep) {
        // The longest a line may be, with its CR, so far as `lines` says which line it is.
        let too_long = |lines: usize, len: usize| {
            if lines == 0 {
                (len > limits.line.saturating_add(1)).then_some(StatusCode::URI_TOO_LONG)
            } else {
                (len > limits.field_size.saturating_add(1))
                    .then_some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
            }
        };
        let refuse = |at, status| (at, HeadStep::Refuse(status));
        loop {
            let Some(i) = memchr::memchr(b'\n', &head[from..]) else {
                // The line goes on: one that is already too long is refused without waiting
                // for its end.
                let at = head.len();
                if let Some(status) = too_long(self.lines, at - self.line) {
                    return refuse(at, status);
                }
                if at > HEAD_LIMIT {
                    return refuse(at, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
                }
                return (at, HeadStep::More);
            };
            // `at` is the newline's place in the head.
            let at = from + i;
            from = at + 1;
            if let Some(status) = too_long(self.lines, at - self.line) {
                return refuse(from, status);
            }
            if at >= HEAD_LIMIT {
                return refuse(from, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            }
            // Every line ends with CRLF. RFC 9112 §2.2 lets a recipient take a bare LF for one,
            // but a front end that does not would read `X: a\nContent-Length: 5` as one field:
            // the two would disagree on where the request ends.
            if at == self.line || head[at - 1] != b'\r' {
                return refuse(from, StatusCode::BAD_REQUEST);
            }
            let len = at - self.line - 1;
            if self.lines == 0 && len > limits.line {
                return refuse(from, StatusCode::URI_TOO_LONG);
            }
            if self.lines > 0 && len == 0 {
                return (from, HeadStep::Complete { fields: self.lines - 1 });
            }
            if self.lines > 0 && len > limits.field_size {
                return refuse(from, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            }
            self.lines += 1;
            if self.lines - 1 > limits.fields {
                return refuse(from, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            }
            self.line = at + 1;
        }
    }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Whether the connection stays open after a request's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Persistence {
    KeepAlive,
    /// HTTP/1.0 without keep-alive, or `Connection: close`: nothing after it is read.
    Close,
}

/// Checks a complete head (RFC 9110, RFC 9112): what a request must be for hyper and the app
/// to see it. `max_body` is `max_body_size` (`u64::MAX` for none).
pub(super) fn check_head(
    head: &[u8],
    fields: usize,
    max_body: u64,
) -> Result<(Framing, Persistence), StatusCode> {
    let bad = StatusCode::BAD_REQUEST;
    // Most heads have a few fields: those are parsed without an allocation. The table is left
    // uninitialized for httparse to fill: filling 32 empty fields first cost about 90
    // instructions a request.
    let mut few = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 32];
    let mut many = Vec::new();
    let headers = if fields <= few.len() {
        &mut few[..fields]
    } else {
        many.resize_with(fields, MaybeUninit::uninit);
        &mut many[..]
    };
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, headers) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad),
        Err(httparse::Error::Version) => return Err(version_error(head)),
        Err(_) => return Err(bad),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(bad);
    };
    if !valid_target(target.as_bytes(), method) {
        return Err(bad);
    }
    if method == "CONNECT" {
        // A tunnel is not something forkserve serves (RFC 9110 §9.3.6). 501 rather than 405:
        // no resource here could allow it. Closing after the answer matters: what the client
        // sends next may be tunnel bytes, which must not be read as a request.
        return Err(StatusCode::NOT_IMPLEMENTED);
    }
    let mut hosts = 0;
    let mut keep_alive = version == 1;
    let mut lengths: Vec<&[u8]> = Vec::new();
    let mut codings: Vec<String> = Vec::new();
    let mut te = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if !valid_host(h.value) {
                return Err(bad);
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            // A list ("5, 5") is refused rather than rewritten (RFC 9110 §8.6 allows either).
            lengths.push(trim(h.value));
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            let value = std::str::from_utf8(h.value).map_err(|_| bad)?;
            codings.extend(
                value
                    .split(',')
                    .map(|c| c.trim_matches([' ', '\t']).to_ascii_lowercase())
                    .filter(|c| !c.is_empty()),
            );
        } else if name.eq_ignore_ascii_case("connection") {
            for option in h.value.split(|&b| b == b',').map(trim) {
                if option.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    keep_alive = true;
                }
            }
        }
    }
    let persistence = if keep_alive { Persistence::KeepAlive } else { Persistence::Close };
    // HTTP/1.1 needs exactly one Host; HTTP/1.0 at most one (RFC 9112 §3.2).
    if hosts > 1 || (version == 1 && hosts == 0) {
        return Err(bad);
    }
    if te {
        // Both framings at once is how requests are smuggled (RFC 9112 §6.1): refused.
        if !lengths.is_empty() || version == 0 {
            return Err(bad);
        }
        let chunked = codings.iter().filter(|c| *c == "chunked").count();
        if codings.last().map(String::as_str) != Some("chunked") || chunked != 1 {
            return Err(bad);
        }
        if codings.iter().any(|c| !c.bytes().all(is_tchar)) {
            return Err(bad);
        }
        if codings.len() > 1 {
            // gzip, deflate…: framing is fine, but the gate does not decode them.
            return Err(StatusCode::NOT_IMPLEMENTED);
        }
        return Ok((Framing::Chunked, persistence));
    }
    let Some(first) = lengths.first() else { return Ok((Framing::None, persistence)) };
    // Plain digits, and every value the same (RFC 9110 §8.6).
    if lengths.iter().any(|l| l.is_empty() || !l.iter().all(u8::is_ascii_digit) || l != first) {
        return Err(bad);
    }
    let n: u64 = std::str::from_utf8(first).ok().and_then(|s| s.parse().ok()).ok_or(bad)?;
    if n > max_body {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    Ok((Framing::Length(n), persistence))
}

/// The method, target and version of a head's request line, if it has a whole one that reads
/// as such: what a refused request is logged with. Lenient: a refused head may be malformed.
pub(super) fn request_line(head: &[u8]) -> Option<(&str, &str, &str)> {
    let end = memchr::memchr(b'\n', head)?;
    let line = head[..end].strip_suffix(b"\r").unwrap_or(&head[..end]);
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    (parts.next().is_none() && method.bytes().all(is_tchar) && visible(target) && visible(version))
        .then_some((method, target, version))
}

/// The longest request-target hyper takes (`http::Uri`'s limit too): hyper answers a longer
/// one with a bare `414` of its own.
const HYPER_TARGET_MAX: usize = u16::MAX as usize - 1;

/// Whether hyper will refuse a head the gate let through, and with what status: `414` for a
/// target over [`HYPER_TARGET_MAX`], `400` for an absolute-form target that `http::Uri`
/// cannot read although the gate's character rules allow it (an authority such as `[::1`,
/// `x:1:2` or `x%41`). An origin-form target the gate let through always reads. The answer
/// stays hyper's; this is only for the request's end event, and is looked at only when a hook
/// is registered. Costs a byte test for the usual head (origin-form, shorter than the limit).
pub(super) fn hyper_refusal(head: &[u8]) -> Option<StatusCode> {
    if head.len() <= HYPER_TARGET_MAX {
        let start = memchr::memchr(b' ', head).map_or(0, |i| i + 1);
        if head.get(start) == Some(&b'/') {
            return None;
        }
    }
    let (_, target, _) = request_line(head)?;
    if target.len() > HYPER_TARGET_MAX {
        Some(StatusCode::URI_TOO_LONG)
    } else if !target.starts_with('/') && http::Uri::try_from(target).is_err() {
        Some(StatusCode::BAD_REQUEST)
    } else {
        None
    }
}

/// A request of a later HTTP/1 minor version is answered as HTTP/1.1 (RFC 9110 §2.5,
/// RFC 9112 §2.3): its version is rewritten, in place, before the head is parsed.
pub(super) fn accept_minor_versions(head: &mut [u8]) {
    let end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = &mut head[..end];
    let line = match line.last() {
        Some(b'\r') => {
            let n = line.len() - 1;
            &mut line[..n]
        }
        _ => line,
    };
    if let [.., b' ', b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] = line {
        if (b'2'..=b'9').contains(minor) {
            *minor = b'1';
        }
    }
}

/// 505 for a well-formed version other than 1.x, 400 for anything else.
fn version_error(head: &[u8]) -> StatusCode {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let version = line.rsplit(|&b| b == b' ').next().map(trim).unwrap_or_default();
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() && *major != b'1' =>
        {
            StatusCode::HTTP_VERSION_NOT_SUPPORTED
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Whether a request-target is in a form its method allows (RFC 9112 §3.2) and holds only
/// what RFC 3986 allows there: no byte ≥ 0x80, no control or space, none of
/// `` " < > \ ^ ` { | } ``, no fragment, `%` only before two hex digits, `[` and `]` only in
/// an authority. A query may also hold `` [ \ ] ^ ` { | } ``: browsers send those unescaped
/// there (the WHATWG URL Standard), and the query is the app's to read, never routed. The
/// path is kept strict: it is what a front end and the app must agree on.
fn valid_target(target: &[u8], method: &str) -> bool {
    let scheme = [&b"http://"[..], b"https://"]
        .into_iter()
        .find(|s| target.get(..s.len()).is_some_and(|t| t.eq_ignore_ascii_case(s)));
    match (target, scheme) {
        ([b'/', ..], _) => valid_path_query(target),
        // absolute-form: an authority, then a path and a query, either possibly empty.
        (_, Some(scheme)) => {
            let rest = &target[scheme.len()..];
            let end = rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len());
            end > 0 && valid_authority(&rest[..end]) && valid_path_query(&rest[end..])
        }
        (b"*", _) => method == "OPTIONS",
        _ => method == "CONNECT" && target.contains(&b':') && valid_authority(target),
    }
}

/// `host [ ":" port ]`, percent-encoded or an IP literal; no userinfo (RFC 9110 §4.2.4).
fn valid_authority(authority: &[u8]) -> bool {
    valid_chars(authority, |b| unreserved_or_sub_delim(b) || matches!(b, b':' | b'[' | b']'))
}

/// An absolute path (or nothing), then an optional `?` and query.
fn valid_path_query(target: &[u8]) -> bool {
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &[][..]),
    };
    let pchar = |b: u8| unreserved_or_sub_delim(b) || matches!(b, b':' | b'@' | b'/');
    valid_chars(path, pchar)
        && valid_chars(query, |b| {
            pchar(b) || matches!(b, b'?' | b'[' | b'\\' | b']' | b'^' | b'`' | b'{' | b'|' | b'}')
        })
}

/// Whether `bytes` are all `allowed`, or `%` and two hex digits.
fn valid_chars(bytes: &[u8], allowed: impl Fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if !bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else if allowed(bytes[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// RFC 3986's `unreserved` and `sub-delims`.
fn unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(b, b'-' | b'.' | b'_' | b'~')
        || matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
}

/// A Host value: empty, or an authority without userinfo (RFC 9110 §7.2).
fn valid_host(value: &[u8]) -> bool {
    value.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')')
            || matches!(b, b'*' | b'+' | b',' | b';' | b'=' | b':' | b'[' | b']' | b'%')
    })
}

/// RFC 9110's `tchar`: what a token (a method, a field name) is made of.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests;
