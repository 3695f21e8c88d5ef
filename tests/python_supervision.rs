//! Supervision reaching into Python, on the real binary with `tests/python/wsgi/behave.py` (or
//! modules a test writes): import failures at start and on reload, requests stuck in Python,
//! a GIL held for ever, SIGABRT's stacks, signals an app tries to take, `sys.exit()` and
//! `os._exit()` in a handler, and `max_requests`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::http::{self, Conn};
use common::wsgi;
use common::{Server, WAIT, forkserve, tempdir, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Starts the binary on `module:app` in `dir` (modules a test wrote), with `extra` flags.
fn spawn_in(dir: &Path, app: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--wsgi", app, "--chdir", dir.to_str().unwrap(), "-b", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Server::spawn_with(&forkserve(), &args, wsgi::ENV)
}

/// Waits until `/pid` is answered by another worker than `old`, and returns it.
fn new_pid(addr: SocketAddr, old: i32) -> i32 {
    wait_until(|| {
        let r = http::get(addr, "/pid").ok()?;
        let pid: i32 = r.text().trim().parse().ok()?;
        (r.status == 200 && pid != old).then_some(pid)
    })
    .unwrap_or_else(|| panic!("worker {old} was never replaced"))
}

#[test]
fn an_app_that_cannot_import_stops_the_first_start_with_its_error() {
    let dir = tempdir();
    common::write(
        dir.path(),
        "broken.py",
        "import os\n\nx = 1\nraise ValueError(\"cannot-import-me\")\n",
    );
    common::write(
        dir.path(),
        "syntax.py",
        "def app(environ, start_response):\n    return [b\"x\"\n",
    );
    for (app, expect) in [
        ("broken:app", "ValueError: cannot-import-me (at FILE:4)".replace("FILE", "broken.py")),
        (
            "syntax:app",
            "SyntaxError: '[' was never closed (at FILE:2)".replace("FILE", "syntax.py"),
        ),
    ] {
        let mut server = spawn_in(dir.path(), app, &["-w", "2"]);
        assert_eq!(server.exit_code(), 3, "{app}");
        let output = server.output();
        let error = output
            .lines()
            .find(|l| l.starts_with("forkserve: error: "))
            .unwrap_or_else(|| panic!("no forkserve: error line:\n{output}"));
        let (message, place) = expect.split_once(" (at ").unwrap();
        assert!(error.contains(message), "{error}");
        let file = dir.path().join(place.trim_end_matches(')').split(':').next().unwrap());
        let line = place.trim_end_matches(')').split(':').nth(1).unwrap();
        assert!(error.contains(&format!("{}:{line}", file.display())), "{error}");
    }
}

/// An import stuck past `boot_timeout` is aborted, not just killed: Python's faulthandler prints
/// where it is stuck, with and without preload (a worker, or the mold).
#[test]
fn an_import_stuck_past_boot_timeout_logs_where_it_is_stuck() {
    let dir = tempdir();
    common::write(
        dir.path(),
        "stuck.py",
        "import time\n\ndef wait_for_the_database():\n    time.sleep(600)\n\nwait_for_the_database()\n",
    );
    for extra in
        [&["-w", "1", "--boot-timeout", "1"][..], &["-w", "1", "--boot-timeout", "1", "--preload"]]
    {
        let mut server = spawn_in(dir.path(), "stuck:app", extra);
        assert_eq!(server.exit_code(), 3, "{extra:?}");
        let output = server.output();
        assert!(output.contains("killing it with SIGABRT"), "{extra:?}: {output}");
        assert!(
            output.contains("stuck.py\", line 4 in wait_for_the_database"),
            "{extra:?}: the stack says where: {output}"
        );
    }
}

#[test]
fn a_reload_whose_python_app_cannot_import_rolls_back() {
    let dir = tempdir();
    let module = |text: &str| {
        common::write(
            dir.path(),
            "changing.py",
            &format!(
                "import os\n\ndef app(environ, start_response):\n    start_response(\"200 OK\", \
                 [(\"Content-Type\", \"text/plain\")])\n    return [b\"{text} %d\" % os.getpid()]\n"
            ),
        )
    };
    module("old");
    let server = spawn_in(dir.path(), "changing:app", &["-w", "1"]);
    server.wait_for("all workers ready");
    let addr = server.addr();
    let first = http::get(addr, "/").unwrap().text();
    assert!(first.starts_with("old "), "{first}");

    common::write(dir.path(), "changing.py", "def app(:\n");
    server.signal(Signal::SIGHUP);
    server.wait_for("reload failed, rolled back");
    server.wait_for("SyntaxError");
    assert_eq!(http::get(addr, "/").unwrap().text(), first, "the old generation serves on");

    module("new");
    server.signal(Signal::SIGHUP);
    let now = wait_until(|| {
        let text = http::get(addr, "/").ok()?.text();
        text.starts_with("new ").then_some(text)
    });
    assert!(now.is_some(), "a fixed module is loaded by the next reload");
}

#[test]
fn a_request_stuck_in_python_is_answered_504_with_its_python_stack_logged() {
    let server =
        wsgi::start("behave:app", &["-w", "1", "--threads", "2", "--request-timeout", "1"]);
    let addr = server.addr();
    let asked = Instant::now();
    let r = http::get(addr, "/stuck?s=4").unwrap();
    assert_eq!(r.status, 504);
    assert!(asked.elapsed() < Duration::from_secs(3), "{:?}", asked.elapsed());
    // The other thread serves meanwhile.
    assert_eq!(http::get(addr, "/pid").unwrap().status, 200);
    let report = server.wait_for("request_timeout passed");
    assert!(report.contains("Python thread is here"), "{report}");
    // The stack names the stuck function and its file.
    server.wait_for("in stuck_here");
    server.wait_for(&format!("File \"{}\"", wsgi::apps().join("behave.py").display()));
}

#[test]
fn a_worker_whose_threads_are_all_stuck_is_replaced() {
    let server =
        wsgi::start("behave:app", &["-w", "1", "--threads", "1", "--request-timeout", "1"]);
    let addr = server.addr();
    let old = wsgi::pid(addr);
    assert_eq!(http::get(addr, "/stuck?s=60").unwrap().status, 504);
    server.wait_for("every Python thread (1) runs a request past request_timeout");
    let new = new_pid(addr, old);
    assert_ne!(new, old);
}

#[test]
fn a_gil_held_for_ever_by_c_code_still_gets_the_worker_replaced() {
    // libc's sleep through ctypes.PyDLL keeps the GIL: no Python thread of the worker runs,
    // the event loop (which never takes the GIL) goes on answering 504s; only the watcher can
    // see the worker is useless, and it must not wait for the GIL to say so.
    let server = wsgi::start(
        "behave:app",
        &["-w", "1", "--threads", "1", "--request-timeout", "1", "--graceful-timeout", "2"],
    );
    let addr = server.addr();
    let old = wsgi::pid(addr);
    assert_eq!(http::get(addr, "/gil?s=600").unwrap().status, 504);
    server.wait_for("every Python thread (1) runs a request past request_timeout");
    let new = new_pid(addr, old);
    assert_ne!(new, old);
}

#[test]
fn sigabrt_prints_every_python_threads_stack() {
    let server = wsgi::start("behave:app", &["-w", "1", "--threads", "2"]);
    let addr = server.addr();
    let pid = wsgi::pid(addr);
    let mut stuck = Conn::open(addr).unwrap();
    stuck.send_get("/stuck?s=30").unwrap();
    server.wait_for("entered stuck_here");
    kill(Pid::from_raw(pid), Signal::SIGABRT).unwrap();
    server.wait_for("Fatal Python error: Aborted");
    server.wait_for("in stuck_here");
    assert!(stuck.read_response(false).is_err(), "the aborted worker's request cannot complete");
    new_pid(addr, pid);
}

#[test]
fn signal_handlers_an_app_sets_at_import_are_taken_back() {
    let mut server = wsgi::start_with(
        "behave:app",
        &["-w", "1", "--threads", "2", "--graceful-timeout", "10"],
        &[("STEAL_SIGNALS", "1")],
    );
    let addr = server.addr();
    for name in ["SIGTERM", "SIGINT", "SIGHUP"] {
        server.wait_for(&format!("a handler for {name} was set while importing behave:app"));
    }
    // HUP still reloads: a new generation's worker answers.
    let first = wsgi::pid(addr);
    server.signal(Signal::SIGHUP);
    let second = new_pid(addr, first);
    // TERM still drains: a request in Python when it comes completes.
    let mut slow = Conn::open(addr).unwrap();
    slow.send_get("/sleep?s=1").unwrap();
    server.wait_for(&format!("sleeping in {second}"));
    server.signal(Signal::SIGTERM);
    let r = slow.read_response(false).unwrap();
    assert_eq!((r.status, r.text()), (200, second.to_string()));
    assert_eq!(server.exit_code(), 0);
    assert_eq!(server.count("STOLEN-SIGNAL"), 0, "a Python handler ran");
}

#[test]
fn sigint_still_stops_a_server_whose_app_set_a_handler_for_it() {
    let mut server = wsgi::start_with("behave:app", &["-w", "1"], &[("STEAL_SIGNALS", "1")]);
    let addr = server.addr();
    wsgi::pid(addr);
    let asked = Instant::now();
    server.signal(Signal::SIGINT);
    assert!(server.wait_exit(WAIT).is_some(), "INT did not stop the server");
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert_eq!(server.count("STOLEN-SIGNAL"), 0, "a Python handler ran");
}

#[test]
fn sys_exit_in_a_handler_answers_500_and_the_worker_is_replaced_successor_first() {
    let server = wsgi::start("behave:app", &["-w", "1"]);
    let addr = server.addr();
    let old = wsgi::pid(addr);
    assert_eq!(http::get(addr, "/exit").unwrap().status, 500);
    server.wait_for("the app called sys.exit()");
    server.wait_for("starting its successor first");
    let new = new_pid(addr, old);
    assert_ne!(new, old);
    let exited = server.wait_for("worker exited: exit code 0, recycled");
    assert!(exited.contains(&format!("pid={old}")), "{exited}");
}

#[test]
fn os_exit_in_a_handler_fails_that_connection_and_a_new_worker_serves() {
    let server = wsgi::start("behave:app", &["-w", "1"]);
    let addr = server.addr();
    let old = wsgi::pid(addr);
    assert!(http::get(addr, "/os-exit").is_err(), "a process that is gone answers nothing");
    server.wait_for("exit code 7");
    let new = new_pid(addr, old);
    assert_ne!(new, old);
}

#[test]
fn max_requests_recycles_python_workers() {
    let server = wsgi::start("behave:app", &["-w", "1", "--max-requests", "3"]);
    let addr = server.addr();
    let old = wsgi::pid(addr);
    for _ in 0..2 {
        assert_eq!(http::get(addr, "/count").unwrap().status, 200);
    }
    server.wait_for("served 3 requests (max_requests); starting its successor first");
    let new = new_pid(addr, old);
    // The successor's interpreter is a fresh one: its own count starts again.
    let count = http::get(addr, "/count").unwrap().text();
    let (pid, n) = count.split_once(' ').unwrap();
    assert_eq!(pid, new.to_string());
    assert!(n.parse::<u32>().unwrap() <= 3, "{count}");
    server.wait_for(&format!("recycled: served 3 requests (max_requests) pid={old}"));
}
