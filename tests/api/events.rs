//! Event ingestion: triggers completing steps, idempotency under retries and races,
//! mixed batches, events that arrive before enrollment or before their step unlocks,
//! the transactional outbox, and who may send events.

use std::sync::Arc;

use onramp::auth::Role;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::both;
use crate::common::{STATUS_FIELDS, TestApp, complete_mutation, skip_mutation, status_query};

both!(
    a_matching_event_completes_its_step_in_every_flow,
    a_retried_event_is_stored_once,
    a_reused_id_with_other_content_is_a_conflict,
    concurrent_retries_are_applied_once,
    concurrent_events_lose_no_completion,
    overlapping_batches_in_any_order_do_not_deadlock,
    one_batch_for_many_owners_with_repeated_ids,
    concurrent_batches_over_the_same_users_count_each_completion_once,
    a_mixed_batch_applies_the_good_and_rejects_the_bad,
    batch_size_is_limited,
    nul_characters_are_rejected_not_fatal,
    events_before_enrollment_complete_steps_on_enrollment,
    an_event_for_a_locked_step_waits_for_its_prerequisite,
    outbox_records_domain_events_in_order,
    only_services_and_admins_track_events,
);

const RESULT_FIELDS: &str = "id status error { code message } completed { flowKey version stepKey }";

fn track_one() -> String {
    format!("mutation($e: EventInput!) {{ trackEvent(event: $e) {{ {RESULT_FIELDS} }} }}")
}

fn track_many() -> String {
    format!("mutation($e: [EventInput!]!) {{ trackEvents(events: $e) {{ {RESULT_FIELDS} }} }}")
}

fn service(app: &TestApp) -> String {
    app.token("backend", Role::Service)
}

fn event(id: &str, subject: &str, name: &str, properties: Value) -> Value {
    json!({ "id": id, "subjectId": subject, "name": name, "properties": properties })
}

/// One event through `trackEvent`, as a backend sends it.
async fn track(app: &TestApp, event: Value) -> Value {
    app.ok(&service(app), &track_one(), json!({ "e": event })).await["trackEvent"].clone()
}

/// A batch through `trackEvents`.
async fn track_batch(app: &TestApp, events: Vec<Value>) -> Vec<Value> {
    let data = app.ok(&service(app), &track_many(), json!({ "e": events })).await;
    data["trackEvents"].as_array().expect("results").clone()
}

/// The (flowKey, version, stepKey) an event result lists, sorted: the API promises the
/// set, not an order across flows.
fn completed(result: &Value) -> Vec<(String, i64, String)> {
    let mut steps: Vec<(String, i64, String)> = result["completed"]
        .as_array()
        .unwrap_or_else(|| panic!("no completed list in {result:#}"))
        .iter()
        .map(|c| {
            (
                c["flowKey"].as_str().unwrap().to_string(),
                c["version"].as_i64().unwrap(),
                c["stepKey"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    steps.sort();
    steps
}

fn done(flow: &str, step: &str) -> (String, i64, String) {
    (flow.to_string(), 1, step.to_string())
}

fn assert_new(result: &Value, expected: &[(String, i64, String)]) {
    assert_eq!(result["status"], "NEW", "{result:#}");
    assert!(result["error"].is_null(), "{result:#}");
    assert_eq!(completed(result), expected, "{result:#}");
}

fn assert_duplicate(result: &Value) {
    assert_eq!(result["status"], "DUPLICATE", "{result:#}");
    assert!(result["error"].is_null(), "{result:#}");
    assert_eq!(result["completed"], json!([]), "{result:#}");
}

fn assert_rejected(result: &Value, code: &str) {
    assert_eq!(result["status"], "REJECTED", "{result:#}");
    assert_eq!(result["error"]["code"], code, "{result:#}");
    assert!(!result["error"]["message"].as_str().unwrap_or_default().is_empty(), "{result:#}");
    assert_eq!(result["completed"], json!([]), "{result:#}");
}

/// A subject's status in a flow, read by a backend.
async fn status(app: &TestApp, subject: &str, flow: &str) -> Value {
    app.ok(&service(app), &status_query(), json!({ "f": flow, "s": subject })).await["status"].clone()
}

/// The user enrolls (or resumes) with its own token.
async fn start(app: &TestApp, subject: &str, flow: &str) -> Value {
    let query = format!("mutation($f: String!) {{ startOnboarding(flowKey: $f) {{ {STATUS_FIELDS} }} }}");
    app.ok(&app.user(subject), &query, json!({ "f": flow })).await["startOnboarding"].clone()
}

/// The user completes a step with its own token.
async fn complete(app: &TestApp, subject: &str, flow: &str, step: &str) -> Value {
    app.ok(&app.user(subject), &complete_mutation(), json!({ "f": flow, "k": step })).await["completeStep"].clone()
}

fn step<'a>(status: &'a Value, key: &str) -> &'a Value {
    status["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {status:#}"))
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no step {key} in {status:#}"))
}

fn step_keys(status: &Value) -> Vec<String> {
    status["steps"].as_array().unwrap().iter().map(|s| s["key"].as_str().unwrap().to_string()).collect()
}

/// Every first column of a query, as text, in the query's order.
async fn rows(app: &TestApp, sql: &str) -> Vec<String> {
    let statement = Statement::from_string(app.db.get_database_backend(), sql.to_string());
    app.db
        .query_all_raw(statement)
        .await
        .expect("query")
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap_or_else(|e| panic!("`{sql}`: {e:?}")))
        .collect()
}

/// The outbox as `kind:step_key`, in id order.
async fn outbox(app: &TestApp) -> Vec<String> {
    rows(app, "SELECT kind || ':' || COALESCE(step_key, '') FROM outbox ORDER BY id").await
}

/// The stored row of one step of a subject's enrollment: `status/source/event_id`.
async fn stored_step(app: &TestApp, subject: &str, flow: &str, step: &str) -> String {
    let found = rows(
        app,
        &format!(
            "SELECT sp.status || '/' || sp.source || '/' || COALESCE(sp.event_id, '-') FROM step_progress sp \
             JOIN enrollments e ON e.id = sp.enrollment_id JOIN subjects s ON s.id = e.subject_id \
             WHERE s.external_id = '{subject}' AND e.flow_key = '{flow}' AND sp.step_key = '{step}'"
        ),
    )
    .await;
    found.into_iter().next().unwrap_or_else(|| "none".to_string())
}

async fn enrollment_number(app: &TestApp, column: &str, subject: &str, flow: &str) -> i64 {
    app.count(&format!(
        "SELECT e.{column} FROM enrollments e JOIN subjects s ON s.id = e.subject_id \
         WHERE s.external_id = '{subject}' AND e.flow_key = '{flow}'"
    ))
    .await
}

async fn events_of(app: &TestApp, subject: &str) -> i64 {
    app.count(&format!(
        "SELECT COUNT(*) FROM events e JOIN subjects s ON s.id = e.subject_id WHERE s.external_id = '{subject}'"
    ))
    .await
}

/// verify is completed by an event; invite too, once verify is done and with enough
/// invitations; tour is optional and can be finished by its own event.
fn setup_flow() -> Value {
    json!({
        "key": "setup",
        "title": "Set up",
        "steps": [
            { "key": "verify", "title": "Verify your email", "points": 10,
              "trigger": { "event": "user.email_verified" } },
            { "key": "invite", "title": "Invite your team", "dependsOn": ["verify"], "points": 20,
              "trigger": { "event": "team.invited", "where": { "attr": "count", "op": "gte", "value": 2 } } },
            { "key": "tour", "title": "Take the tour", "required": false, "points": 1,
              "trigger": { "event": "tour.done" } }
        ]
    })
}

/// Shares `user.email_verified` with `setup`, with a condition on how it was verified,
/// and a triggered step that applies only on the team plan.
fn growth_flow() -> Value {
    json!({
        "key": "growth",
        "title": "Grow",
        "steps": [
            { "key": "confirmed", "title": "Confirm by link", "points": 3,
              "trigger": { "event": "user.email_verified", "where": { "via": "link" } } },
            { "key": "team_setup", "title": "Set up the team", "points": 7, "condition": { "plan": "team" },
              "trigger": { "event": "user.email_verified" } },
            { "key": "billing", "title": "Add billing", "points": 5 }
        ]
    })
}

async fn a_matching_event_completes_its_step_in_every_flow(app: TestApp) {
    app.publish(setup_flow()).await;
    app.publish(growth_flow()).await;
    start(&app, "alice", "setup").await;
    start(&app, "alice", "growth").await;
    start(&app, "bob", "setup").await;

    // One event, two flows of the same subject; bob's enrollment is not touched.
    let result =
        track(&app, event("alice-verified", "alice", "user.email_verified", json!({ "via": "link", "at": "web" })))
            .await;
    assert_eq!(result["id"], "alice-verified");
    assert_new(&result, &[done("growth", "confirmed"), done("setup", "verify")]);
    assert_eq!(stored_step(&app, "alice", "setup", "verify").await, "COMPLETED/EVENT/alice-verified");
    assert_eq!(stored_step(&app, "alice", "growth", "confirmed").await, "COMPLETED/EVENT/alice-verified");
    assert_eq!(stored_step(&app, "alice", "growth", "team_setup").await, "none", "team_setup does not apply");
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress WHERE status <> 'PENDING'").await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 1);
    assert_eq!(enrollment_number(&app, "points", "alice", "setup").await, 10);
    assert_eq!(enrollment_number(&app, "points", "alice", "growth").await, 3);
    assert_eq!(enrollment_number(&app, "points", "bob", "setup").await, 0);

    let setup = status(&app, "alice", "setup").await;
    assert_eq!(step(&setup, "verify")["status"], "COMPLETED");
    assert_eq!(step(&setup, "verify")["source"], "EVENT");
    assert_eq!(step(&setup, "verify")["metadata"], json!({ "via": "link", "at": "web" }), "properties kept");
    assert!(step(&setup, "verify")["completedAt"].is_string());
    assert_eq!(setup["points"], 10);
    assert_eq!(setup["nextStep"]["key"], "invite");
    let growth = status(&app, "alice", "growth").await;
    assert_eq!(step(&growth, "confirmed")["status"], "COMPLETED");
    assert_eq!(step(&growth, "confirmed")["metadata"], json!({ "via": "link", "at": "web" }));
    assert_eq!(step_keys(&growth), ["confirmed", "billing"]);
    assert_eq!(growth["points"], 3);
    let bob = status(&app, "bob", "setup").await;
    assert_eq!(step(&bob, "verify")["status"], "PENDING");
    assert_eq!(bob["points"], 0);

    // Another name completes nothing, even one that differs by a letter.
    let typo = track(&app, event("alice-typo", "alice", "user.email_verifed", json!({}))).await;
    assert_new(&typo, &[]);

    // The condition reads the event's properties: carol verifies by code first.
    start(&app, "carol", "setup").await;
    start(&app, "carol", "growth").await;
    let by_code = track(&app, event("carol-1", "carol", "user.email_verified", json!({ "via": "code" }))).await;
    assert_new(&by_code, &[done("setup", "verify")]);
    assert_eq!(step(&status(&app, "carol", "growth").await, "confirmed")["status"], "PENDING");
    let too_few = track(&app, event("carol-2", "carol", "team.invited", json!({ "count": 1 }))).await;
    assert_new(&too_few, &[]);
    let no_count = track(&app, event("carol-3", "carol", "team.invited", json!({ "other": 5 }))).await;
    assert_new(&no_count, &[]);
    assert_eq!(step(&status(&app, "carol", "setup").await, "invite")["status"], "PENDING");
    let enough = track(&app, event("carol-4", "carol", "team.invited", json!({ "count": 3 }))).await;
    assert_new(&enough, &[done("setup", "invite")]);
    assert_eq!(stored_step(&app, "carol", "setup", "invite").await, "COMPLETED/EVENT/carol-4");
    let setup = status(&app, "carol", "setup").await;
    assert_eq!(step(&setup, "invite")["metadata"], json!({ "count": 3 }));
    assert_eq!(setup["status"], "COMPLETED");
    assert_eq!(setup["points"], 30);
    let by_link = track(&app, event("carol-5", "carol", "user.email_verified", json!({ "via": "link" }))).await;
    assert_new(&by_link, &[done("growth", "confirmed")]);
    assert_eq!(
        stored_step(&app, "carol", "setup", "verify").await,
        "COMPLETED/EVENT/carol-1",
        "verify stays done once"
    );
    assert_eq!(enrollment_number(&app, "points", "carol", "setup").await, 30, "no second award for verify");

    // A step that starts to apply is completed by the events already stored, the
    // earliest matching one.
    app.set_attributes("carol", json!({ "plan": "team" })).await;
    let growth = status(&app, "carol", "growth").await;
    assert_eq!(step_keys(&growth), ["confirmed", "team_setup", "billing"]);
    assert_eq!(step(&growth, "team_setup")["status"], "COMPLETED");
    assert_eq!(step(&growth, "team_setup")["source"], "EVENT");
    assert_eq!(step(&growth, "team_setup")["metadata"], json!({ "via": "code" }));
    assert_eq!(stored_step(&app, "carol", "growth", "team_setup").await, "COMPLETED/EVENT/carol-1");
    assert_eq!(growth["points"], 10);
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 7);
}

async fn a_retried_event_is_stored_once(app: TestApp) {
    app.publish(setup_flow()).await;
    start(&app, "alice", "setup").await;
    let original = json!({
        "id": "pay-1",
        "subjectId": "alice",
        "name": "user.email_verified",
        "properties": { "a": 1, "b": [1, 2], "c": { "d": "e" } },
        "occurredAt": "2026-01-02T03:04:05.123456789Z"
    });
    let first = track(&app, original.clone()).await;
    assert_new(&first, &[done("setup", "verify")]);
    let after_first = status(&app, "alice", "setup").await;
    assert_eq!(after_first["points"], 10);
    let revision = after_first["revision"].clone();
    let outbox_rows = app.count("SELECT COUNT(*) FROM outbox").await;

    // The same event again, and the same content written differently: keys in another
    // order, the same instant in another offset, through the batch mutation.
    let again = track(&app, original.clone()).await;
    assert_eq!(again["id"], "pay-1");
    assert_duplicate(&again);
    let reordered = json!({
        "id": "pay-1",
        "subjectId": "alice",
        "name": "user.email_verified",
        "properties": { "c": { "d": "e" }, "b": [1, 2], "a": 1 },
        "occurredAt": "2026-01-02T04:04:05.123456789+01:00"
    });
    assert_duplicate(&track(&app, reordered).await);
    let in_batch = track_batch(&app, vec![original.clone()]).await;
    assert_duplicate(&in_batch[0]);

    // A retry that leaves out occurredAt means "now", yet it is the same event.
    let mut without_time = original.clone();
    without_time.as_object_mut().unwrap().remove("occurredAt");
    assert_duplicate(&track(&app, without_time).await);

    let after = status(&app, "alice", "setup").await;
    assert_eq!(after["points"], 10, "points awarded once");
    assert_eq!(after["revision"], revision, "a duplicate changes nothing");
    assert_eq!(after, after_first);
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress WHERE status <> 'PENDING'").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, outbox_rows);
    assert_eq!(stored_step(&app, "alice", "setup", "verify").await, "COMPLETED/EVENT/pay-1");

    // An event with no occurredAt, retried without one, is a duplicate too.
    let no_time = event("pay-2", "alice", "tour.done", json!({}));
    assert_new(&track(&app, no_time.clone()).await, &[done("setup", "tour")]);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_duplicate(&track(&app, no_time).await);
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 2);
    assert_eq!(status(&app, "alice", "setup").await["points"], 11);
}

async fn a_reused_id_with_other_content_is_a_conflict(app: TestApp) {
    app.publish(setup_flow()).await;
    start(&app, "alice", "setup").await;
    start(&app, "mallory", "setup").await;
    let original = json!({
        "id": "evt-1",
        "subjectId": "alice",
        "name": "team.invited",
        "properties": { "count": 5 },
        "occurredAt": "2026-01-02T03:04:05Z"
    });
    assert_new(&track(&app, original.clone()).await, &[]);
    let before = status(&app, "alice", "setup").await;

    let with = |field: &str, value: Value| {
        let mut e = original.clone();
        e[field] = value;
        e
    };
    let reuses = [
        ("name", with("name", json!("user.email_verified"))),
        ("properties", with("properties", json!({ "count": 6 }))),
        ("no properties", with("properties", Value::Null)),
        ("subjectId", with("subjectId", json!("mallory"))),
        ("occurredAt", with("occurredAt", json!("2026-01-02T03:04:06Z"))),
    ];
    for (what, reuse) in &reuses {
        let result = track(&app, reuse.clone()).await;
        assert_eq!(result["id"], "evt-1", "{what}");
        assert_rejected(&result, "CONFLICT");
    }
    // As a batch too.
    let results = track_batch(&app, reuses.iter().map(|(_, e)| e.clone()).collect()).await;
    for result in &results {
        assert_rejected(result, "CONFLICT");
    }

    // Nothing of them was stored or applied: the name would have completed verify for
    // alice, the subject change verify for mallory.
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 1);
    assert_eq!(rows(&app, "SELECT name FROM events").await, ["team.invited"]);
    assert_eq!(events_of(&app, "mallory").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress WHERE status <> 'PENDING'").await, 0);
    // Only the two enrollments made before: no step event.
    assert_eq!(outbox(&app).await, ["onboarding_started:", "onboarding_started:"]);
    assert_eq!(status(&app, "alice", "setup").await, before);
    assert_eq!(enrollment_number(&app, "points", "mallory", "setup").await, 0);
    assert_eq!(enrollment_number(&app, "revision", "mallory", "setup").await, 1);

    // The original is still a duplicate after all that.
    assert_duplicate(&track(&app, original).await);
}

async fn concurrent_retries_are_applied_once(app: TestApp) {
    app.publish(setup_flow()).await;
    start(&app, "alice", "setup").await;
    let app = Arc::new(app);
    let the_event = json!({
        "id": "race-1",
        "subjectId": "alice",
        "name": "user.email_verified",
        "properties": { "via": "link" },
        "occurredAt": "2026-01-02T03:04:05Z"
    });
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (app, the_event) = (app.clone(), the_event.clone());
        tasks.push(tokio::spawn(async move { track(&app, the_event).await }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    let new: Vec<&Value> = results.iter().filter(|r| r["status"] == "NEW").collect();
    let duplicates = results.iter().filter(|r| r["status"] == "DUPLICATE").count();
    assert_eq!(new.len(), 1, "exactly one is new: {results:#?}");
    assert_eq!(duplicates, 9, "{results:#?}");
    assert_new(new[0], &[done("setup", "verify")]);
    for r in results.iter().filter(|r| r["status"] == "DUPLICATE") {
        assert_duplicate(r);
    }
    let after = status(&app, "alice", "setup").await;
    assert_eq!(after["points"], 10, "points awarded once");
    assert_eq!(after["revision"], 2, "enrollment, then one completion");
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress WHERE status <> 'PENDING'").await, 1);
    assert_eq!(outbox(&app).await, ["onboarding_started:", "step_completed:verify"]);
}

async fn concurrent_events_lose_no_completion(app: TestApp) {
    // Eight steps, each completed by its own event; every event sent twice at once, and
    // a subject that is not enrolled yet so its first sight races too.
    let steps: Vec<Value> = (0..8)
        .map(|i| {
            json!({ "key": format!("s{i}"), "title": format!("Step {i}"), "points": 1 << i,
                    "trigger": { "event": format!("race.s{i}") } })
        })
        .collect();
    app.publish(json!({ "key": "race", "title": "Race", "steps": steps })).await;
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for copy in 0..2 {
        for i in 0..8 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let _ = copy;
                track(&app, event(&format!("e{i}"), "zoe", &format!("race.s{i}"), json!({ "i": i }))).await
            }));
        }
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    for i in 0..8 {
        let id = format!("e{i}");
        let of_id: Vec<&Value> = results.iter().filter(|r| r["id"] == id.as_str()).collect();
        assert_eq!(of_id.iter().filter(|r| r["status"] == "NEW").count(), 1, "{id}: {of_id:#?}");
        assert_eq!(of_id.iter().filter(|r| r["status"] == "DUPLICATE").count(), 1, "{id}: {of_id:#?}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 8);
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0, "events do not enroll");

    // Enrolling applies all eight at once.
    let started = start(&app, "zoe", "race").await;
    assert_eq!(started["status"], "COMPLETED");
    assert_eq!(started["points"], 255);
    assert_eq!(started["completedCount"], 8);
    for i in 0..8 {
        let s = step(&started, &format!("s{i}"));
        assert_eq!(s["source"], "EVENT");
        assert_eq!(s["metadata"], json!({ "i": i }));
    }

    // Enrolled now: concurrent new events for the same enrollment.
    let steps: Vec<Value> = (0..8)
        .map(|i| {
            json!({ "key": format!("t{i}"), "title": format!("Step {i}"), "points": 1 << i,
                    "trigger": { "event": format!("race.t{i}") } })
        })
        .collect();
    app.publish(json!({ "key": "race2", "title": "Race", "steps": steps })).await;
    start(&app, "zoe", "race2").await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            track(&app, event(&format!("f{i}"), "zoe", &format!("race.t{i}"), json!({}))).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let result = t.await.expect("task");
        assert_new(&result, &[done("race2", &format!("t{i}"))]);
    }
    let after = status(&app, "zoe", "race2").await;
    assert_eq!(after["points"], 255, "no completion lost");
    assert_eq!(after["status"], "COMPLETED");
    assert_eq!(enrollment_number(&app, "points", "zoe", "race2").await, 255);
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress WHERE source = 'EVENT'").await, 16);
}

async fn a_mixed_batch_applies_the_good_and_rejects_the_bad(app: TestApp) {
    app.publish(setup_flow()).await;
    start(&app, "alice", "setup").await;
    start(&app, "bob", "setup").await;
    assert_new(&track(&app, event("old-1", "alice", "tour.done", json!({}))).await, &[done("setup", "tour")]);

    // Ids are bounded in bytes (the id limit, 256 by default), whatever the characters.
    let long_id = "x".repeat(257);
    let longest_id = "é".repeat(128);
    let batch = vec![
        event("ok-1", "alice", "user.email_verified", json!({ "n": 1 })),
        event("", "alice", "user.email_verified", json!({})),
        event(&long_id, "alice", "user.email_verified", json!({})),
        event("no-name", "alice", "", json!({})),
        event("bad-props", "alice", "user.email_verified", json!([1, 2])),
        event("old-1", "alice", "tour.skipped", json!({})),
        event("ok-2", "bob", "user.email_verified", json!({ "n": 2 })),
        event("old-1", "alice", "tour.done", json!({})),
        event("   ", "alice", "user.email_verified", json!({})),
        event("no-subject", "", "user.email_verified", json!({})),
        event(&longest_id, "carol", "something", json!({})),
        event("ok-1", "alice", "user.email_verified", json!({ "n": 1 })),
        event("ok-2", "bob", "user.email_verified", json!({ "n": 3 })),
        event("props-text", "bob", "team.invited", json!("count=3")),
        event("blank-name", "bob", "  ", json!({})),
    ];
    let ids: Vec<Value> = batch.iter().map(|e| e["id"].clone()).collect();
    let results = track_batch(&app, batch).await;
    assert_eq!(results.len(), ids.len());
    let result_ids: Vec<Value> = results.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(result_ids, ids, "results in input order");

    assert_new(&results[0], &[done("setup", "verify")]);
    for i in [1, 2, 3, 4, 8, 9, 13, 14] {
        assert_rejected(&results[i], "VALIDATION_FAILED");
    }
    assert_rejected(&results[5], "CONFLICT");
    assert_new(&results[6], &[done("setup", "verify")]);
    assert_duplicate(&results[7]);
    assert_new(&results[10], &[]);
    assert_duplicate(&results[11]);
    assert_rejected(&results[12], "CONFLICT");

    // Stored: the earlier event and the three good ones, nothing of the rest.
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 4);
    assert_eq!(app.count("SELECT COUNT(*) FROM events WHERE event_id IN ('old-1', 'ok-1', 'ok-2')").await, 3);
    assert_eq!(app.count(&format!("SELECT COUNT(*) FROM events WHERE event_id = '{longest_id}'")).await, 1);
    assert_eq!(rows(&app, "SELECT name FROM events WHERE event_id = 'old-1'").await, ["tour.done"]);
    assert_eq!(events_of(&app, "bob").await, 1);
    let alice = status(&app, "alice", "setup").await;
    assert_eq!(step(&alice, "verify")["metadata"], json!({ "n": 1 }));
    assert_eq!(alice["points"], 11);
    let bob = status(&app, "bob", "setup").await;
    assert_eq!(step(&bob, "verify")["metadata"], json!({ "n": 2 }), "the conflicting reuse changed nothing");
    assert_eq!(step(&bob, "invite")["status"], "PENDING", "the rejected invitation was not applied");
    assert_eq!(bob["points"], 10);
    assert_eq!(stored_step(&app, "bob", "setup", "verify").await, "COMPLETED/EVENT/ok-2");

    // A batch of only bad events writes nothing.
    let results = track_batch(&app, vec![event("", "dave", "x", json!({})), event("d-1", "dave", "x", json!(5))]).await;
    assert_rejected(&results[0], "VALIDATION_FAILED");
    assert_rejected(&results[1], "VALIDATION_FAILED");
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects WHERE external_id = 'dave'").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 4);

    // trackEvent reports a bad event the same way.
    let result = track(&app, event("bad", "alice", "x", json!([]))).await;
    assert_eq!(result["id"], "bad");
    assert_rejected(&result, "VALIDATION_FAILED");

    // An empty batch is fine and does nothing.
    assert!(track_batch(&app, vec![]).await.is_empty());
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 4);
}

async fn batch_size_is_limited(app: TestApp) {
    app.publish(setup_flow()).await;
    start(&app, "s0", "setup").await;
    let batch = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| {
                let name = if i == 0 { "user.email_verified" } else { "page.viewed" };
                event(&format!("b-{i}"), &format!("s{}", i % 10), name, json!({ "i": i }))
            })
            .collect()
    };
    let too_many = app.error(Some(&service(&app)), &track_many(), json!({ "e": batch(1001) })).await;
    assert_eq!(too_many["extensions"]["code"], "VALIDATION_FAILED", "{too_many:#}");
    assert!(too_many["message"].as_str().unwrap().contains("1000"), "{too_many:#}");
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 0, "refused as a whole");
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 1);
    // s0's enrollment has a row per applicable step; none was acted on.
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress").await, 3);
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress WHERE status <> 'PENDING'").await, 0);

    let results = track_batch(&app, batch(1000)).await;
    assert_eq!(results.len(), 1000);
    assert_new(&results[0], &[done("setup", "verify")]);
    for (i, r) in results.iter().enumerate().skip(1) {
        assert_eq!(r["id"], format!("b-{i}"));
        assert_new(r, &[]);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 1000);
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 10);
    assert_eq!(events_of(&app, "s3").await, 100);
    assert_eq!(status(&app, "s0", "setup").await["points"], 10);
}

async fn events_before_enrollment_complete_steps_on_enrollment(app: TestApp) {
    app.publish(setup_flow()).await;

    // dora is not enrolled anywhere: the event is kept.
    let early = track(&app, event("d-1", "dora", "user.email_verified", json!({ "via": "link" }))).await;
    assert_new(&early, &[]);
    assert_eq!(events_of(&app, "dora").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0, "an event does not enroll");
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress WHERE status <> 'PENDING'").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 0);
    // A read shows what the event already completes (computed: still nothing stored).
    let before = status(&app, "dora", "setup").await;
    assert_eq!(before["status"], "NOT_STARTED");
    assert_eq!(step(&before, "verify")["status"], "COMPLETED");
    assert_eq!(step(&before, "verify")["source"], "EVENT");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0, "a read does not enroll");

    // Enrolling applies it at once.
    let started = start(&app, "dora", "setup").await;
    assert_eq!(started["status"], "IN_PROGRESS");
    assert_eq!(step(&started, "verify")["status"], "COMPLETED");
    assert_eq!(step(&started, "verify")["source"], "EVENT");
    assert_eq!(step(&started, "verify")["metadata"], json!({ "via": "link" }));
    assert_eq!(started["points"], 10);
    assert_eq!(started["nextStep"]["key"], "invite");
    assert_eq!(stored_step(&app, "dora", "setup", "verify").await, "COMPLETED/EVENT/d-1");
    assert_eq!(status(&app, "dora", "setup").await, started, "what the mutation returned was stored");
    assert_eq!(outbox(&app).await, ["onboarding_started:", "step_completed:verify"]);

    // eve enrolls by completing another step. Her stored events complete verify (the
    // earliest matching one by occurrence, whatever the arrival order) and then invite,
    // which verify unlocks.
    let mut late = event("eve-late", "eve", "user.email_verified", json!({ "n": 2 }));
    late["occurredAt"] = json!("2026-01-02T10:00:00Z");
    let mut earliest = event("eve-early", "eve", "user.email_verified", json!({ "n": 1 }));
    earliest["occurredAt"] = json!("2026-01-01T10:00:00Z");
    let invited = event("eve-invite", "eve", "team.invited", json!({ "count": 4 }));
    for result in track_batch(&app, vec![late, earliest, invited]).await {
        assert_new(&result, &[]);
    }
    let after = complete(&app, "eve", "setup", "tour").await;
    assert_eq!(step(&after, "tour")["source"], "USER");
    assert_eq!(step(&after, "verify")["status"], "COMPLETED");
    assert_eq!(step(&after, "verify")["source"], "EVENT");
    assert_eq!(step(&after, "verify")["metadata"], json!({ "n": 1 }));
    assert_eq!(step(&after, "invite")["status"], "COMPLETED");
    assert_eq!(step(&after, "invite")["source"], "EVENT");
    assert_eq!(step(&after, "invite")["metadata"], json!({ "count": 4 }));
    assert_eq!(after["status"], "COMPLETED");
    assert_eq!(after["points"], 31);
    assert_eq!(stored_step(&app, "eve", "setup", "verify").await, "COMPLETED/EVENT/eve-early");
    assert_eq!(stored_step(&app, "eve", "setup", "invite").await, "COMPLETED/EVENT/eve-invite");
    assert_eq!(stored_step(&app, "eve", "setup", "tour").await, "COMPLETED/USER/-");
    assert_eq!(status(&app, "eve", "setup").await, after);
}

async fn an_event_for_a_locked_step_waits_for_its_prerequisite(app: TestApp) {
    app.publish(json!({
        "key": "gate",
        "title": "Gate",
        "steps": [
            { "key": "verify", "title": "Verify", "points": 10 },
            { "key": "invite", "title": "Invite", "dependsOn": ["verify"], "points": 20,
              "trigger": { "event": "team.invited", "where": { "attr": "count", "op": "gte", "value": 2 } } },
            { "key": "tour", "title": "Tour", "required": false, "points": 1 }
        ]
    }))
    .await;
    start(&app, "alice", "gate").await;
    let before = status(&app, "alice", "gate").await;

    // Too few first (and earlier), then enough: neither completes the locked step.
    let mut too_few = event("inv-0", "alice", "team.invited", json!({ "count": 1 }));
    too_few["occurredAt"] = json!("2026-01-01T00:00:00Z");
    assert_new(&track(&app, too_few).await, &[]);
    assert_new(&track(&app, event("inv-1", "alice", "team.invited", json!({ "count": 3 }))).await, &[]);
    let waiting = status(&app, "alice", "gate").await;
    assert_eq!(step(&waiting, "invite")["status"], "PENDING");
    assert_eq!(step(&waiting, "invite")["available"], false);
    assert_eq!(step(&waiting, "invite")["blockedBy"], json!(["verify"]));
    assert_eq!(waiting, before, "nothing changed, not even the revision");
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress WHERE status <> 'PENDING'").await, 0);
    assert_eq!(outbox(&app).await, ["onboarding_started:"], "only the enrollment made before");

    // The user completes the prerequisite: the waiting event completes invite in the
    // same transaction, and the response already shows both.
    let after = complete(&app, "alice", "gate", "verify").await;
    assert_eq!(step(&after, "verify")["status"], "COMPLETED");
    assert_eq!(step(&after, "verify")["source"], "USER");
    assert_eq!(step(&after, "invite")["status"], "COMPLETED");
    assert_eq!(step(&after, "invite")["source"], "EVENT");
    assert_eq!(step(&after, "invite")["metadata"], json!({ "count": 3 }));
    assert_eq!(after["points"], 30);
    assert_eq!(after["completedCount"], 2);
    assert_eq!(after["status"], "COMPLETED");
    assert_eq!(after["nextStep"]["key"], "tour");
    assert_eq!(stored_step(&app, "alice", "gate", "invite").await, "COMPLETED/EVENT/inv-1");
    assert_eq!(stored_step(&app, "alice", "gate", "verify").await, "COMPLETED/USER/-");
    assert_eq!(enrollment_number(&app, "points", "alice", "gate").await, 30);
    assert_eq!(status(&app, "alice", "gate").await, after);
    assert_eq!(
        outbox(&app).await,
        ["onboarding_started:", "step_completed:verify", "step_completed:invite", "onboarding_completed:"]
    );

    // With a triggered prerequisite: the early invitation waits, then the verification
    // event completes both. Each completion is reported under the event recorded for it.
    app.publish(setup_flow()).await;
    start(&app, "bob", "setup").await;
    assert_new(&track(&app, event("b-inv", "bob", "team.invited", json!({ "count": 2 }))).await, &[]);
    let verified = track(&app, event("b-ver", "bob", "user.email_verified", json!({}))).await;
    assert_new(&verified, &[done("setup", "verify")]);
    assert_eq!(stored_step(&app, "bob", "setup", "invite").await, "COMPLETED/EVENT/b-inv");
    let bob = status(&app, "bob", "setup").await;
    assert_eq!(bob["status"], "COMPLETED");
    assert_eq!(bob["points"], 30);

    // Both in one batch, the locked step's event first: each reports its own step.
    start(&app, "carol", "setup").await;
    let results = track_batch(
        &app,
        vec![
            event("c-inv", "carol", "team.invited", json!({ "count": 2 })),
            event("c-ver", "carol", "user.email_verified", json!({})),
        ],
    )
    .await;
    assert_new(&results[0], &[done("setup", "invite")]);
    assert_new(&results[1], &[done("setup", "verify")]);
    assert_eq!(status(&app, "carol", "setup").await["points"], 30);
}

async fn outbox_records_domain_events_in_order(app: TestApp) {
    app.publish(setup_flow()).await;
    start(&app, "alice", "setup").await;
    assert_eq!(outbox(&app).await, ["onboarding_started:"], "enrolling is one domain event");
    let started = app.text("SELECT CAST(payload AS TEXT) FROM outbox WHERE kind = 'onboarding_started'").await;
    assert_eq!(serde_json::from_str::<Value>(&started).expect("JSON"), json!({ "revision": 1 }));

    // A failed mutation writes nothing.
    let code = app.code(Some(&app.user("alice")), &complete_mutation(), json!({ "f": "setup", "k": "invite" })).await;
    assert_eq!(code, "STEP_LOCKED");
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 1);

    app.ok(&app.user("alice"), &skip_mutation(), json!({ "f": "setup", "k": "tour", "r": "later" })).await;
    assert_new(
        &track(&app, event("o-1", "alice", "user.email_verified", json!({ "via": "link" }))).await,
        &[done("setup", "verify")],
    );
    assert_duplicate(&track(&app, event("o-1", "alice", "user.email_verified", json!({ "via": "link" }))).await);
    let done_flow = complete(&app, "alice", "setup", "invite").await;
    assert_eq!(done_flow["status"], "COMPLETED");
    assert_eq!(
        outbox(&app).await,
        [
            "onboarding_started:",
            "step_skipped:tour",
            "step_completed:verify",
            "step_completed:invite",
            "onboarding_completed:"
        ]
    );

    // Who, which flow, and what each row says.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE subject_id = 'alice' AND flow_key = 'setup' AND flow_version = 1")
            .await,
        5
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL").await, 5);
    let payload = |kind: &'static str, step: &'static str| {
        let app = &app;
        async move {
            let filter = if step.is_empty() { "step_key IS NULL".to_string() } else { format!("step_key = '{step}'") };
            let text =
                app.text(&format!("SELECT CAST(payload AS TEXT) FROM outbox WHERE kind = '{kind}' AND {filter}")).await;
            serde_json::from_str::<Value>(&text).expect("payload is JSON")
        }
    };
    let verify = payload("step_completed", "verify").await;
    assert_eq!(verify["source"], "EVENT", "{verify:#}");
    assert_eq!(verify["eventId"], "o-1", "{verify:#}");
    assert_eq!(verify["points"], 10, "{verify:#}");
    assert_eq!(verify["metadata"], json!({ "via": "link" }), "{verify:#}");
    let invite = payload("step_completed", "invite").await;
    assert_eq!(invite["source"], "USER", "{invite:#}");
    assert!(invite.get("eventId").is_none(), "{invite:#}");
    assert_eq!(invite["points"], 20, "{invite:#}");
    let skipped = payload("step_skipped", "tour").await;
    assert_eq!(skipped["skipReason"], "later", "{skipped:#}");
    let completed_flow = payload("onboarding_completed", "").await;
    assert_eq!(completed_flow["points"], 30, "{completed_flow:#}");
    assert_eq!(completed_flow["revision"], done_flow["revision"], "{completed_flow:#}");

    // The skipped optional step is finished by its event later: no second completion of
    // the flow.
    assert_new(&track(&app, event("o-2", "alice", "tour.done", json!({}))).await, &[done("setup", "tour")]);
    assert_eq!(outbox(&app).await.last().map(String::as_str), Some("step_completed:tour"));
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'onboarding_completed'").await, 1);

    // A completed flow cannot be dismissed: an error, no row.
    let skip_flow = "mutation($f: String!) { skipOnboarding(flowKey: $f) { status } }";
    let code = app.code(Some(&app.user("alice")), skip_flow, json!({ "f": "setup" })).await;
    assert_eq!(code, "CONFLICT");
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 6);

    // bob dismisses the flow; a required step cannot be skipped.
    start(&app, "bob", "setup").await;
    let dismissed = app.ok(&app.user("bob"), skip_flow, json!({ "f": "setup" })).await;
    assert_eq!(dismissed["skipOnboarding"]["status"], "SKIPPED");
    let code = app.code(Some(&app.user("bob")), &skip_mutation(), json!({ "f": "setup", "k": "verify" })).await;
    assert_eq!(code, "STEP_NOT_SKIPPABLE");
    assert_eq!(
        rows(&app, "SELECT kind || ':' || COALESCE(step_key, '') FROM outbox WHERE subject_id = 'bob' ORDER BY id")
            .await,
        ["onboarding_started:", "onboarding_skipped:"]
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 8);
}

async fn only_services_and_admins_track_events(app: TestApp) {
    app.publish(setup_flow()).await;
    let one = json!({ "e": event("r-1", "alice", "user.email_verified", json!({})) });
    let many = json!({ "e": [event("r-2", "alice", "user.email_verified", json!({}))] });

    let alice = app.user("alice");
    assert_eq!(app.code(Some(&alice), &track_one(), one.clone()).await, "FORBIDDEN");
    assert_eq!(app.code(Some(&alice), &track_many(), many.clone()).await, "FORBIDDEN");
    assert_eq!(app.code(None, &track_one(), one.clone()).await, "UNAUTHENTICATED");
    assert_eq!(app.code(None, &track_many(), many.clone()).await, "UNAUTHENTICATED");
    assert_eq!(app.code(Some("not-a-jwt"), &track_one(), one.clone()).await, "UNAUTHENTICATED");
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 0, "a refused call writes nothing");
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 0);

    let by_admin = app.ok(&app.admin(), &track_one(), one).await;
    assert_new(&by_admin["trackEvent"], &[]);
    let by_service = app.ok(&service(&app), &track_many(), many).await;
    assert_new(&by_service["trackEvents"][0], &[]);
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 2);
}

async fn overlapping_batches_in_any_order_do_not_deadlock(app: TestApp) {
    // A producer retries a batch while the first attempt is still running, its events in
    // another order. Both must succeed: each event is new in one and a duplicate in the
    // other (on PostgreSQL this deadlocked when ids were inserted in input order).
    app.publish(setup_flow()).await;
    for subject in ["s0", "s1", "s2"] {
        start(&app, subject, "setup").await;
    }
    let app = Arc::new(app);
    for round in 0..5 {
        let forward: Vec<Value> = (0..200)
            .map(|i| {
                let name = if i % 50 == 0 { "tour.done" } else { "page.viewed" };
                event(&format!("r{round}-{i}"), &format!("s{}", i % 3), name, json!({ "i": i }))
            })
            .collect();
        let mut backward = forward.clone();
        backward.reverse();
        let mut tasks = Vec::new();
        for batch in [forward, backward] {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                app.gql(Some(&service(&app)), &track_many(), json!({ "e": batch })).await
            }));
        }
        let mut statuses: std::collections::HashMap<String, Vec<String>> = Default::default();
        for t in tasks {
            let response = t.await.expect("task");
            assert!(response.get("errors").is_none(), "round {round}: {response:#}");
            for r in response["data"]["trackEvents"].as_array().unwrap() {
                statuses
                    .entry(r["id"].as_str().unwrap().to_string())
                    .or_default()
                    .push(r["status"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(statuses.len(), 200);
        for (id, mut seen) in statuses {
            seen.sort();
            assert_eq!(seen, ["DUPLICATE", "NEW"], "round {round}, {id}");
        }
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 1000);
    for subject in ["s0", "s1", "s2"] {
        let s = status(&app, subject, "setup").await;
        assert_eq!(s["points"], 1, "{subject}: tour once");
        assert_eq!(step(&s, "tour")["status"], "COMPLETED");
    }
}

async fn one_batch_for_many_owners_with_repeated_ids(app: TestApp) {
    // A batch is applied to all its owners at once: each event keeps its own outcome and
    // completions, a repeated id inside the batch is a duplicate (or a conflict), and a
    // step unlocked by an event of the batch is completed by another event of it.
    app.publish(setup_flow()).await;
    app.publish(growth_flow()).await;
    let users: Vec<String> = (0..12).map(|i| format!("u{i:02}")).collect();
    for (i, user) in users.iter().enumerate() {
        start(&app, user, "setup").await;
        if i < 6 {
            start(&app, user, "growth").await;
        }
    }
    let mut batch = Vec::new();
    for (i, user) in users.iter().enumerate().rev() {
        if i % 3 == 0 {
            batch.push(event(&format!("inv-{i}"), user, "team.invited", json!({ "count": 3 })));
        }
        batch.push(event(&format!("ver-{i}"), user, "user.email_verified", json!({ "via": "link" })));
        if i % 2 == 0 {
            batch.push(event(&format!("tour-{i}"), user, "tour.done", json!({})));
        }
    }
    let singles = batch.len();
    batch.push(event("ver-3", "u03", "user.email_verified", json!({ "via": "link" })));
    batch.push(event("ver-4", "u05", "user.email_verified", json!({ "via": "link" })));
    batch.push(event("lone", "nobody", "tour.done", json!({})));
    let results = track_batch(&app, batch.clone()).await;
    assert_eq!(results.len(), batch.len());
    for (sent, result) in batch.iter().zip(&results).take(singles) {
        let id = sent["id"].as_str().unwrap();
        assert_eq!(result["id"], id);
        let i: usize = id.rsplit('-').next().unwrap().parse().unwrap();
        let expected = match id.split('-').next().unwrap() {
            "inv" => vec![done("setup", "invite")],
            "ver" if i < 6 => vec![done("growth", "confirmed"), done("setup", "verify")],
            "ver" => vec![done("setup", "verify")],
            _ => vec![done("setup", "tour")],
        };
        assert_new(result, &expected);
    }
    assert_duplicate(&results[singles]);
    assert_rejected(&results[singles + 1], "CONFLICT");
    assert_new(&results[singles + 2], &[]);

    for (i, user) in users.iter().enumerate() {
        let setup = status(&app, user, "setup").await;
        let points = 10 + if i % 3 == 0 { 20 } else { 0 } + if i % 2 == 0 { 1 } else { 0 };
        assert_eq!(setup["points"], points, "{user}");
        assert_eq!(enrollment_number(&app, "points", user, "setup").await, points, "{user}");
        assert_eq!(stored_step(&app, user, "setup", "verify").await, format!("COMPLETED/EVENT/ver-{i}"));
        if i < 6 {
            assert_eq!(status(&app, user, "growth").await["points"], 3, "{user}");
        }
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, singles as i64 + 1);
    assert_eq!(events_of(&app, "u05").await, 1, "the conflicting copy stored nothing");
    let ledger = app.count("SELECT COUNT(*) FROM points_ledger").await;
    let outbox_rows = app.count("SELECT COUNT(*) FROM outbox").await;
    assert_eq!(ledger, 12 + 4 + 6 + 6);

    // The whole batch again: duplicates (and the conflict again), nothing written.
    let again = track_batch(&app, batch.clone()).await;
    for (n, result) in again.iter().enumerate() {
        if n == singles + 1 {
            assert_rejected(result, "CONFLICT");
        } else {
            assert_duplicate(result);
        }
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM points_ledger").await, ledger);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, outbox_rows);
}

async fn concurrent_batches_over_the_same_users_count_each_completion_once(app: TestApp) {
    // Batches touching the same users in different orders run at once: none deadlocks
    // (each locks owners in one order), and every completion and award happens once.
    let steps: Vec<Value> = (0..8)
        .map(|i| {
            json!({ "key": format!("s{i}"), "title": format!("Step {i}"), "points": 1 << i,
                    "trigger": { "event": format!("race.s{i}") } })
        })
        .collect();
    app.publish(json!({ "key": "race", "title": "Race", "steps": steps })).await;
    let users: Vec<String> = (0..10).map(|i| format!("z{i}")).collect();
    for user in &users {
        start(&app, user, "race").await;
    }
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for copy in 0..4usize {
        let mut order = users.clone();
        order.rotate_left(copy * 3);
        if copy % 2 == 1 {
            order.reverse();
        }
        let mut batch = Vec::new();
        for user in &order {
            for i in 0..8 {
                // Each step's event under an id of this batch, and under an id all share.
                batch.push(event(&format!("c{copy}-{user}-{i}"), user, &format!("race.s{i}"), json!({})));
                batch.push(event(&format!("shared-{user}-{i}"), user, &format!("race.s{i}"), json!({})));
            }
        }
        let app = app.clone();
        tasks.push(tokio::spawn(async move { track_batch(&app, batch).await }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.expect("task"));
    }
    let new_shared =
        results.iter().filter(|r| r["id"].as_str().unwrap().starts_with("shared-") && r["status"] == "NEW");
    assert_eq!(new_shared.count(), 80, "each shared id is new exactly once");
    let reported: usize = results.iter().map(|r| r["completed"].as_array().unwrap().len()).sum();
    assert_eq!(reported, 80, "each completion reported under one event");
    for user in &users {
        let s = status(&app, user, "race").await;
        assert_eq!(s["points"], 255, "{user}");
        assert_eq!(s["status"], "COMPLETED", "{user}");
        assert_eq!(enrollment_number(&app, "points", user, "race").await, 255, "{user}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM points_ledger").await, 80);
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 4 * 80 + 80);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'step_completed'").await, 80);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'onboarding_completed'").await, 10);
}

async fn nul_characters_are_rejected_not_fatal(app: TestApp) {
    // JSON allows \u0000; PostgreSQL can store it in neither text nor jsonb. Such an
    // event is rejected like any bad input, on both databases, and the rest of the
    // batch goes through.
    app.publish(setup_flow()).await;
    start(&app, "alice", "setup").await;
    let results = track_batch(
        &app,
        vec![
            event("nul-props", "alice", "team.invited", json!({ "count": 3, "note": "a\u{0}b" })),
            event("nul-deep", "alice", "team.invited", json!({ "list": [{ "x": "\u{0}" }] })),
            event("nul-key", "alice", "team.invited", json!({ "k\u{0}": 1 })),
            event("nul\u{0}id", "alice", "team.invited", json!({})),
            event("nul-name", "alice", "team\u{0}invited", json!({})),
            event("nul-subject", "ali\u{0}ce", "team.invited", json!({})),
            event("good", "alice", "user.email_verified", json!({ "note": "no nul here" })),
        ],
    )
    .await;
    for r in &results[..6] {
        assert_rejected(r, "VALIDATION_FAILED");
    }
    assert_new(&results[6], &[done("setup", "verify")]);
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 1);
    let alice = status(&app, "alice", "setup").await;
    assert_eq!(step(&alice, "invite")["status"], "PENDING");
    assert_eq!(alice["points"], 10);
}
