//! What the engine accepts: JSON depth and size, ids and keys, flow size, points and
//! dates. Bad input is VALIDATION_FAILED with a short message, loses nothing saved, and
//! never leaves data behind that cannot be read back.

use onramp::auth::Role;
use onramp::domain::Limits;
use serde_json::{Value, json};

use crate::both;
use crate::common::{STATUS_FIELDS, TestApp, complete_mutation, sample_flow, status_query};

both!(
    deep_json_is_refused_in_variables_and_inline_and_nothing_is_lost,
    oversized_json_is_refused,
    long_ids_and_keys_are_refused_and_never_echoed_whole,
    a_token_subject_longer_than_the_id_limit_is_refused,
    ids_and_keys_at_the_limit_work_end_to_end,
    a_flow_at_every_limit_works_end_to_end,
    flows_past_the_limits_are_refused_with_problem_codes,
    analytics_windows_outside_the_accepted_years_are_bad_input,
);

const PUBLISH: &str = "mutation($d: JSON!) { publishFlow(definition: $d) { key version } }";

/// Arrays and objects alternating, `depth` levels deep.
fn nested(depth: usize) -> Value {
    let mut v = json!("leaf");
    for i in 0..depth {
        v = if i % 2 == 0 { json!([v]) } else { json!({ "k": v }) };
    }
    v
}

/// A JSON value as a GraphQL literal (objects with unquoted keys).
fn literal(v: &Value) -> String {
    match v {
        Value::Array(items) => format!("[{}]", items.iter().map(literal).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => {
            format!("{{{}}}", map.iter().map(|(k, v)| format!("{k}: {}", literal(v))).collect::<Vec<_>>().join(", "))
        }
        other => other.to_string(),
    }
}

fn message_of(error: &Value) -> String {
    error["message"].as_str().unwrap_or_default().to_string()
}

#[track_caller]
fn assert_refused(error: &Value, needle: &str) {
    assert_eq!(error["extensions"]["code"], "VALIDATION_FAILED", "{error:#}");
    let message = message_of(error);
    assert!(message.contains(needle), "`{needle}` not in `{message}`");
    assert!(message.len() < 300, "a long message: {message}");
}

async fn deep_json_is_refused_in_variables_and_inline_and_nothing_is_lost(app: TestApp) {
    let limits = Limits::default();
    app.publish(sample_flow("welcome")).await;
    app.set_attributes("alice", json!({ "plan": "team" })).await;
    app.ok(&app.user("alice"), &complete_mutation(), json!({ "f": "welcome", "k": "verify_email", "m": { "a": 1 } }))
        .await;
    let admin = app.admin();
    let alice = app.user("alice");
    let ok = nested(limits.json_depth - 1);
    let deep = nested(limits.json_depth + 1);

    // In variables.
    let complete =
        "mutation($m: JSON) { completeStep(flowKey: \"welcome\", stepKey: \"profile\", metadata: $m) { status } }";
    assert_refused(&app.error(Some(&alice), complete, json!({ "m": { "x": deep } })).await, "nested deeper than 32");
    let attrs = "mutation($a: JSON!) { setSubjectAttributes(subjectId: \"alice\", attributes: $a) { id } }";
    assert_refused(&app.error(Some(&admin), attrs, json!({ "a": { "x": deep } })).await, "nested deeper than 32");
    let ws = "mutation($a: JSON!) { setWorkspaceAttributes(workspaceId: \"acme\", attributes: $a) { id } }";
    assert_refused(&app.error(Some(&admin), ws, json!({ "a": { "x": deep } })).await, "nested deeper than 32");
    let mut definition = sample_flow("deep");
    definition["steps"][0]["condition"] = json!({ "attr": "x", "op": "eq", "value": deep });
    let error = app.error(Some(&admin), PUBLISH, json!({ "d": definition })).await;
    assert_eq!(error["extensions"]["problems"][0]["code"], "DEFINITION_TOO_DEEP", "{error:#}");
    let problems = app
        .ok(&admin, "query($d: JSON!) { validateFlow(definition: $d) { path code } }", json!({ "d": definition }))
        .await;
    assert_eq!(problems["validateFlow"], json!([{ "path": "$", "code": "DEFINITION_TOO_DEEP" }]));
    let track = "mutation($e: [EventInput!]!) { trackEvents(events: $e) { status error { code message } } }";
    let result = app
        .ok(
            &app.service(),
            track,
            json!({ "e": [
                { "id": "e1", "subjectId": "alice", "name": "n", "properties": { "x": deep } },
                { "id": "e2", "subjectId": "alice", "name": "n", "properties": { "x": ok } }
            ]}),
        )
        .await;
    assert_eq!(result["trackEvents"][0]["status"], "REJECTED");
    assert_eq!(result["trackEvents"][0]["error"]["code"], "VALIDATION_FAILED");
    assert_eq!(result["trackEvents"][1]["status"], "NEW", "the good event of the batch is kept");

    // Inline in the document: it reaches the resolvers the same way and is refused the same way.
    let inline = format!(
        "mutation {{ setSubjectAttributes(subjectId: \"alice\", attributes: {{x: {}}}) {{ id }} }}",
        literal(&deep)
    );
    assert_refused(&app.error(Some(&admin), &inline, json!({})).await, "nested deeper than 32");
    let inline = format!(
        "mutation {{ completeStep(flowKey: \"welcome\", stepKey: \"profile\", metadata: {{x: {}}}) {{ status }} }}",
        literal(&deep)
    );
    assert_refused(&app.error(Some(&alice), &inline, json!({})).await, "nested deeper than 32");
    let inline = format!(
        "mutation {{ trackEvent(event: {{id: \"e3\", subjectId: \"alice\", name: \"n\", properties: {{x: {}}}}}) {{ status }} }}",
        literal(&deep)
    );
    assert_eq!(app.ok(&app.service(), &inline, json!({})).await["trackEvent"]["status"], "REJECTED");

    // At the limit it is accepted, inline too, and reads back.
    let inline = format!(
        "mutation {{ setSubjectAttributes(subjectId: \"alice\", attributes: {{x: {}}}) {{ attributes }} }}",
        literal(&ok)
    );
    app.ok(&admin, &inline, json!({})).await;
    // Nothing refused was written, and everything about alice still reads.
    assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 1);
    let status = app.status_of("alice", "welcome").await;
    assert_eq!(status["steps"][0]["metadata"], json!({ "a": 1 }));
    assert_eq!(status["steps"][1]["status"], "PENDING");
    let subject = app.ok(&admin, "{ onboardings(subjectId: \"alice\") { flowKey } }", json!({})).await;
    assert_eq!(subject["onboardings"][0]["flowKey"], "welcome");
    let attributes = app.set_attributes("alice", json!({})).await;
    assert_eq!(attributes["setSubjectAttributes"]["attributes"]["x"], ok);
}

async fn oversized_json_is_refused(app: TestApp) {
    let limits = Limits::default();
    app.publish(sample_flow("welcome")).await;
    let alice = app.user("alice");
    let admin = app.admin();
    let big = |bytes: usize| json!({ "x": "y".repeat(bytes) });

    let error = app
        .error(
            Some(&alice),
            &complete_mutation(),
            json!({ "f": "welcome", "k": "verify_email", "m": big(limits.metadata_bytes) }),
        )
        .await;
    assert_refused(&error, "metadata is larger than 16384 bytes");
    app.ok(
        &alice,
        &complete_mutation(),
        json!({ "f": "welcome", "k": "verify_email", "m": big(limits.metadata_bytes - 100) }),
    )
    .await;

    let attrs = "mutation($a: JSON!) { setSubjectAttributes(subjectId: \"bob\", attributes: $a) { id } }";
    assert_refused(
        &app.error(Some(&admin), attrs, json!({ "a": big(limits.attributes_bytes) })).await,
        "larger than 65536",
    );
    // Merging grows what is stored: the merged attributes are bounded too.
    let half = limits.attributes_bytes / 2;
    app.ok(&admin, attrs, json!({ "a": { "a": "y".repeat(half) } })).await;
    let error = app.error(Some(&admin), attrs, json!({ "a": { "b": "y".repeat(half) } })).await;
    assert_refused(&error, "once merged, attributes is larger than 65536");

    let event = app.track_event("e1", "alice", "n", big(limits.event_properties_bytes)).await;
    assert_eq!(event["status"], "REJECTED");
    assert!(message_of(&event["error"]).contains("larger than 32768"), "{event:#}");

    let status = app.status_of("alice", "welcome").await;
    assert_eq!(status["steps"][0]["status"], "COMPLETED");
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 0);
}

async fn long_ids_and_keys_are_refused_and_never_echoed_whole(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let admin = app.admin();
    let alice = app.user("alice");
    let huge = "k".repeat(200_000);
    let over_key = "k".repeat(Limits::default().key_bytes + 1);
    let over_id = "i".repeat(Limits::default().id_bytes + 1);

    // A huge flow key was echoed back in NOT_FOUND; now it is refused, briefly.
    for key in [&huge, &over_key] {
        let error = app.error(Some(&alice), &status_query(), json!({ "f": key })).await;
        assert_refused(&error, "flowKey is");
        let error = app.error(Some(&admin), "query($k: String!) { flow(key: $k) { key } }", json!({ "k": key })).await;
        assert_refused(&error, "key is");
        let error = app.error(Some(&alice), &complete_mutation(), json!({ "f": "welcome", "k": key })).await;
        assert_refused(&error, "stepKey is");
        let error =
            app.error(Some(&admin), "query($k: String!) { experiment(key: $k) { key } }", json!({ "k": key })).await;
        assert_refused(&error, "key is");
        let error = app
            .error(Some(&admin), "query($k: String!) { funnel(flowKey: $k) { enrolled } }", json!({ "k": key }))
            .await;
        assert_refused(&error, "flowKey is");
    }
    // A key within the limit that names nothing: NOT_FOUND, echoing at most 100 characters.
    let unknown = "u".repeat(Limits::default().key_bytes);
    let error = app.error(Some(&alice), &status_query(), json!({ "f": unknown })).await;
    assert_eq!(error["extensions"]["code"], "NOT_FOUND");
    assert!(message_of(&error).len() < 160, "{}", message_of(&error));
    assert!(!message_of(&error).contains(&unknown));

    // A 200 KB subject id was an INTERNAL error (index row too large).
    let attrs = "mutation($s: ID!) { setSubjectAttributes(subjectId: $s, attributes: {plan: \"team\"}) { id } }";
    for id in [&huge, &over_id] {
        assert_refused(&app.error(Some(&admin), attrs, json!({ "s": id })).await, "a subject id is");
        let ws = "mutation($w: ID!) { setWorkspaceAttributes(workspaceId: $w, attributes: {}) { id } }";
        assert_refused(&app.error(Some(&admin), ws, json!({ "w": id })).await, "a workspace id is");
        assert_refused(
            &app.error(Some(&admin), &status_query(), json!({ "f": "welcome", "s": id })).await,
            "a subject id is",
        );
        let track = "mutation($e: [EventInput!]!) { trackEvents(events: $e) { status error { code message } } }";
        let result = app
            .ok(
                &app.service(),
                track,
                json!({ "e": [
                    { "id": id, "subjectId": "alice", "name": "n" },
                    { "id": "e1", "subjectId": id, "name": "n" },
                    { "id": "e2", "subjectId": "alice", "workspaceId": id, "name": "n" }
                ]}),
            )
            .await;
        for r in result["trackEvents"].as_array().unwrap() {
            assert_eq!(r["status"], "REJECTED", "{r:#}");
            assert_eq!(r["error"]["code"], "VALIDATION_FAILED");
            assert!(message_of(&r["error"]).len() < 200);
        }
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 0, "nothing was written");
    assert_eq!(app.count("SELECT COUNT(*) FROM events").await, 0);
}

async fn a_token_subject_longer_than_the_id_limit_is_refused(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    let long = app.token(&"s".repeat(Limits::default().id_bytes + 1), Role::User);
    assert_refused(&app.error(Some(&long), &status_query(), json!({ "f": "welcome" })).await, "a subject id is");
    let start = "mutation { startOnboarding(flowKey: \"welcome\") { status } }";
    assert_refused(&app.error(Some(&long), start, json!({})).await, "a subject id is");
    assert_refused(&app.error(Some(&long), "{ points { total } }", json!({})).await, "a subject id is");
    assert_refused(&app.error(Some(&long), "{ onboardings { flowKey } }", json!({})).await, "a subject id is");
    assert_eq!(app.count("SELECT COUNT(*) FROM subjects").await, 0);
}

async fn ids_and_keys_at_the_limit_work_end_to_end(app: TestApp) {
    let limits = Limits::default();
    // Ids at the limit, made of characters JSON escapes (NOTIFY payloads carry them).
    let subject: String = "\"\\".repeat(limits.id_bytes / 2);
    let workspace: String = "é".repeat(limits.id_bytes / 2);
    assert_eq!(subject.len(), limits.id_bytes);
    assert_eq!(workspace.len(), limits.id_bytes);
    let mut flow = sample_flow("welcome");
    flow["steps"][0]["trigger"] = json!({ "event": "verified" });
    app.publish(flow).await;
    let mut workspace_flow = sample_flow("team");
    workspace_flow["scope"] = json!("WORKSPACE");
    app.publish(workspace_flow).await;
    let event_id = "e".repeat(limits.id_bytes);
    let query = "mutation($e: [EventInput!]!) { trackEvents(events: $e) { status } }";
    let result = app
        .ok(
            &app.service(),
            query,
            json!({ "e": [{ "id": event_id, "subjectId": subject, "workspaceId": workspace, "name": "verified" }] }),
        )
        .await;
    assert_eq!(result["trackEvents"][0]["status"], "NEW");
    let start =
        format!("mutation($s: ID) {{ startOnboarding(flowKey: \"welcome\", subjectId: $s) {{ {STATUS_FIELDS} }} }}");
    let started = app.ok(&app.service(), &start, json!({ "s": subject })).await;
    assert_eq!(started["startOnboarding"]["steps"][0]["status"], "COMPLETED", "the stored event completed it");
    let status = app.status_of(&subject, "welcome").await;
    assert_eq!(status["steps"][0]["status"], "COMPLETED");
    let team = "query($w: ID) { status(flowKey: \"team\", subjectId: \"x\", workspaceId: $w) { status } }";
    assert_eq!(app.ok(&app.service(), team, json!({ "w": workspace })).await["status"]["status"], "NOT_STARTED");
}

/// A flow with `n` steps using everything: a dependency on each of the previous (up to
/// the limit) steps, a condition on an earlier answer, a trigger with a `where`, points.
fn big_flow(key: &str, n: usize, limits: &Limits) -> Value {
    let steps: Vec<Value> = (0..n)
        .map(|i| {
            let deps: Vec<String> = (i.saturating_sub(3)..i).map(|j| format!("s{j}")).collect();
            let mut step = json!({
                "key": format!("s{i}"),
                "title": format!("Step {i}"),
                "dependsOn": deps,
                "points": limits.points_per_step,
                "trigger": { "event": format!("done.{i}"), "where": { "ok": true } },
            });
            if i > 0 && i % 2 == 0 {
                step["condition"] = json!({ "any": [
                    { "attr": format!("steps.s{}.status", i - 1), "op": "in", "value": ["COMPLETED", "PENDING", "IN_PROGRESS", "SKIPPED"] },
                    { "plan": "never" }
                ]});
            }
            step
        })
        .collect();
    json!({ "key": key, "title": "Big", "steps": steps })
}

async fn a_flow_at_every_limit_works_end_to_end(app: TestApp) {
    let limits = Limits::default();
    let n = limits.steps_per_flow;
    let mut flow = big_flow("big", n, &limits);
    // One step at each per-step limit: dependencies, condition nodes and depth.
    flow["steps"][n - 1]["dependsOn"] =
        json!((n - 1 - limits.depends_on_per_step..n - 1).map(|j| format!("s{j}")).collect::<Vec<_>>());
    let mut deep = json!({ "plan": "never" });
    for _ in 1..limits.condition_depth {
        deep = json!({ "not": deep });
    }
    flow["steps"][n - 2]["condition"] = deep;
    let wide: Vec<Value> = (0..limits.condition_nodes - 1)
        .map(|i| json!({ "attr": format!("a{i}"), "op": "exists", "value": false }))
        .collect();
    flow["steps"][n - 3]["condition"] = json!({ "all": wide });
    let published = app.publish(flow.clone()).await;
    assert_eq!(published["version"], 1);
    let read = app.ok(&app.admin(), "{ flow(key: \"big\") { definition } }", json!({})).await;
    assert_eq!(read["flow"]["definition"]["steps"].as_array().unwrap().len(), n);

    // Enrolling writes a row per step: 500 of them in one go.
    let started = app.start_as("alice", "big").await;
    assert_eq!(started["steps"].as_array().unwrap().len(), n);
    let done = app.complete_as("alice", "big", "s0").await;
    assert_eq!(done["points"], limits.points_per_step);
    // A batch of events for many subjects, each auto-completing steps of the big flow.
    let events: Vec<Value> = (0..40)
        .flat_map(|u| {
            (0..5).map(move |i| {
                json!({ "id": format!("e{u}-{i}"), "subjectId": format!("user{u}"), "name": format!("done.{i}"), "properties": { "ok": true } })
            })
        })
        .collect();
    let query = "mutation($e: [EventInput!]!) { trackEvents(events: $e) { status } }";
    let result = app.ok(&app.service(), query, json!({ "e": events })).await;
    assert!(result["trackEvents"].as_array().unwrap().iter().all(|r| r["status"] == "NEW"));
    let start = "mutation($s: ID) { startOnboarding(flowKey: \"big\", subjectId: $s) { points completedCount } }";
    for u in 0..40 {
        let status = app.ok(&app.service(), start, json!({ "s": format!("user{u}") })).await;
        assert_eq!(status["startOnboarding"]["completedCount"], 5, "user{u}");
    }
    // And then a batch that advances all of those enrollments at once.
    let events: Vec<Value> = (0..40)
        .flat_map(|u| (5..10).map(move |i| json!({ "id": format!("f{u}-{i}"), "subjectId": format!("user{u}"), "name": format!("done.{i}"), "properties": { "ok": true } })))
        .collect();
    let result = app.ok(&app.service(), query, json!({ "e": events })).await;
    assert!(result["trackEvents"].as_array().unwrap().iter().all(|r| r["status"] == "NEW"));
    let status = app.status_of("user7", "big").await;
    assert_eq!(status["completedCount"], 10);
    assert_eq!(status["points"], 10 * limits.points_per_step);
}

async fn flows_past_the_limits_are_refused_with_problem_codes(app: TestApp) {
    let limits = Limits::default();
    let admin = app.admin();
    let problems = |error: &Value| -> Vec<(String, String)> {
        error["extensions"]["problems"]
            .as_array()
            .unwrap_or_else(|| panic!("no problems in {error:#}"))
            .iter()
            .map(|p| (p["path"].as_str().unwrap().to_string(), p["code"].as_str().unwrap().to_string()))
            .collect()
    };
    let over = big_flow("big", limits.steps_per_flow + 1, &limits);
    let error = app.error(Some(&admin), PUBLISH, json!({ "d": over })).await;
    assert_eq!(problems(&error), vec![("$.steps".to_string(), "TOO_MANY_STEPS".to_string())]);

    let mut flow = big_flow("big", 70, &limits);
    flow["steps"][69]["dependsOn"] =
        json!((0..=limits.depends_on_per_step).map(|j| format!("s{j}")).collect::<Vec<_>>());
    flow["steps"][1]["points"] = json!(limits.points_per_step + 1);
    flow["steps"][0]["points"] = json!(1i64 << 62);
    let mut deep = json!({ "plan": "never" });
    for _ in 0..limits.condition_depth {
        deep = json!({ "not": deep });
    }
    flow["steps"][2]["condition"] = deep;
    let wide: Vec<Value> =
        (0..limits.condition_nodes).map(|i| json!({ "attr": format!("a{i}"), "op": "exists" })).collect();
    flow["steps"][3]["condition"] = json!({ "any": wide });
    let error = app.error(Some(&admin), PUBLISH, json!({ "d": flow })).await;
    let mut found = problems(&error);
    found.sort();
    let mut expected: Vec<(String, String)> = [
        ("$.steps[0].points", "TOO_MANY_POINTS"),
        ("$.steps[1].points", "TOO_MANY_POINTS"),
        ("$.steps[2].condition", "CONDITION_TOO_DEEP"),
        ("$.steps[3].condition", "CONDITION_TOO_LARGE"),
        ("$.steps[69].dependsOn", "TOO_MANY_DEPENDENCIES"),
    ]
    .iter()
    .map(|(p, c)| (p.to_string(), c.to_string()))
    .collect();
    expected.sort();
    assert_eq!(found, expected);
    assert_eq!(app.count("SELECT COUNT(*) FROM flows").await, 0);
}

async fn analytics_windows_outside_the_accepted_years_are_bad_input(app: TestApp) {
    app.publish(sample_flow("welcome")).await;
    app.start_as("alice", "welcome").await;
    let admin = app.admin();
    let series = "query($s: DateTime!, $u: DateTime!, $b: TimeBucket!) { timeSeries(flowKey: \"welcome\", bucket: $b, since: $s, until: $u) { start starts } }";
    let funnel =
        "query($s: DateTime, $u: DateTime) { funnel(flowKey: \"welcome\", since: $s, until: $u) { enrolled } }";
    let stats =
        "query($s: DateTime, $u: DateTime) { flowStats(flowKey: \"welcome\", since: $s, until: $u) { enrolled } }";
    let far_past = "-262143-01-01T00:00:00Z";
    let far_future = "+262142-12-31T00:00:00Z";
    for (since, until) in [
        (far_past, "2026-01-01T00:00:00Z"),
        ("2026-01-01T00:00:00Z", far_future),
        (far_past, far_future),
        ("1969-12-31T23:59:59Z", "1970-01-02T00:00:00Z"),
        ("9999-12-30T00:00:00Z", "+10000-01-01T00:00:00Z"),
    ] {
        for bucket in ["DAY", "WEEK"] {
            let error = app.error(Some(&admin), series, json!({ "s": since, "u": until, "b": bucket })).await;
            assert_refused(&error, "1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z");
        }
        for query in [funnel, stats] {
            let error = app.error(Some(&admin), query, json!({ "s": since, "u": until })).await;
            assert_refused(&error, "1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z");
        }
    }
    // One bound alone is checked as well.
    for bad in [far_past, far_future, "1969-12-31T23:59:59Z", "+10000-01-01T00:00:00Z"] {
        for query in [funnel, stats] {
            for vars in [json!({ "s": bad }), json!({ "u": bad })] {
                let error = app.error(Some(&admin), query, vars).await;
                assert_refused(&error, "1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z");
            }
        }
    }
    // The first and last accepted weeks: no date arithmetic leaves chrono's range.
    let first =
        app.ok(&admin, series, json!({ "s": "1970-01-01T00:00:00Z", "u": "1970-01-15T00:00:00Z", "b": "WEEK" })).await;
    assert_eq!(first["timeSeries"][0]["start"], "1969-12-29T00:00:00+00:00");
    let last =
        app.ok(&admin, series, json!({ "s": "9999-12-20T00:00:00Z", "u": "9999-12-31T23:59:59Z", "b": "WEEK" })).await;
    assert_eq!(last["timeSeries"].as_array().unwrap().len(), 2);
    // The connection and the server are fine.
    let funnel_now = app.ok(&admin, funnel, json!({})).await;
    assert_eq!(funnel_now["funnel"]["enrolled"], 1);
}
