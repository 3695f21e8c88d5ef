//! Loading one certificate chain and its key (PEM) and checking them before anything serves
//! them: the chain has a certificate, the key is one ring can sign with and is the leaf's, and
//! the leaf is valid now. Pure functions of the files and the time; the master calls them.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// The largest certificate or key file read: as the config file's bound, so that a path
/// naming something huge (or a device) cannot hold the master.
pub(crate) const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// One loaded pair, with what the SNI resolver needs from its leaf.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) key: Arc<CertifiedKey>,
    /// The DNS names of the leaf's subjectAltName, lowercase (a wildcard starts with `*.`).
    pub(crate) names: Vec<String>,
    /// The leaf's notAfter, in seconds since the epoch.
    pub(crate) not_after: i64,
}

/// Why a pair was refused; each message names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    #[error("{file}: {source}")]
    Read { file: String, source: std::io::Error, role: Role },
    #[error("{file}: no CERTIFICATE in the file")]
    NoCertificate { file: String },
    #[error("{file}: not PEM: {why}")]
    Pem { file: String, why: String, role: Role },
    #[error("{file}: no private key in the file (PKCS#8, RSA or EC PEM)")]
    NoKey { file: String },
    #[error("{file}: key not supported: {why}")]
    Unsupported { file: String, why: String },
    #[error("key {key} does not match certificate {cert}")]
    Mismatch { cert: String, key: String },
    #[error("{file}: the certificate cannot be parsed: {why}")]
    Parse { file: String, why: String },
    #[error("{file}: expired on {when} (notAfter)")]
    Expired { file: String, when: String },
    #[error("{file}: not valid before {when} (notBefore)")]
    NotYetValid { file: String, when: String },
}

/// Which file of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Cert,
    Key,
}

impl CertError {
    /// The file the error is about, and which of the pair it is; `None` for a pair that does
    /// not match (both are).
    pub(crate) fn file(&self) -> Option<(Role, &Path)> {
        let (role, file) = match self {
            CertError::Read { file, role, .. } | CertError::Pem { file, role, .. } => (*role, file),
            CertError::NoKey { file } | CertError::Unsupported { file, .. } => (Role::Key, file),
            CertError::NoCertificate { file }
            | CertError::Parse { file, .. }
            | CertError::Expired { file, .. }
            | CertError::NotYetValid { file, .. } => (Role::Cert, file),
            CertError::Mismatch { .. } => return None,
        };
        Some((role, Path::new(file)))
    }
}

/// Reads a regular file of at most [`MAX_PEM_BYTES`] (a FIFO would block the master).
fn read_small(path: &Path, role: Role) -> Result<Vec<u8>, CertError> {
    let err = |source| CertError::Read { file: path.display().to_string(), source, role };
    use std::os::unix::fs::OpenOptionsExt;
    // Opened without blocking: a FIFO in the file's place must not hold the master in open(2).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::other("not a regular file")));
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(err(std::io::Error::other(format!("larger than {MAX_PEM_BYTES} bytes"))));
    }
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes).map_err(err)?;
    Ok(bytes)
}

/// A time as errors write it (`Mon, 01 Jan 2001 00:00:00 GMT`).
fn date(unix: i64) -> String {
    let at = UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    httpdate::fmt_http_date(at)
}

/// Loads and checks one pair at `now`.
pub(crate) fn load(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<Loaded, CertError> {
    let cert_file = cert.display().to_string();
    let key_file = key.display().to_string();
    let pem = read_small(cert, Role::Cert)?;
    let chain =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| {
            CertError::Pem { file: cert_file.clone(), why: e.to_string(), role: Role::Cert }
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate { file: cert_file });
    }
    // PKCS#8, PKCS#1 (RSA) or SEC1 (EC): whichever the file holds first.
    let der = PrivateKeyDer::from_pem_slice(&read_small(key, Role::Key)?).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => CertError::NoKey { file: key_file.clone() },
        e => CertError::Pem { file: key_file.clone(), why: e.to_string(), role: Role::Key },
    })?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| CertError::Unsupported { file: key_file.clone(), why: e.to_string() })?;
    let certified = CertifiedKey::new(chain, signing);
    // `CertifiedKey::from_der` would let an unknown key through; ring's keys all know their
    // public half, so a mismatch is always seen.
    if certified.keys_match().is_err() {
        return Err(CertError::Mismatch { cert: cert_file, key: key_file });
    }
    let leaf = certified.cert[0].as_ref();
    let (_, x509) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| CertError::Parse { file: cert_file.clone(), why: e.to_string() })?;
    let validity = x509.validity();
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let not_after = validity.not_after.timestamp();
    if now > not_after {
        return Err(CertError::Expired { file: cert_file, when: date(not_after) });
    }
    if now < validity.not_before.timestamp() {
        let when = date(validity.not_before.timestamp());
        return Err(CertError::NotYetValid { file: cert_file, when });
    }
    let mut names = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    Ok(Loaded { key: Arc::new(certified), names, not_after })
}
