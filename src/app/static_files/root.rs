//! The `static` key of a `[[route]]`: the directory to serve, resolved against the config
//! file's directory and checked when the config is loaded; each worker opens it when it builds
//! its router.

use std::io;
use std::path::PathBuf;

use super::StaticDir;
use crate::app::kind::{AppKind, Kind};
use crate::config::{KindValue, RouteKind, SpannedError};

impl RouteKind for StaticDir {
    const KEY: &'static str = "static";
    /// Each worker keeps the directory open.
    const DESCRIPTORS: usize = 1;
    /// The directory: absolute, canonical.
    type Config = PathBuf;

    fn read(value: KindValue<'_>) -> Result<PathBuf, SpannedError> {
        static_root(value)
    }
}

impl Kind for StaticDir {
    fn serve(root: &PathBuf) -> io::Result<Box<dyn AppKind>> {
        Ok(Box::new(StaticDir::open(root.clone())?))
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
