//! The access log's line format: [`AccessFormat`], parsed once when the config is read (an
//! unknown atom is a config error there, not a surprise per request), and how a
//! [`RequestEnd`] is written in it. A module of its own, apart from the access log
//! (`access_log`), as the config reads it and the access log writes with it.
//!
//! The named formats are nginx's `common` and `combined`, and `json`; anything else is a custom
//! format in Gunicorn's atoms (`%(h)s`, `%({user-agent}i)s`, `%({x-request-id}o)s`, …).

use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::time::SystemTime;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use http::HeaderName;

use crate::request_end::{AnsweredBy, Ending, Headers, Hooks, RequestEnd, Side};

/// nginx's `common`: `$remote_addr - $remote_user [$time_local] "$request" $status
/// $body_bytes_sent`.
const COMMON: &str = r#"%(h)s - %(u)s %(t)s "%(r)s" %(s)s %(B)s"#;
/// nginx's `combined`: `common`, then `"$http_referer" "$http_user_agent"`.
const COMBINED: &str = r#"%(h)s - %(u)s %(t)s "%(r)s" %(s)s %(B)s "%(f)s" "%(a)s""#;

/// The status written for a request whose connection closed before any response started:
/// nginx's `499` (client closed request).
const NO_RESPONSE: u16 = 499;

/// How each access log line is written: a named format, or a custom one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFormat {
    /// As configured: `combined`, or the custom format's text.
    source: String,
    kind: Kind,
    /// The headers `{name}i` and `{name}o` atoms name, which [`Atom::RequestHeader`] and
    /// [`Atom::ResponseHeader`] index.
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Text(Vec<Piece>),
    Json,
}

/// One piece of a text format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Atom(Atom),
}

/// Gunicorn's atoms, and `c` (whether the response went out whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Atom {
    /// `h`: the client's address as identified.
    Client,
    /// `l`: `-` (identd), as in Gunicorn.
    Dash,
    /// `u`: the user name; `-`, as forkserve does not decode credentials.
    User,
    /// `t`: local time, `[10/Oct/2000:13:55:36 -0700]`.
    Time,
    /// `r`: the request line.
    Line,
    /// `m`, `U`, `q`, `H`: the method, path, query and protocol.
    Method,
    Path,
    Query,
    Protocol,
    /// `s`: the status (`499` for no response).
    Status,
    /// `B`: body bytes sent; `b`: the same, or `-` for none.
    Bytes,
    BytesOrDash,
    /// `f`, `a`: `Referer` and `User-Agent` (also `{referer}i`, `{user-agent}i`).
    Referer,
    UserAgent,
    /// `T`, `D`, `M`, `L`: the duration in whole seconds, microseconds, milliseconds, and
    /// seconds with six decimals.
    Secs,
    Micros,
    Millis,
    DecimalSecs,
    /// `p`: the worker's pid, `<pid>` as Gunicorn writes it.
    Pid,
    /// `c`: `OK` for a response whose last byte was written, `-` for one cut short (nginx's
    /// `$request_completion`, with a dash for empty).
    Completion,
    /// `{name}i`, `{name}o`: a request or response header, by its index in the format's list
    /// (in the event's, once the format is [bound](AccessFormat::bind)).
    RequestHeader(usize),
    ResponseHeader(usize),
}

const ATOMS: [(&str, Atom); 20] = [
    ("h", Atom::Client),
    ("l", Atom::Dash),
    ("u", Atom::User),
    ("t", Atom::Time),
    ("r", Atom::Line),
    ("m", Atom::Method),
    ("U", Atom::Path),
    ("q", Atom::Query),
    ("H", Atom::Protocol),
    ("s", Atom::Status),
    ("B", Atom::Bytes),
    ("b", Atom::BytesOrDash),
    ("f", Atom::Referer),
    ("a", Atom::UserAgent),
    ("T", Atom::Secs),
    ("D", Atom::Micros),
    ("M", Atom::Millis),
    ("L", Atom::DecimalSecs),
    ("p", Atom::Pid),
    ("c", Atom::Completion),
];

impl Default for AccessFormat {
    /// `combined`: Gunicorn's default format is the same fields (its own spelling of nginx's
    /// `combined`), and every log analyser reads it.
    fn default() -> Self {
        "combined".parse().expect("a valid format")
    }
}

impl FromStr for AccessFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut headers = Headers::default();
        let kind = match text {
            "json" => Kind::Json,
            "common" => Kind::Text(parse(COMMON, &mut headers)?),
            "combined" => Kind::Text(parse(COMBINED, &mut headers)?),
            custom => Kind::Text(parse(custom, &mut headers)?),
        };
        Ok(AccessFormat {
            source: text.to_string(),
            kind,
            request_headers: headers.request,
            response_headers: headers.response,
        })
    }
}

/// Parses a custom format: `%(name)s` atoms, `%%` for a `%`, anything else as written; the
/// header names its atoms use go to `headers`.
fn parse(text: &str, headers: &mut Headers) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        literal.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let column = text.len() - rest.len() + at + 1;
        if let Some(after) = after.strip_prefix('%') {
            literal.push('%');
            rest = after;
            continue;
        }
        let Some(inner) = after.strip_prefix('(') else {
            return Err(format!(
                "access log format: a `%` at character {column} starts no atom (`%(h)s`; `%%` \
                 for a percent sign)"
            ));
        };
        let Some(end) = inner.find(")s") else {
            return Err(format!("access log format: the atom at character {column} has no `)s`"));
        };
        let name = &inner[..end];
        let atom = atom(name, headers).map_err(|why| {
            format!(
                "access log format: {why} `%({name})s` at character {column}; known: {}, \
                 {{Header-Name}}i, {{Header-Name}}o",
                ATOMS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" ")
            )
        })?;
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Atom(atom));
        rest = &inner[end + 2..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

/// The atom named `name`: one of [`ATOMS`], or a header, `{Name}i` for the request's and
/// `{Name}o` for the response's (case-insensitive), whose name goes to `headers`. `Err` says
/// what is wrong, before the atom is quoted.
fn atom(name: &str, headers: &mut Headers) -> Result<Atom, &'static str> {
    if let Some(header) = name.strip_prefix('{') {
        let Some((header, side)) = header.split_once('}') else { return Err("unknown atom") };
        let header = HeaderName::from_bytes(header.as_bytes()).map_err(|_| "bad header name in")?;
        return match side {
            "i" if header == http::header::REFERER => Ok(Atom::Referer),
            "i" if header == http::header::USER_AGENT => Ok(Atom::UserAgent),
            "i" => Ok(Atom::RequestHeader(index(&mut headers.request, header))),
            "o" => Ok(Atom::ResponseHeader(index(&mut headers.response, header))),
            _ => Err("unknown atom"),
        };
    }
    ATOMS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a).ok_or("unknown atom")
}

/// The index of `name` in `names`, where it is added if missing.
fn index(names: &mut Vec<HeaderName>, name: HeaderName) -> usize {
    names.iter().position(|n| *n == name).unwrap_or_else(|| {
        names.push(name);
        names.len() - 1
    })
}

impl fmt::Display for AccessFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for AccessFormat {
    /// Parses inside the visitor, so that the `toml` deserializer attaches the string's span to
    /// an error: `file:line:col`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AccessFormat;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an access log format")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<AccessFormat, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for AccessFormat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// What one line needs besides the event: read once per line by the writer.
pub(crate) struct Stamp<'a> {
    /// The local time, as `%(t)s` writes it (without brackets).
    pub(crate) local: &'a str,
    /// The same time in RFC 3339, for `json`.
    pub(crate) iso: &'a str,
    pub(crate) pid: u32,
}

impl AccessFormat {
    /// The format as a worker uses it: the headers its atoms name are asked of `hooks` (copied
    /// into every event), and its atoms index the event's lists.
    pub(crate) fn bind(&self, hooks: &Hooks) -> AccessFormat {
        let request: Vec<_> =
            self.request_headers.iter().map(|n| hooks.want_header(Side::Request, n)).collect();
        let response: Vec<_> =
            self.response_headers.iter().map(|n| hooks.want_header(Side::Response, n)).collect();
        let mut bound = self.clone();
        if let Kind::Text(pieces) = &mut bound.kind {
            for piece in pieces {
                match piece {
                    Piece::Atom(Atom::RequestHeader(i)) => *i = request[*i],
                    Piece::Atom(Atom::ResponseHeader(i)) => *i = response[*i],
                    _ => {}
                }
            }
        }
        bound
    }

    /// Appends `event` as one line, newline included, to `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>, event: &RequestEnd<'_>, stamp: &Stamp<'_>) {
        match &self.kind {
            Kind::Text(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Literal(text) => out.extend_from_slice(text.as_bytes()),
                        Piece::Atom(atom) => text_atom(out, *atom, event, stamp),
                    }
                }
            }
            Kind::Json => json(out, event, stamp),
        }
        out.push(b'\n');
    }
}

fn status(event: &RequestEnd<'_>) -> u16 {
    event.status().map_or(NO_RESPONSE, |s| s.as_u16())
}

fn version(event: &RequestEnd<'_>) -> &'static str {
    match event.version() {
        Some(http::Version::HTTP_09) => "HTTP/0.9",
        Some(http::Version::HTTP_10) => "HTTP/1.0",
        Some(http::Version::HTTP_11) => "HTTP/1.1",
        Some(http::Version::HTTP_2) => "HTTP/2.0",
        Some(http::Version::HTTP_3) => "HTTP/3.0",
        _ => "-",
    }
}

fn client(event: &RequestEnd<'_>) -> Option<std::net::IpAddr> {
    event.client().or_else(|| event.peer().map(|p| p.ip()))
}

fn text_atom(out: &mut Vec<u8>, atom: Atom, event: &RequestEnd<'_>, stamp: &Stamp<'_>) {
    // Writes into a `Vec` do not fail.
    let _ = write_atom(out, atom, event, stamp);
}

fn write_atom(
    out: &mut Vec<u8>,
    atom: Atom,
    event: &RequestEnd<'_>,
    stamp: &Stamp<'_>,
) -> std::io::Result<()> {
    let d = event.duration();
    // Read only by the atoms that show it: building it takes a look at the URI.
    let target = || event.target();
    match atom {
        Atom::Client => match client(event) {
            Some(ip) => push_ip(out, ip),
            None => out.push(b'-'),
        },
        Atom::Dash | Atom::User => out.push(b'-'),
        Atom::Time => {
            out.push(b'[');
            out.extend_from_slice(stamp.local.as_bytes());
            out.push(b']');
        }
        Atom::Line => match (event.method(), target().as_deref()) {
            (Some(m), Some(t)) => {
                escaped(out, m.as_bytes());
                out.push(b' ');
                escaped(out, t.as_bytes());
                out.push(b' ');
                out.extend_from_slice(version(event).as_bytes());
            }
            _ => out.push(b'-'),
        },
        Atom::Method => escaped(out, event.method().unwrap_or("-").as_bytes()),
        Atom::Path => {
            let target = target();
            let path = target.as_deref().map_or("-", |t| t.split('?').next().unwrap_or(t));
            escaped(out, path.as_bytes())
        }
        Atom::Query => {
            let target = target();
            let query = target.as_deref().and_then(|t| t.split_once('?')).map_or("", |(_, q)| q);
            escaped(out, query.as_bytes())
        }
        Atom::Protocol => out.extend_from_slice(version(event).as_bytes()),
        Atom::Status => push_u64(out, u64::from(status(event))),
        Atom::Bytes => push_u64(out, event.response_body_bytes()),
        Atom::BytesOrDash => match event.response_body_bytes() {
            0 => out.push(b'-'),
            n => push_u64(out, n),
        },
        Atom::Referer => escaped(out, event.referer().map_or(b"-", |v| v.as_bytes())),
        Atom::UserAgent => escaped(out, event.user_agent().map_or(b"-", |v| v.as_bytes())),
        Atom::Secs => push_u64(out, d.as_secs()),
        Atom::Micros => push_u64(out, u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        Atom::Millis => push_u64(out, u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        Atom::DecimalSecs => write!(out, "{}.{:06}", d.as_secs(), d.subsec_micros())?,
        Atom::Pid => write!(out, "<{}>", stamp.pid)?,
        Atom::RequestHeader(i) => {
            escaped(out, event.request_header(i).map_or(b"-", |v| v.as_bytes()))
        }
        Atom::ResponseHeader(i) => {
            escaped(out, event.response_header(i).map_or(b"-", |v| v.as_bytes()))
        }
        Atom::Completion => match event.ending() {
            Ending::Complete => out.extend_from_slice(b"OK"),
            Ending::Cut => out.push(b'-'),
        },
    }
    Ok(())
}

/// Appends `n` in decimal: the numbers of every line, without the formatting machinery
/// (which took about a third of a line's cost).
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends an address as `Display` writes it; IPv4, the common case, by hand (its `Display`
/// alone cost as much as the rest of a `combined` line).
fn push_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Writes what a client sent as nginx does: `"`, `\` and bytes outside printable ASCII as
/// `\xHH`, so that a line is one line and its quoted fields stay quoted.
fn escaped(out: &mut Vec<u8>, mut bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let plain = |b: &u8| *b != b'"' && *b != b'\\' && (0x20..0x7f).contains(b);
    loop {
        // Runs of printable bytes, the whole of most fields, are copied at once.
        let run = bytes.iter().position(|b| !plain(b)).unwrap_or(bytes.len());
        out.extend_from_slice(&bytes[..run]);
        let Some((&b, rest)) = bytes[run..].split_first() else { return };
        out.extend_from_slice(&[b'\\', b'x', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        bytes = rest;
    }
}

/// One JSON object: the fields of `combined`, and the rest of the event.
fn json(out: &mut Vec<u8>, event: &RequestEnd<'_>, stamp: &Stamp<'_>) {
    let _ = write!(out, "{{\"time\":\"{}\",\"client\":", stamp.iso);
    json_opt(out, client(event).map(|ip| ip.to_string()).as_deref().map(str::as_bytes));
    out.extend_from_slice(b",\"method\":");
    json_opt(out, event.method().map(str::as_bytes));
    out.extend_from_slice(b",\"target\":");
    json_opt(out, event.target().as_deref().map(str::as_bytes));
    out.extend_from_slice(b",\"protocol\":");
    json_opt(out, event.version().map(|_| version(event).as_bytes()));
    let d = event.duration();
    let _ = write!(
        out,
        ",\"status\":{},\"bytes\":{},\"request_bytes\":{},\"duration_us\":{},\"referer\":",
        status(event),
        event.response_body_bytes(),
        event.request_body_bytes(),
        d.as_micros()
    );
    json_opt(out, event.referer().map(|v| v.as_bytes()));
    out.extend_from_slice(b",\"user_agent\":");
    json_opt(out, event.user_agent().map(|v| v.as_bytes()));
    let by = match event.answered_by() {
        AnsweredBy::App => "app",
        AnsweredBy::Gate => "gate",
    };
    let _ = write!(
        out,
        ",\"answered_by\":\"{by}\",\"complete\":{},\"worker\":{},\"pid\":{}}}",
        event.ending() == Ending::Complete,
        event.worker(),
        stamp.pid
    );
}

/// A JSON string, or `null`. Bytes that are not UTF-8 (a header may hold any) become U+FFFD.
fn json_opt(out: &mut Vec<u8>, value: Option<&[u8]>) {
    let Some(bytes) = value else {
        return out.extend_from_slice(b"null");
    };
    out.push(b'"');
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// The local time of `now`: `10/Oct/2000:13:55:36 -0700` and `2000-10-10T13:55:36-07:00`.
pub(crate) fn local_times(now: SystemTime) -> (String, String) {
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    // SAFETY: `localtime_r` writes only into `tm`, which is ours; `secs` is a valid time_t.
    let tm = unsafe {
        let mut tm: nix::libc::tm = std::mem::zeroed();
        let t: nix::libc::time_t = secs;
        if nix::libc::localtime_r(&t, &mut tm).is_null() {
            tm.tm_year = 70;
            tm.tm_mday = 1;
        }
        tm
    };
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let off = tm.tm_gmtoff / 60;
    let (sign, off) = if off < 0 { ('-', -off) } else { ('+', off) };
    let (oh, om) = (off / 60, off % 60);
    let (year, month, day) = (tm.tm_year + 1900, tm.tm_mon as usize % 12, tm.tm_mday);
    let (h, m, s) = (tm.tm_hour, tm.tm_min, tm.tm_sec);
    let local =
        format!("{day:02}/{}/{year}:{h:02}:{m:02}:{s:02} {sign}{oh:02}{om:02}", MONTHS[month]);
    let iso = format!("{year}-{:02}-{day:02}T{h:02}:{m:02}:{s:02}{sign}{oh:02}:{om:02}", month + 1);
    (local, iso)
}

#[cfg(test)]
mod tests;
