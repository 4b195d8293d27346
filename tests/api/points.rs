//! Points: every award is one ledger entry, once per subject and reason, whoever races to
//! award it and whichever version the subject is on; what `points` and
//! `OnboardingStatus.points` report is read from that ledger.

use std::sync::Arc;

use onramp::auth::Role;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::both;
use crate::common::{TestApp, complete_mutation, step_of};

both!(
    points_are_the_ledger_entries,
    who_may_read_whose_points,
    concurrent_completions_award_points_once,
    a_step_completed_again_after_migration_is_not_awarded_twice,
    the_ledger_refuses_a_second_entry_for_a_reason,
);

const POINTS: &str = "query($s: ID) { points(subjectId: $s) { subjectId total entries { reason amount awardedAt } } }";
const MIGRATE: &str = "mutation($f: String!, $from: Int!, $to: Int!) { migrateEnrollments(flowKey: $f, \
                       fromVersion: $from, toVersion: $to, dryRun: false) { moved } }";

fn welcome() -> Value {
    json!({
        "key": "welcome",
        "title": "Welcome",
        "steps": [
            { "key": "verify", "title": "Verify your email", "points": 10, "trigger": { "event": "user.email_verified" } },
            { "key": "profile", "title": "Complete your profile", "dependsOn": ["verify"], "points": 5 },
            { "key": "tour", "title": "Take the tour", "required": false, "points": 1 },
            { "key": "nothing", "title": "Worth nothing", "required": false }
        ]
    })
}

fn growth() -> Value {
    json!({
        "key": "growth",
        "title": "Grow",
        "steps": [
            { "key": "confirm", "title": "Confirm", "points": 7, "trigger": { "event": "user.email_verified" } },
            { "key": "billing", "title": "Add billing", "points": 100 }
        ]
    })
}

async fn points(app: &TestApp, token: &str, subject: Option<&str>) -> Value {
    app.ok(token, POINTS, json!({ "s": subject })).await["points"].clone()
}

/// `(reason, amount)` of each entry, in the order listed.
fn entries(points: &Value) -> Vec<(String, i64)> {
    points["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries in {points:#}"))
        .iter()
        .map(|e| (e["reason"].as_str().unwrap().to_string(), e["amount"].as_i64().unwrap()))
        .collect()
}

fn entry(reason: &str, amount: i64) -> (String, i64) {
    (reason.to_string(), amount)
}

/// The ledger rows of a subject for one reason.
async fn ledger_rows(app: &TestApp, subject: &str, reason: &str) -> i64 {
    app.count(&format!(
        "SELECT COUNT(*) FROM points_ledger l JOIN subjects s ON s.id = l.subject_id \
         WHERE s.external_id = '{subject}' AND l.reason = '{reason}'"
    ))
    .await
}

async fn points_are_the_ledger_entries(app: TestApp) {
    app.publish(welcome()).await;
    app.publish(growth()).await;
    app.start_as("alice", "welcome").await;
    app.start_as("alice", "growth").await;
    // One event completes a step in each flow; then alice works through welcome herself.
    let result = app.track_event("v-1", "alice", "user.email_verified", json!({})).await;
    assert_eq!(result["completed"].as_array().unwrap().len(), 2, "{result:#}");
    app.complete_as("alice", "welcome", "tour").await;
    app.complete_as("alice", "welcome", "nothing").await;
    let done = app.complete_as("alice", "welcome", "profile").await;
    assert_eq!(done["status"], "COMPLETED");

    let mine = points(&app, &app.user("alice"), None).await;
    assert_eq!(mine["subjectId"], "alice");
    // Oldest first: the event's two awards (flows in key order), then alice's steps. A
    // step worth nothing is no entry.
    assert_eq!(
        entries(&mine),
        [
            entry("onboarding:growth:confirm", 7),
            entry("onboarding:welcome:verify", 10),
            entry("onboarding:welcome:tour", 1),
            entry("onboarding:welcome:profile", 5),
        ]
    );
    assert_eq!(mine["total"], 23);
    let times: Vec<&str> =
        mine["entries"].as_array().unwrap().iter().map(|e| e["awardedAt"].as_str().unwrap()).collect();
    let parsed: Vec<chrono::DateTime<chrono::FixedOffset>> =
        times.iter().map(|t| chrono::DateTime::parse_from_rfc3339(t).expect("RFC 3339")).collect();
    assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "oldest first: {times:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM points_ledger").await, 4);

    // Each flow's status reports the ledger total of that flow, and so does the stored
    // enrollment.
    let by_flow = |flow: &str| {
        entries(&mine)
            .iter()
            .filter(|(reason, _)| reason.starts_with(&format!("onboarding:{flow}:")))
            .map(|(_, amount)| amount)
            .sum::<i64>()
    };
    for flow in ["welcome", "growth"] {
        let status = app.status_of("alice", flow).await;
        assert_eq!(status["points"], by_flow(flow), "{flow}: {status:#}");
        let stored = app
            .count(&format!(
                "SELECT e.points FROM enrollments e JOIN subjects s ON s.id = e.subject_id \
                 WHERE s.external_id = 'alice' AND e.flow_key = '{flow}'"
            ))
            .await;
        let ledger = app
            .count(&format!(
                "SELECT CAST(COALESCE(SUM(l.amount), 0) AS BIGINT) FROM points_ledger l JOIN enrollments e ON e.id = l.enrollment_id \
                 JOIN subjects s ON s.id = e.subject_id WHERE s.external_id = 'alice' AND e.flow_key = '{flow}'"
            ))
            .await;
        assert_eq!(stored, ledger, "{flow}");
        assert_eq!(stored, by_flow(flow), "{flow}");
    }
    assert_eq!(by_flow("welcome"), 16);
    assert_eq!(by_flow("growth"), 7);
    let listed = app.ok(&app.user("alice"), "{ onboardings { flowKey points } }", json!({})).await;
    assert_eq!(
        listed["onboardings"],
        json!([{ "flowKey": "growth", "points": 7 }, { "flowKey": "welcome", "points": 16 }])
    );

    // Repeating a completion or the event awards nothing more.
    app.complete_as("alice", "welcome", "tour").await;
    let retry = app.track_event("v-2", "alice", "user.email_verified", json!({})).await;
    assert_eq!(retry["completed"], json!([]));
    assert_eq!(points(&app, &app.user("alice"), None).await, mine);
}

async fn who_may_read_whose_points(app: TestApp) {
    app.publish(welcome()).await;
    app.complete_as("alice", "welcome", "verify").await;
    let alice = points(&app, &app.user("alice"), None).await;
    assert_eq!(alice["total"], 10);
    // Her own id is fine; an admin or a backend may name her.
    assert_eq!(points(&app, &app.user("alice"), Some("alice")).await, alice);
    assert_eq!(points(&app, &app.admin(), Some("alice")).await, alice);
    assert_eq!(points(&app, &app.service(), Some("alice")).await, alice);

    // Another user may not.
    let bob = app.user("bob");
    let error = app.error(Some(&bob), POINTS, json!({ "s": "alice" })).await;
    assert_eq!(error["extensions"]["code"], "FORBIDDEN", "{error:#}");
    assert_eq!(app.code(None, POINTS, json!({})).await, "UNAUTHENTICATED");
    assert_eq!(app.code(Some("not-a-jwt"), POINTS, json!({ "s": "alice" })).await, "UNAUTHENTICATED");

    // A subject with no points, or never seen: zero, nothing written.
    let none = points(&app, &bob, None).await;
    assert_eq!(none, json!({ "subjectId": "bob", "total": 0, "entries": [] }));
    assert_eq!(
        points(&app, &app.admin(), Some("nobody")).await,
        json!({ "subjectId": "nobody", "total": 0, "entries": [] })
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 1, "reading never writes");
}

async fn concurrent_completions_award_points_once(app: TestApp) {
    app.publish(welcome()).await;
    // Half the subjects are enrolled before the race; the others enroll during it (a
    // completeStep enrolls, an event is stored and applied on enrollment).
    let subjects: Vec<String> = (0..6).map(|i| format!("racer{i}")).collect();
    for subject in subjects.iter().step_by(2) {
        app.start_as(subject, "welcome").await;
    }
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for subject in &subjects {
        for copy in 0..5u64 {
            // Several devices of the user.
            let (device_app, device_subject) = (app.clone(), subject.clone());
            tasks.push(tokio::spawn(async move {
                let (app, subject) = (device_app, device_subject);
                let token = app.keys.mint(&subject, Role::User, 600 + copy).unwrap();
                let data = app.ok(&token, &complete_mutation(), json!({ "f": "welcome", "k": "verify" })).await;
                (subject, None, data["completeStep"].clone())
            }));
            // The backend, each event with its own id.
            let (app, subject) = (app.clone(), subject.clone());
            tasks.push(tokio::spawn(async move {
                let id = format!("{subject}-verified-{copy}");
                let result = app.track_event(&id, &subject, "user.email_verified", json!({ "copy": copy })).await;
                (subject, Some(id), result)
            }));
        }
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }

    for subject in &subjects {
        let of_subject: Vec<&(String, Option<String>, Value)> = results.iter().filter(|r| &r.0 == subject).collect();
        for (_, id, result) in &of_subject {
            match id {
                Some(_) => assert_eq!(result["status"], "NEW", "{subject}: {result:#}"),
                None => {
                    assert_eq!(step_of(result, "verify")["status"], "COMPLETED", "{subject}: {result:#}");
                    assert_eq!(result["points"], 10, "{subject}: {result:#}");
                }
            }
        }
        // At most one event reports the completion, and then it is the one recorded.
        let reported: Vec<&String> = of_subject
            .iter()
            .filter(|(_, id, result)| id.is_some() && result["completed"].as_array().is_some_and(|c| !c.is_empty()))
            .filter_map(|(_, id, _)| id.as_ref())
            .collect();
        assert!(reported.len() <= 1, "{subject}: {reported:?}");
        let status = app.status_of(subject, "welcome").await;
        let verify = step_of(&status, "verify");
        assert_eq!(verify["status"], "COMPLETED", "{subject}");
        if let Some(id) = reported.first() {
            assert_eq!(verify["source"], "EVENT", "{subject}: reported by {id}");
        }
        assert_eq!(status["points"], 10, "{subject}: awarded once");
        assert_eq!(ledger_rows(&app, subject, "onboarding:welcome:verify").await, 1, "{subject}");
        let balance = points(&app, &app.user(subject), None).await;
        assert_eq!(entries(&balance), [entry("onboarding:welcome:verify", 10)], "{subject}");
        assert_eq!(balance["total"], 10, "{subject}");
        assert_eq!(status["revision"], 2, "{subject}: enrollment, then one completion");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM points_ledger").await, subjects.len() as i64);
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, subjects.len() as i64);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'step_completed'").await, subjects.len() as i64);
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 5 * subjects.len() as i64);
}

async fn a_step_completed_again_after_migration_is_not_awarded_twice(app: TestApp) {
    let version = |points_a: Option<i64>| {
        let mut steps = Vec::new();
        if let Some(points) = points_a {
            steps.push(json!({ "key": "a", "title": "A", "points": points, "trigger": { "event": "a.done" } }));
        }
        steps.push(json!({ "key": "b", "title": "B", "points": 5 }));
        json!({ "key": "flow", "title": "Flow", "steps": steps })
    };
    app.publish(version(Some(10))).await;
    let first = app.complete_as("alice", "flow", "a").await;
    assert_eq!(first["points"], 10);

    // v2 keeps `a` and makes it worth more: what was earned stays as earned.
    app.publish(version(Some(25))).await;
    let moved = app.ok(&app.admin(), MIGRATE, json!({ "f": "flow", "from": 1, "to": 2 })).await;
    assert_eq!(moved["migrateEnrollments"]["moved"], 1);
    let on_v2 = app.status_of("alice", "flow").await;
    assert_eq!(on_v2["version"], 2);
    assert_eq!(step_of(&on_v2, "a")["status"], "COMPLETED");
    assert_eq!(step_of(&on_v2, "a")["points"], 25, "what the step is worth now");
    assert_eq!(on_v2["points"], 10, "what was awarded");
    let again = app.complete_as("alice", "flow", "a").await;
    assert_eq!(again["points"], 10);
    assert_eq!(again["revision"], on_v2["revision"], "nothing changed");
    let event = app.track_event("a-1", "alice", "a.done", json!({})).await;
    assert_eq!(event["completed"], json!([]));
    assert_eq!(ledger_rows(&app, "alice", "onboarding:flow:a").await, 1);

    // v3 drops `a`, v4 brings it back: the step is restored as completed, and completing
    // it by hand or by event awards nothing again.
    app.publish(version(None)).await;
    app.ok(&app.admin(), MIGRATE, json!({ "f": "flow", "from": 2, "to": 3 })).await;
    let on_v3 = app.status_of("alice", "flow").await;
    assert_eq!(on_v3["version"], 3);
    assert_eq!(on_v3["points"], 10, "points stay earned when the step goes");
    app.publish(version(Some(40))).await;
    app.ok(&app.admin(), MIGRATE, json!({ "f": "flow", "from": 3, "to": 4 })).await;
    let on_v4 = app.status_of("alice", "flow").await;
    assert_eq!(on_v4["version"], 4);
    assert_eq!(step_of(&on_v4, "a")["status"], "COMPLETED");
    app.complete_as("alice", "flow", "a").await;
    let event = app.track_event("a-2", "alice", "a.done", json!({})).await;
    assert_eq!(event["completed"], json!([]));
    let done = app.complete_as("alice", "flow", "b").await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["points"], 15);
    assert_eq!(ledger_rows(&app, "alice", "onboarding:flow:a").await, 1);
    let balance = points(&app, &app.user("alice"), None).await;
    assert_eq!(entries(&balance), [entry("onboarding:flow:a", 10), entry("onboarding:flow:b", 5)]);
    assert_eq!(balance["total"], 15);

    // A subject who starts on v4 earns what `a` is worth there.
    let bob = app.complete_as("bob", "flow", "a").await;
    assert_eq!(bob["version"], 4);
    assert_eq!(bob["points"], 40);
    assert_eq!(entries(&points(&app, &app.user("bob"), None).await), [entry("onboarding:flow:a", 40)]);
}

async fn the_ledger_refuses_a_second_entry_for_a_reason(app: TestApp) {
    app.publish(welcome()).await;
    app.complete_as("alice", "welcome", "verify").await;
    let ids = |column: &str| format!("(SELECT {column} FROM points_ledger WHERE reason = 'onboarding:welcome:verify')");
    let insert = format!(
        "INSERT INTO points_ledger (subject_id, enrollment_id, amount, reason, created_at) \
         VALUES ({}, {}, 99, 'onboarding:welcome:verify', CURRENT_TIMESTAMP)",
        ids("subject_id"),
        ids("enrollment_id")
    );
    let statement = Statement::from_string(app.db.get_database_backend(), insert);
    let refused = app.db.execute_raw(statement).await;
    assert!(refused.is_err(), "a second entry for the same subject and reason must be refused");
    assert_eq!(app.count("SELECT COUNT(*) FROM points_ledger").await, 1);
    assert_eq!(points(&app, &app.user("alice"), None).await["total"], 10);
}
