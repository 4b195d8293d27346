//! Integration tests: the real HTTP server, in-process on port 0, one fresh database per
//! test so they run in parallel. Every test marked `both!` runs on SQLite and on
//! PostgreSQL (TEST_DATABASE_URL, default the local server); PostgreSQL tests never skip.

mod common;

mod all_or_nothing;
mod analytics;
mod audiences;
mod auth;
mod cancellation;
mod client_typescript;
mod console;
mod demo_data;
mod errors;
mod events;
mod experiments;
mod flow_files;
mod flows;
mod fuzz;
mod graphiql;
mod hardening;
mod http_spec;
mod jwks;
mod limits;
mod metrics;
mod nudge_processes;
mod nudges;
mod points;
mod progress;
mod readme;
mod rollup;
mod roundtrip;
mod schema;
mod stored_events;
mod subscriptions;
mod versions;
mod webhook_processes;
mod webhooks;
mod workspaces;
