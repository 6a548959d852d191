//! The key parser, `KeyFormat::parse_bytes`, with `digest` and `hint` on success, and
//! `KeyDigest::of` on any bytes.
//!
//! Input: candidate key bytes, tried against three formats: `om`, a longer prefix and the
//! longest allowed. For each format the target also tries the input's first bytes up to the
//! checksum followed by their correct checksum, so that checksum-valid candidates are not limited
//! to the seeds' few keys: the fuzzer reaches accepted keys with any random part, and bytes
//! outside base62 behind a matching checksum.
//!
//! Every answer must be the one the model in `tower_api_key_fuzz::key` gives: accepted exactly
//! when the model accepts, refused for the same reason, with the model's environment and hint. A
//! digest, of an accepted key or of any input, must be SHA-256 by `sha2`'s streaming API. The hint
//! and `Debug` must show the head and the last four characters (all of them checksum), nothing of
//! the random part.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tower_api_key::{KeyDigest, KeyFormat};
use tower_api_key_fuzz::key;

fn formats() -> &'static [KeyFormat; 3] {
    static FORMATS: OnceLock<[KeyFormat; 3]> = OnceLock::new();
    FORMATS.get_or_init(|| {
        ["om", "acme2", "abcdefghijklmnop"].map(|prefix| KeyFormat::new(prefix).expect("valid"))
    })
}

fn check(format: &KeyFormat, candidate: &[u8]) {
    let prefix = format.prefix();
    assert_eq!(format.key_len(), key::key_len(prefix));
    let expected = key::parse(prefix, candidate);
    let parsed = match (format.parse_bytes(candidate), expected) {
        (Ok(parsed), Ok(environment)) => {
            assert_eq!(parsed.environment(), environment);
            parsed
        }
        (Err(reason), Err(expected)) => {
            assert_eq!(reason, expected, "{prefix}: {candidate:?}");
            assert!(!reason.to_string().is_empty());
            return;
        }
        (answer, expected) => panic!(
            "{prefix}: parse_bytes answered {:?}, the model {expected:?}, for {candidate:?}",
            answer.map(|parsed| parsed.environment())
        ),
    };
    let text = std::str::from_utf8(candidate).expect("an accepted key is ASCII");
    assert_eq!(parsed.digest().as_bytes(), &key::sha256(candidate));
    assert_eq!(
        format.parse(text).map(|k| k.digest()).ok(),
        Some(parsed.digest())
    );

    // The head and four characters of the checksum: nothing of the random part.
    let hint = parsed.hint();
    assert_eq!(hint, key::hint(prefix, parsed.environment(), candidate));
    assert_eq!(format!("{parsed:?}"), format!("ParsedKey({hint:?})"));
}

fuzz_target!(|data: &[u8]| {
    assert_eq!(
        KeyDigest::of(data).as_bytes(),
        &key::sha256(data),
        "{} bytes",
        data.len()
    );
    for format in formats() {
        check(format, data);
        let body_len = key::key_len(format.prefix()) - key::CHECKSUM_LEN;
        if let Some(body) = data.get(..body_len) {
            check(format, &key::with_checksum(body));
        }
    }
});
