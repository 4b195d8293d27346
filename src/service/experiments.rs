//! A/B experiments: which version a new subject enters, and the experiment lifecycle.

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;

use super::Onramp;
use crate::domain::experiments::{self, Action, ExperimentState, Variant};
use crate::domain::limits::shorten;
use crate::domain::{FlowStatus, Owner};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::persistence::begin_write;
use crate::persistence::enrollments::Assignment;
use crate::persistence::experiments::{self as store, ExperimentRecord};
use crate::persistence::flows::FlowRecord;

/// An experiment with its exposures per variant, in variant order.
#[derive(Clone, Debug)]
pub struct ExperimentReport {
    pub experiment: ExperimentRecord,
    pub exposures: Vec<(String, i64)>,
}

impl Onramp {
    /// The version an owner not yet enrolled enters, and the experiment assignment behind
    /// it: a running experiment's variant (the one the owner was first exposed to, else
    /// the hash's), a completed experiment's winner, or the newest active version. A
    /// workspace is assigned by its workspace id, so all its members see one variant.
    pub(super) async fn entry(
        &self,
        db: &impl ConnectionTrait,
        owner: &Owner,
        flow_key: &str,
    ) -> AppResult<Option<(FlowRecord, Option<Assignment>)>> {
        if let Some(exp) = store::in_effect(db, flow_key).await? {
            // (variant, whether serving it now is the subject's first exposure)
            let (chosen, first_exposure) = match exp.state {
                ExperimentState::Completed => (exp.winner.clone(), false),
                ExperimentState::Running => match store::exposure(db, exp.id, &owner.key()).await? {
                    Some(sticky) => (Some(sticky), false),
                    None => (experiments::assign(&exp.key, owner.id(), &exp.variants).map(|v| v.name.clone()), true),
                },
                ExperimentState::Stopped | ExperimentState::Draft => (None, false),
            };
            let variant = chosen.and_then(|name| exp.variants.iter().find(|v| v.name == name));
            let flow = match variant {
                Some(v) => self.flows.find(db, flow_key, Some(v.version)).await?,
                None => None,
            };
            // A deprecated version takes no new enrollments, experiment or not.
            if let (Some(variant), Some(flow)) = (variant, flow.filter(|f| f.status != FlowStatus::Deprecated)) {
                let assignment = Assignment {
                    experiment_id: exp.id,
                    experiment_key: exp.key.clone(),
                    variant: variant.name.clone(),
                    first_exposure,
                };
                return Ok(Some((flow, Some(assignment))));
            }
        }
        Ok(self.flows.latest_active(db, flow_key).await?.map(|f| (f, None)))
    }

    /// Records an owner's first exposure under a running experiment (`subject` is the
    /// owner's key).
    pub(super) async fn expose(
        &self,
        db: &impl ConnectionTrait,
        assignment: &Assignment,
        subject: &str,
        now: DateTime<Utc>,
    ) -> AppResult<()> {
        if !assignment.first_exposure {
            return Ok(());
        }
        Ok(store::expose(db, assignment.experiment_id, &assignment.variant, subject, now).await?)
    }

    pub async fn create_experiment(
        &self,
        key: &str,
        flow_key: &str,
        variants: Vec<Variant>,
    ) -> AppResult<ExperimentReport> {
        self.check_key("key", key)?;
        self.check_key("flowKey", flow_key)?;
        for v in &variants {
            self.check_key("variant name", &v.name)?;
        }
        let mut problems = experiments::check_variants(&variants);
        if !crate::domain::validation::is_valid_key(key) {
            problems.push(format!("experiment key `{}` is not a valid key", shorten(key)));
        }
        let txn = begin_write(&self.db).await?;
        for v in &variants {
            match self.flows.find(&txn, flow_key, Some(v.version)).await? {
                None => problems.push(format!("flow `{flow_key}` has no version {} (variant `{}`)", v.version, v.name)),
                Some(f) if f.status == FlowStatus::Deprecated => problems
                    .push(format!("version {} of flow `{flow_key}` is deprecated (variant `{}`)", v.version, v.name)),
                Some(_) => {}
            }
        }
        if !problems.is_empty() {
            return Err(AppError::invalid(problems.join("; ")));
        }
        if store::find(&txn, key).await?.is_some() {
            return Err(AppError::new(ErrorCode::Conflict, format!("experiment `{}` already exists", shorten(key))));
        }
        store::create(&txn, key, flow_key, &variants, super::now()).await?;
        let report = report(&txn, key).await?;
        txn.commit().await?;
        Ok(report)
    }

    /// Starts assigning new subjects. One experiment runs per flow at a time.
    pub async fn start_experiment(&self, key: &str) -> AppResult<ExperimentReport> {
        self.check_key("key", key)?;
        let txn = begin_write(&self.db).await?;
        let exp = find_experiment(&txn, key).await?;
        let next = exp.state.after(Action::Start).ok_or_else(|| conflict(&exp, "start"))?;
        if let Some(other) = store::running(&txn, &exp.flow_key).await? {
            return Err(AppError::new(
                ErrorCode::Conflict,
                format!("experiment `{}` is already running on flow `{}`", other.key, exp.flow_key),
            ));
        }
        store::set_state(&txn, exp.id, next, None, super::now()).await?;
        let report = report(&txn, key).await?;
        txn.commit().await?;
        Ok(report)
    }

    /// Stops assigning: new subjects get the newest active version. Assigned subjects
    /// keep their version.
    pub async fn stop_experiment(&self, key: &str) -> AppResult<ExperimentReport> {
        self.check_key("key", key)?;
        let txn = begin_write(&self.db).await?;
        let exp = find_experiment(&txn, key).await?;
        let next = exp.state.after(Action::Stop).ok_or_else(|| conflict(&exp, "stop"))?;
        store::set_state(&txn, exp.id, next, None, super::now()).await?;
        let report = report(&txn, key).await?;
        txn.commit().await?;
        Ok(report)
    }

    /// Every new subject gets the winner's version from now on.
    pub async fn declare_winner(&self, key: &str, variant: &str) -> AppResult<ExperimentReport> {
        self.check_key("key", key)?;
        self.check_key("variant", variant)?;
        let txn = begin_write(&self.db).await?;
        let exp = find_experiment(&txn, key).await?;
        if !exp.variants.iter().any(|v| v.name == variant) {
            return Err(AppError::not_found(format!(
                "experiment `{}` has no variant `{}`",
                shorten(key),
                shorten(variant)
            )));
        }
        let next = exp.state.after(Action::DeclareWinner).ok_or_else(|| conflict(&exp, "declare a winner for"))?;
        store::set_state(&txn, exp.id, next, Some(variant), super::now()).await?;
        let report = report(&txn, key).await?;
        txn.commit().await?;
        Ok(report)
    }

    /// Changes weights for subjects not yet exposed; exposed ones keep their variant.
    /// All the weights change, or none.
    pub async fn set_experiment_weights(&self, key: &str, weights: Vec<(String, u32)>) -> AppResult<ExperimentReport> {
        self.check_key("key", key)?;
        for (name, _) in &weights {
            self.check_key("variant", name)?;
        }
        let txn = begin_write(&self.db).await?;
        let exp = find_experiment(&txn, key).await?;
        let mut variants = exp.variants.clone();
        for (name, weight) in &weights {
            let v = variants.iter_mut().find(|v| &v.name == name).ok_or_else(|| {
                AppError::not_found(format!("experiment `{}` has no variant `{}`", shorten(key), shorten(name)))
            })?;
            v.weight = *weight;
        }
        let problems = experiments::check_variants(&variants);
        if !problems.is_empty() {
            return Err(AppError::invalid(problems.join("; ")));
        }
        for (name, weight) in weights {
            store::set_weight(&txn, exp.id, &name, weight).await?;
        }
        let report = report(&txn, key).await?;
        txn.commit().await?;
        Ok(report)
    }

    pub async fn experiment(&self, key: &str) -> AppResult<ExperimentReport> {
        self.check_key("key", key)?;
        report(&self.db, key).await
    }
}

/// An experiment with its exposures, as `db` sees it (a mutation reads back what it
/// wrote inside its transaction, so a failure there undoes the write).
async fn report(db: &impl ConnectionTrait, key: &str) -> AppResult<ExperimentReport> {
    let experiment = find_experiment(db, key).await?;
    let counts = store::exposure_counts(db, experiment.id).await?;
    let exposures = experiment
        .variants
        .iter()
        .map(|v| (v.name.clone(), counts.iter().find(|(n, _)| n == &v.name).map_or(0, |(_, c)| *c)))
        .collect();
    Ok(ExperimentReport { experiment, exposures })
}

async fn find_experiment(db: &impl ConnectionTrait, key: &str) -> AppResult<ExperimentRecord> {
    store::find(db, key).await?.ok_or_else(|| AppError::not_found(format!("no experiment `{}`", shorten(key))))
}

fn conflict(exp: &ExperimentRecord, action: &str) -> AppError {
    AppError::new(ErrorCode::Conflict, format!("cannot {action} experiment `{}`: it is {}", exp.key, exp.state.name()))
}
