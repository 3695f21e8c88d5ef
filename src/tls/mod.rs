//! HTTPS: what the master loads and checks of the `[tls]` table, and what each worker builds
//! from it. The master loads every certificate and key when it loads a config (at start, on
//! `HUP`, with `--check-config`), before it binds or forks anything, so that a bad pair is an
//! error at start and a rejected reload, never a worker that cannot serve. Workers inherit the
//! checked pairs by `fork` and never read key files themselves.
//!
//! [`certs`] loads and checks one pair, [`sni`] picks one by the name a client asks for,
//! [`tickets`] makes session tickets any worker of the server can open, and
//! [`Material::server_config`] puts them together into rustls' config, in each worker.

pub(crate) mod certs;
pub(crate) mod sni;
pub(crate) mod tickets;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;

use self::certs::{CertError, Loaded};
use self::sni::Sni;

/// The ALPN protocols a TLS listener offers, in the server's order of preference (rustls
/// picks the first of these the client also offers): `h2` first unless `tls.http2` is off.
/// A client that offers no ALPN at all speaks HTTP/1.1.
pub(crate) fn alpn(http2: bool) -> &'static [&'static [u8]] {
    if http2 { &[b"h2", b"http/1.1"] } else { &[b"http/1.1"] }
}

/// What a config's `[tls]` table asks for (the config module makes it: this module knows
/// nothing of configs, so that data flows one way).
#[derive(Debug)]
pub(crate) struct Spec<'a> {
    pub(crate) cert: Option<&'a Path>,
    pub(crate) key: Option<&'a Path>,
    /// More pairs for SNI: (certificate, key).
    pub(crate) sni: Vec<(&'a Path, &'a Path)>,
    /// TLS 1.3 only, else 1.2 too.
    pub(crate) tls13_only: bool,
    pub(crate) session_tickets: bool,
    /// Offer HTTP/2 (`h2`) by ALPN.
    pub(crate) http2: bool,
}

/// The checked `[tls]` of one config: its pairs, ready to serve, and its settings.
#[derive(Debug)]
pub struct Material {
    sni: Arc<Sni>,
    tls13_only: bool,
    session_tickets: bool,
    http2: bool,
    /// Certificates that expire within [`EXPIRY_WARNING_SECS`]: each file, and its days left.
    expiring: Vec<(String, i64)>,
}

/// A certificate this close to its notAfter is warned about when loaded.
const EXPIRY_WARNING_SECS: i64 = 7 * 24 * 3600;

/// Why a `[tls]` table cannot serve.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("tls.key is set but tls.cert is not")]
    KeyWithoutCert,
    #[error("tls.cert is set but tls.key is not")]
    CertWithoutKey,
    #[error("tls.sni needs tls.cert and tls.key: the first pair is the default")]
    SniWithoutDefault,
    #[error("{0}")]
    Pair(#[from] CertError),
}

impl TlsError {
    /// The file the error is about, if it is about one, and which of its pair it is.
    pub(crate) fn file(&self) -> Option<(certs::Role, &Path)> {
        match self {
            TlsError::Pair(e) => e.file(),
            _ => None,
        }
    }
}

/// The one crypto provider: ring's, with its defaults (AEAD suites only: AES-GCM and
/// ChaCha20-Poly1305, with ECDHE; TLS 1.2 and 1.3).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Material {
    /// Loads and checks every pair `spec` names at `now`; `None` without `[tls] cert`.
    pub(crate) fn load(spec: &Spec<'_>, now: SystemTime) -> Result<Option<Material>, TlsError> {
        let (cert, key) = match (spec.cert, spec.key) {
            (Some(cert), Some(key)) => (cert, key),
            (None, Some(_)) => return Err(TlsError::KeyWithoutCert),
            (Some(_), None) => return Err(TlsError::CertWithoutKey),
            (None, None) if !spec.sni.is_empty() => return Err(TlsError::SniWithoutDefault),
            (None, None) => return Ok(None),
        };
        let provider = provider();
        let mut pairs: Vec<Loaded> = vec![certs::load(cert, key, &provider, now)?];
        for (cert, key) in &spec.sni {
            pairs.push(certs::load(cert, key, &provider, now)?);
        }
        let unix = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let files = std::iter::once(cert).chain(spec.sni.iter().map(|(cert, _)| *cert));
        let expiring = pairs
            .iter()
            .zip(files)
            .filter(|(p, _)| p.not_after - unix < EXPIRY_WARNING_SECS)
            .map(|(p, file)| (file.display().to_string(), (p.not_after - unix) / 86400))
            .collect();
        let sni = Sni::new(&pairs).map(Arc::new).ok_or(TlsError::CertWithoutKey)?;
        Ok(Some(Material {
            sni,
            tls13_only: spec.tls13_only,
            session_tickets: spec.session_tickets,
            http2: spec.http2,
            expiring,
        }))
    }

    /// Warns of each certificate that expires within 7 days: the master says so once the
    /// config is loaded, where its log goes (at start, the log is set up after the load).
    pub(crate) fn warn_expiring(&self) {
        for (cert, days) in &self.expiring {
            tracing::warn!(cert = %cert, days, "certificate expires within 7 days");
        }
    }

    /// rustls' config for a worker's TLS listeners: built in the worker, at boot, from what
    /// the master checked and the ticket secret it made before forking.
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls13_only {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let mut c = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&self.sni) as Arc<_>);
        c.alpn_protocols = alpn(self.http2).iter().map(|p| p.to_vec()).collect();
        // A session-ID cache would resume only on the worker that made the session: tickets
        // resume on any (TLS 1.2 and 1.3); without them, every handshake is a full one.
        c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        match tickets::secret() {
            Some(secret) if self.session_tickets => {
                c.ticketer = Arc::new(tickets::Ticketer::new(secret));
                // rustls' default of 2 costs a second ticket encryption per handshake.
                c.send_tls13_tickets = 1;
            }
            _ => c.send_tls13_tickets = 0,
        }
        // No 0-RTT: early data can be replayed.
        c.max_early_data_size = 0;
        Ok(Arc::new(c))
    }
}

#[cfg(test)]
mod tests;
