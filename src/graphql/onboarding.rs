//! What SPA and mobile clients call: the signed-in user's progress, and the shared
//! progress of the workspaces it is a member of.

use super::scalars::Json;
use async_graphql::{Context, ID, Object, Result};
use serde_json::Value;

use super::types::{OnboardingStatus, Points, PointsEntry, StepProgress};
use super::{onramp, party, principal};
use crate::auth::{Principal, Role};
use crate::domain::{Command, Owner, Source};
use crate::error::AppError;

#[derive(Default)]
pub struct OnboardingQuery;

#[Object]
impl OnboardingQuery {
    /// Where the subject (or, for a workspace-scoped flow, the workspace) stands in a
    /// flow. NOT_STARTED, with the would-be steps, when not enrolled. Reading enrolls
    /// nothing; its only write is the exposure to a running experiment. Only admin and
    /// service callers may pass subjectId; a user may pass only its own workspaces.
    #[graphql(complexity = "super::cost::READ + child_complexity")]
    async fn status(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key, e.g. `new_user`.")] flow_key: String,
        #[graphql(desc = "The user to act for instead of the caller; admin and service callers only.")]
        subject_id: Option<ID>,
        #[graphql(desc = "For a workspace-scoped flow, the workspace whose shared progress this is; a user \
                          may name only a workspace its token lists (a token listing one implies it).")]
        workspace_id: Option<ID>,
    ) -> Result<OnboardingStatus> {
        let party = party(ctx, subject_id.as_ref(), workspace_id.as_ref())?;
        let snapshot = onramp(ctx).status(&party, &flow_key).await?;
        Ok((&snapshot).into())
    }

    /// The first applicable, available, unfinished step, or null when there is none.
    #[graphql(complexity = "super::cost::READ + child_complexity")]
    async fn next_step(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key, e.g. `new_user`.")] flow_key: String,
        #[graphql(desc = "The user to act for instead of the caller; admin and service callers only.")]
        subject_id: Option<ID>,
        #[graphql(desc = "For a workspace-scoped flow, the workspace whose shared progress this is; a user \
                          may name only a workspace its token lists (a token listing one implies it).")]
        workspace_id: Option<ID>,
    ) -> Result<Option<StepProgress>> {
        let party = party(ctx, subject_id.as_ref(), workspace_id.as_ref())?;
        let snapshot = onramp(ctx).status(&party, &flow_key).await?;
        let view = snapshot.view();
        Ok(view.next().map(StepProgress::from))
    }

    /// Points from the ledger: the total and every entry. The subject's own, or with
    /// workspaceId the workspace's (awarded by its workspace-scoped flows). Only admin and
    /// service callers may pass subjectId; a user may pass only its own workspaces.
    #[graphql(complexity = "super::cost::READ + child_complexity")]
    async fn points(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Whose points, instead of the caller's; admin and service callers only.")] subject_id: Option<
            ID,
        >,
        #[graphql(desc = "A workspace's points instead of a user's; a user may name only a workspace its \
                          token lists.")]
        workspace_id: Option<ID>,
    ) -> Result<Points> {
        let caller = principal(ctx)?;
        let limits = onramp(ctx).limits();
        let owner = match &workspace_id {
            Some(w) => Owner::workspace(&caller.workspace(Some(w.as_str()))?.unwrap_or_default(), limits),
            None => Owner::user(&caller.target(subject_id.as_deref().map(String::as_str))?, limits),
        }
        .map_err(AppError::invalid)?;
        let balance = onramp(ctx).points(&owner).await?;
        let (subject_id, workspace_id) = match owner {
            Owner::User(id) => (Some(ID(id)), None),
            Owner::Workspace(id) => (None, Some(ID(id))),
        };
        Ok(Points {
            subject_id,
            workspace_id,
            total: balance.total,
            entries: balance
                .entries
                .into_iter()
                .map(|e| PointsEntry { amount: e.amount, reason: e.reason, awarded_at: e.awarded_at })
                .collect(),
        })
    }

    /// Every flow the subject is enrolled in, and every active flow whose audience admits
    /// it (NOT_STARTED until it enrolls); then the same for workspace-scoped flows of the
    /// workspace given, or, for a user without workspaceId, of every workspace its token
    /// lists. By flow key, then workspace.
    #[graphql(complexity = "super::cost::READ + child_complexity")]
    async fn onboardings(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user to act for instead of the caller; admin and service callers only.")]
        subject_id: Option<ID>,
        #[graphql(desc = "For a workspace-scoped flow, the workspace whose shared progress this is; a user \
                          may name only a workspace its token lists (a token listing one implies it).")]
        workspace_id: Option<ID>,
    ) -> Result<Vec<OnboardingStatus>> {
        let caller = principal(ctx)?;
        let limits = onramp(ctx).limits();
        let subject = Owner::user(&caller.target(subject_id.as_deref().map(String::as_str))?, limits)
            .map_err(AppError::invalid)?;
        let workspaces: Vec<String> = match &workspace_id {
            Some(w) => caller.workspace(Some(w.as_str()))?.into_iter().collect(),
            None if caller.role == Role::User => caller.workspaces.clone(),
            None => Vec::new(),
        };
        let onramp = onramp(ctx);
        let mut statuses: Vec<OnboardingStatus> = onramp.onboardings(&subject).await?.iter().map(Into::into).collect();
        for workspace in workspaces {
            let owner = Owner::workspace(&workspace, limits).map_err(AppError::invalid)?;
            statuses.extend(onramp.onboardings(&owner).await?.iter().map(OnboardingStatus::from));
        }
        statuses.sort_by(|a, b| (&a.flow_key, &a.workspace_id).cmp(&(&b.flow_key, &b.workspace_id)));
        Ok(statuses)
    }
}

#[derive(Default)]
pub struct OnboardingMutation;

/// The longest skip reason kept.
const MAX_REASON_LEN: usize = 500;

/// Every mutation acts on the caller's own progress, or for a workspace-scoped flow on
/// the workspace's (workspaceId, or the token's only workspace), and records the acting
/// user as completedBy. Only admin and service callers may pass subjectId.
#[Object]
impl OnboardingMutation {
    /// Enrolls in the newest active version, or resumes a dismissed flow.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn start_onboarding(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key, e.g. `new_user`.")] flow_key: String,
        #[graphql(desc = "The user to act for instead of the caller; admin and service callers only.")]
        subject_id: Option<ID>,
        #[graphql(desc = "For a workspace-scoped flow, the workspace whose shared progress this is; a user \
                          may name only a workspace its token lists (a token listing one implies it).")]
        workspace_id: Option<ID>,
    ) -> Result<OnboardingStatus> {
        run(ctx, flow_key, subject_id, workspace_id, Command::Start).await
    }

    /// Marks a step IN_PROGRESS.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn start_step(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key, e.g. `new_user`.")] flow_key: String,
        #[graphql(desc = "The step's key within the flow.")] step_key: String,
        #[graphql(desc = "The user to act for instead of the caller; admin and service callers only.")]
        subject_id: Option<ID>,
        #[graphql(desc = "For a workspace-scoped flow, the workspace whose shared progress this is; a user \
                          may name only a workspace its token lists (a token listing one implies it).")]
        workspace_id: Option<ID>,
    ) -> Result<OnboardingStatus> {
        run(ctx, flow_key, subject_id, workspace_id, Command::StartStep { step: step_key }).await
    }

    /// Completes a step, awarding its points once. Idempotent: repeating it returns the
    /// same state. `metadata` (a JSON object) records what the subject answered.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn complete_step(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key, e.g. `new_user`.")] flow_key: String,
        #[graphql(desc = "The step's key within the flow.")] step_key: String,
        #[graphql(desc = "What the subject answered, a JSON object (at most 16 KiB by default); kept as \
                          the step's metadata, which later steps' conditions can read.")]
        metadata: Option<Json>,
        #[graphql(desc = "The user to act for instead of the caller; admin and service callers only.")]
        subject_id: Option<ID>,
        #[graphql(desc = "For a workspace-scoped flow, the workspace whose shared progress this is; a user \
                          may name only a workspace its token lists (a token listing one implies it).")]
        workspace_id: Option<ID>,
    ) -> Result<OnboardingStatus> {
        let metadata = match metadata.map(|m| m.0) {
            None | Some(Value::Null) => None,
            Some(m @ Value::Object(_)) => Some(m),
            Some(_) => return Err(AppError::invalid("metadata must be a JSON object").into()),
        };
        run(ctx, flow_key, subject_id, workspace_id, Command::CompleteStep { step: step_key, metadata }).await
    }

    /// Skips an optional step.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn skip_step(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key, e.g. `new_user`.")] flow_key: String,
        #[graphql(desc = "The step's key within the flow.")] step_key: String,
        #[graphql(desc = "Why, in the subject's words; at most 500 characters.")] reason: Option<String>,
        #[graphql(desc = "The user to act for instead of the caller; admin and service callers only.")]
        subject_id: Option<ID>,
        #[graphql(desc = "For a workspace-scoped flow, the workspace whose shared progress this is; a user \
                          may name only a workspace its token lists (a token listing one implies it).")]
        workspace_id: Option<ID>,
    ) -> Result<OnboardingStatus> {
        if reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON_LEN) {
            return Err(AppError::invalid(format!("reason is limited to {MAX_REASON_LEN} characters")).into());
        }
        run(ctx, flow_key, subject_id, workspace_id, Command::SkipStep { step: step_key, reason }).await
    }

    /// Dismisses the whole flow. A completed flow stays completed.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn skip_onboarding(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow's key, e.g. `new_user`.")] flow_key: String,
        #[graphql(desc = "The user to act for instead of the caller; admin and service callers only.")]
        subject_id: Option<ID>,
        #[graphql(desc = "For a workspace-scoped flow, the workspace whose shared progress this is; a user \
                          may name only a workspace its token lists (a token listing one implies it).")]
        workspace_id: Option<ID>,
    ) -> Result<OnboardingStatus> {
        run(ctx, flow_key, subject_id, workspace_id, Command::SkipFlow).await
    }
}

async fn run(
    ctx: &Context<'_>,
    flow_key: String,
    subject_id: Option<ID>,
    workspace_id: Option<ID>,
    command: Command,
) -> Result<OnboardingStatus> {
    let party = party(ctx, subject_id.as_ref(), workspace_id.as_ref())?;
    let source = source_of(principal(ctx)?);
    let snapshot = onramp(ctx).run(&party, &flow_key, command, source).await?;
    Ok((&snapshot).into())
}

/// Changes made by admin and service callers are recorded as ADMIN, a user's own as USER.
fn source_of(caller: &Principal) -> Source {
    if caller.role == Role::User { Source::User } else { Source::Admin }
}
