//! Every class of config and usage error: the binary prints `forkserve: error: …` (with
//! `file:line:col` for errors in a config file) and exits 2 before binding anything.

mod common;

use std::path::Path;

use common::{Server, forkserve, open_to_others, tempdir, write};

/// Runs the binary to completion; returns (exit code, everything it printed).
fn run(args: &[&str]) -> (i32, String) {
    let mut server = Server::spawn(&forkserve(), args);
    let output = server.output();
    (server.exit_code(), output)
}

/// A config that would bind a unix socket in `dir` if it got that far, followed by `rest`.
fn config_binding_in(dir: &Path, rest: &str) -> String {
    format!("[server]\nbind = [\"unix:{}\"]\n{rest}", dir.join("sock").display())
}

#[test]
fn each_error_class_names_file_line_and_column_and_binds_nothing() {
    let dir = tempdir();
    let public = dir.path().join("public");
    std::fs::create_dir(&public).unwrap();
    let cases: &[(&str, &str, (usize, usize), &str)] = &[
        ("unknown key", "bogus = 1\n", (3, 1), "unknown field `bogus`"),
        ("unknown table", "[serverr]\nworkers = 1\n", (3, 2), "unknown field `serverr`"),
        ("bad type", "workers = \"many\"\n", (3, 11), "invalid value"),
        ("bad type for backlog", "backlog = \"big\"\n", (3, 11), "invalid type"),
        ("zero workers", "workers = 0\n", (3, 11), "workers must be at least 1"),
        ("bad bind", "", (2, 9), "expected HOST:PORT"),
        ("negative timeout", "graceful_timeout = -1\n", (3, 20), "must not be negative"),
        (
            "zero worker_connections",
            "worker_connections = 0\n",
            (3, 22),
            "worker_connections must be between 1 and 1000000",
        ),
        ("negative max_requests", "max_requests = -5\n", (3, 16), "expected 0 or more, not -5"),
        ("bad max_worker_memory", "max_worker_memory = \"1G\"\n", (3, 21), "invalid type"),
        ("bad request_timeout", "request_timeout = \"1s\"\n", (3, 19), "a number of seconds"),
        ("bad log level", "[log]\nlevel = \"loud\"\n", (4, 9), "unknown log level"),
        ("syntax", "workers = \n", (3, 11), "string values must be quoted"),
        (
            "two actions",
            "[[route]]\npath = \"/\"\nrespond = \"x\"\nstatic = \"public\"\n",
            (3, 1),
            "has two actions",
        ),
        ("no action", "[[route]]\npath = \"/\"\n", (3, 1), "has no action"),
        (
            "unknown app kind",
            "[[route]]\npath = \"/\"\nproxy = \"http://x\"\n",
            (5, 1),
            "unknown field `proxy`, expected one of `path`, `respond`, `static`",
        ),
        (
            "static dir missing",
            "[[route]]\npath = \"/s/\"\nstatic = \"nowhere\"\n",
            (5, 10),
            "static directory",
        ),
        (
            "bad status",
            "[[route]]\npath = \"/\"\nrespond = { status = 99 }\n",
            (5, 11),
            "status must be between 200 and 599",
        ),
        (
            "path without slash",
            "[[route]]\npath = \"x\"\nrespond = \"x\"\n",
            (4, 8),
            "must start with /",
        ),
    ];
    for (what, rest, (line, col), message) in cases {
        let text = if *what == "bad bind" {
            "[server]\nbind = [\"localhost\"]\n".to_string()
        } else {
            config_binding_in(dir.path(), rest)
        };
        let config = write(dir.path(), "app.toml", &text);
        let (code, output) = run(&[&config]);
        assert_eq!(code, 2, "{what}: {output}");
        let expected = format!("forkserve: error: {config}:{line}:{col}: ");
        assert!(output.starts_with(&expected), "{what}: expected {expected:?}…, got:\n{output}");
        assert!(output.contains(message), "{what}: expected {message:?} in:\n{output}");
        assert_eq!(output.lines().count(), 1, "{what}: one line only:\n{output}");
        assert!(!dir.path().join("sock").exists(), "{what}: nothing was bound");

        // --check-config reports the same error the same way.
        let (code, checked) = run(&["--check-config", &config]);
        assert_eq!((code, &checked), (2, &output), "{what}: --check-config");
    }
}

#[test]
fn a_missing_file_has_no_line_number() {
    let dir = tempdir();
    let missing = dir.path().join("absent.toml");
    let (code, output) = run(&[missing.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(
        output,
        format!("forkserve: error: {}: No such file or directory (os error 2)", missing.display())
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--workers", "0"][..],
        &["--workers", "lots"],
        &["--bind", "nowhere"],
        &["--graceful-timeout", "soon"],
        &["--no-such-flag"],
        &["a.toml", "b.toml"],
    ] {
        let (code, output) = run(args);
        assert_eq!(code, 2, "{args:?}: {output}");
        assert!(output.starts_with("forkserve: error: "), "{args:?}: {output}");
    }
}

#[test]
fn check_config_prints_nothing_for_a_valid_file() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/app.toml");
    let (code, output) = run(&["--check-config", config.to_str().unwrap()]);
    assert_eq!((code, output.as_str()), (0, ""));
}

#[test]
fn print_config_shows_flags_over_the_file() {
    let dir = tempdir();
    let config = write(dir.path(), "app.toml", "[server]\nworkers = 4\nbind = [\"127.0.0.1:1\"]\n");
    let (code, output) = run(&["--print-config", "-w", "2", "--log-level", "debug", &config]);
    assert_eq!(code, 0, "{output}");
    let printed: toml::Table = toml::from_str(&output).expect("valid TOML");
    assert_eq!(printed["server"]["workers"].as_integer(), Some(2));
    assert_eq!(printed["server"]["bind"][0].as_str(), Some("127.0.0.1:1"));
    assert_eq!(printed["log"]["level"].as_str(), Some("debug"));
    // What --print-config prints is itself a valid config.
    let again = write(dir.path(), "printed.toml", &output);
    assert_eq!(run(&["--check-config", &again]), (0, String::new()));
}

#[test]
fn help_and_version_exit_0() {
    let (code, help) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--workers",
        "--bind",
        "--timeout",
        "--graceful-timeout",
        "--pid",
        "--log-level",
        "--check-config",
        "--print-config",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
    let (code, version) = run(&["-V"]);
    assert_eq!((code, version.as_str()), (0, concat!("forkserve ", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn a_static_root_that_cannot_be_searched_is_a_config_error_at_check_and_at_start() {
    // Mode 000: the server (run unprivileged, as root would pass any permission check) could
    // open the directory but no file beneath it; every file would be answered 403.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    open_to_others(dir.path());
    let public = dir.path().join("public");
    std::fs::create_dir(&public).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o000)).unwrap();
    let config = write(
        dir.path(),
        "app.toml",
        "[server]\nbind = [\"127.0.0.1:0\"]\n[[route]]\npath = \"/s/\"\nstatic = \"public\"\n",
    );
    for args in [&["--check-config", config.as_str()][..], &[config.as_str()][..]] {
        let mut server = Server::spawn_unprivileged(&forkserve(), args);
        let output = server.output();
        assert_eq!(server.exit_code(), 2, "{args:?}: {output}");
        assert!(
            output.contains(&format!("forkserve: error: {config}:5:10: static directory ")),
            "{output}"
        );
        assert!(output.contains("cannot be searched (Permission denied"), "{output}");
        assert!(!output.contains("listening"), "nothing is bound: {output}");
    }
}

/// Asserts that `rest` (lines of the `[server]` table, after `bind`) is refused at
/// `line:col` with `message`, before anything is bound.
fn assert_refused(rest: &str, (line, col): (usize, usize), message: &str) {
    let dir = tempdir();
    let config = write(dir.path(), "app.toml", &config_binding_in(dir.path(), rest));
    // --check-config first: if the value were accepted, it would start nothing.
    let (code, checked) = run(&["--check-config", &config]);
    assert_eq!(code, 2, "{rest}: --check-config: {checked}");
    let (code, output) = run(&[&config]);
    assert_eq!(code, 2, "{rest}: {output}");
    assert_eq!(checked, output, "{rest}: --check-config reports the same");
    let expected = format!("forkserve: error: {config}:{line}:{col}: ");
    assert!(output.starts_with(&expected), "{rest}: expected {expected:?}…, got:\n{output}");
    assert!(output.contains(message), "{rest}: expected {message:?} in:\n{output}");
    assert!(!dir.path().join("sock").exists(), "{rest}: nothing was bound");
}

/// Asserts that the flags `args` are a usage error mentioning `message`.
fn assert_flag_refused(args: &[&str], message: &str) {
    let (code, output) = run(args);
    assert_eq!(code, 2, "{args:?}: {output}");
    assert!(output.starts_with("forkserve: error: "), "{args:?}: {output}");
    assert!(output.contains(message), "{args:?}: expected {message:?} in:\n{output}");
}

#[test]
fn a_timeout_below_one_second_is_refused() {
    let floor = "timeout must be 0 (off) or at least 1 s";
    assert_refused("timeout = 0.001\n", (3, 11), floor);
    assert_refused("timeout = 0.5\n", (3, 11), floor);
    assert_flag_refused(&["-t", "0.001", "--check-config"], floor);
    // 0 is off, and the floor itself is allowed.
    assert_eq!(run(&["-t", "0", "--check-config"]), (0, String::new()));
    assert_eq!(run(&["-t", "1", "--check-config"]), (0, String::new()));
}

#[test]
fn a_duration_too_small_to_tell_from_off_is_refused() {
    // These rounded to 0 ("off"): hung-worker detection, or a keep-alive limit, quietly gone.
    let tiny = "less than a millisecond: use 0, or at least 0.001";
    assert_refused("timeout = 1e-10\n", (3, 11), tiny);
    assert_refused("[http]\nkeepalive = 1e-10\n", (4, 13), tiny);
    assert_flag_refused(&["-t", "1e-320", "--check-config"], tiny);
    assert_flag_refused(&["--send-timeout", "0.0001", "--check-config"], tiny);
    assert_eq!(run(&["--keepalive", "0.001", "--check-config"]), (0, String::new()));
}

#[test]
fn workers_beyond_what_a_reload_can_fit_are_refused() {
    // A reload runs two generations at once in the scoreboard's 2048 slots.
    let most = "workers must be at most 1024";
    assert_refused("workers = 1100\n", (3, 11), most);
    assert_refused("workers = 2100\n", (3, 11), most);
    assert_flag_refused(&["-w", "1025", "--check-config"], most);
    assert_eq!(run(&["-w", "1024", "--check-config"]), (0, String::new()));
}

#[test]
fn more_request_fields_than_the_header_map_can_hold_are_refused() {
    // The http crate's header map panics beyond 24,576 fields: a limit above that let a request
    // with more fields panic the worker's connection.
    let most = "limit_request_fields must be between 1 and 8192";
    assert_refused("[http]\nlimit_request_fields = 32768\n", (4, 24), most);
    assert_flag_refused(&["--limit-request-fields", "8193", "--check-config"], most);
    assert_eq!(run(&["--limit-request-fields", "8192", "--check-config"]), (0, String::new()));
}

#[test]
fn a_config_that_is_not_a_regular_file_or_too_large_is_refused() {
    let dir = tempdir();
    let fifo = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let fifo = fifo.to_str().unwrap();
    let (code, output) = run(&[fifo]);
    assert_eq!(code, 2, "{output}");
    assert_eq!(
        output,
        format!(
            "forkserve: error: {fifo}: is not a regular file but a FIFO: a config is read from \
             a regular file only"
        )
    );
    let (code, output) = run(&["--check-config", "/dev/zero"]);
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("/dev/zero: is not a regular file but a character device"), "{output}");

    let big = write(dir.path(), "big.toml", &"#".repeat((1 << 20) + 1));
    let (code, output) = run(&["--check-config", &big]);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains(&format!("{big}: is 1048577 bytes: a config may be 1 MiB")),
        "{output}"
    );
}

#[test]
fn a_zero_graceful_timeout_is_refused() {
    // Every other timeout's 0 means "off"; a stop must end, and INT or QUIT is the fast one.
    let zero = "graceful_timeout must be more than 0";
    assert_refused("graceful_timeout = 0\n", (3, 20), zero);
    assert_refused("graceful_timeout = 0.0\n", (3, 20), "send INT or QUIT");
    assert_flag_refused(&["--graceful-timeout", "0", "--check-config"], zero);
    assert_eq!(run(&["--graceful-timeout", "0.1", "--check-config"]), (0, String::new()));
}
