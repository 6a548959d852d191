//! The key parser, `KeyFormat::parse_bytes`, with `digest` and `hint` on success.
//!
//! Input: candidate key bytes, tried against the `om` format and a longer prefix. Besides "never
//! panics", an accepted key must have the format's shape, its digest must be SHA-256 of the
//! bytes, and neither the hint nor `Debug` may show the random part.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tower_api_key::{KeyDigest, KeyFormat};

fn formats() -> &'static [KeyFormat; 2] {
    static FORMATS: OnceLock<[KeyFormat; 2]> = OnceLock::new();
    FORMATS.get_or_init(|| {
        [
            KeyFormat::new("om").expect("valid prefix"),
            KeyFormat::new("acme2").expect("valid prefix"),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    for format in formats() {
        let key = match format.parse_bytes(data) {
            Ok(key) => key,
            Err(reason) => {
                let _ = reason.to_string();
                continue;
            }
        };
        assert_eq!(data.len(), format.key_len());
        let text = std::str::from_utf8(data).expect("an accepted key is ASCII");
        let head = format!("{}_{}_", format.prefix(), key.environment());
        assert!(text.starts_with(&head));
        assert!(text[head.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(key.digest(), KeyDigest::of(data));
        assert_eq!(
            format.parse(text).map(|k| k.digest()).ok(),
            Some(key.digest())
        );

        // The hint is the head and the last four characters, all of them checksum.
        let hint = key.hint();
        assert_eq!(hint, format!("{head}…{}", &text[text.len() - 4..]));
        let random = &text[head.len()..text.len() - 6];
        assert!(!hint.contains(&random[random.len() - 8..]));
        let debug = format!("{key:?}");
        assert!(!debug.contains(&random[..8]) && !debug.contains(&random[random.len() - 8..]));
    }
});
