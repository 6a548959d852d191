//! SHA-256 of a key: the only form of a key that is stored or looked up.

use std::fmt;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

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

/// SHA-256 of a whole key: the only form of a key that is stored or looked up.
///
/// Equality is constant-time. `Debug` shows the first eight hex digits only.
#[derive(Clone, Copy)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    /// The digest of `key`'s bytes. Prefer [`ParsedKey::digest`](crate::ParsedKey::digest) or
    /// [`PlaintextKey::digest`](crate::PlaintextKey::digest).
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
    use crate::key::{Environment, KeyFormat};

    fn om() -> KeyFormat {
        KeyFormat::new("om").unwrap()
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
    fn digests_hash_by_their_bytes() {
        use std::hash::{BuildHasher, RandomState};
        let state = RandomState::new();
        let a = KeyDigest::of(b"om_live_a");
        let b = KeyDigest::of(b"om_live_b");
        assert_eq!(state.hash_one(a), state.hash_one(a.as_bytes()));
        assert_ne!(state.hash_one(a), state.hash_one(b));
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
}
