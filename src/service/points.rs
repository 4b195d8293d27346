//! Points: every award is a ledger entry.

use super::Onramp;
use crate::domain::Owner;
use crate::error::AppResult;
use crate::persistence::points::{self, PointsEntry};
use crate::persistence::{begin_read, subjects};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PointsBalance {
    pub total: i64,
    pub entries: Vec<PointsEntry>,
}

impl Onramp {
    /// A user's or workspace's points: the total and every entry, oldest first.
    pub async fn points(&self, owner: &Owner) -> AppResult<PointsBalance> {
        let txn = begin_read(&self.db).await?;
        let entries = match subjects::find(&txn, &owner.key()).await? {
            Some(subject) => points::entries(&txn, subject.id).await?,
            None => Vec::new(),
        };
        txn.commit().await?;
        Ok(PointsBalance { total: entries.iter().fold(0i64, |total, e| total.saturating_add(e.amount)), entries })
    }
}
