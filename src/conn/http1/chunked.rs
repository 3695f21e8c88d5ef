//! The chunked-framing scanner (RFC 9112 §7.1): pure code, bytes in and a decision out, no IO.
//! It follows a chunked body strictly (CRLF line ends, hex sizes, well-formed extensions and
//! trailer fields, no framing or routing field in the trailers) to find where it ends, and
//! refuses a body that breaks the rules (400) or grows past `max_body_size` (413).

use http::StatusCode;

use super::head::is_tchar;

/// The most bytes of chunk extensions, and of trailers, in one body (hyper allows 16 KiB of
/// each; the gate less, so that it refuses first).
const EXTENSIONS_LIMIT: usize = 8 * 1024;
const TRAILERS_LIMIT: usize = 8 * 1024;
/// The longest trailer field name the gate refuses (`transfer-encoding`).
const FIELD_NAME_MAX: usize = 17;
/// Fields refused in a trailer section: framing and routing, which a front end that merges
/// trailers into the head would act on (RFC 9110 §6.5.1).
const FORBIDDEN_TRAILERS: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"host"];

/// The limits a chunked body is held to.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChunkLimits {
    /// `max_body_size`: `u64::MAX` for none.
    pub(super) max_body: u64,
    /// The longest trailer field line.
    pub(super) field_size: usize,
    /// The most trailer fields (100 at most).
    pub(super) fields: usize,
}

/// What the scanner decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChunkStep {
    /// The body goes on past what was read.
    More,
    /// The body ends here.
    End,
    /// The body is refused with this status.
    Refuse(StatusCode),
}

/// One chunked body's scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChunkScan {
    chunk: Chunk,
    /// The body's size so far, as its chunk-size lines declare it.
    declared: u64,
    /// Chunk data bytes so far.
    data: u64,
    /// Bytes of chunk extensions and of trailers so far.
    extensions: usize,
    trailers: usize,
    /// The current trailer field's name, lowercased, as far as [`FIELD_NAME_MAX`] bytes: the
    /// bytes themselves may have gone to hyper before the name ends.
    field: [u8; FIELD_NAME_MAX],
}

/// Where a chunked body's parser is (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size: so many hex digits, this value.
    Size {
        digits: u8,
        value: u64,
    },
    /// After the size: extensions, up to CR.
    Ext {
        at: Ext,
        value: u64,
    },
    /// Expecting the LF that ends a chunk-size line.
    SizeLf {
        value: u64,
    },
    /// In chunk data.
    Data(u64),
    /// Expecting CR, then LF, after chunk data.
    DataCr,
    DataLf,
    /// In a trailer section: this line's length, how many lines so far, and whether this
    /// line's colon has been seen.
    Trailer {
        len: usize,
        lines: usize,
        colon: bool,
    },
    /// Expecting the LF that ends a trailer line of this length.
    TrailerLf {
        len: usize,
        lines: usize,
    },
}

/// Where a chunk extension's parser is (RFC 9112 §7.1.1):
/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`, then CR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// Whitespace after the size or a value: a `;` must follow.
    Gap,
    /// After a `;`: whitespace, then a name.
    NameStart,
    Name,
    /// Whitespace after a name: `=` or `;` must follow.
    NameGap,
    /// After `=`: whitespace, then a token or a quoted string.
    ValueStart,
    Token,
    Quoted,
    /// After a backslash in a quoted string.
    Escaped,
    /// After a quoted string's closing quote.
    Closed,
}

impl Ext {
    /// The state after byte `b`, in the extensions of a chunk of `value` bytes: `None` if `b`
    /// cannot come here.
    fn next(self, b: u8, value: u64) -> Option<Chunk> {
        use Ext::*;
        let ws = b == b' ' || b == b'\t';
        let next = match self {
            Gap | NameStart | NameGap | ValueStart if ws => self,
            Name if ws => NameGap,
            Token | Closed if ws => Gap,
            Gap | Name | NameGap | Token | Closed if b == b';' => NameStart,
            Name | NameGap if b == b'=' => ValueStart,
            Name | Token | Closed if b == b'\r' => return Some(Chunk::SizeLf { value }),
            NameStart | Name if is_tchar(b) => Name,
            ValueStart | Token if is_tchar(b) => Token,
            ValueStart if b == b'"' => Quoted,
            Quoted if b == b'"' => Closed,
            Quoted if b == b'\\' => Escaped,
            // qdtext, and what a backslash may quote.
            Quoted | Escaped if b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80 => Quoted,
            _ => return None,
        };
        Some(Chunk::Ext { at: next, value })
    }
}

impl Default for ChunkScan {
    fn default() -> Self {
        ChunkScan {
            chunk: Chunk::Size { digits: 0, value: 0 },
            declared: 0,
            data: 0,
            extensions: 0,
            trailers: 0,
            field: [0; FIELD_NAME_MAX],
        }
    }
}

impl ChunkScan {
    /// Chunk data bytes scanned so far: the body's size, less its framing.
    pub(super) fn data(&self) -> u64 {
        self.data
    }

    /// Scans `bytes`, the body's next. Returns how many of them passed (all the framing and
    /// data up to the body's end, or up to the byte refused) and what it found.
    pub(super) fn scan(&mut self, bytes: &[u8], limits: &ChunkLimits) -> (usize, ChunkStep) {
        let mut at = 0;
        while at < bytes.len() {
            if let Chunk::Data(left) = self.chunk {
                let n = left.min((bytes.len() - at) as u64);
                at += n as usize;
                self.data += n;
                self.chunk = if n == left { Chunk::DataCr } else { Chunk::Data(left - n) };
                continue;
            }
            let b = bytes[at];
            let next = match self.chunk {
                Chunk::Size { digits, value } => match (b as char).to_digit(16) {
                    // 16 digits at most: the value fits in a u64.
                    Some(d) if digits < 16 => {
                        Some(Chunk::Size { digits: digits + 1, value: value << 4 | u64::from(d) })
                    }
                    Some(_) => None,
                    // The size is complete: it counts against max_body_size.
                    None if digits == 0 => None,
                    None => {
                        self.declared = self.declared.saturating_add(value);
                        match b {
                            b'\r' => Some(Chunk::SizeLf { value }),
                            b';' => Some(Chunk::Ext { at: Ext::NameStart, value }),
                            b' ' | b'\t' => Some(Chunk::Ext { at: Ext::Gap, value }),
                            _ => None,
                        }
                    }
                },
                Chunk::Ext { at, value } => {
                    self.extensions += 1;
                    if self.extensions > EXTENSIONS_LIMIT { None } else { at.next(b, value) }
                }
                Chunk::SizeLf { value } => match b {
                    b'\n' if value == 0 => Some(Chunk::Trailer { len: 0, lines: 0, colon: false }),
                    b'\n' => Some(Chunk::Data(value)),
                    _ => None,
                },
                Chunk::DataCr => (b == b'\r').then_some(Chunk::DataLf),
                Chunk::DataLf => (b == b'\n').then_some(Chunk::Size { digits: 0, value: 0 }),
                Chunk::Trailer { len, lines, colon } => {
                    self.trailers += 1;
                    match b {
                        _ if self.trailers > TRAILERS_LIMIT || len >= limits.field_size => None,
                        // A field line: a token, a colon, a value (RFC 9112 §7.1.2, §5).
                        b'\r' if len == 0 || colon => Some(Chunk::TrailerLf { len, lines }),
                        b':' if !colon && len > 0 => {
                            let name = &self.field[..len.min(FIELD_NAME_MAX)];
                            (len > FIELD_NAME_MAX || !FORBIDDEN_TRAILERS.contains(&name))
                                .then_some(Chunk::Trailer { len: len + 1, lines, colon: true })
                        }
                        _ if !colon && is_tchar(b) => {
                            if let Some(c) = self.field.get_mut(len) {
                                *c = b.to_ascii_lowercase();
                            }
                            Some(Chunk::Trailer { len: len + 1, lines, colon })
                        }
                        b'\t' | 0x20..=0x7e | 0x80..=0xff if colon => {
                            Some(Chunk::Trailer { len: len + 1, lines, colon })
                        }
                        _ => None,
                    }
                }
                // The end of the body.
                Chunk::TrailerLf { len: 0, .. } if b == b'\n' => return (at + 1, ChunkStep::End),
                Chunk::TrailerLf { lines, .. } if b == b'\n' && lines < limits.fields.min(100) => {
                    Some(Chunk::Trailer { len: 0, lines: lines + 1, colon: false })
                }
                Chunk::TrailerLf { .. } | Chunk::Data(_) => None,
            };
            match next {
                Some(c) => self.chunk = c,
                None => return (at, ChunkStep::Refuse(StatusCode::BAD_REQUEST)),
            }
            if self.declared > limits.max_body {
                return (at, ChunkStep::Refuse(StatusCode::PAYLOAD_TOO_LARGE));
            }
            at += 1;
        }
        (at, ChunkStep::More)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ChunkLimits = ChunkLimits { max_body: 64, field_size: 40, fields: 2 };

    /// Feeds `body` to a fresh scanner in pieces of `piece` bytes: the bytes that passed, what
    /// it decided, and the data bytes it counted.
    fn scan_in_pieces(body: &[u8], piece: usize) -> (usize, ChunkStep, u64) {
        let mut scan = ChunkScan::default();
        let mut passed = 0;
        for part in body.chunks(piece) {
            let (n, step) = scan.scan(part, &LIMITS);
            passed += n;
            if step != ChunkStep::More {
                return (passed, step, scan.data());
            }
            assert_eq!(n, part.len(), "all of a piece passes while the body goes on");
        }
        (passed, ChunkStep::More, scan.data())
    }

    #[test]
    fn the_chunk_scanner_ends_refuses_or_waits_in_pieces_of_any_size() {
        use ChunkStep::*;
        let bad = Refuse(StatusCode::BAD_REQUEST);
        let big = Refuse(StatusCode::PAYLOAD_TOO_LARGE);
        // (body, bytes that pass, decision, data bytes)
        let table: &[(&[u8], usize, ChunkStep, u64)] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", 15, End, 5),
            (b"5\r\nhello\r\n0\r\n\r\nGET", 15, End, 5),
            (b"5;a=b;c=\"d\\\"e\"\r\nhello\r\n0\r\n\r\n", 28, End, 5),
            (b"a;x=y\r\n0123456789\r\n0\r\nX-T: v\r\n\r\n", 32, End, 10),
            // Whitespace after the size must lead to an extension.
            (b"a \r\n0123456789\r\n", 2, bad, 0),
            (b"5\r\nhel", 6, More, 3),
            (b"5\nhello\r\n0\r\n\r\n", 1, bad, 0),
            (b"x\r\n", 0, bad, 0),
            (b"5\r\nhelloX", 8, bad, 5),
            (b"5;\r\nhello\r\n0\r\n\r\n", 2, bad, 0),
            (b"00000000000000001\r\n", 16, bad, 0),
            (b"41\r\n", 2, big, 0),
            (b"20\r\n01234567890123456789012345678901\r\n21\r\n", 40, big, 32),
            (b"0\r\nContent-Length: 5\r\n\r\n", 17, bad, 0),
            (b"0\r\nhost: x\r\n\r\n", 7, bad, 0),
            (b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 20, bad, 0),
            (b"0\r\nA 1\r\n", 4, bad, 0),
        ];
        for &(body, passed, step, data) in table {
            for piece in [1, 3, body.len()] {
                assert_eq!(
                    scan_in_pieces(body, piece),
                    (passed, step, data),
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
}
