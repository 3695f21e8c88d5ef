//! Logging: one structured line per event on stderr, with a level that a reload can change.
//!
//! The subscriber is installed by the master before the first fork and inherited by every
//! worker; worker lines carry a `worker{id pid}` prefix from the span each worker enters.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, reload};

use crate::config::LogLevel;

/// Changes the level of the installed subscriber.
pub(crate) struct LogHandle(Option<reload::Handle<LevelFilter, Registry>>);

/// Installs the global subscriber. If the process already has one (a library user's), that one
/// stays and reloads cannot change its level.
pub(crate) fn init(level: LogLevel) -> LogHandle {
    let (filter, handle) = reload::Layer::new(level.filter());
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match tracing_subscriber::registry().with(filter).with(format).try_init() {
        Ok(()) => LogHandle(Some(handle)),
        Err(_) => LogHandle(None),
    }
}

impl LogHandle {
    pub(crate) fn set_level(&self, level: LogLevel) {
        if let Some(handle) = &self.0 {
            let _ = handle.modify(|filter| *filter = level.filter());
        }
    }
}
