//! A test PKI (rcgen): a CA and the leaves it signs, written as PEM files in a directory of
//! their own, for the tests that serve HTTPS; and rustls clients that trust the CA.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A CA, and leaves it signs, written as PEM files in a directory of their own.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: rcgen::Certificate,
    pub ca_key: rcgen::KeyPair,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "forkserve test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        Pki { dir: super::tempdir(), ca, ca_key }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `NAME.pem` and `NAME.key`: a leaf for `names`, its common name `NAME`, valid
    /// until `until` (year, month, day) or for a long while.
    pub fn leaf(
        &self,
        name: &str,
        names: &[&str],
        until: Option<(i32, u8, u8)>,
    ) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        if let Some((y, m, d)) = until {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let chain = format!("{}{}", cert.pem(), self.ca.pem());
        let (c, k) = (self.path(&format!("{name}.pem")), self.path(&format!("{name}.key")));
        std::fs::write(&c, chain).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.to_str().unwrap().into(), k.to_str().unwrap().into())
    }

    pub fn ca_file(&self) -> String {
        let p = self.path("ca.pem");
        std::fs::write(&p, self.ca.pem()).unwrap();
        p.to_str().unwrap().into()
    }

    /// A rustls client of `versions` that trusts the test CA, presenting `cert` if given.
    pub fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        cert: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match cert {
            Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
            None => builder.with_no_client_auth(),
        })
    }
}
