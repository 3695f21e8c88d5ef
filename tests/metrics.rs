//! The Prometheus endpoint (`[metrics] bind`) on the real binary: what it counts, that its
//! counts survive the workers that made them, that it answers through reloads, the listen
//! queue, and a real Prometheus scraping it (`promtool` checking its output).

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use common::http::{self, Conn};
use common::metrics::{metrics_addr, samples, samples_when, scrape};
use common::prometheus;
use common::{Server, alive, example, tempdir, wait_until, write};

const LOCAL: &str = "127.0.0.1:0";

/// The demo app with `-w workers`, the metrics on, and `more` arguments.
fn start(workers: &str, more: &[&str]) -> Server {
    let mut args = vec!["-w", workers, "-b", LOCAL, "--metrics-bind", LOCAL];
    args.extend_from_slice(more);
    Server::start(&example("demo"), &args)
}

fn requests(s: &common::metrics::Samples, method: &str, status: &str) -> f64 {
    s.value(&format!("forkserve_requests_total{{method=\"{method}\",status=\"{status}\"}}"))
}

fn bucket(s: &common::metrics::Samples, le: &str) -> f64 {
    s.value(&format!("forkserve_request_duration_seconds_bucket{{le=\"{le}\"}}"))
}

#[test]
fn requests_are_counted_by_method_status_duration_and_bytes_and_scrapes_are_not() {
    let server = start("2", &["--log-access", "-"]);
    let (app, metrics) = (server.addr(), metrics_addr(&server));
    let before = samples(metrics);
    assert_eq!(before.value("forkserve_request_duration_seconds_count"), 0.0);
    assert_eq!(before.sum("forkserve_workers", &[]), 2.0);
    assert_eq!(before.value("forkserve_workers{state=\"idle\"}"), 2.0);
    assert_eq!(before.value("forkserve_workers{state=\"booting\"}"), 0.0);
    assert_eq!(before.sum("forkserve_worker_state", &["state=\"idle\""]), 2.0);
    assert_eq!(before.value("forkserve_generation"), 1.0);
    let version = format!("forkserve_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    assert_eq!(before.value(&version), 1.0);

    let mut conn = Conn::open(app).unwrap();
    for _ in 0..3 {
        assert_eq!(conn.get("/").unwrap().status, 200);
    }
    assert_eq!(conn.get("/nowhere").unwrap().status, 404);
    let echo = conn.request("POST", "/echo", &[], b"hello, metrics").unwrap();
    assert_eq!(echo.text(), "hello, metrics");
    assert_eq!(conn.get("/sleep/300").unwrap().status, 200);
    drop(conn);

    let after = samples_when(metrics, "6 requests counted", |s| {
        s.value("forkserve_request_duration_seconds_count") == 6.0
    });
    assert_eq!(requests(&after, "GET", "2xx"), 4.0, "three / and the sleep");
    assert_eq!(requests(&after, "GET", "4xx"), 1.0);
    assert_eq!(requests(&after, "POST", "2xx"), 1.0);
    assert_eq!(after.sum("forkserve_requests_total", &[]), 6.0);
    assert_eq!(bucket(&after, "0.25"), 5.0, "all but the 300 ms sleep");
    assert_eq!(bucket(&after, "0.5"), 6.0);
    assert_eq!(bucket(&after, "+Inf"), 6.0);
    let sum = after.value("forkserve_request_duration_seconds_sum");
    assert!((0.3..2.0).contains(&sum), "the sleep's 0.3 s and a little: {sum}");
    assert_eq!(after.value("forkserve_request_body_bytes_total"), 14.0);
    assert!(after.value("forkserve_response_body_bytes_total") >= 14.0 + 3.0 * 20.0);
    assert_eq!(after.value("forkserve_responses_cut_total"), 0.0);
    assert_eq!(after.sum("forkserve_worker_requests_total", &[]), 6.0);
    assert_eq!(after.value("forkserve_requests_in_flight"), 0.0);

    // Scrapes are not requests: not counted, not logged; other paths and methods are refused
    // and a bad request harms no worker.
    let workers = server.workers();
    for _ in 0..3 {
        assert_eq!(scrape(metrics).unwrap().status, 200);
    }
    assert_eq!(http::get(metrics, "/").unwrap().status, 404);
    assert_eq!(http::get(metrics, "/metrics/x").unwrap().status, 404);
    let post =
        http::raw(metrics, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!((post.unwrap().status), 405);
    let bad = http::raw(metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n");
    assert_eq!(bad.unwrap().status, 400);
    let garbage = http::raw(metrics, b"\x00\x01 nonsense\r\n\r\n");
    assert!(garbage.is_err() || garbage.unwrap().status == 400);
    let again = samples(metrics);
    assert_eq!(again.value("forkserve_request_duration_seconds_count"), 6.0);
    assert_eq!(again.sum("forkserve_worker_requests_total", &[]), 6.0);
    assert_eq!(server.workers(), workers, "no worker died");
    // The workers write what their access log buffered as they stop.
    let mut server = server;
    server.signal(Signal::SIGTERM);
    let output = server.output();
    let logged: Vec<_> = output.lines().filter(|l| l.contains("HTTP/1.1\" ")).collect();
    assert_eq!(logged.len(), 6, "one access log line per request: {logged:#?}");
    assert!(logged.iter().all(|l| !l.contains("/metrics")), "{logged:#?}");
}

#[test]
fn metrics_path_moves_the_endpoint_and_must_be_a_path() {
    let server = start("1", &["--metrics-path", "/internal/prom"]);
    let metrics = metrics_addr(&server);
    let response = http::get(metrics, "/internal/prom").unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    assert!(response.text().contains("# TYPE forkserve_requests_total counter\n"));
    let elsewhere = http::get(metrics, "/metrics").unwrap();
    assert_eq!(elsewhere.status, 404);
    assert_eq!(elsewhere.text(), "not found: the metrics are at /internal/prom\n");

    let mut refused = Server::spawn(&example("demo"), &["--metrics-path", "metrics"]);
    let output = refused.output();
    assert_eq!(refused.exit_code(), 2, "{output}");
    assert!(output.contains("metrics path must start with /"), "{output}");
}

#[test]
fn a_scrape_whose_head_never_ends_is_closed_after_the_header_timeout() {
    let server = start("1", &[]);
    let metrics = metrics_addr(&server);
    let mut slow = TcpStream::connect(metrics).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    std::io::Write::write_all(&mut slow, b"GET /metrics HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = std::io::Read::read_to_end(&mut slow, &mut rest);
    let waited = started.elapsed();
    assert!(read.is_ok() && rest.is_empty(), "closed, unanswered: {read:?} {rest:?}");
    assert!(waited >= Duration::from_secs(4) && waited < Duration::from_secs(9), "{waited:?}");
    // The worker answers on.
    assert_eq!(scrape(metrics).unwrap().status, 200);
}

#[test]
fn a_parked_connection_is_counted_until_it_wakes_or_closes() {
    let server = start("1", &["--keepalive", "30"]);
    let (app, metrics) = (server.addr(), metrics_addr(&server));
    let mut conn = Conn::open(app).unwrap();
    assert_eq!(conn.get("/").unwrap().status, 200);
    // Idle for 50 ms, the connection is parked.
    let parked =
        samples_when(metrics, "parked", |s| s.value("forkserve_connections_parked") == 1.0);
    assert_eq!(parked.value("forkserve_connections_open"), 1.0);
    // A request wakes it; idle again, it parks again.
    assert_eq!(conn.get("/").unwrap().status, 200);
    samples_when(metrics, "parked again", |s| s.value("forkserve_connections_parked") == 1.0);
    drop(conn);
    let closed = samples_when(metrics, "closed", |s| s.value("forkserve_connections_open") == 0.0);
    assert_eq!(closed.value("forkserve_connections_parked"), 0.0, "unparked as it closed");
}

#[test]
fn counters_survive_worker_restarts_and_exits_and_reloads_are_counted() {
    let dir = tempdir();
    let config = |workers: &str| {
        format!(
            "[server]\nworkers = {workers}\nbind = [\"{LOCAL}\"]\n[metrics]\nbind = \"{LOCAL}\"\n"
        )
    };
    let path = write(dir.path(), "app.toml", &config("2"));
    let server = Server::start(&example("demo"), &[&path]);
    let (app, metrics) = (server.addr(), metrics_addr(&server));
    let count = |s: &common::metrics::Samples| s.value("forkserve_request_duration_seconds_count");
    let exits = |s: &common::metrics::Samples, cause: &str| {
        s.value(&format!("forkserve_worker_exits_total{{cause=\"{cause}\"}}"))
    };
    let reloads = |s: &common::metrics::Samples, result: &str| {
        s.value(&format!("forkserve_reloads_total{{result=\"{result}\"}}"))
    };
    for _ in 0..10 {
        assert_eq!(http::get(app, "/").unwrap().status, 200);
    }
    let first = samples_when(metrics, "10 requests", |s| count(s) == 10.0);
    assert_eq!(exits(&first, "crashed"), 0.0);

    // A worker killed: its counts stay in the totals, and it is counted as crashed.
    let workers = server.wait_workers(2);
    let victim = *workers.iter().next().unwrap();
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    server.wait_for("killed by signal 9");
    server.wait_workers(2);
    let killed = samples_when(metrics, "the crash counted", |s| exits(s, "crashed") == 1.0);
    assert_eq!(count(&killed), 10.0, "the killed worker's requests are kept");
    assert_eq!(killed.sum("forkserve_requests_total", &[]), 10.0);
    assert!(!killed.0.contains(&format!("pid=\"{victim}\"")), "the dead worker is gone");

    // TTOU: one worker fewer, stopped.
    server.signal(Signal::SIGTTOU);
    let stopped = samples_when(metrics, "a stopped worker", |s| exits(s, "stopped") == 1.0);
    assert_eq!(count(&stopped), 10.0);

    // HUP: a reload that completes, another rejected for a broken config.
    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete");
    let reloaded = samples_when(metrics, "the reload counted", |s| reloads(s, "completed") == 1.0);
    assert_eq!(reloaded.value("forkserve_generation"), 2.0);
    assert_eq!(reloaded.value("forkserve_reload_in_progress"), 0.0);
    assert_eq!(count(&reloaded), 10.0);
    write(dir.path(), "app.toml", "[server]\nworkers = \"lots\"\n");
    server.signal(Signal::SIGHUP);
    server.wait_for("reload rejected");
    let rejected =
        samples_when(metrics, "the rejection counted", |s| reloads(s, "rejected") == 1.0);
    assert_eq!(reloads(&rejected, "completed"), 1.0);
    assert_eq!(reloads(&rejected, "rolled_back"), 0.0);
    assert_eq!(rejected.value("forkserve_generation"), 2.0);
    assert_eq!(count(&rejected), 10.0, "nothing lost across a reload either");
}

#[test]
fn a_metrics_address_in_use_stops_the_start_like_a_server_address() {
    let taken = std::net::TcpListener::bind(LOCAL).unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut server = Server::spawn(&example("demo"), &["-b", LOCAL, "--metrics-bind", &addr]);
    let output = server.output();
    assert_eq!(server.wait_exit(common::WAIT).unwrap().code(), Some(1), "{output}");
    let error = format!("error: cannot listen on {addr} ([metrics] bind): Address already in use");
    assert!(output.contains(&error), "{output}");
    assert!(!output.contains("listening address="), "the app's socket was closed again: {output}");
}

#[test]
fn a_metrics_address_that_is_also_a_server_address_is_refused_as_such() {
    let dir = tempdir();
    let tcp = std::net::TcpListener::bind(LOCAL).unwrap().local_addr().unwrap().to_string();
    let unix = format!("unix:{}", dir.path().join("both.sock").display());
    for addr in [tcp.as_str(), unix.as_str()] {
        let mut server = Server::spawn(&example("demo"), &["-b", addr, "--metrics-bind", addr]);
        let output = server.output();
        assert_eq!(server.exit_code(), 2, "{output}");
        let error = format!("metrics.bind {addr} is also in server.bind");
        assert!(output.contains(&error), "{output}");
        assert!(!output.contains("retrying"), "refused at once: {output}");
    }
}

#[test]
fn a_reload_moves_the_metrics_and_refuses_an_address_in_use() {
    let dir = tempdir();
    let config = |metrics: &str| {
        format!("[server]\nworkers = 1\nbind = [\"{LOCAL}\"]\n[metrics]\nbind = \"{metrics}\"\n")
    };
    let path = write(dir.path(), "app.toml", &config(LOCAL));
    let server = Server::start(&example("demo"), &[&path]);
    let tcp = metrics_addr(&server);

    // An address that cannot be bound: the reload is rejected, and the metrics stay.
    let taken = std::net::TcpListener::bind(LOCAL).unwrap();
    let busy = taken.local_addr().unwrap();
    write(dir.path(), "app.toml", &config(&busy.to_string()));
    server.signal(Signal::SIGHUP);
    let line = server.wait_for("reload rejected");
    assert!(line.contains(&format!("cannot listen on {busy} ([metrics] bind)")), "{line}");
    // (Counted just after it is logged.)
    samples_when(tcp, "the rejection counted", |s| {
        s.value("forkserve_reloads_total{result=\"rejected\"}") == 1.0
    });

    // Another address: bound by the reload; the old one closed once the old worker is gone.
    let sock = dir.path().join("metrics.sock");
    write(dir.path(), "app.toml", &config(&format!("unix:{}", sock.display())));
    let old = server.wait_workers(1);
    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete");
    wait_until(|| old.iter().all(|&pid| !alive(pid)).then_some(())).expect("the old worker exits");
    let mut conn = Conn::over(std::os::unix::net::UnixStream::connect(&sock).unwrap());
    let response = conn.get("/metrics").unwrap();
    assert_eq!(response.status, 200);
    assert!(response.text().contains("forkserve_reloads_total{result=\"completed\"} 1\n"));
    assert!(TcpStream::connect(tcp).is_err(), "the old metrics address is closed");
    assert!(response.text().contains("forkserve_generation 2\n"), "{}", response.text());
}

#[test]
fn a_worker_recycled_by_max_requests_is_counted_as_recycled() {
    let server = start("1", &["--max-requests", "5"]);
    let (app, metrics) = (server.addr(), metrics_addr(&server));
    let first = server.wait_workers(1);
    for _ in 0..6 {
        assert_eq!(http::get(app, "/").unwrap().status, 200);
    }
    let s = samples_when(metrics, "a recycled worker", |s| {
        s.value("forkserve_worker_exits_total{cause=\"recycled\"}") == 1.0
    });
    assert!(first.iter().all(|&pid| !alive(pid)));
    assert_eq!(s.value("forkserve_request_duration_seconds_count"), 6.0);
    assert_eq!(s.value("forkserve_worker_exits_total{cause=\"crashed\"}"), 0.0);
}

#[test]
fn metrics_answer_every_scrape_while_hups_reload_the_workers() {
    let server = start("2", &[]);
    let metrics = metrics_addr(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // Three clients, each scraping on fresh connections as fast as it can.
    let scrapers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
            thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match scrape(metrics) {
                        Ok(r) if r.status == 200 && r.text().contains("forkserve_generation ") => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            failures.push(format!("{other:?}"));
                        }
                    }
                }
                failures
            })
        })
        .collect();
    for n in 1..=3 {
        let before = ok.load(Ordering::Relaxed);
        server.signal(Signal::SIGHUP);
        server.wait_for_nth("reload complete", n);
        // Until the old workers have exited, then some scrapes after.
        wait_until(|| (server.count("worker exited: exit code 0") >= 2 * n).then_some(()))
            .expect("the old workers exit");
        wait_until(|| (ok.load(Ordering::Relaxed) > before + 20).then_some(()))
            .expect("scrapes go on");
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = scrapers.into_iter().flat_map(|s| s.join().unwrap()).collect();
    assert!(failures.is_empty(), "{} scrapes failed: {failures:#?}", failures.len());
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    let s = samples(metrics);
    assert_eq!(s.value("forkserve_reloads_total{result=\"completed\"}"), 3.0);
    assert_eq!(s.value("forkserve_generation"), 4.0);
    assert_eq!(s.value("forkserve_worker_exits_total{cause=\"stopped\"}"), 6.0);
    eprintln!("{} scrapes answered through 3 reloads", ok.load(Ordering::Relaxed));
}

#[test]
fn a_scrape_under_way_when_its_worker_is_told_to_stop_is_answered_before_it_exits() {
    let server = start("2", &[]);
    let metrics = metrics_addr(&server);
    // Scrapes half sent: accepted by the only workers there are, which a reload then stops.
    let mut halves: Vec<Conn> = (0..4).map(|_| Conn::open(metrics).unwrap()).collect();
    for conn in &mut halves {
        conn.send(b"GET /metrics HTTP/1.1\r\n").unwrap();
    }
    let old = server.wait_workers(2);
    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete");
    for conn in &mut halves {
        conn.send(b"Host: x\r\n\r\n").unwrap();
        let response = conn.read_response(false).unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
    }
    wait_until(|| old.iter().all(|&pid| !alive(pid)).then_some(())).expect("the old workers exit");
}

/// How many sockets the process `pid` has open.
fn sockets(pid: i32) -> usize {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

#[test]
fn a_scrape_that_never_ends_does_not_keep_a_stopping_worker_past_graceful_timeout() {
    let server = start("1", &["--graceful-timeout", "0.5"]);
    let metrics = metrics_addr(&server);
    let old = *server.wait_workers(1).first().unwrap();
    let before = sockets(old);
    // A client that connects and sends nothing: the worker holds it for the 5 s header timeout.
    let _silent = TcpStream::connect(metrics).unwrap();
    wait_until(|| (sockets(old) > before).then_some(())).expect("the worker accepts it");
    server.signal(Signal::SIGHUP);
    // The master kills a worker still there 0.5 s + 1 s after telling it to stop: it must
    // have exited by itself, its exit hooks run, without waiting 2 s for the scrape.
    let exited = server.wait_for("worker exited");
    assert!(exited.contains(&format!("pid={old}")), "{exited}");
    assert!(!exited.contains("SIGKILL"), "{exited}");
    assert_eq!(server.count("did not exit in time"), 0, "{:#?}", server.logs());
}

#[test]
fn while_a_manual_upgrade_has_both_masters_serving_only_the_new_ones_workers_answer() {
    let server = start("2", &["--upgrade", "manual"]);
    let (app, metrics) = (server.addr(), metrics_addr(&server));
    for _ in 0..5 {
        assert_eq!(http::get(app, "/").unwrap().status, 200);
    }
    let count = "forkserve_request_duration_seconds_count";
    let old = samples_when(metrics, "5 requests", |s| s.value(count) == 5.0);
    let start = "forkserve_start_time_seconds";
    let old_start = old.value(start);
    server.signal(Signal::SIGUSR2);
    let line = server.wait_for("the new master serves beside this one");
    let new_master = line.split("new_master=").nth(1).unwrap().split_whitespace().next().unwrap();
    // Within a poll, the old master's workers leave the scrapes to the new master's: were
    // both to answer, the counters would swing between 5 and 0, a counter reset each time.
    server.wait_for_nth("leaving the metrics to its workers", 2);
    for _ in 0..20 {
        let s = samples(metrics);
        assert_ne!(s.value(start), old_start, "a scrape answered by the old master:\n{}", s.0);
    }
    // The upgrade given up, the old master's workers answer again, with its counts.
    let new_master: i32 = new_master.parse().unwrap();
    let new_workers = common::children(new_master);
    assert_eq!(new_workers.len(), 2, "{new_workers:?}");
    kill(Pid::from_raw(new_master), Signal::SIGQUIT).unwrap();
    server.wait_for_nth("answering the metrics again", 2);
    let gone = || new_workers.iter().chain([&new_master]).all(|&pid| !alive(pid));
    wait_until(|| gone().then_some(())).expect("the new master and its workers exit");
    let back = samples(metrics);
    assert_eq!((back.value(start), back.value(count)), (old_start, 5.0));
}

#[test]
fn the_listen_queue_depth_counts_connections_no_worker_accepts() {
    // One worker that holds one connection at most: the next ones wait in the queues, of a
    // TCP socket and a unix one.
    let dir = tempdir();
    let sock = dir.path().join("app.sock");
    let unix = format!("unix:{}", sock.display());
    let args = ["-b", &unix, "--worker-connections", "1", "--keepalive", "60", "--backlog", "64"];
    let server = start("1", &args);
    let (app, metrics) = (server.addr(), metrics_addr(&server));
    let queue = |what: &str, listener: &str| {
        format!("forkserve_listen_queue_{what}{{listener=\"{listener}\"}}")
    };
    let (tcp_depth, unix_depth) = (queue("depth", &app.to_string()), queue("depth", &unix));
    let idle = samples(metrics);
    assert_eq!(idle.value(&tcp_depth), 0.0);
    assert_eq!(idle.value(&unix_depth), 0.0);
    assert_eq!(idle.value(&queue("limit", &app.to_string())), 64.0, "the backlog");
    assert_eq!(idle.value(&queue("limit", &unix)), 64.0);

    // Each socket's accept loop checks the cap before it waits to accept: one connection on
    // each, served, leaves both loops at the cap.
    let mut held = Conn::open(app).unwrap();
    assert_eq!(held.get("/").unwrap().status, 200);
    let mut held_unix = Conn::over(std::os::unix::net::UnixStream::connect(&sock).unwrap());
    assert_eq!(held_unix.get("/").unwrap().status, 200);
    let waiting: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(app).unwrap()).collect();
    let waiting_unix: Vec<_> =
        (0..2).map(|_| std::os::unix::net::UnixStream::connect(&sock).unwrap()).collect();
    let full = samples_when(metrics, "5 connections queued", |s| {
        s.value(&tcp_depth) == 3.0 && s.value(&unix_depth) == 2.0
    });
    assert_eq!(full.value("forkserve_connections_open"), 2.0);

    drop(held);
    drop(held_unix);
    // Freed, the worker takes them one at a time as each closes: drop them all.
    drop(waiting);
    drop(waiting_unix);
    samples_when(metrics, "the queues empty", |s| {
        s.value(&tcp_depth) == 0.0 && s.value(&unix_depth) == 0.0
    });
}

/// Sends GETs to `app` from one client until `stop` is set.
fn load(app: SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Ok(mut conn) = Conn::open(app) {
                for _ in 0..50 {
                    if conn.get("/").is_ok() {
                        sent += 1;
                    }
                }
            }
        }
        sent
    })
}

#[test]
fn a_real_prometheus_scrapes_the_endpoint_and_promtool_finds_no_problem() {
    let Some(tools) = prometheus::Tools::find() else { return };
    let server = start("2", &[]);
    let (app, metrics) = (server.addr(), metrics_addr(&server));

    // promtool lints what the endpoint writes, per worker series included.
    assert_eq!(http::get(app, "/").unwrap().status, 200);
    let text = samples(metrics).0;
    let (ok, problems) = tools.check_metrics(&text);
    assert!(ok && problems.trim().is_empty(), "promtool check metrics:\n{problems}\n{text}");

    let prometheus = tools.start(metrics);
    let stop = Arc::new(AtomicBool::new(false));
    let client = load(app, Arc::clone(&stop));
    let query = "sum(rate(forkserve_requests_total[5s]))";
    let rate = prometheus.poll(query, Duration::from_secs(30), |v| v > 0.0);
    stop.store(true, Ordering::Relaxed);
    let sent = client.join().unwrap();
    let rate = rate.unwrap_or_else(|last| {
        panic!("{query} never above 0 in 30 s (last answer {last}); {sent} requests sent")
    });
    eprintln!("prometheus: {query} = {rate:.1} requests/s ({sent} sent)");
    assert!(rate > 0.0);
    let up = prometheus.poll("up{job=\"forkserve\"}", Duration::from_secs(5), |v| v == 1.0);
    assert!(up.is_ok(), "the target is up: {up:?}");
}
