//! Choosing a certificate by the name the client asked for (SNI): an exact name of a leaf's
//! subjectAltName, else a wildcard one label deep, else the first pair (nginx's default
//! server). Fixed for a generation: a reload forks new workers with a new resolver.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::Loaded;

/// The worker's certificates, by name.
#[derive(Debug)]
pub(crate) struct Sni {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com`, stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// The first pair: for clients without SNI, or asking for a name no pair covers.
    default: Arc<CertifiedKey>,
}

impl Sni {
    /// A resolver over `pairs`, the first the default; `None` without any. A name two pairs
    /// cover goes to the first of them.
    pub(crate) fn new(pairs: &[Loaded]) -> Option<Sni> {
        let default = Arc::clone(&pairs.first()?.key);
        let (mut exact, mut wildcard) = (HashMap::new(), HashMap::new());
        for p in pairs {
            for n in &p.names {
                let table = match n.strip_prefix("*.") {
                    Some(base) => wildcard.entry(base.to_owned()),
                    None => exact.entry(n.clone()),
                };
                table.or_insert_with(|| Arc::clone(&p.key));
            }
        }
        Some(Sni { exact, wildcard, default })
    }

    /// The pair for `name`.
    pub(crate) fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name else { return Arc::clone(&self.default) };
        let name = name.to_ascii_lowercase();
        let found = self.exact.get(&name).or_else(|| {
            let (_, base) = name.split_once('.')?;
            self.wildcard.get(base)
        });
        Arc::clone(found.unwrap_or(&self.default))
    }
}

impl ResolvesServerCert for Sni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}
