//! HTTP/2 floods of frames that cost the worker without serving a request, and a draining
//! connection whose client never answers: raw frames (`common::h2`) on the real binary. Each
//! flood ends only its connection, with `GOAWAY(ENHANCE_YOUR_CALM)` and one warning naming
//! the client; the worker serves on.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::h2::{self, Frame, Raw};
use common::{Server, WAIT, example};
use nix::sys::signal::Signal;

const LOCAL: &str = "127.0.0.1:0";

/// The control frames a client may send per 10 s that no response paid for (see
/// `CONTROL_BUDGET` in `src/conn/http2/frames.rs`, and the README).
const CONTROL_BUDGET: usize = 1000;

fn demo(extra: &[&str]) -> Server {
    let mut args = vec!["-w", "1", "-b", LOCAL, "--h2c"];
    args.extend_from_slice(extra);
    Server::start(&example("demo"), &args)
}

/// The worker's pid, over HTTP/2: a new connection is served.
fn served_by(server: &Server) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--http2-prior-knowledge"])
        .arg(format!("http://{}/pid", server.addr()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The GOAWAY that ended `raw`'s connection, after `n` frames of `flood` were sent at once,
/// and the frames read up to it.
fn flooded(raw: &mut Raw, flood: &[u8], n: usize) -> (u32, u32, Vec<Frame>) {
    raw.try_send(&flood.repeat(n));
    let frames = raw.until_closed();
    let (last, code) = frames.iter().rev().find_map(Frame::goaway).unwrap_or_else(|| {
        panic!("no GOAWAY: {:?}", frames.iter().rev().take(3).collect::<Vec<_>>())
    });
    (last, code, frames)
}

#[test]
fn control_frame_floods_end_their_connection_with_enhance_your_calm() {
    let server = demo(&[]);
    let pid = served_by(&server);
    let floods = [
        ("PING", h2::frame(h2::PING, 0, 0, b"flooding")),
        ("SETTINGS", h2::frame(h2::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])),
        ("WINDOW_UPDATE", h2::frame(h2::WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes())),
    ];
    for (n, (name, flood)) in floods.iter().enumerate() {
        let mut raw = Raw::open(server.addr());
        raw.send(&h2::get(1, "/"));
        raw.until(|f| f.kind == h2::SETTINGS && f.flags & 1 != 0);
        let (last, code, frames) = flooded(&mut raw, flood, 3 * CONTROL_BUDGET);
        assert_eq!((last, code), (1, h2::ENHANCE_YOUR_CALM), "{name}");
        let pongs = frames.iter().filter(|f| f.kind == h2::PING && f.flags & 1 != 0).count();
        assert!(pongs <= CONTROL_BUDGET, "{name}: {pongs} PINGs answered");
        let line = server.wait_for_nth("http/2 flood from 127.0.0.1:", n + 1);
        assert!(line.contains(&format!("the last: {name}")), "{line}");
        assert!(line.contains("GOAWAY(ENHANCE_YOUR_CALM)") && line.contains("WARN"), "{line}");
    }
    assert_eq!(server.count("http/2 flood from"), floods.len(), "one line per connection");
    assert_eq!(served_by(&server), pid, "the same worker serves on");
}

#[test]
fn a_client_within_the_budget_is_served() {
    let server = demo(&[]);
    let mut raw = Raw::open(server.addr());
    raw.until(|f| f.kind == h2::SETTINGS && f.flags & 1 != 0);
    // Just under the budget of control frames, then a request.
    raw.send(&h2::frame(h2::PING, 0, 0, b"12345678").repeat(CONTROL_BUDGET - 10));
    raw.send(&h2::get(1, "/"));
    let frames = raw.until(|f| f.stream == 1 && f.flags & h2::END_STREAM != 0);
    assert!(frames.iter().any(|f| f.stream == 1 && f.is_200()), "{:?}", frames.last());
    assert!(frames.iter().all(|f| f.goaway().is_none()));
    assert_eq!(server.count("http/2 flood"), 0);
}

#[test]
fn acknowledgements_of_pings_never_sent_end_the_connection() {
    // h2 logs a warning for each: unbounded, a client could fill the disk.
    let server = demo(&[]);
    let mut raw = Raw::open(server.addr());
    let ack = h2::frame(h2::PING, 1, 0, b"neversen");
    raw.until(|f| f.kind == h2::SETTINGS && f.flags & 1 != 0);
    let (_, code, _) = flooded(&mut raw, &ack, 10_000);
    assert_eq!(code, h2::ENHANCE_YOUR_CALM);
    server.wait_for("acknowledged PINGs the server never sent");
    let h2_warnings = server.count("PING ack that we never sent");
    assert!(h2_warnings <= 11, "{h2_warnings} lines of h2's warning");
}

#[test]
fn a_draining_client_that_never_answers_the_goaways_ping_does_not_hold_the_worker() {
    for signal in [Signal::SIGHUP, Signal::SIGTERM] {
        let mut server = demo(&["--graceful-timeout", "30"]);
        let mut raw = Raw::open(server.addr());
        raw.send(&h2::get(1, "/"));
        // Read without acknowledging the server's PINGs (`Raw::until` would).
        while raw.read().is_some_and(|f| !(f.stream == 1 && f.flags & h2::END_STREAM != 0)) {}
        // A client that keeps talking (its own PINGs, well within the budget), so that the
        // connection is never quiet.
        let mut talker = Raw { stream: raw.stream.try_clone().unwrap() };
        let chatter = std::thread::spawn(move || {
            let started = Instant::now();
            while started.elapsed() < WAIT
                && talker.try_send(&h2::frame(h2::PING, 0, 0, b"chatting"))
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let sent = Instant::now();
        server.signal(signal);
        let mut goaways = Vec::new();
        while let Some(f) = raw.read() {
            goaways.extend(f.goaway());
        }
        let took = sent.elapsed();
        assert!(took < Duration::from_secs(6), "{signal}: closed after {took:?}");
        assert_eq!(goaways.first(), Some(&(0x7fff_ffff, h2::NO_ERROR)), "{signal}: hyper's");
        assert_eq!(goaways.last(), Some(&(1, h2::NO_ERROR)), "{signal}: the last stream served");
        if signal == Signal::SIGTERM {
            assert_eq!(server.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
        } else {
            server.wait_for("worker exited");
        }
        chatter.join().unwrap();
    }
}

#[test]
fn a_flood_on_a_draining_connection_ends_it_as_before_the_drain() {
    let server = demo(&["--graceful-timeout", "30", "--log-level", "debug"]);
    let mut raw = Raw::open(server.addr());
    raw.send(&h2::get(1, "/sleep/3000"));
    raw.until(|f| f.kind == h2::SETTINGS && f.flags & 1 != 0);
    server.wait_for("sleeping 3000 ms");
    server.signal(Signal::SIGHUP);
    raw.until(|f| f.goaway().is_some());
    let started = Instant::now();
    let (last, code, _) = flooded(&mut raw, &h2::frame(h2::PING, 0, 0, b"flooding"), 3000);
    assert_eq!((last, code), (1, h2::ENHANCE_YOUR_CALM));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not after the stream: {:?}",
        started.elapsed()
    );
    server.wait_for("http/2 flood from 127.0.0.1:");
}
