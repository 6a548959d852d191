//! The decision the layer makes for each request, kept apart from the tower plumbing.

use std::sync::Arc;

use http::HeaderMap;

use crate::cache::{KeyCache, Lookup, Outcome, PendingLookup};
use crate::clock::Clock;
use crate::credentials::{self, Credentials};
use crate::events::{trace_allowed, trace_rejected};
use crate::key::{Environment, KeyFormat, MalformedKey};
use crate::principal::{Anonymous, Principal};
use crate::rejection::{InvalidKey, InvalidRequest, Rejection, Responses};

/// Everything an [`ApiKeyLayer`](super::ApiKeyLayer) shares with its services.
pub(crate) struct Authenticator {
    pub(crate) format: KeyFormat,
    pub(crate) accepts_live: bool,
    pub(crate) accepts_test: bool,
    pub(crate) optional: bool,
    pub(crate) cache: Arc<KeyCache>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) responses: Arc<Responses>,
    pub(crate) anonymous: Anonymous,
}

/// What to do with a request.
pub(crate) enum Decision {
    Allow(Principal),
    Anonymous,
    Reject(Rejection),
    /// Wait for the resolver, then call [`Authenticator::verdict`].
    Pending(PendingLookup, Environment),
}

impl Authenticator {
    pub(crate) fn decide(&self, headers: &mut HeaderMap) -> Decision {
        let token = match credentials::bearer_for_layer(headers) {
            Credentials::Bearer(token) => token,
            Credentials::Missing | Credentials::OtherScheme if self.optional => {
                return Decision::Anonymous
            }
            Credentials::Missing | Credentials::OtherScheme => {
                return Decision::Reject(Rejection::MissingCredentials)
            }
            Credentials::Malformed(reason) => {
                return Decision::Reject(Rejection::InvalidRequest(reason))
            }
        };
        let key = match self.format.parse_bytes(token) {
            Ok(key) => key,
            // Only now, off the fast path: a token that is not even RFC 6750 syntax is a
            // malformed request rather than a bad key. (A token that failed only the checksum
            // passed the alphabet check, so it is one.)
            Err(malformed)
                if malformed != MalformedKey::Checksum && !credentials::is_b64token(token) =>
            {
                return Decision::Reject(Rejection::InvalidRequest(InvalidRequest::MalformedToken))
            }
            Err(malformed) => {
                return Decision::Reject(Rejection::InvalidKey(InvalidKey::Malformed(malformed)))
            }
        };
        let environment = key.environment();
        let accepted = match environment {
            Environment::Live => self.accepts_live,
            Environment::Test => self.accepts_test,
        };
        if !accepted {
            return Decision::Reject(Rejection::InvalidKey(InvalidKey::WrongEnvironment(
                environment,
            )));
        }
        match self.cache.lookup(key.digest()) {
            Ok(found) => match self.check(found, environment) {
                Ok(principal) => Decision::Allow(principal),
                Err(rejection) => Decision::Reject(rejection),
            },
            Err(pending) => Decision::Pending(pending, environment),
        }
    }

    /// The decision once a resolver call has answered.
    pub(crate) fn verdict(
        &self,
        outcome: Outcome,
        environment: Environment,
    ) -> Result<Principal, Rejection> {
        let result = outcome
            .map_err(Rejection::Unavailable)
            .and_then(|found| self.check(found, environment));
        match &result {
            Ok(principal) => trace_allowed(principal),
            Err(rejection) => trace_rejected(rejection),
        }
        result
    }

    /// Revocation and expiry, checked on every request whether the answer came from the cache or
    /// not; the principal is built only for a key that passes.
    fn check(&self, found: Lookup, environment: Environment) -> Result<Principal, Rejection> {
        let key = match found {
            Lookup::Found(key) => key,
            Lookup::Unknown => return Err(Rejection::InvalidKey(InvalidKey::Unknown)),
        };
        if key.environment != environment {
            // The record disagrees with the key text: a store bug or a forged row. Refuse.
            return Err(Rejection::InvalidKey(InvalidKey::Unknown));
        }
        if key.revoked {
            return Err(Rejection::InvalidKey(InvalidKey::Revoked {
                key_id: key.id.clone(),
            }));
        }
        if let Some(expires_at) = key.expires_at {
            if expires_at <= self.clock.now() {
                return Err(Rejection::InvalidKey(InvalidKey::Expired {
                    key_id: key.id.clone(),
                }));
            }
        }
        Ok(Principal::new(key, self.responses.clone()))
    }
}

impl Decision {
    /// Emits the decision's trace event; a pending one is traced by [`Authenticator::verdict`].
    pub(crate) fn trace(&self) {
        match self {
            Decision::Allow(principal) => trace_allowed(principal),
            Decision::Anonymous => tracing::debug!(
                target: "tower_api_key",
                outcome = "anonymous",
                "request without credentials let through"
            ),
            Decision::Reject(rejection) => trace_rejected(rejection),
            Decision::Pending(..) => {}
        }
    }
}
