//! The config's unit tests: parsing, errors at `file:line:col`, `--print-config`, and every
//! file in `config/`.

use std::num::NonZeroUsize;
use std::time::Duration;

use http::StatusCode;

use super::*;
use crate::error::ConfigError;

fn parse(text: &str) -> Result<Config, ConfigError> {
    match Config::from_toml(text, Path::new("/")) {
        Ok(c) => Ok(c),
        Err(Error::Config(e)) => Err(e),
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn empty_file_means_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c, Config::default());
    let s = &c.server;
    assert_eq!(
        (s.timeout.0, s.boot_timeout.0, s.graceful_timeout.0),
        (secs(30), secs(30), secs(30))
    );
    assert_eq!(ServerConfig::limit(s.request_timeout), None, "request_timeout is off");
    assert_eq!((s.max_requests, s.max_worker_memory, s.worker_connections), (0, 0, 1000));
    assert_eq!(ServerConfig::limit(s.max_worker_lifetime), None);
}

#[test]
fn full_server_table() {
    let c = parse(
        r#"
        [server]
        bind = ["0.0.0.0:80", "[::1]:8080", "unix:/run/app.sock"]
        workers = 3
        backlog = 10
        graceful_timeout = 0.5
        timeout = 12
        boot_timeout = 60
        request_timeout = 2.5
        max_requests = 1000
        max_requests_jitter = 50
        max_worker_memory = 512
        max_worker_lifetime = 3600
        worker_connections = 64
        pidfile = "/run/fs.pid"
        [log]
        level = "DEBUG"
        "#,
    )
    .unwrap();
    let s = &c.server;
    assert_eq!((s.timeout.0, s.boot_timeout.0), (secs(12), secs(60)));
    assert_eq!(s.request_timeout.0, Duration::from_millis(2500));
    assert_eq!((s.max_requests, s.max_requests_jitter, s.max_worker_memory), (1000, 50, 512));
    assert_eq!((s.max_worker_lifetime.0, s.worker_connections), (secs(3600), 64));
    assert_eq!(c.server.bind[1], Bind::Tcp { host: "::1".into(), port: 8080 });
    assert_eq!(c.server.bind[2], Bind::Unix("/run/app.sock".into()));
    assert_eq!(c.server.workers.resolve(), 3);
    assert_eq!(c.server.graceful_timeout.0, Duration::from_millis(500));
    assert_eq!(c.log.level, LogLevel::Debug);
}

#[test]
fn errors_point_at_the_value() {
    let e = parse("[server]\nworkers = 0\n").unwrap_err();
    assert_eq!((e.line, e.column), (2, 11), "{e}");
    assert!(e.message.contains("at least 1"), "{e}");

    let e = parse("[server]\n  bogus = 1\n").unwrap_err();
    assert_eq!((e.line, e.column), (2, 3), "{e}");
    assert!(e.message.contains("unknown field"), "{e}");

    let e = parse("[server]\nbind = [\"nope\"]\n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    assert!(e.message.contains("HOST:PORT"), "{e}");
}

#[test]
fn route_needs_exactly_one_action() {
    let e = parse("[[route]]\npath = \"/\"\nrespond = \"x\"\nstatic = \"/\"\n").unwrap_err();
    assert!(e.message.contains("two actions"), "{e}");
    assert_eq!(e.line, 1, "{e}");
    let e = parse("[[route]]\npath = \"/\"\n").unwrap_err();
    assert!(e.message.contains("no action"), "{e}");
}

#[test]
fn respond_table_is_checked() {
    let c = parse(
        "[[route]]\npath = \"/\"\nrespond = { status = 201, body = \"ok\", headers = { x-a = \"b\" } }\n",
    )
    .unwrap();
    let Action::Respond(r) = &c.routes[0].action else { panic!() };
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.headers[0].0, "x-a");
    for bad in [
        "status = 700",
        "status = 204, body = \"x\"",
        "headers = { \"bad name\" = \"x\" }",
        "content_type = \"a\\nb\"",
        "nope = 1",
    ] {
        let text = format!("[[route]]\npath = \"/\"\nrespond = {{ {bad} }}\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, 3, "{bad}: {e}");
    }
}

#[test]
fn bind_forms() {
    assert_eq!("localhost:80".parse::<Bind>().unwrap().to_string(), "localhost:80");
    assert_eq!("[::]:80".parse::<Bind>().unwrap().to_string(), "[::]:80");
    for bad in ["", ":80", "host", "host:", "host:99999", "::1:80", "[zz]:80", "unix:"] {
        assert!(bad.parse::<Bind>().is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn print_config_round_trips() {
    let text = "[server]\nworkers = 2\ngraceful_timeout = 1.5\n[[route]]\npath = \"/\"\nrespond = { status = 202, body = \"hi\" }\n";
    let c = parse(text).unwrap();
    assert_eq!(parse(&c.to_toml()).unwrap(), c);
}

#[test]
fn a_config_built_in_code_is_checked_as_a_file_is() {
    assert_eq!(ServerConfig::default().check(), Ok(()));
    let mut server =
        ServerConfig { graceful_timeout: Seconds(Duration::ZERO), ..Default::default() };
    assert!(server.check().unwrap_err().contains("graceful_timeout"));
    server.graceful_timeout = Seconds(secs(1));
    server.timeout = Seconds(Duration::from_millis(1));
    assert!(server.check().unwrap_err().contains("timeout must be 0 (off) or at least 1 s"));
    server.timeout = Seconds(secs(1));
    server.workers = Workers::Count(NonZeroUsize::new(MAX_WORKERS + 1).unwrap());
    assert!(server.check().unwrap_err().contains("at most 1024"));
    assert!(Workers::Auto.resolve() <= MAX_WORKERS);
}

#[test]
fn every_shipped_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            // What `--print-config` shows of it reads back as the same config.
            let printed = Config::from_toml(&config.to_toml(), Path::new("/"));
            assert_eq!(printed.ok().as_ref(), Some(&config), "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen > 0, "no config files found in {}", dir.display());
}
