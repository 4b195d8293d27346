//! Webhook delivery, the background side: the dispatcher that fans outbox rows out into
//! deliveries and sends them, and the HTTP client it sends with. The rules (signatures,
//! retries, addresses, payloads) are `domain::webhooks`; the admin use cases are in
//! `service::webhooks`.

mod client;
mod dispatcher;

use std::time::Duration;

pub use client::{Sender, Sent};
pub use dispatcher::{DispatcherHandle, spawn_dispatcher};

use crate::clock::Clock;
use crate::domain::webhooks::{AddressPolicy, DeliveryPolicy, EndpointLimits};

/// Everything about webhooks that configuration decides. Shared by the dispatcher and
/// the admin use cases, so both judge URLs and time alike.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Retry schedule, Retry-After cap, when a failing endpoint is disabled.
    pub policy: DeliveryPolicy,
    /// Which addresses and schemes endpoints may use.
    pub address: AddressPolicy,
    pub limits: EndpointLimits,
    /// How long one attempt may take, response included.
    pub timeout: Duration,
    /// How long a rotated-out secret keeps signing beside the new one.
    pub secret_overlap: Duration,
    /// Finished deliveries and fanned-out outbox rows are deleted this long after.
    pub retention: Duration,
    /// Attempts in flight at once on this instance.
    pub concurrency: usize,
    /// Attempts in flight at once to one endpoint, so a slow one cannot take every slot.
    pub endpoint_concurrency: usize,
    /// Outbox rows fanned out, and deliveries claimed, per query.
    pub batch: usize,
    /// How often the dispatcher looks for due work when nothing wakes it (retries that
    /// come due, writes made by other instances).
    pub poll_interval: Duration,
    /// How often old rows are pruned.
    pub prune_interval: Duration,
    /// How long a claim is held. An attempt only starts while at least `timeout` of it is
    /// left, so no two instances ever send one delivery at once; a dispatcher that dies
    /// holding claims delays them by at most this much.
    pub lease: Duration,
    pub clock: Clock,
}

impl Default for WebhookSettings {
    /// Production's defaults: public https endpoints only.
    fn default() -> Self {
        WebhookSettings {
            policy: DeliveryPolicy::default(),
            address: AddressPolicy::STRICT,
            limits: EndpointLimits::default(),
            timeout: Duration::from_secs(15),
            secret_overlap: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(30 * 24 * 3600),
            concurrency: 64,
            endpoint_concurrency: 16,
            batch: 500,
            poll_interval: Duration::from_secs(1),
            prune_interval: Duration::from_secs(3600),
            lease: Duration::from_secs(120),
            clock: Clock::system(),
        }
    }
}
