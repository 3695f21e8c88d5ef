//! Supervision on the real binaries: hung workers, boot failures, crash loops, recycling,
//! request deadlines and the per-worker connection cap.

mod common;

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::http::{self, Conn};
use common::{Server, WAIT, alive, example, forkserve, tempdir, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const LOCAL: &str = "127.0.0.1:0";

fn only(workers: &BTreeSet<i32>) -> i32 {
    assert_eq!(workers.len(), 1, "{workers:?}");
    *workers.iter().next().unwrap()
}

fn pid_of_answer(addr: SocketAddr) -> i32 {
    http::get(addr, "/pid").unwrap().text().trim().parse().unwrap()
}

/// Waits until the one worker is another process than `old`, and returns it.
fn replacement_of(server: &Server, old: i32) -> i32 {
    wait_until(|| {
        let now = server.workers();
        (now.len() == 1 && !now.contains(&old)).then(|| only(&now))
    })
    .unwrap_or_else(|| panic!("worker {old} was not replaced: {:?}", server.workers()))
}

/// Sends GETs to `path` on fresh connections from `threads` clients until `stop` is set;
/// returns how many were answered 200, and the failures.
fn hammer(
    addr: SocketAddr,
    path: &'static str,
    threads: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<(usize, Vec<String>)>> {
    (0..threads)
        .map(|_| {
            let stop = Arc::clone(stop);
            thread::spawn(move || {
                let (mut ok, mut failed) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match http::get(addr, path) {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(r) => failed.push(format!("status {}", r.status)),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

fn totals(handles: Vec<thread::JoinHandle<(usize, Vec<String>)>>) -> (usize, Vec<String>) {
    handles.into_iter().map(|h| h.join().unwrap()).fold((0, Vec::new()), |mut acc, (ok, f)| {
        acc.0 += ok;
        acc.1.extend(f);
        acc
    })
}

#[test]
fn a_stopped_worker_is_killed_and_replaced_after_timeout() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--timeout", "2"]);
    let victim = only(&server.wait_workers(1));
    kill(Pid::from_raw(victim), Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();

    let replacement = replacement_of(&server, victim);
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(4), "replaced after {took:?}, over timeout + 2 s");
    assert!(!alive(victim));
    let line = server.wait_for("worker timed out");
    assert!(line.contains(&format!("pid={victim}")), "{line}");
    assert!(line.contains("no heartbeat for 2."), "{line}");
    let exit = server.wait_for("worker exited: killed by signal 9 (SIGKILL)");
    assert!(exit.contains("killed by the master: hung"), "{exit}");
    assert!(!exit.contains("OOM"), "the master's own kill is not blamed on memory: {exit}");
    assert_eq!(pid_of_answer(server.addr()), replacement);
}

#[test]
fn a_handler_blocking_its_worker_is_named_when_the_worker_is_killed() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--timeout", "1"]);
    let addr = server.addr();
    let victim = only(&server.wait_workers(1));
    let mut stuck = Conn::open(addr).unwrap();
    stuck.send_get("/spin/60000").unwrap();

    let line = server.wait_for("worker timed out");
    assert!(line.contains(&format!("pid={victim}")), "{line}");
    assert!(line.contains("blocked in the handler of GET /spin/60000"), "{line}");
    assert!(line.contains("1 request(s) in flight"), "{line}");
    let exit = server.wait_for("worker exited: killed by signal 6 (SIGABRT)");
    assert!(exit.contains("killed by the master: hung"), "{exit}");
    assert!(stuck.read_response(false).is_err(), "the stuck request's connection is closed");
    let replacement = replacement_of(&server, victim);
    assert_eq!(pid_of_answer(addr), replacement);
}

#[test]
fn an_async_wait_is_not_a_hang() {
    // A handler that awaits does not block the worker's loop: its heartbeat goes on.
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--timeout", "1"]);
    let worker = only(&server.wait_workers(1));
    let response = http::get(server.addr(), "/sleep/2500").unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(server.count("timed out"), 0, "{:?}", server.logs());
    assert_eq!(only(&server.workers()), worker);
}

#[test]
fn boot_time_does_not_count_against_timeout() {
    // Gunicorn counts a slow app import against the request timeout; here a worker may take
    // up to boot_timeout to boot, whatever timeout is.
    let server = Server::start_with(
        &example("demo"),
        &["-w", "1", "-b", LOCAL, "--timeout", "1", "--boot-timeout", "20"],
        &[("DEMO_BOOT_SLEEP_MS", "2500")],
    );
    let line = server.wait_for("worker booted");
    let boot_ms: u64 = line.split("boot_ms=").nth(1).unwrap().trim().parse().unwrap();
    assert!(boot_ms >= 2500, "{line}");
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
    assert_eq!(server.count("timed out") + server.count("boot_timeout"), 0);
}

#[test]
fn a_worker_not_ready_within_boot_timeout_fails_the_first_start_with_exit_3() {
    let mut server = Server::spawn_with(
        &example("demo"),
        &["-w", "2", "-b", LOCAL, "--boot-timeout", "1", "--log-level", "debug"],
        &[("DEMO_BOOT_SLEEP_MS", "60000")],
    );
    let started = Instant::now();
    let status = server.wait_exit(WAIT).expect("the master exits");
    let output = server.output();
    assert_eq!(status.code(), Some(3), "{output}");
    assert!(started.elapsed() < Duration::from_secs(10), "{output}");
    assert!(
        output.contains("forkserve: error: worker failed to boot: worker ")
            && output.contains("not ready within boot_timeout (1 s)"),
        "{output}"
    );
    assert_eq!(output.matches("worker spawned").count(), 2, "no fork after the failure:\n{output}");
}

#[test]
fn a_panicking_app_factory_fails_the_first_start_with_exit_3_and_names_the_panic() {
    let mut server = Server::spawn_with(
        &example("demo"),
        &["-w", "2", "-b", LOCAL, "--log-level", "debug"],
        &[("DEMO_FAIL_BOOT", "panic")],
    );
    let status = server.wait_exit(WAIT).expect("the master exits");
    let output = server.output();
    assert_eq!(status.code(), Some(3), "{output}");
    let error = output.lines().find(|l| l.starts_with("forkserve: error:")).expect(&output);
    assert!(error.contains("worker failed to boot: worker "), "{error}");
    assert!(error.contains("app factory panicked: DEMO_FAIL_BOOT=panic"), "{error}");
    assert!(output.matches("worker spawned").count() <= 2, "{output}");
}

#[test]
fn workers_that_fail_to_boot_after_the_start_are_retried_with_a_growing_pause() {
    let dir = tempdir();
    let fail = dir.path().join("fail");
    let server = Server::start_with(
        &example("demo"),
        &["-w", "2", "-b", LOCAL, "--log-level", "debug"],
        &[("DEMO_FAIL_BOOT_FILE", fail.to_str().unwrap())],
    );
    let addr = server.addr();
    let workers = server.wait_workers(2);
    std::fs::write(&fail, "").unwrap();
    let victim = *workers.iter().next().unwrap();
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    server.wait_for("worker died unexpectedly");

    // Four seconds of failing boots: with the pause doubling from 0.1 s, that is about five
    // forks; without it, hundreds.
    let spawned_before = server.count("worker spawned");
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(4) {
        // The worker that is still up serves throughout.
        assert_eq!(http::get(addr, "/").unwrap().status, 200);
        thread::sleep(Duration::from_millis(100));
    }
    let forks = server.count("worker spawned") - spawned_before;
    assert!((2..=7).contains(&forks), "{forks} forks in 4 s:\n{}", server.logs().join("\n"));
    assert!(server.count("boot failure: app failed to start") >= 2);
    let pauses: Vec<u64> = server
        .logs()
        .iter()
        .filter(|l| l.contains("pausing before the next fork"))
        .map(|l| l.split("delay_ms=").nth(1).unwrap().trim().parse().unwrap())
        .collect();
    assert!(pauses.windows(2).all(|w| w[1] == (w[0] * 2).min(30_000)), "{pauses:?}");
    assert_eq!(server.count("failed to boot: worker"), 0, "a failure after the start is not fatal");

    // Fixed: the next try boots, and the server is back at two workers.
    std::fs::remove_file(&fail).unwrap();
    wait_until(|| {
        let now = server.workers();
        (now.len() == 2 && !now.contains(&victim)).then_some(())
    })
    .expect("the worker is replaced once it can boot");
}

#[test]
fn a_static_root_deleted_at_runtime_is_reported_once_not_at_every_failed_boot() {
    let dir = tempdir();
    let public = dir.path().join("public");
    std::fs::create_dir(&public).unwrap();
    let config = common::write(
        dir.path(),
        "app.toml",
        &format!(
            "[server]\nbind = [\"{LOCAL}\"]\nworkers = 2\n[[route]]\npath = \"/\"\nstatic = \"public\"\n"
        ),
    );
    let server = Server::start(&forkserve(), &[&config]);
    let workers = server.wait_workers(2);
    std::fs::remove_dir(&public).unwrap();
    let victim = *workers.iter().next().unwrap();
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let first = server.wait_for("boot failure: app failed to start");
    assert!(first.contains("ERROR"), "{first}");
    assert!(first.contains(&format!("route \"/\": static directory {}", public.display())));

    // 2.5 s of failing boots: five of them, with the pause doubling from 0.1 s; each was an
    // error line from the worker and one from the master.
    thread::sleep(Duration::from_millis(2500));
    let errors: Vec<String> = server
        .logs()
        .into_iter()
        .filter(|l| l.contains("ERROR") && l.contains("app failed to start"))
        .collect();
    assert_eq!(errors, [first], "one error line for the same failure");
    assert_eq!(server.count("worker failed to boot: pausing"), 1, "{:#?}", server.logs());

    // Back: the next try boots, and the log says how many failed meanwhile.
    std::fs::create_dir(&public).unwrap();
    let again = server.wait_for("workers boot again, after ");
    let failures: u64 = again.split("failures=").nth(1).unwrap().trim().parse().unwrap();
    assert!(failures >= 3, "{again}");
    server.wait_workers(2);
}

#[test]
fn a_crash_loop_after_the_start_is_slowed_down() {
    let mut server = Server::start_with(
        &example("demo"),
        &["-w", "2", "-b", LOCAL, "--log-level", "debug"],
        &[("DEMO_CRASH_AFTER_MS", "200")],
    );
    thread::sleep(Duration::from_secs(5));
    // Without a pause, two workers living 0.2 s each fork about 50 times in 5 s.
    let forks = server.count("worker spawned");
    assert!(forks <= 12, "{forks} forks in 5 s:\n{}", server.logs().join("\n"));
    let crash = server.wait_for("worker died unexpectedly");
    assert!(crash.contains("killed by signal 6 (SIGABRT)"), "{crash}");
    assert!(server.count("after booting: pausing before the next fork") >= 3);
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "a crash loop after the start is not fatal"
    );
}

#[test]
fn max_requests_recycles_workers_successor_first_without_failing_a_request() {
    let server = Server::start(
        &example("demo"),
        &[
            "-w",
            "2",
            "-b",
            LOCAL,
            "--max-requests",
            "50",
            "--max-requests-jitter",
            "10",
            "--log-level",
            "debug",
        ],
    );
    let addr = server.addr();
    let pids: BTreeSet<String> = {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                thread::spawn(move || {
                    (0..125)
                        .map(|_| http::get(addr, "/pid").map(|r| (r.status, r.text())))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let answers: Vec<_> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
        assert_eq!(answers.len(), 500);
        let failed: Vec<_> = answers.iter().filter(|a| !matches!(a, Ok((200, _)))).collect();
        assert!(failed.is_empty(), "{} failed: {:?}", failed.len(), &failed[..failed.len().min(5)]);
        answers.into_iter().map(|a| a.unwrap().1).collect()
    };
    assert!(pids.len() >= 5, "500 requests at most 60 per worker: {} workers answered", pids.len());
    let logs = server.logs();
    // Capacity never dips: replaying the master's decisions, at least two workers are ready
    // and not told to stop at every point after the start.
    let mut serving = 0i32;
    for (i, line) in logs.iter().enumerate() {
        if line.contains("worker booted") {
            serving += 1;
        } else if line.contains("stopping worker gracefully") {
            serving -= 1;
            assert!(serving >= 2, "{serving} workers serving after line {i}: {logs:#?}");
        }
    }
    let due: Vec<&String> =
        logs.iter().filter(|l| l.contains("recycling worker: served")).collect();
    assert!(due.len() >= 4, "{logs:#?}");
    for line in &due {
        let served: u64 =
            line.split("served ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!((50..=60).contains(&served), "{line}");
    }
    // The first recycled worker: its successor booted after it was found due, and before it
    // was told to stop.
    let id = due[0].split("worker=").nth(1).unwrap().split(' ').next().unwrap();
    let this = format!("worker={id} generation");
    let marked = logs.iter().position(|l| l == due[0]).unwrap();
    let exited = logs
        .iter()
        .position(|l| l.contains("worker exited: exit code 0, recycled") && l.contains(&this))
        .unwrap_or_else(|| panic!("worker {id} did not exit recycled: {logs:#?}"));
    assert!(
        logs[marked..exited].iter().any(|l| l.contains("worker booted")),
        "worker {id}: no successor booted before it stopped:\n{logs:#?}"
    );
    assert_eq!(server.wait_workers(2).len(), 2);
}

#[test]
fn request_timeout_answers_504_while_other_requests_go_on() {
    let server =
        Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--request-timeout", "1"]);
    let addr = server.addr();
    let worker = only(&server.wait_workers(1));
    let slow = thread::spawn(move || {
        let started = Instant::now();
        let response = http::get(addr, "/sleep/10000").unwrap();
        (response, started.elapsed())
    });
    // On the same worker, meanwhile: a fast request and a quick sleep.
    thread::sleep(Duration::from_millis(200));
    assert_eq!(http::get(addr, "/sleep/100").unwrap().status, 200);
    assert_eq!(http::get(addr, "/").unwrap().status, 200);
    let (response, took) = slow.join().unwrap();
    assert_eq!(response.status, 504, "{response:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let line = server.wait_for("request_timeout reached, answered 504");
    assert!(line.contains("path=/sleep/10000"), "{line}");

    // A response that has started and runs past the deadline: its connection is closed
    // before the body's end.
    let mut conn = Conn::open(addr).unwrap();
    conn.send_get("/drip/5000").unwrap();
    let cut = conn.read_response(false);
    assert!(cut.is_err(), "the body was completed: {cut:?}");
    server.wait_for("request_timeout reached while sending the response");

    assert_eq!(only(&server.workers()), worker, "the worker serves on");
    assert_eq!(http::get(addr, "/sleep/10").unwrap().status, 200);
}

/// True if no response arrives on `conn` within `wait`.
fn no_answer(conn: &mut Conn, wait: Duration) -> bool {
    conn.set_timeout(wait);
    let result = conn.read_response(false);
    conn.set_timeout(WAIT);
    matches!(&result, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

#[test]
fn a_worker_at_worker_connections_stops_accepting_until_one_closes() {
    let server =
        Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--worker-connections", "2"]);
    let addr = server.addr();
    let mut a = Conn::open(addr).unwrap();
    let mut b = Conn::open(addr).unwrap();
    assert_eq!(a.get("/").unwrap().status, 200);
    assert_eq!(b.get("/").unwrap().status, 200);

    let mut c = Conn::open(addr).unwrap();
    c.send_get("/").unwrap();
    assert!(no_answer(&mut c, Duration::from_millis(700)), "a third connection was served");
    // Both open ones still work.
    assert_eq!(b.get("/").unwrap().status, 200);
    drop(a);
    let response = c.read_response(false).unwrap();
    assert_eq!(response.status, 200, "the waiting connection is served once one closed");
}

#[test]
fn out_of_descriptors_is_logged_once_not_every_retry_and_warned_of_at_start() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // The clients need more descriptors than the server is given.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let server = Server::spawn_with_nofile(&forkserve(), &["-w", "1", "-b", LOCAL], 256);
    server.wait_for("all workers ready");
    let warning = server.wait_for("worker_connections is more than the open-files limit allows");
    assert!(warning.contains("worker_connections=1000 open_files_limit=256"), "{warning}");
    let addr = server.addr();

    // 400 idle connections: the worker runs out of descriptors at about 250, and the rest
    // wait in the backlog while it retries accept every 100 ms.
    let clients: Vec<_> = (0..400).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    let first = server.wait_for("accept failed: Too many open files");
    assert!(first.contains("raise the open-files limit or lower worker_connections"), "{first}");
    let logged = server.count("accept failed");
    thread::sleep(Duration::from_secs(2));
    // Twenty retries in those 2 s: one line a retry logs about twenty.
    let repeats = server.count("accept failed") - logged;
    assert_eq!(repeats, 0, "{:#?}", server.logs());

    // Churn: a connection closes every 100 ms, so the worker accepts one from the backlog,
    // then fails again. It says it accepts again once, not at every success; and the failures
    // in between are not logged either.
    let mut clients = std::collections::VecDeque::from(clients);
    for _ in 0..20 {
        drop(clients.pop_front());
        thread::sleep(Duration::from_millis(100));
    }
    let again = server.wait_for("accepting again after failed accepts");
    let failures: u64 = again.split("failures=").nth(1).unwrap().trim().parse().unwrap();
    assert!(failures >= 10, "{again}");
    assert_eq!(server.count("accepting again"), 1, "{:#?}", server.logs());
    assert_eq!(server.count("accept failed"), 1, "{:#?}", server.logs());

    // Once descriptors are free again, the worker serves.
    drop(clients);
    assert_eq!(http::get(addr, "/").unwrap().status, 404, "answered (no route is configured)");
}

#[test]
fn connections_a_full_worker_leaves_go_to_the_other_workers() {
    let server =
        Server::start(&example("demo"), &["-w", "2", "-b", LOCAL, "--worker-connections", "1"]);
    let addr = server.addr();
    let workers = server.wait_workers(2);
    let mut a = Conn::open(addr).unwrap();
    let first: i32 = a.get("/pid").unwrap().text().trim().parse().unwrap();
    // Worker `first` is full: the next connection can only be taken by the other.
    let mut b = Conn::open(addr).unwrap();
    let second: i32 = b.get("/pid").unwrap().text().trim().parse().unwrap();
    assert_ne!(first, second);
    assert_eq!(workers, [first, second].into_iter().collect());
    let mut c = Conn::open(addr).unwrap();
    c.send_get("/pid").unwrap();
    assert!(no_answer(&mut c, Duration::from_millis(700)), "both workers are full");
    drop(b);
    let third: i32 = c.read_response(false).unwrap().text().trim().parse().unwrap();
    assert_eq!(third, second);
    assert_eq!(a.get("/pid").unwrap().status, 200);
}

#[test]
fn a_worker_over_max_worker_memory_is_replaced_successor_first() {
    let server =
        Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--max-worker-memory", "48"]);
    let addr = server.addr();
    let fat = only(&server.wait_workers(1));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = hammer(addr, "/", 2, &stop);
    assert_eq!(http::get(addr, "/alloc/64").unwrap().status, 200);

    let due = server.wait_for("over max_worker_memory (48 MiB); starting its successor first");
    assert!(due.contains(&format!("pid={fat}")), "{due}");
    let exit = server.wait_for("worker exited: exit code 0, recycled:");
    assert!(exit.contains(&format!("pid={fat}")), "{exit}");
    let replacement = replacement_of(&server, fat);
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = totals(clients);
    assert!(failed.is_empty(), "{} of {} requests failed: {:?}", failed.len(), ok, &failed[..1]);
    assert!(ok > 0);
    // The successor booted before the fat worker was told to stop.
    let logs = server.logs();
    let booted = logs
        .iter()
        .position(|l| l.contains("worker booted") && l.contains(&format!("pid={replacement}")))
        .unwrap();
    let exited = logs.iter().position(|l| *l == exit).unwrap();
    assert!(booted < exited, "{logs:#?}");
}

/// The peak resident memory of a live process, in MiB (`VmHWM`).
fn peak_rss_mib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
}

#[test]
fn a_worker_allocating_as_fast_as_it_can_overshoots_max_worker_memory_by_little() {
    let server =
        Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--max-worker-memory", "64"]);
    let addr = server.addr();
    let fat = only(&server.wait_workers(1));
    // One client allocating 8 MiB per request, back to back on one connection, until the
    // worker says it is done (Connection: close): it serves on until its successor is ready,
    // and stops taking work at twice the limit if that comes first. A worker checked only at
    // its heartbeat grows by hundreds of MiB first; the loop gives up at 512 MiB, not to
    // strain the machine.
    // A response written just before the worker was told to stop carries no `Connection:
    // close`; the drain then closes the idle connection and the worker may be gone before its
    // peak is read again: that ends the loop too, with the last peak read.
    let mut conn = Conn::open(addr).unwrap();
    let (mut answered, mut peak) = (0, 0);
    let closed = loop {
        let response = conn.get("/alloc/8").unwrap();
        assert_eq!(response.status, 200);
        answered += 1;
        let Some(now) = peak_rss_mib(fat) else { break true };
        peak = now;
        if response.header("connection") == Some("close") || peak > 512 {
            break response.header("connection") == Some("close");
        }
    };
    eprintln!("peak {peak} MiB after {answered} allocations of 8 MiB");
    // The ceiling (128 MiB), plus the request that found it over, the one answered with
    // Connection: close, and what is allocated between two readings (4 ms): 150 MiB here,
    // where a check every second let it reach 500 MiB and more.
    assert!(
        peak < 176,
        "peak RSS {peak} MiB for a 64 MiB limit after {answered} allocations of 8 MiB:\n{}",
        server.logs().join("\n")
    );
    assert!(closed, "the worker stopped taking work on that connection");
    let due = server.wait_for("over max_worker_memory (64 MiB); starting its successor first");
    assert!(due.contains(&format!("pid={fat}")), "{due}");
    let exit = server.wait_for("worker exited: exit code 0, recycled:");
    assert!(exit.contains(&format!("pid={fat}")) && exit.contains("(64 MiB)"), "{exit}");
    // Its successor serves.
    let replacement = replacement_of(&server, fat);
    assert_eq!(pid_of_answer(addr), replacement);
}

/// One request on a fresh connection, failing if it is not answered within `wait`.
fn get_within(addr: SocketAddr, path: &str, wait: Duration) -> io::Result<http::Response> {
    let mut conn = Conn::open(addr)?;
    conn.set_timeout(wait);
    conn.get(path)
}

#[test]
fn a_worker_over_max_worker_memory_serves_on_while_its_successor_cannot_boot() {
    let dir = tempdir();
    let fail = dir.path().join("fail");
    let server = Server::start_with(
        &example("demo"),
        &["-w", "1", "-b", LOCAL, "--max-worker-memory", "48"],
        &[("DEMO_FAIL_BOOT_FILE", fail.to_str().unwrap())],
    );
    let addr = server.addr();
    let fat = only(&server.wait_workers(1));
    std::fs::write(&fail, "").unwrap();

    // Over the limit, under twice it: replaced successor first, and the successor cannot boot.
    assert_eq!(http::get(addr, "/alloc/56").unwrap().status, 200);
    let due = server.wait_for("over max_worker_memory (48 MiB); starting its successor first");
    assert!(due.contains(&format!("pid={fat}")), "{due}");
    server.wait_for("boot failure: app failed to start");
    // Meanwhile the only worker serves on, as before: new connections, kept alive.
    for _ in 0..10 {
        let response = get_within(addr, "/pid", Duration::from_secs(2))
            .expect("the worker over max_worker_memory still answers");
        assert_eq!(response.text().trim(), fat.to_string());
        assert_eq!(response.header("connection"), None, "{:?}", response.headers);
    }
    assert_eq!(server.workers(), BTreeSet::from([fat]), "still the same worker");

    // Past twice the limit (found by its heartbeat), it stops accepting, successor or not.
    assert_eq!(http::get(addr, "/alloc/48").unwrap().status, 200);
    let ceiling = server.wait_for("over twice max_worker_memory: no longer accepting");
    assert!(ceiling.contains("limit_mib=48"), "{ceiling}");
    let mut waiting = Conn::open(addr).unwrap();
    waiting.send_get("/pid").unwrap();
    assert!(no_answer(&mut waiting, Duration::from_millis(700)), "a new connection was served");
    assert!(alive(fat), "it waits for its successor");

    // Once a successor can boot, it takes over, and answers the connection that waited.
    std::fs::remove_file(&fail).unwrap();
    waiting.set_timeout(WAIT);
    let answer = waiting.read_response(false).unwrap();
    let replacement: i32 = answer.text().trim().parse().unwrap();
    assert_ne!(replacement, fat);
    let exit = server.wait_for("worker exited: exit code 0, recycled:");
    assert!(exit.contains(&format!("pid={fat}")), "{exit}");
}

#[test]
fn a_client_taking_every_new_worker_over_max_worker_memory_does_not_make_a_fork_loop() {
    // A worker boots at about 6 MiB; each /alloc/20 takes it over 16 MiB, the next over twice.
    let server =
        Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--max-worker-memory", "16"]);
    let addr = server.addr();
    let booted = server.count("worker booted");
    let started = Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let response = get_within(addr, "/alloc/20", Duration::from_secs(5)).unwrap();
        assert_eq!(response.status, 200);
        answered += 1;
    }
    // Each replacement waits the crash pause, doubling from 0.1 s: about four in 1.5 s. Without
    // it, one per request or two.
    let forks = server.count("worker booted") - booted;
    assert!(
        (1..=6).contains(&forks),
        "{forks} workers booted for {answered} requests in 1.5 s:\n{}",
        server.logs().join("\n")
    );
    let pause = server.wait_for("s after it booted (");
    assert!(pause.contains("over max_worker_memory (16 MiB)"), "{pause}");
    assert!(pause.contains("pausing before the next fork"), "{pause}");
}

#[test]
fn max_worker_lifetime_recycles_a_worker_without_failing_a_request() {
    let server =
        Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--max-worker-lifetime", "1"]);
    let addr = server.addr();
    let first = only(&server.wait_workers(1));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = hammer(addr, "/", 2, &stop);
    let line = server.wait_for_nth("recycled: ran ", 2);
    assert!(line.contains("(max_worker_lifetime)"), "{line}");
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = totals(clients);
    assert!(failed.is_empty(), "{} of {} requests failed: {:?}", failed.len(), ok, &failed[..1]);
    assert!(!alive(first));
}

#[test]
fn a_worker_killed_from_outside_is_blamed_on_the_signal_not_on_the_master() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL]);
    let victim = only(&server.wait_workers(1));
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let line = server.wait_for("worker died unexpectedly");
    assert!(line.contains("killed by signal 9 (SIGKILL), not sent by the master"), "{line}");
    assert!(line.contains("possibly the OOM killer"), "{line}");
    replacement_of(&server, victim);
    kill(Pid::from_raw(only(&server.workers())), Signal::SIGILL).unwrap();
    let line = server.wait_for_nth("worker died unexpectedly", 2);
    assert!(line.contains("killed by signal 4 (SIGILL); replacing it"), "{line}");
}

#[test]
fn stopping_and_continuing_the_whole_process_group_kills_no_worker() {
    // Ctrl-Z and fg, or a paused container: the master was stopped too, so the workers'
    // silence is not theirs to answer for.
    let server = Server::start(&example("demo"), &["-w", "2", "-b", LOCAL, "--timeout", "1"]);
    let workers = server.wait_workers(2);
    nix::sys::signal::killpg(server.pid(), Signal::SIGSTOP).unwrap();
    thread::sleep(Duration::from_millis(2500));
    nix::sys::signal::killpg(server.pid(), Signal::SIGCONT).unwrap();
    server.wait_for("the master did not run for ");
    thread::sleep(Duration::from_secs(2));
    assert_eq!(server.count("timed out"), 0, "{:#?}", server.logs());
    assert_eq!(server.workers(), workers);
    assert_eq!(http::get(server.addr(), "/").unwrap().status, 200);
}

#[test]
fn ttin_sent_to_the_process_group_adds_a_worker_and_stops_none() {
    // `kill -TTIN %1` in a shell signals the whole job.
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--timeout", "1"]);
    let first = only(&server.wait_workers(1));
    nix::sys::signal::killpg(server.pid(), Signal::SIGTTIN).unwrap();
    let workers = server.wait_workers(2);
    assert!(workers.contains(&first));
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(server.count("timed out"), 0, "a worker was stopped: {:#?}", server.logs());
    assert_eq!(server.workers(), workers);
}

#[test]
fn workers_killed_together_are_replaced_after_one_short_pause() {
    let server = Server::start(&example("demo"), &["-w", "4", "-b", LOCAL]);
    let workers = server.wait_workers(4);
    let killed = Instant::now();
    for &pid in &workers {
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    }
    wait_until(|| {
        let now = server.workers();
        (now.len() == 4 && now.is_disjoint(&workers)).then_some(())
    })
    .expect("all four replaced");
    assert!(killed.elapsed() < Duration::from_secs(3), "took {:?}", killed.elapsed());
    let pauses: Vec<String> =
        server.logs().into_iter().filter(|l| l.contains("pausing before the next fork")).collect();
    assert!(pauses.iter().all(|l| l.ends_with("delay_ms=100")), "one incident: {pauses:#?}");
}

#[test]
fn ttou_stops_a_booting_worker_rather_than_a_ready_one() {
    let server = Server::start_with(
        &example("demo"),
        &["-w", "2", "-b", LOCAL, "--log-level", "debug"],
        &[("DEMO_BOOT_SLEEP_MS", "1500")],
    );
    let ready = server.wait_workers(2);
    server.signal(Signal::SIGTTIN);
    server.wait_for("worker spawned pid=");
    server.wait_for_nth("worker spawned", 3);
    server.signal(Signal::SIGTTOU);
    let line = server.wait_for("stopped: one fewer worker wanted");
    assert!(line.contains("worker=3"), "the booting worker goes: {line}");
    assert!(ready.iter().all(|&pid| alive(pid)), "both ready workers serve on");
    // The booting one exits once booted.
    wait_until(|| (server.workers() == ready).then_some(())).expect("back to the two");
}

#[test]
fn a_memory_limit_below_a_new_worker_does_not_make_a_fork_loop() {
    let server =
        Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--max-worker-memory", "1"]);
    let addr = server.addr();
    thread::sleep(Duration::from_secs(3));
    let line = server.wait_for("the limit is too low");
    assert!(line.contains("over max_worker_memory (1 MiB)"), "{line}");
    let booted = server.count("worker booted");
    assert!(booted <= 8, "{booted} workers booted in 3 s:\n{}", server.logs().join("\n"));
    assert_eq!(http::get(addr, "/").unwrap().status, 200, "it serves meanwhile");
}

#[test]
fn a_reload_rolled_back_for_boot_timeout_does_not_slow_the_serving_generation() {
    let dir = tempdir();
    let config = |boot_timeout: &str| {
        format!("[server]\nbind = [\"{LOCAL}\"]\nworkers = 4\nboot_timeout = {boot_timeout}\n")
    };
    let path = common::write(dir.path(), "app.toml", &config("30"));
    let server = Server::start_with(&example("demo"), &[&path], &[("DEMO_BOOT_SLEEP_MS", "1500")]);
    let serving = server.wait_workers(4);
    common::write(dir.path(), "app.toml", &config("0.5"));
    server.signal(Signal::SIGHUP);
    let line = server.wait_for("reload failed, rolled back");
    assert!(line.contains("not ready within boot_timeout (0.5 s)"), "{line}");
    // The new generation's workers exit once they have booted; the serving ones stay.
    wait_until(|| (server.workers() == serving).then_some(())).expect("the new workers exit");
    assert_eq!(server.count("pausing before the next fork"), 0, "{:#?}", server.logs());
}

#[test]
fn workers_killed_as_hung_soon_after_booting_pause_forking_more_each_time() {
    // Every request blocks its worker for longer than timeout: each new worker is killed as
    // hung about a second after it booted, as in a kill storm.
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--timeout", "1"]);
    let addr = server.addr();
    let mut stuck = Conn::open(addr).unwrap();
    stuck.send_get("/spin/30000").unwrap();
    server.wait_for("worker timed out");
    let first = server.wait_for("pausing before the next fork");
    assert!(first.contains("worker killed as hung"), "{first}");
    assert!(first.contains("delay_ms=100"), "{first}");

    // Its replacement hangs too: the pause doubles.
    server.wait_for_nth("worker booted", 2);
    let mut stuck = Conn::open(addr).unwrap();
    stuck.send_get("/spin/30000").unwrap();
    server.wait_for_nth("worker timed out", 2);
    let second = server.wait_for_nth("pausing before the next fork", 2);
    assert!(second.contains("worker killed as hung"), "{second}");
    assert!(second.contains("delay_ms=200"), "{second}");
    server.wait_for_nth("worker booted", 3);
    assert_eq!(http::get(addr, "/").unwrap().status, 200, "the next worker serves");
}
