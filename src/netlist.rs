//! Address lists (`[access] publish_from`, `play_from`): networks written as CIDR
//! (`10.0.0.0/8`, `2001:db8::/32`) or single addresses, and whether a peer is in one.
//! No I/O. An IPv4 peer seen on an IPv6 socket (`::ffff:10.1.2.3`) is matched as the
//! IPv4 address it is.

use std::net::IpAddr;

use crate::error::{invalid, Invalid};

/// One network: an address with its prefix length; the bits past the prefix are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Parses `ADDR/PREFIX` or a single `ADDR` (a /32 or /128). A network with bits set
    /// past its prefix (`10.1.2.3/8`) is refused: it is most likely a typing error.
    pub fn parse(text: &str) -> Result<Net, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or network like \"10.0.0.0/8\""))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0..={max}"))?,
        };
        let net = Net { addr, prefix };
        if net.masked(addr) != bits(addr) {
            return Err(format!(
                "{text:?} has bits set past its /{prefix} prefix (the network is {})",
                Net {
                    addr: from_bits(addr, net.masked(addr)),
                    prefix
                }
            ));
        }
        Ok(net)
    }

    /// Whether `peer` is in this network.
    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = unmapped(peer);
        peer.is_ipv4() == self.addr.is_ipv4() && self.masked(peer) == bits(self.addr)
    }

    fn masked(&self, addr: IpAddr) -> u128 {
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let host_bits = width - u32::from(self.prefix);
        let mask = if host_bits >= 128 {
            0
        } else {
            u128::MAX << host_bits
        };
        bits(addr) & mask
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn unmapped(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(like: IpAddr, bits: u128) -> IpAddr {
    match like {
        // The masked bits of an IPv4 address fit in 32 bits.
        IpAddr::V4(_) => IpAddr::V4(u32::try_from(bits).unwrap_or(0).into()),
        IpAddr::V6(_) => IpAddr::V6(bits.into()),
    }
}

/// A list of networks; empty means "anyone".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetList {
    nets: Vec<Net>,
}

impl NetList {
    /// Parses every entry; an error names the entry (`key[i]`).
    pub fn parse(key: &str, entries: &[String]) -> Result<NetList, Invalid> {
        let nets = entries
            .iter()
            .enumerate()
            .map(|(i, e)| Net::parse(e.trim()).map_err(|m| invalid(format!("{key}[{i}]"), m)))
            .collect::<Result<_, _>>()?;
        Ok(NetList { nets })
    }

    /// Whether `peer` may: the list is empty, or one of its networks holds it.
    pub fn allows(&self, peer: IpAddr) -> bool {
        self.nets.is_empty() || self.nets.iter().any(|n| n.contains(peer))
    }

    /// Whether the list names `peer` (an empty list names no one).
    pub fn allows_listed(&self, peer: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(peer))
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_hold_their_addresses_only() {
        let net = Net::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.255.1.2")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(
            !net.contains(ip("::a00:1")),
            "an IPv6 address is not IPv4's"
        );
        assert!(net.contains(ip("::ffff:10.1.2.3")), "mapped IPv4 is IPv4");
        let one = Net::parse("192.0.2.7").unwrap();
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6 = Net::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!(Net::parse("::1").unwrap().contains(ip("::1")));
        for any in ["0.0.0.0/0", "::/0"] {
            let all = Net::parse(any).unwrap();
            assert!(all.contains(ip("203.0.113.9")) != any.contains(':'));
            assert!(all.contains(ip("2001:db8::1")) == any.contains(':'));
        }
        let odd = Net::parse("172.16.0.0/12").unwrap();
        assert!(odd.contains(ip("172.31.255.255")) && !odd.contains(ip("172.32.0.0")));
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        for (text, why) in [
            ("10.0.0.0/33", "0..=32"),
            ("::/129", "0..=128"),
            ("10.0.0.0/", "0..=32"),
            ("10.0.0.0/-1", "0..=32"),
            ("10.0.0/8", "not an address"),
            ("host.example", "not an address"),
            ("", "not an address"),
            ("10.1.2.3/8", "the network is 10.0.0.0/8"),
            ("2001:db8::1/32", "the network is 2001:db8::/32"),
        ] {
            let e = Net::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn an_empty_list_allows_anyone_and_errors_name_the_entry() {
        assert!(NetList::default().allows(ip("198.51.100.1")));
        let list = NetList::parse(
            "access.publish_from",
            &["127.0.0.0/8".into(), " ::1 ".into()],
        )
        .unwrap();
        assert!(list.allows(ip("127.0.0.1")) && list.allows(ip("::1")));
        assert!(!list.allows(ip("198.51.100.1")));
        let e =
            NetList::parse("access.play_from", &["10.0.0.0/8".into(), "nope".into()]).unwrap_err();
        assert_eq!(e.key, "access.play_from[1]");
    }
}
