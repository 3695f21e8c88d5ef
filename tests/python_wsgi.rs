//! PEP 3333 on the real binary: the app of `tests/python/wsgi/pep.py` runs inside
//! `wsgiref.validate.validator`, and every test ends by checking that the validator objected to
//! nothing (`/problems` empty, no `WSGI-PROBLEM` line in the log) besides what it checks itself.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::http::{self, Conn};
use common::wsgi::{self, adler32, fields};
use common::{Server, WAIT, forkserve, tempdir, wait_until};

/// Asserts that the validator saw nothing wrong in this server's worker.
fn assert_valid(server: &Server, addr: SocketAddr) {
    let problems = http::get(addr, "/problems").unwrap();
    assert_eq!(problems.status, 200);
    assert_eq!(problems.text(), "", "wsgiref.validate objected");
    let logged: Vec<String> =
        server.logs().into_iter().filter(|l| l.contains("WSGI-PROBLEM")).collect();
    assert!(logged.is_empty(), "wsgiref.validate objected: {logged:#?}");
}

fn start_pep(extra: &[&str]) -> (Server, SocketAddr) {
    let server = wsgi::start("pep:app", extra);
    let addr = server.addr();
    (server, addr)
}

/// The pep app under `/prefix/` and at `/`, from a config file, with `extra` flags.
fn start_prefixed(dir: &Path, extra: &[&str]) -> (Server, SocketAddr) {
    let config = common::write(
        dir,
        "pep.toml",
        &format!(
            "[server]\nworkers = 1\nbind = [\"127.0.0.1:0\"]\n\n[python]\nchdir = {:?}\n\
             threads = 2\n\n[[route]]\npath = \"/prefix/\"\nwsgi = \"pep:app\"\n\n\
             [[route]]\npath = \"/\"\nwsgi = \"pep:app\"\n",
            wsgi::apps().to_str().unwrap()
        ),
    );
    let mut args = vec![config.as_str()];
    args.extend_from_slice(extra);
    let server = Server::start_with(&forkserve(), &args, wsgi::ENV);
    let addr = server.addr();
    (server, addr)
}

/// The environ the app saw for `request`, sent on a connection whose local port is returned.
fn environ_of(
    addr: SocketAddr,
    request: &str,
) -> (std::collections::BTreeMap<String, String>, u16) {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let port = stream.local_addr().unwrap().port();
    let mut conn = Conn::over(stream);
    conn.send(request.as_bytes()).unwrap();
    let response = conn.read_response(false).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    (fields(&response.text()), port)
}

#[test]
fn the_environ_has_every_cgi_variable_split_at_the_route_prefix() {
    let dir = tempdir();
    let (server, addr) = start_prefixed(dir.path(), &[]);
    // `é` sent as UTF-8 and percent-encoded: PATH_INFO has its two bytes as two Latin-1 chars.
    let (env, port) = environ_of(
        addr,
        "GET /prefix/environ/caf%C3%A9?a=1&b=%20x HTTP/1.1\r\nHost: example.test:8123\r\n\
         X-Rep: one\r\nX-Rep: two\r\nCookie: a=1\r\nCookie: b=2\r\nX_Under: sneaky\r\n\
         X-Latin: caf\u{e9}\r\n\r\n",
    );
    let expect = [
        ("REQUEST_METHOD", "\"GET\""),
        ("SCRIPT_NAME", "\"/prefix\""),
        ("PATH_INFO", "\"/environ/caf\\u00c3\\u00a9\""),
        ("QUERY_STRING", "\"a=1&b=%20x\""),
        ("SERVER_NAME", "\"example.test\""),
        ("SERVER_PORT", "\"8123\""),
        ("SERVER_PROTOCOL", "\"HTTP/1.1\""),
        ("REMOTE_ADDR", "\"127.0.0.1\""),
        ("HTTP_X_REP", "\"one, two\""),
        ("HTTP_COOKIE", "\"a=1; b=2\""),
        ("HTTP_HOST", "\"example.test:8123\""),
        // The header's UTF-8 bytes, each a Latin-1 character.
        ("HTTP_X_LATIN", "\"caf\\u00c3\\u00a9\""),
        ("wsgi.url_scheme", "\"http\""),
        ("wsgi.version", "[1, 0]"),
        ("wsgi.run_once", "false"),
        ("has_file_wrapper", "true"),
    ];
    for (key, value) in expect {
        assert_eq!(env.get(key).map(String::as_str), Some(value), "{key} in {env:#?}");
    }
    assert_eq!(env.get("REMOTE_PORT"), Some(&format!("\"{port}\"")));
    // A field with `_` could pass for one with `-` that a proxy vouched for: dropped.
    assert!(!env.keys().any(|k| k.contains("UNDER")), "{env:#?}");
    for absent in ["CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"] {
        assert!(!env.contains_key(absent), "{absent} on a GET without a body: {env:#?}");
    }

    // At "/", SCRIPT_NAME is empty and PATH_INFO the whole path; a POST has its body fields;
    // an HTTP/1.0 request says so.
    let body = "k=v&x=y";
    let (env, _) = environ_of(
        addr,
        &format!(
            "POST /environ/x HTTP/1.0\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(env["SCRIPT_NAME"], "\"\"");
    assert_eq!(env["PATH_INFO"], "\"/environ/x\"");
    assert_eq!(env["REQUEST_METHOD"], "\"POST\"");
    assert_eq!(env["CONTENT_TYPE"], "\"application/x-www-form-urlencoded\"");
    assert_eq!(env["CONTENT_LENGTH"], format!("\"{}\"", body.len()));
    assert_eq!(env["SERVER_PROTOCOL"], "\"HTTP/1.0\"");
    assert_eq!((env["SERVER_NAME"].as_str(), env["SERVER_PORT"].as_str()), ("\"h\"", "\"80\""));
    assert!(!env.contains_key("HTTP_CONTENT_TYPE") && !env.contains_key("HTTP_CONTENT_LENGTH"));

    // The prefix itself: SCRIPT_NAME without its slash, PATH_INFO the slash.
    let (env, _) = environ_of(addr, "GET /prefix/ HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((env["SCRIPT_NAME"].as_str(), env["PATH_INFO"].as_str()), ("\"/prefix\"", "\"/\""));
    assert_valid(&server, addr);
}

#[test]
fn the_url_scheme_comes_from_a_trusted_proxy_only() {
    let request = "GET /environ HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\n\
                   X-Forwarded-For: 203.0.113.7\r\n\r\n";
    let (server, addr) = start_pep(&["-w", "1"]);
    let (env, _) = environ_of(addr, request);
    assert_eq!(env["wsgi.url_scheme"], "\"https\"");
    assert_eq!(env["SERVER_PORT"], "\"443\"", "the default port of the scheme");
    // The client the proxy names; its port is not known.
    assert_eq!(env["REMOTE_ADDR"], "\"203.0.113.7\"");
    assert!(!env.contains_key("REMOTE_PORT"), "{env:#?}");
    assert_valid(&server, addr);
    drop(server);

    let (server, addr) = start_pep(&["-w", "1", "--forwarded-allow-ips", "10.9.9.9"]);
    let (env, _) = environ_of(addr, request);
    assert_eq!(env["wsgi.url_scheme"], "\"http\"");
    assert_eq!(env["REMOTE_ADDR"], "\"127.0.0.1\"");
    assert_valid(&server, addr);
}

#[test]
fn multithread_and_multiprocess_say_how_the_server_runs() {
    for (flags, multithread, multiprocess) in [
        (["-w", "1", "--threads", "1"], "false", "false"),
        (["-w", "2", "--threads", "1"], "false", "true"),
        (["-w", "1", "--threads", "3"], "true", "false"),
    ] {
        let (server, addr) = start_pep(&flags);
        let env = fields(&http::get(addr, "/environ").unwrap().text());
        assert_eq!(env["wsgi.multithread"], multithread, "{flags:?}");
        assert_eq!(env["wsgi.multiprocess"], multiprocess, "{flags:?}");
        assert_eq!(env["wsgi.run_once"], "false");
        assert_valid(&server, addr);
    }
}

/// POSTs `body` to `/input?{query}` (chunked if asked) and returns what the app read.
fn read_back(
    addr: SocketAddr,
    query: &str,
    body: &[u8],
    chunked: bool,
) -> std::collections::BTreeMap<String, String> {
    let mut conn = Conn::open(addr).unwrap();
    if chunked {
        let mut raw = format!(
            "POST /input?{query} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        for piece in body.chunks(7).chain(std::iter::once(&[][..])) {
            raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            raw.extend_from_slice(piece);
            raw.extend_from_slice(b"\r\n");
        }
        conn.send(&raw).unwrap();
    } else {
        let head = format!(
            "POST /input?{query} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.send(head.as_bytes()).unwrap();
        conn.send(body).unwrap();
    }
    let response = conn.read_response(false).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    fields(&response.text())
}

#[test]
fn wsgi_input_reads_as_a_file_does() {
    let (server, addr) = start_pep(&["-w", "1"]);
    let body = b"line1\nline2\n\nline4 without a newline";
    let sum = adler32(body).to_string();
    // (query, pieces the app read, its first pieces)
    let cases: &[(&str, usize, &str)] = &[
        ("mode=read&n=3", 12, r#"["lin", "e1\n", "lin", "e2\n"]"#),
        ("mode=read&n=100000", 1, r#"["line1\nline2\n\nline4 without a newline"]"#),
        ("mode=readline", 4, r#"["line1\n", "line2\n", "\n", "line4 without a newline"]"#),
        ("mode=readline&size=4", 11, r#"["line", "1\n", "line", "2\n"]"#),
        ("mode=readlines", 4, r#"["line1\n", "line2\n", "\n", "line4 without a newline"]"#),
        ("mode=iter", 4, r#"["line1\n", "line2\n", "\n", "line4 without a newline"]"#),
    ];
    for chunked in [false, true] {
        for (query, count, first) in cases {
            let got = read_back(addr, query, body, chunked);
            let what = format!("{query} (chunked: {chunked}): {got:#?}");
            assert_eq!(got["len"], body.len().to_string(), "{what}");
            assert_eq!(got["adler32"], sum, "{what}");
            assert_eq!(got["count"], count.to_string(), "{what}");
            assert_eq!(got["first"], *first, "{what}");
            assert_eq!(got["CONTENT_LENGTH"], format!("\"{}\"", body.len()), "{what}");
        }
    }
    // readlines(hint) stops once the lines read reach the hint, as io's does.
    let got = read_back(addr, "mode=readlines&hint=7", body, false);
    assert_eq!((got["count"].as_str(), got["len"].as_str()), ("2", "12"), "{got:#?}");
    assert_valid(&server, addr);
}

#[test]
fn a_body_over_max_body_size_is_refused_before_the_app() {
    let (server, addr) = start_pep(&["-w", "1", "--max-body-size", "1000"]);
    let body = vec![b'z'; 2000];
    for chunked in [false, true] {
        let mut conn = Conn::open(addr).unwrap();
        let head = if chunked {
            "POST /input HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n"
                .to_string()
        } else {
            format!("POST /input HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", body.len())
        };
        conn.send(head.as_bytes()).unwrap();
        let _ = conn.send(&body);
        let response = conn.read_response(false).unwrap();
        assert_eq!(response.status, 413, "chunked: {chunked}: {}", response.text());
    }
    // Exactly the limit is served.
    assert_eq!(read_back(addr, "mode=read&n=64", &body[..1000], false)["len"], "1000");
    assert_valid(&server, addr);
}

#[test]
fn a_large_upload_is_spooled_not_held_in_the_workers_memory() {
    let (server, addr) = start_pep(&["-w", "1"]);
    let before: u64 =
        read_back(addr, "mode=read&n=65536", b"warm", false)["VmHWM"].parse().unwrap();
    let body: Vec<u8> =
        (0..30_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    for chunked in [false, true] {
        let got = read_back(addr, "mode=read&n=65536", &body, chunked);
        assert_eq!(got["len"], body.len().to_string());
        assert_eq!(got["adler32"], adler32(&body).to_string());
        let peak: u64 = got["VmHWM"].parse().unwrap();
        // 30 MB arrived; the worker's peak grew by far less (the body went to a file).
        assert!(
            peak < before + 10 * 1024,
            "the worker's peak RSS went from {before} KiB to {peak} KiB for a 30 MB body \
             (chunked: {chunked})"
        );
    }
    assert_valid(&server, addr);
}

#[test]
fn wsgi_errors_lines_reach_the_log() {
    let (server, addr) = start_pep(&["-w", "1"]);
    assert_eq!(http::get(addr, "/errors").unwrap().text(), "logged");
    for line in [
        "errors-line-one",
        "errors-partial errors-completed",
        "errors-many-1",
        "errors-many-2",
        "errors-flushed",
    ] {
        server.wait_for(line);
    }
    assert_valid(&server, addr);
}

#[test]
fn start_response_with_exc_info_replaces_the_head_before_it_is_sent_and_reraises_after() {
    let (server, addr) = start_pep(&["-w", "1"]);
    let before = http::get(addr, "/exc-before").unwrap();
    assert_eq!(before.status, 503);
    assert_eq!(before.header("x-second"), Some("yes"));
    assert_eq!(before.header("x-first"), None, "the first head was replaced");
    assert_eq!(before.text(), "replaced");

    // After the head is sent, start_response re-raises: the response is cut, not completed.
    let mut conn = Conn::open(addr).unwrap();
    conn.send_get("/exc-after").unwrap();
    let cut = conn.read_response(false);
    assert!(cut.is_err(), "a response that failed mid-way must not look complete: {cut:?}");
    server.wait_for("exc-after: start_response re-raised ValueError('after-head')");
    server.wait_for("ValueError: after-head");
    assert_valid(&server, addr);
}

#[test]
fn the_write_callable_sends_before_the_iterable() {
    let (server, addr) = start_pep(&["-w", "1"]);
    let r = http::get(addr, "/write").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "one,two,three"));
    assert_valid(&server, addr);
}

#[test]
fn a_streamed_response_arrives_as_it_is_yielded_without_blocking_others() {
    let (server, addr) = start_pep(&["-w", "1", "--threads", "2"]);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let sent = Instant::now();
    stream
        .write_all(b"GET /stream?n=4&gap=0.4 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (mut seen, mut arrivals, mut buf) = (Vec::new(), Vec::new(), [0u8; 4096]);
    let mut other = None;
    while arrivals.len() < 4 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        while arrivals.len() < 4 && text.contains(&format!("piece-{};", arrivals.len())) {
            arrivals.push(sent.elapsed());
        }
        if other.is_none() && !arrivals.is_empty() {
            // Meanwhile, another request is answered at once.
            let asked = Instant::now();
            assert_eq!(http::get(addr, "/hello").unwrap().status, 200);
            other = Some(asked.elapsed());
        }
    }
    assert!(arrivals[0] < Duration::from_millis(300), "first piece late: {arrivals:?}");
    for pair in arrivals.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(300), "pieces bunched: {arrivals:?}");
    }
    assert!(other.unwrap() < Duration::from_millis(300), "others waited: {other:?}");
    assert_valid(&server, addr);
}

/// PEP 3333 ("Buffering and Streaming"): a server must not delay the transmission of any
/// block, also when the app declared a small `Content-Length` and yields its body in pieces.
#[test]
fn a_streamed_response_with_a_declared_length_is_not_held_back_until_complete() {
    let (server, addr) = start_pep(&["-w", "1"]);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let sent = Instant::now();
    stream
        .write_all(
            b"GET /stream?n=3&gap=1&declared=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
    while !String::from_utf8_lossy(&seen).contains("piece-0;") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let first = sent.elapsed();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    seen.extend_from_slice(&rest);
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("Content-Length: 24") || text.contains("content-length: 24"), "{text}");
    assert!(text.ends_with("piece-0;piece-1;piece-2;"), "{text}");
    assert!(first < Duration::from_millis(500), "the first piece waited for the last: {first:?}");
    assert_valid(&server, addr);
}

/// A body shorter than the Content-Length the app declared: the client gets every byte the app
/// gave, then the connection closes (so that it sees the response is incomplete, and never
/// reads the next response as the rest of this one). Whole (a list) or streamed, small (sent
/// with its head) or large.
#[test]
fn a_body_shorter_than_declared_arrives_whole_then_the_connection_closes() {
    let server = wsgi::start("behave:app", &["-w", "1"]);
    for query in
        ["whole=1", "", "whole=1&pieces=10000&declared=200000", "pieces=10000&declared=200000"]
    {
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let request = format!("GET /short?{query} HTTP/1.1\r\nHost: h\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut seen = Vec::new();
        // Ends (EOF or reset) within WAIT: a keep-alive connection would time out instead.
        let _ = stream.read_to_end(&mut seen);
        let text = String::from_utf8_lossy(&seen);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let pieces = if query.contains("pieces=10000") { 10000 } else { 3 };
        let expected: String = (0..pieces).map(|i| format!("piece-{i};")).collect();
        assert_eq!(body, expected, "{query}: every byte the app gave, then the end");
    }
}

fn closes(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file).unwrap_or_default().lines().map(String::from).collect()
}

#[test]
fn close_is_called_on_every_path() {
    let dir = tempdir();
    let log = dir.path().join("closes");
    let env = format!("CLOSE_LOG={}", log.display());
    let (server, addr) = start_pep(&["-w", "1", "--threads", "2", "--env", &env]);
    let wait_close = |tag: &str| {
        wait_until(|| closes(&log).contains(&tag.to_string()).then_some(()))
            .unwrap_or_else(|| panic!("close() not called for {tag}: {:?}", closes(&log)));
    };

    let r = http::get(addr, "/close?tag=normal").unwrap();
    assert_eq!(r.text(), "item-1\nitem-2\nitem-3\n");
    wait_close("normal");

    let mut conn = Conn::open(addr).unwrap();
    conn.send_get("/close?tag=raised&mode=raise").unwrap();
    assert!(conn.read_response(false).is_err(), "a failed stream must be cut");
    wait_close("raised");

    let r =
        http::raw(addr, b"HEAD /close?tag=head&mode=forever HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_eq!((r.status, r.body.len()), (200, 0));
    wait_close("head");

    // A client that leaves mid-stream: the app's next chunk finds it gone, and it is closed.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /close?tag=gone&mode=forever HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    assert!(stream.read(&mut buf).unwrap() > 0);
    drop(stream);
    wait_close("gone");
    assert_eq!(closes(&log).len(), 4, "each closed once: {:?}", closes(&log));
    assert_valid(&server, addr);
}

#[test]
fn head_sends_no_body_and_the_connection_goes_on() {
    let (server, addr) = start_pep(&["-w", "1"]);
    let mut conn = Conn::open(addr).unwrap();
    // write() answers a HEAD as it does a GET, without raising.
    for path in ["/hello", "/stream?n=3&gap=0.1", "/write"] {
        conn.send(format!("HEAD {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes()).unwrap();
        let head = conn.read_response(true).unwrap();
        assert_eq!(head.status, 200, "{path}");
        // The next response on the connection parses: no body bytes were left in between.
        let next = conn.get("/hello").unwrap();
        assert_eq!(
            (next.status, next.text().as_str()),
            (200, "hello, world\n"),
            "after HEAD {path}"
        );
    }
    let head = http::raw(addr, b"HEAD /hello HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_eq!(head.header("content-length"), Some("13"), "HEAD keeps the length of GET");
    // Answered requests are not ones whose client left: neither a HEAD, nor a response (here
    // streamed, as the validator makes every one) whose Content-Length was all sent before the
    // app's iterable ended.
    for _ in 0..20 {
        assert_eq!(Conn::open(addr).unwrap().get("/hello").unwrap().status, 200);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let noise: Vec<String> =
        server.logs().into_iter().filter(|l| l.contains("no longer wanted")).collect();
    assert!(noise.is_empty(), "answered requests reported as abandoned: {noise:#?}");
    assert_valid(&server, addr);
}

#[test]
fn an_exception_answers_500_with_the_traceback_logged_and_the_worker_carries_on() {
    let (server, addr) = start_pep(&["-w", "1"]);
    let pid = wsgi::pid(addr);
    let r = http::get(addr, "/boom").unwrap();
    assert_eq!(r.status, 500);
    let line = server.wait_for("GET /boom: the app raised an exception");
    assert!(line.contains("GET /boom"), "{line}");
    server.wait_for("RuntimeError: boom-marker");
    server.wait_for("in inner");
    assert_eq!(wsgi::pid(addr), pid, "the same worker serves on");
    assert_valid(&server, addr);
}

/// A file of `len` bytes, none repeating at a short period.
fn sample(dir: &Path, len: usize) -> (String, Vec<u8>) {
    let data: Vec<u8> = (0..len as u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let path = dir.join("sample.bin");
    std::fs::write(&path, &data).unwrap();
    (path.to_str().unwrap().to_string(), data)
}

#[test]
fn file_wrapper_is_sent_from_the_descriptor_without_python_reading_it() {
    let dir = tempdir();
    let (path, data) = sample(dir.path(), 3 * 1024 * 1024 + 17);
    let server = wsgi::start("files:app", &["-w", "1"]);
    let addr = server.addr();
    let get = |query: &str| {
        let r = Conn::open(addr).unwrap().get(&format!("/?path={path}&{query}")).unwrap();
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        r
    };
    // read() raises: a body that arrives whole was never copied through Python.
    let r = get("mode=noread");
    assert_eq!(r.body.len(), data.len());
    assert!(r.body == data, "noread: the body differs from the file");
    assert_eq!(r.header("content-length"), Some(data.len().to_string().as_str()));
    // From where the file was, and no more than the app's Content-Length.
    assert!(get("at=1000").body == data[1000..]);
    assert!(get("at=10&length=100").body == data[10..110]);
    // Not a real file: read in blocks, through Python; a fileno() of -1 says the same.
    assert!(get("mode=bytesio").body == data);
    assert!(get("mode=nofd").body == data);
    assert!(get("mode=noread").body == data, "the worker serves on");
    let errors: Vec<String> = server
        .logs()
        .into_iter()
        .filter(|l| l.contains("Traceback") || l.contains("ERROR"))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    // And through the validator, which hides the wrapper: the same bytes, iterated.
    let (server, addr) = start_pep(&["-w", "1"]);
    let r = Conn::open(addr).unwrap().get(&format!("/file?path={path}")).unwrap();
    assert!(r.body == data, "validated file_wrapper body differs");
    assert_valid(&server, addr);
}
