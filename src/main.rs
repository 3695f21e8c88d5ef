//! The `forkserve` binary: the library's command line, serving the app declared in the config
//! file's `[[route]]`s.

fn main() -> std::process::ExitCode {
    forkserve::run(forkserve::app::Router::factory)
}
