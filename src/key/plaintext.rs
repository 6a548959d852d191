//! The plaintext of a new key: shown once, redacted everywhere else, zeroized when dropped.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

use super::parse::hint_of;
use super::{Environment, KeyDigest};

/// A key's plaintext, handed out once when the key is created.
///
/// `Debug` and `Display` print only the [hint](PlaintextKey::hint) (`om_live_…x7Qa`); read the
/// text with [`expose_secret`](PlaintextKey::expose_secret) when showing it to its owner. The
/// memory is zeroized when the value is dropped. There is deliberately no `Clone`.
pub struct PlaintextKey {
    pub(super) text: Zeroizing<String>,
    pub(super) digest: KeyDigest,
    pub(super) environment: Environment,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyFormat;

    fn om() -> KeyFormat {
        KeyFormat::new("om").unwrap()
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
    fn plaintext_can_be_zeroized() {
        let mut key = om().generate(Environment::Live).unwrap();
        assert_eq!(key.expose_secret().len(), 46);
        key.zeroize();
        assert_eq!(key.expose_secret(), "");
    }
}
