//! What the workers of a generation may share: an app loaded once, in a template process (the
//! master's *mold*, see `master::mold`), before the workers are forked from it, so that they
//! share its memory copy-on-write. The master knows nothing of what is loaded or how: it asks
//! `app::preloader` whether a config wants something preloaded, and has the [`Preload`] it
//! gets load it in the mold and wrap each fork there.

use crate::config::Config;

/// Which side of a fork the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The process that asked for the fork (also when the fork failed).
    Parent,
    /// The new process.
    Child,
}

/// An app runtime that can be loaded once and forked from: CPython, for `[python] preload`.
pub(crate) trait Preload: Sync {
    /// In the mold, once: starts the runtime and loads what the generation's workers share.
    /// `Err` says why it cannot (the app's own error), for the log and the first start's
    /// `forkserve: error: …`.
    fn load(&self, config: &Config) -> Result<(), String>;

    /// In the mold: runs `fork`, which forks and says which side of the fork it returns on, and
    /// does what the loaded runtime must do around a fork, on each side.
    fn fork(&self, fork: &mut dyn FnMut() -> Side) -> Side;
}
