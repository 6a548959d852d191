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
//! om_(?:live|test)_[0-9A-Za-z]{38}
//! ```
//!
//! It has no word boundaries (`\b`), because keys leak glued to other text: URL-encoded in access
//! logs (`?auth=Bearer%20om_live_…`, `?api_key%3Dom_live_…`, where `0` and `D` are word
//! characters), in names such as `OM_TOKEN_om_live_…` or `om_live_…_old`, or followed by more
//! letters and digits. So it also matches look-alikes: a key of another product whose prefix ends
//! in `om`, or any 38 letters and digits after `om_live_`. The checksum filters them out: confirm
//! every match without any store by [`KeyFormat::parse`]: six random base62 characters match a
//! checksum once in 62⁶ ≈ 5.7 × 10¹⁰.
//!
//! ```
//! use tower_api_key::{Environment, KeyFormat};
//!
//! let format = KeyFormat::new("om").unwrap();
//! let scanner = regex::Regex::new(&format.scanner_regex()).unwrap();
//! let key = format.generate(Environment::Live).unwrap();
//! let log = format!("GET /orders?auth=Bearer%20{} 200", key.expose_secret());
//! let found = scanner.find(&log).unwrap().as_str();
//! assert!(format.parse(found).is_ok());
//! assert_eq!(found, key.expose_secret());
//!
//! let look_alike = format!("om_test_{}", "x".repeat(38));
//! assert!(scanner.is_match(&look_alike) && format.parse(&look_alike).is_err());
//! ```

mod checksum;
mod digest;
mod environment;
mod format;
mod generate;
mod parse;
mod plaintext;

pub use self::digest::KeyDigest;
pub use self::environment::{Environment, UnknownEnvironment};
pub use self::format::{InvalidPrefix, KeyFormat};
pub(crate) use self::generate::push_random_base62;
pub use self::generate::KeyGenerationError;
pub use self::parse::{MalformedKey, ParsedKey};
pub use self::plaintext::PlaintextKey;

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
