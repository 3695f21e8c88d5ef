//! HTTP/1.1 conformance of what reaches the app: raw requests over real sockets to the real
//! binary (the demo app, whose `/echo` reads the body), each case citing the section of
//! RFC 9112 (message syntax) or RFC 9110 (semantics) it follows, and asserting the status
//! code, or that the connection is closed.
//!
//! The server runs with `max_body_size = 1 MiB`; the timeout cases use a second one with
//! one-second timeouts, the large heads one that allows 1000 fields, and what the binary's own
//! router answers (`OPTIONS *`, escapes that are not UTF-8) is asked of the `forkserve` binary.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::http::{Conn, Response};
use common::{Server, example};

/// What a case expects.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The first response has this status (the connection may stay open).
    Status(u16),
    /// The first response has this status, and then the connection is closed.
    Close(u16),
    /// Accepted: the first response is the app's, not one of the gate's refusals.
    Passes,
    /// Answered 200 with this body (from `/echo`).
    Echo(&'static str),
    /// These responses, in order.
    Seq(&'static [u16]),
}

/// The statuses with which forkserve refuses a request itself.
const REFUSALS: [u16; 7] = [400, 408, 413, 414, 431, 501, 505];

struct Case {
    /// Where the rule comes from.
    cite: &'static str,
    what: &'static str,
    request: Vec<u8>,
    expect: Expect,
}

fn case(
    cite: &'static str,
    what: &'static str,
    request: impl Into<Vec<u8>>,
    expect: Expect,
) -> Case {
    Case { cite, what, request: request.into(), expect }
}

fn get(head: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: t\r\n{head}\r\n").into_bytes()
}

fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /echo HTTP/1.1\r\nHost: t\r\n{headers}\r\n{body}").into_bytes()
}

fn chunked(body: &str) -> Vec<u8> {
    post("Transfer-Encoding: chunked\r\n", body)
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(4100));
    let max_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(4094 - 15));
    let long_field = get(&format!("X-Long: {}\r\n", "v".repeat(8200)));
    let many_fields: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    let max_fields: String = (0..99).map(|i| format!("X-{i}: v\r\n")).collect();
    vec![
        // Request line (RFC 9112 §3).
        case("9112 §3", "a plain GET", get(""), Passes),
        case(
            "9112 §3.2.2",
            "absolute-form target",
            "GET http://t/ HTTP/1.1\r\nHost: t\r\n\r\n",
            Passes,
        ),
        case(
            "9112 §3.2.4",
            "asterisk-form for OPTIONS",
            "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
            Passes,
        ),
        case(
            "9110 §9.1",
            "methods are case-sensitive tokens: 'get' is a method",
            "get / HTTP/1.1\r\nHost: t\r\n\r\n",
            Passes,
        ),
        case("9110 §9.1", "an extension method", "PURGE / HTTP/1.1\r\nHost: t\r\n\r\n", Passes),
        case(
            "9112 §3.1",
            "a method that is not a token",
            "GE(T / HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case("9112 §3", "no request-target", "GET HTTP/1.1\r\nHost: t\r\n\r\n", Close(400)),
        case(
            "9112 §3",
            "two spaces after the method",
            "GET  / HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case("9112 §3", "a tab as separator", "GET\t/ HTTP/1.1\r\nHost: t\r\n\r\n", Close(400)),
        case(
            "9112 §3.2",
            "a space inside the target",
            "GET /a b HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case(
            "9112 §3.2",
            "a fragment in the target",
            "GET /a#b HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case("9112 §3.2", "a relative target", "GET a/b HTTP/1.1\r\nHost: t\r\n\r\n", Close(400)),
        case(
            "9110 §9.3.6",
            "CONNECT: no tunnels here (501, and closed: tunnel bytes may follow)",
            "CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n",
            Close(501),
        ),
        case(
            "9112 §3.2.3",
            "authority-form outside CONNECT",
            "GET t:80 HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case(
            "9112 §3.2.4",
            "asterisk-form outside OPTIONS",
            "GET * HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case(
            "9112 §3.2, 3986 §2",
            "a multi-byte UTF-8 character in the target (once a panic)",
            "GET /abcdeδ HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case(
            "9112 §3.2, 3986 §2",
            "a UTF-8 character across byte 8 of the target (once a panic)",
            "GET https:/éx HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case(
            "9112 §3.2, 3986 §2",
            "a Latin-1 byte in the target",
            b"GET /caf\xe9 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            Close(400),
        ),
        case(
            "3986 §3.3",
            "a brace in the path",
            "GET /a{b} HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case("3986 §3.3", "a pipe in the path", "GET /a|b HTTP/1.1\r\nHost: t\r\n\r\n", Close(400)),
        case(
            "3986 §3.3",
            "a backslash in the path",
            "GET /a\\b HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case(
            "3986 §3.3",
            "a quote in the path",
            "GET /a\"b HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case(
            "3986 §3.3",
            "a '<' in the query",
            "GET /?a<b HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case(
            "3986 §2.1",
            "a '%' not followed by two hex digits",
            "GET /a%zzb HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case("3986 §2.1", "a '%' at the end", "GET /a% HTTP/1.1\r\nHost: t\r\n\r\n", Close(400)),
        case(
            "3986 §3.4, WHATWG URL",
            "what browsers leave unescaped in a query",
            "GET /?q={\"a\":[1|2]}^`\\ HTTP/1.1\r\nHost: t\r\n\r\n".replace('"', "%22"),
            Passes,
        ),
        case(
            "3986 §3",
            "every character RFC 3986 allows in a path and query",
            "GET /azAZ09-._~!$&'()*+,;=:@%2F/?/?x=%41 HTTP/1.1\r\nHost: t\r\n\r\n",
            Passes,
        ),
        case(
            "9110 §4.2.4",
            "userinfo in an absolute-form target",
            "GET http://u@t/ HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case(
            "9112 §3.2.2",
            "an absolute-form target with an IPv6 authority",
            "GET http://[::1]:80/x?y HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
            Passes,
        ),
        case(
            "9112 §3.2",
            "a NUL in the target",
            "GET /a\0b HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case(
            "9112 §3.2",
            "a control character in the target",
            "GET /a\x01b HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case(
            "9110 §15.6.6",
            "a major version other than 1",
            "GET / HTTP/2.0\r\nHost: t\r\n\r\n",
            Close(505),
        ),
        case(
            "9110 §2.5",
            "a later minor version is served as 1.1",
            "GET / HTTP/1.2\r\nHost: t\r\n\r\n",
            Passes,
        ),
        case(
            "9112 §2.3",
            "the version is case-sensitive",
            "GET / http/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case(
            "9112 §2.3",
            "a version with two digits",
            "GET / HTTP/1.10\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case("9112 §2.3", "no version (HTTP/0.9 is not served)", "GET /\r\n\r\n", Close(400)),
        case(
            "9112 §3 (limit_request_line)",
            "a request line over 4094 bytes",
            long_target,
            Close(414),
        ),
        case(
            "9112 §3 (limit_request_line)",
            "a request line of exactly 4094 bytes",
            max_target,
            Status(404),
        ),
        case(
            "9112 §2.2",
            "empty lines before the request line are ignored",
            "\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
            Passes,
        ),
        case(
            "9112 §2.2",
            "bare LF line endings (a recipient MAY accept them: refused, a smuggling shape)",
            "GET / HTTP/1.1\nHost: t\n\n",
            Close(400),
        ),
        case(
            "9112 §2.2",
            "a field line ended by a bare LF hides a Content-Length from a CRLF-only parser",
            post("Dummy: x\nContent-Length: 23\r\n", "GET /404 HTTP/1.1\r\nX: Y\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §2.2",
            "a head ended by a bare LF",
            "GET / HTTP/1.1\r\nHost: t\r\n\n",
            Close(400),
        ),
        case(
            "9112 §2.2",
            "a request line ended by a bare LF",
            "GET / HTTP/1.1\nHost: t\r\n\r\n",
            Close(400),
        ),
        case(
            "9112 §2.2",
            "more than 64 bytes of empty lines before a request",
            format!("{}GET / HTTP/1.1\r\nHost: t\r\n\r\n", "\r\n".repeat(33)),
            Close(400),
        ),
        case(
            "9112 §2.2",
            "a bare CR in the request line",
            "GET /\r HTTP/1.1\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case(
            "9112 §2.2",
            "whitespace before the first field line",
            "GET / HTTP/1.1\r\n Host: t\r\n\r\n",
            Close(400),
        ),
        // Host (RFC 9112 §3.2, RFC 9110 §7.2).
        case("9112 §3.2", "HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", Close(400)),
        case(
            "9112 §3.2",
            "two Host fields",
            "GET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n",
            Close(400),
        ),
        case(
            "9112 §3.2",
            "two Host fields with the same value",
            "GET / HTTP/1.1\r\nHost: t\r\nHost: t\r\n\r\n",
            Close(400),
        ),
        case(
            "9110 §7.2",
            "a Host that is a list",
            "GET / HTTP/1.1\r\nHost: t, u\r\n\r\n",
            Close(400),
        ),
        case("9110 §7.2", "an empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", Passes),
        case("9110 §7.2", "a Host with a slash", "GET / HTTP/1.1\r\nHost: t/u\r\n\r\n", Close(400)),
        case(
            "9110 §4.2.4",
            "a Host with userinfo",
            "GET / HTTP/1.1\r\nHost: u@t\r\n\r\n",
            Close(400),
        ),
        case("9110 §7.2", "a Host with a port", "GET / HTTP/1.1\r\nHost: t:8080\r\n\r\n", Passes),
        case("9110 §7.2", "an IPv6 Host", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", Passes),
        case("9112 §3.2", "HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", Passes),
        case(
            "9110 §5.1",
            "field names are case-insensitive",
            "GET / HTTP/1.1\r\nHOST: t\r\n\r\n",
            Passes,
        ),
        // Field syntax (RFC 9112 §5, RFC 9110 §5.5).
        case(
            "9112 §5.1",
            "whitespace between a field name and the colon",
            "GET / HTTP/1.1\r\nHost : t\r\n\r\n",
            Close(400),
        ),
        case("9112 §5.2", "obs-fold (a continuation line)", get("X-A: b\r\n c\r\n"), Close(400)),
        case("9110 §5.1", "a field name that is not a token", get("X(A): b\r\n"), Close(400)),
        case("9112 §5", "an empty field name", get(": b\r\n"), Close(400)),
        case("9112 §5", "a field line without a colon", get("X-A b\r\n"), Close(400)),
        case("9110 §5.5", "a NUL in a field value", get("X-A: b\0c\r\n"), Close(400)),
        case("9110 §5.5", "a bare CR in a field value", get("X-A: b\rc\r\n"), Close(400)),
        case("9110 §5.5", "a DEL in a field value", get("X-A: b\x7fc\r\n"), Close(400)),
        case(
            "9110 §5.5",
            "obs-text in a field value",
            b"GET / HTTP/1.1\r\nHost: t\r\nX-A: caf\xe9\r\n\r\n".to_vec(),
            Passes,
        ),
        case(
            "9110 §5.5",
            "leading and trailing whitespace in a value",
            get("X-A:   b   \r\n"),
            Passes,
        ),
        case("9110 §5.5", "a tab inside a value", get("X-A: b\tc\r\n"), Passes),
        case(
            "9112 §5 (limit_request_field_size)",
            "a field line over 8190 bytes",
            long_field,
            Close(431),
        ),
        case("9112 §5 (limit_request_fields)", "101 header fields", get(&many_fields), Close(431)),
        case("9112 §5 (limit_request_fields)", "100 header fields", get(&max_fields), Passes),
        // Content-Length (RFC 9112 §6.2, RFC 9110 §8.6).
        case(
            "9112 §6.2",
            "a body by Content-Length",
            post("Content-Length: 5\r\n", "hello"),
            Echo("hello"),
        ),
        case("9110 §8.6", "Content-Length 0", post("Content-Length: 0\r\n", ""), Echo("")),
        case(
            "9110 §8.6",
            "a Content-Length with a plus sign",
            post("Content-Length: +5\r\n", "hello"),
            Close(400),
        ),
        case(
            "9110 §8.6",
            "a negative Content-Length",
            post("Content-Length: -5\r\n", "hello"),
            Close(400),
        ),
        case(
            "9110 §8.6",
            "a hexadecimal Content-Length",
            post("Content-Length: 0x5\r\n", "hello"),
            Close(400),
        ),
        case(
            "9110 §8.6",
            "a Content-Length with inner space",
            post("Content-Length: 1 2\r\n", "hello"),
            Close(400),
        ),
        case(
            "9110 §8.6",
            "an empty Content-Length",
            post("Content-Length:\r\n", "hello"),
            Close(400),
        ),
        case(
            "9110 §8.6",
            "a Content-Length that overflows",
            post("Content-Length: 99999999999999999999999\r\n", ""),
            Close(400),
        ),
        case(
            "9110 §8.6",
            "two equal Content-Lengths",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            Echo("hello"),
        ),
        case(
            "9112 §6.3",
            "two different Content-Lengths",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            Close(400),
        ),
        case(
            "9110 §8.6",
            "a Content-Length list, even of equal values (refused, not rewritten)",
            post("Content-Length: 5, 5\r\n", "hello"),
            Close(400),
        ),
        case(
            "9112 §6.3",
            "a Content-Length list of different values",
            post("Content-Length: 5, 6\r\n", "hello!"),
            Close(400),
        ),
        case(
            "9110 §15.5.14 (max_body_size)",
            "a Content-Length over max_body_size",
            post("Content-Length: 2000000\r\n", ""),
            Close(413),
        ),
        // Transfer-Encoding and smuggling shapes (RFC 9112 §6.1, §6.3, §7).
        case("9112 §7.1", "a chunked body", chunked("5\r\nhello\r\n0\r\n\r\n"), Echo("hello")),
        case(
            "9112 §7.1",
            "several chunks",
            chunked("2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"),
            Echo("hello"),
        ),
        case(
            "9112 §7.1.1",
            "a chunk extension",
            chunked("5;ext=1\r\nhello\r\n0\r\n\r\n"),
            Echo("hello"),
        ),
        case(
            "9112 §7.1.1",
            "a quoted chunk extension",
            chunked("5;a=\"b c\"\r\nhello\r\n0\r\n\r\n"),
            Echo("hello"),
        ),
        case(
            "9112 §7.1.1",
            "whitespace before a chunk extension",
            chunked("5 ;a=b\r\nhello\r\n0\r\n\r\n"),
            Echo("hello"),
        ),
        case(
            "9112 §7.1.2",
            "a trailer section",
            chunked("5\r\nhello\r\n0\r\nX-T: v\r\n\r\n"),
            Echo("hello\nx-t: v"),
        ),
        case(
            "9112 §7.1",
            "hexadecimal sizes in upper and lower case",
            chunked("A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n"),
            Echo("01234567890123456789"),
        ),
        case(
            "9112 §6.3 (CL.TE)",
            "Content-Length with Transfer-Encoding",
            post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §6.3 (TE.CL)",
            "Transfer-Encoding before Content-Length",
            post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §6.1",
            "a last coding that is not chunked",
            post("Transfer-Encoding: gzip\r\n", "hello"),
            Close(400),
        ),
        case(
            "9112 §6.1",
            "chunked, then another coding",
            post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §6.1",
            "a coding the server does not decode before chunked",
            post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            Close(501),
        ),
        case(
            "9112 §6.1 (TE.TE)",
            "chunked twice",
            post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §6.1 (TE.TE)",
            "chunked in two fields",
            post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §6.1",
            "Transfer-Encoding in HTTP/1.0",
            "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            Close(400),
        ),
        case(
            "9112 §6.1 (TE.TE)",
            "an obfuscated coding name",
            post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §6.1 (TE.TE)",
            "a coding with a parameter",
            post("Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §6.1 (TE.TE)",
            "a vertical tab after chunked",
            post("Transfer-Encoding: chunked\x0b\r\n", "0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §7",
            "coding names are case-insensitive",
            post("Transfer-Encoding: Chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Echo("hello"),
        ),
        case(
            "9110 §5.6.1",
            "optional whitespace around a coding",
            post("Transfer-Encoding:\t chunked \r\n", "5\r\nhello\r\n0\r\n\r\n"),
            Echo("hello"),
        ),
        case(
            "9112 §6.3 (TE.TE)",
            "Transfer_Encoding is not Transfer-Encoding: the body is a next request",
            post("Transfer_Encoding: chunked\r\n", "0\r\n\r\n"),
            Seq(&[200, 400]),
        ),
        // Chunk syntax (RFC 9112 §7.1).
        case(
            "9112 §7.1",
            "a chunk size that is not hexadecimal",
            chunked("zz\r\nhello\r\n0\r\n\r\n"),
            Close(400),
        ),
        case("9112 §7.1", "an empty chunk size", chunked("\r\nhello\r\n0\r\n\r\n"), Close(400)),
        case(
            "9112 §7.1",
            "whitespace before a chunk size",
            chunked(" 5\r\nhello\r\n0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §7.1",
            "a chunk size with a 0x prefix",
            chunked("0x5\r\nhello\r\n0\r\n\r\n"),
            Close(400),
        ),
        case("9112 §7.1", "a negative chunk size", chunked("-5\r\nhello\r\n0\r\n\r\n"), Close(400)),
        case(
            "9112 §7.1",
            "a chunk size of 17 hex digits",
            chunked("10000000000000000\r\nhello\r\n0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §7.1.1",
            "whitespace after a size with no extension",
            chunked("5 \r\nhello\r\n0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §7.1",
            "chunk data longer than its size",
            chunked("3\r\nhello\r\n0\r\n\r\n"),
            Close(400),
        ),
        case("9112 §7.1", "no CRLF after chunk data", chunked("5\r\nhelloX0\r\n\r\n"), Close(400)),
        case(
            "9112 §7.1",
            "a bare LF ending a chunk size line",
            chunked("5\nhello\r\n0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §7.1.1",
            "a control character in a chunk extension",
            chunked("5;a\x01\r\nhello\r\n0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §7.1.1",
            "a chunk extension with an empty name",
            chunked("5;\r\nhello\r\n0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §7.1.1",
            "a chunk extension with an empty name before another",
            chunked("5;;a=b\r\nhello\r\n0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §7.1.1",
            "a chunk extension with an empty value",
            chunked("5;a=\r\nhello\r\n0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §7.1.1",
            "a chunk extension name that is not a token",
            chunked("5;a/b\r\nhello\r\n0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §7.1.1",
            "an unterminated quoted chunk extension",
            chunked("5;a=\"b\r\nhello\r\n0\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §7.1.1",
            "chunk extensions with whitespace, a bare name and an escaped quote",
            chunked("5 ; a ; b = \"c\\\"d\";e=f\r\nhello\r\n0\r\n\r\n"),
            Echo("hello"),
        ),
        case(
            "9110 §6.5.1",
            "Content-Length in a trailer section",
            chunked("5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n"),
            Close(400),
        ),
        case(
            "9110 §6.5.1",
            "Transfer-Encoding in a trailer section",
            chunked("5\r\nhello\r\n0\r\nX-A: b\r\ntransfer-ENCODING: chunked\r\n\r\n"),
            Close(400),
        ),
        case(
            "9110 §6.5.1",
            "Host in a trailer section",
            chunked("5\r\nhello\r\n0\r\nHost: u\r\n\r\n"),
            Close(400),
        ),
        case(
            "9110 §6.5.1",
            "trailer fields whose names only start like a refused one",
            chunked("5\r\nhello\r\n0\r\nHost-X: u\r\nContent-Length-Y: 1\r\n\r\n"),
            Echo("hello\nhost-x: u\ncontent-length-y: 1"),
        ),
        case(
            "9110 §15.5.14 (max_body_size)",
            "a chunked body over max_body_size",
            chunked("200000\r\n"),
            Close(413),
        ),
        case(
            "9112 §7.1.2",
            "a trailer line that is not a field",
            chunked("5\r\nhello\r\n0\r\nno colon here\r\n\r\n"),
            Close(400),
        ),
        case(
            "9112 §7.1.2",
            "a trailer section over 8 KiB",
            chunked(&format!("5\r\nhello\r\n0\r\nX-T: {}\r\n\r\n", "v".repeat(8200))),
            Close(400),
        ),
        case(
            "9112 §7.1.1",
            "chunk extensions over 8 KiB",
            chunked(&format!("5;e={}\r\nhello\r\n0\r\n\r\n", "x".repeat(8200))),
            Close(400),
        ),
        // Messages on one connection (RFC 9112 §9).
        case(
            "9112 §9.3.2",
            "two pipelined requests",
            [get(""), get("")].concat(),
            Seq(&[200, 200]),
        ),
        case(
            "9112 §9.3.2",
            "a valid request, then a bad one",
            [get(""), b"GET / HTTP/1.1\r\n\r\n".to_vec()].concat(),
            Seq(&[200, 400]),
        ),
        case(
            "9112 §9.3",
            "HTTP/1.0 closes after the response",
            "GET / HTTP/1.0\r\n\r\n",
            Close(200),
        ),
        case(
            "9112 §9.6",
            "Connection: close is honoured",
            get("Connection: close\r\n"),
            Close(200),
        ),
    ]
}

/// Sends `request` on a new connection and reads what comes back: the responses, and whether
/// the server closed the connection after them.
fn exchange(addr: SocketAddr, request: &[u8], responses: usize) -> (Vec<Response>, bool) {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut conn = Conn::over(stream);
    conn.send(request).unwrap();
    let mut got = Vec::new();
    for _ in 0..responses {
        match conn.read_response(false) {
            Ok(r) => got.push(r),
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

/// Whether the server closes `conn` soon (EOF or reset), without sending anything more.
fn closes(addr: SocketAddr, request: &[u8]) -> (Option<u16>, bool) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(request).unwrap();
    let mut conn = Conn::over(stream.try_clone().unwrap());
    let status = conn.read_response(false).ok().map(|r| r.status);
    if status.is_none() {
        return (None, true);
    }
    let mut buf = [0u8; 64];
    let closed = matches!(stream.read(&mut buf), Ok(0))
        || matches!(stream.read(&mut buf), Err(e) if e.kind() == io::ErrorKind::ConnectionReset);
    (status, closed)
}

#[test]
fn rfc_9110_and_9112_conformance() {
    let server = Server::start(
        &example("demo"),
        &["-w", "1", "-b", "127.0.0.1:0", "--max-body-size", "1048576"],
    );
    let addr = server.addr();
    let cases = cases();
    assert!(cases.len() >= 80, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let outcome = match c.expect {
            Expect::Status(want) => {
                let (got, _) = exchange(addr, &c.request, 1);
                match got.first() {
                    Some(r) if r.status == want => Ok(()),
                    other => Err(format!("status {:?}", other.map(|r| r.status))),
                }
            }
            Expect::Passes => {
                let (got, _) = exchange(addr, &c.request, 1);
                match got.first() {
                    Some(r) if !REFUSALS.contains(&r.status) => Ok(()),
                    other => Err(format!("status {:?}", other.map(|r| r.status))),
                }
            }
            Expect::Echo(body) => {
                let (got, _) = exchange(addr, &c.request, 1);
                match got.first() {
                    Some(r) if r.status == 200 && r.text() == body => Ok(()),
                    other => Err(format!("{:?}", other.map(|r| (r.status, r.text())))),
                }
            }
            Expect::Close(want) => match closes(addr, &c.request) {
                (Some(status), true) if status == want => Ok(()),
                other => Err(format!("(status, closed) = {other:?}")),
            },
            Expect::Seq(want) => {
                let (got, _) = exchange(addr, &c.request, want.len());
                let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
                if statuses == want { Ok(()) } else { Err(format!("statuses {statuses:?}")) }
            }
        };
        if let Err(e) = outcome {
            failures.push(format!("RFC {} – {}: expected {:?}, got {e}", c.cite, c.what, c.expect));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn expect_100_continue_waits_for_the_body() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", "127.0.0.1:0"]);
    let stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut conn = Conn::over(stream);
    // RFC 9110 §10.1.1: the server answers 100 before the client sends the body.
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    assert_eq!(conn.read_response(true).unwrap().status, 100);
    conn.send(b"hello").unwrap();
    let response = conn.read_response(false).unwrap();
    assert_eq!((response.status, response.text().as_str()), (200, "hello"));
}

#[test]
fn timeouts_close_slow_and_idle_connections() {
    let server = Server::start(
        &example("demo"),
        &[
            "-w",
            "1",
            "-b",
            "127.0.0.1:0",
            "--header-timeout",
            "1",
            "--body-timeout",
            "1",
            "--keepalive",
            "1",
        ],
    );
    let addr = server.addr();
    // A head that never ends: 408, then closed (slowloris).
    let started = Instant::now();
    let (status, closed) = closes(addr, b"GET / HTTP/1.1\r\nHost: t\r\n");
    assert_eq!((status, closed), (Some(408), true));
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    // Nothing at all: closed quietly.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(idle.read(&mut buf).unwrap(), 0, "a silent connection is closed without a word");
    // A body that stalls: 408 (the app's careless 200 is replaced), then closed.
    let (status, closed) =
        closes(addr, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello");
    assert_eq!((status, closed), (Some(408), true));
    // Idle keep-alive: closed quietly after keepalive.
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut conn = Conn::over(stream.try_clone().unwrap());
    assert_eq!(conn.get("/").unwrap().status, 200);
    let idle_from = Instant::now();
    assert_eq!((&stream).read(&mut buf).unwrap(), 0);
    let idle_for = idle_from.elapsed();
    assert!(idle_for >= Duration::from_millis(800), "closed after {idle_for:?}");
}

#[test]
fn a_thousand_slow_header_connections_do_not_keep_a_normal_client_waiting() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // The test holds 1000 sockets; so do the server's workers between them.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(hard >= 1200, "the open-files hard limit ({hard}) is too low for this test");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    let server = Server::start(&example("demo"), &["-w", "2", "-b", "127.0.0.1:0"]);
    let addr = server.addr();
    // Slowloris: each connection sends part of a head and then trickles.
    let mut slow: Vec<TcpStream> = (0..1000)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(format!("GET /{i} HTTP/1.1\r\nHost: t\r\nX-Slow: ").as_bytes()).unwrap();
            s
        })
        .collect();
    for s in &mut slow {
        s.write_all(b"a").unwrap();
    }
    let started = Instant::now();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let response = Conn::over(stream).get("/").unwrap();
    let took = started.elapsed();
    assert_eq!(response.status, 200);
    assert!(took < Duration::from_secs(1), "a normal request took {took:?}");
    // The slow ones are still held (not yet at header_timeout), not answered.
    let mut first = slow.swap_remove(0);
    first.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 16];
    assert!(first.read(&mut buf).is_err(), "a slow connection was answered early");
}

/// Reads everything until the server closes the connection.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

#[test]
fn review_regressions_timers_and_pipelines() {
    let server = Server::start(
        &example("demo"),
        &[
            "-w",
            "1",
            "-b",
            "127.0.0.1:0",
            "--header-timeout",
            "2",
            "--body-timeout",
            "1",
            "--keepalive",
            "1",
        ],
    );
    let addr = server.addr();

    // header_timeout counts from a head's first byte, not from its last: a head trickled one
    // byte at a time is refused in time.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let started = Instant::now();
    for b in b"GET / HTTP/1.1\r\nHost: t\r\nX-A: b".iter() {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&read_to_close(&mut slow)).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // A client that reads its response slowly gets all of it: the keep-alive wait starts
    // once the response has been sent.
    let mut reader = TcpStream::connect(addr).unwrap();
    reader.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = vec![b'x'; 4 << 20];
    let head = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len());
    reader.write_all(head.as_bytes()).unwrap();
    reader.write_all(&body).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let mut conn = Conn::over(reader);
    let response = conn.read_response(false).unwrap();
    assert_eq!((response.status, response.body.len()), (200, body.len()));

    // A broken body is charged to its own request, not to the one before it.
    let pipelined =
        [post("Content-Length: 5\r\n", "hello"), chunked("ZZ\r\nhello\r\n0\r\n\r\n")].concat();
    let (got, _) = exchange(addr, &pipelined, 2);
    let got: Vec<(u16, String)> = got.iter().map(|r| (r.status, r.text())).collect();
    assert_eq!(got, [(200, "hello".to_string()), (400, "Bad Request\n".to_string())]);

    // body_timeout waits until the app wants the body: a 100-continue request queued behind
    // a slow one is not timed out before it is asked for its body.
    let mut queued = TcpStream::connect(addr).unwrap();
    queued.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    queued
        .write_all(b"GET /sleep/1500 HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let mut conn = Conn::over(queued.try_clone().unwrap());
    assert_eq!(conn.read_response(false).unwrap().status, 200);
    assert_eq!(conn.read_response(true).unwrap().status, 100);
    queued.write_all(b"hello").unwrap();
    let response = conn.read_response(false).unwrap();
    assert_eq!((response.status, response.text().as_str()), (200, "hello"));

    // After a request that closes the connection, nothing more is read or answered: no
    // refusal lands inside a response that ends with the connection.
    let mut old = TcpStream::connect(addr).unwrap();
    old.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    old.write_all(b"GET /drip/300 HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\n\r\n").unwrap();
    let all = String::from_utf8_lossy(&read_to_close(&mut old)).into_owned();
    assert!(all.starts_with("HTTP/1.0 200"), "{all:?}");
    assert_eq!(all.matches("HTTP/1.").count(), 1, "one response only: {all:?}");
}

#[test]
fn the_binary_answers_options_asterisk_and_refuses_escapes_that_are_not_utf8() {
    let dir = common::tempdir();
    std::fs::create_dir(dir.path().join("site")).unwrap();
    std::fs::write(dir.path().join("site/caf\u{e9}.txt"), "utf-8 name").unwrap();
    let config = common::write(
        dir.path(),
        "app.toml",
        "[server]\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n\
         [[route]]\npath = \"/\"\nrespond = \"fallback\"\n\
         [[route]]\npath = \"/static/\"\nstatic = \"site\"\n",
    );
    let server = Server::start(&common::forkserve(), &[&config]);
    let addr = server.addr();

    // RFC 9110 §9.3.7: OPTIONS * is about the server, not a resource: no route is asked.
    let (got, closed) = exchange(addr, b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", 1);
    let r = got.first().expect("an answer to OPTIONS *");
    assert_eq!(r.status, 200, "{:?}", r);
    assert_eq!(r.header("content-length"), Some("0"));
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"));
    assert!(!closed);
    // A static route answers OPTIONS with what it allows, and its 405 says the same.
    let ask = |method: &str| {
        let request =
            format!("{method} /static/any HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        common::http::raw(addr, request.as_bytes()).unwrap()
    };
    let options = ask("OPTIONS");
    assert_eq!((options.status, options.header("allow")), (200, Some("GET, HEAD, OPTIONS")));
    let post = ask("POST");
    assert_eq!((post.status, post.header("allow")), (405, Some("GET, HEAD, OPTIONS")));
    // RFC 9110 §9.3.6: no tunnels: 501, and the connection closed.
    assert_eq!(closes(addr, b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n"), (Some(501), true));

    // A routed path's escapes must decode to UTF-8 (RFC 3986 §2.5): `%E9` is Latin-1 `é`, and
    // must not fall through to the `/` route nor reach the file system as a raw byte.
    let status = |path: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        common::http::raw(addr, request.as_bytes()).unwrap().status
    };
    assert_eq!(status("/caf%E9"), 400);
    assert_eq!(status("/static/caf%E9.txt"), 400);
    assert_eq!(status("/static/%C3%28"), 400);
    assert_eq!(status("/static/caf%C3%A9.txt"), 200);
    assert_eq!(status("/caf%C3%A9"), 200);
}

/// Sends `request` and reads the answer; the server may refuse and close before it has read
/// all of a large request, so a failed write is not an error.
fn answer(addr: SocketAddr, request: &[u8]) -> Response {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut conn = Conn::over(stream);
    let _ = conn.send(request);
    conn.read_response(false).unwrap()
}

#[test]
fn heads_too_large_for_hyper_get_the_gates_answer() {
    let server = Server::start(
        &example("demo"),
        &["-w", "1", "-b", "127.0.0.1:0", "--limit-request-fields", "1000"],
    );
    let addr = server.addr();
    let head = |fields: usize, size: usize| {
        let fields: String =
            (0..fields).map(|i| format!("X-{i:03}: {}\r\n", "v".repeat(size))).collect();
        format!("GET / HTTP/1.1\r\nHost: t\r\n{fields}\r\n").into_bytes()
    };
    // Within the field limits (1000 fields of 8190 bytes), and over the gate's cap of 384 KiB:
    // the gate's 431, with its body, not hyper's bare one.
    let big = head(80, 8000);
    assert!(big.len() > 600_000);
    let r = answer(addr, &big);
    assert_eq!((r.status, r.text().as_str()), (431, "Request Header Fields Too Large\n"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("connection"), Some("close"));
    // Just under the cap: served.
    let under = head(47, 8000);
    assert!(under.len() < 384 * 1024 && under.len() > 370_000, "{}", under.len());
    assert_eq!(answer(addr, &under).status, 200);
    // More than hyper's default of 100 fields, as limit_request_fields allows: served.
    assert_eq!(answer(addr, &head(150, 4)).status, 200);
    let r = answer(addr, &head(1001, 1));
    assert_eq!((r.status, r.text().as_str()), (431, "Request Header Fields Too Large\n"));
}
