//! The configuration: the TOML schema, its defaults, its validation, and errors that point at
//! `file:line:col`.
//!
//! Loading is two steps. [`serde`] turns the text into typed values; the small value types here
//! ([`Bind`], [`Workers`], [`Seconds`], [`LogLevel`], the `respond` table) validate themselves
//! while they are deserialized, so the `toml` crate attaches the span of the offending value to
//! their errors. What needs context that serde does not have (a `static` directory relative to
//! the config file, one action per route) is checked afterwards against [`Spanned`] values.
//!
//! Relative paths in a file are relative to that file's directory; relative paths on the
//! command line are relative to the current directory (see [`crate::cli`]).

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

pub use crate::client::AllowList;
use crate::error::{ConfigError, Error};

/// The whole effective configuration of a server: what the master needs to bind and supervise,
/// and the routes of the TOML-declared app.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Config {
    /// Process model: listening sockets, worker count, timeouts.
    pub server: ServerConfig,
    /// What a request must be to reach the app: limits and timeouts.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// The routes the `forkserve` binary serves. Library apps may ignore them.
    #[serde(rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// The `[server]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Addresses to listen on, bound by the master before any worker is forked.
    #[serde(deserialize_with = "deserialize_binds")]
    pub bind: Vec<Bind>,
    /// How many workers to run: 1 to [`MAX_WORKERS`].
    pub workers: Workers,
    /// The listen(2) queue length of every listening socket.
    #[serde(deserialize_with = "deserialize_backlog")]
    pub backlog: u32,
    /// How long a draining worker may take to finish its requests before it is killed. More
    /// than 0: unlike the other timeouts, 0 cannot mean "no limit" (a stuck worker would
    /// never stop), and "cut at once" is what `INT` and `QUIT` are for.
    #[serde(deserialize_with = "deserialize_graceful_timeout")]
    pub graceful_timeout: Seconds,
    /// A serving worker whose event loop has not sent a heartbeat for this long is hung: it is
    /// logged with what it was doing, killed (`SIGABRT`, then `SIGKILL`) and replaced. 0 turns
    /// the check off; otherwise at least [`MIN_TIMEOUT`].
    #[serde(deserialize_with = "deserialize_timeout")]
    pub timeout: Seconds,
    /// A new worker that has not become ready within this long is killed, as a boot failure.
    /// 0 turns the check off.
    pub boot_timeout: Seconds,
    /// A request whose response is not complete after this long is cancelled: answered `504`,
    /// or its connection closed if the response had started. 0 (the default) is no limit.
    pub request_timeout: Seconds,
    /// A worker that has served this many requests is replaced (its successor first). 0 (the
    /// default) is no limit.
    #[serde(deserialize_with = "deserialize_count")]
    pub max_requests: u64,
    /// Up to this many more requests, chosen at random for each worker, so that workers started
    /// together are not all replaced together.
    #[serde(deserialize_with = "deserialize_count")]
    pub max_requests_jitter: u64,
    /// A worker whose resident memory exceeds this many MiB is replaced, successor first like
    /// every recycling: it serves on until its successor is ready. Each worker reads its own as
    /// requests start (at most every 4 ms) and at each heartbeat, and tells the master at once.
    /// Twice this is a hard ceiling: a worker over it stops accepting at once, answers with
    /// `Connection: close` and finishes what it has while its successor boots, so that its
    /// memory stays bounded even if the successor is slow or cannot boot. 0 (the default) is
    /// no limit.
    #[serde(deserialize_with = "deserialize_count")]
    pub max_worker_memory: u64,
    /// A worker that has run this long is replaced (its successor first). 0 (the default) is no
    /// limit.
    pub max_worker_lifetime: Seconds,
    /// The most connections one worker keeps open; at this many it stops accepting until one
    /// closes, and the other workers take the new ones. If a new connection still waits, the
    /// worker closes the connection whose client has read nothing for longest (1 s at least). Each is a file descriptor: the master
    /// warns when the open-files limit leaves less room than this.
    #[serde(deserialize_with = "deserialize_worker_connections")]
    pub worker_connections: u32,
    /// What a binary upgrade (`USR2`) does once the new master serves: stop the old one
    /// (`auto`), or leave both serving until the operator stops the old one (`manual`).
    pub upgrade: UpgradeMode,
    /// Where the master writes its pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pidfile: Option<PathBuf>,
}

/// The shortest `timeout` other than 0 (off). Workers beat every `timeout`/4; below a second, an
/// ordinary stall of a worker's loop (a page-fault burst, a loaded machine not scheduling it
/// for a few hundred milliseconds) reads as a hang, and the kills outpace the master's own
/// `SIGABRT`-to-`SIGKILL` second: `-t 0.001` killed thousands of healthy workers in seconds.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Checks a `timeout` value: 0 (off) or at least [`MIN_TIMEOUT`].
pub(crate) fn check_timeout(timeout: Seconds) -> Result<Seconds, String> {
    if !timeout.0.is_zero() && timeout.0 < MIN_TIMEOUT {
        return Err(format!(
            "timeout must be 0 (off) or at least {} s, not {}: workers beat every timeout/4, and \
             a shorter one kills workers for ordinary pauses",
            MIN_TIMEOUT.as_secs(),
            timeout.0.as_secs_f64()
        ));
    }
    Ok(timeout)
}

fn deserialize_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Seconds, D::Error> {
    check_timeout(Seconds::deserialize(d)?).map_err(de::Error::custom)
}

/// Checks a `graceful_timeout` value: more than 0.
pub(crate) fn check_graceful_timeout(grace: Seconds) -> Result<Seconds, String> {
    if grace.0.is_zero() {
        return Err("graceful_timeout must be more than 0: it is how long a stopping worker may \
                    take to finish its requests (for a stop that does not wait, send INT or QUIT)"
            .into());
    }
    Ok(grace)
}

fn deserialize_graceful_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Seconds, D::Error> {
    check_graceful_timeout(Seconds::deserialize(d)?).map_err(de::Error::custom)
}

impl ServerConfig {
    /// Checks what the file's and the flags' parsers check value by value, for a config built
    /// in code, which has been through neither.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Workers::Count(n) = self.workers {
            check_workers(n.get())?;
        }
        check_timeout(self.timeout)?;
        check_graceful_timeout(self.graceful_timeout)?;
        Ok(())
    }

    /// A limit that 0 turns off.
    pub(crate) fn limit(seconds: Seconds) -> Option<Duration> {
        (!seconds.0.is_zero()).then_some(seconds.0)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: vec![Bind::Tcp { host: "127.0.0.1".into(), port: 8000 }],
            workers: Workers::Auto,
            backlog: 2048,
            graceful_timeout: Seconds(Duration::from_secs(30)),
            timeout: Seconds(Duration::from_secs(30)),
            boot_timeout: Seconds(Duration::from_secs(30)),
            request_timeout: Seconds(Duration::ZERO),
            max_requests: 0,
            max_requests_jitter: 0,
            max_worker_memory: 0,
            max_worker_lifetime: Seconds(Duration::ZERO),
            worker_connections: 1000,
            upgrade: UpgradeMode::Auto,
            pidfile: None,
        }
    }
}

/// The `[http]` table: limits and timeouts every request passes before the app sees it (see
/// the gate in the crate docs). Gunicorn's names where it has them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Longest request line in bytes (method, target, version); longer is answered 414 and
    /// closed. 0: no limit.
    #[serde(deserialize_with = "deserialize_count")]
    pub limit_request_line: u64,
    /// Most header fields in a request, 1 to [`MAX_REQUEST_FIELDS`]; more is answered 431 and
    /// closed. Whatever the limits, a head is at most 384 KiB (431 and closed).
    #[serde(deserialize_with = "deserialize_fields")]
    pub limit_request_fields: u64,
    /// Longest header field line in bytes; longer is answered 431 and closed. 0: no limit.
    #[serde(deserialize_with = "deserialize_count")]
    pub limit_request_field_size: u64,
    /// Largest request body in bytes: 413 before the body is read when Content-Length says
    /// more, else when a chunked body crosses it; then closed. 0: no limit.
    #[serde(deserialize_with = "deserialize_count")]
    pub max_body_size: u64,
    /// Seconds to receive a complete request head: then 408 if anything was received, and
    /// closed. 0: no limit.
    pub header_timeout: Seconds,
    /// Seconds without progress while reading a body: then 408 and closed. 0: no limit (and
    /// no `body_min_rate` either).
    pub body_timeout: Seconds,
    /// Bytes per second a body must keep to once the app asks for it: over any stretch of L
    /// seconds spent waiting for it, at least `body_min_rate` × (L − `body_timeout`) bytes
    /// must come. Without it a client sending a byte just within every
    /// `body_timeout` holds its connection for ever. Each body has a waiting credit: it starts
    /// at `body_timeout`; each byte received adds `1 / body_min_rate` seconds, but never beyond
    /// `body_timeout` (an early burst banks no more); the time the server waits on an empty
    /// socket while the app wants the body is taken off (the time the app takes to read is
    /// not); when none is left, 408 and closed. 0: off.
    #[serde(deserialize_with = "deserialize_count")]
    pub body_min_rate: u64,
    /// Seconds a response may go without any write progress (the client is not reading), then
    /// the connection is closed. 0: no limit. A worker at `worker_connections` with a new
    /// connection waiting closes the connection stalled longest sooner, after 1 s.
    pub send_timeout: Seconds,
    /// Seconds an idle keep-alive connection is kept between requests. 0: no limit.
    pub keepalive: Seconds,
    /// Peers whose `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded`
    /// are believed (IPs, CIDR networks, or `*`, which trusts anyone: only behind a proxy
    /// that overwrites them). Connections on a unix socket are trusted.
    pub forwarded_allow_ips: AllowList,
    /// Connections start with a PROXY protocol header (v1 or v2) from `proxy_allow_ips`.
    pub proxy_protocol: bool,
    /// Peers allowed to send a PROXY protocol header.
    pub proxy_allow_ips: AllowList,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            limit_request_line: 4094,
            limit_request_fields: 100,
            limit_request_field_size: 8190,
            max_body_size: 100 * 1024 * 1024,
            header_timeout: Seconds(Duration::from_secs(10)),
            body_timeout: Seconds(Duration::from_secs(30)),
            // Kestrel's MinRequestBodyDataRate: a slow mobile link sends far more.
            body_min_rate: 240,
            // nginx's send_timeout: progress on a socket comes in steps of a part of its send
            // buffer, which a slow link may take many seconds to drain, and a client may pause
            // (a phone switching networks); a stalled connection costs the worker little now
            // (see `WRITE_AHEAD`), so a generous wait is affordable.
            send_timeout: Seconds(Duration::from_secs(60)),
            keepalive: Seconds(Duration::from_secs(5)),
            forwarded_allow_ips: "127.0.0.1,::1".parse().expect("a valid default"),
            proxy_protocol: false,
            proxy_allow_ips: "127.0.0.1,::1".parse().expect("a valid default"),
        }
    }
}

impl<'de> Deserialize<'de> for AllowList {
    /// A list of strings, or one comma-separated string.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AllowList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of IP addresses or networks, or \"*\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<AllowList, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<AllowList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                items.join(",").parse().map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for AllowList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The most `limit_request_fields` may be. The `http` crate's header map holds at most 24,576
/// fields and panics beyond, and hyper, told to parse more than 100, allocates a table of that
/// many entries for every request; 8192 fields is far more than any client sends.
pub const MAX_REQUEST_FIELDS: u64 = 8192;

/// Checks a `limit_request_fields` value.
pub(crate) fn check_fields(n: u64) -> Result<u64, String> {
    in_range("limit_request_fields", n, 1, MAX_REQUEST_FIELDS)
}

fn deserialize_fields<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    deserialize_checked(d, check_fields)
}

/// `n` if it is within `min..=max`, else an error naming the setting.
fn in_range(setting: &str, n: u64, min: u64, max: u64) -> Result<u64, String> {
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{setting} must be between {min} and {max}, not {n}"))
    }
}

/// Deserializes an integer and checks it (a negative one is out of every range). The check
/// runs inside the deserializer, so the `toml` crate attaches the value's span to its error.
fn deserialize_checked<'de, D, T>(d: D, check: fn(u64) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let n = i64::deserialize(d)?;
    check(u64::try_from(n).unwrap_or(0)).map_err(de::Error::custom)
}

/// The `[log]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The most verbose level that is written.
    pub level: LogLevel,
}

/// One `[[route]]`: a path prefix and what to do with requests under it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// The path prefix. A prefix ending in `/` matches any path that starts with it; one that
    /// does not matches itself and the paths below it (`/api` matches `/api` and `/api/x`, not
    /// `/apix`).
    pub path: String,
    /// What the route does.
    #[serde(flatten)]
    pub action: Action,
}

/// What a route does with a request. Exactly one per route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Action {
    /// Answer with a fixed response.
    #[serde(rename = "respond")]
    Respond(Respond),
    /// Serve files from this directory (absolute, canonical).
    #[serde(rename = "static")]
    Static(PathBuf),
}

/// A fixed response, declared as a string (the body of a `200 text/plain`) or as a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Respond {
    /// The status code (200 to 599).
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
    /// The `Content-Type` header.
    pub content_type: HeaderValue,
    /// Further headers, in order of their names.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The `workers` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workers {
    /// As many as the CPUs this process may use (`std::thread::available_parallelism`, which
    /// honours cgroup CPU quotas and the affinity mask).
    #[default]
    Auto,
    /// Exactly this many.
    Count(NonZeroUsize),
}

/// The most workers a generation may have. A reload starts a whole new generation beside the
/// serving one and stops the old one only once the new one is ready, so two generations must
/// fit in the scoreboard's slots at once: it has room for twice this many. Beyond it, a reload
/// waited forever for a slot, and a first start never became ready.
pub const MAX_WORKERS: usize = 1024;

/// Checks a worker count: 1 to [`MAX_WORKERS`].
pub(crate) fn check_workers(n: usize) -> Result<NonZeroUsize, String> {
    match NonZeroUsize::new(n) {
        None => Err("workers must be at least 1".into()),
        Some(n) if n.get() > MAX_WORKERS => Err(format!(
            "workers must be at most {MAX_WORKERS}, not {n}: a reload runs the new generation \
             beside the old one, and there is room for {} workers at once",
            2 * MAX_WORKERS
        )),
        Some(n) => Ok(n),
    }
}

impl Workers {
    /// The number of workers this setting means on this machine now; `auto` is at most
    /// [`MAX_WORKERS`].
    pub fn resolve(self) -> usize {
        match self {
            Workers::Auto => {
                std::thread::available_parallelism().map_or(1, NonZeroUsize::get).min(MAX_WORKERS)
            }
            Workers::Count(n) => n.get(),
        }
    }
}

impl FromStr for Workers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Workers::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) => check_workers(n).map(Workers::Count),
            Err(_) => {
                Err(format!("invalid worker count {s:?}: expected \"auto\" or a positive integer"))
            }
        }
    }
}

impl fmt::Display for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workers::Auto => f.write_str("auto"),
            Workers::Count(n) => write!(f, "{n}"),
        }
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Workers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\" or a positive integer")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Workers, E> {
                if s.eq_ignore_ascii_case("auto") {
                    Ok(Workers::Auto)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(s), &self))
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Workers, E> {
                let n = usize::try_from(n).unwrap_or(0);
                check_workers(n).map(Workers::Count).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Workers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Workers::Auto => s.serialize_str("auto"),
            Workers::Count(n) => s.serialize_u64(n.get() as u64),
        }
    }
}

/// A duration given in seconds, as an integer or a decimal (`30`, `0.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let secs: f64 = s.parse().map_err(|_| format!("invalid number of seconds {s:?}"))?;
        Seconds::from_f64(secs)
    }
}

impl Seconds {
    /// A year: any timeout longer than that is a mistake, and deadlines computed from it must
    /// not overflow.
    const MAX: u64 = 365 * 86_400;
    /// The shortest duration other than 0.
    const MIN_POSITIVE: f64 = 0.001;

    fn from_f64(secs: f64) -> Result<Self, String> {
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("seconds must be a non-negative number, not {secs}"));
        }
        if secs > Self::MAX as f64 {
            return Err(format!("{secs} seconds is more than a year"));
        }
        // Less would round to nothing, or next to it, and 0 means "off" for most settings: a
        // `timeout` of 1e-10 would quietly turn hung-worker detection off.
        if secs > 0.0 && secs < Self::MIN_POSITIVE {
            return Err(format!(
                "{secs} seconds is less than a millisecond: use 0, or at least {}",
                Self::MIN_POSITIVE
            ));
        }
        Ok(Seconds(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0.as_secs_f64())
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Seconds, E> {
                if n < 0 {
                    return Err(E::custom("seconds must not be negative"));
                }
                Seconds::from_f64(n as f64).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Seconds, E> {
                Seconds::from_f64(n).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.subsec_nanos() == 0 {
            s.serialize_u64(self.0.as_secs())
        } else {
            s.serialize_f64(self.0.as_secs_f64())
        }
    }
}

/// The `upgrade` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpgradeMode {
    /// The old master stops as soon as the new one serves.
    #[default]
    Auto,
    /// Both serve until the operator stops the old one's workers (`WINCH`) and the old master
    /// (`QUIT`), or gives up by stopping the new master.
    Manual,
}

impl FromStr for UpgradeMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(UpgradeMode::Auto),
            "manual" => Ok(UpgradeMode::Manual),
            _ => Err(format!("unknown upgrade mode {s:?}: expected \"auto\" or \"manual\"")),
        }
    }
}

impl<'de> Deserialize<'de> for UpgradeMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "\"auto\" or \"manual\"")
    }
}

impl Serialize for UpgradeMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            UpgradeMode::Auto => "auto",
            UpgradeMode::Manual => "manual",
        })
    }
}

/// The log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Lifecycle events: workers booted and exited, reloads, shutdown.
    #[default]
    Info,
    /// Also connection-level events.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    const NAMES: [(&'static str, LogLevel); 5] = [
        ("error", LogLevel::Error),
        ("warn", LogLevel::Warn),
        ("info", LogLevel::Info),
        ("debug", LogLevel::Debug),
        ("trace", LogLevel::Trace),
    ];

    /// The level's name as written in the config.
    pub fn as_str(self) -> &'static str {
        Self::NAMES.iter().find(|(_, l)| *l == self).map(|(n, _)| *n).expect("every level is named")
    }

    /// The matching `tracing` filter.
    pub fn filter(self) -> tracing::level_filters::LevelFilter {
        use tracing::level_filters::LevelFilter;
        match self {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let wanted = if s.eq_ignore_ascii_case("warning") { "warn" } else { s };
        LogLevel::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(wanted))
            .map(|(_, l)| *l)
            .ok_or_else(|| {
                format!("unknown log level {s:?}: expected error, warn, info, debug or trace")
            })
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "a log level")
    }
}

/// Deserializes a string through `FromStr`. The parse runs inside the visitor, so that the
/// `toml` deserializer attaches the string's own span to a parse error.
fn from_str<'de, D, T>(d: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    struct V<T>(&'static str, std::marker::PhantomData<T>);
    impl<T: FromStr<Err = String>> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            s.parse().map_err(E::custom)
        }
    }
    d.deserialize_str(V(expecting, std::marker::PhantomData))
}

impl Serialize for LogLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A listening address: `HOST:PORT`, `[IPV6]:PORT` or `unix:/path/to.sock`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bind {
    /// A TCP address. `host` is an IP address or a name resolved when binding.
    Tcp {
        /// IP address (without brackets) or host name.
        host: String,
        /// Port; 0 asks the kernel for a free one.
        port: u16,
    },
    /// A unix domain socket at this path.
    Unix(PathBuf),
}

impl Bind {
    /// Makes a relative unix socket path relative to `base`.
    fn resolve_against(&mut self, base: &Path) {
        if let Bind::Unix(path) = self {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }
}

impl FromStr for Bind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        const FORMS: &str = "expected HOST:PORT, [IPV6]:PORT or unix:/path/to.sock";
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("invalid bind address {s:?}: empty unix socket path"));
            }
            return Ok(Bind::Unix(PathBuf::from(path)));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, port) = rest
                .split_once("]:")
                .ok_or_else(|| format!("invalid bind address {s:?}: {FORMS}"))?;
            v6.parse::<std::net::Ipv6Addr>().map_err(|_| {
                format!("invalid bind address {s:?}: {v6:?} is not an IPv6 address")
            })?;
            (v6, port)
        } else {
            let (host, port) =
                s.rsplit_once(':').ok_or_else(|| format!("invalid bind address {s:?}: {FORMS}"))?;
            if host.is_empty() || host.contains(':') {
                return Err(format!("invalid bind address {s:?}: {FORMS}"));
            }
            (host, port)
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("invalid bind address {s:?}: {port:?} is not a port number"))?;
        Ok(Bind::Tcp { host: host.to_string(), port })
    }
}

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bind::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Bind::Tcp { host, port } => write!(f, "{host}:{port}"),
            Bind::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for Bind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "an address: HOST:PORT, [IPV6]:PORT or unix:/path/to.sock")
    }
}

impl Serialize for Bind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Checks a list of bind addresses: at least one, no duplicates.
pub(crate) fn check_binds(binds: &[Bind]) -> Result<(), String> {
    if binds.is_empty() {
        return Err("bind needs at least one address".into());
    }
    for (i, b) in binds.iter().enumerate() {
        if binds[..i].contains(b) {
            return Err(format!("bind address {b} is listed twice"));
        }
    }
    Ok(())
}

fn deserialize_binds<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Bind>, D::Error> {
    let binds = Vec::<Bind>::deserialize(d)?;
    check_binds(&binds).map_err(de::Error::custom)?;
    Ok(binds)
}

/// Checks a backlog value: the kernel takes 1 to 65535 (and caps it at `net.core.somaxconn`).
pub(crate) fn check_backlog(n: u64) -> Result<u32, String> {
    in_range("backlog", n, 1, 65535).map(|n| n as u32)
}

fn deserialize_backlog<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    deserialize_checked(d, check_backlog)
}

/// Checks a `worker_connections` value.
pub(crate) fn check_worker_connections(n: u64) -> Result<u32, String> {
    in_range("worker_connections", n, 1, 1_000_000).map(|n| n as u32)
}

fn deserialize_worker_connections<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    deserialize_checked(d, check_worker_connections)
}

/// A count that may be 0: a request or MiB limit.
fn deserialize_count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = i64::deserialize(d)?;
    u64::try_from(n).map_err(|_| de::Error::custom(format!("expected 0 or more, not {n}")))
}

impl Serialize for Respond {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("status", &self.status.as_u16())?;
        map.serialize_entry("body", &String::from_utf8_lossy(&self.body))?;
        map.serialize_entry("content_type", self.content_type.to_str().unwrap_or_default())?;
        if !self.headers.is_empty() {
            let headers: BTreeMap<&str, &str> = self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or_default()))
                .collect();
            map.serialize_entry("headers", &headers)?;
        }
        map.end()
    }
}

/// `respond` as written in the file: a string, or a table.
impl<'de> Deserialize<'de> for Respond {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Respond;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a string (the body) or a table { status, body, content_type, headers }",
                )
            }
            fn visit_str<E: de::Error>(self, body: &str) -> Result<Respond, E> {
                Ok(Respond {
                    status: StatusCode::OK,
                    body: Bytes::copy_from_slice(body.as_bytes()),
                    content_type: HeaderValue::from_static(TEXT_PLAIN),
                    headers: Vec::new(),
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Respond, M::Error> {
                let table = RespondTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                table.into_respond().map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RespondTable {
    #[serde(default = "default_status")]
    status: u16,
    #[serde(default)]
    body: String,
    #[serde(default = "default_content_type")]
    content_type: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn default_status() -> u16 {
    200
}

fn default_content_type() -> String {
    TEXT_PLAIN.into()
}

impl RespondTable {
    fn into_respond(self) -> Result<Respond, String> {
        if !(200..=599).contains(&self.status) {
            return Err(format!("status must be between 200 and 599, not {}", self.status));
        }
        let status = StatusCode::from_u16(self.status).map_err(|e| e.to_string())?;
        if matches!(self.status, 204 | 304) && !self.body.is_empty() {
            return Err(format!("a {} response cannot have a body", self.status));
        }
        let content_type = HeaderValue::from_str(&self.content_type)
            .map_err(|_| format!("invalid content_type {:?}", self.content_type))?;
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, value) in self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            if name == http::header::CONTENT_TYPE || name == http::header::CONTENT_LENGTH {
                return Err(format!("set {name} with content_type/body, not in headers"));
            }
            let value = HeaderValue::from_str(&value)
                .map_err(|_| format!("invalid value {value:?} for header {name}"))?;
            headers.push((name, value));
        }
        Ok(Respond { status, body: Bytes::from(self.body), content_type, headers })
    }
}

/// The file as written, before the checks that need the file's location.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    http: HttpConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default, rename = "route")]
    routes: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: Spanned<String>,
    respond: Option<Respond>,
    #[serde(rename = "static")]
    static_dir: Option<Spanned<PathBuf>>,
}

/// The largest config file forkserve reads, in bytes (1 MiB): a config is a few KiB, and the
/// master, which reads it again on every `HUP`, must not spend its time or memory on more.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a config file, which must be a regular file of at most [`MAX_CONFIG_BYTES`]. The
/// single-threaded master reads it on `HUP`: a FIFO in its place would block it in `open` or
/// `read` (no worker replaced, `TERM` ignored), and `/dev/zero` would never end. So the file
/// is opened without blocking, and anything but a regular file is refused before any read.
fn read_config(path: &Path) -> std::io::Result<String> {
    use std::io::{Error as IoError, ErrorKind, Read};
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK).open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    let not_regular = if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_dir() {
        Some("a directory")
    } else {
        None
    };
    if let Some(what) = not_regular {
        return Err(IoError::new(
            ErrorKind::InvalidInput,
            format!("is not a regular file but {what}: a config is read from a regular file only"),
        ));
    }
    let too_large = |len: u64| {
        IoError::new(
            ErrorKind::InvalidInput,
            format!("is {len} bytes: a config may be 1 MiB ({MAX_CONFIG_BYTES} bytes) at most"),
        )
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut text = String::new();
    // A file that grows while it is read stops at the cap all the same.
    file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large(text.len() as u64));
    }
    Ok(text)
}

impl Config {
    /// Reads and validates the config file at `path`: a regular file of at most
    /// [`MAX_CONFIG_BYTES`].
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = read_config(path)
            .map_err(|source| Error::ConfigRead { path: path.to_path_buf(), source })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &base).map_err(|e| Error::Config(e.in_file(path, &text)))
    }

    /// Parses and validates config text; relative paths are taken from `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, Error> {
        Config::parse(text, base).map_err(|e| Error::Config(e.in_file(Path::new("<config>"), text)))
    }

    fn parse(text: &str, base: &Path) -> Result<Config, SpannedError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| SpannedError { message: e.message().to_string(), span: e.span() })?;
        let mut server = raw.server;
        for bind in &mut server.bind {
            bind.resolve_against(base);
        }
        if let Some(pidfile) = &mut server.pidfile {
            if pidfile.is_relative() {
                *pidfile = base.join(&*pidfile);
            }
        }
        let mut routes: Vec<Route> = Vec::with_capacity(raw.routes.len());
        for spanned in raw.routes {
            let span = spanned.span();
            let route = spanned.into_inner();
            let path_span = route.path.span();
            let path = route.path.into_inner();
            if !path.starts_with('/') {
                return Err(SpannedError::at(
                    path_span,
                    format!("route path {path:?} must start with /"),
                ));
            }
            if routes.iter().any(|r| r.path == path) {
                return Err(SpannedError::at(
                    path_span,
                    format!("route path {path:?} is declared twice"),
                ));
            }
            let action = match (route.respond, route.static_dir) {
                (Some(respond), None) => Action::Respond(respond),
                (None, Some(dir)) => Action::Static(static_root(base, dir)?),
                (Some(_), Some(_)) => {
                    return Err(SpannedError::at(
                        span,
                        format!("route {path:?} has two actions: give either respond or static"),
                    ));
                }
                (None, None) => {
                    return Err(SpannedError::at(
                        span,
                        format!("route {path:?} has no action: give respond or static"),
                    ));
                }
            };
            routes.push(Route { path, action });
        }
        Ok(Config { server, http: raw.http, log: raw.log, routes })
    }

    /// The config as TOML, for `--print-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config always serializes")
    }
}

/// Resolves a route's `static` directory: it must exist, be a directory, and be searchable by
/// this process (workers open files beneath it; without search permission every file would be
/// answered 403). Checked wherever a config is loaded, so `--check-config`, the first start and
/// a reload (`HUP`, refused, the serving workers kept) all catch a root that is missing or
/// cannot be used, rather than every new worker failing to boot.
fn static_root(base: &Path, dir: Spanned<PathBuf>) -> Result<PathBuf, SpannedError> {
    use nix::unistd::{AccessFlags, eaccess};
    let span = dir.span();
    let dir = base.join(dir.into_inner());
    let root = match dir.canonicalize() {
        Ok(root) if root.is_dir() => root,
        Ok(_) => {
            let message = format!("static path {} is not a directory", dir.display());
            return Err(SpannedError::at(span, message));
        }
        Err(e) => {
            return Err(SpannedError::at(span, format!("static directory {}: {e}", dir.display())));
        }
    };
    // Search permission, with this process's effective ids and capabilities (eaccess): the
    // config is loaded by the master (or `--check-config`, run as the same user), and workers
    // run as the master's user, so these are the ids they serve with. An app factory that
    // changes its user afterwards is not foreseen here.
    if let Err(e) = eaccess(&root, AccessFlags::X_OK) {
        let message = format!(
            "static directory {}: cannot be searched ({}): no file beneath it could be served",
            dir.display(),
            std::io::Error::from(e)
        );
        return Err(SpannedError::at(span, message));
    }
    Ok(root)
}

/// An error at a byte range of the config text.
#[derive(Debug)]
struct SpannedError {
    message: String,
    span: Option<Range<usize>>,
}

impl SpannedError {
    fn at(span: Range<usize>, message: String) -> Self {
        SpannedError { message, span: Some(span) }
    }

    fn in_file(self, path: &Path, text: &str) -> ConfigError {
        let (line, column) = match self.span {
            Some(span) => line_col(text, span.start),
            None => (0, 0),
        };
        ConfigError { path: path.to_path_buf(), line, column, message: self.message }
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        match Config::from_toml(text, Path::new("/")) {
            Ok(c) => Ok(c),
            Err(Error::Config(e)) => Err(e),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn empty_file_means_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        let s = &c.server;
        assert_eq!(
            (s.timeout.0, s.boot_timeout.0, s.graceful_timeout.0),
            (secs(30), secs(30), secs(30))
        );
        assert_eq!(ServerConfig::limit(s.request_timeout), None, "request_timeout is off");
        assert_eq!((s.max_requests, s.max_worker_memory, s.worker_connections), (0, 0, 1000));
        assert_eq!(ServerConfig::limit(s.max_worker_lifetime), None);
    }

    #[test]
    fn full_server_table() {
        let c = parse(
            r#"
            [server]
            bind = ["0.0.0.0:80", "[::1]:8080", "unix:/run/app.sock"]
            workers = 3
            backlog = 10
            graceful_timeout = 0.5
            timeout = 12
            boot_timeout = 60
            request_timeout = 2.5
            max_requests = 1000
            max_requests_jitter = 50
            max_worker_memory = 512
            max_worker_lifetime = 3600
            worker_connections = 64
            pidfile = "/run/fs.pid"
            [log]
            level = "DEBUG"
            "#,
        )
        .unwrap();
        let s = &c.server;
        assert_eq!((s.timeout.0, s.boot_timeout.0), (secs(12), secs(60)));
        assert_eq!(s.request_timeout.0, Duration::from_millis(2500));
        assert_eq!((s.max_requests, s.max_requests_jitter, s.max_worker_memory), (1000, 50, 512));
        assert_eq!((s.max_worker_lifetime.0, s.worker_connections), (secs(3600), 64));
        assert_eq!(c.server.bind[1], Bind::Tcp { host: "::1".into(), port: 8080 });
        assert_eq!(c.server.bind[2], Bind::Unix("/run/app.sock".into()));
        assert_eq!(c.server.workers.resolve(), 3);
        assert_eq!(c.server.graceful_timeout.0, Duration::from_millis(500));
        assert_eq!(c.log.level, LogLevel::Debug);
    }

    #[test]
    fn errors_point_at_the_value() {
        let e = parse("[server]\nworkers = 0\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 11), "{e}");
        assert!(e.message.contains("at least 1"), "{e}");

        let e = parse("[server]\n  bogus = 1\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 3), "{e}");
        assert!(e.message.contains("unknown field"), "{e}");

        let e = parse("[server]\nbind = [\"nope\"]\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("HOST:PORT"), "{e}");
    }

    #[test]
    fn route_needs_exactly_one_action() {
        let e = parse("[[route]]\npath = \"/\"\nrespond = \"x\"\nstatic = \"/\"\n").unwrap_err();
        assert!(e.message.contains("two actions"), "{e}");
        assert_eq!(e.line, 1, "{e}");
        let e = parse("[[route]]\npath = \"/\"\n").unwrap_err();
        assert!(e.message.contains("no action"), "{e}");
    }

    #[test]
    fn respond_table_is_checked() {
        let c = parse(
            "[[route]]\npath = \"/\"\nrespond = { status = 201, body = \"ok\", headers = { x-a = \"b\" } }\n",
        )
        .unwrap();
        let Action::Respond(r) = &c.routes[0].action else { panic!() };
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.headers[0].0, "x-a");
        for bad in [
            "status = 700",
            "status = 204, body = \"x\"",
            "headers = { \"bad name\" = \"x\" }",
            "content_type = \"a\\nb\"",
            "nope = 1",
        ] {
            let text = format!("[[route]]\npath = \"/\"\nrespond = {{ {bad} }}\n");
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, 3, "{bad}: {e}");
        }
    }

    #[test]
    fn bind_forms() {
        assert_eq!("localhost:80".parse::<Bind>().unwrap().to_string(), "localhost:80");
        assert_eq!("[::]:80".parse::<Bind>().unwrap().to_string(), "[::]:80");
        for bad in ["", ":80", "host", "host:", "host:99999", "::1:80", "[zz]:80", "unix:"] {
            assert!(bad.parse::<Bind>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn print_config_round_trips() {
        let text = "[server]\nworkers = 2\ngraceful_timeout = 1.5\n[[route]]\npath = \"/\"\nrespond = { status = 202, body = \"hi\" }\n";
        let c = parse(text).unwrap();
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn a_config_built_in_code_is_checked_as_a_file_is() {
        assert_eq!(ServerConfig::default().check(), Ok(()));
        let mut server =
            ServerConfig { graceful_timeout: Seconds(Duration::ZERO), ..Default::default() };
        assert!(server.check().unwrap_err().contains("graceful_timeout"));
        server.graceful_timeout = Seconds(secs(1));
        server.timeout = Seconds(Duration::from_millis(1));
        assert!(server.check().unwrap_err().contains("timeout must be 0 (off) or at least 1 s"));
        server.timeout = Seconds(secs(1));
        server.workers = Workers::Count(NonZeroUsize::new(MAX_WORKERS + 1).unwrap());
        assert!(server.check().unwrap_err().contains("at most 1024"));
        assert!(Workers::Auto.resolve() <= MAX_WORKERS);
    }

    #[test]
    fn every_shipped_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen > 0, "no config files found in {}", dir.display());
    }
}
