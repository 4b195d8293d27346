//! Readings for /metrics: the connection pool's use and the webhook backlog.

use chrono::{DateTime, Utc};
use entity::{outbox, webhook_delivery};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};

/// Backlog counts stop here: a number past it says "very far behind" as well as the exact
/// one would, and counting stays cheap however large the backlog grows.
pub const BACKLOG_COUNT_CAP: i64 = 100_000;

/// Connections of the pool.
pub struct PoolUsage {
    /// Open now.
    pub open: u32,
    /// Open and waiting for work.
    pub idle: u32,
    /// The most it may open.
    pub max: u32,
}

pub fn pool_usage(db: &DatabaseConnection) -> Option<PoolUsage> {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
            Some(PoolUsage { open: pool.size(), idle, max: pool.options().get_max_connections() })
        }
        DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
            Some(PoolUsage { open: pool.size(), idle, max: pool.options().get_max_connections() })
        }
        _ => None,
    }
}

/// The webhook work not done yet.
pub struct Backlog {
    /// Outbox rows not yet turned into deliveries (at most `BACKLOG_COUNT_CAP`).
    pub outbox_pending: i64,
    /// When the oldest of them was written.
    pub outbox_oldest: Option<DateTime<Utc>>,
    /// Unfinished deliveries to enabled endpoints (at most `BACKLOG_COUNT_CAP`); those
    /// parked for a disabled endpoint wait for it and are left out.
    pub deliveries_pending: i64,
    /// The earliest due time among them.
    pub deliveries_next_due: Option<DateTime<Utc>>,
}

const UNFINISHED: [&str; 3] = ["PENDING", "SENDING", "FAILED"];

pub async fn backlog(db: &DatabaseConnection) -> Result<Backlog, DbErr> {
    let parked = super::webhooks::parked();
    let outbox_pending = count(
        db,
        format!("SELECT COUNT(*) FROM (SELECT 1 FROM outbox WHERE delivered_at IS NULL LIMIT {BACKLOG_COUNT_CAP}) t"),
        Vec::new(),
    )
    .await?;
    let outbox_oldest = outbox::Entity::find()
        .select_only()
        .column(outbox::Column::CreatedAt)
        .filter(outbox::Column::DeliveredAt.is_null())
        .order_by_asc(outbox::Column::Id)
        .into_tuple::<DateTime<Utc>>()
        .one(db)
        .await?;
    let deliveries_pending = count(
        db,
        format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM webhook_deliveries \
             WHERE status IN ('PENDING', 'SENDING', 'FAILED') AND next_attempt_at < $1 LIMIT {BACKLOG_COUNT_CAP}) t"
        ),
        vec![parked.into()],
    )
    .await?;
    let deliveries_next_due = webhook_delivery::Entity::find()
        .select_only()
        .column(webhook_delivery::Column::NextAttemptAt)
        .filter(webhook_delivery::Column::Status.is_in(UNFINISHED))
        .filter(webhook_delivery::Column::NextAttemptAt.lt(parked))
        .order_by_asc(webhook_delivery::Column::NextAttemptAt)
        .into_tuple::<DateTime<Utc>>()
        .one(db)
        .await?;
    Ok(Backlog { outbox_pending, outbox_oldest, deliveries_pending, deliveries_next_due })
}

async fn count(db: &DatabaseConnection, sql: String, values: Vec<sea_orm::Value>) -> Result<i64, DbErr> {
    let statement = Statement::from_sql_and_values(db.get_database_backend(), sql, values);
    match db.query_one_raw(statement).await? {
        Some(row) => row.try_get_by_index::<i64>(0),
        None => Ok(0),
    }
}
