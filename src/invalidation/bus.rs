//! The trait a message bus implements to carry invalidations between processes.

use std::error::Error;
use std::fmt;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

use super::Invalidation;

/// The messages of one subscription, in order. It ends, or yields an error, when the
/// subscription is lost; a [`Watcher`](super::Watcher) then subscribes again.
pub type InvalidationStream = BoxStream<'static, Result<Invalidation, BusError>>;

/// Something that carries [`Invalidation`]s from the process that changed a key to every process
/// that caches it: PostgreSQL `LISTEN`/`NOTIFY` and a SQLite log inside the SQL stores, Redis
/// pub/sub in [`RedisBus`](crate::RedisBus), or a bus of your own.
///
/// A bus only needs to subscribe; publishing is up to the code that changes keys, which knows
/// its bus. A [`Watcher`](super::Watcher) runs the subscription, applies the messages, and deals
/// with losing it.
///
/// # Example
///
/// A bus on a Tokio broadcast channel, as a bus over a message broker would look:
///
/// ```
/// use futures_util::{stream, StreamExt};
/// use tokio::sync::broadcast::{self, error::RecvError};
/// use tower_api_key::{BusError, Invalidation, InvalidationBus, InvalidationStream};
///
/// struct Broadcast(broadcast::Sender<Invalidation>);
///
/// #[async_trait::async_trait]
/// impl InvalidationBus for Broadcast {
///     async fn subscribe(&self) -> Result<InvalidationStream, BusError> {
///         // Subscribed once `subscribe` returns: later messages are all in the stream.
///         let receiver = self.0.subscribe();
///         let messages = stream::unfold(receiver, |mut receiver| async move {
///             let next = match receiver.recv().await {
///                 Ok(message) => Ok(message),
///                 // Messages were dropped: this subscription no longer sees everything.
///                 Err(RecvError::Lagged(_)) => Err(BusError::new("lagged behind")),
///                 Err(RecvError::Closed) => return None,
///             };
///             Some((next, receiver))
///         });
///         Ok(messages.boxed())
///     }
/// }
/// ```
#[async_trait]
pub trait InvalidationBus: Send + Sync + 'static {
    /// Subscribes to the bus. Returns once the subscription is in place: every message published
    /// after that is in the stream, in order, until the stream ends or yields an error.
    ///
    /// # Errors
    ///
    /// Any failure to subscribe (the server is unreachable, say); the watcher tries again later.
    async fn subscribe(&self) -> Result<InvalidationStream, BusError>;
}

#[async_trait]
impl<B: InvalidationBus + ?Sized> InvalidationBus for std::sync::Arc<B> {
    async fn subscribe(&self) -> Result<InvalidationStream, BusError> {
        (**self).subscribe().await
    }
}

#[async_trait]
impl<B: InvalidationBus + ?Sized> InvalidationBus for Box<B> {
    async fn subscribe(&self) -> Result<InvalidationStream, BusError> {
        (**self).subscribe().await
    }
}

/// A bus failed: it could not subscribe, or lost its subscription.
#[derive(Debug)]
pub struct BusError(Box<dyn Error + Send + Sync>);

impl BusError {
    /// An error with `source` as its cause.
    pub fn new(source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        BusError(source.into())
    }
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for BusError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}
