//! The only code that talks SeaORM: connecting, migrating, and mapping rows to and from
//! domain types. No business rules live here.

pub mod analytics;
mod columns;
pub mod enrollments;
pub mod events;
pub mod experiments;
pub mod flows;
pub mod outbox;
pub mod points;
pub mod rollup;
pub mod subjects;
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
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// Begins a read that sees one consistent state across its statements, so an enrollment
/// and its steps (read separately) always come from the same commit. PostgreSQL needs
/// REPEATABLE READ for that (READ COMMITTED takes a new snapshot per statement); a SQLite
/// (WAL) read transaction already keeps the snapshot of its first read.
pub async fn begin_read(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let postgres = is_postgres(db);
    db.begin_with_options(TransactionOptions {
        isolation_level: postgres.then_some(IsolationLevel::RepeatableRead),
        access_mode: postgres.then_some(AccessMode::ReadOnly),
        ..Default::default()
    })
    .await
}

pub fn is_postgres(db: &impl ConnectionTrait) -> bool {
    db.get_database_backend() == DbBackend::Postgres
}

/// Maps a stored enum name back to the domain, failing loudly on a corrupt row.
fn parse_name<T>(value: &str, parse: fn(&str) -> Option<T>, what: &str) -> Result<T, DbErr> {
    parse(value).ok_or_else(|| DbErr::Custom(format!("unknown {what} `{value}` in the database")))
}
