//! The only code that talks SeaORM: connecting, migrating, and mapping rows to and from
//! domain types. No business rules live here.

pub mod analytics;
mod columns;
pub mod enrollments;
pub mod events;
pub mod experiments;
pub mod flows;
pub mod health;
pub mod nudges;
pub mod outbox;
pub mod points;
pub mod rollup;
pub mod subjects;
pub mod webhooks;
pub mod writes;

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    AccessMode, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    IsolationLevel, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

/// Opens the pool. SQLite gets WAL (readers never wait for the writer), a generous busy
/// timeout (writers queue instead of failing) and enforced foreign keys.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true)
                .create_if_missing(true)
        });
    Database::connect(options).await
}

/// Brings the schema up to date, then builds the analytics rollup if this database had
/// rows before it existed.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await?;
    rollup::ensure_built(db).await
}

/// Begins a write transaction. On SQLite it takes the write lock at BEGIN (IMMEDIATE), so
/// two writers queue on the busy timeout instead of deadlocking on a read-to-write
/// upgrade; on PostgreSQL rows are locked explicitly with `SELECT ... FOR UPDATE`.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    begin(
        db,
        TransactionOptions { sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate), ..Default::default() },
    )
    .await
}

/// Begins a read that sees one consistent state across its statements, so an enrollment
/// and its steps (read separately) always come from the same commit. PostgreSQL needs
/// REPEATABLE READ for that (READ COMMITTED takes a new snapshot per statement); a SQLite
/// (WAL) read transaction already keeps the snapshot of its first read.
pub async fn begin_read(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let postgres = is_postgres(db);
    begin(
        db,
        TransactionOptions {
            isolation_level: postgres.then_some(IsolationLevel::RepeatableRead),
            access_mode: postgres.then_some(AccessMode::ReadOnly),
            ..Default::default()
        },
    )
    .await
}

/// Begins a transaction in a task of its own, so that a caller dropped while it waits
/// (a closed socket, a timeout) cannot leave a pooled connection inside a transaction.
///
/// sqlx 0.9 on PostgreSQL counts a transaction as open only once the server has answered
/// its BEGIN (`PgTransactionManager::begin` raises `transaction_depth` after the await), and
/// a rollback is queued on drop only for a counted transaction. A future dropped while
/// BEGIN is in flight therefore returns the connection to the pool with a transaction
/// the server opened and nothing will end (sqlx issue 4393): the next borrowers run
/// inside it ("there is already a transaction in progress"; "SET TRANSACTION ISOLATION
/// LEVEL must be called before any query" for a read; writes made outside a transaction
/// that are never committed). SeaORM adds a second round trip for the isolation level,
/// also on the caller's future. Run here, BEGIN always completes; when nobody waits for
/// the transaction any more it is dropped in the task, which queues its rollback (the
/// pool sends it before anyone else gets the connection). Past BEGIN, a drop at any
/// await is safe: the transaction is counted, and dropping it queues the rollback.
/// Costs a task spawn, no round trip.
async fn begin(db: &DatabaseConnection, options: TransactionOptions) -> Result<DatabaseTransaction, DbErr> {
    let db = db.clone();
    tokio::spawn(async move { db.begin_with_options(options).await })
        .await
        .map_err(|e| DbErr::Custom(format!("beginning a transaction: {e}")))?
}

pub fn is_postgres(db: &impl ConnectionTrait) -> bool {
    db.get_database_backend() == DbBackend::Postgres
}

/// Maps a stored enum name back to the domain, failing loudly on a corrupt row.
fn parse_name<T>(value: &str, parse: fn(&str) -> Option<T>, what: &str) -> Result<T, DbErr> {
    parse(value).ok_or_else(|| DbErr::Custom(format!("unknown {what} `{value}` in the database")))
}
