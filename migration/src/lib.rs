//! onramp's schema migrations. Every migration runs on SQLite and PostgreSQL: JSON columns
//! are JSONB on PostgreSQL, timestamps carry a time zone.

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_core;
mod m20261121_000002_events;
mod m20261121_000003_points;
mod m20261121_000004_experiments;
mod m20261121_000005_workspaces;
mod m20261121_000006_reached;
mod m20261121_000007_rollup;
mod m20261203_000008_webhooks;
mod m20261203_000009_webhook_attempt_rounds;
mod m20261203_000010_nudges;
mod m20261203_000011_nudge_waiting;
mod m20261203_000012_nudge_log_unreferenced;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_core::Migration),
            Box::new(m20261121_000002_events::Migration),
            Box::new(m20261121_000003_points::Migration),
            Box::new(m20261121_000004_experiments::Migration),
            Box::new(m20261121_000005_workspaces::Migration),
            Box::new(m20261121_000006_reached::Migration),
            Box::new(m20261121_000007_rollup::Migration),
            Box::new(m20261203_000008_webhooks::Migration),
            Box::new(m20261203_000009_webhook_attempt_rounds::Migration),
            Box::new(m20261203_000010_nudges::Migration),
            Box::new(m20261203_000011_nudge_waiting::Migration),
            Box::new(m20261203_000012_nudge_log_unreferenced::Migration),
        ]
    }
}
