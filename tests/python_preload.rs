//! `[python] preload` (`--preload`), on the real binary: each generation's app is imported once,
//! in a template process (the mold) that forks the generation's workers, which share its memory;
//! a reload imports the new code in a new mold; a mold that cannot import, or dies, is dealt with
//! as a worker would be; and nothing outlives the master.

#![cfg(feature = "python")]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use common::http;
use common::{Server, alive, forkserve, tempdir, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const APP: &str = include_str!("python/preload_app.py");

/// A copy of the test app in a scratch directory, which a test may rewrite.
fn app_dir() -> tempfile::TempDir {
    let dir = tempdir();
    std::fs::write(dir.path().join("preload_app.py"), APP).unwrap();
    dir
}

/// Starts `--workers N --preload` on the app in `dir`, and waits until every worker is ready.
fn start(dir: &Path, workers: &str, extra: &[&str]) -> Server {
    let dir = dir.to_str().unwrap();
    let mut args = vec!["-b", "127.0.0.1:0", "-w", workers, "--wsgi", "preload_app:app"];
    args.extend(["--chdir", dir, "--preload"]);
    args.extend(extra);
    Server::start(&forkserve(), &args)
}

/// What one answer of the app says.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    version: String,
    pid: i32,
    imported_in: i32,
    big: String,
}

fn ask(server: &Server) -> Answer {
    let text = http::get(server.addr(), "/").expect("request").text();
    let field = |name: &str| {
        let found = text.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{name}=")));
        found.unwrap_or_else(|| panic!("no {name} in {text:?}")).to_string()
    };
    Answer {
        version: field("version"),
        pid: field("pid").parse().unwrap(),
        imported_in: field("imported_in").parse().unwrap(),
        big: field("big"),
    }
}

/// Answers until `n` distinct workers have answered.
fn answers_of(server: &Server, n: usize) -> Vec<Answer> {
    wait_until(|| {
        let answers: Vec<Answer> = (0..8 * n).map(|_| ask(server)).collect();
        let pids: BTreeSet<i32> = answers.iter().map(|a| a.pid).collect();
        (pids.len() >= n).then_some(answers)
    })
    .unwrap_or_else(|| panic!("never saw {n} workers answer"))
}

/// The pid of the `nth` mold started for `generation`, from the master's log.
fn mold(server: &Server, generation: u64, nth: usize) -> i32 {
    let line = server.wait_for_nth("mold started pid=", nth_for(server, generation, nth));
    line.split("pid=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

/// Which "mold started" line is the `nth` of `generation`.
fn nth_for(server: &Server, generation: u64, nth: usize) -> usize {
    let needle = format!("generation={generation}");
    let started = || server.logs().into_iter().filter(|l| l.contains("mold started pid="));
    wait_until(|| {
        let lines: Vec<String> = started().collect();
        let index = lines.iter().enumerate().filter(|(_, l)| l.contains(&needle)).nth(nth - 1);
        index.map(|(i, _)| i + 1)
    })
    .unwrap_or_else(|| panic!("no mold #{nth} for generation {generation}"))
}

/// `Pss` and `Rss` of a process, in KiB.
fn pss_rss(pid: i32) -> (u64, u64) {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let field = |name: &str| -> u64 {
        let line = rollup.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("Pss:"), field("Rss:"))
}

#[test]
fn workers_are_forked_from_the_mold_and_share_the_app_it_imported() {
    let dir = app_dir();
    let server = start(dir.path(), "2", &[]);
    let mold = mold(&server, 1, 1);
    let answers = answers_of(&server, 2);
    for a in &answers {
        assert_eq!(a.imported_in, mold, "imported once, in the mold, not in worker {}", a.pid);
        assert_ne!(a.pid, mold);
        assert_eq!(a.big, answers[0].big, "the same object, at the same address");
    }
    // The workers' memory is mostly the mold's pages, shared: their proportional share is well
    // below what each has resident (each worker alone, with the app imported itself, has them
    // to itself, Pss close to Rss).
    let workers: BTreeSet<i32> = answers.iter().map(|a| a.pid).collect();
    let (pss, rss) =
        workers.iter().map(|&p| pss_rss(p)).fold((0, 0), |t, m| (t.0 + m.0, t.1 + m.1));
    assert!(pss * 10 < rss * 6, "workers' Pss {pss} KiB is not well below their Rss {rss} KiB");
    // The master imported nothing: it has one thread, and not the app's memory.
    let (master_rss, mold_rss) = (pss_rss(server.pid().as_raw()).1, pss_rss(mold).1);
    assert!(master_rss * 2 < mold_rss, "master {master_rss} KiB, mold {mold_rss} KiB");
    let threads = std::fs::read_dir(format!("/proc/{}/task", server.pid())).unwrap().count();
    assert_eq!(threads, 1, "the master is single-threaded");
}

#[test]
fn a_reload_imports_new_code_in_a_new_mold_and_no_request_fails() {
    let dir = app_dir();
    let server = start(dir.path(), "2", &[]);
    let first = mold(&server, 1, 1);
    assert_eq!(ask(&server).version, "one");
    // Clients ask all along the reload.
    let (stop, failed, served) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let addr = server.addr();
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, failed, served) = (stop.clone(), failed.clone(), served.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match http::get(addr, "/") {
                        Ok(r) if r.status == 200 => served.fetch_add(1, Ordering::SeqCst),
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    std::fs::write(dir.path().join("preload_app.py"), APP.replace("\"one\"", "\"two\"")).unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete");
    let second = mold(&server, 2, 1);
    assert_ne!(first, second);
    // The old workers finish what they accepted before they got the word.
    server.wait_for_nth("stopped: generation 2 took over", 2);
    let answers = answers_of(&server, 2);
    assert!(answers.iter().all(|a| a.version == "two" && a.imported_in == second), "{answers:?}");
    // The old generation's mold goes with its generation.
    server.wait_for(&format!("mold exited: exit code 0 pid={first}"));
    assert!(wait_until(|| (!alive(first)).then_some(())).is_some(), "the old mold is gone");
    stop.store(true, Ordering::SeqCst);
    clients.into_iter().for_each(|c| c.join().unwrap());
    assert!(served.load(Ordering::SeqCst) > 0);
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no request failed during the reload");
}

#[test]
fn an_app_that_cannot_be_imported_stops_the_first_start_with_exit_code_3() {
    let dir = app_dir();
    std::fs::write(dir.path().join("preload_app.py"), "import no_such_module_here\n").unwrap();
    let dir = dir.path().to_str().unwrap();
    let args = ["-b", "127.0.0.1:0", "--wsgi", "preload_app:app", "--chdir", dir, "--preload"];
    let mut server = Server::spawn(&forkserve(), &args);
    assert_eq!(server.exit_code(), 3);
    let output = server.output();
    let error = output.lines().find(|l| l.starts_with("forkserve: error: ")).expect(&output);
    assert!(error.contains("mold of generation 1"), "{error}");
    assert!(
        error.contains("ModuleNotFoundError: No module named 'no_such_module_here'"),
        "{error}"
    );
    assert!(error.contains("preload_app.py:1"), "the file and line: {error}");
}

#[test]
fn an_app_broken_by_a_reload_is_rolled_back_and_the_old_one_serves_on() {
    let dir = app_dir();
    let server = start(dir.path(), "2", &[]);
    let first = mold(&server, 1, 1);
    let before = answers_of(&server, 2);
    std::fs::write(dir.path().join("preload_app.py"), "raise RuntimeError('broken')\n").unwrap();
    server.signal(Signal::SIGHUP);
    let line = server.wait_for("reload failed, rolled back");
    assert!(line.contains("the mold of generation 2 could not load the app"), "{line}");
    assert!(line.contains("RuntimeError: broken"), "{line}");
    let after = answers_of(&server, 2);
    let pids = |a: &[Answer]| a.iter().map(|a| a.pid).collect::<BTreeSet<_>>();
    assert_eq!(pids(&after), pids(&before), "the same workers serve on");
    assert!(after.iter().all(|a| a.version == "one" && a.imported_in == first));
    assert!(alive(first), "the serving generation keeps its mold");
}

#[test]
fn a_killed_mold_is_replaced_and_its_workers_serve_on() {
    let dir = app_dir();
    let server = start(dir.path(), "2", &["--max-requests", "20"]);
    let first = mold(&server, 1, 1);
    let before: BTreeSet<i32> = answers_of(&server, 2).iter().map(|a| a.pid).collect();
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    server.wait_for("mold died unexpectedly");
    let second = mold(&server, 1, 2);
    server.wait_for_nth("mold ready", 2);
    assert!(before.iter().all(|&p| alive(p)), "the workers it forked serve on");
    // Recycling (max_requests) forks the successors from the new mold.
    let replaced = wait_until(|| {
        let a = ask(&server);
        (!before.contains(&a.pid)).then_some(a)
    })
    .expect("a recycled worker's successor answers");
    assert_eq!(replaced.imported_in, second);
    // So does TTIN.
    server.signal(Signal::SIGTTIN);
    server.wait_for("ttin: one more worker");
    let answers = answers_of(&server, 3);
    assert!(answers.iter().all(|a| a.imported_in == first || a.imported_in == second));
}

#[test]
fn nothing_outlives_the_master() {
    for stop in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT] {
        let dir = app_dir();
        let mut server = start(dir.path(), "2", &[]);
        let mold = mold(&server, 1, 1);
        let workers: Vec<i32> = answers_of(&server, 2).iter().map(|a| a.pid).collect();
        server.signal(stop);
        assert_eq!(server.exit_code(), 0, "{stop:?}");
        for pid in workers.iter().chain([&mold]) {
            assert!(
                wait_until(|| (!alive(*pid)).then_some(())).is_some(),
                "{pid} outlived {stop:?}"
            );
        }
        let output = server.output();
        assert!(output.contains(&format!("mold exited: exit code 0 pid={mold}")), "{output}");
    }
}

#[test]
fn a_binary_upgrade_starts_a_new_master_with_a_mold_of_its_own() {
    let dir = app_dir();
    let server = start(dir.path(), "2", &[]);
    let old_mold = mold(&server, 1, 1);
    server.signal(Signal::SIGUSR2);
    let started = server.wait_for("upgrade: started a new master");
    let new_master: i32 =
        started.split("pid=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    server.wait_for("upgrade complete: the new master serves");
    let new_mold = mold(&server, 1, 2);
    for old in [server.pid().as_raw(), old_mold] {
        assert!(wait_until(|| (!alive(old)).then_some(())).is_some(), "{old} is gone");
    }
    let answers = answers_of(&server, 2);
    let children = common::children(new_master);
    for a in &answers {
        assert_eq!(a.imported_in, new_mold, "{answers:?}");
        assert!(children.contains(&a.pid), "worker {} is the new master's child", a.pid);
    }
    assert!(children.contains(&new_mold));
}
