//! Logging: one structured line per event, on stderr or in the log file (`[log] file`), as
//! text or JSON (`[log] format`), with a level, a format and a file that a reload can change.
//!
//! The subscriber is installed by the master before the first fork and inherited by every
//! worker; worker lines carry a `worker{id pid}` prefix from the span each worker enters (in
//! JSON, a `worker` member). It writes to descriptor 2, which [`file`] points at the log file:
//! the log file is stderr for forkserve and for the app alike, and `USR1` reopens it.
//!
//! | module | owns |
//! |---|---|
//! | [`file`] | opening a log file ([`file::open_log_file`]), putting it on descriptor 2, reopening it |
//! | [`json`] | the JSON line format |

pub(crate) mod file;
mod json;

use std::fmt;
use std::io::{self, IsTerminal};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::level_filters::LevelFilter;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, reload};

use crate::config::{LogConfig, LogFormat};

pub(crate) use self::file::{reopen_from_handler, reopen_on_usr1};
pub(crate) use self::json::{set_worker, write_str as write_json_str};

/// Whether lines are written as JSON; read for every line, so that a reload can change it.
static JSON: AtomicBool = AtomicBool::new(false);

/// Changes the installed subscriber's level and format, and where descriptor 2 points.
pub(crate) struct LogHandle {
    /// `None` when the process already had a subscriber (a library user's): it stays, and
    /// reloads cannot change its level.
    level: Option<reload::Handle<LevelFilter, Registry>>,
    /// The log file descriptor 2 points at, if any.
    file: Option<PathBuf>,
    /// Descriptor 2 as the process was started with it, for a reload that removes the file.
    original: Option<OwnedFd>,
}

/// Points descriptor 2 at `config.file` if there is one, and installs the global subscriber.
/// Fails, changing nothing, if the file cannot be opened.
pub(crate) fn init(config: &LogConfig) -> io::Result<LogHandle> {
    let original = file::save_stderr();
    if let Some(path) = &config.file {
        file::redirect_stderr(path)?;
    }
    JSON.store(config.format == LogFormat::Json, Ordering::Relaxed);
    let (filter, handle) = reload::Layer::new(config.level.filter());
    // Colours only for a terminal; a file never gets escape codes, even one added by a reload.
    let ansi = config.file.is_none() && io::stderr().is_terminal();
    let format = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(ansi)
        .event_format(Lines { ansi });
    let level = match tracing_subscriber::registry().with(filter).with(format).try_init() {
        Ok(()) => Some(handle),
        Err(_) => None,
    };
    Ok(LogHandle { level, file: config.file.clone(), original })
}

impl LogHandle {
    /// Applies a reloaded `[log]` table. A new file is opened first: if it cannot be, nothing
    /// changes and the error says why.
    pub(crate) fn apply(&mut self, config: &LogConfig) -> io::Result<()> {
        if config.file != self.file {
            match (&config.file, &self.original) {
                (Some(path), _) => file::redirect_stderr(path)?,
                (None, Some(original)) => file::onto_stderr(original.as_fd())?,
                (None, None) => {}
            }
            self.file = config.file.clone();
        }
        JSON.store(config.format == LogFormat::Json, Ordering::Relaxed);
        if let Some(handle) = &self.level {
            let _ = handle.modify(|filter| *filter = config.level.filter());
        }
        Ok(())
    }

    /// The log file, if the log goes to one.
    pub(crate) fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Reopens the log file at its path (`USR1`: it was renamed, and a new one is to be made).
    /// On failure descriptor 2 still points at the old file.
    pub(crate) fn reopen(&self) -> io::Result<()> {
        match &self.file {
            Some(path) => file::redirect_stderr(path),
            None => Ok(()),
        }
    }
}

/// In a worker or a mold of a generation whose log file is `path`: opens it afresh onto
/// descriptor 2 (the file may have been rotated, or changed by a reload, since the master
/// forked it; a worker forked by a mold would otherwise write to the mold's) and makes it the
/// file `USR1` reopens. A failure is logged, and the inherited descriptor kept.
pub(crate) fn in_child(path: Option<&Path>) {
    if let Err(e) = reopen_on_usr1(nix::libc::STDERR_FILENO, path) {
        tracing::warn!("USR1 will not reopen the log file: {e}");
    }
    if let Some(path) = path {
        if let Err(e) = file::redirect_stderr(path) {
            tracing::warn!("cannot open the log file, writing on to the inherited one: {e}");
        }
    }
}

/// Writes each line as text or JSON, as [`JSON`] says at that moment.
struct Lines {
    ansi: bool,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if JSON.load(Ordering::Relaxed) {
            json::write_event(&mut writer, event)?;
            writeln!(writer)
        } else {
            Format::default()
                .with_target(false)
                .with_ansi(self.ansi)
                .format_event(ctx, writer, event)
        }
    }
}
