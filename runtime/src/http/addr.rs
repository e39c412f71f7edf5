//! What kind of address a request would reach. A task's request may only go to a public
//! address unless the worker's `--allow-hosts` names the address (or a range holding it) as an
//! IP or CIDR: a grant by host name never reaches loopback, private, link-local or metadata
//! addresses, whatever the name resolves to (DNS is not trusted to say where a name points).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kind of a destination address, from the IANA special-purpose registries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    /// Globally routable: what a grant by host name can reach.
    Public,
    /// `0.0.0.0/8`, `::`: "this host", which connects to the worker itself.
    Unspecified,
    /// `127.0.0.0/8`, `::1`: the worker itself.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`), IPv6 unique local `fc00::/7`, deprecated
    /// site-local `fec0::/10`, and the local-use NAT64 prefix `64:ff9b:1::/48`.
    Private,
    /// Carrier-grade NAT's shared space, `100.64.0.0/10` (RFC 6598).
    SharedCgnat,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// Cloud instance metadata services (credentials live there): granted only by naming the
    /// exact address, never by a range.
    Metadata,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Documentation ranges (`192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`).
    Documentation,
    /// Anything else that is not globally routable: `240/4`, `192.0.0/24`, benchmarking
    /// `198.18/15`, IPv4-compatible IPv6, discard `100::/64`, Teredo `2001::/32`.
    Reserved,
}

impl AddrClass {
    pub fn is_public(self) -> bool {
        self == Self::Public
    }

    /// How the class reads in a refusal.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Public => "a public address",
            Self::Unspecified => "an unspecified address",
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::SharedCgnat => "a carrier-grade NAT address",
            Self::LinkLocal => "a link-local address",
            Self::Metadata => "a cloud metadata address",
            Self::Multicast => "a multicast address",
            Self::Broadcast => "the broadcast address",
            Self::Documentation => "a documentation address",
            Self::Reserved => "a reserved address",
        }
    }
}

/// Known instance metadata endpoints: AWS, GCP, Azure, OpenStack, DigitalOcean and Oracle use
/// 169.254.169.254; AWS ECS task metadata 169.254.170.2 (and .23 for its v4 endpoint); Alibaba
/// Cloud 100.100.100.200; AWS's IPv6 endpoint fd00:ec2::254.
const METADATA_V4: [Ipv4Addr; 4] =
    [Ipv4Addr::new(169, 254, 169, 254), Ipv4Addr::new(169, 254, 170, 2), Ipv4Addr::new(169, 254, 170, 23), Ipv4Addr::new(100, 100, 100, 200)];
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

/// An address as it is connected to: an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is the
/// IPv4 address it maps, so that it is classified and matched as such.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// The class of an address (IPv4-mapped IPv6 addresses as their IPv4 address).
pub fn classify(ip: IpAddr) -> AddrClass {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

pub fn is_metadata(ip: IpAddr) -> bool {
    classify(ip) == AddrClass::Metadata
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    (u128::from(ip) & mask) == (u128::from(net) & mask)
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    if METADATA_V4.contains(&ip) {
        return AddrClass::Metadata;
    }
    let table: [([u8; 4], u32, AddrClass); 17] = [
        ([0, 0, 0, 0], 8, AddrClass::Unspecified),
        ([127, 0, 0, 0], 8, AddrClass::Loopback),
        ([10, 0, 0, 0], 8, AddrClass::Private),
        ([172, 16, 0, 0], 12, AddrClass::Private),
        ([192, 168, 0, 0], 16, AddrClass::Private),
        ([100, 64, 0, 0], 10, AddrClass::SharedCgnat),
        ([169, 254, 0, 0], 16, AddrClass::LinkLocal),
        ([224, 0, 0, 0], 4, AddrClass::Multicast),
        ([255, 255, 255, 255], 32, AddrClass::Broadcast),
        ([240, 0, 0, 0], 4, AddrClass::Reserved),
        ([192, 0, 0, 0], 24, AddrClass::Reserved),
        ([192, 0, 2, 0], 24, AddrClass::Documentation),
        ([198, 51, 100, 0], 24, AddrClass::Documentation),
        ([203, 0, 113, 0], 24, AddrClass::Documentation),
        ([198, 18, 0, 0], 15, AddrClass::Reserved),
        // 6to4 relay anycast (deprecated) and AS112: not destinations of a task.
        ([192, 88, 99, 0], 24, AddrClass::Reserved),
        ([192, 31, 196, 0], 24, AddrClass::Reserved),
    ];
    // The broadcast address is also in 240/4; the more specific entry comes first.
    table.iter().filter(|(net, prefix, _)| in_v4(ip, *net, *prefix)).max_by_key(|(_, prefix, _)| *prefix).map_or(AddrClass::Public, |(_, _, c)| *c)
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    if METADATA_V6.contains(&ip) {
        return AddrClass::Metadata;
    }
    let seg = ip.segments();
    if ip.is_unspecified() {
        return AddrClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddrClass::Loopback;
    }
    // Prefixes that embed an IPv4 address route to it: classify the embedded address.
    // NAT64 well-known prefix 64:ff9b::/96 (RFC 6052), 6to4 2002::/16 (RFC 3056).
    let octets = ip.octets();
    if in_v6(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return classify_v4(Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]));
    }
    if seg[0] == 0x2002 {
        return classify_v4(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]));
    }
    let table: [(Ipv6Addr, u32, AddrClass); 9] = [
        // IPv4-compatible addresses (deprecated), ::/96.
        (Ipv6Addr::UNSPECIFIED, 96, AddrClass::Reserved),
        (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48, AddrClass::Private),
        (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64, AddrClass::Reserved),
        (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32, AddrClass::Reserved),
        (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, AddrClass::Documentation),
        (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7, AddrClass::Private),
        (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, AddrClass::Private),
        (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, AddrClass::LinkLocal),
        (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, AddrClass::Multicast),
    ];
    table.iter().filter(|(net, prefix, _)| in_v6(ip, *net, *prefix)).max_by_key(|(_, prefix, _)| *prefix).map_or(AddrClass::Public, |(_, _, c)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddrClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ipv4_classes() {
        for (a, c) in [
            ("8.8.8.8", AddrClass::Public),
            ("1.1.1.1", AddrClass::Public),
            ("172.32.0.1", AddrClass::Public),
            ("100.128.0.1", AddrClass::Public),
            ("0.0.0.0", AddrClass::Unspecified),
            ("0.1.2.3", AddrClass::Unspecified),
            ("127.0.0.1", AddrClass::Loopback),
            ("127.255.0.9", AddrClass::Loopback),
            ("10.1.2.3", AddrClass::Private),
            ("172.16.0.1", AddrClass::Private),
            ("172.31.255.255", AddrClass::Private),
            ("192.168.1.1", AddrClass::Private),
            ("100.64.0.1", AddrClass::SharedCgnat),
            ("100.127.255.255", AddrClass::SharedCgnat),
            ("169.254.1.1", AddrClass::LinkLocal),
            ("169.254.169.254", AddrClass::Metadata),
            ("169.254.170.2", AddrClass::Metadata),
            ("100.100.100.200", AddrClass::Metadata),
            ("224.0.0.1", AddrClass::Multicast),
            ("239.255.255.250", AddrClass::Multicast),
            ("255.255.255.255", AddrClass::Broadcast),
            ("240.0.0.1", AddrClass::Reserved),
            ("192.0.0.8", AddrClass::Reserved),
            ("198.18.0.1", AddrClass::Reserved),
            ("192.0.2.1", AddrClass::Documentation),
            ("203.0.113.7", AddrClass::Documentation),
        ] {
            assert_eq!(class(a), c, "{a}");
        }
    }

    #[test]
    fn ipv6_classes() {
        for (a, c) in [
            ("2606:4700:4700::1111", AddrClass::Public),
            ("2a00:1450:4001::200e", AddrClass::Public),
            ("::", AddrClass::Unspecified),
            ("::1", AddrClass::Loopback),
            ("fd00::1", AddrClass::Private),
            ("fc12:3456::1", AddrClass::Private),
            ("fec0::1", AddrClass::Private),
            ("fe80::1", AddrClass::LinkLocal),
            ("ff02::1", AddrClass::Multicast),
            ("fd00:ec2::254", AddrClass::Metadata),
            ("2001:db8::1", AddrClass::Documentation),
            ("2001::1", AddrClass::Reserved),
            ("100::1", AddrClass::Reserved),
            ("::10.0.0.1", AddrClass::Reserved),
            ("64:ff9b:1::1", AddrClass::Private),
        ] {
            assert_eq!(class(a), c, "{a}");
        }
    }

    /// An IPv4 address written as IPv6 (mapped, NAT64, 6to4) is the IPv4 address it reaches.
    #[test]
    fn ipv4_inside_ipv6_is_classified_as_ipv4() {
        for (a, c) in [
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("::ffff:10.0.0.1", AddrClass::Private),
            ("::ffff:169.254.169.254", AddrClass::Metadata),
            ("::ffff:8.8.8.8", AddrClass::Public),
            ("64:ff9b::10.0.0.1", AddrClass::Private),
            ("64:ff9b::169.254.169.254", AddrClass::Metadata),
            ("64:ff9b::8.8.8.8", AddrClass::Public),
            ("2002:7f00:1::1", AddrClass::Loopback),
            ("2002:0808:0808::1", AddrClass::Public),
        ] {
            assert_eq!(class(a), c, "{a}");
        }
        assert_eq!(canonical("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(canonical("::1".parse().unwrap()), "::1".parse::<IpAddr>().unwrap());
    }
}
