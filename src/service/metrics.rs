//! Reading the gauges that /metrics takes from the database when it is scraped.

use std::time::Duration;

use super::Onramp;
use crate::persistence::health;

/// The backlog queries of one scrape may take this long; past it, the last readings stay.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(2);

impl Onramp {
    /// Every metric in the Prometheus text format, with the pool's use and the webhook
    /// backlog read now.
    pub async fn render_metrics(&self) -> String {
        let metrics = self.metrics();
        if let Some(pool) = health::pool_usage(&self.db) {
            let idle = i64::from(pool.idle);
            metrics.pool_connections.with_label_values(&["idle"]).set(idle);
            metrics.pool_connections.with_label_values(&["in_use"]).set(i64::from(pool.open) - idle);
            metrics.pool_max.set(i64::from(pool.max));
        }
        match tokio::time::timeout(BACKLOG_TIMEOUT, health::backlog(&self.db)).await {
            Ok(Ok(backlog)) => {
                let now = super::now();
                let seconds_since = |at: Option<chrono::DateTime<chrono::Utc>>| {
                    at.map_or(0.0, |at| ((now - at).num_milliseconds() as f64 / 1000.0).max(0.0))
                };
                metrics.outbox_pending.set(backlog.outbox_pending);
                metrics.outbox_oldest_seconds.set(seconds_since(backlog.outbox_oldest));
                metrics.deliveries_pending.set(backlog.deliveries_pending);
                metrics.deliveries_overdue_seconds.set(seconds_since(backlog.deliveries_next_due));
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "reading the webhook backlog for /metrics failed"),
            Err(_) => tracing::warn!("reading the webhook backlog for /metrics timed out"),
        }
        metrics.render()
    }
}
