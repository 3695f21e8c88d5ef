//! What a real Flask or Django app must get from forkserve, one scenario per function, run by
//! `tests/python_flask.rs` and `tests/python_django.rs` on their app: both apps have the same
//! routes and answer alike (see `tests/python/`), so each scenario is written once.

use std::collections::BTreeSet;
use std::time::Duration;

use super::frameworks::{
    App, arrivals, copy_apps, get_ok, json_field, multipart, noise, pid_on, request, sha256_hex,
    spawn_app, start, start_from_table, start_under, venv,
};
use super::http::Conn;
use super::{alive, tempdir, wait_until};

/// The venv's interpreter and framework serve the app, not another Python on the machine (the
/// toolchain's Python has a Flask of its own in its site-packages).
pub fn the_venv_is_the_python_used(app: &App) {
    let server = start(app, 2, 1, &[], &[]);
    let info = get_ok(server.addr(), "/info");
    let venv = venv().canonicalize().unwrap();
    let venv = venv.to_str().unwrap();
    assert_eq!(json_field(&info, "prefix"), venv, "sys.prefix: {info}");
    let framework = json_field(&info, app.framework_file);
    assert!(framework.starts_with(&format!("{venv}/lib/")), "{} from {framework}", app.name);
    // PEP 3333: the flags say how the server runs the app.
    assert_eq!(json_field(&info, "multiprocess"), "true", "2 workers: {info}");
    assert_eq!(json_field(&info, "multithread"), "false", "1 thread each: {info}");
    assert_eq!(json_field(&info, "run_once"), "false", "{info}");
    assert_eq!(json_field(&info, "url_scheme"), "http", "{info}");
    assert_eq!(json_field(&info, "server_protocol"), "HTTP/1.1", "{info}");
}

/// The `[python]` table of a config file declares the app, its path, venv and threads, as the
/// flags do.
pub fn the_python_table_configures_the_app(app: &App) {
    let dir = tempdir();
    let server = start_from_table(app, dir.path());
    assert_eq!(get_ok(server.addr(), "/hello"), format!("hello from {}\n", app.name));
    let info = get_ok(server.addr(), "/info");
    let venv = venv().canonicalize().unwrap();
    assert_eq!(json_field(&info, "prefix"), venv.to_str().unwrap(), "sys.prefix: {info}");
    assert_eq!(json_field(&info, "multithread"), "true", "threads = 2: {info}");
    assert_eq!(json_field(&info, "multiprocess"), "false", "1 worker: {info}");
}

/// Routes with converters, a 404 from the app's router, HEAD, and query strings with repeated
/// keys, `+` and percent-encoded UTF-8, on one kept-alive connection.
pub fn routing_and_query_strings(app: &App) {
    let server = start(app, 1, 1, &[], &[]);
    let mut conn = Conn::open(server.addr()).unwrap();
    let hello = conn.get("/hello").unwrap();
    assert_eq!((hello.status, hello.text()), (200, format!("hello from {}\n", app.name)));
    let item = conn.get("/items/42").unwrap();
    assert_eq!((item.status, item.text().trim_end()), (200, r#"{"item":42,"kind":"int"}"#));
    assert_eq!(conn.get("/items/forty-two").unwrap().status, 404);
    assert_eq!(conn.get("/nowhere").unwrap().status, 404);
    let head = conn.request("HEAD", "/hello", &[], b"").unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD has no body");
    let query = conn.get("/query?a=1&a=2&b=x+y&c=%C3%A9&empty=").unwrap();
    assert_eq!(query.status, 200);
    assert_eq!(
        query.text().trim_end(),
        r#"{"a":["1","2"],"b":["x y"],"c":["\u00e9"],"empty":[""]}"#
    );
    // The connection is still the same one: keep-alive held across every answer.
    assert_eq!(conn.get("/hello").unwrap().status, 200);
}

/// A client that reads its whole response and then closes the connection (as curl does), or
/// asks with HEAD, makes a normal request: the log says nothing of a client that left.
pub fn clients_that_close_after_their_response_are_no_warning(app: &App) {
    let server = start(app, 1, 1, &[], &[]);
    for path in ["/pid", "/hello", "/items/3", "/stream?n=3"].repeat(10) {
        get_ok(server.addr(), path);
    }
    // HEAD: the server sends no body, which is not the client leaving; a long stream's
    // generator is not left blocked on output no one reads (the only thread serves on).
    for path in ["/hello", "/stream?n=3", "/download", "/stream?n=16&pad=1048576"] {
        assert_eq!(request(server.addr(), "HEAD", path, &[], b"").status, 200, "HEAD {path}");
        assert_eq!(get_ok(server.addr(), "/hello"), format!("hello from {}\n", app.name));
    }
    // What the worker logs about the last requests comes just after their responses.
    std::thread::sleep(Duration::from_millis(300));
    let noise: Vec<String> =
        server.logs().into_iter().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
    assert!(noise.is_empty(), "complete requests logged as trouble:\n{}", noise.join("\n"));
}

/// Cookies the app sets arrive as `Set-Cookie` headers (one per cookie); cookies the client
/// sends reach the app.
pub fn cookies(app: &App) {
    let server = start(app, 1, 1, &[], &[]);
    let set = request(server.addr(), "GET", "/cookie/set?flavour=oat&n=1", &[], b"");
    assert_eq!(set.status, 200);
    let cookies: BTreeSet<&str> =
        set.all("set-cookie").iter().map(|c| c.split(';').next().unwrap()).collect();
    assert_eq!(cookies, BTreeSet::from(["flavour=oat", "n=1"]), "{:?}", set.headers);
    let jar = [("Cookie", "flavour=oat; n=1")];
    let got = request(server.addr(), "GET", "/cookie/get", &jar, b"");
    assert_eq!((got.status, got.text().trim_end()), (200, r#"{"flavour":"oat","n":"1"}"#));
}

/// A urlencoded form, with its length given and then chunked: forkserve has the whole body
/// before the app runs, so a chunked one reads the same (Django reads nothing of a chunked
/// body under Gunicorn, which gives it no `CONTENT_LENGTH`).
pub fn form_post(app: &App) {
    let server = start(app, 1, 1, &[], &[]);
    let form = b"name=Zo%C3%AB&x=1&x=2";
    let urlencoded = ("Content-Type", "application/x-www-form-urlencoded");
    let want = r#"{"name":["Zo\u00eb"],"x":["1","2"]}"#;
    let sized = request(server.addr(), "POST", "/form", &[urlencoded], form);
    assert_eq!((sized.status, sized.text().trim_end()), (200, want));
    let mut chunked = Vec::new();
    for piece in form.chunks(7) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let te = ("Transfer-Encoding", "chunked");
    let response = request(server.addr(), "POST", "/form", &[urlencoded, te], &chunked);
    assert_eq!((response.status, response.text().trim_end()), (200, want), "chunked form");
}

/// A 20 MiB file in a multipart form, with its length given and then chunked (in 1 MiB
/// chunks): the app reads it whole and reports its size and sha256.
pub fn upload_20_mib(app: &App) {
    let server = start(app, 1, 1, &[], &[]);
    let data = noise(20 << 20, 13);
    let (body, content_type) = multipart(("note", "hi"), ("file", "big.bin", &data));
    let mut chunked = Vec::with_capacity(body.len() + 1024);
    for piece in body.chunks(1 << 20) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let sha256 = sha256_hex(&data);
    let sized = [("Content-Type", content_type.as_str())];
    let chunked_headers = [sized[0], ("Transfer-Encoding", "chunked")];
    for (how, headers, body) in
        [("sized", &sized[..], &body), ("chunked", &chunked_headers[..], &chunked)]
    {
        let response = request(server.addr(), "POST", "/upload", headers, body);
        assert_eq!(response.status, 200, "{how}: {}", response.text());
        let text = response.text();
        assert_eq!(json_field(&text, "size"), (20 << 20).to_string(), "{how}: {text}");
        assert_eq!(json_field(&text, "sha256"), sha256, "{how}: {text}");
        assert_eq!(json_field(&text, "filename"), "big.bin", "{how}: {text}");
        assert!(text.contains(r#""fields":{"note":["hi"]}"#), "{how}: {text}");
    }
    // The worker is still there and still well.
    assert_eq!(get_ok(server.addr(), "/hello"), format!("hello from {}\n", app.name));
}

/// A generator's pieces reach the client as it yields them, and a slow one leaves the
/// worker's other thread free for other requests.
pub fn streamed_response(app: &App) {
    let server = start(app, 1, 2, &[], &[]);
    let addr = server.addr();
    let whole = request(addr, "GET", "/stream?n=4", &[], b"");
    assert_eq!((whole.status, whole.text().as_str()), (200, "line 0\nline 1\nline 2\nline 3\n"));
    let slow = std::thread::spawn(move || {
        arrivals(addr, "/stream?n=4&delay=0.5", &["line 0\n", "line 1\n", "line 3\n"])
    });
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    assert_eq!(get_ok(addr, "/hello"), format!("hello from {}\n", app.name));
    let hello = started.elapsed();
    let times = slow.join().unwrap();
    // Line 0 arrived before line 1 was yielded (0.5 s later), not with the rest.
    let gap = times[1].saturating_sub(times[0]);
    assert!(gap >= Duration::from_millis(400), "lines 0 and 1 came together: {times:?}");
    assert!(times[2] >= Duration::from_millis(1400), "the stream was not paced: {times:?}");
    // Not held until the stream's end (1.5 s in).
    assert!(hello < Duration::from_millis(700), "/hello waited {hello:?} behind the stream");
}

/// The response iterable is closed on every path (PEP 3333), which is where frameworks end a
/// request (Flask's teardown, Django's `request_finished`): after a complete stream, and when
/// the client leaves in the middle of one, promptly rather than after the whole stream.
pub fn the_iterable_is_closed_on_every_path(app: &App) {
    let marks = tempdir();
    let env = [("FORKSERVE_TEST_MARKS", marks.path().to_str().unwrap())];
    let server = start(app, 1, 1, &[], &env);
    let addr = server.addr();
    let mark = |name: &str| {
        let path = marks.path().join(name);
        wait_until(|| std::fs::read_to_string(&path).ok())
            .unwrap_or_else(|| panic!("the iterable of {name:?} was never closed"))
    };
    assert_eq!(get_ok(addr, "/stream?n=3&mark=whole"), "line 0\nline 1\nline 2\n");
    assert_eq!(mark("whole"), "complete 3\n");
    // 100 lines 0.1 s apart: 10 s if the generator ran to its end.
    let left_at = std::time::Instant::now();
    arrivals(addr, "/stream?n=100&delay=0.1&mark=left", &["line 1\n"]);
    let ended = mark("left");
    let sent: usize = ended.trim().strip_prefix("stopped ").expect(&ended).parse().unwrap();
    assert!(sent < 30, "the generator ran on for {sent} lines after its client left");
    assert!(left_at.elapsed() < Duration::from_secs(5), "closed after {:?}", left_at.elapsed());
    // The thread it held is free again.
    assert_eq!(get_ok(addr, "/hello"), format!("hello from {}\n", app.name));
}

/// An exception after the response has started cannot become a 500: the response is cut (no
/// last chunk, so the client knows it is incomplete), the traceback is logged, the iterable
/// is closed, and the worker serves on.
pub fn an_exception_mid_stream_cuts_the_response(app: &App) {
    let marks = tempdir();
    let env = [("FORKSERVE_TEST_MARKS", marks.path().to_str().unwrap())];
    let server = start(app, 1, 1, &[], &env);
    let addr = server.addr();
    let mut conn = Conn::open(addr).unwrap();
    conn.send_get("/stream?n=5&fail_at=2&mark=failed").unwrap();
    match conn.read_response(false) {
        Err(_) => {}
        Ok(r) => panic!("a failed stream read as complete: {} {:?}", r.status, r.text()),
    }
    server.wait_for("stream failed after 2 lines");
    let path = marks.path().join("failed");
    let ended = wait_until(|| std::fs::read_to_string(&path).ok()).expect("never closed");
    assert_eq!(ended, "stopped 2\n");
    assert_eq!(get_ok(addr, "/hello"), format!("hello from {}\n", app.name));
}

/// A file sent through `wsgi.file_wrapper` (Flask's `send_file`, Django's `FileResponse`)
/// arrives whole and exact, with its length; `HEAD` sends only the head.
pub fn file_download(app: &App) {
    let dir = tempdir();
    let data = noise(5_000_000, 29);
    let path = dir.path().join("download.bin");
    std::fs::write(&path, &data).unwrap();
    let env = [("FORKSERVE_TEST_DOWNLOAD", path.to_str().unwrap())];
    let server = start(app, 1, 1, &[], &env);
    let response = request(server.addr(), "GET", "/download", &[], b"");
    assert_eq!(response.status, 200, "{}", response.text());
    let wrapper = response.header("x-file-wrapper").unwrap_or("(no header)").to_string();
    assert_ne!(wrapper, "None", "the app was given no wsgi.file_wrapper");
    assert_eq!(response.header("content-length"), Some("5000000"));
    assert!(
        response.header("content-disposition").is_some_and(|d| d.contains("download.bin")),
        "{:?}",
        response.headers
    );
    assert_eq!(response.body.len(), data.len());
    assert!(response.body == data, "the downloaded bytes differ from the file");
    let head = request(server.addr(), "HEAD", "/download", &[], b"");
    assert_eq!((head.status, head.header("content-length")), (200, Some("5000000")));
    assert!(head.body.is_empty());
    // Several in a row on one connection: each file_wrapper response ends where it should.
    let mut conn = Conn::open(server.addr()).unwrap();
    for _ in 0..3 {
        let again = conn.get("/download").unwrap();
        assert!(again.status == 200 && again.body == data, "a repeated download differs");
    }
    assert_eq!(conn.get("/hello").unwrap().status, 200);
}

/// `/caf%C3%A9` reaches the app's `café` route: `PATH_INFO` is the path's bytes as latin-1
/// (PEP 3333), which the framework turns back into UTF-8.
pub fn non_ascii_path(app: &App) {
    let server = start(app, 1, 1, &[], &[]);
    let response = request(server.addr(), "GET", "/caf%C3%A9", &[], b"");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(json_field(&response.text(), "path"), r"/caf\u00e9");
    assert_eq!(json_field(&response.text(), "raw"), app.cafe_raw);
}

/// Behind a trusted proxy the app sees the client and scheme the proxy forwarded (so the URLs
/// it builds are `https`); from an untrusted peer, neither, and not the headers either.
pub fn a_trusted_proxy_s_client_and_scheme_reach_the_app(app: &App) {
    let forwarded = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")];
    // The tests connect from 127.0.0.1, trusted by default.
    let server = start(app, 1, 1, &[], &[]);
    let plain = request(server.addr(), "GET", "/client", &[], b"").text();
    assert_eq!(json_field(&plain, "remote_addr"), "127.0.0.1", "{plain}");
    assert_eq!(json_field(&plain, "scheme"), "http", "{plain}");
    assert_eq!(json_field(&plain, "host_url"), "http://test/", "{plain}");
    let proxied = request(server.addr(), "GET", "/client", &forwarded, b"").text();
    assert_eq!(json_field(&proxied, "remote_addr"), "203.0.113.7", "{proxied}");
    assert_eq!(json_field(&proxied, "scheme"), "https", "{proxied}");
    assert!(json_field(&proxied, "host_url").starts_with("https://"), "{proxied}");
    drop(server);
    let server = start(app, 1, 1, &["--forwarded-allow-ips", "10.0.0.0/8"], &[]);
    let spoofed = request(server.addr(), "GET", "/client", &forwarded, b"").text();
    assert_eq!(json_field(&spoofed, "remote_addr"), "127.0.0.1", "{spoofed}");
    assert_eq!(json_field(&spoofed, "scheme"), "http", "{spoofed}");
    assert_eq!(json_field(&spoofed, "x_forwarded_for"), "null", "{spoofed}");
}

/// Mounted at `/prefix/` by a route: `SCRIPT_NAME` is `/prefix`, so the URLs the app builds
/// (`url_for`, `reverse`, redirects) point under it.
pub fn mounted_under_a_prefix(app: &App) {
    let dir = tempdir();
    let server = start_under(app, "/prefix/", dir.path());
    let addr = server.addr();
    assert_eq!(get_ok(addr, "/prefix/hello"), format!("hello from {}\n", app.name));
    let where_ = get_ok(addr, "/prefix/where");
    assert_eq!(
        where_.trim_end(),
        r#"{"item_url":"/prefix/items/7","path_info":"/where","script_name":"/prefix","url_for":"/prefix/where","url_for_external":"http://test/prefix/where"}"#
    );
    let redirect = request(addr, "GET", "/prefix/redirect", &[], b"");
    assert_eq!(redirect.status, 302);
    assert_eq!(redirect.header("location"), Some("/prefix/hello"));
    let item = get_ok(addr, "/prefix/items/5");
    assert_eq!(item.trim_end(), r#"{"item":5,"kind":"int"}"#);
}

/// An exception out of the app is a 500, its traceback is in the log, and the same worker
/// goes on serving.
pub fn exception_is_a_500(app: &App) {
    let server = start(app, 1, 1, &[], &[]);
    let mut conn = Conn::open(server.addr()).unwrap();
    let pid = pid_on(&mut conn);
    let response = request(server.addr(), "GET", "/boom", &[], b"");
    assert_eq!(response.status, 500, "{}", response.text());
    let message = format!("RuntimeError: boom from {}", app.name);
    server.wait_for(&message);
    server.wait_for("Traceback (most recent call last)");
    assert!(server.logs().iter().any(|l| l.contains("/boom")), "no log line names /boom");
    assert_eq!(pid_on(&mut Conn::open(server.addr()).unwrap()), pid, "the worker changed");
    assert_eq!(get_ok(server.addr(), "/hello"), format!("hello from {}\n", app.name));
}

/// `sys.exit()` in a handler: its client is answered 500 (the app failed, the server did
/// not), the request the worker's other thread runs meanwhile completes, and the server
/// serves on (from this worker or its replacement).
pub fn sys_exit_in_a_handler(app: &App) {
    let server = start(app, 1, 2, &[], &[]);
    let addr = server.addr();
    let sleeper = std::thread::spawn(move || request(addr, "GET", "/sleep?s=1", &[], b""));
    server.wait_for("sleeping in");
    let mut conn = Conn::open(addr).unwrap();
    conn.send_get("/exit?code=3").unwrap();
    match conn.read_response(false) {
        Ok(response) => assert_eq!(response.status, 500, "{}", response.text()),
        Err(e) => panic!("sys.exit() in a handler left its client with no answer: {e}"),
    }
    let slept = sleeper.join().unwrap();
    assert_eq!(slept.status, 200, "the concurrent request: {}", slept.text());
    for _ in 0..20 {
        assert_eq!(get_ok(addr, "/hello"), format!("hello from {}\n", app.name));
    }
}

/// `os._exit()` in a handler kills its worker at once: its client sees the connection close,
/// the other worker's request in flight completes, the master starts a replacement, and
/// every request after is served.
pub fn os_exit_in_a_handler(app: &App) {
    let server = start(app, 2, 1, &[], &[]);
    let addr = server.addr();
    // Two kept-alive connections, each on a different worker.
    let mut conns: Vec<(Conn, i32)> = Vec::new();
    let found = wait_until(|| {
        let mut conn = Conn::open(addr).unwrap();
        let pid = pid_on(&mut conn);
        if conns.iter().all(|(_, p)| *p != pid) {
            conns.push((conn, pid));
        }
        (conns.len() == 2).then_some(())
    });
    assert!(found.is_some(), "every connection went to one worker");
    let (mut victim, victim_pid) = conns.remove(0);
    let (mut other, other_pid) = conns.remove(0);
    other.send_get("/sleep?s=1").unwrap();
    server.wait_for(&format!("sleeping in {other_pid}"));
    victim.send_get("/os-exit?code=7").unwrap();
    assert!(victim.read_response(false).is_err(), "a worker that called os._exit answered");
    let slept = other.read_response(false).expect("the other worker's request");
    assert_eq!(slept.status, 200, "{}", slept.text());
    assert_eq!(json_field(&slept.text(), "pid"), other_pid.to_string());
    assert!(wait_until(|| (!alive(victim_pid)).then_some(())).is_some(), "the worker lives");
    let exit = server.wait_for("exit code 7");
    assert!(exit.contains(&format!("pid={victim_pid}")), "{exit}");
    let workers = server.wait_workers(2);
    assert!(!workers.contains(&victim_pid) && workers.contains(&other_pid), "{workers:?}");
    let replacement = wait_until(|| {
        let pid = pid_on(&mut Conn::open(addr).unwrap());
        (pid != other_pid).then_some(pid)
    })
    .expect("no request reached the replacement worker");
    assert_ne!(replacement, victim_pid);
    for _ in 0..20 {
        assert_eq!(get_ok(addr, "/hello"), format!("hello from {}\n", app.name));
    }
}

/// Preloaded (`--preload`: imported once, in the process the workers fork from), the app
/// serves as it does imported by each worker: from the venv, in two workers, with uploads,
/// downloads and failures.
pub fn served_preloaded(app: &App) {
    let dir = tempdir();
    let data = noise(3_000_000, 37);
    let path = dir.path().join("preloaded.bin");
    std::fs::write(&path, &data).unwrap();
    let env = [("FORKSERVE_TEST_DOWNLOAD", path.to_str().unwrap())];
    let server = start(app, 2, 2, &["--preload"], &env);
    let addr = server.addr();
    let info = get_ok(addr, "/info");
    let venv = venv().canonicalize().unwrap();
    assert_eq!(json_field(&info, "prefix"), venv.to_str().unwrap(), "sys.prefix: {info}");
    assert_eq!(get_ok(addr, "/items/42").trim_end(), r#"{"item":42,"kind":"int"}"#);
    let (body, content_type) = multipart(("note", "pre"), ("file", "p.bin", &data));
    let headers = [("Content-Type", content_type.as_str())];
    let upload = request(addr, "POST", "/upload", &headers, &body);
    assert_eq!(json_field(&upload.text(), "sha256"), sha256_hex(&data), "{}", upload.text());
    let download = request(addr, "GET", "/download", &[], b"");
    assert!(download.status == 200 && download.body == data, "the preloaded download differs");
    assert_eq!(request(addr, "GET", "/boom", &[], b"").status, 500);
    // Both workers serve (one connection each, kept alive, until two pids are seen).
    let mut pids = BTreeSet::new();
    let mut conns = Vec::new();
    let both = wait_until(|| {
        let mut conn = Conn::open(addr).unwrap();
        pids.insert(pid_on(&mut conn));
        conns.push(conn);
        (pids.len() == 2).then_some(())
    });
    assert!(both.is_some(), "one worker answered every connection: {pids:?}");
    for conn in &mut conns {
        assert_eq!(conn.get("/hello").unwrap().text(), format!("hello from {}\n", app.name));
    }
}

/// With `--reload` (development), an edit to the app's code is served without a signal; an
/// edit that breaks the import is rolled back (the last good code serves on). Each edit is
/// saved while workers are still importing the code (made slow, see `slow_import`): the first
/// while the first workers boot, the broken one during a reload.
pub fn reload_serves_an_edit(app: &App) {
    let (dir, marks) = (tempdir(), tempdir());
    copy_apps(dir.path());
    let (source, boot) = (dir.path().join(app.hello_source), dir.path().join(app.boot_source));
    let imports = |version: u32| {
        let mark = marks.path().join(format!("importing-{version}"));
        assert!(
            wait_until(|| mark.exists().then_some(())).is_some(),
            "import {version} never began"
        );
    };
    slow_import(&boot, 1);
    let flags = ["-w", "1", "--reload"].map(String::from);
    let env = [("FORKSERVE_TEST_MARKS", marks.path().to_str().unwrap())];
    let server = spawn_app(app.wsgi, dir.path(), &flags, &env);
    imports(1);
    let text = std::fs::read_to_string(&source).unwrap();
    let hello = format!("hello from {}\\n", app.name);
    assert!(text.contains(&hello), "{} has no {hello:?}", app.hello_source);
    std::fs::write(&source, text.replace(&hello, &format!("hello again from {}\\n", app.name)))
        .unwrap();
    let addr = server.addr();
    let again = format!("hello again from {}\n", app.name);
    let served = wait_until(|| (get_ok(addr, "/hello") == again).then_some(()));
    assert!(served.is_some(), "the edit saved while the first workers booted is not served");

    // A reload (the boot file edited), and while its worker imports, an edit that breaks.
    slow_import(&boot, 2);
    imports(2);
    let text = std::fs::read_to_string(&boot).unwrap();
    std::fs::write(&boot, format!("{text}\n(this line does not parse\n")).unwrap();
    let rolled_back = server.wait_for("rolled back");
    assert!(rolled_back.contains("SyntaxError"), "{rolled_back}");
    for _ in 0..5 {
        assert_eq!(get_ok(addr, "/hello"), again);
    }
}

/// Makes importing `module` take 1.5 s, announced at its start by the file `importing-{mark}`
/// in `$FORKSERVE_TEST_MARKS`, so that a test can save an edit while a worker imports.
fn slow_import(module: &std::path::Path, mark: u32) {
    let text = std::fs::read_to_string(module).unwrap();
    let slow = format!(
        "import os as _os, time as _time\n\
         open(_os.path.join(_os.environ['FORKSERVE_TEST_MARKS'], 'importing-{mark}'), 'w').close()\n\
         _time.sleep(1.5)\n{text}"
    );
    std::fs::write(module, slow).unwrap();
}
