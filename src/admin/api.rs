//! The admin API's handlers. Each acts for the [`Caller`]'s owner only: a key of another owner
//! answers exactly as a key that does not exist.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::body::{
    AuditEventView, AuditPage, CreateKey, CreatedKeyView, GrantView, KeyPage, KeyView, MeView,
    RenameKey, RevokeKey, RotateKey, RotatedKeyView, ScopesView, UsageDayView, UsageView,
};
use super::guard::{Caller, JsonBody};
use super::problem::{FieldError, Problem};
use crate::key::Environment;
use crate::resolver::KeyId;
use crate::scope::Scope;
use crate::store::{validate_name, AuditQuery, KeyStore, NewKey, StoredKey};
use crate::usage::{Day, KeyOutcome};

/// The keys a page of `GET /v1/keys` holds unless told otherwise, and at most.
pub(crate) const DEFAULT_PAGE: usize = 20;
pub(crate) const MAX_PAGE: usize = 100;
/// Days of usage shown unless told otherwise, and at most.
pub(crate) const DEFAULT_USAGE_DAYS: u32 = 30;
pub(crate) const MAX_USAGE_DAYS: u32 = 366;
/// Audit entries a page holds unless told otherwise, and at most.
pub(crate) const DEFAULT_AUDIT_PAGE: u32 = 50;
pub(crate) const MAX_AUDIT_PAGE: u32 = 500;

/// What the handlers share: the store and what the deployment allows.
pub(crate) struct Admin {
    pub(crate) store: Arc<dyn KeyStore>,
    pub(crate) grants: Vec<(Scope, String)>,
    pub(crate) environments: Vec<Environment>,
    pub(crate) default_grace: Duration,
    pub(crate) max_grace: Duration,
}

type Shared = State<Arc<Admin>>;

impl Admin {
    /// The caller's key `id`: a key of another owner is as unknown as a missing one.
    async fn own_key(&self, caller: &Caller, id: &str) -> Result<StoredKey, Problem> {
        let id = KeyId::from(id);
        let stored = self.store.get(&id).await.map_err(Problem::from_store)?;
        if stored.record.owner != caller.owner {
            return Err(Problem::no_such_key());
        }
        Ok(stored)
    }
}

/// One `tracing` event per change, with the key's id and the actor, never the key.
fn changed(action: &'static str, id: &KeyId, caller: &Caller) {
    tracing::info!(
        target: "tower_api_key::admin",
        action,
        key_id = %id,
        owner = %caller.owner,
        actor = caller.actor.id(),
        address = ?caller.actor.address(),
        "key changed through the admin API"
    );
}

/// No intermediary keeps a copy of a response that holds a key's text.
fn no_store(status: StatusCode, body: impl serde::Serialize) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn limit_param(value: Option<&str>, field: &str, default: u32, max: u32) -> Result<u32, Problem> {
    let Some(value) = value else {
        return Ok(default);
    };
    match value.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(Problem::invalid(vec![FieldError::new(
            field,
            format!("a whole number from 1 to {max}"),
        )])),
    }
}

/// Who the API acts for.
#[utoipa::path(
    get, path = "/v1/me", tag = "session",
    responses(
        (status = 200, description = "The owner and actor the host's login gave", body = MeView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn me(caller: Caller) -> Response {
    no_store(
        StatusCode::OK,
        MeView {
            owner: caller.owner,
            actor: caller.actor.id().to_owned(),
        },
    )
}

/// The scopes and environments a new key may have.
#[utoipa::path(
    get, path = "/v1/scopes", tag = "keys",
    responses(
        (status = 200, description = "What keys may be created with", body = ScopesView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn scopes(State(admin): Shared, _caller: Caller) -> Response {
    let view = ScopesView {
        scopes: admin
            .grants
            .iter()
            .map(|(scope, description)| GrantView {
                name: scope.as_str().to_owned(),
                resource: scope.resource().to_owned(),
                description: description.clone(),
            })
            .collect(),
        environments: admin.environments.iter().map(|e| e.as_str()).collect(),
    };
    no_store(StatusCode::OK, view)
}

/// The query of `GET /v1/keys`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Keys per page, 1 to 100 (20 unless given).
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// The `next_cursor` of the page before.
    cursor: Option<String>,
}

/// The caller's keys, newest first, a page at a time.
#[utoipa::path(
    get, path = "/v1/keys", tag = "keys", params(ListParams),
    responses(
        (status = 200, description = "A page of keys", body = KeyPage),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad `limit` or `cursor`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The key store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list(
    State(admin): Shared,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Response, Problem> {
    let limit = limit_param(
        params.limit.as_deref(),
        "limit",
        DEFAULT_PAGE as u32,
        MAX_PAGE as u32,
    )? as usize;
    let keys = admin
        .store
        .list(Some(&caller.owner))
        .await
        .map_err(Problem::from_store)?;
    let start = match params.cursor.as_deref() {
        None => 0,
        Some(cursor) => match keys.iter().position(|k| k.record.id.as_str() == cursor) {
            Some(at) => at + 1,
            None => {
                return Err(Problem::invalid(vec![FieldError::new(
                    "cursor",
                    "not a cursor of this list (the key it points at may have been deleted): \
                     start again from the first page",
                )]))
            }
        },
    };
    let now = SystemTime::now();
    let page: Vec<KeyView> = keys
        .iter()
        .skip(start)
        .take(limit)
        .map(|stored| KeyView::of(stored, now))
        .collect();
    let next_cursor = if start + page.len() < keys.len() {
        page.last().map(|key| key.id.clone())
    } else {
        None
    };
    Ok(no_store(
        StatusCode::OK,
        KeyPage {
            keys: page,
            next_cursor,
        },
    ))
}

/// Creates a key. Its text is in this response only.
#[utoipa::path(
    post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses(
        (status = 201, description = "The new key, with its text: shown this once", body = CreatedKeyView,
            headers(("cache-control" = String, description = "`no-store`"))),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, each named", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The key store is unavailable; nothing was created", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create(
    State(admin): Shared,
    caller: Caller,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<Response, Problem> {
    let mut errors = Vec::new();
    if let Err(err) = validate_name(&body.name) {
        errors.push(FieldError::new("name", err.to_string()));
    }
    let environment = match body.environment.parse::<Environment>() {
        Ok(environment) if admin.environments.contains(&environment) => Some(environment),
        _ => {
            let allowed: Vec<&str> = admin.environments.iter().map(|e| e.as_str()).collect();
            errors.push(FieldError::new(
                "environment",
                format!("must be one of: {}", allowed.join(", ")),
            ));
            None
        }
    };
    let mut scopes = Vec::new();
    if body.scopes.is_empty() {
        errors.push(FieldError::new("scopes", "grant at least one scope"));
    }
    for (at, name) in body.scopes.iter().enumerate() {
        match admin
            .grants
            .iter()
            .find(|(scope, _)| scope.as_str() == name)
        {
            Some((scope, _)) => scopes.push(scope.clone()),
            None => errors.push(FieldError::new(
                format!("scopes[{at}]"),
                "not a scope keys can be granted here",
            )),
        }
    }
    let now = SystemTime::now();
    let expires_at = match body.expires_at.as_deref() {
        None => None,
        Some(text) => match text
            .parse::<jiff::Timestamp>()
            .ok()
            .and_then(|at| SystemTime::try_from(at).ok())
        {
            Some(at) if at > now => Some(at),
            Some(_) => {
                errors.push(FieldError::new("expires_at", "must be in the future"));
                None
            }
            None => {
                errors.push(FieldError::new(
                    "expires_at",
                    "an RFC 3339 time such as 2027-06-30T23:59:59Z, or null",
                ));
                None
            }
        },
    };
    let (Some(environment), true) = (environment, errors.is_empty()) else {
        return Err(Problem::invalid(errors));
    };
    let mut new = NewKey::new(body.name, environment)
        .owner(caller.owner.clone())
        .scopes(scopes);
    if let Some(at) = expires_at {
        new = new.expires_at(at);
    }
    let created = admin
        .store
        .create_by(new, &caller.actor)
        .await
        .map_err(Problem::from_store)?;
    changed("created", created.id(), &caller);
    let view = CreatedKeyView {
        secret: created.key.expose_secret().to_owned(),
        key: KeyView::of(&created.stored, now),
    };
    Ok(no_store(StatusCode::CREATED, view))
}

/// One of the caller's keys.
#[utoipa::path(
    get, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The key", body = KeyView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No key of the caller's has this id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The key store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn show(
    State(admin): Shared,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let stored = admin.own_key(&caller, &id).await?;
    Ok(no_store(
        StatusCode::OK,
        KeyView::of(&stored, SystemTime::now()),
    ))
}

/// Renames one of the caller's keys.
#[utoipa::path(
    patch, path = "/v1/keys/{id}", tag = "keys", request_body = RenameKey,
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The renamed key", body = KeyView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No key of the caller's has this id", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid name", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The key store is unavailable; nothing was changed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn rename(
    State(admin): Shared,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RenameKey>,
) -> Result<Response, Problem> {
    let stored = admin.own_key(&caller, &id).await?;
    if let Err(err) = validate_name(&body.name) {
        return Err(Problem::invalid(vec![FieldError::new(
            "name",
            err.to_string(),
        )]));
    }
    let renamed = admin
        .store
        .rename_by(&stored.record.id, &body.name, &caller.actor)
        .await
        .map_err(Problem::from_store)?;
    changed("renamed", &stored.record.id, &caller);
    Ok(no_store(
        StatusCode::OK,
        KeyView::of(&renamed, SystemTime::now()),
    ))
}

/// Revokes one of the caller's keys: every request with it is refused from the next one on.
#[utoipa::path(
    post, path = "/v1/keys/{id}/revoke", tag = "keys", request_body = RevokeKey,
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "The revoked key (revoking it again changes nothing)", body = KeyView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No key of the caller's has this id", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The key store is unavailable; nothing was changed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn revoke(
    State(admin): Shared,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(RevokeKey {}): JsonBody<RevokeKey>,
) -> Result<Response, Problem> {
    let stored = admin.own_key(&caller, &id).await?;
    let revoked = admin
        .store
        .revoke_by(&stored.record.id, &caller.actor)
        .await
        .map_err(Problem::from_store)?;
    changed("revoked", &stored.record.id, &caller);
    Ok(no_store(
        StatusCode::OK,
        KeyView::of(&revoked, SystemTime::now()),
    ))
}

/// Replaces one of the caller's keys with a new one; the old key keeps working for the grace
/// period. The new key's text is in this response only.
#[utoipa::path(
    post, path = "/v1/keys/{id}/rotate", tag = "keys", request_body = RotateKey,
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 201, description = "The replacement, with its text: shown this once", body = RotatedKeyView,
            headers(("cache-control" = String, description = "`no-store`"))),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A cross-site request", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No key of the caller's has this id", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key is revoked, expired or rotated already", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A grace period out of range", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The key store is unavailable; nothing was changed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn rotate(
    State(admin): Shared,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RotateKey>,
) -> Result<Response, Problem> {
    let grace = match body.grace_seconds {
        None => admin.default_grace,
        Some(seconds) if Duration::from_secs(seconds) <= admin.max_grace => {
            Duration::from_secs(seconds)
        }
        Some(_) => {
            return Err(Problem::invalid(vec![FieldError::new(
                "grace_seconds",
                format!("at most {} seconds", admin.max_grace.as_secs()),
            )]))
        }
    };
    let stored = admin.own_key(&caller, &id).await?;
    let rotation = admin
        .store
        .rotate_by(&stored.record.id, grace, &caller.actor)
        .await
        .map_err(Problem::from_store)?;
    changed("rotated", &stored.record.id, &caller);
    let now = SystemTime::now();
    let view = RotatedKeyView {
        secret: rotation.new.key.expose_secret().to_owned(),
        key: KeyView::of(&rotation.new.stored, now),
        replaced: KeyView::of(&rotation.old, now),
    };
    Ok(no_store(StatusCode::CREATED, view))
}

/// The query of `GET /v1/keys/{id}/usage`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageParams {
    /// Days to show, today (UTC) included: 1 to 366 (30 unless given).
    #[param(value_type = Option<u32>)]
    days: Option<String>,
}

/// One of the caller's keys' requests per day, by outcome.
#[utoipa::path(
    get, path = "/v1/keys/{id}/usage", tag = "usage",
    params(("id" = String, Path, description = "The key's id"), UsageParams),
    responses(
        (status = 200, description = "Every day of the range, oldest first", body = UsageView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No key of the caller's has this id", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad `days`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The key store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn usage(
    State(admin): Shared,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<UsageParams>,
) -> Result<Response, Problem> {
    let days = limit_param(
        params.days.as_deref(),
        "days",
        DEFAULT_USAGE_DAYS,
        MAX_USAGE_DAYS,
    )?;
    let stored = admin.own_key(&caller, &id).await?;
    let to = Day::today();
    // `days` is at most 366, so it fits an i32.
    let from = to.add_days(1 - days as i32);
    let series = admin
        .store
        .usage(&stored.record.id, from, to)
        .await
        .map_err(Problem::from_store)?;
    let view = UsageView {
        key_id: stored.record.id.as_str().to_owned(),
        from: from.to_string(),
        to: to.to_string(),
        outcomes: KeyOutcome::ALL.iter().map(|o| o.as_str()).collect(),
        days: series.iter().map(UsageDayView::of).collect(),
    };
    Ok(no_store(StatusCode::OK, view))
}

/// The query of the audit trail's pages.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    /// Entries per page, 1 to 500 (50 unless given).
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// The `next_before` of the page before.
    #[param(value_type = Option<u64>)]
    before: Option<String>,
}

impl AuditParams {
    fn query(&self, mut query: AuditQuery) -> Result<(AuditQuery, u32), Problem> {
        let limit = limit_param(
            self.limit.as_deref(),
            "limit",
            DEFAULT_AUDIT_PAGE,
            MAX_AUDIT_PAGE,
        )?;
        if let Some(before) = self.before.as_deref() {
            let before = before.parse::<u64>().map_err(|_| {
                Problem::invalid(vec![FieldError::new(
                    "before",
                    "the `next_before` of a page: a whole number",
                )])
            })?;
            query = query.before(before);
        }
        Ok((query.limit(limit), limit))
    }
}

async fn audit_page(admin: &Admin, query: AuditQuery, limit: u32) -> Result<Response, Problem> {
    let events = admin
        .store
        .audit(&query)
        .await
        .map_err(Problem::from_store)?;
    let next_before = if events.len() == limit as usize {
        events.last().map(|event| event.seq)
    } else {
        None
    };
    let page = AuditPage {
        events: events.iter().map(AuditEventView::of).collect(),
        next_before,
    };
    Ok(no_store(StatusCode::OK, page))
}

/// The audit trail of one of the caller's keys, newest first.
#[utoipa::path(
    get, path = "/v1/keys/{id}/audit", tag = "audit",
    params(("id" = String, Path, description = "The key's id"), AuditParams),
    responses(
        (status = 200, description = "A page of the key's audit trail", body = AuditPage),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No key of the caller's has this id", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad `limit` or `before`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The key store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn key_audit(
    State(admin): Shared,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<AuditParams>,
) -> Result<Response, Problem> {
    let (query, limit) = params.query(AuditQuery::all().owner(caller.owner.clone()))?;
    let stored = admin.own_key(&caller, &id).await?;
    audit_page(&admin, query.key(stored.record.id), limit).await
}

/// The audit trail of all the caller's keys, deleted ones included, newest first.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit", params(AuditParams),
    responses(
        (status = 200, description = "A page of the owner's audit trail", body = AuditPage),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad `limit` or `before`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The key store is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn owner_audit(
    State(admin): Shared,
    caller: Caller,
    Query(params): Query<AuditParams>,
) -> Result<Response, Problem> {
    let (query, limit) = params.query(AuditQuery::all().owner(caller.owner.clone()))?;
    audit_page(&admin, query, limit).await
}
