//! Webhooks across real server processes (the built `onramp` binary): a server killed with
//! SIGKILL in the middle of delivering, restarted on the same database, delivers every
//! event afterwards; two processes on one PostgreSQL database share 10,000 events without
//! ever sending one twice at once. What an in-process abort cannot show: nothing is flushed,
//! no destructor runs, the dead process's claims stay in the database until their lease
//! runs out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::common::TestApp;
use crate::common::process::{Process, graphql, start_onramp};
use crate::common::receiver::{Received, Receiver};

/// A server process of the built binary on `database_url`, with its webhook dispatcher:
/// loopback http receivers allowed, attempts of at most 1 s (so a dead process's claims
/// run out after 4 × 1 + 5 s), quick polling and retries.
async fn start_server(database_url: &str) -> Server {
    let (process, addr) = start_onramp(
        "onramp",
        database_url,
        &[
            ("ONRAMP_DB_MAX_CONNECTIONS", "8"),
            ("ONRAMP_WEBHOOK_ALLOW_PRIVATE", "true"),
            ("ONRAMP_WEBHOOK_ALLOW_HTTP", "true"),
            ("ONRAMP_WEBHOOK_TIMEOUT", "1"),
            ("ONRAMP_WEBHOOK_POLL_MS", "50"),
            ("ONRAMP_WEBHOOK_RETRY_SCHEDULE", "0,0.2,0.5,1,1,1,1,1"),
        ],
    )
    .await;
    Server { process, url: format!("http://{addr}") }
}

struct Server {
    process: Process,
    url: String,
}

impl Server {
    /// SIGKILL: no shutdown, no flush, claims left as they are.
    fn kill(mut self) {
        self.process.child.kill().expect("kill -9");
        self.process.child.wait().expect("reap the killed server");
    }

    async fn admin(&self, app: &TestApp, query: &str, variables: Value) -> Value {
        graphql(&app.client, &self.url, &app.admin(), query, variables).await
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
        servers.push(start_server(app.database_url()).await);
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
    servers.push(start_server(app.database_url()).await);

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
