//! The crate's one rule for where public types live: every public type and trait is re-exported
//! at the crate root, so users import from `tower_api_key::` and never guess a module.
//!
//! This reads the sources: each `pub struct`, `pub enum`, `pub trait` and `pub type` under `src/`
//! (the command-line tool aside) must be named in a `pub use` of `src/lib.rs`, except in the
//! files of [`SEALED`].

use std::collections::BTreeSet;
use std::path::Path;

use regex::Regex;

/// Files whose items are `pub` only to seal a public trait: declared in a private module, nobody
/// outside the crate can name them.
const SEALED: &[&str] = &["src/store/sql/backend.rs"];

fn sources(dir: &Path, found: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name == "bin") {
                continue;
            }
            sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs")
            && !SEALED.iter().any(|sealed| path.ends_with(sealed))
        {
            let text = std::fs::read_to_string(&path).unwrap();
            found.push((path.display().to_string(), text));
        }
    }
}

#[test]
fn every_public_type_and_trait_is_at_the_crate_root() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    assert!(files.len() > 20, "the sources were not found");

    let declaration =
        Regex::new(r"(?m)^\s*pub (?:struct|enum|trait|type) ([A-Za-z_][A-Za-z0-9_]*)").unwrap();
    let declared: BTreeSet<(String, String)> = files
        .iter()
        .flat_map(|(path, text)| {
            declaration
                .captures_iter(text)
                .map(move |c| (c[1].to_owned(), path.clone()))
        })
        .collect();
    assert!(
        declared.len() > 40,
        "too few public types found: {declared:?}"
    );

    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let reexport =
        Regex::new(r"(?s)pub use crate::[a-z_:]+(?:::\{([^}]*)\}|::([A-Za-z_][A-Za-z0-9_]*));")
            .unwrap();
    let mut at_root = BTreeSet::new();
    for captures in reexport.captures_iter(&lib) {
        let names = captures.get(1).or(captures.get(2)).unwrap().as_str();
        at_root.extend(
            names
                .split(',')
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty()),
        );
    }

    let missing: Vec<String> = declared
        .iter()
        .filter(|(name, _)| !at_root.contains(name))
        .map(|(name, path)| format!("{name} ({path})"))
        .collect();
    assert!(
        missing.is_empty(),
        "public types not re-exported at the crate root: {missing:?}"
    );
}

/// The names users import, all from the root (a compile-time check of the same rule).
#[allow(unused_imports)]
use tower_api_key::{
    ApiKeyLayer, ApiKeyLayerBuilder, ApiKeyResponseFuture, ApiKeyService, CacheStats, Clock,
    CreatedKey, Credentials, Environment, InsufficientScope, InvalidKey, InvalidPrefix,
    InvalidRequest, Invalidations, KeyDigest, KeyFormat, KeyGenerationError, KeyId, KeyRecord,
    KeyResolver, KeyStore, MalformedKey, ManualClock, MemoryStore, MissingLayer, NewKey, ParsedKey,
    PlaintextKey, Principal, PrincipalRejection, ProblemJson, Refused, Rejection, RequireScopes,
    RequireScopesResponseFuture, RequireScopesService, ResolveError, Responder, Rotation, Scope,
    ScopeCatalog, ScopeError, ScopeRequirement, ScopeSet, StoreError, StoredKey, SystemClock,
    UnknownEnvironment,
};

/// The names of optional features, with them.
#[cfg(feature = "redis")]
#[allow(unused_imports)]
use tower_api_key::RedisBus;
