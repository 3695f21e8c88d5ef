//! Flags override the config file, and keep overriding it across reloads: on `HUP` the master
//! reads the file again and lays the same flags over it, as Gunicorn does.

mod common;

use common::{Server, alive, forkserve, http, tempdir, wait_until, write};
use nix::sys::signal::Signal;

fn app_config(workers: usize, body: &str) -> String {
    format!(
        "[server]\nbind = [\"127.0.0.1:0\"]\nworkers = {workers}\n\n[[route]]\npath = \"/\"\nrespond = \"{body}\"\n"
    )
}

#[test]
fn a_flag_keeps_overriding_the_file_across_a_reload() {
    let dir = tempdir();
    let config = write(dir.path(), "app.toml", &app_config(3, "one"));
    let server = Server::start(&forkserve(), &["-w", "2", &config]);
    let old = server.wait_workers(2);
    let addr = server.addr();
    assert_eq!(http::get(addr, "/").unwrap().text(), "one");

    write(dir.path(), "app.toml", &app_config(4, "two"));
    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete generation=2");
    // "reload complete" means the old workers were told to stop; until each handles that, it
    // may still take a connection, so the answer is asked once they are gone.
    wait_until(|| {
        let now = server.workers();
        (now.len() == 2 && now.is_disjoint(&old)).then_some(now)
    })
    .unwrap_or_else(|| panic!("-w 2 should still win over the file's 4: {:?}", server.workers()));
    wait_until(|| old.iter().all(|&pid| !alive(pid)).then_some(())).expect("old workers exit");
    assert_eq!(http::get(addr, "/").unwrap().text(), "two", "the file was read again");
}
