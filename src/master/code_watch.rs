//! `python.reload`, for development: the master reloads (as on `HUP`) when the config file or a
//! Python source file under the app's directories changes, so that an edit is served a second
//! later with nothing dropped (the reload is readiness-gated like any other, and rolls back if
//! the new code does not import).
//!
//! The master only looks at files: every second it compares the modification times of the
//! config file and of the `*.py` files under `python.chdir` (or the current directory) and
//! each `python.pythonpath` directory, as Uvicorn's `--reload` watches its directories. It
//! never loads Python. Virtualenvs, hidden directories and caches are not walked, and at most
//! [`MAX_FILES`] files are watched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::config::PythonConfig;

/// How often the files are looked at.
const EVERY: Duration = Duration::from_secs(1);
/// The most files watched: beyond, the rest are not (a development tree is far smaller; the
/// master's loop must not spend its time walking a home directory).
pub(super) const MAX_FILES: usize = 20_000;
/// How deep directories are walked.
const MAX_DEPTH: usize = 12;
/// The most directory entries looked at per scan, files of every kind and directories: a
/// scan started from `/` or a home directory stops there, rather than hold the master's loop.
const MAX_ENTRIES: usize = 100_000;

/// The watched files of one generation, as last seen.
#[derive(Debug)]
pub(super) struct CodeWatch {
    /// The generation whose config named these files.
    pub(super) generation: u64,
    config: Option<PathBuf>,
    roots: Vec<PathBuf>,
    seen: HashMap<PathBuf, SystemTime>,
    next: Instant,
    /// A scan stopped at [`MAX_ENTRIES`] (warned about once).
    truncated: std::cell::Cell<bool>,
}

impl CodeWatch {
    /// Watches what generation `generation`'s config names, as the files are now.
    pub(super) fn new(generation: u64, config: Option<&Path>, python: &PythonConfig) -> Self {
        let mut roots: Vec<PathBuf> = python.pythonpath.clone();
        roots.push(python.chdir.clone().unwrap_or_else(|| PathBuf::from(".")));
        let mut watch = CodeWatch {
            generation,
            config: config.map(Path::to_path_buf),
            roots,
            seen: HashMap::new(),
            next: Instant::now() + EVERY,
            truncated: Default::default(),
        };
        watch.seen = watch.scan();
        if watch.seen.len() >= MAX_FILES {
            tracing::warn!(
                files = MAX_FILES,
                "python.reload watches only the first {MAX_FILES} files it finds: point chdir or \
                 pythonpath at the app's own directory"
            );
        }
        watch
    }

    /// Compares the next look with what `before` (the previous generation's watch) last saw,
    /// for the files both watch: the reload that made this generation began at that look, so
    /// a file saved since then (while the new workers imported the code) is still a change.
    pub(super) fn since(&mut self, before: CodeWatch) {
        for (path, time) in &mut self.seen {
            if let Some(then) = before.seen.get(path) {
                *time = *then;
            }
        }
    }

    /// A file that changed, appeared or went since the last look, if any and if a look is
    /// due at `now`.
    pub(super) fn changed(&mut self, now: Instant) -> Option<PathBuf> {
        if now < self.next {
            return None;
        }
        self.next = now + EVERY;
        let files = self.scan();
        let changed = files
            .iter()
            .find(|(path, time)| self.seen.get(*path) != Some(time))
            .map(|(path, _)| path.clone())
            .or_else(|| self.seen.keys().find(|p| !files.contains_key(*p)).cloned());
        self.seen = files;
        changed
    }

    /// The watched files and their modification times.
    fn scan(&self) -> HashMap<PathBuf, SystemTime> {
        let mut files = HashMap::new();
        if let Some(config) = &self.config {
            if let Ok(time) = std::fs::metadata(config).and_then(|m| m.modified()) {
                files.insert(config.clone(), time);
            }
        }
        let mut budget = MAX_ENTRIES;
        for root in &self.roots {
            walk(root, 0, &mut files, &mut budget);
        }
        if budget == 0 && !self.truncated.replace(true) {
            tracing::warn!(
                entries = MAX_ENTRIES,
                "python.reload stops looking after {MAX_ENTRIES} directory entries: point chdir \
                 or pythonpath at the app's own directory"
            );
        }
        files
    }

    /// When the next look is due.
    pub(super) fn next(&self) -> Instant {
        self.next
    }
}

/// Adds the `*.py` files under `dir` to `files`.
/// `budget` is how many more entries may be looked at.
fn walk(dir: &Path, depth: usize, files: &mut HashMap<PathBuf, SystemTime>, budget: &mut usize) {
    if depth > MAX_DEPTH || *budget == 0 || dir.join("pyvenv.cfg").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if files.len() >= MAX_FILES || *budget == 0 {
            return;
        }
        *budget -= 1;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            if !skipped(&name) {
                walk(&entry.path(), depth + 1, files, budget);
            }
        } else if name.ends_with(".py") {
            if let Ok(time) = entry.metadata().and_then(|m| m.modified()) {
                files.insert(entry.path(), time);
            }
        }
    }
}

/// Directories no app's own code is in.
fn skipped(name: &str) -> bool {
    name.starts_with('.')
        || matches!(name, "__pycache__" | "node_modules" | "site-packages" | "target" | "venv")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_added_or_removed_source_file_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app.py");
        std::fs::write(&app, "x = 1\n").unwrap();
        std::fs::create_dir(dir.path().join(".venv")).unwrap();
        std::fs::write(dir.path().join(".venv/ignored.py"), "").unwrap();
        let python = PythonConfig { chdir: Some(dir.path().into()), ..PythonConfig::default() };
        let mut watch = CodeWatch::new(1, None, &python);
        assert_eq!(watch.seen.len(), 1, "{:?}", watch.seen);
        let later = |w: &CodeWatch| w.next() + Duration::from_millis(1);
        assert_eq!(watch.changed(later(&watch)), None);
        // A modification time in the future, rather than a sleep past the file system's
        // timestamp granularity.
        let file = std::fs::File::options().write(true).open(&app).unwrap();
        file.set_modified(SystemTime::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(watch.changed(Instant::now()), None, "not due yet");
        assert_eq!(watch.changed(later(&watch)), Some(app.clone()));
        assert_eq!(watch.changed(later(&watch)), None, "seen once");
        let added = dir.path().join("pkg/views.py");
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        std::fs::write(&added, "").unwrap();
        assert_eq!(watch.changed(later(&watch)), Some(added.clone()));
        std::fs::remove_file(&added).unwrap();
        assert_eq!(watch.changed(later(&watch)), Some(added));
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        assert_eq!(watch.changed(later(&watch)), None, "only source files");
    }
}
