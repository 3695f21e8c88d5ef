//! A real Prometheus (Debian's `prometheus` package) for the metrics tests: started on
//! 127.0.0.1 in its own process group (killed with it when the handle drops), scraping one
//! target every second, and asked PromQL over its HTTP API; and `promtool check metrics`.
//!
//! Without the binaries a test fails when `CI` is set (`.ci/run` installs the package), and
//! otherwise says why and passes, so that a developer without them can still run the rest.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::http;

/// Where `prometheus` and `promtool` are.
pub struct Tools {
    prometheus: PathBuf,
    promtool: PathBuf,
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

impl Tools {
    /// Both binaries, or `None` (after saying why) outside CI; panics in CI.
    pub fn find() -> Option<Tools> {
        match (on_path("prometheus"), on_path("promtool")) {
            (Some(prometheus), Some(promtool)) => Some(Tools { prometheus, promtool }),
            _ if std::env::var_os("CI").is_some() => {
                panic!("prometheus and promtool are needed (apt-get install prometheus)")
            }
            _ => {
                eprintln!(
                    "SKIPPED: prometheus or promtool is not on PATH (apt-get install \
                     --no-install-recommends prometheus); set CI=1 to make this a failure"
                );
                None
            }
        }
    }

    /// Runs `promtool check metrics` on `text`: whether it passed, and what it said.
    pub fn check_metrics(&self, text: &str) -> (bool, String) {
        let mut child = Command::new(&self.promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        (out.status.success(), said.into_owned())
    }

    /// Starts Prometheus scraping `target` every second, and waits until its API answers.
    pub fn start(&self, target: SocketAddr) -> Prometheus {
        let dir = super::tempdir();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: forkserve\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let config = super::write(dir.path(), "prometheus.yml", &config);
        // A free port: bound and let go. (Prometheus does not say which port it got for 0.)
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let mut cmd = Command::new(&self.prometheus);
        cmd.arg(format!("--config.file={config}"))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().expect("start prometheus");
        let prometheus = Prometheus { child, listen, dir };
        let ready = super::wait_until(|| {
            http::get(listen, "/-/ready").ok().filter(|r| r.status == 200).map(|_| ())
        });
        assert!(ready.is_some(), "prometheus never ready:\n{}", prometheus.log());
        prometheus
    }
}

/// A running Prometheus; its process group is killed when this drops.
pub struct Prometheus {
    child: Child,
    listen: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The value of an instant query that gives one sample; `None` for no sample (yet).
    pub fn query(&self, promql: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        let response = http::get(self.listen, &path).ok()?;
        let json: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
        assert_eq!(json["status"], "success", "{promql}: {json}");
        let value = &json["data"]["result"][0]["value"][1];
        value.as_str()?.parse().ok()
    }

    /// Queries every 500 ms until the value satisfies `done`, for up to `wait`: the value, or
    /// the last answer as text.
    pub fn poll(
        &self,
        promql: &str,
        wait: Duration,
        done: impl Fn(f64) -> bool,
    ) -> Result<f64, String> {
        let deadline = Instant::now() + wait;
        let mut last = None;
        loop {
            last = self.query(promql).or(last);
            if let Some(v) = last.filter(|v| done(*v)) {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(format!("{last:?}; prometheus log:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter (everything but unreserved characters).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
