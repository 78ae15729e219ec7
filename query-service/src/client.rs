//! Who the client is, decided once per request for every limit that keys on
//! it (request rates, login lockouts, WebSocket connections).
//!
//! Without trusted proxies the client is the TCP peer. Behind them
//! (`TRUSTED_PROXIES`, as CIDRs), it is the right-most `X-Forwarded-For`
//! address that is not a trusted proxy: every proxy appends the address it
//! saw, so entries left of the first untrusted one were written by whoever
//! connected to it, i.e. by the client, and prove nothing.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

/// The client's address, as a request extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

impl ClientAddress {
    /// What limits are keyed by: the address, or for IPv6 its /64 (one
    /// subscriber's network; they hold billions of addresses each).
    pub fn limit_key(self) -> String {
        match self.0 {
            IpAddr::V4(address) => address.to_string(),
            IpAddr::V6(address) => match IpNet::new(IpAddr::V6(address), 64) {
                Ok(network) => network.trunc().to_string(),
                Err(_) => address.to_string(),
            },
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client behind `peer`, given the request's headers.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddress {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return ClientAddress(peer);
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            // A malformed entry ends the chain we can follow: the last
            // address we trusted to report it is the client we know.
            let Ok(address) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = canonical(address);
            if !self.trusts(client) {
                break;
            }
        }
        ClientAddress(client)
    }
}

/// IPv4 peers of a dual-stack socket arrive as `::ffff:a.b.c.d`.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

/// Puts the [`ClientAddress`] into the request for what runs after.
pub async fn identify(
    State(proxies): State<TrustedProxies>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = proxies.client(peer.ip(), request.headers());
    request.extensions_mut().insert(client);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(forwarded: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(forwarded).unwrap());
        headers
    }

    fn proxies(cidrs: &[&str]) -> TrustedProxies {
        TrustedProxies::new(cidrs.iter().map(|cidr| cidr.parse().unwrap()).collect())
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() {
        let client =
            TrustedProxies::default().client("203.0.113.9".parse().unwrap(), &headers("1.2.3.4"));
        assert_eq!(client.0.to_string(), "203.0.113.9");
    }

    #[test]
    fn behind_proxies_the_right_most_untrusted_hop_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8"]);
        // The client wrote "6.6.6.6" itself; the proxy appended what it saw.
        let client = trusted.client(
            "10.0.0.2".parse().unwrap(),
            &headers("6.6.6.6, 198.51.100.7, 10.0.0.5"),
        );
        assert_eq!(client.0.to_string(), "198.51.100.7");
    }

    #[test]
    fn an_untrusted_peer_cannot_forward_for_anyone() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let client = trusted.client("198.51.100.7".parse().unwrap(), &headers("1.1.1.1"));
        assert_eq!(client.0.to_string(), "198.51.100.7");
    }

    #[test]
    fn a_malformed_hop_ends_the_chain_at_the_last_trusted_reporter() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let client = trusted.client("10.0.0.2".parse().unwrap(), &headers("garbage, 10.0.0.9"));
        assert_eq!(client.0.to_string(), "10.0.0.9");
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        let one = ClientAddress("2001:db8:1:2:aaaa::1".parse().unwrap());
        let other = ClientAddress("2001:db8:1:2:bbbb::2".parse().unwrap());
        assert_eq!(one.limit_key(), other.limit_key());
        assert_eq!(one.limit_key(), "2001:db8:1:2::/64");
    }
}
