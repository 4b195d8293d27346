//! Webhooks: endpoints, Standard Webhooks signatures checked against real HTTP receivers on
//! loopback, retries with a stable webhook-id, endpoints disabled by 410, secret rotation,
//! event-type filtering, address safety, the delivery log, redelivery and replay, and two
//! dispatchers sharing one PostgreSQL database. Servers run a short retry schedule and
//! poll every 50 ms so the tests take seconds.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use onramp::clock::Clock;
use onramp::domain::webhooks::{AddressPolicy, DeliveryPolicy, RetrySchedule, Secret};
use onramp::webhooks::WebhookSettings;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::common::TestApp;
use crate::common::js::ensure_js_dependencies;
use crate::common::receiver::{Received, Receiver};
use crate::{both, both_webhooks};

both_webhooks!(fast =>
    a_completion_reaches_each_subscribed_endpoint_once_signed,
    failed_attempts_are_retried_with_the_same_webhook_id,
    a_receiver_down_for_a_while_gets_everything_afterwards,
    gone_disables_the_endpoint,
    a_rotated_secret_signs_beside_the_new_one_until_the_overlap_ends,
    secrets_are_shown_only_on_creation_and_rotation,
    the_delivery_log_pages_and_filters,
    redeliver_and_replay_send_again_with_the_same_webhook_id,
    a_dispatcher_that_dies_mid_delivery_is_retried_with_the_same_webhook_id,
    endpoint_inputs_are_validated_with_stable_codes,
    old_deliveries_and_outbox_rows_are_pruned_after_retention,
    an_endpoint_failing_for_days_is_disabled,
    a_slow_endpoint_does_not_delay_the_others,
    redirects_are_not_followed_and_answers_are_cut_to_1_kib,
    retry_after_is_honoured_on_503,
    shutdown_finishes_and_records_the_attempts_in_flight,
);

both!(internal_addresses_are_refused_by_default);
both_webhooks!(fast => every_payload_matches_the_json_schema_of_its_type);

both_webhooks!(slow_polling => a_commit_wakes_the_dispatcher_at_once);

/// `fast`, but polling only every 10 s: anything quicker came from the commit's wake-up.
fn slow_polling() -> WebhookSettings {
    WebhookSettings { poll_interval: Duration::from_secs(10), ..fast() }
}

/// Loopback and http allowed (the receivers are local), a short schedule, quick polling,
/// and a clock the test can move.
fn fast() -> WebhookSettings {
    WebhookSettings {
        policy: DeliveryPolicy {
            schedule: RetrySchedule::parse("0,0.2,0.2,0.5,0.5,1,1,1,1,1,1,1").unwrap(),
            ..DeliveryPolicy::default()
        },
        address: AddressPolicy { allow_private: true, allow_http: true },
        timeout: Duration::from_secs(5),
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_millis(50),
        clock: Clock::adjustable(),
        ..WebhookSettings::default()
    }
}

const WAIT: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_millis(600);

const CREATE: &str = "mutation($u: String!, $t: [String!]!, $d: String) { \
    createWebhookEndpoint(url: $u, eventTypes: $t, description: $d) { \
    secret endpoint { id url eventTypes description enabled disabledReason } } }";

const DELIVERIES: &str = "query($e: ID!, $s: WebhookDeliveryStatus, $t: String, $f: Int! = 20, $a: String) { \
    webhookDeliveries(endpointId: $e, status: $s, eventType: $t, first: $f, after: $a) { \
    hasNextPage endCursor nodes { id webhookId eventType status attemptCount lastStatusCode nextAttemptAt \
    attempts { number statusCode latencyMs error responseBody } } } }";

/// Creates an endpoint; returns its id and secret.
async fn create(app: &TestApp, url: &str, types: &[&str]) -> (String, Secret) {
    let data = app.ok(&app.admin(), CREATE, json!({ "u": url, "t": types, "d": "test receiver" })).await;
    let created = &data["createWebhookEndpoint"];
    let secret = Secret::parse(created["secret"].as_str().expect("secret")).expect("a whsec_ secret");
    (created["endpoint"]["id"].as_str().expect("id").to_string(), secret)
}

async fn endpoint(app: &TestApp, id: &str) -> Value {
    let query = "query($i: ID!) { webhookEndpoint(id: $i) { id url enabled disabledReason failingSince eventTypes } }";
    app.ok(&app.admin(), query, json!({ "i": id })).await["webhookEndpoint"].clone()
}

async fn deliveries(app: &TestApp, endpoint: &str, variables: Value) -> Value {
    let mut vars = json!({ "e": endpoint });
    if let (Some(vars), Some(extra)) = (vars.as_object_mut(), variables.as_object()) {
        vars.extend(extra.clone());
    }
    app.ok(&app.admin(), DELIVERIES, vars).await["webhookDeliveries"].clone()
}

/// Polls the delivery log until `done` holds for its first page.
async fn wait_for_log(app: &TestApp, endpoint: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let page = deliveries(app, endpoint, json!({})).await;
        if done(&page) {
            return page;
        }
        assert!(std::time::Instant::now() < deadline, "the delivery log never got there: {page:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn nodes(page: &Value) -> Vec<Value> {
    page["nodes"].as_array().expect("nodes").clone()
}

/// A flow whose two required steps complete it: three events per user.
async fn publish(app: &TestApp) {
    app.publish(json!({
        "key": "welcome",
        "title": "Welcome",
        "steps": [
            { "key": "verify_email", "title": "Verify", "points": 10 },
            { "key": "profile", "title": "Profile", "dependsOn": ["verify_email"], "points": 5 },
            { "key": "tour", "title": "Tour", "required": false, "skippable": true }
        ]
    }))
    .await;
}

/// What the reference tools said of one delivery.
#[derive(Debug, PartialEq)]
struct Checked {
    /// The indexes of the secrets it verifies under, by the `standardwebhooks` package.
    verified_by: Vec<usize>,
    /// What its payload breaks of its type's JSON Schema (docs/webhooks), by ajv.
    schema_errors: Vec<String>,
}

/// Checks deliveries with tools independent of ours (tests/js/verify-webhooks.mjs): the
/// reference `standardwebhooks` npm package verifies each signature under each secret, and
/// ajv validates each payload against the JSON Schema of its type.
async fn checked_by_reference_tools(secrets: &[&Secret], requests: &[&Received]) -> Vec<Checked> {
    ensure_js_dependencies().await;
    let input = json!({
        "secrets": secrets.iter().map(|s| s.reveal()).collect::<Vec<_>>(),
        "deliveries": requests.iter().map(|r| json!({
            "id": r.id, "timestamp": r.timestamp, "signature": r.signature, "body": r.body,
        })).collect::<Vec<_>>(),
    });
    let output = tokio::task::spawn_blocking(move || {
        let mut node = Command::new("node")
            .arg("tests/js/verify-webhooks.mjs")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs the verifier");
        node.stdin.take().expect("stdin").write_all(input.to_string().as_bytes()).expect("write");
        node.wait_with_output().expect("the verifier's output")
    })
    .await
    .expect("verifier task");
    assert!(output.status.success(), "the verifier failed: {}", String::from_utf8_lossy(&output.stderr));
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).expect("the verifier's JSON");
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    results
        .iter()
        .map(|r| Checked {
            verified_by: list(&r["verifiedBy"]).iter().filter_map(Value::as_u64).map(|i| i as usize).collect(),
            schema_errors: list(&r["schemaErrors"]).iter().map(|e| e.to_string()).collect(),
        })
        .collect()
}

/// Checks a request the way a receiver must: the signature with `secret` over id,
/// timestamp and the raw body.
fn assert_signed(request: &Received, secret: &Secret) {
    assert!(request.id.starts_with("msg_"), "{request:?}");
    assert!(
        secret.verifies(&request.signature, &request.id, request.timestamp, request.body.as_bytes()),
        "signature does not verify: {request:?}"
    );
    assert!(request.json.is_object(), "{request:?}");
}

/// A receiver refuses timestamps more than 5 minutes off (the spec's tolerance).
fn assert_fresh(request: &Received) {
    let age = crate::common::unix_now() as i64 - request.timestamp;
    assert!(age.abs() < 300, "timestamp {} is {age} s off", request.timestamp);
}

async fn a_completion_reaches_each_subscribed_endpoint_once_signed(app: TestApp) {
    publish(&app).await;
    let (all, steps, skips) = (Receiver::start().await, Receiver::start().await, Receiver::start().await);
    let (_, all_secret) = create(&app, &all.url(), &["*"]).await;
    let (steps_id, steps_secret) = create(&app, &steps.url(), &["step.completed"]).await;
    let (_, _) = create(&app, &skips.url(), &["onboarding.skipped", "step.skipped"]).await;

    app.complete_as("alice", "welcome", "verify_email").await;
    // `*` gets the enrollment and the completion; the others only what they subscribed to.
    let to_all = all.wait_for(2, WAIT).await;
    let to_steps = steps.wait_for(1, WAIT).await;
    all.expect_no_more_than(2, QUIET).await;
    steps.expect_no_more_than(1, Duration::ZERO).await;
    skips.expect_no_more_than(0, Duration::ZERO).await;
    let of_type = |t: &str| to_all.iter().find(|r| r.json["type"] == t).cloned().expect("delivered");
    let started = of_type("onboarding.started");
    assert_eq!(started.json["data"]["owner"], json!({ "type": "user", "id": "alice" }), "{:#}", started.json);
    assert_eq!(started.json["data"]["revision"], 1, "{:#}", started.json);
    assert_signed(&started, &all_secret);
    let to_all = [of_type("step.completed")];

    let other = &to_steps[0];
    assert!(!all_secret.verifies(&other.signature, &other.id, other.timestamp, other.body.as_bytes()));
    for (request, secret) in [(&to_all[0], &all_secret), (&to_steps[0], &steps_secret)] {
        assert_signed(request, secret);
        assert_fresh(request);
        let payload = &request.json;
        assert_eq!(payload["type"], "step.completed", "{payload:#}");
        let data = &payload["data"];
        assert_eq!(data["owner"], json!({ "type": "user", "id": "alice" }), "{payload:#}");
        assert_eq!(data["flow"], json!({ "key": "welcome", "version": 1 }), "{payload:#}");
        assert_eq!(data["step"]["key"], "verify_email", "{payload:#}");
        assert_eq!(data["step"]["points"], 10, "{payload:#}");
        assert_eq!(data["step"]["source"], "USER", "{payload:#}");
        assert_eq!(data["step"]["completedBy"], "alice", "{payload:#}");
        assert!(data["revision"].as_i64().unwrap_or_default() >= 1, "{payload:#}");
        assert!(data["sequence"].is_i64(), "{payload:#}");
        assert_eq!(data["occurredAt"], payload["timestamp"], "{payload:#}");
    }
    // The reference implementation agrees: each delivery verifies under its endpoint's
    // secret only.
    let checked = checked_by_reference_tools(&[&all_secret, &steps_secret], &[&to_all[0], &to_steps[0]]).await;
    let verified: Vec<&Vec<usize>> = checked.iter().map(|c| &c.verified_by).collect();
    assert_eq!(verified, [&vec![0], &vec![1]]);
    // One logical delivery per endpoint, each with its own id.
    assert_ne!(to_all[0].id, to_steps[0].id);
    assert_eq!(to_all[0].body, to_steps[0].body, "the same event, the same bytes");

    // Completing the flow: the catch-all endpoint gets both events.
    app.complete_as("alice", "welcome", "profile").await;
    let to_all = all.wait_for(4, WAIT).await;
    let types: Vec<&str> = to_all.iter().map(|r| r.json["type"].as_str().unwrap_or_default()).collect();
    assert_eq!(types.iter().filter(|t| **t == "onboarding.completed").count(), 1, "{types:?}");
    let done = to_all.iter().find(|r| r.json["type"] == "onboarding.completed").unwrap();
    assert_eq!(done.json["data"]["points"], 15, "{:#}", done.json);
    assert!(done.json["data"].get("step").is_none());
    let step = to_all.iter().find(|r| r.json["data"]["step"]["key"] == "profile").unwrap();
    assert!(
        step.json["data"]["revision"].as_i64() <= done.json["data"]["revision"].as_i64(),
        "revisions order the events"
    );
    steps.wait_for(2, WAIT).await;
    all.expect_no_more_than(4, QUIET).await;
    steps.expect_no_more_than(2, Duration::ZERO).await;
    skips.expect_no_more_than(0, Duration::ZERO).await;

    let page =
        wait_for_log(&app, &steps_id, |p| nodes(p).len() == 2 && nodes(p).iter().all(|n| n["status"] == "SUCCEEDED"))
            .await;
    for node in nodes(&page) {
        assert_eq!(node["attemptCount"], 1);
        assert_eq!(node["eventType"], "step.completed");
        assert_eq!(node["attempts"][0]["statusCode"], 200);
    }
}

async fn failed_attempts_are_retried_with_the_same_webhook_id(app: TestApp) {
    publish(&app).await;
    let receiver = Receiver::start().await;
    receiver.script(&[500, 500, 500, 200]);
    let (id, secret) = create(&app, &receiver.url(), &["step.completed"]).await;
    app.complete_as("alice", "welcome", "verify_email").await;

    let requests = receiver.wait_for(4, WAIT).await;
    receiver.expect_no_more_than(4, QUIET).await;
    let ids: BTreeSet<&str> = requests.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one webhook-id on every attempt: {ids:?}");
    for request in &requests {
        assert_signed(request, &secret);
        assert_eq!(request.body, requests[0].body, "the same body on every attempt");
    }
    let page = wait_for_log(&app, &id, |p| nodes(p).first().is_some_and(|n| n["status"] == "SUCCEEDED")).await;
    let delivery = &nodes(&page)[0];
    assert_eq!(delivery["webhookId"], requests[0].id);
    assert_eq!(delivery["attemptCount"], 4);
    let statuses: Vec<i64> =
        delivery["attempts"].as_array().unwrap().iter().map(|a| a["statusCode"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [500, 500, 500, 200]);
    let numbers: Vec<i64> =
        delivery["attempts"].as_array().unwrap().iter().map(|a| a["number"].as_i64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    // The streak of failures ended with the success.
    assert!(endpoint(&app, &id).await["failingSince"].is_null());
}

async fn a_receiver_down_for_a_while_gets_everything_afterwards(app: TestApp) {
    publish(&app).await;
    let addr = Receiver::unused_addr().await;
    let (id, secret) = create(&app, &format!("http://{addr}/hook"), &["*"]).await;
    for user in ["u1", "u2", "u3"] {
        app.complete_as(user, "welcome", "verify_email").await;
    }
    // Every delivery fails at least once while nothing listens.
    let page = wait_for_log(&app, &id, |p| {
        nodes(p).len() == 6 && nodes(p).iter().all(|n| n["attemptCount"].as_i64() >= Some(2))
    })
    .await;
    let error = nodes(&page)[0]["attempts"][0]["error"].as_str().unwrap_or_default().to_string();
    assert!(!error.is_empty(), "an attempt without answer says why: {page:#}");
    assert!(nodes(&page)[0]["attempts"][0]["statusCode"].is_null());
    assert!(!endpoint(&app, &id).await["failingSince"].is_null(), "the endpoint is failing");

    // Each user's enrollment and completion.
    let receiver = Receiver::start_on(addr).await;
    let requests = receiver.wait_for(6, WAIT).await;
    receiver.expect_no_more_than(6, QUIET).await;
    let owners: BTreeSet<&str> = requests.iter().map(|r| r.json["data"]["owner"]["id"].as_str().unwrap()).collect();
    assert_eq!(owners, BTreeSet::from(["u1", "u2", "u3"]));
    requests.iter().for_each(|r| assert_signed(r, &secret));
    wait_for_log(&app, &id, |p| nodes(p).iter().all(|n| n["status"] == "SUCCEEDED")).await;
    assert!(endpoint(&app, &id).await["failingSince"].is_null());
}

async fn gone_disables_the_endpoint(app: TestApp) {
    publish(&app).await;
    let receiver = Receiver::start().await;
    receiver.answer(410);
    let (id, _) = create(&app, &receiver.url(), &["step.completed"]).await;
    app.complete_as("alice", "welcome", "verify_email").await;
    receiver.wait_for(1, WAIT).await;
    let page = wait_for_log(&app, &id, |p| nodes(p).first().is_some_and(|n| n["status"] == "DEAD")).await;
    assert_eq!(nodes(&page)[0]["attemptCount"], 1, "410 is not retried");
    let disabled = endpoint(&app, &id).await;
    assert_eq!(disabled["enabled"], false, "{disabled:#}");
    assert!(disabled["disabledReason"].as_str().unwrap_or_default().contains("410"), "{disabled:#}");

    // A disabled endpoint gets nothing new.
    app.complete_as("bob", "welcome", "verify_email").await;
    receiver.expect_no_more_than(1, QUIET).await;
    assert_eq!(nodes(&deliveries(&app, &id, json!({})).await).len(), 1);

    // Enabled again, it receives what comes next.
    receiver.answer(200);
    let query = "mutation($i: ID!) { setWebhookEndpointEnabled(id: $i, enabled: true) { enabled disabledReason } }";
    let enabled = app.ok(&app.admin(), query, json!({ "i": id })).await;
    assert_eq!(enabled["setWebhookEndpointEnabled"], json!({ "enabled": true, "disabledReason": null }));
    app.complete_as("carol", "welcome", "verify_email").await;
    let requests = receiver.wait_for(2, WAIT).await;
    assert_eq!(requests[1].json["data"]["owner"]["id"], "carol");
}

async fn a_rotated_secret_signs_beside_the_new_one_until_the_overlap_ends(app: TestApp) {
    publish(&app).await;
    let receiver = Receiver::start().await;
    let (id, old) = create(&app, &receiver.url(), &["step.completed"]).await;
    let rotate = "mutation($i: ID!) { rotateWebhookSecret(id: $i) { secret endpoint { id previousSecretExpiresAt } } }";
    let rotated = app.ok(&app.admin(), rotate, json!({ "i": id })).await["rotateWebhookSecret"].clone();
    let new = Secret::parse(rotated["secret"].as_str().unwrap()).unwrap();
    assert_ne!(new, old);
    assert!(rotated["endpoint"]["previousSecretExpiresAt"].is_string(), "{rotated:#}");

    app.complete_as("alice", "welcome", "verify_email").await;
    let during = receiver.wait_for(1, WAIT).await[0].clone();
    assert_eq!(during.signatures().len(), 2, "{during:?}");
    assert!(during.signatures()[0] == new.sign(&during.id, during.timestamp, during.body.as_bytes()), "new first");
    assert_signed(&during, &new);
    assert_signed(&during, &old);
    // Both verify with the reference implementation too, as a receiver holding either
    // secret would check. (After the overlap the test's clock is a day ahead, past the
    // package's five-minute timestamp tolerance, so only our verifier checks that one.)
    let stranger = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("a secret");
    let checked = checked_by_reference_tools(&[&old, &new, &stranger], &[&during]).await;
    assert_eq!(checked, [Checked { verified_by: vec![0, 1], schema_errors: vec![] }]);

    // Past the overlap (24 h by default), only the new secret signs.
    app.webhooks.as_ref().unwrap().clock.advance(Duration::from_secs(24 * 3600 + 60));
    app.complete_as("bob", "welcome", "verify_email").await;
    let after = receiver.wait_for(2, WAIT).await[1].clone();
    assert_eq!(after.signatures().len(), 1, "{after:?}");
    assert_signed(&after, &new);
    assert!(!old.verifies(&after.signature, &after.id, after.timestamp, after.body.as_bytes()));
}

async fn secrets_are_shown_only_on_creation_and_rotation(app: TestApp) {
    let receiver = Receiver::start().await;
    let (id, secret) = create(&app, &receiver.url(), &["*"]).await;
    let secret = secret.reveal();
    // No field of an endpoint is its secret: asking for one is an error...
    let code = app.code(Some(&app.admin()), "{ webhookEndpoints { id secret } }", json!({})).await;
    assert_eq!(code, "VALIDATION_FAILED");
    // ...and nothing any query answers contains it.
    let everything = "query($i: ID!) { webhookEndpoints { id url eventTypes description enabled disabledReason \
        failingSince previousSecretExpiresAt createdAt updatedAt } webhookEndpoint(id: $i) { id url } }";
    let listed = app.gql(Some(&app.admin()), everything, json!({ "i": id })).await;
    assert!(listed.get("errors").is_none(), "{listed:#}");
    assert_eq!(listed["data"]["webhookEndpoints"][0]["id"], id.as_str());
    assert!(!listed.to_string().contains(&secret), "a query returned the secret");
    assert!(!listed.to_string().contains("whsec_"), "a query returned a secret");

    // Admins only.
    for token in [app.user("alice"), app.service()] {
        let code = app.code(Some(&token), "{ webhookEndpoints { id } }", json!({})).await;
        assert_eq!(code, "FORBIDDEN");
        let code = app.code(Some(&token), CREATE, json!({ "u": receiver.url(), "t": ["*"] })).await;
        assert_eq!(code, "FORBIDDEN");
    }
    let code = app.code(None, "{ webhookEndpoints { id } }", json!({})).await;
    assert_eq!(code, "UNAUTHENTICATED");
}

async fn the_delivery_log_pages_and_filters(app: TestApp) {
    publish(&app).await;
    let receiver = Receiver::start().await;
    let (id, _) = create(&app, &receiver.url(), &["step.completed", "onboarding.completed"]).await;
    // Two users finish the flow (six events), a third completes one step.
    for user in ["u1", "u2"] {
        app.complete_as(user, "welcome", "verify_email").await;
        app.complete_as(user, "welcome", "profile").await;
    }
    app.complete_as("u3", "welcome", "verify_email").await;
    receiver.wait_for(7, WAIT).await;
    wait_for_log(&app, &id, |p| nodes(p).len() == 7 && nodes(p).iter().all(|n| n["status"] == "SUCCEEDED")).await;

    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = deliveries(&app, &id, json!({ "f": 3, "a": after })).await;
        let ids: Vec<String> = nodes(&page).iter().map(|n| n["id"].as_str().unwrap().to_string()).collect();
        assert!(ids.len() <= 3);
        seen.extend(ids);
        if page["hasNextPage"] == false {
            assert!(page["endCursor"].is_null());
            break;
        }
        after = page["endCursor"].clone();
    }
    assert_eq!(seen.len(), 7, "every delivery once across pages: {seen:?}");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 7);

    let count = |page: &Value| nodes(page).len();
    assert_eq!(count(&deliveries(&app, &id, json!({ "t": "onboarding.completed" })).await), 2);
    assert_eq!(count(&deliveries(&app, &id, json!({ "t": "step.completed" })).await), 5);
    assert_eq!(count(&deliveries(&app, &id, json!({ "s": "SUCCEEDED" })).await), 7);
    assert_eq!(count(&deliveries(&app, &id, json!({ "s": "DEAD" })).await), 0);

    let bad = |vars: Value| {
        let app = &app;
        let id = id.clone();
        async move {
            let mut all = json!({ "e": id });
            all.as_object_mut().unwrap().extend(vars.as_object().unwrap().clone());
            app.code(Some(&app.admin()), DELIVERIES, all).await
        }
    };
    assert_eq!(bad(json!({ "f": 0 })).await, "VALIDATION_FAILED");
    assert_eq!(bad(json!({ "f": 101 })).await, "VALIDATION_FAILED");
    assert_eq!(bad(json!({ "t": "step.done" })).await, "VALIDATION_FAILED");
    let missing = app.code(Some(&app.admin()), DELIVERIES, json!({ "e": uuid::Uuid::now_v7().to_string() })).await;
    assert_eq!(missing, "NOT_FOUND");
}

async fn redeliver_and_replay_send_again_with_the_same_webhook_id(app: TestApp) {
    publish(&app).await;
    let first = Receiver::start().await;
    let (first_id, _) = create(&app, &first.url(), &["step.completed"]).await;
    app.complete_as("alice", "welcome", "verify_email").await;
    app.complete_as("bob", "welcome", "verify_email").await;
    first.wait_for(2, WAIT).await;
    let page =
        wait_for_log(&app, &first_id, |p| nodes(p).len() == 2 && nodes(p).iter().all(|n| n["status"] == "SUCCEEDED"))
            .await;
    let delivery = nodes(&page)[0].clone();

    let redeliver = "mutation($d: ID!) { redeliverWebhook(deliveryId: $d) { id webhookId status attemptCount } }";
    let again = app.ok(&app.admin(), redeliver, json!({ "d": delivery["id"] })).await["redeliverWebhook"].clone();
    assert_eq!(again["webhookId"], delivery["webhookId"]);
    let requests = first.wait_for(3, WAIT).await;
    assert_eq!(requests[2].id, delivery["webhookId"].as_str().unwrap(), "the same webhook-id");
    let original = requests.iter().find(|r| r.id == requests[2].id).unwrap();
    assert_eq!(original.body, requests[2].body);
    // The log numbers attempts over the delivery's life: the redelivery is attempt 2.
    let logged = wait_for_log(&app, &first_id, |p| {
        nodes(p).iter().any(|n| n["id"] == delivery["id"] && n["status"] == "SUCCEEDED" && n["attemptCount"] == 2)
    })
    .await;
    let logged = nodes(&logged).iter().find(|n| n["id"] == delivery["id"]).unwrap().clone();
    let numbers: Vec<&Value> = logged["attempts"].as_array().unwrap().iter().map(|a| &a["number"]).collect();
    assert_eq!(numbers, [&json!(1), &json!(2)], "{logged:#}");
    let missing = app.code(Some(&app.admin()), redeliver, json!({ "d": uuid::Uuid::now_v7().to_string() })).await;
    assert_eq!(missing, "NOT_FOUND");

    // An endpoint made after the events gets them by replay; the first one gets its own
    // deliveries again, same ids.
    let late = Receiver::start().await;
    let (late_id, late_secret) = create(&app, &late.url(), &["step.completed"]).await;
    late.expect_no_more_than(0, QUIET).await;
    let replay = "mutation($e: ID!, $s: DateTime!) { replayWebhookEndpoint(endpointId: $e, since: $s) }";
    let since = "2000-01-01T00:00:00Z";
    let queued = app.ok(&app.admin(), replay, json!({ "e": late_id, "s": since })).await;
    assert_eq!(queued["replayWebhookEndpoint"], 2);
    let replayed = late.wait_for(2, WAIT).await;
    replayed.iter().for_each(|r| assert_signed(r, &late_secret));
    let owners: BTreeSet<&str> = replayed.iter().map(|r| r.json["data"]["owner"]["id"].as_str().unwrap()).collect();
    assert_eq!(owners, BTreeSet::from(["alice", "bob"]));
    late.expect_no_more_than(2, QUIET).await;

    wait_for_log(&app, &first_id, |p| nodes(p).iter().all(|n| n["status"] == "SUCCEEDED")).await;
    let queued = app.ok(&app.admin(), replay, json!({ "e": first_id, "s": since })).await;
    assert_eq!(queued["replayWebhookEndpoint"], 2);
    let all = first.wait_for(5, WAIT).await;
    let ids: BTreeSet<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "replays reuse the deliveries' webhook-ids: {ids:?}");
    // A time after every event replays nothing.
    let queued = app.ok(&app.admin(), replay, json!({ "e": first_id, "s": "2999-01-01T00:00:00Z" })).await;
    assert_eq!(queued["replayWebhookEndpoint"], 0);
}

async fn a_dispatcher_that_dies_mid_delivery_is_retried_with_the_same_webhook_id(app: TestApp) {
    publish(&app).await;
    let receiver = Receiver::start().await;
    // The first request hangs well past the crash.
    receiver.delay(&[Duration::from_secs(3)]);
    let (id, secret) = create(&app, &receiver.url(), &["step.completed"]).await;
    app.complete_as("alice", "welcome", "verify_email").await;
    let first = receiver.wait_for(1, WAIT).await[0].clone();
    // Killed mid-attempt: nothing is recorded, the claim stays until its lease runs out.
    app.dispatcher.as_ref().unwrap().abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let page = deliveries(&app, &id, json!({})).await;
    assert_eq!(nodes(&page)[0]["status"], "SENDING", "{page:#}");
    assert_eq!(nodes(&page)[0]["attemptCount"], 0, "{page:#}");

    // Another instance, on the same clock: nothing happens while the lease holds...
    let settings = app.webhooks.clone().unwrap();
    let _other = app.another_instance(settings.clone()).await;
    receiver.expect_no_more_than(1, QUIET).await;
    // ...and once it has run out, the delivery is attempted again.
    settings.clock.advance(settings.lease + Duration::from_secs(1));
    let requests = receiver.wait_for(2, WAIT).await;
    assert_eq!(requests[1].id, first.id, "the retry carries the same webhook-id");
    assert_eq!(requests[1].body, first.body);
    assert_signed(&requests[1], &secret);
    wait_for_log(&app, &id, |p| nodes(p)[0]["status"] == "SUCCEEDED").await;
}

async fn endpoint_inputs_are_validated_with_stable_codes(app: TestApp) {
    let admin = app.admin();
    let receiver = Receiver::start().await;
    let url = receiver.url();
    let code = |vars: Value| {
        let (app, admin) = (&app, &admin);
        async move { app.code(Some(admin), CREATE, vars).await }
    };
    assert_eq!(code(json!({ "u": url, "t": [] })).await, "VALIDATION_FAILED");
    assert_eq!(code(json!({ "u": url, "t": ["step.done"] })).await, "VALIDATION_FAILED");
    assert_eq!(code(json!({ "u": url, "t": ["*", "step.completed"] })).await, "VALIDATION_FAILED");
    assert_eq!(code(json!({ "u": url, "t": vec!["step.completed"; 65] })).await, "VALIDATION_FAILED");
    assert_eq!(code(json!({ "u": "not a url", "t": ["*"] })).await, "VALIDATION_FAILED");
    assert_eq!(code(json!({ "u": "ftp://example.com/", "t": ["*"] })).await, "VALIDATION_FAILED");
    let long = format!("{url}?{}", "a".repeat(2048));
    assert_eq!(code(json!({ "u": long, "t": ["*"] })).await, "VALIDATION_FAILED");
    assert_eq!(code(json!({ "u": url, "t": ["*"], "d": "x".repeat(1025) })).await, "VALIDATION_FAILED");

    let (id, _) = create(&app, &url, &["step.completed", "step.skipped"]).await;
    let update = "mutation($i: ID!, $u: String, $t: [String!], $d: String) { \
        updateWebhookEndpoint(id: $i, url: $u, eventTypes: $t, description: $d) { url eventTypes description } }";
    let updated = app.ok(&admin, update, json!({ "i": id, "t": ["onboarding.completed"], "d": "" })).await;
    assert_eq!(
        updated["updateWebhookEndpoint"],
        json!({ "url": url, "eventTypes": ["onboarding.completed"], "description": null })
    );
    let refused = app.code(Some(&admin), update, json!({ "i": id, "u": "http://169.254.169.254/" })).await;
    assert_eq!(refused, "VALIDATION_FAILED", "metadata addresses are refused even where private ones are allowed");
    let missing = app.code(Some(&admin), update, json!({ "i": uuid::Uuid::now_v7().to_string(), "d": "x" })).await;
    assert_eq!(missing, "NOT_FOUND");

    let delete = "mutation($i: ID!) { deleteWebhookEndpoint(id: $i) }";
    assert_eq!(app.ok(&admin, delete, json!({ "i": id })).await["deleteWebhookEndpoint"], true);
    assert_eq!(app.ok(&admin, delete, json!({ "i": id })).await["deleteWebhookEndpoint"], false);
    assert!(endpoint(&app, &id).await.is_null());
}

async fn old_deliveries_and_outbox_rows_are_pruned_after_retention(app: TestApp) {
    publish(&app).await;
    let receiver = Receiver::start().await;
    let (id, _) = create(&app, &receiver.url(), &["step.completed"]).await;
    app.complete_as("alice", "welcome", "verify_email").await;
    receiver.wait_for(1, WAIT).await;
    wait_for_log(&app, &id, |p| nodes(p).first().is_some_and(|n| n["status"] == "SUCCEEDED")).await;
    // The enrollment's row too, which no endpoint takes.
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 2);

    // A dispatcher whose clock is past the retention prunes when it starts.
    let later = fast();
    later.clock.advance(Duration::from_secs(31 * 24 * 3600));
    let _other = app.another_instance(later).await;
    let deadline = std::time::Instant::now() + WAIT;
    while app.count("SELECT COUNT(*) FROM outbox").await > 0 {
        assert!(std::time::Instant::now() < deadline, "the outbox was never pruned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM webhook_deliveries").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM webhook_attempts").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM webhook_endpoints").await, 1, "endpoints stay");
}

async fn internal_addresses_are_refused_by_default(app: TestApp) {
    // The harness's server runs production's settings: public https endpoints only.
    let admin = app.admin();
    for url in [
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://10.0.0.8/hook",
        "https://192.168.1.10/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fd00:ec2::254]/",
        "https://[::ffff:127.0.0.1]/",
        "https://localhost/hook",
        "http://hooks.example.com/",
    ] {
        let error = app.error(Some(&admin), CREATE, json!({ "u": url, "t": ["*"] })).await;
        assert_eq!(error["extensions"]["code"], "VALIDATION_FAILED", "{url}: {error:#}");
    }
    let ok = app.ok(&admin, CREATE, json!({ "u": "https://hooks.example.com/onramp", "t": ["*"] })).await;
    assert_eq!(ok["createWebhookEndpoint"]["endpoint"]["enabled"], true);
}

/// Two server instances on one PostgreSQL database, each with its own dispatcher: every
/// event is delivered exactly once (no failures, no crash), and no webhook-id is ever in
/// flight twice at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_work_and_never_send_twice() {
    const EVENTS: i64 = 2_000;
    let app = TestApp::postgres_with_webhooks(fast()).await;
    let other = app.another_instance(fast()).await;
    let receiver = Receiver::start().await;
    let (_, secret) = create(&app, &receiver.url(), &["*"]).await;
    // Outbox rows as the engine writes them, in bulk, so the test measures delivery.
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO outbox (kind, subject_id, flow_key, flow_version, step_key, payload, created_at) \
             SELECT 'step_completed', 'user-' || n, 'welcome', 1, 'verify_email', \
             jsonb_build_object('points', 1, 'source', 'EVENT', 'revision', 2), now() \
             FROM generate_series(1, {EVENTS}) AS n"
        ))
        .await
        .expect("insert outbox rows");
    let started = std::time::Instant::now();
    let received = receiver.wait_for(EVENTS as usize, Duration::from_secs(120)).await;
    let elapsed = started.elapsed();
    receiver.expect_no_more_than(EVENTS as usize, QUIET).await;
    assert_eq!(receiver.overlaps(), 0, "a webhook-id was in flight twice at once");
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &received {
        *per_id.entry(r.id.as_str()).or_default() += 1;
    }
    assert_eq!(per_id.len(), EVENTS as usize, "every event delivered");
    assert!(per_id.values().all(|n| *n == 1), "nothing sent twice");
    let owners: BTreeSet<&str> = received.iter().map(|r| r.json["data"]["owner"]["id"].as_str().unwrap()).collect();
    assert_eq!(owners.len(), EVENTS as usize);
    assert_signed(&received[0], &secret);
    // One attempt logged per event: no claim was attempted twice.
    assert_eq!(app.count("SELECT COUNT(*) FROM webhook_attempts").await, EVENTS);
    eprintln!("two dispatchers delivered {EVENTS} events in {elapsed:?}");
    other.dispatcher.shutdown().await;
}

async fn an_endpoint_failing_for_days_is_disabled(app: TestApp) {
    publish(&app).await;
    let receiver = Receiver::start().await;
    receiver.answer(500);
    let (id, _) = create(&app, &receiver.url(), &["step.completed"]).await;
    app.complete_as("alice", "welcome", "verify_email").await;
    receiver.wait_for(2, WAIT).await;
    let failing = endpoint(&app, &id).await;
    assert!(failing["failingSince"].is_string(), "{failing:#}");
    assert_eq!(failing["enabled"], true, "a few failures do not disable it");

    // Five days later (the default), the next failure disables it.
    app.webhooks.as_ref().unwrap().clock.advance(Duration::from_secs(5 * 24 * 3600 + 60));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let e = endpoint(&app, &id).await;
        if e["enabled"] == false {
            assert!(e["disabledReason"].as_str().unwrap_or_default().contains("failed since"), "{e:#}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never disabled: {e:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Disabled, it gets no more attempts, and its delivery waits with no next attempt.
    let count = receiver.received().len();
    receiver.expect_no_more_than(count, QUIET).await;
    let page = deliveries(&app, &id, json!({})).await;
    assert_eq!(nodes(&page)[0]["status"], "FAILED", "{page:#}");
    assert!(nodes(&page)[0]["nextAttemptAt"].is_null(), "{page:#}");

    // Enabled again, what waited is sent at once, whatever its backoff said.
    receiver.answer(200);
    let query = "mutation($i: ID!) { setWebhookEndpointEnabled(id: $i, enabled: true) { enabled } }";
    app.ok(&app.admin(), query, json!({ "i": id })).await;
    receiver.wait_for(count + 1, WAIT).await;
    wait_for_log(&app, &id, |p| nodes(p)[0]["status"] == "SUCCEEDED").await;
}

async fn a_slow_endpoint_does_not_delay_the_others(app: TestApp) {
    publish(&app).await;
    let slow = Receiver::start().await;
    // Every request to it takes 10 s: far longer than the test.
    slow.delay(&[Duration::from_secs(10); 40]);
    let quick = Receiver::start().await;
    create(&app, &slow.url(), &["step.completed"]).await;
    create(&app, &quick.url(), &["step.completed"]).await;
    for i in 0..20 {
        app.complete_as(&format!("user-{i}"), "welcome", "verify_email").await;
    }
    // The quick endpoint gets everything while the slow one has not answered once...
    quick.wait_for(20, WAIT).await;
    // ...and the slow one never has more than its own limit (16) in flight.
    let slow_count = slow.received().len();
    assert!((1..=16).contains(&slow_count), "{slow_count} requests in flight to the slow endpoint");
    slow.expect_no_more_than(16, QUIET).await;
}

async fn a_commit_wakes_the_dispatcher_at_once(app: TestApp) {
    publish(&app).await;
    let receiver = Receiver::start().await;
    create(&app, &receiver.url(), &["step.completed"]).await;
    let mut latencies = Vec::new();
    for i in 0..20 {
        let committed = std::time::Instant::now();
        app.complete_as(&format!("user-{i}"), "welcome", "verify_email").await;
        receiver.wait_for(i + 1, WAIT).await;
        latencies.push(committed.elapsed());
    }
    latencies.sort();
    let (median, worst) = (latencies[latencies.len() / 2], latencies[latencies.len() - 1]);
    eprintln!("completion to receipt (debug build): median {median:?}, worst {worst:?}");
    // Far under the 10 s poll: every delivery was sent on its commit's wake-up.
    assert!(worst < Duration::from_secs(3), "worst {worst:?}");
}

async fn redirects_are_not_followed_and_answers_are_cut_to_1_kib(app: TestApp) {
    publish(&app).await;
    let elsewhere = Receiver::start().await;
    let redirecting = Receiver::start().await;
    redirecting.answer(307);
    redirecting.header("location", &elsewhere.url());
    redirecting.body(&"x".repeat(5000));
    let (id, _) = create(&app, &redirecting.url(), &["step.completed"]).await;
    app.complete_as("alice", "welcome", "verify_email").await;
    redirecting.wait_for(2, WAIT).await;
    elsewhere.expect_no_more_than(0, QUIET).await;
    let page = deliveries(&app, &id, json!({})).await;
    let attempt = &nodes(&page)[0]["attempts"][0];
    assert_eq!(attempt["statusCode"], 307, "{page:#}");
    assert_eq!(attempt["responseBody"].as_str().unwrap().len(), 1024, "at most 1 KiB is kept");
    // A redirect is a failure, retried (the next attempt may be in flight right now).
    let status = nodes(&page)[0]["status"].clone();
    assert!(status == "FAILED" || status == "SENDING", "{page:#}");
}

async fn retry_after_is_honoured_on_503(app: TestApp) {
    publish(&app).await;
    let receiver = Receiver::start().await;
    receiver.script(&[503]);
    receiver.header("retry-after", "2");
    let (_, secret) = create(&app, &receiver.url(), &["step.completed"]).await;
    app.complete_as("alice", "welcome", "verify_email").await;
    let requests = receiver.wait_for(2, WAIT).await;
    let waited = requests[1].at - requests[0].at;
    // The schedule says 0.2 s; the receiver asked for 2.
    assert!(waited >= Duration::from_millis(1900), "retried after {waited:?}");
    assert_eq!(requests[1].id, requests[0].id);
    assert_signed(&requests[1], &secret);
    receiver.expect_no_more_than(2, QUIET).await;
}

async fn shutdown_finishes_and_records_the_attempts_in_flight(mut app: TestApp) {
    publish(&app).await;
    let receiver = Receiver::start().await;
    receiver.delay(&[Duration::from_millis(800)]);
    let (id, _) = create(&app, &receiver.url(), &["step.completed"]).await;
    app.complete_as("alice", "welcome", "verify_email").await;
    receiver.wait_for(1, WAIT).await;
    // Shut down while the attempt is in flight: it completes and is recorded first.
    app.dispatcher.take().unwrap().shutdown().await;
    let page = deliveries(&app, &id, json!({})).await;
    assert_eq!(nodes(&page)[0]["status"], "SUCCEEDED", "{page:#}");
    // Stopped: later events wait in the outbox for the next dispatcher.
    app.complete_as("bob", "welcome", "verify_email").await;
    receiver.expect_no_more_than(1, QUIET).await;
    assert_eq!(
        app.rows("SELECT kind FROM outbox WHERE delivered_at IS NULL ORDER BY id").await,
        ["onboarding_started", "step_completed"],
        "bob's enrollment and completion wait"
    );
}

/// Each event type's payload, as delivered, against docs/webhooks/<type>.schema.json (the
/// schemas the README points receivers to), checked by ajv; each signature by the
/// reference package. A field added to a payload without its schema fails here.
async fn every_payload_matches_the_json_schema_of_its_type(app: TestApp) {
    publish(&app).await;
    let receiver = Receiver::start().await;
    let (_, secret) = create(&app, &receiver.url(), &["*"]).await;
    app.complete_as("alice", "welcome", "verify_email").await;
    let skip =
        "mutation($f: String!, $k: String!, $r: String) { skipStep(flowKey: $f, stepKey: $k, reason: $r) { status } }";
    app.ok(&app.user("alice"), skip, json!({ "f": "welcome", "k": "tour", "r": "seen it" })).await;
    app.complete_as("alice", "welcome", "profile").await;
    let skip_all = "mutation($f: String!) { skipOnboarding(flowKey: $f) { status } }";
    app.ok(&app.user("bob"), skip_all, json!({ "f": "welcome" })).await;
    // nudge.due: a nudge with the webhook channel, due once the engine's clock moves on.
    app.publish(json!({
        "key": "reminded",
        "title": "Reminded",
        "steps": [{ "key": "invite", "title": "Invite" }],
        "nudges": { "rules": [{ "key": "stuck", "trigger": { "kind": "stuck", "step": "invite", "after": "1h" },
            "title": "Invite your team", "message": "It takes a minute", "channel": "webhook" }] }
    }))
    .await;
    app.start_as("carol", "reminded").await;
    app.nudges.as_ref().unwrap().clock.advance(std::time::Duration::from_secs(2 * 3600));

    // Alice's, bob's and carol's enrollments, and six changes.
    let received = receiver.wait_for(9, WAIT).await;
    let types: BTreeSet<&str> = received.iter().filter_map(|r| r.json["type"].as_str()).collect();
    assert_eq!(
        types,
        BTreeSet::from([
            "onboarding.started",
            "step.completed",
            "step.skipped",
            "onboarding.completed",
            "onboarding.skipped",
            "nudge.due"
        ]),
        "{received:#?}"
    );
    let nudge = received.iter().find(|r| r.json["type"] == "nudge.due").unwrap();
    assert_eq!(nudge.json["data"]["nudge"]["step"], "invite", "{:#}", nudge.json);
    let requests: Vec<&Received> = received.iter().collect();
    for (request, checked) in requests.iter().zip(checked_by_reference_tools(&[&secret], &requests).await) {
        assert_eq!(checked, Checked { verified_by: vec![0], schema_errors: vec![] }, "{}", request.body);
    }
    let skipped = received.iter().find(|r| r.json["type"] == "step.skipped").unwrap();
    assert_eq!(skipped.json["data"]["step"]["skipReason"], "seen it", "{:#}", skipped.json);
}
