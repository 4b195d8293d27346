//! onramp: a self-hosted onboarding engine. This crate root assembles the layers into a
//! router, so `main` and the integration tests start the very same server.

pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo_data;
pub mod domain;
pub mod error;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod nudges;
pub mod persistence;
pub mod realtime;
pub mod service;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use auth::JwtKeys;
use config::ServerLimits;
use graphql::OnrampSchema;
use http::rate_limit::RateLimiter;
use service::Onramp;

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    pub onramp: Arc<Onramp>,
    pub schema: OnrampSchema,
    pub keys: Arc<JwtKeys>,
    /// Serve GraphiQL at GET /graphql.
    pub graphiql: bool,
    /// How long a websocket may wait before sending connection_init.
    pub ws_init_timeout: Duration,
    /// Transport limits (body, websocket, query shape, rate).
    pub limits: ServerLimits,
    /// One bucket per caller, shared by HTTP requests and websocket messages.
    pub rate_limiter: Arc<RateLimiter>,
    /// Large GraphQL documents parsed at once, each on a blocking thread (see
    /// `http::execute`): half the cores, so the rest always serve everyone else.
    pub heavy: Arc<tokio::sync::Semaphore>,
    /// Who may read /metrics.
    pub metrics_access: MetricsAccess,
}

/// Who may read /metrics: admin tokens always; with a metrics token, whoever sends it
/// (a scraper); `open`, anyone (development).
#[derive(Clone, Default)]
pub struct MetricsAccess {
    pub token: Option<String>,
    pub open: bool,
}

fn rate_limiter(onramp: &Onramp, limits: &ServerLimits) -> RateLimiter {
    RateLimiter::new(limits.rate_per_second, limits.rate_burst).counting(onramp.metrics().rate_limited.clone())
}

impl AppState {
    pub fn new(onramp: Onramp, keys: JwtKeys, graphiql: bool) -> Self {
        let onramp = Arc::new(onramp);
        let limits = ServerLimits::default();
        if let Some(jwks) = keys.jwks() {
            onramp.metrics().register(Box::new(jwks.fetches.clone()));
            onramp.metrics().register(Box::new(jwks.cached_keys.clone()));
        }
        AppState {
            schema: graphql::build_schema(onramp.clone(), &limits, graphiql),
            rate_limiter: Arc::new(rate_limiter(&onramp, &limits)),
            onramp,
            keys: Arc::new(keys),
            graphiql,
            ws_init_timeout: Duration::from_secs(10),
            metrics_access: MetricsAccess::default(),
            heavy: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            )),
            limits,
        }
    }

    /// Sets the transport limits; the schema is rebuilt so its depth, complexity and
    /// nesting limits are the configured ones.
    pub fn with_limits(mut self, limits: ServerLimits) -> Self {
        self.schema = graphql::build_schema(self.onramp.clone(), &limits, self.graphiql);
        self.rate_limiter = Arc::new(rate_limiter(&self.onramp, &limits));
        self.limits = limits;
        self
    }

    /// Who may read /metrics.
    pub fn with_metrics_access(mut self, access: MetricsAccess) -> Self {
        self.metrics_access = access;
        self
    }

    pub fn with_ws_init_timeout(mut self, timeout: Duration) -> Self {
        self.ws_init_timeout = timeout;
        self
    }
}
