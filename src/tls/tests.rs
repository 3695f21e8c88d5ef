//! Loading pairs made here with rcgen: good ones, and each way one is refused; SNI picks;
//! tickets that another worker opens, and the ratchet their keys move on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::server::ProducesTickets;

use super::certs::{CertError, load};
use super::sni::Sni;
use super::tickets::{Ratchet, TicketSecret, Ticketer, WINDOW_SECS};

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

/// A clock for ticketers, moved by hand: one per test (tests run in parallel).
macro_rules! clock {
    ($start:expr) => {{
        use std::sync::atomic::{AtomicU64, Ordering};
        static NOW: AtomicU64 = AtomicU64::new($start);
        fn now() -> u64 {
            NOW.load(Ordering::Relaxed)
        }
        (&NOW, now as fn() -> u64, |secs: u64| {
            NOW.fetch_add(secs, Ordering::Relaxed);
        })
    }};
}

/// A process: a ticketer over a ratchet of its own, as a fork gives it.
fn process(ratchet: &Ratchet, now: fn() -> u64) -> Ticketer {
    Ticketer::with_clock(TicketSecret::new(ratchet.clone()), now)
}

#[test]
fn tickets_open_in_another_worker_and_rotate() {
    let (_, now, pass) = clock!(1_000_000_000);
    let master = Ratchet::start(now() / WINDOW_SECS).unwrap();
    let (w1, w2) = (process(&master, now), process(&master, now));
    let t = w1.encrypt(b"session state").unwrap();
    assert_eq!(w2.decrypt(&t).as_deref(), Some(&b"session state"[..]), "another worker opens it");
    let other = process(&Ratchet::start(now() / WINDOW_SECS).unwrap(), now);
    assert_eq!(other.decrypt(&t), None, "another server's chain does not");
    let mut bad = t.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    assert_eq!(w2.decrypt(&bad), None, "tampered");
    assert_eq!(w2.decrypt(&t[..10]), None, "short");
    let mut relabelled = t.clone();
    relabelled[7] ^= 1;
    assert_eq!(w2.decrypt(&relabelled), None, "the window is authenticated");
    pass(WINDOW_SECS);
    assert!(w2.decrypt(&t).is_some(), "the previous window is still accepted");
    let t2 = w2.encrypt(b"x").unwrap();
    assert_ne!(t2[..8], t[..8], "a new window issues with a new key");
    pass(WINDOW_SECS);
    assert_eq!(w1.decrypt(&t), None, "two windows back: refused");
    assert!(w1.decrypt(&t2).is_some());
}

#[test]
fn the_ratchet_agrees_across_forks_and_forgets_what_it_passed() {
    let (_, now, pass) = clock!(2_000_000_000);
    let n = now() / WINDOW_SECS + 3;
    // The master starts at n-3 and forks a worker, which then only moves when it is used.
    let mut master = Ratchet::start(n - 3).unwrap();
    let early = process(&master, now);
    pass(WINDOW_SECS);
    let old = early.encrypt(b"old").unwrap();
    assert_eq!(old[..8], (n - 2).to_be_bytes(), "issued in window n-2");
    master.advance_to(n - 2);
    let master_at_n2 = master.clone();
    pass(2 * WINDOW_SECS);
    // The master moves on as its loop turns; a worker forked at n starts where it is.
    master.advance_to(n);
    assert_eq!(master.window(), n);
    let late = process(&master, now);
    let from_late = late.encrypt(b"late").unwrap();
    assert_eq!(early.decrypt(&from_late).as_deref(), Some(&b"late"[..]), "n-2 ratcheted to n");
    let from_early = early.encrypt(b"early").unwrap();
    assert_eq!(from_early[..8], n.to_be_bytes());
    assert_eq!(late.decrypt(&from_early).as_deref(), Some(&b"early"[..]));

    // The ticket of n-2: refused by both, and no key the master holds at n opens it, whatever
    // window it claimed, while the master's state at n-2 still did.
    assert_eq!(late.decrypt(&old), None);
    assert_eq!(early.decrypt(&old), None);
    assert!(master_at_n2.any_key_opens(&old), "the check itself can fail");
    assert!(!master.any_key_opens(&old), "the key of n-2 is gone at n");
    // Nor can it be made again: the chain it holds is not n-2's (or n-1's), from which it
    // was derived one way.
    let mut at_n1 = master_at_n2.clone();
    at_n1.advance_to(n - 1);
    assert_ne!(master.chain(), master_at_n2.chain());
    assert_ne!(master.chain(), at_n1.chain());
    assert_ne!(at_n1.chain(), master_at_n2.chain());
    assert!(at_n1.any_key_opens(&old), "one window on, still held as the previous key");

    // A clock stepped back does not move the ratchet back.
    master.advance_to(n - 5);
    assert_eq!(master.window(), n);
}

#[test]
fn a_handed_over_ratchet_opens_the_tickets_of_both_windows_and_garbage_is_refused() {
    let (_, now, pass) = clock!(3_000_000_000);
    let mut old = Ratchet::start(now() / WINDOW_SECS).unwrap();
    let old_worker = process(&old, now);
    let previous = old_worker.encrypt(b"previous").unwrap();
    pass(WINDOW_SECS);
    let current = old_worker.encrypt(b"current").unwrap();
    old.advance_to(now() / WINDOW_SECS);
    // The new master takes the old one's place, and forks a worker.
    let new = old.handed_over().expect("its own format");
    assert_eq!(new.window(), old.window());
    let new_worker = process(&new, now);
    assert_eq!(new_worker.decrypt(&current).as_deref(), Some(&b"current"[..]));
    assert_eq!(new_worker.decrypt(&previous).as_deref(), Some(&b"previous"[..]), "previous too");
    let issued = new_worker.encrypt(b"new").unwrap();
    assert_eq!(old_worker.decrypt(&issued).as_deref(), Some(&b"new"[..]), "both ways");
    // A master in its first window has no previous key to hand over.
    let fresh = Ratchet::start(now() / WINDOW_SECS).unwrap();
    assert!(fresh.handed_over().is_some());
    assert!(!super::tickets::adopt(b"tickets2 another version"));
    assert!(!super::tickets::adopt(b""));
    assert!(!super::tickets::adopt(&[0u8; 81]));
}
