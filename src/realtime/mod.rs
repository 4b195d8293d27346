//! Live progress: who is watching which subject, and how changes reach them. A change is
//! announced after commit as "subject X changed"; every watcher of X re-reads its state.
//! On SQLite (one instance) the announcement stays in process; on PostgreSQL it also goes
//! through NOTIFY so every instance sharing the database hears it.

mod hub;
mod listener;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
    /// The published flows changed: drop what is cached from them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub f: bool,
}

pub struct Realtime {
    hub: Arc<Hub>,
    /// Set on PostgreSQL: changes are also NOTIFYed to other instances.
    notify: Option<Notifier>,
    instance: String,
}

/// Sends this instance's NOTIFYs one at a time, each carrying every subject announced
/// while the one before was in flight. Under load that is one NOTIFY for many writes
/// instead of one each: a NOTIFY is a round trip, a commit of PostgreSQL's notification
/// queue (which takes a database-wide lock) and a wake-up of every listening backend.
struct Notifier {
    db: DatabaseConnection,
    /// Announced, not yet sent.
    pending: Mutex<Vec<String>>,
    /// A flow change announced, not yet sent.
    flows_changed: AtomicBool,
    /// Held while a NOTIFY is in flight.
    sending: tokio::sync::Mutex<()>,
}

impl Realtime {
    pub fn new(db: &DatabaseConnection) -> Self {
        let postgres = db.get_database_backend() == sea_orm::DbBackend::Postgres;
        Realtime {
            hub: Arc::new(Hub::default()),
            notify: postgres.then(|| Notifier {
                db: db.clone(),
                pending: Mutex::new(Vec::new()),
                flows_changed: Default::default(),
                sending: tokio::sync::Mutex::new(()),
            }),
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
    /// Call after commit: a watcher that re-reads must see the change. Returns once the
    /// subjects are NOTIFYed, by this call or by one that took them along.
    pub async fn announce(&self, subjects: &[String]) {
        if subjects.is_empty() {
            return;
        }
        for subject in subjects {
            self.hub.changed(subject);
        }
        let Some(notifier) = &self.notify else { return };
        lock(&notifier.pending).extend_from_slice(subjects);
        self.send(notifier).await;
    }

    /// Tells every instance that the published flows changed (after commit), so none
    /// keeps serving what it derived from them. Returns once NOTIFYed.
    pub async fn flows_changed(&self) {
        self.hub.flows_changed();
        let Some(notifier) = &self.notify else { return };
        notifier.flows_changed.store(true, Ordering::Release);
        self.send(notifier).await;
    }

    /// Sends what is pending, unless a send that takes it along comes first.
    async fn send(&self, notifier: &Notifier) {
        // Whoever sends next takes everything pending, ours included; when our turn
        // comes after that, there is nothing left and we are done.
        let _turn = notifier.sending.lock().await;
        let mut batch = std::mem::take(&mut *lock(&notifier.pending));
        let flows = notifier.flows_changed.swap(false, Ordering::AcqRel);
        if batch.is_empty() && !flows {
            return;
        }
        batch.sort_unstable();
        batch.dedup();
        for (n, chunk) in chunks(&batch, 7000).into_iter().enumerate() {
            let announcement = Announcement { i: self.instance.clone(), s: chunk, f: flows && n == 0 };
            let payload = serde_json::to_string(&announcement).unwrap_or_default();
            let notify = Statement::from_sql_and_values(
                sea_orm::DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [CHANNEL.into(), payload.into()],
            );
            // Losing a notification delays other instances until their next change or
            // resync; it must not fail the write that already committed.
            if let Err(e) = notifier.db.execute_raw(notify).await {
                tracing::warn!(error = %e, "NOTIFY failed; other instances miss this change");
            }
        }
    }
}

/// The pending list, even if a panicking holder poisoned its lock (a list of strings
/// cannot be left half-changed).
fn lock(pending: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Splits subject ids into lists whose JSON stays under `budget` bytes. Each id costs its
/// length as a JSON string, escapes included (a control character takes six bytes), plus
/// a comma; ids are bounded by the id limit, so one id alone is far under the budget.
fn chunks(subjects: &[String], budget: usize) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = vec![Vec::new()];
    let mut size = 0;
    for s in subjects {
        let cost = json_string_len(s) + 1;
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

/// The length of `s` as a JSON string, quotes included, as serde_json writes it.
fn json_string_len(s: &str) -> usize {
    2 + s
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if c < ' ' => 6,
            c => c.len_utf8(),
        })
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_string_len_is_what_serde_json_writes() {
        for s in ["", "plain", "a\"b\\c", "\n\r\t\u{8}\u{c}", "\u{1}\u{1f}", "é✓😀", "\u{7f}"] {
            assert_eq!(json_string_len(s), serde_json::to_string(s).unwrap().len(), "{s:?}");
        }
    }

    /// Many ids at the id limit, some made of the characters JSON escapes the most, still
    /// make NOTIFY payloads under PostgreSQL's 8000 bytes.
    #[test]
    fn max_length_ids_split_under_the_payload_limit() {
        let id_bytes = crate::domain::Limits::default().id_bytes;
        let mut subjects: Vec<String> = (0..200)
            .map(|i| match i % 3 {
                0 => format!("{i:0>id_bytes$}"),
                1 => "\u{1}".repeat(id_bytes),
                _ => format!("workspace:{}", "\"".repeat(id_bytes)),
            })
            .collect();
        subjects.sort_unstable();
        let parts = chunks(&subjects, 7000);
        assert!(parts.len() > 10, "{} parts", parts.len());
        assert_eq!(parts.concat(), subjects, "every id sent once, in order");
        for part in parts {
            assert!(!part.is_empty());
            let json = serde_json::to_string(&Announcement { i: "x".repeat(32), s: part, f: true }).unwrap();
            assert!(json.len() < 8000, "{}", json.len());
        }
    }

    #[test]
    fn long_subject_lists_are_split_under_the_payload_budget() {
        let subjects: Vec<String> = (0..3000).map(|i| format!("subject-{i:05}")).collect();
        let parts = chunks(&subjects, 7000);
        assert!(parts.len() > 1);
        assert_eq!(parts.concat(), subjects);
        for part in parts {
            let json = serde_json::to_string(&Announcement { i: "x".repeat(32), s: part, f: true }).unwrap();
            assert!(json.len() < 8000, "{}", json.len());
        }
    }
}
