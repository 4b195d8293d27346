//! Output types. They are built from service snapshots, never derived on database rows:
//! the API is not the table.

use super::scalars::Json;
use async_graphql::{Enum, ID, SimpleObject};
use chrono::{DateTime, Utc};

use crate::domain::{self, Owner, StepView};
use crate::persistence::flows::FlowRecord;
use crate::service::Snapshot;

/// Where a subject stands in a flow.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum OnboardingState {
    /// Not enrolled yet: the steps shown are those of the version it would enroll in.
    NotStarted,
    /// Enrolled, with required steps still to do.
    InProgress,
    /// Every applicable required step is completed. Set once; never undone.
    Completed,
    /// The subject dismissed the whole flow. Any later step work resumes it.
    Skipped,
}

/// Where a subject stands in one step.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum StepStatus {
    /// Not started (it may still be locked: see `available`).
    Pending,
    /// Started with startStep, not finished.
    InProgress,
    /// Done: by the subject, a product event or an admin.
    Completed,
    /// An optional step the subject chose not to do; it counts as finished for dependencies.
    Skipped,
}

/// Who recorded a step's current state.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum StepSource {
    /// The subject itself, with a user token.
    User,
    /// A product event matching the step's trigger (trackEvents).
    Event,
    /// An admin or service caller acting for the subject.
    Admin,
}

/// The lifecycle of a flow version.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum FlowStatus {
    /// Stored but not offered to anyone.
    Draft,
    /// Published: new subjects enroll in the newest active version.
    Active,
    /// No new enrollments; subjects already enrolled carry on.
    Deprecated,
}

/// Whose progress a flow tracks.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum FlowScope {
    /// One progress per user.
    User,
    /// One progress per workspace, shared by its members.
    Workspace,
}

/// A subject's (or, for a workspace-scoped flow, a workspace's) progress through one
/// flow: everything a checklist or progress bar needs.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct OnboardingStatus {
    /// The user whose progress this is; null for a workspace-scoped flow.
    pub subject_id: Option<ID>,
    /// The workspace whose shared progress this is; null for a user-scoped flow.
    pub workspace_id: Option<ID>,
    /// USER: one progress per user. WORKSPACE: one per workspace, shared by its members.
    pub scope: FlowScope,
    /// The flow's key, e.g. `new_user`.
    pub flow_key: String,
    /// The flow version the subject is pinned to (or would enroll in).
    pub version: i32,
    /// The flow's title in that version, shown to users, in `locale`.
    pub title: String,
    /// The flow's description in that version, if it has one, in `locale`.
    pub description: Option<String>,
    /// The locale the texts are in: the requested one (the `locale` argument, else the
    /// subject's `locale` attribute) when the flow has it, else its language, else the
    /// flow's default locale.
    pub locale: String,
    /// Where the subject stands: NOT_STARTED, IN_PROGRESS, COMPLETED or SKIPPED.
    pub status: OnboardingState,
    /// When the subject enrolled; null before enrollment.
    pub started_at: Option<DateTime<Utc>>,
    /// When every required applicable step was completed; set once, never moves.
    pub completed_at: Option<DateTime<Utc>>,
    /// When the subject dismissed the flow; null unless SKIPPED.
    pub skipped_at: Option<DateTime<Utc>>,
    /// The last change to the enrollment or any of its steps; null before enrollment.
    pub last_activity_at: Option<DateTime<Utc>>,
    /// Completed required applicable steps over required applicable steps, 0 to 100,
    /// rounded down; 100 when no required step applies.
    pub percent_complete: i32,
    /// Completed steps among the applicable ones.
    pub completed_count: i32,
    /// Applicable steps.
    pub total_count: i32,
    /// 1-based position of the next step, for "step 2 of 5"; equals totalCount when
    /// there is no next step.
    pub position: i32,
    /// Points earned in this flow.
    pub points: i64,
    /// The steps that apply to the subject, in display order.
    pub steps: Vec<StepProgress>,
    /// The first applicable, available, unfinished step, or null.
    pub next_step: Option<StepProgress>,
    /// Grows with every change to the enrollment; 0 before enrollment.
    pub revision: i64,
    /// The experiment variant that chose the version, when an experiment did.
    pub variant: Option<String>,
}

/// One applicable step and the subject's state in it.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct StepProgress {
    /// The step's key, unique within the flow, e.g. `verify_email`.
    pub key: String,
    /// The step's title, shown to users, in the status's locale.
    pub title: String,
    /// The step's description, if it has one, in the status's locale.
    pub description: Option<String>,
    /// Required steps decide completion and percentComplete.
    pub required: bool,
    /// Whether skipStep may skip it (only optional steps can be skippable).
    pub skippable: bool,
    /// The subject's state in the step.
    pub status: StepStatus,
    /// Every dependency is met (completed, skipped, or not applicable).
    pub available: bool,
    /// The keys of the dependencies still to finish; empty when available.
    pub blocked_by: Vec<String>,
    /// Points the step awards on completion.
    pub points: i64,
    /// When startStep first marked it IN_PROGRESS; null otherwise.
    pub started_at: Option<DateTime<Utc>>,
    /// When it was completed; null unless COMPLETED.
    pub completed_at: Option<DateTime<Utc>>,
    /// When it was skipped; null unless SKIPPED.
    pub skipped_at: Option<DateTime<Utc>>,
    /// The reason given to skipStep, if any.
    pub skip_reason: Option<String>,
    /// What the subject answered, e.g. {"invited_count": 3}.
    pub metadata: Option<Json>,
    /// Who recorded the current state; null while pending with no record.
    pub source: Option<StepSource>,
    /// The user who completed or skipped the step (in a workspace, the member; for an
    /// event, its sender); null while unfinished or when an event named no user.
    pub completed_by: Option<ID>,
}

/// A published flow version.
#[derive(SimpleObject, Clone, Debug)]
pub struct Flow {
    /// The version's id (a UUID).
    pub id: ID,
    /// The flow key; every version of a flow shares it.
    pub key: String,
    /// 1 for the first publication of the key, then n + 1 for each publication.
    pub version: i32,
    /// DRAFT, ACTIVE or DEPRECATED.
    pub status: FlowStatus,
    /// USER or WORKSPACE; the same for every version of a key.
    pub scope: FlowScope,
    /// The definition's title, in the flow's default locale.
    pub title: String,
    /// The definition's description, if it has one, in the flow's default locale.
    pub description: Option<String>,
    /// The locale plain texts are in and reads fall back to (`en` unless declared).
    pub default_locale: String,
    /// The definition as stored: canonical form, every default spelled out.
    pub definition: Json,
    /// When the version was published.
    pub created_at: DateTime<Utc>,
}

/// One problem in a flow definition.
#[derive(SimpleObject, Clone, Debug)]
pub struct FlowProblem {
    /// JSON path, e.g. `$.steps[2].dependsOn[0]`.
    pub path: String,
    /// Stable code, e.g. DEPENDENCY_CYCLE.
    pub code: String,
    /// What is wrong, in words (quotes at most 100 characters of the input).
    pub message: String,
}

/// A user: its attributes are what audiences and step conditions read.
#[derive(SimpleObject, Clone, Debug)]
pub struct Subject {
    /// The subject id (a token's `sub`).
    pub id: ID,
    /// The attributes as stored, a JSON object, e.g. `{"plan": "team"}`.
    pub attributes: Json,
}

/// A workspace: its attributes are what the audiences and step conditions of
/// workspace-scoped flows read.
#[derive(SimpleObject, Clone, Debug)]
pub struct Workspace {
    /// The workspace id, as tokens list it.
    pub id: ID,
    /// The attributes as stored, a JSON object.
    pub attributes: Json,
}

impl From<&Snapshot> for OnboardingStatus {
    fn from(s: &Snapshot) -> Self {
        OnboardingStatus::of(s, None)
    }
}

/// The locale a read asked for: the argument, else the owner's `locale` attribute.
pub fn requested_locale<'a>(argument: Option<&'a str>, attributes: &'a serde_json::Value) -> Option<&'a str> {
    argument.or_else(|| domain::text::subject_locale(attributes))
}

/// The locale of a flow's texts for a request (see `OnboardingStatus.locale`).
pub fn locale_for(definition: &domain::FlowDefinition, requested: Option<&str>) -> String {
    let texts = domain::validation::flow_texts(definition);
    let mut available: Vec<&str> = texts.iter().flat_map(|(_, t)| t.locales()).collect();
    available.sort_unstable();
    available.dedup();
    domain::text::choose_locale(&available, requested, definition.default_locale()).to_string()
}

impl OnboardingStatus {
    /// The status with its texts in `locale` (argument), else in the owner's `locale`
    /// attribute, else in the flow's default locale.
    pub fn of(s: &Snapshot, locale: Option<&str>) -> Self {
        let view = s.view();
        let definition = &s.flow.definition;
        let requested = requested_locale(locale, &s.attributes);
        let default = definition.default_locale();
        let e = s.enrollment.as_ref();
        let steps: Vec<StepProgress> = view.steps.iter().map(|v| StepProgress::of(v, requested, default)).collect();
        let (subject_id, workspace_id) = match &s.owner {
            Owner::User(id) => (Some(ID(id.clone())), None),
            Owner::Workspace(id) => (None, Some(ID(id.clone()))),
        };
        OnboardingStatus {
            subject_id,
            workspace_id,
            scope: s.flow.scope.into(),
            flow_key: s.flow.key.clone(),
            version: s.flow.version,
            title: definition.title.resolve(requested, default).to_string(),
            description: definition.description.as_ref().map(|d| d.resolve(requested, default).to_string()),
            locale: locale_for(definition, requested),
            status: e.map_or(OnboardingState::NotStarted, |e| match e.status {
                domain::EnrollmentStatus::InProgress => OnboardingState::InProgress,
                domain::EnrollmentStatus::Completed => OnboardingState::Completed,
                domain::EnrollmentStatus::Skipped => OnboardingState::Skipped,
            }),
            started_at: e.map(|e| e.started_at),
            completed_at: e.and_then(|e| e.completed_at),
            skipped_at: e.and_then(|e| e.skipped_at),
            last_activity_at: e.map(|e| e.last_activity_at),
            percent_complete: view.percent_complete,
            completed_count: view.completed_count,
            total_count: view.total_count,
            position: view.position,
            points: e.map_or(0, |e| e.points),
            next_step: view.next_step.map(|i| steps[i].clone()),
            steps,
            revision: e.map_or(0, |e| e.revision),
            variant: s.variant.clone(),
        }
    }
}

impl StepProgress {
    /// The step with its texts in `locale`, falling back to its language, then `default`.
    pub fn of(v: &StepView<'_>, locale: Option<&str>, default: &str) -> Self {
        let d = v.definition;
        StepProgress {
            key: d.key.clone(),
            title: d.title.resolve(locale, default).to_string(),
            description: d.description.as_ref().map(|t| t.resolve(locale, default).to_string()),
            required: d.required,
            skippable: d.skippable,
            status: match v.status {
                domain::StepStatus::Pending => StepStatus::Pending,
                domain::StepStatus::InProgress => StepStatus::InProgress,
                domain::StepStatus::Completed => StepStatus::Completed,
                domain::StepStatus::Skipped => StepStatus::Skipped,
            },
            available: v.available,
            blocked_by: v.blocked_by.clone(),
            points: d.points,
            started_at: v.state.and_then(|s| s.started_at),
            completed_at: v.state.and_then(|s| s.completed_at),
            skipped_at: v.state.and_then(|s| s.skipped_at),
            skip_reason: v.state.and_then(|s| s.skip_reason.clone()),
            metadata: v.state.and_then(|s| s.metadata.clone()).map(Json),
            source: v.state.filter(|s| s.is_touched()).map(|s| match s.source {
                domain::Source::User => StepSource::User,
                domain::Source::Event => StepSource::Event,
                domain::Source::Admin => StepSource::Admin,
            }),
            completed_by: v.state.and_then(|s| s.completed_by.clone()).map(ID),
        }
    }
}

impl From<&FlowRecord> for Flow {
    fn from(f: &FlowRecord) -> Self {
        Flow {
            id: ID(f.id.to_string()),
            key: f.key.clone(),
            version: f.version,
            status: match f.status {
                domain::FlowStatus::Draft => FlowStatus::Draft,
                domain::FlowStatus::Active => FlowStatus::Active,
                domain::FlowStatus::Deprecated => FlowStatus::Deprecated,
            },
            scope: f.scope.into(),
            title: f.definition.title.resolve(None, f.definition.default_locale()).to_string(),
            description: f
                .definition
                .description
                .as_ref()
                .map(|d| d.resolve(None, f.definition.default_locale()).to_string()),
            default_locale: f.definition.default_locale().to_string(),
            definition: Json(f.definition.to_json()),
            created_at: f.created_at,
        }
    }
}

impl From<domain::FlowScope> for FlowScope {
    fn from(scope: domain::FlowScope) -> Self {
        match scope {
            domain::FlowScope::User => FlowScope::User,
            domain::FlowScope::Workspace => FlowScope::Workspace,
        }
    }
}

impl From<domain::validation::Problem> for FlowProblem {
    fn from(p: domain::validation::Problem) -> Self {
        FlowProblem { path: p.path, code: p.code.to_string(), message: p.message }
    }
}

/// What migrateEnrollments did, or would do on a dry run.
#[derive(SimpleObject, Clone, Debug)]
pub struct MigrationReport {
    /// True when nothing was written: the numbers say what the real run would do.
    pub dry_run: bool,
    /// Enrollments moved to the target version.
    pub moved: u64,
    /// Of those, how many became COMPLETED under the target version.
    pub became_complete: u64,
    /// Completed steps the target version no longer has, with how many enrollments had each.
    pub dropped_completed_steps: Vec<DroppedStep>,
}

/// A completed step the target version of a migration does not have.
#[derive(SimpleObject, Clone, Debug)]
pub struct DroppedStep {
    /// The step's key in the source version.
    pub step_key: String,
    /// Enrollments that had completed it (their records and points are kept).
    pub enrollments: u64,
}

/// A subject's or workspace's points, all from the ledger.
#[derive(SimpleObject, Clone, Debug)]
pub struct Points {
    /// Null for a workspace's points.
    pub subject_id: Option<ID>,
    /// Set for a workspace's points.
    pub workspace_id: Option<ID>,
    /// The sum of every entry (saturating, never wrapping).
    pub total: i64,
    /// Oldest first.
    pub entries: Vec<PointsEntry>,
}

/// One award. Each reason is awarded once per subject (or workspace).
#[derive(SimpleObject, Clone, Debug)]
pub struct PointsEntry {
    /// Points awarded.
    pub amount: i64,
    /// `onboarding:<flow>:<step>`.
    pub reason: String,
    /// When they were awarded (the step's completion).
    pub awarded_at: DateTime<Utc>,
}

impl From<crate::service::MigrationReport> for MigrationReport {
    fn from(r: crate::service::MigrationReport) -> Self {
        MigrationReport {
            dry_run: r.dry_run,
            moved: r.moved,
            became_complete: r.became_complete,
            dropped_completed_steps: r
                .dropped_completed
                .into_iter()
                .map(|(step_key, enrollments)| DroppedStep { step_key, enrollments })
                .collect(),
        }
    }
}
