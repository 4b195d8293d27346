//! What product teams and backends call: flows, and subject and workspace attributes.

use super::scalars::Json;
use async_graphql::{Context, ID, Object, Result};

use super::types::{Flow, FlowProblem, MigrationReport, Subject, Workspace};
use super::{onramp, principal};
use crate::auth::Role;
use crate::domain::Owner;
use crate::error::AppError;

#[derive(Default)]
pub struct AdminQuery;

#[Object]
impl AdminQuery {
    /// Every version of every flow, by key then version. Admin only.
    #[graphql(complexity = "super::cost::READ + child_complexity")]
    async fn flows(&self, ctx: &Context<'_>) -> Result<Vec<Flow>> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok(onramp(ctx).list_flows().await?.iter().map(Flow::from).collect())
    }

    /// One version of a flow, or its newest version when none is given. Admin only.
    #[graphql(complexity = "super::cost::READ + child_complexity")]
    async fn flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow key.")] key: String,
        #[graphql(desc = "The version; null: the newest.")] version: Option<i32>,
    ) -> Result<Option<Flow>> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok(onramp(ctx).flow(&key, version).await?.as_ref().map(Flow::from))
    }

    /// Every problem publishFlow would report for this definition; empty when it would
    /// publish. Writes nothing. Admin only.
    #[graphql(complexity = "super::cost::READ + child_complexity")]
    async fn validate_flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A flow definition, as publishFlow takes it.")] definition: Json,
    ) -> Result<Vec<FlowProblem>> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok(onramp(ctx).validate_flow(definition.0).await?.into_iter().map(FlowProblem::from).collect())
    }
}

#[derive(Default)]
pub struct AdminMutation;

#[Object]
impl AdminMutation {
    /// Publishes a flow definition as the next version of its key, ACTIVE. Fails with
    /// VALIDATION_FAILED and every problem in `extensions.problems` ({path, code,
    /// message}). Subjects already enrolled stay on their version. Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn publish_flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow definition, a JSON object (README: Flow definitions); at most 1 MiB \
                          by default.")]
        definition: Json,
    ) -> Result<Flow> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok((&onramp(ctx).publish_flow(definition.0).await?).into())
    }

    /// Stops new enrollments into a version; enrolled subjects carry on. Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn deprecate_flow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow key.")] key: String,
        #[graphql(desc = "The version to deprecate.")] version: i32,
    ) -> Result<Flow> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok((&onramp(ctx).deprecate_flow(&key, version).await?).into())
    }

    /// Moves the enrollments on one version of a flow to another by step key, keeping
    /// what was done. With dryRun (the default) nothing is written and the report says
    /// what the real run would do; the real run moves enrollments in batches and can be
    /// run again after an interruption. Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn migrate_enrollments(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow key.")] flow_key: String,
        #[graphql(desc = "The version whose enrollments move.")] from_version: i32,
        #[graphql(desc = "The version they move to.")] to_version: i32,
        #[graphql(default = true, desc = "When true (the default), write nothing and report what would happen.")]
        dry_run: bool,
    ) -> Result<MigrationReport> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok(onramp(ctx).migrate_enrollments(&flow_key, from_version, to_version, dry_run).await?.into())
    }

    /// Sets a subject's attributes (a JSON object). With merge, top-level keys are merged
    /// into the existing ones and a null value removes a key; without, they are replaced.
    /// Admin and service only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn set_subject_attributes(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user whose attributes these are.")] subject_id: ID,
        #[graphql(desc = "A JSON object, e.g. `{\"plan\": \"team\"}` (at most 64 KiB by default).")] attributes: Json,
        #[graphql(
            default = true,
            desc = "Merge top-level keys into the stored ones (null removes a key); \
                                          false replaces them all."
        )]
        merge: bool,
    ) -> Result<Subject> {
        principal(ctx)?.require(&[Role::Admin, Role::Service])?;
        let owner = Owner::user(&subject_id, onramp(ctx).limits()).map_err(AppError::invalid)?;
        let attributes = onramp(ctx).set_attributes(&owner, attributes.0, merge).await?;
        Ok(Subject { id: subject_id, attributes: Json(attributes) })
    }

    /// Sets a workspace's attributes, which the audiences and step conditions of
    /// workspace-scoped flows read; merge as in setSubjectAttributes. Admin and service only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn set_workspace_attributes(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workspace whose attributes these are.")] workspace_id: ID,
        #[graphql(desc = "A JSON object (at most 64 KiB by default).")] attributes: Json,
        #[graphql(
            default = true,
            desc = "Merge top-level keys into the stored ones (null removes a key); \
                                          false replaces them all."
        )]
        merge: bool,
    ) -> Result<Workspace> {
        principal(ctx)?.require(&[Role::Admin, Role::Service])?;
        let owner = Owner::workspace(&workspace_id, onramp(ctx).limits()).map_err(AppError::invalid)?;
        let attributes = onramp(ctx).set_attributes(&owner, attributes.0, merge).await?;
        Ok(Workspace { id: workspace_id, attributes: Json(attributes) })
    }
}
