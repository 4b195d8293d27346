//! Use cases, one function each: load, ask the domain, save in one transaction. The
//! transport (GraphQL) calls these; they never build queries themselves.

mod advance;
mod analytics;
mod audiences;
mod demo;
mod events;
mod experiments;
mod flows;
mod metrics;
mod nudges;
mod points;
mod progress;
mod subjects;
mod versions;
mod webhooks;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use sea_orm::{DatabaseConnection, DatabaseTransaction};
use serde_json::Value;

pub use analytics::{
    AnalyticsFilter, ExperimentResults, FlowStats, FlowStatsGroup, Funnel, FunnelStep, StepImpact, StepImpactRow,
    TimeBucketCount, VariantResult,
};
pub use demo::demo_flow_definition;
pub use events::{CompletedStep, EventInput, EventOutcome, MAX_EVENT_BATCH};
pub use experiments::ExperimentReport;
pub use nudges::{MAX_LOG_PAGE as MAX_NUDGE_LOG_PAGE, TickReport, nudge_topic, outcome as nudge_outcome};
pub use points::PointsBalance;
pub use versions::MigrationReport;
pub use webhooks::{DeliveryPage, LoggedDelivery, NewEndpoint, WebhookDeliveriesQuery};

use crate::domain::limits::shorten;
use crate::domain::{Enrollment, FlowScope, Limits, Owner, ProgressView, StepState, progress::view};
use crate::error::{AppError, AppResult};
use crate::persistence::flows::{FlowRecord, FlowStore};
use crate::realtime::Realtime;

/// The engine: a database, the cache of published flows, and live fan-out.
pub struct Onramp {
    db: DatabaseConnection,
    flows: FlowStore,
    /// Shared with the tasks that commit and announce (see `commit_and_announce`).
    realtime: Arc<Realtime>,
    limits: Limits,
    /// How webhooks are judged (URLs, secrets' overlap, limits) and timed.
    webhooks: crate::webhooks::WebhookSettings,
    /// Notified after a commit that may have written outbox rows: wakes the dispatcher.
    outbox_written: Arc<tokio::sync::Notify>,
    /// What /metrics reports; the HTTP edge and the schema count into it too.
    metrics: Arc<crate::metrics::Metrics>,
    /// Caps, quiet hours and the engine's clock (see `nudges::NudgeSettings`).
    nudges: crate::nudges::NudgeSettings,
}

impl Onramp {
    /// An engine on a migrated database. On PostgreSQL, call `listen` too, so changes
    /// made by other instances reach this one's subscribers.
    pub fn new(db: DatabaseConnection) -> Self {
        let realtime = Arc::new(Realtime::new(&db));
        Onramp {
            db,
            flows: FlowStore::default(),
            realtime,
            limits: Limits::default(),
            webhooks: crate::webhooks::WebhookSettings::default(),
            outbox_written: Arc::new(tokio::sync::Notify::new()),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            nudges: crate::nudges::NudgeSettings::default(),
        }
    }

    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The same engine with these webhook settings (the defaults allow public https
    /// endpoints only). Give the dispatcher the same ones.
    pub fn with_webhooks(mut self, settings: crate::webhooks::WebhookSettings) -> Self {
        self.webhooks = settings;
        self
    }

    pub fn webhook_settings(&self) -> &crate::webhooks::WebhookSettings {
        &self.webhooks
    }

    /// Starts this engine's webhook dispatcher, woken by its commits.
    pub fn spawn_dispatcher(&self) -> Result<crate::webhooks::DispatcherHandle, reqwest::Error> {
        crate::webhooks::spawn_dispatcher(self.db.clone(), self.outbox_written.clone(), self.webhooks.clone())
    }

    /// The same engine with other input limits than the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A flow, step, experiment or variant key as it comes in, within the key limit.
    pub fn check_key(&self, what: &str, key: &str) -> AppResult<()> {
        self.limits.check_key(what, key).map_err(AppError::invalid)
    }

    /// Starts the PostgreSQL change listener and waits until it listens (nothing to do
    /// on SQLite).
    pub async fn listen(&self, database_url: &str) -> Result<Option<tokio::task::JoinHandle<()>>, sea_orm::DbErr> {
        if sea_orm::ConnectionTrait::get_database_backend(&self.db) != sea_orm::DbBackend::Postgres {
            return Ok(None);
        }
        let hub = self.realtime.hub().clone();
        let instance = self.realtime.instance().to_string();
        crate::realtime::spawn_listener(database_url, hub, instance)
            .await
            .map(Some)
            .map_err(|e| sea_orm::DbErr::Custom(format!("starting the change listener: {e}")))
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn realtime(&self) -> &Realtime {
        &self.realtime
    }
}

/// What a write tells watchers once it has committed.
pub(crate) enum News {
    /// These owners (by key) changed; nothing when empty.
    Owners(Vec<String>),
    /// The published flows changed.
    Flows,
}

impl Onramp {
    /// Commits a write, then announces it, as one step that a dropped request cannot
    /// split: it runs in a task of its own. Dropped while COMMIT is in flight, a request
    /// would otherwise leave a committed change unannounced: watchers never re-read, and
    /// for a flow change this instance would keep serving the flows it cached before.
    pub(crate) async fn commit_and_announce(&self, txn: DatabaseTransaction, news: News) -> AppResult<()> {
        let realtime = self.realtime.clone();
        let outbox_written = self.outbox_written.clone();
        tokio::spawn(async move {
            txn.commit().await?;
            match news {
                News::Owners(owners) => {
                    // A change to an owner is what writes outbox rows; a wake with none
                    // to send costs the dispatcher one query.
                    outbox_written.notify_one();
                    realtime.announce(&owners).await
                }
                News::Flows => realtime.flows_changed().await,
            }
            Ok(())
        })
        .await
        .map_err(|e| AppError::internal(format!("committing a write: {e}")))?
    }
}

/// Who a request is for: a user, and the workspace it acts in when it has one. A flow's
/// scope decides whose progress that means (see `Onramp::owner`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Party {
    pub subject: String,
    pub workspace: Option<String>,
}

impl Onramp {
    /// Whose progress a flow keeps for this party: the user's for a USER-scoped flow, the
    /// workspace's for a WORKSPACE-scoped one (which needs a workspace).
    pub async fn owner(&self, party: &Party, flow_key: &str) -> AppResult<Owner> {
        self.check_key("flowKey", flow_key)?;
        // The user is checked even when the workspace owns the progress: it is the one
        // credited as completedBy, and a user id never poses as a workspace key.
        let user = Owner::user(&party.subject, &self.limits).map_err(AppError::invalid)?;
        let scope = self.flows.scope_of(&self.db, flow_key).await?.ok_or_else(|| progress::no_active_flow(flow_key))?;
        match scope {
            FlowScope::User => Ok(user),
            FlowScope::Workspace => {
                let workspace = party.workspace.as_deref().ok_or_else(|| {
                    AppError::invalid(format!(
                        "flow `{}` is workspace-scoped: pass workspaceId (a token that lists exactly one workspace implies it)",
                        shorten(flow_key)
                    ))
                })?;
                Owner::workspace(workspace, &self.limits).map_err(AppError::invalid)
            }
        }
    }
}

/// An owner's state in one flow, as read or just written: everything a status needs.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The user, or for a workspace-scoped flow the workspace, whose progress this is.
    pub owner: Owner,
    pub flow: FlowRecord,
    pub attributes: Value,
    /// None when the owner is not enrolled: NOT_STARTED, with the would-be steps.
    pub enrollment: Option<Enrollment>,
    /// For an owner not enrolled: what its stored events already complete in the flow
    /// (the enrollment it would start with), computed, never written. None when enrolled
    /// or when there is nothing to show.
    pub preview: Option<Enrollment>,
    /// The experiment variant behind the version, when an experiment chose it.
    pub variant: Option<String>,
}

/// The current time at the precision every backend stores (PostgreSQL keeps
/// microseconds), so what a write returns equals what a later read returns.
pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

static NO_STEPS: LazyLock<BTreeMap<String, StepState>> = LazyLock::new(BTreeMap::new);

impl Snapshot {
    pub fn view(&self) -> ProgressView<'_> {
        let steps = self.enrollment.as_ref().or(self.preview.as_ref()).map_or(&*NO_STEPS, |e| &e.steps);
        view(&self.flow.definition, &self.attributes, steps)
    }
}
