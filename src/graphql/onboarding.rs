//! What SPA and mobile clients call: the signed-in subject's progress.

use async_graphql::{Context, ID, Json, Object, Result};
use serde_json::Value;

use super::types::{OnboardingStatus, Points, PointsEntry, StepProgress};
use super::{onramp, principal};
use crate::auth::{Principal, Role};
use crate::domain::{Command, Source};
use crate::error::AppError;

#[derive(Default)]
pub struct OnboardingQuery;

#[Object]
impl OnboardingQuery {
    /// Where the subject stands in a flow. NOT_STARTED, with the would-be steps, when the
    /// subject is not enrolled. Reading enrolls nothing; its only write is the exposure to a
    /// running experiment. Only admin and service callers may pass subjectId.
    async fn status(&self, ctx: &Context<'_>, flow_key: String, subject_id: Option<ID>) -> Result<OnboardingStatus> {
        let subject = principal(ctx)?.target(subject_id.as_deref().map(String::as_str))?;
        let snapshot = onramp(ctx).status(&subject, &flow_key).await?;
        Ok((&snapshot).into())
    }

    /// The first applicable, available, unfinished step, or null when there is none.
    async fn next_step(
        &self,
        ctx: &Context<'_>,
        flow_key: String,
        subject_id: Option<ID>,
    ) -> Result<Option<StepProgress>> {
        let subject = principal(ctx)?.target(subject_id.as_deref().map(String::as_str))?;
        let snapshot = onramp(ctx).status(&subject, &flow_key).await?;
        let view = snapshot.view();
        Ok(view.next().map(StepProgress::from))
    }

    /// The subject's points: the total and every ledger entry. Only admin and service
    /// callers may pass subjectId.
    async fn points(&self, ctx: &Context<'_>, subject_id: Option<ID>) -> Result<Points> {
        let subject = principal(ctx)?.target(subject_id.as_deref().map(String::as_str))?;
        let balance = onramp(ctx).points(&subject).await?;
        Ok(Points {
            subject_id: ID(subject),
            total: balance.total,
            entries: balance
                .entries
                .into_iter()
                .map(|e| PointsEntry { amount: e.amount, reason: e.reason, awarded_at: e.awarded_at })
                .collect(),
        })
    }

    /// Every flow the subject is enrolled in, and every active flow whose audience admits
    /// it (NOT_STARTED until it enrolls), by flow key.
    async fn onboardings(&self, ctx: &Context<'_>, subject_id: Option<ID>) -> Result<Vec<OnboardingStatus>> {
        let subject = principal(ctx)?.target(subject_id.as_deref().map(String::as_str))?;
        let snapshots = onramp(ctx).onboardings(&subject).await?;
        Ok(snapshots.iter().map(OnboardingStatus::from).collect())
    }
}

#[derive(Default)]
pub struct OnboardingMutation;

/// The longest skip reason kept.
const MAX_REASON_LEN: usize = 500;

#[Object]
impl OnboardingMutation {
    /// Enrolls the subject in the newest active version, or resumes a dismissed flow.
    async fn start_onboarding(
        &self,
        ctx: &Context<'_>,
        flow_key: String,
        subject_id: Option<ID>,
    ) -> Result<OnboardingStatus> {
        run(ctx, flow_key, subject_id, Command::Start).await
    }

    /// Marks a step IN_PROGRESS.
    async fn start_step(
        &self,
        ctx: &Context<'_>,
        flow_key: String,
        step_key: String,
        subject_id: Option<ID>,
    ) -> Result<OnboardingStatus> {
        run(ctx, flow_key, subject_id, Command::StartStep { step: step_key }).await
    }

    /// Completes a step, awarding its points once. Idempotent: repeating it returns the
    /// same state. `metadata` (a JSON object) records what the subject answered.
    async fn complete_step(
        &self,
        ctx: &Context<'_>,
        flow_key: String,
        step_key: String,
        metadata: Option<Json<Value>>,
        subject_id: Option<ID>,
    ) -> Result<OnboardingStatus> {
        let metadata = match metadata.map(|m| m.0) {
            None | Some(Value::Null) => None,
            Some(m @ Value::Object(_)) => Some(m),
            Some(_) => return Err(AppError::invalid("metadata must be a JSON object").into()),
        };
        run(ctx, flow_key, subject_id, Command::CompleteStep { step: step_key, metadata }).await
    }

    /// Skips an optional step.
    async fn skip_step(
        &self,
        ctx: &Context<'_>,
        flow_key: String,
        step_key: String,
        reason: Option<String>,
        subject_id: Option<ID>,
    ) -> Result<OnboardingStatus> {
        if reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON_LEN) {
            return Err(AppError::invalid(format!("reason is limited to {MAX_REASON_LEN} characters")).into());
        }
        run(ctx, flow_key, subject_id, Command::SkipStep { step: step_key, reason }).await
    }

    /// Dismisses the whole flow. A completed flow stays completed.
    async fn skip_onboarding(
        &self,
        ctx: &Context<'_>,
        flow_key: String,
        subject_id: Option<ID>,
    ) -> Result<OnboardingStatus> {
        run(ctx, flow_key, subject_id, Command::SkipFlow).await
    }
}

async fn run(
    ctx: &Context<'_>,
    flow_key: String,
    subject_id: Option<ID>,
    command: Command,
) -> Result<OnboardingStatus> {
    let caller = principal(ctx)?;
    let subject = caller.target(subject_id.as_deref().map(String::as_str))?;
    let snapshot = onramp(ctx).run(&subject, &flow_key, command, source_of(caller)).await?;
    Ok((&snapshot).into())
}

/// Changes made by admin and service callers are recorded as ADMIN, a user's own as USER.
fn source_of(caller: &Principal) -> Source {
    if caller.role == Role::User { Source::User } else { Source::Admin }
}
