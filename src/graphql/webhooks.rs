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
    pub id: ID,
    pub url: String,
    /// `*` (every event type) or event types: step.completed, step.skipped,
    /// onboarding.completed, onboarding.skipped, nudge.due.
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why it is disabled: an admin, a 410 Gone answer, or failing too long.
    pub disabled_reason: Option<String>,
    /// Since when every attempt to it has failed; null while healthy.
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the secret replaced by the last rotation still signs beside the new one.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
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
    pub endpoint: WebhookEndpoint,
    /// `whsec_...`: verify signatures with it (Standard Webhooks). Not shown again.
    pub secret: String,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum WebhookDeliveryStatus {
    /// Not attempted yet, or queued again.
    Pending,
    /// An attempt is in flight.
    Sending,
    /// The last attempt failed; the next is at nextAttemptAt.
    Failed,
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
    pub attempted_at: DateTime<Utc>,
    /// Null when there was no answer.
    pub status_code: Option<i32>,
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
    pub id: ID,
    /// The `webhook-id` header: the same on every attempt, so receivers can deduplicate.
    pub webhook_id: String,
    pub endpoint_id: ID,
    pub event_type: String,
    pub status: WebhookDeliveryStatus,
    /// Attempts made in the current round.
    pub attempt_count: i32,
    /// When the next attempt is due (PENDING and FAILED only; null while the endpoint is
    /// disabled).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
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
    pub nodes: Vec<WebhookDelivery>,
    /// Pass as `after` for the next page.
    pub end_cursor: Option<String>,
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
    async fn webhook_endpoint(&self, ctx: &Context<'_>, id: ID) -> Result<Option<WebhookEndpoint>> {
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
        endpoint_id: ID,
        status: Option<WebhookDeliveryStatus>,
        event_type: Option<String>,
        since: Option<DateTime<Utc>>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
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
        url: String,
        event_types: Vec<String>,
        description: Option<String>,
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
        id: ID,
        url: Option<String>,
        event_types: Option<Vec<String>>,
        description: Option<String>,
    ) -> Result<WebhookEndpoint> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok((&onramp(ctx).update_webhook_endpoint(&id, url, event_types, description).await?).into())
    }

    /// Enables or disables an endpoint. Enabling clears why it was disabled; deliveries
    /// that waited for it are sent at once. Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn set_webhook_endpoint_enabled(&self, ctx: &Context<'_>, id: ID, enabled: bool) -> Result<WebhookEndpoint> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok((&onramp(ctx).set_webhook_endpoint_enabled(&id, enabled).await?).into())
    }

    /// Deletes an endpoint and its delivery log; false when there was none. Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn delete_webhook_endpoint(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok(onramp(ctx).delete_webhook_endpoint(&id).await?)
    }

    /// Gives an endpoint a new signing secret, returned this once. The old secret keeps
    /// signing beside it (two signatures per request) until previousSecretExpiresAt.
    /// Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn rotate_webhook_secret(&self, ctx: &Context<'_>, id: ID) -> Result<WebhookEndpointSecret> {
        principal(ctx)?.require(&[Role::Admin])?;
        let (endpoint, secret) = onramp(ctx).rotate_webhook_secret(&id).await?;
        Ok(WebhookEndpointSecret { endpoint: (&endpoint).into(), secret: secret.reveal() })
    }

    /// Sends a delivery again with the same webhook-id. CONFLICT while an attempt of it
    /// is in flight. Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn redeliver_webhook(&self, ctx: &Context<'_>, delivery_id: ID) -> Result<WebhookDelivery> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok((&onramp(ctx).redeliver_webhook(&delivery_id).await?).into())
    }

    /// Sends an endpoint every event since a time again (events are kept for the
    /// retention period), including events from before it subscribed to them. Returns
    /// the number of deliveries queued. Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn replay_webhook_endpoint(&self, ctx: &Context<'_>, endpoint_id: ID, since: DateTime<Utc>) -> Result<i64> {
        principal(ctx)?.require(&[Role::Admin])?;
        let queued = onramp(ctx).replay_webhook_endpoint(&endpoint_id, since).await?;
        Ok(i64::try_from(queued).unwrap_or(i64::MAX))
    }
}
