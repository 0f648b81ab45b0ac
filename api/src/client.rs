//! Who is on the other end of a request: the client address that throttles, connection caps
//! and logs use.
//!
//! It is the TCP peer, unless the peer is one of `--trusted-proxies` (a load balancer or an
//! Ingress): then it is the rightmost `X-Forwarded-For` hop that is not itself a trusted proxy.
//! Hops to the left of that one were written by the client and prove nothing. With no trusted
//! proxies (the default) the header is ignored: anyone can send it.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// The address a request is attributed to. Stored in an HTTP request's extensions by the
/// router and in a GraphQL request's data by the entry points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ClientAddr {
    /// What a request without a known peer (an in-process caller) counts as.
    pub const UNKNOWN: ClientAddr = ClientAddr(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));

    /// The address the router stored in the request's extensions ([`ClientAddr::UNKNOWN`]
    /// for a request that did not come through it).
    pub fn stored_in<B>(request: &http::Request<B>) -> Self {
        request
            .extensions()
            .get::<ClientAddr>()
            .copied()
            .unwrap_or(ClientAddr::UNKNOWN)
    }

    /// A TCP peer as a client address.
    pub fn peer(peer: SocketAddr) -> Self {
        ClientAddr(canonical(peer.ip()))
    }

    /// The client address of an HTTP request whose peer was `peer` (see the module doc).
    pub fn of_request<B>(
        request: &http::Request<B>,
        peer: SocketAddr,
        trusted: &TrustedProxies,
    ) -> Self {
        let ClientAddr(peer) = ClientAddr::peer(peer);
        if !trusted.contains(peer) {
            return ClientAddr(peer);
        }
        let hops = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(ip) if trusted.contains(ip) => {}
                Some(ip) => return ClientAddr(ip),
                // A hop we cannot read: attribute the request to the last proxy that wrote
                // something readable, not to anything further left.
                None => break,
            }
        }
        ClientAddr(peer)
    }
}

/// `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(hop) {
        return Some(canonical(ip));
    }
    SocketAddr::from_str(hop).ok().map(|s| canonical(s.ip()))
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Networks whose `X-Forwarded-For` is believed: `--trusted-proxies`, comma-separated
/// addresses or CIDR blocks (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `--trusted-proxies` entries: addresses or CIDR blocks.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let mut networks = Vec::new();
        for entry in list.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (ip, bits) = match entry.split_once('/') {
                Some((ip, bits)) => (ip, Some(bits)),
                None => (entry, None),
            };
            let ip = canonical(IpAddr::from_str(ip).map_err(|_| {
                format!("--trusted-proxies: {entry:?} is not an address or CIDR block")
            })?);
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(bits) => bits
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| {
                        format!("--trusted-proxies: {entry:?} has a bad prefix length")
                    })?,
            };
            networks.push((ip, bits));
        }
        Ok(Self(networks))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|(network, bits)| match (network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_matches(&n.octets(), &a.octets(), *bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_matches(&n.octets(), &a.octets(), *bits),
            _ => false,
        })
    }
}

fn prefix_matches(network: &[u8], address: &[u8], bits: u8) -> bool {
    let (whole, rest) = ((bits / 8) as usize, bits % 8);
    if network[..whole] != address[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        network[whole] & mask == address[whole] & mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(forwarded: &[&str]) -> http::Request<()> {
        let mut builder = http::Request::builder();
        for value in forwarded {
            builder = builder.header("x-forwarded-for", *value);
        }
        builder.body(()).unwrap()
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let none = TrustedProxies::default();
        let r = request(&["6.6.6.6"]);
        assert_eq!(
            ClientAddr::of_request(&r, peer("1.2.3.4"), &none).to_string(),
            "1.2.3.4"
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8".into(), "192.168.1.7".into()]).unwrap();
        // The client claims 6.6.6.6; the real client 5.5.5.5 went through two of our proxies.
        let r = request(&["6.6.6.6, 5.5.5.5", "10.1.2.3"]);
        assert_eq!(
            ClientAddr::of_request(&r, peer("192.168.1.7"), &trusted).to_string(),
            "5.5.5.5"
        );
        // An untrusted peer's header means nothing.
        assert_eq!(
            ClientAddr::of_request(&r, peer("8.8.8.8"), &trusted).to_string(),
            "8.8.8.8"
        );
        // No header: the proxy itself.
        let bare = request(&[]);
        assert_eq!(
            ClientAddr::of_request(&bare, peer("10.0.0.1"), &trusted).to_string(),
            "10.0.0.1"
        );
        // Garbage stops the walk at the proxy.
        let garbage = request(&["5.5.5.5, not-an-ip"]);
        assert_eq!(
            ClientAddr::of_request(&garbage, peer("10.0.0.1"), &trusted).to_string(),
            "10.0.0.1"
        );
        let ported = request(&["[2001:db8::1]:443"]);
        assert_eq!(
            ClientAddr::of_request(&ported, peer("10.0.0.1"), &trusted).to_string(),
            "2001:db8::1"
        );
    }

    #[test]
    fn networks_parse_and_match_by_prefix() {
        let t =
            TrustedProxies::parse(&["10.0.0.0/8".into(), "fd00::/8".into(), "127.0.0.1".into()])
                .unwrap();
        assert!(t.contains("10.255.0.1".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert!(t.contains("fd12::1".parse().unwrap()));
        assert!(t.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!t.contains("127.0.0.2".parse().unwrap()));
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["example.com".into()]).is_err());
    }
}

/// Concurrent connections per client address, up to a limit: a connection holds a
/// [`ClientSlot`] for as long as it is open.
#[derive(Debug)]
pub struct ClientSlots {
    counts: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
    limit: usize,
}

/// One open connection of a client; dropping it gives the place back.
#[derive(Debug)]
pub struct ClientSlot {
    slots: std::sync::Arc<ClientSlots>,
    ip: IpAddr,
}

impl ClientSlots {
    /// At most `limit` slots per client address.
    pub fn new(limit: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            counts: std::sync::Mutex::default(),
            limit,
        })
    }

    /// The number of slots per client address.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A place for one more connection of `client`, or `None` when it holds `limit` already.
    pub fn acquire(self: &std::sync::Arc<Self>, client: ClientAddr) -> Option<ClientSlot> {
        let mut counts = self.lock();
        let count = counts.entry(client.0).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            slots: self.clone(),
            ip: client.0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<IpAddr, usize>> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.slots.lock();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod slot_tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_its_limit_and_gets_places_back() {
        let slots = ClientSlots::new(2);
        let a = ClientAddr("1.1.1.1".parse().unwrap());
        let b = ClientAddr("2.2.2.2".parse().unwrap());
        let first = slots.acquire(a).unwrap();
        let _second = slots.acquire(a).unwrap();
        assert!(slots.acquire(a).is_none());
        assert!(slots.acquire(b).is_some(), "another client is not affected");
        drop(first);
        assert!(slots.acquire(a).is_some());
    }
}
