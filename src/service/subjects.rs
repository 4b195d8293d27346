//! Subject attributes, which conditions read.

use serde_json::{Map, Value};

use super::{News, Onramp};
use crate::domain::{Owner, progress};
use crate::error::{AppError, AppResult};
use crate::persistence::{begin_write, enrollments, subjects};

impl Onramp {
    /// Replaces the attributes of a user or workspace, or merges them in (top-level keys; a null value
    /// removes a key). What applies can change with them, so every enrollment of the
    /// subject gets a new revision, and one may complete.
    pub async fn set_attributes(&self, owner: &Owner, attributes: Value, merge: bool) -> AppResult<Value> {
        // Checked before any work (depth first, so nothing below recurses into a hostile
        // value), and again once merged, since merging grows what is stored.
        self.limits.check_attributes(&attributes).map_err(AppError::invalid)?;
        let Value::Object(incoming) = attributes else {
            return Err(AppError::invalid("attributes must be a JSON object"));
        };
        let now = self.now();
        let txn = begin_write(&self.db).await?;
        let key = owner.key();
        let subject = subjects::ensure(&txn, &key, now).await?;
        let mut next: Map<String, Value> =
            if merge { subject.attributes.as_object().cloned().unwrap_or_default() } else { Map::new() };
        for (key, value) in incoming {
            if value.is_null() {
                next.remove(&key);
            } else {
                next.insert(key, value);
            }
        }
        let next = Value::Object(next);
        if next == subject.attributes {
            txn.rollback().await?;
            return Ok(next);
        }
        if let Err(e) = self.limits.check_attributes(&next) {
            txn.rollback().await?;
            return Err(AppError::invalid(format!("once merged, {e}")));
        }
        subjects::set_attributes(&txn, subject.id, next.clone(), now).await?;
        let subject = subjects::SubjectRecord { attributes: next.clone(), ..subject };
        // New attributes can bring the subject into a flow's audience.
        let audience = self.audience_flows(&txn).await?;
        self.auto_enroll(&txn, &subject, &audience, now).await?;
        for record in enrollments::list_for_subject(&txn, subject.id, true).await? {
            let flow = self.flows.pinned(&txn, record.flow_id).await?;
            let definition = flow.definition.clone();
            self.advance(
                &txn,
                &subject,
                &flow,
                record,
                |state| Ok(progress::attributes_changed(&definition, &next, state, now)),
                now,
            )
            .await?;
        }
        // Not-yet-enrolled flows change too (what applies), so watchers always hear of it.
        self.commit_and_announce(txn, News::Owners(vec![key])).await?;
        Ok(next)
    }
}
