//! Session tickets every worker of a server can open, under keys that only move forward.
//!
//! Time is cut into 6-hour windows. Window n has a chain secret C(n); the window's ticket key
//! K(n) and the next window's chain C(n+1) are both derived from C(n) by HKDF-SHA256, which
//! cannot be run backwards. The master makes C(n) at random when it starts, before its first
//! fork, and every process of the server (the master, a mold, each worker) keeps its own copy
//! and moves it forward as windows pass, keeping only C and K of the current window and K of
//! the previous one (a ticket is accepted one window more). Every copy walks the same chain,
//! so processes agree without talking: a worker forked after a `HUP` and one forked days
//! before issue and open the same tickets.
//!
//! What this buys: whoever reads one process's memory learns the keys of the window before
//! and of the windows to come, not older ones, so tickets (and the sessions they resume) of
//! more than one window ago stay closed to them. The chain and key bytes are zeroed when a
//! step drops them; ring's AES key schedules are overwritten in place, not scrubbed (ring does
//! not scrub them, nor can anyone scrub copies a move leaves on the stack: this is forgetting
//! against a later leak of a process's state, not against a debugger attached now).
//!
//! A binary upgrade hands the old master's place on the chain to the new master ([`handover`],
//! [`adopt`]), on the line between them, before the new master forks: its workers open the
//! tickets the old master's issued, as a worker forked after a `HUP` does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

/// How long one key issues tickets; it is accepted for one window more.
pub(crate) const WINDOW_SECS: u64 = 6 * 3600;

/// The window a time (seconds since the Unix epoch) falls in.
fn window_of(unix: u64) -> u64 {
    unix / WINDOW_SECS
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// 32 secret bytes, zeroed when dropped (which is when a step replaces them).
#[derive(Clone)]
struct Secret([u8; 32]);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// One window's chain secret: what the window's key and the next chain are derived from.
#[derive(Clone)]
struct Chain(Secret);

/// A window's ticket key: the key rustls' AEAD uses, and its bytes, which a binary upgrade
/// hands over for the previous window (the new master cannot derive it: the chain only goes
/// forward).
#[derive(Clone)]
struct Key {
    aead: LessSafeKey,
    bytes: Secret,
}

impl Key {
    fn new(bytes: Secret) -> Key {
        let aead = UnboundKey::new(&AES_256_GCM, &bytes.0).expect("AES-256 takes 32 bytes");
        Key { aead: LessSafeKey::new(aead), bytes }
    }
}

impl Chain {
    /// HKDF's pseudorandom key: the chain is uniformly random (or HKDF's output), so it is
    /// one as it is, with no extract step.
    fn prk(&self) -> hkdf::Prk {
        hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &self.0.0)
    }

    /// The chain of `window + 1`, from this one, the chain of `window`.
    fn next(&self, window: u64) -> Chain {
        let mut next = Chain(Secret([0; 32]));
        let w = window.to_be_bytes();
        let info = [&b"forkserve ticket chain"[..], &w[..]];
        // HKDF-SHA256 expands to at most 255 × 32 bytes: 32 always fits.
        let prk = self.prk();
        let okm = prk.expand(&info, hkdf::HKDF_SHA256).expect("32 bytes is within HKDF's bound");
        okm.fill(&mut next.0.0).expect("the length is the algorithm's own");
        next
    }

    /// The ticket key of `window`, from its chain.
    fn key(&self, window: u64) -> Key {
        let w = window.to_be_bytes();
        let info = [&b"forkserve ticket key"[..], &w[..]];
        let prk = self.prk();
        let okm = prk.expand(&info, hkdf::HKDF_SHA256).expect("32 bytes is within HKDF's bound");
        let mut bytes = Secret([0; 32]);
        okm.fill(&mut bytes.0).expect("the length is the algorithm's own");
        Key::new(bytes)
    }
}

/// One process's place on the chain: the current window's chain and key, and the previous
/// window's key. Cloning it is what a fork does.
#[derive(Clone)]
pub(crate) struct Ratchet {
    window: u64,
    chain: Chain,
    current: Key,
    /// `None` in the master's first window: nothing was issued before it.
    previous: Option<Key>,
}

impl Ratchet {
    /// A new chain, at random, starting at `window`.
    pub(crate) fn start(window: u64) -> Result<Ratchet, ring::error::Unspecified> {
        let mut chain = Chain(Secret([0; 32]));
        SystemRandom::new().fill(&mut chain.0.0)?;
        let current = chain.key(window);
        Ok(Ratchet { window, chain, current, previous: None })
    }

    /// Moves forward to `window`, one window at a time, forgetting what it leaves behind; never
    /// back (a clock stepped back keeps the window it reached).
    pub(crate) fn advance_to(&mut self, window: u64) {
        while self.window < window {
            // Assigned in place: the old chain and the old previous key are dropped (their
            // bytes zeroed) and their slots overwritten.
            self.chain = self.chain.next(self.window);
            self.window += 1;
            let current = self.chain.key(self.window);
            self.previous = Some(std::mem::replace(&mut self.current, current));
        }
    }

    /// The window it is at.
    #[cfg(test)]
    pub(crate) fn window(&self) -> u64 {
        self.window
    }

    /// The chain secret it holds now.
    #[cfg(test)]
    pub(crate) fn chain(&self) -> [u8; 32] {
        self.chain.0.0
    }

    /// Whether any key it holds opens `cipher`, whatever window the ticket names: what a
    /// reader of this state could open.
    #[cfg(test)]
    pub(crate) fn any_key_opens(&self, cipher: &[u8]) -> bool {
        let header: [u8; 8] = cipher[..8].try_into().unwrap();
        let nonce = &cipher[8..8 + NONCE_LEN];
        std::iter::once(&self.current).chain(&self.previous).any(|key| {
            let nonce = Nonce::try_assume_unique_for_key(nonce).unwrap();
            let mut buf = cipher[8 + NONCE_LEN..].to_vec();
            key.aead.open_in_place(nonce, Aad::from(header), &mut buf).is_ok()
        })
    }

    /// The key of `window`, if it is the current or the previous one.
    fn key(&self, window: u64) -> Option<&LessSafeKey> {
        if window == self.window {
            Some(&self.current.aead)
        } else if window.checked_add(1) == Some(self.window) {
            self.previous.as_ref().map(|k| &k.aead)
        } else {
            None
        }
    }

    /// Its state as a binary upgrade hands it over: [`HANDOVER_TAG`], the window (8 bytes,
    /// big-endian), the chain, then the previous key if there is one.
    fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(HANDOVER_MAX));
        out.extend_from_slice(HANDOVER_TAG);
        out.extend_from_slice(&self.window.to_be_bytes());
        out.extend_from_slice(&self.chain.0.0);
        if let Some(previous) = &self.previous {
            out.extend_from_slice(&previous.bytes.0);
        }
        out
    }

    /// Its handover and back, as a new master takes it (tests).
    #[cfg(test)]
    pub(crate) fn handed_over(&self) -> Option<Ratchet> {
        Ratchet::from_bytes(&self.to_bytes())
    }

    /// What [`Ratchet::to_bytes`] wrote; `None` for anything else (another version's).
    fn from_bytes(bytes: &[u8]) -> Option<Ratchet> {
        let rest = bytes.strip_prefix(HANDOVER_TAG)?;
        let (window, rest) = rest.split_first_chunk::<8>()?;
        let (chain, rest) = rest.split_first_chunk::<32>()?;
        let previous = match rest.len() {
            0 => None,
            32 => Some(Key::new(Secret(rest.try_into().ok()?))),
            _ => return None,
        };
        let window = u64::from_be_bytes(*window);
        let chain = Chain(Secret(*chain));
        Some(Ratchet { window, current: chain.key(window), chain, previous })
    }
}

/// A process's ratchet, behind a lock: the worker's tasks issue and open tickets with it and
/// its heartbeat moves it forward. `None` once forgotten (or before [`init`]).
pub(crate) struct TicketSecret(Mutex<Option<Ratchet>>);

impl TicketSecret {
    /// A ratchet of its own (tests: one per simulated process).
    #[cfg(test)]
    pub(crate) fn new(ratchet: Ratchet) -> &'static TicketSecret {
        Box::leak(Box::new(TicketSecret(Mutex::new(Some(ratchet)))))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Ratchet>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the ratchet forward to the window of `unix` (seconds since the epoch).
    fn advance(&self, unix: u64) {
        if let Some(r) = self.lock().as_mut() {
            r.advance_to(window_of(unix));
        }
    }
}

/// This process's ratchet: started by the master before its first fork, so that every
/// process it forks inherits its place on the chain, and kept across `HUP`s. The master is
/// single-threaded and never holds the lock while it forks.
static PROCESS: TicketSecret = TicketSecret(Mutex::new(None));

/// Whether this process made a [`Ticketer`] (a worker serving TLS with tickets on).
static USED: AtomicBool = AtomicBool::new(false);

/// Starts the master's chain, once; later calls keep it. Called before any process is forked.
pub(crate) fn init() -> Result<(), ring::error::Unspecified> {
    let mut state = PROCESS.lock();
    if state.is_none() {
        *state = Some(Ratchet::start(window_of(unix_now()))?);
    }
    Ok(())
}

/// This process's ratchet, once [`init`] ran (in the master, or in the master that forked it).
pub(crate) fn secret() -> Option<&'static TicketSecret> {
    PROCESS.lock().is_some().then_some(&PROCESS)
}

/// Moves this process's ratchet to the current window, forgetting older keys: the master
/// each turn of its loop, a worker at each heartbeat, so that a process that issues no
/// tickets does not keep old keys either.
pub(crate) fn advance() {
    PROCESS.advance(unix_now());
}

/// Drops this process's ratchet unless it issues tickets: a worker with TLS off, or tickets
/// off, has no use for it.
pub(crate) fn forget_unless_used() {
    if !USED.load(Ordering::Relaxed) {
        *PROCESS.lock() = None;
    }
}

/// What a handover starts with: its format's name and version.
const HANDOVER_TAG: &[u8; 8] = b"tickets1";

/// The longest handover: the tag, the window, the chain and the previous key.
pub(crate) const HANDOVER_MAX: usize = 8 + 8 + 32 + 32;

/// In a master starting its successor (binary upgrade): this process's place on the chain, to
/// write on the line to the new master; `None` if it has none.
pub(crate) fn handover() -> Option<Zeroizing<Vec<u8>>> {
    let state = PROCESS.lock();
    state.as_ref().map(Ratchet::to_bytes)
}

/// In a new master, before it forks: takes over the old master's place on the chain, which
/// [`handover`] wrote, instead of its own. Returns whether `bytes` were one.
pub(crate) fn adopt(bytes: &[u8]) -> bool {
    let Some(ratchet) = Ratchet::from_bytes(bytes) else { return false };
    *PROCESS.lock() = Some(ratchet);
    true
}

/// Issues and opens tickets with the keys of the current window (and opens the previous
/// window's), moving its ratchet forward as the clock says.
pub(crate) struct Ticketer {
    secret: &'static TicketSecret,
    rng: SystemRandom,
    now: fn() -> u64,
}

impl std::fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticketer").finish_non_exhaustive()
    }
}

impl Ticketer {
    pub(crate) fn new(secret: &'static TicketSecret) -> Self {
        USED.store(true, Ordering::Relaxed);
        Self::with_clock(secret, unix_now)
    }

    /// With a clock of its own (seconds since the Unix epoch), for tests.
    pub(crate) fn with_clock(secret: &'static TicketSecret, now: fn() -> u64) -> Self {
        Ticketer { secret, rng: SystemRandom::new(), now }
    }

    /// Runs `f` with the ratchet moved to the current window; `None` if it was forgotten.
    fn with_ratchet<R>(&self, f: impl FnOnce(&Ratchet) -> Option<R>) -> Option<R> {
        let mut state = self.secret.lock();
        let ratchet = state.as_mut()?;
        ratchet.advance_to(window_of((self.now)()));
        f(ratchet)
    }
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
        self.with_ratchet(|r| {
            let header = r.window.to_be_bytes();
            let mut out = Vec::with_capacity(8 + NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
            out.extend_from_slice(&header);
            out.extend_from_slice(&nonce);
            out.extend_from_slice(plain);
            let tag = r
                .current
                .aead
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
        self.with_ratchet(|r| {
            let key = r.key(window)?;
            let mut buf = cipher[8 + NONCE_LEN..].to_vec();
            let n = key.open_in_place(nonce, Aad::from(header), &mut buf).ok()?.len();
            buf.truncate(n);
            Some(buf)
        })
    }
}
