//! HTTPS on the real binary: certificates made here (rcgen: a CA and leaves), clients `curl`,
//! `openssl s_client` and rustls itself. The pairs the master refuses, at start and on HUP;
//! SNI; TLS versions; session tickets resumed on another worker; the PROXY header before the
//! handshake; bad input that closes one connection while the worker serves on.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::http::exchange;
use common::pki::Pki;
use common::{Server, example, wait_until};
use nix::sys::signal::Signal;

/// The demo app with one worker on a free port, serving HTTPS with `cert` and `key`, and
/// `extra` flags.
fn https(cert: &str, key: &str, extra: &[&str]) -> Server {
    let mut args = vec!["-w", "1", "-b", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key];
    args.extend_from_slice(extra);
    Server::start(&example("demo"), &args)
}

/// Every address the server listens on, in the order logged.
fn addrs(server: &Server, n: usize) -> Vec<SocketAddr> {
    server.wait_for_nth("listening address=", n);
    let lines = server.logs();
    let found = lines.iter().filter_map(|l| l.split("listening address=").nth(1));
    found.map(|a| a.split_whitespace().next().unwrap().parse().unwrap()).collect()
}

/// `curl -k` to `url`: the body, or why it failed.
fn curl(url: &str, extra: &[&str]) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `openssl s_client` against `addr` with `args`; `stdin` is written and then closed (with
/// `-ign_eof`, it reads until the server closes). Returns stdout and stderr together.
fn s_client(addr: SocketAddr, args: &[&str], stdin: &str) -> String {
    let mut child = spawn_s_client(addr, args);
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    finish(child)
}

fn spawn_s_client(addr: SocketAddr, args: &[&str]) -> Child {
    Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect", &addr.to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs")
}

fn finish(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The subject's common name of the certificate `addr` shows for `servername`.
fn served_cn(addr: SocketAddr, servername: Option<&str>) -> String {
    let mut args = vec!["-brief"];
    if let Some(name) = servername {
        args.extend(["-servername", name]);
    } else {
        args.push("-noservername");
    }
    let out = s_client(addr, &args, "");
    let line = out.lines().find(|l| l.starts_with("Peer certificate:")).unwrap_or_else(|| {
        panic!("no peer certificate in:\n{out}");
    });
    line.rsplit("CN = ").next().unwrap().trim().to_string()
}

const GET: &str = "GET /client HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

#[test]
fn certfile_keyfile_serve_https_and_http_prefixed_binds_stay_cleartext() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("localhost", &["localhost"], None);
    let server = Server::start(
        &example("demo"),
        &["-w", "1", "-b", "127.0.0.1:0", "-b", "http://127.0.0.2:0"]
            .into_iter()
            .chain(["--certfile", &cert, "--keyfile", &key])
            .collect::<Vec<_>>(),
    );
    let a = addrs(&server, 2);
    let (tls, plain) = (a[0], a[1]);
    // The scheme reaches the app as https from the transport.
    assert_eq!(
        curl(&format!("https://{tls}/client"), &[]).unwrap().trim(),
        "127.0.0.1 https - xff=none"
    );
    let version = curl(&format!("https://{tls}/"), &["-o", "/dev/null", "-w", "%{http_version}"]);
    assert_eq!(version.unwrap(), "2", "ALPN offers h2 first");
    // A client that trusts the CA verifies the chain and the name.
    let ca = pki.ca_file();
    let url = format!("https://localhost:{}/client", tls.port());
    let resolve = format!("localhost:{}:127.0.0.1", tls.port());
    curl(&url, &["--cacert", &ca, "--resolve", &resolve]).expect("verified");
    assert_eq!(
        curl(&format!("http://{plain}/client"), &[]).unwrap().trim(),
        "127.0.0.1 http - xff=none"
    );
    // Plain HTTP on the TLS port: told so, in plain HTTP, and closed.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg(format!("http://{tls}/"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("The plain HTTP request was sent to an HTTPS port"), "{text}");
    assert!(text.ends_with("400"), "{text}");
    assert!(curl(&format!("https://{tls}/"), &[]).is_ok(), "the worker serves on");
}

#[test]
fn tls_12_and_13_only_with_modern_suites_and_min_version() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("localhost", &["localhost"], None);
    let server = https(&cert, &key, &[]);
    let addr = server.addr();
    assert!(s_client(addr, &["-brief", "-tls1_3"], "").contains("Protocol version: TLSv1.3"));
    let v12 = s_client(addr, &["-brief", "-tls1_2"], "");
    assert!(v12.contains("Protocol version: TLSv1.2"), "{v12}");
    assert!(v12.contains("ECDHE-ECDSA-AES") || v12.contains("CHACHA20"), "{v12}");
    let v11 = s_client(addr, &["-brief", "-tls1_1"], "");
    assert!(!v11.contains("Protocol version"), "TLS 1.1 refused:\n{v11}");
    let cbc = s_client(addr, &["-brief", "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"], "");
    assert!(!cbc.contains("Protocol version"), "CBC suites refused:\n{cbc}");
    drop(server);

    let only13 = https(&cert, &key, &["--tls-min-version", "1.3"]);
    let v12 = s_client(only13.addr(), &["-brief", "-tls1_2"], "");
    assert!(!v12.contains("Protocol version"), "min_version 1.3 refuses 1.2:\n{v12}");
    let v13 = s_client(only13.addr(), &["-brief", "-tls1_3"], "");
    assert!(v13.contains("Protocol version: TLSv1.3"), "{v13}");
}

#[test]
fn sni_picks_the_pair_by_name_else_the_first() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("default", &["localhost"], None);
    let (a, ak) = pki.leaf("a", &["a.test"], None);
    let (b, bk) = pki.leaf("b", &["*.b.test"], None);
    let config = format!(
        "[server]\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\
         sni = [{{ cert = \"{a}\", key = \"{ak}\" }}, {{ cert = \"{b}\", key = \"{bk}\" }}]\n"
    );
    let file = common::write(pki.dir.path(), "app.toml", &config);
    let server = Server::start(&example("demo"), &[&file]);
    let addr = server.addr();
    assert_eq!(served_cn(addr, Some("a.test")), "a");
    assert_eq!(served_cn(addr, Some("A.TEST")), "a", "names are case-insensitive");
    assert_eq!(served_cn(addr, Some("q.b.test")), "b", "a wildcard covers one label");
    assert_eq!(served_cn(addr, Some("x.q.b.test")), "default", "not two");
    assert_eq!(served_cn(addr, Some("nope.test")), "default");
    assert_eq!(served_cn(addr, None), "default");
    // The same from the flag, which replaces the file's list.
    drop(server);
    let pair = format!("{b},{bk}");
    let server = Server::start(&example("demo"), &[&file, "--tls-sni", &pair]);
    assert_eq!(served_cn(server.addr(), Some("a.test")), "default");
    assert_eq!(served_cn(server.addr(), Some("q.b.test")), "b");
}

/// Runs the binary on `config` (a `[tls]` table's lines) and returns its exit code and output.
fn refused(pki: &Pki, tls: &str, check_config: bool) -> (i32, String) {
    let config = format!("[server]\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n[tls]\n{tls}");
    let file = common::write(pki.dir.path(), "bad.toml", &config);
    let mut args = vec![file.as_str()];
    if check_config {
        args.insert(0, "--check-config");
    }
    let mut server = Server::spawn(&example("demo"), &args);
    let code = server.exit_code();
    (code, server.output())
}

#[test]
fn bad_pairs_are_refused_at_start_and_by_check_config_naming_the_file() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("good", &["localhost"], None);
    let (_, other_key) = pki.leaf("other", &["localhost"], None);
    let (old, old_key) = pki.leaf("old", &["localhost"], Some((2001, 1, 1)));
    let (future, future_key) = pki.leaf("future", &["localhost"], Some((2200, 1, 1)));
    // not_before in 2000 for both: make the future one start in 2199.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2199, 1, 1);
    params.not_after = rcgen::date_time_ymd(2200, 1, 1);
    let fkey = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&future_key).unwrap()).unwrap();
    let fcert = params.signed_by(&fkey, &pki.ca, &pki.ca_key).unwrap();
    std::fs::write(&future, fcert.pem()).unwrap();
    let missing = pki.path("missing.pem");
    let missing = missing.to_str().unwrap();
    // Each error names the file, and the setting where the config file names it.
    let cases = [
        (
            format!("cert = \"{missing}\"\nkey = \"{key}\"\n"),
            format!("bad.toml:5:8: tls.cert: {missing}: No such file"),
        ),
        (
            format!("cert = \"{key}\"\nkey = \"{key}\"\n"),
            format!("bad.toml:5:8: tls.cert: {key}: no CERTIFICATE in the file"),
        ),
        (
            format!("cert = \"{cert}\"\nkey = \"{cert}\"\n"),
            format!("bad.toml:6:7: tls.key: {cert}: no private key in the file"),
        ),
        (
            format!("cert = \"{cert}\"\nkey = \"{other_key}\"\n"),
            format!("bad.toml: [tls]: key {other_key} does not match certificate {cert}"),
        ),
        (
            format!("cert = \"{old}\"\nkey = \"{old_key}\"\n"),
            format!("bad.toml:5:8: tls.cert: {old}: expired on Mon, 01 Jan 2001 00:00:00 GMT"),
        ),
        (
            format!("cert = \"{future}\"\nkey = \"{future_key}\"\n"),
            format!("bad.toml:5:8: tls.cert: {future}: not valid before Tue, 01 Jan 2199"),
        ),
        (
            format!("cert = \"{cert}\"\n"),
            "bad.toml: [tls]: tls.cert is set but tls.key is not".into(),
        ),
        (
            format!(
                "cert = \"{cert}\"\nkey = \"{key}\"\nsni = [{{ cert = \"{old}\", key = \"{old_key}\" }}]\n"
            ),
            format!("bad.toml:7:17: tls.sni: {old}: expired on"),
        ),
    ];
    for (tls, message) in &cases {
        for check in [false, true] {
            let (code, out) = refused(&pki, tls, check);
            assert_eq!(code, 2, "{tls}\n{out}");
            assert!(out.contains(message.as_str()), "{tls}: want {message:?} in:\n{out}");
            assert!(!out.contains("listening"), "nothing was bound:\n{out}");
        }
    }
    // A flag's path: the file is named, with no place in the config.
    let mut server = Server::spawn(
        &example("demo"),
        &["--check-config", "--tls-cert", missing, "--tls-key", &key],
    );
    assert_eq!(server.exit_code(), 2);
    let out = server.output();
    assert!(out.contains(&format!("forkserve: error: [tls]: {missing}: No such file")), "{out}");
    let (code, out) = refused(&pki, &format!("cert = \"{cert}\"\nkey = \"{key}\"\n"), true);
    assert_eq!((code, out.trim()), (0, ""), "a good pair passes --check-config");
    // A relative path is relative to the config file.
    let (code, out) = refused(&pki, "cert = \"good.pem\"\nkey = \"good.key\"\n", true);
    assert_eq!(code, 0, "{out}");
    // https:// needs [tls].
    let file =
        common::write(pki.dir.path(), "https.toml", "[server]\nbind = [\"https://127.0.0.1:0\"]\n");
    let mut server = Server::spawn(&example("demo"), &["--check-config", &file]);
    assert_eq!(server.exit_code(), 2);
    assert!(server.output().contains("an https:// address needs [tls] cert and key"));
}

/// The serial of the certificate `addr` serves, as openssl prints it.
fn served_serial(addr: SocketAddr) -> String {
    let out = s_client(addr, &["-showcerts"], "");
    let pem_start = out.find("-----BEGIN CERTIFICATE-----").unwrap_or_else(|| panic!("{out}"));
    let pem_end = out[pem_start..].find("-----END CERTIFICATE-----").unwrap() + pem_start + 25;
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    x509.stdin.take().unwrap().write_all(&out.as_bytes()[pem_start..pem_end]).unwrap();
    String::from_utf8(x509.wait_with_output().unwrap().stdout).unwrap().trim().to_string()
}

#[test]
fn hup_loads_new_certificates_and_a_bad_pair_is_rejected_with_the_old_serving_on() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("one", &["localhost"], None);
    let config = format!(
        "[server]\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n"
    );
    let file = common::write(pki.dir.path(), "app.toml", &config);
    let server = Server::start(&example("demo"), &[&file]);
    let addr = server.addr();
    let first = served_serial(addr);
    // New files in place (renamed over the old ones, as a certificate renewal does).
    let (two, two_key) = pki.leaf("two", &["localhost"], None);
    std::fs::rename(&two, &cert).unwrap();
    std::fs::rename(&two_key, &key).unwrap();
    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete");
    let second = served_serial(addr);
    assert_ne!(first, second, "the new certificate is served after HUP");

    let (_, other_key) = pki.leaf("other", &["localhost"], None);
    let (old, old_key) = pki.leaf("old", &["localhost"], Some((2001, 1, 1)));
    let saved_key = std::fs::read(&key).unwrap();
    let saved_cert = std::fs::read(&cert).unwrap();
    let bad: [(&str, &str, &str); 3] = [
        (&other_key, &cert, "does not match certificate"),
        (&old_key, &old, "expired on"),
        ("", &cert, "No such file"),
    ];
    for (n, (new_key, new_cert, message)) in bad.iter().enumerate() {
        if new_key.is_empty() {
            std::fs::remove_file(&key).unwrap();
        } else {
            std::fs::copy(new_key, &key).unwrap();
            if *new_cert != cert {
                std::fs::copy(new_cert, &cert).unwrap();
            }
        }
        server.signal(Signal::SIGHUP);
        let line = server.wait_for_nth("reload rejected", n + 1);
        assert!(line.contains(message), "{line}");
        assert_eq!(served_serial(addr), second, "the old generation serves on");
        std::fs::write(&key, &saved_key).unwrap();
        std::fs::write(&cert, &saved_cert).unwrap();
    }
    assert_eq!(server.count("starting new generation"), 1, "{}", server.logs().join("\n"));
}

/// `openssl s_client` lines that say whether the session was resumed.
fn resumption(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("New,") || l.starts_with("Reused,")).collect()
}

#[test]
fn session_tickets_resume_on_other_workers_across_hup_but_not_another_server() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("localhost", &["localhost"], None);
    // One connection per worker at a time: a second connection held open beside the first
    // goes to the other worker.
    let args = ["-w", "2", "-b", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key]
        .into_iter()
        .chain(["--worker-connections", "1", "--log-access", "-"])
        .chain(["--log-access-format", "pid=%(p)s %(U)s"])
        .collect::<Vec<_>>();
    let server = Server::start(&example("demo"), &args);
    let addr = server.addr();
    let sess = pki.path("s13");
    let sess = sess.to_str().unwrap();
    // TLS 1.3: the ticket comes after the handshake, before the response; -ign_eof reads on
    // until the server closes, so it is saved.
    let first = s_client(addr, &["-tls1_3", "-ign_eof", "-sess_out", sess], GET);
    assert_eq!(resumption(&first), ["New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384"], "{first}");
    let keep = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
    let resume = ["-tls1_3", "-sess_in", sess];
    let mut a = spawn_s_client(addr, &resume);
    a.stdin.as_mut().unwrap().write_all(keep.replace("/x", "/a").as_bytes()).unwrap();
    let line_a = server.wait_for(" /a");
    let mut b = spawn_s_client(addr, &resume);
    b.stdin.as_mut().unwrap().write_all(keep.replace("/x", "/b").as_bytes()).unwrap();
    let line_b = server.wait_for(" /b");
    drop(a.stdin.take());
    drop(b.stdin.take());
    let (a, b) = (finish(a), finish(b));
    assert!(resumption(&a)[0].starts_with("Reused, TLSv1.3"), "{a}");
    assert!(resumption(&b)[0].starts_with("Reused, TLSv1.3"), "{b}");
    let pid =
        |line: &str| line.split("pid=").nth(1).unwrap().split(' ').next().unwrap().to_string();
    assert_ne!(pid(&line_a), pid(&line_b), "two workers resumed the same ticket");

    // TLS 1.2: -reconnect resumes 5 times with the ticket of the first handshake.
    let v12 = s_client(addr, &["-tls1_2", "-reconnect"], "");
    let lines = resumption(&v12);
    assert_eq!(lines.len(), 6, "{v12}");
    assert!(lines[0].starts_with("New, TLSv1.2"), "{v12}");
    assert!(lines[1..].iter().all(|l| l.starts_with("Reused, TLSv1.2")), "{v12}");

    // Across a HUP: the master's secret is kept, new workers open old tickets.
    let before = server.workers();
    server.signal(Signal::SIGHUP);
    server.wait_for("reload complete");
    wait_until(|| server.workers().is_disjoint(&before).then_some(())).expect("new workers");
    let after = s_client(addr, &["-tls1_3", "-sess_in", sess], GET);
    assert!(resumption(&after)[0].starts_with("Reused"), "{after}");
    // Another server (another secret) does not.
    let other = https(&cert, &key, &[]);
    let elsewhere = s_client(other.addr(), &["-tls1_3", "-sess_in", sess], GET);
    assert!(resumption(&elsewhere)[0].starts_with("New"), "{elsewhere}");
    // Off: every handshake is a full one.
    drop(other);
    let off = https(&cert, &key, &["--tls-session-tickets", "false"]);
    let v12 = s_client(off.addr(), &["-tls1_2", "-reconnect"], "");
    assert!(resumption(&v12).iter().all(|l| l.starts_with("New")), "{v12}");
}

#[test]
fn a_proxy_protocol_header_is_read_before_the_handshake() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("localhost", &["localhost"], None);
    let server = https(&cert, &key, &["--proxy-protocol"]);
    let mut tcp = TcpStream::connect(server.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 4711 443\r\n").unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn =
        rustls::ClientConnection::new(pki.client_config(rustls::DEFAULT_VERSIONS, None), name)
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(GET.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = tls.read_to_string(&mut response);
    assert!(response.ends_with("203.0.113.7 https - xff=none\n"), "{response}");
    // curl's own PROXY header (its real address) before its handshake: the order holds.
    let body = curl(&format!("https://{}/client", server.addr()), &["--haproxy-protocol"]);
    assert_eq!(body.unwrap().trim(), "127.0.0.1 https - xff=none");
}

#[test]
fn bad_input_closes_only_that_connection_and_a_stall_ends_at_header_timeout() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("localhost", &["localhost"], None);
    let server = https(
        &cert,
        &key,
        &[
            "--header-timeout",
            "1",
            "--log-access",
            "-",
            "--log-level",
            "debug",
            "--log-access-format",
            "access %(U)s %(s)s",
        ],
    );
    let addr = server.addr();
    let url = format!("https://{addr}/client");
    let served = || assert!(curl(&url, &[]).is_ok(), "the worker serves on");
    // Not TLS, not a letter: rustls refuses the record.
    exchange(addr, b"\x00\x01\x02\x03\x04\x05\x06\x07", false);
    served();
    // Half a handshake record, then the client's FIN: a truncated record.
    exchange(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", true);
    served();
    // Nothing at all, and half a record then silence: both closed at header_timeout.
    for bytes in [&b""[..], b"\x16\x03\x01\x02\x00\x01"] {
        let (_, took) = exchange(addr, bytes, false);
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "{took:?}");
        served();
    }
    // A client certificate when none is asked: the server never asks, openssl sends none,
    // and the handshake succeeds.
    let out = s_client(addr, &["-cert", &cert, "-key", &key, "-ign_eof"], GET);
    assert!(out.contains("No client certificate CA names sent"), "{out}");
    assert!(out.contains("https"), "{out}");
    // A TLS client that quits in the middle of a response: the record it leaves is cut.
    let mut tcp = TcpStream::connect(addr).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn =
        rustls::ClientConnection::new(pki.client_config(rustls::DEFAULT_VERSIONS, None), name)
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, &mut tcp);
    tls.write_all(b"GET /client HTTP/1.1\r\nHost: t\r\n").unwrap();
    tls.flush().unwrap();
    drop(tls);
    tcp.write_all(b"\x17\x03\x03\x00\x40partial").unwrap();
    drop(tcp);
    served();
    // Handshakes that failed are not requests: only the curl requests were logged.
    // (The access log is written in batches: wait for the sixth line.)
    server.wait_for_nth("access /client 200", 6);
    assert_eq!(server.count("access "), 6, "{}", server.logs().join("\n"));
    server.wait_for("tls handshake failed");
    assert_eq!(server.workers().len(), 1);
    assert_eq!(server.count("worker exited"), 0, "{}", server.logs().join("\n"));
}

#[cfg(feature = "python")]
#[test]
fn python_sees_https_unless_a_trusted_proxy_says_otherwise() {
    use common::wsgi;
    let pki = Pki::new();
    let (cert, key) = pki.leaf("localhost", &["localhost"], None);
    let server = wsgi::start("pep:app", &["-w", "1", "--tls-cert", &cert, "--tls-key", &key]);
    let url = format!("https://{}/environ", server.addr());
    let env = wsgi::fields(&curl(&url, &[]).unwrap());
    assert_eq!(env["wsgi.url_scheme"], "\"https\"", "{env:#?}");
    let proxied = curl(&url, &["-H", "X-Forwarded-Proto: http"]).unwrap();
    assert_eq!(wsgi::fields(&proxied)["wsgi.url_scheme"], "\"http\"", "a trusted proxy's word");
}

/// Runs openssl with `args` in `dir`; panics if it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn rsa_pkcs1_and_ec_sec1_keys_load_as_pkcs8_does() {
    let pki = Pki::new();
    let dir = pki.dir.path();
    // An RSA pair (ring cannot make RSA keys): its key written as PKCS#1.
    openssl(
        dir,
        &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa8.key"],
    );
    openssl(
        dir,
        &["req", "-x509", "-key", "rsa8.key", "-out", "rsa.pem", "-subj", "/CN=rsa", "-days", "2"],
    );
    openssl(dir, &["rsa", "-in", "rsa8.key", "-out", "rsa1.key", "-traditional"]);
    // An EC pair from the CA, its key written as SEC1.
    let (ec, ec8) = pki.leaf("ec", &["localhost"], None);
    openssl(dir, &["ec", "-in", &ec8, "-out", "ec1.key"]);
    let rsa = pki.path("rsa.pem");
    for (cert, key, header, cn) in [
        (rsa.to_str().unwrap(), "rsa1.key", "BEGIN RSA PRIVATE KEY", "rsa"),
        (ec.as_str(), "ec1.key", "BEGIN EC PRIVATE KEY", "ec"),
    ] {
        let key = dir.join(key);
        assert!(std::fs::read_to_string(&key).unwrap().contains(header));
        let key = key.to_str().unwrap();
        let server = https(cert, key, &[]);
        assert_eq!(served_cn(server.addr(), None), cn);
    }
}
