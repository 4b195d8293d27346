//! Audiences: a flow with an audience is for the subjects it admits. They are enrolled
//! automatically on any write that concerns them; others cannot enroll.

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;

use super::Onramp;
use crate::error::AppResult;
use crate::persistence::enrollments;
use crate::persistence::flows::FlowRecord;
use crate::persistence::subjects::SubjectRecord;

impl Onramp {
    /// The newest active version of every flow with an audience: only these enroll
    /// anyone unasked.
    pub(super) async fn audience_flows(&self, txn: &DatabaseTransaction) -> AppResult<Vec<FlowRecord>> {
        let open = self.flows.latest_active_at(txn, self.realtime.hub().flows_epoch()).await?;
        Ok(open.into_iter().filter(|f| f.definition.audience.is_some()).collect())
    }

    /// Enrolls the subject in every active flow whose audience admits it and that it is
    /// not enrolled in yet, and returns those flows. The caller advances them (so stored
    /// events complete what they trigger) with its own change.
    pub(super) async fn auto_enroll(
        &self,
        txn: &DatabaseTransaction,
        subject: &SubjectRecord,
        audience: &[FlowRecord],
        now: DateTime<Utc>,
    ) -> AppResult<Vec<FlowRecord>> {
        if !audience.iter().any(|f| f.scope == subject.owner().scope()) {
            return Ok(Vec::new());
        }
        let enrolled: Vec<String> =
            enrollments::list_for_subject(txn, subject.id, true).await?.into_iter().map(|e| e.flow_key).collect();
        let enrolled: Vec<&str> = enrolled.iter().map(String::as_str).collect();
        self.enroll_in_audiences(txn, subject, audience, &enrolled, now).await
    }

    /// Enrolls the subject in the audience flows that admit it, advancing each (its stored
    /// events apply at once) except `flow_key`, which the caller advances with its
    /// command. Says whether any enrollment was made: that is news even when the command
    /// changes nothing.
    pub(super) async fn enroll_automatically(
        &self,
        txn: &DatabaseTransaction,
        subject: &SubjectRecord,
        audience: &[FlowRecord],
        flow_key: &str,
        now: DateTime<Utc>,
    ) -> AppResult<bool> {
        let mut enrolled = false;
        for flow in self.auto_enroll(txn, subject, audience, now).await? {
            enrolled = true;
            if flow.key == flow_key {
                continue; // advanced by the caller, with the command
            }
            if let Some(record) = enrollments::find(txn, subject.id, &flow.key, true).await? {
                self.advance(txn, subject, &flow, record, |_| Ok(Default::default()), now).await?;
            }
        }
        Ok(enrolled)
    }

    /// `auto_enroll` given the audience flows and the keys of the flows the subject is
    /// enrolled in, both already read (a batch of events reads them once for all owners).
    pub(super) async fn enroll_in_audiences(
        &self,
        txn: &DatabaseTransaction,
        subject: &SubjectRecord,
        audience: &[FlowRecord],
        enrolled: &[&str],
        now: DateTime<Utc>,
    ) -> AppResult<Vec<FlowRecord>> {
        let owner = subject.owner();
        let mut added = Vec::new();
        // Only owners of a flow's scope; the version entered decides below.
        for key in
            audience.iter().filter(|f| f.scope == owner.scope() && !enrolled.contains(&f.key.as_str())).map(|f| &f.key)
        {
            // The version the subject would enter (an experiment may choose it) decides.
            let Some((flow, assignment)) = self.entry(txn, &owner, key).await? else { continue };
            if !flow.definition.enrolls_automatically(&subject.attributes) {
                continue;
            }
            self.enroll(txn, subject, &flow, assignment.as_ref(), now).await?;
            if let Some(a) = &assignment {
                self.expose(txn, a, &subject.external_id, now).await?;
            }
            added.push(flow);
        }
        Ok(added)
    }
}
