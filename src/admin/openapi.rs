//! The OpenAPI 3.1 description of the admin API, generated from its handlers and types.

use std::sync::OnceLock;

use axum::extract::OriginalUri;
use axum::http::{header, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::server::Server;
use utoipa::OpenApi;

use super::{api, body, problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tower-api-key admin API",
        description = "Manage the API keys of the signed-in account: create (the key's text is \
                       in that response only), list, show, rename, revoke, rotate, and read \
                       usage and the audit trail. Paths are relative to where the application \
                       mounts the router (`servers`). Every call acts for the account the \
                       application's login names; another account's keys answer 404, as \
                       unknown ones do. Writes take JSON and must come from the same origin.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        api::me,
        api::scopes,
        api::list,
        api::create,
        api::show,
        api::rename,
        api::revoke,
        api::rotate,
        api::usage,
        api::key_audit,
        api::owner_audit,
    ),
    components(schemas(
        body::KeyView,
        body::KeyPage,
        body::CreatedKeyView,
        body::RotatedKeyView,
        body::MeView,
        body::GrantView,
        body::ScopesView,
        body::UsageDayView,
        body::UsageView,
        body::AuditEventView,
        body::AuditPage,
        body::CreateKey,
        body::RenameKey,
        body::RotateKey,
        body::RevokeKey,
        problem::Problem,
        problem::FieldError,
    )),
    tags(
        (name = "session", description = "Who the API acts for"),
        (name = "keys", description = "The account's keys"),
        (name = "usage", description = "Requests per key"),
        (name = "audit", description = "Who changed which key, when, from where"),
    )
)]
struct AdminApi;

/// The description as JSON, with no `servers`: the paths as the router defines them.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(AdminApi::openapi).clone()
}

/// Where the router is mounted: the part of the request's path that the nesting router took.
pub(crate) fn mount_prefix(original: &Uri, inner: &Uri) -> String {
    let original = original.path();
    let inner = inner.path();
    let prefix = match original.strip_suffix(inner) {
        Some(prefix) => prefix,
        None if inner == "/" => original,
        None => "",
    };
    prefix.trim_end_matches('/').to_owned()
}

/// `GET /v1/openapi.json`: the description, with the mount point as its server.
pub(crate) async fn serve(OriginalUri(original): OriginalUri, uri: Uri) -> Response {
    let mut document = document();
    let prefix = mount_prefix(&original, &uri);
    document.servers = Some(vec![Server::new(if prefix.is_empty() {
        String::from("/")
    } else {
        prefix
    })]);
    let body = match document.to_pretty_json() {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(error = %err, "admin API: the OpenAPI description did not serialize");
            return super::problem::Problem::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "The OpenAPI description could not be written.",
            )
            .into_response();
        }
    };
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let prefix = |original: &'static str, inner: &'static str| {
            mount_prefix(&Uri::from_static(original), &Uri::from_static(inner))
        };
        assert_eq!(prefix("/settings/api/", "/"), "/settings/api");
        assert_eq!(prefix("/settings/api", "/"), "/settings/api");
        assert_eq!(prefix("/settings/api/v1/keys", "/v1/keys"), "/settings/api");
        assert_eq!(prefix("/v1/keys", "/v1/keys"), "");
        assert_eq!(prefix("/", "/"), "");
    }

    #[test]
    fn the_document_is_openapi_3_1_and_names_every_path() {
        let json = document().to_json().expect("the document serializes");
        let value: serde_json::Value = serde_json::from_str(&json).expect("it is JSON");
        assert_eq!(value["openapi"], "3.1.0");
        for path in [
            "/v1/me",
            "/v1/scopes",
            "/v1/keys",
            "/v1/keys/{id}",
            "/v1/keys/{id}/revoke",
            "/v1/keys/{id}/rotate",
            "/v1/keys/{id}/usage",
            "/v1/keys/{id}/audit",
            "/v1/audit",
        ] {
            assert!(value["paths"][path].is_object(), "{path} is described");
        }
    }
}
