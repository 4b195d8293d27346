//! Analytics for product managers, admin only: funnels, flow stats, experiment results,
//! step impact on retention, time series. The definitions here become the schema's
//! descriptions; README "Analytics" says the same at more length.

use async_graphql::{Context, Enum, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::experiments::ExperimentState;
use super::{onramp, principal};
use crate::auth::Role;
use crate::domain::experiments;
use crate::domain::stats::Bucket;
use crate::service::{self, AnalyticsFilter};

/// How a funnel step did among the enrollments counted.
#[derive(SimpleObject, Clone, Debug)]
pub struct FunnelStep {
    /// The step's key.
    pub step_key: String,
    /// The step's title in that version.
    pub title: String,
    /// 1-based position in the definition.
    pub position: i32,
    /// Whether the step is required in that version.
    pub required: bool,
    /// Enrollments the step applied to (it has a progress row: its condition held at some point).
    pub applied: i64,
    /// Enrollments the step became available to (all its dependencies were met).
    pub reached: i64,
    /// Enrollments that completed the step.
    pub completed: i64,
    /// Enrollments that skipped the step.
    pub skipped: i64,
    /// completed / reached; null when reached is 0.
    pub conversion: Option<f64>,
    /// The previous step's completed (for the first step: enrolled) minus this step's
    /// completed. Negative when more completed this step than the one before it.
    pub drop_off: i64,
    /// dropOff / the previous step's completed (first step: enrolled); null when that is 0.
    pub drop_off_rate: Option<f64>,
    /// Median hours from the enrollment's start to the step's completion, over the
    /// enrollments that completed it (linear interpolation between closest ranks, as
    /// PostgreSQL's percentile_cont); null when none did.
    pub median_hours: Option<f64>,
    /// The 90th percentile of the same; null when none completed it.
    pub p90_hours: Option<f64>,
}

/// Per step, how enrollments moved through a flow.
#[derive(SimpleObject, Clone, Debug)]
pub struct Funnel {
    /// The flow key.
    pub flow_key: String,
    /// The version filter; null: all versions.
    pub version: Option<i32>,
    /// The variant filter; null: any enrollment, in an experiment or not.
    pub variant: Option<String>,
    /// Enrollments started at or after this instant; null: no lower bound.
    pub since: Option<DateTime<Utc>>,
    /// Enrollments started before this instant; null: no upper bound.
    pub until: Option<DateTime<Utc>>,
    /// The version whose definition gives the steps and their order: the version filter,
    /// else the newest version.
    pub steps_version: i32,
    /// Enrollments counted.
    pub enrolled: i64,
    /// In the definition's order. Steps other versions have but this one lacks are left out.
    pub steps: Vec<FunnelStep>,
}

impl From<service::Funnel> for Funnel {
    fn from(f: service::Funnel) -> Self {
        Funnel {
            flow_key: f.filter.flow_key,
            version: f.filter.version,
            variant: f.filter.variant,
            since: f.filter.since,
            until: f.filter.until,
            steps_version: f.steps_version,
            enrolled: f.enrolled,
            steps: f
                .steps
                .into_iter()
                .map(|s| FunnelStep {
                    step_key: s.step_key,
                    title: s.title,
                    position: s.position,
                    required: s.required,
                    applied: s.applied,
                    reached: s.reached,
                    completed: s.completed,
                    skipped: s.skipped,
                    conversion: s.conversion,
                    drop_off: s.drop_off,
                    drop_off_rate: s.drop_off_rate,
                    median_hours: s.time_to_complete_hours.median,
                    p90_hours: s.time_to_complete_hours.p90,
                })
                .collect(),
        }
    }
}

/// Enrollment outcomes of one group of enrollments.
#[derive(SimpleObject, Clone, Debug)]
pub struct FlowStatsGroup {
    /// The version, in byVersion groups; null elsewhere.
    pub version: Option<i32>,
    /// The variant, in byVariant groups, where null means enrollments outside any experiment.
    pub variant: Option<String>,
    /// Enrollments in the group.
    pub enrolled: i64,
    /// Of those, enrollments IN_PROGRESS.
    pub in_progress: i64,
    /// Of those, enrollments COMPLETED.
    pub completed: i64,
    /// Of those, enrollments SKIPPED (dismissed).
    pub skipped: i64,
    /// completed / enrolled; null when enrolled is 0.
    pub completion_rate: Option<f64>,
    /// Median hours from start to completion of the COMPLETED enrollments (linear
    /// interpolation between closest ranks); null when none.
    pub median_hours_to_complete: Option<f64>,
    /// The 90th percentile of the same; null when none.
    pub p90_hours_to_complete: Option<f64>,
}

impl From<service::FlowStatsGroup> for FlowStatsGroup {
    fn from(g: service::FlowStatsGroup) -> Self {
        FlowStatsGroup {
            version: g.version,
            variant: g.variant,
            enrolled: g.enrolled,
            in_progress: g.in_progress,
            completed: g.completed,
            skipped: g.skipped,
            completion_rate: g.completion_rate,
            median_hours_to_complete: g.time_to_complete_hours.median,
            p90_hours_to_complete: g.time_to_complete_hours.p90,
        }
    }
}

/// Outcomes of a flow's enrollments, overall and broken down.
#[derive(SimpleObject, Clone, Debug)]
pub struct FlowStats {
    /// The flow key.
    pub flow_key: String,
    /// The version filter; null: all versions.
    pub version: Option<i32>,
    /// The variant filter; null: any.
    pub variant: Option<String>,
    /// Enrollments started at or after this instant; null: no lower bound.
    pub since: Option<DateTime<Utc>>,
    /// Enrollments started before this instant; null: no upper bound.
    pub until: Option<DateTime<Utc>>,
    /// Enrollments counted.
    pub enrolled: i64,
    /// Of those, enrollments IN_PROGRESS.
    pub in_progress: i64,
    /// Of those, enrollments COMPLETED.
    pub completed: i64,
    /// Of those, enrollments SKIPPED (dismissed).
    pub skipped: i64,
    /// completed / enrolled; null when enrolled is 0.
    pub completion_rate: Option<f64>,
    /// Median hours from start to completion of the COMPLETED enrollments (linear
    /// interpolation between closest ranks, as PostgreSQL's percentile_cont); null when none.
    pub median_hours_to_complete: Option<f64>,
    /// The 90th percentile of the same; null when none.
    pub p90_hours_to_complete: Option<f64>,
    /// One group per version counted (every version of the key, or the one filtered on),
    /// by version, zeros included.
    pub by_version: Vec<FlowStatsGroup>,
    /// One group per variant with enrollments: first enrollments outside any experiment
    /// (variant null), then variants by name.
    pub by_variant: Vec<FlowStatsGroup>,
}

impl From<service::FlowStats> for FlowStats {
    fn from(s: service::FlowStats) -> Self {
        let t = s.totals;
        FlowStats {
            flow_key: s.filter.flow_key,
            version: s.filter.version,
            variant: s.filter.variant,
            since: s.filter.since,
            until: s.filter.until,
            enrolled: t.enrolled,
            in_progress: t.in_progress,
            completed: t.completed,
            skipped: t.skipped,
            completion_rate: t.completion_rate,
            median_hours_to_complete: t.time_to_complete_hours.median,
            p90_hours_to_complete: t.time_to_complete_hours.p90,
            by_version: s.by_version.into_iter().map(Into::into).collect(),
            by_variant: s.by_variant.into_iter().map(Into::into).collect(),
        }
    }
}

/// A range of plausible values for a rate.
#[derive(SimpleObject, Clone, Copy, Debug)]
pub struct ConfidenceInterval {
    /// The lower bound.
    pub low: f64,
    /// The upper bound.
    pub high: f64,
}

/// One variant's completion rate, and how it compares with the control.
#[derive(SimpleObject, Clone, Debug)]
pub struct VariantResult {
    /// The variant's name.
    pub name: String,
    /// The flow version the variant serves.
    pub version: i32,
    /// True for the control: the experiment's first variant.
    pub control: bool,
    /// Subjects exposed to the variant (rows of exposures).
    pub exposures: i64,
    /// Exposed subjects whose enrollment in the flow is COMPLETED.
    pub completions: i64,
    /// completions / exposures; null when there are no exposures.
    pub completion_rate: Option<f64>,
    /// The 95% Wilson score interval of the completion rate: with p = completions /
    /// exposures, n = exposures, z = 1.959964, (p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²)) /
    /// (1 + z²/n). Null when there are no exposures.
    pub confidence_interval: Option<ConfidenceInterval>,
    /// completionRate − the control's; null for the control.
    pub absolute_lift: Option<f64>,
    /// (completionRate − the control's) / the control's; null for the control or when the
    /// control's rate is 0.
    pub relative_lift: Option<f64>,
    /// Two-sided p-value of a pooled two-proportion z-test against the control; null for
    /// the control, or when undefined (a group without exposures, or nobody or everybody
    /// completed in both).
    pub p_value: Option<f64>,
    /// Plain words when this comparison has too little data to conclude from: when this
    /// variant or the control has fewer than 100 exposures, fewer than 10 completions or
    /// fewer than 10 exposures without completion (for the control row: the control
    /// alone). Null when there is enough.
    pub warning: Option<String>,
}

/// An experiment's variants compared on flow completion.
#[derive(SimpleObject, Clone, Debug)]
pub struct ExperimentResults {
    /// The experiment key.
    pub key: String,
    /// The flow it compares versions of.
    pub flow_key: String,
    /// Its lifecycle state.
    pub state: ExperimentState,
    /// The declared winner, if any.
    pub winner: Option<String>,
    /// In creation order; the first is the control.
    pub variants: Vec<VariantResult>,
}

impl From<service::ExperimentResults> for ExperimentResults {
    fn from(r: service::ExperimentResults) -> Self {
        ExperimentResults {
            key: r.key,
            flow_key: r.flow_key,
            state: match r.state {
                experiments::ExperimentState::Draft => ExperimentState::Draft,
                experiments::ExperimentState::Running => ExperimentState::Running,
                experiments::ExperimentState::Stopped => ExperimentState::Stopped,
                experiments::ExperimentState::Completed => ExperimentState::Completed,
            },
            winner: r.winner,
            variants: r
                .variants
                .into_iter()
                .map(|v| VariantResult {
                    name: v.name,
                    version: v.version,
                    control: v.control,
                    exposures: v.exposures,
                    completions: v.completions,
                    completion_rate: v.completion_rate,
                    confidence_interval: v.confidence_interval.map(|i| ConfidenceInterval { low: i.low, high: i.high }),
                    absolute_lift: v.absolute_lift,
                    relative_lift: v.relative_lift,
                    p_value: v.p_value,
                    warning: v.warning,
                })
                .collect(),
        }
    }
}

/// How completing one step goes with retention, within the cohort.
#[derive(SimpleObject, Clone, Debug)]
pub struct StepImpactRow {
    /// The step's key.
    pub step_key: String,
    /// The step's title in the newest version.
    pub title: String,
    /// 1-based position in the newest version's definition.
    pub position: i32,
    /// completers / cohort; null when the cohort is empty.
    pub completion_rate: Option<f64>,
    /// Cohort enrollments whose progress on the step is COMPLETED.
    pub completers: i64,
    /// Retained completers / completers; null when there are none.
    pub completer_retention_rate: Option<f64>,
    /// The rest of the cohort (the step not completed, skipped, or not applicable).
    pub non_completers: i64,
    /// Retained non-completers / non-completers; null when there are none.
    pub non_completer_retention_rate: Option<f64>,
    /// completerRetentionRate − nonCompleterRetentionRate; null when either group is
    /// empty. A correlation, not a cause.
    pub lift: Option<f64>,
}

/// Which steps go with retention (the cohort analysis behind "find the aha moment").
#[derive(SimpleObject, Clone, Debug)]
pub struct StepImpact {
    /// The flow key.
    pub flow_key: String,
    /// The retention horizon asked for.
    pub retention_days: i32,
    /// The cohort is the flow's enrollments (any version) started at or before this
    /// instant, now − retentionDays, so that their retention can be observed.
    pub cohort_started_before: DateTime<Utc>,
    /// Enrollments in the cohort.
    pub cohort: i64,
    /// Cohort enrollments that were retained: the subject (for a workspace flow: the
    /// workspace, or any event sent with its workspaceId) has an event that occurred at or
    /// after started_at + retentionDays × 24 hours.
    pub retained: i64,
    /// retained / cohort; null when the cohort is empty.
    pub retention_rate: Option<f64>,
    /// The newest version's steps, in its order.
    pub steps: Vec<StepImpactRow>,
}

impl From<service::StepImpact> for StepImpact {
    fn from(s: service::StepImpact) -> Self {
        StepImpact {
            flow_key: s.flow_key,
            retention_days: s.retention_days,
            cohort_started_before: s.cohort_started_before,
            cohort: s.cohort,
            retained: s.retained,
            retention_rate: s.retention_rate,
            steps: s
                .steps
                .into_iter()
                .map(|r| StepImpactRow {
                    step_key: r.step_key,
                    title: r.title,
                    position: r.position,
                    completion_rate: r.completion_rate,
                    completers: r.completers,
                    completer_retention_rate: r.completer_retention_rate,
                    non_completers: r.non_completers,
                    non_completer_retention_rate: r.non_completer_retention_rate,
                    lift: r.lift,
                })
                .collect(),
        }
    }
}

/// The width of a time-series bucket.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum TimeBucket {
    /// A UTC day, from 00:00 UTC.
    Day,
    /// A week from Monday 00:00 UTC.
    Week,
}

/// Counts in one bucket of a time series.
#[derive(SimpleObject, Clone, Debug)]
pub struct TimeBucketCount {
    /// When the bucket begins (00:00 UTC; for weeks, a Monday).
    pub start: DateTime<Utc>,
    /// When the next bucket begins.
    pub end: DateTime<Utc>,
    /// Enrollments started in the bucket and in [since, until).
    pub starts: i64,
    /// Enrollments completed in the bucket and in [since, until).
    pub completions: i64,
}

#[derive(Default)]
pub struct AnalyticsQuery;

#[Object]
impl AnalyticsQuery {
    /// Per step of a flow, how its enrollments moved through it: applied, reached,
    /// completed, skipped, conversion, drop-off and time to complete. Counts enrollments of
    /// the key (optionally of one version and one variant) started in [since, until).
    /// Admin only.
    #[graphql(complexity = "super::cost::ANALYTICS + child_complexity")]
    async fn funnel(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow key.")] flow_key: String,
        #[graphql(desc = "Only enrollments on this version; its definition orders the steps. Default: all \
                          versions, steps of the newest.")]
        version: Option<i32>,
        #[graphql(desc = "Only enrollments assigned this experiment variant.")] variant: Option<String>,
        #[graphql(desc = "Only enrollments started at or after this instant.")] since: Option<DateTime<Utc>>,
        #[graphql(desc = "Only enrollments started before this instant.")] until: Option<DateTime<Utc>>,
    ) -> Result<Funnel> {
        principal(ctx)?.require(&[Role::Admin])?;
        let filter = AnalyticsFilter { flow_key, version, variant, since, until };
        Ok(onramp(ctx).funnel(filter).await?.into())
    }

    /// Enrollment outcomes of a flow (enrolled, in progress, completed, skipped,
    /// completion rate, time to complete), overall and by version and by variant. Counts
    /// enrollments of the key (optionally of one version and one variant) started in
    /// [since, until). Admin only.
    #[graphql(complexity = "super::cost::ANALYTICS + child_complexity")]
    async fn flow_stats(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow key.")] flow_key: String,
        #[graphql(desc = "Only enrollments on this version. Default: all versions.")] version: Option<i32>,
        #[graphql(desc = "Only enrollments assigned this experiment variant.")] variant: Option<String>,
        #[graphql(desc = "Only enrollments started at or after this instant.")] since: Option<DateTime<Utc>>,
        #[graphql(desc = "Only enrollments started before this instant.")] until: Option<DateTime<Utc>>,
    ) -> Result<FlowStats> {
        principal(ctx)?.require(&[Role::Admin])?;
        let filter = AnalyticsFilter { flow_key, version, variant, since, until };
        Ok(onramp(ctx).flow_stats(filter).await?.into())
    }

    /// An experiment's variants compared on flow completion against the control (the
    /// first variant): rates, 95% Wilson intervals, lifts, z-test p-values and a warning
    /// when the sample is too small to conclude. Admin only.
    #[graphql(complexity = "super::cost::ANALYTICS + child_complexity")]
    async fn experiment_results(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The experiment key.")] key: String,
    ) -> Result<ExperimentResults> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok(onramp(ctx).experiment_results(&key).await?.into())
    }

    /// Per step, the retention of the enrollments that completed it against those that
    /// did not, over the cohort of the flow's enrollments started at least retentionDays
    /// ago. Admin only.
    #[graphql(complexity = "super::cost::ANALYTICS + child_complexity")]
    async fn step_impact(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow key.")] flow_key: String,
        #[graphql(desc = "Retained means an event at least this many days (of 24 hours) after the \
                          enrollment started; 1 to 3650.")]
        retention_days: i32,
    ) -> Result<StepImpact> {
        principal(ctx)?.require(&[Role::Admin])?;
        Ok(onramp(ctx).step_impact(&flow_key, retention_days).await?.into())
    }

    /// A flow's enrollment starts and completions per UTC day or week (from Monday), every
    /// bucket from the one containing `since` to the last one starting before `until`,
    /// zeros included; only what happened in [since, until) is counted. At most 1000
    /// buckets. Admin only.
    #[graphql(complexity = "super::cost::ANALYTICS + child_complexity")]
    async fn time_series(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The flow key (all versions).")] flow_key: String,
        #[graphql(desc = "The bucket width.")] bucket: TimeBucket,
        #[graphql(desc = "The start of the window (inclusive).")] since: DateTime<Utc>,
        #[graphql(desc = "The end of the window (exclusive).")] until: DateTime<Utc>,
    ) -> Result<Vec<TimeBucketCount>> {
        principal(ctx)?.require(&[Role::Admin])?;
        let bucket = match bucket {
            TimeBucket::Day => Bucket::Day,
            TimeBucket::Week => Bucket::Week,
        };
        let series = onramp(ctx).time_series(&flow_key, bucket, since, until).await?;
        Ok(series
            .into_iter()
            .map(|c| TimeBucketCount { start: c.start, end: c.end, starts: c.starts, completions: c.completions })
            .collect())
    }
}
