//! Draining a worker (reload, recycling, stop) loses no request: a request in progress or
//! arriving is answered with `Connection: close`; only a connection on which nothing happens is
//! closed by the server.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::http::Conn;
use common::{Server, example};
use nix::sys::signal::Signal;

const LOCAL: &str = "127.0.0.1:0";

fn pid_in(response: &common::http::Response) -> i32 {
    response.text().trim().parse().unwrap()
}

#[test]
fn a_request_in_progress_when_draining_starts_is_answered_with_connection_close() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL]);
    let mut conn = Conn::open(server.addr()).unwrap();
    assert_eq!(conn.get("/").unwrap().header("connection"), None, "keep-alive before");
    conn.send_get("/sleep/500").unwrap();
    thread::sleep(Duration::from_millis(100));
    server.signal(Signal::SIGHUP);
    let response = conn.read_response(false).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(conn.is_closed());
}

#[test]
fn a_request_sent_on_an_idle_connection_after_draining_started_is_answered() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL]);
    let mut conn = Conn::open(server.addr()).unwrap();
    let old = pid_in(&conn.get("/pid").unwrap());
    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete");
    // The old worker is draining; the client, not knowing, sends its next request on the
    // keep-alive connection it holds.
    thread::sleep(Duration::from_millis(300));
    let response = conn.get("/pid").unwrap();
    assert_eq!(pid_in(&response), old, "answered by the draining worker");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(conn.is_closed());
}

#[test]
fn a_connection_on_which_nothing_arrives_is_closed_a_second_after_draining_starts() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL]);
    let mut conn = Conn::open(server.addr()).unwrap();
    conn.get("/").unwrap();
    let drained = Instant::now();
    server.signal(Signal::SIGHUP);
    assert!(conn.is_closed(), "the idle connection is closed");
    let took = drained.elapsed();
    assert!(took >= Duration::from_millis(900), "closed after {took:?}, before the linger");
    server.wait_for("stopped: generation 2 took over");
}

#[test]
fn keep_alive_clients_see_no_failure_across_ten_reloads() {
    let server = Server::start(&example("demo"), &["-w", "2", "-b", LOCAL]);
    let addr = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let (mut ok, mut failed, mut reconnects) = (0u64, Vec::new(), 0u64);
                let mut conn = Conn::open(addr).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    match conn.get("/") {
                        Ok(r) if r.status == 200 => {
                            ok += 1;
                            if r.header("connection") == Some("close") {
                                reconnects += 1;
                                conn = Conn::open(addr).unwrap();
                            }
                        }
                        Ok(r) => failed.push(format!("status {}", r.status)),
                        Err(e) => {
                            failed.push(e.to_string());
                            conn = Conn::open(addr).unwrap();
                        }
                    }
                }
                (ok, failed, reconnects)
            })
        })
        .collect();
    for n in 2..12 {
        thread::sleep(Duration::from_millis(150));
        server.signal(Signal::SIGHUP);
        server.wait_for(&format!("reload complete generation={n}"));
    }
    thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed, mut reconnects) = (0, Vec::new(), 0);
    for c in clients {
        let (o, f, r) = c.join().unwrap();
        ok += o;
        failed.extend(f);
        reconnects += r;
    }
    assert!(failed.is_empty(), "{} of {} requests failed: {:?}", failed.len(), ok, &failed[..1]);
    assert!(reconnects >= 10, "draining workers told clients to reconnect {reconnects} times");
    assert!(ok > 100, "{ok} requests");
}

#[test]
fn a_connection_left_with_an_unread_request_body_does_not_hold_up_a_stop() {
    let mut server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL]);
    let mut conn = Conn::open(server.addr()).unwrap();
    // The demo's `/` does not read the body: hyper is left with most of it unread.
    let body = vec![b'x'; 20_000];
    let mut request =
        format!("POST / HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes();
    request.extend_from_slice(&body);
    conn.send(&request).unwrap();
    assert_eq!(conn.read_response(false).unwrap().status, 200);
    let stopped = Instant::now();
    server.signal(Signal::SIGTERM);
    assert!(conn.is_closed());
    assert_eq!(server.exit_code(), 0);
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(5), "graceful_timeout is 30 s; took {took:?}");
}
