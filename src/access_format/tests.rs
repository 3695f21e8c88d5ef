//! The access log's formats: nginx's, json, Gunicorn's atoms, and the errors in a custom one.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use http::{HeaderValue, StatusCode, Uri, Version};

use super::*;
use crate::request_end::Target;

fn line(format: &str, event: &RequestEnd<'_>) -> String {
    let format: AccessFormat = format.parse().unwrap();
    let mut out = Vec::new();
    let stamp =
        Stamp { local: "30/Nov/2026:08:00:00 +0000", iso: "2026-11-30T08:00:00+00:00", pid: 42 };
    format.write(&mut out, event, &stamp);
    String::from_utf8(out).unwrap()
}

fn with<'a>(uri: &'a Uri, agent: &'a HeaderValue) -> RequestEnd<'a> {
    RequestEnd {
        method: Some("GET"),
        target: Target::Uri(uri),
        version: Some(Version::HTTP_11),
        status: Some(StatusCode::OK),
        request_body_bytes: 0,
        response_body_bytes: 12,
        duration: Duration::from_micros(1_234_567),
        client: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))),
        peer: None,
        referer: None,
        user_agent: Some(agent),
        request_headers: &[],
        response_headers: &[],
        worker: 3,
        answered_by: AnsweredBy::App,
        ending: Ending::Complete,
    }
}

#[test]
fn named_formats_are_nginx_s() {
    let uri: Uri = "/a?b=1".parse().unwrap();
    let agent = HeaderValue::from_static("curl/8 \"x\"");
    let e = with(&uri, &agent);
    assert_eq!(
        line("common", &e),
        "203.0.113.7 - - [30/Nov/2026:08:00:00 +0000] \"GET /a?b=1 HTTP/1.1\" 200 12\n"
    );
    assert_eq!(
        line("combined", &e),
        "203.0.113.7 - - [30/Nov/2026:08:00:00 +0000] \"GET /a?b=1 HTTP/1.1\" 200 12 \"-\" \
         \"curl/8 \\x22x\\x22\"\n"
    );
    assert_eq!(AccessFormat::default().to_string(), "combined");
}

#[test]
fn custom_atoms() {
    let uri: Uri = "/a/b?q=1".parse().unwrap();
    let agent = HeaderValue::from_static("ua");
    let mut e = with(&uri, &agent);
    let f =
        "%(m)s|%(U)s|%(q)s|%(H)s|%(D)s|%(M)s|%(L)s|%(T)s|%(p)s|%({User-Agent}i)s|%(c)s|%%|%(b)s";
    assert_eq!(line(f, &e), "GET|/a/b|q=1|HTTP/1.1|1234567|1234|1.234567|1|<42>|ua|OK|%|12\n");
    // Cut before any response: nginx's 499, and not complete.
    e.status = None;
    e.ending = Ending::Cut;
    e.response_body_bytes = 0;
    assert_eq!(line("%(s)s %(b)s %(B)s %(c)s", &e), "499 - 0 -\n");
}

#[test]
fn json_is_one_object_per_line() {
    let uri: Uri = "/x".parse().unwrap();
    let agent = HeaderValue::from_bytes(b"a\t\xffb").unwrap();
    let mut e = with(&uri, &agent);
    e.ending = Ending::Cut;
    let got = line("json", &e);
    assert_eq!(
        got,
        "{\"time\":\"2026-11-30T08:00:00+00:00\",\"client\":\"203.0.113.7\",\"method\":\"GET\",\
         \"target\":\"/x\",\"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes\":12,\
         \"request_bytes\":0,\"duration_us\":1234567,\"referer\":null,\
         \"user_agent\":\"a\\u0009\u{fffd}b\",\"answered_by\":\"app\",\"complete\":false,\
         \"worker\":3,\"pid\":42}\n"
    );
}

#[test]
fn unknown_atoms_are_refused_where_they_are() {
    let err = "%(h)s %(zz)s".parse::<AccessFormat>().unwrap_err();
    assert!(err.contains("unknown atom `%(zz)s` at character 7"), "{err}");
    let err = "%(h)s %({x id}o)s".parse::<AccessFormat>().unwrap_err();
    assert!(err.contains("bad header name in `%({x id}o)s` at character 7"), "{err}");
    let err = "%({x-id}z)s".parse::<AccessFormat>().unwrap_err();
    assert!(err.contains("unknown atom `%({x-id}z)s` at character 1"), "{err}");
    assert!("%(h".parse::<AccessFormat>().unwrap_err().contains("no `)s`"));
    assert!("100%".parse::<AccessFormat>().unwrap_err().contains("starts no atom"));
}

#[test]
fn local_time_reads_as_nginx_writes_it() {
    let (local, iso) = local_times(SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 365));
    // The zone is the machine's; the shape is fixed.
    assert_eq!(local.len(), "01/Jan/1971:00:00:00 +0000".len(), "{local}");
    assert_eq!(iso.len(), "1971-01-01T00:00:00+00:00".len(), "{iso}");
}

#[test]
fn header_atoms_read_the_headers_copied_into_the_event() {
    let uri: Uri = "/".parse().unwrap();
    let agent = HeaderValue::from_static("ua");
    let format: AccessFormat =
        "%({X-Id}i)s %({content-type}o)s %({x-id}i)s %({X-Gone}o)s %({User-Agent}i)s"
            .parse()
            .unwrap();
    assert_eq!(format.request_headers, ["x-id"]);
    assert_eq!(format.response_headers, ["content-type", "x-gone"]);
    // Bound to a worker's hooks that already copy another response header: the indices are
    // the event's.
    let hooks = crate::request_end::Hooks::default();
    hooks.want_header(Side::Response, &HeaderName::from_static("x-other"));
    let bound = format.bind(&hooks);
    let request = [Some(HeaderValue::from_static("r1"))];
    let response = [None, Some(HeaderValue::from_static("text/plain")), None];
    let mut e = with(&uri, &agent);
    e.request_headers = &request;
    e.response_headers = &response;
    let mut out = Vec::new();
    let stamp = Stamp { local: "", iso: "", pid: 1 };
    bound.write(&mut out, &e, &stamp);
    assert_eq!(String::from_utf8(out).unwrap(), "r1 text/plain r1 - ua\n");
}

#[test]
fn numbers_addresses_and_escapes_are_written_as_display_would() {
    for n in [0u64, 7, 10, 99, 200, 65535, u64::MAX] {
        let mut out = Vec::new();
        super::push_u64(&mut out, n);
        assert_eq!(out, n.to_string().as_bytes());
    }
    for ip in ["0.0.0.0", "127.0.0.1", "10.200.3.255", "::1", "2001:db8::8:800:200c:417a"] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let mut out = Vec::new();
        super::push_ip(&mut out, ip);
        assert_eq!(out, ip.to_string().as_bytes());
    }
    let mut out = Vec::new();
    super::escaped(&mut out, b"a \"q\" \\ \x01\x7f\xff end");
    assert_eq!(out, br#"a \x22q\x22 \x5C \x01\x7F\xFF end"#);
}
