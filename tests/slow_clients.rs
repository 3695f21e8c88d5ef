//! Clients that hold a connection without finishing their part: one that never reads its
//! response (`send_timeout`), one that trickles a body (`body_min_rate`), one that ends its
//! side in the middle of a body. Each must lose its connection within a bound, and the
//! worker's `worker_connections` slot must come free for the next client.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::http::{Conn, tiny_window};
use common::{Server, example, forkserve, tempdir, write};

/// Reads until the server closes the connection (EOF or a reset), or `wait` passes.
fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

/// One worker with four connection slots and `send_timeout` (seconds), serving `/` and a
/// 16 MiB `/static/big.bin`: far more than the kernel's socket buffers take, so the server's
/// writes to a client that does not read must block.
fn big_file_server(send_timeout: &str) -> (tempfile::TempDir, Server) {
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("public")).unwrap();
    std::fs::write(dir.path().join("public/big.bin"), vec![b'x'; 16 << 20]).unwrap();
    let config = write(
        dir.path(),
        "app.toml",
        "[[route]]\npath = \"/\"\nrespond = \"hello\\n\"\n\n\
         [[route]]\npath = \"/static/\"\nstatic = \"public\"\n",
    );
    let args = ["-w", "1", "-b", "127.0.0.1:0", "--worker-connections", "4"];
    let server = Server::start(
        &forkserve(),
        &[&args[..], &["--send-timeout", send_timeout, &config]].concat(),
    );
    (dir, server)
}

#[test]
fn clients_that_never_read_are_closed_at_send_timeout_and_their_slots_freed() {
    let (_dir, server) = big_file_server("2");
    let addr = server.addr();
    let worker = *server.wait_workers(1).first().unwrap();
    let idle = sockets(worker);
    // Every slot taken by a client that asks for the file and never reads it.
    let started = Instant::now();
    let slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = tiny_window(addr);
            s.write_all(b"GET /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            s
        })
        .collect();
    // No client waits for a slot (one would have the worker close a connection sooner, see
    // below), and these do not read (reading makes progress): send_timeout closes them all,
    // as the worker's sockets show.
    common::wait_until(|| (sockets(worker) == idle + 4).then_some(()))
        .expect("the worker never had the four connections");
    common::wait_until(|| (sockets(worker) == idle).then_some(()))
        .expect("the clients that never read are still connected");
    let took = started.elapsed();
    assert!(took > Duration::from_millis(1900), "closed after {took:?} (send_timeout 2 s)");
    assert!(took < Duration::from_secs(7), "closed after {took:?} (send_timeout 2 s)");
    for mut s in slow {
        // What the kernel had buffered for it, then the end.
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5));
        assert!(closed, "a client that never read is still connected");
    }
    // Their slots are free.
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(Conn::over(stream).get("/").unwrap().status, 200);
}

/// How many sockets a process has open.
fn sockets(pid: i32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    fds.flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// A worker full of clients that do not read takes a new client within seconds, not at
/// `send_timeout`: it closes the connection that has been stalled longest to make room.
#[test]
fn a_worker_full_of_clients_that_never_read_makes_room_for_a_new_one() {
    let (_dir, server) = big_file_server("60");
    let addr = server.addr();
    let mut slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = tiny_window(addr);
            s.write_all(b"GET /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            s
        })
        .collect();
    // Every slot is taken once each has its response's head: its writes then stall.
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
    }
    let started = Instant::now();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let response = Conn::over(stream).get("/").expect("answered while every slot was held");
    let took = started.elapsed();
    assert_eq!(response.status, 200);
    assert!(took < Duration::from_secs(5), "answered after {took:?} (send_timeout 60 s)");
    // One client that did not read lost its connection to make room; the others keep theirs.
    let evicted = "closed a connection whose client is not reading";
    server.wait_for(evicted);
    assert_eq!(server.count(evicted), 1);
    drop(slow);
}

/// A process's resident memory, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `pid`'s RSS once it has not moved by more than 256 KiB for half a second (5 s at most).
fn settled_rss(pid: i32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut last, mut since) = (rss_kib(pid), Instant::now());
    while Instant::now() < deadline && since.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(50));
        let now = rss_kib(pid);
        if now.abs_diff(last) > 256 {
            (last, since) = (now, Instant::now());
        }
    }
    rss_kib(pid)
}

#[test]
fn a_client_that_never_reads_costs_little_memory_and_gives_it_back() {
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("public")).unwrap();
    std::fs::write(dir.path().join("public/big.bin"), vec![b'x'; 4 << 20]).unwrap();
    let config = write(dir.path(), "app.toml", "[[route]]\npath = \"/\"\nstatic = \"public\"\n");
    let server = Server::start(&forkserve(), &["-w", "1", "-b", "127.0.0.1:0", &config]);
    let addr = server.addr();
    let worker = *server.wait_workers(1).first().unwrap();
    let mut warm = Conn::open(addr).unwrap();
    warm.send_get("/big.bin").unwrap();
    assert_eq!(warm.read_counting().unwrap(), (200, 4 << 20));
    drop(warm);
    let idle = settled_rss(worker);
    let slow: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = tiny_window(addr);
            s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            s
        })
        .collect();
    let held = settled_rss(worker);
    // hyper alone would copy ~480 KiB of the file for each (48 MiB); bounded, ~75 KiB.
    assert!(held < idle + 24 * 1024, "{} KiB for 100 clients that do not read", held - idle);
    // They go with a reset: what they held goes back to the system.
    for s in slow {
        nix::sys::socket::setsockopt(
            &s,
            nix::sys::socket::sockopt::Linger,
            &nix::libc::linger { l_onoff: 1, l_linger: 0 },
        )
        .unwrap();
    }
    let after = settled_rss(worker);
    assert!(after < idle + 6 * 1024, "idle {idle} KiB, held {held} KiB, after {after} KiB");
}

#[test]
fn a_body_trickled_below_body_min_rate_is_cut_with_408() {
    let server = Server::start(
        &example("demo"),
        &["-w", "1", "-b", "127.0.0.1:0", "--body-timeout", "2", "--body-min-rate", "100"],
    );
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n").unwrap();
    // A byte every 0.4 s: never a pause of body_timeout, but 2.5 B/s.
    let started = Instant::now();
    let mut got = Vec::new();
    let closed = loop {
        let _ = stream.write_all(b"x");
        let (more, closed) = read_until_closed(&mut stream, Duration::from_millis(400));
        got.extend_from_slice(&more);
        if closed || started.elapsed() > Duration::from_secs(10) {
            break closed;
        }
    };
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&got);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?} after {took:?}");
    assert!(closed, "not closed after the 408");
    // The waiting credit starts at body_timeout (2 s); each 0.4 s wait costs 0.4 s and the
    // byte after it buys 0.01 s back: it runs out after about 2 s.
    assert!(took < Duration::from_secs(6), "cut after {took:?}");
}

/// An early burst banks at most `body_timeout` of waiting: a client that sends most of a body
/// at once and then trickles (here 200 KB, worth 200 s at 1,000 B/s, then a byte every 1.5 s,
/// never a pause of `body_timeout`) is cut about `body_timeout` after the trickle starts.
#[test]
fn a_burst_then_a_trickle_below_body_min_rate_is_cut_with_408() {
    let server = Server::start(
        &example("demo"),
        &["-w", "1", "-b", "127.0.0.1:0", "--body-timeout", "2", "--body-min-rate", "1000"],
    );
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n").unwrap();
    stream.write_all(&vec![b'x'; 200_000]).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let closed = loop {
        let (more, closed) = read_until_closed(&mut stream, Duration::from_millis(1500));
        got.extend_from_slice(&more);
        if closed || started.elapsed() > Duration::from_secs(7) {
            break closed;
        }
        let _ = stream.write_all(b"x");
    };
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&got);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?} after {took:?}");
    assert!(closed, "not closed after the 408");
    // The burst leaves 2 s of credit; the first 1.5 s wait leaves 0.5 s, which the next wait
    // uses up: about 2 s after the trickle starts.
    assert!(took > Duration::from_millis(1400), "cut after {took:?}: before the credit ran out");
    assert!(took < Duration::from_secs(6), "cut after {took:?}");
}

/// What `body_min_rate` must not cut: a burst, a pause just under `body_timeout`, then a
/// steady upload a little above the rate, for longer than `body_timeout`.
#[test]
fn a_pause_after_a_burst_then_a_steady_upload_at_body_min_rate_is_not_cut() {
    let server = Server::start(
        &example("demo"),
        &["-w", "1", "-b", "127.0.0.1:0", "--body-timeout", "2", "--body-min-rate", "1000"],
    );
    let (burst, steady) = (50_000, 2_750);
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    let head =
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", burst + steady);
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&vec![b'x'; burst]).unwrap();
    std::thread::sleep(Duration::from_millis(1600));
    // 1,100 B/s for 2.5 s, in 100 ms steps, on a schedule: a late step catches up.
    let started = Instant::now();
    let mut sent = 0;
    while sent < steady {
        std::thread::sleep(Duration::from_millis(100));
        let due = (started.elapsed().as_millis() as usize * 11 / 10).min(steady);
        stream.write_all(&vec![b'y'; due - sent]).expect("cut while sending at the rate");
        sent = due;
    }
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let response = Conn::over(stream).read_response(false).expect("no answer to the whole body");
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), burst + steady);
}

#[test]
fn a_client_that_ends_its_side_mid_body_is_answered_and_its_slot_freed() {
    let server = Server::start(
        &example("demo"),
        &["-w", "1", "-b", "127.0.0.1:0", "--worker-connections", "1"],
    );
    let addr = server.addr();
    for request in [
        &b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten.."[..],
        &b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n64\r\nonly ten.."[..],
    ] {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(request).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let started = Instant::now();
        let (got, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
        let answer = String::from_utf8_lossy(&got);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?} after {:?}", started.elapsed());
        assert!(closed, "the connection was left open");
        drop(stream);
        // worker_connections is 1: only a freed slot lets the next client in.
        let next = TcpStream::connect(addr).unwrap();
        next.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(Conn::over(next).get("/").unwrap().status, 200);
    }
}

#[test]
fn a_late_proxy_header_does_not_restart_header_timeout() {
    // header_timeout bounds a connection's first request from the connection's start, its
    // PROXY preamble included: a header that comes late leaves only what is left of it.
    let server = Server::start(
        &example("demo"),
        &["-w", "1", "-b", "127.0.0.1:0", "--proxy-protocol", "--header-timeout", "2"],
    );
    let proxy = b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n";
    // Nothing after the header: closed, quietly, 2 s after the start.
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(1400));
    stream.write_all(proxy).unwrap();
    let (got, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
    let after = started.elapsed();
    assert!(closed && got.is_empty(), "closed without an answer: {got:?}");
    assert!(after < Duration::from_millis(2900), "closed {after:?} after the start, not 2 s");
    // A head that starts after those 2 s is not read: the connection was closed at 2 s.
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(1400));
    stream.write_all(proxy).unwrap();
    std::thread::sleep(Duration::from_millis(900));
    let _ = stream.write_all(b"G");
    let (got, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
    let after = started.elapsed();
    assert!(
        closed && got.is_empty(),
        "closed quietly, no 408: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(after < Duration::from_millis(3400), "closed {after:?} after the start");
}
