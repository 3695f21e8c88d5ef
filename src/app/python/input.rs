//! The request body, for `wsgi.input`: received whole by the event loop before the app runs
//! ([`receive`]), in memory up to `body_buffer_size` and in an unnamed temporary file beyond
//! (nginx's `client_body_buffer_size`), so that a slow or large upload never holds a Python
//! thread; then read by the app through [`Input`] (`read`, `readline`, `readlines`,
//! iteration).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::lock;

/// A received body.
#[derive(Debug)]
pub(crate) enum Received {
    Memory(Bytes),
    File { file: File, len: u64 },
}

impl Received {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Received::Memory(b) => b.len() as u64,
            Received::File { len, .. } => *len,
        }
    }
}

/// Why a body was not received.
#[derive(Debug)]
pub(crate) enum NotReceived {
    /// The client's fault, or its leaving: the gate, which ended the body, answers (413, 408,
    /// 400) if anyone still listens.
    Client(hyper::Error),
    /// The server's: the spool file could not be made or written.
    Spool(io::Error),
}

/// Receives the whole of `body`, keeping at most `in_memory` bytes in memory. The size limit
/// (`max_body_size`) and the timeouts are the gate's, which ends the body with an error.
pub(crate) async fn receive(mut body: Incoming, in_memory: u64) -> Result<Received, NotReceived> {
    use NotReceived::Spool;
    let declared = hyper::body::Body::size_hint(&body).exact();
    let mut memory = BytesMut::new();
    let mut spool: Option<(File, u64)> = None;
    if declared.is_some_and(|n| n > in_memory) {
        spool = Some((temporary().map_err(Spool)?, 0));
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(NotReceived::Client)?;
        let Ok(data) = frame.into_data() else { continue };
        if spool.is_none() && (memory.len() + data.len()) as u64 > in_memory {
            let mut file = temporary().map_err(Spool)?;
            file.write_all(&memory).map_err(Spool)?;
            spool = Some((file, memory.len() as u64));
            memory = BytesMut::new();
        }
        match &mut spool {
            // A write to the page cache, as nginx does: not worth a thread hand-off.
            Some((file, len)) => {
                file.write_all(&data).map_err(Spool)?;
                *len += data.len() as u64;
            }
            None => memory.extend_from_slice(&data),
        }
    }
    Ok(match spool {
        Some((file, len)) => Received::File { file, len },
        None => Received::Memory(memory.freeze()),
    })
}

/// An unnamed file in the temporary directory: gone when closed, whatever happens to the
/// worker.
pub(crate) fn temporary() -> io::Result<File> {
    let dir = std::env::temp_dir();
    let unnamed = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_TMPFILE)
        .mode(0o600)
        .open(&dir);
    let file = match unnamed {
        Ok(file) => Ok(file),
        // A file system without O_TMPFILE: a new file, unlinked at once.
        Err(e) if matches!(e.raw_os_error(), Some(nix::libc::EOPNOTSUPP | nix::libc::EISDIR)) => {
            named_then_unlinked(&dir)
        }
        Err(e) => Err(e),
    };
    file.map_err(|e| {
        io::Error::new(e.kind(), format!("cannot spool a body in {}: {e}", dir.display()))
    })
}

/// A new file in `dir`, removed from it before it is used.
fn named_then_unlinked(dir: &std::path::Path) -> io::Result<File> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".forkserve-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `wsgi.input`: the received body, read from the start.
#[pyclass(module = "forkserve")]
pub(crate) struct Input {
    state: Mutex<Cursor>,
}

struct Cursor {
    body: Received,
    at: u64,
}

impl Input {
    pub(crate) fn new(body: Received) -> Input {
        Input { state: Mutex::new(Cursor { body, at: 0 }) }
    }
}

impl Cursor {
    fn remaining(&self) -> u64 {
        self.body.len() - self.at
    }

    /// Up to `n` bytes from the cursor on, without moving it.
    fn peek(&self, n: u64) -> io::Result<Vec<u8>> {
        let n = n.min(self.remaining()) as usize;
        match &self.body {
            Received::Memory(b) => Ok(b[self.at as usize..self.at as usize + n].to_vec()),
            Received::File { file, .. } => {
                let mut buf = vec![0; n];
                file.read_exact_at(&mut buf, self.at)?;
                Ok(buf)
            }
        }
    }

    /// Up to `limit` bytes, through the first newline.
    fn line(&mut self, limit: u64) -> io::Result<Vec<u8>> {
        let limit = limit.min(self.remaining());
        let mut line = Vec::new();
        while (line.len() as u64) < limit {
            let want = (limit - line.len() as u64).min(8192);
            let chunk = self.peek(want)?;
            if chunk.is_empty() {
                break;
            }
            let end = memchr::memchr(b'\n', &chunk).map_or(chunk.len(), |i| i + 1);
            line.extend_from_slice(&chunk[..end]);
            self.at += end as u64;
            if end < chunk.len() || chunk.ends_with(b"\n") {
                break;
            }
        }
        Ok(line)
    }
}

/// A size argument: `None` or a negative one means no limit.
fn limit(size: Option<i64>) -> u64 {
    size.and_then(|s| u64::try_from(s).ok()).unwrap_or(u64::MAX)
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<i64>) -> PyResult<Bound<'py, PyBytes>> {
        let mut cursor = lock(&self.state);
        let bytes = cursor.peek(limit(size))?;
        cursor.at += bytes.len() as u64;
        Ok(PyBytes::new(py, &bytes))
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<i64>) -> PyResult<Bound<'py, PyBytes>> {
        let line = lock(&self.state).line(limit(size))?;
        Ok(PyBytes::new(py, &line))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &self,
        py: Python<'py>,
        hint: Option<i64>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let hint = limit(hint);
        let mut cursor = lock(&self.state);
        let mut lines = Vec::new();
        let mut total = 0u64;
        while total < hint {
            let line = cursor.line(u64::MAX)?;
            if line.is_empty() {
                break;
            }
            total += line.len() as u64;
            lines.push(PyBytes::new(py, &line));
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = lock(&self.state).line(u64::MAX)?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }
}
