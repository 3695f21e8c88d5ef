//! `[python] preload`: the Python side of a generation's mold (see `app::preload`). The mold
//! starts the interpreter, imports the apps its workers serve (the `wsgi` routes and
//! `python.wsgi`), collects and freezes the garbage collector's objects (`gc.freeze()`, so that
//! the collector in a worker does not write to, and so copy, every page the app's objects sit
//! on), and forks each worker under CPython's fork protocol. A worker forked from it finds the
//! interpreter started and the apps imported (see `python::start`), and starts only its own
//! threads.

use std::sync::{Arc, Mutex};

use pyo3::ffi;
use pyo3::prelude::*;

use super::lock;

use super::Wsgi;
use super::interpreter;
use super::pool::App;
use crate::app::preload::{Preload, Side};
use crate::config::{Config, PythonApp};

/// The preloader of Python apps.
pub(crate) struct CPython;

/// The one there is: `app::preloader` hands it to the master.
pub(crate) static PRELOAD: CPython = CPython;

/// The apps the mold imported, for the workers forked from it to serve.
static IMPORTED: Mutex<Vec<(PythonApp, Arc<App>)>> = Mutex::new(Vec::new());

impl Preload for CPython {
    fn load(&self, config: &Config) -> Result<(), String> {
        interpreter::start(&config.python)?;
        // Where each app is served, to name it in an error as the router does.
        let routes = config.routes.iter().filter_map(|r| Some((&r.path, r.config::<Wsgi>()?)));
        let root = String::from("/");
        let wsgi = config.python.wsgi.as_ref().map(|app| (&root, app));
        let mut imported = Vec::new();
        for (path, spec) in routes.chain(wsgi) {
            if imported.iter().any(|(s, _)| s == spec) {
                continue;
            }
            let object = interpreter::import(spec).map_err(|e| format!("route {path:?}: {e}"))?;
            imported.push((spec.clone(), Arc::new(App { object, name: spec.to_string() })));
        }
        *lock(&IMPORTED) = imported;
        Python::attach(|py| -> PyResult<()> {
            let gc = py.import("gc")?;
            gc.call_method0("collect")?;
            gc.call_method0("freeze")?;
            Ok(())
        })
        .map_err(|e| format!("cannot freeze the garbage collector: {e}"))?;
        let threads = crate::process::thread_count().unwrap_or(1);
        if threads > 1 {
            tracing::warn!(
                threads,
                "the app started threads while it was imported: the workers forked from it do \
                 not have them, and a lock one of them holds at a fork stays locked in that \
                 worker; start them in the workers, or run without preload"
            );
        }
        Ok(())
    }

    fn fork(&self, fork: &mut dyn FnMut() -> Side) -> Side {
        Python::attach(|_py| {
            // SAFETY: this thread holds the GIL (attached above), as PyOS_BeforeFork requires:
            // it takes the interpreter's locks (imports among them) so that no thread holds one
            // across the fork, and runs the `os.register_at_fork` callbacks.
            unsafe { ffi::PyOS_BeforeFork() };
            let side = fork();
            match side {
                // SAFETY: in the new process, on the thread that forked, still holding the GIL:
                // reinitializes the interpreter's locks and thread states (only this thread
                // exists here) and runs the callbacks registered for the child.
                Side::Child => unsafe { ffi::PyOS_AfterFork_Child() },
                // SAFETY: in the process that called PyOS_BeforeFork, on its thread, with the
                // GIL: releases what it took.
                Side::Parent => unsafe { ffi::PyOS_AfterFork_Parent() },
            }
            side
        })
    }
}

/// The apps the mold this worker was forked from imported: none without preload.
pub(super) fn imported() -> Vec<(PythonApp, Arc<App>)> {
    lock(&IMPORTED).clone()
}
