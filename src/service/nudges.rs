//! Nudge use cases: the scheduler's tick (claim what is due, decide, log, send), the
//! in-app reads and dismissal, the per-subject log, and results per rule.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use entity::subject;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;

use super::{Onramp, Party};
use crate::domain::Owner;
use crate::domain::limits::shorten;
use crate::domain::nudges::{
    self, Candidate, Decision, Due, NudgeRule, RuleResult, Unit, catch_up, following, holds, next_due, rule_result,
};
use crate::domain::text;
use crate::error::{AppError, AppResult};
use crate::nudges::NudgeSettings;
use crate::persistence::begin_write;
use crate::persistence::enrollments::{self, EnrollmentRecord};
use crate::persistence::flows::FlowRecord;
use crate::persistence::nudges::{self as store, LogEntry, ScheduleRow};
use crate::persistence::outbox::{self, OutboxEntry};
use crate::persistence::subjects::SubjectRecord;
use crate::persistence::writes::Writes;

/// What one tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    pub claimed: usize,
    pub sent: usize,
    /// The batch was full: more may be due now.
    pub full: bool,
}

/// The log's outcomes, as stored.
pub mod outcome {
    pub const SENT: &str = "SENT";
    pub const SUPPRESSED_BY_CAP: &str = "SUPPRESSED_BY_CAP";
    pub const SUPPRESSED_BY_QUIET_HOURS: &str = "SUPPRESSED_BY_QUIET_HOURS";
    pub const CANCELLED_BY_PROGRESS: &str = "CANCELLED_BY_PROGRESS";
    pub const HELD_OUT: &str = "HELD_OUT";
    pub const ALL: [&str; 5] = [SENT, SUPPRESSED_BY_CAP, SUPPRESSED_BY_QUIET_HOURS, CANCELLED_BY_PROGRESS, HELD_OUT];
}

/// The hub key under which an owner's new in-app nudges are announced.
pub fn nudge_topic(owner_key: &str) -> String {
    format!("nudges:{owner_key}")
}

/// A due occurrence, ready for the budget.
struct Item<'a> {
    row: &'a ScheduleRow,
    subject: &'a SubjectRecord,
    flow: &'a FlowRecord,
    rule: &'a NudgeRule,
    enrollment: &'a EnrollmentRecord,
    due: Due,
}

/// The longest window results look at.
pub const MAX_RESULTS_WINDOW_DAYS: i64 = 365;
/// Entries of a subject's log per page, at most.
pub const MAX_LOG_PAGE: u64 = 200;

impl Onramp {
    pub fn nudge_settings(&self) -> &NudgeSettings {
        &self.nudges
    }

    /// The same engine with these nudge settings; their clock becomes the engine's time.
    pub fn with_nudges(mut self, settings: NudgeSettings) -> Self {
        self.nudges = settings;
        self
    }

    /// The engine's time (the nudge settings' clock): what writes stamp and what the
    /// scheduler compares with.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.nudges.clock.now()
    }

    /// One round of the scheduler: claims up to a batch of due (enrollment, rule) rows,
    /// decides each subject's in one go (does it still hold, quiet hours, holdout, the
    /// budget), logs every outcome, and sends (outbox row for webhooks, announcement for
    /// in-app) what is sent, in one transaction. Nothing due: one indexed read. A batch
    /// costs a fixed number of statements, whatever its size: reads by id lists, one
    /// multi-row insert into the log, one multi-row update of the schedule.
    pub async fn nudge_tick(&self) -> AppResult<TickReport> {
        let now = self.now();
        if !store::any_due(&self.db, now).await? {
            return Ok(TickReport::default());
        }
        let txn = begin_write(&self.db).await?;
        let claimed = store::claim(&txn, now, self.nudges.batch).await?;
        let full = claimed.len() as u64 >= self.nudges.batch;
        let mine: HashSet<i64> =
            store::lock_subjects(&txn, claimed.iter().map(|r| r.subject_id).collect()).await?.into_iter().collect();
        let claimed: Vec<ScheduleRow> = claimed.into_iter().filter(|r| mine.contains(&r.subject_id)).collect();
        let records = enrollments::by_ids(&txn, claimed.iter().map(|r| r.enrollment_id).collect(), false).await?;
        let records: HashMap<i64, EnrollmentRecord> = records.into_iter().map(|r| (r.id, r)).collect();
        let flow_ids: Vec<i64> = records.values().map(|r| r.flow_id).collect::<HashSet<_>>().into_iter().collect();
        let flows: HashMap<i64, FlowRecord> =
            self.flows.by_ids(&txn, flow_ids).await?.into_iter().map(|f| (f.id, f)).collect();
        let subject_ids: Vec<i64> = mine.iter().copied().collect();
        let subjects: HashMap<i64, SubjectRecord> = subject::Entity::find()
            .filter(subject::Column::Id.is_in(subject_ids.clone()))
            .all(&txn)
            .await?
            .into_iter()
            .map(|s| (s.id, SubjectRecord::from(s)))
            .collect();
        let sent_before = store::sends_since(&txn, &subject_ids, now - Duration::days(7)).await?;

        // Every claimed row ends in exactly one of these: the tick's whole output.
        let mut lines: Vec<LogEntry> = Vec::new();
        let mut moves: Vec<ScheduleRow> = Vec::new();
        let mut sends: Vec<(usize, String)> = Vec::new();

        let mut items: Vec<Item<'_>> = Vec::new();
        for row in &claimed {
            let found = records.get(&row.enrollment_id).and_then(|e| {
                let flow = flows.get(&e.flow_id)?;
                let rule = flow.definition.nudges.rule(&row.rule_key)?;
                Some((e, flow, rule, subjects.get(&row.subject_id)?, row.anchor_at?))
            });
            let Some((enrollment, flow, rule, subject, anchor)) = found else {
                // The rule is gone (a new version without it) or never applied.
                moves.push(ScheduleRow { due_at: None, waiting: false, ..row.clone() });
                continue;
            };
            let number = u32::try_from(row.number).unwrap_or(1).max(1);
            let due = Due { anchor, number, at: row.due_at.unwrap_or(now) };
            let (definition, attributes, state) = (&*flow.definition, &subject.attributes, &enrollment.state);
            if !holds(rule, definition, attributes, state, &due) {
                lines.push(log_entry(row, subject, flow, rule, &due, outcome::CANCELLED_BY_PROGRESS, now));
                moves.push(moved(row, next_due(rule, definition, attributes, state)));
                continue;
            }
            // After downtime, only the latest occurrence due is sent.
            let due = catch_up(rule, due, now);
            items.push(Item { row, subject, flow, rule, enrollment, due });
        }

        let mut by_subject: HashMap<i64, Vec<usize>> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            by_subject.entry(item.subject.id).or_default().push(i);
        }
        for (subject_id, indexes) in by_subject {
            let subject = items[indexes[0]].subject;
            let candidates: Vec<Candidate<'_>> = indexes
                .iter()
                .map(|&i| {
                    let item = &items[i];
                    Candidate {
                        priority: item.flow.definition.nudges.priority,
                        due_at: item.row.due_at.unwrap_or(now),
                        flow_key: &item.flow.key,
                        rule_key: &item.rule.key,
                        held_out: nudges::in_holdout(
                            &item.flow.key,
                            &item.rule.key,
                            &subject.external_id,
                            item.rule.holdout_percent,
                        ),
                    }
                })
                .collect();
            let zone = nudges::time_zone(&subject.attributes);
            let quiet = nudges::quiet_until(now, zone, self.nudges.quiet_hours);
            let sent = sent_before.get(&subject_id).map_or(&[][..], Vec::as_slice);
            let decisions = nudges::decide(&candidates, sent, self.nudges.caps, quiet, now);
            for (&i, decision) in indexes.iter().zip(decisions) {
                let item = &items[i];
                let entry = |kind| log_entry(item.row, subject, item.flow, item.rule, &item.due, kind, now);
                // Held back: the same occurrence is due again when the wait ends, logged
                // once per reason however often it waits.
                let wait = |kind, suffix: &str, until| {
                    let mut line = entry(kind);
                    line.occurrence.push_str(suffix);
                    line.until = Some(until);
                    let row = ScheduleRow {
                        anchor_at: Some(item.due.anchor),
                        number: item.due.number as i32,
                        due_at: Some(until),
                        waiting: true,
                        ..item.row.clone()
                    };
                    (line, row)
                };
                let (line, next) = match decision {
                    Decision::WaitUntil(until) => wait(outcome::SUPPRESSED_BY_QUIET_HOURS, ":quiet", until),
                    Decision::SuppressedByCap(until) => wait(outcome::SUPPRESSED_BY_CAP, ":cap", until),
                    // The occurrence is done with: on to the next one, if the rule repeats.
                    Decision::Send | Decision::HeldOut => {
                        let kind = if decision == Decision::Send { outcome::SENT } else { outcome::HELD_OUT };
                        let next = following(item.rule, &item.due);
                        let row = ScheduleRow {
                            anchor_at: Some(item.due.anchor),
                            number: next.map_or(item.due.number, |d| d.number) as i32,
                            due_at: next.map(|d| d.at),
                            waiting: false,
                            ..item.row.clone()
                        };
                        (entry(kind), row)
                    }
                };
                if decision == Decision::Send {
                    sends.push((i, line.occurrence.clone()));
                }
                lines.push(line);
                moves.push(next);
            }
        }

        let inserted = store::log(&txn, &lines).await?;
        store::reschedule(&txn, &moves).await?;
        let mut decided: HashMap<&str, u64> = HashMap::new();
        for line in lines.iter().filter(|l| inserted.contains_key(&l.occurrence)) {
            *decided.entry(line.outcome.as_str()).or_default() += 1;
        }
        let mut report = TickReport { claimed: claimed.len(), sent: 0, full };
        let mut outbox_entries = Vec::new();
        let mut announce: Vec<String> = Vec::new();
        // Only what this tick logged first is sent: an occurrence is sent once.
        for (i, occurrence) in sends {
            let Some(&id) = inserted.get(&occurrence) else { continue };
            let item = &items[i];
            report.sent += 1;
            if item.rule.channel.webhook() {
                outbox_entries.push(nudge_outbox_entry(item, id));
            }
            if item.rule.channel.in_app() {
                announce.push(nudge_topic(&item.subject.external_id));
            }
        }
        let wrote_outbox = !outbox_entries.is_empty();
        if wrote_outbox {
            let mut writes = Writes::new(sea_orm::ConnectionTrait::get_database_backend(&txn));
            outbox::append(&mut writes, outbox_entries, now);
            writes.run(&txn).await?;
        }
        txn.commit().await?;
        for (outcome, n) in decided {
            self.metrics().nudges.with_label_values(&[outcome.to_ascii_lowercase()]).inc_by(n);
        }
        if wrote_outbox {
            self.outbox_written.notify_one();
        }
        if !announce.is_empty() {
            announce.sort();
            announce.dedup();
            self.realtime.announce(&announce).await;
        }
        Ok(report)
    }

    /// The subject rows of a party: the user, and its workspace when it acts in one.
    async fn party_subjects(&self, party: &Party) -> AppResult<Vec<SubjectRecord>> {
        let user = Owner::user(&party.subject, &self.limits).map_err(AppError::invalid)?;
        let mut keys = vec![user.key()];
        if let Some(w) = &party.workspace {
            keys.push(Owner::workspace(w, &self.limits).map_err(AppError::invalid)?.key());
        }
        let mut found = Vec::new();
        for key in keys {
            if let Some(s) = crate::persistence::subjects::find(&self.db, &key).await? {
                found.push(s);
            }
        }
        Ok(found)
    }

    /// The party's in-app nudges that are sent, not dismissed, and still hold (progress
    /// since, or a finished flow, withdraws them): newest first, at most `limit`. Their
    /// texts are in `locale` when one is asked for (a device's language), else as sent
    /// (in the subject's `locale` attribute, else the flow's default).
    pub async fn pending_nudges(&self, party: &Party, limit: u64, locale: Option<&str>) -> AppResult<Vec<LogEntry>> {
        let subjects = self.party_subjects(party).await?;
        let ids: Vec<i64> = subjects.iter().map(|s| s.id).collect();
        // Read a little more than asked: some may no longer hold.
        let entries = store::undismissed(&self.db, &ids, limit.saturating_mul(2).max(10)).await?;
        let records = enrollments::by_ids(&self.db, entries.iter().map(|e| e.enrollment_id).collect(), false).await?;
        let records: HashMap<i64, EnrollmentRecord> = records.into_iter().map(|r| (r.id, r)).collect();
        let flow_ids: Vec<i64> = records.values().map(|r| r.flow_id).collect::<HashSet<_>>().into_iter().collect();
        let flows: HashMap<i64, FlowRecord> =
            self.flows.by_ids(&self.db, flow_ids).await?.into_iter().map(|f| (f.id, f)).collect();
        let subjects: HashMap<i64, &SubjectRecord> = subjects.iter().map(|s| (s.id, s)).collect();
        let pending = entries
            .into_iter()
            .filter_map(|mut e| {
                let record = records.get(&e.enrollment_id)?;
                let flow = flows.get(&record.flow_id)?;
                let rule = flow.definition.nudges.rule(&e.rule_key)?;
                let subject = subjects.get(&e.subject_id)?;
                let due = Due { anchor: e.anchor_at, number: e.number.max(1) as u32, at: e.at };
                if !holds(rule, &flow.definition, &subject.attributes, &record.state, &due) {
                    return None;
                }
                if locale.is_some() {
                    let texts = rule.texts(locale, flow.definition.default_locale());
                    (e.title, e.message) = (texts.title.to_string(), texts.message.to_string());
                }
                Some(e)
            })
            .take(limit as usize)
            .collect();
        Ok(pending)
    }

    /// Dismisses one of the party's in-app nudges. Dismissing again is harmless.
    pub async fn dismiss_nudge(&self, party: &Party, id: i64) -> AppResult<LogEntry> {
        let subjects = self.party_subjects(party).await?;
        let ids: Vec<i64> = subjects.iter().map(|s| s.id).collect();
        let not_found = || AppError::not_found(format!("no nudge {id} for this subject"));
        let entry = store::entry(&self.db, id, &ids).await?.ok_or_else(not_found)?;
        if entry.outcome != outcome::SENT {
            return Err(not_found());
        }
        store::dismiss(&self.db, id, self.now()).await?;
        store::entry(&self.db, id, &ids).await?.ok_or_else(not_found)
    }

    /// A subject's nudge log, newest first: every occurrence the scheduler looked at and
    /// what it did with it, and why.
    pub async fn nudge_log(&self, owner_key: &str, before: Option<i64>, limit: u64) -> AppResult<Vec<LogEntry>> {
        let Some(subject) = crate::persistence::subjects::find(&self.db, owner_key).await? else {
            return Ok(Vec::new());
        };
        Ok(store::log_of(&self.db, subject.id, before, limit.min(MAX_LOG_PAGE)).await?)
    }

    /// Per rule of the flow's latest active version: completion within `window` after
    /// the nudge came due, for enrollments assigned to be nudged against enrollments held
    /// out (intention to treat, by the holdout hash under the rule's current percentage).
    pub async fn nudge_results(&self, flow_key: &str, window_hours: i64) -> AppResult<Vec<(NudgeRule, RuleResult)>> {
        self.check_key("flowKey", flow_key)?;
        if !(1..=MAX_RESULTS_WINDOW_DAYS * 24).contains(&window_hours) {
            return Err(AppError::invalid(format!(
                "windowHours is from 1 to {} (a year)",
                MAX_RESULTS_WINDOW_DAYS * 24
            )));
        }
        let flow = self
            .flows
            .latest_active(&self.db, flow_key)
            .await?
            .ok_or_else(|| AppError::not_found(format!("no active flow with key `{}`", shorten(flow_key))))?;
        let mut results = Vec::new();
        for rule in &flow.definition.nudges.rules {
            // Groups are the assignment, not what was done: a nudge the budget or quiet
            // hours held back, or progress cancelled, still counts as nudged. Counting only
            // the sent would drop the subjects a competing nudge crowded out from one group
            // and not from the other (a held-out nudge never waits), and bias the lift.
            let units: Vec<Unit> = store::exposures(&self.db, flow_key, &rule.key)
                .await?
                .into_iter()
                .map(|(subject, at, completed_at)| Unit {
                    held_out: nudges::in_holdout(flow_key, &rule.key, &subject, rule.holdout_percent),
                    at,
                    completed_at,
                })
                .collect();
            results.push((rule.clone(), rule_result(&units, Duration::hours(window_hours))));
        }
        Ok(results)
    }
}

/// A row moved to the rule's occurrence from a new anchor, or to none.
fn moved(row: &ScheduleRow, next: Option<Due>) -> ScheduleRow {
    ScheduleRow {
        anchor_at: next.map(|d| d.anchor),
        number: next.map_or(1, |d| d.number as i32),
        due_at: next.map(|d| d.at),
        waiting: false,
        ..row.clone()
    }
}

fn log_entry(
    row: &ScheduleRow,
    subject: &SubjectRecord,
    flow: &FlowRecord,
    rule: &NudgeRule,
    due: &Due,
    outcome: &str,
    now: DateTime<Utc>,
) -> LogEntry {
    // The texts as the subject reads them, kept as sent.
    let texts = rule.texts(text::subject_locale(&subject.attributes), flow.definition.default_locale());
    LogEntry {
        id: 0,
        occurrence: format!("{}:{}:{}:{}", row.enrollment_id, rule.key, due.anchor.timestamp_micros(), due.number),
        subject_id: subject.id,
        enrollment_id: row.enrollment_id,
        flow_key: flow.key.clone(),
        flow_version: flow.version,
        rule_key: rule.key.clone(),
        anchor_at: due.anchor,
        number: due.number as i32,
        outcome: outcome.to_string(),
        channel: rule.channel.name().to_string(),
        title: texts.title.to_string(),
        message: texts.message.to_string(),
        at: now,
        until: None,
        dismissed_at: None,
    }
}

/// The outbox row that becomes a `nudge.due` webhook.
fn nudge_outbox_entry(item: &Item<'_>, log_id: i64) -> OutboxEntry {
    let locale = text::subject_locale(&item.subject.attributes);
    let texts = item.rule.texts(locale, item.flow.definition.default_locale());
    let step = match &item.rule.trigger {
        nudges::NudgeTrigger::Stuck { step, .. } => Some(step.clone()),
        _ => None,
    };
    OutboxEntry {
        kind: "nudge_due",
        subject_id: item.subject.external_id.clone(),
        flow_key: item.flow.key.clone(),
        flow_version: item.flow.version,
        step_key: step,
        payload: json!({
            "nudge": {
                "id": log_id.to_string(),
                "key": item.rule.key,
                "trigger": item.rule.trigger.kind(),
                "occurrence": item.due.number,
                "title": texts.title,
                "message": texts.message,
                "locale": texts.locale,
                "channel": item.rule.channel.name(),
            },
            "revision": item.enrollment.state.revision,
        }),
    }
}
