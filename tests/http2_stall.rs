//! HTTP/2 streams the client holds still, on the real binary with raw frames (`common::h2`):
//! `send_timeout` per stream, for a client that never opens a stream's flow-control window,
//! but not for one that reads slowly and steadily, whatever the app or the file cache hands h2
//! at once; and `body_timeout` and `body_min_rate` per stream, for a request body that stalls or
//! trickles; each such stream is reset, its request logged cut, while the connection's other
//! streams and the worker's other connections are served; even on streams h2 refused beyond
//! `max_concurrent_streams`, whose refusal is still queued behind a stalled response. A
//! client that stops inside a frame while a body is late is closed.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::h2::{self, Frame, Raw};
use common::{Server, example, forkserve, tempdir, wait_lines, write};

/// RST_STREAM's codes: a stream the server gave up on, one h2 was told is in error (see
/// `assert_late_body_reset`).
const CANCEL: u32 = 0x8;
const PROTOCOL_ERROR: u32 = 0x1;

/// SETTINGS_INITIAL_WINDOW_SIZE = `n`.
fn initial_window(n: u32) -> Vec<u8> {
    let mut payload = vec![0, 4];
    payload.extend_from_slice(&n.to_be_bytes());
    h2::frame(h2::SETTINGS, 0, 0, &payload)
}

/// A GET of `path` on `stream`, with `window` bytes of flow control opened on it.
fn get_opened(stream: u32, path: &str, window: u32) -> Vec<u8> {
    let mut out = h2::get(stream, path);
    out.extend(h2::frame(h2::WINDOW_UPDATE, 0, stream, &window.to_be_bytes()));
    out
}

fn ended(stream: u32) -> impl Fn(&Frame) -> bool {
    move |f| f.stream == stream && (f.flags & h2::END_STREAM != 0 || f.reset().is_some())
}

/// A server with `send_timeout = 1`, a 4 MiB file (streamed), one of 40 KB (three pieces of
/// body) and a small one under `/files/`,
/// and an access log that marks cut responses (`%(c)s`: `-`).
fn server(dir: &Path) -> Server {
    std::fs::create_dir(dir.join("files")).unwrap();
    std::fs::write(dir.join("files/big.bin"), vec![b'x'; 4 << 20]).unwrap();
    std::fs::write(dir.join("files/small.txt"), "small\n").unwrap();
    std::fs::write(dir.join("files/mid.bin"), vec![b'y'; 40_000]).unwrap();
    let config = write(
        dir,
        "app.toml",
        "[server]\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n\
         [http]\nh2c = true\nsend_timeout = 1\nkeepalive = 30\n\
         [log]\nlevel = \"debug\"\naccess = \"access.log\"\n\
         access_format = \"%(c)s [%(r)s] %(s)s\"\n\
         [[route]]\npath = \"/files/\"\nstatic = \"files\"\n",
    );
    Server::start(&forkserve(), &[&config])
}

#[test]
fn a_stream_left_without_a_window_is_reset_at_send_timeout_and_logged_cut() {
    let dir = tempdir();
    let server = server(dir.path());
    let mut raw = Raw::open(server.addr());
    // Every stream's window starts at zero; only those the client opens can send.
    raw.send(&initial_window(0));
    raw.until(|f| f.kind == h2::SETTINGS && f.flags & 1 != 0);
    let asked = Instant::now();
    raw.send(&h2::get(1, "/files/big.bin"));
    raw.send(&get_opened(3, "/files/small.txt", 1 << 20));
    let served = raw.until(ended(3));
    assert!(served.last().unwrap().reset().is_none(), "stream 3 is served: {served:?}");
    assert!(asked.elapsed() < Duration::from_millis(900), "at once, beside the stalled one");

    // Another connection is served meanwhile.
    let mut other = Raw::open(server.addr());
    other.send(&h2::get(1, "/files/small.txt"));
    assert!(other.until(ended(1)).last().unwrap().reset().is_none());

    let frames = raw.until(|f| f.stream == 1 && f.reset().is_some());
    let waited = asked.elapsed();
    assert_eq!(frames.last().unwrap().reset(), Some(CANCEL));
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "{waited:?}");
    let head = served.iter().chain(&frames).find(|f| f.stream == 1 && f.kind == h2::HEADERS);
    assert!(head.is_some_and(Frame::is_200), "its head was sent");
    assert!(!frames.iter().any(|f| f.stream == 1 && f.kind == h2::DATA), "none of its body");
    server.wait_for("client is not reading an http/2 stream");

    // The connection goes on: a new stream with a window is served.
    raw.send(&get_opened(5, "/files/small.txt", 1 << 20));
    assert!(raw.until(ended(5)).last().unwrap().reset().is_none());
    let log = wait_lines(&dir.path().join("access.log"), 4);
    let big: Vec<_> = log.iter().filter(|l| l.contains("big.bin")).collect();
    assert_eq!(big, ["- [GET /files/big.bin HTTP/2.0] 200"], "cut, with the status sent: {log:?}");
    assert_eq!(log.iter().filter(|l| l.starts_with("OK [GET /files/small.txt")).count(), 3);
}

#[test]
fn a_response_whose_window_opens_a_little_then_no_more_is_reset_at_send_timeout() {
    let dir = tempdir();
    let server = server(dir.path());
    let mut raw = Raw::open(server.addr());
    // Room for 1000 bytes of each stream, never more: h2 takes the 40 KB file's first piece
    // (16 KiB, `max_send_buf`) whole; the next waits and is watched.
    raw.send(&initial_window(1000));
    raw.until(|f| f.kind == h2::SETTINGS && f.flags & 1 != 0);
    let asked = Instant::now();
    raw.send(&h2::get(1, "/files/mid.bin"));
    let frames = raw.until(|f| f.stream == 1 && f.reset().is_some());
    let waited = asked.elapsed();
    assert_eq!(frames.last().unwrap().reset(), Some(CANCEL));
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "{waited:?}");
    let sent: usize = frames
        .iter()
        .filter(|f| f.stream == 1 && f.kind == h2::DATA)
        .map(|f| f.payload.len())
        .sum();
    assert_eq!(sent, 1000, "what the window let through");
    let log = wait_lines(&dir.path().join("access.log"), 1);
    assert_eq!(log, ["- [GET /files/mid.bin HTTP/2.0] 200"], "cut, not complete");
}

/// The demo with `args`, and an access log in `dir` that marks cut responses.
fn demo(dir: &Path, args: &[&str]) -> Server {
    let access = dir.join("access.log");
    let mut all = vec!["-w", "1", "-b", "127.0.0.1:0", "--h2c", "--log-level", "debug"];
    all.extend(["--log-access", access.to_str().unwrap(), "--log-access-format"]);
    all.push("%(c)s [%(r)s] %(s)s");
    all.extend_from_slice(args);
    Server::start(&example("demo"), &all)
}

/// A POST of `path`'s head on `stream`, its body to follow.
fn post(stream: u32, path: &str) -> Vec<u8> {
    let head = h2::block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "localhost"),
        (":path", path),
    ]);
    h2::frame(h2::HEADERS, h2::END_HEADERS, stream, &head)
}

/// The stream a late request body was on ends alone: h2 resets it (it is handed a PRIORITY
/// frame making the stream depend on itself, a stream error, see `src/conn/http2/wire.rs`);
/// the connection serves on.
fn assert_late_body_reset(server: &Server, raw: &mut Raw, frames: &[Frame], dir: &Path) {
    assert_eq!(frames.last().unwrap().reset(), Some(PROTOCOL_ERROR), "{frames:?}");
    server.wait_for("request body late for body_timeout or body_min_rate");
    raw.send(&h2::get(5, "/"));
    let more = raw.until(ended(5));
    assert!(more.last().unwrap().reset().is_none(), "the connection serves on: {more:?}");
    let log = wait_lines(&dir.join("access.log"), 3);
    let echo: Vec<_> = log.iter().filter(|l| l.contains("POST /echo")).collect();
    assert!(echo.len() == 1 && echo[0].starts_with("- "), "logged cut: {log:?}");
}

#[test]
fn a_request_body_that_stalls_ends_its_stream_at_body_timeout() {
    let dir = tempdir();
    let server = demo(dir.path(), &["--body-timeout", "1", "--body-min-rate", "0"]);
    let mut raw = Raw::open(server.addr());
    let started = Instant::now();
    raw.send(&post(1, "/echo"));
    raw.send(&h2::frame(h2::DATA, 0, 1, b"0123456789"));
    raw.send(&h2::get(3, "/"));
    let frames = raw.until(|f| f.stream == 1 && f.reset().is_some());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "{waited:?}");
    let served = frames.iter().find(|f| f.stream == 3 && f.flags & h2::END_STREAM != 0);
    assert!(served.is_some(), "stream 3 was served meanwhile: {frames:?}");
    assert_late_body_reset(&server, &mut raw, &frames, dir.path());
}

#[test]
fn a_request_body_that_trickles_below_body_min_rate_ends_its_stream() {
    let dir = tempdir();
    // 2 s of credit, 10 ms more per byte at 100 B/s, a byte every 200 ms: out after about 2 s,
    // though no pause reaches body_timeout.
    let server = demo(dir.path(), &["--body-timeout", "2", "--body-min-rate", "100"]);
    let mut raw = Raw::open(server.addr());
    raw.send(&post(1, "/echo"));
    raw.send(&h2::get(3, "/"));
    let started = Instant::now();
    let mut writer = raw.stream.try_clone().unwrap();
    let trickling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let still = std::sync::Arc::clone(&trickling);
    let trickler = std::thread::spawn(move || {
        while still.load(std::sync::atomic::Ordering::Relaxed) {
            let byte = h2::frame(h2::DATA, 0, 1, b"x");
            if std::io::Write::write_all(&mut writer, &byte).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let frames = raw.until(|f| f.stream == 1 && f.reset().is_some());
    trickling.store(false, std::sync::atomic::Ordering::Relaxed);
    trickler.join().unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6), "{waited:?}");
    assert_late_body_reset(&server, &mut raw, &frames, dir.path());
}

#[test]
fn a_body_held_back_by_its_window_is_not_late() {
    let dir = tempdir();
    let server = demo(
        dir.path(),
        &["--body-timeout", "1", "--body-min-rate", "0", "--http2-initial-stream-window", "65535"],
    );
    let mut raw = Raw::open(server.addr());
    // Once the connection's window is open wide (h2 opens it once its SETTINGS are acked)...
    raw.until(|f| f.kind == h2::WINDOW_UPDATE && f.stream == 0);
    // ...the stream's whole window, then nothing: an app that does not read keeps it closed,
    // so the client may not send, and is not late while the app takes longer than
    // body_timeout.
    raw.send(&post(1, "/sleep/2500"));
    let mut body = Vec::new();
    for len in [16_384, 16_384, 16_384, 16_383] {
        body.extend(h2::frame(h2::DATA, 0, 1, &vec![b'x'; len]));
    }
    raw.send(&body);
    let frames = raw.until(ended(1));
    let head = frames.iter().find(|f| f.stream == 1 && f.kind == h2::HEADERS);
    assert!(head.is_some_and(Frame::is_200), "answered, not reset: {frames:?}");
    assert_eq!(server.count("request body late"), 0);
}

/// Reads `stream`'s response as a slow client does, steadily: `step` bytes more of the
/// stream's window and the connection's every `every`, from a window of zero; the frames up to
/// the stream's end.
fn read_slowly(raw: &mut Raw, stream: u32, step: u32, every: Duration) -> Vec<Frame> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut writer = raw.stream.try_clone().unwrap();
    let reading = Arc::new(AtomicBool::new(true));
    let still = Arc::clone(&reading);
    let opener = std::thread::spawn(move || {
        while still.load(Ordering::Relaxed) {
            let mut more = h2::frame(h2::WINDOW_UPDATE, 0, stream, &step.to_be_bytes());
            more.extend(h2::frame(h2::WINDOW_UPDATE, 0, 0, &step.to_be_bytes()));
            if std::io::Write::write_all(&mut writer, &more).is_err() {
                break;
            }
            std::thread::sleep(every);
        }
    });
    let frames = raw.until(ended(stream));
    reading.store(false, Ordering::Relaxed);
    opener.join().unwrap();
    frames
}

/// The body bytes `frames` carry on `stream`; asserts the stream ended whole, not reset.
fn received_whole(frames: &[Frame], stream: u32) -> usize {
    let last = frames.last().unwrap();
    assert_eq!(last.reset(), None, "read steadily, not reset: {:?}", &frames[frames.len() - 3..]);
    frames
        .iter()
        .filter(|f| f.stream == stream && f.kind == h2::DATA)
        .map(|f| f.payload.len())
        .sum()
}

/// 40 KB/s, 4 KiB at a time: far below what reading a cached file or an app's `Full` body in one
/// piece within `send_timeout` (1 s) would take, and enough to read a piece of `max_send_buf`
/// (16 KiB, the most h2 is handed at once) within it.
const STEP: u32 = 4096;
const EVERY: Duration = Duration::from_millis(100);

#[test]
fn a_cached_file_read_slowly_but_steadily_is_not_reset() {
    let dir = tempdir();
    let server = server(dir.path());
    let file = dir.path().join("files/cached.bin");
    std::fs::write(&file, vec![b'z'; 300_000]).unwrap();
    // Files are cached once their ctime is 2 s old (see `a_cached_file_is_never_served_stale`
    // in `serving`): then one `Bytes` of 300 KB is the response's body.
    let changed = std::os::unix::fs::MetadataExt::ctime(&std::fs::metadata(&file).unwrap());
    let settled = std::time::UNIX_EPOCH + Duration::from_secs(changed as u64 + 3);
    while std::time::SystemTime::now() < settled {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut raw = Raw::open(server.addr());
    raw.send(&initial_window(0));
    raw.until(|f| f.kind == h2::SETTINGS && f.flags & 1 != 0);
    // Read once, whole, into the cache.
    raw.send(&get_opened(1, "/files/cached.bin", 300_000));
    raw.send(&h2::frame(h2::WINDOW_UPDATE, 0, 0, &300_000u32.to_be_bytes()));
    assert_eq!(received_whole(&raw.until(ended(1)), 1), 300_000);

    raw.send(&h2::get(3, "/files/cached.bin"));
    let frames = read_slowly(&mut raw, 3, STEP, EVERY);
    assert_eq!(received_whole(&frames, 3), 300_000);
    assert_eq!(server.count("client is not reading"), 0);
    let log = wait_lines(&dir.path().join("access.log"), 2);
    assert_eq!(log, ["OK [GET /files/cached.bin HTTP/2.0] 200"; 2], "complete");
}

#[test]
fn an_app_body_read_slowly_but_steadily_is_not_reset() {
    let dir = tempdir();
    // A stream window that takes the whole upload at once.
    let server =
        demo(dir.path(), &["--send-timeout", "1", "--http2-initial-stream-window", "1048576"]);
    let mut raw = Raw::open(server.addr());
    raw.send(&initial_window(0));
    raw.until(|f| f.kind == h2::WINDOW_UPDATE && f.stream == 0);
    // The demo's /echo answers the body it was sent in one `Full` body.
    raw.send(&post(1, "/echo"));
    let mut body = Vec::new();
    for (i, chunk) in [b'e'; 300_000].chunks(16_384).enumerate() {
        let last = (i + 1) * 16_384 >= 300_000;
        body.extend(h2::frame(h2::DATA, if last { h2::END_STREAM } else { 0 }, 1, chunk));
    }
    raw.send(&body);
    let frames = read_slowly(&mut raw, 1, STEP, EVERY);
    let head = frames.iter().find(|f| f.stream == 1 && f.kind == h2::HEADERS);
    assert!(head.is_some_and(Frame::is_200), "answered");
    assert_eq!(received_whole(&frames, 1), 300_000);
    assert_eq!(server.count("client is not reading"), 0);
    let log = wait_lines(&dir.path().join("access.log"), 1);
    assert_eq!(log, ["OK [POST /echo HTTP/2.0] 200"], "complete");
}

#[test]
fn a_client_that_stops_inside_a_frame_while_a_body_is_late_is_closed() {
    let dir = tempdir();
    let server = demo(dir.path(), &["--body-timeout", "1", "--body-min-rate", "0"]);
    let half_data = h2::frame(h2::DATA, 0, 1, &[b'x'; 100])[..9 + 50].to_vec();
    let part_of_a_head = h2::frame(h2::DATA, 0, 1, b"x")[..5].to_vec();
    for stop in [half_data, part_of_a_head] {
        let mut raw = Raw::open(server.addr());
        let started = Instant::now();
        raw.send(&post(1, "/echo"));
        raw.send(&h2::frame(h2::DATA, 0, 1, b"0123456789"));
        raw.send(&stop);
        // No frame boundary comes: no stream can be reset alone, and h2 can read nothing.
        // Read without a word back (`until_closed` acknowledges SETTINGS: bytes that would
        // complete the frame).
        let frames: Vec<Frame> = std::iter::from_fn(|| raw.read()).collect();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        assert!(!frames.iter().any(|f| f.stream == 1 && f.kind == h2::HEADERS), "{frames:?}");
    }
    assert!(server.count("stopped inside a frame or header block") >= 1);
    // The worker serves on.
    let mut other = Raw::open(server.addr());
    other.send(&h2::get(1, "/"));
    assert!(other.until(ended(1)).last().unwrap().reset().is_none());
}

#[test]
fn late_bodies_on_streams_refused_behind_a_stalled_response_leave_the_connection_be() {
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("files")).unwrap();
    // More than the sockets hold while the client does not read: h2's writes stall.
    std::fs::write(dir.path().join("files/big.bin"), vec![b'x'; 16 << 20]).unwrap();
    let config =
        write(dir.path(), "app.toml", "[[route]]\npath = \"/files/\"\nstatic = \"files\"\n");
    let server = demo(
        dir.path(),
        &[
            &config,
            "--body-timeout",
            "2",
            "--body-min-rate",
            "0",
            "--http2-max-concurrent-streams",
            "2",
        ],
    );
    let mut raw = Raw::open(server.addr());
    // Windows wide open: h2 writes the download until the sockets are full.
    raw.send(&initial_window(0x7fff_ffff));
    raw.send(&h2::frame(h2::WINDOW_UPDATE, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes()));
    raw.send(&h2::get(1, "/files/big.bin"));
    // Time for them to fill (the client cannot see it): h2's refusals below are then queued
    // behind the stalled download, and the wire still counts those streams' bodies as due.
    std::thread::sleep(Duration::from_millis(500));
    // Two streams that hold h2's two slots for 4 s; then uploads beyond them, refused.
    raw.send(&h2::get(3, "/sleep/4000"));
    raw.send(&h2::get(5, "/sleep/4000"));
    let uploads = [7, 9, 11];
    for stream in uploads {
        raw.send(&post(stream, "/echo"));
    }
    // Each body is late 2 s on, while the refusals still wait behind the download (h2 reads
    // nothing while it cannot write them); once the client reads, h2 reads again, and the
    // wire may reset the late bodies' streams before it has seen the refusals written (a
    // race: the unit test in `src/conn/http2/wire.rs` hands h2 that order for certain): that
    // must not take the connection with it.
    std::thread::sleep(Duration::from_millis(2500));
    let mut frames = raw.until(ended(1));
    let last = frames.last().unwrap();
    assert!(last.kind == h2::DATA && last.reset().is_none(), "the download completed: {last:?}");
    let left = std::cell::RefCell::new(vec![3, 5, 7, 9, 11]);
    frames.extend(raw.until(|f| {
        left.borrow_mut().retain(|&id| !ended(id)(f));
        left.borrow().is_empty()
    }));
    let goaway: Vec<_> = frames.iter().filter_map(Frame::goaway).collect();
    assert!(goaway.is_empty(), "{goaway:?}");
    let reset = |id| frames.iter().filter(|f| f.stream == id).find_map(Frame::reset);
    for stream in uploads {
        assert_eq!(reset(stream), Some(h2::REFUSED_STREAM), "refused: {frames:?}");
    }
    assert_eq!((reset(3), reset(5)), (None, None), "served");
    raw.send(&h2::get(13, "/"));
    let more = raw.until(ended(13));
    assert!(more.iter().all(|f| f.goaway().is_none()), "{more:?}");
    assert!(more.last().unwrap().reset().is_none(), "the connection serves on: {more:?}");
}
