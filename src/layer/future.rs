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
use crate::cache::PendingLookup;
use crate::key::Environment;

pin_project! {
    /// The response future of [`ApiKeyService`](super::ApiKeyService).
    pub struct ApiKeyResponseFuture<S, ReqBody>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody>,
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
    pub(crate) fn inner(future: S::Future) -> Self {
        ApiKeyResponseFuture {
            state: State::Inner { future },
        }
    }

    pub(crate) fn rejected(response: S::Response) -> Self {
        ApiKeyResponseFuture {
            state: State::Rejected {
                response: Some(response),
            },
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
            let next = match self.as_mut().project().state.project() {
                StateProj::Inner { future } => return future.poll(cx),
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
                    match authenticator.verdict(outcome, *environment) {
                        Ok(principal) => {
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
