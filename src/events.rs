//! The tracing events of the layer and the scope checks: one per decision, never a key.
//!
//! Client mistakes are logged at `INFO`, resolver failures at `WARN`, accepted keys at `DEBUG`,
//! all with the target `tower_api_key` and the key's id where one is known.

use crate::principal::Principal;
use crate::rejection::{InvalidKey, Rejection};
use crate::scope::ScopeRequirement;

/// A key was accepted.
pub(crate) fn trace_allowed(principal: &Principal) {
    tracing::debug!(
        target: "tower_api_key",
        key_id = %principal.key_id(),
        environment = %principal.environment(),
        outcome = "allowed",
        "API key accepted"
    );
}

/// One event per refusal: client mistakes at `INFO`, resolver failures at `WARN`.
pub(crate) fn trace_rejected(rejection: &Rejection) {
    // Recorded with `Display`, like the other events, so one key id reads the same everywhere.
    let key_id = rejection.key_id().map(tracing::field::display);
    match rejection {
        Rejection::Unavailable(error) => tracing::warn!(
            target: "tower_api_key",
            outcome = "unavailable",
            error = %error,
            "API key could not be checked"
        ),
        Rejection::InsufficientScope(insufficient) => tracing::info!(
            target: "tower_api_key",
            key_id,
            outcome = "insufficient_scope",
            required = %insufficient.requirement(),
            "API key lacks required scopes"
        ),
        _ => tracing::info!(
            target: "tower_api_key",
            key_id,
            outcome = outcome_name(rejection),
            reason = %rejection,
            "API key refused"
        ),
    }
}

fn outcome_name(rejection: &Rejection) -> &'static str {
    match rejection {
        Rejection::MissingCredentials => "missing",
        Rejection::InvalidRequest(_) => "invalid_request",
        Rejection::InvalidKey(InvalidKey::Malformed(_)) => "malformed",
        Rejection::InvalidKey(InvalidKey::WrongEnvironment(_)) => "wrong_environment",
        Rejection::InvalidKey(InvalidKey::Unknown) => "unknown",
        Rejection::InvalidKey(InvalidKey::Revoked { .. }) => "revoked",
        Rejection::InvalidKey(InvalidKey::Expired { .. }) => "expired",
        Rejection::InsufficientScope(_) => "insufficient_scope",
        Rejection::Unavailable(_) => "unavailable",
        Rejection::NetworkNotAllowed { .. } => "network_not_allowed",
        Rejection::RateLimited(_) => "rate_limited",
    }
}

/// A key met a route's scope requirement.
pub(crate) fn trace_authorized(principal: &Principal, requirement: &ScopeRequirement) {
    tracing::debug!(
        target: "tower_api_key",
        key_id = %principal.key_id(),
        outcome = "authorized",
        required = %requirement,
        "API key has the required scopes"
    );
}
