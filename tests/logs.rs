//! The log file (`[log] file`, `--error-logfile`), its JSON format, and reopening it on `USR1`
//! (logrotate's `create` mode), on the real binary.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use common::http;
use common::{Server, forkserve, tempdir, wait_until, write};
use nix::sys::signal::Signal;
use serde_json::Value;

/// What every worker logs for each request the gate refuses (at `debug`): one line a request.
const REFUSED: &str = "request refused by the gate";

fn config(log: &str) -> String {
    format!(
        "[server]\nbind = [\"127.0.0.1:0\"]\nworkers = 2\n\n[log]\n{log}\n\n\
         [[route]]\npath = \"/\"\nrespond = \"hi\"\n"
    )
}

/// The file's lines (none if it does not exist).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

/// Waits until `n` lines of the file contain `needle`.
fn wait_in(path: &Path, needle: &str, n: usize) {
    wait_until(|| (lines(path).iter().filter(|l| l.contains(needle)).count() >= n).then_some(()))
        .unwrap_or_else(|| {
            panic!("never {n}× {needle:?} in {}:\n{}", path.display(), lines(path).join("\n"))
        });
}

/// Every line of a JSON log, parsed; a line that is not one JSON object fails the test.
fn json_lines(path: &Path) -> Vec<Value> {
    lines(path)
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not JSON in {}: {e}: {l:?}", path.display()));
            assert!(v.is_object(), "not an object: {l}");
            v
        })
        .collect()
}

/// The address the server logged, from a JSON log file.
fn json_addr(path: &Path) -> SocketAddr {
    wait_in(path, "\"listening\"", 1);
    let listening = json_lines(path).into_iter().find(|v| v["message"] == "listening").unwrap();
    listening["fields"]["address"].as_str().unwrap().parse().unwrap()
}

/// A request the gate refuses with 414: its target is longer than any request line allowed.
fn refused(addr: SocketAddr) -> bool {
    let long = format!("/{}", "a".repeat(9000));
    http::get(addr, &long).is_ok_and(|r| r.status == 414)
}

#[test]
fn log_lines_go_to_the_file_relative_to_the_config_not_to_stderr() {
    let dir = tempdir();
    let config =
        write(dir.path(), "app.toml", &config("file = \"logs/forkserve.log\"\nlevel = \"debug\""));
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let log = dir.path().join("logs/forkserve.log");
    let mut server = Server::spawn(&forkserve(), &[&config]);
    wait_in(&log, "all workers ready", 1);
    let line = lines(&log).into_iter().find(|l| l.contains("listening address=")).unwrap();
    let addr: SocketAddr = line.split("address=").nth(1).unwrap().trim().parse().unwrap();
    assert_eq!(http::get(addr, "/").unwrap().text(), "hi");
    server.signal(Signal::SIGTERM);
    assert_eq!(server.exit_code(), 0);
    let text = lines(&log).join("\n");
    assert!(text.contains("master exiting"), "{text}");
    assert!(text.contains("worker{id=1 pid="), "worker lines are in the file too:\n{text}");
    assert!(!text.contains('\u{1b}'), "no colour codes in a file:\n{text}");
    assert_eq!(server.logs(), Vec::<String>::new(), "nothing on stderr or stdout");
}

#[test]
fn the_json_format_is_one_object_per_line_with_level_time_pid_worker_message_and_fields() {
    let server = Server::start(
        &forkserve(),
        &["-b", "127.0.0.1:0", "-w", "2", "--log-format", "json", "--log-level", "debug"],
    );
    let line = server.wait_for("\"listening\"");
    let v: Value = serde_json::from_str(&line).unwrap();
    let addr: SocketAddr = v["fields"]["address"].as_str().unwrap().parse().unwrap();
    assert!(refused(addr));
    server.wait_for(REFUSED);
    let logs = server.logs();
    let values: Vec<Value> = logs
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {e}: {l:?}")))
        .collect();
    for v in &values {
        assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
        assert!(
            ["error", "warn", "info", "debug", "trace"].contains(&v["level"].as_str().unwrap())
        );
        assert!(v["pid"].as_u64().is_some() && v["message"].is_string() && v["fields"].is_object());
    }
    let booted = values.iter().find(|v| v["message"] == "worker booted").unwrap();
    assert_eq!(booted["pid"].as_u64(), Some(u64::from(server.pid().as_raw() as u32)));
    assert!(booted.get("worker").is_none(), "the master's line has no worker: {booted}");
    assert!(booted["fields"]["boot_ms"].is_u64(), "numbers stay numbers: {booted}");
    let refused = values.iter().find(|v| v["message"] == REFUSED).unwrap();
    assert_eq!(refused["level"], "debug");
    assert!(refused["worker"].as_u64().is_some_and(|id| id >= 1), "{refused}");
    assert_eq!(refused["fields"]["status"], 414);
    assert!(server.workers().contains(&(refused["pid"].as_u64().unwrap() as i32)));
}

#[test]
fn usr1_after_a_rename_moves_master_and_workers_to_a_new_file_and_loses_no_line() {
    let dir = tempdir();
    let config = write(
        dir.path(),
        "app.toml",
        &config("file = \"forkserve.log\"\nformat = \"json\"\nlevel = \"debug\""),
    );
    let log = dir.path().join("forkserve.log");
    let rotated = dir.path().join("forkserve.log.1");
    let mut server = Server::spawn(&forkserve(), &[&config]);
    wait_in(&log, "all workers ready", 1);
    let addr = json_addr(&log);
    let workers = server.wait_workers(2);

    // Clients refuse-request in a loop throughout: each such request is one worker line.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if refused(addr) {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    wait_in(&log, REFUSED, 20);

    std::fs::rename(&log, &rotated).unwrap();
    server.signal(Signal::SIGUSR1);
    wait_in(&log, "usr1: log file reopened", 1);
    // Each worker writes to the new file: its next requests land there.
    let in_new = |pid: i32| {
        json_lines(&log)
            .iter()
            .any(|v| v["message"] == REFUSED && v["pid"].as_u64() == Some(pid as u64))
    };
    wait_until(|| workers.iter().all(|&pid| in_new(pid)).then_some(()))
        .unwrap_or_else(|| panic!("not every worker writes to the new file:\n{:?}", lines(&log)));
    // A worker forked after the rotation writes there too, and so does the master.
    server.signal(Signal::SIGTTIN);
    wait_in(&log, "worker booted", 1);
    wait_until(|| json_lines(&log).iter().any(|v| v["worker"].as_u64() == Some(3)).then_some(()))
        .expect("the TTIN worker logs to the new file");

    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    server.signal(Signal::SIGTERM);
    assert_eq!(server.exit_code(), 0);

    // Every line of both files is whole (parses), and every refused request is there once.
    let (old, new) = (json_lines(&rotated), json_lines(&log));
    let count = |vs: &[Value]| vs.iter().filter(|v| v["message"] == REFUSED).count();
    assert!(count(&old) >= 20 && count(&new) > 0, "old {} new {}", count(&old), count(&new));
    assert_eq!(count(&old) + count(&new), answered.load(Ordering::SeqCst));
    assert!(new.iter().any(|v| v["message"] == "master exiting"));
    let writers: BTreeSet<u64> = new.iter().filter_map(|v| v["worker"].as_u64()).collect();
    assert!(writers.contains(&3), "the TTIN worker logs to the new file: {writers:?}");
    assert_eq!(server.logs(), Vec::<String>::new(), "nothing on stderr or stdout");
}

#[test]
fn a_reopen_that_fails_is_logged_and_the_old_file_kept() {
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let config = write(dir.path(), "app.toml", &config("file = \"logs/forkserve.log\""));
    let mut server = Server::spawn(&forkserve(), &[&config]);
    let log = dir.path().join("logs/forkserve.log");
    wait_in(&log, "all workers ready", 1);
    let line = lines(&log).into_iter().find(|l| l.contains("listening address=")).unwrap();
    let addr: SocketAddr = line.split("address=").nth(1).unwrap().trim().parse().unwrap();

    // The directory goes away: nothing can be created at the path.
    let moved = dir.path().join("moved");
    std::fs::rename(dir.path().join("logs"), &moved).unwrap();
    server.signal(Signal::SIGUSR1);
    let kept = moved.join("forkserve.log");
    wait_in(&kept, "usr1: cannot reopen the log file, writing on to the old one", 1);
    wait_in(&kept, "a worker cannot reopen a log file (USR1)", 2);
    assert_eq!(http::get(addr, "/").unwrap().text(), "hi");
    server.signal(Signal::SIGTERM);
    assert_eq!(server.exit_code(), 0);
    wait_in(&kept, "master exiting", 1);
    assert!(!dir.path().join("logs").exists());
}

#[test]
fn hup_moves_the_log_to_a_changed_file_and_refuses_one_that_cannot_be_opened() {
    let dir = tempdir();
    let config = write(dir.path(), "app.toml", &config("file = \"a.log\"\nlevel = \"debug\""));
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut server = Server::spawn(&forkserve(), &[&config]);
    wait_in(&a, "all workers ready", 1);
    let line = lines(&a).into_iter().find(|l| l.contains("listening address=")).unwrap();
    let addr: SocketAddr = line.split("address=").nth(1).unwrap().trim().parse().unwrap();

    write(dir.path(), "app.toml", &self::config("file = \"missing/b.log\""));
    server.signal(Signal::SIGHUP);
    wait_in(&a, "reload rejected: log file", 1);
    assert!(a.exists() && !dir.path().join("missing").exists());

    write(dir.path(), "app.toml", &self::config("file = \"b.log\"\nlevel = \"debug\""));
    server.signal(Signal::SIGHUP);
    wait_in(&b, "reload complete generation=2", 1);
    let new = server.wait_workers(2);
    assert!(refused(addr));
    wait_in(&b, REFUSED, 1);
    let text = lines(&b).join("\n");
    assert!(new.iter().any(|pid| text.contains(&format!("pid={pid}}}: {REFUSED}"))), "{text}");
    server.signal(Signal::SIGTERM);
    assert_eq!(server.exit_code(), 0);
    assert!(!lines(&a).join("\n").contains("master exiting"));
}

#[test]
fn a_log_file_that_cannot_be_opened_stops_the_start_with_a_clear_error() {
    let dir = tempdir();
    let path = dir.path().join("no/such/dir/forkserve.log");
    let path = path.to_str().unwrap();
    let mut server = Server::spawn(&forkserve(), &["-b", "127.0.0.1:0", "--error-logfile", path]);
    assert_eq!(server.exit_code(), 1);
    // The line may still be on its way from the pipe when the exit is seen.
    let line = server.wait_for("opening the log file");
    let expected = format!(
        "forkserve: error: opening the log file ([log] file, --log-file): {path}: No such file or \
         directory"
    );
    assert!(line.starts_with(&expected), "{line}");
    assert!(server.logs().iter().all(|l| !l.contains("listening")), "nothing was started");
}

/// Where descriptor 2 of `pid` points.
#[cfg(feature = "python")]
fn stderr_of(pid: i32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/fd/2")).unwrap_or_default()
}

/// An app that writes one line to `sys.stderr` for each request.
#[cfg(feature = "python")]
const STDERR_APP: &str = "import os, sys\n\
def app(environ, start_response):\n    \
    print('app stderr', os.getpid(), environ['PATH_INFO'], file=sys.stderr, flush=True)\n    \
    start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
    return [b'ok']\n";

#[cfg(feature = "python")]
#[test]
fn with_preload_usr1_moves_the_mold_the_workers_and_the_app_s_stderr_to_the_new_file() {
    let dir = tempdir();
    write(dir.path(), "stderr_app.py", STDERR_APP);
    let config = write(
        dir.path(),
        "app.toml",
        "[server]\nbind = [\"127.0.0.1:0\"]\nworkers = 2\n\n[log]\nfile = \"forkserve.log\"\n\n\
         [python]\nwsgi = \"stderr_app:app\"\nchdir = \".\"\npreload = true\n",
    );
    let (log, rotated) = (dir.path().join("forkserve.log"), dir.path().join("forkserve.log.1"));
    let mut server = Server::spawn(&forkserve(), &[&config]);
    wait_in(&log, "all workers ready", 1);
    let line = lines(&log).into_iter().find(|l| l.contains("listening address=")).unwrap();
    let addr: SocketAddr = line.split("address=").nth(1).unwrap().trim().parse().unwrap();
    assert_eq!(http::get(addr, "/before").unwrap().text(), "ok");
    wait_in(&log, "/before", 1);

    std::fs::rename(&log, &rotated).unwrap();
    server.signal(Signal::SIGUSR1);
    wait_in(&log, "usr1: log file reopened", 1);
    // Every process of the server, the mold and the workers it forked included, writes to the
    // new file: none is left on the renamed one.
    let master = server.pid().as_raw();
    let all = || {
        let mut pids = BTreeSet::from([master]);
        for child in common::children(master) {
            pids.insert(child);
            pids.extend(common::children(child));
        }
        pids
    };
    assert!(all().len() >= 4, "master, mold, two workers: {:?}", all());
    wait_until(|| all().iter().all(|&pid| stderr_of(pid) == log).then_some(())).unwrap_or_else(
        || panic!("{:?}", all().iter().map(|&p| (p, stderr_of(p))).collect::<Vec<_>>()),
    );
    assert_eq!(http::get(addr, "/after").unwrap().text(), "ok");
    wait_in(&log, "/after", 1);
    // A worker the mold forks now writes there too.
    server.signal(Signal::SIGTTIN);
    wait_in(&log, "worker booted", 1);
    server.signal(Signal::SIGTERM);
    assert_eq!(server.exit_code(), 0);
    assert!(!lines(&rotated).join("\n").contains("/after"));
    assert_eq!(server.logs(), Vec::<String>::new(), "nothing on stderr or stdout");
}
