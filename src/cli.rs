//! The command line: its flags, and how they override the config file.
//!
//! Flags win over the file, and keep winning across reloads: a HUP re-reads the file and applies
//! the same [`Overrides`] again, as Gunicorn does.

use std::path::{Path, PathBuf};

use clap::Parser;

use crate::config::{self, AllowList, Bind, Config, LogLevel, Seconds, UpgradeMode, Workers};
use crate::error::Error;

/// forkserve: a pre-fork HTTP server. A single-threaded master binds the sockets and supervises
/// worker processes, each running a hyper server on its own single-threaded tokio runtime.
#[derive(Debug, Clone, Parser)]
#[command(name = "forkserve", version, max_term_width = 100)]
#[command(after_help = "\
Signals to the master:
  HUP        reload: re-read the config, start new workers, gracefully stop the old ones
  TERM       graceful stop: finish in-flight requests (up to graceful_timeout), exit 0
  INT, QUIT  fast stop: workers exit at once
  TTIN/TTOU  one more (up to 1024) / one fewer worker; signals are not queued, so a quick burst
             counts as fewer: send one, wait for its log line, then the next
  USR2       binary upgrade: start a new master from the binary, hand over once it serves
  WINCH      after a manual upgrade: stop this (old) master's workers

Each flag is a config key in kebab case; flags override the config file. Exit codes: 0 ok, 1 runtime error, 2 usage or config error,
3 workers failed to boot.")]
pub struct Cli {
    /// The TOML config file. Without one, the defaults apply.
    #[arg(value_name = "CONFIG")]
    pub config: Option<PathBuf>,

    /// Settings that override the config file's.
    #[command(flatten)]
    pub overrides: Overrides,

    /// Validate the config and exit: prints nothing but errors; exit 0 if valid, 2 if not.
    #[arg(long, conflicts_with = "print_config")]
    pub check_config: bool,

    /// Print the effective config (file and flags merged) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

fn parse_workers(s: &str) -> Result<Workers, String> {
    s.parse()
}

fn parse_bind(s: &str) -> Result<Bind, String> {
    s.parse()
}

fn parse_seconds(s: &str) -> Result<Seconds, String> {
    s.parse()
}

fn parse_timeout(s: &str) -> Result<Seconds, String> {
    config::check_timeout(s.parse()?)
}

fn parse_graceful_timeout(s: &str) -> Result<Seconds, String> {
    config::check_graceful_timeout(s.parse()?)
}

fn parse_allow(s: &str) -> Result<AllowList, String> {
    s.parse()
}

fn parse_fields(s: &str) -> Result<u64, String> {
    config::check_fields(parse_count(s)?)
}

fn parse_upgrade(s: &str) -> Result<UpgradeMode, String> {
    s.parse()
}

fn parse_log_level(s: &str) -> Result<LogLevel, String> {
    s.parse()
}

fn parse_count(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("invalid count {s:?}: expected 0 or a positive integer"))
}

fn parse_worker_connections(s: &str) -> Result<u32, String> {
    config::check_worker_connections(parse_count(s)?)
}

fn parse_backlog(s: &str) -> Result<u32, String> {
    let n: u64 = s.parse().map_err(|_| format!("invalid backlog {s:?}"))?;
    config::check_backlog(n)
}

impl Cli {
    /// Parses the process's arguments. `--help` and `--version` print and exit 0; bad usage
    /// becomes [`Error::Usage`].
    pub fn from_env() -> Result<Cli, Error> {
        Cli::try_parse().map_err(usage_error)
    }

    /// Parses the given arguments (the first is the program name).
    pub fn from_args<I, T>(args: I) -> Result<Cli, Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::try_parse_from(args).map_err(usage_error)
    }

    /// Splits the command line into where the config comes from and what overrides it.
    pub fn source(&self) -> ConfigSource {
        ConfigSource { path: self.config.clone(), overrides: self.overrides.clone() }
    }
}

fn usage_error(e: clap::Error) -> Error {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        // Printing help or the version is what was asked for, not an error.
        let _ = e.print();
        std::process::exit(0);
    }
    let rendered = e.render().to_string();
    let message = rendered.trim_end().strip_prefix("error: ").unwrap_or(rendered.trim_end());
    Error::Usage(message.to_string())
}

/// Settings given on the command line, applied over whatever the file says. Each flag is the
/// config key in kebab case (`max_requests` is `--max-requests`).
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct Overrides {
    /// Number of worker processes (1 to 1024), or "auto" for the number of usable CPUs.
    #[arg(short, long, value_name = "N|auto", value_parser = parse_workers)]
    pub workers: Option<Workers>,

    /// Addresses to listen on; when given, they replace the file's whole list.
    #[arg(
        short,
        long,
        value_name = "ADDR",
        value_parser = parse_bind,
        help = "Address to listen on: HOST:PORT, [IPV6]:PORT or unix:/path. Repeat for several; \
                replaces the file's list"
    )]
    pub bind: Vec<Bind>,

    /// Length of the listen queue of each socket.
    #[arg(long, value_name = "N", value_parser = parse_backlog)]
    pub backlog: Option<u32>,

    /// Seconds without a heartbeat after which a worker is hung: logged, killed and replaced
    /// (0: never; else at least 1).
    #[arg(short, long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<Seconds>,

    /// Seconds a new worker may take to become ready before it is killed as a boot failure
    /// (0: no limit).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub boot_timeout: Option<Seconds>,

    /// Seconds a stopping worker may take to finish its requests before it is killed (more
    /// than 0; for a stop that does not wait, send INT or QUIT).
    #[arg(long, value_name = "SECS", value_parser = parse_graceful_timeout)]
    pub graceful_timeout: Option<Seconds>,

    /// Seconds after which a request is cancelled and answered 504 (0: no limit).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub request_timeout: Option<Seconds>,

    /// Replace a worker after it has served this many requests (0: never).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub max_requests: Option<u64>,

    /// Add up to this many, at random, to each worker's max-requests.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub max_requests_jitter: Option<u64>,

    /// Replace a worker whose resident memory exceeds this many MiB, successor first (0: never);
    /// at twice this, it stops accepting while its successor boots.
    #[arg(long, value_name = "MIB", value_parser = parse_count)]
    pub max_worker_memory: Option<u64>,

    /// Replace a worker after it has run this many seconds (0: never).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub max_worker_lifetime: Option<Seconds>,

    /// The most connections each worker keeps open at once.
    #[arg(long, value_name = "N", value_parser = parse_worker_connections)]
    pub worker_connections: Option<u32>,

    /// After a binary upgrade (USR2): "auto" stops the old master once the new one serves;
    /// "manual" leaves both serving until you stop the old one (WINCH, then QUIT).
    #[arg(long, value_name = "auto|manual", value_parser = parse_upgrade)]
    pub upgrade: Option<UpgradeMode>,

    /// Longest request line in bytes (414 beyond; 0: no limit).
    #[arg(long, value_name = "BYTES", value_parser = parse_count)]
    pub limit_request_line: Option<u64>,

    /// Most header fields in a request (431 beyond; whatever the limits, a head is at most
    /// 384 KiB).
    #[arg(long, value_name = "N", value_parser = parse_fields)]
    pub limit_request_fields: Option<u64>,

    /// Longest header field line in bytes (431 beyond; 0: no limit).
    #[arg(long, value_name = "BYTES", value_parser = parse_count)]
    pub limit_request_field_size: Option<u64>,

    /// Largest request body in bytes (413 beyond; 0: no limit).
    #[arg(long, value_name = "BYTES", value_parser = parse_count)]
    pub max_body_size: Option<u64>,

    /// Seconds to receive a request head (408 after; 0: no limit).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub header_timeout: Option<Seconds>,

    /// Seconds without progress reading a body (408 after; 0: no limit, nor body-min-rate).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub body_timeout: Option<Seconds>,

    /// Bytes per second a body must keep to (over L seconds of waiting, this × (L −
    /// body-timeout) bytes at least): a waiting credit starts
    /// at body-timeout, each byte adds 1/this seconds (up to body-timeout), waiting for the
    /// client takes it off (408 when none is left; 0: off).
    #[arg(long, value_name = "BYTES", value_parser = parse_count)]
    pub body_min_rate: Option<u64>,

    /// Seconds a response may make no write progress (a client not reading) before the
    /// connection is closed (0: no limit; a worker at worker-connections with a new client
    /// waiting closes the longest-stalled one after 1 s).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub send_timeout: Option<Seconds>,

    /// Seconds an idle keep-alive connection is kept (0: no limit).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub keepalive: Option<Seconds>,

    /// Peers whose X-Forwarded-* and Forwarded headers are trusted: IPs, networks, "*".
    #[arg(long, value_name = "IPS", value_parser = parse_allow)]
    pub forwarded_allow_ips: Option<AllowList>,

    /// Connections start with a PROXY protocol header (v1 or v2) from proxy-allow-ips.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub proxy_protocol: Option<bool>,

    /// Peers allowed to send a PROXY protocol header: IPs, networks, "*".
    #[arg(long, value_name = "IPS", value_parser = parse_allow)]
    pub proxy_allow_ips: Option<AllowList>,

    /// Write the master's pid to this file.
    #[arg(short, long = "pidfile", visible_alias = "pid", value_name = "FILE")]
    pub pidfile: Option<PathBuf>,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", value_parser = parse_log_level)]
    pub log_level: Option<LogLevel>,
}

impl Overrides {
    /// Applies the overrides to a config read from a file.
    pub fn apply(&self, config: &mut Config) -> Result<(), Error> {
        let server = &mut config.server;
        set(&mut server.workers, self.workers);
        if !self.bind.is_empty() {
            config::check_binds(&self.bind).map_err(|e| Error::Usage(format!("--bind: {e}")))?;
            server.bind = self.bind.clone();
        }
        set(&mut server.backlog, self.backlog);
        set(&mut server.timeout, self.timeout);
        set(&mut server.boot_timeout, self.boot_timeout);
        set(&mut server.graceful_timeout, self.graceful_timeout);
        set(&mut server.request_timeout, self.request_timeout);
        set(&mut server.max_requests, self.max_requests);
        set(&mut server.max_requests_jitter, self.max_requests_jitter);
        set(&mut server.max_worker_memory, self.max_worker_memory);
        set(&mut server.max_worker_lifetime, self.max_worker_lifetime);
        set(&mut server.worker_connections, self.worker_connections);
        set(&mut server.upgrade, self.upgrade);
        let http = &mut config.http;
        set(&mut http.limit_request_line, self.limit_request_line);
        set(&mut http.limit_request_fields, self.limit_request_fields);
        set(&mut http.limit_request_field_size, self.limit_request_field_size);
        set(&mut http.max_body_size, self.max_body_size);
        set(&mut http.header_timeout, self.header_timeout);
        set(&mut http.body_timeout, self.body_timeout);
        set(&mut http.body_min_rate, self.body_min_rate);
        set(&mut http.send_timeout, self.send_timeout);
        set(&mut http.keepalive, self.keepalive);
        set(&mut http.proxy_protocol, self.proxy_protocol);
        if let Some(l) = &self.forwarded_allow_ips {
            http.forwarded_allow_ips = l.clone();
        }
        if let Some(l) = &self.proxy_allow_ips {
            http.proxy_allow_ips = l.clone();
        }
        if let Some(p) = &self.pidfile {
            server.pidfile = Some(p.clone());
        }
        set(&mut config.log.level, self.log_level);
        Ok(())
    }
}

fn set<T: Copy>(setting: &mut T, flag: Option<T>) {
    if let Some(value) = flag {
        *setting = value;
    }
}

/// Where the effective config comes from: a file (or the defaults) plus command-line overrides.
/// The master keeps it to re-read the same way on HUP.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The config file, if any.
    pub path: Option<PathBuf>,
    /// The command line's settings.
    pub overrides: Overrides,
}

impl ConfigSource {
    /// Reads the file (if any), validates it, and applies the overrides.
    pub fn load(&self) -> Result<Config, Error> {
        let mut config = match &self.path {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        self.overrides.apply(&mut config)?;
        Ok(config)
    }

    /// The config file, for log messages.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let cli = Cli::from_args([
            "forkserve",
            "-w",
            "3",
            "-b",
            "127.0.0.1:1",
            "-b",
            "unix:/tmp/x.sock",
            "--graceful-timeout",
            "2.5",
            "--log-level",
            "debug",
        ])
        .unwrap();
        let config = cli.source().load().unwrap();
        assert_eq!(config.server.workers.resolve(), 3);
        assert_eq!(config.server.bind.len(), 2);
        assert_eq!(config.server.graceful_timeout.0.as_millis(), 2500);
        assert_eq!(config.log.level, LogLevel::Debug);
    }

    #[test]
    fn every_server_setting_has_a_kebab_case_flag() {
        let cli = Cli::from_args([
            "forkserve",
            "--timeout",
            "5",
            "--boot-timeout",
            "7",
            "--request-timeout",
            "1.5",
            "--max-requests",
            "100",
            "--max-requests-jitter",
            "10",
            "--max-worker-memory",
            "256",
            "--max-worker-lifetime",
            "600",
            "--worker-connections",
            "50",
            "--backlog",
            "99",
            "--pidfile",
            "/tmp/x.pid",
        ])
        .unwrap();
        let config = cli.source().load().unwrap();
        let s = &config.server;
        assert_eq!(s.timeout.0.as_secs(), 5);
        assert_eq!(s.boot_timeout.0.as_secs(), 7);
        assert_eq!(s.request_timeout.0.as_millis(), 1500);
        assert_eq!((s.max_requests, s.max_requests_jitter, s.max_worker_memory), (100, 10, 256));
        assert_eq!(s.max_worker_lifetime.0.as_secs(), 600);
        assert_eq!((s.worker_connections, s.backlog), (50, 99));
        assert_eq!(s.pidfile.as_deref(), Some(Path::new("/tmp/x.pid")));
        // Gunicorn's spelling of the pidfile flag works too.
        let cli = Cli::from_args(["forkserve", "--pid", "/tmp/y.pid"]).unwrap();
        assert_eq!(cli.overrides.pidfile.as_deref(), Some(Path::new("/tmp/y.pid")));
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for args in [
            &["forkserve", "-w", "0"][..],
            &["forkserve", "-w", "many"],
            &["forkserve", "-b", "nope"],
            &["forkserve", "--backlog", "0"],
            &["forkserve", "--log-level", "loud"],
            &["forkserve", "--check-config", "--print-config"],
            &["forkserve", "-b", "127.0.0.1:1", "-b", "127.0.0.1:1"],
            &["forkserve", "--worker-connections", "0"],
            &["forkserve", "--max-requests", "-1"],
            &["forkserve", "--request-timeout", "soon"],
        ] {
            let result = Cli::from_args(args.iter().copied()).and_then(|c| c.source().load());
            match result {
                Err(e @ Error::Usage(_)) => assert_eq!(e.exit_code(), 2),
                other => panic!("{args:?}: expected a usage error, got {other:?}"),
            }
        }
    }
}
