//! What /metrics reports, in the Prometheus text format: counters and histograms that
//! requests and workers move as they go, and gauges read when the metrics are scraped
//! (the database pool, the webhook backlog). One registry per server, no global state,
//! so servers in one process (the tests) count apart.
//!
//! Label values are bounded: operation types and outcomes come from fixed sets, and an
//! operation's name is a label only once a verified caller has run it successfully, for
//! at most `MAX_OPERATION_NAMES` names of at most `MAX_OPERATION_NAME_BYTES` bytes; any
//! other name counts as `(other)`, so a client sending made-up names cannot grow the
//! output without bound.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Distinct operation names kept as label values.
pub const MAX_OPERATION_NAMES: usize = 200;
/// Longer operation names count as `(other)`.
pub const MAX_OPERATION_NAME_BYTES: usize = 64;
/// The label of an operation without a name.
pub const ANONYMOUS: &str = "(anonymous)";
/// The label of every name not kept (see the module notes).
pub const OTHER: &str = "(other)";

/// Seconds; from a cached status read to a slow analytics query.
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The Prometheus text format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct Metrics {
    registry: Registry,
    /// GraphQL operations by type, name and outcome (`ok` or the first error's code).
    pub requests: IntCounterVec,
    /// Seconds from receipt to response of queries and mutations, by type and name.
    pub latency: HistogramVec,
    /// Subscriptions streaming now.
    pub subscriptions: IntGauge,
    /// Websocket connections open now.
    pub websockets: IntGauge,
    /// Requests and websocket messages refused by the per-caller rate limit.
    pub rate_limited: IntCounter,
    /// Events taken in by trackEvent(s), by status (new, duplicate, rejected).
    pub events: IntCounterVec,
    /// Nudge occurrences the scheduler of this instance decided, by outcome.
    pub nudges: IntCounterVec,
    /// Database pool connections by state (idle, in_use), read when scraped.
    pub pool_connections: IntGaugeVec,
    /// The pool's configured maximum.
    pub pool_max: IntGauge,
    /// Outbox rows not yet turned into webhook deliveries.
    pub outbox_pending: IntGauge,
    /// Age in seconds of the oldest of them (0 when there is none).
    pub outbox_oldest_seconds: Gauge,
    /// Webhook deliveries not finished (pending, sending, or failed and waiting to retry).
    pub deliveries_pending: IntGauge,
    /// How far behind its due time the most overdue of them is, in seconds (0 when none is).
    pub deliveries_overdue_seconds: Gauge,
    /// Operation names that are label values.
    names: Mutex<HashSet<String>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("onramp_graphql_requests_total", "GraphQL operations by type, name and outcome."),
            &["operation_type", "operation_name", "outcome"],
        )
        .expect("metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "onramp_graphql_request_duration_seconds",
                "Seconds to answer GraphQL queries and mutations, by type and name.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation_type", "operation_name"],
        )
        .expect("metric definition");
        let subscriptions =
            IntGauge::new("onramp_graphql_subscriptions_live", "GraphQL subscriptions streaming now.").expect("metric");
        let websockets =
            IntGauge::new("onramp_websocket_connections", "Websocket connections open now.").expect("metric");
        let rate_limited = IntCounter::new(
            "onramp_rate_limited_total",
            "Requests and websocket messages refused by the per-caller rate limit.",
        )
        .expect("metric");
        let events = IntCounterVec::new(
            Opts::new("onramp_events_ingested_total", "Events taken in by trackEvent and trackEvents, by status."),
            &["status"],
        )
        .expect("metric definition");
        let nudges = IntCounterVec::new(
            Opts::new("onramp_nudges_total", "Nudge occurrences this instance's scheduler decided, by outcome."),
            &["outcome"],
        )
        .expect("metric definition");
        let pool_connections = IntGaugeVec::new(
            Opts::new("onramp_db_pool_connections", "Database pool connections by state."),
            &["state"],
        )
        .expect("metric definition");
        let pool_max =
            IntGauge::new("onramp_db_pool_max_connections", "The database pool's maximum size.").expect("metric");
        let outbox_pending = IntGauge::new(
            "onramp_webhook_outbox_pending",
            "Outbox rows (domain events) not yet turned into webhook deliveries.",
        )
        .expect("metric");
        let outbox_oldest_seconds = Gauge::new(
            "onramp_webhook_outbox_oldest_pending_seconds",
            "Age of the oldest outbox row not yet turned into deliveries (0 when none).",
        )
        .expect("metric");
        let deliveries_pending = IntGauge::new(
            "onramp_webhook_deliveries_pending",
            "Webhook deliveries not finished: pending, sending, or failed and waiting to retry.",
        )
        .expect("metric");
        let deliveries_overdue_seconds = Gauge::new(
            "onramp_webhook_deliveries_overdue_seconds",
            "How far behind its due time the most overdue unfinished delivery is (0 when none).",
        )
        .expect("metric");
        let metrics = Metrics {
            registry,
            requests,
            latency,
            subscriptions,
            websockets,
            rate_limited,
            events,
            nudges,
            pool_connections,
            pool_max,
            outbox_pending,
            outbox_oldest_seconds,
            deliveries_pending,
            deliveries_overdue_seconds,
            names: Mutex::new(HashSet::new()),
        };
        let own: [Box<dyn Collector>; 13] = [
            Box::new(metrics.requests.clone()),
            Box::new(metrics.latency.clone()),
            Box::new(metrics.subscriptions.clone()),
            Box::new(metrics.websockets.clone()),
            Box::new(metrics.rate_limited.clone()),
            Box::new(metrics.events.clone()),
            Box::new(metrics.nudges.clone()),
            Box::new(metrics.pool_connections.clone()),
            Box::new(metrics.pool_max.clone()),
            Box::new(metrics.outbox_pending.clone()),
            Box::new(metrics.outbox_oldest_seconds.clone()),
            Box::new(metrics.deliveries_pending.clone()),
            Box::new(metrics.deliveries_overdue_seconds.clone()),
        ];
        for collector in own {
            metrics.register(collector);
        }
        // Known label values start at zero, so they are listed (and rates work) before
        // the first one counts.
        for status in ["new", "duplicate", "rejected"] {
            metrics.events.with_label_values(&[status]);
        }
        for outcome in crate::service::nudge_outcome::ALL {
            metrics.nudges.with_label_values(&[outcome.to_ascii_lowercase()]);
        }
        metrics
    }

    /// Adds collectors made elsewhere (the JWKS cache's). A name registered twice is a
    /// programming error, logged rather than fatal: the metric is then left out.
    pub fn register(&self, collector: Box<dyn Collector>) {
        if let Err(e) = self.registry.register(collector) {
            tracing::error!(error = %e, "a metric could not be registered");
        }
    }

    /// The label for an operation's name (see the module notes). A new name is kept only
    /// when `may_keep` (a verified caller's successful operation).
    pub fn operation_name(&self, name: Option<&str>, may_keep: bool) -> String {
        let Some(name) = name else { return ANONYMOUS.to_string() };
        if name.len() > MAX_OPERATION_NAME_BYTES || !is_graphql_name(name) {
            return OTHER.to_string();
        }
        let Ok(mut names) = self.names.lock() else { return OTHER.to_string() };
        if names.contains(name) || (may_keep && names.len() < MAX_OPERATION_NAMES && names.insert(name.to_string())) {
            name.to_string()
        } else {
            OTHER.to_string()
        }
    }

    /// Counts a finished GraphQL operation; `seconds` for queries and mutations only.
    pub fn record(&self, operation_type: &str, name: &str, outcome: &str, seconds: Option<f64>) {
        self.requests.with_label_values(&[operation_type, name, outcome]).inc();
        if let Some(seconds) = seconds {
            self.latency.with_label_values(&[operation_type, name]).observe(seconds);
        }
    }

    /// Everything, in the text format.
    pub fn render(&self) -> String {
        let mut text = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut text) {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        String::from_utf8(text).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// `[_A-Za-z][_0-9A-Za-z]*`, as every GraphQL name is.
fn is_graphql_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// The outcome label of a response: `ok`, or the first error's code. Errors raised before
/// any resolver (parse, validation) carry no code; the HTTP edge reports them as
/// VALIDATION_FAILED, and so do the metrics.
pub fn outcome(errors: &[async_graphql::ServerError]) -> String {
    let Some(first) = errors.first() else { return "ok".to_string() };
    match first.extensions.as_ref().and_then(|e| e.get("code")) {
        None => crate::error::ErrorCode::ValidationFailed.as_str().to_string(),
        Some(async_graphql::Value::String(code))
            if code.len() <= 32 && code.bytes().all(|b| b == b'_' || b.is_ascii_uppercase()) =>
        {
            code.clone()
        }
        Some(_) => "OTHER".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_are_bounded() {
        let metrics = Metrics::new();
        assert_eq!(metrics.operation_name(None, true), ANONYMOUS);
        assert_eq!(metrics.operation_name(Some("Status"), false), OTHER, "not kept before a success");
        assert_eq!(metrics.operation_name(Some("Status"), true), "Status");
        assert_eq!(metrics.operation_name(Some("Status"), false), "Status", "kept once it succeeded");
        assert_eq!(metrics.operation_name(Some(&"a".repeat(MAX_OPERATION_NAME_BYTES + 1)), true), OTHER);
        assert_eq!(metrics.operation_name(Some("not a name"), true), OTHER);
        for i in 1..MAX_OPERATION_NAMES {
            assert_eq!(metrics.operation_name(Some(&format!("Op{i}")), true), format!("Op{i}"));
        }
        assert_eq!(metrics.operation_name(Some("OneTooMany"), true), OTHER);
        assert_eq!(metrics.operation_name(Some("Op7"), false), "Op7");
    }

    #[test]
    fn outcomes_are_codes_or_ok() {
        assert_eq!(outcome(&[]), "ok");
        let mut coded = async_graphql::ServerError::new("no", None);
        coded.extensions.get_or_insert_with(Default::default).set("code", "FORBIDDEN");
        assert_eq!(outcome(&[coded]), "FORBIDDEN");
        assert_eq!(outcome(&[async_graphql::ServerError::new("parse", None)]), "VALIDATION_FAILED");
        let mut odd = async_graphql::ServerError::new("no", None);
        odd.extensions.get_or_insert_with(Default::default).set("code", "made up by someone");
        assert_eq!(outcome(&[odd]), "OTHER");
    }
}
