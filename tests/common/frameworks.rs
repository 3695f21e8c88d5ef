//! The Flask app and the Django project of `tests/python/` (real frameworks, from the test
//! virtualenv; the standard-library apps of `tests/python/wsgi/` are [`super::wsgi`]'s) under
//! the real binary: the virtualenv, starting `forkserve` with an app (at the root with
//! `--wsgi`, under a prefix, or from a `[python]` table), and what the apps' requests need
//! (multipart bodies, file digests, their flat JSON answers). The scenarios both apps answer
//! alike live in [`super::framework_scenarios`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::http::{Conn, Response};
use super::{Server, forkserve, write};

/// One of the apps in `tests/python/`.
pub struct App {
    /// What the test calls it, and what its `/hello` says: `hello from {name}`.
    pub name: &'static str,
    /// The `module:callable` forkserve imports, from `tests/python/`.
    pub wsgi: &'static str,
    /// The key of `/info`'s answer naming the framework's `__init__.py`.
    pub framework_file: &'static str,
    /// `PATH_INFO` as the app reports it for `/caf%C3%A9`: PEP 3333's latin-1 string for
    /// Flask (it reports the raw environ), the decoded path for Django (it reports `META`,
    /// which Django has already decoded).
    pub cafe_raw: &'static str,
    /// The file, under `tests/python/`, whose code answers `/hello`.
    pub hello_source: &'static str,
    /// A file, under `tests/python/`, that importing the app imports (Django imports its
    /// views only at the first request that needs them).
    pub boot_source: &'static str,
}

pub const FLASK: App = App {
    name: "flask",
    wsgi: "flask_app:app",
    framework_file: "flask_file",
    cafe_raw: r"/caf\u00c3\u00a9",
    hello_source: "flask_app.py",
    boot_source: "flask_app.py",
};

pub const DJANGO: App = App {
    name: "django",
    wsgi: "django_site.wsgi:application",
    framework_file: "django_file",
    cafe_raw: r"/caf\u00e9",
    hello_source: "django_site/views.py",
    boot_source: "django_site/settings.py",
};

/// The repository's root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/python/`, where the apps are.
pub fn apps_dir() -> PathBuf {
    root().join("tests/python")
}

/// The virtualenv with the apps' requirements, `target/test-venv`, made by
/// `tests/python/setup.sh`. A missing one fails the test: skipping would pass a run that
/// tested nothing.
pub fn venv() -> PathBuf {
    // The virtualenv a pip-installed forkserve is in, when `.ci/run` runs the tests through it.
    if let Some(venv) = std::env::var_os("FORKSERVE_TEST_VENV").filter(|v| !v.is_empty()) {
        return PathBuf::from(venv);
    }
    let venv = root().join("target/test-venv");
    // setup.sh writes its stamp only after a complete install.
    let complete =
        venv.join("bin/python").exists() && venv.join(".forkserve-requirements").exists();
    assert!(
        complete,
        "the Python tests need the virtualenv {} with tests/python/requirements.txt installed: \
         run `bash tests/python/setup.sh` (or the test command `bash tests/run.sh`, which runs it \
         before cargo test)",
        venv.display()
    );
    venv
}

/// Starts forkserve serving `app` at `/` with `workers` workers of `threads` Python threads,
/// plus `extra` flags and `env`, and waits until its workers are ready.
pub fn start(
    app: &App,
    workers: usize,
    threads: usize,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Server {
    let mut flags = vec!["-w".to_string(), workers.to_string()];
    flags.extend(["--threads".to_string(), threads.to_string()]);
    flags.extend(extra.iter().map(|s| s.to_string()));
    start_app(app.wsgi, &apps_dir(), &flags, env)
}

/// Starts forkserve serving `wsgi` (`module:callable`) found in `pythonpath`, from the test
/// virtualenv, with `flags`, and waits until its workers are ready.
pub fn start_app(wsgi: &str, pythonpath: &Path, flags: &[String], env: &[(&str, &str)]) -> Server {
    let server = spawn_app(wsgi, pythonpath, flags, env);
    server.wait_for("all workers ready");
    server
}

/// Like [`start_app`], without waiting for the workers.
pub fn spawn_app(wsgi: &str, pythonpath: &Path, flags: &[String], env: &[(&str, &str)]) -> Server {
    let venv = venv();
    let mut args = vec![
        "--wsgi",
        wsgi,
        "--pythonpath",
        pythonpath.to_str().unwrap(),
        "--venv",
        venv.to_str().unwrap(),
        "-b",
        "127.0.0.1:0",
    ];
    args.extend(flags.iter().map(String::as_str));
    Server::spawn_with(&forkserve(), &args, env)
}

/// Copies `tests/python/`'s files and packages (not `wsgi/`) into `dir`, for a test that
/// edits an app.
pub fn copy_apps(dir: &Path) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap().map(Result::unwrap) {
            let (name, path) = (entry.file_name(), entry.path());
            if path.is_dir() {
                if name != "wsgi" && name != "__pycache__" {
                    copy(&path, &to.join(&name));
                }
            } else if path.extension().is_some_and(|e| e == "py") {
                std::fs::copy(&path, to.join(&name)).unwrap();
            }
        }
    }
    copy(&apps_dir(), dir);
}

/// Starts forkserve with `app` mounted at `prefix` (which ends in `/`) by a `[[route]]` of a
/// config file in `dir`, its Python path and venv given as flags; one worker.
pub fn start_under(app: &App, prefix: &str, dir: &Path) -> Server {
    let route = format!("[[route]]\npath = {prefix:?}\nwsgi = {:?}\n", app.wsgi);
    let config = write(dir, "app.toml", &route);
    let (apps, venv) = (apps_dir(), venv());
    let args = [
        &config,
        "--pythonpath",
        apps.to_str().unwrap(),
        "--venv",
        venv.to_str().unwrap(),
        "-w",
        "1",
        "-b",
        "127.0.0.1:0",
    ];
    Server::start(&forkserve(), &args)
}

/// Starts forkserve with `app` at `/` declared by the `[python]` table of a config file in
/// `dir` (`wsgi`, `pythonpath`, `venv`, `threads = 2`), no flags but the worker count and address.
pub fn start_from_table(app: &App, dir: &Path) -> Server {
    let config = format!(
        "[python]\nwsgi = {:?}\npythonpath = [{:?}]\nvenv = {:?}\nthreads = 2\n",
        app.wsgi,
        apps_dir().to_str().unwrap(),
        venv().to_str().unwrap(),
    );
    let config = write(dir, "app.toml", &config);
    Server::start(&forkserve(), &[&config, "-w", "1", "-b", "127.0.0.1:0"])
}

/// One request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut conn = Conn::open(addr).expect("connect");
    conn.request(method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: no response: {e}"))
}

/// A GET on a fresh connection that must answer `200`; returns the body as text.
pub fn get_ok(addr: SocketAddr, path: &str) -> String {
    let response = request(addr, "GET", path, &[], b"");
    assert_eq!(response.status, 200, "GET {path}: {}", response.text());
    response.text()
}

/// The worker pid that answers `/pid` on `conn`.
pub fn pid_on(conn: &mut Conn) -> i32 {
    let response = conn.get("/pid").expect("GET /pid");
    assert_eq!(response.status, 200, "GET /pid: {}", response.text());
    response.text().trim().parse().expect("a pid")
}

/// A value of a flat JSON object as the apps write it (compact, ASCII): a string's contents
/// (escapes left as written), or a number or literal as text.
pub fn json_field(json: &str, key: &str) -> String {
    let at = json.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("no {key:?} in {json}"));
    let value = &json[at + key.len() + 3..];
    if let Some(text) = value.strip_prefix('"') {
        let mut end = 0;
        let bytes = text.as_bytes();
        while bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        text[..end].to_string()
    } else {
        value.split([',', '}']).next().unwrap().to_string()
    }
}

/// `len` bytes that do not repeat in any short period, the same on every run.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The sha256 of `data`, in hex, from coreutils' `sha256sum` (the tests carry no hash crate).
pub fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("sha256sum output");
    writer.join().unwrap().expect("write to sha256sum");
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// A `multipart/form-data` body with one text field and one file; returns the body and its
/// `Content-Type`.
pub fn multipart(field: (&str, &str), file: (&str, &str, &[u8])) -> (Vec<u8>, String) {
    let boundary = "forkserve-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::with_capacity(file.2.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{}\r\n",
            field.0, field.1
        )
        .as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n",
            file.0, file.1
        )
        .as_bytes(),
    );
    body.extend_from_slice(file.2);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

/// Sends a GET on a fresh connection and notes when each of `marks` first appears in the raw
/// bytes received (head, chunk framing and all), counted from the send; stops at the last.
pub fn arrivals(addr: SocketAddr, path: &str, marks: &[&str]) -> Vec<Duration> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let start = Instant::now();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).unwrap();
    let (mut seen, mut times) = (Vec::new(), Vec::new());
    let mut chunk = [0u8; 4096];
    while times.len() < marks.len() {
        let n = match stream.read(&mut chunk) {
            Ok(0) => panic!("closed after {:?}: {}", times, String::from_utf8_lossy(&seen)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("read: {e}; so far: {}", String::from_utf8_lossy(&seen)),
        };
        seen.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&seen);
        while times.len() < marks.len() && text.contains(marks[times.len()]) {
            times.push(start.elapsed());
        }
    }
    times
}
