//! Live progress: who is watching which subject, and how changes reach them. A change is
//! announced after commit as "subject X changed"; every watcher of X re-reads its state.
//! On SQLite (one instance) the announcement stays in process; on PostgreSQL it also goes
//! through NOTIFY so every instance sharing the database hears it.

mod hub;
mod listener;

use std::sync::Arc;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde::{Deserialize, Serialize};

pub use hub::{Hub, Signal, Watch};
pub use listener::spawn_listener;

/// The NOTIFY channel shared by every instance.
pub const CHANNEL: &str = "onramp_changes";

/// A NOTIFY payload: who sent it and which subjects changed. Small by design (PostgreSQL
/// caps payloads at 8000 bytes), so long lists are split.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Announcement {
    /// The sending instance, so it can skip what it already delivered locally.
    pub i: String,
    /// Subject ids.
    pub s: Vec<String>,
}

pub struct Realtime {
    hub: Arc<Hub>,
    /// Set on PostgreSQL: changes are also NOTIFYed to other instances.
    notify: Option<DatabaseConnection>,
    instance: String,
}

impl Realtime {
    pub fn new(db: &DatabaseConnection) -> Self {
        let postgres = db.get_database_backend() == sea_orm::DbBackend::Postgres;
        Realtime {
            hub: Arc::new(Hub::default()),
            notify: postgres.then(|| db.clone()),
            instance: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Tells every watcher, here and on other instances, that these subjects changed.
    /// Call after commit: a watcher that re-reads must see the change.
    pub async fn announce(&self, subjects: &[String]) {
        if subjects.is_empty() {
            return;
        }
        for subject in subjects {
            self.hub.changed(subject);
        }
        let Some(db) = &self.notify else { return };
        for chunk in chunks(subjects, 7000) {
            let payload =
                serde_json::to_string(&Announcement { i: self.instance.clone(), s: chunk }).unwrap_or_default();
            let notify = Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [CHANNEL.into(), payload.into()],
            );
            // Losing a notification delays other instances until their next change or
            // resync; it must not fail the write that already committed.
            if let Err(e) = db.execute_raw(notify).await {
                tracing::warn!(error = %e, "NOTIFY failed; other instances miss this change");
            }
        }
    }
}

/// Splits subject ids into lists whose JSON stays under `budget` bytes.
fn chunks(subjects: &[String], budget: usize) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = vec![Vec::new()];
    let mut size = 0;
    for s in subjects {
        let cost = s.len() + 4;
        if size + cost > budget && !out.last().is_some_and(Vec::is_empty) {
            out.push(Vec::new());
            size = 0;
        }
        size += cost;
        if let Some(last) = out.last_mut() {
            last.push(s.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_subject_lists_are_split_under_the_payload_budget() {
        let subjects: Vec<String> = (0..3000).map(|i| format!("subject-{i:05}")).collect();
        let parts = chunks(&subjects, 7000);
        assert!(parts.len() > 1);
        assert_eq!(parts.concat(), subjects);
        for part in parts {
            let json = serde_json::to_string(&Announcement { i: "x".repeat(32), s: part }).unwrap();
            assert!(json.len() < 8000, "{}", json.len());
        }
    }
}
