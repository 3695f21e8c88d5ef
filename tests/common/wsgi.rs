//! Running the binary with the small WSGI apps of `tests/python/wsgi/` (standard library only,
//! no virtualenv), and reading what they answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Server, forkserve};

/// The directory of the test apps.
pub fn apps() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/wsgi")
}

/// The environment every Python server gets: no `__pycache__` written into the source tree
/// (or into a test's directory, where a rewritten module must not be shadowed by its cache).
pub const ENV: &[(&str, &str)] = &[("PYTHONDONTWRITEBYTECODE", "1")];

/// Arguments that serve `app` (`module:callable`) of `tests/python/wsgi/` on a free local
/// port, followed by `extra`.
pub fn args(app: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--wsgi", app, "--chdir", apps().to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["-b", "127.0.0.1:0"].iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts the binary serving `app` with `extra` arguments, and waits for its workers.
pub fn start(app: &str, extra: &[&str]) -> Server {
    let args = args(app, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_with(&forkserve(), &args, ENV)
}

/// Like [`start`], with more environment variables.
pub fn start_with(app: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let args = args(app, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = ENV.iter().chain(env).copied().collect();
    Server::start_with(&forkserve(), &args, &env)
}

/// A body of `key<TAB>value` lines (the values JSON-encoded by the app) as a map.
pub fn fields(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The pid of the worker that answers `/pid`.
pub fn pid(addr: SocketAddr) -> i32 {
    let r = super::http::get(addr, "/pid").expect("GET /pid");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text().trim().parse().unwrap_or_else(|_| panic!("not a pid: {:?}", r.text()))
}

/// Adler-32 of `data`, as Python's `zlib.adler32` computes it: the apps report it for what
/// they read, a checksum the test can compute without a dependency.
pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}
