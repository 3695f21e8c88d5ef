//! Messages from workers to the master, over one datagram socket pair created before the first
//! fork: every worker holds the sending end, the master reads the other. Datagrams keep each
//! message whole even when several workers send at once.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;

/// What a worker tells the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// The worker with this id has built its app and is accepting connections.
    Ready {
        /// The worker's id.
        worker: u64,
    },
    /// The worker could not build its app, and exits with
    /// [`crate::worker::EXIT_BOOT_FAILED`].
    BootFailed {
        /// The worker's id.
        worker: u64,
        /// Why, as the app's factory said it.
        reason: String,
    },
    /// The worker has served its `max_requests` and asks to be replaced; it serves on until
    /// the master tells it to stop.
    Recycle {
        /// The worker's id.
        worker: u64,
        /// How many requests it had served.
        requests: u64,
    },
    /// The worker's resident memory went over `max_worker_memory`: it asks to be replaced, and
    /// serves on until it is told to stop, unless it goes over twice the limit meanwhile (see
    /// `scoreboard::MemoryWatch`).
    OverMemory {
        /// The worker's id.
        worker: u64,
        /// Its resident memory when it found itself over, in KiB.
        rss_kib: u64,
    },
    /// The app asks for the worker to be replaced (its Python threads are all stuck, say); it
    /// serves on until the master tells it to stop.
    Retire {
        /// The worker's id.
        worker: u64,
        /// Why, as the app says it.
        reason: String,
    },
}

const READY: u8 = 1;
const BOOT_FAILED: u8 = 2;
const RECYCLE: u8 = 3;
const OVER_MEMORY: u8 = 4;
const RETIRE: u8 = 5;
/// The longest reason sent; a datagram this size always fits the socket buffer.
const MAX_REASON: usize = 2048;

impl Message {
    fn encode(&self) -> Vec<u8> {
        let number;
        let (tag, worker, rest): (u8, u64, &[u8]) = match self {
            Message::Ready { worker } => (READY, *worker, &[]),
            Message::BootFailed { worker, reason } => (BOOT_FAILED, *worker, capped(reason)),
            Message::Retire { worker, reason } => (RETIRE, *worker, capped(reason)),
            Message::Recycle { worker, requests: n } => {
                number = n.to_le_bytes();
                (RECYCLE, *worker, &number)
            }
            Message::OverMemory { worker, rss_kib } => {
                number = rss_kib.to_le_bytes();
                (OVER_MEMORY, *worker, &number)
            }
        };
        let mut buf = Vec::with_capacity(9 + rest.len());
        buf.push(tag);
        buf.extend_from_slice(&worker.to_le_bytes());
        buf.extend_from_slice(rest);
        buf
    }

    fn decode(buf: &[u8]) -> Option<Message> {
        let (&tag, rest) = buf.split_first()?;
        let (worker, rest) = rest.split_first_chunk::<8>()?;
        let worker = u64::from_le_bytes(*worker);
        match tag {
            READY if rest.is_empty() => Some(Message::Ready { worker }),
            BOOT_FAILED => Some(Message::BootFailed {
                worker,
                reason: String::from_utf8_lossy(rest).into_owned(),
            }),
            RETIRE => {
                Some(Message::Retire { worker, reason: String::from_utf8_lossy(rest).into_owned() })
            }
            RECYCLE => Some(Message::Recycle {
                worker,
                requests: u64::from_le_bytes(rest.try_into().ok()?),
            }),
            OVER_MEMORY => Some(Message::OverMemory {
                worker,
                rss_kib: u64::from_le_bytes(rest.try_into().ok()?),
            }),
            _ => None,
        }
    }
}

/// A reason's first [`MAX_REASON`] bytes, cut at a character's boundary.
fn capped(reason: &str) -> &[u8] {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason.as_bytes()[..end]
}

/// The master's end.
pub(crate) struct Inbox {
    socket: UnixDatagram,
    /// Kept to hand to each new worker.
    outbox: UnixDatagram,
}

/// A worker's end.
pub(crate) struct Outbox(UnixDatagram);

impl Inbox {
    pub(crate) fn new() -> io::Result<Inbox> {
        let (socket, outbox) = UnixDatagram::pair()?;
        socket.set_nonblocking(true)?;
        Ok(Inbox { socket, outbox })
    }

    /// The descriptor that becomes readable when a message arrives.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Every message waiting, without blocking.
    pub(crate) fn receive(&self) -> Vec<Message> {
        let mut out = Vec::new();
        let mut buf = [0u8; 16 + MAX_REASON];
        while let Ok(n) = self.socket.recv(&mut buf) {
            match Message::decode(&buf[..n]) {
                Some(m) => out.push(m),
                None => tracing::warn!(len = n, "ignoring malformed message from a worker"),
            }
        }
        out
    }

    /// In a freshly forked worker: keeps only the sending end.
    pub(crate) fn into_outbox(self) -> Outbox {
        Outbox(self.outbox)
    }
}

impl Outbox {
    /// Sends a message, waiting if the master has not yet read the ones before (the queue of
    /// a datagram socket is short). For a booting worker, which has nothing else to do. If the
    /// master is gone, there is no one to tell. Returns whether the message was sent.
    pub(crate) fn send(&self, message: Message) -> bool {
        match self.0.send(&message.encode()) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("cannot tell the master {message:?}: {e}");
                false
            }
        }
    }

    /// Sends a message without ever blocking the worker's thread: `WouldBlock` when the
    /// master's queue is full, for the caller to try again later.
    pub(crate) fn try_send(&self, message: &Message) -> io::Result<()> {
        use nix::sys::socket::{MsgFlags, send};
        send(self.0.as_raw_fd(), &message.encode(), MsgFlags::MSG_DONTWAIT)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_the_socket() {
        let inbox = Inbox::new().unwrap();
        let outbox = Outbox(inbox.outbox.try_clone().unwrap());
        let long = "é".repeat(MAX_REASON);
        let sent = [
            Message::Ready { worker: 1 },
            Message::BootFailed { worker: 2, reason: "no database".into() },
            Message::Recycle { worker: 3, requests: 1_000_001 },
            Message::OverMemory { worker: 5, rss_kib: 70_000 },
            Message::BootFailed { worker: 4, reason: long.clone() },
        ];
        for m in &sent {
            outbox.send(m.clone());
        }
        let got = inbox.receive();
        assert_eq!(got[..4], sent[..4]);
        let Message::BootFailed { reason, .. } = &got[4] else { panic!("{got:?}") };
        assert!(reason.len() <= MAX_REASON && long.starts_with(reason.as_str()));
        assert_eq!(Message::decode(&[READY, 1, 2]), None, "short messages are refused");
    }
}
