//! Checking a presented key without allocating: length, head, alphabet, checksum.

use std::fmt;

use super::checksum::decode_checksum;
use super::format::HEAD_WINDOW;
use super::{Environment, KeyDigest, KeyFormat, HEAD_SEPARATORS_LEN, RANDOM_LEN};

impl KeyFormat {
    /// Checks that `candidate` is a well-formed key of this format, without allocating.
    ///
    /// The checks, in order: length, prefix, environment, alphabet, checksum. None of them
    /// touches a cache or a store.
    pub fn parse<'a>(&self, candidate: &'a str) -> Result<ParsedKey<'a>, MalformedKey> {
        self.parse_bytes(candidate.as_bytes())
    }

    /// Like [`parse`](Self::parse), for raw bytes such as a header value.
    pub fn parse_bytes<'a>(&self, candidate: &'a [u8]) -> Result<ParsedKey<'a>, MalformedKey> {
        if candidate.len() != self.key_len() {
            return Err(MalformedKey::Length);
        }
        // Every key is longer than the window, and its length was just checked.
        let window = &candidate[..HEAD_WINDOW];
        let (environment, head) = if self.live.starts(window, &self.head_mask) {
            (Environment::Live, &self.live)
        } else if self.test.starts(window, &self.head_mask) {
            (Environment::Test, &self.test)
        } else {
            return Err(MalformedKey::Prefix);
        };
        let tail = &candidate[self.prefix.len() + HEAD_SEPARATORS_LEN..];
        // No early exit: the whole tail is checked with vector instructions.
        if !tail
            .iter()
            .fold(true, |ok, b| ok & b.is_ascii_alphanumeric())
        {
            return Err(MalformedKey::Alphabet);
        }
        let (random, checksum) = tail.split_at(RANDOM_LEN);
        // The CRC32 of the whole body, carried on from the precomputed CRC of its head.
        let mut crc = head.crc.clone();
        crc.update(random);
        // The checksum is no secret (anyone holding a key can compute it), so a plain
        // comparison is fine here.
        if decode_checksum(checksum) != u64::from(crc.finalize()) {
            return Err(MalformedKey::Checksum);
        }
        Ok(ParsedKey {
            text: candidate,
            environment,
        })
    }
}

/// Why a presented key is not a well-formed key of the expected [`KeyFormat`].
///
/// Clients never see which check failed: every malformed key gets the same `401` as an unknown
/// one. The reason is available to server-side logging through the
/// [`Rejection`](crate::Rejection) attached to the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MalformedKey {
    /// The key is not as long as every key of this format.
    Length,
    /// The key does not start with `{prefix}_live_` or `{prefix}_test_`.
    Prefix,
    /// The key has characters outside the base62 alphabet.
    Alphabet,
    /// The checksum does not match: a typo, a truncated paste, or a made-up key.
    Checksum,
}

impl fmt::Display for MalformedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MalformedKey::Length => "key has the wrong length",
            MalformedKey::Prefix => "key has the wrong prefix or environment",
            MalformedKey::Alphabet => "key has characters outside base62",
            MalformedKey::Checksum => "key checksum does not match",
        })
    }
}

impl std::error::Error for MalformedKey {}

/// A presented key that passed [`KeyFormat::parse`]: borrowed, never copied.
///
/// Its `Debug` shows only the [display hint](ParsedKey::hint).
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    pub(super) text: &'a [u8],
    pub(super) environment: Environment,
}

impl ParsedKey<'_> {
    /// The environment named in the key.
    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// SHA-256 of the whole key: what stores keep and resolvers look up.
    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(self.text)
    }

    /// A display hint such as `om_live_…x7Qa`: the prefix and the last four characters.
    pub fn hint(&self) -> String {
        hint_of(self.text)
    }
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ParsedKey").field(&self.hint()).finish()
    }
}

/// `{prefix}_{env}_…{last 4}` for a well-formed key (ASCII by construction).
pub(super) fn hint_of(text: &[u8]) -> String {
    // The second underscore ends `{prefix}_{env}_`; well-formed keys always have it.
    let head_end = text
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'_')
        .nth(1)
        .map_or(0, |(i, _)| i + 1);
    let tail_start = text.len().saturating_sub(4).max(head_end);
    let mut hint = String::with_capacity(head_end + 3 + 4);
    hint.extend(text[..head_end].iter().map(|&b| char::from(b)));
    hint.push('…');
    hint.extend(text[tail_start..].iter().map(|&b| char::from(b)));
    hint
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::checksum::{encode_checksum, BASE62};

    fn om() -> KeyFormat {
        KeyFormat::new("om").unwrap()
    }

    /// `head` and `random`, followed by their correct checksum whatever `random` holds.
    fn with_checksum(head: &str, random: &[u8]) -> Vec<u8> {
        let mut key = [head.as_bytes(), random].concat();
        let checksum = encode_checksum(crc32fast::hash(&key));
        key.extend_from_slice(&checksum);
        key
    }

    #[test]
    fn characters_outside_base62_are_refused_even_with_a_matching_checksum() {
        let format = om();
        let random = *b"2Xb9kQ7fLmN4pR8sT1vW3yZ5aC6dE0gH";
        assert!(format
            .parse_bytes(&with_checksum("om_live_", &random))
            .is_ok());
        // One, two and three bad bytes: an even number must not cancel out.
        for positions in [&[0][..], &[0, 31], &[5, 6], &[3, 17, 30]] {
            for bad in [b'-', b'.', b'_', b'~', b'+', b'/', b'=', b' ', 0x80, 0xff] {
                let mut changed = random;
                for &at in positions {
                    changed[at] = bad;
                }
                let key = with_checksum("om_live_", &changed);
                assert_eq!(
                    format.parse_bytes(&key).err(),
                    Some(MalformedKey::Alphabet),
                    "{bad:#x} at {positions:?}"
                );
            }
        }
    }

    #[test]
    fn the_hint_is_the_head_and_the_last_four_characters() {
        for (format, head) in [
            (om(), "om_test_"),
            (
                KeyFormat::new("abcdefghijklmnop").unwrap(),
                "abcdefghijklmnop_test_",
            ),
        ] {
            let key = with_checksum(head, b"2Xb9kQ7fLmN4pR8sT1vW3yZ5aC6dE0gH");
            let text = std::str::from_utf8(&key).unwrap();
            let parsed = format.parse(text).unwrap();
            let hint = format!("{head}…{}", &text[text.len() - 4..]);
            assert_eq!(parsed.hint(), hint);
            assert_eq!(format!("{parsed:?}"), format!("ParsedKey({hint:?})"));
        }
    }

    #[test]
    fn each_reason_has_its_own_message() {
        let messages = [
            (MalformedKey::Length, "key has the wrong length"),
            (
                MalformedKey::Prefix,
                "key has the wrong prefix or environment",
            ),
            (MalformedKey::Alphabet, "key has characters outside base62"),
            (MalformedKey::Checksum, "key checksum does not match"),
        ];
        for (reason, message) in messages {
            assert_eq!(reason.to_string(), message);
        }
    }

    #[test]
    fn every_single_character_change_is_rejected() {
        // The shortest and the longest prefix: the head of the longest fills most of the window
        // that the head is compared in.
        for format in [om(), KeyFormat::new("abcdefghijklmnop").unwrap()] {
            for environment in Environment::ALL {
                let key = format.generate(environment).unwrap();
                let original = key.expose_secret().as_bytes().to_vec();
                assert!(format.parse_bytes(&original).is_ok());
                for index in 0..original.len() {
                    for &replacement in BASE62.iter().chain(b"_-") {
                        if replacement == original[index] {
                            continue;
                        }
                        let mut changed = original.clone();
                        changed[index] = replacement;
                        assert!(
                            format.parse_bytes(&changed).is_err(),
                            "{format:?}: a change at byte {index} was accepted"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn each_check_reports_its_reason() {
        let format = om();
        let key = format.generate(Environment::Test).unwrap();
        let text = key.expose_secret();
        assert_eq!(format.parse(&text[1..]).err(), Some(MalformedKey::Length));
        assert_eq!(format.parse("").err(), Some(MalformedKey::Length));
        let other = text.replacen("om_", "xx_", 1);
        assert_eq!(format.parse(&other).err(), Some(MalformedKey::Prefix));
        let env = text.replacen("_test_", "_prod_", 1);
        assert_eq!(format.parse(&env).err(), Some(MalformedKey::Prefix));
        let mut alphabet = text.to_owned();
        alphabet.replace_range(10..11, "+");
        assert_eq!(format.parse(&alphabet).err(), Some(MalformedKey::Alphabet));
        // Changing the environment keeps the shape but breaks the checksum.
        let live = text.replacen("_test_", "_live_", 1);
        assert_eq!(format.parse(&live).err(), Some(MalformedKey::Checksum));
    }

    #[test]
    fn parse_never_panics_on_odd_input() {
        let format = om();
        let len = format.key_len();
        let inputs: Vec<Vec<u8>> = vec![
            vec![0xff; len],
            vec![b'_'; len],
            b"om_".iter().copied().chain([0xc3; 43]).collect(),
            b"om_live".iter().copied().chain([b'a'; 39]).collect(),
            "om_live_ééééééééééééééééééé".as_bytes().to_vec(),
        ];
        for input in inputs {
            assert!(format.parse_bytes(&input).is_err());
        }
    }
}
