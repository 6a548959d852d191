use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Extensions, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{Scope, ScopeRequirement};
use crate::events::{trace_authorized, trace_rejected};
use crate::principal::{Anonymous, Principal, PrincipalRejection};
use crate::rejection::{InsufficientScope, MissingLayer, Refused, Rejection};

/// Requires scopes of the request's [`Principal`]; answers `403 insufficient_scope` otherwise.
///
/// Put it inside an [`ApiKeyLayer`](crate::ApiKeyLayer): with `route_layer` on a route or
/// `layer` on a handler. Behind a layer in optional mode, an anonymous request gets the layer's
/// `401`. With no `ApiKeyLayer` outside it at all, every request gets `500`, since that is a
/// mistake in the program, and nothing gets through. See the [module docs](crate::scope).
///
/// Each distinct requirement is kept once for the life of the process, like a `static`: axum
/// clones a route's layers several times per request, and a clone is then a pointer copy.
#[derive(Clone, Debug)]
#[must_use]
pub struct RequireScopes {
    requirement: &'static ScopeRequirement,
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
            requirement: intern(requirement),
        }
    }

    /// What this layer requires.
    pub fn requirement(&self) -> &ScopeRequirement {
        self.requirement
    }
}

/// The one `'static` copy of `requirement`. A program names a handful of requirements, each
/// kept once however many routers are built with it; routes then clone a pointer, where an
/// `Arc` took two atomic operations per clone, four clones per request behind `Handler::layer`.
fn intern(requirement: ScopeRequirement) -> &'static ScopeRequirement {
    static INTERNED: Mutex<Option<HashSet<&'static ScopeRequirement>>> = Mutex::new(None);
    // An insertion completes or does not happen, so even a poisoned lock guards a whole set.
    let mut interned = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    let interned = interned.get_or_insert_with(HashSet::new);
    if let Some(&kept) = interned.get(&requirement) {
        return kept;
    }
    let kept: &'static ScopeRequirement = Box::leak(Box::new(requirement));
    interned.insert(kept);
    kept
}

impl<S> Layer<S> for RequireScopes {
    type Service = RequireScopesService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopesService {
            inner,
            requirement: self.requirement,
        }
    }
}

/// The service made by [`RequireScopes`].
#[derive(Clone)]
pub struct RequireScopesService<S> {
    inner: S,
    requirement: &'static ScopeRequirement,
}

impl<S: fmt::Debug> fmt::Debug for RequireScopesService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireScopesService")
            .field("inner", &self.inner)
            .field("requirement", &self.requirement)
            .finish()
    }
}

impl<S> RequireScopesService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, to change.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// What this service requires.
    pub fn requirement(&self) -> &ScopeRequirement {
        self.requirement
    }
}

/// Checks `requirement` against the request's principal: the principal when it holds;
/// otherwise `403` (the layer's `401` for an anonymous request, or `500` when no `ApiKeyLayer`
/// ran).
pub(crate) fn authorize<'a>(
    extensions: &'a Extensions,
    requirement: &ScopeRequirement,
) -> Result<&'a Principal, PrincipalRejection> {
    let (rejection, responses) = match extensions.get::<Principal>() {
        Some(principal) if principal.satisfies(requirement) => {
            trace_authorized(principal, requirement);
            return Ok(principal);
        }
        Some(principal) => (
            Rejection::InsufficientScope(InsufficientScope::new(
                principal.key_id().clone(),
                requirement.clone(),
                principal.scopes(),
            )),
            principal.responses(),
        ),
        None => match extensions.get::<Anonymous>() {
            Some(Anonymous(responses)) => (Rejection::MissingCredentials, responses),
            None => return Err(PrincipalRejection::MissingLayer(MissingLayer)),
        },
    };
    trace_rejected(&rejection);
    Err(PrincipalRejection::Refused(Refused::new(
        rejection,
        responses.clone(),
    )))
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireScopesService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = RequireScopesResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match authorize(request.extensions(), self.requirement) {
            Ok(_) => RequireScopesResponseFuture::inner(self.inner.call(request)),
            Err(rejection) => RequireScopesResponseFuture::ready(rejection.into_http_response()),
        }
    }
}

pin_project! {
    /// The response future of [`RequireScopesService`].
    pub struct RequireScopesResponseFuture<F, B> {
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

impl<F, B> RequireScopesResponseFuture<F, B> {
    fn inner(future: F) -> Self {
        RequireScopesResponseFuture {
            state: State::Inner { future },
        }
    }

    fn ready(response: Response<B>) -> Self {
        RequireScopesResponseFuture {
            state: State::Ready {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for RequireScopesResponseFuture<F, B>
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
                    .expect("RequireScopesResponseFuture polled after completion")))
            }
        }
    }
}

impl<F, B> fmt::Debug for RequireScopesResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireScopesResponseFuture")
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: Scope = Scope::from_static("products:read");
    const WRITE: Scope = Scope::from_static("products:write");

    #[test]
    fn a_requirement_is_kept_once_however_often_it_is_built() {
        let first = RequireScopes::all([READ, WRITE]);
        let again = RequireScopes::all([WRITE, READ]);
        assert!(std::ptr::eq(first.requirement(), again.requirement()));
        let any = RequireScopes::any([READ, WRITE]);
        assert!(!std::ptr::eq(first.requirement(), any.requirement()));
        assert_eq!(
            *first.requirement(),
            ScopeRequirement::all([READ, WRITE]).unwrap()
        );
        assert!(!any.requirement().requires_all());
    }
}
