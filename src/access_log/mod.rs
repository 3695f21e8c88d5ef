//! The access log: one line per request, written by each worker from the request-end event
//! ([`crate::RequestEnd`]), whoever answered the request, in the format of `[log]
//! access_format` (see [`crate::access_format`]), to `[log] access` (a file, or `-` for stdout).
//!
//! The worker installs it itself, for every app (library apps too), before the app's factory
//! runs: its hook is the first of the request-end hooks, and the file is opened before an app
//! could change directory. Each worker opens the file on its own (`O_APPEND`), in [`open`],
//! as every log file is opened ([`open_log_file`]); the master opens it once at start too, so
//! that a path that cannot be written is a startup error rather than a boot failure of every
//! worker. Each worker owning its descriptor makes reopening it a matter of each process, with
//! no descriptor passed around: it joins the descriptors the worker's `USR1` handler reopens
//! (log rotation), and a reload (`HUP`) that names another file moves the new workers' lines.
//!
//! Lines are buffered per worker and written whole (see [`writer`]).

mod writer;

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

pub(crate) use writer::Writer;

use crate::access_format::AccessFormat;
use crate::logging::file::{open_log_file, reopen_on_usr1};
use crate::request_end::Hooks;

/// How often a worker writes what it has buffered, at least.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The master's check at start: the file can be opened (and is created).
pub(crate) fn check(path: Option<&Path>) -> Result<(), crate::Error> {
    match path {
        Some(path) if !crate::config::is_stdout(path) => {
            open_log_file(path).map(drop).map_err(|e| {
                crate::Error::os("opening the access log ([log] access, --log-access)", e)
            })
        }
        _ => Ok(()),
    }
}

/// Installs the worker's access log to `path` (`[log] access`), if one is configured: its
/// hook among the worker's request-end `hooks`, and the task that writes what is buffered
/// every [`FLUSH_EVERY`]. The caller writes the rest with [`Writer::flush`] once the worker
/// has drained. `Err` if the file cannot be opened. Call it before the worker unblocks its
/// signals: a `USR1` from then on reopens the file.
pub(crate) fn install(
    path: Option<&Path>,
    format: &AccessFormat,
    hooks: &Hooks,
) -> io::Result<Option<Rc<Writer>>> {
    let Some(path) = path else { return Ok(None) };
    let out = if crate::config::is_stdout(path) {
        writer::Out::Stdout
    } else {
        let file = open_log_file(path)?;
        reopen_on_usr1(file.as_raw_fd(), Some(path)).map_err(io::Error::other)?;
        writer::Out::File(file)
    };
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
