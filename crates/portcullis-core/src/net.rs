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

/// Which header the trusted proxies write the client's address in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1` (nginx, most load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name, lower case.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }

    /// Parses `x-forwarded-for` or `forwarded`.
    pub fn parse(s: &str) -> Option<ForwardedHeader> {
        match s.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Some(ForwardedHeader::XForwardedFor),
            "forwarded" => Some(ForwardedHeader::Forwarded),
            _ => None,
        }
    }
}

/// The address in one `Forwarded` element's `for=` parameter, without
/// quotes, brackets or port; `None` when there is none or it is
/// `unknown` / an obfuscated name.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let v = element.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })?;
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    match v.parse() {
        Ok(ip) => Some(ip),
        // IPv4 with a port.
        Err(_) => v.split_once(':')?.0.parse().ok(),
    }
}

/// One `X-Forwarded-For` entry: an address, or one with a port
/// (`203.0.113.5:51234`, `[2001:db8::1]:443`), as some proxies (Azure
/// Application Gateway) write it. Read rather than treated as garbled: a
/// garbled entry stops the walk at the proxy, and the proxy's address
/// would then stand for all its clients.
fn xff_entry(e: &str) -> Option<IpAddr> {
    e.parse()
        .ok()
        .or_else(|| e.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// The client's address: the peer, unless the peer is trusted; then the
/// rightmost address in `header` that is not itself trusted. A client can
/// write anything at the left of the header, so only entries added by
/// trusted proxies, read from the right, are believed; an entry that does
/// not parse stops the walk there.
pub fn client_ip<'a>(
    peer: IpAddr,
    trusted: &[Cidr],
    header: ForwardedHeader,
    values: impl Iterator<Item = &'a str>,
) -> IpAddr {
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let entries: Vec<Option<IpAddr>> = values
        .flat_map(|h| h.split(','))
        .map(|e| match header {
            ForwardedHeader::XForwardedFor => xff_entry(e.trim()),
            ForwardedHeader::Forwarded => forwarded_for(e),
        })
        .collect();
    let mut last = peer;
    for e in entries.iter().rev() {
        let Some(ip) = *e else {
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

/// The address a client is counted under: IPv4 as it is, IPv6 by its /64,
/// since one subscriber usually holds a whole /64 and could otherwise
/// take a fresh allowance with every address in it.
pub fn counted_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                v6.to_bits() & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// Room for any address [`write_address`] writes: an IPv6 address is at
/// most 39 characters, `::ffff:` and a dotted IPv4 address 22.
pub const ADDRESS_MAX: usize = 40;

/// `ip` as `IpAddr`'s `Display` writes it, into `buf`. Every proxied
/// request writes its client's address twice (the forwarding headers and
/// the access log); IPv4, the common case, skips `core::fmt`'s machinery.
pub fn write_address(ip: IpAddr, buf: &mut [u8; ADDRESS_MAX]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                let mut d = [0u8; 20];
                let d = crate::decimal::digits(u64::from(o), &mut d);
                // At most 15 bytes in all: four octets of three digits, three dots.
                buf[n..n + d.len()].copy_from_slice(d);
                n += d.len();
            }
            &buf[..n]
        }
        IpAddr::V6(v6) => {
            struct Cursor<'a> {
                buf: &'a mut [u8],
                n: usize,
            }
            impl std::fmt::Write for Cursor<'_> {
                fn write_str(&mut self, s: &str) -> std::fmt::Result {
                    let to = self
                        .buf
                        .get_mut(self.n..self.n + s.len())
                        .ok_or(std::fmt::Error)?;
                    to.copy_from_slice(s.as_bytes());
                    self.n += s.len();
                    Ok(())
                }
            }
            let mut w = Cursor {
                buf: &mut buf[..],
                n: 0,
            };
            // ADDRESS_MAX holds every IPv6 address's text, so this cannot
            // fail; were it to, the text written so far is cut to nothing
            // rather than half an address.
            let n = match std::fmt::write(&mut w, format_args!("{v6}")) {
                Ok(()) => w.n,
                Err(_) => 0,
            };
            &buf[..n]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn addresses_are_written_as_display_writes_them(
            v4 in proptest::prelude::any::<u32>(),
            v6 in proptest::prelude::any::<u128>(),
            mapped in proptest::prelude::any::<u32>(),
        ) {
            let mapped = std::net::Ipv4Addr::from(mapped).to_ipv6_mapped();
            for a in [
                IpAddr::from(std::net::Ipv4Addr::from(v4)),
                IpAddr::from(std::net::Ipv6Addr::from(v6)),
                IpAddr::from(mapped),
            ] {
                let mut buf = [0u8; ADDRESS_MAX];
                let want = a.to_string();
                proptest::prop_assert_eq!(write_address(a, &mut buf), want.as_bytes());
            }
        }
    }

    #[test]
    fn the_longest_addresses_fit() {
        for a in [
            "255.255.255.255",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
            "1111:2222:3333:4444:5555:6666:7777:8888",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            let mut buf = [0u8; ADDRESS_MAX];
            assert_eq!(write_address(ip, &mut buf), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(counted_address(a), counted_address(b));
        assert_ne!(counted_address(a), counted_address(c));
        let m: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(counted_address(m), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn blocks_and_client_ip() {
        let t: Vec<Cidr> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        let xff = ForwardedHeader::XForwardedFor;
        assert_eq!(
            client_ip(stranger, &t, xff, ["1.2.3.4"].into_iter()),
            stranger
        );
        assert_eq!(
            client_ip(
                peer,
                &t,
                xff,
                ["6.6.6.6, 198.51.100.7, 10.1.1.1"].into_iter()
            ),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, &t, xff, std::iter::empty()), peer);
        // An entry with a port is its address (Azure Application Gateway).
        assert_eq!(
            client_ip(peer, &t, xff, ["203.0.113.5:51234, 10.1.1.1"].into_iter()),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(peer, &t, xff, ["[2001:db8::7]:443"].into_iter()),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        // A garbled entry stops the walk at the last trusted hop.
        assert_eq!(
            client_ip(peer, &t, xff, ["6.6.6.6, junk, 10.1.1.1"].into_iter()),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
        assert!(
            "::ffff:127.0.0.1"
                .parse::<IpAddr>()
                .map(|ip| t[0].contains(ip))
                .unwrap()
        );
        assert!("1.2.3.4/33".parse::<Cidr>().is_err());

        // RFC 7239: quoted, bracketed, with ports; the rightmost untrusted.
        let fwd = ForwardedHeader::Forwarded;
        let h = [
            "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https",
            "For=\"10.2.3.4:8080\";by=10.0.0.1",
        ];
        assert_eq!(
            client_ip(peer, &t, fwd, h.into_iter()),
            "2001:db8:cafe::17".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(peer, &t, fwd, ["for=192.0.2.60;proto=http"].into_iter()),
            "192.0.2.60".parse::<IpAddr>().unwrap()
        );
        // `unknown` and obfuscated names are not addresses.
        assert_eq!(
            client_ip(peer, &t, fwd, ["for=1.2.3.4, for=unknown"].into_iter()),
            peer
        );
        assert_eq!(
            client_ip(peer, &t, fwd, ["for=1.2.3.4, proto=http"].into_iter()),
            peer
        );
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(stranger));
    }
}
