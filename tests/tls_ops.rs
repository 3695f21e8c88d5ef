//! TLS operations on the real binary. Handshakes, one way each ends: done, plain HTTP on the
//! TLS port, stalled, refused by rustls, cut by the client; as the metrics count them
//! (`forkserve_tls_handshakes_total`, `forkserve_tls_handshake_failures_total`) and `forkserve
//! status` shows them. The bad input `tests/tls.rs` does not send: a client certificate the
//! server never asked for, from a client configured with one, and sent unsolicited in the
//! middle of a TLS 1.2 handshake. Session tickets across a binary upgrade.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::http::exchange;
use common::metrics::{Samples, metrics_addr, samples_when};
use common::pki::Pki;
use common::{Server, example};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// A client's certificate for `localhost`, signed by the test CA, and its key.
fn client_pair(pki: &Pki) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &pki.ca, &pki.ca_key).unwrap();
    (cert.der().clone(), PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
}

const GET: &[u8] = b"GET /client HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// `GET /client` over a rustls connection with `config`: the response.
fn get(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> String {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(GET).unwrap();
    let mut response = String::new();
    let _ = tls.read_to_string(&mut response);
    response
}

/// The demo app, one worker, TLS on its address, the metrics on another, and `extra` flags.
fn start(cert: &str, key: &str, extra: &[&str]) -> Server {
    let mut args = vec!["-w", "1", "-b", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key];
    args.extend(["--metrics-bind", "127.0.0.1:0", "--header-timeout", "1"]);
    args.extend_from_slice(extra);
    Server::start(&example("demo"), &args)
}

fn handshakes(s: &Samples) -> [f64; 6] {
    let ok = s.value(r#"forkserve_tls_handshakes_total{result="ok"}"#);
    let failed = s.value(r#"forkserve_tls_handshakes_total{result="failed"}"#);
    let reason =
        |r: &str| s.value(&format!("forkserve_tls_handshake_failures_total{{reason=\"{r}\"}}"));
    let reasons = ["timeout", "plaintext_http", "protocol_error", "closed"].map(reason);
    [ok, failed, reasons[0], reasons[1], reasons[2], reasons[3]]
}

#[test]
fn each_handshake_is_counted_by_how_it_ended() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("server", &["localhost"], None);
    let server = start(&cert, &key, &[]);
    let (addr, metrics) = (server.addr(), metrics_addr(&server));
    let none = samples_when(metrics, "a first scrape", |_| true);
    assert_eq!(handshakes(&none), [0.0; 6], "every series from the start, and scrapes are not TLS");

    // Done: twice, TLS 1.3 and 1.2.
    for v in [&rustls::version::TLS13, &rustls::version::TLS12] {
        assert!(get(addr, pki.client_config(&[v], None)).starts_with("HTTP/1.1 200"));
    }
    // Plain HTTP: answered 400.
    let (plain, _) = exchange(addr, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", false);
    assert!(plain.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&plain));
    // Stalled, with nothing sent and with half a record: closed at header_timeout.
    for bytes in [&b""[..], b"\x16\x03\x01\x02\x00\x01"] {
        let (_, took) = exchange(addr, bytes, false);
        assert!(took >= Duration::from_millis(900), "{took:?}");
    }
    // Not TLS (and not a letter): rustls' alert.
    let (alert, _) = exchange(addr, b"\x00\x01\x02\x03\x04\x05\x06\x07", false);
    assert_eq!(alert.first(), Some(&0x15), "an alert record: {alert:?}");
    // Half a ClientHello, then the client's FIN: cut by the client.
    exchange(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", true);

    let s = samples_when(metrics, "7 handshakes", |s| handshakes(s)[..2] == [2.0, 5.0]);
    assert_eq!(handshakes(&s), [2.0, 5.0, 2.0, 1.0, 1.0, 1.0], "{}", s.0);
    // forkserve status says so too.
    let master = server.pid().to_string();
    let out = Command::new(common::forkserve()).args(["status", "--pid", &master]).output();
    let table = String::from_utf8_lossy(&out.unwrap().stdout).into_owned();
    let line = "TLS handshakes: 2 ok, 5 failed (2 timeout, 1 plaintext http, 1 protocol error, \
                1 closed)";
    assert!(table.contains(line), "{table}");
}

#[test]
fn a_client_certificate_nobody_asked_for_is_served_or_refused_without_harm() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("server", &["localhost"], None);
    let (client_cert, client_key) = client_pair(&pki);
    let server = start(&cert, &key, &["--log-level", "debug"]);
    let (addr, metrics) = (server.addr(), metrics_addr(&server));

    // A client configured with a certificate: the server never asks for one, so it sends
    // none, and the handshake is done and the request served.
    for v in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let pair = Some((client_cert.clone(), client_key.clone_key()));
        let response = get(addr, pki.client_config(&[v], pair));
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("https - xff=none\n"), "{response}");
    }

    // A TLS 1.2 client that sends a Certificate message anyway, after the server's flight and
    // before its key exchange: refused with an alert (unexpected_message), and closed.
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let config = pki.client_config(&[&rustls::version::TLS12], None);
    let mut client = rustls::ClientConnection::new(config, name).unwrap();
    client.write_tls(&mut tcp).unwrap();
    // The server's flight, up to ServerHelloDone: then the client has its own to send.
    while !client.wants_write() {
        assert!(client.read_tls(&mut tcp).unwrap() > 0, "the server closed");
        client.process_new_packets().unwrap();
    }
    // Certificate (type 11), an empty list, in a plaintext handshake record of TLS 1.2.
    tcp.write_all(b"\x16\x03\x03\x00\x07\x0b\x00\x00\x03\x00\x00\x00").unwrap();
    client.write_tls(&mut tcp).unwrap();
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got);
    // An alert record (21), fatal (2), unexpected_message (10); then the end.
    assert_eq!(got, b"\x15\x03\x03\x00\x02\x02\x0a", "{got:?}");
    server.wait_for("tls handshake failed");

    // openssl with a certificate and key too (the server sends no CertificateRequest).
    let text = s_client(addr, &["-tls1_2", "-cert", &cert, "-key", &key]);
    assert!(text.contains("No client certificate CA names sent"), "{text}");
    assert!(text.contains("https - xff=none"), "{text}");

    // The worker served on: one handshake refused, the others done, no worker lost.
    let s = samples_when(metrics, "4 handshakes", |s| handshakes(s)[..2] == [3.0, 1.0]);
    assert_eq!(handshakes(&s)[4], 1.0, "a protocol error: {}", s.0);
    assert!(
        get(addr, pki.client_config(&[&rustls::version::TLS13], None)).starts_with("HTTP/1.1 200")
    );
    assert_eq!(server.workers().len(), 1);
    assert_eq!(server.count("worker exited"), 0, "{}", server.logs().join("\n"));
}

/// `openssl s_client` lines that say whether the session was resumed.
fn resumption(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("New,") || l.starts_with("Reused,")).collect()
}

/// `openssl s_client` to `addr` with `args`, sending `GET` and reading until the server closes
/// (so that a TLS 1.3 ticket, sent after the handshake, is saved with `-sess_out`).
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect", &addr.to_string(), "-ign_eof"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(GET)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn session_tickets_resume_on_the_new_master_after_a_binary_upgrade() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("server", &["localhost"], None);
    let server = start(&cert, &key, &[]);
    let addr = server.addr();
    let old_master = server.pid().as_raw();
    let sessions = ["-tls1_3", "-tls1_2"].map(|v| {
        let file = pki.dir.path().join(v).to_str().unwrap().to_string();
        let first = s_client(addr, &[v, "-sess_out", &file]);
        assert!(resumption(&first)[0].starts_with("New,"), "{first}");
        (v, file)
    });
    server.signal(nix::sys::signal::Signal::SIGUSR2);
    server.wait_for("upgrade: session ticket keys taken over from the old master");
    server.wait_for("upgrade complete: the new master serves");
    common::wait_until(|| (!common::alive(old_master)).then_some(())).expect("old master exits");
    for (v, file) in &sessions {
        let after = s_client(addr, &[v, "-sess_in", file]);
        assert!(resumption(&after)[0].starts_with("Reused,"), "{v}: {after}");
        assert!(after.contains("https - xff=none"), "{after}");
    }
}

/// With a preloaded app the workers are forked by a mold, which holds the ticket keys it
/// inherited and moves them on by itself: a worker it forks after another issued a ticket
/// opens it.
#[cfg(feature = "python")]
#[test]
fn session_tickets_resume_on_a_worker_the_mold_forked_later() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("server", &["localhost"], None);
    let tls = ["-w", "1", "--preload", "--tls-cert", &cert, "--tls-key", &key];
    let server = common::wsgi::start("pep:app", &tls);
    let addr = server.addr();
    let file = pki.dir.path().join("s").to_str().unwrap().to_string();
    let first = s_client(addr, &["-tls1_3", "-sess_out", &file]);
    assert!(resumption(&first)[0].starts_with("New,"), "{first}");
    // The workers are the mold's grandchildren; their pids are in the log.
    let booted = |n| {
        let line = server.wait_for_nth("worker booted pid=", n);
        line.split("pid=").nth(1).unwrap().split(' ').next().unwrap().parse::<i32>().unwrap()
    };
    let first_worker = booted(1);
    let kill = nix::sys::signal::kill;
    kill(nix::unistd::Pid::from_raw(first_worker), nix::sys::signal::Signal::SIGKILL).unwrap();
    let after = booted(2);
    assert_ne!(after, first_worker);
    let again = s_client(addr, &["-tls1_3", "-sess_in", &file]);
    assert!(resumption(&again)[0].starts_with("Reused,"), "on {after}: {again}");
}
