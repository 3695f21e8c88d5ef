//! The Django project `tests/python/django_site/` served by the real binary from the test virtualenv
//! (`target/test-venv`, made by `tests/python/setup.sh`): issue 13's real-app scenarios, each
//! in `common::framework_scenarios`, shared with the Flask app's tests.

mod common;

use common::framework_scenarios as scenario;
use common::frameworks::DJANGO;

#[test]
fn the_venv_is_the_python_used() {
    scenario::the_venv_is_the_python_used(&DJANGO);
}

#[test]
fn the_python_table_configures_the_app() {
    scenario::the_python_table_configures_the_app(&DJANGO);
}

#[test]
fn served_preloaded() {
    scenario::served_preloaded(&DJANGO);
}

#[test]
fn reload_serves_an_edit() {
    scenario::reload_serves_an_edit(&DJANGO);
}

#[test]
fn routing_and_query_strings() {
    scenario::routing_and_query_strings(&DJANGO);
}

#[test]
fn clients_that_close_after_their_response_are_no_warning() {
    scenario::clients_that_close_after_their_response_are_no_warning(&DJANGO);
}

#[test]
fn cookies() {
    scenario::cookies(&DJANGO);
}

#[test]
fn form_post() {
    scenario::form_post(&DJANGO);
}

#[test]
fn upload_20_mib() {
    scenario::upload_20_mib(&DJANGO);
}

#[test]
fn streamed_response() {
    scenario::streamed_response(&DJANGO);
}

#[test]
fn the_iterable_is_closed_on_every_path() {
    scenario::the_iterable_is_closed_on_every_path(&DJANGO);
}

#[test]
fn an_exception_mid_stream_cuts_the_response() {
    scenario::an_exception_mid_stream_cuts_the_response(&DJANGO);
}

#[test]
fn file_download() {
    scenario::file_download(&DJANGO);
}

#[test]
fn non_ascii_path() {
    scenario::non_ascii_path(&DJANGO);
}

#[test]
fn a_trusted_proxy_s_client_and_scheme_reach_the_app() {
    scenario::a_trusted_proxy_s_client_and_scheme_reach_the_app(&DJANGO);
}

#[test]
fn mounted_under_a_prefix() {
    scenario::mounted_under_a_prefix(&DJANGO);
}

#[test]
fn exception_is_a_500() {
    scenario::exception_is_a_500(&DJANGO);
}

#[test]
fn sys_exit_in_a_handler() {
    scenario::sys_exit_in_a_handler(&DJANGO);
}

#[test]
fn os_exit_in_a_handler() {
    scenario::os_exit_in_a_handler(&DJANGO);
}
