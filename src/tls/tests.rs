//! Loading pairs made here with rcgen: good ones, and each way one is refused; SNI picks;
//! tickets that another worker opens.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::server::ProducesTickets;

use super::certs::{CertError, load};
use super::sni::Sni;
use super::tickets::{TicketSecret, Ticketer, WINDOW_SECS};

fn write(dir: &Path, name: &str, s: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, s).unwrap();
    p
}

fn make(names: &[&str], not_after: Option<(i32, u8, u8)>) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    if let Some((y, m, d)) = not_after {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(y, m, d);
    }
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn pairs_load_and_bad_ones_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let provider = super::provider();
    let now = SystemTime::now();
    let (c, k) = make(&["a.test", "*.b.test"], None);
    let (c, k) = (write(dir, "c.pem", &c), write(dir, "k.pem", &k));
    let a = load(&c, &k, &provider, now).unwrap();
    assert_eq!(a.names, ["a.test", "*.b.test"]);
    let (_, k2) = make(&["x"], None);
    let k2 = write(dir, "k2.pem", &k2);
    let e = load(&c, &k2, &provider, now).unwrap_err();
    assert!(matches!(e, CertError::Mismatch { .. }), "{e}");
    assert!(e.to_string().contains("k2.pem does not match certificate"), "{e}");
    let (ce, ke) = make(&["old.test"], Some((2001, 1, 1)));
    let (ce, ke) = (write(dir, "ce.pem", &ce), write(dir, "ke.pem", &ke));
    let e = load(&ce, &ke, &provider, now).unwrap_err();
    assert!(e.to_string().contains("ce.pem: expired on"), "{e}");
    let (cf, kf) = make(&["new.test"], Some((2200, 1, 1)));
    let (cf, kf) = (write(dir, "cf.pem", &cf), write(dir, "kf.pem", &kf));
    let past = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(900_000_000);
    let e = load(&cf, &kf, &provider, past).unwrap_err();
    assert!(e.to_string().contains("cf.pem: not valid before"), "{e}");
    let e = load(&dir.join("nope.pem"), &k, &provider, now).unwrap_err();
    assert!(e.to_string().contains("nope.pem: No such file"), "{e}");
    let e = load(&c, &c, &provider, now).unwrap_err();
    assert!(matches!(e, CertError::NoKey { .. }), "{e}");
    let e = load(&k, &k, &provider, now).unwrap_err();
    assert!(matches!(e, CertError::NoCertificate { .. }), "{e}");
    let e = load(&c, dir, &provider, now).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");

    let (z, zk) = make(&["z.test"], None);
    let z = load(&write(dir, "z.pem", &z), &write(dir, "zk.pem", &zk), &provider, now).unwrap();
    let zkey = Arc::clone(&z.key);
    let sni = Sni::new(&[a, z]).unwrap();
    assert!(Arc::ptr_eq(&sni.pick(Some("Z.test")), &zkey), "exact, any case");
    assert!(!Arc::ptr_eq(&sni.pick(Some("q.b.test")), &zkey), "wildcard");
    assert!(!Arc::ptr_eq(&sni.pick(Some("x.q.b.test")), &zkey), "unknown: the default");
    assert!(!Arc::ptr_eq(&sni.pick(None), &zkey), "no SNI: the first pair");
}

#[test]
fn tickets_open_in_another_worker_and_rotate() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NOW: AtomicU64 = AtomicU64::new(1_000_000_000);
    fn now() -> u64 {
        NOW.load(Ordering::Relaxed)
    }
    let secret = TicketSecret::generate().unwrap();
    let (w1, w2) = (Ticketer::with_clock(&secret, now), Ticketer::with_clock(&secret, now));
    let t = w1.encrypt(b"session state").unwrap();
    assert_eq!(w2.decrypt(&t).as_deref(), Some(&b"session state"[..]), "another worker opens it");
    let other = Ticketer::with_clock(&TicketSecret::generate().unwrap(), now);
    assert_eq!(other.decrypt(&t), None, "another server's secret does not");
    let mut bad = t.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert_eq!(w2.decrypt(&bad), None, "tampered");
    assert_eq!(w2.decrypt(&t[..10]), None, "short");
    NOW.fetch_add(WINDOW_SECS, Ordering::Relaxed);
    assert!(w2.decrypt(&t).is_some(), "the previous window is still accepted");
    let t2 = w2.encrypt(b"x").unwrap();
    assert_ne!(t2[..8], t[..8], "a new window issues with a new key");
    NOW.fetch_add(WINDOW_SECS, Ordering::Relaxed);
    assert_eq!(w1.decrypt(&t), None, "two windows back: refused");
    assert!(w1.decrypt(&t2).is_some());
}
