//! The worker's own CPython: started once per worker process (each has its own interpreter and
//! GIL), with the virtualenv, `sys.path`, directory and environment the `[python]` table gives;
//! and importing an app (`module:callable`), with an import error told as its type, message
//! and `file:line`.
//!
//! Which interpreter: the one the binary was linked against (build.rs gives it an rpath to that
//! library), named as the program so that it finds its own standard library; with a
//! virtualenv (`[python] venv`, `$VIRTUAL_ENV`, or the one the binary is installed in), that
//! virtualenv's `bin/python`, which makes the interpreter read its `pyvenv.cfg` and use its
//! site-packages, exactly as that virtualenv's own `python` does.
//!
//! Python never installs its signal handlers here (`install_signal_handlers = 0`): `TERM`,
//! `INT`, `HUP` and the rest stay forkserve's. An app that sets a handler while it is imported
//! (only the main thread may) has it removed again, with a warning.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use crate::config::{PythonApp, PythonConfig};

/// Set once this process's interpreter is started.
static STARTED: AtomicBool = AtomicBool::new(false);

/// The interpreter the binary was built against, as build.rs found it.
const BUILD_PYTHON: &str = env!("FORKSERVE_BUILD_PYTHON");

/// Starts this process's interpreter, on the calling (main) thread, and leaves it released
/// for other threads to attach to. Only the first call does anything.
pub(crate) fn start(settings: &PythonConfig) -> Result<(), String> {
    if STARTED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let program = program(settings)?;
    let signals = crate::signals::Dispositions::snapshot();
    initialize(program.as_deref())?;
    // SAFETY: the interpreter was just initialized on this thread, which holds the GIL; saving
    // the thread state releases it so that any thread may attach. It is never restored: the
    // interpreter lives until the process exits.
    unsafe {
        ffi::PyEval_SaveThread();
    }
    Python::attach(|py| {
        check_library(py);
        prepare(py, settings)
    })
    .map_err(|e| format!("cannot set Python up: {e}"))?;
    signals.restore_changed("starting Python");
    Ok(())
}

/// The program name the interpreter is started as: the virtualenv's `python`, or the
/// interpreter the binary was built against. `Err` if the virtualenv is another Python's.
fn program(settings: &PythonConfig) -> Result<Option<PathBuf>, String> {
    if let Some(venv) = venv(settings) {
        check_version(&venv)?;
        for name in ["python3", "python"] {
            let python = venv.join("bin").join(name);
            if python.exists() {
                return Ok(Some(python));
            }
        }
        tracing::warn!(venv = %venv.display(), "the virtualenv has no bin/python: not using it");
    }
    let built = Path::new(BUILD_PYTHON);
    Ok((!BUILD_PYTHON.is_empty() && built.exists()).then(|| built.to_path_buf()))
}

/// Refuses a virtualenv made by another minor version of Python than the library this binary
/// runs: its `bin/python` only points the interpreter at its base installation (`home` in
/// `pyvenv.cfg`), and that installation's packages (`lib/python3.Y`, built for another ABI)
/// cannot run here. The micro version is not compared: `pyvenv.cfg` keeps the one the
/// virtualenv was made with, and the base installation's security updates change it.
/// Whether the base installation is the one whose library was loaded is [`check_library`]'s.
fn check_version(venv: &Path) -> Result<(), String> {
    let cfg = venv.join("pyvenv.cfg");
    // Not a virtualenv `python -m venv` or `virtualenv` made: nothing to compare with.
    let Some(theirs) = std::fs::read_to_string(&cfg).ok().and_then(|text| venv_version(&text))
    else {
        return Ok(());
    };
    let ours = linked_version();
    let minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    if minor(&ours) != minor(&theirs) {
        return Err(format!(
            "the virtualenv {} is Python {theirs}, but this forkserve runs Python {ours} \
             (built against {BUILD_PYTHON}): install forkserve into that virtualenv \
             (`pip install`), or build it with PYO3_PYTHON naming that Python",
            venv.display()
        ));
    }
    Ok(())
}

/// The version of the Python library this process runs, as `3.11.7`.
fn linked_version() -> String {
    // SAFETY: Py_GetVersion only formats constants of the library into a static buffer; it
    // may be called before the interpreter is initialized, and its result is a NUL-terminated
    // string that lives as long as the process.
    let version = unsafe { std::ffi::CStr::from_ptr(ffi::Py_GetVersion()) };
    version.to_string_lossy().split_whitespace().next().unwrap_or("").to_string()
}

/// Warns when the library this process loaded is not the one of the installation whose
/// standard library the interpreter found (`sysconfig`'s `LIBDIR`): two builds of one version
/// (Debian's 3.11.2 in the system library path, a pyenv 3.11.7) mixed, as happens when the
/// loader takes the other's `libpython` (`LD_LIBRARY_PATH`, or a binary without build.rs's
/// rpath) or a virtualenv is another build's. Modules one build has built in are files the
/// other's standard library lacks: an app fails to import with `No module named 'math'`,
/// which this names the cause of. A warning, not an error: a relocated installation's
/// `LIBDIR` may still name where it was built.
fn check_library(py: Python<'_>) {
    let Some(loaded) = loaded_library() else { return };
    let libdir = py
        .import("sysconfig")
        .and_then(|s| s.call_method1("get_config_var", ("LIBDIR",)))
        .and_then(|dir| dir.extract::<Option<PathBuf>>());
    let Ok(Some(libdir)) = libdir else { return };
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if loaded.parent().is_some_and(|dir| !same(dir, &libdir)) {
        tracing::warn!(
            library = %loaded.display(),
            "Python {} runs from a library that is not the one of the installation whose \
             standard library it uses ({}): two builds are mixed; build forkserve against \
             that Python (PYO3_PYTHON) or `pip install` it into the app's virtualenv",
            linked_version(),
            libdir.display()
        );
    }
}

/// The file the dynamic loader took the Python library from.
fn loaded_library() -> Option<PathBuf> {
    let mut info = std::mem::MaybeUninit::<nix::libc::Dl_info>::zeroed();
    // SAFETY: dladdr only reads the loader's tables and fills `info`; the address is that of a
    // function of the Python library. On success dli_fname is a NUL-terminated path that stays
    // valid while the library is loaded (for the life of the process).
    unsafe {
        let address = ffi::Py_GetVersion as *const std::ffi::c_void;
        if nix::libc::dladdr(address, info.as_mut_ptr()) == 0 {
            return None;
        }
        let info = info.assume_init();
        if info.dli_fname.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(info.dli_fname);
        Some(PathBuf::from(OsStr::from_bytes(name.to_bytes())))
    }
}

/// The Python version a `pyvenv.cfg` records: `version` (the standard library's `venv`) or
/// `version_info` (`virtualenv`, as `3.11.7.final.0`), as `major.minor.micro`.
fn venv_version(cfg: &str) -> Option<String> {
    let value = |wanted: &str| {
        cfg.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == wanted).then(|| value.trim().to_string())
        })
    };
    let version = value("version").or_else(|| value("version_info"))?;
    let parts: Vec<&str> = version.split('.').take(3).collect();
    let numeric = parts.len() >= 2 && parts.iter().all(|p| p.parse::<u32>().is_ok());
    numeric.then(|| parts.join("."))
}

/// The virtualenv the app runs in, if any: `[python] venv`, else `$VIRTUAL_ENV`, else the one
/// this binary is installed in (`<venv>/bin/forkserve`, beside `<venv>/pyvenv.cfg`).
pub(crate) fn venv(settings: &PythonConfig) -> Option<PathBuf> {
    if let Some(venv) = &settings.venv {
        return Some(absolute(venv));
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()) {
        return Some(absolute(Path::new(&venv)));
    }
    let exe = std::env::current_exe().ok()?;
    let venv = exe.parent()?.parent()?;
    venv.join("pyvenv.cfg").exists().then(|| venv.to_path_buf())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Initializes the interpreter as `program`, without its signal handlers, with unbuffered
/// standard streams (an app's prints reach the log as they happen, not a block later).
fn initialize(program: Option<&Path>) -> Result<(), String> {
    let program = program
        .map(|p| CString::new(p.as_os_str().as_bytes()))
        .transpose()
        .map_err(|_| "the Python program path has a NUL byte".to_string())?;
    // SAFETY: `config` is initialized by PyConfig_InitPythonConfig before any other use and
    // cleared after the interpreter has copied what it needs; the string passed to
    // PyConfig_SetBytesString outlives the call; this runs once per process (see `start`),
    // before any other thread uses Python.
    unsafe {
        let mut config = std::mem::MaybeUninit::<ffi::PyConfig>::zeroed();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        config.buffered_stdio = 0;
        if let Some(program) = &program {
            let status = ffi::PyConfig_SetBytesString(
                &mut config,
                &mut config.program_name,
                program.as_ptr(),
            );
            if ffi::PyStatus_Exception(status) != 0 {
                ffi::PyConfig_Clear(&mut config);
                return Err(format!("cannot configure Python: {}", status_message(&status)));
            }
        }
        let status = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            return Err(format!("cannot start Python: {}", status_message(&status)));
        }
    }
    Ok(())
}

/// The message of a failed `PyStatus`.
fn status_message(status: &ffi::PyStatus) -> String {
    if status.err_msg.is_null() {
        return "unknown error".into();
    }
    // SAFETY: a failed status's err_msg is a static NUL-terminated C string.
    unsafe { std::ffi::CStr::from_ptr(status.err_msg) }.to_string_lossy().into_owned()
}

/// What the `[python]` table asks of the interpreter before the app is imported: the
/// environment, the directory, `sys.path`; and `faulthandler`, so that a worker killed as hung
/// (`SIGABRT`) or crashing in a C extension prints every Python thread's stack.
fn prepare(py: Python<'_>, settings: &PythonConfig) -> PyResult<()> {
    let os = py.import("os")?;
    let environ = os.getattr("environ")?;
    for var in &settings.env {
        environ.set_item(&var.key, &var.value)?;
    }
    if let Some(dir) = &settings.chdir {
        std::env::set_current_dir(dir).map_err(|e| {
            pyo3::exceptions::PyOSError::new_err(format!("cannot change to {}: {e}", dir.display()))
        })?;
    }
    let sys_path = py.import("sys")?.getattr("path")?.cast_into::<PyList>()?;
    // The current directory (after chdir) first, as Gunicorn puts it, then `path` before it.
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    sys_path.insert(0, os_str(py, cwd.as_os_str())?)?;
    for dir in settings.pythonpath.iter().rev() {
        sys_path.insert(0, os_str(py, absolute(dir).as_os_str())?)?;
    }
    let stderr = py.import("sys")?.getattr("stderr")?;
    if !stderr.is_none() {
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("all_threads", true)?;
        py.import("faulthandler")?.call_method("enable", (), Some(&kwargs))?;
    }
    Ok(())
}

/// A path as Python's `os.fsdecode` would give it.
fn os_str<'py>(py: Python<'py>, s: &OsStr) -> PyResult<Bound<'py, PyAny>> {
    py.import("os")?.call_method1("fsdecode", (pyo3::types::PyBytes::new(py, s.as_bytes()),))
}

/// Runs the app's `atexit` handlers and flushes Python's standard streams, as a Python process
/// ending normally does; what they raise is logged.
pub(crate) fn run_exit_handlers() {
    Python::attach(|py| {
        let run = py.import("atexit").and_then(|atexit| atexit.call_method0("_run_exitfuncs"));
        if let Err(e) = run {
            tracing::warn!("the app's atexit handlers failed: {}", traceback(py, &e));
        }
        for stream in ["stdout", "stderr"] {
            if let Ok(stream) = py.import("sys").and_then(|sys| sys.getattr(stream)) {
                if !stream.is_none() {
                    let _ = stream.call_method0("flush");
                }
            }
        }
    });
}

/// Imports `app` and returns the callable it names, on the main thread (the only one where an
/// app may set a signal handler while it is imported; any it sets is undone). `Err` is the
/// Python error as one line: type, message, and where it was raised.
pub(crate) fn import(app: &PythonApp) -> Result<Py<PyAny>, String> {
    let signals = crate::signals::Dispositions::snapshot();
    let result = Python::attach(|py| {
        load(py, app).map(Bound::unbind).map_err(|e| {
            let (summary, traceback) = describe(py, &e);
            tracing::debug!("importing {app}:\n{traceback}");
            summary
        })
    });
    signals.restore_changed(&format!("importing {app}"));
    result.map_err(|e| format!("cannot import the Python app {app}: {e}"))
}

fn load<'py>(py: Python<'py>, app: &PythonApp) -> PyResult<Bound<'py, PyAny>> {
    let mut object = py.import(app.module())?.into_any();
    for name in app.attribute().split('.') {
        object = object.getattr(name).map_err(|_| {
            pyo3::exceptions::PyAttributeError::new_err(format!(
                "module {:?} has no attribute {:?}",
                app.module(),
                app.attribute()
            ))
        })?;
    }
    if let Some(arguments) = app.call_arguments() {
        let ast = py.import("ast")?;
        let args = ast.call_method1("literal_eval", (format!("({arguments},)"),))?;
        object = object.call1(args.cast_into::<PyTuple>()?)?;
    }
    if !object.is_callable() {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "{app} is not callable: it is a {}",
            object.get_type().name()?
        )));
    }
    Ok(object)
}

/// A Python error as one line (`Type: message (at file:line)`, the innermost frame, or the
/// file and line a `SyntaxError` names) and as the full traceback, for the log.
pub(crate) fn describe(py: Python<'_>, error: &PyErr) -> (String, String) {
    let kind = error.get_type(py).name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    let value = error.value(py);
    // A SyntaxError's str() repeats the file and line that `place` gives.
    let message = match error.is_instance_of::<pyo3::exceptions::PySyntaxError>(py) {
        true => value.getattr("msg").and_then(|m| m.str()).map(|s| s.to_string()),
        false => value.str().map(|s| s.to_string()),
    }
    .unwrap_or_default();
    let place = where_raised(py, error).map(|(file, line)| format!(" (at {file}:{line})"));
    let summary = match message.is_empty() {
        true => format!("{kind}{}", place.unwrap_or_default()),
        false => format!("{kind}: {message}{}", place.unwrap_or_default()),
    };
    (summary, traceback(py, error))
}

/// The file and line of the innermost frame of `error`'s traceback, or those a `SyntaxError`
/// names.
fn where_raised(py: Python<'_>, error: &PyErr) -> Option<(String, u32)> {
    let value = error.value(py);
    if error.is_instance_of::<pyo3::exceptions::PySyntaxError>(py) {
        let file: String = value.getattr("filename").ok()?.extract().ok()?;
        let line: u32 = value.getattr("lineno").ok()?.extract().ok()?;
        return Some((file, line));
    }
    let tb = error.traceback(py)?;
    let frames = py.import("traceback").ok()?.call_method1("extract_tb", (tb,)).ok()?;
    let last = frames.get_item(-1).ok()?;
    Some((
        last.getattr("filename").ok()?.extract().ok()?,
        last.getattr("lineno").ok()?.extract().ok()?,
    ))
}

/// The whole traceback of `error`, as Python prints it.
pub(crate) fn traceback(py: Python<'_>, error: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        let args = (error.get_type(py), error.value(py), error.traceback(py));
        tb.call_method1("format_exception", args)?.extract::<Vec<String>>()
    });
    match formatted {
        Ok(lines) => lines.concat().trim_end().to_string(),
        Err(_) => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::venv_version;

    #[test]
    fn reads_the_version_either_tool_records() {
        let venv = "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n";
        assert_eq!(venv_version(venv).as_deref(), Some("3.11.2"));
        let virtualenv = "home = /opt/py/bin\nimplementation = CPython\n\
                          version_info = 3.12.1.final.0\nvirtualenv = 20.25.0\n";
        assert_eq!(venv_version(virtualenv).as_deref(), Some("3.12.1"));
        // `version` is preferred, and a key is matched whole (`version_info` is not `version`).
        assert_eq!(
            venv_version("version_info = 3.9.0.final.0\nversion=3.11.7").as_deref(),
            Some("3.11.7")
        );
        assert_eq!(venv_version("home = /usr/bin\n"), None);
        assert_eq!(venv_version("version = unknown\n"), None);
    }
}
