//! What workers serve: the TOML app (fixed responses, static files), the library's panic
//! handling, keep-alive and pipelining, over raw sockets against the real binaries.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::http::{self, Conn};
use common::{Server, example, forkserve, tempdir, write};

const SECRET: &str = "TOP-SECRET-CONTENT";

/// A static site in `dir/site`, a secret beside it, and symlinks that lead out of the site.
fn static_site(dir: &Path) -> String {
    let site = dir.join("site");
    std::fs::create_dir_all(site.join("docs/empty")).unwrap();
    std::fs::write(site.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(site.join("style.css"), "body{}").unwrap();
    std::fs::write(site.join("data.json"), "{}").unwrap();
    std::fs::write(site.join("docs/index.html"), "<h1>docs</h1>").unwrap();
    std::fs::write(site.join("digits.txt"), "0123456789").unwrap();
    std::fs::write(site.join("noext"), "raw").unwrap();
    std::fs::write(dir.join("secret.txt"), SECRET).unwrap();
    symlink(dir.join("secret.txt"), site.join("escape.txt")).unwrap();
    symlink(dir, site.join("up")).unwrap();
    symlink(site.join("style.css"), site.join("inside.css")).unwrap();
    nix::unistd::mkfifo(&site.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let config = "[server]\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n\n\
         [[route]]\npath = \"/\"\nrespond = \"root\\n\"\n\n\
         [[route]]\npath = \"/static/\"\nstatic = \"site\"\n\n\
         [[route]]\npath = \"/api\"\nrespond = { status = 201, body = \"made\", content_type = \"application/json\", headers = { \"x-a\" = \"b\" } }\n";
    write(dir, "app.toml", config)
}

fn get(addr: SocketAddr, path: &str) -> http::Response {
    http::raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[test]
fn traversal_attempts_never_leave_the_static_root() {
    let dir = tempdir();
    let server = Server::start(&forkserve(), &[&static_site(dir.path())]);
    let addr = server.addr();
    let attacks = [
        "/static/../secret.txt",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E/secret.txt",
        "/static/.%2e/secret.txt",
        "/static/%2e%2e%2fsecret.txt",
        "/static/..%2fsecret.txt",
        "/static/..%2Fsecret.txt",
        "/static/docs/../../secret.txt",
        "/static/docs/%2e%2e/%2e%2e/secret.txt",
        "/static/%252e%252e/secret.txt",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/escape.txt",
        "/static/up/secret.txt",
        "/static/up/",
        "/static/..\\secret.txt",
        "/static/%00../secret.txt",
        "/static/secret.txt%00.html",
        "/static/fifo",
        "/static/%",
        "/static/%zz",
    ];
    for path in attacks {
        let response = get(addr, path);
        assert_ne!(response.status, 200, "{path} was served");
        assert_eq!(server.count("ERROR"), 0, "{path} caused an error log");
        assert!(!response.text().contains(SECRET), "{path} leaked the secret");
        assert!(!response.text().contains("root:"), "{path} leaked /etc/passwd");
        assert!([400, 404].contains(&response.status), "{path}: {}", response.status);
    }
    // The worker is fine after all of that, and a symlink inside the root still works.
    assert_eq!(get(addr, "/static/inside.css").text(), "body{}");
    assert_eq!(server.workers().len(), 1);
}

#[test]
fn a_shadowing_route_cannot_be_bypassed_with_a_non_canonical_path() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.path().join("site/private")).unwrap();
    std::fs::write(dir.path().join("site/private/p.txt"), "PRIVATE").unwrap();
    let config = write(
        dir.path(),
        "app.toml",
        "[server]\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n\
         [[route]]\npath = \"/static/\"\nstatic = \"site\"\n\
         [[route]]\npath = \"/static/private/\"\nrespond = { status = 403, body = \"no\" }\n",
    );
    let server = Server::start(&forkserve(), &[&config]);
    let addr = server.addr();
    for path in [
        "/static/private/p.txt",
        "/static//private/p.txt",
        "/static/./private/p.txt",
        "/static/%70rivate/p.txt",
        "/static/private%2fp.txt",
        "/static/private%2Fp.txt",
        "http://t/static//private/p.txt",
    ] {
        let response = get(addr, path);
        assert_eq!((response.status, response.text().as_str()), (403, "no"), "{path}");
    }
}

#[test]
fn directory_redirects_stay_on_this_site() {
    let dir = tempdir();
    std::fs::create_dir_all(dir.path().join("site/example.org")).unwrap();
    std::fs::create_dir_all(dir.path().join("site/a b")).unwrap();
    let config = write(
        dir.path(),
        "app.toml",
        "[server]\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n[[route]]\npath = \"/\"\nstatic = \"site\"\n",
    );
    let server = Server::start(&forkserve(), &[&config]);
    let redirect = get(server.addr(), "//example.org");
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.header("location"), Some("/example.org/"), "never //host");
    assert_eq!(get(server.addr(), "/a%20b").header("location"), Some("/a%20b/"));
}

#[test]
fn hidden_files_loops_and_odd_dates_are_handled() {
    let dir = tempdir();
    let config = static_site(dir.path());
    let site = dir.path().join("site");
    std::fs::write(site.join(".env"), "KEY=1").unwrap();
    std::fs::create_dir_all(site.join(".git")).unwrap();
    std::fs::write(site.join(".git/config"), "x").unwrap();
    std::fs::create_dir_all(site.join(".well-known")).unwrap();
    std::fs::write(site.join(".well-known/security.txt"), "Contact: x").unwrap();
    symlink("loop-b", site.join("loop-a")).unwrap();
    symlink("loop-a", site.join("loop-b")).unwrap();

    let server = Server::start(&forkserve(), &[&config]);
    let addr = server.addr();
    assert_eq!(get(addr, "/static/.env").status, 404);
    assert_eq!(get(addr, "/static/.git/config").status, 404);
    assert_eq!(get(addr, "/static/.well-known/security.txt").text(), "Contact: x");
    assert_eq!(get(addr, "/static/loop-a").status, 404);
    assert_eq!(server.count("ERROR"), 0, "nothing here is a server error");
}

#[test]
fn a_modification_time_http_cannot_express_is_left_out() {
    // tmpfs keeps a year-12000 mtime; most disk file systems clamp it (ext4 to 2446).
    let dir = tempfile::Builder::new().prefix("forkserve-test-").tempdir_in("/dev/shm").unwrap();
    std::fs::create_dir(dir.path().join("site")).unwrap();
    let file = std::fs::File::create(dir.path().join("site/future.txt")).unwrap();
    let year_12000 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(316_000_000_000);
    file.set_modified(year_12000).unwrap();
    assert_eq!(file.metadata().unwrap().modified().unwrap(), year_12000, "/dev/shm kept the date");
    drop(file);
    let config = write(
        dir.path(),
        "app.toml",
        "[server]\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n[[route]]\npath = \"/\"\nstatic = \"site\"\n",
    );
    let server = Server::start(&forkserve(), &[&config]);
    let response = get(server.addr(), "/future.txt");
    assert_eq!(response.status, 200, "not a 500");
    assert_eq!(response.header("last-modified"), None);
    assert!(response.header("etag").is_some());
}

#[test]
fn swapping_a_directory_for_a_symlink_mid_request_never_leaks() {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempdir();
    let config = static_site(dir.path());
    std::fs::create_dir_all(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside/x.txt"), SECRET).unwrap();
    std::fs::create_dir_all(dir.path().join("site/swap")).unwrap();
    std::fs::write(dir.path().join("site/swap/x.txt"), "inside").unwrap();
    symlink(dir.path().join("outside"), dir.path().join("site/link")).unwrap();
    let server = Server::start(&forkserve(), &[&config]);
    let addr = server.addr();

    // One thread keeps exchanging site/swap (a real directory) and site/link (a symlink that
    // leads out) while requests for swap/x.txt run, so every check-then-open gap is tried.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, site) = (stop.clone(), dir.path().join("site"));
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                renameat2(
                    AT_FDCWD,
                    &site.join("swap"),
                    AT_FDCWD,
                    &site.join("link"),
                    RenameFlags::RENAME_EXCHANGE,
                )
                .expect("renameat2");
                swaps += 1;
            }
            swaps
        })
    };
    let mut conn = Conn::open(addr).unwrap();
    let (mut inside, mut requests) = (0, 0);
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        let response = conn.get("/static/swap/x.txt").unwrap();
        assert!(!response.text().contains(SECRET), "served a file from outside the root");
        inside += usize::from(response.text() == "inside");
        requests += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(
        swaps > 100 && requests > 100,
        "the race was exercised: {swaps} swaps, {requests} requests"
    );
    assert!(inside > 0, "the file inside the root was served at times");
}

#[test]
fn static_files_are_served_with_types_indexes_and_methods() {
    let dir = tempdir();
    let server = Server::start(&forkserve(), &[&static_site(dir.path())]);
    let addr = server.addr();

    let index = get(addr, "/static/");
    assert_eq!((index.status, index.text().as_str()), (200, "<h1>home</h1>"));
    assert_eq!(index.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(get(addr, "/static/docs/").text(), "<h1>docs</h1>");
    for (path, ty) in [
        ("/static/style.css", "text/css; charset=utf-8"),
        ("/static/data.json", "application/json"),
        ("/static/digits.txt", "text/plain; charset=utf-8"),
        ("/static/noext", "application/octet-stream"),
    ] {
        let r = get(addr, path);
        assert_eq!((r.status, r.header("content-type")), (200, Some(ty)), "{path}");
    }

    let redirect = get(addr, "/static/docs?x=1");
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.header("location"), Some("/static/docs/?x=1"));
    assert_eq!(get(addr, "/static/docs/empty/").status, 404, "no index.html, no listing");
    assert_eq!(get(addr, "/static/missing.txt").status, 404);
    assert_eq!(get(addr, "/static/digits.txt/x").status, 404);

    let head = http::raw(addr, b"HEAD /static/digits.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!((head.status, head.header("content-length")), (200, Some("10")));
    assert!(head.body.is_empty());

    let post = http::raw(
        addr,
        b"POST /static/digits.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    assert_eq!((post.status, post.header("allow")), (405, Some("GET, HEAD, OPTIONS")));
}

#[test]
fn static_files_answer_conditional_and_range_requests() {
    let dir = tempdir();
    let server = Server::start(&forkserve(), &[&static_site(dir.path())]);
    let addr = server.addr();
    let full = get(addr, "/static/digits.txt");
    let etag = full.header("etag").unwrap().to_string();
    let modified = full.header("last-modified").unwrap().to_string();
    assert_eq!(full.header("accept-ranges"), Some("bytes"));

    let req = |headers: &str| {
        http::raw(
            addr,
            format!("GET /static/digits.txt HTTP/1.1\r\nHost: t\r\n{headers}\r\n").as_bytes(),
        )
        .unwrap()
    };
    assert_eq!(req(&format!("If-None-Match: {etag}\r\n")).status, 304);
    assert_eq!(req("If-None-Match: \"other\"\r\n").status, 200);
    assert_eq!(req(&format!("If-Modified-Since: {modified}\r\n")).status, 304);

    let part = req("Range: bytes=2-4\r\n");
    assert_eq!((part.status, part.text().as_str()), (206, "234"));
    assert_eq!(part.header("content-range"), Some("bytes 2-4/10"));
    assert_eq!(req("Range: bytes=-3\r\n").text(), "789");
    assert_eq!(req("Range: bytes=20-\r\n").status, 416);
    assert_eq!(req("Range: bytes=0-1,3-4\r\n").status, 200, "multiple ranges: whole file");
    assert_eq!(req(&format!("Range: bytes=0-0\r\nIf-Range: {etag}\r\n")).status, 206);
    assert_eq!(req("Range: bytes=0-0\r\nIf-Range: \"stale\"\r\n").status, 200);
}

/// Small files are cached in memory once their ctime is 2 s old: whatever changes the file
/// afterwards is served at once, even a same-length rewrite that puts the mtime back.
#[test]
fn a_cached_file_is_never_served_stale() {
    use std::os::unix::fs::FileExt;
    let dir = tempdir();
    let config = static_site(dir.path());
    let site = dir.path().join("site");
    let path = site.join("page.txt");
    std::fs::write(&path, "version 1").unwrap();
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(site.join("big.bin"), &big).unwrap();
    let server = Server::start(&forkserve(), &[&config]);
    let addr = server.addr();
    std::thread::sleep(std::time::Duration::from_millis(2200));

    let mut conn = Conn::open(addr).unwrap();
    let first = conn.get("/static/page.txt").unwrap();
    let etag = first.header("etag").unwrap().to_string();
    assert_eq!(first.text(), "version 1");
    assert_eq!(conn.get("/static/page.txt").unwrap().text(), "version 1", "from the cache");
    assert_eq!(conn.get("/static/big.bin").unwrap().body, big);
    assert_eq!(conn.get("/static/big.bin").unwrap().body, big, "1 MiB, from the cache");
    let range = http::raw(
        addr,
        format!("GET /static/page.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=8-\r\nIf-Range: {etag}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!((range.status, range.text().as_str()), (206, "1"));
    let head = http::raw(addr, b"HEAD /static/page.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!((head.status, head.header("content-length")), (200, Some("9")));
    assert!(head.body.is_empty());

    // Rewritten in place, same length, the mtime put back: only the ctime tells.
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(b"2", 8).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    assert_eq!(conn.get("/static/page.txt").unwrap().text(), "version 2");
    let file = std::fs::OpenOptions::new().write(true).open(site.join("big.bin")).unwrap();
    file.write_all_at(b"changed", 1000).unwrap();
    drop(file);
    let body = conn.get("/static/big.bin").unwrap().body;
    assert_eq!(&body[1000..1007], b"changed");
    // Replaced by another file (another inode), and grown.
    std::fs::write(site.join("next.txt"), "version 3").unwrap();
    std::fs::rename(site.join("next.txt"), &path).unwrap();
    assert_eq!(conn.get("/static/page.txt").unwrap().text(), "version 3");
    std::fs::write(&path, "version 4, longer").unwrap();
    assert_eq!(conn.get("/static/page.txt").unwrap().text(), "version 4, longer");
    // Settled again, cached again: still the latest.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    assert_eq!(conn.get("/static/page.txt").unwrap().text(), "version 4, longer");
    assert_eq!(conn.get("/static/page.txt").unwrap().text(), "version 4, longer");
    std::fs::write(&path, "version 5").unwrap();
    assert_eq!(conn.get("/static/page.txt").unwrap().text(), "version 5");
    assert_eq!(server.count("ERROR"), 0);
}

#[test]
fn a_large_file_is_streamed_not_read_into_memory() {
    let dir = tempdir();
    let config = static_site(dir.path());
    // A sparse file: 256 MiB long, nearly no disk used.
    let size: u64 = 256 << 20;
    std::fs::File::create(dir.path().join("site/big.bin")).unwrap().set_len(size).unwrap();
    let server = Server::start(&forkserve(), &[&config]);
    let worker = *server.wait_workers(1).iter().next().unwrap();

    let mut conn = Conn::open(server.addr()).unwrap();
    conn.send_get("/static/big.bin").unwrap();
    assert_eq!(conn.read_counting().unwrap(), (200, size));

    let status = std::fs::read_to_string(format!("/proc/{worker}/status")).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status");
    assert!(peak_kib < 64 * 1024, "worker peak RSS {peak_kib} KiB while sending 256 MiB");
}

#[test]
fn fixed_responses_and_unmatched_paths() {
    let dir = tempdir();
    let server = Server::start(&forkserve(), &[&static_site(dir.path())]);
    let addr = server.addr();
    let api = get(addr, "/api/things");
    assert_eq!((api.status, api.text().as_str()), (201, "made"));
    assert_eq!(api.header("content-type"), Some("application/json"));
    assert_eq!(api.header("x-a"), Some("b"));
    assert_eq!(get(addr, "/apix").text(), "root\n", "/api does not cover /apix");

    let only = tempdir();
    let config = write(
        only.path(),
        "app.toml",
        "[server]\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n[[route]]\npath = \"/only\"\nrespond = \"x\"\n",
    );
    let server = Server::start(&forkserve(), &[&config]);
    assert_eq!(get(server.addr(), "/elsewhere").status, 404);
}

#[test]
fn keep_alive_and_pipelining() {
    let dir = tempdir();
    let server = Server::start(&forkserve(), &[&static_site(dir.path())]);
    let mut conn = Conn::open(server.addr()).unwrap();
    for _ in 0..3 {
        assert_eq!(conn.get("/").unwrap().text(), "root\n");
    }
    // Three requests in one write; three responses, in order, on the same connection.
    conn.send(
        b"GET /api HTTP/1.1\r\nHost: t\r\n\r\nGET /static/digits.txt HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    assert_eq!(conn.read_response(false).unwrap().text(), "made");
    assert_eq!(conn.read_response(false).unwrap().text(), "0123456789");
    assert_eq!(conn.read_response(false).unwrap().text(), "root\n");
}

/// An app whose body is longer than the Content-Length it declares (hyper sends only what was
/// declared) does not leave its connection unable to answer: the body bytes hyper dropped must
/// not count as waiting for the client, which would hold every later response back for ever.
#[test]
fn a_body_longer_than_its_content_length_does_not_stall_the_connection() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", "127.0.0.1:0"]);
    let mut conn = Conn::open(server.addr()).unwrap();
    conn.set_timeout(std::time::Duration::from_secs(5));
    let overlong = conn.get("/overlong").unwrap();
    assert_eq!((overlong.status, overlong.body.len()), (200, 10));
    let next = conn.get("/pid").expect("the next request on the connection is answered");
    assert_eq!(next.status, 200);
    assert!(next.text().trim().parse::<u32>().is_ok(), "{:?}", next.text());
    // Pipelined: the short response is held back to be written with the next one.
    conn.send(b"GET /overlong HTTP/1.1\r\nHost: t\r\n\r\nGET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(conn.read_response(false).unwrap().body.len(), 10);
    let next = conn.read_response(false).expect("the pipelined request is answered");
    assert!(next.text().trim().parse::<u32>().is_ok(), "{:?}", next.text());
}

/// Responses to a pipelined batch are written together, but one is never held back behind a
/// slow request, nor a streaming response behind the request after it.
#[test]
fn pipelined_responses_are_not_held_back_by_a_slow_request() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", "127.0.0.1:0"]);
    let mut conn = Conn::open(server.addr()).unwrap();
    conn.set_timeout(std::time::Duration::from_secs(10));
    let mut batch = Vec::new();
    for _ in 0..16 {
        batch.extend_from_slice(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    conn.send(&batch).unwrap();
    let pid = conn.read_response(false).unwrap().text();
    for _ in 1..16 {
        assert_eq!(conn.read_response(false).unwrap().text(), pid);
    }

    // A fast request, then a slow one: the first answer comes at once.
    let started = std::time::Instant::now();
    conn.send(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\nGET /sleep/3000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(conn.read_response(false).unwrap().status, 200);
    let first = started.elapsed();
    assert!(first < std::time::Duration::from_millis(1500), "first answer after {first:?}");
    assert_eq!(conn.read_response(false).unwrap().status, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(3000));

    // A streaming response with a request behind it: its first chunk comes before its end.
    let mut conn = Conn::open(server.addr()).unwrap();
    conn.set_timeout(std::time::Duration::from_secs(10));
    let started = std::time::Instant::now();
    conn.send(b"GET /drip/600 HTTP/1.1\r\nHost: t\r\n\r\nGET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let head = conn.read_response(true).unwrap();
    assert_eq!(head.status, 200);
    let first = started.elapsed();
    assert!(first < std::time::Duration::from_millis(300), "the head after {first:?}");
}

/// An idle keep-alive connection is parked (hyper's connection and buffers dropped) and served
/// again by a new one: nothing the client sends around the pause is lost or reordered.
#[test]
fn a_connection_idle_between_requests_is_served_again() {
    let pause = || std::thread::sleep(std::time::Duration::from_millis(250));
    let server = Server::start(&example("demo"), &["-w", "1", "-b", "127.0.0.1:0"]);
    let mut conn = Conn::open(server.addr()).unwrap();
    conn.set_timeout(std::time::Duration::from_secs(5));
    let pid = conn.get("/pid").unwrap().text();
    for _ in 0..3 {
        pause();
        assert_eq!(conn.get("/pid").unwrap().text(), pid);
    }
    // A head split by a pause, then a pipelined pair, then a body split by a pause.
    pause();
    conn.send(b"GET /pid HTTP/1.1\r\nHo").unwrap();
    pause();
    conn.send(b"st: t\r\n\r\n").unwrap();
    assert_eq!(conn.read_response(false).unwrap().text(), pid);
    pause();
    conn.send(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\nGET /count HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(conn.read_response(false).unwrap().text(), pid);
    assert_eq!(conn.read_response(false).unwrap().status, 200);
    pause();
    conn.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello").unwrap();
    pause();
    conn.send(b"world").unwrap();
    assert_eq!(conn.read_response(false).unwrap().text(), "helloworld");
    // A new connection that waits before its first request.
    let mut late = Conn::open(server.addr()).unwrap();
    pause();
    assert_eq!(late.get("/pid").unwrap().text(), pid);
    assert_eq!(server.count("worker died"), 0);
}

/// `keepalive` counts from the end of a response: a request that takes longer leaves its
/// connection open for the next one, which is then closed when idle for `keepalive`.
#[test]
fn a_request_longer_than_keepalive_keeps_its_connection() {
    let server =
        Server::start(&example("demo"), &["-w", "1", "-b", "127.0.0.1:0", "--keepalive", "1"]);
    let mut conn = Conn::open(server.addr()).unwrap();
    conn.set_timeout(std::time::Duration::from_secs(10));
    assert_eq!(conn.get("/sleep/2500").unwrap().status, 200);
    assert_eq!(conn.get("/pid").unwrap().status, 200);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(conn.is_closed(), "idle for longer than keepalive");
}

/// Workers share one listening socket; new connections are shared between them, rather than
/// taken by whichever worker wakes first.
#[test]
fn connections_are_shared_between_workers() {
    let server = Server::start(&example("demo"), &["-w", "2", "-b", "127.0.0.1:0"]);
    server.wait_workers(2);
    let mut per_worker = std::collections::HashMap::new();
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut conn = Conn::open(server.addr()).unwrap();
        *per_worker.entry(conn.get("/pid").unwrap().text()).or_insert(0) += 1;
        held.push(conn);
    }
    assert_eq!(per_worker.len(), 2, "{per_worker:?}");
    assert!(per_worker.values().all(|&n| n >= 10), "40 connections split {per_worker:?}");
}

#[test]
fn a_panicking_handler_gets_500_and_the_worker_survives() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", "127.0.0.1:0"]);
    let mut conn = Conn::open(server.addr()).unwrap();
    let pid = conn.get("/pid").unwrap().text();

    let response = conn.get("/panic").unwrap();
    assert_eq!(response.status, 500);
    assert_eq!(response.text(), "Internal Server Error\n");
    // Same connection, same worker, still serving.
    assert_eq!(conn.get("/pid").unwrap().text(), pid);
    let line = server.wait_for("handler panicked");
    assert!(line.contains("path=/panic"), "{line}");
    assert!(line.contains("on purpose"), "the panic message is logged: {line}");
    assert_eq!(server.count("worker died"), 0);
}

#[test]
fn a_malformed_request_gets_400_and_the_worker_survives() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", "127.0.0.1:0"]);
    let addr = server.addr();
    let pid = http::get(addr, "/pid").unwrap().text();
    let response = http::raw(addr, b"GET / HTTP/1.1\r\nHost t\r\n\r\n").unwrap();
    assert_eq!(response.status, 400);
    assert_eq!(http::get(addr, "/pid").unwrap().text(), pid);
}
