//! Webhook endpoints and their delivery log, as admins manage them: create (the secret is
//! shown this once), change, enable or disable, delete, rotate the secret, read the log,
//! and send deliveries again.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::Onramp;
use crate::domain::limits::shorten;
use crate::domain::webhooks::address::check_url;
use crate::domain::webhooks::signing::{SECRET_BYTES, Secret};
use crate::domain::webhooks::{DeliveryStatus, EventType, Subscription};
use crate::error::{AppError, AppResult};
use crate::persistence::begin_write;
use crate::persistence::webhooks::{
    self as store, AttemptRecord, DeliveryFilter, DeliveryRecord, EndpointChanges, EndpointRecord,
};

/// What an admin gives to create an endpoint.
pub struct NewEndpoint {
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
}

/// A delivery with its attempts, oldest first.
#[derive(Clone, Debug)]
pub struct LoggedDelivery {
    pub delivery: DeliveryRecord,
    pub attempts: Vec<AttemptRecord>,
}

/// One page of an endpoint's delivery log, newest first.
pub struct DeliveryPage {
    pub deliveries: Vec<LoggedDelivery>,
    /// Pass as `after` for the next page; None when this page is the last.
    pub end_cursor: Option<String>,
    pub has_next_page: bool,
}

pub struct WebhookDeliveriesQuery {
    pub endpoint_id: String,
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub first: usize,
    pub after: Option<String>,
}

/// The most deliveries one page shows.
pub const MAX_PAGE: usize = 100;
/// The longest id or cursor taken in: ids are UUIDs.
const ID_BYTES: usize = 64;

fn check_id(what: &str, id: &str) -> AppResult<()> {
    if id.is_empty() || id.len() > ID_BYTES {
        return Err(AppError::invalid(format!("{what} is 1 to {ID_BYTES} bytes")));
    }
    Ok(())
}

fn endpoint_not_found(id: &str) -> AppError {
    AppError::not_found(format!("no webhook endpoint `{}`", shorten(id)))
}

impl Onramp {
    fn now_for_webhooks(&self) -> DateTime<Utc> {
        self.webhooks.clock.now()
    }

    fn check_endpoint_url(&self, url: &str) -> AppResult<String> {
        let limits = &self.webhooks.limits;
        check_url(url, self.webhooks.address, limits.url_bytes).map_err(AppError::invalid)?;
        Ok(url.to_string())
    }

    fn check_event_types(&self, names: &[String]) -> AppResult<Vec<String>> {
        Ok(Subscription::parse(names, self.webhooks.limits.event_types).map_err(AppError::invalid)?.names())
    }

    fn check_description(&self, description: Option<String>) -> AppResult<Option<String>> {
        match description {
            Some(d) => {
                self.webhooks.limits.check_description(&d).map_err(AppError::invalid)?;
                Ok((!d.is_empty()).then_some(d))
            }
            None => Ok(None),
        }
    }

    fn wake_dispatcher(&self) {
        self.outbox_written.notify_one();
    }

    /// Creates an enabled endpoint; returns it with its secret, shown this once.
    pub async fn create_webhook_endpoint(&self, input: NewEndpoint) -> AppResult<(EndpointRecord, Secret)> {
        let url = self.check_endpoint_url(&input.url)?;
        let event_types = self.check_event_types(&input.event_types)?;
        let description = self.check_description(input.description)?;
        let secret = new_secret()?;
        let now = self.now_for_webhooks();
        let endpoint = EndpointRecord {
            id: uuid::Uuid::now_v7().to_string(),
            url,
            event_types,
            description,
            enabled: true,
            disabled_reason: None,
            secret: secret.reveal(),
            previous_secret: None,
            previous_secret_expires_at: None,
            failing_since: None,
            created_at: now,
            updated_at: now,
        };
        store::insert_endpoint(&self.db, &endpoint).await?;
        // Not the URL: receivers often put a token in it.
        tracing::info!(endpoint = %endpoint.id, "webhook endpoint created");
        Ok((endpoint, secret))
    }

    pub async fn webhook_endpoints(&self) -> AppResult<Vec<EndpointRecord>> {
        Ok(store::list_endpoints(&self.db).await?)
    }

    pub async fn webhook_endpoint(&self, id: &str) -> AppResult<Option<EndpointRecord>> {
        check_id("id", id)?;
        Ok(store::find_endpoint(&self.db, id).await?)
    }

    async fn change_endpoint(&self, id: &str, changes: EndpointChanges) -> AppResult<EndpointRecord> {
        check_id("id", id)?;
        if !store::update_endpoint(&self.db, id, changes, self.now_for_webhooks()).await? {
            return Err(endpoint_not_found(id));
        }
        store::find_endpoint(&self.db, id).await?.ok_or_else(|| endpoint_not_found(id))
    }

    /// Changes what is given of url, event types and description (an empty description
    /// clears it). New event types apply to events not fanned out yet.
    pub async fn update_webhook_endpoint(
        &self,
        id: &str,
        url: Option<String>,
        event_types: Option<Vec<String>>,
        description: Option<String>,
    ) -> AppResult<EndpointRecord> {
        let changes = EndpointChanges {
            url: url.map(|u| self.check_endpoint_url(&u)).transpose()?,
            event_types: event_types.map(|t| self.check_event_types(&t)).transpose()?,
            description: description.map(|d| self.check_description(Some(d))).transpose()?,
            ..EndpointChanges::default()
        };
        self.change_endpoint(id, changes).await
    }

    /// Enables (clearing why it was disabled and its failing streak; deliveries waiting
    /// for it resume at once) or disables an endpoint.
    pub async fn set_webhook_endpoint_enabled(&self, id: &str, enabled: bool) -> AppResult<EndpointRecord> {
        let changes = EndpointChanges {
            enabled: Some(enabled),
            disabled_reason: (!enabled).then(|| "disabled by an admin".to_string()),
            ..EndpointChanges::default()
        };
        let endpoint = self.change_endpoint(id, changes).await?;
        if enabled {
            self.wake_dispatcher();
        }
        Ok(endpoint)
    }

    /// Deletes an endpoint with its delivery log. Returns whether it existed.
    pub async fn delete_webhook_endpoint(&self, id: &str) -> AppResult<bool> {
        check_id("id", id)?;
        Ok(store::delete_endpoint(&self.db, id).await?)
    }

    /// Gives an endpoint a new secret, returned this once. The old one keeps signing
    /// beside it for the configured overlap, so receivers can switch without missing a
    /// delivery; rotating again within the overlap drops the oldest.
    pub async fn rotate_webhook_secret(&self, id: &str) -> AppResult<(EndpointRecord, Secret)> {
        check_id("id", id)?;
        let secret = new_secret()?;
        let now = self.now_for_webhooks();
        let overlap = chrono::Duration::from_std(self.webhooks.secret_overlap)
            .map_err(|_| AppError::internal("the secret overlap is out of range"))?;
        // Read and write in one transaction: two rotations at once must not both keep the
        // same old secret and lose a new one.
        let txn = begin_write(&self.db).await?;
        let current = store::find_endpoint(&txn, id).await?.ok_or_else(|| endpoint_not_found(id))?;
        let changes = EndpointChanges {
            rotation: Some((secret.reveal(), current.secret, now + overlap)),
            ..EndpointChanges::default()
        };
        store::update_endpoint(&txn, id, changes, now).await?;
        let endpoint = store::find_endpoint(&txn, id).await?.ok_or_else(|| endpoint_not_found(id))?;
        txn.commit().await?;
        tracing::info!(endpoint = %id, "webhook secret rotated");
        Ok((endpoint, secret))
    }

    /// A page of an endpoint's delivery log, newest first, with each delivery's attempts.
    pub async fn webhook_deliveries(&self, q: WebhookDeliveriesQuery) -> AppResult<DeliveryPage> {
        check_id("endpointId", &q.endpoint_id)?;
        if q.first == 0 || q.first > MAX_PAGE {
            return Err(AppError::invalid(format!("first is 1 to {MAX_PAGE}")));
        }
        if let Some(after) = &q.after {
            check_id("after", after)?;
        }
        if let Some(t) = &q.event_type
            && EventType::parse(t).is_none()
        {
            return Err(AppError::invalid(format!("unknown event type `{}`", shorten(t))));
        }
        if store::find_endpoint(&self.db, &q.endpoint_id).await?.is_none() {
            return Err(endpoint_not_found(&q.endpoint_id));
        }
        let filter = DeliveryFilter {
            endpoint_id: &q.endpoint_id,
            status: q.status,
            event_type: q.event_type.as_deref(),
            since: q.since,
            before_id: q.after.as_deref(),
            limit: q.first as u64 + 1,
        };
        let mut rows = store::list_deliveries(&self.db, &filter).await?;
        let has_next_page = rows.len() > q.first;
        rows.truncate(q.first);
        let mut attempts = store::attempts_of(&self.db, rows.iter().map(|d| d.id.clone()).collect()).await?;
        let end_cursor = if has_next_page { rows.last().map(|d| d.id.clone()) } else { None };
        let deliveries = rows
            .into_iter()
            .map(|delivery| LoggedDelivery { attempts: attempts.remove(&delivery.id).unwrap_or_default(), delivery })
            .collect();
        Ok(DeliveryPage { deliveries, end_cursor, has_next_page })
    }

    /// Sends a delivery again, with the same webhook-id: a finished one gets a new round
    /// of the retry schedule, a waiting one is made due now. Refused (CONFLICT) while an
    /// attempt of it is in flight.
    pub async fn redeliver_webhook(&self, delivery_id: &str) -> AppResult<LoggedDelivery> {
        check_id("deliveryId", delivery_id)?;
        let not_found = || AppError::not_found(format!("no webhook delivery `{}`", shorten(delivery_id)));
        if store::find_delivery(&self.db, delivery_id).await?.is_none() {
            return Err(not_found());
        }
        if !store::redeliver(&self.db, delivery_id, self.now_for_webhooks()).await? {
            return Err(AppError::new(
                crate::error::ErrorCode::Conflict,
                "an attempt of this delivery is in flight; it is sent already",
            ));
        }
        self.wake_dispatcher();
        let delivery = store::find_delivery(&self.db, delivery_id).await?.ok_or_else(not_found)?;
        let attempts: HashMap<String, Vec<AttemptRecord>> =
            store::attempts_of(&self.db, vec![delivery.id.clone()]).await?;
        Ok(LoggedDelivery { attempts: attempts.into_values().next().unwrap_or_default(), delivery })
    }

    /// Sends an endpoint every event since a time again (those still in the outbox,
    /// within retention, of the types it subscribes to). Returns the deliveries queued.
    pub async fn replay_webhook_endpoint(&self, endpoint_id: &str, since: DateTime<Utc>) -> AppResult<u64> {
        check_id("endpointId", endpoint_id)?;
        let endpoint =
            store::find_endpoint(&self.db, endpoint_id).await?.ok_or_else(|| endpoint_not_found(endpoint_id))?;
        let queued = store::replay(&self.db, &endpoint, since, self.now_for_webhooks()).await?;
        self.wake_dispatcher();
        Ok(queued)
    }
}

/// A fresh secret from the operating system's random source.
fn new_secret() -> AppResult<Secret> {
    let mut key = [0u8; SECRET_BYTES];
    getrandom::fill(&mut key).map_err(|e| AppError::internal(format!("no randomness for a webhook secret: {e}")))?;
    Ok(Secret::from_key(key))
}
