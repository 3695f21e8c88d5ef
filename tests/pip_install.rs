//! The `forkserve` command that `pip install .` puts in a virtualenv runs apps with that
//! virtualenv's Python: its `sys.prefix`, its packages, and the `libpython` of the
//! installation the virtualenv was made from, not another CPython of the same version that
//! the system library path offers (Debian's 3.11.2 beside a pyenv 3.11.7).
//!
//! It needs a wheel built and installed, which `cargo test` does not do: `.ci/run` builds it,
//! installs it into a fresh virtualenv and runs this with `FORKSERVE_BIN` naming
//! `<venv>/bin/forkserve` (`cargo test --test pip_install -- --ignored`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Server, http, tempdir, write};

/// An app that says which interpreter runs it, where a package of the virtualenv comes from,
/// and which `libpython` this process has mapped.
const PROBE: &str = r#"
import sys, sysconfig, pip

def libpython():
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "/libpython" in path:
                return path
    return "none"

def app(environ, start_response):
    body = "\n".join([
        "prefix=" + sys.prefix,
        "version=" + sys.version,
        "pip=" + pip.__file__,
        "libpython=" + libpython(),
    ]).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
"#;

/// What the virtualenv's own `python` says: the same keys, and its base installation's
/// library directory.
const EXPECTED: &str = r#"
import sys, sysconfig
print("prefix=" + sys.prefix)
print("version=" + sys.version)
print("libdir=" + sysconfig.get_config_var("LIBDIR"))
"#;

fn values(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn value<'a>(values: &'a [(String, String)], key: &str) -> &'a str {
    values
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key}= in {values:?}"))
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
#[ignore = "needs the command pip installed: FORKSERVE_BIN (.ci/run sets it)"]
fn the_pip_installed_command_runs_its_virtualenvs_python() {
    let bin = PathBuf::from(std::env::var_os("FORKSERVE_BIN").expect("FORKSERVE_BIN is set"));
    let venv = bin.parent().and_then(Path::parent).expect("FORKSERVE_BIN is <venv>/bin/forkserve");
    assert!(venv.join("pyvenv.cfg").is_file(), "{} is not in a virtualenv", bin.display());

    let python = venv.join("bin/python");
    let out = Command::new(&python).args(["-c", EXPECTED]).output().expect("run the venv's python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = values(&String::from_utf8_lossy(&out.stdout));

    let dir = tempdir();
    write(dir.path(), "probe.py", PROBE);
    let app_dir = dir.path().to_str().unwrap();
    // No --venv and no $VIRTUAL_ENV: the command must find the virtualenv it is installed in.
    let server = Server::start_with(
        &bin,
        &["-w", "1", "-b", "127.0.0.1:0", "--pythonpath", app_dir, "--wsgi", "probe:app"],
        &[("VIRTUAL_ENV", "")],
    );
    let response = http::get(server.addr(), "/").expect("GET /");
    assert_eq!(response.status, 200, "{}\n{}", response.text(), server.logs().join("\n"));
    let seen = values(&response.text());

    assert_eq!(value(&seen, "prefix"), value(&expected, "prefix"), "sys.prefix");
    assert_eq!(canonical(Path::new(value(&seen, "prefix"))), canonical(venv));
    assert_eq!(value(&seen, "version"), value(&expected, "version"), "sys.version");
    let pip = canonical(Path::new(value(&seen, "pip")));
    assert!(pip.starts_with(canonical(venv)), "pip imported from {}", pip.display());
    let libpython = Path::new(value(&seen, "libpython"));
    let loaded_from = canonical(libpython.parent().expect("a path"));
    assert_eq!(loaded_from, canonical(Path::new(value(&expected, "libdir"))), "libpython");
    assert_eq!(server.count("WARN"), 0, "{}", server.logs().join("\n"));
}
