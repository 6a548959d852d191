//! Limits per key: how fast a key may call ([`RateLimit`]) and from where
//! ([`AllowedNetworks`]).
//!
//! A key's limits travel with its [`KeyRecord`](crate::KeyRecord) ([`KeyLimits`]): a store keeps
//! them with the key, and the layer checks them after the key is known and before the inner
//! service runs. A request from a network not on the key's list is refused with `403`, with a
//! body that does not reveal the list; one over the key's rate with `429 Too Many Requests` and
//! `Retry-After`.

pub mod gcra;
#[cfg(feature = "redis")]
pub mod redis;
pub(crate) mod rules;

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use ipnet::IpNet;

pub use self::gcra::RateDecision;
// The layer's side of the engine (unused until the layer is wired to it).
#[allow(unused_imports)]
pub(crate) use self::gcra::{check_both, now_nanos, GcraCell, LimitKey, LocalLimiter};
#[cfg(feature = "redis")]
pub use self::redis::{LimiterError, RedisDownPolicy, RedisLimiter, DEFAULT_RATE_PREFIX};

/// Longest period a rate may be counted over: a day.
pub const MAX_RATE_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// Most networks one key's allowlist may hold.
pub const MAX_NETWORKS: usize = 100;

/// How fast a key may call: `requests` per `period` on average, with at most `burst` requests
/// at once. Checked with the generic cell rate algorithm (GCRA): a request is let through when
/// it comes no earlier than its turn in an even spacing of `period / requests`, less the
/// tolerance that `burst` allows.
///
/// Written and parsed as `100/s`, `100/s burst 20`, `5000/h`, `10/30s burst 2`; units `ms`, `s`,
/// `m`, `h`, `d`. Without a burst, the burst is the whole period's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    requests: NonZeroU32,
    period: Duration,
    burst: NonZeroU32,
}

impl RateLimit {
    /// A rate no request reaches: a million a second, with a burst of 4,294,967,295.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) const UNREACHABLE: RateLimit = RateLimit {
        requests: match NonZeroU32::new(1_000_000) {
            Some(requests) => requests,
            None => NonZeroU32::MAX,
        },
        period: Duration::from_secs(1),
        burst: NonZeroU32::MAX,
    };

    /// `requests` per `period`, with a burst of the whole period's requests.
    ///
    /// # Errors
    ///
    /// If `period` is under a millisecond or over [`MAX_RATE_PERIOD`], or if the spacing
    /// between requests (`period / requests`) would be under a microsecond.
    pub fn new(requests: NonZeroU32, period: Duration) -> Result<Self, InvalidLimit> {
        if period < Duration::from_millis(1) || period > MAX_RATE_PERIOD {
            return Err(InvalidLimit::Period);
        }
        if period / requests.get() < Duration::from_micros(1) {
            return Err(InvalidLimit::TooFast);
        }
        Ok(RateLimit {
            requests,
            period,
            burst: requests,
        })
    }

    /// `requests` per second, with a burst of as many.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new): over a million a second.
    pub fn per_second(requests: NonZeroU32) -> Result<Self, InvalidLimit> {
        RateLimit::new(requests, Duration::from_secs(1))
    }

    /// The same rate, with at most `burst` requests at once.
    pub fn with_burst(mut self, burst: NonZeroU32) -> Self {
        self.burst = burst;
        self
    }

    /// Requests per period.
    pub fn requests(&self) -> NonZeroU32 {
        self.requests
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Requests at most at once.
    pub fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// The even spacing between requests at the sustained rate: `period / requests`.
    pub fn interval(&self) -> Duration {
        self.period / self.requests.get()
    }

    /// How far ahead of its turn a request may come: `interval × (burst − 1)`.
    pub fn tolerance(&self) -> Duration {
        self.interval() * (self.burst.get() - 1)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/", self.requests)?;
        write_period(f, self.period)?;
        if self.burst != self.requests {
            write!(f, " burst {}", self.burst)?;
        }
        Ok(())
    }
}

/// `1s` as `s`, `30s` as `30s`, `1500ms` as `1500ms`.
fn write_period(f: &mut fmt::Formatter<'_>, period: Duration) -> fmt::Result {
    let millis = period.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if millis.is_multiple_of(size) {
            let count = millis / size;
            return if count == 1 {
                f.write_str(unit)
            } else {
                write!(f, "{count}{unit}")
            };
        }
    }
    if millis == 1 {
        f.write_str("ms")
    } else {
        write!(f, "{millis}ms")
    }
}

impl FromStr for RateLimit {
    type Err = InvalidLimit;

    /// Parses `100/s`, `100/s burst 20`, `10/30s`, `5000/h`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (rate, burst) = match text.split_once(" burst ") {
            Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
            None => (text.trim(), None),
        };
        let (requests, period) = rate.split_once('/').ok_or(InvalidLimit::Syntax)?;
        let requests = parse_count(requests)?;
        let period = parse_period(period)?;
        let mut limit = RateLimit::new(requests, period)?;
        if let Some(burst) = burst {
            limit = limit.with_burst(parse_count(burst)?);
        }
        Ok(limit)
    }
}

fn parse_count(text: &str) -> Result<NonZeroU32, InvalidLimit> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidLimit::Syntax);
    }
    text.parse::<NonZeroU32>().map_err(|_| InvalidLimit::Count)
}

fn parse_period(text: &str) -> Result<Duration, InvalidLimit> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or(InvalidLimit::Syntax)?;
    let (count, unit) = text.split_at(split);
    let count: u64 = if count.is_empty() {
        1
    } else {
        count.parse().map_err(|_| InvalidLimit::Period)?
    };
    let unit_millis: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(InvalidLimit::Syntax),
    };
    let millis = count.checked_mul(unit_millis).ok_or(InvalidLimit::Period)?;
    Ok(Duration::from_millis(millis))
}

/// Why a limit was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidLimit {
    /// Not written as `100/s`, `100/s burst 20`, or a network as `203.0.113.0/24`.
    Syntax,
    /// A count of requests of zero, or over 4,294,967,295.
    Count,
    /// A period under a millisecond or over a day.
    Period,
    /// More than a million requests a second.
    TooFast,
    /// More than [`MAX_NETWORKS`] networks.
    TooManyNetworks,
}

impl fmt::Display for InvalidLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidLimit::Syntax => {
                "expected a rate such as `100/s`, `100/s burst 20` or `5000/h`, or a network such \
                 as `203.0.113.0/24` or `2001:db8::/32`"
            }
            InvalidLimit::Count => "a count of requests is from 1 to 4294967295",
            InvalidLimit::Period => "a rate's period is from 1ms to 1d",
            InvalidLimit::TooFast => "a rate is at most a million requests a second",
            InvalidLimit::TooManyNetworks => "a key's allowlist holds at most 100 networks",
        })
    }
}

impl std::error::Error for InvalidLimit {}

/// The networks a key may be used from: CIDR ranges, IPv4 and IPv6. An IPv4 client seen as an
/// IPv4-mapped IPv6 address (`::ffff:203.0.113.7`) matches the IPv4 ranges.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AllowedNetworks(Arc<[IpNet]>);

impl AllowedNetworks {
    /// The networks given, each with its host bits cleared (`203.0.113.7/24` is
    /// `203.0.113.0/24`), sorted, without repeats.
    ///
    /// # Errors
    ///
    /// [`InvalidLimit::TooManyNetworks`] for more than [`MAX_NETWORKS`], and
    /// [`InvalidLimit::Syntax`] for none: a key that may be used from nowhere is a revoked key.
    pub fn new(networks: impl IntoIterator<Item = IpNet>) -> Result<Self, InvalidLimit> {
        let mut networks: Vec<IpNet> = networks.into_iter().map(|n| n.trunc()).collect();
        networks.sort();
        networks.dedup();
        if networks.is_empty() {
            return Err(InvalidLimit::Syntax);
        }
        if networks.len() > MAX_NETWORKS {
            return Err(InvalidLimit::TooManyNetworks);
        }
        Ok(AllowedNetworks(networks.into()))
    }

    /// Whether `address` is in one of the networks.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The networks, sorted.
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }
}

impl fmt::Debug for AllowedNetworks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl fmt::Display for AllowedNetworks {
    /// The networks separated by spaces: `198.51.100.0/24 2001:db8::/32`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (at, network) in self.0.iter().enumerate() {
            if at > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{network}")?;
        }
        Ok(())
    }
}

impl FromStr for AllowedNetworks {
    type Err = InvalidLimit;

    /// Parses networks separated by spaces or commas; a bare address is a network of one.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let networks = text
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|part| !part.is_empty())
            .map(parse_network)
            .collect::<Result<Vec<_>, _>>()?;
        AllowedNetworks::new(networks)
    }
}

/// `203.0.113.0/24`, `2001:db8::/32`, or a bare address.
pub fn parse_network(text: &str) -> Result<IpNet, InvalidLimit> {
    if let Ok(network) = text.parse::<IpNet>() {
        return Ok(network);
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| InvalidLimit::Syntax)
}

/// A key's limits: a rate, and networks; `None` for no limit of that kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct KeyLimits {
    /// How fast the key may call, if limited (the layer's default applies otherwise).
    pub rate: Option<RateLimit>,
    /// Where the key may be used from, if limited.
    pub networks: Option<AllowedNetworks>,
}

impl KeyLimits {
    /// No limits.
    pub fn none() -> Self {
        KeyLimits::default()
    }

    /// With a rate limit.
    pub fn with_rate(mut self, rate: impl Into<Option<RateLimit>>) -> Self {
        self.rate = rate.into();
        self
    }

    /// With an allowlist.
    pub fn with_networks(mut self, networks: impl Into<Option<AllowedNetworks>>) -> Self {
        self.networks = networks.into();
        self
    }

    /// Whether neither limit is set.
    pub fn is_none(&self) -> bool {
        self.rate.is_none() && self.networks.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn rates_parse_and_print() {
        let rate: RateLimit = "100/s burst 20".parse().unwrap();
        assert_eq!(rate.requests(), nz(100));
        assert_eq!(rate.period(), Duration::from_secs(1));
        assert_eq!(rate.burst(), nz(20));
        assert_eq!(rate.interval(), Duration::from_millis(10));
        assert_eq!(rate.tolerance(), Duration::from_millis(190));
        assert_eq!(rate.to_string(), "100/s burst 20");
        for text in [
            "100/s",
            "10/30s burst 2",
            "5000/h",
            "7/d",
            "3/1500ms",
            "1/ms",
            "2/90m",
        ] {
            let rate: RateLimit = text.parse().unwrap();
            assert_eq!(rate.to_string(), text);
            assert_eq!(rate.to_string().parse::<RateLimit>().unwrap(), rate);
        }
        assert_eq!("5/60s".parse::<RateLimit>().unwrap().to_string(), "5/m");
        for bad in [
            "",
            "100",
            "/s",
            "0/s",
            "100/",
            "100/x",
            "100/s burst 0",
            "-1/s",
            "1/0s",
            "1/2d",
        ] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad:?}");
        }
        assert_eq!("2000000/s".parse::<RateLimit>(), Err(InvalidLimit::TooFast));
        assert_eq!(
            "99999999999/s".parse::<RateLimit>(),
            Err(InvalidLimit::Count)
        );
    }

    #[test]
    fn networks_match_v4_v6_and_mapped() {
        let allowed: AllowedNetworks = "203.0.113.7/24, 2001:db8::/32 198.51.100.9"
            .parse()
            .unwrap();
        assert_eq!(
            allowed.to_string(),
            "198.51.100.9/32 203.0.113.0/24 2001:db8::/32"
        );
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(allowed.contains(ip("203.0.113.200")));
        assert!(allowed.contains(ip("::ffff:203.0.113.200")));
        assert!(allowed.contains(ip("2001:db8:1::5")));
        assert!(allowed.contains(ip("198.51.100.9")));
        assert!(!allowed.contains(ip("198.51.100.10")));
        assert!(!allowed.contains(ip("203.0.114.1")));
        assert!(!allowed.contains(ip("2001:db9::1")));
        assert!(!allowed.contains(ip("::ffff:10.0.0.1")));
        for bad in [
            "",
            "300.1.1.1/8",
            "10.0.0.0/33",
            "host.example",
            "10.0.0.0/8/8",
        ] {
            assert!(bad.parse::<AllowedNetworks>().is_err(), "{bad:?}");
        }
        let many = (0..=100)
            .map(|n| format!("10.0.{n}.0/24"))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            many.parse::<AllowedNetworks>(),
            Err(InvalidLimit::TooManyNetworks)
        );
    }
}
