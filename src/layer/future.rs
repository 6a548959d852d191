use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::authenticator::Authenticator;
use crate::cache::{CachedKey, PendingLookup};
use crate::key::Environment;
use crate::rejection::Rejection;
use crate::usage::KeyOutcome;

pin_project! {
    /// The response future of [`ApiKeyService`](super::ApiKeyService).
    pub struct ApiKeyResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
        // The request let through with a key, counted when its response is ready.
        uncounted: Uncounted,
    }
}

/// A request let through with a key, not counted yet: counted as `allowed`, or as
/// `insufficient_scope` when a scope check further in refused it, once its response is ready;
/// as `allowed` if the response never comes (the future dropped: the client left, or the
/// service panicked), since the key was let through.
struct Uncounted(Option<Arc<CachedKey>>);

impl Uncounted {
    /// Counts the request whose response has the extensions `extensions`.
    fn count(&mut self, extensions: &http::Extensions) {
        if let Some(key) = self.0.take() {
            // Every refusal carries its `Rejection`; a scope check's is `InsufficientScope`.
            let outcome = match extensions.get::<Rejection>() {
                Some(Rejection::InsufficientScope(_)) => KeyOutcome::InsufficientScope,
                _ => KeyOutcome::Allowed,
            };
            key.usage.tally().count_key(&key, outcome, key.environment);
        }
    }
}

impl Drop for Uncounted {
    fn drop(&mut self) {
        if let Some(key) = self.0.take() {
            key.usage
                .tally()
                .count_key(&key, KeyOutcome::Allowed, key.environment);
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        /// Waiting for the resolver, with the request and a ready inner service.
        Pending {
            pending: PendingLookup,
            environment: Environment,
            request: Option<Request<ReqBody>>,
            inner: S,
            authenticator: Arc<Authenticator>,
        },
        /// The inner service is handling the request.
        Inner {
            #[pin]
            future: S::Future,
        },
        /// The request was refused; the response is ready.
        Rejected {
            response: Option<S::Response>,
        },
    }
}

impl<S, ReqBody> ApiKeyResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    /// The inner service's future for a request without a key (an optional layer).
    pub(crate) fn inner(future: S::Future) -> Self {
        ApiKeyResponseFuture {
            state: State::Inner { future },
            uncounted: Uncounted(None),
        }
    }

    /// The inner service's future for a request let through with `key`.
    pub(crate) fn allowed(future: S::Future, key: Arc<CachedKey>) -> Self {
        ApiKeyResponseFuture {
            state: State::Inner { future },
            uncounted: Uncounted(Some(key)),
        }
    }

    pub(crate) fn rejected(response: S::Response) -> Self {
        ApiKeyResponseFuture {
            state: State::Rejected {
                response: Some(response),
            },
            uncounted: Uncounted(None),
        }
    }

    pub(crate) fn pending(
        pending: PendingLookup,
        environment: Environment,
        request: Request<ReqBody>,
        inner: S,
        authenticator: Arc<Authenticator>,
    ) -> Self {
        ApiKeyResponseFuture {
            state: State::Pending {
                pending,
                environment,
                request: Some(request),
                inner,
                authenticator,
            },
            uncounted: Uncounted(None),
        }
    }
}

impl<S, ReqBody, ResBody> Future for ApiKeyResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            let next = match this.state.project() {
                StateProj::Inner { future } => {
                    let result = ready!(future.poll(cx));
                    match &result {
                        Ok(response) => this.uncounted.count(response.extensions()),
                        // The service failed, after the key was let through.
                        Err(_) => this.uncounted.count(&http::Extensions::new()),
                    }
                    return Poll::Ready(result);
                }
                StateProj::Rejected { response } => {
                    // Taken once: a future is not polled again after it returned `Ready`.
                    let response = response
                        .take()
                        .expect("ApiKeyResponseFuture polled after completion");
                    return Poll::Ready(Ok(response));
                }
                StateProj::Pending {
                    pending,
                    environment,
                    request,
                    inner,
                    authenticator,
                } => {
                    let outcome = ready!(Pin::new(pending).poll(cx));
                    let mut request = request
                        .take()
                        .expect("ApiKeyResponseFuture polled after completion");
                    let verdict = authenticator.verdict(
                        outcome,
                        *environment,
                        request.headers(),
                        request.extensions(),
                    );
                    match verdict {
                        Ok(principal) => {
                            this.uncounted.0 = Some(principal.cached_key().clone());
                            request.extensions_mut().insert(principal);
                            State::Inner {
                                future: inner.call(request),
                            }
                        }
                        Err(rejection) => {
                            let spare = std::mem::take(request.extensions_mut());
                            State::Rejected {
                                response: Some(
                                    authenticator.responses.respond_reusing(rejection, spare),
                                ),
                            }
                        }
                    }
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

impl<S, ReqBody> fmt::Debug for ApiKeyResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyResponseFuture")
            .finish_non_exhaustive()
    }
}
