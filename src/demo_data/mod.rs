//! `onramp demo-data`: fills a database with a plausible population for one flow, for
//! demos and benchmarks. Every subject's state is produced by the engine's own domain
//! (`progress::apply`, `triggers::settle`, `mark_reached`, `credit`), so the rows are the
//! ones the engine would have written; only the writing is bulk. A flow's nudges are
//! scheduled and decided the same way, by `domain::nudges` (see `nudges`).
//!
//! Deterministic: the same seed, user count, `until` and flow versions give the same rows
//! (row ids aside, which depend on what the database already holds). Subject `i` of a run
//! is `demo-<seed>-<i>`; a run refuses to start when subjects of its seed already exist.

mod nudges;
mod simulate;
mod write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use tokio::sync::mpsc;

use crate::domain::experiments::ExperimentState;
use crate::domain::{EnrollmentStatus, FlowDefinition, FlowScope, FlowStatus};
use crate::persistence::{experiments, flows::FlowRecord, flows::FlowStore};
use crate::service::{Onramp, demo_flow_definition, nudge_outcome};
use simulate::{Experiment, Generated, World};

/// The flow key whose built-in definition is published when it does not exist yet.
pub const DEMO_FLOW_KEY: &str = "new_user";

#[derive(Clone, Debug)]
pub struct Options {
    pub users: u64,
    pub flow: String,
    pub seed: u64,
    /// Enrollments start within this many weeks before `until`.
    pub weeks: u32,
    /// Nothing happens after this time.
    pub until: DateTime<Utc>,
    /// The step that drives later activity most; by default the first optional step among
    /// the second and third, else the third step.
    pub key_step: Option<String>,
    /// Subjects per transaction.
    pub batch: usize,
}

impl Options {
    /// The defaults of the command: seed 42, eight weeks, until now (whole seconds).
    pub fn new(users: u64, flow: &str) -> Options {
        Options {
            users,
            flow: flow.to_string(),
            seed: 42,
            weeks: 8,
            until: Utc::now().trunc_subsecs(0),
            key_step: None,
            batch: 10_000,
        }
    }
}

/// How far a run is.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub elapsed: Duration,
}

/// What a run wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub flow: String,
    /// The flow versions subjects were enrolled in.
    pub versions: Vec<i32>,
    pub users: u64,
    pub completed: u64,
    /// In progress with at least one step acted on.
    pub in_progress: u64,
    /// Enrolled (IN_PROGRESS) with no step acted on.
    pub not_started: u64,
    pub skipped: u64,
    pub step_rows: u64,
    pub ledger_entries: u64,
    /// Events that completed steps (one per triggered completion).
    pub trigger_events: u64,
    /// Later product activity (retention).
    pub activity_events: u64,
    pub exposures: u64,
    /// Nudge log lines the scheduler would have written by `until`: sent, held out (the
    /// subject is in the rule's holdout), held back by the fatigue budget (a wait), and
    /// cancelled by progress while waiting.
    pub nudges_sent: u64,
    pub nudges_held_out: u64,
    pub nudges_suppressed: u64,
    pub nudges_cancelled: u64,
    /// `nudge_schedule` rows (enrollments in progress of a flow with nudge rules).
    pub nudge_schedule_rows: u64,
    pub key_step: String,
    pub activity_event: String,
    pub elapsed: Duration,
}

impl Summary {
    fn add(&mut self, subject: &Generated, activity_event: &str) {
        self.users += 1;
        match subject.enrollment.status {
            EnrollmentStatus::Completed => self.completed += 1,
            EnrollmentStatus::Skipped => self.skipped += 1,
            EnrollmentStatus::InProgress if subject.not_started() => self.not_started += 1,
            EnrollmentStatus::InProgress => self.in_progress += 1,
        }
        self.step_rows += subject.enrollment.steps.len() as u64;
        self.ledger_entries += subject.ledger.len() as u64;
        let activity = subject.events.iter().filter(|e| e.name == activity_event).count() as u64;
        self.activity_events += activity;
        self.trigger_events += subject.events.len() as u64 - activity;
        self.exposures += u64::from(subject.assigned.as_ref().is_some_and(|a| a.exposure.is_some()));
        let logged = |outcome: &str| subject.nudge_log.iter().filter(|l| l.outcome == outcome).count() as u64;
        self.nudges_sent += logged(nudge_outcome::SENT);
        self.nudges_held_out += logged(nudge_outcome::HELD_OUT);
        self.nudges_suppressed += logged(nudge_outcome::SUPPRESSED_BY_CAP);
        self.nudges_cancelled += logged(nudge_outcome::CANCELLED_BY_PROGRESS);
        self.nudge_schedule_rows += subject.schedule.len() as u64;
    }

    fn merge(&mut self, other: &Summary) {
        self.users += other.users;
        self.completed += other.completed;
        self.in_progress += other.in_progress;
        self.not_started += other.not_started;
        self.skipped += other.skipped;
        self.step_rows += other.step_rows;
        self.ledger_entries += other.ledger_entries;
        self.trigger_events += other.trigger_events;
        self.activity_events += other.activity_events;
        self.exposures += other.exposures;
        self.nudges_sent += other.nudges_sent;
        self.nudges_held_out += other.nudges_held_out;
        self.nudges_suppressed += other.nudges_suppressed;
        self.nudges_cancelled += other.nudges_cancelled;
        self.nudge_schedule_rows += other.nudge_schedule_rows;
    }

    pub fn events(&self) -> u64 {
        self.trigger_events + self.activity_events
    }
}

/// Generates `options.users` subjects enrolled in `options.flow` and writes them, batch by
/// batch (each batch one transaction), calling `progress` after each. The database must be
/// migrated. Generation runs on threads of its own, overlapping the writes.
pub async fn generate(
    db: &DatabaseConnection,
    options: &Options,
    mut progress: impl FnMut(&Progress),
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    if options.weeks == 0 {
        bail!("--weeks must be at least 1");
    }
    let world = Arc::new(world(db, options).await?);
    let prefix = format!("demo-{}-%", options.seed);
    let backend = db.get_database_backend();
    let placeholder = if backend == DbBackend::Postgres { "$1" } else { "?" };
    let sql = format!("SELECT 1 FROM subjects WHERE external_id LIKE {placeholder} LIMIT 1");
    let taken = Statement::from_sql_and_values(backend, sql, [prefix.clone().into()]);
    if db.query_one_raw(taken).await?.is_some() {
        bail!("subjects `{prefix}` already exist (an earlier run with seed {}): pass another --seed", options.seed);
    }

    let mut summary = Summary {
        flow: world.latest.key.clone(),
        key_step: world.key_step.clone(),
        activity_event: world.activity_event.clone(),
        ..Summary::default()
    };
    let batch = options.batch.max(1) as u64;
    let batches = options.users.div_ceil(batch);
    // PostgreSQL: ids reserved for the whole run up front, so the generator threads can
    // render the COPY text too, and two connections write at once. SQLite has one writer.
    let target = match backend {
        DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool().clone();
            let subject_ids = write::reserve_postgres(&pool, "subjects", options.users).await?;
            let enrollment_ids = write::reserve_postgres(&pool, "enrollments", options.users).await?;
            let skip_checks = write::can_skip_checks(&pool).await?;
            Target::Postgres {
                pool,
                skip_checks,
                subject_ids: Arc::new(subject_ids),
                enrollment_ids: Arc::new(enrollment_ids),
            }
        }
        _ => Target::Sqlite(db.clone()),
    };
    let lanes = match target {
        Target::Postgres { .. } => 2,
        Target::Sqlite(_) => 1,
    }
    .min(batches.max(1));

    // Each lane: a generator thread producing batches b = lane, lane + lanes, ... and a
    // task writing them; finished batches report here.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<anyhow::Result<Summary>>();
    let mut writers = Vec::new();
    for lane in 0..lanes {
        let (tx, mut rx) = mpsc::channel::<Result<(Summary, Payload), String>>(1);
        let (world_for_thread, target_for_thread, users) = (world.clone(), target.clone(), options.users);
        std::thread::spawn(move || {
            let mut b = lane;
            while b < batches {
                let range = (b * batch) as usize..((b + 1) * batch).min(users) as usize;
                let made = make(&world_for_thread, &target_for_thread, range);
                let failed = made.is_err();
                if tx.blocking_send(made).is_err() || failed {
                    return;
                }
                b += lanes;
            }
        });
        let (target, done_tx, world_for_writer) = (target.clone(), done_tx.clone(), world.clone());
        writers.push(tokio::spawn(async move {
            while let Some(made) = rx.recv().await {
                let result = match made {
                    Ok((delta, payload)) => write_payload(&target, &world_for_writer, payload).await.map(|()| delta),
                    Err(e) => Err(anyhow::Error::msg(e)),
                };
                let failed = result.is_err();
                if done_tx.send(result).is_err() || failed {
                    return;
                }
            }
        }));
    }
    drop(done_tx);
    while let Some(result) = done_rx.recv().await {
        match result {
            Ok(delta) => {
                summary.merge(&delta);
                progress(&Progress { done: summary.users, total: options.users, elapsed: started.elapsed() });
            }
            Err(e) => {
                // Stop the other writers: batches written so far stay.
                writers.iter().for_each(|w| w.abort());
                return Err(e.context(format!("writing demo data (users written: {})", summary.users)));
            }
        }
    }
    if summary.users != options.users {
        bail!("a demo-data generator stopped unexpectedly after {} users", summary.users);
    }
    summary.versions = match &world.experiment {
        Experiment::None => vec![world.latest.version],
        Experiment::Running { flows, .. } => {
            let mut v: Vec<i32> = flows.iter().flatten().map(|f| f.version).chain([world.latest.version]).collect();
            v.sort_unstable();
            v.dedup();
            v
        }
        Experiment::Winner { flow, .. } => vec![flow.version],
    };
    // Each batch appended its analytics cells as deltas; folded now, readers sum a few
    // thousand counts instead of a delta per batch and cell.
    crate::persistence::rollup::compact_all(db).await?;
    // A bulk load leaves the planner's statistics describing the tables as they were;
    // refreshed now, the first analytics queries get sensible plans (autovacuum would
    // get there later).
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        db.execute_unprepared(
            "ANALYZE subjects, enrollments, step_progress, events, points_ledger, exposures, rollup_counts, \
             nudge_schedule, nudge_log",
        )
        .await?;
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Where batches go.
#[derive(Clone)]
enum Target {
    Postgres {
        pool: sea_orm::sqlx::PgPool,
        skip_checks: bool,
        subject_ids: Arc<Vec<i64>>,
        enrollment_ids: Arc<Vec<i64>>,
    },
    Sqlite(DatabaseConnection),
}

/// A batch ready to write.
enum Payload {
    Copy(Vec<Vec<u8>>),
    Rows(Vec<Generated>),
}

/// Generates subjects `range` (on a generator thread), and what the batch adds to the summary.
fn make(world: &World, target: &Target, range: std::ops::Range<usize>) -> Result<(Summary, Payload), String> {
    let generated: Vec<Generated> = range.clone().map(|i| world.subject(i as u64)).collect::<Result<_, _>>()?;
    let mut delta = Summary::default();
    for subject in &generated {
        delta.add(subject, &world.activity_event);
    }
    let payload = match target {
        Target::Postgres { subject_ids, enrollment_ids, .. } => {
            Payload::Copy(write::copy_text(world, &generated, &subject_ids[range.clone()], &enrollment_ids[range]))
        }
        Target::Sqlite(_) => Payload::Rows(generated),
    };
    Ok((delta, payload))
}

async fn write_payload(target: &Target, world: &World, payload: Payload) -> anyhow::Result<()> {
    match (target, payload) {
        (Target::Postgres { pool, skip_checks, .. }, Payload::Copy(data)) => {
            write::copy(pool, data, *skip_checks).await
        }
        (Target::Sqlite(db), Payload::Rows(rows)) => Ok(write::sqlite(db, world, &rows).await?),
        _ => bail!("a batch was prepared for another database"),
    }
}

/// Everything fixed for the run: the flow versions, the experiment, the key step.
async fn world(db: &DatabaseConnection, options: &Options) -> anyhow::Result<World> {
    let store = FlowStore::default();
    let key = options.flow.as_str();
    let latest = match store.latest_active(db, key).await? {
        Some(flow) => flow,
        None if key == DEMO_FLOW_KEY && store.find(db, key, None).await?.is_none() => Onramp::new(db.clone())
            .publish_flow(demo_flow_definition())
            .await
            .map_err(|e| anyhow::anyhow!("publishing the demo flow: {}", e.message))?,
        None => {
            bail!("no active flow with key `{key}`: publish it first (only `{DEMO_FLOW_KEY}` is published on demand)")
        }
    };
    if latest.scope == FlowScope::Workspace {
        bail!("flow `{key}` is workspace-scoped; demo-data generates users for user-scoped flows only");
    }
    let usable = |flow: Option<FlowRecord>| flow.filter(|f| f.status != FlowStatus::Deprecated);
    let experiment = match experiments::in_effect(db, key).await? {
        Some(exp) if exp.state == ExperimentState::Running => {
            let mut flows = Vec::new();
            for v in &exp.variants {
                flows.push(usable(store.find(db, key, Some(v.version)).await?));
            }
            Experiment::Running { id: exp.id, key: exp.key, variants: exp.variants, flows }
        }
        Some(exp) if exp.state == ExperimentState::Completed => {
            let winner = exp.winner.as_deref().and_then(|w| exp.variants.iter().find(|v| v.name == w));
            let flow = match winner {
                Some(v) => usable(store.find(db, key, Some(v.version)).await?),
                None => None,
            };
            match (winner, flow) {
                (Some(v), Some(flow)) => Experiment::Winner { key: exp.key, variant: v.name.clone(), flow },
                _ => Experiment::None,
            }
        }
        _ => Experiment::None,
    };
    let definitions: Vec<&FlowDefinition> = match &experiment {
        Experiment::None => vec![&latest.definition],
        Experiment::Running { flows, .. } => {
            flows.iter().flatten().map(|f| &*f.definition).chain([&*latest.definition]).collect()
        }
        Experiment::Winner { flow, .. } => vec![&flow.definition],
    };
    let key_step = match &options.key_step {
        Some(step) if definitions.iter().any(|d| d.step(step).is_some()) => step.clone(),
        Some(step) => bail!("flow `{key}` has no step `{step}` (--key-step)"),
        None => default_key_step(&latest.definition),
    };
    // Later activity must not complete any step by accident.
    let triggers: Vec<&str> = definitions.iter().flat_map(|d| d.trigger_events()).collect();
    let mut activity_event = "app.session".to_string();
    while triggers.contains(&activity_event.as_str()) {
        activity_event.push_str("_demo");
    }
    Ok(World {
        seed: options.seed,
        until: options.until.trunc_subsecs(0),
        window_secs: i64::from(options.weeks) * 7 * 86_400,
        latest,
        experiment,
        key_step,
        activity_event,
    })
}

/// The first optional step among the second and third (a step few do, that matters: the
/// one a step-impact analysis should find), else the third step, else the last.
fn default_key_step(flow: &FlowDefinition) -> String {
    let optional = flow.steps.iter().enumerate().find(|(i, s)| (1..=2).contains(i) && !s.required);
    let step = optional.map(|(_, s)| s).unwrap_or_else(|| &flow.steps[2.min(flow.steps.len() - 1)]);
    step.key.clone()
}
