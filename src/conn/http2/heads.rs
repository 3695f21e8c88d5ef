//! The frame-head reader: the HTTP/2 frames of one direction of a connection, head by head (9
//! bytes each), read across reads or writes of any size; payloads are skipped, never copied,
//! except a WINDOW_UPDATE's 4-byte increment when asked for ([`Heads::with_windows`]: what
//! the worker writes, for the request bodies' pacing). One state machine for both directions:
//! the frame scanner ([`super::frames`]) reads the client's frames and the server's with it.
//! Pure: fed bytes, it hands on each frame head as it completes.

pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const PRIORITY: u8 = 0x2;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PUSH_PROMISE: u8 = 0x5;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const WINDOW_UPDATE: u8 = 0x8;
pub(crate) const CONTINUATION: u8 = 0x9;
pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const ACK: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;

/// One frame's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    /// The payload's length.
    pub(crate) len: usize,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) stream: u32,
    /// A WINDOW_UPDATE's increment, if the reader reads them ([`Heads::with_windows`]) and
    /// the frame has the 4 bytes one must.
    pub(crate) increment: Option<u32>,
}

/// The frame heads of one direction of a connection, read across reads of any size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    /// Bytes to pass over before the next frame head.
    skip: usize,
    /// A frame head (or a WINDOW_UPDATE's increment), read in part so far.
    buf: [u8; 9],
    have: usize,
    /// Whether a WINDOW_UPDATE's increment is read before its head is handed on.
    windows: bool,
    /// The WINDOW_UPDATE whose increment is being read into `buf`.
    update: Option<Head>,
}

impl Heads {
    /// A reader of frames that start after `skip` bytes (the client's preface).
    pub(crate) fn new(skip: usize) -> Self {
        Heads { skip, buf: [0; 9], have: 0, windows: false, update: None }
    }

    /// A reader that also reads each WINDOW_UPDATE's increment: such a frame is handed on
    /// once its payload is in, not at its head.
    pub(crate) fn with_windows(skip: usize) -> Self {
        Heads { windows: true, ..Heads::new(skip) }
    }

    /// Hands `each` every frame head completed in `bytes`, with where in `bytes` its frame
    /// started (0 if in an earlier call); stops at its first error.
    pub(crate) fn walk<E>(
        &mut self,
        bytes: &[u8],
        mut each: impl FnMut(Head) -> Result<(), E>,
    ) -> Result<(), (usize, E)> {
        let mut at = 0;
        while at < bytes.len() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len() - at);
                self.skip -= n;
                at += n;
                continue;
            }
            let want = if self.update.is_some() { 4 } else { 9 };
            let n = (want - self.have).min(bytes.len() - at);
            self.buf[self.have..self.have + n].copy_from_slice(&bytes[at..at + n]);
            self.have += n;
            at += n;
            if self.have < want {
                continue;
            }
            self.have = 0;
            let b = self.buf;
            let head = match self.update.take() {
                Some(head) => Head {
                    increment: Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff),
                    ..head
                },
                None => {
                    let head = Head {
                        len: u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize,
                        kind: b[3],
                        flags: b[4],
                        stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
                        increment: None,
                    };
                    if self.windows && head.kind == WINDOW_UPDATE && head.len == 4 {
                        self.update = Some(head);
                        continue;
                    }
                    self.skip = head.len;
                    head
                }
            };
            // What of the frame was read: its head, and an increment read with it.
            let read = 9 + if head.increment.is_some() { 4 } else { 0 };
            each(head).map_err(|e| (at.saturating_sub(read), e))?;
        }
        Ok(())
    }

    /// Whether the bytes so far end where a frame ends.
    pub(crate) fn at_edge(&self) -> bool {
        self.skip == 0 && self.have == 0 && self.update.is_none()
    }
}

/// A frame's bytes, for the unit tests of the modules that read frames.
#[cfg(test)]
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(kind: u8, flags: u8, stream: u32, len: usize, increment: Option<u32>) -> Head {
        Head { len, kind, flags, stream, increment }
    }

    /// Every head `heads` hands on, `bytes` fed `size` at a time; whether they end at a
    /// frame's edge.
    fn seen(mut heads: Heads, bytes: &[u8], size: usize) -> (Vec<Head>, bool) {
        let mut seen = Vec::new();
        for piece in bytes.chunks(size) {
            heads
                .walk(piece, |h| {
                    seen.push(h);
                    Ok::<_, ()>(())
                })
                .unwrap();
        }
        (seen, heads.at_edge())
    }

    /// Where in `bytes`, fed whole, the frame of each head `heads` hands on starts: what an
    /// error at that head reports.
    fn starts(heads: Heads, bytes: &[u8]) -> Vec<usize> {
        let count = seen(heads, bytes, bytes.len()).0.len();
        let at = |i: usize| {
            let (mut heads, mut left) = (heads, i);
            let stop = |_| {
                if left == 0 {
                    return Err(());
                }
                left -= 1;
                Ok(())
            };
            heads.walk(bytes, stop).err().map_or(usize::MAX, |(at, ())| at)
        };
        (0..count).map(at).collect()
    }

    #[test]
    fn windows_and_resets_are_seen_across_writes_of_any_size() {
        let mut bytes = frame(SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0]);
        bytes.extend(frame(WINDOW_UPDATE, 0, 0, &983_041u32.to_be_bytes()));
        bytes.extend(frame(DATA, END_STREAM, 1, &[7; 100]));
        bytes.extend(frame(WINDOW_UPDATE, 0, 3, &(0x8000_0000u32 | 500).to_be_bytes()));
        bytes.extend(frame(RST_STREAM, 0, 5, &8u32.to_be_bytes()));
        bytes.extend(frame(WINDOW_UPDATE, 0, 7, &[1, 2, 3]));
        let windows = [
            head(SETTINGS, 0, 0, 6, None),
            head(WINDOW_UPDATE, 0, 0, 4, Some(983_041)),
            head(DATA, END_STREAM, 1, 100, None),
            head(WINDOW_UPDATE, 0, 3, 4, Some(500)),
            head(RST_STREAM, 0, 5, 4, None),
            head(WINDOW_UPDATE, 0, 7, 3, None),
        ];
        // Without: a WINDOW_UPDATE is handed on at its head, its increment skipped.
        let plain = windows.map(|h| Head { increment: None, ..h });
        for size in [1, 2, 7, 13, bytes.len()] {
            let with = seen(Heads::with_windows(0), &bytes, size);
            assert_eq!(with, (windows.to_vec(), true), "written {size} bytes at a time");
            let without = seen(Heads::new(0), &bytes, size);
            assert_eq!(without, (plain.to_vec(), true), "read {size} bytes at a time");
        }
        let frame_starts = [0, 15, 28, 137, 150, 163];
        assert_eq!(starts(Heads::with_windows(0), &bytes), frame_starts);
        assert_eq!(starts(Heads::new(0), &bytes), frame_starts);
    }

    #[test]
    fn the_edge_is_known_in_a_head_a_payload_and_an_increment() {
        let mut bytes = frame(DATA, 0, 1, &[0; 10]);
        bytes.extend(frame(WINDOW_UPDATE, 0, 1, &10u32.to_be_bytes()));
        let mut heads = Heads::with_windows(2);
        let mut edges = Vec::new();
        for b in [&[0x50u8, 0x52][..], &bytes] {
            for byte in b {
                heads.walk(std::slice::from_ref(byte), |_| Ok::<_, ()>(())).unwrap();
                edges.push(heads.at_edge());
            }
        }
        let at: Vec<usize> = edges.iter().enumerate().filter(|e| *e.1).map(|e| e.0).collect();
        assert_eq!(at, [1, 2 + 19 - 1, 2 + 19 + 13 - 1], "after the skip, each frame's end");
    }
}
