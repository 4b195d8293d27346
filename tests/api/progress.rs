//! Reading and changing progress through the API.

use onramp::auth::Role;
use serde_json::json;

use crate::both;
use crate::common::{TestApp, complete_mutation, sample_flow, skip_mutation, status_query};

both!(
    not_enrolled_reads_not_started_without_writing,
    completing_every_required_step_completes_once,
    complete_step_is_idempotent,
    resume_on_another_device,
    branching_on_an_earlier_answer,
    attribute_change_can_complete_an_enrollment,
    skip_flow_then_resume,
    concurrent_devices_lose_no_update,
);

async fn not_enrolled_reads_not_started_without_writing(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let alice = app.user("alice");
    let status = &app.ok(&alice, &status_query(), json!({ "f": "welcome" })).await["status"];
    assert_eq!(status["status"], "NOT_STARTED");
    assert_eq!(status["revision"], 0);
    assert_eq!(status["percentComplete"], 0);
    assert_eq!(status["position"], 1);
    assert_eq!(status["totalCount"], 3, "invite does not apply without plan=team");
    assert_eq!(status["nextStep"]["key"], "verify_email");
    assert_eq!(status["steps"][1]["blockedBy"], json!(["verify_email"]));
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 0, "reading must not write");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0, "reading must not write");
    let onboardings = app.ok(&alice, "{ onboardings { flowKey } }", json!({})).await;
    assert_eq!(onboardings["onboardings"], json!([]));
}

async fn completing_every_required_step_completes_once(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let alice = app.user("alice");
    let first =
        &app.ok(&alice, &complete_mutation(), json!({ "f": "welcome", "k": "verify_email" })).await["completeStep"];
    assert_eq!(first["status"], "IN_PROGRESS");
    assert_eq!(first["percentComplete"], 50);
    assert_eq!(first["points"], 10);
    assert_eq!(first["position"], 2);
    assert_eq!(first["nextStep"]["key"], "profile");
    let done = &app.ok(&alice, &complete_mutation(), json!({ "f": "welcome", "k": "profile" })).await["completeStep"];
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["percentComplete"], 100);
    assert_eq!(done["points"], 15);
    assert_eq!(done["completedCount"], 2);
    assert_eq!(done["totalCount"], 3);
    assert_eq!(done["nextStep"]["key"], "tour", "optional steps stay on offer after completion");
    let completed_at = done["completedAt"].clone();
    assert!(completed_at.is_string());

    // An optional step later: points, a new revision, but completion does not move.
    let later = &app.ok(&alice, &complete_mutation(), json!({ "f": "welcome", "k": "tour" })).await["completeStep"];
    assert_eq!(later["status"], "COMPLETED");
    assert_eq!(later["completedAt"], completed_at);
    assert_eq!(later["points"], 16);
    assert_eq!(later["nextStep"], serde_json::Value::Null);
    assert_eq!(later["position"], 3);
}

async fn complete_step_is_idempotent(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let alice = app.user("alice");
    let vars = json!({ "f": "welcome", "k": "verify_email", "m": { "via": "link" } });
    let first = app.ok(&alice, &complete_mutation(), vars.clone()).await["completeStep"].clone();
    let again = app.ok(&alice, &complete_mutation(), vars).await["completeStep"].clone();
    assert_eq!(first, again, "a repeated completeStep returns the same state");
    assert_eq!(again["points"], 10, "points are awarded once");
    let status = &app.ok(&alice, &status_query(), json!({ "f": "welcome" })).await["status"];
    assert_eq!(status["revision"], first["revision"], "no new revision");
    assert_eq!(status["steps"][0]["metadata"], json!({ "via": "link" }));
    assert_eq!(status["steps"][0]["source"], "USER");
}

async fn resume_on_another_device(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let laptop = app.user("alice");
    // A second token for the same subject, as another device would hold.
    let phone = app.keys.mint("alice", Role::User, 7200).unwrap();
    assert_ne!(laptop, phone);
    app.ok(&laptop, &complete_mutation(), json!({ "f": "welcome", "k": "verify_email" })).await;
    let on_phone = &app.ok(&phone, &status_query(), json!({ "f": "welcome" })).await["status"];
    assert_eq!(on_phone["status"], "IN_PROGRESS");
    assert_eq!(on_phone["steps"][0]["status"], "COMPLETED");
    assert_eq!(on_phone["nextStep"]["key"], "profile");
    let done = &app.ok(&phone, &complete_mutation(), json!({ "f": "welcome", "k": "profile" })).await["completeStep"];
    assert_eq!(done["status"], "COMPLETED");
    let on_laptop = &app.ok(&laptop, &status_query(), json!({ "f": "welcome" })).await["status"];
    assert_eq!(on_laptop["status"], "COMPLETED");
    assert_eq!(on_laptop["revision"], done["revision"]);
}

async fn branching_on_an_earlier_answer(app: TestApp) {
    app.publish(json!({
        "key": "setup",
        "title": "Set up",
        "steps": [
            { "key": "role", "title": "What do you do?" },
            { "key": "install_sdk", "title": "Install the SDK", "dependsOn": ["role"],
              "condition": { "attr": "steps.role.metadata.role", "op": "eq", "value": "developer" } },
            { "key": "invite_devs", "title": "Invite your developers",
              "condition": { "all": [
                  { "attr": "steps.role.status", "op": "eq", "value": "COMPLETED" },
                  { "not": { "attr": "steps.role.metadata.role", "op": "eq", "value": "developer" } } ] } }
        ]
    }))
    .await;
    let dev = app.user("dev");
    let before = &app.ok(&dev, &status_query(), json!({ "f": "setup" })).await["status"];
    assert_eq!(before["totalCount"], 1, "nothing is answered yet: only `role` applies");
    let after = &app
        .ok(&dev, &complete_mutation(), json!({ "f": "setup", "k": "role", "m": { "role": "developer" } }))
        .await["completeStep"];
    let keys: Vec<&str> = after["steps"].as_array().unwrap().iter().map(|s| s["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["role", "install_sdk"]);
    assert_eq!(after["status"], "IN_PROGRESS");

    let marketer = app.user("marketer");
    let after = &app
        .ok(&marketer, &complete_mutation(), json!({ "f": "setup", "k": "role", "m": { "role": "marketing" } }))
        .await["completeStep"];
    let keys: Vec<&str> = after["steps"].as_array().unwrap().iter().map(|s| s["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["role", "invite_devs"]);
    let code = app.code(Some(&marketer), &complete_mutation(), json!({ "f": "setup", "k": "install_sdk" })).await;
    assert_eq!(code, "STEP_NOT_APPLICABLE");
}

async fn attribute_change_can_complete_an_enrollment(app: TestApp) {
    app.publish(json!({
        "key": "trial",
        "title": "Trial",
        "steps": [
            { "key": "a", "title": "A" },
            { "key": "billing", "title": "Add billing", "condition": { "attr": "plan", "op": "ne", "value": "free" } }
        ]
    }))
    .await;
    let bob = app.user("bob");
    let after_a = &app.ok(&bob, &complete_mutation(), json!({ "f": "trial", "k": "a" })).await["completeStep"];
    assert_eq!(after_a["status"], "IN_PROGRESS");
    assert_eq!(after_a["percentComplete"], 50);
    app.set_attributes("bob", json!({ "plan": "free" })).await;
    let status = &app.ok(&bob, &status_query(), json!({ "f": "trial" })).await["status"];
    assert_eq!(status["status"], "COMPLETED", "billing no longer applies, so every required step is done");
    assert_eq!(status["totalCount"], 1);
    assert!(status["revision"].as_i64() > after_a["revision"].as_i64());
    // Merging keeps other attributes; null removes one.
    let merged = app.set_attributes("bob", json!({ "role": "admin" })).await;
    assert_eq!(merged["setSubjectAttributes"]["attributes"], json!({ "plan": "free", "role": "admin" }));
    let removed = app.set_attributes("bob", json!({ "plan": null })).await;
    assert_eq!(removed["setSubjectAttributes"]["attributes"], json!({ "role": "admin" }));
    let status = &app.ok(&bob, &status_query(), json!({ "f": "trial" })).await["status"];
    assert_eq!(status["status"], "COMPLETED", "completion is never undone");
}

async fn skip_flow_then_resume(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let alice = app.user("alice");
    let skipped = app
        .ok(&alice, "mutation { skipOnboarding(flowKey: \"welcome\") { status skippedAt revision } }", json!({}))
        .await;
    assert_eq!(skipped["skipOnboarding"]["status"], "SKIPPED");
    assert!(skipped["skipOnboarding"]["skippedAt"].is_string());
    let resumed =
        app.ok(&alice, "mutation { startOnboarding(flowKey: \"welcome\") { status skippedAt } }", json!({})).await;
    assert_eq!(resumed["startOnboarding"]["status"], "IN_PROGRESS");
    assert!(resumed["startOnboarding"]["skippedAt"].is_null());

    let step =
        &app.ok(&alice, &skip_mutation(), json!({ "f": "welcome", "k": "tour", "r": "seen it" })).await["skipStep"];
    assert_eq!(step["steps"][2]["status"], "SKIPPED");
    assert_eq!(step["steps"][2]["skipReason"], "seen it");
    assert_eq!(step["completedCount"], 0, "skipped steps are not completed");
    let started = app
        .ok(
            &alice,
            "mutation { startStep(flowKey: \"welcome\", stepKey: \"verify_email\") { steps { key status } } }",
            json!({}),
        )
        .await;
    assert_eq!(started["startStep"]["steps"][0]["status"], "IN_PROGRESS");
}

async fn concurrent_devices_lose_no_update(app: TestApp) {
    // Ten steps with no dependencies, each completed twice at once from two "devices".
    let steps: Vec<_> =
        (0..10).map(|i| json!({ "key": format!("s{i}"), "title": format!("Step {i}"), "points": 1 << i })).collect();
    app.publish(json!({ "key": "race", "title": "Race", "steps": steps })).await;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for device in 0..2 {
        for i in 0..10 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let token = app.keys.mint("alice", Role::User, 600 + device).unwrap();
                app.ok(&token, &complete_mutation(), json!({ "f": "race", "k": format!("s{i}") })).await
            }));
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
    let status = &app.ok(&app.user("alice"), &status_query(), json!({ "f": "race" })).await["status"];
    assert_eq!(status["completedCount"], 10, "no completion lost");
    assert_eq!(status["points"], 1023, "each step's points awarded exactly once");
    assert_eq!(status["status"], "COMPLETED");
    // Enrollment (1) + ten effective completions, the last of which also completes the flow.
    assert_eq!(status["revision"], 11);
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress").await, 10);
}
