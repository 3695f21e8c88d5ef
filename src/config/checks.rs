//! The checks the settings' declarations name (`check check_x` in `settings`): each takes the
//! value as read, from the file or a flag, and returns it (or a narrower type), or says what is
//! wrong with it, naming the setting.

use std::path::PathBuf;
use std::time::Duration;

use super::Seconds;
use super::python::EnvVar;
use super::tls::Listen;

/// The shortest `timeout` other than 0 (off). Workers beat every `timeout`/4; below a second, an
/// ordinary stall of a worker's loop (a page-fault burst, a loaded machine not scheduling it
/// for a few hundred milliseconds) reads as a hang, and the kills outpace the master's own
/// `SIGABRT`-to-`SIGKILL` second: `-t 0.001` killed thousands of healthy workers in seconds.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The most `limit_request_fields` may be. The `http` crate's header map holds at most 24,576
/// fields and panics beyond, and hyper, told to parse more than 100, allocates a table of that
/// many entries for every request; 8192 fields is far more than any client sends.
pub const MAX_REQUEST_FIELDS: u64 = 8192;

/// Checks a `timeout` value: 0 (off) or at least [`MIN_TIMEOUT`].
pub(super) fn check_timeout(timeout: Seconds) -> Result<Seconds, String> {
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

/// Checks a `graceful_timeout` value: more than 0.
pub(super) fn check_graceful_timeout(grace: Seconds) -> Result<Seconds, String> {
    if grace.0.is_zero() {
        return Err("graceful_timeout must be more than 0: it is how long a stopping worker may \
                    take to finish its requests (for a stop that does not wait, send INT or QUIT)"
            .into());
    }
    Ok(grace)
}

/// Checks a `threads` value.
pub(super) fn check_threads(n: u64) -> Result<u32, String> {
    in_range("threads", n, 1, 256).map(|n| n as u32)
}

/// Checks the `path` list: any directories (they need not exist yet).
pub(super) fn check_python_path(path: Vec<PathBuf>) -> Result<Vec<PathBuf>, String> {
    Ok(path)
}

/// Checks the `env` list: no variable named twice.
pub(super) fn check_env(env: Vec<EnvVar>) -> Result<Vec<EnvVar>, String> {
    for (i, var) in env.iter().enumerate() {
        if env[..i].iter().any(|v| v.key == var.key) {
            return Err(format!("environment variable {} is set twice", var.key));
        }
    }
    Ok(env)
}

/// Checks a list of bind addresses: at least one, no address twice (whatever its scheme: it
/// is one socket).
pub(super) fn check_binds(binds: Vec<Listen>) -> Result<Vec<Listen>, String> {
    if binds.is_empty() {
        return Err("bind needs at least one address".into());
    }
    for (i, b) in binds.iter().enumerate() {
        if binds[..i].iter().any(|a| a.bind == b.bind) {
            return Err(format!("bind address {} is listed twice", b.bind));
        }
    }
    Ok(binds)
}

/// Checks the metrics' path: an absolute path, as a request target names it (no query, no
/// space or control character, which no request line could carry).
pub(super) fn check_metrics_path(path: String) -> Result<String, String> {
    let printable = path.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    if !path.starts_with('/') || !printable {
        return Err(format!(
            "metrics path must start with / and hold no space, control character, ? or #: {path:?}"
        ));
    }
    Ok(path)
}

/// Checks a backlog value: the kernel takes 1 to 65535 (and caps it at `net.core.somaxconn`).
pub(super) fn check_backlog(n: u64) -> Result<u32, String> {
    in_range("backlog", n, 1, 65535).map(|n| n as u32)
}

/// Checks a `max_concurrent_streams` value.
pub(super) fn check_streams(n: u64) -> Result<u32, String> {
    in_range("max_concurrent_streams", n, 1, 1000).map(|n| n as u32)
}

/// Checks an `initial_stream_window` value: HTTP/2's smallest window (RFC 9113 §6.9.2) to 16 MiB.
pub(super) fn check_stream_window(n: u64) -> Result<u32, String> {
    in_range("initial_stream_window", n, 65535, 16 << 20).map(|n| n as u32)
}

/// Checks an `initial_connection_window` value.
pub(super) fn check_connection_window(n: u64) -> Result<u32, String> {
    in_range("initial_connection_window", n, 65535, 1 << 30).map(|n| n as u32)
}

/// Checks a `max_send_buf` value.
pub(super) fn check_send_buf(n: u64) -> Result<u32, String> {
    in_range("max_send_buf", n, 1024, 16 << 20).map(|n| n as u32)
}

/// Checks a `max_pending_accept_reset_streams` value.
pub(super) fn check_reset_streams(n: u64) -> Result<u32, String> {
    in_range("max_pending_accept_reset_streams", n, 1, 10_000).map(|n| n as u32)
}

/// Checks a `max_local_error_reset_streams` value.
pub(super) fn check_error_resets(n: u64) -> Result<u32, String> {
    in_range("max_local_error_reset_streams", n, 1, 100_000).map(|n| n as u32)
}

/// Checks a `worker_connections` value.
pub(super) fn check_worker_connections(n: u64) -> Result<u32, String> {
    in_range("worker_connections", n, 1, 1_000_000).map(|n| n as u32)
}

/// Checks a `limit_request_fields` value.
pub(super) fn check_fields(n: u64) -> Result<u64, String> {
    in_range("limit_request_fields", n, 1, MAX_REQUEST_FIELDS)
}

/// `n` if it is within `min..=max`, else an error naming the setting.
pub(super) fn in_range(setting: &str, n: u64, min: u64, max: u64) -> Result<u64, String> {
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{setting} must be between {min} and {max}, not {n}"))
    }
}
