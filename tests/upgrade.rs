//! Binary upgrade (`USR2`), systemd socket activation and `sd_notify`, on the real binaries.

mod common;

use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::http::{self, Conn};
use common::{Server, WAIT, alive, example, tempdir, wait_until};
use nix::sys::signal::Signal;

const LOCAL: &str = "127.0.0.1:0";

/// The shipped example config, which answers `/` with 200.
fn app_toml() -> String {
    format!("{}/config/app.toml", env!("CARGO_MANIFEST_DIR"))
}

fn read_pid(path: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Clients that keep sending, on keep-alive connections (reconnecting when told to close) and
/// on fresh ones, until `stop`; returns (answered, failures).
fn clients(
    addr: std::net::SocketAddr,
    stop: &Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<(u64, Vec<String>)>> {
    (0..4)
        .map(|i| {
            let stop = Arc::clone(stop);
            thread::spawn(move || {
                let (mut ok, mut failed) = (0, Vec::new());
                let mut conn = Conn::open(addr).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let result = if i % 2 == 0 { conn.get("/") } else { http::get(addr, "/") };
                    match result {
                        Ok(r) if r.status == 200 => {
                            ok += 1;
                            if r.header("connection") == Some("close") {
                                conn = Conn::open(addr).unwrap();
                            }
                        }
                        Ok(r) => failed.push(format!("status {}", r.status)),
                        Err(e) => {
                            failed.push(e.to_string());
                            conn = Conn::open(addr).unwrap();
                        }
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

#[test]
fn usr2_replaces_the_master_while_clients_see_no_error() {
    let dir = tempdir();
    let pidfile = dir.path().join("fs.pid");
    let sock = dir.path().join("fs.sock");
    let unix = format!("unix:{}", sock.display());
    let server = Server::start(
        &example("demo"),
        &["-w", "2", "-b", LOCAL, "-b", &unix, "--pidfile", pidfile.to_str().unwrap()],
    );
    let addr = server.addr();
    let old_master = server.pid().as_raw();
    let old_workers = server.wait_workers(2);
    assert_eq!(read_pid(&pidfile), Some(old_master));

    let stop = Arc::new(AtomicBool::new(false));
    let running = clients(addr, &stop);
    thread::sleep(Duration::from_millis(200));
    server.signal(Signal::SIGUSR2);
    let started = server.wait_for("upgrade: started a new master");
    let new_master: i32 =
        started.split("pid=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    server.wait_for("upgrade complete: the new master serves");
    wait_until(|| (!alive(old_master)).then_some(())).expect("the old master exits");
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);

    let (mut ok, mut failed) = (0, Vec::new());
    for c in running {
        let (o, f) = c.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(failed.is_empty(), "{} of {ok} requests failed: {:?}", failed.len(), &failed[..1]);
    assert!(ok > 50, "{ok}");
    assert_eq!(read_pid(&pidfile), Some(new_master), "the new master took the pidfile");
    assert!(!dir.path().join("fs.pid.oldbin").exists());
    assert!(old_workers.iter().all(|&w| !alive(w)));
    // The same sockets, now served by the new master's workers; the unix path was kept.
    let new_workers = common::children(new_master);
    assert_eq!(new_workers.len(), 2, "{new_workers:?}");
    let pid: i32 = http::get(addr, "/pid").unwrap().text().trim().parse().unwrap();
    assert!(new_workers.contains(&pid));
    let mut over_unix = Conn::over(std::os::unix::net::UnixStream::connect(&sock).unwrap());
    assert_eq!(over_unix.get("/").unwrap().status, 200);
}

#[test]
fn a_failed_upgrade_leaves_the_old_master_serving() {
    let dir = tempdir();
    let pidfile = dir.path().join("fs.pid");
    let fail = dir.path().join("fail");
    let sock = dir.path().join("fs.sock");
    let unix = format!("unix:{}", sock.display());
    let server = Server::start_with(
        &example("demo"),
        &["-w", "2", "-b", LOCAL, "-b", &unix, "--pidfile", pidfile.to_str().unwrap()],
        &[("DEMO_FAIL_BOOT_FILE", fail.to_str().unwrap())],
    );
    let addr = server.addr();
    let workers = server.wait_workers(2);
    // The new binary cannot boot: its app fails, so the new master exits with code 3.
    std::fs::write(&fail, "").unwrap();
    server.signal(Signal::SIGUSR2);
    let line = server.wait_for("upgrade failed, this master serves on");
    assert!(line.contains("the new master"), "{line}");
    wait_until(|| (read_pid(&pidfile) == Some(server.pid().as_raw())).then_some(()))
        .expect("the pidfile is restored");
    assert!(!dir.path().join("fs.pid.oldbin").exists());
    // The old workers serve on; the new master is gone.
    wait_until(|| (server.workers() == workers).then_some(())).expect("only the old workers");
    assert_eq!(http::get(addr, "/").unwrap().status, 200);
    // The failed new master did not take the unix socket's path with it.
    let mut over_unix = Conn::over(std::os::unix::net::UnixStream::connect(&sock).unwrap());
    assert_eq!(over_unix.get("/").unwrap().status, 200);
    // It can still upgrade once the new binary works.
    std::fs::remove_file(&fail).unwrap();
    server.signal(Signal::SIGUSR2);
    server.wait_for("upgrade complete");
}

#[test]
fn socket_activation_serves_the_passed_socket_instead_of_binding() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let bind = addr.to_string();
    // The config binds the same address: the passed socket is used, nothing is bound.
    let app = app_toml();
    let args = ["-w", "1", "-b", &bind, &app];
    let server = Server::spawn_activated(&common::forkserve(), &args, &listener);
    drop(listener);
    let line = server.wait_for("listening address=");
    assert!(line.contains(&format!("address={addr} inherited=true")), "{line}");
    server.wait_for("all workers ready");
    assert_eq!(http::get(addr, "/").unwrap().status, 200);
}

#[test]
fn a_passed_socket_no_bind_names_is_served_too() {
    let dir = tempdir();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let unix = format!("unix:{}", dir.path().join("s.sock").display());
    let app = app_toml();
    let args = ["-w", "1", "-b", &unix, &app];
    let server = Server::spawn_activated(&common::forkserve(), &args, &listener);
    drop(listener);
    server.wait_for("passed by the service manager, not in bind");
    server.wait_for("all workers ready");
    assert_eq!(http::get(addr, "/").unwrap().status, 200);
    // A reload keeps it, though the config does not name it.
    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete");
    assert_eq!(http::get(addr, "/").unwrap().status, 200);
    // So does a binary upgrade.
    server.signal(Signal::SIGUSR2);
    server.wait_for("upgrade complete");
    wait_until(|| (!alive(server.pid().as_raw())).then_some(())).expect("the old master exits");
    assert_eq!(http::get(addr, "/").unwrap().status, 200);
}

#[test]
fn sd_notify_reports_ready_reloading_and_stopping() {
    let dir = tempdir();
    let path = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(WAIT)).unwrap();
    let mut server = Server::spawn_with(
        &common::forkserve(),
        &["-w", "2", "-b", LOCAL],
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    );
    let next = || {
        let mut buf = [0u8; 512];
        let n = manager.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(ready.contains(&format!("MAINPID={}", server.pid())), "{ready}");
    assert!(ready.contains("STATUS=serving, 2 workers"), "{ready}");
    server.wait_for("all workers ready");
    assert_eq!(server.count("worker booted"), 2, "READY=1 once both workers are");

    server.signal(Signal::SIGHUP);
    let reloading = next();
    assert!(reloading.contains("RELOADING=1\nMONOTONIC_USEC="), "{reloading}");
    let usec: u64 =
        reloading.split("MONOTONIC_USEC=").nth(1).unwrap().lines().next().unwrap().parse().unwrap();
    assert!(usec > 0);
    assert!(next().contains("READY=1"), "READY=1 after the reload");

    server.signal(Signal::SIGTERM);
    assert!(next().contains("STOPPING=1"));
    assert_eq!(server.exit_code(), 0);
}

#[test]
fn a_manual_upgrade_keeps_both_masters_until_winch_and_quit() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--upgrade", "manual"]);
    let addr = server.addr();
    let old_master = server.pid().as_raw();
    let old_worker = *server.wait_workers(1).iter().next().unwrap();
    // WINCH before an upgrade is a terminal resize, not a command.
    server.signal(Signal::SIGWINCH);
    server.signal(Signal::SIGUSR2);
    let line = server.wait_for("upgrade: the new master serves beside this one");
    let new_master: i32 =
        line.split("new_master=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(alive(old_worker), "the old worker still serves");
    assert!(alive(new_master));

    server.signal(Signal::SIGWINCH);
    let exit = server.wait_for("stopped: WINCH after a manual upgrade");
    assert!(exit.contains(&format!("pid={old_worker}")), "{exit}");
    assert!(server.workers().iter().all(|&w| w == new_master), "no old worker is restarted");
    let pid: i32 = http::get(addr, "/pid").unwrap().text().trim().parse().unwrap();
    assert_eq!(common::children(new_master), [pid].into_iter().collect());

    server.signal(Signal::SIGQUIT);
    wait_until(|| (!alive(old_master)).then_some(())).expect("the old master exits");
    assert!(alive(new_master));
    assert_eq!(http::get(addr, "/").unwrap().status, 200);
}

#[test]
fn ready_waits_for_the_workers_even_when_a_reload_comes_first() {
    let dir = tempdir();
    let path = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(WAIT)).unwrap();
    let spawned = Instant::now();
    let server = Server::spawn_with(
        &example("demo"),
        &["-w", "2", "-b", LOCAL],
        &[("NOTIFY_SOCKET", path.to_str().unwrap()), ("DEMO_BOOT_SLEEP_MS", "1500")],
    );
    server.wait_for("master started");
    server.signal(Signal::SIGHUP);
    let mut buf = [0u8; 512];
    let n = manager.recv(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.starts_with("READY=1"), "nothing before the first READY=1: {first}");
    // No worker can be ready before its factory's 1.5 s. (Not the log's boot lines: the
    // threads reading the server's output may still be behind the datagram.)
    let took = spawned.elapsed();
    assert!(took >= Duration::from_millis(1500), "READY=1 after {took:?}, before the workers");
}

#[test]
fn a_manual_upgrade_does_not_busy_loop_the_old_master_when_the_new_one_reloads() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--upgrade", "manual"]);
    let old = server.pid().as_raw();
    server.signal(Signal::SIGUSR2);
    let line = server.wait_for("upgrade: the new master serves beside this one");
    let new: i32 =
        line.split("new_master=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(new), Signal::SIGHUP).unwrap();
    server.wait_for_nth("reload complete", 1);
    thread::sleep(Duration::from_millis(300));
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{old}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = ticks();
    thread::sleep(Duration::from_secs(1));
    let used = ticks() - before;
    assert!(used < 20, "the old master used {used} ticks of CPU in a second");
}

#[test]
fn a_failed_upgrade_does_not_tell_the_service_manager_it_is_stopping() {
    let dir = tempdir();
    let path = dir.path().join("notify.sock");
    let fail = dir.path().join("fail");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_read_timeout(Some(WAIT)).unwrap();
    let server = Server::start_with(
        &example("demo"),
        &["-w", "1", "-b", LOCAL],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("DEMO_FAIL_BOOT_FILE", fail.to_str().unwrap()),
        ],
    );
    let mut buf = [0u8; 512];
    let n = manager.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("READY=1"));
    std::fs::write(&fail, "").unwrap();
    server.signal(Signal::SIGUSR2);
    server.wait_for("upgrade failed, this master serves on");
    // The old master speaks for the service again; the failed one said nothing.
    let n = manager.recv(&mut buf).unwrap();
    let next = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(next.contains(&format!("MAINPID={}", server.pid())), "{next}");
    manager.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    while let Ok(n) = manager.recv(&mut buf) {
        let more = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(!more.contains("STOPPING=1"), "{more}");
    }
}

#[test]
fn an_old_master_killed_during_an_upgrade_leaves_no_oldbin_and_is_logged_as_gone() {
    let dir = tempdir();
    let pidfile = dir.path().join("fs.pid");
    let oldbin = dir.path().join("fs.pid.oldbin");
    // Workers take a second to boot: the old master is killed before the new one is ready.
    let server = Server::start_with(
        &example("demo"),
        &["-w", "1", "-b", LOCAL, "--pidfile", pidfile.to_str().unwrap()],
        &[("DEMO_BOOT_SLEEP_MS", "1000")],
    );
    let addr = server.addr();
    let old_master = server.pid().as_raw();
    server.signal(Signal::SIGUSR2);
    let started = server.wait_for("upgrade: started a new master");
    let new_master: i32 =
        started.split("pid=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    server.signal(Signal::SIGKILL);

    let line = server.wait_for("upgrade: this master serves");
    assert!(line.contains("the old master is gone"), "{line}");
    assert!(line.contains(&format!("old_master={old_master}")), "{line}");
    wait_until(|| (!oldbin.exists()).then_some(())).expect("the stale PIDFILE.oldbin is removed");
    assert_eq!(read_pid(&pidfile), Some(new_master), "the new master holds the pidfile");
    let pid: i32 = http::get(addr, "/pid").unwrap().text().trim().parse().unwrap();
    assert!(common::children(new_master).contains(&pid), "the new master's worker serves");
}
