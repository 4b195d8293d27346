//! Webhooks across real server processes (the built `onramp` binary): a server killed with
//! SIGKILL in the middle of delivering, restarted on the same database, delivers every
//! event afterwards; two processes on one PostgreSQL database share 10,000 events without
//! ever sending one twice at once. What an in-process abort cannot show: nothing is flushed,
//! no destructor runs, the dead process's claims stay in the database until their lease
//! runs out.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::common::receiver::{Received, Receiver};
use crate::common::{TEST_SECRET, TestApp};

/// One attempt may take 1 s, so a dead process's claims run out after 4 × 1 + 5 s.
const TIMEOUT_SECONDS: &str = "1";

/// A server process of the built binary on `database_url`, with its webhook dispatcher.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    async fn start(database_url: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_onramp"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("ONRAMP_MODE", "production")
            .env("ONRAMP_BIND", "127.0.0.1:0")
            .env("ONRAMP_JWT_SECRET", TEST_SECRET)
            .env("ONRAMP_DB_MAX_CONNECTIONS", "8")
            .env("ONRAMP_WEBHOOK_ALLOW_PRIVATE", "true")
            .env("ONRAMP_WEBHOOK_ALLOW_HTTP", "true")
            .env("ONRAMP_WEBHOOK_TIMEOUT", TIMEOUT_SECONDS)
            .env("ONRAMP_WEBHOOK_POLL_MS", "50")
            .env("ONRAMP_WEBHOOK_RETRY_SCHEDULE", "0,0.2,0.5,1,1,1,1,1")
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the onramp binary");
        // The server's output, read on a thread of its own for as long as it runs, so the
        // server never blocks on a full pipe.
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("onramp listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_string());
                    }
                }
            }
        });
        let url = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("the server did not start within 60 s")
            .expect("the server exited before listening");
        Server { child, url }
    }

    /// SIGKILL: no shutdown, no flush, claims left as they are.
    fn kill(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap the killed server");
    }

    async fn admin(&self, app: &TestApp, query: &str, variables: Value) -> Value {
        let response: Value = app
            .client
            .post(format!("{}/graphql", self.url))
            .bearer_auth(app.admin())
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        assert!(response.get("errors").is_none(), "{response:#}");
        response["data"].clone()
    }
}

/// `n` step completions in the outbox, as the engine writes them, in one statement.
async fn fill_outbox(app: &TestApp, n: usize) {
    let payload = r#"'{"points": 1, "source": "EVENT", "revision": 2}'"#;
    let payload = if app.is_postgres() { format!("CAST({payload} AS jsonb)") } else { payload.to_string() };
    let sql = format!(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {n}) \
         INSERT INTO outbox (kind, subject_id, flow_key, flow_version, step_key, payload, created_at) \
         SELECT 'step_completed', 'user-' || x, 'welcome', 1, 'verify_email', {payload}, $1 FROM n"
    );
    app.db
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            app.db.get_database_backend(),
            sql,
            [chrono::Utc::now().into()],
        ))
        .await
        .expect("fill the outbox");
}

/// Attempts logged per webhook-id.
async fn logged_attempts(app: &TestApp) -> BTreeMap<String, i64> {
    let sql = "SELECT d.message_id, COUNT(a.id) FROM webhook_deliveries d \
               LEFT JOIN webhook_attempts a ON a.delivery_id = d.id GROUP BY d.message_id";
    let rows = app
        .db
        .query_all_raw(sea_orm::Statement::from_string(app.db.get_database_backend(), sql.to_string()))
        .await
        .expect("attempts");
    rows.iter().map(|r| (r.try_get_by_index::<String>(0).unwrap(), r.try_get_by_index::<i64>(1).unwrap())).collect()
}

/// Waits until `n` distinct webhook-ids arrived.
async fn wait_for_distinct(receiver: &Receiver, n: usize, within: Duration) -> Vec<Received> {
    let deadline = Instant::now() + within;
    loop {
        let received = receiver.received();
        let distinct: BTreeSet<&str> = received.iter().map(|r| r.id.as_str()).collect();
        if distinct.len() >= n {
            return received;
        }
        assert!(Instant::now() < deadline, "{} of {n} events delivered after {within:?}", distinct.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills one of `processes` servers with SIGKILL once a quarter of `events` arrived,
/// starts it again, and checks that every event is delivered, each under one webhook-id,
/// never twice at once, and again only if the killed process may have sent it.
async fn killed_mid_delivery(app: TestApp, processes: usize, events: usize) {
    let receiver = Receiver::start().await;
    // Every answer takes a moment, so attempts are in flight when the kill comes.
    receiver.delay(&vec![Duration::from_millis(5); events]);
    let mut servers = Vec::new();
    for _ in 0..processes {
        servers.push(Server::start(app.database_url()).await);
    }
    servers[0]
        .admin(
            &app,
            "mutation($u: String!) { createWebhookEndpoint(url: $u, eventTypes: [\"*\"]) { endpoint { id } } }",
            json!({ "u": receiver.url() }),
        )
        .await;
    fill_outbox(&app, events).await;

    receiver.wait_for(events / 4, Duration::from_secs(120)).await;
    let victim = servers.remove(0);
    victim.kill();
    let sent_before_the_kill: BTreeSet<String> = receiver.received().into_iter().map(|r| r.id).collect();
    assert!(sent_before_the_kill.len() < events, "the kill came after everything was delivered");
    servers.push(Server::start(app.database_url()).await);

    let started = Instant::now();
    wait_for_distinct(&receiver, events, Duration::from_secs(180)).await;
    // Attempts the dead process made but never recorded are made again once its claims
    // run out: wait until the database has nothing left to send.
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.count("SELECT COUNT(*) FROM webhook_deliveries WHERE status <> 'SUCCEEDED'").await > 0 {
        assert!(Instant::now() < deadline, "deliveries still unfinished a minute after the last event arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let received = receiver.received();
    receiver.expect_no_more_than(received.len(), Duration::from_millis(500)).await;
    let received_late = receiver.received();
    assert_eq!(receiver.overlaps(), 0, "a webhook-id was in flight twice at once");

    // Each event under exactly one webhook-id, every event delivered.
    let mut ids_of_event: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
    for r in &received_late {
        ids_of_event.entry(r.json["data"]["sequence"].as_i64().expect("sequence")).or_default().insert(&r.id);
    }
    assert_eq!(ids_of_event.len(), events, "every event delivered");
    assert!(ids_of_event.values().all(|ids| ids.len() == 1), "an event was sent under two webhook-ids");

    // Every request the receiver got is a logged attempt, or one the killed process made
    // and could not log: at most one per claim it held (2 × its concurrency of 64).
    let mut times: BTreeMap<&str, i64> = BTreeMap::new();
    for r in &received_late {
        *times.entry(r.id.as_str()).or_default() += 1;
    }
    let logged = logged_attempts(&app).await;
    let unlogged: Vec<(&str, i64)> = times
        .iter()
        .map(|(id, n)| (*id, n - logged.get(*id).copied().unwrap_or(0)))
        .filter(|(_, extra)| *extra > 0)
        .collect();
    assert!(
        unlogged.iter().all(|(_, extra)| *extra == 1),
        "more than one unlogged request for a delivery: {unlogged:?}"
    );
    assert!(unlogged.len() <= 128, "{} unlogged requests: more than the killed process held", unlogged.len());
    let repeated = times.values().filter(|n| **n > 1).count();
    eprintln!(
        "{processes} process(es), {events} events: {} before the kill, the rest {elapsed:?} after the restart, {} sent again",
        sent_before_the_kill.len(),
        repeated
    );
    for s in servers {
        s.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_server_killed_mid_delivery_delivers_everything_after_restart() {
    killed_mid_delivery(TestApp::sqlite().await, 1, 2_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_server_killed_mid_delivery_delivers_everything_after_restart() {
    killed_mid_delivery(TestApp::postgres().await, 1, 2_000).await;
}

/// The issue's bar: two server processes on one database, 10,000 events, one of them
/// killed with SIGKILL half-way and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes_deliver_10_000_events_through_a_kill() {
    killed_mid_delivery(TestApp::postgres().await, 2, 10_000).await;
}

impl Drop for Server {
    /// A failing test does not leave servers behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
