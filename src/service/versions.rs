//! Moving enrollments between versions of a flow.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{News, Onramp};
use crate::domain::limits::shorten;
use crate::domain::{FlowDefinition, triggers, versions};
use crate::error::{AppError, AppResult};
use crate::persistence::flows::FlowRecord;
use crate::persistence::{begin_write, enrollments, events, subjects};

/// Enrollments moved per transaction.
const BATCH: u64 = 200;

/// What a migration does, or would do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub dry_run: bool,
    pub moved: u64,
    pub became_complete: u64,
    /// Completed steps the target version no longer has: step key -> enrollments.
    pub dropped_completed: BTreeMap<String, u64>,
}

impl Onramp {
    /// Moves every enrollment on `from` to `to` by step key, keeping what was done. A dry
    /// run writes nothing and reports what the real run would do. The real run moves
    /// enrollments in batches, each in its own transaction, so it can be interrupted and
    /// run again: what already moved is no longer on `from`. Subscribers of moved
    /// enrollments get the new snapshot.
    pub async fn migrate_enrollments(
        &self,
        key: &str,
        from: i32,
        to: i32,
        dry_run: bool,
    ) -> AppResult<MigrationReport> {
        self.check_key("flowKey", key)?;
        if from == to {
            return Err(AppError::invalid("fromVersion and toVersion are the same"));
        }
        let missing =
            |v: i32| AppError::not_found(format!("flow `{}` has no version {v}", crate::domain::limits::shorten(key)));
        let source = self.flows.find(&self.db, key, Some(from)).await?.ok_or_else(|| missing(from))?;
        let target = self.flows.find(&self.db, key, Some(to)).await?.ok_or_else(|| missing(to))?;
        let report = self.migrate(key, &source, &target.definition, (!dry_run).then_some(&target)).await?;
        tracing::info!(key, from, to, dry_run, moved = report.moved, "enrollments migrated");
        Ok(report)
    }

    /// What migrateEnrollments would do if `definition` were published as the next
    /// version of its key and the enrollments on `from` were moved to it: the dry run for
    /// a version that does not exist yet (`onramp flows plan` shows it). Writes nothing.
    pub async fn preview_migration(&self, key: &str, from: i32, definition: Value) -> AppResult<MigrationReport> {
        self.check_key("flowKey", key)?;
        let target = self.parse_incoming(definition).await?.map_err(AppError::invalid_definition)?;
        if target.key != key {
            return Err(AppError::invalid(format!(
                "the definition is for flow `{}`, not `{}`",
                shorten(&target.key),
                shorten(key)
            )));
        }
        let source = self
            .flows
            .find(&self.db, key, Some(from))
            .await?
            .ok_or_else(|| AppError::not_found(format!("flow `{}` has no version {from}", shorten(key))))?;
        self.migrate(key, &source, &target, None).await
    }

    /// Moves (with `target`) or, without, previews moving every enrollment on `source` to
    /// the version defined by `definition`.
    async fn migrate(
        &self,
        key: &str,
        source: &FlowRecord,
        definition: &FlowDefinition,
        target: Option<&FlowRecord>,
    ) -> AppResult<MigrationReport> {
        let dry_run = target.is_none();
        let trigger_events = definition.trigger_events();
        let mut report = MigrationReport { dry_run, ..Default::default() };
        let mut after = 0;
        loop {
            let ids = enrollments::ids_on_flow(&self.db, source.id, after, BATCH).await?;
            let Some(&last) = ids.last() else { break };
            after = last;
            let now = self.now();
            let txn = begin_write(&self.db).await?;
            let listed = enrollments::by_ids(&txn, ids, false).await?;
            let mut people = subjects::by_ids(&txn, listed.iter().map(|r| r.subject_id).collect()).await?;
            // Locked one by one in subject order, the order event batches lock in (by
            // subject, then flow key), so the two cannot deadlock; re-read locked, as one
            // may have moved since the ids were listed.
            people.sort_by(|a, b| a.external_id.cmp(&b.external_id));
            let mut moved_subjects = Vec::new();
            for subject in &people {
                let Some(mut record) = enrollments::find(&txn, subject.id, key, !dry_run).await? else { continue };
                if record.flow_id != source.id {
                    continue;
                }
                let mut state = record.state.clone();
                let mut migration = versions::migrate(definition, &subject.attributes, &mut state, now);
                // The subject's stored events complete the target's triggered steps too, as
                // they will when it is advanced below: count a completion they bring.
                let facts = events::facts(&txn, subject, &trigger_events).await?;
                migration.became_complete |=
                    triggers::settle(definition, &subject.attributes, &mut state, &facts, now).completed;
                report.moved += 1;
                report.became_complete += u64::from(migration.became_complete);
                for step in &migration.dropped_completed {
                    *report.dropped_completed.entry(step.clone()).or_default() += 1;
                }
                let Some(target) = target else { continue };
                enrollments::set_flow(&txn, &mut record, target.id).await?;
                let definition = target.definition.clone();
                let attributes = subject.attributes.clone();
                self.advance(
                    &txn,
                    subject,
                    target,
                    record,
                    |s| Ok(versions::migrate(&definition, &attributes, s, now).outcome),
                    now,
                )
                .await?;
                moved_subjects.push(subject.external_id.clone());
            }
            if dry_run {
                txn.rollback().await?;
            } else {
                self.commit_and_announce(txn, News::Owners(moved_subjects)).await?;
            }
        }
        Ok(report)
    }
}
