//! The admin API's error responses: RFC 9457 `application/problem+json`, with the fields at fault
//! on a 422.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::StoreError;

/// An RFC 9457 problem, as the admin API answers every error.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    kind: &'static str,
    /// The status's reason phrase, such as `Unprocessable Content`.
    title: &'static str,
    /// The HTTP status code.
    #[schema(value_type = u16, example = 422)]
    status: u16,
    /// What went wrong, for people.
    detail: String,
    /// On a 422, each field at fault and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
    #[serde(skip)]
    retry_after: bool,
}

/// One field of a request that was refused, and why.
#[derive(Debug, Serialize, ToSchema, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// The field, as the request names it: `name`, `scopes`, `expires_at`, a query parameter.
    pub(crate) field: String,
    /// Why it was refused.
    pub(crate) message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Problem {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: false,
        }
    }

    /// 422, naming the fields at fault.
    pub(crate) fn invalid(errors: Vec<FieldError>) -> Self {
        let mut problem = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The request has invalid fields: see `errors`.",
        );
        problem.errors = errors;
        problem
    }

    /// 404, alike for a key that does not exist and one of another owner.
    pub(crate) fn no_such_key() -> Self {
        Problem::new(StatusCode::NOT_FOUND, "No key of yours has this id.")
    }

    /// 401: the host put no identity on the request.
    pub(crate) fn not_signed_in() -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "Sign in to manage API keys.")
    }

    /// 503, with `Retry-After`.
    pub(crate) fn unavailable() -> Self {
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The key store is unavailable. Nothing was changed; retry later.",
        );
        problem.retry_after = true;
        problem
    }

    /// The answer to a store's error: 422 for what the request got wrong, 404 for an unknown
    /// key, 409 for a key in the wrong state, 501 for what the store does not keep, 503 for an
    /// outage.
    pub(crate) fn from_store(err: StoreError) -> Self {
        let field = |field: &str, err: &StoreError| {
            Problem::invalid(vec![FieldError::new(field, err.to_string())])
        };
        match err {
            StoreError::EmptyName
            | StoreError::NameTooLong
            | StoreError::NameHasControlCharacters => field("name", &err),
            StoreError::InvalidScope(_) => field("scopes", &err),
            StoreError::ExpiryInPast => field("expires_at", &err),
            StoreError::UnknownKey(_) => Problem::no_such_key(),
            StoreError::Revoked(_) | StoreError::Expired(_) | StoreError::AlreadyRotated { .. } => {
                Problem::new(StatusCode::CONFLICT, err.to_string())
            }
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %err, "admin API: the key store failed");
                Problem::unavailable()
            }
            StoreError::AuditNotKept | StoreError::UsageNotKept => {
                Problem::new(StatusCode::NOT_IMPLEMENTED, err.to_string())
            }
            StoreError::InvalidActor => {
                tracing::error!(error = %err, "admin API: the host's actor id was refused");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The signed-in user's id cannot be recorded in the audit trail.",
                )
            }
            other => {
                tracing::error!(error = %other, "admin API: the key store refused the request");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The key store could not do this.",
                )
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // A struct of strings and numbers always serializes; answer the status regardless.
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}
