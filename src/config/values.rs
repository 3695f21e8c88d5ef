//! The value types of settings: [`Seconds`], [`Workers`], [`UpgradeMode`], [`LogLevel`],
//! [`LogFormat`] and [`Bind`]. Each validates itself, on the command line (`FromStr`) and in the
//! file (`Deserialize`, inside the visitor, so that the `toml` crate attaches the value's span
//! to a parse error). [`AllowList`](super::AllowList) has a module of its own.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

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

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `time level span{fields}: message key=value`, for people.
    #[default]
    Text,
    /// One JSON object per line (`time`, `level`, `pid`, `worker` in a worker's lines,
    /// `message`, `fields`), for log shippers.
    Json,
}

impl LogFormat {
    /// The format's name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown log format {s:?}: expected text or json")),
        }
    }
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "a log format")
    }
}

impl Serialize for LogFormat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Deserializes a string through `FromStr`. The parse runs inside the visitor, so that the
/// `toml` deserializer attaches the string's own span to a parse error.
pub(super) fn from_str<'de, D, T>(d: D, expecting: &'static str) -> Result<T, D::Error>
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
    pub(super) fn resolve_against(&mut self, base: &Path) {
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
