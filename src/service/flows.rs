//! Publishing and reading flow versions.

use serde_json::Value;

use super::{News, Onramp};
use crate::domain::limits::shorten;
use crate::domain::{FlowDefinition, FlowStatus, validate_flow, validation, validation::Problem};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::persistence::begin_write;
use crate::persistence::flows::FlowRecord;

impl Onramp {
    /// Every problem with a definition; empty when it would publish.
    pub async fn validate_flow(&self, definition: Value) -> AppResult<Vec<Problem>> {
        Ok(self.parse_incoming(definition).await?.err().unwrap_or_default())
    }

    /// Validation of a large definition takes milliseconds of CPU: it runs on the
    /// blocking pool, so it never holds up the requests sharing this executor thread.
    pub(super) async fn parse_incoming(&self, definition: Value) -> AppResult<Result<FlowDefinition, Vec<Problem>>> {
        let limits = self.limits.clone();
        tokio::task::spawn_blocking(move || validate_flow(&definition, &limits))
            .await
            .map_err(|e| AppError::internal(format!("validating a flow definition: {e}")))
    }

    /// Publishes a definition as the next version of its key. Subjects already enrolled
    /// stay on the version they started. All or nothing: the version is written and read
    /// back in one transaction, and only a committed version is announced.
    pub async fn publish_flow(&self, definition: Value) -> AppResult<FlowRecord> {
        self.publish_flow_expecting(definition, None).await
    }

    /// `publish_flow`, only while the newest version of the key (of any status; 0 when
    /// none) is `expected`: a plan made against that version is still what it was made
    /// against. Otherwise CONFLICT, with the current version in `currentVersion`.
    pub async fn publish_flow_expecting(&self, definition: Value, expected: Option<i32>) -> AppResult<FlowRecord> {
        let definition = self.parse_incoming(definition).await?.map_err(AppError::invalid_definition)?;
        // A concurrent publish of the same key takes the same version number; the unique
        // index refuses one of them, which then takes the next number in a new
        // transaction (on PostgreSQL the failed one can do nothing more).
        let mut attempt = 0;
        loop {
            let txn = begin_write(&self.db).await?;
            if let Some(expected) = expected {
                // Read in the transaction: a publish racing this one takes the same next
                // version number, the unique index refuses one, and its retry reads the
                // other's version here and stops.
                let current = self.flows.find(&txn, &definition.key, None).await?.map_or(0, |f| f.version);
                if current != expected {
                    return Err(AppError::new(
                        ErrorCode::Conflict,
                        format!(
                            "flow `{}` is at version {current}, not {expected}: it changed since the plan",
                            shorten(&definition.key)
                        ),
                    )
                    .with("currentVersion", Value::from(current)));
                }
            }
            match self.flows.insert_next_version(&txn, &definition, super::now()).await {
                Ok(Err(scope)) => {
                    return Err(AppError::invalid_definition(vec![Problem {
                        path: "$.scope".into(),
                        code: validation::codes::SCOPE_CHANGED,
                        message: format!(
                            "earlier versions of `{}` are {}-scoped; a new version cannot change the scope",
                            definition.key,
                            scope.name()
                        ),
                    }]));
                }
                Ok(Ok(flow)) => {
                    self.commit_and_announce(txn, News::Flows).await?;
                    tracing::info!(key = %flow.key, version = flow.version, "flow published");
                    return Ok(flow);
                }
                Err(e) if attempt < 5 && is_unique_violation(&e) => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Deprecated versions take no new enrollments; enrolled subjects carry on. The
    /// change and the version read back commit together, or not at all.
    pub async fn deprecate_flow(&self, key: &str, version: i32) -> AppResult<FlowRecord> {
        self.check_key("key", key)?;
        let txn = begin_write(&self.db).await?;
        let flow = self
            .flows
            .set_status(&txn, key, version, FlowStatus::Deprecated)
            .await?
            .ok_or_else(|| AppError::not_found(format!("flow `{}` has no version {version}", shorten(key))))?;
        self.commit_and_announce(txn, News::Flows).await?;
        Ok(flow)
    }

    pub async fn list_flows(&self) -> AppResult<Vec<FlowRecord>> {
        Ok(self.flows.list(&self.db).await?)
    }

    /// A version, or the newest one of any status.
    pub async fn flow(&self, key: &str, version: Option<i32>) -> AppResult<Option<FlowRecord>> {
        self.check_key("key", key)?;
        Ok(self.flows.find(&self.db, key, version).await?)
    }

    /// Publishes the demo flow when no flow exists at all. Returns it when published.
    pub async fn ensure_demo_flow(&self) -> AppResult<Option<FlowRecord>> {
        if self.flows.count(&self.db).await? > 0 {
            return Ok(None);
        }
        self.publish_flow(super::demo_flow_definition()).await.map(Some)
    }
}

fn is_unique_violation(e: &sea_orm::DbErr) -> bool {
    matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}
