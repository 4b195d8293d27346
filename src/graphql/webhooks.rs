//! Webhook endpoints and their delivery log: admin only. Secrets appear in two answers
//! only, createWebhookEndpoint and rotateWebhookSecret; no query returns them.

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::{onramp, principal};
use crate::auth::Role;
use crate::domain::webhooks::DeliveryStatus;
use crate::persistence::webhooks::{AttemptRecord, EndpointRecord};
use crate::service::{DeliveryPage, LoggedDelivery, NewEndpoint, WebhookDeliveriesQuery};

/// Where webhooks go. Its secret is never shown here.
#[derive(SimpleObject, Clone, Debug)]
pub struct WebhookEndpoint {
    /// The endpoint's id.
    pub id: ID,
    /// Where deliveries are POSTed.
    pub url: String,
    /// `*` (every event type) or event types: onboarding.started, step.completed,
    /// step.skipped, onboarding.completed, onboarding.skipped, nudge.due.
    pub event_types: Vec<String>,
    /// A note for people, e.g. what receives these events.
    pub description: Option<String>,
    /// Whether deliveries are sent; a disabled endpoint's deliveries wait until it is enabled.
    pub enabled: bool,
    /// Why it is disabled: an admin, a 410 Gone answer, or failing too long.
    pub disabled_reason: Option<String>,
    /// Since when every attempt to it has failed; null while healthy.
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the secret replaced by the last rotation still signs beside the new one.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&EndpointRecord> for WebhookEndpoint {
    fn from(e: &EndpointRecord) -> Self {
        WebhookEndpoint {
            id: ID(e.id.clone()),
            url: e.url.clone(),
            event_types: e.event_types.clone(),
            description: e.description.clone(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason.clone(),
            failing_since: e.failing_since,
            previous_secret_expires_at: e.previous_secret_expires_at,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// An endpoint with its signing secret: shown once, when it is made.
#[derive(SimpleObject)]
pub struct WebhookEndpointSecret {
    /// The endpoint.
    pub endpoint: WebhookEndpoint,
    /// `whsec_...`: verify signatures with it (Standard Webhooks). Not shown again.
    pub secret: String,
}

/// Where a delivery stands.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum WebhookDeliveryStatus {
    /// Not attempted yet, or queued again.
    Pending,
    /// An attempt is in flight.
    Sending,
    /// The last attempt failed; the next is at nextAttemptAt.
    Failed,
    /// An attempt got a 2xx answer in time.
    Succeeded,
    /// Given up: the retry schedule is spent, or the endpoint answered 410 Gone.
    Dead,
}

impl From<DeliveryStatus> for WebhookDeliveryStatus {
    fn from(s: DeliveryStatus) -> Self {
        match s {
            DeliveryStatus::Pending => WebhookDeliveryStatus::Pending,
            DeliveryStatus::Sending => WebhookDeliveryStatus::Sending,
            DeliveryStatus::Failed => WebhookDeliveryStatus::Failed,
            DeliveryStatus::Succeeded => WebhookDeliveryStatus::Succeeded,
            DeliveryStatus::Dead => WebhookDeliveryStatus::Dead,
        }
    }
}

impl From<WebhookDeliveryStatus> for DeliveryStatus {
    fn from(s: WebhookDeliveryStatus) -> Self {
        match s {
            WebhookDeliveryStatus::Pending => DeliveryStatus::Pending,
            WebhookDeliveryStatus::Sending => DeliveryStatus::Sending,
            WebhookDeliveryStatus::Failed => DeliveryStatus::Failed,
            WebhookDeliveryStatus::Succeeded => DeliveryStatus::Succeeded,
            WebhookDeliveryStatus::Dead => DeliveryStatus::Dead,
        }
    }
}

/// One request made for a delivery.
#[derive(SimpleObject, Clone, Debug)]
pub struct WebhookAttempt {
    /// 1 for the first attempt of a round (redelivering starts a new round).
    pub number: i32,
    /// When the request was sent.
    pub attempted_at: DateTime<Utc>,
    /// Null when there was no answer.
    pub status_code: Option<i32>,
    /// Milliseconds from sending to the answer (or to the failure).
    pub latency_ms: i64,
    /// Why there was no answer (refused, timed out, address not allowed, ...).
    pub error: Option<String>,
    /// At most 1 KiB of what the endpoint answered.
    pub response_body: Option<String>,
}

impl From<&AttemptRecord> for WebhookAttempt {
    fn from(a: &AttemptRecord) -> Self {
        WebhookAttempt {
            number: a.number,
            attempted_at: a.attempted_at,
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            error: a.error.clone(),
            response_body: a.response_body.clone(),
        }
    }
}

/// One event for one endpoint.
#[derive(SimpleObject, Clone, Debug)]
pub struct WebhookDelivery {
    /// The delivery's id (for redeliverWebhook).
    pub id: ID,
    /// The `webhook-id` header: the same on every attempt, so receivers can deduplicate.
    pub webhook_id: String,
    /// The endpoint it goes to.
    pub endpoint_id: ID,
    /// The event type, e.g. `step.completed`.
    pub event_type: String,
    /// Where it stands.
    pub status: WebhookDeliveryStatus,
    /// Attempts made in the current round.
    pub attempt_count: i32,
    /// When the next attempt is due (PENDING and FAILED only; null while the endpoint is
    /// disabled).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the last attempt was made; null before the first.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last answer; null when there was none.
    pub last_status_code: Option<i32>,
    /// Why the last attempt got no answer, if it did not.
    pub last_error: Option<String>,
    /// When the event was queued for this endpoint.
    pub created_at: DateTime<Utc>,
    /// Every attempt, oldest first.
    pub attempts: Vec<WebhookAttempt>,
}

impl From<&LoggedDelivery> for WebhookDelivery {
    fn from(l: &LoggedDelivery) -> Self {
        let d = &l.delivery;
        WebhookDelivery {
            id: ID(d.id.clone()),
            webhook_id: d.message_id.clone(),
            endpoint_id: ID(d.endpoint_id.clone()),
            event_type: d.event_type.clone(),
            status: d.status.into(),
            attempt_count: d.attempts,
            // Parked deliveries (of a disabled endpoint) have no next attempt until it is enabled.
            next_attempt_at: (matches!(d.status, DeliveryStatus::Pending | DeliveryStatus::Failed)
                && d.next_attempt_at < crate::persistence::webhooks::parked())
            .then_some(d.next_attempt_at),
            last_attempt_at: d.last_attempt_at,
            last_status_code: d.last_status_code,
            last_error: d.last_error.clone(),
            created_at: d.created_at,
            attempts: l.attempts.iter().map(WebhookAttempt::from).collect(),
        }
    }
}

/// A page of a delivery log, newest first.
#[derive(SimpleObject)]
pub struct WebhookDeliveryPage {
    /// The deliveries on this page, newest first.
    pub nodes: Vec<WebhookDelivery>,
    /// Pass as `after` for the next page.
    pub end_cursor: Option<String>,
    /// Whether older deliveries follow.
    pub has_next_page: bool,
}

impl From<DeliveryPage> for WebhookDeliveryPage {
    fn from(p: DeliveryPage) -> Self {
        WebhookDeliveryPage {
            nodes: p.deliveries.iter().map(WebhookDelivery::from).collect(),
            end_cursor: p.end_cursor,
            has_next_page: p.has_next_page,
        }
    }
}

#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// Every webhook endpoint, oldest first. Admin only.
    #[graphql(complexity = "super::cost::READ + child_complexity")]
    async fn webhook_endpoints(&self, ctx: &Context<'_>) -> Result<Vec<WebhookEndpoint>> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok(onramp(ctx).webhook_endpoints().await?.iter().map(WebhookEndpoint::from).collect())
    }

    /// One webhook endpoint, or null. Admin only.
    #[graphql(complexity = "super::cost::READ + child_complexity")]
    async fn webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint's id.")] id: ID,
    ) -> Result<Option<WebhookEndpoint>> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok(onramp(ctx).webhook_endpoint(&id).await?.as_ref().map(WebhookEndpoint::from))
    }

    /// An endpoint's deliveries, newest first, with their attempts: `first` (1 to 100)
    /// after the cursor `after`, filtered by status, event type and creation time. Admin only.
    #[graphql(complexity = "super::cost::READ + child_complexity")]
    #[allow(clippy::too_many_arguments)]
    async fn webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint's id.")] endpoint_id: ID,
        #[graphql(desc = "Only deliveries in this state.")] status: Option<WebhookDeliveryStatus>,
        #[graphql(desc = "Only deliveries of this event type, e.g. `step.completed`.")] event_type: Option<String>,
        #[graphql(desc = "Only deliveries created at or after this instant.")] since: Option<DateTime<Utc>>,
        #[graphql(default = 20, desc = "Page size, 1 to 100.")] first: i32,
        #[graphql(desc = "The endCursor of the previous page; null for the first page.")] after: Option<String>,
    ) -> Result<WebhookDeliveryPage> {
        principal(ctx)?.require(&[Role::Admin])?;
        let query = WebhookDeliveriesQuery {
            endpoint_id: endpoint_id.0,
            status: status.map(Into::into),
            event_type,
            since,
            first: usize::try_from(first).unwrap_or(0),
            after,
        };
        Ok(onramp(ctx).webhook_deliveries(query).await?.into())
    }
}

#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// Creates an enabled endpoint. The answer carries its signing secret, which is never
    /// shown again (rotateWebhookSecret makes a new one). Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Where to POST deliveries: https in production (see README: Webhooks, Safety).")] url: String,
        #[graphql(desc = "`*` for every event type, or some of onboarding.started, step.completed, \
                          step.skipped, onboarding.completed, onboarding.skipped, nudge.due.")]
        event_types: Vec<String>,
        #[graphql(desc = "A note for people, e.g. what receives these events.")] description: Option<String>,
    ) -> Result<WebhookEndpointSecret> {
        principal(ctx)?.require(&[Role::Admin])?;
        let (endpoint, secret) =
            onramp(ctx).create_webhook_endpoint(NewEndpoint { url, event_types, description }).await?;
        Ok(WebhookEndpointSecret { endpoint: (&endpoint).into(), secret: secret.reveal() })
    }

    /// Changes an endpoint's url, event types or description (what is given; an empty
    /// description clears it). Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint's id.")] id: ID,
        #[graphql(desc = "A new url; null keeps it.")] url: Option<String>,
        #[graphql(desc = "New event types; null keeps them.")] event_types: Option<Vec<String>>,
        #[graphql(desc = "A new description; null keeps it, empty clears it.")] description: Option<String>,
    ) -> Result<WebhookEndpoint> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok((&onramp(ctx).update_webhook_endpoint(&id, url, event_types, description).await?).into())
    }

    /// Enables or disables an endpoint. Enabling clears why it was disabled; deliveries
    /// that waited for it are sent at once. Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn set_webhook_endpoint_enabled(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint's id.")] id: ID,
        #[graphql(desc = "True to send deliveries, false to hold them.")] enabled: bool,
    ) -> Result<WebhookEndpoint> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok((&onramp(ctx).set_webhook_endpoint_enabled(&id, enabled).await?).into())
    }

    /// Deletes an endpoint and its delivery log; false when there was none. Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn delete_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint's id.")] id: ID,
    ) -> Result<bool> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok(onramp(ctx).delete_webhook_endpoint(&id).await?)
    }

    /// Gives an endpoint a new signing secret, returned this once. The old secret keeps
    /// signing beside it (two signatures per request) until previousSecretExpiresAt.
    /// Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint's id.")] id: ID,
    ) -> Result<WebhookEndpointSecret> {
        principal(ctx)?.require(&[Role::Admin])?;
        let (endpoint, secret) = onramp(ctx).rotate_webhook_secret(&id).await?;
        Ok(WebhookEndpointSecret { endpoint: (&endpoint).into(), secret: secret.reveal() })
    }

    /// Sends a delivery again with the same webhook-id. CONFLICT while an attempt of it
    /// is in flight. Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn redeliver_webhook(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The delivery's id.")] delivery_id: ID,
    ) -> Result<WebhookDelivery> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok((&onramp(ctx).redeliver_webhook(&delivery_id).await?).into())
    }

    /// Sends an endpoint every event since a time again (events are kept for the
    /// retention period), including events from before it subscribed to them. Returns
    /// the number of deliveries queued. Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn replay_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The endpoint's id.")] endpoint_id: ID,
        #[graphql(desc = "Every event queued at or after this instant is sent again.")] since: DateTime<Utc>,
    ) -> Result<i64> {
        principal(ctx)?.require(&[Role::Admin])?;
        let queued = onramp(ctx).replay_webhook_endpoint(&endpoint_id, since).await?;
        Ok(i64::try_from(queued).unwrap_or(i64::MAX))
    }
}
