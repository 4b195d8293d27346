//! Nudges in a generated subject's timeline: the schedule the write path keeps, and the
//! scheduler's decisions at the moments the flow's rules come due, by the domain's own
//! functions (`schedule_for`, `holds`, `catch_up`, `decide`, `in_holdout`, `following`)
//! with the default caps and no quiet hours. The scheduler is taken to tick the moment an
//! occurrence is due (the real one polls every few seconds).
//!
//! A nudge sent brings its subject back with probability `LIFT`: the subject returns a
//! little later and goes on to finish the flow. Held-out subjects get no such chance; that
//! difference is what `nudgeResults` measures.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::simulate::Rng;
use crate::domain::nudges::{self as rules, Candidate, Caps, Decision, Due};
use crate::domain::{Enrollment, FlowDefinition};
use crate::service::nudge_outcome as outcome;

/// The chance that a nudge sent brings its subject back to finish the flow. Small enough
/// that seed 002's mix stays in its bands, large enough to show in `nudgeResults`.
pub(crate) const LIFT: f64 = 0.08;
/// How long after the nudge a subject it brings back returns (log-normal median).
const RESPONSE_MEDIAN_SECS: f64 = 2.0 * 3600.0;

/// What the scheduler did with one occurrence: a `nudge_log` row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Logged {
    /// The rule's index in the flow's `nudges.rules`.
    pub rule: usize,
    pub anchor: DateTime<Utc>,
    pub number: u32,
    pub outcome: &'static str,
    pub at: DateTime<Utc>,
    /// A wait's end (held back by the budget); the log's `until`.
    pub until: Option<DateTime<Utc>>,
}

impl Logged {
    /// The occurrence key's suffix: a wait is logged once per reason, apart from the
    /// occurrence's final outcome (`service::nudges`).
    pub fn suffix(&self) -> &'static str {
        if self.outcome == outcome::SUPPRESSED_BY_CAP { ":cap" } else { "" }
    }
}

/// One rule's `nudge_schedule` row for the enrollment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    pub anchor: Option<DateTime<Utc>>,
    pub number: u32,
    pub due: Option<DateTime<Utc>>,
    /// Came due and waits for the budget (`due` is the wait's end).
    pub waiting: bool,
}

/// The nudge state of one subject's enrollment while its timeline is played.
#[derive(Clone, Debug)]
pub(crate) struct Nudges {
    /// Per rule of the flow, in order.
    pub rows: Vec<Row>,
    pub log: Vec<Logged>,
    /// When nudges were sent, for the fatigue budget.
    sent: Vec<DateTime<Utc>>,
    /// Whether a sent nudge brings the subject back, and when.
    rng: Rng,
}

/// Who is nudged: the subject and its enrollment's flow.
pub(crate) struct Context<'a> {
    pub flow: &'a FlowDefinition,
    pub attributes: &'a Value,
    pub state: &'a Enrollment,
    pub subject: &'a str,
}

impl Nudges {
    pub fn new(rules: usize, rng: Rng) -> Nudges {
        let empty = Row { anchor: None, number: 1, due: None, waiting: false };
        Nudges { rows: vec![empty; rules], log: Vec::new(), sent: Vec::new(), rng }
    }

    /// After a write: what `service::advance` stores (`schedule_for`), merged as the
    /// store's upsert merges it: a row whose anchor is unchanged keeps its occurrence and
    /// due time (the scheduler may have moved them on), and so does a waiting one (the
    /// scheduler logs it cancelled when the wait ends); a new anchor or none replaces the
    /// rest. (A row due and not yet decided is the store's third case; here the scheduler
    /// decides every occurrence the moment it is due, so there is none.)
    pub fn written(&mut self, flow: &FlowDefinition, attributes: &Value, state: &Enrollment) {
        for (row, (_, due)) in self.rows.iter_mut().zip(rules::schedule_for(flow, attributes, state)) {
            let anchor = due.map(|d| d.anchor);
            if row.waiting {
                continue;
            }
            if row.anchor.is_none() || row.anchor != anchor {
                *row = Row { anchor, number: due.map_or(1, |d| d.number), due: due.map(|d| d.at), waiting: false };
            }
        }
    }

    /// The scheduler over `(from, to]` while the enrollment stays as it is: every
    /// occurrence due is decided, logged and moved on, in time order. Returns when a sent
    /// nudge brings the subject back (the earliest, if several); nothing after that moment
    /// is decided here, as the subject's return changes the enrollment.
    pub fn run(&mut self, cx: &Context<'_>, from: DateTime<Utc>, mut to: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut back: Option<DateTime<Utc>> = None;
        if to < from {
            return None;
        }
        while let Some(at) = self.rows.iter().filter_map(|r| r.due).filter(|d| *d <= to).min() {
            // A row due before `from` was written due: the next tick takes it at once.
            let tick = at.max(from);
            if let Some(returns) = self.tick(cx, tick) {
                back = Some(back.map_or(returns, |b| b.min(returns)));
                to = to.min(returns);
            }
        }
        back
    }

    /// One tick at `now` for the rows due by then: `service::nudge_tick` for one subject.
    fn tick(&mut self, cx: &Context<'_>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let (flow, attributes, state) = (cx.flow, cx.attributes, cx.state);
        let mut items: Vec<(usize, Due)> = Vec::new();
        for (i, rule) in flow.nudges.rules.iter().enumerate() {
            let row = self.rows[i];
            let Some(due_at) = row.due.filter(|d| *d <= now) else { continue };
            let Some(anchor) = row.anchor else {
                self.rows[i] = Row { anchor: None, number: row.number, due: None, waiting: false };
                continue;
            };
            let due = Due { anchor, number: row.number, at: due_at };
            if !rules::holds(rule, flow, attributes, state, &due) {
                self.record(i, &due, outcome::CANCELLED_BY_PROGRESS, now, None);
                let next = rules::next_due(rule, flow, attributes, state);
                self.rows[i] = Row {
                    anchor: next.map(|d| d.anchor),
                    number: next.map_or(1, |d| d.number),
                    due: next.map(|d| d.at),
                    waiting: false,
                };
                continue;
            }
            items.push((i, rules::catch_up(rule, due, now)));
        }
        let candidates: Vec<Candidate<'_>> = items
            .iter()
            .map(|&(i, _)| {
                let rule = &flow.nudges.rules[i];
                Candidate {
                    priority: flow.nudges.priority,
                    due_at: self.rows[i].due.unwrap_or(now),
                    flow_key: &flow.key,
                    rule_key: &rule.key,
                    held_out: rules::in_holdout(&flow.key, &rule.key, cx.subject, rule.holdout_percent),
                }
            })
            .collect();
        let decisions = rules::decide(&candidates, &self.sent, Caps::default(), None, now);
        let mut back = None;
        for (&(i, due), decision) in items.iter().zip(decisions) {
            let kind = match decision {
                Decision::Send => outcome::SENT,
                Decision::HeldOut => outcome::HELD_OUT,
                // Waits for the budget: the same occurrence is due again then.
                Decision::SuppressedByCap(until) => {
                    self.record(i, &due, outcome::SUPPRESSED_BY_CAP, now, Some(until));
                    self.rows[i] =
                        Row { anchor: Some(due.anchor), number: due.number, due: Some(until), waiting: true };
                    continue;
                }
                Decision::WaitUntil(_) => unreachable!("demo data has no quiet hours"),
            };
            // The log's unique occurrence: one already logged is not sent again.
            if self.record(i, &due, kind, now, None) && decision == Decision::Send {
                self.sent.push(now);
                if self.rng.chance(LIFT) {
                    let returns = now + Duration::seconds(self.rng.gap(RESPONSE_MEDIAN_SECS, 1.0).max(60.0) as i64);
                    back = Some(back.map_or(returns, |b: DateTime<Utc>| b.min(returns)));
                }
            }
            let next = rules::following(&flow.nudges.rules[i], &due);
            self.rows[i] = Row {
                anchor: Some(due.anchor),
                number: next.map_or(due.number, |d| d.number),
                due: next.map(|d| d.at),
                waiting: false,
            };
        }
        back
    }

    /// Logs an occurrence unless it is logged already; whether it was.
    fn record(
        &mut self,
        rule: usize,
        due: &Due,
        outcome: &'static str,
        at: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> bool {
        let line = Logged { rule, anchor: due.anchor, number: due.number, outcome, at, until };
        let same = |l: &Logged| {
            l.rule == rule && l.anchor == due.anchor && l.number == due.number && l.suffix() == line.suffix()
        };
        if self.log.iter().any(same) {
            return false;
        }
        self.log.push(line);
        true
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::parse_flow;

    fn flow(rules: Value) -> FlowDefinition {
        parse_flow(
            &json!({"key": "f", "title": "F", "steps": [{"key": "a", "title": "A"}], "nudges": {"rules": rules}}),
        )
        .expect("flow")
    }

    fn at(hours: i64) -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().expect("time") + Duration::hours(hours)
    }

    fn rule(key: &str, trigger: Value, holdout: u8) -> Value {
        json!({"key": key, "trigger": trigger, "title": "T", "message": "M", "holdoutPercent": holdout})
    }

    #[test]
    fn occurrences_are_decided_when_due_and_moved_on() {
        let flow = flow(json!([rule("start", json!({"kind": "not_started", "after": "24h"}), 50)]));
        let state = Enrollment::new(at(0));
        let attributes = json!({});
        // One subject of each group.
        let subjects: Vec<String> = [false, true]
            .iter()
            .map(|&held| {
                (0..).map(|i| format!("s{i}")).find(|s| rules::in_holdout("f", "start", s, 50) == held).expect("one")
            })
            .collect();
        for (subject, expected) in subjects.iter().zip([outcome::SENT, outcome::HELD_OUT]) {
            let mut nudges = Nudges::new(1, Rng::stream(1, 2, 4));
            nudges.written(&flow, &attributes, &state);
            assert_eq!(nudges.rows[0], Row { anchor: Some(at(0)), number: 1, due: Some(at(24)), waiting: false });
            let cx = Context { flow: &flow, attributes: &attributes, state: &state, subject };
            nudges.run(&cx, at(0), at(23));
            assert!(nudges.log.is_empty(), "not due yet");
            nudges.run(&cx, at(23), at(100));
            assert_eq!(
                nudges.log,
                vec![Logged { rule: 0, anchor: at(0), number: 1, outcome: expected, at: at(24), until: None }]
            );
            assert_eq!(nudges.rows[0], Row { anchor: Some(at(0)), number: 1, due: None, waiting: false }, "once");
            // A later write with the same anchor keeps the spent row.
            nudges.written(&flow, &attributes, &state);
            assert_eq!(nudges.rows[0].due, None);
        }
    }

    #[test]
    fn the_budget_lets_one_of_two_due_together_through_and_the_other_a_day_later() {
        let flow = flow(json!([
            rule("b-second", json!({"kind": "not_started", "after": "24h"}), 0),
            rule("a-first", json!({"kind": "abandoned", "after": "24h"}), 0),
        ]));
        let state = Enrollment::new(at(0));
        let attributes = json!({});
        let mut nudges = Nudges::new(2, Rng::stream(1, 2, 4));
        nudges.written(&flow, &attributes, &state);
        let cx = Context { flow: &flow, attributes: &attributes, state: &state, subject: "s" };
        nudges.run(&cx, at(0), at(100));
        let outcomes: Vec<(usize, &str)> = nudges.log.iter().map(|l| (l.rule, l.outcome)).collect();
        // Same priority and due time: the rule key decides; the other waits a day and goes.
        assert_eq!(outcomes, vec![(0, outcome::SUPPRESSED_BY_CAP), (1, outcome::SENT), (0, outcome::SENT)]);
        assert_eq!(nudges.log[0].until, Some(at(48)));
        assert_eq!(nudges.log[2].at, at(48));
        assert!(nudges.rows.iter().all(|r| !r.waiting && r.due.is_none()), "both spent");
    }
}
