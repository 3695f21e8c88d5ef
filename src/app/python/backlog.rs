//! What of a streamed response its client has not taken yet. Up to [`BUFFERED`] bytes wait in
//! memory ([`Budget`] counts them); beyond, while the client stays behind, the app's thread
//! writes what it yields to an unnamed file ([`Spool`]), up to [`SPOOLED`] bytes, and the event
//! loop sends it from there, as nginx spools a slow client's response to
//! `proxy_temp_path`; only past that does the thread wait for the client (without the GIL).
//! A client that keeps up never makes a file: the spool is made the first time it is needed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use pyo3::prelude::*;

use super::lock;

/// How much of a streamed response waits in memory for the client.
pub(crate) const BUFFERED: usize = 4 * 1024 * 1024;

/// How much more of one response may wait in its spool file (nginx's
/// `proxy_max_temp_file_size`).
pub(crate) const SPOOLED: u64 = 1024 * 1024 * 1024;

/// How much of a spooled range the event loop reads at a time.
const READ: u64 = 64 * 1024;

/// How many bytes of a streamed response the client has not yet taken, shared by the Python
/// thread that adds them and the event loop that sends them.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    queued: Mutex<usize>,
    taken: Condvar,
    /// The event loop no longer wants the response (the client left, or it timed out).
    closed: AtomicBool,
}

impl Budget {
    /// Counts `n` more bytes if fewer than [`BUFFERED`] are queued; false if not.
    pub(crate) fn try_add(&self, n: usize) -> bool {
        let mut queued = lock(&self.queued);
        if *queued < BUFFERED {
            *queued += n;
            return true;
        }
        false
    }

    /// Waits, without the GIL, until fewer than [`BUFFERED`] bytes are queued, then counts
    /// `n` more. False if the response is no longer wanted.
    pub(crate) fn add(&self, py: Python<'_>, n: usize) -> bool {
        py.detach(|| {
            let mut queued = lock(&self.queued);
            while *queued >= BUFFERED && !self.closed.load(Ordering::Acquire) {
                queued = self.taken.wait(queued).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            *queued += n;
        });
        !self.closed.load(Ordering::Acquire)
    }

    /// The event loop took `n` bytes.
    pub(crate) fn took(&self, n: usize) {
        let mut queued = lock(&self.queued);
        let was_full = *queued >= BUFFERED;
        *queued = queued.saturating_sub(n);
        if was_full && *queued < BUFFERED {
            self.taken.notify_one();
        }
    }

    /// The event loop no longer wants the response.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _queued = lock(&self.queued);
        self.taken.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// A response's spool file, made when first needed, and how much has been written to it.
#[derive(Debug, Default)]
pub(crate) struct Spool {
    file: Option<Arc<File>>,
    written: u64,
    /// The file could not be made: the thread waits for the client instead.
    failed: bool,
}

/// A range of a spool file, for the event loop to send.
#[derive(Debug)]
pub(crate) struct Spooled {
    file: Arc<File>,
    offset: u64,
    len: u64,
}

impl Spool {
    /// Writes `data` at the spool's end (without the GIL) and returns where it is; `None` if
    /// the spool is full or cannot be written.
    pub(crate) fn write(&mut self, py: Python<'_>, data: &[u8]) -> Option<Spooled> {
        if self.failed || self.written + data.len() as u64 > SPOOLED {
            return None;
        }
        if self.file.is_none() {
            match super::input::temporary() {
                Ok(file) => self.file = Some(Arc::new(file)),
                Err(e) => {
                    tracing::warn!("a slow client's response cannot be spooled: {e}");
                    self.failed = true;
                    return None;
                }
            }
        }
        let file = Arc::clone(self.file.as_ref()?);
        let offset = self.written;
        if let Err(e) = py.detach(|| file.write_all_at(data, offset)) {
            tracing::warn!("a slow client's response cannot be spooled: {e}");
            self.failed = true;
            return None;
        }
        self.written += data.len() as u64;
        Some(Spooled { file, offset, len: data.len() as u64 })
    }
}

impl Spooled {
    /// The next piece of the range, by the event loop; `None` once all is read. A read from
    /// the page cache, as static files are read.
    pub(crate) fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        if self.len == 0 {
            return None;
        }
        let mut buf = vec![0; self.len.min(READ) as usize];
        Some(self.file.read_exact_at(&mut buf, self.offset).map(|()| {
            self.offset += buf.len() as u64;
            self.len -= buf.len() as u64;
            Bytes::from(buf)
        }))
    }
}
