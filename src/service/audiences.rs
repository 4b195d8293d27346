//! Audiences: a flow with an audience is for the subjects it admits. They are enrolled
//! automatically on any write that concerns them; others cannot enroll.

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;

use super::Onramp;
use crate::domain::Enrollment;
use crate::error::AppResult;
use crate::persistence::enrollments;
use crate::persistence::flows::FlowRecord;
use crate::persistence::subjects::SubjectRecord;

impl Onramp {
    /// Enrolls the subject in every active flow whose audience admits it and that it is
    /// not enrolled in yet, and returns those flows' keys. The caller advances them (so
    /// stored events complete what they trigger) with its own change.
    pub(super) async fn auto_enroll(
        &self,
        txn: &DatabaseTransaction,
        subject: &SubjectRecord,
        now: DateTime<Utc>,
    ) -> AppResult<Vec<FlowRecord>> {
        let owner = subject.owner();
        let keys: Vec<String> = self
            .flows
            .latest_active_all(txn)
            .await?
            .into_iter()
            // Only flows with an audience enroll anyone unasked, and only owners of their
            // scope; the version entered decides below.
            .filter(|f| f.definition.audience.is_some() && f.scope == owner.scope())
            .map(|f| f.key)
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let enrolled: Vec<String> =
            enrollments::list_for_subject(txn, subject.id, true).await?.into_iter().map(|e| e.flow_key).collect();
        let mut added = Vec::new();
        for key in keys.iter().filter(|k| !enrolled.contains(k)) {
            // The version the subject would enter (an experiment may choose it) decides.
            let Some((flow, assignment)) = self.entry(txn, &owner, key).await? else { continue };
            if !flow.definition.enrolls_automatically(&subject.attributes) {
                continue;
            }
            enrollments::insert(txn, subject.id, flow.id, &flow.key, &Enrollment::new(now), assignment.as_ref())
                .await?;
            if let Some(a) = &assignment {
                self.expose(txn, a, &subject.external_id, now).await?;
            }
            added.push(flow);
        }
        Ok(added)
    }
}
