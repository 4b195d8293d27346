//! Typed configuration from flags and environment variables. Built once at start-up and
//! passed in; nothing reads the environment after that.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// The embedded database used when DATABASE_URL is not set.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://onramp.db?mode=rwc";

/// A well-known HS256 secret for development only: start-up refuses it in production.
pub const DEVELOPMENT_SECRET: &str = "onramp-development-secret-do-not-use-in-production";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Zero configuration: a development JWT secret, a demo flow, GraphiQL.
    Development,
    /// Refuses to start without a JWT key.
    Production,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyAlgorithm {
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
    #[value(name = "EdDSA")]
    EdDsa,
}

#[derive(Clone, Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL (postgres://...) or SQLite (sqlite://FILE?mode=rwc) database.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    pub database_url: String,

    /// Connections in the pool.
    #[arg(long, env = "ONRAMP_DB_MAX_CONNECTIONS", default_value_t = 16, global = true)]
    pub db_max_connections: u32,
}

#[derive(Clone, Debug, Args)]
pub struct JwtArgs {
    /// HS256 shared secret.
    #[arg(long, env = "ONRAMP_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    /// Public key (a PEM file path, or the PEM itself) for RS256, ES256 or EdDSA tokens.
    #[arg(long, env = "ONRAMP_JWT_PUBLIC_KEY", global = true)]
    pub jwt_public_key: Option<String>,

    /// Algorithm of the public key.
    #[arg(long, env = "ONRAMP_JWT_ALGORITHM", global = true)]
    pub jwt_algorithm: Option<KeyAlgorithm>,

    /// Private key (PEM path or PEM), only for `onramp token` with a public-key setup.
    #[arg(long, env = "ONRAMP_JWT_PRIVATE_KEY", hide_env_values = true, global = true)]
    pub jwt_private_key: Option<String>,

    /// Required `iss` claim, when set.
    #[arg(long, env = "ONRAMP_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long, env = "ONRAMP_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,

    /// The claim that carries the role: user, admin or service (a string or a list).
    #[arg(long, env = "ONRAMP_ROLE_CLAIM", default_value = "role", global = true)]
    pub role_claim: String,

    /// The claim that lists the workspaces a user is a member of (a string or a list of
    /// strings). Workspace-scoped flows are readable and writable only by members.
    #[arg(long, env = "ONRAMP_WORKSPACE_CLAIM", default_value = "workspaces", global = true)]
    pub workspace_claim: String,

    /// Development or production. Defaults to development on the embedded SQLite database
    /// and to production when DATABASE_URL is set.
    #[arg(long, env = "ONRAMP_MODE", global = true)]
    pub mode: Option<Mode>,

    #[command(flatten)]
    pub jwks: JwksArgs,
}

/// Keys from an identity provider's JWKS URL, beside or instead of a static key (see
/// `auth::jwks`).
#[derive(Clone, Debug, Args)]
pub struct JwksArgs {
    /// The identity provider's JWKS URL (RS256, ES256 and EdDSA keys, found by `kid`).
    #[arg(long, env = "ONRAMP_JWT_JWKS_URL", global = true)]
    pub jwt_jwks_url: Option<String>,
    /// Allow a plain http JWKS URL (default: only in development mode).
    #[arg(long, env = "ONRAMP_JWT_JWKS_ALLOW_HTTP", global = true)]
    pub jwt_jwks_allow_http: Option<bool>,
    /// Seconds a JWKS fetch may take, body included.
    #[arg(long, env = "ONRAMP_JWT_JWKS_TIMEOUT", default_value_t = 5, global = true)]
    pub jwt_jwks_timeout: u64,
    /// Largest JWKS body in bytes.
    #[arg(long, env = "ONRAMP_JWT_JWKS_MAX_BYTES", default_value_t = 256 * 1024, global = true)]
    pub jwt_jwks_max_bytes: usize,
    /// Most keys in the JWKS (a larger set is refused and the cached keys kept).
    #[arg(long, env = "ONRAMP_JWT_JWKS_MAX_KEYS", default_value_t = 100, global = true)]
    pub jwt_jwks_max_keys: usize,
    /// Milliseconds at least between two JWKS fetches, whatever asks for them (a token
    /// with an unknown kid, an expired max-age).
    #[arg(long, env = "ONRAMP_JWT_JWKS_MIN_REFRESH_MS", default_value_t = 10_000, global = true)]
    pub jwt_jwks_min_refresh_ms: u64,
}

impl Default for JwksArgs {
    fn default() -> Self {
        JwksArgs {
            jwt_jwks_url: None,
            jwt_jwks_allow_http: None,
            jwt_jwks_timeout: 5,
            jwt_jwks_max_bytes: 256 * 1024,
            jwt_jwks_max_keys: 100,
            jwt_jwks_min_refresh_ms: 10_000,
        }
    }
}

impl JwksArgs {
    /// The JWKS settings, when a URL is configured.
    pub fn settings(&self, mode: Mode) -> Result<Option<crate::auth::JwksSettings>, String> {
        let Some(url) = &self.jwt_jwks_url else { return Ok(None) };
        let allow_http = self.jwt_jwks_allow_http.unwrap_or(mode == Mode::Development);
        let url = crate::auth::JwksSettings::check_url(url, allow_http)?;
        if self.jwt_jwks_timeout == 0 {
            return Err("ONRAMP_JWT_JWKS_TIMEOUT is at least 1 second".into());
        }
        if self.jwt_jwks_min_refresh_ms < 100 {
            return Err("ONRAMP_JWT_JWKS_MIN_REFRESH_MS is at least 100".into());
        }
        if self.jwt_jwks_max_keys == 0 || self.jwt_jwks_max_bytes == 0 {
            return Err("ONRAMP_JWT_JWKS_MAX_KEYS and ONRAMP_JWT_JWKS_MAX_BYTES are at least 1".into());
        }
        Ok(Some(crate::auth::JwksSettings {
            url,
            allow_http,
            timeout: std::time::Duration::from_secs(self.jwt_jwks_timeout),
            max_bytes: self.jwt_jwks_max_bytes,
            max_keys: self.jwt_jwks_max_keys,
            min_refresh: std::time::Duration::from_millis(self.jwt_jwks_min_refresh_ms),
        }))
    }
}

#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ONRAMP_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Seconds a websocket may wait before sending connection_init (then it is closed
    /// with 4408).
    #[arg(long, env = "ONRAMP_WS_INIT_TIMEOUT", default_value_t = 10)]
    pub ws_init_timeout: u64,

    /// Do not publish the demo flow on an empty development database.
    #[arg(long, env = "ONRAMP_NO_DEMO_FLOW")]
    pub no_demo_flow: bool,

    /// Bearer token that /metrics requires (at least 16 bytes). Without it, /metrics is
    /// open in development and takes only admin tokens in production.
    #[arg(long, env = "ONRAMP_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub webhooks: WebhookArgs,

    #[command(flatten)]
    pub nudges: NudgeArgs,
}

/// The nudge scheduler (see `nudges::NudgeSettings`).
#[derive(Clone, Debug, Args)]
pub struct NudgeArgs {
    /// Do not run the nudge scheduler on this instance (other instances sharing the
    /// database send nudges).
    #[arg(long, env = "ONRAMP_NUDGE_NO_SCHEDULER")]
    pub no_nudge_scheduler: bool,
    /// Nudges per subject in any 24 hours, across all flows (0: no cap).
    #[arg(long, env = "ONRAMP_NUDGE_CAP_DAY", default_value_t = 1)]
    pub nudge_cap_day: u32,
    /// Nudges per subject in any 7 days, across all flows (0: no cap).
    #[arg(long, env = "ONRAMP_NUDGE_CAP_WEEK", default_value_t = 3)]
    pub nudge_cap_week: u32,
    /// Quiet hours in each subject's time zone (its `timezone` attribute, default UTC),
    /// HH:MM-HH:MM; `off` for none.
    #[arg(long, env = "ONRAMP_NUDGE_QUIET_HOURS", default_value = "21:00-08:00")]
    pub nudge_quiet_hours: String,
    /// Milliseconds between looks for due nudges (an idle look is one indexed query).
    #[arg(long, env = "ONRAMP_NUDGE_POLL_MS", default_value_t = 5000)]
    pub nudge_poll_ms: u64,
    /// Due nudges claimed and decided per transaction (1 to 5,000).
    #[arg(long, env = "ONRAMP_NUDGE_BATCH", default_value_t = 500)]
    pub nudge_batch: u64,
    /// Ticks run at once on PostgreSQL (1 to 16; SQLite runs one).
    #[arg(long, env = "ONRAMP_NUDGE_WORKERS", default_value_t = crate::nudges::DEFAULT_WORKERS)]
    pub nudge_workers: usize,
}

impl NudgeArgs {
    pub fn settings(&self) -> Result<crate::nudges::NudgeSettings, String> {
        use crate::domain::nudges::{Caps, QuietHours};
        let quiet_hours = match self.nudge_quiet_hours.trim() {
            "off" | "" => None,
            window => Some(QuietHours::parse(window)?),
        };
        Ok(crate::nudges::NudgeSettings {
            caps: Caps { per_day: self.nudge_cap_day, per_week: self.nudge_cap_week },
            quiet_hours,
            poll_interval: std::time::Duration::from_millis(self.nudge_poll_ms.max(10)),
            batch: self.nudge_batch.clamp(1, 5_000),
            workers: self.nudge_workers.clamp(1, 16),
            ..crate::nudges::NudgeSettings::default()
        })
    }
}

/// Webhook delivery (see `webhooks::WebhookSettings` for what each one does).
#[derive(Clone, Debug, Args)]
pub struct WebhookArgs {
    /// Do not run the webhook dispatcher on this instance (other instances sharing the
    /// database deliver).
    #[arg(long, env = "ONRAMP_WEBHOOK_NO_DISPATCHER")]
    pub no_webhook_dispatcher: bool,
    /// Seconds one attempt may take, response included.
    #[arg(long, env = "ONRAMP_WEBHOOK_TIMEOUT", default_value_t = 15)]
    pub webhook_timeout: u64,
    /// Seconds before each attempt, the first included, separated by commas.
    #[arg(long, env = "ONRAMP_WEBHOOK_RETRY_SCHEDULE", default_value = "0,5,300,1800,7200,18000,36000,36000")]
    pub webhook_retry_schedule: String,
    /// Seconds an endpoint may fail every attempt before it is disabled (default 5 days).
    #[arg(long, env = "ONRAMP_WEBHOOK_DISABLE_AFTER", default_value_t = 5 * 86_400)]
    pub webhook_disable_after: u64,
    /// Seconds a rotated-out secret keeps signing beside the new one (default 24 h).
    #[arg(long, env = "ONRAMP_WEBHOOK_SECRET_OVERLAP", default_value_t = 86_400)]
    pub webhook_secret_overlap: u64,
    /// Days finished deliveries and delivered outbox rows are kept (replay reaches this far).
    #[arg(long, env = "ONRAMP_WEBHOOK_RETENTION_DAYS", default_value_t = 30)]
    pub webhook_retention_days: u64,
    /// Allow endpoints on loopback, private and link-local addresses (cloud metadata
    /// addresses stay refused). Default: only in development mode, where the receiver
    /// under development is usually on this machine.
    #[arg(long, env = "ONRAMP_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: Option<bool>,
    /// Allow plain http endpoints (default: only in development mode).
    #[arg(long, env = "ONRAMP_WEBHOOK_ALLOW_HTTP")]
    pub webhook_allow_http: Option<bool>,
    /// Attempts in flight at once on this instance.
    #[arg(long, env = "ONRAMP_WEBHOOK_CONCURRENCY", default_value_t = 64)]
    pub webhook_concurrency: usize,
    /// Attempts in flight at once to one endpoint.
    #[arg(long, env = "ONRAMP_WEBHOOK_ENDPOINT_CONCURRENCY", default_value_t = 16)]
    pub webhook_endpoint_concurrency: usize,
    /// Milliseconds between looks for due retries and other instances' events.
    #[arg(long, env = "ONRAMP_WEBHOOK_POLL_MS", default_value_t = 1000)]
    pub webhook_poll_ms: u64,
}

/// The shortest metrics token taken.
pub const MIN_METRICS_TOKEN_BYTES: usize = 16;

impl ServeArgs {
    /// Who may read /metrics: with a token, whoever sends it (and admin tokens); without
    /// one, anyone in development and admin tokens only in production.
    pub fn metrics_access(&self, mode: Mode) -> Result<crate::MetricsAccess, String> {
        if let Some(token) = &self.metrics_token
            && token.len() < MIN_METRICS_TOKEN_BYTES
        {
            return Err(format!("ONRAMP_METRICS_TOKEN is at least {MIN_METRICS_TOKEN_BYTES} bytes"));
        }
        Ok(crate::MetricsAccess {
            token: self.metrics_token.clone(),
            open: self.metrics_token.is_none() && mode == Mode::Development,
        })
    }
}

impl WebhookArgs {
    pub fn settings(&self, mode: Mode) -> Result<crate::webhooks::WebhookSettings, String> {
        use std::time::Duration;

        use crate::domain::webhooks::{AddressPolicy, DeliveryPolicy, RetrySchedule};

        let d = crate::webhooks::WebhookSettings::default();
        if self.webhook_timeout == 0 {
            return Err("ONRAMP_WEBHOOK_TIMEOUT is at least 1 second".into());
        }
        let timeout = Duration::from_secs(self.webhook_timeout);
        Ok(crate::webhooks::WebhookSettings {
            policy: DeliveryPolicy {
                schedule: RetrySchedule::parse(&self.webhook_retry_schedule)
                    .map_err(|e| format!("ONRAMP_WEBHOOK_RETRY_SCHEDULE: {e}"))?,
                disable_after: Duration::from_secs(self.webhook_disable_after),
                ..d.policy
            },
            address: AddressPolicy {
                allow_private: self.webhook_allow_private.unwrap_or(mode == Mode::Development),
                allow_http: self.webhook_allow_http.unwrap_or(mode == Mode::Development),
            },
            timeout,
            secret_overlap: Duration::from_secs(self.webhook_secret_overlap),
            retention: Duration::from_secs(self.webhook_retention_days.saturating_mul(86_400)),
            concurrency: self.webhook_concurrency.max(1),
            endpoint_concurrency: self.webhook_endpoint_concurrency.max(1),
            poll_interval: Duration::from_millis(self.webhook_poll_ms.max(10)),
            // Room for an attempt that waits behind others for its endpoint's slot: an
            // instance holds up to four rounds of an endpoint's concurrency. An attempt
            // that would outlive its lease is given back instead of sent, so a short lease
            // costs a re-claim, never an overlap; and a dead instance's claims come back
            // after it (65 s at the default timeout).
            lease: timeout * 4 + Duration::from_secs(5),
            ..d
        })
    }
}

/// Every limit, as flags and environment variables; defaults are `Limits::default()`
/// and `ServerLimits::default()` (a value left unset keeps its default).
#[derive(Clone, Debug, Default, Args)]
pub struct LimitArgs {
    /// Largest /graphql request body in bytes (default 1 MiB).
    #[arg(long, env = "ONRAMP_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest websocket message in bytes (default 1 MiB).
    #[arg(long, env = "ONRAMP_MAX_WS_MESSAGE_BYTES")]
    pub max_ws_message_bytes: Option<usize>,
    /// Deepest bracket nesting in a GraphQL document (default 64).
    #[arg(long, env = "ONRAMP_MAX_QUERY_NESTING")]
    pub max_query_nesting: Option<usize>,
    /// Deepest GraphQL selection (default 16).
    #[arg(long, env = "ONRAMP_MAX_QUERY_DEPTH")]
    pub max_query_depth: Option<usize>,
    /// Highest GraphQL complexity (default 5000).
    #[arg(long, env = "ONRAMP_MAX_QUERY_COMPLEXITY")]
    pub max_query_complexity: Option<usize>,
    /// Live subscriptions per websocket connection (default 100).
    #[arg(long, env = "ONRAMP_MAX_SUBSCRIPTIONS_PER_CONNECTION")]
    pub max_subscriptions_per_connection: Option<usize>,
    /// Requests per second one caller may sustain (default 200).
    #[arg(long, env = "ONRAMP_RATE_LIMIT_PER_SECOND")]
    pub rate_limit_per_second: Option<f64>,
    /// Requests one caller may send in a burst (default 400).
    #[arg(long, env = "ONRAMP_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<f64>,
    /// Allow introspection for admin tokens in production.
    #[arg(long, env = "ONRAMP_ADMIN_INTROSPECTION")]
    pub admin_introspection: bool,
    /// Deepest JSON value taken in (default 32; at most 100 whatever is set).
    #[arg(long, env = "ONRAMP_MAX_JSON_DEPTH")]
    pub max_json_depth: Option<usize>,
    /// Largest step metadata in bytes (default 16 KiB).
    #[arg(long, env = "ONRAMP_MAX_METADATA_BYTES")]
    pub max_metadata_bytes: Option<usize>,
    /// Largest attributes object in bytes (default 64 KiB).
    #[arg(long, env = "ONRAMP_MAX_ATTRIBUTES_BYTES")]
    pub max_attributes_bytes: Option<usize>,
    /// Largest event properties in bytes (default 32 KiB).
    #[arg(long, env = "ONRAMP_MAX_EVENT_PROPERTIES_BYTES")]
    pub max_event_properties_bytes: Option<usize>,
    /// Largest flow definition in bytes (default 1 MiB).
    #[arg(long, env = "ONRAMP_MAX_DEFINITION_BYTES")]
    pub max_definition_bytes: Option<usize>,
    /// Longest subject, workspace or event id in bytes (default 256).
    #[arg(long, env = "ONRAMP_MAX_ID_BYTES")]
    pub max_id_bytes: Option<usize>,
    /// Longest flow, step or experiment key in bytes (default 128).
    #[arg(long, env = "ONRAMP_MAX_KEY_BYTES")]
    pub max_key_bytes: Option<usize>,
    /// Most steps in one flow (default 500).
    #[arg(long, env = "ONRAMP_MAX_STEPS_PER_FLOW")]
    pub max_steps_per_flow: Option<usize>,
    /// Most dependsOn entries of one step (default 64).
    #[arg(long, env = "ONRAMP_MAX_DEPENDS_ON")]
    pub max_depends_on: Option<usize>,
    /// Most nodes in one condition (default 256).
    #[arg(long, env = "ONRAMP_MAX_CONDITION_NODES")]
    pub max_condition_nodes: Option<usize>,
    /// Deepest condition (default 16).
    #[arg(long, env = "ONRAMP_MAX_CONDITION_DEPTH")]
    pub max_condition_depth: Option<usize>,
    /// Most points one step may award (default 1000000).
    #[arg(long, env = "ONRAMP_MAX_POINTS_PER_STEP")]
    pub max_points_per_step: Option<i64>,
}

impl LimitArgs {
    pub fn product(&self) -> crate::domain::Limits {
        let d = crate::domain::Limits::default();
        crate::domain::Limits {
            json_depth: self.max_json_depth.unwrap_or(d.json_depth),
            metadata_bytes: self.max_metadata_bytes.unwrap_or(d.metadata_bytes),
            attributes_bytes: self.max_attributes_bytes.unwrap_or(d.attributes_bytes),
            event_properties_bytes: self.max_event_properties_bytes.unwrap_or(d.event_properties_bytes),
            definition_bytes: self.max_definition_bytes.unwrap_or(d.definition_bytes),
            id_bytes: self.max_id_bytes.unwrap_or(d.id_bytes),
            key_bytes: self.max_key_bytes.unwrap_or(d.key_bytes),
            steps_per_flow: self.max_steps_per_flow.unwrap_or(d.steps_per_flow),
            depends_on_per_step: self.max_depends_on.unwrap_or(d.depends_on_per_step),
            condition_nodes: self.max_condition_nodes.unwrap_or(d.condition_nodes),
            condition_depth: self.max_condition_depth.unwrap_or(d.condition_depth),
            points_per_step: self.max_points_per_step.unwrap_or(d.points_per_step),
        }
    }

    pub fn server(&self) -> ServerLimits {
        let d = ServerLimits::default();
        ServerLimits {
            body_bytes: self.max_body_bytes.unwrap_or(d.body_bytes),
            ws_message_bytes: self.max_ws_message_bytes.unwrap_or(d.ws_message_bytes),
            query_nesting: self.max_query_nesting.unwrap_or(d.query_nesting),
            query_depth: self.max_query_depth.unwrap_or(d.query_depth),
            query_complexity: self.max_query_complexity.unwrap_or(d.query_complexity),
            subscriptions_per_connection: self
                .max_subscriptions_per_connection
                .unwrap_or(d.subscriptions_per_connection),
            rate_per_second: self.rate_limit_per_second.unwrap_or(d.rate_per_second),
            rate_burst: self.rate_limit_burst.unwrap_or(d.rate_burst),
            admin_introspection: self.admin_introspection,
        }
    }
}

impl JwtArgs {
    pub fn mode(&self, database_url: &str) -> Mode {
        self.mode.unwrap_or(if database_url == DEFAULT_DATABASE_URL { Mode::Development } else { Mode::Production })
    }
}

/// Reads a PEM given inline or as a file path.
pub fn read_pem(value: &str) -> std::io::Result<Vec<u8>> {
    if value.trim_start().starts_with("-----BEGIN") {
        Ok(value.as_bytes().to_vec())
    } else {
        std::fs::read(PathBuf::from(value))
    }
}

/// Transport limits, checked at the HTTP and websocket edge before any work is done.
/// Defaults are documented in the README's "Limits and security" section.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerLimits {
    /// Largest request body on /graphql (413 beyond it, checked before it is read).
    pub body_bytes: usize,
    /// Largest websocket message (the connection closes with 1009 beyond it).
    pub ws_message_bytes: usize,
    /// Deepest nesting of brackets, braces and parentheses in a GraphQL document,
    /// checked before it is parsed.
    pub query_nesting: usize,
    /// GraphQL selection depth.
    pub query_depth: usize,
    /// GraphQL complexity: every field costs 1, database-backed fields more.
    pub query_complexity: usize,
    /// Live subscriptions on one websocket connection.
    pub subscriptions_per_connection: usize,
    /// Requests per second one caller (subject, or address when anonymous) may sustain.
    pub rate_per_second: f64,
    /// Requests one caller may send at once before the rate applies.
    pub rate_burst: f64,
    /// Introspection for admin callers in production (it is always on in development,
    /// and never for other callers in production).
    pub admin_introspection: bool,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            body_bytes: 1024 * 1024,
            ws_message_bytes: 1024 * 1024,
            query_nesting: 64,
            query_depth: 16,
            query_complexity: 5_000,
            subscriptions_per_connection: 100,
            rate_per_second: 200.0,
            rate_burst: 400.0,
            admin_introspection: false,
        }
    }
}

#[cfg(test)]
mod webhook_tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        webhooks: WebhookArgs,
    }

    fn settings(args: &[&str], mode: Mode) -> Result<crate::webhooks::WebhookSettings, String> {
        let cli =
            Cli::try_parse_from(std::iter::once("onramp").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        cli.webhooks.settings(mode)
    }

    #[test]
    fn production_allows_public_https_only_unless_told_otherwise() {
        let strict = settings(&[], Mode::Production).unwrap();
        assert!(!strict.address.allow_private && !strict.address.allow_http);
        let dev = settings(&[], Mode::Development).unwrap();
        assert!(dev.address.allow_private && dev.address.allow_http);
        let told = settings(&["--webhook-allow-private", "true", "--webhook-allow-http", "true"], Mode::Production);
        let told = told.unwrap();
        assert!(told.address.allow_private && told.address.allow_http);
    }

    #[derive(Parser)]
    struct ServeCli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn metrics_access(args: &[&str], mode: Mode) -> Result<crate::MetricsAccess, String> {
        let cli = ServeCli::try_parse_from(std::iter::once("onramp").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.serve.metrics_access(mode)
    }

    #[test]
    fn metrics_are_open_only_in_development_and_a_token_must_be_long() {
        assert!(metrics_access(&[], Mode::Development).unwrap().open);
        let production = metrics_access(&[], Mode::Production).unwrap();
        assert!(!production.open && production.token.is_none(), "production: admin tokens only");
        let token = metrics_access(&["--metrics-token", "0123456789abcdef"], Mode::Development).unwrap();
        assert!(!token.open, "a token closes development's open door too");
        assert_eq!(token.token.as_deref(), Some("0123456789abcdef"));
        assert!(metrics_access(&["--metrics-token", "short"], Mode::Production).is_err());
    }

    #[test]
    fn the_defaults_are_the_documented_ones_and_bad_values_are_refused() {
        let d = settings(&[], Mode::Production).unwrap();
        assert_eq!(d.timeout, std::time::Duration::from_secs(15));
        assert_eq!(d.policy.schedule, crate::domain::webhooks::RetrySchedule::default());
        assert_eq!(d.policy.disable_after, std::time::Duration::from_secs(5 * 86_400));
        assert_eq!(d.secret_overlap, std::time::Duration::from_secs(86_400));
        assert_eq!(d.retention, std::time::Duration::from_secs(30 * 86_400));
        assert!(d.lease >= d.timeout * 2, "an attempt that waited for its slot still fits in the lease");
        assert!(settings(&["--webhook-retry-schedule", "0,x"], Mode::Production).is_err());
        assert!(settings(&["--webhook-timeout", "0"], Mode::Production).is_err());
    }
}
