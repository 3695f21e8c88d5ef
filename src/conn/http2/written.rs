//! What the worker writes of an HTTP/2 connection, looked at frame head by frame head (as the
//! frame scanner looks at what it reads; payloads are skipped, never copied): the request
//! bodies' pacing ([`Uploads`](super::uploads::Uploads)) needs the flow-control windows h2
//! opens for the client (WINDOW_UPDATE) and the streams it resets (RST_STREAM). Pure: fed the
//! bytes written, it says what they held.

const RST_STREAM: u8 = 0x3;
const WINDOW_UPDATE: u8 = 0x8;

/// A frame of interest among those written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// The client may send this many more bytes on this stream (0: the connection).
    Window(u32, u32),
    /// This stream was reset.
    Reset(u32),
}

/// One connection's reader of what is written.
#[derive(Default)]
pub(crate) struct Written {
    /// Bytes to pass over before the next frame head.
    skip: usize,
    /// A frame head, read in part so far.
    head: [u8; 9],
    have: usize,
    /// A WINDOW_UPDATE's stream and its payload, read in part so far.
    update: Option<(u32, [u8; 4], usize)>,
}

impl Written {
    /// Looks at `bytes`, the next the worker wrote, and hands `seen` each frame of interest.
    pub(crate) fn feed(&mut self, bytes: &[u8], mut seen: impl FnMut(Sent)) {
        let mut at = 0;
        while at < bytes.len() {
            if let Some((stream, mut value, mut got)) = self.update.take() {
                let n = (4 - got).min(bytes.len() - at);
                value[got..got + n].copy_from_slice(&bytes[at..at + n]);
                got += n;
                at += n;
                if got == 4 {
                    seen(Sent::Window(stream, u32::from_be_bytes(value) & 0x7fff_ffff));
                } else {
                    self.update = Some((stream, value, got));
                }
                continue;
            }
            if self.skip > 0 {
                let n = self.skip.min(bytes.len() - at);
                self.skip -= n;
                at += n;
                continue;
            }
            let n = (9 - self.have).min(bytes.len() - at);
            self.head[self.have..self.have + n].copy_from_slice(&bytes[at..at + n]);
            self.have += n;
            at += n;
            if self.have < 9 {
                continue;
            }
            self.have = 0;
            let h = self.head;
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            match h[3] {
                WINDOW_UPDATE if len == 4 => self.update = Some((stream, [0; 4], 0)),
                RST_STREAM => {
                    seen(Sent::Reset(stream));
                    self.skip = len;
                }
                _ => self.skip = len,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, 0];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn windows_and_resets_are_seen_across_writes_of_any_size() {
        let mut bytes = frame(0x4, 0, &[0, 4, 0, 1, 0, 0]);
        bytes.extend(frame(WINDOW_UPDATE, 0, &983_041u32.to_be_bytes()));
        bytes.extend(frame(0x0, 1, &[7; 100]));
        bytes.extend(frame(WINDOW_UPDATE, 3, &(0x8000_0000u32 | 500).to_be_bytes()));
        bytes.extend(frame(RST_STREAM, 5, &8u32.to_be_bytes()));
        let want = [Sent::Window(0, 983_041), Sent::Window(3, 500), Sent::Reset(5)];
        for size in [1, 2, 7, 13, bytes.len()] {
            let mut w = Written::default();
            let mut seen = Vec::new();
            for piece in bytes.chunks(size) {
                w.feed(piece, |s| seen.push(s));
            }
            assert_eq!(seen, want, "written {size} bytes at a time");
        }
    }
}
