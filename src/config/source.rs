//! Where a config comes from: the file, read safely ([`read_config`]), and the command line's
//! overrides on top ([`ConfigSource`]), kept by the master to read again the same way on `HUP`.

use std::path::{Path, PathBuf};

use super::{Config, Overrides, Schema};
use crate::error::Error;

/// Where the effective config comes from: a file (or the defaults) plus command-line overrides,
/// read with a schema (the app kinds and the program's tables). The master keeps it to re-read
/// the same way on HUP; flags keep winning over the file across reloads, as Gunicorn's do.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The config file, if any.
    pub path: Option<PathBuf>,
    /// The command line's settings.
    pub overrides: Overrides,
    /// What the file may hold beyond forkserve's own tables.
    pub schema: Schema,
}

impl ConfigSource {
    /// Reads the file (if any), validates it, and applies the overrides. Without a file, the
    /// program's tables are read as if empty: one that needs a key is a usage error.
    pub fn load(&self) -> Result<Config, Error> {
        let mut config = match &self.path {
            Some(path) => Config::load(path, &self.schema)?,
            None => Config::from_toml("", Path::new(""), &self.schema).map_err(|e| match e {
                Error::Config(e) => Error::Usage(format!("no config file, so {}", e.message)),
                e => e,
            })?,
        };
        self.overrides.apply(&mut config)?;
        config.python.check(&config.routes).map_err(Error::Usage)?;
        config.metrics.check(&config.server.bind).map_err(Error::Usage)?;
        // Made absolute here, in the master, whose directory never changes: a worker opens
        // the access log after a preloaded Python app's `chdir` has moved its mold.
        if let Some(access) = &mut config.log.access {
            if access.is_relative() && !super::is_stdout(access) {
                *access = std::path::absolute(&*access)
                    .map_err(|e| Error::Usage(format!("access log {}: {e}", access.display())))?;
            }
        }
        Ok(config)
    }

    /// The config file, for log messages.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// The largest config file forkserve reads, in bytes (1 MiB): a config is a few KiB, and the
/// master, which reads it again on every `HUP`, must not spend its time or memory on more.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a config file, which must be a regular file of at most [`MAX_CONFIG_BYTES`]. The
/// single-threaded master reads it on `HUP`: a FIFO in its place would block it in `open` or
/// `read` (no worker replaced, `TERM` ignored), and `/dev/zero` would never end. So the file
/// is opened without blocking, and anything but a regular file is refused before any read.
pub(super) fn read_config(path: &Path) -> std::io::Result<String> {
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
