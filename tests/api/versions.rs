//! Flow versions: moving enrollments from one version to another with
//! `migrateEnrollments` (a dry run first, then for real, in batches, safe to re-run), what
//! subscribers see of it, who may do it, and deprecation closing a version to newcomers.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::both;
use crate::common::ws::{TRANSPORT_WS, WsClient};
use crate::common::{TestApp, skip_mutation, step_keys_of, step_of};

both!(
    dry_run_reports_and_the_real_run_moves_by_step_key,
    hundreds_of_enrollments_migrate_in_batches,
    stored_events_complete_new_steps_on_migration_and_are_reported,
    subscribers_of_a_moved_enrollment_see_the_new_version,
    a_migration_and_event_batches_run_at_once_without_deadlock,
    migration_errors,
    deprecating_a_version_closes_it_to_new_subjects_only,
);

const REPORT: &str = "dryRun moved becameComplete droppedCompletedSteps { stepKey enrollments }";

fn migrate_mutation(dry_run: Option<bool>) -> String {
    match dry_run {
        Some(d) => format!(
            "mutation($f: String!, $from: Int!, $to: Int!) {{ migrateEnrollments(flowKey: $f, fromVersion: $from, \
             toVersion: $to, dryRun: {d}) {{ {REPORT} }} }}"
        ),
        None => format!(
            "mutation($f: String!, $from: Int!, $to: Int!) {{ migrateEnrollments(flowKey: $f, fromVersion: $from, \
             toVersion: $to) {{ {REPORT} }} }}"
        ),
    }
}

/// Runs migrateEnrollments as an admin and returns the report.
async fn migrate(app: &TestApp, flow: &str, from: i64, to: i64, dry_run: Option<bool>) -> Value {
    let data = app.ok(&app.admin(), &migrate_mutation(dry_run), json!({ "f": flow, "from": from, "to": to })).await;
    data["migrateEnrollments"].clone()
}

fn report(dry_run: bool, moved: i64, became_complete: i64, dropped: &[(&str, i64)]) -> Value {
    let dropped: Vec<Value> = dropped.iter().map(|(k, n)| json!({ "stepKey": k, "enrollments": n })).collect();
    json!({ "dryRun": dry_run, "moved": moved, "becameComplete": became_complete, "droppedCompletedSteps": dropped })
}

/// The report's dropped steps, as a map: the API does not promise their order.
fn normalized(report: &Value) -> Value {
    let mut report = report.clone();
    if let Some(list) = report["droppedCompletedSteps"].as_array_mut() {
        list.sort_by(|a, b| a["stepKey"].as_str().cmp(&b["stepKey"].as_str()));
    }
    report
}

/// The status plus what `STATUS_FIELDS` leaves out and a migration must not move.
async fn full_status(app: &TestApp, subject: &str, flow: &str) -> Value {
    let mut status = app.status_of(subject, flow).await;
    let extra = app
        .ok(
            &app.admin(),
            "query($f: String!, $s: ID) { status(flowKey: $f, subjectId: $s) { lastActivityAt \
             steps { key startedAt } } }",
            json!({ "f": flow, "s": subject }),
        )
        .await;
    status["lastActivityAt"] = extra["status"]["lastActivityAt"].clone();
    status["stepsStartedAt"] = extra["status"]["steps"].clone();
    status
}

/// What a subject did in a step, without what the version says of it (points, required).
fn progress_of(status: &Value, key: &str) -> Value {
    let step = step_of(status, key);
    json!({
        "status": step["status"],
        "completedAt": step["completedAt"],
        "source": step["source"],
        "metadata": step["metadata"],
        "startedAt": status["stepsStartedAt"].as_array().and_then(|s| s.iter().find(|s| s["key"] == key)),
    })
}

/// The database id of a flow version.
async fn flow_id(app: &TestApp, key: &str, version: i64) -> i64 {
    app.count(&format!("SELECT id FROM flows WHERE key = '{key}' AND version = {version}")).await
}

async fn enrollments_on(app: &TestApp, key: &str, version: i64) -> i64 {
    let id = flow_id(app, key, version).await;
    app.count(&format!("SELECT COUNT(*) FROM enrollments WHERE flow_id = {id}")).await
}

/// v1: four required steps. v2 drops `old`, makes `c` optional and adds an optional step.
fn setup_v1() -> Value {
    json!({
        "key": "setup",
        "title": "Set up",
        "steps": [
            { "key": "a", "title": "A", "points": 1 },
            { "key": "b", "title": "B", "points": 2 },
            { "key": "old", "title": "Old", "points": 4 },
            { "key": "c", "title": "C", "points": 8 }
        ]
    })
}

fn setup_v2() -> Value {
    json!({
        "key": "setup",
        "title": "Set up, again",
        "steps": [
            { "key": "a", "title": "A", "points": 1 },
            { "key": "b", "title": "B", "points": 2 },
            { "key": "c", "title": "C", "points": 8, "required": false },
            { "key": "extra", "title": "Extra", "points": 16, "required": false }
        ]
    })
}

async fn dry_run_reports_and_the_real_run_moves_by_step_key(app: TestApp) {
    app.publish(setup_v1()).await;
    // Subjects in every state: nothing done, some steps, a step v2 drops, everything v2
    // requires, finished under v1, and dismissed with v2's required steps done.
    let plans: [(&str, &[&str]); 6] = [
        ("none", &[]),
        ("some", &["a"]),
        ("dropped", &["a", "old"]),
        ("almost", &["a", "b", "old"]),
        ("finished", &["a", "b", "old", "c"]),
        ("dismissed", &["a", "b"]),
    ];
    for (subject, steps) in plans {
        app.start_as(subject, "setup").await;
        for step in steps {
            app.complete_as(subject, "setup", step).await;
        }
    }
    app.ok(&app.user("dismissed"), "mutation { skipOnboarding(flowKey: \"setup\") { status } }", json!({})).await;
    // A subject in another flow is not concerned.
    app.publish(json!({ "key": "other", "title": "Other", "steps": [{ "key": "a", "title": "A" }] })).await;
    app.start_as("none", "other").await;
    let published = app.publish(setup_v2()).await;
    assert_eq!(published["version"], 2);

    let mut before = BTreeMap::new();
    for (subject, _) in plans {
        let status = full_status(&app, subject, "setup").await;
        assert_eq!(status["version"], 1, "{subject}: publishing moves nobody");
        before.insert(subject, status);
    }
    assert_eq!(before["finished"]["status"], "COMPLETED");
    assert_eq!(before["dismissed"]["status"], "SKIPPED");
    let other_before = full_status(&app, "none", "other").await;
    let outbox_before = app.count("SELECT COUNT(*) FROM outbox").await;
    let last_outbox = app.count("SELECT COALESCE(MAX(id), 0) FROM outbox").await;
    let revisions_before = app.count("SELECT CAST(SUM(revision) AS BIGINT) FROM enrollments").await;

    // The dry run (and the default, which is a dry run) says what would happen and
    // changes nothing.
    let expected = |dry_run| report(dry_run, 6, 1, &[("old", 3)]);
    assert_eq!(normalized(&migrate(&app, "setup", 1, 2, Some(true)).await), expected(true));
    assert_eq!(normalized(&migrate(&app, "setup", 1, 2, None).await), expected(true));
    for (subject, status) in &before {
        assert_eq!(&full_status(&app, subject, "setup").await, status, "{subject}: a dry run writes nothing");
    }
    assert_eq!(enrollments_on(&app, "setup", 1).await, 6);
    assert_eq!(enrollments_on(&app, "setup", 2).await, 0);
    assert_eq!(app.count("SELECT CAST(SUM(revision) AS BIGINT) FROM enrollments").await, revisions_before);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, outbox_before);

    // The real run does what the dry run said.
    assert_eq!(normalized(&migrate(&app, "setup", 1, 2, Some(false)).await), expected(false));
    assert_eq!(enrollments_on(&app, "setup", 1).await, 0);
    assert_eq!(enrollments_on(&app, "setup", 2).await, 6);
    let mut after = BTreeMap::new();
    for (subject, steps) in plans {
        let was = &before[subject];
        let now = full_status(&app, subject, "setup").await;
        assert_eq!(now["version"], 2, "{subject}");
        assert_eq!(now["title"], "Set up, again", "{subject}");
        assert_eq!(step_keys_of(&now), ["a", "b", "c", "extra"], "{subject}");
        assert_eq!(now["revision"], was["revision"].as_i64().unwrap() + 1, "{subject}: one revision for the move");
        assert_eq!(now["lastActivityAt"], was["lastActivityAt"], "{subject}: a migration is not activity");
        assert_eq!(now["startedAt"], was["startedAt"], "{subject}");
        assert_eq!(now["points"], was["points"], "{subject}: points stay earned, a dropped step's too");
        // Completed steps are kept by key, as they were.
        for step in steps.iter().filter(|s| **s != "old") {
            assert_eq!(progress_of(&now, step), progress_of(was, step), "{subject}: {step}");
            assert_eq!(step_of(&now, step)["status"], "COMPLETED", "{subject}: {step}");
        }
        for step in ["a", "b", "c"].iter().filter(|s| !steps.contains(s)) {
            assert_eq!(step_of(&now, step)["status"], "PENDING", "{subject}: {step}");
        }
        assert_eq!(step_of(&now, "extra")["status"], "PENDING", "{subject}");
        after.insert(subject, now);
    }
    let states: Vec<(&str, &str)> =
        after.iter().map(|(subject, s)| (*subject, s["status"].as_str().unwrap())).collect();
    assert_eq!(
        states,
        [
            ("almost", "COMPLETED"),
            ("dismissed", "SKIPPED"),
            ("dropped", "IN_PROGRESS"),
            ("finished", "COMPLETED"),
            ("none", "IN_PROGRESS"),
            ("some", "IN_PROGRESS"),
        ]
    );
    assert!(after["almost"]["completedAt"].is_string());
    assert_eq!(after["almost"]["percentComplete"], 100);
    assert_eq!(after["almost"]["completedCount"], 2);
    assert_eq!(after["finished"]["completedAt"], before["finished"]["completedAt"], "completion never moves");
    assert_eq!(after["dropped"]["points"], 5);
    assert_eq!(after["dropped"]["completedCount"], 1, "the dropped step is not counted");
    assert_eq!(after["dropped"]["percentComplete"], 50);
    assert_eq!(after["none"]["percentComplete"], 0);
    // The records of dropped steps are kept (moving back would restore them).
    assert_eq!(
        app.count("SELECT COUNT(*) FROM step_progress WHERE step_key = 'old' AND status = 'COMPLETED'").await,
        3
    );
    // The enrollment that completed says so in the outbox, under version 2; nothing else
    // is a domain event.
    assert_eq!(
        app.rows(&format!(
            "SELECT subject_id || ':' || kind || ':' || CAST(flow_version AS TEXT) FROM outbox \
             WHERE id > {last_outbox} ORDER BY id"
        ))
        .await,
        ["almost:onboarding_completed:2"]
    );
    assert_eq!(full_status(&app, "none", "other").await, other_before, "another flow is not concerned");

    // Safe to run again: nothing is left on v1.
    let revisions = app.count("SELECT CAST(SUM(revision) AS BIGINT) FROM enrollments").await;
    assert_eq!(normalized(&migrate(&app, "setup", 1, 2, Some(false)).await), report(false, 0, 0, &[]));
    assert_eq!(normalized(&migrate(&app, "setup", 1, 2, Some(true)).await), report(true, 0, 0, &[]));
    assert_eq!(app.count("SELECT CAST(SUM(revision) AS BIGINT) FROM enrollments").await, revisions);

    // Work carries on under v2, and a newcomer enrolls there.
    let extra = app.complete_as("some", "setup", "b").await;
    assert_eq!(extra["status"], "COMPLETED");
    assert_eq!(extra["version"], 2);
    assert_eq!(app.start_as("newcomer", "setup").await["version"], 2);
}

async fn hundreds_of_enrollments_migrate_in_batches(app: TestApp) {
    const SUBJECTS: usize = 450;
    app.publish(json!({
        "key": "bulk",
        "title": "Bulk",
        "steps": [
            { "key": "a", "title": "A", "points": 1, "trigger": { "event": "bulk.a" } },
            { "key": "legacy", "title": "Legacy", "required": false, "trigger": { "event": "bulk.legacy" } },
            { "key": "b", "title": "B" }
        ]
    }))
    .await;
    let subject = |i: usize| format!("u{i:03}");
    let app = std::sync::Arc::new(app);
    let started: Vec<Value> = futures_util::stream::iter(0..SUBJECTS)
        .map(|i| {
            let app = app.clone();
            async move { app.start_as(&subject(i), "bulk").await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(started.iter().all(|s| s["version"] == 1 && s["status"] == "IN_PROGRESS"));
    // Every third subject has done `a`, every fifth the step v2 drops.
    let mut events = Vec::new();
    for i in 0..SUBJECTS {
        if i % 3 == 0 {
            events.push(json!({ "id": format!("a-{i}"), "subjectId": subject(i), "name": "bulk.a", "properties": {} }));
        }
        if i % 5 == 0 {
            events.push(
                json!({ "id": format!("l-{i}"), "subjectId": subject(i), "name": "bulk.legacy", "properties": {} }),
            );
        }
    }
    let track = "mutation($e: [EventInput!]!) { trackEvents(events: $e) { status completed { stepKey } } }";
    let results = app.ok(&app.service(), track, json!({ "e": events })).await;
    let results = results["trackEvents"].as_array().unwrap();
    assert!(results.iter().all(|r| r["completed"].as_array().unwrap().len() == 1), "every event completed its step");
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress WHERE status = 'COMPLETED'").await, 150 + 90);

    // v2: `a` is all that is required now; `legacy` is gone.
    app.publish(json!({
        "key": "bulk",
        "title": "Bulk",
        "steps": [
            { "key": "a", "title": "A", "points": 1, "trigger": { "event": "bulk.a" } },
            { "key": "b", "title": "B", "required": false }
        ]
    }))
    .await;
    let revisions = app.count("SELECT CAST(SUM(revision) AS BIGINT) FROM enrollments").await;
    let expected = |dry_run| report(dry_run, SUBJECTS as i64, 150, &[("legacy", 90)]);
    assert_eq!(normalized(&migrate(&app, "bulk", 1, 2, Some(true)).await), expected(true));
    assert_eq!(enrollments_on(&app, "bulk", 1).await, SUBJECTS as i64);
    assert_eq!(app.count("SELECT CAST(SUM(revision) AS BIGINT) FROM enrollments").await, revisions);

    let moved = migrate(&app, "bulk", 1, 2, Some(false)).await;
    assert_eq!(normalized(&moved), expected(false));
    assert_eq!(enrollments_on(&app, "bulk", 1).await, 0);
    assert_eq!(enrollments_on(&app, "bulk", 2).await, SUBJECTS as i64);
    assert_eq!(
        app.count("SELECT CAST(SUM(revision) AS BIGINT) FROM enrollments").await,
        revisions + SUBJECTS as i64,
        "each enrollment moved exactly once"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments WHERE status = 'COMPLETED'").await, 150);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'onboarding_completed'").await, 150);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'onboarding_completed' AND flow_version = 2").await,
        150
    );
    // Subjects at the batch edges and at the ends, each as expected.
    for i in [0, 1, 2, 3, 5, 15, 199, 200, 201, 300, 399, 400, 401, 448, 449] {
        let status = app.status_of(&subject(i), "bulk").await;
        assert_eq!(status["version"], 2, "{i}");
        let expected = if i % 3 == 0 { "COMPLETED" } else { "IN_PROGRESS" };
        assert_eq!(status["status"], expected, "{i}");
        assert_eq!(step_keys_of(&status), ["a", "b"], "{i}");
    }
    assert_eq!(normalized(&migrate(&app, "bulk", 1, 2, Some(false)).await), report(false, 0, 0, &[]));
}

async fn stored_events_complete_new_steps_on_migration_and_are_reported(app: TestApp) {
    // v2 adds a required step whose event alice has already sent: moving her completes
    // it, and with it the flow. The report (dry or not) must count her.
    app.publish(json!({
        "key": "connect",
        "title": "Connect",
        "steps": [{ "key": "a", "title": "A" }, { "key": "b", "title": "B" }]
    }))
    .await;
    app.complete_as("alice", "connect", "a").await;
    app.start_as("bob", "connect").await;
    let sent = app.track_event("alice-connected", "alice", "integration.connected", json!({ "tool": "slack" })).await;
    assert_eq!(sent["completed"], json!([]), "v1 has no step for it");
    app.publish(json!({
        "key": "connect",
        "title": "Connect",
        "steps": [
            { "key": "a", "title": "A" },
            { "key": "b", "title": "B", "required": false },
            { "key": "integrate", "title": "Connect a tool", "points": 3,
              "trigger": { "event": "integration.connected" } }
        ]
    }))
    .await;
    let expected = |dry_run| report(dry_run, 2, 1, &[]);
    assert_eq!(normalized(&migrate(&app, "connect", 1, 2, Some(true)).await), expected(true));
    assert_eq!(normalized(&migrate(&app, "connect", 1, 2, Some(false)).await), expected(false));
    let alice = app.status_of("alice", "connect").await;
    assert_eq!(alice["version"], 2);
    assert_eq!(alice["status"], "COMPLETED");
    assert_eq!(step_of(&alice, "integrate")["status"], "COMPLETED");
    assert_eq!(step_of(&alice, "integrate")["source"], "EVENT");
    assert_eq!(step_of(&alice, "integrate")["metadata"], json!({ "tool": "slack" }));
    assert_eq!(alice["points"], 3);
    let bob = app.status_of("bob", "connect").await;
    assert_eq!(bob["status"], "IN_PROGRESS");
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'onboarding_completed'").await, 1);
}

async fn subscribers_of_a_moved_enrollment_see_the_new_version(app: TestApp) {
    app.publish(setup_v1()).await;
    app.complete_as("alice", "setup", "a").await;
    app.complete_as("alice", "setup", "b").await;
    app.complete_as("alice", "setup", "old").await;
    app.start_as("carol", "setup").await;

    let mut alice = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("alice")).await;
    let first = alice.watch("1", "setup", None).await;
    assert_eq!(first["version"], 1);
    assert_eq!(first["status"], "IN_PROGRESS");
    let mut admin = WsClient::authorized(app.addr, TRANSPORT_WS, &app.admin()).await;
    assert_eq!(admin.watch("c", "setup", Some("carol")).await["version"], 1);
    // Watching a subject not enrolled: it is not moved, so it hears nothing.
    let mut dave = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("dave")).await;
    assert_eq!(dave.watch("d", "setup", None).await["status"], "NOT_STARTED");

    app.publish(setup_v2()).await;
    migrate(&app, "setup", 1, 2, Some(true)).await;
    alice.expect_silence(Duration::from_millis(400)).await;

    migrate(&app, "setup", 1, 2, Some(false)).await;
    let moved = alice.snapshot("1").await;
    assert_eq!(moved["version"], 2);
    assert_eq!(moved["title"], "Set up, again");
    assert_eq!(moved["status"], "COMPLETED", "c is optional in v2");
    assert_eq!(moved["revision"], first["revision"].as_i64().unwrap() + 1);
    assert_eq!(step_keys_of(&moved), ["a", "b", "c", "extra"]);
    assert_eq!(moved, app.status_of("alice", "setup").await, "the snapshot is the stored state");
    let carol = admin.snapshot("c").await;
    assert_eq!(carol["version"], 2);
    assert_eq!(carol["status"], "IN_PROGRESS");
    // The first snapshot of a new subscription shows v2 too, and dave's flow is unchanged.
    let mut again = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("alice")).await;
    assert_eq!(again.watch("2", "setup", None).await, moved);
    dave.expect_silence(Duration::from_millis(200)).await;
    // A re-run moves nothing and announces nothing.
    migrate(&app, "setup", 1, 2, Some(false)).await;
    alice.expect_silence(Duration::from_millis(400)).await;
}

async fn migration_errors(app: TestApp) {
    app.publish(setup_v1()).await;
    app.publish(setup_v2()).await;
    app.complete_as("alice", "setup", "a").await;
    let revision = app.status_of("alice", "setup").await["revision"].clone();
    let query = migrate_mutation(Some(false));
    let admin = app.admin();
    let cases = [
        ("same versions", admin.clone(), json!({ "f": "setup", "from": 2, "to": 2 }), "VALIDATION_FAILED"),
        ("missing target", admin.clone(), json!({ "f": "setup", "from": 2, "to": 3 }), "NOT_FOUND"),
        ("missing source", admin.clone(), json!({ "f": "setup", "from": 7, "to": 1 }), "NOT_FOUND"),
        ("unknown flow", admin.clone(), json!({ "f": "nope", "from": 1, "to": 2 }), "NOT_FOUND"),
        ("user", app.user("alice"), json!({ "f": "setup", "from": 2, "to": 1 }), "FORBIDDEN"),
        ("service", app.service(), json!({ "f": "setup", "from": 2, "to": 1 }), "FORBIDDEN"),
    ];
    for (what, token, variables, code) in cases {
        let error = app.error(Some(&token), &query, variables).await;
        assert_eq!(error["extensions"]["code"], code, "{what}: {error:#}");
    }
    let dry = migrate_mutation(Some(true));
    assert_eq!(
        app.code(Some(&app.user("alice")), &dry, json!({ "f": "setup", "from": 2, "to": 1 })).await,
        "FORBIDDEN"
    );
    assert_eq!(app.code(None, &dry, json!({ "f": "setup", "from": 2, "to": 1 })).await, "UNAUTHENTICATED");
    let alice = app.status_of("alice", "setup").await;
    assert_eq!(alice["version"], 2, "alice enrolled in the newest version");
    assert_eq!(alice["revision"], revision, "nothing moved");
}

async fn deprecating_a_version_closes_it_to_new_subjects_only(app: TestApp) {
    app.publish(setup_v1()).await;
    app.complete_as("alice", "setup", "a").await;
    let deprecate = "mutation($k: String!, $v: Int!) { deprecateFlow(key: $k, version: $v) { key version status } }";
    let deprecated = app.ok(&app.admin(), deprecate, json!({ "k": "setup", "v": 1 })).await;
    assert_eq!(deprecated["deprecateFlow"], json!({ "key": "setup", "version": 1, "status": "DEPRECATED" }));
    assert_eq!(app.code(Some(&app.user("bob")), deprecate, json!({ "k": "setup", "v": 1 })).await, "FORBIDDEN");
    assert_eq!(app.code(Some(&app.admin()), deprecate, json!({ "k": "setup", "v": 9 })).await, "NOT_FOUND");

    // No active version: nobody new can enroll, not even to read what they would get.
    let start = "mutation { startOnboarding(flowKey: \"setup\") { version } }";
    assert_eq!(app.code(Some(&app.user("bob")), start, json!({})).await, "NOT_FOUND");
    assert_eq!(
        app.code(Some(&app.user("bob")), "{ status(flowKey: \"setup\") { version } }", json!({})).await,
        "NOT_FOUND"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 1);
    // Alice carries on where she is.
    let alice = app.complete_as("alice", "setup", "b").await;
    assert_eq!(alice["version"], 1);
    assert_eq!(alice["points"], 3);
    // A required step cannot be skipped, deprecated version or not.
    let code = app.code(Some(&app.user("alice")), &skip_mutation(), json!({ "f": "setup", "k": "old" })).await;
    assert_eq!(code, "STEP_NOT_SKIPPABLE");

    // v2 takes the newcomers; alice stays on v1 until she is moved.
    app.publish(setup_v2()).await;
    let bob = app.start_as("bob", "setup").await;
    assert_eq!(bob["version"], 2);
    assert_eq!(app.status_of("carol", "setup").await["version"], 2, "a newcomer would enroll in v2");
    assert_eq!(app.status_of("alice", "setup").await["version"], 1);
    let alice = app.complete_as("alice", "setup", "old").await;
    assert_eq!(alice["version"], 1);
    assert_eq!(enrollments_on(&app, "setup", 1).await, 1);

    // A deprecated version can still be migrated from.
    let moved = migrate(&app, "setup", 1, 2, Some(false)).await;
    assert_eq!(normalized(&moved), report(false, 1, 1, &[("old", 1)]));
    let alice = app.status_of("alice", "setup").await;
    assert_eq!(alice["version"], 2);
    assert_eq!(alice["status"], "COMPLETED");
    assert_eq!(enrollments_on(&app, "setup", 1).await, 0);
    assert_eq!(enrollments_on(&app, "setup", 2).await, 2);
    let flows = app.ok(&app.admin(), "{ flows { key version status } }", json!({})).await;
    assert_eq!(
        flows["flows"],
        json!([
            { "key": "setup", "version": 1, "status": "DEPRECATED" },
            { "key": "setup", "version": 2, "status": "ACTIVE" }
        ])
    );
}

async fn a_migration_and_event_batches_run_at_once_without_deadlock(app: TestApp) {
    // Event batches lock enrollments subject by subject, in subject order. A migration
    // that locked its batch in enrollment order deadlocked with them on PostgreSQL when
    // the two orders differ: here they are opposite (enrolled in descending name order).
    const SUBJECTS: usize = 300;
    let flow = |b_required: bool| {
        json!({
            "key": "race",
            "title": "Race",
            "steps": [
                { "key": "a", "title": "A", "points": 1, "trigger": { "event": "race.a" } },
                { "key": "b", "title": "B", "required": b_required }
            ]
        })
    };
    app.publish(flow(true)).await;
    let app = std::sync::Arc::new(app);
    futures_util::stream::iter((0..SUBJECTS).rev())
        .map(|i| {
            let app = app.clone();
            async move { app.start_as(&format!("s{i:03}"), "race").await }
        })
        .buffered(8)
        .collect::<Vec<_>>()
        .await;
    app.publish(flow(false)).await;
    let mut batches = Vec::new();
    for round in 0..4 {
        let app = app.clone();
        batches.push(tokio::spawn(async move {
            let events: Vec<Value> = (0..SUBJECTS)
                .map(|i| {
                    let name = if round == 3 { "race.a" } else { "page.viewed" };
                    json!({ "id": format!("e{round}-{i}"), "subjectId": format!("s{i:03}"), "name": name,
                            "properties": {} })
                })
                .collect();
            let track = "mutation($e: [EventInput!]!) { trackEvents(events: $e) { status } }";
            app.gql(Some(&app.service()), track, json!({ "e": events })).await
        }));
    }
    let migration = {
        let app = app.clone();
        tokio::spawn(async move {
            let variables = json!({ "f": "race", "from": 1, "to": 2 });
            app.gql(Some(&app.admin()), &migrate_mutation(Some(false)), variables).await
        })
    };
    for batch in batches {
        let response = batch.await.expect("task");
        assert!(response.get("errors").is_none(), "{response:#}");
        assert!(response["data"]["trackEvents"].as_array().unwrap().iter().all(|r| r["status"] == "NEW"));
    }
    let response = migration.await.expect("task");
    assert!(response.get("errors").is_none(), "{response:#}");
    assert_eq!(response["data"]["migrateEnrollments"]["moved"], SUBJECTS as i64);
    assert_eq!(enrollments_on(&app, "race", 2).await, SUBJECTS as i64);
    // Whichever came first, `a` is done by its event and the flow complete under v2.
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments WHERE status = 'COMPLETED'").await, SUBJECTS as i64);
    assert_eq!(app.count("SELECT COUNT(*) FROM points_ledger").await, SUBJECTS as i64);
}
