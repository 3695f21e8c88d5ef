//! Errors that point into the config text: a byte range while the text is parsed, then
//! `file:line:col` ([`ConfigError`]) once the file is known.
//!
//! Two kinds of error end here: those the `toml` crate raises while it deserializes (a value's
//! own check runs inside its deserializer, so the crate knows the value's span), and those the
//! checks after deserialization raise against a [`toml::Spanned`] value (a route's path, an app
//! kind's value, a program's table).

use std::ops::Range;
use std::path::Path;

use crate::error::ConfigError;

/// An error at a byte range of the config text.
#[derive(Debug)]
pub(crate) struct SpannedError {
    message: String,
    span: Option<Range<usize>>,
}

impl SpannedError {
    /// An error at `span`.
    pub(crate) fn at(span: Range<usize>, message: String) -> Self {
        SpannedError { message, span: Some(span) }
    }

    /// An error about no one place in the file: a table it lacks.
    pub(super) fn unplaced(message: String) -> Self {
        SpannedError { message, span: None }
    }

    pub(super) fn in_file(self, path: &Path, text: &str) -> ConfigError {
        let (line, column) = match self.span {
            Some(span) => line_col(text, span.start),
            None => (0, 0),
        };
        ConfigError { path: path.to_path_buf(), line, column, message: self.message }
    }
}

impl From<toml::de::Error> for SpannedError {
    fn from(e: toml::de::Error) -> Self {
        SpannedError { message: e.message().to_string(), span: e.span() }
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_of_an_offset() {
        let text = "a = 1\n[t]\n  é = \"x\"\n";
        for (offset, expected) in [
            (0, (1, 1)),
            (4, (1, 5)),
            (6, (2, 1)),
            (12, (3, 3)),
            // Columns count characters: "é" is two bytes, one column.
            (text.rfind('=').unwrap(), (3, 5)),
            // Past the end: where the text ends.
            (text.len() + 10, (4, 1)),
        ] {
            assert_eq!(line_col(text, offset), expected, "offset {offset}");
        }
    }
}
