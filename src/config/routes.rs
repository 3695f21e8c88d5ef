//! The `[[route]]` tables of the file: a path prefix, and exactly one app kind's key (`respond =
//! …`, `static = …`) whose value that kind reads and checks (see [`RouteKind`]). The kinds are
//! the [`Schema`]'s; each kind's keys and checks are in its own module under `app/`.

use serde::de::IgnoredAny;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

use super::held::Held;
use super::schema::{KindReader, KindValue, RouteKind, Schema, unknown_field};
use super::span::SpannedError;

/// One `[[route]]`: a path prefix, and the app kind that serves the requests under it.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The path prefix. A prefix ending in `/` matches any path that starts with it; one that
    /// does not matches itself and the paths below it (`/api` matches `/api` and `/api/x`, not
    /// `/apix`).
    pub path: String,
    /// The kind's key, which names it: `respond`.
    kind: &'static str,
    /// The descriptors a worker keeps open for this route (see [`RouteKind::DESCRIPTORS`]).
    descriptors: usize,
    /// The kind's checked value.
    config: Held,
}

impl Route {
    /// The app kind that serves this route, by its key: `respond`, `static`.
    pub fn kind(&self) -> &str {
        self.kind
    }

    /// A route made in code: `path` served by kind `K` with `config` (as `python.app` is served
    /// at `/`).
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn of<K: RouteKind>(path: &str, config: K::Config) -> Result<Route, String> {
        let config = Held::new(config)?;
        Ok(Route { path: path.into(), kind: K::KEY, descriptors: K::DESCRIPTORS, config })
    }

    /// The route's value, if kind `K` serves it.
    pub(crate) fn config<K: RouteKind>(&self) -> Option<&K::Config> {
        if self.kind == K::KEY { self.config.get() } else { None }
    }

    /// The descriptors a worker keeps open for this route.
    pub(super) fn descriptors(&self) -> usize {
        self.descriptors
    }
}

/// As the file writes it: `path`, then the kind's key and value.
impl Serialize for Route {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("path", &self.path)?;
        map.serialize_entry(self.kind, &self.config)?;
        map.end()
    }
}

/// Reads the file's `route` entry (the `[[route]]` tables), if any, with the schema's kinds;
/// relative paths in the kinds' values are taken from `base`, the config file's directory.
pub(super) fn routes(
    value: Option<Spanned<DeValue<'_>>>,
    base: &Path,
    schema: &Schema,
) -> Result<Vec<Route>, SpannedError> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let span = value.span();
    let tables = match value.into_inner() {
        DeValue::Array(tables) => tables,
        // Not `[[route]]` tables: serde says what it is instead.
        other => return Err(refused::<Vec<IgnoredAny>>(Spanned::new(span, other))),
    };
    let mut routes: Vec<Route> = Vec::with_capacity(tables.len());
    for table in tables {
        let route = route(table, schema.kinds())?;
        if routes.iter().any(|r| r.path == route.path.get_ref().as_str()) {
            let message = format!("route path {:?} is declared twice", route.path.get_ref());
            return Err(SpannedError::at(route.path.span(), message));
        }
        let (path, (kind, value)) = (route.path.into_inner(), route.kind);
        let config = (kind.read)(KindValue::new(value, base))?;
        routes.push(Route { path, kind: kind.key, descriptors: kind.descriptors, config });
    }
    Ok(routes)
}

/// One `[[route]]` whose shape is checked: a path that starts with `/`, and one kind's key with
/// its value, not yet read.
struct RawRoute<'a> {
    path: Spanned<String>,
    kind: (KindReader, Spanned<DeValue<'a>>),
}

fn route<'a>(
    table: Spanned<DeValue<'a>>,
    kinds: &[KindReader],
) -> Result<RawRoute<'a>, SpannedError> {
    let span = table.span();
    let table = match table.into_inner() {
        DeValue::Table(table) => table,
        other => return Err(refused::<BTreeMap<String, IgnoredAny>>(Spanned::new(span, other))),
    };
    let mut path = None;
    let mut given = Vec::with_capacity(1);
    for (key, value) in table {
        if key.get_ref() == "path" {
            path = Some(Spanned::<String>::deserialize(ValueDeserializer::from(value))?);
        } else if let Some(kind) = kinds.iter().find(|k| k.key == key.get_ref()) {
            given.push((*kind, value));
        } else {
            let expected: Vec<&str> =
                std::iter::once("path").chain(kinds.iter().map(|k| k.key)).collect();
            return Err(SpannedError::at(key.span(), unknown_field(key.get_ref(), &expected)));
        }
    }
    let Some(path) = path else {
        return Err(SpannedError::at(span, "missing field `path`".into()));
    };
    if !path.get_ref().starts_with('/') {
        let message = format!("route path {:?} must start with /", path.get_ref());
        return Err(SpannedError::at(path.span(), message));
    }
    let keys: Vec<&str> = kinds.iter().map(|k| k.key).collect();
    if given.len() > 1 {
        let message =
            format!("route {:?} has two actions: give {}", path.get_ref(), one_of(&keys, "either"));
        return Err(SpannedError::at(span, message));
    }
    let Some(kind) = given.pop() else {
        let message =
            format!("route {:?} has no action: give {}", path.get_ref(), one_of(&keys, ""));
        return Err(SpannedError::at(span, message));
    };
    Ok(RawRoute { path, kind })
}

/// The kinds a route may name, as a choice: `respond or static`, `either respond or static`,
/// `one of respond, static or wsgi`.
fn one_of(keys: &[&str], two: &str) -> String {
    match keys {
        [] => "an app kind: none is known here".into(),
        [one] => (*one).into(),
        [a, b] if two.is_empty() => format!("{a} or {b}"),
        [a, b] => format!("{two} {a} or {b}"),
        [rest @ .., last] => format!("one of {} or {last}", rest.join(", ")),
    }
}

/// The error serde gives for `value` where a `T` is expected.
fn refused<T: serde::de::DeserializeOwned>(value: Spanned<DeValue<'_>>) -> SpannedError {
    let span = value.span();
    match T::deserialize(ValueDeserializer::from(value)) {
        Err(e) => e.into(),
        Ok(_) => SpannedError::at(span, "expected [[route]] tables".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kinds_are_named_as_a_choice() {
        for (keys, none, two) in [
            (&["respond", "static"][..], "respond or static", "either respond or static"),
            (&["a", "b", "c"], "one of a, b or c", "one of a, b or c"),
            (&["a"], "a", "a"),
        ] {
            assert_eq!(one_of(keys, ""), none);
            assert_eq!(one_of(keys, "either"), two);
        }
    }
}
