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
