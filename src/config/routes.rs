//! The `[[route]]` tables of the file: what the `forkserve` binary serves. Moved here as they
//! were; they are to become each app kind's own config keys.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::span::SpannedError;

/// One `[[route]]`: a path prefix and what to do with requests under it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// The path prefix. A prefix ending in `/` matches any path that starts with it; one that
    /// does not matches itself and the paths below it (`/api` matches `/api` and `/api/x`, not
    /// `/apix`).
    pub path: String,
    /// What the route does.
    #[serde(flatten)]
    pub action: Action,
}

/// What a route does with a request. Exactly one per route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Action {
    /// Answer with a fixed response.
    #[serde(rename = "respond")]
    Respond(Respond),
    /// Serve files from this directory (absolute, canonical).
    #[serde(rename = "static")]
    Static(PathBuf),
}

/// A fixed response, declared as a string (the body of a `200 text/plain`) or as a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Respond {
    /// The status code (200 to 599).
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
    /// The `Content-Type` header.
    pub content_type: HeaderValue,
    /// Further headers, in order of their names.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Serialize for Respond {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("status", &self.status.as_u16())?;
        map.serialize_entry("body", &String::from_utf8_lossy(&self.body))?;
        map.serialize_entry("content_type", self.content_type.to_str().unwrap_or_default())?;
        if !self.headers.is_empty() {
            let headers: BTreeMap<&str, &str> = self
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or_default()))
                .collect();
            map.serialize_entry("headers", &headers)?;
        }
        map.end()
    }
}

/// `respond` as written in the file: a string, or a table.
impl<'de> Deserialize<'de> for Respond {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Respond;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a string (the body) or a table { status, body, content_type, headers }",
                )
            }
            fn visit_str<E: de::Error>(self, body: &str) -> Result<Respond, E> {
                Ok(Respond {
                    status: StatusCode::OK,
                    body: Bytes::copy_from_slice(body.as_bytes()),
                    content_type: HeaderValue::from_static(TEXT_PLAIN),
                    headers: Vec::new(),
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Respond, M::Error> {
                let table = RespondTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                table.into_respond().map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RespondTable {
    #[serde(default = "default_status")]
    status: u16,
    #[serde(default)]
    body: String,
    #[serde(default = "default_content_type")]
    content_type: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn default_status() -> u16 {
    200
}

fn default_content_type() -> String {
    TEXT_PLAIN.into()
}

impl RespondTable {
    fn into_respond(self) -> Result<Respond, String> {
        if !(200..=599).contains(&self.status) {
            return Err(format!("status must be between 200 and 599, not {}", self.status));
        }
        let status = StatusCode::from_u16(self.status).map_err(|e| e.to_string())?;
        if matches!(self.status, 204 | 304) && !self.body.is_empty() {
            return Err(format!("a {} response cannot have a body", self.status));
        }
        let content_type = HeaderValue::from_str(&self.content_type)
            .map_err(|_| format!("invalid content_type {:?}", self.content_type))?;
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, value) in self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            if name == http::header::CONTENT_TYPE || name == http::header::CONTENT_LENGTH {
                return Err(format!("set {name} with content_type/body, not in headers"));
            }
            let value = HeaderValue::from_str(&value)
                .map_err(|_| format!("invalid value {value:?} for header {name}"))?;
            headers.push((name, value));
        }
        Ok(Respond { status, body: Bytes::from(self.body), content_type, headers })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    path: Spanned<String>,
    respond: Option<Respond>,
    #[serde(rename = "static")]
    static_dir: Option<Spanned<PathBuf>>,
}

/// Checks the routes as the file gives them, and resolves their `static` directories against
/// `base`, the config file's directory.
pub(super) fn routes(raw: Vec<Spanned<RawRoute>>, base: &Path) -> Result<Vec<Route>, SpannedError> {
    let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
    for spanned in raw {
        let span = spanned.span();
        let route = spanned.into_inner();
        let path_span = route.path.span();
        let path = route.path.into_inner();
        if !path.starts_with('/') {
            return Err(SpannedError::at(
                path_span,
                format!("route path {path:?} must start with /"),
            ));
        }
        if routes.iter().any(|r| r.path == path) {
            return Err(SpannedError::at(
                path_span,
                format!("route path {path:?} is declared twice"),
            ));
        }
        let action = match (route.respond, route.static_dir) {
            (Some(respond), None) => Action::Respond(respond),
            (None, Some(dir)) => Action::Static(static_root(base, dir)?),
            (Some(_), Some(_)) => {
                return Err(SpannedError::at(
                    span,
                    format!("route {path:?} has two actions: give either respond or static"),
                ));
            }
            (None, None) => {
                return Err(SpannedError::at(
                    span,
                    format!("route {path:?} has no action: give respond or static"),
                ));
            }
        };
        routes.push(Route { path, action });
    }
    Ok(routes)
}

/// Resolves a route's `static` directory: it must exist, be a directory, and be searchable by
/// this process (workers open files beneath it; without search permission every file would be
/// answered 403). Checked wherever a config is loaded, so `--check-config`, the first start and
/// a reload (`HUP`, refused, the serving workers kept) all catch a root that is missing or
/// cannot be used, rather than every new worker failing to boot.
fn static_root(base: &Path, dir: Spanned<PathBuf>) -> Result<PathBuf, SpannedError> {
    use nix::unistd::{AccessFlags, eaccess};
    let span = dir.span();
    let dir = base.join(dir.into_inner());
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
