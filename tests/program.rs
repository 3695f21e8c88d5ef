//! A program built on the library with a name and a config table of its own
//! (examples/own_config.rs, "greeter"): what its `--help` says, its `[greeter]` table read by
//! its factory, and that table's errors at `file:line:col` at start, at `--check-config` and on
//! `HUP`, as forkserve's own tables'.

mod common;

use common::http;
use common::{Server, alive, example, tempdir, wait_until, write};
use nix::sys::signal::Signal;

const LOCAL: &str = "127.0.0.1:0";

fn greeter() -> std::path::PathBuf {
    example("own_config")
}

/// Runs the program to completion; returns (exit code, everything it printed).
fn run(args: &[&str]) -> (i32, String) {
    let mut server = Server::spawn(&greeter(), args);
    let output = server.output();
    (server.exit_code(), output)
}

/// A config that serves on a free port with `table`'s lines as the `[greeter]` table.
fn config(table: &str) -> String {
    format!("[server]\nbind = [\"{LOCAL}\"]\nworkers = 2\n[greeter]\n{table}")
}

#[test]
fn help_version_and_errors_say_the_programs_name() {
    let (code, help) = run(&["--help"]);
    assert_eq!(code, 0, "{help}");
    assert!(help.starts_with("greeter: says hello"), "its description first:\n{help}");
    assert!(help.contains("Usage: greeter [OPTIONS] [CONFIG]"), "{help}");
    assert!(help.contains("--workers"), "forkserve's flags are the program's:\n{help}");
    assert!(!help.contains("pre-fork HTTP server"), "not forkserve's description:\n{help}");

    assert_eq!(run(&["--version"]), (0, "greeter 1.4.2".to_string()));
    let (code, output) = run(&["--no-such-flag"]);
    assert_eq!(code, 2, "{output}");
    assert!(output.starts_with("greeter: error: unexpected argument"), "{output}");
}

#[test]
fn the_factory_reads_the_table_and_a_hup_rereads_it() {
    let dir = tempdir();
    let path = write(dir.path(), "greeter.toml", &config("greeting = \"Hello\"\n"));
    let server = Server::start(&greeter(), &[&path]);
    let addr = server.addr();
    let text = http::get(addr, "/you").unwrap().text();
    assert!(text.starts_with("Hello, you! (worker "), "{text}");
    let text = http::get(addr, "/").unwrap().text();
    assert!(text.starts_with("Hello, world! (worker "), "the default name: {text}");
    let workers = server.wait_workers(2);

    // A broken table: the reload is refused where the error is, and the old workers serve on.
    write(dir.path(), "greeter.toml", &config("greeting = \"Hello\"\nnmae = \"x\"\n"));
    server.signal(Signal::SIGHUP);
    let line = server.wait_for("reload rejected");
    assert!(line.contains(&format!("{path}:6:1: unknown field `nmae`")), "{line}");
    write(dir.path(), "greeter.toml", &config("greeting = \"  \"\n"));
    server.signal(Signal::SIGHUP);
    let line = server.wait_for_nth("reload rejected", 2);
    assert!(line.contains(&format!("{path}:4:1: greeting must not be empty")), "{line}");
    assert!(http::get(addr, "/").unwrap().text().starts_with("Hello, world!"));
    assert_eq!(server.workers(), workers, "no worker was replaced");
    assert_eq!(server.count("starting new generation"), 0);

    // A good one: the new workers read the new table.
    write(dir.path(), "greeter.toml", &config("greeting = \"Hi\"\nname = \"all\"\n"));
    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete");
    wait_until(|| workers.iter().all(|&pid| !alive(pid)).then_some(())).expect("old workers exit");
    let text = http::get(addr, "/").unwrap().text();
    assert!(text.starts_with("Hi, all! (worker "), "{text}");
}

#[test]
fn errors_in_the_table_are_at_file_line_col_at_start_and_at_check() {
    let dir = tempdir();
    let cases: &[(&str, &str, (usize, usize), &str)] = &[
        ("bad type", "greeting = 5\n", (5, 12), "invalid type: integer `5`, expected a string"),
        (
            "unknown key",
            "greeting = \"Hi\"\ngreting = \"x\"\n",
            (6, 1),
            "unknown field `greting`, expected `greeting` or `name`",
        ),
        ("the program's check", "greeting = \"\"\n", (4, 1), "greeting must not be empty"),
        ("missing key", "name = \"x\"\n", (4, 1), "missing field `greeting`"),
    ];
    for (what, table, (line, col), message) in cases {
        let path = write(dir.path(), "greeter.toml", &config(table));
        let (code, output) = run(&[&path]);
        assert_eq!(code, 2, "{what}: {output}");
        let expected = format!("greeter: error: {path}:{line}:{col}: {message}");
        assert_eq!(output, expected, "{what}");
        assert_eq!(run(&["--check-config", &path]), (2, output), "{what}: --check-config");
    }
}

#[test]
fn a_file_without_the_table_or_with_an_unknown_one_is_refused() {
    let dir = tempdir();
    let path = write(dir.path(), "greeter.toml", &format!("[server]\nbind = [\"{LOCAL}\"]\n"));
    let (code, output) = run(&["--check-config", &path]);
    assert_eq!(code, 2, "{output}");
    assert_eq!(
        output,
        format!("greeter: error: {path}: no [greeter] table: missing field `greeting`")
    );
    let (code, output) = run(&["--check-config"]);
    assert_eq!(code, 2, "{output}");
    assert!(
        output == "greeter: error: no config file, so no [greeter] table: missing field `greeting`",
        "{output}"
    );

    let path = write(dir.path(), "typo.toml", &config("greeting = \"Hi\"\n[greetr]\n"));
    let (code, output) = run(&["--check-config", &path]);
    assert_eq!(code, 2, "{output}");
    assert_eq!(
        output,
        format!(
            "greeter: error: {path}:6:2: unknown field `greetr`, expected one of `server`, \
             `http`, `http2`, `log`, `python`, `metrics`, `tls`, `route`, `greeter`"
        )
    );
}

#[test]
fn print_config_shows_the_table_and_reads_back() {
    let dir = tempdir();
    let path = write(dir.path(), "greeter.toml", &config("greeting = \"Hi\"\n"));
    let (code, printed) = run(&["--print-config", "-w", "3", &path]);
    assert_eq!(code, 0, "{printed}");
    let table: toml::Table = toml::from_str(&printed).expect("valid TOML");
    assert_eq!(table["greeter"]["greeting"].as_str(), Some("Hi"));
    assert_eq!(table["greeter"]["name"].as_str(), Some("world"), "with its default");
    assert_eq!(table["server"]["workers"].as_integer(), Some(3));
    let again = write(dir.path(), "printed.toml", &printed);
    assert_eq!(run(&["--check-config", &again]), (0, String::new()));
}
