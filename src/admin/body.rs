//! What the admin API reads and writes: request bodies and the JSON views of keys, usage and the
//! audit trail. The OpenAPI description is generated from these types.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::{AuditEvent, StoredKey};
use crate::usage::{DailyUsage, KeyOutcome};

/// A time as RFC 3339 in UTC, such as `2026-12-02T09:30:00Z`.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    match jiff::Timestamp::try_from(at) {
        Ok(at) => at.to_string(),
        // Outside jiff's range (years -9999 to 9999): no store writes such a time.
        Err(_) => String::from("9999-12-31T23:59:59Z"),
    }
}

/// A key as the admin API shows it. Never its text: `hint` is what identifies it to people.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeyView {
    /// The key's id, such as `key_4f9XbQ2m8LpZ0aTy`.
    #[schema(example = "key_4f9XbQ2m8LpZ0aTy")]
    pub(crate) id: String,
    /// Its name, such as `Webhook Server`.
    #[schema(example = "Webhook Server")]
    pub(crate) name: String,
    /// The start and the last four characters of the key: `om_live_…x7Qa`.
    #[schema(example = "om_live_…x7Qa")]
    pub(crate) hint: String,
    /// `live` (production) or `test` (sandbox).
    #[schema(example = "live")]
    pub(crate) environment: &'static str,
    /// The scopes the key grants.
    #[schema(example = json!(["products:read", "inventory:write"]))]
    pub(crate) scopes: Vec<String>,
    /// `active`; `rotated` (replaced, working until its grace period ends); `revoked`;
    /// `expired`.
    #[schema(example = "active")]
    pub(crate) status: &'static str,
    /// When it was created (RFC 3339, UTC).
    pub(crate) created_at: String,
    /// When it stops working, if it does.
    pub(crate) expires_at: Option<String>,
    /// When it was last used, if it was (written every few seconds, at most once a minute).
    pub(crate) last_used_at: Option<String>,
    /// When it was revoked, if it was.
    pub(crate) revoked_at: Option<String>,
    /// The key that replaced it in a rotation.
    pub(crate) replaced_by: Option<String>,
    /// The key's own rate limit, such as `100/s burst 20`, if it has one.
    #[schema(example = "100/s burst 20")]
    pub(crate) rate_limit: Option<String>,
    /// The networks the key may be used from, if it is held to some.
    #[schema(example = json!(["203.0.113.0/24", "2001:db8::/32"]))]
    pub(crate) allowed_networks: Option<Vec<String>>,
}

impl KeyView {
    pub(crate) fn of(stored: &StoredKey, now: SystemTime) -> Self {
        let record = &stored.record;
        let status = if record.revoked_at.is_some() {
            "revoked"
        } else if record.is_expired_at(now) {
            "expired"
        } else if stored.replaced_by.is_some() {
            "rotated"
        } else {
            "active"
        };
        KeyView {
            id: record.id.as_str().to_owned(),
            name: record.name.clone(),
            hint: stored.hint.clone(),
            environment: record.environment.as_str(),
            scopes: record
                .scopes
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            status,
            created_at: rfc3339(stored.created_at),
            expires_at: record.expires_at.map(rfc3339),
            last_used_at: stored.last_used_at.map(rfc3339),
            revoked_at: record.revoked_at.map(rfc3339),
            replaced_by: stored.replaced_by.as_ref().map(|id| id.as_str().to_owned()),
            rate_limit: record.limits.rate.map(|rate| rate.to_string()),
            allowed_networks: record.limits.networks.as_ref().map(|networks| {
                networks
                    .networks()
                    .iter()
                    .map(|network| network.to_string())
                    .collect()
            }),
        }
    }
}

/// A page of keys, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KeyPage {
    /// The keys on this page.
    pub(crate) keys: Vec<KeyView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub(crate) next_cursor: Option<String>,
}

/// A new key, with its text. This is the only response that will ever hold it.
// No `Debug`: it would print the key.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedKeyView {
    /// The key itself, such as `om_live_…`. Show it now: it cannot be shown again.
    pub(crate) secret: String,
    /// The new key.
    pub(crate) key: KeyView,
}

/// A rotation: the replacement with its text (shown this once), and the old key.
// No `Debug`: it would print the key.
#[derive(Serialize, ToSchema)]
pub(crate) struct RotatedKeyView {
    /// The replacement's text. Show it now: it cannot be shown again.
    pub(crate) secret: String,
    /// The replacement.
    pub(crate) key: KeyView,
    /// The old key, now `rotated`: it works until its new `expires_at`.
    pub(crate) replaced: KeyView,
}

/// Who the admin API acts for: what the host application's login said.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MeView {
    /// The account whose keys are managed.
    pub(crate) owner: String,
    /// Who is acting, as the audit trail records it.
    pub(crate) actor: String,
}

/// A scope this deployment lets keys be created with.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GrantView {
    /// The scope, such as `products:read`.
    pub(crate) name: String,
    /// Its resource, such as `products`: the page groups scopes by it.
    pub(crate) resource: String,
    /// What it grants, in the platform's words.
    pub(crate) description: String,
}

/// What keys may be created with here.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ScopesView {
    /// The scopes a new key may be granted, in the configured order.
    pub(crate) scopes: Vec<GrantView>,
    /// The environments a new key may be for.
    #[schema(example = json!(["live", "test"]))]
    pub(crate) environments: Vec<&'static str>,
}

/// One day of a key's requests, by outcome.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UsageDayView {
    /// The UTC day, `YYYY-MM-DD`.
    #[schema(example = "2026-12-01")]
    pub(crate) day: String,
    /// Requests let through.
    pub(crate) allowed: u64,
    /// Requests refused for missing scopes (403).
    pub(crate) insufficient_scope: u64,
    /// Requests refused because the key was revoked (401).
    pub(crate) revoked: u64,
    /// Requests refused because the key was expired (401).
    pub(crate) expired: u64,
    /// Requests refused by a rate limit (429).
    pub(crate) rate_limited: u64,
}

impl UsageDayView {
    pub(crate) fn of(usage: &DailyUsage) -> Self {
        let counts = &usage.counts;
        UsageDayView {
            day: usage.day.to_string(),
            allowed: counts.get(KeyOutcome::Allowed),
            insufficient_scope: counts.get(KeyOutcome::InsufficientScope),
            revoked: counts.get(KeyOutcome::Revoked),
            expired: counts.get(KeyOutcome::Expired),
            rate_limited: counts.get(KeyOutcome::RateLimited),
        }
    }
}

/// A key's requests per day, every day of the range, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UsageView {
    /// The key.
    pub(crate) key_id: String,
    /// The first day, `YYYY-MM-DD`.
    pub(crate) from: String,
    /// The last day (today, UTC).
    pub(crate) to: String,
    /// The outcomes each day counts, in order.
    #[schema(example = json!(["allowed", "insufficient_scope", "revoked", "expired", "rate_limited"]))]
    pub(crate) outcomes: Vec<&'static str>,
    /// The days.
    pub(crate) days: Vec<UsageDayView>,
}

/// An entry of the audit trail. Never a key's text.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditEventView {
    /// The entry's number: later entries have larger numbers.
    pub(crate) seq: u64,
    /// When (RFC 3339, UTC).
    pub(crate) at: String,
    /// `created`, `renamed`, `limits_changed`, `rotated`, `revoked` or `deleted`.
    #[schema(example = "created")]
    pub(crate) action: &'static str,
    /// The key.
    pub(crate) key_id: String,
    /// The key's name after the change.
    pub(crate) key_name: String,
    /// Who did it, as the host application named them.
    pub(crate) actor: String,
    /// From which address, if known.
    pub(crate) address: Option<String>,
    /// The other key of a rotation.
    pub(crate) related_key: Option<String>,
}

impl AuditEventView {
    pub(crate) fn of(event: &AuditEvent) -> Self {
        AuditEventView {
            seq: event.seq,
            at: rfc3339(event.at),
            action: event.action.as_str(),
            key_id: event.key_id.as_str().to_owned(),
            key_name: event.key_name.clone(),
            actor: event.actor.clone(),
            address: event.address.map(|address| address.to_string()),
            related_key: event.related_key.as_ref().map(|id| id.as_str().to_owned()),
        }
    }
}

/// A page of the audit trail, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditPage {
    /// The entries.
    pub(crate) events: Vec<AuditEventView>,
    /// Pass as `before` for the next page; `null` on the last one.
    pub(crate) next_before: Option<u64>,
}

/// A key to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    /// A name that says where the key is used: `Production`, `Webhook Server`. 1 to 100
    /// characters.
    #[schema(example = "Webhook Server")]
    pub(crate) name: String,
    /// `live` or `test`, among those the deployment allows.
    #[schema(example = "live")]
    pub(crate) environment: String,
    /// The scopes to grant, among those the deployment allows; at least one. Grant only what
    /// the integration needs.
    #[schema(example = json!(["orders:read"]))]
    pub(crate) scopes: Vec<String>,
    /// When the key stops working (RFC 3339, in the future), or `null` for never.
    #[serde(default)]
    #[schema(example = "2027-06-30T23:59:59Z")]
    pub(crate) expires_at: Option<String>,
}

/// A new name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenameKey {
    /// The new name, 1 to 100 characters.
    #[schema(example = "Staging")]
    pub(crate) name: String,
}

/// How long the old key keeps working after a rotation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateKey {
    /// Seconds the old key keeps working (never past its own expiry); the deployment's default
    /// (a day, unless configured) when absent.
    #[serde(default)]
    #[schema(example = 86400)]
    pub(crate) grace_seconds: Option<u64>,
}

/// A revocation: an empty object.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeKey {}
