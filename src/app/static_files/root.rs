//! The `static` key of a `[[route]]`: the directory to serve, resolved against the config
//! file's directory and checked when the config is loaded; each worker opens it when it builds
//! its router.

use std::io;
use std::path::PathBuf;

use serde::{Serialize, Serializer};

use super::StaticDir;
use crate::app::kind::{AppKind, Kind};
use crate::config::{KindValue, RouteKind, SpannedError};

impl RouteKind for StaticDir {
    const KEY: &'static str = "static";
    /// Each worker keeps the directory open.
    const DESCRIPTORS: usize = 1;
    type Config = Root;

    fn read(value: KindValue<'_>) -> Result<Root, SpannedError> {
        static_root(value).map(Root)
    }
}

impl Kind for StaticDir {
    fn serve(root: &Root) -> io::Result<Box<dyn AppKind>> {
        Ok(Box::new(StaticDir::open(root.0.clone())?))
    }
}

/// A static route's directory: absolute, canonical. A name that is not UTF-8 serves all the
/// same; `--print-config` writes it with U+FFFD where its bytes are not UTF-8, since TOML
/// strings are UTF-8 (the printed config then reads back only if the path is UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Root(PathBuf);

impl Root {
    #[cfg(test)]
    pub(crate) fn as_path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Serialize for Root {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string_lossy())
    }
}

/// Resolves a route's `static` directory: it must exist, be a directory, and be searchable by
/// this process (workers open files beneath it; without search permission every file would be
/// answered 403). Checked wherever a config is loaded, so `--check-config`, the first start and
/// a reload (`HUP`, refused, the serving workers kept) all catch a root that is missing or
/// cannot be used, rather than every new worker failing to boot.
fn static_root(value: KindValue<'_>) -> Result<PathBuf, SpannedError> {
    use nix::unistd::{AccessFlags, eaccess};
    let span = value.span();
    let dir = value.base().join(value.read::<PathBuf>()?);
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
