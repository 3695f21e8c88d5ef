//! Every request ends in exactly one `RequestEnd` event, whoever answered it: the demo app
//! registers a hook (`DEMO_REQUEST_END_FILE`) that appends each event as a line, and each case
//! below checks that its request added one line, and what it says.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::http::{Conn, tiny_window};
use common::{Server, WAIT, example, tempdir};

/// One event line, as `key=value` fields.
type Event = BTreeMap<String, String>;

fn events(file: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|line| {
            line.split(' ')
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Waits until the file has `n` events, then a moment more to catch a second event for the
/// same request; returns the last one.
fn nth_event(file: &Path, n: usize) -> Event {
    let started = Instant::now();
    while events(file).len() < n {
        assert!(started.elapsed() < WAIT, "no event {n}: {:?}", events(file));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let all = events(file);
    assert_eq!(all.len(), n, "exactly one event per request: {all:#?}");
    all.last().unwrap().clone()
}

fn server(dir: &Path) -> (Server, PathBuf) {
    server_with(
        dir,
        &["--max-body-size", "1000", "--header-timeout", "1", "--request-timeout", "1"],
    )
}

/// One worker, with `extra` arguments, and the hook's file.
fn server_with(dir: &Path, extra: &[&str]) -> (Server, PathBuf) {
    let file = dir.join("events.log");
    let args = ["-w", "1", "-b", "127.0.0.1:0"];
    let env = [("DEMO_REQUEST_END_FILE", file.to_str().unwrap())];
    (Server::start_with(&example("demo"), &[&args[..], extra].concat(), &env), file)
}

/// Checks the fields of `event` named in `want`.
fn assert_fields(event: &Event, want: &[(&str, &str)]) {
    for (key, value) in want {
        assert_eq!(event.get(*key).map(String::as_str), Some(*value), "{key} in {event:?}");
    }
}

fn raw(addr: SocketAddr, request: &[u8]) -> common::http::Response {
    let mut conn = Conn::open(addr).unwrap();
    conn.send(request).unwrap();
    conn.read_response(false).unwrap()
}

#[test]
fn every_request_ends_in_exactly_one_event_whoever_answers_it() {
    let dir = tempdir();
    let (server, file) = server(dir.path());
    let addr = server.addr();
    let mut n = 0;
    let mut next = |want: &[(&str, &str)]| {
        n += 1;
        let event = nth_event(&file, n);
        assert_fields(&event, want);
        event
    };

    // A normal 200, from the app.
    let ok = common::http::get(addr, "/count").unwrap();
    assert_eq!(ok.status, 200);
    let body_len = ok.body.len().to_string();
    let event = next(&[
        ("by", "App"),
        ("ending", "Complete"),
        ("status", "200"),
        ("method", "GET"),
        ("target", "/count"),
        ("version", "HTTP/1.1"),
        ("request_bytes", "0"),
        ("response_bytes", &body_len),
        ("client", "127.0.0.1"),
    ]);
    // The first worker the master starts is worker 1.
    assert_eq!(event.get("worker").map(String::as_str), Some("1"));

    // A 404, from the app.
    assert_eq!(common::http::get(addr, "/nowhere?x=1").unwrap().status, 404);
    next(&[("status", "404"), ("target", "/nowhere?x=1"), ("response_bytes", "10")]);

    // A 413 from the gate: the app never sees the request. Its client is the connection's: a
    // refused head's forwarding headers are not believed, though the peer is trusted.
    let refused = raw(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\nContent-Length: 2000\r\n\r\n",
    );
    assert_eq!(refused.status, 413);
    next(&[
        ("by", "Gate"),
        ("ending", "Complete"),
        ("status", "413"),
        ("method", "POST"),
        ("target", "/echo"),
        ("request_bytes", "0"),
        ("response_bytes", &refused.body.len().to_string()),
        ("client", "127.0.0.1"),
    ]);

    // A 408 from the gate: the head never ends (header_timeout).
    let late = raw(addr, b"GET /late HTTP/1.1\r\nHost: t\r\n");
    assert_eq!(late.status, 408);
    next(&[("by", "Gate"), ("status", "408"), ("target", "/late"), ("response_bytes", "16")]);

    // A 504 from request_timeout: the app's answer comes too late.
    assert_eq!(common::http::get(addr, "/sleep/3000").unwrap().status, 504);
    next(&[("by", "App"), ("status", "504"), ("target", "/sleep/3000"), ("response_bytes", "16")]);

    // A 500 from a handler's panic.
    assert_eq!(common::http::get(addr, "/panic").unwrap().status, 500);
    next(&[("by", "App"), ("status", "500"), ("response_bytes", "22")]);

    // A client that goes away in the middle of its body: 400, with the bytes that came.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n").unwrap();
    stream.write_all(&[b'x'; 40]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(stream);
    next(&[("by", "App"), ("status", "400"), ("method", "POST"), ("request_bytes", "40")]);

    // A response cut in the middle: the client reads its first line and goes away.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /drip/800 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut first = [0u8; 1024];
    let got = stream.read(&mut first).unwrap();
    assert!(got > 0);
    stream.shutdown(Shutdown::Both).unwrap();
    drop(stream);
    let event = next(&[("by", "App"), ("ending", "Cut"), ("status", "200")]);
    let sent: u64 = event["response_bytes"].parse().unwrap();
    // Eight lines of "N left\n" (7 bytes each) make the whole body; the client read the first.
    assert!((7..8 * 7).contains(&sent), "some, not all, of it was sent: {event:?}");
    assert!(server.count("request-end hook") == 0, "the hook never failed");
}

#[test]
fn pipelined_requests_and_a_request_with_a_body_each_end_once() {
    let dir = tempdir();
    let (server, file) = server(dir.path());
    let mut conn = Conn::open(server.addr()).unwrap();
    let one = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    conn.send(&one.repeat(3)).unwrap();
    for _ in 0..3 {
        assert_eq!(conn.read_response(false).unwrap().status, 200);
    }
    nth_event(&file, 3);
    conn.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n")
        .unwrap();
    let echoed = conn.read_response(false).unwrap();
    assert_eq!(echoed.text(), "helloabc");
    let event = nth_event(&file, 4);
    assert_fields(&event, &[("status", "200"), ("request_bytes", "8"), ("response_bytes", "8")]);
    // A HEAD's response has no body to send, and is whole all the same.
    conn.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(conn.read_response(true).unwrap().status, 200);
    assert_fields(&nth_event(&file, 5), &[("method", "HEAD"), ("ending", "Complete")]);
}

#[test]
fn a_head_the_gate_let_through_and_hyper_refused_ends_in_one_event() {
    // Targets the gate finds well-formed but hyper cannot take: an authority `http::Uri`
    // rejects (hyper's bare 400), and a target of 65,535 bytes or more, `http::Uri`'s limit
    // (hyper's 414), let through with no request-line limit.
    let dir = tempdir();
    let (server, file) = server_with(dir.path(), &["--limit-request-line", "0"]);
    let addr = server.addr();
    let long = format!("/{}", "a".repeat(65_534));
    let cases =
        [("http://[::1/", 400), ("http://x:1:2/", 400), ("http://x%41/", 400), (&long[..], 414)];
    let mut n = 0;
    for (target, status) in cases {
        let response = raw(addr, format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        // hyper's own answer, as it always was: no body.
        assert_eq!((response.status, response.body.len()), (status, 0), "{target:.20}");
        n += 1;
        let event = nth_event(&file, n);
        assert_fields(
            &event,
            &[
                ("by", "Gate"),
                ("ending", "Complete"),
                ("status", &status.to_string()),
                ("method", "GET"),
                ("target", target),
                ("version", "HTTP/1.1"),
                ("response_bytes", "0"),
                ("client", "127.0.0.1"),
            ],
        );
    }
    // One byte shorter is within the limit: the app answers it.
    assert_eq!(
        raw(addr, format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", &long[..65_534]).as_bytes()).status,
        404
    );
    n += 1;
    assert_fields(&nth_event(&file, n), &[("by", "App"), ("status", "404")]);
    // After a pipelined request the app answered: one event each.
    let mut conn = Conn::open(addr).unwrap();
    conn.send(
        b"GET /count HTTP/1.1\r\nHost: t\r\n\r\nGET http://x:1:2/ HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    assert_eq!(conn.read_response(false).unwrap().status, 200);
    assert_eq!(conn.read_response(false).unwrap().status, 400);
    n += 2;
    nth_event(&file, n);
    let all = events(&file);
    assert_fields(&all[n - 2], &[("by", "App"), ("target", "/count")]);
    assert_fields(&all[n - 1], &[("by", "Gate"), ("status", "400"), ("target", "http://x:1:2/")]);
}

/// Resets the connection (a close with `SO_LINGER` 0): the server's next write fails.
fn reset(stream: TcpStream) {
    let linger = nix::libc::linger { l_onoff: 1, l_linger: 0 };
    nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::Linger, &linger).unwrap();
    drop(stream);
}

#[test]
fn responses_that_never_left_the_worker_are_cut_not_complete() {
    let dir = tempdir();
    let (server, file) =
        server_with(dir.path(), &["--max-body-size", "1000000", "--send-timeout", "1"]);
    let addr = server.addr();
    // Three pipelined requests, and the client resets the connection before any answer: the
    // first two responses are held back for the batch, the third is not ready when the
    // write fails. None of them reached the client.
    let mut stream = TcpStream::connect(addr).unwrap();
    let batch = "GET /sleep/300 HTTP/1.1\r\nHost: t\r\n\r\nGET /a HTTP/1.1\r\nHost: t\r\n\r\n\
                 GET /sleep/200 HTTP/1.1\r\nHost: t\r\n\r\n";
    stream.write_all(batch.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    reset(stream);
    nth_event(&file, 3);
    let mut all = events(&file);
    all.sort_by(|a, b| a["target"].cmp(&b["target"]));
    for (event, target) in all.iter().zip(["/a", "/sleep/200", "/sleep/300"]) {
        assert_fields(event, &[("target", target), ("ending", "Cut"), ("response_bytes", "0")]);
    }
    // Responses handed over whole to a client that does not read: the kernel's buffers take
    // the first few; then one stays in the worker until send_timeout closes the connection.
    // That one is cut, with what was written, not complete (and ends the connection, so it
    // is the last).
    let mut stream = tiny_window(addr);
    stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let size = 200_000;
    let upload = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n");
    let mut n = 3;
    loop {
        stream.write_all(upload.as_bytes()).unwrap();
        stream.write_all(&vec![b'x'; size]).unwrap();
        n += 1;
        let event = nth_event(&file, n);
        assert_fields(&event, &[("target", "/echo"), ("status", "200")]);
        let sent: usize = event["response_bytes"].parse().unwrap();
        if event["ending"] == "Cut" {
            assert!(sent < size, "not all of it was written: {event:?}");
            break;
        }
        assert_eq!((event["ending"].as_str(), sent), ("Complete", size), "{event:?}");
        assert!(n < 3 + 64, "12 MB taken by a client that reads nothing");
    }
    // A client that reads gets it whole, and the event says so once it is written.
    let mut conn = Conn::open(addr).unwrap();
    conn.send(
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    conn.send(&vec![b'x'; size]).unwrap();
    assert_eq!(conn.read_response(false).unwrap().body.len(), size);
    let event = nth_event(&file, n + 1);
    assert_fields(&event, &[("ending", "Complete"), ("response_bytes", &size.to_string())]);
}
