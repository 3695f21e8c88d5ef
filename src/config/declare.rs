//! How one declaration per setting becomes the code around it: the `settings!` macro, and the
//! readers that turn a flag's text or the file's value into a setting's value.
//!
//! From the declarations in `settings` the macro writes, for each table, its struct (what the
//! rest of the crate reads), its defaults, and how the file fills it; and, for all tables, the
//! [`Overrides`](super::Overrides) that clap fills from the command line and the
//! [`apply`](super::Overrides::apply) that lays them over a config. A setting therefore cannot
//! be in the file and missing as a flag, or be checked in one and not the other.
//!
//! One check per setting, two places it runs. In the file, it runs inside the value's
//! deserializer, so that the `toml` crate attaches the value's span to the error
//! (`file:line:col`). On the command line, it runs in the flag's clap value parser, so that the
//! error is a usage error naming the flag; for a list (`--bind`, repeatable), once the whole
//! list is known, as `--bind: …`.

use std::fmt::Display;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer};

/// How a setting's value is written, in the file and on the command line, before the setting's
/// own check.
pub(crate) trait Read {
    /// What one flag argument gives: the value, or one item of a list.
    type Flag;
    /// What the file's value gives.
    type File;
    /// Reads a flag's argument.
    fn flag(text: &str) -> Result<Self::Flag, String>;
    /// Reads the file's value.
    fn file<'de, D: Deserializer<'de>>(d: D) -> Result<Self::File, D::Error>;
}

/// A value type that reads itself: `FromStr` on the command line, `Deserialize` in the file.
pub(crate) struct Typed<T>(PhantomData<T>);

impl<T> Read for Typed<T>
where
    T: FromStr + DeserializeOwned,
    T::Err: Display,
{
    type Flag = T;
    type File = T;

    fn flag(text: &str) -> Result<T, String> {
        text.parse().map_err(|e: T::Err| e.to_string())
    }

    fn file<'de, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::deserialize(d)
    }
}

/// A list: the file gives the whole list; each flag gives one item, and the flags together
/// replace the file's list.
pub(crate) struct List<T>(PhantomData<T>);

impl<T> Read for List<T>
where
    T: FromStr + DeserializeOwned,
    T::Err: Display,
{
    type Flag = T;
    type File = Vec<T>;

    fn flag(text: &str) -> Result<T, String> {
        Typed::<T>::flag(text)
    }

    fn file<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        Vec::<T>::deserialize(d)
    }
}

/// A count that may be 0: of requests, bytes, MiB. A negative one is refused as such.
pub(crate) struct Count;

impl Read for Count {
    type Flag = u64;
    type File = u64;

    fn flag(text: &str) -> Result<u64, String> {
        text.parse()
            .map_err(|_| format!("invalid count {text:?}: expected 0 or a positive integer"))
    }

    fn file<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let n = i64::deserialize(d)?;
        u64::try_from(n).map_err(|_| de::Error::custom(format!("expected 0 or more, not {n}")))
    }
}

/// An integer that the setting's check holds to a range. In the file, a negative one reads as
/// 0, which is out of every such range, so that the error is the check's, naming the range.
pub(crate) struct Ranged;

impl Read for Ranged {
    type Flag = u64;
    type File = u64;

    fn flag(text: &str) -> Result<u64, String> {
        Count::flag(text)
    }

    fn file<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let n = i64::deserialize(d)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// One setting as the file gives it: read, then checked. The macro implements it on a marker
/// type per setting, for [`FromFile`].
pub(crate) trait FileSetting {
    /// The setting's type.
    type Value;
    /// Reads and checks the file's value.
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self::Value, D::Error>;
}

/// A setting's value as read from the file: what the derived `Deserialize` of a table's file
/// view holds, so that serde still writes the unknown-field and wrong-type errors.
pub(crate) struct FromFile<S: FileSetting>(pub(crate) S::Value);

impl<'de, S: FileSetting> Deserialize<'de> for FromFile<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        S::read(d).map(FromFile)
    }
}

/// A declared setting, as the tests that hold `config/app.toml` and the README to the
/// declarations see it.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Setting {
    /// The table: `server`.
    pub table: &'static str,
    /// The key in its table: `max_requests`.
    pub key: &'static str,
    /// The flag's field in [`Overrides`](super::Overrides): `max_requests`, `log_level`.
    pub flag: &'static str,
    /// The short flag, if any.
    pub short: Option<char>,
    /// Another name for the long flag, if any.
    pub alias: Option<&'static str>,
    /// The name of the flag's value in `--help`.
    pub value_name: &'static str,
    /// How the flag lands on the setting: `value`, `list`, `switch` or `optional`.
    pub shape: &'static str,
}

#[cfg(test)]
impl Setting {
    /// The long flag, as typed: the field in kebab case.
    pub fn long(&self) -> String {
        format!("--{}", self.flag.replace('_', "-"))
    }
}

/// Declares every setting once; see the module docs for what it writes. Each setting reads:
///
/// ```text
/// /// Docs of the struct field (markdown, for rustdoc).
/// key: Type = default,
///     read Reader[, check check_fn],
///     flag #help_position field: shape[, short 'c'][, alias "name"], value "VALUE",
///     help "The flag's --help text (plain text, for the terminal)";
/// ```
///
/// `check_fn` takes what the reader gives and returns the setting's value or an error message.
/// The shape says how the flag lands on the setting: `value` (the flag's value replaces the
/// file's), `list` (the flag repeats; its values together replace the file's list, then the
/// check runs on them), `switch` (a bool; the flag alone means true) or `optional` (the
/// setting is an `Option`; the flag gives `Some`). The help position orders `--help`, which
/// lists the flags in their own order, not the tables'.
macro_rules! settings {
    // How the file's value is read and checked.
    (@file value $read:ty, $d:ident) => {
        <$read as $crate::config::declare::Read>::file($d)
    };
    (@file value $read:ty, $d:ident, $check:path) => {
        $check(<$read as $crate::config::declare::Read>::file($d)?)
            .map_err(serde::de::Error::custom)
    };
    (@file list $read:ty, $d:ident, $check:path) => {
        $check(<$read as $crate::config::declare::Read>::file($d)?)
            .map_err(serde::de::Error::custom)
    };
    (@file switch $read:ty, $d:ident) => {
        <$read as $crate::config::declare::Read>::file($d)
    };
    (@file optional $read:ty, $d:ident) => {
        <$read as $crate::config::declare::Read>::file($d).map(Some)
    };

    // How a flag's value is read and checked, in clap's value parser.
    (@flag $read:ty, $text:ident) => {
        <$read as $crate::config::declare::Read>::flag($text)
    };
    (@flag $read:ty, $text:ident, $check:path) => {
        $check(<$read as $crate::config::declare::Read>::flag($text)?)
    };

    // How a flag lands on the config. A single value was checked by its value parser already;
    // a list is checked here, once all its flags are known.
    (@apply value $flag:ident, $given:expr => $setting:expr $(, $check:path)?) => {
        if let Some(value) = &$given {
            $setting = value.clone();
        }
    };
    (@apply switch $flag:ident, $given:expr => $setting:expr) => {
        if let Some(value) = &$given {
            $setting = *value;
        }
    };
    (@apply optional $flag:ident, $given:expr => $setting:expr) => {
        if let Some(value) = &$given {
            $setting = Some(value.clone());
        }
    };
    (@apply list $flag:ident, $given:expr => $setting:expr, $check:path) => {
        if !$given.is_empty() {
            $setting = $check($given.clone()).map_err(|e| {
                $crate::error::Error::Usage(format!(
                    "--{}: {e}",
                    stringify!($flag).replace('_', "-")
                ))
            })?;
        }
    };

    (@option) => { None };
    (@option $value:literal) => { Some($value) };

    // The `Overrides` struct, one field per flag: clap's derive reads each field's type
    // (`Option<T>`, `Vec<T>`) as written, so the type is settled here, shape by shape.
    (@overrides [$($fields:tt)*]) => {
        /// Settings given on the command line, applied over whatever the file says. Each flag
        /// is the config key in kebab case (`max_requests` is `--max-requests`).
        #[derive(Debug, Clone, Default, PartialEq, clap::Args)]
        pub struct Overrides {
            $($fields)*
        }
    };
    (@overrides [$($fields:tt)*]
        $shape:ident $flag:ident: $ty:ty, $Table:ident.$key:ident, $read:ty, [$($check:path)?],
        $order:literal, [$($short:literal)?], [$($alias:literal)?], $value_name:literal,
        $help:literal;
        $($rest:tt)*
    ) => {
        $crate::config::declare::settings! { @shape $shape $ty, $read, [$($check)?] =>
            [$($fields)*] $flag, $Table.$key, $order, [$($short)?], [$($alias)?], $value_name,
            $help; $($rest)*
        }
    };
    // What each shape adds to its flag: the field's type, and clap's settings beyond those
    // every flag has.
    (@shape value $ty:ty, $read:ty, [$($check:path)?] => $($field:tt)*) => {
        $crate::config::declare::settings! { @field Option<$ty>, [
            value_parser = |text: &str| -> Result<$ty, String> {
                $crate::config::declare::settings!(@flag $read, text $(, $check)?)
            },
        ] $($field)* }
    };
    (@shape list $ty:ty, $read:ty, [$check:path] => $($field:tt)*) => {
        $crate::config::declare::settings! { @field $ty, [
            value_parser = |text: &str| <$read as $crate::config::declare::Read>::flag(text),
        ] $($field)* }
    };
    (@shape switch $ty:ty, $read:ty, [] => $($field:tt)*) => {
        $crate::config::declare::settings! { @field Option<$ty>, [
            num_args = 0..=1, default_missing_value = "true",
        ] $($field)* }
    };
    (@shape optional $ty:ty, $read:ty, [] => $($field:tt)*) => {
        $crate::config::declare::settings! { @field $ty, [] $($field)* }
    };
    (@field $fty:ty, [$($extra:tt)*] [$($fields:tt)*] $flag:ident, $Table:ident.$key:ident,
        $order:literal, [$($short:literal)?], [$($alias:literal)?], $value_name:literal,
        $help:literal; $($rest:tt)*
    ) => {
        $crate::config::declare::settings! { @overrides [$($fields)*
            #[doc = concat!("Overrides [`", stringify!($Table), "::", stringify!($key), "`].")]
            #[arg(
                long, $(short = $short,)? $(visible_alias = $alias,)? value_name = $value_name,
                display_order = $order, help = $help, $($extra)*
            )]
            pub $flag: $fty,
        ] $($rest)* }
    };

    // The declarations.
    ($(
        $(#[$table_attr:meta])*
        [$table:ident] $Table:ident {
            $(
                $(#[$attr:meta])*
                $key:ident: $ty:ty = $default:expr,
                read $read:ty $(, check $check:path)?,
                flag #$order:literal $flag:ident: $shape:ident
                    $(, short $short:literal)? $(, alias $alias:literal)?,
                    value $value_name:literal,
                help $help:literal;
            )*
        }
    )*) => {
        $(
            $(#[$table_attr])*
            #[derive(Debug, Clone, PartialEq, serde::Serialize)]
            pub struct $Table {
                $(
                    $(#[$attr])*
                    pub $key: $ty,
                )*
            }

            impl Default for $Table {
                fn default() -> Self {
                    $Table { $($key: $default,)* }
                }
            }

            impl<'de> serde::Deserialize<'de> for $Table {
                fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    let file = <$table::$Table as serde::Deserialize>::deserialize(d)?;
                    let mut table = $Table::default();
                    $(
                        if let Some(value) = file.$key {
                            table.$key = value.0;
                        }
                    )*
                    Ok(table)
                }
            }

            /// The table as the file writes it: serde's derive names unknown keys and wrong
            /// types as usual, and each key present is read and checked by its setting's
            /// marker type (the key's own name).
            #[allow(non_camel_case_types)]
            mod $table {
                use super::*;

                #[derive(serde::Deserialize, Default)]
                #[serde(deny_unknown_fields, default)]
                pub(super) struct $Table {
                    $(pub(super) $key: Option<$crate::config::declare::FromFile<$key>>,)*
                }

                $(
                    pub(super) enum $key {}

                    impl $crate::config::declare::FileSetting for $key {
                        type Value = $ty;

                        fn read<'de, D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                            $crate::config::declare::settings!(@file $shape $read, d $(, $check)?)
                        }
                    }
                )*
            }
        )*

        $crate::config::declare::settings! { @overrides [] $($(
            $shape $flag: $ty, $Table.$key, $read, [$($check)?], $order, [$($short)?],
            [$($alias)?], $value_name, $help;
        )*)* }

        impl Overrides {
            /// Applies the overrides to a config read from a file.
            pub fn apply(&self, config: &mut Config) -> Result<(), $crate::error::Error> {
                $($(
                    $crate::config::declare::settings!(
                        @apply $shape $flag, self.$flag => config.$table.$key $(, $check)?
                    );
                )*)*
                Ok(())
            }
        }

        /// Every setting, in the order of the tables, for the tests that hold the reference
        /// config and the README to the declarations.
        #[cfg(test)]
        pub(crate) const SETTINGS: &[$crate::config::declare::Setting] = &[$($(
            $crate::config::declare::Setting {
                table: stringify!($table),
                key: stringify!($key),
                flag: stringify!($flag),
                short: $crate::config::declare::settings!(@option $($short)?),
                alias: $crate::config::declare::settings!(@option $($alias)?),
                value_name: $value_name,
                shape: stringify!($shape),
            },
        )*)*];
    };
}

pub(crate) use settings;
