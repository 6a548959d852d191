//! Which rate holds a key: its own, else its environment's default, else the layer's; and the
//! owner's shared rate on top. The buckets a key's cache entry holds, so that a cache hit checks
//! its rate without a lookup.

use std::sync::Arc;

use http::HeaderValue;

use super::gcra::{check_both, GcraCell, LimitKey, LocalLimiter};
use super::{RateDecision, RateLimit};
use crate::key::Environment;
use crate::resolver::KeyRecord;

/// The rate of each owner, asked when a key is cached.
pub(crate) type OwnerRateOf = Arc<dyn Fn(&str) -> Option<RateLimit> + Send + Sync>;

/// The rate an owner's keys share: none, the same for every owner, or one per owner.
#[derive(Clone, Default)]
pub(crate) enum OwnerRates {
    #[default]
    None,
    Every(RateLimit),
    Each(OwnerRateOf),
}

impl OwnerRates {
    fn of(&self, owner: &str) -> Option<RateLimit> {
        match self {
            OwnerRates::None => None,
            OwnerRates::Every(rate) => Some(*rate),
            OwnerRates::Each(rate_of) => rate_of(owner),
        }
    }
}

impl std::fmt::Debug for OwnerRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OwnerRates::None => f.write_str("None"),
            OwnerRates::Every(rate) => write!(f, "Every({rate})"),
            OwnerRates::Each(_) => f.write_str("Each(..)"),
        }
    }
}

/// The layer's rate rules and this process's buckets.
#[derive(Debug, Default)]
pub(crate) struct RateRules {
    pub(crate) default: Option<RateLimit>,
    pub(crate) per_environment: [Option<RateLimit>; 2],
    pub(crate) owner: OwnerRates,
    pub(crate) local: LocalLimiter,
}

impl RateRules {
    /// The rate of a key with `own` rate for `environment`, if any holds it.
    pub(crate) fn rate_of(
        &self,
        own: Option<RateLimit>,
        environment: Environment,
    ) -> Option<RateLimit> {
        own.or(self.per_environment[environment as usize])
            .or(self.default)
    }

    /// The buckets of the key in `record`, for its cache entry; `None` when no rate holds it.
    pub(crate) fn buckets_for(&self, record: &KeyRecord) -> Option<Box<KeyRate>> {
        let key = self
            .rate_of(record.limits.rate, record.environment)
            .map(|rate| (rate, self.local.cell(&LimitKey::Key(record.id.clone()))));
        let owner = self.owner.of(&record.owner).map(|rate| {
            let owner = LimitKey::Owner(record.owner.as_str().into());
            (rate, self.local.cell(&owner))
        });
        let policy = policy_header([
            ("key", key.as_ref().map(|k| k.0)),
            ("owner", owner.as_ref().map(|o| o.0)),
        ]);
        let buckets = match (key, owner) {
            (Some(key), Some(owner)) => Buckets::Both { key, owner },
            (Some(key), None) => Buckets::Key(key),
            (None, Some(owner)) => Buckets::Owner(owner),
            (None, None) => return None,
        };
        Some(Box::new(KeyRate { buckets, policy }))
    }
}

/// A rate and its bucket.
type Bucket = (RateLimit, Arc<GcraCell>);

/// Which buckets hold a key.
#[derive(Debug)]
pub(crate) enum Buckets {
    Key(Bucket),
    Owner(Bucket),
    Both { key: Bucket, owner: Bucket },
}

/// A key's rates and buckets, in its cache entry.
#[derive(Debug)]
pub(crate) struct KeyRate {
    pub(crate) buckets: Buckets,
    /// The `RateLimit-Policy` field, written once.
    pub(crate) policy: HeaderValue,
}

impl KeyRate {
    /// The decision for a request at `now` on this process's buckets, with the name of the
    /// policy that decided (`key` or `owner`).
    pub(crate) fn check(&self, now: u64) -> (RateDecision, &'static str) {
        match &self.buckets {
            Buckets::Key((rate, cell)) => (cell.check(rate, now), "key"),
            Buckets::Owner((rate, cell)) => (cell.check(rate, now), "owner"),
            Buckets::Both { key, owner } => {
                let decision = check_both((&key.1, &key.0), (&owner.1, &owner.0), now);
                // The limit that decided; when both rates are equal, the key's is named.
                let name = if decision.limit == key.0 {
                    "key"
                } else {
                    "owner"
                };
                (decision, name)
            }
        }
    }

    /// The key's rate and the owner's, for a shared limiter.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn rates(&self) -> (Option<RateLimit>, Option<RateLimit>) {
        match &self.buckets {
            Buckets::Key((rate, _)) => (Some(*rate), None),
            Buckets::Owner((rate, _)) => (None, Some(*rate)),
            Buckets::Both { key, owner } => (Some(key.0), Some(owner.0)),
        }
    }
}

/// `"key";q=100;w=1, "owner";q=1000;w=60`: each policy's quota and window in seconds (a
/// window under a second is written as 1).
pub(crate) fn policy_header<'a>(
    policies: impl IntoIterator<Item = (&'a str, Option<RateLimit>)>,
) -> HeaderValue {
    let mut text = String::new();
    for (name, rate) in policies {
        if let Some(rate) = rate {
            if !text.is_empty() {
                text.push_str(", ");
            }
            text.push_str(&format!(
                "\"{name}\";q={};w={}",
                rate.requests(),
                ceil_seconds(rate.period()).max(1)
            ));
        }
    }
    // Digits, letters, quotes, `;`, `=`, `,` and spaces only.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `duration` in whole seconds, rounded up.
pub(crate) fn ceil_seconds(duration: std::time::Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// The `RateLimit` field for `decision` under policy `name`: `"key";r=19;t=1`. Written on every
/// response let through under a rate, so it is written into a buffer on the stack, without
/// `format!`'s machinery and `String` (about 1,700 instructions a response under callgrind, most
/// of it formatting and a second allocation); the `HeaderValue` is the one allocation left.
pub(crate) fn rate_limit_header(name: &str, decision: &RateDecision) -> HeaderValue {
    let mut field = FieldBuffer::default();
    let written = field.push(b"\"").is_some()
        && field.push(name.as_bytes()).is_some()
        && field.push(b"\";r=").is_some()
        && field.push_decimal(u64::from(decision.remaining)).is_some()
        && field.push(b";t=").is_some()
        && field.push_decimal(ceil_seconds(decision.reset)).is_some();
    // A name too long for the buffer, or not valid in a field: no field (names are `key` and
    // `owner`).
    if !written {
        return HeaderValue::from_static("");
    }
    HeaderValue::from_bytes(field.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A short field value written on the stack: room for the `RateLimit` field with a name of up
/// to 25 bytes.
struct FieldBuffer {
    bytes: [u8; 64],
    len: usize,
}

impl Default for FieldBuffer {
    fn default() -> Self {
        FieldBuffer {
            bytes: [0; 64],
            len: 0,
        }
    }
}

impl FieldBuffer {
    /// Appends `bytes`; `None`, and nothing appended, if they do not fit.
    fn push(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len.checked_add(bytes.len())?;
        self.bytes.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }

    /// Appends `number` in decimal.
    fn push_decimal(&mut self, mut number: u64) -> Option<()> {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            // A remainder of a division by ten: one digit.
            digits[start] = b'0' + (number % 10) as u8;
            number /= 10;
            if number == 0 {
                break;
            }
        }
        self.push(&digits[start..])
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The field as it was written with `format!` before the stack buffer.
    fn formatted(name: &str, decision: &RateDecision) -> HeaderValue {
        let text = format!(
            "\"{name}\";r={};t={}",
            decision.remaining,
            ceil_seconds(decision.reset)
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    #[test]
    fn rate_limit_field_has_the_same_bytes_as_formatted() {
        let remainings = [0, 1, 9, 10, 19, 99, 100, 1_000_000, u32::MAX - 1, u32::MAX];
        let resets = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(999),
            Duration::from_secs(1),
            Duration::new(1, 1),
            Duration::from_secs(59),
            Duration::from_secs(86_400),
            Duration::from_secs(u64::MAX),
        ];
        for name in ["key", "owner", "", "a-policy-name-of-twenty", "\n"] {
            for remaining in remainings {
                for reset in resets {
                    let decision = RateDecision {
                        allowed: true,
                        limit: RateLimit::UNREACHABLE,
                        remaining,
                        reset,
                        retry_after: Duration::ZERO,
                    };
                    assert_eq!(
                        rate_limit_header(name, &decision).as_bytes(),
                        formatted(name, &decision).as_bytes(),
                        "{name:?} {remaining} {reset:?}"
                    );
                }
            }
        }
        let decision = RateDecision {
            allowed: true,
            limit: RateLimit::UNREACHABLE,
            remaining: 19,
            reset: Duration::from_millis(500),
            retry_after: Duration::ZERO,
        };
        assert_eq!(rate_limit_header("key", &decision), "\"key\";r=19;t=1");
    }
}
