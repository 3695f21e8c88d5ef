//! `wsgi.errors`: what an app writes there (Flask and Django log their exceptions to it) goes
//! to forkserve's log, a line at a time.

use std::sync::Mutex;

use pyo3::prelude::*;

use super::lock;
use pyo3::types::{PyBytes, PyString};

/// `wsgi.errors`: a text stream whose lines are logged at error level.
#[pyclass(module = "forkserve")]
#[derive(Default)]
pub(crate) struct Errors {
    /// Text written since the last newline.
    partial: Mutex<String>,
}

#[pymethods]
impl Errors {
    fn write(&self, text: &Bound<'_, PyString>) -> PyResult<usize> {
        // Lone surrogates (from `surrogateescape`d bytes) are escaped, not an error in the app.
        let bytes = text.call_method1("encode", ("utf-8", "backslashreplace"))?;
        let text = String::from_utf8_lossy(bytes.cast::<PyBytes>()?.as_bytes()).into_owned();
        let mut partial = lock(&self.partial);
        partial.push_str(&text);
        while let Some(end) = partial.find('\n') {
            log_line(&partial[..end]);
            partial.drain(..=end);
        }
        Ok(text.chars().count())
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(line?.cast::<PyString>()?)?;
        }
        Ok(())
    }

    fn flush(&self) {
        let mut partial = lock(&self.partial);
        if !partial.is_empty() {
            log_line(&partial);
            partial.clear();
        }
    }
}

fn log_line(line: &str) {
    tracing::error!(target: "wsgi.errors", "{}", line.trim_end_matches('\r'));
}
