//! The head scanner and checks, table-driven.

use super::*;

fn check(head: &str) -> Result<u64, u16> {
    let fields = head.lines().count();
    match check_head(head.as_bytes(), fields, 1024 * 1024) {
        Ok((Framing::None, _)) => Ok(0),
        Ok((Framing::Length(n), _)) => Ok(n),
        Ok((Framing::Chunked, _)) => Ok(u64::MAX),
        Err(s) => Err(s.as_u16()),
    }
}

#[test]
fn heads() {
    assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(0));
    assert_eq!(check("GET / HTTP/1.0\r\n\r\n"), Ok(0));
    assert_eq!(check("GET / HTTP/1.1\r\n\r\n"), Err(400));
    assert_eq!(check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"), Ok(5));
    assert_eq!(
        check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
        Ok(5)
    );
    assert_eq!(
        check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        Err(400)
    );
    assert_eq!(check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n"), Err(400));
    assert_eq!(
        check("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Ok(u64::MAX)
    );
    assert_eq!(
        check("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        Err(501)
    );
    assert_eq!(check("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), Err(505));
    assert_eq!(check("GET / http/1.1\r\nHost: a\r\n\r\n"), Err(400));
}

#[test]
fn check_head_decides_framing_persistence_and_status() {
    use Framing::*;
    use Persistence::*;
    type Decision = Result<(Framing, Persistence), u16>;
    let table: &[(&str, Decision)] = &[
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok((None, KeepAlive))),
        ("GET / HTTP/1.0\r\n\r\n", Ok((None, Close))),
        ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", Ok((None, KeepAlive))),
        ("GET / HTTP/1.1\r\nHost: a\r\nConnection: x, close\r\n\r\n", Ok((None, Close))),
        ("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\n", Ok((Length(7), KeepAlive))),
        ("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", Err(413)),
        ("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n", Err(400)),
        (
            "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            Ok((Chunked, KeepAlive)),
        ),
        (
            "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
            Err(400),
        ),
        ("PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, x\r\n\r\n", Err(400)),
        ("PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Err(400)),
        ("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", Err(400)),
        ("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", Err(501)),
        ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Ok((None, KeepAlive))),
        ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", Err(400)),
        ("GET http://a:80/x?y HTTP/1.1\r\nHost: a\r\n\r\n", Ok((None, KeepAlive))),
        ("GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", Err(400)),
        ("GET /a%4 HTTP/1.1\r\nHost: a\r\n\r\n", Err(400)),
        ("GET /?a={b} HTTP/1.1\r\nHost: a\r\n\r\n", Ok((None, KeepAlive))),
        ("GET /{b} HTTP/1.1\r\nHost: a\r\n\r\n", Err(400)),
        ("GET / HTTP/3.0\r\nHost: a\r\n\r\n", Err(505)),
    ];
    for (head, want) in table {
        let fields = head.lines().count();
        let got = check_head(head.as_bytes(), fields, 1024 * 1024).map_err(|s| s.as_u16());
        assert_eq!(&got, want, "{head:?}");
    }
}

#[test]
fn hyper_refuses_what_http_uri_cannot_read_and_overlong_targets() {
    let long = |n: usize| format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(n - 1));
    let table: &[(&str, Option<u16>)] = &[
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", None),
        ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", None),
        ("GET http://a:80/x?y HTTP/1.1\r\nHost: a\r\n\r\n", None),
        ("GET http://[::1]/ HTTP/1.1\r\nHost: a\r\n\r\n", None),
        ("GET http://[::1/ HTTP/1.1\r\nHost: a\r\n\r\n", Some(400)),
        ("GET http://x:1:2/ HTTP/1.1\r\nHost: a\r\n\r\n", Some(400)),
        ("GET http://x%41/ HTTP/1.1\r\nHost: a\r\n\r\n", Some(400)),
        (&long(HYPER_TARGET_MAX), None),
        (&long(HYPER_TARGET_MAX + 1), Some(414)),
    ];
    for (head, want) in table {
        assert_eq!(check(head).map(|_| ()), Ok(()), "the gate lets {head:.30} through");
        let got = hyper_refusal(head.as_bytes()).map(|s| s.as_u16());
        assert_eq!(got, *want, "{head:.30}");
    }
    // A head longer than the limit with a short target is not looked at twice for nothing.
    let fat = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "b".repeat(70_000));
    assert_eq!(hyper_refusal(fat.as_bytes()), None);
}

/// Feeds `input` to a fresh scanner in pieces of `piece` bytes; what it decided, and where.
fn scan_in_pieces(input: &[u8], piece: usize, limits: &HeadLimits) -> (usize, HeadStep) {
    let mut scan = HeadScan::default();
    let mut at = 0;
    let mut end = 0;
    while end < input.len() {
        end = (end + piece).min(input.len());
        let (stopped, step) = scan.scan(&input[..end], at, limits);
        if step != HeadStep::More {
            return (stopped, step);
        }
        at = stopped;
    }
    (at, HeadStep::More)
}

#[test]
fn the_head_scanner_finds_the_end_or_refuses_early_in_pieces_of_any_size() {
    let small = HeadLimits { line: 20, field_size: 10, fields: 2 };
    let status = |s: StatusCode| HeadStep::Refuse(s);
    let table: &[(&[u8], HeadLimits, usize, HeadStep)] = &[
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", small, 27, HeadStep::Complete { fields: 1 }),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET", small, 27, HeadStep::Complete { fields: 1 }),
        (b"GET / HTTP/1.1\r\nHost: a\r\n", small, 25, HeadStep::More),
        (b"GET / HTTP/1.1\nHost: a\r\n\r\n", small, 15, status(StatusCode::BAD_REQUEST)),
        (b"GET / HTTP/1.1\r\n\n", small, 17, status(StatusCode::BAD_REQUEST)),
        (b"GET /aaaaaaaaaaaaaaaaaaaaa HTTP/1.1", small, 35, status(StatusCode::URI_TOO_LONG)),
        (
            b"GET / HTTP/1.1\r\nX: 0123456789\r\n",
            small,
            31,
            status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        ),
        (
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n",
            small,
            34,
            status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        ),
    ];
    for (input, limits, stopped, step) in table {
        for piece in [1, 2, 7, input.len()] {
            let (at, got) = scan_in_pieces(input, piece, limits);
            let shown = String::from_utf8_lossy(input);
            assert_eq!(got, *step, "{shown:?} in pieces of {piece}");
            // In smaller pieces, a line may be refused as soon as it is too long.
            if piece == input.len() {
                assert_eq!(at, *stopped, "{shown:?}");
            }
        }
    }
}

#[test]
fn a_head_over_the_cap_is_refused_whatever_the_limits() {
    let none = HeadLimits { line: usize::MAX, field_size: usize::MAX, fields: usize::MAX };
    let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
    head.resize(HEAD_LIMIT + 1, b'a');
    let (_, step) = HeadScan::default().scan(&head, 0, &none);
    assert_eq!(step, HeadStep::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
}

#[test]
fn a_refused_heads_request_line_is_read_leniently() {
    type Line<'a> = Option<(&'a str, &'a str, &'a str)>;
    let table: &[(&[u8], Line<'_>)] = &[
        (b"POST /up HTTP/1.1\r\nHost: a\r\n", Some(("POST", "/up", "HTTP/1.1"))),
        (b"GET /x HTTP/9.9\r\n", Some(("GET", "/x", "HTTP/9.9"))),
        (b"GET /no-end HTTP/1.1", None),
        (b"GET  / HTTP/1.1\r\n", None),
        (b"G\xffT / HTTP/1.1\r\n", None),
        (b"\r\n", None),
    ];
    for (head, want) in table {
        assert_eq!(request_line(head), *want, "{:?}", String::from_utf8_lossy(head));
    }
}

#[test]
fn later_minor_versions_are_read_as_1_1() {
    let table: &[(&[u8], &[u8])] = &[
        (b"GET / HTTP/1.2\r\n", b"GET / HTTP/1.1\r\n"),
        (b"GET / HTTP/1.9\r\n", b"GET / HTTP/1.1\r\n"),
        (b"GET / HTTP/1.0\r\n", b"GET / HTTP/1.0\r\n"),
        (b"GET / HTTP/2.2\r\n", b"GET / HTTP/2.2\r\n"),
    ];
    for (input, want) in table {
        let mut head = input.to_vec();
        accept_minor_versions(&mut head);
        assert_eq!(&head, want);
    }
}
