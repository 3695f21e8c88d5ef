//! The transport: how a connection's bytes travel once its preamble is read. Plain TCP or a
//! unix socket today; TLS slots in here next, between the preamble and the protocol. What is
//! known of the connection's two ends ([`Facts`]) is settled here, once, and read-only for the
//! connection's life: the protocol and the service stack read it, nothing writes it again.

use std::net::{IpAddr, SocketAddr};

/// What is known of a connection's ends, set once before its first request. Later: the TLS
/// version, the ALPN protocol and the SNI name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// The socket's peer (`None` on a unix socket).
    pub(crate) peer: Option<SocketAddr>,
    /// The address of the listener that accepted it (`None` on a unix socket). For a
    /// listener bound to a wildcard (`0.0.0.0:80`), that wildcard, not the address the client
    /// reached: that one takes a `getsockname(2)` per connection, and nothing needs it yet. A
    /// reader that does should read it here, from the socket, once, rather than make every
    /// connection pay for it.
    pub(crate) listener: Option<SocketAddr>,
    /// The client's address as a trusted PROXY protocol header gave it.
    pub(crate) proxied: Option<SocketAddr>,
}

impl Facts {
    /// The client's address, as the transport knows it: what a trusted PROXY header said, or
    /// the socket's peer. (Forwarding headers, read per request, may say more: see
    /// [`super::service::client::identify`].)
    pub(crate) fn client(&self) -> Option<SocketAddr> {
        self.proxied.or(self.peer)
    }

    /// The client's IP, as the transport knows it.
    pub(crate) fn client_ip(&self) -> Option<IpAddr> {
        self.client().map(|a| crate::config::canonical(a.ip()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_proxied_source_else_the_peer() {
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "[::ffff:192.0.2.7]:80".parse().unwrap();
        let table = [
            (Facts { peer: Some(a), listener: None, proxied: None }, Some(a)),
            (Facts { peer: Some(a), listener: None, proxied: Some(b) }, Some(b)),
            (Facts { peer: None, listener: None, proxied: None }, None),
        ];
        for (facts, client) in table {
            assert_eq!(facts.client(), client);
        }
        let proxied = Facts { peer: Some(a), listener: None, proxied: Some(b) };
        assert_eq!(proxied.client_ip(), Some("192.0.2.7".parse().unwrap()), "canonical");
    }
}
