//! The Flask app `tests/python/flask_app.py` served by the real binary from the test virtualenv
//! (`target/test-venv`, made by `tests/python/setup.sh`): issue 13's real-app scenarios, each
//! in `common::framework_scenarios`, shared with the Django app's tests.

mod common;

use common::framework_scenarios as scenario;
use common::frameworks::{FLASK, noise, request, start};
use common::tempdir;

#[test]
fn the_venv_is_the_python_used() {
    scenario::the_venv_is_the_python_used(&FLASK);
}

#[test]
fn the_python_table_configures_the_app() {
    scenario::the_python_table_configures_the_app(&FLASK);
}

#[test]
fn served_preloaded() {
    scenario::served_preloaded(&FLASK);
}

#[test]
fn reload_serves_an_edit() {
    scenario::reload_serves_an_edit(&FLASK);
}

#[test]
fn routing_and_query_strings() {
    scenario::routing_and_query_strings(&FLASK);
}

#[test]
fn clients_that_close_after_their_response_are_no_warning() {
    scenario::clients_that_close_after_their_response_are_no_warning(&FLASK);
}

#[test]
fn cookies() {
    scenario::cookies(&FLASK);
}

#[test]
fn form_post() {
    scenario::form_post(&FLASK);
}

#[test]
fn upload_20_mib() {
    scenario::upload_20_mib(&FLASK);
}

#[test]
fn streamed_response() {
    scenario::streamed_response(&FLASK);
}

#[test]
fn the_iterable_is_closed_on_every_path() {
    scenario::the_iterable_is_closed_on_every_path(&FLASK);
}

#[test]
fn an_exception_mid_stream_cuts_the_response() {
    scenario::an_exception_mid_stream_cuts_the_response(&FLASK);
}

#[test]
fn file_download() {
    scenario::file_download(&FLASK);
}

#[test]
fn non_ascii_path() {
    scenario::non_ascii_path(&FLASK);
}

#[test]
fn a_trusted_proxy_s_client_and_scheme_reach_the_app() {
    scenario::a_trusted_proxy_s_client_and_scheme_reach_the_app(&FLASK);
}

#[test]
fn mounted_under_a_prefix() {
    scenario::mounted_under_a_prefix(&FLASK);
}

#[test]
fn exception_is_a_500() {
    scenario::exception_is_a_500(&FLASK);
}

#[test]
fn sys_exit_in_a_handler() {
    scenario::sys_exit_in_a_handler(&FLASK);
}

#[test]
fn os_exit_in_a_handler() {
    scenario::os_exit_in_a_handler(&FLASK);
}

/// Flask's `send_file` answers a `Range` with 206 and the asked bytes, from the file the
/// server's `wsgi.file_wrapper` was given (werkzeug wraps it to send only the range).
#[test]
fn a_download_range_is_the_asked_bytes() {
    let dir = tempdir();
    let data = noise(1_000_000, 31);
    let path = dir.path().join("ranged.bin");
    std::fs::write(&path, &data).unwrap();
    let server = start(&FLASK, 1, 1, &[], &[("FORKSERVE_TEST_DOWNLOAD", path.to_str().unwrap())]);
    for (range, from, to) in [("bytes=100-199", 100, 200), ("bytes=-10", 999_990, 1_000_000)] {
        let response = request(server.addr(), "GET", "/download", &[("Range", range)], b"");
        assert_eq!(response.status, 206, "{range}: {:?}", response.headers);
        let want = format!("bytes {from}-{}/1000000", to - 1);
        assert_eq!(response.header("content-range"), Some(want.as_str()), "{range}");
        assert!(response.body == data[from..to], "{range}: other bytes than asked");
    }
}

/// A `HUP` loads the app's new code in the new workers, and a change that cannot be imported
/// is rolled back: the running version serves on. (The module is written anew each time with
/// a different length, so Python's cached bytecode, keyed by mtime and size, is never taken for
/// the new source.)
#[test]
fn a_hup_serves_the_changed_code_and_rolls_back_a_broken_one() {
    use common::frameworks::get_ok;
    use nix::sys::signal::Signal;
    let dir = tempdir();
    let module = dir.path().join("hup_app.py");
    let version = |text: &str| {
        let source = format!(
            "from flask import Flask\napp = Flask(__name__)\n\n\n@app.get('/version')\n\
             def version():\n    return {text:?}\n"
        );
        std::fs::write(&module, source).unwrap();
    };
    version("one\n");
    let flags = ["-w", "2"].map(String::from);
    let server = common::frameworks::start_app("hup_app:app", dir.path(), &flags, &[]);
    assert_eq!(get_ok(server.addr(), "/version"), "one\n");
    version("version two\n");
    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete generation=2");
    // Until they are told to stop, the old workers may still take a connection.
    server.wait_for_nth("stopped: generation 2 took over", 2);
    for _ in 0..10 {
        assert_eq!(get_ok(server.addr(), "/version"), "version two\n");
    }
    std::fs::write(&module, "from flask import Flask\napp = Flask(__name__\n").unwrap();
    server.signal(Signal::SIGHUP);
    let rejected = server.wait_for("rolled back");
    assert!(rejected.contains("SyntaxError"), "{rejected}");
    for _ in 0..10 {
        assert_eq!(get_ok(server.addr(), "/version"), "version two\n");
    }
}
