use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::authenticator::{Admission, Authenticator, RateFields};
use crate::cache::{CachedKey, PendingLookup};
use crate::events::{trace_allowed, trace_rejected};
use crate::key::Environment;
use crate::principal::Principal;
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
            inner: Option<S>,
            authenticator: Arc<Authenticator>,
        },
        /// Waiting for the shared rate limiter, with the request its key let through.
        Limiting {
            check: Shared,
            principal: Option<Principal>,
            request: Option<Request<ReqBody>>,
            inner: Option<S>,
            authenticator: Arc<Authenticator>,
        },
        /// The inner service is handling the request.
        Inner {
            #[pin]
            future: S::Future,
            // The rate's fields, for the response.
            fields: Option<Box<RateFields>>,
        },
        /// The request was refused; the response is ready.
        Rejected {
            response: Option<S::Response>,
        },
    }
}

/// A rate check in the shared limiter, or nothing without the `redis` feature.
#[cfg(feature = "redis")]
type Shared = super::authenticator::SharedCheck;
#[cfg(not(feature = "redis"))]
type Shared = std::future::Pending<()>;

impl<S, ReqBody> ApiKeyResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    /// The inner service's future for a request without a key (an optional layer).
    pub(crate) fn inner(future: S::Future) -> Self {
        ApiKeyResponseFuture {
            state: State::Inner {
                future,
                fields: None,
            },
            uncounted: Uncounted(None),
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
                inner: Some(inner),
                authenticator,
            },
            uncounted: Uncounted(None),
        }
    }
}

impl<S, ReqBody, ResBody> ApiKeyResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    /// The future for a request its key let through, once the key's limits said `admission`.
    /// `inner` is ready, and called only if the request goes on.
    #[inline(always)]
    pub(crate) fn admitted(
        admission: Admission,
        principal: Principal,
        request: Request<ReqBody>,
        inner: &mut S,
        authenticator: &Arc<Authenticator>,
    ) -> Self
    where
        S: Clone,
    {
        let mut uncounted = Uncounted(None);
        let state = State::after_admission(
            admission,
            principal,
            request,
            inner,
            authenticator,
            &mut uncounted,
        );
        ApiKeyResponseFuture { state, uncounted }
    }
}

impl<S, ReqBody, ResBody> State<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    /// What follows a key's admission: the inner service's future (the request counted when
    /// its response is ready), a wait for the shared limiter, or the refusal.
    #[inline(always)]
    fn after_admission(
        admission: Admission,
        principal: Principal,
        mut request: Request<ReqBody>,
        inner: &mut S,
        authenticator: &Arc<Authenticator>,
        uncounted: &mut Uncounted,
    ) -> Self
    where
        S: Clone,
    {
        match admission {
            Admission::Go(fields) => {
                trace_allowed(&principal);
                uncounted.0 = Some(principal.cached_key().clone());
                request.extensions_mut().insert(principal);
                State::Inner {
                    future: inner.call(request),
                    fields,
                }
            }
            Admission::Refuse(rejection) => {
                trace_rejected(&rejection);
                let spare = std::mem::take(request.extensions_mut());
                State::Rejected {
                    response: Some(authenticator.responses.respond_reusing(rejection, spare)),
                }
            }
            #[cfg(feature = "redis")]
            Admission::Ask(check) => {
                // `inner` is ready; take that instance for the request that waits, and leave a
                // clone that the next `poll_ready` will drive.
                let ready = inner.clone();
                State::Limiting {
                    check,
                    principal: Some(principal),
                    request: Some(request),
                    inner: Some(std::mem::replace(inner, ready)),
                    authenticator: authenticator.clone(),
                }
            }
        }
    }
}

impl<S, ReqBody, ResBody> Future for ApiKeyResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            let next = match this.state.project() {
                StateProj::Inner { future, fields } => {
                    let mut result = ready!(future.poll(cx));
                    match &mut result {
                        Ok(response) => {
                            this.uncounted.count(response.extensions());
                            if let Some(fields) = fields.take() {
                                fields.add_to(response.headers_mut());
                            }
                        }
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
                    let (mut request, mut inner) = match (request.take(), inner.take()) {
                        (Some(request), Some(inner)) => (request, inner),
                        _ => panic!("ApiKeyResponseFuture polled after completion"),
                    };
                    match authenticator.verdict(outcome, *environment) {
                        Ok(principal) => {
                            let admission = authenticator.admit(
                                &principal,
                                request.headers(),
                                request.extensions(),
                            );
                            State::after_admission(
                                admission,
                                principal,
                                request,
                                &mut inner,
                                authenticator,
                                this.uncounted,
                            )
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
                #[allow(unused_variables)]
                StateProj::Limiting {
                    check,
                    principal,
                    request,
                    inner,
                    authenticator,
                } => {
                    #[cfg(not(feature = "redis"))]
                    {
                        // Never made without the `redis` feature: `Shared` is `Pending<()>`.
                        let () = ready!(Pin::new(check).poll(cx));
                        unreachable!("a pending future never finishes");
                    }
                    #[cfg(feature = "redis")]
                    {
                        let answer = ready!(Pin::new(check).poll(cx));
                        let (principal, request, mut inner) =
                            match (principal.take(), request.take(), inner.take()) {
                                (Some(principal), Some(request), Some(inner)) => {
                                    (principal, request, inner)
                                }
                                _ => panic!("ApiKeyResponseFuture polled after completion"),
                            };
                        let admission = authenticator.after_shared(principal.cached_key(), answer);
                        State::after_admission(
                            admission,
                            principal,
                            request,
                            &mut inner,
                            authenticator,
                            this.uncounted,
                        )
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
