//! The dispatcher: one loop per instance that fans new outbox rows out into deliveries,
//! claims due deliveries in batches and sends each in a task of its own, within a global
//! and a per-endpoint limit. It wakes when this instance commits a change, and polls for
//! retries that come due and for changes made by other instances.
//!
//! At least once: a delivery is claimed (SENDING, under a lease) before it is sent and
//! recorded after. A dispatcher that dies in between leaves the claim to run out, and the
//! delivery is attempted again, by any instance, with the same webhook-id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::{Sender, WebhookSettings};
use crate::domain::webhooks::outcome::{DeliveryStatus, EndpointChange, decide};
use crate::domain::webhooks::signing::{Secret, signature_header};
use crate::domain::webhooks::{OutboxEvent, render_body, signing_secrets};
use crate::persistence::webhooks::{
    self as store, AttemptRecord, Claimed, EndpointRecord, OutboxRow, Outcome, claimed_context,
};

/// Stops a running dispatcher; dropping it stops the dispatcher too.
pub struct DispatcherHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl DispatcherHandle {
    /// Stops claiming, lets the attempts in flight finish (each is bounded by the
    /// timeout) and records them, then returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the webhook dispatcher ended abnormally");
        }
    }

    /// Stops at once, as a crash would: attempts in flight are dropped unrecorded and
    /// their claims run out. For tests of what happens then.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Starts the dispatcher. `wake` is notified after this instance commits outbox rows.
pub fn spawn_dispatcher(
    db: DatabaseConnection,
    wake: Arc<Notify>,
    settings: WebhookSettings,
) -> Result<DispatcherHandle, reqwest::Error> {
    let sender = Sender::new(settings.address, settings.timeout)?;
    let dispatcher = Arc::new(Dispatcher {
        db,
        sender,
        global: Arc::new(Semaphore::new(settings.concurrency.max(1))),
        held: Mutex::new(Held::default()),
        freed: Notify::new(),
        settings,
    });
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(dispatcher.run(wake, stopped));
    Ok(DispatcherHandle { stop, task })
}

struct Dispatcher {
    db: DatabaseConnection,
    sender: Sender,
    settings: WebhookSettings,
    /// Attempts in flight on this instance.
    global: Arc<Semaphore>,
    held: Mutex<Held>,
    /// A claim was let go while the dispatcher held all it may.
    freed: Notify,
}

/// Claims this instance holds (waiting for a slot or in flight), per endpoint.
#[derive(Default)]
struct Held {
    total: usize,
    /// Count and the endpoint's own limit, dropped when its count falls to zero.
    endpoints: HashMap<String, (usize, Arc<Semaphore>)>,
}

impl Dispatcher {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        // The counts stay consistent whatever a panicking holder was doing: every change
        // is one statement.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims held at most: enough to keep every slot busy with the next batch queued.
    fn max_held(&self) -> usize {
        self.settings.concurrency.max(1) * 2
    }

    /// Claims held for one endpoint at most, so one endpoint's backlog never fills the
    /// instance's queue and a slow endpoint delays no other.
    fn max_held_per_endpoint(&self) -> usize {
        self.settings.endpoint_concurrency.max(1) * 4
    }

    /// Claims taken per round, and the count at which an endpoint is left out of claims:
    /// half the per-endpoint maximum. An endpoint below it can take a whole round and stay
    /// within its maximum, whichever endpoints the round's claims turn out to be for. An
    /// endpoint falling below it wakes the loop, so one endpoint's backlog drains at the
    /// pace of its answers rather than of the poll interval.
    fn endpoint_round(&self) -> usize {
        (self.max_held_per_endpoint() / 2).max(1)
    }

    async fn run(self: Arc<Self>, wake: Arc<Notify>, mut stopped: watch::Receiver<bool>) {
        // Outcomes are written by a task of their own, many per write: attempts finish
        // while the previous write is in flight, and go together in the next.
        let (outcomes, recorded) = mpsc::channel(self.max_held().max(1));
        let recorder = tokio::spawn(record(self.db.clone(), recorded));
        let mut inflight = JoinSet::new();
        let mut pruned_at: Option<Instant> = None;
        loop {
            if *stopped.borrow() {
                break;
            }
            while let Some(done) = inflight.try_join_next() {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a webhook attempt task failed");
                }
            }
            let more = self.round(&mut inflight, &outcomes).await;
            if pruned_at.is_none_or(|at| at.elapsed() >= self.settings.prune_interval) {
                pruned_at = Some(Instant::now());
                self.prune().await;
            }
            if more {
                // A full batch: there is likely more now. Yield, so attempts get to run.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                () = wake.notified() => {}
                () = self.freed.notified() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
                // Dropping the handle stops the dispatcher as `shutdown` does.
                changed = stopped.changed() => if changed.is_err() { break },
            }
        }
        while let Some(done) = inflight.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "a webhook attempt task failed");
            }
        }
        // Every attempt has sent its outcome; the recorder writes what is left and ends.
        drop(outcomes);
        if let Err(e) = recorder.await {
            tracing::error!(error = %e, "the webhook recorder failed");
        }
    }

    /// One fan-out and one claim. True when either was full (more is probably waiting).
    async fn round(self: &Arc<Self>, inflight: &mut JoinSet<()>, outcomes: &mpsc::Sender<Outcome>) -> bool {
        let batch = self.settings.batch.max(1);
        let now = self.settings.clock.now();
        let mut more = match store::fan_out(&self.db, batch as u64, now).await {
            Ok(n) => n == batch as u64,
            Err(e) => {
                tracing::warn!(error = %e, "fanning out the outbox failed; retrying");
                false
            }
        };
        let (room, busy) = {
            let held = self.held();
            let busy: Vec<String> = held
                .endpoints
                .iter()
                .filter(|(_, (n, _))| *n >= self.endpoint_round())
                .map(|(id, _)| id.clone())
                .collect();
            (self.max_held().saturating_sub(held.total), busy)
        };
        let limit = room.min(batch).min(self.endpoint_round());
        if limit == 0 {
            return more;
        }
        let lease_until = now + chrono::Duration::from_std(self.settings.lease).unwrap_or_default();
        let claimed = match store::claim(&self.db, limit, &busy, now, lease_until).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "claiming webhook deliveries failed; retrying");
                return more;
            }
        };
        more |= claimed.len() == limit;
        if claimed.is_empty() {
            return more;
        }
        let (endpoints, events) = match claimed_context(&self.db, &claimed).await {
            Ok(context) => context,
            Err(e) => {
                // The claims run out and are attempted later.
                tracing::warn!(error = %e, "loading claimed webhook deliveries failed");
                return more;
            }
        };
        let endpoints: HashMap<String, Arc<EndpointRecord>> =
            endpoints.into_iter().map(|(id, e)| (id, Arc::new(e))).collect();
        for c in claimed {
            let endpoint = endpoints.get(&c.endpoint_id).cloned();
            let event = events.get(&c.outbox_id).cloned();
            let limit = self.hold(&c.endpoint_id);
            let this = self.clone();
            let outcomes = outcomes.clone();
            inflight.spawn(async move {
                {
                    // The endpoint's slot first: attempts queued behind a slow endpoint
                    // wait without taking any of the slots other endpoints need.
                    let _endpoint_slot = limit.acquire_owned().await;
                    let _slot = this.global.clone().acquire_owned().await;
                    if let Some(outcome) = this.attempt(&c, endpoint.as_deref(), event.as_ref()).await {
                        // Only fails once the recorder is gone: the claim then runs out and
                        // the delivery is attempted again, with the same id.
                        let _ = outcomes.send(outcome).await;
                    }
                }
                this.unhold(&c.endpoint_id);
            });
        }
        more
    }

    /// Counts a claim for its endpoint; returns the endpoint's limit.
    fn hold(&self, endpoint: &str) -> Arc<Semaphore> {
        let limit = self.settings.endpoint_concurrency.max(1);
        let mut held = self.held();
        held.total += 1;
        let entry = held.endpoints.entry(endpoint.to_string()).or_insert_with(|| (0, Arc::new(Semaphore::new(limit))));
        entry.0 += 1;
        entry.1.clone()
    }

    fn unhold(&self, endpoint: &str) {
        let mut held = self.held();
        let mut was_full = held.total >= self.max_held();
        held.total = held.total.saturating_sub(1);
        if let Some(entry) = held.endpoints.get_mut(endpoint) {
            was_full |= entry.0 == self.endpoint_round();
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 == 0 {
                held.endpoints.remove(endpoint);
            }
        }
        drop(held);
        if was_full {
            self.freed.notify_one();
        }
    }

    /// Sends one claimed delivery; returns what happened, to record.
    async fn attempt(
        &self,
        c: &Claimed,
        endpoint: Option<&EndpointRecord>,
        event: Option<&OutboxRow>,
    ) -> Option<Outcome> {
        let now = self.settings.clock.now();
        let Some(endpoint) = endpoint else {
            // Deleted since the claim: its deliveries went with it.
            return None;
        };
        let timeout = chrono::Duration::from_std(self.settings.timeout).unwrap_or_default();
        if !endpoint.enabled || now + timeout + chrono::Duration::seconds(1) > c.lease_until {
            // Too late to start: the attempt could outlive the claim and overlap another
            // instance's. Give it back to be claimed again.
            if let Err(e) = store::release(&self.db, &[c], now).await {
                tracing::warn!(error = %e, delivery = %c.id, "releasing a webhook delivery failed");
            }
            return None;
        }
        let prepared = event
            .ok_or_else(|| "the event is no longer in the outbox".to_string())
            .and_then(body_of)
            .and_then(|body| secrets_of(endpoint, now).map(|keys| (body, keys)));
        let (body, (current, previous)) = match prepared {
            Ok(prepared) => prepared,
            Err(why) => {
                // Nothing to send, now or later.
                tracing::error!(delivery = %c.id, error = %why, "a webhook delivery cannot be sent");
                let attempt = AttemptRecord {
                    number: c.attempts_before + c.attempts + 1,
                    attempted_at: now,
                    status_code: None,
                    latency_ms: 0,
                    error: Some(why),
                    response_body: None,
                };
                return Some(outcome(c, attempt, DeliveryStatus::Dead, None, None, None, now));
            }
        };
        let secrets = signing_secrets(&current, previous.as_ref(), endpoint.previous_secret_expires_at, now);
        let timestamp = now.timestamp();
        let signature = signature_header(&secrets, &c.message_id, timestamp, body.as_bytes());
        let started = Instant::now();
        let sent = self.sender.send(&endpoint.url, &c.message_id, timestamp, &signature, body).await;
        let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let after = self.settings.clock.now();
        let made = u32::try_from(c.attempts + 1).unwrap_or(u32::MAX);
        let decision = decide(&self.settings.policy, &sent.result, made, endpoint.failing_since, seed(&c.id), after);
        let (failing_since, disable) = match decision.endpoint {
            EndpointChange::Healthy => (endpoint.failing_since.is_some().then_some(None), None),
            EndpointChange::Failing { since } => (endpoint.failing_since.is_none().then_some(Some(since)), None),
            EndpointChange::Disable { reason } => {
                tracing::warn!(endpoint = %endpoint.id, %reason, "disabling a webhook endpoint");
                (None, Some(reason))
            }
        };
        let attempt = AttemptRecord {
            number: c.attempts_before + c.attempts + 1,
            attempted_at: now,
            status_code: sent.status_code.map(i32::from),
            latency_ms,
            error: sent.error,
            response_body: sent.body,
        };
        Some(outcome(c, attempt, decision.status, decision.next_attempt_at, failing_since, disable, after))
    }

    async fn prune(&self) {
        let retention = chrono::Duration::from_std(self.settings.retention).unwrap_or(chrono::Duration::MAX);
        let Some(cutoff) = self.settings.clock.now().checked_sub_signed(retention) else { return };
        loop {
            match store::prune(&self.db, cutoff, 10_000).await {
                Ok(n) if n > 0 => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "pruning old webhook deliveries failed");
                    break;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn outcome(
    claimed: &Claimed,
    attempt: AttemptRecord,
    status: DeliveryStatus,
    next_attempt_at: Option<DateTime<Utc>>,
    failing_since: Option<Option<DateTime<Utc>>>,
    disable: Option<String>,
    now: DateTime<Utc>,
) -> Outcome {
    Outcome {
        delivery_id: claimed.id.clone(),
        lease: claimed.lease.clone(),
        endpoint_id: claimed.endpoint_id.clone(),
        attempt,
        round_attempts: claimed.attempts + 1,
        status,
        next_attempt_at,
        failing_since,
        disable,
        now,
    }
}

/// Writes outcomes as they come, all that are waiting in one go, until every sender is gone.
async fn record(db: DatabaseConnection, mut recorded: mpsc::Receiver<Outcome>) {
    const MOST: usize = 500;
    let mut batch = Vec::with_capacity(MOST);
    while recorded.recv_many(&mut batch, MOST).await > 0 {
        if let Err(e) = store::record_all(&db, &batch).await {
            // Their claims run out and the deliveries are attempted again, same ids.
            tracing::warn!(error = %e, attempts = batch.len(), "recording webhook attempts failed");
        }
        batch.clear();
    }
}

fn body_of(row: &OutboxRow) -> Result<String, String> {
    render_body(&OutboxEvent {
        id: row.id,
        kind: &row.kind,
        owner_key: &row.subject_id,
        flow_key: &row.flow_key,
        flow_version: row.flow_version,
        step_key: row.step_key.as_deref(),
        details: &row.payload,
        created_at: row.created_at,
    })
}

/// The endpoint's current secret and, while it still signs, the one before it.
fn secrets_of(endpoint: &EndpointRecord, now: DateTime<Utc>) -> Result<(Secret, Option<Secret>), String> {
    let unreadable = |_| format!("the secret of endpoint {} is unreadable", endpoint.id);
    let current = Secret::parse(&endpoint.secret).map_err(unreadable)?;
    let previous = match (&endpoint.previous_secret, endpoint.previous_secret_expires_at) {
        (Some(text), Some(until)) if now < until => Some(Secret::parse(text).map_err(unreadable)?),
        _ => None,
    };
    Ok((current, previous))
}

/// A delivery's jitter seed: stable for the delivery, different across deliveries.
fn seed(id: &str) -> u64 {
    // FNV-1a: tiny, stable across builds and platforms (unlike the std hasher).
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}
