//! The `json` log format: one object per line, for log shippers.
//!
//! `{"time":"…","level":"info","pid":123,"worker":4,"message":"…","fields":{…}}`: `time` in
//! RFC 3339 (UTC), `level` lowercase, `pid` the process that wrote the line, `worker` the
//! worker's id (absent in the master and in molds), `fields` the event's other fields, with
//! numbers and booleans as such and everything else as a string. Written by hand rather than
//! with `serde_json`: a line is a handful of strings and numbers, and the worker's id comes
//! from [`set_worker`], not from the span, so the shape stays the same whatever spans enclose
//! the event.

use std::fmt::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Level};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

/// This process's worker id, 0 in the master and in molds (worker ids start at 1).
static WORKER: AtomicU64 = AtomicU64::new(0);

/// Records that this process is worker `id`, for the `worker` member of its lines.
pub(crate) fn set_worker(id: u64) {
    WORKER.store(id, Ordering::Relaxed);
}

/// Writes `event` as one JSON object, without the newline.
pub(super) fn write_event(out: &mut Writer<'_>, event: &Event<'_>) -> fmt::Result {
    let mut time = String::new();
    SystemTime.format_time(&mut Writer::new(&mut time))?;
    out.write_str("{\"time\":")?;
    write_str(out, &time)?;
    write!(out, ",\"level\":\"{}\"", level(event.metadata().level()))?;
    write!(out, ",\"pid\":{}", std::process::id())?;
    match WORKER.load(Ordering::Relaxed) {
        0 => {}
        id => write!(out, ",\"worker\":{id}")?,
    }
    let mut fields = Fields { message: String::new(), members: String::new() };
    event.record(&mut fields);
    out.write_str(",\"message\":")?;
    write_str(out, &fields.message)?;
    write!(out, ",\"fields\":{{{}}}}}", fields.members)
}

fn level(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// The event's message, and its other fields as the members of a JSON object.
struct Fields {
    message: String,
    members: String,
}

impl Fields {
    /// Starts the member `name`, ready for its value.
    fn member(&mut self, name: &str) {
        if !self.members.is_empty() {
            self.members.push(',');
        }
        let _ = write_str(&mut self.members, name);
        self.members.push(':');
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.member(field.name());
            let _ = write_str(&mut self.members, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field.name());
        let _ = write!(self.members, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field.name());
        let _ = write!(self.members, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field.name());
        let _ = write!(self.members, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.member(field.name());
        // JSON has no NaN or infinity: those are written as strings.
        if value.is_finite() {
            let _ = write!(self.members, "{value}");
        } else {
            let _ = write_str(&mut self.members, &value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // A message given as format arguments arrives here, as `fmt::Arguments`.
        let text = format!("{value:?}");
        self.record_str(field, &text);
    }
}

/// Writes `s` as a JSON string, quoted and escaped.
pub(crate) fn write_str(out: &mut impl Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    let mut rest = s;
    while let Some(at) = rest.find(|c: char| c == '"' || c == '\\' || c < ' ') {
        out.write_str(&rest[..at])?;
        let c = rest[at..].chars().next().expect("found at `at`");
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c => write!(out, "\\u{:04x}", c as u32)?,
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.write_str(rest)?;
    out.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::write_str;

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        write_str(&mut out, "a\"b\\c\nd\u{1}é").unwrap();
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }
}
