//! The baselines the layer is measured against: what teams write by hand.
//!
//! `HandwrittenSyncLayer` is the strongest of them, the one the claims are made against: what a
//! competent engineer writes when the only goal is speed. `HandwrittenLayer` is the first
//! baseline, kept so that the older figures can still be compared.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use futures_util::future::Either;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use tower::{Layer, Service};

/// A static-token check written by hand, as tower-http's bearer validation does it: compare the
/// whole header with `==`.
#[derive(Clone)]
pub struct StaticBearerLayer(pub HeaderValue);

impl<S> Layer<S> for StaticBearerLayer {
    type Service = StaticBearer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StaticBearer {
            inner,
            expected: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct StaticBearer<S> {
    inner: S,
    expected: HeaderValue,
}

impl<S> Service<Request<Body>> for StaticBearer<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if request.headers().get(AUTHORIZATION) == Some(&self.expected) {
            Box::pin(self.inner.call(request))
        } else {
            Box::pin(async { Ok(unauthorized()) })
        }
    }
}

fn unauthorized() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
}

/// What a team writes by hand, as first measured: strip `Bearer `, SHA-256 the key, read a moka
/// cache, insert an `Arc`'d principal.
#[allow(dead_code)] // Held like a real principal, read by no one in the benchmark.
pub struct HandwrittenPrincipal {
    pub key_id: String,
    pub scopes: Vec<String>,
}

#[derive(Clone)]
pub struct HandwrittenLayer(pub moka::future::Cache<[u8; 32], Arc<HandwrittenPrincipal>>);

impl<S> Layer<S> for HandwrittenLayer {
    type Service = Handwritten<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Handwritten {
            inner,
            cache: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Handwritten<S> {
    inner: S,
    cache: moka::future::Cache<[u8; 32], Arc<HandwrittenPrincipal>>,
}

impl<S> Service<Request<Body>> for Handwritten<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let token = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(|token| -> [u8; 32] { Sha256::digest(token.as_bytes()).into() });
        let cache = self.cache.clone();
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move {
            let Some(digest) = token else {
                return Ok(unauthorized());
            };
            match cache.get(&digest).await {
                Some(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                None => Ok(unauthorized()),
            }
        })
    }
}

/// The strongest hand-written middleware: strip `Bearer `, SHA-256 the key, read a moka **sync**
/// cache, insert the `Arc`'d principal, and call the inner service. Nothing in it waits, so the
/// response future is the inner service's own, or a ready refusal: nothing is boxed. The cache
/// handle is kept in an `Arc`, as the layer keeps its state, because axum clones a route's
/// services for every request and a moka handle is several reference counts.
#[derive(Clone)]
pub struct HandwrittenSyncLayer(pub Arc<moka::sync::Cache<[u8; 32], Arc<HandwrittenPrincipal>>>);

impl<S> Layer<S> for HandwrittenSyncLayer {
    type Service = HandwrittenSync<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HandwrittenSync {
            inner,
            cache: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct HandwrittenSync<S> {
    inner: S,
    cache: Arc<moka::sync::Cache<[u8; 32], Arc<HandwrittenPrincipal>>>,
}

impl<S> Service<Request<Body>> for HandwrittenSync<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let principal = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
            .and_then(|token| self.cache.get(&<[u8; 32]>::from(Sha256::digest(token))));
        match principal {
            Some(principal) => {
                request.extensions_mut().insert(principal);
                Either::Left(self.inner.call(request))
            }
            None => Either::Right(ready(Ok(unauthorized()))),
        }
    }
}

/// A probe of axum's own cost for a layer on one route: a layer holding a value (as a scope
/// requirement must, here a `&'static` pointer) whose service only calls the inner one and
/// returns its future. What a route behind it costs more than a bare route is axum's plumbing
/// for a layer with state; anything a real layer adds on top is its own work.
#[derive(Clone)]
pub struct PassthroughLayer(pub &'static str);

impl<S> Layer<S> for PassthroughLayer {
    type Service = Passthrough<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Passthrough {
            inner,
            _value: self.0,
        }
    }
}

#[derive(Clone)]
pub struct Passthrough<S> {
    inner: S,
    _value: &'static str,
}

impl<S, R> Service<R> for Passthrough<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.inner.call(request)
    }
}
