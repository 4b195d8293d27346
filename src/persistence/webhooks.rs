//! Webhook endpoints, deliveries and attempts: the rows, the fan-out of outbox rows into
//! deliveries, and the claim that hands due deliveries to one dispatcher at a time (on
//! PostgreSQL with `FOR UPDATE SKIP LOCKED`, so instances never wait on each other's
//! claims). Which delivery is due and what an outcome means is decided elsewhere.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{webhook_attempt, webhook_delivery, webhook_endpoint};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, Statement, TryInsertResult, Value,
};

use super::writes::{Writes, row_chunks};
use super::{begin_write, is_postgres};
use crate::domain::webhooks::{DeliveryStatus, EventType, Subscription};

/// An endpoint as stored. The secrets are here for the dispatcher; the API never shows
/// them, and its Debug output hides them.
#[derive(Clone, PartialEq)]
pub struct EndpointRecord {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for EndpointRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointRecord")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("event_types", &self.event_types)
            .field("enabled", &self.enabled)
            .field("secret", &"***")
            .field("previous_secret", &self.previous_secret.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl TryFrom<webhook_endpoint::Model> for EndpointRecord {
    type Error = DbErr;

    fn try_from(row: webhook_endpoint::Model) -> Result<Self, DbErr> {
        let event_types: Vec<String> = serde_json::from_value(row.event_types)
            .map_err(|e| DbErr::Custom(format!("webhook endpoint {}: event_types: {e}", row.id)))?;
        Ok(EndpointRecord {
            id: row.id,
            url: row.url,
            event_types,
            description: row.description,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            secret: row.secret,
            previous_secret: row.previous_secret,
            previous_secret_expires_at: row.previous_secret_expires_at,
            failing_since: row.failing_since,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

pub async fn insert_endpoint(db: &impl ConnectionTrait, e: &EndpointRecord) -> Result<(), DbErr> {
    let row = webhook_endpoint::ActiveModel {
        id: Set(e.id.clone()),
        url: Set(e.url.clone()),
        event_types: Set(serde_json::Value::from(e.event_types.clone())),
        description: Set(e.description.clone()),
        enabled: Set(e.enabled),
        disabled_reason: Set(e.disabled_reason.clone()),
        secret: Set(e.secret.clone()),
        previous_secret: Set(e.previous_secret.clone()),
        previous_secret_expires_at: Set(e.previous_secret_expires_at),
        failing_since: Set(e.failing_since),
        created_at: Set(e.created_at),
        updated_at: Set(e.updated_at),
    };
    webhook_endpoint::Entity::insert(row).exec_without_returning(db).await?;
    Ok(())
}

pub async fn find_endpoint(db: &impl ConnectionTrait, id: &str) -> Result<Option<EndpointRecord>, DbErr> {
    webhook_endpoint::Entity::find_by_id(id.to_string()).one(db).await?.map(TryInto::try_into).transpose()
}

/// Every endpoint, oldest first.
pub async fn list_endpoints(db: &impl ConnectionTrait) -> Result<Vec<EndpointRecord>, DbErr> {
    let rows = webhook_endpoint::Entity::find()
        .order_by_asc(webhook_endpoint::Column::CreatedAt)
        .order_by_asc(webhook_endpoint::Column::Id)
        .all(db)
        .await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

async fn endpoints_by_id(db: &impl ConnectionTrait, ids: Vec<String>) -> Result<Vec<EndpointRecord>, DbErr> {
    let rows = webhook_endpoint::Entity::find().filter(webhook_endpoint::Column::Id.is_in(ids)).all(db).await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// What an admin changes about an endpoint; None leaves a field as it is.
#[derive(Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// Some(None) clears the description.
    pub description: Option<Option<String>>,
    /// Enabling also clears the reason it was disabled and its failing streak.
    pub enabled: Option<bool>,
    pub disabled_reason: Option<String>,
    /// A rotation: the new secret, and the old one with the end of its overlap.
    pub rotation: Option<(String, String, DateTime<Utc>)>,
}

/// Changes only the columns asked for, so an admin's edit never undoes what a dispatcher
/// recorded meanwhile (a failing streak, a 410 that disabled the endpoint). Returns
/// whether the endpoint exists.
pub async fn update_endpoint(
    db: &impl ConnectionTrait,
    id: &str,
    changes: EndpointChanges,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    use webhook_endpoint::Column as C;
    let mut update = webhook_endpoint::Entity::update_many().col_expr(C::UpdatedAt, now.into());
    if let Some(url) = changes.url {
        update = update.col_expr(C::Url, url.into());
    }
    if let Some(types) = changes.event_types {
        update = update.col_expr(C::EventTypes, serde_json::Value::from(types).into());
    }
    if let Some(description) = changes.description {
        update = update.col_expr(C::Description, description.into());
    }
    match changes.enabled {
        Some(true) => {
            update = update
                .col_expr(C::Enabled, true.into())
                .col_expr(C::DisabledReason, Option::<String>::None.into())
                .col_expr(C::FailingSince, Option::<DateTime<Utc>>::None.into());
        }
        Some(false) => {
            update =
                update.col_expr(C::Enabled, false.into()).col_expr(C::DisabledReason, changes.disabled_reason.into());
        }
        None => {}
    }
    if let Some((secret, previous, expires_at)) = changes.rotation {
        update = update
            .col_expr(C::Secret, secret.into())
            .col_expr(C::PreviousSecret, Some(previous).into())
            .col_expr(C::PreviousSecretExpiresAt, Some(expires_at).into());
    }
    let result = update.filter(C::Id.eq(id)).exec(db).await?;
    match changes.enabled {
        Some(false) => park_deliveries(db, id).await?,
        Some(true) => {
            // What waited for it goes now, not when its backoff would have said.
            let sql = "UPDATE webhook_deliveries SET next_attempt_at = $1 \
                       WHERE endpoint_id = $2 AND status IN ('PENDING', 'FAILED')";
            db.execute_raw(statement(db, sql.to_string(), vec![now.into(), id.to_string().into()])).await?;
        }
        None => {}
    }
    Ok(result.rows_affected > 0)
}

/// Where the waiting deliveries of a disabled endpoint are parked: due never, so claims
/// do not scan past them again and again (a day's backlog of a dead endpoint would
/// otherwise be read on every poll). Enabling the endpoint makes them due at once.
pub fn parked() -> DateTime<Utc> {
    // 9999-12-31T00:00:00Z: within both backends' range.
    DateTime::<Utc>::from_timestamp(253_402_214_400, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn park_statement(backend: sea_orm::DbBackend, endpoint_id: &str) -> Statement {
    Statement::from_sql_and_values(
        backend,
        "UPDATE webhook_deliveries SET next_attempt_at = $1 WHERE endpoint_id = $2 AND status IN ('PENDING', 'FAILED')",
        [parked().into(), endpoint_id.to_string().into()],
    )
}

async fn park_deliveries(db: &impl ConnectionTrait, endpoint_id: &str) -> Result<(), DbErr> {
    db.execute_raw(park_statement(db.get_database_backend(), endpoint_id)).await?;
    Ok(())
}

/// Deletes an endpoint with its deliveries and their attempts. Returns whether it existed.
pub async fn delete_endpoint(db: &impl ConnectionTrait, id: &str) -> Result<bool, DbErr> {
    let result = webhook_endpoint::Entity::delete_by_id(id.to_string()).exec(db).await?;
    Ok(result.rows_affected > 0)
}

/// `$start, $start+1, ...`: `n` placeholders. Both backends read `$n` (SQLite numbers
/// them in order of first appearance, which is how they are written here).
fn placeholders(start: usize, n: usize) -> String {
    (start..start + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

fn statement(db: &impl ConnectionTrait, sql: String, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(db.get_database_backend(), sql, values)
}

/// A new delivery row, due now.
fn new_delivery(
    outbox_id: i64,
    endpoint_id: &str,
    event_type: EventType,
    now: DateTime<Utc>,
) -> webhook_delivery::ActiveModel {
    let id = uuid::Uuid::now_v7();
    webhook_delivery::ActiveModel {
        id: Set(id.to_string()),
        outbox_id: Set(outbox_id),
        endpoint_id: Set(endpoint_id.to_string()),
        message_id: Set(format!("msg_{}", id.simple())),
        event_type: Set(event_type.name().to_string()),
        status: Set(DeliveryStatus::Pending.name().to_string()),
        attempts: Set(0),
        attempts_before: Set(0),
        next_attempt_at: Set(now),
        lease: Set(None),
        last_attempt_at: Set(None),
        last_status_code: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

/// Inserts deliveries; one that exists for its (outbox row, endpoint) is left alone.
async fn insert_deliveries(db: &impl ConnectionTrait, rows: Vec<webhook_delivery::ActiveModel>) -> Result<u64, DbErr> {
    let mut inserted = 0;
    for chunk in row_chunks(rows) {
        let result = webhook_delivery::Entity::insert_many(chunk)
            .on_conflict_do_nothing_on([webhook_delivery::Column::OutboxId, webhook_delivery::Column::EndpointId])
            .exec_without_returning(db)
            .await?;
        if let TryInsertResult::Inserted(n) = result {
            inserted += n;
        }
    }
    Ok(inserted)
}

/// Turns up to `limit` outbox rows not fanned out yet into deliveries, one per enabled
/// endpoint subscribed to the row's event type, and marks the rows fanned out, in one
/// transaction. On PostgreSQL rows another instance is fanning out are skipped, not
/// waited for; should a row be fanned out twice anyway, the unique (outbox row,
/// endpoint) key makes the second time insert nothing. Returns the rows handled.
pub async fn fan_out(db: &DatabaseConnection, limit: u64, now: DateTime<Utc>) -> Result<u64, DbErr> {
    // A read first: most rounds find nothing, and on SQLite a write transaction would take
    // the database's one write lock from the requests for nothing.
    let waiting = "SELECT id FROM outbox WHERE delivered_at IS NULL LIMIT 1".to_string();
    if db.query_one_raw(statement(db, waiting, Vec::new())).await?.is_none() {
        return Ok(0);
    }
    let txn = begin_write(db).await?;
    let lock = if is_postgres(&txn) { " FOR UPDATE SKIP LOCKED" } else { "" };
    let sql = format!("SELECT id, kind FROM outbox WHERE delivered_at IS NULL ORDER BY id LIMIT {limit}{lock}");
    let rows = txn.query_all_raw(statement(&txn, sql, Vec::new())).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.try_get_by("id")?;
        let kind: String = row.try_get_by("kind")?;
        events.push((id, EventType::of_outbox_kind(&kind)));
    }
    let endpoints: Vec<(String, Subscription)> = webhook_endpoint::Entity::find()
        .filter(webhook_endpoint::Column::Enabled.eq(true))
        .all(&txn)
        .await?
        .into_iter()
        .map(|e| {
            let names: Vec<String> = serde_json::from_value(e.event_types).unwrap_or_default();
            (e.id, Subscription::from_stored(&names))
        })
        .collect();
    let deliveries: Vec<webhook_delivery::ActiveModel> = events
        .iter()
        // An outbox kind with no event type (none yet) is marked fanned out with nothing to send.
        .filter_map(|(id, event_type)| event_type.map(|t| (*id, t)))
        .flat_map(|(id, event_type)| {
            endpoints
                .iter()
                .filter(move |(_, subscription)| subscription.includes(event_type))
                .map(move |(endpoint, _)| new_delivery(id, endpoint, event_type, now))
        })
        .collect();
    insert_deliveries(&txn, deliveries).await?;
    let ids: Vec<i64> = events.iter().map(|(id, _)| *id).collect();
    for chunk in ids.chunks(1000) {
        let sql = format!("UPDATE outbox SET delivered_at = $1 WHERE id IN ({})", placeholders(2, chunk.len()));
        let mut values: Vec<Value> = vec![now.into()];
        values.extend(chunk.iter().map(|id| Value::from(*id)));
        txn.execute_raw(statement(&txn, sql, values)).await?;
    }
    txn.commit().await?;
    Ok(ids.len() as u64)
}

/// A delivery a dispatcher holds until `lease_until`, with what it needs to send it.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub id: String,
    pub outbox_id: i64,
    pub endpoint_id: String,
    pub message_id: String,
    /// Attempts made before this one in the current round of the schedule.
    pub attempts: i32,
    /// Attempts of earlier rounds (redeliveries and replays start a new round).
    pub attempts_before: i32,
    pub lease: String,
    pub lease_until: DateTime<Utc>,
}

/// Claims up to `limit` due deliveries of enabled endpoints, leaving out `busy`
/// endpoints (the caller holds enough of theirs already): each becomes SENDING with a
/// fresh lease until `lease_until`. A claim whose holder dies is claimable again once its
/// lease runs out, and is then attempted again with the same webhook-id. One statement:
/// on PostgreSQL, rows another instance is claiming are skipped, not waited for.
pub async fn claim(
    db: &DatabaseConnection,
    limit: usize,
    busy: &[String],
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Vec<Claimed>, DbErr> {
    // A read first, for the same reason as in `fan_out`.
    let due = "SELECT id FROM webhook_deliveries WHERE status IN ('PENDING', 'SENDING', 'FAILED') \
               AND next_attempt_at <= $1 LIMIT 1";
    if db.query_one_raw(statement(db, due.to_string(), vec![now.into()])).await?.is_none() {
        return Ok(Vec::new());
    }
    let lease = uuid::Uuid::new_v4().simple().to_string();
    let lock = if is_postgres(db) { " FOR UPDATE OF d SKIP LOCKED" } else { "" };
    let exclude = if busy.is_empty() {
        String::new()
    } else {
        format!(" AND d.endpoint_id NOT IN ({})", placeholders(5, busy.len()))
    };
    let sql = format!(
        "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, lease = $3, updated_at = $4 \
         WHERE id IN (SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
           WHERE d.status IN ('PENDING', 'SENDING', 'FAILED') AND d.next_attempt_at <= $4 AND e.enabled{exclude} \
           ORDER BY d.next_attempt_at LIMIT {limit}{lock}) \
         RETURNING id, outbox_id, endpoint_id, message_id, attempts, attempts_before"
    );
    let mut values: Vec<Value> =
        vec![DeliveryStatus::Sending.name().into(), lease_until.into(), lease.clone().into(), now.into()];
    values.extend(busy.iter().map(|id| Value::from(id.clone())));
    let rows = db.query_all_raw(statement(db, sql, values)).await?;
    rows.iter()
        .map(|row| {
            Ok(Claimed {
                id: row.try_get_by("id")?,
                outbox_id: row.try_get_by("outbox_id")?,
                endpoint_id: row.try_get_by("endpoint_id")?,
                message_id: row.try_get_by("message_id")?,
                attempts: row.try_get_by("attempts")?,
                attempts_before: row.try_get_by("attempts_before")?,
                lease: lease.clone(),
                lease_until,
            })
        })
        .collect()
}

/// An outbox row, as the webhook payload is rendered from it.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub id: i64,
    pub kind: String,
    pub subject_id: String,
    pub flow_key: String,
    pub flow_version: i32,
    pub step_key: Option<String>,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl From<entity::outbox::Model> for OutboxRow {
    fn from(r: entity::outbox::Model) -> Self {
        OutboxRow {
            id: r.id,
            kind: r.kind,
            subject_id: r.subject_id,
            flow_key: r.flow_key,
            flow_version: r.flow_version,
            step_key: r.step_key,
            payload: r.payload,
            created_at: r.created_at,
        }
    }
}

/// The endpoints and outbox rows of claimed deliveries, by id.
pub async fn claimed_context(
    db: &DatabaseConnection,
    claimed: &[Claimed],
) -> Result<(HashMap<String, EndpointRecord>, HashMap<i64, OutboxRow>), DbErr> {
    let mut endpoint_ids: Vec<String> = claimed.iter().map(|c| c.endpoint_id.clone()).collect();
    endpoint_ids.sort_unstable();
    endpoint_ids.dedup();
    let endpoints = endpoints_by_id(db, endpoint_ids).await?.into_iter().map(|e| (e.id.clone(), e)).collect();
    let mut outbox_ids: Vec<i64> = claimed.iter().map(|c| c.outbox_id).collect();
    outbox_ids.sort_unstable();
    outbox_ids.dedup();
    let mut rows = HashMap::with_capacity(outbox_ids.len());
    for chunk in outbox_ids.chunks(1000) {
        let found = entity::outbox::Entity::find()
            .filter(entity::outbox::Column::Id.is_in(chunk.iter().copied()))
            .all(db)
            .await?;
        rows.extend(found.into_iter().map(|r| (r.id, OutboxRow::from(r))));
    }
    Ok((endpoints, rows))
}

/// One attempt as logged.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptRecord {
    pub number: i32,
    pub attempted_at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub response_body: Option<String>,
}

/// What became of an attempt, to record.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub delivery_id: String,
    /// The claim's lease: only its holder changes the delivery.
    pub lease: String,
    pub endpoint_id: String,
    pub attempt: AttemptRecord,
    /// Attempts in the delivery's current round of the schedule, this one included.
    pub round_attempts: i32,
    pub status: DeliveryStatus,
    /// For FAILED: when to try again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The endpoint's failing streak, when it changes: Some(None) ends it.
    pub failing_since: Option<Option<DateTime<Utc>>>,
    /// Set when the endpoint is to be disabled.
    pub disable: Option<String>,
    pub now: DateTime<Utc>,
}

/// Logs attempts and applies their outcomes, many at once: at thousands of deliveries a
/// second, one write per attempt would make the database the bottleneck. A delivery
/// changes only while the claim's lease is still the one taken (a holder that lost its
/// lease logs what it did and changes nothing). On PostgreSQL the attempts and the
/// deliveries are one statement (see `Writes`); on SQLite, one transaction. Endpoint
/// changes (a failing streak starting or ending, a disable) are rare and follow.
pub async fn record_all(db: &DatabaseConnection, outcomes: &[Outcome]) -> Result<(), DbErr> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let backend = db.get_database_backend();
    let mut writes = Writes::new(backend);
    for chunk in outcomes.chunks(500) {
        let attempts = chunk.iter().map(|o| webhook_attempt::ActiveModel {
            id: NotSet,
            delivery_id: Set(o.delivery_id.clone()),
            number: Set(o.attempt.number),
            attempted_at: Set(o.attempt.attempted_at),
            status_code: Set(o.attempt.status_code),
            latency_ms: Set(o.attempt.latency_ms),
            error: Set(o.attempt.error.clone()),
            response_body: Set(o.attempt.response_body.clone()),
        });
        writes.push(&webhook_attempt::Entity::insert_many(attempts).into_query());
        if is_postgres(db) {
            writes.push_statement(update_deliveries_pg(chunk));
        } else {
            for o in chunk {
                writes.push_statement(update_delivery(backend, o));
            }
        }
    }
    let mut endpoint_changes = Vec::new();
    for o in outcomes {
        match o.failing_since {
            Some(None) => endpoint_changes.push(Statement::from_sql_and_values(
                backend,
                "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
                [o.endpoint_id.clone().into()],
            )),
            Some(Some(since)) => endpoint_changes.push(Statement::from_sql_and_values(
                backend,
                "UPDATE webhook_endpoints SET failing_since = $1 WHERE id = $2 AND failing_since IS NULL",
                [since.into(), o.endpoint_id.clone().into()],
            )),
            None => {}
        }
        if let Some(reason) = &o.disable {
            endpoint_changes.push(Statement::from_sql_and_values(
                backend,
                "UPDATE webhook_endpoints SET enabled = $1, disabled_reason = $2, updated_at = $3 \
                 WHERE id = $4 AND enabled",
                [false.into(), reason.clone().into(), o.now.into(), o.endpoint_id.clone().into()],
            ));
            // After the deliveries' own updates, which may have scheduled a retry.
            endpoint_changes.push(park_statement(backend, &o.endpoint_id));
        }
    }
    if is_postgres(db) && endpoint_changes.is_empty() {
        return writes.run(db).await;
    }
    // With endpoint changes, one transaction: a reader must never see a delivery dead of
    // a 410 while its endpoint is still enabled (a CI run caught that window). Separate
    // statements: two changes to one endpoint in one statement would keep only one.
    let txn = begin_write(db).await?;
    writes.run(&txn).await?;
    for statement in endpoint_changes {
        txn.execute_raw(statement).await?;
    }
    txn.commit().await
}

/// One delivery's outcome, for SQLite (where one statement per row costs no round trip).
fn update_delivery(backend: sea_orm::DbBackend, o: &Outcome) -> Statement {
    Statement::from_sql_and_values(
        backend,
        "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3, lease = NULL, \
         last_attempt_at = $4, last_status_code = $5, last_error = $6, updated_at = $7 \
         WHERE id = $8 AND lease = $9",
        [
            o.status.name().into(),
            o.round_attempts.into(),
            o.next_attempt_at.unwrap_or(o.now).into(),
            o.attempt.attempted_at.into(),
            o.attempt.status_code.into(),
            o.attempt.error.clone().into(),
            o.now.into(),
            o.delivery_id.clone().into(),
            o.lease.clone().into(),
        ],
    )
}

/// Many deliveries' outcomes in one PostgreSQL statement: an UPDATE joined to a VALUES
/// list (typed, as parameters in a VALUES list have no column to take a type from).
fn update_deliveries_pg(outcomes: &[Outcome]) -> Statement {
    const TYPES: [&str; 9] =
        ["text", "text", "text", "int", "timestamptz", "timestamptz", "int", "text", "timestamptz"];
    let mut rows = Vec::with_capacity(outcomes.len());
    let mut values: Vec<Value> = Vec::with_capacity(outcomes.len() * TYPES.len());
    for o in outcomes {
        let base = values.len();
        let row: Vec<String> = TYPES.iter().enumerate().map(|(i, t)| format!("${}::{t}", base + i + 1)).collect();
        rows.push(format!("({})", row.join(", ")));
        values.extend([
            o.delivery_id.clone().into(),
            o.lease.clone().into(),
            o.status.name().into(),
            o.round_attempts.into(),
            o.next_attempt_at.unwrap_or(o.now).into(),
            o.attempt.attempted_at.into(),
            o.attempt.status_code.into(),
            o.attempt.error.clone().into(),
            o.now.into(),
        ]);
    }
    let sql = format!(
        "UPDATE webhook_deliveries AS d SET status = v.status, attempts = v.attempts, \
         next_attempt_at = v.next_attempt_at, lease = NULL, last_attempt_at = v.last_attempt_at, \
         last_status_code = v.last_status_code, last_error = v.last_error, updated_at = v.updated_at \
         FROM (VALUES {}) AS v(id, lease, status, attempts, next_attempt_at, last_attempt_at, \
         last_status_code, last_error, updated_at) \
         WHERE d.id = v.id AND d.lease = v.lease",
        rows.join(", ")
    );
    Statement::from_sql_and_values(sea_orm::DbBackend::Postgres, sql, values)
}

/// Gives back claims that were never attempted (the dispatcher stopped or held them too
/// long), so they are due again at once rather than when their lease runs out.
pub async fn release(db: &DatabaseConnection, claimed: &[&Claimed], now: DateTime<Utc>) -> Result<(), DbErr> {
    for c in claimed {
        let status = if c.attempts == 0 { DeliveryStatus::Pending } else { DeliveryStatus::Failed };
        db.execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, lease = NULL, updated_at = $2 \
             WHERE id = $3 AND lease = $4",
            [status.name().into(), now.into(), c.id.clone().into(), c.lease.clone().into()],
        ))
        .await?;
    }
    Ok(())
}

/// A delivery as the log shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryRecord {
    pub id: String,
    pub outbox_id: i64,
    pub endpoint_id: String,
    pub message_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts over the delivery's life, all rounds.
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<webhook_delivery::Model> for DeliveryRecord {
    type Error = DbErr;

    fn try_from(row: webhook_delivery::Model) -> Result<Self, DbErr> {
        Ok(DeliveryRecord {
            status: super::parse_name(&row.status, DeliveryStatus::parse, "delivery status")?,
            id: row.id,
            outbox_id: row.outbox_id,
            endpoint_id: row.endpoint_id,
            message_id: row.message_id,
            event_type: row.event_type,
            attempts: row.attempts_before + row.attempts,
            next_attempt_at: row.next_attempt_at,
            last_attempt_at: row.last_attempt_at,
            last_status_code: row.last_status_code,
            last_error: row.last_error,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

pub async fn find_delivery(db: &impl ConnectionTrait, id: &str) -> Result<Option<DeliveryRecord>, DbErr> {
    webhook_delivery::Entity::find_by_id(id.to_string()).one(db).await?.map(TryInto::try_into).transpose()
}

/// Which deliveries of an endpoint the log shows.
pub struct DeliveryFilter<'a> {
    pub endpoint_id: &'a str,
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<&'a str>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Older than this delivery (the cursor of the page before).
    pub before_id: Option<&'a str>,
    pub limit: u64,
}

/// An endpoint's deliveries, newest first.
pub async fn list_deliveries(
    db: &impl ConnectionTrait,
    filter: &DeliveryFilter<'_>,
) -> Result<Vec<DeliveryRecord>, DbErr> {
    use webhook_delivery::Column as C;
    let mut query = webhook_delivery::Entity::find().filter(C::EndpointId.eq(filter.endpoint_id));
    if let Some(status) = filter.status {
        query = query.filter(C::Status.eq(status.name()));
    }
    if let Some(event_type) = filter.event_type {
        query = query.filter(C::EventType.eq(event_type));
    }
    if let Some(since) = filter.since {
        query = query.filter(C::CreatedAt.gte(since));
    }
    if let Some(before) = filter.before_id {
        query = query.filter(C::Id.lt(before));
    }
    let rows = query.order_by_desc(C::Id).limit(filter.limit).all(db).await?;
    rows.into_iter().map(TryInto::try_into).collect()
}

/// The attempts of these deliveries, oldest first, by delivery.
pub async fn attempts_of(
    db: &impl ConnectionTrait,
    delivery_ids: Vec<String>,
) -> Result<HashMap<String, Vec<AttemptRecord>>, DbErr> {
    let rows = webhook_attempt::Entity::find()
        .filter(webhook_attempt::Column::DeliveryId.is_in(delivery_ids))
        .order_by_asc(webhook_attempt::Column::Id)
        .all(db)
        .await?;
    let mut by_delivery: HashMap<String, Vec<AttemptRecord>> = HashMap::new();
    for row in rows {
        by_delivery.entry(row.delivery_id).or_default().push(AttemptRecord {
            number: row.number,
            attempted_at: row.attempted_at,
            status_code: row.status_code,
            latency_ms: row.latency_ms,
            error: row.error,
            response_body: row.response_body,
        });
    }
    Ok(by_delivery)
}

/// The outbox row's payload source, for showing what a delivery sends.
pub async fn outbox_row(db: &impl ConnectionTrait, id: i64) -> Result<Option<OutboxRow>, DbErr> {
    Ok(entity::outbox::Entity::find_by_id(id).one(db).await?.map(OutboxRow::from))
}

/// SQL that queues deliveries again, due at once: finished ones start a new round of the
/// retry schedule; waiting ones (PENDING, FAILED) are just made due. A delivery being sent
/// (SENDING) is left to its holder, so a redelivery never races the attempt in flight.
const REQUEUE: &str = "UPDATE webhook_deliveries SET \
     status = CASE WHEN status IN ('SUCCEEDED', 'DEAD') THEN 'PENDING' ELSE status END, \
     attempts_before = CASE WHEN status IN ('SUCCEEDED', 'DEAD') THEN attempts_before + attempts ELSE attempts_before END, \
     attempts = CASE WHEN status IN ('SUCCEEDED', 'DEAD') THEN 0 ELSE attempts END, \
     next_attempt_at = $1, updated_at = $1 \
     WHERE status <> 'SENDING'";

/// Queues one delivery again. Returns false when it is being sent right now.
pub async fn redeliver(db: &impl ConnectionTrait, id: &str, now: DateTime<Utc>) -> Result<bool, DbErr> {
    let sql = format!("{REQUEUE} AND id = $2");
    let result = db.execute_raw(statement(db, sql, vec![now.into(), id.to_string().into()])).await?;
    Ok(result.rows_affected() > 0)
}

/// Queues an endpoint's events since a time again: its existing deliveries of them are
/// requeued (as `redeliver` does) and events it had none for (it did not exist yet, was
/// disabled, or was not subscribed then) get new deliveries if it subscribes to them now.
/// Only events still in the outbox (within retention) can be replayed. Returns the
/// deliveries queued.
pub async fn replay(
    db: &DatabaseConnection,
    endpoint: &EndpointRecord,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let subscription = Subscription::from_stored(&endpoint.event_types);
    let txn = begin_write(db).await?;
    let sql = format!("{REQUEUE} AND endpoint_id = $2 AND outbox_id IN (SELECT id FROM outbox WHERE created_at >= $3)");
    let requeued = txn
        .execute_raw(statement(&txn, sql, vec![now.into(), endpoint.id.clone().into(), since.into()]))
        .await?
        .rows_affected();
    let mut created = 0;
    let mut after = 0i64;
    loop {
        let rows = entity::outbox::Entity::find()
            .select_only()
            .column(entity::outbox::Column::Id)
            .column(entity::outbox::Column::Kind)
            .filter(entity::outbox::Column::CreatedAt.gte(since))
            .filter(entity::outbox::Column::Id.gt(after))
            .order_by_asc(entity::outbox::Column::Id)
            .limit(1000)
            .into_tuple::<(i64, String)>()
            .all(&txn)
            .await?;
        let Some((last, _)) = rows.last() else { break };
        after = *last;
        let deliveries: Vec<_> = rows
            .iter()
            .filter_map(|(id, kind)| EventType::of_outbox_kind(kind).map(|t| (*id, t)))
            .filter(|(_, t)| subscription.includes(*t))
            .map(|(id, t)| new_delivery(id, &endpoint.id, t, now))
            .collect();
        created += insert_deliveries(&txn, deliveries).await?;
    }
    txn.commit().await?;
    Ok(requeued + created)
}

/// Deletes finished deliveries (with their attempts) last changed before `cutoff`, then
/// outbox rows fanned out before it that no delivery needs any more, at most `batch` of
/// each. Returns how many rows went.
pub async fn prune(db: &DatabaseConnection, cutoff: DateTime<Utc>, batch: u64) -> Result<u64, DbErr> {
    let deliveries = format!(
        "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries \
         WHERE status IN ('SUCCEEDED', 'DEAD') AND updated_at < $1 LIMIT {batch})"
    );
    let outbox = format!(
        "DELETE FROM outbox WHERE id IN (SELECT o.id FROM outbox o WHERE o.delivered_at IS NOT NULL \
         AND o.created_at < $1 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.outbox_id = o.id) \
         LIMIT {batch})"
    );
    let mut deleted = 0;
    for sql in [deliveries, outbox] {
        deleted += db.execute_raw(statement(db, sql, vec![cutoff.into()])).await?.rows_affected();
    }
    Ok(deleted)
}
