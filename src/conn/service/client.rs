//! Who the client is, the service stack's first layer: the transport's client (the peer, or
//! a trusted PROXY header's source), or, from trusted proxies only, what they say about the
//! client. `forwarded_allow_ips` says which peers' `X-Forwarded-For`, `X-Forwarded-Proto`,
//! `X-Forwarded-Host` and `Forwarded` headers are believed; `proxy_allow_ips` which peers may
//! open a connection with a PROXY protocol header (v1 or v2, as HAProxy and AWS NLB send).
//!
//! The app gets the result as a [`Client`] in each request's extensions. From a peer that is
//! not trusted, the forwarding headers are removed before the app sees them, so that an app
//! that reads them anyway cannot be lied to.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, Request};

use crate::config::{AllowList, canonical};

/// What forkserve knows about the client of a request, in the request's extensions:
/// `req.extensions().get::<forkserve::Client>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    addr: Option<IpAddr>,
    peer: Option<SocketAddr>,
    https: bool,
    host: Option<String>,
}

impl Client {
    /// The client's address: the peer's, or the one trusted proxies reported. `None` on a unix
    /// socket without forwarding headers.
    pub fn addr(&self) -> Option<IpAddr> {
        self.addr
    }

    /// The address of the connection's other end (the proxy's, behind one), or the source a
    /// trusted PROXY protocol header gave.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// `"https"` if the connection is TLS or a trusted proxy said the client used it (a
    /// trusted proxy's word wins either way), else `"http"`.
    pub fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// The host a trusted proxy said the client asked for (`X-Forwarded-Host`, `Forwarded:
    /// host=`), if any.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
}

const FORWARDED: [&str; 4] =
    ["forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/// Works out the client of a request that came from `peer`, and puts it in the request's
/// extensions; removes the forwarding headers of a peer that is not trusted. Returns the
/// client's address, for the request's end event.
///
/// With `extension` false (an app that never reads it), only the untrusted headers are removed.
/// `https` is the transport's scheme: whether the connection is TLS.
pub(crate) fn identify<B>(
    req: &mut Request<B>,
    peer: Option<SocketAddr>,
    https: bool,
    trusted: &AllowList,
    extension: bool,
) -> Option<IpAddr> {
    // Most requests carry none of the forwarding headers: one pass over their few fields tells.
    let forwarded = req.headers().keys().any(|k| FORWARDED.iter().any(|name| k == name));
    let peer_ip = peer.map(|p| canonical(p.ip()));
    if !forwarded && !extension {
        return peer_ip;
    }
    // A unix socket's peer is a local process, such as the proxy in front.
    let believed = peer_ip.is_none_or(|ip| trusted.allows(ip));
    let mut client = Client { addr: peer_ip, peer, https, host: None };
    let headers = req.headers_mut();
    if forwarded && !believed {
        for name in FORWARDED {
            headers.remove(HeaderName::from_static(name));
        }
    } else if forwarded {
        if headers.contains_key("x-forwarded-for") || !headers.contains_key("forwarded") {
            // The X-Forwarded-* family first: it is what most proxies set (nginx, HAProxy,
            // AWS), and a client's own `Forwarded` must not outrank what the proxy appended.
            from_x_forwarded(headers, trusted, &mut client);
        } else {
            from_forwarded(headers, trusted, &mut client);
        }
    }
    let addr = client.addr;
    if extension {
        req.extensions_mut().insert(client);
    }
    addr
}

/// The values of every field `name`, as one comma-separated list.
fn list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The client is the rightmost address that is not a trusted proxy: each trusted hop appended
/// the address it saw, and the first untrusted one could have written anything to its left.
fn rightmost_untrusted(hops: &[Option<IpAddr>], trusted: &AllowList) -> Option<IpAddr> {
    let mut client = None;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) => {
                client = Some(*ip);
                if !trusted.allows(*ip) {
                    break;
                }
            }
            // An address that cannot be read ends what can be believed.
            None => break,
        }
    }
    client
}

fn from_x_forwarded(headers: &HeaderMap, trusted: &AllowList, client: &mut Client) {
    let hops: Vec<Option<IpAddr>> =
        list(headers, "x-forwarded-for").iter().map(|h| parse_node(h)).collect();
    if let Some(ip) = rightmost_untrusted(&hops, trusted) {
        client.addr = Some(ip);
    }
    if let Some(proto) = list(headers, "x-forwarded-proto").last() {
        client.https = proto.eq_ignore_ascii_case("https");
    }
    client.host = list(headers, "x-forwarded-host").pop().filter(|h| valid_host(h));
}

/// `Forwarded` (RFC 7239): `for=`, `proto=`, `host=` in each element. The client is the
/// rightmost untrusted `for`; its element's `proto` and `host` are the ones believed.
fn from_forwarded(headers: &HeaderMap, trusted: &AllowList, client: &mut Client) {
    struct Element {
        hop: Option<IpAddr>,
        https: Option<bool>,
        host: Option<String>,
    }
    let elements: Vec<Element> = list(headers, "forwarded")
        .iter()
        .map(|element| {
            let mut e = Element { hop: None, https: None, host: None };
            for pair in element.split(';') {
                let Some((key, value)) = pair.split_once('=') else { continue };
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "for" => e.hop = parse_node(value),
                    "proto" => e.https = Some(value.eq_ignore_ascii_case("https")),
                    "host" => e.host = Some(value.to_string()),
                    _ => {}
                }
            }
            e
        })
        .collect();
    let hops: Vec<Option<IpAddr>> = elements.iter().map(|e| e.hop).collect();
    let Some(ip) = rightmost_untrusted(&hops, trusted) else { return };
    let Some(chosen) = elements.iter().rev().find(|e| e.hop == Some(ip)) else { return };
    client.addr = Some(ip);
    client.https = chosen.https.unwrap_or(false);
    client.host = chosen.host.clone().filter(|h| valid_host(h));
}

/// An address as forwarding headers write it: `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80`,
/// `::1`; `unknown` and obfuscated identifiers are not addresses.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = s.parse::<SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    let inner = s.strip_prefix('[').and_then(|r| r.split(']').next())?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

fn valid_host(h: &str) -> bool {
    !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(peer: &str, headers: &[(&'static str, &str)], trusted: &str) -> (Client, HeaderMap) {
        let mut req = Request::new(());
        for (k, v) in headers {
            req.headers_mut().append(*k, v.parse().unwrap());
        }
        identify(&mut req, Some(peer.parse().unwrap()), false, &trusted.parse().unwrap(), true);
        let c = req.extensions().get::<Client>().unwrap().clone();
        (c, req.headers().clone())
    }

    #[test]
    fn forwarded_headers_from_trusted_peers_only() {
        let xff = [("x-forwarded-for", "6.6.6.6, 1.2.3.4"), ("x-forwarded-proto", "https")];
        let (c, _) = client("127.0.0.1:5000", &xff, "127.0.0.1");
        assert_eq!(c.addr(), Some("1.2.3.4".parse().unwrap()), "the rightmost untrusted hop");
        assert_eq!(c.scheme(), "https");
        let (c, _) = client("127.0.0.1:5000", &xff, "127.0.0.1,1.2.3.4");
        assert_eq!(c.addr(), Some("6.6.6.6".parse().unwrap()), "through two trusted proxies");
        let (c, headers) = client("9.9.9.9:5000", &xff, "127.0.0.1");
        assert_eq!(c.addr(), Some("9.9.9.9".parse().unwrap()));
        assert_eq!(c.scheme(), "http");
        assert!(headers.get("x-forwarded-for").is_none(), "an untrusted peer's are removed");
        let fwd = [("forwarded", "for=\"[2001:db8::1]:4711\";proto=https;host=example.com")];
        let (c, _) = client("[::1]:5000", &fwd, "::1");
        assert_eq!(c.addr(), Some("2001:db8::1".parse().unwrap()));
        assert_eq!((c.scheme(), c.host()), ("https", Some("example.com")));
        // A client's own Forwarded does not outrank the proxy's X-Forwarded-For.
        let both = [("forwarded", "for=1.2.3.4;proto=https"), ("x-forwarded-for", "203.0.113.9")];
        let (c, _) = client("127.0.0.1:5000", &both, "127.0.0.1");
        assert_eq!((c.addr(), c.scheme()), (Some("203.0.113.9".parse().unwrap()), "http"));
        // proto comes from the element of the client chosen, not from any element.
        let fwd = [("forwarded", "for=1.2.3.4;proto=https, for=203.0.113.9")];
        let (c, _) = client("127.0.0.1:5000", &fwd, "127.0.0.1");
        assert_eq!((c.addr(), c.scheme()), (Some("203.0.113.9".parse().unwrap()), "http"));
        let (c, _) = client("127.0.0.1:1", &[("x-forwarded-for", "garbage")], "127.0.0.1");
        assert_eq!(c.addr(), Some("127.0.0.1".parse().unwrap()), "an unreadable hop is ignored");
    }

    #[test]
    fn without_the_extension_untrusted_headers_still_go() {
        let mut req = Request::new(());
        req.headers_mut().append("x-forwarded-for", "203.0.113.9".parse().unwrap());
        let mut trusted_req = req.clone();
        identify(
            &mut req,
            Some("198.51.100.1:9".parse().unwrap()),
            false,
            &"127.0.0.1".parse().unwrap(),
            false,
        );
        assert!(req.headers().get("x-forwarded-for").is_none(), "removed from an untrusted peer");
        assert!(req.extensions().get::<Client>().is_none());
        identify(
            &mut trusted_req,
            Some("127.0.0.1:9".parse().unwrap()),
            false,
            &"127.0.0.1".parse().unwrap(),
            false,
        );
        assert!(trusted_req.headers().get("x-forwarded-for").is_some(), "kept from a trusted one");
        assert!(trusted_req.extensions().get::<Client>().is_none());
    }
}
