//! The GraphQL edge: input and output types, guards, and errors mapped to
//! `extensions.code`. Resolvers only check who is asking and call a use case.

mod admin;
mod analytics;
pub mod edge;
mod events;
mod experiments;
mod metered;
pub(crate) mod nudges;
mod onboarding;
mod parsed;
mod scalars;
mod subscription;
mod types;
mod webhooks;

use std::sync::Arc;

use async_graphql::{Context, ID, MergedObject, SDLExportOptions, Schema, SchemaBuilder};

use crate::auth::{Auth, Principal};
use crate::config::ServerLimits;
use crate::error::AppResult;
use crate::service::{Onramp, Party};

/// Reads: a subject's progress and points (any caller, for itself), flows, experiments,
/// analytics and webhooks (admins).
#[derive(MergedObject, Default)]
pub struct Query(
    onboarding::OnboardingQuery,
    admin::AdminQuery,
    experiments::ExperimentQuery,
    analytics::AnalyticsQuery,
    webhooks::WebhookQuery,
    nudges::NudgeQuery,
);

/// Writes: step progress (any caller, for itself), events (service and admin callers),
/// flows, attributes, experiments and webhooks (admins). Each is one transaction: all or nothing.
#[derive(MergedObject, Default)]
pub struct Mutation(
    onboarding::OnboardingMutation,
    events::EventMutation,
    admin::AdminMutation,
    experiments::ExperimentMutation,
    webhooks::WebhookMutation,
    nudges::NudgeMutation,
);

pub type OnrampSchema = Schema<Query, Mutation, subscription::Subscription>;

/// The schema without data, so the SDL can be exported with no database.
pub fn schema_builder() -> SchemaBuilder<Query, Mutation, subscription::Subscription> {
    schema_builder_with(&ServerLimits::default())
}

fn schema_builder_with(limits: &ServerLimits) -> SchemaBuilder<Query, Mutation, subscription::Subscription> {
    Schema::build(Query::default(), Mutation::default(), subscription::Subscription)
        .limit_depth(limits.query_depth)
        .limit_complexity(limits.query_complexity)
        // A second line behind the nesting pre-scan: selection sets (fragments included)
        // nested deeper than this are refused right after parsing.
        .limit_recursive_depth(limits.query_nesting)
        .override_input_type_description::<chrono::DateTime<chrono::Utc>>(scalars::DATE_TIME_DESCRIPTION)
}

/// The serving schema. In production (`development` false) field suggestions are off and
/// introspection is refused except, when configured, to admins: a deployed API does not
/// map itself for strangers. schema.graphql is generated from code, not by introspection.
pub fn build_schema(onramp: Arc<Onramp>, limits: &ServerLimits, development: bool) -> OnrampSchema {
    let mut builder = schema_builder_with(limits);
    if !development {
        builder = builder.disable_suggestions();
    }
    builder
        // Outermost, so it times the whole request and counts every outcome, refusals included.
        .extension(metered::Metered(onramp.metrics().clone()))
        .data(onramp)
        // First, so it sees every document, cached or not: the pre-scan must run before the
        // parser, and whether a document may introspect depends on who sends it.
        .extension(edge::EdgeGuard {
            max_nesting: limits.query_nesting,
            introspection: development,
            admin_introspection: limits.admin_introspection,
        })
        .extension(parsed::ParsedQueries::default())
        .finish()
}

/// The SDL as checked in at schema.graphql; sorted so diffs stay stable.
pub fn sdl() -> String {
    schema_builder().finish().sdl_with_options(
        SDLExportOptions::new().sorted_fields().sorted_arguments().sorted_enum_items().include_specified_by(),
    )
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

/// What a field adds to a request's complexity (`ServerLimits::query_complexity`, 5000 by
/// default) beyond the 1 every field costs: the limit then bounds the database work one
/// request can ask for, not only its size. Thousands of aliased `points` fields are refused;
/// the widest real query (a status with every field) costs well under 100.
mod cost {
    /// One or two indexed reads.
    pub const READ: usize = 20;
    /// A write transaction (with its reads and a publish).
    pub const WRITE: usize = 50;
    /// An analytics query: aggregates over many rows.
    pub const ANALYTICS: usize = 200;
}
