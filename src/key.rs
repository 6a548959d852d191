//! Keys: their format, generation, parsing, checksum, digest and plaintext.
//!
//! A key looks like `om_live_2Xb9…Qa7`: the product prefix (`om`, configurable), the
//! [`Environment`] (`live` or `test`), 32 characters of CSPRNG output in base62 (190 bits), and a
//! 6-character base62 CRC32 checksum of everything before it. The checksum lets a layer reject a
//! mistyped or made-up key with no cache or store work, and lets secret scanners recognise a
//! leaked key with few false positives.
//!
//! Only the [`KeyDigest`], SHA-256 of the whole key, is ever stored or looked up. The plaintext
//! is a [`PlaintextKey`], which redacts itself in `Debug` and `Display` and zeroizes its memory
//! when dropped.
//!
//! # Example
//!
//! ```
//! use tower_api_key::{Environment, KeyFormat};
//!
//! let format = KeyFormat::new("om").unwrap();
//! let key = format.generate(Environment::Live).unwrap();
//!
//! // The plaintext is shown only on request; formatting redacts it.
//! assert!(key.expose_secret().starts_with("om_live_"));
//! assert!(!format!("{key:?}").contains(key.expose_secret()));
//!
//! // Parsing checks prefix, environment, length, alphabet and checksum without allocating.
//! let parsed = format.parse(key.expose_secret()).unwrap();
//! assert_eq!(parsed.environment(), Environment::Live);
//! assert_eq!(parsed.digest(), key.digest());
//!
//! // A single mistyped character fails the checksum.
//! let mut typo = key.expose_secret().to_owned();
//! let last = typo.pop().unwrap();
//! typo.push(if last == 'a' { 'b' } else { 'a' });
//! assert!(format.parse(&typo).is_err());
//! ```
//!
//! # Finding leaked keys
//!
//! [`KeyFormat::scanner_regex`] gives a regular expression for secret scanners. For the `om`
//! prefix it is:
//!
//! ```text
//! \bom_(?:live|test)_[0-9A-Za-z]{38}\b
//! ```
//!
//! A match can be confirmed without any store by [`KeyFormat::parse`], which verifies the
//! checksum.

use std::borrow::Cow;
use std::fmt;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// Number of random base62 characters in a key (32 × log2(62) ≈ 190 bits).
const RANDOM_LEN: usize = 32;
/// Number of base62 characters that encode the CRC32 checksum (62^6 > 2^32).
const CHECKSUM_LEN: usize = 6;
/// Length of the environment part, `live` or `test`.
const ENV_LEN: usize = 4;
/// The underscores and the environment of a head: `_live_`.
const HEAD_SEPARATORS_LEN: usize = 1 + ENV_LEN + 1;
/// Longest product prefix accepted by [`KeyFormat::new`].
const MAX_PREFIX_LEN: usize = 16;
/// The longest input that SHA-256 pads into a single 64-byte block.
const ONE_BLOCK: usize = 55;
/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_INITIAL_STATE: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];
/// The base62 alphabet, in ASCII order.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Which data a key may reach: production (`live`) or sandbox (`test`).
///
/// The environment is part of the key text (`om_live_…`, `om_test_…`), so a layer can refuse a
/// key from the wrong environment before any lookup. Handlers read it from the
/// [`Principal`](crate::Principal) to choose between live and sandbox data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Environment {
    /// Production: the key reaches live data.
    Live,
    /// Sandbox: the key reaches sandbox data only.
    Test,
}

impl Environment {
    /// Both environments, live first.
    pub const ALL: [Environment; 2] = [Environment::Live, Environment::Test];

    /// The name used in key text: `"live"` or `"test"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        match bytes {
            b"live" => Some(Environment::Live),
            b"test" => Some(Environment::Test),
            _ => None,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Environment {
    type Err = UnknownEnvironment;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Environment::from_bytes(s.as_bytes()).ok_or(UnknownEnvironment(()))
    }
}

/// The error from parsing an [`Environment`] name other than `live` or `test`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownEnvironment(());

impl fmt::Display for UnknownEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown environment: expected `live` or `test`")
    }
}

impl std::error::Error for UnknownEnvironment {}

/// The shape of a deployment's keys: `{prefix}_{live|test}_{32 random}{6 checksum}`.
///
/// See the [module docs](crate::key) for the format and an example.
#[derive(Clone)]
pub struct KeyFormat {
    prefix: Cow<'static, str>,
    live: Head,
    test: Head,
    /// `0xFF` over the length of a head (`{prefix}_live_`), `0` after it.
    head_mask: [u8; HEAD_WINDOW],
}

/// Enough bytes to hold the longest head, `{16-letter prefix}_live_`; every key is longer.
const HEAD_WINDOW: usize = 32;
const _: () = assert!(
    MAX_PREFIX_LEN + HEAD_SEPARATORS_LEN <= HEAD_WINDOW
        && 1 + HEAD_SEPARATORS_LEN + RANDOM_LEN + CHECKSUM_LEN >= HEAD_WINDOW
);

/// What a format knows in advance about the start of its keys in one environment.
#[derive(Clone)]
struct Head {
    /// `{prefix}_{environment}_`, padded with zeros to [`HEAD_WINDOW`].
    bytes: [u8; HEAD_WINDOW],
    /// The CRC32 of the head, from which a key's checksum is carried on over its random part
    /// alone.
    crc: crc32fast::Hasher,
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
    fn starts(&self, window: &[u8], mask: &[u8; HEAD_WINDOW]) -> bool {
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
    /// Confirm a match with [`KeyFormat::parse`], which also checks the checksum.
    pub fn scanner_regex(&self) -> String {
        format!(
            r"\b{}_(?:live|test)_[0-9A-Za-z]{{{}}}\b",
            self.prefix,
            RANDOM_LEN + CHECKSUM_LEN
        )
    }

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

/// Appends `count` base62 characters from the operating system's CSPRNG to `text`.
pub(crate) fn push_random_base62(
    text: &mut String,
    count: usize,
) -> Result<(), KeyGenerationError> {
    // Rejection sampling: bytes below 248 (= 4 × 62) map onto base62 without bias.
    let mut random = Zeroizing::new([0u8; 64]);
    let mut produced = 0;
    while produced < count {
        getrandom::fill(&mut random[..]).map_err(|_| KeyGenerationError(()))?;
        for &byte in random.iter().filter(|&&byte| byte < 248) {
            if produced == count {
                break;
            }
            text.push(char::from(BASE62[usize::from(byte % 62)]));
            produced += 1;
        }
    }
    Ok(())
}

/// Decodes 6 base62 digits (already checked to be alphanumeric). The encoding of a CRC32 is
/// unique, so comparing decoded values is comparing encodings.
fn decode_checksum(digits: &[u8]) -> u64 {
    // Each digit times its own power of 62, summed: six independent products rather than a chain
    // of six multiply-adds.
    const POWERS: [u64; CHECKSUM_LEN] = [916_132_832, 14_776_336, 238_328, 3_844, 62, 1];
    digits
        .iter()
        .zip(POWERS)
        .map(|(&digit, power)| u64::from(BASE62_VALUES[usize::from(digit)]) * power)
        .sum()
}

/// The value of each base62 digit, by byte (other bytes: 0).
const BASE62_VALUES: [u8; 256] = {
    let mut values = [0; 256];
    let mut digit = 0;
    while digit < BASE62.len() {
        values[BASE62[digit] as usize] = digit as u8;
        digit += 1;
    }
    values
};

/// Encodes a CRC32 as 6 base62 digits, most significant first.
fn encode_checksum(mut crc: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    out
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

/// The error from [`KeyFormat::generate`] when the operating system's random source fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGenerationError(());

impl fmt::Display for KeyGenerationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the operating system's random number generator failed")
    }
}

impl std::error::Error for KeyGenerationError {}

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
    text: &'a [u8],
    environment: Environment,
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
fn hint_of(text: &[u8]) -> String {
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

/// A key's plaintext, handed out once when the key is created.
///
/// `Debug` and `Display` print only the [hint](PlaintextKey::hint) (`om_live_…x7Qa`); read the
/// text with [`expose_secret`](PlaintextKey::expose_secret) when showing it to its owner. The
/// memory is zeroized when the value is dropped. There is deliberately no `Clone`.
pub struct PlaintextKey {
    text: Zeroizing<String>,
    digest: KeyDigest,
    environment: Environment,
}

impl PlaintextKey {
    /// The full key text. Show it to the key's owner once; never log it.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }

    /// SHA-256 of the key: the value to store.
    pub fn digest(&self) -> KeyDigest {
        self.digest
    }

    /// The key's environment.
    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// The display hint, such as `om_live_…x7Qa`.
    pub fn hint(&self) -> String {
        hint_of(self.text.as_bytes())
    }
}

impl fmt::Debug for PlaintextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PlaintextKey").field(&self.hint()).finish()
    }
}

impl fmt::Display for PlaintextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hint())
    }
}

impl Zeroize for PlaintextKey {
    fn zeroize(&mut self) {
        self.text.zeroize();
    }
}

/// SHA-256 of a whole key: the only form of a key that is stored or looked up.
///
/// Equality is constant-time. `Debug` shows the first eight hex digits only.
#[derive(Clone, Copy)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// The digest of `key`'s bytes. Prefer [`ParsedKey::digest`] or [`PlaintextKey::digest`].
    pub fn of(key: &[u8]) -> Self {
        // Keys fit in one SHA-256 block (up to 55 bytes with the padding): pad by hand and run
        // the compression function once, without the streaming API's buffering.
        if key.len() > ONE_BLOCK {
            return KeyDigest(Sha256::digest(key).into());
        }
        let mut block = sha2::digest::generic_array::GenericArray::from([0u8; 64]);
        block[..key.len()].copy_from_slice(key);
        block[key.len()] = 0x80;
        // The length in bits, big-endian, in the last 8 bytes; `key.len()` is at most 55.
        block[56..].copy_from_slice(&(key.len() as u64 * 8).to_be_bytes());
        let mut state = SHA256_INITIAL_STATE;
        sha2::compress256(&mut state, std::slice::from_ref(&block));
        let mut digest = [0u8; 32];
        for (bytes, word) in digest.chunks_exact_mut(4).zip(state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        KeyDigest(digest)
    }

    /// A digest from its 32 raw bytes, as read back from a store.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        KeyDigest(bytes)
    }

    /// The 32 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        out
    }

    /// Parses 64 hex digits (either case); `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (slot, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            // Both digits are below 16, so the byte fits.
            *slot = u8::try_from(high * 16 + low).ok()?;
        }
        Some(KeyDigest(out))
    }
}

impl PartialEq for KeyDigest {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for KeyDigest {}

impl std::hash::Hash for KeyDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({}…)", &self.to_hex()[..8])
    }
}

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

    #[test]
    fn plaintext_is_redacted_in_debug_and_display() {
        let key = om().generate(Environment::Live).unwrap();
        let secret = key.expose_secret();
        let debug = format!("{key:?}");
        let display = format!("{key}");
        for shown in [&debug, &display] {
            assert!(!shown.contains(secret));
            assert!(!shown.contains(&secret[8..20]));
        }
        assert_eq!(display, format!("om_live_…{}", &secret[secret.len() - 4..]));
        let parsed = om().parse(secret).unwrap();
        assert!(!format!("{parsed:?}").contains(&secret[8..20]));
    }

    #[test]
    fn scanner_regex_finds_generated_keys_and_nothing_else() {
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
        let longer = format!("{}x", key.expose_secret());
        assert!(!regex.is_match(&longer));
        assert!(!regex.is_match(&key.hint()));
        assert!(!regex.is_match("om_prod_0123456789abcdefghij0123456789abcdefgh"));
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(KeyFormat::new("om").is_ok());
        assert!(KeyFormat::new("acme2").is_ok());
        for bad in ["", "Om", "o_m", "2om", "om-", "abcdefghijklmnopq"] {
            assert!(KeyFormat::new(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_one_block_digest_is_sha256() {
        for len in 0..=130 {
            let input: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let expected: [u8; 32] = Sha256::digest(&input).into();
            assert_eq!(KeyDigest::of(&input).as_bytes(), &expected, "length {len}");
        }
        // FIPS 180-2 test vector.
        assert_eq!(
            KeyDigest::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn digests_round_trip_through_hex() {
        let key = om().generate(Environment::Live).unwrap();
        let digest = key.digest();
        let hex = digest.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(KeyDigest::from_hex(&hex), Some(digest));
        assert_eq!(KeyDigest::from_hex(&hex.to_uppercase()), Some(digest));
        assert_eq!(KeyDigest::from_hex(&hex[1..]), None);
        assert_eq!(KeyDigest::from_hex(&"g".repeat(64)), None);
        assert_eq!(format!("{digest:?}"), format!("KeyDigest({}…)", &hex[..8]));
    }

    #[test]
    fn checksums_decode_to_what_was_encoded() {
        for crc in [0, 1, 61, 62, 3_843, 1 << 31, u32::MAX, 0x9e37_79b9] {
            assert_eq!(decode_checksum(&encode_checksum(crc)), u64::from(crc));
        }
    }

    #[test]
    fn checksum_encoding_is_fixed_width() {
        assert_eq!(&encode_checksum(0), b"000000");
        assert_eq!(&encode_checksum(61), b"00000z");
        assert_eq!(&encode_checksum(u32::MAX), b"4gfFC3");
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

    #[test]
    fn digest_equality_compares_every_byte() {
        let digest = KeyDigest::of(b"om_live_example");
        assert_eq!(digest, KeyDigest::from_bytes(*digest.as_bytes()));
        for index in 0..32 {
            let mut bytes = *digest.as_bytes();
            bytes[index] ^= 0x80;
            assert_ne!(digest, KeyDigest::from_bytes(bytes), "byte {index}");
        }
    }

    #[test]
    fn plaintext_can_be_zeroized() {
        let mut key = om().generate(Environment::Live).unwrap();
        assert_eq!(key.expose_secret().len(), 46);
        key.zeroize();
        assert_eq!(key.expose_secret(), "");
    }
}
