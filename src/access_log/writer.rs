//! A worker's access log buffer, and how it reaches the file: lines are formatted into one
//! buffer and written whole, with one `write(2)` for all of them, on an `O_APPEND`
//! descriptor, when the buffer holds [`FLUSH_AT`] bytes, at least every second, and when the
//! worker ends after draining.
//!
//! Why lines are never torn or interleaved with another worker's: each worker has its own
//! descriptor opened with `O_APPEND`, and on Linux one `write(2)` to a regular file on a local
//! filesystem is atomic with respect to other appenders (the inode's lock is held for the
//! whole write; the offset is taken at the end under it). A short write happens only when
//! the disk is full or a quota reached (then the rest is written next, and a line may be cut
//! at that point). A pipe (stdout under a supervisor) is atomic only up to `PIPE_BUF` (4096
//! bytes): to stdout, the buffer is written in pieces of at most that size that end on a line
//! boundary, so that lines from several workers interleave only as whole lines (a single
//! line longer than 4096 bytes is written alone, and may be split by another's writes).
//!
//! A `USR1` reopens the file onto the same descriptor number (see
//! [`crate::logging::file::reopen_on_usr1`]) between two writes: each buffer goes wholly to
//! the old file or the new one.
//!
//! Writes are blocking: a file write lands in the page cache, and a stdout reader that stops
//! reading stops the workers, as it would with any logging to a pipe (backpressure, not loss).

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::time::SystemTime;

use crate::access_format::{AccessFormat, Stamp, local_times};
use crate::request_end::RequestEnd;

/// The buffer is written once it holds this much.
const FLUSH_AT: usize = 64 * 1024;

/// What a pipe writes atomically (Linux's `PIPE_BUF`).
const PIPE_BUF: usize = 4096;

/// Where the lines go.
pub(crate) enum Out {
    Stdout,
    File(File),
}

impl Drop for Writer {
    /// The `USR1` handler must not reopen onto the descriptor's number once it is closed.
    fn drop(&mut self) {
        if let Out::File(file) = &self.out {
            let _ = crate::logging::file::reopen_on_usr1(file.as_raw_fd(), None);
        }
    }
}

/// A worker's access log: its format, buffer and descriptor.
pub(crate) struct Writer {
    out: Out,
    format: AccessFormat,
    pid: u32,
    state: RefCell<State>,
}

struct State {
    buf: Vec<u8>,
    /// The second the cached times are of, and the times (`%(t)s`, json's `time`).
    second: u64,
    local: String,
    iso: String,
    /// A write failed: said once, until one succeeds again.
    failing: bool,
}

impl Writer {
    pub(crate) fn new(out: Out, format: AccessFormat) -> Self {
        let state = State {
            buf: Vec::with_capacity(FLUSH_AT + 4096),
            second: u64::MAX,
            local: String::new(),
            iso: String::new(),
            failing: false,
        };
        Writer { out, format, pid: std::process::id(), state: RefCell::new(state) }
    }

    /// Formats `event` into the buffer; writes the buffer once it is full.
    pub(crate) fn log(&self, event: &RequestEnd<'_>) {
        let mut state = self.state.borrow_mut();
        let now = SystemTime::now();
        let second = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != state.second {
            // The local time is formatted once a second, not per line.
            (state.local, state.iso) = local_times(now);
            state.second = second;
        }
        let State { buf, local, iso, .. } = &mut *state;
        let stamp = Stamp { local, iso, pid: self.pid };
        self.format.write(buf, event, &stamp);
        if buf.len() >= FLUSH_AT {
            self.write_out(&mut state);
        }
    }

    /// Writes what is buffered.
    pub(crate) fn flush(&self) {
        let mut state = self.state.borrow_mut();
        if !state.buf.is_empty() {
            self.write_out(&mut state);
        }
    }

    fn write_out(&self, state: &mut State) {
        let result = match &self.out {
            Out::File(file) => {
                let mut file: &File = file;
                file.write_all(&state.buf)
            }
            Out::Stdout => write_lines(&mut io::stdout().lock(), &state.buf),
        };
        state.buf.clear();
        match result {
            Ok(()) => state.failing = false,
            Err(e) if !state.failing => {
                state.failing = true;
                tracing::error!("cannot write the access log, lines are lost: {e}");
            }
            Err(_) => {}
        }
    }
}

/// Writes `buf` (whole lines) in writes of at most [`PIPE_BUF`] bytes that each end on a line
/// boundary; a longer line alone.
fn write_lines(out: &mut impl Write, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let end = if buf.len() <= PIPE_BUF {
            buf.len()
        } else {
            match memchr::memrchr(b'\n', &buf[..PIPE_BUF]) {
                Some(i) => i + 1,
                None => memchr::memchr(b'\n', buf).map_or(buf.len(), |i| i + 1),
            }
        };
        out.write_all(&buf[..end])?;
        buf = &buf[end..];
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each write.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn stdout_writes_are_whole_lines_of_at_most_pipe_buf() {
        let line = |n: usize| format!("{}\n", "x".repeat(n));
        let text = [line(1000), line(2000), line(3000), line(5000), line(10)].concat();
        let mut writes = Writes::default();
        write_lines(&mut writes, text.as_bytes()).unwrap();
        let sizes: Vec<_> = writes.0.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3002, 3001, 5001, 11]);
        assert!(writes.0.iter().all(|w| w.ends_with(b"\n")));
        assert_eq!(writes.0.concat(), text.as_bytes());
    }
}
