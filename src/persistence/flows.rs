//! Published flow versions. Definitions are immutable once written, so they are parsed
//! once and cached by row id; status is the only mutable column and is always read fresh.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use entity::flow;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::parse_name;
use crate::domain::{FlowDefinition, FlowScope, FlowStatus, parse_flow};

/// One published version of a flow.
#[derive(Clone, Debug)]
pub struct FlowRecord {
    pub id: i64,
    pub key: String,
    pub version: i32,
    pub status: FlowStatus,
    pub scope: FlowScope,
    pub created_at: DateTime<Utc>,
    pub definition: Arc<FlowDefinition>,
}

#[derive(Default)]
pub struct FlowStore {
    definitions: RwLock<HashMap<i64, Arc<FlowDefinition>>>,
    /// Every version of a key has the scope of its first (publishing enforces it), so
    /// the scope of a key, once seen, never changes.
    scopes: RwLock<HashMap<String, FlowScope>>,
    /// Versions as first read, for `pinned`.
    pinned: RwLock<HashMap<i64, FlowRecord>>,
    /// `latest_active_all` as read at a flows epoch, for `latest_active_at`.
    active: RwLock<Option<(u64, Vec<FlowRecord>)>>,
}

impl FlowStore {
    fn record(&self, row: flow::Model) -> Result<FlowRecord, DbErr> {
        let cached = self.definitions.read().ok().and_then(|c| c.get(&row.id).cloned());
        let definition = match cached {
            Some(d) => d,
            None => {
                let parsed = parse_stored(&row)?;
                if let Ok(mut cache) = self.definitions.write() {
                    cache.insert(row.id, parsed.clone());
                }
                parsed
            }
        };
        record_of(row, definition)
    }

    fn records(&self, rows: Vec<flow::Model>) -> Result<Vec<FlowRecord>, DbErr> {
        rows.into_iter().map(|r| self.record(r)).collect()
    }

    /// Inserts `definition` as the next version of its key, ACTIVE, or returns the key's
    /// scope (`Ok(Err(scope))`) when the definition would change it. Two concurrent
    /// publishes of one key collide on the unique (key, version) index; the caller
    /// retries, and then sees the scope the other one wrote.
    ///
    /// The stored row is read back and parsed as every later read parses it, so a
    /// definition that would not read back fails here, inside the caller's transaction,
    /// instead of breaking every read after commit. It is not cached: the transaction may
    /// still roll back, and SQLite can give a rolled-back row id to the next insert.
    pub async fn insert_next_version(
        &self,
        db: &impl ConnectionTrait,
        definition: &FlowDefinition,
        now: DateTime<Utc>,
    ) -> Result<Result<FlowRecord, FlowScope>, DbErr> {
        let latest: Option<(i32, String)> = flow::Entity::find()
            .select_only()
            .column(flow::Column::Version)
            .column(flow::Column::Scope)
            .filter(flow::Column::Key.eq(&definition.key))
            .order_by_desc(flow::Column::Version)
            .limit(1)
            .into_tuple()
            .one(db)
            .await?;
        if let Some((_, scope)) = &latest {
            let scope = parse_name(scope, FlowScope::parse, "flow scope")?;
            if scope != definition.scope {
                return Ok(Err(scope));
            }
        }
        let latest = latest.map(|(version, _)| version);
        let row = flow::ActiveModel {
            id: NotSet,
            key: Set(definition.key.clone()),
            version: Set(latest.unwrap_or(0) + 1),
            status: Set(FlowStatus::Active.name().into()),
            scope: Set(definition.scope.name().into()),
            // The columns hold the default locale's texts (the definition has them all).
            title: Set(definition.title.resolve(None, definition.default_locale()).to_string()),
            description: Set(definition
                .description
                .as_ref()
                .map(|d| d.resolve(None, definition.default_locale()).to_string())),
            definition: Set(definition.to_json()),
            created_at: Set(now),
        };
        let id = flow::Entity::insert(row).exec(db).await?.last_insert_id;
        let stored = flow::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound(format!("flow row {id} just inserted")))?;
        let definition = parse_stored(&stored)?;
        record_of(stored, definition).map(Ok)
    }

    /// The scope of a flow key, None when no version was ever published.
    pub async fn scope_of(&self, db: &impl ConnectionTrait, key: &str) -> Result<Option<FlowScope>, DbErr> {
        if let Some(scope) = self.scopes.read().ok().and_then(|c| c.get(key).copied()) {
            return Ok(Some(scope));
        }
        let scope: Option<String> = flow::Entity::find()
            .select_only()
            .column(flow::Column::Scope)
            .filter(flow::Column::Key.eq(key))
            .limit(1)
            .into_tuple()
            .one(db)
            .await?;
        let Some(scope) = scope else { return Ok(None) };
        let scope = parse_name(&scope, FlowScope::parse, "flow scope")?;
        if let Ok(mut cache) = self.scopes.write() {
            cache.insert(key.to_string(), scope);
        }
        Ok(Some(scope))
    }

    /// The version new subjects enroll in: the newest ACTIVE one.
    pub async fn latest_active(&self, db: &impl ConnectionTrait, key: &str) -> Result<Option<FlowRecord>, DbErr> {
        let row = flow::Entity::find()
            .filter(flow::Column::Key.eq(key))
            .filter(flow::Column::Status.eq(FlowStatus::Active.name()))
            .order_by_desc(flow::Column::Version)
            .one(db)
            .await?;
        row.map(|r| self.record(r)).transpose()
    }

    /// `latest_active_all`, from memory while the flows epoch stays where it was when it
    /// was read. Every write asks (to enroll in flows with an audience), and flows change
    /// rarely: this saves a query per write. With no epoch (`None`: nothing would tell this
    /// instance of another's change) it always reads.
    pub async fn latest_active_at(
        &self,
        db: &impl ConnectionTrait,
        epoch: Option<u64>,
    ) -> Result<Vec<FlowRecord>, DbErr> {
        let Some(epoch) = epoch else { return self.latest_active_all(db).await };
        if let Ok(cache) = self.active.read()
            && let Some((at, flows)) = cache.as_ref()
            && *at == epoch
        {
            return Ok(flows.clone());
        }
        // Read after taking the epoch: a change heard of meanwhile moves the epoch past
        // this entry, so it is never served.
        let flows = self.latest_active_all(db).await?;
        if let Ok(mut cache) = self.active.write() {
            *cache = Some((epoch, flows.clone()));
        }
        Ok(flows)
    }

    /// The newest ACTIVE version of every flow key. Only ids are read: the versions
    /// themselves are immutable and come from `pinned`, with the status this query just saw.
    pub async fn latest_active_all(&self, db: &impl ConnectionTrait) -> Result<Vec<FlowRecord>, DbErr> {
        let rows: Vec<(i64, String)> = flow::Entity::find()
            .select_only()
            .column(flow::Column::Id)
            .column(flow::Column::Key)
            .filter(flow::Column::Status.eq(FlowStatus::Active.name()))
            .order_by_asc(flow::Column::Key)
            .order_by_desc(flow::Column::Version)
            .into_tuple()
            .all(db)
            .await?;
        let mut latest: Vec<FlowRecord> = Vec::new();
        for (id, key) in rows {
            if latest.last().is_none_or(|l| l.key != key) {
                latest.push(FlowRecord { status: FlowStatus::Active, ..self.pinned(db, id).await? });
            }
        }
        Ok(latest)
    }

    /// A given version, or the newest of any status.
    pub async fn find(
        &self,
        db: &impl ConnectionTrait,
        key: &str,
        version: Option<i32>,
    ) -> Result<Option<FlowRecord>, DbErr> {
        let mut query = flow::Entity::find().filter(flow::Column::Key.eq(key));
        if let Some(v) = version {
            query = query.filter(flow::Column::Version.eq(v));
        }
        let row = query.order_by_desc(flow::Column::Version).one(db).await?;
        row.map(|r| self.record(r)).transpose()
    }

    /// The version an enrollment is pinned to, from memory after the first read: saves a
    /// query on every status read and write. Everything in it is immutable except
    /// `status`, which is as first read here: enrolled subjects follow their version
    /// whatever its status, so these callers never look at it. Use `by_id` for the
    /// current status.
    pub async fn pinned(&self, db: &impl ConnectionTrait, id: i64) -> Result<FlowRecord, DbErr> {
        if let Some(found) = self.pinned.read().ok().and_then(|c| c.get(&id).cloned()) {
            return Ok(found);
        }
        let record = self.by_id(db, id).await?;
        if let Ok(mut cache) = self.pinned.write() {
            cache.insert(id, record.clone());
        }
        Ok(record)
    }

    pub async fn by_id(&self, db: &impl ConnectionTrait, id: i64) -> Result<FlowRecord, DbErr> {
        let row = flow::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound(format!("flow row {id}")))?;
        self.record(row)
    }

    pub async fn by_ids(&self, db: &impl ConnectionTrait, ids: Vec<i64>) -> Result<Vec<FlowRecord>, DbErr> {
        let rows = flow::Entity::find().filter(flow::Column::Id.is_in(ids)).all(db).await?;
        self.records(rows)
    }

    /// Every version of every flow, by key then version.
    pub async fn list(&self, db: &impl ConnectionTrait) -> Result<Vec<FlowRecord>, DbErr> {
        let rows =
            flow::Entity::find().order_by_asc(flow::Column::Key).order_by_asc(flow::Column::Version).all(db).await?;
        self.records(rows)
    }

    pub async fn count(&self, db: &impl ConnectionTrait) -> Result<u64, DbErr> {
        flow::Entity::find().count(db).await
    }

    pub async fn set_status(
        &self,
        db: &impl ConnectionTrait,
        key: &str,
        version: i32,
        status: FlowStatus,
    ) -> Result<Option<FlowRecord>, DbErr> {
        flow::Entity::update_many()
            .col_expr(flow::Column::Status, status.name().into())
            .filter(flow::Column::Key.eq(key))
            .filter(flow::Column::Version.eq(version))
            .exec(db)
            .await?;
        self.find(db, key, Some(version)).await
    }
}

/// A stored definition, parsed as every later read will parse it.
fn parse_stored(row: &flow::Model) -> Result<Arc<FlowDefinition>, DbErr> {
    parse_flow(&row.definition).map(Arc::new).map_err(|problems| {
        DbErr::Custom(format!("stored flow {} v{} no longer parses: {problems:?}", row.key, row.version))
    })
}

fn record_of(row: flow::Model, definition: Arc<FlowDefinition>) -> Result<FlowRecord, DbErr> {
    Ok(FlowRecord {
        id: row.id,
        status: parse_name(&row.status, FlowStatus::parse, "flow status")?,
        scope: parse_name(&row.scope, FlowScope::parse, "flow scope")?,
        key: row.key,
        version: row.version,
        created_at: row.created_at,
        definition,
    })
}
