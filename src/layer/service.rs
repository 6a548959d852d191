use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use super::authenticator::{Authenticator, Decision};
use super::future::ApiKeyResponseFuture;
use crate::principal::{Anonymous, Principal};

/// The service made by [`ApiKeyLayer`](super::ApiKeyLayer).
#[derive(Clone)]
pub struct ApiKeyService<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
}

impl<S> ApiKeyService<S> {
    pub(crate) fn new(inner: S, authenticator: Arc<Authenticator>) -> Self {
        ApiKeyService {
            inner,
            authenticator,
        }
    }

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
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ApiKeyService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ApiKeyResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The usage flusher starts with the first request in a Tokio runtime.
        self.authenticator.housekeeping.start(&self.authenticator);
        // Also marks the key sensitive, out of `Debug` output further in (tracing layers, panics).
        let decision = self.authenticator.decide(request.headers_mut());
        decision.trace();
        match decision {
            Decision::Allow(principal) => {
                let admission =
                    self.authenticator
                        .admit(&principal, request.headers(), request.extensions());
                ApiKeyResponseFuture::admitted(
                    admission,
                    principal,
                    request,
                    &mut self.inner,
                    &self.authenticator,
                )
            }
            Decision::Anonymous => {
                let extensions = request.extensions_mut();
                extensions.remove::<Principal>();
                extensions.insert::<Anonymous>(self.authenticator.anonymous.clone());
                ApiKeyResponseFuture::inner(self.inner.call(request))
            }
            Decision::Reject(rejection) => {
                let spare = std::mem::take(request.extensions_mut());
                ApiKeyResponseFuture::rejected(
                    self.authenticator
                        .responses
                        .respond_reusing(rejection, spare),
                )
            }
            Decision::Pending(pending, environment) => {
                // `poll_ready` readied `self.inner`; take that instance for the request that
                // waits, and leave a clone that the next `poll_ready` will drive.
                let ready = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, ready);
                ApiKeyResponseFuture::pending(
                    pending,
                    environment,
                    request,
                    inner,
                    self.authenticator.clone(),
                )
            }
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for ApiKeyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
