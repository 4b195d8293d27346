//! The GraphQL edge: input and output types, guards, and errors mapped to
//! `extensions.code`. Resolvers only check who is asking and call a use case.

mod admin;
mod analytics;
mod events;
mod experiments;
mod onboarding;
mod parsed;
mod subscription;
mod types;

use std::sync::Arc;

use async_graphql::{Context, ID, MergedObject, SDLExportOptions, Schema, SchemaBuilder};

use crate::auth::{Auth, Principal};
use crate::error::AppResult;
use crate::service::{Onramp, Party};

#[derive(MergedObject, Default)]
pub struct Query(
    onboarding::OnboardingQuery,
    admin::AdminQuery,
    experiments::ExperimentQuery,
    analytics::AnalyticsQuery,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    onboarding::OnboardingMutation,
    events::EventMutation,
    admin::AdminMutation,
    experiments::ExperimentMutation,
);

pub type OnrampSchema = Schema<Query, Mutation, subscription::Subscription>;

/// The schema without data, so the SDL can be exported with no database.
pub fn schema_builder() -> SchemaBuilder<Query, Mutation, subscription::Subscription> {
    Schema::build(Query::default(), Mutation::default(), subscription::Subscription)
        .limit_depth(16)
        .limit_complexity(5_000)
}

pub fn build_schema(onramp: Arc<Onramp>) -> OnrampSchema {
    schema_builder().data(onramp).extension(parsed::ParsedQueries::default()).finish()
}

/// The SDL as checked in at schema.graphql; sorted so diffs stay stable.
pub fn sdl() -> String {
    schema_builder()
        .finish()
        .sdl_with_options(SDLExportOptions::new().sorted_fields().sorted_arguments().sorted_enum_items())
}

fn onramp<'a>(ctx: &Context<'a>) -> &'a Arc<Onramp> {
    // Present on every schema that serves requests: `build_schema` puts it there.
    ctx.data_unchecked::<Arc<Onramp>>()
}

fn principal<'a>(ctx: &Context<'a>) -> AppResult<&'a Principal> {
    ctx.data_opt::<Auth>().unwrap_or(&Auth::Anonymous).principal()
}

/// Who a request is for: `subjectId` (admin and service callers only; a user acts as
/// itself) and `workspaceId` (a user must be a member, as its token says; a token with
/// exactly one workspace implies it).
fn party(ctx: &Context<'_>, subject_id: Option<&ID>, workspace_id: Option<&ID>) -> AppResult<Party> {
    let caller = principal(ctx)?;
    Ok(Party {
        subject: caller.target(subject_id.map(|id| id.as_str()))?,
        workspace: caller.workspace(workspace_id.map(|id| id.as_str()))?,
    })
}
