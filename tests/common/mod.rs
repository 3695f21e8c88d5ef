//! Test harness: runs the real binaries, each server in its own process group, and kills the
//! whole group when the handle drops, on every exit path (including a failed assertion).
//! Servers bind port 0 on 127.0.0.1; the harness learns the port from the `listening` log line.
//! Readiness is read from the server's own log lines, never guessed with sleeps.

#![allow(dead_code)]

pub mod framework_scenarios;
pub mod frameworks;
pub mod h2;
pub mod http;
pub mod metrics;
pub mod pki;
pub mod prometheus;
pub mod wsgi;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// How long a test waits for something the server should do promptly.
pub const WAIT: Duration = Duration::from_secs(15);

/// The `forkserve` binary: this build's, or the command `FORKSERVE_BIN` names (`.ci/run` runs
/// the Python tests again through the one `pip install .` put in a virtualenv).
pub fn forkserve() -> PathBuf {
    match std::env::var_os("FORKSERVE_BIN").filter(|bin| !bin.is_empty()) {
        Some(bin) => PathBuf::from(bin),
        None => PathBuf::from(env!("CARGO_BIN_EXE_forkserve")),
    }
}

/// The virtualenv the Python tests run their apps with: `FORKSERVE_TEST_VENV` (set by
/// `.ci/run` to the virtualenv `FORKSERVE_BIN` is installed in), else `target/test-venv`.
pub fn test_venv() -> PathBuf {
    match std::env::var_os("FORKSERVE_TEST_VENV").filter(|venv| !venv.is_empty()) {
        Some(venv) => PathBuf::from(venv),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv"),
    }
}

/// An example binary, built for the tests' profile. `cargo test --test X` does not rebuild
/// examples, so the harness does (once per test binary; a no-op when they are fresh), which
/// keeps a test from ever running a stale example.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "--examples"]).current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build --examples");
        assert!(status.success(), "cargo build --examples failed");
        profile_dir.join("examples")
    });
    dir.join(name)
}

/// Lines a server wrote to stderr, shared with the thread that reads them.
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
    /// Output streams not yet read to their end.
    open: std::sync::atomic::AtomicUsize,
}

impl Log {
    /// The lines, even if a test panicked while holding the lock.
    fn lines(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running server (or a finished one); its process group dies with this handle.
pub struct Server {
    child: Child,
    log: Arc<Log>,
    status: Option<ExitStatus>,
}

impl Server {
    /// Starts `bin` with `args` in a new process group. Does not wait for readiness.
    pub fn spawn(bin: &Path, args: &[&str]) -> Server {
        Server::spawn_with(bin, args, &[])
    }

    /// Like [`Server::spawn`], with extra environment variables.
    pub fn spawn_with(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(bin);
        cmd.args(args).envs(env.iter().copied());
        Server::launch(cmd)
    }

    /// Like [`Server::spawn`], with the process allowed to run on CPU `cpu` only.
    pub fn spawn_on_cpu(bin: &Path, args: &[&str], cpu: usize) -> Server {
        use nix::sched::{CpuSet, sched_setaffinity};
        let mut cmd = Command::new(bin);
        cmd.args(args);
        // SAFETY: sched_setaffinity is a plain system call, async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let mut set = CpuSet::new();
                set.set(cpu).map_err(std::io::Error::from)?;
                sched_setaffinity(Pid::from_raw(0), &set).map_err(std::io::Error::from)
            });
        }
        Server::launch(cmd)
    }

    /// Like [`Server::spawn`], with the open-files limit (soft and hard) set to `nofile`.
    pub fn spawn_with_nofile(bin: &Path, args: &[&str], nofile: u64) -> Server {
        use nix::sys::resource::{Resource, setrlimit};
        let mut cmd = Command::new(bin);
        cmd.args(args);
        // SAFETY: setrlimit is a plain system call, async-signal-safe, and touches no memory.
        unsafe {
            cmd.pre_exec(move || {
                setrlimit(Resource::RLIMIT_NOFILE, nofile, nofile).map_err(std::io::Error::from)
            });
        }
        Server::launch(cmd)
    }

    /// Like [`Server::spawn`], as an unprivileged user: when the tests run as root, the server
    /// runs as `nobody` (uid and gid 65534), for whom permission bits apply. Files it must read
    /// need to be readable by others (see [`open_to_others`]).
    pub fn spawn_unprivileged(bin: &Path, args: &[&str]) -> Server {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        if nix::unistd::geteuid().is_root() {
            as_nobody(&mut cmd);
        }
        Server::launch(cmd)
    }

    /// Starts `bin` as systemd socket activation would: `listener` at descriptor 3, with
    /// `LISTEN_FDS=1` and `LISTEN_PID` set to the server's pid (by `sh`, which execs it).
    pub fn spawn_activated(bin: &Path, args: &[&str], listener: &impl AsRawFd) -> Server {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"").arg(bin).args(args);
        let fd = listener.as_raw_fd();
        // SAFETY: dup2 is async-signal-safe; it places the listener at 3, without
        // close-on-exec, and touches no memory.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself would keep close-on-exec: clear it instead.
                let placed = if fd == 3 {
                    nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
                } else {
                    nix::libc::dup2(fd, 3)
                };
                if placed == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Server::launch(cmd)
    }

    fn launch(mut cmd: Command) -> Server {
        let bin = PathBuf::from(cmd.get_program());
        cmd.env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // If the test process dies without running destructors (an abort), the master dies
        // with it; its workers then drain and exit on their own parent-death signal.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let log = Arc::new(Log::default());
        for stream in [
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = Arc::clone(&log);
            log.open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    log.lines().push(line);
                    log.grew.notify_all();
                }
                // Under the lock, so that a waiter checking `open` cannot miss the wake-up.
                let _lines = log.lines();
                log.open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                log.grew.notify_all();
            });
        }
        Server { child, log, status: None }
    }

    /// Like [`Server::start`], with extra environment variables.
    pub fn start_with(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let server = Server::spawn_with(bin, args, env);
        server.wait_for("all workers ready");
        server
    }

    /// Starts `bin` and waits until all its workers are ready.
    pub fn start(bin: &Path, args: &[&str]) -> Server {
        let server = Server::spawn(bin, args);
        server.wait_for("all workers ready");
        server
    }

    /// The master's pid.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends a signal to the master.
    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal the master");
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.log.lines().clone()
    }

    /// How many log lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.logs().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits until some log line contains `needle` and returns it.
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_for_nth(needle, 1)
    }

    /// Waits until `n` log lines contain `needle` and returns the n-th.
    pub fn wait_for_nth(&self, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + WAIT;
        let mut lines = self.log.lines();
        loop {
            if let Some(line) = lines.iter().filter(|l| l.contains(needle)).nth(n - 1) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // Every process holding the output has exited: no line will come.
            let ended = self.log.open.load(std::sync::atomic::Ordering::SeqCst) == 0;
            if left.is_zero() || ended {
                let all = lines.join("\n");
                drop(lines);
                let why = if ended { "the server exited" } else { "timed out" };
                panic!("{why} waiting for {n}× {needle:?}; server log:\n{all}");
            }
            lines = self.log.grew.wait_timeout(lines, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// The first TCP address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        let line = self.wait_for("listening address=");
        let addr = line.split("address=").nth(1).unwrap().split_whitespace().next().unwrap();
        addr.parse().unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"))
    }

    /// The pids of the master's live children (its workers), from /proc.
    pub fn workers(&self) -> BTreeSet<i32> {
        children(self.pid().as_raw())
    }

    /// Waits until the master has exactly `n` children that are all `ready` (booted).
    pub fn wait_workers(&self, n: usize) -> BTreeSet<i32> {
        wait_until(|| {
            let pids = self.workers();
            (pids.len() == n).then_some(pids)
        })
        .unwrap_or_else(|| {
            panic!("never had {n} workers: {:?}\n{}", self.workers(), self.logs().join("\n"))
        })
    }

    /// Waits for the master to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the master to exit and returns its exit code (panics if killed by a signal).
    pub fn exit_code(&mut self) -> i32 {
        let status = self
            .wait_exit(WAIT)
            .unwrap_or_else(|| panic!("server did not exit; log:\n{}", self.logs().join("\n")));
        status.code().unwrap_or_else(|| panic!("killed by signal {:?}", status.signal()))
    }

    /// All of stderr and stdout after the server exited.
    pub fn output(&mut self) -> String {
        self.exit_code();
        // The reader threads finish at EOF, which comes once every process holding the pipes
        // has exited; wait until they have read everything.
        wait_until(|| (!self.group_alive()).then_some(()));
        let read = || self.log.open.load(std::sync::atomic::Ordering::SeqCst) == 0;
        wait_until(|| read().then_some(()));
        self.logs().join("\n")
    }

    fn group_alive(&self) -> bool {
        killpg(self.pid(), None).is_ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The whole group: the master and every worker, whatever state they are in.
        let _ = killpg(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}\n---", self.logs().join("\n"));
        }
    }
}

/// Polls `f` every 10 ms until it returns `Some`, for up to [`WAIT`].
pub fn wait_until<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The lines of `file` (a log, or request-end events a test app appends) once it has `n`;
/// fails after [`WAIT`].
pub fn wait_lines(file: &std::path::Path, n: usize) -> Vec<String> {
    let lines = || -> Vec<String> {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        text.lines().map(str::to_string).collect()
    };
    match wait_until(|| Some(lines()).filter(|l| l.len() >= n)) {
        Some(found) => found,
        None => panic!("{n} lines wanted in {}: {:?}", file.display(), lines()),
    }
}

/// Live children of `pid` (zombies excluded), found by scanning /proc.
pub fn children(pid: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // Fields after the command name, which is in parentheses and may contain spaces.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 1 && fields[1] == pid.to_string() && fields[0] != "Z" {
            out.insert(child);
        }
    }
    out
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, r)| !r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A scratch directory for config files, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("forkserve-test-").tempdir().expect("tempdir")
}

/// Makes a directory (a [`tempdir`], made `0700`) searchable and readable by every user, for a
/// server started with [`Server::spawn_unprivileged`].
pub fn open_to_others(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod 755");
}

/// Writes `text` to `dir/name` and returns the path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.to_str().unwrap().to_string()
}

/// Has `cmd` run as uid and gid 65534 (nobody), with no supplementary groups: for tests that
/// need a process without root's rights (the tests run as root).
pub fn as_nobody(cmd: &mut Command) {
    // SAFETY: setgroups, setgid and setuid are plain system calls, async-signal-safe, and
    // touch no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            use nix::libc;
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
