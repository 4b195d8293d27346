//! Analytics for product managers: funnels, flow stats, experiment results, step impact on
//! retention and time series. Persistence counts in the database; `domain::stats` derives
//! every rate, percentile and test from the counts. Each report reads one snapshot.

use chrono::{DateTime, Duration, Utc};

use super::Onramp;
use crate::domain::experiments::ExperimentState;
use crate::domain::limits::shorten;
use crate::domain::stats::{self, Bucket, Interval, Percentiles, Proportion};
use crate::error::{AppError, AppResult};
use crate::persistence::analytics::{self as store, Cohort, StatusTally};
use crate::persistence::experiments as experiment_store;
use crate::persistence::flows::FlowRecord;

/// The most buckets a time series returns, so one request cannot ask for millions of rows.
pub const MAX_BUCKETS: i64 = 1000;
/// The longest retention horizon stepImpact accepts (ten years).
pub const MAX_RETENTION_DAYS: i32 = 3650;

/// Which enrollments a funnel or flow stats counts: those of a flow key, optionally of one
/// version and one experiment variant, started in [since, until) (each bound optional).
#[derive(Clone, Debug, PartialEq)]
pub struct AnalyticsFilter {
    pub flow_key: String,
    pub version: Option<i32>,
    pub variant: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Funnel {
    pub filter: AnalyticsFilter,
    /// The version whose definition gives the steps and their order.
    pub steps_version: i32,
    pub enrolled: i64,
    pub steps: Vec<FunnelStep>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FunnelStep {
    pub step_key: String,
    pub title: String,
    /// 1-based, in the definition's order.
    pub position: i32,
    pub required: bool,
    pub applied: i64,
    pub reached: i64,
    pub completed: i64,
    pub skipped: i64,
    /// completed / reached.
    pub conversion: Option<f64>,
    pub drop_off: i64,
    pub drop_off_rate: Option<f64>,
    /// From enrollment start to the step's completion.
    pub time_to_complete_hours: Percentiles,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FlowStats {
    pub filter: AnalyticsFilter,
    pub totals: FlowStatsGroup,
    /// Every version counted (all of the key's, or the one asked for), by version.
    pub by_version: Vec<FlowStatsGroup>,
    /// Every variant with enrollments: first those outside any experiment (variant None),
    /// then by name.
    pub by_variant: Vec<FlowStatsGroup>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FlowStatsGroup {
    /// Set in byVersion groups.
    pub version: Option<i32>,
    /// Set in byVariant groups (None there: not in an experiment).
    pub variant: Option<String>,
    pub enrolled: i64,
    pub in_progress: i64,
    pub completed: i64,
    pub skipped: i64,
    pub completion_rate: Option<f64>,
    pub time_to_complete_hours: Percentiles,
}

impl FlowStatsGroup {
    fn new(version: Option<i32>, variant: Option<String>, tally: &StatusTally, seconds: Percentiles) -> Self {
        FlowStatsGroup {
            version,
            variant,
            enrolled: tally.enrolled,
            in_progress: tally.in_progress,
            completed: tally.completed,
            skipped: tally.skipped,
            completion_rate: stats::ratio(tally.completed, tally.enrolled),
            time_to_complete_hours: seconds.hours(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentResults {
    pub key: String,
    pub flow_key: String,
    pub state: ExperimentState,
    pub winner: Option<String>,
    /// In creation order; the first is the control.
    pub variants: Vec<VariantResult>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VariantResult {
    pub name: String,
    pub version: i32,
    pub control: bool,
    pub exposures: i64,
    pub completions: i64,
    pub completion_rate: Option<f64>,
    /// The 95% Wilson score interval of the completion rate.
    pub confidence_interval: Option<Interval>,
    pub absolute_lift: Option<f64>,
    pub relative_lift: Option<f64>,
    pub p_value: Option<f64>,
    pub warning: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepImpact {
    pub flow_key: String,
    pub retention_days: i32,
    /// The cohort: enrollments started at or before this instant (now − retentionDays).
    pub cohort_started_before: DateTime<Utc>,
    pub cohort: i64,
    pub retained: i64,
    pub retention_rate: Option<f64>,
    pub steps: Vec<StepImpactRow>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepImpactRow {
    pub step_key: String,
    pub title: String,
    pub position: i32,
    /// completers / cohort.
    pub completion_rate: Option<f64>,
    pub completers: i64,
    pub completer_retention_rate: Option<f64>,
    pub non_completers: i64,
    pub non_completer_retention_rate: Option<f64>,
    /// completer rate − non-completer rate; None when either group is empty.
    pub lift: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TimeBucketCount {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub starts: i64,
    pub completions: i64,
}

/// A window within the accepted years (1970 to 9999) and not empty.
fn check_window(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> AppResult<()> {
    for (what, at) in [("since", since), ("until", until)] {
        if let Some(at) = at {
            stats::check_instant(what, at).map_err(AppError::invalid)?;
        }
    }
    match (since, until) {
        (Some(s), Some(u)) if s >= u => {
            Err(AppError::invalid(format!("the window is empty: since ({s}) must be before until ({u})")))
        }
        _ => Ok(()),
    }
}

fn unknown_flow(key: &str) -> AppError {
    AppError::not_found(format!("flow `{}` does not exist", shorten(key)))
}

impl Onramp {
    fn check_filter(&self, filter: &AnalyticsFilter) -> AppResult<()> {
        self.check_key("flowKey", &filter.flow_key)?;
        if let Some(variant) = &filter.variant {
            self.check_key("variant", variant)?;
        }
        check_window(filter.since, filter.until)
    }

    /// The versions a filter covers (row ids) and the version whose definition lists the
    /// steps: the one asked for, else the newest.
    async fn scope(
        &self,
        db: &impl sea_orm::ConnectionTrait,
        key: &str,
        version: Option<i32>,
    ) -> AppResult<(Vec<(i64, i32)>, FlowRecord)> {
        let versions = store::versions_of(db, key).await?;
        if versions.is_empty() {
            return Err(unknown_flow(key));
        }
        let flow = self.flows.find(db, key, version).await?.ok_or_else(|| {
            AppError::not_found(format!("flow `{}` has no version {}", shorten(key), version.unwrap_or_default()))
        })?;
        let versions = match version {
            Some(v) => versions.into_iter().filter(|(_, n)| *n == v).collect(),
            None => versions,
        };
        Ok((versions, flow))
    }

    /// Per step of the definition, how the filtered enrollments moved through it.
    pub async fn funnel(&self, filter: AnalyticsFilter) -> AppResult<Funnel> {
        self.check_filter(&filter)?;
        let txn = store::begin(&self.db).await?;
        let (versions, flow) = self.scope(&txn, &filter.flow_key, filter.version).await?;
        let ids: Vec<i64> = versions.iter().map(|(id, _)| *id).collect();
        let cohort =
            Cohort { flow_ids: &ids, variant: filter.variant.as_deref(), since: filter.since, until: filter.until };
        let enrolled = store::status_tallies(&txn, &cohort).await?.iter().map(|(_, t)| t.enrolled).sum();
        let mut tallies = store::funnel_steps(&txn, &cohort).await?;
        txn.commit().await?;

        let steps = &flow.definition.steps;
        let tallies: Vec<store::StepTally> = steps.iter().map(|s| tallies.remove(&s.key).unwrap_or_default()).collect();
        let completed: Vec<i64> = tallies.iter().map(|t| t.completed).collect();
        let drop_offs = stats::drop_offs(enrolled, &completed);
        let steps = steps
            .iter()
            .zip(tallies)
            .zip(drop_offs)
            .enumerate()
            .map(|(i, ((step, t), drop))| FunnelStep {
                step_key: step.key.clone(),
                title: step.title.resolve(None, flow.definition.default_locale()).to_string(),
                position: i as i32 + 1,
                required: step.required,
                applied: t.applied,
                reached: t.reached,
                completed: t.completed,
                skipped: t.skipped,
                conversion: stats::ratio(t.completed, t.reached),
                drop_off: drop.count,
                drop_off_rate: drop.rate,
                time_to_complete_hours: t.time_to_complete.hours(),
            })
            .collect();
        Ok(Funnel { steps_version: flow.version, enrolled, steps, filter })
    }

    /// Enrollment outcomes and completion times, overall and by version and variant.
    pub async fn flow_stats(&self, filter: AnalyticsFilter) -> AppResult<FlowStats> {
        self.check_filter(&filter)?;
        let txn = store::begin(&self.db).await?;
        let (versions, _) = self.scope(&txn, &filter.flow_key, filter.version).await?;
        let ids: Vec<i64> = versions.iter().map(|(id, _)| *id).collect();
        let cohort =
            Cohort { flow_ids: &ids, variant: filter.variant.as_deref(), since: filter.since, until: filter.until };
        let tallies = store::status_tallies(&txn, &cohort).await?;
        let mut times = store::completion_times(&txn, &cohort).await?;
        txn.commit().await?;

        let mut totals = StatusTally::default();
        for (_, t) in &tallies {
            totals += t;
        }
        let by_version = versions
            .iter()
            .map(|(id, version)| {
                let mut sum = StatusTally::default();
                for (_, t) in tallies.iter().filter(|((flow, _), _)| flow == id) {
                    sum += t;
                }
                let seconds = times.by_flow.remove(id).unwrap_or_default();
                FlowStatsGroup::new(Some(*version), None, &sum, seconds)
            })
            .collect();
        let mut variants: Vec<Option<String>> = tallies.iter().map(|((_, v), _)| v.clone()).collect();
        // None sorts first: enrollments outside any experiment, then variants by name.
        variants.sort();
        variants.dedup();
        let by_variant = variants
            .into_iter()
            .map(|variant| {
                let mut sum = StatusTally::default();
                for (_, t) in tallies.iter().filter(|((_, v), _)| *v == variant) {
                    sum += t;
                }
                let seconds = times.by_variant.remove(&variant).unwrap_or_default();
                FlowStatsGroup::new(None, variant, &sum, seconds)
            })
            .collect();
        Ok(FlowStats {
            totals: FlowStatsGroup::new(None, None, &totals, times.overall),
            by_version,
            by_variant,
            filter,
        })
    }

    /// Completion per variant of an experiment against its control (the first variant).
    pub async fn experiment_results(&self, key: &str) -> AppResult<ExperimentResults> {
        self.check_key("key", key)?;
        let txn = store::begin(&self.db).await?;
        let experiment = experiment_store::find(&txn, key)
            .await?
            .ok_or_else(|| AppError::not_found(format!("experiment `{}` does not exist", shorten(key))))?;
        let mut tallies = store::exposure_tallies(&txn, experiment.id, &experiment.flow_key).await?;
        txn.commit().await?;

        let groups: Vec<(String, i32, Proportion)> = experiment
            .variants
            .iter()
            .map(|v| {
                let t = tallies.remove(&v.name).unwrap_or_default();
                (v.name.clone(), v.version, Proportion { successes: t.completions, trials: t.exposures })
            })
            .collect();
        let control = groups.first().map(|(name, _, p)| (name.clone(), *p));
        let variants = groups
            .iter()
            .enumerate()
            .map(|(i, (name, version, p))| {
                let is_control = i == 0;
                let lift = match (&control, is_control) {
                    (Some((_, c)), false) => stats::lift(*c, *p),
                    _ => stats::Lift::default(),
                };
                let this = format!("variant `{name}`");
                let warning = match (&control, is_control) {
                    (Some((control_name, c)), false) => {
                        stats::small_sample_warning(&[(&format!("control `{control_name}`"), *c), (&this, *p)])
                    }
                    _ => stats::small_sample_warning(&[(&format!("control `{name}`"), *p)]),
                };
                VariantResult {
                    name: name.clone(),
                    version: *version,
                    control: is_control,
                    exposures: p.trials,
                    completions: p.successes,
                    completion_rate: p.rate(),
                    confidence_interval: stats::wilson_interval(*p, stats::Z_95),
                    absolute_lift: lift.absolute,
                    relative_lift: lift.relative,
                    p_value: lift.p_value,
                    warning,
                }
            })
            .collect();
        Ok(ExperimentResults {
            key: experiment.key,
            flow_key: experiment.flow_key,
            state: experiment.state,
            winner: experiment.winner,
            variants,
        })
    }

    /// Which steps go with retention: per step of the newest version, the retention of
    /// the cohort's completers against its non-completers.
    pub async fn step_impact(&self, flow_key: &str, retention_days: i32) -> AppResult<StepImpact> {
        self.check_key("flowKey", flow_key)?;
        if !(1..=MAX_RETENTION_DAYS).contains(&retention_days) {
            return Err(AppError::invalid(format!(
                "retentionDays must be between 1 and {MAX_RETENTION_DAYS}, not {retention_days}"
            )));
        }
        let cutoff = super::now() - Duration::days(i64::from(retention_days));
        let txn = store::begin(&self.db).await?;
        let (versions, flow) = self.scope(&txn, flow_key, None).await?;
        let ids: Vec<i64> = versions.iter().map(|(id, _)| *id).collect();
        let (cohort, mut completers) = store::step_retention(&txn, &ids, cutoff, retention_days).await?;
        txn.commit().await?;

        let steps = flow
            .definition
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let done = completers.remove(&step.key).unwrap_or_default();
                let non_completers = cohort.enrollments - done.enrollments;
                let completer_rate = stats::ratio(done.retained, done.enrollments);
                let non_completer_rate = stats::ratio(cohort.retained - done.retained, non_completers);
                StepImpactRow {
                    step_key: step.key.clone(),
                    title: step.title.resolve(None, flow.definition.default_locale()).to_string(),
                    position: i as i32 + 1,
                    completion_rate: stats::ratio(done.enrollments, cohort.enrollments),
                    completers: done.enrollments,
                    completer_retention_rate: completer_rate,
                    non_completers,
                    non_completer_retention_rate: non_completer_rate,
                    lift: completer_rate.zip(non_completer_rate).map(|(c, n)| c - n),
                }
            })
            .collect();
        Ok(StepImpact {
            flow_key: flow_key.to_string(),
            retention_days,
            cohort_started_before: cutoff,
            cohort: cohort.enrollments,
            retained: cohort.retained,
            retention_rate: stats::ratio(cohort.retained, cohort.enrollments),
            steps,
        })
    }

    /// Starts and completions per UTC day or week across [since, until), every bucket
    /// present (zeros included).
    pub async fn time_series(
        &self,
        flow_key: &str,
        bucket: Bucket,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> AppResult<Vec<TimeBucketCount>> {
        self.check_key("flowKey", flow_key)?;
        check_window(Some(since), Some(until))?;
        let starts = stats::buckets(bucket, since, until, MAX_BUCKETS).map_err(|count| {
            AppError::invalid(format!("the window spans {count} buckets; at most {MAX_BUCKETS} are returned"))
        })?;
        let txn = store::begin(&self.db).await?;
        let versions = store::versions_of(&txn, flow_key).await?;
        if versions.is_empty() {
            return Err(unknown_flow(flow_key));
        }
        let ids: Vec<i64> = versions.iter().map(|(id, _)| *id).collect();
        let (started, completed) = store::daily_counts(&txn, &ids, since, until).await?;
        txn.commit().await?;

        let started = stats::sum_by_bucket(bucket, &starts, &started);
        let completed = stats::sum_by_bucket(bucket, &starts, &completed);
        Ok(starts
            .iter()
            .zip(started.into_iter().zip(completed))
            .map(|(day, (starts, completions))| {
                let start = stats::midnight(*day);
                TimeBucketCount { start, end: start + bucket.width(), starts, completions }
            })
            .collect())
    }
}
