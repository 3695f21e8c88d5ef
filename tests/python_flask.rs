//! The Flask app `tests/python/flask_app.py` served by the real binary from the test virtualenv
//! (`target/test-venv`, made by `tests/python/setup.sh`): issue 13's real-app scenarios, each
//! in `common::wsgi_apps`, shared with the Django app's tests.

mod common;

use common::python::{FLASK, noise, request, start};
use common::tempdir;
use common::wsgi_apps as scenario;

#[test]
fn the_venv_is_the_python_used() {
    scenario::the_venv_is_the_python_used(&FLASK);
}

#[test]
fn the_python_table_configures_the_app() {
    scenario::the_python_table_configures_the_app(&FLASK);
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
