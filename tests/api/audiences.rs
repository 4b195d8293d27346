//! Audiences: flows for the subjects whose attributes they admit. Those are enrolled by
//! any write that concerns them (an attribute change, a command, an event), listed as
//! NOT_STARTED before that, and progress through each flow independently; others cannot
//! enroll, and a flow without an audience is never entered automatically.

use serde_json::{Value, json};

use crate::both;
use crate::common::ws::{TRANSPORT_WS, WsClient};
use crate::common::{TestApp, completed_steps, skip_mutation, step_keys_of, step_of};

both!(
    an_attribute_write_enrolls_the_subject_in_every_audience_that_admits_it,
    an_admitted_subject_not_yet_enrolled_is_listed_as_not_started,
    outside_the_audience_is_forbidden_and_writes_nothing,
    one_event_completes_steps_in_two_audience_flows,
    an_event_enrolls_an_admitted_subject_and_completes_its_step,
    watchers_see_the_enrollment_an_audience_brings,
);

const ONBOARDINGS: &str = "query($s: ID) { onboardings(subjectId: $s) { flowKey version status revision points \
                           percentComplete steps { key status source } } }";

/// For admins only; both steps are worth points, verify is completed by an event.
fn admin_setup() -> Value {
    json!({
        "key": "admin_setup",
        "title": "Set up your workspace",
        "audience": { "role": "admin" },
        "steps": [
            { "key": "verify", "title": "Verify your email", "points": 3, "trigger": { "event": "user.email_verified" } },
            { "key": "configure_sso", "title": "Configure SSO", "points": 5 }
        ]
    })
}

/// For admins and members; verify shares its trigger with admin_setup.
fn member_join() -> Value {
    json!({
        "key": "member_join",
        "title": "Join your team",
        "audience": { "attr": "role", "op": "in", "value": ["admin", "member"] },
        "steps": [
            { "key": "verify", "title": "Verify your email", "points": 2, "trigger": { "event": "user.email_verified" } },
            { "key": "say_hello", "title": "Say hello", "points": 1 }
        ]
    })
}

/// For everyone, and never entered automatically, although an event would complete its step.
fn open_tour() -> Value {
    json!({
        "key": "open_tour",
        "title": "Take the tour",
        "steps": [
            { "key": "tour", "title": "Take the tour", "points": 7, "trigger": { "event": "user.email_verified" } }
        ]
    })
}

async fn publish_all(app: &TestApp) {
    app.publish(admin_setup()).await;
    app.publish(member_join()).await;
    app.publish(open_tour()).await;
}

/// `onboardings` of a subject, read by an admin.
async fn onboardings(app: &TestApp, subject: &str) -> Vec<Value> {
    let data = app.ok(&app.admin(), ONBOARDINGS, json!({ "s": subject })).await;
    data["onboardings"].as_array().expect("onboardings").clone()
}

/// `(flowKey, status)` of each listed onboarding, in the order listed.
fn listed(onboardings: &[Value]) -> Vec<(String, String)> {
    onboardings
        .iter()
        .map(|o| (o["flowKey"].as_str().unwrap().to_string(), o["status"].as_str().unwrap().to_string()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(f, s)| (f.to_string(), s.to_string())).collect()
}

async fn enrollments_of(app: &TestApp, subject: &str) -> Vec<String> {
    app.rows(&format!(
        "SELECT e.flow_key FROM enrollments e JOIN subjects s ON s.id = e.subject_id \
         WHERE s.external_id = '{subject}' ORDER BY e.flow_key"
    ))
    .await
}

/// Row counts of every table a write can touch.
async fn footprint(app: &TestApp) -> [i64; 6] {
    let mut counts = [0; 6];
    for (i, table) in
        ["subjects", "enrollments", "step_progress", "outbox", "points_ledger", "events"].iter().enumerate()
    {
        counts[i] = app.count(&format!("SELECT COUNT(*) FROM {table}")).await;
    }
    counts
}

fn done(flow: &str, step: &str) -> (String, i64, String) {
    (flow.to_string(), 1, step.to_string())
}

async fn an_attribute_write_enrolls_the_subject_in_every_audience_that_admits_it(app: TestApp) {
    publish_all(&app).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0, "publishing enrolls nobody");

    // The attribute write itself enrolls: an admin in both audience flows, a member in one.
    app.set_attributes("ada", json!({ "role": "admin" })).await;
    assert_eq!(enrollments_of(&app, "ada").await, ["admin_setup", "member_join"]);
    let ada = onboardings(&app, "ada").await;
    assert_eq!(listed(&ada), pairs(&[("admin_setup", "IN_PROGRESS"), ("member_join", "IN_PROGRESS")]));
    for o in &ada {
        assert_eq!(o["version"], 1, "{o:#}");
        assert_eq!(o["points"], 0, "{o:#}");
        assert!(o["revision"].as_i64().unwrap() >= 1, "enrolled: {o:#}");
    }
    app.set_attributes("max", json!({ "role": "member", "team": "blue" })).await;
    assert_eq!(enrollments_of(&app, "max").await, ["member_join"]);
    assert_eq!(listed(&onboardings(&app, "max").await), pairs(&[("member_join", "IN_PROGRESS")]));
    // Someone outside both audiences is enrolled in nothing.
    app.set_attributes("gus", json!({ "role": "guest" })).await;
    assert_eq!(enrollments_of(&app, "gus").await, Vec::<String>::new());
    assert_eq!(onboardings(&app, "gus").await, Vec::<Value>::new());
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments WHERE flow_key = 'open_tour'").await, 0);

    // Each flow progresses on its own: a step in one leaves the other untouched, even the
    // step with the same key.
    let member_before = app.status_of("ada", "member_join").await;
    let sso = app.complete_as("ada", "admin_setup", "configure_sso").await;
    assert_eq!(sso["status"], "IN_PROGRESS");
    assert_eq!(sso["points"], 5);
    assert_eq!(sso["percentComplete"], 50);
    let verify = app.complete_as("ada", "admin_setup", "verify").await;
    assert_eq!(verify["status"], "COMPLETED");
    assert_eq!(verify["points"], 8);
    assert_eq!(app.status_of("ada", "member_join").await, member_before, "the other flow did not move");
    let hello = app.complete_as("ada", "member_join", "say_hello").await;
    assert_eq!(hello["status"], "IN_PROGRESS");
    assert_eq!(step_of(&hello, "verify")["status"], "PENDING", "verify of admin_setup is another step");
    assert_eq!(hello["points"], 1);
    let joined = app.complete_as("ada", "member_join", "verify").await;
    assert_eq!(joined["status"], "COMPLETED");
    assert_eq!(joined["points"], 3);
    let ada = onboardings(&app, "ada").await;
    assert_eq!(listed(&ada), pairs(&[("admin_setup", "COMPLETED"), ("member_join", "COMPLETED")]));
    assert_eq!(ada[0]["points"], 8);
    assert_eq!(ada[1]["points"], 3);

    // The member goes through member_join alone.
    let max = app.complete_as("max", "member_join", "say_hello").await;
    assert_eq!(max["status"], "IN_PROGRESS");
    assert_eq!(listed(&onboardings(&app, "max").await), pairs(&[("member_join", "IN_PROGRESS")]));
    assert_eq!(app.status_of("ada", "member_join").await["points"], 3, "max's work is not ada's");

    // The flow without an audience is open to anyone who starts it, and is listed once
    // started; another attribute write still does not enroll anyone else in it.
    let tour = app.start_as("max", "open_tour").await;
    assert_eq!(tour["status"], "IN_PROGRESS");
    assert_eq!(
        listed(&onboardings(&app, "max").await),
        pairs(&[("member_join", "IN_PROGRESS"), ("open_tour", "IN_PROGRESS")])
    );
    app.set_attributes("ada", json!({ "team": "red" })).await;
    assert_eq!(enrollments_of(&app, "ada").await, ["admin_setup", "member_join"]);
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 4);
}

async fn an_admitted_subject_not_yet_enrolled_is_listed_as_not_started(app: TestApp) {
    // Attributes set before any flow exists: admitted later, enrolled by nothing yet.
    app.set_attributes("ada", json!({ "role": "admin" })).await;
    app.set_attributes("max", json!({ "role": "member" })).await;
    publish_all(&app).await;
    // An audience that admits subjects without the attribute, so also unknown ones.
    app.publish(json!({
        "key": "everyone_but_guests",
        "title": "Hello",
        "audience": { "attr": "role", "op": "ne", "value": "guest" },
        "steps": [{ "key": "hello", "title": "Hello" }]
    }))
    .await;

    let ada = onboardings(&app, "ada").await;
    assert_eq!(
        listed(&ada),
        pairs(&[
            ("admin_setup", "NOT_STARTED"),
            ("everyone_but_guests", "NOT_STARTED"),
            ("member_join", "NOT_STARTED")
        ])
    );
    for o in &ada {
        assert_eq!(o["revision"], 0, "{o:#}");
        assert_eq!(o["version"], 1, "{o:#}");
        assert_eq!(o["percentComplete"], 0, "{o:#}");
    }
    assert_eq!(step_keys_of(&ada[0]), ["verify", "configure_sso"], "the would-be steps");
    assert_eq!(
        listed(&onboardings(&app, "max").await),
        pairs(&[("everyone_but_guests", "NOT_STARTED"), ("member_join", "NOT_STARTED")])
    );
    // The user reads the same list with its own token.
    let own = app.ok(&app.user("max"), ONBOARDINGS, json!({})).await;
    assert_eq!(listed(own["onboardings"].as_array().unwrap()), listed(&onboardings(&app, "max").await));
    assert_eq!(listed(&onboardings(&app, "stranger").await), pairs(&[("everyone_but_guests", "NOT_STARTED")]));
    let status = app.status_of("ada", "admin_setup").await;
    assert_eq!(status["status"], "NOT_STARTED");
    assert_eq!(status["revision"], 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0, "reading never writes");
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 2, "reading never writes");

    // Ada's next write, on a flow without an audience, enrolls her in every flow that
    // admits her too.
    app.start_as("ada", "open_tour").await;
    assert_eq!(
        listed(&onboardings(&app, "ada").await),
        pairs(&[
            ("admin_setup", "IN_PROGRESS"),
            ("everyone_but_guests", "IN_PROGRESS"),
            ("member_join", "IN_PROGRESS"),
            ("open_tour", "IN_PROGRESS"),
        ])
    );
    // Max's first write is a step in an audience flow: he is enrolled in it, and in the
    // other one that admits him, not in the open flow.
    let hello = app.complete_as("max", "member_join", "say_hello").await;
    assert_eq!(hello["status"], "IN_PROGRESS");
    assert_eq!(hello["points"], 1);
    assert_eq!(enrollments_of(&app, "max").await, ["everyone_but_guests", "member_join"]);
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments WHERE flow_key = 'open_tour'").await, 1);
}

async fn outside_the_audience_is_forbidden_and_writes_nothing(app: TestApp) {
    publish_all(&app).await;
    app.set_attributes("max", json!({ "role": "member" })).await;
    app.complete_as("max", "member_join", "say_hello").await;
    let before = footprint(&app).await;
    let member_join_before = app.status_of("max", "member_join").await;

    let max = app.user("max");
    let calls = [
        ("startOnboarding", "mutation { startOnboarding(flowKey: \"admin_setup\") { status } }".to_string()),
        ("startStep", "mutation { startStep(flowKey: \"admin_setup\", stepKey: \"verify\") { status } }".to_string()),
        (
            "completeStep",
            "mutation { completeStep(flowKey: \"admin_setup\", stepKey: \"configure_sso\") { status } }".to_string(),
        ),
        ("skipOnboarding", "mutation { skipOnboarding(flowKey: \"admin_setup\") { status } }".to_string()),
    ];
    for (what, query) in &calls {
        let error = app.error(Some(&max), query, json!({})).await;
        assert_eq!(error["extensions"]["code"], "FORBIDDEN", "{what}: {error:#}");
    }
    let code = app.code(Some(&max), &skip_mutation(), json!({ "f": "admin_setup", "k": "configure_sso" })).await;
    assert_eq!(code, "FORBIDDEN");
    // An admin acting for max cannot put him into a flow that is not for him either.
    let for_max =
        "mutation { completeStep(flowKey: \"admin_setup\", stepKey: \"verify\", subjectId: \"max\") { status } }";
    assert_eq!(app.code(Some(&app.admin()), for_max, json!({})).await, "FORBIDDEN");
    assert_eq!(footprint(&app).await, before, "a refused write leaves no trace");
    assert_eq!(app.status_of("max", "member_join").await, member_join_before);
    assert_eq!(enrollments_of(&app, "max").await, ["member_join"]);
    assert_eq!(listed(&onboardings(&app, "max").await), pairs(&[("member_join", "IN_PROGRESS")]));

    // A subject never seen before, with no attributes, is in neither audience: refused,
    // and not even its subject row is kept.
    let newbie = app.user("newbie");
    for flow in ["admin_setup", "member_join"] {
        let query = format!("mutation {{ startOnboarding(flowKey: \"{flow}\") {{ status }} }}");
        assert_eq!(app.code(Some(&newbie), &query, json!({})).await, "FORBIDDEN", "{flow}");
    }
    assert_eq!(footprint(&app).await, before);
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects WHERE external_id = 'newbie'").await, 0);

    // Promoted, max is enrolled by that write and may work on admin_setup.
    app.set_attributes("max", json!({ "role": "admin" })).await;
    assert_eq!(enrollments_of(&app, "max").await, ["admin_setup", "member_join"]);
    let sso = app.complete_as("max", "admin_setup", "configure_sso").await;
    assert_eq!(sso["status"], "IN_PROGRESS");
    assert_eq!(sso["points"], 5);
}

async fn one_event_completes_steps_in_two_audience_flows(app: TestApp) {
    publish_all(&app).await;
    app.set_attributes("ada", json!({ "role": "admin" })).await;
    app.set_attributes("max", json!({ "role": "member" })).await;

    let result = app.track_event("ada-verified", "ada", "user.email_verified", json!({ "via": "link" })).await;
    assert_eq!(result["status"], "NEW", "{result:#}");
    assert_eq!(completed_steps(&result), [done("admin_setup", "verify"), done("member_join", "verify")]);
    for flow in ["admin_setup", "member_join"] {
        let status = app.status_of("ada", flow).await;
        assert_eq!(step_of(&status, "verify")["status"], "COMPLETED", "{flow}");
        assert_eq!(step_of(&status, "verify")["source"], "EVENT", "{flow}");
        assert_eq!(step_of(&status, "verify")["metadata"], json!({ "via": "link" }), "{flow}");
        assert_eq!(status["status"], "IN_PROGRESS", "{flow}");
    }
    assert_eq!(app.status_of("ada", "admin_setup").await["points"], 3);
    assert_eq!(app.status_of("ada", "member_join").await["points"], 2);
    // The open flow's step has the same trigger, but ada is not enrolled in it.
    assert_eq!(enrollments_of(&app, "ada").await, ["admin_setup", "member_join"]);
    assert_eq!(app.status_of("ada", "open_tour").await["status"], "NOT_STARTED");

    // The member's event completes the step of member_join only.
    let result = app.track_event("max-verified", "max", "user.email_verified", json!({})).await;
    assert_eq!(completed_steps(&result), [done("member_join", "verify")]);
    assert_eq!(enrollments_of(&app, "max").await, ["member_join"]);

    // A retry is a duplicate and completes nothing.
    let again = app.track_event("ada-verified", "ada", "user.email_verified", json!({ "via": "link" })).await;
    assert_eq!(again["status"], "DUPLICATE");
    assert_eq!(again["completed"], json!([]));
    assert_eq!(app.count("SELECT COUNT(*) FROM step_progress WHERE step_key = 'verify' AND source = 'EVENT'").await, 3);
    assert_eq!(app.count("SELECT COUNT(*) FROM points_ledger").await, 3);
}

async fn an_event_enrolls_an_admitted_subject_and_completes_its_step(app: TestApp) {
    // Attributes first, flows later: ada and max are admitted but not enrolled.
    app.set_attributes("ada", json!({ "role": "admin" })).await;
    app.set_attributes("max", json!({ "role": "member" })).await;
    publish_all(&app).await;
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 0);

    let result = app.track_event("ada-1", "ada", "user.email_verified", json!({})).await;
    assert_eq!(result["status"], "NEW", "{result:#}");
    assert_eq!(completed_steps(&result), [done("admin_setup", "verify"), done("member_join", "verify")]);
    assert_eq!(enrollments_of(&app, "ada").await, ["admin_setup", "member_join"], "not the open flow");
    let ada = onboardings(&app, "ada").await;
    assert_eq!(listed(&ada), pairs(&[("admin_setup", "IN_PROGRESS"), ("member_join", "IN_PROGRESS")]));
    for o in &ada {
        assert_eq!(step_of(o, "verify")["status"], "COMPLETED", "{o:#}");
        assert_eq!(step_of(o, "verify")["source"], "EVENT", "{o:#}");
    }
    assert_eq!(ada[0]["points"], 3);
    assert_eq!(ada[1]["points"], 2);

    // An event that triggers nothing enrolls an admitted subject too: any write does.
    let result = app.track_event("max-1", "max", "page.viewed", json!({})).await;
    assert_eq!(result["status"], "NEW");
    assert_eq!(result["completed"], json!([]));
    assert_eq!(enrollments_of(&app, "max").await, ["member_join"]);
    // Its stored events still count: the trigger fires on the next event too.
    let result = app.track_event("max-2", "max", "user.email_verified", json!({})).await;
    assert_eq!(completed_steps(&result), [done("member_join", "verify")]);

    // A subject outside every audience: the event is stored, nothing is enrolled.
    let result = app.track_event("ghost-1", "ghost", "user.email_verified", json!({})).await;
    assert_eq!(result["status"], "NEW");
    assert_eq!(result["completed"], json!([]));
    assert_eq!(enrollments_of(&app, "ghost").await, Vec::<String>::new());
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 4);
    // When ghost starts the open flow himself, his stored event completes its step.
    let tour = app.start_as("ghost", "open_tour").await;
    assert_eq!(tour["status"], "COMPLETED");
    assert_eq!(step_of(&tour, "tour")["source"], "EVENT");
    assert_eq!(app.count("SELECT COUNT(*) FROM enrollments").await, 4);
}

async fn watchers_see_the_enrollment_an_audience_brings(app: TestApp) {
    // Admitted before the flow exists, so not enrolled until ada's first write.
    app.set_attributes("ada", json!({ "role": "admin" })).await;
    app.set_attributes("max", json!({ "role": "admin" })).await;
    app.publish(admin_setup()).await;
    let mut ada = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("ada")).await;
    let first = ada.watch("1", "admin_setup", None).await;
    assert_eq!(first["status"], "NOT_STARTED");
    assert_eq!(first["revision"], 0);

    // Starting the flow enrolls her (the audience does it, within the same write): the
    // watcher hears of it, as it does for a flow without an audience.
    let started = app.start_as("ada", "admin_setup").await;
    assert_eq!(started["status"], "IN_PROGRESS");
    let snapshot = ada.snapshot("1").await;
    assert_eq!(snapshot, started, "the watcher gets the enrolled state");

    // An attribute write that enrolls max, and an event that enrolls him, are heard too.
    let mut max = WsClient::authorized(app.addr, TRANSPORT_WS, &app.user("max")).await;
    assert_eq!(max.watch("m", "admin_setup", None).await["status"], "NOT_STARTED");
    let result = app.track_event("max-1", "max", "user.email_verified", json!({})).await;
    assert_eq!(completed_steps(&result), [done("admin_setup", "verify")]);
    let snapshot = max.snapshot("m").await;
    assert_eq!(snapshot["status"], "IN_PROGRESS");
    assert_eq!(step_of(&snapshot, "verify")["status"], "COMPLETED");
}
