//! The response body of the TOML app: bytes in memory, or a file streamed in chunks so that a
//! large file is never read whole into memory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};

/// How much of a file is read per chunk.
const CHUNK: u64 = 64 * 1024;

/// A response body of the TOML app.
#[derive(Debug)]
pub struct Body(Kind);

#[derive(Debug)]
enum Kind {
    /// In memory; `None` once sent.
    Bytes(Option<Bytes>),
    /// A range of a file, read chunk by chunk as hyper asks for more.
    File { file: File, offset: u64, remaining: u64 },
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

    /// The whole body, if it is in memory.
    pub fn into_bytes(self) -> Option<Bytes> {
        match self.0 {
            Kind::Bytes(b) => Some(b.unwrap_or_default()),
            Kind::File { .. } => None,
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
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        match &mut self.get_mut().0 {
            Kind::Bytes(bytes) => {
                Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b))))
            }
            Kind::File { remaining: 0, .. } => Poll::Ready(None),
            Kind::File { file, offset, remaining } => {
                // A read from the page cache, as nginx does without aio: blocking the worker's
                // thread for a disk read is the accepted cost of not copying through a thread pool.
                let want = (*remaining).min(CHUNK) as usize;
                let mut buf = BytesMut::zeroed(want);
                let result = match file.read_at(&mut buf, *offset) {
                    Ok(0) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shrank while being sent",
                    )),
                    Ok(n) => {
                        buf.truncate(n);
                        *offset += n as u64;
                        *remaining -= n as u64;
                        Ok(Frame::data(buf.freeze()))
                    }
                    Err(e) => Err(e),
                };
                Poll::Ready(Some(result))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Bytes(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Kind::File { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::File { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}
