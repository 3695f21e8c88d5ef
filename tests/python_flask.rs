//! The Flask app `tests/python/flask_app.py` served by the real binary from the test virtualenv
//! (`target/test-venv`, made by `tests/python/setup.sh`): issue 13's real-app scenarios, each
//! in `common::wsgi_apps`, shared with the Django app's tests.

mod common;

use common::python::FLASK;
use common::wsgi_apps as scenario;

#[test]
fn the_venv_is_the_python_used() {
    scenario::the_venv_is_the_python_used(&FLASK);
}

#[test]
fn routing_and_query_strings() {
    scenario::routing_and_query_strings(&FLASK);
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
fn file_download() {
    scenario::file_download(&FLASK);
}

#[test]
fn non_ascii_path() {
    scenario::non_ascii_path(&FLASK);
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
