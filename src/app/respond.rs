//! The `respond` app kind: a fixed response (status, body, headers), whatever the request. Its
//! config half: `respond = "body"` (a `200 text/plain`), or a table `{ status, body,
//! content_type, headers }`, checked as it is read.

use std::collections::BTreeMap;
use std::fmt;
use std::io;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::Body;
use super::kind::{AppKind, Kind, Matched, Methods, Reply};
use crate::config::{KindValue, RouteKind, SpannedError};

impl RouteKind for Respond {
    const KEY: &'static str = "respond";
    type Config = Respond;

    fn read(value: KindValue<'_>) -> Result<Respond, SpannedError> {
        value.read()
    }
}

impl Kind for Respond {
    fn serve(config: &Respond) -> io::Result<Box<dyn AppKind>> {
        Ok(Box::new(config.clone()))
    }
}

impl AppKind for Respond {
    fn methods(&self) -> Methods {
        // It answers any method; `Allow` names the standard ones it would.
        Methods::ANY
    }

    fn call(&self, _req: Request<Incoming>, _at: Matched) -> Reply {
        respond(self).into()
    }
}

/// The response `r` declares.
pub(super) fn respond(r: &Respond) -> Response<Body> {
    let mut response = Response::new(Body::from(r.body.clone()));
    *response.status_mut() = r.status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, r.content_type.clone());
    for (name, value) in &r.headers {
        headers.append(name.clone(), value.clone());
    }
    response
}

/// A fixed response, declared as a string (the body of a `200 text/plain`) or as a table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Respond {
    /// The status code (200 to 599).
    pub(crate) status: StatusCode,
    /// The body.
    pub(crate) body: Bytes,
    /// The `Content-Type` header.
    pub(crate) content_type: HeaderValue,
    /// Further headers, in order of their names.
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
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
