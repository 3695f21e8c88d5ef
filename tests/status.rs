//! `forkserve status` on the real binary, against a running server (the `demo` example, whose
//! `/spin/MS` blocks its worker in the handler and `/sleep/MS` waits without blocking): the
//! workers it lists are the master's children, busy ones show their request and its age, a
//! reload in progress shows both generations, and each way of not finding a server readable
//! is a one-line error with exit code 1 (2 for usage).

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::http::Conn;
use common::{Server, example, forkserve, tempdir, wait_until, write};
use nix::sys::signal::Signal;
use serde_json::Value;

/// Runs `forkserve status ARGS` in `cwd` and returns what it did. `as_nobody` runs it as uid and
/// gid 65534 (when the tests run as root).
fn run_status(args: &[&str], cwd: &Path, as_nobody: bool) -> Output {
    let mut cmd = Command::new(forkserve());
    cmd.arg("status").args(args).current_dir(cwd).stdin(Stdio::null()).process_group(0);
    if as_nobody {
        common::as_nobody(&mut cmd);
    }
    cmd.output().expect("run forkserve status")
}

fn status(args: &[&str]) -> Output {
    run_status(args, Path::new("/"), false)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `forkserve status ARGS --json`, which must succeed, parsed.
fn json(args: &[&str]) -> Value {
    let out = status(&[args, &["--json"]].concat());
    assert!(out.status.success(), "status {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
}

/// A failing `forkserve status ARGS`: its exit code and its one line on stderr.
fn failure(out: &Output) -> (i32, String) {
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("forkserve: error: "), "{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", stdout(out));
    (out.status.code().expect("exited"), err)
}

fn workers_of(report: &Value) -> &Vec<Value> {
    report["workers"].as_array().expect("workers")
}

fn pids(workers: &[&Value]) -> BTreeSet<i32> {
    workers.iter().map(|w| w["pid"].as_i64().unwrap() as i32).collect()
}

/// The demo serving on a free port with `workers` workers and a pidfile in `dir`; returns the
/// config's path.
fn config(dir: &Path, workers: usize) -> String {
    let pidfile = dir.join("fs.pid");
    let text = format!(
        "[server]\nbind = [\"127.0.0.1:0\"]\nworkers = {workers}\npidfile = {:?}\n",
        pidfile.to_str().unwrap()
    );
    write(dir, "app.toml", &text)
}

/// A pid no process has: a child that exited and was reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait");
    pid
}

#[test]
fn the_table_and_the_json_list_exactly_the_running_workers() {
    let dir = tempdir();
    let config = config(dir.path(), 3);
    let server = Server::start(&example("demo"), &[&config]);
    let children = server.wait_workers(3);
    let master = server.pid().as_raw().to_string();
    let pidfile = dir.path().join("fs.pid");
    let pidfile = pidfile.to_str().unwrap();
    for _ in 0..5 {
        assert_eq!(common::http::get(server.addr(), "/").unwrap().status, 200);
    }

    for args in [&["--pid", &master][..], &["--pid", pidfile], &["--pidfile", pidfile], &[&config]]
    {
        let report = json(args);
        assert_eq!(report["master_pid"].to_string(), master, "{args:?}");
        assert_eq!(
            (&report["generation"], &report["reloading"]),
            (&Value::from(1), &Value::Bool(false))
        );
        let workers: Vec<&Value> = workers_of(&report).iter().collect();
        assert_eq!(pids(&workers), children, "{args:?}: the master's children");
        let taken: u64 = workers.iter().map(|w| w["requests"].as_u64().unwrap()).sum();
        assert_eq!((report["requests_total"].as_u64(), taken), (Some(5), 5), "{report}");
        for w in &workers {
            assert_eq!(
                (&w["generation"], &w["state"]),
                (&Value::from(1), &Value::from("idle")),
                "{w}"
            );
            assert!(w["rss_kib"].as_u64().unwrap() > 0, "{w}");
            assert_eq!(w["request"], Value::Null);
        }
    }

    // A worker's pid finds its master, and says so.
    let worker = children.first().unwrap().to_string();
    let out = status(&["--pid", &worker, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["master_pid"].to_string(), master);
    assert!(
        stderr(&out).contains(&format!("process {worker} is not the master")),
        "{}",
        stderr(&out)
    );

    let out = status(&["--pid", pidfile]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.starts_with(&format!("master {master}, generation 1, up ")), "{table}");
    assert!(table.contains("3 workers, 5 requests served"), "{table}");
    let rows: Vec<&str> = table.lines().filter(|l| l.contains(" idle ")).collect();
    let listed: BTreeSet<i32> =
        rows.iter().map(|r| r.split_whitespace().nth(1).unwrap().parse().unwrap()).collect();
    assert_eq!(listed, children, "{table}");
    assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");
}

#[test]
fn a_busy_worker_shows_its_request_and_an_age_that_grows() {
    let dir = tempdir();
    let config = config(dir.path(), 2);
    let server = Server::start(&example("demo"), &[&config]);
    let addr = server.addr();
    let master = server.pid().as_raw().to_string();
    let busy_with = |line: &str| {
        let report = json(&["--pid", &master]);
        workers_of(&report).iter().find(|w| w["request"]["line"] == line).cloned()
    };

    // Blocks its worker's thread inside the handler for 8 s.
    let mut spin = Conn::open(addr).unwrap();
    spin.send_get("/spin/8000").unwrap();
    server.wait_for("blocking the worker's thread");
    let spinning = busy_with("GET /spin/8000").expect("the spinning worker");
    assert_eq!(spinning["state"], "busy", "{spinning}");
    assert_eq!(spinning["request"]["handler_running"], true, "{spinning}");
    assert_eq!(spinning["in_handler"]["line"], "GET /spin/8000");
    let first_age = spinning["request"]["age_ms"].as_u64().unwrap();
    let later = wait_until(|| {
        busy_with("GET /spin/8000").filter(|w| w["request"]["age_ms"].as_u64().unwrap() > first_age)
    });
    assert!(later.is_some(), "the request's age grows");

    // Waits without blocking: busy, its handler not running. The other worker takes it, since
    // the first one's thread is blocked.
    let mut sleep = Conn::open(addr).unwrap();
    sleep.send_get("/sleep/8000").unwrap();
    let sleeping = wait_until(|| busy_with("GET /sleep/8000")).expect("the sleeping worker");
    assert_eq!(sleeping["state"], "busy");
    assert_eq!(sleeping["request"]["handler_running"], false, "{sleeping}");
    assert_ne!(sleeping["pid"], spinning["pid"]);

    let out = status(&["--pid", &master]);
    let table = stdout(&out);
    let row = |pid: &Value| {
        let pid = pid.to_string();
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(pid.as_str()))
            .unwrap()
            .to_string()
    };
    let spin_row = row(&spinning["pid"]);
    assert!(spin_row.contains(" busy ") && spin_row.ends_with("*  GET /spin/8000"), "{table}");
    let sleep_row = row(&sleeping["pid"]);
    assert!(sleep_row.contains(" busy ") && sleep_row.ends_with("   GET /sleep/8000"), "{table}");
}

#[test]
fn a_reload_in_progress_shows_both_generations_and_the_booting_workers() {
    let dir = tempdir();
    let config = config(dir.path(), 2);
    let hold = dir.path().join("hold");
    let hold_env = hold.to_str().unwrap();
    let server =
        Server::start_with(&example("demo"), &[&config], &[("DEMO_BOOT_HOLD_FILE", hold_env)]);
    let old = server.wait_workers(2);
    let master = server.pid().as_raw().to_string();

    std::fs::write(&hold, "").unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_for_nth("holding the boot", 2);
    let report = json(&["--pid", &master]);
    assert_eq!(
        (&report["generation"], &report["reloading"]),
        (&Value::from(2), &Value::Bool(true))
    );
    let workers = workers_of(&report);
    let of = |generation: u64| -> Vec<&Value> {
        workers.iter().filter(|w| w["generation"] == generation).collect()
    };
    let (first, second) = (of(1), of(2));
    assert_eq!(pids(&first), old, "{report}");
    assert!(first.iter().all(|w| w["state"] == "idle"), "{report}");
    assert_eq!(second.len(), 2, "{report}");
    assert!(second.iter().all(|w| w["state"] == "booting"), "{report}");
    let all: BTreeSet<i32> = pids(&first).union(&pids(&second)).copied().collect();
    assert_eq!(all, server.workers(), "the master's children");
    let table = stdout(&status(&["--pid", &master]));
    assert!(
        table.starts_with(&format!("master {master}, generation 2 (reloading), up ")),
        "{table}"
    );
    assert_eq!(table.lines().filter(|l| l.contains(" booting ")).count(), 2, "{table}");

    std::fs::remove_file(&hold).unwrap();
    server.wait_for("reload complete generation=2");
    let report = json(&["--pid", &master]);
    assert_eq!(
        (&report["generation"], &report["reloading"]),
        (&Value::from(2), &Value::Bool(false))
    );
    assert_eq!(report["reloads"]["completed"], 1);
    let new: Vec<&Value> = workers_of(&report).iter().filter(|w| w["generation"] == 2).collect();
    assert_eq!(pids(&new), pids(&second));
    assert!(new.iter().all(|w| w["state"] == "idle"), "{report}");
}

#[test]
fn every_reload_is_counted_once_a_superseded_one_too() {
    let dir = tempdir();
    let config = config(dir.path(), 1);
    let hold = dir.path().join("hold");
    let hold_env = hold.to_str().unwrap();
    let server =
        Server::start_with(&example("demo"), &[&config], &[("DEMO_BOOT_HOLD_FILE", hold_env)]);
    server.wait_workers(1);
    let master = server.pid().as_raw().to_string();

    // A reload whose worker is held booting, overtaken by a second HUP.
    std::fs::write(&hold, "").unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_for_nth("holding the boot", 1);
    server.signal(Signal::SIGHUP);
    server.wait_for_nth("holding the boot", 2);
    let report = json(&["--pid", &master]);
    assert_eq!(
        (&report["generation"], &report["reloading"]),
        (&Value::from(3), &Value::Bool(true))
    );
    assert_eq!(report["reloads"]["superseded"], 1, "{report}");
    assert_eq!(report["reloads"]["completed"], 0, "{report}");

    std::fs::remove_file(&hold).unwrap();
    server.wait_for("reload complete generation=3");
    let reloads = json(&["--pid", &master])["reloads"].clone();
    let counted: u64 = reloads.as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!((reloads["completed"].as_u64(), counted), (Some(1), 2), "two HUPs: {reloads}");
    let table = stdout(&status(&["--pid", &master]));
    assert!(table.contains("reloads: 1 completed, 1 superseded"), "{table}");
}

#[test]
fn a_server_that_is_not_running_is_a_clear_error() {
    let dir = tempdir();
    let pidfile = dir.path().join("fs.pid");
    let path = pidfile.to_str().unwrap();

    let gone = dead_pid();
    let (code, err) = failure(&status(&["--pid", &gone.to_string()]));
    assert_eq!(code, 1);
    assert!(err.contains(&format!("no process {gone}: the server is not running")), "{err}");

    let (code, err) = failure(&status(&["--pid", path]));
    assert_eq!(code, 1);
    assert!(err.contains(path) && err.contains("No such file or directory"), "{err}");

    // Left by a master that was killed: its pid is gone.
    std::fs::write(&pidfile, format!("{gone}\n")).unwrap();
    let (code, err) = failure(&status(&["--pidfile", path]));
    assert_eq!(code, 1);
    assert!(err.contains(&format!("stale pidfile {path}: no process {gone}")), "{err}");
    assert!(err.contains("not running"), "{err}");

    // Its pid reused by another process: the file is not locked, so it is stale all the same.
    let mut sleep = Command::new("sleep").arg("30").process_group(0).spawn().unwrap();
    std::fs::write(&pidfile, format!("{}\n", sleep.id())).unwrap();
    let unlocked = status(&["--pid", path]);
    let by_pid = status(&["--pid", &sleep.id().to_string()]);
    let _ = sleep.kill();
    let _ = sleep.wait();
    let (code, err) = failure(&unlocked);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("stale pidfile {path}")), "{err}");
    assert!(err.contains(&format!("process {} (sleep) is not its master", sleep.id())), "{err}");
    let (code, err) = failure(&by_pid);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("process {} (sleep) is not a forkserve master", sleep.id())),
        "{err}"
    );
}

#[test]
fn a_killed_master_not_yet_reaped_has_exited_and_its_workers_say_so() {
    let dir = tempdir();
    let config = config(dir.path(), 1);
    let server = Server::start(&example("demo"), &[&config]);
    let worker = server.wait_workers(1).into_iter().next().unwrap().to_string();
    let master = server.pid().as_raw().to_string();
    // A request keeps the worker draining after the kernel tells it its master died.
    let mut slow = Conn::open(server.addr()).unwrap();
    slow.send_get("/sleep/8000").unwrap();
    wait_until(|| json(&["--pid", &master])["requests_total"].as_u64().filter(|&n| n == 1))
        .expect("the request taken");

    // The test is the master's parent and does not reap it yet: a zombie, without descriptors.
    server.signal(Signal::SIGKILL);
    let zombie = wait_until(|| {
        let stat = std::fs::read_to_string(format!("/proc/{master}/stat")).ok()?;
        stat.rsplit_once(')')?.1.trim_start().starts_with('Z').then_some(())
    });
    assert!(zombie.is_some(), "the master is a zombie");
    let out = status(&["--pid", &worker, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("master {master}'s processes, but that master has exited")),
        "{}",
        stderr(&out)
    );
    let (code, err) = failure(&status(&["--pid", &master]));
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("process {master} (demo) has exited: the server is not running")),
        "{err}"
    );
    let pidfile = dir.path().join("fs.pid");
    let (code, err) = failure(&status(&["--pid", pidfile.to_str().unwrap()]));
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "stale pidfile {}: process {master} (demo) has exited",
            pidfile.display()
        )),
        "{err}"
    );
}

#[test]
fn usage_errors_say_how_to_name_the_server() {
    let dir = tempdir();
    let (code, err) = failure(&status(&[]));
    assert_eq!(code, 2);
    assert!(err.contains("--pid PID") && err.contains("--pidfile FILE"), "{err}");
    let plain = write(dir.path(), "plain.toml", "[server]\nworkers = 1\n");
    let (code, err) = failure(&status(&[&plain]));
    assert_eq!(code, 2);
    assert!(err.contains("sets no [server] pidfile"), "{err}");
    let out = status(&["--pid", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn another_users_server_is_not_permitted_and_its_user_named() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root, to read a server as another user");
        return;
    }
    let dir = tempdir();
    common::open_to_others(dir.path());
    let config = config(dir.path(), 1);
    let server = Server::start(&example("demo"), &[&config]);
    let master = server.pid().as_raw().to_string();
    let pidfile = dir.path().join("fs.pid");
    for args in [&["--pid", &master][..], &["--pid", pidfile.to_str().unwrap()]] {
        let (code, err) = failure(&run_status(args, Path::new("/"), true));
        assert_eq!(code, 1);
        assert!(err.contains("not permitted"), "{err}");
        assert!(err.contains("runs as user root; run this as that user, or as root"), "{err}");
    }
    // And it did not disturb the server: the same worker still serves.
    assert_eq!(server.workers().len(), 1);
    assert!(
        json(&["--pid", &master])["worker_exits"].as_object().unwrap().values().all(|n| n == 0)
    );
}

#[test]
fn status_is_a_command_only_as_the_first_argument() {
    let dir = tempdir();
    write(dir.path(), "status", "[server]\nworkers = 1\n");
    let check = |args: &[&str]| {
        let out = Command::new(forkserve()).args(args).current_dir(dir.path()).output().unwrap();
        (out.status.code(), stderr(&out))
    };
    assert_eq!(check(&["./status", "--check-config"]), (Some(0), String::new()), "a config file");
    assert_eq!(check(&["-w", "2", "status", "--check-config"]), (Some(0), String::new()));
    let (code, err) = check(&["status", "--check-config"]);
    assert_eq!(code, Some(2), "the command, which has no --check-config: {err}");
    let help = Command::new(forkserve()).arg("--help").output().unwrap();
    assert!(stdout(&help).contains("status"), "--help lists the command");
}
