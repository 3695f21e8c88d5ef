//! The access log: one line per request, written by each worker from the request-end event
//! ([`crate::RequestEnd`]), whoever answered the request, in the format of `[log]
//! access_format` (see [`format`]), to `[log] access` (a file, or `-` for stdout).
//!
//! The worker installs it itself, for every app (library apps too), before the app's factory
//! runs: its hook is the first of the request-end hooks, and the file is opened before an app
//! could change directory. Each worker opens the file on its own (`O_APPEND`), in [`open`],
//! the one place that opens it; the master opens it once at start too, so that a path that
//! cannot be written is a startup error rather than a boot failure of every worker. Each
//! worker owning its descriptor is what makes reopening it (log rotation) a local matter of
//! each process, with no descriptor passed around, and lets a reload (`HUP`) move the log.
//!
//! Lines are buffered per worker and written whole (see [`writer`]).

pub(crate) mod format;
mod writer;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

pub use format::AccessFormat;
pub(crate) use writer::Writer;

use crate::request_end::Hooks;

/// How often a worker writes what it has buffered, at least.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Where the access log goes: `-` is stdout.
pub(crate) fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Opens the access log file for appending, creating it (mode 0644 less the umask): the one
/// place a log file is opened, for the master's check and each worker's own descriptor.
pub(crate) fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).mode(0o644).open(path)
}

/// The master's check at start: the file can be opened (and is created).
pub(crate) fn check(path: Option<&Path>) -> Result<(), crate::Error> {
    match path {
        Some(path) if !is_stdout(path) => open(path).map(drop).map_err(|source| {
            crate::Error::LogFile { what: "access log", path: path.to_path_buf(), source }
        }),
        _ => Ok(()),
    }
}

/// Installs the worker's access log to `path` (`[log] access`), if one is configured: its
/// hook among the worker's request-end `hooks`, and the task that writes what is buffered
/// every [`FLUSH_EVERY`]. The caller writes the rest with [`Writer::flush`] once the worker
/// has drained. `Err` if the file cannot be opened.
pub(crate) fn install(
    path: Option<&Path>,
    format: &AccessFormat,
    hooks: &Hooks,
) -> io::Result<Option<Rc<Writer>>> {
    let Some(path) = path else { return Ok(None) };
    let out = if is_stdout(path) { writer::Out::Stdout } else { writer::Out::File(open(path)?) };
    let writer = Rc::new(Writer::new(out, format.bind(hooks)));
    let hook = Rc::clone(&writer);
    hooks.add(Box::new(move |event| hook.log(event)));
    let ticker = Rc::downgrade(&writer);
    tokio::task::spawn_local(async move {
        let mut ticks = tokio::time::interval(FLUSH_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(writer) = ticker.upgrade() else { return };
            writer.flush();
        }
    });
    Ok(Some(writer))
}
