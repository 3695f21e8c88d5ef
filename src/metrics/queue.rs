//! A listening socket's accept queue, as the kernel tells it: how many connections wait to be
//! accepted, and how many it holds at most (the backlog, capped by `net.core.somaxconn`).
//! A TCP socket's from `TCP_INFO` ([`tcp`]); a unix socket's from the `sock_diag` netlink
//! interface, which `ss -xl` reads too ([`unix`]): one small request per scrape and socket.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::libc;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

/// A socket's queue: `(depth, limit)`.
pub(super) type Depth = (u32, u32);

/// The state of a listening socket in `tcp_info` and `sock_diag` (Linux's `TCP_LISTEN`,
/// which the libc crate does not name).
const TCP_LISTEN: u8 = 10;

/// A listening TCP socket's queue, from `TCP_INFO`: for a socket in the listen state, Linux
/// reports the connections waiting to be accepted as `tcpi_unacked` and the queue's length as
/// `tcpi_sacked`. `None` if it cannot be read (an orphaned worker's socket replaced by
/// `/dev/null`).
pub(super) fn tcp(fd: BorrowedFd<'_>) -> Option<Depth> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, a zeroed `tcp_info` of that
    // size that outlives the call; any bytes it leaves are zero, a valid `tcp_info`. `fd` is
    // borrowed, so open for the call.
    let read = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if read != 0 {
        return None;
    }
    // SAFETY: zero-initialised, then (partly) written by the kernel: every byte is set.
    let info = unsafe { info.assume_init() };
    (info.tcpi_state == TCP_LISTEN).then_some((info.tcpi_unacked, info.tcpi_sacked))
}

/// `sock_diag`'s message type, and what a unix socket's request asks for.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
/// The attribute that carries the queue: `unix_diag_rqlen { rqueue, wqueue }`, which for a
/// listening socket are the connections waiting and the backlog.
const UNIX_DIAG_RQLEN: u16 = 4;
/// `nlmsghdr`, `unix_diag_req` and `unix_diag_msg`, in bytes.
const HEADER: usize = 16;
const REQUEST: usize = 24;
const REPLY: usize = 16;

/// A listening unix socket's queue, asked of `sock_diag` by the socket's inode. `None` if it
/// cannot be read.
pub(super) fn unix(fd: BorrowedFd<'_>) -> Option<Depth> {
    let inode = nix::sys::stat::fstat(fd).ok()?.st_ino;
    let inode = u32::try_from(inode).ok()?;
    let diag = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        // Non-blocking, so that nothing can hold the worker's thread here: the kernel has
        // queued its answer by the time `sendto` returns.
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkSockDiag,
    )
    .ok()?;
    sendto(diag.as_raw_fd(), &request(inode), &NetlinkAddr::new(0, 0), MsgFlags::empty()).ok()?;
    let mut reply = [0u8; 512];
    let n = recv(diag.as_raw_fd(), &mut reply, MsgFlags::empty()).ok()?;
    parse_reply(&reply[..n.min(reply.len())], inode)
}

/// The request for one listening unix socket's queue: a `nlmsghdr` and a `unix_diag_req`
/// (without `NLM_F_DUMP`: the one socket of that inode), in the machine's byte order.
fn request(inode: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER + REQUEST);
    m.extend(((HEADER + REQUEST) as u32).to_ne_bytes());
    m.extend(SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend(NLM_F_REQUEST.to_ne_bytes());
    m.extend(1u32.to_ne_bytes()); // sequence
    m.extend(0u32.to_ne_bytes()); // port: the kernel's
    m.extend([libc::AF_UNIX as u8, 0, 0, 0]); // family, protocol, padding
    m.extend((1u32 << TCP_LISTEN).to_ne_bytes()); // states
    m.extend(inode.to_ne_bytes());
    m.extend(UDIAG_SHOW_RQLEN.to_ne_bytes());
    m.extend([0xff; 8]); // cookie: none (INET_DIAG_NOCOOKIE)
    m
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The queue in the kernel's answer about the socket `inode`; `None` for an error, another
/// socket, one not listening, or an answer without the queue.
fn parse_reply(b: &[u8], inode: u32) -> Option<Depth> {
    let len = (u32_at(b, 0)? as usize).min(b.len());
    if u16_at(b, 4)? != SOCK_DIAG_BY_FAMILY || len < HEADER + REPLY {
        // NLMSG_ERROR (no such socket), or not an answer at all.
        return None;
    }
    let state = *b.get(HEADER + 2)?;
    if state != TCP_LISTEN || u32_at(b, HEADER + 4)? != inode {
        return None;
    }
    let mut at = HEADER + REPLY;
    while at + 4 <= len {
        let attr_len = u16_at(b, at)? as usize;
        if attr_len < 4 {
            return None;
        }
        if u16_at(b, at + 2)? == UNIX_DIAG_RQLEN && attr_len >= 12 {
            return Some((u32_at(b, at + 4)?, u32_at(b, at + 8)?));
        }
        at += attr_len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_tcp_sockets_queue_counts_the_connections_not_yet_accepted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (depth, limit) = tcp(listener.as_fd()).unwrap();
        assert_eq!(depth, 0);
        assert!(limit > 0, "the backlog");
        let addr = listener.local_addr().unwrap();
        let clients: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(addr)).collect();
        assert!(clients.iter().all(Result::is_ok));
        assert_eq!(tcp(listener.as_fd()), Some((3, limit)), "three connections wait");
        drop(listener.accept().unwrap());
        assert_eq!(tcp(listener.as_fd()).unwrap().0, 2);
        let connected = std::net::TcpStream::connect(addr).unwrap();
        assert_eq!(tcp(connected.as_fd()), None, "not a listening socket");
    }

    #[test]
    fn a_unix_sockets_queue_is_read_from_sock_diag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let (depth, limit) = unix(listener.as_fd()).expect("sock_diag answers");
        assert_eq!(depth, 0);
        assert!(limit > 0, "the backlog");
        let clients: Vec<_> =
            (0..2).map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap()).collect();
        assert_eq!(unix(listener.as_fd()), Some((2, limit)));
        drop(listener.accept().unwrap());
        assert_eq!(unix(listener.as_fd()), Some((1, limit)));
        assert_eq!(unix(clients[0].as_fd()), None, "not a listening socket");
    }

    #[test]
    fn a_reply_is_read_with_bounds_checked() {
        assert_eq!(parse_reply(&[], 7), None);
        assert_eq!(parse_reply(&[0xff; 8], 7), None);
        let mut reply = Vec::new();
        reply.extend(((HEADER + REPLY + 12) as u32).to_ne_bytes());
        reply.extend(SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        reply.extend([0; 10]);
        reply.extend([libc::AF_UNIX as u8, 1, TCP_LISTEN, 0]);
        reply.extend(7u32.to_ne_bytes());
        reply.extend([0; 8]);
        reply.extend(12u16.to_ne_bytes());
        reply.extend(UNIX_DIAG_RQLEN.to_ne_bytes());
        reply.extend(5u32.to_ne_bytes());
        reply.extend(128u32.to_ne_bytes());
        assert_eq!(parse_reply(&reply, 7), Some((5, 128)));
        assert_eq!(parse_reply(&reply, 8), None, "another socket");
        assert_eq!(parse_reply(&reply[..reply.len() - 4], 7), None, "cut short");
        let mut zero_attr = reply.clone();
        zero_attr[HEADER + REPLY] = 0;
        assert_eq!(parse_reply(&zero_attr, 7), None, "an attribute of length 0 ends the walk");
    }
}
