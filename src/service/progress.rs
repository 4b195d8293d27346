//! Reading and changing an owner's progress through a flow: a user's own, or a
//! workspace's shared by its members.

use super::{News, Onramp, Party, Snapshot};
use crate::domain::limits::{check_json, shorten};
use crate::domain::{Command, Owner, Source, progress, triggers};
use crate::error::{AppError, AppResult};
use crate::persistence::{begin_read, begin_write, enrollments, events, subjects};

impl Onramp {
    /// Where the party stands. Reading enrolls nothing (its one write is an experiment
    /// exposure): an unknown owner or one not enrolled gets NOT_STARTED with the steps of
    /// the version it would enroll in.
    pub async fn status(&self, party: &Party, flow_key: &str) -> AppResult<Snapshot> {
        let owner = self.owner(party, flow_key).await?;
        let key = owner.key();
        // Subject, enrollment and steps come from one statement, so from one commit.
        let (subject, enrollment) = match enrollments::standing(&self.db, &key, flow_key).await? {
            Some((subject, enrollment)) => (Some(subject), enrollment),
            None => (None, None),
        };
        let (flow, assignment, facts) = match &enrollment {
            Some(e) => (self.flows.pinned(&self.db, e.flow_id).await?, None, Vec::new()),
            None => {
                let txn = begin_read(&self.db).await?;
                let (flow, assignment) =
                    self.entry(&txn, &owner, flow_key).await?.ok_or_else(|| no_active_flow(flow_key))?;
                // What the owner's stored events already complete shows before it enrolls.
                let facts = match &subject {
                    Some(s) => events::facts(&txn, s, &flow.definition.trigger_events()).await?,
                    None => Vec::new(),
                };
                txn.commit().await?;
                (flow, assignment, facts)
            }
        };
        // Serving the flow under a running experiment is the owner's exposure: the one
        // write a read makes, once per owner and experiment.
        // Only an owner the flow is for can be exposed to it.
        let attributes = subject.as_ref().map_or_else(|| serde_json::json!({}), |s| s.attributes.clone());
        if let Some(a) = assignment.as_ref().filter(|_| flow.definition.admits(&attributes)) {
            self.expose(&self.db, a, &key, self.now()).await?;
        }
        let preview = (!facts.is_empty()).then(|| triggers::preview(&flow.definition, &attributes, &facts, self.now()));
        Ok(Snapshot {
            owner,
            flow,
            attributes,
            variant: enrollment.as_ref().and_then(|e| e.variant.clone()).or(assignment.map(|a| a.variant)),
            enrollment: enrollment.map(|e| e.state),
            preview,
        })
    }

    /// Every flow of the owner's scope it is enrolled in, and every active one whose
    /// audience admits it as NOT_STARTED, by flow key.
    pub async fn onboardings(&self, owner: &Owner) -> AppResult<Vec<Snapshot>> {
        let txn = begin_read(&self.db).await?;
        let subject = subjects::find(&txn, &owner.key()).await?;
        let attributes = subject.as_ref().map_or_else(|| serde_json::json!({}), |s| s.attributes.clone());
        let records = match &subject {
            Some(s) => enrollments::list_for_subject(&txn, s.id, false).await?,
            None => Vec::new(),
        };
        let flows = self.flows.by_ids(&txn, records.iter().map(|r| r.flow_id).collect()).await?;
        // The flows it would be listed in, NOT_STARTED: with what its stored events already
        // complete in each (one read for all of them).
        let open: Vec<_> = self
            .flows
            .latest_active_all(&txn)
            .await?
            .into_iter()
            .filter(|flow| {
                flow.scope == owner.scope()
                    && flow.definition.enrolls_automatically(&attributes)
                    && !records.iter().any(|r| r.flow_key == flow.key)
            })
            .collect();
        let facts = match &subject {
            Some(s) => {
                let mut names: Vec<&str> = open.iter().flat_map(|f| f.definition.trigger_events()).collect();
                names.sort_unstable();
                names.dedup();
                events::facts(&txn, s, &names).await?
            }
            None => Vec::new(),
        };
        txn.commit().await?;
        let now = self.now();
        let mut snapshots = records
            .into_iter()
            .map(|r| {
                let flow = flows.iter().find(|f| f.id == r.flow_id).cloned().ok_or_else(|| {
                    AppError::internal(format!("enrollment {} points at missing flow {}", r.id, r.flow_id))
                })?;
                Ok(Snapshot {
                    owner: owner.clone(),
                    flow,
                    attributes: attributes.clone(),
                    variant: r.variant,
                    enrollment: Some(r.state),
                    preview: None,
                })
            })
            .collect::<AppResult<Vec<_>>>()?;
        for flow in open {
            let preview = (!facts.is_empty()).then(|| triggers::preview(&flow.definition, &attributes, &facts, now));
            snapshots.push(Snapshot {
                owner: owner.clone(),
                flow,
                attributes: attributes.clone(),
                variant: None,
                enrollment: None,
                preview,
            });
        }
        snapshots.sort_by(|a, b| a.flow.key.cmp(&b.flow.key));
        Ok(snapshots)
    }

    /// Runs a command against the owner's enrollment in one transaction, enrolling it in
    /// the newest active version on first use (its stored events then complete what they
    /// trigger). The party's user is recorded as having finished the steps the command
    /// finishes. A failed command leaves no trace, not even the enrollment it would have
    /// created. Subscribers hear of the change after commit.
    pub async fn run(&self, party: &Party, flow_key: &str, command: Command, source: Source) -> AppResult<Snapshot> {
        match &command {
            Command::StartStep { step } | Command::SkipStep { step, .. } | Command::CompleteStep { step, .. } => {
                self.check_key("stepKey", step)?;
            }
            Command::Start | Command::SkipFlow | Command::Reconcile => {}
        }
        match &command {
            Command::CompleteStep { metadata: Some(m), .. } => {
                self.limits.check_metadata(m).map_err(AppError::invalid)?
            }
            Command::SkipStep { reason: Some(r), .. } => {
                check_json("reason", &r.as_str().into(), 0, usize::MAX).map_err(AppError::invalid)?
            }
            _ => {}
        }
        let owner = self.owner(party, flow_key).await?;
        let key = owner.key();
        let now = self.now();
        let txn = begin_write(&self.db).await?;
        let audience = self.audience_flows(&txn).await?;
        // The common case, a write to an enrollment that exists when no flow enrolls
        // this owner's kind automatically, reads subject and enrollment in one statement.
        let standing = if audience.iter().any(|f| f.scope == owner.scope()) {
            None
        } else {
            enrollments::lock_standing(&txn, &key, flow_key).await?
        };
        let (subject, mut enrolled, existing) = match standing {
            Some((subject, record)) => (subject, false, Some(record)),
            None => {
                let subject = subjects::ensure(&txn, &key, now).await?;
                let enrolled = self.enroll_automatically(&txn, &subject, &audience, flow_key, now).await?;
                let existing = enrollments::find(&txn, subject.id, flow_key, true).await?;
                (subject, enrolled, existing)
            }
        };
        let (record, created) = match existing {
            Some(record) => (record, false),
            None => {
                let (flow, assignment) =
                    self.entry(&txn, &owner, flow_key).await?.ok_or_else(|| no_active_flow(flow_key))?;
                if !flow.definition.admits(&subject.attributes) {
                    let whom = match owner {
                        Owner::User(_) => "the subject",
                        Owner::Workspace(_) => "the workspace",
                    };
                    return Err(AppError::forbidden(format!(
                        "{whom} is not in the audience of flow `{}`",
                        shorten(flow_key)
                    )));
                }
                self.enroll(&txn, &subject, &flow, assignment.as_ref(), now).await?;
                if let Some(a) = &assignment {
                    self.expose(&txn, a, &key, now).await?;
                }
                let record = enrollments::find(&txn, subject.id, flow_key, true)
                    .await?
                    .ok_or_else(|| AppError::internal("enrollment vanished after insert"))?;
                (record, true)
            }
        };
        enrolled |= created;
        let variant = record.variant.clone();
        let flow = self.flows.pinned(&txn, record.flow_id).await?;
        let attributes = subject.attributes.clone();
        let definition = flow.definition.clone();
        let actor = party.subject.as_str();
        let advanced = self
            // An enrollment made just now (here or by its audience) has not seen the owner's
            // stored events yet: the command must see what they complete.
            .advance_settled(
                &txn,
                &subject,
                &flow,
                record,
                |state| {
                    let outcome = progress::apply(&definition, &attributes, state, command, source, now)?;
                    progress::credit(state, &outcome.changed_steps, actor);
                    Ok(outcome)
                },
                now,
            )
            .await?;
        let news = if enrolled || advanced.outcome.changed { vec![key] } else { Vec::new() };
        self.commit_and_announce(txn, News::Owners(news)).await?;
        Ok(Snapshot {
            owner,
            flow,
            attributes: subject.attributes,
            variant,
            enrollment: Some(advanced.state),
            preview: None,
        })
    }
}

pub(super) fn no_active_flow(key: &str) -> AppError {
    AppError::not_found(format!("no active flow with key `{}`", shorten(key)))
}
