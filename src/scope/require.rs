use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Extensions, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{Scope, ScopeRequirement};
use crate::layer::trace_rejected;
use crate::principal::{Anonymous, Principal};
use crate::rejection::{InsufficientScope, Rejection};

/// Requires scopes of the request's [`Principal`]; answers `403 insufficient_scope` otherwise.
///
/// Put it inside an [`ApiKeyLayer`](crate::ApiKeyLayer): with `route_layer` on a route or
/// `layer` on a handler. Behind a layer in optional mode, an anonymous request gets the layer's
/// `401`. With no `ApiKeyLayer` outside it at all, every request gets `500`, since that is a
/// mistake in the program, and nothing gets through. See the [module docs](crate::scope).
#[derive(Clone, Debug)]
#[must_use]
pub struct RequireScopes {
    requirement: Arc<ScopeRequirement>,
}

impl RequireScopes {
    /// Requires every one of `scopes`.
    ///
    /// # Panics
    ///
    /// If `scopes` is empty: a requirement of nothing is a mistake, reported when the router is
    /// built.
    pub fn all(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self::new(
            ScopeRequirement::all(scopes).expect("RequireScopes::all needs at least one scope"),
        )
    }

    /// Requires at least one of `scopes`.
    ///
    /// # Panics
    ///
    /// If `scopes` is empty.
    pub fn any(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self::new(
            ScopeRequirement::any(scopes).expect("RequireScopes::any needs at least one scope"),
        )
    }

    /// Requires `requirement`, for example one built by a
    /// [`ScopeCatalog`](super::ScopeCatalog).
    pub fn new(requirement: ScopeRequirement) -> Self {
        RequireScopes {
            requirement: Arc::new(requirement),
        }
    }

    /// What this layer requires.
    pub fn requirement(&self) -> &ScopeRequirement {
        &self.requirement
    }
}

impl<S> Layer<S> for RequireScopes {
    type Service = RequireScopesService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopesService {
            inner,
            requirement: self.requirement.clone(),
        }
    }
}

/// The service made by [`RequireScopes`].
#[derive(Clone)]
pub struct RequireScopesService<S> {
    inner: S,
    requirement: Arc<ScopeRequirement>,
}

impl<S: fmt::Debug> fmt::Debug for RequireScopesService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireScopesService")
            .field("inner", &self.inner)
            .field("requirement", &self.requirement)
            .finish()
    }
}

const MISSING_LAYER: &str = "a scope requirement found no Principal: is \
    `tower_api_key::ApiKeyLayer` applied outside this route?";

/// Checks `requirement` against the request's principal: `Ok` with the principal when it holds,
/// otherwise the response to send (`403`, the layer's `401` for an anonymous request, or `500`
/// when no `ApiKeyLayer` ran).
pub(crate) fn authorize<'a, B: From<Bytes>>(
    extensions: &'a Extensions,
    requirement: &ScopeRequirement,
) -> Result<&'a Principal, Response<B>> {
    let rejection = match extensions.get::<Principal>() {
        Some(principal) if principal.satisfies(requirement) => {
            tracing::debug!(
                target: "tower_api_key",
                key_id = %principal.key_id(),
                outcome = "authorized",
                required = %requirement,
                "API key has the required scopes"
            );
            return Ok(principal);
        }
        Some(principal) => {
            let rejection = Rejection::InsufficientScope(InsufficientScope {
                key_id: principal.key_id().clone(),
                missing: requirement.missing_from(principal.scopes()),
                requirement: requirement.clone(),
            });
            trace_rejected(&rejection);
            return Err(principal.responses().respond(rejection));
        }
        None => Rejection::MissingCredentials,
    };
    match extensions.get::<Anonymous>() {
        Some(Anonymous(responses)) => {
            trace_rejected(&rejection);
            Err(responses.respond(rejection))
        }
        None => {
            tracing::error!(target: "tower_api_key", "{MISSING_LAYER}");
            let mut response = Response::new(B::from(Bytes::from_static(MISSING_LAYER.as_bytes())));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            Err(response)
        }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireScopesService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match authorize(request.extensions(), &self.requirement) {
            Ok(_) => ResponseFuture::inner(self.inner.call(request)),
            Err(response) => ResponseFuture::ready(response),
        }
    }
}

pin_project! {
    /// The response future of [`RequireScopesService`].
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner { #[pin] future: F },
        Ready { response: Option<Response<B>> },
    }
}

impl<F, B> ResponseFuture<F, B> {
    fn inner(future: F) -> Self {
        ResponseFuture {
            state: State::Inner { future },
        }
    }

    fn ready(response: Response<B>) -> Self {
        ResponseFuture {
            state: State::Ready {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future.poll(cx),
            StateProj::Ready { response } => {
                // Taken once: a future is not polled again after it returned `Ready`.
                Poll::Ready(Ok(response
                    .take()
                    .expect("ResponseFuture polled after completion")))
            }
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
