//! A/B experiments between flow versions, for admins.

use async_graphql::{Context, Enum, InputObject, Object, Result, SimpleObject};

use super::{onramp, principal};
use crate::auth::Role;
use crate::domain::experiments::{self, Variant};
use crate::service::ExperimentReport;

/// One arm of an experiment.
#[derive(InputObject, Clone, Debug)]
pub struct VariantInput {
    /// A key: letters, digits, `_` or `-`.
    pub name: String,
    /// The flow version this variant serves.
    pub version: i32,
    /// Relative weight; 0 assigns nobody new to it.
    pub weight: u32,
}

/// A variant's new weight.
#[derive(InputObject, Clone, Debug)]
pub struct VariantWeightInput {
    /// The variant's name.
    pub name: String,
    /// Its new relative weight; 0 assigns nobody new to it.
    pub weight: u32,
}

/// The lifecycle of an experiment.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ExperimentState {
    /// Created; assigns nobody yet.
    Draft,
    /// New subjects are assigned by the hash of (experiment key, subject id).
    Running,
    /// New subjects get the newest active version; assigned ones keep theirs.
    Stopped,
    /// A winner was declared: every new subject gets its version.
    Completed,
}

/// One arm of an experiment and how many subjects it has served.
#[derive(SimpleObject, Clone, Debug)]
pub struct ExperimentVariant {
    /// The variant's name.
    pub name: String,
    /// The flow version it serves.
    pub version: i32,
    /// Its relative weight among the variants.
    pub weight: u32,
    /// Subjects first served the flow under this variant.
    pub exposures: i64,
}

/// An A/B test between versions of one flow.
#[derive(SimpleObject, Clone, Debug)]
pub struct Experiment {
    /// The experiment key, also the input of the assignment hash.
    pub key: String,
    /// The flow whose versions it compares.
    pub flow_key: String,
    /// DRAFT, RUNNING, STOPPED or COMPLETED.
    pub state: ExperimentState,
    /// The declared winner's variant name, if any.
    pub winner: Option<String>,
    /// In creation order, which the hash's ranges follow.
    pub variants: Vec<ExperimentVariant>,
}

impl From<ExperimentReport> for Experiment {
    fn from(r: ExperimentReport) -> Self {
        let e = r.experiment;
        Experiment {
            state: match e.state {
                experiments::ExperimentState::Draft => ExperimentState::Draft,
                experiments::ExperimentState::Running => ExperimentState::Running,
                experiments::ExperimentState::Stopped => ExperimentState::Stopped,
                experiments::ExperimentState::Completed => ExperimentState::Completed,
            },
            variants: e
                .variants
                .into_iter()
                .map(|v| {
                    let exposures = r.exposures.iter().find(|(n, _)| n == &v.name).map_or(0, |(_, c)| *c);
                    ExperimentVariant { name: v.name, version: v.version, weight: v.weight, exposures }
                })
                .collect(),
            key: e.key,
            flow_key: e.flow_key,
            winner: e.winner,
        }
    }
}

#[derive(Default)]
pub struct ExperimentQuery;

#[Object]
impl ExperimentQuery {
    /// An experiment: variants, weights, state and exposure counts. Admin only.
    #[graphql(complexity = "super::cost::READ + child_complexity")]
    async fn experiment(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The experiment key.")] key: String,
    ) -> Result<Experiment> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok(onramp(ctx).experiment(&key).await?.into())
    }
}

#[derive(Default)]
pub struct ExperimentMutation;

#[Object]
impl ExperimentMutation {
    /// Creates an experiment (DRAFT) between versions of a flow. Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn create_experiment(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "A new experiment key: letters, digits, `_` or `-`.")] key: String,
        #[graphql(desc = "The flow whose versions it compares.")] flow_key: String,
        #[graphql(desc = "The arms, in order; the first is the control.")] variants: Vec<VariantInput>,
    ) -> Result<Experiment> {
        principal(ctx)?.require(&[Role::Admin])?;
        let variants =
            variants.into_iter().map(|v| Variant { name: v.name, version: v.version, weight: v.weight }).collect();
        Ok(onramp(ctx).create_experiment(&key, &flow_key, variants).await?.into())
    }

    /// Starts assigning new subjects; one experiment runs per flow. Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn start_experiment(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The experiment key.")] key: String,
    ) -> Result<Experiment> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok(onramp(ctx).start_experiment(&key).await?.into())
    }

    /// Stops assigning new subjects. Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn stop_experiment(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The experiment key.")] key: String,
    ) -> Result<Experiment> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok(onramp(ctx).stop_experiment(&key).await?.into())
    }

    /// Every new subject gets this variant's version from now on. Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn declare_winner(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The experiment key.")] key: String,
        #[graphql(desc = "The winning variant's name.")] variant: String,
    ) -> Result<Experiment> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok(onramp(ctx).declare_winner(&key, &variant).await?.into())
    }

    /// Changes weights for subjects not yet exposed; exposed subjects keep their variant.
    /// Admin only.
    #[graphql(complexity = "super::cost::WRITE + child_complexity")]
    async fn set_experiment_weights(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The experiment key.")] key: String,
        #[graphql(desc = "New weights by variant name; variants not listed keep theirs.")] weights: Vec<
            VariantWeightInput,
        >,
    ) -> Result<Experiment> {
        principal(ctx)?.require(&[Role::Admin])?;
        let weights = weights.into_iter().map(|w| (w.name, w.weight)).collect();
        Ok(onramp(ctx).set_experiment_weights(&key, weights).await?.into())
    }
}
