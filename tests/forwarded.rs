//! Forwarded headers and the PROXY protocol: what the app is told about its client, and from
//! whom it is believed (the demo's `/client` reports `forkserve::Client`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::http::Conn;
use common::{Server, example};

const LOCAL: &str = "127.0.0.1:0";

fn ask(server: &Server, raw: &[u8]) -> Option<String> {
    let stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut conn = Conn::over(stream);
    conn.send(raw).unwrap();
    conn.read_response(false).ok().map(|r| r.text().trim().to_string())
}

const GET_CLIENT: &str = "GET /client HTTP/1.1\r\nHost: t\r\n";

#[test]
fn forwarded_headers_from_a_trusted_proxy_are_believed() {
    // The tests connect from 127.0.0.1, trusted by default.
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL]);
    let plain = ask(&server, format!("{GET_CLIENT}\r\n").as_bytes()).unwrap();
    assert_eq!(plain, "127.0.0.1 http - xff=none");
    let xff = format!(
        "{GET_CLIENT}X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: example.com\r\n\r\n"
    );
    assert_eq!(
        ask(&server, xff.as_bytes()).unwrap(),
        "203.0.113.7 https example.com xff=203.0.113.7"
    );
    let fwd = format!("{GET_CLIENT}Forwarded: for=\"[2001:db8::1]:4711\";proto=https\r\n\r\n");
    assert_eq!(ask(&server, fwd.as_bytes()).unwrap(), "2001:db8::1 https - xff=none");
}

#[test]
fn forwarded_headers_from_an_untrusted_peer_are_not_believed_nor_passed_on() {
    let server = Server::start(
        &example("demo"),
        &["-w", "1", "-b", LOCAL, "--forwarded-allow-ips", "10.0.0.0/8"],
    );
    let spoof =
        format!("{GET_CLIENT}X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\r\n");
    assert_eq!(ask(&server, spoof.as_bytes()).unwrap(), "127.0.0.1 http - xff=none");
}

#[test]
fn a_proxy_protocol_header_from_an_allowed_peer_gives_the_client() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--proxy-protocol"]);
    let v1 = format!("PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n{GET_CLIENT}\r\n");
    assert_eq!(ask(&server, v1.as_bytes()).unwrap(), "198.51.100.9 http - xff=none");
    let v6 = format!("PROXY TCP6 2001:db8::9 ::1 5555 80\r\n{GET_CLIENT}\r\n");
    assert_eq!(ask(&server, v6.as_bytes()).unwrap(), "2001:db8::9 http - xff=none");
    // v2: signature, PROXY command, TCP over IPv4, 12 bytes of addresses and ports.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[192, 0, 2, 33, 127, 0, 0, 1, 0x1f, 0x90, 0, 80]);
    v2.extend_from_slice(format!("{GET_CLIENT}\r\n").as_bytes());
    assert_eq!(ask(&server, &v2).unwrap(), "192.0.2.33 http - xff=none");
    // v2 LOCAL (a health check): the peer itself.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    local.extend_from_slice(format!("{GET_CLIENT}\r\n").as_bytes());
    assert_eq!(ask(&server, &local).unwrap(), "127.0.0.1 http - xff=none");
    // A proxied client's own forwarding headers are not believed: 198.51.100.9 is not trusted.
    let both = format!(
        "PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n{GET_CLIENT}X-Forwarded-For: 1.1.1.1\r\n\r\n"
    );
    assert_eq!(ask(&server, both.as_bytes()).unwrap(), "198.51.100.9 http - xff=none");
}

/// Whether the server closes the connection without answering.
fn closed_without_answer(server: &Server, raw: &[u8]) -> bool {
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(raw).unwrap();
    let mut buf = [0u8; 256];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn a_missing_malformed_or_untrusted_proxy_header_closes_the_connection() {
    let server = Server::start(&example("demo"), &["-w", "1", "-b", LOCAL, "--proxy-protocol"]);
    assert!(closed_without_answer(&server, format!("{GET_CLIENT}\r\n").as_bytes()), "missing");
    assert!(closed_without_answer(&server, b"PROXY TCP4 nonsense\r\nGET / HTTP/1.1\r\n\r\n"));
    assert!(closed_without_answer(&server, b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n"));
    assert!(closed_without_answer(&server, b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x02ab"));
    let untrusted = Server::start(
        &example("demo"),
        &["-w", "1", "-b", LOCAL, "--proxy-protocol", "--proxy-allow-ips", "10.0.0.1"],
    );
    let v1 = format!("PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\n{GET_CLIENT}\r\n");
    assert!(closed_without_answer(&untrusted, v1.as_bytes()), "from a peer not allowed");
    // Plain HTTP from a peer not allowed to send one is served as it is.
    assert_eq!(
        ask(&untrusted, format!("{GET_CLIENT}\r\n").as_bytes()).unwrap(),
        "127.0.0.1 http - xff=none"
    );
}
