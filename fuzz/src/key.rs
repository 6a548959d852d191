//! Keys of a format, from the format's definition in the README:
//! `{prefix}_{live|test}_{32 base62}{6 base62 CRC32 of everything before it}`, 0-9A-Za-z being
//! the base62 digits in that order, most significant digit first; a key's digest is SHA-256 of
//! its bytes.
//!
//! The CRC32 comes from `crc32fast::hash` over the whole head and random part (the library
//! carries a precomputed CRC of the head on); the base62 digits are computed here by powers of
//! 62, not with the library's table; SHA-256 is `sha2`'s streaming API, not the library's
//! one-block code.

use sha2::{Digest as _, Sha256};
use tower_api_key::MalformedKey;
use tower_api_key::Environment;

/// Random characters in a key.
pub const RANDOM_LEN: usize = 32;
/// Base62 digits of the checksum.
pub const CHECKSUM_LEN: usize = 6;

/// The length of every key with this prefix: `{prefix}_live_`, 32 random, 6 checksum.
pub fn key_len(prefix: &str) -> usize {
    prefix.len() + "_live_".len() + RANDOM_LEN + CHECKSUM_LEN
}

/// What [`KeyFormat::parse_bytes`](tower_api_key::KeyFormat::parse_bytes) must answer for
/// `candidate`, its checks taken in their documented order: length, prefix and environment,
/// alphabet, checksum.
pub fn parse(prefix: &str, candidate: &[u8]) -> Result<Environment, MalformedKey> {
    if candidate.len() != key_len(prefix) {
        return Err(MalformedKey::Length);
    }
    let environment = [Environment::Live, Environment::Test]
        .into_iter()
        .find(|environment| candidate.starts_with(head(prefix, *environment).as_bytes()))
        .ok_or(MalformedKey::Prefix)?;
    let (body, checksum) = candidate.split_at(candidate.len() - CHECKSUM_LEN);
    if !candidate[head(prefix, environment).len()..]
        .iter()
        .all(|&b| base62_value(b).is_some())
    {
        return Err(MalformedKey::Alphabet);
    }
    if checksum != checksum_of(body) {
        return Err(MalformedKey::Checksum);
    }
    Ok(environment)
}

/// `{prefix}_{environment}_`.
pub fn head(prefix: &str, environment: Environment) -> String {
    let name = match environment {
        Environment::Live => "live",
        Environment::Test => "test",
    };
    format!("{prefix}_{name}_")
}

/// The checksum a key with this head and random part ends with.
pub fn checksum_of(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let crc = u64::from(crc32fast::hash(body));
    let mut digits = [0; CHECKSUM_LEN];
    for (position, slot) in digits.iter_mut().enumerate() {
        // The digit for 62^(5 - position).
        let power = 62u64.pow((CHECKSUM_LEN - 1 - position) as u32);
        *slot = base62_digit((crc / power % 62) as u8);
    }
    digits
}

/// `body` followed by its checksum.
pub fn with_checksum(body: &[u8]) -> Vec<u8> {
    let mut key = body.to_vec();
    key.extend_from_slice(&checksum_of(body));
    key
}

/// The base62 digit for `value` (below 62).
fn base62_digit(value: u8) -> u8 {
    match value {
        0..=9 => b'0' + value,
        10..=35 => b'A' + (value - 10),
        36..=61 => b'a' + (value - 36),
        _ => unreachable!("{value} is not a base62 digit"),
    }
}

/// The value of a base62 digit, `None` for any other byte.
fn base62_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'Z' => Some(digit - b'A' + 10),
        b'a'..=b'z' => Some(digit - b'a' + 36),
        _ => None,
    }
}

/// SHA-256 of `bytes`, by `sha2`'s streaming API.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A key's display hint: its head, `…`, and its last four characters.
pub fn hint(prefix: &str, environment: Environment, key: &[u8]) -> String {
    let last_four = String::from_utf8_lossy(&key[key.len() - 4..]);
    format!("{}…{last_four}", head(prefix, environment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base62_digits_are_0_to_9_then_upper_then_lower_case() {
        let digits: Vec<u8> = (0..62).map(base62_digit).collect();
        assert_eq!(
            digits,
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        );
        for value in 0..62 {
            assert_eq!(base62_value(base62_digit(value)), Some(value));
        }
    }

    #[test]
    fn checksums_match_python_zlib() {
        // From fuzz/make_seeds.py, which encodes `zlib.crc32` the same way:
        // key(b"om", b"live", b"2Xb9kQ7fLmN4pR8sT1vW3yZ5aC6dE0gH").
        let body = b"om_live_2Xb9kQ7fLmN4pR8sT1vW3yZ5aC6dE0gH";
        assert_eq!(crc32fast::hash(body), 0x8b40_0d9d);
        assert_eq!(&checksum_of(body), b"2Y6aM9");
        assert_eq!(parse("om", &with_checksum(body)), Ok(Environment::Live));
        assert_eq!(&checksum_of(b"")[..], b"000000");
    }

    #[test]
    fn sha256_of_abc() {
        assert_eq!(
            sha256(b"abc")[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "FIPS 180-2, appendix B.1"
        );
    }
}
