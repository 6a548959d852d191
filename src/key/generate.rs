//! Generating keys from the operating system's CSPRNG.

use std::fmt;

use zeroize::Zeroizing;

use super::checksum::{encode_checksum, BASE62};
use super::{Environment, KeyDigest, KeyFormat, PlaintextKey, RANDOM_LEN};

impl KeyFormat {
    /// Generates a new key for `environment` from the operating system's CSPRNG.
    ///
    /// The plaintext is returned once; store only its [`digest`](PlaintextKey::digest).
    pub fn generate(&self, environment: Environment) -> Result<PlaintextKey, KeyGenerationError> {
        let mut text = Zeroizing::new(String::with_capacity(self.key_len()));
        text.push_str(&self.prefix);
        text.push('_');
        text.push_str(environment.as_str());
        text.push('_');

        push_random_base62(&mut text, RANDOM_LEN)?;

        let checksum = encode_checksum(crc32fast::hash(text.as_bytes()));
        // The alphabet is ASCII, so every byte is a char.
        text.extend(checksum.iter().map(|&b| char::from(b)));
        Ok(PlaintextKey {
            digest: KeyDigest::of(text.as_bytes()),
            text,
            environment,
        })
    }
}

/// Appends `count` base62 characters from the operating system's CSPRNG to `text`.
pub(crate) fn push_random_base62(
    text: &mut String,
    count: usize,
) -> Result<(), KeyGenerationError> {
    let mut random = Zeroizing::new([0u8; 64]);
    let mut produced = 0;
    while produced < count {
        getrandom::fill(&mut random[..]).map_err(|_| KeyGenerationError(()))?;
        for character in random.iter().filter_map(|&byte| base62_of(byte)) {
            if produced == count {
                break;
            }
            text.push(char::from(character));
            produced += 1;
        }
    }
    Ok(())
}

/// The base62 character a random byte stands for, or `None` for a byte to draw again.
///
/// Rejection sampling: the bytes below 248 (= 4 × 62) map onto base62 without bias, each
/// character from exactly four of them.
fn base62_of(byte: u8) -> Option<u8> {
    (byte < 248).then(|| BASE62[usize::from(byte % 62)])
}

/// The error from [`KeyFormat::generate`] when the operating system's random source fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGenerationError(());

impl fmt::Display for KeyGenerationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the operating system's random number generator failed")
    }
}

impl std::error::Error for KeyGenerationError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn om() -> KeyFormat {
        KeyFormat::new("om").unwrap()
    }

    #[test]
    fn generated_keys_parse_and_have_the_documented_shape() {
        let format = om();
        for environment in Environment::ALL {
            let key = format.generate(environment).unwrap();
            let text = key.expose_secret();
            assert_eq!(text.len(), format.key_len());
            assert_eq!(text.len(), 46);
            assert!(text.starts_with(&format!("om_{environment}_")));
            let parsed = format.parse(text).unwrap();
            assert_eq!(parsed.environment(), environment);
            assert_eq!(parsed.digest(), key.digest());
            assert_eq!(parsed.digest(), KeyDigest::of(text.as_bytes()));
        }
    }

    #[test]
    fn every_character_stands_for_exactly_four_bytes_and_the_top_eight_are_drawn_again() {
        let mut sources = [0usize; 62];
        for byte in 0..=u8::MAX {
            match base62_of(byte) {
                Some(character) => {
                    assert!(byte < 248, "byte {byte} was used");
                    let index = BASE62.iter().position(|&c| c == character).unwrap();
                    sources[index] += 1;
                }
                None => assert!(byte >= 248, "byte {byte} was drawn again"),
            }
        }
        for (index, &count) in sources.iter().enumerate() {
            assert_eq!(count, 4, "{} from {count} bytes", char::from(BASE62[index]));
        }
    }

    #[test]
    fn random_characters_are_appended_exactly_as_many_as_asked() {
        // Around the 64-byte batches drawn from the OS, where a second draw begins.
        for count in [0, 1, 32, 59, 60, 64, 65, 200] {
            let mut text = String::from("om_live_");
            push_random_base62(&mut text, count).unwrap();
            assert_eq!(text.len(), 8 + count);
            assert!(text.starts_with("om_live_"));
            assert!(text[8..].bytes().all(|b| BASE62.contains(&b)), "{text}");
        }
    }

    #[test]
    fn generation_error_says_what_failed() {
        assert_eq!(
            KeyGenerationError(()).to_string(),
            "the operating system's random number generator failed"
        );
    }

    #[test]
    fn random_part_uses_the_whole_alphabet_evenly() {
        let format = om();
        let mut counts = [0usize; 62];
        let keys = 1_000;
        for _ in 0..keys {
            let key = format.generate(Environment::Live).unwrap();
            let random = &key.expose_secret().as_bytes()[8..8 + RANDOM_LEN];
            for &b in random {
                let index = BASE62.iter().position(|&c| c == b).unwrap();
                counts[index] += 1;
            }
        }
        // 32,000 draws: about 516 of each character, with a standard deviation of about 22.5. The
        // bounds are over six deviations away, yet catch a lost character or a biased mapping.
        let expected = keys * RANDOM_LEN / 62;
        for (index, &count) in counts.iter().enumerate() {
            assert!(
                count.abs_diff(expected) < 150,
                "{} drawn {count} times, expected about {expected}",
                char::from(BASE62[index])
            );
        }
    }
}
