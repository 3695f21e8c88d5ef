//! Build script: with the `python` feature, ties the binary to the CPython it is built against.
//!
//! pyo3 links `libpython3.x.so` by name only, so at run time the dynamic loader takes the first
//! library of that name in its path: on a machine with two builds of the same version (the
//! distribution's in `/usr/lib`, another under `/opt` or pyenv) that may be the other one,
//! which then finds its own standard library and site-packages, not those the binary was
//! built for. An rpath to the build interpreter's library directory makes the loader take the
//! one the build used; `FORKSERVE_BUILD_PYTHON` records the interpreter itself, which the
//! worker names as its program when no virtualenv is given, so that the interpreter finds the
//! standard library beside that library.

fn main() {
    #[cfg(feature = "python")]
    python();
}

#[cfg(feature = "python")]
fn python() {
    let config = pyo3_build_config::get();
    if let Some(dir) = config.lib_dir() {
        if config.shared() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
    let executable = config.executable().unwrap_or("");
    println!("cargo:rustc-env=FORKSERVE_BUILD_PYTHON={executable}");
    println!("cargo:rustc-env=FORKSERVE_BUILD_PYTHON_VERSION={}", config.version());
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
}
