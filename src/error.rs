//! The library's one error type, and the exit codes the binary maps it to.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// An error that stops forkserve from starting or from running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command-line usage.
    #[error("{0}")]
    Usage(String),
    /// The config file could not be read.
    #[error("{}: {source}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: io::Error,
    },
    /// The config file is not valid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listening socket could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address, as configured.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The pidfile could not be written, or names another running master.
    #[error("pidfile {}: {message}", path.display())]
    Pidfile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A running server could not be read (`forkserve status`): it is not running, its
    /// pidfile is stale, or it cannot be read by this user or this build.
    #[error("{0}")]
    Status(String),
    /// No worker of the first generation could boot; the server never came up.
    #[error("worker failed to boot: {0}")]
    Boot(String),
    /// A system call failed where the master cannot carry on.
    #[error("{context}: {source}")]
    Os {
        /// What the master was doing.
        context: &'static str,
        /// The error.
        source: io::Error,
    },
}

impl Error {
    /// The process exit code this error stands for: 2 for usage and config errors (nothing was
    /// started), 3 when workers could not boot, 1 for other runtime failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::ConfigRead { .. } | Error::Config(_) => 2,
            Error::Boot(_) => 3,
            _ => 1,
        }
    }

    pub(crate) fn os(context: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Os { context, source: source.into() }
    }
}

/// A config file error located at `path:line:column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, or 0 when the error is not about one place in the file.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.column, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A boxed error, as app factories and services return them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
