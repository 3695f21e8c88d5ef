//! Messages from workers to the master, over one datagram socket pair created before the first
//! fork: every worker holds the sending end, the master reads the other. Datagrams keep each
//! message whole even when several workers send at once.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;

/// What a worker tells the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message {
    /// The worker with this id has built its app and is accepting connections.
    Ready {
        /// The worker's id.
        worker: u64,
    },
}

const READY: u8 = 1;

impl Message {
    fn encode(self) -> [u8; 9] {
        let Message::Ready { worker } = self;
        let mut buf = [0u8; 9];
        buf[0] = READY;
        buf[1..].copy_from_slice(&worker.to_le_bytes());
        buf
    }

    fn decode(buf: &[u8]) -> Option<Message> {
        match buf {
            [READY, id @ ..] => {
                Some(Message::Ready { worker: u64::from_le_bytes(id.try_into().ok()?) })
            }
            _ => None,
        }
    }
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
        let mut buf = [0u8; 64];
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
    /// Sends a message. The master reads promptly; if it is gone, there is no one to tell.
    pub(crate) fn send(&self, message: Message) {
        if let Err(e) = self.0.send(&message.encode()) {
            tracing::warn!("cannot tell the master {message:?}: {e}");
        }
    }
}
