//! The response body of the binary's apps: bytes in memory, a file streamed in chunks so that a
//! large file is never read whole into memory, or any other body streamed as it is produced (an
//! app kind that generates its output, or relays another server's).
//!
//! File chunks are read into buffers kept in a small per-thread pool and handed to hyper as
//! `Bytes` that give their buffer back to the pool when hyper drops them (after writing them).
//! A fresh buffer per chunk cost more than the read itself: zero-filling it, and the page faults
//! of memory the allocator had just returned to the kernel (a 1 MiB file: 16 chunks of 64 KiB,
//! about 1 M instructions and 250 page faults per request, 40% of the worker's CPU time).

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};

use crate::error::BoxError;

/// How much of a file is read per chunk: the size of a pooled buffer.
const CHUNK: usize = 64 * 1024;

/// The most free buffers a thread keeps (2 MiB). hyper holds up to about 400 KiB of a body
/// per connection before it writes, so many more are in flight under load; the pool only has
/// to absorb the difference between buffers freed and buffers wanted at a time.
const POOLED: usize = 32;

thread_local! {
    /// Free buffers, each `CHUNK` bytes long and initialized (zeroed once, when first made).
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer from the pool with the first `len` bytes filled; back to the pool when dropped.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

impl Chunk {
    fn new() -> Chunk {
        let buf = POOL.try_with(|p| p.borrow_mut().pop()).ok().flatten();
        Chunk { buf: buf.unwrap_or_else(|| vec![0; CHUNK]), len: 0 }
    }
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        // At thread exit the pool may be gone: the buffer is then simply freed.
        let _ = POOL.try_with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < POOLED {
                pool.push(buf);
            }
        });
    }
}

/// A response body of the binary's apps.
#[derive(Debug)]
pub struct Body(Kind);

enum Kind {
    /// In memory; `None` once sent.
    Bytes(Option<Bytes>),
    /// A range of a file, read chunk by chunk as hyper asks for more.
    File { file: File, offset: u64, remaining: u64 },
    /// Frames as another body yields them. Boxed, so that `Body` stays one type whatever an
    /// app kind streams; the two kinds above, which every request of the config's routes uses,
    /// pay no allocation for it. Not `Send`: a worker sends it from its one thread.
    Stream(Pin<Box<dyn hyper::body::Body<Data = Bytes, Error = BoxError>>>),
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Bytes(bytes) => f.debug_tuple("Bytes").field(bytes).finish(),
            Kind::File { file, offset, remaining } => f
                .debug_struct("File")
                .field("file", file)
                .field("offset", offset)
                .field("remaining", remaining)
                .finish(),
            Kind::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

impl Body {
    /// No body.
    pub fn empty() -> Body {
        Body(Kind::Bytes(None))
    }

    /// `len` bytes of `file` from `offset`. The body fails if the file turns out shorter: its
    /// length was already promised in `Content-Length`.
    pub(crate) fn file(file: File, offset: u64, len: u64) -> Body {
        Body(Kind::File { file, offset, remaining: len })
    }

    /// A body streamed from `body`, frame by frame (trailers included), as it yields them.
    pub fn stream<B>(body: B) -> Body
    where
        B: hyper::body::Body<Data = Bytes> + 'static,
        B::Error: Into<BoxError>,
    {
        Body(Kind::Stream(Box::pin(body.map_err(Into::into))))
    }

    /// The whole body, if it is in memory.
    pub fn into_bytes(self) -> Option<Bytes> {
        match self.0 {
            Kind::Bytes(b) => Some(b.unwrap_or_default()),
            Kind::File { .. } | Kind::Stream(_) => None,
        }
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body(Kind::Bytes(Some(bytes)))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Kind::Bytes(bytes) => {
                Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b))))
            }
            Kind::File { remaining: 0, .. } => Poll::Ready(None),
            Kind::File { file, offset, remaining } => {
                // A read from the page cache, as nginx does without aio: blocking the worker's
                // thread for a disk read is the accepted cost of not copying through a thread pool.
                let want = usize::try_from(*remaining).unwrap_or(CHUNK).min(CHUNK);
                let mut chunk = Chunk::new();
                let result = match file.read_at(&mut chunk.buf[..want], *offset) {
                    Ok(0) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while being sent",
                    )),
                    Ok(n) => {
                        chunk.len = n;
                        *offset += n as u64;
                        *remaining -= n as u64;
                        Ok(Frame::data(Bytes::from_owner(chunk)))
                    }
                    Err(e) => Err(e),
                };
                Poll::Ready(Some(result.map_err(Into::into)))
            }
            Kind::Stream(body) => body.as_mut().poll_frame(cx),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Bytes(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Kind::File { remaining, .. } => *remaining == 0,
            Kind::Stream(body) => body.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::File { remaining, .. } => SizeHint::with_exact(*remaining),
            Kind::Stream(body) => body.size_hint(),
        }
    }
}
