//! Scopes: what a key may do, and what a route requires.
//!
//! A [`Scope`] is a `resource:action` name such as `products:read`. A key carries a
//! [`ScopeSet`]; a route declares a [`ScopeRequirement`] (all of some scopes, or any of them)
//! with the [`RequireScopes`] layer. Checks are exact and case-sensitive, and no scope implies
//! another: `products:write` does not grant `products:read`.
//!
//! # Catching misspelt scopes
//!
//! Declare each scope once as a constant with [`Scope::from_static`], which checks the syntax
//! when the program is compiled, and use the constants in routes: a misspelt constant does not
//! compile. Where scope names come as strings (configuration, a database), a [`ScopeCatalog`]
//! checks them against the scopes the deployment defines, so a misspelt name fails when the
//! router is built rather than denying every request later.
//!
//! ```compile_fail
//! use tower_api_key::Scope;
//! // `:` is missing: this is a compile error, not a runtime one.
//! const BROKEN: Scope = Scope::from_static("productsread");
//! ```
//!
//! # Example
//!
//! ```
//! use axum::{handler::Handler, routing::get, Router};
//! use tower_api_key::{RequireScopes, Scope, ScopeCatalog};
//!
//! const PRODUCTS_READ: Scope = Scope::from_static("products:read");
//! const PRODUCTS_WRITE: Scope = Scope::from_static("products:write");
//!
//! async fn list() -> &'static str { "[]" }
//! async fn create() -> &'static str { "created" }
//!
//! let app: Router = Router::new()
//!     // One method on a path: `route_layer` guards it.
//!     .route("/v1/catalog", get(list).route_layer(RequireScopes::all([PRODUCTS_READ])))
//!     // Several methods on a path, each with its own scopes: layer each handler.
//!     .route(
//!         "/v1/products",
//!         get(list.layer(RequireScopes::all([PRODUCTS_READ])))
//!             .post(create.layer(RequireScopes::all([PRODUCTS_WRITE]))),
//!     );
//!
//! // Strings are checked against the catalogue when the router is built.
//! let catalog = ScopeCatalog::new([PRODUCTS_READ, PRODUCTS_WRITE]);
//! assert!(catalog.require_all(["products:read"]).is_ok());
//! let err = catalog.require_all(["prodcuts:read"]).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "unknown scope `prodcuts:read`; this deployment defines: products:read products:write"
//! );
//! ```
//!
//! In axum, `MethodRouter::route_layer` wraps every method registered on that path *before* it,
//! so give each handler its own layer when the methods of one path need different scopes, as
//! above.
//!
//! What each way costs per request: the [`Scoped`] extractor checks the requirement in the
//! handler's own extraction and is the cheapest. For a layered handler axum builds a service in
//! every request and clones the route holding the layer twice, so `Handler::layer` costs about
//! 600 instructions more; `route_layer`, for which axum boxes one more route, about 1,000 more.
//! BENCHMARKS.md has the figures.

mod require;
#[cfg(feature = "axum")]
mod scoped;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

pub use self::require::{RequireScopes, RequireScopesResponseFuture, RequireScopesService};
#[cfg(feature = "axum")]
pub use self::scoped::{RequiredScopes, Scoped};

/// Longest scope name accepted.
const MAX_SCOPE_LEN: usize = 128;

/// A permission such as `products:read`: `resource:action`.
///
/// Each half is one or more ASCII letters, digits, `_`, `-` or `.`. Comparison is exact and
/// case-sensitive. Every valid scope is also a valid RFC 6750 `scope-token`, so it can appear in a
/// `WWW-Authenticate` challenge without escaping.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(Cow<'static, str>);

impl Scope {
    /// A scope from a string literal, checked when the program is compiled if used in a `const`.
    ///
    /// # Panics
    ///
    /// If `name` is not `resource:action`. In a `const` item that panic is a compile error.
    pub const fn from_static(name: &'static str) -> Scope {
        if !is_valid_scope(name.as_bytes()) {
            panic!("invalid scope: expected `resource:action` made of ASCII letters, digits, `_`, `-` or `.`");
        }
        Scope(Cow::Borrowed(name))
    }

    /// A scope from a runtime string, such as a stored key's scopes.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Result<Scope, ScopeError> {
        let name = name.into();
        if is_valid_scope(name.as_bytes()) {
            Ok(Scope(name))
        } else {
            Err(ScopeError::Malformed(display_safely(&name)))
        }
    }

    /// The scope's name, such as `"products:read"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the colon, such as `"products"`.
    pub fn resource(&self) -> &str {
        self.0.split_once(':').map_or("", |(resource, _)| resource)
    }

    /// The part after the colon, such as `"read"`.
    pub fn action(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, action)| action)
    }
}

const fn is_valid_part_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
}

const fn is_valid_scope(bytes: &[u8]) -> bool {
    if bytes.is_empty() || bytes.len() > MAX_SCOPE_LEN {
        return false;
    }
    let mut colon = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b':' {
            if colon.is_some() {
                return false;
            }
            colon = Some(i);
        } else if !is_valid_part_byte(b) {
            return false;
        }
        i += 1;
    }
    match colon {
        Some(at) => at > 0 && at + 1 < bytes.len(),
        None => false,
    }
}

/// Quotes a rejected name for an error message, escaping control characters.
fn display_safely(name: &str) -> String {
    let shortened: String = name.chars().take(MAX_SCOPE_LEN).collect();
    format!("{shortened:?}")
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::new(s.to_owned())
    }
}

impl AsRef<str> for Scope {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// The error for a scope name that is malformed or not in a [`ScopeCatalog`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScopeError {
    /// The name is not `resource:action`; the field is the name, quoted and escaped.
    Malformed(String),
    /// The name is well-formed but the catalogue does not define it.
    Unknown {
        /// The unknown name.
        scope: String,
        /// The catalogue's scopes, space-separated.
        known: String,
    },
    /// A requirement was built from no scopes at all.
    EmptyRequirement,
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeError::Malformed(name) => write!(
                f,
                "malformed scope {name}: expected `resource:action` made of ASCII letters, digits, `_`, `-` or `.`"
            ),
            ScopeError::Unknown { scope, known } => {
                write!(f, "unknown scope `{scope}`; this deployment defines: {known}")
            }
            ScopeError::EmptyRequirement => f.write_str("a scope requirement needs at least one scope"),
        }
    }
}

impl std::error::Error for ScopeError {}

/// The scopes a key holds: sorted, without duplicates, cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct ScopeSet(pub(crate) Arc<[Scope]>);

impl ScopeSet {
    /// An empty set.
    pub fn empty() -> Self {
        ScopeSet::default()
    }

    /// Whether the set holds `scope` (exact, case-sensitive).
    pub fn contains(&self, scope: &Scope) -> bool {
        self.contains_str(scope.as_str())
    }

    /// Whether the set holds a scope named `name` (exact, case-sensitive).
    pub fn contains_str(&self, name: &str) -> bool {
        self.0.binary_search_by(|s| s.as_str().cmp(name)).is_ok()
    }

    /// The scopes, in sorted order.
    pub fn iter(&self) -> std::slice::Iter<'_, Scope> {
        self.0.iter()
    }

    /// How many scopes the set holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every scope of `self` is also in `other`.
    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.iter().all(|scope| other.contains(scope))
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut scopes: Vec<Scope> = iter.into_iter().collect();
        scopes.sort_unstable();
        scopes.dedup();
        ScopeSet(scopes.into())
    }
}

impl<'a> IntoIterator for &'a ScopeSet {
    type Item = &'a Scope;
    type IntoIter = std::slice::Iter<'a, Scope>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Space-separated, as in an RFC 6750 `scope` attribute.
impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

/// What a route requires of a key: all of some scopes, or at least one of them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScopeRequirement {
    scopes: ScopeSet,
    mode: Mode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Mode {
    All,
    Any,
}

impl ScopeRequirement {
    /// Requires every one of `scopes`.
    pub fn all(scopes: impl IntoIterator<Item = Scope>) -> Result<Self, ScopeError> {
        Self::build(scopes, Mode::All)
    }

    /// Requires at least one of `scopes`.
    pub fn any(scopes: impl IntoIterator<Item = Scope>) -> Result<Self, ScopeError> {
        Self::build(scopes, Mode::Any)
    }

    fn build(scopes: impl IntoIterator<Item = Scope>, mode: Mode) -> Result<Self, ScopeError> {
        let scopes: ScopeSet = scopes.into_iter().collect();
        if scopes.is_empty() {
            return Err(ScopeError::EmptyRequirement);
        }
        Ok(ScopeRequirement { scopes, mode })
    }

    /// Whether a key holding `granted` meets the requirement.
    pub fn is_satisfied_by(&self, granted: &ScopeSet) -> bool {
        match self.mode {
            Mode::All => self.scopes.is_subset(granted),
            Mode::Any => self.scopes.iter().any(|scope| granted.contains(scope)),
        }
    }

    /// The scopes named by the requirement.
    pub fn scopes(&self) -> &ScopeSet {
        &self.scopes
    }

    /// Whether every scope is required (`true`) or any one suffices (`false`).
    pub fn requires_all(&self) -> bool {
        self.mode == Mode::All
    }

    /// The required scopes that `granted` lacks. For an any-of requirement that is not met, all
    /// of its scopes.
    pub fn missing_from(&self, granted: &ScopeSet) -> Vec<Scope> {
        if self.is_satisfied_by(granted) {
            return Vec::new();
        }
        self.scopes
            .iter()
            .filter(|scope| !granted.contains(scope))
            .cloned()
            .collect()
    }
}

impl fmt::Display for ScopeRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joiner = match self.mode {
            Mode::All => " and ",
            Mode::Any => " or ",
        };
        for (i, scope) in self.scopes.iter().enumerate() {
            if i > 0 {
                f.write_str(joiner)?;
            }
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

/// The scopes a deployment defines, for checking names that arrive as strings.
///
/// See the [module docs](crate::scope) for an example.
#[derive(Clone, Debug, Default)]
pub struct ScopeCatalog {
    scopes: ScopeSet,
}

impl ScopeCatalog {
    /// A catalogue of exactly these scopes.
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Self {
        ScopeCatalog {
            scopes: scopes.into_iter().collect(),
        }
    }

    /// Every scope in the catalogue.
    pub fn scopes(&self) -> &ScopeSet {
        &self.scopes
    }

    /// The catalogue's scope named `name`, or an error naming it and listing the known ones.
    pub fn get(&self, name: &str) -> Result<Scope, ScopeError> {
        if !is_valid_scope(name.as_bytes()) {
            return Err(ScopeError::Malformed(display_safely(name)));
        }
        match self.scopes.0.binary_search_by(|s| s.as_str().cmp(name)) {
            Ok(index) => Ok(self.scopes.0[index].clone()),
            Err(_) => Err(ScopeError::Unknown {
                scope: name.to_owned(),
                known: self.scopes.to_string(),
            }),
        }
    }

    /// Parses every name against the catalogue into a set.
    pub fn parse_set<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<ScopeSet, ScopeError> {
        names.into_iter().map(|name| self.get(name)).collect()
    }

    /// A requirement of all of `names`, each checked against the catalogue.
    pub fn require_all<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<ScopeRequirement, ScopeError> {
        ScopeRequirement::all(self.parse_set(names)?.iter().cloned())
    }

    /// A requirement of any of `names`, each checked against the catalogue.
    pub fn require_any<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<ScopeRequirement, ScopeError> {
        ScopeRequirement::any(self.parse_set(names)?.iter().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> ScopeSet {
        names
            .iter()
            .map(|n| Scope::new(n.to_string()).unwrap())
            .collect()
    }

    #[test]
    fn scope_syntax() {
        for good in [
            "products:read",
            "a:b",
            "Orders:Read",
            "v1.orders:read-all",
            "x_y:z_w",
        ] {
            assert!(Scope::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ":",
            "products",
            "products:",
            ":read",
            "a:b:c",
            "products read",
            "products:réad",
            "a\"b:c",
            "a\\b:c",
            "prod\n:read",
        ] {
            assert!(Scope::new(bad).is_err(), "{bad:?}");
        }
        assert!(Scope::new("a:".to_string() + &"b".repeat(200)).is_err());
        let scope = Scope::from_static("products:read");
        assert_eq!((scope.resource(), scope.action()), ("products", "read"));
    }

    #[test]
    fn malformed_names_are_escaped_in_errors() {
        let err = Scope::new("bad\r\nscope").unwrap_err();
        assert!(err.to_string().contains(r#""bad\r\nscope""#), "{err}");
    }

    #[test]
    fn checks_are_exact_and_case_sensitive() {
        let granted = set(&["products:read"]);
        assert!(granted.contains_str("products:read"));
        assert!(!granted.contains_str("Products:read"));
        assert!(!granted.contains_str("products:rea"));
        assert!(!granted.contains_str("products:read "));
        let write = ScopeRequirement::all([Scope::from_static("products:write")]).unwrap();
        assert!(!write.is_satisfied_by(&set(&["products:read"])));
        let read = ScopeRequirement::all([Scope::from_static("products:read")]).unwrap();
        assert!(!read.is_satisfied_by(&set(&["products:write"])));
    }

    #[test]
    fn all_of_and_any_of() {
        let needs = [Scope::from_static("a:read"), Scope::from_static("b:read")];
        let all = ScopeRequirement::all(needs.clone()).unwrap();
        let any = ScopeRequirement::any(needs).unwrap();
        assert!(all.is_satisfied_by(&set(&["a:read", "b:read", "c:read"])));
        assert!(!all.is_satisfied_by(&set(&["a:read"])));
        assert_eq!(
            all.missing_from(&set(&["a:read"])),
            vec![Scope::from_static("b:read")]
        );
        assert!(any.is_satisfied_by(&set(&["b:read"])));
        assert!(!any.is_satisfied_by(&set(&["c:read"])));
        assert_eq!(any.missing_from(&set(&["c:read"])).len(), 2);
        assert!(any.missing_from(&set(&["a:read"])).is_empty());
        assert_eq!(all.to_string(), "a:read and b:read");
        assert_eq!(any.to_string(), "a:read or b:read");
        assert_eq!(
            ScopeRequirement::all(Vec::new()),
            Err(ScopeError::EmptyRequirement)
        );
    }

    #[test]
    fn sets_are_sorted_and_deduplicated() {
        let scopes = set(&["b:x", "a:x", "b:x"]);
        assert_eq!(scopes.len(), 2);
        assert_eq!(scopes.to_string(), "a:x b:x");
    }

    #[test]
    fn catalogue_rejects_unknown_names() {
        let catalog = ScopeCatalog::new([
            Scope::from_static("products:read"),
            Scope::from_static("orders:read"),
        ]);
        assert_eq!(catalog.get("orders:read").unwrap().as_str(), "orders:read");
        assert_eq!(
            catalog.get("order:read"),
            Err(ScopeError::Unknown {
                scope: "order:read".into(),
                known: "orders:read products:read".into()
            })
        );
        assert!(matches!(catalog.get("nope"), Err(ScopeError::Malformed(_))));
        assert!(catalog
            .require_any(["orders:read", "products:read"])
            .is_ok());
        assert_eq!(
            catalog.require_all(std::iter::empty()),
            Err(ScopeError::EmptyRequirement)
        );
    }
}
