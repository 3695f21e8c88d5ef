//! The configuration: the TOML schema, its defaults, its validation, the flags that override
//! it, and errors that point at `file:line:col`.
//!
//! Each setting is declared once, in `settings`: its key, type, default, docs, check, flag and
//! `--help` text. The `settings!` macro (`declare`) writes from those the table structs
//! ([`ServerConfig`], [`HttpConfig`], [`LogConfig`]), how the file fills them, and the
//! [`Overrides`] the command line fills; tests hold `config/app.toml` and the README to the
//! declarations.
//!
//! Loading is two steps. [`serde`] turns the text into typed values; the value types
//! (`values`: [`Bind`], [`Workers`], [`Seconds`], [`LogLevel`], [`UpgradeMode`]; and
//! [`AllowList`]) and each setting's check validate while they are deserialized, so the `toml`
//! crate attaches the span of the offending value to their errors (`span`). What needs context
//! that serde does not have (a `static` directory relative to the config file, one action per
//! route: `routes`) is checked afterwards against [`toml::Spanned`] values.
//!
//! | module | owns |
//! |---|---|
//! | `settings` | every setting's declaration, and the checks they name |
//! | `declare` | the `settings!` macro, and the readers of a flag's text and a file's value |
//! | `values` | the value types: seconds, worker count, bind address, log level, upgrade mode |
//! | `allow_list` | [`AllowList`]: trusted peers |
//! | `routes` | the `[[route]]` tables |
//! | `source` | reading the file safely; [`ConfigSource`], the file plus the flags |
//! | `span` | errors at a byte range, then at `file:line:col` |
//!
//! Relative paths in a file are relative to that file's directory; relative paths on the
//! command line are relative to the current directory (see [`crate::cli`]).

mod allow_list;
mod declare;
mod routes;
mod settings;
mod source;
mod span;
mod values;

use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use self::allow_list::AllowList;
pub(crate) use self::allow_list::canonical;
pub use self::routes::{Action, Respond, Route};
pub use self::settings::{
    HttpConfig, LogConfig, MAX_REQUEST_FIELDS, MIN_TIMEOUT, Overrides, ServerConfig,
};
pub use self::source::{ConfigSource, MAX_CONFIG_BYTES};
pub use self::values::{Bind, LogLevel, MAX_WORKERS, Seconds, UpgradeMode, Workers};

use self::routes::RawRoute;
use self::source::read_config;
use self::span::SpannedError;
use crate::error::Error;

/// The whole effective configuration of a server: what the master needs to bind and supervise,
/// and the routes of the TOML-declared app.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Config {
    /// Process model: listening sockets, worker count, timeouts.
    pub server: ServerConfig,
    /// What a request must be to reach the app: limits and timeouts.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// The routes the `forkserve` binary serves. Library apps may ignore them.
    #[serde(rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// The file as written, before the checks that need the file's location.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    http: HttpConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default, rename = "route")]
    routes: Vec<Spanned<RawRoute>>,
}

impl Config {
    /// Reads and validates the config file at `path`: a regular file of at most
    /// [`MAX_CONFIG_BYTES`].
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = read_config(path)
            .map_err(|source| Error::ConfigRead { path: path.to_path_buf(), source })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &base).map_err(|e| Error::Config(e.in_file(path, &text)))
    }

    /// Parses and validates config text; relative paths are taken from `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, Error> {
        Config::parse(text, base).map_err(|e| Error::Config(e.in_file(Path::new("<config>"), text)))
    }

    fn parse(text: &str, base: &Path) -> Result<Config, SpannedError> {
        let raw: RawConfig = toml::from_str(text)?;
        let mut server = raw.server;
        for bind in &mut server.bind {
            bind.resolve_against(base);
        }
        if let Some(pidfile) = &mut server.pidfile {
            if pidfile.is_relative() {
                *pidfile = base.join(&*pidfile);
            }
        }
        let routes = routes::routes(raw.routes, base)?;
        Ok(Config { server, http: raw.http, log: raw.log, routes })
    }

    /// The config as TOML, for `--print-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config always serializes")
    }
}

#[cfg(test)]
mod tests;
