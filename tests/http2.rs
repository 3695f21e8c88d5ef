//! HTTP/2 with prior knowledge (h2c) on the real binary: curl, the nghttp2 tools (`h2load`,
//! `nghttp`) and raw frames written by the tests (`common::h2`), for what no client sends.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::h2::{self, Frame, Raw};
use common::http::curl;
use common::{Server, WAIT, example, forkserve, tempdir, wait_lines, wait_until, write, wsgi};
use nix::sys::signal::Signal;

const LOCAL: &str = "127.0.0.1:0";

/// curl over HTTP/2 with prior knowledge.
fn h2c(server: &Server, path: &str, extra: &[&str]) -> (u16, String, String) {
    let url = format!("http://{}{path}", server.addr());
    let mut args = vec!["--http2-prior-knowledge"];
    args.extend_from_slice(extra);
    curl(&url, &args)
}

fn demo(extra: &[&str]) -> Server {
    let mut args = vec!["-w", "1", "-b", LOCAL, "--h2c"];
    args.extend_from_slice(extra);
    Server::start(&example("demo"), &args)
}

#[test]
fn h2c_is_told_by_its_preface_and_http1_is_unchanged() {
    let server = demo(&[]);
    let (status, version, body) = h2c(&server, "/", &[]);
    assert_eq!((status, version.as_str()), (200, "2"), "{body}");
    assert!(body.starts_with("hello from worker 1"), "{body}");
    let (status, version, _) = curl(&format!("http://{}/", server.addr()), &["--http1.1"]);
    assert_eq!((status, version.as_str()), (200, "1.1"), "HTTP/1 on the same port");
    let (status, version, _) = curl(&format!("http://{}/", server.addr()), &["--http1.0"]);
    assert_eq!((status, version.as_str()), (200, "1"), "curl writes 1.0 as 1");

    // Off by default: the preface is HTTP/1's to answer, and no SETTINGS frame comes back.
    let plain = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL]);
    let mut raw = Raw::open(plain.addr());
    let mut first = [0u8; 9];
    let n = std::io::Read::read(&mut raw.stream, &mut first).unwrap_or(0);
    assert!(n == 0 || first.starts_with(b"HTTP/1.1 "), "not HTTP/2: {:?}", &first[..n]);
    let (status, ..) = curl(&format!("http://{}/", plain.addr()), &["--http2-prior-knowledge"]);
    assert_eq!(status, 0, "no HTTP/2 without h2c");
}

#[test]
fn the_http_head_limits_apply_to_h2_requests() {
    let server = demo(&[
        "--limit-request-line",
        "100",
        "--limit-request-fields",
        "4",
        "--limit-request-field-size",
        "200",
        "--max-body-size",
        "10",
    ]);
    assert_eq!(h2c(&server, "/", &[]).0, 200);
    let long = format!("/{}", "a".repeat(100));
    assert_eq!(h2c(&server, &long, &[]).0, 414, "the request line, as HTTP/1 would write it");
    let field = format!("X-Long: {}", "b".repeat(200));
    assert_eq!(h2c(&server, "/", &["-H", &field]).0, 431, "one field too long");
    // curl sends user-agent and accept: with three more, five fields.
    let fields = ["-H", "a: 1", "-H", "b: 2", "-H", "c: 3"];
    assert_eq!(h2c(&server, "/", &fields).0, 431, "too many fields");
    let (status, _, body) = h2c(&server, "/echo", &["--data-binary", "0123456789"]);
    assert_eq!((status, body.as_str()), (200, "0123456789"), "a body at the limit");
    // Declared too long: 413 before the app. (Raw: curl 7.88 takes the RST_STREAM(NO_ERROR)
    // that ends a stream whose body is refused, which RFC 9113 §8.1 prescribes, for an error
    // when it comes before curl has sent the whole body.)
    let mut raw = Raw::open(server.addr());
    let head = h2::block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "localhost"),
        (":path", "/echo"),
        ("content-length", "11"),
    ]);
    raw.send(&h2::frame(h2::HEADERS, h2::END_HEADERS, 1, &head));
    raw.send(&h2::frame(h2::DATA, h2::END_STREAM, 1, b"0123456789X"));
    let frames = raw.until(|f| f.stream == 1 && f.kind == h2::DATA);
    let head = frames.iter().find(|f| f.stream == 1 && f.kind == h2::HEADERS).unwrap();
    assert!(!head.is_200());
    assert_eq!(frames.last().unwrap().payload, b"Payload Too Large\n");
    assert_eq!(h2c(&server, "/", &[]).0, 200, "the worker serves on");
}

#[test]
fn python_apps_see_h2_requests_as_http1_ones() {
    let server = wsgi::start("pep:app", &["--h2c"]);
    let addr = server.addr();
    let (status, version, body) = h2c(&server, "/environ/x?y=1", &[]);
    assert_eq!((status, version.as_str()), (200, "2"), "{body}");
    let env = wsgi::fields(&body);
    assert_eq!(env["SERVER_PROTOCOL"], "\"HTTP/2\"");
    assert_eq!(env["HTTP_HOST"], format!("\"{addr}\""), "Host from :authority");
    assert_eq!(env["SERVER_NAME"], "\"127.0.0.1\"");
    assert_eq!(env["PATH_INFO"], "\"/environ/x\"");
    assert_eq!(env["QUERY_STRING"], "\"y=1\"");
    assert_eq!(env["wsgi.url_scheme"], "\"http\"");
    let upload = "z".repeat(100_000);
    let (status, _, body) = h2c(&server, "/input", &["--data-binary", &upload]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(wsgi::fields(&body)["len"], "100000");
    let problems = h2c(&server, "/problems", &[]).2;
    assert!(problems.is_empty(), "PEP 3333 problems: {problems}");
}

/// Waits until the server's one worker has no request in flight and no connection open, as
/// `forkserve status` shows its scoreboard row.
fn wait_idle(server: &Server) {
    let pid = server.pid().to_string();
    let row = || {
        let out = Command::new(forkserve()).args(["status", "--pid", &pid, "--json"]).output();
        let status: serde_json::Value = serde_json::from_slice(&out.unwrap().stdout).unwrap();
        status["workers"][0].clone()
    };
    let idle = wait_until(|| {
        let w = row();
        (w["in_flight"] == 0 && w["connections"] == 0 && w["state"] == "idle").then_some(())
    });
    assert!(idle.is_some(), "the worker is still busy: {}", row());
}

#[test]
fn each_stream_is_one_request_end_event_and_one_access_log_line() {
    let dir = tempdir();
    let ends = dir.path().join("ends");
    let access = dir.path().join("access.log");
    let server = Server::start_with(
        &example("demo"),
        &["-w", "1", "-b", LOCAL, "--h2c", "--log-access", access.to_str().unwrap()],
        &[("DEMO_REQUEST_END_FILE", ends.to_str().unwrap())],
    );
    assert_eq!(h2c(&server, "/echo?q", &["--data-binary", "hello"]).0, 200);
    let event = &wait_lines(&ends, 1)[0];
    for field in [
        "by=App",
        "ending=Complete",
        "status=200",
        "method=POST",
        "target=/echo?q",
        "version=HTTP/2.0",
        "request_bytes=5",
        "response_bytes=5",
    ] {
        assert!(event.contains(field), "{field} in {event}");
    }
    let field = format!("X-Long: {}", "b".repeat(9000));
    assert_eq!(h2c(&server, "/", &["-H", &field]).0, 431);
    let refused = &wait_lines(&ends, 2)[1];
    assert!(refused.contains("by=Gate") && refused.contains("status=431"), "{refused}");
    assert!(refused.contains(" target=/ "), "in origin form, as HTTP/1's: {refused}");

    let Some(h2load) = h2::tool("h2load") else { return };
    let out = Command::new(h2load)
        .args(["-n", "100", "-c", "1", "-m", "10", &format!("http://{}/count", server.addr())])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("100 succeeded, 0 failed"), "{said}");
    let lines = wait_lines(&ends, 102);
    assert_eq!(lines.iter().filter(|l| l.contains("target=/count")).count(), 100);
    let log = wait_lines(&access, 102);
    let count_lines = log.iter().filter(|l| l.contains("\"GET /count HTTP/2.0\" 200 ")).count();
    assert_eq!(count_lines, 100, "{log:?}");
    assert!(log[0].contains("\"POST /echo?q HTTP/2.0\" 200 5 "), "{}", log[0]);
    assert!(log[1].contains("\"GET / HTTP/2.0\" 431 "), "{}", log[1]);
}

/// The `:status` of each stream `nghttp` fetched, in stream order, from its verbose output.
fn nghttp_statuses(said: &str) -> Vec<(u32, String)> {
    let mut found: Vec<(u32, String)> = said
        .lines()
        .filter_map(|l| {
            let rest = l.split("recv (stream_id=").nth(1)?;
            let (id, field) = rest.split_once(") ")?;
            let status = field.strip_prefix(":status: ")?;
            Some((id.parse().ok()?, status.trim().to_string()))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn request_timeout_answers_504_on_that_stream_only() {
    let Some(nghttp) = h2::tool("nghttp") else { return };
    let server = demo(&["--request-timeout", "1"]);
    let base = format!("http://{}", server.addr());
    // One connection, two streams at once: the slow one times out, the other is answered.
    let out = Command::new(nghttp)
        .args(["-nv", &format!("{base}/sleep/5000"), &format!("{base}/count")])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let statuses: Vec<String> = nghttp_statuses(&said).into_iter().map(|(_, s)| s).collect();
    assert_eq!(statuses, ["504", "200"], "{said}");
    assert_eq!(said.matches("send SETTINGS frame").count(), 2, "one connection (and its ack)");
}

#[test]
fn a_draining_worker_sends_goaway_and_finishes_its_open_streams() {
    for signal in [Signal::SIGHUP, Signal::SIGTERM] {
        let mut server = demo(&["--log-level", "debug", "--graceful-timeout", "20"]);
        let mut raw = Raw::open(server.addr());
        raw.send(&h2::get(1, "/sleep/1500"));
        // And a connection that goes silent: it will not answer the GOAWAY's PING.
        let mut silent = Raw::open(server.addr());
        assert_eq!(silent.read().map(|f| f.kind), Some(h2::SETTINGS), "accepted");
        server.wait_for("sleeping 1500 ms");
        let sent = Instant::now();
        server.signal(signal);
        let before = raw.until(|f| f.goaway().is_some());
        assert!(!before.iter().any(|f| f.stream == 1), "{signal}: nothing of the stream yet");
        let after = raw.until_closed();
        let head = after.iter().find(|f| f.stream == 1 && f.kind == h2::HEADERS);
        assert!(head.is_some_and(Frame::is_200), "{signal}: {after:?}");
        let last = after.iter().rfind(|f| f.stream == 1).unwrap();
        assert!(last.kind == h2::DATA && last.flags & h2::END_STREAM != 0, "{after:?}");
        assert!(sent.elapsed() >= Duration::from_millis(1000), "the stream ran its course");
        // The silent one, which has not read its GOAWAY, does not hold the worker until
        // graceful_timeout: it is closed a moment after the drain found nothing on it.
        if signal == Signal::SIGTERM {
            assert_eq!(server.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
        } else {
            server.wait_for("worker exited");
        }
        assert!(sent.elapsed() < Duration::from_secs(6), "{signal}: {:?}", sent.elapsed());
        let silent = silent.until_closed();
        assert!(silent.iter().any(|f| f.goaway().is_some()), "{signal}: {silent:?}");
    }
}

#[test]
fn reset_and_continuation_floods_end_only_their_connection() {
    let server = demo(&[]);
    let pid = h2c(&server, "/pid", &[]).2;

    // Rapid reset (CVE-2023-44487): streams opened and reset at once, in one burst.
    let mut raw = Raw::open(server.addr());
    let mut burst = Vec::new();
    for i in 0..5000u32 {
        let id = 2 * i + 1;
        burst.extend(h2::get(id, "/"));
        burst.extend(h2::frame(h2::RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    raw.try_send(&burst);
    let frames = raw.until(|f| f.goaway().is_some());
    let (_, code) = frames.last().unwrap().goaway().unwrap();
    assert_eq!(code, h2::ENHANCE_YOUR_CALM, "{:?}", frames.last());
    assert!(raw.until_closed().iter().all(|f| f.kind != h2::HEADERS), "no more streams served");

    // A CONTINUATION flood: one header block that never ends.
    let mut raw = Raw::open(server.addr());
    let head = h2::block(&[(":method", "GET"), (":scheme", "http"), (":path", "/")]);
    raw.send(&h2::frame(h2::HEADERS, h2::END_STREAM, 1, &head));
    let filler = h2::block(&[("x-filler", &"f".repeat(100))]);
    let mut flood = Vec::new();
    for _ in 0..20_000 {
        flood.extend(h2::frame(h2::CONTINUATION, 0, 1, &filler));
    }
    raw.try_send(&flood);
    let frames = raw.until(|f| f.goaway().is_some());
    let (_, code) = frames.last().unwrap().goaway().unwrap();
    assert_eq!(code, h2::ENHANCE_YOUR_CALM, "{:?}", frames.last());
    assert!(raw.until_closed().iter().all(|f| f.kind != h2::HEADERS));

    let started = Instant::now();
    assert_eq!(h2c(&server, "/pid", &[]).2, pid, "the same worker serves on");
    assert!(started.elapsed() < Duration::from_secs(2));
    wait_idle(&server);
}

#[test]
fn silent_and_idle_connections_end_with_goaway() {
    let server = demo(&["--header-timeout", "1", "--keepalive", "1"]);
    // No request at all: header_timeout.
    let started = Instant::now();
    let mut raw = Raw::open(server.addr());
    raw.until(|f| f.goaway() == Some((0, h2::NO_ERROR)));
    raw.until_closed();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(4), "{waited:?}");

    // One request, then nothing: keepalive, counted from the response.
    let mut raw = Raw::open(server.addr());
    raw.send(&h2::get(1, "/sleep/1500"));
    raw.until(|f| f.stream == 1 && f.flags & h2::END_STREAM != 0);
    let answered = Instant::now();
    let rest = raw.until_closed();
    assert!(rest.iter().any(|f| f.goaway() == Some((1, h2::NO_ERROR))), "{rest:?}");
    let idle = answered.elapsed();
    assert!(idle >= Duration::from_millis(900) && idle < Duration::from_secs(4), "{idle:?}");
}

#[test]
fn the_settings_frame_carries_the_http2_table_and_extra_streams_are_refused() {
    let server = demo(&[
        "--http2-max-concurrent-streams",
        "3",
        "--http2-initial-stream-window",
        "100000",
        "--limit-request-fields",
        "10",
        "--limit-request-field-size",
        "1000",
    ]);
    let mut raw = Raw::open(server.addr());
    let settings = raw.until(|f| f.kind == h2::SETTINGS && f.flags & 1 == 0).pop().unwrap();
    let values = settings.settings();
    for want in [(3, 3), (4, 100_000), (6, 10 * (1000 + 32))] {
        assert!(values.contains(&want), "{want:?} in {values:?}");
    }
    raw.until(|f| f.kind == h2::SETTINGS && f.flags & 1 != 0);
    let mut four = Vec::new();
    for id in [1, 3, 5, 7] {
        four.extend(h2::get(id, "/sleep/1000"));
    }
    raw.send(&four);
    let frames = raw.until(|f| f.stream == 7 && f.reset().is_some());
    assert_eq!(frames.last().unwrap().reset(), Some(h2::REFUSED_STREAM));
    let done = raw.until(|f| f.stream == 5 && f.flags & h2::END_STREAM != 0);
    let served = frames.iter().chain(&done).filter(|f| f.kind == h2::HEADERS && f.is_200());
    assert_eq!(served.count(), 3, "the first three are served");
}

#[test]
fn h2load_streams_are_all_served() {
    let Some(h2load) = h2::tool("h2load") else { return };
    let server = demo(&[]);
    let run = |url: String, args: &[&str]| {
        let out = Command::new(&h2load).args(args).arg(url).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = run(format!("http://{}/", server.addr()), &["-n", "2000", "-c", "4", "-m", "100"]);
    assert!(said.contains("2000 succeeded, 0 failed"), "{said}");
    wait_idle(&server);

    // A Python app with two threads: 50 streams at once queue for them.
    let python = wsgi::start("pep:app", &["--h2c", "--threads", "2"]);
    let said =
        run(format!("http://{}/hello", python.addr()), &["-n", "200", "-c", "2", "-m", "50"]);
    assert!(said.contains("200 succeeded, 0 failed"), "{said}");
}

#[test]
fn a_body_over_max_body_size_without_content_length_ends_its_connection() {
    let dir = tempdir();
    let access = dir.path().join("access.log");
    let log = ["--log-access", access.to_str().unwrap()];
    let server = demo(&[&["--max-body-size", "1000", "--log-level", "debug"][..], &log].concat());
    let post = |stream| {
        let head = h2::block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "localhost"),
            (":path", "/echo"),
        ]);
        h2::frame(h2::HEADERS, h2::END_HEADERS, stream, &head)
    };
    // Within the limit, in two frames: echoed.
    let mut raw = Raw::open(server.addr());
    raw.send(&post(1));
    raw.send(&h2::frame(h2::DATA, 0, 1, &[b'a'; 600]));
    raw.send(&h2::frame(h2::DATA, h2::END_STREAM, 1, &[b'b'; 400]));
    let frames = raw.until(|f| f.stream == 1 && f.flags & h2::END_STREAM != 0);
    let echoed: usize = frames.iter().filter(|f| f.kind == h2::DATA).map(|f| f.payload.len()).sum();
    assert_eq!(echoed, 1000);
    // One byte more: the connection ends before the app reads it.
    raw.send(&post(3));
    raw.send(&h2::frame(h2::DATA, 0, 3, &[b'a'; 600]));
    raw.try_send(&h2::frame(h2::DATA, 0, 3, &[b'b'; 401]));
    let rest = raw.until_closed();
    assert!(!rest.iter().any(|f| f.stream == 3 && f.kind == h2::DATA), "{rest:?}");
    assert!(rest.iter().any(|f| f.goaway().is_some()), "GOAWAY first: {rest:?}");
    server.wait_for("stream 3's request body is over max_body_size");
    // Refused as HTTP/1's gate refuses such a body, not the app's answer to a body cut short.
    let lines = wait_lines(&access, 2);
    assert!(lines[1].contains("\"POST /echo HTTP/2.0\" 413 "), "{lines:?}");
    assert_eq!(h2c(&server, "/", &[]).0, 200, "the worker serves on");
}

#[test]
fn streams_reset_at_the_clients_pace_beyond_the_budget_end_the_connection() {
    let server = demo(&["--log-level", "debug"]);
    let mut raw = Raw::open(server.addr());
    let started = Instant::now();
    // Each stream reaches its handler (h2's own limit counts only streams reset before):
    // 200 per 10 s are allowed, at twice the 100 streams a client may have open.
    let mut sent = 0;
    for i in 0..300u32 {
        let id = 2 * i + 1;
        if !raw.try_send(&h2::get(id, "/sleep/1000")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        if !raw.try_send(&h2::frame(h2::RST_STREAM, 0, id, &8u32.to_be_bytes())) {
            break;
        }
        sent += 1;
    }
    let rest = raw.until_closed();
    let line = server.wait_for("the client reset too many streams");
    assert!(line.contains("WARN") && line.contains("http/2 flood from 127.0.0.1:"), "{line}");
    let goaway = rest.iter().rev().find_map(Frame::goaway);
    assert_eq!(goaway.map(|(_, code)| code), Some(h2::ENHANCE_YOUR_CALM), "{:?}", rest.last());
    assert!(sent > 200, "{sent} resets before the end");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(server.count("http/2 flood from"), 1, "one line");
    assert_eq!(h2c(&server, "/", &[]).0, 200, "the worker serves on");
    // The handlers of the reset streams were cancelled, not left running.
    wait_idle(&server);
}

#[test]
fn a_header_block_that_drips_is_closed_at_header_timeout() {
    let server = demo(&["--header-timeout", "1", "--keepalive", "30"]);
    let mut raw = Raw::open(server.addr());
    raw.send(&h2::get(1, "/"));
    raw.until(|f| f.stream == 1 && f.flags & h2::END_STREAM != 0);
    let head = h2::block(&[(":method", "GET"), (":scheme", "http"), (":path", "/")]);
    raw.send(&h2::frame(h2::HEADERS, h2::END_STREAM, 3, &head));
    let started = Instant::now();
    let filler = h2::block(&[("x-drip", "d")]);
    while raw.try_send(&h2::frame(h2::CONTINUATION, 0, 3, &filler)) {
        assert!(started.elapsed() < Duration::from_secs(5), "still open");
        std::thread::sleep(Duration::from_millis(100));
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert_eq!(h2c(&server, "/", &[]).0, 200, "the worker serves on");
}

#[test]
fn a_client_that_does_not_read_is_closed_at_send_timeout() {
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("files")).unwrap();
    std::fs::write(dir.path().join("files/big.bin"), vec![b'x'; 32 << 20]).unwrap();
    let config = write(
        dir.path(),
        "app.toml",
        "[server]\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n[http]\nh2c = true\nsend_timeout = 1\n\
         [log]\nlevel = \"debug\"\n[[route]]\npath = \"/files/\"\nstatic = \"files\"\n",
    );
    let server = Server::start(&forkserve(), &[&config]);
    let mut raw = Raw::open(server.addr());
    // The largest windows, so that only the socket holds the response back.
    let mut open = h2::frame(h2::SETTINGS, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]);
    open.extend(h2::frame(h2::WINDOW_UPDATE, 0, 0, &(0x7fff_ffff - 65_535u32).to_be_bytes()));
    open.extend(h2::get(1, "/files/big.bin"));
    raw.send(&open);
    let started = Instant::now();
    server.wait_for("send_timeout reached");
    assert!(started.elapsed() >= Duration::from_secs(1));
    // What the socket held arrives, then the end: not the whole file.
    let frames = raw.until_closed();
    let got: usize = frames.iter().filter(|f| f.kind == h2::DATA).map(|f| f.payload.len()).sum();
    assert!(got < 32 << 20, "{got} bytes");
    assert_eq!(h2c(&server, "/files/big.bin", &["-o", "/dev/null"]).0, 200, "the worker serves on");
}
