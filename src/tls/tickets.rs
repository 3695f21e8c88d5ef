//! Session tickets every worker of a server can open: keys derived from one secret the master
//! makes before it forks, per time window, so that all workers agree without talking; a ticket
//! of the current or the previous window is accepted.
//!
//! One secret for the master's life: a leak of it opens every ticket of that life (no forward
//! secrecy across windows yet; a ratchet is the follow-up). A binary upgrade makes a new one.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

/// How long one key issues tickets; it is accepted for one window more.
pub(crate) const WINDOW_SECS: u64 = 6 * 3600;

/// The master's secret: 32 random bytes, made once per master, kept across reloads (tickets
/// survive a HUP), inherited by every worker at fork.
#[derive(Clone)]
pub(crate) struct TicketSecret([u8; 32]);

impl TicketSecret {
    pub(crate) fn generate() -> Result<Self, ring::error::Unspecified> {
        let mut s = [0u8; 32];
        SystemRandom::new().fill(&mut s)?;
        Ok(TicketSecret(s))
    }
}

/// The process's secret: set by the master before its first fork, so that every worker
/// inherits the same one.
static SECRET: OnceLock<TicketSecret> = OnceLock::new();

/// Makes the master's secret, once; later calls keep it. Called before any worker is forked.
pub(crate) fn init() -> Result<(), ring::error::Unspecified> {
    if SECRET.get().is_none() {
        let _ = SECRET.set(TicketSecret::generate()?);
    }
    Ok(())
}

/// The secret [`init`] made, if it ran.
pub(crate) fn secret() -> Option<&'static TicketSecret> {
    SECRET.get()
}

/// Issues and opens tickets with the keys of the current window (and opens the previous
/// window's).
pub(crate) struct Ticketer {
    secret: hkdf::Prk,
    rng: SystemRandom,
    /// The window of `keys[0]`; keys[1] is the window before. Rebuilt when the window moves.
    keys: std::sync::Mutex<(u64, [LessSafeKey; 2])>,
    now: fn() -> u64,
}

impl std::fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticketer").finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Ticketer {
    pub(crate) fn new(secret: &TicketSecret) -> Self {
        Self::with_clock(secret, unix_now)
    }

    pub(crate) fn with_clock(secret: &TicketSecret, now: fn() -> u64) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"forkserve tickets v1").extract(&secret.0);
        let w = now() / WINDOW_SECS;
        let keys = [derive(&prk, w), derive(&prk, w.wrapping_sub(1))];
        Ticketer {
            secret: prk,
            rng: SystemRandom::new(),
            keys: std::sync::Mutex::new((w, keys)),
            now,
        }
    }

    /// Runs `f` with the keys of the current window and the one before.
    fn with_keys<R>(&self, f: impl FnOnce(u64, &[LessSafeKey; 2]) -> R) -> R {
        let w = (self.now)() / WINDOW_SECS;
        let mut k = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if k.0 != w {
            *k = (w, [derive(&self.secret, w), derive(&self.secret, w.wrapping_sub(1))]);
        }
        f(k.0, &k.1)
    }
}

fn derive(prk: &hkdf::Prk, window: u64) -> LessSafeKey {
    let info = window.to_be_bytes();
    let info = [&info[..]];
    // HKDF-SHA256 can expand to 255 × 32 bytes; AES-256 wants 32.
    let okm = prk.expand(&info, &AES_256_GCM).expect("32 bytes is within HKDF's bound");
    LessSafeKey::new(UnboundKey::from(okm))
}

/// A ticket: window (8 bytes, big-endian) | nonce (12) | ciphertext | tag (16). The window
/// picks the key and is authenticated as associated data.
impl rustls::server::ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        WINDOW_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        self.with_keys(|w, keys| {
            let header = w.to_be_bytes();
            let mut out = Vec::with_capacity(8 + NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
            out.extend_from_slice(&header);
            out.extend_from_slice(&nonce);
            out.extend_from_slice(plain);
            let tag = keys[0]
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(header),
                    &mut out[8 + NONCE_LEN..],
                )
                .ok()?;
            out.extend_from_slice(tag.as_ref());
            Some(out)
        })
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < 8 + NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let header: [u8; 8] = cipher[..8].try_into().ok()?;
        let window = u64::from_be_bytes(header);
        let nonce = Nonce::try_assume_unique_for_key(&cipher[8..8 + NONCE_LEN]).ok()?;
        self.with_keys(|w, keys| {
            let key = if window == w {
                &keys[0]
            } else if window == w.wrapping_sub(1) {
                &keys[1]
            } else {
                return None;
            };
            let mut buf = cipher[8 + NONCE_LEN..].to_vec();
            let plain = key.open_in_place(nonce, Aad::from(header), &mut buf).ok()?;
            let n = plain.len();
            buf.truncate(n);
            Some(buf)
        })
    }
}
