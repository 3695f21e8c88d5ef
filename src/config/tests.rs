//! The config's unit tests: parsing, errors at `file:line:col`, `--print-config`, and what a
//! schema brings: app kinds (two made up here; forkserve's own are tested in `app`) and a
//! program's own tables.

use std::num::NonZeroUsize;
use std::time::Duration;

use super::*;
use crate::error::ConfigError;

/// A kind whose value is a string.
struct Echo;

impl RouteKind for Echo {
    const KEY: &'static str = "echo";
    type Config = String;
    fn read(value: KindValue<'_>) -> Result<String, SpannedError> {
        value.read()
    }
}

/// A kind whose value is a table of its own, checked after it is read.
struct Count;

#[derive(Debug, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CountConfig {
    to: u32,
    #[serde(default)]
    step: u32,
}

impl RouteKind for Count {
    const KEY: &'static str = "count";
    const DESCRIPTORS: usize = 2;
    type Config = CountConfig;
    fn read(value: KindValue<'_>) -> Result<CountConfig, SpannedError> {
        let span = value.span();
        let config: CountConfig = value.read()?;
        if config.step > config.to {
            return Err(SpannedError::at(span, "step must not be more than to".into()));
        }
        Ok(config)
    }
}

/// A program's own table.
#[derive(Debug, PartialEq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Greeter {
    greeting: String,
    #[serde(default = "one")]
    times: u32,
}

fn one() -> u32 {
    1
}

/// Two made-up app kinds.
fn kinds() -> Schema {
    Schema::default().with_kinds([KindReader::of::<Echo>(), KindReader::of::<Count>()])
}

/// The made-up kinds, and a program's table.
fn schema() -> Schema {
    kinds().table_checked::<Greeter>("greeter", |g| match g.times {
        1..=3 => Ok(()),
        n => Err(format!("times must be 1 to 3, not {n}")),
    })
}

fn parse_with(text: &str, schema: &Schema) -> Result<Config, ConfigError> {
    match Config::from_toml(text, Path::new("/"), schema) {
        Ok(c) => Ok(c),
        Err(Error::Config(e)) => Err(e),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Parses `text` with forkserve's tables only.
fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with(text, &Schema::default())
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
    assert_eq!(c.server.bind[1].bind, Bind::Tcp { host: "::1".into(), port: 8080 });
    assert_eq!(c.server.bind[2].bind, Bind::Unix("/run/app.sock".into()));
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
fn bind_forms() {
    assert_eq!("localhost:80".parse::<Bind>().unwrap().to_string(), "localhost:80");
    assert_eq!("[::]:80".parse::<Bind>().unwrap().to_string(), "[::]:80");
    for bad in ["", ":80", "host", "host:", "host:99999", "::1:80", "[zz]:80", "unix:"] {
        assert!(bad.parse::<Bind>().is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn bind_schemes_keep_the_socket_address_bare() {
    use super::{Listen, Scheme};
    for (text, scheme, bare, tls_under_tls) in [
        ("127.0.0.1:443", Scheme::Default, "127.0.0.1:443", true),
        ("http://[::1]:80", Scheme::Http, "[::1]:80", false),
        ("https://unix:/run/s.sock", Scheme::Https, "unix:/run/s.sock", true),
    ] {
        let l: Listen = text.parse().unwrap();
        assert_eq!((l.scheme, l.bind.to_string()), (scheme, bare.to_string()), "{text}");
        assert_eq!(l.to_string(), text, "written back as given");
        assert_eq!(l.is_tls(true), tls_under_tls, "{text}");
    }
    assert!(!"127.0.0.1:443".parse::<Listen>().unwrap().is_tls(false), "no [tls]: cleartext");
    assert!("ftp://x:1".parse::<Listen>().is_err());
    let dup = Config::from_toml(
        "[server]\nbind = [\"127.0.0.1:1\", \"http://127.0.0.1:1\"]\n",
        Path::new(""),
        &Schema::default(),
    );
    assert!(dup.unwrap_err().to_string().contains("listed twice"), "one socket, two schemes");
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
fn a_route_is_a_path_and_one_kind_of_the_schema() {
    let schema = kinds();
    let c = parse_with(
        "[[route]]\npath = \"/a\"\necho = \"hi\"\n[[route]]\npath = \"/b\"\ncount = { to = 3 }\n",
        &schema,
    )
    .unwrap();
    assert_eq!(c.routes[0].kind(), "echo");
    assert_eq!(c.routes[0].config::<Echo>().map(String::as_str), Some("hi"));
    assert!(c.routes[0].config::<Count>().is_none(), "another kind's value");
    assert_eq!(c.routes[1].config::<Count>().map(|c| (c.to, c.step)), Some((3, 0)));
    assert_eq!(c.route_descriptors(), 2);

    for (text, at, message) in [
        (
            "[[route]]\npath = \"/\"\necho = \"x\"\ncount = { to = 1 }\n",
            (1, 1),
            "route \"/\" has two actions: give either echo or count",
        ),
        ("[[route]]\npath = \"/\"\n", (1, 1), "route \"/\" has no action: give echo or count"),
        (
            "[[route]]\npath = \"/\"\nstatic = \"x\"\n",
            (3, 1),
            "unknown field `static`, expected one of `path`, `echo`, `count`",
        ),
        ("[[route]]\necho = \"x\"\n", (1, 1), "missing field `path`"),
        (
            "[[route]]\npath = 1\necho = \"x\"\n",
            (2, 8),
            "invalid type: integer `1`, expected a string",
        ),
        ("[[route]]\npath = \"a\"\necho = \"x\"\n", (2, 8), "route path \"a\" must start with /"),
        (
            "[[route]]\npath = \"/\"\necho = \"x\"\n[[route]]\npath = \"/\"\necho = \"y\"\n",
            (5, 8),
            "route path \"/\" is declared twice",
        ),
        // The kinds' own errors, where they are.
        (
            "[[route]]\npath = \"/\"\necho = 1\n",
            (3, 8),
            "invalid type: integer `1`, expected a string",
        ),
        (
            "[[route]]\npath = \"/\"\ncount = { to = 1, by = 2 }\n",
            (3, 19),
            "unknown field `by`, expected `to` or `step`",
        ),
        (
            "[[route]]\npath = \"/\"\n[route.count]\nto = 1\nstep = 2\n",
            (3, 1),
            "step must not be more than to",
        ),
        ("route = 5\n", (1, 9), "invalid type: integer `5`, expected a sequence"),
        ("route = [5]\n", (1, 10), "invalid type: integer `5`, expected a map"),
    ] {
        let e = parse_with(text, &schema).unwrap_err();
        assert_eq!((e.line, e.column, e.message.as_str()), (at.0, at.1, message), "{text}");
    }
    // Without kinds, a route can name none.
    let e = parse("[[route]]\npath = \"/\"\necho = \"x\"\n").unwrap_err();
    assert_eq!(e.message, "unknown field `echo`, expected `path`");
}

#[test]
fn a_program_table_is_read_checked_and_printed() {
    let schema = schema();
    let c = parse_with("[greeter]\ngreeting = \"hi\"\n", &schema).unwrap();
    assert_eq!(c.table::<Greeter>("greeter"), Some(&Greeter { greeting: "hi".into(), times: 1 }));
    assert_eq!(c.table::<Greeter>("other"), None);
    assert_eq!(c.table::<String>("greeter"), None, "another type");
    let printed = c.to_toml();
    assert!(printed.ends_with("[greeter]\ngreeting = \"hi\"\ntimes = 1\n"), "{printed}");
    assert_eq!(parse_with(&printed, &schema).unwrap(), c);
    assert_ne!(parse_with("[greeter]\ngreeting = \"ho\"\n", &schema).unwrap(), c);

    for (text, at, message) in [
        ("[greeter]\ngreeting = 5\n", (2, 12), "invalid type: integer `5`, expected a string"),
        (
            "[greeter]\ngreeting = \"hi\"\ntimse = 2\n",
            (3, 1),
            "unknown field `timse`, expected `greeting` or `times`",
        ),
        ("[greeter]\ngreeting = \"hi\"\ntimes = 9\n", (1, 1), "times must be 1 to 3, not 9"),
        ("[greeter]\n", (1, 1), "missing field `greeting`"),
        (
            "[greeterr]\n",
            (1, 2),
            "unknown field `greeterr`, expected one of `server`, `http`, `http2`, `log`, `python`, \
             `metrics`, `tls`, `route`, `greeter`",
        ),
    ] {
        let e = parse_with(text, &schema).unwrap_err();
        assert_eq!((e.line, e.column, e.message.as_str()), (at.0, at.1, message), "{text}");
    }
    // A file without the table reads it as empty: here, without its required key.
    let e = parse_with("[server]\nworkers = 1\n", &schema).unwrap_err();
    assert_eq!(e.line, 0, "{e}");
    assert_eq!(e.message, "no [greeter] table: missing field `greeting`");
    // Nor is it known where no one declared it.
    let e = parse("[greeter]\ngreeting = \"hi\"\n").unwrap_err();
    assert_eq!(
        e.message,
        "unknown field `greeter`, expected one of `server`, `http`, `http2`, `log`, `python`, \
         `metrics`, `tls`, `route`"
    );
}

#[test]
fn a_program_table_with_defaults_needs_no_table_in_the_file() {
    #[derive(Debug, Default, PartialEq, serde::Deserialize, Serialize)]
    #[serde(default)]
    struct Quiet {
        level: u8,
    }
    let schema = Schema::default().table_checked::<Quiet>("quiet", |_| Ok(()));
    let c = parse_with("", &schema).unwrap();
    assert_eq!(c.table::<Quiet>("quiet"), Some(&Quiet::default()));
    assert_eq!(parse_with(&c.to_toml(), &schema).unwrap(), c);
}

#[test]
fn a_program_table_must_be_a_table_as_printed_too() {
    // A bare value at the top of the file would be printed after forkserve's tables, where it
    // would belong to the last of them.
    let schema = Schema::default().table_checked::<String>("motto", |_| Ok(()));
    let e = parse_with("motto = \"hi\"\n", &schema).unwrap_err();
    assert_eq!((e.line, e.column), (1, 9), "{e}");
    assert_eq!(e.message, "[motto] must be written as a table, not as \"hi\"");
}

#[test]
#[should_panic(expected = "[server] is a table of forkserve's own")]
fn a_program_table_cannot_take_a_name_of_forkserve() {
    let _ = Schema::default().table_checked::<Greeter>("server", |_| Ok(()));
}

#[test]
#[should_panic(expected = "table name \"a.b\" is not a bare TOML key")]
fn a_program_table_name_is_a_bare_key() {
    let _ = Schema::default().table_checked::<Greeter>("a.b", |_| Ok(()));
}

#[test]
fn a_program_table_whose_check_panics_is_refused_not_fatal() {
    let schema = Schema::default().table_checked::<Greeter>("greeter", |_| panic!("a bug"));
    let e = parse_with("[greeter]\ngreeting = \"hi\"\n", &schema).unwrap_err();
    assert_eq!(e.line, 1, "{e}");
    assert_eq!(e.message, "[greeter]: the program panicked reading it");
}
