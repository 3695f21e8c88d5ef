//! The value types of the `[tls]` table ([`TlsVersion`], [`SniPair`]), the scheme a `bind`
//! entry may be written with ([`Scheme`], [`Listen`]), and the pairs the master has loaded for
//! a config ([`Certificates`]). Each value type validates itself, on the command line
//! (`FromStr`) and in the file (`Deserialize`), as the other settings' do.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;
use toml::de::DeValue;

use super::Bind;
use crate::tls::Material;
use crate::tls::certs::Role;

/// `tls.min_version`: the oldest TLS version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl FromStr for TlsVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            _ => Err(format!("unknown TLS version {s:?}: expected \"1.2\" or \"1.3\"")),
        }
    }
}

impl<'de> Deserialize<'de> for TlsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::values::from_str(d, "\"1.2\" or \"1.3\"")
    }
}

impl Serialize for TlsVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        })
    }
}

/// One more certificate and key for SNI: `{ cert = "…", key = "…" }` in the file,
/// `CERT,KEY` on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SniPair {
    /// The PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, RSA or EC).
    pub key: PathBuf,
}

impl SniPair {
    /// Checks the `sni` list: no pair twice.
    pub(super) fn check_list(pairs: Vec<SniPair>) -> Result<Vec<SniPair>, String> {
        for (i, p) in pairs.iter().enumerate() {
            if pairs[..i].contains(p) {
                return Err(format!("certificate {} is listed twice", p.cert.display()));
            }
        }
        Ok(pairs)
    }
    /// Makes relative paths relative to `base`.
    pub(super) fn resolve_against(&mut self, base: &Path) {
        for p in [&mut self.cert, &mut self.key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

impl FromStr for SniPair {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(',') {
            Some((cert, key)) if !cert.is_empty() && !key.is_empty() => {
                Ok(SniPair { cert: cert.into(), key: key.into() })
            }
            _ => Err(format!("invalid certificate pair {s:?}: expected CERT,KEY")),
        }
    }
}

/// How a `bind` entry's connections are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Scheme {
    /// Written bare: TLS when `[tls] cert` is set, else cleartext.
    #[default]
    Default,
    /// `http://ADDR`: cleartext even under `[tls]` (port 80's redirects, ACME http-01).
    Http,
    /// `https://ADDR`: TLS; an error without `[tls] cert`.
    Https,
}

/// A `bind` entry: the address, and the scheme it was written with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Listen {
    /// How its connections are served.
    pub scheme: Scheme,
    /// The socket's address. The same socket whatever the scheme: a reload that changes only
    /// the scheme keeps the socket and its queue.
    pub bind: Bind,
}

impl Listen {
    /// Whether this entry serves TLS, given whether `[tls]` has a certificate.
    pub fn is_tls(&self, tls_on: bool) -> bool {
        match self.scheme {
            Scheme::Default => tls_on,
            Scheme::Http => false,
            Scheme::Https => true,
        }
    }
}

impl From<Bind> for Listen {
    fn from(bind: Bind) -> Self {
        Listen { scheme: Scheme::Default, bind }
    }
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (scheme, rest) = if let Some(rest) = s.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = s.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else {
            (Scheme::Default, s)
        };
        Ok(Listen { scheme, bind: rest.parse()? })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::Default => write!(f, "{}", self.bind),
            Scheme::Http => write!(f, "http://{}", self.bind),
            Scheme::Https => write!(f, "https://{}", self.bind),
        }
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Checked inside the visitor, so that the error points at the entry, not its list.
        super::values::from_str(
            d,
            "an address: HOST:PORT, [IPV6]:PORT, unix:/path/to.sock, or one of them after http:// or https://",
        )
    }
}

impl Serialize for Listen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The pairs the master loaded and checked for a config's `[tls]`, shared by its workers
/// (inherited at fork). Two configs are equal here when they hold the very same load: a
/// reload loads the files again.
#[derive(Debug, Clone, Default)]
pub(crate) struct Certificates(pub(crate) Option<Arc<Material>>);

impl PartialEq for Certificates {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

/// Where the file named each `[tls]` path: the path (as resolved) and its `line:col`, so that
/// an error about the file can point at the setting that named it. Not part of the config's
/// meaning: two configs that differ only here are equal.
#[derive(Debug, Clone, Default)]
pub(crate) struct Places(Vec<(&'static str, Role, PathBuf, (usize, usize))>);

impl PartialEq for Places {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Places {
    /// Reads the places from the file's `[tls]` table, as parsed (before it is deserialized);
    /// `line_col` turns a byte offset into the text's `line:col`.
    pub(super) fn read(
        tls: Option<&Spanned<DeValue<'_>>>,
        base: &Path,
        line_col: impl Fn(usize) -> (usize, usize),
    ) -> Places {
        let mut found = Vec::new();
        let Some(DeValue::Table(table)) = tls.map(Spanned::get_ref) else { return Places(found) };
        let mut path = |setting, role, value: Option<&Spanned<DeValue<'_>>>| {
            if let Some(v) = value {
                if let DeValue::String(s) = v.get_ref() {
                    found.push((setting, role, base.join(&**s), line_col(v.span().start)));
                }
            }
        };
        path("tls.cert", Role::Cert, table.get("cert"));
        path("tls.key", Role::Key, table.get("key"));
        if let Some(DeValue::Array(pairs)) = table.get("sni").map(Spanned::get_ref) {
            for pair in pairs {
                if let DeValue::Table(pair) = pair.get_ref() {
                    path("tls.sni", Role::Cert, pair.get("cert"));
                    path("tls.sni", Role::Key, pair.get("key"));
                }
            }
        }
        Places(found)
    }

    /// The setting that named `file` as a pair's `role`, and where, if the file named it.
    pub(crate) fn of(&self, role: Role, file: &Path) -> Option<(&'static str, (usize, usize))> {
        let found = self.0.iter().find(|(_, r, p, _)| *r == role && p == file);
        found.map(|(setting, _, _, at)| (*setting, *at))
    }
}
