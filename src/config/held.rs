//! A value of a type the config module does not know ([`Held`]): an app kind's checked value
//! for one route, or a program's own table. The code that declared the type reads it back as
//! that type; the config prints and compares it as the TOML it is written as.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// A checked value of a type declared outside the config module, kept as that type.
#[derive(Clone)]
pub(crate) struct Held {
    value: Arc<dyn Value>,
    /// The value as TOML, for `--print-config` and for comparing configs. Made when the value
    /// is read, so that a value that cannot be written as TOML is a config error then, and
    /// printing a config cannot fail.
    written: toml::Value,
}

/// What [`Held`] needs of a value, whatever its type. Written out rather than upcast to
/// `dyn Any`, which the crate's minimum Rust version does not have.
trait Value: fmt::Debug + Send + Sync {
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any + fmt::Debug + Send + Sync> Value for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Held {
    /// Holds `value`; `Err` says why it cannot be written as TOML.
    pub(crate) fn new<T>(value: T) -> Result<Held, String>
    where
        T: Serialize + fmt::Debug + Send + Sync + 'static,
    {
        let written = toml::Value::try_from(&value)
            .map_err(|e| format!("cannot be written back as TOML: {}", e.to_string().trim()))?;
        Ok(Held { value: Arc::new(value), written })
    }

    /// The value, if it is a `T`.
    pub(crate) fn get<T: 'static>(&self) -> Option<&T> {
        // Through the `dyn Value`: the `Arc` is a `Value` itself, and would answer for itself.
        (*self.value).as_any().downcast_ref()
    }

    /// The value as TOML.
    pub(crate) fn written(&self) -> &toml::Value {
        &self.written
    }
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

/// Values of one type that are written the same are the same: what a config that was printed
/// and read back must be.
impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        (*self.value).as_any().type_id() == (*other.value).as_any().type_id()
            && self.written == other.written
    }
}

impl Serialize for Held {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.written.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize)]
    struct A {
        n: u32,
    }

    #[derive(Debug, Serialize)]
    struct B {
        n: u32,
    }

    #[test]
    fn a_held_value_is_read_back_as_its_own_type_only() {
        let held = Held::new(A { n: 1 }).unwrap();
        assert_eq!(held.get::<A>().map(|a| a.n), Some(1));
        assert!(held.get::<B>().is_none());
        assert_eq!(format!("{held:?}"), "A { n: 1 }");
    }

    #[test]
    fn held_values_are_equal_when_of_one_type_and_written_the_same() {
        let a1 = Held::new(A { n: 1 }).unwrap();
        assert_eq!(a1, Held::new(A { n: 1 }).unwrap());
        assert_ne!(a1, Held::new(A { n: 2 }).unwrap());
        assert_ne!(a1, Held::new(B { n: 1 }).unwrap(), "written the same, another type");
    }

    #[test]
    fn a_value_toml_cannot_write_is_refused() {
        let e = Held::new(Some(())).unwrap_err();
        assert!(e.starts_with("cannot be written back as TOML"), "{e}");
    }
}
