//! A slow client never ties up a Python thread: with one worker and one Python thread, a
//! normal GET is answered at once while many clients upload or download slowly, because bodies
//! are received and responses sent by the event loop. And `--threads` is the number of requests
//! in Python at once: 1 behaves like Gunicorn's sync worker, N like gthread.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::http::{self, Conn, tiny_window};
use common::wsgi;

/// A normal GET's time, far below what a server with its thread held would take (seconds).
const AT_ONCE: Duration = Duration::from_millis(200);

/// The slowest of a few GETs spread over `over`.
fn slowest_get(addr: SocketAddr, over: Duration) -> Duration {
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let asked = Instant::now();
        let r = http::get(addr, "/pid").unwrap();
        assert_eq!(r.status, 200);
        slowest = slowest.max(asked.elapsed());
        thread::sleep(over / 5);
    }
    slowest
}

/// `n` clients each uploading a 60-byte body at 10 bytes a second, while a GET is timed; then
/// every upload must have been served whole.
fn slow_uploaders_do_not_hold_the_python_thread(n: usize) {
    let server = wsgi::start("behave:app", &["-w", "1", "--threads", "1"]);
    let addr = server.addr();
    let mut uploads: Vec<(TcpStream, Vec<u8>)> = (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(common::WAIT)).unwrap();
            s.write_all(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 60\r\n\r\n").unwrap();
            let body: Vec<u8> = format!("{i:>6}").bytes().cycle().take(60).collect();
            (s, body)
        })
        .collect();
    let sender = thread::spawn(move || {
        for round in 0..6 {
            for (s, body) in &mut uploads {
                s.write_all(&body[round * 10..round * 10 + 10]).unwrap();
            }
            thread::sleep(Duration::from_secs(1));
        }
        uploads
    });
    thread::sleep(Duration::from_millis(1500));
    let slowest = slowest_get(addr, Duration::from_secs(2));
    eprintln!("with {n} slow uploaders, the slowest GET took {slowest:?}");
    assert!(slowest < AT_ONCE, "with {n} slow uploaders a GET took {slowest:?}");
    for (s, body) in sender.join().unwrap() {
        let r = Conn::over(s).read_response(false).unwrap();
        assert_eq!((r.status, &r.body), (200, &body));
    }
}

#[test]
fn sixteen_slow_uploaders_leave_a_get_answered_at_once() {
    slow_uploaders_do_not_hold_the_python_thread(16);
}

#[test]
fn two_hundred_slow_uploaders_leave_a_get_answered_at_once() {
    slow_uploaders_do_not_hold_the_python_thread(200);
}

/// `n` clients that ask for a 1 MiB response at `path` and do not read it (a receive window as
/// small as the kernel allows), while a GET is timed; then one of them reads its whole body.
fn slow_downloaders_do_not_hold_the_python_thread(path: &str) {
    let server = wsgi::start("behave:app", &["-w", "1", "--threads", "1"]);
    let addr = server.addr();
    let request = format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut clients: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = tiny_window(addr);
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    // Every request reached the app and its response is waiting on its client (all but one
    // are checked by their first byte; that one is read whole at the end).
    let last = clients.pop().unwrap();
    let mut first = [0u8; 1];
    for s in &mut clients {
        s.set_read_timeout(Some(common::WAIT)).unwrap();
        s.read_exact(&mut first).unwrap();
    }
    let slowest = slowest_get(addr, Duration::from_secs(1));
    eprintln!("with 200 slow downloaders of {path}, the slowest GET took {slowest:?}");
    assert!(slowest < AT_ONCE, "with 200 slow downloaders of {path}, a GET took {slowest:?}");
    drop(clients);
    last.set_read_timeout(Some(common::WAIT)).unwrap();
    let r = Conn::over(last).read_response(false).unwrap();
    assert_eq!((r.status, r.body.len()), (200, 1 << 20), "a slow client's body arrives whole");
}

#[test]
fn two_hundred_slow_downloaders_leave_a_get_answered_at_once() {
    slow_downloaders_do_not_hold_the_python_thread("/big?n=1048576");
}

#[test]
fn two_hundred_slow_downloaders_of_streamed_bodies_leave_a_get_answered_at_once() {
    slow_downloaders_do_not_hold_the_python_thread("/gen?n=1048576");
}

/// A streamed response far larger than what waits in memory (4 MiB): what its client has not
/// taken goes to a spool file, and the thread goes back to the app.
#[test]
fn a_slow_downloader_of_a_large_streamed_body_leaves_a_get_answered_at_once() {
    let server = wsgi::start("behave:app", &["-w", "1", "--threads", "1"]);
    let addr = server.addr();
    let mut slow = tiny_window(addr);
    slow.write_all(b"GET /gen?n=20971520 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    // Its response has started (the app is streaming it); peeked, so as to read it whole below.
    slow.set_read_timeout(Some(common::WAIT)).unwrap();
    let mut head = [0u8; 12];
    while slow.peek(&mut head).unwrap() < head.len() {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(&head, b"HTTP/1.1 200");
    let slowest = slowest_get(addr, Duration::from_secs(1));
    eprintln!("with a slow downloader of 20 MiB streamed, the slowest GET took {slowest:?}");
    assert!(slowest < AT_ONCE, "with a slow downloader of 20 MiB streamed, a GET took {slowest:?}");
    let r = Conn::over(slow).read_response(false).unwrap();
    assert_eq!((r.status, r.body.len()), (200, 20 << 20), "the slow client's body arrives whole");
}

/// How long two requests that each sleep 500 ms in Python take together.
fn two_sleeps(threads: &str) -> Duration {
    let server = wsgi::start("behave:app", &["-w", "1", "--threads", threads]);
    let addr = server.addr();
    let started = Instant::now();
    let both: Vec<_> = (0..2)
        .map(|_| thread::spawn(move || http::get(addr, "/sleep?s=0.5").unwrap().status))
        .collect();
    for h in both {
        assert_eq!(h.join().unwrap(), 200);
    }
    started.elapsed()
}

#[test]
fn one_thread_runs_one_request_at_a_time_and_two_run_two() {
    let one = two_sleeps("1");
    let two = two_sleeps("2");
    eprintln!("two 500 ms requests: {one:?} with threads=1, {two:?} with threads=2");
    assert!(one >= Duration::from_millis(950), "threads=1 ran both at once: {one:?}");
    assert!(two < Duration::from_millis(900), "threads=2 ran them one after the other: {two:?}");
}
