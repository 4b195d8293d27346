//! Nudges: the caller's pending in-app nudges and their dismissal, and for admins a
//! subject's nudge log and the lift of each rule.

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::{onramp, party, principal};
use crate::auth::Role;
use crate::domain::Owner;
use crate::domain::nudges::{NudgeRule, RuleResult};
use crate::error::AppError;
use crate::persistence::nudges::LogEntry;
use crate::service::nudge_outcome as outcome;

/// At most this many pending nudges per request.
pub const MAX_PENDING: i32 = 50;

/// A reminder shown in the app: sent, not dismissed, and still meant (progress since
/// withdraws it).
#[derive(SimpleObject, Clone, Debug)]
pub struct Nudge {
    /// Pass to dismissNudge.
    pub id: ID,
    /// The flow the nudge is about.
    pub flow_key: String,
    /// The rule's key in the flow's `nudges.rules`.
    pub rule_key: String,
    /// The rule's title, to show.
    pub title: String,
    /// The rule's message, to show.
    pub message: String,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
    /// When the subject dismissed it; null while it is showing.
    pub dismissed_at: Option<DateTime<Utc>>,
}

impl From<&LogEntry> for Nudge {
    fn from(e: &LogEntry) -> Self {
        Nudge {
            id: ID(e.id.to_string()),
            flow_key: e.flow_key.clone(),
            rule_key: e.rule_key.clone(),
            title: e.title.clone(),
            message: e.message.clone(),
            sent_at: e.at,
            dismissed_at: e.dismissed_at,
        }
    }
}

/// What the scheduler did with a due nudge.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum NudgeOutcome {
    /// Sent (in-app, webhook or both, as the rule says).
    Sent,
    /// Waiting: the subject's fatigue budget went to nudges of higher priority or sent earlier;
    /// due again when the budget is back (see `until`), sent then if it still holds.
    SuppressedByCap,
    /// Waiting: it was due in the subject's quiet hours and goes out when they end (see `until`).
    SuppressedByQuietHours,
    /// Not sent: the subject made progress (or the flow finished, or the condition stopped holding) first.
    CancelledByProgress,
    /// Not sent: the subject is in the rule's holdout group ("would have been nudged").
    HeldOut,
}

impl NudgeOutcome {
    fn of(name: &str) -> Option<NudgeOutcome> {
        Some(match name {
            outcome::SENT => NudgeOutcome::Sent,
            outcome::SUPPRESSED_BY_CAP => NudgeOutcome::SuppressedByCap,
            outcome::SUPPRESSED_BY_QUIET_HOURS => NudgeOutcome::SuppressedByQuietHours,
            outcome::CANCELLED_BY_PROGRESS => NudgeOutcome::CancelledByProgress,
            outcome::HELD_OUT => NudgeOutcome::HeldOut,
            _ => return None,
        })
    }
}

/// One line of a subject's nudge log: why a nudge was or was not sent.
#[derive(SimpleObject, Clone, Debug)]
pub struct NudgeLogEntry {
    /// Orders the log (newest has the highest); pass as `before` for the next page.
    pub id: ID,
    /// The flow the rule belongs to.
    pub flow_key: String,
    /// The flow version whose rule it was.
    pub flow_version: i32,
    /// The rule's key in the flow's `nudges.rules`.
    pub rule_key: String,
    /// Which reminder of the rule since the subject's last progress (1 for the first).
    pub occurrence: i32,
    /// What the scheduler did with it.
    pub outcome: NudgeOutcome,
    /// in_app, webhook or both.
    pub channel: String,
    /// When the scheduler decided.
    pub at: DateTime<Utc>,
    /// For SUPPRESSED_BY_QUIET_HOURS and SUPPRESSED_BY_CAP: when the wait ends and the nudge
    /// is due again.
    pub until: Option<DateTime<Utc>>,
    /// The rule's title when the entry was made.
    pub title: String,
}

/// A rate with its 95% Wilson interval.
#[derive(SimpleObject, Clone, Debug)]
pub struct NudgeGroupResult {
    /// Enrollments in the group whose occurrence of the rule came due (counted once each,
    /// from the scheduler's first decision, whatever it was: intention to treat).
    pub enrollments: i64,
    /// Of those, completed within the window after that first decision.
    pub completed: i64,
    /// completed / enrollments; null when the group is empty.
    pub completion_rate: Option<f64>,
    /// 95% Wilson score interval of the rate, low end.
    pub interval_low: Option<f64>,
    /// 95% Wilson score interval of the rate, high end.
    pub interval_high: Option<f64>,
}

/// The lift of one nudge rule: subjects nudged against subjects held out.
#[derive(SimpleObject, Clone, Debug)]
pub struct NudgeResult {
    /// The rule's key in the flow's `nudges.rules`.
    pub rule_key: String,
    /// not_started, no_progress, stuck or abandoned.
    pub trigger: String,
    /// The rule's holdout percentage.
    pub holdout_percent: i32,
    /// Enrollments assigned to be nudged (not held out).
    pub sent: NudgeGroupResult,
    /// Enrollments held out (the control group).
    pub held_out: NudgeGroupResult,
    /// Sent completion rate minus held-out completion rate; null when either group is empty.
    pub lift: Option<f64>,
    /// The pooled two-proportion z statistic (sent against held out); null when undefined.
    pub z: Option<f64>,
    /// Its two-sided p-value; null when undefined.
    pub p_value: Option<f64>,
    /// Set when a group is too small to conclude from.
    pub warning: Option<String>,
}

fn group(p: crate::domain::stats::Proportion, i: Option<crate::domain::stats::Interval>) -> NudgeGroupResult {
    NudgeGroupResult {
        enrollments: p.trials,
        completed: p.successes,
        completion_rate: p.rate(),
        interval_low: i.map(|i| i.low),
        interval_high: i.map(|i| i.high),
    }
}

impl From<&(NudgeRule, RuleResult)> for NudgeResult {
    fn from((rule, r): &(NudgeRule, RuleResult)) -> Self {
        NudgeResult {
            rule_key: rule.key.clone(),
            trigger: rule.trigger.kind().to_string(),
            holdout_percent: i32::from(rule.holdout_percent),
            sent: group(r.sent, r.sent_interval),
            held_out: group(r.held_out, r.held_out_interval),
            lift: r.lift,
            z: r.test.map(|t| t.z),
            p_value: r.test.map(|t| t.p_value),
            warning: r.warning.clone(),
        }
    }
}

fn log_line(e: &LogEntry) -> Option<NudgeLogEntry> {
    Some(NudgeLogEntry {
        id: ID(e.id.to_string()),
        flow_key: e.flow_key.clone(),
        flow_version: e.flow_version,
        rule_key: e.rule_key.clone(),
        occurrence: e.number,
        outcome: NudgeOutcome::of(&e.outcome)?,
        channel: e.channel.clone(),
        at: e.at,
        until: e.until,
        title: e.title.clone(),
    })
}

fn parse_id(id: &ID, what: &str) -> Result<i64, AppError> {
    id.parse::<i64>()
        .map_err(|_| AppError::invalid(format!("`{}` is not a {what} id", crate::domain::limits::shorten(id))))
}

#[derive(Default)]
pub struct NudgeQuery;

#[Object]
impl NudgeQuery {
    /// The caller's pending in-app nudges, newest first (with workspaceId, the
    /// workspace's too). Admin and service callers may pass subjectId. At most 50.
    #[graphql(complexity = "super::cost::READ + child_complexity")]
    async fn nudges(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Whose nudges (admin and service callers only); default: the caller.")] subject_id: Option<ID>,
        #[graphql(desc = "Also the nudges of this workspace (a user must be a member).")] workspace_id: Option<ID>,
        #[graphql(default = 20, desc = "How many, 1 to 50.")] first: i32,
        #[graphql(
            desc = "The language of the texts (BCP 47, such as `fr-CA`: the exact tag, then the language, then the flow's default); default: as sent, in the subject's `locale` attribute."
        )]
        locale: Option<String>,
    ) -> Result<Vec<Nudge>> {
        let party = party(ctx, subject_id.as_ref(), workspace_id.as_ref())?;
        if !(1..=MAX_PENDING).contains(&first) {
            return Err(AppError::invalid(format!("first is from 1 to {MAX_PENDING}")).into());
        }
        let locale = super::onboarding::checked_locale(locale)?;
        let pending = onramp(ctx).pending_nudges(&party, first as u64, locale.as_deref()).await?;
        Ok(pending.iter().map(Nudge::from).collect())
    }

    /// Admin: a subject's nudge log, newest first: every due nudge and what became of it
    /// (sent, suppressed by the fatigue cap or quiet hours, cancelled by progress, held
    /// out). For a workspace's flows, pass the workspace id and `workspace: true`.
    #[graphql(complexity = "super::cost::READ + child_complexity")]
    async fn nudge_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user (or, with `workspace: true`, the workspace) whose log to read.")] subject_id: ID,
        #[graphql(default = false, desc = "subjectId names a workspace.")] workspace: bool,
        #[graphql(desc = "Entries older than this entry id (the last id of the previous page).")] before: Option<ID>,
        #[graphql(default = 50, desc = "How many, 1 to 200.")] first: i32,
    ) -> Result<Vec<NudgeLogEntry>> {
        principal(ctx)?.require(&[Role::Admin])?;
        let onramp = onramp(ctx);
        let limits = onramp.limits();
        let owner = if workspace { Owner::workspace(&subject_id, limits) } else { Owner::user(&subject_id, limits) }
            .map_err(AppError::invalid)?;
        if !(1..=crate::service::MAX_NUDGE_LOG_PAGE as i32).contains(&first) {
            return Err(AppError::invalid("first is from 1 to 200").into());
        }
        let before = before.as_ref().map(|b| parse_id(b, "nudge log")).transpose()?;
        let entries = onramp.nudge_log(&owner.key(), before, first as u64).await?;
        Ok(entries.iter().filter_map(log_line).collect())
    }

    /// Admin: per nudge rule of the flow's active version, completion within
    /// `windowHours` of the nudge for enrollments nudged against enrollments held out,
    /// with 95% Wilson intervals and a two-proportion z-test.
    #[graphql(complexity = "super::cost::ANALYTICS + child_complexity")]
    async fn nudge_results(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow whose active version's rules are reported.")] flow_key: String,
        #[graphql(default = 168, desc = "The completion window after the nudge, in hours (1 to 8760).")]
        window_hours: i32,
    ) -> Result<Vec<NudgeResult>> {
        principal(ctx)?.require(&[Role::Admin])?;
        let results = onramp(ctx).nudge_results(&flow_key, i64::from(window_hours)).await?;
        Ok(results.iter().map(NudgeResult::from).collect())
    }
}

#[derive(Default)]
pub struct NudgeMutation;

#[Object]
impl NudgeMutation {
    /// Dismisses one of the caller's in-app nudges (admin and service callers may pass
    /// subjectId). Dismissing again changes nothing.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn dismiss_nudge(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The nudge's id, from `nudges`.")] id: ID,
        #[graphql(desc = "Whose nudge (admin and service callers only); default: the caller.")] subject_id: Option<ID>,
        #[graphql(desc = "For a nudge of this workspace (a user must be a member).")] workspace_id: Option<ID>,
    ) -> Result<Nudge> {
        let party = party(ctx, subject_id.as_ref(), workspace_id.as_ref())?;
        let id = parse_id(&id, "nudge")?;
        let entry = onramp(ctx).dismiss_nudge(&party, id).await?;
        Ok(Nudge::from(&entry))
    }
}

/// The stream behind the `nudgeReceived` subscription: every in-app nudge sent to the
/// party from now on, once each, oldest first. A signal (this instance's scheduler, or
/// another's through NOTIFY) makes it re-read the pending nudges and send those newer than
/// the last it sent, so a lagging client loses none that are still pending.
pub fn received(
    onramp: std::sync::Arc<crate::service::Onramp>,
    party: crate::service::Party,
    locale: Option<String>,
) -> impl futures_util::Stream<Item = Result<Nudge>> + Send + 'static {
    use futures_util::StreamExt;
    let mut topics = vec![crate::service::nudge_topic(&party.subject)];
    if let Some(w) = &party.workspace {
        topics.push(crate::service::nudge_topic(&Owner::Workspace(w.clone()).key()));
    }
    let watches: Vec<_> = topics.iter().map(|t| onramp.realtime().hub().watch(t)).collect();
    let signals = futures_util::stream::select_all(
        watches
            .into_iter()
            .map(|w| futures_util::stream::unfold(w, |mut w| async move { w.next().await.map(|s| (s, w)) }).boxed()),
    );
    let reads = futures_util::stream::once(async {}).chain(signals.map(|_| ())).then(move |()| {
        let (onramp, party, locale) = (onramp.clone(), party.clone(), locale.clone());
        async move { onramp.pending_nudges(&party, MAX_PENDING as u64, locale.as_deref()).await }
    });
    reads
        .scan(None::<i64>, |last, pending| {
            let out: Vec<Result<Nudge>> = match pending {
                Err(e) => vec![Err(e.into())],
                Ok(entries) => {
                    let newest = entries.iter().map(|e| e.id).max();
                    let fresh: Vec<Result<Nudge>> = match *last {
                        // The first read only marks where "new" starts.
                        None => Vec::new(),
                        Some(seen) => {
                            let mut fresh: Vec<&LogEntry> = entries.iter().filter(|e| e.id > seen).collect();
                            fresh.sort_by_key(|e| e.id);
                            fresh.into_iter().map(|e| Ok(Nudge::from(e))).collect()
                        }
                    };
                    *last = Some(last.unwrap_or(0).max(newest.unwrap_or(0)));
                    fresh
                }
            };
            futures_util::future::ready(Some(futures_util::stream::iter(out)))
        })
        .flatten()
}
