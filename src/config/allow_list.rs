//! [`AllowList`]: which peers are trusted, as `forwarded_allow_ips` and `proxy_allow_ips` say.
//! A config value like any other; the connection path asks it [`AllowList::allows`].

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A list of trusted addresses: IPs, CIDR networks, or `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Allowed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowed {
    Any,
    Net(IpAddr, u8),
}

impl AllowList {
    /// Whether `ip` is trusted.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.entries.iter().any(|e| match *e {
            Allowed::Any => true,
            Allowed::Net(net, bits) => in_net(ip, net, bits),
        })
    }

    /// An empty list: nobody is trusted.
    pub fn none() -> AllowList {
        AllowList { entries: Vec::new() }
    }
}

impl FromStr for AllowList {
    type Err = String;

    /// A comma-separated list, as on the command line: `127.0.0.1,::1,10.0.0.0/8` or `*`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            entries.push(parse_entry(item)?);
        }
        Ok(AllowList { entries })
    }
}

fn parse_entry(item: &str) -> Result<Allowed, String> {
    if item == "*" {
        return Ok(Allowed::Any);
    }
    let (ip, bits) = match item.split_once('/') {
        Some((ip, bits)) => (ip, Some(bits)),
        None => (item, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| format!("{item:?} is not an IP address or network"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b
            .parse::<u8>()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("{item:?}: the prefix length must be 0 to {max}"))?,
        None => max,
    };
    // An IPv4-mapped network (::ffff:10.0.0.0/104) is the IPv4 network (10.0.0.0/8).
    match canonical(ip) {
        v4 @ IpAddr::V4(_) if ip.is_ipv6() => {
            let bits = bits.checked_sub(96).ok_or_else(|| {
                format!("{item:?}: an IPv4-mapped network needs a prefix of at least 96")
            })?;
            Ok(Allowed::Net(v4, bits))
        }
        ip => Ok(Allowed::Net(ip, bits)),
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .entries
            .iter()
            .map(|e| match e {
                Allowed::Any => "*".to_string(),
                Allowed::Net(ip, bits) if *bits == if ip.is_ipv4() { 32 } else { 128 } => {
                    ip.to_string()
                }
                Allowed::Net(ip, bits) => format!("{ip}/{bits}"),
            })
            .collect();
        f.write_str(&items.join(","))
    }
}

/// IPv4-mapped IPv6 addresses are their IPv4 address: the client's identity and the allow
/// lists compare addresses in this form.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits.min(32)) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits.min(128)) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl<'de> Deserialize<'de> for AllowList {
    /// A list of strings, or one comma-separated string.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AllowList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of IP addresses or networks, or \"*\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<AllowList, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<AllowList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                items.join(",").parse().map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for AllowList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists() {
        let l: AllowList = "127.0.0.1, ::1, 10.0.0.0/8".parse().unwrap();
        assert!(l.allows("10.1.2.3".parse().unwrap()));
        assert!(l.allows("::ffff:127.0.0.1".parse().unwrap()), "mapped IPv4");
        assert!(!l.allows("11.0.0.1".parse().unwrap()));
        assert!("*".parse::<AllowList>().unwrap().allows("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<AllowList>().is_err());
        assert!("localhost".parse::<AllowList>().is_err());
        let mapped: AllowList = "::ffff:127.0.0.0/104".parse().unwrap();
        assert!(mapped.allows("127.9.9.9".parse().unwrap()));
        assert!(!mapped.allows("128.0.0.1".parse().unwrap()));
        assert!("::ffff:127.0.0.0/64".parse::<AllowList>().is_err());
        assert_eq!(l.to_string(), "127.0.0.1,::1,10.0.0.0/8");
    }
}
