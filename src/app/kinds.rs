//! The kinds of app a `[[route]]` can name, in one list: the config loader reads routes with
//! their config halves, and the router builds each route's handler with the kind that read it.
//! Adding a kind is a module under `app/` that implements [`Kind`], and a line in [`KINDS`].

use std::io;

use super::kind::{AppKind, Kind};
use super::respond::Respond;
use super::static_files::StaticDir;
use crate::config::{KindReader, Route};

/// The kinds a `[[route]]` can name. A new kind is a module under `app/` that implements
/// [`Kind`], and a line here.
#[cfg(not(feature = "python"))]
const KINDS: [Registered; 2] = [Registered::of::<Respond>(), Registered::of::<StaticDir>()];
#[cfg(feature = "python")]
const KINDS: [Registered; 3] = [
    Registered::of::<Respond>(),
    Registered::of::<StaticDir>(),
    Registered::of::<super::python::Wsgi>(),
];

/// A kind as the loader and the router find it: by its key.
struct Registered {
    reader: KindReader,
    serve: fn(&Route) -> io::Result<Box<dyn AppKind>>,
}

impl Registered {
    const fn of<K: Kind>() -> Registered {
        Registered { reader: KindReader::of::<K>(), serve: serve::<K> }
    }
}

/// The config halves of the kinds, for the config's schema.
pub(crate) fn readers() -> impl Iterator<Item = KindReader> {
    KINDS.iter().map(|k| k.reader)
}

/// Builds the handler of `route` with the kind that read it.
pub(crate) fn handler(route: &Route) -> io::Result<Box<dyn AppKind>> {
    match KINDS.iter().find(|k| k.reader.key() == route.kind()) {
        Some(kind) => (kind.serve)(route),
        None => Err(io::Error::other(format!("no app kind {}", route.kind()))),
    }
}

fn serve<K: Kind>(route: &Route) -> io::Result<Box<dyn AppKind>> {
    // Each entry of `KINDS` pairs a kind's reader with its builder, so a route under K's key
    // was read by K and holds a `K::Config`. The error is for a `Config` read with another
    // schema's kinds, made in code.
    match route.config::<K>() {
        Some(config) => K::serve(config),
        None => Err(io::Error::other(format!(
            "its {} value was not read by this server's app kind",
            route.kind()
        ))),
    }
}
