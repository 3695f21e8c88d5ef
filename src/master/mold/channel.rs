//! The line between the master and one mold: a `SOCK_SEQPACKET` socket pair made before the
//! mold is forked, so that each message arrives whole and a closed end reads as the end. The
//! master asks for forks ([`Request`]); the mold says it loaded its app or could not, and
//! answers each fork with the new worker's pid ([`Reply`]). The master closing its end is how
//! it tells a mold to exit.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, recv, send, socketpair};
use nix::unistd::Pid;

/// What the master asks of a mold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Request {
    /// Fork a worker with this id, on this scoreboard slot.
    Fork { worker: u64, slot: usize },
}

/// What a mold tells the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// The app is loaded: the mold forks workers from now on.
    Loaded,
    /// The app could not be loaded, and why; the mold exits.
    Failed { reason: String },
    /// The worker asked for is forked, with this pid; it is the master's child by the time it
    /// does anything.
    Forked { worker: u64, pid: Pid },
    /// The worker asked for could not be forked, and why.
    ForkFailed { worker: u64, reason: String },
}

const FORK: u8 = 1;
const LOADED: u8 = 2;
const FAILED: u8 = 3;
const FORKED: u8 = 4;
const FORK_FAILED: u8 = 5;
/// The longest message: a reason is cut to fit.
const MAX_MESSAGE: usize = 4096;

impl Request {
    fn encode(&self) -> Vec<u8> {
        match self {
            Request::Fork { worker, slot } => frame(FORK, *worker, &(*slot as u64).to_le_bytes()),
        }
    }

    fn decode(buf: &[u8]) -> Option<Request> {
        let (tag, worker, rest) = unframe(buf)?;
        match tag {
            FORK => Some(Request::Fork {
                worker,
                slot: u64::from_le_bytes(rest.try_into().ok()?) as usize,
            }),
            _ => None,
        }
    }
}

impl Reply {
    fn encode(&self) -> Vec<u8> {
        match self {
            Reply::Loaded => frame(LOADED, 0, &[]),
            Reply::Failed { reason } => frame(FAILED, 0, reason.as_bytes()),
            Reply::Forked { worker, pid } => frame(FORKED, *worker, &pid.as_raw().to_le_bytes()),
            Reply::ForkFailed { worker, reason } => frame(FORK_FAILED, *worker, reason.as_bytes()),
        }
    }

    fn decode(buf: &[u8]) -> Option<Reply> {
        let (tag, worker, rest) = unframe(buf)?;
        let text = || String::from_utf8_lossy(rest).into_owned();
        match tag {
            LOADED => Some(Reply::Loaded),
            FAILED => Some(Reply::Failed { reason: text() }),
            FORKED => {
                let pid = Pid::from_raw(i32::from_le_bytes(rest.try_into().ok()?));
                Some(Reply::Forked { worker, pid })
            }
            FORK_FAILED => Some(Reply::ForkFailed { worker, reason: text() }),
            _ => None,
        }
    }
}

/// A tag, a worker id, and the rest, cut to [`MAX_MESSAGE`] at a character's boundary.
fn frame(tag: u8, worker: u64, rest: &[u8]) -> Vec<u8> {
    let mut end = rest.len().min(MAX_MESSAGE - 9);
    while end > 0 && end < rest.len() && (rest[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    let mut buf = Vec::with_capacity(9 + end);
    buf.push(tag);
    buf.extend_from_slice(&worker.to_le_bytes());
    buf.extend_from_slice(&rest[..end]);
    buf
}

fn unframe(buf: &[u8]) -> Option<(u8, u64, &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (worker, rest) = rest.split_first_chunk::<8>()?;
    Some((tag, u64::from_le_bytes(*worker), rest))
}

/// One end of the line.
#[derive(Debug)]
pub(super) struct Channel(OwnedFd);

impl Channel {
    /// The master's end and the mold's. Both are closed at exec (a binary upgrade's new master
    /// has nothing to do with this master's molds).
    pub(super) fn pair() -> io::Result<(Channel, Channel)> {
        let (master, mold) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
        Ok((Channel(master), Channel(mold)))
    }

    /// The descriptor that becomes readable when a message (or the end) arrives.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    pub(super) fn request(&self, request: &Request) -> io::Result<()> {
        self.send(&request.encode())
    }

    pub(super) fn reply(&self, reply: &Reply) -> io::Result<()> {
        self.send(&reply.encode())
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        // No SIGPIPE if the other end is gone: the error says it.
        send(self.0.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL)?;
        Ok(())
    }

    /// The next message, waiting up to `wait` (`None`: without waiting). `Ok(None)` if none
    /// came; `UnexpectedEof` once the other end is closed.
    fn receive(&self, wait: Option<Duration>) -> io::Result<Option<Vec<u8>>> {
        if let Some(wait) = wait {
            let millis = wait.as_millis().min(i32::MAX as u128) as i32;
            let mut fds = [PollFd::new(self.fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)) {
                Ok(0) => return Ok(None),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut buf = vec![0u8; MAX_MESSAGE];
        match recv(self.0.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(nix::errno::Errno::EAGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// In the master: the mold's next reply, waiting up to `wait` (`None`: without waiting).
    pub(super) fn next_reply(&self, wait: Option<Duration>) -> io::Result<Option<Reply>> {
        let Some(buf) = self.receive(wait)? else { return Ok(None) };
        Reply::decode(&buf).map(Some).ok_or_else(|| io::Error::other("malformed reply"))
    }

    /// In the mold: the master's next request, waiting for it; `None` once the master closed
    /// its end (or is gone). `idle` runs each hour of waiting (and once first).
    pub(super) fn next_request(&self, mut idle: impl FnMut()) -> io::Result<Option<Request>> {
        loop {
            idle();
            match self.receive(Some(Duration::from_secs(3600))) {
                Ok(Some(buf)) => {
                    return Request::decode(&buf)
                        .map(Some)
                        .ok_or_else(|| io::Error::other("malformed request"));
                }
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_the_line_and_a_closed_end_reads_as_the_end() {
        let (master, mold) = Channel::pair().unwrap();
        master.request(&Request::Fork { worker: 7, slot: 3 }).unwrap();
        assert_eq!(mold.next_request(|| {}).unwrap(), Some(Request::Fork { worker: 7, slot: 3 }));
        let long = "é".repeat(MAX_MESSAGE);
        let replies = [
            Reply::Loaded,
            Reply::Failed { reason: "ModuleNotFoundError: No module named 'x'".into() },
            Reply::Forked { worker: 7, pid: Pid::from_raw(4242) },
            Reply::ForkFailed { worker: 8, reason: "EAGAIN".into() },
        ];
        for r in &replies {
            mold.reply(r).unwrap();
        }
        for r in &replies {
            assert_eq!(master.next_reply(None).unwrap().as_ref(), Some(r));
        }
        assert_eq!(master.next_reply(Some(Duration::from_millis(1))).unwrap(), None);
        mold.reply(&Reply::Failed { reason: long.clone() }).unwrap();
        let Some(Reply::Failed { reason }) = master.next_reply(None).unwrap() else { panic!() };
        assert!(reason.len() < MAX_MESSAGE && long.starts_with(reason.as_str()));
        drop(master);
        assert_eq!(mold.next_request(|| {}).unwrap(), None, "the master's end closed");
        let (master, mold) = Channel::pair().unwrap();
        drop(mold);
        let gone = master.next_reply(Some(Duration::from_millis(100))).unwrap_err();
        assert_eq!(gone.kind(), io::ErrorKind::UnexpectedEof);
    }
}
