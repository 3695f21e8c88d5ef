//! `wsgi.errors`: what an app writes there (Flask and Django log their exceptions to it) goes
//! to forkserve's log, a line at a time.

use std::sync::Mutex;

use pyo3::prelude::*;

/// `wsgi.errors`: a text stream whose lines are logged at error level.
#[pyclass(module = "forkserve")]
#[derive(Default)]
pub(crate) struct Errors {
    /// Text written since the last newline.
    partial: Mutex<String>,
}

#[pymethods]
impl Errors {
    fn write(&self, text: &str) -> usize {
        let mut partial = self.partial.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        partial.push_str(text);
        while let Some(end) = partial.find('\n') {
            log_line(&partial[..end]);
            partial.drain(..=end);
        }
        text.chars().count()
    }

    fn writelines(&self, lines: Vec<String>) {
        for line in lines {
            self.write(&line);
        }
    }

    fn flush(&self) {
        let mut partial = self.partial.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !partial.is_empty() {
            log_line(&partial);
            partial.clear();
        }
    }
}

fn log_line(line: &str) {
    tracing::error!(target: "wsgi.errors", "{}", line.trim_end_matches('\r'));
}
