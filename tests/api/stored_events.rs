//! Stored events count from the first read: an event stored before its subject (or
//! workspace) enrolls shows in every read at once (computed, nothing written), and
//! whatever enrolls the owner settles those events before it applies its own command.
//! One test per way in: completeStep, skipStep, startOnboarding, skipOnboarding, an event
//! batch, audience enrollment by a write elsewhere, attribute changes, workspace flows, an
//! experiment choosing the version, and a version migration.

use serde_json::{Value, json};

use crate::both;
use crate::common::ws::{TRANSPORT_WS, WsClient};
use crate::common::{STATUS_FIELDS, TestApp, skip_mutation, status_query, step_of};

both!(
    status_and_next_step_show_what_stored_events_complete_before_enrollment,
    complete_step_sees_the_steps_stored_events_unlock,
    skip_step_sees_the_steps_stored_events_unlock,
    start_onboarding_settles_stored_events,
    skip_onboarding_keeps_what_stored_events_completed,
    an_event_batch_enrolling_in_an_audience_flow_settles_earlier_events,
    a_write_elsewhere_enrolling_in_an_audience_flow_settles_stored_events,
    set_subject_attributes_enrolling_settles_stored_events,
    a_workspace_flow_counts_events_sent_with_its_id_before_it_enrolls,
    set_workspace_attributes_enrolling_settles_stored_events,
    the_version_an_experiment_chooses_counts_stored_events,
    a_version_migration_counts_stored_events,
    the_first_snapshot_of_a_subscription_shows_stored_events,
);

/// `verify` is completed by an event; `profile` and the optional `tour` wait for it.
fn flow(key: &str) -> Value {
    json!({
        "key": key,
        "title": "Welcome",
        "steps": [
            { "key": "verify", "title": "Verify", "points": 10, "trigger": { "event": "user.email_verified" } },
            { "key": "profile", "title": "Profile", "dependsOn": ["verify"], "points": 5 },
            { "key": "tour", "title": "Tour", "dependsOn": ["verify"], "required": false }
        ]
    })
}

fn with(mut flow: Value, field: &str, value: Value) -> Value {
    flow[field] = value;
    flow
}

fn status_of(status: &Value, step: &str) -> String {
    step_of(status, step)["status"].as_str().expect("status").to_string()
}

async fn enrollments(app: &TestApp) -> i64 {
    app.count("SELECT COUNT(*) FROM enrollments").await
}

async fn status_and_next_step_show_what_stored_events_complete_before_enrollment(app: TestApp) {
    app.publish(flow("welcome")).await;
    app.track_event("e1", "ada", "user.email_verified", json!({ "via": "link" })).await;
    let status = app.ok(&app.user("ada"), &status_query(), json!({ "f": "welcome" })).await["status"].clone();
    assert_eq!(status["status"], "NOT_STARTED");
    assert_eq!(status_of(&status, "verify"), "COMPLETED", "{status:#}");
    assert_eq!(step_of(&status, "verify")["source"], "EVENT");
    assert_eq!(step_of(&status, "verify")["metadata"], json!({ "via": "link" }));
    assert_eq!(step_of(&status, "profile")["available"], true);
    assert_eq!(status["nextStep"]["key"], "profile");
    assert_eq!(status["completedCount"], 1);
    let next = app.ok(&app.user("ada"), "{ nextStep(flowKey: \"welcome\") { key } }", json!({})).await;
    assert_eq!(next["nextStep"]["key"], "profile");
    // Someone else's event counts for nobody else.
    assert_eq!(status_of(&app.status_of("bob", "welcome").await, "verify"), "PENDING");
    assert_eq!(enrollments(&app).await, 0, "reading enrolled nobody");
}

async fn complete_step_sees_the_steps_stored_events_unlock(app: TestApp) {
    app.publish(flow("welcome")).await;
    app.track_event("e1", "ada", "user.email_verified", json!({})).await;
    let status = app.complete_as("ada", "welcome", "profile").await;
    assert_eq!(status_of(&status, "verify"), "COMPLETED");
    assert_eq!(step_of(&status, "verify")["source"], "EVENT");
    assert_eq!(status_of(&status, "profile"), "COMPLETED");
    assert_eq!(status["status"], "COMPLETED");
    assert_eq!(status["points"], 15);
}

async fn skip_step_sees_the_steps_stored_events_unlock(app: TestApp) {
    app.publish(flow("welcome")).await;
    app.track_event("e1", "ada", "user.email_verified", json!({})).await;
    let skipped = app.ok(&app.user("ada"), &skip_mutation(), json!({ "f": "welcome", "k": "tour" })).await;
    let status = &skipped["skipStep"];
    assert_eq!(status_of(status, "verify"), "COMPLETED");
    assert_eq!(status_of(status, "tour"), "SKIPPED");
}

async fn start_onboarding_settles_stored_events(app: TestApp) {
    app.publish(flow("welcome")).await;
    app.track_event("e1", "ada", "user.email_verified", json!({})).await;
    let status = app.start_as("ada", "welcome").await;
    assert_eq!(status["status"], "IN_PROGRESS");
    assert_eq!(status_of(&status, "verify"), "COMPLETED");
    assert_eq!(status["points"], 10);
}

async fn skip_onboarding_keeps_what_stored_events_completed(app: TestApp) {
    app.publish(flow("welcome")).await;
    app.track_event("e1", "ada", "user.email_verified", json!({})).await;
    let query = format!("mutation {{ skipOnboarding(flowKey: \"welcome\") {{ {STATUS_FIELDS} }} }}");
    let status = app.ok(&app.user("ada"), &query, json!({})).await["skipOnboarding"].clone();
    assert_eq!(status["status"], "SKIPPED");
    assert_eq!(status_of(&status, "verify"), "COMPLETED", "{status:#}");
    assert_eq!(status["points"], 10);
    assert_eq!(app.status_of("ada", "welcome").await, status, "as stored");
}

/// `admins` is for subjects whose role is admin.
fn admins() -> Value {
    with(flow("admins"), "audience", json!({ "attr": "role", "op": "eq", "value": "admin" }))
}

async fn an_event_batch_enrolling_in_an_audience_flow_settles_earlier_events(app: TestApp) {
    app.set_attributes("ada", json!({ "role": "admin" })).await;
    app.track_event("e1", "ada", "user.email_verified", json!({})).await;
    // Published after both: ada is admitted but not enrolled yet.
    app.publish(admins()).await;
    let before = app.status_of("ada", "admins").await;
    assert_eq!((before["status"].as_str(), status_of(&before, "verify").as_str()), (Some("NOT_STARTED"), "COMPLETED"));
    let listed = app.ok(&app.user("ada"), &format!("{{ onboardings {{ {STATUS_FIELDS} }} }}"), json!({})).await;
    assert_eq!(listed["onboardings"][0]["flowKey"], "admins");
    assert_eq!(status_of(&listed["onboardings"][0], "verify"), "COMPLETED", "{listed:#}");
    assert_eq!(enrollments(&app).await, 0);
    // An event for another flow enrolls ada in `admins`, where the earlier event counts.
    app.track_event("e2", "ada", "app.opened", json!({})).await;
    let after = app.status_of("ada", "admins").await;
    assert_eq!(after["status"], "IN_PROGRESS");
    assert_eq!(status_of(&after, "verify"), "COMPLETED");
    assert_eq!(after["points"], 10);
}

async fn a_write_elsewhere_enrolling_in_an_audience_flow_settles_stored_events(app: TestApp) {
    app.publish(flow("welcome")).await;
    app.set_attributes("ada", json!({ "role": "admin" })).await;
    app.track_event("e1", "ada", "user.email_verified", json!({})).await;
    app.publish(admins()).await;
    // Completing a step of `welcome` enrolls ada in `admins` too.
    app.complete_as("ada", "welcome", "profile").await;
    let admins = app.status_of("ada", "admins").await;
    assert_eq!(admins["status"], "IN_PROGRESS");
    assert_eq!(status_of(&admins, "verify"), "COMPLETED");
    // And a command to the audience flow itself sees what the events unlock.
    app.set_attributes("bob", json!({ "role": "admin" })).await;
    app.track_event("e2", "bob", "user.email_verified", json!({})).await;
    let status = app.complete_as("bob", "admins", "profile").await;
    assert_eq!(status["status"], "COMPLETED");
}

async fn set_subject_attributes_enrolling_settles_stored_events(app: TestApp) {
    app.publish(admins()).await;
    app.track_event("e1", "ada", "user.email_verified", json!({})).await;
    app.set_attributes("ada", json!({ "role": "admin" })).await;
    let status = app.status_of("ada", "admins").await;
    assert_eq!(status["status"], "IN_PROGRESS");
    assert_eq!(status_of(&status, "verify"), "COMPLETED");
    assert_eq!(status["points"], 10);
}

fn team_flow() -> Value {
    with(flow("team"), "scope", json!("WORKSPACE"))
}

async fn workspace_event(app: &TestApp, id: &str, workspace: &str) {
    let event = json!({ "id": id, "subjectId": "ada", "workspaceId": workspace, "name": "user.email_verified" });
    let query = "mutation($e: EventInput!) { trackEvent(event: $e) { status } }";
    app.ok(&app.service(), query, json!({ "e": event })).await;
}

fn workspace_status(workspace: &str) -> (String, Value) {
    let query = format!("query($w: ID) {{ status(flowKey: \"team\", workspaceId: $w) {{ {STATUS_FIELDS} }} }}");
    (query, json!({ "w": workspace }))
}

async fn a_workspace_flow_counts_events_sent_with_its_id_before_it_enrolls(app: TestApp) {
    app.publish(team_flow()).await;
    workspace_event(&app, "e1", "acme").await;
    let grace = app.member("grace", &["acme"]);
    let (query, vars) = workspace_status("acme");
    let status = app.ok(&grace, &query, vars).await["status"].clone();
    assert_eq!(status["status"], "NOT_STARTED");
    assert_eq!(status_of(&status, "verify"), "COMPLETED", "{status:#}");
    // Another workspace's progress is its own.
    let (query, vars) = workspace_status("globex");
    let other = app.ok(&app.member("grace", &["globex"]), &query, vars).await["status"].clone();
    assert_eq!(status_of(&other, "verify"), "PENDING");
    // A member's first write to the workspace's flow sees the steps the event unlocked.
    let complete = format!(
        "mutation {{ completeStep(flowKey: \"team\", stepKey: \"profile\", workspaceId: \"acme\") {{ {STATUS_FIELDS} }} }}"
    );
    let status = app.ok(&grace, &complete, json!({})).await["completeStep"].clone();
    assert_eq!(status["status"], "COMPLETED");
    assert_eq!(step_of(&status, "verify")["source"], "EVENT");
}

async fn set_workspace_attributes_enrolling_settles_stored_events(app: TestApp) {
    app.publish(with(team_flow(), "audience", json!({ "attr": "plan", "op": "eq", "value": "team" }))).await;
    workspace_event(&app, "e1", "acme").await;
    let query = "mutation { setWorkspaceAttributes(workspaceId: \"acme\", attributes: { plan: \"team\" }) { id } }";
    app.ok(&app.admin(), query, json!({})).await;
    let (query, vars) = workspace_status("acme");
    let status = app.ok(&app.member("grace", &["acme"]), &query, vars).await["status"].clone();
    assert_eq!(status["status"], "IN_PROGRESS");
    assert_eq!(status_of(&status, "verify"), "COMPLETED");
}

async fn the_version_an_experiment_chooses_counts_stored_events(app: TestApp) {
    // Version 1 has no trigger; version 2 is the flow above. Every subject gets version 2.
    app.publish(json!({ "key": "welcome", "title": "Welcome", "steps": [{ "key": "hello", "title": "Hello" }] })).await;
    app.publish(flow("welcome")).await;
    let create = "mutation { createExperiment(key: \"trial\", flowKey: \"welcome\", variants: [\
                  { name: \"old\", version: 1, weight: 0 }, { name: \"new\", version: 2, weight: 100 }]) { key } }";
    app.ok(&app.admin(), create, json!({})).await;
    app.ok(&app.admin(), "mutation { startExperiment(key: \"trial\") { key } }", json!({})).await;
    app.track_event("e1", "ada", "user.email_verified", json!({})).await;
    let status = app.status_of("ada", "welcome").await;
    assert_eq!((status["version"].as_i64(), status_of(&status, "verify").as_str()), (Some(2), "COMPLETED"));
    let status = app.complete_as("ada", "welcome", "profile").await;
    assert_eq!((status["version"].as_i64(), status["status"].as_str()), (Some(2), Some("COMPLETED")));
}

async fn a_version_migration_counts_stored_events(app: TestApp) {
    app.publish(json!({ "key": "welcome", "title": "Welcome", "steps": [{ "key": "hello", "title": "Hello" }] })).await;
    app.start_as("ada", "welcome").await;
    app.track_event("e1", "ada", "user.email_verified", json!({})).await;
    app.publish(flow("welcome")).await;
    let migrate =
        "mutation { migrateEnrollments(flowKey: \"welcome\", fromVersion: 1, toVersion: 2, dryRun: false) { moved } }";
    assert_eq!(app.ok(&app.admin(), migrate, json!({})).await["migrateEnrollments"]["moved"], 1);
    let status = app.status_of("ada", "welcome").await;
    assert_eq!(status["version"], 2);
    assert_eq!(status_of(&status, "verify"), "COMPLETED");
    let status = app.complete_as("ada", "welcome", "profile").await;
    assert_eq!(status["status"], "COMPLETED");
}

async fn the_first_snapshot_of_a_subscription_shows_stored_events(app: TestApp) {
    app.publish(flow("welcome")).await;
    app.track_event("e1", "ada", "user.email_verified", json!({})).await;
    let mut ws = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("ada")).await;
    let first = ws.watch("1", "welcome", None).await;
    assert_eq!(first["status"], "NOT_STARTED");
    assert_eq!(status_of(&first, "verify"), "COMPLETED", "{first:#}");
}
