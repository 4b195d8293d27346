//! Live progress over websockets: a snapshot on every change whatever its source, the
//! latest state for a subscriber that falls behind, the connection's auth rules, fan-out
//! between server processes sharing one PostgreSQL database, a resync when the change
//! listener reconnects, and the graphql-ws client library that apps use.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use onramp::auth::Role;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep, timeout};

use crate::both;
use crate::common::js::ensure_js_dependencies;
use crate::common::process::{Process, start_onramp};
use crate::common::ws::{Frame, LEGACY_WS, RECV, TRANSPORT_WS, WsClient};
use crate::common::{TEST_SECRET, TestApp, complete_mutation, sample_flow, sign_hmac, status_query, unix_now};

both!(
    snapshots_follow_every_kind_of_change,
    slow_subscribers_get_the_latest_state,
    bad_tokens_close_with_4403,
    no_connection_init_closes_with_4408,
    subscribe_before_init_closes_with_4401,
    token_expiry_closes_the_connection,
    users_cannot_watch_other_subjects,
    legacy_protocol_delivers_progress,
    graphql_ws_reference_client,
);

/// Long enough for a snapshot that is coming to arrive (they take milliseconds).
const QUIET: Duration = Duration::from_millis(400);

const TRACK_EVENT: &str =
    "mutation($e: EventInput!) { trackEvent(event: $e) { id status completed { flowKey stepKey } error { code } } }";
const PUBLISH: &str = "mutation($d: JSON!) { publishFlow(definition: $d) { key version } }";
const START_STEP: &str = "mutation($f: String!, $k: String!) { startStep(flowKey: $f, stepKey: $k) { revision } }";

/// Changes of every kind: a step a user completes, one an event completes, and one that
/// applies only on the team plan. `tour` keeps the flow in progress throughout.
fn live_flow() -> Value {
    json!({
        "key": "live",
        "title": "Live",
        "steps": [
            { "key": "profile", "title": "Complete your profile", "points": 1 },
            { "key": "verify", "title": "Verify your email", "points": 2, "trigger": { "event": "user.email_verified" } },
            { "key": "invite", "title": "Invite your team", "points": 4, "condition": { "plan": "team" } },
            { "key": "tour", "title": "Take the tour", "points": 8 }
        ]
    })
}

fn revision(snapshot: &Value) -> i64 {
    snapshot["revision"].as_i64().unwrap_or_else(|| panic!("no revision in {snapshot:#}"))
}

fn step<'a>(snapshot: &'a Value, key: &str) -> &'a Value {
    snapshot["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["key"] == key))
        .unwrap_or_else(|| panic!("no step `{key}` in {snapshot:#}"))
}

fn step_keys(snapshot: &Value) -> Vec<&str> {
    snapshot["steps"].as_array().expect("steps").iter().map(|s| s["key"].as_str().expect("key")).collect()
}

/// Revisions strictly increase from one snapshot to the next, and each snapshot is one
/// state, not parts of two: in the lag flow every step is worth one point.
fn assert_increasing(snapshots: &[Value], who: &str) {
    for snapshot in snapshots {
        assert_eq!(snapshot["points"], snapshot["completedCount"], "{who}: a torn snapshot: {snapshot:#}");
    }
    let revisions: Vec<i64> = snapshots.iter().map(revision).collect();
    if let Some(i) = revisions.windows(2).position(|w| w[0] >= w[1]) {
        panic!(
            "{who}: revisions must strictly increase: {revisions:?}\nsnapshot {i}: {:#}\nsnapshot {}: {:#}",
            snapshots[i],
            i + 1,
            snapshots[i + 1]
        );
    }
}

async fn snapshots_follow_every_kind_of_change(app: TestApp) {
    app.publish(live_flow()).await;
    let laptop = app.user("alice");
    // The changes come from another device: a second token for the same subject.
    let phone = app.keys.mint("alice", Role::User, 7200).expect("mint");

    let mut alice = WsClient::authorized(app.addr, TRANSPORT_WS, &laptop).await;
    let first = alice.watch("1", "live", None).await;
    assert_eq!(first["status"], "NOT_STARTED");
    assert_eq!(first["revision"], 0);
    assert_eq!(step_keys(&first), ["profile", "verify", "tour"], "invite applies only on the team plan");
    let not_started = &app.ok(&laptop, &status_query(), json!({ "f": "live" })).await["status"];
    assert_eq!(&first, not_started, "the first message is the current state");

    // An admin may watch any subject; bob watches his own progress.
    let mut admin = WsClient::authorized(app.addr, TRANSPORT_WS, &app.admin()).await;
    assert_eq!(admin.watch("a", "live", Some("alice")).await, first);
    let mut bob = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("bob")).await;
    let bob_first = bob.watch("b", "live", None).await;
    assert_eq!(bob_first["revision"], 0);

    // completeStep on the other device.
    let done =
        app.ok(&phone, &complete_mutation(), json!({ "f": "live", "k": "profile" })).await["completeStep"].clone();
    let second = alice.snapshot("1").await;
    assert_eq!(second, done, "the snapshot is the state the mutation returned");
    assert!(revision(&second) > 0);
    assert_eq!(second["status"], "IN_PROGRESS");
    assert_eq!(step(&second, "profile")["status"], "COMPLETED");
    assert_eq!(step(&second, "profile")["source"], "USER");
    assert_eq!(admin.snapshot("a").await, second);

    // A product event completes the step it triggers.
    let service = app.token("backend", Role::Service);
    let event =
        json!({ "id": "evt-1", "subjectId": "alice", "name": "user.email_verified", "properties": { "via": "link" } });
    let tracked = &app.ok(&service, TRACK_EVENT, json!({ "e": event })).await["trackEvent"];
    assert_eq!(tracked["status"], "NEW", "{tracked:#}");
    assert_eq!(tracked["completed"], json!([{ "flowKey": "live", "stepKey": "verify" }]));
    let third = alice.snapshot("1").await;
    assert!(revision(&third) > revision(&second), "{} then {}", revision(&second), revision(&third));
    assert_eq!(step(&third, "verify")["status"], "COMPLETED");
    assert_eq!(step(&third, "verify")["source"], "EVENT");
    assert_eq!(step(&third, "verify")["metadata"], json!({ "via": "link" }));
    assert_eq!(third["points"], 3);
    assert_eq!(&third, &app.ok(&laptop, &status_query(), json!({ "f": "live" })).await["status"]);
    assert_eq!(admin.snapshot("a").await, third);

    // An attribute change makes the conditional step apply.
    app.set_attributes("alice", json!({ "plan": "team" })).await;
    let fourth = alice.snapshot("1").await;
    assert!(revision(&fourth) > revision(&third), "{} then {}", revision(&third), revision(&fourth));
    assert_eq!(step_keys(&fourth), ["profile", "verify", "invite", "tour"]);
    assert_eq!(step(&fourth, "invite")["status"], "PENDING");
    assert_eq!(fourth["totalCount"], 4);
    assert_eq!(fourth["percentComplete"], 50, "two of four required steps");
    assert_eq!(&fourth, &app.ok(&laptop, &status_query(), json!({ "f": "live" })).await["status"]);
    assert_eq!(admin.snapshot("a").await, fourth);

    // Bob heard none of it, though his subscription is live.
    bob.expect_silence(QUIET).await;
    let bobs = app.ok(&app.user("bob"), &complete_mutation(), json!({ "f": "live", "k": "tour" })).await;
    assert_eq!(bob.snapshot("b").await, bobs["completeStep"]);
    alice.expect_silence(QUIET).await;
    admin.expect_silence(QUIET).await;
}

async fn slow_subscribers_get_the_latest_state(app: TestApp) {
    const STEPS: usize = 25;
    // Enrollment, then a start and a completion per step.
    const FINAL_REVISION: i64 = 1 + 2 * STEPS as i64;
    let steps: Vec<Value> =
        (0..STEPS).map(|i| json!({ "key": format!("s{i:02}"), "title": format!("Step {i}"), "points": 1 })).collect();
    app.publish(json!({ "key": "lag", "title": "Lag", "steps": steps })).await;
    let token = app.user("alice");

    // The slow subscriber (which sends its token the other way, as `token`) reads its
    // first message, then nothing until every change is made. A small receive buffer
    // keeps the kernel from queueing every snapshot on its behalf, so the server feels it.
    let mut slow = WsClient::connect_with_receive_buffer(app.addr, TRANSPORT_WS, 4096).await;
    slow.init(json!({ "token": token })).await;
    slow.expect_ack().await;
    let first = slow.watch("slow", "lag", None).await;
    assert_eq!(first["revision"], 0);

    let mut prompt = WsClient::authorized(app.addr, TRANSPORT_WS, &token).await;
    assert_eq!(prompt.watch("prompt", "lag", None).await["revision"], 0);
    let prompt_reader = tokio::spawn(async move {
        let mut snapshots = Vec::new();
        loop {
            let snapshot = prompt.snapshot("prompt").await;
            snapshots.push(snapshot.clone());
            if revision(&snapshot) >= FINAL_REVISION {
                return (prompt, snapshots, snapshot);
            }
        }
    });

    // Two devices, each starting then completing half of the steps.
    let app = Arc::new(app);
    let mut devices = Vec::new();
    for device in 0..2u64 {
        let app = app.clone();
        devices.push(tokio::spawn(async move {
            let token = app.keys.mint("alice", Role::User, 600 + device).expect("mint");
            for i in (device as usize..STEPS).step_by(2) {
                let vars = json!({ "f": "lag", "k": format!("s{i:02}") });
                app.ok(&token, START_STEP, vars.clone()).await;
                app.ok(&token, &complete_mutation(), vars).await;
            }
        }));
    }
    for device in devices {
        timeout(Duration::from_secs(60), device).await.expect("the changes took over a minute").expect("device");
    }
    let latest = app.ok(&token, &status_query(), json!({ "f": "lag" })).await["status"].clone();
    assert_eq!(latest["revision"], FINAL_REVISION, "every change makes one revision");
    assert_eq!(latest["status"], "COMPLETED");

    let mut snapshots = vec![first];
    while snapshots.last().map(revision) < Some(FINAL_REVISION) {
        snapshots.push(slow.snapshot("slow").await);
    }
    assert_increasing(&snapshots, "slow subscriber");
    assert_eq!(snapshots.last(), Some(&latest), "the slow subscriber ends with the latest state");
    let changes = 2 * STEPS;
    assert!(snapshots.len() - 1 <= changes, "at most one snapshot per change: {}", snapshots.len() - 1);
    eprintln!("slow subscriber: {} snapshots for {changes} changes", snapshots.len() - 1);
    slow.expect_silence(QUIET).await;

    let (mut prompt, prompt_snapshots, prompt_last) =
        timeout(Duration::from_secs(30), prompt_reader).await.expect("prompt reader timed out").expect("prompt reader");
    assert_increasing(&prompt_snapshots, "prompt subscriber");
    assert_eq!(prompt_last, latest, "the prompt subscriber ends with the latest state");
    eprintln!("prompt subscriber: {} snapshots for {changes} changes", prompt_snapshots.len());
    prompt.expect_silence(QUIET).await;
}

async fn bad_tokens_close_with_4403(app: TestApp) {
    let now = unix_now();
    let hs256 = |claims: Value, secret: &str| sign_hmac(&claims, Algorithm::HS256, secret);
    let cases = [
        ("garbage", json!({ "authorization": "Bearer not-a-jwt" })),
        ("garbage as `token`", json!({ "token": "not-a-jwt" })),
        (
            "another secret",
            json!({ "authorization": format!("Bearer {}", hs256(json!({ "sub": "alice", "exp": now + 600 }), "another-secret")) }),
        ),
        ("expired an hour ago", json!({ "token": hs256(json!({ "sub": "alice", "exp": now - 3600 }), TEST_SECRET) })),
        ("no token", json!({})),
        ("no payload", Value::Null),
    ];
    for (case, payload) in cases {
        let mut client = WsClient::connect(app.addr, TRANSPORT_WS).await;
        client.init(payload).await;
        let (code, reason) = client.expect_close(RECV).await;
        assert_eq!(code, 4403, "{case}: closed with {code} {reason}");
        assert!(reason.starts_with("Forbidden"), "{case}: {reason}");
    }

    // Just expired, within the verifier's allowance for clock skew: accepted, but the
    // connection still never outlives its token.
    let just_expired = hs256(json!({ "sub": "alice", "exp": now - 5 }), TEST_SECRET);
    let mut client = WsClient::connect(app.addr, TRANSPORT_WS).await;
    client.init(json!({ "token": just_expired })).await;
    let mut acked = false;
    let (code, reason) = loop {
        match client.recv(RECV).await {
            Frame::Json(message) if message["type"] == "connection_ack" && !acked => acked = true,
            Frame::Json(message) => panic!("expected the connection to close, got {message}"),
            Frame::Closed(close) => break close.expect("a close frame"),
        }
    };
    assert_eq!((code, reason.as_str()), (4403, "Forbidden: token expired"));

    // The same claims unexpired pass, so each refusal above is the token's fault.
    WsClient::authorized(app.addr, TRANSPORT_WS, &hs256(json!({ "sub": "alice", "exp": now + 600 }), TEST_SECRET))
        .await;
}

async fn no_connection_init_closes_with_4408(app: TestApp) {
    // The harness sets the timeout to 2 s.
    let mut client = WsClient::connect(app.addr, TRANSPORT_WS).await;
    let opened = Instant::now();
    let (code, reason) = client.expect_close(Duration::from_secs(4)).await;
    let waited = opened.elapsed();
    assert_eq!(code, 4408, "{reason}");
    assert!(waited >= Duration::from_millis(1500), "closed after {waited:?}, before the 2 s timeout");
}

async fn subscribe_before_init_closes_with_4401(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let mut client = WsClient::connect(app.addr, TRANSPORT_WS).await;
    client.watch_request("1", "welcome", None).await;
    let (code, reason) = client.expect_close(RECV).await;
    assert_eq!((code, reason.as_str()), (4401, "Unauthorized"));
}

async fn token_expiry_closes_the_connection(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let token = app.keys.mint("alice", Role::User, 3).expect("mint");
    let mut client = WsClient::authorized(app.addr, TRANSPORT_WS, &token).await;
    let accepted = Instant::now();
    assert_eq!(client.watch("1", "welcome", None).await["status"], "NOT_STARTED");
    // Live until then.
    let done = app.ok(&app.user("alice"), &complete_mutation(), json!({ "f": "welcome", "k": "verify_email" })).await;
    assert_eq!(client.snapshot("1").await, done["completeStep"]);

    let (code, reason) = client.expect_close(Duration::from_secs(6)).await;
    let lived = accepted.elapsed();
    assert_eq!((code, reason.as_str()), (4403, "Forbidden: token expired"));
    // exp is a whole second, 2 to 3 s after minting.
    assert!(lived >= Duration::from_millis(1500) && lived <= Duration::from_secs(4), "closed after {lived:?}");
}

async fn users_cannot_watch_other_subjects(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let mut client = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("alice")).await;
    client.watch_request("bob", "welcome", Some("bob")).await;
    let errors = client.operation_errors("bob").await;
    assert_eq!(errors[0]["extensions"]["code"], "FORBIDDEN", "{errors:#?}");

    // The connection stays usable: her own subject, named or not.
    assert_eq!(client.watch("own", "welcome", Some("alice")).await["status"], "NOT_STARTED");
    client.watch_request("missing", "no-such-flow", None).await;
    assert_eq!(client.operation_errors("missing").await[0]["extensions"]["code"], "NOT_FOUND");

    // Bob's changes never reach her; hers do.
    app.ok(&app.user("bob"), &complete_mutation(), json!({ "f": "welcome", "k": "verify_email" })).await;
    client.expect_silence(QUIET).await;
    let done = app.ok(&app.user("alice"), &complete_mutation(), json!({ "f": "welcome", "k": "verify_email" })).await;
    assert_eq!(client.snapshot("own").await, done["completeStep"]);
}

async fn legacy_protocol_delivers_progress(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let token = app.user("alice");

    // That protocol refuses a bad token in-band, then ends the connection.
    let mut refused = WsClient::connect(app.addr, LEGACY_WS).await;
    refused.init(json!({ "authorization": "Bearer not-a-jwt" })).await;
    let message = refused.recv_json(RECV).await;
    assert_eq!(message["type"], "connection_error", "{message}");
    assert!(matches!(refused.recv(RECV).await, Frame::Closed(_)));

    let mut client = WsClient::connect(app.addr, LEGACY_WS).await;
    client.init(json!({ "token": token })).await;
    client.expect_ack().await;
    let first = client.watch("1", "welcome", None).await;
    assert_eq!(first["status"], "NOT_STARTED");
    assert_eq!(first["revision"], 0);
    let done = app.ok(&token, &complete_mutation(), json!({ "f": "welcome", "k": "verify_email" })).await;
    assert_eq!(client.snapshot("1").await, done["completeStep"]);

    // stop ends the operation; later changes are not sent.
    client.send(json!({ "id": "1", "type": "stop" })).await;
    assert_eq!(client.recv_json(RECV).await, json!({ "type": "complete", "id": "1" }));
    app.ok(&token, &complete_mutation(), json!({ "f": "welcome", "k": "profile" })).await;
    client.expect_silence(QUIET).await;
}

// ----- The graphql-ws reference client (Node) -----

async fn graphql_ws_reference_client(app: TestApp) {
    ensure_js_dependencies().await;
    app.publish(sample_flow("welcome")).await;
    let token = app.user("alice");
    let mut command = Command::new("node");
    command
        .arg("tests/js/client.mjs")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("URL", format!("ws://{}/graphql/ws", app.addr))
        .env("TOKEN", &token)
        .env("FLOW", "welcome")
        .env("N", "2");
    let mut node = Process::spawn("node tests/js/client.mjs", command);

    let first: Value = serde_json::from_str(&node.line(Duration::from_secs(15)).await).expect("a JSON line");
    assert!(first.get("errors").is_none(), "{first:#}");
    assert_eq!(first["data"]["onboardingProgress"]["status"], "NOT_STARTED");
    assert_eq!(first["data"]["onboardingProgress"]["revision"], 0);

    let done =
        &app.ok(&token, &complete_mutation(), json!({ "f": "welcome", "k": "verify_email" })).await["completeStep"];
    let status = node.wait(Duration::from_secs(15)).await;
    assert!(status.success(), "the node client exited with {status}; stderr:\n{}", node.stderr());
    let second: Value = serde_json::from_str(&node.line(RECV).await).expect("a JSON line");
    let update = &second["data"]["onboardingProgress"];
    assert_eq!(update["revision"], done["revision"], "{second:#}");
    assert_eq!(update["status"], "IN_PROGRESS");
    assert_eq!(update["points"], 10);
    assert_eq!(step(update, "verify_email")["status"], "COMPLETED");
    assert_eq!(node.rest().await, Vec::<String>::new(), "exactly two payloads");
}

// ----- PostgreSQL: several server processes, and the change listener -----

/// A GraphQL request to any server, failing the test on errors.
async fn gql_ok(app: &TestApp, addr: SocketAddr, token: &str, query: &str, variables: Value) -> Value {
    let response = app
        .client
        .post(format!("http://{addr}/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("request");
    assert!(response.status().is_success(), "HTTP {}", response.status());
    let body: Value = response.json().await.expect("json");
    assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
    body["data"].clone()
}

/// Waits until `n` change listeners are connected to the test database and LISTENing.
async fn wait_for_listeners(app: &TestApp, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listening = app
            .count(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND application_name = 'onramp-listener' AND query LIKE 'LISTEN%' AND state = 'idle'",
            )
            .await;
        if listening >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{listening} of {n} change listeners after 10 s");
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_changes_through_postgres() {
    // The harness creates and migrates the database (and runs a server of its own on it).
    let app = TestApp::postgres().await;
    let (_a, a) = start_onramp("onramp A", app.database_url(), &[]).await;
    let (_b, b) = start_onramp("onramp B", app.database_url(), &[]).await;
    // Ours, A's and B's: a change made before a listener is up would not reach it.
    wait_for_listeners(&app, 3).await;

    gql_ok(&app, b, &app.admin(), PUBLISH, json!({ "d": live_flow() })).await;
    let alice = app.user("alice");
    let mut client = WsClient::authorized(a, TRANSPORT_WS, &alice).await;
    let first = client.watch("1", "live", None).await;
    assert_eq!(first["status"], "NOT_STARTED");

    // completeStep on B reaches the subscriber on A.
    let done = gql_ok(&app, b, &alice, &complete_mutation(), json!({ "f": "live", "k": "profile" })).await;
    let second = client.snapshot("1").await;
    assert_eq!(second, done["completeStep"]);
    assert_eq!(step(&second, "profile")["status"], "COMPLETED");

    // So does an event tracked on B.
    let service = app.token("backend", Role::Service);
    let event = json!({ "id": "evt-b", "subjectId": "alice", "name": "user.email_verified" });
    let tracked = gql_ok(&app, b, &service, TRACK_EVENT, json!({ "e": event })).await;
    assert_eq!(tracked["trackEvent"]["completed"], json!([{ "flowKey": "live", "stepKey": "verify" }]));
    let third = client.snapshot("1").await;
    assert!(revision(&third) > revision(&second));
    assert_eq!(step(&third, "verify")["status"], "COMPLETED");
    assert_eq!(step(&third, "verify")["source"], "EVENT");
    let on_a = gql_ok(&app, a, &alice, &status_query(), json!({ "f": "live" })).await;
    assert_eq!(third, on_a["status"]);

    // And an attribute change on B.
    gql_ok(
        &app,
        b,
        &app.admin(),
        "mutation($a: JSON!) { setSubjectAttributes(subjectId: \"alice\", attributes: $a) { id } }",
        json!({ "a": { "plan": "team" } }),
    )
    .await;
    let fourth = client.snapshot("1").await;
    assert!(revision(&fourth) > revision(&third));
    assert_eq!(step(&fourth, "invite")["status"], "PENDING");
    client.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_on_one_process_all_reach_another() {
    // An instance NOTIFYs the subjects of concurrent writes together (one NOTIFY may
    // carry many): none of them may be left out.
    const USERS: usize = 24;
    let app = TestApp::postgres().await;
    let (_a, a) = start_onramp("onramp A", app.database_url(), &[]).await;
    let (_b, b) = start_onramp("onramp B", app.database_url(), &[]).await;
    wait_for_listeners(&app, 3).await;
    gql_ok(&app, b, &app.admin(), PUBLISH, json!({ "d": live_flow() })).await;

    let tokens: Vec<String> = (0..USERS).map(|i| app.user(&format!("user-{i}"))).collect();
    let mut clients = Vec::new();
    for token in &tokens {
        let mut client = WsClient::authorized(a, TRANSPORT_WS, token).await;
        assert_eq!(client.watch("1", "live", None).await["status"], "NOT_STARTED");
        clients.push(client);
    }
    let app = &app;
    let writes = tokens.iter().map(|token| async move {
        gql_ok(app, b, token, &complete_mutation(), json!({ "f": "live", "k": "profile" })).await
    });
    let done = futures_util::future::join_all(writes).await;
    for (client, done) in clients.iter_mut().zip(done) {
        let pushed = client.snapshot("1").await;
        assert_eq!(pushed, done["completeStep"]);
        assert_eq!(step(&pushed, "profile")["status"], "COMPLETED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_published_on_one_process_enrolls_on_the_next_write_on_another() {
    // Each instance keeps the active flows in memory between flow changes; a change on
    // another instance must reach it (through NOTIFY) before its next writes.
    let app = TestApp::postgres().await;
    let (_a, a) = start_onramp("onramp A", app.database_url(), &[]).await;
    let (_b, b) = start_onramp("onramp B", app.database_url(), &[]).await;
    wait_for_listeners(&app, 3).await;
    let set_attributes = "mutation($a: JSON!) { setSubjectAttributes(subjectId: \"alice\", attributes: $a) { id } }";
    // A write on A: A now holds the active flows, none of which has an audience.
    gql_ok(&app, a, &app.admin(), set_attributes, json!({ "a": { "role": "admin", "n": 0 } })).await;

    let admins = json!({
        "key": "admins",
        "title": "Admins",
        "audience": { "role": "admin" },
        "steps": [{ "key": "console", "title": "Open the console" }]
    });
    gql_ok(&app, b, &app.admin(), PUBLISH, json!({ "d": admins })).await;
    // The next write on A enrolls alice, once A has heard of the flow (milliseconds).
    let alice = app.user("alice");
    let deadline = Instant::now() + Duration::from_secs(5);
    for n in 1.. {
        gql_ok(&app, a, &app.admin(), set_attributes, json!({ "a": { "role": "admin", "n": n } })).await;
        let status = gql_ok(&app, a, &alice, &status_query(), json!({ "f": "admins" })).await;
        if status["status"]["status"] == "IN_PROGRESS" {
            break;
        }
        assert!(Instant::now() < deadline, "A never enrolled alice in a flow published on B: {status}");
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_reconnect_resends_every_subscribers_state() {
    let app = TestApp::postgres().await;
    app.publish(sample_flow("welcome")).await;
    let alice = app.user("alice");
    let done = app.ok(&alice, &complete_mutation(), json!({ "f": "welcome", "k": "verify_email" })).await;
    let mut client = WsClient::authorized(app.addr, TRANSPORT_WS, &alice).await;
    let first = client.watch("1", "welcome", None).await;
    assert_eq!(first, done["completeStep"]);
    assert_eq!(first["points"], 10);
    wait_for_listeners(&app, 1).await;

    // A change nobody announces, as if its notification had been lost.
    app.db.execute_unprepared("UPDATE enrollments SET points = 99, revision = revision + 1").await.expect("update");
    client.expect_silence(QUIET).await;

    // Filter first (a WHERE clause may call pg_terminate_backend on any row), then terminate.
    let terminated = app
        .count(
            "WITH killed AS MATERIALIZED (SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'onramp-listener') \
             SELECT COUNT(*) FROM killed WHERE ok",
        )
        .await;
    assert_eq!(terminated, 1, "one change listener");
    let resynced = client.snapshot("1").await;
    assert_eq!(resynced["points"], 99, "the state is re-sent after the listener reconnects");
    assert_eq!(revision(&resynced), revision(&first) + 1);

    // The new connection listens: a notification from another instance gets through.
    app.db
        .execute_unprepared(
            "UPDATE enrollments SET points = 100, revision = revision + 1; \
             SELECT pg_notify('onramp_changes', '{\"i\":\"another-instance\",\"s\":[\"alice\"]}')",
        )
        .await
        .expect("update and notify");
    let notified = client.snapshot("1").await;
    assert_eq!(notified["points"], 100);
    assert_eq!(revision(&notified), revision(&first) + 2);
    client.expect_silence(QUIET).await;
}
