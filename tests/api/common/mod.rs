//! The test harness: a server per test on its own database, and a small GraphQL client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use onramp::auth::{JwtKeys, Role};
use onramp::config::{JwtArgs, Mode, ServerLimits};
use onramp::nudges::{NudgeSettings, SchedulerHandle};
use onramp::service::Onramp;
use onramp::webhooks::{DispatcherHandle, WebhookSettings};
use onramp::{AppState, http, persistence};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{Value, json};

/// At least 32 bytes: production refuses a shorter HS256 secret.
pub const TEST_SECRET: &str = "integration-test-secret-of-32-bytes-or-more";
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Runs each named test function on both backends: `both!(name);` makes
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::TestApp::sqlite().await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::TestApp::postgres().await).await;
                }
            }
        )*
    };
}

/// Like `both!`, on a server started with the limits `$limits()` returns:
/// `both_with!(low_rate => name);`.
#[macro_export]
macro_rules! both_with {
    ($limits:ident => $($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::TestApp::sqlite_with(super::$limits()).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::TestApp::postgres_with(super::$limits()).await).await;
                }
            }
        )*
    };
}

/// Like `both!`, on a server that runs a webhook dispatcher with the settings
/// `$settings()` returns: `both_webhooks!(settings => name);`.
#[macro_export]
macro_rules! both_webhooks {
    ($settings:ident => $($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::TestApp::sqlite_with_webhooks(super::$settings()).await).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::TestApp::postgres_with_webhooks(super::$settings()).await).await;
                }
            }
        )*
    };
}

/// The limits the harness serves with: the defaults, with a rate limit high enough that
/// tests firing many requests as one subject are not throttled (the rate limit has its
/// own tests with a low one).
pub fn test_limits() -> ServerLimits {
    ServerLimits { rate_per_second: 100_000.0, rate_burst: 100_000.0, ..ServerLimits::default() }
}

pub enum Backend {
    Sqlite { path: std::path::PathBuf },
    Postgres { admin_url: String, name: String },
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub keys: Arc<JwtKeys>,
    /// A direct connection, for assertions on what was stored.
    pub db: DatabaseConnection,
    backend: Backend,
    /// The database the server runs on.
    url: String,
    /// The webhook dispatcher, when the server runs one.
    pub dispatcher: Option<DispatcherHandle>,
    /// Its settings (their clock moves the server's).
    pub webhooks: Option<WebhookSettings>,
    /// The nudge scheduler, when the server runs one.
    pub scheduler: Option<SchedulerHandle>,
    /// Its settings: their clock is the server's time (writes and scheduler).
    pub nudges: Option<NudgeSettings>,
}

/// Another server on a test's database, with a dispatcher of its own.
pub struct Instance {
    pub addr: SocketAddr,
    pub dispatcher: DispatcherHandle,
}

/// The claim the test server reads workspace membership from.
pub const WORKSPACE_CLAIM: &str = "https://onramp.test/workspaces";

pub fn jwt_args() -> JwtArgs {
    JwtArgs {
        jwt_secret: Some(TEST_SECRET.into()),
        jwt_public_key: None,
        jwt_algorithm: None,
        jwt_private_key: None,
        jwt_issuer: None,
        jwt_audience: None,
        role_claim: "role".into(),
        // Not the default, so the tests show the claim is configurable.
        workspace_claim: WORKSPACE_CLAIM.into(),
        mode: Some(Mode::Production),
        jwks: Default::default(),
    }
}

impl TestApp {
    pub async fn sqlite() -> TestApp {
        TestApp::sqlite_with(test_limits()).await
    }

    pub async fn postgres() -> TestApp {
        TestApp::postgres_with(test_limits()).await
    }

    pub async fn sqlite_with(limits: ServerLimits) -> TestApp {
        TestApp::sqlite_full(limits, None).await
    }

    pub async fn postgres_with(limits: ServerLimits) -> TestApp {
        TestApp::postgres_full(limits, None).await
    }

    /// A server that runs a webhook dispatcher with these settings.
    pub async fn sqlite_with_webhooks(settings: WebhookSettings) -> TestApp {
        TestApp::sqlite_full(test_limits(), Some(settings)).await
    }

    pub async fn postgres_with_webhooks(settings: WebhookSettings) -> TestApp {
        TestApp::postgres_full(test_limits(), Some(settings)).await
    }

    /// A server that runs a nudge scheduler with these settings (and, with webhook
    /// settings, a webhook dispatcher).
    pub async fn sqlite_with_nudges(nudges: NudgeSettings, webhooks: Option<WebhookSettings>) -> TestApp {
        TestApp::sqlite_full_with(test_limits(), webhooks, Some(nudges)).await
    }

    pub async fn postgres_with_nudges(nudges: NudgeSettings, webhooks: Option<WebhookSettings>) -> TestApp {
        TestApp::postgres_full_with(test_limits(), webhooks, Some(nudges)).await
    }

    /// A webhook server also runs a nudge scheduler, so every event type, nudge.due
    /// included, can be delivered. Its clock (the engine's time) is its own: moving it
    /// brings nudges due without moving the timestamps deliveries are signed with.
    fn nudges_for(webhooks: &Option<WebhookSettings>) -> Option<NudgeSettings> {
        webhooks.as_ref().map(|_| NudgeSettings {
            clock: onramp::clock::Clock::adjustable(),
            quiet_hours: None,
            poll_interval: std::time::Duration::from_millis(20),
            ..NudgeSettings::default()
        })
    }

    async fn sqlite_full(limits: ServerLimits, webhooks: Option<WebhookSettings>) -> TestApp {
        let nudges = TestApp::nudges_for(&webhooks);
        TestApp::sqlite_full_with(limits, webhooks, nudges).await
    }

    async fn sqlite_full_with(
        limits: ServerLimits,
        webhooks: Option<WebhookSettings>,
        nudges: Option<NudgeSettings>,
    ) -> TestApp {
        let path = std::env::temp_dir().join(format!("onramp-test-{}.db", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        TestApp::start(&url, Backend::Sqlite { path }, limits, webhooks, nudges).await
    }

    async fn postgres_full(limits: ServerLimits, webhooks: Option<WebhookSettings>) -> TestApp {
        let nudges = TestApp::nudges_for(&webhooks);
        TestApp::postgres_full_with(limits, webhooks, nudges).await
    }

    async fn postgres_full_with(
        limits: ServerLimits,
        webhooks: Option<WebhookSettings>,
        nudges: Option<NudgeSettings>,
    ) -> TestApp {
        let admin_url = std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_POSTGRES.to_string());
        let name = format!("onramp_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin_url} is required for the PostgreSQL tests: {e}"));
        // Concurrent CREATE DATABASE statements can collide on the template database
        // ("source database is being accessed by other users"); a retry resolves it.
        let mut attempt = 0;
        while let Err(e) = admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await {
            attempt += 1;
            assert!(attempt < 20, "cannot create test database {name}: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
        }
        admin.close().await.ok();
        let url = with_database(&admin_url, &name);
        TestApp::start(&url, Backend::Postgres { admin_url, name }, limits, webhooks, nudges).await
    }

    async fn start(
        url: &str,
        backend: Backend,
        limits: ServerLimits,
        webhooks: Option<WebhookSettings>,
        nudges: Option<NudgeSettings>,
    ) -> TestApp {
        let (addr, keys, dispatcher, scheduler) = serve(url, limits, webhooks.clone(), nudges.clone()).await;
        let direct = persistence::connect(url, 2).await.expect("connect direct");
        let client = reqwest::Client::new();
        TestApp {
            addr,
            client,
            keys,
            db: direct,
            backend,
            url: url.to_string(),
            dispatcher,
            webhooks,
            scheduler,
            nudges,
        }
    }

    /// Another server on this database, as another process would be, with its own
    /// webhook dispatcher.
    pub async fn another_instance(&self, settings: WebhookSettings) -> Instance {
        let nudges = TestApp::nudges_for(&Some(settings.clone()));
        let (addr, _, dispatcher, _) = serve(&self.url, test_limits(), Some(settings), nudges).await;
        Instance { addr, dispatcher: dispatcher.expect("a dispatcher") }
    }

    /// Another server on this database with a nudge scheduler of its own (and no
    /// webhook dispatcher).
    pub async fn another_nudge_instance(&self, nudges: NudgeSettings) -> (SocketAddr, SchedulerHandle) {
        let (addr, _, _, scheduler) = serve(&self.url, test_limits(), None, Some(nudges)).await;
        (addr, scheduler.expect("a scheduler"))
    }

    /// The database URL the server runs on, for more server processes on the same database.
    pub fn database_url(&self) -> &str {
        &self.url
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn token(&self, subject: &str, role: Role) -> String {
        self.keys.mint(subject, role, 3600).expect("mint")
    }

    pub fn user(&self, subject: &str) -> String {
        self.token(subject, Role::User)
    }

    /// A user token whose workspace claim lists these workspaces.
    pub fn member(&self, subject: &str, workspaces: &[&str]) -> String {
        self.keys.mint_member(subject, Role::User, workspaces, 3600).expect("mint")
    }

    pub fn admin(&self) -> String {
        self.token("test-admin", Role::Admin)
    }

    /// The whole GraphQL response.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request =
            self.client.post(self.url("/graphql")).json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.expect("request");
        assert!(response.status().is_success(), "HTTP {}", response.status());
        response.json().await.expect("json response")
    }

    /// `data`, failing the test on any error.
    pub async fn ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let response = self.gql(Some(token), query, variables).await;
        assert!(response.get("errors").is_none(), "unexpected errors: {response:#}");
        response["data"].clone()
    }

    /// The first error, failing the test when there is none.
    pub async fn error(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let response = self.gql(token, query, variables).await;
        response["errors"][0].clone().as_object().map(|_| response["errors"][0].clone()).unwrap_or_else(|| {
            panic!("expected an error, got {response:#}");
        })
    }

    /// The error code of the first error.
    pub async fn code(&self, token: Option<&str>, query: &str, variables: Value) -> String {
        let error = self.error(token, query, variables).await;
        error["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no code in {error:#}")).to_string()
    }

    pub async fn publish(&self, definition: Value) -> Value {
        let data = self
            .ok(
                &self.admin(),
                "mutation($d: JSON!) { publishFlow(definition: $d) { key version status } }",
                json!({ "d": definition }),
            )
            .await;
        data["publishFlow"].clone()
    }

    pub async fn set_attributes(&self, subject: &str, attributes: Value) -> Value {
        self.ok(
            &self.admin(),
            "mutation($s: ID!, $a: JSON!) { setSubjectAttributes(subjectId: $s, attributes: $a) { attributes } }",
            json!({ "s": subject, "a": attributes }),
        )
        .await
    }

    /// A scalar from the database, for checks the API cannot make.
    pub async fn count(&self, sql: &str) -> i64 {
        self.scalar(sql).await
    }

    /// A text scalar from the database (cast JSON columns with `CAST(... AS TEXT)`).
    pub async fn text(&self, sql: &str) -> String {
        self.scalar(sql).await
    }

    async fn scalar<T: sea_orm::TryGetable>(&self, sql: &str) -> T {
        let statement = sea_orm::Statement::from_string(self.db.get_database_backend(), sql.to_string());
        let row = self.db.query_one_raw(statement).await.expect("query").expect("row");
        row.try_get_by_index::<T>(0).unwrap_or_else(|e| panic!("`{sql}`: {e:?}"))
    }
}

/// Starts a server (and, with settings, its webhook dispatcher) on a migrated database.
async fn serve(
    url: &str,
    limits: ServerLimits,
    webhooks: Option<WebhookSettings>,
    nudges: Option<NudgeSettings>,
) -> (SocketAddr, Arc<JwtKeys>, Option<DispatcherHandle>, Option<SchedulerHandle>) {
    let db = persistence::connect(url, 8).await.expect("connect");
    persistence::migrate(&db).await.expect("migrate");
    let keys = JwtKeys::from_args(&jwt_args(), Mode::Production).expect("keys");
    let mut onramp = Onramp::new(db);
    let mut dispatcher = None;
    if let Some(settings) = webhooks {
        onramp = onramp.with_webhooks(settings);
        dispatcher = Some(onramp.spawn_dispatcher().expect("webhook dispatcher"));
    }
    let run_scheduler = nudges.is_some();
    if let Some(settings) = nudges {
        onramp = onramp.with_nudges(settings);
    }
    onramp.listen(url).await.expect("change listener");
    let state =
        AppState::new(onramp, keys, false).with_ws_init_timeout(std::time::Duration::from_secs(2)).with_limits(limits);
    let keys = state.keys.clone();
    let scheduler = run_scheduler.then(|| onramp::nudges::spawn_scheduler(state.onramp.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, keys, dispatcher, scheduler)
}

/// Seconds since the epoch, as JWT claims count time.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// A token with exactly these claims, signed with an HMAC secret, for the malformed and
/// hostile cases `JwtKeys::mint` cannot produce.
pub fn sign_hmac(claims: &Value, algorithm: jsonwebtoken::Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

pub const STATUS_FIELDS: &str = "flowKey version title status startedAt completedAt skippedAt percentComplete \
    completedCount totalCount position points revision \
    steps { key status available blockedBy points completedAt skippedAt skipReason metadata source required skippable } \
    nextStep { key }";

pub fn status_query() -> String {
    format!("query($f: String!, $s: ID) {{ status(flowKey: $f, subjectId: $s) {{ {STATUS_FIELDS} }} }}")
}

pub fn complete_mutation() -> String {
    format!(
        "mutation($f: String!, $k: String!, $m: JSON, $s: ID) {{ completeStep(flowKey: $f, stepKey: $k, metadata: $m, subjectId: $s) {{ {STATUS_FIELDS} }} }}"
    )
}

pub fn skip_mutation() -> String {
    format!(
        "mutation($f: String!, $k: String!, $r: String) {{ skipStep(flowKey: $f, stepKey: $k, reason: $r) {{ {STATUS_FIELDS} }} }}"
    )
}

/// A flow with a dependency, an optional step and a plan condition.
pub fn sample_flow(key: &str) -> Value {
    json!({
        "key": key,
        "title": "Welcome",
        "steps": [
            { "key": "verify_email", "title": "Verify your email", "points": 10 },
            { "key": "profile", "title": "Complete your profile", "dependsOn": ["verify_email"], "points": 5 },
            { "key": "invite", "title": "Invite your team", "required": false, "condition": { "plan": "team" }, "points": 20 },
            { "key": "tour", "title": "Take the tour", "required": false, "points": 1 }
        ]
    })
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        match &self.backend {
            Backend::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Backend::Postgres { admin_url, name } => {
                // Drop the database on a thread of its own: Drop cannot await, and the
                // test's runtime may already be shutting down.
                let (admin_url, name) = (admin_url.clone(), name.clone());
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                    runtime.block_on(async {
                        let admin = Database::connect(&admin_url).await.ok()?;
                        admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.ok()
                    })
                })
                .join();
            }
        }
    }
}

pub mod binary;
pub mod js;
pub mod process;
pub mod receiver;
pub mod ws;

/// Helpers for the audience, points and version tests: a backend's calls, a user's own
/// writes, and raw rows.
impl TestApp {
    /// A backend's token (role service).
    pub fn service(&self) -> String {
        self.token("backend", Role::Service)
    }

    /// A subject's status in a flow, read by a backend.
    pub async fn status_of(&self, subject: &str, flow: &str) -> Value {
        self.ok(&self.service(), &status_query(), json!({ "f": flow, "s": subject })).await["status"].clone()
    }

    /// The subject enrolls (or resumes) with its own token.
    pub async fn start_as(&self, subject: &str, flow: &str) -> Value {
        let query = format!("mutation($f: String!) {{ startOnboarding(flowKey: $f) {{ {STATUS_FIELDS} }} }}");
        self.ok(&self.user(subject), &query, json!({ "f": flow })).await["startOnboarding"].clone()
    }

    /// The subject completes a step with its own token.
    pub async fn complete_as(&self, subject: &str, flow: &str, step: &str) -> Value {
        self.ok(&self.user(subject), &complete_mutation(), json!({ "f": flow, "k": step })).await["completeStep"]
            .clone()
    }

    /// One event through `trackEvent`, sent by a backend: the EventResult.
    pub async fn track_event(&self, id: &str, subject: &str, name: &str, properties: Value) -> Value {
        let event = json!({ "id": id, "subjectId": subject, "name": name, "properties": properties });
        let query = "mutation($e: EventInput!) { trackEvent(event: $e) { id status error { code message } \
                     completed { flowKey version stepKey } } }";
        self.ok(&self.service(), query, json!({ "e": event })).await["trackEvent"].clone()
    }

    /// Every first column of a query, as text, in the query's order.
    pub async fn rows(&self, sql: &str) -> Vec<String> {
        let statement = sea_orm::Statement::from_string(self.db.get_database_backend(), sql.to_string());
        self.db
            .query_all_raw(statement)
            .await
            .expect("query")
            .iter()
            .map(|r| r.try_get_by_index::<String>(0).unwrap_or_else(|e| panic!("`{sql}`: {e:?}")))
            .collect()
    }
}

/// The (flowKey, version, stepKey) of an EventResult's `completed`, sorted: the API
/// promises the set, not an order across flows.
pub fn completed_steps(result: &Value) -> Vec<(String, i64, String)> {
    let mut steps: Vec<(String, i64, String)> = result["completed"]
        .as_array()
        .unwrap_or_else(|| panic!("no completed list in {result:#}"))
        .iter()
        .map(|c| {
            (
                c["flowKey"].as_str().expect("flowKey").to_string(),
                c["version"].as_i64().expect("version"),
                c["stepKey"].as_str().expect("stepKey").to_string(),
            )
        })
        .collect();
    steps.sort();
    steps
}

/// A step of a status by key.
pub fn step_of<'a>(status: &'a Value, key: &str) -> &'a Value {
    status["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["key"] == key))
        .unwrap_or_else(|| panic!("no step `{key}` in {status:#}"))
}

/// The keys of a status's steps, in display order.
pub fn step_keys_of(status: &Value) -> Vec<String> {
    status["steps"].as_array().expect("steps").iter().map(|s| s["key"].as_str().expect("key").to_string()).collect()
}
