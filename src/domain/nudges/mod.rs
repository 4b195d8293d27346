//! Nudges: reminders a flow defines over its own progress and time, which the scheduler
//! sends while they still hold. The rules (what a nudge is, when it is due, what stops
//! it, the fatigue budget, quiet hours, holdouts, lift) live here, pure; persistence keeps
//! the next due time per (enrollment, rule) and the log of what happened.

mod fatigue;
mod parse;
mod results;
mod schedule;

use chrono::Duration;
use serde_json::{Map, Value, json};

use super::condition::Condition;
use super::text::LocalizedText;

pub use fatigue::{Candidate, Caps, Decision, QuietHours, decide, in_holdout, quiet_until, time_zone};
pub use parse::{codes, parse_duration, parse_plan};
pub use results::{RuleResult, Unit, rule_result};
pub use schedule::{Due, catch_up, following, holds, next_due, schedule_for};

/// At most this many rules per flow.
pub const MAX_RULES: usize = 20;
/// A nudge's title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// A nudge's message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2000;
/// A repeated nudge is sent at most this many times per period without progress.
pub const MAX_REPEATS: u32 = 10;
/// Durations are between one minute and a year.
pub const MIN_DURATION_SECONDS: i64 = 60;
pub const MAX_DURATION_SECONDS: i64 = 366 * 24 * 3600;
/// Flow priorities are within ±this.
pub const MAX_PRIORITY: i64 = 1000;

/// A flow's nudges: its rules, and its priority against other flows' nudges when the
/// fatigue budget lets only some through (higher wins).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NudgePlan {
    pub priority: i32,
    pub rules: Vec<NudgeRule>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NudgeRule {
    pub key: String,
    pub trigger: NudgeTrigger,
    /// Over subject attributes and the flow's answers; absent: always.
    pub condition: Option<Condition>,
    /// Shown in the app and carried in the webhook, in the subject's locale when the
    /// flow is translated (see `domain::text`).
    pub title: LocalizedText,
    pub message: LocalizedText,
    pub channel: Channel,
    /// Subjects held out of this rule (0 to 100), by the experiments' hash: logged as
    /// "would have been nudged", never nudged.
    pub holdout_percent: u8,
}

/// When a rule comes due, measured from an anchor in the enrollment.
#[derive(Clone, Debug, PartialEq)]
pub enum NudgeTrigger {
    /// Nothing done `after` enrollment (anchor: enrollment). Once.
    NotStarted { after: Duration },
    /// Started, then nothing done for `after` (anchor: last activity); then again every
    /// `every`, `max_count` times in all, while still nothing is done.
    NoProgress { after: Duration, every: Duration, max_count: u32 },
    /// `step` available and not done for `after` (anchor: when it became available). Once.
    Stuck { step: String, after: Duration },
    /// Nothing done for `after` (anchor: last activity), started or not. Once.
    Abandoned { after: Duration },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    InApp,
    Webhook,
    Both,
}

impl Channel {
    pub fn name(self) -> &'static str {
        match self {
            Channel::InApp => "in_app",
            Channel::Webhook => "webhook",
            Channel::Both => "both",
        }
    }

    pub fn parse(name: &str) -> Option<Channel> {
        [Channel::InApp, Channel::Webhook, Channel::Both].into_iter().find(|c| c.name() == name)
    }

    pub fn in_app(self) -> bool {
        matches!(self, Channel::InApp | Channel::Both)
    }

    pub fn webhook(self) -> bool {
        matches!(self, Channel::Webhook | Channel::Both)
    }
}

impl NudgeTrigger {
    pub fn kind(&self) -> &'static str {
        match self {
            NudgeTrigger::NotStarted { .. } => "not_started",
            NudgeTrigger::NoProgress { .. } => "no_progress",
            NudgeTrigger::Stuck { .. } => "stuck",
            NudgeTrigger::Abandoned { .. } => "abandoned",
        }
    }
}

/// A duration as stored: the shortest exact ISO 8601 form (`P7D`, `PT36H`, `PT90M`).
pub fn format_duration(d: Duration) -> String {
    let s = d.num_seconds();
    if s % 86_400 == 0 {
        format!("P{}D", s / 86_400)
    } else if s % 3600 == 0 {
        format!("PT{}H", s / 3600)
    } else if s % 60 == 0 {
        format!("PT{}M", s / 60)
    } else {
        format!("PT{s}S")
    }
}

impl NudgePlan {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rule(&self, key: &str) -> Option<&NudgeRule> {
        self.rules.iter().find(|r| r.key == key)
    }

    /// The canonical stored form: every default spelled out, durations in ISO 8601.
    pub fn to_json(&self) -> Value {
        json!({
            "priority": self.priority,
            "rules": self.rules.iter().map(NudgeRule::to_json).collect::<Vec<_>>(),
        })
    }
}

/// A rule's texts as one subject reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Texts<'a> {
    pub title: &'a str,
    pub message: &'a str,
    /// The locale they are in.
    pub locale: &'a str,
}

impl NudgeRule {
    /// Title and message for `locale`: the exact tag, then its language, then the flow's
    /// default (validation makes a translated flow's locales complete, so both texts are
    /// in the same one).
    pub fn texts<'a>(&'a self, locale: Option<&str>, default_locale: &'a str) -> Texts<'a> {
        let available: Vec<&str> = self.title.locales().collect();
        Texts {
            title: self.title.resolve(locale, default_locale),
            message: self.message.resolve(locale, default_locale),
            locale: super::text::choose_locale(&available, locale, default_locale),
        }
    }

    fn to_json(&self) -> Value {
        let mut trigger = Map::new();
        trigger.insert("kind".into(), json!(self.trigger.kind()));
        match &self.trigger {
            NudgeTrigger::NotStarted { after } | NudgeTrigger::Abandoned { after } => {
                trigger.insert("after".into(), json!(format_duration(*after)));
            }
            NudgeTrigger::NoProgress { after, every, max_count } => {
                trigger.insert("after".into(), json!(format_duration(*after)));
                trigger.insert("every".into(), json!(format_duration(*every)));
                trigger.insert("maxCount".into(), json!(max_count));
            }
            NudgeTrigger::Stuck { step, after } => {
                trigger.insert("step".into(), json!(step));
                trigger.insert("after".into(), json!(format_duration(*after)));
            }
        }
        let mut m = Map::new();
        m.insert("key".into(), json!(self.key));
        m.insert("trigger".into(), Value::Object(trigger));
        if let Some(c) = &self.condition {
            m.insert("condition".into(), c.to_json());
        }
        m.insert("title".into(), self.title.to_json());
        m.insert("message".into(), self.message.to_json());
        m.insert("channel".into(), json!(self.channel.name()));
        m.insert("holdoutPercent".into(), json!(self.holdout_percent));
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests;
