//! A deployment's key format: the product prefix, and what is known in advance about each
//! environment's keys.

use std::borrow::Cow;
use std::fmt;

use super::{Environment, CHECKSUM_LEN, HEAD_SEPARATORS_LEN, MAX_PREFIX_LEN, RANDOM_LEN};

/// The shape of a deployment's keys: `{prefix}_{live|test}_{32 random}{6 checksum}`.
///
/// See the [module docs](crate::key) for the format and an example.
#[derive(Clone)]
pub struct KeyFormat {
    pub(super) prefix: Cow<'static, str>,
    pub(super) live: Head,
    pub(super) test: Head,
    /// `0xFF` over the length of a head (`{prefix}_live_`), `0` after it.
    pub(super) head_mask: [u8; HEAD_WINDOW],
}

/// Enough bytes to hold the longest head, `{16-letter prefix}_live_`; every key is longer.
pub(super) const HEAD_WINDOW: usize = 32;
const _: () = assert!(
    MAX_PREFIX_LEN + HEAD_SEPARATORS_LEN <= HEAD_WINDOW
        && 1 + HEAD_SEPARATORS_LEN + RANDOM_LEN + CHECKSUM_LEN >= HEAD_WINDOW
);

/// What a format knows in advance about the start of its keys in one environment.
#[derive(Clone)]
pub(super) struct Head {
    /// `{prefix}_{environment}_`, padded with zeros to [`HEAD_WINDOW`].
    bytes: [u8; HEAD_WINDOW],
    /// The CRC32 of the head, from which a key's checksum is carried on over its random part
    /// alone.
    pub(super) crc: crc32fast::Hasher,
}

impl Head {
    fn new(prefix: &str, environment: Environment) -> Self {
        let text = format!("{prefix}_{environment}_");
        let mut bytes = [0; HEAD_WINDOW];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(text.as_bytes());
        Head { bytes, crc }
    }

    /// Whether `window` starts with this head; branch-free over the whole window.
    pub(super) fn starts(&self, window: &[u8], mask: &[u8; HEAD_WINDOW]) -> bool {
        window
            .iter()
            .zip(&self.bytes)
            .zip(mask)
            .fold(0, |differ, ((&a, &b), &m)| differ | ((a ^ b) & m))
            == 0
    }
}

impl PartialEq for KeyFormat {
    fn eq(&self, other: &Self) -> bool {
        // Everything else is derived from the prefix.
        self.prefix == other.prefix
    }
}

impl Eq for KeyFormat {}

impl fmt::Debug for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFormat")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl KeyFormat {
    /// A format with the given product prefix, such as `"om"`.
    ///
    /// The prefix is 1 to 16 lowercase ASCII letters or digits and starts with a letter, so that
    /// keys stay easy to recognise and the scanner regex stays precise.
    pub fn new(prefix: impl Into<Cow<'static, str>>) -> Result<Self, InvalidPrefix> {
        let prefix = prefix.into();
        let bytes = prefix.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_PREFIX_LEN
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if valid {
            let mut head_mask = [0; HEAD_WINDOW];
            head_mask[..prefix.len() + HEAD_SEPARATORS_LEN].fill(0xFF);
            Ok(KeyFormat {
                live: Head::new(&prefix, Environment::Live),
                test: Head::new(&prefix, Environment::Test),
                head_mask,
                prefix,
            })
        } else {
            Err(InvalidPrefix(()))
        }
    }

    /// The product prefix, such as `"om"`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The length in bytes of every key of this format.
    pub fn key_len(&self) -> usize {
        self.prefix.len() + HEAD_SEPARATORS_LEN + RANDOM_LEN + CHECKSUM_LEN
    }

    /// A regular expression that matches keys of this format in text, for secret scanners.
    ///
    /// It has no word boundaries, so it finds keys glued to other text: in URL-encoded access
    /// logs (`?auth=Bearer%20om_live_…`, `?api_key%3Dom_live_…`), in names (`OM_TOKEN_om_live_…`,
    /// `om_live_…_old`) and before more letters or digits. It matches look-alikes too; confirm
    /// each match with [`KeyFormat::parse`], whose checksum lets through only about one random
    /// string in 5 × 10¹⁰. See the [module docs](crate::key).
    pub fn scanner_regex(&self) -> String {
        format!(
            r"{}_(?:live|test)_[0-9A-Za-z]{{{}}}",
            self.prefix,
            RANDOM_LEN + CHECKSUM_LEN
        )
    }
}

/// The error from [`KeyFormat::new`] for a prefix that is not 1–16 lowercase letters or digits
/// starting with a letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidPrefix(());

impl fmt::Display for InvalidPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "invalid key prefix: expected 1 to 16 lowercase ASCII letters or digits, starting with a letter",
        )
    }
}

impl std::error::Error for InvalidPrefix {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::MalformedKey;

    fn om() -> KeyFormat {
        KeyFormat::new("om").unwrap()
    }

    #[test]
    fn scanner_regex_finds_generated_keys_but_not_hints_or_other_environments() {
        let format = om();
        let regex = regex::Regex::new(&format.scanner_regex()).unwrap();
        for environment in Environment::ALL {
            for _ in 0..200 {
                let key = format.generate(environment).unwrap();
                let line = format!("export TOKEN={}; echo done", key.expose_secret());
                let found = regex.find(&line).unwrap();
                assert_eq!(found.as_str(), key.expose_secret());
            }
        }
        let key = format.generate(Environment::Live).unwrap();
        assert!(!regex.is_match(&key.hint()));
        assert!(!regex.is_match("om_prod_0123456789abcdefghij0123456789abcdefgh"));
        // One character short.
        assert!(!regex.is_match(&key.expose_secret()[..45]));
    }

    #[test]
    fn scanner_regex_finds_keys_glued_to_other_text() {
        let format = om();
        let regex = regex::Regex::new(&format.scanner_regex()).unwrap();
        for environment in Environment::ALL {
            let key = format.generate(environment).unwrap();
            let key = key.expose_secret();
            for text in [
                format!("GET /orders?auth=Bearer%20{key} HTTP/1.1"),
                format!("GET /orders?auth=bearer%20{key}&page=2"),
                format!("GET /orders?api_key%3D{key}"),
                format!("GET /orders?api_key%3d{key}"),
                format!("OM_TOKEN_{key}"),
                format!("{key}_old"),
                format!("{key}0Zz9"),
                format!("token{key}"),
            ] {
                let found = regex
                    .find(&text)
                    .unwrap_or_else(|| panic!("missed in {text:?}"));
                assert_eq!(found.as_str(), key, "in {text:?}");
                assert!(format.parse(found.as_str()).is_ok());
            }
        }
    }

    #[test]
    fn the_checksum_rejects_what_the_scanner_regex_overmatches() {
        let format = om();
        let regex = regex::Regex::new(&format.scanner_regex()).unwrap();
        // A key of a product whose prefix ends in `om`, and a made-up key: both match, and the
        // checksum refuses both.
        let other_product = KeyFormat::new("bloom").unwrap().generate(Environment::Live);
        let made_up = format!("om_live_{}", "a".repeat(38));
        for text in [other_product.unwrap().expose_secret(), &made_up] {
            let found = regex.find(text).unwrap();
            assert_eq!(found.end(), text.len());
            assert_eq!(
                format.parse(found.as_str()).err(),
                Some(MalformedKey::Checksum)
            );
        }
    }

    #[test]
    fn formats_are_equal_exactly_when_their_prefixes_are() {
        let owned = KeyFormat::new(String::from("om")).unwrap();
        assert_eq!(om(), owned);
        assert_eq!(om(), om().clone());
        assert_ne!(om(), KeyFormat::new("acme2").unwrap());
        assert_ne!(om(), KeyFormat::new("omm").unwrap());
    }

    #[test]
    fn a_format_tells_its_prefix_and_key_length() {
        let acme = KeyFormat::new("acme2").unwrap();
        assert_eq!(acme.prefix(), "acme2");
        assert_eq!(acme.key_len(), 5 + 6 + 32 + 6);
        let longest = KeyFormat::new("abcdefghijklmnop").unwrap();
        assert_eq!(longest.prefix(), "abcdefghijklmnop");
        assert_eq!(longest.key_len(), 60);
        assert_eq!(format!("{acme:?}"), r#"KeyFormat { prefix: "acme2", .. }"#);
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(KeyFormat::new("om").is_ok());
        assert!(KeyFormat::new("acme2").is_ok());
        assert!(KeyFormat::new("abcdefghijklmnop").is_ok());
        for bad in ["", "Om", "o_m", "2om", "om-", "abcdefghijklmnopq"] {
            assert_eq!(
                KeyFormat::new(bad)
                    .err()
                    .map(|error| error.to_string())
                    .as_deref(),
                Some(
                    "invalid key prefix: expected 1 to 16 lowercase ASCII letters or digits, \
                     starting with a letter"
                ),
                "{bad:?} was accepted"
            );
        }
    }
}
