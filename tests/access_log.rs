//! The access log on the real binary: one line per request whoever answered it, in each format;
//! custom atoms; errors in the format and the path; whole lines from several workers under
//! load; lines written within a second and when the server stops.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::http::Conn;
use common::{Server, WAIT, example, forkserve, tempdir, write};
use nix::sys::signal::Signal;

/// One line, as far as the tests read it.
#[derive(Debug, Default, Clone)]
struct Entry {
    client: String,
    request: String,
    status: String,
    bytes: String,
    /// `%(c)s` or json's `complete`; `None` where the format has none.
    complete: Option<bool>,
}

/// Reads a `combined` or `common` line.
fn parse_text(line: &str) -> Entry {
    let (client, rest) = line.split_once(' ').unwrap();
    assert!(rest.starts_with("- - ["), "{line}");
    let (_, rest) = rest.split_once("] \"").unwrap_or_else(|| panic!("{line}"));
    let (request, rest) = rest.split_once("\" ").unwrap_or_else(|| panic!("{line}"));
    let mut fields = rest.split(' ');
    let status = fields.next().unwrap().to_string();
    let bytes = fields.next().unwrap().to_string();
    Entry { client: client.into(), request: request.into(), status, bytes, complete: None }
}

/// A json field's value, as written (strings with their quotes removed).
fn json_field<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} in {line}"));
    let value = &line[at + key.len() + 3..];
    if let Some(s) = value.strip_prefix('"') {
        &s[..s.find('"').unwrap()]
    } else {
        &value[..value.find([',', '}']).unwrap()]
    }
}

fn parse_json(line: &str) -> Entry {
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    let f = |k| json_field(line, k).to_string();
    let request = match f("method").as_str() {
        "null" => "-".to_string(),
        m => format!("{m} {} {}", f("target"), f("protocol")),
    };
    Entry {
        client: f("client"),
        request,
        status: f("status"),
        bytes: f("bytes"),
        complete: Some(f("complete") == "true"),
    }
}

/// The custom format the tests use: `%(c)s` marks a cut response.
const CUSTOM: &str = r#"%(h)s %(c)s [%(r)s] %(s)s %(B)s %(D)s %(M)s %(L)s %(p)s %({X-Trace}i)s %({User-Agent}i)s %({Content-Type}o)s"#;

fn parse_custom(line: &str) -> Entry {
    let (client, rest) = line.split_once(' ').unwrap();
    let (completion, rest) = rest.split_once(" [").unwrap();
    let (request, rest) = rest.split_once("] ").unwrap();
    // The last field, a Content-Type, may hold spaces.
    let fields: Vec<_> = rest.splitn(9, ' ').collect();
    assert_eq!(fields.len(), 9, "{line}");
    let (micros, millis, secs): (u64, u64, f64) =
        (fields[2].parse().unwrap(), fields[3].parse().unwrap(), fields[4].parse().unwrap());
    assert_eq!(micros / 1000, millis, "{line}");
    assert!((secs - micros as f64 / 1e6).abs() < 1e-5, "{line}");
    assert!(fields[5].starts_with('<') && fields[5].ends_with('>'), "{line}");
    Entry {
        client: client.into(),
        request: request.into(),
        status: fields[0].into(),
        bytes: fields[1].into(),
        complete: Some(completion == "OK"),
    }
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file).unwrap_or_default().lines().map(str::to_string).collect()
}

/// Resets the connection (a close with `SO_LINGER` 0).
fn reset(stream: TcpStream) {
    let linger = nix::libc::linger { l_onoff: 1, l_linger: 0 };
    nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::Linger, &linger).unwrap();
    drop(stream);
}

fn raw(addr: SocketAddr, request: &[u8]) -> u16 {
    let mut conn = Conn::open(addr).unwrap();
    conn.send(request).unwrap();
    conn.read_response(false).unwrap().status
}

/// What one request should be logged as: its request line, status, body bytes (`None`:
/// some, not checked), whether it went out whole, and its client.
struct Expect {
    request: String,
    status: u16,
    bytes: Option<u64>,
    complete: bool,
    client: &'static str,
}

fn expect(request: &str, status: u16, bytes: Option<u64>, complete: bool) -> Expect {
    Expect { request: request.into(), status, bytes, complete, client: "127.0.0.1" }
}

/// Makes one request of every kind against a one-worker demo logging in `format`, stops it
/// gracefully, and checks that each request has exactly one line, with the right fields.
fn every_kind_once(format: &str, parse: fn(&str) -> Entry) {
    let dir = tempdir();
    let file = dir.path().join("access.log");
    let args = [
        "-w",
        "1",
        "-b",
        "127.0.0.1:0",
        "--access-logfile",
        file.to_str().unwrap(),
        "--access-logformat",
        format,
        "--max-body-size",
        "1000",
        "--header-timeout",
        "1",
        "--request-timeout",
        "1",
        "--limit-request-line",
        "200",
        "--limit-request-field-size",
        "200",
    ];
    let mut server = Server::start(&example("demo"), &args);
    let addr = server.addr();
    let mut want = Vec::new();

    // From a trusted proxy: the client it names.
    let status = raw(
        addr,
        b"GET /count?a HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.9\r\nUser-Agent: t/1\r\nX-Trace: abc\r\n\r\n",
    );
    assert_eq!(status, 200);
    want.push(Expect { client: "203.0.113.9", ..expect("GET /count?a HTTP/1.1", 200, None, true) });
    assert_eq!(raw(addr, b"GET /nowhere?x=1 HTTP/1.1\r\nHost: t\r\n\r\n"), 404);
    want.push(expect("GET /nowhere?x=1 HTTP/1.1", 404, Some(10), true));
    // The gate's refusals.
    let big = b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n";
    assert_eq!(raw(addr, big), 413);
    want.push(expect("POST /big HTTP/1.1", 413, None, true));
    assert_eq!(raw(addr, b"GET /late HTTP/1.1\r\nHost: t\r\n"), 408);
    want.push(expect("GET /late HTTP/1.1", 408, None, true));
    let long = format!("/{}", "l".repeat(300));
    assert_eq!(raw(addr, format!("GET {long} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()), 414);
    want.push(expect(&format!("GET {long} HTTP/1.1"), 414, None, true));
    let field = format!("GET /fields HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "f".repeat(300));
    assert_eq!(raw(addr, field.as_bytes()), 431);
    want.push(expect("GET /fields HTTP/1.1", 431, None, true));
    assert_eq!(raw(addr, b"GET /bad HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n"), 400);
    want.push(expect("GET /bad HTTP/1.1", 400, None, true));
    // The service stack's answers in the app's place.
    assert_eq!(raw(addr, b"GET /sleep/3000 HTTP/1.1\r\nHost: t\r\n\r\n"), 504);
    want.push(expect("GET /sleep/3000 HTTP/1.1", 504, Some(16), true));
    assert_eq!(raw(addr, b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\n"), 500);
    want.push(expect("GET /panic HTTP/1.1", 500, Some(22), true));
    // A client that stops sending in the middle of its body: the gate's 400 for it, written
    // (into the socket's buffer) before the server reads that it is gone.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n").unwrap();
    stream.write_all(&[b'x'; 40]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(stream);
    want.push(expect("POST /echo HTTP/1.1", 400, Some(12), true));
    // A response cut in the middle: the client reads its first line and goes away.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /drip/800 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert!(stream.read(&mut [0u8; 1024]).unwrap() > 0);
    stream.shutdown(Shutdown::Both).unwrap();
    drop(stream);
    want.push(expect("GET /drip/800 HTTP/1.1", 200, None, false));
    // A client that resets its connection before any response: nginx's 499, cut.
    let stream = TcpStream::connect(addr).unwrap();
    (&stream).write_all(b"GET /sleep/500 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    reset(stream);
    want.push(expect("GET /sleep/500 HTTP/1.1", 499, Some(0), false));
    // Let the cut requests end before the stop.
    std::thread::sleep(Duration::from_millis(1000));

    server.signal(Signal::SIGTERM);
    assert_eq!(server.exit_code(), 0);
    let got = lines(&file);
    assert_eq!(got.len(), want.len(), "one line per request:\n{}", got.join("\n"));
    for w in &want {
        let found: Vec<_> =
            got.iter().map(|l| (l, parse(l))).filter(|(_, e)| e.request == w.request).collect();
        assert_eq!(found.len(), 1, "{}: {got:#?}", w.request);
        let (line, e) = &found[0];
        assert_eq!(e.status, w.status.to_string(), "{line}");
        assert_eq!(e.client, w.client, "{line}");
        if let Some(bytes) = w.bytes {
            assert_eq!(e.bytes, bytes.to_string(), "{line}");
        }
        if let Some(complete) = e.complete {
            assert_eq!(complete, w.complete, "{line}");
        }
    }
    if format == CUSTOM {
        let first = got.iter().find(|l| l.contains("/count?a")).unwrap();
        assert!(first.ends_with(" abc t/1 -"), "header atoms: {first}");
        let timed_out = got.iter().find(|l| l.contains("/sleep/3000")).unwrap();
        assert!(timed_out.ends_with(" text/plain; charset=utf-8"), "{timed_out}");
        let refused = got.iter().find(|l| l.contains("/fields")).unwrap();
        assert!(refused.ends_with(" - - -"), "a refused head's headers are not read: {refused}");
    }
}

#[test]
fn every_request_has_one_line_in_combined() {
    every_kind_once("combined", parse_text);
}

#[test]
fn every_request_has_one_line_in_common() {
    every_kind_once("common", parse_text);
}

#[test]
fn every_request_has_one_line_in_json() {
    every_kind_once("json", parse_json);
}

#[test]
fn every_request_has_one_line_in_a_custom_format() {
    every_kind_once(CUSTOM, parse_custom);
}

#[test]
fn an_unknown_atom_is_an_error_at_file_line_col_and_as_a_flag() {
    let dir = tempdir();
    let sock = dir.path().join("sock");
    let text = format!(
        "[server]\nbind = [\"unix:{}\"]\n[log]\naccess_format = \"%(h)s %(zz)s\"\n",
        sock.display()
    );
    let config = write(dir.path(), "app.toml", &text);
    let mut server = Server::spawn(&forkserve(), &[&config]);
    let output = server.output();
    assert_eq!(server.exit_code(), 2, "{output}");
    let expected = format!("forkserve: error: {config}:4:17: ");
    assert!(output.starts_with(&expected), "{output}");
    assert!(output.contains("unknown atom `%(zz)s` at character 7"), "{output}");
    assert!(!sock.exists(), "nothing was bound");

    let mut server = Server::spawn(&forkserve(), &["--access-logformat", "%(zz)s"]);
    let output = server.output();
    assert_eq!(server.exit_code(), 2, "{output}");
    assert!(output.contains("--log-access-format"), "{output}");
    assert!(output.contains("unknown atom `%(zz)s`"), "{output}");
}

#[test]
fn a_log_file_that_cannot_be_opened_is_a_startup_error() {
    let dir = tempdir();
    let path = dir.path().join("missing").join("access.log");
    let args = ["-b", "127.0.0.1:0", "--access-logfile", path.to_str().unwrap()];
    let mut server = Server::spawn(&forkserve(), &args);
    let output = server.output();
    assert_eq!(server.exit_code(), 1, "{output}");
    assert!(output.contains("opening the access log"), "{output}");
    assert!(!output.contains("listening"), "nothing was bound: {output}");
}

#[test]
fn a_relative_path_in_the_file_is_relative_to_the_file() {
    let dir = tempdir();
    let config = write(dir.path(), "app.toml", "[log]\naccess = \"logs.txt\"\n");
    let server = Server::start(&forkserve(), &["-w", "1", "-b", "127.0.0.1:0", &config]);
    let status = raw(server.addr(), b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
    let file = dir.path().join("logs.txt");
    let found = common::wait_until(|| (!lines(&file).is_empty()).then(|| lines(&file)));
    let found = found.expect("a line within the wait");
    assert!(found[0].contains(&format!("\"GET /x HTTP/1.1\" {status} ")), "{found:?}");
}

#[test]
fn stdout_gets_whole_lines() {
    let mut server = Server::start(
        &example("demo"),
        &["-w", "1", "-b", "127.0.0.1:0", "--access-logfile", "-", "--access-logformat", "json"],
    );
    assert_eq!(raw(server.addr(), b"GET /stdout HTTP/1.1\r\nHost: t\r\n\r\n"), 404);
    server.signal(Signal::SIGTERM);
    let output = server.output();
    let found: Vec<_> = output.lines().filter(|l| l.contains("\"target\":\"/stdout\"")).collect();
    assert_eq!(found.len(), 1, "{output}");
    assert!(found[0].starts_with('{') && found[0].ends_with('}'), "{output}");
}

#[test]
fn lines_are_written_within_a_second_and_when_the_server_stops() {
    let dir = tempdir();
    let file = dir.path().join("access.log");
    let args = ["-w", "1", "-b", "127.0.0.1:0", "--access-logfile", file.to_str().unwrap()];
    let mut server = Server::start(&example("demo"), &args);
    let addr = server.addr();
    assert_eq!(raw(addr, b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n"), 404);
    let sent = Instant::now();
    while lines(&file).is_empty() {
        assert!(sent.elapsed() < WAIT);
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = sent.elapsed();
    assert!(took < Duration::from_millis(1300), "written after {took:?}");
    // Buffered, not written per line: one more request is not in the file at once.
    assert_eq!(raw(addr, b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n"), 404);
    let buffered = lines(&file).len() == 1;
    server.signal(Signal::SIGTERM);
    assert_eq!(server.exit_code(), 0);
    let all = lines(&file);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[1].contains("GET /second"), "{all:?}");
    // A tick may have come between the request and the check; nearly always it has not.
    if !buffered {
        eprintln!("the second line was written by a tick before the stop");
    }
}

#[test]
fn two_workers_under_load_write_whole_lines_and_lose_none() {
    let dir = tempdir();
    let file = dir.path().join("access.log");
    let args = [
        "-w",
        "2",
        "-b",
        "127.0.0.1:0",
        "--access-logfile",
        file.to_str().unwrap(),
        "--access-logformat",
        r#"%(p)s "%(r)s" %(s)s %(b)s end"#,
    ];
    let mut server = Server::start(&example("demo"), &args);
    let addr = server.addr();
    let (threads, per) = (8, 600);
    // Long targets, so that each worker fills its 64 KiB buffer many times.
    let pad = "p".repeat(150);
    std::thread::scope(|s| {
        for t in 0..threads {
            let pad = &pad;
            s.spawn(move || {
                let mut conn = Conn::open(addr).unwrap();
                for n in 0..per {
                    let req = format!("GET /t{t}/n{n}/{pad} HTTP/1.1\r\nHost: t\r\n\r\n");
                    conn.send(req.as_bytes()).unwrap();
                    assert_eq!(conn.read_response(false).unwrap().status, 404);
                }
            });
        }
    });
    server.signal(Signal::SIGTERM);
    assert_eq!(server.exit_code(), 0);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.ends_with('\n'));
    let mut seen = std::collections::BTreeSet::new();
    let mut pids = std::collections::BTreeSet::new();
    for line in text.lines() {
        let (pid, rest) = line.split_once(" \"GET /t").unwrap_or_else(|| panic!("torn: {line}"));
        assert!(pid.starts_with('<') && pid.ends_with('>'), "torn: {line}");
        let (path, tail) = rest.split_once(' ').unwrap();
        assert_eq!(tail, "HTTP/1.1\" 404 10 end", "torn: {line}");
        let (tn, tail) = path.split_once('/').unwrap();
        let (n, padding) = tail.split_once('/').unwrap();
        assert_eq!(padding, pad, "torn: {line}");
        assert!(seen.insert((tn.to_string(), n.to_string())), "twice: {line}");
        pids.insert(pid.to_string());
    }
    assert_eq!(seen.len(), threads * per, "every request once");
    assert!(!pids.is_empty());
}

#[test]
fn a_python_app_preloaded_in_a_mold_is_logged_too() {
    let dir = tempdir();
    let file = dir.path().join("access.log");
    // Relative to the server's directory (the tests run in the crate's), which the app's
    // `--chdir` leaves in the mold, before the workers fork from it.
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let up = "../".repeat(here.components().count() - 1);
    let relative = format!("{up}{}", file.to_str().unwrap().trim_start_matches('/'));
    let resolved = std::fs::canonicalize(here.join(&relative).parent().unwrap()).unwrap();
    assert_eq!(resolved, std::fs::canonicalize(dir.path()).unwrap());
    let extra =
        ["-w", "2", "--preload", "--access-logfile", &relative, "--access-logformat", "json"];
    let mut server = common::wsgi::start("behave:app", &extra);
    let addr = server.addr();
    for n in 0..20 {
        let status = raw(addr, format!("GET /count?n={n} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        assert_eq!(status, 200);
    }
    server.signal(Signal::SIGTERM);
    assert_eq!(server.exit_code(), 0);
    let got = lines(&file);
    assert_eq!(got.len(), 20, "{got:#?}");
    for n in 0..20 {
        let target = format!("\"target\":\"/count?n={n}\"");
        let line = got.iter().find(|l| l.contains(&target)).unwrap_or_else(|| panic!("{n}"));
        assert!(line.contains("\"status\":200,") && line.contains("\"complete\":true"), "{line}");
    }
}

#[test]
fn the_client_is_the_one_a_trusted_proxy_header_names() {
    let dir = tempdir();
    let file = dir.path().join("access.log");
    let args = [
        "-w",
        "1",
        "-b",
        "127.0.0.1:0",
        "--proxy-protocol",
        "--access-logfile",
        file.to_str().unwrap(),
    ];
    let mut server = Server::start(&example("demo"), &args);
    let addr = server.addr();
    let proxy = "PROXY TCP4 198.51.100.7 127.0.0.1 5000 80\r\n";
    let served = format!("{proxy}GET /served HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(raw(addr, served.as_bytes()), 404);
    // Refused by the gate: the connection's client all the same.
    let refused = format!("{proxy}GET /refused HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n");
    assert_eq!(raw(addr, refused.as_bytes()), 400);
    server.signal(Signal::SIGTERM);
    assert_eq!(server.exit_code(), 0);
    let got = lines(&file);
    assert_eq!(got.len(), 2, "{got:#?}");
    for (line, target) in got.iter().zip(["/served", "/refused"]) {
        let entry = parse_text(line);
        assert_eq!(entry.client, "198.51.100.7", "{line}");
        assert!(entry.request.contains(target), "{line}");
    }
}

#[test]
fn usr1_moves_every_worker_to_a_new_file() {
    let dir = tempdir();
    let file = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let args = ["-w", "2", "-b", "127.0.0.1:0", "--access-logfile", file.to_str().unwrap()];
    let mut server = Server::start(&example("demo"), &args);
    let addr = server.addr();
    let get = |n: usize| raw(addr, format!("GET /r{n} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    for n in 0..10 {
        assert_eq!(get(n), 404);
    }
    common::wait_until(|| (lines(&file).len() == 10).then_some(())).expect("10 lines");
    std::fs::rename(&file, &rotated).unwrap();
    server.signal(Signal::SIGUSR1);
    server.wait_for("usr1: the workers reopen the access log");
    // Each worker reopens in its signal handler: once none holds the renamed file open, every
    // line from now on goes to the new one.
    let workers = server.workers();
    assert_eq!(workers.len(), 2);
    common::wait_until(|| (!workers.iter().any(|&pid| holds(pid, &rotated))).then_some(()))
        .expect("every worker reopened the access log");
    for n in 10..20 {
        assert_eq!(get(n), 404);
    }
    server.signal(Signal::SIGTERM);
    assert_eq!(server.exit_code(), 0);
    let (old, new) = (lines(&rotated), lines(&file));
    assert_eq!((old.len(), new.len()), (10, 10), "{old:#?}\n{new:#?}");
    assert!(new.iter().all(|l| !l.contains("GET /r0 ")), "{new:#?}");
}

/// Whether process `pid` has `path` open.
fn holds(pid: i32, path: &std::path::Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
}
