//! The transactional outbox: domain events written with the change they describe.

use chrono::{DateTime, Utc};
use entity::outbox;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    EntityTrait, QueryTrait,
};
use serde_json::Value;

use super::writes::Writes;

pub struct OutboxEntry {
    pub kind: &'static str,
    pub subject_id: String,
    pub flow_key: String,
    pub flow_version: i32,
    pub step_key: Option<String>,
    pub payload: Value,
}

/// Queues the entries' insert, in order; ids grow, so delivery can follow commit order.
pub fn append(writes: &mut Writes, entries: Vec<OutboxEntry>, now: DateTime<Utc>) {
    let rows = entries.into_iter().map(|e| outbox::ActiveModel {
        id: NotSet,
        kind: Set(e.kind.to_string()),
        subject_id: Set(e.subject_id),
        flow_key: Set(e.flow_key),
        flow_version: Set(e.flow_version),
        step_key: Set(e.step_key),
        payload: Set(e.payload),
        created_at: Set(now),
        delivered_at: Set(None),
    });
    // Few statements for all, in order: both backends insert VALUES rows in the order
    // listed, so ids still follow the order given.
    for rows in super::writes::row_chunks(rows) {
        writes.push(&outbox::Entity::insert_many(rows).into_query());
    }
}
