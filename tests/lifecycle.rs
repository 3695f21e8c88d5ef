//! The process model and the master's signals, on the real binaries.

mod common;

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use common::http::{self, Conn};
use common::{Server, WAIT, alive, example, forkserve, open_to_others, tempdir, wait_until, write};
use nix::sys::signal::Signal;

const LOCAL: &str = "127.0.0.1:0";

fn app_config(body: &str) -> String {
    format!(
        "[server]\nbind = [\"{LOCAL}\"]\nworkers = 2\n\n[[route]]\npath = \"/\"\nrespond = \"{body}\"\n"
    )
}

#[test]
fn requests_are_served_by_every_worker() {
    let server = Server::start(&example("demo"), &["-w", "3", "-b", LOCAL]);
    let workers = server.wait_workers(3);
    let addr = server.addr();
    // The kernel hands each connection to whichever worker accepts first; concurrent clients
    // spread them. Keep asking until all three have answered.
    let seen = wait_until(|| {
        let handles: Vec<_> = (0..12)
            .map(|_| thread::spawn(move || http::get(addr, "/pid").map(|r| r.text())))
            .collect();
        let mut seen = BTreeSet::new();
        for h in handles {
            let pid: i32 = h.join().unwrap().expect("request").trim().parse().expect("a pid");
            seen.insert(pid);
        }
        (seen.len() == 3).then_some(seen)
    })
    .expect("three distinct workers answered");
    assert_eq!(seen, workers, "the pids that answered are the master's children");
}

#[test]
fn workers_auto_honours_the_cpu_affinity_mask() {
    // Pinned to one CPU, "auto" means one worker, however many CPUs the machine has.
    let server = Server::spawn_on_cpu(&example("demo"), &["--workers", "auto", "-b", LOCAL], 0);
    server.wait_for("all workers ready workers=1");
    assert_eq!(server.wait_workers(1).len(), 1);
}

#[test]
fn master_is_single_threaded_and_never_serves() {
    let server = Server::start(&example("demo"), &["-w", "2", "-b", LOCAL]);
    let master = server.pid().as_raw();
    let threads = std::fs::read_dir(format!("/proc/{master}/task")).unwrap().count();
    assert_eq!(threads, 1, "the master has exactly one thread");
    let pid: i32 = http::get(server.addr(), "/pid").unwrap().text().trim().parse().unwrap();
    assert_ne!(pid, master, "a worker, not the master, answered");
    assert!(server.workers().contains(&pid));
}

/// CPU time (user + system, in clock ticks) a process has used.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn an_idle_master_sleeps() {
    // A master polling in a loop would use about a second of CPU per second; an idle one uses
    // none. Checked at start and after a reload, whose bookkeeping once made it spin.
    let server = Server::start(&example("demo"), &["-w", "2", "-b", LOCAL]);
    let master = server.pid().as_raw();
    for phase in ["after start", "after a reload"] {
        let before = cpu_ticks(master);
        thread::sleep(Duration::from_millis(1000));
        let used = cpu_ticks(master) - before;
        assert!(used < 20, "{phase}: the master used {used} ticks of CPU in one idle second");
        server.signal(Signal::SIGHUP);
        server.wait_for("reload complete");
    }
}

#[test]
fn a_killed_worker_is_logged_and_replaced() {
    let server = Server::start(&example("demo"), &["-w", "2", "-b", LOCAL]);
    let before = server.wait_workers(2);
    let victim = *before.iter().next().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).unwrap();

    let line = server.wait_for("worker died unexpectedly");
    assert!(line.contains(&format!("pid={victim}")), "{line}");
    assert!(line.contains("killed by signal 9"), "{line}");
    server.wait_for("worker=3");
    let after = server.wait_workers(2);
    assert!(!after.contains(&victim));
    assert!(!alive(victim));
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}

#[test]
fn ttin_adds_a_worker_and_ttou_removes_the_oldest() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL]);
    let first = server.wait_workers(1);

    server.signal(Signal::SIGTTIN);
    server.wait_for("ttin: one more worker workers=2");
    let two = server.wait_workers(2);
    assert!(two.is_superset(&first));
    // Once both are ready, TTOU stops the oldest (a worker still booting would go first).
    server.wait_for_nth("worker booted", 2);

    server.signal(Signal::SIGTTOU);
    server.wait_for("ttou: one fewer worker workers=1");
    let one = server.wait_workers(1);
    assert!(one.is_disjoint(&first), "TTOU stopped the oldest worker");

    server.signal(Signal::SIGTTOU);
    server.wait_for("one worker is the minimum");
    assert_eq!(server.wait_workers(1), one);
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}

#[test]
fn hup_picks_up_a_changed_body_and_replaces_every_worker() {
    let dir = tempdir();
    let config = write(dir.path(), "app.toml", &app_config("one"));
    let server = Server::start(&forkserve(), &[&config]);
    let addr = server.addr();
    let old = server.wait_workers(2);
    assert_eq!(http::get(addr, "/").unwrap().text(), "one");

    write(dir.path(), "app.toml", &app_config("two"));
    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete generation=2");
    let new = wait_until(|| {
        let now = server.workers();
        (now.len() == 2 && now.is_disjoint(&old)).then_some(now)
    })
    .expect("every old worker replaced");
    assert!(old.iter().all(|&pid| !alive(pid)));
    assert_eq!(http::get(addr, "/").unwrap().text(), "two");
    assert_eq!(server.workers(), new);
    assert_eq!(server.count("worker exited: exit code 0"), 2, "old workers exited cleanly");
}

#[test]
fn hup_with_a_broken_config_keeps_the_old_workers_and_body() {
    let dir = tempdir();
    let config = write(dir.path(), "app.toml", &app_config("one"));
    let server = Server::start(&forkserve(), &[&config]);
    let addr = server.addr();
    let workers = server.wait_workers(2);

    write(dir.path(), "app.toml", "[server]\nworkers = \"lots\"\n");
    server.signal(Signal::SIGHUP);
    let line = server.wait_for("reload rejected");
    assert!(line.contains(&format!("{config}:2:11")), "names file:line:col: {line}");

    assert_eq!(http::get(addr, "/").unwrap().text(), "one");
    assert_eq!(server.workers(), workers, "no worker was replaced");

    // A fixed file is picked up by the next HUP. "reload complete" means the old workers were
    // told to stop; until each handles that, it may still take a connection, so wait for them.
    write(dir.path(), "app.toml", &app_config("fixed"));
    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete");
    wait_until(|| workers.iter().all(|&pid| !alive(pid)).then_some(())).expect("old workers exit");
    assert_eq!(http::get(addr, "/").unwrap().text(), "fixed");
}

#[test]
fn hup_with_a_missing_or_unsearchable_static_root_is_refused_and_the_old_workers_serve_on() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    open_to_others(dir.path());
    let public = dir.path().join("public");
    std::fs::create_dir(&public).unwrap();
    write(&public, "a.txt", "file a");
    let text = format!(
        "[server]\nbind = [\"{LOCAL}\"]\nworkers = 2\n[[route]]\npath = \"/s/\"\nstatic = \"public\"\n"
    );
    let config = write(dir.path(), "app.toml", &text);
    let server = Server::spawn_unprivileged(&forkserve(), &[&config]);
    server.wait_for("all workers ready");
    let addr = server.addr();
    let workers = server.wait_workers(2);

    // Moved away: the workers serve on from the directory they opened; a reload is refused.
    let moved = dir.path().join("public.old");
    std::fs::rename(&public, &moved).unwrap();
    server.signal(Signal::SIGHUP);
    let line = server.wait_for("reload rejected");
    assert!(line.contains(&format!("{config}:6:10: static directory ")), "{line}");
    assert_eq!(http::get(addr, "/s/a.txt").unwrap().text(), "file a");

    // Back, but not searchable by the server: refused too, where main started a generation
    // that answered every file 403.
    std::fs::rename(&moved, &public).unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o000)).unwrap();
    server.signal(Signal::SIGHUP);
    let line = server.wait_for_nth("reload rejected", 2);
    assert!(line.contains("cannot be searched (Permission denied"), "{line}");
    assert_eq!(server.count("starting new generation"), 0, "{:#?}", server.logs());
    assert_eq!(server.workers(), workers, "no worker was replaced");
}

#[test]
fn term_finishes_in_flight_requests_and_refuses_new_connections() {
    let dir = tempdir();
    let pidfile = dir.path().join("fs.pid");
    let pidfile_arg = pidfile.to_str().unwrap();
    let mut server = Server::start(
        &example("demo"),
        &["-w", "2", "-b", LOCAL, "-p", pidfile_arg, "--log-level", "debug"],
    );
    let addr = server.addr();
    let pid_text = std::fs::read_to_string(&pidfile).unwrap();
    assert_eq!(pid_text.trim(), server.pid().to_string());

    let mut slow = Conn::open(addr).unwrap();
    slow.send_get("/sleep/2000").unwrap();
    let sent = Instant::now();
    server.wait_for("sleeping 2000 ms");

    server.signal(Signal::SIGTERM);
    server.wait_for("shutting down mode=graceful");
    let refused =
        wait_until(|| std::net::TcpStream::connect(addr).is_err().then_some(Instant::now()))
            .expect("new connections are refused");

    let response = slow.read_response(false).unwrap();
    let finished = Instant::now();
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "slept 2000 ms\n");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(finished.duration_since(sent) >= Duration::from_millis(2000));
    assert!(refused < finished, "connections were refused while the slow request ran");

    assert_eq!(server.exit_code(), 0);
    assert!(!pidfile.exists(), "the pidfile is removed");
}

#[test]
fn term_closes_idle_keep_alive_connections() {
    let mut server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL]);
    let mut idle = Conn::open(server.addr()).unwrap();
    assert_eq!(idle.get("/").unwrap().status, 200);
    server.signal(Signal::SIGTERM);
    assert!(idle.is_closed(), "the idle connection is closed");
    assert_eq!(server.exit_code(), 0);
}

#[test]
fn graceful_timeout_bounds_a_stop() {
    let mut server = Server::start(
        &example("demo"),
        &["-w", "1", "-b", LOCAL, "--graceful-timeout", "0.5", "--log-level", "debug"],
    );
    let mut slow = Conn::open(server.addr()).unwrap();
    slow.send_get("/sleep/60000").unwrap();
    server.wait_for("sleeping 60000 ms");
    let start = Instant::now();
    server.signal(Signal::SIGTERM);
    assert_eq!(server.exit_code(), 0);
    assert!(start.elapsed() < Duration::from_secs(10), "stopped long before the request ended");
    assert!(slow.read_response(false).is_err(), "the unfinished request got no response");
    server.wait_for("graceful_timeout reached");
}

#[test]
fn a_worker_stuck_in_a_handler_is_killed_after_graceful_timeout() {
    let mut server =
        Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--graceful-timeout", "0.5"]);
    let worker = *server.wait_workers(1).iter().next().unwrap();
    let mut stuck = Conn::open(server.addr()).unwrap();
    stuck.send_get("/spin/60000").unwrap();
    server.wait_for("blocking the worker's thread for 60000 ms");
    let start = Instant::now();
    server.signal(Signal::SIGTERM);
    assert_eq!(server.exit_code(), 0);
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    assert!(!alive(worker));
    let line = server.wait_for("worker exited: killed by signal 9");
    assert!(line.contains("by the master, as it did not stop in time"), "{line}");
}

#[test]
fn a_request_in_flight_on_an_old_worker_completes_across_a_reload() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--log-level", "debug"]);
    let addr = server.addr();
    let old = server.wait_workers(1);
    let mut slow = Conn::open(addr).unwrap();
    slow.send_get("/sleep/1500").unwrap();
    server.wait_for("sleeping 1500 ms");

    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete generation=2");
    let response = slow.read_response(false).unwrap();
    assert_eq!((response.status, response.text().as_str()), (200, "slept 1500 ms\n"));
    wait_until(|| old.iter().all(|&pid| !alive(pid)).then_some(())).expect("old worker exits");
    let pid: i32 = http::get(addr, "/pid").unwrap().text().trim().parse().unwrap();
    assert!(!old.contains(&pid), "a new worker answers");
}

#[test]
fn a_reload_whose_app_cannot_start_rolls_back_to_the_serving_generation() {
    let dir = tempdir();
    let fail = dir.path().join("fail");
    let fail_env = fail.to_str().unwrap();
    let server = Server::spawn_with(
        &example("demo"),
        &["-w", "2", "-b", LOCAL],
        &[("DEMO_FAIL_BOOT_FILE", fail_env)],
    );
    server.wait_for("all workers ready");
    let addr = server.addr();
    let old = server.wait_workers(2);

    std::fs::write(&fail, "").unwrap();
    server.signal(Signal::SIGHUP);
    let line = server.wait_for("reload failed, rolled back");
    assert!(line.contains("could not start its app"), "{line}");
    assert!(line.contains("generation=2 serving=1"), "{line}");
    assert_eq!(server.wait_workers(2), old, "the old generation serves on, untouched");
    let pid: i32 = http::get(addr, "/pid").unwrap().text().trim().parse().unwrap();
    assert!(old.contains(&pid));

    // The old generation is the current one again: a worker that dies is replaced.
    std::fs::remove_file(&fail).unwrap();
    let victim = *old.iter().next().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let line = server.wait_for("worker died unexpectedly");
    assert!(line.contains("generation=1") && line.contains("replacing it"), "{line}");
    wait_until(|| {
        let now = server.workers();
        (now.len() == 2 && !now.contains(&victim)).then_some(())
    })
    .expect("the dead worker is replaced");

    // Generation numbers are never reused: the next reload starts generation 3.
    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete generation=3");
}

#[test]
fn old_workers_drain_by_their_own_graceful_timeout_after_a_reload() {
    let dir = tempdir();
    let config = |grace: &str| {
        format!(
            "[server]\nbind = [\"{LOCAL}\"]\nworkers = 1\ngraceful_timeout = {grace}\n[log]\nlevel = \"debug\"\n"
        )
    };
    let path = write(dir.path(), "app.toml", &config("10"));
    let server = Server::start(&example("demo"), &[&path]);
    let mut slow = Conn::open(server.addr()).unwrap();
    slow.send_get("/sleep/2500").unwrap();
    server.wait_for("sleeping 2500 ms");

    // The new config allows 0.2 s to drain; the old worker was promised 10 s.
    write(dir.path(), "app.toml", &config("0.2"));
    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete");
    let response = slow.read_response(false).expect("the in-flight request completes");
    assert_eq!(response.status, 200);
    assert_eq!(server.count("did not exit in time"), 0);
}

#[test]
fn int_stops_at_once() {
    for sig in [Signal::SIGINT, Signal::SIGQUIT] {
        let mut server =
            Server::start(&example("demo"), &["-w", "2", "-b", LOCAL, "--log-level", "debug"]);
        let mut slow = Conn::open(server.addr()).unwrap();
        slow.send_get("/sleep/30000").unwrap();
        server.wait_for("sleeping 30000 ms");
        let start = Instant::now();
        server.signal(sig);
        assert_eq!(server.exit_code(), 0, "{sig}");
        assert!(start.elapsed() < Duration::from_secs(5), "{sig} took {:?}", start.elapsed());
        server.wait_for("shutting down mode=fast");
        assert!(slow.read_response(false).is_err(), "in-flight request dropped by {sig}");
    }
}

#[test]
fn a_worker_blocked_in_a_handler_is_killed_by_a_fast_stop() {
    let mut server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL]);
    let mut stuck = Conn::open(server.addr()).unwrap();
    stuck.send_get("/spin/60000").unwrap();
    let worker = *server.wait_workers(1).iter().next().unwrap();
    server.wait_for("blocking the worker's thread for 60000 ms");
    let start = Instant::now();
    server.signal(Signal::SIGINT);
    assert_eq!(server.exit_code(), 0);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(!alive(worker));
}

#[test]
fn app_factory_failure_on_first_start_exits_3_without_a_fork_storm() {
    let mut server = Server::spawn_with(
        &example("demo"),
        &["-w", "2", "-b", LOCAL, "--log-level", "debug"],
        &[("DEMO_FAIL_BOOT", "1")],
    );
    let output = server.output();
    let status = server.wait_exit(WAIT).unwrap();
    assert_eq!(status.code(), Some(3), "{output}");
    assert!(output.contains("app failed to start: DEMO_FAIL_BOOT=1"), "{output}");
    assert!(output.contains("forkserve: error: worker failed to boot"), "{output}");
    let forks = output.matches("worker spawned").count();
    assert!((1..=2).contains(&forks), "{forks} forks for 2 workers:\n{output}");
}

#[test]
fn unix_socket_serves_and_is_removed_on_stop() {
    use std::os::unix::net::UnixStream;
    let dir = tempdir();
    let sock = dir.path().join("fs.sock");
    let bind = format!("unix:{}", sock.display());
    let mut server = Server::start(&example("demo"), &["-w", "1", "-b", &bind]);
    let mut conn = Conn::over(UnixStream::connect(&sock).unwrap());
    assert_eq!(conn.get("/").unwrap().status, 200);
    drop(conn);
    server.signal(Signal::SIGTERM);
    assert_eq!(server.exit_code(), 0);
    assert!(!sock.exists(), "the socket file is removed");
}

#[test]
fn an_address_in_use_is_a_runtime_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut server = Server::spawn(&forkserve(), &["-b", &addr]);
    let output = server.output();
    assert_eq!(server.wait_exit(WAIT).unwrap().code(), Some(1), "{output}");
    assert!(output.contains(&format!("forkserve: error: cannot listen on {addr}")), "{output}");
}

#[test]
fn a_pidfile_naming_a_live_master_is_refused() {
    let dir = tempdir();
    let pidfile = dir.path().join("fs.pid");
    let pidfile_arg = pidfile.to_str().unwrap();
    let first = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "-p", pidfile_arg]);
    let mut second = Server::spawn(&example("demo"), &["-w", "1", "-b", LOCAL, "-p", pidfile_arg]);
    let output = second.output();
    assert_eq!(second.wait_exit(WAIT).unwrap().code(), Some(1), "{output}");
    assert!(output.contains("is locked by a running forkserve"), "{output}");
    let still = std::fs::read_to_string(&pidfile).unwrap();
    assert_eq!(still.trim(), first.pid().to_string(), "the first master's pidfile is untouched");
}

#[test]
fn the_hello_example_serves() {
    let server = Server::start(&example("hello"), &["-w", "1", "-b", LOCAL]);
    let response = http::get(server.addr(), "/").unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "Hello from a forkserve worker!\n");
}

/// Starts the demo with `args` (one worker), blocks its worker's thread in a 20 s request, so
/// that it cannot drain on its own, and SIGKILLs the master. Returns the first server (whose
/// process group the orphan is still in: dropping it ends the orphan), the stuck connection,
/// the orphan's pid, and when its master was killed.
fn orphan_a_blocked_worker(args: &[&str]) -> (Server, Conn, i32, Instant) {
    let first = Server::start(&example("demo"), args);
    let orphan = *first.wait_workers(1).iter().next().unwrap();
    let mut stuck = Conn::open(first.addr()).unwrap();
    stuck.send_get("/spin/20000").unwrap();
    first.wait_for("blocking the worker's thread");
    nix::sys::signal::kill(first.pid(), Signal::SIGKILL).unwrap();
    (first, stuck, orphan, Instant::now())
}

#[test]
fn a_killed_master_leaves_no_lock_and_its_orphan_stops_within_graceful_timeout() {
    let dir = tempdir();
    let pidfile = dir.path().join("fs.pid");
    let pidfile_arg = pidfile.to_str().unwrap();
    let args = ["-w", "1", "-b", LOCAL, "-p", pidfile_arg, "--graceful-timeout", "1"];
    let (_first, _stuck, orphan, killed) = orphan_a_blocked_worker(&args);

    // A new server with the same pidfile starts while the orphan still spins.
    let second = Server::start(&example("demo"), &args);
    let pid_text = std::fs::read_to_string(&pidfile).unwrap();
    assert_eq!(pid_text.trim(), second.pid().to_string());
    // graceful_timeout (1 s) + 1 s, rounded up to whole seconds: the bound is 2 s.
    wait_until(|| (!alive(orphan)).then_some(())).expect("the orphaned worker exits");
    let lived = killed.elapsed();
    assert!(lived < Duration::from_secs(8), "the orphan lived {lived:?} after its master");
    assert_eq!(http::get(second.addr(), "/").unwrap().status, 200);
}

#[test]
fn a_killed_master_s_orphan_lets_go_of_a_fixed_port_at_once() {
    // A fixed port: a free one, found by binding port 0 and closing it.
    let port = std::net::TcpListener::bind(LOCAL).unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let dir = tempdir();
    let pidfile = dir.path().join("fs.pid");
    let pidfile_arg = pidfile.to_str().unwrap();
    // The default graceful_timeout (30 s): the orphan outlives this test unless killed.
    let args = ["-w", "1", "-b", bind.as_str(), "-p", pidfile_arg];
    let (_first, _stuck, orphan, killed) = orphan_a_blocked_worker(&args);

    // A new server on the same port and pidfile starts at once, while the orphan still spins.
    let second = Server::spawn(&example("demo"), &args);
    let started = wait_until(|| {
        let logs = second.logs();
        if logs.iter().any(|l| l.contains("all workers ready")) {
            Some(Ok(()))
        } else if logs.iter().any(|l| l.contains("error")) {
            Some(Err(logs.join("\n")))
        } else {
            None
        }
    });
    match started {
        Some(Ok(())) => {}
        Some(Err(logs)) => panic!("the new server did not start:\n{logs}"),
        None => panic!("the new server did not start in time:\n{}", second.logs().join("\n")),
    }
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(5), "the new server started {took:?} after the kill");
    assert!(alive(orphan), "the orphan still runs its request");
    let response = http::get(second.addr(), "/pid").unwrap();
    assert_eq!(response.status, 200);
    assert_ne!(response.text().trim(), orphan.to_string(), "served by the new server");
    assert!(second.workers().contains(&response.text().trim().parse().unwrap()));
}

#[test]
fn a_fifo_in_place_of_the_config_does_not_freeze_the_master() {
    let dir = tempdir();
    let path =
        write(dir.path(), "app.toml", &format!("[server]\nbind = [\"{LOCAL}\"]\nworkers = 1\n"));
    let mut server = Server::start(&example("demo"), &[&path]);
    let victim = *server.wait_workers(1).iter().next().unwrap();

    // A FIFO that nothing writes: reading it would block the master for ever.
    std::fs::remove_file(&path).unwrap();
    nix::unistd::mkfifo(path.as_str(), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    server.signal(Signal::SIGHUP);
    let line = server.wait_for("reload rejected");
    assert!(line.contains(&format!("{path}: is not a regular file but a FIFO")), "{line}");

    // The master still supervises: a killed worker is replaced, TERM stops it.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    server.wait_for_nth("worker booted", 2);
    server.signal(Signal::SIGTERM);
    assert_eq!(server.exit_code(), 0);
}

#[test]
fn a_starting_server_waits_a_moment_for_an_address_in_use_then_says_so() {
    // An address held for a moment, as by a killed predecessor's orphans letting go of it:
    // the new server binds it once it is free.
    let held = std::net::TcpListener::bind(LOCAL).unwrap();
    let bind = held.local_addr().unwrap().to_string();
    let server = Server::spawn(&example("demo"), &["-w", "1", "-b", &bind]);
    server.wait_for("address in use, retrying");
    drop(held);
    server.wait_for("all workers ready");
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);

    // An address that stays in use is an error after the retries, exit code 1.
    let held = std::net::TcpListener::bind(LOCAL).unwrap();
    let bind = held.local_addr().unwrap().to_string();
    let started = Instant::now();
    let mut server = Server::spawn(&forkserve(), &["-w", "1", "-b", &bind]);
    let output = server.output();
    assert_eq!(server.exit_code(), 1, "{output}");
    assert!(output.contains(&format!("forkserve: error: cannot listen on {bind}")), "{output}");
    assert!(output.contains("in use"), "{output}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "gave up after {took:?}");
}
