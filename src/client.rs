//! The client's address, for per-key allowlists: the connection's, or, only behind proxies the
//! application names, the nearest address in the forwarding header that is not one of them.
//!
//! A forwarding header is only as honest as whoever wrote its last entries. Behind no trusted
//! proxy, the header is ignored: any client can write it. Behind trusted proxies, the header the
//! proxies append to ([`Forwarded`](TrustedProxies::forwarded) or
//! [`X-Forwarded-For`](TrustedProxies::x_forwarded_for): name the one your proxies write, since a
//! client can send the other and a proxy passes it on untouched) is read from right to left,
//! past every trusted proxy; the first address that is not one is the client. An entry that is
//! not an address (`unknown`, an obfuscated `_node`) stops the walk with no address: a key
//! with an allowlist is then refused, never let through on a guess.
//!
//! ```
//! use std::net::IpAddr;
//! use http::HeaderMap;
//! use tower_api_key::TrustedProxies;
//!
//! let proxies = TrustedProxies::x_forwarded_for(["10.0.0.0/8".parse().unwrap()]).unwrap();
//! let mut headers = HeaderMap::new();
//! headers.insert("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.1.2.3".parse().unwrap());
//!
//! // From the proxy at 10.0.0.2: the client is the nearest untrusted entry.
//! let proxy: IpAddr = "10.0.0.2".parse().unwrap();
//! assert_eq!(proxies.client_address(proxy, &headers), Some("203.0.113.9".parse().unwrap()));
//!
//! // From anyone else, the header is theirs to forge: the connection's address counts.
//! let stranger: IpAddr = "192.0.2.77".parse().unwrap();
//! assert_eq!(proxies.client_address(stranger, &headers), Some(stranger));
//! ```

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{Extensions, HeaderMap, HeaderName};
use ipnet::IpNet;

use crate::limit::{InvalidLimit, MAX_NETWORKS};

/// The address of the peer a request came from, for stacks that do not use axum: insert it into
/// the request's extensions in a layer outside [`ApiKeyLayer`](crate::ApiKeyLayer).
///
/// With the `axum` feature the layer also reads axum's `ConnectInfo<SocketAddr>`, which
/// `into_make_service_with_connect_info::<SocketAddr>()` puts on every request. A key with an
/// allowlist is refused when neither is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddress(pub IpAddr);

/// The connection's peer, from [`PeerAddress`] or axum's `ConnectInfo<SocketAddr>`.
pub(crate) fn peer_address(extensions: &Extensions) -> Option<IpAddr> {
    if let Some(PeerAddress(address)) = extensions.get::<PeerAddress>() {
        return Some(*address);
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    None
}

/// Which forwarding header trusted proxies write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Header {
    /// RFC 7239 `Forwarded: for=…`.
    Forwarded,
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    XForwardedFor,
}

/// The proxies whose forwarding header the layer believes: none unless the application names
/// them. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct TrustedProxies {
    networks: Arc<[IpNet]>,
    header: Header,
}

impl Default for TrustedProxies {
    fn default() -> Self {
        TrustedProxies::none()
    }
}

impl TrustedProxies {
    /// No trusted proxy: the client is the connection's peer, whatever the headers say.
    pub fn none() -> Self {
        TrustedProxies {
            networks: Arc::from([]),
            header: Header::XForwardedFor,
        }
    }

    /// Proxies in `networks` that append the peer they saw to `X-Forwarded-For`.
    ///
    /// # Errors
    ///
    /// [`InvalidLimit::TooManyNetworks`] for more than [`MAX_NETWORKS`] networks.
    pub fn x_forwarded_for(
        networks: impl IntoIterator<Item = IpNet>,
    ) -> Result<Self, InvalidLimit> {
        TrustedProxies::build(networks, Header::XForwardedFor)
    }

    /// Proxies in `networks` that append `for=<peer>` to the RFC 7239 `Forwarded` header.
    ///
    /// # Errors
    ///
    /// [`InvalidLimit::TooManyNetworks`] for more than [`MAX_NETWORKS`] networks.
    pub fn forwarded(networks: impl IntoIterator<Item = IpNet>) -> Result<Self, InvalidLimit> {
        TrustedProxies::build(networks, Header::Forwarded)
    }

    fn build(
        networks: impl IntoIterator<Item = IpNet>,
        header: Header,
    ) -> Result<Self, InvalidLimit> {
        let networks: Vec<IpNet> = networks.into_iter().map(|n| n.trunc()).collect();
        if networks.len() > MAX_NETWORKS {
            return Err(InvalidLimit::TooManyNetworks);
        }
        Ok(TrustedProxies {
            networks: networks.into(),
            header,
        })
    }

    /// Whether `address` is a trusted proxy.
    pub fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.networks
            .iter()
            .any(|network| network.contains(&address))
    }

    /// The client's address for a request from `peer` with `headers`; `None` when a trusted
    /// proxy forwarded something that is not an address.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return Some(client);
        }
        let name = match self.header {
            Header::Forwarded => http::header::FORWARDED,
            Header::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
        };
        // Every field of the header, in order, as one list; read from its end.
        let fields: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
        for field in fields.iter().rev() {
            for entry in field.rsplit(|&b| b == b',') {
                let address = match self.header {
                    Header::Forwarded => forwarded_for(entry)?,
                    Header::XForwardedFor => parse_address(trim(entry))?,
                };
                client = address.to_canonical();
                if !self.trusts(client) {
                    return Some(client);
                }
            }
        }
        // Every entry was a trusted proxy: the furthest one is the client.
        Some(client)
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |end| end + 1);
    &bytes[start..end.max(start)]
}

/// The `for=` of one element of a `Forwarded` header (`for=192.0.2.60;proto=http`), as an
/// address; `None` if it has none or it is not an address.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    for pair in element.split(|&b| b == b';') {
        let pair = trim(pair);
        let Some(at) = pair.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (name, value) = (&pair[..at], &pair[at + 1..]);
        if !name.eq_ignore_ascii_case(b"for") {
            continue;
        }
        let value = trim(value);
        let value = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        return parse_address(value);
    }
    None
}

/// `203.0.113.9`, `203.0.113.9:4711`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:4711`.
fn parse_address(bytes: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(bytes).ok()?;
    if let Ok(address) = text.parse::<IpAddr>() {
        return Some(address);
    }
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(name: &'static str, values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn without_trusted_proxies_headers_change_nothing() {
        let proxies = TrustedProxies::none();
        let forged = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(
            proxies.client_address(ip("192.0.2.1"), &forged),
            Some(ip("192.0.2.1"))
        );
        let forged = headers("forwarded", &["for=203.0.113.9"]);
        assert_eq!(
            proxies.client_address(ip("192.0.2.1"), &forged),
            Some(ip("192.0.2.1"))
        );
        assert_eq!(
            proxies.client_address(ip("::ffff:192.0.2.1"), &HeaderMap::new()),
            Some(ip("192.0.2.1"))
        );
    }

    #[test]
    fn x_forwarded_for_is_read_right_to_left_past_trusted_proxies() {
        let proxies = TrustedProxies::x_forwarded_for([
            "10.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ])
        .unwrap();
        let proxy = ip("10.0.0.2");
        let cases: &[(&[&'static str], Option<&str>)] = &[
            // A client's forged entry sits left of the real one: never reached.
            (&["6.6.6.6, 203.0.113.9"], Some("203.0.113.9")),
            (&["6.6.6.6, 203.0.113.9, 10.9.9.9"], Some("203.0.113.9")),
            (&["6.6.6.6", "203.0.113.9, fd00::1"], Some("203.0.113.9")),
            (&[" 2001:db8::5 "], Some("2001:db8::5")),
            (&["[2001:db8::5]:4711"], Some("2001:db8::5")),
            (&["203.0.113.9:4711"], Some("203.0.113.9")),
            (&["::ffff:203.0.113.9"], Some("203.0.113.9")),
            (&["10.1.1.1, 10.2.2.2"], Some("10.1.1.1")),
            (&["203.0.113.9, unknown"], None),
            (&["203.0.113.9, "], None),
            (&[], Some("10.0.0.2")),
        ];
        for (values, expected) in cases {
            let map = headers("x-forwarded-for", values);
            assert_eq!(
                proxies.client_address(proxy, &map),
                expected.map(ip),
                "{values:?}"
            );
        }
        // The other header is not the proxies': a client may have sent it.
        let map = headers("forwarded", &["for=203.0.113.9"]);
        assert_eq!(proxies.client_address(proxy, &map), Some(proxy));
    }

    #[test]
    fn forwarded_is_read_right_to_left_past_trusted_proxies() {
        let proxies = TrustedProxies::forwarded(["10.0.0.0/8".parse().unwrap()]).unwrap();
        let proxy = ip("10.0.0.2");
        let cases: &[(&[&'static str], Option<&str>)] = &[
            (&["for=203.0.113.9"], Some("203.0.113.9")),
            (
                &["for=6.6.6.6, for=203.0.113.9;proto=https, for=10.3.3.3;by=10.0.0.2"],
                Some("203.0.113.9"),
            ),
            (
                &[r#"For="[2001:db8:cafe::17]:4711""#],
                Some("2001:db8:cafe::17"),
            ),
            (
                &[r#"for="203.0.113.9:80";host=example.com"#],
                Some("203.0.113.9"),
            ),
            (&["proto=https;FOR=203.0.113.9"], Some("203.0.113.9")),
            (&["for=unknown"], None),
            (&["for=_hidden"], None),
            (&["proto=https"], None),
        ];
        for (values, expected) in cases {
            let map = headers("forwarded", values);
            assert_eq!(
                proxies.client_address(proxy, &map),
                expected.map(ip),
                "{values:?}"
            );
        }
        let map = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(proxies.client_address(proxy, &map), Some(proxy));
    }

    #[test]
    fn any_header_bytes_are_safe() {
        let proxies = TrustedProxies::forwarded(["0.0.0.0/0".parse().unwrap()]).unwrap();
        let mut map = HeaderMap::new();
        map.insert(
            "forwarded",
            http::HeaderValue::from_bytes(b"for=\"\xff\xfe\";;=,,for=\"[::1").unwrap(),
        );
        assert_eq!(proxies.client_address(ip("10.0.0.1"), &map), None);
    }
}
