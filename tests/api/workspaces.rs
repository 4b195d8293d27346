//! Workspace-scoped flows: one shared progress per workspace, advanced by any member and
//! crediting each step to the member who finished it; the token's workspace claim
//! deciding which workspaces a user may act in; events, audiences, points, experiments and
//! live updates keyed by the workspace; and a scope that no later version may change.

use onramp::auth::Role;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;

use crate::both;
use crate::common::ws::{TRANSPORT_WS, WsClient};
use crate::common::{TestApp, step_keys_of, step_of};

both!(
    a_workspace_flow_keeps_one_progress_per_workspace,
    members_share_one_checklist_and_each_step_names_its_member,
    the_workspace_claim_decides_where_a_user_may_act,
    admins_and_services_act_in_any_workspace,
    a_member_of_two_workspaces_has_two_independent_progresses,
    a_user_flow_ignores_the_workspace,
    user_ids_cannot_take_the_workspace_prefix,
    a_member_named_like_a_workspace_cannot_act_in_one,
    a_subscribed_member_sees_another_members_completion,
    one_event_completes_the_workspace_step_and_the_users_step,
    an_event_about_a_workspace_alone_names_no_member,
    an_event_before_enrollment_settles_when_the_workspace_enrolls,
    onboardings_lists_user_flows_and_each_workspaces_flows,
    workspace_audiences_and_conditions_read_workspace_attributes,
    workspace_points_go_to_the_workspaces_ledger,
    experiments_on_a_workspace_flow_assign_by_workspace,
    a_new_version_cannot_change_the_scope,
);

/// Long enough for a snapshot that is coming to arrive (they take milliseconds).
const QUIET: Duration = Duration::from_millis(400);

const FIELDS: &str = "subjectId workspaceId scope flowKey version status revision points variant \
                      steps { key status source completedBy skipReason } nextStep { key }";

fn status_query() -> String {
    format!(
        "query($f: String!, $w: ID, $s: ID) {{ status(flowKey: $f, workspaceId: $w, subjectId: $s) {{ {FIELDS} }} }}"
    )
}

fn start_mutation() -> String {
    format!(
        "mutation($f: String!, $w: ID, $s: ID) {{ startOnboarding(flowKey: $f, workspaceId: $w, subjectId: $s) {{ {FIELDS} }} }}"
    )
}

fn complete_mutation() -> String {
    format!(
        "mutation($f: String!, $k: String!, $w: ID, $s: ID) {{ completeStep(flowKey: $f, stepKey: $k, workspaceId: $w, subjectId: $s) {{ {FIELDS} }} }}"
    )
}

fn skip_mutation() -> String {
    format!(
        "mutation($f: String!, $k: String!, $r: String, $w: ID) {{ skipStep(flowKey: $f, stepKey: $k, reason: $r, workspaceId: $w) {{ {FIELDS} }} }}"
    )
}

fn progress_subscription() -> String {
    format!("subscription($f: String!, $w: ID) {{ onboardingProgress(flowKey: $f, workspaceId: $w) {{ {FIELDS} }} }}")
}

const ONBOARDINGS: &str = "query($s: ID, $w: ID) { onboardings(subjectId: $s, workspaceId: $w) \
                           { flowKey subjectId workspaceId scope status steps { key status completedBy } } }";
const POINTS: &str = "query($s: ID, $w: ID) { points(subjectId: $s, workspaceId: $w) \
                      { subjectId workspaceId total entries { amount reason } } }";
const TRACK_EVENT: &str = "mutation($e: EventInput!) { trackEvent(event: $e) { id status error { code message } \
                           completed { flowKey version stepKey workspaceId } } }";
const SET_WORKSPACE_ATTRIBUTES: &str = "mutation($w: ID!, $a: JSON!, $m: Boolean! = true) { \
                                        setWorkspaceAttributes(workspaceId: $w, attributes: $a, merge: $m) { id attributes } }";
const PUBLISH: &str = "mutation($d: JSON!) { publishFlow(definition: $d) { key version scope } }";

/// The team's checklist: `connect` completes on an event, `branding` is optional.
fn team_setup() -> Value {
    json!({
        "key": "team_setup",
        "title": "Set up your team",
        "scope": "WORKSPACE",
        "steps": [
            { "key": "connect", "title": "Connect an integration", "points": 10, "trigger": { "event": "integration.connected" } },
            { "key": "invite", "title": "Invite your team", "points": 5 },
            { "key": "branding", "title": "Add your logo", "required": false, "points": 1 }
        ]
    })
}

/// A user-scoped flow whose `connect` has the same trigger as the team's.
fn personal() -> Value {
    json!({
        "key": "personal",
        "title": "Your own setup",
        "steps": [
            { "key": "connect", "title": "Connect your account", "points": 3, "trigger": { "event": "integration.connected" } },
            { "key": "profile", "title": "Complete your profile", "points": 2 }
        ]
    })
}

fn vars(flow: &str, workspace: Option<&str>) -> Value {
    json!({ "f": flow, "w": workspace })
}

async fn status(app: &TestApp, token: &str, flow: &str, workspace: Option<&str>) -> Value {
    app.ok(token, &status_query(), vars(flow, workspace)).await["status"].clone()
}

async fn start(app: &TestApp, token: &str, flow: &str, workspace: Option<&str>) -> Value {
    app.ok(token, &start_mutation(), vars(flow, workspace)).await["startOnboarding"].clone()
}

async fn complete(app: &TestApp, token: &str, flow: &str, step: &str, workspace: Option<&str>) -> Value {
    app.ok(token, &complete_mutation(), json!({ "f": flow, "k": step, "w": workspace })).await["completeStep"].clone()
}

async fn track(app: &TestApp, event: Value) -> Value {
    app.ok(&app.service(), TRACK_EVENT, json!({ "e": event })).await["trackEvent"].clone()
}

async fn points(app: &TestApp, token: &str, subject: Option<&str>, workspace: Option<&str>) -> Value {
    app.ok(token, POINTS, json!({ "s": subject, "w": workspace })).await["points"].clone()
}

async fn set_workspace_attributes(app: &TestApp, workspace: &str, attributes: Value, merge: bool) -> Value {
    app.ok(&app.admin(), SET_WORKSPACE_ATTRIBUTES, json!({ "w": workspace, "a": attributes, "m": merge })).await
        ["setWorkspaceAttributes"]
        .clone()
}

/// (status, completedBy) of a step.
fn state_of(status: &Value, step: &str) -> (Value, Value) {
    let s = step_of(status, step);
    (s["status"].clone(), s["completedBy"].clone())
}

/// (flowKey, stepKey, workspaceId or "") of an EventResult's `completed`, sorted.
fn completed_of(result: &Value) -> Vec<(String, String, String)> {
    let mut steps: Vec<(String, String, String)> = result["completed"]
        .as_array()
        .unwrap_or_else(|| panic!("no completed list in {result:#}"))
        .iter()
        .map(|c| {
            (
                c["flowKey"].as_str().expect("flowKey").to_string(),
                c["stepKey"].as_str().expect("stepKey").to_string(),
                c["workspaceId"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    steps.sort();
    steps
}

fn done(flow: &str, step: &str, workspace: &str) -> (String, String, String) {
    (flow.to_string(), step.to_string(), workspace.to_string())
}

/// Enrollments stored under a subject key (a user id, or `workspace:<id>`).
async fn enrollments_of(app: &TestApp, key: &str) -> i64 {
    app.count(&format!(
        "SELECT COUNT(*) FROM enrollments e JOIN subjects s ON s.id = e.subject_id WHERE s.external_id = '{key}'"
    ))
    .await
}

async fn a_workspace_flow_keeps_one_progress_per_workspace(app: TestApp) {
    let published = app.ok(&app.admin(), PUBLISH, json!({ "d": team_setup() })).await["publishFlow"].clone();
    assert_eq!(published, json!({ "key": "team_setup", "version": 1, "scope": "WORKSPACE" }));
    let user_flow = app.ok(&app.admin(), PUBLISH, json!({ "d": personal() })).await["publishFlow"].clone();
    assert_eq!(user_flow["scope"], "USER", "USER is the default scope");
    let stored = app.ok(&app.admin(), "{ flow(key: \"team_setup\") { scope definition } }", json!({})).await;
    assert_eq!(stored["flow"]["scope"], "WORKSPACE");
    assert_eq!(stored["flow"]["definition"]["scope"], "WORKSPACE", "{stored:#}");

    // Before enrollment: the workspace's would-be progress, named by the workspace.
    let alice = app.member("alice", &["w1"]);
    let before = status(&app, &alice, "team_setup", None).await;
    assert_eq!(before["status"], "NOT_STARTED");
    assert_eq!(before["scope"], "WORKSPACE");
    assert_eq!(before["workspaceId"], "w1", "a token with one workspace implies it");
    assert_eq!(before["subjectId"], Value::Null);
    assert_eq!(before["revision"], 0);

    let started = start(&app, &alice, "team_setup", Some("w1")).await;
    assert_eq!(started["status"], "IN_PROGRESS");
    assert_eq!((started["workspaceId"].clone(), started["subjectId"].clone()), (json!("w1"), Value::Null));
    assert_eq!(step_keys_of(&started), ["connect", "invite", "branding"]);
    assert_eq!(status(&app, &alice, "team_setup", Some("w1")).await, started, "named or implied, the same progress");

    // The progress is the workspace's, stored under its own subject key; alice has none.
    assert_eq!(enrollments_of(&app, "workspace:w1").await, 1);
    assert_eq!(enrollments_of(&app, "alice").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects WHERE external_id = 'w1'").await, 0);

    // Another workspace's progress is its own.
    let other = status(&app, &app.member("zoe", &["w2"]), "team_setup", None).await;
    assert_eq!(other["status"], "NOT_STARTED");
    assert_eq!(other["workspaceId"], "w2");
}

async fn members_share_one_checklist_and_each_step_names_its_member(app: TestApp) {
    app.publish(team_setup()).await;
    let alice = app.member("alice", &["w1"]);
    let bob = app.member("bob", &["w1"]);

    let after_alice = complete(&app, &alice, "team_setup", "connect", Some("w1")).await;
    assert_eq!(after_alice["status"], "IN_PROGRESS", "completing a step enrolls the workspace");
    assert_eq!(state_of(&after_alice, "connect"), (json!("COMPLETED"), json!("alice")));
    assert_eq!(step_of(&after_alice, "connect")["source"], "USER");
    assert_eq!(after_alice["nextStep"]["key"], "invite");

    // Bob sees alice's work, credited to her.
    let seen_by_bob = status(&app, &bob, "team_setup", None).await;
    assert_eq!(seen_by_bob, after_alice, "one checklist for every member");
    let next = app.ok(&bob, "query { nextStep(flowKey: \"team_setup\") { key status } }", json!({})).await;
    assert_eq!(next["nextStep"], json!({ "key": "invite", "status": "PENDING" }));

    // Bob's own completion is credited to him and finishes the required steps.
    let after_bob = complete(&app, &bob, "team_setup", "invite", None).await;
    assert_eq!(state_of(&after_bob, "invite"), (json!("COMPLETED"), json!("bob")));
    assert_eq!(state_of(&after_bob, "connect"), (json!("COMPLETED"), json!("alice")), "alice keeps her credit");
    assert_eq!(after_bob["status"], "COMPLETED");
    assert_eq!(after_bob["points"], 15);
    assert!(after_bob["revision"].as_i64().unwrap() > after_alice["revision"].as_i64().unwrap());

    // Repeating a finished step changes nothing, not even its credit.
    let repeated = complete(&app, &bob, "team_setup", "connect", None).await;
    assert_eq!(repeated, after_bob);
    assert_eq!(state_of(&repeated, "connect"), (json!("COMPLETED"), json!("alice")));

    // A skip is credited too.
    let skipped = app
        .ok(&alice, &skip_mutation(), json!({ "f": "team_setup", "k": "branding", "r": "later", "w": "w1" }))
        .await["skipStep"]
        .clone();
    assert_eq!(state_of(&skipped, "branding"), (json!("SKIPPED"), json!("alice")));
    assert_eq!(step_of(&skipped, "branding")["skipReason"], "later");
    assert_eq!(status(&app, &bob, "team_setup", None).await, skipped);

    assert_eq!(enrollments_of(&app, "workspace:w1").await, 1, "one enrollment for the workspace");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 1, "none for the members");
}

async fn the_workspace_claim_decides_where_a_user_may_act(app: TestApp) {
    app.publish(team_setup()).await;
    app.publish(personal()).await;
    let alice = app.member("alice", &["w1"]);

    // A workspace the token does not list is forbidden, for every operation.
    let status_w2 = app.code(Some(&alice), &status_query(), vars("team_setup", Some("w2"))).await;
    assert_eq!(status_w2, "FORBIDDEN");
    let start_w2 = app.code(Some(&alice), &start_mutation(), vars("team_setup", Some("w2"))).await;
    assert_eq!(start_w2, "FORBIDDEN");
    let complete_w2 =
        app.code(Some(&alice), &complete_mutation(), json!({ "f": "team_setup", "k": "invite", "w": "w2" })).await;
    assert_eq!(complete_w2, "FORBIDDEN");
    let next_w2 = "query { nextStep(flowKey: \"team_setup\", workspaceId: \"w2\") { key } }";
    assert_eq!(app.code(Some(&alice), next_w2, json!({})).await, "FORBIDDEN");
    let skip_w2 = "mutation { skipOnboarding(flowKey: \"team_setup\", workspaceId: \"w2\") { status } }";
    assert_eq!(app.code(Some(&alice), skip_w2, json!({})).await, "FORBIDDEN");
    assert_eq!(app.code(Some(&alice), ONBOARDINGS, json!({ "w": "w2" })).await, "FORBIDDEN");
    // Even on a user-scoped flow, naming a workspace the token does not list is refused.
    assert_eq!(app.code(Some(&alice), &status_query(), vars("personal", Some("w2"))).await, "FORBIDDEN");
    // A plain user token lists no workspace at all.
    let plain = app.user("alice");
    assert_eq!(app.code(Some(&plain), &status_query(), vars("team_setup", Some("w1"))).await, "FORBIDDEN");

    // No workspace to be found: no claim, or several and none named.
    let error = app.error(Some(&plain), &status_query(), vars("team_setup", None)).await;
    assert_eq!(error["extensions"]["code"], "VALIDATION_FAILED", "{error:#}");
    let two = app.member("alice", &["w1", "w2"]);
    assert_eq!(app.code(Some(&two), &status_query(), vars("team_setup", None)).await, "VALIDATION_FAILED");
    let code = app.code(Some(&two), &complete_mutation(), json!({ "f": "team_setup", "k": "invite" })).await;
    assert_eq!(code, "VALIDATION_FAILED");
    assert_eq!(app.code(Some(&two), &start_mutation(), vars("team_setup", None)).await, "VALIDATION_FAILED");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0, "a refused request writes nothing");
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress").await, 0);

    // Named, each listed workspace works; implied, the only one works.
    assert_eq!(start(&app, &two, "team_setup", Some("w2")).await["workspaceId"], "w2");
    assert_eq!(complete(&app, &alice, "team_setup", "invite", None).await["workspaceId"], "w1");
    // A user flow needs no workspace.
    assert_eq!(start(&app, &plain, "personal", None).await["subjectId"], "alice");
}

async fn admins_and_services_act_in_any_workspace(app: TestApp) {
    app.publish(team_setup()).await;
    let admin = app.admin();

    // An admin with no workspace claim acts in any workspace it names, as itself.
    let by_admin = complete(&app, &admin, "team_setup", "invite", Some("w9")).await;
    assert_eq!(by_admin["workspaceId"], "w9");
    assert_eq!(state_of(&by_admin, "invite"), (json!("COMPLETED"), json!("test-admin")));
    assert_eq!(step_of(&by_admin, "invite")["source"], "ADMIN");

    // A backend acting for a member credits the member.
    let service = app.token("backend", Role::Service);
    let for_alice = app
        .ok(&service, &complete_mutation(), json!({ "f": "team_setup", "k": "branding", "w": "w9", "s": "alice" }))
        .await["completeStep"]
        .clone();
    assert_eq!(state_of(&for_alice, "branding"), (json!("COMPLETED"), json!("alice")));
    assert_eq!(step_of(&for_alice, "branding")["source"], "ADMIN");
    assert_eq!(for_alice["workspaceId"], "w9");
    assert_eq!(for_alice["subjectId"], Value::Null);

    // The workspace's members see it all.
    let member = status(&app, &app.member("carol", &["w9"]), "team_setup", None).await;
    assert_eq!(member, for_alice);
    assert_eq!(status(&app, &service, "team_setup", Some("w9")).await, for_alice);

    // Without a workspace there is none to act in.
    assert_eq!(app.code(Some(&admin), &status_query(), vars("team_setup", None)).await, "VALIDATION_FAILED");
    let code =
        app.code(Some(&service), &complete_mutation(), json!({ "f": "team_setup", "k": "invite", "s": "alice" })).await;
    assert_eq!(code, "VALIDATION_FAILED");
}

async fn a_member_of_two_workspaces_has_two_independent_progresses(app: TestApp) {
    app.publish(team_setup()).await;

    // Alice joins w1 first and does some of its checklist.
    let early = app.member("alice", &["w1"]);
    let w1_done = complete(&app, &early, "team_setup", "connect", None).await;
    assert_eq!(state_of(&w1_done, "connect"), (json!("COMPLETED"), json!("alice")));

    // Joining w2 restarts nothing in w1.
    let both = app.member("alice", &["w1", "w2"]);
    assert_eq!(status(&app, &both, "team_setup", Some("w1")).await, w1_done);
    let w2_before = status(&app, &both, "team_setup", Some("w2")).await;
    assert_eq!(w2_before["status"], "NOT_STARTED");
    assert_eq!(w2_before["workspaceId"], "w2");
    assert_eq!(state_of(&w2_before, "connect").0, "PENDING", "w1's work is not w2's");

    // Work in w2 leaves w1 untouched, and the other way round.
    let w2_done = complete(&app, &both, "team_setup", "invite", Some("w2")).await;
    assert_eq!(state_of(&w2_done, "invite"), (json!("COMPLETED"), json!("alice")));
    assert_eq!(state_of(&w2_done, "connect").0, "PENDING");
    assert_eq!(w2_done["points"], 5);
    assert_eq!(status(&app, &both, "team_setup", Some("w1")).await, w1_done);
    let w1_now = complete(&app, &both, "team_setup", "branding", Some("w1")).await;
    assert_eq!(state_of(&w1_now, "invite").0, "PENDING");
    assert_eq!(status(&app, &both, "team_setup", Some("w2")).await, w2_done);

    // Another member of w2 sees w2's progress, not w1's.
    assert_eq!(status(&app, &app.member("bob", &["w2"]), "team_setup", None).await, w2_done);
    assert_eq!(enrollments_of(&app, "workspace:w1").await, 1);
    assert_eq!(enrollments_of(&app, "workspace:w2").await, 1);
}

async fn a_user_flow_ignores_the_workspace(app: TestApp) {
    app.publish(personal()).await;
    let alice = app.member("alice", &["w1"]);
    let bob = app.member("bob", &["w1"]);

    // Named or implied, the workspace does not make alice's own flow shared.
    let own = complete(&app, &alice, "personal", "profile", Some("w1")).await;
    assert_eq!(own["subjectId"], "alice");
    assert_eq!(own["workspaceId"], Value::Null);
    assert_eq!(own["scope"], "USER");
    assert_eq!(state_of(&own, "profile"), (json!("COMPLETED"), json!("alice")));
    let read = status(&app, &alice, "personal", Some("w1")).await;
    assert_eq!(read, own);
    assert_eq!(status(&app, &alice, "personal", None).await, own);

    // Bob, in the same workspace, has his own progress.
    let bobs = status(&app, &bob, "personal", Some("w1")).await;
    assert_eq!(bobs["subjectId"], "bob");
    assert_eq!(bobs["status"], "NOT_STARTED");
    assert_eq!(state_of(&bobs, "profile").0, "PENDING");
    assert_eq!(enrollments_of(&app, "workspace:w1").await, 0, "the workspace has no user-flow progress");

    // An admin acting for bob credits bob; acting without subjectId, its own progress.
    let admin = app.admin();
    let for_bob = app.ok(&admin, &complete_mutation(), json!({ "f": "personal", "k": "profile", "s": "bob" })).await
        ["completeStep"]
        .clone();
    assert_eq!(for_bob["subjectId"], "bob");
    assert_eq!(state_of(&for_bob, "profile"), (json!("COMPLETED"), json!("bob")));
    let for_itself = complete(&app, &admin, "personal", "profile", Some("w1")).await;
    assert_eq!(for_itself["subjectId"], "test-admin");
    assert_eq!(for_itself["workspaceId"], Value::Null);
    assert_eq!(state_of(&for_itself, "profile"), (json!("COMPLETED"), json!("test-admin")));
}

async fn user_ids_cannot_take_the_workspace_prefix(app: TestApp) {
    app.publish(personal()).await;
    app.publish(team_setup()).await;
    // The workspace acme has progress of its own, stored under `workspace:acme`.
    let acme_before = complete(&app, &app.member("alice", &["acme"]), "team_setup", "invite", None).await;
    let before = app.count("SELECT COUNT(*) FROM subjects").await;

    // A user token named like the workspace is refused on its own flows.
    let posing = app.user("workspace:acme");
    let error = app.error(Some(&posing), &status_query(), vars("personal", None)).await;
    assert_eq!(error["extensions"]["code"], "VALIDATION_FAILED", "{error:#}");
    let code = app.code(Some(&posing), &complete_mutation(), json!({ "f": "personal", "k": "profile" })).await;
    assert_eq!(code, "VALIDATION_FAILED");
    assert_eq!(app.code(Some(&posing), POINTS, json!({})).await, "VALIDATION_FAILED");
    assert_eq!(app.code(Some(&posing), ONBOARDINGS, json!({})).await, "VALIDATION_FAILED");

    // So is a backend naming such a subject.
    let admin = app.admin();
    let for_posing = json!({ "f": "personal", "s": "workspace:acme" });
    assert_eq!(app.code(Some(&admin), &status_query(), for_posing).await, "VALIDATION_FAILED");
    let set = "mutation($a: JSON!) { setSubjectAttributes(subjectId: \"workspace:acme\", attributes: $a) { id } }";
    assert_eq!(app.code(Some(&admin), set, json!({ "a": { "plan": "team" } })).await, "VALIDATION_FAILED");
    assert_eq!(app.code(Some(&admin), POINTS, json!({ "s": "workspace:acme" })).await, "VALIDATION_FAILED");

    // And an event sent by one.
    let events_before = app.count("SELECT COUNT(*) FROM events").await;
    let result =
        track(&app, json!({ "id": "posing-1", "subjectId": "workspace:x", "name": "integration.connected" })).await;
    assert_eq!(result["status"], "REJECTED", "{result:#}");
    assert_eq!(result["error"]["code"], "VALIDATION_FAILED");
    assert_eq!(result["completed"], json!([]));
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, events_before, "a rejected event is not stored");
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, before, "no subject was made for any of them");

    // The workspace's progress is untouched.
    let acme = status(&app, &admin, "team_setup", Some("acme")).await;
    assert_eq!(acme, acme_before);
    assert_eq!(state_of(&acme, "invite"), (json!("COMPLETED"), json!("alice")));
}

/// The reserved prefix holds for the member who acts in a workspace flow as well: it is the
/// user recorded as `completedBy`, so a workspace-like id must not get there.
async fn a_member_named_like_a_workspace_cannot_act_in_one(app: TestApp) {
    app.publish(team_setup()).await;

    // A user token named like a workspace, listing a workspace it is a member of.
    let posing = app.member("workspace:acme", &["acme"]);
    let code = app.code(Some(&posing), &complete_mutation(), json!({ "f": "team_setup", "k": "invite" })).await;
    assert_eq!(code, "VALIDATION_FAILED", "a user id cannot start with `workspace:`");

    // A backend acting in a workspace for such a subject.
    let for_posing = json!({ "f": "team_setup", "k": "branding", "w": "w1", "s": "workspace:x" });
    assert_eq!(app.code(Some(&app.service()), &complete_mutation(), for_posing).await, "VALIDATION_FAILED");

    // Nothing was credited to either.
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress").await, 0, "a refused write leaves no trace");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0);
}

async fn a_subscribed_member_sees_another_members_completion(app: TestApp) {
    app.publish(team_setup()).await;
    let alice = app.member("alice", &["w1", "w2"]);
    let bob = app.member("bob", &["w1"]);

    let mut client = WsClient::authorized(app.addr, TRANSPORT_WS, &alice).await;
    client.subscribe("w1", &progress_subscription(), vars("team_setup", Some("w1"))).await;
    let first = client.snapshot("w1").await;
    assert_eq!(first["status"], "NOT_STARTED");
    assert_eq!(first["workspaceId"], "w1");
    assert_eq!(first["revision"], 0);

    // Bob's completion reaches alice.
    let by_bob = complete(&app, &bob, "team_setup", "invite", None).await;
    let second = client.snapshot("w1").await;
    assert_eq!(second, by_bob);
    assert_eq!(state_of(&second, "invite"), (json!("COMPLETED"), json!("bob")));

    // So does an event that happened in the workspace.
    let event = json!({ "id": "e-1", "subjectId": "carol", "workspaceId": "w1", "name": "integration.connected" });
    assert_eq!(completed_of(&track(&app, event).await), [done("team_setup", "connect", "w1")]);
    let third = client.snapshot("w1").await;
    assert_eq!(state_of(&third, "connect"), (json!("COMPLETED"), json!("carol")));
    assert_eq!(step_of(&third, "connect")["source"], "EVENT");
    assert!(third["revision"].as_i64().unwrap() > second["revision"].as_i64().unwrap());

    // Another workspace's changes do not.
    complete(&app, &app.member("dave", &["w2"]), "team_setup", "invite", None).await;
    client.expect_silence(QUIET).await;

    // A workspace alice is not in is forbidden; none named, with two listed, is unclear.
    client.subscribe("w3", &progress_subscription(), vars("team_setup", Some("w3"))).await;
    assert_eq!(client.operation_errors("w3").await[0]["extensions"]["code"], "FORBIDDEN");
    client.subscribe("none", &progress_subscription(), vars("team_setup", None)).await;
    assert_eq!(client.operation_errors("none").await[0]["extensions"]["code"], "VALIDATION_FAILED");

    // Bob, with one workspace, may leave it implied.
    let mut bobs = WsClient::authorized(app.addr, TRANSPORT_WS, &bob).await;
    bobs.subscribe("b", &progress_subscription(), vars("team_setup", None)).await;
    assert_eq!(bobs.snapshot("b").await, third);
}

async fn one_event_completes_the_workspace_step_and_the_users_step(app: TestApp) {
    app.publish(team_setup()).await;
    app.publish(personal()).await;
    let alice = app.member("alice", &["w1"]);
    let bob = app.member("bob", &["w1"]);
    start(&app, &alice, "team_setup", None).await;
    start(&app, &alice, "personal", None).await;
    start(&app, &bob, "personal", None).await;
    start(&app, &app.user("carol"), "personal", None).await;

    // An event that names no workspace concerns the user's flows alone, even a member's.
    let solo = json!({ "id": "solo", "subjectId": "carol", "name": "integration.connected" });
    assert_eq!(completed_of(&track(&app, solo).await), [done("personal", "connect", "")]);
    assert_eq!(state_of(&status(&app, &alice, "team_setup", None).await, "connect").0, "PENDING");

    let event = json!({
        "id": "connected-1",
        "subjectId": "alice",
        "workspaceId": "w1",
        "name": "integration.connected",
        "properties": { "provider": "slack" }
    });
    let result = track(&app, event.clone()).await;
    assert_eq!(result["status"], "NEW", "{result:#}");
    assert_eq!(
        completed_of(&result),
        [done("personal", "connect", ""), done("team_setup", "connect", "w1")],
        "one event, both flows"
    );
    let entries = result["completed"].as_array().unwrap();
    assert!(entries.iter().all(|c| c["version"] == 1), "{result:#}");
    let user_entry = entries.iter().find(|c| c["flowKey"] == "personal").unwrap();
    assert_eq!(user_entry["workspaceId"], Value::Null);

    let team = status(&app, &bob, "team_setup", None).await;
    assert_eq!(state_of(&team, "connect"), (json!("COMPLETED"), json!("alice")));
    assert_eq!(step_of(&team, "connect")["source"], "EVENT");
    assert_eq!(team["points"], 10);
    let own = status(&app, &alice, "personal", None).await;
    assert_eq!(state_of(&own, "connect"), (json!("COMPLETED"), json!("alice")));
    assert_eq!(own["points"], 3);
    // Bob's own flow did not see alice's event.
    assert_eq!(state_of(&status(&app, &bob, "personal", None).await, "connect").0, "PENDING");

    // A retry is a duplicate and completes nothing more.
    let again = track(&app, event).await;
    assert_eq!(again["status"], "DUPLICATE");
    assert_eq!(again["completed"], json!([]));
    assert_eq!(status(&app, &bob, "team_setup", None).await, team);

    // An event in w2 does not touch w1.
    start(&app, &app.admin(), "team_setup", Some("w2")).await;
    let in_w2 =
        json!({ "id": "connected-2", "subjectId": "bob", "workspaceId": "w2", "name": "integration.connected" });
    assert_eq!(
        completed_of(&track(&app, in_w2).await),
        [done("personal", "connect", ""), done("team_setup", "connect", "w2")]
    );
    assert_eq!(status(&app, &bob, "team_setup", None).await, team);
}

async fn an_event_about_a_workspace_alone_names_no_member(app: TestApp) {
    app.publish(team_setup()).await;
    app.publish(personal()).await;
    let alice = app.member("alice", &["w1"]);
    start(&app, &alice, "team_setup", None).await;
    start(&app, &alice, "personal", None).await;

    let result = track(&app, json!({ "id": "ws-only", "workspaceId": "w1", "name": "integration.connected" })).await;
    assert_eq!(result["status"], "NEW", "{result:#}");
    assert_eq!(result["error"], Value::Null);
    assert_eq!(completed_of(&result), [done("team_setup", "connect", "w1")], "no user's flow is concerned");
    let team = status(&app, &alice, "team_setup", None).await;
    assert_eq!(state_of(&team, "connect"), (json!("COMPLETED"), Value::Null));
    assert_eq!(step_of(&team, "connect")["source"], "EVENT");
    assert_eq!(state_of(&status(&app, &alice, "personal", None).await, "connect").0, "PENDING");

    // Neither a user nor a workspace: rejected, and not stored.
    let events = app.count("SELECT COUNT(*) FROM events").await;
    let nobody = track(&app, json!({ "id": "nobody", "name": "integration.connected" })).await;
    assert_eq!(nobody["status"], "REJECTED", "{nobody:#}");
    assert_eq!(nobody["error"]["code"], "VALIDATION_FAILED");
    assert!(!nobody["error"]["message"].as_str().unwrap_or_default().is_empty());
    assert_eq!(nobody["completed"], json!([]));
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, events);
}

async fn an_event_before_enrollment_settles_when_the_workspace_enrolls(app: TestApp) {
    app.publish(team_setup()).await;
    let early = json!({ "id": "early", "subjectId": "alice", "workspaceId": "w1", "name": "integration.connected" });
    let result = track(&app, early).await;
    assert_eq!(result["status"], "NEW");
    assert_eq!(result["completed"], json!([]), "nothing is enrolled yet");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0);

    // Bob enrolls the workspace: the stored event completes its step, credited to alice.
    let bob = app.member("bob", &["w1"]);
    let started = start(&app, &bob, "team_setup", None).await;
    assert_eq!(started["status"], "IN_PROGRESS");
    assert_eq!(state_of(&started, "connect"), (json!("COMPLETED"), json!("alice")));
    assert_eq!(step_of(&started, "connect")["source"], "EVENT");
    assert_eq!(started["points"], 10);
    assert_eq!(status(&app, &app.member("alice", &["w1"]), "team_setup", None).await, started);

    // The event happened in w1 only.
    let w2 = start(&app, &app.member("carol", &["w2"]), "team_setup", None).await;
    assert_eq!(state_of(&w2, "connect"), (json!("PENDING"), Value::Null));
}

async fn onboardings_lists_user_flows_and_each_workspaces_flows(app: TestApp) {
    app.publish(personal()).await;
    // An audience that admits every workspace, so one not yet enrolled is listed.
    let mut team = team_setup();
    team["audience"] = json!({ "attr": "plan", "op": "ne", "value": "free" });
    app.publish(team).await;

    let alice = app.member("alice", &["w1", "w2"]);
    start(&app, &alice, "personal", None).await;
    complete(&app, &alice, "team_setup", "invite", Some("w1")).await;

    let listed = app.ok(&alice, ONBOARDINGS, json!({})).await["onboardings"].clone();
    let summary: Vec<(Value, Value, Value, Value, Value)> = listed
        .as_array()
        .expect("onboardings")
        .iter()
        .map(|o| {
            (
                o["flowKey"].clone(),
                o["scope"].clone(),
                o["subjectId"].clone(),
                o["workspaceId"].clone(),
                o["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!("personal"), json!("USER"), json!("alice"), Value::Null, json!("IN_PROGRESS")),
            (json!("team_setup"), json!("WORKSPACE"), Value::Null, json!("w1"), json!("IN_PROGRESS")),
            (json!("team_setup"), json!("WORKSPACE"), Value::Null, json!("w2"), json!("NOT_STARTED")),
        ],
        "{listed:#}"
    );
    assert_eq!(state_of(&listed[1], "invite"), (json!("COMPLETED"), json!("alice")));
    assert_eq!(state_of(&listed[2], "invite"), (json!("PENDING"), Value::Null));

    // Naming a workspace lists only that one's.
    let only_w2 = app.ok(&alice, ONBOARDINGS, json!({ "w": "w2" })).await["onboardings"].clone();
    let keys: Vec<(Value, Value)> =
        only_w2.as_array().unwrap().iter().map(|o| (o["flowKey"].clone(), o["workspaceId"].clone())).collect();
    assert_eq!(keys, [(json!("personal"), Value::Null), (json!("team_setup"), json!("w2"))]);

    // A user without workspaces gets its own flows; an admin asking for alice, hers, plus
    // the workspace it names.
    let solo = app.ok(&app.member("bob", &[]), ONBOARDINGS, json!({})).await["onboardings"].clone();
    assert_eq!(solo, json!([]), "bob started nothing and is in no workspace");
    let for_alice = app.ok(&app.admin(), ONBOARDINGS, json!({ "s": "alice", "w": "w1" })).await["onboardings"].clone();
    let keys: Vec<(Value, Value, Value)> = for_alice
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["flowKey"].clone(), o["subjectId"].clone(), o["workspaceId"].clone()))
        .collect();
    assert_eq!(
        keys,
        [(json!("personal"), json!("alice"), Value::Null), (json!("team_setup"), Value::Null, json!("w1"))]
    );
}

async fn workspace_audiences_and_conditions_read_workspace_attributes(app: TestApp) {
    app.publish(json!({
        "key": "team_plan",
        "title": "Make the most of Team",
        "scope": "WORKSPACE",
        "audience": { "attr": "plan", "op": "eq", "value": "team" },
        "steps": [
            { "key": "roles", "title": "Set up roles" },
            { "key": "sso", "title": "Configure SSO", "condition": { "tier": "enterprise" } }
        ]
    }))
    .await;
    let alice = app.member("alice", &["w1"]);

    // w1 has no plan: the flow is not for it.
    assert_eq!(app.code(Some(&alice), &start_mutation(), vars("team_plan", None)).await, "FORBIDDEN");
    let code = app.code(Some(&alice), &complete_mutation(), json!({ "f": "team_plan", "k": "roles" })).await;
    assert_eq!(code, "FORBIDDEN");
    // The member's own attributes are not the workspace's.
    app.set_attributes("alice", json!({ "plan": "team", "tier": "enterprise" })).await;
    assert_eq!(app.code(Some(&alice), &start_mutation(), vars("team_plan", None)).await, "FORBIDDEN");
    assert_eq!(enrollments_of(&app, "workspace:w1").await, 0);

    // Only admins and services set a workspace's attributes.
    let code = app.code(Some(&alice), SET_WORKSPACE_ATTRIBUTES, json!({ "w": "w1", "a": { "plan": "team" } })).await;
    assert_eq!(code, "FORBIDDEN");

    // On the team plan, w1 is enrolled by that write.
    let set = set_workspace_attributes(&app, "w1", json!({ "plan": "team" }), true).await;
    assert_eq!(set, json!({ "id": "w1", "attributes": { "plan": "team" } }));
    let enrolled = status(&app, &alice, "team_plan", None).await;
    assert_eq!(enrolled["status"], "IN_PROGRESS", "{enrolled:#}");
    assert_eq!(enrolled["workspaceId"], "w1");
    assert!(enrolled["revision"].as_i64().unwrap() >= 1);
    assert_eq!(step_keys_of(&enrolled), ["roles"], "sso is for enterprise workspaces");
    assert_eq!(enrollments_of(&app, "workspace:w1").await, 1);

    // A step condition reads the workspace's attributes too; merge keeps the plan.
    let merged = set_workspace_attributes(&app, "w1", json!({ "tier": "enterprise" }), true).await;
    assert_eq!(merged["attributes"], json!({ "plan": "team", "tier": "enterprise" }));
    let enterprise = status(&app, &alice, "team_plan", None).await;
    assert_eq!(step_keys_of(&enterprise), ["roles", "sso"]);
    let roles = complete(&app, &alice, "team_plan", "roles", None).await;
    assert_eq!(state_of(&roles, "roles"), (json!("COMPLETED"), json!("alice")));

    // w2 stays outside.
    let bob = app.member("bob", &["w2"]);
    assert_eq!(app.code(Some(&bob), &start_mutation(), vars("team_plan", None)).await, "FORBIDDEN");
    assert_eq!(enrollments_of(&app, "workspace:w2").await, 0);
}

async fn workspace_points_go_to_the_workspaces_ledger(app: TestApp) {
    app.publish(team_setup()).await;
    app.publish(personal()).await;
    let alice = app.member("alice", &["w1"]);
    let bob = app.member("bob", &["w1"]);

    let invited = complete(&app, &alice, "team_setup", "invite", None).await;
    assert_eq!(invited["points"], 5);
    complete(&app, &alice, "personal", "profile", None).await;
    let ledger = points(&app, &alice, None, Some("w1")).await;
    assert_eq!(
        ledger,
        json!({
            "subjectId": null,
            "workspaceId": "w1",
            "total": 5,
            "entries": [{ "amount": 5, "reason": "onboarding:team_setup:invite" }]
        })
    );
    // Alice's own ledger has her own flow's points only.
    let own = points(&app, &alice, None, None).await;
    assert_eq!(
        own,
        json!({
            "subjectId": "alice",
            "workspaceId": null,
            "total": 2,
            "entries": [{ "amount": 2, "reason": "onboarding:personal:profile" }]
        })
    );

    // Bob's completion adds to the same ledger, and nothing to his.
    complete(&app, &bob, "team_setup", "branding", None).await;
    let ledger = points(&app, &bob, None, Some("w1")).await;
    assert_eq!(ledger["total"], 6);
    assert_eq!(ledger["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(points(&app, &bob, None, None).await["total"], 0);

    // Awarded once, whoever repeats it.
    complete(&app, &bob, "team_setup", "invite", None).await;
    assert_eq!(points(&app, &alice, None, Some("w1")).await["total"], 6);

    // Only the workspace's members (and backends) may read it.
    let carol = app.member("carol", &["w2"]);
    assert_eq!(app.code(Some(&carol), POINTS, json!({ "w": "w1" })).await, "FORBIDDEN");
    assert_eq!(app.code(Some(&app.user("dave")), POINTS, json!({ "w": "w1" })).await, "FORBIDDEN");
    assert_eq!(points(&app, &app.admin(), None, Some("w1")).await["total"], 6);
    assert_eq!(points(&app, &app.service(), None, Some("w1")).await["total"], 6);
    let empty = points(&app, &carol, None, Some("w2")).await;
    assert_eq!(empty, json!({ "subjectId": null, "workspaceId": "w2", "total": 0, "entries": [] }));
}

/// The documented assignment, computed independently of the crate: SHA-256 of
/// `"<key>:<id>"`, first 8 bytes big-endian, modulo the total weight, consecutive ranges
/// in variant order.
fn expected_variant<'a>(key: &str, id: &str, variants: &[(&'a str, u64)]) -> &'a str {
    let digest = Sha256::digest(format!("{key}:{id}").as_bytes());
    let first: [u8; 8] = digest[..8].try_into().expect("8 bytes");
    let total: u64 = variants.iter().map(|(_, w)| w).sum();
    let mut point = u64::from_be_bytes(first) % total;
    for (name, weight) in variants {
        if point < *weight {
            return name;
        }
        point -= weight;
    }
    unreachable!("the point is below the total weight")
}

/// The first `<prefix>-<n>` id the hash sends to `variant`.
fn id_assigned_to(key: &str, variants: &[(&str, u64)], variant: &str, prefix: &str) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| expected_variant(key, id, variants) == variant)
        .unwrap_or_else(|| panic!("no id for {variant}"))
}

async fn experiments_on_a_workspace_flow_assign_by_workspace(app: TestApp) {
    const HALVES: [(&str, u64); 2] = [("control", 50), ("shorter", 50)];
    let long = team_setup();
    let mut short = team_setup();
    short["steps"] = json!([{ "key": "invite", "title": "Invite your team", "points": 5 }]);
    assert_eq!(app.publish(long).await["version"], 1);
    assert_eq!(app.publish(short).await["version"], 2);

    let key = "team-shorter";
    let admin = app.admin();
    let create = "mutation($k: String!, $f: String!, $v: [VariantInput!]!) { createExperiment(key: $k, flowKey: $f, \
                  variants: $v) { key flowKey state } }";
    let variants = json!([
        { "name": "control", "version": 1, "weight": 50 },
        { "name": "shorter", "version": 2, "weight": 50 }
    ]);
    let created = app.ok(&admin, create, json!({ "k": key, "f": "team_setup", "v": variants })).await;
    assert_eq!(created["createExperiment"]["state"], "DRAFT");
    let started =
        app.ok(&admin, "mutation($k: String!) { startExperiment(key: $k) { state } }", json!({ "k": key })).await;
    assert_eq!(started["startExperiment"]["state"], "RUNNING");

    // A workspace the hash sends to `shorter`, and members it would send to `control`
    // if it hashed them: the workspace decides.
    let workspace = id_assigned_to(key, &HALVES, "shorter", "acme");
    let first = id_assigned_to(key, &HALVES, "control", "member");
    let second = (0..10_000)
        .map(|i| format!("other-{i}"))
        .find(|id| expected_variant(key, id, &HALVES) == "control")
        .expect("a second member");
    assert_eq!(expected_variant(key, &workspace, &HALVES), "shorter");
    assert_eq!(expected_variant(key, &first, &HALVES), "control");
    assert_eq!(expected_variant(key, &second, &HALVES), "control");

    let first_token = app.member(&first, &[&workspace]);
    let second_token = app.member(&second, &[&workspace]);
    let seen_first = status(&app, &first_token, "team_setup", None).await;
    let seen_second = status(&app, &second_token, "team_setup", None).await;
    assert_eq!(seen_first["variant"], "shorter", "{seen_first:#}");
    assert_eq!(seen_first["version"], 2);
    assert_eq!(step_keys_of(&seen_first), ["invite"]);
    assert_eq!(seen_second, seen_first, "every member sees the workspace's variant");

    // One exposure: the workspace's, not one per member.
    let report = "query($k: String!) { experiment(key: $k) { variants { name exposures } } }";
    let exposures = |experiment: &Value| -> Vec<(String, i64)> {
        experiment["experiment"]["variants"]
            .as_array()
            .expect("variants")
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_string(), v["exposures"].as_i64().unwrap()))
            .collect()
    };
    let after_reads = app.ok(&admin, report, json!({ "k": key })).await;
    assert_eq!(exposures(&after_reads), [("control".to_string(), 0), ("shorter".to_string(), 1)]);
    assert_eq!(app.count("SELECT COUNT(*) FROM exposures").await, 1);

    // Enrolling under it pins the workspace's version for every member.
    let done = complete(&app, &second_token, "team_setup", "invite", None).await;
    assert_eq!((done["variant"].clone(), done["version"].clone()), (json!("shorter"), json!(2)));
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(status(&app, &first_token, "team_setup", None).await, done);
    assert_eq!(exposures(&app.ok(&admin, report, json!({ "k": key })).await)[1].1, 1);

    // Another workspace gets the variant of its own hash.
    let other = id_assigned_to(key, &HALVES, "control", "globex");
    let other_status = status(&app, &app.member(&first, &[&other]), "team_setup", None).await;
    assert_eq!((other_status["variant"].clone(), other_status["version"].clone()), (json!("control"), json!(1)));
    let totals = exposures(&app.ok(&admin, report, json!({ "k": key })).await);
    assert_eq!(totals, [("control".to_string(), 1), ("shorter".to_string(), 1)]);
}

async fn a_new_version_cannot_change_the_scope(app: TestApp) {
    let admin = app.admin();
    app.publish(personal()).await;
    app.publish(team_setup()).await;

    let scope_problem = |error: &Value| -> Vec<(String, String)> {
        assert_eq!(error["extensions"]["code"], "VALIDATION_FAILED", "{error:#}");
        error["extensions"]["problems"]
            .as_array()
            .unwrap_or_else(|| panic!("no problems in {error:#}"))
            .iter()
            .map(|p| {
                assert!(p["message"].as_str().is_some_and(|m| !m.is_empty()), "{p:#}");
                (p["path"].as_str().unwrap().to_string(), p["code"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let expected = vec![("$.scope".to_string(), "SCOPE_CHANGED".to_string())];

    // A user flow cannot become a workspace flow...
    let mut to_workspace = personal();
    to_workspace["scope"] = json!("WORKSPACE");
    let error = app.error(Some(&admin), PUBLISH, json!({ "d": to_workspace })).await;
    assert_eq!(scope_problem(&error), expected);
    // ...nor the other way, named or by default.
    let mut to_user = team_setup();
    to_user["scope"] = json!("USER");
    let error = app.error(Some(&admin), PUBLISH, json!({ "d": to_user })).await;
    assert_eq!(scope_problem(&error), expected);
    let mut by_default = team_setup();
    by_default.as_object_mut().unwrap().remove("scope");
    let error = app.error(Some(&admin), PUBLISH, json!({ "d": by_default })).await;
    assert_eq!(scope_problem(&error), expected);
    assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 2, "nothing was stored");

    // The same scope publishes the next version.
    let next = app.ok(&admin, PUBLISH, json!({ "d": team_setup() })).await["publishFlow"].clone();
    assert_eq!(next, json!({ "key": "team_setup", "version": 2, "scope": "WORKSPACE" }));
    let mut user_again = personal();
    user_again["scope"] = json!("USER");
    let next = app.ok(&admin, PUBLISH, json!({ "d": user_again })).await["publishFlow"].clone();
    assert_eq!(next, json!({ "key": "personal", "version": 2, "scope": "USER" }));
}
