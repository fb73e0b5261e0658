//! Which client addresses count as one for abuse counting: an IPv4
//! address is itself; an IPv6 address is its /64, because one subscriber
//! is usually handed a whole /64 and picks any address in it at will
//! (counting per address would let one host rotate through 2⁶⁴ of them);
//! an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack
//! socket reports for an IPv4 peer) is the IPv4 address it maps, and so
//! is a NAT64 address in the well-known prefix `64:ff9b::/96` (RFC 6052):
//! behind a NAT64 gateway every IPv4 server's clients arrive from one
//! /64, and counting that /64 as one would let one client's flood block
//! every IPv4 client of the same translator.
//!
//! Two addresses share a bucket exactly when this rule says so, so a
//! flood from one /64 never touches an address outside it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The unit failed credentials are counted by: one IPv4 address, or one
/// IPv6 /64. Small and `Copy`: a map key on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientBucket {
    /// One IPv4 address (also reached through its IPv4-mapped IPv6 form).
    V4(u32),
    /// One IPv6 /64: the address's upper 64 bits.
    V6(u64),
}

impl ClientBucket {
    /// The bucket `ip` falls in.
    pub fn of(ip: IpAddr) -> ClientBucket {
        match ip {
            IpAddr::V4(a) => ClientBucket::V4(a.to_bits()),
            IpAddr::V6(a) => match a.to_ipv4_mapped().or_else(|| nat64(a)) {
                Some(v4) => ClientBucket::V4(v4.to_bits()),
                // The shift leaves the upper 64 bits, which fit by
                // construction: no truncation of what matters.
                None => ClientBucket::V6((a.to_bits() >> 64) as u64),
            },
        }
    }

    /// The bucket as one integer, for a hasher: IPv4 buckets and IPv6
    /// buckets are told apart by the top bit of the result's tag.
    pub fn to_bits(self) -> (bool, u64) {
        match self {
            ClientBucket::V4(a) => (false, u64::from(a)),
            ClientBucket::V6(n) => (true, n),
        }
    }
}

/// The IPv4 address embedded in a NAT64 address of the well-known prefix
/// `64:ff9b::/96` (RFC 6052 §2.1).
fn nat64(a: Ipv6Addr) -> Option<Ipv4Addr> {
    const PREFIX: u128 = 0x0064_ff9b_u128 << 96;
    let bits = a.to_bits();
    // The low 32 bits are the IPv4 address: the truncation is the point.
    (bits >> 32 == PREFIX >> 32).then(|| Ipv4Addr::from_bits(bits as u32))
}

/// `192.0.2.1`, or `2001:db8:1:2::/64`: what logs and the audit name.
impl fmt::Display for ClientBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ClientBucket::V4(a) => write!(f, "{}", Ipv4Addr::from_bits(a)),
            ClientBucket::V6(n) => write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(n) << 64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rule, said again independently of [`ClientBucket::of`]: the
    /// address an IPv4-mapped one stands for, then equal IPv4 addresses,
    /// or IPv6 addresses whose first four 16-bit groups are equal.
    fn same_by_rule(a: IpAddr, b: IpAddr) -> bool {
        let canon = |ip: IpAddr| match ip {
            IpAddr::V6(v6) => match v6.segments() {
                [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
                    IpAddr::V4(Ipv4Addr::from(((u32::from(hi)) << 16) | u32::from(lo)))
                }
                _ => ip,
            },
            v4 => v4,
        };
        match (canon(a), canon(b)) {
            (IpAddr::V4(x), IpAddr::V4(y)) => x == y,
            (IpAddr::V6(x), IpAddr::V6(y)) => x.segments()[..4] == y.segments()[..4],
            _ => false,
        }
    }

    fn v4() -> impl Strategy<Value = IpAddr> {
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from_bits(a)))
    }

    fn v6() -> impl Strategy<Value = IpAddr> {
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from_bits(a)))
    }

    fn mapped() -> impl Strategy<Value = IpAddr> {
        any::<u32>().prop_map(|a| IpAddr::V6(Ipv4Addr::from_bits(a).to_ipv6_mapped()))
    }

    fn nat64() -> impl Strategy<Value = IpAddr> {
        any::<u32>().prop_map(|a| {
            IpAddr::V6(Ipv6Addr::from_bits(
                (0x0064_ff9b_u128 << 96) | u128::from(a),
            ))
        })
    }

    /// Any address, with neighbours likely: random ones rarely share a
    /// /64, so half the time `b` is `a` with some of its low bits changed.
    fn pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
        let any_ip = || prop_oneof![v4(), v6(), mapped(), nat64()];
        prop_oneof![
            (any_ip(), any_ip()),
            (any_ip(), any::<u128>(), 0u32..128).prop_map(|(a, noise, bits)| {
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX >> (128 - bits)
                };
                let b = match a {
                    IpAddr::V4(x) => {
                        IpAddr::V4(Ipv4Addr::from_bits(x.to_bits() ^ ((noise & mask) as u32)))
                    }
                    IpAddr::V6(x) => IpAddr::V6(Ipv6Addr::from_bits(x.to_bits() ^ (noise & mask))),
                };
                (a, b)
            }),
        ]
    }

    proptest! {
        /// Two addresses share a bucket iff the rule says so: a flood
        /// counted against one bucket never reaches an address outside it.
        #[test]
        fn same_bucket_iff_the_rule_says_so((a, b) in pair()) {
            prop_assert_eq!(ClientBucket::of(a) == ClientBucket::of(b), same_by_rule(a, b));
        }

        /// A mapped address is its IPv4 address's bucket.
        #[test]
        fn mapped_is_the_v4_bucket(a in any::<u32>()) {
            let v4 = Ipv4Addr::from_bits(a);
            prop_assert_eq!(
                ClientBucket::of(IpAddr::V6(v4.to_ipv6_mapped())),
                ClientBucket::of(IpAddr::V4(v4))
            );
        }
    }

    #[test]
    fn display_names_the_address_or_the_64() {
        let b = |s: &str| ClientBucket::of(s.parse().unwrap()).to_string();
        assert_eq!(b("192.0.2.1"), "192.0.2.1");
        assert_eq!(b("::ffff:192.0.2.1"), "192.0.2.1");
        assert_eq!(b("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        // NAT64's well-known prefix: each IPv4 client its own bucket.
        assert_eq!(b("64:ff9b::c000:201"), "192.0.2.1");
        assert_ne!(
            ClientBucket::of("64:ff9b::c000:201".parse().unwrap()),
            ClientBucket::of("64:ff9b::c000:202".parse().unwrap())
        );
        // Outside the /96 (64:ff9b:1::/48, local use): an ordinary /64.
        assert_eq!(b("64:ff9b:1::c000:201"), "64:ff9b:1::/64");
        assert_eq!(
            ClientBucket::of("2001:db8:1:2::9".parse().unwrap()),
            ClientBucket::of("2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap())
        );
        assert_ne!(
            ClientBucket::of("2001:db8:1:2::9".parse().unwrap()),
            ClientBucket::of("2001:db8:1:3::9".parse().unwrap())
        );
    }
}
