//! What a config file may hold beyond forkserve's own `[server]`, `[http]` and `[log]`: the app
//! kinds a `[[route]]` can name, and the tables a program built on the library declares for
//! itself. The loader is given a [`Schema`] with both; the config module names no kind and no
//! program.
//!
//! An app kind brings its config half as a [`RouteKind`]: its key in a `[[route]]` (`respond`,
//! `static`), and how the key's value is read and checked. Each kind's module under `app/`
//! implements it, beside the handler that serves the routes; the route holds the checked value
//! (see [`Route`](super::Route)) until the router hands it back to that kind. A program's table
//! is any serde type; it is read with the same `file:line:col` errors, so `#[serde(
//! deny_unknown_fields)]` on it rejects a typo there as forkserve does in its own tables.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::held::Held;
use super::span::SpannedError;

/// The config half of an app kind: its key in a `[[route]]`, and how the key's value is read
/// and checked. The route holds the value it reads (see [`Route::config`](super::Route)).
pub(crate) trait RouteKind: 'static {
    /// The key in a `[[route]]` table that names this kind: `respond`.
    const KEY: &'static str;
    /// How many descriptors each worker keeps open for one route of this kind (a `static`
    /// route keeps its directory open), for the master's open-files warning.
    const DESCRIPTORS: usize = 0;
    /// What a route of this kind holds once read and checked: what its handler is built from.
    type Config: Serialize + fmt::Debug + Send + Sync + 'static;
    /// Reads and checks the key's value. What `--print-config` prints of the result (its
    /// `Serialize`) must read back as the same value.
    fn read(value: KindValue<'_>) -> Result<Self::Config, SpannedError>;
}

/// The value of a kind's key in one `[[route]]`, as the file gives it.
pub(crate) struct KindValue<'a> {
    value: Spanned<DeValue<'a>>,
    base: &'a Path,
}

impl<'a> KindValue<'a> {
    pub(super) fn new(value: Spanned<DeValue<'a>>, base: &'a Path) -> Self {
        KindValue { value, base }
    }

    /// Where the value is in the file, for errors found once it is read.
    pub(crate) fn span(&self) -> Range<usize> {
        self.value.span()
    }

    /// The config file's directory, which relative paths are taken from.
    pub(crate) fn base(&self) -> &'a Path {
        self.base
    }

    /// Reads the value as a `T`; errors, including those of `T`'s own checks, point into it.
    pub(crate) fn read<T: DeserializeOwned>(self) -> Result<T, SpannedError> {
        Ok(T::deserialize(ValueDeserializer::from(self.value))?)
    }
}

/// A kind's config half as the loader keeps it: made by [`KindReader::of`], for any
/// [`RouteKind`].
#[derive(Clone, Copy)]
pub(crate) struct KindReader {
    pub(super) key: &'static str,
    pub(super) descriptors: usize,
    pub(super) read: fn(KindValue<'_>) -> Result<Held, SpannedError>,
}

impl KindReader {
    /// The reader of kind `K`.
    pub(crate) const fn of<K: RouteKind>() -> KindReader {
        KindReader { key: K::KEY, descriptors: K::DESCRIPTORS, read: read_kind::<K> }
    }

    /// The key it reads.
    pub(crate) fn key(&self) -> &'static str {
        self.key
    }
}

fn read_kind<K: RouteKind>(value: KindValue<'_>) -> Result<Held, SpannedError> {
    let span = value.span();
    let config = K::read(value)?;
    Held::new(config).map_err(|e| SpannedError::at(span, format!("{}: {e}", K::KEY)))
}

/// Reads a program's table, or its defaults when the file has none.
type ReadTable = dyn Fn(Option<Spanned<DeValue<'_>>>) -> Result<Held, SpannedError> + Send + Sync;

/// A program's own table.
#[derive(Clone)]
pub(super) struct TableReader {
    pub(super) name: &'static str,
    pub(super) read: Arc<ReadTable>,
}

/// What a config file may hold beyond forkserve's own tables: the app kinds its `[[route]]`s
/// can name, and a program's own tables.
///
/// `Schema::default()` knows neither: a `[[route]]` is refused. A [`Program`](crate::Program)
/// knows forkserve's app kinds and the tables it declares ([`Program::schema`](
/// crate::Program::schema)). [`ConfigSource`](super::ConfigSource) carries the schema it was
/// made with, so that a reload reads the file as the start did.
#[derive(Clone, Default)]
pub struct Schema {
    kinds: Vec<KindReader>,
    tables: Vec<TableReader>,
}

/// The tables forkserve itself reads; a program's table may not take one of their names.
pub(super) const OWN_TABLES: [&str; 8] =
    ["server", "http", "http2", "log", "python", "metrics", "tls", "route"];

impl Schema {
    /// Adds the app kinds `[[route]]`s may name.
    pub(crate) fn with_kinds(mut self, kinds: impl IntoIterator<Item = KindReader>) -> Schema {
        for kind in kinds {
            assert!(
                kind.key != "path" && self.kinds.iter().all(|k| k.key != kind.key),
                "app kind {:?} declared twice",
                kind.key
            );
            self.kinds.push(kind);
        }
        self
    }

    /// Declares a table of the program's own, `[name]`, read as a `T` and then checked by
    /// `check` (see [`Program::table_checked`](crate::Program::table_checked)). Panics if
    /// `name` is forkserve's, declared already, or not a bare TOML key (`[a.b]` would be a
    /// table `b` inside a table `a`): a mistake in the program, not in its config.
    pub(crate) fn table_checked<T>(
        mut self,
        name: &'static str,
        check: impl Fn(&T) -> Result<(), String> + Send + Sync + 'static,
    ) -> Schema
    where
        T: DeserializeOwned + Serialize + fmt::Debug + Send + Sync + 'static,
    {
        assert!(
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "table name {name:?} is not a bare TOML key (letters, digits, _ and -)"
        );
        assert!(!OWN_TABLES.contains(&name), "[{name}] is a table of forkserve's own");
        assert!(self.tables.iter().all(|t| t.name != name), "table [{name}] declared twice");
        let read = move |value: Option<Spanned<DeValue<'_>>>| read_table(name, value, &check);
        self.tables.push(TableReader { name, read: Arc::new(read) });
        self
    }

    /// The app kinds `[[route]]`s may name.
    pub(super) fn kinds(&self) -> &[KindReader] {
        &self.kinds
    }

    /// The program's tables.
    pub(super) fn tables(&self) -> &[TableReader] {
        &self.tables
    }

    /// Every table the file may have, forkserve's first.
    pub(super) fn table_names(&self) -> Vec<&'static str> {
        OWN_TABLES.iter().copied().chain(self.tables.iter().map(|t| t.name)).collect()
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("kinds", &self.kinds.iter().map(|k| k.key).collect::<Vec<_>>())
            .field("tables", &self.tables.iter().map(|t| t.name).collect::<Vec<_>>())
            .finish()
    }
}

/// Reads table `[name]` as a `T` and checks it. A file without the table reads as an empty
/// one: a `T` whose fields all have defaults needs none, and one that needs a key says so.
fn read_table<T>(
    name: &str,
    value: Option<Spanned<DeValue<'_>>>,
    check: &dyn Fn(&T) -> Result<(), String>,
) -> Result<Held, SpannedError>
where
    T: DeserializeOwned + Serialize + fmt::Debug + Send + Sync + 'static,
{
    // Errors are at the table, or, for a table the file lacks, say so.
    let (value, span) = match value {
        Some(value) => {
            let span = value.span();
            (value, Some(span))
        }
        None => (Spanned::new(0..0, DeValue::Table(DeTable::new())), None),
    };
    let error = |message: String| match &span {
        Some(span) => SpannedError::at(span.clone(), message),
        None => SpannedError::unplaced(format!("no [{name}] table: {message}")),
    };
    // The program's code (its `Deserialize`, its check) runs in the master, at start and at
    // every reload: a panic there is the program's bug, answered as a refused config (a
    // refused reload keeps the old workers serving) rather than a dead master.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let table = T::deserialize(ValueDeserializer::from(value)).map_err(|e| match span {
            // serde's errors point into the table.
            Some(_) => SpannedError::from(e),
            None => error(e.message().to_string()),
        })?;
        check(&table).map_err(error)?;
        Ok::<T, SpannedError>(table)
    }));
    let table = match read {
        Ok(read) => read?,
        Err(_) => return Err(error(format!("[{name}]: the program panicked reading it"))),
    };
    let held = Held::new(table).map_err(|e| error(format!("[{name}] {e}")))?;
    if !held.written().is_table() {
        return Err(error(format!(
            "[{name}] must be written as a table, not as {}",
            held.written()
        )));
    }
    Ok(held)
}

/// serde's words for a key no one expects: `unknown field `x`, expected one of `a`, `b``.
pub(super) fn unknown_field(key: &str, expected: &[&str]) -> String {
    let quoted: Vec<String> = expected.iter().map(|name| format!("`{name}`")).collect();
    match quoted.as_slice() {
        [] => format!("unknown field `{key}`, there are no fields"),
        [one] => format!("unknown field `{key}`, expected {one}"),
        [a, b] => format!("unknown field `{key}`, expected {a} or {b}"),
        all => format!("unknown field `{key}`, expected one of {}", all.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_is_told_in_serdes_words() {
        use serde::de::Error;
        let serde = |expected: &'static [&'static str]| {
            toml::de::Error::unknown_field("x", expected).message().to_string()
        };
        for expected in [&[][..], &["a"], &["a", "b"], &["a", "b", "c"]] {
            assert_eq!(unknown_field("x", expected), serde(expected), "{expected:?}");
        }
    }
}
