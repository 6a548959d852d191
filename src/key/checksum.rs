//! The checksum at the end of every key: CRC32 of everything before it, in six base62 digits.

use super::CHECKSUM_LEN;

/// The base62 alphabet, in ASCII order.
pub(super) const BASE62: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Decodes 6 base62 digits (already checked to be alphanumeric). The encoding of a CRC32 is
/// unique, so comparing decoded values is comparing encodings.
pub(super) fn decode_checksum(digits: &[u8]) -> u64 {
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
pub(super) fn encode_checksum(mut crc: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
