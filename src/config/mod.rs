//! The configuration: the TOML schema, its defaults, its validation, the flags that override
//! it, and errors that point at `file:line:col`.
//!
//! Each setting is declared once, in `settings`: its key, type, default, docs, check, flag and
//! `--help` text. The `settings!` macro (`declare`) writes from those the table structs
//! ([`ServerConfig`], [`HttpConfig`], [`Http2Config`], [`LogConfig`], [`MetricsConfig`]), how the file fills
//! them, and the [`Overrides`] the command line fills; tests hold `config/app.toml` and the
//! README to the declarations.
//!
//! What else a file may hold is given to the loader as a [`Schema`] (`schema`): the app kinds a
//! `[[route]]` can name, each declaring its key and how its value is read in its own module
//! under `app/` (this module names no kind), and the tables a program built on the library
//! declares for itself ([`Config::table`]). Their values are held as the types that read them
//! (`held`).
//!
//! Loading is two steps. [`serde`] turns the text into typed values; the value types
//! (`values`: [`Bind`], [`Workers`], [`Seconds`], [`LogLevel`], [`LogFormat`],
//! [`UpgradeMode`]; and [`AllowList`]) and each setting's check validate while they are
//! deserialized, so the `toml` crate attaches the span of the offending value to their errors
//! (`span`). What needs context that serde does not have (one app kind per route, a path
//! declared twice, a `static` directory relative to the config file) is checked against the
//! spans the `toml` crate keeps.
//!
//! | module | owns |
//! |---|---|
//! | `settings` | every setting's declaration, and the checks they name |
//! | `declare` | the `settings!` macro, and the readers of a flag's text and a file's value |
//! | `values` | the value types: seconds, worker count, bind address, log level, upgrade mode |
//! | `allow_list` | [`AllowList`]: trusted peers |
//! | `schema` | [`Schema`]: the app kinds' config halves, a program's own tables |
//! | `routes` | the `[[route]]` tables: a path and one app kind's key |
//! | `held` | a value of a type declared outside this module, printed and compared as TOML |
//! | `source` | reading the file safely; [`ConfigSource`], the file plus the flags |
//! | `span` | errors at a byte range, then at `file:line:col` |
//!
//! Relative paths in a file are relative to that file's directory; relative paths on the
//! command line are relative to the current directory (see [`crate::cli`]).

mod allow_list;
mod checks;
mod declare;
mod held;
mod python;
mod routes;
mod schema;
mod settings;
mod source;
mod span;
mod tls;
mod values;

use std::path::Path;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;
use toml::de::DeTable;

pub use self::allow_list::AllowList;
pub(crate) use self::allow_list::canonical;
pub use self::checks::{MAX_REQUEST_FIELDS, MIN_TIMEOUT};
pub use self::python::{EnvVar, PythonApp};
pub use self::routes::Route;
pub use self::schema::Schema;
pub(crate) use self::schema::{KindReader, KindValue, RouteKind};
pub use self::settings::{
    Http2Config, HttpConfig, LogConfig, MetricsConfig, Overrides, PythonConfig, ServerConfig,
    TlsConfig,
};
pub use self::source::{ConfigSource, MAX_CONFIG_BYTES};
pub(crate) use self::span::SpannedError;
pub(crate) use self::tls::Certificates;
pub use self::tls::{Listen, Scheme, SniPair, TlsVersion};
pub use self::values::{Bind, LogFormat, LogLevel, MAX_WORKERS, Seconds, UpgradeMode, Workers};
pub use crate::access_format::AccessFormat;

#[cfg(test)]
pub(crate) use self::declare::Setting;
use self::held::Held;
use self::schema::unknown_field;
#[cfg(test)]
pub(crate) use self::settings::SETTINGS;
use self::source::read_config;
use crate::error::Error;

/// The whole effective configuration of a server: what the master needs to bind and supervise,
/// the routes of the TOML-declared app, and the tables a program declared for itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// Process model: listening sockets, worker count, timeouts.
    pub server: ServerConfig,
    /// What a request must be to reach the app: limits and timeouts.
    pub http: HttpConfig,
    /// HTTP/2's own settings.
    pub http2: Http2Config,
    /// Logging.
    pub log: LogConfig,
    /// How the workers run Python apps.
    pub python: PythonConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// HTTPS.
    pub tls: TlsConfig,
    /// The routes the `forkserve` binary serves. Library apps may ignore them.
    pub routes: Vec<Route>,
    /// The program's own tables (see [`Config::table`]), in the order it declared them.
    tables: Vec<(&'static str, Held)>,
    /// `[tls]`'s pairs as the master loaded and checked them ([`Config::load_tls`]).
    pub(crate) certificates: Certificates,
    /// Where the file named `[tls]`'s paths, for errors about them.
    tls_places: tls::Places,
}

/// The file's own tables, with the program's and the routes taken out (see [`Config::parse`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    http: HttpConfig,
    #[serde(default)]
    http2: Http2Config,
    #[serde(default)]
    python: PythonConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    metrics: MetricsConfig,
    #[serde(default)]
    tls: TlsConfig,
}

/// Whether an access log path (`[log] access`) means stdout: `-`.
pub(crate) fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

impl Config {
    /// Reads and validates the config file at `path`: a regular file of at most
    /// [`MAX_CONFIG_BYTES`], holding forkserve's tables and those `schema` knows.
    pub fn load(path: &Path, schema: &Schema) -> Result<Config, Error> {
        let text = read_config(path)
            .map_err(|source| Error::ConfigRead { path: path.to_path_buf(), source })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &base, schema).map_err(|e| Error::Config(e.in_file(path, &text)))
    }

    /// Parses and validates config text; relative paths are taken from `base`.
    pub fn from_toml(text: &str, base: &Path, schema: &Schema) -> Result<Config, Error> {
        Config::parse(text, base, schema)
            .map_err(|e| Error::Config(e.in_file(Path::new("<config>"), text)))
    }

    /// Forkserve's own tables go through serde as one struct, which rejects an unknown key in
    /// them; the routes and the program's tables are taken out first and read with the
    /// schema, as they are only known at run time.
    fn parse(text: &str, base: &Path, schema: &Schema) -> Result<Config, SpannedError> {
        let document = DeTable::parse(text)?;
        let span = document.span();
        let mut document = document.into_inner();
        let names = schema.table_names();
        if let Some(key) = document.keys().find(|key| !names.iter().any(|n| *n == key.get_ref())) {
            return Err(SpannedError::at(key.span(), unknown_field(key.get_ref(), &names)));
        }
        let routes = document.remove("route");
        let tls_places =
            tls::Places::read(document.get("tls"), base, |at| span::line_col(text, at));
        let tables: Vec<_> = schema.tables().iter().map(|t| (t, document.remove(t.name))).collect();

        let raw =
            RawConfig::deserialize(toml::de::Deserializer::from(Spanned::new(span, document)))?;
        let mut server = raw.server;
        for listen in &mut server.bind {
            listen.bind.resolve_against(base);
        }
        if let Some(pidfile) = &mut server.pidfile {
            if pidfile.is_relative() {
                *pidfile = base.join(&*pidfile);
            }
        }
        let mut log = raw.log;
        if let Some(file) = &mut log.file {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        if let Some(access) = &mut log.access {
            if access.is_relative() && !is_stdout(access) {
                *access = base.join(&*access);
            }
        }
        let mut python = raw.python;
        python.resolve_against(base);
        let mut metrics = raw.metrics;
        if let Some(bind) = &mut metrics.bind {
            bind.resolve_against(base);
        }
        let routes = routes::routes(routes, base, schema)?;
        let tables = tables
            .into_iter()
            .map(|(table, value)| Ok((table.name, (table.read)(value)?)))
            .collect::<Result<_, SpannedError>>()?;
        let mut tls = raw.tls;
        for path in [&mut tls.cert, &mut tls.key].into_iter().flatten() {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        for pair in &mut tls.sni {
            pair.resolve_against(base);
        }
        let certificates = Certificates::default();
        Ok(Config {
            server,
            http: raw.http,
            http2: raw.http2,
            log,
            python,
            metrics,
            tls,
            routes,
            tables,
            certificates,
            tls_places,
        })
    }

    /// The program's table `[name]`, as the `T` it was declared with (see
    /// [`Program::table`](crate::Program::table)); `None` if it declared no such table, or
    /// declared it with another type. A declared table is always there, read and checked: from
    /// its defaults if the file has none.
    pub fn table<T: 'static>(&self, name: &str) -> Option<&T> {
        self.tables.iter().find(|(n, _)| *n == name).and_then(|(_, held)| held.get())
    }

    /// The descriptors each worker keeps open for the routes (a `static` route keeps its
    /// directory open), for the master's open-files warning.
    pub(crate) fn route_descriptors(&self) -> usize {
        self.routes.iter().map(Route::descriptors).sum()
    }

    /// Loads and checks `[tls]`'s pairs (see [`crate::tls`]), for the workers to serve. The
    /// error names the file, and where the config file named it (`line`, `column`), if it
    /// did (not a flag). The master calls it with every config it loads, before it binds or
    /// forks anything with it.
    pub(crate) fn load_tls(&mut self) -> Result<(), (Option<(usize, usize)>, String)> {
        let t = &self.tls;
        let spec = crate::tls::Spec {
            cert: t.cert.as_deref(),
            key: t.key.as_deref(),
            sni: t.sni.iter().map(|p| (p.cert.as_path(), p.key.as_path())).collect(),
            tls13_only: t.min_version == TlsVersion::Tls13,
            session_tickets: t.session_tickets,
            http2: t.http2,
        };
        let material =
            crate::tls::Material::load(&spec, std::time::SystemTime::now()).map_err(|e| match e
                .file()
                .and_then(|(role, f)| self.tls_places.of(role, f))
            {
                Some((setting, at)) => (Some(at), format!("{setting}: {e}")),
                None => (None, format!("[tls]: {e}")),
            })?;
        if material.is_none() && self.server.bind.iter().any(|l| l.scheme == Scheme::Https) {
            return Err((None, "bind: an https:// address needs [tls] cert and key".into()));
        }
        self.certificates = Certificates(material.map(std::sync::Arc::new));
        Ok(())
    }

    /// `[tls]`'s checked pairs, if it has any.
    pub(crate) fn tls_material(&self) -> Option<&std::sync::Arc<crate::tls::Material>> {
        self.certificates.0.as_ref()
    }

    /// The config as TOML, for `--print-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config always serializes")
    }
}

/// As the file writes it: forkserve's tables, the routes, then the program's tables.
impl Serialize for Config {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut config = s.serialize_struct("Config", 7 + self.tables.len())?;
        config.serialize_field("server", &self.server)?;
        config.serialize_field("http", &self.http)?;
        config.serialize_field("http2", &self.http2)?;
        config.serialize_field("log", &self.log)?;
        config.serialize_field("python", &self.python)?;
        config.serialize_field("metrics", &self.metrics)?;
        config.serialize_field("tls", &self.tls)?;
        if self.routes.is_empty() {
            config.skip_field("route")?;
        } else {
            config.serialize_field("route", &self.routes)?;
        }
        for (name, table) in &self.tables {
            config.serialize_field(name, table)?;
        }
        config.end()
    }
}

#[cfg(test)]
mod tests;
