//! Reading and changing a subject's progress through a flow.

use super::{Onramp, Snapshot};
use crate::domain::{Command, Enrollment, Source, progress};
use crate::error::{AppError, AppResult};
use crate::persistence::{begin_read, begin_write, enrollments, subjects};

impl Onramp {
    /// Where the subject stands. Reading enrolls nothing (its one write is an experiment
    /// exposure): an unknown subject or one not enrolled gets NOT_STARTED with the steps
    /// of the version it would enroll in.
    pub async fn status(&self, subject_id: &str, flow_key: &str) -> AppResult<Snapshot> {
        // One snapshot for every read, or a concurrent write can show up half applied.
        let txn = begin_read(&self.db).await?;
        let subject = subjects::find(&txn, subject_id).await?;
        let enrollment = match &subject {
            Some(s) => enrollments::find(&txn, s.id, flow_key, false).await?,
            None => None,
        };
        let (flow, assignment) = match &enrollment {
            Some(e) => (self.flows.by_id(&txn, e.flow_id).await?, None),
            None => self.entry(&txn, subject_id, flow_key).await?.ok_or_else(|| no_active_flow(flow_key))?,
        };
        txn.commit().await?;
        // Serving the flow under a running experiment is the subject's exposure: the one
        // write a read makes, once per subject and experiment.
        // Only a subject the flow is for can be exposed to it.
        let attributes = subject.as_ref().map_or_else(|| serde_json::json!({}), |s| s.attributes.clone());
        if let Some(a) = assignment.as_ref().filter(|_| flow.definition.admits(&attributes)) {
            self.expose(&self.db, a, subject_id, super::now()).await?;
        }
        Ok(Snapshot {
            subject_id: subject_id.to_string(),
            flow,
            attributes,
            variant: enrollment.as_ref().and_then(|e| e.variant.clone()).or(assignment.map(|a| a.variant)),
            enrollment: enrollment.map(|e| e.state),
        })
    }

    /// Every flow the subject is enrolled in, and every active flow whose audience admits
    /// it as NOT_STARTED, by flow key.
    pub async fn onboardings(&self, subject_id: &str) -> AppResult<Vec<Snapshot>> {
        let txn = begin_read(&self.db).await?;
        let subject = subjects::find(&txn, subject_id).await?;
        let attributes = subject.as_ref().map_or_else(|| serde_json::json!({}), |s| s.attributes.clone());
        let records = match &subject {
            Some(s) => enrollments::list_for_subject(&txn, s.id, false).await?,
            None => Vec::new(),
        };
        let flows = self.flows.by_ids(&txn, records.iter().map(|r| r.flow_id).collect()).await?;
        let open = self.flows.latest_active_all(&txn).await?;
        txn.commit().await?;
        let mut snapshots = records
            .into_iter()
            .map(|r| {
                let flow = flows.iter().find(|f| f.id == r.flow_id).cloned().ok_or_else(|| {
                    AppError::internal(format!("enrollment {} points at missing flow {}", r.id, r.flow_id))
                })?;
                Ok(Snapshot {
                    subject_id: subject_id.to_string(),
                    flow,
                    attributes: attributes.clone(),
                    variant: r.variant,
                    enrollment: Some(r.state),
                })
            })
            .collect::<AppResult<Vec<_>>>()?;
        for flow in open {
            if flow.definition.enrolls_automatically(&attributes) && !snapshots.iter().any(|s| s.flow.key == flow.key) {
                snapshots.push(Snapshot {
                    subject_id: subject_id.to_string(),
                    flow,
                    attributes: attributes.clone(),
                    variant: None,
                    enrollment: None,
                });
            }
        }
        snapshots.sort_by(|a, b| a.flow.key.cmp(&b.flow.key));
        Ok(snapshots)
    }

    /// Runs a command against the subject's enrollment in one transaction, enrolling the
    /// subject in the newest active version on first use (its stored events then complete
    /// what they trigger). A failed command leaves no trace, not even the enrollment it
    /// would have created. Subscribers hear of the change after commit.
    pub async fn run(&self, subject_id: &str, flow_key: &str, command: Command, source: Source) -> AppResult<Snapshot> {
        match &command {
            Command::CompleteStep { metadata: Some(m), .. } => super::refuse_nul(m, "metadata")?,
            Command::SkipStep { reason: Some(r), .. } => super::refuse_nul(&r.as_str().into(), "reason")?,
            _ => {}
        }
        let now = super::now();
        let txn = begin_write(&self.db).await?;
        let subject = subjects::ensure(&txn, subject_id, now).await?;
        // Flows whose audience admits the subject enroll it on any write; their stored
        // events apply at once.
        let mut enrolled = false;
        for flow in self.auto_enroll(&txn, &subject, now).await? {
            if flow.key == flow_key {
                enrolled = true; // an enrollment is news even when the command changes nothing
                continue; // advanced below, with the command
            }
            if let Some(record) = enrollments::find(&txn, subject.id, &flow.key, true).await? {
                self.advance(&txn, &subject, &flow, record, |_| Ok(Default::default()), now).await?;
                enrolled = true;
            }
        }
        let (record, created) = match enrollments::find(&txn, subject.id, flow_key, true).await? {
            Some(record) => (record, false),
            None => {
                let (flow, assignment) =
                    self.entry(&txn, subject_id, flow_key).await?.ok_or_else(|| no_active_flow(flow_key))?;
                if !flow.definition.admits(&subject.attributes) {
                    return Err(AppError::forbidden(format!(
                        "the subject is not in the audience of flow `{flow_key}`"
                    )));
                }
                enrollments::insert(&txn, subject.id, flow.id, flow_key, &Enrollment::new(now), assignment.as_ref())
                    .await?;
                if let Some(a) = &assignment {
                    self.expose(&txn, a, subject_id, now).await?;
                }
                let record = enrollments::find(&txn, subject.id, flow_key, true)
                    .await?
                    .ok_or_else(|| AppError::internal("enrollment vanished after insert"))?;
                (record, true)
            }
        };
        enrolled |= created;
        let variant = record.variant.clone();
        let flow = self.flows.by_id(&txn, record.flow_id).await?;
        let attributes = subject.attributes.clone();
        let definition = flow.definition.clone();
        let advanced = self
            .advance(
                &txn,
                &subject,
                &flow,
                record,
                |state| progress::apply(&definition, &attributes, state, command, source, now),
                now,
            )
            .await?;
        txn.commit().await?;
        if enrolled || advanced.outcome.changed {
            self.realtime.announce(&[subject_id.to_string()]).await;
        }
        Ok(Snapshot {
            subject_id: subject_id.to_string(),
            flow,
            attributes: subject.attributes,
            variant,
            enrollment: Some(advanced.state),
        })
    }
}

fn no_active_flow(key: &str) -> AppError {
    AppError::not_found(format!("no active flow with key `{key}`"))
}
