//! The library as its users meet it: an axum app, an async factory, and `forkserve::run` where
//! it cannot work. Each runs as a program of its own (see examples/ and tests/support/).

mod common;

use common::http::{self, Conn};
use common::{Server, WAIT, example};

const LOCAL: &str = "127.0.0.1:0";

#[test]
fn an_axum_router_is_served_through_from_tower() {
    let server = Server::start(&example("axum"), &["-w", "1", "-b", LOCAL]);
    let mut conn = Conn::open(server.addr()).unwrap();
    let root = conn.get("/").unwrap();
    assert_eq!((root.status, root.text().as_str()), (200, "hello from axum in worker 1\n"));
    // On the same connection: the service is called again, not only once.
    let hello = conn.get("/hello/you").unwrap();
    assert_eq!((hello.status, hello.text().as_str()), (200, "hello, you\n"));
    assert_eq!(conn.get("/nowhere").unwrap().status, 404, "axum's own fallback");
}

#[test]
fn an_async_factory_awaits_its_setup_in_the_worker_before_it_serves() {
    let server = Server::start(&example("async_setup"), &["-w", "1", "-b", LOCAL]);
    let response = http::get(server.addr(), "/").unwrap();
    assert_eq!(response.status, 200);
    let text = response.text();
    let ms: u64 = text
        .strip_prefix("worker 1 connected its pool in ")
        .and_then(|rest| rest.strip_suffix(" ms\n"))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("{text:?}"));
    // The task the factory spawned ran while it awaited: the setup was awaited, not skipped.
    assert!(ms >= 50, "{text:?}");
}

/// Starts `async_setup` with `ASYNC_SETUP_FAIL=how` and returns its exit code and output.
fn failing_async_setup(how: &str) -> (Option<i32>, String) {
    let mut server = Server::spawn_with(
        &example("async_setup"),
        &["-w", "2", "-b", LOCAL, "--log-level", "debug"],
        &[("ASYNC_SETUP_FAIL", how)],
    );
    let status = server.wait_exit(WAIT).expect("the master exits");
    (status.code(), server.output())
}

#[test]
fn an_async_factory_that_fails_after_awaiting_fails_the_first_start_with_its_message() {
    let (code, output) = failing_async_setup("1");
    assert_eq!(code, Some(3), "{output}");
    let error = output.lines().find(|l| l.starts_with("forkserve: error:")).expect(&output);
    assert!(error.contains("worker failed to boot: worker "), "{error}");
    assert!(
        error.contains("app failed to start: ASYNC_SETUP_FAIL=1: the database refused"),
        "{error}"
    );
}

#[test]
fn an_async_factory_that_panics_after_awaiting_fails_the_first_start_and_names_the_panic() {
    let (code, output) = failing_async_setup("panic");
    assert_eq!(code, Some(3), "{output}");
    let error = output.lines().find(|l| l.starts_with("forkserve: error:")).expect(&output);
    assert!(
        error.contains("app factory panicked: ASYNC_SETUP_FAIL=panic: the setup panics"),
        "{error}"
    );
    // Caught as the factory's: not logged as a panic of the worker by the panic hook.
    let hook = |l: &&str| l.contains("ERROR panic: ") || l.contains("}: panic: ");
    assert_eq!(output.lines().find(hook), None, "{output}");
}

#[test]
fn forkserve_under_tokio_main_refuses_to_start_and_says_why() {
    let mut server = Server::spawn(&example("tokio_main"), &["-w", "1", "-b", LOCAL]);
    let status = server.wait_exit(WAIT).expect("it exits at once");
    let output = server.output();
    assert_eq!(status.code(), Some(2), "a usage error:\n{output}");
    let error = output.lines().find(|l| l.starts_with("forkserve: error:")).expect(&output);
    assert!(error.contains("outside an async runtime"), "{error}");
    assert!(error.contains("#[tokio::main]"), "{error}");
    assert!(!output.contains("worker spawned"), "no worker was forked:\n{output}");
}
