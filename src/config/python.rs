//! The value types of the `[python]` settings: [`PythonApp`] (`module:callable`, as Gunicorn
//! writes it) and [`EnvVar`] (`KEY=VALUE`), each checked as it is read, on the command line and
//! in the file; and the checks of the table as a whole.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use super::{PythonConfig, Route};

/// A Python app as Gunicorn names it: `module:callable`, where `module` is a dotted module
/// path and `callable` a dotted attribute path in it, optionally called with literal arguments
/// (`module:create_app()`, `module:make("prod")`), which gives the app. `module` alone means
/// `module:application`, as Gunicorn reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonApp {
    text: String,
    /// Where `module` ends in `text`.
    colon: Option<usize>,
    /// Where the call's arguments start (`(`) in `text`, if it is a call.
    call: Option<usize>,
}

impl PythonApp {
    /// The module to import: `pkg.app`.
    pub fn module(&self) -> &str {
        &self.text[..self.colon.unwrap_or(self.text.len())]
    }

    /// The attribute path in the module: `app`, `api.app`; `application` when none is given.
    pub fn attribute(&self) -> &str {
        match self.colon {
            Some(colon) => &self.text[colon + 1..self.call.unwrap_or(self.text.len())],
            None => "application",
        }
    }

    /// The arguments of the call, between the parentheses, if the attribute is called: `""`
    /// for `create_app()`.
    pub fn call_arguments(&self) -> Option<&str> {
        self.call.map(|open| &self.text[open + 1..self.text.len() - 1])
    }

    /// As written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for PythonApp {
    type Err = String;

    fn from_str(text: &str) -> Result<PythonApp, String> {
        let bad = |why: &str| {
            Err(format!(
                "invalid Python app {text:?}: {why}; expected MODULE:CALLABLE, such as \
                 \"myapp:app\" or \"mysite.wsgi:application\""
            ))
        };
        let text = text.trim();
        let (module, rest) = match text.split_once(':') {
            Some((module, rest)) => (module, Some(rest)),
            None => (text, None),
        };
        if !is_dotted_name(module) {
            return bad("the module must be a dotted name");
        }
        let mut call = None;
        if let Some(rest) = rest {
            let name = match rest.find('(') {
                Some(open) if rest.ends_with(')') => {
                    call = Some(module.len() + 1 + open);
                    &rest[..open]
                }
                Some(_) => return bad("a call must end with ')'"),
                None => rest,
            };
            if !is_dotted_name(name) {
                return bad("the callable must be a dotted name");
            }
        }
        Ok(PythonApp { text: text.to_string(), colon: rest.map(|_| module.len()), call })
    }
}

/// Whether `name` is a dotted Python name: `a.b_c.d2`.
fn is_dotted_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
                && chars.all(|c| c.is_alphanumeric() || c == '_')
        })
}

impl fmt::Display for PythonApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for PythonApp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for PythonApp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PythonApp, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// An environment variable set in the workers before the app is imported: `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// The name: not empty, no `=` or NUL.
    pub key: String,
    /// The value: no NUL.
    pub value: String,
}

impl FromStr for EnvVar {
    type Err = String;

    fn from_str(text: &str) -> Result<EnvVar, String> {
        match text.split_once('=') {
            Some((key, value)) if !key.is_empty() && !text.contains('\0') => {
                Ok(EnvVar { key: key.to_string(), value: value.to_string() })
            }
            _ => Err(format!("invalid environment variable {text:?}: expected KEY=VALUE")),
        }
    }
}

impl Serialize for EnvVar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}={}", self.key, self.value))
    }
}

impl<'de> Deserialize<'de> for EnvVar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EnvVar, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

impl PythonConfig {
    /// Makes the table's relative paths relative to `base`, the config file's directory.
    pub(super) fn resolve_against(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.pythonpath.iter_mut().for_each(resolve);
        self.venv.iter_mut().for_each(resolve);
        self.chdir.iter_mut().for_each(resolve);
    }

    /// Checks the table against the routes, once the flags are applied: `wsgi` serves `/`, so
    /// no route may; and a build without Python support serves no Python app.
    pub(super) fn check(&self, routes: &[Route]) -> Result<(), String> {
        let wsgi_routes = routes.iter().any(|r| r.kind() == "wsgi");
        if !cfg!(feature = "python") && (self.wsgi.is_some() || wsgi_routes) {
            return Err("this forkserve was built without Python support (the `python` cargo \
                        feature): it cannot serve a WSGI app"
                .into());
        }
        if let Some(app) = &self.wsgi {
            if routes.iter().any(|r| r.path == "/") {
                return Err(format!(
                    "the Python app {app} (python.wsgi, --wsgi) is served at \"/\", and a \
                     [[route]] for \"/\" is declared too: remove one"
                ));
            }
        }
        Ok(())
    }

    /// Whether the workers run Python at all: `wsgi`, or a `wsgi` route.
    pub fn wanted(&self, routes: &[Route]) -> bool {
        self.wsgi.is_some() || routes.iter().any(|r| r.kind() == "wsgi")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_are_read_as_gunicorn_reads_them() {
        let app = |s: &str| s.parse::<PythonApp>().unwrap();
        let a = app("myapp:app");
        assert_eq!((a.module(), a.attribute(), a.call_arguments()), ("myapp", "app", None));
        let a = app("mysite.wsgi");
        assert_eq!((a.module(), a.attribute()), ("mysite.wsgi", "application"));
        let a = app("pkg.mod:factory.make(\"prod\", 2)");
        assert_eq!((a.module(), a.attribute()), ("pkg.mod", "factory.make"));
        assert_eq!(a.call_arguments(), Some("\"prod\", 2"));
        assert_eq!(app("m:create_app()").call_arguments(), Some(""));
        for bad in ["", ":app", "my-app:app", "m:", "m:1x", "m:f(", "m:f)x", "a..b:c"] {
            assert!(bad.parse::<PythonApp>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn environment_variables_need_a_name() {
        let v: EnvVar = "A=b=c".parse().unwrap();
        assert_eq!((v.key.as_str(), v.value.as_str()), ("A", "b=c"));
        assert!("=x".parse::<EnvVar>().is_err());
        assert!("novalue".parse::<EnvVar>().is_err());
    }
}
