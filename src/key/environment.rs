//! The environment named in a key: `live` or `test`.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_read_and_print_as_in_key_text() {
        for (environment, name) in [(Environment::Live, "live"), (Environment::Test, "test")] {
            assert_eq!(environment.as_str(), name);
            assert_eq!(environment.to_string(), name);
            assert_eq!(name.parse::<Environment>(), Ok(environment));
        }
        for other in ["", "Live", "TEST", "prod", "live ", "lives"] {
            assert_eq!(other.parse::<Environment>(), Err(UnknownEnvironment(())));
        }
        assert_eq!(
            UnknownEnvironment(()).to_string(),
            "unknown environment: expected `live` or `test`"
        );
    }
}
