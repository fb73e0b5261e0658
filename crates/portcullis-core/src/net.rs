//! Who the client is: the socket peer, unless the peer is a trusted proxy.

use std::net::IpAddr;
use std::str::FromStr;

/// An address block (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

/// A block that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid address block {0:?}: write an IP address or ADDRESS/BITS, like 127.0.0.1/32 or ::1/128"
)]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = || CidrError(s.chars().take(64).collect());
        let (a, b) = s.split_once('/').map_or((s, None), |(a, b)| (a, Some(b)));
        let addr: IpAddr = a.trim().parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match b {
            None => max,
            Some(b) => b.trim().parse::<u8>().map_err(|_| err())?,
        };
        if bits > max {
            return Err(err());
        }
        Ok(Cidr { addr, bits })
    }
}

impl Cidr {
    /// True when `ip` is inside the block. An IPv4-mapped IPv6 address is
    /// compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.bits))
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.bits))
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// True when `ip` is in any block.
pub fn is_trusted(trusted: &[Cidr], ip: IpAddr) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// The client's address: the peer, unless the peer is trusted; then the
/// rightmost `X-Forwarded-For` entry that is not itself trusted. A client
/// can write anything at the left of the header, so only entries added by
/// trusted proxies, read from the right, are believed.
pub fn client_ip<'a>(peer: IpAddr, trusted: &[Cidr], xff: impl Iterator<Item = &'a str>) -> IpAddr {
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let entries: Vec<&str> = xff.flat_map(|h| h.split(',')).collect();
    let mut last = peer;
    for e in entries.iter().rev() {
        let Ok(ip) = e.trim().parse::<IpAddr>() else {
            // A garbled entry: trust stops here.
            return last;
        };
        if !is_trusted(trusted, ip) {
            return ip;
        }
        last = ip;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn blocks_and_client_ip() {
        let t: Vec<Cidr> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(stranger, &t, ["1.2.3.4"].into_iter()), stranger);
        assert_eq!(
            client_ip(peer, &t, ["6.6.6.6, 198.51.100.7, 10.1.1.1"].into_iter()),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, &t, std::iter::empty()), peer);
        assert!(
            "::ffff:127.0.0.1"
                .parse::<IpAddr>()
                .map(|ip| t[0].contains(ip))
                .unwrap()
        );
        assert!("1.2.3.4/33".parse::<Cidr>().is_err());
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(stranger));
    }
}
