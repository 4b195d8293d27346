//! Nudges across real server processes (the built `onramp` binary) on one PostgreSQL
//! database: 10,000 due nudges, two schedulers racing for them, one killed with SIGKILL
//! half-way and started again. Every occurrence is sent exactly once: one SENT line and
//! one `nudge.due` outbox row each, whichever process sent it and whatever the kill cut
//! short (a tick is one transaction: what it had not committed is decided again).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sea_orm::ConnectionTrait;
use serde_json::json;

use crate::common::TestApp;
use crate::common::process::{Process, graphql, start_onramp};

const NUDGES: usize = 10_000;

/// A server process with its nudge scheduler: no quiet hours (the test runs at any hour),
/// quick polling, small batches so both processes get turns; no webhook dispatcher, so
/// the `nudge.due` outbox rows stay to be counted.
async fn start_server(app: &TestApp) -> (Process, String) {
    let (process, addr) = start_onramp(
        "onramp",
        app.database_url(),
        &[
            ("ONRAMP_DB_MAX_CONNECTIONS", "8"),
            ("ONRAMP_NUDGE_QUIET_HOURS", "off"),
            ("ONRAMP_NUDGE_POLL_MS", "50"),
            ("ONRAMP_NUDGE_BATCH", "200"),
            ("ONRAMP_WEBHOOK_NO_DISPATCHER", "true"),
            ("ONRAMP_METRICS_TOKEN", "metrics-token-for-tests"),
        ],
    )
    .await;
    (process, format!("http://{addr}"))
}

/// Nudges this process's scheduler sent, from its /metrics.
async fn sent_by(app: &TestApp, url: &str) -> f64 {
    let text = app
        .client
        .get(format!("{url}/metrics"))
        .bearer_auth("metrics-token-for-tests")
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let metrics = crate::metrics::parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    metrics.value("onramp_nudges_total", &[("outcome", "sent")])
}

async fn wait_until_sent(app: &TestApp, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let sent = app.count("SELECT COUNT(*) FROM nudge_log WHERE outcome = 'SENT'").await;
        if sent >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{sent} of {n} nudges sent after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_send_each_of_10_000_nudges_once_through_a_kill() {
    let app = TestApp::postgres().await;
    let (first, url) = start_server(&app).await;
    let flow = json!({
        "key": "welcome",
        "title": "Welcome",
        "steps": [{"key": "profile", "title": "Profile"}],
        "nudges": {"rules": [{"key": "start", "trigger": {"kind": "not_started", "after": "1h"},
            "title": "Finish your profile", "message": "It takes a minute.", "channel": "both"}]}
    });
    graphql(
        &app.client,
        &url,
        &app.admin(),
        "mutation($d: JSON!) { publishFlow(definition: $d) { version } }",
        json!({"d": flow}),
    )
    .await;
    let subjects: Vec<String> = (0..NUDGES).map(|i| format!("u{i}")).collect();
    let start = "mutation { startOnboarding(flowKey: \"welcome\") { status } }";
    futures_util::stream::iter(subjects.iter())
        .for_each_concurrent(32, |s| {
            let (app, url) = (&app, &url);
            async move {
                graphql(&app.client, url, &app.user(s), start, json!({})).await;
            }
        })
        .await;
    assert_eq!(app.count("SELECT COUNT(*) FROM nudge_schedule WHERE due_at IS NOT NULL").await, NUDGES as i64);
    let (second, second_url) = start_server(&app).await;

    // An hour passes for every enrollment at once: all 10,000 come due together.
    app.db
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            app.db.get_database_backend(),
            "UPDATE nudge_schedule SET due_at = $1",
            [(chrono::Utc::now() - chrono::Duration::seconds(1)).into()],
        ))
        .await
        .expect("make them due");
    let started = Instant::now();
    wait_until_sent(&app, NUDGES as i64 / 4, Duration::from_secs(120)).await;
    let mut victim = first;
    victim.child.kill().expect("kill -9");
    victim.child.wait().expect("reap");
    let before_kill = app.count("SELECT COUNT(*) FROM nudge_log WHERE outcome = 'SENT'").await;
    let (restarted, restarted_url) = start_server(&app).await;
    wait_until_sent(&app, NUDGES as i64, Duration::from_secs(180)).await;
    let elapsed = started.elapsed();

    // Nothing is left due, and a moment later nothing more was sent.
    let due = "SELECT COUNT(*) FROM nudge_schedule WHERE due_at IS NOT NULL AND due_at <= CURRENT_TIMESTAMP";
    assert_eq!(app.count(due).await, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM nudge_log").await, NUDGES as i64, "one line per occurrence");
    assert_eq!(app.count("SELECT COUNT(*) FROM nudge_log WHERE outcome = 'SENT'").await, NUDGES as i64);
    assert_eq!(app.count("SELECT COUNT(DISTINCT enrollment_id) FROM nudge_log").await, NUDGES as i64);
    // The side effect of a send, the webhook's outbox row, once per nudge.
    let rows = app
        .db
        .query_all_raw(sea_orm::Statement::from_string(
            app.db.get_database_backend(),
            "SELECT payload->'nudge'->>'id' FROM outbox WHERE kind = 'nudge_due'".to_string(),
        ))
        .await
        .expect("outbox");
    let ids: BTreeSet<String> = rows.iter().map(|r| r.try_get_by_index::<String>(0).expect("id")).collect();
    assert_eq!(rows.len(), NUDGES, "one outbox row per nudge sent");
    assert_eq!(ids.len(), NUDGES, "no nudge in the outbox twice");
    // Both schedulers took part.
    let (by_second, by_restarted) = (sent_by(&app, &second_url).await, sent_by(&app, &restarted_url).await);
    assert!(by_second > 0.0, "the second process sent nothing");
    assert!(by_second + by_restarted <= NUDGES as f64);
    eprintln!(
        "2 processes, {NUDGES} nudges due: {before_kill} sent before the kill, all in {elapsed:?}; \
         after it the second sent {by_second}, the restarted one {by_restarted}"
    );
    drop((second, restarted));
}
