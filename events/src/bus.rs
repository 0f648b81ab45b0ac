//! The seam between "a message was accepted" and "subscribers hear about it".
//!
//! An API node calls [`Bus::publish`] and answers the client only once it returns `Ok`, so an
//! acknowledged message is never lost by the bus. The in-process implementation hands the event
//! straight to the local [`EventSink`] (the fan-out hub); a Kafka implementation produces to a
//! topic partitioned by channel and lets the relay tier deliver it.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::event::MessageEvent;

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The transport did not accept the event (Kafka unreachable, the publish timed out).
    #[error("the event bus is unavailable: {0}")]
    Unavailable(String),
}

/// Where published events go.
pub trait Bus: Send + Sync + 'static {
    /// Resolves once the event is accepted; an `Err` means subscribers will not see it.
    fn publish(&self, event: MessageEvent) -> BoxFuture<'_, Result<(), BusError>>;
}

/// The consuming end of a bus on one node: delivers an event to local subscribers.
pub trait EventSink: Send + Sync + 'static {
    /// Hands `event` to this node's subscribers of its channel; never blocks.
    fn deliver(&self, event: Arc<MessageEvent>);
}

/// Single-process bus: publishing is delivering. Events reach the sink in publish order.
pub struct InProcessBus {
    sink: Arc<dyn EventSink>,
}

impl InProcessBus {
    /// A bus that delivers to `sink` (the node's fan-out hub).
    pub fn new(sink: Arc<dyn EventSink>) -> Self {
        Self { sink }
    }
}

impl Bus for InProcessBus {
    fn publish(&self, event: MessageEvent) -> BoxFuture<'_, Result<(), BusError>> {
        self.sink.deliver(Arc::new(event));
        Box::pin(std::future::ready(Ok(())))
    }
}
