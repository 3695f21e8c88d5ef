//! The binary's config read with its app kinds: one kind per route, each kind's keys checked by
//! its own module, `--print-config` round trips, and every file in `config/`.

use std::path::Path;

use http::StatusCode;

use super::Router;
use super::respond::Respond;
use super::static_files::StaticDir;
use crate::config::{Config, KindReader, KindValue, RouteKind, Schema, SpannedError};
use crate::error::{ConfigError, Error};

/// The binary's schema: forkserve's app kinds, no program table.
pub(crate) fn schema() -> Schema {
    Schema::default().with_kinds(super::route_kinds())
}

/// Parses `text` as the binary would, relative paths from `/`.
pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
    match Config::from_toml(text, Path::new("/"), &schema()) {
        Ok(c) => Ok(c),
        Err(Error::Config(e)) => Err(e),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn route_needs_exactly_one_action() {
    let e = parse("[[route]]\npath = \"/\"\nrespond = \"x\"\nstatic = \"/\"\n").unwrap_err();
    let kinds = if cfg!(feature = "python") {
        ("one of respond, static or wsgi", "one of respond, static or wsgi", ", `wsgi`")
    } else {
        ("either respond or static", "respond or static", "")
    };
    assert_eq!(e.message, format!("route \"/\" has two actions: give {}", kinds.0));
    assert_eq!((e.line, e.column), (1, 1), "{e}");
    let e = parse("[[route]]\npath = \"/\"\n").unwrap_err();
    assert_eq!(e.message, format!("route \"/\" has no action: give {}", kinds.1));
    let e = parse("[[route]]\npath = \"/\"\nproxy = \"x\"\n").unwrap_err();
    assert_eq!(
        e.message,
        format!("unknown field `proxy`, expected one of `path`, `respond`, `static`{}", kinds.2)
    );
    assert_eq!((e.line, e.column), (3, 1), "{e}");
}

#[test]
fn each_route_is_served_by_the_kind_that_read_it() {
    let c = parse(
        "[[route]]\npath = \"/a\"\nrespond = \"a\"\n[[route]]\npath = \"/s/\"\nstatic = \"/\"\n",
    )
    .unwrap();
    let (a, s) = (&c.routes[0], &c.routes[1]);
    assert_eq!((a.kind(), s.kind()), ("respond", "static"));
    assert_eq!(a.config::<Respond>().map(|r| &r.body[..]), Some(&b"a"[..]));
    assert!(a.config::<StaticDir>().is_none());
    assert_eq!(s.config::<StaticDir>().map(|p| p.as_path()), Some(Path::new("/")));
    assert!(s.config::<Respond>().is_none());
    assert_eq!(c.route_descriptors(), 1, "a static route keeps its directory open");
}

#[test]
fn a_route_read_by_another_kind_under_the_same_key_is_refused_not_served() {
    /// A kind that calls itself `respond` and holds a string.
    struct Impostor;
    impl RouteKind for Impostor {
        const KEY: &'static str = "respond";
        type Config = String;
        fn read(value: KindValue<'_>) -> Result<String, SpannedError> {
            value.read()
        }
    }
    let schema = Schema::default().with_kinds([KindReader::of::<Impostor>()]);
    let text = "[[route]]\npath = \"/\"\nrespond = \"x\"\n";
    let config = Config::from_toml(text, Path::new("/"), &schema).unwrap();
    let e = Router::new(&config.routes).unwrap_err();
    assert_eq!(
        e.to_string(),
        "route \"/\": its respond value was not read by this server's app kind"
    );
}

#[test]
fn respond_table_is_checked() {
    let c = parse(
        "[[route]]\npath = \"/\"\nrespond = { status = 201, body = \"ok\", headers = { x-a = \"b\" } }\n",
    )
    .unwrap();
    let r = c.routes[0].config::<Respond>().unwrap();
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
    // Keys of a kind's table are its own: an unknown one is named where it is.
    let e =
        parse("[[route]]\npath = \"/\"\n[route.respond]\nstatus = 200\nnope = 1\n").unwrap_err();
    assert_eq!((e.line, e.column), (5, 1), "{e}");
    assert_eq!(
        e.message,
        "unknown field `nope`, expected one of `status`, `body`, `content_type`, `headers`"
    );
}

#[test]
fn print_config_round_trips() {
    let text = "[server]\nworkers = 2\ngraceful_timeout = 1.5\n[[route]]\npath = \"/\"\nrespond = { status = 202, body = \"hi\" }\n[[route]]\npath = \"/s/\"\nstatic = \"/\"\n";
    let c = parse(text).unwrap();
    assert_eq!(parse(&c.to_toml()).unwrap(), c);
    // Unlike a config with another body.
    assert_ne!(parse(&text.replace("hi", "ho")).unwrap(), c);
}

#[test]
fn every_shipped_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let config = Config::load(&path, &schema()).unwrap_or_else(|e| panic!("{e}"));
            // What `--print-config` shows of it reads back as the same config.
            let printed = Config::from_toml(&config.to_toml(), Path::new("/"), &schema());
            assert_eq!(printed.ok().as_ref(), Some(&config), "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen > 0, "no config files found in {}", dir.display());
}

#[test]
fn the_declared_status_body_and_headers_are_sent() {
    let config = parse(
        "[[route]]\npath = \"/\"\nrespond = { status = 201, body = \"made\", content_type = \"text/x\", headers = { x-a = \"1\" } }\n",
    )
    .unwrap();
    let response = super::respond::respond(config.routes[0].config::<Respond>().unwrap());
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()[http::header::CONTENT_TYPE], "text/x");
    assert_eq!(response.headers()["x-a"], "1");
    assert_eq!(response.into_body().into_bytes().unwrap(), "made");
}

#[test]
fn a_static_directory_whose_name_is_not_utf8_is_served_and_printed_lossily() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join(OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir(&odd).unwrap();
    std::os::unix::fs::symlink(&odd, dir.path().join("files")).unwrap();
    let text = "[[route]]\npath = \"/\"\nstatic = \"files\"\n";
    let c = Config::from_toml(text, dir.path(), &schema()).expect("a non-UTF-8 directory serves");
    assert_eq!(c.routes[0].config::<StaticDir>().map(|r| r.as_path()), Some(odd.as_path()));
    assert!(c.to_toml().contains("caf\u{fffd}"), "{}", c.to_toml());
}
