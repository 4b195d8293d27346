//! Publishing, versioning and deprecating flows, and reading them back.

use serde_json::{Value, json};

use crate::both;
use crate::common::{TestApp, complete_mutation, sample_flow, status_query};

both!(
    republishing_pins_enrolled_subjects_to_their_version,
    deprecated_versions_take_no_new_enrollments,
    deprecating_every_version_leaves_enrolled_subjects_reading,
    flows_and_flow_read_versions,
    validate_flow_reports_without_storing,
    stored_definitions_are_canonical,
    healthz_answers_ok,
);

const FLOWS: &str = "{ flows { key version status title } }";
const FLOW: &str = "query($k: String!, $v: Int) { flow(key: $k, version: $v) { id key version status scope title description definition createdAt } }";
const DEPRECATE: &str =
    "mutation($k: String!, $v: Int!) { deprecateFlow(key: $k, version: $v) { key version status } }";
const START: &str = "mutation($f: String!) { startOnboarding(flowKey: $f) { status version steps { key } } }";

fn version_of(key: &str, title: &str, steps: &[&str]) -> Value {
    let steps: Vec<Value> = steps.iter().map(|k| json!({ "key": k, "title": k.to_uppercase() })).collect();
    json!({ "key": key, "title": title, "steps": steps })
}

fn step_keys(status: &Value) -> Vec<String> {
    status["steps"].as_array().expect("steps").iter().map(|s| s["key"].as_str().unwrap().to_string()).collect()
}

async fn status_of(app: &TestApp, subject: &str, flow: &str) -> Value {
    app.ok(&app.user(subject), &status_query(), json!({ "f": flow })).await["status"].clone()
}

async fn republishing_pins_enrolled_subjects_to_their_version(app: TestApp) {
    let v1 = app.publish(version_of("welcome", "Welcome v1", &["a", "b"])).await;
    assert_eq!(v1, json!({ "key": "welcome", "version": 1, "status": "ACTIVE" }));
    let alice = app.user("alice");
    app.ok(&alice, &complete_mutation(), json!({ "f": "welcome", "k": "a" })).await;

    let v2 = app.publish(version_of("welcome", "Welcome v2", &["a", "c", "d"])).await;
    assert_eq!(v2, json!({ "key": "welcome", "version": 2, "status": "ACTIVE" }));
    let v3 = app.publish(version_of("welcome", "Welcome v3", &["a", "c", "d", "e"])).await;
    assert_eq!(v3["version"], 3, "each publish takes the next number");

    // Alice stays where she started.
    let on_v1 = status_of(&app, "alice", "welcome").await;
    assert_eq!(on_v1["version"], 1);
    assert_eq!(on_v1["title"], "Welcome v1");
    assert_eq!(step_keys(&on_v1), ["a", "b"]);
    assert_eq!(on_v1["steps"][0]["status"], "COMPLETED");
    assert_eq!(on_v1["status"], "IN_PROGRESS");
    let code = app.code(Some(&alice), &complete_mutation(), json!({ "f": "welcome", "k": "c" })).await;
    assert_eq!(code, "NOT_FOUND", "a step of a later version is not alice's");
    let done = app.ok(&alice, &complete_mutation(), json!({ "f": "welcome", "k": "b" })).await;
    assert_eq!(done["completeStep"]["status"], "COMPLETED", "v1 completes on v1's steps");
    assert_eq!(done["completeStep"]["version"], 1);
    let mine = app.ok(&alice, "{ onboardings { flowKey version } }", json!({})).await;
    assert_eq!(mine["onboardings"], json!([{ "flowKey": "welcome", "version": 1 }]));

    // Subjects not enrolled see the newest version, and enroll in it.
    let carol = status_of(&app, "carol", "welcome").await;
    assert_eq!(carol["status"], "NOT_STARTED");
    assert_eq!(carol["version"], 3);
    assert_eq!(step_keys(&carol), ["a", "c", "d", "e"]);
    let bob = app.ok(&app.user("bob"), START, json!({ "f": "welcome" })).await;
    assert_eq!(
        bob["startOnboarding"],
        json!({ "status": "IN_PROGRESS", "version": 3, "steps": [{ "key": "a" }, { "key": "c" }, { "key": "d" }, { "key": "e" }] })
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 3);
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 2);
}

async fn deprecated_versions_take_no_new_enrollments(app: TestApp) {
    app.publish(version_of("welcome", "Welcome v1", &["a", "b"])).await;
    app.publish(version_of("welcome", "Welcome v2", &["a", "c"])).await;
    let carol = app.user("carol");
    let enrolled = app.ok(&carol, START, json!({ "f": "welcome" })).await;
    assert_eq!(enrolled["startOnboarding"]["version"], 2);

    let admin = app.admin();
    let deprecated = app.ok(&admin, DEPRECATE, json!({ "k": "welcome", "v": 2 })).await;
    assert_eq!(deprecated["deprecateFlow"], json!({ "key": "welcome", "version": 2, "status": "DEPRECATED" }));

    // New subjects get the newest ACTIVE version.
    let dave = status_of(&app, "dave", "welcome").await;
    assert_eq!(dave["status"], "NOT_STARTED");
    assert_eq!(dave["version"], 1);
    assert_eq!(step_keys(&dave), ["a", "b"]);
    let dave = app.ok(&app.user("dave"), &complete_mutation(), json!({ "f": "welcome", "k": "b" })).await;
    assert_eq!(dave["completeStep"]["version"], 1);

    // Carol carries on with v2.
    let carol_step = app.ok(&carol, &complete_mutation(), json!({ "f": "welcome", "k": "c" })).await;
    assert_eq!(carol_step["completeStep"]["version"], 2);
    assert_eq!(step_keys(&carol_step["completeStep"]), ["a", "c"]);
    assert_eq!(carol_step["completeStep"]["steps"][1]["status"], "COMPLETED");

    // A later publish is ACTIVE again and becomes what new subjects get.
    let v3 = app.publish(version_of("welcome", "Welcome v3", &["z"])).await;
    assert_eq!(v3["version"], 3, "deprecated versions still count");
    assert_eq!(status_of(&app, "erin", "welcome").await["version"], 3);
    let flows = app.ok(&admin, FLOWS, json!({})).await;
    let statuses: Vec<(i64, &str)> = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["version"].as_i64().unwrap(), f["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, [(1, "ACTIVE"), (2, "DEPRECATED"), (3, "ACTIVE")]);
}

async fn deprecating_every_version_leaves_enrolled_subjects_reading(app: TestApp) {
    app.publish(version_of("welcome", "Welcome v1", &["a", "b"])).await;
    let alice = app.user("alice");
    app.ok(&alice, &complete_mutation(), json!({ "f": "welcome", "k": "a" })).await;
    app.publish(version_of("welcome", "Welcome v2", &["a", "c"])).await;
    let bob = app.user("bob");
    app.ok(&bob, START, json!({ "f": "welcome" })).await;

    let admin = app.admin();
    for v in [1, 2] {
        let d = app.ok(&admin, DEPRECATE, json!({ "k": "welcome", "v": v })).await;
        assert_eq!(d["deprecateFlow"]["status"], "DEPRECATED");
    }
    // Deprecating again is harmless.
    let again = app.ok(&admin, DEPRECATE, json!({ "k": "welcome", "v": 1 })).await;
    assert_eq!(again["deprecateFlow"]["status"], "DEPRECATED");

    let newcomer = app.user("newcomer");
    let error = app.error(Some(&newcomer), &status_query(), json!({ "f": "welcome" })).await;
    assert_eq!(error["extensions"]["code"], "NOT_FOUND", "{error:#}");
    let code = app.code(Some(&newcomer), START, json!({ "f": "welcome" })).await;
    assert_eq!(code, "NOT_FOUND");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 2);

    let alice_status = status_of(&app, "alice", "welcome").await;
    assert_eq!(alice_status["version"], 1);
    assert_eq!(alice_status["steps"][0]["status"], "COMPLETED");
    let bob_status = status_of(&app, "bob", "welcome").await;
    assert_eq!(bob_status["version"], 2);
    assert_eq!(bob_status["status"], "IN_PROGRESS");
    // ...and can still finish.
    let done = app.ok(&alice, &complete_mutation(), json!({ "f": "welcome", "k": "b" })).await;
    assert_eq!(done["completeStep"]["status"], "COMPLETED");
    let next = app.ok(&bob, "{ nextStep(flowKey: \"welcome\") { key } }", json!({})).await;
    assert_eq!(next["nextStep"], json!({ "key": "a" }));
}

async fn flows_and_flow_read_versions(app: TestApp) {
    let admin = app.admin();
    let empty = app.ok(&admin, FLOWS, json!({})).await;
    assert_eq!(empty["flows"], json!([]));
    app.publish(version_of("zeta", "Zeta 1", &["a"])).await;
    app.publish(version_of("alpha", "Alpha 1", &["a"])).await;
    app.publish(version_of("zeta", "Zeta 2", &["a"])).await;
    app.publish(version_of("mid", "Mid 1", &["a"])).await;
    app.publish(version_of("alpha", "Alpha 2", &["a"])).await;
    app.publish(version_of("alpha", "Alpha 3", &["a"])).await;

    let flows = app.ok(&admin, FLOWS, json!({})).await;
    let listed: Vec<(String, i64, String)> = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (f["key"].as_str().unwrap().into(), f["version"].as_i64().unwrap(), f["title"].as_str().unwrap().into())
        })
        .collect();
    let expected: Vec<(String, i64, String)> = [
        ("alpha", 1, "Alpha 1"),
        ("alpha", 2, "Alpha 2"),
        ("alpha", 3, "Alpha 3"),
        ("mid", 1, "Mid 1"),
        ("zeta", 1, "Zeta 1"),
        ("zeta", 2, "Zeta 2"),
    ]
    .iter()
    .map(|(k, v, t)| (k.to_string(), *v, t.to_string()))
    .collect();
    assert_eq!(listed, expected, "by key, then version");

    let newest = app.ok(&admin, FLOW, json!({ "k": "alpha" })).await;
    assert_eq!(newest["flow"]["version"], 3);
    assert_eq!(newest["flow"]["title"], "Alpha 3");
    assert_eq!(newest["flow"]["status"], "ACTIVE");
    assert_eq!(newest["flow"]["scope"], "USER");
    assert!(newest["flow"]["createdAt"].is_string());
    let first = app.ok(&admin, FLOW, json!({ "k": "alpha", "v": 1 })).await;
    assert_eq!(first["flow"]["version"], 1);
    assert_eq!(first["flow"]["title"], "Alpha 1");
    assert_ne!(first["flow"]["id"], newest["flow"]["id"]);

    // The newest version of any status, while new subjects get the newest ACTIVE one.
    app.ok(&admin, DEPRECATE, json!({ "k": "alpha", "v": 3 })).await;
    let newest = app.ok(&admin, FLOW, json!({ "k": "alpha" })).await;
    assert_eq!(newest["flow"]["version"], 3);
    assert_eq!(newest["flow"]["status"], "DEPRECATED");
    assert_eq!(status_of(&app, "alice", "alpha").await["version"], 2);

    assert_eq!(app.ok(&admin, FLOW, json!({ "k": "nope" })).await["flow"], Value::Null);
    assert_eq!(app.ok(&admin, FLOW, json!({ "k": "alpha", "v": 9 })).await["flow"], Value::Null);
}

async fn validate_flow_reports_without_storing(app: TestApp) {
    let admin = app.admin();
    let validate = "query($d: JSON!) { validateFlow(definition: $d) { path code message } }";
    let invalid = json!({
        "key": "loop",
        "title": "Loop",
        "steps": [
            { "key": "a", "title": "A", "dependsOn": ["b"] },
            { "key": "b", "title": "B", "dependsOn": ["b"] },
            { "key": "c", "title": "C", "scope": "x" }
        ]
    });
    let problems = app.ok(&admin, validate, json!({ "d": invalid })).await["validateFlow"].clone();
    let codes: Vec<(&str, &str)> = problems
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap(), p["code"].as_str().unwrap()))
        .collect();
    assert!(codes.contains(&("$.steps[0].dependsOn[0]", "FORWARD_DEPENDENCY")), "{problems:#}");
    assert!(codes.contains(&("$.steps[1].dependsOn", "DEPENDENCY_CYCLE")), "{problems:#}");
    assert!(codes.contains(&("$.steps[2].scope", "UNKNOWN_FIELD")), "{problems:#}");
    assert!(problems.as_array().unwrap().iter().all(|p| p["message"].as_str().is_some_and(|m| !m.is_empty())));

    // validateFlow reports exactly what publishFlow refuses with.
    let error = app
        .error(Some(&admin), "mutation($d: JSON!) { publishFlow(definition: $d) { version } }", json!({ "d": invalid }))
        .await;
    assert_eq!(error["extensions"]["code"], "VALIDATION_FAILED");
    assert_eq!(error["extensions"]["problems"], problems);

    let valid = app.ok(&admin, validate, json!({ "d": sample_flow("welcome") })).await;
    assert_eq!(valid["validateFlow"], json!([]));
    assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 0, "validating writes nothing");
    let code = app.code(Some(&app.user("alice")), &status_query(), json!({ "f": "welcome" })).await;
    assert_eq!(code, "NOT_FOUND", "a validated flow is not published");
}

async fn stored_definitions_are_canonical(app: TestApp) {
    let admin = app.admin();
    let published = app
        .ok(
            &admin,
            "mutation($d: JSON!) { publishFlow(definition: $d) { version definition } }",
            json!({ "d": {
                "key": "short",
                "title": "Shorthand",
                "steps": [
                    { "key": "a", "title": "A" },
                    { "key": "b", "title": "B", "description": "Be", "required": false, "condition": { "plan": "team" }, "dependsOn": ["a"], "points": 3 },
                    { "key": "c", "title": "C", "required": false, "skippable": false, "trigger": { "event": "c.done" } }
                ]
            } }),
        )
        .await;
    let canonical = json!({
        "key": "short",
        "title": "Shorthand",
        "scope": "USER",
        "steps": [
            { "key": "a", "title": "A", "required": true, "skippable": false, "dependsOn": [], "points": 0 },
            { "key": "b", "title": "B", "description": "Be", "required": false, "skippable": true,
              "condition": { "attr": "plan", "op": "eq", "value": "team" }, "dependsOn": ["a"], "points": 3 },
            { "key": "c", "title": "C", "required": false, "skippable": false, "dependsOn": [],
              "trigger": { "event": "c.done" }, "points": 0 }
        ]
    });
    assert_eq!(published["publishFlow"]["definition"], canonical);
    let read = app.ok(&admin, FLOW, json!({ "k": "short" })).await;
    assert_eq!(read["flow"]["definition"], canonical);
    assert_eq!(read["flow"]["description"], Value::Null);

    // What is in the database, not only what the API renders.
    let stored: Value =
        serde_json::from_str(&app.text("SELECT CAST(definition AS TEXT) FROM flows WHERE key = 'short'").await)
            .unwrap();
    assert_eq!(stored, canonical);

    // The canonical form publishes as is, to the same definition.
    let again = app
        .ok(
            &admin,
            "mutation($d: JSON!) { publishFlow(definition: $d) { version definition } }",
            json!({ "d": canonical }),
        )
        .await;
    assert_eq!(again["publishFlow"]["version"], 2);
    assert_eq!(again["publishFlow"]["definition"], canonical);
}

async fn healthz_answers_ok(app: TestApp) {
    let response = app.client.get(app.url("/healthz")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "ok");
}
